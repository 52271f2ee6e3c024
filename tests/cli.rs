//! The command-line contract, through the real binary: `check`, `classify --json/--explain`,
//! `run --once` on file:// feeds, `feeds` and `backtest` over the state it leaves.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::bin;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policywatch.toml")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_config_and_refuses_a_bad_one() {
    let o = bin()
        .arg("check")
        .arg("--config")
        .arg(shipped())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("ok"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[watches]]\nid = \"ai-chips\"\nquery = '''\n(nvidia OR amd\n  AND h100'''\n\n[[feeds]]\nurl = \"gopher://x\"\n",
    )
    .unwrap();
    let o = bin()
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("bad.toml:4:1"),
        "the rule error points into the multi-line query:\n{err}"
    );
    assert!(
        err.contains("bad.toml:8:7"),
        "the feed error is reported too:\n{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn classify_json_reports_every_item_matched_or_not() {
    let o = bin()
        .args(["classify", "--json", "--config"])
        .arg(shipped())
        .arg(fixture("vi-news.xml"))
        .arg(fixture("en-tech.xml"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let items: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 7, "every item, matched or not");
    let watches = |id: &str| -> Vec<String> {
        let it = items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"));
        it["watches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        watches("vi-1"),
        ["export-controls", "ai-chips"],
        "the Vietnamese story is both"
    );
    assert!(watches("vi-2").is_empty());
    assert!(watches("en-3").is_empty(), "potato chips are not AI chips");
    assert!(
        watches("en-4").is_empty(),
        "oil sanctions are not export controls"
    );
    let vi = items.iter().find(|i| i["id"] == "vi-1").unwrap();
    assert!(vi["watches"][0]["score"].as_f64().unwrap() > 0.0);
    assert!(!vi["watches"][0]["matched"].as_array().unwrap().is_empty());
    assert!(vi["link"]
        .as_str()
        .unwrap()
        .starts_with("https://vi.example.test/"));
}

#[test]
fn classify_explain_says_why() {
    let o = bin()
        .args(["classify", "--explain", "--config"])
        .arg(shipped())
        .arg(fixture("en-tech.xml"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Potato chip maker"), "{out}");
    assert!(
        out.contains("export-controls") && out.contains("ai-chips"),
        "{out}"
    );
}

#[test]
fn classify_fails_cleanly_on_a_missing_file() {
    let o = bin()
        .args(["classify", "--config"])
        .arg(shipped())
        .arg("/nonexistent/feed.xml")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/feed.xml"), "{err}");
}

/// A config polling the fixtures through file:// URLs, reporting regardless of their dates.
fn file_config(dir: &Path) -> PathBuf {
    let url = |f: &str| url::Url::from_file_path(fixture(f)).unwrap().to_string();
    common::test_config(
        dir,
        &[
            ("English desk", url("en-tech.xml")),
            ("Vietnamese desk", url("vi-news.xml")),
        ],
    )
}

#[test]
fn run_once_prints_the_digest_then_feeds_and_backtest_read_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = file_config(dir.path());
    let state = dir.path().join("state");
    let run = |extra: &[&str]| {
        bin()
            .args(["run", "--once", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Entity List"), "{out}");
    assert!(out.contains("xuất khẩu chip AI"), "{out}");
    assert!(!out.contains("Potato"), "{out}");

    let o = run(&["--all"]);
    let (out, _) = text(&o);
    assert!(
        out.contains("nothing new matched"),
        "a second poll reports nothing:\n{out}"
    );

    let line = feeds_line(&cfg, &state, "English desk");
    assert!(line.contains(" ok ") && line.contains(" 5 "), "{line}");

    // Narrow the ai-chips rule: backtest shows what would no longer match.
    let narrowed = std::fs::read_to_string(&cfg).unwrap();
    let mut doc: toml_edit::DocumentMut = narrowed.parse().unwrap();
    let watches = doc["watches"].as_array_of_tables_mut().unwrap();
    for w in watches.iter_mut() {
        if w["id"].as_str() == Some("ai-chips") {
            w["query"] = toml_edit::value("title:blackwell");
        }
    }
    let cfg2 = dir.path().join("narrow.toml");
    std::fs::write(&cfg2, doc.to_string()).unwrap();
    let o = bin()
        .args(["backtest", "--since", "3650days", "--config"])
        .arg(&cfg2)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("backtest over 7 stored items"), "{out}");
    assert!(
        out.contains("ai-chips: 2 match before, 0 after (+0 −2)"),
        "{out}"
    );
    assert!(out.contains("− ["), "{out}");
}

/// Issue 17: a feed the daemon registered but never polled showed "next poll 20788d ago" (the
/// epoch). It is due: "now", with the note "not polled yet".
#[test]
fn feeds_shows_a_never_polled_feed_as_due_now() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = file_config(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let loaded = policywatch::config::load(&cfg).unwrap();
    let mut store = policywatch::store::Store::open(&policywatch::store::db_path(&state)).unwrap();
    store
        .sync_feeds(
            loaded
                .feeds
                .iter()
                .map(|f| (f.url.as_str(), f.name.as_str())),
        )
        .unwrap();
    drop(store);
    let line = feeds_line(&cfg, &state, "English desk");
    assert!(!line.contains(" ago"), "{line}");
    // A --since beyond what a timestamp holds (it panicked): everything, which is nothing yet.
    let o = bin()
        .args(["backtest", "--since", "290000years", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        line.contains(" now ") && line.contains("not polled yet"),
        "{line}"
    );
}

/// The line of `policywatch feeds` for the feed called `name`.
fn feeds_line(cfg: &Path, state: &Path, name: &str) -> String {
    let o = bin()
        .args(["feeds", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    out.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// Issue 17: an empty file checked "ok" and ran doing nothing; a half-written one (feeds, no
/// watches, no digests) too. `check` refuses both with a position, and `run` exits 78 (the
/// config status the unit does not restart) on what `check` refuses.
#[test]
fn check_and_run_refuse_a_config_that_would_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let half = dir.path().join("half.toml");
    std::fs::write(&half, "[[feeds]]\nurl = \"https://a.test/f.xml\"\n").unwrap();
    for (cfg, says) in [
        (
            &empty,
            "empty.toml:1:1: error: no feeds, watches or digests",
        ),
        (
            &half,
            "half.toml:1:1: error: no [[watches]], no [[digests]]",
        ),
    ] {
        let o = bin().args(["check", "--config"]).arg(cfg).output().unwrap();
        let (out, err) = text(&o);
        assert!(!o.status.success(), "check passed:\n{out}");
        assert!(err.contains(says), "{err}");
        let o = bin()
            .args(["run", "--once", "--config"])
            .arg(cfg)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(78), "{:?}", text(&o));
        assert!(text(&o).1.contains(says), "{:?}", text(&o));
    }
}

/// `policywatch score` on a small labelled fixture of our own: the figures per watch and
/// language, the misses (one missed story, one wrong flag), and the same as JSON.
#[test]
fn score_prints_figures_per_watch_and_language_then_the_misses() {
    let dir = fixture("score");
    let run = |extra: &[&str]| {
        let o = bin()
            .arg("score")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--items")
            .arg(dir.join("items.jsonl"))
            .arg("--labels")
            .arg(dir.join("labels.tsv"))
            .args(extra)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        out
    };
    let out = run(&[]);
    assert!(
        out.starts_with(
            "7 labelled items scored (1 items without a label, 1 labels without an item)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "\nexport-controls: P 0.667  R 0.667  F1 0.667  (3 positives; tp 2 fp 1 fn 1 tn 2)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("\n  en   P 0.500  R 0.500  F1 0.500  (2 positives; tp 1 fp 1 fn 1 tn 1)\n"),
        "{out}"
    );
    // vi-2 has no lang in the file: it is told (Vietnamese), and English `ban` does not find
    // its "bán" (sell), so it is a true negative.
    assert!(
        out.contains("\n  vi   P 1.000  R 1.000  F1 1.000  (1 positives; tp 1 fp 0 fn 0 tn 1)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "misses of export-controls (2 of 2):\n  false negative en-3 [en] Chipmakers face new export licence rules\n  false positive en-4 [en] Casino bans poker chips at its tables\n"
        ),
        "{out}"
    );
    let out = run(&["--json", "--misses", "1"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let w = &v["watches"]["export-controls"];
    assert_eq!(
        (w["tp"].as_u64(), w["fp"].as_u64(), w["fn"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(w["by_lang"]["vi"]["tn"].as_u64(), Some(1));
    assert_eq!(w["misses"].as_array().map(Vec::len), Some(1));
    assert_eq!(w["misses"][0]["id"], "en-3");
    assert_eq!(w["misses"][0]["kind"], "false negative");
    assert_eq!(v["items"].as_u64(), Some(7));
}
