//! Rendering a digest: matched stories to a subject line, a plain-text part and an HTML part,
//! or to structured log records.
//!
//! In: a [`Digest`] (stories already claimed by `notify` from the store, grouped by watch) and
//! [`RenderLimits`]. Out: [`Rendered`] (for `mail`) or [`LogRecord`]s (for the `log` output).
//! Pure: no I/O, no clock (the digest carries its own `generated_at`).
//!
//! # What people get
//! The subject says what is inside ("policywatch: 3 export-controls, 2 ai-chips — 28 Nov").
//! Stories are grouped by watch in config order and ranked by score, then recency. Each shows
//! its linked title, source feed, local publication time, a snippet centred on the first match
//! with the matched terms highlighted, and why it matched. Digests are trimmed to
//! `max_stories` in total, shared fairly between watches so one noisy watch cannot crowd out
//! the others, with "and N more" per watch. Failing, moved and gone feeds get their own section.
//!
//! # Untrusted input
//! Every string from a feed may contain markup, quotes, CR/LF, control and bidi-override
//! characters, and evidence ranges that are out of bounds or not on a char boundary (the
//! classifier computed them on text we may not have). So: control characters are removed and
//! whitespace collapsed before anything else ([`clean_line`]); everything is HTML-escaped,
//! attributes included; only absolute http(s) URLs without credentials become links; ranges
//! are clamped and snapped to char boundaries; every string is cut to a bounded length. Nothing
//! here can panic on feed data. The subject can never contain CR or LF.
//!
//! # HTML for mail clients
//! Gmail, Outlook (Word engine) and Apple Mail agree on little: nested tables with
//! `role="presentation"`, inline styles only, no `<style>` dependence, no scripts, no remote
//! images, system fonts, a 640px column that shrinks on phones. Markup per story is kept lean
//! because Gmail clips messages above ~102 KB.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::item::{Evidence, Field};

/// Product name used in subjects and footers.
pub const APP_NAME: &str = "policywatch";
/// Subject length bound, in characters (RFC 5322 recommends lines under 78; encoded words
/// wrap, but a subject longer than this is unreadable in any inbox anyway).
pub const MAX_SUBJECT_CHARS: usize = 150;
/// Bounds on strings shown from feeds, in characters.
const MAX_TITLE_CHARS: usize = 300;
const MAX_NAME_CHARS: usize = 120;
const MAX_PROBLEM_CHARS: usize = 400;
const MAX_TERM_CHARS: usize = 80;
/// Links longer than this are shown as text only: real article URLs are far shorter, and a
/// huge one bloats every message it appears in.
const MAX_URL_BYTES: usize = 2048;
/// Evidence entries considered per story: beyond this they add nothing to a snippet.
const MAX_EVIDENCE: usize = 64;
/// Other sources listed per story.
const MAX_ALSO_REPORTED: usize = 8;
/// Feed problems listed per digest.
const MAX_FEED_PROBLEMS: usize = 100;

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

#[derive(Debug, Clone)]
pub struct Digest {
    /// Digest id from config, e.g. "daily".
    pub id: String,
    /// Heading, e.g. "policywatch daily digest".
    pub title: String,
    pub generated_at: DateTime<Utc>,
    /// Times are shown in this zone.
    pub timezone: Tz,
    /// One per watch, in config order.
    pub sections: Vec<Section>,
    /// Failing, moved and gone feeds.
    pub feed_health: Vec<FeedProblem>,
    pub kind: DigestKind,
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
    pub score: f64,
    /// Byte ranges into the item's original title/summary/content.
    pub evidence: Vec<Evidence>,
    /// Other sources of the same story: (feed name, link).
    pub also_reported: Vec<(String, Option<String>)>,
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
    /// Stories shown in total, across watches.
    pub max_stories: usize,
    /// Snippet length in characters.
    pub snippet_chars: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            max_stories: 150,
            snippet_chars: 280,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One line, no CR/LF, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Stories shown.
    pub shown: usize,
    /// Stories left out by the limit.
    pub trimmed: usize,
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
        /// (watch id, stories shown, stories trimmed), in config order.
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
    /// Only http(s) links.
    pub link: Option<String>,
    pub feed_name: String,
    pub published: Option<DateTime<Utc>>,
    pub score: f64,
    /// "term (field, field)" entries, as in the mail's "matched" line.
    pub matched: String,
}

/// Renders the digest for mail. Stories beyond `limits.max_stories` are counted, not shown.
pub fn render(d: &Digest, limits: &RenderLimits) -> Rendered {
    let plan = Plan::new(d, limits);
    let subject = subject(d, &plan);
    let text = render_text(d, &plan, limits);
    let html = render_html(d, &plan, limits, &subject);
    Rendered {
        subject,
        text,
        html,
        shown: plan.shown,
        trimmed: plan.trimmed,
    }
}

/// One record per shown story, one per feed problem, then a summary.
pub fn log_lines(d: &Digest, limits: &RenderLimits) -> Vec<LogRecord> {
    let plan = Plan::new(d, limits);
    let mut out = Vec::with_capacity(plan.shown + d.feed_health.len() + 1);
    for ps in &plan.sections {
        for s in &ps.shown {
            out.push(LogRecord::Story(LogStory {
                digest_id: clean_short(&d.id, MAX_NAME_CHARS),
                watch_id: clean_short(&ps.section.watch_id, MAX_NAME_CHARS),
                item_id: s.item_id,
                title: clean_short(&s.title, MAX_TITLE_CHARS),
                link: s.link.as_deref().and_then(safe_url),
                feed_name: clean_short(&s.feed_name, MAX_NAME_CHARS),
                published: s.published,
                score: s.score,
                matched: why_text(&s.evidence),
            }));
        }
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
        subject: subject(d, &plan),
        shown: plan.shown,
        trimmed: plan.trimmed,
        per_watch: plan
            .sections
            .iter()
            .map(|ps| {
                (
                    clean_short(&ps.section.watch_id, MAX_NAME_CHARS),
                    ps.shown.len(),
                    ps.more,
                )
            })
            .collect(),
        feed_problems: d.feed_health.len(),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Selection: which stories are shown.

struct Plan<'a> {
    sections: Vec<PlannedSection<'a>>,
    shown: usize,
    trimmed: usize,
    total: usize,
}

struct PlannedSection<'a> {
    section: &'a Section,
    /// Ranked, already cut to this section's quota.
    shown: Vec<&'a Story>,
    /// Stories of this section not shown.
    more: usize,
}

impl<'a> Plan<'a> {
    fn new(d: &'a Digest, limits: &RenderLimits) -> Plan<'a> {
        let lens: Vec<usize> = d.sections.iter().map(|s| s.stories.len()).collect();
        // Fair share: hand out one slot per section per round until the budget or the stories
        // run out, so small watches show everything and big ones split the rest evenly.
        // Rounds are bounded by max_stories and by the largest section.
        let mut quota = vec![0usize; lens.len()];
        let mut budget = limits.max_stories;
        while budget > 0 {
            let mut gave = false;
            for (q, &len) in quota.iter_mut().zip(&lens) {
                if budget > 0 && *q < len {
                    *q += 1;
                    budget -= 1;
                    gave = true;
                }
            }
            if !gave {
                break;
            }
        }
        let mut sections = Vec::with_capacity(d.sections.len());
        let (mut shown, mut total) = (0, 0);
        for (s, q) in d.sections.iter().zip(quota) {
            let mut ranked: Vec<&Story> = s.stories.iter().collect();
            // Only the top `q` are needed: select them first so 10,000 stories cost a partition,
            // not a full sort, then sort the few that are shown.
            if q > 0 && q < ranked.len() {
                ranked.select_nth_unstable_by(q - 1, |a, b| rank(a, b));
            }
            ranked.truncate(q);
            ranked.sort_by(|a, b| rank(a, b));
            shown += ranked.len();
            total += s.stories.len();
            sections.push(PlannedSection {
                section: s,
                more: s.stories.len() - ranked.len(),
                shown: ranked,
            });
        }
        Plan {
            sections,
            shown,
            trimmed: total - shown,
            total,
        }
    }
}

/// Higher score first (NaN last), then newer first (undated last), then item id for stability.
fn rank(a: &Story, b: &Story) -> std::cmp::Ordering {
    let key = |s: &Story| {
        if s.score.is_nan() {
            f64::NEG_INFINITY
        } else {
            s.score
        }
    };
    key(b)
        .total_cmp(&key(a))
        .then_with(|| b.published.cmp(&a.published))
        .then_with(|| a.item_id.cmp(&b.item_id))
}

// ---------------------------------------------------------------------------------------------
// Subject.

fn subject(d: &Digest, plan: &Plan<'_>) -> String {
    let date = d.generated_at.with_timezone(&d.timezone).format("%-d %b");
    let suffix = format!(" — {date}");
    let body = match d.kind {
        DigestKind::Alert => {
            let first = plan.sections.iter().find_map(|ps| {
                ps.shown
                    .first()
                    .map(|s| (ps.section.watch_id.as_str(), s.title.as_str()))
            });
            match first {
                Some((watch, title)) => {
                    let more = plan.total.saturating_sub(1);
                    let more = if more > 0 {
                        format!(" (+{more} more)")
                    } else {
                        String::new()
                    };
                    format!(
                        "{APP_NAME} alert: {}: {}{more}",
                        clean_line(watch),
                        clean_line(title)
                    )
                }
                None => format!("{APP_NAME} alert: no stories"),
            }
        }
        DigestKind::Digest => {
            let counts: Vec<String> = d
                .sections
                .iter()
                .filter(|s| !s.stories.is_empty())
                .map(|s| format!("{} {}", s.stories.len(), clean_line(&s.watch_id)))
                .collect();
            let mut body = if counts.is_empty() {
                format!("{APP_NAME}: no new stories")
            } else {
                format!("{APP_NAME}: {}", counts.join(", "))
            };
            if !d.feed_health.is_empty() {
                let n = d.feed_health.len();
                let _ = write!(body, ", {n} feed problem{}", plural(n));
            }
            body
        }
    };
    // The date goes last and always survives the cut, so every subject is dated.
    let room = MAX_SUBJECT_CHARS.saturating_sub(suffix.chars().count());
    let mut out = truncate_chars(&body, room);
    out.push_str(&suffix);
    out
}

// ---------------------------------------------------------------------------------------------
// Plain text.

fn render_text(d: &Digest, plan: &Plan<'_>, limits: &RenderLimits) -> String {
    let mut t = String::with_capacity(512 + plan.shown * 600);
    let _ = writeln!(t, "{}", heading(d));
    let _ = writeln!(t, "{}", overview(d, plan));
    for ps in &plan.sections {
        if ps.section.stories.is_empty() {
            continue;
        }
        t.push('\n');
        let _ = writeln!(t, "== {} ==", section_heading(ps));
        for (i, s) in ps.shown.iter().enumerate() {
            t.push('\n');
            let _ = writeln!(t, "{}. {}", i + 1, clean_short(&s.title, MAX_TITLE_CHARS));
            if let Some(u) = s.link.as_deref().and_then(safe_url) {
                let _ = writeln!(t, "   {u}");
            }
            let _ = writeln!(t, "   {}", source_line(s, d.timezone));
            let snip = snippet(s, limits.snippet_chars);
            if !snip.is_empty() {
                t.push_str("   ");
                snip.write_text(&mut t);
                t.push('\n');
            }
            let why = why_text(&s.evidence);
            if !why.is_empty() {
                let _ = writeln!(t, "   Matched: {why} · score {:.2}", s.score);
            }
            if !s.also_reported.is_empty() {
                let _ = writeln!(t, "   Also reported by: {}", also_text(&s.also_reported));
            }
        }
        if ps.more > 0 {
            let _ = writeln!(t, "\n   {}", more_line(ps));
        }
    }
    if !d.feed_health.is_empty() {
        t.push('\n');
        let _ = writeln!(t, "== Feed health ==");
        for p in d.feed_health.iter().take(MAX_FEED_PROBLEMS) {
            let _ = writeln!(
                t,
                "- {} <{}>: {}",
                clean_short(&p.feed_name, MAX_NAME_CHARS),
                clean_short(&p.url, MAX_URL_BYTES),
                clean_short(&p.problem, MAX_PROBLEM_CHARS)
            );
        }
        if d.feed_health.len() > MAX_FEED_PROBLEMS {
            let _ = writeln!(t, "- and {} more", d.feed_health.len() - MAX_FEED_PROBLEMS);
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

fn overview(d: &Digest, plan: &Plan<'_>) -> String {
    let watches = d.sections.iter().filter(|s| !s.stories.is_empty()).count();
    let mut s = format!(
        "{} · {} stor{} in {} watch{}",
        local_time(d.generated_at, d.timezone),
        plan.total,
        if plan.total == 1 { "y" } else { "ies" },
        watches,
        if watches == 1 { "" } else { "es" },
    );
    if plan.trimmed > 0 {
        let _ = write!(s, " ({} shown)", plan.shown);
    }
    s
}

fn section_heading(ps: &PlannedSection<'_>) -> String {
    let n = ps.section.stories.len();
    format!(
        "{} ({}) — {} stor{}",
        clean_short(&ps.section.watch_name, MAX_NAME_CHARS),
        clean_short(&ps.section.watch_id, MAX_NAME_CHARS),
        n,
        if n == 1 { "y" } else { "ies" }
    )
}

fn more_line(ps: &PlannedSection<'_>) -> String {
    format!(
        "…and {} more stor{} for {} not shown (digest size limit).",
        ps.more,
        if ps.more == 1 { "y" } else { "ies" },
        clean_short(&ps.section.watch_id, MAX_NAME_CHARS)
    )
}

fn source_line(s: &Story, tz: Tz) -> String {
    let feed = clean_short(&s.feed_name, MAX_NAME_CHARS);
    match s.published {
        Some(p) => format!("{feed} · {}", local_time(p, tz)),
        None => feed,
    }
}

fn footer(d: &Digest) -> String {
    format!(
        "Sent automatically by {APP_NAME} ({} \"{}\"). To change what you get, edit the \
         watches or the schedule in the {APP_NAME} config.",
        d.kind.as_str(),
        clean_short(&d.id, MAX_NAME_CHARS)
    )
}

fn also_text(also: &[(String, Option<String>)]) -> String {
    let mut parts: Vec<String> = also
        .iter()
        .take(MAX_ALSO_REPORTED)
        .map(|(name, link)| {
            let name = clean_short(name, MAX_NAME_CHARS);
            match link.as_deref().and_then(safe_url) {
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
/// it matched in, first-seen order.
fn why_text(evidence: &[Evidence]) -> String {
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

fn render_html(d: &Digest, plan: &Plan<'_>, limits: &RenderLimits, subject: &str) -> String {
    let mut h = String::with_capacity(2048 + plan.shown * 1200);
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light\">\n<title>",
    );
    esc(&mut h, subject);
    let _ = write!(
        h,
        "</title></head>\n<body style=\"margin:0;padding:0;background:#f4f4f5\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" \
         style=\"background:#f4f4f5\"><tr><td align=\"center\" style=\"padding:12px 6px\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" \
         style=\"max-width:640px;background:#ffffff;border-radius:6px;{FONT};color:#1f2937;\
         font-size:15px;line-height:1.45\">\n"
    );
    // Heading.
    h.push_str(
        "<tr><td style=\"padding:18px 20px 8px\"><div style=\"font-size:20px;font-weight:bold\">",
    );
    esc(&mut h, &heading(d));
    h.push_str("</div><div style=\"color:#6b7280;font-size:13px\">");
    esc(&mut h, &overview(d, plan));
    h.push_str("</div></td></tr>\n");

    for ps in &plan.sections {
        if ps.section.stories.is_empty() {
            continue;
        }
        h.push_str(
            "<tr><td style=\"padding:14px 20px 4px;border-top:1px solid #e5e7eb\">\
             <div style=\"font-size:17px;font-weight:bold;color:#111827\">",
        );
        esc(&mut h, &section_heading(ps));
        h.push_str("</div></td></tr>\n");
        for s in &ps.shown {
            story_html(&mut h, s, d.timezone, limits);
        }
        if ps.more > 0 {
            h.push_str("<tr><td style=\"padding:4px 20px 12px;color:#6b7280;font-size:13px\">");
            esc(&mut h, &more_line(ps));
            h.push_str("</td></tr>\n");
        }
    }

    if !d.feed_health.is_empty() {
        h.push_str(
            "<tr><td style=\"padding:14px 20px 8px;border-top:1px solid #e5e7eb\">\
             <div style=\"font-size:17px;font-weight:bold;color:#92400e\">Feed health</div>\
             <ul style=\"margin:6px 0 0;padding-left:20px;font-size:14px\">\n",
        );
        for p in d.feed_health.iter().take(MAX_FEED_PROBLEMS) {
            h.push_str("<li style=\"margin:0 0 4px\"><b>");
            esc(&mut h, &clean_short(&p.feed_name, MAX_NAME_CHARS));
            // The URL is shown as text, not linked: it may be the broken or moved address.
            h.push_str("</b> <span style=\"color:#6b7280;word-break:break-all\">");
            esc(&mut h, &clean_short(&p.url, MAX_URL_BYTES));
            h.push_str("</span><br>");
            esc(&mut h, &clean_short(&p.problem, MAX_PROBLEM_CHARS));
            h.push_str("</li>\n");
        }
        if d.feed_health.len() > MAX_FEED_PROBLEMS {
            let _ = writeln!(
                h,
                "<li>and {} more</li>",
                d.feed_health.len() - MAX_FEED_PROBLEMS
            );
        }
        h.push_str("</ul></td></tr>\n");
    }

    h.push_str(
        "<tr><td style=\"padding:14px 20px 18px;border-top:1px solid #e5e7eb;color:#9ca3af;\
         font-size:12px\">",
    );
    esc(&mut h, &footer(d));
    h.push_str("</td></tr>\n</table>\n</td></tr></table>\n</body></html>\n");
    h
}

fn story_html(h: &mut String, s: &Story, tz: Tz, limits: &RenderLimits) {
    h.push_str(
        "<tr><td style=\"padding:8px 20px 10px\">\n<div style=\"font-size:16px;font-weight:bold\">",
    );
    let title = clean_short(&s.title, MAX_TITLE_CHARS);
    let title_ranges = ranges_for(&title, &s.title, &s.evidence, Field::Title);
    let link = s.link.as_deref().and_then(safe_url);
    if let Some(u) = &link {
        h.push_str("<a href=\"");
        esc(h, u);
        h.push_str("\" style=\"color:#1d4ed8;text-decoration:none\">");
    }
    highlight_html(h, &title, &title_ranges);
    if link.is_some() {
        h.push_str("</a>");
    }
    h.push_str("</div>\n<div style=\"color:#6b7280;font-size:13px\">");
    esc(h, &source_line(s, tz));
    h.push_str("</div>\n");
    let snip = snippet(s, limits.snippet_chars);
    if !snip.is_empty() {
        h.push_str("<div style=\"margin-top:4px;color:#374151\">");
        snip.write_html(h);
        h.push_str("</div>\n");
    }
    let why = why_text(&s.evidence);
    if !why.is_empty() {
        h.push_str("<div style=\"margin-top:4px;color:#6b7280;font-size:12px\">Matched: ");
        esc(h, &why);
        let _ = writeln!(h, " · score {:.2}</div>", s.score);
    }
    if !s.also_reported.is_empty() {
        h.push_str("<div style=\"margin-top:2px;color:#6b7280;font-size:12px\">Also reported by: ");
        for (i, (name, link)) in s.also_reported.iter().take(MAX_ALSO_REPORTED).enumerate() {
            if i > 0 {
                h.push_str(", ");
            }
            let name = clean_short(name, MAX_NAME_CHARS);
            match link.as_deref().and_then(safe_url) {
                Some(u) => {
                    h.push_str("<a href=\"");
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

fn highlight_html(h: &mut String, text: &str, ranges: &[(usize, usize)]) {
    let mut pos = 0;
    for &(a, b) in ranges {
        esc(h, &text[pos..a]);
        h.push_str("<b style=\"background:#fef3c7\">");
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
                out.push_str("<b style=\"background:#fef3c7\">");
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

/// A window of about `max_chars` characters of the summary, centred on the first match in the
/// summary (or its start when the match was elsewhere), with every summary match inside the
/// window highlighted.
fn snippet(s: &Story, max_chars: usize) -> Snippet {
    let text = s.summary.as_str();
    let ranges = clamp_ranges(
        text,
        s.evidence
            .iter()
            .take(MAX_EVIDENCE)
            .filter(|e| e.field == s.summary_field)
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
fn ranges_for(shown: &str, original: &str, ev: &[Evidence], field: Field) -> Vec<(usize, usize)> {
    if shown != original {
        return Vec::new();
    }
    clamp_ranges(
        shown,
        ev.iter()
            .take(MAX_EVIDENCE)
            .filter(|e| e.field == field)
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
fn clean_short(s: &str, max: usize) -> String {
    truncate_chars(&clean_line(s), max)
}

fn truncate_chars(s: &str, max: usize) -> String {
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
fn safe_url(raw: &str) -> Option<String> {
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

    fn story(id: i64, title: &str, summary: &str, score: f64) -> Story {
        Story {
            item_id: id,
            title: title.into(),
            link: Some(format!("https://news.example/{id}")),
            feed_name: "Example News".into(),
            published: Utc.with_ymd_and_hms(2026, 11, 27, 17, 4, 0).single(),
            summary: summary.into(),
            summary_field: Field::Summary,
            score,
            evidence: Vec::new(),
            also_reported: Vec::new(),
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
        }
    }

    fn section(id: &str, stories: Vec<Story>) -> Section {
        Section {
            watch_id: id.into(),
            watch_name: format!("Watch {id}"),
            stories,
        }
    }

    fn limits(max: usize) -> RenderLimits {
        RenderLimits {
            max_stories: max,
            snippet_chars: 80,
        }
    }

    #[test]
    fn subject_counts_per_watch_and_dates_locally() {
        let d = digest(vec![
            section(
                "export-controls",
                (1..=3).map(|i| story(i, "t", "s", 1.0)).collect(),
            ),
            section("empty-watch", vec![]),
            section(
                "ai-chips",
                (4..=5).map(|i| story(i, "t", "s", 1.0)).collect(),
            ),
        ]);
        let r = render(&d, &RenderLimits::default());
        assert_eq!(
            r.subject,
            "policywatch: 3 export-controls, 2 ai-chips — 28 Nov"
        );
        // Late evening UTC is already the next day in Asia.
        let mut d2 = d.clone();
        d2.generated_at = Utc
            .with_ymd_and_hms(2026, 11, 28, 20, 0, 0)
            .single()
            .expect("t");
        d2.timezone = "Asia/Ho_Chi_Minh".parse().expect("tz");
        assert!(render(&d2, &RenderLimits::default())
            .subject
            .ends_with("— 29 Nov"));
    }

    #[test]
    fn subject_is_one_bounded_line_even_for_hostile_alerts() {
        let title = format!("Breaking\r\nBcc: victim@example.com\r\n{}", "x".repeat(500));
        let mut d = digest(vec![section(
            "export-controls",
            vec![story(1, &title, "", 2.0)],
        )]);
        d.kind = DigestKind::Alert;
        let r = render(&d, &RenderLimits::default());
        assert!(
            !r.subject.contains('\r') && !r.subject.contains('\n'),
            "{:?}",
            r.subject
        );
        assert!(r.subject.chars().count() <= MAX_SUBJECT_CHARS);
        assert!(r
            .subject
            .starts_with("policywatch alert: export-controls: Breaking Bcc: victim"));
        assert!(r.subject.ends_with("— 28 Nov"));
        assert!(r
            .text
            .starts_with("Immediate alert · policywatch daily digest\n"));
        assert!(r
            .html
            .contains(">Immediate alert · policywatch daily digest</div>"));
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
        assert!(r.html.contains("gone (410): polling stopped"));
    }

    #[test]
    fn feed_health_section_absent_when_all_is_well() {
        let d = digest(vec![section("w", vec![story(1, "t", "s", 1.0)])]);
        let r = render(&d, &RenderLimits::default());
        assert!(!r.text.contains("Feed health"));
        assert!(!r.html.contains("Feed health"));
    }

    #[test]
    fn everything_from_feeds_is_escaped() {
        let mut s = story(
            1,
            "<script>alert(1)</script> \"quoted\" & 'single'\r\nX-Injected: yes",
            "<img src=x onerror=alert(1)> body",
            1.0,
        );
        s.feed_name = "Feed <b>bold</b>".into();
        s.link = Some("https://news.example/a?q=\"><script>x</script>&b=1".into());
        s.also_reported = vec![
            ("Other \"src\"".into(), Some("javascript:alert(1)".into())),
            ("Third".into(), Some("https://user:pw@evil.example/".into())),
        ];
        let d = digest(vec![section("w", vec![s])]);
        let r = render(&d, &RenderLimits::default());
        let h = &r.html;
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(!h.contains("<b>bold"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot; &amp; &#39;single&#39; X-Injected: yes"));
        // The link's quote cannot close the attribute: url re-encodes it.
        assert!(
            h.contains(
                "href=\"https://news.example/a?q=%22%3E%3Cscript%3Ex%3C/script%3E&amp;b=1\""
            ),
            "{h}"
        );
        assert!(!h.contains("javascript:"), "{h}");
        assert!(!h.contains("evil.example"), "{h}");
        assert!(h.contains("Other &quot;src&quot;"));
        // The text part has the title on one line.
        assert!(r
            .text
            .contains("1. <script>alert(1)</script> \"quoted\" & 'single' X-Injected: yes\n"));
        assert!(!r.text.contains("\r"));
    }

    #[test]
    fn control_and_bidi_characters_are_stripped() {
        let s = story(1, "a\u{0}b\u{7}c\u{202E}d\u{2066}e\tf\u{2028}g", "", 1.0);
        let d = digest(vec![section("w", vec![s])]);
        let r = render(&d, &RenderLimits::default());
        assert!(r.text.contains("1. abcde f g\n"), "{}", r.text);
        assert!(!r.html.contains('\u{202E}') && !r.html.contains('\u{0}'));
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
    fn only_http_links_become_hrefs() {
        for (link, linked) in [
            ("https://a.example/x", true),
            ("http://a.example/x", true),
            ("  https://a.example/x  ", true),
            ("ftp://a.example/x", false),
            ("data:text/html,<b>", false),
            ("/relative/path", false),
            ("javascript:alert(1)", false),
            ("vbscript:x", false),
        ] {
            let mut s = story(1, "T", "", 1.0);
            s.link = Some(link.into());
            let r = render(
                &digest(vec![section("w", vec![s])]),
                &RenderLimits::default(),
            );
            assert_eq!(r.html.contains("<a href="), linked, "{link}");
        }
    }

    #[test]
    fn highlights_terms_in_title_and_snippet() {
        let mut s = story(
            1,
            "US adds firms to Entity List",
            "The Commerce Department added twelve firms to the Entity List on Friday.",
            3.0,
        );
        let t = s.title.find("Entity List").expect("in title");
        let m = s.summary.find("Entity List").expect("in summary");
        s.evidence = vec![
            ev("\"entity list\"", Field::Title, t, t + 11),
            ev("\"entity list\"", Field::Summary, m, m + 11),
        ];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(
            r.html
                .contains("to <b style=\"background:#fef3c7\">Entity List</b></a>"),
            "{}",
            r.html
        );
        assert!(r
            .html
            .contains("the <b style=\"background:#fef3c7\">Entity List</b> on Friday."));
        assert!(r.text.contains(
            "   The Commerce Department added twelve firms to the *Entity List* on Friday.\n"
        ));
        assert!(r
            .text
            .contains("Matched: \"entity list\" (title, summary) · score 3.00"));
    }

    #[test]
    fn multibyte_text_and_odd_ranges_never_panic() {
        let vi = "Mỹ bổ sung các công ty Trung Quốc vào danh sách thực thể hạn chế xuất khẩu chip";
        let zh = "美国商务部将多家中国芯片公司列入实体清单，限制先进芯片出口";
        let lens = [vi.len(), zh.len()];
        for (text, len) in [(vi, lens[0]), (zh, lens[1])] {
            // Every pair of byte offsets around the text, including mid-character ones and
            // ranges past the end or reversed.
            for a in (0..len + 6).step_by(1) {
                for b in [
                    a,
                    a + 1,
                    a + 2,
                    a + 5,
                    a + 40,
                    len + 100,
                    a.saturating_sub(3),
                ] {
                    let mut s = story(1, text, text, 1.0);
                    s.evidence = vec![ev("t", Field::Summary, a, b), ev("t", Field::Title, a, b)];
                    let d = digest(vec![section("w", vec![s])]);
                    let r = render(
                        &d,
                        &RenderLimits {
                            max_stories: 5,
                            snippet_chars: 20,
                        },
                    );
                    assert!(r.text.contains("Example News"));
                }
            }
        }
    }

    #[test]
    fn highlight_in_vietnamese_and_chinese_snaps_to_characters() {
        let vi = "Mỹ bổ sung các công ty vào danh sách thực thể";
        let start = vi.find("danh sách").expect("term");
        // A range starting one byte into "d" and ending inside "á": widened to whole chars.
        let mut s = story(1, "t", vi, 1.0);
        s.evidence = vec![ev(
            "danh sách",
            Field::Summary,
            start,
            start + "danh sá".len() - 1,
        )];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(r.text.contains("*danh sá*"), "{}", r.text);

        let zh = "美国将多家中国公司列入实体清单";
        let start = zh.find("实体清单").expect("term");
        let mut s = story(1, "t", zh, 1.0);
        // Starts mid-character (inside 实) and ends mid-character (inside 单).
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
        assert!(r
            .html
            .contains("列入<b style=\"background:#fef3c7\">实体清单</b>"));
    }

    #[test]
    fn snippet_from_content_highlights_content_evidence() {
        let body = "Full text: the ministry tightened gallium export licensing.";
        let at = body.find("gallium").expect("term");
        let mut s = story(1, "t", body, 1.0);
        s.summary_field = Field::Content;
        s.evidence = vec![
            ev("gallium", Field::Content, at, at + 7),
            // A summary range must not be applied to content text.
            ev("full", Field::Summary, 0, 4),
        ];
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits::default(),
        );
        assert!(
            r.text
                .contains("   Full text: the ministry tightened *gallium* export"),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("Matched: gallium (content), full (summary)"),
            "{}",
            r.text
        );
    }

    #[test]
    fn snippet_is_centred_on_the_first_match_and_bounded() {
        let before = "lorem ipsum ".repeat(40);
        let after = " dolor sit amet".repeat(40);
        let summary = format!("{before}export controls{after}");
        let start = before.len();
        let mut s = story(1, "t", &summary, 1.0);
        s.evidence = vec![ev("export controls", Field::Summary, start, start + 15)];
        let d = digest(vec![section("w", vec![s])]);
        let r = render(
            &d,
            &RenderLimits {
                max_stories: 10,
                snippet_chars: 60,
            },
        );
        let line = r
            .text
            .lines()
            .find(|l| l.contains("*export controls*"))
            .expect("snippet line");
        assert!(
            line.trim_start().starts_with('…') && line.ends_with('…'),
            "{line}"
        );
        let shown = line.trim().trim_matches('…');
        assert!(shown.chars().count() <= 62, "{shown}");
        // Centred: text on both sides of the match.
        let (l, r2) = shown.split_once("*export controls*").expect("match");
        assert!(l.len() > 10 && r2.len() > 10, "{shown}");

        // Chinese has no spaces: the window is still bounded.
        let zh = "中".repeat(500);
        let s = story(2, "t", &zh, 1.0);
        let r = render(
            &digest(vec![section("w", vec![s])]),
            &RenderLimits {
                max_stories: 10,
                snippet_chars: 60,
            },
        );
        let line = r.text.lines().find(|l| l.contains('中')).expect("line");
        assert_eq!(line.trim().trim_end_matches('…').chars().count(), 60);
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
        let d = digest(vec![section("w", vec![n, a, b, c])]);
        let t = render(&d, &RenderLimits::default()).text;
        let pos = |s: &str| t.find(&format!(". {s}\n")).expect(s);
        assert!(pos("high-newer") < pos("high"));
        assert!(pos("high") < pos("low"));
        assert!(pos("low") < pos("nan"));
    }

    #[test]
    fn trimming_shares_the_limit_between_watches() {
        let big: Vec<Story> = (0..1000)
            .map(|i| story(i, &format!("big {i}"), "", i as f64))
            .collect();
        let small: Vec<Story> = (0..3).map(|i| story(5000 + i, "small", "", 1.0)).collect();
        let d = digest(vec![section("big", big), section("small", small)]);
        let r = render(&d, &limits(10));
        assert_eq!((r.shown, r.trimmed), (10, 993));
        // The small watch shows everything; the big one the 7 best.
        assert_eq!(r.text.matches(". small\n").count(), 3);
        assert!(r.text.contains("1. big 999\n") && r.text.contains("7. big 993\n"));
        assert!(!r.text.contains("big 992\n"));
        assert!(r.text.contains("…and 993 more stories for big not shown"));
        assert!(r.html.contains("…and 993 more stories for big not shown"));
        assert!(!r.text.contains("more stories for small"));
        assert!(r.subject.starts_with("policywatch: 1000 big, 3 small"));

        let all = render(&d, &limits(usize::MAX));
        assert_eq!((all.shown, all.trimmed), (1003, 0));
        let none = render(&d, &limits(0));
        assert_eq!((none.shown, none.trimmed), (0, 1003));
    }

    #[test]
    fn ten_thousand_stories_are_trimmed() {
        let stories: Vec<Story> = (0..10_000)
            .map(|i| {
                story(
                    i,
                    &format!("story {i}"),
                    &"word ".repeat(100),
                    (i % 97) as f64,
                )
            })
            .collect();
        let d = digest(vec![section("w", stories)]);
        let r = render(&d, &RenderLimits::default());
        assert_eq!((r.shown, r.trimmed), (150, 9850));
        assert!(r.html.len() < 400_000, "{}", r.html.len());
    }

    #[test]
    fn times_are_shown_in_the_digest_zone() {
        let s = story(1, "t", "", 1.0); // published 2026-11-27 17:04 UTC
        let mut d = digest(vec![section("w", vec![s])]);
        let r = render(&d, &RenderLimits::default());
        assert!(
            r.text.contains("Example News · Fri 27 Nov 2026, 18:04 CET"),
            "{}",
            r.text
        );
        d.timezone = "America/New_York".parse().expect("tz");
        let r = render(&d, &RenderLimits::default());
        assert!(
            r.text.contains("Example News · Fri 27 Nov 2026, 12:04 EST"),
            "{}",
            r.text
        );
        d.timezone = "Asia/Ho_Chi_Minh".parse().expect("tz");
        let r = render(&d, &RenderLimits::default());
        assert!(r.text.contains("Sat 28 Nov 2026, 00:04 +07"), "{}", r.text);
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
        assert!(r.html.contains(
            "<a href=\"https://a.example/1\" style=\"color:#1d4ed8\">Wire A</a>, Wire B"
        ));
        let r = render(
            &digest(vec![section("w", vec![story(2, "t", "", 1.0)])]),
            &RenderLimits::default(),
        );
        assert!(!r.text.contains("Also reported"));
    }

    #[test]
    fn html_has_no_scripts_or_remote_images_and_is_one_document() {
        let d = digest(vec![section("w", vec![story(1, "t", "s", 1.0)])]);
        let h = render(&d, &RenderLimits::default()).html;
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.trim_end().ends_with("</html>"));
        assert!(!h.contains("<script") && !h.contains("<img") && !h.contains("src="));
        assert!(h.contains("role=\"presentation\""));
    }

    #[test]
    fn log_lines_cover_stories_problems_and_summary() {
        let mut s = story(7, "Title\nwith newline", "", 2.5);
        s.evidence = vec![ev("chip*", Field::Content, 0, 4)];
        let mut d = digest(vec![section("ai-chips", vec![s, story(8, "b", "", 1.0)])]);
        d.feed_health.push(FeedProblem {
            feed_name: "F".into(),
            url: "u".into(),
            problem: "failing for 3 polls: 503".into(),
        });
        let recs = log_lines(&d, &limits(1));
        assert_eq!(recs.len(), 3);
        match &recs[0] {
            LogRecord::Story(ls) => {
                assert_eq!(ls.item_id, 7);
                assert_eq!(ls.title, "Title with newline");
                assert_eq!(ls.matched, "chip* (content)");
                assert_eq!(ls.link.as_deref(), Some("https://news.example/7"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&recs[1], LogRecord::FeedProblem { problem, .. } if problem == "failing for 3 polls: 503")
        );
        match &recs[2] {
            LogRecord::Summary {
                shown,
                trimmed,
                per_watch,
                ..
            } => {
                assert_eq!((*shown, *trimmed), (1, 1));
                assert_eq!(per_watch, &vec![("ai-chips".to_string(), 1, 1)]);
            }
            other => panic!("{other:?}"),
        }
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
                feed_name: feed,
                published: None,
                summary,
                summary_field: Field::Summary,
                score: 1.0,
                evidence: ev,
                also_reported: vec![(title.clone(), Some(title.clone()))],
            };
            let d = Digest {
                id: title.clone(),
                title: title.clone(),
                generated_at: Utc::now(),
                timezone: Tz::UTC,
                sections: vec![Section {
                    watch_id: title.clone(),
                    watch_name: title,
                    stories: vec![story.clone(), story],
                }],
                feed_health: vec![],
                kind: if alert { DigestKind::Alert } else { DigestKind::Digest },
            };
            let r = render(&d, &RenderLimits { max_stories, snippet_chars });
            prop_assert!(!r.subject.contains('\r') && !r.subject.contains('\n'));
            prop_assert!(r.subject.chars().count() <= MAX_SUBJECT_CHARS);
            prop_assert!(!r.html.contains("<script"));
            let rlo = '\u{202E}';
            let (nul, esc_char) = ('\u{0}', '\u{1b}');
            prop_assert!(!r.html.contains(rlo) && !r.text.contains(rlo));
            prop_assert!(!r.html.contains(nul) && !r.text.contains(esc_char));
            prop_assert_eq!(r.shown + r.trimmed, 2);
            let _ = log_lines(&d, &RenderLimits { max_stories, snippet_chars });
        }
    }
}
