//! The daemon as systemd runs it: the REAL binary, started with `NOTIFY_SOCKET` pointing at a
//! unix datagram socket this test owns, `WATCHDOG_USEC`/`WATCHDOG_PID` set, `JOURNAL_STREAM`
//! set, feeds served by the loopback fault server, state in a temp directory. Signals are real
//! signals. Also checks the shipped unit file with `systemd-analyze` where it exists.
//!
//! Waiting is always "until this message arrives, or give up after a generous deadline" — the
//! deadline is a hang guard, never a timing assertion.

mod common;
mod smtp;
mod support;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

use common::{rss, until};
use support::{FaultServer, Response};

const BIN: &str = env!("CARGO_BIN_EXE_policywatch");
/// Upper bound on any single wait. Only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------ fixtures

const ENTITY: &str = "Commerce adds 12 Chinese firms to the Entity List over AI chip smuggling";
const H20: &str = "Nvidia H20 sales to China halted under a new export license rule";

fn policy_feed() -> String {
    rss(&[
        (
            "pw-1",
            ENTITY,
            "The Bureau of Industry and Security tightened export controls on semiconductors.",
        ),
        (
            "pw-2",
            H20,
            "Nvidia said the US government now requires a license for H20 GPUs.",
        ),
        ("pw-3", "A bakery wins a prize", "Bread."),
    ])
}

struct FeedSpec<'a> {
    name: &'a str,
    url: String,
    interval: Option<&'a str>,
}

/// The shipped config (its watch rules) with test feeds, one log digest, short timeouts.
/// `extra` edits the document last (a listener, a broken rule, ...).
fn write_config(
    path: &Path,
    feeds: &[FeedSpec<'_>],
    first_byte_timeout: &str,
    extra: impl FnOnce(&mut toml_edit::DocumentMut),
) {
    let pairs: Vec<(&str, String)> = feeds.iter().map(|f| (f.name, f.url.clone())).collect();
    let mut doc = common::test_config_doc(&pairs);
    if let Some(arr) = doc["feeds"].as_array_of_tables_mut() {
        for (t, f) in arr.iter_mut().zip(feeds) {
            if let Some(i) = f.interval {
                t["interval"] = toml_edit::value(i);
            }
        }
    }
    doc["daemon"]["min_interval"] = toml_edit::value("1s");
    doc["http"]["first_byte_timeout"] = toml_edit::value(first_byte_timeout);
    doc["http"]["total_timeout"] = toml_edit::value("60s");
    extra(&mut doc);
    std::fs::write(path, doc.to_string()).expect("write config");
}

// ------------------------------------------------------------------------------ the harness

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every message received so far, in order.
    seen: Vec<String>,
}

impl Manager {
    fn bind(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        Manager {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Receives until a message satisfies `pred`; returns it. Panics at the deadline with
    /// everything seen so far.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = tokio::time::Instant::now() + DEADLINE;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tokio::time::timeout_at(until, self.sock.recv(&mut buf)).await {
                Ok(r) => r.expect("recv on notify socket"),
                Err(_) => panic!("no {what} within {DEADLINE:?}; got:\n{:#?}", self.seen),
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if pred(&msg) {
                return msg;
            }
        }
    }

    fn position(&self, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.seen.iter().position(|m| pred(m))
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn status_of(msg: &str) -> Option<&str> {
    msg.lines().find_map(|l| l.strip_prefix("STATUS="))
}

/// A running daemon with its stderr collected line by line.
struct Daemon {
    child: Child,
    pid: i32,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `policywatch run` as systemd would: notify socket, watchdog for this very pid
    /// (sd_notify only honours `WATCHDOG_USEC` when `WATCHDOG_PID` is our pid, so a shell
    /// sets it to its own pid and then execs the binary), journal stream.
    fn start(mgr: &Manager, config: &Path, state: &Path) -> Daemon {
        Self::start_with(mgr, config, state, &[])
    }

    fn start_with(
        mgr: &Manager,
        config: &Path,
        state: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(["run", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env("NOTIFY_SOCKET", &mgr.path)
            .env("WATCHDOG_USEC", "2000000")
            .env("JOURNAL_STREAM", "8:12345")
            .env_remove("RUST_LOG")
            .env_remove("CONFIGURATION_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn policywatch");
        let pid = child.id().expect("child pid") as i32;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let mut reader = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = reader.next_line().await {
                lines.lock().unwrap().push(l);
            }
        });
        Daemon { child, pid, stderr }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    async fn exit(&mut self) -> ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {DEADLINE:?}:\n{}", self.log()))
            .expect("wait for policywatch")
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// SIGTERM, then waits for the exit while draining the notify socket as systemd would (a
/// full socket buffer would stall the daemon's notifications, which is not under test).
async fn stop(d: &mut Daemon, mgr: &mut Manager) -> ExitStatus {
    d.signal(libc::SIGTERM);
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                status = d.child.wait() => break status.expect("wait for policywatch"),
                _ = mgr.sock.recv(&mut buf) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no exit within {DEADLINE:?}:\n{}", d.log()))
}

/// `policywatch run --once` over the same state; returns stdout.
async fn run_once(config: &Path, state: &Path, all: bool) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--once"]);
    if all {
        cmd.arg("--all");
    }
    let out = tokio::time::timeout(
        DEADLINE,
        cmd.arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run --once finished")
    .expect("run --once ran");
    assert!(
        out.status.success(),
        "run --once failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------------------------ the tests

/// READY after start-up with a useful STATUS, WATCHDOG from the loop, a good reload applied
/// (RELOADING with MONOTONIC_USEC, then READY; the added feed is polled), a bad reload refused
/// (the old config keeps running and polling; STATUS says so; every error is logged with its
/// location at error priority), STOPPING on SIGTERM and exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_lifecycle_with_good_and_bad_reloads() {
    let srv = FaultServer::start().await;
    srv.route("/a.xml", Response::ok(policy_feed()));
    srv.route(
        "/b.xml",
        Response::ok(rss(&[("b-1", "Gallium export curbs", "x")])),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    let feed_a = || FeedSpec {
        name: "Feed A",
        url: srv.url("/a.xml").to_string(),
        interval: Some("1s"),
    };
    write_config(&cfg, &[feed_a()], "10s", |_| {});
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);

    // Start-up: READY (with STATUS) is the first thing said.
    let ready = mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    assert_eq!(mgr.seen.len(), 1, "READY=1 must come first: {:?}", mgr.seen);
    let status = status_of(&ready).expect("READY carries a STATUS");
    assert!(status.starts_with("1 feeds, 0 failing"), "{status}");
    assert!(status.contains("next digest "), "{status}");

    // The loop feeds the watchdog, and STATUS follows the first poll.
    mgr.wait_for("WATCHDOG=1", |m| has_line(m, "WATCHDOG=1"))
        .await;
    mgr.wait_for("STATUS after a poll", |m| {
        status_of(m).is_some_and(|s| s.contains("last poll 0 min ago"))
    })
    .await;

    // A good reload: feed B added.
    write_config(
        &cfg,
        &[
            feed_a(),
            FeedSpec {
                name: "Feed B",
                url: srv.url("/b.xml").to_string(),
                interval: None,
            },
        ],
        "10s",
        |_| {},
    );
    d.signal(libc::SIGHUP);
    let reloading = mgr
        .wait_for("RELOADING=1", |m| has_line(m, "RELOADING=1"))
        .await;
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("RELOADING=1 carries MONOTONIC_USEC");
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{usec}");
    let ready = mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    let status = status_of(&ready).expect("READY carries a STATUS");
    assert!(status.starts_with("2 feeds"), "{status}");
    assert!(!status.contains("reload failed"), "{status}");
    until("the added feed is polled", || {
        !srv.requests_to("/b.xml").is_empty()
    })
    .await;

    // A bad reload: a broken rule (and a feed C that must not appear).
    write_config(
        &cfg,
        &[
            feed_a(),
            FeedSpec {
                name: "Feed C",
                url: srv.url("/c.xml").to_string(),
                interval: None,
            },
        ],
        "10s",
        |doc| {
            doc["watches"][0]["query"] = toml_edit::value("(nvidia OR amd");
        },
    );
    d.signal(libc::SIGHUP);
    mgr.wait_for("RELOADING=1", |m| has_line(m, "RELOADING=1"))
        .await;
    let ready = mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    let status = status_of(&ready).expect("READY carries a STATUS");
    assert!(
        status.starts_with("2 feeds"),
        "old config still runs: {status}"
    );
    assert!(
        status.contains("reload failed") && status.contains("previous config"),
        "{status}"
    );
    // Still polling with the old config: more requests to A, none to C.
    let before = srv.requests_to("/a.xml").len();
    until("polling goes on after a refused reload", || {
        srv.requests_to("/a.xml").len() > before
    })
    .await;
    assert!(srv.requests_to("/c.xml").is_empty());
    assert!(d.still_running());

    // A half-written config that still parses (issue 17): feeds, but no watches and no
    // digests. Refused like a broken one; the old config keeps running.
    write_config(&cfg, &[feed_a()], "10s", |doc| {
        doc.remove("watches");
        doc.remove("digests");
    });
    d.signal(libc::SIGHUP);
    mgr.wait_for("RELOADING=1", |m| has_line(m, "RELOADING=1"))
        .await;
    let ready = mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    let status = status_of(&ready).expect("READY carries a STATUS");
    assert!(
        status.starts_with("2 feeds") && status.contains("reload failed"),
        "a half-written config is not adopted: {status}"
    );
    until("the refusal is logged", || {
        d.log().contains(
            "no [[watches]], no [[digests]]: the daemon would poll, match or deliver nothing",
        )
    })
    .await;

    d.signal(libc::SIGTERM);
    mgr.wait_for("STOPPING=1", |m| has_line(m, "STOPPING=1"))
        .await;
    let status = d.exit().await;
    assert!(status.success(), "exit {status:?}:\n{}", d.log());

    // The order of the whole conversation.
    let first_ready = mgr.position(|m| has_line(m, "READY=1")).unwrap();
    let first_watchdog = mgr.position(|m| has_line(m, "WATCHDOG=1")).unwrap();
    let first_reload = mgr.position(|m| has_line(m, "RELOADING=1")).unwrap();
    let stopping = mgr.position(|m| has_line(m, "STOPPING=1")).unwrap();
    assert!(first_ready < first_watchdog && first_watchdog < first_reload);
    assert_eq!(stopping, mgr.seen.len() - 1, "STOPPING=1 is the last word");
    // Every RELOADING=1 is followed by a READY=1 before anything else reloads or stops.
    for (i, m) in mgr.seen.iter().enumerate() {
        if has_line(m, "RELOADING=1") {
            let next = mgr.seen[i + 1..]
                .iter()
                .find(|m| has_line(m, "READY=1") || has_line(m, "RELOADING=1"))
                .expect("something after RELOADING");
            assert!(
                has_line(next, "READY=1"),
                "RELOADING=1 not closed by READY=1"
            );
        }
    }

    // The journal: every line carries a priority, none a timestamp of its own, and the
    // refused reload's error is there with its location, each line at error priority.
    let log = d.log();
    for line in log.lines() {
        assert!(
            line.len() >= 3
                && line.starts_with('<')
                && line.as_bytes()[2] == b'>'
                && (b'0'..=b'7').contains(&line.as_bytes()[1]),
            "no priority prefix: {line:?}"
        );
        assert!(
            !line[3..].trim_start().starts_with("20"),
            "timestamp in a journal line: {line:?}"
        );
    }
    let cfg_name = cfg.display().to_string();
    let err_line = log
        .lines()
        .find(|l| l.contains(&format!("{cfg_name}:")))
        .unwrap_or_else(|| panic!("no located config error in the log:\n{log}"));
    assert!(err_line.starts_with("<3>"), "{err_line}");
    let caret = log
        .lines()
        .find(|l| l.trim_end().ends_with('^'))
        .unwrap_or_else(|| panic!("no caret line:\n{log}"));
    assert!(
        caret.starts_with("<3>"),
        "continuation lines keep the priority: {caret}"
    );
    assert!(log
        .lines()
        .any(|l| l.starts_with("<6>") && l.contains("configuration reloaded")));
}

/// A config that does not compile: no READY=1 (nothing was started), every error in the
/// journal at error priority with its location, and exit status 78, which the unit's
/// `RestartPreventExitStatus=` keeps from restarting in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_never_reports_ready_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    let feeds = [FeedSpec {
        name: "Nowhere",
        url: "http://127.0.0.1:9/feed.xml".to_string(),
        interval: None,
    }];
    write_config(&cfg, &feeds, "10s", |doc| {
        doc["watches"][1]["query"] = toml_edit::value("nvidia AND");
        doc["daemon"]["listen"] = toml_edit::value("0.0.0.0:9187");
    });
    let mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    let status = d.exit().await;
    assert_eq!(status.code(), Some(78), "{}", d.log());
    let mut buf = [0u8; 512];
    match mgr.sock.try_recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the service manager heard something: {other:?}"),
    }
    assert!(
        !state.join("policywatch.db").exists(),
        "nothing was started"
    );
    until("stderr read to the end", || {
        d.log().contains("nothing was started")
    })
    .await;
    let log = d.log();
    let cfg_name = cfg.display().to_string();
    let located: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("{cfg_name}:")))
        .collect();
    assert_eq!(located.len(), 2, "both errors, each located:\n{log}");
    for line in log.lines() {
        assert!(line.starts_with("<3>"), "not at error priority: {line:?}");
    }
}

/// The unit's SMTP credential: `LoadCredential=smtp-password:…` with `SetCredential=` one empty
/// line as its fallback. With the file, the daemon starts; with only the fallback and an email
/// digest that needs the password, it refuses to start and names the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_password_comes_from_the_credential_and_the_fallback_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let feeds = [FeedSpec {
        name: "Nowhere",
        url: "http://127.0.0.1:9/feed.xml".to_string(),
        interval: Some("1day"),
    }];
    write_config(&cfg, &feeds, "10s", |doc| {
        let mut smtp = toml_edit::Table::new();
        smtp["host"] = toml_edit::value("127.0.0.1");
        smtp["port"] = toml_edit::value(2525);
        smtp["tls"] = toml_edit::value("none");
        smtp["username"] = toml_edit::value("policywatch");
        smtp["password_credential"] = toml_edit::value("smtp-password");
        smtp["from"] = toml_edit::value("policywatch <pw@example.test>");
        doc["smtp"] = toml_edit::Item::Table(smtp);
        doc["digests"][0]["via"] = toml_edit::value("email");
        let mut to = toml_edit::Array::new();
        to.push("analyst@example.test");
        doc["digests"][0]["to"] = toml_edit::value(to);
    });
    let start = |sub: &str| {
        let sub_dir = dir.path().join(sub);
        std::fs::create_dir(&sub_dir).unwrap();
        let mgr = Manager::bind(&sub_dir);
        let d = Daemon::start_with(
            &mgr,
            &cfg,
            &sub_dir.join("state"),
            &[("CREDENTIALS_DIRECTORY", creds.as_os_str())],
        );
        (mgr, d)
    };

    // The real file: one line, newline-terminated, as `echo` writes it.
    std::fs::write(creds.join("smtp-password"), "s3cret\n").unwrap();
    let (mut mgr, mut d) = start("with-file");
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    d.signal(libc::SIGTERM);
    assert!(d.exit().await.success(), "{}", d.log());

    // The unit's fallback when the file is missing (SetCredential=smtp-password:\n).
    std::fs::write(creds.join("smtp-password"), "\n").unwrap();
    let (mgr, mut d) = start("fallback");
    let status = d.exit().await;
    assert!(!status.success());
    let mut buf = [0u8; 512];
    assert!(
        mgr.sock.try_recv(&mut buf).is_err(),
        "no READY=1 without a password"
    );
    until("the error in the log", || d.log().contains("smtp-password")).await;
    let log = d.log();
    assert!(
        log.contains("password_credential smtp-password") && log.contains("empty"),
        "{log}"
    );
}

/// SIGTERM while one feed hangs before its headers: exit 0 promptly (the hung fetch is
/// dropped, nothing half-written), and the next runs report every story exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hanging_poll_exits_cleanly_and_nothing_is_reported_twice() {
    let srv = FaultServer::start().await;
    srv.route("/good.xml", Response::ok(policy_feed()));
    srv.route("/hang.xml", Response::hang());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    let feeds = [
        FeedSpec {
            name: "Good",
            url: srv.url("/good.xml").to_string(),
            interval: None,
        },
        FeedSpec {
            name: "Hang",
            url: srv.url("/hang.xml").to_string(),
            interval: None,
        },
    ];
    // The hang outlives the test unless the daemon lets go of it.
    write_config(&cfg, &feeds, "10min", |_| {});
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    mgr.wait_for("the good feed's poll applied", |m| {
        status_of(m).is_some_and(|s| s.contains("last poll"))
    })
    .await;
    until("the hanging request is in flight", || {
        !srv.requests_to("/hang.xml").is_empty()
    })
    .await;

    d.signal(libc::SIGTERM);
    mgr.wait_for("STOPPING=1", |m| has_line(m, "STOPPING=1"))
        .await;
    let status = d.exit().await;
    assert!(status.success(), "exit {status:?}:\n{}", d.log());
    assert!(
        d.log().contains("shutting down") && d.log().contains("in_flight=1"),
        "{}",
        d.log()
    );

    // The next start: the hung feed now answers; the stories stored before the stop are
    // reported once, by the first run only.
    srv.route("/hang.xml", Response::ok(rss(&[])));
    let first = run_once(&cfg, &state, false).await;
    assert_eq!(first.matches(ENTITY).count(), 1, "{first}");
    assert_eq!(first.matches(H20).count(), 1, "{first}");
    assert!(!first.contains("A bakery"), "{first}");
    let second = run_once(&cfg, &state, true).await;
    assert!(
        !second.contains(ENTITY) && !second.contains(H20),
        "{second}"
    );
    assert!(second.contains("nothing new matched"), "{second}");
}

/// Issue 13 item 3: a relay that takes the message and then never answers. The daemon keeps
/// polling and feeding the watchdog while the send hangs, SIGTERM stops it within 5 s, and
/// the unfinished delivery goes out on the next start with the same Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_silent_after_data_holds_up_neither_polling_nor_sigterm() {
    let Some(env) = smtp::Env::new() else { return };
    let relay = env.start(smtp::Opts {
        hang_after_data: true,
        ..smtp::Opts::default()
    });
    let srv = FaultServer::start().await;
    srv.route("/a.xml", Response::ok(policy_feed()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    let feeds = [FeedSpec {
        name: "Wire",
        url: srv.url("/a.xml").to_string(),
        interval: Some("1s"),
    }];
    let mut smtp_cfg = env.config(relay.port, policywatch::mail::TlsMode::Starttls);
    // Far longer than the test: only the daemon's own design can keep it from waiting.
    smtp_cfg.timeout = Duration::from_secs(600);
    write_config(&cfg, &feeds, "10s", |doc| {
        smtp::mail_by_alert(doc, &smtp_cfg, "analyst@policywatch.test")
    });
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    until("the relay took the alert and went silent", || {
        !env.hung().is_empty()
    })
    .await;

    // While the send hangs: more polls, and the watchdog keeps being fed.
    let polls = srv.requests_to("/a.xml").len();
    until("a poll after the relay went silent", || {
        srv.requests_to("/a.xml").len() > polls
    })
    .await;
    let seen = mgr.seen.len();
    mgr.wait_for("WATCHDOG=1 during the hang", |m| has_line(m, "WATCHDOG=1"))
        .await;
    assert!(mgr.seen.len() > seen);
    assert!(env.messages().is_empty(), "the relay never accepted it");

    d.signal(libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(5), d.child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within 5 s of SIGTERM:\n{}", d.log()))
        .expect("wait for policywatch");
    assert!(status.success(), "exit {status:?}:\n{}", d.log());
    let hung_id = header_values_of(&env.hung()[0].with_extension("eml"), "Message-ID");

    // The relay answers again: the next run sends the pending delivery, same Message-ID.
    let port = relay.port;
    drop(relay);
    let _relay = env.start(smtp::Opts {
        port,
        ..smtp::Opts::default()
    });
    let out = run_once(&cfg, &state, false).await;
    let files = env.messages();
    assert_eq!(files.len(), 1, "{out}");
    assert_eq!(header_values_of(&files[0], "Message-ID"), hung_id, "{out}");
    assert!(out.contains("still pending from an earlier run"), "{out}");
}

/// Issue 17 item 5 and issue 13 item 2, as the operator sees them: a refused login holds the
/// delivery — in STATUS= and at error priority in the journal every cycle — until a reload
/// after the fix sends it; a recipient the fixed relay refuses is then named in STATUS= while
/// the other recipient gets the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_deliveries_and_refused_recipients_show_in_status_until_fixed() {
    let Some(env) = smtp::Env::new() else { return };
    let bad = "typo@policywatch.test";
    let relay = env.start(smtp::Opts {
        auth_reject: true,
        ..smtp::Opts::default()
    });
    let port = relay.port;
    let srv = FaultServer::start().await;
    srv.route("/a.xml", Response::ok(policy_feed()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let feeds = [FeedSpec {
        name: "Wire",
        url: srv.url("/a.xml").to_string(),
        interval: Some("1s"),
    }];
    let smtp_cfg = env.config(port, policywatch::mail::TlsMode::Starttls);
    write_config(&cfg, &feeds, "10s", |doc| {
        smtp::mail_by_alert(doc, &smtp_cfg, "analyst@policywatch.test");
        doc["digests"][0]["to"].as_array_mut().unwrap().push(bad);
    });
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &dir.path().join("state"));
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    mgr.wait_for("STATUS= naming the held delivery", |m| {
        status_of(m).is_some_and(|s| s.contains("1 delivery held") && s.contains("535"))
    })
    .await;
    until(
        "the held delivery logged at error priority in two cycles",
        || {
            d.log()
                .lines()
                .filter(|l| l.starts_with("<3>") && l.contains("is held"))
                .count()
                >= 2
        },
    )
    .await;
    assert!(env.messages().is_empty());

    // The fix (here: the relay takes the login now, and refuses one address), then a reload.
    drop(relay);
    let _relay = env.start(smtp::Opts {
        port,
        reject_rcpt: vec![bad.to_string()],
        ..smtp::Opts::default()
    });
    d.signal(libc::SIGHUP);
    mgr.wait_for("STATUS= naming the refused recipient, nothing held", |m| {
        status_of(m).is_some_and(|s| {
            s.contains(&format!("1 recipient refused: {bad}")) && !s.contains("held")
        })
    })
    .await;
    assert_eq!(
        env.envelope_recipients(),
        vec![vec!["analyst@policywatch.test".to_string()]]
    );
    until("the refusal at error priority", || {
        d.log()
            .lines()
            .any(|l| l.starts_with("<3>") && l.contains(bad) && l.contains("550"))
    })
    .await;
    d.signal(libc::SIGTERM);
    assert!(d.exit().await.success(), "{}", d.log());
}

fn header_values_of(eml: &Path, name: &str) -> Vec<String> {
    smtp::header_values(&smtp::parse_message(eml), name)
}

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("response within the deadline")
        .expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// With `[daemon] listen` set, the daemon serves /healthz and /metrics on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_serves_health_and_prometheus_text() {
    let srv = FaultServer::start().await;
    srv.route("/good.xml", Response::ok(policy_feed()));
    srv.route("/bad.xml", Response::status(500));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    let feeds = [
        FeedSpec {
            name: "Good",
            url: srv.url("/good.xml").to_string(),
            interval: None,
        },
        FeedSpec {
            name: "Bad \"one\"",
            url: srv.url("/bad.xml").to_string(),
            interval: None,
        },
    ];
    write_config(&cfg, &feeds, "10s", |doc| {
        doc["daemon"]["listen"] = toml_edit::value("127.0.0.1:0");
    });
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    // The bound port is in the start-up log (written before READY; read by another task).
    until("the listener's address in the log", || {
        d.log().contains("/metrics")
    })
    .await;
    let log = d.log();
    let addr = log
        .lines()
        .find_map(|l| {
            l.split("http://")
                .nth(1)
                .and_then(|r| r.strip_suffix("/metrics"))
        })
        .unwrap_or_else(|| panic!("no listener address in the log:\n{log}"))
        .to_string();
    let (code, body) = http_get(&addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ready\":true"), "{body}");

    mgr.wait_for("the failing feed in STATUS", |m| {
        status_of(m).is_some_and(|s| s.contains("1 failing") && s.contains("last poll"))
    })
    .await;
    // Both polls applied: scrape until the counter says so (deadline-bounded).
    let until_t = tokio::time::Instant::now() + DEADLINE;
    let text = loop {
        let (code, text) = http_get(&addr, "/metrics").await;
        assert_eq!(code, 200);
        if text.contains("\npolicywatch_polls_total 2\n") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < until_t,
            "never 2 polls:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let value = |sample: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample}:\n{text}"))
    };
    assert_eq!(value("policywatch_polls_total"), 2.0);
    assert!(value("policywatch_items_total") >= 3.0);
    assert!(value("policywatch_matches_total{watch=\"ai-chips\"}") >= 2.0);
    assert!(value("policywatch_poll_failures_total{feed=\"Bad \\\"one\\\"\"}") >= 1.0);
    assert_eq!(value("policywatch_feeds"), 2.0);
    assert_eq!(value("policywatch_feeds_failing"), 1.0);
    assert_eq!(value("policywatch_poll_duration_seconds_count"), 2.0);
    assert_eq!(value("policywatch_ready"), 1.0);
    let (code, _) = http_get(&addr, "/nope").await;
    assert_eq!(code, 404);

    d.signal(libc::SIGINT);
    let status = d.exit().await;
    assert!(status.success(), "exit {status:?}:\n{}", d.log());
}

/// `[daemon] listen`: loopback accepted, a wildcard or a host name refused with its location,
/// a specific public address accepted with a warning.
#[test]
fn listen_address_is_validated() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policywatch.toml"
    ))
    .unwrap();
    let with = |listen: &str| {
        let mut doc: toml_edit::DocumentMut = shipped.parse().unwrap();
        doc["daemon"]["listen"] = toml_edit::value(listen);
        policywatch::config::load_str("pw.toml", &doc.to_string())
    };
    for ok in ["127.0.0.1:9187", "[::1]:9187"] {
        let l = with(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(!l.warnings.iter().any(|w| w.contains("daemon.listen")));
        assert_eq!(l.config.daemon.listen_addr(), Some(ok.parse().unwrap()));
    }
    let l = with("[::ffff:127.0.0.1]:9187").expect("v4-mapped loopback");
    assert!(
        !l.warnings.iter().any(|w| w.contains("daemon.listen")),
        "is loopback"
    );
    // Every spelling of "all interfaces" (issue 17: the v4-mapped one bound every IPv4
    // address with only a warning).
    for bad in [
        "0.0.0.0:9187",
        "[::]:9187",
        "[::ffff:0.0.0.0]:9187",
        "[::ffff:0:0]:9187",
        "[0:0:0:0:0:ffff:0000:0000]:9187",
        "[::0.0.0.0]:9187",
        "localhost:9187",
        "9187",
    ] {
        let e = with(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        let text = e.to_string();
        assert!(
            text.contains("pw.toml:") && text.contains("daemon.listen") && text.contains("hint:"),
            "{bad}: {text}"
        );
    }
    let l = with("192.0.2.7:9187").expect("an explicit interface address is allowed");
    assert!(l.warnings.iter().any(|w| w.contains("not a loopback")));
    let default = policywatch::config::load_str("pw.toml", &shipped).unwrap();
    assert_eq!(default.config.daemon.listen_addr(), None, "off by default");
}

// ------------------------------------------------------------------------------ the unit

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The shipped unit with `ExecStart=` pointing at the binary under test (verify checks that
/// the executable exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/policywatch.service"
    ))
    .expect("shipped unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/policywatch run "));
    let path = dir.join("policywatch.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/local/bin/policywatch",
            &format!("ExecStart={BIN}"),
        ),
    )
    .unwrap();
    path
}

#[test]
fn unit_declares_the_service_contract() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/policywatch.service"
    ))
    .unwrap();
    let keys: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=policywatch",
        "ConfigurationDirectory=policywatch",
        "LoadCredential=smtp-password:/etc/policywatch/smtp-password",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/policywatch run --config /etc/policywatch/policywatch.toml",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute=yes",
        "ProtectSystem=strict",
    ] {
        assert!(keys.contains(&want), "unit lacks {want}");
    }
    assert!(keys.iter().any(|k| k.starts_with("WatchdogSec=")));
    assert!(
        !keys.iter().any(|k| k.starts_with("IPAddressDeny=")),
        "it must reach the internet"
    );
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(sa) = systemd_analyze() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = std::process::Command::new(&sa)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify failed:\n{text}");
    // Complaints about the unit's own lines (unknown keys, bad syntax) do not fail verify:
    // refuse them here.
    assert!(
        !text.contains("policywatch.service:"),
        "verify complained about the unit:\n{text}"
    );
}

#[test]
fn unit_exposure_is_at_most_1_5() {
    let Some(sa) = systemd_analyze() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = std::process::Command::new(&sa)
        .args(["security", "--offline=true", "--threshold=15", "--no-pager"])
        .arg(&unit)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for policywatch.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure figure:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("systemd-analyze security: policywatch.service exposure {exposure}");
    assert!(exposure <= 1.5, "exposure {exposure}:\n{text}");
    assert!(out.status.success(), "above --threshold=15:\n{text}");
}

/// Issue 13 (two daemons on one state directory both sent every digest) and issue 17 (read-only
/// commands failed "database is locked" beside a busy daemon): a second `run` and a `run
/// --once` refuse to start, naming the PID that holds the state, with exit status 75 and
/// nothing polled or sent; meanwhile `feeds`, `backtest` and `digest --preview` run 60 times
/// beside the daemon, which polls its feed every second, with no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_state_directory_and_readers_beside_it() {
    let srv = FaultServer::start().await;
    srv.route("/a.xml", Response::ok(policy_feed()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    // Forty feeds polled every second keep the daemon committing all the time.
    let names: Vec<String> = (0..40).map(|k| format!("Feed {k}")).collect();
    let feeds: Vec<FeedSpec<'_>> = names
        .iter()
        .enumerate()
        .map(|(k, name)| FeedSpec {
            name,
            url: format!("{}?k={k}", srv.url("/a.xml")),
            interval: Some("1s"),
        })
        .collect();
    write_config(&cfg, &feeds, "10s", |doc| {
        doc["http"]["per_host_gap"] = toml_edit::value("0s");
        doc["http"]["per_host_concurrency"] = toml_edit::value(8);
    });
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    mgr.wait_for("STATUS after a poll", |m| {
        status_of(m).is_some_and(|s| s.contains("last poll 0 min ago"))
    })
    .await;
    let lock = std::fs::read_to_string(state.join("policywatch.lock")).expect("lock file");
    assert_eq!(
        lock.trim(),
        d.pid.to_string(),
        "the lock file names the daemon"
    );

    for args in [&["run"][..], &["run", "--once"][..]] {
        let out = tokio::time::timeout(
            DEADLINE,
            Command::new(BIN)
                .args(args)
                .arg("--config")
                .arg(&cfg)
                .arg("--state-dir")
                .arg(&state)
                .env_remove("NOTIFY_SOCKET")
                .env_remove("JOURNAL_STREAM")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("second daemon exits")
        .expect("second daemon ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{args:?}: {err}");
        assert!(
            err.contains(&format!("already running (PID {})", d.pid))
                || err.contains(&format!("policywatch (PID {}) is already running", d.pid)),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a digest");
        // Refused before anything started: no database opened, nothing polled or sent.
        assert!(!err.contains("policywatch started"), "{args:?}: {err}");
    }

    let html = dir.path().join("preview.html");
    let reader = |k: usize| {
        let mut cmd = Command::new(BIN);
        match k % 3 {
            0 => cmd.arg("feeds"),
            1 => cmd.args(["backtest", "--since", "30days"]),
            _ => cmd.args(["digest", "--preview", "--html"]).arg(&html),
        };
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .kill_on_drop(true);
        cmd
    };

    // A write transaction in progress (as the daemon's are, all the time) does not stop a
    // reader: the readers take no write lock. (They used to migrate on open, a write that
    // waited for the busy timeout and failed "database is locked".)
    {
        let db = state.join("policywatch.db");
        let writer = rusqlite::Connection::open(&db).expect("open db");
        writer
            .execute_batch("BEGIN IMMEDIATE; UPDATE feeds SET name = name;")
            .expect("hold the write lock");
        for k in 0..3 {
            let out = tokio::time::timeout(DEADLINE, reader(k).output())
                .await
                .expect("reader finished")
                .expect("reader ran");
            assert!(
                out.status.success(),
                "reader {k} beside a writer: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        writer.execute_batch("ROLLBACK").expect("release");
    }

    let mut failures = Vec::new();
    let mut buf = vec![0u8; 4096];
    for k in 0..60 {
        // Drain the notify socket as systemd would: a full socket buffer would stall the
        // daemon's sd_notify calls, which is not what this test is about.
        while mgr.sock.try_recv(&mut buf).is_ok() {}
        let out = tokio::time::timeout(DEADLINE, reader(k).output())
            .await
            .expect("reader finished")
            .expect("reader ran");
        if !out.status.success() {
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    assert!(d.still_running(), "{}", d.log());
    assert!(
        failures.is_empty(),
        "{} of 60 reads failed, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(stop(&mut d, &mut mgr).await.success(), "{}", d.log());
}

/// A tmpfs mounted for one test, unmounted when dropped (lazily: the daemon may still hold a
/// file for an instant).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where mounting is not permitted (not root, no CAP_SYS_ADMIN, no tmpfs).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` with one file until a write is refused.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("ballast file");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

/// Issue 13: "database or disk is full" made the daemon exit 1, and every restart exit 78, so
/// nothing polled after space returned. Now: the state directory's disk fills while a feed
/// has 300 new items; the daemon keeps running, says "disk full" in STATUS= and the log, does
/// not commit the feed's state, and once the ballast is deleted stores every item the feed
/// served, each exactly once, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_waited_out_and_nothing_polled_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "4m") else {
        println!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let srv = FaultServer::start().await;
    srv.route("/a.xml", Response::ok(policy_feed()));
    let cfg = dir.path().join("policywatch.toml");
    let feed = FeedSpec {
        name: "Feed A",
        url: srv.url("/a.xml").to_string(),
        interval: Some("1s"),
    };
    write_config(&cfg, &[feed], "10s", |_| {});
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    mgr.wait_for("STATUS after a poll", |m| {
        status_of(m).is_some_and(|s| s.contains("last poll 0 min ago"))
    })
    .await;

    // The disk fills; then the feed publishes 300 items (about 300 KB to store).
    let ballast = state.join("ballast");
    fill(&ballast);
    let filler = "Export controls on advanced chips and chipmaking tools. ".repeat(16);
    let items: Vec<(String, String, String)> = (0..300)
        .map(|k| {
            (
                format!("new-{k}"),
                format!("Commerce adds firm number {k} to the Entity List"),
                format!("{k}: {filler}"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|(g, t, s)| (g.as_str(), t.as_str(), s.as_str()))
        .collect();
    srv.route("/a.xml", Response::ok(rss(&refs)));
    let full = mgr
        .wait_for("STATUS saying the disk is full", |m| {
            status_of(m).is_some_and(|s| s.contains("disk full"))
        })
        .await;
    assert!(d.still_running(), "{}", d.log());
    until("the log says the disk is full", || {
        d.log().contains("disk full")
    })
    .await;
    let polls_when_full = srv.requests_to("/a.xml").len();

    // Space returns: the daemon stores everything by itself, with no restart.
    std::fs::remove_file(&ballast).expect("remove ballast");
    mgr.wait_for("STATUS without disk full", |m| {
        status_of(m).is_some_and(|s| !s.contains("disk full"))
    })
    .await;
    let db = state.join("policywatch.db");
    let stored = |db: &Path| -> Vec<(String, i64)> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open db");
        let mut st = conn
            .prepare("SELECT guid, COUNT(*) FROM items GROUP BY guid")
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    until("all 303 items stored", || stored(&db).len() == 303).await;
    assert!(d.still_running(), "{}", d.log());
    let rows = stored(&db);
    for (guid, n) in &rows {
        assert_eq!(*n, 1, "{guid} stored {n} times");
    }
    for (g, _, _) in &items {
        assert!(rows.iter().any(|(s, _)| s == g), "{g} lost");
    }
    // The feed was fetched again after the failed write (its state was not committed).
    assert!(srv.requests_to("/a.xml").len() > polls_when_full, "{full}");

    assert!(stop(&mut d, &mut mgr).await.success(), "{}", d.log());
}

/// Issue 17: a feed cannot forge journal entries. One feed fails to parse with an error that
/// quotes a newline followed by a journal priority ("\\n<4>ERROR forged line"); another has
/// an item whose title cannot be read, recovered from its summary with a warning. Under
/// `JOURNAL_STREAM` every line the daemon writes starts with its own priority, the forged text
/// appears only escaped, inside the one record of that poll failure, and the recovery
/// warning is one record too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_cannot_forge_journal_lines() {
    let srv = FaultServer::start().await;
    let forged = "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title type=\"t1\">F</title>\
        <subtitle type=\"t2\">S</subtitle><rights type=\"t3\">R</rights><entry>\
        <title type=\"t4\">A</title><summary type=\"t5\n<4>ERROR forged line\">B</summary>\
        </entry></feed>";
    srv.route("/forged.xml", Response::ok(forged));
    let untitled = "<rss version=\"2.0\"><channel><title>U</title><item><guid>u-1</guid>\
        <title>&#x200F;</title><description>Ministry adds four chip makers to the control list\
        </description></item></channel></rss>";
    srv.route("/untitled.xml", Response::ok(untitled));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("policywatch.toml");
    let state = dir.path().join("state");
    let feeds = [
        FeedSpec {
            name: "Forger",
            url: srv.url("/forged.xml").to_string(),
            interval: None,
        },
        FeedSpec {
            name: "Untitled",
            url: srv.url("/untitled.xml").to_string(),
            interval: Some("1s"),
        },
    ];
    write_config(&cfg, &feeds, "10s", |_| {});
    let mut mgr = Manager::bind(dir.path());
    let mut d = Daemon::start(&mgr, &cfg, &state);
    mgr.wait_for("READY=1", |m| has_line(m, "READY=1")).await;
    until("both feeds are polled and reported", || {
        let log = d.log();
        log.contains("poll failed") && log.contains("title could not be read")
    })
    .await;
    // The third request is scheduled by the second poll's result: the recovered item was
    // seen again by then, and is not reported again.
    until("the untitled feed is polled again", || {
        srv.requests_to("/untitled.xml").len() >= 3
    })
    .await;
    d.signal(libc::SIGTERM);
    let status = d.exit().await;
    assert!(status.success(), "exit {status:?}:\n{}", d.log());

    let log = d.log();
    for line in log.lines() {
        let b = line.as_bytes();
        assert!(
            b.len() >= 3 && b[0] == b'<' && b[2] == b'>' && (b'0'..=b'7').contains(&b[1]),
            "a line without our priority prefix: {line:?}\n{log}"
        );
        assert!(
            !line[3..].starts_with('<'),
            "a line whose text starts with a priority of its own: {line:?}"
        );
    }
    let forged_lines: Vec<&str> = log.lines().filter(|l| l.contains("forged line")).collect();
    assert_eq!(forged_lines.len(), 1, "one record: {forged_lines:?}\n{log}");
    let l = forged_lines[0];
    assert!(
        l.starts_with("<4>")
            && l.contains("poll failed")
            && l.contains("t5\\n<4>ERROR forged line"),
        "the poll failure, at warning priority, the newline escaped: {l}"
    );
    let recovered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("title could not be read"))
        .collect();
    assert_eq!(recovered.len(), 1, "once, when the item is new:\n{log}");
    assert!(
        recovered[0].starts_with("<4>") && recovered[0].contains("Ministry adds four chip makers"),
        "{}",
        recovered[0]
    );
    assert!(!log.contains('\u{200f}'), "no bidi mark in the journal");
}
