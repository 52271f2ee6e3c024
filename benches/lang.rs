//! Language identification on our own headline fixtures (tests/fixtures/lang.tsv): accuracy per
//! language and speed, for policywatch's `lang::identify` (script shortcuts, then whatlang) and
//! for whatlang alone; with `--features lingua`, also for lingua restricted to the thirteen
//! languages, in its high- and low-accuracy modes.
//!
//! `cargo bench --bench lang [--features lingua] [-- SECONDS]` (default 2 s per speed run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use policywatch::item::Item;
use policywatch::lang::{self, COVERED};

type Detect<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

fn report(name: &str, detect: &Detect, cases: &[(String, String)], budget: Duration) {
    let mut per: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (code, text) in cases {
        let e = per.entry(code.as_str()).or_default();
        e.1 += 1;
        if detect(text).as_deref() == Some(code.as_str()) {
            e.0 += 1;
        }
    }
    let (ok, n) = per.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let bytes: usize = cases.iter().map(|c| c.1.len()).sum();
    let start = Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < budget || rounds == 0 {
        for (_, t) in cases {
            std::hint::black_box(detect(std::hint::black_box(t)));
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let items = cases.len() as f64 * rounds as f64;
    println!(
        "{name:24} accuracy {:5.1}% ({ok}/{n})  {:9.0} items/s  {:6.2} MB/s",
        100.0 * ok as f64 / n as f64,
        items / secs,
        bytes as f64 * rounds as f64 / secs / 1e6
    );
    let row: Vec<String> = per
        .iter()
        .map(|(c, (o, n))| format!("{c} {o}/{n}"))
        .collect();
    println!("{:24} {}", "", row.join("  "));
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2);
    let budget = Duration::from_secs(secs);
    let cases: Vec<(String, String)> = lang::fixtures(include_str!("../tests/fixtures/lang.tsv"))
        .into_iter()
        .map(|(c, t, s)| {
            let item = Item {
                title: t.into(),
                summary: s.into(),
                ..Default::default()
            };
            (c.to_string(), lang::sample(&item))
        })
        .collect();
    println!(
        "{} fixtures in {} languages (title + lead as identify() samples them)",
        cases.len(),
        COVERED.len()
    );
    let ours: Detect = Box::new(|t| lang::identify_text(t).map(|l| l.to_string()));
    report("policywatch (whatlang)", &ours, &cases, budget);
    let plain: Detect = Box::new(|t| {
        whatlang::detect_lang(t).map(|l| {
            match l.code() {
                "eng" => "en",
                "cmn" => "zh",
                "jpn" => "ja",
                "kor" => "ko",
                "vie" => "vi",
                "deu" => "de",
                "fra" => "fr",
                "spa" => "es",
                "por" => "pt",
                "ita" => "it",
                "nld" => "nl",
                "pol" => "pl",
                "rus" => "ru",
                other => other,
            }
            .to_string()
        })
    });
    report("whatlang alone", &plain, &cases, budget);
    #[cfg(feature = "lingua")]
    {
        use lingua::{Language as L, LanguageDetectorBuilder};
        let langs = [
            L::English,
            L::Chinese,
            L::Japanese,
            L::Korean,
            L::Vietnamese,
            L::German,
            L::French,
            L::Spanish,
            L::Portuguese,
            L::Italian,
            L::Dutch,
            L::Polish,
            L::Russian,
        ];
        for low in [false, true] {
            let t = Instant::now();
            let mut b = LanguageDetectorBuilder::from_languages(&langs);
            b.with_preloaded_language_models();
            if low {
                b.with_low_accuracy_mode();
            }
            let d = b.build();
            let name = if low {
                "lingua (low accuracy)"
            } else {
                "lingua"
            };
            println!(
                "{name}: models loaded in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            let det: Detect = Box::new(move |t| {
                d.detect_language_of(t)
                    .map(|l| l.iso_code_639_1().to_string().to_lowercase())
            });
            report(name, &det, &cases, budget);
        }
    }
    #[cfg(not(feature = "lingua"))]
    println!("(lingua: run with --features lingua to compare)");
}
