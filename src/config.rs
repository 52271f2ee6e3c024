//! Configuration: the TOML file users edit, read once and compiled into what the daemon runs.
//!
//! In: the text of `policywatch.toml` (or the embedded default). Out: a [`Loaded`] config with
//! the watch rules compiled into a [`Classifier`], digest schedules parsed, feed URLs checked —
//! or *every* error found, each pointing at its line and column with a hint of what to write.
//!
//! Unknown keys are refused (a typo must not silently disable a rule). Nothing here does I/O
//! beyond reading the file; a reload builds a new `Loaded` beside the running one and the
//! daemon swaps only when it compiled.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::classify::{AlertMode, Classifier, WatchConfig};
pub use crate::diagnostic::render_at;
use crate::fetch::HttpConfig;
use crate::schedule::Schedule;
use crate::sets::SetLibrary;

mod bounds;
pub use bounds::{MAX_BODY_BYTES, MAX_FETCHES, MAX_HISTORY, MAX_INTERVAL, MAX_NETWORK_WAIT};

/// The shipped default configuration, compiled into the binary so `policywatch run` works on a
/// fresh machine with no config file at all.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/policywatch.toml");
/// The name under which the embedded default is reported in messages.
pub const EMBEDDED_NAME: &str = "<embedded default config>";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    #[serde(default)]
    pub watches: Vec<WatchConfig>,
    #[serde(default)]
    pub digests: Vec<DigestConfig>,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The mail relay, needed when a digest has `via = "email"`.
    #[serde(default)]
    pub smtp: Option<Spanned<crate::mail::SmtpConfig>>,
    /// `[sets.NAME]` term sets, added to (or replacing) the shipped ones. Read again with their
    /// positions by [`SetLibrary::with_config`]; here only so the key is known.
    #[serde(default)]
    pub sets: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Poll interval for feeds without their own.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// No feed is polled more often than this, whatever its own `interval` says.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Requests in flight at once, over all hosts.
    pub max_concurrent_fetches: usize,
    /// On a feed's first poll, items older than this are stored but not reported.
    #[serde(with = "humantime_serde")]
    pub backfill: Duration,
    /// Immediate alerts for one digest are sent at most this often; hits in between are
    /// coalesced into the next alert.
    #[serde(with = "humantime_serde")]
    pub alert_min_gap: Duration,
    /// Items first seen this close together are compared for being the same story (one
    /// story from several feeds, or re-issued under a new GUID, title or URL).
    #[serde(with = "humantime_serde")]
    pub cluster_window: Duration,
    /// Address of the optional metrics listener (`/metrics`, `/healthz`), e.g.
    /// "127.0.0.1:9187". Off when absent. A loopback address, or an explicit interface
    /// address (never a wildcard such as 0.0.0.0): see [`validate_listen`].
    pub listen: Option<Spanned<String>>,
}

impl DaemonConfig {
    /// The metrics listener's address, when configured (validated by `load_str`).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen
            .as_ref()
            .and_then(|l| l.get_ref().trim().parse().ok())
    }
}

/// Checks `[daemon] listen`: an `IP:PORT`. Loopback is the intended use; a specific
/// non-loopback address is allowed (the user named an interface on purpose) with a warning,
/// since the endpoints have no authentication; a wildcard address is refused, so the
/// listener is never exposed on every interface by accident.
pub fn validate_listen(text: &str) -> Result<Option<String>, (String, String)> {
    let addr: std::net::SocketAddr = text.trim().parse().map_err(|_| {
        (
            format!("daemon.listen `{text}` is not an IP:PORT address"),
            "write a loopback address such as \"127.0.0.1:9187\" or \"[::1]:9187\"".to_string(),
        )
    })?;
    let ip = effective_ip(addr.ip());
    if ip.is_unspecified() {
        return Err((
            format!("daemon.listen `{text}` would listen on every interface"),
            "the metrics endpoints have no authentication: use \"127.0.0.1:9187\", or name \
             one interface's address explicitly"
                .to_string(),
        ));
    }
    if ip.is_loopback() {
        Ok(None)
    } else {
        Ok(Some(format!(
            "daemon.listen `{text}` is not a loopback address: /metrics and /healthz will be \
             reachable without authentication from that network"
        )))
    }
}

/// The address a socket bound to `ip` really listens on: an IPv4-mapped (`::ffff:0.0.0.0`)
/// or IPv4-compatible (`::0.0.0.0`, deprecated) IPv6 address is its IPv4 address, so
/// `[::ffff:0.0.0.0]` is the IPv4 wildcard and `[::ffff:127.0.0.1]` loopback. `::1` is IPv6
/// loopback, not a compatible form of 0.0.0.1.
pub fn effective_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unspecified() => v6
            .to_ipv4_mapped()
            .or_else(|| v6.to_ipv4())
            .map_or(ip, std::net::IpAddr::V4),
        _ => ip,
    }
}

/// How long stored things are kept. See `Store::prune`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Items (and their verdicts) first seen longer ago than this lose their text; their
    /// identity stays as a tombstone so the feed cannot make them new again.
    #[serde(with = "humantime_serde")]
    pub items: Duration,
    /// Items that were delivered, and finished deliveries, are kept whole this long.
    #[serde(with = "humantime_serde")]
    pub delivered: Duration,
    /// Tombstones are deleted for good after this long.
    #[serde(with = "humantime_serde")]
    pub forget: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        RetentionConfig {
            items: Duration::from_secs(90 * DAY),
            delivered: Duration::from_secs(365 * DAY),
            forget: Duration::from_secs(730 * DAY),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            poll_interval: Duration::from_secs(30 * 60),
            min_interval: Duration::from_secs(5 * 60),
            max_concurrent_fetches: 16,
            backfill: Duration::from_secs(48 * 3600),
            alert_min_gap: Duration::from_secs(10 * 60),
            cluster_window: Duration::from_secs(3 * 86_400),
            listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub url: Spanned<String>,
    pub name: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Free-form tags, matched by the rules' `feed:` scope along with the name.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Where a digest goes. A closed set: adding an output is a visible change here and in
/// `notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Log,
    /// By SMTP through the `[smtp]` relay, to the digest's `to`.
    Email,
    /// An HTTP POST to the digest's `url`, in its `format` (see `webhook`).
    Webhook,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Log => "log",
            Via::Email => "email",
            Via::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    pub id: Spanned<String>,
    pub title: Option<String>,
    pub schedule: Spanned<String>,
    #[serde(default = "default_tz")]
    pub timezone: Spanned<String>,
    /// Watch ids, or `tag:NAME` for every watch with that tag. Empty: every watch.
    #[serde(default)]
    pub watches: Vec<Spanned<String>>,
    pub via: Via,
    /// Recipients, for `via = "email"`.
    #[serde(default)]
    pub to: Vec<String>,
    /// Send (or log) the digest even when nothing new matched.
    #[serde(default)]
    pub send_empty: bool,
    /// At most this many stories as full blocks in one message; the rest are listed compactly
    /// while the message stays under its size budget, and what does not fit waits for the
    /// next digest.
    #[serde(default = "default_max_stories")]
    pub max_stories: usize,
    /// For `via = "webhook"`: where to POST (http or https).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// For `via = "webhook"`: the body's shape.
    #[serde(default)]
    pub format: Option<Spanned<crate::webhook::Format>>,
    /// For `via = "webhook"`: the key that signs each body (`X-Policywatch-Signature`), from a
    /// file, an environment variable or a systemd credential — never in this file.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_credential: Option<String>,
    /// For `via = "webhook"`: the hard deadline of one POST, e.g. "10s".
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Keep an Atom feed of this digest's recent matches in the state directory (served at
    /// `/feeds/<id>.atom` by the `[daemon] listen` listener).
    #[serde(default)]
    pub atom: bool,
    /// Stories in the Atom feed.
    #[serde(default)]
    pub atom_entries: Option<Spanned<usize>>,
    /// Who readers write to about this digest, shown in its footer.
    pub contact: Option<Spanned<String>>,
    /// This digest goes to the person who runs the service: it shows feed health by default.
    #[serde(default)]
    pub operator: bool,
    /// Show the feed-health section (default: only in an `operator` digest).
    pub health: Option<bool>,
    /// `"reader"` (default): concepts in words; `"analyst"`: also matched terms and scores.
    pub detail: Option<Spanned<String>>,
}

fn default_tz() -> Spanned<String> {
    Spanned::new(0..0, "UTC".to_string())
}

fn default_max_stories() -> usize {
    150
}

/// A feed ready to poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    /// As configured: the feed's identity in the store.
    pub url: String,
    pub name: String,
    pub interval: Duration,
    pub tags: Vec<String>,
}

/// A digest ready to schedule.
#[derive(Debug, Clone)]
pub struct Digest {
    pub id: String,
    pub title: String,
    pub schedule: Schedule,
    pub schedule_text: String,
    pub timezone: chrono_tz::Tz,
    /// Resolved watch ids, in config order.
    pub watches: Vec<String>,
    /// Of those, the ones with `alert = "immediate"`.
    pub immediate: Vec<String>,
    pub via: Via,
    pub to: Vec<String>,
    pub send_empty: bool,
    pub max_stories: usize,
    /// For `via = "webhook"`.
    pub webhook: Option<crate::webhook::Target>,
    /// Stories in the digest's Atom feed; `None`: no feed.
    pub atom_entries: Option<usize>,
    /// Shown in the footer instead of "edit the config".
    pub contact: Option<String>,
    /// Whether the digest carries the feed-health section.
    pub health: bool,
    pub detail: crate::digest::Detail,
}

/// A configuration that parsed, validated and compiled.
pub struct Loaded {
    /// Where it came from (a path, or [`EMBEDDED_NAME`]).
    pub origin: String,
    pub config: Config,
    pub classifier: Arc<Classifier>,
    pub feeds: Vec<Feed>,
    pub digests: Vec<Digest>,
    /// Rendered warnings (noisy rules and the like): reported, never fatal.
    pub warnings: Vec<String>,
    /// Feed URL → index in `feeds`: the daemon looks feeds up per poll result, and a linear
    /// search over thousands of feeds per result is quadratic.
    feed_index: HashMap<String, usize>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("origin", &self.origin)
            .field("feeds", &self.feeds.len())
            .field("digests", &self.digests.len())
            .finish()
    }
}

impl Loaded {
    /// Every feed as (URL, name), what `Store::sync_feeds` takes.
    pub fn feed_rows(&self) -> impl Iterator<Item = (&str, &str)> {
        self.feeds.iter().map(|f| (f.url.as_str(), f.name.as_str()))
    }

    /// The configured feed with this URL.
    pub fn feed(&self, url: &str) -> Option<&Feed> {
        self.feed_index.get(url).map(|&i| &self.feeds[i])
    }

    /// What the daemon needs beyond a config that compiles: something to poll, rules to
    /// match and a digest to deliver. `check`, start-up and reload refuse a config without
    /// one of them — a half-written file that still parses must not be adopted and run doing
    /// nothing (`classify` and `backtest` need only the watches, so `load` does not ask this).
    pub fn runnable(&self) -> Result<(), ConfigErrors> {
        let missing: Vec<&str> = [
            (self.feeds.is_empty(), "no [[feeds]]"),
            (self.config.watches.is_empty(), "no [[watches]]"),
            (self.digests.is_empty(), "no [[digests]]"),
        ]
        .into_iter()
        .filter_map(|(m, what)| m.then_some(what))
        .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ConfigErrors(vec![render_at(
            &self.origin,
            "",
            0,
            "error",
            &format!(
                "{}: the daemon would poll, match or deliver nothing",
                missing.join(", ")
            ),
            Some(
                "a service config needs at least one feed, one watch and one digest; if the file \
                 is half-written, finish it and check again",
            ),
        )]))
    }

    pub fn watch_name(&self, id: &str) -> String {
        self.config
            .watches
            .iter()
            .find(|w| w.id == id)
            .and_then(|w| w.name.clone())
            .unwrap_or_else(|| id.to_string())
    }
}

/// Every problem found in a config, each rendered with its location. Display prints them all.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and compiles the config at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigErrors(vec![format!(
            "{}: cannot read config: {e}\n  = hint: pass --config PATH, or run without it to use the embedded default",
            path.display()
        )])
    })?;
    let origin = path.display().to_string();
    match std::str::from_utf8(&bytes) {
        Ok(src) => load_str(&origin, src),
        Err(e) => {
            // Point at the first bad byte; the line shown is the file as far as it decodes.
            let shown = String::from_utf8_lossy(&bytes);
            Err(ConfigErrors(vec![render_at(
                &origin,
                &shown,
                e.valid_up_to(),
                "error",
                "the file is not valid UTF-8 here",
                Some(
                    "save the file as UTF-8 (a stray byte from another encoding or a binary file)",
                ),
            )]))
        }
    }
}

/// The config to use when none is named: `config/policywatch.toml` if it exists, else the
/// embedded default.
pub fn load_default() -> Result<Loaded, ConfigErrors> {
    let local = PathBuf::from("config/policywatch.toml");
    if local.exists() {
        load(&local)
    } else {
        load_str(EMBEDDED_NAME, EMBEDDED_DEFAULT)
    }
}

/// What compiling a config's rules gave: the classifier, or the rendered errors; and the
/// rendered warnings (noisy terms, unused sets).
struct CompiledRules {
    classifier: Option<Classifier>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// The config's watches compiled on the shipped term sets joined with its own `[sets.*]`.
fn compile_rules(origin: &str, src: &str, config: &Config) -> CompiledRules {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let locate = bounds::Locator::new(src);
    // Term sets: the shipped library, with this config's own sets joined in.
    let own;
    let sets = if config.sets.is_empty() {
        SetLibrary::shipped().as_ref()
    } else {
        own = SetLibrary::with_config(origin, src);
        own.as_ref()
    };
    let classifier = match sets {
        Err(set_errs) => {
            errors.extend(set_errs.iter().cloned());
            None
        }
        Ok(sets) => match Classifier::compile_with(&config.watches, sets) {
            Ok(c) => {
                warnings.extend(c.warnings().iter().map(|w| w.render(origin, src)));
                warnings.extend(sets.unused_warnings(c.used_sets()));
                Some(c)
            }
            Err(rule_errs) => {
                errors.extend(rule_errs.into_iter().map(|mut e| {
                    // Errors about a watch as a whole (min_score, weights, its id) come without
                    // a span: point at the key they are about, else at the watch.
                    if e.span.is_none() {
                        let key = ["min_score", "weights", "id"]
                            .into_iter()
                            .find(|k| e.message.contains(k))
                            .unwrap_or("query");
                        e.span = locate.watch(&e.watch_id, key).or(Some(0..0));
                        e.offset = 0;
                    }
                    e.render(origin, src)
                }));
                None
            }
        },
    };
    CompiledRules {
        classifier,
        errors,
        warnings,
    }
}

/// What [`check_all_but_rules`] found: the feeds, the watch ids, and the warnings.
struct Checked {
    feeds: Vec<Feed>,
    watch_ids: HashSet<String>,
    warnings: Vec<String>,
}

/// Everything `load_str` checks besides the rules: the feeds (valid URLs, each listed once),
/// every bound, a config with nothing in it, the listen address and the watch ids. Errors go
/// to `errs`.
fn check_all_but_rules(config: &Config, errs: &mut Errors<'_>) -> Checked {
    let (origin, src) = (errs.origin, errs.src);
    let mut feeds = Vec::new();
    let mut seen_urls = HashSet::new();
    let mut warnings = Vec::new();
    let mut watch_ids = HashSet::new();
    let locate = bounds::Locator::new(src);
    // Feeds.
    for f in &config.feeds {
        let raw = f.url.get_ref().trim();
        match url::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "file") => {
                if !seen_urls.insert(u.to_string()) {
                    errs.at(
                        f.url.span(),
                        format!("feed `{raw}` is listed twice"),
                        Some("remove one of the two [[feeds]] entries".into()),
                    );
                }
                let interval = f
                    .interval
                    .unwrap_or(config.daemon.poll_interval)
                    .max(config.daemon.min_interval);
                feeds.push(Feed {
                    url: raw.to_string(),
                    name: f.name.clone().unwrap_or_else(|| {
                        u.host_str().map_or_else(|| raw.to_string(), str::to_string)
                    }),
                    interval,
                    tags: f.tags.clone(),
                });
            }
            Ok(u) => errs.at(
                f.url.span(),
                format!("feed URL scheme `{}` is not supported", u.scheme()),
                Some("write an http://, https:// or file:// URL".into()),
            ),
            Err(e) => errs.at(
                f.url.span(),
                format!("feed URL `{raw}` is not a valid URL: {e}"),
                Some("write a full URL such as \"https://example.com/feed.xml\"".into()),
            ),
        }
    }
    bounds::check(config, &locate, errs);
    if config.feeds.is_empty() && config.watches.is_empty() && config.digests.is_empty() {
        errs.at(
            0..0,
            "no feeds, watches or digests: this config would run and do nothing".into(),
            Some(
                "add [[feeds]], [[watches]] and [[digests]] (the shipped config is a start: \
                 config/policywatch.toml)"
                    .into(),
            ),
        );
    }

    if let Some(listen) = &config.daemon.listen {
        match validate_listen(listen.get_ref()) {
            Ok(None) => {}
            Ok(Some(w)) => warnings.push(render_at(
                origin,
                src,
                listen.span().start,
                "warning",
                &w,
                None,
            )),
            Err((msg, hint)) => errs.at(listen.span(), msg, Some(hint)),
        }
    }

    // Watches: ids unique and well-formed (the rules compile in `compile_rules`).
    for w in &config.watches {
        let span = w.query.span();
        if w.id.is_empty()
            || !w
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errs.at(
                span.clone(),
                format!("watch id `{}` must be letters, digits, `-` or `_`", w.id),
                Some("write an id such as \"export-controls\"".into()),
            );
        }
        if !watch_ids.insert(w.id.clone()) {
            errs.at(
                span,
                format!("watch id `{}` is used twice", w.id),
                Some("give each [[watches]] entry its own id".into()),
            );
        }
    }
    Checked {
        feeds,
        watch_ids,
        warnings,
    }
}

/// Parses, validates and compiles config text. `origin` names it in messages.
pub fn load_str(origin: &str, src: &str) -> Result<Loaded, ConfigErrors> {
    let config: Config = toml::from_str(src).map_err(|e| {
        let mut msg = e.message().trim().to_string();
        if msg.is_empty() {
            msg = "this is not valid here".to_string();
        }
        let hint = toml_hint(&msg);
        // Without a span (rare), the start of the file: a position is always given.
        let at = e.span().map_or(0, |s| s.start);
        ConfigErrors(vec![render_at(
            origin,
            src,
            at,
            "error",
            &msg,
            hint.as_deref(),
        )])
    })?;
    let mut errs = Errors {
        origin,
        src,
        list: Vec::new(),
    };

    // The feeds and the bounds are checked on a second thread while the rules compile: with
    // thousands of feeds those checks cost about as much as compiling the shipped rules. (This
    // way round, the compile's short-lived heap is the main thread's, which the daemon reuses,
    // rather than a second malloc arena's.)
    let (checked, rules) = std::thread::scope(|scope| {
        let checking = scope.spawn(|| check_all_but_rules(&config, &mut errs));
        let rules = compile_rules(origin, src, &config);
        let checked = checking
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (checked, rules)
    });
    let Checked {
        feeds,
        watch_ids,
        mut warnings,
    } = checked;
    errs.list.extend(rules.errors);
    warnings.extend(rules.warnings);
    let classifier = rules.classifier;

    // Digests.
    let mut digests = Vec::new();
    let mut digest_ids = HashSet::new();
    for d in &config.digests {
        let id = d.id.get_ref().clone();
        if !digest_ids.insert(id.clone()) {
            errs.at(
                d.id.span(),
                format!("digest id `{id}` is used twice"),
                Some("give each [[digests]] entry its own id".into()),
            );
        }
        let schedule = match Schedule::parse(d.schedule.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                errs.at(
                    d.schedule.span(),
                    format!("digest `{id}`: {e}"),
                    Some(
                        "write \"hourly\", \"daily 07:30\", \"weekdays 08:00\", \
                         \"weekly mon 09:00\" or a cron expression such as \"30 7 * * 1-5\""
                            .into(),
                    ),
                );
                None
            }
        };
        let tz = match d.timezone.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                errs.at(
                    d.timezone.span(),
                    format!(
                        "digest `{id}`: unknown time zone `{}`",
                        d.timezone.get_ref()
                    ),
                    Some("write an IANA zone name such as \"Europe/Berlin\" or \"UTC\"".into()),
                );
                None
            }
        };
        let mut watches = Vec::new();
        if d.watches.is_empty() {
            watches.extend(config.watches.iter().map(|w| w.id.clone()));
        }
        for w in &d.watches {
            let name = w.get_ref();
            if let Some(tag) = name.strip_prefix("tag:") {
                let tagged: Vec<_> = config
                    .watches
                    .iter()
                    .filter(|cw| cw.tags.iter().any(|t| t == tag))
                    .map(|cw| cw.id.clone())
                    .collect();
                if tagged.is_empty() {
                    errs.at(
                        w.span(),
                        format!("digest `{id}`: no watch has the tag `{tag}`"),
                        Some("add `tags = [\"…\"]` to a watch, or name watches by id".into()),
                    );
                }
                watches.extend(tagged);
            } else if watch_ids.contains(name) {
                watches.push(name.clone());
            } else {
                let known: Vec<_> = config.watches.iter().map(|w| w.id.as_str()).collect();
                errs.at(
                    w.span(),
                    format!("digest `{id}`: there is no watch `{name}`"),
                    Some(format!("the watches are: {}", known.join(", "))),
                );
            }
        }
        let mut seen = HashSet::new();
        watches.retain(|w| seen.insert(w.clone()));
        if d.via == Via::Email {
            if config.smtp.is_none() {
                errs.at(
                    d.id.span(),
                    format!("digest `{id}` has via = \"email\" but there is no [smtp] section"),
                    Some(
                        "add [smtp] with at least host and from, e.g. host = \"smtp.example.org\" \
                         and from = \"policywatch <alerts@example.org>\""
                            .into(),
                    ),
                );
            }
            if d.to.is_empty() {
                errs.at(
                    d.id.span(),
                    format!("digest `{id}` has via = \"email\" but no recipients"),
                    Some("add to = [\"analyst@example.org\"]".into()),
                );
            }
            for addr in &d.to {
                if let Err(e) = addr.parse::<lettre::message::Mailbox>() {
                    errs.at(
                        d.id.span(),
                        format!("digest `{id}`: `{addr}` is not a mail address ({e})"),
                        Some("write \"name@example.org\" or \"Name <name@example.org>\"".into()),
                    );
                }
            }
        }
        let webhook = check_webhook(&mut errs, &mut warnings, d, &id);
        let atom_entries = match (&d.atom_entries, d.atom) {
            (Some(n), _) if *n.get_ref() == 0 || *n.get_ref() > crate::atom::MAX_ENTRIES => {
                errs.at(
                    n.span(),
                    format!(
                        "digest `{id}`: atom_entries must be between 1 and {}",
                        crate::atom::MAX_ENTRIES
                    ),
                    Some("leave it out for 50".into()),
                );
                None
            }
            (Some(n), false) => {
                errs.at(
                    n.span(),
                    format!("digest `{id}` sets atom_entries but not atom = true"),
                    Some("add atom = true, or remove atom_entries".into()),
                );
                None
            }
            (n, true) => {
                let safe = !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !safe {
                    errs.at(
                        d.id.span(),
                        format!("digest id `{id}` cannot name a feed file (atom = true)"),
                        Some("use letters, digits, `-` or `_`, e.g. id = \"daily\"".into()),
                    );
                }
                Some(
                    n.as_ref()
                        .map_or(crate::atom::DEFAULT_ENTRIES, |n| *n.get_ref()),
                )
            }
            (None, false) => None,
        };
        if d.max_stories == 0 {
            errs.at(
                d.id.span(),
                format!("digest `{id}`: max_stories must be at least 1"),
                None,
            );
        }
        let detail = match &d.detail {
            None => Some(crate::digest::Detail::Reader),
            Some(v) => match crate::digest::Detail::parse(v.get_ref()) {
                Some(x) => Some(x),
                None => {
                    errs.at(
                        v.span(),
                        format!("digest `{id}`: unknown detail `{}`", v.get_ref()),
                        Some(
                            "write detail = \"reader\" (concepts in words) or \"analyst\" \
                             (also the matched terms and scores)"
                                .into(),
                        ),
                    );
                    None
                }
            },
        };
        let contact = match &d.contact {
            None => None,
            Some(c) => {
                let v = c.get_ref().trim();
                if v.is_empty() || v.chars().count() > 200 || v.chars().any(char::is_control) {
                    errs.at(
                        c.span(),
                        format!(
                            "digest `{id}`: contact must be one line of at most 200 characters"
                        ),
                        Some(
                            "write who readers can ask, e.g. contact = \"Trade desk \
                             <trade-desk@example.org>\""
                                .into(),
                        ),
                    );
                }
                Some(v.to_string())
            }
        };
        if let (Some(schedule), Some(timezone), Some(detail)) = (schedule, tz, detail) {
            let immediate = config
                .watches
                .iter()
                .filter(|w| w.alert == AlertMode::Immediate && watches.contains(&w.id))
                .map(|w| w.id.clone())
                .collect();
            digests.push(Digest {
                title: d
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("policywatch {id} digest")),
                id,
                schedule,
                schedule_text: d.schedule.get_ref().clone(),
                timezone,
                watches,
                immediate,
                via: d.via,
                to: d.to.clone(),
                send_empty: d.send_empty,
                max_stories: d.max_stories,
                webhook,
                atom_entries,
                contact,
                health: d.health.unwrap_or(d.operator),
                detail,
            });
        }
    }

    if let Some(smtp) = &config.smtp {
        if let Err(e) = smtp.get_ref().validate() {
            errs.at(smtp.span(), e.to_string(), None);
        }
    }

    match classifier {
        Some(c) if errs.list.is_empty() => Ok(Loaded {
            origin: origin.to_string(),
            config,
            classifier: Arc::new(c),
            feed_index: feeds
                .iter()
                .enumerate()
                .map(|(i, f)| (f.url.clone(), i))
                .collect(),
            feeds,
            digests,
            warnings,
        }),
        _ => Err(ConfigErrors(errs.list)),
    }
}

/// Checks a digest's webhook keys: `url` and `format` with `via = "webhook"` and only then;
/// an http(s) URL (plain http off loopback is a warning: the digest travels in clear text);
/// at most one secret source. Returns the target when everything needed is there.
fn check_webhook(
    errs: &mut Errors<'_>,
    warnings: &mut Vec<String>,
    d: &DigestConfig,
    id: &str,
) -> Option<crate::webhook::Target> {
    let secret = crate::secret::SecretSource {
        file: d.secret_file.clone(),
        env: d.secret_env.clone(),
        credential: d.secret_credential.clone(),
    };
    if d.via != Via::Webhook {
        let stray = [
            d.url.as_ref().map(|_| "url"),
            d.format.as_ref().map(|_| "format"),
            (secret.count() > 0).then_some("secret_file/secret_env/secret_credential"),
            d.timeout.map(|_| "timeout"),
        ];
        for key in stray.into_iter().flatten() {
            let span = match key {
                "url" => d.url.as_ref().map(|u| u.span()),
                "format" => d.format.as_ref().map(|f| f.span()),
                _ => None,
            };
            errs.at(
                span.unwrap_or_else(|| d.id.span()),
                format!(
                    "digest `{id}` sets {key}, which only a webhook uses, but has via = \"{}\"",
                    d.via.as_str()
                ),
                Some(format!("set via = \"webhook\", or remove {key}")),
            );
        }
        return None;
    }
    if !d.to.is_empty() {
        errs.at(
            d.id.span(),
            format!("digest `{id}` has via = \"webhook\" and recipients (`to`)"),
            Some("`to` is for via = \"email\": remove it, or make a second digest for mail".into()),
        );
    }
    let url = match &d.url {
        None => {
            errs.at(
                d.id.span(),
                format!("digest `{id}` has via = \"webhook\" but no url"),
                Some("add url = \"https://hooks.slack.com/services/…\" (the URL your chat tool gave you)".into()),
            );
            None
        }
        Some(u) => match url::Url::parse(u.get_ref().trim()) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
            {
                let loopback = match parsed.host() {
                    Some(url::Host::Domain(h)) => h.eq_ignore_ascii_case("localhost"),
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if parsed.scheme() == "http" && !loopback {
                    warnings.push(render_at(
                        errs.origin,
                        errs.src,
                        u.span().start,
                        "warning",
                        &format!("digest `{id}`: the webhook URL is plain http: digests travel unencrypted"),
                        Some("use https:// unless the receiver is on a network you trust"),
                    ));
                }
                Some(parsed)
            }
            Ok(_) => {
                errs.at(
                    u.span(),
                    format!("digest `{id}`: the webhook url must be http:// or https://"),
                    Some("write the full URL, e.g. \"https://ntfy.sh/my-topic\"".into()),
                );
                None
            }
            Err(e) => {
                errs.at(
                    u.span(),
                    format!("digest `{id}`: the webhook url is not a valid URL: {e}"),
                    Some("write the full URL, e.g. \"https://ntfy.sh/my-topic\"".into()),
                );
                None
            }
        },
    };
    let format = match &d.format {
        Some(f) => Some(*f.get_ref()),
        None => {
            errs.at(
                d.id.span(),
                format!("digest `{id}` has via = \"webhook\" but no format"),
                Some(
                    "add format = \"slack\", \"teams\", \"mattermost\", \"ntfy\" or \"json\""
                        .into(),
                ),
            );
            None
        }
    };
    if let Err((key, hint)) = secret.validate("secret") {
        errs.at(
            d.id.span(),
            format!("digest `{id}`: the signing secret's {key} is not usable"),
            Some(hint),
        );
    }
    let timeout = d.timeout.unwrap_or(crate::webhook::DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > MAX_NETWORK_WAIT {
        errs.at(
            d.id.span(),
            format!(
                "digest `{id}`: timeout must be above zero and at most {}",
                humantime::format_duration(MAX_NETWORK_WAIT)
            ),
            Some("write e.g. timeout = \"10s\"".into()),
        );
    }
    Some(crate::webhook::Target {
        url: url?,
        format: format?,
        timeout,
        secret,
    })
}

/// Collects semantic errors, each rendered at its span.
struct Errors<'a> {
    origin: &'a str,
    src: &'a str,
    list: Vec<String>,
}

impl Errors<'_> {
    fn at(&mut self, span: Range<usize>, msg: String, hint: Option<String>) {
        self.list.push(render_at(
            self.origin,
            self.src,
            span.start,
            "error",
            &msg,
            hint.as_deref(),
        ));
    }
}

/// A hint for the common TOML mistakes, in words a user can act on.
fn toml_hint(msg: &str) -> Option<String> {
    if msg.contains("unknown field") {
        Some("check the spelling; the expected keys are listed above".into())
    } else if msg.contains("invalid value") && msg.contains("duration") || msg.contains("time unit")
    {
        Some("write a duration such as \"30m\", \"2h\" or \"1day\"".into())
    } else if msg.contains("missing field") {
        Some("add the missing key to this table".into())
    } else if msg.contains("unknown variant") {
        Some("use one of the values listed above".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATCH: &str = "[[watches]]\nid = \"w\"\nquery = \"nvidia\"\n";

    fn errors(src: &str) -> Vec<String> {
        match load_str("t.toml", src) {
            Ok(_) => panic!("config should have been refused:\n{src}"),
            Err(e) => e.0,
        }
    }

    /// Each bad config is refused with an error at `line:col` that contains `needle`.
    #[test]
    fn bad_configs_point_at_the_line_and_say_what_to_write() {
        let cases: &[(&str, &str, &str)] = &[
            ("[daemon]\npoll_intervall = \"30m\"\n", "t.toml:2:1:", "unknown field `poll_intervall`"),
            ("[daemon]\npoll_interval = \"soon\"\n", "t.toml:2:", "poll_interval"),
            ("[[feeds]]\nurl = \"ftp://x/f\"\n", "t.toml:2:7:", "write an http://, https:// or file:// URL"),
            ("[[feeds]]\nurl = \"nope\"\n", "t.toml:2:7:", "not a valid URL"),
            (
                "[[feeds]]\nurl = \"https://a.test/f\"\n[[feeds]]\nurl = \"https://a.test/f\"\n",
                "t.toml:4:7:",
                "listed twice",
            ),
            ("[[watches]]\nid = \"w\"\nquery = \"(nvidia\"\n", "t.toml:3:", "watch `w`"),
            (
                "[[watches]]\nid = \"bad id!\"\nquery = \"nvidia\"\n",
                "t.toml:3:9:",
                "letters, digits",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"daily 25:00\"\nvia = \"log\"\n",
                "t.toml:3:12:",
                "HH:MM",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\ntimezone = \"Mars/Base\"\nvia = \"log\"\n",
                "t.toml:4:12:",
                "IANA",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nwatches = [\"nope\"]\nvia = \"log\"\n",
                "t.toml:4:12:",
                "there is no watch `nope`",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nwatches = [\"tag:zzz\"]\nvia = \"log\"\n",
                "t.toml:4:12:",
                "no watch has the tag `zzz`",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"pigeon\"\n",
                "t.toml:4:7:",
                "unknown variant `pigeon`",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"log\"\ndetail = \"verbose\"\n",
                "t.toml:5:10:",
                "write detail = \"reader\"",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"log\"\ncontact = \"a\\nBcc: b\"\n",
                "t.toml:5:11:",
                "contact must be one line",
            ),
            (
                "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"log\"\nhealth = \"yes\"\n",
                "t.toml:5:10:",
                "health",
            ),
        ];
        assert_errors_at(cases, false);
    }

    /// Each `(body, at, needle)`: `WATCH` + body is refused with an error at `at` (a position
    /// in `body`; the 3 lines of `WATCH` are added here) that contains `needle` (and a hint).
    fn assert_errors_at(cases: &[(&str, &str, &str)], with_hint: bool) {
        for (body, at, needle) in cases {
            let src = format!("{WATCH}{body}");
            let errs = errors(&src);
            let (file, rest) = at.split_once(':').unwrap();
            let (line, col) = rest.split_once(':').unwrap();
            let line: usize = line.parse::<usize>().unwrap() + 3;
            let want = format!("{file}:{line}:{col}");
            assert!(
                errs.iter().any(|e| e.starts_with(&want)
                    && e.contains(needle)
                    && (!with_hint || e.contains("hint:"))),
                "for\n{src}\nwanted an error at {want} containing {needle:?}, got:\n{}",
                errs.join("\n---\n")
            );
        }
    }

    /// Issue 17: values `run` refused (exit 1, a restart loop), clamped or panicked on
    /// (exit 101) passed `check`. Each is now refused at its value, with a hint.
    #[test]
    fn values_the_daemon_cannot_run_are_refused_at_their_position() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[http]\nper_host_concurrency = 0\n",
                "t.toml:2:24:",
                "per_host_concurrency = 0 is outside 1..=1024",
            ),
            (
                "[http]\nmax_concurrent = 0\n",
                "t.toml:2:18:",
                "outside 1..=1024",
            ),
            (
                "[daemon]\nmax_concurrent_fetches = 0\n",
                "t.toml:2:26:",
                "max_concurrent_fetches = 0",
            ),
            (
                "[daemon]\nmax_concurrent_fetches = 100000\n",
                "t.toml:2:26:",
                "write a whole number from 1 to 1024",
            ),
            (
                "[http]\nmax_body_bytes = 0\n",
                "t.toml:2:18:",
                "max_body_bytes = 0",
            ),
            (
                "[http]\nuser_agent = \"pw\\nX-Evil: 1\"\n",
                "t.toml:2:14:",
                "one line of printable text",
            ),
            (
                "[daemon]\npoll_interval = \"1000000d\"\n",
                "t.toml:2:17:",
                "longer than the most it may be (365days)",
            ),
            (
                "[daemon]\nbackfill = \"100000years\"\n",
                "t.toml:2:12:",
                "daemon.backfill",
            ),
            (
                "[daemon]\ncluster_window = \"10000d\"\n",
                "t.toml:2:18:",
                "daemon.cluster_window",
            ),
            (
                "[daemon]\nalert_min_gap = \"1000y\"\n",
                "t.toml:2:17:",
                "daemon.alert_min_gap",
            ),
            (
                "[http]\ntotal_timeout = \"1000000d\"\n",
                "t.toml:2:17:",
                "write at most \"1h\"",
            ),
            (
                "[http]\nper_host_gap = \"100y\"\n",
                "t.toml:2:16:",
                "http.per_host_gap",
            ),
            (
                "[http]\nconnect_timeout = \"0s\"\n",
                "t.toml:2:19:",
                "must be longer than zero",
            ),
            (
                "[retention]\nforget = \"1000000y\"\n",
                "t.toml:2:10:",
                "retention.forget",
            ),
            (
                "[[feeds]]\nurl = \"https://a.test/f\"\ninterval = \"5000d\"\n",
                "t.toml:3:12:",
                "feed interval",
            ),
        ];
        assert_errors_at(cases, true);
    }

    #[test]
    fn rule_errors_without_a_span_point_at_their_key() {
        let src = "[[watches]]\nid = \"w\"\nquery = \"nvidia\"\nmin_score = -1.0\n";
        let errs = errors(src);
        assert!(
            errs[0].starts_with("t.toml:4:13: error: watch `w`: min_score -1"),
            "{errs:?}"
        );
    }

    #[test]
    fn an_empty_or_half_written_config_is_refused() {
        for src in ["", "\n# nothing yet\n", "[daemon]\n"] {
            let errs = errors(src);
            assert!(
                errs[0].starts_with("t.toml:1:1: error: no feeds, watches or digests"),
                "{errs:?}"
            );
        }
        // Parses and compiles, but the daemon would do nothing: refused by `runnable`, which
        // `check`, start-up and reload ask; `classify` needs only the watches.
        let l = load_str("t.toml", "[[feeds]]\nurl = \"https://a.test/f\"\n").unwrap();
        let e = l.runnable().unwrap_err().0.join("\n");
        assert!(
            e.starts_with("t.toml:1:1: error: no [[watches]], no [[digests]]"),
            "{e}"
        );
        let shipped = load_str(EMBEDDED_NAME, EMBEDDED_DEFAULT).unwrap();
        assert!(shipped.runnable().is_ok());
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, b"[daemon]\npoll_interval = \"30\xffm\"\n").unwrap();
        let e = load(&p).unwrap_err().0.join("\n");
        let want = format!(
            "{}:2:20: error: the file is not valid UTF-8 here",
            p.display()
        );
        assert!(e.starts_with(&want), "{e}");
        assert!(e.contains("hint: save the file as UTF-8"), "{e}");
    }

    #[test]
    fn webhook_digests_are_checked_where_the_mistake_is() {
        let d = "[[digests]]\nid = \"chat\"\nschedule = \"hourly\"\n";
        let cases: &[(&str, &str, &str)] = &[
            ("via = \"webhook\"\nformat = \"slack\"\n", "t.toml:5:6:", "no url"),
            ("via = \"webhook\"\nurl = \"https://h.test/x\"\n", "t.toml:5:6:", "no format"),
            (
                "via = \"webhook\"\nformat = \"slack\"\nurl = \"ftp://h.test/x\"\n",
                "t.toml:9:7:",
                "must be http:// or https://",
            ),
            (
                "via = \"webhook\"\nformat = \"pigeon\"\nurl = \"https://h.test/x\"\n",
                "t.toml:8:10:",
                "unknown variant `pigeon`",
            ),
            ("via = \"log\"\nurl = \"https://h.test/x\"\n", "t.toml:8:7:", "only a webhook uses"),
            (
                "via = \"webhook\"\nformat = \"json\"\nurl = \"https://h.test/x\"\nsecret_env = \"A\"\nsecret_file = \"/k\"\n",
                "t.toml:5:6:",
                "set only one of secret_file",
            ),
            ("via = \"log\"\natom_entries = 0\natom = true\n", "t.toml:8:16:", "between 1 and"),
            ("via = \"log\"\natom_entries = 20\n", "t.toml:8:16:", "not atom = true"),
        ];
        for (body, at, needle) in cases {
            let src = format!("{WATCH}{d}{body}");
            let errs = errors(&src);
            assert!(
                errs.iter().any(|e| e.starts_with(at) && e.contains(needle)),
                "for\n{src}\nwanted an error at {at} containing {needle:?}, got:\n{}",
                errs.join("\n---\n")
            );
        }
        let ok = format!(
            "{WATCH}{d}via = \"webhook\"\nformat = \"ntfy\"\nurl = \"http://ntfy.example.org/t\"\natom = true\n"
        );
        let l = load_str("t.toml", &ok).expect("loads");
        let t = l.digests[0].webhook.as_ref().expect("target");
        assert_eq!(t.format, crate::webhook::Format::Ntfy);
        assert_eq!(
            l.digests[0].atom_entries,
            Some(crate::atom::DEFAULT_ENTRIES)
        );
        assert!(
            l.warnings.iter().any(|w| w.contains("plain http")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let src = format!(
            "{WATCH}[[feeds]]\nurl = \"ftp://a\"\n[[digests]]\nid = \"d\"\nschedule = \"never\"\ntimezone = \"X/Y\"\nvia = \"log\"\n"
        );
        let errs = errors(&src);
        assert_eq!(errs.len(), 3, "{}", errs.join("\n"));
        // Each rendered error shows the source line and a caret.
        assert!(errs[0].contains("url = \"ftp://a\"") && errs[0].contains('^'));
    }

    #[test]
    fn a_config_defines_its_sets_and_is_told_about_bad_and_unused_ones() {
        let src = "[sets.curbs]\nlabel = \"Curbs\"\nen = [\"curb*\", \"ban\"]\n\n\
                   [sets.spare]\nen = [\"gallium\"]\n\n\
                   [[watches]]\nid = \"w\"\nquery = 'title:@curbs AND chips'\n";
        let l = load_str("t.toml", src).unwrap();
        assert_eq!(l.warnings.len(), 1, "{:#?}", l.warnings);
        assert!(
            l.warnings[0].starts_with("t.toml:5:7: warning: set `spare` is not used by any watch"),
            "{}",
            l.warnings[0]
        );
        let it = crate::item::Item {
            title: "New curbs on chips".into(),
            ..Default::default()
        };
        let v = l.classifier.classify(&it);
        assert_eq!(v[0].evidence[0].concept.as_deref(), Some("Curbs"));
        // A bad term and an unknown set in one config: both reported, each at its place.
        let bad = "[sets.curbs]\nen = [\"curb OR ban\"]\n\n\
                   [[watches]]\nid = \"w\"\nquery = '@curb AND chips'\n";
        let errs = errors(bad);
        assert!(
            errs[0].starts_with("t.toml:2:8: error: set `curbs`: operator `OR`"),
            "{}",
            errs[0]
        );
        // (the sets did not compile, so the rules were not compiled against them)
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let unknown = "[sets.curbs]\nen = [\"curb*\"]\n\n[[watches]]\nid = \"w\"\nquery = '@curb AND chips'\n";
        let errs = errors(unknown);
        assert!(
            errs[0].starts_with(
                "t.toml:6:10: error: watch `w`: unknown set `@curb`; did you mean `@curbs`?"
            ),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn the_shipped_config_compiles_and_embeds() {
        let l = load_str(EMBEDDED_NAME, EMBEDDED_DEFAULT).unwrap();
        let ids: Vec<_> = l.config.watches.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["export-controls", "ai-chips"]);
        assert!(!l.feeds.is_empty());
        assert_eq!(l.digests[0].watches, ["export-controls", "ai-chips"]);
        let on_disk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/policywatch.toml"
        ))
        .unwrap();
        assert_eq!(on_disk, EMBEDDED_DEFAULT);
    }

    #[test]
    fn defaults_tags_and_intervals_resolve() {
        let src = "[daemon]\npoll_interval = \"1h\"\nmin_interval = \"10m\"\n\
            [[feeds]]\nurl = \"https://a.test/f\"\n\
            [[feeds]]\nurl = \"https://b.test/f\"\nname = \"B\"\ninterval = \"1m\"\n\
            [[watches]]\nid = \"a\"\nquery = \"nvidia\"\ntags = [\"chips\"]\nalert = \"immediate\"\n\
            [[watches]]\nid = \"b\"\nquery = \"gallium\"\n\
            [[digests]]\nid = \"d\"\nschedule = \"hourly\"\nwatches = [\"tag:chips\", \"b\", \"a\"]\nvia = \"log\"\n\
            [[digests]]\nid = \"all\"\nschedule = \"daily 07:30\"\ntimezone = \"Europe/Berlin\"\nvia = \"log\"\n";
        let l = load_str("t.toml", src).unwrap();
        assert_eq!(l.feeds[0].name, "a.test");
        assert_eq!(l.feeds[0].interval, Duration::from_secs(3600));
        assert_eq!(
            l.feeds[1].interval,
            Duration::from_secs(600),
            "min_interval is a floor"
        );
        assert_eq!(l.digests[0].watches, ["a", "b"], "deduplicated, in order");
        assert_eq!(l.digests[0].immediate, ["a"]);
        assert_eq!(l.digests[1].watches, ["a", "b"], "empty means all");
        assert_eq!(l.digests[1].timezone, chrono_tz::Europe::Berlin);
    }

    #[test]
    fn digest_reader_settings_and_their_defaults() {
        let src = format!(
            "{WATCH}[[digests]]\nid = \"readers\"\nschedule = \"hourly\"\nvia = \"log\"\n\
             contact = \"Trade desk <desk@example.org>\"\n\
             [[digests]]\nid = \"ops\"\nschedule = \"hourly\"\nvia = \"log\"\noperator = true\n\
             detail = \"analyst\"\n\
             [[digests]]\nid = \"quiet-ops\"\nschedule = \"hourly\"\nvia = \"log\"\n\
             operator = true\nhealth = false\n"
        );
        let l = load_str("t.toml", &src).unwrap();
        let d: Vec<_> = l
            .digests
            .iter()
            .map(|d| (d.id.as_str(), d.health, d.detail, d.contact.as_deref()))
            .collect();
        use crate::digest::Detail;
        assert_eq!(
            d,
            vec![
                (
                    "readers",
                    false,
                    Detail::Reader,
                    Some("Trade desk <desk@example.org>")
                ),
                ("ops", true, Detail::Analyst, None),
                ("quiet-ops", false, Detail::Reader, None),
            ]
        );
    }

    #[test]
    fn render_at_handles_multibyte_and_edges() {
        let src = "a = 1\nname = \"昇腾\" x\n";
        let off = src.find('x').unwrap();
        let r = render_at("f", src, off, "error", "bad", Some("fix"));
        assert!(r.starts_with("f:2:13: error: bad"), "{r}");
        assert!(r.contains("= hint: fix"));
        // Offsets past the end or inside a character never panic.
        render_at("f", src, src.len() + 10, "error", "m", None);
        render_at("f", src, src.find('昇').unwrap() + 1, "error", "m", None);
        render_at("f", "", 0, "error", "m", None);
    }
}
