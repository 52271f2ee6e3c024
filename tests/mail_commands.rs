//! The mail commands through the real binary: `send-test` against the loopback SMTP server
//! (and against a server that refuses the login), and `digest --preview`, which must render
//! what would be sent without claiming or marking anything.

mod common;
mod smtp;

use std::path::Path;

use common::bin;
use smtp::{header_values, parse_message, Opts, Single, USER};

/// A config with only an [smtp] section for `server` and an email digest to `to`.
fn smtp_config(dir: &Path, server: &Single, to: &str) -> std::path::PathBuf {
    smtp_config_to(dir, server, &[to], "")
}

/// [`smtp_config`] with several recipients and `extra` TOML (feeds) appended.
fn smtp_config_to(dir: &Path, server: &Single, to: &[&str], extra: &str) -> std::path::PathBuf {
    let c = server.config();
    let to: Vec<String> = to.iter().map(|a| format!("{a:?}")).collect();
    let toml = format!(
        "[daemon]\nbackfill = \"36500days\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nusername = \"{USER}\"\n\
         password_file = {:?}\nfrom = \"policywatch <digests@policywatch.test>\"\nca_file = {:?}\n\
         [[watches]]\nid = \"w\"\nquery = \"nvidia\"\n\
         [[digests]]\nid = \"daily\"\nschedule = \"daily 07:30\"\nvia = \"email\"\nto = [{}]\n{extra}",
        c.port.unwrap(),
        c.password_file.unwrap(),
        c.ca_file.unwrap(),
        to.join(", ")
    );
    let p = dir.join("pw.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

/// Issue 13 items 2 and "archive": a recipient refused at RCPT fails alone (`run --once` exits
/// 1 and says so), the archive shows the story delivered — digest, Message-ID — and failed for
/// whom, and `digest --resend N --to FIXED` sends it to the fixed address under a new
/// Message-ID that refers to the first; the refusal then stops being reported.
#[test]
fn a_refused_recipient_is_reported_archived_and_resent_to_a_fixed_address() {
    let bad = "typo@policywatch.test";
    let Some(server) = Single::start(Opts {
        reject_rcpt: vec![bad.to_string()],
        ..Opts::default()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.xml");
    std::fs::write(
        &feed,
        common::rss(&[(
            "n1",
            "Nvidia readies a China-compliant accelerator",
            "A cut-down part.",
        )]),
    )
    .unwrap();
    let url = url::Url::from_file_path(&feed).unwrap();
    let cfg = smtp_config_to(
        dir.path(),
        &server,
        &["analyst@policywatch.test", bad],
        &format!("[[feeds]]\nurl = \"{url}\"\nname = \"Wire\"\n"),
    );
    let state = dir.path().join("state");
    let cmd = |args: &[&str]| {
        let o = bin()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (o.status.code(), out, err)
    };

    let (code, out, err) = cmd(&["run", "--once"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("mailed to analyst@policywatch.test"), "{out}");
    assert!(
        out.contains(&format!("recipient {bad} refused for good")),
        "{out}"
    );
    assert!(err.contains("ERROR") || err.contains("error"), "{err}");
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    let first_id = header_values(&parse_message(&msgs[0]), "Message-ID");

    let (code, out, err) = cmd(&["feeds"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!(
            "recipient {bad} of digest `daily` refused delivery 1"
        )),
        "{out}"
    );

    let (_, out, _) = cmd(&["stories", "--since", "3650days"]);
    assert!(out.contains("Nvidia readies"), "{out}");
    let mid = first_id[0].trim_matches(|c| c == '<' || c == '>');
    assert!(
        out.contains("delivered by `daily`") && out.contains(mid),
        "{out}"
    );
    assert!(out.contains(&format!("failed for {bad}")), "{out}");

    let (code, out, err) = cmd(&["digest", "--resend", "1", "--to", "fixed@policywatch.test"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("resent delivery 1 to fixed@policywatch.test"),
        "{out}"
    );
    let msgs = server.messages();
    assert_eq!(msgs.len(), 2);
    let parsed = parse_message(&msgs[1]);
    assert_ne!(header_values(&parsed, "Message-ID"), first_id);
    assert_eq!(header_values(&parsed, "References"), first_id);
    let text = parsed["parts"][0]["text"].as_str().unwrap();
    assert!(text.contains("Nvidia readies"), "{text}");
    assert_eq!(
        server.env.envelope_recipients()[1],
        vec!["fixed@policywatch.test".to_string()]
    );
    let (_, out, _) = cmd(&["feeds"]);
    assert!(
        !out.contains("refused delivery"),
        "resolved by the resend:\n{out}"
    );

    let (code, _, err) = cmd(&["digest", "--resend", "99"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("there is no delivery 99"), "{err}");
}

#[test]
fn send_test_reports_what_the_server_said() {
    let Some(server) = Single::start(Opts::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = smtp_config(dir.path(), &server, "analyst@policywatch.test");
    let o = bin()
        .args(["send-test", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("sent to analyst@policywatch.test") && out.contains("250"),
        "{out}"
    );
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    let parsed = parse_message(&msgs[0]);
    assert_eq!(
        header_values(&parsed, "Subject"),
        ["policywatch test message"],
        "{parsed}"
    );

    // --to overrides the digest's recipients.
    let o = bin()
        .args(["send-test", "--to", "other@policywatch.test", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("other@policywatch.test"));
}

#[test]
fn send_test_says_why_a_server_refused() {
    let Some(server) = Single::start(Opts {
        auth_reject: true,
        ..Opts::default()
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = smtp_config(dir.path(), &server, "analyst@policywatch.test");
    let o = bin()
        .args(["send-test", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("not sent") && err.contains("535") && err.contains("permanent"),
        "{err}"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn digest_preview_renders_without_claiming() {
    use policywatch::config;
    use policywatch::item::{Evidence, Field, Item, Verdict};
    use policywatch::store::{NewItem, Store};

    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("pw.toml");
    std::fs::write(
        &cfg_path,
        "[[feeds]]\nurl = \"https://wire.policywatch.test/feed.xml\"\nname = \"Wire\"\n\
         [[watches]]\nid = \"w\"\nname = \"Chips\"\nquery = \"nvidia\"\n\
         [[digests]]\nid = \"daily\"\nschedule = \"daily 07:30\"\nvia = \"log\"\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    {
        let loaded = config::load(&cfg_path).unwrap();
        let mut store = Store::open(&state.join("policywatch.db")).unwrap();
        store.sync_feeds(loaded.feed_rows()).unwrap();
        let t0 = chrono::Utc::now() - chrono::Duration::minutes(5);
        store.digest_state("daily", t0).unwrap();
        let item = Item {
            guid: Some("n1".into()),
            link: Some("https://wire.policywatch.test/n1".into()),
            title: "Nvidia readies a China-compliant accelerator".into(),
            summary: "A cut-down part to fit export rules.".into(),
            feed_name: "Wire".into(),
            ..Default::default()
        };
        let v = Verdict {
            watch_id: "w".into(),
            score: 2.0,
            evidence: vec![Evidence {
                term: "nvidia".into(),
                set: None,
                concept: None,
                field: Field::Title,
                start: 0,
                end: 6,
            }],
        };
        store
            .insert_items(
                &loaded.feeds[0].url,
                &[NewItem::plain(item, vec![v])],
                t0,
                None,
                &mut |id, _, _| id,
            )
            .unwrap();
    }
    let html = dir.path().join("preview.html");
    let preview = || {
        bin()
            .args(["digest", "--preview", "daily", "--config"])
            .arg(&cfg_path)
            .arg("--state-dir")
            .arg(&state)
            .arg("--html")
            .arg(&html)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let o = preview();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            out.contains("Nvidia readies a China-compliant accelerator"),
            "the same story both times:\n{out}"
        );
        assert!(std::fs::read_to_string(&html)
            .unwrap()
            .contains("China-compliant accelerator"));
    }
    let store = Store::open(&state.join("policywatch.db")).unwrap();
    assert_eq!(
        store.outbox_depth().unwrap(),
        0,
        "nothing was claimed or queued"
    );
    drop(store);
    // The real firing still has it.
    let mut store = Store::open(&state.join("policywatch.db")).unwrap();
    let d = store
        .claim(
            "daily",
            policywatch::store::Kind::Digest,
            "log",
            &["w".into()],
            chrono::Utc::now(),
            false,
        )
        .unwrap();
    assert!(d.is_some());
    let o = bin()
        .args(["digest", "--preview", "nope", "--config"])
        .arg(&cfg_path)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("there is no digest `nope`"));
}
