//! Webhook output: a delivery's stories as a chat message (Slack, Microsoft Teams,
//! Mattermost, ntfy) or as versioned JSON for scripts, POSTed to the digest's `url`.
//!
//! In: the assembled [`Digest`] of one delivery (from `notify`), per-item [`Extras`] (language,
//! every watch the story matched), the delivery's stable id and claim time, the digest's
//! [`Endpoint`]. Out: a [`Payload`] (rendering is pure: [`notice`], then [`render`]) and, for a
//! POST, the receiver's acceptance or a [`PostError`] that says whether to retry (decided in
//! `retry`).
//!
//! # What every POST carries
//! - `Idempotency-Key: <delivery id>` — the delivery's Message-ID, fixed when it was claimed,
//!   so a retry (after a 5xx, a timeout, a crash between acceptance and the mark) is
//!   recognisably the same delivery;
//! - with a secret configured, `X-Policywatch-Signature: sha256=<hex HMAC-SHA256 of the
//!   exact body>`; the secret itself never reaches a log or `Debug` output.
//!
//! # Limits
//! Each format has its receiver's limits (Slack: 50 blocks, 3000 characters per section;
//! Teams: about 28 KB per message; ntfy: 4 KB of body; Mattermost: 16k characters); stories
//! that do not fit are summarised in one "and N more" line rather than refused by the
//! receiver. Everything from feeds is cleaned to one line and bounded, links are http(s)
//! only, markup characters are escaped per format (a title cannot post an image or a
//! mention), and header values are plain ASCII without CR/LF.
//!
//! # Sending
//! One POST per attempt, no redirects followed (a moved webhook is a config change), a hard
//! deadline around the whole exchange ([`Endpoint::timeout`]), the answer read up to
//! [`MAX_REPLY_BYTES`]. Errors never include the URL: chat webhook URLs carry their token.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::digest::{self, clean_line, clean_short, safe_url, Digest, DigestKind, RenderLimits};
use crate::item::Evidence;
use crate::retry::{self, TransportFailure, WebhookVerdict};
use crate::secret::{Secret, SecretSource};

/// The `schema` value of the JSON format.
pub const JSON_SCHEMA: &str = "policywatch.digest";
/// The `version` of the JSON format. Bumped only for changes that break a consumer (a field
/// removed or its meaning changed); new fields may appear within a version.
pub const JSON_VERSION: u32 = 1;
/// The signature header (for any format, when a secret is configured).
pub const SIGNATURE_HEADER: &str = "X-Policywatch-Signature";
/// A POST's deadline when the digest sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the receiver's answer kept (for the log and the outbox's `server_reply`).
pub const MAX_REPLY_BYTES: usize = 2048;

/// Slack: blocks per message and characters per section text.
pub const SLACK_MAX_BLOCKS: usize = 50;
pub const SLACK_MAX_SECTION_CHARS: usize = 3000;
/// Slack: a header block's plain text.
const SLACK_MAX_HEADER_CHARS: usize = 150;
/// Teams: the whole message, in bytes (the documented ceiling is about 28 KB; a margin stays
/// for the receiver's own envelope).
pub const TEAMS_MAX_BYTES: usize = 27 * 1024;
/// ntfy: body bytes (longer bodies become attachments on ntfy.sh).
pub const NTFY_MAX_BODY_BYTES: usize = 4096;
/// Mattermost: characters over the message text and its attachments' texts, and attachments.
pub const MATTERMOST_MAX_CHARS: usize = 16_000;
const MATTERMOST_MAX_ATTACHMENTS: usize = 40;

/// Bounds on the strings shown, in characters.
const TITLE_CHARS: usize = 300;
const LEAD_CHARS: usize = 240;
const SOURCE_CHARS: usize = 120;
const WHY_CHARS: usize = 200;
const EVIDENCE_NAMES: usize = 12;
const ALSO_REPORTED: usize = 8;
/// ntfy's title header, in characters.
const NTFY_TITLE_CHARS: usize = 200;

/// The shape of the POST body. A closed set: adding one is a change here and in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Slack incoming webhook: Block Kit blocks with a plain-text fallback.
    Slack,
    /// Microsoft Teams (incoming webhook or Workflows): a message with one Adaptive Card.
    Teams,
    /// Mattermost incoming webhook: markdown text with Slack-style attachments.
    Mattermost,
    /// ntfy topic URL: plain-text body, `Title`, `Click`, `Tags` headers.
    Ntfy,
    /// policywatch's own versioned JSON ([`JSON_SCHEMA`], [`JSON_VERSION`]).
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Slack => "slack",
            Format::Teams => "teams",
            Format::Mattermost => "mattermost",
            Format::Ntfy => "ntfy",
            Format::Json => "json",
        }
    }
}

/// A digest's webhook as configured (the secret not yet read).
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub url: url::Url,
    pub format: Format,
    pub timeout: Duration,
    pub secret: SecretSource,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &redacted_url(&self.url))
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A webhook ready to POST to: the target with its secret read.
#[derive(Clone)]
pub struct Endpoint {
    pub url: url::Url,
    pub format: Format,
    /// The hard deadline around one POST: connect, send, answer.
    pub timeout: Duration,
    pub secret: Option<Secret>,
}

impl fmt::Debug for Endpoint {
    // By hand: the URL's path and query are the token of most chat webhooks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redacted_url(&self.url))
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Endpoint {
    /// Reads the target's secret (see `secret`); `env` looks up environment variables.
    pub fn new(
        t: &Target,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, crate::secret::SecretError> {
        Ok(Endpoint {
            url: t.url.clone(),
            format: t.format,
            timeout: t.timeout,
            secret: t.secret.read("secret", "secret", env)?,
        })
    }

    /// Where it goes, fit for a log line: scheme and host, never the path (the token).
    pub fn display_target(&self) -> String {
        redacted_url(&self.url)
    }
}

/// `https://hooks.slack.com/…`: the URL without path, query or credentials.
pub fn redacted_url(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or("?");
    match u.port() {
        Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
        None => format!("{}://{host}/…", u.scheme()),
    }
}

// ---------------------------------------------------------------------------------------------
// The model every format renders from.

/// What the store knows about a story beyond `digest::Story`: its language and every watch
/// of the digest it matched. Keyed by the story's lead item id.
#[derive(Debug, Clone, Default)]
pub struct StoryExtra {
    pub lang: Option<String>,
    pub watches: Vec<String>,
    pub first_seen: Option<DateTime<Utc>>,
}

pub type Extras = HashMap<i64, StoryExtra>;

/// One delivery, cleaned and bounded, ready for any format.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub digest_id: String,
    pub delivery_id: String,
    pub kind: DigestKind,
    /// The digest's title ("policywatch daily digest").
    pub title: String,
    /// The mail's subject line ("policywatch: 3 export-controls — 28 Nov").
    pub subject: String,
    /// When the delivery was claimed: the same on every attempt.
    pub created_at: DateTime<Utc>,
    pub stories: Vec<NoticeStory>,
    /// Stories left out by the digest's `max_stories`.
    pub more: usize,
    /// (feed name, problem) for failing, moved and gone feeds.
    pub feed_problems: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NoticeStory {
    pub item_id: i64,
    /// The watch it is shown under, and that watch's name.
    pub watch_id: String,
    pub watch_name: String,
    pub title: String,
    /// An absolute http(s) link, or none.
    pub link: Option<String>,
    pub lead: String,
    pub source: String,
    /// A lower-case language code such as "en" or "zh".
    pub lang: Option<String>,
    /// Every watch of the digest the story matched, the one it is shown under first.
    pub watches: Vec<String>,
    /// The distinct names of what matched: a concept label ("Entity List") when the term came
    /// from a term set, else the term as written.
    pub evidence: Vec<String>,
    /// One line: why it matched.
    pub why: String,
    pub published: Option<DateTime<Utc>>,
    pub first_seen: Option<DateTime<Utc>>,
    /// (source, link) of the other reports of the same story.
    pub also_reported: Vec<(String, Option<String>)>,
}

/// Builds the notice of one delivery: the stories `limits` lets the digest show (the same
/// fair share as the mail), cleaned and bounded.
pub fn notice(
    d: &Digest,
    delivery_id: &str,
    created_at: DateTime<Utc>,
    extras: &Extras,
    limits: &RenderLimits,
) -> Notice {
    let mut stories = Vec::new();
    let mut more = 0;
    for (section, shown, left) in digest::selection(d, limits) {
        more += left;
        for s in shown {
            let extra = extras.get(&s.item_id).cloned().unwrap_or_default();
            let mut watches = vec![section.watch_id.clone()];
            for w in extra.watches {
                if !watches.contains(&w) {
                    watches.push(w);
                }
            }
            stories.push(NoticeStory {
                item_id: s.item_id,
                watch_id: section.watch_id.clone(),
                watch_name: clean_short(&section.watch_name, SOURCE_CHARS),
                title: non_empty(clean_short(&s.title, TITLE_CHARS), "(untitled)"),
                link: s.link.as_deref().and_then(safe_url),
                lead: clean_short(&s.summary, LEAD_CHARS),
                source: clean_short(&s.feed_name, SOURCE_CHARS),
                lang: extra.lang.as_deref().and_then(lang_code),
                watches,
                evidence: evidence_names(&s.evidence),
                why: clean_short(&digest::why_line(s), WHY_CHARS),
                published: s.published,
                first_seen: extra.first_seen,
                also_reported: s
                    .also_reported
                    .iter()
                    .take(ALSO_REPORTED)
                    .map(|(n, l)| {
                        (
                            clean_short(n, SOURCE_CHARS),
                            l.as_deref().and_then(safe_url),
                        )
                    })
                    .collect(),
            });
        }
    }
    Notice {
        digest_id: d.id.clone(),
        delivery_id: delivery_id.to_string(),
        kind: d.kind,
        title: clean_short(&d.title, TITLE_CHARS),
        subject: digest::subject_line(d, limits),
        created_at,
        stories,
        more,
        feed_problems: d
            .feed_health
            .iter()
            .take(20)
            .map(|p| {
                (
                    clean_short(&p.feed_name, SOURCE_CHARS),
                    clean_short(&p.problem, WHY_CHARS),
                )
            })
            .collect(),
    }
}

fn non_empty(s: String, fallback: &str) -> String {
    if s.is_empty() {
        fallback.to_string()
    } else {
        s
    }
}

/// A language code fit for display and `xml:lang`: 2–3 ASCII letters, optionally a region
/// (`pt-BR`), lower-cased language part. Anything else is dropped.
pub fn lang_code(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (lang, region) = match raw.split_once(['-', '_']) {
        Some((l, r)) => (l, Some(r)),
        None => (raw, None),
    };
    let ok_lang = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_alphabetic());
    let ok_region = region.map_or(true, |r| {
        (2..=8).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !ok_lang || !ok_region {
        return None;
    }
    Some(match region {
        Some(r) => format!("{}-{}", lang.to_ascii_lowercase(), r),
        None => lang.to_ascii_lowercase(),
    })
}

/// The distinct names of what matched, first-seen order: concept labels, else terms.
pub fn evidence_names(evidence: &[Evidence]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in evidence.iter().take(64) {
        let name = clean_short(e.concept.as_deref().unwrap_or(&e.term), 80);
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
        if out.len() == EVIDENCE_NAMES {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// A POST body with its headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Format-specific headers (ntfy's `Title`, `Click`, `Tags`): ASCII, no CR/LF.
    pub headers: Vec<(&'static str, String)>,
    /// Stories shown in full.
    pub shown: usize,
    /// Stories only counted ("and N more"): cut by the format's limits or by `max_stories`.
    pub summarised: usize,
}

/// Renders a notice in `format`. Pure; never exceeds the format's limits.
pub fn render(format: Format, n: &Notice) -> Payload {
    match format {
        Format::Slack => slack(n),
        Format::Teams => teams(n),
        Format::Mattermost => mattermost(n),
        Format::Ntfy => ntfy(n),
        Format::Json => json_payload(n),
    }
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn json_ok(v: &Value, shown: usize, n: &Notice) -> Payload {
    Payload {
        body: json_body(v),
        content_type: "application/json",
        headers: Vec::new(),
        shown,
        summarised: n.stories.len() - shown + n.more,
    }
}

/// "and 12 more stories" (empty when none).
fn more_text(k: usize) -> String {
    match k {
        0 => String::new(),
        1 => "… and 1 more story".to_string(),
        k => format!("… and {k} more stories"),
    }
}

/// "Reuters · ZH · Entity List": the source line under a headline.
fn meta_line(s: &NoticeStory) -> String {
    let mut parts = vec![s.source.clone()];
    if let Some(l) = &s.lang {
        parts.push(l.to_ascii_uppercase());
    }
    if !s.why.is_empty() {
        parts.push(s.why.clone());
    }
    parts.join(" · ")
}

fn footer_line(n: &Notice) -> String {
    let mut s = format!(
        "policywatch · {} `{}` · {}",
        n.kind.as_str(),
        n.digest_id,
        n.created_at.format("%-d %b %Y %H:%M UTC")
    );
    match n.feed_problems.len() {
        0 => {}
        1 => s.push_str(" · 1 feed has a problem"),
        k => s.push_str(&format!(" · {k} feeds have problems")),
    }
    s
}

/// Slack's mrkdwn escapes: only `&`, `<`, `>` are special (they delimit links and mentions).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A URL inside Slack's `<url|text>`: `|` and `>` would end it early.
fn slack_url(u: &str) -> String {
    u.replace('|', "%7C")
        .replace('>', "%3E")
        .replace('<', "%3C")
}

fn slack(n: &Notice) -> Payload {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clean_short(&n.subject, SLACK_MAX_HEADER_CHARS), "emoji": false},
    })];
    // Kept free: the "more" section and the footer context.
    let budget = SLACK_MAX_BLOCKS - 2;
    let mut shown = 0;
    let mut last_watch: Option<&str> = None;
    for s in &n.stories {
        let heading = last_watch != Some(s.watch_id.as_str());
        if blocks.len() + 1 + usize::from(heading) > budget {
            break;
        }
        if heading {
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("*{}*", slack_escape(&s.watch_name))},
            }));
            last_watch = Some(&s.watch_id);
        }
        let title = slack_escape(&s.title);
        let headline = match &s.link {
            Some(l) if l.len() + title.len() < SLACK_MAX_SECTION_CHARS / 2 => {
                format!("*<{}|{title}>*", slack_url(l))
            }
            _ => format!("*{title}*"),
        };
        let mut text = format!("{headline}\n{}", slack_escape(&meta_line(s)));
        if !s.lead.is_empty() {
            text.push('\n');
            text.push_str(&slack_escape(&s.lead));
        }
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": digest::truncate_chars(&text, SLACK_MAX_SECTION_CHARS)},
        }));
        shown += 1;
    }
    let left = n.stories.len() - shown + n.more;
    if left > 0 {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": more_text(left)},
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": slack_escape(&footer_line(n))}],
    }));
    let v = json!({
        "text": clean_short(&n.subject, 3000),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    });
    json_ok(&v, shown, n)
}

/// Markdown escapes for Teams and Mattermost: every character that could start a link, an
/// image, emphasis, a heading, a table or a mention is backslash-escaped, so feed text shows
/// as text (a title cannot load a remote image in everyone's chat client).
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '['
                | ']'
                | '('
                | ')'
                | '#'
                | '!'
                | '<'
                | '>'
                | '|'
                | '~'
                | '@'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A URL inside markdown's `(url)`: parentheses and spaces percent-encoded.
fn md_url(u: &str) -> String {
    u.replace('(', "%28")
        .replace(')', "%29")
        .replace(' ', "%20")
}

fn md_headline(s: &NoticeStory) -> String {
    match &s.link {
        Some(l) => format!("[{}]({})", md_escape(&s.title), md_url(l)),
        None => md_escape(&s.title),
    }
}

fn teams(n: &Notice) -> Payload {
    let card = |body: &[Value]| {
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": body,
                },
            }],
        })
    };
    let text_block = |text: String, extra: Value| {
        let mut b = json!({"type": "TextBlock", "text": text, "wrap": true});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        b
    };
    let mut body = vec![text_block(
        md_escape(&n.subject),
        json!({"size": "Large", "weight": "Bolder"}),
    )];
    let footer = text_block(
        md_escape(&footer_line(n)),
        json!({"isSubtle": true, "size": "Small", "separator": true}),
    );
    // The envelope, the heading, the footer and the longest "more" line are fixed costs.
    let fixed = json_body(&card(&[
        body[0].clone(),
        text_block(more_text(usize::MAX), json!({"isSubtle": true})),
        footer.clone(),
    ]))
    .len();
    let mut used = fixed;
    let mut shown = 0;
    let mut last_watch: Option<&str> = None;
    for s in &n.stories {
        let mut blocks = Vec::new();
        if last_watch != Some(s.watch_id.as_str()) {
            blocks.push(text_block(
                md_escape(&s.watch_name),
                json!({"weight": "Bolder", "size": "Medium", "spacing": "Large"}),
            ));
        }
        let mut items = vec![
            text_block(md_headline(s), json!({"weight": "Bolder"})),
            text_block(
                md_escape(&meta_line(s)),
                json!({"isSubtle": true, "spacing": "None", "size": "Small"}),
            ),
        ];
        if !s.lead.is_empty() {
            items.push(text_block(md_escape(&s.lead), json!({"spacing": "Small"})));
        }
        blocks.push(json!({"type": "Container", "items": items, "spacing": "Medium"}));
        // +1 per block for the comma between array elements.
        let cost: usize = blocks.iter().map(|b| json_body(b).len() + 1).sum();
        if used + cost > TEAMS_MAX_BYTES {
            break;
        }
        used += cost;
        body.extend(blocks);
        last_watch = Some(&s.watch_id);
        shown += 1;
    }
    let left = n.stories.len() - shown + n.more;
    if left > 0 {
        body.push(text_block(more_text(left), json!({"isSubtle": true})));
    }
    body.push(footer);
    json_ok(&card(&body), shown, n)
}

fn mattermost(n: &Notice) -> Payload {
    let text = format!("#### {}", md_escape(&n.subject));
    let footer = footer_line(n);
    let mut used = text.chars().count() + footer.chars().count() + 40;
    let mut attachments = Vec::new();
    for s in &n.stories {
        if attachments.len() == MATTERMOST_MAX_ATTACHMENTS {
            break;
        }
        let mut body = md_escape(&meta_line(s));
        if !s.lead.is_empty() {
            body.push('\n');
            body.push_str(&md_escape(&s.lead));
        }
        let cost = s.title.chars().count() * 2 + body.chars().count() + s.watch_name.len();
        if used + cost > MATTERMOST_MAX_CHARS {
            break;
        }
        used += cost;
        let mut a = json!({
            "fallback": s.title,
            "color": "#1f6feb",
            "title": s.title,
            "text": body,
            "footer": s.watch_name,
        });
        if let (Some(l), Some(obj)) = (&s.link, a.as_object_mut()) {
            obj.insert("title_link".into(), json!(l));
        }
        attachments.push(a);
    }
    let shown = attachments.len();
    let left = n.stories.len() - shown + n.more;
    let mut full = text;
    if left > 0 {
        full.push_str(&format!("\n{}", more_text(left)));
    }
    full.push_str(&format!("\n{}", md_escape(&footer)));
    json_ok(&json!({"text": full, "attachments": attachments}), shown, n)
}

/// An ASCII header value: control characters removed, whitespace collapsed (so no CR/LF),
/// non-ASCII text as one RFC 2047 encoded word (ntfy decodes `=?UTF-8?B?…?=`).
pub fn header_text(s: &str, max_chars: usize) -> String {
    let clean = clean_short(s, max_chars);
    if clean.is_ascii() {
        return clean;
    }
    use base64::Engine as _;
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(clean.as_bytes())
    )
}

fn ntfy(n: &Notice) -> Payload {
    let mut headers = vec![("Title", header_text(&n.subject, NTFY_TITLE_CHARS))];
    if let Some(link) = n.stories.iter().find_map(|s| s.link.as_deref()) {
        // safe_url output is ASCII (percent-encoded, punycode host) without spaces.
        headers.push(("Click", link.to_string()));
    }
    let mut tags = vec![match n.kind {
        DigestKind::Alert => "rotating_light".to_string(),
        DigestKind::Digest => "newspaper".to_string(),
    }];
    for s in &n.stories {
        for w in &s.watches {
            let ok = w
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if ok && !tags.contains(w) && tags.len() < 6 {
                tags.push(w.clone());
            }
        }
    }
    headers.push(("Tags", tags.join(",")));
    if n.kind == DigestKind::Alert {
        headers.push(("Priority", "high".to_string()));
    }
    // Reserve room for the longest "more" line.
    let reserve = more_text(usize::MAX).len() + 1;
    let mut body = String::new();
    let mut shown = 0;
    for s in &n.stories {
        let line = format!("• {} — {}\n", s.title, s.source);
        if body.len() + line.len() + reserve > NTFY_MAX_BODY_BYTES {
            break;
        }
        body.push_str(&line);
        shown += 1;
    }
    let left = n.stories.len() - shown + n.more;
    if left > 0 {
        body.push_str(&more_text(left));
        body.push('\n');
    }
    if body.is_empty() {
        body.push_str("No new stories.\n");
    }
    Payload {
        body: body.into_bytes(),
        content_type: "text/plain; charset=utf-8",
        headers,
        shown,
        summarised: left,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The JSON format, version 1 (documented in the README, "Webhooks").
fn json_payload(n: &Notice) -> Payload {
    let stories: Vec<Value> = n
        .stories
        .iter()
        .map(|s| {
            json!({
                "item_id": s.item_id,
                "watch": s.watch_id,
                "watches": s.watches,
                "title": s.title,
                "link": s.link,
                "lead": s.lead,
                "source": s.source,
                "lang": s.lang,
                "evidence": s.evidence,
                "why": s.why,
                "published_at": s.published.map(rfc3339),
                "first_seen_at": s.first_seen.map(rfc3339),
                "also_reported": s.also_reported.iter()
                    .map(|(src, link)| json!({"source": src, "link": link}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let v = json!({
        "schema": JSON_SCHEMA,
        "version": JSON_VERSION,
        "kind": n.kind.as_str(),
        "digest_id": n.digest_id,
        "delivery_id": n.delivery_id,
        "title": n.title,
        "subject": n.subject,
        "created_at": rfc3339(n.created_at),
        "stories": stories,
        "more": n.more,
        "feed_problems": n.feed_problems.iter()
            .map(|(f, p)| json!({"feed": f, "problem": p}))
            .collect::<Vec<_>>(),
    });
    json_ok(&v, n.stories.len(), n)
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` keyed with the secret.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A test message for `send-test`, in the endpoint's format.
pub fn test_notice(digest_id: &str, now: DateTime<Utc>) -> Notice {
    Notice {
        digest_id: digest_id.to_string(),
        delivery_id: format!("test.{}@policywatch", now.timestamp()),
        kind: DigestKind::Digest,
        title: "policywatch test message".into(),
        subject: "policywatch test message: if you can read this, digests will reach you".into(),
        created_at: now,
        stories: Vec::new(),
        more: 0,
        feed_problems: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sending.

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the webhook HTTP client: {0}")]
pub struct ClientError(String);

/// The HTTP client for webhooks: no redirects, rustls, our User-Agent. One per notifier.
pub fn client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .user_agent(crate::fetch::DEFAULT_USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ClientError(e.without_url().to_string()))
}

/// The receiver took the POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub status: u16,
    /// "HTTP 200: ok" — the status and the start of the answer, one line.
    pub reply: String,
}

/// A POST that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PostError {
    /// Retry later, or refused for good (decided by `retry`).
    pub verdict: WebhookVerdict,
    pub status: Option<u16>,
    /// The receiver's `Retry-After`, as a wait from its answer (an HTTP date is resolved
    /// against the attempt's clock; the caller adds it to its own).
    pub retry_after: Option<Duration>,
    /// What happened, one line, without the URL.
    pub message: String,
}

impl PostError {
    pub fn transient(&self) -> bool {
        self.verdict == WebhookVerdict::Retry
    }
}

/// POSTs `payload` once, within `ep.timeout` all told. `key` is the delivery's stable id.
pub async fn post(
    client: &reqwest::Client,
    ep: &Endpoint,
    payload: &Payload,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Accepted, PostError> {
    let mut req = client
        .post(ep.url.clone())
        .header(reqwest::header::CONTENT_TYPE, payload.content_type)
        .header("Idempotency-Key", key)
        .timeout(ep.timeout);
    for (k, v) in &payload.headers {
        req = req.header(*k, v.as_str());
    }
    if let Some(secret) = &ep.secret {
        req = req.header(SIGNATURE_HEADER, signature(secret, &payload.body));
    }
    let req = req.body(payload.body.clone());
    let exchange = async {
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut answer = Vec::new();
        while answer.len() < MAX_REPLY_BYTES {
            match resp.chunk().await {
                Ok(Some(c)) => answer.extend_from_slice(&c),
                // The status decides; a body cut short does not undo an acceptance.
                Ok(None) | Err(_) => break,
            }
        }
        answer.truncate(MAX_REPLY_BYTES);
        Ok::<_, reqwest::Error>((status, headers, answer))
    };
    let (status, headers, answer) = match tokio::time::timeout(ep.timeout, exchange).await {
        Err(_) => {
            return Err(no_answer(
                TransportFailure::Timeout,
                ep,
                "no answer in time",
            ))
        }
        Ok(Err(e)) => {
            let kind = if e.is_timeout() {
                TransportFailure::Timeout
            } else if e.is_builder() {
                TransportFailure::Config
            } else if e.is_redirect() {
                TransportFailure::Redirect
            } else {
                TransportFailure::Network
            };
            return Err(no_answer(kind, ep, &e.without_url().to_string()));
        }
        Ok(Ok(x)) => x,
    };
    let text = clean_short(&String::from_utf8_lossy(&answer), 200);
    let reply = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    match retry::webhook_status(status) {
        WebhookVerdict::Accepted => Ok(Accepted { status, reply }),
        verdict => {
            let hint = match status {
                300..=399 => "; the webhook URL redirects: put the new URL in the config",
                401 | 403 => {
                    "; the receiver refused us: the webhook may be revoked or need a new token"
                }
                404 | 410 => "; the webhook no longer exists: create a new one and update `url`",
                400 | 413 | 422 => "; the receiver rejected the message",
                _ => "",
            };
            Err(PostError {
                verdict,
                status: Some(status),
                retry_after: (verdict == WebhookVerdict::Retry)
                    .then(|| crate::fetch::retry_after(&headers, now))
                    .flatten()
                    .map(|at| (at - now).to_std().unwrap_or_default()),
                message: format!(
                    "{} answered {}{hint}",
                    ep.display_target(),
                    clean_line(&reply)
                ),
            })
        }
    }
}

fn no_answer(kind: TransportFailure, ep: &Endpoint, what: &str) -> PostError {
    let what = clean_short(what, 300);
    PostError {
        verdict: retry::webhook_transport(kind),
        status: None,
        retry_after: None,
        message: match kind {
            TransportFailure::Timeout => format!(
                "{}: {what} (within {})",
                ep.display_target(),
                humantime::format_duration(ep.timeout)
            ),
            _ => format!("{}: {what}", ep.display_target()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{FeedProblem, Section, Story};
    use crate::item::Field;
    use std::sync::Arc;

    fn ev(term: &str, concept: Option<&str>) -> Evidence {
        Evidence {
            term: Arc::from(term),
            set: concept.map(|_| Arc::from("set")),
            concept: concept.map(Arc::from),
            field: Field::Title,
            start: 0,
            end: 1,
        }
    }

    fn story(id: i64, title: &str) -> Story {
        Story {
            item_id: id,
            title: title.to_string(),
            link: Some(format!("https://news.policywatch.test/{id}")),
            feed_name: "Wire".into(),
            published: None,
            summary: format!("Lead of story {id}."),
            summary_field: Field::Summary,
            score: 10.0 - id as f64 / 1000.0,
            evidence: vec![ev("\"entity list\"", Some("Entity List"))],
            also_reported: Vec::new(),
            ..Default::default()
        }
    }

    fn digest_of(n: usize) -> Digest {
        Digest {
            id: "daily".into(),
            title: "policywatch daily digest".into(),
            generated_at: "2026-11-28T07:30:00Z".parse().unwrap(),
            timezone: chrono_tz::UTC,
            sections: vec![Section {
                watch_id: "export-controls".into(),
                watch_name: "Export controls".into(),
                stories: (0..n as i64)
                    .map(|i| story(i, &format!("Story {i}")))
                    .collect(),
            }],
            feed_health: vec![FeedProblem {
                feed_name: "Gone".into(),
                url: "https://x.test/f".into(),
                problem: "gone".into(),
            }],
            kind: DigestKind::Digest,
            detail: Default::default(),
            contact: None,
            deferred: 0,
        }
    }

    fn notice_of(n: usize) -> Notice {
        let limits = RenderLimits {
            max_stories: 1000,
            snippet_chars: 280,
            max_bytes: crate::digest::MAX_MESSAGE_BYTES,
        };
        notice(
            &digest_of(n),
            "id-1@policywatch",
            "2026-11-28T07:30:00Z".parse().unwrap(),
            &Extras::new(),
            &limits,
        )
    }

    fn parse(p: &Payload) -> Value {
        serde_json::from_slice(&p.body).expect("JSON body")
    }

    #[test]
    fn slack_stays_within_block_and_section_limits_and_counts_the_rest() {
        for n in [0, 1, 10, 47, 48, 200] {
            let p = render(Format::Slack, &notice_of(n));
            let v = parse(&p);
            let blocks = v["blocks"].as_array().unwrap();
            assert!(blocks.len() <= SLACK_MAX_BLOCKS, "{n}: {}", blocks.len());
            for b in blocks {
                if let Some(t) = b["text"]["text"].as_str() {
                    assert!(t.chars().count() <= SLACK_MAX_SECTION_CHARS);
                }
            }
            assert_eq!(p.shown + p.summarised, n, "{n}");
            if p.summarised > 0 {
                let more = format!("and {} more", p.summarised);
                assert!(
                    blocks.iter().any(|b| b["text"]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(&more))),
                    "{n}: {v}"
                );
            }
        }
        assert_eq!(render(Format::Slack, &notice_of(200)).shown, 46);
    }

    #[test]
    fn slack_escapes_feed_text_so_it_cannot_mention_or_link() {
        let mut d = digest_of(1);
        d.sections[0].stories[0].title = "<!channel> & <https://evil.test|click>".into();
        let n = notice(
            &d,
            "k",
            d.generated_at,
            &Extras::new(),
            &RenderLimits::default(),
        );
        let v = parse(&render(Format::Slack, &n));
        let text = v["blocks"][2]["text"]["text"].as_str().unwrap();
        assert!(
            text.contains("&lt;!channel&gt; &amp; &lt;https://evil.test|click&gt;"),
            "{text}"
        );
        assert!(
            text.starts_with("*<https://news.policywatch.test/0|"),
            "{text}"
        );
    }

    #[test]
    fn teams_and_ntfy_and_mattermost_respect_their_size_limits() {
        let mut d = digest_of(400);
        for s in &mut d.sections[0].stories {
            s.summary = "long lead ".repeat(100);
        }
        let n = notice(
            &d,
            "k",
            d.generated_at,
            &Extras::new(),
            &RenderLimits {
                max_stories: 400,
                snippet_chars: 280,
                max_bytes: crate::digest::MAX_MESSAGE_BYTES,
            },
        );
        let t = render(Format::Teams, &n);
        assert!(t.body.len() <= TEAMS_MAX_BYTES + 1024, "{}", t.body.len());
        assert!(t.summarised > 0 && t.shown > 5);
        assert_eq!(t.shown + t.summarised, 400);
        let body = String::from_utf8(t.body).unwrap();
        assert!(body.contains(&format!("and {} more stories", t.summarised)));
        let p = render(Format::Ntfy, &n);
        assert!(p.body.len() <= NTFY_MAX_BODY_BYTES);
        assert_eq!(p.shown + p.summarised, 400);
        let m = render(Format::Mattermost, &n);
        let v = parse(&m);
        let chars: usize = v["text"].as_str().unwrap().chars().count()
            + v["attachments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    a["text"].as_str().unwrap().chars().count()
                        + a["title"].as_str().unwrap().chars().count()
                })
                .sum::<usize>();
        assert!(chars <= MATTERMOST_MAX_CHARS, "{chars}");
        assert_eq!(m.shown + m.summarised, 400);
    }

    #[test]
    fn markdown_from_feeds_is_inert() {
        assert_eq!(
            md_escape("![x](http://t/p.png) *b*"),
            "\\!\\[x\\]\\(http://t/p.png\\) \\*b\\*"
        );
        assert_eq!(md_url("https://a.test/x_(y)"), "https://a.test/x_%28y%29");
    }

    #[test]
    fn header_values_are_ascii_single_lines() {
        assert_eq!(header_text("a\r\nX-Evil: 1", 100), "a X-Evil: 1");
        let h = header_text("出口管制 — 3 stories", 100);
        assert!(
            h.starts_with("=?UTF-8?B?") && h.ends_with("?=") && h.is_ascii(),
            "{h}"
        );
        use base64::Engine as _;
        let inner = &h["=?UTF-8?B?".len()..h.len() - 2];
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "出口管制 — 3 stories");
    }

    #[test]
    fn lang_codes_are_checked() {
        assert_eq!(lang_code("ZH"), Some("zh".into()));
        assert_eq!(lang_code("pt-BR"), Some("pt-BR".into()));
        assert_eq!(lang_code("en\"><x"), None);
        assert_eq!(lang_code(""), None);
    }

    #[test]
    fn signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = SecretSource {
            env: Some("K".into()),
            ..Default::default()
        }
        .read("secret", "secret", &|_| Some("Jefe".into()))
        .unwrap()
        .unwrap();
        assert_eq!(
            signature(&s, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_never_shows_the_token_or_the_secret() {
        let ep = Endpoint {
            url: "https://hooks.slack.test/services/T000/B000/XXXXSECRET"
                .parse()
                .unwrap(),
            format: Format::Slack,
            timeout: DEFAULT_TIMEOUT,
            secret: SecretSource {
                env: Some("K".into()),
                ..Default::default()
            }
            .read("secret", "secret", &|_| Some("hunter2".into()))
            .unwrap(),
        };
        let dbg = format!("{ep:?}");
        assert!(
            !dbg.contains("XXXXSECRET") && !dbg.contains("hunter2"),
            "{dbg}"
        );
        assert_eq!(ep.display_target(), "https://hooks.slack.test/…");
    }
}
