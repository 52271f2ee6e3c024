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
//! The definition is per *segment* (a character plus the combining marks it takes):
//! [`segment_end`] and [`segment_exact`], then [`fold_char`] per output character. The rest is
//! speed, and must give the same result (a test runs both over arbitrary and real text):
//! pure ASCII text without odd whitespace is lowercased as a whole (identity offsets); in other
//! text ASCII bytes, ideographs and Hangul go straight through, and the characters of the Latin,
//! Greek, Cyrillic, Vietnamese, punctuation and full-width blocks come from a table computed
//! once from the definition. The offset map is kept as pieces (a run of characters that kept
//! their byte length is one piece), not per byte.

use std::sync::OnceLock;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Longest field text we look at. Feeds bound their items already; this keeps offsets in `u32`
/// and the per-item cost bounded even if a caller forgets.
pub const MAX_FIELD_BYTES: usize = 16 << 20;

/// `Piece::orig_end` of a linear piece.
const LINEAR: u32 = u32::MAX;

/// Part of the offset map. A *linear* piece is a run of output characters each of the same
/// byte length as the original character it came from: output byte `out + k` came from original
/// byte `orig + k`. Otherwise every output byte from `out` up to the next piece came from the
/// original range `orig..orig_end` (a folded `ệ`, a collapsed whitespace run, an `ﬁ` ligature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    out: u32,
    orig: u32,
    orig_end: u32,
}

/// Normalised text plus the way back to the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    /// Pieces sorted by `out`, the first at 0. `None` means the identity map (ASCII fast path).
    map: Option<Vec<Piece>>,
    orig_len: usize,
}

impl Normalized {
    /// Maps a byte range of the normalised text to the byte range of the original text that
    /// produced it (always on original char boundaries).
    pub fn to_original(&self, start: usize, end: usize) -> (usize, usize) {
        let Some(map) = &self.map else {
            return (start.min(self.orig_len), end.min(self.orig_len));
        };
        let len = self.text.len();
        if map.is_empty() || start >= len || end <= start {
            let p = if start < len && !map.is_empty() {
                self.orig_start(map, start)
            } else {
                self.orig_len
            };
            return (p, p);
        }
        let s = self.orig_start(map, start);
        let e = self.orig_end(map, (end - 1).min(len - 1));
        (s, e.max(s))
    }

    pub fn is_identity(&self) -> bool {
        self.map.is_none()
    }

    fn piece(map: &[Piece], p: usize) -> Piece {
        map[map
            .partition_point(|x| x.out as usize <= p)
            .saturating_sub(1)]
    }

    /// Original start of the character that produced output byte `p`.
    fn orig_start(&self, map: &[Piece], p: usize) -> usize {
        let pc = Self::piece(map, p);
        if pc.orig_end != LINEAR {
            return pc.orig as usize;
        }
        // Same byte lengths on both sides: the output char boundary is the original one.
        let mut cs = p;
        while cs > pc.out as usize && !self.text.is_char_boundary(cs) {
            cs -= 1;
        }
        pc.orig as usize + (cs - pc.out as usize)
    }

    /// Original end of the character that produced output byte `q`.
    fn orig_end(&self, map: &[Piece], q: usize) -> usize {
        let pc = Self::piece(map, q);
        if pc.orig_end != LINEAR {
            return pc.orig_end as usize;
        }
        let mut ce = q + 1;
        while !self.text.is_char_boundary(ce) {
            ce += 1;
        }
        (pc.orig as usize + (ce - pc.out as usize)).min(self.orig_len)
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
/// (use the general path) when the text has bytes outside printable ASCII or a double space.
/// Written as whole-string passes that vectorise.
fn ascii_fast(s: &str) -> Option<String> {
    let b = s.as_bytes();
    // Printable ASCII is 0x20..0x80; one test per byte, OR-ed per chunk so it vectorises.
    if b.chunks(64).any(|ch| {
        ch.iter()
            .fold(0u8, |m, &c| m | (c.wrapping_sub(0x20) >= 0x60) as u8)
            != 0
    }) || memchr::memmem::find(b, b"  ").is_some()
    {
        return None;
    }
    let mut out = s.to_ascii_lowercase();
    for i in memchr::memchr_iter(b'-', b) {
        if i > 0
            && i + 1 < b.len()
            && b[i - 1].is_ascii_alphanumeric()
            && b[i + 1].is_ascii_alphanumeric()
        {
            out.replace_range(i..i + 1, " ");
        }
    }
    Some(out)
}

/// Where the run of printable ASCII starting at `b[i]` (itself printable ASCII) ends: at the
/// first byte that is not, or at a space that follows a space. Sixteen bytes at a time, which
/// vectorises; long English runs are most of what the normaliser reads.
fn ascii_run_end(b: &[u8], i: usize) -> usize {
    const W: usize = 16;
    let n = b.len();
    let mut r = i + 1;
    while r + W <= n {
        let (ch, prev) = (&b[r..r + W], &b[r - 1..r - 1 + W]);
        let mut stop = false;
        for k in 0..W {
            stop |= (ch[k].wrapping_sub(0x20) >= 0x60) | ((ch[k] == b' ') & (prev[k] == b' '));
        }
        if stop {
            break;
        }
        r += W;
    }
    while r < n && (0x20..0x80).contains(&b[r]) && !(b[r] == b' ' && b[r - 1] == b' ') {
        r += 1;
    }
    r
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
    if is_plain_cjk(c) {
        return false;
    }
    if let Some(e) = tables().entry(c) {
        return e.flags & WORD != 0;
    }
    word_char_slow(c)
}

fn word_char_slow(c: char) -> bool {
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
/// small: the characters that occur in trade, technology and company vocabulary. Sorted by the
/// traditional character (binary search).
const T2S: &[(char, char)] = &[
    ('亞', '亚'),
    ('個', '个'),
    ('們', '们'),
    ('偉', '伟'),
    ('備', '备'),
    ('價', '价'),
    ('億', '亿'),
    ('儲', '储'),
    ('內', '内'),
    ('則', '则'),
    ('動', '动'),
    ('務', '务'),
    ('勢', '势'),
    ('區', '区'),
    ('員', '员'),
    ('單', '单'),
    ('國', '国'),
    ('場', '场'),
    ('學', '学'),
    ('實', '实'),
    ('將', '将'),
    ('專', '专'),
    ('對', '对'),
    ('導', '导'),
    ('屬', '属'),
    ('幣', '币'),
    ('廠', '厂'),
    ('強', '强'),
    ('後', '后'),
    ('態', '态'),
    ('憶', '忆'),
    ('應', '应'),
    ('撥', '拨'),
    ('據', '据'),
    ('擬', '拟'),
    ('數', '数'),
    ('斷', '断'),
    ('時', '时'),
    ('晉', '晋'),
    ('會', '会'),
    ('東', '东'),
    ('條', '条'),
    ('業', '业'),
    ('標', '标'),
    ('樣', '样'),
    ('機', '机'),
    ('權', '权'),
    ('歐', '欧'),
    ('準', '准'),
    ('濟', '济'),
    ('瀾', '澜'),
    ('灣', '湾'),
    ('為', '为'),
    ('產', '产'),
    ('當', '当'),
    ('發', '发'),
    ('盤', '盘'),
    ('礦', '矿'),
    ('稅', '税'),
    ('積', '积'),
    ('紀', '纪'),
    ('約', '约'),
    ('納', '纳'),
    ('級', '级'),
    ('絡', '络'),
    ('統', '统'),
    ('經', '经'),
    ('網', '网'),
    ('練', '练'),
    ('罰', '罚'),
    ('習', '习'),
    ('聯', '联'),
    ('臺', '台'),
    ('與', '与'),
    ('舉', '举'),
    ('艙', '舱'),
    ('華', '华'),
    ('萬', '万'),
    ('處', '处'),
    ('號', '号'),
    ('術', '术'),
    ('補', '补'),
    ('製', '制'),
    ('規', '规'),
    ('計', '计'),
    ('訊', '讯'),
    ('訓', '训'),
    ('記', '记'),
    ('設', '设'),
    ('許', '许'),
    ('誌', '志'),
    ('說', '说'),
    ('調', '调'),
    ('諾', '诺'),
    ('證', '证'),
    ('議', '议'),
    ('讓', '让'),
    ('買', '买'),
    ('貼', '贴'),
    ('貿', '贸'),
    ('資', '资'),
    ('賣', '卖'),
    ('購', '购'),
    ('軍', '军'),
    ('輝', '辉'),
    ('輸', '输'),
    ('這', '这'),
    ('進', '进'),
    ('運', '运'),
    ('達', '达'),
    ('鈷', '钴'),
    ('銅', '铜'),
    ('銷', '销'),
    ('鋁', '铝'),
    ('鋰', '锂'),
    ('鍵', '键'),
    ('鍺', '锗'),
    ('鎳', '镍'),
    ('鎵', '镓'),
    ('鏈', '链'),
    ('鐵', '铁'),
    ('鑑', '鉴'),
    ('長', '长'),
    ('門', '门'),
    ('開', '开'),
    ('間', '间'),
    ('關', '关'),
    ('陸', '陆'),
    ('雙', '双'),
    ('雲', '云'),
    ('電', '电'),
    ('項', '项'),
    ('領', '领'),
    ('頭', '头'),
    ('額', '额'),
    ('顯', '显'),
    ('體', '体'),
    ('龍', '龙'),
];

/// First code point of the ideograph range the traditional→simplified bitset covers.
const T2S_BASE: u32 = 0x3400;

/// Bit per code point from `T2S_BASE` to U+9FFF: has a simplified form in `T2S`.
const T2S_BITS: [u64; (0xA000 - T2S_BASE as usize) / 64] = {
    let mut bits = [0u64; (0xA000 - T2S_BASE as usize) / 64];
    let mut i = 0;
    while i < T2S.len() {
        let k = T2S[i].0 as usize - T2S_BASE as usize;
        bits[k / 64] |= 1 << (k % 64);
        i += 1;
    }
    bits
};

/// Does `c` have a simplified form in `T2S`? (A bit test.)
#[inline]
fn has_t2s(c: char) -> bool {
    let Some(k) = (c as u32).checked_sub(T2S_BASE) else {
        return false;
    };
    T2S_BITS
        .get(k as usize / 64)
        .is_some_and(|w| w & (1 << (k % 64)) != 0)
}

fn t2s(c: char) -> char {
    if !has_t2s(c) {
        return c;
    }
    T2S.binary_search_by_key(&c, |p| p.0)
        .map_or(c, |i| T2S[i].1)
}

/// Where the segment starting with `c` at byte `i` ends: only letters and digits take the
/// combining marks after them (so a mark after punctuation stays on its own, and the
/// punctuation rules — hyphens, apostrophes — see the same neighbours in the exact and the
/// folded text). Half-width voiced sound marks become combining marks under NFKC, so they join
/// too; a soft hyphen or zero-width char between a letter and its accent is taken (and dropped)
/// as a second pass would.
fn segment_end(s: &str, i: usize, c: char) -> usize {
    let mut j = i + c.len_utf8();
    if !c.is_alphanumeric() {
        return j;
    }
    while let Some(d) = s[j..].chars().next() {
        if d.is_ascii() {
            break;
        }
        let joins = is_combining_mark(d)
            || d == '\u{FF9E}'
            || d == '\u{FF9F}'
            || (is_ignorable(d)
                && s[j..]
                    .chars()
                    .find(|x| !is_ignorable(*x))
                    .is_some_and(is_combining_mark));
        if !joins {
            break;
        }
        j += d.len_utf8();
    }
    j
}

/// The exact (not accent-folded) characters one segment `seg`, starting with `c`, becomes.
/// This is the definition of normalisation; everything faster must agree with it.
fn segment_exact(seg: &str, c: char, out: &mut Vec<char>) {
    if seg.len() == c.len_utf8() {
        if c.is_ascii() {
            out.push(if c.is_whitespace() {
                ' '
            } else {
                c.to_ascii_lowercase()
            });
            return;
        }
        if c.is_whitespace() {
            out.push(' ');
            return;
        }
        if is_plain_cjk(c) {
            // Ideographs and Hangul syllables: NFKC, case and accent folding leave them alone.
            out.push(t2s(c));
            return;
        }
        if is_ignorable(c) {
            return;
        }
    }
    let mut buf: Vec<char> = Vec::with_capacity(4);
    for n in seg.chars().filter(|x| !is_ignorable(*x)).nfkc() {
        buf.extend(n.to_lowercase());
    }
    // Lowercasing can leave text that NFKC would still change; compose once more so the
    // result is a fixed point (normalisation must be idempotent).
    if is_nfkc_quick(buf.iter().copied()) != IsNormalized::Yes {
        buf = buf.iter().copied().nfkc().collect();
    }
    for l in buf {
        if is_ignorable(l) {
            continue;
        }
        // Typographic apostrophes: "China’s" is written "china's" in queries.
        out.push(match l {
            '\u{2018}' | '\u{2019}' | '\u{02BC}' => '\'',
            _ => t2s(l),
        });
    }
}

/// The accent-folded characters of one segment, from its exact ones. Dropping a mark can
/// leave marks that canonical ordering would swap (a starter mark between two others), so the
/// segment is composed once more when it is not already normalised: a fixed point again.
fn segment_folded(exact: &[char], out: &mut Vec<char>) {
    for &l in exact {
        fold_char(l, &mut |f| out.push(f));
    }
    if is_nfkc_quick(out.iter().copied()) != IsNormalized::Yes {
        let again: Vec<char> = out.iter().copied().nfkc().collect();
        *out = again;
    }
}

/// Table entry flags.
const SIMPLE: u8 = 1; // alone, the char becomes `exact` (one char) and folds to `folded`
const FOLD_NONE: u8 = 2; // ... and folding drops it (a combining mark)
const DROP: u8 = 4; // alone, the char becomes nothing (ignorable)
const JOINS: u8 = 8; // may join the segment before it (combining mark, ignorable)
const WORD: u8 = 16; // `is_word_char`

#[derive(Clone, Copy)]
struct Entry {
    exact: char,
    folded: char,
    flags: u8,
}

/// Blocks with a precomputed entry per character: Latin-1 to general punctuation (Latin,
/// Greek, Cyrillic, Vietnamese, quotes, dashes), CJK punctuation, full- and half-width forms.
const TABLE_RANGES: [(u32, u32); 3] = [(0x80, 0x2070), (0x3000, 0x3040), (0xFF00, 0xFFF0)];

struct Tables {
    entries: [Vec<Entry>; 3],
}

impl Tables {
    #[inline]
    fn entry(&self, c: char) -> Option<&Entry> {
        let u = c as u32;
        for (k, &(lo, hi)) in TABLE_RANGES.iter().enumerate() {
            if u < lo {
                return None;
            }
            if u < hi {
                return self.entries[k].get((u - lo) as usize);
            }
        }
        None
    }
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let entries = TABLE_RANGES.map(|(lo, hi)| {
            (lo..hi)
                .map(|u| {
                    char::from_u32(u).map_or(
                        Entry {
                            exact: '\0',
                            folded: '\0',
                            flags: 0,
                        },
                        entry_for,
                    )
                })
                .collect()
        });
        Tables { entries }
    })
}

/// Computes a table entry from the definition. Uses only `segment_exact`, `fold_char` and the
/// character predicates, never the table itself (it runs while the table is being built).
fn entry_for(c: char) -> Entry {
    let mut flags = 0;
    if word_char_slow(c) {
        flags |= WORD;
    }
    if is_combining_mark(c) || is_ignorable(c) || c == '\u{FF9E}' || c == '\u{FF9F}' {
        flags |= JOINS;
    }
    let mut ex = Vec::new();
    let mut buf = [0u8; 4];
    segment_exact(c.encode_utf8(&mut buf), c, &mut ex);
    let mut fo = Vec::new();
    segment_folded(&ex, &mut fo);
    let (mut exact, mut folded) = ('\0', '\0');
    match (ex.as_slice(), fo.as_slice()) {
        ([], _) => flags |= DROP,
        ([e], []) => {
            flags |= SIMPLE | FOLD_NONE;
            exact = *e;
        }
        ([e], [f]) => {
            flags |= SIMPLE;
            (exact, folded) = (*e, *f);
        }
        _ => {}
    }
    Entry {
        exact,
        folded,
        flags,
    }
}

/// Does the (non-ASCII) char at byte `k` possibly join the segment before it? `true` sends the
/// segment to the general path, which decides exactly; `false` must be certain.
#[inline]
fn may_join(s: &str, k: usize) -> bool {
    let Some(d) = s[k..].chars().next() else {
        return false;
    };
    if is_plain_cjk(d) {
        return false;
    }
    match tables().entry(d) {
        Some(e) => e.flags & JOINS != 0,
        None => is_combining_mark(d) || is_ignorable(d) || d == '\u{FF9E}' || d == '\u{FF9F}',
    }
}

/// Output builder: normalised text plus its offset map.
#[derive(Clone)]
struct Out {
    text: String,
    map: Vec<Piece>,
    last_space: bool,
    hyphen: bool,
}

impl Out {
    fn with_capacity(n: usize) -> Out {
        Out {
            text: String::with_capacity(n),
            map: Vec::with_capacity(16),
            last_space: false,
            hyphen: false,
        }
    }

    /// Appends `c`, produced by the original bytes `start..end`; `sole` when it is the only
    /// character they produce. Whitespace runs collapse to one space.
    #[inline]
    fn push(&mut self, c: char, start: usize, end: usize, sole: bool) {
        let c = if c.is_whitespace() {
            if self.last_space {
                return;
            }
            self.last_space = true;
            ' '
        } else {
            self.last_space = false;
            self.hyphen |= c == '-';
            c
        };
        let (start, end) = (start as u32, end as u32);
        let out = self.text.len() as u32;
        self.text.push(c);
        let linear = sole && c.len_utf8() as u32 == end - start;
        if let Some(last) = self.map.last() {
            let extends = if linear {
                last.orig_end == LINEAR
                    && out.wrapping_sub(last.out) == start.wrapping_sub(last.orig)
            } else {
                last.orig == start && last.orig_end == end
            };
            if extends {
                return;
            }
        }
        self.map.push(Piece {
            out,
            orig: start,
            orig_end: if linear { LINEAR } else { end },
        });
    }

    /// Appends a run of characters that each keep their byte length and are not whitespace
    /// (`f` writes them), produced by the original bytes from `start` on: one linear piece.
    #[inline]
    fn push_same_length(&mut self, start: usize, f: impl FnOnce(&mut String)) {
        let out = self.text.len() as u32;
        f(&mut self.text);
        if self.text.len() as u32 == out {
            return;
        }
        self.last_space = false;
        let start = start as u32;
        if let Some(last) = self.map.last() {
            if last.orig_end == LINEAR
                && out.wrapping_sub(last.out) == start.wrapping_sub(last.orig)
            {
                return;
            }
        }
        self.map.push(Piece {
            out,
            orig: start,
            orig_end: LINEAR,
        });
    }

    /// Appends printable ASCII `run` (original bytes from `start` on) lowercased. The caller
    /// guarantees no space in it would collapse (no double space, no leading space after one).
    #[inline]
    fn push_ascii_run(&mut self, run: &str, start: usize, hyphen: bool) {
        if run.is_empty() {
            return;
        }
        self.hyphen |= hyphen;
        let ends_space = run.ends_with(' ');
        self.push_same_length(start, |t| {
            let from = t.len();
            t.push_str(run);
            t[from..].make_ascii_lowercase();
        });
        self.last_space = ends_space;
    }

    fn finish(self, orig_len: usize) -> Normalized {
        let text = if self.hyphen {
            join_hyphenated(self.text)
        } else {
            self.text
        };
        Normalized {
            text,
            map: Some(self.map),
            orig_len,
        }
    }
}

/// "export-control" matches the phrase "export control": a hyphen between two word characters
/// becomes a space (same length, so offset maps stay valid; queries get the same treatment).
fn join_hyphenated(text: String) -> String {
    let mut joins = Vec::new();
    for i in memchr::memchr_iter(b'-', text.as_bytes()) {
        // '-' is ASCII, so i and i + 1 are char boundaries. A replaced hyphen is a space, not
        // a word char, so deciding on the original text decides as a left-to-right pass would.
        let prev = text[..i].chars().next_back();
        let next = text[i + 1..].chars().next();
        if prev.is_some_and(is_word_char) && next.is_some_and(is_word_char) {
            joins.push(i);
        }
    }
    if joins.is_empty() {
        return text;
    }
    let mut b = text.into_bytes();
    for i in joins {
        b[i] = b' ';
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
    normalize_general(s, true)
}

/// The general path. With `fast == false` every segment goes through the definition
/// (`segment_end`, `segment_exact`, `fold_char`): the reference the fast paths are tested
/// against.
fn normalize_general(s: &str, fast: bool) -> NormPair {
    let t = tables();
    let b = s.as_bytes();
    let n = b.len();
    let mut exact = Out::with_capacity(n + 8);
    // The folded variant is only materialised once folding first changes something (most
    // non-ASCII text — CJK, or Latin text with a few typographic quotes — never does).
    let mut folded: Option<Out> = None;
    let mut ebuf: Vec<char> = Vec::with_capacity(8);
    let mut fbuf: Vec<char> = Vec::with_capacity(8);
    let mut i = 0;
    while i < n {
        let x = b[i];
        // Is the segment starting here just this one character?
        let alone = |end: usize| end >= n || b[end] < 0x80 || !may_join(s, end);
        if fast && (0x20..0x80).contains(&x) && !(x == b' ' && exact.last_space) {
            // A run of printable ASCII with no space that would collapse; its last byte stays
            // out if it is a letter that may take a combining mark after it.
            let mut r = ascii_run_end(b, i);
            let hyphen = memchr::memchr(b'-', &b[i..r]).is_some();
            if r < n && b[r] >= 0x80 && b[r - 1].is_ascii_alphanumeric() && !alone(r) {
                r -= 1;
            }
            if r > i {
                exact.push_ascii_run(&s[i..r], i, hyphen);
                if let Some(f) = folded.as_mut() {
                    // The folded text may end in a space where the exact one does not (a
                    // combining mark after a space is dropped by folding).
                    let k = if x == b' ' && f.last_space { i + 1 } else { i };
                    f.push_ascii_run(&s[k..r], k, hyphen);
                }
                i = r;
                continue;
            }
        }
        if fast && x < 0x80 && (!x.is_ascii_alphanumeric() || alone(i + 1)) {
            let c = if matches!(x, b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
                ' '
            } else {
                x.to_ascii_lowercase() as char
            };
            exact.push(c, i, i + 1, true);
            if let Some(f) = folded.as_mut() {
                f.push(c, i, i + 1, true);
            }
            i += 1;
            continue;
        }
        let c = s[i..].chars().next().unwrap_or('\0');
        let len = c.len_utf8();
        if fast && x >= 0x80 && alone(i + len) {
            if is_plain_cjk(c) {
                // A run of ideographs / Hangul / Kana, each kept at its byte length by t2s;
                // the last one stays out if a mark may follow it.
                let mut r = i + len;
                let mut last = i;
                let mut traditional = has_t2s(c);
                for d in s[r..].chars() {
                    if !is_plain_cjk(d) {
                        break;
                    }
                    traditional |= has_t2s(d);
                    last = r;
                    r += d.len_utf8();
                }
                if r < n && !alone(r) {
                    r = last;
                }
                let run = &s[i..r.max(i + len)];
                // Simplified text (the usual case) is copied as it is.
                let write = |t: &mut String| {
                    if traditional {
                        t.extend(run.chars().map(t2s))
                    } else {
                        t.push_str(run)
                    }
                };
                exact.push_same_length(i, write);
                if let Some(f) = folded.as_mut() {
                    f.push_same_length(i, write);
                }
                i += run.len();
                continue;
            }
            if let Some(e) = t.entry(c) {
                if e.flags & DROP != 0 {
                    i += len;
                    continue;
                }
                if e.flags & SIMPLE != 0 {
                    let fold_none = e.flags & FOLD_NONE != 0;
                    if folded.is_none() && (fold_none || e.folded != e.exact) {
                        folded = Some(exact.clone());
                    }
                    exact.push(e.exact, i, i + len, true);
                    if let Some(f) = folded.as_mut() {
                        if !fold_none {
                            f.push(e.folded, i, i + len, true);
                        }
                    }
                    i += len;
                    continue;
                }
            }
        }
        let j = segment_end(s, i, c);
        ebuf.clear();
        segment_exact(&s[i..j], c, &mut ebuf);
        fbuf.clear();
        segment_folded(&ebuf, &mut fbuf);
        if folded.is_none() && fbuf != ebuf {
            folded = Some(exact.clone());
        }
        let sole = ebuf.len() == 1;
        for &l in &ebuf {
            exact.push(l, i, j, sole);
        }
        if let Some(f) = folded.as_mut() {
            let fsole = sole && fbuf.len() == 1;
            for &y in &fbuf {
                f.push(y, i, j, fsole);
            }
        }
        i = j;
    }
    let exact = exact.finish(n);
    let folded = folded.map(|f| f.finish(n)).filter(|f| f.text != exact.text);
    NormPair { exact, folded }
}

/// Normalises a query term; returns `(exact, folded)`. The term "has diacritics" when they
/// differ.
pub fn normalize_term(s: &str) -> (String, String) {
    let p = normalize(s);
    let folded = p.folded().text.clone();
    (p.exact.text, folded)
}

/// Does `s` carry diacritics that folding removes (`bán`, `Ł`)? The same test that tells a term
/// "with diacritics" from one without, applied to a stretch of original text.
pub fn has_diacritics(s: &str) -> bool {
    if s.is_ascii() {
        return false;
    }
    let p = normalize(s);
    p.folded.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diacritics_are_told_like_terms() {
        assert!(has_diacritics("bán"));
        assert!(has_diacritics("Łódź"));
        assert!(!has_diacritics("ban"));
        assert!(!has_diacritics("實體清單"));
        assert!(!has_diacritics("экспорт"));
    }

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
    fn folded_text_is_a_fixed_point_when_a_dropped_mark_unblocks_reordering() {
        // U+0B01 (a mark of combining class 0) keeps the two marks around it in order; folding
        // drops it, and the folded text must already be in canonical order.
        let once = normalize("\u{10eab}\u{b01}\u{16ff0}");
        let f = once.folded().text.clone();
        assert_eq!(normalize(&f).folded().text, f);
        assert_eq!(f, "\u{16ff0}\u{10eab}");
    }

    #[test]
    fn ignorables_dropped() {
        let s = "ex\u{00AD}port";
        let p = normalize(s);
        assert_eq!(p.exact.text, "export");
        assert_eq!(p.exact.to_original(0, 6), (0, s.len()));
    }
}

/// The fast paths against the definition (`normalize_general(s, false)`), offset maps included.
#[cfg(test)]
mod fast_path_agrees {
    use super::*;
    use proptest::prelude::*;

    fn check(s: &str) {
        let s = clamp(s, MAX_FIELD_BYTES);
        let fast = normalize_general(s, true);
        let slow = normalize_general(s, false);
        assert_eq!(fast.exact, slow.exact, "exact variant of {s:?}");
        assert_eq!(fast.folded, slow.folded, "folded variant of {s:?}");
        // The ASCII path: same text, and the identity map gives the same original ranges.
        let top = normalize(s);
        assert_eq!(top.exact.text, slow.exact.text, "{s:?}");
        assert_eq!(top.folded().text, slow.folded().text, "{s:?}");
        if top.exact.is_identity() {
            let n = top.exact.text.len();
            for a in 0..n {
                assert_eq!(
                    top.exact.to_original(a, n),
                    slow.exact.to_original(a, n),
                    "{s:?} from {a}"
                );
            }
        }
    }

    #[test]
    fn on_hand_picked_text() {
        for s in [
            "",
            "Nvidia H100 curbs",
            "two  spaces\tand\na tab",
            "Lệnh trừng phạt Đài Loan",
            "ca\u{0302}\u{0301}m e\u{301} \u{301}x -\u{301} a\u{ad}\u{301}",
            "ＢＩＳ　實體清單「芯片」，。",
            "ﬁ İstanbul ǅ Straße ǿ Ωmega ЁЖ",
            "ﾊﾟ ｶﾞ 가 \u{1100}\u{1161}",
            "“China’s” export-curbs – — … \u{a0}\u{2003}x",
            "chipów, größer, Exportkontrollen, sankcje-eksport",
            "-é-é- a-ž ž-a 半-导 x\u{200b}y",
            "\u{0}\u{1}\u{7f}\u{85}\u{feff}",
            // Found by the property test below while the fast paths were written: a mark that
            // folding drops leaves the folded text ending in a space the exact text does not.
            "\u{301}",
            "\u{a0}\u{301} ",
            " \u{301}  ",
            "「\t\t實\u{85}  \u{323}  \u{a0}u",
            // Folding drops U+0B01 between two marks that canonical ordering then swaps.
            "\u{10eab}\u{b01}\u{16ff0}",
            // A double space deep inside a long ASCII run of non-ASCII text.
            "Café: the Commerce Department's new  export-control rule on chips  today.",
        ] {
            check(s);
        }
    }

    /// Every item of the shared news corpus and the seed article, when `../shared` is there.
    #[test]
    fn on_the_shared_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
        let Ok(items) = std::fs::read_to_string(dir.join("corpus/news/items.jsonl")) else {
            eprintln!("../shared/corpus/news not found; skipped");
            return;
        };
        for line in items.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("jsonl");
            for k in ["title", "summary"] {
                check(v[k].as_str().unwrap_or(""));
            }
        }
        for e in std::fs::read_dir(dir.join("seed")).into_iter().flatten() {
            if let Ok(t) = std::fs::read_to_string(e.expect("dir entry").path()) {
                check(&t);
            }
        }
    }

    fn multilingual() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "Z",
            "9",
            " ",
            "  ",
            "\t",
            "\n",
            "-",
            "'",
            "’",
            "é",
            "e\u{301}",
            "\u{301}",
            "\u{323}",
            "ệ",
            "Đ",
            "ł",
            "ø",
            "ß",
            "İ",
            "ǅ",
            "ﬁ",
            "Ω",
            "Ж",
            "芯",
            "實",
            "，",
            "。",
            "「",
            "Ａ",
            "ｶ",
            "ﾞ",
            "가",
            "\u{1100}",
            "\u{ad}",
            "\u{200b}",
            "\u{feff}",
            "\u{a0}",
            "\u{2003}",
            "…",
            "🙂",
            "\u{0}",
            "\u{85}",
            "\u{2028}",
            "½",
            "㎑",
            "\u{e000}",
            // Long ASCII stretches, read sixteen bytes at a time by the fast path.
            "Export Controls on",
            "semiconductor-manufacturing",
            " the  U.S. ",
        ]);
        prop::collection::vec(
            prop_oneof![4 => pieces.prop_map(String::from), 1 => any::<String>()],
            0..24,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn on_arbitrary_text(s in multilingual()) {
            check(&s);
        }
    }
}
