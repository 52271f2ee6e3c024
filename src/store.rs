//! The only module that touches SQLite. It owns the schema, its forward-only migrations, and
//! every query: feeds and their health, items (deduplicated per feed), verdicts, and the durable
//! outbox of digest deliveries.
//!
//! In: normalised [`Item`]s and [`Verdict`]s from the pipeline, poll outcomes from the daemon,
//! claim/mark calls from `notify`. Out: feed schedules and health, the stories of a delivery.
//!
//! # Invariants
//! - **An item is stored once per feed.** Its identity is [`Item::dedup_key`] (GUID, else link,
//!   else content hash); an item that re-appears with a new GUID but the same link *and* the same
//!   content hash is a re-issue, not a new story. Nothing is ever deduplicated by date.
//! - **An item is claimed by a digest at most once.** `delivery_items` has the primary key
//!   `(digest_id, item_id, watch_id)`, and claiming happens in the same transaction that creates
//!   the delivery row, so two claims can never take the same story.
//! - **A delivery is marked sent only after the server (or the log) accepted it.** A crash
//!   between claim and send leaves a `pending` delivery that is retried with the same
//!   Message-ID; nothing is lost and nothing is re-claimed.
//! - Items stored during a feed's backfill (older than the backfill window on its first poll) get
//!   `reportable = 0` verdicts: kept for backtests, never reported.
//!
//! The connection runs in WAL mode with `synchronous = NORMAL`: a committed transaction survives
//! a process crash; a power cut may lose the last transactions but never corrupts the file.
//! Calls are short and synchronous; the daemon makes them from its one pipeline task.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

use crate::item::{Evidence, Item, Verdict};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON could not be read: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database schema version {found} is newer than this policywatch understands ({known}); upgrade policywatch")]
    TooNew { found: i64, known: i64 },
    #[error("unknown feed {0}")]
    UnknownFeed(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The database file inside a state directory.
pub fn db_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("policywatch.db")
}

/// Forward-only migrations. Entry `i` takes the schema from version `i` to `i + 1`. Never edit
/// a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the trunk schema.
    r#"
    CREATE TABLE feeds (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,            -- as configured: the feed's key
        effective_url TEXT,                  -- after a permanent redirect or feed discovery
        name TEXT NOT NULL DEFAULT '',
        etag TEXT,
        last_modified TEXT,
        first_polled_at INTEGER,             -- NULL: never polled, so backfill applies
        last_attempt_at INTEGER,
        last_success_at INTEGER,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_poll_at INTEGER NOT NULL DEFAULT 0,
        retry_not_before INTEGER,            -- a server's Retry-After: never poll before it
        gone_at INTEGER,                     -- 410 Gone: polling stopped
        moved_to TEXT,                       -- permanent redirect / discovered feed to report
        items_total INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        feed_id INTEGER NOT NULL REFERENCES feeds(id),
        dedup_key TEXT NOT NULL,
        guid TEXT,
        link TEXT,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        content TEXT NOT NULL,
        authors TEXT NOT NULL,               -- JSON array
        categories TEXT NOT NULL,            -- JSON array
        published_at INTEGER,
        first_seen_at INTEGER NOT NULL,
        content_hash TEXT NOT NULL,
        reportable INTEGER NOT NULL,
        UNIQUE (feed_id, dedup_key)
    );
    CREATE INDEX items_feed_link ON items(feed_id, link);
    CREATE INDEX items_seen ON items(first_seen_at);
    CREATE TABLE verdicts (
        item_id INTEGER NOT NULL REFERENCES items(id),
        watch_id TEXT NOT NULL,
        score REAL NOT NULL,
        evidence TEXT NOT NULL,              -- JSON array of Evidence
        classified_at INTEGER NOT NULL,
        reportable INTEGER NOT NULL,
        PRIMARY KEY (item_id, watch_id)
    );
    CREATE INDEX verdicts_watch ON verdicts(watch_id, classified_at);
    CREATE TABLE digest_state (
        digest_id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,         -- verdicts older than this are not claimed
        last_fired_at INTEGER,               -- last scheduled firing (missed ones fire on start)
        last_alert_at INTEGER                -- last immediate alert (rate cap)
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        digest_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('digest', 'alert')),
        via TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        message_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        sent_at INTEGER,
        server_reply TEXT,
        trim_to INTEGER                      -- set after a 'too large' refusal
    );
    CREATE INDEX deliveries_pending ON deliveries(status, next_attempt_at);
    CREATE TABLE delivery_items (
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        digest_id TEXT NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id),
        watch_id TEXT NOT NULL,
        PRIMARY KEY (digest_id, item_id, watch_id)
    );
    CREATE INDEX delivery_items_delivery ON delivery_items(delivery_id);
    "#,
    // 2: one story, one entry — canonical URLs, similarity signatures and clusters per item;
    // retention turns old items into small tombstones that still block re-reporting.
    r#"
    ALTER TABLE items ADD COLUMN canonical_url TEXT;
    ALTER TABLE items ADD COLUMN signature BLOB;
    ALTER TABLE items ADD COLUMN cluster_id INTEGER;
    ALTER TABLE items ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
    UPDATE items SET cluster_id = id WHERE cluster_id IS NULL;
    CREATE INDEX items_cluster ON items(cluster_id);
    CREATE INDEX items_canonical ON items(canonical_url);
    "#,
    // 3: the item's language (ISO 639-1), told before classification; NULL when unknown.
    r#"
    ALTER TABLE items ADD COLUMN lang TEXT;
    "#,
];

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_ts(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}

/// What the store knows about one feed: its conditional-GET validators, schedule and health.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedState {
    pub id: i64,
    pub url: String,
    pub effective_url: Option<String>,
    pub name: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub first_polled_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub next_poll_at: DateTime<Utc>,
    pub retry_not_before: Option<DateTime<Utc>>,
    pub gone_at: Option<DateTime<Utc>>,
    pub moved_to: Option<String>,
    pub items_total: i64,
}

impl FeedState {
    /// The URL to request: the remembered permanent redirect, else the configured one.
    pub fn fetch_url(&self) -> &str {
        self.effective_url.as_deref().unwrap_or(&self.url)
    }
}

/// The outcome of one successful poll, to record.
#[derive(Debug, Clone, Default)]
pub struct PollSuccess {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub next_poll_at: DateTime<Utc>,
    /// A permanent redirect or discovered feed URL: fetched from now on, and reported.
    pub moved_to: Option<String>,
}

/// A new item with its verdicts, ready to insert.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub item: Item,
    pub verdicts: Vec<Verdict>,
    /// `canon::canonical_url` of the link, if any.
    pub canonical_url: Option<String>,
    /// `cluster::Signature::to_bytes`, kept so the cluster index can be rebuilt at start-up.
    pub signature: Option<Vec<u8>>,
}

impl NewItem {
    /// An item with its verdicts and no clustering data (tests, tools).
    pub fn plain(item: Item, verdicts: Vec<Verdict>) -> NewItem {
        NewItem {
            item,
            verdicts,
            canonical_url: None,
            signature: None,
        }
    }
}

/// An item as the cluster index needs it at start-up.
#[derive(Debug, Clone)]
pub struct ClusterRow {
    pub id: i64,
    pub feed_id: i64,
    pub cluster_id: i64,
    pub canonical_url: Option<String>,
    pub signature: Vec<u8>,
    pub first_seen_at: DateTime<Utc>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    /// Items whose text and verdicts were dropped (their keys stay, as tombstones).
    pub emptied: usize,
    /// Tombstones deleted for good.
    pub forgotten: usize,
    /// Sent or failed deliveries deleted.
    pub deliveries: usize,
}

/// What [`Store::insert_items`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertReport {
    /// Ids of the items stored now, in input order.
    pub inserted: Vec<i64>,
    /// Of those, how many are reportable (not backfill).
    pub reportable: usize,
    /// How many verdicts (item × watch) were stored as reportable.
    pub matches: usize,
}

/// What a delivery is: a scheduled digest or an immediate alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Digest,
    Alert,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Digest => "digest",
            Kind::Alert => "alert",
        }
    }
}

/// When a digest was registered, last fired on schedule, and last sent an alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DigestState {
    pub created_at: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_alert_at: Option<DateTime<Utc>>,
}

/// A row of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub digest_id: String,
    pub kind: Kind,
    pub via: String,
    pub created_at: DateTime<Utc>,
    pub message_id: String,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub trim_to: Option<usize>,
}

/// One claimed story of a delivery: the item, the watch it matched, and why.
#[derive(Debug, Clone)]
pub struct StoredMatch {
    pub item_id: i64,
    pub watch_id: String,
    pub score: f64,
    pub evidence: Vec<Evidence>,
    pub item: Item,
    pub first_seen_at: DateTime<Utc>,
    /// The story this item belongs to (an item id; the item's own for a story told once).
    pub cluster_id: i64,
}

/// A stored item with the watches it matched when it was classified (for backtests).
#[derive(Debug, Clone)]
pub struct StoredItem {
    pub id: i64,
    pub item: Item,
    pub first_seen_at: DateTime<Utc>,
    pub watches: Vec<String>,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// An in-memory database, for tests and `classify` dry runs.
    pub fn open_in_memory() -> Result<Store> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // journal_mode returns a row, so it cannot go through execute_batch on every version.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);",
        )?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        let current: i64 = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tracing::info!(version = i + 1, "migrating database schema");
            tx.execute_batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [known])?;
        tx.commit()?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))?)
    }

    // ---------------------------------------------------------------- feeds

    /// Makes sure every configured feed has a row (new feeds are due at once) and keeps names
    /// current. Feeds no longer configured keep their rows and items but are not polled.
    pub fn sync_feeds<'a>(
        &mut self,
        feeds: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare(
                "INSERT INTO feeds (url, name) VALUES (?1, ?2) \
                 ON CONFLICT(url) DO UPDATE SET name = excluded.name",
            )?;
            for (url, name) in feeds {
                up.execute(params![url, name])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn feed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedState> {
        let opt = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
            Ok(r.get::<_, Option<i64>>(i)?.map(from_ts))
        };
        Ok(FeedState {
            id: r.get(0)?,
            url: r.get(1)?,
            effective_url: r.get(2)?,
            name: r.get(3)?,
            etag: r.get(4)?,
            last_modified: r.get(5)?,
            first_polled_at: opt(6)?,
            last_attempt_at: opt(7)?,
            last_success_at: opt(8)?,
            consecutive_failures: r.get::<_, i64>(9)?.max(0) as u32,
            last_error: r.get(10)?,
            next_poll_at: from_ts(r.get(11)?),
            retry_not_before: opt(12)?,
            gone_at: opt(13)?,
            moved_to: r.get(14)?,
            items_total: r.get(15)?,
        })
    }

    const FEED_COLS: &'static str = "id, url, effective_url, name, etag, last_modified, \
        first_polled_at, last_attempt_at, last_success_at, consecutive_failures, last_error, \
        next_poll_at, retry_not_before, gone_at, moved_to, items_total";

    pub fn feed(&self, url: &str) -> Result<FeedState> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM feeds WHERE url = ?1", Self::FEED_COLS),
                [url],
                Self::feed_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownFeed(url.to_string()))
    }

    pub fn feeds(&self) -> Result<Vec<FeedState>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM feeds ORDER BY id",
            Self::FEED_COLS
        ))?;
        let rows = st.query_map([], Self::feed_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn record_poll_success(
        &mut self,
        url: &str,
        now: DateTime<Utc>,
        ok: &PollSuccess,
    ) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE feeds SET etag = ?2, last_modified = ?3, next_poll_at = ?4, \
                 first_polled_at = COALESCE(first_polled_at, ?5), last_attempt_at = ?5, \
                 last_success_at = ?5, consecutive_failures = 0, last_error = NULL, \
                 retry_not_before = NULL, gone_at = NULL, \
                 effective_url = COALESCE(?6, effective_url), moved_to = COALESCE(?6, moved_to) \
             WHERE url = ?1",
            params![
                url,
                ok.etag,
                ok.last_modified,
                ts(ok.next_poll_at),
                ts(now),
                ok.moved_to
            ],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownFeed(url.to_string()));
        }
        Ok(())
    }

    /// Records a failed poll. Returns the new count of consecutive failures.
    pub fn record_poll_failure(
        &mut self,
        url: &str,
        now: DateTime<Utc>,
        error: &str,
        next_poll_at: DateTime<Utc>,
        retry_not_before: Option<DateTime<Utc>>,
    ) -> Result<u32> {
        let n: Option<i64> = self
            .conn
            .query_row(
                "UPDATE feeds SET consecutive_failures = consecutive_failures + 1, \
                     last_error = ?2, last_attempt_at = ?3, next_poll_at = ?4, \
                     retry_not_before = ?5 \
                 WHERE url = ?1 RETURNING consecutive_failures",
                params![
                    url,
                    error,
                    ts(now),
                    ts(next_poll_at),
                    retry_not_before.map(ts)
                ],
                |r| r.get(0),
            )
            .optional()?;
        n.map(|n| n.max(0) as u32)
            .ok_or_else(|| StoreError::UnknownFeed(url.to_string()))
    }

    /// 410 Gone: the feed is not polled again until its config changes or it is re-enabled.
    pub fn record_gone(&mut self, url: &str, now: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE feeds SET gone_at = ?2, last_attempt_at = ?2, last_error = 'gone (HTTP 410)' \
             WHERE url = ?1",
            params![url, ts(now)],
        )?;
        Ok(())
    }

    /// Forgets a remembered redirect and a 410, e.g. after the user changed the feed's URL.
    pub fn reset_feed(&mut self, url: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE feeds SET gone_at = NULL, effective_url = NULL, moved_to = NULL, \
             consecutive_failures = 0, next_poll_at = 0, retry_not_before = NULL WHERE url = ?1",
            [url],
        )?;
        Ok(())
    }

    // ---------------------------------------------------------------- items

    /// Which of `items` this feed has not stored before. Pure read; the daemon classifies only
    /// these, then calls [`Store::insert_items`].
    pub fn filter_new(&self, feed_url: &str, items: Vec<Item>) -> Result<Vec<Item>> {
        let feed_id = self.feed(feed_url)?.id;
        let mut by_key = self
            .conn
            .prepare_cached("SELECT 1 FROM items WHERE feed_id = ?1 AND dedup_key = ?2")?;
        let mut reissue = self.conn.prepare_cached(
            "SELECT 1 FROM items WHERE feed_id = ?1 AND link = ?2 AND content_hash = ?3",
        )?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for it in items {
            let key = it.dedup_key();
            // The same entry twice in one document counts once.
            if !seen.insert(key.clone()) {
                continue;
            }
            if by_key.exists(params![feed_id, key])? {
                continue;
            }
            if let Some(link) = it.link.as_deref() {
                if reissue.exists(params![feed_id, link, it.content_hash()])? {
                    continue;
                }
            }
            out.push(it);
        }
        Ok(out)
    }

    /// Stores new items and their verdicts in one transaction. Items whose `published` is
    /// before `backfill_before` are stored as not reportable. An item that is somehow already
    /// there (same key) is skipped, never duplicated.
    ///
    /// `assign` is called with each inserted item's id (in order, inside the transaction), and
    /// the cluster of an earlier item with the same canonical URL if there is one (however old:
    /// the in-memory index only spans the cluster window), and returns the item's cluster id —
    /// its own id for a new story, or an earlier item's for the same story told again. The
    /// daemon passes the cluster index; `|id, _, _| id` clusters nothing.
    pub fn insert_items(
        &mut self,
        feed_url: &str,
        new: &[NewItem],
        now: DateTime<Utc>,
        backfill_before: Option<DateTime<Utc>>,
        assign: &mut dyn FnMut(i64, &NewItem, Option<i64>) -> i64,
    ) -> Result<InsertReport> {
        let feed_id = self.feed(feed_url)?.id;
        let tx = self.conn.transaction()?;
        let mut report = InsertReport::default();
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO items (feed_id, dedup_key, guid, link, title, summary, \
                    content, authors, categories, published_at, first_seen_at, content_hash, \
                    reportable, canonical_url, signature, lang) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut set_cluster =
                tx.prepare_cached("UPDATE items SET cluster_id = ?2 WHERE id = ?1")?;
            let mut same_url = tx.prepare_cached(
                "SELECT COALESCE(cluster_id, id) FROM items WHERE canonical_url = ?1 AND id != ?2 \
                 ORDER BY id LIMIT 1",
            )?;
            let mut ver = tx.prepare_cached(
                "INSERT OR REPLACE INTO verdicts (item_id, watch_id, score, evidence, \
                    classified_at, reportable) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for n in new {
                let it = &n.item;
                let reportable = match (backfill_before, it.published) {
                    (Some(cut), Some(p)) => p >= cut,
                    _ => true,
                };
                let changed = ins.execute(params![
                    feed_id,
                    it.dedup_key(),
                    it.guid,
                    it.link,
                    it.title,
                    it.summary,
                    it.content,
                    serde_json::to_string(&it.authors)?,
                    serde_json::to_string(&it.categories)?,
                    it.published.map(ts),
                    ts(now),
                    it.content_hash(),
                    reportable,
                    n.canonical_url,
                    n.signature,
                    it.lang,
                ])?;
                if changed == 0 {
                    continue;
                }
                let item_id = tx.last_insert_rowid();
                let known = match &n.canonical_url {
                    Some(u) => same_url
                        .query_row(params![u, item_id], |r| r.get::<_, i64>(0))
                        .optional()?,
                    None => None,
                };
                set_cluster.execute(params![item_id, assign(item_id, n, known)])?;
                report.inserted.push(item_id);
                if reportable {
                    report.reportable += 1;
                }
                for v in &n.verdicts {
                    ver.execute(params![
                        item_id,
                        v.watch_id,
                        v.score,
                        serde_json::to_string(&v.evidence)?,
                        ts(now),
                        reportable
                    ])?;
                    if reportable {
                        report.matches += 1;
                    }
                }
            }
            tx.execute(
                "UPDATE feeds SET items_total = items_total + ?2 WHERE id = ?1",
                params![feed_id, report.inserted.len() as i64],
            )?;
        }
        tx.commit()?;
        Ok(report)
    }

    fn item_from_row(r: &rusqlite::Row<'_>, off: usize) -> rusqlite::Result<Item> {
        let json_list = |i: usize| -> rusqlite::Result<Vec<String>> {
            let s: String = r.get(off + i)?;
            Ok(serde_json::from_str(&s).unwrap_or_default())
        };
        Ok(Item {
            guid: r.get(off)?,
            link: r.get(off + 1)?,
            title: r.get(off + 2)?,
            summary: r.get(off + 3)?,
            content: r.get(off + 4)?,
            authors: json_list(5)?,
            categories: json_list(6)?,
            published: r.get::<_, Option<i64>>(off + 7)?.map(from_ts),
            feed_name: r.get(off + 8)?,
            feed_tags: Vec::new(),
            lang: r.get(off + 9)?,
        })
    }

    const ITEM_COLS: &'static str = "i.guid, i.link, i.title, i.summary, i.content, i.authors, \
        i.categories, i.published_at, f.name, i.lang";
    /// How many columns `ITEM_COLS` names (what `item_from_row` reads).
    const ITEM_COLS_LEN: usize = 10;

    /// Stored items first seen at or after `since`, oldest first, with the watches their stored
    /// verdicts name. For `backtest`.
    pub fn items_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredItem>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT i.id, i.first_seen_at, \
                (SELECT group_concat(v.watch_id, char(31)) FROM verdicts v WHERE v.item_id = i.id), \
                {} FROM items i JOIN feeds f ON f.id = i.feed_id \
             WHERE i.first_seen_at >= ?1 AND i.pruned = 0 ORDER BY i.id",
            Self::ITEM_COLS
        ))?;
        let rows = st.query_map([ts(since)], |r| {
            let watches: Option<String> = r.get(2)?;
            Ok(StoredItem {
                id: r.get(0)?,
                first_seen_at: from_ts(r.get(1)?),
                watches: watches
                    .map(|w| w.split('\u{1f}').map(str::to_string).collect())
                    .unwrap_or_default(),
                item: Self::item_from_row(r, 3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn item_count(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))?)
    }

    /// Reportable matches per watch (for metrics and status).
    pub fn match_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self.conn.prepare(
            "SELECT watch_id, count(*) FROM verdicts WHERE reportable = 1 GROUP BY watch_id",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Items first seen at or after `since` that carry a signature, oldest first: what the
    /// cluster index is rebuilt from at start-up.
    pub fn cluster_rows(&self, since: DateTime<Utc>) -> Result<Vec<ClusterRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, COALESCE(cluster_id, id), canonical_url, signature, first_seen_at, feed_id \
             FROM items WHERE first_seen_at >= ?1 AND signature IS NOT NULL ORDER BY id",
        )?;
        let rows = st.query_map([ts(since)], |r| {
            Ok(ClusterRow {
                id: r.get(0)?,
                cluster_id: r.get(1)?,
                canonical_url: r.get(2)?,
                signature: r.get(3)?,
                first_seen_at: from_ts(r.get(4)?),
                feed_id: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Retention. Items first seen before `items_before` lose their text, signature and
    /// verdicts but keep their identity (feed, dedup key, link, content hash, cluster) as a
    /// tombstone, so a feed that still lists them cannot make them new again; items that were
    /// delivered are kept whole until `delivered_before`. Tombstones are deleted for good only
    /// before `forget_before` (set it well past any feed's memory). Finished deliveries older
    /// than `delivered_before` go too. One transaction.
    pub fn prune(
        &mut self,
        items_before: DateTime<Utc>,
        delivered_before: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<PruneReport> {
        let tx = self.conn.transaction()?;
        let mut report = PruneReport::default();
        // Old deliveries first, so their items stop counting as delivered.
        tx.execute(
            "DELETE FROM delivery_items WHERE delivery_id IN (SELECT id FROM deliveries \
             WHERE status != 'pending' AND created_at < ?1)",
            [ts(delivered_before)],
        )?;
        report.deliveries = tx.execute(
            "DELETE FROM deliveries WHERE status != 'pending' AND created_at < ?1",
            [ts(delivered_before)],
        )?;
        let doomed = "SELECT id FROM items WHERE pruned = 0 AND first_seen_at < ?1 \
             AND id NOT IN (SELECT item_id FROM delivery_items)";
        tx.execute(
            &format!("DELETE FROM verdicts WHERE item_id IN ({doomed})"),
            [ts(items_before)],
        )?;
        report.emptied = tx.execute(
            &format!(
                "UPDATE items SET title = '', summary = '', content = '', authors = '[]', \
                    categories = '[]', signature = NULL, pruned = 1 WHERE id IN ({doomed})"
            ),
            [ts(items_before)],
        )?;
        report.forgotten = tx.execute(
            "DELETE FROM items WHERE pruned = 1 AND first_seen_at < ?1 \
             AND id NOT IN (SELECT item_id FROM delivery_items)",
            [ts(forget_before)],
        )?;
        tx.commit()?;
        Ok(report)
    }

    // ---------------------------------------------------------------- digests & outbox

    /// Registers a digest (idempotent) and returns its state. A digest only ever claims
    /// verdicts made after it was first registered, so adding a digest to the config does not
    /// mail the whole history.
    pub fn digest_state(&mut self, digest_id: &str, now: DateTime<Utc>) -> Result<DigestState> {
        self.conn.execute(
            "INSERT OR IGNORE INTO digest_state (digest_id, created_at) VALUES (?1, ?2)",
            params![digest_id, ts(now)],
        )?;
        Ok(self
            .read_digest_state(digest_id)?
            .expect("the row was inserted above"))
    }

    /// A registered digest's state, without registering it (a pure read).
    pub fn read_digest_state(&self, digest_id: &str) -> Result<Option<DigestState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT created_at, last_fired_at, last_alert_at FROM digest_state \
                 WHERE digest_id = ?1",
                [digest_id],
                |r| {
                    Ok(DigestState {
                        created_at: from_ts(r.get(0)?),
                        last_fired_at: r.get::<_, Option<i64>>(1)?.map(from_ts),
                        last_alert_at: r.get::<_, Option<i64>>(2)?.map(from_ts),
                    })
                },
            )
            .optional()?)
    }

    /// Claims every reportable, not yet claimed match of `watches` for `digest_id` and creates
    /// the delivery that will carry them, in one transaction. Also records `now` as the digest's
    /// last firing (or last alert, for [`Kind::Alert`]). Returns `None` (and creates nothing)
    /// when there is nothing new, unless `send_empty` is set.
    ///
    /// An immediate alert claims under its digest's id, so the scheduled digest that follows
    /// does not repeat what the alert already said.
    pub fn claim(
        &mut self,
        digest_id: &str,
        kind: Kind,
        via: &str,
        watches: &[String],
        now: DateTime<Utc>,
        send_empty: bool,
    ) -> Result<Option<Delivery>> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO digest_state (digest_id, created_at) VALUES (?1, ?2)",
            params![digest_id, ts(now)],
        )?;
        let token: u64 = rand::random();
        let message_id = format!("{}.{:016x}@policywatch", now.format("%Y%m%d%H%M%S"), token);
        tx.execute(
            "INSERT INTO deliveries (digest_id, kind, via, created_at, message_id, status, \
                next_attempt_at) VALUES (?1, ?5, ?2, ?3, ?4, 'pending', ?3)",
            params![digest_id, via, ts(now), message_id, kind.as_str()],
        )?;
        let delivery_id = tx.last_insert_rowid();
        let claimed = Self::claim_into(&tx, delivery_id, digest_id, watches)?;
        // A scheduled firing is recorded even when empty (it happened); an alert only when it
        // carries something, so an empty check does not push the rate cap forward.
        let col = match kind {
            Kind::Digest => Some("last_fired_at"),
            Kind::Alert if claimed > 0 => Some("last_alert_at"),
            Kind::Alert => None,
        };
        if let Some(col) = col {
            tx.execute(
                &format!("UPDATE digest_state SET {col} = ?2 WHERE digest_id = ?1"),
                params![digest_id, ts(now)],
            )?;
        }
        if claimed == 0 && !send_empty {
            tx.execute("DELETE FROM deliveries WHERE id = ?1", [delivery_id])?;
            tx.commit()?;
            return Ok(None);
        }
        tx.commit()?;
        self.delivery(delivery_id).map(Some)
    }

    /// What [`Store::claim`] would take for `digest_id` now, without taking it: the claim runs
    /// inside a savepoint that is rolled back, so the preview uses the very same rule and
    /// leaves no trace (`digest --preview`).
    pub fn preview_claim(
        &mut self,
        digest_id: &str,
        watches: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredMatch>> {
        self.conn.execute_batch("SAVEPOINT preview")?;
        let result = (|| {
            self.conn.execute(
                "INSERT OR IGNORE INTO digest_state (digest_id, created_at) VALUES (?1, ?2)",
                params![digest_id, ts(now)],
            )?;
            self.conn.execute(
                "INSERT INTO deliveries (digest_id, kind, via, created_at, message_id, status, \
                    next_attempt_at) VALUES (?1, 'digest', 'preview', ?2, ?3, 'pending', ?2)",
                params![digest_id, ts(now), format!("preview.{}", ts(now))],
            )?;
            let id = self.conn.last_insert_rowid();
            Self::claim_into(&self.conn, id, digest_id, watches)?;
            self.delivery_stories(id)
        })();
        self.conn
            .execute_batch("ROLLBACK TO preview; RELEASE preview")?;
        result
    }

    /// (`CROSS JOIN` fixes the join order: from the story's few items by the cluster index to
    /// their claims by primary key. The other order scans every claim of the digest for every
    /// verdict, which is quadratic in a busy cycle.)
    ///
    /// The claim query below is the whole "never the same story twice" rule: a verdict is
    /// claimed unless this digest already claimed that (item, watch), or an earlier delivery of
    /// this digest already carried any item of the same cluster (the same story from another
    /// feed, or re-issued under a new GUID, title or URL). Items of one cluster that are new
    /// together are claimed together, and `notify` shows them as one story.
    fn claim_into(
        tx: &Connection,
        delivery_id: i64,
        digest_id: &str,
        watches: &[String],
    ) -> Result<usize> {
        let mut st = tx.prepare_cached(
            "INSERT INTO delivery_items (delivery_id, digest_id, item_id, watch_id) \
             SELECT ?1, ?2, v.item_id, v.watch_id FROM verdicts v \
             JOIN items i ON i.id = v.item_id \
             WHERE v.watch_id = ?3 AND v.reportable = 1 \
               AND v.classified_at >= (SELECT created_at FROM digest_state WHERE digest_id = ?2) \
               AND NOT EXISTS (SELECT 1 FROM delivery_items d \
                   WHERE d.digest_id = ?2 AND d.item_id = v.item_id AND d.watch_id = v.watch_id) \
               AND NOT EXISTS (SELECT 1 FROM items j CROSS JOIN delivery_items d \
                   ON d.digest_id = ?2 AND d.item_id = j.id \
                   WHERE j.cluster_id = i.cluster_id AND d.delivery_id != ?1)",
        )?;
        let mut n = 0;
        for w in watches {
            n += st.execute(params![delivery_id, digest_id, w])?;
        }
        Ok(n)
    }

    fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
        Ok(Delivery {
            id: r.get(0)?,
            digest_id: r.get(1)?,
            kind: if r.get::<_, String>(10)? == "alert" {
                Kind::Alert
            } else {
                Kind::Digest
            },
            via: r.get(2)?,
            created_at: from_ts(r.get(3)?),
            message_id: r.get(4)?,
            status: r.get(5)?,
            attempts: r.get::<_, i64>(6)?.max(0) as u32,
            next_attempt_at: from_ts(r.get(7)?),
            last_error: r.get(8)?,
            trim_to: r.get::<_, Option<i64>>(9)?.map(|n| n.max(0) as usize),
        })
    }

    const DELIVERY_COLS: &'static str = "id, digest_id, via, created_at, message_id, status, \
        attempts, next_attempt_at, last_error, trim_to, kind";

    pub fn delivery(&self, id: i64) -> Result<Delivery> {
        Ok(self.conn.query_row(
            &format!(
                "SELECT {} FROM deliveries WHERE id = ?1",
                Self::DELIVERY_COLS
            ),
            [id],
            Self::delivery_from_row,
        )?)
    }

    /// Pending deliveries whose next attempt is due, oldest first.
    pub fn due_deliveries(&self, now: DateTime<Utc>) -> Result<Vec<Delivery>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 \
             ORDER BY id",
            Self::DELIVERY_COLS
        ))?;
        let rows = st.query_map([ts(now)], Self::delivery_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next pending delivery becomes due, if any.
    pub fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(from_ts))
    }

    /// Pending deliveries (the outbox depth).
    pub fn outbox_depth(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// The stories a delivery carries, with their items and evidence, best score first.
    pub fn delivery_stories(&self, delivery_id: i64) -> Result<Vec<StoredMatch>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT d.item_id, d.watch_id, v.score, v.evidence, i.first_seen_at, {}, \
                COALESCE(i.cluster_id, i.id) \
             FROM delivery_items d \
             JOIN verdicts v ON v.item_id = d.item_id AND v.watch_id = d.watch_id \
             JOIN items i ON i.id = d.item_id JOIN feeds f ON f.id = i.feed_id \
             WHERE d.delivery_id = ?1 ORDER BY v.score DESC, i.published_at DESC, i.id",
            Self::ITEM_COLS
        ))?;
        let rows = st.query_map([delivery_id], |r| {
            let ev: String = r.get(3)?;
            Ok((
                StoredMatch {
                    item_id: r.get(0)?,
                    watch_id: r.get(1)?,
                    score: r.get(2)?,
                    evidence: Vec::new(),
                    first_seen_at: from_ts(r.get(4)?),
                    item: Self::item_from_row(r, 5)?,
                    // After the item's columns (`ITEM_COLS`).
                    cluster_id: r.get(5 + Self::ITEM_COLS_LEN)?,
                },
                ev,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut m, ev) = row?;
            m.evidence = serde_json::from_str(&ev)?;
            out.push(m);
        }
        Ok(out)
    }

    /// The server (or the log) accepted the delivery.
    pub fn mark_sent(&mut self, id: i64, now: DateTime<Utc>, reply: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = ?2, server_reply = ?3, \
                attempts = attempts + 1, last_error = NULL WHERE id = ?1 AND status = 'pending'",
            params![id, ts(now), reply],
        )?;
        Ok(())
    }

    /// A transient failure: try again at `next_attempt_at`. `trim_to` asks the next attempt to
    /// carry at most that many stories (after a "message too large" refusal).
    pub fn mark_retry(
        &mut self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        trim_to: Option<usize>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3, \
                trim_to = COALESCE(?4, trim_to) WHERE id = ?1 AND status = 'pending'",
            params![id, error, ts(next_attempt_at), trim_to.map(|n| n as i64)],
        )?;
        Ok(())
    }

    /// A permanent failure: the delivery is given up and reported; its stories stay claimed, so
    /// they are not mailed again by a later digest (the failure is visible in logs and status).
    pub fn mark_failed(&mut self, id: i64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?2 \
             WHERE id = ?1 AND status = 'pending'",
            params![id, error],
        )?;
        Ok(())
    }

    /// Deliveries that failed permanently (for status and the next digest's health section).
    pub fn failed_deliveries(&self) -> Result<Vec<Delivery>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM deliveries WHERE status = 'failed' ORDER BY id",
            Self::DELIVERY_COLS
        ))?;
        let rows = st.query_map([], Self::delivery_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const FEED: &str = "https://example.test/feed.xml";

    fn item(guid: Option<&str>, link: Option<&str>, title: &str) -> Item {
        Item {
            guid: guid.map(str::to_string),
            link: link.map(str::to_string),
            title: title.to_string(),
            summary: format!("summary of {title}"),
            ..Default::default()
        }
    }

    fn verdict(watch: &str) -> Verdict {
        Verdict {
            watch_id: watch.into(),
            score: 1.0,
            evidence: vec![Evidence {
                term: "nvidia".into(),
                set: None,
                concept: None,
                field: crate::item::Field::Title,
                start: 0,
                end: 6,
            }],
        }
    }

    fn store() -> Store {
        let mut s = Store::open_in_memory().unwrap();
        s.sync_feeds([(FEED, "Example")]).unwrap();
        s
    }

    fn insert(s: &mut Store, items: Vec<Item>, now: DateTime<Utc>, watch: &str) -> InsertReport {
        let new = s.filter_new(FEED, items).unwrap();
        let new: Vec<NewItem> = new
            .into_iter()
            .map(|item| NewItem::plain(item, vec![verdict(watch)]))
            .collect();
        s.insert_items(FEED, &new, now, None, &mut |id, _, _| id)
            .unwrap()
    }

    #[test]
    fn items_are_stored_once_by_guid_link_or_hash() {
        let mut s = store();
        let now = Utc::now();
        let batch = vec![
            item(Some("g1"), Some("https://x/1"), "one"),
            item(None, Some("https://x/2"), "two"),
            item(None, None, "three"),
            item(Some("g1"), Some("https://x/1"), "one"), // twice in one document
        ];
        assert_eq!(insert(&mut s, batch.clone(), now, "w").inserted.len(), 3);
        assert_eq!(insert(&mut s, batch, now, "w").inserted.len(), 0);
        // A re-issue under a new GUID with the same link and text is not new...
        let reissued = item(Some("g1-new"), Some("https://x/1"), "one");
        assert_eq!(insert(&mut s, vec![reissued], now, "w").inserted.len(), 0);
        // ...but distinct stories that share a landing-page link are.
        let other = item(Some("g9"), Some("https://x/1"), "a different story");
        assert_eq!(insert(&mut s, vec![other], now, "w").inserted.len(), 1);
        assert_eq!(s.item_count().unwrap(), 4);
    }

    #[test]
    fn backfill_items_are_stored_but_never_claimed() {
        let mut s = store();
        let now = Utc::now();
        s.digest_state("daily", now - Duration::days(1)).unwrap();
        let mut old = item(Some("old"), None, "old story");
        old.published = Some(now - Duration::days(10));
        let mut fresh = item(Some("new"), None, "new story");
        fresh.published = Some(now - Duration::hours(1));
        let new: Vec<NewItem> = [old, fresh]
            .into_iter()
            .map(|item| NewItem::plain(item, vec![verdict("w")]))
            .collect();
        let r = s
            .insert_items(
                FEED,
                &new,
                now,
                Some(now - Duration::hours(48)),
                &mut |id, _, _| id,
            )
            .unwrap();
        assert_eq!((r.inserted.len(), r.reportable, r.matches), (2, 1, 1));
        let d = s
            .claim("daily", Kind::Digest, "log", &["w".into()], now, false)
            .unwrap()
            .unwrap();
        let stories = s.delivery_stories(d.id).unwrap();
        assert_eq!(stories.len(), 1);
        assert_eq!(stories[0].item.title, "new story");
        assert_eq!(stories[0].item.feed_name, "Example");
    }

    #[test]
    fn a_story_is_claimed_once_per_digest_and_delivery_survives_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let t0 = Utc::now() - Duration::minutes(5);
        let id;
        {
            let mut s = Store::open(&path).unwrap();
            s.sync_feeds([(FEED, "Example")]).unwrap();
            s.digest_state("daily", t0).unwrap();
            s.digest_state("alerts", t0).unwrap();
            insert(&mut s, vec![item(Some("a"), None, "a")], t0, "w");
            let d = s
                .claim("daily", Kind::Digest, "email", &["w".into()], t0, false)
                .unwrap()
                .unwrap();
            id = d.id;
            assert_eq!(d.status, "pending");
            // Nothing new: no second delivery.
            assert!(s
                .claim("daily", Kind::Digest, "email", &["w".into()], t0, false)
                .unwrap()
                .is_none());
            // Another digest claims the same story independently.
            assert!(s
                .claim("alerts", Kind::Alert, "log", &["w".into()], t0, false)
                .unwrap()
                .is_some());
            // "Crash" here: drop the store between claim and send.
        }
        let mut s = Store::open(&path).unwrap();
        let due = s.due_deliveries(Utc::now()).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].id, id);
        s.mark_retry(id, "451 try later", t0 + Duration::hours(1), Some(10))
            .unwrap();
        let d = s.delivery(id).unwrap();
        assert_eq!((d.attempts, d.trim_to), (1, Some(10)));
        assert!(s
            .due_deliveries(t0 + Duration::minutes(1))
            .unwrap()
            .iter()
            .all(|d| d.id != id));
        s.mark_sent(id, Utc::now(), "250 ok").unwrap();
        assert_eq!(s.delivery(id).unwrap().status, "sent");
        // Marking is one-way: a late failure cannot undo a send.
        s.mark_failed(id, "too late").unwrap();
        assert_eq!(s.delivery(id).unwrap().status, "sent");
        assert_eq!(s.outbox_depth().unwrap(), 1);
    }

    #[test]
    fn a_new_digest_does_not_claim_history() {
        let mut s = store();
        let now = Utc::now();
        insert(&mut s, vec![item(Some("a"), None, "a")], now, "w");
        s.digest_state("late", now + Duration::seconds(5)).unwrap();
        assert!(s
            .claim("late", Kind::Digest, "log", &["w".into()], now, false)
            .unwrap()
            .is_none());
        let d = s
            .claim("late", Kind::Digest, "log", &["w".into()], now, true)
            .unwrap();
        assert!(d.is_some(), "send_empty creates a delivery anyway");
    }

    #[test]
    fn feed_health_is_recorded() {
        let mut s = store();
        let now = Utc::now();
        let next = now + Duration::minutes(30);
        assert_eq!(
            s.record_poll_failure(FEED, now, "503", next, Some(next))
                .unwrap(),
            1
        );
        assert_eq!(
            s.record_poll_failure(FEED, now, "503", next, None).unwrap(),
            2
        );
        let ok = PollSuccess {
            etag: Some("\"e1\"".into()),
            next_poll_at: next,
            moved_to: Some("https://example.test/new.xml".into()),
            ..Default::default()
        };
        s.record_poll_success(FEED, now, &ok).unwrap();
        let f = s.feed(FEED).unwrap();
        assert_eq!(f.consecutive_failures, 0);
        assert_eq!(f.etag.as_deref(), Some("\"e1\""));
        assert_eq!(f.fetch_url(), "https://example.test/new.xml");
        assert_eq!(f.next_poll_at.timestamp(), next.timestamp());
        assert!(f.first_polled_at.is_some());
        assert!(matches!(
            s.record_poll_failure("https://nope/", now, "x", next, None),
            Err(StoreError::UnknownFeed(_))
        ));
    }

    #[test]
    fn reopening_keeps_schema_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.conn
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn item_cols_len_counts_item_cols() {
        assert_eq!(Store::ITEM_COLS.split(',').count(), Store::ITEM_COLS_LEN);
    }

    #[test]
    fn the_item_language_is_stored_and_read_back() {
        let mut s = store();
        let t0 = Utc::now();
        let mut vi = item(Some("vi"), Some("https://x/vi"), "Cấm xuất khẩu");
        vi.lang = Some("vi".into());
        let unknown = item(Some("u"), Some("https://x/u"), "2024");
        insert(&mut s, vec![vi, unknown], t0, "w");
        let back = s.items_since(t0 - Duration::days(1)).unwrap();
        let langs: Vec<Option<&str>> = back.iter().map(|i| i.item.lang.as_deref()).collect();
        assert_eq!(langs, vec![Some("vi"), None]);
    }

    #[test]
    fn pruning_keeps_tombstones_so_old_items_never_look_new() {
        let mut s = store();
        let t0 = Utc::now() - Duration::days(100);
        s.digest_state("daily", t0).unwrap();
        insert(
            &mut s,
            vec![item(Some("old"), Some("https://x/old"), "old")],
            t0,
            "w",
        );
        insert(
            &mut s,
            vec![item(Some("sent"), Some("https://x/sent"), "sent")],
            t0,
            "w",
        );
        // "sent" is delivered; "old" was claimed by nobody.
        let d = s
            .claim("daily", Kind::Digest, "log", &["w".into()], t0, false)
            .unwrap()
            .unwrap();
        s.conn
            .execute("DELETE FROM delivery_items WHERE item_id = 1", [])
            .unwrap();
        s.mark_sent(d.id, t0, "ok").unwrap();
        let now = Utc::now();
        let r = s
            .prune(
                now - Duration::days(90),
                now - Duration::days(365),
                now - Duration::days(730),
            )
            .unwrap();
        assert_eq!((r.emptied, r.forgotten, r.deliveries), (1, 0, 0));
        assert_eq!(s.item_count().unwrap(), 2, "the tombstone stays");
        // The feed still lists the old item: it is not new, and it has no verdicts left.
        let again = s
            .filter_new(FEED, vec![item(Some("old"), Some("https://x/old"), "old")])
            .unwrap();
        assert!(again.is_empty());
        assert_eq!(
            s.items_since(t0 - Duration::days(1)).unwrap().len(),
            1,
            "only the delivered item keeps its text"
        );
        // Much later, tombstones and finished deliveries go for good.
        let later = now + Duration::days(800);
        let r = s
            .prune(
                later - Duration::days(90),
                later - Duration::days(365),
                later - Duration::days(730),
            )
            .unwrap();
        assert_eq!((r.emptied, r.forgotten, r.deliveries), (1, 2, 1));
        assert_eq!(s.item_count().unwrap(), 0);
    }
}
