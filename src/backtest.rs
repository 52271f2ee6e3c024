//! Backtesting: re-runs the current rules over stored items and compares with the verdicts
//! recorded when they were first classified. Pure: the caller reads the items from the store.
//!
//! In: a compiled config and stored items (with the watches they matched then). Out: per
//! watch, the items that would now match and those that would no longer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Loaded;
use crate::store::StoredItem;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct WatchDiff {
    /// Matched before and still match.
    pub kept: usize,
    /// (item id, title) that would now match but did not.
    pub added: Vec<(i64, String)>,
    /// (item id, title) that matched but no longer would.
    pub removed: Vec<(i64, String)>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub watches: BTreeMap<String, WatchDiff>,
}

pub fn compare(cfg: &Loaded, items: &[StoredItem], only: Option<&str>) -> Report {
    let mut report = Report::default();
    let ids: Vec<String> = cfg
        .config
        .watches
        .iter()
        .map(|w| w.id.clone())
        .filter(|w| only.map_or(true, |o| o == w))
        .collect();
    for w in &ids {
        report.watches.insert(w.clone(), WatchDiff::default());
    }
    for si in items {
        // Items stored before languages were told get one now, as a poll would give them.
        let mut item = si.item.clone();
        crate::lang::fill(&mut item);
        let now: Vec<String> = cfg
            .classifier
            .classify(&item)
            .into_iter()
            .map(|v| v.watch_id)
            .collect();
        for w in &ids {
            let before = si.watches.iter().any(|x| x == w);
            let after = now.iter().any(|x| x == w);
            let d = report.watches.get_mut(w).expect("inserted above");
            match (before, after) {
                (true, true) => d.kept += 1,
                (false, true) => d.added.push((si.id, si.item.title.clone())),
                (true, false) => d.removed.push((si.id, si.item.title.clone())),
                (false, false) => {}
            }
        }
    }
    report
}

impl Report {
    pub fn render(&self, total: usize) -> String {
        let mut s = format!("backtest over {total} stored items\n");
        for (w, d) in &self.watches {
            let _ = writeln!(
                s,
                "\n{w}: {} match before, {} after (+{} −{})",
                d.kept + d.removed.len(),
                d.kept + d.added.len(),
                d.added.len(),
                d.removed.len()
            );
            for (id, t) in &d.added {
                let _ = writeln!(s, "  + [{id}] {}", t.replace(['\n', '\r'], " "));
            }
            for (id, t) in &d.removed {
                let _ = writeln!(s, "  − [{id}] {}", t.replace(['\n', '\r'], " "));
            }
        }
        s
    }
}
