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
}
