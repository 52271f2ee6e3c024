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

    /// Opens the existing state read-only for the commands that only read it (they never
    /// create one, never migrate, never take the daemon's lock).
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let db = self.existing_db()?;
        Store::open_read_only(&db).with_context(|| format!("cannot open {}", db.display()))
    }

    /// The database of an existing state; an error saying what to do when there is none.
    fn existing_db(&self) -> anyhow::Result<PathBuf> {
        let db = crate::store::db_path(&self.state_dir());
        if !db.exists() {
            bail!(
                "no state at {} yet: run `policywatch run` first (or pass --state-dir)",
                db.display()
            );
        }
        Ok(db)
    }

    /// Opens the existing state for writing, for the one command besides `run` that writes
    /// (`digest --resend`: it records the attempt). Never creates a state.
    pub fn open_store_for_writing(&self) -> anyhow::Result<Store> {
        let db = self.existing_db()?;
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
/// Exit status of `run --once` (and `digest --resend`) when something needs a person: every
/// feed failed, a delivery or a recipient failed for good, or a delivery is held for the
/// operator (authentication, TLS, size, a removed digest).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of `run --once` when mail was deferred — a relay's temporary trouble; the
/// delivery stays pending and the next run (or the daemon) retries it (sysexits'
/// EX_TEMPFAIL).
pub const EXIT_DEFERRED: u8 = 75;

/// The exit status `run --once` ends with, from what the run did.
pub fn once_exit_code(summary: &daemon::Summary) -> u8 {
    let m = &summary.mail;
    let all_feeds_failed = summary.polls > 0 && summary.failures == summary.polls;
    if all_feeds_failed || m.failed > 0 || m.recipients_failed > 0 || m.held > 0 {
        EXIT_FAILURE
    } else if m.retrying > 0 {
        EXIT_DEFERRED
    } else {
        0
    }
}

/// Exit status of `run` when another daemon holds the state directory (sysexits'
/// EX_TEMPFAIL): not a config error, and it may work once the other one has stopped.
pub const EXIT_LOCKED: u8 = 75;

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
        // (Not a store error inside it: a full disk is no config problem, and exiting 78 for
        // it once kept the service down after space returned.)
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<crate::notify::NotifyError>()
                    .is_some_and(|n| !matches!(n, crate::notify::NotifyError::Store(_)))
            }) =>
        {
            crate::logging::diag(3, &format!("error: {e:#}"));
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(e)
            if e.chain().any(|c| {
                matches!(c.downcast_ref(), Some(crate::store::LockError::Held { .. }))
            }) =>
        {
            crate::logging::diag(3, &format!("error: {e:#}"));
            return Ok(ExitCode::from(EXIT_LOCKED));
        }
        Err(e) => return Err(e),
    };
    if once {
        let mut out = std::io::stdout().lock();
        for line in &summary.pending_before {
            writeln!(out, "note: {line}")?;
        }
        for text in &summary.digests {
            writeln!(out, "{text}")?;
        }
        if summary.polls > 0 && summary.failures == summary.polls {
            writeln!(
                out,
                "policywatch: {} of {} feeds failed (see `policywatch feeds`)",
                summary.failures, summary.polls
            )?;
        } else if summary.digests.is_empty() {
            writeln!(
                out,
                "policywatch: {} polls, {} new items, nothing new matched",
                summary.polls, summary.new_items
            )?;
        }
        for line in &summary.problems {
            writeln!(out, "problem: {line}")?;
        }
        return Ok(ExitCode::from(once_exit_code(&summary)));
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

/// Where `key` is written in the `[smtp]` table (`span`) of `src`, or the table's start.
fn smtp_key_offset(src: &str, span: std::ops::Range<usize>, key: &str) -> usize {
    // From the table's start to the next table header: the span may cover only the header
    // (`[smtp]`), or the whole table, depending on the toml parser.
    let rest = src.get(span.start..).unwrap_or("");
    let body_from = rest.find('\n').map_or(rest.len(), |i| i + 1);
    let end = rest[body_from..]
        .match_indices('\n')
        .map(|(i, _)| body_from + i + 1)
        .find(|&i| rest[i..].trim_start().starts_with('['))
        .unwrap_or(rest.len())
        .max(span.len().min(rest.len()));
    let table = &rest[..end];
    let mut at = 0;
    while let Some(i) = table[at..].find(key) {
        let pos = at + i;
        let before = table[..pos].chars().next_back();
        let after = table[pos + key.len()..].trim_start().chars().next();
        if before.map_or(true, |c| {
            c == '\n' || c.is_whitespace() || c == '{' || c == ','
        }) && after == Some('=')
        {
            return span.start + pos;
        }
        at = pos + key.len();
    }
    span.start
}

/// The SMTP password source, checked as the daemon will read it: errors (rendered with
/// their position and a hint) and warnings.
fn check_smtp_password(l: &Loaded, source: &ConfigSource) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let Some(smtp) = &l.config.smtp else {
        return (errors, warnings);
    };
    if !l.digests.iter().any(|d| d.via == crate::config::Via::Email) {
        return (errors, warnings); // the daemon never reads it
    }
    let src = match source {
        ConfigSource::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
        ConfigSource::Embedded => crate::config::EMBEDDED_DEFAULT.to_string(),
    };
    let at = |key| smtp_key_offset(&src, smtp.span(), key);
    match smtp
        .get_ref()
        .check_password_source(&|k| std::env::var(k).ok())
    {
        crate::mail::SourceCheck::Ok => {}
        crate::mail::SourceCheck::Error { key, message, hint } => errors.push(
            crate::diagnostic::render_at(&l.origin, &src, at(key), "error", &message, Some(&hint)),
        ),
        crate::mail::SourceCheck::Warning { key, message } => warnings.push(
            crate::diagnostic::render_at(&l.origin, &src, at(key), "warning", &message, None),
        ),
    }
    (errors, warnings)
}

/// Reads every webhook digest's signing secret as the daemon will, reporting a source that
/// cannot be read at the digest. A systemd credential outside systemd is only a warning.
fn check_webhook_secrets(l: &Loaded, source: &ConfigSource) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let src = match source {
        ConfigSource::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
        ConfigSource::Embedded => crate::config::EMBEDDED_DEFAULT.to_string(),
    };
    let env = |k: &str| std::env::var(k).ok();
    for (dc, d) in l.config.digests.iter().zip(&l.digests) {
        let Some(t) = &d.webhook else { continue };
        let at = dc.id.span().start;
        if t.secret.credential.is_some() && env("CREDENTIALS_DIRECTORY").is_none() {
            warnings.push(crate::diagnostic::render_at(
                &l.origin,
                &src,
                at,
                "warning",
                &format!(
                    "digest `{}`: secret_credential is read from $CREDENTIALS_DIRECTORY, which \
                     only systemd sets: not checked here",
                    d.id
                ),
                None,
            ));
            continue;
        }
        if let Err(e) = t.secret.read("secret", "secret", &env) {
            errors.push(crate::diagnostic::render_at(
                &l.origin,
                &src,
                at,
                "error",
                &format!("digest `{}`: {e}", d.id),
                Some("fix the path or variable; the secret itself never goes in this file"),
            ));
        }
    }
    (errors, warnings)
}

/// `policywatch check`: exit 0 when the config compiles and its SMTP password source can be
/// read, else print every error.
pub fn check(common: &Common) -> anyhow::Result<ExitCode> {
    let source = common.config_source();
    match source.load_runnable() {
        Ok(mut l) => {
            let (mut errors, warnings) = check_smtp_password(&l, &source);
            l.warnings.extend(warnings);
            let (hook_errors, hook_warnings) = check_webhook_secrets(&l, &source);
            errors.extend(hook_errors);
            l.warnings.extend(hook_warnings);
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("{e}\n");
                }
                eprintln!("{} error(s)", errors.len());
                return Ok(ExitCode::FAILURE);
            }
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
            (None, Some(e)) if st.is_failing() => e.clone(),
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
    let problems = crate::notify::problems(&store, &cfg, Utc::now())?;
    let pending = store.pending_deliveries()?.len();
    if !problems.is_empty() || pending > 0 {
        writeln!(out, "\nDELIVERIES: {pending} pending")?;
        for p in &problems {
            writeln!(out, "  error: {}", one_line(&p.line()))?;
        }
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

/// `policywatch send-test [--to ADDR] [--digest ID]`: one small message through the
/// configured SMTP server and to every webhook digest (or only digest `ID`), reporting exactly
/// what each receiver said. Fails when any of them did not take it.
pub async fn send_test(
    common: &Common,
    to: Option<&str>,
    digest: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    let hooks: Vec<_> = cfg
        .digests
        .iter()
        .filter(|d| digest.map_or(true, |id| d.id == id))
        .filter_map(|d| Some((d.id.as_str(), d.webhook.as_ref()?)))
        .collect();
    let wants_mail = match digest {
        Some(id) => {
            let Some(d) = cfg.digests.iter().find(|d| d.id == id) else {
                bail!("there is no digest `{id}` in {}", cfg.origin);
            };
            d.via == crate::config::Via::Email
        }
        None => to.is_some() || cfg.config.smtp.is_some() || hooks.is_empty(),
    };
    let mut ok = true;
    for (id, target) in hooks {
        ok &= send_test_webhook(id, target).await?;
    }
    if wants_mail {
        ok &= send_test_mail(&cfg, to, digest).await?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One test POST to a webhook digest's receiver.
async fn send_test_webhook(id: &str, target: &crate::webhook::Target) -> anyhow::Result<bool> {
    use crate::webhook;
    let ep = webhook::Endpoint::new(target, &|k| std::env::var(k).ok())
        .with_context(|| format!("digest `{id}`"))?;
    let client = webhook::client()?;
    let now = Utc::now();
    let notice = webhook::test_notice(id, now);
    let payload = webhook::render(ep.format, &notice);
    match webhook::post(&client, &ep, &payload, &notice.delivery_id, now).await {
        Ok(a) => {
            println!(
                "digest `{id}`: posted to {} ({}): {}",
                ep.display_target(),
                ep.format.as_str(),
                a.reply
            );
            Ok(true)
        }
        Err(e) => {
            eprintln!(
                "digest `{id}`: not posted: {} ({})",
                e.message,
                if e.transient() {
                    "temporary: try again later"
                } else {
                    "permanent"
                }
            );
            Ok(false)
        }
    }
}

/// One test message through the SMTP relay, to `to` or the recipients of the email digest.
async fn send_test_mail(
    cfg: &crate::config::Loaded,
    to: Option<&str>,
    digest: Option<&str>,
) -> anyhow::Result<bool> {
    let Some(smtp) = &cfg.config.smtp else {
        bail!("there is no [smtp] section in {}", cfg.origin);
    };
    let recipients: Vec<String> = match to {
        Some(a) => vec![a.to_string()],
        None => cfg
            .digests
            .iter()
            .find(|d| d.via == crate::config::Via::Email && digest.map_or(true, |id| d.id == id))
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
        listed: 0,
        trimmed: 0,
        deferred: Vec::new(),
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
            Ok(true)
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
            Ok(false)
        }
    }
}

/// The most stories `policywatch stories` lists (newest first).
const ARCHIVE_LIMIT: usize = 1000;

/// One delivery's fate, as the archive tells it.
fn fate(store: &Store, d: &crate::store::Delivery) -> anyhow::Result<serde_json::Value> {
    let recipients = store.recipients(d.id)?;
    let refused: Vec<serde_json::Value> = recipients
        .iter()
        .filter(|r| r.status == "failed")
        .map(|r| serde_json::json!({"address": r.address, "error": r.last_error}))
        .collect();
    let state = match (d.status.as_str(), d.held) {
        ("pending", true) => "held",
        (s, _) => s,
    };
    let trimmed = match (d.shown, d.stories) {
        (Some(shown), Some(stories)) if shown < stories => Some(stories - shown),
        _ => None,
    };
    Ok(serde_json::json!({
        "state": if state == "sent" { "delivered" } else { state },
        "delivery": d.id,
        "digest": d.digest_id,
        "kind": d.kind.as_str(),
        "at": d.sent_at.unwrap_or(d.created_at).to_rfc3339(),
        "message_id": d.message_id,
        "recipients": recipients.iter().filter(|r| r.status == "sent").map(|r| r.address.clone()).collect::<Vec<_>>(),
        "refused": refused,
        "error": d.last_error,
        "not_shown_in_digest": trimmed,
        "resent_at": d.resent_at.map(|t| t.to_rfc3339()),
    }))
}

/// One line for a fate (the text form of `stories`).
fn fate_line(f: &serde_json::Value) -> String {
    let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
    let at = s("at").get(..16).unwrap_or("").replace('T', " ");
    let mut line = match s("state").as_str() {
        "delivered" => format!(
            "delivered by `{}` ({} {}) at {at} UTC, Message-ID <{}>",
            s("digest"),
            s("kind"),
            f["delivery"],
            s("message_id")
        ),
        "held" => format!(
            "pending in `{}` delivery {}, held for the operator: {}",
            s("digest"),
            f["delivery"],
            s("error")
        ),
        "pending" => format!(
            "pending in `{}` delivery {} (next attempt due){}",
            s("digest"),
            f["delivery"],
            if s("error").is_empty() {
                String::new()
            } else {
                format!(": {}", s("error"))
            }
        ),
        _ => format!(
            "failed in `{}` delivery {}: {}",
            s("digest"),
            f["delivery"],
            s("error")
        ),
    };
    if let Some(refused) = f["refused"].as_array().filter(|r| !r.is_empty()) {
        let who: Vec<String> = refused
            .iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    r["address"].as_str().unwrap_or(""),
                    r["error"].as_str().unwrap_or("")
                )
            })
            .collect();
        line.push_str(&format!("; failed for {}", who.join(", ")));
    }
    if let Some(n) = f["not_shown_in_digest"].as_u64() {
        line.push_str(&format!(
            "; that digest left {n} of its stories out (trimmed) — this may be one"
        ));
    }
    if f["resent_at"].is_string() {
        line.push_str(&format!("; resent at {}", s("resent_at")));
    }
    one_line(&line)
}

/// `policywatch stories`: the archive of flagged stories and what became of each.
pub fn stories(
    common: &Common,
    watch: Option<&str>,
    since: std::time::Duration,
    search: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Read-only use of the store (the read-only open is `state`'s work; until it lands this
    // is the ordinary open).
    let store = common.open_store()?;
    let since_t = Utc::now() - chrono::Duration::from_std(since).unwrap_or_default();
    let rows = store.archive(since_t, watch, search, ARCHIVE_LIMIT)?;
    let mut out = std::io::stdout().lock();
    for s in &rows {
        let fates: Vec<serde_json::Value> = s
            .claims
            .iter()
            .map(|d| fate(&store, d))
            .collect::<anyhow::Result<_>>()?;
        let joined: Vec<serde_json::Value> = if s.claims.is_empty() {
            s.joined
                .iter()
                .map(|(item, feed, title, delivery)| {
                    serde_json::json!({"item": item, "feed": feed, "title": title, "delivery": delivery})
                })
                .collect()
        } else {
            Vec::new()
        };
        if json {
            let v = serde_json::json!({
                "item": s.item_id,
                "watch": s.watch_id,
                "score": s.score,
                "title": s.title,
                "link": s.link,
                "feed": s.feed_name,
                "first_seen": s.first_seen_at.to_rfc3339(),
                "story": s.cluster_id,
                "fates": fates,
                "joined": joined,
                "also_reported_by": s.also_reported_by,
            });
            writeln!(out, "{v}")?;
            continue;
        }
        writeln!(
            out,
            "{}  {:<16} {}  [{}]",
            s.first_seen_at.format("%Y-%m-%d %H:%M"),
            s.watch_id,
            one_line(&s.title),
            one_line(&s.feed_name)
        )?;
        if let Some(l) = &s.link {
            writeln!(out, "    {}", one_line(l))?;
        }
        for f in &fates {
            writeln!(out, "    {}", fate_line(f))?;
        }
        for j in &joined {
            writeln!(
                out,
                "    joined story {} — told first as “{}” [{}], which delivery {} carried",
                s.cluster_id,
                one_line(j["title"].as_str().unwrap_or("")),
                one_line(j["feed"].as_str().unwrap_or("")),
                j["delivery"]
            )?;
        }
        if fates.is_empty() && joined.is_empty() {
            writeln!(out, "    not in a digest yet: waiting for the next one")?;
        }
        if !s.also_reported_by.is_empty() {
            writeln!(
                out,
                "    also reported by {}",
                one_line(&s.also_reported_by.join(", "))
            )?;
        }
    }
    if !json {
        eprintln!(
            "{} flagged stories{}",
            rows.len(),
            if rows.len() == ARCHIVE_LIMIT {
                " (the newest; narrow with --since, --watch or --search)"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `policywatch digest --resend DELIVERY [--to ADDR…]`: see [`crate::notify::Notifier::resend`].
pub async fn digest_resend(common: &Common, id: i64, to: &[String]) -> anyhow::Result<ExitCode> {
    let cfg = common.load()?;
    for a in to {
        a.parse::<lettre::message::Mailbox>()
            .map_err(|e| anyhow::anyhow!("--to `{a}` is not a mail address: {e}"))?;
    }
    let notifier = crate::notify::Notifier::new(&cfg).context("cannot set up notifications")?;
    let mut store = common.open_store_for_writing()?;
    let report = notifier
        .resend(&mut store, &cfg, id, to, Utc::now())
        .await?;
    let mut out = std::io::stdout().lock();
    for t in &report.texts {
        writeln!(out, "{t}")?;
    }
    let code = if report.failed > 0 || report.recipients_failed > 0 || report.held > 0 {
        EXIT_FAILURE
    } else if report.retrying > 0 {
        EXIT_DEFERRED
    } else {
        0
    };
    Ok(ExitCode::from(code))
}
