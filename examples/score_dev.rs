//! Scores watch rules on the labelled dev set of the shared news corpus.
//!
//! In: a TOML file with `[[watches]]` tables (other top-level keys are ignored), and
//! `<shared>/corpus/news/{items.jsonl,dev-labels.tsv}`. Out (stdout): precision, recall and F1
//! per watch and per language, then every miss (false positive / false negative) with id and
//! title, then whether the seed article is flagged by both default watches.
//!
//! Usage: `cargo run --release --example score_dev -- --config config/policywatch.toml
//! [--shared ../shared] [--quiet] [--explain ID]...` (`--quiet` omits the list of misses;
//! `--explain ID` prints the classifier's explanation for that item).
//! Label columns are matched to watches by name: `export_controls` ↔ `export-controls`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use policywatch::classify::{watches_from_toml, Classifier};
use policywatch::item::Item;

#[derive(serde::Deserialize)]
struct Row {
    id: String,
    #[serde(default)]
    corpus: String,
    #[serde(default)]
    lang: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    link: Option<String>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Counts {
    fn add(&mut self, pred: bool, gold: bool) {
        match (pred, gold) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    fn line(&self) -> String {
        let p = if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        };
        let r = if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        };
        let f = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        format!(
            "P {p:.3}  R {r:.3}  F1 {f:.3}   (tp {} fp {} fn {} tn {})",
            self.tp, self.fp, self.fn_, self.tn
        )
    }
}

fn main() -> ExitCode {
    let mut config = "config/policywatch.toml".to_string();
    let mut shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").to_string();
    let mut quiet = false;
    let mut explain: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().unwrap_or(config),
            "--shared" => shared = args.next().unwrap_or(shared),
            "--quiet" => quiet = true,
            "--explain" => explain.extend(args.next()),
            other => {
                eprintln!("unknown argument {other}; usage: score_dev --config FILE [--shared DIR] [--quiet]");
                return ExitCode::from(2);
            }
        }
    }
    let src = match std::fs::read_to_string(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{config}: {e}");
            return ExitCode::from(2);
        }
    };
    let watches = match watches_from_toml(&src) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{config}: {e}");
            return ExitCode::from(2);
        }
    };
    let clf = match Classifier::compile(&watches) {
        Ok(c) => c,
        Err(errs) => {
            for e in errs {
                eprint!("{}", e.render(&config, &src));
            }
            return ExitCode::from(1);
        }
    };
    for w in clf.warnings() {
        eprint!("{}", w.render(&config, &src));
    }

    let dir = format!("{shared}/corpus/news");
    let (Ok(items), Ok(labels)) = (
        std::fs::read_to_string(format!("{dir}/items.jsonl")),
        std::fs::read_to_string(format!("{dir}/dev-labels.tsv")),
    ) else {
        eprintln!("{dir}: items.jsonl or dev-labels.tsv not found; nothing to score");
        return ExitCode::SUCCESS;
    };
    let mut header: Vec<String> = Vec::new();
    let mut gold: HashMap<String, Vec<Option<bool>>> = HashMap::new();
    for (n, line) in labels.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if n == 0 {
            header = cols.iter().map(|s| s.to_string()).collect();
            continue;
        }
        let vals = cols
            .iter()
            .skip(1)
            .map(|v| match v.trim() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            })
            .collect();
        if let Some(id) = cols.first() {
            gold.insert(id.to_string(), vals);
        }
    }
    // watch index -> label column index
    let cols: Vec<(usize, String)> = clf
        .watch_ids()
        .iter()
        .enumerate()
        .filter_map(|(wi, id)| {
            header
                .iter()
                .skip(1)
                .position(|h| h.replace('_', "-") == *id)
                .map(|ci| (ci, clf.watch_ids()[wi].to_string()))
        })
        .collect();
    let mut total: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_lang: BTreeMap<(String, String), Counts> = BTreeMap::new();
    let mut misses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bytes = 0usize;
    let t0 = std::time::Instant::now();
    for line in items.lines() {
        let Ok(r) = serde_json::from_str::<Row>(line) else {
            continue;
        };
        // The feed stage decodes entities before classification; the corpus keeps some raw.
        let it = Item {
            title: decode_entities(&r.title),
            summary: decode_entities(&r.summary),
            link: r.link.clone(),
            feed_name: r.corpus.clone(),
            ..Default::default()
        };
        if explain.contains(&r.id) {
            println!("== {} [{}] {}\n{}", r.id, r.lang, r.title, clf.explain(&it));
        }
        let Some(g) = gold.get(&r.id) else { continue };
        bytes += it.title.len() + it.summary.len();
        let verdicts = clf.classify(&it);
        for (ci, wid) in &cols {
            let Some(Some(gv)) = g.get(*ci) else { continue };
            let pred = verdicts.iter().any(|v| &v.watch_id == wid);
            total.entry(wid.clone()).or_default().add(pred, *gv);
            by_lang
                .entry((wid.clone(), r.lang.clone()))
                .or_default()
                .add(pred, *gv);
            if pred != *gv {
                let kind = if pred { "FP" } else { "FN" };
                let t: String = format!("{} | {}", r.title, r.summary)
                    .chars()
                    .take(160)
                    .collect();
                misses
                    .entry(wid.clone())
                    .or_default()
                    .push(format!("  {kind} {} [{}] {}", r.id, r.lang, t));
            }
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    for (wid, c) in &total {
        println!("{wid:16} {}", c.line());
        for ((w, lang), c) in &by_lang {
            if w == wid {
                println!("   {lang:12} {}", c.line());
            }
        }
    }
    if !quiet {
        for (wid, m) in &misses {
            println!("\nmisses for {wid}:");
            for l in m {
                println!("{l}");
            }
        }
    }
    eprintln!("classified {bytes} bytes in {dt:.3}s");
    // The seed article must be flagged by both default watches.
    if let Ok(seed) =
        std::fs::read_to_string(format!("{shared}/seed/vi-china-ai-chips-sanctions.txt"))
    {
        let mut lines = seed.lines();
        let title = lines.next().unwrap_or("").to_string();
        let it = Item {
            title,
            content: lines.collect::<Vec<_>>().join("\n"),
            ..Default::default()
        };
        let ids: Vec<String> = clf.classify(&it).into_iter().map(|v| v.watch_id).collect();
        println!("\nseed article flagged by: {}", ids.join(", "));
    }
    ExitCode::SUCCESS
}

/// Decodes numeric character references and the common named entities (what the feed stage
/// would already have done for a live item).
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|e| e + 1);
        let decoded = match end {
            Some(e) if rest[e..].starts_with(';') => {
                let name = &rest[1..e];
                let c = if let Some(num) =
                    name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                {
                    u32::from_str_radix(num, 16).ok().and_then(char::from_u32)
                } else if let Some(num) = name.strip_prefix('#') {
                    num.parse::<u32>().ok().and_then(char::from_u32)
                } else {
                    match name {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        "nbsp" => Some('\u{a0}'),
                        "oacute" => Some('ó'),
                        "eacute" => Some('é'),
                        "aacute" => Some('á'),
                        "ndash" => Some('–'),
                        "mdash" => Some('—'),
                        "rsquo" => Some('’'),
                        "lsquo" => Some('‘'),
                        "rdquo" => Some('”'),
                        "ldquo" => Some('“'),
                        "hellip" => Some('…'),
                        _ => None,
                    }
                };
                c.map(|c| (c, e + 1))
            }
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
