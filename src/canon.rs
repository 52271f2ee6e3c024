//! Canonical URLs: the one place that decides when two links point at the same article.
//!
//! In: an untrusted link string from a feed. Out: a canonical *key* string (or `None` when the
//! input is not an absolute `http`/`https` URL). The key is for comparing and storing, not for
//! display: it always says `https://` even when the site only serves `http`.
//!
//! What is folded, and why:
//! - scheme `http` → `https` (outlets moved to TLS; a feed that still says `http` is the same
//!   article); scheme and host lower-cased; IDN hosts become punycode (the `url` crate does
//!   this), a trailing dot on the host is dropped; user/password are dropped;
//! - host prefixes `www.`, `m.`, `mobile.` and `amp.` are removed (repeatedly, so
//!   `www.m.example.com` folds too) as long as a registrable-looking name (one with a dot)
//!   remains; IP addresses are left alone;
//! - default ports (80, 443) removed; other ports kept;
//! - the fragment is dropped;
//! - AMP variants: path segments that are exactly `amp`, a `.amp` suffix on the last segment
//!   (`story.amp`, `story.amp.html` → `story.html`), the query parameters `amp` (any value) and
//!   `outputType=amp`;
//! - tracking parameters ([`is_tracking_param`]: `utm_*`, click ids, mailing-list ids, `ref`…);
//!   the remaining parameters are sorted (stable for equal keys) so their order does not matter;
//!   empty parameters (`?&a=1&`) are dropped, an empty query disappears;
//! - percent-encoding normalised: escapes of unreserved characters are decoded, other escapes
//!   get upper-case hex, so `%7e`, `%7E` and `~` agree;
//! - a trailing slash is removed from the path except for the root (`/`).
//!
//! Not folded: path case (paths are case-sensitive on many servers), duplicate slashes, and
//! query parameters we do not know to be tracking (an `id=` may be the article itself).
//! Inputs longer than [`MAX_URL_BYTES`] are refused rather than truncated, because a truncated
//! URL could collide with a different article.

use url::Url;

/// Longest link we canonicalise. Real article URLs are far shorter; a longer one is garbage or
/// an attack, and refusing it keeps the cost per item bounded.
pub const MAX_URL_BYTES: usize = 4096;

/// Host prefixes that name the same site in another skin.
const HOST_PREFIXES: &[&str] = &["www.", "m.", "mobile.", "amp."];

/// Query parameters (compared lower-case) that identify a campaign or a click, never an article.
const TRACKING_PARAMS: &[&str] = &[
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "msclkid",
    "yclid",
    "twclid",
    "ttclid",
    "li_fat_id",
    "mc_cid",
    "mc_eid",
    "mkt_tok",
    "igshid",
    "ref",
    "ref_src",
    "ref_url",
    "referrer",
    "cmpid",
    "cmp",
    "ocid",
    "taid",
    "at_medium",
    "at_campaign",
    "at_custom1",
    "at_custom2",
    "at_custom3",
    "at_custom4",
    "spm",
    "__twitter_impression",
    "_ga",
    "_gl",
    "_hsenc",
    "_hsmi",
    "wt_mc",
    "wt.mc_id",
    "wt_zmc",
    "s_cid",
    "smid",
    "sr_share",
    "traffic_source",
    "guccounter",
    "guce_referrer",
    "guce_referrer_sig",
    "soc_src",
    "soc_trk",
    "vero_id",
    "oly_enc_id",
    "oly_anon_id",
    "__s",
    "xtor",
];

/// True for query parameter names that only track where a click came from. `utm_*` and
/// `itm_*` (internal tracking) prefixes count too. Case-insensitive.
pub fn is_tracking_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("utm_")
        || lower.starts_with("itm_")
        || lower.starts_with("pk_")
        || TRACKING_PARAMS.contains(&lower.as_str())
}

/// The canonical key of `raw`, or `None` when it is not an absolute http(s) URL with a host (or
/// is longer than [`MAX_URL_BYTES`]). Never panics.
pub fn canonical_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_URL_BYTES {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = canonical_host(&url)?;
    // `port()` is already `None` for the scheme's default port; an explicit 443 on an http URL
    // is also the https default once we fold the scheme.
    let port = match url.port() {
        Some(443) | Some(80) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let path = canonical_path(url.path());
    let query = url.query().map(canonical_query).unwrap_or_default();
    let mut out = String::with_capacity(8 + host.len() + path.len() + query.len() + 1);
    out.push_str("https://");
    out.push_str(&host);
    out.push_str(&port);
    out.push_str(&path);
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query);
    }
    Some(out)
}

/// The link as a reader should get it: `raw` with its tracking parameters ([`is_tracking_param`])
/// and a tracking fragment (`#utm_source=…`, `#xtor=…`) removed, and nothing else changed —
/// unlike [`canonical_url`], whose key may fold a host or a scheme the site does not serve,
/// this must still open the article. The other parameters keep their order and spelling.
/// `None` when `raw` is not an absolute http(s) URL. Never panics.
pub fn display_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_URL_BYTES {
        return None;
    }
    let mut url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    if let Some(q) = url.query() {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| !is_tracking_param(p.split('=').next().unwrap_or("")))
            .collect();
        let kept = kept.join("&");
        url.set_query(if kept.is_empty() { None } else { Some(&kept) });
    }
    let tracking_fragment = url.fragment().is_some_and(|f| {
        f.split('&')
            .all(|p| p.contains('=') && is_tracking_param(p.split('=').next().unwrap_or("")))
    });
    if tracking_fragment {
        url.set_fragment(None);
    }
    Some(url.into())
}

fn canonical_host(url: &Url) -> Option<String> {
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        // IP literals: the `url` crate already serialises them canonically.
        url::Host::Ipv4(a) => return Some(a.to_string()),
        url::Host::Ipv6(a) => return Some(format!("[{a}]")),
    };
    let mut host = host.trim_end_matches('.').to_string();
    if host.is_empty() {
        return None;
    }
    'strip: loop {
        for p in HOST_PREFIXES {
            if let Some(rest) = host.strip_prefix(p) {
                // Keep at least "name.tld": `m.com` must not become `com`.
                if rest.contains('.') {
                    host = rest.to_string();
                    continue 'strip;
                }
            }
        }
        break;
    }
    Some(host)
}

fn canonical_path(path: &str) -> String {
    let path = normalize_escapes(path);
    let mut segs: Vec<&str> = path.split('/').collect();
    // The path always starts with '/', so the first segment is empty.
    if segs.first() == Some(&"") {
        segs.remove(0);
    }
    // A trailing slash leaves an empty last segment: drop it (root handled below).
    while segs.last() == Some(&"") {
        segs.pop();
    }
    segs.retain(|s| !s.eq_ignore_ascii_case("amp"));
    let mut owned: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
    if let Some(last) = owned.last_mut() {
        let lower = last.to_ascii_lowercase();
        if lower.ends_with(".amp") && last.len() > 4 {
            last.truncate(last.len() - 4);
        } else if let Some(pos) = lower.rfind(".amp.") {
            // story.amp.html → story.html
            if pos > 0 {
                last.replace_range(pos..pos + 4, "");
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for s in &owned {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn canonical_query(q: &str) -> String {
    let mut params: Vec<(String, String)> = Vec::new();
    for part in q.split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        let k = normalize_escapes(k);
        let decoded_key = percent_decode_lossy(&k);
        if decoded_key.is_empty() || is_tracking_param(&decoded_key) {
            continue;
        }
        let lower = decoded_key.to_ascii_lowercase();
        if lower == "amp" {
            continue;
        }
        if lower == "outputtype" && v.is_some_and(|v| v.eq_ignore_ascii_case("amp")) {
            continue;
        }
        let v = v.map(normalize_escapes);
        let joined = match &v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        };
        params.push((k, joined));
    }
    // Sort by key only (stable), so repeated keys keep their relative order: `a=2&a=1` is not
    // necessarily the same request as `a=1&a=2`.
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
        .into_iter()
        .map(|(_, j)| j)
        .collect::<Vec<_>>()
        .join("&")
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters and upper-cases the hex of the others. A stray `%`
/// not followed by two hex digits is escaped as `%25` (what a browser would send).
fn normalize_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val);
            let lo = b.get(i + 2).copied().and_then(hex_val);
            if let (Some(h), Some(l)) = (hi, lo) {
                let v = h * 16 + l;
                if is_unreserved(v) {
                    out.push(v as char);
                } else {
                    out.push_str(&format!("%{v:02X}"));
                }
                i += 3;
                continue;
            }
            out.push_str("%25");
            i += 1;
            continue;
        }
        // Everything else was already ASCII-escaped by the url parser; copy char-wise so a
        // non-ASCII byte sequence (not expected) stays valid UTF-8.
        let ch_len = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Decodes all escapes (invalid UTF-8 replaced) — only used to recognise parameter names.
fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<String> {
        canonical_url(s)
    }

    #[test]
    fn pairs_that_are_the_same_article() {
        let same: &[(&str, &str)] = &[
            // scheme, host case, www, default port, fragment, trailing slash
            (
                "http://WWW.Example.com:80/news/chips/#top",
                "https://example.com/news/chips",
            ),
            (
                "https://example.com:443/a/b/",
                "https://www.example.com/a/b",
            ),
            // mobile and AMP hosts and paths
            ("https://m.example.com/story", "https://example.com/story"),
            (
                "https://mobile.example.com/story",
                "https://example.com/story",
            ),
            (
                "https://amp.theguardian.com/world/x",
                "https://www.theguardian.com/world/x",
            ),
            (
                "https://example.com/news/amp/world-1",
                "https://example.com/news/world-1",
            ),
            (
                "https://example.com/news/world-1/amp",
                "https://example.com/news/world-1",
            ),
            (
                "https://example.com/news/world-1.amp",
                "https://example.com/news/world-1",
            ),
            (
                "https://example.com/news/world-1.amp.html",
                "https://example.com/news/world-1.html",
            ),
            ("https://example.com/x?amp=1", "https://example.com/x"),
            ("https://example.com/x?amp", "https://example.com/x"),
            (
                "https://example.com/x?outputType=amp",
                "https://example.com/x",
            ),
            // tracking parameters, in any case, and param order
            (
                "https://example.com/x?utm_source=rss&utm_medium=feed&id=7&UTM_Campaign=z",
                "https://example.com/x?id=7",
            ),
            (
                "https://example.com/x?fbclid=abc&gclid=1&dclid=2&msclkid=3&mc_cid=4&mc_eid=5",
                "https://example.com/x",
            ),
            (
                "https://example.com/x?igshid=1&ref=tw&ref_src=twsrc&cmpid=rss&ocid=a&taid=b",
                "https://example.com/x",
            ),
            (
                "https://example.com/x?CMP=share_btn_tw&at_medium=RSS&at_campaign=x&spm=a.b",
                "https://example.com/x",
            ),
            (
                "https://example.com/x?__twitter_impression=true&_ga=1.2&yclid=9&wt_mc=rss",
                "https://example.com/x",
            ),
            (
                "https://example.com/x?b=2&a=1",
                "https://example.com/x?a=1&b=2",
            ),
            ("https://example.com/x?&a=1&&", "https://example.com/x?a=1"),
            ("https://example.com/x?", "https://example.com/x"),
            // percent-encoding of unreserved characters, hex case
            (
                "https://example.com/%7euser/a%2fb",
                "https://example.com/~user/a%2Fb",
            ),
            (
                "https://example.com/caf%c3%a9",
                "https://example.com/caf%C3%A9",
            ),
            ("https://example.com/café", "https://example.com/caf%C3%A9"),
            // IDN hosts: Unicode and punycode spellings agree
            ("https://www.bücher.de/a", "https://xn--bcher-kva.de/a"),
            ("https://BÜCHER.de/a", "https://bücher.de/a"),
            ("https://ba\u{301}o.vn/tin", "https://xn--bo-mia.vn/tin"),
            // trailing dot on the host, credentials
            ("https://example.com./x", "https://example.com/x"),
            ("https://user:pw@example.com/x", "https://example.com/x"),
            // stacked prefixes
            ("https://www.m.example.com/x", "https://example.com/x"),
            // surrounding whitespace
            ("  https://example.com/x \n", "https://example.com/x"),
        ];
        for (a, b) in same {
            let ca = c(a);
            assert!(ca.is_some(), "{a} should canonicalise");
            assert_eq!(ca, c(b), "{a} vs {b}");
        }
    }

    #[test]
    fn pairs_that_are_different_articles() {
        let different: &[(&str, &str)] = &[
            ("https://example.com/a", "https://example.com/b"),
            ("https://example.com/A", "https://example.com/a"),
            ("https://example.com/x?id=1", "https://example.com/x?id=2"),
            ("https://example.com/x?id=1", "https://example.com/x"),
            ("https://example.com:8080/x", "https://example.com/x"),
            ("https://news.example.com/x", "https://example.com/x"),
            ("https://example.org/x", "https://example.com/x"),
            ("https://example.com/example", "https://example.com/amp"),
            (
                "https://example.com/x?a=2&a=1",
                "https://example.com/x?a=1&a=2",
            ),
            // `m.com` is a site of its own, not the mobile skin of `com`
            ("https://m.com/x", "https://com/x"),
            ("https://example.com/campaign", "https://example.com/camp"),
            (
                "https://example.com/x?page=2",
                "https://example.com/x?page=3",
            ),
        ];
        for (a, b) in different {
            assert_ne!(c(a), c(b), "{a} vs {b}");
            assert!(c(a).is_some(), "{a}");
        }
    }

    #[test]
    fn exact_output_shape() {
        assert_eq!(
            c("HTTP://WWW.Example.COM/Path/?utm_source=x&b=1&a=2#frag").as_deref(),
            Some("https://example.com/Path?a=2&b=1")
        );
        assert_eq!(
            c("http://example.com").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            c("https://example.com/amp/").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            c("http://192.168.1.1:8080/x/").as_deref(),
            Some("https://192.168.1.1:8080/x")
        );
        assert_eq!(c("http://[::1]/x").as_deref(), Some("https://[::1]/x"));
        // Canonicalisation is idempotent.
        for u in [
            "https://www.bücher.de/caf%c3%a9/?b=1&a=%7e&utm_x=1",
            "http://m.example.com/a.amp.html?amp=1&z",
        ] {
            let once = c(u).unwrap();
            assert_eq!(c(&once).as_deref(), Some(once.as_str()), "{u}");
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        for g in [
            "",
            "   ",
            "not a url",
            "example.com/x",
            "/relative/path",
            "//example.com/x",
            "http://",
            "https://",
            "http://[::1",
            "http://exa mple.com/",
            "javascript:alert(1)",
            "mailto:a@example.com",
            "data:text/html,<b>x</b>",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://%zz/",
            "http://\u{0}/",
            long.as_str(),
        ] {
            assert_eq!(c(g), None, "{g:?}");
        }
        // Odd but parseable input must not panic either.
        for odd in [
            "https://example.com/%",
            "https://example.com/%e",
            "https://example.com/?%",
            "https://example.com/?=x",
            "https://example.com/?a=%zz",
            "https://example.com/.amp",
            "https://example.com/x.amp.",
            "https://example.com/\u{202e}evil",
            "https://xn--/",
            "https://www./",
            "https://amp.m.www./",
        ] {
            let _ = c(odd);
        }
        assert_eq!(
            c("https://example.com/?=x").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            c("https://example.com/%").as_deref(),
            Some("https://example.com/%25")
        );
    }

    #[test]
    fn tracking_param_names() {
        for t in [
            "utm_source",
            "UTM_MEDIUM",
            "fbclid",
            "CMP",
            "Ref",
            "itm_campaign",
        ] {
            assert!(is_tracking_param(t), "{t}");
        }
        for k in ["id", "p", "article", "story", "page", "q", "lang"] {
            assert!(!is_tracking_param(k), "{k}");
        }
    }

    #[test]
    fn display_url_drops_only_tracking() {
        let cases = [
            (
                "https://www.example.com/a/story.html?utm_source=x&id=7&fbclid=abc",
                Some("https://www.example.com/a/story.html?id=7"),
            ),
            (
                "http://m.example.com/amp/s?gclid=1#xtor=RSS-3",
                Some("http://m.example.com/amp/s"),
            ),
            (
                "https://example.com/s?b=2&a=1#section-2",
                Some("https://example.com/s?b=2&a=1#section-2"),
            ),
            (
                "https://example.com/s?utm_medium=email",
                Some("https://example.com/s"),
            ),
            ("javascript:alert(1)", None),
            ("/relative", None),
        ];
        for (raw, want) in cases {
            assert_eq!(display_url(raw).as_deref(), want, "{raw}");
        }
    }
}
