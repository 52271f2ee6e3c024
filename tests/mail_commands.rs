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
    let c = server.config();
    let toml = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nusername = \"{USER}\"\n\
         password_file = {:?}\nfrom = \"policywatch <digests@policywatch.test>\"\nca_file = {:?}\n\
         [[watches]]\nid = \"w\"\nquery = \"nvidia\"\n\
         [[digests]]\nid = \"daily\"\nschedule = \"daily 07:30\"\nvia = \"email\"\nto = [\"{to}\"]\n",
        c.port.unwrap(),
        c.password_file.unwrap(),
        c.ca_file.unwrap()
    );
    let p = dir.join("pw.toml");
    std::fs::write(&p, toml).unwrap();
    p
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
        store
            .sync_feeds(
                loaded
                    .feeds
                    .iter()
                    .map(|f| (f.url.as_str(), f.name.as_str())),
            )
            .unwrap();
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
