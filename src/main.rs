//! The `policywatch` binary: parses arguments, sets up logging, loads the config and calls the
//! library. Everything else lives in the library, where it can be tested without a process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use policywatch::commands;

#[derive(Parser)]
#[command(
    name = "policywatch",
    version,
    about = "Watches news feeds for export-control and AI-chip policy stories"
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
    /// Render what a digest would send next, without sending or marking anything.
    Digest {
        #[command(flatten)]
        common: commands::Common,
        /// Preview (the only mode: nothing is ever sent from here).
        #[arg(long, required = true)]
        preview: bool,
        /// The digest id (default: every configured digest).
        id: Option<String>,
        /// Where to write the HTML part (default: policywatch-preview-ID.html here).
        #[arg(long, value_name = "PATH")]
        html: Option<std::path::PathBuf>,
    },
    /// Send a test message through the configured SMTP server and show what it said.
    SendTest {
        #[command(flatten)]
        common: commands::Common,
        /// Recipient (default: the recipients of the first email digest).
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
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
                preview: _,
                id,
                html,
            } => commands::digest_preview(&common, id.as_deref(), html.as_deref()),
            Command::SendTest { common, to } => commands::send_test(&common, to.as_deref()).await,
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
