//! Immediate alerts through the notifier and a real SQLite file: a hit on an `immediate` watch
//! is sent at the next tick, hits that arrive together are coalesced, alerts are at most every
//! `alert_min_gap`, and the scheduled digest does not repeat what an alert already said.

use chrono::{DateTime, Duration, TimeZone, Utc};
use policywatch::config::{self, Loaded};
use policywatch::item::Item;
use policywatch::notify::Notifier;
use policywatch::store::{NewItem, Store};

const FEED: &str = "https://wire.policywatch.test/feed.xml";

fn cfg() -> Loaded {
    config::load_str(
        "alerts.toml",
        &format!(
            "[daemon]\nalert_min_gap = \"10m\"\n\
             [[feeds]]\nurl = \"{FEED}\"\nname = \"Wire\"\n\
             [[watches]]\nid = \"chips\"\nname = \"AI chips\"\nquery = \"nvidia OR ascend\"\nalert = \"immediate\"\n\
             [[watches]]\nid = \"rules\"\nname = \"Rules\"\nquery = '\"entity list\"'\n\
             [[digests]]\nid = \"daily\"\nschedule = \"daily 07:30\"\nvia = \"log\"\n"
        ),
    )
    .unwrap()
}

fn add(store: &mut Store, cfg: &Loaded, guid: &str, title: &str, at: DateTime<Utc>) {
    let item = Item {
        guid: Some(guid.into()),
        title: title.into(),
        feed_name: "Wire".into(),
        ..Default::default()
    };
    let verdicts = cfg.classifier.classify(&item);
    store
        .insert_items(
            FEED,
            &[NewItem::plain(item, verdicts)],
            at,
            None,
            &mut |id, _, _| id,
        )
        .unwrap();
}

#[tokio::test]
async fn immediate_alerts_are_prompt_coalesced_capped_and_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let cfg = cfg();
    store.sync_feeds([(FEED, "Wire")]).unwrap();
    let n = Notifier::new(&cfg).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
    n.register(&mut store, &cfg, t0).unwrap();
    let m = |mins: i64| t0 + Duration::minutes(mins);

    // Two hits together, and one for the digest-only watch.
    add(
        &mut store,
        &cfg,
        "a",
        "Nvidia ships a new accelerator",
        m(1),
    );
    add(&mut store, &cfg, "b", "Huawei Ascend output doubles", m(1));
    add(
        &mut store,
        &cfg,
        "c",
        "Commerce adds firms to the Entity List",
        m(1),
    );
    let r = n.tick(&mut store, &cfg, m(2)).await.unwrap();
    assert_eq!(
        r.texts.len(),
        1,
        "one alert carries both hits: {:?}",
        r.texts
    );
    let alert = &r.texts[0];
    assert!(
        alert.contains("Nvidia ships") && alert.contains("Ascend output"),
        "{alert}"
    );
    assert!(
        !alert.contains("Entity List"),
        "not an immediate watch: {alert}"
    );

    // Another hit within the gap waits...
    add(&mut store, &cfg, "d", "Nvidia books a charge", m(3));
    assert!(n
        .tick(&mut store, &cfg, m(4))
        .await
        .unwrap()
        .texts
        .is_empty());
    // ...and goes out once the gap has passed.
    let r = n.tick(&mut store, &cfg, m(13)).await.unwrap();
    assert_eq!(r.texts.len(), 1);
    assert!(r.texts[0].contains("books a charge") && !r.texts[0].contains("Nvidia ships"));

    // The next morning's digest has the digest-only story, and nothing an alert already sent.
    let r = n
        .tick(
            &mut store,
            &cfg,
            Utc.with_ymd_and_hms(2026, 11, 28, 7, 31, 0).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.texts.len(), 1, "{:?}", r.texts);
    let digest = &r.texts[0];
    assert!(digest.contains("Entity List"), "{digest}");
    for sent in ["Nvidia ships", "Ascend output", "books a charge"] {
        assert!(
            !digest.contains(sent),
            "{sent} was already alerted:\n{digest}"
        );
    }
    assert_eq!(store.outbox_depth().unwrap(), 0);
}

#[test]
fn import_and_export_opml_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let opml = dir.path().join("subs.opml");
    std::fs::write(
        &opml,
        r#"<?xml version="1.0"?><opml version="2.0"><head><title>mine</title></head><body>
<outline text="Policy"><outline text="BIS &amp; rules" type="rss" xmlUrl="https://gov.example.test/bis.rss"/></outline>
<outline text="Chips desk" type="rss" xmlUrl="https://news.example.test/chips.xml"/>
<outline text="not a feed" xmlUrl="ftp://x/y"/>
</body></opml>"#,
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_policywatch"))
        .arg("import-opml")
        .arg(&opml)
        .output()
        .unwrap();
    assert!(o.status.success());
    let toml_out = String::from_utf8(o.stdout).unwrap();
    assert!(
        toml_out.contains("https://gov.example.test/bis.rss"),
        "{toml_out}"
    );
    assert!(
        toml_out.contains("BIS & rules") && toml_out.contains("Policy"),
        "{toml_out}"
    );
    assert!(!toml_out.contains("ftp://"), "{toml_out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 feeds"));

    // What it prints is config: paste it after a watch, and `check` accepts it; export it back.
    let cfg = dir.path().join("pw.toml");
    std::fs::write(
        &cfg,
        format!("[[watches]]\nid = \"w\"\nquery = \"nvidia\"\n{toml_out}"),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_policywatch"))
        .args(["export-opml", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = String::from_utf8(o.stdout).unwrap();
    assert!(
        back.contains("xmlUrl=\"https://news.example.test/chips.xml\""),
        "{back}"
    );
    assert!(back.contains("BIS &amp; rules"), "{back}");
}
