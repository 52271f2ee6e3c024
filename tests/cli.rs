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

/// Issue 13: a state path that is a file said "File exists", and an unwritable state
/// directory "unable to open database file … Error code 14". Both now name the path, the
/// cause and what to do, and are not the config exit status 78.
#[test]
fn bad_state_directories_are_named_with_cause_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let feed = url::Url::from_file_path(fixture("en-tech.xml")).unwrap();
    let cfg = common::test_config(dir.path(), &[("Tech", feed.to_string())]);
    let run = |state: &Path| {
        let o = bin()
            .args(["run", "--once", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(state)
            .output()
            .unwrap();
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{err}");
        assert_ne!(o.status.code(), Some(78), "{err}");
        assert!(!err.contains("Error code"), "{err}");
        err
    };

    let file = dir.path().join("state-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = run(&file);
    assert!(
        err.contains(&format!("the state directory {} is a file", file.display())),
        "{err}"
    );
    // Also when the file is further up the path.
    let err = run(&file.join("sub"));
    assert!(
        err.contains(&format!("{} is a file", file.display())),
        "{err}"
    );

    // Unwritable: a read-only tmpfs as root (root ignores permission bits), mode 0555 as
    // anyone else.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let mounted = root
        && std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(&ro)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    if root && !mounted {
        println!("SKIPPED (unwritable part): cannot mount a read-only tmpfs");
        return;
    }
    let err = run(&ro);
    if mounted {
        let _ = std::process::Command::new("umount").arg(&ro).status();
    }
    assert!(
        err.contains(&format!(
            "cannot write in the state directory {}",
            ro.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("permission denied") || err.contains("read-only file system"),
        "{err}"
    );
    assert!(err.contains("StateDirectory="), "{err}");
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
    store.sync_feeds(loaded.feed_rows()).unwrap();
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

/// `run --once` over `cfg` and `state`.
fn run_once(cfg: &Path, state: &Path) -> Output {
    bin()
        .args(["run", "--once", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// Issue 13 item 6: every feed failing is not success.
#[test]
fn run_once_fails_when_every_feed_failed() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = common::test_config(
        dir.path(),
        &[
            ("One", format!("http://127.0.0.1:{dead}/a.xml")),
            ("Two", format!("http://127.0.0.1:{dead}/b.xml")),
        ],
    );
    let o = run_once(&cfg, &dir.path().join("state"));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("2 of 2 feeds failed"), "{out}");
}

/// The fixture feeds with the digest by email through a relay on a dead loopback port.
fn mail_to_dead_relay(dir: &Path) -> PathBuf {
    let cfg = file_config(dir);
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&cfg).unwrap().parse().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut smtp = toml_edit::Table::new();
    smtp["host"] = toml_edit::value("127.0.0.1");
    smtp["port"] = toml_edit::value(i64::from(dead));
    smtp["from"] = toml_edit::value("policywatch <pw@policywatch.test>");
    smtp["timeout"] = toml_edit::value("5s");
    doc["smtp"] = toml_edit::Item::Table(smtp);
    doc["digests"][0]["via"] = toml_edit::value("email");
    let mut to = toml_edit::Array::new();
    to.push("analyst@policywatch.test");
    doc["digests"][0]["to"] = toml_edit::value(to);
    std::fs::write(&cfg, doc.to_string()).unwrap();
    cfg
}

/// Deferred mail is its own exit status (75), and the next run names the pending delivery.
#[test]
fn run_once_says_deferred_mail_and_mentions_it_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mail_to_dead_relay(dir.path());
    let state = dir.path().join("state");
    let o = run_once(&cfg, &state);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}{err}");
    assert!(out.contains("mail deferred"), "{out}");
    let o = run_once(&cfg, &state);
    let (out, err) = text(&o);
    assert!(
        out.contains(
            "note: delivery 1 of digest `daily` (digest) is still pending from an earlier run"
        ),
        "{out}{err}"
    );
    // Its retry is not due yet (backoff): nothing else failed, so no 75 this time.
    assert_eq!(o.status.code(), Some(0), "{out}{err}");

    // The archive shows the stories as pending in that delivery; feeds lists the outbox.
    let o = bin()
        .args([
            "stories",
            "--since",
            "3650days",
            "--search",
            "entity list",
            "--config",
        ])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Entity List"), "{out}");
    assert!(out.contains("pending in `daily` delivery 1"), "{out}");
    let o = bin()
        .args([
            "stories", "--json", "--since", "3650days", "--watch", "ai-chips", "--config",
        ])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let (out, _) = text(&o);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty(), "{out}");
    for r in &rows {
        assert_eq!(r["watch"], "ai-chips", "{r}");
        assert_eq!(r["fates"][0]["state"], "pending", "{r}");
        assert_eq!(r["fates"][0]["delivery"], 1, "{r}");
    }
    let o = bin()
        .args(["feeds", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let (out, _) = text(&o);
    assert!(out.contains("DELIVERIES: 1 pending"), "{out}");

    // `digest --resend` of a pending delivery tries it now, whatever its backoff says; the
    // relay is still down, so it is deferred again (75), and --to is refused for it.
    let resend = |extra: &[&str]| {
        bin()
            .args(["digest", "--resend", "1"])
            .args(extra)
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap()
    };
    let o = resend(&[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}{err}");
    assert!(out.contains("mail deferred"), "{out}");
    let o = resend(&["--to", "x@policywatch.test"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("has not gone out yet"), "{err}");
}

/// Issue 13 item 6: `check` reads the password source as the daemon will, and says where.
#[test]
fn check_verifies_the_smtp_password_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mail_to_dead_relay(dir.path());
    let base = std::fs::read_to_string(&cfg).unwrap();
    let with = |extra: &str| {
        let path = dir.path().join("pw.toml");
        let mut doc: toml_edit::DocumentMut = base.parse().unwrap();
        doc["smtp"]["username"] = toml_edit::value("pw");
        let t: toml_edit::DocumentMut = extra.parse().unwrap();
        for (k, v) in t.iter() {
            doc["smtp"][k] = v.clone();
        }
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    };
    let check = |path: &Path, env: &[(&str, &str)]| {
        let mut c = bin();
        c.args(["check", "--config"]).arg(path);
        c.env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("PW_TEST_UNSET");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let (out, err) = text(&o);
        (o.status.code(), out, err)
    };

    let missing = dir.path().join("no-such-password");
    let p = with(&format!("password_file = '{}'", missing.display()));
    let (code, _, err) = check(&p, &[]);
    assert_eq!(code, Some(1), "{err}");
    let line = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("password_file"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("pw.toml:{line}:1: error:")), "{err}");
    assert!(
        err.contains("no-such-password") && err.contains("hint:"),
        "{err}"
    );

    std::fs::write(&missing, "s3cret\n").unwrap();
    let (code, out, err) = check(&p, &[]);
    assert_eq!(code, Some(0), "{out}{err}");

    let p = with("password_env = 'PW_TEST_UNSET'");
    let (code, _, err) = check(&p, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("PW_TEST_UNSET") && err.contains("not set"),
        "{err}"
    );
    let (code, _, err) = check(&p, &[("PW_TEST_UNSET", "x")]);
    assert_eq!(code, Some(0), "{err}");

    let p = with("password_credential = 'smtp-password'");
    let (code, out, err) = check(&p, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("warning:") && err.contains("only available under systemd"),
        "{err}"
    );
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let (code, _, err) = check(&p, &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("smtp-password"), "{err}");
}

/// The exit codes are documented where people look: `--help`.
#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let o = bin().args(args).output().unwrap();
        let (out, _) = text(&o);
        assert!(
            out.contains("Exit status") && out.contains("75") && out.contains("78"),
            "{args:?}: {out}"
        );
    }
    let o = bin().args(["digest", "--help"]).output().unwrap();
    assert!(text(&o).0.contains("--resend"), "{}", text(&o).0);
}
