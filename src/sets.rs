//! Named term sets: the vocabularies rules use as `@name` (see docs/rules.md, "Term sets").
//!
//! In: the shipped library (every `config/sets/*.toml`, embedded in the binary) and the
//! `[sets.NAME]` tables of a user's config, each with its source text so every error can point
//! at the offending key, term or include. Out: a [`SetLibrary`] in which each set is resolved to
//! the flat list of its terms (own and included), each term remembering the set it was listed
//! in, that set's label and weight, and the language key it was listed under — or every error
//! found, rendered `file:line:col` with a hint. Pure: no I/O (the shipped files are constants).
//!
//! Joining and overriding: same-named sets of the shipped files are one set (the union of their
//! terms; `label`, `weight` and `include` may be given in one file only). A user's `[sets.NAME]`
//! replaces the shipped set of that name, or adds to it with `extend = true`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use crate::diagnostic::render_at;
use crate::lang::Lang;

/// The shipped library: every file of `config/sets/`, in a fixed order (a test checks that no
/// file of that folder is missing here).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "config/sets/concepts.toml",
        include_str!("../config/sets/concepts.toml"),
    ),
    (
        "config/sets/en.toml",
        include_str!("../config/sets/en.toml"),
    ),
    (
        "config/sets/zh.toml",
        include_str!("../config/sets/zh.toml"),
    ),
    (
        "config/sets/ja.toml",
        include_str!("../config/sets/ja.toml"),
    ),
    (
        "config/sets/ko.toml",
        include_str!("../config/sets/ko.toml"),
    ),
    (
        "config/sets/vi.toml",
        include_str!("../config/sets/vi.toml"),
    ),
    (
        "config/sets/ru.toml",
        include_str!("../config/sets/ru.toml"),
    ),
    (
        "config/sets/de.toml",
        include_str!("../config/sets/de.toml"),
    ),
    (
        "config/sets/fr.toml",
        include_str!("../config/sets/fr.toml"),
    ),
    (
        "config/sets/es.toml",
        include_str!("../config/sets/es.toml"),
    ),
    (
        "config/sets/pt.toml",
        include_str!("../config/sets/pt.toml"),
    ),
    (
        "config/sets/it.toml",
        include_str!("../config/sets/it.toml"),
    ),
    (
        "config/sets/nl.toml",
        include_str!("../config/sets/nl.toml"),
    ),
    (
        "config/sets/pl.toml",
        include_str!("../config/sets/pl.toml"),
    ),
];

/// Where something was written: which source of the library, which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    src: u16,
    offset: usize,
}

/// One term of a set as written, checked against the term syntax.
#[derive(Debug, Clone)]
pub struct SetTerm {
    /// As written in the array (`entity list`, `export*`, `caps(BIS)`).
    pub written: String,
    /// The text to search for (no `*`, no `caps()`).
    pub text: String,
    pub prefix: bool,
    pub caps: bool,
    /// The language key it was listed under (`any` = none).
    pub lang: Option<Lang>,
}

/// A term of a resolved set, with the set it was listed in.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub term: Arc<SetTerm>,
    /// The set the term was listed in (an included set's name, for included terms).
    pub set: Arc<str>,
    /// That set's label (default: its name).
    pub concept: Arc<str>,
    /// That set's weight (default 1).
    pub weight: f64,
}

#[derive(Debug, Clone)]
struct SetDef {
    label: Option<(String, Pos)>,
    weight: Option<(f64, Pos)>,
    include: Vec<(String, Pos)>,
    terms: Vec<Arc<SetTerm>>,
    /// The `[sets.NAME]` header (the first, for joined shipped sets).
    at: Pos,
    /// Defined (or extended) in the user's config.
    user: bool,
}

/// All sets known to one config: the shipped library joined with the user's own.
#[derive(Debug, Clone, Default)]
pub struct SetLibrary {
    sources: Vec<(String, Arc<str>)>,
    defs: BTreeMap<String, SetDef>,
    /// Each set's flattened terms (own, then includes depth first, each term once).
    resolved: HashMap<String, Arc<[Resolved]>>,
}

/// Keys of a `[sets.NAME]` table other than the language keys.
const KEYS: &str = "label, weight, include, any, extend, or a two-letter language code";

impl SetLibrary {
    /// The shipped library alone, built once. Its errors can only come from a broken
    /// `config/sets/*.toml`, which a test compiles.
    pub fn shipped() -> &'static Result<SetLibrary, Vec<String>> {
        static LIB: OnceLock<Result<SetLibrary, Vec<String>>> = OnceLock::new();
        LIB.get_or_init(|| SetLibrary::from_files(SHIPPED, None))
    }

    /// The shipped library plus the `[sets.*]` tables of the config `src` (named `origin`).
    pub fn with_config(origin: &str, src: &str) -> Result<SetLibrary, Vec<String>> {
        SetLibrary::from_files(SHIPPED, Some((origin, src)))
    }

    /// A library from the given "shipped" files (name, text) and an optional user config.
    pub fn from_files(
        shipped: &[(&str, &str)],
        user: Option<(&str, &str)>,
    ) -> Result<SetLibrary, Vec<String>> {
        let mut lib = SetLibrary::default();
        let mut errors = Vec::new();
        for (name, src) in shipped {
            lib.read_file(name, src, false, &mut errors);
        }
        if let Some((origin, src)) = user {
            lib.read_file(origin, src, true, &mut errors);
        }
        if errors.is_empty() {
            lib.resolve_all(&mut errors);
        }
        if errors.is_empty() {
            Ok(lib)
        } else {
            Err(errors)
        }
    }

    fn err(&self, errors: &mut Vec<String>, at: Pos, message: &str, hint: Option<&str>) {
        errors.push(self.render(at, "error", message, hint));
    }

    fn render(&self, at: Pos, severity: &str, message: &str, hint: Option<&str>) -> String {
        let (file, src) = &self.sources[at.src as usize];
        render_at(file, src, at.offset, severity, message, hint)
    }

    fn read_file(&mut self, name: &str, src: &str, user: bool, errors: &mut Vec<String>) {
        let si = self.sources.len() as u16;
        self.sources.push((name.to_string(), src.into()));
        let pos = |r: Option<Range<usize>>| Pos {
            src: si,
            offset: r.map_or(0, |r| r.start),
        };
        let doc = match toml_edit::ImDocument::parse(src) {
            Ok(d) => d,
            Err(e) => {
                // The config itself was parsed (and its syntax errors reported) elsewhere; a
                // shipped file is checked here.
                let at = pos(e.span());
                self.err(errors, at, e.message(), None);
                return;
            }
        };
        let Some((sets_key, sets)) = doc.as_table().get_key_value("sets") else {
            return;
        };
        let Some(sets) = sets.as_table_like() else {
            self.err(
                errors,
                pos(sets_key.span()),
                "`sets` must be a table of sets",
                Some("write each set as [sets.NAME] with its terms, e.g. en = [\"export ban\"]"),
            );
            return;
        };
        for (set_name, _) in sets.iter() {
            let Some((key, item)) = sets.get_key_value(set_name) else {
                continue;
            };
            let at = pos(key.span());
            if !valid_name(set_name) {
                self.err(
                    errors,
                    at,
                    &format!("set name `{set_name}` must be letters, digits or `_`"),
                    Some("name sets like [sets.export_control]"),
                );
                continue;
            }
            let Some(table) = item.as_table_like() else {
                self.err(
                    errors,
                    at,
                    &format!("`sets.{set_name}` must be a table"),
                    Some(&format!(
                        "write [sets.{set_name}] and under it en = [\"…\"] or any = [\"…\"]"
                    )),
                );
                continue;
            };
            let mut def = SetDef {
                label: None,
                weight: None,
                include: Vec::new(),
                terms: Vec::new(),
                at,
                user,
            };
            let mut extend = false;
            for (k, _) in table.iter() {
                let Some((kk, v)) = table.get_key_value(k) else {
                    continue;
                };
                let kat = pos(kk.span());
                let vat = pos(v.span());
                match k {
                    "label" => match v.as_str() {
                        Some(s) if !s.trim().is_empty() => def.label = Some((s.to_string(), kat)),
                        _ => self.err(
                            errors,
                            vat,
                            &format!("set `{set_name}`: label must be a non-empty string"),
                            Some("write label = \"Export controls\""),
                        ),
                    },
                    "weight" => {
                        let w = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
                        match w {
                            Some(w) if w.is_finite() && w > 0.0 && w <= 100.0 => {
                                def.weight = Some((w, kat))
                            }
                            _ => self.err(
                                errors,
                                vat,
                                &format!("set `{set_name}`: weight must be a number above 0 and up to 100"),
                                Some("instruments ~3, specific names ~2, generic words 1: weight = 2.5"),
                            ),
                        }
                    }
                    "extend" => match v.as_bool() {
                        Some(b) if user => extend = b,
                        Some(_) => self.err(
                            errors,
                            kat,
                            &format!("set `{set_name}`: `extend` belongs in a user config"),
                            Some("shipped files with the same set are joined already; remove `extend`"),
                        ),
                        None => self.err(
                            errors,
                            vat,
                            &format!("set `{set_name}`: extend must be true or false"),
                            Some("write extend = true to add to the shipped set"),
                        ),
                    },
                    "include" => match v.as_array() {
                        Some(arr) => {
                            for el in arr.iter() {
                                let eat = pos(el.span());
                                match el.as_str() {
                                    Some(s) => {
                                        let s = s.trim().trim_start_matches('@');
                                        def.include.push((s.to_string(), eat))
                                    }
                                    None => self.err(
                                        errors,
                                        eat,
                                        &format!("set `{set_name}`: include lists set names"),
                                        Some("write include = [\"entity_list\"]"),
                                    ),
                                }
                            }
                        }
                        None => self.err(
                            errors,
                            vat,
                            &format!("set `{set_name}`: include must be an array of set names"),
                            Some("write include = [\"entity_list\"]"),
                        ),
                    },
                    _ => {
                        let lang = if k == "any" {
                            None
                        } else {
                            match Lang::from_code(k) {
                                Some(l) => Some(l),
                                None => {
                                    let hint = match crate::lang::suggest(k) {
                                        Some(s) => format!("did you mean `{s}`? Keys are {KEYS} (ISO 639-1)"),
                                        None => format!("keys are {KEYS} (ISO 639-1: en zh ja ko vi de fr es pt it nl pl ru …)"),
                                    };
                                    self.err(
                                        errors,
                                        kat,
                                        &format!("set `{set_name}`: unknown language or key `{k}`"),
                                        Some(&hint),
                                    );
                                    continue;
                                }
                            }
                        };
                        let Some(arr) = v.as_array() else {
                            self.err(
                                errors,
                                vat,
                                &format!("set `{set_name}`: `{k}` must be an array of terms"),
                                Some(&format!("write {k} = [\"export ban\", \"embargo*\"]")),
                            );
                            continue;
                        };
                        for el in arr.iter() {
                            let eat = pos(el.span());
                            let Some(s) = el.as_str() else {
                                self.err(
                                    errors,
                                    eat,
                                    &format!("set `{set_name}`: a term must be a string"),
                                    Some("write each term in quotes: \"export ban\""),
                                );
                                continue;
                            };
                            // Point inside the quotes (literal and basic strings alike).
                            let inner = Pos {
                                offset: eat.offset + 1,
                                ..eat
                            };
                            match check_term(s) {
                                Ok((text, prefix, caps)) => def.terms.push(Arc::new(SetTerm {
                                    written: s.trim().to_string(),
                                    text,
                                    prefix,
                                    caps,
                                    lang,
                                })),
                                Err((msg, hint)) => self.err(
                                    errors,
                                    inner,
                                    &format!("set `{set_name}`: {msg}"),
                                    Some(&hint),
                                ),
                            }
                        }
                    }
                }
            }
            self.add(set_name, def, extend, errors);
        }
    }

    /// Adds a set read from a file: joined with a shipped one, replacing it, or extending it.
    fn add(&mut self, name: &str, def: SetDef, extend: bool, errors: &mut Vec<String>) {
        let Some(old) = self.defs.get_mut(name) else {
            if extend {
                let hint = match closest(name, self.defs.keys().map(String::as_str)) {
                    Some(c) => {
                        format!("did you mean `{c}`? Without `extend`, this defines a new set")
                    }
                    None => "remove `extend = true` to define a new set".to_string(),
                };
                let msg = format!("set `{name}` has extend = true, but there is no shipped set `{name}` to extend");
                self.err(errors, def.at, &msg, Some(&hint));
            }
            self.defs.insert(name.to_string(), def);
            return;
        };
        if def.user && !extend {
            // A user's own set replaces the shipped one.
            self.defs.insert(name.to_string(), def);
            return;
        }
        let mut conflicts = Vec::new();
        if let Some(l) = def.label {
            match &old.label {
                Some((_, p)) if !def.user => conflicts.push(("label", l.1, *p)),
                _ => old.label = Some(l),
            }
        }
        if let Some(w) = def.weight {
            match &old.weight {
                Some((_, p)) if !def.user => conflicts.push(("weight", w.1, *p)),
                _ => old.weight = Some(w),
            }
        }
        if !def.include.is_empty() {
            if !old.include.is_empty() && !def.user {
                conflicts.push(("include", def.include[0].1, old.include[0].1));
            } else {
                old.include.extend(def.include);
            }
        }
        old.terms.extend(def.terms);
        old.user |= def.user;
        for (key, here, there) in conflicts {
            let other = self.render(there, "note", "first given here", None);
            let msg = format!("set `{name}`: `{key}` is given in two shipped files");
            let hint = format!(
                "give label, weight and include in config/sets/concepts.toml only\n{other}"
            );
            self.err(errors, here, &msg, Some(&hint));
        }
    }

    /// Flattens every set (own terms, then includes), refusing unknown includes, cycles and
    /// sets left empty.
    fn resolve_all(&mut self, errors: &mut Vec<String>) {
        let names: Vec<String> = self.defs.keys().cloned().collect();
        let arcs: HashMap<&str, (Arc<str>, Arc<str>, f64)> = self
            .defs
            .iter()
            .map(|(n, d)| {
                let label = d.label.as_ref().map_or(n.as_str(), |l| l.0.as_str());
                (
                    n.as_str(),
                    (
                        n.as_str().into(),
                        label.into(),
                        d.weight.map_or(1.0, |w| w.0),
                    ),
                )
            })
            .collect();
        let mut resolved = HashMap::new();
        let mut reported_cycles = HashSet::new();
        for name in &names {
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            let mut path = vec![name.as_str()];
            self.flatten(
                name,
                &arcs,
                &mut path,
                &mut seen,
                &mut out,
                errors,
                &mut reported_cycles,
            );
            if out.is_empty() {
                let d = &self.defs[name];
                let hint = if d.include.is_empty() {
                    "give it terms, e.g. en = [\"export ban\"] or any = [\"caps(BIS)\"]"
                } else {
                    "its includes hold no terms either: give it terms, e.g. en = [\"export ban\"]"
                };
                let at = d.at;
                self.err(
                    errors,
                    at,
                    &format!("set `{name}` has no terms"),
                    Some(hint),
                );
            }
            resolved.insert(name.clone(), Arc::from(out));
        }
        self.resolved = resolved;
    }

    #[allow(clippy::too_many_arguments)]
    fn flatten<'a>(
        &'a self,
        name: &'a str,
        arcs: &HashMap<&str, (Arc<str>, Arc<str>, f64)>,
        path: &mut Vec<&'a str>,
        seen: &mut HashSet<&'a str>,
        out: &mut Vec<Resolved>,
        errors: &mut Vec<String>,
        cycles: &mut HashSet<Vec<String>>,
    ) {
        if !seen.insert(name) {
            return;
        }
        let d = &self.defs[name];
        let (set, concept, weight) = &arcs[name];
        for t in &d.terms {
            out.push(Resolved {
                term: t.clone(),
                set: set.clone(),
                concept: concept.clone(),
                weight: *weight,
            });
        }
        for (inc, at) in &d.include {
            if !self.defs.contains_key(inc) {
                if path.len() == 1 {
                    let hint = match closest(inc, self.defs.keys().map(String::as_str)) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => "define it as [sets.NAME] or remove it from include".into(),
                    };
                    self.err(
                        errors,
                        *at,
                        &format!("set `{name}` includes unknown set `{inc}`"),
                        Some(&hint),
                    );
                }
                continue;
            }
            if let Some(i) = path.iter().position(|p| p == inc) {
                let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
                cycle.push(inc.clone());
                let mut key = cycle[..cycle.len() - 1].to_vec();
                key.sort();
                if cycles.insert(key) {
                    self.err(
                        errors,
                        *at,
                        &format!("include cycle: {}", cycle.join(" → ")),
                        Some("a set cannot include itself, directly or through others: remove one of these includes"),
                    );
                }
                continue;
            }
            path.push(inc);
            self.flatten(inc, arcs, path, seen, out, errors, cycles);
            path.pop();
        }
    }

    /// The terms of `@name`, own and included; `None` for an unknown set.
    pub fn terms(&self, name: &str) -> Option<&Arc<[Resolved]>> {
        self.resolved.get(name)
    }

    /// Up to three known set names closest to `name` (for "did you mean").
    pub fn closest(&self, name: &str) -> Vec<&str> {
        let mut v: Vec<(usize, &str)> = self
            .defs
            .keys()
            .map(|k| (distance(name, k), k.as_str()))
            .filter(|(d, k)| *d <= (k.chars().count() / 3).max(2))
            .collect();
        v.sort();
        v.into_iter().take(3).map(|(_, k)| k).collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    /// Warnings for sets of the user's config that no watch uses, directly or through an
    /// include of a used set (`used`: the sets the watches name).
    pub fn unused_warnings<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut reach: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = used.into_iter().collect();
        while let Some(n) = stack.pop() {
            if let Some((k, d)) = self.defs.get_key_value(n) {
                if reach.insert(k.as_str()) {
                    stack.extend(d.include.iter().map(|(i, _)| i.as_str()));
                }
            }
        }
        self.defs
            .iter()
            .filter(|(n, d)| d.user && !reach.contains(n.as_str()))
            .map(|(n, d)| {
                self.render(
                    d.at,
                    "warning",
                    &format!("set `{n}` is not used by any watch"),
                    Some(&format!(
                        "use it in a query as @{n}, or remove it (sets.{n})"
                    )),
                )
            })
            .collect()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks one array element against the term syntax: a word, `prefix*`, several words (a
/// phrase), or `caps(...)` around one of those. Returns (text, prefix, caps).
fn check_term(s: &str) -> Result<(String, bool, bool), (String, String)> {
    let split =
        "one term per string: write [\"a\", \"b\"] instead of \"a OR b\"; a set is an OR already";
    let t = s.trim();
    let (inner, caps) = match t.strip_prefix("caps(").and_then(|r| r.strip_suffix(')')) {
        Some(i) => (i.trim(), true),
        None => (t, false),
    };
    if inner.is_empty() {
        return Err(("empty term".into(), "remove the empty string".into()));
    }
    if let Some(c) = inner.chars().find(|c| matches!(c, '(' | ')' | '"' | '@')) {
        return Err((
            format!("`{c}` cannot stand inside a term (`{t}`)"),
            if c == '@' {
                "to take in another set's terms, write include = [\"name\"]".into()
            } else if c == '"' {
                "write several words without quotes: \"entity list\" is a phrase".into()
            } else {
                split.into()
            },
        ));
    }
    for w in inner.split_whitespace() {
        let is_op = matches!(w, "AND" | "OR" | "NOT")
            || w.starts_with("NEAR/")
            || w.starts_with("ONEAR/")
            || (w.starts_with('-') && w.len() > 1);
        if is_op {
            return Err((
                format!("operator `{w}` inside a term (`{t}`)"),
                split.into(),
            ));
        }
        if w.contains('^') {
            return Err((
                format!("a term weight inside a set (`{t}`)"),
                "give the whole set a weight instead: weight = 2".into(),
            ));
        }
    }
    let (body, prefix) = match inner.strip_suffix('*') {
        Some(b) => (b.trim_end(), true),
        None => (inner, false),
    };
    if body.contains('*') {
        return Err((
            format!("`*` in the middle of `{t}`"),
            "a wildcard may only end a term: export contr*".into(),
        ));
    }
    if !body.chars().any(char::is_alphanumeric) {
        return Err((
            format!("term `{t}` has no letters or digits to search for"),
            "remove it".into(),
        ));
    }
    if prefix {
        let last = body.split_whitespace().next_back().unwrap_or("");
        let cjk = last.chars().any(crate::text::is_cjk);
        if !cjk && last.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
            return Err((
                format!("wildcard too short: `{t}` would match far too many words"),
                "give at least 3 letters before `*`".into(),
            ));
        }
    }
    Ok((body.to_string(), prefix, caps))
}

/// The closest of `names` to `name` within a small edit distance.
pub fn closest<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
