//! Figures for the fetch/parse stage (prints, asserts nothing; run with
//! `cargo bench --bench fetch_parse`):
//! - peak memory while a 64 MiB body and a 64 MiB gzip bomb are refused at an 8 MiB cap;
//! - `feed::parse` throughput on a synthetic feed at the body cap.

#[path = "../tests/support/mod.rs"]
mod support;

mod procfs;

use std::time::{Duration, Instant};

use policywatch::feed;
use policywatch::fetch::{FetchOutcome, FetchRequest, Fetcher, HttpConfig};
use support::{FaultServer, Response};

/// Resets the peak counter to the current RSS (Linux: "5" to clear_refs).
fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Each memory case runs in a fresh process: the allocator keeps freed memory, so a case
    // measured after another would look cheaper than it is.
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let case = args.get(i + 1).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(memory_case(&case));
        return;
    }
    println!(
        "memory: cap {} MiB, bodies of {} MiB, one fresh process per case",
        CAP >> 20,
        BIG >> 20
    );
    let exe = std::env::current_exe().expect("own path");
    for case in ["/small", "/huge", "/huge-cl", "/bomb", "/at-cap"] {
        match std::process::Command::new(&exe)
            .args(["--case", case])
            .output()
        {
            Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
            Err(e) => println!("  {case}: cannot run: {e}"),
        }
    }
    throughput();
}

const CAP: u64 = 8 * 1024 * 1024;
const BIG: u64 = 64 * 1024 * 1024;

async fn memory_case(path: &str) {
    let srv = FaultServer::start().await;
    srv.route("/small", Response::ok(vec![b'x'; 4096]));
    srv.route("/huge", Response::huge(BIG).without_content_length());
    srv.route("/huge-cl", Response::huge(BIG));
    srv.route("/at-cap", Response::huge(CAP).without_content_length());
    if path == "/bomb" {
        srv.route("/bomb", Response::gzip_bomb(BIG));
    }
    let cfg = HttpConfig {
        max_body_bytes: CAP,
        per_host_gap: Duration::ZERO,
        ..HttpConfig::default()
    };
    let f = Fetcher::new(&cfg).expect("fetcher");
    // Warm up the client (connection machinery, buffers) so it does not count below.
    let _ = f.fetch(&FetchRequest::new(srv.url("/small"))).await;
    reset_hwm();
    let before = procfs::status_kib("VmHWM:").unwrap_or(0);
    let t = Instant::now();
    let out = f.fetch(&FetchRequest::new(srv.url(path))).await;
    let took = t.elapsed();
    let peak = procfs::status_kib("VmHWM:").unwrap_or(0);
    let what = match &out {
        FetchOutcome::Fetched { body, .. } => format!("fetched {} bytes", body.len()),
        FetchOutcome::Failed { error, .. } => format!("failed: {error}"),
        other => format!("{other:?}"),
    };
    println!(
        "  {path:<8} {what:<48} peak RSS +{:>6} KiB  ({:.0} ms)",
        peak.saturating_sub(before),
        took.as_secs_f64() * 1000.0
    );
}

fn throughput() {
    // A feed at the body cap: 1,800 items with 4 KiB HTML descriptions (~8 MiB).
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>bench</title><link>https://b.test/</link>",
    );
    let para = "<p>The <b>Commerce Department</b> added entities to the list &amp; tightened rules on advanced chips.</p>";
    let mut i = 0;
    while doc.len() < 8 * 1024 * 1024 - 8192 {
        doc.push_str(&format!(
            "<item><title>Story {i} &amp; more</title><link>/s/{i}</link><guid>g{i}</guid><description><![CDATA[{}]]></description><pubDate>Tue, 03 Jun 2025 10:00:00 GMT</pubDate></item>",
            para.repeat(40)
        ));
        i += 1;
    }
    doc.push_str("</channel></rss>");
    let latin_doc = doc.replace("utf-8", "windows-1252");
    let (latin, _, _) = encoding_rs::WINDOWS_1252.encode(&latin_doc);
    for (name, bytes) in [("utf-8", doc.as_bytes()), ("windows-1252", &latin[..])] {
        let runs = 3;
        let t = Instant::now();
        let mut items = 0;
        for _ in 0..runs {
            items = feed::parse(bytes, None, None).expect("parses").items.len();
        }
        let per = t.elapsed().as_secs_f64() / f64::from(runs);
        println!(
            "parse {name:<12}: {:.1} MiB, {i} items in feed, {items} kept, {:.0} ms per parse, {:.1} MiB/s",
            bytes.len() as f64 / 1048576.0,
            per * 1000.0,
            bytes.len() as f64 / 1048576.0 / per
        );
    }
}
