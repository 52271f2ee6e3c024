//! How often the cluster index joins items that are different stories, and how often it joins
//! rewrites of one story: shared by `benches/cluster.rs` (which prints the rates next to the
//! speed) and `tests/cluster_corpus.rs` (which holds them to their goals).
//!
//! Method. Real pairs come from the shared news corpora (`../shared/corpus/news/items.jsonl`
//! and `web-dev.jsonl`, read, never copied): every pair of items of one corpus file that the
//! index could compare — first-seen dates at most the 3-day window apart; the web set is
//! mostly undated, so all of its pairs are taken, which is stricter. The index first observes
//! every item (the word statistics of a warmed daemon), then [`ClusterIndex::judge`] decides
//! each pair with the link's host standing in for the feed. A joined pair is a true duplicate
//! only if it is listed in `tests/fixtures/cluster/corpus_duplicates.tsv` (item ids, judged by
//! reading both items: one event reported by two outlets, or one notice published twice);
//! every other join is a false join. Pairs with the same canonical link are joined by the URL
//! rule and counted apart. The true-join rate counts the listed duplicates the text rule joins
//! plus the same-story pairs of the hand-written rewrite fixtures
//! (`tests/fixtures/cluster/*.json`) that end in one cluster.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use policywatch::canon::canonical_url;
use policywatch::cluster::{signature, ClusterIndex, Signature};
use serde::Deserialize;

#[derive(Deserialize, Clone)]
pub struct Row {
    pub id: String,
    pub corpus: String,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub link: String,
    #[serde(default)]
    pub date: String,
}

#[derive(Deserialize)]
pub struct Fixture {
    pub story: String,
    pub feed: String,
    pub hours: i64,
    pub url: String,
    pub title: String,
    pub summary: String,
}

pub fn manifest(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// One corpus file's rows, or `None` when the shared corpus is absent.
pub fn corpus_file(name: &str) -> Option<Vec<Row>> {
    let text = std::fs::read_to_string(manifest(&format!("../shared/corpus/news/{name}"))).ok()?;
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str::<Row>(l).ok())
            .collect(),
    )
}

pub fn fixtures(name: &str) -> Vec<Fixture> {
    let text = std::fs::read_to_string(manifest(&format!("tests/fixtures/cluster/{name}")))
        .expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

/// The fixture files whose same-story pairs count as rewrites.
pub const REWRITE_FIXTURES: &[&str] = &["stories.json", "heldout.json", "apart.json"];

/// The listed true duplicates: unordered id pairs.
pub fn duplicates() -> HashSet<(String, String)> {
    let text = std::fs::read_to_string(manifest("tests/fixtures/cluster/corpus_duplicates.tsv"))
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(key(f.next()?, f.next()?))
        })
        .collect()
}

pub fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn day(d: &str) -> Option<DateTime<Utc>> {
    let d = NaiveDate::parse_from_str(d.get(..10)?, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(12, 0, 0)?.and_utc())
}

fn host(link: &str) -> String {
    url::Url::parse(link)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// One judged pair that the text rule joined.
pub struct Joined {
    pub a: usize,
    pub b: usize,
    pub score: f64,
    pub specific: usize,
    pub specific_title: usize,
    pub listed: bool,
}

#[derive(Default)]
pub struct Report {
    /// Pairs of different items judged (same canonical URL excluded).
    pub pairs: usize,
    /// Pairs with one canonical URL (joined by the URL rule).
    pub same_url: usize,
    pub joined: Vec<Joined>,
    /// Listed duplicates found among the judged pairs, and how many of them joined.
    pub listed: usize,
    pub listed_joined: usize,
    /// Same-story fixture pairs, and how many ended in one cluster.
    pub rewrite_pairs: usize,
    pub rewrites_joined: usize,
    /// Different-story fixture pairs (other than allowed cross-language ones) that merged.
    pub fixture_diff_pairs: usize,
    pub fixture_merged: usize,
}

impl Report {
    pub fn false_joins(&self) -> usize {
        self.joined.iter().filter(|j| !j.listed).count()
    }
    /// False joins over pairs of different stories.
    pub fn false_join_rate(&self) -> f64 {
        let different = self.pairs - self.listed;
        self.false_joins() as f64 / different.max(1) as f64
    }
    /// Rewrite and listed-duplicate pairs joined, over all of them.
    pub fn true_join_rate(&self) -> f64 {
        (self.listed_joined + self.rewrites_joined) as f64
            / (self.listed + self.rewrite_pairs).max(1) as f64
    }
    pub fn line(&self) -> String {
        format!(
            "false joins {}/{} different-story pairs ({:.3}%), true joins {}/{} ({:.1}%: {}/{} listed corpus duplicates, {}/{} fixture rewrites), {} same-link pairs",
            self.false_joins(),
            self.pairs - self.listed,
            100.0 * self.false_join_rate(),
            self.listed_joined + self.rewrites_joined,
            self.listed + self.rewrite_pairs,
            100.0 * self.true_join_rate(),
            self.listed_joined,
            self.listed,
            self.rewrites_joined,
            self.rewrite_pairs,
            self.same_url
        )
    }
}

/// Judges every comparable pair of one corpus file; `rows` are that file's items.
pub fn judge_corpus(rows: &[Row], dups: &HashSet<(String, String)>, report: &mut Report) {
    let sigs: Vec<Signature> = rows
        .iter()
        .map(|r| signature(&r.title, &r.summary))
        .collect();
    let urls: Vec<Option<String>> = rows.iter().map(|r| canonical_url(&r.link)).collect();
    let hosts: Vec<String> = rows.iter().map(|r| host(&r.link)).collect();
    let days: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| day(&r.date)).collect();
    // Undated files (the web set) are one window; dated ones compare within 3 days.
    let dated = days.iter().filter(|d| d.is_some()).count() * 2 > rows.len();
    let mut ix = ClusterIndex::new(Duration::days(3));
    for s in &sigs {
        ix.observe(s);
    }
    for i in 0..rows.len() {
        for j in (i + 1)..rows.len() {
            if dated {
                match (days[i], days[j]) {
                    (Some(a), Some(b)) if (a - b).abs() <= Duration::days(3) => {}
                    _ => continue,
                }
            }
            if urls[i].is_some() && urls[i] == urls[j] {
                report.same_url += 1;
                continue;
            }
            report.pairs += 1;
            let listed = dups.contains(&key(&rows[i].id, &rows[j].id));
            let v = ix.judge(&sigs[i], &sigs[j], hosts[i] == hosts[j]);
            if listed {
                report.listed += 1;
                report.listed_joined += usize::from(v.joins);
            }
            if v.joins {
                report.joined.push(Joined {
                    a: i,
                    b: j,
                    score: v.score,
                    specific: v.specific,
                    specific_title: v.specific_title,
                    listed,
                });
            }
        }
    }
}

/// Stories told in another language may (not must) join their English story.
pub fn base(story: &str) -> &str {
    story
        .strip_suffix("-zh")
        .or_else(|| story.strip_suffix("-vi"))
        .unwrap_or(story)
}

fn at(hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_776_240_000 + hours * 3600, 0).expect("valid time")
}

/// Runs the fixtures through an index in time order; returns each one's cluster.
pub fn cluster_fixtures(fx: &[Fixture]) -> Vec<i64> {
    let mut order: Vec<usize> = (0..fx.len()).collect();
    order.sort_by_key(|&i| fx[i].hours);
    let mut ix = ClusterIndex::new(Duration::days(3));
    let mut cluster = vec![0; fx.len()];
    let mut feeds: HashMap<&str, i64> = HashMap::new();
    for i in order {
        let f = &fx[i];
        let n = feeds.len() as i64;
        let feed = *feeds.entry(f.feed.as_str()).or_insert(n);
        let sig = signature(&f.title, &f.summary);
        let url = canonical_url(&f.url);
        cluster[i] = ix
            .insert(i as i64, feed, url.as_deref(), &sig, at(f.hours))
            .unwrap_or(i as i64);
    }
    cluster
}

pub fn judge_fixtures(report: &mut Report) {
    for name in REWRITE_FIXTURES {
        let fx = fixtures(name);
        let cluster = cluster_fixtures(&fx);
        for i in 0..fx.len() {
            for j in (i + 1)..fx.len() {
                let same = cluster[i] == cluster[j];
                if fx[i].story == fx[j].story {
                    report.rewrite_pairs += 1;
                    report.rewrites_joined += usize::from(same);
                } else if base(&fx[i].story) != base(&fx[j].story) {
                    report.fixture_diff_pairs += 1;
                    report.fixture_merged += usize::from(same);
                }
            }
        }
    }
}

/// The whole measurement; `None` when the shared corpus is absent.
pub fn measure() -> Option<(Report, Vec<Vec<Row>>)> {
    let dups = duplicates();
    let mut report = Report::default();
    let mut files = Vec::new();
    for name in ["items.jsonl", "web-dev.jsonl"] {
        let rows = corpus_file(name)?;
        let start = report.joined.len();
        judge_corpus(&rows, &dups, &mut report);
        // Remember which file each join came from by offsetting its indices.
        let offset: usize = files.iter().map(|f: &Vec<Row>| f.len()).sum();
        for j in &mut report.joined[start..] {
            j.a += offset;
            j.b += offset;
        }
        files.push(rows);
    }
    judge_fixtures(&mut report);
    Some((report, files))
}

/// Every row of every file, in the order the offsets of [`measure`] assume.
pub fn flat(files: &[Vec<Row>]) -> Vec<&Row> {
    files.iter().flatten().collect()
}
