//! Rendering a digest: matched stories to a subject line, a plain-text part and an HTML part,
//! or to structured log records.
//!
//! In: a [`Digest`] (stories already claimed by `notify` from the store, each story once, with
//! every watch of the digest it matched) and [`RenderLimits`]. Out: [`Rendered`] (for `mail`)
//! or [`LogRecord`]s (for the `log` output). Pure: no I/O, no clock (the digest carries its own
//! `generated_at`). [`why_line`], [`top_stories`] and [`display_link`] are public so other
//! renderers (webhooks) say the same thing.
//!
//! # What people get
//! A morning brief, not a rule author's debug output:
//! - the subject names the top headline and the counts per watch in human words ("Entity List
//!   adds 12 Chinese firms — 8 export controls, 2 AI chips");
//! - **Top stories** first: the 3–5 strongest by verdict score ([`top_stories`]), then the rest
//!   grouped by watch in config order, ranked by score, then recency;
//! - one block per story: the headline linked without tracking parameters
//!   ([`crate::canon::display_url`]), source · local time · language badge, at most two lines of
//!   lead, one "why" line of concepts ("Entity List · Nvidia H20 · China", [`why_line`]), "also
//!   reported by". A story in several watches appears once, with a badge per watch;
//! - highlights only on *specific* evidence ([`is_specific`]): never on US, China, rules;
//! - [`Detail::Analyst`] adds the matched terms and the score for rule authors.
//!
//! # Size budget
//! The whole message stays under [`MAX_MESSAGE_BYTES`] (Gmail clips at ~102 KB and hides what
//! follows). Stories are laid out in order of importance (top stories, then the watches in turn)
//! as full blocks while they fit and `max_stories` allows, then as compact lines (headline +
//! source) while those fit; whatever is left is *not in the message*: [`Rendered::deferred`]
//! lists it so `notify` hands it back to the store for the next digest, and the message says
//! "N more stories will come in the next digest". Layout is a prefix of that order, so
//! rendering only the stories that fitted gives the same message again.
//!
//! # Untrusted input
//! Every string from a feed may contain markup, quotes, CR/LF, control and bidi-override
//! characters, and evidence ranges that are out of bounds or not on a char boundary (the
//! classifier computed them on text we may not have). So: control characters are removed and
//! whitespace collapsed before anything else ([`clean_line`]); everything is HTML-escaped,
//! attributes included; only absolute http(s) URLs without credentials become links; ranges
//! are clamped and snapped to char boundaries; every string is cut to a bounded length;
//! language codes are accepted only as letters and hyphens. Nothing here can panic on feed
//! data. The subject can never contain CR, LF or bidi controls.
//!
//! # HTML for mail clients
//! Gmail, Outlook (Word engine) and Apple Mail agree on little: nested tables with
//! `role="presentation"`, inline styles for everything that must hold (the `<style>` block
//! only *adds* dark mode and phone padding), no scripts, no remote images, system fonts, a
//! 640px column that shrinks on phones and is fixed by an MSO conditional table in Outlook
//! desktop. Every element that sets a background also sets its text colour, so clients that
//! invert colours on their own (Outlook.com, Gmail apps) invert both and keep the contrast.
//! A hidden preheader carries the top headline for the inbox preview line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::item::{Evidence, Field};

/// Product name used in subjects and footers.
pub const APP_NAME: &str = "policywatch";
/// Subject length bound, in characters (RFC 5322 recommends lines under 78; encoded words
/// wrap, but a subject longer than this is unreadable in any inbox anyway).
pub const MAX_SUBJECT_CHARS: usize = 150;
/// The whole message, encoded, stays under this: Gmail clips messages at about 102 KB.
pub const MAX_MESSAGE_BYTES: usize = 100_000;
/// Room for the mail headers and the MIME structure around the two parts.
const MIME_RESERVE: usize = 4_000;
/// Encoded size per raw byte, worst case: lettre picks the smaller of quoted-printable and
/// base64, and base64 with its line breaks (and CRLF line ends) costs under 1.4.
const ENCODING_FACTOR: f64 = 1.4;
/// Top stories: at least this many when the digest has more stories than that...
pub const TOP_MIN: usize = 3;
/// ...and at most this many.
pub const TOP_MAX: usize = 5;
/// Share of the story budget full blocks may take (the rest is for compact lines), percent.
const FULL_SHARE_PERCENT: usize = 65;
/// Concepts on a "why" line.
const WHY_MAX: usize = 4;
/// A set's weight when nothing says otherwise (the term-set default): generic words.
pub const GENERIC_WEIGHT: f64 = 1.0;
/// The weight a term written directly in a query gets when it looks specific (see
/// [`is_specific`]).
const SPECIFIC_TERM_WEIGHT: f64 = 2.0;
/// Bounds on strings shown from feeds, in characters.
const MAX_TITLE_CHARS: usize = 300;
const MAX_NAME_CHARS: usize = 120;
const MAX_PROBLEM_CHARS: usize = 400;
const MAX_TERM_CHARS: usize = 80;
const MAX_CONCEPT_CHARS: usize = 48;
const MAX_CONTACT_CHARS: usize = 200;
/// Links longer than this are shown as text only: real article URLs are far shorter, and a
/// huge one bloats every message it appears in.
const MAX_URL_BYTES: usize = 2048;
/// Evidence entries considered per story: beyond this they add nothing to a snippet.
const MAX_EVIDENCE: usize = 64;
/// Other sources listed per story.
const MAX_ALSO_REPORTED: usize = 8;
/// Feed problems listed per digest, and the bytes they may take of the budget.
const MAX_FEED_PROBLEMS: usize = 100;
const MAX_HEALTH_BYTES: usize = 12_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// A scheduled digest covering every new story of its watches.
    Digest,
    /// An immediate alert for one watch.
    Alert,
}

impl DigestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DigestKind::Digest => "digest",
            DigestKind::Alert => "alert",
        }
    }
}

/// How much of the classifier's reasoning a digest shows (`detail` in `[[digests]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// Concepts in words ("Entity List · Nvidia H20"), no terms, no scores.
    #[default]
    Reader,
    /// Also every matched term with its fields, and the score: for rule authors.
    Analyst,
}

impl Detail {
    pub fn parse(s: &str) -> Option<Detail> {
        match s {
            "reader" => Some(Detail::Reader),
            "analyst" => Some(Detail::Analyst),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Digest {
    /// Digest id from config, e.g. "daily".
    pub id: String,
    /// Heading, e.g. "policywatch daily digest".
    pub title: String,
    pub generated_at: DateTime<Utc>,
    /// Times are shown in this zone.
    pub timezone: Tz,
    /// One per watch, in config order; a story is in the section of its first watch.
    pub sections: Vec<Section>,
    /// Failing, moved and gone feeds (empty unless the digest shows feed health).
    pub feed_health: Vec<FeedProblem>,
    pub kind: DigestKind,
    pub detail: Detail,
    /// Who readers write to about the digest (`contact`), shown in the footer.
    pub contact: Option<String>,
    /// Stories held back from this delivery for the next digest before this render (a resend
    /// of a delivery whose overflow was already handed back still says so).
    pub deferred: usize,
}

#[derive(Debug, Clone)]
pub struct Section {
    pub watch_id: String,
    pub watch_name: String,
    pub stories: Vec<Story>,
}

#[derive(Debug, Clone)]
pub struct Story {
    pub item_id: i64,
    pub title: String,
    pub link: Option<String>,
    pub feed_name: String,
    pub published: Option<DateTime<Utc>>,
    /// Plain text from the item: its summary, or its content when it has no summary.
    pub summary: String,
    /// Which item field `summary` holds ([`Field::Summary`] or [`Field::Content`]): evidence on
    /// that field is what the snippet highlights.
    pub summary_field: Field,
    /// The strongest verdict of the story in this digest (the term sets' strength ranking).
    pub score: f64,
    /// Byte ranges into the item's original title/summary/content.
    pub evidence: Vec<Evidence>,
    /// Other sources of the same story: (feed name, link).
    pub also_reported: Vec<(String, Option<String>)>,
    /// ISO 639-1 code of the story's language, when known.
    pub lang: Option<String>,
    /// Ids of every watch of the digest the story matched, in digest order. Empty means just
    /// the watch of its section.
    pub watches: Vec<String>,
    /// Weights of the term sets its evidence came from.
    pub weights: SetWeights,
}

impl Default for Story {
    fn default() -> Self {
        Story {
            item_id: 0,
            title: String::new(),
            link: None,
            feed_name: String::new(),
            published: None,
            summary: String::new(),
            summary_field: Field::Summary,
            score: 0.0,
            evidence: Vec::new(),
            also_reported: Vec::new(),
            lang: None,
            watches: Vec::new(),
            weights: SetWeights::default(),
        }
    }
}

/// Term-set name → weight (the sets' `weight`, default [`GENERIC_WEIGHT`]), shared by every
/// story of a digest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetWeights(Arc<HashMap<String, f64>>);

impl SetWeights {
    pub fn new(map: HashMap<String, f64>) -> SetWeights {
        SetWeights(Arc::new(map))
    }

    /// How strong one piece of evidence is. A term from a known set has the set's weight; a term
    /// written directly in a query (or from a set we have no weight for) gets
    /// `SPECIFIC_TERM_WEIGHT` when it looks specific — a phrase of ten letters or more
    /// ("entity list"; not Vietnamese "trung quoc"), a name with a digit (H20, MI300X), four or
    /// more CJK characters (实体清单) — else [`GENERIC_WEIGHT`].
    pub fn weight(&self, e: &Evidence) -> f64 {
        if let Some(w) = e.set.as_deref().and_then(|s| self.0.get(s)) {
            return *w;
        }
        if looks_specific(&e.term) {
            SPECIFIC_TERM_WEIGHT
        } else {
            GENERIC_WEIGHT
        }
    }
}

fn looks_specific(term: &str) -> bool {
    let t = term.trim().trim_matches('"').trim_end_matches('*');
    let t = t
        .strip_prefix("caps(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(t);
    let cjk = t.chars().filter(|c| is_cjk(*c)).count();
    // A phrase names a thing ("entity list", "export controls", "danh sach thuc the"); a short
    // one is usually one common word of a language that writes syllables apart (Vietnamese
    // "trung quoc", "ban dan", "cong nghe"), so phrases count from ten letters.
    let letters = t.chars().filter(|c| c.is_alphabetic()).count();
    (t.trim().contains(' ') && letters >= 10) || t.chars().any(|c| c.is_ascii_digit()) || cjk >= 4
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// Specific evidence — an instrument, a product, a company — is what gets highlighted and leads
/// the "why" line: a weight above [`GENERIC_WEIGHT`] (sets: `weight` above the default 1.0;
/// direct terms: see [`SetWeights::weight`]).
pub fn is_specific(s: &Story, e: &Evidence) -> bool {
    s.weights.weight(e) > GENERIC_WEIGHT
}

#[derive(Debug, Clone)]
pub struct FeedProblem {
    pub feed_name: String,
    pub url: String,
    /// E.g. "failing for 3 polls: 503", "moved permanently to <url>: update the config".
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// Stories shown as full blocks, across watches; the rest are listed compactly while the
    /// size budget allows.
    pub max_stories: usize,
    /// Lead length in characters (about two lines).
    pub snippet_chars: usize,
    /// The encoded message, headers included, stays under this many bytes.
    pub max_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            max_stories: 150,
            snippet_chars: 180,
            max_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One line, no CR/LF, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Stories shown as full blocks.
    pub shown: usize,
    /// Stories listed compactly (headline and source).
    pub listed: usize,
    /// Stories not in the message: `deferred.len()`.
    pub trimmed: usize,
    /// The lead item ids of the stories that did not fit: they belong to the next digest.
    pub deferred: Vec<i64>,
}

/// One structured record for the `log` output. Strings are cleaned like the mail parts, so a
/// title cannot forge extra log lines.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    Story(LogStory),
    FeedProblem {
        digest_id: String,
        feed_name: String,
        url: String,
        problem: String,
    },
    /// Last record of a digest.
    Summary {
        digest_id: String,
        kind: DigestKind,
        subject: String,
        shown: usize,
        trimmed: usize,
        /// (watch id, stories in the message, stories held back), in config order.
        per_watch: Vec<(String, usize, usize)>,
        feed_problems: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogStory {
    pub digest_id: String,
    pub watch_id: String,
    pub item_id: i64,
    pub title: String,
    /// Only http(s) links, without tracking parameters.
    pub link: Option<String>,
    pub feed_name: String,
    pub published: Option<DateTime<Utc>>,
    pub score: f64,
    /// The reader's "why" line.
    pub why: String,
    /// "term (field, field)" entries, as in the analyst's "matched" line.
    pub matched: String,
}

/// Renders the digest for mail, within `limits.max_bytes`.
pub fn render(d: &Digest, limits: &RenderLimits) -> Rendered {
    let layout = Layout::new(d, limits);
    let subject = subject(d, &layout);
    let text = assemble_text(d, &layout);
    let html = assemble_html(d, &layout, &subject);
    Rendered {
        subject,
        text,
        html,
        shown: layout.full,
        listed: layout.compact,
        trimmed: layout.deferred.len(),
        deferred: layout.deferred.iter().map(|s| s.item_id).collect(),
    }
}

/// One record per story in the message, one per feed problem, then a summary.
pub fn log_lines(d: &Digest, limits: &RenderLimits) -> Vec<LogRecord> {
    let layout = Layout::new(d, limits);
    let mut out = Vec::with_capacity(layout.full + layout.compact + d.feed_health.len() + 1);
    let mut per_watch: Vec<(String, usize, usize)> = d
        .sections
        .iter()
        .map(|s| (clean_short(&s.watch_id, MAX_NAME_CHARS), 0, 0))
        .collect();
    for b in layout.in_message() {
        per_watch[b.section].1 += 1;
        let s = b.story;
        out.push(LogRecord::Story(LogStory {
            digest_id: clean_short(&d.id, MAX_NAME_CHARS),
            watch_id: clean_short(&d.sections[b.section].watch_id, MAX_NAME_CHARS),
            item_id: s.item_id,
            title: clean_short(&s.title, MAX_TITLE_CHARS),
            link: display_link(s),
            feed_name: clean_short(&s.feed_name, MAX_NAME_CHARS),
            published: s.published,
            score: s.score,
            why: why_line(s),
            matched: terms_text(&s.evidence),
        }));
    }
    for &(si, _) in &layout.deferred_at {
        per_watch[si].2 += 1;
    }
    for p in d.feed_health.iter().take(MAX_FEED_PROBLEMS) {
        out.push(LogRecord::FeedProblem {
            digest_id: clean_short(&d.id, MAX_NAME_CHARS),
            feed_name: clean_short(&p.feed_name, MAX_NAME_CHARS),
            url: clean_short(&p.url, MAX_URL_BYTES),
            problem: clean_short(&p.problem, MAX_PROBLEM_CHARS),
        });
    }
    out.push(LogRecord::Summary {
        digest_id: clean_short(&d.id, MAX_NAME_CHARS),
        kind: d.kind,
        subject: subject(d, &layout),
        shown: layout.full + layout.compact,
        trimmed: layout.deferred.len(),
        per_watch,
        feed_problems: d.feed_health.len(),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// What a reader is told about one story: shared with the other renderers.

/// The story's link as shown: an http(s) URL without credentials and without tracking
/// parameters, or `None`.
pub fn display_link(s: &Story) -> Option<String> {
    let raw = s.link.as_deref()?;
    safe_url(&crate::canon::display_url(raw)?)
}

/// The concepts a story matched, strongest first, in words a reader understands: each term
/// set's label (`concept`), and where a term has none, the text it matched when that evidence
/// is specific ("H20", "Entity List"). A label of a class of products names the model found
/// ("AI accelerator (H20)"); only the strongest tier present is named: specific concepts when
/// there are any, else generic words, else context ("government"). Never the term list, never a score. When nothing is specific and
/// nothing has a label, the matched words themselves, at most three.
pub fn why_concepts(s: &Story) -> Vec<String> {
    // (key, label, weight, order of appearance); one entry per concept.
    let mut found: Vec<(String, String, f64, usize)> = Vec::new();
    let mut fallback: Vec<String> = Vec::new();
    let push = |list: &mut Vec<(String, String, f64, usize)>,
                key: &str,
                label: String,
                w: f64,
                i: usize| {
        if label.is_empty() {
            return;
        }
        let key = key.to_lowercase();
        match list.iter_mut().find(|(k, ..)| *k == key) {
            Some(entry) => entry.2 = entry.2.max(w),
            None => list.push((key, label, w, i)),
        }
    };
    // Title evidence first: what the headline says is what the story is about.
    let mut ev: Vec<(usize, &Evidence)> =
        s.evidence.iter().take(MAX_EVIDENCE).enumerate().collect();
    ev.sort_by_key(|(i, e)| (e.field != Field::Title, *i));
    for (i, e) in ev {
        let w = s.weights.weight(e);
        let text = matched_text(s, e);
        if let Some(c) = e.concept.as_deref() {
            let c = clean_short(c, MAX_CONCEPT_CHARS);
            // A class of products ("AI accelerator") names the model it found: "(H20)".
            let label = match &text {
                Some(t)
                    if t.chars().any(|ch| ch.is_ascii_digit())
                        && !c.to_lowercase().contains(&t.to_lowercase()) =>
                {
                    format!("{c} ({t})")
                }
                _ => c.clone(),
            };
            push(&mut found, &c, label, w, i);
        } else if let Some(text) = text {
            if w > GENERIC_WEIGHT {
                push(&mut found, &text.clone(), text, w, i);
            } else if fallback.len() < 3
                && !fallback
                    .iter()
                    .any(|f| f.to_lowercase() == text.to_lowercase())
            {
                fallback.push(text);
            }
        }
    }
    if found.is_empty() {
        return fallback;
    }
    // The strongest tier present: specific concepts when there are any, else generic words,
    // else context ("government").
    if found.iter().any(|f| f.2 > GENERIC_WEIGHT) {
        found.retain(|f| f.2 > GENERIC_WEIGHT);
    } else if found.iter().any(|f| f.2 >= GENERIC_WEIGHT) {
        found.retain(|f| f.2 >= GENERIC_WEIGHT);
    }
    found.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.3.cmp(&b.3)));
    // "H20" says nothing "Nvidia H20" does not: a label inside another is one concept, named
    // by the longer.
    let mut out: Vec<String> = Vec::new();
    for (_, label, _, _) in found {
        let low = label.to_lowercase();
        if out.iter().any(|o| o.to_lowercase().contains(&low)) {
            continue;
        }
        // Two classes that found the same model ("… (H20)"): the stronger names it.
        if let Some(model) = low.rfind(" (").map(|k| &low[k..]) {
            if out.iter().any(|o| o.to_lowercase().ends_with(model)) {
                continue;
            }
        }
        if let Some(o) = out.iter_mut().find(|o| low.contains(&o.to_lowercase())) {
            *o = label;
            continue;
        }
        out.push(label);
    }
    out.truncate(WHY_MAX);
    out
}

/// [`why_concepts`] as one line: "Entity List · Nvidia H20 · China".
pub fn why_line(s: &Story) -> String {
    why_concepts(s).join(" · ")
}

/// The text one piece of evidence matched, cleaned and bounded, when the story carries that
/// field's text.
fn matched_text(s: &Story, e: &Evidence) -> Option<String> {
    let text = if e.field == Field::Title {
        &s.title
    } else if e.field == s.summary_field {
        &s.summary
    } else {
        return None;
    };
    let a = floor_char_boundary(text, e.start);
    let b = ceil_char_boundary(text, e.end);
    if a >= b {
        return None;
    }
    let t = clean_short(&text[a..b], MAX_CONCEPT_CHARS);
    (!t.is_empty()).then_some(t)
}

/// The strongest stories of the digest, best first: [`TOP_MIN`]–[`TOP_MAX`] of them (a third
/// of the digest, within those bounds), none when the digest has no more than [`TOP_MIN`]
/// stories (they are all on top anyway) or is an alert.
pub fn top_stories(d: &Digest) -> Vec<&Story> {
    let all: Vec<&Story> = d.sections.iter().flat_map(|s| &s.stories).collect();
    let k = top_count(d, all.len() + d.deferred).min(all.len());
    let mut all = all;
    if k > 0 && k < all.len() {
        all.select_nth_unstable_by(k - 1, |a, b| rank(a, b));
    }
    all.truncate(k);
    all.sort_by(|a, b| rank(a, b));
    all
}

fn top_count(d: &Digest, n: usize) -> usize {
    if d.kind == DigestKind::Alert || n <= TOP_MIN {
        0
    } else {
        (n / 3).clamp(TOP_MIN, TOP_MAX)
    }
}

/// The stories `d` shows under `limits` — the same fair share and ranking as the mail — per
/// section in order, with how many of each section are left out. For outputs rendered
/// elsewhere (`webhook`).
pub fn selection<'a>(
    d: &'a Digest,
    limits: &RenderLimits,
) -> Vec<(&'a Section, Vec<&'a Story>, usize)> {
    let layout = Layout::new(d, limits);
    d.sections
        .iter()
        .enumerate()
        .map(|(i, section)| {
            let shown: Vec<&Story> = layout
                .top
                .iter()
                .filter(|b| b.section == i)
                .chain(&layout.full_by_section[i])
                .chain(&layout.compact_by_section[i])
                .map(|b| b.story)
                .collect();
            let more = layout.deferred_at.iter().filter(|(s, _)| *s == i).count();
            (section, shown, more)
        })
        .collect()
}

/// The subject line the mail would carry, for outputs that need a one-line title.
pub fn subject_line(d: &Digest, limits: &RenderLimits) -> String {
    subject(d, &Layout::new(d, limits))
}

/// What ranks a story in a digest: its score, its time and its lead item's id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankKey {
    pub score: f64,
    pub published: Option<DateTime<Utc>>,
    pub item_id: i64,
}

impl RankKey {
    pub fn of(s: &Story) -> RankKey {
        RankKey {
            score: s.score,
            published: s.published,
            item_id: s.item_id,
        }
    }

    /// Higher score first (NaN last), then newer first (undated last), then item id for
    /// stability: the order of the top stories and of every section.
    pub fn rank(&self, other: &RankKey) -> std::cmp::Ordering {
        let key = |k: &RankKey| {
            if k.score.is_nan() {
                f64::NEG_INFINITY
            } else {
                k.score
            }
        };
        key(other)
            .total_cmp(&key(self))
            .then_with(|| other.published.cmp(&self.published))
            .then_with(|| self.item_id.cmp(&other.item_id))
    }
}

fn rank(a: &Story, b: &Story) -> std::cmp::Ordering {
    RankKey::of(a).rank(&RankKey::of(b))
}

/// A story's watches, in digest order: its `watches`, or its section's.
fn watches_of<'a>(d: &'a Digest, section: usize, s: &'a Story) -> Vec<&'a str> {
    if s.watches.is_empty() {
        vec![d.sections[section].watch_id.as_str()]
    } else {
        s.watches.iter().map(String::as_str).collect()
    }
}

fn watch_name<'a>(d: &'a Digest, id: &'a str) -> &'a str {
    d.sections
        .iter()
        .find(|s| s.watch_id == id)
        .map_or(id, |s| s.watch_name.as_str())
}

/// A language code safe to put in an attribute and worth showing: 2–8 ASCII letters, with
/// optional `-` subtags (`zh-Hant`). Anything else is treated as unknown.
fn lang_code(s: &Story) -> Option<&str> {
    let l = s.lang.as_deref()?.trim();
    let ok = (2..=12).contains(&l.len())
        && l.split('-')
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && l.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    ok.then_some(l)
}

// ---------------------------------------------------------------------------------------------
// Layout: which stories are in the message and how, within the size budget.

/// One story placed in the message, with its rendered HTML and text.
struct Block<'a> {
    story: &'a Story,
    /// Index of the section it is listed under.
    section: usize,
    html: String,
    text: String,
}

struct Layout<'a> {
    top: Vec<Block<'a>>,
    /// Per section: full blocks, then compact lines, both in rank order.
    full_by_section: Vec<Vec<Block<'a>>>,
    compact_by_section: Vec<Vec<Block<'a>>>,
    /// Stories not in the message, in layout order.
    deferred: Vec<&'a Story>,
    /// (section, item id) of each deferred story.
    deferred_at: Vec<(usize, i64)>,
    full: usize,
    compact: usize,
    /// Stories of the digest per watch, counted once per watch they matched (subject, overview).
    per_watch: Vec<usize>,
    /// Bytes the feed-health section may use.
    health_lines: usize,
}

impl<'a> Layout<'a> {
    fn new(d: &'a Digest, limits: &RenderLimits) -> Layout<'a> {
        let n_sections = d.sections.len();
        // Everything, ranked once; the top is its head, each section's list the rest in order.
        let mut all: Vec<(usize, &Story)> = d
            .sections
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.stories.iter().map(move |st| (i, st)))
            .collect();
        all.sort_by(|a, b| rank(a.1, b.1));
        // Counted with the stories handed back earlier, so a resend has the same top.
        let k = top_count(d, all.len() + d.deferred).min(all.len());
        let mut per_section: Vec<Vec<&Story>> = vec![Vec::new(); n_sections];
        for &(i, s) in &all[k..] {
            per_section[i].push(s);
        }
        // Layout order: the top, then one story of each watch in turn, so a noisy watch cannot
        // take the whole budget from a quiet one.
        let mut order: Vec<(usize, &Story, bool)> =
            all[..k].iter().map(|&(i, s)| (i, s, true)).collect();
        let longest = per_section.iter().map(Vec::len).max().unwrap_or(0);
        for r in 0..longest {
            for (i, list) in per_section.iter().enumerate() {
                if let Some(s) = list.get(r) {
                    order.push((i, s, false));
                }
            }
        }

        // The budget for the two parts' raw bytes, after the fixed parts of the message.
        let raw_budget =
            (limits.max_bytes.saturating_sub(MIME_RESERVE) as f64 / ENCODING_FACTOR) as usize;
        let health_lines = health_fit(d);
        let fixed = skeleton_bytes(d, health_lines, order.first().map(|&(_, s, _)| s));
        let mut left = raw_budget.saturating_sub(fixed);
        // Full blocks may take this much of the room; the rest is kept for compact lines, so a
        // long digest lists many headlines rather than ending after a few long blocks.
        let full_floor = left - left * FULL_SHARE_PERCENT / 100;

        let mut layout = Layout {
            top: Vec::new(),
            full_by_section: (0..n_sections).map(|_| Vec::new()).collect(),
            compact_by_section: (0..n_sections).map(|_| Vec::new()).collect(),
            deferred: Vec::new(),
            deferred_at: Vec::new(),
            full: 0,
            compact: 0,
            per_watch: Vec::new(),
            health_lines,
        };
        let mut compact_mode = false;
        let mut stopped = false;
        for (si, s, is_top) in order {
            if stopped {
                layout.deferred.push(s);
                layout.deferred_at.push((si, s.item_id));
                continue;
            }
            if !compact_mode && layout.full < limits.max_stories {
                let mut b = Block {
                    story: s,
                    section: si,
                    html: String::new(),
                    text: String::new(),
                };
                story_html(&mut b.html, d, si, s, limits, is_top);
                story_text(&mut b.text, d, si, s, limits, is_top);
                let cost = b.html.len() + b.text.len();
                if cost <= left.saturating_sub(full_floor) {
                    left -= cost;
                    layout.full += 1;
                    if is_top {
                        layout.top.push(b);
                    } else {
                        layout.full_by_section[si].push(b);
                    }
                    continue;
                }
            }
            // From the first story that is not a full block on, the rest are compact lines: the
            // compact list of a section always follows its full blocks.
            compact_mode = true;
            let mut b = Block {
                story: s,
                section: si,
                html: String::new(),
                text: String::new(),
            };
            compact_html(&mut b.html, d, s);
            compact_text(&mut b.text, d, s);
            let cost = b.html.len() + b.text.len();
            if cost <= left {
                left -= cost;
                layout.compact += 1;
                layout.compact_by_section[si].push(b);
            } else {
                // Stop at the first story that does not fit, even if a shorter one later
                // would: what is in the message is then a prefix of the layout order, so the
                // same stories render to the same message on a resend.
                stopped = true;
                layout.deferred.push(s);
                layout.deferred_at.push((si, s.item_id));
            }
        }
        // Counted once per watch a story matched, over what is in the message: a resend of
        // the stories that fitted gives the same subject.
        let index: HashMap<&str, usize> = d
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| (s.watch_id.as_str(), i))
            .collect();
        let mut per_watch = vec![0usize; n_sections];
        for b in layout.in_message() {
            for w in watches_of(d, b.section, b.story) {
                if let Some(&j) = index.get(w) {
                    per_watch[j] += 1;
                }
            }
        }
        layout.per_watch = per_watch;
        layout
    }

    fn in_message(&self) -> impl Iterator<Item = &Block<'a>> {
        self.top.iter().chain(
            self.full_by_section
                .iter()
                .zip(&self.compact_by_section)
                .flat_map(|(f, c)| f.iter().chain(c.iter())),
        )
    }

    /// Stories that will come in a later digest: held back now and before.
    fn later(&self, d: &Digest) -> usize {
        self.deferred.len() + d.deferred
    }
}

/// Feed problems shown: as many as fit in [`MAX_HEALTH_BYTES`] (at most [`MAX_FEED_PROBLEMS`]).
fn health_fit(d: &Digest) -> usize {
    let mut used = 0;
    let mut n = 0;
    for p in d.feed_health.iter().take(MAX_FEED_PROBLEMS) {
        // Both parts, escaped (at most 6 bytes per character for `&quot;`), with markup.
        let cost = 2
            * (p.feed_name.len().min(MAX_NAME_CHARS * 4)
                + p.url.len().min(MAX_URL_BYTES)
                + p.problem.len().min(MAX_PROBLEM_CHARS * 4))
            + 200;
        if used + cost > MAX_HEALTH_BYTES {
            break;
        }
        used += cost;
        n += 1;
    }
    n
}

/// An upper bound on everything but the stories: head and styles (with the longest subject),
/// the preheader (the headline: `headline`'s title, the first story of the layout order),
/// heading, section and compact-list headings, feed health, the "more next time" line and the
/// footer, in both parts. Only the headline's title counts of the stories', so the budget is
/// the same for any digest whose layout order starts the same (`notify` claims no more of a
/// backlog than the message reaches).
fn skeleton_bytes(d: &Digest, health_lines: usize, headline: Option<&Story>) -> usize {
    let escaped = |s: &str| {
        let mut out = String::new();
        esc(&mut out, s);
        out.len()
    };
    let mut probe = String::new();
    html_head(&mut probe, d, &"&".repeat(MAX_SUBJECT_CHARS), "");
    let headline = headline.map_or(0, |s| s.title.len().min(MAX_TITLE_CHARS * 4));
    let sections: usize = d
        .sections
        .iter()
        .map(|s| 2 * escaped(&clean_short(&s.watch_name, MAX_NAME_CHARS)) + 1_000)
        .sum();
    let health: usize = d
        .feed_health
        .iter()
        .take(health_lines)
        .map(|p| {
            2 * (p.feed_name.len().min(MAX_NAME_CHARS * 4)
                + p.url.len().min(MAX_URL_BYTES)
                + p.problem.len().min(MAX_PROBLEM_CHARS * 4))
                + 200
        })
        .sum();
    let fixed = 2 * escaped(&footer(d)) + 2 * escaped(&heading(d)) + 6 * headline + 1_500;
    probe.len() + sections + health + fixed
}

// ---------------------------------------------------------------------------------------------
// Subject.

/// A watch name as it reads in a count: "8 export controls", "2 AI chips" (the first letter
/// is lowered unless the word is an acronym).
fn count_name(name: &str) -> String {
    let name = clean_short(name, 40);
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && !b.is_uppercase() => {
            a.to_lowercase().chain(name.chars().skip(1)).collect()
        }
        _ => name,
    }
}

fn subject(d: &Digest, layout: &Layout<'_>) -> String {
    let first = layout
        .top
        .first()
        .or_else(|| layout.in_message().next())
        .map(|b| clean_line(&b.story.title));
    let body = match d.kind {
        DigestKind::Alert => match first {
            Some(title) => {
                let total = layout.full + layout.compact + layout.later(d);
                let more = total.saturating_sub(1);
                let watch = layout
                    .in_message()
                    .next()
                    .map(|b| count_name(watch_name(d, &d.sections[b.section].watch_id)))
                    .unwrap_or_default();
                let tail = if more > 0 {
                    format!(" — {watch} (+{more} more)")
                } else {
                    format!(" — {watch}")
                };
                headline_then(&format!("Alert: {title}"), &tail)
            }
            None => format!("{APP_NAME} alert: no stories"),
        },
        DigestKind::Digest => {
            let mut counts: Vec<String> = d
                .sections
                .iter()
                .zip(&layout.per_watch)
                .filter(|(_, &n)| n > 0)
                .map(|(s, n)| format!("{n} {}", count_name(&s.watch_name)))
                .collect();
            if !d.feed_health.is_empty() {
                let n = d.feed_health.len();
                counts.push(format!("{n} feed problem{}", plural(n)));
            }
            let counts = counts.join(", ");
            match first {
                Some(title) => headline_then(&title, &format!(" — {counts}")),
                None => {
                    let date = d.generated_at.with_timezone(&d.timezone).format("%-d %b");
                    let sep = if counts.is_empty() { "" } else { ", " };
                    format!("{APP_NAME}: no new stories{sep}{counts} — {date}")
                }
            }
        }
    };
    truncate_chars(&clean_line(&body), MAX_SUBJECT_CHARS)
}

/// `headline` cut so that `tail` (the counts) always fits in the subject.
fn headline_then(headline: &str, tail: &str) -> String {
    let tail = truncate_chars(tail, MAX_SUBJECT_CHARS / 2);
    let room = MAX_SUBJECT_CHARS.saturating_sub(tail.chars().count());
    format!("{}{tail}", truncate_chars(headline, room))
}

// ---------------------------------------------------------------------------------------------
// Plain text: the same brief as the HTML.

fn story_text(
    t: &mut String,
    d: &Digest,
    si: usize,
    s: &Story,
    limits: &RenderLimits,
    is_top: bool,
) {
    let _ = write!(t, "\n* {}", clean_short(&s.title, MAX_TITLE_CHARS));
    let badges = badges(d, si, s, is_top);
    if !badges.is_empty() {
        let _ = write!(t, "  [{}]", badges.join("] ["));
    }
    t.push('\n');
    if let Some(u) = display_link(s) {
        let _ = writeln!(t, "  {u}");
    }
    let _ = writeln!(t, "  {}", source_line(s, d.timezone));
    let snip = snippet(s, limits.snippet_chars);
    if !snip.is_empty() {
        t.push_str("  ");
        snip.write_text(t);
        t.push('\n');
    }
    let why = why_line(s);
    if !why.is_empty() {
        let _ = writeln!(t, "  Why: {why}");
    }
    if d.detail == Detail::Analyst {
        let _ = writeln!(
            t,
            "  Matched: {} · score {:.2}",
            terms_text(&s.evidence),
            s.score
        );
    }
    if !s.also_reported.is_empty() {
        let _ = writeln!(t, "  Also reported by: {}", also_text(&s.also_reported));
    }
}

fn compact_text(t: &mut String, d: &Digest, s: &Story) {
    let _ = write!(
        t,
        "- {} — {}",
        clean_short(&s.title, MAX_TITLE_CHARS),
        clean_short(&s.feed_name, MAX_NAME_CHARS)
    );
    let _ = d;
    if let Some(u) = display_link(s) {
        let _ = write!(t, " <{u}>");
    }
    t.push('\n');
}

fn assemble_text(d: &Digest, layout: &Layout<'_>) -> String {
    let mut t = String::with_capacity(4096 + layout.full * 500 + layout.compact * 150);
    let _ = writeln!(t, "{}", heading(d));
    let _ = writeln!(t, "{}", overview(d, layout));
    if !layout.top.is_empty() {
        let _ = writeln!(t, "\n== Top stories ==");
        for b in &layout.top {
            t.push_str(&b.text);
        }
    }
    for (si, sec) in d.sections.iter().enumerate() {
        let (full, compact) = (&layout.full_by_section[si], &layout.compact_by_section[si]);
        if full.is_empty() && compact.is_empty() {
            if sec.stories.is_empty() && layout.per_watch[si] == 0 && d.kind == DigestKind::Digest {
                // An empty watch of a `send_empty` digest: say so rather than omit it.
                let _ = writeln!(
                    t,
                    "\n== {} ==\n  Nothing new.",
                    clean_short(&sec.watch_name, MAX_NAME_CHARS)
                );
            }
            continue;
        }
        let _ = writeln!(t, "\n== {} ==", section_heading(d, layout, si));
        for b in full {
            t.push_str(&b.text);
        }
        if !compact.is_empty() {
            let _ = writeln!(
                t,
                "\n  More in {}:",
                clean_short(&sec.watch_name, MAX_NAME_CHARS)
            );
            for b in compact {
                t.push_str("  ");
                t.push_str(&b.text);
            }
        }
    }
    let later = layout.later(d);
    if later > 0 {
        let _ = writeln!(t, "\n{}", later_line(later));
    }
    if layout.health_lines > 0 {
        t.push('\n');
        let _ = writeln!(t, "== Feed health ==");
        for p in d.feed_health.iter().take(layout.health_lines) {
            let _ = writeln!(
                t,
                "- {} <{}>: {}",
                clean_short(&p.feed_name, MAX_NAME_CHARS),
                clean_short(&p.url, MAX_URL_BYTES),
                clean_short(&p.problem, MAX_PROBLEM_CHARS)
            );
        }
        if d.feed_health.len() > layout.health_lines {
            let _ = writeln!(
                t,
                "- and {} more",
                d.feed_health.len() - layout.health_lines
            );
        }
    }
    let _ = write!(t, "\n-- \n{}\n", footer(d));
    t
}

/// The digest's title; an alert says it is one (it arrives outside the schedule).
fn heading(d: &Digest) -> String {
    let title = clean_short(&d.title, MAX_TITLE_CHARS);
    match d.kind {
        DigestKind::Digest => title,
        DigestKind::Alert => format!("Immediate alert · {title}"),
    }
}

fn overview(d: &Digest, layout: &Layout<'_>) -> String {
    let total = layout.full + layout.compact + layout.later(d);
    let watches = layout.per_watch.iter().filter(|&&n| n > 0).count();
    format!(
        "{} · {} stor{} in {} watch{}",
        local_time(d.generated_at, d.timezone),
        total,
        if total == 1 { "y" } else { "ies" },
        watches,
        if watches == 1 { "" } else { "es" },
    )
}

fn section_heading(d: &Digest, layout: &Layout<'_>, si: usize) -> String {
    let n = layout.full_by_section[si].len() + layout.compact_by_section[si].len();
    format!(
        "{} — {} stor{}",
        clean_short(&d.sections[si].watch_name, MAX_NAME_CHARS),
        n,
        if n == 1 { "y" } else { "ies" }
    )
}

fn later_line(n: usize) -> String {
    format!(
        "{n} more stor{} will come in the next digest (this one is full).",
        if n == 1 { "y" } else { "ies" }
    )
}

/// Badges of a story: every watch it matched when it matched several, or when it stands in
/// the top stories (which are not grouped by watch).
fn badges(d: &Digest, si: usize, s: &Story, is_top: bool) -> Vec<String> {
    let ws = watches_of(d, si, s);
    if ws.len() < 2 && !(is_top && d.sections.len() > 1) {
        return Vec::new();
    }
    ws.iter()
        .map(|w| clean_short(watch_name(d, w), MAX_NAME_CHARS))
        .collect()
}

fn source_line(s: &Story, tz: Tz) -> String {
    let mut line = clean_short(&s.feed_name, MAX_NAME_CHARS);
    if let Some(p) = s.published {
        let _ = write!(line, " · {}", local_time(p, tz));
    }
    if let Some(l) = lang_code(s) {
        let _ = write!(line, " · {}", l.to_ascii_uppercase());
    }
    line
}

fn footer(d: &Digest) -> String {
    let what = format!(
        "Sent automatically by {APP_NAME} ({} \"{}\").",
        d.kind.as_str(),
        clean_short(&d.id, MAX_NAME_CHARS)
    );
    match d
        .contact
        .as_deref()
        .map(|c| clean_short(c, MAX_CONTACT_CHARS))
    {
        Some(c) if !c.is_empty() => format!("{what} Questions or changes: {c}"),
        _ => format!(
            "{what} To change what you get, edit the watches or the schedule in the {APP_NAME} \
             config."
        ),
    }
}

fn also_text(also: &[(String, Option<String>)]) -> String {
    let mut parts: Vec<String> = also
        .iter()
        .take(MAX_ALSO_REPORTED)
        .map(|(name, link)| {
            let name = clean_short(name, MAX_NAME_CHARS);
            match link
                .as_deref()
                .and_then(crate::canon::display_url)
                .and_then(|u| safe_url(&u))
            {
                Some(u) => format!("{name} <{u}>"),
                None => name,
            }
        })
        .collect();
    if also.len() > MAX_ALSO_REPORTED {
        parts.push(format!("{} more", also.len() - MAX_ALSO_REPORTED));
    }
    parts.join(", ")
}

/// `"entity list" (title, summary), sanction* (content)`: each distinct term with the fields
/// it matched in, first-seen order (analyst detail and log records only).
fn terms_text(evidence: &[Evidence]) -> String {
    let mut terms: Vec<(&str, Vec<Field>)> = Vec::new();
    for e in evidence.iter().take(MAX_EVIDENCE) {
        match terms.iter_mut().find(|(t, _)| **t == *e.term) {
            Some((_, fields)) => {
                if !fields.contains(&e.field) {
                    fields.push(e.field);
                }
            }
            None => terms.push((&e.term, vec![e.field])),
        }
    }
    terms
        .iter()
        .map(|(t, fields)| {
            let f: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
            format!("{} ({})", clean_short(t, MAX_TERM_CHARS), f.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// HTML.

const FONT: &str = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
/// Highlight of specific evidence: dark text on amber, both set so inversion keeps contrast.
const HL_OPEN: &str = "<b class=\"pw-hl\" style=\"background:#fde68a;color:#1f2937\">";

/// Dark mode for clients that honour `prefers-color-scheme` (Apple Mail, iOS, Outlook for Mac,
/// some Android): the `!important` rules override the inline light colours. `[data-ogsc]` is
/// Outlook.com's dark mode. Phones get narrower padding.
const STYLE: &str = "<style>\n\
:root{color-scheme:light dark;supported-color-schemes:light dark}\n\
@media (prefers-color-scheme: dark){\n\
.pw-bg{background:#0f172a!important}\n\
.pw-card{background:#1e293b!important;color:#e2e8f0!important}\n\
.pw-h{color:#f8fafc!important}\n\
.pw-a{color:#93c5fd!important}\n\
.pw-m{color:#94a3b8!important}\n\
.pw-l{color:#cbd5e1!important}\n\
.pw-hl{background:#854d0e!important;color:#fef3c7!important}\n\
.pw-b{background:#334155!important;color:#e2e8f0!important}\n\
.pw-r{border-color:#334155!important}\n\
}\n\
[data-ogsc] .pw-h{color:#f8fafc!important}\n\
[data-ogsc] .pw-a{color:#93c5fd!important}\n\
[data-ogsc] .pw-hl{background:#854d0e!important;color:#fef3c7!important}\n\
@media (max-width:480px){.pw-p{padding-left:12px!important;padding-right:12px!important}}\n\
</style>\n";

fn html_head(h: &mut String, d: &Digest, subject: &str, preheader: &str) {
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\" xmlns:o=\"urn:schemas-microsoft-com:office:office\">\
         <head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <meta name=\"supported-color-schemes\" content=\"light dark\">\n<title>",
    );
    esc(h, subject);
    h.push_str(
        "</title>\n<!--[if mso]><xml><o:OfficeDocumentSettings><o:PixelsPerInch>96\
         </o:PixelsPerInch></o:OfficeDocumentSettings></xml><![endif]-->\n",
    );
    h.push_str(STYLE);
    h.push_str(
        "</head>\n<body class=\"pw-bg\" style=\"margin:0;padding:0;background:#f1f5f9;color:#1f2937\">\n\
         <div style=\"display:none;max-height:0;max-width:0;overflow:hidden;opacity:0;\
         mso-hide:all;font-size:1px;line-height:1px;color:#f1f5f9\">",
    );
    esc(h, preheader);
    // Padding so clients do not pull body text into the preview after the preheader.
    h.push_str(&"&#847;&zwnj;&nbsp;".repeat(12));
    let _ = d;
    let _ = write!(
        h,
        "</div>\n<table role=\"presentation\" class=\"pw-bg\" width=\"100%\" cellpadding=\"0\" \
         cellspacing=\"0\" border=\"0\" style=\"background:#f1f5f9\"><tr><td align=\"center\" \
         style=\"padding:12px 6px\">\n\
         <!--[if mso]><table role=\"presentation\" width=\"640\" align=\"center\" cellpadding=\"0\" \
         cellspacing=\"0\" border=\"0\"><tr><td><![endif]-->\n\
         <table role=\"presentation\" class=\"pw-card\" width=\"100%\" cellpadding=\"0\" \
         cellspacing=\"0\" border=\"0\" style=\"max-width:640px;background:#ffffff;\
         border-radius:6px;{FONT};color:#1f2937;font-size:15px;line-height:1.45\">\n"
    );
}

fn assemble_html(d: &Digest, layout: &Layout<'_>, subject: &str) -> String {
    let mut h = String::with_capacity(8192 + layout.full * 1200 + layout.compact * 300);
    let preheader = layout
        .top
        .first()
        .or_else(|| layout.in_message().next())
        .map(|b| clean_short(&b.story.title, MAX_TITLE_CHARS))
        .unwrap_or_else(|| overview(d, layout));
    html_head(&mut h, d, subject, &preheader);
    h.push_str(
        "<tr><td class=\"pw-p\" style=\"padding:18px 20px 8px\">\
         <div class=\"pw-h\" style=\"font-size:20px;font-weight:bold;color:#111827\">",
    );
    esc(&mut h, &heading(d));
    h.push_str("</div><div class=\"pw-m\" style=\"color:#64748b;font-size:13px\">");
    esc(&mut h, &overview(d, layout));
    h.push_str("</div></td></tr>\n");

    if !layout.top.is_empty() {
        section_title_html(&mut h, "Top stories");
        for b in &layout.top {
            h.push_str(&b.html);
        }
    }
    for (si, sec) in d.sections.iter().enumerate() {
        let (full, compact) = (&layout.full_by_section[si], &layout.compact_by_section[si]);
        if full.is_empty() && compact.is_empty() {
            if sec.stories.is_empty() && layout.per_watch[si] == 0 && d.kind == DigestKind::Digest {
                section_title_html(&mut h, &clean_short(&sec.watch_name, MAX_NAME_CHARS));
                h.push_str(
                    "<tr><td class=\"pw-p pw-m\" style=\"padding:4px 20px 12px;color:#64748b;\
                     font-size:14px\">Nothing new.</td></tr>\n",
                );
            }
            continue;
        }
        section_title_html(&mut h, &section_heading(d, layout, si));
        for b in full {
            h.push_str(&b.html);
        }
        if !compact.is_empty() {
            h.push_str(
                "<tr><td class=\"pw-p\" style=\"padding:6px 20px 10px\">\
                 <div class=\"pw-m\" style=\"color:#64748b;font-size:13px;margin-bottom:2px\">More in ",
            );
            esc(&mut h, &clean_short(&sec.watch_name, MAX_NAME_CHARS));
            h.push_str("</div><ul style=\"margin:0;padding-left:18px;font-size:14px\">\n");
            for b in compact {
                h.push_str(&b.html);
            }
            h.push_str("</ul></td></tr>\n");
        }
    }
    let later = layout.later(d);
    if later > 0 {
        h.push_str(
            "<tr><td class=\"pw-p\" style=\"padding:10px 20px;font-size:14px\">\
             <div class=\"pw-b\" style=\"background:#e0f2fe;color:#0c4a6e;padding:8px 10px;\
             border-radius:4px\">",
        );
        esc(&mut h, &later_line(later));
        h.push_str("</div></td></tr>\n");
    }
    if layout.health_lines > 0 {
        h.push_str(
            "<tr><td class=\"pw-p pw-r\" style=\"padding:14px 20px 8px;border-top:1px solid #e2e8f0\">\
             <div class=\"pw-h\" style=\"font-size:17px;font-weight:bold;color:#92400e\">Feed health</div>\
             <ul style=\"margin:6px 0 0;padding-left:20px;font-size:14px\">\n",
        );
        for p in d.feed_health.iter().take(layout.health_lines) {
            h.push_str("<li style=\"margin:0 0 4px\"><b>");
            esc(&mut h, &clean_short(&p.feed_name, MAX_NAME_CHARS));
            // The URL is shown as text, not linked: it may be the broken or moved address.
            h.push_str("</b> <span class=\"pw-m\" style=\"color:#64748b;word-break:break-all\">");
            esc(&mut h, &clean_short(&p.url, MAX_URL_BYTES));
            h.push_str("</span><br>");
            esc(&mut h, &clean_short(&p.problem, MAX_PROBLEM_CHARS));
            h.push_str("</li>\n");
        }
        if d.feed_health.len() > layout.health_lines {
            let _ = writeln!(
                h,
                "<li>and {} more</li>",
                d.feed_health.len() - layout.health_lines
            );
        }
        h.push_str("</ul></td></tr>\n");
    }
    h.push_str(
        "<tr><td class=\"pw-p pw-m pw-r\" style=\"padding:14px 20px 18px;border-top:1px solid #e2e8f0;\
         color:#64748b;font-size:12px\">",
    );
    esc(&mut h, &footer(d));
    h.push_str(
        "</td></tr>\n</table>\n<!--[if mso]></td></tr></table><![endif]-->\n\
         </td></tr></table>\n</body></html>\n",
    );
    h
}

fn section_title_html(h: &mut String, title: &str) {
    h.push_str(
        "<tr><td class=\"pw-p pw-r\" style=\"padding:14px 20px 2px;border-top:1px solid #e2e8f0\">\
         <div class=\"pw-h\" style=\"font-size:13px;font-weight:bold;letter-spacing:.04em;\
         text-transform:uppercase;color:#475569\">",
    );
    esc(h, title);
    h.push_str("</div></td></tr>\n");
}

/// `lang="vi" dir="auto"`, or `lang=""` (unknown) for a story whose language was not told.
fn lang_attr(h: &mut String, s: &Story) {
    h.push_str(" lang=\"");
    if let Some(l) = lang_code(s) {
        esc(h, l);
    }
    h.push_str("\" dir=\"auto\"");
}

fn story_html(
    h: &mut String,
    d: &Digest,
    si: usize,
    s: &Story,
    limits: &RenderLimits,
    is_top: bool,
) {
    h.push_str("<tr><td class=\"pw-p\" style=\"padding:8px 20px 10px\">\n<div");
    lang_attr(h, s);
    h.push_str(" class=\"pw-h\" style=\"font-size:16px;font-weight:bold;color:#111827\">");
    let title = clean_short(&s.title, MAX_TITLE_CHARS);
    let title_ranges = ranges_for(&title, s, Field::Title);
    let link = display_link(s);
    if let Some(u) = &link {
        h.push_str("<a class=\"pw-a\" href=\"");
        esc(h, u);
        h.push_str("\" style=\"color:#1d4ed8;text-decoration:none\">");
    }
    highlight_html(h, &title, &title_ranges);
    if link.is_some() {
        h.push_str("</a>");
    }
    h.push_str("</div>\n<div class=\"pw-m\" style=\"color:#64748b;font-size:13px\">");
    esc(h, &clean_short(&s.feed_name, MAX_NAME_CHARS));
    if let Some(p) = s.published {
        h.push_str(" · ");
        esc(h, &local_time(p, d.timezone));
    }
    if let Some(l) = lang_code(s) {
        h.push_str(
            " · <span class=\"pw-b\" style=\"background:#e2e8f0;color:#334155;border-radius:3px;\
             padding:0 4px;font-size:11px\">",
        );
        esc(h, &l.to_ascii_uppercase());
        h.push_str("</span>");
    }
    for b in badges(d, si, s, is_top) {
        h.push_str(
            " <span class=\"pw-b\" style=\"background:#ede9fe;color:#4c1d95;border-radius:3px;\
             padding:0 4px;font-size:11px;white-space:nowrap\">",
        );
        esc(h, &b);
        h.push_str("</span>");
    }
    h.push_str("</div>\n");
    let snip = snippet(s, limits.snippet_chars);
    if !snip.is_empty() {
        // Two lines at most where clients support line clamping; the text is already cut to
        // about two lines for those that do not.
        h.push_str("<div");
        lang_attr(h, s);
        h.push_str(
            " class=\"pw-l\" style=\"margin-top:4px;color:#334155;overflow:hidden;\
             display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical\">",
        );
        snip.write_html(h);
        h.push_str("</div>\n");
    }
    let why = why_line(s);
    if !why.is_empty() {
        h.push_str(
            "<div class=\"pw-m\" style=\"margin-top:4px;color:#475569;font-size:13px\">Why: ",
        );
        esc(h, &why);
        h.push_str("</div>\n");
    }
    if d.detail == Detail::Analyst {
        h.push_str(
            "<div class=\"pw-m\" style=\"margin-top:2px;color:#64748b;font-size:12px\">Matched: ",
        );
        esc(h, &terms_text(&s.evidence));
        let _ = writeln!(h, " · score {:.2}</div>", s.score);
    }
    if !s.also_reported.is_empty() {
        h.push_str("<div class=\"pw-m\" style=\"margin-top:2px;color:#64748b;font-size:12px\">Also reported by: ");
        for (i, (name, link)) in s.also_reported.iter().take(MAX_ALSO_REPORTED).enumerate() {
            if i > 0 {
                h.push_str(", ");
            }
            let name = clean_short(name, MAX_NAME_CHARS);
            match link
                .as_deref()
                .and_then(crate::canon::display_url)
                .and_then(|u| safe_url(&u))
            {
                Some(u) => {
                    h.push_str("<a class=\"pw-a\" href=\"");
                    esc(h, &u);
                    h.push_str("\" style=\"color:#1d4ed8\">");
                    esc(h, &name);
                    h.push_str("</a>");
                }
                None => esc(h, &name),
            }
        }
        if s.also_reported.len() > MAX_ALSO_REPORTED {
            let _ = write!(h, ", {} more", s.also_reported.len() - MAX_ALSO_REPORTED);
        }
        h.push_str("</div>\n");
    }
    h.push_str("</td></tr>\n");
}

fn compact_html(h: &mut String, d: &Digest, s: &Story) {
    let _ = d;
    h.push_str("<li style=\"margin:0 0 3px\"><span");
    lang_attr(h, s);
    h.push('>');
    let title = clean_short(&s.title, MAX_TITLE_CHARS);
    match display_link(s) {
        Some(u) => {
            h.push_str("<a class=\"pw-a\" href=\"");
            esc(h, &u);
            h.push_str("\" style=\"color:#1d4ed8;text-decoration:none\">");
            esc(h, &title);
            h.push_str("</a>");
        }
        None => esc(h, &title),
    }
    h.push_str("</span> <span class=\"pw-m\" style=\"color:#64748b;font-size:12px\">");
    esc(h, &clean_short(&s.feed_name, MAX_NAME_CHARS));
    h.push_str("</span></li>\n");
}

fn highlight_html(h: &mut String, text: &str, ranges: &[(usize, usize)]) {
    let mut pos = 0;
    for &(a, b) in ranges {
        esc(h, &text[pos..a]);
        h.push_str(HL_OPEN);
        esc(h, &text[a..b]);
        h.push_str("</b>");
        pos = b;
    }
    esc(h, &text[pos..]);
}

/// HTML-escapes text for element content and double- or single-quoted attributes.
fn esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snippets and highlighting.

/// A window of a story's summary, as pieces that are highlighted or not.
struct Snippet {
    pieces: Vec<(String, bool)>,
    cut_start: bool,
    cut_end: bool,
}

impl Snippet {
    fn is_empty(&self) -> bool {
        self.pieces.iter().all(|(p, _)| p.trim().is_empty())
    }

    fn write_text(&self, out: &mut String) {
        if self.cut_start {
            out.push('…');
        }
        for (p, hl) in &self.pieces {
            if *hl {
                out.push('*');
                out.push_str(p);
                out.push('*');
            } else {
                out.push_str(p);
            }
        }
        if self.cut_end {
            out.push('…');
        }
    }

    fn write_html(&self, out: &mut String) {
        if self.cut_start {
            out.push('…');
        }
        for (p, hl) in &self.pieces {
            if *hl {
                out.push_str(HL_OPEN);
                esc(out, p);
                out.push_str("</b>");
            } else {
                esc(out, p);
            }
        }
        if self.cut_end {
            out.push('…');
        }
    }
}

/// A window of about `max_chars` characters of the summary (about two lines of lead): its
/// start, or centred on the first specific match when that lies further in, with every
/// specific match inside the window highlighted.
fn snippet(s: &Story, max_chars: usize) -> Snippet {
    let text = s.summary.as_str();
    let ranges = clamp_ranges(
        text,
        s.evidence
            .iter()
            .take(MAX_EVIDENCE)
            .filter(|e| e.field == s.summary_field && is_specific(s, e))
            .map(|e| (e.start, e.end)),
    );
    // Byte offset of every char start, plus the end: the window is chosen in chars (what the
    // reader sees), cut in bytes. Summaries are bounded by `feed`, so this is cheap.
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let total_chars = bounds.len() - 1;
    let char_at = |byte: usize| bounds.partition_point(|&b| b < byte);
    let (mut ws, mut we) = (0usize, total_chars);
    if total_chars > max_chars {
        let (a, b) = ranges
            .first()
            .map(|&(a, b)| (char_at(a), char_at(b)))
            .unwrap_or((0, 0));
        let mlen = (b - a).min(max_chars);
        let lead = (max_chars - mlen) / 2;
        ws = a.saturating_sub(lead);
        we = (ws + max_chars).min(total_chars);
        ws = we.saturating_sub(max_chars);
        // Prefer to start and end on a word boundary when one is near (scripts without spaces,
        // such as Chinese, simply keep the hard cut).
        let chars: Vec<char> = text[bounds[ws]..bounds[we]].chars().collect();
        if ws > 0 {
            if let Some(k) = chars
                .iter()
                .take(20.min(a - ws))
                .position(|c| c.is_whitespace())
            {
                ws += k + 1;
            }
        }
        if we < total_chars {
            let tail_limit = we.saturating_sub(b.max(ws)).min(20);
            if let Some(k) = chars
                .iter()
                .rev()
                .take(tail_limit)
                .position(|c| c.is_whitespace())
            {
                we -= k + 1;
            }
        }
    }
    let (wb, web) = (bounds[ws], bounds[we]);
    let mut pieces = Vec::new();
    let mut pos = wb;
    for &(a, b) in &ranges {
        let (a, b) = (a.max(wb), b.min(web));
        if a >= b || a < pos {
            continue;
        }
        pieces.push((clean_inline(&text[pos..a]), false));
        pieces.push((clean_inline(&text[a..b]), true));
        pos = b;
    }
    pieces.push((clean_inline(&text[pos..web]), false));
    // Clean each piece on its own so ranges keep pointing at the right bytes; trim the ends of
    // the whole snippet.
    if let Some((first, _)) = pieces.first_mut() {
        *first = first.trim_start().to_string();
    }
    if let Some((last, _)) = pieces.last_mut() {
        *last = last.trim_end().to_string();
    }
    Snippet {
        pieces,
        cut_start: ws > 0,
        cut_end: we < total_chars,
    }
}

/// Highlight ranges for `shown`, a cleaned copy of `original`. Ranges index the original, so
/// they are used only when cleaning changed nothing; otherwise the title is shown plain
/// (correct, just not highlighted) rather than highlighted at the wrong place.
fn ranges_for(shown: &str, s: &Story, field: Field) -> Vec<(usize, usize)> {
    if shown != s.title {
        return Vec::new();
    }
    clamp_ranges(
        shown,
        s.evidence
            .iter()
            .take(MAX_EVIDENCE)
            .filter(|e| e.field == field && is_specific(s, e))
            .map(|e| (e.start, e.end)),
    )
}

/// Clamps byte ranges to `text`, widens them to char boundaries, drops empty ones, sorts and
/// merges overlaps. Never panics, whatever the ranges.
fn clamp_ranges(text: &str, ranges: impl Iterator<Item = (usize, usize)>) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = ranges
        .filter_map(|(a, b)| {
            let a = floor_char_boundary(text, a);
            let b = ceil_char_boundary(text, b);
            (a < b).then_some((a, b))
        })
        .collect();
    v.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Cleaning.

/// Characters that reorder text and can make a title display as something else (the
/// "Trojan Source" trick): bidi embeddings, overrides and isolates — and the invisible marks
/// (LRM, RLM, ALM), which in a mail header or a log line have no text to direct (stored titles
/// lose them at parse time already; stored summaries keep them, and lose them here).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') || crate::feed::is_bidi_mark(c)
}

/// One line of display text: whitespace of any kind (CR, LF, tab, line/paragraph separators)
/// becomes a space and runs collapse to one; other control characters and bidi controls are
/// removed; ends are trimmed.
pub fn clean_line(s: &str) -> String {
    clean_inline(s).trim().to_string()
}

/// As [`clean_line`] but keeps a leading/trailing space (for pieces of a snippet).
fn clean_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.chars() {
        if is_bidi_control(c) || c == '\u{FEFF}' {
            continue;
        }
        if c.is_control() && !c.is_whitespace() {
            // NUL, BEL, ESC and friends carry no text: drop them (an ESC could also drive a
            // terminal that shows the log).
            continue;
        }
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out
}

/// [`clean_line`], then cut to `max` characters with an ellipsis.
pub fn clean_short(s: &str, max: usize) -> String {
    truncate_chars(&clean_line(s), max)
}

/// `s` cut to at most `max` characters, the last being an ellipsis when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
            let mut out = s[..end].trim_end().to_string();
            out.push('…');
            out
        }
    }
}

/// The link as it may appear in a digest: an absolute http(s) URL with a host and no
/// credentials (a `user@` part is the classic way to disguise the real host), re-serialised
/// by `url` so it is percent-encoded and free of whitespace and quotes.
pub fn safe_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_URL_BYTES {
        return None;
    }
    let u = url::Url::parse(raw).ok()?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return None;
    }
    if !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let s = String::from(u);
    (s.len() <= MAX_URL_BYTES).then_some(s)
}

fn local_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%a %-d %b %Y, %H:%M %Z")
        .to_string()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ev(term: &str, field: Field, start: usize, end: usize) -> Evidence {
        Evidence {
            term: term.into(),
            set: None,
            concept: None,
            field,
            start,
            end,
        }
    }

    /// Evidence for the first occurrence of `word` in `text`, from set `set` labelled `concept`.
    fn ev_at(
        text: &str,
        word: &str,
        field: Field,
        set: Option<&str>,
        concept: Option<&str>,
    ) -> Evidence {
        let start = text.find(word).expect(word);
        Evidence {
            term: word.to_lowercase().into(),
            set: set.map(Into::into),
            concept: concept.map(Into::into),
            field,
            start,
            end: start + word.len(),
        }
    }

    fn story(id: i64, title: &str, summary: &str, score: f64) -> Story {
        Story {
            item_id: id,
            title: title.into(),
            link: Some(format!("https://news.example/{id}")),
            feed_name: "Example News".into(),
            published: Utc.with_ymd_and_hms(2026, 11, 27, 17, 4, 0).single(),
            summary: summary.into(),
            score,
            ..Default::default()
        }
    }

    fn digest(sections: Vec<Section>) -> Digest {
        Digest {
            id: "daily".into(),
            title: "policywatch daily digest".into(),
            generated_at: Utc
                .with_ymd_and_hms(2026, 11, 28, 6, 30, 0)
                .single()
                .expect("time"),
            timezone: "Europe/Berlin".parse().expect("tz"),
            sections,
            feed_health: Vec::new(),
            kind: DigestKind::Digest,
            detail: Detail::Reader,
            contact: None,
            deferred: 0,
        }
    }

    fn section(id: &str, stories: Vec<Story>) -> Section {
        Section {
            watch_id: id.into(),
            watch_name: format!("Watch {id}"),
            stories,
        }
    }

    fn weights() -> SetWeights {
        SetWeights::new(
            [
                ("entity_list", 3.0),
                ("ai_accelerator", 2.0),
                ("government", 0.5),
                ("restriction", 1.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        )
    }

    /// A story matched by an instrument, a product and generic words, as the term sets label
    /// them.
    fn entity_list_story(id: i64) -> Story {
        let title = "US adds Chinese firms to Entity List over Nvidia H20 sales";
        let summary = "The rules bar exports of the H20 to China, officials said.";
        let mut s = story(id, title, summary, 9.0);
        s.weights = weights();
        s.evidence = vec![
            ev_at(
                title,
                "US",
                Field::Title,
                Some("government"),
                Some("United States"),
            ),
            ev_at(
                title,
                "Entity List",
                Field::Title,
                Some("entity_list"),
                Some("Entity List"),
            ),
            ev_at(
                title,
                "H20",
                Field::Title,
                Some("ai_accelerator"),
                Some("Nvidia H20"),
            ),
            ev_at(
                summary,
                "China",
                Field::Summary,
                Some("government"),
                Some("China"),
            ),
            ev_at(
                summary,
                "bar",
                Field::Summary,
                Some("restriction"),
                Some("Restrictions"),
            ),
            ev_at(
                summary,
                "H20",
                Field::Summary,
                Some("ai_accelerator"),
                Some("Nvidia H20"),
            ),
        ];
        s
    }

    #[test]
    fn why_line_names_concepts_strongest_first_without_terms_or_scores() {
        let s = entity_list_story(1);
        assert_eq!(
            why_line(&s),
            "Entity List · Nvidia H20",
            "generic (Restrictions) and context (United States) give way to specific concepts"
        );
        // A class of products names the model it found.
        let mut c = s.clone();
        for e in &mut c.evidence {
            if e.set.as_deref() == Some("ai_accelerator") {
                e.concept = Some("AI accelerator".into());
            }
        }
        assert_eq!(why_line(&c), "Entity List · AI accelerator (H20)");
        // Only context: it is shown.
        let mut only = s.clone();
        only.evidence
            .retain(|e| e.set.as_deref() == Some("government"));
        assert_eq!(why_line(&only), "United States · China");
        let r = render(
            &digest(vec![section("ec", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(
            r.text.contains("  Why: Entity List · Nvidia H20\n"),
            "{}",
            r.text
        );
        assert!(r.html.contains("Why: Entity List · Nvidia H20"));
        // Reader mode: no term list, no score.
        for part in [&r.text, &r.html] {
            assert!(
                !part.contains("Matched:") && !part.contains("score"),
                "{part}"
            );
        }
    }

    #[test]
    fn why_line_without_labels_uses_the_specific_matched_text() {
        let title = "Commerce curbs Nvidia H800 and AMD MI308 sales to China";
        let mut s = story(1, title, "", 3.0);
        s.evidence = vec![
            ev_at(title, "curbs", Field::Title, None, None),
            ev_at(title, "H800", Field::Title, None, None),
            ev_at(title, "China", Field::Title, None, None),
            ev_at(title, "MI308", Field::Title, None, None),
        ];
        assert_eq!(why_line(&s), "H800 · MI308");
        // Nothing specific: the matched words, not the terms as written.
        s.evidence = vec![
            ev("curb*", Field::Title, 9, 14),
            ev("china", Field::Title, title.len() - 5, title.len()),
        ];
        assert_eq!(why_line(&s), "curbs · China");
    }

    #[test]
    fn highlights_only_specific_evidence() {
        let s = entity_list_story(1);
        let r = render(
            &digest(vec![section("ec", vec![s])]),
            &RenderLimits::default(),
        );
        let hl = |w: &str| format!("{HL_OPEN}{w}</b>");
        assert!(r.html.contains(&hl("Entity List")), "{}", r.html);
        assert!(r.html.contains(&hl("H20")));
        for generic in ["US", "China", "bar"] {
            assert!(!r.html.contains(&hl(generic)), "{generic} highlighted");
        }
        assert!(
            r.text.contains("*H20*") && !r.text.contains("*China*"),
            "{}",
            r.text
        );

        // Vietnamese "bán" from a generic set is never highlighted; a direct phrase is.
        let title = "Doanh số bán chip ở Trung Quốc tăng; danh sách thực thể mở rộng";
        let mut s = story(2, title, "", 1.0);
        s.evidence = vec![
            ev_at(title, "bán", Field::Title, None, None),
            ev_at(title, "danh sách thực thể", Field::Title, None, None),
        ];
        s.evidence[1].term = "\"danh sach thuc the\"".into();
        // A two-syllable Vietnamese phrase is one common word ("China"), not a name.
        let mut tq = ev_at(title, "Trung Quốc", Field::Title, None, None);
        tq.term = "\"trung quoc\"".into();
        s.evidence.push(tq);
        let r = render(
            &digest(vec![section("ec", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(!r.html.contains(&hl("bán")) && !r.html.contains(&hl("Trung Quốc")));
        assert!(r.html.contains(&hl("danh sách thực thể")));
    }

    #[test]
    fn top_stories_lead_and_are_not_repeated() {
        let stories: Vec<Story> = (1..=12)
            .map(|i| story(i, &format!("story {i}"), "", i as f64))
            .collect();
        let (a, b) = stories.split_at(6);
        let d = digest(vec![section("a", a.to_vec()), section("b", b.to_vec())]);
        let top: Vec<i64> = top_stories(&d).iter().map(|s| s.item_id).collect();
        assert_eq!(top, vec![12, 11, 10, 9]);
        let r = render(&d, &RenderLimits::default());
        let top_at = r.text.find("== Top stories ==").expect("top");
        let a_at = r.text.find("== Watch a").expect("section a");
        assert!(
            top_at < r.text.find("* story 12").expect("12")
                && r.text.find("* story 9").expect("9") < a_at
        );
        for i in 1..=12 {
            assert_eq!(
                r.text.matches(&format!("* story {i}\n")).count()
                    + r.text.matches(&format!("* story {i}  [")).count(),
                1,
                "story {i}"
            );
        }
        // The subject leads with the strongest headline and counts per watch.
        assert_eq!(r.subject, "story 12 — 6 watch a, 6 watch b");
        // Few stories: no top section.
        let d = digest(vec![section("a", a[..3].to_vec())]);
        assert!(top_stories(&d).is_empty());
        assert!(!render(&d, &RenderLimits::default())
            .text
            .contains("Top stories"));
    }

    #[test]
    fn cross_watch_story_once_with_a_badge_per_watch_and_counted_under_both() {
        let mut shared = story(7, "Gallium curbs hit AI chip supply", "", 5.0);
        shared.watches = vec!["ec".into(), "ai".into()];
        let d = digest(vec![
            section("ec", vec![shared, story(8, "other ec", "", 1.0)]),
            section("ai", vec![story(9, "other ai", "", 1.0)]),
        ]);
        let r = render(&d, &RenderLimits::default());
        assert_eq!(
            r.text.matches("Gallium curbs hit AI chip supply").count(),
            1,
            "{}",
            r.text
        );
        assert!(r
            .text
            .contains("* Gallium curbs hit AI chip supply  [Watch ec] [Watch ai]"));
        assert!(r.html.contains(">Watch ec</span> <span") && r.html.contains(">Watch ai</span>"));
        assert_eq!(
            r.subject,
            "Gallium curbs hit AI chip supply — 2 watch ec, 2 watch ai"
        );
    }

    #[test]
    fn subject_is_one_bounded_line_even_for_hostile_alerts() {
        let title = format!(
            "Breaking\r\nBcc: victim@example.com\u{202E}\r\n{}",
            "x".repeat(500)
        );
        let mut d = digest(vec![section(
            "export-controls",
            vec![story(1, &title, "", 2.0)],
        )]);
        d.kind = DigestKind::Alert;
        let r = render(&d, &RenderLimits::default());
        assert!(
            !r.subject.contains(['\r', '\n', '\u{202E}']),
            "{:?}",
            r.subject
        );
        assert!(r.subject.chars().count() <= MAX_SUBJECT_CHARS);
        assert!(
            r.subject.starts_with("Alert: Breaking Bcc: victim"),
            "{}",
            r.subject
        );
        assert!(
            r.subject.ends_with("— watch export-controls"),
            "{}",
            r.subject
        );
        assert!(r
            .text
            .starts_with("Immediate alert · policywatch daily digest\n"));
    }

    #[test]
    fn subject_for_feed_problems_only() {
        let mut d = digest(vec![section("export-controls", vec![])]);
        d.feed_health.push(FeedProblem {
            feed_name: "F".into(),
            url: "https://f.example/rss".into(),
            problem: "gone (410): polling stopped".into(),
        });
        let r = render(&d, &RenderLimits::default());
        assert_eq!(
            r.subject,
            "policywatch: no new stories, 1 feed problem — 28 Nov"
        );
        assert!(r.text.contains(
            "== Feed health ==\n- F <https://f.example/rss>: gone (410): polling stopped"
        ));
        assert!(r.html.contains("Feed health"));
    }

    #[test]
    fn count_names_read_as_words() {
        assert_eq!(count_name("Export controls"), "export controls");
        assert_eq!(count_name("AI chips"), "AI chips");
        assert_eq!(count_name("x"), "x");
    }

    #[test]
    fn links_lose_tracking_parameters_but_keep_the_article() {
        let mut s = story(1, "t", "", 1.0);
        s.link = Some(
            "https://www.example.com/news/a.html?id=42&utm_source=rss&fbclid=X#xtor=RSS-1".into(),
        );
        s.also_reported = vec![(
            "Wire".into(),
            Some("https://wire.example/s?gclid=1&p=2".into()),
        )];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(
            r.html
                .contains("href=\"https://www.example.com/news/a.html?id=42\""),
            "{}",
            r.html
        );
        assert!(r.html.contains("href=\"https://wire.example/s?p=2\""));
        for bad in ["utm_", "fbclid", "gclid", "xtor"] {
            assert!(!r.html.contains(bad) && !r.text.contains(bad), "{bad}");
        }
    }

    #[test]
    fn lang_attributes_badges_dark_mode_mso_and_preheader() {
        let mut vi = story(1, "Mỹ siết xuất khẩu chip", "", 2.0);
        vi.lang = Some("vi".into());
        let mut bad = story(2, "t", "", 1.0);
        bad.lang = Some("x\" onload=\"1".into());
        let d = digest(vec![section(
            "w",
            vec![vi, bad, story(3, "no lang", "", 0.5)],
        )]);
        let r = render(&d, &RenderLimits::default());
        let h = &r.html;
        assert!(h.contains("<html lang=\"en\""));
        assert!(
            h.contains("<div lang=\"vi\" dir=\"auto\" class=\"pw-h\""),
            "{h}"
        );
        assert!(h.contains("<div lang=\"\" dir=\"auto\" class=\"pw-h\""));
        assert!(!h.contains("onload"));
        assert!(
            r.text
                .contains("Example News · Fri 27 Nov 2026, 18:04 CET · VI"),
            "{}",
            r.text
        );
        assert!(h.contains("@media (prefers-color-scheme: dark)"));
        assert!(h.contains("<meta name=\"color-scheme\" content=\"light dark\">"));
        assert!(h.contains("<!--[if mso]><table role=\"presentation\" width=\"640\""));
        assert!(h.contains("<!--[if mso]></td></tr></table><![endif]-->"));
        // The preheader is the top headline, hidden, first thing in the body.
        let body = &h[h.find("<body").expect("body")..];
        let pre = &body[body.find("display:none").expect("preheader")..];
        assert!(pre[pre.find('>').expect(">") + 1..].starts_with("Mỹ siết xuất khẩu chip"));
    }

    #[test]
    fn analyst_detail_keeps_terms_and_scores() {
        let mut d = digest(vec![section("ec", vec![entity_list_story(1)])]);
        d.detail = Detail::Analyst;
        let r = render(&d, &RenderLimits::default());
        assert!(
            r.text
                .contains("  Matched: us (title), entity list (title), h20 (title, summary)"),
            "{}",
            r.text
        );
        assert!(r.text.contains("· score 9.00"));
        assert!(r.html.contains("Matched: us (title)"));
        assert!(r.text.contains("Why: Entity List"));
    }

    #[test]
    fn footer_shows_the_contact() {
        let mut d = digest(vec![section("w", vec![story(1, "t", "", 1.0)])]);
        let r = render(&d, &RenderLimits::default());
        assert!(r
            .text
            .contains("edit the watches or the schedule in the policywatch config"));
        d.contact = Some("Trade desk <trade-desk@example.org>\r\nBcc: x".into());
        let r = render(&d, &RenderLimits::default());
        assert!(r
            .text
            .contains("Questions or changes: Trade desk <trade-desk@example.org> Bcc: x"));
        assert!(r
            .html
            .contains("Questions or changes: Trade desk &lt;trade-desk@example.org&gt;"));
        assert!(!r.text.contains("edit the watches"));
    }

    /// A digest of `n` stories with long leads, across two watches.
    fn big(n: i64) -> Digest {
        let lead = "Officials said the measure follows months of review. ".repeat(8);
        let mk = |i: i64| {
            let mut s = story(
                i,
                &format!("Headline number {i} about export licences for chips"),
                &lead,
                (i % 50) as f64,
            );
            s.also_reported = vec![("Wire".into(), Some(format!("https://wire.example/{i}")))];
            s
        };
        digest(vec![
            section("a", (0..n / 2).map(mk).collect()),
            section("b", (n / 2..n).map(mk).collect()),
        ])
    }

    #[test]
    fn size_budget_holds_for_any_number_of_stories() {
        for n in [10, 150, 1000, 10_000] {
            let r = render(&big(n), &RenderLimits::default());
            let raw = r.html.len() + r.text.len();
            assert!(
                (raw as f64 * ENCODING_FACTOR) as usize + MIME_RESERVE < MAX_MESSAGE_BYTES,
                "{n}: {raw}"
            );
            assert_eq!(r.shown + r.listed + r.trimmed, n as usize, "{n}");
            if n == 10 {
                assert_eq!((r.shown, r.trimmed), (10, 0));
            } else {
                assert!(
                    r.listed > 0 && r.trimmed > 0,
                    "{n}: {} {}",
                    r.listed,
                    r.trimmed
                );
                let line = later_line(r.trimmed);
                assert!(r.text.contains(&line) && r.html.contains(&line), "{n}");
            }
        }
    }

    #[test]
    fn deferred_stories_are_the_tail_and_rendering_the_rest_is_the_same_message() {
        let d = big(400);
        let r = render(&d, &RenderLimits::default());
        assert!(r.trimmed > 0);
        let deferred: std::collections::HashSet<i64> = r.deferred.iter().copied().collect();
        let mut kept = d.clone();
        for s in &mut kept.sections {
            s.stories.retain(|st| !deferred.contains(&st.item_id));
        }
        kept.deferred = r.trimmed;
        let again = render(&kept, &RenderLimits::default());
        assert_eq!(again.deferred, Vec::<i64>::new());
        assert_eq!(
            (again.subject.as_str(), again.shown, again.listed),
            (r.subject.as_str(), r.shown, r.listed)
        );
        assert_eq!(again.html, r.html);
        assert_eq!(again.text, r.text);
    }

    #[test]
    fn max_stories_caps_full_blocks_and_lists_the_rest() {
        let d = big(40);
        let r = render(
            &d,
            &RenderLimits {
                max_stories: 5,
                ..RenderLimits::default()
            },
        );
        assert_eq!((r.shown, r.listed, r.trimmed), (5, 35, 0));
        assert!(
            r.text.contains("  More in Watch a:\n  - Headline number"),
            "{}",
            r.text
        );
        assert!(r.html.contains(">More in Watch a</div>"));
    }

    #[test]
    fn every_piece_of_feed_text_is_escaped() {
        let nasty = "<script>alert('x')</script> \"q\" & <img src=x onerror=1>\r\nX-Injected: 1";
        let mut s = story(1, nasty, nasty, 1.0);
        s.feed_name = nasty.into();
        s.link = Some("https://e.example/a?q=\"><script>".into());
        s.also_reported = vec![(nasty.into(), Some("javascript:alert(1)".into()))];
        s.lang = Some("<b>".into());
        s.evidence = vec![ev("script", Field::Title, 1, 7)];
        let mut d = digest(vec![section("w", vec![s])]);
        d.sections[0].watch_name = nasty.into();
        d.title = nasty.into();
        d.contact = Some(nasty.into());
        d.feed_health.push(FeedProblem {
            feed_name: nasty.into(),
            url: nasty.into(),
            problem: nasty.into(),
        });
        let r = render(&d, &RenderLimits::default());
        assert!(
            !r.html.contains("<script")
                && !r.html.contains("<img")
                && !r.html.contains("javascript:"),
            "{}",
            r.html
        );
        assert!(r
            .html
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &quot;q&quot; &amp;"));
        assert!(!r.subject.contains(['\r', '\n']));
        assert!(!r.text.contains("\r\nX-Injected"));
    }

    #[test]
    fn multibyte_text_and_odd_ranges_never_panic() {
        let vi = "Mỹ bổ sung các công ty Trung Quốc vào danh sách thực thể hạn chế xuất khẩu chip";
        let zh = "美国商务部将多家中国芯片公司列入实体清单，限制先进芯片出口";
        for text in [vi, zh] {
            for a in 0..text.len() + 6 {
                for b in [
                    a,
                    a + 1,
                    a + 2,
                    a + 5,
                    a + 40,
                    text.len() + 100,
                    a.saturating_sub(3),
                ] {
                    let mut s = story(1, text, text, 1.0);
                    s.evidence = vec![
                        ev("\"t t\"", Field::Summary, a, b),
                        ev("\"t t\"", Field::Title, a, b),
                    ];
                    let r = render(
                        &digest(vec![section("w", vec![s.clone()])]),
                        &RenderLimits {
                            snippet_chars: 20,
                            ..RenderLimits::default()
                        },
                    );
                    assert!(r.text.contains("Example News"));
                    let _ = why_line(&s);
                }
            }
        }
    }

    #[test]
    fn highlight_in_chinese_snaps_to_characters() {
        let zh = "美国将多家中国公司列入实体清单";
        let start = zh.find("实体清单").expect("term");
        let mut s = story(1, "t", zh, 1.0);
        s.evidence = vec![ev(
            "实体清单",
            Field::Summary,
            start + 1,
            start + "实体清单".len() - 1,
        )];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(r.text.contains("列入*实体清单*"), "{}", r.text);
        assert!(r.html.contains(&format!("列入{HL_OPEN}实体清单</b>")));
    }

    #[test]
    fn lead_is_bounded_and_centred_on_a_late_specific_match() {
        let before = "lorem ipsum ".repeat(40);
        let summary = format!("{before}export controls{}", " dolor sit amet".repeat(40));
        let mut s = story(1, "t", &summary, 1.0);
        s.evidence = vec![ev(
            "\"export controls\"",
            Field::Summary,
            before.len(),
            before.len() + 15,
        )];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits {
                snippet_chars: 60,
                ..RenderLimits::default()
            },
        );
        let line = r
            .text
            .lines()
            .find(|l| l.contains("*export controls*"))
            .expect("lead");
        assert!(
            line.trim_start().starts_with('…') && line.ends_with('…'),
            "{line}"
        );
        assert!(
            line.trim().trim_matches('…').chars().count() <= 62,
            "{line}"
        );
    }

    #[test]
    fn ranking_is_by_score_then_time() {
        let mut a = story(1, "low", "", 1.0);
        let mut b = story(2, "high", "", 5.0);
        let mut c = story(3, "high-newer", "", 5.0);
        let n = story(4, "nan", "", f64::NAN);
        a.published = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).single();
        b.published = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).single();
        c.published = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).single();
        let t = render(
            &digest(vec![section("w", vec![n, a, b, c])]),
            &RenderLimits::default(),
        )
        .text;
        let pos = |s: &str| t.find(&format!("* {s}")).expect(s);
        assert!(
            pos("high-newer") < pos("high\n")
                && pos("high\n") < pos("low")
                && pos("low") < pos("nan")
        );
    }

    #[test]
    fn times_are_shown_in_the_digest_zone() {
        let mut d = digest(vec![section("w", vec![story(1, "t", "", 1.0)])]);
        d.timezone = "America/New_York".parse().expect("tz");
        let r = render(&d, &RenderLimits::default());
        assert!(
            r.text.contains("Example News · Fri 27 Nov 2026, 12:04 EST"),
            "{}",
            r.text
        );
    }

    #[test]
    fn also_reported_is_listed_when_present() {
        let mut s = story(1, "t", "", 1.0);
        s.also_reported = vec![
            ("Wire A".into(), Some("https://a.example/1".into())),
            ("Wire B".into(), None),
        ];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(r
            .text
            .contains("Also reported by: Wire A <https://a.example/1>, Wire B"));
        assert!(r.html.contains("<a class=\"pw-a\" href=\"https://a.example/1\" style=\"color:#1d4ed8\">Wire A</a>, Wire B"));
    }

    #[test]
    fn log_lines_cover_stories_problems_and_summary() {
        let mut s = story(7, "Title\nwith newline", "", 2.5);
        s.evidence = vec![ev("chip*", Field::Title, 0, 5)];
        let mut d = digest(vec![section("ai-chips", vec![s, story(8, "b", "", 1.0)])]);
        d.feed_health.push(FeedProblem {
            feed_name: "F".into(),
            url: "u".into(),
            problem: "failing for 3 polls: 503".into(),
        });
        let recs = log_lines(&d, &RenderLimits::default());
        assert_eq!(recs.len(), 4);
        match &recs[0] {
            LogRecord::Story(ls) => {
                assert_eq!((ls.item_id, ls.title.as_str()), (7, "Title with newline"));
                assert_eq!(ls.matched, "chip* (title)");
                assert_eq!(ls.why, "Title");
            }
            other => panic!("{other:?}"),
        }
        match &recs[3] {
            LogRecord::Summary {
                shown,
                trimmed,
                per_watch,
                ..
            } => {
                assert_eq!((*shown, *trimmed), (2, 0));
                assert_eq!(per_watch, &vec![("ai-chips".to_string(), 2, 0)]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 17: RLM/LRM/ALM reached the mail. Not in the subject (a header), the text, the
    /// HTML or the log records, whatever was stored.
    #[test]
    fn bidi_marks_reach_neither_headers_nor_log_lines() {
        let s = story(
            1,
            "\u{200f}عقوبات\u{200f} on \u{200e}Nvidia\u{61c}",
            "",
            2.0,
        );
        let mut d = digest(vec![section("export-controls", vec![s])]);
        d.kind = DigestKind::Alert;
        let r = render(&d, &RenderLimits::default());
        for out in [&r.subject, &r.text, &r.html] {
            assert!(!out.contains(crate::feed::is_bidi_mark), "{out:?}");
        }
        assert!(r.subject.contains("عقوبات on Nvidia"), "{}", r.subject);
        for rec in log_lines(&d, &RenderLimits::default()) {
            assert!(
                !format!("{rec:?}").contains(crate::feed::is_bidi_mark),
                "{rec:?}"
            );
        }
    }

    #[test]
    fn html_has_no_scripts_or_remote_images_and_is_one_document() {
        let h = render(
            &digest(vec![section("w", vec![story(1, "t", "s", 1.0)])]),
            &RenderLimits::default(),
        )
        .html;
        assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
        assert!(!h.contains("<script") && !h.contains("<img") && !h.contains("src="));
    }
}

#[cfg(test)]
mod props {
    //! Whatever a feed sends, rendering neither panics nor lets markup or header breaks through.
    use super::*;
    use proptest::prelude::*;

    /// Text mixing markup, quotes, CR/LF, controls, bidi overrides and multi-byte scripts.
    fn hostile_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("<script>".to_string()),
                Just("\"'&<>".to_string()),
                Just("\r\n".to_string()),
                Just("\u{0}\u{1b}\u{7}".to_string()),
                Just("\u{202E}".to_string()),
                Just("xuất khẩu ".to_string()),
                Just("实体清单".to_string()),
                Just("🇺🇸 ".to_string()),
                "[a-z ]{0,12}",
                any::<char>().prop_map(|c| c.to_string()),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    fn evidence() -> impl Strategy<Value = Evidence> {
        (
            prop::sample::select(vec![Field::Title, Field::Summary, Field::Content]),
            0usize..400,
            0usize..400,
        )
            .prop_map(|(field, start, end)| Evidence {
                term: "t\r\nX: y".into(),
                set: None,
                concept: None,
                field,
                start,
                end,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn render_is_total_and_safe(
            title in hostile_text(),
            summary in hostile_text(),
            feed in hostile_text(),
            link in hostile_text(),
            ev in prop::collection::vec(evidence(), 0..6),
            snippet_chars in 0usize..120,
            max_stories in 0usize..4,
            alert in any::<bool>(),
        ) {
            let story = Story {
                item_id: 1,
                title: title.clone(),
                link: Some(link),
                feed_name: feed.clone(),
                published: None,
                summary,
                summary_field: Field::Summary,
                score: 1.0,
                evidence: ev,
                also_reported: vec![(title.clone(), Some(title.clone()))],
                lang: Some(feed.clone()),
                ..Default::default()
            };
            let d = Digest {
                id: title.clone(),
                title: title.clone(),
                generated_at: Utc::now(),
                timezone: Tz::UTC,
                sections: vec![Section {
                    watch_id: title.clone(),
                    watch_name: title.clone(),
                    stories: vec![story.clone(), story],
                }],
                feed_health: vec![],
                kind: if alert { DigestKind::Alert } else { DigestKind::Digest },
                detail: Detail::Reader,
                contact: Some(title.clone()),
                deferred: 0,
            };
            let limits = RenderLimits { max_stories, snippet_chars, ..RenderLimits::default() };
            let r = render(&d, &limits);
            prop_assert!(!r.subject.contains('\r') && !r.subject.contains('\n'));
            prop_assert!(r.subject.chars().count() <= MAX_SUBJECT_CHARS);
            prop_assert!(!r.html.contains("<script"));
            let rlo = '\u{202E}';
            let (nul, esc_char) = ('\u{0}', '\u{1b}');
            prop_assert!(!r.html.contains(rlo) && !r.text.contains(rlo));
            prop_assert!(!r.html.contains(nul) && !r.text.contains(esc_char));
            prop_assert_eq!(r.shown + r.listed + r.trimmed, 2);
            let _ = log_lines(&d, &limits);
        }
    }
}
