//! Item-level recovery: the defects that made feed-rs lose one item's text, or the whole feed,
//! repaired before or after it runs, so that one broken item never costs the others.
//!
//! In: the UTF-8 XML document `feed::parse` prepared. Out: a repaired document, or the
//! document cut into one small document per item (for when the whole still fails).
//!
//! Three repairs, each linear in the document and a no-op (no copy) on a well-formed one:
//! - [`fix_char_refs`]: a numeric character reference XML does not allow (`&#0;`, a surrogate
//!   `&#xD800;`, `&#x110000;`, an overflowing or malformed one) becomes `&#xFFFD;`, and the
//!   HTML spelling `&#X41;` becomes XML's `&#x41;`. quick-xml
//!   fails the whole document on such a reference in some elements and feed-rs silently
//!   empties the element in others (a title stored as "").
//! - [`balance_tags`]: a closing tag that does not close the open element (`</titel>`,
//!   `</ title>`, a `<b>` left open in a description) is rewritten so the document nests
//!   again: a stray closing tag closes the element that is open, a closing tag of an outer
//!   element first closes the ones left open inside it, and a document cut short is closed at
//!   its end. feed-rs does not always fail on mismatched tags: it can misread the rest of the
//!   feed and return one item with an empty title instead of ten.
//! - [`split_items`]: when the document still does not parse, each `<item>`/`<entry>` is
//!   wrapped in the document's own root (its namespaces) and parsed alone; the ones that
//!   parse are kept. At most `MAX_ITEMS` items are tried, and each document is one item long,
//!   so the cost stays linear.

use std::borrow::Cow;

/// Deeper nesting than this is not something a feed needs; balancing stops (the document is
/// left as it is) rather than building a huge stack of closing tags.
const MAX_DEPTH: usize = 512;

/// Whether `n` is a character XML 1.0 allows (production `Char`).
fn xml_char(n: u32) -> bool {
    matches!(n, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// Whether a `&#…;` reference body (between `&#` and `;`) is one XML allows: digits or `x` and
/// hex digits, naming a character XML permits (not 0, a surrogate, beyond U+10FFFF…).
pub(super) fn numeric_ref_ok(body: &str) -> bool {
    let n = match body.strip_prefix(['x', 'X']) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) => body.parse().ok(),
        None => None,
    };
    n.is_some_and(xml_char)
}

/// Every invalid numeric character reference replaced by `&#xFFFD;` (see the module docs).
/// Markup that is not text (CDATA, comments, processing instructions) is left alone.
pub fn fix_char_refs(doc: &str) -> Cow<'_, str> {
    if !doc.contains("&#") {
        return Cow::Borrowed(doc);
    }
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let b = doc.as_bytes();
    while let Some(p) = doc[i..].find(['&', '<']) {
        i += p;
        if b[i] == b'<' {
            i += skip_unparsed(&doc[i..]).unwrap_or(1);
            continue;
        }
        if b.get(i + 1) != Some(&b'#') {
            i += 1;
            continue;
        }
        // `&#` up to the `;` (references are short; without one it is not a reference and
        // the entity repair makes the `&` literal).
        let Some(end) = doc[i..].bytes().take(40).position(|c| c == b';') else {
            i += 1;
            continue;
        };
        let body = &doc[i + 2..i + end];
        if !numeric_ref_ok(body) {
            out.push_str(&doc[copied..i]);
            out.push_str("&#xFFFD;");
            copied = i + end + 1;
        } else if let Some(hex) = body.strip_prefix('X') {
            // HTML allows `&#X41;`, XML only the lowercase `x`.
            out.push_str(&doc[copied..i]);
            out.push_str("&#x");
            out.push_str(hex);
            out.push(';');
            copied = i + end + 1;
        }
        i += end + 1;
    }
    if copied == 0 {
        return Cow::Borrowed(doc);
    }
    out.push_str(&doc[copied..]);
    Cow::Owned(out)
}

/// If `s` starts with markup whose content is not parsed (CDATA, a comment, a processing
/// instruction, a declaration such as `<!DOCTYPE … [ … ]>`), its length.
fn skip_unparsed(s: &str) -> Option<usize> {
    let to = |close: &str| s.find(close).map_or(s.len(), |q| q + close.len());
    if s.starts_with("<![CDATA[") {
        Some(to("]]>"))
    } else if s.starts_with("<!--") {
        Some(to("-->"))
    } else if s.starts_with("<?") {
        Some(to("?>"))
    } else if s.starts_with("<!") {
        // A doctype's internal subset holds `>`s of its own.
        let gt = s.find('>').unwrap_or(s.len());
        match s[..gt].find('[') {
            Some(_) => Some(s.find("]>").map_or(s.len(), |q| q + 2)),
            None => Some((gt + 1).min(s.len())),
        }
    } else {
        None
    }
}

/// A tag at the start of `s`: its name as written, whether it closes, whether it is empty
/// (`<x/>`), and its length through `>`. `None` when `s` does not start a tag; a tag whose `>`
/// never comes (a document cut short) is `Some` with `len == None`.
struct Tag<'a> {
    name: &'a str,
    closing: bool,
    /// `</ name>`: well-formed but for the space, which quick-xml misreads.
    spaced: bool,
    empty: bool,
    len: Option<usize>,
}

fn tag(s: &str) -> Option<Tag<'_>> {
    let b = s.as_bytes();
    let mut j = 1;
    let closing = b.get(j) == Some(&b'/');
    let mut spaced = false;
    if closing {
        j += 1;
        spaced = b.get(j).is_some_and(u8::is_ascii_whitespace);
        // `</ title>`: a space before the name is a typo quick-xml misreads.
        while b.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
    }
    let start = j;
    while b.get(j).is_some_and(|&c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.') || c >= 0x80
    }) {
        j += 1;
    }
    if j == start || b[start].is_ascii_digit() || matches!(b[start], b'-' | b'.') {
        return None;
    }
    let name = &s[start..j];
    let mut quote = None;
    while j < b.len() {
        match (quote, b[j]) {
            (Some(q), c) if c == q => quote = None,
            // XML allows no `<` in an attribute value: the quote is broken, so this was not
            // a tag (and must not swallow the rest of the document as one).
            (Some(_), b'<') => return None,
            (Some(_), _) => {}
            (None, c @ (b'"' | b'\'')) if !closing => quote = Some(c),
            (None, b'>') => {
                return Some(Tag {
                    name,
                    closing,
                    spaced,
                    empty: !closing && b[j - 1] == b'/',
                    len: Some(j + 1),
                })
            }
            // A `<` inside a "tag": it was text (`a <b c <d>`), not markup.
            (None, b'<') => return None,
            _ => {}
        }
        j += 1;
    }
    Some(Tag {
        name,
        closing,
        spaced,
        empty: false,
        len: None,
    })
}

/// The document with its tags nesting (see the module docs), or borrowed unchanged when they
/// already do — or when it is too deep or too strange to repair safely.
pub fn balance_tags(doc: &str) -> Cow<'_, str> {
    let mut stack: Vec<&str> = Vec::new();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let mut seen_root = false;
    while let Some(p) = doc[i..].find('<') {
        i += p;
        let rest = &doc[i..];
        if let Some(len) = skip_unparsed(rest) {
            i += len;
            continue;
        }
        let Some(t) = tag(rest) else {
            i += 1;
            continue;
        };
        let Some(len) = t.len else {
            // Cut short inside a tag: drop the fragment, close what is open.
            out.push_str(&doc[copied..i]);
            copied = doc.len();
            break;
        };
        if !t.closing {
            if !t.empty {
                if stack.is_empty() && seen_root {
                    // A second root: not something to repair here.
                    return Cow::Borrowed(doc);
                }
                seen_root = true;
                stack.push(t.name);
                if stack.len() > MAX_DEPTH {
                    return Cow::Borrowed(doc);
                }
            }
            i += len;
            continue;
        }
        match stack.iter().rposition(|&n| n == t.name) {
            Some(at) if at + 1 == stack.len() => {
                // The common case, and the only one in a well-formed document.
                stack.pop();
                if t.spaced {
                    out.push_str(&doc[copied..i]);
                    push_close(&mut out, t.name);
                    copied = i + len;
                }
            }
            Some(at) => {
                // An outer element closes: close the ones left open inside it first.
                out.push_str(&doc[copied..i]);
                for name in stack.drain(at + 1..).rev() {
                    push_close(&mut out, name);
                }
                stack.pop();
                push_close(&mut out, t.name);
                copied = i + len;
            }
            None => {
                // A closing tag for nothing open: the misspelt close of the open element
                // (`<title>A</titel>`), or stray (dropped) when nothing is open.
                out.push_str(&doc[copied..i]);
                if let Some(name) = stack.pop() {
                    push_close(&mut out, name);
                }
                copied = i + len;
            }
        }
        i += len;
    }
    if copied == 0 && stack.is_empty() {
        return Cow::Borrowed(doc);
    }
    out.push_str(&doc[copied.min(doc.len())..]);
    for name in stack.into_iter().rev() {
        push_close(&mut out, name);
    }
    Cow::Owned(out)
}

fn push_close(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The document cut into one document per item: the prolog and root start tag (so namespace
/// declarations still apply), `<channel>` for RSS 2.0, the item, and the closing tags. Also
/// returns the document without its items, for the feed's own title. `None` when the document
/// has no items to split or its root is not a feed root.
pub fn split_items(doc: &str, max_items: usize) -> Option<(String, Vec<String>)> {
    let (root_start, root_end) = super::root_tag(doc)?;
    let root = tag(&doc[root_start..])?;
    let (item, wrap_open, wrap_close) = match root.name.to_ascii_lowercase().as_str() {
        "rss" => ("item", "<channel>", "</channel>"),
        "rdf:rdf" | "rdf" => ("item", "", ""),
        "feed" => ("entry", "", ""),
        _ => return None,
    };
    let head = &doc[..root_end];
    let root_close = format!("{wrap_close}</{}>", root.name);
    let mut items = Vec::new();
    let mut rest_of_doc = String::new();
    let mut copied = 0;
    let mut i = root_end;
    while items.len() < max_items {
        let Some(p) = doc[i..].find('<') else { break };
        i += p;
        let s = &doc[i..];
        if let Some(len) = skip_unparsed(s) {
            i += len;
            continue;
        }
        match tag(s) {
            Some(t) if !t.closing && t.name == item && t.len.is_some() => {
                let close = format!("</{item}>");
                let end = match t.empty {
                    true => i + t.len.unwrap_or(0),
                    false => doc[i..]
                        .find(&close)
                        .map_or(doc.len(), |q| i + q + close.len()),
                };
                items.push(format!("{head}{wrap_open}{}{root_close}", &doc[i..end]));
                rest_of_doc.push_str(&doc[copied..i]);
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    if items.is_empty() {
        return None;
    }
    rest_of_doc.push_str(&doc[copied..]);
    Some((rest_of_doc, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_references_become_the_replacement_character() {
        let cases = [
            ("a &#0; b", "a &#xFFFD; b"),
            (
                "&#xD800;&#x110000;&#99999999999;",
                "&#xFFFD;&#xFFFD;&#xFFFD;",
            ),
            (
                "&#x;&#xZZ;&#12a;&#;&#xFFFE;",
                "&#xFFFD;&#xFFFD;&#xFFFD;&#xFFFD;&#xFFFD;",
            ),
            (
                "ok &#233; &#xE9; &#10; &#x1F600;",
                "ok &#233; &#xE9; &#10; &#x1F600;",
            ),
            ("&#X41;", "&#x41;"),
            ("<![CDATA[&#0;]]> &#1;", "<![CDATA[&#0;]]> &#xFFFD;"),
            ("no ref &# here", "no ref &# here"),
        ];
        for (input, want) in cases {
            assert_eq!(fix_char_refs(input), want, "{input}");
        }
        assert!(matches!(fix_char_refs("&#233;"), Cow::Borrowed(_)));
    }

    #[test]
    fn tags_are_balanced_and_well_formed_documents_untouched() {
        let cases = [
            ("<a><t>x</titel><d>y</d></a>", "<a><t>x</t><d>y</d></a>"),
            ("<a><t>x</ t><d>y</d></a>", "<a><t>x</t><d>y</d></a>"),
            ("<a><d>x <b>y</d></a>", "<a><d>x <b>y</b></d></a>"),
            (
                "<a><i><t>x</t></i><i><t>y",
                "<a><i><t>x</t></i><i><t>y</t></i></a>",
            ),
            ("<a><i>x</i><i", "<a><i>x</i></a>"),
            ("<a>x <b c <d>y</d></a>", "<a>x <b c <d>y</d></a>"),
            ("<a></zz></a>", "<a></a>"),
        ];
        for (input, want) in cases {
            assert_eq!(balance_tags(input), want, "{input}");
        }
        for fine in [
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY e \"<x>\">]><r a='>'><x/><y>&e;</y><!-- </r> --><![CDATA[</y>]]></r>",
            "<rss><channel><item><title>A &lt; B</title></item></channel></rss>",
        ] {
            assert!(matches!(balance_tags(fine), Cow::Borrowed(_)), "{fine}");
        }
        // A broken quote is not a tag that runs to the end: what follows survives.
        assert!(balance_tags("<a><b c=\"x>y</b><d>z</d></a>").contains("<d>z</d>"));
        let deep = "<a>".repeat(MAX_DEPTH + 10);
        assert!(matches!(balance_tags(&deep), Cow::Borrowed(_)));
    }

    #[test]
    fn items_are_split_inside_the_documents_root() {
        let doc = "<?xml version=\"1.0\"?><rss version=\"2.0\" xmlns:dc=\"u\"><channel><title>F</title>\
                   <item><title>A</title></item><!-- <item> --><item><title>B</title></item></channel></rss>";
        let (rest, items) = split_items(doc, 10).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            "<?xml version=\"1.0\"?><rss version=\"2.0\" xmlns:dc=\"u\"><channel><item><title>B</title></item></channel></rss>"
        );
        assert!(rest.contains("<title>F</title>") && !rest.contains("<title>A"));
        assert_eq!(split_items(doc, 1).unwrap().1.len(), 1, "bounded");
        assert!(split_items("<html><item/></html>", 10).is_none());
    }
}
