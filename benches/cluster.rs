//! Clusters 100,000 generated stored items (about 25,000 stories told by one to seven outlets
//! each, over 60 days, a 3-day window pruned as time passes) and prints the time for
//! signatures and for index inserts, how well the known stories were recovered, and the peak
//! memory (VmHWM from /proc/self/status). Then the start-up case: all 100,000 items restored
//! into one index whose window holds them all, timed, with the heap it holds per item (live
//! bytes counted by this bench's allocator, less the fixed 4 MiB word-statistics sketch;
//! allocator overhead not included). Run with
//! `cargo bench --bench cluster`.
//!
//! The text is synthetic: each story has a handful of specific words (names, numbers) that
//! its rewrites share, drawn from a large vocabulary, and every item also uses the small set of
//! generic topic words (China, chips, export…) that all stories share — the case IDF weighting
//! is there for. A quarter of the stories are in Chinese.

use std::time::Instant;

mod cluster_eval;
mod procfs;

use chrono::{DateTime, Duration, Utc};
use policywatch::canon::canonical_url;
use policywatch::cluster::{signature, ClusterIndex, Signature};

const ITEMS: usize = 100_000;

/// The system allocator, counting live heap bytes (for the index's memory per item).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_bytes() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}
const DAYS: i64 = 60;

/// xorshift64*: deterministic, dependency-free, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const GENERIC: &[&str] = &[
    "china",
    "chips",
    "export",
    "controls",
    "nvidia",
    "commerce",
    "department",
    "rules",
    "semiconductor",
    "license",
    "washington",
    "beijing",
    "restrictions",
    "technology",
    "ai",
    "companies",
    "trade",
    "government",
    "officials",
    "market",
];
const FILLER: &[&str] = &[
    "said", "on", "the", "a", "new", "move", "after", "amid", "could", "would", "plans",
    "expected", "latest", "major", "week", "firms", "industry", "analysts", "shares", "prices",
];
/// Generic Chinese topic words, shared by every Chinese story.
const GENERIC_ZH: &[&str] = &[
    "美国",
    "商务部",
    "芯片",
    "出口",
    "中国",
    "许可证",
    "管制",
    "实体清单",
    "公司",
    "技术",
    "半导体",
    "政府",
    "市场",
    "规则",
    "限制",
    "发布",
    "宣布",
    "企业",
    "人工智能",
    "数据中心",
];

/// A specific Chinese word (a name): two or three ideographs from the whole basic block.
fn specific_zh(rng: &mut Rng) -> String {
    let n = 2 + rng.below(2);
    (0..n)
        .map(|_| char::from_u32(0x4e00 + rng.below(0x51a5) as u32).unwrap_or('中'))
        .collect()
}

fn syllable(rng: &mut Rng) -> String {
    const C: &[&str] = &[
        "b", "d", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    ];
    const V: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    format!("{}{}", C[rng.below(C.len())], V[rng.below(V.len())])
}

/// A specific word: a made-up name or a model number.
fn specific(rng: &mut Rng) -> String {
    if rng.below(4) == 0 {
        format!("{}{}", syllable(rng), rng.below(1000))
    } else {
        (0..3).map(|_| syllable(rng)).collect()
    }
}

struct Story {
    words: Vec<String>,
    zh: bool,
}

fn story(rng: &mut Rng) -> Story {
    let zh = rng.below(4) == 0;
    let words = if zh {
        let mut words: Vec<String> = (0..6).map(|_| specific_zh(rng)).collect();
        words.push(specific(rng));
        words.push(specific(rng));
        words
    } else {
        (0..8).map(|_| specific(rng)).collect()
    };
    Story { words, zh }
}

/// One outlet's rewrite: most of the story's specific words in its own order, generic and
/// filler words around them.
fn rewrite(rng: &mut Rng, s: &Story) -> (String, String) {
    let pick = |n: usize, rng: &mut Rng| -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = rng.below(10);
            out.push(if r < 5 {
                s.words[rng.below(s.words.len())].clone()
            } else if s.zh {
                GENERIC_ZH[rng.below(GENERIC_ZH.len())].to_string()
            } else if r < 8 {
                GENERIC[rng.below(GENERIC.len())].to_string()
            } else {
                FILLER[rng.below(FILLER.len())].to_string()
            });
        }
        out
    };
    // Chinese has no spaces, but a model number next to ideographs still stands apart.
    let sep = if s.zh { "" } else { " " };
    let title = pick(9, rng).join(sep);
    let summary = pick(30, rng).join(sep);
    (title, summary)
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0: DateTime<Utc> = DateTime::from_timestamp(1_780_000_000, 0).expect("time");
    let step = Duration::seconds(DAYS * 86_400 / ITEMS as i64);

    // Generate: (story number, time, url, title, summary), stories interleaved in time.
    let mut items = Vec::with_capacity(ITEMS);
    let mut feeds: Vec<i64> = Vec::with_capacity(ITEMS);
    let mut zh_story: Vec<bool> = Vec::with_capacity(ITEMS);
    let mut open: Vec<(usize, Story, usize)> = Vec::new(); // (story no, story, rewrites left)
    let mut stories = 0usize;
    while items.len() < ITEMS {
        if open.len() < 40 || rng.below(3) == 0 {
            let s = story(&mut rng);
            let n = 1 + rng.below(7);
            open.push((stories, s, n));
            stories += 1;
        }
        let k = rng.below(open.len());
        let (no, ref s, ref mut left) = open[k];
        let (title, summary) = rewrite(&mut rng, s);
        let at = t0 + step * items.len() as i32;
        let outlet = rng.below(50);
        let url = format!("https://outlet{outlet}.example/news/{no}-{}", *left);
        feeds.push(outlet as i64);
        zh_story.push(s.zh);
        items.push((no, at, url, title, summary));
        *left -= 1;
        if *left == 0 {
            open.swap_remove(k);
        }
    }

    let start = Instant::now();
    let sigs: Vec<Signature> = items
        .iter()
        .map(|(_, _, _, t, s)| signature(t, s))
        .collect();
    let sig_time = start.elapsed();
    let urls: Vec<Option<String>> = items
        .iter()
        .map(|(_, _, u, _, _)| canonical_url(u))
        .collect();
    let bytes: usize = sigs.iter().map(|s| s.to_bytes().len()).sum();

    let before_index = procfs::status_kib("VmHWM:");
    let mut ix = ClusterIndex::new(Duration::days(3));
    let start = Instant::now();
    let mut cluster = Vec::with_capacity(ITEMS);
    let mut max_len = 0;
    for (i, (_, at, _, _, _)) in items.iter().enumerate() {
        if i % 1000 == 0 {
            ix.prune(*at - Duration::days(3));
        }
        let c = ix
            .insert(i as i64, feeds[i], urls[i].as_deref(), &sigs[i], *at)
            .unwrap_or(i as i64);
        cluster.push(c);
        max_len = max_len.max(ix.len());
    }
    let insert_time = start.elapsed();

    // Quality against the generator's truth: pairs of consecutive rewrites of one story that
    // landed together, and items that joined a cluster started by another story.
    let mut first_of_story: std::collections::HashMap<usize, usize> =
        std::collections::HashMap::new();
    let (mut together, mut pairs, mut wrong) = (0usize, 0usize, 0usize);
    let (mut together_zh, mut pairs_zh) = (0usize, 0usize);
    for (i, (no, ..)) in items.iter().enumerate() {
        let first = first_of_story.get(no).copied();
        // Rewrites further apart than the window are rightly separate clusters.
        let in_window = first.is_some_and(|f| (items[i].1 - items[f].1) <= Duration::days(3));
        if let (Some(f), true) = (first, in_window) {
            pairs += 1;
            let zh = zh_story[i];
            pairs_zh += usize::from(zh);
            if cluster[i] == cluster[f] {
                together += 1;
                together_zh += usize::from(zh);
            } else if std::env::var_os("CLUSTER_BENCH_DEBUG").is_some() && pairs % 2000 == 0 {
                println!(
                    "  miss: score {:.3} ({} vs {} feats, dt {}s, same feed {})\n    {} | {}\n    {} | {}",
                    ix.score(&sigs[i], &sigs[f]),
                    sigs[i].len(),
                    sigs[f].len(),
                    (items[i].1 - items[f].1).num_seconds(),
                    feeds[i] == feeds[f],
                    items[i].3,
                    items[i].4,
                    items[f].3,
                    items[f].4
                );
            }
        } else if first.is_none() {
            first_of_story.insert(*no, i);
        }
        let c = cluster[i] as usize;
        if items[c].0 != *no {
            wrong += 1;
        }
    }
    let clusters = cluster
        .iter()
        .enumerate()
        .filter(|&(i, &c)| c == i as i64)
        .count();

    println!("cluster bench: {ITEMS} items, {stories} stories, window 3 days over {DAYS} days");
    println!(
        "  signatures: {:.2?} total, {:.1} µs/item, {:.0} bytes/item stored",
        sig_time,
        sig_time.as_secs_f64() * 1e6 / ITEMS as f64,
        bytes as f64 / ITEMS as f64
    );
    println!(
        "  index inserts (incl. pruning): {:.2?} total, {:.1} µs/item, max {} items in window",
        insert_time,
        insert_time.as_secs_f64() * 1e6 / ITEMS as f64,
        max_len
    );
    println!(
        "  clusters: {clusters}; rewrites joined to their story's first item (within the window): {together}/{pairs} ({:.1}%); items in another story's cluster: {wrong} ({:.2}%)",
        100.0 * together as f64 / pairs.max(1) as f64,
        100.0 * wrong as f64 / ITEMS as f64
    );
    println!(
        "  of which Chinese stories: {together_zh}/{pairs_zh} ({:.1}%), others: {}/{} ({:.1}%)",
        100.0 * together_zh as f64 / pairs_zh.max(1) as f64,
        together - together_zh,
        pairs - pairs_zh,
        100.0 * (together - together_zh) as f64 / (pairs - pairs_zh).max(1) as f64
    );
    match (before_index, procfs::status_kib("VmHWM:")) {
        (Some(b), Some(k)) => println!(
            "  peak memory (VmHWM): {:.1} MiB at the end; {:.1} MiB before the index was built \
             (generated text and signatures of all {ITEMS} items)",
            k as f64 / 1024.0,
            b as f64 / 1024.0
        ),
        _ => println!("  peak memory: /proc/self/status not available"),
    }
    // Start-up: every item restored (clusters already decided) into an index spanning them all.
    let start = Instant::now();
    let mut all = ClusterIndex::new(Duration::days(DAYS + 1));
    let empty = live_bytes();
    // As the daemon's start-up does: room for the entries and maps reserved first, the arena
    // trimmed after.
    all.reserve(items.len(), items.len());
    for (i, (_, at, _, _, _)) in items.iter().enumerate() {
        all.restore(
            i as i64,
            feeds[i],
            cluster[i],
            urls[i].as_deref(),
            &sigs[i],
            *at,
        );
    }
    all.shrink_to_fit();
    let restore_time = start.elapsed();
    let held = live_bytes().saturating_sub(empty);
    let feats: usize = sigs.iter().map(Signature::len).sum();
    println!(
        "  restore {ITEMS} items into one index (start-up): {:.2?} total, {:.2} µs/item; \
         index heap {:.0} bytes/item besides the 4 MiB sketch ({:.1} features/item)",
        restore_time,
        restore_time.as_secs_f64() * 1e6 / ITEMS as f64,
        held as f64 / ITEMS as f64,
        feats as f64 / ITEMS as f64
    );
    assert_eq!(all.len(), ITEMS);
    drop(all);
    // The join decision on real pairs (method in benches/cluster_eval/mod.rs).
    let start = Instant::now();
    match cluster_eval::measure() {
        Some((report, _)) => println!(
            "  real pairs (shared corpora, judged in {:.2?}): {}",
            start.elapsed(),
            report.line()
        ),
        None => println!("  real pairs: ../shared/corpus/news absent, not measured"),
    }
}
