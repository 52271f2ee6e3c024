//! The trunk end to end: feeds served by a real loopback HTTP server → fetch → parse → SQLite
//! (a real file) → classify with the shipped rules → the digest in the log. Runs the daemon
//! in-process with `once`, as `policywatch run --once` does, several times over one state
//! directory to check that restarts and re-polls never report a story twice.

mod common;
mod support;

use common::{rss, run_once, test_config};
use policywatch::store::Store;
use support::{FaultServer, Response};

const EN: &str = include_str!("fixtures/en-tech.xml");
const ZH: &str = include_str!("fixtures/zh-news.atom");
const VI: &str = include_str!("fixtures/vi-news.xml");

#[tokio::test]
async fn stories_flow_from_feeds_to_the_digest_once() {
    let srv = FaultServer::start().await;
    srv.route(
        "/en.xml",
        Response::ok(EN).content_type("application/rss+xml"),
    );
    srv.route(
        "/zh.atom",
        Response::ok(ZH).content_type("application/atom+xml"),
    );
    srv.route(
        "/vi.xml",
        Response::ok(VI).content_type("application/rss+xml; charset=utf-8"),
    );
    srv.route(
        "/broken.xml",
        // Nothing to recover: a CDATA section that never closes (a tag left open is
        // recovered, see `feed::recover`).
        Response::ok("<rss><channel><item><title><![CDATA[unclosed").content_type("text/xml"),
    );
    srv.route(
        "/page.html",
        Response::ok("<html><head><title>No feed here</title></head><body>hi</body></html>")
            .content_type("text/html"),
    );
    // A closed port: bind, learn the port, drop the listener.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(
        dir.path(),
        &[
            ("Unreachable", format!("http://127.0.0.1:{closed}/feed.xml")),
            ("Broken XML", srv.url("/broken.xml").to_string()),
            ("HTML page", srv.url("/page.html").to_string()),
            ("English desk", srv.url("/en.xml").to_string()),
            ("Chinese desk", srv.url("/zh.atom").to_string()),
            ("Vietnamese desk", srv.url("/vi.xml").to_string()),
        ],
    );
    let state = dir.path().join("state");

    let first = run_once(&cfg, &state, false).await;
    assert_eq!(
        first.polls, 6,
        "every feed is polled, failing ones included"
    );
    assert_eq!(
        first.failures, 3,
        "unreachable, invalid XML and an HTML page fail alone"
    );
    assert_eq!(first.new_items, 5 + 3 + 2);
    assert_eq!(first.digests.len(), 1, "one digest at the end of --once");
    let digest = &first.digests[0];
    for wanted in [
        "Entity List",
        "Nvidia readies",
        "镓",
        "昇腾",
        "lệnh cấm xuất khẩu chip AI",
    ] {
        assert!(
            digest.contains(wanted),
            "digest lacks {wanted:?}:\n{digest}"
        );
    }
    for unwanted in ["Potato chip", "oil sanctions", "bakery", "手机", "cà phê"] {
        assert!(
            !digest.contains(unwanted),
            "digest has {unwanted:?}:\n{digest}"
        );
    }
    // Each story once in the message.
    assert_eq!(
        digest.matches("lệnh cấm xuất khẩu chip AI").count(),
        1,
        "{digest}"
    );

    // Failures are recorded per feed with the error, and the rest were stored.
    let store = Store::open(&state.join("policywatch.db")).unwrap();
    assert_eq!(store.item_count().unwrap(), 10);
    let feeds = store.feeds().unwrap();
    for name in ["Unreachable", "Broken XML", "HTML page"] {
        let f = feeds.iter().find(|f| f.name == name).unwrap();
        assert_eq!(f.consecutive_failures, 1, "{name}");
        assert!(f.last_error.is_some(), "{name}");
        assert!(f.next_poll_at > chrono::Utc::now(), "{name} backs off");
    }
    drop(store);

    // A second poll (forced: the feeds are not due yet) and a restart report nothing new.
    let second = run_once(&cfg, &state, true).await;
    assert_eq!(second.polls, 6);
    assert_eq!(second.new_items, 0);
    assert!(
        second.digests.is_empty(),
        "nothing new: {:?}",
        second.digests
    );
    let third = run_once(&cfg, &state, false).await;
    assert_eq!(third.polls, 0, "no feed is due right after a poll");
    assert!(third.digests.is_empty());
    assert_eq!(
        Store::open(&state.join("policywatch.db"))
            .unwrap()
            .item_count()
            .unwrap(),
        10
    );
}

#[tokio::test]
async fn a_dropped_and_relisted_item_is_not_new() {
    let srv = FaultServer::start().await;
    let a = ("a", "Entity List grows by 12 firms", "BIS export controls");
    let b = ("b", "Nvidia H20 export licence news", "AI chips");
    let c = ("c", "Gallium export controls tightened", "export controls");
    srv.route_seq(
        "/f.xml",
        vec![
            Response::ok(rss(&[a, b])),
            Response::ok(rss(&[b, c])),
            Response::ok(rss(&[a, b, c])),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), &[("F", srv.url("/f.xml").to_string())]);
    let state = dir.path().join("state");
    let s1 = run_once(&cfg, &state, true).await;
    assert_eq!(s1.new_items, 2);
    let s2 = run_once(&cfg, &state, true).await;
    assert_eq!(s2.new_items, 1, "only c is new");
    assert_eq!(s2.digests.len(), 1);
    assert!(s2.digests[0].contains("Gallium"));
    assert!(!s2.digests[0].contains("Entity List grows"));
    let s3 = run_once(&cfg, &state, true).await;
    assert_eq!(s3.new_items, 0, "a came back, but it is not new");
    assert!(s3.digests.is_empty());
}
