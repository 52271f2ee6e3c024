//! Fetching feed bytes from a URL, politely and within hard limits.
//!
//! In: a [`FetchRequest`] (URL plus the validators remembered from the last fetch).
//! Out: a [`FetchOutcome`]: the body and its metadata, "not modified", "gone", or a typed
//! [`FetchError`] with the server's `Retry-After`. Parsing is `feed`'s job; deciding when to
//! poll again is `retry`'s job; this module only talks HTTP (and reads `file://`).
//!
//! # Limits (all from [`HttpConfig`], section `[http]` of the config)
//! - **Time**: connect timeout (reqwest), first-byte timeout (until response headers), and a
//!   total timeout over the whole exchange including every redirect hop and the body, so a
//!   server that drips one byte a second is cut.
//! - **Size**: the body is read as a stream and counted *after* transparent decompression
//!   (reqwest's gzip/brotli/deflate), aborting as soon as the count passes `max_body_bytes`.
//!   A gzip bomb therefore costs at most the cap in memory. `file://` goes through the same cap.
//! - **Concurrency**: a global semaphore caps requests in flight; a per-host limiter caps
//!   requests in flight to one host *and* spaces request starts to one host by `per_host_gap`.
//!   Both are taken per redirect hop (see [`Fetcher::fetch`] for why).
//!
//! # Redirects
//! Followed by hand (reqwest's policy is off) so that a chain of permanent redirects (301/308)
//! from the configured URL can be reported in `moved_permanently` for the caller to remember,
//! while temporary ones (302/303/307) are followed and forgotten. Loops and chains longer than
//! `max_redirects` are cut with an error. Redirects may only lead to http(s): a feed must not be
//! able to make us read `file:///etc/passwd`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::retry::{self, FailureClass, TransportFailure};

/// The `User-Agent` we send unless configured otherwise: names us, our version and where to
/// read about us, so a site operator who sees us in their logs can find out who polls them.
pub const DEFAULT_USER_AGENT: &str = concat!(
    "policywatch/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/policywatch/policywatch)"
);

/// The `Accept` header: feed types first, generic XML/JSON next, anything last (we still
/// parse what comes, and recognise an HTML page to find its feed link).
pub const ACCEPT: &str = "application/rss+xml, application/atom+xml, application/feed+json, \
     application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, \
     */*;q=0.5";

/// Largest accepted `max_concurrent` / `per_host_concurrency`.
pub const MAX_CONCURRENCY: usize = 1024;

/// Configuration of the HTTP client: TOML section `[http]`. Durations are humantime strings
/// (`"10s"`, `"1m 30s"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time to establish the TCP (+TLS) connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time from sending the request to receiving the response headers.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Time for the whole fetch, all redirect hops and the full body included.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// Cap on the *decompressed* body size in bytes.
    pub max_body_bytes: u64,
    /// Global cap on requests in flight.
    pub max_concurrent: usize,
    /// Cap on requests in flight to one host.
    pub per_host_concurrency: usize,
    /// Minimum time between the starts of two requests to one host.
    #[serde(with = "humantime_serde")]
    pub per_host_gap: Duration,
    /// Redirect hops followed before giving up.
    pub max_redirects: usize,
    /// `User-Agent` header; `None` means [`DEFAULT_USER_AGENT`].
    pub user_agent: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(60),
            max_body_bytes: 8 * 1024 * 1024,
            max_concurrent: 16,
            per_host_concurrency: 1,
            per_host_gap: Duration::from_secs(1),
            max_redirects: 5,
            user_agent: None,
        }
    }
}

/// Which of the time limits was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte (response headers)",
            TimeoutPhase::Total => "total",
        })
    }
}

/// Why a fetch failed. Retryability is decided by [`crate::retry`], via [`FetchError::class`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid HTTP configuration: {0}")]
    Config(String),
    #[error("unsupported URL scheme {0:?} (only http, https and file are fetched)")]
    UnsupportedScheme(String),
    #[error("HTTP status {status}")]
    Status { status: u16 },
    #[error("{phase} timeout after {after:?}")]
    Timeout {
        phase: TimeoutPhase,
        after: Duration,
    },
    #[error("network error: {0}")]
    Network(String),
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("more than {max} redirects (last: {last})")]
    TooManyRedirects { max: usize, last: Url },
    #[error("redirect loop back to {0}")]
    RedirectLoop(Url),
    #[error("bad redirect from {from}: {reason}")]
    BadRedirect { from: Url, reason: String },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// Transient (try again soon) or permanent (a human should look). The decision itself
    /// lives in [`crate::retry`]; this only maps the error onto the kinds it knows.
    pub fn class(&self) -> FailureClass {
        match self {
            FetchError::Status { status } => retry::classify_status(*status),
            FetchError::Timeout { .. } => retry::classify_transport(TransportFailure::Timeout),
            FetchError::Network(_) => retry::classify_transport(TransportFailure::Network),
            FetchError::TooLarge { .. } => retry::classify_transport(TransportFailure::TooLarge),
            FetchError::TooManyRedirects { .. }
            | FetchError::RedirectLoop(_)
            | FetchError::BadRedirect { .. } => {
                retry::classify_transport(TransportFailure::Redirect)
            }
            FetchError::Config(_) | FetchError::UnsupportedScheme(_) => {
                retry::classify_transport(TransportFailure::Config)
            }
            // A missing file may appear later (written by another job); other I/O errors on a
            // local file are configuration problems.
            FetchError::File { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::Interrupted => {
                    retry::classify_transport(TransportFailure::Network)
                }
                _ => retry::classify_transport(TransportFailure::Config),
            },
        }
    }

    /// Shorthand for `retry::is_retryable(self)`.
    pub fn is_transient(&self) -> bool {
        retry::is_retryable(self)
    }
}

/// What to fetch, with the validators saved from the previous successful fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub url: Url,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl FetchRequest {
    /// An unconditional request.
    pub fn new(url: Url) -> Self {
        FetchRequest {
            url,
            etag: None,
            last_modified: None,
        }
    }
}

/// The result of one fetch.
#[derive(Debug)]
pub enum FetchOutcome {
    /// A body arrived (2xx).
    Fetched {
        body: Bytes,
        content_type: Option<String>,
        /// Where the body actually came from, after redirects (the base for relative links).
        final_url: Url,
        /// Set when the configured URL redirected permanently (301/308 chain from the start):
        /// the caller should remember it and tell the user.
        moved_permanently: Option<Url>,
        etag: Option<String>,
        last_modified: Option<String>,
        /// Freshness the server asked for (`Cache-Control: max-age`, else `Expires - Date`).
        cache_hint: Option<Duration>,
    },
    /// 304: the validators matched, nothing to parse.
    NotModified {
        moved_permanently: Option<Url>,
        cache_hint: Option<Duration>,
    },
    /// 410: the feed is gone for good; stop polling it and tell the user.
    Gone,
    /// Anything else. `retry_after` is the server's `Retry-After`, if it sent one.
    Failed {
        error: FetchError,
        retry_after: Option<DateTime<Utc>>,
    },
}

/// Per-host politeness state.
struct HostSlot {
    /// Caps requests in flight to this host.
    in_flight: Arc<Semaphore>,
    /// The earliest time the next request to this host may start. Reserved (pushed forward by
    /// `gap`) under the lock *before* sleeping, so concurrent waiters queue up one gap apart
    /// instead of all waking at the same instant.
    next_start: Mutex<Instant>,
}

struct Inner {
    client: reqwest::Client,
    cfg: HttpConfig,
    /// Global cap on requests in flight.
    global: Arc<Semaphore>,
    /// One slot per host ever contacted. Grows with the number of distinct hosts in the config
    /// (and their redirect targets), which is small; never shrunk for that reason.
    hosts: Mutex<HashMap<String, Arc<HostSlot>>>,
}

/// The HTTP client with its limits. Cheap to clone (an `Arc` inside); clones share limits.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

/// Permits held while one request hop runs; dropping releases them.
struct HopPermits {
    _host: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Fetcher {
    /// Builds the client. Fails only on an unusable configuration.
    pub fn new(cfg: &HttpConfig) -> Result<Fetcher, FetchError> {
        // Upper bound: tokio's semaphore panics beyond ~2^61 permits, and no machine wants
        // more than a few thousand fetches in flight anyway.
        let limits = 1..=MAX_CONCURRENCY;
        if !limits.contains(&cfg.max_concurrent) || !limits.contains(&cfg.per_host_concurrency) {
            return Err(FetchError::Config(format!(
                "max_concurrent and per_host_concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        if cfg.max_body_bytes == 0 {
            return Err(FetchError::Config(
                "max_body_bytes must be at least 1".into(),
            ));
        }
        let ua = cfg.user_agent.as_deref().unwrap_or(DEFAULT_USER_AGENT);
        let ua = HeaderValue::from_str(ua)
            .map_err(|_| FetchError::Config(format!("user_agent {ua:?} is not a valid header")))?;
        let mut headers = HeaderMap::new();
        // Say what we can read: some servers negotiate between an HTML page and the feed.
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        let client = reqwest::Client::builder()
            .user_agent(ua)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .gzip(true)
            .brotli(true)
            .deflate(true)
            // Idle connections to feed hosts are reused across polls but not hoarded.
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| FetchError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Fetcher {
            inner: Arc::new(Inner {
                client,
                cfg: cfg.clone(),
                global: Arc::new(Semaphore::new(cfg.max_concurrent)),
                hosts: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration this fetcher was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.cfg
    }

    /// Fetches one URL, honouring every limit. Never panics on anything the server sends.
    pub async fn fetch(&self, req: &FetchRequest) -> FetchOutcome {
        match req.url.scheme() {
            "http" | "https" => {}
            "file" => return self.fetch_file(req).await,
            other => {
                return FetchOutcome::Failed {
                    error: FetchError::UnsupportedScheme(other.to_string()),
                    retry_after: None,
                }
            }
        }
        self.fetch_http(req).await
    }

    /// Waits for a slot to `host` (in-flight cap and start gap), then for a global slot.
    ///
    /// Host first, global second: a task waiting out a host's gap must not sit on a global
    /// permit meanwhile, or a handful of feeds on one slow host would starve every other host.
    /// Permits are per hop, not per fetch: holding host A's permit while waiting for host B
    /// (a redirect) could deadlock against a fetch redirecting from B to A.
    async fn acquire(&self, host: &str) -> Option<HopPermits> {
        let slot = {
            let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts
                .entry(host.to_ascii_lowercase())
                .or_insert_with(|| {
                    Arc::new(HostSlot {
                        in_flight: Arc::new(Semaphore::new(self.inner.cfg.per_host_concurrency)),
                        next_start: Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        let host_permit = slot.in_flight.clone().acquire_owned().await.ok()?;
        let start_at = {
            let mut next = slot.next_start.lock().unwrap_or_else(|p| p.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.inner.cfg.per_host_gap;
            at
        };
        tokio::time::sleep_until(start_at).await;
        let global = self.inner.global.clone().acquire_owned().await.ok()?;
        Some(HopPermits {
            _host: host_permit,
            _global: global,
        })
    }

    async fn fetch_http(&self, req: &FetchRequest) -> FetchOutcome {
        let cfg = &self.inner.cfg;
        let mut url = req.url.clone();
        let mut seen: HashSet<Url> = HashSet::new();
        seen.insert(url.clone());
        // True while every hop so far was a permanent redirect: only then has the configured
        // URL itself moved.
        let mut all_permanent = true;
        let mut moved: Option<Url> = None;
        let mut hops = 0usize;
        // The total deadline starts when the first request starts, not when we begin waiting
        // for our own politeness limits: fifty feeds queued on one host one second apart must
        // not time out for waiting their turn.
        let mut deadline: Option<Instant> = None;

        loop {
            let host = url.host_str().unwrap_or("").to_string();
            let Some(_permits) = self.acquire(&host).await else {
                return failed(FetchError::Config("fetcher limits closed".into()), None);
            };
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + cfg.total_timeout);
            let hop = match tokio::time::timeout_at(deadline, self.hop(&url, req)).await {
                Ok(hop) => hop,
                Err(_) => {
                    return failed(
                        FetchError::Timeout {
                            phase: TimeoutPhase::Total,
                            after: cfg.total_timeout,
                        },
                        None,
                    )
                }
            };
            let (status, next) = match hop {
                Hop::Done(outcome) => {
                    return match outcome {
                        FetchOutcome::Fetched {
                            body,
                            content_type,
                            etag,
                            last_modified,
                            cache_hint,
                            ..
                        } => FetchOutcome::Fetched {
                            body,
                            content_type,
                            final_url: url,
                            moved_permanently: moved,
                            etag,
                            last_modified,
                            cache_hint,
                        },
                        FetchOutcome::NotModified { cache_hint, .. } => FetchOutcome::NotModified {
                            moved_permanently: moved,
                            cache_hint,
                        },
                        other => other,
                    }
                }
                Hop::Redirect { status, to } => (status, to),
            };
            let next = match next {
                Ok(next) => next,
                Err(reason) => {
                    return failed(
                        FetchError::BadRedirect {
                            from: url.clone(),
                            reason,
                        },
                        None,
                    )
                }
            };
            hops += 1;
            if hops > cfg.max_redirects {
                return failed(
                    FetchError::TooManyRedirects {
                        max: cfg.max_redirects,
                        last: next,
                    },
                    None,
                );
            }
            if !seen.insert(next.clone()) {
                return failed(FetchError::RedirectLoop(next), None);
            }
            if matches!(status, 301 | 308) && all_permanent {
                moved = Some(next.clone());
            } else {
                all_permanent = false;
            }
            tracing::debug!(from = %crate::logging::untrusted(url.as_str()),
                to = %crate::logging::untrusted(next.as_str()), status, "redirect");
            url = next;
        }
    }

    /// One request/response exchange, body included. `final_url`/`moved_permanently` of the
    /// outcome are filled in by the caller, which knows the redirect chain.
    async fn hop(&self, url: &Url, req: &FetchRequest) -> Hop {
        let cfg = &self.inner.cfg;
        let mut rb = self.inner.client.get(url.clone());
        // Validators go on every hop: after a redirect they were saved from the final URL.
        if let Some(etag) = req.etag.as_deref() {
            rb = rb.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = req.last_modified.as_deref() {
            rb = rb.header(header::IF_MODIFIED_SINCE, lm);
        }
        let resp = match tokio::time::timeout(cfg.first_byte_timeout, rb.send()).await {
            Err(_) => {
                return Hop::Done(failed(
                    FetchError::Timeout {
                        phase: TimeoutPhase::FirstByte,
                        after: cfg.first_byte_timeout,
                    },
                    None,
                ))
            }
            Ok(Err(e)) => return Hop::Done(failed(map_reqwest_error(&e, cfg), None)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let headers = resp.headers().clone();

        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            return Hop::Redirect {
                status: status.as_u16(),
                to: redirect_target(url, &headers),
            };
        }
        let cache_hint = cache_hint(&headers, Utc::now());
        if status == StatusCode::NOT_MODIFIED {
            return Hop::Done(FetchOutcome::NotModified {
                moved_permanently: None,
                cache_hint,
            });
        }
        if status == StatusCode::GONE {
            return Hop::Done(FetchOutcome::Gone);
        }
        if !status.is_success() {
            let retry_after = retry_after(&headers, Utc::now());
            return Hop::Done(failed(
                FetchError::Status {
                    status: status.as_u16(),
                },
                retry_after,
            ));
        }
        let body = match read_capped(resp, cfg.max_body_bytes, cfg).await {
            Ok(b) => b,
            Err(e) => return Hop::Done(failed(e, None)),
        };
        Hop::Done(FetchOutcome::Fetched {
            body,
            content_type: header_str(&headers, header::CONTENT_TYPE),
            final_url: url.clone(),
            moved_permanently: None,
            etag: header_str(&headers, header::ETAG),
            last_modified: header_str(&headers, header::LAST_MODIFIED),
            cache_hint,
        })
    }

    /// `file://`: same size cap; conditional polls of a local file work like HTTP ones, with
    /// the file's size and nanosecond mtime as its entity tag (a file rewritten within one
    /// second, as generators do, is a change; whole-second `Last-Modified` alone missed it).
    /// `Last-Modified` still carries the mtime, for display.
    async fn fetch_file(&self, req: &FetchRequest) -> FetchOutcome {
        let Ok(path) = req.url.to_file_path() else {
            return failed(
                FetchError::Config(format!("{} is not a local file path", req.url)),
                None,
            );
        };
        let file_err = |source: std::io::Error| FetchError::File {
            path: path.display().to_string(),
            source,
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => return failed(file_err(e), None),
        };
        let (mtime, tag) = match file.metadata().await {
            Ok(m) => {
                let modified = m.modified().ok();
                let tag = modified
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| {
                        format!(
                            "\"file-{}-{}.{:09}\"",
                            m.len(),
                            d.as_secs(),
                            d.subsec_nanos()
                        )
                    });
                (modified.map(httpdate::fmt_http_date), tag)
            }
            Err(e) => return failed(file_err(e), None),
        };
        if let (Some(have), Some(now)) = (req.etag.as_deref(), tag.as_deref()) {
            if have == now {
                return FetchOutcome::NotModified {
                    moved_permanently: None,
                    cache_hint: None,
                };
            }
        }
        let cap = self.inner.cfg.max_body_bytes;
        let mut buf = Vec::new();
        // Read one byte past the cap to tell "exactly the cap" from "over it".
        if let Err(e) = file.take(cap.saturating_add(1)).read_to_end(&mut buf).await {
            return failed(file_err(e), None);
        }
        if buf.len() as u64 > cap {
            return failed(FetchError::TooLarge { limit: cap }, None);
        }
        FetchOutcome::Fetched {
            body: Bytes::from(buf),
            content_type: None,
            final_url: req.url.clone(),
            moved_permanently: None,
            etag: tag,
            last_modified: mtime,
            cache_hint: None,
        }
    }
}

/// What one hop ended in. Short-lived, so the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
enum Hop {
    Done(FetchOutcome),
    Redirect {
        status: u16,
        to: Result<Url, String>,
    },
}

fn failed(error: FetchError, retry_after: Option<DateTime<Utc>>) -> FetchOutcome {
    FetchOutcome::Failed { error, retry_after }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn map_reqwest_error(e: &reqwest::Error, cfg: &HttpConfig) -> FetchError {
    if e.is_connect() && e.is_timeout() {
        return FetchError::Timeout {
            phase: TimeoutPhase::Connect,
            after: cfg.connect_timeout,
        };
    }
    if e.is_timeout() {
        return FetchError::Timeout {
            phase: TimeoutPhase::Total,
            after: cfg.total_timeout,
        };
    }
    // `{:#}`-style chain: reqwest's top-level message alone ("error sending request") hides
    // the useful cause (connection refused, certificate, ...).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FetchError::Network(msg)
}

/// Resolves `Location` against the current URL and refuses anything but http(s).
fn redirect_target(from: &Url, headers: &HeaderMap) -> Result<Url, String> {
    let loc = headers
        .get(header::LOCATION)
        .ok_or_else(|| "redirect without a Location header".to_string())?;
    let loc = loc
        .to_str()
        .map_err(|_| "Location header is not ASCII".to_string())?;
    let next = from
        .join(loc.trim())
        .map_err(|e| format!("invalid Location {loc:?}: {e}"))?;
    match next.scheme() {
        "http" | "https" => Ok(next),
        s => Err(format!("redirect to a {s}: URL refused")),
    }
}

/// Streams the body, counting decompressed bytes, and stops as soon as the cap is passed.
async fn read_capped(
    resp: reqwest::Response,
    cap: u64,
    cfg: &HttpConfig,
) -> Result<Bytes, FetchError> {
    // An honest Content-Length over the cap (and no compression that makes it meaningless)
    // lets us refuse without reading a byte.
    let encoded = resp.headers().contains_key(header::CONTENT_ENCODING);
    if let (false, Some(len)) = (encoded, resp.content_length()) {
        if len > cap {
            return Err(FetchError::TooLarge { limit: cap });
        }
    }
    let cap_usize = usize::try_from(cap).unwrap_or(usize::MAX);
    let initial = usize::try_from(resp.content_length().unwrap_or(0))
        .unwrap_or(0)
        .min(cap_usize)
        .min(1 << 20);
    let mut buf: Vec<u8> = Vec::with_capacity(initial);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| map_reqwest_error(&e, cfg))?;
        let need = buf.len().saturating_add(chunk.len());
        if need > cap_usize {
            return Err(FetchError::TooLarge { limit: cap });
        }
        if need > buf.capacity() {
            // Geometric growth, but never past the cap: the plain doubling of `Vec` would
            // reserve up to twice the cap for a body just under it.
            let target = buf.capacity().saturating_mul(2).max(need).min(cap_usize);
            buf.reserve_exact(target - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// `Retry-After` as seconds or an HTTP-date, resolved against `now`. Garbage is ignored.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        // Clamp absurd values before converting: chrono panics on out-of-range durations.
        let secs = secs.min(10 * 365 * 24 * 3600) as i64;
        return now.checked_add_signed(chrono::Duration::seconds(secs));
    }
    let t = httpdate::parse_http_date(v).ok()?;
    Some(DateTime::<Utc>::from(t))
}

/// Freshness from `Cache-Control: max-age` (minus `Age`), else `Expires` minus `Date` (or
/// `now` when the server sent no usable `Date`). `no-store`/`no-cache` mean no hint.
pub fn cache_hint(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let mut max_age: Option<u64> = None;
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for directive in v.split(',') {
            let d = directive.trim().to_ascii_lowercase();
            if d == "no-store" || d == "no-cache" {
                return None;
            }
            if let Some(n) = d.strip_prefix("max-age=") {
                max_age = n.trim_matches('"').parse().ok();
            }
        }
    }
    if let Some(max_age) = max_age {
        let age: u64 = header_str(headers, header::AGE)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        return Some(Duration::from_secs(max_age.saturating_sub(age)));
    }
    let expires = header_str(headers, header::EXPIRES)?;
    // "Expires: 0" and other invalid dates mean "already expired".
    let expires = httpdate::parse_http_date(&expires).ok()?;
    let date = header_str(headers, header::DATE)
        .and_then(|d| httpdate::parse_http_date(&d).ok())
        .unwrap_or_else(|| now.into());
    expires.duration_since(date).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(
            retry_after(&headers(&[("retry-after", "120")]), now),
            Some(at("2026-01-01T00:02:00Z"))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Thu, 01 Jan 2026 03:00:00 GMT")]),
                now
            ),
            Some(at("2026-01-01T03:00:00Z"))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-5")]), now), None);
        // Absurd numbers saturate instead of panicking in chrono.
        assert!(retry_after(&headers(&[("retry-after", "99999999999999999")]), now).is_some());
    }

    #[test]
    fn cache_hint_prefers_max_age_and_honours_no_cache() {
        let now = at("2026-01-01T00:00:00Z");
        let h = headers(&[("cache-control", "public, max-age=900"), ("age", "100")]);
        assert_eq!(cache_hint(&h, now), Some(Duration::from_secs(800)));
        let h = headers(&[
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ("expires", "Thu, 01 Jan 2026 01:00:00 GMT"),
        ]);
        assert_eq!(cache_hint(&h, now), Some(Duration::from_secs(3600)));
        let h = headers(&[("cache-control", "no-cache, max-age=900")]);
        assert_eq!(cache_hint(&h, now), None);
        let h = headers(&[("expires", "0")]);
        assert_eq!(cache_hint(&h, now), None);
    }

    #[test]
    fn redirects_only_to_http() {
        let from = Url::parse("http://a.test/feed").unwrap();
        let h = headers(&[("location", "/new")]);
        assert_eq!(
            redirect_target(&from, &h).unwrap().as_str(),
            "http://a.test/new"
        );
        let h = headers(&[("location", "file:///etc/passwd")]);
        assert!(redirect_target(&from, &h).is_err());
        assert!(redirect_target(&from, &HeaderMap::new()).is_err());
    }

    #[test]
    fn config_parses_humantime_and_rejects_unknown_keys() {
        let cfg: HttpConfig =
            toml::from_str("connect_timeout = \"3s\"\nmax_redirects = 2").unwrap();
        assert_eq!(cfg.connect_timeout, Duration::from_secs(3));
        assert_eq!(cfg.max_redirects, 2);
        assert_eq!(cfg.total_timeout, HttpConfig::default().total_timeout);
        assert!(toml::from_str::<HttpConfig>("conect_timeout = \"3s\"").is_err());
    }

    /// The per-host gap in virtual time: no I/O, so a paused clock is exact.
    #[tokio::test(start_paused = true)]
    async fn per_host_gap_spaces_starts_and_hosts_are_independent() {
        let cfg = HttpConfig {
            per_host_gap: Duration::from_secs(30),
            per_host_concurrency: 4,
            ..HttpConfig::default()
        };
        let f = Fetcher::new(&cfg).unwrap();
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..3 {
            let p = f.acquire("feeds.test").await.unwrap();
            starts.push(t0.elapsed().as_secs());
            drop(p);
        }
        assert_eq!(starts, vec![0, 30, 60]);
        // Another host is not held up by the first one's gap; host names are case-folded.
        let before = t0.elapsed();
        let _p = f.acquire("other.test").await.unwrap();
        assert_eq!(t0.elapsed(), before);
        let _q = f.acquire("FEEDS.test").await.unwrap();
        assert_eq!(t0.elapsed().as_secs(), 90);
    }

    #[tokio::test(start_paused = true)]
    async fn per_host_concurrency_blocks_until_a_permit_is_released() {
        let cfg = HttpConfig {
            per_host_gap: Duration::ZERO,
            per_host_concurrency: 1,
            ..HttpConfig::default()
        };
        let f = Fetcher::new(&cfg).unwrap();
        let held = f.acquire("h.test").await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), f.acquire("h.test")).await;
        assert!(second.is_err(), "second request to the host must wait");
        drop(held);
        assert!(f.acquire("h.test").await.is_some());
    }

    #[test]
    fn zero_limits_are_rejected() {
        let cfg = HttpConfig {
            max_concurrent: 0,
            ..HttpConfig::default()
        };
        assert!(matches!(Fetcher::new(&cfg), Err(FetchError::Config(_))));
        let cfg = HttpConfig {
            per_host_concurrency: usize::MAX,
            ..HttpConfig::default()
        };
        assert!(matches!(Fetcher::new(&cfg), Err(FetchError::Config(_))));
    }

    #[test]
    fn user_agent_names_us() {
        assert!(DEFAULT_USER_AGENT.starts_with("policywatch/"));
        assert!(DEFAULT_USER_AGENT.contains("https://github.com/policywatch/policywatch"));
    }
}
