//! kill -9 soak: the real daemon, polling a loopback feed that keeps growing and mailing every
//! flagged story at once (immediate alerts) through the loopback SMTP server, is killed with
//! SIGKILL at random moments (a seeded RNG picks them) and restarted, again and again. Then
//! one last `run --once` delivers what is left. Every flagged story must have reached the
//! mailbox at least once, and never under two Message-IDs: a resend after a crash is the same
//! message, never a second one.
//!
//! Bounded: [`KILLS`] rounds, each at most a second or so.

mod common;
mod smtp;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{FaultServer, Response};

const KILLS: usize = 30;
const SEED: u64 = 0x005e_ed13;
/// Hang guard on any one wait; never reached when things work.
const DEADLINE: Duration = Duration::from_secs(30);

/// A made-up company name, distinct for each `n` (nothing else in the feed shares it).
fn name(n: usize) -> String {
    const A: [&str; 8] = ["Kav", "Zor", "Quil", "Brem", "Tov", "Ysk", "Dru", "Fen"];
    const B: [&str; 8] = ["ro", "ba", "ma", "li", "xe", "nu", "ta", "go"];
    const C: [&str; 8] = [
        "tech", "metrics", "lux", "vance", "core", "wave", "nix", "forge",
    ];
    format!("{}{}{}", A[n % 8], B[(n / 8) % 8], C[(n / 64) % 8])
}

/// Story `n`: a GUID, a title and a summary the shipped export-controls rules flag. Six
/// different wordings in turn, each with its own name and numbers.
fn story(n: usize) -> (String, String, String) {
    let who = name(n);
    let num = 100 + n * 7;
    let (title, summary) = match n % 6 {
        0 => (
            format!("Commerce adds {who} to the Entity List"),
            format!("The Bureau of Industry and Security listed {who} and {num} affiliates."),
        ),
        1 => (
            format!("{who} fined ${num} million over export control violations"),
            format!("Regulators said {who} shipped controlled semiconductors without a licence."),
        ),
        2 => (
            format!("Dutch export licence revoked for {who} lithography shipments"),
            format!("The Hague cited export controls on {num} advanced chipmaking tools."),
        ),
        3 => (
            format!("Japan puts {who} on its export control end-user list"),
            format!("Tokyo's trade ministry added {who}; {num} items now need a licence."),
        ),
        4 => (
            format!("{who} executives charged with smuggling {num} Nvidia GPUs"),
            format!("Prosecutors say {who} evaded export controls on AI chips."),
        ),
        _ => (
            format!("BIS rule restricts {who} access to advanced AI chips"),
            format!("The export controls rule cuts {who} off from {num} accelerator models."),
        ),
    };
    (format!("soak-{n:04}"), title, summary)
}

fn link(guid: &str) -> String {
    format!("https://x.test/{guid}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_story_and_never_sends_one_twice() {
    let Some(env) = smtp::Env::new() else { return };
    let _relay = env.start(smtp::Opts::default());
    let srv = FaultServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg_path = dir.path().join("policywatch.toml");
    let mut doc = common::test_config_doc(&[("Wire", srv.url("/feed.xml").to_string())]);
    doc["daemon"]["min_interval"] = toml_edit::value("1s");
    // Only the same link makes two items one story here: the fixture's stories are all
    // different, and this test is about crashes, not about clustering.
    doc["daemon"]["cluster_window"] = toml_edit::value("0s");
    doc["feeds"][0]["interval"] = toml_edit::value("1s");
    let port = _relay.port;
    smtp::mail_by_alert(
        &mut doc,
        &env.config(port, policywatch::mail::TlsMode::Starttls),
        "analyst@policywatch.test",
    );
    std::fs::write(&cfg_path, doc.to_string()).unwrap();
    let loaded = policywatch::config::load(&cfg_path).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut stories: Vec<(String, String, String)> = Vec::new();
    let publish = |stories: &[(String, String, String)]| {
        let items: Vec<(&str, &str, &str)> = stories
            .iter()
            .map(|(g, t, s)| (g.as_str(), t.as_str(), s.as_str()))
            .collect();
        srv.route("/feed.xml", Response::ok(common::rss(&items)));
    };
    for round in 0..KILLS {
        for _ in 0..rng.gen_range(1..=2) {
            let s = story(stories.len());
            // The fixture must be what the test says: flagged by the shipped rules.
            let item = policywatch::item::Item {
                title: s.1.clone(),
                summary: s.2.clone(),
                ..Default::default()
            };
            assert!(
                !loaded.classifier.classify(&item).is_empty(),
                "fixture story not flagged: {}",
                s.1
            );
            stories.push(s);
        }
        publish(&stories);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_policywatch"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .env_remove("CONFIGURATION_DIRECTORY")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn policywatch");
        // The random moment of the kill. (Choosing it is the only use of time here; nothing
        // asserts how long anything took.)
        let wait = Duration::from_millis(rng.gen_range(30..900));
        tokio::select! {
            status = child.wait() => panic!("round {round}: the daemon exited by itself: {status:?}"),
            _ = tokio::time::sleep(wait) => {}
        }
        child.start_kill().expect("SIGKILL");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("the killed daemon is reaped")
            .expect("wait");
    }

    // The last run, not killed: polls the feed (--all: the last killed run may have polled it
    // a moment ago) and sends everything still owed.
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_policywatch"))
            .args(["run", "--once", "--all", "--config"])
            .arg(&cfg_path)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("NOTIFY_SOCKET")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the last run finished")
    .expect("the last run ran");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Which Message-IDs carried each story.
    let messages = smtp::parse_messages(&env.messages());
    let mut carried: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &messages {
        let id = smtp::header_values(m, "Message-ID").join(",");
        let text = m["parts"][0]["text"].as_str().unwrap_or_default();
        for (guid, _, _) in &stories {
            if text.contains(&link(guid)) {
                carried.entry(guid.clone()).or_default().insert(id.clone());
            }
        }
    }
    let missing: Vec<&str> = stories
        .iter()
        .filter(|(g, _, _)| !carried.contains_key(g))
        .map(|(_, t, _)| t.as_str())
        .collect();
    if !missing.is_empty() {
        // What the archive says became of them: the first place to look.
        let archive = std::process::Command::new(env!("CARGO_BIN_EXE_policywatch"))
            .args(["stories", "--since", "3650days", "--config"])
            .arg(&cfg_path)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("stories");
        panic!(
            "{} of {} stories never delivered over {} messages: {missing:#?}\narchive:\n{}",
            missing.len(),
            stories.len(),
            messages.len(),
            String::from_utf8_lossy(&archive.stdout)
        );
    }
    let twice: Vec<(&String, &BTreeSet<String>)> =
        carried.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "stories under two Message-IDs: {twice:#?}"
    );
    eprintln!(
        "soak: {KILLS} kills, {} stories, {} messages received",
        stories.len(),
        messages.len()
    );
}
