//! All retry policy lives here: what counts as retryable, and how long to wait before trying
//! again. Fetching (per feed), mail and webhook delivery (per outbox entry) and store writes
//! refused for lack of space all ask this module; none decides on its own.
//!
//! In: an attempt count, a failure class, server hints. Out: a [`Duration`] to wait.
//! Pure: no I/O, no clock; the caller passes randomness in so tests are deterministic.

use std::time::Duration;

/// Exponential backoff with full jitter in the upper half, capped.
///
/// `failures` is the number of consecutive failures so far (1 after the first). The delay is
/// `base * 2^(failures-1)`, capped at `cap`, then scaled by a factor in `[0.5, 1.0]` drawn from
/// `jitter01` (a value in `[0, 1)`), so many feeds failing together do not retry in lockstep.
pub fn backoff(failures: u32, base: Duration, cap: Duration, jitter01: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp);
    let capped = raw.min(cap);
    let factor = 0.5 + 0.5 * jitter01.clamp(0.0, 1.0);
    capped.mul_f64(factor)
}

// ---------------------------------------------------------------------------------------------
// Feed polling: when to poll a feed next, and which fetch failures are worth retrying.
//
// Everything here is pure: the caller passes `now` and a jitter value in `[0, 1)`, so schedules
// are deterministic in tests and the daemon supplies `rand` values at run time.
// ---------------------------------------------------------------------------------------------

use chrono::{DateTime, Utc};

/// Server hints (feed `<ttl>`, `Cache-Control: max-age`, `Expires`) may stretch a feed's
/// interval up to this, never further: a feed that says "come back in a month" is still read
/// daily, because a policy watcher that misses a story for weeks is broken.
pub const MAX_HINTED_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Jitter added to a successful poll's interval, as a fraction of it (upwards only, so a hint
/// is never undercut). Enough to spread feeds that all started together at daemon start.
pub const SUCCESS_JITTER_FRACTION: f64 = 0.05;

/// First retry after a failure waits about this long (then doubles).
pub const FAILURE_BACKOFF_BASE: Duration = Duration::from_secs(60);

/// Backoff never grows beyond this (or the feed's own interval, if longer). We never give up
/// on a feed: a site that is down for a week is polled every few hours and recovers on its own.
pub const FAILURE_BACKOFF_CAP: Duration = Duration::from_secs(6 * 3600);

/// A `Retry-After` further out than this is clamped to it. Honoured otherwise (we never poll
/// earlier than asked); the clamp only stops a typo'd or hostile date from silently disabling a
/// feed for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the server told us about how long its answer stays fresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollHints {
    /// RSS `<ttl>` (already converted from minutes).
    pub ttl: Option<Duration>,
    /// `Cache-Control: max-age` (minus `Age`) or `Expires - Date`.
    pub cache: Option<Duration>,
}

/// Whether a failure is worth retrying soon (transient) or needs a human (permanent). Both are
/// retried on the backoff schedule (we never give up), but the daemon reports permanent ones to
/// the user at once and transient ones only when they persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Transient,
    Permanent,
}

/// Transport-level failure kinds, as the fetcher sees them, without HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// DNS, connection refused/reset, TLS handshake, broken connection mid-body.
    Network,
    /// Connect, first-byte or total timeout.
    Timeout,
    /// Body above the size cap: the feed will not shrink by itself.
    TooLarge,
    /// Redirect loop, too many hops, a redirect to a non-HTTP scheme or without `Location`.
    Redirect,
    /// Malformed URL, unsupported scheme, unreadable local file: config must change.
    Config,
}

/// Why a fetched body could not be used as a feed (mirrors `feed::FeedError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseFailure {
    /// An HTML page or other document (the caller may switch to its advertised feed).
    NotAFeed,
    /// Broken XML/JSON.
    Invalid,
    /// An empty body.
    Empty,
    /// The third-party parser crashed on the input.
    ParserPanic,
}

/// Parse failure → class. An empty body is typical of a server mid-deploy and fixes itself;
/// a page that is not a feed, or a feed that does not parse, needs someone to look (it is
/// still polled on the backoff schedule and recovers when the publisher fixes it).
pub fn classify_parse(kind: ParseFailure) -> FailureClass {
    match kind {
        ParseFailure::Empty => FailureClass::Transient,
        ParseFailure::NotAFeed | ParseFailure::Invalid | ParseFailure::ParserPanic => {
            FailureClass::Permanent
        }
    }
}

/// HTTP status → class. 408/425/429 and all 5xx are the server's temporary trouble; other
/// 4xx mean the request itself is wrong (404, 401, 403, ...) and will not fix itself soon.
pub fn classify_status(status: u16) -> FailureClass {
    match status {
        408 | 425 | 429 | 500..=599 => FailureClass::Transient,
        _ => FailureClass::Permanent,
    }
}

/// Transport failure → class.
pub fn classify_transport(kind: TransportFailure) -> FailureClass {
    match kind {
        TransportFailure::Network | TransportFailure::Timeout => FailureClass::Transient,
        TransportFailure::TooLarge | TransportFailure::Redirect | TransportFailure::Config => {
            FailureClass::Permanent
        }
    }
}

/// The single place that decides retryability of a fetch error.
pub fn is_retryable(err: &crate::fetch::FetchError) -> bool {
    err.class() == FailureClass::Transient
}

fn to_chrono(d: Duration) -> chrono::Duration {
    // Durations here are at most days; saturate instead of failing on absurd inputs.
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_add_signed(to_chrono(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When to poll a feed next after a successful fetch (200 or 304).
///
/// Hints only ever *raise* the configured interval (we poll as often as the user asked unless
/// the server asks for less), and a hint's raise is capped at [`MAX_HINTED_INTERVAL`]. Then up
/// to [`SUCCESS_JITTER_FRACTION`] is added so feeds drift apart after a restart.
pub fn next_poll_after_success(
    now: DateTime<Utc>,
    interval: Duration,
    hints: PollHints,
    jitter01: f64,
) -> DateTime<Utc> {
    let hinted = [hints.ttl, hints.cache]
        .into_iter()
        .flatten()
        .map(|h| h.min(MAX_HINTED_INTERVAL))
        .max()
        .unwrap_or(Duration::ZERO);
    let base = interval.max(hinted);
    let jitter = base.mul_f64(SUCCESS_JITTER_FRACTION * jitter01.clamp(0.0, 1.0));
    add(now, base + jitter)
}

/// When to poll a feed next after `consecutive_failures` failures in a row (1 after the first).
///
/// Exponential backoff from [`FAILURE_BACKOFF_BASE`] with jitter (see [`backoff`]), capped at
/// the larger of [`FAILURE_BACKOFF_CAP`] and the feed's interval; a failing feed is never
/// polled *more* often than it is when healthy, except for the first quick retries. A
/// `Retry-After` later than that wins (never poll earlier than the server asked), clamped to
/// [`MAX_RETRY_AFTER`].
pub fn next_poll_after_failure(
    now: DateTime<Utc>,
    consecutive_failures: u32,
    interval: Duration,
    retry_after: Option<DateTime<Utc>>,
    jitter01: f64,
) -> DateTime<Utc> {
    let cap = FAILURE_BACKOFF_CAP.max(interval);
    let delay = backoff(
        consecutive_failures.max(1),
        FAILURE_BACKOFF_BASE,
        cap,
        jitter01,
    );
    let mut at = add(now, delay);
    if let Some(ra) = retry_after {
        let ra = ra.min(add(now, MAX_RETRY_AFTER));
        at = at.max(ra);
    }
    at
}

// ---------------------------------------------------------------------------------------------
// SMTP delivery (owned by the mail part). `mail` classifies each failed send with
// `smtp_failure_is_transient`; `notify` waits `smtp_backoff` between attempts of one delivery.

/// What went wrong with an SMTP send, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpFailure {
    /// The server answered with a reply code (see `code`).
    Reply,
    /// Could not connect, or the connection broke (refused, reset, DNS).
    Connection,
    /// Connect or a command timed out.
    Timeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The server said something we could not parse.
    Protocol,
    /// We refused to go on: no usable AUTH mechanism, bad envelope. Our side or config.
    Client,
}

/// Where in the SMTP conversation a send failed. The same reply code means different things
/// at different steps: a 550 to `RCPT TO` refuses one recipient, a 550 to `MAIL FROM` refuses
/// our sender address (the operator's to fix), a 554 after the data refuses the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpPhase {
    /// TCP (and implicit TLS) connect, the greeting, EHLO.
    Connect,
    /// STARTTLS and the second EHLO.
    Starttls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO (one recipient per transaction).
    RcptTo,
    /// DATA, the message and the final reply.
    Data,
}

/// What to do after a failed send of one delivery to one recipient (or endpoint). The classes
/// are output-agnostic: SMTP replies map onto them here, and another output (a webhook) maps
/// its own failures onto the same ones, so `notify` handles every output alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendClass {
    /// The server's temporary trouble or the network's: back off and retry unchanged.
    Transient,
    /// Wrong on our side, and only the operator can fix it (authentication, TLS, a relay
    /// without STARTTLS, our sender refused, a size the relay never takes): the delivery is
    /// held, pending, and tried again after the next reload or restart, or on `digest
    /// --resend` — never given up, never retried in a loop that could lock an account.
    Hold,
    /// This recipient is refused for good (550/551/553 to RCPT TO): that recipient fails; the
    /// others still get the digest.
    RecipientRefused,
    /// The message is too big for the relay: retry once trimmed (see
    /// [`smtp_reply_means_too_large`]); refused again, it is a [`SendClass::Hold`].
    TooLarge,
    /// The server refused this message for good (554 content refusal after DATA): fails this
    /// recipient's copy.
    MessageRefused,
}

/// Classifies a failed SMTP send.
///
/// - no reply code: network trouble and timeouts are transient; a TLS failure (untrusted or
///   expired certificate, wrong name) and our own refusals (no STARTTLS offered, no AUTH
///   mechanism in common) need the operator: [`SendClass::Hold`];
/// - 4xx is the server's "try again later" (RFC 5321 §4.2.1): transient;
/// - 530/534/535/538 anywhere (authentication required, too weak, failed): hold;
/// - 5xx to MAIL FROM (our sender address) or during connect/STARTTLS/AUTH: hold;
/// - 5xx to RCPT TO: that recipient is refused;
/// - 5xx after DATA: too large (552, 5.3.4) or refused (554 and the rest);
/// - a code outside 4xx/5xx on a failure is a confused server: transient.
pub fn classify_smtp(
    code: Option<u16>,
    failure: SmtpFailure,
    phase: SmtpPhase,
    message: &str,
) -> SendClass {
    match code {
        None => match failure {
            SmtpFailure::Connection | SmtpFailure::Timeout | SmtpFailure::Protocol => {
                SendClass::Transient
            }
            SmtpFailure::Tls => SendClass::Hold,
            SmtpFailure::Client | SmtpFailure::Reply => match phase {
                SmtpPhase::Connect | SmtpPhase::Starttls | SmtpPhase::Auth => SendClass::Hold,
                SmtpPhase::MailFrom | SmtpPhase::RcptTo | SmtpPhase::Data => {
                    SendClass::MessageRefused
                }
            },
        },
        Some(c) if (400..500).contains(&c) => SendClass::Transient,
        Some(530 | 534 | 535 | 538) => SendClass::Hold,
        Some(c) if (500..600).contains(&c) => match phase {
            SmtpPhase::Connect | SmtpPhase::Starttls | SmtpPhase::Auth | SmtpPhase::MailFrom => {
                SendClass::Hold
            }
            SmtpPhase::RcptTo => SendClass::RecipientRefused,
            SmtpPhase::Data if smtp_reply_means_too_large(code, message) => SendClass::TooLarge,
            SmtpPhase::Data => SendClass::MessageRefused,
        },
        Some(_) => SendClass::Transient,
    }
}

/// Whether a failed send is worth retrying unchanged (for callers that only need yes or no,
/// like `send-test`).
pub fn smtp_failure_is_transient(code: Option<u16>, failure: SmtpFailure) -> bool {
    classify_smtp(code, failure, SmtpPhase::Data, "") == SendClass::Transient
}

/// Whether a permanent reply says the message was too big, so a trimmed digest may pass:
/// 552 (RFC 5321 "exceeded storage allocation", what relays send for size limits), or the
/// enhanced status 5.3.4 "message too big for system" under another code.
pub fn smtp_reply_means_too_large(code: Option<u16>, message: &str) -> bool {
    code == Some(552) || (code.is_some_and(|c| c >= 500) && message.contains("5.3.4"))
}

/// The deadline of one phase of an SMTP conversation is `[smtp] timeout`; a phase that is
/// several exchanges inside lettre (connect + greeting + EHLO, STARTTLS + handshake + EHLO,
/// AUTH LOGIN's challenges) gets this many timeouts.
pub const SMTP_PHASE_EXCHANGES: u32 = 3;

/// The longest one recipient's send may take in all: connect, STARTTLS and AUTH at
/// [`SMTP_PHASE_EXCHANGES`] timeouts each, MAIL, RCPT and DATA at one each, the message and
/// its final reply at two, QUIT at one. `notify` wraps a whole send in the sum over its
/// recipients, a backstop behind the per-phase deadlines.
pub fn smtp_send_deadline(timeout: Duration) -> Duration {
    timeout.saturating_mul(3 * SMTP_PHASE_EXCHANGES + 3 + 2 + 1)
}

// ---------------------------------------------------------------------------------------------
// The store: a write that failed for lack of space (a full disk) is retried, never fatal.
// ---------------------------------------------------------------------------------------------

/// First wait after a store write failed for lack of space, and the longest one: short enough
/// that polling resumes soon after space returns, long enough not to hammer feeds meanwhile.
pub const STORE_FULL_BASE: Duration = Duration::from_secs(2);
pub const STORE_FULL_CAP: Duration = Duration::from_secs(120);

/// How long the daemon waits before polling (and so writing) again after the `attempts`-th
/// consecutive store write that failed for lack of space. No jitter: there is one store.
pub fn store_full_backoff(attempts: u32) -> Duration {
    backoff(attempts, STORE_FULL_BASE, STORE_FULL_CAP, 1.0)
}

/// First retry of a delivery after a minute, doubling, at most every 30 minutes: mail relays
/// come back within minutes (greylisting asks for 1-15), and a digest that is hours late is
/// worth little.
pub const SMTP_RETRY_BASE: Duration = Duration::from_secs(60);
pub const SMTP_RETRY_CAP: Duration = Duration::from_secs(30 * 60);

/// A delivery still failing transiently this long after it was claimed is given up (marked
/// failed, and visible in status): its news is stale, and a relay that is down for days needs a
/// person more than it needs more retries.
pub const SMTP_GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);

/// Wait before the next attempt of a delivery that has failed transiently `failures` times.
pub fn smtp_backoff(failures: u32, jitter01: f64) -> Duration {
    backoff(failures, SMTP_RETRY_BASE, SMTP_RETRY_CAP, jitter01)
}

// ---------------------------------------------------------------------------------------------
// Webhook delivery (owned by the webhook part). `webhook` classifies each POST with
// `webhook_status` / `webhook_transport`; `notify` schedules the next attempt with
// `webhook_next_attempt` and gives up after `WEBHOOK_GIVE_UP_AFTER`.

/// A receiver's answer to a webhook POST, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookVerdict {
    /// 2xx: the receiver took it; mark the delivery sent.
    Accepted,
    /// 408, 425, 429, 5xx, or no answer at all: the same POST may pass later.
    Retry,
    /// Any other status (400 bad payload, 401/403 revoked, 404/410 gone, 3xx moved): a person
    /// has to fix the URL or the receiver; retrying would only repeat the refusal.
    Refused,
}

/// HTTP status → what to do with the delivery. The same transient set as feed fetching.
pub fn webhook_status(status: u16) -> WebhookVerdict {
    match status {
        200..=299 => WebhookVerdict::Accepted,
        s if classify_status(s) == FailureClass::Transient => WebhookVerdict::Retry,
        _ => WebhookVerdict::Refused,
    }
}

/// A POST that got no HTTP answer → what to do. Network trouble and timeouts pass; a URL the
/// client cannot use (or a redirect, which webhooks never follow) does not.
pub fn webhook_transport(kind: TransportFailure) -> WebhookVerdict {
    match classify_transport(kind) {
        FailureClass::Transient => WebhookVerdict::Retry,
        FailureClass::Permanent => WebhookVerdict::Refused,
    }
}

/// A webhook's `Retry-After` further out than this is clamped to it: a chat message that
/// waits longer is stale, and a hostile date must not park the outbox for years.
pub const WEBHOOK_MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// A webhook delivery still failing transiently this long after its claim is given up, as
/// mail is.
pub const WEBHOOK_GIVE_UP_AFTER: Duration = SMTP_GIVE_UP_AFTER;

/// When to try a delivery again after its `failures`-th transient failure: the mail backoff
/// (a minute, doubling, at most 30 minutes), but never before a webhook receiver's
/// `Retry-After` (clamped to [`WEBHOOK_MAX_RETRY_AFTER`]).
pub fn delivery_next_attempt(
    now: DateTime<Utc>,
    failures: u32,
    retry_after: Option<Duration>,
    jitter01: f64,
) -> DateTime<Utc> {
    let wait = smtp_backoff(failures, jitter01);
    match retry_after {
        Some(ra) => add(now, wait.max(ra.min(WEBHOOK_MAX_RETRY_AFTER))),
        None => add(now, wait),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn store_full_backoff_grows_to_its_cap() {
        assert_eq!(store_full_backoff(1), STORE_FULL_BASE);
        assert_eq!(store_full_backoff(2), STORE_FULL_BASE * 2);
        assert_eq!(store_full_backoff(30), STORE_FULL_CAP);
        assert_eq!(store_full_backoff(0), STORE_FULL_BASE);
    }
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let base = Duration::from_secs(60);
        let cap = Duration::from_secs(6 * 3600);
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(2, base, cap, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(3, base, cap, 0.0), Duration::from_secs(120));
        assert_eq!(backoff(40, base, cap, 1.0), cap);
        assert_eq!(backoff(40, base, cap, 0.0), cap / 2);
    }

    #[test]
    fn webhook_answers_classify() {
        use WebhookVerdict::*;
        for (status, want) in [
            (200, Accepted),
            (202, Accepted),
            (204, Accepted),
            (301, Refused),
            (400, Refused),
            (401, Refused),
            (403, Refused),
            (404, Refused),
            (410, Refused),
            (408, Retry),
            (429, Retry),
            (500, Retry),
            (502, Retry),
            (503, Retry),
        ] {
            assert_eq!(webhook_status(status), want, "{status}");
        }
        assert_eq!(webhook_transport(TransportFailure::Timeout), Retry);
        assert_eq!(webhook_transport(TransportFailure::Network), Retry);
        assert_eq!(webhook_transport(TransportFailure::Redirect), Refused);
        assert_eq!(webhook_transport(TransportFailure::Config), Refused);
    }

    #[test]
    fn webhook_retry_after_is_honoured_and_capped() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let secs = |s: i64| now + chrono::Duration::seconds(s);
        // No hint: the backoff (first failure: 30-60 s).
        assert_eq!(delivery_next_attempt(now, 1, None, 1.0), secs(60));
        // A later Retry-After wins; an earlier one does not pull the retry forward.
        assert_eq!(
            delivery_next_attempt(now, 1, Some(Duration::from_secs(600)), 1.0),
            secs(600)
        );
        let soon = Some(Duration::from_secs(5));
        assert_eq!(delivery_next_attempt(now, 1, soon, 1.0), secs(60));
        // A year away is clamped.
        assert_eq!(
            delivery_next_attempt(now, 1, Some(Duration::from_secs(365 * 86_400)), 1.0),
            secs(6 * 3600)
        );
    }

    #[test]
    fn smtp_codes_and_failures_classify() {
        use SendClass::*;
        use SmtpFailure::*;
        use SmtpPhase::*;
        let cases: &[(Option<u16>, SmtpFailure, SmtpPhase, &str, SendClass)] = &[
            (Some(421), Reply, Connect, "", Transient),
            (Some(450), Reply, RcptTo, "", Transient),
            (Some(451), Reply, Data, "", Transient),
            (Some(452), Reply, RcptTo, "", Transient),
            // The operator's to fix: held until the config changes.
            (Some(535), Reply, Auth, "5.7.8 bad credentials", Hold),
            (
                Some(530),
                Reply,
                RcptTo,
                "5.7.0 authentication required",
                Hold,
            ),
            (Some(550), Reply, MailFrom, "5.7.1 sender refused", Hold),
            (Some(554), Reply, Connect, "no service", Hold),
            (None, Tls, Connect, "", Hold),
            (None, Client, Starttls, "STARTTLS is not supported", Hold),
            (None, Client, Auth, "no compatible mechanism", Hold),
            // One recipient refused.
            (
                Some(550),
                Reply,
                RcptTo,
                "5.1.1 no such user",
                RecipientRefused,
            ),
            (Some(551), Reply, RcptTo, "", RecipientRefused),
            (Some(553), Reply, RcptTo, "", RecipientRefused),
            // The message.
            (Some(552), Reply, Data, "", TooLarge),
            (Some(554), Reply, Data, "5.3.4 Message too big", TooLarge),
            (
                Some(554),
                Reply,
                Data,
                "5.7.1 content refused",
                MessageRefused,
            ),
            (Some(550), Reply, Data, "", MessageRefused),
            (None, Client, Data, "no 8BITMIME", MessageRefused),
            // The network.
            (None, Connection, Connect, "", Transient),
            (None, Timeout, Data, "", Transient),
            (None, Protocol, RcptTo, "", Transient),
            (Some(250), Reply, Data, "", Transient),
        ];
        for &(code, failure, phase, msg, want) in cases {
            assert_eq!(
                classify_smtp(code, failure, phase, msg),
                want,
                "{code:?} {failure:?} {phase:?} {msg}"
            );
        }
        assert!(smtp_failure_is_transient(Some(451), Reply));
        assert!(!smtp_failure_is_transient(Some(550), Reply));
        assert!(smtp_send_deadline(Duration::from_secs(1)) >= Duration::from_secs(10));
        assert!(smtp_reply_means_too_large(Some(552), "5.2.2 mailbox full"));
        assert!(smtp_reply_means_too_large(
            Some(554),
            "5.3.4 Message too big for system"
        ));
        assert!(!smtp_reply_means_too_large(Some(550), "5.1.1 no such user"));
        assert!(!smtp_reply_means_too_large(Some(451), "4.3.4 try later"));
        assert_eq!(smtp_backoff(1, 1.0), SMTP_RETRY_BASE);
        assert_eq!(smtp_backoff(20, 1.0), SMTP_RETRY_CAP);
    }
}

#[cfg(test)]
mod feed_poll_tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    const NOW: &str = "2026-03-01T12:00:00Z";
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn success_uses_interval_and_hints_only_raise_it() {
        let now = t(NOW);
        let none = PollHints::default();
        assert_eq!(
            next_poll_after_success(now, 15 * MIN, none, 0.0),
            t("2026-03-01T12:15:00Z")
        );
        // Jitter adds at most 5%.
        assert_eq!(
            next_poll_after_success(now, 20 * MIN, none, 1.0),
            t("2026-03-01T12:21:00Z")
        );
        // A shorter hint does not make us poll more often than configured.
        let short = PollHints {
            ttl: Some(5 * MIN),
            cache: Some(MIN),
        };
        assert_eq!(
            next_poll_after_success(now, 15 * MIN, short, 0.0),
            t("2026-03-01T12:15:00Z")
        );
        // A longer one (ttl or cache, whichever is longer) stretches it.
        let long = PollHints {
            ttl: Some(60 * MIN),
            cache: Some(90 * MIN),
        };
        assert_eq!(
            next_poll_after_success(now, 15 * MIN, long, 0.0),
            t("2026-03-01T13:30:00Z")
        );
        // ... but only up to a day.
        let huge = PollHints {
            ttl: Some(30 * 24 * 60 * MIN),
            cache: None,
        };
        assert_eq!(
            next_poll_after_success(now, 15 * MIN, huge, 0.0),
            t("2026-03-02T12:00:00Z")
        );
        // A configured interval beyond the cap is the user's choice and stays.
        assert_eq!(
            next_poll_after_success(now, 48 * 60 * MIN, none, 0.0),
            t("2026-03-03T12:00:00Z")
        );
    }

    #[test]
    fn failure_backs_off_exponentially_to_a_cap_and_never_gives_up() {
        let now = t(NOW);
        let at = |n, j| next_poll_after_failure(now, n, 15 * MIN, None, j);
        assert_eq!(at(1, 1.0), t("2026-03-01T12:01:00Z"));
        assert_eq!(at(2, 1.0), t("2026-03-01T12:02:00Z"));
        assert_eq!(at(3, 1.0), t("2026-03-01T12:04:00Z"));
        assert_eq!(at(3, 0.0), t("2026-03-01T12:02:00Z"));
        assert_eq!(at(0, 1.0), at(1, 1.0), "0 is treated as the first failure");
        // Capped at six hours, still scheduled after a thousand failures.
        assert_eq!(at(1000, 1.0), t("2026-03-01T18:00:00Z"));
        assert_eq!(at(u32::MAX, 0.0), t("2026-03-01T15:00:00Z"));
        // A daily feed's backoff may reach its interval.
        assert_eq!(
            next_poll_after_failure(now, 50, 24 * 60 * MIN, None, 1.0),
            t("2026-03-02T12:00:00Z")
        );
    }

    #[test]
    fn retry_after_is_never_undercut_but_is_clamped() {
        let now = t(NOW);
        let ra = Some(t("2026-03-01T14:00:00Z"));
        assert_eq!(
            next_poll_after_failure(now, 1, 15 * MIN, ra, 0.5),
            t("2026-03-01T14:00:00Z")
        );
        // An earlier Retry-After than our own backoff does not make us come sooner.
        let soon = Some(t("2026-03-01T12:00:10Z"));
        assert_eq!(
            next_poll_after_failure(now, 3, 15 * MIN, soon, 1.0),
            t("2026-03-01T12:04:00Z")
        );
        let absurd = Some(t("2036-01-01T00:00:00Z"));
        assert_eq!(
            next_poll_after_failure(now, 1, 15 * MIN, absurd, 0.0),
            t("2026-03-08T12:00:00Z")
        );
    }

    #[test]
    fn status_classes() {
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), FailureClass::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 406, 451] {
            assert_eq!(classify_status(s), FailureClass::Permanent, "{s}");
        }
        assert_eq!(
            classify_transport(TransportFailure::Timeout),
            FailureClass::Transient
        );
        assert_eq!(
            classify_transport(TransportFailure::Network),
            FailureClass::Transient
        );
        assert_eq!(
            classify_transport(TransportFailure::TooLarge),
            FailureClass::Permanent
        );
        assert_eq!(
            classify_transport(TransportFailure::Redirect),
            FailureClass::Permanent
        );
    }
    proptest::proptest! {
        #[test]
        fn schedules_stay_within_their_bounds(
            failures in 0u32..5000,
            interval_s in 1u64..(7 * 24 * 3600),
            ra_s in proptest::option::of(-3600i64..(30 * 24 * 3600)),
            ttl_s in proptest::option::of(0u64..(90 * 24 * 3600)),
            jitter in 0.0f64..1.0,
        ) {
            let now = t(NOW);
            let interval = Duration::from_secs(interval_s);
            let ra = ra_s.map(|s| now + chrono::Duration::seconds(s));
            let next = next_poll_after_failure(now, failures, interval, ra, jitter);
            // Never sooner than half the base delay, never later than the cap or a clamped
            // Retry-After, and never before a Retry-After within the clamp.
            proptest::prop_assert!(next >= now + chrono::Duration::seconds(30));
            let cap = FAILURE_BACKOFF_CAP.max(interval).max(MAX_RETRY_AFTER);
            proptest::prop_assert!(next <= now + chrono::Duration::from_std(cap).unwrap());
            if let Some(ra) = ra {
                proptest::prop_assert!(next >= ra.min(now + chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap()));
            }
            let hints = PollHints { ttl: ttl_s.map(Duration::from_secs), cache: None };
            let ok = next_poll_after_success(now, interval, hints, jitter);
            proptest::prop_assert!(ok >= now + chrono::Duration::from_std(interval).unwrap());
            let longest = interval.max(MAX_HINTED_INTERVAL).mul_f64(1.0 + SUCCESS_JITTER_FRACTION);
            proptest::prop_assert!(ok <= now + chrono::Duration::from_std(longest).unwrap());
        }
    }
}
