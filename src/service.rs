//! The service manager's side of the daemon: systemd's notify protocol (`READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `RELOADING=1` with `MONOTONIC_USEC`, `STOPPING=1`).
//!
//! In: lifecycle calls from `daemon`. Out: datagrams on `$NOTIFY_SOCKET`. Without that variable
//! (a terminal, a test, another supervisor) every call is a no-op, so the daemon never needs
//! to know how it was started. A failed notification is logged at debug and otherwise ignored:
//! telling systemd is never worth stopping the service for.

use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Clone, Default)]
pub struct Service {
    watchdog: Option<Duration>,
}

impl Service {
    /// Reads what systemd asked for (`WATCHDOG_USEC`, for this process only).
    pub fn from_env() -> Service {
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec))
            .filter(|d| !d.is_zero());
        Service { watchdog }
    }

    /// How often to send `WATCHDOG=1`: half the configured timeout, as systemd recommends.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::debug!(error = %e, "service manager notification failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// Starts a reload; systemd (v253+) requires the monotonic timestamp with it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(ts) => self.send(&[
                NotifyState::Reloading,
                ts,
                NotifyState::Status("reloading configuration"),
            ]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
