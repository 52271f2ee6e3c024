//! Operational metrics and the opt-in loopback HTTP listener that serves them.
//!
//! In: counters and gauges updated by `daemon` as it works (polls, failures per feed, items,
//! matches per watch, deliveries, outbox depth, poll durations, readiness). Out: two GET
//! routes on the address in `[daemon] listen` (off by default):
//! - `/healthz` — 200 when the daemon is ready and its last poll is recent, else 503, with a
//!   one-line JSON body (`ready`, `last_poll_age_seconds`, `stale_after_seconds`);
//! - `/metrics` — the Prometheus text exposition format (version 0.0.4).
//!
//! The registry is plain atomics behind an `Arc` (labelled counters in a mutex-guarded map),
//! so updating it from the loop costs nothing measurable and never blocks on a scrape. The
//! server is a deliberately tiny HTTP/1.1 responder written on `tokio::net` — two fixed
//! routes do not justify a server framework — and it is bounded like everything else that
//! reads from a socket: a request head is capped in bytes, reading and writing are capped in
//! time, connections at once are capped in number, and every response closes the connection.
//! It never touches the store: a scrape cannot slow down or block a database write.
//!
//! Idle clients cannot starve `/healthz`: when every slot is taken, a new connection evicts
//! the oldest one that has not sent its request yet (a health checker sends its request as
//! soon as it connects; a client that connects and says nothing is the one to go), and a
//! request head must arrive within [`HEAD_TIMEOUT`]. Routing is one `match` on the path in
//! [`route`]: a new route is one arm.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Upper bounds (seconds) of the poll-duration histogram buckets. A poll is bounded by the
/// HTTP total timeout (60 s by default), so the last finite bucket covers it.
pub const POLL_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Longest request head we read (request line and headers). A scraper sends ~200 bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time allowed to receive the request head (a scraper sends it at once).
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed to write the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Over the cap, the oldest still waiting for its request head is
/// closed to make room; when none is waiting, the new connection is closed unanswered.
const MAX_CONNECTIONS: usize = 16;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A cumulative histogram over [`POLL_BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per finite bucket; the `+Inf` bucket is `count`.
    buckets: [AtomicU64; POLL_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = POLL_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The registry the daemon updates and the listener reads. Share it as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    ready: AtomicBool,
    /// Unix seconds; 0 until set.
    started_at: AtomicI64,
    /// Unix seconds of the last completed poll (any outcome); 0 before the first.
    last_poll_at: AtomicI64,
    /// `/healthz` fails when the last poll (or the start, before any poll) is older.
    stale_after_secs: AtomicU64,
    polls: AtomicU64,
    items: AtomicU64,
    feeds: AtomicU64,
    feeds_failing: AtomicU64,
    outbox_depth: AtomicU64,
    deliveries_sent: AtomicU64,
    deliveries_retrying: AtomicU64,
    deliveries_failed: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Poll failures per feed name (configured names, so the label set is bounded by the config).
    failures_by_feed: Mutex<BTreeMap<String, u64>>,
    /// Newly stored stories that matched, per watch id.
    matches_by_watch: Mutex<BTreeMap<String, u64>>,
    poll_duration: Histogram,
}

/// What `/healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    /// Seconds since the last completed poll; `None` before the first.
    pub last_poll_age: Option<u64>,
    pub stale_after: u64,
    pub healthy: bool,
}

/// A poisoned lock only means a panic elsewhere mid-update of a counter map; the counts are
/// still the best we have.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    pub fn set_started(&self, now_unix: i64) {
        self.started_at.store(now_unix, Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn set_stale_after(&self, d: Duration) {
        self.stale_after_secs.store(d.as_secs(), Ordering::Relaxed);
    }

    /// One poll finished (any outcome) at `now_unix`, having taken `took`.
    pub fn poll_done(&self, now_unix: i64, took: Duration) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.last_poll_at.store(now_unix, Ordering::Relaxed);
        self.poll_duration.observe(took);
    }

    pub fn poll_failed(&self, feed: &str) {
        *lock(&self.failures_by_feed)
            .entry(feed.to_string())
            .or_insert(0) += 1;
    }

    pub fn items_stored(&self, n: usize) {
        self.items.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn matched(&self, watch: &str, n: u64) {
        *lock(&self.matches_by_watch)
            .entry(watch.to_string())
            .or_insert(0) += n;
    }

    pub fn deliveries(&self, sent: usize, retrying: usize, failed: usize) {
        self.deliveries_sent
            .fetch_add(sent as u64, Ordering::Relaxed);
        self.deliveries_retrying
            .fetch_add(retrying as u64, Ordering::Relaxed);
        self.deliveries_failed
            .fetch_add(failed as u64, Ordering::Relaxed);
    }

    pub fn set_feeds(&self, configured: usize, failing: usize) {
        self.feeds.store(configured as u64, Ordering::Relaxed);
        self.feeds_failing.store(failing as u64, Ordering::Relaxed);
    }

    pub fn set_outbox_depth(&self, depth: u64) {
        self.outbox_depth.store(depth, Ordering::Relaxed);
    }

    pub fn reloaded(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Healthy = ready, and the last poll (or, before any, the start) is at most
    /// `stale_after` old. With no stale bound set, only readiness counts.
    pub fn health(&self, now_unix: i64) -> Health {
        let ready = self.ready.load(Ordering::Relaxed);
        let last = self.last_poll_at.load(Ordering::Relaxed);
        let started = self.started_at.load(Ordering::Relaxed);
        let stale_after = self.stale_after_secs.load(Ordering::Relaxed);
        let age = |t: i64| u64::try_from(now_unix.saturating_sub(t)).unwrap_or(0);
        let last_poll_age = (last > 0).then(|| age(last));
        let reference_age = last_poll_age.unwrap_or_else(|| age(started));
        let fresh = stale_after == 0 || reference_age <= stale_after;
        Health {
            ready,
            last_poll_age,
            stale_after,
            healthy: ready && fresh,
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self, now_unix: i64) -> String {
        let mut out = String::with_capacity(4096);
        let h = self.health(now_unix);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "policywatch_ready",
            "1 once the config is loaded and the database open; 0 while stopping.",
            u64::from(h.ready),
        );
        let last = self.last_poll_at.load(Ordering::Relaxed);
        header(
            &mut out,
            "policywatch_last_poll_timestamp_seconds",
            "gauge",
            "Unix time of the last completed poll (0: none yet).",
        );
        let _ = writeln!(out, "policywatch_last_poll_timestamp_seconds {last}");
        gauge(
            &mut out,
            "policywatch_feeds",
            "Configured feeds.",
            load(&self.feeds),
        );
        gauge(
            &mut out,
            "policywatch_feeds_failing",
            "Configured feeds whose last poll failed, or that are gone.",
            load(&self.feeds_failing),
        );
        gauge(
            &mut out,
            "policywatch_outbox_depth",
            "Deliveries waiting to be sent.",
            load(&self.outbox_depth),
        );
        counter(
            &mut out,
            "policywatch_polls_total",
            "Feed polls completed, whatever their outcome.",
            load(&self.polls),
        );
        header(
            &mut out,
            "policywatch_poll_failures_total",
            "counter",
            "Failed feed polls, by feed name.",
        );
        for (feed, n) in lock(&self.failures_by_feed).iter() {
            let _ = writeln!(
                out,
                "policywatch_poll_failures_total{{feed=\"{}\"}} {n}",
                escape_label(feed)
            );
        }
        counter(
            &mut out,
            "policywatch_items_total",
            "Stories stored (new to their feed).",
            load(&self.items),
        );
        header(
            &mut out,
            "policywatch_matches_total",
            "counter",
            "Newly stored stories that matched a watch, by watch id (backfill included).",
        );
        for (watch, n) in lock(&self.matches_by_watch).iter() {
            let _ = writeln!(
                out,
                "policywatch_matches_total{{watch=\"{}\"}} {n}",
                escape_label(watch)
            );
        }
        header(
            &mut out,
            "policywatch_deliveries_total",
            "counter",
            "Delivery attempts (digests and alerts), by result.",
        );
        for (result, a) in [
            ("sent", &self.deliveries_sent),
            ("retrying", &self.deliveries_retrying),
            ("failed", &self.deliveries_failed),
        ] {
            let _ = writeln!(
                out,
                "policywatch_deliveries_total{{result=\"{result}\"}} {}",
                load(a)
            );
        }
        header(
            &mut out,
            "policywatch_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP), by result.",
        );
        let _ = writeln!(
            out,
            "policywatch_reloads_total{{result=\"ok\"}} {}",
            load(&self.reloads_ok)
        );
        let _ = writeln!(
            out,
            "policywatch_reloads_total{{result=\"failed\"}} {}",
            load(&self.reloads_failed)
        );
        header(
            &mut out,
            "policywatch_poll_duration_seconds",
            "histogram",
            "Time from starting a feed's fetch to having its items parsed.",
        );
        let hist = &self.poll_duration;
        // Read the count first: concurrent observations may make the buckets run ahead of
        // it, never behind, and +Inf is clamped so the series stays monotonic.
        let count = load(&hist.count);
        let mut cumulative = 0u64;
        for (le, b) in POLL_BUCKETS.iter().zip(&hist.buckets) {
            cumulative += load(b);
            let _ = writeln!(
                out,
                "policywatch_poll_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "policywatch_poll_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            count.max(cumulative)
        );
        let sum = load(&hist.sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "policywatch_poll_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "policywatch_poll_duration_seconds_count {}",
            count.max(cumulative)
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

/// Escapes a label value for the text format: backslash, double quote and line feed are the
/// three characters the format gives a meaning to inside `"…"`.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The running listener. Dropping it stops accepting (open connections finish on their own,
/// bounded by [`IO_TIMEOUT`]).
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Binds `addr` and starts serving `metrics`. Fails (so start-up fails) when the address
    /// cannot be bound: a listener the user asked for must not be silently missing.
    pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Server, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let waiting = Arc::new(Waiting::default());
        let task = tokio::spawn(async move {
            loop {
                let sock = match listener.accept().await {
                    Ok((sock, _)) => sock,
                    Err(e) => {
                        // EMFILE and friends: back off a little rather than spin.
                        tracing::debug!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // Full: make room by closing the oldest connection still silent. Its task
                    // drops its slot as soon as it sees the signal, so the wait is short; it
                    // is bounded anyway, and nothing waits when nobody is silent.
                    Err(_) if waiting.evict_oldest() => {
                        match tokio::time::timeout(IO_TIMEOUT, slots.clone().acquire_owned()).await
                        {
                            Ok(Ok(p)) => p,
                            _ => continue,
                        }
                    }
                    Err(_) => {
                        drop(sock); // every slot is answering: close unanswered
                        continue;
                    }
                };
                let metrics = metrics.clone();
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    serve(sock, &metrics, &waiting).await;
                    drop(permit);
                });
            }
        });
        Ok(Server { addr, task })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A connection's id and the signal that closes it.
type Evictable = (u64, tokio::sync::oneshot::Sender<()>);

/// Connections still waiting for their request head, oldest first.
#[derive(Default)]
struct Waiting {
    /// The last id handed out, and the waiting connections.
    queue: Mutex<(u64, VecDeque<Evictable>)>,
}

impl Waiting {
    /// Registers a connection; returns its id and the signal to watch.
    fn enter(&self) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut q = lock(&self.queue);
        q.0 += 1;
        let id = q.0;
        q.1.push_back((id, tx));
        (id, rx)
    }

    /// The connection has its head (or is gone): no longer evictable.
    fn leave(&self, id: u64) {
        lock(&self.queue).1.retain(|(i, _)| *i != id);
    }

    /// Signals the oldest waiting connection to close; false when none waits.
    fn evict_oldest(&self) -> bool {
        let oldest = lock(&self.queue).1.pop_front();
        oldest.is_some_and(|(_, tx)| tx.send(()).is_ok())
    }
}

/// A response: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Routes one request head (the bytes before the blank line). Pure, so tested directly.
pub fn route(head: &[u8], metrics: &Metrics, now_unix: i64) -> Reply {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return plain(400, "bad request\n");
    }
    if method != "GET" && method != "HEAD" {
        return plain(405, "only GET\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/healthz" => {
            let h = metrics.health(now_unix);
            let body = serde_json::json!({
                "status": if h.healthy { "ok" } else if h.ready { "stale" } else { "not ready" },
                "ready": h.ready,
                "last_poll_age_seconds": h.last_poll_age,
                "stale_after_seconds": h.stale_after,
            });
            Reply {
                status: if h.healthy { 200 } else { 503 },
                content_type: "application/json",
                body: format!("{body}\n"),
            }
        }
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics.render(now_unix),
        },
        _ => plain(404, "not found: try /metrics or /healthz\n"),
    }
}

fn plain(status: u16, body: &str) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_string(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads the head (bounded in size and time, evictable while it waits), answers, closes.
async fn serve(mut sock: TcpStream, metrics: &Metrics, waiting: &Waiting) {
    let (id, evicted) = waiting.enter();
    let head = tokio::select! {
        head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)) => head,
        // Evicted to make room for a newer connection.
        _ = evicted => {
            return;
        }
    };
    waiting.leave(id);
    let reply = match head {
        Ok(Ok(Some(ref head))) => route(head, metrics, chrono::Utc::now().timestamp()),
        Ok(Ok(None)) => plain(431, "request too large\n"),
        // Timed out or the peer went away: nothing worth answering.
        Ok(Err(_)) | Err(_) => return,
    };
    let is_head = matches!(head, Ok(Ok(Some(ref h))) if h.starts_with(b"HEAD "));
    let oversized = reply.status == 431;
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    if !is_head {
        bytes.extend_from_slice(reply.body.as_bytes());
    }
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        sock.write_all(&bytes).await?;
        sock.shutdown().await
    })
    .await;
    if oversized {
        // Closing with unread bytes makes the kernel send a reset, which can destroy the
        // answer before the client reads it: discard what is still coming, within bounds.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut tmp = [0u8; 4096];
            let mut drained = 0usize;
            while drained < 16 * MAX_REQUEST_BYTES {
                match sock.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}

/// The request head up to the blank line; `None` when it exceeds [`MAX_REQUEST_BYTES`].
async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 1024];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(p);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("中文 feed"), "中文 feed");
    }

    #[test]
    fn exposition_has_every_family_and_escaped_labels() {
        let m = Metrics::default();
        m.set_ready(true);
        m.poll_done(NOW, Duration::from_millis(70));
        m.poll_done(NOW, Duration::from_secs(3));
        m.poll_done(NOW, Duration::from_secs(500));
        m.poll_failed("Evil \"feed\"\nname");
        m.poll_failed("Evil \"feed\"\nname");
        m.matched("ai-chips", 3);
        m.items_stored(7);
        m.deliveries(1, 2, 0);
        m.set_outbox_depth(2);
        let text = m.render(NOW);
        assert!(text.contains("policywatch_polls_total 3\n"), "{text}");
        assert!(
            text.contains("policywatch_poll_failures_total{feed=\"Evil \\\"feed\\\"\\nname\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("policywatch_matches_total{watch=\"ai-chips\"} 3\n"));
        assert!(text.contains("policywatch_items_total 7\n"));
        assert!(text.contains("policywatch_deliveries_total{result=\"retrying\"} 2\n"));
        assert!(text.contains("policywatch_outbox_depth 2\n"));
        assert!(text.contains("policywatch_ready 1\n"));
        // Buckets are cumulative; the 500 s poll only shows in +Inf.
        assert!(text.contains("policywatch_poll_duration_seconds_bucket{le=\"0.05\"} 0\n"));
        assert!(text.contains("policywatch_poll_duration_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("policywatch_poll_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("policywatch_poll_duration_seconds_bucket{le=\"60\"} 2\n"));
        assert!(text.contains("policywatch_poll_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("policywatch_poll_duration_seconds_count 3\n"));
        assert!(
            text.contains("policywatch_poll_duration_seconds_sum 503.07\n"),
            "{text}"
        );
        // Every sample line belongs to a family announced by a TYPE line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no TYPE for {line}"
            );
        }
    }

    #[test]
    fn health_needs_ready_and_a_recent_poll() {
        let m = Metrics::default();
        m.set_started(NOW - 10);
        m.set_stale_after(Duration::from_secs(600));
        assert!(!m.health(NOW).healthy, "not ready yet");
        m.set_ready(true);
        let h = m.health(NOW);
        assert!(h.healthy, "fresh start, no poll yet, within the bound");
        assert_eq!(h.last_poll_age, None);
        assert!(
            !m.health(NOW + 700).healthy,
            "no poll for longer than the bound"
        );
        m.poll_done(NOW + 650, Duration::from_secs(1));
        let h = m.health(NOW + 700);
        assert!(h.healthy);
        assert_eq!(h.last_poll_age, Some(50));
        m.set_ready(false);
        assert!(!m.health(NOW + 700).healthy, "stopping");
    }

    #[test]
    fn routes() {
        let m = Metrics::default();
        m.set_ready(true);
        let r = route(b"GET /healthz HTTP/1.1\r\nHost: x", &m, NOW);
        assert_eq!(r.status, 200);
        assert!(r.body.contains("\"ready\":true"), "{}", r.body);
        m.set_ready(false);
        assert_eq!(route(b"GET /healthz HTTP/1.1", &m, NOW).status, 503);
        let r = route(b"GET /metrics?x=1 HTTP/1.0", &m, NOW);
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/plain; version=0.0.4"));
        assert_eq!(route(b"POST /metrics HTTP/1.1", &m, NOW).status, 405);
        assert_eq!(route(b"GET /other HTTP/1.1", &m, NOW).status, 404);
        assert_eq!(route(b"garbage", &m, NOW).status, 400);
        assert_eq!(route(b"GET /metrics SPDY/3", &m, NOW).status, 400);
    }

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_over_loopback_and_refuses_oversized_requests() {
        let m = Metrics::new();
        m.set_ready(true);
        m.items_stored(4);
        let srv = Server::start("127.0.0.1:0".parse().expect("addr"), m.clone())
            .await
            .expect("bind loopback");
        let addr = srv.local_addr();
        let resp = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("policywatch_items_total 4\n"));
        let head = get(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat(b'a').take(MAX_REQUEST_BYTES * 2));
        big.extend_from_slice(b"\r\n\r\n");
        let resp = get(addr, &big).await;
        assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
    }

    /// Issue 17: eight idle local connections made `/healthz` unanswerable. Twice the cap of
    /// clients that connect and say nothing, then a health check: it is answered (the
    /// oldest silent clients were closed to make room). The deadline is a hang guard only.
    #[tokio::test]
    async fn idle_connections_cannot_starve_healthz() {
        let m = Metrics::new();
        let srv = Server::start("127.0.0.1:0".parse().expect("addr"), m)
            .await
            .expect("bind loopback");
        let addr = srv.local_addr();
        let mut idle = Vec::new();
        for _ in 0..2 * MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            get(addr, b"GET /healthz HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("/healthz answered while idle clients hold connections");
        assert!(
            resp.starts_with("HTTP/1.1 503 "),
            "not ready yet, but answered: {resp}"
        );
        // The first silent clients were the ones closed.
        let mut first = idle.remove(0);
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(20), first.read(&mut buf))
            .await
            .expect("the oldest idle client is closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}
