//! The term scan: every overlapping occurrence of an Aho-Corasick DFA's patterns in a batch of
//! texts, found by walking two texts at once.
//!
//! In: a DFA and [`Job`]s (a text, the byte range to walk, and which starts to report). Out:
//! [`Raw`] matches (job, start, end, pattern), for each job in the order a plain
//! `find_overlapping_iter` over that job would report them. No I/O; no knowledge of fields,
//! words or rules (the caller checks boundaries and maps offsets).
//!
//! Why two lanes: one DFA walk is a chain of dependent table loads, so a core spends most of
//! its time waiting on the previous state. Two independent walks in the same loop overlap those
//! waits (about 1.2–1.4 × the bytes per second of one walk on the dev corpus). A long text is cut
//! in two jobs so that even a single field fills both lanes: the first half is walked on for
//! `max_pattern_len - 1` bytes past the cut and reports only matches starting before it; the
//! second starts afresh at the cut, so it reports exactly the matches starting at or after it.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::Anchored;

/// One walk: `texts[text][from..to]`, reporting the matches that start before `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub text: u32,
    pub from: u32,
    pub to: u32,
    pub limit: u32,
}

/// One occurrence: pattern `pat` at `start..end` of the job's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw {
    pub job: u32,
    pub start: u32,
    pub end: u32,
    pub pat: u32,
}

/// A text shorter than this is walked as one job: cutting it would cost the overlap
/// (`max_pattern_len - 1` bytes) for little gain.
const MIN_SPLIT: usize = 128;

/// Appends the job(s) for walking all of `texts[text]` (`len` bytes).
pub fn push_jobs(dfa: &DFA, jobs: &mut Vec<Job>, text: u32, len: usize) {
    if len == 0 {
        return;
    }
    let overlap = dfa.max_pattern_len().saturating_sub(1);
    if len < MIN_SPLIT.max(4 * overlap) || len > u32::MAX as usize {
        jobs.push(Job {
            text,
            from: 0,
            to: len as u32,
            limit: len as u32,
        });
        return;
    }
    let cut = len / 2;
    jobs.push(Job {
        text,
        from: 0,
        to: (cut + overlap).min(len) as u32,
        limit: cut as u32,
    });
    jobs.push(Job {
        text,
        from: cut as u32,
        to: len as u32,
        limit: len as u32,
    });
}

#[inline(always)]
fn report(dfa: &DFA, sid: StateID, job: usize, end: usize, limit: u32, out: &mut Vec<Raw>) {
    for k in 0..dfa.match_len(sid) {
        let p = dfa.match_pattern(sid, k);
        let start = end - dfa.pattern_len(p);
        if (start as u32) < limit {
            out.push(Raw {
                job: job as u32,
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
fn walk2(
    dfa: &DFA,
    ta: &[u8],
    tb: &[u8],
    mut sa: StateID,
    mut sb: StateID,
) -> (usize, StateID, StateID) {
    let n = ta.len().min(tb.len());
    let (ta, tb) = (&ta[..n], &tb[..n]);
    let mut i = 0;
    while i < n {
        sa = dfa.next_state(Anchored::No, sa, ta[i]);
        sb = dfa.next_state(Anchored::No, sb, tb[i]);
        i += 1;
        if dfa.is_match(sa) | dfa.is_match(sb) {
            break;
        }
    }
    (i, sa, sb)
}

/// Where a lane is: its job, the next byte to walk, the DFA state.
#[derive(Clone, Copy)]
struct Lane {
    job: usize,
    pos: usize,
    sid: StateID,
}

/// Appends every match of every job to `out`, grouped by job in job order, each job's matches in
/// the order a sequential overlapping search reports them. `dfa` must be built with
/// `MatchKind::Standard` and an unanchored start state.
pub fn scan(dfa: &DFA, texts: &[&[u8]], jobs: &[Job], out: &mut Vec<Raw>) {
    let Ok(start) = dfa.start_state(Anchored::No) else {
        return;
    };
    let first = out.len();
    let mut next = 0;
    let mut take = || -> Option<Lane> {
        let job = next;
        let j = jobs.get(job)?;
        next += 1;
        Some(Lane {
            job,
            pos: j.from as usize,
            sid: start,
        })
    };
    let (mut a, mut b) = (take(), take());
    loop {
        match (a.as_mut(), b.as_mut()) {
            (Some(la), Some(lb)) => {
                let (ja, jb) = (jobs[la.job], jobs[lb.job]);
                let ta = &texts[ja.text as usize][la.pos..ja.to as usize];
                let tb = &texts[jb.text as usize][lb.pos..jb.to as usize];
                let (mut sa, mut sb) = (la.sid, lb.sid);
                let mut i = 0;
                while i < ta.len().min(tb.len()) {
                    let step;
                    (step, sa, sb) = walk2(dfa, &ta[i..], &tb[i..], sa, sb);
                    i += step;
                    if dfa.is_match(sa) {
                        report(dfa, sa, la.job, la.pos + i, ja.limit, out);
                    }
                    if dfa.is_match(sb) {
                        report(dfa, sb, lb.job, lb.pos + i, jb.limit, out);
                    }
                }
                let steps = ta.len().min(tb.len());
                la.pos += steps;
                lb.pos += steps;
                la.sid = sa;
                lb.sid = sb;
                if la.pos >= ja.to as usize {
                    a = take();
                }
                if lb.pos >= jb.to as usize {
                    b = take();
                }
            }
            (Some(l), None) | (None, Some(l)) => {
                let j = jobs[l.job];
                let mut sid = l.sid;
                for (i, &x) in texts[j.text as usize][l.pos..j.to as usize]
                    .iter()
                    .enumerate()
                {
                    sid = dfa.next_state(Anchored::No, sid, x);
                    if dfa.is_match(sid) {
                        report(dfa, sid, l.job, l.pos + i + 1, j.limit, out);
                    }
                }
                // A lane is empty only when no job is left to take.
                a = None;
                b = None;
            }
            (None, None) => break,
        }
    }
    // Each lane appended its jobs' matches in order; a stable sort by job interleaves nothing
    // within a job.
    out[first..].sort_by_key(|r| r.job);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
    use proptest::prelude::*;

    fn dfa(pats: &[String]) -> DFA {
        DFA::builder()
            .match_kind(MatchKind::Standard)
            .build(pats)
            .expect("dfa")
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

    fn lanes(pats: &[String], texts: &[&[u8]]) -> (Vec<(u32, u32, u32, u32)>, usize) {
        let d = dfa(pats);
        let mut jobs = Vec::new();
        for (t, text) in texts.iter().enumerate() {
            push_jobs(&d, &mut jobs, t as u32, text.len());
        }
        let mut out = Vec::new();
        scan(&d, texts, &jobs, &mut out);
        let v = out
            .iter()
            .map(|r| (jobs[r.job as usize].text, r.start, r.end, r.pat))
            .collect();
        (v, jobs.len())
    }

    /// Same matches; the order may differ only between different patterns ending at the same
    /// byte or between a match that starts before a cut and one after it (a per-pattern cap
    /// keeps the same hits either way, since one pattern's matches stay in order).
    fn assert_same(pats: &[String], texts: &[&[u8]]) {
        let want = reference(pats, texts);
        let (got, _) = lanes(pats, texts);
        let mut a = got.clone();
        let mut b = want.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "patterns {pats:?}");
        for p in 0..pats.len() as u32 {
            for t in 0..texts.len() as u32 {
                let of = |v: &[(u32, u32, u32, u32)]| -> Vec<(u32, u32, u32, u32)> {
                    v.iter().copied().filter(|x| x.3 == p && x.0 == t).collect()
                };
                assert_eq!(of(&got), of(&want), "order of pattern {p} in text {t}");
            }
        }
    }

    #[test]
    fn a_match_across_the_cut_is_found_once() {
        let pats = vec!["export control".to_string(), "control".to_string()];
        // 314 bytes, cut at 157: "export control" starts one byte before the cut and ends at
        // the last byte the first half walks to; "control" starts after the cut.
        let text = format!("{}export control{}", "x".repeat(156), "y".repeat(144));
        let (got, jobs) = lanes(&pats, &[text.as_bytes()]);
        assert_eq!(jobs, 2);
        assert_eq!(got, vec![(0, 156, 170, 0), (0, 163, 170, 1)]);
    }

    #[test]
    fn matches_at_both_ends_of_both_halves() {
        let pats = vec!["ab".to_string(), "b".to_string(), "abab".to_string()];
        let text = "ab".repeat(200);
        assert_same(&pats, &[text.as_bytes()]);
        // Many short texts and one long one: lanes change jobs at different times.
        let texts: Vec<String> = (0..40).map(|i| "ab".repeat(i * 7 % 150) + "b").collect();
        let refs: Vec<&[u8]> = texts.iter().map(|s| s.as_bytes()).collect();
        assert_same(&pats, &refs);
    }

    #[test]
    fn no_jobs_and_empty_texts() {
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
