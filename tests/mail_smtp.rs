//! Mail delivery against a real SMTP server process on loopback (tests/smtp/server.py):
//! STARTTLS with our own CA, AUTH, and scripted refusals. The received message is read back
//! with Python's `email` package, not with lettre, so a bug that lettre would read back
//! "correctly" still shows.

mod smtp;

use chrono::{TimeZone, Utc};
use policywatch::digest::{render, Digest, DigestKind, RenderLimits, Section, Story};
use policywatch::item::{Evidence, Field};
use policywatch::mail::{Mailer, TlsMode};
use policywatch::retry::SendClass;
use smtp::{header_values, parse_message, Opts, Single};

const HOSTILE_TITLE: &str =
    "Curbs on <chips> & \"AI\"\r\nX-Injected: yes\r\nBcc: victim@example.org";
const VI_TITLE: &str = "Mỹ siết xuất khẩu chip AI sang Trung Quốc";

fn digest(n_filler: usize) -> Digest {
    let t = Utc.with_ymd_and_hms(2026, 11, 27, 17, 4, 0).single();
    let story = |id: i64, title: &str, summary: &str| Story {
        item_id: id,
        title: title.into(),
        link: Some(format!("https://news.example/{id}")),
        feed_name: "Example Wire".into(),
        published: t,
        summary: summary.into(),
        summary_field: Field::Summary,
        score: 10.0 - id as f64,
        evidence: vec![Evidence {
            term: "chip*".into(),
            set: None,
            concept: None,
            field: Field::Summary,
            start: 0,
            end: 4,
        }],
        also_reported: vec![],
        ..Default::default()
    };
    let mut export = vec![story(
        1,
        HOSTILE_TITLE,
        "chips are subject to new licence rules",
    )];
    for i in 0..n_filler {
        export.push(story(
            100 + i as i64,
            &format!("Filler story {i}"),
            &format!("chips {}", "padding text ".repeat(40)),
        ));
    }
    Digest {
        id: "daily".into(),
        title: "policywatch daily digest".into(),
        generated_at: Utc
            .with_ymd_and_hms(2026, 11, 28, 6, 30, 0)
            .single()
            .expect("time"),
        timezone: "Europe/Berlin".parse().expect("tz"),
        sections: vec![
            Section {
                watch_id: "export-controls".into(),
                watch_name: "Export controls".into(),
                stories: export,
            },
            Section {
                watch_id: "ai-chips".into(),
                watch_name: "AI chips".into(),
                stories: vec![Story {
                    lang: Some("vi".into()),
                    ..story(2, VI_TITLE, "chip AI tiên tiến bị hạn chế xuất khẩu")
                }],
            },
        ],
        feed_health: vec![],
        kind: DigestKind::Digest,
        detail: Default::default(),
        contact: None,
        deferred: 0,
    }
}

/// A one-story digest as a message, for the tests about how a send fails or succeeds.
fn small_message(mailer: &Mailer) -> lettre::Message {
    mailer
        .build_message(
            &to(),
            &render(&digest(0), &RenderLimits::default()),
            "a@b.test",
            Utc::now(),
            "l.test",
        )
        .expect("message")
}

fn to() -> Vec<String> {
    vec![
        "Analyst <analyst@policywatch.test>".into(),
        "desk@policywatch.test".into(),
    ]
}

#[tokio::test]
async fn delivers_a_digest_that_an_independent_parser_reads() {
    let Some(server) = Single::start(Opts::default()) else {
        return;
    };
    let mailer = Mailer::new(&server.config()).expect("mailer");
    let rendered = render(&digest(0), &RenderLimits::default());
    let msg = mailer
        .build_message(
            &to(),
            &rendered,
            "delivery-7.daily@policywatch.test",
            Utc::now(),
            "daily.policywatch.test",
        )
        .expect("message");
    let reply = mailer.send(&msg).await.expect("accepted");
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(reply.contains("queued as test-1"), "{reply}");

    let files = server.messages();
    assert_eq!(files.len(), 1);
    let meta = server.meta(&files[0]);
    assert_eq!(meta["tls"], true, "{meta}");
    assert_eq!(meta["authenticated"], true, "{meta}");
    assert_eq!(meta["login"], smtp::USER);
    assert_eq!(meta["mail_from"], "digests@policywatch.test");
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["analyst@policywatch.test", "desk@policywatch.test"])
    );

    let parsed = parse_message(&files[0]);
    assert_eq!(parsed["defects"], serde_json::json!([]), "{parsed}");
    assert_eq!(
        header_values(&parsed, "Subject"),
        vec![rendered.subject.clone()]
    );
    assert_eq!(
        rendered.subject,
        "Curbs on <chips> & \"AI\" X-Injected: yes Bcc: victim@example.org — 1 export controls, 1 AI chips"
    );
    assert_eq!(
        header_values(&parsed, "Message-ID"),
        vec!["<delivery-7.daily@policywatch.test>"]
    );
    assert_eq!(
        header_values(&parsed, "Auto-Submitted"),
        vec!["auto-generated"]
    );
    assert_eq!(
        header_values(&parsed, "List-Id"),
        vec!["<daily.policywatch.test>"]
    );
    assert_eq!(header_values(&parsed, "Date").len(), 1);
    // The CR/LF in a story title could not make headers of its own.
    assert!(header_values(&parsed, "X-Injected").is_empty(), "{parsed}");
    assert!(header_values(&parsed, "Bcc").is_empty(), "{parsed}");

    assert_eq!(parsed["content_type"], "multipart/alternative");
    let parts = parsed["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2, "{parsed}");
    assert_eq!(parts[0]["content_type"], "text/plain");
    assert_eq!(parts[1]["content_type"], "text/html");
    let text = parts[0]["text"].as_str().expect("text");
    let html = parts[1]["text"].as_str().expect("html");
    // The decoded parts are exactly what the renderer produced (modulo line endings).
    assert_eq!(text.replace("\r\n", "\n"), rendered.text);
    assert_eq!(html.replace("\r\n", "\n"), rendered.html);
    assert!(text.contains("* Curbs on <chips> & \"AI\" X-Injected: yes Bcc: victim@example.org\n"));
    assert!(text.contains(VI_TITLE));
    assert!(html.contains("Curbs on &lt;chips&gt; &amp; &quot;AI&quot; X-Injected: yes"));
    assert!(html.contains(VI_TITLE));
    // "chip*" is a generic word: not highlighted.
    assert!(!html.contains("class=\"pw-hl\""), "{html}");
    // An independent HTML parser finds the story's language on its headline and lead.
    let langs = parts[1]["html"]["langs"].as_array().expect("langs");
    assert_eq!(
        (langs[0]["tag"].as_str(), langs[0]["lang"].as_str()),
        (Some("html"), Some("en"))
    );
    let vi: Vec<&str> = langs
        .iter()
        .filter(|l| l["lang"] == "vi")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(
        vi,
        vec![VI_TITLE, "chip AI tiên tiến bị hạn chế xuất khẩu"],
        "{langs:?}"
    );
    assert!(
        text.contains("Example Wire · Fri 27 Nov 2026, 18:04 CET · VI"),
        "{text}"
    );
}

#[tokio::test]
async fn implicit_tls_delivers_too() {
    let Some(server) = Single::start(Opts {
        mode: "tls",
        ..Opts::default()
    }) else {
        return;
    };
    let cfg = server.config();
    assert_eq!(cfg.tls, TlsMode::Tls);
    let mailer = Mailer::new(&cfg).expect("mailer");
    let msg = small_message(&mailer);
    mailer.send(&msg).await.expect("accepted");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn refused_login_is_a_clear_permanent_error() {
    let Some(server) = Single::start(Opts {
        auth_reject: true,
        ..Opts::default()
    }) else {
        return;
    };
    let mailer = Mailer::new(&server.config()).expect("mailer");
    let msg = small_message(&mailer);
    let err = mailer.send(&msg).await.expect_err("login refused");
    assert_eq!(err.code, Some(535), "{err:?}");
    assert!(!err.transient, "{err:?}");
    assert_eq!(err.class, SendClass::Hold, "{err:?}");
    assert!(err.message.contains("authentication"), "{err}");
    assert!(err.message.contains("username"), "{err}");
    assert!(!err.message.contains(smtp::PASSWORD), "{err}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn too_large_is_permanent_552_and_a_trimmed_digest_passes() {
    let Some(server) = Single::start(Opts {
        max_bytes: Some(40_000),
        ..Opts::default()
    }) else {
        return;
    };
    let mailer = Mailer::new(&server.config()).expect("mailer");
    let d = digest(200);
    let big = render(&d, &RenderLimits::default());
    let msg = mailer
        .build_message(&to(), &big, "big@b.test", Utc::now(), "l.test")
        .expect("message");
    assert!(msg.formatted().len() > 40_000);
    let err = mailer.send(&msg).await.expect_err("too large");
    assert_eq!(err.code, Some(552), "{err:?}");
    assert!(!err.transient);
    assert!(err.is_too_large(), "{err:?}");
    assert!(err.message.contains("too large"), "{err}");

    // What notify does next: render for a quarter of the budget, hand the overflow back for
    // the next digest, and send once more.
    let small = render(
        &d,
        &RenderLimits {
            max_stories: 10,
            max_bytes: policywatch::digest::MAX_MESSAGE_BYTES / 4,
            ..RenderLimits::default()
        },
    );
    assert!(small.trimmed > 0);
    let msg = mailer
        .build_message(&to(), &small, "big@b.test", Utc::now(), "l.test")
        .expect("message");
    mailer.send(&msg).await.expect("trimmed digest accepted");
    let files = server.messages();
    assert_eq!(files.len(), 1);
    let parsed = parse_message(&files[0]);
    let text = parsed["parts"][0]["text"].as_str().expect("text");
    assert!(
        text.contains(&format!(
            "{} more stories will come in the next digest",
            small.trimmed
        )),
        "{text}"
    );
}

#[tokio::test]
async fn temporary_refusal_is_transient_and_the_retry_goes_through() {
    let Some(server) = Single::start(Opts {
        tempfail: 1,
        ..Opts::default()
    }) else {
        return;
    };
    let mailer = Mailer::new(&server.config()).expect("mailer");
    let msg = small_message(&mailer);
    let err = mailer.send(&msg).await.expect_err("451 first");
    assert_eq!(err.code, Some(451), "{err:?}");
    assert!(err.transient);
    assert!(!err.is_too_large());
    mailer.send(&msg).await.expect("second attempt accepted");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn server_down_is_transient() {
    // No python needed: nothing listens on this port.
    let cfg = smtp::dead_server_config();
    let mailer = Mailer::new(&cfg).expect("mailer");
    let msg = small_message(&mailer);
    let err = mailer.send(&msg).await.expect_err("nothing listens");
    assert!(err.transient, "{err:?}");
    assert_eq!(err.code, None);
    assert!(
        err.message.contains("cannot reach SMTP server 127.0.0.1:"),
        "{err}"
    );
}

/// lettre's transport times out the TCP connect only. Here each phase has its own deadline:
/// a relay that takes the message and never gives the final reply, and one that accepts the
/// connection and never greets, both end in a transient "did not answer" naming the phase.
/// (The outer timeouts are hang guards, far above `[smtp] timeout`; nothing is timed.)
#[tokio::test]
async fn a_silent_relay_ends_in_a_transient_timeout_at_every_phase() {
    let guard = std::time::Duration::from_secs(60);
    // Never greets: accepts and holds the connection.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut cfg = smtp::dead_server_config();
    cfg.port = Some(mute.local_addr().expect("addr").port());
    cfg.timeout = std::time::Duration::from_secs(1);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = mute.accept().await {
            held.push(sock);
        }
    });
    let mailer = Mailer::new(&cfg).expect("mailer");
    let msg = small_message(&mailer);
    let err = tokio::time::timeout(guard, mailer.send(&msg))
        .await
        .expect("the send ends by itself")
        .expect_err("no greeting");
    assert_eq!(err.class, SendClass::Transient, "{err:?}");
    assert!(
        err.message.contains("did not answer") && err.message.contains("greeting"),
        "{err}"
    );
    holder.abort();

    // Silent after DATA.
    let Some(server) = Single::start(Opts {
        hang_after_data: true,
        ..Opts::default()
    }) else {
        return;
    };
    let mut cfg = server.config();
    cfg.timeout = std::time::Duration::from_secs(1);
    let mailer = Mailer::new(&cfg).expect("mailer");
    let msg = small_message(&mailer);
    let err = tokio::time::timeout(guard, mailer.send(&msg))
        .await
        .expect("the send ends by itself")
        .expect_err("no final reply");
    assert_eq!(err.class, SendClass::Transient, "{err:?}");
    assert!(err.message.contains("DATA and the final reply"), "{err}");
    assert_eq!(server.env.hung().len(), 1, "the relay had the message");
}

#[tokio::test]
async fn untrusted_certificate_is_refused_with_a_hint() {
    let Some(server) = Single::start(Opts::default()) else {
        return;
    };
    let mut cfg = server.config();
    cfg.ca_file = None; // only the public roots: our test CA is not among them
    let mailer = Mailer::new(&cfg).expect("mailer");
    let msg = small_message(&mailer);
    let err = mailer.send(&msg).await.expect_err("untrusted");
    assert!(err.message.contains("TLS"), "{err}");
    assert!(err.message.contains("ca_file"), "{err}");
    // The operator's to fix: the delivery waits for them, it is not given up.
    assert_eq!(err.class, SendClass::Hold, "{err:?}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn never_sends_in_clear_text_when_the_server_lacks_starttls() {
    let Some(server) = Single::start(Opts {
        mode: "plain",
        auth: false,
        ..Opts::default()
    }) else {
        return;
    };
    let mut cfg = server.config();
    cfg.username = None;
    cfg.password_file = None;
    let mailer = Mailer::new(&cfg).expect("mailer");
    let msg = small_message(&mailer);
    let err = mailer.send(&msg).await.expect_err("no STARTTLS offered");
    assert!(err.message.contains("STARTTLS"), "{err}");
    assert_eq!(err.code, None, "{err:?}");
    assert_eq!(err.class, SendClass::Hold, "{err:?}");
    assert!(
        server.messages().is_empty(),
        "a message went out in clear text"
    );
}
