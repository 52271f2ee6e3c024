//! The Atom feed of matches end to end: real feeds on a loopback server, `run --once` over a
//! real state directory (each run is a fresh start), the feed file read back by feed-rs, and
//! the loopback listener answering conditional GETs.

mod common;
mod support;

use std::path::Path;

use policywatch::metrics::{Metrics, Server};
use support::{FaultServer, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ENTITY: &str = "Commerce adds 12 Chinese firms to the Entity List over AI chip smuggling";
const H20: &str = "Nvidia H20 sales to China halted under a new export license rule";
const GALLIUM: &str = "China tightens export controls on gallium and germanium";

fn config(dir: &Path, feed: String) -> std::path::PathBuf {
    let mut doc = common::test_config_doc(&[("Wire", feed)]);
    doc["digests"][0]["atom"] = toml_edit::value(true);
    let path = dir.join("policywatch.toml");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

fn read_feed(state: &Path) -> feed_rs::model::Feed {
    let bytes = std::fs::read(state.join("feeds/daily.atom")).expect("the feed file exists");
    feed_rs::parser::parse(&bytes[..]).expect("feed-rs reads the feed")
}

fn ids_by_title(f: &feed_rs::model::Feed) -> Vec<(String, String)> {
    f.entries
        .iter()
        .map(|e| (e.title.as_ref().unwrap().content.clone(), e.id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_keeps_its_entry_ids_across_restarts_and_answers_304_when_unchanged() {
    let srv = FaultServer::start().await;
    let first = common::rss(&[
        ("pw-1", ENTITY, "The Bureau of Industry and Security acted."),
        ("pw-2", H20, "Nvidia said a licence is now required."),
        ("pw-3", "A bakery wins a prize", "Bread."),
    ]);
    srv.route("/a.xml", Response::ok(first));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), srv.url("/a.xml").to_string());

    common::run_once(&cfg, &state, false).await;
    let f = read_feed(&state);
    assert_eq!(f.feed_type, feed_rs::model::FeedType::Atom);
    assert_eq!(f.id, "urn:policywatch:feed:daily");
    let before = ids_by_title(&f);
    let titles: Vec<&str> = before.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        titles.contains(&ENTITY) && titles.contains(&H20),
        "{titles:?}"
    );
    assert!(
        !titles.contains(&"A bakery wins a prize"),
        "only matches: {titles:?}"
    );
    for e in &f.entries {
        assert!(e.id.starts_with("urn:policywatch:story:"), "{}", e.id);
        assert!(
            e.links[0].href.starts_with("https://x.test/pw-"),
            "{:?}",
            e.links
        );
        assert!(!e.categories.is_empty(), "categories are the watches");
        assert!(e.updated.is_some());
    }
    let files: Vec<_> = std::fs::read_dir(state.join("feeds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["daily.atom"], "no temporary file is left behind");

    // Restart with a new story, and the first one re-issued under a new GUID (same link).
    let second = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
         <link>https://x.test/</link><description>d</description>\
         <item><guid>pw-1-updated</guid><title>{ENTITY}</title><link>https://x.test/pw-1</link>\
         <description>Updated.</description></item>\
         <item><guid>pw-4</guid><title>{GALLIUM}</title><link>https://x.test/pw-4</link>\
         <description>New licence rules.</description></item>\
         </channel></rss>"
    );
    srv.route("/a.xml", Response::ok(second));
    common::run_once(&cfg, &state, true).await;
    let after = ids_by_title(&read_feed(&state));
    for pair in &before {
        assert_eq!(
            after.iter().filter(|p| p.0 == pair.0).collect::<Vec<_>>(),
            vec![pair],
            "each story once, under its old id: {after:?}"
        );
    }
    assert!(after.iter().any(|(t, _)| t == GALLIUM), "{after:?}");
    assert_eq!(after.len(), before.len() + 1, "{after:?}");

    // The listener serves it with validators; an unchanged feed is a 304.
    let srv_l = Server::start_with_feeds(
        "127.0.0.1:0".parse().unwrap(),
        Metrics::new(),
        Some(state.join("feeds")),
    )
    .await
    .unwrap();
    let addr = srv_l.local_addr().to_string();
    let (status, head, body) = get(&addr, "/feeds/daily.atom", "").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: application/atom+xml"),
        "{head}"
    );
    assert_eq!(
        feed_rs::parser::parse(body.as_bytes())
            .unwrap()
            .entries
            .len(),
        after.len()
    );
    let etag = header(&head, "ETag").expect("ETag");
    let last_modified = header(&head, "Last-Modified").expect("Last-Modified");

    // A run that stores nothing new leaves the file alone.
    common::run_once(&cfg, &state, true).await;
    let (status, _, body) = get(
        &addr,
        "/feeds/daily.atom",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!((status, body.as_str()), (304, ""));
    let (status, _, _) = get(
        &addr,
        "/feeds/daily.atom",
        &format!("If-Modified-Since: {last_modified}\r\n"),
    )
    .await;
    assert_eq!(status, 304);
    let (status, ..) = get(&addr, "/feeds/daily.atom", "If-None-Match: \"stale\"\r\n").await;
    assert_eq!(status, 200);
    let (status, ..) = get(&addr, "/feeds/weekly.atom", "").await;
    assert_eq!(status, 404);
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// One GET with extra header lines; (status, head, body).
async fn get(addr: &str, path: &str, extra: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n").as_bytes())
        .await
        .expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(common::DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("an answer within the deadline")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
