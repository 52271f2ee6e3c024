//! Helpers shared by the integration tests: the shipped watches compiled, a story as the daemon
//! would classify it, a test config built from the shipped one (so the shipped rules are
//! exercised), and one in-process `run --once`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use policywatch::config;
use policywatch::daemon::{self, ConfigSource, Control, Options, Summary};

/// The shipped config with its feeds and digests replaced: `feeds` are (name, url), one daily
/// log digest over every watch, short timeouts, no politeness delay (one loopback host), and a
/// backfill window wide enough that fixtures with fixed dates are always reported.
pub fn test_config_doc(feeds: &[(&str, String)]) -> toml_edit::DocumentMut {
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
    doc["daemon"]["backfill"] = toml_edit::value("36500days");
    doc["http"]["first_byte_timeout"] = toml_edit::value("2s");
    doc["http"]["total_timeout"] = toml_edit::value("4s");
    doc["http"]["per_host_gap"] = toml_edit::value("0s");
    doc["http"]["per_host_concurrency"] = toml_edit::value(8);
    doc
}

/// [`test_config_doc`] written to `dir/policywatch.toml`.
pub fn test_config(dir: &Path, feeds: &[(&str, String)]) -> PathBuf {
    let path = dir.join("policywatch.toml");
    std::fs::write(&path, test_config_doc(feeds).to_string()).unwrap();
    path
}

/// The real binary, run from a directory without `config/` and without the systemd variables,
/// so only what a test passes counts.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_policywatch"));
    c.current_dir(std::env::temp_dir())
        .env_remove("STATE_DIRECTORY")
        .env_remove("CONFIGURATION_DIRECTORY")
        .env_remove("NOTIFY_SOCKET");
    c
}

/// One `run --once` (with `--all` when `all`) over `state`.
pub async fn run_once(cfg: &Path, state: &Path, all: bool) -> Summary {
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

/// A small RSS document; `items` are (guid, title, description).
pub fn rss(items: &[(&str, &str, &str)]) -> String {
    rss_with(items, "")
}

/// Like [`rss`], with extra channel elements (e.g. `<ttl>180</ttl>`).
pub fn rss_with(items: &[(&str, &str, &str)], channel_extra: &str) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
         <link>https://x.test/</link><description>d</description>{channel_extra}"
    );
    for (guid, title, desc) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://x.test/{guid}</link>\
             <description>{desc}</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// Upper bound on any single wait in the daemon-level tests; reached only when something is
/// broken.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits until `cond` holds, checking every 50 ms, failing the test after [`DEADLINE`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The shipped default watches (config/policywatch.toml), compiled; a compile error is shown
/// at its line in the file.
pub fn shipped_classifier() -> policywatch::classify::Classifier {
    use policywatch::classify::{watches_from_toml, Classifier};
    let src = include_str!("../../config/policywatch.toml");
    let ws = watches_from_toml(src).expect("config/policywatch.toml parses");
    let ids: Vec<&str> = ws.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, vec!["export-controls", "ai-chips"]);
    match Classifier::compile(&ws) {
        Ok(c) => c,
        Err(errs) => {
            let msg: Vec<String> = errs
                .iter()
                .map(|e| e.render("config/policywatch.toml", src))
                .collect();
            panic!("default rules do not compile:\n{}", msg.join("\n"));
        }
    }
}

/// A story as the daemon would classify it: its language told from its text by the
/// language-identification stage.
pub fn story(title: &str, summary: &str) -> policywatch::item::Item {
    let mut it = policywatch::item::Item {
        title: title.into(),
        summary: summary.into(),
        ..Default::default()
    };
    policywatch::lang::fill(&mut it);
    it
}
