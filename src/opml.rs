//! OPML import and export: moving a feed list between policywatch and other feed readers.
//!
//! In: an OPML document (untrusted text, usually exported by another reader), or the configured
//! feeds. Out: [`OpmlFeed`]s and the `[[feeds]]` TOML to paste into the config
//! ([`to_config_toml`]), or an OPML 2.0 document ([`export`]). Pure: no I/O, the caller reads
//! and writes files.
//!
//! Import rules:
//! - every `<outline>` with an `xmlUrl` is a feed; its name is `title`, else `text`;
//! - outlines without `xmlUrl` are folders: their `title`/`text` becomes a tag of every feed
//!   inside them (nested folders give several tags, outermost first);
//! - the OPML 2.0 `category` attribute (comma-separated, slash-delimited paths) adds tags too;
//! - a feed URL that is not absolute `http`/`https` is skipped and reported, as is a URL listed
//!   twice (the tags of both mentions are merged into the first).
//!
//! Everything is bounded: input size ([`MAX_OPML_BYTES`]), nesting ([`MAX_DEPTH`]), number of
//! feeds ([`MAX_FEEDS`]) and the length of names, tags and URLs. quick-xml does not expand DTD
//! entities, so "billion laughs" documents cannot blow up; undefined entities are kept as
//! written rather than failing the whole import.
//!
//! # Wiring (CLI)
//! Suggested commands: `policywatch opml import FILE` reads the file (refuse more than
//! [`MAX_OPML_BYTES`] before reading it all), calls [`import_report`], prints the `skipped`
//! notes to stderr and [`to_config_toml`] to stdout (feeds already in the config can be left
//! out by URL first); `policywatch opml export [--title T]` prints [`export`] of the
//! configured feeds as `(name or url, url, tags)`.

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::Serialize;
use thiserror::Error;

/// Largest OPML document we read. Real subscription lists are a few hundred KiB at most.
pub const MAX_OPML_BYTES: usize = 8 << 20;
/// Deepest outline nesting accepted (folders in folders). Readers use one or two levels.
pub const MAX_DEPTH: usize = 32;
/// Most feeds one import may produce.
pub const MAX_FEEDS: usize = 10_000;
/// Longest feed URL kept (longer ones are skipped).
pub const MAX_URL_BYTES: usize = 2048;
/// Names and tags are cut to this many characters.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TAG_CHARS: usize = 64;
/// Most tags kept per feed.
pub const MAX_TAGS: usize = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpmlError {
    #[error("OPML document is larger than {MAX_OPML_BYTES} bytes")]
    TooLarge,
    #[error("not an OPML document: the root element is not <opml>")]
    NotOpml,
    #[error("OPML outlines are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("OPML document lists more than {MAX_FEEDS} feeds")]
    TooManyFeeds,
    #[error("OPML is not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
}

/// One feed found in an OPML document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpmlFeed {
    pub url: String,
    /// The outline's title or text; `None` when both are empty.
    pub name: Option<String>,
    /// Enclosing folder names, then `category` entries; distinct, in that order.
    pub tags: Vec<String>,
}

/// The result of an import, with what was left out and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    pub feeds: Vec<OpmlFeed>,
    /// Human-readable notes on skipped outlines ("skipped …: reason").
    pub skipped: Vec<String>,
}

/// The feeds of an OPML document (see the module doc for the rules).
pub fn import(opml: &str) -> Result<Vec<OpmlFeed>, OpmlError> {
    import_report(opml).map(|i| i.feeds)
}

/// [`import`], also reporting skipped outlines so a CLI can tell the user.
pub fn import_report(opml: &str) -> Result<Import, OpmlError> {
    if opml.len() > MAX_OPML_BYTES {
        return Err(OpmlError::TooLarge);
    }
    let mut reader = Reader::from_str(opml);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    let mut out = Import::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    // One entry per open <outline>: the folder tag it contributes, if it is a folder.
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut seen_root = false;
    let mut in_body = false;
    loop {
        let ev = reader.read_event().map_err(|e| OpmlError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        match ev {
            Event::Start(e) | Event::Empty(e) if !seen_root => {
                if !e.local_name().as_ref().eq_ignore_ascii_case(b"opml") {
                    return Err(OpmlError::NotOpml);
                }
                seen_root = true;
                // `<opml/>`: an empty document.
            }
            Event::Start(e) => match e.local_name().as_ref() {
                b"body" => in_body = true,
                b"outline" if in_body => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(OpmlError::TooDeep);
                    }
                    let folder = outline(&e, &stack, &mut out, &mut index)?;
                    stack.push(folder);
                }
                _ => {}
            },
            Event::Empty(e) if in_body && e.local_name().as_ref() == b"outline" => {
                if stack.len() >= MAX_DEPTH {
                    return Err(OpmlError::TooDeep);
                }
                outline(&e, &stack, &mut out, &mut index)?;
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"body" => in_body = false,
                b"outline" if in_body => {
                    stack.pop();
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err(OpmlError::NotOpml);
    }
    Ok(out)
}

/// Handles one outline; returns the folder tag it opens (for its children), if any.
fn outline(
    e: &BytesStart<'_>,
    stack: &[Option<String>],
    out: &mut Import,
    index: &mut HashMap<String, usize>,
) -> Result<Option<String>, OpmlError> {
    let mut xml_url = None;
    let mut title = None;
    let mut text = None;
    let mut category = None;
    for a in e.attributes().with_checks(false).flatten() {
        let value = attr_value(&a);
        match a.key.local_name().as_ref() {
            b"xmlUrl" | b"xmlurl" if xml_url.is_none() => xml_url = Some(value),
            b"title" => title = Some(value),
            b"text" => text = Some(value),
            b"category" => category = Some(value),
            _ => {}
        }
    }
    let label = [&title, &text]
        .into_iter()
        .flatten()
        .map(|s| clean(s, MAX_NAME_CHARS))
        .find(|s| !s.is_empty());
    let Some(raw_url) = xml_url.map(|u| u.trim().to_string()) else {
        // A folder. One without a label groups without tagging.
        return Ok(Some(
            label.map(|l| clean(&l, MAX_TAG_CHARS)).unwrap_or_default(),
        ));
    };
    if raw_url.is_empty() {
        out.skipped.push(format!(
            "skipped {:?}: empty xmlUrl",
            label.unwrap_or_default()
        ));
        return Ok(None);
    }
    let url = match check_url(&raw_url) {
        Ok(u) => u,
        Err(why) => {
            out.skipped
                .push(format!("skipped {}: {why}", clean(&raw_url, 120)));
            return Ok(None);
        }
    };
    let mut tags: Vec<String> = Vec::new();
    let add = |t: &str, tags: &mut Vec<String>| {
        let t = clean(t, MAX_TAG_CHARS);
        if !t.is_empty() && tags.len() < MAX_TAGS && !tags.contains(&t) {
            tags.push(t);
        }
    };
    for f in stack.iter().flatten() {
        add(f, &mut tags);
    }
    if let Some(c) = category {
        for path in c.split(',') {
            for seg in path.split('/') {
                add(seg, &mut tags);
            }
        }
    }
    if let Some(&k) = index.get(&url) {
        let existing = &mut out.feeds[k];
        for t in tags {
            if existing.tags.len() < MAX_TAGS && !existing.tags.contains(&t) {
                existing.tags.push(t);
            }
        }
        out.skipped.push(format!(
            "skipped {}: listed twice (tags merged)",
            clean(&url, 120)
        ));
        return Ok(None);
    }
    if out.feeds.len() >= MAX_FEEDS {
        return Err(OpmlError::TooManyFeeds);
    }
    index.insert(url.clone(), out.feeds.len());
    out.feeds.push(OpmlFeed {
        url,
        name: label,
        tags,
    });
    Ok(None)
}

/// An attribute's text: entities and character references resolved; an undefined entity (or
/// any other escape problem) leaves the raw text, lossily decoded, rather than failing.
fn attr_value(a: &quick_xml::events::attributes::Attribute<'_>) -> String {
    match a.unescape_value() {
        Ok(v) => v.into_owned(),
        Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
    }
}

fn check_url(raw: &str) -> Result<String, &'static str> {
    if raw.len() > MAX_URL_BYTES {
        return Err("URL too long");
    }
    let u = url::Url::parse(raw).map_err(|_| "not an absolute URL")?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("not an http(s) URL");
    }
    if u.host_str().map_or(true, str::is_empty) {
        return Err("URL has no host");
    }
    Ok(u.to_string())
}

/// Collapses whitespace, drops control characters, cuts to `max` chars.
fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}') {
            continue;
        }
        if pending_space {
            if n + 1 >= max {
                break;
            }
            out.push(' ');
            n += 1;
            pending_space = false;
        }
        if n >= max {
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

#[derive(Serialize)]
struct ConfigFeeds<'a> {
    feeds: Vec<ConfigFeed<'a>>,
}

#[derive(Serialize)]
struct ConfigFeed<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "no_tags")]
    tags: &'a [String],
}

fn no_tags(t: &&[String]) -> bool {
    t.is_empty()
}

/// `[[feeds]]` entries (url, name, tags) for the config file. Strings are escaped by the `toml`
/// serialiser, so quotes, backslashes, newlines and control characters in names cannot break
/// out of the value.
pub fn to_config_toml(feeds: &[OpmlFeed]) -> String {
    let doc = ConfigFeeds {
        feeds: feeds
            .iter()
            .map(|f| ConfigFeed {
                url: &f.url,
                name: f.name.as_deref(),
                tags: &f.tags,
            })
            .collect(),
    };
    // Serialising plain strings and string arrays cannot fail; an empty list is "no feeds".
    let body = toml::to_string(&doc).unwrap_or_default();
    if feeds.is_empty() {
        return "# no feeds found in the OPML document\n".to_string();
    }
    format!("# {} feed(s) imported from OPML\n\n{body}", feeds.len())
}

/// An OPML 2.0 document listing `feeds` as `(name, url, tags)`. Feeds are grouped into a
/// folder per first tag (the usual reader layout), and every tag is also written in the
/// `category` attribute so a round trip keeps them all. Text is XML-escaped.
pub fn export(feeds: &[(String, String, Vec<String>)], title: &str) -> String {
    let mut s = String::with_capacity(256 + feeds.len() * 160);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n  <head>\n");
    s.push_str("    <title>");
    s.push_str(&esc(&clean(title, MAX_NAME_CHARS)));
    s.push_str("</title>\n  </head>\n  <body>\n");
    // Folders in order of first appearance; untagged feeds at top level.
    let mut folders: Vec<(String, Vec<usize>)> = Vec::new();
    let mut loose = Vec::new();
    for (k, (_, _, tags)) in feeds.iter().enumerate() {
        match tags
            .first()
            .map(|t| export_tag(t))
            .filter(|t| !t.is_empty())
        {
            Some(t) => match folders.iter_mut().find(|(name, _)| *name == t) {
                Some((_, v)) => v.push(k),
                None => folders.push((t, vec![k])),
            },
            None => loose.push(k),
        }
    }
    let feed_line = |s: &mut String, k: usize, indent: &str| {
        let (name, url, tags) = &feeds[k];
        let name = clean(name, MAX_NAME_CHARS);
        let name = if name.is_empty() { url.clone() } else { name };
        s.push_str(indent);
        s.push_str("<outline type=\"rss\" text=\"");
        s.push_str(&esc(&name));
        s.push_str("\" title=\"");
        s.push_str(&esc(&name));
        s.push_str("\" xmlUrl=\"");
        s.push_str(&esc(url));
        s.push('"');
        let cats: Vec<String> = tags
            .iter()
            .map(|t| export_tag(t))
            .filter(|t| !t.is_empty())
            .collect();
        if !cats.is_empty() {
            s.push_str(" category=\"");
            s.push_str(&esc(&cats.join(",")));
            s.push('"');
        }
        s.push_str("/>\n");
    };
    for (name, members) in &folders {
        let name = esc(name);
        s.push_str(&format!("    <outline text=\"{name}\" title=\"{name}\">\n"));
        for &k in members {
            feed_line(&mut s, k, "      ");
        }
        s.push_str("    </outline>\n");
    }
    for k in loose {
        feed_line(&mut s, k, "    ");
    }
    s.push_str("  </body>\n</opml>\n");
    s
}

/// A tag as written to OPML: cleaned, with `,` and `/` (which split categories on import)
/// turned into spaces, so folder and category spell it the same way.
fn export_tag(t: &str) -> String {
    clean(&t.replace([',', '/'], " "), MAX_TAG_CHARS)
}

/// XML escaping for attribute values and text: the five predefined entities, plus newlines and
/// tabs as character references so attribute values survive normalisation. Characters XML
/// 1.0 cannot carry at all (most C0 controls) are dropped.
fn esc(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| matches!(c, '&' | '<' | '>' | '"' | '\'' | '\n' | '\t' | '\r') || c.is_control())
    {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' => o.push_str("&#9;"),
            '\r' => o.push_str("&#13;"),
            c if c.is_control() && (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    Cow::Owned(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>My feeds</title></head>
  <body>
    <outline text="Policy" title="Policy">
      <outline text="Trade" title="Trade">
        <outline type="rss" text="BIS news" xmlUrl="https://bis.example/rss.xml" category="/gov/us,export controls"/>
      </outline>
      <outline type="rss" text="Fallback &amp; text" xmlUrl="https://trade.example/feed"/>
    </outline>
    <outline type="rss" title="Chip wire" text="ignored" xmlUrl="https://chips.example/atom"/>
    <outline type="rss" text="Tin công nghệ" xmlUrl="https://báo.example/rss"></outline>
  </body>
</opml>"#;

    #[test]
    fn nested_folders_become_tags() {
        let feeds = import(SAMPLE).unwrap();
        assert_eq!(feeds.len(), 4);
        assert_eq!(feeds[0].url, "https://bis.example/rss.xml");
        assert_eq!(feeds[0].name.as_deref(), Some("BIS news"));
        assert_eq!(
            feeds[0].tags,
            vec!["Policy", "Trade", "gov", "us", "export controls"]
        );
        assert_eq!(feeds[1].name.as_deref(), Some("Fallback & text"));
        assert_eq!(feeds[1].tags, vec!["Policy"]);
        // title wins over text; top-level feeds have no tags.
        assert_eq!(feeds[2].name.as_deref(), Some("Chip wire"));
        assert!(feeds[2].tags.is_empty());
        // IDN host normalised to punycode by the URL parser.
        assert_eq!(feeds[3].url, "https://xn--bo-mia.example/rss");
        assert_eq!(feeds[3].name.as_deref(), Some("Tin công nghệ"));
    }

    #[test]
    fn round_trip_keeps_names_urls_and_tags() {
        let feeds = vec![
            (
                "A \"quoted\" <name> & co".to_string(),
                "https://a.example/feed?x=1&y=2".to_string(),
                vec!["policy".to_string(), "us".to_string()],
            ),
            (
                "B".to_string(),
                "https://b.example/rss".to_string(),
                vec!["policy".to_string()],
            ),
            (
                "中文 feed".to_string(),
                "https://c.example/atom".to_string(),
                vec![],
            ),
        ];
        let doc = export(&feeds, "policywatch <feeds> & more");
        let back = import(&doc).unwrap();
        assert_eq!(back.len(), 3);
        for ((name, url, tags), f) in feeds.iter().zip(&back) {
            assert_eq!(&f.url, url);
            assert_eq!(f.name.as_deref(), Some(name.as_str()));
            assert_eq!(&f.tags, tags);
        }
        assert!(doc.contains("&amp;y=2"));
        assert!(doc.contains("<title>policywatch &lt;feeds&gt; &amp; more</title>"));
    }

    #[test]
    fn config_toml_is_valid_and_escaped() {
        let feeds = vec![
            OpmlFeed {
                url: "https://a.example/feed".into(),
                name: Some("Quote \" backslash \\ newline \n tab \t bell \u{7} end".into()),
                tags: vec!["x\"y".into(), "tag ] = [".into()],
            },
            OpmlFeed {
                url: "https://b.example/rss".into(),
                name: None,
                tags: vec![],
            },
        ];
        let text = to_config_toml(&feeds);
        assert!(text.contains("[[feeds]]"));
        #[derive(serde::Deserialize)]
        struct Doc {
            feeds: Vec<F>,
        }
        #[derive(serde::Deserialize)]
        struct F {
            url: String,
            name: Option<String>,
            #[serde(default)]
            tags: Vec<String>,
        }
        let doc: Doc = toml::from_str(&text).unwrap();
        assert_eq!(doc.feeds.len(), 2);
        assert_eq!(doc.feeds[0].url, feeds[0].url);
        assert_eq!(doc.feeds[0].name, feeds[0].name);
        assert_eq!(doc.feeds[0].tags, feeds[0].tags);
        assert_eq!(doc.feeds[1].name, None);
        assert!(doc.feeds[1].tags.is_empty());
        assert!(to_config_toml(&[]).starts_with('#'));
    }

    #[test]
    fn bad_urls_and_duplicates_are_skipped_and_reported() {
        let doc = r#"<opml version="1.0"><body>
            <outline text="js" xmlUrl="javascript:alert(1)"/>
            <outline text="rel" xmlUrl="/feed.xml"/>
            <outline text="empty" xmlUrl=""/>
            <outline text="ok" xmlUrl="https://ok.example/rss"/>
            <outline text="T"><outline text="ok again" xmlUrl="https://ok.example/rss"/></outline>
        </body></opml>"#;
        let r = import_report(doc).unwrap();
        assert_eq!(r.feeds.len(), 1);
        assert_eq!(
            r.feeds[0].tags,
            vec!["T"],
            "tags of the duplicate are merged"
        );
        assert_eq!(r.skipped.len(), 4, "{:?}", r.skipped);
    }

    #[test]
    fn hostile_documents_are_refused_or_bounded() {
        // Not OPML / not XML.
        assert_eq!(import("<rss><channel/></rss>"), Err(OpmlError::NotOpml));
        assert_eq!(import(""), Err(OpmlError::NotOpml));
        assert!(matches!(
            import("<opml><body><outline text='a'></body></opml>"),
            Err(OpmlError::Xml { .. })
        ));
        // Huge nesting: refused at MAX_DEPTH, no recursion, no panic.
        let deep = format!(
            "<opml><body>{}{}</body></opml>",
            "<outline text=\"f\">".repeat(100_000),
            "</outline>".repeat(100_000)
        );
        assert_eq!(import(&deep), Err(OpmlError::TooDeep));
        // Nesting just within the bound works.
        let ok = format!(
            "<opml><body>{}<outline xmlUrl=\"https://x.example/\"/>{}</body></opml>",
            "<outline text=\"f\">".repeat(MAX_DEPTH - 1),
            "</outline>".repeat(MAX_DEPTH - 1)
        );
        let feeds = import(&ok).unwrap();
        assert_eq!(feeds[0].tags, vec!["f"], "repeated folder names collapse");
        // Entity tricks: DTD entities are not expanded; unknown ones stay literal.
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE opml [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<opml><body><outline text="&lol2;" xmlUrl="https://x.example/f?a=1&amp;b=&#50;"/></body></opml>"#;
        let feeds = import(laughs).unwrap();
        assert_eq!(feeds[0].name.as_deref(), Some("&lol2;"));
        assert_eq!(feeds[0].url, "https://x.example/f?a=1&b=2");
        // Too large.
        let big = " ".repeat(MAX_OPML_BYTES + 1);
        assert_eq!(import(&big), Err(OpmlError::TooLarge));
        // Long names are cut; control characters dropped.
        let long = format!(
            "<opml><body><outline text=\"{}\u{1}x\" xmlUrl=\"https://x.example/\"/></body></opml>",
            "n".repeat(10_000)
        );
        let feeds = import(&long).unwrap();
        assert_eq!(
            feeds[0].name.as_ref().map(|n| n.chars().count()),
            Some(MAX_NAME_CHARS)
        );
    }

    #[test]
    fn too_many_feeds_is_an_error() {
        let mut doc = String::from("<opml><body>");
        for i in 0..=MAX_FEEDS {
            doc.push_str(&format!("<outline xmlUrl=\"https://x.example/{i}\"/>"));
        }
        doc.push_str("</body></opml>");
        assert_eq!(import(&doc), Err(OpmlError::TooManyFeeds));
    }

    #[test]
    fn export_escapes_everything() {
        let doc = export(
            &[(
                "a\"b<c>&'\n".to_string(),
                "https://x.example/?a=1&b=\"2\"".to_string(),
                vec!["t,1/2".to_string()],
            )],
            "T",
        );
        assert!(!doc.contains("a\"b"));
        assert!(doc.contains("a&quot;b&lt;c&gt;&amp;&apos;"));
        let back = import(&doc).unwrap();
        assert_eq!(back[0].url, "https://x.example/?a=1&b=%222%22");
        assert_eq!(back[0].name.as_deref(), Some("a\"b<c>&'"));
        // Commas and slashes in a tag would split it on import: they become spaces.
        assert_eq!(back[0].tags, vec!["t 1 2"]);
    }
}
