//! All retry policy lives here: what counts as retryable, and how long to wait before trying
//! again. Fetching (per feed) and mail delivery (per outbox entry) both ask this module; neither
//! decides on its own.
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

/// Whether a failed send is worth retrying unchanged.
///
/// Reply codes decide when there is one: 4xx is the server's "try again later", 5xx is final
/// (RFC 5321 §4.2.1); a 552 is final for *this* message, and the caller may send a trimmed one
/// (see [`smtp_reply_means_too_large`]). Without a code, network trouble (refused, reset,
/// timeout) is transient. TLS failures are transient too: they are almost always a relay
/// being reconfigured or a certificate being renewed, and a digest that waits is better than
/// one marked failed for good; the backoff keeps the retries rare. A client-side refusal
/// (no AUTH mechanism in common, bad addresses) will not fix itself: permanent.
pub fn smtp_failure_is_transient(code: Option<u16>, failure: SmtpFailure) -> bool {
    match code {
        Some(c) if (400..500).contains(&c) => true,
        Some(c) if (500..600).contains(&c) => false,
        // A code outside 4xx/5xx on a failure is a confused server: like a protocol error.
        Some(_) => true,
        None => !matches!(failure, SmtpFailure::Client),
    }
}

/// Whether a permanent reply says the message was too big, so a trimmed digest may pass:
/// 552 (RFC 5321 "exceeded storage allocation", what relays send for size limits), or the
/// enhanced status 5.3.4 "message too big for system" under another code.
pub fn smtp_reply_means_too_large(code: Option<u16>, message: &str) -> bool {
    code == Some(552) || (code.is_some_and(|c| c >= 500) && message.contains("5.3.4"))
}

/// First retry of a delivery after a minute, doubling, at most every 30 minutes: mail relays
/// come back within minutes (greylisting asks for 1-15), and a digest that is hours late is
/// worth little.
pub const SMTP_RETRY_BASE: Duration = Duration::from_secs(60);
pub const SMTP_RETRY_CAP: Duration = Duration::from_secs(30 * 60);

/// Wait before the next attempt of a delivery that has failed transiently `failures` times.
pub fn smtp_backoff(failures: u32, jitter01: f64) -> Duration {
    backoff(failures, SMTP_RETRY_BASE, SMTP_RETRY_CAP, jitter01)
}

#[cfg(test)]
mod tests {
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
    fn smtp_codes_and_failures_classify() {
        use SmtpFailure::*;
        let cases: &[(Option<u16>, SmtpFailure, bool)] = &[
            (Some(421), Reply, true),
            (Some(450), Reply, true),
            (Some(451), Reply, true),
            (Some(452), Reply, true),
            (Some(535), Reply, false),
            (Some(550), Reply, false),
            (Some(552), Reply, false),
            (Some(554), Reply, false),
            (None, Connection, true),
            (None, Timeout, true),
            (None, Tls, true),
            (None, Protocol, true),
            (None, Client, false),
        ];
        for &(code, failure, want) in cases {
            assert_eq!(
                smtp_failure_is_transient(code, failure),
                want,
                "{code:?} {failure:?}"
            );
        }
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
