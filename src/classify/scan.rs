//! The term scan: the occurrences of an Aho-Corasick automaton's patterns in a batch of texts
//! that start where a term can start.
//!
//! In: an automaton (the matcher's contiguous NFA; any [`Automaton`]), a [`StartTest`] built
//! from the same patterns, and the texts (an item's normalised fields). Out: [`Raw`] matches
//! (text, start, end, pattern) in (text, start, end) order, so the matches of one pattern in one
//! text come in the order they occur. No I/O; no knowledge of fields or rules; of words only
//! where a term may start (the caller checks the boundaries and maps offsets).
//!
//! Why not one unanchored walk over every byte: with the shipped sets' 6,500 strings in
//! thirteen languages the automaton's first states are dense, so an unanchored walk takes
//! about a step per byte, many through failure links, and reports matches inside words that
//! the matcher then refuses. Here a term is looked for only at the offsets where the matcher
//! could accept one — after a non-word character, on one, or at a letter–digit step — and
//! only when the bytes there begin some pattern (table lookups on the first four bytes); from
//! there one anchored walk runs until no pattern continues. On the dev corpus that is one
//! candidate start in three bytes, and about seven in eight of those are turned away by the
//! tables.

use aho_corasick::automaton::Automaton;
use aho_corasick::Anchored;

use crate::text::is_word_char;

/// One occurrence: pattern `pat` at `start..end` of `texts[text]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw {
    pub text: u32,
    pub start: u32,
    pub end: u32,
    pub pat: u32,
}

/// What a character is to a term's start: [`starts`] needs only these four.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Not a word character (space, punctuation, CJK): a term may start here or after it.
    Gap,
    /// An alphabetic word character.
    Letter,
    /// An ASCII digit.
    Digit,
    /// Any other word character (a combining mark, a non-ASCII digit).
    OtherWord,
}

/// [`Class`] of each ASCII byte.
const ASCII_CLASS: [Class; 128] = {
    let mut t = [Class::Gap; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphabetic() {
            t[b] = Class::Letter;
        } else if c.is_ascii_digit() {
            t[b] = Class::Digit;
        }
        b += 1;
    }
    t
};

fn class(c: char) -> Class {
    if c.is_ascii() {
        ASCII_CLASS[c as usize]
    } else if !is_word_char(c) {
        Class::Gap
    } else if c.is_alphabetic() {
        Class::Letter
    } else {
        Class::OtherWord
    }
}

/// Calls `each` with every byte offset of `text` where a term can start, in order: every
/// character boundary except those inside a run of word characters, where the matcher refuses
/// a term anyway. A term written with a word character first is only accepted after a
/// non-word character (or at a letter–digit step: "4090" in "RTX4090"); one written with a
/// non-word character first (CJK, a symbol) can only start on such a character, which is
/// always a candidate. Keep in step with the start test in `Matcher::accept`.
fn starts(text: &str, mut each: impl FnMut(usize)) {
    let mut prev = Class::Gap;
    for (i, c) in text.char_indices() {
        let cur = class(c);
        let inside = prev != Class::Gap
            && cur != Class::Gap
            && !matches!(
                (prev, cur),
                (Class::Digit, Class::Letter) | (Class::Letter, Class::Digit)
            );
        if !inside {
            each(i);
        }
        prev = cur;
    }
}

/// A quick test of the bytes at an offset for a pattern that could start there: bit tables of
/// the patterns' first bytes, of their first four bytes (hashed), of whole three-byte
/// patterns (hashed), and of whole one- and two-byte patterns. Never says no where a pattern starts; most words of ordinary
/// text begin no term, and the test turns them away for a few loads from tables that stay in
/// cache (40 KiB) instead of a walk of the automaton's first states.
pub struct StartTest {
    /// The first byte of every pattern: spaces and most punctuation begin none, and are turned
    /// away by this one load.
    first: [u64; 4],
    one: [u64; 4],
    two: Box<[u64]>,
    three: Box<[u64]>,
    four: Box<[u64]>,
}

const HASH_BITS: u32 = 17;

#[inline(always)]
fn hash_key(x: u32) -> usize {
    (x.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

#[inline(always)]
fn three_key(b: &[u8]) -> usize {
    hash_key(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

#[inline(always)]
fn four_key(b: &[u8]) -> usize {
    hash_key(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[inline(always)]
fn bit(t: &[u64], k: usize) -> bool {
    t[k / 64] >> (k % 64) & 1 != 0
}

fn set(t: &mut [u64], k: usize) {
    t[k / 64] |= 1 << (k % 64);
}

impl StartTest {
    pub fn new<S: AsRef<[u8]>>(patterns: &[S]) -> StartTest {
        let table = |bits: u32| vec![0; (1 << bits) / 64].into_boxed_slice();
        let mut t = StartTest {
            first: [0; 4],
            one: [0; 4],
            two: table(16),
            three: table(HASH_BITS),
            four: table(HASH_BITS),
        };
        for p in patterns {
            if let Some(&b) = p.as_ref().first() {
                set(&mut t.first, usize::from(b));
            }
            match p.as_ref() {
                [] => {}
                [a] => set(&mut t.one, usize::from(*a)),
                [a, b] => set(&mut t.two, usize::from(*a) << 8 | usize::from(*b)),
                b @ [_, _, _] => set(&mut t.three, three_key(b)),
                b => set(&mut t.four, four_key(b)),
            }
        }
        t
    }

    /// False only when no pattern is a prefix of `rest`.
    #[inline(always)]
    fn may_start(&self, rest: &[u8]) -> bool {
        match rest {
            [] => false,
            [a, ..] if !bit(&self.first, usize::from(*a)) => false,
            [a] => bit(&self.one, usize::from(*a)),
            [a, b, ..] => {
                bit(&self.one, usize::from(*a))
                    || bit(&self.two, usize::from(*a) << 8 | usize::from(*b))
                    || (rest.len() >= 3 && bit(&self.three, three_key(rest)))
                    || (rest.len() >= 4 && bit(&self.four, four_key(rest)))
            }
        }
    }
}

/// Calls `each` with the matches of `ac`'s patterns that start where a term can start (see
/// [`starts`]), in (text, start, end) order — every match an unanchored search would report, less
/// those the matcher would refuse for starting inside a word. At each candidate start that `test` (built
/// from the same patterns) lets through, one anchored walk, which ends as soon as no pattern
/// continues; the bytes inside words are never walked from. No buffer: a huge text costs no
/// memory. `ac` must be built with `MatchKind::Standard` and an anchored start state.
pub fn scan<A: Automaton>(ac: &A, test: &StartTest, texts: &[&str], mut each: impl FnMut(&Raw)) {
    let Ok(start) = ac.start_state(Anchored::Yes) else {
        return;
    };
    for (ti, text) in texts.iter().enumerate() {
        let bytes = text.as_bytes();
        starts(text, |s| {
            let rest = &bytes[s..];
            if !test.may_start(rest) {
                return;
            }
            let mut sid = start;
            for (j, &b) in rest.iter().enumerate() {
                sid = ac.next_state(Anchored::Yes, sid, b);
                if ac.is_dead(sid) {
                    break;
                }
                if ac.is_match(sid) {
                    // A state's matches include those of its suffixes; only the pattern
                    // spelled from `s` (at most one: patterns are distinct) starts here.
                    let len = j + 1;
                    if let Some(p) = (0..ac.match_len(sid))
                        .map(|k| ac.match_pattern(sid, k))
                        .find(|&p| ac.pattern_len(p) == len)
                    {
                        each(&Raw {
                            text: ti as u32,
                            start: s as u32,
                            end: (s + len) as u32,
                            pat: p.as_u32(),
                        });
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::dfa::DFA;
    use aho_corasick::nfa::contiguous::NFA;
    use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, StartKind};
    use proptest::prelude::*;

    /// The automaton the matcher scans with.
    fn nfa(pats: &[String]) -> NFA {
        NFA::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(pats)
            .expect("nfa")
    }

    /// Where the matcher's start test (`Matcher::accept`) can pass, written from its rule: not
    /// after a word character, unless at a letter–digit step; a pattern that begins with a
    /// non-word character has no start test, so its own first character must count too.
    fn may_start_at(text: &str, s: usize) -> bool {
        let Some(cur) = text[s..].chars().next() else {
            return false;
        };
        let Some(prev) = text[..s].chars().next_back() else {
            return true;
        };
        !is_word_char(cur)
            || !is_word_char(prev)
            || crate::classify::matcher::letter_digit_step(prev, Some(cur))
    }

    /// What a plain overlapping search finds, kept where a term may start, in (text, start,
    /// end) order.
    fn reference(pats: &[String], texts: &[&str]) -> Vec<(u32, u32, u32, u32)> {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(pats)
            .expect("ac");
        let mut v = Vec::new();
        for (t, text) in texts.iter().enumerate() {
            for m in ac.find_overlapping_iter(*text) {
                if may_start_at(text, m.start()) {
                    v.push((
                        t as u32,
                        m.start() as u32,
                        m.end() as u32,
                        m.pattern().as_u32(),
                    ));
                }
            }
        }
        v.sort_unstable();
        v
    }

    /// What `scan` finds with the matcher's NFA, in the order it reports; a DFA (the same
    /// walk, no failure transitions) must find the same.
    fn found(pats: &[String], texts: &[&str]) -> Vec<(u32, u32, u32, u32)> {
        let test = StartTest::new(pats);
        let mut out = Vec::new();
        scan(&nfa(pats), &test, texts, |r| {
            out.push((r.text, r.start, r.end, r.pat))
        });
        let mut by_dfa = Vec::new();
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Anchored)
            .build(pats)
            .expect("dfa");
        scan(&dfa, &test, texts, |r| {
            by_dfa.push((r.text, r.start, r.end, r.pat))
        });
        assert_eq!(out, by_dfa, "NFA and DFA scans differ");
        out
    }

    fn assert_same(pats: &[String], texts: &[&str]) {
        assert_eq!(
            found(pats, texts),
            reference(pats, texts),
            "patterns {pats:?}"
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn terms_are_found_where_words_start_not_inside_them() {
        let pats = strings(&["ban", "an", "h20", "4090", "芯片", "片", "$", "$5"]);
        let text = "ban banner urban rtx4090 nvidiah20 h20x 芯片出口 cost $5";
        let got: Vec<&str> = found(&pats, &[text])
            .iter()
            .map(|r| &text[r.1 as usize..r.2 as usize])
            .collect();
        // Not "an" in "ban", "banner" or "urban", nor "h20" in "nvidiah20": inside a word.
        // "4090" in "rtx4090" starts at a letter–digit step; "h20" in "h20x" starts a word
        // (the end test is the matcher's); "片" in "芯片" is CJK, where any character may start a
        // term; "$" begins with a non-word character.
        assert_eq!(got, ["ban", "ban", "4090", "h20", "芯片", "片", "$", "$5"]);
        assert_same(&pats, &[text]);
    }

    #[test]
    fn one_and_two_byte_patterns_and_text_ends() {
        let pats = strings(&["a", "ab", "abc", "x y"]);
        assert_same(&pats, &["a", "ab", "abc", "a ab abc", "x", "x y", "b a"]);
        assert_same(&pats, &[]);
        assert_same(&pats, &["", "a", ""]);
    }

    #[test]
    fn a_huge_text_is_scanned_whole() {
        let pats = strings(&["a", "b a", "a b a b"]);
        // 1 MB, 750,000 matches.
        let text = "a b ".repeat(1 << 18);
        assert_same(&pats, &["b a b", &text, "b a b"]);
        let mut n = 0;
        scan(&nfa(&pats), &StartTest::new(&pats), &[&text], |_| n += 1);
        assert_eq!(n, 3 * (1 << 18) - 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn finds_what_a_full_search_finds_where_terms_may_start(
            pats in proptest::collection::vec("[ab1 ,é]{1,6}|[漢字]{1,2}", 1..12),
            texts in proptest::collection::vec("[ab1 ,é漢字\u{301}]{0,200}", 0..6),
        ) {
            let mut pats = pats;
            pats.sort();
            pats.dedup();
            let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
            assert_same(&pats, &refs);
        }

        /// Mostly ASCII, as most text is: long ASCII stretches (words and digit steps, a start
        /// test seen from every offset) with a rare non-ASCII character between them.
        #[test]
        fn ascii_stretches_and_their_seams(
            pats in proptest::collection::vec("[ab1 ,]{1,5}|é[ab]?|[ab]é", 1..12),
            texts in proptest::collection::vec("([ab1 ,]{0,150}(é|漢|\u{301})?){1,4}", 0..4),
        ) {
            let mut pats = pats;
            pats.sort();
            pats.dedup();
            let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
            assert_same(&pats, &refs);
        }
    }
}
