//! The email output end to end through the durable outbox: stories stored in a real SQLite
//! file, claimed into a delivery, rendered, sent to a real SMTP server process on loopback
//! (tests/smtp/server.py), marked sent. The faults a relay really has — down for a while,
//! "552 too large", a crash between claim and send — each end with the digest delivered once
//! (or failed once), never in a loop.

mod smtp;

use chrono::{DateTime, Duration, TimeZone, Utc};
use policywatch::config::{self, Loaded};
use policywatch::item::{Evidence, Field, Item, Verdict};
use policywatch::mail::{Mailer, SmtpConfig, TlsMode};
use policywatch::notify::{self, Notifier, Problem, Report};
use policywatch::store::{Kind, NewItem, Store};
use smtp::{header_values, parse_message, Env, Opts};

const FEED: &str = "https://wire.policywatch.test/feed.xml";

fn t0() -> DateTime<Utc> {
    // 08:00 UTC: the digest's "daily 07:30" is not due again for a day, so only flush() and
    // retries send anything in these tests.
    Utc.with_ymd_and_hms(2026, 11, 28, 8, 0, 0)
        .single()
        .expect("time")
}

/// The shipped config (its watches) with one feed, one email digest and `smtp`.
fn load_config(smtp: &SmtpConfig, max_stories: usize) -> Loaded {
    load_config_to(smtp, max_stories, &["Analyst <analyst@policywatch.test>"])
}

/// [`load_config`] with the digest going to `recipients`.
fn load_config_to(smtp: &SmtpConfig, max_stories: usize, recipients: &[&str]) -> Loaded {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policywatch.toml"
    ))
    .expect("shipped config");
    let mut doc: toml_edit::DocumentMut = shipped.parse().expect("toml");
    let mut feeds = toml_edit::ArrayOfTables::new();
    let mut f = toml_edit::Table::new();
    f["url"] = toml_edit::value(FEED);
    f["name"] = toml_edit::value("Test Wire");
    feeds.push(f);
    doc["feeds"] = toml_edit::Item::ArrayOfTables(feeds);
    let mut digests = toml_edit::ArrayOfTables::new();
    let mut d = toml_edit::Table::new();
    d["id"] = toml_edit::value("daily");
    d["schedule"] = toml_edit::value("daily 07:30");
    d["via"] = toml_edit::value("email");
    let mut to = toml_edit::Array::new();
    for r in recipients {
        to.push(*r);
    }
    d["to"] = toml_edit::value(to);
    d["max_stories"] = toml_edit::value(max_stories as i64);
    digests.push(d);
    doc["digests"] = toml_edit::Item::ArrayOfTables(digests);
    let mut s = toml_edit::Table::new();
    s["host"] = toml_edit::value(smtp.host.as_str());
    s["port"] = toml_edit::value(i64::from(smtp.port.expect("port")));
    s["tls"] = toml_edit::value(match smtp.tls {
        TlsMode::Starttls => "starttls",
        TlsMode::Tls => "tls",
        TlsMode::None => "none",
    });
    if let Some(user) = &smtp.username {
        s["username"] = toml_edit::value(user.as_str());
    }
    if let Some(p) = &smtp.password_file {
        s["password_file"] = toml_edit::value(p.to_string_lossy().as_ref());
    }
    s["from"] = toml_edit::value(smtp.from.as_str());
    if let Some(p) = &smtp.ca_file {
        s["ca_file"] = toml_edit::value(p.to_string_lossy().as_ref());
    }
    s["timeout"] = toml_edit::value("10s");
    doc["smtp"] = toml_edit::Item::Table(s);
    config::load_str("test config", &doc.to_string())
        .unwrap_or_else(|e| panic!("test config must load:\n{e}"))
}

/// `n` export-control stories from the test feed, stored and classified at `at`.
fn add_stories(store: &mut Store, n: usize, at: DateTime<Utc>) {
    store.sync_feeds([(FEED, "Test Wire")]).expect("sync feeds");
    let new: Vec<NewItem> = (0..n)
        .map(|i| {
            let title = format!("Entity List adds firm number {i}");
            NewItem::plain(
                Item {
                    guid: Some(format!("story-{i}")),
                    link: Some(format!("https://wire.policywatch.test/{i}")),
                    title: title.clone(),
                    summary: format!(
                        "The Commerce Department added firm {i} to the Entity List. {}",
                        "Background on licensing policy follows. ".repeat(8)
                    ),
                    published: Some(at - Duration::minutes(i as i64)),
                    feed_name: "Test Wire".into(),
                    ..Default::default()
                },
                vec![Verdict {
                    watch_id: "export-controls".into(),
                    score: 5.0,
                    evidence: vec![Evidence {
                        term: "\"entity list\"".into(),
                        set: None,
                        concept: None,
                        field: Field::Title,
                        start: 0,
                        end: "Entity List".len(),
                    }],
                }],
            )
        })
        .collect();
    store
        .insert_items(FEED, &new, at, None, &mut |id, _, _| id)
        .expect("insert");
}

/// Store, config and notifier for one test, with `n` stories waiting for the digest.
fn setup(store: &mut Store, smtp: &SmtpConfig, n: usize, max_stories: usize) -> (Loaded, Notifier) {
    let cfg = load_config(smtp, max_stories);
    let notifier = Notifier::new(&cfg).expect("notifier");
    notifier.register(store, &cfg, t0()).expect("register");
    add_stories(store, n, t0() + Duration::seconds(1));
    (cfg, notifier)
}

fn counts(r: &Report) -> (usize, usize, usize) {
    (r.sent, r.retrying, r.failed)
}

#[tokio::test]
async fn a_digest_arrives_once() {
    let Some(env) = Env::new() else { return };
    let server = env.start(Opts::default());
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(
        &mut store,
        &env.config(server.port, TlsMode::Starttls),
        3,
        150,
    );

    let r = notifier
        .flush(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .expect("flush");
    assert_eq!(counts(&r), (1, 0, 0));
    // What `run --once` prints for it.
    assert_eq!(r.texts.len(), 1);
    assert!(
        r.texts[0].starts_with(
            "mailed to Analyst <analyst@policywatch.test>: Entity List adds firm number 0 — 3 export controls and technology sanctions (250 "
        ),
        "{:?}",
        r.texts
    );
    let delivery = store.delivery(1).expect("delivery 1");
    assert_eq!(delivery.status, "sent");

    let files = env.messages();
    assert_eq!(files.len(), 1);
    let parsed = parse_message(&files[0]);
    assert_eq!(
        header_values(&parsed, "Message-ID"),
        vec![format!("<{}>", delivery.message_id)]
    );
    assert_eq!(
        header_values(&parsed, "List-Id"),
        vec!["<daily.policywatch.policywatch.test>"]
    );
    assert_eq!(
        header_values(&parsed, "Subject"),
        vec!["Entity List adds firm number 0 — 3 export controls and technology sanctions"]
    );
    let text = parsed["parts"][0]["text"].as_str().expect("text");
    for i in 0..3 {
        assert_eq!(
            text.matches(&format!("Entity List adds firm number {i}\n"))
                .count(),
            1,
            "{text}"
        );
    }

    // Nothing new: further passes send nothing.
    let r = notifier
        .flush(&mut store, &cfg, t0() + Duration::minutes(2))
        .await
        .expect("flush");
    assert_eq!(counts(&r), (0, 0, 0));
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::minutes(3))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 0, 0));
    assert_eq!(env.messages().len(), 1);
}

#[tokio::test]
async fn a_relay_that_is_down_for_a_while_gets_the_digest_once_when_back() {
    let Some(env) = Env::new() else { return };
    let port = smtp::dead_port();
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(&mut store, &env.config(port, TlsMode::Starttls), 2, 150);

    let r = notifier.flush(&mut store, &cfg, t0()).await.expect("flush");
    assert_eq!(counts(&r), (0, 1, 0), "connection refused is retried later");
    let d = store.delivery(1).expect("delivery");
    assert_eq!((d.status.as_str(), d.attempts), ("pending", 1));
    assert!(d.next_attempt_at > t0(), "backs off");
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach"),
        "{d:?}"
    );

    // Before the backoff has passed nothing is attempted.
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::seconds(5))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 0, 0));

    // Still down at the retry: backs off further.
    let r = notifier
        .tick(&mut store, &cfg, d.next_attempt_at)
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 1, 0));
    let d2 = store.delivery(1).expect("delivery");
    assert_eq!(d2.attempts, 2);

    // The relay comes back on the same port.
    let _server = env.start(Opts {
        port,
        ..Opts::default()
    });
    let r = notifier
        .tick(&mut store, &cfg, d2.next_attempt_at)
        .await
        .expect("tick");
    assert_eq!(counts(&r), (1, 0, 0));
    let r = notifier
        .tick(&mut store, &cfg, d2.next_attempt_at + Duration::hours(1))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 0, 0));
    let files = env.messages();
    assert_eq!(files.len(), 1, "delivered exactly once");
    assert_eq!(
        header_values(&parse_message(&files[0]), "Message-ID"),
        vec![format!("<{}>", d.message_id)]
    );
    assert_eq!(store.delivery(1).expect("delivery").status, "sent");
}

#[tokio::test]
async fn a_relay_down_for_days_is_given_up_once() {
    // No server process at all: runs with or without python.
    let smtp = smtp::dead_server_config();
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(&mut store, &smtp, 1, 150);
    let r = notifier.flush(&mut store, &cfg, t0()).await.expect("flush");
    assert_eq!(counts(&r), (0, 1, 0));
    let created = store.delivery(1).expect("delivery").created_at;
    // Just before the limit it is still retried...
    let r = notifier
        .tick(
            &mut store,
            &cfg,
            created + Duration::days(3) - Duration::minutes(1),
        )
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 1, 0));
    // ...at the limit it is given up, once.
    let d = store.delivery(1).expect("delivery");
    let r = notifier
        .tick(&mut store, &cfg, d.next_attempt_at + Duration::days(1))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 0, 1));
    let d = store.delivery(1).expect("delivery");
    assert_eq!(d.status, "failed");
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .starts_with("gave up after 3 attempts over 3days"),
        "{d:?}"
    );
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::days(30))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 0, 0));
}

#[tokio::test]
async fn too_large_is_retried_once_trimmed() {
    let Some(env) = Env::new() else { return };
    // Sixty stories make ~100 KB; a quarter of them fits under 40 KB.
    let server = env.start(Opts {
        max_bytes: Some(40_000),
        ..Opts::default()
    });
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(
        &mut store,
        &env.config(server.port, TlsMode::Starttls),
        60,
        150,
    );

    let r = notifier.flush(&mut store, &cfg, t0()).await.expect("flush");
    assert_eq!(counts(&r), (0, 1, 0));
    let d = store.delivery(1).expect("delivery");
    let trim = d.trim_to.expect("trimmed after 552");
    assert!((1..60).contains(&trim), "{d:?}");
    assert_eq!(d.next_attempt_at, t0(), "the trimmed retry is due at once");

    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (1, 0, 0));
    let rejections = env.rejections();
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0]["code"], 552);
    let files = env.messages();
    assert_eq!(files.len(), 1);
    let parsed = parse_message(&files[0]);
    let text = parsed["parts"][0]["text"].as_str().expect("text");
    let first = firm_numbers(text);
    let held = store.delivery(1).expect("delivery").deferred;
    assert!(held > 0, "the trimmed message holds stories back");
    assert_eq!(first.len() + held, 60, "{text}");
    assert!(
        text.contains(&format!("{held} more stories will come in the next digest")),
        "{text}"
    );
    // The subject counts what the message carries.
    assert_eq!(
        header_values(&parsed, "Subject"),
        vec![format!(
            "Entity List adds firm number 0 — {} export controls and technology sanctions",
            first.len()
        )]
    );
    // What was held back belongs to the next digests (each of which the relay refuses once
    // and takes trimmed): in the end every story arrives exactly once.
    for k in 1..=10 {
        let at = t0() + Duration::minutes(k);
        notifier.flush(&mut store, &cfg, at).await.expect("flush");
        notifier
            .tick(&mut store, &cfg, at + Duration::seconds(1))
            .await
            .expect("tick");
    }
    let mut seen: Vec<usize> = Vec::new();
    for f in env.messages() {
        seen.extend(firm_numbers(
            parse_message(&f)["parts"][0]["text"]
                .as_str()
                .expect("text"),
        ));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..60).collect::<Vec<_>>(),
        "every story exactly once"
    );
}

/// The story numbers ("Entity List adds firm number N") a text part carries, in order.
fn firm_numbers(text: &str) -> Vec<usize> {
    text.split("Entity List adds firm number ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// A relay that refuses even the trimmed digest as too large needs the operator (a relay
/// limit to raise, or `max_message_bytes` to set): the delivery is held — pending, never
/// looping, never given up — and tried again after a reload.
#[tokio::test]
async fn too_large_even_when_trimmed_is_held_and_never_loops() {
    let Some(env) = Env::new() else { return };
    let server = env.start(Opts {
        max_bytes: Some(1_000),
        ..Opts::default()
    });
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(
        &mut store,
        &env.config(server.port, TlsMode::Starttls),
        8,
        150,
    );

    let r = notifier.flush(&mut store, &cfg, t0()).await.expect("flush");
    assert_eq!(counts(&r), (0, 1, 0));
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!((counts(&r), r.held), ((0, 0, 0), 1));
    let d = store.delivery(1).expect("delivery");
    assert_eq!((d.status.as_str(), d.held), ("pending", true));
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .contains("max_message_bytes"),
        "{d:?}"
    );
    for h in [1, 2, 24, 100] {
        let r = notifier
            .tick(&mut store, &cfg, t0() + Duration::hours(h))
            .await
            .expect("tick");
        assert_eq!(
            r.failed + r.retrying + r.held,
            0,
            "hour {h}: no further attempts: {:?}",
            r.texts
        );
    }
    assert_eq!(
        env.rejections().len(),
        2,
        "the full digest and the trimmed one"
    );
    assert!(env.messages().is_empty());
    let problems = notify::problems(&store, &cfg, t0()).expect("problems");
    assert!(
        matches!(problems.as_slice(), [Problem::Held { delivery }] if delivery.id == 1),
        "{problems:?}"
    );
    // A reload releases it: one more attempt (still refused here), held again.
    assert_eq!(
        store
            .release_held(None, t0() + Duration::days(5))
            .expect("release"),
        1
    );
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::days(5))
        .await
        .expect("tick");
    assert_eq!(r.held, 1);
    assert_eq!(env.rejections().len(), 3);
}

/// Issue 13 item 2: `to = [good, bad]` and a 550 for bad at RCPT TO. The good recipient gets
/// the digest; bad is failed for itself only, recorded and reported; nothing is resent.
#[tokio::test]
async fn a_refused_recipient_fails_alone_and_the_other_gets_the_digest() {
    let Some(env) = Env::new() else { return };
    let good = "Analyst <analyst@policywatch.test>";
    let bad = "gone@policywatch.test";
    let server = env.start(Opts {
        reject_rcpt: vec![bad.to_string()],
        ..Opts::default()
    });
    let smtp = env.config(server.port, TlsMode::Starttls);
    let mut store = Store::open_in_memory().expect("store");
    // The refused address first: its refusal must not stop the send to the next one.
    let cfg = load_config_to(&smtp, 150, &[bad, good]);
    let notifier = Notifier::new(&cfg).expect("notifier");
    notifier.register(&mut store, &cfg, t0()).expect("register");
    add_stories(&mut store, 3, t0() + Duration::seconds(1));

    let r = notifier
        .flush(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .expect("flush");
    assert_eq!(
        (counts(&r), r.recipients_failed),
        ((1, 0, 0), 1),
        "{:?}",
        r.texts
    );
    assert_eq!(
        env.envelope_recipients(),
        vec![vec!["analyst@policywatch.test".to_string()]]
    );
    let text = parse_message(&env.messages()[0])["parts"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    assert_eq!(
        text.matches("Entity List adds firm number").count(),
        3,
        "{text}"
    );

    let d = store.delivery(1).expect("delivery");
    assert_eq!(d.status, "sent");
    let rcpts = store.recipients(1).expect("recipients");
    let status: Vec<(&str, &str)> = rcpts
        .iter()
        .map(|r| (r.address.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(status, vec![(bad, "failed"), (good, "sent")]);
    assert!(
        rcpts[0].last_error.as_deref().unwrap_or("").contains("550"),
        "{rcpts:?}"
    );
    let problems = notify::problems(&store, &cfg, t0()).expect("problems");
    assert!(
        matches!(problems.as_slice(), [Problem::Recipient { address, .. }] if address == bad),
        "{problems:?}"
    );
    assert!(
        problems[0].line().contains("--resend 1 --to"),
        "{}",
        problems[0].line()
    );

    // Nothing is retried or resent to anyone.
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::hours(2))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 0, 0));
    assert_eq!(env.messages().len(), 1);
}

/// Issue 17 item 5: a wrong password (535) holds the delivery; it is not given up after days,
/// and once the operator fixes the relay and reloads it goes out with its Message-ID.
#[tokio::test]
async fn a_refused_login_holds_the_delivery_until_a_reload() {
    let Some(env) = Env::new() else { return };
    let port = {
        let s = env.start(Opts {
            auth_reject: true,
            ..Opts::default()
        });
        let mut store = Store::open_in_memory().expect("store");
        let smtp = env.config(s.port, TlsMode::Starttls);
        let (cfg, notifier) = setup(&mut store, &smtp, 2, 150);
        let r = notifier.flush(&mut store, &cfg, t0()).await.expect("flush");
        assert_eq!((counts(&r), r.held), ((0, 0, 0), 1), "{:?}", r.texts);
        let d = store.delivery(1).expect("delivery");
        assert_eq!((d.status.as_str(), d.held), ("pending", true));
        assert!(
            d.last_error.as_deref().unwrap_or("").contains("535"),
            "{d:?}"
        );
        // Days later, without a reload: still held, not attempted, not given up.
        let r = notifier
            .tick(&mut store, &cfg, t0() + Duration::days(4))
            .await
            .expect("tick");
        assert_eq!((counts(&r), r.held), ((0, 0, 0), 0));
        assert_eq!(store.delivery(1).expect("delivery").status, "pending");

        // The operator fixes the password (here: the relay) and reloads.
        let port = s.port;
        drop(s);
        let _fixed = env.start(Opts {
            port,
            ..Opts::default()
        });
        store
            .release_held(None, t0() + Duration::days(4))
            .expect("release");
        let r = notifier
            .tick(&mut store, &cfg, t0() + Duration::days(4))
            .await
            .expect("tick");
        assert_eq!(counts(&r), (1, 0, 0), "{:?}", r.texts);
        let files = env.messages();
        assert_eq!(files.len(), 1);
        assert_eq!(
            header_values(&parse_message(&files[0]), "Message-ID"),
            vec![format!("<{}>", d.message_id)]
        );
        assert!(notify::problems(&store, &cfg, t0())
            .expect("problems")
            .is_empty());
        port
    };
    let _ = port;
}

/// Issue 17 item 4: a reload that removes a digest with a delivery due holds it (its stories
/// stay claimed and pending); the reload that brings the digest back sends it.
#[tokio::test]
async fn a_delivery_whose_digest_a_reload_removed_waits_for_it() {
    let smtp = smtp::dead_server_config();
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(&mut store, &smtp, 2, 150);
    let d = &cfg.digests[0];
    store
        .claim(&d.id, Kind::Digest, d.via.as_str(), &d.watches, t0(), false)
        .expect("claim")
        .expect("a delivery");
    // The reloaded config: the digest is gone (a log digest of another name instead).
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policywatch.toml"
    ))
    .expect("shipped")
    .parse()
    .expect("toml");
    doc["digests"][0]["id"] = toml_edit::value("renamed");
    doc["digests"][0]["via"] = toml_edit::value("log");
    let other = config::load_str("reloaded", &doc.to_string()).expect("config");
    let other_notifier = Notifier::new(&other).expect("notifier");
    let r = other_notifier
        .tick(&mut store, &other, t0() + Duration::minutes(1))
        .await
        .expect("tick");
    assert!(r.held >= 1, "{r:?}");
    let held = store.delivery(1).expect("delivery");
    assert_eq!((held.status.as_str(), held.held), ("pending", true));
    assert!(
        held.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no longer configured"),
        "{held:?}"
    );
    // Back to the config with the digest: released by the reload, attempted (the relay is
    // dead here, so it is deferred — pending, with its stories — not failed).
    store
        .release_held(None, t0() + Duration::minutes(2))
        .expect("release");
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::minutes(2))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (0, 1, 0));
    assert_eq!(store.delivery_stories(1).expect("stories").len(), 2);
}

#[tokio::test]
async fn a_restart_between_claim_and_send_delivers_once() {
    let Some(env) = Env::new() else { return };
    let server = env.start(Opts::default());
    let smtp = env.config(server.port, TlsMode::Starttls);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("policywatch.db");

    // The process that crashed: it claimed the stories (one transaction) and died.
    let claimed = {
        let mut store = Store::open(&db).expect("store");
        let (cfg, _notifier) = setup(&mut store, &smtp, 4, 150);
        let d = &cfg.digests[0];
        store
            .claim(
                &d.id,
                Kind::Digest,
                d.via.as_str(),
                &d.watches,
                t0() + Duration::seconds(2),
                false,
            )
            .expect("claim")
            .expect("a delivery")
    };
    assert!(env.messages().is_empty());

    // The restarted process: a new store handle, a new notifier.
    let mut store = Store::open(&db).expect("reopen");
    let cfg = load_config(&smtp, 150);
    let notifier = Notifier::new(&cfg).expect("notifier");
    notifier
        .register(&mut store, &cfg, t0() + Duration::minutes(1))
        .expect("register");
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (1, 0, 0));
    let r = notifier
        .flush(&mut store, &cfg, t0() + Duration::minutes(2))
        .await
        .expect("flush");
    assert_eq!(
        counts(&r),
        (0, 0, 0),
        "the stories were claimed once, and are sent"
    );
    let files = env.messages();
    assert_eq!(files.len(), 1);
    let parsed = parse_message(&files[0]);
    assert_eq!(
        header_values(&parsed, "Message-ID"),
        vec![format!("<{}>", claimed.message_id)]
    );
    let text = parsed["parts"][0]["text"].as_str().expect("text");
    assert_eq!(text.matches("Entity List adds firm number").count(), 4);
}

#[tokio::test]
async fn a_crash_after_the_server_accepted_resends_the_same_message_id() {
    let Some(env) = Env::new() else { return };
    let server = env.start(Opts::default());
    let smtp = env.config(server.port, TlsMode::Starttls);
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(&mut store, &smtp, 2, 150);
    let d = &cfg.digests[0];
    let delivery = store
        .claim(&d.id, Kind::Digest, d.via.as_str(), &d.watches, t0(), false)
        .expect("claim")
        .expect("a delivery");

    // The crashed process got as far as the server's acceptance, not as far as mark_sent.
    let mailer = Mailer::new(&smtp).expect("mailer");
    let rendered = policywatch::digest::render(
        &policywatch::digest::Digest {
            id: "daily".into(),
            title: "t".into(),
            generated_at: t0(),
            timezone: chrono_tz::UTC,
            sections: vec![],
            feed_health: vec![],
            kind: policywatch::digest::DigestKind::Digest,
            detail: Default::default(),
            contact: None,
            deferred: 0,
        },
        &Default::default(),
    );
    let msg = mailer
        .build_message(
            &d.to,
            &rendered,
            &delivery.message_id,
            delivery.created_at,
            &mailer.list_id("daily"),
        )
        .expect("message");
    mailer.send(&msg).await.expect("accepted");

    // After the restart the pending delivery goes out again: at-least-once, but with the same
    // Message-ID (and Date), so mail clients and archives recognise the duplicate.
    let r = notifier
        .tick(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .expect("tick");
    assert_eq!(counts(&r), (1, 0, 0));
    let files = env.messages();
    assert_eq!(files.len(), 2);
    let ids: Vec<Vec<String>> = files
        .iter()
        .map(|f| header_values(&parse_message(f), "Message-ID"))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], vec![format!("<{}>", delivery.message_id)]);
    let dates: Vec<Vec<String>> = files
        .iter()
        .map(|f| header_values(&parse_message(f), "Date"))
        .collect();
    assert_eq!(dates[0], dates[1]);
}

#[test]
fn email_digests_need_smtp_and_recipients() {
    let base = "[[watches]]\nid = \"w\"\nquery = \"chip\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"email\"\nto = [\"a@example.org\"]\n",
            "no [smtp] section",
        ),
        (
            "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"email\"\n\
             [smtp]\nhost = \"smtp.example.org\"\nfrom = \"a@example.org\"\n",
            "no recipients",
        ),
        (
            "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"email\"\nto = [\"not an address\"]\n\
             [smtp]\nhost = \"smtp.example.org\"\nfrom = \"a@example.org\"\n",
            "is not a mail address",
        ),
        (
            "[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"email\"\nto = [\"a@example.org\"]\n\
             [smtp]\nhost = \"smtp.example.org\"\ntls = \"none\"\nfrom = \"a@example.org\"\n",
            "only for a relay on loopback",
        ),
    ];
    for (digests, want) in cases {
        let src = format!("{base}{digests}");
        let err = config::load_str("t.toml", &src)
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    let ok = format!(
        "{base}[[digests]]\nid = \"d\"\nschedule = \"hourly\"\nvia = \"email\"\nto = [\"a@example.org\"]\n\
         [smtp]\nhost = \"smtp.example.org\"\nfrom = \"policywatch <a@example.org>\"\n"
    );
    config::load_str("t.toml", &ok).unwrap_or_else(|e| panic!("{e}"));
}

/// Stores `items` (each with its verdicts) from the test feed at `at`.
fn add_items(store: &mut Store, items: Vec<(Item, Vec<Verdict>)>, at: DateTime<Utc>) {
    store.sync_feeds([(FEED, "Test Wire")]).expect("sync feeds");
    let new: Vec<NewItem> = items
        .into_iter()
        .map(|(item, verdicts)| NewItem::plain(item, verdicts))
        .collect();
    store
        .insert_items(FEED, &new, at, None, &mut |id, _, _| id)
        .expect("insert");
}

/// The strings of a JSON array from the parser.
fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

/// Evidence for `word` in `text`, written in the query as `term`.
fn evidence(text: &str, word: &str, term: &str, field: Field) -> Evidence {
    let start = text.find(word).expect(word);
    Evidence {
        term: term.into(),
        set: None,
        concept: None,
        field,
        start,
        end: start + word.len(),
    }
}

#[tokio::test]
async fn digests_of_10_150_and_1000_stories_stay_under_100_kb_and_the_rest_comes_next() {
    let Some(env) = Env::new() else { return };
    let server = env.start(Opts::default());
    let smtp = env.config(server.port, TlsMode::Starttls);
    for n in [10usize, 150, 1000] {
        let mut store = Store::open_in_memory().expect("store");
        let (cfg, notifier) = setup(&mut store, &smtp, n, 150);
        let before = env.messages().len();
        let mut firings = 0;
        // One digest a minute until the store has nothing left for it.
        for k in 1..=40 {
            let r = notifier
                .flush(&mut store, &cfg, t0() + Duration::minutes(k))
                .await
                .expect("flush");
            if r.sent == 0 {
                break;
            }
            assert_eq!(counts(&r), (1, 0, 0), "{n}: {:?}", r.texts);
            firings += 1;
        }
        let files = &env.messages()[before..];
        assert_eq!(files.len(), firings);
        let mut seen = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let parsed = parse_message(f);
            let size = parsed["size"].as_u64().expect("size");
            assert!(size < 100_000, "{n} stories, message {i}: {size} bytes");
            let text = parsed["parts"][0]["text"].as_str().expect("text");
            let html = parsed["parts"][1]["text"].as_str().expect("html");
            let here = firm_numbers(text);
            seen.extend(here.iter().copied());
            let left = n - seen.len();
            let line = format!("{left} more stories will come in the next digest");
            assert_eq!(text.contains(&line), left > 0, "{n}/{i}: {line}");
            assert_eq!(html.contains(&line), left > 0, "{n}/{i}: {line}");
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..n).collect::<Vec<_>>(),
            "{n}: every story exactly once"
        );
        if n == 10 {
            assert_eq!(firings, 1);
        } else {
            assert!(firings > 1, "{n} stories in one message?");
        }
    }
}

#[tokio::test]
async fn a_reader_digest_is_marked_up_for_mail_clients_and_escapes_feed_text() {
    let Some(env) = Env::new() else { return };
    let server = env.start(Opts::default());
    let mut store = Store::open_in_memory().expect("store");
    let (cfg, notifier) = setup(
        &mut store,
        &env.config(server.port, TlsMode::Starttls),
        0,
        150,
    );
    let at = t0() + Duration::seconds(1);
    let item = |i: usize, title: &str, summary: &str, link: &str, lang: Option<&str>| Item {
        guid: Some(format!("craft-{i}")),
        link: Some(link.into()),
        title: title.into(),
        summary: summary.into(),
        published: Some(at),
        feed_name: "Test Wire".into(),
        lang: lang.map(Into::into),
        ..Default::default()
    };
    let verdict = |watch: &str, score: f64, evidence: Vec<Evidence>| Verdict {
        watch_id: watch.into(),
        score,
        evidence,
    };
    let vi = "Mỹ đưa thêm công ty vào danh sách thực thể";
    let hostile = "Curbs <script>alert('x')</script> & \"AI\"\r\nBcc: victim@example.org";
    let tracked = "Dutch ASML licences tightened";
    let both = "Nvidia H20 export licences revoked";
    let dump = [
        ("export", "export*"),
        ("licences", "licen*"),
        ("revoked", "revok*"),
    ];
    add_items(
        &mut store,
        vec![
            (
                item(
                    1,
                    vi,
                    "Bộ Thương mại Mỹ công bố.",
                    "https://vn.example/a?utm_source=rss",
                    Some("vi"),
                ),
                vec![verdict(
                    "export-controls",
                    4.0,
                    vec![evidence(
                        vi,
                        "danh sách thực thể",
                        "\"danh sach thuc the\"",
                        Field::Title,
                    )],
                )],
            ),
            (
                item(
                    2,
                    hostile,
                    "<img src=x onerror=alert(1)> \"lead\"\r\nX-Injected: yes",
                    "https://wire.policywatch.test/h",
                    Some("en"),
                ),
                vec![verdict(
                    "export-controls",
                    3.0,
                    vec![evidence(hostile, "Curbs", "curb*", Field::Title)],
                )],
            ),
            (
                item(
                    3,
                    tracked,
                    "",
                    "https://wire.policywatch.test/3?id=3&fbclid=abc&utm_medium=email",
                    None,
                ),
                vec![verdict(
                    "export-controls",
                    2.0,
                    vec![evidence(tracked, "ASML", "asml", Field::Title)],
                )],
            ),
            (
                item(4, both, "", "https://wire.policywatch.test/4", Some("en")),
                vec![
                    verdict(
                        "export-controls",
                        6.0,
                        dump.iter()
                            .map(|(w, t)| evidence(both, w, t, Field::Title))
                            .chain([evidence(both, "H20", "h20", Field::Title)])
                            .collect(),
                    ),
                    verdict(
                        "ai-chips",
                        5.0,
                        vec![evidence(both, "Nvidia H20", "\"nvidia h20\"", Field::Title)],
                    ),
                ],
            ),
        ],
        at,
    );
    let r = notifier
        .flush(&mut store, &cfg, t0() + Duration::minutes(1))
        .await
        .expect("flush");
    assert_eq!(counts(&r), (1, 0, 0), "{:?}", r.texts);
    let files = env.messages();
    let parsed = parse_message(&files[0]);
    let text = parsed["parts"][0]["text"].as_str().expect("text");
    let html = &parsed["parts"][1]["html"];

    // Headers: the hostile title cannot add any; the subject is one line.
    for h in ["Bcc", "X-Injected"] {
        assert!(header_values(&parsed, h).is_empty(), "{h} injected");
    }
    let subject = header_values(&parsed, "Subject").join("");
    assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    assert!(
        subject.starts_with("Nvidia H20 export licences revoked — "),
        "{subject}"
    );
    assert!(
        subject
            .ends_with("4 export controls and technology sanctions, 1 AI chips and accelerators"),
        "{subject}"
    );

    // Markup a separate HTML parser sees: no script or image, the feed's text as text.
    let tags: Vec<&str> = strings(&html["tags"]).into_iter().collect();
    assert!(
        !tags.contains(&"script") && !tags.contains(&"img"),
        "{tags:?}"
    );
    let langs = html["langs"].as_array().expect("langs");
    let lang_of = |needle: &str| -> Vec<String> {
        langs
            .iter()
            .filter(|l| l["tag"] != "html" && l["text"].as_str().unwrap_or("").contains(needle))
            .map(|l| l["lang"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(langs[0]["tag"], "html");
    assert_eq!(langs[0]["lang"], "en");
    // Every headline carries a lang attribute. (The store keeps `Item.lang` once language
    // identification lands; until then every stored story reads as unknown, lang="". The
    // renderer's own codes are checked through the real relay in tests/mail_smtp.rs.)
    for title in [vi, tracked, both, "<script>alert('x')</script> & \"AI\""] {
        assert_eq!(lang_of(title).len(), 1, "{title}: {langs:?}");
    }
    let styles = strings(&html["styles"]).into_iter().collect::<String>();
    assert!(
        styles.contains("@media (prefers-color-scheme: dark)"),
        "{styles}"
    );

    // Links keep the article, lose the tracking.
    let hrefs: Vec<&str> = strings(&html["hrefs"]).into_iter().collect();
    assert!(
        hrefs.contains(&"https://wire.policywatch.test/3?id=3"),
        "{hrefs:?}"
    );
    assert!(hrefs.contains(&"https://vn.example/a"), "{hrefs:?}");
    for h in &hrefs {
        assert!(!h.contains("utm_") && !h.contains("fbclid"), "{h}");
    }
    assert!(!text.contains("utm_") && !text.contains("fbclid"));

    // Reader detail: concepts, no term dump, no score.
    for t in ["export*", "licen*", "revok*", "Matched:", "score"] {
        assert!(!text.contains(t), "{t} in the text part");
        assert!(
            !parsed["parts"][1]["text"]
                .as_str()
                .expect("html")
                .contains(t),
            "{t} in the html"
        );
    }
    assert!(text.contains("Why: Nvidia H20"), "{text}");

    // The story of both watches: once, with a badge for each.
    assert_eq!(text.matches(both).count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "* {both}  [Export controls and technology sanctions] [AI chips and accelerators]"
        )),
        "{text}"
    );
    let html_text = parsed["parts"][1]["text"].as_str().expect("html");
    assert_eq!(
        html_text
            .matches("href=\"https://wire.policywatch.test/4\"")
            .count(),
        1
    );
    assert!(html_text.contains(">AI chips and accelerators</span>"));
}
