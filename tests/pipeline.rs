//! The trunk end to end: feeds served by a real loopback HTTP server → fetch → parse → SQLite
//! (a real file) → classify with the shipped rules → the digest in the log. Runs the daemon
//! in-process with `once`, as `policywatch run --once` does, several times over one state
//! directory to check that restarts and re-polls never report a story twice.

mod support;

use std::path::{Path, PathBuf};

use policywatch::config;
use policywatch::daemon::{self, ConfigSource, Control, Options, Summary};
use policywatch::store::Store;
use support::{FaultServer, Response};

const EN: &str = include_str!("fixtures/en-tech.xml");
const ZH: &str = include_str!("fixtures/zh-news.atom");
const VI: &str = include_str!("fixtures/vi-news.xml");

/// The shipped config with its feeds and digests replaced by ones pointing at `feeds`, keeping
/// the shipped watch rules (so this also tests the defaults).
fn test_config(dir: &Path, feeds: &[(&str, String)]) -> PathBuf {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policywatch.toml"
    ))
    .unwrap();
    let mut doc: toml_edit::DocumentMut = shipped.parse().unwrap();
    let mut arr = toml_edit::ArrayOfTables::new();
    for (name, url) in feeds {
        let mut t = toml_edit::Table::new();
        t["url"] = toml_edit::value(url.as_str());
        t["name"] = toml_edit::value(*name);
        arr.push(t);
    }
    doc["feeds"] = toml_edit::Item::ArrayOfTables(arr);
    let mut digests = toml_edit::ArrayOfTables::new();
    let mut d = toml_edit::Table::new();
    d["id"] = toml_edit::value("daily");
    d["schedule"] = toml_edit::value("daily 07:30");
    d["via"] = toml_edit::value("log");
    digests.push(d);
    doc["digests"] = toml_edit::Item::ArrayOfTables(digests);
    // The fixtures carry fixed dates: report them whenever the test runs.
    doc["daemon"]["backfill"] = toml_edit::value("36500days");
    // Keep the test fast when a fault makes a feed hang.
    doc["http"]["first_byte_timeout"] = toml_edit::value("2s");
    doc["http"]["total_timeout"] = toml_edit::value("4s");
    doc["http"]["per_host_gap"] = toml_edit::value("0s");
    doc["http"]["per_host_concurrency"] = toml_edit::value(8);
    let path = dir.join("policywatch.toml");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

async fn run_once(cfg: &Path, state: &Path, all: bool) -> Summary {
    let loaded = config::load(cfg).unwrap_or_else(|e| panic!("test config must load:\n{e}"));
    let (_tx, rx) = tokio::sync::mpsc::channel::<Control>(1);
    daemon::run(
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
    .unwrap()
}

fn rss(items: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title><link>https://x.test/</link><description>d</description>",
    );
    for (guid, title, desc) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://x.test/{guid}</link><description>{desc}</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

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
        Response::ok("<rss><channel><item><title>unclosed").content_type("text/xml"),
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
