//! The term scan: every overlapping occurrence of an Aho-Corasick automaton's patterns in a batch
//! of texts, found by walking two stretches of text at once.
//!
//! In: an automaton (the matcher's contiguous NFA; any [`Automaton`]) and the texts (an item's
//! normalised fields). Out: [`Raw`] matches (text, start, end, pattern), sorted by text and start,
//! so the matches of one pattern in one text come in the order a plain `find_overlapping_iter`
//! reports them. No I/O; no knowledge of fields, words or rules (the caller checks boundaries and
//! maps offsets).
//!
//! Why two lanes: one automaton walk is a chain of dependent table loads, so a core spends most of
//! its time waiting on the previous state. Two independent walks in the same loop overlap those
//! waits (about 1.2–1.4 × the bytes per second of one walk on the dev corpus, measured with the DFA
//! this scan walked before the NFA). Each lane takes the next text when it is done with one; when
//! no text is left, a lane without work takes the second half of what the other lane still has to
//! report. The new lane starts afresh at the cut, so it reports exactly the matches starting at
//! or after it; the old one reports only matches starting before the cut and walks on past it,
//! alone, until the automaton is back in its start state (no match under way) — usually the next
//! space — or `max_pattern_len - 1` bytes on, after which no match that started before the cut
//! can end.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::Anchored;

/// One occurrence: pattern `pat` at `start..end` of `texts[text]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw {
    pub text: u32,
    pub start: u32,
    pub end: u32,
    pub pat: u32,
}

/// Cutting a lane's work in two costs a restart and a short walk past the cut; below this many
/// starts left it is not worth it.
const MIN_SPLIT: usize = 48;

/// A walk over `texts[text][pos..limit]` in state `sid`, reporting the matches that start
/// before `limit`, then on until the start state or `to`.
#[derive(Clone, Copy)]
struct Lane {
    text: usize,
    pos: usize,
    to: usize,
    limit: usize,
    sid: StateID,
}

impl Lane {
    /// Gives the second half of the starts this lane has left to a new lane, if worth it.
    fn split(&mut self, overlap: usize, start: StateID) -> Option<Lane> {
        let left = self.limit.saturating_sub(self.pos);
        if left < MIN_SPLIT {
            return None;
        }
        let cut = self.pos + left / 2;
        let second = Lane {
            pos: cut,
            sid: start,
            ..*self
        };
        self.limit = cut;
        self.to = self.to.min(cut + overlap);
        Some(second)
    }
}

#[inline(always)]
fn report<A: Automaton>(ac: &A, sid: StateID, l: &Lane, end: usize, out: &mut Vec<Raw>) {
    for k in 0..ac.match_len(sid) {
        let p = ac.match_pattern(sid, k);
        let start = end - ac.pattern_len(p);
        if start < l.limit {
            out.push(Raw {
                text: l.text as u32,
                start: start as u32,
                end: end as u32,
                pat: p.as_u32(),
            });
        }
    }
}

/// Walks both texts in step until either lane is in a match state (or the shorter text ends);
/// returns the bytes walked and the two states. Kept apart from the reporting so the loop's
/// few values stay in registers.
#[inline(never)]
fn walk2<A: Automaton>(
    ac: &A,
    ta: &[u8],
    tb: &[u8],
    mut sa: StateID,
    mut sb: StateID,
) -> (usize, StateID, StateID) {
    let n = ta.len().min(tb.len());
    let (ta, tb) = (&ta[..n], &tb[..n]);
    let mut i = 0;
    while i < n {
        sa = ac.next_state(Anchored::No, sa, ta[i]);
        sb = ac.next_state(Anchored::No, sb, tb[i]);
        i += 1;
        if ac.is_match(sa) | ac.is_match(sb) {
            break;
        }
    }
    (i, sa, sb)
}

/// Walks `l` past its limit until no match that started before the limit can still end.
fn finish<A: Automaton>(ac: &A, texts: &[&[u8]], l: &mut Lane, start: StateID, out: &mut Vec<Raw>) {
    let t = &texts[l.text][..l.to];
    while l.pos < t.len() && l.sid != start {
        l.sid = ac.next_state(Anchored::No, l.sid, t[l.pos]);
        l.pos += 1;
        if ac.is_match(l.sid) {
            report(ac, l.sid, l, l.pos, out);
        }
    }
}

/// [`walk2`] for one lane.
#[inline(never)]
fn walk1<A: Automaton>(ac: &A, t: &[u8], mut sid: StateID) -> (usize, StateID) {
    let mut i = 0;
    while i < t.len() {
        sid = ac.next_state(Anchored::No, sid, t[i]);
        i += 1;
        if ac.is_match(sid) {
            break;
        }
    }
    (i, sid)
}

/// Texts are walked in windows of at most this many bytes, and at most about this many bytes
/// (one window more) at a time, so the raw matches held at once stay bounded whatever the size
/// of an item (the caller keeps only a few hits per pattern of what it is handed).
pub const WINDOW: usize = 64 << 10;

/// Where the next window comes from: text `text`, byte `at`.
struct Windows<'t> {
    texts: &'t [&'t [u8]],
    text: usize,
    at: usize,
}

impl Windows<'_> {
    /// Moves past the texts (or their ends) already handed out; true when none is left.
    fn done(&mut self) -> bool {
        while self
            .texts
            .get(self.text)
            .is_some_and(|t| self.at >= t.len())
        {
            self.text += 1;
            self.at = 0;
        }
        self.text >= self.texts.len()
    }

    /// The next window as a fresh lane walking it (and on past it, up to `overlap` bytes, to
    /// finish the matches that start inside it).
    fn next(&mut self, start: StateID, overlap: usize) -> Option<Lane> {
        if self.done() {
            return None;
        }
        let len = self.texts[self.text].len();
        let limit = (self.at + WINDOW).min(len);
        let lane = Lane {
            text: self.text,
            pos: self.at,
            limit,
            to: (limit + overlap).min(len),
            sid: start,
        };
        self.at = limit;
        Some(lane)
    }
}

/// Calls `each` with every match in `texts`, in (text, start, end, pattern) order; `raws` is
/// room for one batch of windows. `ac` must be built with `MatchKind::Standard` and an
/// unanchored start state.
pub fn scan<A: Automaton>(
    ac: &A,
    texts: &[&[u8]],
    raws: &mut Vec<Raw>,
    mut each: impl FnMut(&Raw),
) {
    let Ok(start) = ac.start_state(Anchored::No) else {
        return;
    };
    let overlap = ac.max_pattern_len().saturating_sub(1);
    let mut windows = Windows {
        texts,
        text: 0,
        at: 0,
    };
    while !windows.done() {
        raws.clear();
        batch(ac, &mut windows, start, overlap, raws);
        // A lane reports by end position and several lanes share a text: order by start, which
        // for one pattern is its order in the text.
        raws.sort_unstable_by_key(|r| (r.text, r.start, r.end, r.pat));
        raws.iter().for_each(&mut each);
    }
}

/// Walks windows until about [`WINDOW`] bytes were taken or none is left, appending their
/// matches to `out`.
fn batch<A: Automaton>(
    ac: &A,
    windows: &mut Windows,
    start: StateID,
    overlap: usize,
    out: &mut Vec<Raw>,
) {
    let texts = windows.texts;
    let mut taken = 0;
    let mut take = |windows: &mut Windows| -> Option<Lane> {
        if taken >= WINDOW {
            return None;
        }
        let l = windows.next(start, overlap)?;
        taken += l.limit - l.pos;
        Some(l)
    };
    let (mut a, mut b) = (take(windows), take(windows));
    loop {
        // No window left for an idle lane: share the other lane's work.
        if a.is_none() {
            a = b.as_mut().and_then(|l| l.split(overlap, start));
        }
        if b.is_none() {
            b = a.as_mut().and_then(|l| l.split(overlap, start));
        }
        match (a.as_mut(), b.as_mut()) {
            (Some(la), Some(lb)) => {
                let ta = &texts[la.text][la.pos..la.limit];
                let tb = &texts[lb.text][lb.pos..lb.limit];
                let steps = ta.len().min(tb.len());
                let mut i = 0;
                while i < steps {
                    let k;
                    (k, la.sid, lb.sid) = walk2(ac, &ta[i..], &tb[i..], la.sid, lb.sid);
                    i += k;
                    if ac.is_match(la.sid) {
                        report(ac, la.sid, la, la.pos + i, out);
                    }
                    if ac.is_match(lb.sid) {
                        report(ac, lb.sid, lb, lb.pos + i, out);
                    }
                }
                la.pos += steps;
                lb.pos += steps;
                if la.pos >= la.limit {
                    finish(ac, texts, la, start, out);
                    a = take(windows);
                }
                if lb.pos >= lb.limit {
                    finish(ac, texts, lb, start, out);
                    b = take(windows);
                }
            }
            (Some(l), None) | (None, Some(l)) => {
                // Too little left to share, and nothing else to take in this batch.
                let t = &texts[l.text][l.pos..l.limit];
                let mut i = 0;
                while i < t.len() {
                    let k;
                    (k, l.sid) = walk1(ac, &t[i..], l.sid);
                    i += k;
                    if ac.is_match(l.sid) {
                        report(ac, l.sid, l, l.pos + i, out);
                    }
                }
                l.pos += t.len();
                finish(ac, texts, l, start, out);
                a = None;
                b = None;
            }
            (None, None) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::dfa::DFA;
    use aho_corasick::nfa::contiguous::NFA;
    use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
    use proptest::prelude::*;

    /// The automaton the matcher scans with.
    fn nfa(pats: &[String]) -> NFA {
        NFA::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(pats)
            .expect("nfa")
    }

    /// What a plain sequential search finds, as (text, start, end, pattern) in report order.
    fn reference(pats: &[String], texts: &[&[u8]]) -> Vec<(u32, u32, u32, u32)> {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(pats)
            .expect("ac");
        let mut v = Vec::new();
        for (t, text) in texts.iter().enumerate() {
            for m in ac.find_overlapping_iter(*text) {
                v.push((
                    t as u32,
                    m.start() as u32,
                    m.end() as u32,
                    m.pattern().as_u32(),
                ));
            }
        }
        v
    }

    /// What `scan` finds with the matcher's NFA; a DFA (the same walk, no failure
    /// transitions) must find the same.
    fn lanes(pats: &[String], texts: &[&[u8]]) -> Vec<(u32, u32, u32, u32)> {
        let mut out = Vec::new();
        scan(&nfa(pats), texts, &mut Vec::new(), |r| {
            out.push((r.text, r.start, r.end, r.pat))
        });
        let mut by_dfa = Vec::new();
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .build(pats)
            .expect("dfa");
        scan(&dfa, texts, &mut Vec::new(), |r| {
            by_dfa.push((r.text, r.start, r.end, r.pat))
        });
        assert_eq!(out, by_dfa, "NFA and DFA scans differ");
        out
    }

    /// The same matches, in (text, start) order: for one pattern in one text that is the order
    /// of the sequential search (a per-field cap keeps the same hits).
    fn assert_same(pats: &[String], texts: &[&[u8]]) {
        let mut want = reference(pats, texts);
        want.sort_unstable();
        assert_eq!(lanes(pats, texts), want, "patterns {pats:?}");
    }

    #[test]
    fn a_match_across_the_cut_is_found_once() {
        let pats = vec!["export control".to_string(), "control".to_string()];
        // One text of 314 bytes, so the idle lane takes half of it, cut at 157: "export control" starts one byte before the cut and ends at
        // the last byte the first half walks to; "control" starts after the cut.
        let text = format!("{}export control{}", "x".repeat(156), "y".repeat(144));
        assert_eq!(
            lanes(&pats, &[text.as_bytes()]),
            vec![(0, 156, 170, 0), (0, 163, 170, 1)]
        );
    }

    #[test]
    fn matches_at_both_ends_of_both_halves() {
        let pats = vec!["ab".to_string(), "b".to_string(), "abab".to_string()];
        let text = "ab".repeat(200);
        assert_same(&pats, &[text.as_bytes()]);
        // Many short texts and long ones: lanes change texts at different times, and the
        // last long one is shared out again and again.
        let texts: Vec<String> = (0..40).map(|i| "ab".repeat(i * 7 % 150) + "b").collect();
        let refs: Vec<&[u8]> = texts.iter().map(|s| s.as_bytes()).collect();
        assert_same(&pats, &refs);
    }

    #[test]
    fn a_huge_text_is_walked_in_bounded_windows() {
        let pats = vec!["a".to_string(), "b a".to_string(), "a b a b".to_string()];
        // 1 MB, 750,000 matches, across sixteen window edges.
        let text = "a b ".repeat(1 << 18);
        let short = "b a b";
        assert_same(
            &pats,
            &[short.as_bytes(), text.as_bytes(), short.as_bytes()],
        );
        let mut raws = Vec::new();
        let mut n = 0;
        scan(&nfa(&pats), &[text.as_bytes()], &mut raws, |_| n += 1);
        assert_eq!(n, 3 * (1 << 18) - 2);
        // Held at once: a couple of windows' worth, not the whole text's.
        assert!(raws.capacity() < n / 4, "{} of {n}", raws.capacity());
    }

    #[test]
    fn no_texts_and_empty_texts() {
        let pats = vec!["a".to_string()];
        assert_same(&pats, &[]);
        assert_same(&pats, &[b"", b"a", b""]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn two_lanes_find_what_one_search_finds(
            pats in proptest::collection::vec("[abc ]{1,6}|[漢字]{1,2}", 1..12),
            texts in proptest::collection::vec("[abc 漢字]{0,400}", 0..6),
        ) {
            let mut pats = pats;
            pats.sort();
            pats.dedup();
            let refs: Vec<&[u8]> = texts.iter().map(|s| s.as_bytes()).collect();
            assert_same(&pats, &refs);
        }
    }
}
