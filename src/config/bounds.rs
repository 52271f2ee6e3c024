//! Bounds on every number and duration of the config: what `check`, start-up and reload refuse
//! so that `run` never refuses, clamps or panics on a value `check` passed.
//!
//! In: the deserialised [`Config`] and the file's text. Out: errors at the value's line and
//! column, each with a hint. Each bound is a row of a table (section, key, limits, why), so a
//! new section adds rows rather than code.
//!
//! Why maxima: a duration goes into timestamp arithmetic (`now + interval`, `now - backfill`,
//! `Instant + timeout`), and chrono and std panic on overflow — a `poll_interval` of a million
//! years used to end the daemon with exit 101, an absurd `total_timeout` a poll task (that feed
//! silently never polled again). Every maximum here is far beyond any sensible use and far
//! below any overflow, so arithmetic on a configured duration cannot fail.

use std::ops::Range;
use std::time::Duration;

use super::{Config, Errors};

const DAY: u64 = 86_400;

/// Poll intervals, alert gaps, the cluster window: a year.
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * DAY);
/// How far back stored things reach (`backfill`, `[retention]`): a century.
pub const MAX_HISTORY: Duration = Duration::from_secs(36_500 * DAY);
/// Network timeouts and the per-host gap: an hour.
pub const MAX_NETWORK_WAIT: Duration = Duration::from_secs(3600);
/// Requests in flight, in total and per host.
pub const MAX_FETCHES: usize = crate::fetch::MAX_CONCURRENCY;
/// The largest body a feed may send, after decompression: 1 GiB.
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// Redirect hops followed for one fetch.
pub const MAX_REDIRECTS: usize = 20;

/// One duration key: where it is, how to read it, its limits.
struct DurationKey {
    path: &'static [&'static str],
    get: fn(&Config) -> Duration,
    /// Zero allowed? (A zero timeout fails every fetch; a zero gap is fine.)
    zero_ok: bool,
    max: Duration,
}

const DURATIONS: &[DurationKey] = &[
    DurationKey {
        path: &["daemon", "poll_interval"],
        get: |c| c.daemon.poll_interval,
        zero_ok: false,
        max: MAX_INTERVAL,
    },
    DurationKey {
        path: &["daemon", "min_interval"],
        get: |c| c.daemon.min_interval,
        zero_ok: true,
        max: MAX_INTERVAL,
    },
    DurationKey {
        path: &["daemon", "backfill"],
        get: |c| c.daemon.backfill,
        zero_ok: true,
        max: MAX_HISTORY,
    },
    DurationKey {
        path: &["daemon", "alert_min_gap"],
        get: |c| c.daemon.alert_min_gap,
        zero_ok: true,
        max: MAX_INTERVAL,
    },
    DurationKey {
        path: &["daemon", "cluster_window"],
        get: |c| c.daemon.cluster_window,
        zero_ok: true,
        max: MAX_INTERVAL,
    },
    DurationKey {
        path: &["http", "connect_timeout"],
        get: |c| c.http.connect_timeout,
        zero_ok: false,
        max: MAX_NETWORK_WAIT,
    },
    DurationKey {
        path: &["http", "first_byte_timeout"],
        get: |c| c.http.first_byte_timeout,
        zero_ok: false,
        max: MAX_NETWORK_WAIT,
    },
    DurationKey {
        path: &["http", "total_timeout"],
        get: |c| c.http.total_timeout,
        zero_ok: false,
        max: MAX_NETWORK_WAIT,
    },
    DurationKey {
        path: &["http", "per_host_gap"],
        get: |c| c.http.per_host_gap,
        zero_ok: true,
        max: MAX_NETWORK_WAIT,
    },
    DurationKey {
        path: &["smtp", "timeout"],
        // Without [smtp] the key is not there; a stand-in inside the bounds.
        get: |c| {
            c.smtp
                .as_ref()
                .map_or(Duration::from_secs(1), |s| s.get_ref().timeout)
        },
        zero_ok: false,
        max: MAX_NETWORK_WAIT,
    },
    DurationKey {
        path: &["retention", "items"],
        get: |c| c.retention.items,
        zero_ok: true,
        max: MAX_HISTORY,
    },
    DurationKey {
        path: &["retention", "delivered"],
        get: |c| c.retention.delivered,
        zero_ok: true,
        max: MAX_HISTORY,
    },
    DurationKey {
        path: &["retention", "forget"],
        get: |c| c.retention.forget,
        zero_ok: true,
        max: MAX_HISTORY,
    },
];

/// One count key and its inclusive range.
struct CountKey {
    path: &'static [&'static str],
    get: fn(&Config) -> u64,
    range: (u64, u64),
}

const COUNTS: &[CountKey] = &[
    CountKey {
        path: &["daemon", "max_concurrent_fetches"],
        get: |c| c.daemon.max_concurrent_fetches as u64,
        range: (1, MAX_FETCHES as u64),
    },
    CountKey {
        path: &["http", "max_concurrent"],
        get: |c| c.http.max_concurrent as u64,
        range: (1, MAX_FETCHES as u64),
    },
    CountKey {
        path: &["http", "per_host_concurrency"],
        get: |c| c.http.per_host_concurrency as u64,
        range: (1, MAX_FETCHES as u64),
    },
    CountKey {
        path: &["http", "max_body_bytes"],
        get: |c| c.http.max_body_bytes,
        range: (1, MAX_BODY_BYTES),
    },
    CountKey {
        path: &["http", "max_redirects"],
        get: |c| c.http.max_redirects as u64,
        range: (0, MAX_REDIRECTS as u64),
    },
];

/// A duration as a user would write it: "365days", "1h", "90s" (humantime's own rendering of
/// a year is "11months 30days 3h 50m 24s").
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => humantime::format_duration(d).to_string(),
        _ if d.subsec_nanos() != 0 => humantime::format_duration(d).to_string(),
        _ if s % DAY == 0 => format!("{}days", s / DAY),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Checks every bound; each violation is reported at its value.
pub(super) fn check(config: &Config, at: &Locator<'_>, errs: &mut Errors<'_>) {
    for k in DURATIONS {
        let d = (k.get)(config);
        let name = k.path.join(".");
        if d > k.max {
            errs.at(
                at.value(k.path),
                format!(
                    "{name} = {} is longer than the most it may be ({})",
                    human(d),
                    human(k.max)
                ),
                Some(format!("write at most \"{}\"", human(k.max))),
            );
        } else if d.is_zero() && !k.zero_ok {
            errs.at(
                at.value(k.path),
                format!("{name} must be longer than zero"),
                Some("write a duration such as \"30s\" or \"30m\"".into()),
            );
        }
    }
    for k in COUNTS {
        let n = (k.get)(config);
        let (lo, hi) = k.range;
        if !(lo..=hi).contains(&n) {
            errs.at(
                at.value(k.path),
                format!("{} = {n} is outside {lo}..={hi}", k.path.join(".")),
                Some(format!("write a whole number from {lo} to {hi}")),
            );
        }
    }
    for (i, f) in config.feeds.iter().enumerate() {
        if let Some(d) = f.interval {
            if d > MAX_INTERVAL || d.is_zero() {
                errs.at(
                    at.feed(i, "interval"),
                    format!(
                        "feed interval {} is outside 1s..={}",
                        human(d),
                        human(MAX_INTERVAL)
                    ),
                    Some("write a duration such as \"15m\" or \"1h\"".into()),
                );
            }
        }
    }
    if let Some(ua) = &config.http.user_agent {
        if reqwest::header::HeaderValue::from_str(ua).is_err() || ua.chars().any(char::is_control) {
            errs.at(
                at.value(&["http", "user_agent"]),
                "http.user_agent must be one line of printable text".into(),
                Some("write e.g. \"policywatch/1.0 (+mailto:ops@example.org)\"".into()),
            );
        }
    }
}

/// Finds the position of a key's value in the file (the config structs keep spans only
/// where other errors need them; this covers the rest). Falls back to the start of the key's
/// table, then the start of the file: a position is always given. The file is parsed again
/// (with spans) only when a position is first asked for, i.e. only for a config with errors:
/// a second parse of a 10,000-feed config was a quarter of its load time.
pub(super) struct Locator<'a> {
    src: &'a str,
    parsed: std::cell::OnceCell<Option<toml_edit::ImDocument<&'a str>>>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Locator {
            src,
            parsed: std::cell::OnceCell::new(),
        }
    }

    fn doc(&self) -> Option<&toml_edit::ImDocument<&'a str>> {
        self.parsed
            .get_or_init(|| toml_edit::ImDocument::parse(self.src).ok())
            .as_ref()
    }

    /// The span of `path` (table keys), or of the longest prefix of it that exists.
    pub(super) fn value(&self, path: &[&str]) -> Range<usize> {
        let Some(doc) = self.doc() else { return 0..0 };
        let mut best = 0..0;
        let mut table: Option<&dyn toml_edit::TableLike> = Some(doc.as_table());
        for key in path {
            let Some(item) = table.and_then(|t| t.get(key)) else {
                break;
            };
            if let Some(s) = item.span() {
                best = s;
            } else if let Some(s) = table.and_then(|t| t.key(key)).and_then(|k| k.span()) {
                best = s;
            }
            table = item.as_table_like();
        }
        best
    }

    /// The span of `key` in the `index`th `[[feeds]]` table.
    pub(super) fn feed(&self, index: usize, key: &str) -> Range<usize> {
        let Some(doc) = self.doc() else { return 0..0 };
        let feed = doc
            .get("feeds")
            .and_then(|f| f.as_array_of_tables())
            .and_then(|a| a.get(index));
        feed.and_then(|t| t.get(key).and_then(|v| v.span()).or_else(|| t.span()))
            .unwrap_or_else(|| self.value(&["feeds"]))
    }

    /// The span of `key` in the `[[watches]]` table whose `id` is `id`.
    pub(super) fn watch(&self, id: &str, key: &str) -> Option<Range<usize>> {
        let doc = self.doc()?;
        let w = doc
            .get("watches")?
            .as_array_of_tables()?
            .iter()
            .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))?;
        w.get(key).and_then(|v| v.span()).or_else(|| w.span())
    }
}
