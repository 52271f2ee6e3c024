//! Turning fetched bytes into [`Item`]s: charset decoding, feed parsing (via feed-rs: RSS
//! 0.9x/1.0/2.0, Atom, JSON Feed), and normalisation into bounded plain text.
//!
//! In: the body bytes, the `Content-Type` header and the URL the body came from.
//! Out: a [`ParsedFeed`] (title, `<ttl>`, items with `feed_name`/`feed_tags` left empty for the
//! caller), or a [`FeedError`] — [`FeedError::NotAFeed`] carries the feed an HTML page
//! advertises, so the caller can switch to it and tell the user.
//!
//! Everything here is untrusted input. Sizes are bounded (see the `MAX_*` constants), text is cut
//! on char boundaries, control and bidi-override characters are removed, links are kept only
//! when they are absolute http(s) URLs, and the third-party parser runs under `catch_unwind`.
//! Parsing is synchronous CPU work over at most `http.max_body_bytes`; the daemon runs it in
//! `spawn_blocking`.
//!
//! # Charset precedence
//! We decode to UTF-8 ourselves and hand feed-rs UTF-8 with a rewritten XML declaration (it
//! would otherwise decode again by the declaration). Candidates, first that decodes *without
//! errors* wins:
//! 1. a byte-order mark (UTF-8/UTF-16LE/BE) — unambiguous;
//! 2. the `charset` of the `Content-Type` header — RFC 7303 gives it precedence over the
//!    document, and servers that transcode rely on that;
//! 3. the XML declaration's `encoding`;
//! 4. UTF-8; 5. windows-1252 (which decodes any byte, so decoding never fails).
//!
//! Two corrections for the common server mistakes, both detectable from the bytes: a declared
//! charset that does not decode (a "UTF-8" feed full of Latin-1 bytes) falls through to the next
//! candidate instead of producing U+FFFD soup; and a legacy charset from header or declaration
//! loses to UTF-8 when the body is valid UTF-8 *and* contains non-ASCII (a misconfigured server
//! saying `charset=ISO-8859-1` over a UTF-8 file) — a whole document of legacy text is
//! practically never valid UTF-8 by accident. UTF-16 from a header or declaration is only
//! believed when the bytes look like UTF-16 (`<` followed by NUL), because an ASCII document
//! read as UTF-16 "decodes" without error into CJK garbage. UTF-32 (not a WHATWG encoding, so
//! not in encoding_rs) is recognised by its BOM or byte pattern. Text that was double-encoded
//! upstream ("Viá»‡t") is repaired per text field, on unmistakable evidence only
//! ([`fix_mojibake`]).
//!
//! # Repairs
//! feed-rs is strict where real feeds are sloppy, and it fails or silently drops data. Before
//! or on retry (a few reparses at most) we: escape bare `&` and turn HTML-only
//! entities into numeric references (else the element's text is lost); read an `<rss>` root
//! with a version other than 2.0/0.91/0.92 (or none) as RSS 2.0; read Atom 0.3 as Atom 1.0;
//! give RSS 1.0 items without `<link>` their `rdf:about`; rewrite unknown or blank Atom text
//! `type`s to `text` and `application/xhtml+xml` to `xhtml`; and fill in a JSON Feed's missing
//! or loose `version`, missing `title` and string `tags`. An `<rss>` without a channel is an
//! empty feed. The corpus run (`tests/corpus_feeds.rs`) is what found each of these.

use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::time::Duration;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252};
use regex::Regex;
use url::Url;

use crate::item::Item;

mod recover;

/// Bounds on what one feed may put into the pipeline (bytes of UTF-8).
pub const MAX_TITLE_BYTES: usize = 1024;
pub const MAX_SUMMARY_BYTES: usize = 16 * 1024;
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
pub const MAX_LINK_BYTES: usize = 2048;
pub const MAX_GUID_BYTES: usize = 1024;
pub const MAX_NAME_BYTES: usize = 256;
pub const MAX_AUTHORS: usize = 16;
pub const MAX_CATEGORIES: usize = 32;
/// Items kept per feed (the first ones: feeds list newest first). Real feeds carry tens.
pub const MAX_ITEMS: usize = 500;
/// How much of an HTML page is scanned for `<link rel="alternate">` (it lives in `<head>`).
const ALTERNATE_SCAN_BYTES: usize = 512 * 1024;

/// A parsed feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed {
    /// Plain-text feed title.
    pub title: Option<String>,
    /// RSS `<ttl>`: how long the feed may be cached.
    pub ttl: Option<Duration>,
    /// Normalised items; `feed_name` and `feed_tags` are left empty for the caller.
    pub items: Vec<Item>,
    /// The charset the body was decoded from (for diagnostics: `policywatch check-feed`).
    pub encoding: &'static str,
    /// What recovery did that the operator should hear of: an item skipped, a title made up
    /// from the summary. Feed text, so unescaped: log it through `logging::untrusted`.
    pub warnings: Vec<ParseWarning>,
}

/// Something `parse` repaired with a loss, reported with the item it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseWarning {
    /// The item's `Item::dedup_key`, so the caller can report it once, when the item is
    /// new, rather than on every poll; `None` for the feed as a whole (an item skipped).
    pub item_key: Option<String>,
    pub message: String,
}

/// Words of the summary that stand in for a title that could not be read.
const FALLBACK_TITLE_WORDS: usize = 12;

/// Why a body is not a usable feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// An HTML page (or other non-feed document). `alternate` is the feed it advertises via
    /// `<link rel="alternate" type="application/rss+xml|atom+xml|feed+json">`, if any.
    #[error("{}", match .alternate {
        Some(u) => format!("not a feed: an HTML page that advertises its feed at {u}"),
        None => "not a feed: an HTML page or another kind of document, advertising no RSS, Atom or JSON feed".to_string(),
    })]
    NotAFeed { alternate: Option<Url> },
    /// Broken XML/JSON or a feed structure the parser rejects.
    #[error("invalid feed: {0}")]
    Invalid(String),
    /// The body was empty (or only whitespace).
    #[error("empty document")]
    Empty,
    /// The third-party parser panicked on this input (a bug there; the input is skipped).
    #[error("feed parser failed unexpectedly: {0}")]
    ParserPanic(String),
}

impl FeedError {
    /// Transient or permanent, as decided in [`crate::retry`].
    pub fn class(&self) -> crate::retry::FailureClass {
        use crate::retry::{classify_parse, ParseFailure};
        classify_parse(match self {
            FeedError::NotAFeed { .. } => ParseFailure::NotAFeed,
            FeedError::Invalid(_) => ParseFailure::Invalid,
            FeedError::Empty => ParseFailure::Empty,
            FeedError::ParserPanic(_) => ParseFailure::ParserPanic,
        })
    }
}

/// Parses a feed body. `base` is the URL it was fetched from (after redirects): relative links
/// are resolved against the entry's `xml:base`, then the feed's own link, then `base`.
pub fn parse(
    body: &[u8],
    content_type: Option<&str>,
    base: Option<&Url>,
) -> Result<ParsedFeed, FeedError> {
    let (text, encoding) = decode(body, content_type);
    let text = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if text.trim().is_empty() {
        return Err(FeedError::Empty);
    }
    if looks_like_html(text, content_type) {
        return Err(FeedError::NotAFeed {
            alternate: find_alternate(text, base),
        });
    }
    let mut doc: String = if text.starts_with('{') {
        text.to_string()
    } else {
        prepare_xml(text)
    };

    let parser = feed_rs::parser::Builder::new()
        // No base URI for feed-rs: it would resolve relative item links against the document
        // URL before we can prefer the feed's site link (see `normalise`).
        // No invented IDs: a missing GUID must stay missing so `Item::dedup_key` falls back to
        // the link, then the content hash. feed-rs would otherwise mint a random UUID for
        // link-less, title-less entries and every poll would see a "new" story.
        .id_generator(|_, _, _| String::new())
        .build();

    // feed-rs rejects a whole feed for a few defects that are local to one element; each retry
    // repairs one such defect (bounded, so a hostile document costs a few parses at most).
    let mut repairs = 0;
    let feed = loop {
        use feed_rs::parser::{ParseErrorKind, ParseFeedError};
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| parser.parse(doc.as_bytes())));
        let err = match result {
            Ok(Ok(feed)) => break feed,
            Ok(Err(e)) => e,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                return Err(FeedError::ParserPanic(bounded(&msg, 300)));
            }
        };
        let repaired = match &err {
            _ if repairs >= MAX_REPAIRS => None,
            ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
                if is_channel_less_rss(&doc) {
                    // `<rss>` with nothing inside: well-formed and says it is RSS, so it is an
                    // empty feed, not "not a feed".
                    return Ok(ParsedFeed {
                        title: None,
                        ttl: None,
                        items: Vec::new(),
                        encoding,
                        warnings: Vec::new(),
                    });
                }
                return Err(FeedError::NotAFeed {
                    alternate: find_alternate(text, base),
                });
            }
            ParseFeedError::ParseError(ParseErrorKind::UnknownMimeType(mime)) => {
                neutralise_type_attr(&doc, mime)
            }
            ParseFeedError::ParseError(ParseErrorKind::MissingContent(_)) => {
                inline_xhtml_as_xhtml(&doc)
            }
            ParseFeedError::JsonUnsupportedVersion(_) | ParseFeedError::JsonSerde(_) => {
                repair_json_feed(&doc)
            }
            _ => None,
        };
        match repaired {
            Some(d) if d != doc => {
                doc = d;
                repairs += 1;
            }
            _ => {
                let invalid = FeedError::Invalid(bounded(&err.to_string(), 300));
                // One item feed-rs cannot read must not take the others with it.
                return match parse_items_separately(&parser, &doc) {
                    Some((feed, skipped)) => {
                        let mut parsed = normalise(feed, base, encoding);
                        if skipped > 0 {
                            parsed.warnings.push(ParseWarning {
                                item_key: None,
                                message: format!(
                                    "{skipped} item(s) could not be read and were skipped ({invalid})"
                                ),
                            });
                        }
                        Ok(parsed)
                    }
                    None => Err(invalid),
                };
            }
        }
    };
    Ok(normalise(feed, base, encoding))
}

/// feed-rs under `catch_unwind`: a panic is an error like any other here.
fn parse_caught(parser: &feed_rs::parser::Parser, doc: &str) -> Option<feed_rs::model::Feed> {
    std::panic::catch_unwind(AssertUnwindSafe(|| parser.parse(doc.as_bytes())))
        .ok()?
        .ok()
}

/// The fallback when the whole XML document does not parse: each item parsed on its own
/// (see [`recover::split_items`]), the feed's title from the document without its items.
/// Returns the feed and how many items were skipped, or `None` when no item parsed.
fn parse_items_separately(
    parser: &feed_rs::parser::Parser,
    doc: &str,
) -> Option<(feed_rs::model::Feed, usize)> {
    if doc.starts_with('{') {
        return None;
    }
    let (rest, items) = recover::split_items(doc, MAX_ITEMS)?;
    let mut entries = Vec::new();
    let mut first = None;
    let mut skipped = 0;
    for item in &items {
        match parse_caught(parser, item) {
            Some(mut f) => {
                entries.append(&mut f.entries);
                first.get_or_insert(f);
            }
            None => skipped += 1,
        }
    }
    let mut feed = match parse_caught(parser, &rest) {
        Some(f) => f,
        None => first?,
    };
    if entries.is_empty() {
        return None;
    }
    feed.entries = entries;
    Some((feed, skipped))
}

// ---------------------------------------------------------------------------------------------
// Charset decoding
// ---------------------------------------------------------------------------------------------

/// Decodes `body` to UTF-8 following the precedence in the module docs. Never fails.
/// Returns the text and the name of the charset it was decoded from.
pub fn decode(body: &[u8], content_type: Option<&str>) -> (String, &'static str) {
    if let Some(decoded) = decode_utf32(body) {
        return decoded;
    }
    let (text, enc) = decode_whatwg(body, content_type);
    (text, enc.name())
}

/// UTF-32, which encoding_rs (WHATWG encodings only) does not cover: recognised by its BOM or by
/// the `<` of the document start, whatever the labels say (nothing else has those bytes).
fn decode_utf32(body: &[u8]) -> Option<(String, &'static str)> {
    let (le, skip) = match body {
        [0xff, 0xfe, 0, 0, ..] => (true, 4),
        [0, 0, 0xfe, 0xff, ..] => (false, 4),
        [b'<', 0, 0, 0, ..] => (true, 0),
        [0, 0, 0, b'<', ..] => (false, 0),
        _ => return None,
    };
    let text = body[skip..]
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            let n = if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            };
            char::from_u32(n).unwrap_or('\u{fffd}')
        })
        .collect();
    Some((text, if le { "UTF-32LE" } else { "UTF-32BE" }))
}

fn decode_whatwg(body: &[u8], content_type: Option<&str>) -> (String, &'static Encoding) {
    let bom = Encoding::for_bom(body);
    let header = content_type.and_then(header_charset);
    let decl = xml_decl_charset(body);

    let mut candidates: Vec<(&'static Encoding, bool)> = Vec::with_capacity(5);
    if let Some((enc, _)) = bom {
        candidates.push((enc, true));
    }
    for enc in [header, decl].into_iter().flatten() {
        if is_utf16(enc) && !looks_like_utf16(body) {
            continue;
        }
        candidates.push((enc, false));
    }
    candidates.push((UTF_8, false));
    candidates.push((WINDOWS_1252, false));

    for (enc, from_bom) in candidates {
        let bytes = match bom {
            Some((b, len)) if b == enc => &body[len..],
            _ => body,
        };
        let Some(text) = enc.decode_without_bom_handling_and_without_replacement(bytes) else {
            continue;
        };
        // A legacy charset from a header or declaration over a body that is valid UTF-8 with
        // non-ASCII content: the label is the mistake, not the bytes.
        if !from_bom && enc != UTF_8 && !is_utf16(enc) && !body.is_ascii() {
            if let Ok(s) = std::str::from_utf8(bytes) {
                return (s.to_string(), UTF_8);
            }
        }
        return (text.into_owned(), enc);
    }
    // Unreachable in practice (windows-1252 decodes every byte), but never panic on input.
    (String::from_utf8_lossy(body).into_owned(), UTF_8)
}

fn is_utf16(enc: &'static Encoding) -> bool {
    enc == UTF_16LE || enc == UTF_16BE
}

fn looks_like_utf16(body: &[u8]) -> bool {
    matches!(body, [b'<', 0, ..] | [0, b'<', ..])
}

/// The `charset` parameter of a `Content-Type` value, if encoding_rs knows the label.
fn header_charset(ct: &str) -> Option<&'static Encoding> {
    ct.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        Encoding::for_label(v.trim().trim_matches(|c| c == '"' || c == '\'').as_bytes())
    })
}

/// The `encoding` of the XML declaration, read as ASCII (or as UTF-16 when the bytes are).
fn xml_decl_charset(body: &[u8]) -> Option<&'static Encoding> {
    let body = match Encoding::for_bom(body) {
        Some((_, len)) => &body[len..],
        None => body,
    };
    // UTF-16 without BOM: the declaration itself tells us the byte order.
    if body.starts_with(&[b'<', 0, b'?', 0]) {
        return Some(UTF_16LE);
    }
    if body.starts_with(&[0, b'<', 0, b'?']) {
        return Some(UTF_16BE);
    }
    let head = &body[..body.len().min(1024)];
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &head[start..];
    if !is_xml_decl_start(head) {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let caps = DECL_ENCODING.captures(decl)?;
    let label = caps.get(1).or_else(|| caps.get(2))?.as_str();
    Encoding::for_label(label.trim().as_bytes())
}

fn is_xml_decl_start(b: &[u8]) -> bool {
    b.starts_with(b"<?xml") && b.get(5).is_some_and(|c| c.is_ascii_whitespace())
}

static DECL_ENCODING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bencoding\s*=\s*(?:"([^"]*)"|'([^']*)')"#).expect("static regex")
});

/// Replaces the XML declaration (whose `encoding` no longer describes the now-UTF-8 text) with
/// a plain UTF-8 one. Leaves JSON and declaration-less XML alone.
fn fix_xml_declaration(text: &str) -> std::borrow::Cow<'_, str> {
    // `<?xml-stylesheet ...?>` is a processing instruction, not the declaration.
    if !is_xml_decl_start(text.as_bytes()) {
        return text.into();
    }
    match text.get(..text.len().min(1024)).and_then(|h| h.find("?>")) {
        Some(end) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>{}",
            &text[end + 2..]
        )
        .into(),
        None => text.into(),
    }
}

/// Repairs tried per document before giving up (see [`parse`]).
const MAX_REPAIRS: usize = 4;

/// The XML as feed-rs should see it: UTF-8 declaration, Atom 0.3 namespace read as Atom 1.0,
/// bare `&` and HTML-only entities made well-formed (see [`repair_entities`]),
/// and an `<rss>` root whose `version` feed-rs does not dispatch on (missing, "0.93", "0.94",
/// "2.0.1", " 2.0") presented as RSS 2.0, a superset of them all. feed-rs only recognises
/// `version="2.0"`, `"0.91"` and `"0.92"` and would otherwise call such feeds "not a feed".
fn prepare_xml(text: &str) -> String {
    let decl = fix_xml_declaration(text);
    let refs = recover::fix_char_refs(&decl);
    let entities = repair_entities(&refs);
    let mut doc = recover::balance_tags(&entities).into_owned();
    if let Some((start, end)) = root_tag(&doc) {
        let tag = &doc[start..end];
        let is_rdf = tag_at(tag).is_some_and(|(name, _, _)| name == "rdf:rdf" || name == "rdf");
        if is_rdf {
            if let Some(fixed) = rdf_items_with_links(&doc) {
                doc = fixed;
            }
        } else if tag.contains("http://purl.org/atom/ns#") {
            // Atom 0.3: same element names for most of what we read (entries, titles, links,
            // summaries, content); the namespace differs, and the dates are `issued` and
            // `modified` where 1.0 has `published` and `updated`.
            doc = doc.replace("http://purl.org/atom/ns#", "http://www.w3.org/2005/Atom");
            for (old, new) in [("issued>", "published>"), ("modified>", "updated>")] {
                doc = doc.replace(&format!("<{old}"), &format!("<{new}"));
                doc = doc.replace(&format!("</{old}"), &format!("</{new}"));
            }
        } else if tag.starts_with("<rss")
            && tag[4..].starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/')
        {
            let version = ATTR
                .captures_iter(tag)
                .find(|c| c.get(1).is_some_and(|n| n.as_str() == "version"))
                .and_then(|c| c.get(2).or_else(|| c.get(3)).or_else(|| c.get(4)))
                .map(|m| m.as_str().to_string());
            if !matches!(version.as_deref(), Some("2.0" | "0.91" | "0.92")) {
                let without: String = match version {
                    Some(_) => VERSION_ATTR.replace(tag, "").into_owned(),
                    None => tag.to_string(),
                };
                let fixed = format!("<rss version=\"2.0\"{}", &without[4..]);
                doc.replace_range(start..end, &fixed);
            }
        }
    }
    doc
}

/// Makes the commonest defect of hand-made feeds well-formed: a bare `&` ("AT&T") and HTML
/// entities that XML does not define (`&nbsp;`, `&eacute;`). quick-xml stops at them, and
/// feed-rs then silently drops the whole text of the element. A bare `&` becomes `&amp;`; a
/// known HTML entity becomes numeric references; an unknown `&name;` becomes literal text.
/// CDATA sections, comments and processing instructions are left alone, and so is any document
/// that declares its own entities.
fn repair_entities(doc: &str) -> String {
    if !doc.contains('&') || doc.contains("<!ENTITY") {
        return doc.to_string();
    }
    let mut out = String::with_capacity(doc.len() + 64);
    let mut i = 0;
    while i < doc.len() {
        let rest = &doc[i..];
        let Some(p) = rest.find(['&', '<']) else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..p]);
        i += p;
        let rest = &doc[i..];
        if rest.starts_with('<') {
            // Copy markup that must not be touched verbatim, up to its end.
            let close = [("<![CDATA[", "]]>"), ("<!--", "-->"), ("<?", "?>")]
                .into_iter()
                .find(|(open, _)| rest.starts_with(open))
                .map(|(_, close)| close);
            let len = match close {
                Some(c) => rest.find(c).map(|q| q + c.len()).unwrap_or(rest.len()),
                None => 1,
            };
            out.push_str(&rest[..len]);
            i += len;
            continue;
        }
        // An '&': keep valid references, repair the rest.
        let end = rest.bytes().take(40).position(|b| b == b';');
        let name = end.map(|e| &rest[1..e]);
        let valid_numeric = name.is_some_and(|n| {
            n.strip_prefix("#x")
                .or_else(|| n.strip_prefix("#X"))
                .map(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .or_else(|| {
                    n.strip_prefix('#')
                        .map(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
                .unwrap_or(false)
        });
        let is_name = name.is_some_and(|n| {
            n.starts_with(|c: char| c.is_ascii_alphabetic())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        });
        match (name, end) {
            (Some(_), Some(e)) if valid_numeric => {
                out.push_str(&rest[..=e]);
                i += e + 1;
            }
            (Some(n), Some(e)) if is_name => {
                if matches!(n, "amp" | "lt" | "gt" | "quot" | "apos") {
                    out.push_str(&rest[..=e]);
                } else if let Some(text) = quick_xml::escape::resolve_html5_entity(n) {
                    for c in text.chars() {
                        out.push_str(&format!("&#{};", u32::from(c)));
                    }
                } else {
                    out.push_str("&amp;");
                    out.push_str(&rest[1..=e]);
                }
                i += e + 1;
            }
            _ => {
                out.push_str("&amp;");
                i += 1;
            }
        }
    }
    out
}

/// RSS 1.0 items must have a `<link>`, and feed-rs drops those that do not — losing their
/// title and description. Such an item gets its `rdf:about` as link (it is the item's URI,
/// normally equal to the link), or `about:invalid`, which [`resolve`] later drops, so the item
/// survives without a link. Returns `None` when nothing needed fixing.
fn rdf_items_with_links(doc: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(p) = doc[search..].find("<item") {
        let start = search + p;
        search = start + "<item".len();
        let Some((name, false, len)) = tag_at(&doc[start..]) else {
            continue;
        };
        let tag = &doc[start..start + len];
        if name != "item" || tag.ends_with("/>") {
            continue;
        }
        let body_start = start + len;
        let body_end = doc[body_start..]
            .find("</item")
            .map_or(doc.len(), |q| body_start + q);
        search = body_end;
        if doc[body_start..body_end].contains("<link") {
            continue;
        }
        let about = ATTR
            .captures_iter(tag)
            .find(|c| c.get(1).is_some_and(|n| n.as_str() == "rdf:about"))
            .and_then(|c| c.get(2).or_else(|| c.get(3)).or_else(|| c.get(4)))
            .map_or("about:invalid", |m| m.as_str());
        out.push_str(&doc[copied..body_start]);
        out.push_str("<link>");
        out.push_str(about);
        out.push_str("</link>");
        copied = body_start;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&doc[copied..]);
    Some(out)
}

static VERSION_ATTR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\sversion\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+)"#).expect("static regex")
});

/// Byte range of the root element's start tag, after the prolog (declaration, processing
/// instructions, comments, doctype).
fn root_tag(doc: &str) -> Option<(usize, usize)> {
    let mut pos = 0;
    for _ in 0..64 {
        let rest = &doc[pos..];
        let skip = rest.len() - rest.trim_start().len();
        pos += skip;
        let rest = &doc[pos..];
        let close = if rest.starts_with("<?") {
            "?>"
        } else if rest.starts_with("<!--") {
            "-->"
        } else if rest.starts_with("<!") {
            ">"
        } else if rest.starts_with('<') {
            let (_, _, len) = tag_at(rest)?;
            return Some((pos, pos + len));
        } else {
            return None;
        };
        pos += rest.find(close)? + close.len();
    }
    None
}

/// Whether the document is an `<rss>` root without a `<channel>` (feed-rs: "no feed root").
fn is_channel_less_rss(doc: &str) -> bool {
    root_tag(doc).is_some_and(|(s, _)| doc[s..].starts_with("<rss")) && !doc.contains("<channel")
}

/// feed-rs refuses a whole feed over one text construct with a `type` it does not know
/// (`application/octet-stream` for base64, a made-up `application/x-custom`, `text/plain`
/// where Atom wants `text`). Rewrites exactly that type value to `text`, so the element is
/// read as plain text. The standard values are left alone: rewriting `html` everywhere would
/// turn every HTML summary into "plain text" full of tags.
fn neutralise_type_attr(doc: &str, mime: &str) -> Option<String> {
    if matches!(mime, "text" | "html" | "xhtml") {
        return None;
    }
    let mut out = doc.to_string();
    for q in ['"', '\''] {
        out = out.replace(&format!("type={q}{mime}{q}"), "type=\"text\"");
    }
    Some(out)
}

/// Atom content typed `application/xhtml+xml` holds inline XHTML (Atom 0.3 wrote all XHTML
/// that way; Atom 1.0 allows it). feed-rs 2.4 does not recognise that type as XML and fails
/// the whole feed with "missing content", so it is rewritten to the equivalent `xhtml`.
fn inline_xhtml_as_xhtml(doc: &str) -> Option<String> {
    let mut out = doc.to_string();
    for q in ['"', '\''] {
        out = out.replace(
            &format!("type={q}application/xhtml+xml{q}"),
            "type=\"xhtml\"",
        );
    }
    (out != doc).then_some(out)
}

/// JSON Feeds in the wild: `"version"` missing or written as `"1.0"` or with `http:`, and
/// `"tags"` given as one comma-separated string. feed-rs rejects all of these outright.
fn repair_json_feed(doc: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(doc).ok()?;
    let obj = v.as_object_mut()?;
    let version_ok = obj
        .get("version")
        .and_then(|v| v.as_str())
        .is_some_and(|s| s.starts_with("https://jsonfeed.org/version/1"));
    if !version_ok {
        obj.insert(
            "version".into(),
            serde_json::Value::String("https://jsonfeed.org/version/1.1".into()),
        );
    }
    // JSON Feed requires a title; feeds that leave it out are otherwise fine.
    if !obj.get("title").is_some_and(|t| t.is_string()) {
        obj.insert("title".into(), serde_json::Value::String(String::new()));
    }
    if let Some(items) = obj.get_mut("items").and_then(|i| i.as_array_mut()) {
        for item in items.iter_mut().filter_map(|i| i.as_object_mut()) {
            if let Some(serde_json::Value::String(tags)) = item.get("tags") {
                let list = tags
                    .split(',')
                    .map(|t| serde_json::Value::String(t.trim().to_string()))
                    .collect();
                item.insert("tags".into(), serde_json::Value::Array(list));
            }
        }
    }
    serde_json::to_string(&v).ok()
}

// ---------------------------------------------------------------------------------------------
// HTML pages instead of feeds
// ---------------------------------------------------------------------------------------------

/// Whether the document is an HTML page: its first element (after prolog, comments and
/// doctype) is `<html>`, or it has an HTML doctype, or the server says `text/html` and the
/// first element is not a feed root.
fn looks_like_html(text: &str, content_type: Option<&str>) -> bool {
    if text.starts_with('{') || text.starts_with('[') {
        return false;
    }
    let mut rest = text;
    // Skip the prolog: XML declaration, processing instructions, comments, doctype.
    for _ in 0..64 {
        rest = rest.trim_start();
        if rest.starts_with("<?") || rest.starts_with("<!--") {
            let close = if rest.starts_with("<?") { "?>" } else { "-->" };
            match rest.find(close) {
                Some(p) => rest = &rest[p + close.len()..],
                None => return false,
            }
        } else if starts_with_ci(rest, "<!doctype") {
            if starts_with_ci(rest["<!doctype".len()..].trim_start(), "html") {
                return true;
            }
            match rest.find('>') {
                Some(p) => rest = &rest[p + 1..],
                None => return false,
            }
        } else {
            break;
        }
    }
    if starts_with_ci(rest, "<html") {
        return true;
    }
    let is_html_ct = content_type
        .map(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/html")
        })
        .unwrap_or(false);
    if is_html_ct {
        let root = rest.get(1..).unwrap_or("");
        let is_feed_root = ["rss", "feed", "rdf:rdf", "rdf", "channel"]
            .iter()
            .any(|r| starts_with_ci(root, r));
        return !is_feed_root;
    }
    false
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

static LINK_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)<link\b[^>]*>").expect("static regex"));
static ATTR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?s)([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))"#)
        .expect("static regex")
});

/// The feed an HTML page advertises with `<link rel="alternate" type=...>`, resolved against
/// `base`. RSS, Atom, JSON Feed (and RDF) types only; the first one wins (sites list their
/// main feed first).
pub fn find_alternate(html: &str, base: Option<&Url>) -> Option<Url> {
    const FEED_TYPES: [&str; 5] = [
        "application/rss+xml",
        "application/atom+xml",
        "application/feed+json",
        "application/rdf+xml",
        "application/json",
    ];
    let mut cut = html.len().min(ALTERNATE_SCAN_BYTES);
    while !html.is_char_boundary(cut) {
        cut -= 1;
    }
    for tag in LINK_TAG.find_iter(&html[..cut]) {
        let (mut rel, mut ty, mut href) = (None, None, None);
        for c in ATTR.captures_iter(tag.as_str()) {
            let value = c
                .get(2)
                .or_else(|| c.get(3))
                .or_else(|| c.get(4))
                .map(|m| m.as_str());
            match c.get(1).map(|m| m.as_str().to_ascii_lowercase()).as_deref() {
                Some("rel") => rel = value,
                Some("type") => ty = value,
                Some("href") => href = value,
                _ => {}
            }
        }
        let is_alternate = rel
            .map(|r| {
                r.split_ascii_whitespace()
                    .any(|t| t.eq_ignore_ascii_case("alternate"))
            })
            .unwrap_or(false);
        let is_feed = ty
            .map(|t| {
                let t = t
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                FEED_TYPES.contains(&t.as_str())
            })
            .unwrap_or(false);
        let Some(href) = href.filter(|_| is_alternate && is_feed) else {
            continue;
        };
        // Attribute values are HTML: `&amp;` in a query string is common.
        let href = decode_entities(href.trim());
        let url = match base {
            Some(b) => b.join(&href).ok(),
            None => Url::parse(&href).ok(),
        };
        if let Some(u) = url.filter(|u| matches!(u.scheme(), "http" | "https")) {
            return Some(u);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Normalisation into Items
// ---------------------------------------------------------------------------------------------

fn normalise(feed: feed_rs::model::Feed, base: Option<&Url>, encoding: &'static str) -> ParsedFeed {
    use feed_rs::model::FeedType;
    // RSS has no markup typing: titles and descriptions routinely carry HTML and entities, so
    // everything from RSS is treated as HTML. Atom and JSON Feed say what they carry.
    let rss = matches!(
        feed.feed_type,
        FeedType::RSS0 | FeedType::RSS1 | FeedType::RSS2
    );
    let feed_link = feed
        .links
        .iter()
        .find(|l| l.rel.as_deref().map_or(true, |r| r == "alternate"))
        .and_then(|l| resolve(&l.href, &[base]));
    // Relative entry links are resolved against the entry's xml:base, then the feed's own
    // (absolute) site link, then the URL the document came from. The site link goes first
    // because feeds served from a feed host or CDN write item links relative to the site.
    let feed_base = feed_link.or_else(|| base.cloned());

    let mut warnings = Vec::new();
    let items = kept_entries(&feed.entries)
        .map(|e| {
            let mut item = entry_to_item(e, rss, feed_base.as_ref());
            if e.title.is_some() && item.title.is_empty() {
                // The item had a title we could not read: its summary's first words stand in,
                // so it still reads (and matches) as a story, and the operator hears of it.
                let source = if item.summary.is_empty() {
                    &item.content
                } else {
                    &item.summary
                };
                item.title = first_words(source, FALLBACK_TITLE_WORDS);
                if !item.title.is_empty() {
                    warnings.push(ParseWarning {
                        item_key: Some(item.dedup_key()),
                        message: format!(
                            "an item's title could not be read; using its first words: {}",
                            item.title
                        ),
                    });
                }
            }
            item
        })
        .collect();
    ParsedFeed {
        title: feed
            .title
            .as_ref()
            .map(|t| headline(text_value(t, rss, MAX_TITLE_BYTES)))
            .filter(|t| !t.is_empty()),
        ttl: feed.ttl.map(|m| Duration::from_secs(u64::from(m) * 60)),
        items,
        encoding,
        warnings,
    }
}

/// The first `n` words of `text`, with `…` when there were more.
fn first_words(text: &str, n: usize) -> String {
    let mut words = text.split_whitespace();
    let mut out: Vec<&str> = words.by_ref().take(n).collect();
    let more = words.next().is_some();
    let last = out.pop();
    let mut s = out.join(" ");
    if let Some(w) = last {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(w.trim_end_matches('…'));
    }
    if more {
        s.push('…');
    }
    bounded(&s, MAX_TITLE_BYTES)
}

/// Bidi marks (LRM U+200E, RLM U+200F, ALM U+061C): invisible, and in a headline only
/// formatting — which in a mail header or a log line they are not allowed to do. Titles lose
/// them at parse time; summaries and content keep them, as they can matter for how a
/// mixed-direction paragraph reads. (Embeddings, overrides and isolates go everywhere:
/// see [`is_unwanted`].)
pub fn is_bidi_mark(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// A headline without bidi marks, its spaces collapsed again where a mark sat between two.
fn headline(s: String) -> String {
    if !s.contains(is_bidi_mark) {
        return s;
    }
    s.replace(is_bidi_mark, "")
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The entries to keep, in document order: all of them up to [`MAX_ITEMS`]; beyond that the
/// newest by date (undated ones last), because a feed listed oldest-first must not lose
/// exactly the stories that are new.
fn kept_entries(
    entries: &[feed_rs::model::Entry],
) -> impl Iterator<Item = &feed_rs::model::Entry> + '_ {
    let mut keep: Vec<usize> = (0..entries.len()).collect();
    if entries.len() > MAX_ITEMS {
        let date = |i: &usize| entries[*i].published.or(entries[*i].updated);
        // Stable sort: among equal (or missing) dates, document order decides.
        keep.sort_by_key(|i| std::cmp::Reverse(date(i)));
        keep.truncate(MAX_ITEMS);
        keep.sort_unstable();
    }
    keep.into_iter().map(move |i| &entries[i])
}

fn entry_to_item(e: &feed_rs::model::Entry, rss: bool, feed_base: Option<&Url>) -> Item {
    let entry_base = e.base.as_deref().and_then(|b| resolve(b, &[feed_base]));
    let link = e
        .links
        .iter()
        .find(|l| {
            l.rel
                .as_deref()
                .map_or(true, |r| r.eq_ignore_ascii_case("alternate"))
        })
        .or_else(|| e.links.first())
        .and_then(|l| resolve(&l.href, &[entry_base.as_ref(), feed_base]))
        .map(String::from)
        .filter(|l| l.len() <= MAX_LINK_BYTES);

    let content = e
        .content
        .as_ref()
        .and_then(|c| {
            let body = c.body.as_deref()?;
            let html = rss || is_html_type(c.content_type.as_ref());
            Some(if html {
                html_to_text(body, MAX_CONTENT_BYTES)
            } else {
                plain_text(body, MAX_CONTENT_BYTES)
            })
        })
        .unwrap_or_default();

    let mut authors: Vec<String> = Vec::new();
    for p in &e.authors {
        let name = if p.name.trim().is_empty() {
            p.email.as_deref().unwrap_or("")
        } else {
            &p.name
        };
        let name = plain_text(name, MAX_NAME_BYTES);
        if !name.is_empty() && !authors.contains(&name) && authors.len() < MAX_AUTHORS {
            authors.push(name);
        }
    }
    let mut categories: Vec<String> = Vec::new();
    for c in &e.categories {
        let label = c
            .label
            .as_deref()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or(&c.term);
        let label = plain_text(label, MAX_NAME_BYTES);
        if !label.is_empty() && !categories.contains(&label) && categories.len() < MAX_CATEGORIES {
            categories.push(label);
        }
    }

    Item {
        guid: Some(plain_text(&e.id, MAX_GUID_BYTES)).filter(|g| !g.is_empty()),
        link,
        title: e
            .title
            .as_ref()
            .map(|t| headline(text_value(t, rss, MAX_TITLE_BYTES)))
            .unwrap_or_default(),
        summary: e
            .summary
            .as_ref()
            .map(|t| text_value(t, rss, MAX_SUMMARY_BYTES))
            .unwrap_or_default(),
        content,
        authors,
        categories,
        published: e.published.or(e.updated),
        feed_name: String::new(),
        feed_tags: Vec::new(),
        lang: None,
    }
}

fn is_html_type(ct: &str) -> bool {
    let ct = ct.to_ascii_lowercase();
    ct.contains("html")
}

fn text_value(t: &feed_rs::model::Text, rss: bool, max: usize) -> String {
    // Atom 0.3 `mode="xml"` XHTML arrives labelled plain text but is a namespaced `<div>`.
    let xhtml_div = t.content.trim_start().starts_with("<div")
        && t.content.contains("http://www.w3.org/1999/xhtml");
    if rss || xhtml_div || is_html_type(t.content_type.as_ref()) {
        html_to_text(&t.content, max)
    } else {
        plain_text(&t.content, max)
    }
}

/// Resolves `href` against the first base that works; keeps only absolute http(s) URLs (a
/// `javascript:` or `data:` link must never reach a rendered digest).
fn resolve(href: &str, bases: &[Option<&Url>]) -> Option<Url> {
    let href = href.trim();
    if href.is_empty() {
        return None;
    }
    let url = Url::parse(href)
        .ok()
        .or_else(|| bases.iter().flatten().find_map(|b| b.join(href).ok()))?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

// ---------------------------------------------------------------------------------------------
// Plain text: HTML stripping, entity decoding, whitespace and control characters
// ---------------------------------------------------------------------------------------------

/// Collects plain text: collapses whitespace runs to one space, trims, drops control and
/// bidi-override characters, and stops at `max` bytes, ending a cut text with `…`.
struct TextSink {
    out: String,
    max: usize,
    pending_space: bool,
    full: bool,
}

impl TextSink {
    fn new(max: usize) -> Self {
        TextSink {
            out: String::new(),
            max,
            pending_space: false,
            full: false,
        }
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            if self.full {
                return;
            }
            self.push(c);
        }
    }

    fn push(&mut self, c: char) {
        // C1 controls in feed text are windows-1252 bytes that went through a Latin-1 decoder
        // (or `&#146;` references): read them as windows-1252, as HTML5 does.
        let c = if ('\u{80}'..='\u{9f}').contains(&c) {
            CP1252_HIGH[c as usize - 0x80]
        } else {
            c
        };
        if c.is_whitespace() {
            self.pending_space = true;
            return;
        }
        // The five bytes windows-1252 leaves undefined survive as C1 controls until `finish`,
        // where they may still be part of double-encoded UTF-8 (the 0x8F of "出").
        if is_unwanted(c) && !is_undefined_cp1252(c) {
            return;
        }
        let space = self.pending_space && !self.out.is_empty();
        let need = c.len_utf8() + usize::from(space);
        if self.out.len() + need > self.max {
            self.cut();
            return;
        }
        if space {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.out.push(c);
    }

    /// Marks the text as cut and makes room for the ellipsis within the bound.
    fn cut(&mut self) {
        self.full = true;
        const ELLIPSIS: char = '…';
        while !self.out.is_empty() && self.out.len() + ELLIPSIS.len_utf8() > self.max {
            self.out.pop();
        }
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        if self.out.len() + ELLIPSIS.len_utf8() <= self.max {
            self.out.push(ELLIPSIS);
        }
    }

    fn finish(self) -> String {
        // Repair double-encoding before returning; the ellipsis of a cut text is itself a
        // windows-1252 character, so keep it out of the repair.
        let mut out = match self.out.strip_suffix('…').filter(|_| self.full) {
            Some(body) => format!("{}…", fix_mojibake(body)),
            None => fix_mojibake(&self.out).into_owned(),
        };
        if out.contains(is_undefined_cp1252) {
            out.retain(|c| !is_undefined_cp1252(c));
        }
        out
    }
}

fn is_undefined_cp1252(c: char) -> bool {
    matches!(c, '\u{81}' | '\u{8d}' | '\u{8f}' | '\u{90}' | '\u{9d}')
}

/// windows-1252 characters for bytes 0x80–0x9F (the five undefined bytes stay C1 controls
/// and are dropped as such).
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// The byte a character stands for when UTF-8 was misread as windows-1252 / Latin-1.
fn mojibake_byte(c: char) -> Option<u8> {
    let n = u32::from(c);
    if (0xa0..=0xff).contains(&n) || (0x80..=0x9f).contains(&n) {
        return u8::try_from(n).ok();
    }
    CP1252_HIGH
        .iter()
        .position(|&x| x == c)
        .and_then(|i| u8::try_from(0x80 + i).ok())
}

/// Repairs UTF-8 that was decoded as windows-1252 somewhere upstream ("Viá»‡t Nam" →
/// "Việt Nam", "â€™" → "’"), which no charset choice of ours can undo: the feed itself
/// carries the wrong characters.
///
/// A run of non-ASCII characters is a candidate when, read back as windows-1252 bytes, it is
/// valid UTF-8 as a whole. That alone is not proof: French "doué\u{a0}»" (é, no-break space,
/// guillemet) is valid UTF-8 too. So the text is repaired only if at least one candidate is
/// unmistakable — it contains a character of the 0x80–0x9F row (`€`, `‡`, `™`, ... or a C1
/// control; real text never puts those right after an accented capital or a symbol) or starts
/// with `Â`/`Ã` followed by a character of the 0xA0–0xBF row (`Ã©`, `Â»`). Then all candidates
/// in the text are repaired.
pub fn fix_mojibake(s: &str) -> std::borrow::Cow<'_, str> {
    // Cheap exit: every mojibake run starts with a UTF-8 lead byte read as Â..ô.
    if !s.chars().any(|c| ('\u{c2}'..='\u{f4}').contains(&c)) {
        return s.into();
    }
    // Candidate runs: (start, end, decoded).
    let mut runs: Vec<(usize, usize, String)> = Vec::new();
    let mut convincing = false;
    let mut bytes: Vec<u8> = Vec::new();
    let mut start = 0;
    let mut close = |bytes: &mut Vec<u8>, start: usize, end: usize, runs: &mut Vec<_>| {
        if bytes.len() >= 2 {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let c1_row = bytes.iter().any(|b| (0x80..=0x9f).contains(b));
                let latin1_pair =
                    matches!(bytes[0], 0xc2 | 0xc3) && (0xa0..=0xbf).contains(&bytes[1]);
                convincing |= c1_row || latin1_pair;
                runs.push((start, end, text.to_string()));
            }
        }
        bytes.clear();
    };
    for (i, c) in s.char_indices() {
        match mojibake_byte(c) {
            Some(b) => {
                if bytes.is_empty() {
                    start = i;
                }
                bytes.push(b);
            }
            None if !bytes.is_empty() => close(&mut bytes, start, i, &mut runs),
            None => {}
        }
    }
    if !bytes.is_empty() {
        close(&mut bytes, start, s.len(), &mut runs);
    }
    if !convincing {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end, text) in runs {
        out.push_str(&s[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&s[at..]);
    out.into()
}

/// Characters that never belong in stored plain text: C0/C1 controls (whitespace ones are
/// handled before this), the BOM / zero-width no-break space, and the bidi embedding, override
/// and isolate controls, which can make a rendered digest line read differently from its bytes.
fn is_unwanted(c: char) -> bool {
    c.is_control()
        || c == '\u{feff}'
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Plain text that needs no markup handling: whitespace collapsed, controls dropped, bounded.
pub fn plain_text(s: &str, max: usize) -> String {
    let mut sink = TextSink::new(max);
    sink.push_str(s);
    sink.finish()
}

/// Tags whose content is not text for a reader.
const SKIP_CONTENT_TAGS: [&str; 4] = ["script", "style", "template", "noscript"];
/// Tags that separate words (a `<p>` boundary must not glue two words together).
const BLOCK_TAGS: [&str; 31] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "img",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "tr",
];

/// HTML fragment → plain text: tags removed (block tags become a space), `script`/`style`/
/// `template`/`noscript` dropped with their content, comments dropped, entities decoded,
/// whitespace collapsed, bounded to `max` bytes. Linear in the input; stops early when full.
/// Not a full HTML parser: a stray `<` that does not start a tag is kept as text.
pub fn html_to_text(html: &str, max: usize) -> String {
    let mut sink = TextSink::new(max);
    let mut i = 0;
    while i < html.len() && !sink.full {
        let rest = &html[i..];
        let Some(first) = rest.chars().next() else {
            break;
        };
        match first {
            '<' => {
                if rest.starts_with("<!--") {
                    i += rest.find("-->").map(|p| p + 3).unwrap_or(rest.len());
                } else if let Some(inner) = rest.strip_prefix("<![CDATA[") {
                    let end = inner.find("]]>").unwrap_or(inner.len());
                    sink.push_str(&inner[..end]);
                    i += 9 + (end + 3).min(inner.len());
                } else if rest.starts_with("<!") || rest.starts_with("<?") {
                    i += rest.find('>').map(|p| p + 1).unwrap_or(rest.len());
                } else if let Some((name, closing, len)) = tag_at(rest) {
                    i += len;
                    if BLOCK_TAGS.contains(&name.as_str()) {
                        sink.space();
                    }
                    if !closing && SKIP_CONTENT_TAGS.contains(&name.as_str()) {
                        // Skip to the matching end tag (or the end of the input).
                        let close = format!("</{name}");
                        let after = &html[i..];
                        i += match find_ci(after, &close) {
                            Some(p) => after[p..]
                                .find('>')
                                .map(|q| p + q + 1)
                                .unwrap_or(after.len()),
                            None => after.len(),
                        };
                        sink.space();
                    }
                } else {
                    sink.push('<');
                    i += 1;
                }
            }
            '&' => {
                let (decoded, len) = entity_at(rest);
                match decoded {
                    Some(s) => sink.push_str(&s),
                    None => sink.push('&'),
                }
                i += len;
            }
            _ => {
                let end = rest.find(['<', '&']).unwrap_or(rest.len());
                sink.push_str(&rest[..end]);
                i += end;
            }
        }
    }
    sink.finish()
}

/// If `s` starts with a tag (`<name ...>` or `</name ...>`), its lowercase name, whether it is
/// a closing tag, and its length up to and including `>` (quotes respected). An unterminated
/// tag runs to the end of the input, so malformed markup costs one pass, not one per `<`.
fn tag_at(s: &str) -> Option<(String, bool, usize)> {
    let b = s.as_bytes();
    let mut j = 1;
    let closing = b.get(j) == Some(&b'/');
    if closing {
        j += 1;
    }
    if !b.get(j).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let name_start = j;
    while b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b':')
    {
        j += 1;
    }
    let name = s[name_start..j].to_ascii_lowercase();
    let mut quote: Option<u8> = None;
    while j < b.len() {
        let c = b[j];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'>' => return Some((name, closing, j + 1)),
            None => {}
        }
        j += 1;
    }
    Some((name, closing, b.len()))
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.len();
    hay.as_bytes()
        .windows(n)
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Decodes the character reference at the start of `s` (`&amp;`, `&#233;`, `&#xE9;`, any
/// HTML5 name). Returns the text and the bytes consumed, or `None` and 1 for a bare `&`.
fn entity_at(s: &str) -> (Option<String>, usize) {
    let b = s.as_bytes();
    let end = b
        .iter()
        .take(40)
        .position(|&c| c == b';')
        .filter(|&p| p > 1);
    let Some(end) = end else { return (None, 1) };
    let body = &s[1..end];
    let decoded = if let Some(num) = body.strip_prefix('#') {
        let n = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse::<u32>().ok(),
        };
        n.map(numeric_reference)
    } else if body.bytes().all(|c| c.is_ascii_alphanumeric()) {
        quick_xml::escape::resolve_html5_entity(body).map(str::to_string)
    } else {
        None
    };
    match decoded {
        Some(d) => (Some(d), end + 1),
        None => (None, 1),
    }
}

/// A numeric character reference as HTML5 reads it: 0x80–0x9F are windows-1252 (feeds written
/// on Windows say `&#146;` for a right quote), invalid code points become U+FFFD.
fn numeric_reference(n: u32) -> String {
    if (0x80..=0x9f).contains(&n) {
        let byte = [n as u8];
        let (s, _) = WINDOWS_1252.decode_without_bom_handling(&byte);
        return s.into_owned();
    }
    match char::from_u32(n) {
        Some(c) if n != 0 => c.to_string(),
        _ => '\u{fffd}'.to_string(),
    }
}

/// `s` cut to at most `max` bytes on a char boundary (for error messages).
fn bounded(s: &str, max: usize) -> String {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with('&') {
            let (d, len) = entity_at(rest);
            match d {
                Some(d) => out.push_str(&d),
                None => out.push('&'),
            }
            i += len;
        } else {
            let end = rest.find('&').unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            i += end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss(title: &str, item_title: &str, decl_encoding: Option<&str>) -> String {
        let decl = match decl_encoding {
            Some(e) => format!("<?xml version=\"1.0\" encoding=\"{e}\"?>\n"),
            None => String::new(),
        };
        format!(
            "{decl}<rss version=\"2.0\"><channel><title>{title}</title><link>https://news.test/</link>\
             <item><title>{item_title}</title><link>/a/1</link><guid>g1</guid></item></channel></rss>"
        )
    }

    fn encode(text: &str, label: &str) -> Vec<u8> {
        let enc = Encoding::for_label(label.as_bytes()).unwrap();
        let (bytes, _, had_errors) = enc.encode(text);
        assert!(!had_errors, "test text not representable in {label}");
        bytes.into_owned()
    }

    /// One charset case: the title must come back exactly, whatever the body was encoded in.
    fn check_charset(label: &str, text: &str, header: Option<&str>, decl: Option<&str>) {
        let body = encode(&rss(text, text, decl), label);
        let feed = parse(&body, header, None).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            feed.title.as_deref(),
            Some(text),
            "{label} header={header:?} decl={decl:?}"
        );
        assert_eq!(feed.items[0].title, text, "{label}");
    }

    #[test]
    fn legacy_charsets_declared_in_xml_decode_to_the_right_text() {
        let cases = [
            ("windows-1251", "Экспортный контроль"),
            ("koi8-r", "Санкции против поставщиков"),
            ("iso-8859-2", "Kontrola eksportu: Łódź, Gdańsk"),
            ("windows-1252", "Contrôle des exportations — «puces»"),
            ("iso-8859-1", "Exportkontrolle für Chips"),
            ("gb2312", "出口管制与人工智能芯片"),
            ("gb18030", "美国商务部出口管制"),
            ("big5", "出口管制與人工智慧晶片"),
            ("shift_jis", "輸出規制と半導体"),
            ("euc-kr", "수출 통제와 반도체"),
            // Vietnamese in windows-1258 is written with combining marks (no precomposed ệ).
            ("windows-1258", "Vi\u{ea}\u{323}t Nam xu\u{1b0}\u{301}"),
        ];
        for (label, text) in cases {
            check_charset(label, text, None, Some(label));
            // Declared only in the HTTP header.
            check_charset(
                label,
                text,
                Some(&format!("application/rss+xml; charset=\"{label}\"")),
                None,
            );
        }
    }

    #[test]
    fn bom_wins_and_utf16_decodes() {
        let text = "Contrôle à l'export";
        let doc = rss(text, text, Some("utf-16"));
        let mut le = vec![0xff, 0xfe];
        for u in doc.encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
        }
        // Header lies (says latin-1): the BOM decides.
        let feed = parse(&le, Some("text/xml; charset=iso-8859-1"), None).unwrap();
        assert_eq!(feed.title.as_deref(), Some(text));
        // UTF-16BE without BOM, known from the declaration's byte pattern.
        let mut be = Vec::new();
        for u in doc.encode_utf16() {
            be.extend_from_slice(&u.to_be_bytes());
        }
        let feed = parse(&be, None, None).unwrap();
        assert_eq!(feed.title.as_deref(), Some(text));
        // UTF-8 BOM.
        let mut u8bom = vec![0xef, 0xbb, 0xbf];
        u8bom.extend_from_slice(rss(text, text, None).as_bytes());
        assert_eq!(
            parse(&u8bom, None, None).unwrap().title.as_deref(),
            Some(text)
        );
    }

    #[test]
    fn utf32_with_and_without_bom() {
        let text = "出口管制 Контроль";
        let doc = rss(text, text, Some("utf-32"));
        for (bom, le) in [(true, true), (false, true), (true, false), (false, false)] {
            let mut bytes = Vec::new();
            let units = bom
                .then_some(0xfeff)
                .into_iter()
                .chain(doc.chars().map(u32::from));
            for n in units {
                bytes.extend_from_slice(&if le { n.to_le_bytes() } else { n.to_be_bytes() });
            }
            let feed =
                parse(&bytes, None, None).unwrap_or_else(|e| panic!("bom={bom} le={le}: {e}"));
            assert_eq!(feed.title.as_deref(), Some(text));
        }
    }

    #[test]
    fn wrongly_declared_charsets_are_corrected_when_detectable() {
        let text = "Exportkontrolle für Chips — «Nvidia»";
        // Header and declaration say UTF-8, bytes are windows-1252: falls back, no U+FFFD.
        check_charset(
            "windows-1252",
            text,
            Some("text/xml; charset=utf-8"),
            Some("utf-8"),
        );
        // Header says UTF-8, bytes are windows-1251 as the declaration says.
        check_charset(
            "windows-1251",
            "Экспорт",
            Some("application/xml; charset=UTF-8"),
            Some("windows-1251"),
        );
        // Server default charset=ISO-8859-1 over a UTF-8 document: the bytes win.
        check_charset(
            "utf-8",
            "出口管制 für Chips",
            Some("text/xml; charset=ISO-8859-1"),
            None,
        );
        check_charset(
            "utf-8",
            "Kiểm soát",
            Some("text/xml; charset=ISO-8859-1"),
            Some("utf-8"),
        );
        // UTF-16 declared over ASCII bytes is not believed.
        check_charset("utf-8", "plain", Some("text/xml; charset=utf-16"), None);
        // Unknown labels are ignored.
        check_charset(
            "utf-8",
            "naïve",
            Some("text/xml; charset=x-bogus"),
            Some("klingon"),
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"   \n",
            b"\xff\xfe\x00",
            b"<?xml version=\"1.0\" encoding=\"utf-16\"?><rss",
            b"<rss version=\"2.0\"><channel><title>\xff\xfe\xfd</title></channel></rss>",
            b"{\"version\": \"https://jsonfeed.org/version/1.1\", \"items\": [{}]}",
            b"{not json",
            b"<?xml version=\"1.0\"",
        ];
        for input in inputs {
            let _ = parse(input, Some("text/xml; charset=utf-8"), None);
        }
    }

    #[test]
    fn html_to_text_cases() {
        let cases = [
            ("<p>Hello <b>world</b></p><p>again</p>", "Hello world again"),
            ("a<br>b<br/>c", "a b c"),
            ("x<script>alert('<p>no</p>')</script>y", "x y"),
            ("<STYLE type=\"text/css\">p{}</STYLE>kept", "kept"),
            (
                "AT&amp;T &lt;tag&gt; &eacute;t&eacute; &#8212; &#x4e2d; &#150;",
                "AT&T <tag> été — 中 –",
            ),
            ("5 < 6 & 7 > 3", "5 < 6 & 7 > 3"),
            ("&unknown; &; &#xZZ;", "&unknown; &; &#xZZ;"),
            ("<!-- hidden -->shown<![CDATA[ raw <b> ]]>", "shown raw <b>"),
            ("<a href=\"x\" title=\"a>b\">link</a>", "link"),
            ("  lots \n\t of\u{a0} space  ", "lots of space"),
            ("ctl\u{0}\u{7}chars\u{202e}rev\u{feff}", "ctlcharsrev"),
            ("<p>unterminated <a href='", "unterminated"),
            ("<img src=x>cap", "cap"),
        ];
        for (html, want) in cases {
            assert_eq!(html_to_text(html, 1000), want, "input: {html:?}");
        }
    }

    #[test]
    fn double_encoded_utf8_and_cp1252_controls_are_repaired() {
        let cases = [
            ("Viá»‡t Nam xuáº¥t kháº©u", "Việt Nam xuất khẩu"),
            ("donâ€™t", "don’t"),
            ("don\u{92}t", "don’t"),
            ("&#226;&#128;&#166;", "…"),
            // Genuine Latin-1 text is left alone.
            (
                "Café à la française, Größe ±5°",
                "Café à la française, Größe ±5°",
            ),
            ("Ça coûte 5 €", "Ça coûte 5 €"),
            // é + no-break space + » is valid UTF-8 (U+983B) but ordinary French.
            (
                "un enfant «\u{a0}doué\u{a0}», «\u{a0}surdoué\u{a0}»",
                "un enfant « doué », « surdoué »",
            ),
            // One unmistakable run licenses the others in the same text.
            ("xuáº¥t kháº©u Viá»‡t", "xuất khẩu Việt"),
            ("xuáº¥t", "xuáº¥t"),
            ("cafÃ© crÃ¨me", "café crème"),
        ];
        for (input, want) in cases {
            assert_eq!(html_to_text(input, 1000), want, "{input:?}");
        }
        // Chinese through windows-1252 (contains the undefined byte 0x8F).
        let (mangled, _) = WINDOWS_1252.decode_without_bom_handling("出口管制".as_bytes());
        assert_eq!(html_to_text(&mangled, 1000), "出口管制");
        assert_eq!(plain_text("a\u{8f}b", 100), "ab");
        // A cut text keeps its ellipsis out of the repair.
        let t = html_to_text("Ã", 1000);
        assert_eq!(t, "Ã");
    }

    #[test]
    fn text_is_cut_on_char_boundaries_with_ellipsis() {
        let s = "出口管制".repeat(100);
        let t = html_to_text(&s, 20);
        assert!(t.len() <= 20, "{}", t.len());
        assert!(t.ends_with('…'));
        assert!(t.starts_with("出口管制"));
        let t = plain_text("abc def", 5);
        assert_eq!(t, "ab…", "the ellipsis counts against the bound");
        assert_eq!(plain_text("abcde", 5), "abcde");
    }

    #[test]
    fn rss_items_are_normalised() {
        let body = format!(
            r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Policy &amp;amp; Chips</title><link>https://news.test/section/</link><ttl>90</ttl>
<item>
  <title>US adds &lt;b&gt;firms&lt;/b&gt; to Entity List</title>
  <link>../story/1?a=1&amp;b=2</link>
  <description><![CDATA[<p>The <em>Commerce</em> Department&nbsp;said…</p><script>x()</script>]]></description>
  <author>desk@news.test (Trade Desk)</author>
  <category>export controls</category><category>export controls</category><category>chips</category>
  <pubDate>Tue, 03 Jun 2025 10:00:00 GMT</pubDate>
</item>
<item><title>No id</title><description>{}</description><link>javascript:alert(1)</link></item>
</channel></rss>"#,
            "word ".repeat(10_000)
        );
        let feed = parse(body.as_bytes(), Some("application/rss+xml"), None).unwrap();
        // Double-escaped entities (common in RSS) are decoded once more.
        assert_eq!(feed.title.as_deref(), Some("Policy & Chips"));
        assert_eq!(feed.ttl, Some(Duration::from_secs(90 * 60)));
        let a = &feed.items[0];
        assert_eq!(a.title, "US adds firms to Entity List");
        assert_eq!(a.link.as_deref(), Some("https://news.test/story/1?a=1&b=2"));
        assert_eq!(a.summary, "The Commerce Department said…");
        assert_eq!(a.categories, vec!["export controls", "chips"]);
        assert_eq!(a.authors.len(), 1);
        assert_eq!(
            a.published.map(|d| d.to_rfc3339()),
            Some("2025-06-03T10:00:00+00:00".into())
        );
        assert!(a.feed_name.is_empty() && a.feed_tags.is_empty());
        let b = &feed.items[1];
        assert_eq!(b.guid, None, "no invented GUIDs");
        assert_eq!(b.link, None, "javascript: links are dropped");
        assert!(b.summary.len() <= MAX_SUMMARY_BYTES && b.summary.ends_with('…'));
        assert!(b.dedup_key().starts_with("hash:"));
    }

    #[test]
    fn relative_links_fall_back_to_the_document_url() {
        let body = b"<rss version=\"2.0\"><channel><title>t</title><item><title>a</title><link>story/9</link></item></channel></rss>";
        let base = Url::parse("https://cdn.test/feeds/main.xml").unwrap();
        let feed = parse(body, None, Some(&base)).unwrap();
        assert_eq!(
            feed.items[0].link.as_deref(),
            Some("https://cdn.test/feeds/story/9")
        );
        // Without any base a relative link cannot be made absolute and is dropped.
        let feed = parse(body, None, None).unwrap();
        assert_eq!(feed.items[0].link, None);
    }

    #[test]
    fn atom_text_types_and_xml_base() {
        let body = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://atom.test/blog/">
  <title type="text">Plain &lt;b&gt; title</title>
  <id>urn:x</id><updated>2025-01-01T00:00:00Z</updated>
  <entry>
    <title type="html">&lt;i&gt;Chips&lt;/i&gt; &amp;amp; rules</title>
    <id>urn:e1</id>
    <link rel="alternate" href="posts/1"/>
    <link rel="edit" href="/edit/1"/>
    <updated>2025-01-02T00:00:00Z</updated>
    <author><name>Ana</name></author>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Body <b>text</b></p></div></content>
  </entry>
</feed>"#;
        let feed = parse(body.as_bytes(), None, None).unwrap();
        assert_eq!(feed.title.as_deref(), Some("Plain <b> title"));
        let e = &feed.items[0];
        assert_eq!(e.title, "Chips & rules");
        assert_eq!(e.link.as_deref(), Some("https://atom.test/blog/posts/1"));
        assert_eq!(e.content, "Body text");
        assert_eq!(e.authors, vec!["Ana"]);
        assert_eq!(e.guid.as_deref(), Some("urn:e1"));
        assert!(e.published.is_some(), "updated stands in for published");
    }

    #[test]
    fn json_feed_is_parsed() {
        let body = r#"{"version":"https://jsonfeed.org/version/1.1","title":"JF","home_page_url":"https://jf.test/",
            "items":[{"id":"1","url":"https://jf.test/1","title":"T","content_html":"<p>a &amp; b</p>","tags":["ai-chips"]},
                     {"id":"2","content_text":"plain <b> stays","date_published":"2025-02-01T00:00:00Z"}]}"#;
        let feed = parse(body.as_bytes(), Some("application/feed+json"), None).unwrap();
        assert_eq!(feed.title.as_deref(), Some("JF"));
        assert_eq!(feed.items[0].content, "a & b");
        assert_eq!(feed.items[0].categories, vec!["ai-chips"]);
        assert_eq!(feed.items[1].content, "plain <b> stays");
        assert!(feed.items[1].published.is_some());
    }

    #[test]
    fn html_page_reports_its_alternate_feed() {
        let page = r#"<!DOCTYPE html><html><head><title>News</title>
            <link rel="stylesheet" href="/s.css">
            <link type="application/rss+xml" title="RSS" rel="alternate feed" href="/feeds/all.rss?x=1&amp;y=2">
            <link rel="alternate" type="application/atom+xml" href="/atom.xml">
            </head><body>hi</body></html>"#;
        let base = Url::parse("https://site.test/news/").unwrap();
        match parse(
            page.as_bytes(),
            Some("text/html; charset=utf-8"),
            Some(&base),
        ) {
            Err(FeedError::NotAFeed { alternate: Some(u) }) => {
                assert_eq!(u.as_str(), "https://site.test/feeds/all.rss?x=1&y=2")
            }
            other => panic!("{other:?}"),
        }
        match parse(b"<html><body>no feed</body></html>", None, Some(&base)) {
            Err(e @ FeedError::NotAFeed { alternate: None }) => {
                assert!(
                    e.to_string()
                        .contains("advertising no RSS, Atom or JSON feed"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        // An OPML file (or any other XML) is not a feed either.
        assert!(matches!(
            parse(b"<opml version=\"2.0\"><body/></opml>", None, None),
            Err(FeedError::NotAFeed { alternate: None })
        ));
    }

    #[test]
    fn broken_xml_is_recovered_or_invalid_never_a_panic() {
        // Unclosed title, document cut short: closed where its parent closes.
        let r = parse(
            b"<rss version=\"2.0\"><channel><title>x</title><item><title>y</item></channel>",
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.items[0].title, "y");
        // More defects than the repair loop takes, in the only entry: invalid.
        let r = parse(UNREADABLE_ATOM.as_bytes(), None, None);
        assert!(matches!(r, Err(FeedError::Invalid(_))), "{r:?}");
        assert!(matches!(parse(b"  ", None, None), Err(FeedError::Empty)));
    }

    /// An Atom feed feed-rs refuses whatever we repair: five unknown text types (the repair
    /// loop fixes four), the last one carrying a newline and a forged journal priority.
    const UNREADABLE_ATOM: &str = "<feed xmlns=\"http://www.w3.org/2005/Atom\">\
        <title type=\"t1\">F</title><subtitle type=\"t2\">S</subtitle><rights type=\"t3\">R</rights>\
        <entry><title type=\"t4\">A</title><summary type=\"t5\n<4>ERROR forged line\">B</summary></entry></feed>";

    /// The hostile-feed table: for each defect, what is stored (titles and summaries of the
    /// items, in order) and what the operator is told (the error or warnings), which must
    /// reach a log line as one escaped line.
    #[test]
    fn hostile_feeds_store_what_can_be_read_and_log_one_escaped_line() {
        let rss = |items: &str| {
            format!("<rss version=\"2.0\"><channel><title>F</title>{items}</channel></rss>")
        };
        struct Case {
            name: &'static str,
            body: String,
            stored: &'static [(&'static str, &'static str)],
            told: &'static str,
        }
        let cases = [
            Case {
                name: "NUL reference in a description",
                body: rss("<item><title>A</title><description>x &#0; y</description></item>\
                           <item><title>B</title></item>"),
                stored: &[("A", "x \u{fffd} y"), ("B", "")],
                told: "",
            },
            Case {
                name: "surrogate, out-of-range and overflowing references in titles",
                body: rss("<item><title>A &#xD800; 1</title></item><item><title>B &#x110000;</title></item>\
                           <item><title>C &#99999999999;</title></item>"),
                stored: &[("A \u{fffd} 1", ""), ("B \u{fffd}", ""), ("C \u{fffd}", "")],
                told: "",
            },
            Case {
                name: "malformed references",
                body: rss("<item><title>A &#x; &#xZZ; &#12a; &#0</title></item>"),
                stored: &[("A \u{fffd} \u{fffd} \u{fffd} &#0", "")],
                told: "",
            },
            Case {
                name: "misspelt closing tag",
                body: rss("<item><title>A</titel><description>d</description></item>\
                           <item><title>B</title></item>"),
                stored: &[("A", "d"), ("B", "")],
                told: "",
            },
            Case {
                name: "closing tag with a space, unclosed inline markup",
                body: rss("<item><title>A</ title><description>x <b>y</description></item>\
                           <item><title>B</title></item>"),
                stored: &[("A", "x y"), ("B", "")],
                told: "",
            },
            Case {
                name: "one item feed-rs cannot read at all",
                body: rss("<item><title>A</title></item><item><title>B</title>\
                           <description><![CDATA[never closed</description></item>\
                           <item><title>C</title></item>"),
                stored: &[("A", ""), ("C", "")],
                told: "1 item(s) could not be read and were skipped",
            },
            Case {
                name: "a title that reads as nothing",
                body: rss("<item><title>&#x200F;<![CDATA[]]></title>\
                           <description>Ministry adds four chip makers to the export control list on Monday morning</description></item>"),
                stored: &[(
                    "Ministry adds four chip makers to the export control list on Monday…",
                    "Ministry adds four chip makers to the export control list on Monday morning",
                )],
                told: "an item's title could not be read; using its first words: Ministry",
            },
            Case {
                name: "bidi marks in a headline",
                body: rss("<item><title>\u{200f}عقوبات\u{200f} \u{200e}Nvidia\u{61c} H20</title>\
                           <description>\u{200f}نص</description></item>"),
                stored: &[("عقوبات Nvidia H20", "\u{200f}نص")],
                told: "",
            },
            Case {
                name: "a parse error quoting a newline and a forged priority",
                body: UNREADABLE_ATOM.to_string(),
                stored: &[],
                told: "t5\n<4>ERROR forged line",
            },
        ];
        for c in cases {
            let (stored, told): (Vec<(String, String)>, Vec<String>) =
                match parse(c.body.as_bytes(), None, None) {
                    Ok(p) => (
                        p.items.into_iter().map(|i| (i.title, i.summary)).collect(),
                        p.warnings.into_iter().map(|w| w.message).collect(),
                    ),
                    Err(e) => (Vec::new(), vec![e.to_string()]),
                };
            let want: Vec<(String, String)> = c
                .stored
                .iter()
                .map(|(t, s)| (t.to_string(), s.to_string()))
                .collect();
            assert_eq!(stored, want, "{}: stored", c.name);
            if c.told.is_empty() {
                assert!(told.is_empty(), "{}: told {told:?}", c.name);
            } else {
                assert!(
                    told.iter().any(|t| t.contains(c.told)),
                    "{}: told {told:?}",
                    c.name
                );
            }
            for t in &told {
                let line = crate::logging::untrusted(t).to_string();
                assert!(!line.contains(['\n', '\r']), "{}: {line}", c.name);
                assert!(!line.contains(is_bidi_mark), "{}: {line}", c.name);
            }
        }
    }

    #[test]
    fn bare_ampersands_and_html_entities_do_not_lose_text() {
        let doc = "<rss version=\"2.0\"><channel><title>Fish & Chips &amp; more</title>\
            <item><title>AT&T&nbsp;curbs &eacute;t&eacute; &#8212; &bogus; &#x4e2d;</title><guid>1</guid>\
            <description><![CDATA[R&D <b>spend</b>]]></description><link>https://x.test/?a=1&b=2</link></item></channel></rss>";
        let feed = parse(doc.as_bytes(), None, None).unwrap();
        assert_eq!(feed.title.as_deref(), Some("Fish & Chips & more"));
        let it = &feed.items[0];
        assert_eq!(it.title, "AT&T curbs été — &bogus; 中");
        assert_eq!(it.summary, "R&D spend");
        assert_eq!(it.link.as_deref(), Some("https://x.test/?a=1&b=2"));
        // Documents with their own entity declarations are left alone.
        let own = "<!DOCTYPE rss [<!ENTITY x \"y\">]><rss/>";
        assert_eq!(repair_entities(own), own);
    }

    #[test]
    fn rss_root_versions_feed_rs_does_not_know_are_read_as_rss2() {
        for root in [
            "<rss>",
            "<rss version=\"0.93\">",
            "<rss version='2.0.1' xmlns:x=\"u\">",
            "<rss version=\" 2.0\">",
        ] {
            let doc = format!("<?xml version=\"1.0\"?>\n<!-- c -->{root}<channel><title>T</title><item><title>i</title></item></channel></rss>");
            let feed = parse(doc.as_bytes(), None, None).unwrap_or_else(|e| panic!("{root}: {e}"));
            assert_eq!(feed.items.len(), 1, "{root}");
        }
        // An <rss> with nothing in it is an empty feed, not "not a feed".
        let feed = parse(b"<rss version=\"0.92\"></rss>", None, None).unwrap();
        assert!(feed.items.is_empty());
    }

    #[test]
    fn a_stylesheet_instruction_is_not_mistaken_for_the_declaration() {
        let doc = "<?xml-stylesheet type=\"text/xsl\" href=\"s.xsl\"?><rss version=\"2.0\"><channel><title>Caf\u{e9}</title></channel></rss>";
        let (bytes, _, _) = WINDOWS_1252.encode(doc);
        let feed = parse(&bytes, Some("text/xml; charset=windows-1252"), None).unwrap();
        assert_eq!(feed.title.as_deref(), Some("Café"));
    }

    #[test]
    fn rss1_items_without_link_are_kept() {
        let doc = r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
            <channel rdf:about="https://r.test/"><title>R</title><link>https://r.test/</link></channel>
            <item rdf:about="https://r.test/1"><title>With about</title></item>
            <item><title>Bare</title></item>
            <item rdf:about="https://r.test/3"><title>Linked</title><link>https://r.test/three</link></item>
            </rdf:RDF>"#;
        let feed = parse(doc.as_bytes(), None, None).unwrap();
        let got: Vec<_> = feed
            .items
            .iter()
            .map(|i| (i.title.as_str(), i.link.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("With about", Some("https://r.test/1")),
                ("Bare", None),
                ("Linked", Some("https://r.test/three")),
            ]
        );
    }

    #[test]
    fn atom_03_is_read_as_atom() {
        let doc = r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>Old</title>
            <entry><title>E</title><id>urn:1</id><link rel="alternate" type="text/html" href="https://o.test/1"/>
            <issued>2004-01-02T03:04:05Z</issued><modified>2004-01-03T00:00:00Z</modified></entry></feed>"#;
        let feed = parse(doc.as_bytes(), None, None).unwrap();
        assert_eq!(feed.items.len(), 1);
        assert_eq!(
            feed.items[0].published.map(|d| d.to_rfc3339()),
            Some("2004-01-02T03:04:05+00:00".into())
        );
        assert_eq!(feed.items[0].link.as_deref(), Some("https://o.test/1"));
    }

    #[test]
    fn unknown_text_types_and_sloppy_json_feeds_are_repaired() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="application/x-custom">Custom</title><id>f</id>
            <entry><id>e</id><title>E</title></entry></feed>"#;
        let feed = parse(doc.as_bytes(), None, None).unwrap();
        assert_eq!(feed.title.as_deref(), Some("Custom"));
        assert_eq!(feed.items.len(), 1);
        // Blank type, and inline XHTML typed with its MIME type.
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="">Blank</title><id>f</id>
            <entry><id>e</id><content type="application/xhtml+xml"><div xmlns="http://www.w3.org/1999/xhtml">Inline <b>x</b></div></content></entry></feed>"#;
        let feed = parse(doc.as_bytes(), None, None).unwrap();
        assert_eq!(feed.title.as_deref(), Some("Blank"));
        assert_eq!(feed.items[0].content, "Inline x");
        let json = r#"{"version":"http://jsonfeed.org/version/1","items":[{"id":"1","title":"T","tags":"a, b"}]}"#;
        let feed = parse(json.as_bytes(), None, None).unwrap();
        assert_eq!(feed.items[0].categories, vec!["a", "b"]);
    }

    #[test]
    fn item_count_is_bounded() {
        let mut body = String::from("<rss version=\"2.0\"><channel><title>many</title>");
        for i in 0..MAX_ITEMS + 50 {
            body.push_str(&format!("<item><guid>{i}</guid><title>t{i}</title></item>"));
        }
        body.push_str("</channel></rss>");
        let feed = parse(body.as_bytes(), None, None).unwrap();
        assert_eq!(feed.items.len(), MAX_ITEMS);
        assert_eq!(feed.items[0].guid.as_deref(), Some("0"));

        // Oldest first: the newest MAX_ITEMS are kept, still in document order.
        let mut body = String::from("<rss version=\"2.0\"><channel><title>old first</title>");
        let total = MAX_ITEMS + 50;
        for i in 0..total {
            let day = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64 * 86_400, 0)
                .unwrap()
                .to_rfc2822();
            body.push_str(&format!(
                "<item><guid>{i}</guid><pubDate>{day}</pubDate></item>"
            ));
        }
        body.push_str("</channel></rss>");
        let feed = parse(body.as_bytes(), None, None).unwrap();
        assert_eq!(feed.items.len(), MAX_ITEMS);
        assert_eq!(feed.items[0].guid.as_deref(), Some("50"));
        assert_eq!(
            feed.items[MAX_ITEMS - 1].guid.as_deref(),
            Some(&*(total - 1).to_string())
        );
    }
    #[test]
    fn header_charset_beats_the_declaration_when_both_decode() {
        // Single-byte encodings decode any byte, so precedence decides: the header wins.
        let text = "Санкции";
        let body = encode(&rss(text, text, Some("koi8-r")), "windows-1251");
        let feed = parse(&body, Some("text/xml; charset=windows-1251"), None).unwrap();
        assert_eq!(feed.title.as_deref(), Some(text));
        assert_eq!(feed.encoding, "windows-1251");
        // Without the header the (wrong) declaration is all we have.
        let feed = parse(&body, None, None).unwrap();
        assert_eq!(feed.encoding, "KOI8-R");
        assert_ne!(feed.title.as_deref(), Some(text));
    }

    proptest::proptest! {
        #[test]
        fn text_functions_never_panic_and_stay_bounded(s in "\\PC{0,300}", max in 0usize..64) {
            let t = html_to_text(&s, max);
            proptest::prop_assert!(t.len() <= max);
            proptest::prop_assert!(!t.chars().any(|c| c.is_control()));
            let p = plain_text(&s, max);
            proptest::prop_assert!(p.len() <= max);
            proptest::prop_assert!(fix_mojibake(&s).len() <= s.len());
        }

        #[test]
        fn markup_soup_never_panics(parts in proptest::collection::vec(
            proptest::sample::select(vec!["<", ">", "&", ";", "#", "x", "<!--", "-->", "<![CDATA[", "]]>",
                "<script>", "</script>", "<p>", "\"", "'", "&amp;", "&#", "é", "\u{92}", "Ã"]), 0..40)) {
            let s: String = parts.concat();
            let _ = html_to_text(&s, 100);
            let _ = repair_entities(&s);
            let _ = find_alternate(&s, None);
            let _ = recover::fix_char_refs(&s);
            let _ = recover::balance_tags(&s);
            let _ = recover::split_items(&s, 4);
        }

        /// The balancer never touches a document whose tags nest: whatever it does to broken
        /// ones, a good feed reaches feed-rs byte for byte.
        #[test]
        fn well_nested_documents_are_left_alone(tree in proptest::collection::vec(
            (proptest::sample::select(vec!["item", "title", "dc:creator", "a", "description"]),
             proptest::sample::select(vec!["", "x &amp; y", "<![CDATA[</b> <i>]]>", "<!-- </a> -->", "<br/>", "a &#233; b"])),
            1..30)) {
            let mut doc = String::from("<rss version=\"2.0\"><channel>");
            for (i, (name, text)) in tree.iter().enumerate() {
                // Nest every other element in the previous one.
                doc.push_str(&format!("<{name} n=\"{i}>\">{text}"));
                if i % 2 == 1 {
                    doc.push_str(&format!("</{name}>"));
                }
            }
            for (i, (name, _)) in tree.iter().enumerate().rev() {
                if i % 2 == 0 {
                    doc.push_str(&format!("</{name}>"));
                }
            }
            doc.push_str("</channel></rss>");
            proptest::prop_assert!(matches!(recover::balance_tags(&doc), std::borrow::Cow::Borrowed(_)), "{}", doc);
            proptest::prop_assert!(matches!(recover::fix_char_refs(&doc), std::borrow::Cow::Borrowed(_)), "{}", doc);
        }

        #[test]
        fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
                                       prefix in proptest::sample::select(vec!["", "<rss version=\"2.0\"><channel>", "<feed xmlns=\"http://www.w3.org/2005/Atom\">", "{\"version\":", "<?xml version=\"1.0\" encoding=\"shift_jis\"?>"])) {
            let mut body = prefix.as_bytes().to_vec();
            body.extend_from_slice(&bytes);
            let _ = parse(&body, Some("text/xml; charset=utf-8"), None);
        }
    }
}
