//! Watch rules and the classifier: user-written queries (see `docs/rules.md`) compiled once into
//! a [`Classifier`] that tells, for each item, which watches it matches, how strongly and why.
//!
//! In: [`WatchConfig`]s (from the `[[watches]]` tables of the config file) and [`Item`]s from the
//! feed stage. Out: [`Verdict`]s (watch id, score, evidence with byte ranges into the original
//! field text), human-readable explanations, compile errors ([`RuleError`], all of them at once,
//! with file positions) and noisy-rule warnings ([`RuleWarning`]).
//!
//! Layout: `parse` (query text → expression tree), `matcher` (all watches' terms in shared
//! Aho-Corasick automata, evaluation), `scan` (the automaton walk over an item's texts), `diag` (errors and warnings, rendering), this module
//! (config types, compile, lint, scoring).

mod diag;
mod matcher;
mod parse;
mod scan;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Deserialize;

pub use diag::{RuleError, RuleSource, RuleWarning};
use matcher::{ItemHits, Matcher, MatcherBuilder, Node, PatternSet};
use parse::{Expr, SetOrigin, Term};

use crate::item::{Evidence, Field, Item, Verdict};
use crate::lang::Lang;
use crate::sets::SetLibrary;

/// How a matching story is delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertMode {
    /// Collected into the next digest.
    #[default]
    Digest,
    /// Sent as soon as it is classified.
    Immediate,
}

/// How much a hit in each field counts towards a verdict's score.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldWeights {
    pub title: f64,
    pub summary: f64,
    pub content: f64,
    pub author: f64,
    pub category: f64,
    pub feed: f64,
    pub link: f64,
}

impl Default for FieldWeights {
    fn default() -> Self {
        FieldWeights {
            title: 2.0,
            summary: 1.0,
            content: 1.0,
            author: 0.5,
            category: 1.0,
            feed: 0.5,
            link: 0.5,
        }
    }
}

impl FieldWeights {
    pub fn get(&self, f: Field) -> f64 {
        match f {
            Field::Title => self.title,
            Field::Summary => self.summary,
            Field::Content => self.content,
            Field::Author => self.author,
            Field::Category => self.category,
            Field::Feed => self.feed,
            Field::Link => self.link,
        }
    }
}

/// One `[[watches]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub id: String,
    pub name: Option<String>,
    /// The query; the span (position in the config file) is used for error messages.
    pub query: toml::Spanned<String>,
    #[serde(default)]
    pub alert: AlertMode,
    /// Verdicts scoring below this are dropped (default: any match counts).
    #[serde(default)]
    pub min_score: Option<f64>,
    /// A query; if it matches an item, the watch does not.
    #[serde(default)]
    pub exclude: Option<toml::Spanned<String>>,
    /// Routing tags (digests may select watches by tag).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Per-field score weights, e.g. `weights = { title = 3.0 }` (defaults: title 2, summary 1,
    /// content 1, category 1, author/feed/link 0.5). Per-term weights go in the query: `chip^2`.
    #[serde(default)]
    pub weights: FieldWeights,
}

impl WatchConfig {
    /// A watch from plain strings (tests, tools); spans are empty.
    pub fn new(id: &str, query: &str) -> WatchConfig {
        WatchConfig {
            id: id.to_string(),
            name: None,
            query: toml::Spanned::new(0..0, query.to_string()),
            alert: AlertMode::Digest,
            min_score: None,
            exclude: None,
            tags: Vec::new(),
            weights: FieldWeights::default(),
        }
    }
}

/// Reads the `[[watches]]` tables of a TOML document, ignoring every other top-level key.
pub fn watches_from_toml(src: &str) -> Result<Vec<WatchConfig>, toml::de::Error> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        watches: Vec<WatchConfig>,
    }
    toml::from_str::<File>(src).map(|f| f.watches)
}

struct CompiledWatch {
    id: String,
    name: Option<String>,
    query_text: String,
    exclude_text: Option<String>,
    /// The trees as written (explanations) and rewritten for speed (`Matcher::guard`).
    query: Node,
    exclude: Option<Node>,
    fast_query: Node,
    fast_exclude: Option<Node>,
    min_score: Option<f64>,
    weights: FieldWeights,
    /// Patterns of the query: if none of them occurs, the watch cannot match (checked at
    /// compile time), so it is skipped without walking the tree.
    patterns: PatternSet,
}

/// The compiled watches. Immutable, `Send + Sync`; share it in an `Arc`.
pub struct Classifier {
    matcher: Matcher,
    watches: Vec<CompiledWatch>,
    warnings: Vec<RuleWarning>,
    /// The sets the watches name as `@name` (for the unused-set warning).
    used_sets: BTreeSet<String>,
    /// The weight of every set a term of a verdict can come from (the named sets and the sets
    /// they include), for the digest's highlights and "why" line.
    set_weights: HashMap<String, f64>,
}

/// Most evidence entries kept per verdict (the score uses all hits).
const MAX_EVIDENCE: usize = 64;

impl Classifier {
    /// Compiles all watches against the shipped term sets; returns every error found, not just
    /// the first.
    pub fn compile(watches: &[WatchConfig]) -> Result<Classifier, Vec<RuleError>> {
        match SetLibrary::shipped() {
            Ok(lib) => Classifier::compile_with(watches, lib),
            Err(errs) => Err(errs
                .iter()
                .map(|e| RuleError {
                    watch_id: String::new(),
                    source: RuleSource::Watch,
                    offset: 0,
                    message: e.clone(),
                    hint: None,
                    span: None,
                })
                .collect()),
        }
    }

    /// Compiles all watches, their `@name`s resolved in `sets`.
    pub fn compile_with(
        watches: &[WatchConfig],
        sets: &SetLibrary,
    ) -> Result<Classifier, Vec<RuleError>> {
        let mut used_sets = BTreeSet::new();
        let mut errors = Vec::new();
        let mut b = MatcherBuilder::default();
        let mut compiled = Vec::new();
        let mut seen = HashSet::new();
        for w in watches {
            let werr = |msg: String, hint: Option<&str>| RuleError {
                watch_id: w.id.clone(),
                source: RuleSource::Watch,
                offset: 0,
                message: msg,
                hint: hint.map(str::to_string),
                span: None,
            };
            if w.id.trim().is_empty() {
                errors.push(werr(
                    "watch id is empty".into(),
                    Some("give every watch a short id like `export-controls`"),
                ));
            } else if !seen.insert(w.id.clone()) {
                errors.push(werr(
                    format!("duplicate watch id `{}`", w.id),
                    Some("watch ids must be unique"),
                ));
            }
            if let Some(ms) = w.min_score {
                if !ms.is_finite() || ms < 0.0 {
                    errors.push(werr(
                        format!("min_score {ms} is not a non-negative number"),
                        None,
                    ));
                }
            }
            let wt = &w.weights;
            if Field::ALL
                .iter()
                .any(|f| !wt.get(*f).is_finite() || wt.get(*f) < 0.0)
            {
                errors.push(werr(
                    "field weights must be non-negative numbers".into(),
                    None,
                ));
            }
            let mut cx = Compile {
                b: &mut b,
                sets,
                used: &mut used_sets,
                errors: &mut errors,
            };
            let q = cx.one(w, RuleSource::Query, w.query.get_ref(), w.query.span());
            let ex = w
                .exclude
                .as_ref()
                .map(|e| cx.one(w, RuleSource::Exclude, e.get_ref(), e.span()));
            if let (Some(q), Some(ex)) = (q, ex.unwrap_or(Some(Node::Or(vec![])))) {
                compiled.push((w, q, w.exclude.as_ref().map(|_| ex)));
            }
        }
        // The automata are built here, after the trees are rewritten and linted, not on a
        // thread of their own: a config load already checks its feeds on a second thread
        // while the rules compile, and on two cores a third thread made the mean load slower
        // (see `cargo bench --bench classify -- compile`).
        let (matcher, strings) = b.finish_parts();
        let assembled = assemble(watches, sets, compiled, matcher, used_sets, errors);
        let built = matcher::build_automata(&strings);
        let automaton_error = |message: String| RuleError {
            watch_id: String::new(),
            source: RuleSource::Watch,
            offset: 0,
            message,
            hint: None,
            span: None,
        };
        match (assembled, built) {
            (Ok(mut c), Ok(a)) => {
                c.matcher.set_automata(a);
                Ok(c)
            }
            (Ok(_), Err(e)) => Err(vec![automaton_error(e)]),
            (Err(errors), Ok(_)) => Err(errors),
            (Err(mut errors), Err(e)) => {
                errors.push(automaton_error(e));
                Err(errors)
            }
        }
    }

    pub fn watch_ids(&self) -> Vec<&str> {
        self.watches.iter().map(|w| w.id.as_str()).collect()
    }

    pub fn warnings(&self) -> &[RuleWarning] {
        &self.warnings
    }

    /// Set name → weight, for every set a verdict's evidence can name (`Evidence::set`).
    pub fn set_weights(&self) -> &HashMap<String, f64> {
        &self.set_weights
    }

    /// The sets the watches name (`@name`), directly.
    pub fn used_sets(&self) -> impl Iterator<Item = &str> {
        self.used_sets.iter().map(String::as_str)
    }

    /// The language the item is matched as: its `lang` when it is a known code.
    fn item_lang(item: &Item) -> Option<Lang> {
        item.lang.as_deref().and_then(Lang::from_code)
    }

    /// The watches that match `item` (score >= min_score, exclude not matched), in config order.
    pub fn classify(&self, item: &Item) -> Vec<Verdict> {
        let hits = self.matcher.scan(item, Self::item_lang(item));
        let mut out = Vec::new();
        let mut ev = Vec::new();
        for w in &self.watches {
            if let Some(v) = self.judge(w, &hits, &mut ev).verdict {
                out.push(v);
            }
        }
        out
    }

    /// One watch's verdict on an item; `ev` is room for the evidence, reused across watches.
    fn judge<'a>(
        &'a self,
        w: &'a CompiledWatch,
        hits: &'a ItemHits,
        ev: &mut Vec<(u32, &'a matcher::Hit)>,
    ) -> Judgement {
        let m = &self.matcher;
        ev.clear();
        // Most stories match no watch: decide that from the bits before collecting evidence.
        if !w.patterns.any_in(hits)
            || !matcher::eval(m, &w.fast_query, hits)
            || !matcher::gather(m, &w.fast_query, hits, ev)
        {
            return Judgement {
                matched: false,
                excluded: false,
                score: 0.0,
                verdict: None,
            };
        }
        let excluded = w
            .fast_exclude
            .as_ref()
            .is_some_and(|ex| matcher::eval(m, ex, hits));
        // Score: per distinct concept (a set, or a term written in the query), its weight times
        // the best field weight it was found in, a quarter more for each further field (at most
        // two); then the strongest concept counts whole and each further one a quarter of the
        // one before (see docs/rules.md, "Scoring").
        let mut per_concept: Vec<(u32, f64, u8)> = Vec::new();
        for (a, h) in ev.iter() {
            let atom = &m.atoms[*a as usize];
            if atom.lang_test {
                continue;
            }
            let fw = w.weights.get(Field::ALL[h.field as usize]);
            let s = atom.concept_weight * fw;
            match per_concept
                .iter_mut()
                .find(|(c, _, _)| *c == atom.concept_id)
            {
                Some(e) => {
                    e.1 = e.1.max(s);
                    e.2 |= 1 << h.field;
                }
                None => per_concept.push((atom.concept_id, s, 1 << h.field)),
            }
        }
        let score = concept_score(per_concept.iter().map(|(_, best, mask)| (*best, *mask)));
        // Evidence: distinct (field, range, term), in that order (term ids sort like the terms).
        let mut spans: Vec<(u8, u32, u32, u32, u32)> = ev
            .iter()
            .filter(|(a, _)| !m.atoms[*a as usize].lang_test)
            .map(|(a, h)| (h.field, h.os, h.oe, m.atoms[*a as usize].term, *a))
            .collect();
        spans.sort_unstable();
        spans.dedup_by_key(|x| (x.0, x.1, x.2, x.3));
        let evidence: Vec<Evidence> = spans
            .into_iter()
            .take(MAX_EVIDENCE)
            .map(|(field, start, end, _, a)| {
                let atom = &m.atoms[a as usize];
                Evidence {
                    term: atom.display.clone(),
                    set: atom.set.clone(),
                    concept: atom.concept.clone(),
                    field: Field::ALL[field as usize],
                    start: start as usize,
                    end: end as usize,
                }
            })
            .collect();
        let passes = !excluded && score >= w.min_score.unwrap_or(0.0);
        Judgement {
            matched: true,
            excluded,
            score,
            verdict: passes.then(|| Verdict {
                watch_id: w.id.clone(),
                score,
                evidence,
            }),
        }
    }

    /// Per watch: matched or not and why (terms found where, the sub-clause that failed, score
    /// against min_score, exclude hits).
    pub fn explain(&self, item: &Item) -> String {
        let lang = Self::item_lang(item);
        let hits = self.matcher.scan(item, lang);
        let m = &self.matcher;
        let mut out = match lang {
            Some(l) => format!("language: {l}\n"),
            None => "language: unknown (accent-free terms fold everywhere)\n".to_string(),
        };
        for w in &self.watches {
            let j = self.judge(w, &hits, &mut Vec::new());
            let name = w
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let status = match (&j.verdict, j.matched, j.excluded) {
                (Some(_), _, _) => format!("MATCH, score {:.2}", j.score),
                (None, true, true) => format!(
                    "no match: query matched (score {:.2}) but exclude matched too",
                    j.score
                ),
                (None, true, false) => format!(
                    "no match: score {:.2} is below min_score {}",
                    j.score,
                    w.min_score.unwrap_or(0.0)
                ),
                (None, false, _) => "no match: query not satisfied".to_string(),
            };
            out.push_str(&format!("watch `{}`{name}: {status}\n", w.id));
            out.push_str(&format!("  query: {}\n", one_line(&w.query_text, 160)));
            matcher::explain(m, &w.query, &hits, 2, &mut out);
            if let (Some(ex), Some(t)) = (&w.exclude, &w.exclude_text) {
                let hit = matcher::eval(m, ex, &hits);
                out.push_str(&format!(
                    "  exclude: {} -> {}\n",
                    one_line(t, 160),
                    if hit { "MATCHED" } else { "not matched" }
                ));
                matcher::explain(m, ex, &hits, 2, &mut out);
            }
            if let Some(v) = &j.verdict {
                let terms = v.matched_terms();
                out.push_str(&format!("  matched terms: {}\n", terms.join(", ")));
            }
        }
        out
    }
}

/// The rest of [`Classifier::compile_with`] once the terms are lowered: each watch's tree
/// rewritten for speed and checked, the set weights, the lint. `matcher` has no automata yet.
fn assemble(
    watches: &[WatchConfig],
    sets: &SetLibrary,
    compiled: Vec<(&WatchConfig, Node, Option<Node>)>,
    matcher: Matcher,
    used_sets: BTreeSet<String>,
    mut errors: Vec<RuleError>,
) -> Result<Classifier, Vec<RuleError>> {
    let mut out = Vec::new();
    for (w, q, ex) in compiled {
        let (fast_query, patterns) = matcher.guard_with_patterns(q.clone());
        let fast_exclude = ex.clone().map(|e| matcher.guard(e));
        // A query true without any of its terms would match every item: refuse it.
        let empty = ItemHits::synthetic(matcher.patterns_len(), &[]);
        if matcher::eval(&matcher, &q, &empty) {
            errors.push(RuleError {
                watch_id: w.id.clone(),
                source: RuleSource::Query,
                offset: 0,
                message: "this query matches stories that contain none of its terms".into(),
                hint: Some("a query needs a positive part: `chips NOT poker`, not `NOT poker`; put exclusions in `exclude`".into()),
                span: Some(w.query.span()),
            });
        }
        if let (Some(ex), Some(es)) = (&ex, &w.exclude) {
            if matcher::eval(&matcher, ex, &empty) {
                errors.push(RuleError {
                    watch_id: w.id.clone(),
                    source: RuleSource::Exclude,
                    offset: 0,
                    message: "this exclude matches stories that contain none of its terms, so it would silence the watch".into(),
                    hint: Some("write the exclusion positively: exclude = \"poker OR casino\"".into()),
                    span: Some(es.span()),
                });
            }
        }
        out.push(CompiledWatch {
            id: w.id.clone(),
            name: w.name.clone(),
            query_text: w.query.get_ref().clone(),
            exclude_text: w.exclude.as_ref().map(|e| e.get_ref().clone()),
            query: q,
            exclude: ex,
            fast_query,
            fast_exclude,
            min_score: w.min_score,
            weights: w.weights,
            patterns,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut set_weights = HashMap::new();
    for name in &used_sets {
        for r in sets.terms(name).map(|t| t.iter()).into_iter().flatten() {
            set_weights.insert(r.set.to_string(), r.weight);
        }
    }
    let mut matcher = matcher;
    matcher.index_guards(
        out.iter_mut()
            .flat_map(|w| std::iter::once(&mut w.fast_query).chain(w.fast_exclude.as_mut())),
    );
    let mut c = Classifier {
        matcher,
        watches: out,
        warnings: Vec::new(),
        used_sets,
        set_weights,
    };
    c.warnings = lint(&c, watches);
    Ok(c)
}

/// A query on one line, cut to `max` chars (explanations of long multi-line rules stay short).
fn one_line(q: &str, max: usize) -> String {
    let flat = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

struct Judgement {
    matched: bool,
    excluded: bool,
    score: f64,
    verdict: Option<Verdict>,
}

/// A verdict's score from its concepts' (best weighted hit, fields found in): each concept's
/// strength is the best hit, a quarter more per further field (two at most); the strongest
/// counts whole, the next a quarter, the next a sixteenth and so on — so however many weak
/// concepts match, they add up to less than 4/3 of the strongest of them.
pub(crate) fn concept_score(concepts: impl Iterator<Item = (f64, u8)>) -> f64 {
    let mut strengths: Vec<f64> = concepts
        .map(|(best, mask)| {
            let extra = mask.count_ones().saturating_sub(1).min(2);
            best * (1.0 + 0.25 * extra as f64)
        })
        .collect();
    strengths.sort_by(|a, b| b.total_cmp(a));
    let mut credit = 1.0;
    let mut score = 0.0;
    for s in strengths {
        score += s * credit;
        credit *= 0.25;
    }
    (score * 100.0).round() / 100.0
}

/// What compiling one watch's strings needs: the matcher being built, the sets, and where
/// the sets named and the errors found go.
struct Compile<'a> {
    b: &'a mut MatcherBuilder,
    sets: &'a SetLibrary,
    used: &'a mut BTreeSet<String>,
    errors: &'a mut Vec<RuleError>,
}

impl Compile<'_> {
    fn one(
        &mut self,
        w: &WatchConfig,
        source: RuleSource,
        text: &str,
        span: std::ops::Range<usize>,
    ) -> Option<Node> {
        let mk = |offset: usize, message: String, hint: Option<String>| RuleError {
            watch_id: w.id.clone(),
            source,
            offset,
            message,
            hint,
            span: Some(span.clone()),
        };
        let expr = match parse::parse(text) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(mk(e.offset, e.message, e.hint));
                return None;
            }
        };
        let mut failed = Vec::new();
        check_sets(&expr, self.sets, self.used, &mut failed);
        if !failed.is_empty() {
            self.errors
                .extend(failed.into_iter().map(|(o, m, h)| mk(o, m, h)));
            return None;
        }
        let sets = self.sets;
        match self.b.lower_with(&expr, &|r| set_terms(sets, r)) {
            Ok(n) => Some(n),
            Err((o, msg, hint)) => {
                self.errors.push(mk(o, msg, hint));
                None
            }
        }
    }
}

/// Checks that every `@name` names a set (collecting those that do not in `failed`) and
/// records the names used.
fn check_sets(
    e: &Expr,
    sets: &SetLibrary,
    used: &mut BTreeSet<String>,
    failed: &mut Vec<matcher::LowerError>,
) {
    match e {
        Expr::Set { name, offset, .. } => {
            if sets.terms(name).is_some() {
                used.insert(name.clone());
                return;
            }
            let close = sets.closest(name);
            let (message, hint) = if close.is_empty() {
                let known: Vec<&str> = sets.names().take(12).collect();
                (
                    format!("unknown set `@{name}`"),
                    if known.is_empty() {
                        format!("define it in the config: [sets.{name}] with en = [\"…\"]")
                    } else {
                        format!(
                            "define it as [sets.{name}], or use a known set: {}",
                            known.join(", ")
                        )
                    },
                )
            } else {
                let did: Vec<String> = close.iter().map(|c| format!("`@{c}`")).collect();
                (
                    format!("unknown set `@{name}`; did you mean {}?", did.join(" or ")),
                    format!("set names are those of [sets.NAME] tables; or define [sets.{name}]"),
                )
            };
            failed.push((*offset, message, Some(hint)));
        }
        Expr::And(v) | Expr::Or(v) => v.iter().for_each(|x| check_sets(x, sets, used, failed)),
        Expr::Not(x) | Expr::AtLeast { inner: x, .. } => check_sets(x, sets, used, failed),
        Expr::Near { a, b, .. } => {
            check_sets(a, sets, used, failed);
            check_sets(b, sets, used, failed);
        }
        Expr::Term(_) | Expr::Lang { .. } => {}
    }
}

/// The terms of `@name` as the matcher lowers them: scoped and `caps` like the `@name`, each
/// remembering its set.
fn set_terms(sets: &SetLibrary, r: &matcher::SetRef) -> Vec<Term> {
    sets.terms(r.name)
        .map(|t| t.iter())
        .into_iter()
        .flatten()
        .map(|t| Term {
            text: t.term.text.clone(),
            display: t.term.written.clone(),
            phrase: t.term.text.contains(char::is_whitespace),
            prefix: t.term.prefix,
            caps: r.caps || t.term.caps,
            weight: 1.0,
            fields: r.fields,
            offset: r.offset,
            set: Some(SetOrigin {
                set: t.set.clone(),
                concept: t.concept.clone(),
                weight: t.weight,
            }),
            lang: t.term.lang,
        })
        .collect()
}

/// Noisy-rule warnings: terms that on their own are enough for a watch to match and are known to
/// be ambiguous or too short, `BIS` without `caps()`, lowercase operator words.
fn lint(c: &Classifier, configs: &[WatchConfig]) -> Vec<RuleWarning> {
    let m = &c.matcher;
    let mut out = Vec::new();
    // One set of synthetic hits, changed for each pattern asked about.
    let mut hits = ItemHits::synthetic(m.patterns_len(), &[]);
    for (w, cfg) in c.watches.iter().zip(configs) {
        let mut atoms = Vec::new();
        w.query.atoms(&mut atoms);
        // A set named again in one text is the same atoms again: each is looked at once, in
        // the order they first come.
        let mut seen = vec![false; m.atoms.len()];
        atoms.retain(|&a| !std::mem::replace(&mut seen[a as usize], true));
        let mut warned = HashSet::new();
        let mut alone_enough: HashMap<u32, bool> = HashMap::new();
        for &a in &atoms {
            let atom = &m.atoms[a as usize];
            let mut warn = |msg: String, hint: &str| {
                if warned.insert((atom.offset, msg.clone())) {
                    out.push(RuleWarning {
                        watch_id: w.id.clone(),
                        source: RuleSource::Query,
                        offset: atom.offset,
                        message: msg,
                        hint: Some(hint.to_string()),
                        span: Some(cfg.query.span()),
                    });
                }
            };
            let norm = &*atom.norm;
            if !atom.caps && norm == "bis" {
                warn(
                    format!("`{}` also matches the Bank for International Settlements and German \"bis\"", atom.display),
                    "write caps(BIS) and pair it with export terms, or spell out \"Bureau of Industry and Security\"",
                );
            }
            if matches!(norm, "and" | "or" | "not" | "near") && !atom.display.starts_with('"') {
                warn(
                    format!(
                        "`{}` is searched as a word; operators are written in capitals",
                        atom.display
                    ),
                    "write AND / OR / NOT / NEAR/5, or quote the word if you really mean it",
                );
            }
            // Is this term alone enough? Asked of the guarded tree (the same verdicts, and a
            // guard rejects the one-hit item at once), once per pattern: with the shipped sets
            // the tree as written has thousands of atoms, and asking it once per atom took most
            // of a second per config load.
            let alone = *alone_enough.entry(atom.pattern).or_insert_with(|| {
                hits.resynthesize(&[atom.pattern]);
                matcher::eval(m, &w.fast_query, &hits)
            });
            if !alone {
                continue;
            }
            let cjk = norm.chars().any(crate::text::is_cjk);
            let letters = norm.chars().filter(|c| c.is_alphanumeric()).count();
            if matches!(norm, "chip" | "chips") || (atom.prefix && norm == "chip") {
                warn(
                    format!("`{}` alone is enough for this watch to match: food, poker and blue chips too", atom.display),
                    "constrain it: (chip* NEAR/5 (ai OR nvidia OR export*)) or atleast3(chip*)",
                );
            } else if norm == "ai" && !atom.caps {
                warn(
                    format!("`{}` alone is enough for this watch to match, and AI is mentioned everywhere", atom.display),
                    "combine it: (ai NEAR/3 (chip* OR accelerator*))",
                );
            } else if (!cjk && letters <= 2) || (cjk && letters <= 1) {
                warn(
                    format!(
                        "`{}` is very short and alone enough for this watch to match",
                        atom.display
                    ),
                    "use a longer term or combine it with AND / NEAR",
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
