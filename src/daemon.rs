//! The daemon: one event loop that polls due feeds, runs each new story through
//! classify → store, and hands digests to `notify`. Also what `run --once` runs.
//!
//! In: a compiled config, a state directory, [`Control`] events (reload, shutdown) from the
//! binary's signal handlers. Out: store writes, notifications, service-manager messages
//! (`service`), counters for the optional metrics listener (`metrics`).
//!
//! # Shape
//! Fetching, parsing and everything that is a pure function of an item (classification,
//! canonical link, cluster signature) run in spawned tasks (bounded by the [`Fetcher`]'s global
//! and per-host limits), so they use every core; everything that touches the store runs
//! here, in the loop's own task: finished results are applied together in one transaction
//! (at most [`APPLY_BATCH`], the first waiting at most [`APPLY_WAIT`] for others), so a busy
//! cycle pays one commit per batch rather than two per feed. So a store transaction is never
//! interrupted by a signal: the loop only looks at [`Control`] between batches, and shutdown
//! stores the results already fetched and drops in-flight *fetches* (whose items were not
//! stored and will be fetched again), never half a write.
//!
//! The loop is `select!{ biased; control, finished poll, send event, timer }`: control first
//! so a stop request is never starved by a busy poll cycle. The watchdog is fed from this
//! loop, so a stuck loop is restarted by systemd.
//!
//! Sending is off the loop too: `notify` hands over each due mail delivery as a job, spawned
//! here with its own deadline; its per-recipient outcomes come back as events that the loop
//! records between poll results. A silent mail server delays nothing but its own delivery,
//! and shutdown drops the job (the delivery stays pending, sent on the next start with the
//! same Message-ID).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::canon;
use crate::classify::Classifier;
use crate::cluster::{self, ClusterIndex, Signature};
use crate::config::{self, Feed, Loaded};
use crate::feed::{self, FeedError};
use crate::fetch::{FetchOutcome, FetchRequest, Fetcher};
use crate::item::Item;
use crate::logging::untrusted;
use crate::metrics::{self, Metrics};
use crate::notify::{self, Notifier, SendEvent};
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
    /// What the deliveries of the run came to (for `run --once`'s exit status).
    pub mail: notify::Report,
    /// Deliveries an earlier run left pending, as found at start: one line each.
    pub pending_before: Vec<String>,
    /// Delivery problems still open at the end (held deliveries, refused recipients).
    pub problems: Vec<String>,
}

/// The outcome of one feed's fetch-and-parse, carried from its task to the loop.
enum PollResult {
    Items {
        /// Every parsed item with what is a pure function of it — verdicts, canonical link,
        /// signature — computed in the poll task (see [`prepare`]); the loop only filters out
        /// what the store has and writes the rest.
        items: Vec<NewItem>,
        /// The classifier the verdicts came from: a reload while the poll was in flight
        /// replaces it, and the loop then classifies again with the new one.
        classifier: Arc<Classifier>,
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
    /// The start-up rebuild of `clusters`, running on a blocking thread over its own
    /// read-only connection, so READY, polling, SIGTERM and the watchdog do not wait for it.
    /// Until it is in, poll results wait and nothing is stored (see [`Daemon::rebuilt`]).
    rebuild: Option<tokio::task::JoinHandle<anyhow::Result<ClusterIndex>>>,
    /// The database file, for the rebuild's own connection.
    db: PathBuf,
    /// When retention last ran; it runs at start and then daily.
    last_prune: Option<DateTime<Utc>>,
    /// Where the Atom feeds of matches are written (`<state>/feeds`).
    feeds_dir: PathBuf,
    /// Set when stored matches (or the config) changed since the feeds were last rendered.
    feeds_dirty: bool,
    /// Digest id → hash of its feed as last handed to the writer: an unchanged feed is not
    /// written again (its ETag and Last-Modified stay put for readers).
    feed_hashes: HashMap<String, [u8; 32]>,
    /// Feed writes still running (awaited only by `--once`, before it exits).
    feed_writes: Vec<tokio::task::JoinHandle<()>>,
    /// Send jobs in flight (each bounded by its own deadline); aborted on shutdown.
    sends: JoinSet<()>,
    /// Their events come back here, to be recorded by this task.
    send_tx: mpsc::UnboundedSender<SendEvent>,
    send_rx: mpsc::UnboundedReceiver<SendEvent>,
    /// Deliveries with a job in flight: never two attempts of one delivery at once.
    sending: HashSet<i64>,
    /// Set when a poll cycle ended: open delivery problems are logged (at error level) once
    /// per cycle until resolved.
    report_problems: bool,
    /// Set while store writes fail for lack of space: polling and deliveries pause until
    /// `retry_at`, then try again (see [`Daemon::store_failed`]).
    store_full: Option<StoreFull>,
}

/// The store ran out of space: since when, how many writes failed, when to try again.
struct StoreFull {
    since: DateTime<Utc>,
    attempts: u32,
    retry_at: tokio::time::Instant,
}

/// While poll results stream in, the schedule is scanned (and digests, alerts and STATUS=
/// refreshed) at most this often.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// At most this many finished polls are applied in one store transaction. Each takes a
/// few milliseconds, so control events (a stop, a reload) wait at most a fraction of a second.
const APPLY_BATCH: usize = 32;

/// How long a finished poll may wait for others to share its store transaction. While the
/// loop keeps up with the fetches, results come one at a time; each commit writes the pages it
/// dirtied to the WAL, and the pages every result touches (the ends of the rowid and time
/// indexes, the verdicts) are written once per batch instead of once per result. A story
/// reaches the store, and an alert its watch, at most this much later.
const APPLY_WAIT: Duration = Duration::from_millis(20);

/// Finished polls not yet stored, and by when they must be.
#[derive(Default)]
struct Waiting {
    polls: Vec<(String, PollResult)>,
    apply_at: Option<tokio::time::Instant>,
}

impl Waiting {
    /// How many more results the batch takes.
    fn room(&self) -> usize {
        APPLY_BATCH.saturating_sub(self.polls.len())
    }

    /// After results arrived: store them now — a full batch, or the last poll of the cycle
    /// (nothing else running) — or wait, until [`APPLY_WAIT`] after the oldest of them.
    fn store_now(&mut self, now: tokio::time::Instant, others_running: bool) -> bool {
        if self.polls.is_empty() {
            return false;
        }
        if self.polls.len() >= APPLY_BATCH || !others_running {
            return true;
        }
        self.apply_at.get_or_insert(now + APPLY_WAIT);
        false
    }

    fn take(&mut self) -> Vec<(String, PollResult)> {
        self.apply_at = None;
        std::mem::take(&mut self.polls)
    }
}

/// What one applied poll adds to the run's summary and the metrics, counted once its batch is
/// committed (a rolled-back batch counts nothing).
#[derive(Default)]
struct Stored {
    /// The poll counts (its feed is still configured).
    polled: bool,
    /// New items stored, and the reportable matches among their verdicts.
    items: usize,
    matches: usize,
    /// One watch id per verdict of the poll's new items.
    matched: Vec<String>,
    /// The feed's name, when the poll failed.
    failed_feed: Option<String>,
}

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
    // Sized for the items about to be restored; the feature arena is trimmed at the end.
    let items = store.items_seen_since(start)?;
    index.reserve(items, items);
    // One signature buffer for every row: the rows are lent, and so is this.
    let mut sig = Signature::default();
    store.each_cluster_row(start - CLUSTER_WARMUP, &mut |row| {
        if sig.read_bytes(row.signature).is_err() {
            return; // an older signature version: it only misses warming up
        }
        if row.first_seen_at < start {
            index.observe(&sig);
        } else {
            index.restore(
                row.id,
                row.feed_id,
                row.cluster_id,
                row.canonical_url,
                &sig,
                row.first_seen_at,
            );
        }
    })?;
    index.shrink_to_fit();
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
    crate::store::prepare_state_dir(&opts.state_dir)?;
    // One daemon per state directory, held until `run` returns (before anything is polled or
    // sent: a second daemon would send every digest again).
    let _lock = crate::store::lock_state(&opts.state_dir)?;
    let db = crate::store::db_path(&opts.state_dir);
    let mut store =
        Store::open(&db).with_context(|| format!("cannot open database {}", db.display()))?;
    let fetcher = Fetcher::new(&cfg.config.http).context("cannot set up the HTTP client")?;
    let notifier = Notifier::new(&cfg).context("cannot set up notifications")?;
    store.sync_feeds(cfg.feed_rows())?;
    notifier.register(&mut store, &cfg, Utc::now())?;
    // What an earlier run left undelivered, said once now; then held deliveries get their
    // retry (a start is a chance that the config was fixed).
    let pending_before: Vec<String> = store
        .pending_deliveries()?
        .iter()
        .map(|d| {
            let state = if d.held { "held" } else { "pending" };
            let why = d
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            format!(
                "delivery {} of digest `{}` ({}) is still {state} from an earlier run{why}",
                d.id,
                d.digest_id,
                d.kind.as_str()
            )
        })
        .collect();
    for line in &pending_before {
        tracing::warn!("{}", crate::logging::untrusted(line));
    }
    store.release_held(None, Utc::now())?;
    let metrics = Metrics::new();
    metrics.set_started(Utc::now().timestamp());
    metrics.set_stale_after(stale_after(&cfg).unwrap_or(Duration::ZERO));
    let feeds_dir = opts.state_dir.join(FEEDS_DIR);
    let metrics_server = match cfg.config.daemon.listen_addr() {
        Some(addr) if !opts.once => {
            let srv =
                metrics::Server::start_with_feeds(addr, metrics.clone(), Some(feeds_dir.clone()))
                    .await?;
            tracing::info!("metrics listening on http://{}/metrics", srv.local_addr());
            Some(srv)
        }
        _ => None,
    };

    let (send_tx, send_rx) = mpsc::unbounded_channel();
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
        rebuild: None,
        db: db.clone(),
        last_prune: None,
        feeds_dir,
        feeds_dirty: true,
        feed_hashes: HashMap::new(),
        feed_writes: Vec::new(),
        sends: JoinSet::new(),
        send_tx,
        send_rx,
        sending: HashSet::new(),
        report_problems: true,
        store_full: None,
    };
    d.summary.pending_before = pending_before;
    // The cluster index is rebuilt beside the loop (the larger the window, the longer that
    // takes); the loop stores nothing before it is in.
    d.start_rebuild();
    // Only now — config compiled, database open and migrated, listener bound — is the
    // service ready.
    let failing = d.store.failing_feed_urls()?;
    let status = d.status_of(failing.iter().map(String::as_str));
    d.metrics.set_ready(true);
    d.service.ready(&status);
    d.last_status = status;
    tracing::info!(feeds = d.cfg.feeds.len(), watches = d.cfg.config.watches.len(),
        digests = d.cfg.digests.len(), db = %db.display(), "policywatch started");
    let result = d.event_loop(&opts, &mut control).await;
    d.metrics.set_ready(false);
    d.service.stopping();
    result?;
    d.summary.problems = notify::problems(&d.store, &d.cfg, Utc::now())
        .map(|ps| ps.iter().map(notify::Problem::line).collect())
        .unwrap_or_default();
    let Daemon { cfg, summary, .. } = d;
    drop_beside(cfg);
    Ok(summary)
}

/// Lets go of a config on a thread of its own: when it is the last reference, the compiled
/// rules' tens of thousands of allocations are freed there, milliseconds the loop (after a
/// reload) or `run --once` (before it exits) need not wait for.
fn drop_beside(cfg: Arc<Loaded>) {
    // Without a thread, the closure, and the config with it, is dropped here.
    let _ = std::thread::Builder::new()
        .name("config-drop".into())
        .spawn(move || drop(cfg));
}

impl Daemon {
    async fn event_loop(
        &mut self,
        opts: &Options,
        control: &mut mpsc::Receiver<Control>,
    ) -> anyhow::Result<()> {
        let mut tasks: JoinSet<(String, PollResult, Duration)> = JoinSet::new();
        let mut started_once = false;
        let mut flushed = false;
        let watchdog_every = self
            .service
            .watchdog_every()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        // Scanning the schedule, firing digests and refreshing STATUS= read every feed's row:
        // O(feeds). They run when the loop is idle or at most every SCAN_EVERY while results
        // stream in, never once per result (quadratic with thousands of feeds).
        let mut next_scan = tokio::time::Instant::now();
        let mut waiting = Waiting::default();
        loop {
            let now = Utc::now();
            if opts.once {
                if !started_once {
                    let states = self.store.feeds()?;
                    self.start_due_polls(&mut tasks, &states, now, opts.all);
                    started_once = true;
                }
                if tasks.is_empty()
                    && self.queue.is_empty()
                    && waiting.polls.is_empty()
                    && self.rebuild.is_none()
                    && !flushed
                {
                    self.refresh_feeds(Utc::now());
                    // `--once` exits soon: the feeds must be on disk first.
                    for w in self.feed_writes.drain(..) {
                        let _ = w.await;
                    }
                    let now = Utc::now();
                    self.notifier.claim_all(&mut self.store, &self.cfg, now)?;
                    self.start_sends(now)?;
                    flushed = true;
                }
                if flushed && self.sending.is_empty() {
                    // A trimmed retry is due at once; anything else waits for a later run.
                    self.start_sends(Utc::now())?;
                    if self.sending.is_empty() {
                        return Ok(());
                    }
                }
            } else if tokio::time::Instant::now() >= next_scan {
                if self.last_prune.map_or(true, |t| now - t >= PRUNE_EVERY) {
                    self.prune(now);
                }
                // The Atom feeds, after a cycle that stored matches (the scan runs at a
                // cycle's end, and at most every SCAN_EVERY while results stream in).
                self.refresh_feeds(now);
                // One read of every feed's row serves the whole scan.
                let states = self.store.feeds()?;
                // While the disk is full, nothing is polled or delivered before the next try.
                let paused = self
                    .store_full
                    .as_ref()
                    .map(|f| f.retry_at > tokio::time::Instant::now());
                if paused != Some(true) {
                    self.start_due_polls(&mut tasks, &states, now, false);
                    let now = Utc::now();
                    let delivered = self
                        .notifier
                        .claim_due(&mut self.store, &self.cfg, now)
                        .map_err(anyhow::Error::from)
                        .and_then(|()| self.start_sends(now));
                    if let Err(e) = delivered {
                        self.store_failed(e)?;
                    }
                }
                if self.report_problems {
                    self.report_problems = false;
                    self.log_problems();
                }
                self.publish_status(&states);
                let now = Utc::now();
                let until_wake = match self.next_wake(&states, now) {
                    Ok(t) => (t - now).to_std().unwrap_or(Duration::ZERO),
                    Err(e) => {
                        self.store_failed(e)?;
                        Duration::ZERO
                    }
                };
                next_scan = tokio::time::Instant::now()
                    + until_wake.clamp(SCAN_EVERY, watchdog_every.max(SCAN_EVERY));
                if let Some(f) = &self.store_full {
                    next_scan = next_scan.min(f.retry_at.max(tokio::time::Instant::now()));
                }
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
                        tracing::info!(in_flight = tasks.len(), sending = self.sending.len(), "shutting down");
                        tasks.abort_all();
                        self.queue.clear();
                        // Results already fetched are stored first: a short write, and their
                        // feeds need not be fetched again. While the story index is still
                        // being rebuilt they cannot be: their feeds stay due for the next start.
                        if let Some(r) = self.rebuild.take() {
                            r.abort();
                            if !waiting.polls.is_empty() {
                                tracing::info!(polls = waiting.polls.len(),
                                    "results not stored: the story index was still being rebuilt; their feeds are fetched again at the next start");
                            }
                        } else {
                            self.apply_batch(waiting.take())?;
                        }
                        // A send still running is dropped: its delivery stays pending and goes
                        // out with the same Message-ID on the next start. What it already
                        // reported (a recipient served) is recorded first — short writes.
                        self.sends.abort_all();
                        while let Ok(ev) = self.send_rx.try_recv() {
                            self.record_send(ev)?;
                        }
                        return Ok(());
                    }
                },
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    // Whatever else has finished meanwhile joins the results waiting to be
                    // stored; they are applied together, in one store transaction.
                    let mut finished = vec![joined];
                    while finished.len() < waiting.room() {
                        match tasks.try_join_next() {
                            Some(j) => finished.push(j),
                            None => break,
                        }
                    }
                    for joined in finished {
                        match joined {
                            Ok((url, result, took)) => {
                                self.metrics.poll_done(Utc::now().timestamp(), took);
                                waiting.polls.push((url, result));
                            }
                            Err(e) if e.is_panic() => {
                                // A panic in a parser is a bug, but one feed must not stop the
                                // rest. Its message may quote what the feed sent.
                                tracing::error!(error = %untrusted(&e.to_string()), "a poll task panicked");
                                // Which feed is unknown: forget what is running (it is re-polled
                                // when due) but keep the queued and the unstored ones marked.
                                self.inflight_urls.clear();
                                let queued = self.queue.iter().map(|(f, _)| f.url.clone());
                                let unstored = waiting.polls.iter().map(|(u, _)| u.clone());
                                self.inflight_urls.extend(queued.chain(unstored));
                            }
                            Err(_) => {}
                        }
                    }
                    // The fetch slots these results freed are refilled before the writes, so
                    // the workers fetch and classify while this thread stores — but not while
                    // a batch's worth waits for the story index, so the results held in memory
                    // stay bounded however many feeds are due at start.
                    if self.rebuild.is_none() || waiting.polls.len() < APPLY_BATCH {
                        self.spawn_queued(&mut tasks);
                    }
                    if waiting.store_now(tokio::time::Instant::now(), !tasks.is_empty())
                        && self.rebuild.is_none()
                    {
                        self.apply_batch(waiting.take())?;
                    }
                    // The last result of a cycle: look at the schedule (and alerts) now.
                    if tasks.is_empty() && self.queue.is_empty() {
                        next_scan = tokio::time::Instant::now();
                        self.report_problems = true;
                    }
                }
                _ = tokio::time::sleep_until(waiting.apply_at.unwrap_or_else(tokio::time::Instant::now)),
                    if waiting.apply_at.is_some() && self.rebuild.is_none() => {
                    self.apply_batch(waiting.take())?;
                }
                built = Self::rebuilt(&mut self.rebuild), if self.rebuild.is_some() => {
                    self.rebuild = None;
                    self.clusters = built?;
                    // What was fetched meanwhile is stored now, in one batch, and the fetch
                    // slots held back meanwhile are filled.
                    if !waiting.polls.is_empty() {
                        self.apply_batch(waiting.take())?;
                    }
                    self.spawn_queued(&mut tasks);
                    if tasks.is_empty() {
                        next_scan = tokio::time::Instant::now();
                    }
                }
                Some(ev) = self.send_rx.recv() => {
                    let done = matches!(ev, SendEvent::Done { .. });
                    // An outcome that cannot be written for lack of space leaves its delivery
                    // pending: it is sent again, with the same Message-ID, once space returns.
                    if let Err(e) = self.record_send(ev) {
                        self.store_failed(e)?;
                    }
                    if done {
                        // The delivery may be due again (a trimmed retry) or settled: look.
                        next_scan = tokio::time::Instant::now();
                    }
                }
                Some(_) = self.sends.join_next(), if !self.sends.is_empty() => {}
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
            // Every turn of the loop ends here, and no turn waits longer than
            // `watchdog_every` (half of WATCHDOG_USEC): a loop stuck anywhere stops these.
            self.service.watchdog();
        }
    }

    /// Starts rebuilding the cluster index from the store, on a blocking thread over its own
    /// read-only connection (a rebuild still running is dropped); [`Daemon::rebuilt`] hands
    /// it over. Until then poll results wait and nothing is stored.
    fn start_rebuild(&mut self) {
        if let Some(r) = self.rebuild.take() {
            r.abort();
        }
        let window = self.cfg.config.daemon.cluster_window;
        let db = self.db.clone();
        self.rebuild = Some(tokio::task::spawn_blocking(move || {
            let store = Store::open_read_only(&db).with_context(|| {
                format!(
                    "cannot open database {} to rebuild the story index",
                    db.display()
                )
            })?;
            let began = std::time::Instant::now();
            let index = rebuild_clusters(&store, window, Utc::now())?;
            tracing::debug!(
                took_ms = began.elapsed().as_millis() as u64,
                "story index rebuilt"
            );
            Ok(index)
        }));
    }

    /// The rebuild of the cluster index, once it is done (pending while there is none: the
    /// `select!` branch is disabled then).
    async fn rebuilt(
        rebuild: &mut Option<tokio::task::JoinHandle<anyhow::Result<ClusterIndex>>>,
    ) -> anyhow::Result<ClusterIndex> {
        match rebuild {
            Some(h) => h.await.context("the story index rebuild stopped")?,
            None => std::future::pending().await,
        }
    }

    /// A store write failed. For lack of space (a full disk) that is transient: whatever the
    /// failed transaction held is not stored — a poll result's items and its feed's new
    /// validators alike, so the feed stays due and is fetched again — polling and deliveries
    /// pause for the backoff of [`retry::store_full_backoff`], STATUS= and the log say so,
    /// and the daemon keeps running. Any other error is returned (and stops the daemon).
    fn store_failed(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        if !e.chain().any(crate::store::is_out_of_space) {
            return Err(e);
        }
        let now = Utc::now();
        let full = self.store_full.get_or_insert(StoreFull {
            since: now,
            attempts: 0,
            retry_at: tokio::time::Instant::now(),
        });
        full.attempts += 1;
        let wait = retry::store_full_backoff(full.attempts);
        full.retry_at = tokio::time::Instant::now() + wait;
        tracing::warn!(attempts = full.attempts, retry_in = ?wait, error = %format!("{e:#}"),
            "disk full: cannot write to the database; nothing is lost, the poll is repeated once space returns");
        // The cluster index may hold items of the transaction that was rolled back: rebuild it
        // from what is really stored, so no story joins a cluster that does not exist. Beside
        // the loop, like the start-up's (which this one replaces, if it still runs): nothing
        // is stored before it is in.
        self.start_rebuild();
        let states = self.store.feeds().unwrap_or_default();
        self.publish_status(&states);
        Ok(())
    }

    /// A store write succeeded: if the disk was full, it no longer is.
    fn store_recovered(&mut self) {
        if let Some(f) = self.store_full.take() {
            tracing::info!(failed_writes = f.attempts, since = %f.since,
                "disk space is back: storing again");
            let states = self.store.feeds().unwrap_or_default();
            self.publish_status(&states);
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

    /// Renders each `atom = true` digest's feed of recent matches (store reads here, in the
    /// loop task; rendering is pure) and hands changed ones to a blocking task that writes
    /// them atomically, so a slow disk never holds up the loop. Failures are logged and the
    /// feed is tried again after the next change.
    fn refresh_feeds(&mut self, now: DateTime<Utc>) {
        self.feed_writes.retain(|w| !w.is_finished());
        if !self.feeds_dirty {
            return;
        }
        self.feeds_dirty = false;
        for d in &self.cfg.digests {
            let Some(n) = d.atom_entries else { continue };
            let rows = match self
                .store
                .recent_matches(&d.watches, n.saturating_mul(crate::atom::ROWS_PER_ENTRY))
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(digest = %d.id, error = %e, "cannot read matches for the Atom feed");
                    self.feeds_dirty = true;
                    continue;
                }
            };
            let meta = crate::atom::FeedMeta {
                digest_id: d.id.clone(),
                title: d.title.clone(),
                watch_names: d
                    .watches
                    .iter()
                    .map(|w| (w.clone(), self.cfg.watch_name(w)))
                    .collect(),
                empty_updated: self
                    .store
                    .read_digest_state(&d.id)
                    .ok()
                    .flatten()
                    .map_or(now, |s| s.created_at),
            };
            let weights = crate::digest::SetWeights::new(self.cfg.classifier.set_weights().clone());
            let xml = crate::atom::render(&meta, &crate::atom::entries(&rows, n, &weights));
            let hash: [u8; 32] = sha2::Sha256::digest(xml.as_bytes()).into();
            if self.feed_hashes.get(&d.id) == Some(&hash) {
                continue;
            }
            self.feed_hashes.insert(d.id.clone(), hash);
            let path = self.feeds_dir.join(format!("{}.atom", d.id));
            let id = d.id.clone();
            // Not awaited: the loop goes on while the disk works. A failed write is logged;
            // the next change writes the whole feed again.
            let w = tokio::task::spawn_blocking(move || {
                match write_if_changed(&path, xml.as_bytes()) {
                    Ok(true) => {
                        tracing::debug!(digest = %id, path = %path.display(), "Atom feed written")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(digest = %id, path = %path.display(), "cannot write the Atom feed: {e}")
                    }
                }
            });
            self.feed_writes.push(w);
        }
    }

    fn absorb(&mut self, report: notify::Report) {
        self.metrics
            .deliveries(report.sent, report.retrying + report.held, report.failed);
        let m = &mut self.summary.mail;
        m.sent += report.sent;
        m.retrying += report.retrying;
        m.failed += report.failed;
        m.held += report.held;
        m.recipients_failed += report.recipients_failed;
        self.summary.digests.extend(report.texts);
    }

    /// Starts every due delivery: log deliveries are written at once, mail goes to a job of
    /// its own (never awaited here).
    fn start_sends(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let mut report = notify::Report::default();
        let jobs =
            self.notifier
                .start_due(&mut self.store, &self.cfg, now, &self.sending, &mut report)?;
        self.absorb(report);
        for job in jobs {
            self.sending.insert(job.delivery_id());
            self.sends.spawn(job.run(self.send_tx.clone()));
        }
        Ok(())
    }

    /// Records one event of a send job.
    fn record_send(&mut self, ev: SendEvent) -> anyhow::Result<()> {
        if let SendEvent::Done { attempt, .. } = &ev {
            self.sending.remove(&attempt.delivery.id);
        }
        let mut report = notify::Report::default();
        self.notifier
            .record(&mut self.store, ev, Utc::now(), &mut report)?;
        self.absorb(report);
        Ok(())
    }

    /// Every open delivery problem, at error level: held deliveries and refused recipients
    /// stay in the log, once a cycle, until someone fixes them.
    fn log_problems(&mut self) {
        match notify::problems(&self.store, &self.cfg, Utc::now()) {
            Ok(ps) => {
                for p in ps {
                    tracing::error!("{}", crate::logging::untrusted(&p.line()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the outbox's problems"),
        }
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
            let classifier = self.cfg.classifier.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let result = poll(&fetcher, &state, &feed, classifier).await;
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

    /// Applies finished polls in one store transaction (see [`Store::begin_batch`]). If any
    /// write fails — or the commit does, for lack of space — the whole batch is rolled back:
    /// none of its items or validators is stored, its feeds stay due and are fetched again,
    /// and the counters (run summary, metrics) count none of it. Only then does
    /// [`Daemon::store_failed`] decide whether that is a pause (a full disk) or the end.
    fn apply_batch(&mut self, polls: Vec<(String, PollResult)>) -> anyhow::Result<()> {
        if polls.is_empty() {
            return Ok(());
        }
        // Marked as polling until now, so no scan started them again while they waited.
        for (url, _) in &polls {
            self.inflight_urls.remove(url);
        }
        let mut stored = Vec::with_capacity(polls.len());
        let written = || -> anyhow::Result<()> {
            self.store.begin_batch()?;
            for (url, result) in polls {
                stored.push(self.apply(&url, result, Utc::now())?);
            }
            self.store.commit_batch()?;
            Ok(())
        };
        match written() {
            Ok(()) => {
                for s in stored {
                    self.summary.polls += usize::from(s.polled);
                    self.summary.new_items += s.items;
                    self.summary.new_matches += s.matches;
                    // The Atom feeds are rewritten after a cycle that stored matches.
                    self.feeds_dirty |= s.matches > 0;
                    self.metrics.items_stored(s.items);
                    for w in &s.matched {
                        self.metrics.matched(w, 1);
                    }
                    if let Some(feed) = s.failed_feed {
                        self.summary.failures += 1;
                        self.metrics.poll_failed(&feed);
                    }
                }
                self.store_recovered();
                Ok(())
            }
            Err(e) => {
                self.store.rollback_batch();
                self.store_failed(e)
            }
        }
    }

    /// Records one poll's outcome, inside the open batch: new items classified and stored,
    /// health and schedule updated. The only place poll results touch the store. Returns what
    /// the metrics count once the batch is committed.
    fn apply(
        &mut self,
        url: &str,
        result: PollResult,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Stored> {
        let mut stored = Stored::default();
        let Some(feed) = self.cfg.feed(url).cloned() else {
            return Ok(stored); // removed by a reload while in flight
        };
        let state = self.store.feed(url)?;
        stored.polled = true;
        self.last_poll_at = Some(now);
        let jitter: f64 = rand::random();
        match result {
            PollResult::Items {
                items,
                classifier: used,
                warnings,
                ttl,
                etag,
                last_modified,
                cache,
                moved_to,
            } => {
                let fetched = items.len();
                let mut new = self.store.filter_new(url, items)?;
                // A reload while the poll was in flight: the rules (and the feed's name and
                // tags, which rules may test) are the new config's.
                if !Arc::ptr_eq(&used, &self.cfg.classifier) {
                    for n in &mut new {
                        n.item.feed_name = feed.name.clone();
                        n.item.feed_tags = feed.tags.clone();
                        n.verdicts = self.cfg.classifier.classify(&n.item);
                    }
                }
                // A recovered item is reported once, when it arrives; a skipped one on every
                // poll, since nothing of it was stored.
                let fresh_keys: HashSet<String> = new.iter().map(|n| n.item.dedup_key()).collect();
                for w in &warnings {
                    if w.item_key.as_ref().map_or(true, |k| fresh_keys.contains(k)) {
                        tracing::warn!(feed = %untrusted(&feed.name), url = %untrusted(url),
                            "{}", untrusted(&w.message));
                    }
                }
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
                stored.items = report.inserted.len();
                stored.matches = report.matches;
                stored.matched = new
                    .iter()
                    .flat_map(|n| n.verdicts.iter().map(|v| v.watch_id.clone()))
                    .collect();
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
                stored.failed_feed = Some(feed.name.clone());
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
        Ok(stored)
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
        self.store.sync_feeds(new.feed_rows())?;
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
        drop_beside(std::mem::replace(&mut self.cfg, Arc::new(new)));
        self.feeds_dirty = true;
        self.notifier = notifier;
        self.fetcher = fetcher;
        // A reload is the operator's fix: held deliveries get their retry now.
        let released = self.store.release_held(None, Utc::now())?;
        if released > 0 {
            tracing::info!(
                deliveries = released,
                "held deliveries are retried with the new configuration"
            );
        }
        self.report_problems = true;
        Ok(())
    }

    /// The one-line status systemd shows: "41 feeds, 3 failing; last poll 2 min ago; next
    /// digest 07:30 UTC". Also refreshes the gauges it reads.
    fn status_line(&mut self, states: &[FeedState]) -> String {
        self.status_of(
            states
                .iter()
                .filter(|s| s.is_failing())
                .map(|s| s.url.as_str()),
        )
    }

    /// [`Daemon::status_line`] from the URLs of the failing feeds (those no longer
    /// configured are not counted).
    fn status_of<'u>(&mut self, failing_urls: impl Iterator<Item = &'u str>) -> String {
        let configured: HashSet<&str> = self.cfg.feeds.iter().map(|f| f.url.as_str()).collect();
        let failing = failing_urls.filter(|u| configured.contains(u)).count();
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
        if let Ok(ps) = notify::problems(&self.store, &self.cfg, Utc::now()) {
            s.push_str(&problems_status(&ps));
        }
        if let Some(e) = &self.reload_error {
            s.push_str(&format!(
                "; reload failed ({e}), running the previous config"
            ));
        }
        if let Some(f) = &self.store_full {
            s.push_str(&format!(
                "; disk full since {}: cannot store, retrying ({} failed writes)",
                f.since.format("%H:%M UTC"),
                f.attempts
            ));
        }
        s
    }
}

/// The delivery problems for `STATUS=`: counts, and the first of each kind in short.
fn problems_status(ps: &[notify::Problem]) -> String {
    let mut s = String::new();
    let held: Vec<_> = ps
        .iter()
        .filter_map(|p| match p {
            notify::Problem::Held { delivery } => Some(delivery),
            _ => None,
        })
        .collect();
    if let Some(first) = held.first() {
        let why: String = first
            .last_error
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        s.push_str(&format!(
            "; {} delivery held (fix and reload): {why}",
            held.len()
        ));
    }
    let refused: Vec<&str> = ps
        .iter()
        .filter_map(|p| match p {
            notify::Problem::Recipient { address, .. } => Some(address.as_str()),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        s.push_str(&format!(
            "; {} recipient refused: {}",
            refused.len(),
            refused.join(", ")
        ));
    }
    let failed = ps
        .iter()
        .filter(|p| matches!(p, notify::Problem::Failed { .. }))
        .count();
    if failed > 0 {
        s.push_str(&format!(
            "; {failed} delivery failed (see policywatch feeds)"
        ));
    }
    s
}

/// Where the Atom feeds live, under the state directory.
pub const FEEDS_DIR: &str = "feeds";

/// Writes `bytes` to `path` unless it already holds them: to a temporary file in the same
/// directory, fsync, rename over the old one, fsync the directory. A reader (or the
/// listener) sees the old feed or the new one, never half of one. Returns whether it wrote.
fn write_if_changed(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("feed");
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable only once the directory is; not every filesystem allows it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// Everything about a parsed item that depends on nothing but the item (and the config it
/// was polled under): its feed's name and tags, its language, verdicts, canonical link and
/// signature. Runs in the poll task, on whichever core is free, so the loop thread is left
/// with the writes. The language comes first: folding and `lang:` rules depend on it.
fn prepare(items: Vec<Item>, feed: &Feed, classifier: &Classifier) -> Vec<NewItem> {
    items
        .into_iter()
        .map(|mut item| {
            item.feed_name = feed.name.clone();
            item.feed_tags = feed.tags.clone();
            crate::lang::fill(&mut item);
            let signature = cluster::signature(&item.title, &item.summary);
            NewItem {
                verdicts: classifier.classify(&item),
                canonical_url: item.link.as_deref().and_then(canon::canonical_url),
                signature: (!signature.is_empty()).then(|| signature.to_bytes()),
                item,
            }
        })
        .collect()
}

/// Fetches and parses one feed, and [`prepare`]s its items. Runs in its own task: no store
/// access, no shared state.
async fn poll(
    fetcher: &Fetcher,
    state: &FeedState,
    feed: &Feed,
    classifier: Arc<Classifier>,
) -> PollResult {
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
                let (feed, rules) = (feed.clone(), classifier.clone());
                let parsed = tokio::task::spawn_blocking(move || {
                    feed::parse(&body, content_type.as_deref(), Some(&final_url))
                        .map(|p| (prepare(p.items, &feed, &rules), p.warnings, p.ttl))
                })
                .await;
                match parsed {
                    Ok(Ok((items, warnings, ttl))) => {
                        return PollResult::Items {
                            items,
                            classifier,
                            warnings,
                            ttl,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_wait_for_company_until_the_batch_is_full_or_the_cycle_ends() {
        let t0 = tokio::time::Instant::now();
        let mut w = Waiting::default();
        assert!(!w.store_now(t0, true), "nothing to store");
        assert_eq!(w.apply_at, None);

        // One result while others run: it waits, until APPLY_WAIT after it arrived.
        w.polls.push(("a".into(), PollResult::Gone));
        assert!(!w.store_now(t0, true));
        assert_eq!(w.apply_at, Some(t0 + APPLY_WAIT));
        // Later ones do not push that back.
        w.polls.push(("b".into(), PollResult::Gone));
        assert!(!w.store_now(t0 + Duration::from_millis(5), true));
        assert_eq!(w.apply_at, Some(t0 + APPLY_WAIT));
        assert_eq!(w.room(), APPLY_BATCH - 2);

        // The cycle's last result: at once.
        assert!(w.store_now(t0, false));
        let taken = w.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(
            (w.polls.len(), w.apply_at, w.room()),
            (0, None, APPLY_BATCH)
        );

        // A full batch: at once, however many are still running.
        for k in 0..APPLY_BATCH {
            w.polls.push((k.to_string(), PollResult::Gone));
        }
        assert_eq!(w.room(), 0);
        assert!(w.store_now(t0, true));
    }
}
