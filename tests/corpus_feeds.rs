//! Robustness run over other projects' feed parser test suites in `../shared/corpus/feeds`.
//!
//! Every file goes through our own path — `Fetcher` on a `file://` URL (same size cap as HTTP),
//! then `feed::parse` — on a separate thread under `catch_unwind` with a per-file time guard.
//! Asserted: nothing panics through `feed::parse`, nothing hangs, and every file whose suite
//! ships an expected result (gofeed `*.json`, feed-rs `*.serde.json`) parses. Printed: outcome
//! counts per suite, and a cross-check of feed titles and item counts against the expected JSON.
//!
//! Ignored by default (it reads ~5,700 files):
//! `cargo test --test corpus_feeds -- --ignored --nocapture`. Skips when `../shared` is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use policywatch::feed::{self, FeedError, ParsedFeed};
use policywatch::fetch::{FetchOutcome, FetchRequest, Fetcher, HttpConfig};
use url::Url;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/feeds");
/// Generous: the slowest real file parses in milliseconds; this only catches a hang.
const PER_FILE_GUARD: Duration = Duration::from_secs(20);

#[derive(Debug)]
enum Outcome {
    Parsed(ParsedFeed),
    NotAFeed(bool),
    Invalid(String),
    Empty,
    /// feed-rs panicked and `feed::parse` caught it (reported, not a failure of ours).
    ParserPanic(String),
    /// A panic escaped `feed::parse`: a bug of ours.
    Panicked(String),
    Hung,
    FetchFailed(String),
}

#[derive(Default)]
struct Counts {
    files: usize,
    parsed: usize,
    items: usize,
    not_a_feed: usize,
    not_a_feed_with_alternate: usize,
    invalid: usize,
    empty: usize,
    parser_panic: usize,
    panicked: usize,
    hung: usize,
    fetch_failed: usize,
    replacement_chars: usize,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The expected-result file that goes with an input, if its suite ships one.
fn expected_for(path: &Path) -> Option<PathBuf> {
    let s = path.to_str()?;
    if s.contains("/gofeed/") && s.ends_with(".xml") {
        let p = PathBuf::from(format!("{}.json", s.strip_suffix(".xml")?));
        return p.exists().then_some(p);
    }
    if s.contains("/gofeed/") && s.ends_with(".json") {
        let p = PathBuf::from(format!("{}_expected.json", s.strip_suffix(".json")?));
        return p.exists().then_some(p);
    }
    if s.contains("/feed-rs/") && !s.ends_with(".serde.json") {
        let stem = s.rsplit_once('.')?.0;
        let p = PathBuf::from(format!("{stem}.serde.json"));
        return p.exists().then_some(p);
    }
    None
}

/// Files that are expected results or licences, not inputs.
fn is_not_input(path: &Path) -> bool {
    let s = path.to_string_lossy();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.starts_with("LICENSE") || name == "README.md" {
        return true;
    }
    if s.ends_with(".serde.json") || s.ends_with("_expected.json") {
        return true;
    }
    // gofeed: `x.json` next to `x.xml` is the expected result for `x.xml`.
    if s.contains("/gofeed/") && s.ends_with(".json") {
        let xml = PathBuf::from(format!("{}.xml", s.trim_end_matches(".json")));
        return xml.exists();
    }
    false
}

/// feedparser's encoding tests describe the HTTP `Content-Type` they were served with in a
/// leading comment (`Header: Content-type: text/xml; charset=...`); use it, so header
/// precedence is exercised too.
fn simulated_content_type(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
    let line = head
        .lines()
        .find(|l| l.trim_start().starts_with("Header:"))?;
    let (_, value) = line
        .split_once("Content-type:")
        .or_else(|| line.split_once("Content-Type:"))?;
    Some(value.trim().to_string())
}

fn guarded_parse(body: Vec<u8>, base: Url) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ct = simulated_content_type(&body);
        let r = std::panic::catch_unwind(|| feed::parse(&body, ct.as_deref(), Some(&base)));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(PER_FILE_GUARD) {
        Err(_) => Outcome::Hung,
        Ok(Err(p)) => Outcome::Panicked(
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default(),
        ),
        Ok(Ok(Ok(f))) => Outcome::Parsed(f),
        Ok(Ok(Err(FeedError::NotAFeed { alternate }))) => Outcome::NotAFeed(alternate.is_some()),
        Ok(Ok(Err(FeedError::Invalid(m)))) => Outcome::Invalid(m),
        Ok(Ok(Err(FeedError::Empty))) => Outcome::Empty,
        Ok(Ok(Err(FeedError::ParserPanic(m)))) => Outcome::ParserPanic(m),
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Title and item count from a suite's expected JSON.
fn expected_summary(path: &Path) -> Option<(Option<String>, usize)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let title = match &v["title"] {
        serde_json::Value::String(s) => Some(s.clone()),
        // feed-rs: {"content": "..."}
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    };
    let items = v["items"]
        .as_array()
        .or_else(|| v["entries"].as_array())
        .map(Vec::len)
        .unwrap_or(0);
    Some((title, items))
}

#[test]
#[ignore = "reads ../shared/corpus/feeds; run with --ignored --nocapture"]
fn corpus_feeds_never_panic_or_hang() {
    let root = Path::new(CORPUS);
    if !root.is_dir() {
        eprintln!("skipping: {} is absent", root.display());
        return;
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    files.retain(|p| !is_not_input(p));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fetcher = Fetcher::new(&HttpConfig::default()).unwrap();

    // feed-rs panics are caught inside `feed::parse`; keep their messages off the terminal
    // (they are counted and listed below instead).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));

    let mut by_suite: BTreeMap<String, Counts> = BTreeMap::new();
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut xchecked, mut title_ok, mut count_ok) = (0usize, 0usize, 0usize);
    let mut mismatches: Vec<String> = Vec::new();
    let mut expected_but_failed: Vec<String> = Vec::new();
    // Every file's outcome, for digging into the figures.
    let mut tsv = String::new();

    for path in &files {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        let suite = rel.split('/').next().unwrap_or("?").to_string();
        let url = Url::from_file_path(path).unwrap();
        let outcome = match rt.block_on(fetcher.fetch(&FetchRequest::new(url.clone()))) {
            FetchOutcome::Fetched { body, .. } => guarded_parse(body.to_vec(), url),
            other => Outcome::FetchFailed(format!("{other:?}")),
        };
        let kind = match &outcome {
            Outcome::Parsed(f) => format!("parsed:{}", f.items.len()),
            Outcome::NotAFeed(alt) => format!("not-a-feed:{alt}"),
            Outcome::Invalid(m) => format!("invalid:{}", m.replace(['\t', '\n'], " ")),
            other => format!("{other:?}").replace(['\t', '\n'], " "),
        };
        tsv.push_str(&format!("{rel}\t{kind}\n"));
        let c = by_suite.entry(suite.clone()).or_default();
        c.files += 1;
        let mut note = |kind: &str, msg: &str| {
            notes
                .entry(format!("{suite}: {kind}"))
                .or_default()
                .push(format!(
                    "{rel}: {}",
                    msg.chars().take(120).collect::<String>()
                ));
        };
        match &outcome {
            Outcome::Parsed(f) => {
                c.parsed += 1;
                c.items += f.items.len();
                // Text that came out with U+FFFD: bytes we could not decode.
                let texts = f.title.iter().chain(
                    f.items
                        .iter()
                        .flat_map(|i| [&i.title, &i.summary, &i.content]),
                );
                if texts.into_iter().any(|t| t.contains('\u{fffd}')) {
                    c.replacement_chars += 1;
                    note("U+FFFD in output", f.encoding);
                }
            }
            Outcome::NotAFeed(alt) => {
                c.not_a_feed += 1;
                c.not_a_feed_with_alternate += usize::from(*alt);
            }
            Outcome::Invalid(m) => {
                c.invalid += 1;
                note("invalid", m);
            }
            Outcome::Empty => c.empty += 1,
            Outcome::ParserPanic(m) => {
                c.parser_panic += 1;
                note("feed-rs panic (caught)", m);
            }
            Outcome::Panicked(m) => {
                c.panicked += 1;
                note("PANIC", m);
            }
            Outcome::Hung => {
                c.hung += 1;
                note("HUNG", "");
            }
            Outcome::FetchFailed(m) => {
                c.fetch_failed += 1;
                note("fetch failed", m);
            }
        }

        if let Some(exp) = expected_for(path) {
            match (&outcome, expected_summary(&exp)) {
                (Outcome::Parsed(f), Some((title, n))) => {
                    xchecked += 1;
                    let ours = f.title.clone().unwrap_or_default();
                    let want = title.unwrap_or_default();
                    let t_ok = collapse(&ours) == collapse(&want)
                        || ours == feed::html_to_text(&want, feed::MAX_TITLE_BYTES);
                    title_ok += usize::from(t_ok);
                    count_ok += usize::from(f.items.len() == n);
                    if !t_ok || f.items.len() != n {
                        mismatches.push(format!(
                            "{rel}: title {ours:?} vs {want:?}, items {} vs {n}",
                            f.items.len()
                        ));
                    }
                }
                (other, _) => expected_but_failed.push(format!("{rel}: {other:?}")),
            }
        }
    }
    std::panic::set_hook(default_hook);
    let tsv_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus_feeds.tsv");
    if std::fs::write(&tsv_path, tsv).is_ok() {
        println!("per-file outcomes: {}", tsv_path.display());
    }

    println!("\nsuite               files  parsed  items  not-feed(alt)  invalid  empty  feed-rs-panic  PANIC  HUNG  fetch-failed  U+FFFD");
    let mut total = Counts::default();
    for (suite, c) in &by_suite {
        println!(
            "{suite:<18} {:>6}  {:>6}  {:>5}  {:>8}({:>3})  {:>7}  {:>5}  {:>13}  {:>5}  {:>4}  {:>12}  {:>6}",
            c.files, c.parsed, c.items, c.not_a_feed, c.not_a_feed_with_alternate, c.invalid,
            c.empty, c.parser_panic, c.panicked, c.hung, c.fetch_failed, c.replacement_chars
        );
        total.replacement_chars += c.replacement_chars;
        total.files += c.files;
        total.parsed += c.parsed;
        total.items += c.items;
        total.not_a_feed += c.not_a_feed;
        total.invalid += c.invalid;
        total.empty += c.empty;
        total.parser_panic += c.parser_panic;
        total.panicked += c.panicked;
        total.hung += c.hung;
        total.fetch_failed += c.fetch_failed;
    }
    println!(
        "TOTAL              {:>6}  {:>6}  {:>5}  {:>8}       {:>7}  {:>5}  {:>13}  {:>5}  {:>4}  {:>12}  {:>6}",
        total.files, total.parsed, total.items, total.not_a_feed, total.invalid, total.empty,
        total.parser_panic, total.panicked, total.hung, total.fetch_failed, total.replacement_chars
    );
    println!(
        "\ncross-check against shipped expected JSON: {xchecked} files; title matches {title_ok}, item count matches {count_ok}; {} with an expected result did not parse",
        expected_but_failed.len()
    );
    for m in mismatches.iter().take(25) {
        println!("  mismatch: {m}");
    }
    for m in expected_but_failed.iter().take(25) {
        println!("  expected to parse: {m}");
    }
    for (kind, list) in &notes {
        println!("\n{kind}: {} file(s)", list.len());
        for l in list.iter().take(8) {
            println!("  {l}");
        }
    }

    // Files a suite ships an expected result for must parse, unless the XML itself is
    // ill-formed (some suites test their own parser's leniency on mismatched tags).
    let unexpected: Vec<&String> = expected_but_failed
        .iter()
        .filter(|m| !(m.contains("ill-formed document") || m.contains("syntax error")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "well-formed files with an expected result failed: {unexpected:#?}"
    );
    assert_eq!(total.panicked, 0, "a panic escaped feed::parse");
    assert_eq!(total.hung, 0, "a parse hung");
    assert_eq!(
        total.fetch_failed, 0,
        "a corpus file could not be read through file://"
    );
}
