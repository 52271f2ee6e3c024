//! The fault matrix: every way a feed server misbehaves, against a real loopback server, with
//! the outcome asserted and, through `retry`, when the feed would be polled next.
//!
//! Timeouts are small real durations (seconds) so the hang/drip cases finish quickly;
//! nothing asserts on elapsed time. Schedules are computed with an explicit `now` and jitter.

mod support;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use policywatch::feed::{self, FeedError};
use policywatch::fetch::{
    FetchError, FetchOutcome, FetchRequest, Fetcher, HttpConfig, TimeoutPhase,
};
use policywatch::retry::{self, FailureClass, PollHints};
use support::{FaultServer, Response};
use url::Url;

const INTERVAL: Duration = Duration::from_secs(15 * 60);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn test_config() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        // Short enough to keep the hang and drip cases quick, long enough that a loaded CI
        // machine never trips them on the well-behaved routes (which answer in milliseconds).
        first_byte_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(4),
        max_body_bytes: 256 * 1024,
        max_concurrent: 8,
        per_host_concurrency: 4,
        per_host_gap: Duration::ZERO,
        max_redirects: 5,
        user_agent: None,
    }
}

fn fetcher() -> Fetcher {
    Fetcher::new(&test_config()).expect("fetcher")
}

const RSS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Trade desk</title><link>https://news.test/</link>
<item><title>New chip export rules</title><link>/s/1</link><guid>s1</guid></item>
<item><title>Entity List additions</title><link>/s/2</link><guid>s2</guid></item>
</channel></rss>"#;

/// Unwraps a failure, returning the error and Retry-After.
fn expect_failed(out: FetchOutcome) -> (FetchError, Option<DateTime<Utc>>) {
    match out {
        FetchOutcome::Failed { error, retry_after } => (error, retry_after),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The schedule after a success with no jitter: the interval unless hints raise it.
fn success_next_poll(cache_hint: Option<Duration>, ttl: Option<Duration>) -> DateTime<Utc> {
    retry::next_poll_after_success(
        now(),
        INTERVAL,
        PollHints {
            ttl,
            cache: cache_hint,
        },
        0.0,
    )
}

/// The schedule after a first failure with no Retry-After and jitter 1.0: one minute.
fn first_failure_next_poll(retry_after: Option<DateTime<Utc>>) -> DateTime<Utc> {
    retry::next_poll_after_failure(now(), 1, INTERVAL, retry_after, 1.0)
}

#[tokio::test]
async fn etag_200_then_304_with_if_none_match() {
    let srv = FaultServer::start().await;
    let lm = "Sun, 01 Mar 2026 10:00:00 GMT";
    srv.route(
        "/feed.xml",
        Response::ok(RSS)
            .content_type("application/rss+xml; charset=utf-8")
            .etag("\"v1\"")
            .last_modified(lm)
            .header("Cache-Control", "max-age=3600"),
    );
    let f = fetcher();
    let mut req = FetchRequest::new(srv.url("/feed.xml"));
    let (body, ct, final_url, etag, last_modified, hint) = match f.fetch(&req).await {
        FetchOutcome::Fetched {
            body,
            content_type,
            final_url,
            moved_permanently: None,
            etag,
            last_modified,
            cache_hint,
        } => (
            body,
            content_type,
            final_url,
            etag,
            last_modified,
            cache_hint,
        ),
        other => panic!("{other:?}"),
    };
    assert_eq!(etag.as_deref(), Some("\"v1\""));
    assert_eq!(last_modified.as_deref(), Some(lm));
    assert_eq!(hint, Some(Duration::from_secs(3600)));
    let parsed = feed::parse(&body, ct.as_deref(), Some(&final_url)).expect("parses");
    assert_eq!(parsed.items.len(), 2);
    let link = parsed.items[0].link.clone().unwrap();
    assert_eq!(link, format!("https://news.test/s/1"));
    // max-age stretches the 15-minute interval to an hour.
    let hints = PollHints {
        ttl: parsed.ttl,
        cache: hint,
    };
    assert_eq!(
        retry::next_poll_after_success(now(), INTERVAL, hints, 0.0),
        now() + chrono::Duration::hours(1)
    );

    req.etag = etag;
    req.last_modified = last_modified;
    match f.fetch(&req).await {
        FetchOutcome::NotModified {
            moved_permanently: None,
            cache_hint,
        } => assert_eq!(cache_hint, Some(Duration::from_secs(3600))),
        other => panic!("expected 304, got {other:?}"),
    }
    let reqs = srv.requests_to("/feed.xml");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("if-none-match"), None);
    assert_eq!(reqs[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(reqs[1].header("if-modified-since"), Some(lm));
    let ua = reqs[0].header("user-agent").unwrap();
    assert!(
        ua.starts_with("policywatch/") && ua.contains("github.com/policywatch"),
        "{ua}"
    );
    assert!(reqs[0]
        .header("accept")
        .unwrap_or("")
        .starts_with("application/rss+xml"));
    assert!(reqs[0]
        .header("accept-encoding")
        .unwrap_or("")
        .contains("gzip"));
}

#[tokio::test]
async fn last_modified_alone_gives_304() {
    let srv = FaultServer::start().await;
    let lm = "Sun, 01 Mar 2026 10:00:00 GMT";
    srv.route("/f", Response::ok(RSS).last_modified(lm));
    let req = FetchRequest {
        url: srv.url("/f"),
        etag: None,
        last_modified: Some(lm.into()),
    };
    assert!(matches!(
        fetcher().fetch(&req).await,
        FetchOutcome::NotModified { .. }
    ));
}

async fn fetch_through_redirect(status: u16) -> (Url, Option<Url>, FaultServer) {
    let srv = FaultServer::start().await;
    srv.route("/old", Response::redirect(status, "/new"));
    srv.route(
        "/new",
        Response::ok(RSS).header("Cache-Control", "max-age=60"),
    );
    match fetcher().fetch(&FetchRequest::new(srv.url("/old"))).await {
        FetchOutcome::Fetched {
            final_url,
            moved_permanently,
            cache_hint,
            ..
        } => {
            // A redirect is still a success: polled again after the interval (the one-minute
            // max-age does not shorten it).
            assert_eq!(cache_hint, Some(Duration::from_secs(60)));
            assert_eq!(
                success_next_poll(cache_hint, None),
                now() + chrono::Duration::minutes(15)
            );
            (final_url, moved_permanently, srv)
        }
        other => panic!("{status}: {other:?}"),
    }
}

#[tokio::test]
async fn permanent_redirects_are_reported() {
    for status in [301, 308] {
        let (final_url, moved, srv) = fetch_through_redirect(status).await;
        assert_eq!(final_url, srv.url("/new"));
        assert_eq!(moved, Some(srv.url("/new")), "{status}");
    }
}

#[tokio::test]
async fn temporary_redirects_are_followed_not_remembered() {
    for status in [302, 303, 307] {
        let (final_url, moved, srv) = fetch_through_redirect(status).await;
        assert_eq!(final_url, srv.url("/new"));
        assert_eq!(moved, None, "{status}");
    }
}

#[tokio::test]
async fn permanent_then_temporary_reports_the_permanent_target_only() {
    let srv = FaultServer::start().await;
    srv.route("/a", Response::redirect(301, "/b"));
    srv.route("/b", Response::redirect(302, "/c"));
    srv.route("/c", Response::redirect(301, "/d"));
    srv.route("/d", Response::ok(RSS));
    match fetcher().fetch(&FetchRequest::new(srv.url("/a"))).await {
        FetchOutcome::Fetched {
            final_url,
            moved_permanently,
            ..
        } => {
            assert_eq!(final_url, srv.url("/d"));
            assert_eq!(moved_permanently, Some(srv.url("/b")));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn redirect_loop_and_too_many_hops_are_cut() {
    let srv = FaultServer::start().await;
    srv.route("/a", Response::redirect(302, "/b"));
    srv.route("/b", Response::redirect(301, "/a"));
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/a"))).await);
    assert!(
        matches!(err, FetchError::RedirectLoop(ref u) if *u == srv.url("/a")),
        "{err}"
    );
    assert_eq!(err.class(), FailureClass::Permanent);
    assert_eq!(
        first_failure_next_poll(ra),
        now() + chrono::Duration::minutes(1)
    );

    for i in 0..10 {
        srv.route(
            &format!("/hop{i}"),
            Response::redirect(307, &format!("/hop{}", i + 1)),
        );
    }
    let (err, _) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/hop0"))).await);
    assert!(
        matches!(err, FetchError::TooManyRedirects { max: 5, .. }),
        "{err}"
    );
    // Exactly max_redirects + 1 requests were made, then we stopped.
    assert_eq!(
        srv.requests()
            .iter()
            .filter(|r| r.path.starts_with("/hop"))
            .count(),
        6
    );

    srv.route("/nowhere", Response::status(302));
    let (err, _) = expect_failed(
        fetcher()
            .fetch(&FetchRequest::new(srv.url("/nowhere")))
            .await,
    );
    assert!(matches!(err, FetchError::BadRedirect { .. }), "{err}");
    srv.route("/sneaky", Response::redirect(301, "file:///etc/passwd"));
    let (err, _) = expect_failed(
        fetcher()
            .fetch(&FetchRequest::new(srv.url("/sneaky")))
            .await,
    );
    assert!(matches!(err, FetchError::BadRedirect { .. }), "{err}");
}

#[tokio::test]
async fn gone_410() {
    let srv = FaultServer::start().await;
    srv.route("/gone", Response::status(410));
    assert!(matches!(
        fetcher().fetch(&FetchRequest::new(srv.url("/gone"))).await,
        FetchOutcome::Gone
    ));
}

#[tokio::test]
async fn too_many_requests_retry_after_seconds() {
    let srv = FaultServer::start().await;
    srv.route("/f", Response::status(429).header("Retry-After", "120"));
    let before = Utc::now();
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await);
    let after = Utc::now();
    assert!(matches!(err, FetchError::Status { status: 429 }));
    assert!(err.is_transient());
    let ra = ra.expect("Retry-After parsed");
    let lo = before + chrono::Duration::seconds(119);
    let hi = after + chrono::Duration::seconds(121);
    assert!(ra >= lo && ra <= hi, "{ra} not in [{lo}, {hi}]");
    // Honoured: the next poll is exactly when the server asked, not our one-minute backoff.
    let polled_at = ra - chrono::Duration::seconds(120);
    assert_eq!(
        retry::next_poll_after_failure(polled_at, 1, INTERVAL, Some(ra), 1.0),
        ra
    );
}

#[tokio::test]
async fn too_many_requests_retry_after_http_date() {
    let srv = FaultServer::start().await;
    // Whole seconds: HTTP dates have no fractions.
    let when = Utc.timestamp_opt(Utc::now().timestamp() + 7200, 0).unwrap();
    let date = httpdate::fmt_http_date(when.into());
    srv.route("/f", Response::status(429).header("Retry-After", &date));
    let (_, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await);
    assert_eq!(ra, Some(when));
    assert_eq!(
        retry::next_poll_after_failure(Utc::now(), 1, INTERVAL, ra, 1.0),
        when
    );
}

#[tokio::test]
async fn service_unavailable_503_with_and_without_retry_after() {
    let srv = FaultServer::start().await;
    srv.route("/f", Response::status(503).header("Retry-After", "3600"));
    srv.route("/g", Response::status(503));
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await);
    assert!(matches!(err, FetchError::Status { status: 503 }) && err.is_transient());
    assert!(ra.is_some());
    let (_, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/g"))).await);
    assert_eq!(ra, None);
    // Third failure in a row, full jitter: 4 minutes.
    assert_eq!(
        retry::next_poll_after_failure(now(), 3, INTERVAL, ra, 1.0),
        now() + chrono::Duration::minutes(4)
    );
}

#[tokio::test]
async fn server_errors_are_transient_client_errors_permanent() {
    let srv = FaultServer::start().await;
    srv.route("/500", Response::status(500).body("oops"));
    srv.route("/403", Response::status(403));
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/500"))).await);
    assert!(matches!(err, FetchError::Status { status: 500 }));
    assert!(retry::is_retryable(&err));
    assert_eq!(
        first_failure_next_poll(ra),
        now() + chrono::Duration::minutes(1)
    );
    let (err, _) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/403"))).await);
    assert_eq!(err.class(), FailureClass::Permanent);
    // Unrouted: the support server's 404.
    let (err, _) = expect_failed(
        fetcher()
            .fetch(&FetchRequest::new(srv.url("/missing")))
            .await,
    );
    assert!(matches!(err, FetchError::Status { status: 404 }) && !err.is_transient());
}

#[tokio::test]
async fn hang_before_headers_times_out_on_first_byte() {
    let srv = FaultServer::start().await;
    srv.route("/f", Response::hang());
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await);
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                phase: TimeoutPhase::FirstByte,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    // Fifth consecutive timeout, no jitter: 16 minutes * 0.5 = 8 minutes.
    assert_eq!(
        retry::next_poll_after_failure(now(), 5, INTERVAL, ra, 0.0),
        now() + chrono::Duration::minutes(8)
    );
}

#[tokio::test]
async fn slow_drip_is_cut_by_the_total_timeout() {
    let srv = FaultServer::start().await;
    // 4 KiB at 16 bytes per 50 ms would take 12.8 s; the total timeout is 4 s.
    srv.route(
        "/f",
        Response::ok(vec![b'a'; 4096]).drip(Duration::from_millis(50), 16),
    );
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await);
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                phase: TimeoutPhase::Total,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(
        first_failure_next_poll(ra),
        now() + chrono::Duration::minutes(1)
    );
}

#[tokio::test]
async fn oversized_body_is_refused_with_or_without_content_length() {
    let srv = FaultServer::start().await;
    let big = 64 * 1024 * 1024;
    srv.route("/cl", Response::huge(big));
    srv.route("/stream", Response::huge(big).without_content_length());
    // Exactly at the cap is fine.
    srv.route(
        "/exact",
        Response::huge(256 * 1024).without_content_length(),
    );
    for path in ["/cl", "/stream"] {
        let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url(path))).await);
        assert!(
            matches!(err, FetchError::TooLarge { limit } if limit == 256 * 1024),
            "{path}: {err}"
        );
        assert_eq!(err.class(), FailureClass::Permanent);
        assert_eq!(
            first_failure_next_poll(ra),
            now() + chrono::Duration::minutes(1)
        );
    }
    match fetcher().fetch(&FetchRequest::new(srv.url("/exact"))).await {
        FetchOutcome::Fetched { body, .. } => assert_eq!(body.len(), 256 * 1024),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn gzip_bomb_is_cut_at_the_decompressed_cap() {
    let srv = FaultServer::start().await;
    srv.route("/bomb", Response::gzip_bomb(64 * 1024 * 1024));
    srv.route(
        "/small",
        Response::gzipped(RSS).content_type("application/rss+xml"),
    );
    let (err, ra) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/bomb"))).await);
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Permanent);
    // Second failure in a row, no jitter: one minute.
    assert_eq!(
        retry::next_poll_after_failure(now(), 2, INTERVAL, ra, 0.0),
        now() + chrono::Duration::minutes(1)
    );
    // Ordinary compressed feeds are decompressed transparently.
    match fetcher().fetch(&FetchRequest::new(srv.url("/small"))).await {
        FetchOutcome::Fetched { body, .. } => assert_eq!(&body[..], RSS.as_bytes()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn html_page_leads_to_its_feed() {
    let srv = FaultServer::start().await;
    let page = r#"<!doctype html><html><head><title>Trade news</title>
<link rel="alternate" type="application/rss+xml" href="/feeds/trade.xml"></head><body>Hi</body></html>"#;
    srv.route(
        "/news",
        Response::ok(page).content_type("text/html; charset=utf-8"),
    );
    srv.route("/feeds/trade.xml", Response::ok(RSS));
    let f = fetcher();
    let FetchOutcome::Fetched {
        body,
        content_type,
        final_url,
        ..
    } = f.fetch(&FetchRequest::new(srv.url("/news"))).await
    else {
        panic!("page fetch failed")
    };
    let alternate = match feed::parse(&body, content_type.as_deref(), Some(&final_url)) {
        Err(FeedError::NotAFeed { alternate: Some(u) }) => u,
        other => panic!("{other:?}"),
    };
    assert_eq!(alternate, srv.url("/feeds/trade.xml"));
    // The caller switches to the advertised feed at once; a page without one is a permanent
    // parse failure, polled on the backoff schedule.
    assert_eq!(
        FeedError::NotAFeed { alternate: None }.class(),
        FailureClass::Permanent
    );
    let FetchOutcome::Fetched { body, .. } = f.fetch(&FetchRequest::new(alternate)).await else {
        panic!("feed fetch failed")
    };
    assert_eq!(feed::parse(&body, None, None).unwrap().items.len(), 2);
}

#[tokio::test]
async fn invalid_xml_is_a_clean_parse_error() {
    let srv = FaultServer::start().await;
    srv.route(
        "/f",
        // A CDATA section never closed swallows the document: nothing to recover. (A tag left
        // open is recovered since issue 17: see `feed::recover`.)
        Response::ok(
            "<rss version=\"2.0\"><channel><title>x</title><item><title><![CDATA[broken</title></item></channel></rss>",
        )
        .content_type("application/rss+xml"),
    );
    let FetchOutcome::Fetched {
        body, content_type, ..
    } = fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await
    else {
        panic!()
    };
    let err = feed::parse(&body, content_type.as_deref(), None).unwrap_err();
    assert!(matches!(err, FeedError::Invalid(_)), "{err}");
    assert_eq!(err.class(), FailureClass::Permanent);
    // A feed that fails to parse is backed off like a failed fetch: fourth time, 8 minutes.
    assert_eq!(
        retry::next_poll_after_failure(now(), 4, INTERVAL, None, 1.0),
        now() + chrono::Duration::minutes(8)
    );
}

#[tokio::test]
async fn wrongly_declared_charset_still_reads_right() {
    let srv = FaultServer::start().await;
    let title = "Экспортный контроль: новые правила";
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"windows-1251\"?><rss version=\"2.0\"><channel><title>{title}</title><ttl>120</ttl>\
         <item><title>{title}</title><guid>1</guid></item></channel></rss>"
    );
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&xml);
    // The server claims UTF-8; the bytes are windows-1251 as the declaration says.
    srv.route(
        "/f",
        Response::ok(bytes.into_owned()).content_type("application/rss+xml; charset=utf-8"),
    );
    let FetchOutcome::Fetched {
        body, content_type, ..
    } = fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await
    else {
        panic!()
    };
    let parsed = feed::parse(&body, content_type.as_deref(), None).unwrap();
    assert_eq!(parsed.title.as_deref(), Some(title));
    assert_eq!(parsed.items[0].title, title);
    assert!(!parsed.items[0].title.contains('\u{fffd}'));
    // A 2-hour <ttl> raises the next poll.
    assert_eq!(parsed.ttl, Some(Duration::from_secs(7200)));
    assert_eq!(
        success_next_poll(None, parsed.ttl),
        now() + chrono::Duration::hours(2)
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = Url::parse(&format!("http://{addr}/f")).unwrap();
    let (err, _) = expect_failed(fetcher().fetch(&FetchRequest::new(url)).await);
    assert!(matches!(err, FetchError::Network(_)), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn truncated_body_is_a_network_error() {
    let srv = FaultServer::start().await;
    srv.route(
        "/f",
        Response::raw("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n<rss>"),
    );
    let (err, _) = expect_failed(fetcher().fetch(&FetchRequest::new(srv.url("/f"))).await);
    assert!(matches!(err, FetchError::Network(_)), "{err}");
}

#[tokio::test]
async fn unsupported_scheme() {
    let url = Url::parse("ftp://example.test/feed").unwrap();
    let (err, _) = expect_failed(fetcher().fetch(&FetchRequest::new(url)).await);
    assert!(matches!(err, FetchError::UnsupportedScheme(_)));
}

#[tokio::test]
async fn file_urls_are_read_with_the_same_cap_and_conditional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.xml");
    std::fs::write(&path, RSS).unwrap();
    let f = fetcher();
    let mut req = FetchRequest::new(Url::from_file_path(&path).unwrap());
    let (tag, lm) = match f.fetch(&req).await {
        FetchOutcome::Fetched {
            body,
            etag,
            last_modified,
            ..
        } => {
            assert_eq!(&body[..], RSS.as_bytes());
            (etag, last_modified)
        }
        other => panic!("{other:?}"),
    };
    assert!(lm.is_some() && tag.is_some());
    req.etag = tag;
    req.last_modified = lm;
    assert!(matches!(
        f.fetch(&req).await,
        FetchOutcome::NotModified { .. }
    ));

    // Issue 13: a file rewritten within the same second was not seen as changed. Same second,
    // other nanoseconds, same size: changed. Same instant, other size: changed.
    let second = std::time::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let stamp = |p: &std::path::Path, t: std::time::SystemTime| {
        let file = std::fs::File::options().write(true).open(p).unwrap();
        file.set_modified(t).unwrap();
    };
    stamp(&path, second + Duration::from_millis(100));
    let poll = |req: &FetchRequest| {
        let req = FetchRequest {
            url: req.url.clone(),
            etag: req.etag.clone(),
            last_modified: req.last_modified.clone(),
        };
        let f = &f;
        async move {
            match f.fetch(&req).await {
                FetchOutcome::Fetched {
                    etag,
                    last_modified,
                    ..
                } => Some((etag, last_modified)),
                FetchOutcome::NotModified { .. } => None,
                other => panic!("{other:?}"),
            }
        }
    };
    let (tag, lm) = poll(&req).await.expect("new mtime: fetched");
    (req.etag, req.last_modified) = (tag, lm);
    assert!(RSS.is_ascii(), "upper-casing keeps the size");
    std::fs::write(&path, RSS.to_uppercase()).unwrap();
    stamp(&path, second + Duration::from_millis(700));
    let (tag, lm) = poll(&req)
        .await
        .expect("same second, same size, new content: fetched");
    (req.etag, req.last_modified) = (tag, lm);
    std::fs::write(&path, format!("{RSS} ")).unwrap();
    stamp(&path, second + Duration::from_millis(700));
    let (tag, lm) = poll(&req).await.expect("same mtime, new size: fetched");
    (req.etag, req.last_modified) = (tag, lm);
    assert!(poll(&req).await.is_none(), "unchanged: not modified");

    let big = dir.path().join("big.xml");
    std::fs::write(&big, vec![b'x'; 256 * 1024 + 1]).unwrap();
    let (err, _) = expect_failed(
        f.fetch(&FetchRequest::new(Url::from_file_path(&big).unwrap()))
            .await,
    );
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");

    let missing = dir.path().join("missing.xml");
    let (err, _) = expect_failed(
        f.fetch(&FetchRequest::new(Url::from_file_path(&missing).unwrap()))
            .await,
    );
    assert!(matches!(err, FetchError::File { .. }), "{err}");
}

/// Runs concurrent fetches of `urls`; the caller reads the server's peak concurrency.
async fn fetch_all(cfg: HttpConfig, urls: Vec<Url>) {
    let f = Fetcher::new(&cfg).unwrap();
    let handles: Vec<_> = urls
        .into_iter()
        .map(|u| {
            let f = f.clone();
            tokio::spawn(async move { f.fetch(&FetchRequest::new(u)).await })
        })
        .collect();
    for h in handles {
        assert!(matches!(h.await.unwrap(), FetchOutcome::Fetched { .. }));
    }
}

#[tokio::test]
async fn per_host_and_global_limits_hold() {
    // Each response takes a few drips so requests overlap if the limiter lets them.
    let slow = || Response::ok(vec![b'x'; 64]).drip(Duration::from_millis(10), 16);
    let mut cfg = test_config();
    cfg.total_timeout = Duration::from_secs(10);
    cfg.first_byte_timeout = Duration::from_secs(10);

    // One host, per-host limit 1: never two at once.
    let srv = FaultServer::start().await;
    srv.route("/s", slow());
    cfg.per_host_concurrency = 1;
    fetch_all(cfg.clone(), (0..6).map(|_| srv.url("/s")).collect()).await;
    assert_eq!(srv.max_in_flight(), 1);

    // Per-host 2: at most 2 (and the limiter did let two through).
    let srv = FaultServer::start().await;
    srv.route("/s", slow());
    cfg.per_host_concurrency = 2;
    fetch_all(cfg.clone(), (0..6).map(|_| srv.url("/s")).collect()).await;
    assert!(srv.max_in_flight() <= 2);

    // Two host names, generous per-host limit, global limit 1: still one at a time.
    let srv = FaultServer::start().await;
    srv.route("/s", slow());
    cfg.per_host_concurrency = 4;
    cfg.max_concurrent = 1;
    let urls = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                srv.url("/s")
            } else {
                srv.url_as_localhost("/s")
            }
        })
        .collect();
    fetch_all(cfg.clone(), urls).await;
    assert_eq!(srv.max_in_flight(), 1);
}

#[tokio::test]
async fn not_modified_after_a_permanent_redirect_still_reports_the_move() {
    let srv = FaultServer::start().await;
    srv.route("/old", Response::redirect(308, "/new"));
    srv.route("/new", Response::ok(RSS).etag("\"e\""));
    let req = FetchRequest {
        url: srv.url("/old"),
        etag: Some("\"e\"".into()),
        last_modified: None,
    };
    match fetcher().fetch(&req).await {
        FetchOutcome::NotModified {
            moved_permanently, ..
        } => assert_eq!(moved_permanently, Some(srv.url("/new"))),
        other => panic!("{other:?}"),
    }
    // The validator went along on both hops.
    assert!(srv
        .requests()
        .iter()
        .all(|r| r.header("if-none-match") == Some("\"e\"")));
}
