//! The compiled matcher: all watches' terms in two Aho-Corasick automata, one pass per
//! normalised field, hits evaluated against each watch's boolean tree.
//!
//! In: parsed [`Expr`]s (lowered here into [`Node`]s over shared [`Atom`]s) and, per item, the
//! item's fields. Out: [`ItemHits`] (every term hit with its field, position in words and in the
//! normalised text, mapped back to original byte ranges on demand), and evaluation, evidence
//! collection and explanation over them.
//!
//! Why two automata: terms without diacritics are searched in the accent-folded text, terms with
//! diacritics in the exact text (see `crate::text`). Every distinct term string is one automaton
//! pattern however many watches use it, so the per-item cost is one walk over the item's fields
//! per variant (see `super::scan`) plus a tree walk for the watches that had any hit at all.
//! Buffers are kept per thread and reused from item to item.

use std::borrow::Cow;
use std::cell::RefCell;

use rustc_hash::FxHashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::MatchKind;
use unicode_normalization::UnicodeNormalization;

use super::parse::{Expr, FieldMask, Term};
use super::scan::{self, Raw};
use crate::item::{Field, Item};
use crate::lang::Lang;
use crate::text::{self, is_word_char, Normalized};

/// At most this many hits of one pattern in one field are kept (bounds NEAR and memory).
const MAX_HITS_PER_PATTERN_FIELD: u16 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Folded = 0,
    Exact = 1,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PatternKey {
    variant: Variant,
    text: String,
    prefix: bool,
    caps: Option<String>,
    /// The term's language, for an accent-free term (see [`Pattern::fold`]).
    fold: Option<Lang>,
    /// A `lang:` test: no text, a hit when the item is in this language.
    test: Option<Lang>,
}

#[derive(Debug, Clone)]
pub struct Pattern {
    start_boundary: bool,
    end_boundary: bool,
    prefix: bool,
    /// For `caps(...)`: the term as written (NFKC, whitespace collapsed), compared case-exactly
    /// against the original text of a hit.
    caps: Option<String>,
    /// Folding that does not cross languages: a hit of an accent-free term on text that had
    /// diacritics (`ban` on "bán") counts only when the item is in the term's language, or of
    /// unknown language. So in an item of known language, terms without a language (written in
    /// the query, a set's `any`) match its unaccented text only.
    fold: Option<Lang>,
}

/// One term occurrence in a query: a pattern, where to look, how much it counts.
#[derive(Debug, Clone)]
pub struct Atom {
    pub pattern: u32,
    pub fields: FieldMask,
    pub display: Arc<str>,
    pub offset: usize,
    /// The normalised text searched for (used by the noisy-rule lint).
    pub norm: Arc<str>,
    pub caps: bool,
    pub prefix: bool,
    /// Index of `display` among the distinct displays of all atoms, in string order: the
    /// same term written in two places is one term for scoring.
    pub term: u32,
    /// The set the term came from and its label (evidence), for set terms.
    pub set: Option<Arc<str>>,
    pub concept: Option<Arc<str>>,
    /// The concept's weight in the score: the set's weight, or the term's own for a term
    /// written in the query.
    pub concept_weight: f64,
    /// The concept the term counts for in the score: its set, or (written in the query) the
    /// term itself; an index like `term`.
    pub concept_id: u32,
    /// A `lang:` test rather than a term: never evidence, never scored.
    pub lang_test: bool,
}

#[derive(Debug, Clone)]
pub enum Node {
    Atom(u32),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Near {
        a: Box<Node>,
        b: Box<Node>,
        n: u32,
        ordered: bool,
    },
    AtLeast {
        n: u32,
        inner: Box<Node>,
    },
    /// `inner` can only be true if one of `set` occurred (the patterns under it): a quick
    /// rejection for the long OR lists real rules are made of. With `fields`, `inner` is an OR
    /// of atoms all scoped to those fields, and is true exactly when one of `set` occurred in
    /// one of them: decided by the bit test alone. Added by [`Matcher::guard`].
    Guard {
        set: PatternSet,
        exact: Option<ExactOr>,
        inner: Box<Node>,
        /// The guard's bit in [`ItemHits::guards`] once [`Matcher::index_guards`] has numbered
        /// it ([`NO_GUARD_ID`] until then, and for guards made after: tested from `set`).
        id: u32,
    },
}

/// The id of a guard that [`Matcher::index_guards`] has not numbered.
pub const NO_GUARD_ID: u32 = u32::MAX;

/// What a guard over an OR of atoms with one field scope knows: the scope, and the OR's atoms
/// by pattern, so its evidence is found from the item's hits rather than by trying every atom.
#[derive(Debug, Clone)]
pub struct ExactOr {
    fields: FieldMask,
    /// (pattern, atom), sorted.
    by_pattern: Vec<(u32, u32)>,
}

impl ExactOr {
    /// Calls `f` with each (atom, hit) of the OR, straight from the hits: only the atoms whose
    /// pattern occurred in scope are looked at. `set` is the guard's pattern set.
    fn each_hit<'h>(
        &self,
        m: &Matcher,
        set: &PatternSet,
        h: &'h ItemHits,
        mut f: impl FnMut(u32, &'h Hit),
    ) {
        set.each_in_fields(h, self.fields, |p| {
            let from = self.by_pattern.partition_point(|e| e.0 < p);
            for &(_, a) in self.by_pattern[from..].iter().take_while(|e| e.0 == p) {
                h.of_atom(&m.atoms[a as usize]).for_each(|hit| f(a, hit));
            }
        });
    }
}

/// A set of patterns, tested against an item's hits in whichever way costs less: the set's
/// (word index, bits) pairs against the item's pattern bits, or the item's few distinct
/// patterns against the set's own bitmap. The shipped sets hold hundreds of patterns spread
/// over the whole pattern space (one word each, mostly) while a typical item has a few dozen,
/// so the second way is the usual one for them.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    words: Vec<(u32, u64)>,
    /// One bit per pattern from 0 to the set's largest.
    dense: Vec<u64>,
}

impl PatternSet {
    pub fn of(pats: impl IntoIterator<Item = u32>) -> PatternSet {
        let mut words: Vec<(u32, u64)> = Vec::new();
        let mut pats: Vec<u32> = pats.into_iter().collect();
        pats.sort_unstable();
        for &p in &pats {
            match words.last_mut() {
                Some((w, bits)) if *w == p / 64 => *bits |= 1 << (p % 64),
                _ => words.push((p / 64, 1 << (p % 64))),
            }
        }
        let mut dense = vec![0u64; words.last().map_or(0, |w| w.0 as usize + 1)];
        for &(w, bits) in &words {
            dense[w as usize] = bits;
        }
        PatternSet { words, dense }
    }

    /// The set of the patterns whose bits are set in `bits` (one bit per pattern from 0).
    fn from_dense(mut bits: Vec<u64>) -> PatternSet {
        while bits.last() == Some(&0) {
            bits.pop();
        }
        let words = bits
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(w, b)| (w as u32, *b))
            .collect();
        PatternSet { words, dense: bits }
    }

    #[inline]
    fn has(&self, p: u32) -> bool {
        self.dense
            .get((p / 64) as usize)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// Is it cheaper to go through the item's distinct patterns than through the set's words?
    #[inline]
    fn by_item(&self, h: &ItemHits) -> bool {
        h.runs.len() < self.words.len()
    }

    /// Did any pattern of the set occur in the item?
    #[inline]
    pub fn any_in(&self, h: &ItemHits) -> bool {
        if self.by_item(h) {
            h.runs.iter().any(|&(p, _)| self.has(p))
        } else {
            self.any_in_by_words(h)
        }
    }

    #[inline]
    fn any_in_by_words(&self, h: &ItemHits) -> bool {
        self.words.iter().any(|&(w, bits)| {
            h.field_bits
                .get(w as usize)
                .is_some_and(|x| x[ANY_FIELD] & bits != 0)
        })
    }

    /// Did any pattern of the set occur in one of `fields`?
    #[inline]
    fn any_in_fields(&self, h: &ItemHits, fields: FieldMask) -> bool {
        if self.by_item(h) {
            h.runs
                .iter()
                .any(|&(p, _)| self.has(p) && Self::in_fields(h, p, fields))
        } else {
            self.any_in_fields_by_words(h, fields)
        }
    }

    #[inline]
    fn any_in_fields_by_words(&self, h: &ItemHits, fields: FieldMask) -> bool {
        self.words
            .iter()
            .any(|&(w, bits)| Self::word_in_fields(h, w, fields) & bits != 0)
    }

    /// Did pattern `p` occur in one of `fields`?
    #[inline]
    fn in_fields(h: &ItemHits, p: u32, fields: FieldMask) -> bool {
        Self::word_in_fields(h, p / 64, fields) & (1 << (p % 64)) != 0
    }

    /// The item's pattern bits of word `w` in any of `fields`.
    #[inline]
    fn word_in_fields(h: &ItemHits, w: u32, fields: FieldMask) -> u64 {
        let Some(per_field) = h.field_bits.get(w as usize) else {
            return 0;
        };
        let (mut m, mut x) = (fields.0, 0);
        while m != 0 {
            x |= per_field[m.trailing_zeros() as usize];
            m &= m - 1;
        }
        x
    }

    /// Calls `f` with each pattern of the set that occurred in one of `fields`, in pattern
    /// order.
    fn each_in_fields(&self, h: &ItemHits, fields: FieldMask, mut f: impl FnMut(u32)) {
        if self.by_item(h) {
            for &(p, _) in &h.runs {
                if self.has(p) && Self::in_fields(h, p, fields) {
                    f(p);
                }
            }
        } else {
            self.each_in_fields_by_words(h, fields, f);
        }
    }

    fn each_in_fields_by_words(&self, h: &ItemHits, fields: FieldMask, mut f: impl FnMut(u32)) {
        for &(w, bits) in &self.words {
            let mut x = Self::word_in_fields(h, w, fields) & bits;
            while x != 0 {
                f(w * 64 + x.trailing_zeros());
                x &= x - 1;
            }
        }
    }
}

/// Nodes with fewer atoms under them are not worth a guard.
const MIN_GUARDED_ATOMS: usize = 3;

impl Node {
    /// All atoms under this node, in order.
    pub fn atoms(&self, out: &mut Vec<u32>) {
        match self {
            Node::Atom(a) => out.push(*a),
            Node::And(v) | Node::Or(v) => v.iter().for_each(|n| n.atoms(out)),
            Node::Not(n) | Node::Guard { inner: n, .. } => n.atoms(out),
            Node::Near { a, b, .. } => {
                a.atoms(out);
                b.atoms(out);
            }
            Node::AtLeast { inner, .. } => inner.atoms(out),
        }
    }

    /// How many atoms [`Node::atoms`] would list.
    pub fn atom_count(&self) -> usize {
        match self {
            Node::Atom(_) => 1,
            Node::And(v) | Node::Or(v) => v.iter().map(Node::atom_count).sum(),
            Node::Not(n) | Node::Guard { inner: n, .. } | Node::AtLeast { inner: n, .. } => {
                n.atom_count()
            }
            Node::Near { a, b, .. } => a.atom_count() + b.atom_count(),
        }
    }

    /// True when this node can only hold if at least one pattern under it occurred (false for
    /// `NOT x` and anything that can be satisfied by an absence).
    fn needs_hit(&self) -> bool {
        match self {
            Node::Atom(_) | Node::Near { .. } | Node::Guard { .. } => true,
            Node::And(v) => v.iter().any(Node::needs_hit),
            Node::Or(v) => !v.is_empty() && v.iter().all(Node::needs_hit),
            Node::Not(_) => false,
            Node::AtLeast { n, inner } => *n > 0 && inner.needs_hit(),
        }
    }
}

/// Error while lowering a parsed term (offset into the query, message, hint).
pub type LowerError = (usize, String, Option<String>);

#[derive(Default)]
pub struct MatcherBuilder {
    keys: FxHashMap<PatternKey, u32>,
    patterns: Vec<Pattern>,
    atoms: Vec<Atom>,
    strings: [Vec<String>; 2],
    string_ids: [FxHashMap<String, usize>; 2],
    string_pats: [Vec<Vec<u32>>; 2],
    used_fields: u8,
    lang_tests: Vec<(Lang, u32)>,
    /// Terms already lowered, by text: what `add_term` reuses when a term comes again.
    terms: FxHashMap<String, Vec<KnownTerm>>,
    /// Sets already lowered in the text being lowered (see [`MatcherBuilder::lower_with`]), by
    /// (name, scope, caps).
    set_nodes: FxHashMap<(String, Option<FieldMask>, bool), Node>,
    /// Sets already lowered in any text of this builder, by (name, caps): the range of atoms
    /// their first naming made. A naming elsewhere copies those atoms with its own offset and
    /// scope instead of resolving and looking up every term again (the terms and patterns of
    /// a set depend on its name and `caps` only, and a builder lowers against one library).
    set_atoms: FxHashMap<(String, bool), std::ops::Range<u32>>,
}

/// An `@name` being lowered: the set, where it was written, its scope and `caps`.
pub struct SetRef<'a> {
    pub name: &'a str,
    pub offset: usize,
    pub fields: Option<FieldMask>,
    pub caps: bool,
}

/// A term as [`MatcherBuilder::add_term`] saw it before: what distinguishes it besides its
/// text, and what it was lowered to.
#[derive(Clone)]
struct KnownTerm {
    prefix: bool,
    caps: bool,
    lang: Option<Lang>,
    display: Arc<str>,
    pattern: u32,
    norm: Arc<str>,
}

fn caps_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.nfkc() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else if !matches!(
            c,
            '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
        ) {
            out.push(c);
            last_space = false;
        }
    }
    out.trim().to_string()
}

impl MatcherBuilder {
    fn add_term(&mut self, t: &Term) -> Result<u32, LowerError> {
        // The shipped sets are named many times over in the default watches, so most terms
        // come again: their normalisation, pattern and strings are looked up, not redone.
        let known = self.terms.get(t.text.as_str()).and_then(|v| {
            v.iter()
                .find(|k| {
                    k.prefix == t.prefix
                        && k.caps == t.caps
                        && k.lang == t.lang
                        && *k.display == *t.display
                })
                .cloned()
        });
        let known = match known {
            Some(k) => k,
            None => {
                let k = self.new_term(t)?;
                self.terms
                    .entry(t.text.clone())
                    .or_default()
                    .push(k.clone());
                k
            }
        };
        let fields = t.fields.unwrap_or(FieldMask::DEFAULT);
        self.used_fields |= fields.0;
        let a = self.atoms.len() as u32;
        self.atoms.push(Atom {
            pattern: known.pattern,
            fields,
            display: known.display,
            offset: t.offset,
            norm: known.norm,
            caps: t.caps,
            prefix: t.prefix,
            term: 0,
            set: t.set.as_ref().map(|o| o.set.clone()),
            concept: t.set.as_ref().map(|o| o.concept.clone()),
            concept_weight: t.set.as_ref().map_or(t.weight, |o| o.weight),
            concept_id: 0,
            lang_test: false,
        });
        Ok(a)
    }

    /// The pattern of a term not seen before (registered, with its automaton string).
    fn new_term(&mut self, t: &Term) -> Result<KnownTerm, LowerError> {
        let (exact, folded) = text::normalize_term(&t.text);
        let exact = exact.trim().to_string();
        let folded = folded.trim().to_string();
        if !exact.chars().any(|c| c.is_alphanumeric()) {
            return Err((
                t.offset,
                format!(
                    "term `{}` has no letters or digits to search for",
                    t.display
                ),
                Some("punctuation alone cannot be matched; remove the term".into()),
            ));
        }
        let (variant, s) = if exact != folded {
            (Variant::Exact, exact)
        } else {
            (Variant::Folded, folded)
        };
        let caps = t.caps.then(|| caps_key(&t.text));
        let fold = match variant {
            Variant::Folded => t.lang,
            Variant::Exact => None,
        };
        let key = PatternKey {
            variant,
            text: s.clone(),
            prefix: t.prefix,
            caps: caps.clone(),
            fold,
            test: None,
        };
        let pattern = match self.keys.get(&key) {
            Some(&p) => p,
            None => {
                let first = s.chars().next().unwrap_or(' ');
                let last = s.chars().next_back().unwrap_or(' ');
                let p = self.patterns.len() as u32;
                self.patterns.push(Pattern {
                    start_boundary: is_word_char(first),
                    end_boundary: is_word_char(last),
                    prefix: t.prefix,
                    caps,
                    fold,
                });
                let v = variant as usize;
                let sid = match self.string_ids[v].get(&s) {
                    Some(&i) => i,
                    None => {
                        let i = self.strings[v].len();
                        self.strings[v].push(s.clone());
                        self.string_ids[v].insert(s.clone(), i);
                        self.string_pats[v].push(Vec::new());
                        i
                    }
                };
                self.string_pats[v][sid].push(p);
                self.keys.insert(key, p);
                p
            }
        };
        Ok(KnownTerm {
            prefix: t.prefix,
            caps: t.caps,
            lang: t.lang,
            display: t.display.as_str().into(),
            pattern,
            norm: s.into(),
        })
    }

    /// New atoms like those of `known` (a set's first naming), for a naming of the same set at
    /// `offset` with scope `fields`: what [`MatcherBuilder::add_term`] would make of the set's
    /// terms again.
    fn copy_atoms(
        &mut self,
        known: std::ops::Range<u32>,
        offset: usize,
        fields: Option<FieldMask>,
    ) -> Vec<Node> {
        let fields = fields.unwrap_or(FieldMask::DEFAULT);
        self.used_fields |= fields.0;
        let mut v = Vec::with_capacity(known.len());
        for a in known {
            let atom = Atom {
                fields,
                offset,
                ..self.atoms[a as usize].clone()
            };
            v.push(Node::Atom(self.atoms.len() as u32));
            self.atoms.push(atom);
        }
        v
    }

    /// Registers a `lang:` test: a pattern that no automaton holds, hit (in the title, with an
    /// empty range) when the item is in `lang`.
    fn add_lang(&mut self, lang: Lang, offset: usize) -> u32 {
        let key = PatternKey {
            variant: Variant::Exact,
            text: String::new(),
            prefix: false,
            caps: None,
            fold: None,
            test: Some(lang),
        };
        let pid = match self.keys.get(&key) {
            Some(&p) => p,
            None => {
                let p = self.patterns.len() as u32;
                self.patterns.push(Pattern {
                    start_boundary: false,
                    end_boundary: false,
                    prefix: false,
                    caps: None,
                    fold: None,
                });
                self.lang_tests.push((lang, p));
                self.keys.insert(key, p);
                p
            }
        };
        let a = self.atoms.len() as u32;
        self.atoms.push(Atom {
            pattern: pid,
            fields: FieldMask::of(Field::Title),
            display: format!("lang:{lang}").into(),
            offset,
            norm: "".into(),
            caps: false,
            prefix: false,
            term: 0,
            set: None,
            concept: None,
            concept_weight: 0.0,
            concept_id: 0,
            lang_test: true,
        });
        a
    }

    /// Lowers one rule text (a query or an exclude), registering its terms; `terms` gives the
    /// terms an `@name` stands for (none: the name is unknown). A set named again in the text
    /// with the same scope and `caps` is the same OR of the same atoms: the default watches
    /// name their sets many times over, and lowering each naming anew was most of a config
    /// load. Not across texts: atoms carry the offset of their `@name` in this text.
    pub fn lower_with(
        &mut self,
        e: &Expr,
        terms: &dyn Fn(&SetRef) -> Vec<Term>,
    ) -> Result<Node, LowerError> {
        self.set_nodes.clear();
        self.lower_expr(e, terms)
    }

    fn lower_expr(
        &mut self,
        e: &Expr,
        terms: &dyn Fn(&SetRef) -> Vec<Term>,
    ) -> Result<Node, LowerError> {
        Ok(match e {
            Expr::Term(t) => Node::Atom(self.add_term(t)?),
            Expr::Lang { langs, offset } => {
                let mut v: Vec<Node> = langs
                    .iter()
                    .map(|l| Node::Atom(self.add_lang(*l, *offset)))
                    .collect();
                if v.len() == 1 {
                    v.pop().expect("one")
                } else {
                    Node::Or(v)
                }
            }
            Expr::Set {
                name,
                offset,
                fields,
                caps,
            } => {
                let key = (name.clone(), *fields, *caps);
                if let Some(n) = self.set_nodes.get(&key) {
                    return Ok(n.clone());
                }
                let r = SetRef {
                    name,
                    offset: *offset,
                    fields: *fields,
                    caps: *caps,
                };
                let mut v = match self.set_atoms.get(&(name.clone(), *caps)) {
                    Some(known) => self.copy_atoms(known.clone(), *offset, *fields),
                    None => {
                        let ts = terms(&r);
                        if ts.is_empty() {
                            return Err((
                                *offset,
                                format!("set `@{name}` was not resolved"),
                                Some("compile rules with their config's sets".into()),
                            ));
                        }
                        let first = self.atoms.len() as u32;
                        let v = ts
                            .iter()
                            .map(|t| self.add_term(t).map(Node::Atom))
                            .collect::<Result<Vec<_>, _>>()?;
                        self.set_atoms
                            .insert((name.clone(), *caps), first..self.atoms.len() as u32);
                        v
                    }
                };
                let n = if v.len() == 1 {
                    v.pop().expect("one term")
                } else {
                    Node::Or(v)
                };
                self.set_nodes.insert(key, n.clone());
                n
            }
            Expr::And(v) => Node::And(
                v.iter()
                    .map(|x| self.lower_expr(x, terms))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(v) => Node::Or(
                v.iter()
                    .map(|x| self.lower_expr(x, terms))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(x) => Node::Not(Box::new(self.lower_expr(x, terms)?)),
            Expr::Near { a, b, n, ordered } => Node::Near {
                a: Box::new(self.lower_expr(a, terms)?),
                b: Box::new(self.lower_expr(b, terms)?),
                n: *n,
                ordered: *ordered,
            },
            Expr::AtLeast { n, inner } => Node::AtLeast {
                n: *n,
                inner: Box::new(self.lower_expr(inner, terms)?),
            },
        })
    }

    /// The matcher with its automata built here.
    #[cfg(test)]
    pub fn finish(self) -> Result<Matcher, String> {
        let (mut m, strings) = self.finish_parts();
        m.set_automata(build_automata(&strings)?);
        Ok(m)
    }

    /// The matcher without its automata, and the strings to build them from (see
    /// [`build_automata`], [`Matcher::set_automata`]): the rules are rewritten and checked
    /// with the patterns and atoms alone, before the automata are built.
    pub fn finish_parts(mut self) -> (Matcher, AutomatonStrings) {
        // Atoms of one term share its display (`KnownTerm`, `copy_atoms`): the strings are
        // sorted once per distinct allocation, not once per atom.
        let mut by_ptr: FxHashMap<*const u8, u32> = FxHashMap::default();
        let mut distinct: Vec<&str> = Vec::new();
        let slots: Vec<u32> = self
            .atoms
            .iter()
            .map(|a| {
                *by_ptr.entry(a.display.as_ptr()).or_insert_with(|| {
                    distinct.push(&a.display);
                    distinct.len() as u32 - 1
                })
            })
            .collect();
        let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
        order.sort_unstable_by_key(|&i| distinct[i as usize]);
        let mut id_of = vec![0u32; distinct.len()];
        let mut next = 0u32;
        for (k, &i) in order.iter().enumerate() {
            if k > 0 && distinct[order[k - 1] as usize] != distinct[i as usize] {
                next += 1;
            }
            id_of[i as usize] = next;
        }
        for (a, slot) in self.atoms.iter_mut().zip(slots) {
            a.term = id_of[slot as usize];
        }
        // Concepts: a set counts once however many of its terms matched; a term written in the
        // query is a concept of its own.
        let mut concepts: FxHashMap<(bool, Arc<str>), u32> = FxHashMap::default();
        for a in &mut self.atoms {
            let key = match &a.set {
                Some(s) => (true, s.clone()),
                None => (false, a.display.clone()),
            };
            let n = concepts.len() as u32;
            a.concept_id = *concepts.entry(key).or_insert(n);
        }
        let matcher = Matcher {
            patterns: self.patterns,
            atoms: self.atoms,
            acs: [None, None],
            string_pats: self.string_pats,
            used_fields: FieldMask(self.used_fields),
            lang_tests: self.lang_tests,
            guard_index: GuardIndex::default(),
        };
        (matcher, AutomatonStrings(self.strings))
    }
}

/// The strings of a matcher's two automata (folded, exact), from
/// [`MatcherBuilder::finish_parts`].
pub struct AutomatonStrings([Vec<String>; 2]);

/// A matcher's automata, for [`Matcher::set_automata`].
pub struct Automata([Option<(NFA, scan::StartTest)>; 2]);

/// Builds the folded and the exact automaton.
pub fn build_automata(strings: &AutomatonStrings) -> Result<Automata, String> {
    let build = |strings: &Vec<String>| -> Result<Option<(NFA, scan::StartTest)>, String> {
        if strings.is_empty() {
            return Ok(None);
        }
        // A contiguous NFA rather than a DFA: with the shipped sets' thousands of terms in
        // thirteen languages (some 200 distinct bytes), a DFA took 130–200 ms to build and
        // 48 MB, against 12–20 ms and 1.1 MB, and scanned no faster on the news corpus: its
        // table no longer fits in cache, while the NFA's dense states near the root do.
        // `scan` walks it anchored at each candidate start (the contiguous NFA always has an
        // anchored start state) and needs every overlapping match, no prefilter.
        let nfa = NFA::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(strings)
            .map_err(|e| format!("building the term automaton failed: {e}"))?;
        Ok(Some((nfa, scan::StartTest::new(strings))))
    };
    let [fs, es] = &strings.0;
    Ok(Automata([build(fs)?, build(es)?]))
}

pub struct Matcher {
    patterns: Vec<Pattern>,
    pub atoms: Vec<Atom>,
    acs: [Option<(NFA, scan::StartTest)>; 2],
    string_pats: [Vec<Vec<u32>>; 2],
    used_fields: FieldMask,
    /// The `lang:` tests' patterns.
    lang_tests: Vec<(Lang, u32)>,
    /// The numbered guards each pattern can make true (see [`Matcher::index_guards`]).
    guard_index: GuardIndex,
}

/// One occurrence of a pattern.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub pat: u32,
    pub field: u8,
    /// The byte range in the original field text (evidence, NEAR distances).
    pub os: u32,
    pub oe: u32,
}

pub struct FieldText<'a> {
    pub orig: Cow<'a, str>,
}

/// A hit as the NEAR test sees it: (field, original start, original end).
type Span = (u8, u32, u32);

/// Everything the evaluation needs to know about one item. Its buffers go back to the thread's
/// [`Scratch`] when it is dropped, for the next item.
pub struct ItemHits<'a> {
    pub fields: [Option<FieldText<'a>>; Field::ALL.len()],
    /// Sorted by (pattern, field, start): the hits of one pattern are one run.
    hits: Vec<Hit>,
    /// Where each pattern's run of hits starts (see `runs_of`).
    runs: Vec<(u32, u32)>,
    /// Per word of 64 patterns: one bit per pattern that occurs, for each field (indexed as
    /// [`Field::ALL`]) and, at [`ANY_FIELD`], in any field (the quick skip for watches
    /// without any hit).
    field_bits: Vec<[u64; 8]>,
    /// One bit per guard that [`Matcher::index_guards`] numbered: whether its set occurred
    /// in its fields. Empty for hits not made by a scan (synthetic ones): guards are then
    /// tested from their sets.
    guards: Vec<u64>,
    /// Room for [`gather`]'s record of the guards it has collected.
    gathered: RefCell<Gathered>,
    /// Room for the two sides of a NEAR test.
    near: RefCell<(Vec<Span>, Vec<Span>)>,
    /// The item's language, as the scan was told it.
    pub lang: Option<Lang>,
}

impl Drop for ItemHits<'_> {
    fn drop(&mut self) {
        // The pattern bits go back all zero (only the words the hits set are cleared, not
        // the whole bitmap of every pattern), so the next item need not clear them.
        for h in &self.hits {
            if let Some(w) = self.field_bits.get_mut(h.pat as usize / 64) {
                *w = [0; 8];
            }
        }
        let keep = Buffers {
            hits: std::mem::take(&mut self.hits),
            runs: std::mem::take(&mut self.runs),
            bits: std::mem::take(&mut self.field_bits),
            guards: std::mem::take(&mut self.guards),
            near: std::mem::take(self.near.get_mut()),
        };
        // What a hostile item made large is given back to the allocator, not kept per thread.
        if keep.hits.capacity() > KEEP_HITS
            || keep.near.0.capacity() + keep.near.1.capacity() > KEEP_HITS
        {
            return;
        }
        // Nothing to do while the thread is ending or the scratch is in use.
        let _ = SCRATCH.try_with(|c| {
            if let Ok(mut scratch) = c.try_borrow_mut() {
                scratch.spare = Some(keep);
            }
        });
    }
}

/// The slot of `ItemHits::field_bits` that holds the union over all fields.
const ANY_FIELD: usize = 7;
const _: () = assert!(Field::ALL.len() <= ANY_FIELD);

pub fn field_text(item: &Item, f: Field) -> Cow<'_, str> {
    match f {
        Field::Title => Cow::Borrowed(&item.title),
        Field::Summary => Cow::Borrowed(&item.summary),
        Field::Content => Cow::Borrowed(&item.content),
        Field::Author => Cow::Owned(item.authors.join(", ")),
        Field::Category => Cow::Owned(item.categories.join(", ")),
        Field::Feed => {
            if item.feed_tags.is_empty() {
                Cow::Borrowed(&item.feed_name)
            } else {
                let mut v = vec![item.feed_name.clone()];
                v.extend(item.feed_tags.iter().cloned());
                Cow::Owned(v.join(", "))
            }
        }
        Field::Link => Cow::Borrowed(item.link.as_deref().unwrap_or("")),
    }
}

/// The text a variant's terms are searched in; terms with diacritics can only occur where
/// folding changed something.
fn variant_text(pair: &text::NormPair, var: Variant) -> Option<&Normalized> {
    match var {
        Variant::Folded => Some(pair.folded()),
        Variant::Exact => pair.folded.as_ref().map(|_| &pair.exact),
    }
}

/// One scanned text: which variant of which field, and the original it came from.
#[derive(Clone, Copy)]
struct Scanned<'t> {
    var: Variant,
    field: u8,
    norm: &'t Normalized,
    orig: &'t str,
    /// Folding changed something in this field (else no hit can have crossed diacritics).
    accented: bool,
    lang: Option<Lang>,
}

/// Per-thread buffers reused across items, so an item costs no allocation proportional to the
/// rule size.
#[derive(Default)]
struct Scratch {
    /// Per-pattern hit counters for the current field (only the entries touched are reset).
    counts: Vec<u16>,
    norms: Vec<(u8, text::NormPair)>,
    /// The buffers of the last item's hits, returned when it was dropped.
    spare: Option<Buffers>,
}

/// Hit buffers up to this many entries are kept for the next item (64 KiB).
const KEEP_HITS: usize = 4096;

#[derive(Default)]
struct Buffers {
    hits: Vec<Hit>,
    runs: Vec<(u32, u32)>,
    bits: Vec<[u64; 8]>,
    guards: Vec<u64>,
    near: (Vec<Span>, Vec<Span>),
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// (pattern, index of its first hit) for each distinct pattern of `hits` (sorted by pattern):
/// finding a pattern's hits is a search among the few patterns an item has, not its hits.
fn runs_of(hits: &[Hit], mut runs: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    runs.clear();
    for (i, h) in hits.iter().enumerate() {
        if runs.last().map_or(true, |r| r.0 != h.pat) {
            runs.push((h.pat, i as u32));
        }
    }
    runs
}

/// The per-field and any-field pattern bits of `hits` (see `ItemHits::field_bits`).
/// `field_bits` is a spare buffer: all zero when it comes back from an `ItemHits` (see its
/// `Drop`), so only one of another length is cleared.
fn bits_of(hits: &[Hit], n_patterns: usize, mut field_bits: Vec<[u64; 8]>) -> Vec<[u64; 8]> {
    let words = n_patterns.div_ceil(64);
    if field_bits.len() != words {
        field_bits.clear();
        field_bits.resize(words, [0; 8]);
    }
    debug_assert!(field_bits.iter().all(|w| *w == [0; 8]));
    set_bits(hits, &mut field_bits);
    field_bits
}

/// Sets the field and any-field bits of each of `hits` in `field_bits`.
fn set_bits(hits: &[Hit], field_bits: &mut [[u64; 8]]) {
    for h in hits {
        let bit = 1u64 << (h.pat % 64);
        if let Some(x) = field_bits.get_mut(h.pat as usize / 64) {
            x[h.field as usize % ANY_FIELD] |= bit;
            x[ANY_FIELD] |= bit;
        }
    }
}

/// For each pattern, the numbered guards (see [`Matcher::index_guards`]) whose set holds it,
/// each with the fields a hit must be in to make the guard true: so the guards an item makes
/// true are found once per item, from its few distinct patterns, and every later test of a
/// guard is one bit — the shipped watches name the same sets in many clauses, and tested set
/// by set, the guards cost more than the rest of the evaluation.
#[derive(Debug, Clone, Default)]
struct GuardIndex {
    /// The entries of pattern `p` are `entries[starts[p]..starts[p + 1]]`; empty until
    /// indexed.
    starts: Vec<u32>,
    /// (guard id, fields mask: any hit of the pattern in one of these makes the guard true).
    entries: Vec<(u32, u8)>,
    /// How many guards are numbered.
    count: u32,
}

/// [`Matcher::index_guards`]' numbering: (a guard's set words, its fields or `None` for any
/// field, its atoms by pattern) → its id. The atoms are part of the key because [`gather`]
/// collects a guard's evidence once per number: `chip OR ban` written in a query and a set
/// holding the same two terms test the same bits but are different evidence.
type GuardIds = FxHashMap<(Vec<(u32, u64)>, Option<u8>, Vec<(u32, u32)>), u32>;

impl GuardIndex {
    /// The guard bits of an item's sorted `hits` (`runs` as [`runs_of`] makes them), in
    /// `out`'s buffer. Empty when nothing is indexed, so guards fall back to their sets.
    fn bits(&self, hits: &[Hit], runs: &[(u32, u32)], mut out: Vec<u64>) -> Vec<u64> {
        out.clear();
        if self.count == 0 {
            return out;
        }
        out.resize((self.count as usize).div_ceil(64), 0);
        for (k, &(p, from)) in runs.iter().enumerate() {
            let Some(&[lo, hi]) = self.starts.get(p as usize..p as usize + 2) else {
                continue;
            };
            if lo == hi {
                continue;
            }
            let to = runs.get(k + 1).map_or(hits.len(), |r| r.1 as usize);
            let fields = hits[from as usize..to]
                .iter()
                .fold(0u8, |m, h| m | 1 << (h.field % 8));
            for &(g, mask) in &self.entries[lo as usize..hi as usize] {
                if mask & fields != 0 {
                    out[g as usize / 64] |= 1 << (g % 64);
                }
            }
        }
        out
    }
}

impl Matcher {
    /// Numbers the guards of `roots` (the watches' rewritten trees, [`Matcher::guard`]) and
    /// indexes them by pattern, so a scan tells which of them an item makes true. Guards that
    /// test the same set in the same fields with the same atoms (one `@name` named again in a
    /// rule) share a number. Guards made after this, or left out of `roots`, keep
    /// [`NO_GUARD_ID`] and are tested from their sets.
    pub fn index_guards<'n>(&mut self, roots: impl IntoIterator<Item = &'n mut Node>) {
        // Key: the set's patterns, the fields (`None`: any field) and the atoms (`GuardIds`).
        let mut ids = GuardIds::default();
        let mut guards: Vec<(PatternSet, u8)> = Vec::new();
        fn walk(n: &mut Node, ids: &mut GuardIds, guards: &mut Vec<(PatternSet, u8)>) {
            match n {
                Node::Atom(_) => {}
                Node::And(v) | Node::Or(v) => v.iter_mut().for_each(|x| walk(x, ids, guards)),
                Node::Not(x) | Node::AtLeast { inner: x, .. } => walk(x, ids, guards),
                Node::Near { a, b, .. } => {
                    walk(a, ids, guards);
                    walk(b, ids, guards);
                }
                Node::Guard {
                    set,
                    exact,
                    inner,
                    id,
                } => {
                    let fields = exact.as_ref().map(|x| x.fields.0);
                    let atoms = exact.as_ref().map_or(Vec::new(), |x| x.by_pattern.clone());
                    let next = guards.len() as u32;
                    *id = *ids
                        .entry((set.words.clone(), fields, atoms))
                        .or_insert_with(|| {
                            guards.push((set.clone(), fields.unwrap_or(u8::MAX)));
                            next
                        });
                    walk(inner, ids, guards);
                }
            }
        }
        for r in roots {
            walk(r, &mut ids, &mut guards);
        }
        let mut per_pattern: Vec<Vec<(u32, u8)>> = vec![Vec::new(); self.patterns.len()];
        for (g, (set, mask)) in guards.iter().enumerate() {
            for &(w, bits) in &set.words {
                let mut b = bits;
                while b != 0 {
                    let p = (w * 64 + b.trailing_zeros()) as usize;
                    if let Some(e) = per_pattern.get_mut(p) {
                        e.push((g as u32, *mask));
                    }
                    b &= b - 1;
                }
            }
        }
        let mut index = GuardIndex {
            starts: Vec::with_capacity(per_pattern.len() + 1),
            entries: Vec::new(),
            count: guards.len() as u32,
        };
        for e in per_pattern {
            index.starts.push(index.entries.len() as u32);
            index.entries.extend(e);
        }
        index.starts.push(index.entries.len() as u32);
        self.guard_index = index;
    }

    /// Installs the automata built from this matcher's [`AutomatonStrings`]; until then it
    /// finds no term.
    pub fn set_automata(&mut self, a: Automata) {
        self.acs = a.0;
    }

    pub fn patterns_len(&self) -> usize {
        self.patterns.len()
    }

    /// The atoms under `n` as (pattern, atom), sorted.
    fn by_pattern(&self, n: &Node) -> Vec<(u32, u32)> {
        let mut atoms = Vec::new();
        n.atoms(&mut atoms);
        let mut v: Vec<(u32, u32)> = atoms
            .iter()
            .map(|&a| (self.atoms[a as usize].pattern, a))
            .collect();
        v.sort_unstable();
        v
    }

    /// The patterns under `n`, as a set.
    pub fn pattern_set(&self, n: &Node) -> PatternSet {
        let mut atoms = Vec::new();
        n.atoms(&mut atoms);
        PatternSet::of(atoms.iter().map(|a| self.atoms[*a as usize].pattern))
    }

    /// The tree `n` rewritten for speed: every OR / NEAR / atleast node with enough atoms under
    /// it, and that cannot hold without one of them, wrapped in a [`Node::Guard`]; the atoms
    /// of each OR grouped by field scope into guards decided by bits alone; the parts of each
    /// AND ordered cheapest first. The result holds exactly when `n` does, with the same
    /// evidence (in another order); explanations use the tree as written.
    pub fn guard(&self, n: Node) -> Node {
        self.guard_with_patterns(n).0
    }

    /// [`Matcher::guard`], and the patterns under `n` (what [`Matcher::pattern_set`] gives).
    pub fn guard_with_patterns(&self, n: Node) -> (Node, PatternSet) {
        let mut under = self.no_patterns();
        let mut memo = FxHashMap::default();
        let (n, _) = self.guard_rec(n, &mut under, &mut memo);
        (n, PatternSet::from_dense(under))
    }

    /// A bitmap with room for every pattern, none set.
    fn no_patterns(&self) -> Vec<u64> {
        vec![0u64; self.patterns.len().div_ceil(64)]
    }

    /// [`Matcher::guard`] of `n`, with the number of atoms under it; the patterns under it are
    /// added to `under`. Every guard's set is the union of its children's patterns, gathered
    /// on the way up, not collected again from the atoms at every level. The same OR of the
    /// same atoms (a set named again: `lower_with` reuses its atoms) is rewritten once, from
    /// `memo`, keyed by its first atom and length: an OR of atoms only, numbered one after
    /// another, is made only by lowering one OR or one naming, so equal keys are equal nodes.
    fn guard_rec(
        &self,
        n: Node,
        under: &mut Vec<u64>,
        memo: &mut FxHashMap<(u32, usize), (Node, Vec<u64>)>,
    ) -> (Node, usize) {
        let mark = |under: &mut Vec<u64>, a: u32| {
            let p = self.atoms[a as usize].pattern as usize;
            under[p / 64] |= 1 << (p % 64);
        };
        let merge = |under: &mut Vec<u64>, mine: &[u64]| {
            for (u, m) in under.iter_mut().zip(mine) {
                *u |= m;
            }
        };
        let run_key = |v: &[Node]| -> Option<(u32, usize)> {
            let first = match v.first()? {
                Node::Atom(a) => *a,
                _ => return None,
            };
            v.iter()
                .enumerate()
                .all(|(i, x)| matches!(x, Node::Atom(a) if *a as usize == first as usize + i))
                .then_some((first, v.len()))
        };
        let memo_key = match &n {
            Node::Or(v) => run_key(v),
            _ => None,
        };
        if let Some((key, (done, pats))) = memo_key.and_then(|k| Some((k, memo.get(&k)?))) {
            merge(under, pats);
            return (done.clone(), key.1);
        }
        // The patterns under this node, kept apart when it may need a set of its own.
        let own = matches!(n, Node::Or(_) | Node::Near { .. } | Node::AtLeast { .. });
        let mut mine = if own { self.no_patterns() } else { Vec::new() };
        let here: &mut Vec<u64> = if own { &mut mine } else { &mut *under };
        let mut count = 0;
        let n = match n {
            Node::Atom(a) => {
                mark(here, a);
                count = 1;
                Node::Atom(a)
            }
            Node::And(v) => {
                // Fewest terms first (the likelier to fail, and the cheaper to test), NOT last:
                // AND is commutative, so only the speed of a miss changes.
                let mut v: Vec<(Node, usize)> = v
                    .into_iter()
                    .map(|x| self.guard_rec(x, here, memo))
                    .collect();
                v.sort_by_key(|(x, c)| (matches!(x, Node::Not(_)), *c));
                count = v.iter().map(|x| x.1).sum();
                Node::And(v.into_iter().map(|x| x.0).collect())
            }
            Node::Or(v) => {
                let v: Vec<Node> = v
                    .into_iter()
                    .map(|x| {
                        let (x, c) = self.guard_rec(x, here, memo);
                        count += c;
                        x
                    })
                    .collect();
                self.guard_or(v)
            }
            Node::Not(x) => {
                let (x, c) = self.guard_rec(*x, here, memo);
                count = c;
                Node::Not(Box::new(x))
            }
            Node::Near { a, b, n, ordered } => {
                let (a, ca) = self.guard_rec(*a, here, memo);
                let (b, cb) = self.guard_rec(*b, here, memo);
                count = ca + cb;
                Node::Near {
                    a: Box::new(a),
                    b: Box::new(b),
                    n,
                    ordered,
                }
            }
            Node::AtLeast { n, inner } => {
                let (inner, c) = self.guard_rec(*inner, here, memo);
                count = c;
                Node::AtLeast {
                    n,
                    inner: Box::new(inner),
                }
            }
            Node::Guard {
                set,
                exact,
                inner,
                id,
            } => {
                count = inner.atom_count();
                let mut atoms = Vec::new();
                inner.atoms(&mut atoms);
                for a in atoms {
                    mark(here, a);
                }
                Node::Guard {
                    set,
                    exact,
                    inner,
                    id,
                }
            }
        };
        if own {
            merge(under, &mine);
        }
        // An AND tests its (sorted) parts in turn, which is already a sharper test than the
        // union of their patterns.
        let n = if matches!(n, Node::Atom(_) | Node::Guard { .. } | Node::And(_))
            || count < MIN_GUARDED_ATOMS
            || !n.needs_hit()
        {
            n
        } else {
            Node::Guard {
                set: PatternSet::from_dense(mine.clone()),
                exact: None,
                inner: Box::new(n),
                id: NO_GUARD_ID,
            }
        };
        if let Some(key) = memo_key {
            memo.insert(key, (n.clone(), mine));
        }
        (n, count)
    }

    /// An OR whose parts are rewritten already: its atoms, grouped by field scope, become ORs
    /// decided by the bits alone (OR is associative: the same verdict and the same evidence).
    fn guard_or(&self, v: Vec<Node>) -> Node {
        let mut groups: Vec<(FieldMask, Vec<Node>)> = Vec::new();
        let mut rest = Vec::new();
        for x in v {
            match x {
                Node::Atom(a) => {
                    let f = self.atoms[a as usize].fields;
                    match groups.iter_mut().find(|g| g.0 == f) {
                        Some(g) => g.1.push(x),
                        None => groups.push((f, vec![x])),
                    }
                }
                _ => rest.push(x),
            }
        }
        let mut v: Vec<Node> = Vec::new();
        for (fields, atoms) in groups {
            if atoms.len() < 2 {
                v.extend(atoms);
                continue;
            }
            let or = Node::Or(atoms);
            v.push(Node::Guard {
                set: self.pattern_set(&or),
                exact: Some(ExactOr {
                    fields,
                    by_pattern: self.by_pattern(&or),
                }),
                inner: Box::new(or),
                id: NO_GUARD_ID,
            });
        }
        v.extend(rest);
        if v.len() == 1 && matches!(v[0], Node::Guard { .. }) {
            return v.pop().expect("one node");
        }
        Node::Or(v)
    }

    /// Scans the item, taken to be in `lang`: every used field normalised, then all of them in
    /// one walk per variant.
    pub fn scan<'a>(&self, item: &'a Item, lang: Option<Lang>) -> ItemHits<'a> {
        SCRATCH.with(|c| {
            let mut scratch = c.borrow_mut();
            if scratch.counts.len() != self.patterns.len() {
                scratch.counts.clear();
                scratch.counts.resize(self.patterns.len(), 0);
            }
            self.scan_with(item, lang, &mut scratch)
        })
    }

    fn scan_with<'a>(
        &self,
        item: &'a Item,
        lang: Option<Lang>,
        scratch: &mut Scratch,
    ) -> ItemHits<'a> {
        let mut buf = scratch.spare.take().unwrap_or_default();
        let mut hits = std::mem::take(&mut buf.hits);
        hits.clear();
        let mut fields: [Option<FieldText>; Field::ALL.len()] = Default::default();
        let mut norms = std::mem::take(&mut scratch.norms);
        norms.clear();
        for (fi, f) in Field::ALL.into_iter().enumerate() {
            if !self.used_fields.has(f) {
                continue;
            }
            let orig = field_text(item, f);
            if orig.is_empty() {
                continue;
            }
            norms.push((fi as u8, text::normalize(&orig)));
            fields[fi] = Some(FieldText { orig });
        }
        for var in [Variant::Folded, Variant::Exact] {
            let Some((ac, test)) = &self.acs[var as usize] else {
                continue;
            };
            let of = |pair| variant_text(pair, var);
            let mut texts: [&str; Field::ALL.len()] = [""; Field::ALL.len()];
            for (k, (_, pair)) in norms.iter().enumerate() {
                if let Some(n) = of(pair) {
                    texts[k] = n.text.as_str();
                }
            }
            let counts = &mut scratch.counts;
            // Matches come in text order, each pattern's in the order they occur, so the
            // per-field caps count as if each field were searched on its own.
            let mut block = (u32::MAX, hits.len());
            scan::scan(ac, test, &texts[..norms.len()], |r| {
                let k = r.text;
                if k != block.0 {
                    for h in &hits[block.1..] {
                        counts[h.pat as usize] = 0;
                    }
                    block = (k, hits.len());
                }
                let (fi, pair) = &norms[k as usize];
                let (Some(norm), Some(orig)) = (of(pair), &fields[*fi as usize]) else {
                    return;
                };
                let at = Scanned {
                    var,
                    field: *fi,
                    norm,
                    orig: &orig.orig,
                    accented: pair.folded.is_some(),
                    lang,
                };
                self.accept(&at, r, counts, &mut hits);
            });
            for h in &hits[block.1..] {
                counts[h.pat as usize] = 0;
            }
        }
        for &(l, p) in &self.lang_tests {
            if lang == Some(l) {
                hits.push(Hit {
                    pat: p,
                    field: 0,
                    os: 0,
                    oe: 0,
                });
            }
        }
        // The texts themselves are not kept: an item's fields can be megabytes.
        norms.clear();
        scratch.norms = norms;
        hits.sort_unstable_by_key(|h| (h.pat, h.field, h.os));
        let runs = runs_of(&hits, buf.runs);
        let guards = self.guard_index.bits(&hits, &runs, buf.guards);
        ItemHits {
            fields,
            runs,
            field_bits: bits_of(&hits, self.patterns.len(), buf.bits),
            hits,
            guards,
            gathered: RefCell::default(),
            near: RefCell::new(buf.near),
            lang,
        }
    }

    /// Turns one automaton match in `at` into hits of the patterns spelled that way whose word
    /// boundaries, prefix extension and capitals hold, at most `MAX_HITS_PER_PATTERN_FIELD`
    /// per pattern as counted in `counts`.
    fn accept(&self, at: &Scanned, r: &Raw, counts: &mut [u16], hits: &mut Vec<Hit>) {
        let Scanned {
            var,
            field,
            norm,
            orig,
            accented,
            lang,
        } = *at;
        let t = norm.text.as_str();
        let (s, e) = (r.start as usize, r.end as usize);
        for &pid in &self.string_pats[var as usize][r.pat as usize] {
            let p = &self.patterns[pid as usize];
            if counts[pid as usize] >= MAX_HITS_PER_PATTERN_FIELD {
                continue;
            }
            if p.start_boundary {
                if let Some(c) = t[..s].chars().next_back() {
                    if is_word_char(c) && !letter_digit_step(c, t[s..].chars().next()) {
                        continue;
                    }
                }
            }
            let mut end = e;
            if p.prefix {
                for c in t[e..].chars() {
                    if !is_word_char(c) {
                        break;
                    }
                    end += c.len_utf8();
                }
            } else if p.end_boundary {
                if let Some(c) = t[e..].chars().next() {
                    if is_word_char(c) && !letter_digit_step(c, t[..e].chars().next_back()) {
                        continue;
                    }
                }
            }
            if let Some(caps) = &p.caps {
                let (os, oe) = norm.to_original(s, e);
                let written = caps_key(orig.get(os..oe).unwrap_or(""));
                if &written != caps {
                    continue;
                }
            }
            // An accent-free term on text with diacritics: only within its own language (an
            // item of unknown language gets the benefit of the doubt). Only the letters the term
            // spells are judged: what a prefix's `*` stands for may be anything, so `Nvidi*`
            // finds Polish "Nvidię" while `ban*` still never finds "bán".
            if var == Variant::Folded && accented && lang.is_some() && lang != p.fold {
                let (ts, te) = norm.to_original(s, e);
                if text::has_diacritics(orig.get(ts..te).unwrap_or("")) {
                    continue;
                }
            }
            let (os, oe) = norm.to_original(s, end);
            counts[pid as usize] += 1;
            hits.push(Hit {
                pat: pid,
                field,
                os: os as u32,
                oe: oe as u32,
            });
        }
    }
}

impl ItemHits<'static> {
    /// Hits standing in for "pattern `p` occurs once in every field" (used by the lint and
    /// to check whether a query can match an item with none of its terms).
    pub fn synthetic(n_patterns: usize, pats: &[u32]) -> ItemHits<'static> {
        let mut h = ItemHits {
            fields: Default::default(),
            runs: Vec::new(),
            field_bits: bits_of(&[], n_patterns, Vec::new()),
            hits: Vec::new(),
            guards: Vec::new(),
            gathered: RefCell::default(),
            near: RefCell::default(),
            lang: None,
        };
        h.resynthesize(pats);
        h
    }

    /// Makes these (synthetic) hits those of [`ItemHits::synthetic`] for `pats`, reusing the
    /// buffers: only the words of the patterns that were there are cleared.
    pub fn resynthesize(&mut self, pats: &[u32]) {
        for h in &self.hits {
            if let Some(x) = self.field_bits.get_mut(h.pat as usize / 64) {
                *x = [0; 8];
            }
        }
        self.hits.clear();
        for &p in pats {
            for fi in 0..Field::ALL.len() {
                self.hits.push(Hit {
                    pat: p,
                    field: fi as u8,
                    os: 0,
                    oe: 0,
                });
            }
        }
        self.hits.sort_unstable_by_key(|h| (h.pat, h.field));
        self.runs = runs_of(&self.hits, std::mem::take(&mut self.runs));
        set_bits(&self.hits, &mut self.field_bits);
    }
}

impl<'a> ItemHits<'a> {
    /// Whether guard `id`'s set occurred in its fields: its bit when the scan computed one,
    /// else `test` (the set itself, tested against the hits).
    #[inline]
    fn guard_holds(&self, id: u32, test: impl FnOnce() -> bool) -> bool {
        match self.guards.get(id as usize / 64) {
            Some(w) => w >> (id % 64) & 1 != 0,
            None => test(),
        }
    }

    #[inline]
    pub fn pattern_hit(&self, p: u32) -> bool {
        self.field_bits
            .get(p as usize / 64)
            .is_some_and(|w| w[ANY_FIELD] & (1 << (p % 64)) != 0)
    }

    fn of_pattern(&self, p: u32) -> &[Hit] {
        if !self.pattern_hit(p) {
            return &[];
        }
        let k = self.runs.partition_point(|r| r.0 < p);
        match self.runs.get(k) {
            Some(&(q, s)) if q == p => {
                let e = self
                    .runs
                    .get(k + 1)
                    .map_or(self.hits.len(), |r| r.1 as usize);
                &self.hits[s as usize..e]
            }
            _ => &[],
        }
    }

    #[inline]
    fn atom_hit(&self, atom: &Atom) -> bool {
        let bit = 1u64 << (atom.pattern % 64);
        PatternSet::word_in_fields(self, atom.pattern / 64, atom.fields) & bit != 0
    }

    fn of_atom(&self, atom: &Atom) -> impl Iterator<Item = &Hit> + '_ {
        let fields = atom.fields;
        self.of_pattern(atom.pattern)
            .iter()
            .filter(move |h| fields.0 & (1 << h.field) != 0)
    }

    /// Original byte range of a hit.
    pub fn original_range(&self, h: &Hit) -> (usize, usize) {
        (h.os as usize, h.oe as usize)
    }

    fn original_text(&self, h: &Hit) -> &str {
        let (s, e) = self.original_range(h);
        self.fields
            .get(h.field as usize)
            .and_then(|f| f.as_ref())
            .and_then(|f| f.orig.get(s..e))
            .unwrap_or("")
    }
}

/// Original byte spans (field, start, end) of the hits of a positional node.
fn spans(m: &Matcher, n: &Node, h: &ItemHits, out: &mut Vec<Span>) {
    match n {
        Node::Atom(a) => {
            let atom = &m.atoms[*a as usize];
            out.extend(h.of_atom(atom).map(|x| {
                let (s, e) = h.original_range(x);
                (x.field, s as u32, e as u32)
            }));
        }
        Node::Or(v) => v.iter().for_each(|x| spans(m, x, h, out)),
        // The atoms of an exact guard all have its fields, and spans do not say which atom
        // found them: so each pattern's hits once, however many atoms (the same term in
        // several languages' parts of a set) share it.
        Node::Guard {
            set,
            exact: Some(x),
            ..
        } => set.each_in_fields(h, x.fields, |p| {
            out.extend(
                h.of_pattern(p)
                    .iter()
                    .filter(|hit| x.fields.0 & (1 << hit.field) != 0)
                    .map(|hit| (hit.field, hit.os, hit.oe)),
            )
        }),
        Node::Guard { inner, .. } => spans(m, inner, h, out),
        _ => {}
    }
}

/// Whether a word character `c` next to a term's first or last character `inner` is a step
/// between a letter and a digit, which counts as a word boundary ("GPU1万基", "Gaudi3"): the
/// term's own letters and digits are matched exactly, so `H20` still never finds "H200".
pub(super) fn letter_digit_step(c: char, inner: Option<char>) -> bool {
    inner.is_some_and(|i| {
        (c.is_ascii_digit() && i.is_alphabetic()) || (c.is_alphabetic() && i.is_ascii_digit())
    })
}

/// Number of words starting in `text[from..to]`, counting stops once it exceeds `limit`.
/// Each CJK character is a word. Counting on the original text treats hits of the exact and
/// the accent-folded variant alike, and only looks at the stretch between the two hits.
fn words_between(text: &str, from: usize, to: usize, limit: u32) -> u32 {
    let Some(seg) = text.get(from..to) else {
        return 0;
    };
    let mut prev_word = text[..from].chars().next_back().is_some_and(is_word_char);
    // Letters in the word just ended, to tell "U.S. Commerce" from a sentence's end.
    let mut word_len = 0usize;
    let mut n = 0;
    for (i, c) in seg.char_indices() {
        if text::is_cjk(c) {
            n += 1;
            prev_word = false;
            word_len = 0;
        } else if is_word_char(c) {
            if !prev_word {
                n += 1;
                word_len = 0;
            }
            word_len += 1;
            prev_word = true;
        } else {
            if ends_sentence(c, word_len, &text[from + i + c.len_utf8()..]) {
                return limit.saturating_add(1);
            }
            prev_word = false;
        }
        if n > limit {
            break;
        }
    }
    n
}

/// Whether punctuation `c`, after a word of `word_len` letters and followed by `rest`, ends a
/// sentence: a CJK full stop, or `.` `!` `?` followed by a space and a capital letter, digit or
/// CJK character. A one-letter word before a full stop is an initial or an abbreviation
/// ("U.S. Commerce"), not an end.
fn ends_sentence(c: char, word_len: usize, rest: &str) -> bool {
    match c {
        '。' | '！' | '？' => true,
        '.' | '!' | '?' => {
            if c == '.' && word_len <= 1 {
                return false;
            }
            let mut it = rest.chars();
            if !it.next().is_some_and(char::is_whitespace) {
                return false;
            }
            it.find(|c| !c.is_whitespace())
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit() || text::is_cjk(c))
        }
        _ => false,
    }
}

/// At most this many hits per side of a NEAR are considered.
const MAX_NEAR_SPANS: usize = 4096;

/// Two hits further apart than this many bytes are never within `n` words: 64 bytes per word
/// is generous even for long words with punctuation, and bounds the scan between them.
fn max_near_bytes(n: u32) -> u32 {
    n.saturating_add(2).saturating_mul(64)
}

fn near_ok(h: &ItemHits, a: (u8, u32, u32), b: (u8, u32, u32), n: u32, ordered: bool) -> bool {
    if a.0 != b.0 {
        return false;
    }
    let text = h
        .fields
        .get(a.0 as usize)
        .and_then(|f| f.as_ref())
        .map(|f| f.orig.as_ref())
        .unwrap_or("");
    let before = |x: (u8, u32, u32), y: (u8, u32, u32)| {
        x.2 <= y.1
            && y.1 - x.2 <= max_near_bytes(n)
            && words_between(text, x.2 as usize, y.1 as usize, n) <= n
    };
    if ordered {
        before(a, b)
    } else {
        let overlap = a.1 < b.2 && b.1 < a.2;
        overlap || before(a, b) || before(b, a)
    }
}

fn count(m: &Matcher, n: &Node, h: &ItemHits) -> usize {
    match n {
        Node::Atom(a) => h.of_atom(&m.atoms[*a as usize]).count(),
        Node::Or(v) => v.iter().map(|x| count(m, x, h)).sum(),
        Node::Guard { inner, .. } => count(m, inner, h),
        _ => 0,
    }
}

pub fn eval(m: &Matcher, n: &Node, h: &ItemHits) -> bool {
    // Atoms are tested inline (a bit test for the usual case of an absent pattern): real rules
    // are long OR lists of terms, and this walk runs for every item with any hit.
    let test = |x: &Node| match x {
        Node::Atom(a) => h.atom_hit(&m.atoms[*a as usize]),
        _ => eval(m, x, h),
    };
    match n {
        Node::Atom(a) => h.atom_hit(&m.atoms[*a as usize]),
        Node::And(v) => v.iter().all(test),
        Node::Or(v) => v.iter().any(test),
        Node::Not(x) => !eval(m, x, h),
        Node::Near { a, b, n, ordered } => {
            // Cheap presence test first: most NEAR clauses fail because a side is absent.
            if !eval(m, a, h) || !eval(m, b, h) {
                return false;
            }
            // The item's buffers, taken and put back after (a NEAR inside a side was decided
            // above, so nothing else uses them meanwhile).
            let (mut sa, mut sb) = std::mem::take(&mut *h.near.borrow_mut());
            sa.clear();
            sb.clear();
            spans(m, a, h, &mut sa);
            spans(m, b, h, &mut sb);
            // Only pairs whose byte distance could be "near" are checked: sort one side and look
            // at the window around each hit of the other (bounded work on hostile input).
            // One text span is found by many atoms (the same term written in several
            // languages' parts of a set, or in two sets under one side): each span is
            // checked once.
            sb.sort_unstable();
            sb.dedup();
            sa.sort_unstable();
            sa.dedup();
            sb.truncate(MAX_NEAR_SPANS);
            sa.truncate(MAX_NEAR_SPANS);
            let w = max_near_bytes(*n);
            let near = sa.iter().any(|&x| {
                let lo = sb.partition_point(|y| (y.0, y.1) < (x.0, x.1.saturating_sub(w + 256)));
                sb[lo..]
                    .iter()
                    .take_while(|y| (y.0, y.1) <= (x.0, x.2.saturating_add(w)))
                    .any(|&y| near_ok(h, x, y, *n, *ordered))
            });
            *h.near.borrow_mut() = (sa, sb);
            near
        }
        Node::AtLeast { n, inner } => count(m, inner, h) >= *n as usize,
        Node::Guard {
            set,
            exact: Some(x),
            id,
            ..
        } => h.guard_holds(*id, || set.any_in_fields(h, x.fields)),
        Node::Guard {
            set,
            exact: None,
            inner,
            id,
        } => h.guard_holds(*id, || set.any_in(h)) && eval(m, inner, h),
    }
}

/// False only when `n` cannot hold, judged from the pattern bits alone (no positions, no NEAR
/// distances): a quick necessary condition.
fn may_hold(m: &Matcher, n: &Node, h: &ItemHits) -> bool {
    match n {
        Node::Atom(a) => h.atom_hit(&m.atoms[*a as usize]),
        Node::Or(v) => v.iter().any(|x| may_hold(m, x, h)),
        Node::And(v) => v.iter().all(|x| may_hold(m, x, h)),
        Node::Not(_) => true,
        Node::Near { a, b, .. } => may_hold(m, a, h) && may_hold(m, b, h),
        Node::AtLeast { n, inner } => *n == 0 || may_hold(m, inner, h),
        Node::Guard {
            set,
            exact: Some(x),
            id,
            ..
        } => h.guard_holds(*id, || set.any_in_fields(h, x.fields)),
        Node::Guard {
            set,
            exact: None,
            inner,
            id,
        } => h.guard_holds(*id, || set.any_in(h)) && may_hold(m, inner, h),
    }
}

/// Evaluates `n` and, when it holds, appends the (atom, hit) pairs of its positive evidence:
/// every hit of the atoms under the parts that hold (not under `NOT`). One walk instead of an
/// evaluation followed by a collection that evaluates each subtree again; `out` is left as it
/// was when `n` does not hold. A numbered guard named in several parts that hold adds its
/// pairs once: the evidence is the same set of pairs, with fewer repeats to sort away.
pub fn gather<'a>(
    m: &'a Matcher,
    n: &'a Node,
    h: &'a ItemHits,
    out: &mut Vec<(u32, &'a Hit)>,
) -> bool {
    let mut done = std::mem::take(&mut *h.gathered.borrow_mut());
    done.clear(h.guards.len());
    let held = gather_rec(m, n, h, out, &mut done);
    *h.gathered.borrow_mut() = done;
    held
}

/// The numbered guards whose pairs are in `out` already, with where each one's pairs begin
/// (so that dropping the pairs of a part that did not hold forgets its guards too).
#[derive(Default)]
struct Gathered {
    bits: Vec<u64>,
    stack: Vec<(u32, usize)>,
}

impl Gathered {
    fn clear(&mut self, words: usize) {
        self.bits.clear();
        self.bits.resize(words, 0);
        self.stack.clear();
    }

    fn has(&self, id: u32) -> bool {
        self.bits
            .get(id as usize / 64)
            .is_some_and(|w| w >> (id % 64) & 1 != 0)
    }

    fn add(&mut self, id: u32, at: usize) {
        if let Some(w) = self.bits.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
            self.stack.push((id, at));
        }
    }

    /// `out` was cut back to `len`: the guards whose pairs began at or after it are undone.
    fn truncate(&mut self, len: usize) {
        while let Some(&(id, at)) = self.stack.last() {
            if at < len {
                break;
            }
            self.bits[id as usize / 64] &= !(1 << (id % 64));
            self.stack.pop();
        }
    }
}

fn gather_rec<'a>(
    m: &'a Matcher,
    n: &'a Node,
    h: &'a ItemHits,
    out: &mut Vec<(u32, &'a Hit)>,
    done: &mut Gathered,
) -> bool {
    let mark = out.len();
    let held = match n {
        Node::Atom(a) => {
            let atom = &m.atoms[*a as usize];
            let hit = h.atom_hit(atom);
            if hit {
                out.extend(h.of_atom(atom).map(|x| (*a, x)));
            }
            hit
        }
        Node::Or(v) => {
            let mut any = false;
            for x in v {
                any |= gather_rec(m, x, h, out, done);
            }
            any
        }
        // Most ANDs fail (a cluster's subject without its action, say): rule that out from the
        // bits before collecting evidence that would be thrown away.
        Node::And(v) => {
            v.iter().all(|x| may_hold(m, x, h))
                && v.iter().all(|x| match x {
                    Node::Not(_) => eval(m, x, h),
                    _ => gather_rec(m, x, h, out, done),
                })
        }
        Node::Not(x) => !eval(m, x, h),
        Node::Near { a, b, .. } => {
            eval(m, n, h) && {
                gather_rec(m, a, h, out, done);
                gather_rec(m, b, h, out, done);
                true
            }
        }
        Node::AtLeast { inner, .. } => eval(m, n, h) && gather_rec(m, inner, h, out, done),
        Node::Guard {
            set,
            exact: Some(x),
            id,
            ..
        } => {
            h.guard_holds(*id, || true)
                && (done.has(*id) || {
                    x.each_hit(m, set, h, |a, hit| out.push((a, hit)));
                    if out.len() > mark {
                        done.add(*id, mark);
                    }
                    out.len() > mark
                })
        }
        Node::Guard {
            set,
            exact: None,
            inner,
            id,
        } => h.guard_holds(*id, || set.any_in(h)) && gather_rec(m, inner, h, out, done),
    };
    if !held {
        out.truncate(mark);
        done.truncate(mark);
    }
    held
}

fn describe(m: &Matcher, n: &Node) -> String {
    match n {
        Node::Atom(a) => m.atoms[*a as usize].display.to_string(),
        Node::And(v) => format!(
            "({})",
            v.iter()
                .map(|x| describe(m, x))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        Node::Or(v) => format!(
            "({})",
            v.iter()
                .map(|x| describe(m, x))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        Node::Not(x) => format!("NOT {}", describe(m, x)),
        Node::Near { a, b, n, ordered } => format!(
            "{} {}/{} {}",
            describe(m, a),
            if *ordered { "ONEAR" } else { "NEAR" },
            n,
            describe(m, b)
        ),
        Node::AtLeast { n, inner } => format!("atleast{}{}", n, describe(m, inner)),
        Node::Guard { inner, .. } => describe(m, inner),
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let t: String = s.chars().take(max).collect();
        format!("{t}…")
    }
}

/// Writes an indented yes/no tree of why a node did or did not match.
pub fn explain(m: &Matcher, n: &Node, h: &ItemHits, depth: usize, out: &mut String) {
    let ok = eval(m, n, h);
    let mark = if ok { "yes" } else { "no " };
    let pad = "  ".repeat(depth);
    match n {
        Node::Atom(a) if m.atoms[*a as usize].lang_test => {
            let lang = h.lang.map_or("unknown".to_string(), |l| l.to_string());
            let display = &m.atoms[*a as usize].display;
            let _ = writeln!(out, "{pad}{mark} {display}  (the item's language: {lang})");
        }
        Node::Atom(a) => {
            let atom = &m.atoms[*a as usize];
            let from = atom
                .set
                .as_ref()
                .map(|s| format!(" [@{s}]"))
                .unwrap_or_default();
            let found: Vec<String> = h
                .of_atom(atom)
                .take(4)
                .map(|x| {
                    let (s, e) = h.original_range(x);
                    format!(
                        "{} {}..{} {:?}",
                        Field::ALL[x.field as usize].as_str(),
                        s,
                        e,
                        short(h.original_text(x), 40)
                    )
                })
                .collect();
            let scope: Vec<&str> = atom.fields.fields().map(Field::as_str).collect();
            if found.is_empty() {
                let _ = writeln!(
                    out,
                    "{pad}{mark} {}{from}  (not found in {})",
                    atom.display,
                    scope.join("/")
                );
            } else {
                let _ = writeln!(
                    out,
                    "{pad}{mark} {}{from}  found: {}",
                    atom.display,
                    found.join("; ")
                );
            }
        }
        Node::And(v) => {
            let _ = writeln!(out, "{pad}{mark} all of:");
            v.iter().for_each(|x| explain(m, x, h, depth + 1, out));
        }
        Node::Or(v) => {
            // Long OR lists are the norm in real rules: show what matched, and collapse the terms
            // that did not into one line so the explanation stays readable.
            // A set lists a term once per language that writes it alike ("chip" in seven):
            // each explanation is shown once.
            let (hit, miss): (Vec<&Node>, Vec<&Node>) = v.iter().partition(|x| eval(m, x, h));
            let mut shown = std::collections::HashSet::new();
            let mut lines = String::new();
            for x in &hit {
                let mut one = String::new();
                explain(m, x, h, depth + 1, &mut one);
                if shown.insert(one.clone()) {
                    lines.push_str(&one);
                }
            }
            let once = if shown.len() < hit.len() {
                ", each term shown once"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{pad}{mark} any of ({} of {} alternatives matched{once}):",
                hit.len(),
                v.len()
            );
            out.push_str(&lines);
            if !ok {
                let mut names = Vec::new();
                for x in &miss {
                    match x {
                        Node::Atom(_) => {
                            let d = describe(m, x);
                            if !names.contains(&d) {
                                names.push(d);
                            }
                        }
                        _ => explain(m, x, h, depth + 1, out),
                    }
                }
                if !names.is_empty() {
                    let list = short(&names.join(", "), 160);
                    let _ = writeln!(out, "{pad}  no  none of these terms found: {list}");
                }
            }
        }
        Node::Not(x) => {
            let _ = writeln!(out, "{pad}{mark} none of (NOT):");
            explain(m, x, h, depth + 1, out);
        }
        Node::Near { a, b, .. } => {
            let both = eval(m, a, h) && eval(m, b, h);
            let why = if ok {
                ""
            } else if both {
                "  (both found, but not close enough / not in that order)"
            } else {
                ""
            };
            let _ = writeln!(out, "{pad}{mark} {}{why}", describe(m, n));
            explain(m, a, h, depth + 1, out);
            explain(m, b, h, depth + 1, out);
        }
        Node::AtLeast { n: k, inner } => {
            let c = count(m, inner, h);
            let _ = writeln!(out, "{pad}{mark} at least {k} occurrences: {c} found");
            explain(m, inner, h, depth + 1, out);
        }
        // A guard is an evaluation shortcut, not part of the rule as written.
        Node::Guard { inner, .. } => explain(m, inner, h, depth, out),
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "chip", "chips", "china", "ban", "nvidia", "芯片", "trừng", "ai",
    ];

    /// The terms of the sets the generated queries name (`@g1`, `@g2`), scoped and `caps` like
    /// the naming, as `classify` resolves them.
    fn set_terms(r: &SetRef) -> Vec<Term> {
        let words: &[&str] = match r.name {
            "g1" => &["chip", "ban", "芯片"],
            "g2" => &["nvidia", "trừng", "ai"],
            _ => return Vec::new(),
        };
        words
            .iter()
            .map(|w| Term {
                text: w.to_string(),
                display: w.to_string(),
                phrase: false,
                prefix: false,
                caps: r.caps,
                weight: 1.0,
                fields: r.fields,
                offset: r.offset,
                set: Some(super::super::parse::SetOrigin {
                    set: r.name.into(),
                    concept: r.name.into(),
                    weight: 1.0,
                }),
                lang: None,
            })
            .collect()
    }

    /// Queries over a small vocabulary and two sets (named again and again, as real rules do,
    /// so the guard's memo of an OR it has rewritten is used), with every operator, nested a
    /// few levels.
    fn query() -> impl Strategy<Value = String> {
        let words: Vec<&str> = WORDS
            .iter()
            .copied()
            .chain(["@g1", "@g2", "title:@g1", "@g1", "@g2"])
            .collect();
        let leaf = prop::sample::select(words).prop_map(|w| w.to_string());
        // NEAR and atleast take terms or OR groups of terms.
        let group = prop_oneof![
            leaf.clone(),
            prop::collection::vec(leaf.clone(), 2..5).prop_map(|v| format!("({})", v.join(" OR "))),
        ];
        let positional = prop_oneof![
            (group.clone(), group.clone(), 1u32..6)
                .prop_map(|(a, b, n)| format!("({a} NEAR/{n} {b})")),
            (group, 1u32..4).prop_map(|(a, n)| format!("atleast{n}({a})")),
        ];
        prop_oneof![leaf, positional].prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..5)
                    .prop_map(|v| format!("({})", v.join(" OR "))),
                prop::collection::vec(inner.clone(), 2..4)
                    .prop_map(|v| format!("({})", v.join(" AND "))),
                (inner.clone(), inner).prop_map(|(a, b)| format!("({a} AND NOT {b})")),
            ]
        })
    }

    fn text() -> impl Strategy<Value = String> {
        let words: Vec<&str> = WORDS
            .iter()
            .copied()
            .chain(["the", "said", "potato", "x"])
            .collect();
        prop::collection::vec(prop::sample::select(words), 0..16).prop_map(|v| v.join(" "))
    }

    proptest! {
        /// Both ways of testing a pattern set against an item agree: by the set's words and
        /// by the item's patterns (each is the faster one for some sets and items).
        #[test]
        fn pattern_set_tests_agree_both_ways(
            set in prop::collection::vec(0u32..600, 0..40),
            hits in prop::collection::vec((0u32..600, 0u8..3), 0..40),
            fields in 1u8..8,
        ) {
            let ps = PatternSet::of(set.iter().copied());
            let mut hs: Vec<Hit> = hits
                .iter()
                .map(|&(pat, field)| Hit { pat, field, os: 0, oe: 0 })
                .collect();
            hs.sort_unstable_by_key(|h| (h.pat, h.field));
            let h = ItemHits {
                fields: Default::default(),
                runs: runs_of(&hs, Vec::new()),
                field_bits: bits_of(&hs, 600, Vec::new()),
                hits: hs,
                guards: Vec::new(),
                gathered: RefCell::default(),
                near: RefCell::default(),
                lang: None,
            };
            let fm = FieldMask(fields);
            let want_any = hits.iter().any(|(p, _)| set.contains(p));
            let want_in: Vec<u32> = {
                let mut v: Vec<u32> = hits
                    .iter()
                    .filter(|(p, f)| set.contains(p) && fields & (1 << f) != 0)
                    .map(|(p, _)| *p)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let by_item = h.runs.iter().any(|&(p, _)| ps.has(p));
            prop_assert_eq!(by_item, want_any);
            prop_assert_eq!(ps.any_in_by_words(&h), want_any);
            prop_assert_eq!(ps.any_in(&h), want_any);
            prop_assert_eq!(ps.any_in_fields_by_words(&h, fm), !want_in.is_empty());
            prop_assert_eq!(ps.any_in_fields(&h, fm), !want_in.is_empty());
            let mut a = Vec::new();
            ps.each_in_fields(&h, fm, |p| a.push(p));
            let mut b = Vec::new();
            ps.each_in_fields_by_words(&h, fm, |p| b.push(p));
            prop_assert_eq!(&a, &want_in);
            prop_assert_eq!(&b, &want_in);
        }
    }

    proptest! {
        /// Synthetic hits changed in place are those made afresh (the lint asks thousands of
        /// one-pattern questions with one set of hits).
        #[test]
        fn resynthesized_hits_are_fresh_synthetic_hits(
            rounds in prop::collection::vec(prop::collection::vec(0u32..300, 0..4), 1..6),
        ) {
            let mut h = ItemHits::synthetic(300, &[]);
            for pats in &rounds {
                h.resynthesize(pats);
                let fresh = ItemHits::synthetic(300, pats);
                let key = |x: &ItemHits| -> Vec<(u32, u8)> {
                    x.hits.iter().map(|h| (h.pat, h.field)).collect()
                };
                prop_assert_eq!(key(&h), key(&fresh));
                prop_assert_eq!(&h.runs, &fresh.runs);
                prop_assert_eq!(&h.field_bits, &fresh.field_bits);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// A guarded tree decides every item exactly like the tree as written.
        #[test]
        fn guards_change_no_verdict(q in query(), title in text(), body in text()) {
            let expr = super::super::parse::parse(&q).expect("generated queries parse");
            let mut b = MatcherBuilder::default();
            // Lowered twice, as a watch's query and exclude are: the second copies the sets'
            // atoms from the first.
            b.lower_with(&expr, &set_terms).expect("lowered");
            let node = b.lower_with(&expr, &set_terms).expect("lowered");
            let m = b.finish().expect("matcher");
            let (guarded, under) = m.guard_with_patterns(node.clone());
            let all = m.pattern_set(&node);
            for p in 0..m.patterns_len() as u32 {
                prop_assert_eq!(under.has(p), all.has(p), "pattern {} of {}", p, q);
            }
            let item = Item { title, summary: body, ..Default::default() };
            let h = m.scan(&item, None);
            let held = eval(&m, &node, &h);
            prop_assert_eq!(eval(&m, &guarded, &h), held, "{}", q);
            // Gathering agrees with evaluation, and finds the same evidence either way.
            let (mut a, mut b2) = (Vec::new(), Vec::new());
            prop_assert_eq!(gather(&m, &guarded, &h, &mut a), held);
            prop_assert_eq!(gather(&m, &node, &h, &mut b2), held);
            let key = |v: &[(u32, &Hit)]| {
                let mut k: Vec<_> = v.iter().map(|(a, x)| (*a, x.field, x.os)).collect();
                k.sort_unstable();
                k
            };
            prop_assert_eq!(key(&a), key(&b2));
            prop_assert_eq!(held, !a.is_empty() || !node.needs_hit());
            let mut evidence = key(&a);
            evidence.dedup();
            let pairs = a.len();
            drop((a, b2));
            drop(h);
            // Numbered, the guards are decided by the scan's guard bits: the same verdict and
            // the same evidence again.
            let mut m = m;
            let mut numbered = guarded.clone();
            m.index_guards([&mut numbered]);
            let h2 = m.scan(&item, None);
            prop_assert_eq!(h2.guards.is_empty(), m.guard_index.count == 0);
            prop_assert_eq!(eval(&m, &numbered, &h2), held, "{}", q);
            prop_assert!(may_hold(&m, &numbered, &h2) || !held, "{}", q);
            let mut c = Vec::new();
            prop_assert_eq!(gather(&m, &numbered, &h2, &mut c), held);
            // The same pairs; a guard named twice adds its pairs once.
            let mut once = key(&c);
            once.dedup();
            prop_assert_eq!(once, evidence);
            prop_assert!(c.len() <= pairs, "{} pairs, {} before numbering", c.len(), pairs);
        }
    }
}
