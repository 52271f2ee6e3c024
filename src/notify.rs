//! Notification: turns due digests and immediate alerts into deliveries, and deliveries into
//! log records or mail, through the store's durable outbox.
//!
//! In: the compiled config ([`Loaded`]), the [`Store`], the clock. Out: tracing events (for
//! `via = "log"`), SMTP transactions (for `via = "email"`), outbox state changes.
//!
//! The order of operations is what makes delivery exactly-once from the user's view:
//! 1. **claim** — `Store::claim` creates a delivery and takes its stories in one transaction;
//! 2. **render** — `digest::render` builds the message from what was claimed (pure);
//! 3. **send** — the log or the SMTP server accepts it;
//! 4. **mark** — only then `Store::mark_sent`.
//!
//! A crash after 1 leaves a pending delivery that is sent on the next start with the same
//! Message-ID; a transient failure at 3 is retried with backoff from `retry`; a permanent one
//! ("552 message too large") is retried once trimmed, then marked failed — never a loop.
//!
//! Outputs are a closed set ([`Via`]): adding one is a change here and in `config`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::config::{Loaded, Via};
use crate::digest::{
    self, DigestKind, FeedProblem, LogRecord, RenderLimits, Rendered, Section, Story,
};
use crate::item::Field;
use crate::logging::untrusted;
use crate::mail::{MailError, Mailer};
use crate::retry;
use crate::store::{Delivery, DigestState, Kind, Store, StoreError};

/// Failures below this count are not worth a line in a digest; a feed failing this many polls
/// in a row is.
const FAILING_AFTER: u32 = 3;
/// Snippet length in digests.
const SNIPPET_CHARS: usize = 280;
/// After a "message too large" refusal the one retry carries this fraction of the stories
/// (the relay did not say its limit; a quarter is small enough for any sane one).
const TRIM_DIVISOR: usize = 4;
/// Attempts to fit a message under `smtp.max_message_bytes` by rendering fewer stories, before
/// the relay sees it.
const MAX_FIT_ROUNDS: usize = 8;

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("a digest has via = \"email\" but the config has no [smtp] section")]
    NoSmtp,
}

/// What one pass did, for logs, status and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    /// The rendered text of each delivery logged in this pass, and one line per mail outcome
    /// (what `run --once` prints).
    pub texts: Vec<String>,
}

pub struct Notifier {
    /// The relay, when some digest goes by email. Built once per config (the password is read
    /// here, so a wrong password path fails at start or reload, not at 07:30).
    mailer: Option<Mailer>,
}

impl Notifier {
    /// Builds the notifier for a config; sets up SMTP (and reads its password) only when a
    /// digest is sent by email.
    pub fn new(cfg: &Loaded) -> Result<Notifier, NotifyError> {
        let needs_mail = cfg.digests.iter().any(|d| d.via == Via::Email);
        let mailer = match (&cfg.config.smtp, needs_mail) {
            (Some(smtp), true) => Some(Mailer::new(smtp.get_ref())?),
            (None, true) => return Err(NotifyError::NoSmtp),
            (_, false) => None,
        };
        Ok(Notifier { mailer })
    }

    /// Registers every configured digest, so stories classified from now on are theirs.
    pub fn register(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        for d in &cfg.digests {
            store.digest_state(&d.id, now)?;
        }
        Ok(())
    }

    /// One pass: fire scheduled digests that are due (a firing missed while the daemon was
    /// down fires once, now), claim immediate alerts (rate-capped), then attempt every due
    /// delivery.
    pub async fn tick(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        for d in &cfg.digests {
            let st = state_of(store, d, now)?;
            if next_firing(d, &st).is_some_and(|t| t <= now) {
                store.claim(
                    &d.id,
                    Kind::Digest,
                    d.via.as_str(),
                    &d.watches,
                    now,
                    d.send_empty,
                )?;
            }
            if !d.immediate.is_empty() {
                let gap =
                    chrono::Duration::from_std(cfg.config.daemon.alert_min_gap).unwrap_or_default();
                // map_or, not is_none_or: the crate's MSRV is 1.80.
                #[allow(clippy::unnecessary_map_or)]
                if st.last_alert_at.map_or(true, |t| now - t >= gap) {
                    store.claim(&d.id, Kind::Alert, d.via.as_str(), &d.immediate, now, false)?;
                }
            }
        }
        self.deliver_due(store, cfg, now).await
    }

    /// Claims every digest now, whatever its schedule (`run --once`), then delivers.
    pub async fn flush(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        for d in &cfg.digests {
            store.claim(
                &d.id,
                Kind::Digest,
                d.via.as_str(),
                &d.watches,
                now,
                d.send_empty,
            )?;
        }
        self.deliver_due(store, cfg, now).await
    }

    /// When the notifier next has something to do: the earliest scheduled firing or pending
    /// retry.
    pub fn next_wakeup(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, NotifyError> {
        let mut next = store.next_delivery_due()?;
        if let Some((t, _)) = next_digest(store, cfg, now)? {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        Ok(next)
    }

    async fn deliver_due(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        let mut report = Report::default();
        for delivery in store.due_deliveries(now)? {
            self.deliver(store, cfg, &delivery, now, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn deliver(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        delivery: &Delivery,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), NotifyError> {
        let Some(dcfg) = cfg.digests.iter().find(|d| d.id == delivery.digest_id) else {
            // The digest was removed from the config after claiming: its stories stay claimed
            // and the failure is visible, rather than mailed to nobody or silently dropped.
            let msg = format!("digest `{}` is no longer configured", delivery.digest_id);
            tracing::warn!(delivery = delivery.id, "{}", untrusted(&msg));
            store.mark_failed(delivery.id, &msg)?;
            report.failed += 1;
            return Ok(());
        };
        let matches = store.delivery_stories(delivery.id)?;
        let d = assemble(store, cfg, dcfg, delivery.kind, matches, now)?;
        let limits = RenderLimits {
            max_stories: delivery
                .trim_to
                .unwrap_or(dcfg.max_stories)
                .min(dcfg.max_stories),
            snippet_chars: SNIPPET_CHARS,
        };
        match dcfg.via {
            Via::Log => {
                let rendered = digest::render(&d, &limits);
                log_digest(&d, &limits, delivery);
                store.mark_sent(delivery.id, now, "logged")?;
                report.sent += 1;
                report.texts.push(rendered.text);
            }
            Via::Email => {
                self.mail(store, dcfg, &d, delivery, limits, now, report)
                    .await?
            }
        }
        Ok(())
    }

    /// `via = "email"`: fit the message under the relay's size limit, send it, and record the
    /// outcome. Marked sent only on the server's acceptance; a transient failure is retried
    /// with backoff (given up after [`retry::SMTP_GIVE_UP_AFTER`]); "too large" is retried once
    /// with a quarter of the stories, then marked failed. Every path ends in exactly one store
    /// update, so no delivery can loop.
    #[allow(clippy::too_many_arguments)]
    async fn mail(
        &self,
        store: &mut Store,
        dcfg: &crate::config::Digest,
        d: &digest::Digest,
        delivery: &Delivery,
        limits: RenderLimits,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), NotifyError> {
        let Some(mailer) = &self.mailer else {
            // Unreachable with a validated config; fail visibly rather than panic.
            return fail(store, delivery, "no [smtp] relay is configured", report);
        };
        let list_id = mailer.list_id(&dcfg.id);
        // The Date is the claim time, like the Message-ID fixed per delivery: a resend after
        // a crash is the same message, and recipients see when the digest was cut.
        let date = delivery.created_at;
        let mut max_stories = limits.max_stories;
        let mut fitted = None;
        for _ in 0..MAX_FIT_ROUNDS {
            let rendered = digest::render(
                d,
                &RenderLimits {
                    max_stories,
                    ..limits
                },
            );
            match mailer.build_message(&dcfg.to, &rendered, &delivery.message_id, date, &list_id) {
                Ok(msg) => {
                    fitted = Some((msg, rendered));
                    break;
                }
                Err(MailError::TooLarge { size, max }) if rendered.shown > 1 => {
                    // Scale by how far over the limit we are, with a margin for the markup
                    // that does not shrink; always at least one story fewer.
                    let scaled = rendered.shown as f64 * max as f64 / size.max(1) as f64 * 0.9;
                    max_stories = (scaled as usize).clamp(1, rendered.shown - 1);
                }
                Err(e) => return fail(store, delivery, &e.to_string(), report),
            }
        }
        let Some((msg, rendered)) = fitted else {
            let msg = format!(
                "the digest does not fit in smtp.max_message_bytes ({} bytes) even with {max_stories} stories",
                mailer.max_message_bytes().unwrap_or_default()
            );
            return fail(store, delivery, &msg, report);
        };
        match mailer.send(&msg).await {
            Ok(reply) => {
                tracing::info!(
                    delivery = delivery.id, digest = %delivery.digest_id, kind = delivery.kind.as_str(),
                    message_id = %delivery.message_id, recipients = dcfg.to.len(),
                    stories = rendered.shown, trimmed = rendered.trimmed, reply = %untrusted(&reply),
                    "mailed: {}", untrusted(&rendered.subject)
                );
                store.mark_sent(delivery.id, now, &reply)?;
                report.sent += 1;
                report.texts.push(format!(
                    "mailed to {}: {} ({reply})",
                    dcfg.to.join(", "),
                    rendered.subject
                ));
            }
            Err(e) if e.transient => {
                let age = (now - delivery.created_at).to_std().unwrap_or_default();
                if age >= retry::SMTP_GIVE_UP_AFTER {
                    let msg = format!(
                        "gave up after {} attempts over {}: {}",
                        delivery.attempts + 1,
                        humantime::format_duration(retry::SMTP_GIVE_UP_AFTER),
                        e.message
                    );
                    return fail(store, delivery, &msg, report);
                }
                let wait = retry::smtp_backoff(delivery.attempts + 1, rand::random::<f64>());
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                tracing::warn!(
                    delivery = delivery.id, digest = %delivery.digest_id, attempt = delivery.attempts + 1,
                    retry_at = %at, "mail deferred: {}", untrusted(&e.message)
                );
                store.mark_retry(delivery.id, &e.message, at, None)?;
                report.retrying += 1;
                report.texts.push(format!(
                    "mail deferred, next attempt at {at}: {} — {}",
                    rendered.subject, e.message
                ));
            }
            Err(e) if e.is_too_large() && delivery.trim_to.is_none() && rendered.shown > 1 => {
                let trim = (rendered.shown / TRIM_DIVISOR).max(1);
                tracing::warn!(
                    delivery = delivery.id, digest = %delivery.digest_id, stories = rendered.shown,
                    trim_to = trim, "relay refused the digest as too large; retrying once with fewer stories: {}",
                    untrusted(&e.message)
                );
                store.mark_retry(delivery.id, &e.message, now, Some(trim))?;
                report.retrying += 1;
                report.texts.push(format!(
                    "mail refused as too large, retrying with {trim} stories: {}",
                    e.message
                ));
            }
            Err(e) => return fail(store, delivery, &e.message, report),
        }
        Ok(())
    }
}

/// A permanent failure: logged at error level, the delivery marked failed (its stories stay
/// claimed, so they are not mailed again by a later digest).
fn fail(
    store: &mut Store,
    delivery: &Delivery,
    msg: &str,
    report: &mut Report,
) -> Result<(), NotifyError> {
    tracing::error!(
        delivery = delivery.id, digest = %delivery.digest_id, message_id = %delivery.message_id,
        "delivery failed for good: {}", untrusted(msg)
    );
    store.mark_failed(delivery.id, msg)?;
    report.failed += 1;
    report.texts.push(format!(
        "delivery {} of digest `{}` failed: {msg}",
        delivery.id, delivery.digest_id
    ));
    Ok(())
}

/// A digest's state. Digests are registered at start and on reload, so this is a read; a
/// digest that somehow is not registered yet is registered now.
fn state_of(
    store: &mut Store,
    d: &crate::config::Digest,
    now: DateTime<Utc>,
) -> Result<DigestState, NotifyError> {
    match store.read_digest_state(&d.id)? {
        Some(st) => Ok(st),
        None => Ok(store.digest_state(&d.id, now)?),
    }
}

/// When `d` next fires on its schedule: the first firing after its last one, or after it was
/// registered. A firing missed while the daemon was down is in the past, so it fires at once.
fn next_firing(d: &crate::config::Digest, st: &DigestState) -> Option<DateTime<Utc>> {
    let since = st.last_fired_at.unwrap_or(st.created_at);
    d.schedule.next_after(since, d.timezone)
}

/// The earliest next firing over all digests, with that digest's time zone (for STATUS=).
pub fn next_digest(
    store: &mut Store,
    cfg: &Loaded,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, chrono_tz::Tz)>, NotifyError> {
    let mut best: Option<(DateTime<Utc>, chrono_tz::Tz)> = None;
    for d in &cfg.digests {
        let st = state_of(store, d, now)?;
        if let Some(t) = next_firing(d, &st) {
            if best.map_or(true, |(b, _)| t < b) {
                best = Some((t, d.timezone));
            }
        }
    }
    Ok(best)
}

/// What digest `digest_id` would carry if it fired now, rendered, without claiming, sending
/// or marking anything (`digest --preview`).
pub fn preview(
    store: &mut Store,
    cfg: &Loaded,
    digest_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Rendered>, NotifyError> {
    let Some(dcfg) = cfg.digests.iter().find(|d| d.id == digest_id) else {
        return Ok(None);
    };
    let matches = store.preview_claim(&dcfg.id, &dcfg.watches, now)?;
    let d = assemble(store, cfg, dcfg, Kind::Digest, matches, now)?;
    let limits = RenderLimits {
        max_stories: dcfg.max_stories,
        snippet_chars: SNIPPET_CHARS,
    };
    Ok(Some(digest::render(&d, &limits)))
}

/// Builds the digest of one delivery from its claimed stories: sections in the digest's watch
/// order, each story once (under the first of its watches; the others are named in its
/// evidence), and the feed-health section.
fn assemble(
    store: &Store,
    cfg: &Loaded,
    dcfg: &crate::config::Digest,
    kind: Kind,
    matches: Vec<crate::store::StoredMatch>,
    now: DateTime<Utc>,
) -> Result<digest::Digest, NotifyError> {
    let order: HashMap<&str, usize> = dcfg
        .watches
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let mut sections: Vec<Section> = dcfg
        .watches
        .iter()
        .map(|w| Section {
            watch_id: w.clone(),
            watch_name: cfg.watch_name(w),
            stories: Vec::new(),
        })
        .collect();
    // One entry per story (cluster): under the first of the digest's watches it matched, led
    // by its best-scored item; the other items of the cluster become "also reported by".
    let mut placed: HashMap<i64, (usize, usize)> = HashMap::new();
    let mut sorted = matches;
    sorted.sort_by_key(|m| {
        order
            .get(m.watch_id.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    for m in sorted {
        let Some(&si) = order.get(m.watch_id.as_str()) else {
            continue;
        };
        if let Some(&(psi, pk)) = placed.get(&m.cluster_id) {
            let story = &mut sections[psi].stories[pk];
            let other = (m.item.feed_name.clone(), m.item.link.clone());
            if story.item_id != m.item_id && !story.also_reported.contains(&other) {
                story.also_reported.push(other);
            }
            continue;
        }
        placed.insert(m.cluster_id, (si, sections[si].stories.len()));
        sections[si].stories.push(Story {
            item_id: m.item_id,
            title: m.item.title.clone(),
            link: m.item.link.clone(),
            feed_name: m.item.feed_name.clone(),
            published: m.item.published.or(Some(m.first_seen_at)),
            summary: if m.item.summary.is_empty() {
                m.item.content.clone()
            } else {
                m.item.summary.clone()
            },
            summary_field: if m.item.summary.is_empty() {
                Field::Content
            } else {
                Field::Summary
            },
            score: m.score,
            evidence: m.evidence,
            also_reported: Vec::new(),
        });
    }
    sections.retain(|s| !s.stories.is_empty() || dcfg.send_empty);
    let configured: std::collections::HashSet<&str> =
        cfg.feeds.iter().map(|f| f.url.as_str()).collect();
    let mut feed_health = Vec::new();
    for f in store.feeds()? {
        if !configured.contains(f.url.as_str()) {
            continue;
        }
        let problem = if f.gone_at.is_some() {
            Some("gone (HTTP 410): polling stopped; remove it from the config".to_string())
        } else if let Some(to) = &f.moved_to {
            Some(format!("moved permanently to {to}: update the config"))
        } else if f.consecutive_failures >= FAILING_AFTER {
            Some(format!(
                "failing for {} polls: {}",
                f.consecutive_failures,
                f.last_error.as_deref().unwrap_or("unknown error")
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            feed_health.push(FeedProblem {
                feed_name: f.name.clone(),
                url: f.url.clone(),
                problem,
            });
        }
    }
    Ok(digest::Digest {
        id: dcfg.id.clone(),
        title: dcfg.title.clone(),
        generated_at: now,
        timezone: dcfg.timezone,
        sections,
        feed_health,
        kind: match kind {
            Kind::Digest => DigestKind::Digest,
            Kind::Alert => DigestKind::Alert,
        },
    })
}

/// `via = "log"`: one structured event per story, per feed problem, and a summary, at info
/// level (a digest is the point of the service, so it is worth the journal lines). The records
/// come from `digest::log_lines`, which cleans feed text so a title cannot forge log lines.
fn log_digest(d: &digest::Digest, limits: &RenderLimits, delivery: &Delivery) {
    for rec in digest::log_lines(d, limits) {
        match rec {
            LogRecord::Story(s) => tracing::info!(
                digest = %s.digest_id, watch = %s.watch_id, item = s.item_id, score = s.score,
                feed = %s.feed_name, link = s.link.as_deref().unwrap_or(""),
                published = ?s.published, matched = %s.matched, "{}", s.title
            ),
            LogRecord::FeedProblem {
                digest_id,
                feed_name,
                url,
                problem,
            } => tracing::warn!(
                digest = %digest_id, feed = %feed_name, url = %url, "{problem}"
            ),
            LogRecord::Summary {
                digest_id,
                kind,
                subject,
                shown,
                trimmed,
                feed_problems,
                ..
            } => {
                tracing::info!(
                    digest = %digest_id, delivery = delivery.id, kind = kind.as_str(),
                    stories = shown, trimmed, feed_problems, "{subject}"
                )
            }
        }
    }
}
