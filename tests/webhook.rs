//! The webhook output end to end through the durable outbox: stories stored in a real SQLite
//! file, claimed into a delivery, rendered per format, POSTed to a real HTTP receiver on
//! loopback (tests/support), marked sent only on its 2xx. The faults a receiver really has —
//! a 5xx, a 429 with Retry-After, a 404 for a deleted webhook, no answer at all — each end
//! with the delivery sent once (under one Idempotency-Key) or failed once, never in a loop.

mod common;
mod support;

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{until, DEADLINE};
use hmac::{Hmac, Mac};
use policywatch::config::{self, Loaded};
use policywatch::daemon::{self, ConfigSource, Control, Options};
use policywatch::item::Item;
use policywatch::notify::{Notifier, Report};
use policywatch::store::{NewItem, Store};
use serde_json::Value;
use sha2::Sha256;
use support::{FaultServer, RecordedRequest, Response};

const FEED: &str = "https://wire.policywatch.test/feed.xml";
/// The digest's subject (`digest::subject_line`): its top story, then the stories per watch
/// (the Nvidia curbs story counts under both).
const SUBJECT: &str = "Commerce adds 12 firms to the Entity List — 2 export controls, 2 AI chips";

fn t0() -> DateTime<Utc> {
    // 08:00 UTC: "daily 07:30" is not due again for a day; only flush() and retries send.
    Utc.with_ymd_and_hms(2026, 11, 28, 8, 0, 0)
        .single()
        .unwrap()
}

/// Two watches, one webhook digest posting to `url` in `format`; `extra` is appended to the
/// digest's table (a secret, a timeout).
fn cfg(url: &str, format: &str, extra: &str) -> Loaded {
    config::load_str(
        "webhook.toml",
        &format!(
            "[[feeds]]\nurl = \"{FEED}\"\nname = \"Wire\"\n\
             [[watches]]\nid = \"export-controls\"\nname = \"Export controls\"\nquery = '\"entity list\" OR curbs'\n\
             [[watches]]\nid = \"ai-chips\"\nname = \"AI chips\"\nquery = \"nvidia\"\n\
             [[digests]]\nid = \"daily\"\nschedule = \"daily 07:30\"\nvia = \"webhook\"\n\
             url = \"{url}\"\nformat = \"{format}\"\n{extra}"
        ),
    )
    .unwrap_or_else(|e| panic!("test config must load:\n{e}"))
}

/// Stores and classifies three stories: two export-control ones (one also about Nvidia) and
/// one AI-chip one.
fn add_stories(store: &mut Store, cfg: &Loaded, at: DateTime<Utc>) {
    store.sync_feeds([(FEED, "Wire")]).unwrap();
    let stories = [
        (
            "s1",
            "Commerce adds 12 firms to the Entity List",
            "The rule takes effect at once.",
        ),
        (
            "s2",
            "New curbs on Nvidia accelerators",
            "Licences are now required.",
        ),
        (
            "s3",
            "Nvidia reports record data-centre sales",
            "Revenue doubled.",
        ),
    ];
    let new: Vec<NewItem> = stories
        .iter()
        .enumerate()
        .map(|(i, (guid, title, summary))| {
            let item = Item {
                guid: Some(guid.to_string()),
                link: Some(format!("https://wire.policywatch.test/{guid}")),
                title: title.to_string(),
                summary: summary.to_string(),
                published: Some(at - Duration::minutes(i as i64)),
                feed_name: "Wire".into(),
                ..Default::default()
            };
            let verdicts = cfg.classifier.classify(&item);
            assert!(!verdicts.is_empty(), "{title} must match");
            NewItem::plain(item, verdicts)
        })
        .collect();
    store
        .insert_items(FEED, &new, at, None, &mut |id, _, _| id)
        .unwrap();
}

fn setup(cfg: &Loaded) -> (Store, Notifier) {
    let mut store = Store::open_in_memory().unwrap();
    let notifier = Notifier::new(cfg).expect("notifier");
    notifier.register(&mut store, cfg, t0()).unwrap();
    add_stories(&mut store, cfg, t0() + Duration::seconds(1));
    (store, notifier)
}

fn counts(r: &Report) -> (usize, usize, usize) {
    (r.sent, r.retrying, r.failed)
}

fn json(r: &RecordedRequest) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

/// One flush against a receiver answering 200 to `format` posts; the request it got.
async fn post_once(format: &str) -> (RecordedRequest, String) {
    let srv = FaultServer::start().await;
    srv.route("/hook", Response::ok("ok"));
    let cfg = cfg(srv.url("/hook").as_str(), format, "");
    let (mut store, n) = setup(&cfg);
    let r = n
        .flush(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(counts(&r), (1, 0, 0), "{:?}", r.texts);
    let reqs = srv.requests_to("/hook");
    assert_eq!(reqs.len(), 1);
    let d = store.delivery(1).unwrap();
    assert_eq!(d.status, "sent");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(
        reqs[0].header("idempotency-key"),
        Some(d.message_id.as_str())
    );
    assert_eq!(
        reqs[0].header(policywatch::webhook::SIGNATURE_HEADER),
        None,
        "no secret, no signature"
    );
    // Nothing new: later passes post nothing.
    let r = n
        .tick(&mut store, &cfg, t0() + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 0));
    assert_eq!(srv.requests_to("/hook").len(), 1);
    (reqs[0].clone(), d.message_id)
}

#[tokio::test]
async fn slack_gets_block_kit_with_linked_headlines_sources_and_why() {
    let (req, _) = post_once("slack").await;
    assert_eq!(req.header("content-type"), Some("application/json"));
    let v = json(&req);
    // The digest's subject: its top story, then the counts per watch.
    assert_eq!(v["text"], SUBJECT, "{v}");
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks.last().unwrap()["type"], "context");
    let sections: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    assert!(
        sections.contains(&"*Export controls*") && sections.contains(&"*AI chips*"),
        "{sections:?}"
    );
    let entity = sections
        .iter()
        .find(|t| t.contains("Entity List"))
        .expect("the Entity List story");
    assert!(
        // Source, then the digest's "why" line (what the story names), then the lead.
        *entity
            == "*<https://wire.policywatch.test/s1|Commerce adds 12 firms to the Entity List>*\n\
                Wire · Entity List\nThe rule takes effect at once.",
        "{entity}"
    );
    // The Nvidia curbs story matched both watches but is shown once.
    assert_eq!(
        sections
            .iter()
            .filter(|t| t.contains("New curbs on Nvidia"))
            .count(),
        1
    );
    assert_eq!(v["unfurl_links"], false);
}

#[tokio::test]
async fn teams_gets_an_adaptive_card() {
    let (req, _) = post_once("teams").await;
    let v = json(&req);
    assert_eq!(v["type"], "message");
    let att = &v["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    let body = card["body"].as_array().unwrap();
    assert_eq!(body[0]["type"], "TextBlock");
    let texts: Vec<String> = body
        .iter()
        .flat_map(|b| {
            let mut v = vec![b.clone()];
            v.extend(b["items"].as_array().cloned().unwrap_or_default());
            v
        })
        .filter(|b| b["type"] == "TextBlock")
        .filter_map(|b| b["text"].as_str().map(str::to_string))
        .collect();
    assert!(
        texts.iter().any(|t| t
            == "[Commerce adds 12 firms to the Entity List](https://wire.policywatch.test/s1)"),
        "{texts:?}"
    );
    assert!(body.iter().any(|b| b["type"] == "Container"));
}

#[tokio::test]
async fn mattermost_gets_attachments_with_title_links() {
    let (req, _) = post_once("mattermost").await;
    let v = json(&req);
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("#### {SUBJECT}\n")),
        "{v}"
    );
    let atts = v["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 3);
    let a = atts
        .iter()
        .find(|a| a["title_link"] == "https://wire.policywatch.test/s1")
        .unwrap();
    assert_eq!(a["title"], "Commerce adds 12 firms to the Entity List");
    assert!(
        a["text"] == "Wire · Entity List\nThe rule takes effect at once.",
        "{a}"
    );
}

#[tokio::test]
async fn ntfy_gets_a_title_a_click_url_tags_and_a_short_body() {
    let (req, _) = post_once("ntfy").await;
    assert_eq!(
        req.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The subject has an em dash: one RFC 2047 encoded word, which ntfy decodes.
    let title = req.header("title").expect("Title");
    assert!(title.is_ascii(), "{title}");
    let b64 = title
        .strip_prefix("=?UTF-8?B?")
        .and_then(|t| t.strip_suffix("?="))
        .unwrap_or_else(|| panic!("{title}"));
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), SUBJECT);
    let click = req.header("click").expect("Click");
    assert!(
        click.starts_with("https://wire.policywatch.test/s"),
        "{click}"
    );
    let tags: Vec<&str> = req.header("tags").expect("Tags").split(',').collect();
    assert_eq!(tags[0], "newspaper");
    assert!(
        tags.contains(&"export-controls") && tags.contains(&"ai-chips"),
        "{tags:?}"
    );
    let body = String::from_utf8(req.body.clone()).unwrap();
    assert_eq!(body.lines().count(), 3, "{body}");
    assert!(
        body.contains("• Commerce adds 12 firms to the Entity List — Wire\n"),
        "{body}"
    );
}

#[tokio::test]
async fn json_follows_the_documented_schema() {
    let (req, message_id) = post_once("json").await;
    let v = json(&req);
    assert_eq!(v["schema"], "policywatch.digest");
    assert_eq!(v["version"], 1);
    assert_eq!(v["kind"], "digest");
    assert_eq!(v["digest_id"], "daily");
    assert_eq!(v["delivery_id"], message_id.as_str());
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    let stories = v["stories"].as_array().unwrap();
    assert_eq!(stories.len(), 3);
    let curbs = stories
        .iter()
        .find(|s| s["title"] == "New curbs on Nvidia accelerators")
        .unwrap();
    assert_eq!(curbs["link"], "https://wire.policywatch.test/s2");
    assert_eq!(curbs["lead"], "Licences are now required.");
    assert_eq!(curbs["source"], "Wire");
    assert_eq!(
        curbs["watches"],
        serde_json::json!(["export-controls", "ai-chips"])
    );
    // Shown once, with what it matched under both watches.
    assert_eq!(curbs["evidence"], serde_json::json!(["curbs", "nvidia"]));
    for key in [
        "lang",
        "why",
        "published_at",
        "first_seen_at",
        "also_reported",
        "item_id",
    ] {
        assert!(curbs.get(key).is_some(), "missing {key}: {curbs}");
    }
    assert_eq!(v["more"], 0);
}

#[tokio::test]
async fn the_signature_verifies_with_the_secret() {
    let srv = FaultServer::start().await;
    srv.route("/hook", Response::status(204));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hook-secret");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let extra = format!("secret_file = \"{}\"\n", key.display());
    let cfg = cfg(srv.url("/hook").as_str(), "json", &extra);
    let (mut store, n) = setup(&cfg);
    let r = n
        .flush(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(counts(&r), (1, 0, 0), "{:?}", r.texts);
    let req = &srv.requests_to("/hook")[0];
    let sig = req
        .header("x-policywatch-signature")
        .expect("signature header");
    let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let verify = |secret: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(&req.body);
        mac.verify_slice(&hex::decode(hex).unwrap()).is_ok()
    };
    assert!(verify(b"s3cret-key"), "the receiver's check passes");
    assert!(!verify(b"another-key"), "and fails with another key");
    assert!(
        !r.texts.concat().contains("s3cret"),
        "the secret is never shown"
    );
}

#[tokio::test]
async fn a_500_then_a_200_delivers_once_under_one_idempotency_key() {
    let srv = FaultServer::start().await;
    srv.route_seq(
        "/hook",
        vec![Response::status(500).body("oops"), Response::ok("ok")],
    );
    let cfg = cfg(srv.url("/hook").as_str(), "slack", "");
    let (mut store, n) = setup(&cfg);
    let t1 = t0() + Duration::minutes(1);
    let r = n.flush(&mut store, &cfg, t1).await.unwrap();
    assert_eq!(counts(&r), (0, 1, 0), "{:?}", r.texts);
    assert!(
        r.texts[0].starts_with("webhook deferred, next attempt at "),
        "{:?}",
        r.texts
    );
    let d = store.delivery(1).unwrap();
    assert_eq!(d.status, "pending");
    assert!(
        d.last_error.as_deref().unwrap().contains("HTTP 500: oops"),
        "{d:?}"
    );
    // Not before its backoff...
    let r = n
        .tick(&mut store, &cfg, t1 + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 0));
    // ...then once, and done.
    let r = n.tick(&mut store, &cfg, d.next_attempt_at).await.unwrap();
    assert_eq!(counts(&r), (1, 0, 0), "{:?}", r.texts);
    let r = n
        .tick(&mut store, &cfg, d.next_attempt_at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 0));
    let reqs = srv.requests_to("/hook");
    assert_eq!(reqs.len(), 2);
    let keys: Vec<_> = reqs
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], store.delivery(1).unwrap().message_id);
    assert_eq!(
        reqs[0].body, reqs[1].body,
        "the same delivery, the same body"
    );
    assert_eq!(store.delivery(1).unwrap().status, "sent");
}

#[tokio::test]
async fn a_429_is_not_retried_before_its_retry_after() {
    let srv = FaultServer::start().await;
    srv.route_seq(
        "/hook",
        vec![
            Response::status(429).header("Retry-After", "600"),
            Response::status(503).header(
                "Retry-After",
                &httpdate::fmt_http_date(
                    std::time::SystemTime::now() + StdDuration::from_secs(900),
                ),
            ),
            Response::ok("ok"),
        ],
    );
    let cfg = cfg(srv.url("/hook").as_str(), "ntfy", "");
    let (mut store, n) = setup(&cfg);
    let t1 = t0() + Duration::minutes(1);
    let r = n.flush(&mut store, &cfg, t1).await.unwrap();
    assert_eq!(counts(&r), (0, 1, 0), "{:?}", r.texts);
    // The backoff alone would say 30-60 s; the receiver asked for 600.
    let d = store.delivery(1).unwrap();
    assert_eq!(d.next_attempt_at, t1 + Duration::seconds(600));
    let r = n
        .tick(&mut store, &cfg, t1 + Duration::seconds(599))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 0), "not a second early");
    // An HTTP date works too (resolved against the clock when the answer came: ±1 s).
    let t2 = d.next_attempt_at;
    let r = n.tick(&mut store, &cfg, t2).await.unwrap();
    assert_eq!(counts(&r), (0, 1, 0), "{:?}", r.texts);
    let wait = (store.delivery(1).unwrap().next_attempt_at - t2).num_seconds();
    assert!((895..=900).contains(&wait), "{wait}");
    assert_eq!(srv.requests_to("/hook").len(), 2);
}

#[tokio::test]
async fn a_404_fails_for_good_and_is_reported() {
    let srv = FaultServer::start().await;
    srv.route("/hook", Response::status(404).body("no_such_hook"));
    let cfg = cfg(srv.url("/hook").as_str(), "teams", "");
    let (mut store, n) = setup(&cfg);
    let r = n
        .flush(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 1), "{:?}", r.texts);
    let text = r.texts.join("\n");
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("HTTP 404: no_such_hook"), "{text}");
    assert!(text.contains("no longer exists"), "says what to do: {text}");
    assert!(
        !text.contains("/hook"),
        "the URL (the token) is never shown: {text}"
    );
    let failed = store.failed_deliveries().unwrap();
    assert_eq!(failed.len(), 1);
    // Never retried.
    let r = n
        .tick(&mut store, &cfg, t0() + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(r.failed + r.sent + r.retrying, 0);
    assert_eq!(srv.requests_to("/hook").len(), 1);
}

/// A receiver that takes the POST and never answers: the daemon keeps polling its feeds, and
/// stops promptly when asked, with the delivery still pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_does_not_stall_polling() {
    let srv = FaultServer::start().await;
    srv.route("/hook", Response::hang());
    srv.route(
        "/feed.xml",
        Response::ok(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
             <link>https://x.test/</link><description>d</description>\
             <item><guid>h1</guid><title>Nvidia chips face new curbs</title>\
             <link>https://x.test/h1</link><description>More.</description></item>\
             </channel></rss>",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policywatch.toml");
    let feed_url = srv.url("/feed.xml");
    let hook_url = srv.url("/hook");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nmin_interval = \"1s\"\nalert_min_gap = \"0s\"\nbackfill = \"36500days\"\n\
             [[feeds]]\nurl = \"{feed_url}\"\nname = \"Wire\"\ninterval = \"1s\"\n\
             [[watches]]\nid = \"ai-chips\"\nquery = \"nvidia\"\nalert = \"immediate\"\n\
             [[digests]]\nid = \"chat\"\nschedule = \"daily 07:30\"\nvia = \"webhook\"\n\
             url = \"{hook_url}\"\nformat = \"json\"\n\
             # Far longer than the test: only the send path's design keeps polling going.\n\
             timeout = \"10min\"\n"
        ),
    )
    .unwrap();
    let loaded = config::load(&path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Control>(1);
    let state = dir.path().join("state");
    let run = tokio::spawn(daemon::run(
        ConfigSource::File(path.clone()),
        loaded,
        Options {
            state_dir: state.clone(),
            once: false,
            all: false,
        },
        rx,
    ));
    until("the alert's POST reached the receiver", || {
        !srv.requests_to("/hook").is_empty()
    })
    .await;
    let polls = srv.requests_to("/feed.xml").len();
    until("two more polls while the POST hangs", || {
        srv.requests_to("/feed.xml").len() >= polls + 2
    })
    .await;
    tx.send(Control::Shutdown).await.unwrap();
    let summary = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the daemon stops promptly with a POST in flight")
        .unwrap()
        .unwrap();
    // A feed is fetched again only once its last result is stored, so every poll the server
    // saw but the last was stored; the last may still have been in flight at the shutdown.
    assert!(summary.polls > polls, "{summary:?}");
    let store = Store::open(&policywatch::store::db_path(&state)).unwrap();
    assert_eq!(
        store.delivery(1).unwrap().status,
        "pending",
        "retried on the next start"
    );
}

/// `policywatch send-test` posts a test message to a webhook digest and says what the
/// receiver answered; a refusal makes it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_posts_to_the_webhook_and_reports_the_answer() {
    let srv = FaultServer::start().await;
    srv.route("/hook", Response::ok("ok"));
    srv.route("/gone", Response::status(410).body("channel_is_archived"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policywatch.toml");
    let write = |hook: &str| {
        std::fs::write(
            &path,
            format!(
                "[[watches]]\nid = \"w\"\nquery = \"nvidia\"\n\
                 [[digests]]\nid = \"chat\"\nschedule = \"hourly\"\nvia = \"webhook\"\n\
                 url = \"{}\"\nformat = \"slack\"\n",
                srv.url(hook)
            ),
        )
        .unwrap();
    };
    write("/hook");
    let out = tokio::process::Command::from(common::bin())
        .args(["send-test", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("digest `chat`: posted to http://127.0.0.1:")
            && stdout.contains("(slack): HTTP 200: ok"),
        "{stdout}"
    );
    let reqs = srv.requests_to("/hook");
    assert_eq!(reqs.len(), 1);
    let v = json(&reqs[0]);
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("policywatch test message"),
        "{v}"
    );

    write("/gone");
    let out = tokio::process::Command::from(common::bin())
        .args(["send-test", "--digest", "chat", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not posted")
            && stderr.contains("HTTP 410: channel_is_archived")
            && stderr.contains("(permanent)"),
        "{stderr}"
    );
}

/// `policywatch check` reads the signing secret as the daemon will, and points at the digest
/// whose secret cannot be read.
#[test]
fn check_reports_an_unreadable_secret_at_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policywatch.toml");
    let missing = dir.path().join("no-such-secret");
    std::fs::write(
        &path,
        format!(
            "[[feeds]]\nurl = \"https://wire.example.org/feed.xml\"\n\
             [[watches]]\nid = \"w\"\nquery = \"nvidia\"\n\
             [[digests]]\nid = \"chat\"\nschedule = \"hourly\"\nvia = \"webhook\"\n\
             url = \"https://hooks.example.org/x\"\nformat = \"json\"\nsecret_file = \"{}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let out = common::bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let want = format!(
        "{}:7:6: error: digest `chat`: cannot read the secret from secret_file",
        path.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    std::fs::write(&missing, "k\n").unwrap();
    let out = common::bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
