//! Text normalisation for matching: the one place that decides which strings count as "the same"
//! for the watch-rule language.
//!
//! In: untrusted plain text (item fields) and query terms. Out: [`Normalized`] text — NFKC,
//! full-width forms folded, case folded, whitespace runs collapsed to one space, invisible
//! formatting characters dropped, common traditional Chinese characters folded to simplified —
//! plus an offset map back to the original text so evidence can point at what the feed said.
//!
//! Two variants are produced: *exact* (the above) and *folded* (additionally accents stripped
//! and `đ`→`d`, `ł`→`l`, `ø`→`o`). A query term without diacritics is searched in the folded
//! text (so `trung phat` finds "trừng phạt"), a term with diacritics in the exact text (so `cấm`
//! does not find "cam"). Queries go through the same functions, so both sides always agree.
//!
//! Pure ASCII text without odd whitespace takes a fast path: lowercase copy, identity offsets.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Longest field text we look at. Feeds bound their items already; this keeps offsets in `u32`
/// and the per-item cost bounded even if a caller forgets.
pub const MAX_FIELD_BYTES: usize = 16 << 20;

/// Normalised text plus the way back to the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    /// Per byte of `text`: the original byte range of the source characters that produced it.
    /// `None` means the identity map (ASCII fast path).
    map: Option<Vec<(u32, u32)>>,
    orig_len: usize,
}

impl Normalized {
    /// Maps a byte range of the normalised text to the byte range of the original text that
    /// produced it (always on original char boundaries).
    pub fn to_original(&self, start: usize, end: usize) -> (usize, usize) {
        match &self.map {
            None => (start.min(self.orig_len), end.min(self.orig_len)),
            Some(map) => {
                if map.is_empty() || start >= map.len() || end <= start {
                    let p = map
                        .get(start)
                        .map(|r| r.0 as usize)
                        .unwrap_or(self.orig_len);
                    return (p, p);
                }
                let s = map[start].0 as usize;
                let e = map[(end - 1).min(map.len() - 1)].1 as usize;
                (s, e.max(s))
            }
        }
    }

    pub fn is_identity(&self) -> bool {
        self.map.is_none()
    }
}

/// Both variants of one text. `folded` is `None` when folding changes nothing (then the exact
/// text serves for both kinds of term, and terms with diacritics cannot occur in it).
#[derive(Debug, Clone)]
pub struct NormPair {
    pub exact: Normalized,
    pub folded: Option<Normalized>,
}

impl NormPair {
    /// The text that accent-insensitive terms are searched in.
    pub fn folded(&self) -> &Normalized {
        self.folded.as_ref().unwrap_or(&self.exact)
    }
}

/// Truncates to at most `max` bytes on a char boundary.
fn clamp(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The ASCII fast path: lowercase, hyphens between alphanumerics to spaces. Returns `None`
/// (use the general path) when the text is not ASCII or has whitespace other than single
/// spaces. Written as a few whole-string passes the standard library vectorises.
fn ascii_fast(s: &str) -> Option<String> {
    if !s.is_ascii()
        || s.contains("  ")
        || s.bytes()
            .any(|c| matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        return None;
    }
    let mut b = s.to_ascii_lowercase().into_bytes();
    for (i, _) in s.match_indices('-') {
        if i > 0
            && i + 1 < b.len()
            && b[i - 1].is_ascii_alphanumeric()
            && b[i + 1].is_ascii_alphanumeric()
        {
            b[i] = b' ';
        }
    }
    // Only ASCII bytes were changed into ASCII bytes.
    String::from_utf8(b).ok()
}

/// Characters that carry no text and only break matching (soft hyphen, zero-width joiners...).
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}'
    )
}

/// CJK scripts, matched as substrings (no spaces between words).
pub fn is_cjk(c: char) -> bool {
    let u = c as u32;
    matches!(u,
        0x1100..=0x11FF      // Hangul Jamo
        | 0x2E80..=0x2FDF    // CJK radicals
        | 0x3005..=0x3007    // 々 〆 〇
        | 0x3021..=0x3029
        | 0x3031..=0x3035
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3130..=0x318F    // Hangul compatibility Jamo
        | 0x31F0..=0x31FF
        | 0x3400..=0x4DBF    // Ext A
        | 0x4E00..=0x9FFF    // Unified ideographs
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7FF    // Hangul syllables + Jamo ext B
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width Katakana (NFKC folds them, but be safe)
        | 0x20000..=0x3FFFF) // Ext B..
}

/// CJK characters that normalisation never changes (besides the traditional→simplified fold).
fn is_plain_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xAC00..=0xD7A3 | 0x3041..=0x3096 | 0x30A1..=0x30FA)
}

/// A character that is part of a word for whole-word matching (Latin, Cyrillic, Greek, digits…).
/// CJK characters are not: CJK terms match as substrings.
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    (c.is_alphanumeric() || is_combining_mark(c)) && !is_cjk(c)
}

/// Accent folding of one (already NFKC, lowercased) char; pushes 0 or more chars.
fn fold_char(c: char, out: &mut impl FnMut(char)) {
    if c.is_ascii() || (c as u32) >= 0x2000 {
        // Only Latin/Greek/Cyrillic/Vietnamese diacritics are folded; Kana voicing marks and
        // Hangul must stay as they are.
        out(c);
        return;
    }
    if is_combining_mark(c) {
        return;
    }
    // Letters whose "accent" is part of the glyph (no Unicode decomposition) fold by hand; the
    // same mapping applies to the base of a decomposed letter (ǿ → ø → o) so folding is a
    // fixed point.
    let base = |d: char| match d {
        'đ' | 'ð' => 'd',
        'ł' => 'l',
        'ø' => 'o',
        'ı' => 'i',
        _ => d,
    };
    let mut any = false;
    for d in std::iter::once(c).nfd() {
        if !is_combining_mark(d) {
            any = true;
            out(base(d));
        }
    }
    if !any {
        out(base(c));
    }
}

/// Traditional → simplified for common characters, so one rule covers both scripts. Deliberately
/// small: the characters that occur in trade, technology and company vocabulary.
fn t2s(c: char) -> char {
    match c {
        '實' => '实',
        '體' => '体',
        '單' => '单',
        '華' => '华',
        '為' => '为',
        '導' => '导',
        '術' => '术',
        '業' => '业',
        '國' => '国',
        '製' => '制',
        '產' => '产',
        '機' => '机',
        '運' => '运',
        '輸' => '输',
        '陸' => '陆',
        '與' => '与',
        '對' => '对',
        '進' => '进',
        '許' => '许',
        '證' => '证',
        '規' => '规',
        '則' => '则',
        '長' => '长',
        '臺' => '台',
        '灣' => '湾',
        '積' => '积',
        '電' => '电',
        '達' => '达',
        '輝' => '辉',
        '偉' => '伟',
        '處' => '处',
        '發' => '发',
        '貿' => '贸',
        '設' => '设',
        '備' => '备',
        '儲' => '储',
        '憶' => '忆',
        '記' => '记',
        '資' => '资',
        '訊' => '讯',
        '門' => '门',
        '關' => '关',
        '稅' => '税',
        '鎵' => '镓',
        '鍺' => '锗',
        '銷' => '销',
        '應' => '应',
        '廠' => '厂',
        '場' => '场',
        '項' => '项',
        '領' => '领',
        '軍' => '军',
        '務' => '务',
        '內' => '内',
        '這' => '这',
        '個' => '个',
        '們' => '们',
        '將' => '将',
        '後' => '后',
        '說' => '说',
        '計' => '计',
        '盤' => '盘',
        '絡' => '络',
        '網' => '网',
        '雲' => '云',
        '數' => '数',
        '據' => '据',
        '學' => '学',
        '習' => '习',
        '擬' => '拟',
        '樣' => '样',
        '動' => '动',
        '態' => '态',
        '號' => '号',
        '開' => '开',
        '統' => '统',
        '經' => '经',
        '濟' => '济',
        '買' => '买',
        '賣' => '卖',
        '購' => '购',
        '價' => '价',
        '顯' => '显',
        '訓' => '训',
        '練' => '练',
        '專' => '专',
        '屬' => '属',
        '歐' => '欧',
        '諾' => '诺',
        '約' => '约',
        '條' => '条',
        '鏈' => '链',
        '斷' => '断',
        '級' => '级',
        '龍' => '龙',
        '頭' => '头',
        '鍵' => '键',
        '勢' => '势',
        '舉' => '举',
        '權' => '权',
        '讓' => '让',
        '當' => '当',
        '時' => '时',
        '間' => '间',
        '區' => '区',
        '會' => '会',
        '員' => '员',
        '議' => '议',
        '東' => '东',
        '亞' => '亚',
        '晉' => '晋',
        '紀' => '纪',
        '瀾' => '澜',
        '強' => '强',
        '調' => '调',
        '補' => '补',
        '貼' => '贴',
        '艙' => '舱',
        '雙' => '双',
        '納' => '纳',
        '撥' => '拨',
        '罰' => '罚',
        '誌' => '志',
        '鑑' => '鉴',
        '鋰' => '锂',
        '礦' => '矿',
        '鋁' => '铝',
        '鐵' => '铁',
        '銅' => '铜',
        '鎳' => '镍',
        '鈷' => '钴',
        '額' => '额',
        '聯' => '联',
        '標' => '标',
        '準' => '准',
        '億' => '亿',
        '萬' => '万',
        '幣' => '币',
        _ => c,
    }
}

/// "export-control" matches the phrase "export control": a hyphen between two word characters
/// becomes a space (same length, so offset maps stay valid; queries get the same treatment).
fn join_hyphenated(text: String) -> String {
    if !text.contains('-') {
        return text;
    }
    let mut b = text.into_bytes();
    for i in 1..b.len().saturating_sub(1) {
        if b[i] != b'-' {
            continue;
        }
        // Decode just the neighbouring chars ('-' is ASCII, so i and i+1 are char boundaries).
        if b[i - 1].is_ascii() && b[i + 1].is_ascii() {
            if b[i - 1].is_ascii_alphanumeric() && b[i + 1].is_ascii_alphanumeric() {
                b[i] = b' ';
            }
            continue;
        }
        let mut ps = i - 1;
        while ps > 0 && (b[ps] & 0xC0) == 0x80 {
            ps -= 1;
        }
        let prev = std::str::from_utf8(&b[ps..i])
            .ok()
            .and_then(|t| t.chars().next());
        let nlen = match b[i + 1] {
            x if x < 0x80 => 1,
            x if x >= 0xF0 => 4,
            x if x >= 0xE0 => 3,
            _ => 2,
        };
        let nend = (i + 1 + nlen).min(b.len());
        let next = std::str::from_utf8(&b[i + 1..nend])
            .ok()
            .and_then(|t| t.chars().next());
        if prev.is_some_and(is_word_char) && next.is_some_and(is_word_char) {
            b[i] = b' ';
        }
    }
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Output builder for the general path.
#[derive(Clone)]
struct Out {
    text: String,
    map: Vec<(u32, u32)>,
    last_space: bool,
}

impl Out {
    fn with_capacity(n: usize) -> Out {
        Out {
            text: String::with_capacity(n),
            map: Vec::with_capacity(n),
            last_space: false,
        }
    }
    fn push(&mut self, c: char, range: (u32, u32)) {
        if c.is_whitespace() {
            if self.last_space {
                return;
            }
            self.last_space = true;
            self.text.push(' ');
            self.map.push(range);
            return;
        }
        self.last_space = false;
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.map.push(range);
        }
    }
    fn finish(self, orig_len: usize) -> Normalized {
        Normalized {
            text: join_hyphenated(self.text),
            map: Some(self.map),
            orig_len,
        }
    }
}

/// Normalises `s` into both variants (see the module doc).
pub fn normalize(s: &str) -> NormPair {
    let s = clamp(s, MAX_FIELD_BYTES);
    if let Some(text) = ascii_fast(s) {
        return NormPair {
            exact: Normalized {
                text,
                map: None,
                orig_len: s.len(),
            },
            folded: None,
        };
    }
    let mut exact = Out::with_capacity(s.len() + 8);
    // The folded variant is only materialised once folding first changes something (most
    // non-ASCII text — CJK, or Latin text with a few typographic quotes — never does).
    let mut folded: Option<Out> = None;
    let mut buf: Vec<char> = Vec::with_capacity(8);
    let mut fbuf: Vec<char> = Vec::with_capacity(8);
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        // Fast path for ideographs and Hangul not followed by a combining mark (the bulk of
        // CJK text): nothing to compose, case-fold or strip.
        if is_plain_cjk(c)
            && it
                .peek()
                .map_or(true, |&(_, d)| is_plain_cjk(d) || d.is_ascii())
        {
            let range = (i as u32, (i + c.len_utf8()) as u32);
            let l = t2s(c);
            exact.push(l, range);
            if let Some(f) = folded.as_mut() {
                f.push(l, range);
            }
            continue;
        }
        // A segment is one character plus the combining marks after it, so decomposed input
        // ("e" + U+0301) composes the same as precomposed input.
        let mut j = i + c.len_utf8();
        // Only letters and digits take the marks after them: a mark after punctuation stays on
        // its own, so the punctuation rules below (hyphens, apostrophes) see the same
        // neighbours in the exact and the accent-folded text (idempotence).
        if c.is_alphanumeric() {
            while let Some(&(k, d)) = it.peek() {
                if d.is_ascii() {
                    break;
                }
                // Half-width voiced sound marks become combining marks under NFKC, so they
                // belong to the segment before them too.
                if is_combining_mark(d) || d == '\u{FF9E}' || d == '\u{FF9F}' {
                    j = k + d.len_utf8();
                    it.next();
                } else if is_ignorable(d)
                    && s[k..]
                        .chars()
                        .find(|x| !is_ignorable(*x))
                        .is_some_and(is_combining_mark)
                {
                    // A soft hyphen or zero-width char between a letter and its accent: drop
                    // it and keep composing, as a second pass would.
                    j = k + d.len_utf8();
                    it.next();
                } else {
                    break;
                }
            }
        }
        let range = (i as u32, j as u32);
        if c.is_ascii() && j == i + 1 {
            let lc = c.to_ascii_lowercase();
            let lc = if c.is_whitespace() { ' ' } else { lc };
            exact.push(lc, range);
            if let Some(f) = folded.as_mut() {
                f.push(lc, range);
            }
            continue;
        }
        if c.is_whitespace() {
            exact.push(' ', range);
            if let Some(f) = folded.as_mut() {
                f.push(' ', range);
            }
            continue;
        }
        if j == i + c.len_utf8() && is_plain_cjk(c) {
            // Ideographs and Hangul syllables: NFKC, case and accent folding leave them alone.
            let l = t2s(c);
            exact.push(l, range);
            if let Some(f) = folded.as_mut() {
                f.push(l, range);
            }
            continue;
        }
        if is_ignorable(c) && j == i + c.len_utf8() {
            continue;
        }
        buf.clear();
        for n in s[i..j].chars().filter(|x| !is_ignorable(*x)).nfkc() {
            for l in n.to_lowercase() {
                buf.push(l);
            }
        }
        // Lowercasing can leave text that NFKC would still change; compose once more so the
        // result is a fixed point (normalisation must be idempotent).
        if is_nfkc_quick(buf.iter().copied()) != IsNormalized::Yes {
            let again: Vec<char> = buf.iter().copied().nfkc().collect();
            buf.clear();
            buf.extend(again);
        }
        for &l in &buf {
            if is_ignorable(l) {
                continue;
            }
            // Typographic apostrophes: "China’s" is written "china's" in queries.
            let l = match l {
                '\u{2018}' | '\u{2019}' | '\u{02BC}' => '\'',
                _ => t2s(l),
            };
            fbuf.clear();
            fold_char(l, &mut |f| fbuf.push(f));
            if folded.is_none() && fbuf.as_slice() != [l] {
                folded = Some(exact.clone());
            }
            exact.push(l, range);
            if let Some(f) = folded.as_mut() {
                for &x in &fbuf {
                    f.push(x, range);
                }
            }
        }
    }
    let orig_len = s.len();
    let exact = exact.finish(orig_len);
    let folded = folded
        .map(|f| f.finish(orig_len))
        .filter(|f| f.text != exact.text);
    NormPair { exact, folded }
}

/// Normalises a query term; returns `(exact, folded)`. The term "has diacritics" when they
/// differ.
pub fn normalize_term(s: &str) -> (String, String) {
    let p = normalize(s);
    let folded = p.folded().text.clone();
    (p.exact.text, folded)
}

/// The word tokens of a normalised text as byte start offsets: maximal runs of word characters,
/// and each CJK character on its own. Used for `NEAR` distances.
pub fn word_starts(text: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(text.len() / 5);
    let mut in_word = false;
    if text.is_ascii() {
        for (i, b) in text.bytes().enumerate() {
            if b.is_ascii_alphanumeric() {
                if !in_word {
                    out.push(i as u32);
                    in_word = true;
                }
            } else {
                in_word = false;
            }
        }
        return out;
    }
    for (i, c) in text.char_indices() {
        if is_cjk(c) {
            out.push(i as u32);
            in_word = false;
        } else if is_word_char(c) {
            if !in_word {
                out.push(i as u32);
                in_word = true;
            }
        } else {
            in_word = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fast_path_is_identity_and_lowercase() {
        let p = normalize("Nvidia H100 Curbs");
        assert_eq!(p.exact.text, "nvidia h100 curbs");
        assert!(p.exact.is_identity());
        assert!(p.folded.is_none());
        assert_eq!(p.exact.to_original(7, 11), (7, 11));
    }

    #[test]
    fn whitespace_collapses_and_maps_back() {
        let s = "Entity \n\t List";
        let p = normalize(s);
        assert_eq!(p.exact.text, "entity list");
        let (a, b) = p.exact.to_original(7, 11);
        assert_eq!(&s[a..b], "List");
    }

    #[test]
    fn vietnamese_folding_and_offsets() {
        let s = "Lệnh trừng phạt Đài";
        let p = normalize(s);
        assert_eq!(p.exact.text, "lệnh trừng phạt đài");
        let f = p.folded.as_ref().expect("differs");
        assert_eq!(f.text, "lenh trung phat dai");
        let start = f.text.find("trung phat").unwrap();
        let (a, b) = f.to_original(start, start + "trung phat".len());
        assert_eq!(&s[a..b], "trừng phạt");
    }

    #[test]
    fn decomposed_input_composes() {
        let p = normalize("ca\u{0302}\u{0301}m");
        assert_eq!(p.exact.text, "cấm");
        assert_eq!(p.folded().text, "cam");
    }

    #[test]
    fn fullwidth_and_traditional_fold() {
        assert_eq!(normalize("ＢＩＳ　實體清單").exact.text, "bis 实体清单");
    }

    #[test]
    fn hyphens_between_words_and_curly_apostrophes() {
        assert_eq!(
            normalize("Export-Control rules - a --b").exact.text,
            "export control rules - a --b"
        );
        assert_eq!(
            normalize("China’s export-curbs").exact.text,
            "china's export curbs"
        );
    }

    #[test]
    fn ignorables_dropped() {
        let s = "ex\u{00AD}port";
        let p = normalize(s);
        assert_eq!(p.exact.text, "export");
        assert_eq!(p.exact.to_original(0, 6), (0, s.len()));
    }

    #[test]
    fn words_and_cjk_tokens() {
        assert_eq!(word_starts("ai chip 芯片"), vec![0, 3, 8, 11]);
    }
}
