//! The Atom feed of matches: per digest, its most recent matched stories as an Atom 1.0
//! document (RFC 4287) that a feed reader (Miniflux, Feedly, Thunderbird) can subscribe to.
//!
//! In: the digest's recent matches from the store (`Store::recent_matches`, read by the
//! daemon) and the feed's metadata. Out: the document's text. Pure: no I/O, no clock — the
//! feed's `updated` is its newest entry's, so an unchanged set of stories renders to the same
//! bytes (the daemon skips the write, and the listener's ETag stays the same).
//!
//! # Identity
//! One entry per story (cluster), never per item: its id is
//! `urn:policywatch:story:<hash>`, hashed from the story key (the first item's feed URL and
//! dedup key), which never changes once stored. So a reader sees a story once, whichever feed
//! re-issues it, across restarts, and even after the database is rebuilt from the same feeds.
//! The entry shows the cluster's first item (its title and link do not flip when another
//! outlet reports it), and its `updated` is when policywatch first saw the story.
//!
//! # Untrusted input
//! Each entry's text (the lead and the one-line "why") is its `content`, type text.
//! Text from feeds is cleaned to one line, bounded, and XML-escaped; control characters that
//! XML 1.0 forbids cannot appear (`clean_line` drops them); links are http(s) only.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest as _, Sha256};

use crate::digest::{clean_short, safe_url, why_line, SetWeights, Story};
use crate::item::Field;
use crate::store::RecentMatch;
use crate::webhook::lang_code;

/// Entries when the digest sets no `atom_entries`.
pub const DEFAULT_ENTRIES: usize = 50;
/// The most a digest may ask for: a feed is a window, not an archive.
pub const MAX_ENTRIES: usize = 500;
/// Store rows read per entry wanted: a story often has several items and watches.
pub const ROWS_PER_ENTRY: usize = 8;

const TITLE_CHARS: usize = 300;
const SUMMARY_CHARS: usize = 600;
const NAME_CHARS: usize = 120;

/// The feed as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedMeta {
    pub digest_id: String,
    pub title: String,
    /// Watch id → name, for the categories' labels.
    pub watch_names: HashMap<String, String>,
    /// Used as `updated` when there is no entry yet.
    pub empty_updated: DateTime<Utc>,
}

/// One story.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub link: Option<String>,
    pub summary: String,
    pub source: String,
    pub lang: Option<String>,
    /// Watch ids, first-matched first.
    pub watches: Vec<String>,
    pub published: Option<DateTime<Utc>>,
    /// When policywatch first saw the story.
    pub updated: DateTime<Utc>,
}

/// `urn:policywatch:story:<32 hex>` from a story key.
pub fn entry_id(story_key: &str) -> String {
    let h = Sha256::digest(story_key.as_bytes());
    format!("urn:policywatch:story:{}", hex::encode(&h[..16]))
}

/// Groups recent matches (newest first, as the store returns them) into at most `max`
/// stories, newest story first. A story is shown by its first item (the cluster's lead, or
/// the oldest of its items here) and lists every watch any of its items matched.
pub fn entries(rows: &[RecentMatch], max: usize, weights: &SetWeights) -> Vec<Entry> {
    let mut order: Vec<i64> = Vec::new();
    let mut by_cluster: HashMap<i64, Vec<&RecentMatch>> = HashMap::new();
    for r in rows {
        let c = r.matched.cluster_id;
        let e = by_cluster.entry(c).or_default();
        if e.is_empty() {
            order.push(c);
        }
        e.push(r);
    }
    let mut out = Vec::new();
    for c in order {
        let group = &by_cluster[&c];
        // The cluster's own first item when it is among the rows, else the oldest one here.
        let lead = group
            .iter()
            .find(|r| r.matched.item_id == c)
            .or_else(|| group.iter().min_by_key(|r| r.matched.item_id))
            .copied()
            .expect("a group has a row");
        let mut watches: Vec<String> = Vec::new();
        for r in group.iter().rev() {
            if !watches.contains(&r.matched.watch_id) {
                watches.push(r.matched.watch_id.clone());
            }
        }
        let evidence: Vec<_> = group
            .iter()
            .filter(|r| r.matched.item_id == lead.matched.item_id)
            .flat_map(|r| r.matched.evidence.iter().cloned())
            .collect();
        let it = &lead.matched.item;
        let (text, field) = if it.summary.trim().is_empty() {
            (&it.content, Field::Content)
        } else {
            (&it.summary, Field::Summary)
        };
        let mut summary = clean_short(text, SUMMARY_CHARS);
        // The digest's own "why" (concepts, strongest tier first), so a story reads the same
        // in the feed as in the mail.
        let why = why_line(&Story {
            title: it.title.clone(),
            summary: text.clone(),
            summary_field: field,
            evidence,
            weights: weights.clone(),
            ..Story::default()
        });
        if !why.is_empty() {
            summary = if summary.is_empty() {
                why
            } else {
                format!("{summary} — {why}")
            };
        }
        let first_seen = group
            .iter()
            .map(|r| r.matched.first_seen_at)
            .min()
            .unwrap_or(lead.matched.first_seen_at);
        out.push(Entry {
            id: entry_id(&lead.story_key),
            title: {
                let t = clean_short(&it.title, TITLE_CHARS);
                if t.is_empty() {
                    "(untitled)".into()
                } else {
                    t
                }
            },
            link: it.link.as_deref().and_then(safe_url),
            summary,
            source: clean_short(&it.feed_name, NAME_CHARS),
            lang: it.lang.as_deref().and_then(lang_code),
            watches,
            published: it.published,
            updated: first_seen,
        });
        if out.len() == max {
            break;
        }
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// XML text and attribute escaping (`&`, `<`, `>`, `"`, `'`). Feed text reaches here through
/// `clean_short`, which has removed the control characters XML 1.0 forbids.
fn esc(out: &mut String, s: &str) {
    out.push_str(&quick_xml::escape::escape(s));
}

/// Renders the feed. Entries in the order given (newest first).
pub fn render(meta: &FeedMeta, entries: &[Entry]) -> String {
    let updated = entries
        .iter()
        .map(|e| e.updated)
        .max()
        .unwrap_or(meta.empty_updated);
    let mut x = String::with_capacity(1024 + entries.len() * 1024);
    x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    x.push_str("  <id>urn:policywatch:feed:");
    esc(&mut x, &meta.digest_id);
    x.push_str("</id>\n  <title>");
    esc(&mut x, &clean_short(&meta.title, TITLE_CHARS));
    x.push_str("</title>\n");
    let _ = writeln!(x, "  <updated>{}</updated>", ts(updated));
    x.push_str("  <author><name>policywatch</name></author>\n");
    x.push_str("  <generator>policywatch</generator>\n");
    for e in entries {
        x.push_str("  <entry");
        if let Some(l) = &e.lang {
            x.push_str(" xml:lang=\"");
            esc(&mut x, l);
            x.push('"');
        }
        x.push_str(">\n    <id>");
        esc(&mut x, &e.id);
        x.push_str("</id>\n    <title>");
        esc(&mut x, &e.title);
        x.push_str("</title>\n");
        if let Some(l) = &e.link {
            x.push_str("    <link rel=\"alternate\" href=\"");
            esc(&mut x, l);
            x.push_str("\"/>\n");
        }
        let _ = writeln!(x, "    <updated>{}</updated>", ts(e.updated));
        if let Some(p) = e.published {
            let _ = writeln!(x, "    <published>{}</published>", ts(p));
        }
        let source = if e.source.is_empty() {
            "unknown"
        } else {
            &e.source
        };
        x.push_str("    <author><name>");
        esc(&mut x, source);
        x.push_str("</name></author>\n");
        for w in &e.watches {
            x.push_str("    <category term=\"");
            esc(&mut x, w);
            x.push('"');
            if let Some(name) = meta.watch_names.get(w) {
                x.push_str(" label=\"");
                esc(&mut x, &clean_short(name, NAME_CHARS));
                x.push('"');
            }
            x.push_str("/>\n");
        }
        // The lead and the why-line as text content (not atom:summary): readers show it, an
        // entry without an alternate link needs content (RFC 4287 §4.1.1), and the language is
        // repeated here because some readers (feed-rs) take it from the content only.
        x.push_str("    <content type=\"text\"");
        if let Some(l) = &e.lang {
            x.push_str(" xml:lang=\"");
            esc(&mut x, l);
            x.push('"');
        }
        x.push('>');
        esc(
            &mut x,
            if e.summary.is_empty() {
                &e.title
            } else {
                &e.summary
            },
        );
        x.push_str("</content>\n");
        // RFC 4287 §4.2.11: the feed the entry came from, by name.
        x.push_str("    <source><title>");
        esc(&mut x, source);
        x.push_str("</title></source>\n");
        x.push_str("  </entry>\n");
    }
    x.push_str("</feed>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Evidence, Field, Item};
    use crate::store::StoredMatch;
    use std::sync::Arc;

    fn row(item_id: i64, cluster: i64, watch: &str, title: &str, key: &str) -> RecentMatch {
        RecentMatch {
            matched: StoredMatch {
                item_id,
                watch_id: watch.into(),
                score: 1.0,
                evidence: vec![Evidence {
                    term: Arc::from("nvidia"),
                    set: None,
                    concept: Some(Arc::from("Nvidia")),
                    field: Field::Title,
                    start: 0,
                    end: 6,
                }],
                item: Item {
                    title: title.into(),
                    link: Some(format!("https://n.test/{item_id}")),
                    summary: "Lead & <more>".into(),
                    feed_name: "Wire".into(),
                    lang: Some("ZH".into()),
                    ..Default::default()
                },
                first_seen_at: DateTime::from_timestamp(1_700_000_000 + item_id, 0).unwrap(),
                cluster_id: cluster,
            },
            story_key: key.into(),
        }
    }

    #[test]
    fn one_entry_per_story_led_by_its_first_item() {
        // Newest first, as the store returns them: item 3 joined item 1's story later.
        let rows = vec![
            row(3, 1, "ai-chips", "Rewrite", "f\nguid:1"),
            row(2, 2, "export-controls", "Other", "f\nguid:2"),
            row(1, 1, "export-controls", "Original", "f\nguid:1"),
        ];
        let es = entries(&rows, 10, &SetWeights::default());
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].title, "Original");
        assert_eq!(es[0].id, entry_id("f\nguid:1"));
        assert_eq!(es[0].watches, ["export-controls", "ai-chips"]);
        assert_eq!(es[0].lang.as_deref(), Some("zh"));
        assert_eq!(es[1].title, "Other");
        assert_eq!(entries(&rows, 1, &SetWeights::default()).len(), 1);
        assert!(es[0].summary.ends_with("— Nvidia"), "{}", es[0].summary);
    }

    #[test]
    fn feed_rs_reads_back_ids_links_titles_languages_and_categories() {
        let mut rows = vec![
            row(2, 2, "ai-chips", "昇腾 910C 量产", "f\nguid:2"),
            row(1, 1, "export-controls", "Entity List grows", "f\nguid:1"),
        ];
        rows[1].matched.item.lang = Some("en".into());
        rows[1].matched.item.link = None;
        let meta = FeedMeta {
            digest_id: "daily".into(),
            title: "policywatch daily digest".into(),
            watch_names: [("ai-chips".to_string(), "AI chips".to_string())].into(),
            empty_updated: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let es = entries(&rows, 10, &SetWeights::default());
        let xml = render(&meta, &es);
        let feed = feed_rs::parser::parse(xml.as_bytes()).expect("feed-rs reads it");
        assert_eq!(feed.feed_type, feed_rs::model::FeedType::Atom);
        assert_eq!(feed.id, "urn:policywatch:feed:daily");
        assert_eq!(feed.entries.len(), 2);
        let zh = &feed.entries[0];
        assert_eq!(zh.id, entry_id("f\nguid:2"));
        assert_eq!(zh.title.as_ref().unwrap().content, "昇腾 910C 量产");
        assert_eq!(zh.links[0].href, "https://n.test/2");
        assert_eq!(zh.language.as_deref(), Some("zh"));
        assert_eq!(zh.categories[0].term, "ai-chips");
        assert_eq!(zh.categories[0].label.as_deref(), Some("AI chips"));
        assert_eq!(zh.updated, Some(es[0].updated));
        let en = &feed.entries[1];
        assert_eq!(en.language.as_deref(), Some("en"));
        assert!(en.links.is_empty());
        assert!(
            en.content.is_some(),
            "an entry without a link carries content"
        );
    }

    #[test]
    fn rendering_is_escaped_and_deterministic() {
        let mut rows = vec![row(1, 1, "w", "A <b> & \"c\"", "k1")];
        rows[0].matched.item.link = Some("javascript:alert(1)".into());
        let meta = FeedMeta {
            digest_id: "daily".into(),
            title: "t".into(),
            watch_names: [("w".to_string(), "Watch & co".to_string())].into(),
            empty_updated: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let a = render(&meta, &entries(&rows, 5, &SetWeights::default()));
        assert!(
            a.contains("<title>A &lt;b&gt; &amp; &quot;c&quot;</title>"),
            "{a}"
        );
        assert!(!a.contains("javascript"), "{a}");
        assert!(a.contains("label=\"Watch &amp; co\""));
        assert_eq!(a, render(&meta, &entries(&rows, 5, &SetWeights::default())));
    }
}
