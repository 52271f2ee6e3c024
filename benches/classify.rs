//! Classification throughput with the default rules (config/policywatch.toml).
//!
//! `cargo bench --bench classify` — prints MB/s of item text and items/s, single thread, over
//! generated items (half English, the rest Chinese, Vietnamese, Polish, German; four in five are
//! ordinary news, one in five a policy story, like a real feed mix — the ordinary ones still
//! carry "chips", "AI", "China's", "trade"), then over the shared news corpus when
//! `../shared/corpus/news/items.jsonl` exists. Optional arguments: seconds per run (default 3),
//! and the names of the runs to do (`compile`, `huge`, `mixed`, `ascii`, `normalise`, `corpus`,
//! `parts` — the corpus run split into language identification and rules; default all), e.g. `cargo bench --bench classify -- 5 corpus` to profile one of them. `huge` runs
//! first and classifies one item with a 12 MB summary, printing the time and how far peak memory
//! (VmHWM) rose above the memory in use before the item was built. Every timed run includes
//! language identification (`lang::identify`), as the daemon does before classifying. The
//! first line is the time to compile the shipped config (term sets included).

use std::time::{Duration, Instant};

mod procfs;
use procfs::{cpu_seconds, status_mib};

use policywatch::classify::Classifier;
use policywatch::item::Item;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EN_FILLER: &[&str] = &[
    "the",
    "government",
    "said",
    "on",
    "Tuesday",
    "that",
    "it",
    "would",
    "review",
    "market",
    "growth",
    "and",
    "companies",
    "reported",
    "strong",
    "earnings",
    "while",
    "analysts",
    "expect",
    "again",
    "prices",
    "to",
    "rise",
    "in",
    "the",
    "coming",
    "quarter",
    "after",
    "officials",
    "met",
    "with",
    "investors",
    "football",
    "weather",
    "election",
    "minister",
    "policy",
    "data",
    "centre",
    "cloud",
    "software",
    "startup",
    "funding",
    "round",
    "said",
    "sources",
    "familiar",
    "matter",
    "AI",
    "model",
    "smartphone",
    "launch",
    "battery",
    "electric",
    "vehicles",
    "bank",
    "inflation",
    "rates",
    "-",
    "state-of-the-art",
    "U.S.",
    "China's",
    "Europe",
    "trade",
    "talks",
    "supply",
    "chain",
    "chips",
];
const EN_POLICY: &[&str] = &[
    "export controls",
    "Entity List",
    "Nvidia H100",
    "AI chips",
    "sanctions on Huawei",
    "Bureau of Industry and Security",
    "curbs on chip exports",
    "gallium and germanium",
    "AMD Instinct MI300X",
    "HBM3E",
    "ASML lithography",
    "advanced computing",
];
const ZH: &[&str] = &[
    "美国",
    "政府",
    "周二",
    "表示",
    "市场",
    "增长",
    "公司",
    "公布",
    "业绩",
    "分析师",
    "预计",
    "价格",
    "上涨",
    "天气",
    "足球",
    "經濟",
    "發展",
    "記者",
    "報道",
    "，",
    "。",
];
const ZH_POLICY: &[&str] = &[
    "芯片",
    "出口管制",
    "实体清单",
    "英伟达",
    "人工智能",
    "华为",
    "制裁",
    "半导体",
];
const VI: &[&str] = &[
    "chính",
    "phủ",
    "cho",
    "biết",
    "thị",
    "trường",
    "tăng",
    "trưởng",
    "công",
    "ty",
    "lợi",
    "nhuận",
    "Mỹ",
    "Trung",
    "Quốc",
    "bóng",
    "đá",
    "thời",
    "tiết",
];
const VI_POLICY: &[&str] = &[
    "lệnh trừng phạt",
    "xuất khẩu chip",
    "chất bán dẫn",
    "trí tuệ nhân tạo",
];
const PL: &[&str] = &[
    "rząd",
    "poinformował",
    "że",
    "rynek",
    "wzrośnie",
    "firmy",
    "zyski",
    "analitycy",
    "ceny",
    "Chiny",
    "USA",
    "pogoda",
    "piłka",
];
const PL_POLICY: &[&str] = &[
    "chipów",
    "sankcje",
    "eksportu",
    "Nvidia",
    "sztucznej",
    "inteligencji",
];
const DE: &[&str] = &[
    "die",
    "Regierung",
    "sagte",
    "dass",
    "Markt",
    "Wachstum",
    "Unternehmen",
    "Gewinne",
    "Preise",
    "Wetter",
    "Fußball",
    "größer",
];
const DE_POLICY: &[&str] = &["Exportkontrollen", "Halbleiter", "KI-Chips", "Sanktionen"];

/// `n` words of `vocab`; in a policy story about one word in 25 is a policy term, from the
/// story's language or English (product names and acronyms travel).
fn words(rng: &mut StdRng, lang: &Lang, n: usize, policy: bool) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push_str(lang.sep);
        }
        let vocab = if policy && rng.gen_ratio(1, 25) {
            if rng.gen_bool(0.5) {
                lang.policy
            } else {
                EN_POLICY
            }
        } else {
            lang.filler
        };
        out.push_str(vocab[rng.gen_range(0..vocab.len())]);
    }
    out
}

struct Lang {
    filler: &'static [&'static str],
    policy: &'static [&'static str],
    sep: &'static str,
}

/// One in five stories is about policy; the rest is ordinary news in the same words.
fn gen_item(rng: &mut StdRng) -> Item {
    let lang = match rng.gen_range(0..10) {
        0..=4 => Lang {
            filler: EN_FILLER,
            policy: EN_POLICY,
            sep: " ",
        },
        5 | 6 => Lang {
            filler: ZH,
            policy: ZH_POLICY,
            sep: "",
        },
        7 => Lang {
            filler: VI,
            policy: VI_POLICY,
            sep: " ",
        },
        8 => Lang {
            filler: PL,
            policy: PL_POLICY,
            sep: " ",
        },
        _ => Lang {
            filler: DE,
            policy: DE_POLICY,
            sep: " ",
        },
    };
    let policy = rng.gen_ratio(1, 5);
    let title_n = rng.gen_range(6..14);
    let sum_n = rng.gen_range(30..80);
    let content_n = if rng.gen_ratio(1, 3) {
        rng.gen_range(200..600)
    } else {
        0
    };
    Item {
        title: words(rng, &lang, title_n, policy),
        summary: words(rng, &lang, sum_n, policy),
        content: words(rng, &lang, content_n, policy),
        link: Some(format!(
            "https://news.example.com/{}/story",
            rng.gen_range(0..100000)
        )),
        feed_name: "Example News".into(),
        categories: vec!["World".into(), "Business".into()],
        ..Default::default()
    }
}

fn item_bytes(it: &Item) -> usize {
    it.title.len() + it.summary.len() + it.content.len()
}

/// Classification as the daemon does it: the item's language told (`lang::identify`, timed
/// with the rest), then the watches.
fn run(name: &str, clf: &Classifier, items: &[Item], budget: Duration) {
    let bytes: usize = items.iter().map(item_bytes).sum();
    // The language each item is classified as (identification is repeated in the timed loop).
    let items: Vec<Item> = items
        .iter()
        .cloned()
        .map(|mut it| {
            policywatch::lang::fill(&mut it);
            it
        })
        .collect();
    let items = &items[..];
    // Warm up once, then repeat over the set until the time budget is used.
    let mut matched = 0usize;
    for it in items {
        matched += clf.classify(it).len();
    }
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut rounds = 0u32;
    while start.elapsed() < budget || rounds == 0 {
        for it in items {
            let it = std::hint::black_box(it);
            std::hint::black_box(policywatch::lang::identify(it));
            std::hint::black_box(clf.classify(it));
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => secs,
    };
    let total_bytes = bytes as f64 * rounds as f64;
    let total_items = items.len() as f64 * rounds as f64;
    println!(
        "{name:28} {:7.1} MB/s {:8.0} items/s wall | {:7.1} MB/s {:8.0} items/s per CPU-second   ({} items, {:.1} KB avg, {} verdicts/round, {} rounds)",
        total_bytes / secs / 1e6,
        total_items / secs,
        total_bytes / cpu / 1e6,
        total_items / cpu,
        items.len(),
        bytes as f64 / items.len().max(1) as f64 / 1024.0,
        matched,
        rounds
    );
}

/// The two halves of [`run`] on their own, to show where the time goes: language
/// identification alone, and the rules alone on items whose language is already told.
fn run_parts(name: &str, clf: &Classifier, items: &[Item], budget: Duration) {
    let bytes: usize = items.iter().map(item_bytes).sum();
    let told: Vec<Item> = items
        .iter()
        .cloned()
        .map(|mut it| {
            policywatch::lang::fill(&mut it);
            it
        })
        .collect();
    let timed = |part: &str, f: &mut dyn FnMut(&Item)| {
        let start = Instant::now();
        let mut rounds = 0u32;
        while start.elapsed() < budget || rounds == 0 {
            for it in &told {
                f(std::hint::black_box(it));
            }
            rounds += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:28} {:7.1} MB/s {:8.2} µs/item",
            format!("{name}: {part}"),
            bytes as f64 * f64::from(rounds) / secs / 1e6,
            secs * 1e6 / (f64::from(rounds) * told.len() as f64)
        );
    };
    timed("language only", &mut |it| {
        std::hint::black_box(policywatch::lang::identify(it));
    });
    timed("rules only", &mut |it| {
        std::hint::black_box(clf.classify(it));
    });
}

/// Normalisation alone (the first stage of classification), for comparison.
fn run_normalise(name: &str, items: &[Item], budget: Duration) {
    let bytes: usize = items.iter().map(item_bytes).sum();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut rounds = 0u32;
    while start.elapsed() < budget || rounds == 0 {
        for it in items {
            for f in [&it.title, &it.summary, &it.content] {
                std::hint::black_box(policywatch::text::normalize(std::hint::black_box(f)));
            }
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => secs,
    };
    let total = bytes as f64 * rounds as f64;
    println!(
        "{name:28} {:7.1} MB/s wall | {:7.1} MB/s per CPU-second",
        total / secs / 1e6,
        total / cpu / 1e6
    );
}

/// One hostile-sized item: its summary is 12 MB of policy sentences, terms on every line.
fn run_huge(clf: &Classifier) {
    let before = status_mib("VmRSS:");
    let line = "US export controls on AI chips: the Commerce rule on China, Nvidia and Huawei. ";
    let item = Item {
        title: "A very long item".into(),
        summary: line.repeat((12 << 20) / line.len()),
        ..Default::default()
    };
    let t = Instant::now();
    let verdicts = clf.classify(&item);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:28} {:7.1} MB/s, {} verdicts, peak memory {:.1} MiB above the {:.1} MiB before (the text is {:.1} MiB)",
        "one 12 MB item",
        item.summary.len() as f64 / secs / 1e6,
        verdicts.len(),
        status_mib("VmHWM:") - before,
        before,
        item.summary.len() as f64 / (1 << 20) as f64,
    );
}

/// Compiles the shipped config again and again (the shipped sets are parsed once per process,
/// as in the daemon, where a reload reuses them) and prints the fastest and the mean time.
fn run_compile(src: &str, budget: Duration) {
    let start = Instant::now();
    let (mut n, mut best) = (0u32, f64::MAX);
    while n < 3 || start.elapsed() < budget {
        let t = Instant::now();
        let loaded = policywatch::config::load_str("config/policywatch.toml", src);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(loaded.is_ok());
        best = best.min(ms);
        n += 1;
    }
    println!(
        "compiled it again {n} times: fastest {best:.1} ms, mean {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3 / f64::from(n)
    );
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let budget = Duration::from_secs(secs);
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| {
            [
                "compile",
                "huge",
                "mixed",
                "ascii",
                "normalise",
                "corpus",
                "parts",
            ]
            .contains(&a.as_str())
        })
        .collect();
    let wanted = |n: &str| names.is_empty() || names.iter().any(|x| x == n);
    let src = include_str!("../config/policywatch.toml");
    // The whole config as the daemon loads it: TOML, the shipped term sets, the rules.
    let t = Instant::now();
    let loaded = match policywatch::config::load_str("config/policywatch.toml", src) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!(
        "compiled the shipped config ({} watches, term sets included) in {:.1} ms",
        loaded.config.watches.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let clf: &Classifier = &loaded.classifier;
    if wanted("compile") {
        run_compile(src, budget);
    }

    if wanted("huge") {
        run_huge(clf);
    }

    let mut rng = StdRng::seed_from_u64(7);
    let items: Vec<Item> = (0..2000).map(|_| gen_item(&mut rng)).collect();
    let ascii: Vec<Item> = items
        .iter()
        .filter(|i| i.title.is_ascii() && i.summary.is_ascii())
        .cloned()
        .collect();
    if wanted("mixed") {
        run("generated (mixed languages)", clf, &items, budget);
    }
    if wanted("ascii") {
        run("generated (ASCII only)", clf, &ascii, budget);
    }
    if wanted("normalise") {
        run_normalise("normalise only (mixed)", &items, budget);
        run_normalise("normalise only (ASCII)", &ascii, budget);
    }
    if !wanted("corpus") && !wanted("parts") {
        return;
    }

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/news/items.jsonl"
    );
    if let Ok(text) = std::fs::read_to_string(path) {
        let corpus: Vec<Item> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| Item {
                title: v["title"].as_str().unwrap_or("").to_string(),
                summary: v["summary"].as_str().unwrap_or("").to_string(),
                link: v["link"].as_str().map(str::to_string),
                ..Default::default()
            })
            .collect();
        if wanted("corpus") {
            run("shared news corpus", clf, &corpus, budget);
        }
        if wanted("parts") {
            run_parts("corpus", clf, &corpus, budget);
        }
        if wanted("normalise") {
            run_normalise("normalise only (corpus)", &corpus, budget);
        }
    }
}
