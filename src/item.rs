//! The story as it flows through the pipeline: the one normalised item type every feed format
//! is turned into, and the verdict the classifier attaches to it.
//!
//! In: nothing (plain data). Out: [`Item`] from `feed`, [`Verdict`]/[`Evidence`] from
//! `classify`, both read by `store`, `digest` and `notify`.
//!
//! Everything in an `Item` came from a feed and is untrusted: plain text (HTML already stripped
//! by `feed`), bounded in length by `feed`, but never escaped. Escaping is the renderer's job.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One entry of a feed, normalised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The feed's own identifier for the entry (RSS `guid`, Atom `id`, JSON Feed `id`), if any.
    pub guid: Option<String>,
    /// The entry's link (absolute URL), if any.
    pub link: Option<String>,
    /// Plain-text title (may be empty).
    pub title: String,
    /// Plain-text summary / description (may be empty).
    pub summary: String,
    /// Plain-text full content when the feed carries it (may be empty).
    pub content: String,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
    /// Publication (or, failing that, update) time as the feed states it.
    pub published: Option<DateTime<Utc>>,
    /// Name of the feed the item came from (config `name`, else the feed's title, else URL).
    pub feed_name: String,
    /// Tags of the feed from config, matched by the `feed:` scope along with the name.
    pub feed_tags: Vec<String>,
    /// ISO 639-1 code of the item's language (`"en"`, `"zh"`, `"vi"`…), decided from its text
    /// before classification; `None` when it could not be told. Stored with the item, shown
    /// in digests, matched by the rules' `lang:` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

impl Item {
    /// A stable hash of what the item says, used as the last-resort dedup key when a feed gives
    /// neither GUID nor link. Deliberately excludes dates and feed name: a feed that re-lists the
    /// same story with a fresh timestamp must not make it new.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.title, &self.summary, &self.content] {
            h.update(part.trim().as_bytes());
            h.update([0u8]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The per-feed identity of the item: GUID, then link, then content hash. The prefix keeps
    /// the three namespaces apart (a GUID that happens to equal another item's link is not it).
    pub fn dedup_key(&self) -> String {
        if let Some(g) = self
            .guid
            .as_deref()
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            return format!("guid:{g}");
        }
        if let Some(l) = self
            .link
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            return format!("link:{l}");
        }
        format!("hash:{}", self.content_hash())
    }
}

/// The part of an item a term matched in. Also the set of field scopes of the rule language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Title,
    Summary,
    Content,
    Author,
    Category,
    Feed,
    Link,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Title,
        Field::Summary,
        Field::Content,
        Field::Author,
        Field::Category,
        Field::Feed,
        Field::Link,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Summary => "summary",
            Field::Content => "content",
            Field::Author => "author",
            Field::Category => "category",
            Field::Feed => "feed",
            Field::Link => "link",
        }
    }
}

/// One piece of evidence for a verdict: a query term that matched, where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The term as written in the query (e.g. `"entity list"`, `sanction*`); shared with the
    /// compiled rule, so a verdict costs no copy of it.
    pub term: Arc<str>,
    /// The named term set the term came from (`@entity_list` → `entity_list`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Arc<str>>,
    /// The concept a reader understands ("Entity List", "Nvidia H20"): the set's label, for the
    /// digest's one-line "why". `None` for terms written directly in a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept: Option<Arc<str>>,
    pub field: Field,
    /// Byte range in the *original* plain text of `field` (as stored in the [`Item`]), so a
    /// renderer can highlight it. For list fields (authors, categories) it indexes the entries
    /// joined with `", "`.
    pub start: usize,
    pub end: usize,
}

/// The classifier's finding for one item and one watch that matched it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub watch_id: String,
    /// Higher ranks first in digests; at least the watch's `min_score`.
    pub score: f64,
    pub evidence: Vec<Evidence>,
}

impl Verdict {
    /// The distinct terms that matched, in first-seen order (what `classify --json` prints).
    pub fn matched_terms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.evidence {
            if !out.iter().any(|t| **t == *e.term) {
                out.push(e.term.to_string());
            }
        }
        out
    }
}

/// So code that takes items can take them bare or inside a richer record
/// (`store::NewItem`, which carries the item's verdicts and clustering data).
impl AsRef<Item> for Item {
    fn as_ref(&self) -> &Item {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_key_prefers_guid_then_link_then_hash() {
        let mut it = Item {
            title: "T".into(),
            ..Default::default()
        };
        assert!(it.dedup_key().starts_with("hash:"));
        it.link = Some(" https://x/1 ".into());
        assert_eq!(it.dedup_key(), "link:https://x/1");
        it.guid = Some("g-1".into());
        assert_eq!(it.dedup_key(), "guid:g-1");
        it.guid = Some("   ".into());
        assert_eq!(it.dedup_key(), "link:https://x/1");
    }

    #[test]
    fn content_hash_ignores_dates_and_feed() {
        let a = Item {
            title: "Curbs".into(),
            summary: "s".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.published = Some(Utc::now());
        b.feed_name = "other".into();
        assert_eq!(a.content_hash(), b.content_hash());
        b.title = "Curbs!".into();
        assert_ne!(a.content_hash(), b.content_hash());
    }
}
