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
//! - **A delivery is marked sent only after the server (or the log) accepted it**, recipient by
//!   recipient (`delivery_recipients`): a crash between claim and send leaves a `pending`
//!   delivery that is retried with the same Message-ID for the recipients not yet served;
//!   nothing is lost and nothing is re-claimed. A *held* delivery (`held = 1`) is pending but
//!   waits for [`Store::release_held`] instead of a time.
//! - Items stored during a feed's backfill (older than the backfill window on its first poll) get
//!   `reportable = 0` verdicts: kept for backtests, never reported.
//!
//! The connection runs in WAL mode with `synchronous = NORMAL`: a committed transaction survives
//! a process crash; a power cut may lose the last transactions but never corrupts the file.
//! Temporary storage is in memory (`temp_store = MEMORY`): every insert of a batch keeps a
//! statement journal (the foreign keys make any statement able to fail half-way), which
//! otherwise goes to a file in `/var/tmp` once past 64 KiB: a cold cycle of 200 feeds × 50
//! items wrote about 17,000 pages there, outside the state directory.
//! Calls are short and synchronous; the daemon makes them from its one pipeline task.

use std::collections::HashSet;
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
    #[error("database schema version {found} is older than this policywatch expects ({known}); start `policywatch run` once to migrate it")]
    TooOld { found: i64, known: i64 },
}

impl StoreError {
    /// True when a write failed for lack of space: `SQLITE_FULL`, or the I/O errors a full
    /// disk gives SQLite (a write, fsync, truncate or WAL-index extension refused, ENOSPC).
    /// The daemon treats these as transient: it retries, it does not exit.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => sqlite_out_of_space(e),
            _ => false,
        }
    }
}

fn sqlite_out_of_space(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return false;
    };
    f.code == rusqlite::ErrorCode::DiskFull
        || matches!(
            f.extended_code,
            ffi::SQLITE_IOERR_WRITE
                | ffi::SQLITE_IOERR_FSYNC
                | ffi::SQLITE_IOERR_DIR_FSYNC
                | ffi::SQLITE_IOERR_TRUNCATE
                | ffi::SQLITE_IOERR_SHMSIZE
                | ffi::SQLITE_IOERR_SHMMAP
        )
}

/// [`StoreError::is_out_of_space`] for any error in a chain (the daemon's `anyhow` errors
/// carry store errors wrapped, or their SQLite source directly).
pub fn is_out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(s) = e.downcast_ref::<StoreError>() {
        return s.is_out_of_space();
    }
    e.downcast_ref::<rusqlite::Error>()
        .is_some_and(sqlite_out_of_space)
}

/// Why the state directory could not be locked ([`lock_state`]).
#[derive(Debug, Error)]
pub enum LockError {
    #[error("another policywatch ({holder}) is already running on the state directory {dir}: stop it first, or give this one its own --state-dir; nothing was started")]
    Held { holder: String, dir: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What is wrong with a state directory, in words an operator can act on.
#[derive(Debug, Error)]
pub enum StateDirError {
    #[error("the state directory {0} is a file, not a directory: move the file away or pass another --state-dir")]
    NotADirectory(String),
    #[error("cannot create the state directory {dir}: {cause}{hint}")]
    Create {
        dir: String,
        cause: String,
        hint: &'static str,
    },
    #[error("cannot write in the state directory {dir}: {cause}{hint}")]
    NotWritable {
        dir: String,
        cause: String,
        hint: &'static str,
    },
}

/// The advice for a state directory the daemon may not write: the usual cause is a service
/// user without access (systemd's `StateDirectory=` creates it with the right owner).
fn access_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (the service user needs write access to it; with systemd use StateDirectory=)"
        }
        _ if e.raw_os_error() == Some(libc::EROFS) => {
            " (it is on a read-only file system; with systemd use StateDirectory=, which is writable)"
        }
        _ => "",
    }
}

/// An I/O error as a person says it: "permission denied", not "Permission denied (os error
/// 13)".
fn cause(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// Makes sure `dir` is a directory this process can write (creating it if needed), so a bad
/// state path is reported by name and cause before SQLite turns it into "unable to open
/// database file".
pub fn prepare_state_dir(dir: &Path) -> std::result::Result<(), StateDirError> {
    let name = || dir.display().to_string();
    if dir.exists() && !dir.is_dir() {
        return Err(StateDirError::NotADirectory(name()));
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        // A file somewhere on the path says "File exists" / "Not a directory": name it.
        if e.kind() == std::io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTDIR)
        {
            let blocker = dir
                .ancestors()
                .find(|a| a.exists() && !a.is_dir())
                .unwrap_or(dir);
            return Err(StateDirError::NotADirectory(blocker.display().to_string()));
        }
        return Err(StateDirError::Create {
            dir: name(),
            cause: cause(&e),
            hint: access_hint(&e),
        });
    }
    let probe = dir.join(".policywatch-write-test");
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(StateDirError::NotWritable {
            dir: name(),
            cause: cause(&e),
            hint: access_hint(&e),
        }),
    }
}

/// The lock file inside a state directory.
pub fn lock_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("policywatch.lock")
}

/// Held for a daemon's life: an exclusive advisory lock (`flock`) on the state directory's
/// lock file, whose content is the holder's PID. The kernel drops the lock when the process
/// ends, however it ends (kill -9 included), so a stale file never blocks a start.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Takes the state directory's lock, or says which process holds it. Read-only commands do
/// not take it: they open the database read-only beside the daemon.
pub fn lock_state(state_dir: &Path) -> std::result::Result<StateLock, LockError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = lock_path(state_dir);
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid: String = pid.trim().chars().take(20).collect();
        return Err(LockError::Held {
            holder: if pid.is_empty() {
                "PID unknown".to_string()
            } else {
                format!("PID {pid}")
            },
            dir: state_dir.display().to_string(),
        });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(StateLock { _file: file })
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
    // 3: per-recipient outcomes (one refused address fails that address only), deliveries
    // held for the operator (authentication, TLS, size: retried after a reload, never given
    // up), explicit resends, and how many of its stories a delivery showed (the archive).
    r#"
    CREATE TABLE delivery_recipients (
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        recipient TEXT NOT NULL,             -- as configured: "Name <addr>" or "addr"
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_at INTEGER,
        server_reply TEXT,
        resolved_at INTEGER,                 -- a failure an explicit resend made good
        PRIMARY KEY (delivery_id, recipient)
    );
    CREATE INDEX delivery_recipients_status ON delivery_recipients(status, recipient);
    ALTER TABLE deliveries ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN resent_at INTEGER;
    ALTER TABLE deliveries ADD COLUMN shown INTEGER;
    ALTER TABLE deliveries ADD COLUMN stories INTEGER;
    "#,
    // 4: the item's language (ISO 639-1), told before classification; NULL when unknown.
    r#"
    ALTER TABLE items ADD COLUMN lang TEXT;
    "#,
    // 5: stories a delivery handed back because they did not fit its message: counted so a
    // resend still says "N more stories will come in the next digest".
    r#"
    ALTER TABLE deliveries ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6: a claim reads a watch's verdicts from their index alone (`Store::candidates`).
    r#"
    DROP INDEX verdicts_watch;
    CREATE INDEX verdicts_watch ON verdicts(watch_id, classified_at, reportable, item_id, score);
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

    /// Failing now: failures in a row, or gone. The same test as
    /// [`Store::failing_feed_urls`]' SQL, which counts them without reading every row.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures > 0 || self.gone_at.is_some()
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

impl AsRef<Item> for NewItem {
    fn as_ref(&self) -> &Item {
        &self.item
    }
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

/// An item as the cluster index needs it at start-up, borrowed from the row being read
/// ([`Store::each_cluster_row`]).
#[derive(Debug, Clone, Copy)]
pub struct ClusterRow<'r> {
    pub id: i64,
    pub feed_id: i64,
    pub cluster_id: i64,
    pub canonical_url: Option<&'r str>,
    pub signature: &'r [u8],
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
    /// Pending, but waiting for the operator (a reload, a restart or `digest --resend`), not
    /// for a time: see [`Store::mark_held`].
    pub held: bool,
    pub sent_at: Option<DateTime<Utc>>,
    /// Set when `digest --resend` sent it again.
    pub resent_at: Option<DateTime<Utc>>,
    /// Stories shown and claimed, recorded when it was sent.
    pub shown: Option<usize>,
    pub stories: Option<usize>,
    /// Stories handed back to the store for the next digest ([`Store::release`]).
    pub deferred: usize,
}

/// One recipient of a delivery and how it went for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    pub delivery_id: i64,
    /// As configured: `Name <addr>` or `addr`.
    pub address: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub reply: Option<String>,
}

/// What one attempt to one recipient came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RecipientOutcome {
    /// The server accepted it; its reply.
    Sent(String),
    /// Refused for good, for this recipient.
    Failed(String),
    /// Not this time; the delivery decides when to try again.
    Deferred(String),
}

/// A recipient that failed for good and has not been made good since (no later delivery to
/// the same address went through, no resend): shown to the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientProblem {
    pub delivery_id: i64,
    pub digest_id: String,
    pub address: String,
    pub error: String,
    pub created_at: DateTime<Utc>,
}

/// A flagged story in the archive (`policywatch stories`), with every delivery that carried
/// it or its story.
#[derive(Debug, Clone)]
pub struct ArchivedStory {
    pub item_id: i64,
    pub watch_id: String,
    pub score: f64,
    pub title: String,
    pub link: Option<String>,
    pub feed_name: String,
    pub first_seen_at: DateTime<Utc>,
    pub cluster_id: i64,
    /// The deliveries that claimed this very item for this watch.
    pub claims: Vec<Delivery>,
    /// Other items of the same story that a delivery carried: (item id, feed, title,
    /// delivery id). Non-empty with no claim of its own means it joined a story that was
    /// delivered under another item.
    pub joined: Vec<(i64, String, String, i64)>,
    /// Other items of the same story (feed names), delivered or not: "also reported by".
    pub also_reported_by: Vec<String>,
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

/// A match a claim would take, as much of it as ranking needs (see [`Store::claim_with`]):
/// the fields of [`StoredMatch`] that order a digest, without the texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub item_id: i64,
    /// Index of the match's watch in the claim's `watches`.
    pub watch: usize,
    pub score: f64,
    pub cluster_id: i64,
    /// The item's `published` ([`Item::published`]).
    pub published: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
}

/// What a claim takes of its [`Candidate`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    All,
    /// The candidates of these clusters; `left` is how many stories that leaves for later
    /// (the delivery's `deferred` count to start with).
    Some {
        clusters: HashSet<i64>,
        left: usize,
    },
}

impl Choice {
    /// The clusters to claim (`None`: all) and the stories left for later.
    fn parts(self) -> (Option<HashSet<i64>>, usize) {
        match self {
            Choice::All => (None, 0),
            Choice::Some { clusters, left } => (Some(clusters), left),
        }
    }
}

/// A recent match for a feed of matches (see [`Store::recent_matches`]).
#[derive(Debug, Clone)]
pub struct RecentMatch {
    pub matched: StoredMatch,
    /// The story's permanent identity: its first item's feed URL and dedup key, joined by a
    /// newline. Hashed into the Atom entry id.
    pub story_key: String,
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
    /// Inside [`Store::begin_batch`]: writes nest as savepoints of the batch's transaction.
    batch: bool,
}

/// How many prepared statements the connection keeps (see [`Store::write`]).
const STATEMENT_CACHE: usize = 64;

/// The feed columns [`Store::feed_from_row`] reads, as a literal for `concat!`.
macro_rules! feed_cols {
    () => {
        "id, url, effective_url, name, etag, last_modified, first_polled_at, last_attempt_at, \
         last_success_at, consecutive_failures, last_error, next_poll_at, retry_not_before, \
         gone_at, moved_to, items_total"
    };
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// Opens an existing database for reading only (`feeds`, `backtest`, `digest --preview`):
    /// no write transaction, no migration, so it works beside a busy daemon (which keeps the
    /// WAL, so readers never wait for it); a lock still held after the busy timeout is an
    /// error. A schema this binary does not know exactly is refused with what to do.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // The preview's TEMP copies (see `shadow_for_preview`) keep their REFERENCES clauses,
        // which would look for the referenced tables in TEMP; nothing is written to main here.
        conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY")?;
        let store = Store { conn, batch: false };
        let found = store.schema_version()?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        if found < known {
            return Err(StoreError::TooOld { found, known });
        }
        Ok(store)
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
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
             CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);",
        )?;
        // Every per-item and per-poll statement is prepared once and kept (`prepare_cached`);
        // rusqlite's default of 16 would evict some of them on every poll.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mut store = Store { conn, batch: false };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `body` in one write transaction whose `BEGIN`, `COMMIT` and `ROLLBACK` are cached
    /// statements too (`Connection::transaction` parses them on every call). Rolls back when
    /// `body` or the commit fails, and when `body` panics (the guard's drop). `IMMEDIATE`:
    /// the write lock is taken at the start, waiting out the busy timeout, because `body`
    /// reads before it writes, and a deferred transaction upgrading its read lock fails at
    /// once, without waiting, when another connection holds or just released the write lock.
    ///
    /// Inside a batch ([`Store::begin_batch`]) the same body runs in a savepoint of the
    /// batch's transaction instead: it is undone alone when it fails, and it is durable only
    /// when the batch commits.
    fn write<T>(&mut self, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.batch {
            return self.savepoint(body);
        }
        struct Open<'c>(&'c Connection);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                if !self.0.is_autocommit() {
                    let _ = self
                        .0
                        .prepare_cached("ROLLBACK")
                        .and_then(|mut st| st.execute([]));
                }
            }
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let open = Open(&self.conn);
        let value = body(open.0)?;
        open.0.prepare_cached("COMMIT")?.execute([])?;
        Ok(value)
    }

    fn savepoint<T>(&mut self, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        struct Open<'c>(&'c Connection, bool);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let _ = self
                        .0
                        .prepare_cached("ROLLBACK TO write")
                        .and_then(|mut st| st.execute([]));
                    let _ = self
                        .0
                        .prepare_cached("RELEASE write")
                        .and_then(|mut st| st.execute([]));
                }
            }
        }
        self.conn.prepare_cached("SAVEPOINT write")?.execute([])?;
        let mut open = Open(&self.conn, false);
        let value = body(open.0)?;
        open.0.prepare_cached("RELEASE write")?.execute([])?;
        open.1 = true;
        Ok(value)
    }

    /// Opens one write transaction for several poll results (see `daemon`): every write until
    /// [`Store::commit_batch`] is part of it, so a burst of results costs one commit instead
    /// of two per result. Only the per-poll writes may run inside — `filter_new`,
    /// `insert_items`, `record_poll_success`, `record_poll_failure`, `record_gone`, reads —
    /// not those that open their own transaction (they fail: SQLite does not nest
    /// `BEGIN`). If the batch is never committed (an error, a drop) nothing of it is stored.
    pub fn begin_batch(&mut self) -> Result<()> {
        debug_assert!(!self.batch, "a batch is already open");
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.batch = true;
        Ok(())
    }

    /// Commits the batch opened by [`Store::begin_batch`]. On failure (a full disk) the whole
    /// batch is rolled back: none of its results is stored, so each of their feeds stays due
    /// and is fetched again.
    pub fn commit_batch(&mut self) -> Result<()> {
        self.batch = false;
        let done = self.conn.prepare_cached("COMMIT")?.execute([]).map(drop);
        if done.is_err() {
            self.rollback_batch();
        }
        Ok(done?)
    }

    /// Rolls back the batch opened by [`Store::begin_batch`]: nothing of it is stored.
    pub fn rollback_batch(&mut self) {
        self.batch = false;
        if !self.conn.is_autocommit() {
            let _ = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut st| st.execute([]));
        }
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
        if current == known {
            // Nothing to do, and nothing written: a start-up on a full disk must not fail here.
            return Ok(());
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
        // The stored names, read in one pass: only a new feed or a changed name is written (a
        // start with 10,000 feeds would otherwise look each one up and rewrite every row of the
        // table, and every page to the WAL).
        let mut stored: std::collections::HashMap<String, Option<String>> =
            std::collections::HashMap::new();
        {
            let mut st = self.conn.prepare_cached("SELECT url, name FROM feeds")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                let (url, name) = row?;
                stored.insert(url, name);
            }
        }
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare(
                "INSERT INTO feeds (url, name) VALUES (?1, ?2) \
                 ON CONFLICT(url) DO UPDATE SET name = excluded.name",
            )?;
            for (url, name) in feeds {
                if stored.get(url).is_some_and(|n| n.as_deref() == Some(name)) {
                    continue;
                }
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

    pub fn feed(&self, url: &str) -> Result<FeedState> {
        self.conn
            .prepare_cached(concat!(
                "SELECT ",
                feed_cols!(),
                " FROM feeds WHERE url = ?1"
            ))?
            .query_row([url], Self::feed_from_row)
            .optional()?
            .ok_or_else(|| StoreError::UnknownFeed(url.to_string()))
    }

    /// The store's id of a configured feed (one indexed lookup; cached statement).
    fn feed_id(conn: &Connection, url: &str) -> Result<i64> {
        conn.prepare_cached("SELECT id FROM feeds WHERE url = ?1")?
            .query_row([url], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::UnknownFeed(url.to_string()))
    }

    /// The URLs of the feeds failing now (failures in a row, or gone: the SQL of
    /// [`FeedState::is_failing`]): what a status line counts, without reading every feed's row.
    pub fn failing_feed_urls(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            "SELECT url FROM feeds WHERE consecutive_failures > 0 OR gone_at IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn feeds(&self) -> Result<Vec<FeedState>> {
        let mut st = self.conn.prepare_cached(concat!(
            "SELECT ",
            feed_cols!(),
            " FROM feeds ORDER BY id"
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
        let n = self
            .conn
            .prepare_cached(
                "UPDATE feeds SET etag = ?2, last_modified = ?3, next_poll_at = ?4, \
                 first_polled_at = COALESCE(first_polled_at, ?5), last_attempt_at = ?5, \
                 last_success_at = ?5, consecutive_failures = 0, last_error = NULL, \
                 retry_not_before = NULL, gone_at = NULL, \
                 effective_url = COALESCE(?6, effective_url), moved_to = COALESCE(?6, moved_to) \
             WHERE url = ?1",
            )?
            .execute(params![
                url,
                ok.etag,
                ok.last_modified,
                ts(ok.next_poll_at),
                ts(now),
                ok.moved_to
            ])?;
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
            .prepare_cached(
                "UPDATE feeds SET consecutive_failures = consecutive_failures + 1, \
                     last_error = ?2, last_attempt_at = ?3, next_poll_at = ?4, \
                     retry_not_before = ?5 \
                 WHERE url = ?1 RETURNING consecutive_failures",
            )?
            .query_row(
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
        self.conn
            .prepare_cached(
                "UPDATE feeds SET gone_at = ?2, last_attempt_at = ?2, \
                 last_error = 'gone (HTTP 410)' WHERE url = ?1",
            )?
            .execute(params![url, ts(now)])?;
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
    pub fn filter_new<T: AsRef<Item>>(&self, feed_url: &str, items: Vec<T>) -> Result<Vec<T>> {
        let feed_id = Self::feed_id(&self.conn, feed_url)?;
        let mut by_key = self
            .conn
            .prepare_cached("SELECT 1 FROM items WHERE feed_id = ?1 AND dedup_key = ?2")?;
        let mut reissue = self.conn.prepare_cached(
            "SELECT 1 FROM items WHERE feed_id = ?1 AND link = ?2 AND content_hash = ?3",
        )?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for entry in items {
            let it = entry.as_ref();
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
            out.push(entry);
        }
        Ok(out)
    }

    /// Stores new items and their verdicts in one transaction. Items whose `published` is
    /// before `backfill_before` are stored as not reportable. An item that is somehow already
    /// there (same key) is skipped, never duplicated.
    ///
    /// `assign` is called with each item's id (in order, inside the transaction, just before
    /// the item is written; a failed write rolls the transaction back, so the caller's index
    /// must then be rebuilt — `daemon::Daemon::store_failed` does), and
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
        self.write(|tx| {
            let feed_id = Self::feed_id(tx, feed_url)?;
            let mut report = InsertReport::default();
            {
                // Each item's id is chosen here (what SQLite would choose: one past the
                // largest), so its cluster is known before the row is written and goes in with
                // it: no second write of the row and its cluster index per item.
                let mut next_id: i64 = tx
                    .prepare_cached("SELECT COALESCE(max(id), 0) + 1 FROM items")?
                    .query_row([], |r| r.get(0))?;
                let mut stored =
                    tx.prepare_cached("SELECT 1 FROM items WHERE feed_id = ?1 AND dedup_key = ?2")?;
                let mut ins = tx.prepare_cached(
                    "INSERT INTO items (id, feed_id, dedup_key, guid, link, title, summary, \
                    content, authors, categories, published_at, first_seen_at, content_hash, \
                    reportable, canonical_url, signature, lang, cluster_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                    ?17, ?18)",
                )?;
                let mut same_url = tx.prepare_cached(
                    "SELECT COALESCE(cluster_id, id) FROM items WHERE canonical_url = ?1 \
                     ORDER BY id LIMIT 1",
                )?;
                let mut ver = tx.prepare_cached(
                    "INSERT OR REPLACE INTO verdicts (item_id, watch_id, score, evidence, \
                    classified_at, reportable) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for n in new {
                    let it = &n.item;
                    let key = it.dedup_key();
                    if stored.exists(params![feed_id, key])? {
                        continue;
                    }
                    let reportable = match (backfill_before, it.published) {
                        (Some(cut), Some(p)) => p >= cut,
                        _ => true,
                    };
                    let item_id = next_id;
                    next_id += 1;
                    let known = match &n.canonical_url {
                        Some(u) => same_url
                            .query_row(params![u], |r| r.get::<_, i64>(0))
                            .optional()?,
                        None => None,
                    };
                    let cluster = assign(item_id, n, known);
                    ins.execute(params![
                        item_id,
                        feed_id,
                        key,
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
                        cluster,
                    ])?;
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
                tx.prepare_cached("UPDATE feeds SET items_total = items_total + ?2 WHERE id = ?1")?
                    .execute(params![feed_id, report.inserted.len() as i64])?;
            }
            Ok(report)
        })
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

    /// Calls `each` with every item first seen at or after `since` that has a signature, in
    /// id order (the order they were stored and clustered in). The row's text is lent, not
    /// copied: a start-up reads a hundred thousand of them.
    pub fn each_cluster_row(
        &self,
        since: DateTime<Utc>,
        each: &mut dyn FnMut(ClusterRow<'_>),
    ) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, COALESCE(cluster_id, id), canonical_url, signature, first_seen_at, feed_id \
             FROM items WHERE first_seen_at >= ?1 AND signature IS NOT NULL ORDER BY id",
        )?;
        let mut rows = st.query([ts(since)])?;
        while let Some(r) = rows.next()? {
            use rusqlite::types::Type;
            let bad =
                |col, ty| move |e| rusqlite::Error::FromSqlConversionFailure(col, ty, Box::new(e));
            each(ClusterRow {
                id: r.get(0)?,
                cluster_id: r.get(1)?,
                canonical_url: r.get_ref(2)?.as_str_or_null().map_err(bad(2, Type::Text))?,
                signature: r.get_ref(3)?.as_blob().map_err(bad(3, Type::Blob))?,
                first_seen_at: from_ts(r.get(4)?),
                feed_id: r.get(5)?,
            });
        }
        Ok(())
    }

    /// How many items were first seen at or after `since`: at least as many as
    /// [`Store::each_cluster_row`] hands over (those without a signature count too), read from
    /// the `items_seen` index alone.
    pub fn items_seen_since(&self, since: DateTime<Utc>) -> Result<usize> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM items WHERE first_seen_at >= ?1")?
            .query_row([ts(since)], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
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
            "DELETE FROM delivery_recipients WHERE delivery_id IN (SELECT id FROM deliveries \
             WHERE status != 'pending' AND created_at < ?1)",
            [ts(delivered_before)],
        )?;
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
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO digest_state (digest_id, created_at) VALUES (?1, ?2)",
            )?
            .execute(params![digest_id, ts(now)])?;
        Ok(self
            .read_digest_state(digest_id)?
            .expect("the row was inserted above"))
    }

    /// A registered digest's state, without registering it (a pure read).
    pub fn read_digest_state(&self, digest_id: &str) -> Result<Option<DigestState>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT created_at, last_fired_at, last_alert_at FROM digest_state \
                 WHERE digest_id = ?1",
            )?
            .query_row([digest_id], |r| {
                Ok(DigestState {
                    created_at: from_ts(r.get(0)?),
                    last_fired_at: r.get::<_, Option<i64>>(1)?.map(from_ts),
                    last_alert_at: r.get::<_, Option<i64>>(2)?.map(from_ts),
                })
            })
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
        self.claim_with(digest_id, kind, via, watches, now, send_empty, &mut |_| {
            Choice::All
        })
    }

    /// [`Store::claim`], taking only the stories `choose` picks from what the claim would take
    /// (each story — cluster — whole, every claimable match of its items): the others stay
    /// unclaimed, for a later delivery, exactly as if they had been claimed and handed back
    /// ([`Store::release`]), and the delivery's `deferred` count starts at the number
    /// `choose` says it left. `notify` uses it to claim no more of a large backlog than one
    /// message can show.
    #[allow(clippy::too_many_arguments)]
    pub fn claim_with(
        &mut self,
        digest_id: &str,
        kind: Kind,
        via: &str,
        watches: &[String],
        now: DateTime<Utc>,
        send_empty: bool,
        choose: &mut dyn FnMut(&[Candidate]) -> Choice,
    ) -> Result<Option<Delivery>> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO digest_state (digest_id, created_at) VALUES (?1, ?2)",
            )?
            .execute(params![digest_id, ts(now)])?;
            let token: u64 = rand::random();
            let message_id = format!("{}.{:016x}@policywatch", now.format("%Y%m%d%H%M%S"), token);
            tx.prepare_cached(
                "INSERT INTO deliveries (digest_id, kind, via, created_at, message_id, status, \
                    next_attempt_at) VALUES (?1, ?5, ?2, ?3, ?4, 'pending', ?3)",
            )?
            .execute(params![digest_id, via, ts(now), message_id, kind.as_str()])?;
            let delivery_id = tx.last_insert_rowid();
            let found = Self::candidates(tx, delivery_id, digest_id, watches, i64::MAX, true)?;
            let (clusters, left) = choose(&found).parts();
            let (claimed, _) = Self::claim_candidates(
                tx,
                delivery_id,
                digest_id,
                watches,
                &found,
                clusters.as_ref(),
                true,
            )?;
            if left > 0 {
                tx.prepare_cached("UPDATE deliveries SET deferred = ?2 WHERE id = ?1")?
                    .execute(params![delivery_id, left as i64])?;
            }
            // A scheduled firing is recorded even when empty (it happened); an alert only when
            // it carries something, so an empty check does not push the rate cap forward.
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
                return Ok(None);
            }
            Ok(Some(delivery_id))
        })?
        .map(|id| self.delivery(id))
        .transpose()
    }

    /// Claims more for pending delivery `delivery_id` of what its claim left for later (see
    /// [`Store::claim_with`]): of the matches of `watches` the claim rule still gives it that
    /// were classified by the time the delivery was created — what a claim then would have
    /// seen, less what another delivery of the digest has taken since — the stories `choose`
    /// picks. Its `deferred` count drops by the stories taken. Returns how many that is.
    pub fn claim_more(
        &mut self,
        delivery_id: i64,
        watches: &[String],
        choose: &mut dyn FnMut(&[Candidate]) -> Choice,
    ) -> Result<usize> {
        self.write(|tx| {
            let found: Option<(String, i64)> = tx
                .prepare_cached(
                    "SELECT digest_id, created_at FROM deliveries WHERE id = ?1 AND status = 'pending'",
                )?
                .query_row([delivery_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((digest_id, created_at)) = found else {
                return Ok(0);
            };
            let found = Self::candidates(tx, delivery_id, &digest_id, watches, created_at, false)?;
            let (clusters, _) = choose(&found).parts();
            let (_, stories) = Self::claim_candidates(
                tx,
                delivery_id,
                &digest_id,
                watches,
                &found,
                clusters.as_ref(),
                false,
            )?;
            tx.prepare_cached(
                "UPDATE deliveries SET deferred = max(0, deferred - ?2) WHERE id = ?1",
            )?
            .execute(params![delivery_id, stories as i64])?;
            Ok(stories)
        })
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
        if self.conn.is_readonly(rusqlite::DatabaseName::Main)? {
            self.shadow_for_preview(digest_id)?;
        }
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
            let found = Self::candidates(&self.conn, id, digest_id, watches, i64::MAX, true)?;
            Self::claim_candidates(&self.conn, id, digest_id, watches, &found, None, true)?;
            self.delivery_stories(id)
        })();
        self.conn
            .execute_batch("ROLLBACK TO preview; RELEASE preview")?;
        result
    }

    /// On a read-only connection the preview's claim cannot write to the database: it writes
    /// to TEMP copies (same schema, this digest's rows) of the three tables a claim touches,
    /// which unqualified names resolve to first, so the very same claim statements run.
    fn shadow_for_preview(&self, digest_id: &str) -> Result<()> {
        for table in ["digest_state", "deliveries", "delivery_items"] {
            let sql: String = self.conn.query_row(
                "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )?;
            let body = sql.split_once('(').map_or("", |(_, rest)| rest);
            self.conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.{table}; CREATE TEMP TABLE {table} ({body}"
            ))?;
            self.conn.execute(
                &format!(
                    "INSERT INTO temp.{table} SELECT * FROM main.{table} WHERE digest_id = ?1"
                ),
                [digest_id],
            )?;
        }
        Ok(())
    }

    /// What the claim rule gives delivery `delivery_id` of digest `digest_id` now, per watch
    /// of `watches` (in that order), of the matches classified at or before `until`.
    ///
    /// The claim rule is the whole "never the same story twice" rule: a verdict is claimable
    /// unless this digest already claimed that (item, watch), or an earlier delivery of this
    /// digest already carried any item of the same cluster (the same story from another feed,
    /// or re-issued under a new GUID, title or URL). Items of one cluster that are new together
    /// are claimed together, and `notify` shows them as one story.
    ///
    /// (`CROSS JOIN` fixes the join order: from the story's few items by the cluster index to
    /// their claims by primary key. The other order scans every claim of the digest for every
    /// verdict, which is quadratic in a busy cycle.) Claiming one watch's matches does not
    /// change what the rule gives another watch (the first test is per watch, the second skips
    /// this delivery), so all can be read before any is written. For a `fresh` delivery, which
    /// carries nothing yet, the first test is implied by the second (an item claimed by another
    /// delivery is in a cluster that delivery carries) and is skipped, unless the item has no
    /// cluster (rows from before clusters, which migration 2 gave one anyway).
    fn candidates(
        tx: &Connection,
        delivery_id: i64,
        digest_id: &str,
        watches: &[String],
        until: i64,
        fresh: bool,
    ) -> Result<Vec<Candidate>> {
        let mut st = tx.prepare_cached(
            "SELECT v.item_id, v.score, COALESCE(i.cluster_id, i.id), i.published_at, \
                i.first_seen_at \
             FROM verdicts v JOIN items i ON i.id = v.item_id \
             WHERE v.watch_id = ?3 AND v.reportable = 1 \
               AND v.classified_at >= (SELECT created_at FROM digest_state WHERE digest_id = ?2) \
               AND v.classified_at <= ?4 \
               AND (?5 AND i.cluster_id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM delivery_items d \
                   WHERE d.digest_id = ?2 AND d.item_id = v.item_id AND d.watch_id = v.watch_id)) \
               AND NOT EXISTS (SELECT 1 FROM items j CROSS JOIN delivery_items d \
                   ON d.digest_id = ?2 AND d.item_id = j.id \
                   WHERE j.cluster_id = i.cluster_id AND d.delivery_id != ?1)",
        )?;
        let mut out = Vec::new();
        for (watch, w) in watches.iter().enumerate() {
            let rows = st.query_map(params![delivery_id, digest_id, w, until, fresh], |r| {
                Ok(Candidate {
                    item_id: r.get(0)?,
                    watch,
                    score: r.get(1)?,
                    cluster_id: r.get(2)?,
                    published: r.get::<_, Option<i64>>(3)?.map(from_ts),
                    first_seen_at: from_ts(r.get(4)?),
                })
            })?;
            for c in rows {
                out.push(c?);
            }
        }
        Ok(out)
    }

    /// Claims `found` (all of it, or the candidates of `clusters`) for the delivery. Returns
    /// the matches claimed and the stories (clusters) among them the delivery did not carry
    /// before (all of them for a `fresh` delivery, which carries nothing yet).
    fn claim_candidates(
        tx: &Connection,
        delivery_id: i64,
        digest_id: &str,
        watches: &[String],
        found: &[Candidate],
        clusters: Option<&HashSet<i64>>,
        fresh: bool,
    ) -> Result<(usize, usize)> {
        let mut carried = tx.prepare_cached(
            "SELECT 1 FROM delivery_items d JOIN items i ON i.id = d.item_id \
             WHERE d.delivery_id = ?1 AND COALESCE(i.cluster_id, i.id) = ?2 LIMIT 1",
        )?;
        let mut ins = tx.prepare_cached(
            "INSERT INTO delivery_items (delivery_id, digest_id, item_id, watch_id) \
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        // Each story's first candidate decides whether it is new to the delivery.
        let mut seen = HashSet::new();
        let (mut matches, mut stories) = (0, 0);
        for c in found {
            if clusters.is_some_and(|set| !set.contains(&c.cluster_id)) {
                continue;
            }
            if seen.insert(c.cluster_id)
                && (fresh || !carried.exists(params![delivery_id, c.cluster_id])?)
            {
                stories += 1;
            }
            matches += ins.execute(params![delivery_id, digest_id, c.item_id, watches[c.watch]])?;
        }
        Ok((matches, stories))
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
            held: r.get::<_, i64>(11)? != 0,
            sent_at: r.get::<_, Option<i64>>(12)?.map(from_ts),
            resent_at: r.get::<_, Option<i64>>(13)?.map(from_ts),
            shown: r.get::<_, Option<i64>>(14)?.map(|n| n.max(0) as usize),
            stories: r.get::<_, Option<i64>>(15)?.map(|n| n.max(0) as usize),
            deferred: r.get::<_, i64>(16)?.max(0) as usize,
        })
    }

    const DELIVERY_COLS: &'static str = "id, digest_id, via, created_at, message_id, status, \
        attempts, next_attempt_at, last_error, trim_to, kind, held, sent_at, resent_at, shown, \
        stories, deferred";

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
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {} FROM deliveries WHERE status = 'pending' AND held = 0 \
             AND next_attempt_at <= ?1 ORDER BY id",
            Self::DELIVERY_COLS
        ))?;
        let rows = st.query_map([ts(now)], Self::delivery_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next pending delivery becomes due, if any.
    pub fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND held = 0",
            )?
            .query_row([], |r| r.get::<_, Option<i64>>(0))?
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
             WHERE d.delivery_id = ?1",
            Self::ITEM_COLS
        ))?;
        let rows = st.query_map([delivery_id], Self::match_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut m, ev) = row?;
            m.evidence = serde_json::from_str(&ev)?;
            out.push(m);
        }
        // Sorted here rather than by SQLite, whose sorter would copy every row's full text.
        // As `ORDER BY score DESC, published_at DESC, id` would: no date sorts last.
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| b.item.published.cmp(&a.item.published))
                .then_with(|| a.item_id.cmp(&b.item_id))
        });
        Ok(out)
    }

    /// A match from the columns `item_id, watch_id, score, evidence, first_seen_at,
    /// ITEM_COLS…, cluster id`; the evidence comes back as JSON text for the caller to parse
    /// (outside rusqlite's row closure, so a bad row is a typed error).
    fn match_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredMatch, String)> {
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
            r.get(3)?,
        ))
    }

    /// The most recent reportable matches of `watches` (not pruned), newest first, at most
    /// `limit` rows — what a digest's Atom feed is rendered from (`atom::entries` groups them
    /// into stories). Each row carries its story's key: the identity (feed URL and dedup key)
    /// of the cluster's first item, which never changes once stored, so a story keeps its
    /// entry id whichever of its items leads, across restarts and even a new database.
    pub fn recent_matches(&self, watches: &[String], limit: usize) -> Result<Vec<RecentMatch>> {
        if watches.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; watches.len()].join(", ");
        let mut st = self.conn.prepare(&format!(
            "SELECT v.item_id, v.watch_id, v.score, v.evidence, i.first_seen_at, {}, \
                COALESCE(i.cluster_id, i.id), \
                COALESCE(rf.url || char(10) || r.dedup_key, f.url || char(10) || i.dedup_key) \
             FROM verdicts v JOIN items i ON i.id = v.item_id JOIN feeds f ON f.id = i.feed_id \
             LEFT JOIN items r ON r.id = COALESCE(i.cluster_id, i.id) \
             LEFT JOIN feeds rf ON rf.id = r.feed_id \
             WHERE v.reportable = 1 AND i.pruned = 0 AND v.watch_id IN ({marks}) \
             ORDER BY i.first_seen_at DESC, i.id DESC LIMIT {}",
            Self::ITEM_COLS,
            limit.min(i64::MAX as usize)
        ))?;
        let rows = st.query_map(rusqlite::params_from_iter(watches.iter()), |r| {
            Ok((
                Self::match_from_row(r)?,
                r.get::<_, String>(6 + Self::ITEM_COLS_LEN)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let ((mut matched, ev), story_key) = row?;
            matched.evidence = serde_json::from_str(&ev)?;
            out.push(RecentMatch { matched, story_key });
        }
        Ok(out)
    }

    /// Hands stories of a pending delivery back for the next digest: the claims of every item
    /// of each cluster in `clusters` are deleted from `delivery_id` and its `deferred` count
    /// grows by the number of stories, in one transaction. The claim rule then finds them
    /// again (no other delivery of the digest carried those clusters), so the next claim of the
    /// digest takes them. Clusters the delivery does not carry are ignored. Returns the
    /// stories handed back.
    pub fn release(&mut self, delivery_id: i64, clusters: &[i64]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let n;
        {
            let digest_id: Option<String> = tx
                .query_row(
                    "SELECT digest_id FROM deliveries WHERE id = ?1",
                    [delivery_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(digest_id) = digest_id else {
                return Ok(0);
            };
            // One pass over the delivery's own claims (by its index), each claim of a released
            // story deleted by its primary key. Looking the clusters up one by one instead
            // (an `IN` subquery, or the members then their claims) costs a statement and a
            // temporary table per cluster; an OR of them in one statement, or a delete by
            // delivery id per cluster, was quadratic in a large digest.
            let released: std::collections::HashSet<i64> = clusters.iter().copied().collect();
            let claims: Vec<(i64, String, i64)> = tx
                .prepare_cached(
                    "SELECT d.item_id, d.watch_id, COALESCE(i.cluster_id, i.id) \
                     FROM delivery_items d JOIN items i ON i.id = d.item_id \
                     WHERE d.delivery_id = ?1",
                )?
                .query_map([delivery_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut unclaim = tx.prepare_cached(
                "DELETE FROM delivery_items WHERE digest_id = ?1 AND item_id = ?2 AND watch_id = ?3",
            )?;
            let mut emptied = std::collections::HashSet::new();
            for (item, watch, cluster) in claims {
                if released.contains(&cluster) {
                    unclaim.execute(params![digest_id, item, watch])?;
                    emptied.insert(cluster);
                }
            }
            n = emptied.len();
        }
        tx.execute(
            "UPDATE deliveries SET deferred = deferred + ?2 WHERE id = ?1 AND status = 'pending'",
            params![delivery_id, n as i64],
        )?;
        tx.commit()?;
        Ok(n)
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

    /// Deliveries that failed permanently and were not resent since (for `STATUS=`, the log
    /// and the operator section of `policywatch feeds`).
    pub fn failed_deliveries(&self) -> Result<Vec<Delivery>> {
        self.deliveries_where("status = 'failed' AND resent_at IS NULL")
    }

    /// Deliveries held for the operator (see [`Store::mark_held`]).
    pub fn held_deliveries(&self) -> Result<Vec<Delivery>> {
        self.deliveries_where("status = 'pending' AND held = 1")
    }

    /// Every pending delivery, held or waiting for its next attempt (what `run --once`
    /// mentions from an earlier run).
    pub fn pending_deliveries(&self) -> Result<Vec<Delivery>> {
        self.deliveries_where("status = 'pending'")
    }

    fn deliveries_where(&self, cond: &str) -> Result<Vec<Delivery>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM deliveries WHERE {cond} ORDER BY id",
            Self::DELIVERY_COLS
        ))?;
        let rows = st.query_map([], Self::delivery_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A failure only the operator can fix (authentication, TLS, a size the relay never
    /// takes, a digest a reload removed): the delivery stays pending with its stories and
    /// Message-ID, is not attempted on a timer and never given up, and is released by
    /// [`Store::release_held`] after the next reload or start, or by `digest --resend`.
    pub fn mark_held(&mut self, id: i64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET held = 1, attempts = attempts + 1, last_error = ?2 \
             WHERE id = ?1 AND status = 'pending'",
            params![id, error],
        )?;
        Ok(())
    }

    /// Makes every held delivery (or only `id`) due at `now`; returns how many.
    pub fn release_held(&mut self, id: Option<i64>, now: DateTime<Utc>) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE deliveries SET held = 0, next_attempt_at = ?2 \
             WHERE status = 'pending' AND held = 1 AND (?1 IS NULL OR id = ?1)",
            params![id, ts(now)],
        )?)
    }

    /// Makes one pending delivery (held or waiting for its backoff) due at `now`
    /// (`digest --resend`); false when it is not pending.
    pub fn make_due(&mut self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE deliveries SET held = 0, next_attempt_at = ?2 \
             WHERE id = ?1 AND status = 'pending'",
            params![id, ts(now)],
        )? > 0)
    }

    /// How many stories a sent delivery showed of those it claimed (for the archive).
    pub fn record_shown(&mut self, id: i64, shown: usize, stories: usize) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET shown = ?2, stories = ?3 WHERE id = ?1",
            params![id, shown as i64, stories as i64],
        )?;
        Ok(())
    }

    /// `digest --resend` sent this delivery again: its failure stops being reported.
    pub fn mark_resent(&mut self, id: i64, now: DateTime<Utc>) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE deliveries SET resent_at = ?2 WHERE id = ?1",
            params![id, ts(now)],
        )?;
        tx.execute(
            "UPDATE delivery_recipients SET resolved_at = ?2 \
             WHERE delivery_id = ?1 AND status = 'failed'",
            params![id, ts(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    // ---------------------------------------------------------------- recipients

    fn recipient_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Recipient> {
        Ok(Recipient {
            delivery_id: r.get(0)?,
            address: r.get(1)?,
            status: r.get(2)?,
            attempts: r.get::<_, i64>(3)?.max(0) as u32,
            last_error: r.get(4)?,
            sent_at: r.get::<_, Option<i64>>(5)?.map(from_ts),
            reply: r.get(6)?,
        })
    }

    /// The recipients of a delivery, in the order they were added.
    pub fn recipients(&self, delivery_id: i64) -> Result<Vec<Recipient>> {
        let mut st = self.conn.prepare_cached(
            "SELECT delivery_id, recipient, status, attempts, last_error, sent_at, server_reply \
             FROM delivery_recipients WHERE delivery_id = ?1 ORDER BY rowid",
        )?;
        let rows = st.query_map([delivery_id], Self::recipient_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Fixes a delivery's recipients at its first attempt (the config's `to` then) and returns
    /// them all; later calls return what is stored, so a retry goes to the same people and a
    /// recipient already served is never sent to again.
    pub fn ensure_recipients(&mut self, delivery_id: i64, to: &[String]) -> Result<Vec<Recipient>> {
        let tx = self.conn.transaction()?;
        let n: i64 = tx.query_row(
            "SELECT count(*) FROM delivery_recipients WHERE delivery_id = ?1",
            [delivery_id],
            |r| r.get(0),
        )?;
        if n == 0 {
            for addr in to {
                tx.execute(
                    "INSERT OR IGNORE INTO delivery_recipients (delivery_id, recipient, status) \
                     VALUES (?1, ?2, 'pending')",
                    params![delivery_id, addr],
                )?;
            }
        }
        tx.commit()?;
        self.recipients(delivery_id)
    }

    /// Records one attempt to one recipient. A recipient already sent stays sent.
    pub fn record_recipient(
        &mut self,
        delivery_id: i64,
        address: &str,
        outcome: &RecipientOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (status, error, reply) = match outcome {
            RecipientOutcome::Sent(r) => ("sent", None, Some(r.as_str())),
            RecipientOutcome::Failed(e) => ("failed", Some(e.as_str()), None),
            RecipientOutcome::Deferred(e) => ("pending", Some(e.as_str()), None),
        };
        self.conn.execute(
            "INSERT INTO delivery_recipients (delivery_id, recipient, status, attempts, \
                last_error, sent_at, server_reply) \
             VALUES (?1, ?2, ?3, 1, ?4, CASE WHEN ?3 = 'sent' THEN ?5 END, ?6) \
             ON CONFLICT (delivery_id, recipient) DO UPDATE SET status = excluded.status, \
                attempts = attempts + 1, last_error = excluded.last_error, \
                sent_at = excluded.sent_at, server_reply = excluded.server_reply, \
                resolved_at = NULL \
             WHERE delivery_recipients.status != 'sent'",
            params![delivery_id, address, status, error, ts(now), reply],
        )?;
        Ok(())
    }

    /// Recipients failed for good whose failure nothing has made good since: no later
    /// delivery to the same address was accepted and no resend covered it. Newest first.
    pub fn recipient_problems(&self) -> Result<Vec<RecipientProblem>> {
        let mut st = self.conn.prepare(
            "SELECT r.delivery_id, d.digest_id, r.recipient, COALESCE(r.last_error, ''), \
                d.created_at \
             FROM delivery_recipients r JOIN deliveries d ON d.id = r.delivery_id \
             WHERE r.status = 'failed' AND r.resolved_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM delivery_recipients s \
                   WHERE s.recipient = r.recipient AND s.status = 'sent' \
                     AND s.delivery_id > r.delivery_id) \
             ORDER BY r.delivery_id DESC LIMIT 100",
        )?;
        let rows = st.query_map([], |r| {
            Ok(RecipientProblem {
                delivery_id: r.get(0)?,
                digest_id: r.get(1)?,
                address: r.get(2)?,
                error: r.get(3)?,
                created_at: from_ts(r.get(4)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ---------------------------------------------------------------- the archive

    /// Flagged (reportable) stories first seen since `since`, newest first, optionally of one
    /// watch and containing `search` (in the title or summary, any case), with their fate.
    pub fn archive(
        &self,
        since: DateTime<Utc>,
        watch: Option<&str>,
        search: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ArchivedStory>> {
        let pattern = search.map(|s| {
            let escaped = s
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let mut st = self.conn.prepare(
            "SELECT v.item_id, v.watch_id, v.score, i.title, i.link, f.name, i.first_seen_at, \
                COALESCE(i.cluster_id, i.id) \
             FROM verdicts v JOIN items i ON i.id = v.item_id JOIN feeds f ON f.id = i.feed_id \
             WHERE v.reportable = 1 AND i.pruned = 0 AND i.first_seen_at >= ?1 \
               AND (?2 IS NULL OR v.watch_id = ?2) \
               AND (?3 IS NULL OR i.title LIKE ?3 ESCAPE '\\' OR i.summary LIKE ?3 ESCAPE '\\') \
             ORDER BY i.first_seen_at DESC, i.id DESC, v.watch_id LIMIT ?4",
        )?;
        let rows = st.query_map(params![ts(since), watch, pattern, limit as i64], |r| {
            Ok(ArchivedStory {
                item_id: r.get(0)?,
                watch_id: r.get(1)?,
                score: r.get(2)?,
                title: r.get(3)?,
                link: r.get(4)?,
                feed_name: r.get(5)?,
                first_seen_at: from_ts(r.get(6)?),
                cluster_id: r.get(7)?,
                claims: Vec::new(),
                joined: Vec::new(),
                also_reported_by: Vec::new(),
            })
        })?;
        let mut out: Vec<ArchivedStory> = rows.collect::<rusqlite::Result<_>>()?;
        let mut claims = self.conn.prepare(&format!(
            "SELECT {} FROM deliveries WHERE id IN (SELECT delivery_id FROM delivery_items \
             WHERE item_id = ?1 AND watch_id = ?2) ORDER BY id",
            Self::DELIVERY_COLS
        ))?;
        let mut cluster = self.conn.prepare(
            "SELECT j.id, f.name, j.title, \
                (SELECT min(d.delivery_id) FROM delivery_items d WHERE d.item_id = j.id) \
             FROM items j JOIN feeds f ON f.id = j.feed_id \
             WHERE j.cluster_id = ?1 AND j.id != ?2 ORDER BY j.id LIMIT 20",
        )?;
        for s in &mut out {
            s.claims = claims
                .query_map(params![s.item_id, s.watch_id], Self::delivery_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let others = cluster.query_map(params![s.cluster_id, s.item_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })?;
            for o in others {
                let (id, feed, title, delivery) = o?;
                if !s.also_reported_by.contains(&feed) {
                    s.also_reported_by.push(feed.clone());
                }
                if let Some(d) = delivery {
                    s.joined.push((id, feed, title, d));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn read_only_open_refuses_unknown_schemas_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        assert!(
            Store::open_read_only(&db).is_err(),
            "no database yet: nothing created"
        );
        assert!(!db.exists());
        let known = MIGRATIONS.len() as i64;
        let store = Store::open(&db).unwrap();
        let ro = Store::open_read_only(&db).unwrap();
        assert_eq!(ro.schema_version().unwrap(), known);
        assert!(
            ro.conn.execute("DELETE FROM feeds", []).is_err(),
            "read-only"
        );
        for (v, older) in [(known - 1, true), (known + 1, false)] {
            store
                .conn
                .execute("UPDATE schema_version SET version = ?1", [v])
                .unwrap();
            match Store::open_read_only(&db) {
                Err(StoreError::TooOld { found, .. }) if older => assert_eq!(found, v),
                Err(StoreError::TooNew { found, .. }) if !older => assert_eq!(found, v),
                Err(e) => panic!("{v}: {e}"),
                Ok(_) => panic!("{v}: opened"),
            }
        }
    }

    /// Statement journals and sorts stay in memory on both kinds of connection: no page of a
    /// batch is written to a file in `/var/tmp`.
    #[test]
    fn temporary_storage_is_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let rw = Store::open(&db).unwrap();
        let ro = Store::open_read_only(&db).unwrap();
        for (what, s) in [("read-write", &rw), ("read-only", &ro)] {
            let mode: i64 = s
                .conn
                .query_row("PRAGMA temp_store", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, 2, "{what}: temp_store is {mode}, not MEMORY");
        }
    }

    #[test]
    fn the_state_lock_is_exclusive_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_state(dir.path()).unwrap();
        let pid = std::fs::read_to_string(lock_path(dir.path())).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to an open file: a second open, even in this process, is refused.
        match lock_state(dir.path()) {
            Err(e @ LockError::Held { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("PID {}", std::process::id())),
                    "{msg}"
                );
                assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        lock_state(dir.path()).expect("free again once dropped");
    }
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

    /// The rows of a two-column query.
    fn rows2<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
        s: &Store,
        sql: &str,
    ) -> Vec<(A, B)> {
        s.conn
            .prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
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
    fn a_failed_or_panicking_write_rolls_back_and_the_next_one_commits() {
        let mut s = store();
        let count = |s: &Store| -> i64 {
            s.conn
                .query_row("SELECT count(*) FROM feeds", [], |r| r.get(0))
                .unwrap()
        };
        let add = |c: &Connection, url: &str| {
            c.execute("INSERT INTO feeds (url, name) VALUES (?1, 'x')", [url])
                .map(|_| ())
                .map_err(StoreError::from)
        };
        let failed = s.write(|c| {
            add(c, "https://a.example/feed")?;
            Err::<(), _>(StoreError::UnknownFeed("stop".into()))
        });
        assert!(failed.is_err());
        assert_eq!(count(&s), 1, "the failed write left a row");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<()> = s.write(|c| {
                add(c, "https://b.example/feed")?;
                panic!("mid-write")
            });
        }));
        assert!(panicked.is_err());
        assert!(s.conn.is_autocommit(), "a transaction was left open");
        assert_eq!(count(&s), 1, "the panicking write left a row");
        s.write(|c| add(c, "https://c.example/feed")).unwrap();
        assert_eq!(count(&s), 2);
    }

    #[test]
    fn a_batch_is_stored_whole_or_not_at_all_and_a_failed_write_inside_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let mut s = Store::open(&db).unwrap();
        s.sync_feeds([(FEED, "Example")]).unwrap();
        let ok = PollSuccess {
            etag: Some("\"v2\"".into()),
            last_modified: None,
            next_poll_at: Utc::now(),
            moved_to: None,
        };
        let stored_elsewhere = |db: &Path| -> (i64, Option<String>) {
            let other = Connection::open(db).unwrap();
            let n = other
                .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
                .unwrap();
            let etag = other
                .query_row("SELECT etag FROM feeds", [], |r| r.get(0))
                .unwrap();
            (n, etag)
        };

        let one = |s: &mut Store, guid: &str, title: &str| {
            insert(s, vec![item(Some(guid), None, title)], Utc::now(), "w")
        };

        // Rolled back: neither the items nor the validators are stored.
        s.begin_batch().unwrap();
        one(&mut s, "a", "first");
        s.record_poll_success(FEED, Utc::now(), &ok).unwrap();
        assert_eq!(
            stored_elsewhere(&db),
            (0, None),
            "visible before the commit"
        );
        s.rollback_batch();
        assert!(s.conn.is_autocommit());
        assert_eq!(stored_elsewhere(&db), (0, None));
        assert_eq!(s.item_count().unwrap(), 0);

        // Committed: everything, including what came after a write that failed, and none of
        // the failed write itself.
        s.begin_batch().unwrap();
        one(&mut s, "a", "first");
        let failed = s.write(|c| {
            c.execute("DELETE FROM items", [])?;
            Err::<(), _>(StoreError::UnknownFeed("stop".into()))
        });
        assert!(failed.is_err());
        assert!(!s.conn.is_autocommit(), "the failed write ended the batch");
        one(&mut s, "b", "second");
        s.record_poll_success(FEED, Utc::now(), &ok).unwrap();
        s.commit_batch().unwrap();
        assert_eq!(stored_elsewhere(&db), (2, Some("\"v2\"".into())));

        // Outside a batch, writes commit one by one again.
        one(&mut s, "c", "third");
        assert_eq!(stored_elsewhere(&db).0, 3);
    }

    #[test]
    fn insert_stores_the_assigned_cluster_and_skips_a_stored_item_without_assigning_it() {
        let mut s = store();
        let now = Utc::now();
        let first = NewItem::plain(item(Some("a"), None, "first"), vec![verdict("w")]);
        let second = NewItem::plain(item(Some("b"), None, "second"), vec![verdict("w")]);
        let asked = std::cell::RefCell::new(Vec::new());
        let mut assign = |id: i64, _: &NewItem, _: Option<i64>| {
            let mut asked = asked.borrow_mut();
            asked.push(id);
            // The second item joins the first one's story.
            asked[0]
        };
        let r = s
            .insert_items(FEED, &[first.clone(), second], now, None, &mut assign)
            .unwrap();
        assert_eq!(
            r.inserted,
            *asked.borrow(),
            "each item is assigned under the id it is stored with"
        );
        // Already stored (no `filter_new` before): skipped, and its cluster not asked for.
        let again = s
            .insert_items(FEED, &[first], now, None, &mut assign)
            .unwrap();
        assert!(again.inserted.is_empty());
        let asked = asked.into_inner();
        assert_eq!(asked.len(), 2);
        let clusters: Vec<(i64, i64)> = rows2(&s, "SELECT id, cluster_id FROM items ORDER BY id");
        assert_eq!(clusters, vec![(asked[0], asked[0]), (asked[1], asked[0])]);
    }

    #[test]
    fn cluster_rows_are_lent_in_id_order_from_a_time_on_and_counted() {
        let mut s = store();
        let now = Utc::now();
        let with = |guid: &str, url: Option<&str>, sig: &[u8]| NewItem {
            canonical_url: url.map(str::to_string),
            signature: (!sig.is_empty()).then(|| sig.to_vec()),
            verdicts: Vec::new(),
            item: item(Some(guid), None, guid),
        };
        let old = [with("old", None, &[1; 41])];
        s.insert_items(
            FEED,
            &old,
            now - Duration::days(2),
            None,
            &mut |id, _, _| id,
        )
        .unwrap();
        let recent = [
            with("a", Some("https://x.test/a"), &[2; 37]),
            with("unsigned", None, &[]),
            with("b", None, &[3; 45]),
        ];
        let ids = s
            .insert_items(FEED, &recent, now, None, &mut |id, _, _| id)
            .unwrap()
            .inserted;
        let since = now - Duration::days(1);
        let mut seen = Vec::new();
        s.each_cluster_row(since, &mut |r| {
            seen.push((r.id, r.canonical_url.map(str::to_string), r.signature.len()))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (ids[0], Some("https://x.test/a".to_string()), 37),
                (ids[2], None, 45)
            ]
        );
        assert_eq!(
            s.items_seen_since(since).unwrap(),
            3,
            "the unsigned one too"
        );
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
    fn recipients_held_deliveries_and_what_counts_as_resolved() {
        let mut s = store();
        let t0 = Utc::now() - Duration::minutes(5);
        s.digest_state("daily", t0).unwrap();
        let claim = |s: &mut Store, guid: &str, at| {
            insert(s, vec![item(Some(guid), None, guid)], at, "w");
            s.claim("daily", Kind::Digest, "email", &["w".into()], at, false)
                .unwrap()
                .unwrap()
        };
        let d1 = claim(&mut s, "a", t0);
        let to = vec!["good@x.test".to_string(), "bad@x.test".to_string()];
        assert_eq!(s.ensure_recipients(d1.id, &to).unwrap().len(), 2);
        // Fixed at the first attempt: a changed `to` does not change who a retry goes to.
        let later = vec!["other@x.test".to_string()];
        assert_eq!(s.ensure_recipients(d1.id, &later).unwrap().len(), 2);
        let sent = RecipientOutcome::Sent("250 ok".into());
        let refused = RecipientOutcome::Failed("550 no such user".into());
        s.record_recipient(d1.id, "good@x.test", &sent, t0).unwrap();
        s.record_recipient(d1.id, "bad@x.test", &refused, t0)
            .unwrap();
        // A served recipient stays served whatever comes later.
        let late = RecipientOutcome::Failed("late".into());
        s.record_recipient(d1.id, "good@x.test", &late, t0).unwrap();
        let r = s.recipients(d1.id).unwrap();
        assert_eq!(
            (r[0].status.as_str(), r[1].status.as_str()),
            ("sent", "failed")
        );
        let problems = s.recipient_problems().unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].address, "bad@x.test");

        // A later delivery that reaches the address resolves it.
        let d2 = claim(&mut s, "b", t0 + Duration::minutes(1));
        s.record_recipient(d2.id, "bad@x.test", &sent, t0).unwrap();
        assert!(s.recipient_problems().unwrap().is_empty());

        // Held: pending, not due on a timer, released by a reload.
        let d3 = claim(&mut s, "c", t0 + Duration::minutes(2));
        s.mark_held(d3.id, "535 authentication failed").unwrap();
        let far = Utc::now() + Duration::days(30);
        assert!(s.due_deliveries(far).unwrap().iter().all(|d| d.id != d3.id));
        assert_eq!(s.held_deliveries().unwrap().len(), 1);
        assert_eq!(s.release_held(None, Utc::now()).unwrap(), 1);
        assert!(s
            .due_deliveries(Utc::now())
            .unwrap()
            .iter()
            .any(|d| d.id == d3.id));
        assert!(s.held_deliveries().unwrap().is_empty());

        // A resend resolves a failed delivery and its refused recipients.
        s.mark_failed(d3.id, "every recipient failed").unwrap();
        s.ensure_recipients(d3.id, &["gone@x.test".to_string()])
            .unwrap();
        s.record_recipient(d3.id, "gone@x.test", &refused, t0)
            .unwrap();
        assert_eq!(s.failed_deliveries().unwrap().len(), 1);
        assert_eq!(s.recipient_problems().unwrap().len(), 1);
        s.mark_resent(d3.id, Utc::now()).unwrap();
        assert!(s.failed_deliveries().unwrap().is_empty());
        assert!(s.recipient_problems().unwrap().is_empty());

        // Retention removes finished deliveries with their recipients (foreign keys hold).
        s.mark_sent(d1.id, t0, "250 ok").unwrap();
        s.prune(t0, Utc::now() + Duration::days(1), t0).unwrap();
        assert!(s.recipients(d1.id).unwrap().is_empty());
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
    fn syncing_feeds_adds_and_renames_and_writes_nothing_when_nothing_changed() {
        let mut s = Store::open_in_memory().unwrap();
        let names = |s: &Store| -> Vec<(String, String)> {
            rows2(s, "SELECT url, name FROM feeds ORDER BY url")
        };
        s.sync_feeds([("https://a.test/f", "A"), ("https://b.test/f", "B")])
            .unwrap();
        let before = s.conn.total_changes();
        s.sync_feeds([("https://a.test/f", "A"), ("https://b.test/f", "B")])
            .unwrap();
        assert_eq!(
            s.conn.total_changes(),
            before,
            "an unchanged config wrote rows"
        );
        s.sync_feeds([("https://a.test/f", "A"), ("https://b.test/f", "Bee")])
            .unwrap();
        assert_eq!(s.conn.total_changes(), before + 1);
        assert_eq!(
            names(&s),
            [
                ("https://a.test/f".to_string(), "A".to_string()),
                ("https://b.test/f".to_string(), "Bee".to_string())
            ]
        );
    }

    #[test]
    fn failing_feeds_are_those_failing_in_a_row_or_gone() {
        let mut s = store();
        let (b, c) = ("https://b.test/f", "https://c.test/f");
        s.sync_feeds([(FEED, "Example"), (b, "B"), (c, "C")])
            .unwrap();
        assert!(s.failing_feed_urls().unwrap().is_empty());
        let now = Utc::now();
        s.record_poll_failure(FEED, now, "503", now, None).unwrap();
        s.record_gone(c, now).unwrap();
        let mut failing = s.failing_feed_urls().unwrap();
        failing.sort();
        assert_eq!(failing, [c, FEED]);
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
    fn a_version_5_database_gets_the_covering_verdict_index_and_claims_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 28, 8, 0, 0)
            .single()
            .unwrap();
        let index_cols = |s: &Store| -> Vec<String> {
            s.conn
                .prepare("SELECT name FROM pragma_index_info('verdicts_watch') ORDER BY seqno")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        {
            // A database as version 5 left it: the old index, stories waiting for a digest.
            let mut s = Store::open(&path).unwrap();
            s.sync_feeds([(FEED, "Example")]).unwrap();
            s.digest_state("daily", t0).unwrap();
            let items = (0..3)
                .map(|i| item(Some(&format!("g{i}")), None, &format!("story {i}")))
                .collect();
            insert(&mut s, items, t0 + Duration::seconds(1), "w");
            s.conn
                .execute_batch(
                    "DROP INDEX verdicts_watch; \
                     CREATE INDEX verdicts_watch ON verdicts(watch_id, classified_at); \
                     UPDATE schema_version SET version = 5;",
                )
                .unwrap();
            assert_eq!(index_cols(&s), ["watch_id", "classified_at"]);
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(
            index_cols(&s),
            [
                "watch_id",
                "classified_at",
                "reportable",
                "item_id",
                "score"
            ]
        );
        let d = s
            .claim(
                "daily",
                Kind::Digest,
                "log",
                &["w".into()],
                t0 + Duration::minutes(1),
                false,
            )
            .unwrap()
            .expect("the waiting stories");
        assert_eq!(s.delivery_stories(d.id).unwrap().len(), 3);
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

    #[test]
    fn a_delivery_s_stories_come_best_score_first_then_newest_then_oldest_id() {
        let mut s = store();
        let t0 = Utc::now() - Duration::minutes(5);
        s.digest_state("daily", t0).unwrap();
        let at = |h: i64| Some(t0 - Duration::hours(h));
        // (guid, score, published)
        let rows = [
            ("undated", 2.0, None),
            ("low", 1.0, at(1)),
            ("old", 2.0, at(5)),
            ("new", 2.0, at(1)),
            ("twin", 2.0, at(1)),
            ("best", 3.0, at(9)),
        ];
        let new: Vec<NewItem> = rows
            .iter()
            .map(|&(g, score, published)| {
                let mut it = item(Some(g), None, g);
                it.published = published;
                let mut v = verdict("w");
                v.score = score;
                NewItem::plain(it, vec![v])
            })
            .collect();
        s.insert_items(FEED, &new, t0, None, &mut |id, _, _| id)
            .unwrap();
        let d = s
            .claim("daily", Kind::Digest, "email", &["w".into()], t0, false)
            .unwrap()
            .unwrap();
        let order: Vec<String> = s
            .delivery_stories(d.id)
            .unwrap()
            .into_iter()
            .map(|m| m.item.guid.unwrap())
            .collect();
        assert_eq!(order, ["best", "new", "twin", "old", "undated", "low"]);
    }

    #[test]
    fn releasing_a_story_hands_back_every_item_and_watch_of_its_cluster() {
        let mut s = store();
        let t0 = Utc::now() - Duration::minutes(5);
        s.digest_state("daily", t0).unwrap();
        let both = || vec![verdict("w"), verdict("v")];
        let new = [
            NewItem::plain(item(Some("lead"), None, "lead"), both()),
            NewItem::plain(item(Some("rewrite"), None, "rewrite"), vec![verdict("w")]),
            NewItem::plain(item(Some("other"), None, "other"), both()),
        ];
        let mut first = None;
        let ids = s
            .insert_items(FEED, &new, t0, None, &mut |id, n, _| {
                // The rewrite joins the lead's story.
                let lead = *first.get_or_insert(id);
                if n.item.guid.as_deref() == Some("rewrite") {
                    lead
                } else {
                    id
                }
            })
            .unwrap()
            .inserted;
        let watches = ["w".to_string(), "v".to_string()];
        let d = s
            .claim("daily", Kind::Digest, "email", &watches, t0, false)
            .unwrap()
            .unwrap();
        let claimed = |s: &Store| -> Vec<(i64, String)> {
            rows2(
                s,
                "SELECT item_id, watch_id FROM delivery_items ORDER BY item_id, watch_id",
            )
        };
        assert_eq!(claimed(&s).len(), 5);
        // The lead's story: three claims, one story handed back. The same again: nothing left.
        assert_eq!(s.release(d.id, &[ids[0]]).unwrap(), 1);
        assert_eq!(s.release(d.id, &[ids[0]]).unwrap(), 0);
        assert_eq!(
            claimed(&s),
            vec![(ids[2], "v".to_string()), (ids[2], "w".to_string())]
        );
        assert_eq!(s.delivery(d.id).unwrap().deferred, 1);
    }

    #[test]
    fn released_stories_survive_a_reopen_and_go_to_the_next_claim_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let t0 = Utc::now() - Duration::minutes(5);
        let mut s = Store::open(&path).unwrap();
        s.sync_feeds([(FEED, "Example")]).unwrap();
        s.digest_state("daily", t0).unwrap();
        let r = insert(
            &mut s,
            (0..5)
                .map(|i| item(Some(&format!("g{i}")), None, &format!("story {i}")))
                .collect(),
            t0,
            "w",
        );
        let ids = r.inserted.clone();
        let d = s
            .claim("daily", Kind::Digest, "email", &["w".into()], t0, false)
            .unwrap()
            .unwrap();
        // Stories 3 and 4 did not fit; 99 is no cluster of this delivery.
        assert_eq!(s.release(d.id, &[ids[3], ids[4], 99]).unwrap(), 2);
        drop(s);
        // A crash now: the pending delivery keeps three stories and knows two went back.
        let mut s = Store::open(&path).unwrap();
        let again = s.delivery(d.id).unwrap();
        assert_eq!((again.status.as_str(), again.deferred), ("pending", 2));
        let kept: Vec<i64> = s
            .delivery_stories(d.id)
            .unwrap()
            .iter()
            .map(|m| m.item_id)
            .collect();
        assert_eq!(kept.len(), 3);
        assert!(!kept.contains(&ids[3]) && !kept.contains(&ids[4]));
        // The next digest takes exactly what was handed back, and nothing twice.
        let next = s
            .claim(
                "daily",
                Kind::Digest,
                "email",
                &["w".into()],
                t0 + Duration::minutes(1),
                false,
            )
            .unwrap()
            .unwrap();
        let mut got: Vec<i64> = s
            .delivery_stories(next.id)
            .unwrap()
            .iter()
            .map(|m| m.item_id)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![ids[3], ids[4]]);
        assert!(s
            .claim(
                "daily",
                Kind::Digest,
                "email",
                &["w".into()],
                t0 + Duration::minutes(2),
                false
            )
            .unwrap()
            .is_none());
    }
}
