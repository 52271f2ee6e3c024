//! A bounded fuzz of the config loader: thousands of mutations of the shipped config (byte
//! flips, deleted and doubled lines, hostile values put in place of real ones), each loaded
//! in-process. Asserted for every one: no panic; a refusal names a position inside the file
//! and says something; an accepted config is one the daemon can run — its HTTP client builds
//! and no configured duration overflows the time arithmetic the daemon does with it.
//! Seeded, so a failure reproduces.
//!
//! Speed: compiling the two shipped rules takes ~0.1 s in a debug build, so most cases mutate
//! the shipped config with each rule text cut to a few terms (every other line, key and
//! section as shipped; the rule language has its own property tests in `classify_props`),
//! and a few dozen mutate the whole file. A few thousand cases run in seconds.

use std::time::Instant;

use chrono::Utc;
use policywatch::config::{self, Loaded};
use policywatch::fetch::Fetcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHIPPED: &str = include_str!("../config/policywatch.toml");
const CASES: usize = 3000;
/// Cases over the complete shipped file, rules included.
const FULL_CASES: usize = 30;

/// The shipped config with every `'''…'''` rule text replaced by a short one.
fn with_short_rules(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(open) = rest.find("'''") {
        let Some(close) = rest[open + 3..].find("'''") else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str("'''nvidia OR \"entity list\" OR (gallium NEAR/5 export*)'''");
        rest = &rest[open + 3 + close + 3..];
    }
    out.push_str(rest);
    out
}

/// Values that have broken config loaders: zeros, negatives, huge numbers and durations,
/// empty and multi-line strings, deep nesting, wrong types.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "18446744073709551615",
    "99999999999999999999999",
    "1e309",
    "nan",
    "\"0s\"",
    "\"1000000d\"",
    "\"100000000years\"",
    "\"18446744073709551615s\"",
    "\"\"",
    "\"\\n\"",
    "\"a\\nb\\r\\u0000\"",
    "\"0.0.0.0:9187\"",
    "\"[::ffff:0.0.0.0]:1\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{ a = { b = { c = { d = { e = 1 } } } }",
    "true",
    "[]",
    "'''(('''",
    "\"日本語\"",
];

/// `src` with one mutation chosen by `rng`. Returns bytes: some mutations make invalid UTF-8.
fn mutate(src: &str, rng: &mut StdRng) -> Vec<u8> {
    let lines: Vec<&str> = src.lines().collect();
    let pick = rng.gen_range(0..lines.len());
    match rng.gen_range(0..6) {
        0 => {
            // Flip a byte.
            let mut b = src.as_bytes().to_vec();
            let i = rng.gen_range(0..b.len());
            b[i] ^= 1 << rng.gen_range(0..8);
            b
        }
        1 => {
            let mut l = lines.clone();
            l.remove(pick);
            l.join("\n").into_bytes()
        }
        2 => {
            let mut l = lines.clone();
            l.insert(pick, lines[pick]);
            l.join("\n").into_bytes()
        }
        3 => {
            // Truncate: a half-written file.
            let cut = rng.gen_range(0..src.len());
            src.as_bytes()[..cut].to_vec()
        }
        4 => {
            // Insert an invalid UTF-8 byte.
            let mut b = src.as_bytes().to_vec();
            let i = rng.gen_range(0..b.len());
            b.insert(i, 0xff);
            b
        }
        _ => {
            // A value replaced by a hostile one: `key = value` lines only.
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            let with_value: Vec<usize> = (0..l.len())
                .filter(|&i| {
                    let t = l[i].trim_start();
                    !t.starts_with('#') && !t.starts_with('[') && t.contains(" = ")
                })
                .collect();
            let i = with_value[rng.gen_range(0..with_value.len())];
            let key = l[i].split(" = ").next().unwrap_or("").to_string();
            let v = HOSTILE[rng.gen_range(0..HOSTILE.len())];
            l[i] = format!("{key} = {v}");
            l.join("\n").into_bytes()
        }
    }
}

/// Each rendered error starts `t.toml:LINE:COL: error: MESSAGE` with the position inside the
/// file and a message that is not empty.
fn assert_located(errors: &[String], src: &[u8]) {
    assert!(!errors.is_empty(), "refused without any error");
    let lines = src.split(|&b| b == b'\n').count();
    for e in errors {
        let rest = e
            .strip_prefix("t.toml:")
            .unwrap_or_else(|| panic!("no position: {e}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let col: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let msg = parts.next().unwrap_or("");
        assert!(
            line >= 1 && line <= lines.max(1),
            "line {line} outside the file: {e}"
        );
        assert!(col >= 1, "no column: {e}");
        let msg = msg.trim_start().strip_prefix("error:").unwrap_or(msg);
        let first = msg.lines().next().unwrap_or("").trim();
        assert!(!first.is_empty(), "empty message: {e}");
    }
}

/// What the daemon does with an accepted config, short of running: build the HTTP client and
/// do its time arithmetic with every configured duration.
fn assert_runnable(l: &Loaded) {
    Fetcher::new(&l.config.http).expect("an accepted [http] builds a client");
    let now = Utc::now();
    let d = &l.config.daemon;
    let r = &l.config.retention;
    let mut durations = vec![d.poll_interval, d.min_interval, d.backfill, d.alert_min_gap];
    durations.extend([d.cluster_window, r.items, r.delivered, r.forget]);
    durations.extend(l.feeds.iter().map(|f| f.interval * 2));
    for dur in durations {
        let c = chrono::Duration::from_std(dur).expect("fits a chrono duration");
        assert!(now.checked_add_signed(c).is_some() && now.checked_sub_signed(c).is_some());
    }
    let h = &l.config.http;
    for dur in [
        h.connect_timeout,
        h.first_byte_timeout,
        h.total_timeout,
        h.per_host_gap,
    ] {
        assert!(Instant::now().checked_add(dur * 4).is_some());
    }
}

#[test]
fn mutated_shipped_configs_never_panic_and_every_refusal_is_located() {
    let mut rng = StdRng::seed_from_u64(17);
    let (mut accepted, mut refused) = (0, 0);
    let light = with_short_rules(SHIPPED);
    // (The shipped watches are short expressions over term sets now, so the light config is
    // no longer half their size; it still must not be larger, and must keep its watches.)
    assert!(light.len() <= SHIPPED.len() && light.contains("[[watches]]"));
    config::load_str("t.toml", &light).expect("the light config compiles");
    for case in 0..CASES + FULL_CASES {
        let base = if case < CASES {
            light.as_str()
        } else {
            SHIPPED
        };
        let bytes = mutate(base, &mut rng);
        let result = std::panic::catch_unwind(|| match std::str::from_utf8(&bytes) {
            Ok(src) => config::load_str("t.toml", src),
            Err(_) => {
                // Through the file path, which is where invalid UTF-8 arrives.
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("t.toml");
                std::fs::write(&p, &bytes).unwrap();
                config::load(&p).map_err(|e| {
                    let shown = p.display().to_string();
                    config::ConfigErrors(
                        e.0.iter()
                            .map(|m| m.replacen(&shown, "t.toml", 1))
                            .collect(),
                    )
                })
            }
        });
        let src = String::from_utf8_lossy(&bytes);
        match result {
            Err(_) => panic!("case {case}: load panicked on:\n{src}"),
            Ok(Ok(l)) => {
                accepted += 1;
                assert_runnable(&l);
            }
            Ok(Err(e)) => {
                refused += 1;
                assert_located(&e.0, &bytes);
            }
        }
    }
    println!(
        "{} mutations: {accepted} accepted, {refused} refused",
        CASES + FULL_CASES
    );
    assert!(
        accepted > 0 && refused > 0,
        "the mutations must exercise both paths"
    );
}
