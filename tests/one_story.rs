//! One story, one entry, through the whole daemon: the same story from several feeds is shown
//! once with "also reported by", a delivered story is never delivered again when a feed
//! re-issues it (new GUID, changed title, moved URL), and the same canonical URL from two feeds
//! is one story.

mod common;
mod support;

use common::{run_once, test_config};
use support::{FaultServer, Response};

/// An RSS document of (guid, link, title, description).
fn rss(items: &[(&str, &str, &str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title><link>https://x.test/</link><description>d</description>",
    );
    for (guid, link, title, desc) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>{link}</link><description>{desc}</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

const WIRE: (&str, &str, &str, &str) = (
    "wire-1",
    "https://wire.example.test/tech/h20-licences",
    "US to require export licences for Nvidia H20 and AMD MI308 sales to China",
    "The Commerce Department will require licences for shipments of the H20 and MI308 accelerators to China; Nvidia expects a $5.5 billion charge this quarter.",
);
const REGISTER: (&str, &str, &str, &str) = (
    "reg-77",
    "https://register.example.test/2026/11/27/nvidia_h20_licence/",
    "Washington slaps licence requirement on Nvidia's China-bound H20",
    "Nvidia's H20 accelerators bound for China now need an export licence, and AMD's MI308 is caught too; Nvidia books a $5.5 billion charge.",
);
const OTHER: (&str, &str, &str, &str) = (
    "wire-2",
    "https://wire.example.test/tech/blackwell-cluster",
    "Nvidia ships first Blackwell GPUs to a European AI supercomputer",
    "The cluster of 4,000 B200 accelerators will train open language models for research labs.",
);

#[tokio::test]
async fn the_same_story_from_two_feeds_is_one_entry() {
    let srv = FaultServer::start().await;
    srv.route("/wire.xml", Response::ok(rss(&[WIRE, OTHER])));
    srv.route("/reg.xml", Response::ok(rss(&[REGISTER])));
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(
        dir.path(),
        &[
            ("Wire", srv.url("/wire.xml").to_string()),
            ("The Register", srv.url("/reg.xml").to_string()),
        ],
    );
    let s = run_once(&cfg, &dir.path().join("state"), false).await;
    assert_eq!(s.new_items, 3);
    assert_eq!(s.digests.len(), 1);
    let d = &s.digests[0];
    let told = d.matches("H20").count();
    assert!(d.contains("Also reported by"), "{d}");
    // One entry: only one of the two headlines leads, the other outlet is named.
    let wire_lead = d.contains(WIRE.2);
    let reg_lead = d.contains(REGISTER.2);
    assert!(wire_lead ^ reg_lead, "exactly one headline leads:\n{d}");
    assert!(
        d.contains(if wire_lead { "The Register" } else { "Wire" }),
        "{d}"
    );
    assert!(told >= 1);
    // A different story on the same topic stays its own entry.
    assert!(d.contains(OTHER.2), "{d}");
}

#[tokio::test]
async fn a_reissued_story_is_never_delivered_again() {
    let srv = FaultServer::start().await;
    let reissued = (
        "wire-1-v2",
        "https://wire.example.test/business/h20-licences-updated",
        "UPDATE: US to require export licences for Nvidia H20, AMD MI308 sales to China",
        WIRE.3,
    );
    srv.route_seq(
        "/wire.xml",
        vec![
            Response::ok(rss(&[WIRE])),
            Response::ok(rss(&[reissued, WIRE])),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), &[("Wire", srv.url("/wire.xml").to_string())]);
    let state = dir.path().join("state");
    let first = run_once(&cfg, &state, true).await;
    assert_eq!(first.digests.len(), 1);
    let second = run_once(&cfg, &state, true).await;
    assert_eq!(
        second.new_items, 1,
        "the re-issue is stored (new GUID, new URL, new title)"
    );
    assert!(
        second.digests.is_empty(),
        "but not delivered again: {:?}",
        second.digests
    );
}

#[tokio::test]
async fn the_same_canonical_url_from_two_feeds_is_one_story() {
    let srv = FaultServer::start().await;
    let a = (
        "a-1",
        "https://www.news.example.test/gallium-curbs?utm_source=rss&utm_medium=feed",
        "China tightens gallium and germanium export controls",
        "New licence rules for the metals.",
    );
    let b = (
        "b-9",
        "http://news.example.test/gallium-curbs/#comments",
        "Beijing adds licence rules for gallium exports",
        "Aggregated.",
    );
    srv.route("/a.xml", Response::ok(rss(&[a])));
    srv.route("/b.xml", Response::ok(rss(&[b])));
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(
        dir.path(),
        &[
            ("Desk A", srv.url("/a.xml").to_string()),
            ("Aggregator B", srv.url("/b.xml").to_string()),
        ],
    );
    let s = run_once(&cfg, &dir.path().join("state"), false).await;
    assert_eq!(s.new_items, 2);
    let d = &s.digests[0];
    assert!(d.contains("Also reported by"), "{d}");
    assert!(d.to_lowercase().contains("gallium"), "{d}");
    assert!(
        !(d.contains(a.2) && d.contains(b.2)),
        "one entry, not two:\n{d}"
    );
}
