//! Poll-cycle benchmark: N generated feeds × M items served from loopback, polled by the real
//! daemon (`run --once` in-process, shipped rules, a SQLite file in a temp dir).
//!
//! Prints, per scenario, wall time, CPU time and peak memory (VmHWM, reset between scenarios)
//! of a cold cycle (everything new: fetch, parse, classify, store) and a warm one (every feed
//! answers 304 to its ETag), and the share of that CPU the daemon's loop thread took (the loop
//! runs on this bench's main thread, inside `block_on`; fetch, parse and per-item work run on
//! the runtime's workers). Then the start-up: 10,000 feeds and 100,000 stored items (all within
//! the cluster window, so all go back into the cluster index), timed from `daemon::run` to the
//! `READY=1` datagram on `$NOTIFY_SOCKET`. Then fetches a 64 MiB body to show the size cap
//! bounds memory.
//!
//! `cargo bench --bench poll` (all scenarios) or `cargo bench --bench poll -- 200x50` (one;
//! also `10000x10`, `startup`, `big`).
//! The server runs in this process but generates bodies on the fly, so it adds little memory.
//! All feeds share one loopback host, so the per-host politeness limits are lifted here (the
//! benchmark measures the pipeline, not the courtesy delay); real configs keep them.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod procfs;

use policywatch::canon::canonical_url;
use policywatch::config;
use policywatch::daemon::{self, ConfigSource, Control, Options};
use policywatch::fetch::{FetchOutcome, FetchRequest, Fetcher, HttpConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Headlines the generator cycles through: some match the default watches, most do not, as
/// in a real technology desk.
const TITLES: &[&str] = &[
    "Commerce adds chipmakers to the Entity List over military end use",
    "Nvidia H20 shipments to China resume under new export licences",
    "Quarterly earnings beat expectations at a regional bank",
    "City council approves new cycling lanes downtown",
    "Smartphone review: a bigger battery and a brighter screen",
    "Huawei ramps Ascend 910C production for domestic AI clusters",
    "Weather service warns of heavy rain over the weekend",
    "Streaming service raises prices in three markets",
    "商务部对镓锗相关物项实施出口管制",
    "Giá vàng trong nước tăng nhẹ phiên sáng nay",
];

fn feed_body(feed: usize, items: usize) -> String {
    let mut s = String::with_capacity(items * 420);
    s.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel>\
         <title>Bench feed {feed}</title><link>https://bench.test/{feed}</link><description>generated</description>"
    ));
    for i in 0..items {
        let t = TITLES[(feed * 7 + i) % TITLES.len()];
        s.push_str(&format!(
            "<item><guid>f{feed}-i{i}</guid><title>{t} ({feed}/{i})</title>\
             <link>https://bench.test/{feed}/{i}</link>\
             <description>Story {i} of feed {feed}. Officials said the measure follows months of review; \
             analysts expect further changes to licensing and supply chains in the coming quarter.</description>\
             <pubDate>Fri, 27 Nov 2026 09:00:00 GMT</pubDate></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// A keep-alive HTTP/1.1 server: `/f/<n>.xml` → feed n with `items` items and ETag "n",
/// answering 304 to a matching If-None-Match; `/big` → `big` bytes of filler.
async fn serve(items: usize, big: usize) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(2048);
                let mut chunk = [0u8; 2048];
                loop {
                    let end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let inm = head
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("if-none-match:"))
                        .map(|l| l[14..].trim().to_string());
                    if path == "/big" {
                        let hdr = format!("HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: {big}\r\n\r\n");
                        if s.write_all(hdr.as_bytes()).await.is_err() {
                            return;
                        }
                        let filler = vec![b' '; 64 * 1024];
                        let mut left = big;
                        while left > 0 {
                            let n = left.min(filler.len());
                            if s.write_all(&filler[..n]).await.is_err() {
                                return;
                            }
                            left -= n;
                        }
                        continue;
                    }
                    let n: usize = path
                        .trim_start_matches("/f/")
                        .trim_end_matches(".xml")
                        .parse()
                        .unwrap_or(0);
                    let etag = format!("\"{n}\"");
                    let resp = if inm.as_deref() == Some(etag.as_str()) {
                        format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nContent-Length: 0\r\n\r\n").into_bytes()
                    } else {
                        let body = feed_body(n, items);
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nETag: {etag}\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body.as_bytes());
                        r
                    };
                    if s.write_all(&resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Resets the peak-RSS counter (Linux ≥ 4.0), so each scenario's peak is its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn write_config(dir: &Path, addr: std::net::SocketAddr, feeds: usize) -> std::path::PathBuf {
    let shipped = include_str!("../config/policywatch.toml");
    let mut doc: toml_edit::DocumentMut = shipped.parse().unwrap();
    let mut arr = toml_edit::ArrayOfTables::new();
    for i in 0..feeds {
        let mut t = toml_edit::Table::new();
        t["url"] = toml_edit::value(format!("http://{addr}/f/{i}.xml"));
        t["name"] = toml_edit::value(format!("Bench {i}"));
        arr.push(t);
    }
    doc["feeds"] = toml_edit::Item::ArrayOfTables(arr);
    doc["daemon"]["max_concurrent_fetches"] = toml_edit::value(32);
    doc["daemon"]["backfill"] = toml_edit::value("36500days");
    doc["http"]["per_host_gap"] = toml_edit::value("0s");
    doc["http"]["per_host_concurrency"] = toml_edit::value(32);
    let p = dir.join("bench.toml");
    std::fs::write(&p, doc.to_string()).unwrap();
    p
}

/// Wall, CPU and loop-thread CPU seconds, peak KiB, and the summary of one `run --once`.
async fn cycle(cfg: &Path, state: &Path, all: bool) -> (f64, f64, f64, u64, daemon::Summary) {
    reset_peak();
    let loaded = config::load(cfg).unwrap();
    let (_tx, rx) = tokio::sync::mpsc::channel::<Control>(1);
    let (w0, c0) = (Instant::now(), procfs::cpu_seconds().unwrap_or(0.0));
    let l0 = procfs::thread_cpu_seconds().unwrap_or(0.0);
    let summary = daemon::run(
        ConfigSource::File(cfg.to_path_buf()),
        loaded,
        Options {
            state_dir: state.to_path_buf(),
            once: true,
            all,
        },
        rx,
    )
    .await
    .unwrap();
    (
        w0.elapsed().as_secs_f64(),
        procfs::cpu_seconds().unwrap_or(0.0) - c0,
        procfs::thread_cpu_seconds().unwrap_or(0.0) - l0,
        procfs::status_kib("VmHWM:").unwrap_or(0),
        summary,
    )
}

async fn scenario(feeds: usize, items: usize) {
    let addr = serve(items, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), addr, feeds);
    let state = dir.path().join("state");
    let share = |l: f64, c: f64| 100.0 * l / c.max(1e-9);
    let (wall, cpu, lp, peak, s) = cycle(&cfg, &state, false).await;
    println!(
        "{feeds:>6} feeds × {items:>3} items  cold: wall {wall:7.3} s  cpu {cpu:7.2} s  loop thread {lp:5.2} s ({:3.0}% of cpu)  peak {:6.1} MiB  ({} polls, {} items, {} matches, {} failures)",
        share(lp, cpu), peak as f64 / 1024.0, s.polls, s.new_items, s.new_matches, s.failures
    );
    let (wall, cpu, lp, peak, s) = cycle(&cfg, &state, true).await;
    println!(
        "{feeds:>6} feeds × {items:>3} items  warm: wall {wall:7.3} s  cpu {cpu:7.2} s  loop thread {lp:5.2} s ({:3.0}% of cpu)  peak {:6.1} MiB  ({} polls, {} new items, {} failures)",
        share(lp, cpu), peak as f64 / 1024.0, s.polls, s.new_items, s.failures
    );
}

/// Start-up with a big state: `feeds` feeds and `items` stored items, all first seen within
/// the last two days (inside the default 3-day cluster window, so every one is restored into
/// the cluster index). Times `config::load` and `daemon::run` up to `READY=1`. The cluster index
/// is rebuilt beside the loop from then on (results wait for it); `cargo bench --bench cluster`
/// times that rebuild ("restore").
async fn startup(feeds: usize, items: usize) {
    use policywatch::item::Item;
    use policywatch::store::{NewItem, Store};
    let addr = serve(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), addr, feeds);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    {
        let loaded = config::load(&cfg).unwrap();
        let mut store = Store::open(&policywatch::store::db_path(&state)).unwrap();
        store.sync_feeds(loaded.feed_rows()).unwrap();
        let per_feed = items / feeds.max(1);
        let now = chrono::Utc::now();
        for (k, f) in loaded.feeds.iter().enumerate() {
            let at = now - chrono::Duration::seconds((k as i64 * 172_800) / feeds as i64);
            let new: Vec<NewItem> = (0..per_feed)
                .map(|i| {
                    let t = TITLES[(k * 7 + i) % TITLES.len()];
                    let item = Item {
                        guid: Some(format!("f{k}-i{i}")),
                        link: Some(format!("https://bench.test/{k}/{i}")),
                        title: format!("{t} ({k}/{i}) rev{}", k * per_feed + i),
                        summary: format!(
                            "Story {i} of feed {k}. Officials said the measure follows months of review."
                        ),
                        ..Item::default()
                    };
                    let sig = policywatch::cluster::signature(&item.title, &item.summary);
                    NewItem {
                        canonical_url: item.link.as_deref().and_then(canonical_url),
                        signature: Some(sig.to_bytes()),
                        verdicts: Vec::new(),
                        item,
                    }
                })
                .collect();
            store
                .insert_items(&f.url, &new, at, None, &mut |id, _, _| id)
                .unwrap();
        }
    }
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &sock_path);
    reset_peak();
    let w0 = Instant::now();
    let loaded = config::load(&cfg).unwrap();
    let loaded_in = w0.elapsed().as_secs_f64();
    let (tx, rx) = tokio::sync::mpsc::channel::<Control>(1);
    let run = tokio::spawn(daemon::run(
        ConfigSource::File(cfg.clone()),
        loaded,
        Options {
            state_dir: state.clone(),
            once: false,
            all: false,
        },
        rx,
    ));
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).unwrap();
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return w0.elapsed().as_secs_f64();
            }
        }
    })
    .await
    .unwrap();
    let peak = procfs::status_kib("VmHWM:").unwrap_or(0);
    std::env::remove_var("NOTIFY_SOCKET");
    let _ = tx.send(Control::Shutdown).await;
    let _ = run.await;
    println!(
        "start-up, {feeds} feeds and {items} stored items in the cluster window: READY after {ready:.3} s \
         (config load {loaded_in:.3} s, daemon::run to READY {:.3} s)  peak {:.1} MiB",
        ready - loaded_in,
        peak as f64 / 1024.0
    );
}

async fn big_body() {
    let size = 64 * 1024 * 1024;
    let addr = serve(1, size).await;
    let http = HttpConfig::default();
    let cap = http.max_body_bytes;
    let fetcher = Arc::new(Fetcher::new(&http).unwrap());
    reset_peak();
    let before = procfs::status_kib("VmRSS:").unwrap_or(0);
    let url = url::Url::parse(&format!("http://{addr}/big")).unwrap();
    let out = fetcher
        .fetch(&FetchRequest {
            url,
            etag: None,
            last_modified: None,
        })
        .await;
    let peak = procfs::status_kib("VmHWM:").unwrap_or(0);
    let what = match out {
        FetchOutcome::Failed { error, .. } => format!("refused: {error}"),
        FetchOutcome::Fetched { body, .. } => format!("fetched {} bytes", body.len()),
        _ => "other".into(),
    };
    println!(
        "64 MiB response, cap {:.1} MiB: RSS before {:.1} MiB, peak during {:.1} MiB (rise {:.1} MiB) — {what}",
        cap as f64 / 1048576.0,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(before)) as f64 / 1024.0
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| f == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("200x50") {
            scenario(200, 50).await;
        }
        if want("10000x10") {
            scenario(10_000, 10).await;
        }
        if want("startup") {
            startup(10_000, 100_000).await;
        }
        if want("big") {
            big_body().await;
        }
    });
}
