//! Languages: ISO 639-1 codes as the rules and term sets write them.
//!
//! In: a two-letter code from a config (`vi`, `zh`). Out: a [`Lang`] (two bytes, `Copy`), or a
//! suggestion for a near miss (`vn` → `vi`). Pure.

use std::fmt;

/// An ISO 639-1 language code, lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lang([u8; 2]);

/// Every ISO 639-1 code.
const ISO_639_1: &str = "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce \
ch co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha \
he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku \
kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv \
ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st \
su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu";

/// Country codes and names people write instead of the language code.
const ALIASES: &[(&str, &str)] = &[
    ("vn", "vi"),
    ("cn", "zh"),
    ("tw", "zh"),
    ("hk", "zh"),
    ("jp", "ja"),
    ("kr", "ko"),
    ("cz", "cs"),
    ("gr", "el"),
    ("dk", "da"),
    ("se", "sv"),
    ("ua", "uk"),
    ("br", "pt"),
    ("eng", "en"),
    ("english", "en"),
    ("chinese", "zh"),
    ("japanese", "ja"),
    ("korean", "ko"),
    ("vietnamese", "vi"),
    ("german", "de"),
    ("french", "fr"),
    ("spanish", "es"),
    ("portuguese", "pt"),
    ("italian", "it"),
    ("dutch", "nl"),
    ("polish", "pl"),
    ("russian", "ru"),
];

impl Lang {
    /// The language of an ISO 639-1 code (lowercase), if it is one.
    pub fn from_code(code: &str) -> Option<Lang> {
        let b = code.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_lowercase) {
            return None;
        }
        ISO_639_1
            .split_ascii_whitespace()
            .any(|c| c == code)
            .then(|| Lang([b[0], b[1]]))
    }

    pub fn as_str(&self) -> &str {
        // Only built from ASCII codes.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The code meant by a near miss: `VI` → `vi`, `vn` → `vi`, `english` → `en`.
pub fn suggest(written: &str) -> Option<&'static str> {
    let lower = written.trim().to_ascii_lowercase();
    if let Some((_, c)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        return Some(c);
    }
    ISO_639_1
        .split_ascii_whitespace()
        .find(|c| *c == lower && lower != written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_suggestions() {
        assert_eq!(
            Lang::from_code("vi").map(|l| l.to_string()),
            Some("vi".into())
        );
        assert!(Lang::from_code("vn").is_none());
        assert!(Lang::from_code("VI").is_none());
        assert!(Lang::from_code("xx").is_none());
        assert_eq!(suggest("vn"), Some("vi"));
        assert_eq!(suggest("DE"), Some("de"));
        assert_eq!(suggest("zz"), None);
    }
}
