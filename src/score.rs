//! Scoring watch rules on labelled items: what `policywatch score` prints.
//!
//! In: labelled items as JSON Lines (`id`, `lang`, `title`, `summary`, `link`, `date`, as in
//! the shared news corpus; other fields ignored) and a TSV of labels (`id`, then one column per
//! watch named after the watch id with `-` written `_`, then anything; `1` / `0`, `?` skipped).
//! Out: a [`Report`] — precision, recall and F1 per watch and per language, the positives per
//! language, and every miss — rendered as text or JSON. Pure: the command reads the files.
//!
//! Items are classified as the daemon would: title, summary and content go through the feed
//! stage's HTML-to-text step ([`crate::feed::html_to_text`], as every RSS text does, so
//! `&oacute;` in a lead reads `ó`), bounded as a fetched item is; their language is told from their text
//! ([`crate::lang::fill`]), not taken from the label file. Per-language figures group items by
//! their labelled `lang` when the JSONL has one, else by the language told.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::classify::Classifier;
use crate::feed::{html_to_text, MAX_CONTENT_BYTES, MAX_SUMMARY_BYTES, MAX_TITLE_BYTES};
use crate::item::Item;

/// One line of the items file.
#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    date: Option<String>,
}

/// A labelled item, ready to classify.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub id: String,
    /// The label file's (or JSONL's) language, when given.
    pub lang: Option<String>,
    pub item: Item,
}

/// Errors reading the inputs, with the line they are on.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("items line {line}: {msg}")]
    Items { line: usize, msg: String },
    #[error("labels line {line}: {msg}")]
    Labels { line: usize, msg: String },
    #[error(
        "no label column names a watch of the config (columns: {columns}; watches: {watches})"
    )]
    NoWatch { columns: String, watches: String },
}

/// Parses JSON Lines of items (blank lines skipped).
pub fn parse_items(src: &str) -> Result<Vec<Labelled>, ScoreError> {
    let mut out = Vec::new();
    for (i, line) in src.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Row = serde_json::from_str(line).map_err(|e| ScoreError::Items {
            line: i + 1,
            msg: e.to_string(),
        })?;
        let published = r
            .date
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&chrono::Utc));
        out.push(Labelled {
            id: r.id.clone(),
            lang: r.lang.filter(|l| !l.trim().is_empty()),
            item: Item {
                guid: Some(r.id),
                link: r.link,
                title: html_to_text(&r.title, MAX_TITLE_BYTES),
                summary: html_to_text(&r.summary, MAX_SUMMARY_BYTES),
                content: html_to_text(&r.content, MAX_CONTENT_BYTES),
                published,
                ..Default::default()
            },
        });
    }
    Ok(out)
}

/// Labels: id → (watch id → label). Columns are matched to `watch_ids` by name (`_` = `-`);
/// columns naming no watch (like `note`) are ignored; `?` and empty cells are skipped.
pub fn parse_labels(
    src: &str,
    watch_ids: &[&str],
) -> Result<HashMap<String, HashMap<String, bool>>, ScoreError> {
    let mut lines = src
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ScoreError::Labels {
            line: 1,
            msg: "the file is empty; the first line names the columns: id, then one per watch"
                .into(),
        });
    };
    let cols: Vec<Option<String>> = header
        .split('\t')
        .skip(1)
        .map(|c| {
            let c = c.trim().replace('_', "-");
            watch_ids.iter().find(|w| **w == c).map(|w| w.to_string())
        })
        .collect();
    if cols.iter().all(Option::is_none) {
        return Err(ScoreError::NoWatch {
            columns: header.split('\t').skip(1).collect::<Vec<_>>().join(", "),
            watches: watch_ids.join(", "),
        });
    }
    let mut out = HashMap::new();
    for (i, line) in lines {
        let mut f = line.split('\t');
        let id = f.next().unwrap_or("").trim().to_string();
        let mut labels = HashMap::new();
        for (cell, col) in f.zip(&cols) {
            let Some(w) = col else { continue };
            match cell.trim() {
                "1" => {
                    labels.insert(w.clone(), true);
                }
                "0" => {
                    labels.insert(w.clone(), false);
                }
                "?" | "" => {}
                other => {
                    return Err(ScoreError::Labels {
                        line: i + 1,
                        msg: format!("`{other}` for {w}: write 1, 0 or ?"),
                    })
                }
            }
        }
        out.insert(id, labels);
    }
    Ok(out)
}

/// True/false positives and negatives.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
}

impl Counts {
    fn add(&mut self, predicted: bool, gold: bool) {
        match (predicted, gold) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    /// Precision (1 when nothing was flagged).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// Recall (1 when there is nothing to find).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    pub fn positives(&self) -> usize {
        self.tp + self.fn_
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// A labelled item the rules got wrong.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Miss {
    pub watch: String,
    /// "false negative" (missed) or "false positive" (flagged wrongly).
    pub kind: &'static str,
    pub id: String,
    pub lang: String,
    pub title: String,
}

/// Per watch: overall and per language.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WatchScore {
    pub all: Counts,
    pub by_lang: BTreeMap<String, Counts>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Labelled items scored (those with an item and a label).
    pub items: usize,
    /// Items without a label, and labels without an item.
    pub unlabelled: usize,
    pub missing_items: usize,
    pub watches: BTreeMap<String, WatchScore>,
    pub misses: Vec<Miss>,
}

/// Classifies every labelled item and counts.
pub fn score(
    clf: &Classifier,
    items: &[Labelled],
    labels: &HashMap<String, HashMap<String, bool>>,
) -> Report {
    let mut r = Report::default();
    let mut seen = 0usize;
    for l in items {
        let Some(gold) = labels.get(&l.id) else {
            r.unlabelled += 1;
            continue;
        };
        seen += 1;
        let mut item = l.item.clone();
        crate::lang::fill(&mut item);
        let lang = l
            .lang
            .clone()
            .or_else(|| item.lang.clone())
            .unwrap_or_else(|| "?".into());
        let flagged: Vec<String> = clf
            .classify(&item)
            .into_iter()
            .map(|v| v.watch_id)
            .collect();
        r.items += 1;
        for (w, &g) in gold {
            let p = flagged.iter().any(|f| f == w);
            let ws = r.watches.entry(w.clone()).or_default();
            ws.all.add(p, g);
            ws.by_lang.entry(lang.clone()).or_default().add(p, g);
            if p != g {
                r.misses.push(Miss {
                    watch: w.clone(),
                    kind: if g {
                        "false negative"
                    } else {
                        "false positive"
                    },
                    id: l.id.clone(),
                    lang: lang.clone(),
                    title: l.item.title.clone(),
                });
            }
        }
    }
    r.missing_items = labels.len().saturating_sub(seen);
    r.misses.sort_by(|a, b| {
        (&a.watch, a.kind, &a.lang, &a.id).cmp(&(&b.watch, b.kind, &b.lang, &b.id))
    });
    r
}

fn line(c: &Counts) -> String {
    format!(
        "P {:.3}  R {:.3}  F1 {:.3}  ({} positives; tp {} fp {} fn {} tn {})",
        c.precision(),
        c.recall(),
        c.f1(),
        c.positives(),
        c.tp,
        c.fp,
        c.fn_,
        c.tn
    )
}

/// The report as text: per watch the overall and per-language figures, then up to `misses`
/// misses per watch (all with `None`).
pub fn render_text(r: &Report, misses: Option<usize>) -> String {
    let mut out = format!(
        "{} labelled items scored ({} items without a label, {} labels without an item)\n",
        r.items, r.unlabelled, r.missing_items
    );
    for (w, s) in &r.watches {
        out.push_str(&format!("\n{w}: {}\n", line(&s.all)));
        for (lang, c) in &s.by_lang {
            out.push_str(&format!("  {lang:4} {}\n", line(c)));
        }
    }
    for w in r.watches.keys() {
        let of: Vec<&Miss> = r.misses.iter().filter(|m| &m.watch == w).collect();
        if of.is_empty() {
            continue;
        }
        let shown = misses.unwrap_or(of.len()).min(of.len());
        out.push_str(&format!("\nmisses of {w} ({} of {}):\n", shown, of.len()));
        for m in of.iter().take(shown) {
            let title: String = m
                .title
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(120)
                .collect();
            out.push_str(&format!(
                "  {:14} {} [{}] {}\n",
                m.kind, m.id, m.lang, title
            ));
        }
    }
    out
}

/// The report as one JSON object (misses cut to `misses` per watch when given).
pub fn render_json(r: &Report, misses: Option<usize>) -> serde_json::Value {
    let mut watches = serde_json::Map::new();
    for (w, s) in &r.watches {
        let figures = |c: &Counts| {
            serde_json::json!({
                "precision": c.precision(), "recall": c.recall(), "f1": c.f1(),
                "positives": c.positives(), "tp": c.tp, "fp": c.fp, "fn": c.fn_, "tn": c.tn,
            })
        };
        let by_lang: serde_json::Map<String, serde_json::Value> = s
            .by_lang
            .iter()
            .map(|(l, c)| (l.clone(), figures(c)))
            .collect();
        let of: Vec<&Miss> = r
            .misses
            .iter()
            .filter(|m| &m.watch == w)
            .take(misses.unwrap_or(usize::MAX))
            .collect();
        let mut v = figures(&s.all);
        v["by_lang"] = serde_json::Value::Object(by_lang);
        v["misses"] = serde_json::to_value(of).unwrap_or_default();
        watches.insert(w.clone(), v);
    }
    serde_json::json!({
        "items": r.items,
        "unlabelled": r.unlabelled,
        "missing_items": r.missing_items,
        "watches": watches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_watches_by_name_and_skip_unknowns() {
        let l = parse_labels(
            "id\texport_controls\tai_chips\tnote\na\t1\t?\tx\nb\t0\t1\t\n",
            &["export-controls", "ai-chips"],
        )
        .unwrap();
        assert_eq!(l["a"].get("export-controls"), Some(&true));
        assert_eq!(l["a"].get("ai-chips"), None);
        assert_eq!(l["b"].get("ai-chips"), Some(&true));
        let e = parse_labels("id\tfoo\n", &["w"]).unwrap_err();
        assert!(
            e.to_string().contains("no label column names a watch"),
            "{e}"
        );
        let e = parse_labels("id\tw\na\tyes\n", &["w"]).unwrap_err();
        assert!(e.to_string().starts_with("labels line 2: `yes`"), "{e}");
        let e = parse_items("{\"id\": 1}\n").unwrap_err();
        assert!(e.to_string().starts_with("items line 1:"), "{e}");
    }

    /// A lead as a feed gives it (entities, tags) is read as the daemon reads a fetched item's:
    /// `Polska zaostrza kontrol&oacute;` must reach the classifier as "kontroló…", not as
    /// "kontrol", "oacute".
    #[test]
    fn items_text_is_read_as_a_fetched_item_is() {
        let items = parse_items(
            "{\"id\":\"a\",\"title\":\"Kontrola eksportu &amp; chip&oacute;w\",\
             \"summary\":\"<p>Nowe przepisy</p><p>dla p&oacute;&#322;przewodnik&oacute;w</p>\"}\n",
        )
        .unwrap();
        assert_eq!(items[0].item.title, "Kontrola eksportu & chipów");
        assert_eq!(items[0].item.summary, "Nowe przepisy dla półprzewodników");
    }

    #[test]
    fn counts() {
        let mut c = Counts::default();
        for (p, g) in [(true, true), (true, false), (false, true), (true, true)] {
            c.add(p, g);
        }
        assert_eq!((c.tp, c.fp, c.fn_), (2, 1, 1));
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-9);
        assert!((c.f1() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(Counts::default().recall(), 1.0);
    }
}
