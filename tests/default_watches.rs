//! The shipped default watches (config/policywatch.toml on the shipped term sets) against the
//! hand-written fixtures in tests/fixtures/watches/<lang>.toml: every case is flagged by exactly
//! its `watches`; every language file has a true positive and a hard negative per watch; every
//! hard-negative family is written in at least five languages; and the score ranks an
//! instrument above a pile of generic words.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use policywatch::classify::{watches_from_toml, Classifier};
use policywatch::item::Item;

const EC: &str = "export-controls";
const AI: &str = "ai-chips";

/// Hard-negative families, and the watch each one is a trap for.
const FAMILIES: &[(&str, &str)] = &[
    ("food-export-ban", EC),
    ("nontech-sanctions", EC),
    ("tariffs-alone", EC),
    ("subsidies-alone", EC),
    ("bis-bank", EC),
    ("patent-case", EC),
    ("gambling-blue-chips", AI),
    ("consumer-chips", AI),
    ("id-chips", AI),
    ("chip-design-software", AI),
    ("industrial-investment", AI),
];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    title: String,
    #[serde(default)]
    summary: String,
    watches: Vec<String>,
    #[serde(default)]
    family: Option<String>,
}

fn defaults() -> Classifier {
    common::shipped_classifier()
}

/// Every fixture file, by language code (the file's stem).
fn fixtures() -> BTreeMap<String, Vec<Case>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/watches");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("tests/fixtures/watches exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let lang = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("fixture file is readable");
        let file: File =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.insert(lang, file.case);
    }
    assert!(out.len() >= 6, "fixture files found: {:?}", out.keys());
    out
}

/// The fixture as the daemon would classify it: its language told from its text by the
/// language-identification stage, not taken from the file name.
fn item(_lang: &str, c: &Case) -> Item {
    common::story(&c.title, &c.summary)
}

#[test]
fn every_fixture_is_flagged_by_exactly_its_watches() {
    let clf = defaults();
    let mut failures = Vec::new();
    let mut n = 0;
    for (lang, cases) in fixtures() {
        for c in &cases {
            n += 1;
            let it = item(&lang, c);
            let got: BTreeSet<String> = clf.classify(&it).into_iter().map(|v| v.watch_id).collect();
            let want: BTreeSet<String> = c.watches.iter().cloned().collect();
            if got != want {
                failures.push(format!(
                    "[{lang}] {:?}: want {want:?}, got {got:?}\n{}",
                    c.title,
                    clf.explain(&it)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} fixtures misclassified:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_language_has_a_true_positive_and_a_hard_negative_per_watch() {
    for (lang, cases) in fixtures() {
        for watch in [EC, AI] {
            assert!(
                cases.iter().any(|c| c.watches.iter().any(|w| w == watch)),
                "{lang}.toml has no true positive for {watch}"
            );
            let traps: Vec<&str> = FAMILIES
                .iter()
                .filter(|(_, w)| *w == watch)
                .map(|(f, _)| *f)
                .collect();
            assert!(
                cases.iter().any(|c| c.watches.iter().all(|w| w != watch)
                    && c.family.as_deref().is_some_and(|f| traps.contains(&f))),
                "{lang}.toml has no hard negative for {watch} (one of {traps:?})"
            );
        }
    }
}

#[test]
fn every_hard_negative_family_is_written_in_five_languages() {
    let mut langs: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (lang, cases) in fixtures() {
        for c in &cases {
            let Some(f) = c.family.as_deref() else {
                continue;
            };
            let known = FAMILIES.iter().find(|(name, _)| *name == f);
            let Some((name, _)) = known else {
                panic!("{lang}.toml: unknown family {f:?} in {:?}", c.title);
            };
            assert!(
                c.watches.is_empty(),
                "{lang}.toml: hard negative {:?} expects {:?}",
                c.title,
                c.watches
            );
            langs.entry(name).or_default().insert(lang.clone());
        }
    }
    for (f, _) in FAMILIES {
        let n = langs.get(f).map_or(0, |s| s.len());
        assert!(
            n >= 5,
            "family {f} is written in {n} languages: {:?}",
            langs.get(f)
        );
    }
}

fn score(clf: &Classifier, watch: &str, it: &Item) -> Option<f64> {
    clf.classify(it)
        .into_iter()
        .find(|v| v.watch_id == watch)
        .map(|v| v.score)
}

/// A poker story (if it matches at all) ranks below every Entity List story of the fixtures —
/// even with the excludes taken away — and an instrument outranks a pile of generic words.
#[test]
fn instruments_outrank_generic_words() {
    let src = include_str!("../config/policywatch.toml");
    let mut bare = watches_from_toml(src).expect("config/policywatch.toml parses");
    for w in &mut bare {
        w.exclude = None;
    }
    let without_excludes = Classifier::compile(&bare).expect("the queries compile alone");
    for clf in [defaults(), without_excludes] {
        let mut entity_list = Vec::new();
        for (lang, cases) in fixtures() {
            for c in &cases {
                let it = item(&lang, c);
                let Some(v) = clf.classify(&it).into_iter().find(|v| v.watch_id == EC) else {
                    continue;
                };
                if v.evidence
                    .iter()
                    .any(|e| e.set.as_deref() == Some("entity_list"))
                {
                    entity_list.push((v.score, c.title.clone()));
                }
            }
        }
        assert!(
            entity_list.len() >= 5,
            "Entity List fixtures found by their set: {entity_list:?}"
        );
        let lowest = entity_list
            .iter()
            .map(|(s, _)| *s)
            .fold(f64::INFINITY, f64::min);

        // Chips, a ban, smuggling, arrests and a government: every generic word a poker story
        // can share with an export-control one.
        let poker = Item {
            title: "Macau bans counterfeit casino chips as police arrest poker chip smugglers"
                .into(),
            summary: "Officials in China said the crackdown would tighten controls on chips \
                      carried in from Hong Kong."
                .into(),
            lang: Some("en".into()),
            ..Default::default()
        };
        if let Some(s) = score(&clf, EC, &poker) {
            assert!(
                s < lowest,
                "poker story scores {s}, an Entity List story {lowest}"
            );
        }

        // Many generic words (restriction, chips, governments, technology) against one instrument.
        let generic = Item {
            title:
                "US and China trade curbs, bans and limits on chips, semiconductors and technology"
                    .into(),
            summary: "Washington and Beijing restrict, block and halt chip sales as processors, \
                      microchips and tech equipment face new limits."
                .into(),
            lang: Some("en".into()),
            ..Default::default()
        };
        let instrument = Item {
            title: "Commerce adds a Shenzhen supplier to the Entity List".into(),
            lang: Some("en".into()),
            ..Default::default()
        };
        let g = score(&clf, EC, &generic).expect("the generic story is an export-controls match");
        let i = score(&clf, EC, &instrument).expect("the Entity List story matches");
        assert!(
            i > g,
            "Entity List story {i} should outrank the generic one {g}"
        );
    }
}
