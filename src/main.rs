//! The `policywatch` binary: parses arguments, sets up logging, loads the config and calls the
//! library. Everything else lives in the library, where it can be tested without a process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use policywatch::commands;

#[derive(Parser)]
#[command(
    name = "policywatch",
    version,
    about = "Watches news feeds for export-control and AI-chip policy stories",
    after_help = "Exit status: 0 ok; 1 something needs a person (every feed failed, a delivery \
or a recipient failed for good, a delivery is held: authentication, TLS, size); 75 mail was \
deferred and will be retried (run --once, digest --resend); 78 the configuration is broken \
(run)."
)]
struct Cli {
    /// More detail in the log (debug level). RUST_LOG overrides.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (what the systemd unit runs).
    #[command(
        after_help = "Exit status with --once: 0 ok; 1 something needs a person (every \
feed failed, a delivery or a recipient failed for good, a delivery is held for the operator); \
75 mail was deferred and will be retried. With or without --once: 75 another policywatch \
already runs on the state directory (it names its PID); 78 the configuration is broken (the \
unit does not restart it)."
    )]
    Run {
        #[command(flatten)]
        common: commands::Common,
        /// Poll the due feeds once (every feed on a first run), print the digests, exit.
        #[arg(long)]
        once: bool,
        /// With --once: poll every feed whatever its schedule or backoff (never before a
        /// server's Retry-After).
        #[arg(long, requires = "once")]
        all: bool,
    },
    /// Validate the config and every watch rule; print every error with its location.
    Check {
        #[command(flatten)]
        common: commands::Common,
    },
    /// Parse feeds (files or URLs) and classify every item, without touching the state.
    Classify {
        #[command(flatten)]
        common: commands::Common,
        /// One JSON object per item, matched or not.
        #[arg(long, conflicts_with = "explain")]
        json: bool,
        /// Show, per item and watch, why it matched or did not.
        #[arg(long)]
        explain: bool,
        /// Feed files or http(s)/file URLs.
        #[arg(required = true, value_name = "FILE_OR_URL")]
        sources: Vec<String>,
    },
    /// Show every configured feed's health: last success, failures, last error, next poll.
    Feeds {
        #[command(flatten)]
        common: commands::Common,
    },
    /// Render what a digest would send next (--preview, sends and marks nothing), or send a
    /// past delivery again (--resend).
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["preview", "resend"])))]
    Digest {
        #[command(flatten)]
        common: commands::Common,
        /// Preview what the digest would send next.
        #[arg(long)]
        preview: bool,
        /// Send delivery DELIVERY (a number from `policywatch stories` or `feeds`) again: a
        /// pending one now, as it is; a sent or failed one with the same stories under a new
        /// Message-ID, to --to or to the digest's recipients as configured now.
        #[arg(long, value_name = "DELIVERY", conflicts_with_all = ["id", "html"])]
        resend: Option<i64>,
        /// With --resend: the recipients (repeatable), e.g. a fixed address.
        #[arg(long, value_name = "ADDR", requires = "resend")]
        to: Vec<String>,
        /// The digest id (default: every configured digest).
        id: Option<String>,
        /// Where to write the HTML part (default: policywatch-preview-ID.html here).
        #[arg(long, value_name = "PATH")]
        html: Option<std::path::PathBuf>,
    },
    /// List stored flagged stories and what became of each: delivered (digest, time,
    /// Message-ID), pending, held, failed (for whom), trimmed, joined to another story.
    Stories {
        #[command(flatten)]
        common: commands::Common,
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
        /// How far back to look, e.g. 7d, 12h.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Only stories whose title or summary contains TEXT (any case).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// One JSON object per story and watch.
        #[arg(long)]
        json: bool,
    },
    /// Send a test message through the configured SMTP server and to every webhook digest,
    /// and show what each said.
    SendTest {
        #[command(flatten)]
        common: commands::Common,
        /// Recipient (default: the recipients of the first email digest).
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        /// Only this digest: its webhook, or its mail recipients.
        #[arg(long, value_name = "ID")]
        digest: Option<String>,
    },
    /// Print `[[feeds]]` entries for the feeds of an OPML file, to paste into the config.
    ImportOpml {
        /// An OPML file exported from another feed reader.
        file: std::path::PathBuf,
    },
    /// Write the configured feeds as OPML to stdout.
    ExportOpml {
        #[command(flatten)]
        common: commands::Common,
    },
    /// Score the watches on labelled items: precision, recall and F1 per watch and language,
    /// then the misses.
    Score {
        #[command(flatten)]
        common: commands::Common,
        /// Items as JSON Lines: id, lang, title, summary, link, date.
        #[arg(long, value_name = "FILE.jsonl")]
        items: std::path::PathBuf,
        /// Labels as TSV: id, one column per watch (export_controls for export-controls;
        /// 1, 0 or ? to skip), then anything.
        #[arg(long, value_name = "FILE.tsv")]
        labels: std::path::PathBuf,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
        /// List at most N misses per watch (default: all).
        #[arg(long, value_name = "N")]
        misses: Option<usize>,
    },
    /// Re-run the current rules over stored items and show what an edit changes.
    Backtest {
        #[command(flatten)]
        common: commands::Common,
        /// How far back to look, e.g. 30d, 12h.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Only this watch.
        #[arg(long)]
        watch: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    policywatch::logging::init(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run { common, once, all } => commands::run(&common, once, all).await,
            Command::Check { common } => commands::check(&common),
            Command::Classify {
                common,
                json,
                explain,
                sources,
            } => commands::classify(&common, &sources, json, explain).await,
            Command::Feeds { common } => commands::feeds(&common),
            Command::ImportOpml { file } => commands::import_opml(&file),
            Command::Digest {
                common,
                resend: Some(delivery),
                to,
                ..
            } => commands::digest_resend(&common, delivery, &to).await,
            Command::Digest {
                common, id, html, ..
            } => commands::digest_preview(&common, id.as_deref(), html.as_deref()),
            Command::Stories {
                common,
                watch,
                since,
                search,
                json,
            } => commands::stories(&common, watch.as_deref(), since, search.as_deref(), json),
            Command::SendTest { common, to, digest } => {
                commands::send_test(&common, to.as_deref(), digest.as_deref()).await
            }
            Command::ExportOpml { common } => commands::export_opml(&common),
            Command::Backtest {
                common,
                since,
                watch,
            } => commands::backtest(&common, since, watch.as_deref()),
            Command::Score {
                common,
                items,
                labels,
                json,
                misses,
            } => commands::score(&common, &items, &labels, json, misses),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
