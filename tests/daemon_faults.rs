//! Server faults seen through the whole daemon: for each, what was stored and when the feed
//! will next be polled (read from the persisted schedule, not from wall-clock waits).

mod common;
mod support;

use chrono::{Duration, Utc};
use common::{rss, rss_with, run_once, test_config};
use policywatch::store::{FeedState, Store};
use support::{FaultServer, Response};

fn feed(state: &std::path::Path, name: &str) -> FeedState {
    let store = Store::open(&state.join("policywatch.db")).unwrap();
    store
        .feeds()
        .unwrap()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
}

const ITEM: (&str, &str, &str) = ("g1", "BIS adds firms to the Entity List", "export controls");

#[tokio::test]
async fn etag_then_304_costs_no_parse_and_keeps_the_schedule() {
    let srv = FaultServer::start().await;
    srv.route("/f.xml", Response::ok(rss(&[ITEM])).etag("\"v1\""));
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), &[("F", srv.url("/f.xml").to_string())]);
    let state = dir.path().join("state");
    assert_eq!(run_once(&cfg, &state, true).await.new_items, 1);
    let before = Utc::now();
    let s = run_once(&cfg, &state, true).await;
    assert_eq!((s.polls, s.new_items, s.failures), (1, 0, 0));
    let reqs = srv.requests_to("/f.xml");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("if-none-match"), Some("\"v1\""));
    let f = feed(&state, "F");
    assert_eq!(f.etag.as_deref(), Some("\"v1\""));
    assert_eq!(f.consecutive_failures, 0);
    // Default interval 30 min, plus at most a few percent of jitter.
    assert!(f.next_poll_at >= before + Duration::minutes(30) - Duration::seconds(2));
    assert!(f.next_poll_at <= Utc::now() + Duration::minutes(33));
}

#[tokio::test]
async fn permanent_redirects_are_remembered_temporary_ones_are_not() {
    let srv = FaultServer::start().await;
    srv.route("/old.xml", Response::redirect(301, "/new.xml"));
    srv.route("/new.xml", Response::ok(rss(&[ITEM])));
    srv.route("/tmp.xml", Response::redirect(302, "/other.xml"));
    srv.route(
        "/other.xml",
        Response::ok(rss(&[("g2", "Gallium export controls", "x")])),
    );
    srv.route("/p.xml", Response::redirect(308, "/p2.xml"));
    srv.route(
        "/p2.xml",
        Response::ok(rss(&[("g3", "Nvidia H20 export licence", "x")])),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(
        dir.path(),
        &[
            ("Moved", srv.url("/old.xml").to_string()),
            ("Temp", srv.url("/tmp.xml").to_string()),
            ("Perm308", srv.url("/p.xml").to_string()),
        ],
    );
    let state = dir.path().join("state");
    let s = run_once(&cfg, &state, true).await;
    assert_eq!((s.new_items, s.failures), (3, 0));
    let moved = feed(&state, "Moved");
    assert_eq!(
        moved.effective_url.as_deref(),
        Some(srv.url("/new.xml").as_str())
    );
    assert_eq!(
        moved.moved_to.as_deref(),
        Some(srv.url("/new.xml").as_str())
    );
    assert_eq!(
        feed(&state, "Perm308").effective_url.as_deref(),
        Some(srv.url("/p2.xml").as_str())
    );
    assert_eq!(feed(&state, "Temp").effective_url, None);

    run_once(&cfg, &state, true).await;
    assert_eq!(
        srv.requests_to("/old.xml").len(),
        1,
        "the old URL is not asked again"
    );
    assert_eq!(srv.requests_to("/new.xml").len(), 2);
    assert_eq!(
        srv.requests_to("/tmp.xml").len(),
        2,
        "a temporary redirect is followed each time"
    );
}

#[tokio::test]
async fn gone_feeds_stop_and_retry_after_is_honoured_even_with_all() {
    let srv = FaultServer::start().await;
    srv.route("/gone.xml", Response::status(410));
    srv.route(
        "/busy.xml",
        Response::status(429).header("Retry-After", "3600"),
    );
    let date = httpdate::fmt_http_date(
        std::time::SystemTime::now() + std::time::Duration::from_secs(7200),
    );
    srv.route(
        "/maint.xml",
        Response::status(503).header("Retry-After", &date),
    );
    srv.route("/err.xml", Response::status(500));
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(
        dir.path(),
        &[
            ("Gone", srv.url("/gone.xml").to_string()),
            ("Busy", srv.url("/busy.xml").to_string()),
            ("Maint", srv.url("/maint.xml").to_string()),
            ("Err", srv.url("/err.xml").to_string()),
        ],
    );
    let state = dir.path().join("state");
    let t0 = Utc::now();
    let s = run_once(&cfg, &state, true).await;
    assert_eq!(s.failures, 3, "410 is not a failure to retry; the rest are");
    assert!(feed(&state, "Gone").gone_at.is_some());

    let busy = feed(&state, "Busy");
    let rnb = busy
        .retry_not_before
        .expect("Retry-After in seconds is stored");
    assert!(rnb >= t0 + Duration::seconds(3590) && rnb <= Utc::now() + Duration::seconds(3610));
    assert!(busy.next_poll_at >= rnb);
    let maint = feed(&state, "Maint");
    let rnb = maint
        .retry_not_before
        .expect("Retry-After as a date is stored");
    assert!(rnb >= t0 + Duration::seconds(7100) && rnb <= Utc::now() + Duration::seconds(7300));

    let err = feed(&state, "Err");
    assert_eq!(err.consecutive_failures, 1);
    assert!(
        err.last_error.as_deref().unwrap().contains("500"),
        "{:?}",
        err.last_error
    );
    assert!(
        err.next_poll_at > t0 && err.next_poll_at <= Utc::now() + Duration::minutes(2),
        "first backoff is short"
    );

    // --all polls every feed whatever its backoff, but never a gone one or before Retry-After.
    let s = run_once(&cfg, &state, true).await;
    assert_eq!(s.polls, 1, "only Err is polled again");
    assert_eq!(srv.requests_to("/gone.xml").len(), 1);
    assert_eq!(srv.requests_to("/busy.xml").len(), 1);
    assert_eq!(srv.requests_to("/maint.xml").len(), 1);
    assert_eq!(feed(&state, "Err").consecutive_failures, 2);
}

#[tokio::test]
async fn an_html_page_leads_to_its_feed_and_ttl_stretches_the_interval() {
    let srv = FaultServer::start().await;
    srv.route(
        "/news",
        Response::ok(
            "<html><head><title>News</title>\
             <link rel=\"alternate\" type=\"application/rss+xml\" href=\"/real.xml\"></head><body></body></html>",
        )
        .content_type("text/html; charset=utf-8"),
    );
    srv.route(
        "/real.xml",
        Response::ok(rss_with(&[ITEM], "<ttl>180</ttl>")),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), &[("Page", srv.url("/news").to_string())]);
    let state = dir.path().join("state");
    let t0 = Utc::now();
    let s = run_once(&cfg, &state, false).await;
    assert_eq!((s.new_items, s.failures), (1, 0));
    let f = feed(&state, "Page");
    assert_eq!(
        f.effective_url.as_deref(),
        Some(srv.url("/real.xml").as_str()),
        "the better URL is used and reported"
    );
    assert!(
        f.next_poll_at >= t0 + Duration::minutes(180),
        "ttl raises the 30 min interval: {}",
        f.next_poll_at
    );
    assert!(f.next_poll_at <= Utc::now() + Duration::minutes(200));
}

#[tokio::test]
async fn a_hanging_server_fails_that_feed_only() {
    let srv = FaultServer::start().await;
    srv.route("/hang.xml", Response::hang());
    srv.route("/ok.xml", Response::ok(rss(&[ITEM])));
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(
        dir.path(),
        &[
            ("Hang", srv.url("/hang.xml").to_string()),
            ("Ok", srv.url("/ok.xml").to_string()),
        ],
    );
    let state = dir.path().join("state");
    let s = run_once(&cfg, &state, false).await;
    assert_eq!((s.polls, s.failures, s.new_items), (2, 1, 1));
    let h = feed(&state, "Hang");
    assert!(
        h.last_error.as_deref().unwrap().contains("timeout"),
        "{:?}",
        h.last_error
    );
}
