//! The command-line commands, as library functions the thin binary calls. Each returns the
//! process exit code; errors carry context for the user (`anyhow` at this edge only).
//!
//! In: parsed arguments. Out: text on stdout (results) and stderr (diagnostics, logs).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::Utc;
use tokio::sync::mpsc;

use crate::config::Loaded;
use crate::daemon::{self, ConfigSource, Control};
use crate::feed;
use crate::fetch::{FetchOutcome, FetchRequest, Fetcher};
use crate::item::Item;
use crate::store::Store;

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Config file. Default: $CONFIGURATION_DIRECTORY/policywatch.toml under systemd, else
    /// config/policywatch.toml if it exists, else the embedded default.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// State directory (the SQLite database). Default: $STATE_DIRECTORY, else ./state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl Common {
    pub fn config_source(&self) -> ConfigSource {
        if let Some(p) = &self.config {
            return ConfigSource::File(p.clone());
        }
        if let Some(dir) = std::env::var_os("CONFIGURATION_DIRECTORY") {
            // systemd may pass several directories separated by ':'; ours is the first.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            let p = Path::new(&first).join("policywatch.toml");
            if p.exists() {
                return ConfigSource::File(p);
            }
        }
        let local = PathBuf::from("config/policywatch.toml");
        if local.exists() {
            ConfigSource::File(local)
        } else {
            ConfigSource::Embedded
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            Some(dir) => PathBuf::from(
                dir.to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("state")
                    .to_string(),
            ),
            None => PathBuf::from("state"),
        }
    }

    /// Opens the existing state for the commands that read it (they never create one).
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let db = crate::store::db_path(&self.state_dir());
        if !db.exists() {
            bail!(
                "no state at {} yet: run `policywatch run` first (or pass --state-dir)",
                db.display()
            );
        }
        Store::open(&db).with_context(|| format!("cannot open {}", db.display()))
    }

    /// Loads and compiles the config, printing every error (and warning) to stderr (with
    /// journal priorities under systemd).
    pub fn load(&self) -> anyhow::Result<Loaded> {
        self.report_load(self.config_source().load())
    }

    /// [`Common::load`] for the daemon: also refuses a config it would run doing nothing.
    pub fn load_runnable(&self) -> anyhow::Result<Loaded> {
        self.report_load(self.config_source().load_runnable())
    }

    fn report_load(
        &self,
        loaded: Result<Loaded, crate::config::ConfigErrors>,
    ) -> anyhow::Result<Loaded> {
        match loaded {
            Ok(l) => {
                for w in &l.warnings {
                    crate::logging::diag(4, &format!("{w}\n\n"));
                }
                Ok(l)
            }
            Err(errors) => {
                for e in &errors.0 {
                    crate::logging::diag(3, &format!("{e}\n\n"));
                }
                bail!(
                    "the configuration has {} error(s); nothing was started",
                    errors.0.len()
                )
            }
        }
    }
}

/// Exit status of `run` when the config does not compile (sysexits' EX_CONFIG). The unit's
/// `RestartPreventExitStatus=` names it: restarting cannot fix a config, and a restart loop
/// would bury the error in the journal.
pub const EXIT_CONFIG: u8 = 78;

/// `policywatch run`: the daemon (or one cycle with `--once`).
pub async fn run(common: &Common, once: bool, all: bool) -> anyhow::Result<ExitCode> {
    let cfg = match common.load_runnable() {
        Ok(cfg) => cfg,
        Err(e) => {
            crate::logging::diag(3, &format!("error: {e:#}"));
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let (tx, rx) = mpsc::channel(4);
    spawn_signal_handlers(tx)?;
    let opts = daemon::Options {
        state_dir: common.state_dir(),
        once,
        all,
    };
    let summary = match daemon::run(common.config_source(), cfg, opts, rx).await {
        Ok(s) => s,
        // Mail set-up reads only the config and the password: failing there is a config
        // problem, which a restart cannot fix (EX_CONFIG, not restarted by the unit).
        Err(e)
            if e.chain()
                .any(|c| c.downcast_ref::<crate::notify::NotifyError>().is_some()) =>
        {
            crate::logging::diag(3, &format!("error: {e:#}"));
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(e) => return Err(e),
    };
    if once {
        let mut out = std::io::stdout().lock();
        for text in &summary.digests {
            writeln!(out, "{text}")?;
        }
        if summary.digests.is_empty() {
            writeln!(
                out,
                "policywatch: {} polls, {} new items, nothing new matched",
                summary.polls, summary.new_items
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP → reload; SIGTERM, SIGINT → shutdown.
fn spawn_signal_handlers(tx: mpsc::Sender<Control>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
            };
            if tx.send(c).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// `policywatch check`: exit 0 when the config compiles, else print every error.
pub fn check(common: &Common) -> anyhow::Result<ExitCode> {
    let source = common.config_source();
    match source.load_runnable() {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("{w}\n");
            }
            println!(
                "{}: ok — {} feeds, {} watches, {} digests{}",
                l.origin,
                l.feeds.len(),
                l.config.watches.len(),
                l.digests.len(),
                if l.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warning(s)", l.warnings.len())
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}\n");
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Reads a feed from a path or URL through the same fetcher (limits, charsets) as the daemon.
async fn read_source(fetcher: &Fetcher, source: &str) -> anyhow::Result<(String, Vec<Item>)> {
    let url = match url::Url::parse(source) {
        Ok(u) if matches!(u.scheme(), "http" | "https" | "file") => u,
        _ => {
            let path =
                std::fs::canonicalize(source).with_context(|| format!("{source}: no such file"))?;
            url::Url::from_file_path(&path)
                .map_err(|_| anyhow::anyhow!("{source}: cannot make a file URL"))?
        }
    };
    match fetcher
        .fetch(&FetchRequest {
            url: url.clone(),
            etag: None,
            last_modified: None,
        })
        .await
    {
        FetchOutcome::Fetched {
            body,
            content_type,
            final_url,
            ..
        } => {
            let parsed = feed::parse(&body, content_type.as_deref(), Some(&final_url))
                .with_context(|| format!("{source}: not a usable feed"))?;
            let name = parsed.title.clone().unwrap_or_else(|| source.to_string());
            Ok((name, parsed.items))
        }
        FetchOutcome::NotModified { .. } => bail!("{source}: server said not modified"),
        FetchOutcome::Gone => bail!("{source}: gone (HTTP 410)"),
        FetchOutcome::Failed { error, .. } => bail!("{source}: {error}"),
    }
}

/// The id printed for an item: its GUID, else its link, else its content hash.
fn display_id(it: &Item) -> String {
    it.guid
        .clone()
        .or_else(|| it.link.clone())
        .unwrap_or_else(|| it.content_hash())
}

/// `policywatch score`: the config's watches on labelled items (JSON Lines and a TSV of labels),
/// precision / recall / F1 per watch and language, then the misses.
pub fn score(
    common: &Common,
    items: &std::path::Path,
    labels: &std::path::Path,
    json: bool,
    misses: Option<usize>,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let cfg = common.load()?;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let items_src = read(items)?;
    let labels_src = read(labels)?;
    let items =
        crate::score::parse_items(&items_src).with_context(|| items.display().to_string())?;
    let ids = cfg.classifier.watch_ids();
    let labels = crate::score::parse_labels(&labels_src, &ids)
        .with_context(|| labels.display().to_string())?;
    let report = crate::score::score(&cfg.classifier, &items, &labels);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", crate::score::render_json(&report, misses))?;
    } else {
        write!(out, "{}", crate::score::render_text(&report, misses))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `policywatch classify`: every item of every source, matched or not.
pub async fn classify(
    common: &Common,
    sources: &[String],
    json: bool,
    explain: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    let fetcher = Fetcher::new(&cfg.config.http)?;
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for source in sources {
        let (name, items) = match read_source(&fetcher, source).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
                continue;
            }
        };
        for mut it in items {
            it.feed_name = name.clone();
            crate::lang::fill(&mut it);
            let verdicts = cfg.classifier.classify(&it);
            if json {
                let watches: Vec<_> = verdicts
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "id": v.watch_id,
                            "score": v.score,
                            "matched": v.matched_terms(),
                        })
                    })
                    .collect();
                let line = serde_json::json!({
                    "id": display_id(&it),
                    "link": it.link,
                    "title": it.title,
                    "lang": it.lang,
                    "watches": watches,
                });
                writeln!(out, "{line}")?;
            } else if explain {
                writeln!(
                    out,
                    "── {}\n{}",
                    one_line(&it.title),
                    cfg.classifier.explain(&it)
                )?;
            } else {
                let tags: Vec<_> = verdicts.iter().map(|v| v.watch_id.as_str()).collect();
                writeln!(
                    out,
                    "{:<24} {}",
                    if tags.is_empty() {
                        "-".to_string()
                    } else {
                        tags.join(",")
                    },
                    one_line(&it.title)
                )?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn ago(t: Option<chrono::DateTime<Utc>>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let d = Utc::now() - t;
            let future = d < chrono::Duration::zero();
            let s = d.num_seconds().unsigned_abs();
            let txt = if s < 120 {
                format!("{s}s")
            } else if s < 7200 {
                format!("{}m", s / 60)
            } else if s < 172_800 {
                format!("{}h", s / 3600)
            } else {
                format!("{}d", s / 86_400)
            };
            if future {
                format!("in {txt}")
            } else {
                format!("{txt} ago")
            }
        }
    }
}

/// When the next poll is: "now" once it is due — a row the daemon registered but never polled
/// has its next poll at the epoch, which is "due", not "20788d ago" — else "in 5m".
fn next_poll(at: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> String {
    if at <= now {
        "now".into()
    } else {
        ago(Some(at))
    }
}

/// `policywatch feeds`: a table of every configured feed's health.
pub fn feeds(common: &Common) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    let store = common.open_store()?;
    let states: std::collections::HashMap<String, crate::store::FeedState> = store
        .feeds()?
        .into_iter()
        .map(|f| (f.url.clone(), f))
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<28} {:<10} {:>6} {:<10} {:<10} LAST ERROR / NOTE",
        "FEED", "STATE", "ITEMS", "SUCCESS", "NEXT POLL"
    )?;
    for f in &cfg.feeds {
        let Some(st) = states.get(&f.url) else {
            writeln!(
                out,
                "{:<28} {:<10} {:>6} {:<10} {:<10}",
                trunc(&f.name, 28),
                "new",
                0,
                "never",
                "now"
            )?;
            continue;
        };
        let state = if st.gone_at.is_some() {
            "gone".to_string()
        } else if st.consecutive_failures > 0 {
            format!("failing×{}", st.consecutive_failures)
        } else if st.last_success_at.is_some() {
            "ok".to_string()
        } else {
            "new".to_string()
        };
        let note = match (&st.moved_to, &st.last_error) {
            (Some(m), _) => format!("moved to {m}: update the config"),
            (None, Some(e)) if st.consecutive_failures > 0 || st.gone_at.is_some() => e.clone(),
            _ => String::new(),
        };
        let next = if st.gone_at.is_some() {
            "-".to_string()
        } else {
            next_poll(
                st.next_poll_at
                    .max(st.retry_not_before.unwrap_or(st.next_poll_at)),
                Utc::now(),
            )
        };
        let note = if note.is_empty() && st.first_polled_at.is_none() {
            "not polled yet".to_string()
        } else {
            note
        };
        writeln!(
            out,
            "{:<28} {:<10} {:>6} {:<10} {:<10} {}",
            trunc(&f.name, 28),
            state,
            st.items_total,
            ago(st.last_success_at),
            next,
            one_line(&note)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `policywatch backtest`: what the current rules would change over stored items. Sends
/// nothing and changes no verdict.
pub fn backtest(
    common: &Common,
    since: std::time::Duration,
    watch: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    if let Some(w) = watch {
        if !cfg.config.watches.iter().any(|cw| cw.id == w) {
            bail!("there is no watch `{w}` in {}", cfg.origin);
        }
    }
    let store = common.open_store()?;
    // A `--since` beyond what a timestamp holds means "everything", never a panic.
    let since_t = chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let items = store.items_since(since_t)?;
    let report = crate::backtest::compare(&cfg, &items, watch);
    print!("{}", report.render(items.len()));
    Ok(ExitCode::SUCCESS)
}

/// `policywatch import-opml FILE`: `[[feeds]]` entries on stdout; what was skipped on stderr.
pub fn import_opml(file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let import = crate::opml::import_report(&text)
        .with_context(|| format!("{} is not usable OPML", file.display()))?;
    for s in &import.skipped {
        eprintln!("skipped: {s}");
    }
    print!("{}", crate::opml::to_config_toml(&import.feeds));
    eprintln!(
        "{} feeds; paste them into the config, then run `policywatch check`",
        import.feeds.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `policywatch export-opml`: the configured feeds as OPML 2.0 on stdout.
pub fn export_opml(common: &Common) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    let feeds: Vec<(String, String, Vec<String>)> = cfg
        .feeds
        .iter()
        .map(|f| (f.name.clone(), f.url.clone(), f.tags.clone()))
        .collect();
    print!("{}", crate::opml::export(&feeds, "policywatch feeds"));
    Ok(ExitCode::SUCCESS)
}

/// `policywatch digest --preview [ID]`: the text of what each digest would send next on stdout,
/// its HTML in a file. Claims, sends and marks nothing.
pub fn digest_preview(
    common: &Common,
    id: Option<&str>,
    html: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    let ids: Vec<String> = match id {
        Some(id) => {
            if !cfg.digests.iter().any(|d| d.id == id) {
                let known: Vec<&str> = cfg.digests.iter().map(|d| d.id.as_str()).collect();
                bail!(
                    "there is no digest `{id}`; the digests are: {}",
                    known.join(", ")
                );
            }
            vec![id.to_string()]
        }
        None => cfg.digests.iter().map(|d| d.id.clone()).collect(),
    };
    if html.is_some() && ids.len() > 1 {
        bail!("--html names one file: name the digest too");
    }
    let mut store = common.open_store()?;
    let mut out = std::io::stdout().lock();
    for id in ids {
        let Some(r) = crate::notify::preview(&mut store, &cfg, &id, Utc::now())? else {
            continue;
        };
        let path = html
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(format!("policywatch-preview-{id}.html")));
        std::fs::write(&path, &r.html)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(out, "Subject: {}\n\n{}", r.subject, r.text)?;
        eprintln!(
            "digest `{id}`: {} stories shown, {} trimmed; HTML written to {}",
            r.shown,
            r.trimmed,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `policywatch send-test [--to ADDR]`: one small message through the configured server,
/// reporting exactly what the server said.
pub async fn send_test(common: &Common, to: Option<&str>) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    let Some(smtp) = &cfg.config.smtp else {
        bail!("there is no [smtp] section in {}", cfg.origin);
    };
    let recipients: Vec<String> = match to {
        Some(a) => vec![a.to_string()],
        None => cfg
            .digests
            .iter()
            .find(|d| d.via == crate::config::Via::Email)
            .map(|d| d.to.clone())
            .unwrap_or_default(),
    };
    if recipients.is_empty() {
        bail!("no recipient: pass --to ADDR, or add an email digest with to = [...]");
    }
    let smtp = smtp.get_ref();
    let mailer = crate::mail::Mailer::new(smtp).context("cannot set up SMTP")?;
    let now = Utc::now();
    let rendered = crate::digest::Rendered {
        subject: "policywatch test message".into(),
        text: format!(
            "This is a test message from policywatch, sent {} through {}:{}.\n\
             If you can read it, digests will reach you.\n",
            now.format("%Y-%m-%d %H:%M UTC"),
            smtp.host,
            smtp.port()
        ),
        html: "<p>This is a test message from policywatch. If you can read it, digests will reach you.</p>".into(),
        shown: 0,
        trimmed: 0,
    };
    let msg = mailer.build_message(
        &recipients,
        &rendered,
        &format!("test.{}@policywatch", now.timestamp()),
        now,
        &mailer.list_id("test"),
    )?;
    match mailer.send(&msg).await {
        Ok(reply) => {
            println!(
                "sent to {}: the server said: {reply}",
                recipients.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "not sent: {}{} ({})",
                e.code.map(|c| format!("{c} ")).unwrap_or_default(),
                e.message,
                if e.transient {
                    "temporary: try again later"
                } else {
                    "permanent"
                }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
