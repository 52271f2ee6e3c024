//! The daemon: one event loop that polls due feeds, runs each new story through
//! classify → store, and hands digests to `notify`. Also what `run --once` runs.
//!
//! In: a compiled config, a state directory, [`Control`] events (reload, shutdown) from the
//! binary's signal handlers. Out: store writes, notifications, service-manager messages
//! (`service`), counters for the optional metrics listener (`metrics`).
//!
//! # Shape
//! Fetching and parsing run in spawned tasks (bounded by the [`Fetcher`]'s global and per-host
//! limits); everything that touches the store runs here, in the loop's own task, one result at
//! a time. So a store transaction is never interrupted by a signal: the loop only looks at
//! [`Control`] between results, and shutdown drops in-flight *fetches* (whose items were not
//! stored and will be fetched again), never half a write.
//!
//! The loop is `select!{ biased; control, finished poll, timer }`: control first so a stop
//! request is never starved by a busy poll cycle. The watchdog is fed from this loop, so a
//! stuck loop is restarted by systemd.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::canon;
use crate::cluster::{self, ClusterIndex, Signature};
use crate::config::{self, Feed, Loaded};
use crate::feed::{self, FeedError};
use crate::fetch::{FetchOutcome, FetchRequest, Fetcher};
use crate::item::Item;
use crate::logging::untrusted;
use crate::metrics::{self, Metrics};
use crate::notify::{self, Notifier};
use crate::retry::{self, PollHints};
use crate::service::Service;
use crate::store::{FeedState, NewItem, PollSuccess, Store};

/// The longest the loop sleeps without looking at the clock (and refreshing `STATUS=`).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Events from outside the loop. A closed set: the binary maps signals onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGHUP: re-read the config; keep the old one if the new one does not compile.
    Reload,
    /// SIGTERM / SIGINT: stop taking work, finish the current write, exit.
    Shutdown,
}

/// Where the config comes from, so a reload can read it again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Loaded, config::ConfigErrors> {
        match self {
            ConfigSource::File(p) => config::load(p),
            ConfigSource::Embedded => {
                config::load_str(config::EMBEDDED_NAME, config::EMBEDDED_DEFAULT)
            }
        }
    }

    /// [`ConfigSource::load`], refusing also what the daemon cannot run ([`Loaded::runnable`]):
    /// what `check`, start-up and reload use, so the three agree.
    pub fn load_runnable(&self) -> Result<Loaded, config::ConfigErrors> {
        let loaded = self.load()?;
        loaded.runnable()?;
        Ok(loaded)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    /// Poll once, deliver every digest now, exit.
    pub once: bool,
    /// With `once`: poll every feed, not only the due ones (Retry-After still honoured).
    pub all: bool,
}

/// What `run` did, for `--once` output and tests.
#[derive(Debug, Default)]
pub struct Summary {
    pub polls: usize,
    pub failures: usize,
    pub new_items: usize,
    pub new_matches: usize,
    /// The text of every digest delivered during the run.
    pub digests: Vec<String>,
}

/// The outcome of one feed's fetch-and-parse, carried from its task to the loop.
enum PollResult {
    Items {
        items: Vec<Item>,
        /// What parsing recovered with a loss (see `feed::ParseWarning`).
        warnings: Vec<feed::ParseWarning>,
        ttl: Option<Duration>,
        etag: Option<String>,
        last_modified: Option<String>,
        cache: Option<Duration>,
        moved_to: Option<String>,
    },
    NotModified {
        cache: Option<Duration>,
        moved_to: Option<String>,
    },
    Gone,
    Failed {
        error: String,
        retry_after: Option<DateTime<Utc>>,
    },
}

struct Daemon {
    source: ConfigSource,
    cfg: Arc<Loaded>,
    store: Store,
    fetcher: Fetcher,
    notifier: Notifier,
    service: Service,
    /// Feed URLs with a poll in flight: never two polls of one feed at once.
    inflight_urls: HashSet<String>,
    /// Due feeds not yet spawned. Polls are spawned a few at a time (twice the fetch
    /// concurrency), not all at once: 10,000 parked poll futures cost tens of MiB while the
    /// fetcher's limits would let only a handful run anyway.
    queue: VecDeque<(Feed, FeedState)>,
    summary: Summary,
    last_poll_at: Option<DateTime<Utc>>,
    /// Set when the last reload failed, so `STATUS=` says the old config is running.
    reload_error: Option<String>,
    /// Counters for the optional `/metrics` listener (updated whether or not it runs).
    metrics: Arc<Metrics>,
    /// The listener, when `[daemon] listen` is set; dropped (stopped) with the daemon.
    _metrics_server: Option<metrics::Server>,
    /// The last `STATUS=` sent, so an unchanged line is not re-sent on every loop turn.
    last_status: String,
    /// Recent items by story, so the same story from another feed (or re-issued) joins its
    /// cluster. Rebuilt from the store at start; only this loop task touches it.
    clusters: ClusterIndex,
    /// When retention last ran; it runs at start and then daily.
    last_prune: Option<DateTime<Utc>>,
}

/// While poll results stream in, the schedule is scanned (and digests, alerts and STATUS=
/// refreshed) at most this often.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// How often retention runs.
const PRUNE_EVERY: chrono::Duration = chrono::Duration::hours(24);

/// How far back, before the cluster window, stored signatures warm the index's word
/// statistics (which words are common) at start-up.
const CLUSTER_WARMUP: chrono::Duration = chrono::Duration::days(30);

/// Rebuilds the cluster index: items first seen within its window are restored with their
/// stored clusters; older ones (up to [`CLUSTER_WARMUP`] before) only teach it word statistics.
fn rebuild_clusters(
    store: &Store,
    window: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<ClusterIndex> {
    let window = chrono::Duration::from_std(window).unwrap_or_default();
    let mut index = ClusterIndex::new(window);
    let start = now - window;
    for row in store.cluster_rows(start - CLUSTER_WARMUP)? {
        let Ok(sig) = Signature::from_bytes(&row.signature) else {
            continue; // an older signature version: it only misses warming up
        };
        if row.first_seen_at < start {
            index.observe(&sig);
        } else {
            index.restore(
                row.id,
                row.feed_id,
                row.cluster_id,
                row.canonical_url.as_deref(),
                &sig,
                row.first_seen_at,
            );
        }
    }
    Ok(index)
}

/// The longest a healthy daemon goes without finishing a poll: twice the longest feed
/// interval plus one fetch's time limit, and never less than 15 minutes. `None` (no bound)
/// without feeds.
fn stale_after(cfg: &Loaded) -> Option<Duration> {
    let longest = cfg.feeds.iter().map(|f| f.interval).max()?;
    Some((longest * 2 + cfg.config.http.total_timeout).max(Duration::from_secs(15 * 60)))
}

/// Opens the state, then runs until shutdown (or, with `once`, until one cycle is done).
pub async fn run(
    source: ConfigSource,
    cfg: Loaded,
    opts: Options,
    mut control: mpsc::Receiver<Control>,
) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create state directory {}", opts.state_dir.display()))?;
    let db = crate::store::db_path(&opts.state_dir);
    let mut store =
        Store::open(&db).with_context(|| format!("cannot open database {}", db.display()))?;
    let fetcher = Fetcher::new(&cfg.config.http).context("cannot set up the HTTP client")?;
    let notifier = Notifier::new(&cfg).context("cannot set up notifications")?;
    store.sync_feeds(cfg.feeds.iter().map(|f| (f.url.as_str(), f.name.as_str())))?;
    notifier.register(&mut store, &cfg, Utc::now())?;
    let metrics = Metrics::new();
    metrics.set_started(Utc::now().timestamp());
    metrics.set_stale_after(stale_after(&cfg).unwrap_or(Duration::ZERO));
    let metrics_server = match cfg.config.daemon.listen_addr() {
        Some(addr) if !opts.once => {
            let srv = metrics::Server::start(addr, metrics.clone()).await?;
            tracing::info!("metrics listening on http://{}/metrics", srv.local_addr());
            Some(srv)
        }
        _ => None,
    };

    let mut d = Daemon {
        source,
        cfg: Arc::new(cfg),
        store,
        fetcher,
        notifier,
        service: Service::from_env(),
        inflight_urls: HashSet::new(),
        queue: VecDeque::new(),
        summary: Summary::default(),
        last_poll_at: None,
        reload_error: None,
        metrics,
        _metrics_server: metrics_server,
        last_status: String::new(),
        clusters: ClusterIndex::new(chrono::Duration::zero()),
        last_prune: None,
    };
    d.clusters = rebuild_clusters(&d.store, d.cfg.config.daemon.cluster_window, Utc::now())?;
    // Only now — config compiled, database open and migrated, listener bound — is the
    // service ready.
    let states = d.store.feeds()?;
    let status = d.status_line(&states);
    d.metrics.set_ready(true);
    d.service.ready(&status);
    d.last_status = status;
    tracing::info!(feeds = d.cfg.feeds.len(), watches = d.cfg.config.watches.len(),
        digests = d.cfg.digests.len(), db = %db.display(), "policywatch started");
    let result = d.event_loop(&opts, &mut control).await;
    d.metrics.set_ready(false);
    d.service.stopping();
    result?;
    Ok(d.summary)
}

impl Daemon {
    async fn event_loop(
        &mut self,
        opts: &Options,
        control: &mut mpsc::Receiver<Control>,
    ) -> anyhow::Result<()> {
        let mut tasks: JoinSet<(String, PollResult, Duration)> = JoinSet::new();
        let mut started_once = false;
        let watchdog_every = self
            .service
            .watchdog_every()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        // Scanning the schedule, firing digests and refreshing STATUS= read every feed's row:
        // O(feeds). They run when the loop is idle or at most every SCAN_EVERY while results
        // stream in, never once per result (quadratic with thousands of feeds).
        let mut next_scan = tokio::time::Instant::now();
        loop {
            let now = Utc::now();
            if opts.once {
                if !started_once {
                    let states = self.store.feeds()?;
                    self.start_due_polls(&mut tasks, &states, now, opts.all);
                    started_once = true;
                }
                if tasks.is_empty() && self.queue.is_empty() {
                    let report = self
                        .notifier
                        .flush(&mut self.store, &self.cfg, Utc::now())
                        .await?;
                    self.absorb(report);
                    return Ok(());
                }
            } else if tokio::time::Instant::now() >= next_scan {
                if self.last_prune.map_or(true, |t| now - t >= PRUNE_EVERY) {
                    self.prune(now);
                }
                // One read of every feed's row serves the whole scan.
                let states = self.store.feeds()?;
                self.start_due_polls(&mut tasks, &states, now, false);
                let report = self
                    .notifier
                    .tick(&mut self.store, &self.cfg, Utc::now())
                    .await?;
                self.absorb(report);
                self.publish_status(&states);
                let now = Utc::now();
                let until_wake = (self.next_wake(&states, now)? - now)
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                next_scan = tokio::time::Instant::now()
                    + until_wake.clamp(SCAN_EVERY, watchdog_every.max(SCAN_EVERY));
            }
            let sleep_until = if opts.once {
                tokio::time::Instant::now() + watchdog_every
            } else {
                next_scan.min(tokio::time::Instant::now() + watchdog_every)
            };
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Reload) => {
                        self.reload();
                        next_scan = tokio::time::Instant::now();
                    }
                    Some(Control::Shutdown) | None => {
                        tracing::info!(in_flight = tasks.len(), "shutting down");
                        tasks.abort_all();
                        self.queue.clear();
                        return Ok(());
                    }
                },
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    match joined {
                        Ok((url, result, took)) => {
                            self.inflight_urls.remove(&url);
                            self.apply(&url, result, Utc::now())?;
                            self.metrics.poll_done(Utc::now().timestamp(), took);
                        }
                        Err(e) if e.is_panic() => {
                            // A panic in a parser is a bug, but one feed must not stop the rest.
                            // Its message may quote what the feed sent.
                            tracing::error!(error = %untrusted(&e.to_string()), "a poll task panicked");
                            // Which feed is unknown: forget what is running (it is re-polled
                            // when due) but keep the queued ones marked.
                            self.inflight_urls.clear();
                            let queued = self.queue.iter().map(|(f, _)| f.url.clone());
                            self.inflight_urls.extend(queued);
                        }
                        Err(_) => {}
                    }
                    self.spawn_queued(&mut tasks);
                    // The last result of a cycle: look at the schedule (and alerts) now.
                    if tasks.is_empty() {
                        next_scan = tokio::time::Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
            // Every turn of the loop ends here, and no turn waits longer than
            // `watchdog_every` (half of WATCHDOG_USEC): a loop stuck anywhere stops these.
            self.service.watchdog();
        }
    }

    /// Sends `STATUS=` when the line changed (it carries minutes, so at most about once a
    /// minute when idle).
    fn publish_status(&mut self, states: &[FeedState]) {
        let status = self.status_line(states);
        if status != self.last_status {
            self.service.status(&status);
            self.last_status = status;
        }
    }

    /// Retention, as configured. A failure is logged and retried at the next run: it must
    /// never stop polling.
    fn prune(&mut self, now: DateTime<Utc>) {
        self.last_prune = Some(now);
        let r = &self.cfg.config.retention;
        let ago =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        match self
            .store
            .prune(ago(r.items), ago(r.delivered), ago(r.forget))
        {
            Ok(p) => tracing::debug!(
                emptied = p.emptied,
                forgotten = p.forgotten,
                deliveries = p.deliveries,
                "retention ran"
            ),
            Err(e) => tracing::warn!(error = %e, "retention failed; will try again tomorrow"),
        }
    }

    fn absorb(&mut self, report: notify::Report) {
        self.metrics
            .deliveries(report.sent, report.retrying, report.failed);
        self.summary.digests.extend(report.texts);
    }

    /// The configured feeds that are due now: not gone, not in flight, past their next-poll
    /// time (unless `force`) and always past a server's Retry-After.
    fn due_feeds(
        &self,
        states: &[FeedState],
        now: DateTime<Utc>,
        force: bool,
    ) -> Vec<(Feed, FeedState)> {
        let mut due = Vec::new();
        for st in states {
            let Some(f) = self.cfg.feed(&st.url) else {
                continue; // no longer configured
            };
            if st.gone_at.is_some() || self.inflight_urls.contains(&f.url) {
                continue;
            }
            if st.retry_not_before.is_some_and(|t| t > now) {
                continue;
            }
            if force || st.next_poll_at <= now {
                due.push((f.clone(), st.clone()));
            }
        }
        due
    }

    fn start_due_polls(
        &mut self,
        tasks: &mut JoinSet<(String, PollResult, Duration)>,
        states: &[FeedState],
        now: DateTime<Utc>,
        force: bool,
    ) {
        for (feed, state) in self.due_feeds(states, now, force) {
            self.inflight_urls.insert(feed.url.clone());
            self.queue.push_back((feed, state));
        }
        self.spawn_queued(tasks);
    }

    /// Spawns queued polls while fewer than twice the fetch concurrency are running.
    fn spawn_queued(&mut self, tasks: &mut JoinSet<(String, PollResult, Duration)>) {
        let limit = self.cfg.config.daemon.max_concurrent_fetches.max(1) * 2;
        while tasks.len() < limit {
            let Some((feed, state)) = self.queue.pop_front() else {
                break;
            };
            let fetcher = self.fetcher.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let result = poll(&fetcher, &state).await;
                (feed.url, result, started.elapsed())
            });
        }
    }

    /// The next moment something is due: a feed's poll, a Retry-After ending, a digest.
    fn next_wake(
        &mut self,
        states: &[FeedState],
        now: DateTime<Utc>,
    ) -> anyhow::Result<DateTime<Utc>> {
        let mut wake = now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default();
        for st in states {
            if st.gone_at.is_some() || self.inflight_urls.contains(&st.url) {
                continue;
            }
            if self.cfg.feed(&st.url).is_none() {
                continue;
            }
            let t = st
                .next_poll_at
                .max(st.retry_not_before.unwrap_or(st.next_poll_at));
            wake = wake.min(t);
        }
        if let Some(t) = self.notifier.next_wakeup(&mut self.store, &self.cfg, now)? {
            wake = wake.min(t);
        }
        Ok(wake.max(now))
    }

    /// Records one poll's outcome: new items classified and stored, health and schedule
    /// updated. The only place poll results touch the store.
    fn apply(&mut self, url: &str, result: PollResult, now: DateTime<Utc>) -> anyhow::Result<()> {
        let Some(feed) = self.cfg.feed(url).cloned() else {
            return Ok(()); // removed by a reload while in flight
        };
        let state = self.store.feed(url)?;
        self.summary.polls += 1;
        self.last_poll_at = Some(now);
        let jitter: f64 = rand::random();
        match result {
            PollResult::Items {
                items,
                warnings,
                ttl,
                etag,
                last_modified,
                cache,
                moved_to,
            } => {
                let fetched = items.len();
                let items = items
                    .into_iter()
                    .map(|mut it| {
                        it.feed_name = feed.name.clone();
                        it.feed_tags = feed.tags.clone();
                        it
                    })
                    .collect();
                let fresh = self.store.filter_new(url, items)?;
                // A recovered item is reported once, when it arrives; a skipped one on every
                // poll, since nothing of it was stored.
                let fresh_keys: HashSet<String> = fresh.iter().map(Item::dedup_key).collect();
                for w in &warnings {
                    if w.item_key.as_ref().map_or(true, |k| fresh_keys.contains(k)) {
                        tracing::warn!(feed = %untrusted(&feed.name), url = %untrusted(url),
                            "{}", untrusted(&w.message));
                    }
                }
                let classifier = &self.cfg.classifier;
                let new: Vec<NewItem> = fresh
                    .into_iter()
                    .map(|mut item| {
                        crate::lang::fill(&mut item);
                        let signature = cluster::signature(&item.title, &item.summary);
                        NewItem {
                            verdicts: classifier.classify(&item),
                            canonical_url: item.link.as_deref().and_then(canon::canonical_url),
                            signature: (!signature.is_empty()).then(|| signature.to_bytes()),
                            item,
                        }
                    })
                    .collect();
                // On a feed's first poll, old items are history, not news.
                let backfill_before = state.first_polled_at.is_none().then(|| {
                    now - chrono::Duration::from_std(self.cfg.config.daemon.backfill)
                        .unwrap_or_default()
                });
                let clusters = &mut self.clusters;
                clusters.prune(now - clusters.window());
                let feed_id = state.id;
                let report = self.store.insert_items(
                    url,
                    &new,
                    now,
                    backfill_before,
                    &mut |id, n, same_url| {
                        let sig = n.signature.as_deref().map(Signature::from_bytes);
                        match (sig, same_url) {
                            // The same canonical URL as a stored item, however old: that story.
                            (Some(Ok(sig)), Some(c)) => {
                                let url = n.canonical_url.as_deref();
                                clusters.restore(id, feed_id, c, url, &sig, now);
                                c
                            }
                            (Some(Ok(sig)), None) => clusters
                                .insert(id, feed_id, n.canonical_url.as_deref(), &sig, now)
                                .unwrap_or(id),
                            (_, same_url) => same_url.unwrap_or(id),
                        }
                    },
                )?;
                self.metrics.items_stored(report.inserted.len());
                for n in &new {
                    for v in &n.verdicts {
                        self.metrics.matched(&v.watch_id, 1);
                    }
                }
                self.summary.new_items += report.inserted.len();
                self.summary.new_matches += report.matches;
                let validators = (etag, last_modified);
                let hints = PollHints { ttl, cache };
                let next =
                    self.record_success(&feed, &state, now, hints, validators, moved_to, jitter)?;
                tracing::debug!(feed = %untrusted(&feed.name), fetched, new = report.inserted.len(),
                    matches = report.matches, next_poll = %next, "polled");
            }
            PollResult::NotModified { cache, moved_to } => {
                let validators = (state.etag.clone(), state.last_modified.clone());
                let hints = PollHints { ttl: None, cache };
                let next =
                    self.record_success(&feed, &state, now, hints, validators, moved_to, jitter)?;
                tracing::debug!(feed = %untrusted(&feed.name), next_poll = %next, "not modified");
            }
            PollResult::Gone => {
                self.store.record_gone(url, now)?;
                tracing::warn!(feed = %untrusted(&feed.name), url = %untrusted(url), "feed is gone (HTTP 410): polling stopped; remove it from the config");
            }
            PollResult::Failed { error, retry_after } => {
                self.summary.failures += 1;
                self.metrics.poll_failed(&feed.name);
                let failures = state.consecutive_failures + 1;
                let next = retry::next_poll_after_failure(
                    now,
                    failures,
                    feed.interval,
                    retry_after,
                    jitter,
                );
                self.store
                    .record_poll_failure(url, now, &error, next, retry_after)?;
                tracing::warn!(feed = %untrusted(&feed.name), url = %untrusted(url), failures, next_poll = %next,
                    "poll failed: {}", untrusted(&error));
            }
        }
        Ok(())
    }

    /// The next scheduled digest firing, as wall-clock time in its own zone: "07:30 UTC"
    /// today, "Tue 07:30 CET" later.
    fn next_digest(&mut self, now: DateTime<Utc>) -> Option<String> {
        let (t, tz) = notify::next_digest(&mut self.store, &self.cfg, now).ok()??;
        let local = t.with_timezone(&tz);
        let today = now.with_timezone(&tz).date_naive() == local.date_naive();
        Some(if t <= now {
            "due now".to_string()
        } else if today {
            local.format("%H:%M %Z").to_string()
        } else {
            local.format("%a %H:%M %Z").to_string()
        })
    }

    /// A poll that reached the feed (new content or 304): schedule the next one from the
    /// interval and the server's hints, keep the validators, remember (and report) a move.
    #[allow(clippy::too_many_arguments)]
    fn record_success(
        &mut self,
        feed: &Feed,
        state: &FeedState,
        now: DateTime<Utc>,
        hints: PollHints,
        (etag, last_modified): (Option<String>, Option<String>),
        moved_to: Option<String>,
        jitter: f64,
    ) -> anyhow::Result<DateTime<Utc>> {
        let next = retry::next_poll_after_success(now, feed.interval, hints, jitter);
        self.report_move(feed, state, moved_to.as_deref());
        let ok = PollSuccess {
            etag,
            last_modified,
            next_poll_at: next,
            moved_to,
        };
        self.store.record_poll_success(&feed.url, now, &ok)?;
        Ok(next)
    }

    fn report_move(&self, feed: &Feed, state: &FeedState, moved_to: Option<&str>) {
        if let Some(to) = moved_to {
            if state.moved_to.as_deref() != Some(to) {
                tracing::warn!(feed = %untrusted(&feed.name), from = %untrusted(&feed.url), to = %untrusted(to),
                    "feed moved permanently; using the new URL from now on: update the config");
            }
        }
    }

    /// Re-reads the config. On success the new one replaces the old between two results; on
    /// failure every error is logged and the old config keeps running.
    fn reload(&mut self) {
        self.service.reloading();
        match self.source.load_runnable() {
            Ok(new) => match self.adopt(new) {
                Ok(()) => {
                    self.reload_error = None;
                    self.metrics.reloaded(true);
                    tracing::info!(feeds = self.cfg.feeds.len(), "configuration reloaded");
                }
                Err(e) => {
                    self.reload_error = Some(format!("{e:#}"));
                    self.metrics.reloaded(false);
                    tracing::error!(error = %format!("{e:#}"), "reload failed; the old configuration keeps running");
                }
            },
            Err(errors) => {
                self.metrics.reloaded(false);
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                self.reload_error = Some(format!("{} config error(s)", errors.0.len()));
                tracing::error!(
                    errors = errors.0.len(),
                    "reload refused; the old configuration keeps running"
                );
            }
        }
        let states = self.store.feeds().unwrap_or_default();
        let status = self.status_line(&states);
        self.service.ready(&status);
        self.last_status = status;
    }

    fn adopt(&mut self, new: Loaded) -> anyhow::Result<()> {
        let notifier = Notifier::new(&new)?;
        let fetcher = if new.config.http == self.cfg.config.http {
            self.fetcher.clone()
        } else {
            Fetcher::new(&new.config.http)?
        };
        self.store
            .sync_feeds(new.feeds.iter().map(|f| (f.url.as_str(), f.name.as_str())))?;
        notifier.register(&mut self.store, &new, Utc::now())?;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        if new.config.daemon.listen_addr() != self.cfg.config.daemon.listen_addr() {
            tracing::warn!(
                "daemon.listen changed: the metrics listener keeps its old address until a restart"
            );
        }
        self.metrics
            .set_stale_after(stale_after(&new).unwrap_or(Duration::ZERO));
        self.cfg = Arc::new(new);
        self.notifier = notifier;
        self.fetcher = fetcher;
        Ok(())
    }

    /// The one-line status systemd shows: "41 feeds, 3 failing; last poll 2 min ago; next
    /// digest 07:30 UTC". Also refreshes the gauges it reads.
    fn status_line(&mut self, states: &[FeedState]) -> String {
        let configured: HashSet<&str> = self.cfg.feeds.iter().map(|f| f.url.as_str()).collect();
        let failing = states
            .iter()
            .filter(|s| {
                configured.contains(s.url.as_str())
                    && (s.consecutive_failures > 0 || s.gone_at.is_some())
            })
            .count();
        self.metrics.set_feeds(configured.len(), failing);
        let mut s = format!("{} feeds, {} failing", configured.len(), failing);
        match self.last_poll_at {
            Some(t) => {
                let mins = (Utc::now() - t).num_minutes();
                s.push_str(&format!("; last poll {mins} min ago"));
            }
            None => s.push_str("; no poll yet"),
        }
        if let Some(next) = self.next_digest(Utc::now()) {
            s.push_str(&format!("; next digest {next}"));
        }
        if let Ok(depth) = self.store.outbox_depth() {
            self.metrics
                .set_outbox_depth(u64::try_from(depth).unwrap_or(0));
            if depth > 0 {
                s.push_str(&format!("; {depth} deliveries pending"));
            }
        }
        if let Some(e) = &self.reload_error {
            s.push_str(&format!(
                "; reload failed ({e}), running the previous config"
            ));
        }
        s
    }
}

/// Fetches and parses one feed. Runs in its own task: no store access, no shared state.
async fn poll(fetcher: &Fetcher, state: &FeedState) -> PollResult {
    let url = match url::Url::parse(state.fetch_url()) {
        Ok(u) => u,
        Err(e) => {
            return PollResult::Failed {
                error: format!("invalid URL: {e}"),
                retry_after: None,
            }
        }
    };
    let req = FetchRequest {
        url,
        etag: state.etag.clone(),
        last_modified: state.last_modified.clone(),
    };
    let mut moved: Option<String> = None;
    let mut req = req;
    // At most one discovery hop: an HTML page may name its feed once.
    for hop in 0..2 {
        match fetcher.fetch(&req).await {
            FetchOutcome::Fetched {
                body,
                content_type,
                final_url,
                moved_permanently,
                etag,
                last_modified,
                cache_hint,
            } => {
                if let Some(m) = moved_permanently {
                    moved = Some(m.to_string());
                }
                let parsed = tokio::task::spawn_blocking(move || {
                    feed::parse(&body, content_type.as_deref(), Some(&final_url))
                })
                .await;
                match parsed {
                    Ok(Ok(p)) => {
                        return PollResult::Items {
                            items: p.items,
                            warnings: p.warnings,
                            ttl: p.ttl,
                            etag,
                            last_modified,
                            cache: cache_hint,
                            moved_to: moved,
                        }
                    }
                    Ok(Err(FeedError::NotAFeed {
                        alternate: Some(alt),
                    })) if hop == 0 => {
                        tracing::debug!(page = %untrusted(req.url.as_str()), feed = %untrusted(alt.as_str()),
                            "HTML page names a feed; following it");
                        moved = Some(alt.to_string());
                        req = FetchRequest {
                            url: alt,
                            etag: None,
                            last_modified: None,
                        };
                    }
                    Ok(Err(e)) => {
                        return PollResult::Failed {
                            error: e.to_string(),
                            retry_after: None,
                        }
                    }
                    Err(e) => {
                        return PollResult::Failed {
                            error: format!("parser crashed: {e}"),
                            retry_after: None,
                        }
                    }
                }
            }
            FetchOutcome::NotModified {
                moved_permanently,
                cache_hint,
            } => {
                return PollResult::NotModified {
                    cache: cache_hint,
                    moved_to: moved_permanently.map(|u| u.to_string()).or(moved),
                }
            }
            FetchOutcome::Gone => return PollResult::Gone,
            FetchOutcome::Failed { error, retry_after } => {
                return PollResult::Failed {
                    error: error.to_string(),
                    retry_after,
                }
            }
        }
    }
    PollResult::Failed {
        error: "the page's feed link leads to another page, not a feed".into(),
        retry_after: None,
    }
}
