//! Notification: turns due digests and immediate alerts into deliveries, and deliveries into
//! log records, mail or webhook POSTs, through the store's durable outbox.
//!
//! In: the compiled config ([`Loaded`]), the [`Store`], the clock. Out: tracing events (for
//! `via = "log"`), SMTP transactions (for `via = "email"`), HTTP POSTs (for
//! `via = "webhook"`), outbox state changes.
//!
//! The order of operations is what makes delivery exactly-once from the user's view:
//! 1. **claim** — `Store::claim` creates a delivery and takes its stories in one transaction;
//! 2. **render** — `digest::render` builds the message from what was claimed (pure), within
//!    the size budget; stories that do not fit are handed back to the store
//!    (`Store::release`, one transaction) for the next digest before anything is sent;
//! 3. **send** — the log, the SMTP server (recipient by recipient) or the webhook receiver
//!    (a 2xx) accepts it;
//! 4. **mark** — only then `Store::record_recipient` and `Store::mark_sent`.
//!
//! # The send path
//! Steps 1, 2 and 4 touch the store and run in the caller's task; step 3 does not. For mail,
//! [`Notifier::start_due`] turns each due delivery into a [`SendJob`] — owned, `Send`, no
//! store — that the daemon spawns; the job reports a [`SendEvent`] per recipient and a final
//! one, which the daemon hands back to [`Notifier::record`] between two poll results. A job
//! carries its own deadline (the output's, e.g. per SMTP phase), so nothing the relay does can
//! hold up polling, the watchdog or shutdown; a job dropped by shutdown leaves its delivery
//! pending, to be sent on the next start with the same Message-ID. [`Notifier::tick`] and
//! [`Notifier::flush`] run the same jobs inline (tests, and callers that may wait).
//!
//! # Outcomes
//! Per recipient, classified in `retry`: accepted → sent; refused for good (550 to RCPT, 554 to
//! the message) → that recipient failed, the others still served; transient → the delivery
//! backs off (given up after [`retry::SMTP_GIVE_UP_AFTER`]); operator-fixable (535, TLS, no
//! STARTTLS, too large even trimmed, a digest a reload removed) → the delivery is **held**:
//! pending, shown in `STATUS=`, `feeds` and the log every cycle, and retried after the next
//! reload or start or on `digest --resend` — never given up, never looping. "Too large" is
//! retried once with a quarter of the stories first.
//!
//! A webhook is a job with one recipient (`"webhook"`): its POST carries the delivery's
//! Message-ID as `Idempotency-Key` on every attempt; 408/429/5xx and no answer are transient
//! (never retried before the receiver's `Retry-After`), any other answer refuses it for good.
//!
//! Outputs are a closed set ([`Via`]: log, email, webhook; and [`Output`] for what a job
//! sends through) behind one dispatch point (`Notifier::start`): adding one is a change here
//! and in `config`; the deadline, the events and the outcome handling are shared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::{Loaded, Via};
use crate::digest::{
    self, DigestKind, FeedProblem, LogRecord, RenderLimits, Rendered, Section, SetWeights, Story,
};
use crate::item::Field;
use crate::logging::untrusted;
use crate::mail::{MailError, Mailer, SendError};
use crate::retry::{self, SendClass};
use crate::store::{
    Candidate, Choice, Delivery, DigestState, Kind, RecipientOutcome, Store, StoreError,
};
use crate::webhook;

/// Failures below this count are not worth a line in a digest; a feed failing this many polls
/// in a row is.
const FAILING_AFTER: u32 = 3;
/// Lead length in digests, in characters: about two lines of the 640px column.
const SNIPPET_CHARS: usize = 180;
/// After a "message too large" refusal the one retry carries this fraction of the stories
/// (the relay did not say its limit; a quarter is small enough for any sane one).
const TRIM_DIVISOR: usize = 4;
/// Attempts to fit a message under `smtp.max_message_bytes` by rendering fewer stories, before
/// the relay sees it.
const MAX_FIT_ROUNDS: usize = 8;
/// A delivery that failed for good is reported to the operator for this long (or until
/// `digest --resend` sends it).
const FAILED_REPORTED_FOR: chrono::Duration = chrono::Duration::days(7);

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("a digest has via = \"email\" but the config has no [smtp] section")]
    NoSmtp,
    /// `digest --resend` cannot do what was asked; the text says why and what to do.
    #[error("{0}")]
    Resend(String),
    #[error("digest `{digest}`: {source}")]
    Secret {
        digest: String,
        #[source]
        source: crate::secret::SecretError,
    },
    #[error(transparent)]
    WebhookClient(#[from] webhook::ClientError),
}

/// What one pass did, for logs, status, exit codes and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Deliveries accepted (by at least one recipient, or the log).
    pub sent: usize,
    /// Deliveries deferred: retried later by themselves.
    pub retrying: usize,
    /// Deliveries failed for good (every recipient refused, or given up).
    pub failed: usize,
    /// Deliveries held for the operator (see the module doc).
    pub held: usize,
    /// Recipients refused for good in this pass.
    pub recipients_failed: usize,
    /// The rendered text of each delivery logged in this pass, and one line per mail outcome
    /// (what `run --once` prints).
    pub texts: Vec<String>,
}

/// What a job sends through. A closed set: a new output kind (a webhook) is a new variant
/// with its own `send_one`; deadlines, events and outcomes are shared.
enum Output {
    Mail {
        mailer: Arc<Mailer>,
        /// The formatted message, the same bytes for every recipient.
        body: Arc<Vec<u8>>,
    },
    /// One POST to the digest's webhook; `key` is the delivery's stable id.
    Webhook {
        client: reqwest::Client,
        endpoint: Arc<webhook::Endpoint>,
        payload: webhook::Payload,
        key: String,
    },
}

/// The one recipient a webhook delivery has (its URL may change with a reload; the
/// delivery goes to the one configured when it is attempted).
const WEBHOOK_RECIPIENT: &str = "webhook";

impl Output {
    /// The longest one recipient may take, a backstop behind the output's own deadlines.
    fn deadline_per_recipient(&self) -> Duration {
        match self {
            Output::Mail { mailer, .. } => retry::smtp_send_deadline(mailer.timeout()),
            // The POST has its own deadline; this one only backs it up.
            Output::Webhook { endpoint, .. } => endpoint.timeout + Duration::from_secs(5),
        }
    }

    async fn send_one(&self, recipient: &str) -> Result<String, SendError> {
        match self {
            Output::Mail { mailer, body } => mailer.send_to(recipient, body).await,
            Output::Webhook {
                client,
                endpoint,
                payload,
                key,
            } => webhook::post(client, endpoint, payload, key, Utc::now())
                .await
                .map(|a| a.reply)
                .map_err(webhook_send_error),
        }
    }
}

/// Facts about one attempt that outcome handling needs, carried through the job.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery: Delivery,
    pub subject: String,
    pub shown: usize,
    /// Stories claimed (shown + trimmed).
    pub stories: usize,
}

/// One attempt of one delivery, ready to run anywhere: it owns what it sends and never
/// touches the store.
pub struct SendJob {
    attempt: Attempt,
    output: Output,
    /// The recipients still pending, in order.
    recipients: Vec<String>,
}

/// What a running job reports, in order: one `Recipient` per recipient tried, then `Done`.
/// (A few events per delivery: the size difference of the variants costs nothing.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SendEvent {
    Recipient {
        delivery_id: i64,
        address: String,
        result: Result<String, SendError>,
    },
    Done {
        // Boxed: an attempt carries a whole delivery row, the per-recipient events are many.
        attempt: Box<Attempt>,
        /// What stopped the attempt early, or the last temporary failure.
        stop: Option<SendError>,
    },
}

impl SendJob {
    pub fn delivery_id(&self) -> i64 {
        self.attempt.delivery.id
    }

    /// The whole job's deadline: every recipient's.
    pub fn deadline(&self) -> Duration {
        self.output
            .deadline_per_recipient()
            .saturating_mul(self.recipients.len().max(1) as u32)
    }

    /// Sends to each pending recipient in turn, reporting each outcome at once (so a
    /// recipient served is recorded even if a later one hangs), then `Done`. Stops early when
    /// going on cannot help: the relay is unreachable, wants the operator, or finds the
    /// message too large. The deadline makes the job end whatever the other side does.
    pub async fn run(self, events: mpsc::UnboundedSender<SendEvent>) {
        let deadline = self.deadline();
        let SendJob {
            attempt,
            output,
            recipients,
        } = self;
        let id = attempt.delivery.id;
        let tx = events.clone();
        let work = async {
            let mut stop = None;
            for address in recipients {
                let result = output.send_one(&address).await;
                let halt = match &result {
                    Ok(_) => false,
                    Err(e) => match e.class {
                        SendClass::Hold | SendClass::TooLarge => true,
                        // No reply at all: the relay is down or silent; the next recipient
                        // would only wait for the same.
                        SendClass::Transient => e.code.is_none(),
                        SendClass::RecipientRefused | SendClass::MessageRefused => false,
                    },
                };
                if let Err(e) = &result {
                    if e.class != SendClass::RecipientRefused
                        && e.class != SendClass::MessageRefused
                    {
                        stop = Some(e.clone());
                    }
                }
                let _ = tx.send(SendEvent::Recipient {
                    delivery_id: id,
                    address,
                    result,
                });
                if halt {
                    break;
                }
            }
            stop
        };
        let stop = match tokio::time::timeout(deadline, work).await {
            Ok(stop) => stop,
            Err(_) => Some(SendError {
                class: SendClass::Transient,
                transient: true,
                code: None,
                retry_after: None,
                message: format!(
                    "the send did not finish within {}",
                    humantime::format_duration(deadline)
                ),
            }),
        };
        let _ = events.send(SendEvent::Done {
            attempt: Box::new(attempt),
            stop,
        });
    }
}

/// Something the operator has to see: in `STATUS=`, `feeds` and the log at error level.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A delivery waits for the operator.
    Held { delivery: Delivery },
    /// A recipient refused for good, still configured.
    Recipient {
        delivery_id: i64,
        digest_id: String,
        address: String,
        error: String,
    },
    /// A delivery failed for good recently and was not resent.
    Failed { delivery: Delivery },
}

impl Problem {
    /// One line: what happened and what to do.
    pub fn line(&self) -> String {
        match self {
            Problem::Held { delivery: d } => format!(
                "delivery {} of digest `{}` is held: {} (fix it and reload, or `policywatch \
                 digest --resend {}`)",
                d.id,
                d.digest_id,
                d.last_error.as_deref().unwrap_or("unknown error"),
                d.id
            ),
            Problem::Recipient {
                delivery_id,
                digest_id,
                address,
                error,
            } => format!(
                "recipient {address} of digest `{digest_id}` refused delivery {delivery_id}: \
                 {error} (fix the address, then `policywatch digest --resend {delivery_id} \
                 --to ADDR`)"
            ),
            Problem::Failed { delivery: d } => format!(
                "delivery {} of digest `{}` failed: {} (`policywatch digest --resend {}`)",
                d.id,
                d.digest_id,
                d.last_error.as_deref().unwrap_or("unknown error"),
                d.id
            ),
        }
    }
}

/// Every delivery problem the operator should see now. A refused recipient counts while it is
/// still in some digest's `to` and nothing has served it since.
pub fn problems(
    store: &Store,
    cfg: &Loaded,
    now: DateTime<Utc>,
) -> Result<Vec<Problem>, NotifyError> {
    let mut out: Vec<Problem> = store
        .held_deliveries()?
        .into_iter()
        .map(|delivery| Problem::Held { delivery })
        .collect();
    let configured: HashSet<&str> = cfg
        .digests
        .iter()
        .flat_map(|d| d.to.iter().map(String::as_str))
        .collect();
    let mut seen = HashSet::new();
    for p in store.recipient_problems()? {
        if configured.contains(p.address.as_str()) && seen.insert(p.address.clone()) {
            out.push(Problem::Recipient {
                delivery_id: p.delivery_id,
                digest_id: p.digest_id,
                address: p.address,
                error: p.error,
            });
        }
    }
    for d in store.failed_deliveries()? {
        if now - d.created_at <= FAILED_REPORTED_FOR {
            out.push(Problem::Failed { delivery: d });
        }
    }
    Ok(out)
}

pub struct Notifier {
    /// The relay, when some digest goes by email. Built once per config (the password is read
    /// here, so a wrong password path fails at start or reload, not at 07:30). Shared with
    /// the send jobs in flight.
    mailer: Option<Arc<Mailer>>,
    /// The webhook client and each webhook digest's endpoint (its secret read here, like the
    /// SMTP password), when some digest posts to a webhook.
    webhooks: Option<Webhooks>,
    /// Stories of one section the claim of a backlog takes first ([`CLAIM_CHUNK`]).
    claim_cap: usize,
}

struct Webhooks {
    client: reqwest::Client,
    endpoints: HashMap<String, Arc<webhook::Endpoint>>,
}

impl Notifier {
    /// Builds the notifier for a config; sets up SMTP (and reads its password) only when a
    /// digest is sent by email.
    pub fn new(cfg: &Loaded) -> Result<Notifier, NotifyError> {
        let needs_mail = cfg.digests.iter().any(|d| d.via == Via::Email);
        let mailer = match (&cfg.config.smtp, needs_mail) {
            (Some(smtp), true) => Some(Arc::new(Mailer::new(smtp.get_ref())?)),
            (None, true) => return Err(NotifyError::NoSmtp),
            (_, false) => None,
        };
        let mut endpoints = HashMap::new();
        for d in &cfg.digests {
            if let Some(t) = &d.webhook {
                let ep =
                    webhook::Endpoint::new(t, &|k| std::env::var(k).ok()).map_err(|source| {
                        NotifyError::Secret {
                            digest: d.id.clone(),
                            source,
                        }
                    })?;
                endpoints.insert(d.id.clone(), Arc::new(ep));
            }
        }
        let webhooks = match endpoints.is_empty() {
            true => None,
            false => Some(Webhooks {
                client: webhook::client()?,
                endpoints,
            }),
        };
        Ok(Notifier {
            mailer,
            webhooks,
            claim_cap: CLAIM_CHUNK,
        })
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

    /// Fires scheduled digests that are due (a firing missed while the daemon was down fires
    /// once, now) and claims immediate alerts (rate-capped). Sends nothing.
    pub fn claim_due(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        for d in &cfg.digests {
            let st = state_of(store, d, now)?;
            if next_firing(d, &st).is_some_and(|t| t <= now) {
                self.claim(store, d, Kind::Digest, now)?;
            }
            if !d.immediate.is_empty() {
                let gap =
                    chrono::Duration::from_std(cfg.config.daemon.alert_min_gap).unwrap_or_default();
                // map_or, not is_none_or: the crate's MSRV is 1.80.
                #[allow(clippy::unnecessary_map_or)]
                if st.last_alert_at.map_or(true, |t| now - t >= gap) {
                    self.claim(store, d, Kind::Alert, now)?;
                }
            }
        }
        Ok(())
    }

    /// Claims every digest now, whatever its schedule (`run --once`). Sends nothing.
    pub fn claim_all(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        for d in &cfg.digests {
            self.claim(store, d, Kind::Digest, now)?;
        }
        Ok(())
    }

    /// Claims a delivery of digest `d` (its scheduled digest, or its immediate alert) and what
    /// it carries: no more of a large backlog than one message can show ([`choose`]).
    fn claim(
        &self,
        store: &mut Store,
        d: &crate::config::Digest,
        kind: Kind,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, NotifyError> {
        let watches = watches_of(d, kind);
        // An empty alert is never sent.
        let send_empty = kind == Kind::Digest && d.send_empty;
        let cap = self.claim_cap;
        Ok(store.claim_with(
            &d.id,
            kind,
            d.via.as_str(),
            watches,
            now,
            send_empty,
            &mut |found| choose(found, watches, d, cap),
        )?)
    }

    /// One pass, inline: claim what is due, then attempt every due delivery and wait for it.
    pub async fn tick(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        self.claim_due(store, cfg, now)?;
        self.deliver_inline(store, cfg, now).await
    }

    /// Claims every digest now, then delivers, inline.
    pub async fn flush(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        self.claim_all(store, cfg, now)?;
        self.deliver_inline(store, cfg, now).await
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

    async fn deliver_inline(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        let mut report = Report::default();
        for job in self.start_due(store, cfg, now, &HashSet::new(), &mut report)? {
            let (tx, mut rx) = mpsc::unbounded_channel();
            job.run(tx).await;
            while let Ok(ev) = rx.try_recv() {
                self.record(store, ev, now, &mut report)?;
            }
        }
        Ok(report)
    }

    /// Attempts every due delivery not in `busy` (those with a job in flight): a log delivery
    /// is written and marked here; a mail delivery is rendered, fitted and returned as a
    /// [`SendJob`] for the caller to run — off its loop — and feed back to [`Notifier::record`].
    pub fn start_due(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        now: DateTime<Utc>,
        busy: &HashSet<i64>,
        report: &mut Report,
    ) -> Result<Vec<SendJob>, NotifyError> {
        let mut jobs = Vec::new();
        for delivery in store.due_deliveries(now)? {
            if busy.contains(&delivery.id) {
                continue;
            }
            if let Some(job) = self.start(store, cfg, &delivery, now, report)? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    fn start(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        delivery: &Delivery,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<Option<SendJob>, NotifyError> {
        let Some(dcfg) = cfg.digests.iter().find(|d| d.id == delivery.digest_id) else {
            // The digest was removed from the config after claiming: its stories stay claimed
            // and the delivery waits, visibly, for the digest to come back (a reload), rather
            // than being mailed to nobody or dropped.
            let msg = format!(
                "digest `{}` is no longer configured: add it back and reload to send it",
                delivery.digest_id
            );
            hold(store, delivery, &msg, report)?;
            return Ok(None);
        };
        // After a "too large" refusal the relay's real limit is below what it announced: aim
        // at a quarter, like the story count (the overflow goes to the next digest).
        let max_bytes = match delivery.trim_to {
            Some(_) => message_budget(cfg, dcfg) / TRIM_DIVISOR,
            None => message_budget(cfg, dcfg),
        };
        let (
            Prepared {
                d, extras, limits, ..
            },
            kept,
        ) = self.ready(store, cfg, dcfg, delivery, now, max_bytes)?;
        match dcfg.via {
            Via::Log => {
                let rendered = kept.unwrap_or_else(|| digest::render(&d, &limits));
                log_digest(&d, &limits, delivery);
                store.mark_sent(delivery.id, now, "logged")?;
                store.record_shown(
                    delivery.id,
                    rendered.shown,
                    rendered.shown + rendered.trimmed,
                )?;
                report.sent += 1;
                report.texts.push(rendered.text);
                Ok(None)
            }
            Via::Email => self.mail_job(store, dcfg, &d, delivery, limits, report),
            Via::Webhook => {
                let notice = webhook::notice(
                    &d,
                    &delivery.message_id,
                    delivery.created_at,
                    &extras,
                    &limits,
                );
                self.webhook_job(store, dcfg, &notice, delivery, &delivery.message_id, report)
            }
        }
    }

    /// Assembles what `delivery` claims within `max_bytes` and hands what does not fit back to
    /// the store ([`hand_back_overflow`]): what is left is the message to send. When nothing
    /// was handed back it also returns the layout that found so: that layout is then the
    /// message's render (rendering is pure), and the log output need not lay it out again.
    fn ready(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        dcfg: &crate::config::Digest,
        delivery: &Delivery,
        now: DateTime<Utc>,
        max_bytes: usize,
    ) -> Result<(Prepared, Option<Rendered>), NotifyError> {
        let mut prepared = prepare(store, cfg, dcfg, delivery, now, max_bytes)?;
        let mut probe = digest::render(&prepared.d, &prepared.limits);
        let mut chunk = self.claim_cap;
        let watches = watches_of(dcfg, delivery.kind);
        while !covers(&prepared.d, &probe, self.claim_cap) {
            // The message reaches the end of what the claim took of a section: take the next
            // best stories (twice as many as last time), as a claim of everything would have
            // had them, and lay it out again.
            chunk = chunk.saturating_mul(2);
            let taken = store.claim_more(delivery.id, watches, &mut |found| {
                choose(found, watches, dcfg, chunk)
            })?;
            tracing::debug!(
                delivery = delivery.id,
                stories = taken,
                "claimed more of the backlog"
            );
            if taken == 0 {
                break;
            }
            let delivery = store.delivery(delivery.id)?;
            prepared = prepare(store, cfg, dcfg, &delivery, now, max_bytes)?;
            probe = digest::render(&prepared.d, &prepared.limits);
        }
        let handed =
            hand_back_overflow(store, delivery, &mut prepared.d, &prepared.clusters, &probe)?;
        Ok((prepared, (!handed).then_some(probe)))
    }

    /// `via = "webhook"`: render the notice in the digest's format and make the job that
    /// POSTs it, with `key` as its `Idempotency-Key`.
    fn webhook_job(
        &self,
        store: &mut Store,
        dcfg: &crate::config::Digest,
        notice: &webhook::Notice,
        delivery: &Delivery,
        key: &str,
        report: &mut Report,
    ) -> Result<Option<SendJob>, NotifyError> {
        let Some((client, endpoint)) = self
            .webhooks
            .as_ref()
            .and_then(|w| Some((&w.client, w.endpoints.get(&dcfg.id)?)))
        else {
            // Unreachable with a validated config; visible rather than a panic.
            hold(
                store,
                delivery,
                "the digest has no webhook configured",
                report,
            )?;
            return Ok(None);
        };
        let payload = webhook::render(endpoint.format, notice);
        store.ensure_recipients(delivery.id, &[WEBHOOK_RECIPIENT.to_string()])?;
        Ok(Some(SendJob {
            attempt: Attempt {
                delivery: delivery.clone(),
                subject: notice.subject.clone(),
                shown: payload.shown,
                stories: payload.shown + payload.summarised,
            },
            output: Output::Webhook {
                client: client.clone(),
                endpoint: endpoint.clone(),
                payload,
                key: key.to_string(),
            },
            recipients: vec![WEBHOOK_RECIPIENT.to_string()],
        }))
    }

    /// `via = "email"`: fit the message under the relay's size limit and make the job that
    /// sends it to every recipient still pending.
    fn mail_job(
        &self,
        store: &mut Store,
        dcfg: &crate::config::Digest,
        d: &digest::Digest,
        delivery: &Delivery,
        limits: RenderLimits,
        report: &mut Report,
    ) -> Result<Option<SendJob>, NotifyError> {
        let Some(mailer) = &self.mailer else {
            // Unreachable with a validated config; visible rather than a panic.
            hold(store, delivery, "no [smtp] relay is configured", report)?;
            return Ok(None);
        };
        let list_id = mailer.list_id(&dcfg.id);
        // The Date is the claim time, like the Message-ID fixed per delivery: a resend after
        // a crash is the same message, and recipients see when the digest was cut.
        let date = delivery.created_at;
        let recipients = store.ensure_recipients(delivery.id, &dcfg.to)?;
        let to: Vec<String> = recipients.iter().map(|r| r.address.clone()).collect();
        let Some((msg, rendered)) = fit(mailer, d, &to, delivery, &list_id, date, limits, None)
        else {
            let msg = format!(
                "the digest does not fit in smtp.max_message_bytes ({} bytes) even with one \
                 story: raise it to what the relay takes, and reload",
                mailer.max_message_bytes().unwrap_or_default()
            );
            hold(store, delivery, &msg, report)?;
            return Ok(None);
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                fail(store, delivery, &e.to_string(), report)?;
                return Ok(None);
            }
        };
        let attempt = Attempt {
            delivery: delivery.clone(),
            subject: rendered.subject.clone(),
            shown: rendered.shown,
            stories: rendered.shown + rendered.trimmed,
        };
        let pending: Vec<String> = recipients
            .into_iter()
            .filter(|r| r.status == "pending")
            .map(|r| r.address)
            .collect();
        Ok(Some(SendJob {
            attempt,
            output: Output::Mail {
                mailer: mailer.clone(),
                body: Arc::new(msg.formatted()),
            },
            recipients: pending,
        }))
    }

    /// Records what a running job reported. Every `Done` ends in exactly one update of the
    /// delivery (sent, retry, held or failed), so no delivery can loop.
    pub fn record(
        &self,
        store: &mut Store,
        ev: SendEvent,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), NotifyError> {
        match ev {
            SendEvent::Recipient {
                delivery_id,
                address,
                result,
            } => {
                let outcome = match &result {
                    Ok(reply) => RecipientOutcome::Sent(reply.clone()),
                    Err(e)
                        if matches!(
                            e.class,
                            SendClass::RecipientRefused | SendClass::MessageRefused
                        ) =>
                    {
                        tracing::error!(
                            delivery = delivery_id, recipient = %address, code = e.code,
                            "recipient refused for good; the other recipients still get the \
                             digest: {}", untrusted(&e.message)
                        );
                        report.recipients_failed += 1;
                        report.texts.push(format!(
                            "delivery {delivery_id}: recipient {address} refused for good: {}",
                            e.message
                        ));
                        RecipientOutcome::Failed(e.message.clone())
                    }
                    Err(e) => RecipientOutcome::Deferred(e.message.clone()),
                };
                store.record_recipient(delivery_id, &address, &outcome, now)?;
                Ok(())
            }
            SendEvent::Done { attempt, stop } => self.finish(store, *attempt, stop, now, report),
        }
    }

    fn finish(
        &self,
        store: &mut Store,
        attempt: Attempt,
        stop: Option<SendError>,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), NotifyError> {
        let delivery = store.delivery(attempt.delivery.id)?;
        if delivery.status != "pending" {
            return Ok(());
        }
        let recipients = store.recipients(delivery.id)?;
        if recipients.iter().all(|r| r.status != "pending") {
            return conclude(store, &delivery, &attempt, now, report);
        }
        let e = stop.unwrap_or_else(|| SendError {
            class: SendClass::Transient,
            transient: true,
            code: None,
            retry_after: None,
            message: "not every recipient was tried".into(),
        });
        match e.class {
            SendClass::Hold => hold(store, &delivery, &e.message, report),
            SendClass::TooLarge if delivery.trim_to.is_none() && attempt.shown > 1 => {
                let trim = (attempt.shown / TRIM_DIVISOR).max(1);
                tracing::warn!(
                    delivery = delivery.id, digest = %delivery.digest_id, stories = attempt.shown,
                    trim_to = trim, "relay refused the digest as too large; retrying once with fewer stories: {}",
                    untrusted(&e.message)
                );
                store.mark_retry(delivery.id, &e.message, now, Some(trim))?;
                report.retrying += 1;
                report.texts.push(format!(
                    "mail refused as too large, retrying with {trim} stories: {}",
                    e.message
                ));
                Ok(())
            }
            SendClass::TooLarge => {
                let msg = format!(
                    "the relay refuses even the trimmed digest ({} stories) as too large: set \
                     [smtp] max_message_bytes to the relay's limit (the digest is then fitted \
                     under it) and reload; {}",
                    attempt.shown, e.message
                );
                hold(store, &delivery, &msg, report)
            }
            _ => {
                let age = (now - delivery.created_at).to_std().unwrap_or_default();
                if age >= retry::SMTP_GIVE_UP_AFTER {
                    let msg = format!(
                        "gave up after {} attempts over {}: {}",
                        delivery.attempts + 1,
                        humantime::format_duration(retry::SMTP_GIVE_UP_AFTER),
                        e.message
                    );
                    for r in recipients.iter().filter(|r| r.status == "pending") {
                        let failed = RecipientOutcome::Failed(msg.clone());
                        store.record_recipient(delivery.id, &r.address, &failed, now)?;
                    }
                    return conclude(store, &delivery, &attempt, now, report);
                }
                // The backoff, but never before the receiver's Retry-After (webhooks).
                let at = retry::delivery_next_attempt(
                    now,
                    delivery.attempts + 1,
                    e.retry_after,
                    rand::random::<f64>(),
                );
                let what = if delivery.via == Via::Webhook.as_str() {
                    "webhook"
                } else {
                    "mail"
                };
                tracing::warn!(
                    delivery = delivery.id, digest = %delivery.digest_id, attempt = delivery.attempts + 1,
                    retry_at = %at, "{what} deferred: {}", untrusted(&e.message)
                );
                store.mark_retry(delivery.id, &e.message, at, None)?;
                report.retrying += 1;
                report.texts.push(format!(
                    "{what} deferred, next attempt at {at}: {} — {}",
                    attempt.subject, e.message
                ));
                Ok(())
            }
        }
    }
}

impl Notifier {
    /// `digest --resend DELIVERY [--to ADDR…]`. A pending delivery (held or waiting for its
    /// next attempt) is attempted now, as it is: it has never been delivered, so it keeps its
    /// Message-ID. A sent or failed one is sent again — the same stories, rendered the same
    /// way — to `to`, or to the digest's recipients as configured now (a fixed address),
    /// under a new Message-ID with `References:` naming the original: receivers drop a
    /// message whose Message-ID they already have, which would defeat an explicit resend.
    /// Outcomes are recorded on the delivery's recipients; once someone accepted it, its
    /// failures stop being reported.
    pub async fn resend(
        &self,
        store: &mut Store,
        cfg: &Loaded,
        id: i64,
        to: &[String],
        now: DateTime<Utc>,
    ) -> Result<Report, NotifyError> {
        let delivery = match store.delivery(id) {
            Ok(d) => d,
            Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => {
                return Err(NotifyError::Resend(format!(
                    "there is no delivery {id}: `policywatch stories` lists them"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let Some(dcfg) = cfg.digests.iter().find(|d| d.id == delivery.digest_id) else {
            return Err(NotifyError::Resend(format!(
                "delivery {id} belongs to digest `{}`, which is not configured: add it back to \
                 the config to send it",
                delivery.digest_id
            )));
        };
        let mut report = Report::default();
        if delivery.status == "pending" {
            if !to.is_empty() {
                return Err(NotifyError::Resend(format!(
                    "delivery {id} has not gone out yet: `digest --resend {id}` sends it to its \
                     recipients now; --to is for sending a delivered one again"
                )));
            }
            store.make_due(id, now)?;
            let delivery = store.delivery(id)?;
            if let Some(job) = self.start(store, cfg, &delivery, now, &mut report)? {
                let (tx, mut rx) = mpsc::unbounded_channel();
                job.run(tx).await;
                while let Ok(ev) = rx.try_recv() {
                    self.record(store, ev, now, &mut report)?;
                }
            }
            return Ok(report);
        }
        // What the delivery still claims is what it showed (its overflow was handed back
        // before it was sent), so the resend renders the same stories and the same "N more"
        // line within today's budget.
        let Prepared {
            d, extras, limits, ..
        } = prepare(store, cfg, dcfg, &delivery, now, message_budget(cfg, dcfg))?;
        if dcfg.via == Via::Log {
            let rendered = digest::render(&d, &limits);
            log_digest(&d, &limits, &delivery);
            store.mark_resent(id, now)?;
            report.sent += 1;
            report.texts.push(rendered.text);
            return Ok(report);
        }
        if dcfg.via == Via::Webhook {
            if !to.is_empty() {
                return Err(NotifyError::Resend(
                    "--to names mail recipients; this digest posts to a webhook".into(),
                ));
            }
            // A new idempotency key: the receiver may drop a key it has seen, which would
            // defeat an explicit resend.
            let key = format!(
                "resend.{id}.{}.{:08x}@policywatch",
                now.format("%Y%m%d%H%M%S"),
                rand::random::<u32>()
            );
            let notice = webhook::notice(&d, &key, delivery.created_at, &extras, &limits);
            let Some(job) = self.webhook_job(store, dcfg, &notice, &delivery, &key, &mut report)?
            else {
                return Ok(report);
            };
            let (tx, mut rx) = mpsc::unbounded_channel();
            job.run(tx).await;
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    SendEvent::Recipient {
                        result: Ok(reply), ..
                    } => {
                        store.mark_resent(id, now)?;
                        report.sent += 1;
                        report.texts.push(format!(
                            "resent delivery {id} to the webhook as {key}: {} ({reply})",
                            notice.subject
                        ));
                    }
                    SendEvent::Recipient { result: Err(e), .. } => {
                        report.failed += 1;
                        report.texts.push(format!("not resent: {}", e.message));
                    }
                    SendEvent::Done { .. } => {}
                }
            }
            return Ok(report);
        }
        let Some(mailer) = &self.mailer else {
            return Err(NotifyError::NoSmtp);
        };
        let recipients: Vec<String> = if to.is_empty() {
            dcfg.to.clone()
        } else {
            to.to_vec()
        };
        let message_id = format!(
            "resend.{id}.{}.{:08x}@policywatch",
            now.format("%Y%m%d%H%M%S"),
            rand::random::<u32>()
        );
        let fresh = Delivery {
            message_id: message_id.clone(),
            ..delivery.clone()
        };
        let list_id = mailer.list_id(&dcfg.id);
        let original = Some(delivery.message_id.as_str());
        let fitted = fit(
            mailer,
            &d,
            &recipients,
            &fresh,
            &list_id,
            now,
            limits,
            original,
        );
        let Some((msg, rendered)) = fitted else {
            return Err(NotifyError::Resend(
                "the digest does not fit in smtp.max_message_bytes even with one story".into(),
            ));
        };
        let msg = msg?;
        let body = msg.formatted();
        let mut accepted = 0;
        for addr in &recipients {
            let outcome = match mailer.send_to(addr, &body).await {
                Ok(reply) => {
                    accepted += 1;
                    report.texts.push(format!(
                        "resent delivery {id} to {addr} as <{message_id}>: {} ({reply})",
                        rendered.subject
                    ));
                    RecipientOutcome::Sent(reply)
                }
                Err(e) => {
                    report
                        .texts
                        .push(format!("not resent to {addr}: {}", e.message));
                    if e.transient {
                        report.retrying += 1;
                        RecipientOutcome::Deferred(e.message)
                    } else {
                        report.recipients_failed += 1;
                        RecipientOutcome::Failed(e.message)
                    }
                }
            };
            store.record_recipient(id, addr, &outcome, now)?;
        }
        if accepted > 0 {
            store.mark_resent(id, now)?;
            report.sent += 1;
        }
        Ok(report)
    }
}

/// Renders the digest and builds its message, rendering fewer stories until it fits under
/// `smtp.max_message_bytes`. `None`: it does not fit even with one story. `Some(Err)`: the
/// message cannot be built at all.
#[allow(clippy::too_many_arguments)]
fn fit(
    mailer: &Mailer,
    d: &digest::Digest,
    to: &[String],
    delivery: &Delivery,
    list_id: &str,
    date: DateTime<Utc>,
    limits: RenderLimits,
    references: Option<&str>,
) -> Option<(Result<lettre::Message, MailError>, Rendered)> {
    let mut max_stories = limits.max_stories;
    for _ in 0..MAX_FIT_ROUNDS {
        let rendered = digest::render(
            d,
            &RenderLimits {
                max_stories,
                ..limits
            },
        );
        let built = mailer.build_message_referring(
            to,
            &rendered,
            &delivery.message_id,
            date,
            list_id,
            references,
        );
        match built {
            Ok(msg) => return Some((Ok(msg), rendered)),
            Err(MailError::TooLarge { size, max }) if rendered.shown > 1 => {
                // Scale by how far over the limit we are, with a margin for the markup
                // that does not shrink; always at least one story fewer.
                let scaled = rendered.shown as f64 * max as f64 / size.max(1) as f64 * 0.9;
                max_stories = (scaled as usize).clamp(1, rendered.shown - 1);
            }
            Err(MailError::TooLarge { .. }) => return None,
            Err(e) => return Some((Err(e), rendered)),
        }
    }
    None
}

/// A webhook POST's failure in the shape every job reports: transient (with the receiver's
/// `Retry-After`) or refused for good, like a mail the server refused.
fn webhook_send_error(e: webhook::PostError) -> SendError {
    SendError {
        class: if e.transient() {
            SendClass::Transient
        } else {
            SendClass::MessageRefused
        },
        transient: e.transient(),
        code: e.status,
        retry_after: e.retry_after,
        message: e.message,
    }
}

/// Per lead item: its language, and every watch of the delivery its story (cluster) matched,
/// in claim order — what the webhook formats show beyond `digest::Story`.
fn story_extras(matches: &[crate::store::StoredMatch]) -> webhook::Extras {
    let mut by_cluster: HashMap<i64, Vec<String>> = HashMap::new();
    for m in matches {
        let ws = by_cluster.entry(m.cluster_id).or_default();
        if !ws.contains(&m.watch_id) {
            ws.push(m.watch_id.clone());
        }
    }
    matches
        .iter()
        .map(|m| {
            (
                m.item_id,
                webhook::StoryExtra {
                    lang: m.item.lang.clone(),
                    watches: by_cluster.get(&m.cluster_id).cloned().unwrap_or_default(),
                    first_seen: Some(m.first_seen_at),
                },
            )
        })
        .collect()
}

/// Every recipient has an outcome: sent when at least one accepted, failed when none did.
fn conclude(
    store: &mut Store,
    delivery: &Delivery,
    attempt: &Attempt,
    now: DateTime<Utc>,
    report: &mut Report,
) -> Result<(), NotifyError> {
    let recipients = store.recipients(delivery.id)?;
    let sent: Vec<&crate::store::Recipient> =
        recipients.iter().filter(|r| r.status == "sent").collect();
    let failed: Vec<&crate::store::Recipient> =
        recipients.iter().filter(|r| r.status == "failed").collect();
    if sent.is_empty() {
        if let [only] = failed.as_slice() {
            let why = only.last_error.as_deref().unwrap_or("refused");
            return fail(store, delivery, why, report);
        }
        let why = failed
            .iter()
            .map(|r| {
                format!(
                    "{}: {}",
                    r.address,
                    r.last_error.as_deref().unwrap_or("refused")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return fail(
            store,
            delivery,
            &format!("every recipient failed — {why}"),
            report,
        );
    }
    let reply = sent
        .last()
        .and_then(|r| r.reply.clone())
        .unwrap_or_default();
    let summary = if failed.is_empty() {
        reply.clone()
    } else {
        format!(
            "accepted for {} of {} recipients; {reply}",
            sent.len(),
            recipients.len()
        )
    };
    tracing::info!(
        delivery = delivery.id, digest = %delivery.digest_id, kind = delivery.kind.as_str(),
        message_id = %delivery.message_id, recipients = sent.len(), refused = failed.len(),
        stories = attempt.shown, trimmed = attempt.stories - attempt.shown, reply = %untrusted(&reply),
        "{}: {}", if delivery.via == Via::Webhook.as_str() { "posted" } else { "mailed" },
        untrusted(&attempt.subject)
    );
    store.mark_sent(delivery.id, now, &summary)?;
    store.record_shown(delivery.id, attempt.shown, attempt.stories)?;
    report.sent += 1;
    let names: Vec<&str> = sent.iter().map(|r| r.address.as_str()).collect();
    report.texts.push(if delivery.via == Via::Webhook.as_str() {
        format!("posted to the webhook: {} ({reply})", attempt.subject)
    } else {
        format!(
            "mailed to {}: {} ({reply})",
            names.join(", "),
            attempt.subject
        )
    });
    Ok(())
}

/// An operator-fixable failure: logged at error level, the delivery held (pending, its
/// stories and Message-ID kept) until a reload, a restart or `digest --resend`.
fn hold(
    store: &mut Store,
    delivery: &Delivery,
    msg: &str,
    report: &mut Report,
) -> Result<(), NotifyError> {
    tracing::error!(
        delivery = delivery.id, digest = %delivery.digest_id, message_id = %delivery.message_id,
        "delivery held until the configuration is fixed (reload) or it is resent: {}",
        untrusted(msg)
    );
    store.mark_held(delivery.id, msg)?;
    report.held += 1;
    report.texts.push(format!(
        "delivery {} of digest `{}` held: {msg}",
        delivery.id, delivery.digest_id
    ));
    Ok(())
}

/// A permanent failure: logged at error level, the delivery marked failed (its stories stay
/// claimed, so they are not mailed again by a later digest; `digest --resend` can send it).
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

/// The watches a delivery of `kind` claims matches of: the digest's, or for its immediate
/// alert those that ask for one.
fn watches_of(d: &crate::config::Digest, kind: Kind) -> &[String] {
    match kind {
        Kind::Digest => &d.watches,
        Kind::Alert => &d.immediate,
    }
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
    let (d, _) = assemble(store, cfg, dcfg, Kind::Digest, matches, now)?;
    let limits = RenderLimits {
        max_stories: dcfg.max_stories,
        snippet_chars: SNIPPET_CHARS,
        max_bytes: message_budget(cfg, dcfg),
    };
    Ok(Some(digest::render(&d, &limits)))
}

/// The size budget of one message: [`digest::MAX_MESSAGE_BYTES`] (Gmail's clip), or the
/// relay's `max_message_bytes` when that is smaller, so the first render already fits.
fn message_budget(cfg: &Loaded, dcfg: &crate::config::Digest) -> usize {
    let relay = match dcfg.via {
        Via::Email => cfg
            .config
            .smtp
            .as_ref()
            .and_then(|s| s.get_ref().max_message_bytes),
        // A webhook payload has its own, smaller limits per format (`webhook`), which
        // summarise what does not fit; the digest's budget still hands the rest back.
        Via::Log | Via::Webhook => None,
    };
    relay.map_or(digest::MAX_MESSAGE_BYTES, |r| {
        r.min(digest::MAX_MESSAGE_BYTES)
    })
}

/// Hands the stories that `probe` (the render of `d`) could not fit back to the store (their
/// claims deleted, the delivery's `deferred` count raised, in one transaction) so the next
/// digest carries them; `d` keeps only the stories that fit. Done before the
/// message is sent, so a crash at any point leaves every story either claimed by this pending
/// delivery (re-rendered, and handed back, on restart) or unclaimed for the next digest:
/// nothing is marked delivered unseen. A message that would carry no story at all is left
/// whole (the send path trims or fails it visibly) rather than deferring everything forever.
/// True when it handed stories back (and so changed `d`).
fn hand_back_overflow(
    store: &mut Store,
    delivery: &Delivery,
    d: &mut digest::Digest,
    clusters: &HashMap<i64, i64>,
    probe: &Rendered,
) -> Result<bool, NotifyError> {
    if probe.deferred.is_empty() || probe.shown + probe.listed == 0 {
        return Ok(false);
    }
    let ids: Vec<i64> = probe
        .deferred
        .iter()
        .filter_map(|item| clusters.get(item).copied())
        .collect();
    store.release(delivery.id, &ids)?;
    tracing::info!(
        delivery = delivery.id, digest = %delivery.digest_id, stories = probe.shown + probe.listed,
        deferred = ids.len(), "digest full: {} stories left for the next one", ids.len()
    );
    let gone: std::collections::HashSet<i64> = probe.deferred.iter().copied().collect();
    for s in &mut d.sections {
        s.stories.retain(|st| !gone.contains(&st.item_id));
    }
    d.deferred += ids.len();
    Ok(true)
}

/// The weights of the config's term sets, for the digest's highlights and "why" line (a term
/// written directly in a query is judged by its form: see `digest::SetWeights::weight`).
fn set_weights(cfg: &Loaded) -> SetWeights {
    SetWeights::new(cfg.classifier.set_weights().clone())
}

/// A delivery ready to render: its claimed stories assembled, and the limits it renders in.
struct Prepared {
    d: digest::Digest,
    /// Item id → cluster id, for handing overflow back.
    clusters: HashMap<i64, i64>,
    extras: webhook::Extras,
    limits: RenderLimits,
}

/// Assembles what `delivery` claims, for a first send and a resend alike; only the byte
/// budget differs between them (a first send after a "too large" refusal aims lower).
fn prepare(
    store: &Store,
    cfg: &Loaded,
    dcfg: &crate::config::Digest,
    delivery: &Delivery,
    now: DateTime<Utc>,
    max_bytes: usize,
) -> Result<Prepared, NotifyError> {
    let matches = store.delivery_stories(delivery.id)?;
    let extras = story_extras(&matches);
    let (mut d, clusters) = assemble(store, cfg, dcfg, delivery.kind, matches, now)?;
    d.deferred = delivery.deferred;
    let limits = RenderLimits {
        max_stories: delivery
            .trim_to
            .unwrap_or(dcfg.max_stories)
            .min(dcfg.max_stories),
        snippet_chars: SNIPPET_CHARS,
        max_bytes,
    };
    Ok(Prepared {
        d,
        clusters,
        extras,
        limits,
    })
}

/// One match as [`group`] sees it.
struct RowKey {
    /// Index of its watch among the digest's watches; `None` for a watch the digest does not
    /// show (the match is claimed, never shown).
    section: Option<usize>,
    cluster: i64,
    item_id: i64,
    score: f64,
    published: Option<DateTime<Utc>>,
    first_seen_at: DateTime<Utc>,
}

impl RowKey {
    /// The time its story shows when it leads: published, or else first seen.
    fn story_time(&self) -> Option<DateTime<Utc>> {
        self.published.or(Some(self.first_seen_at))
    }
}

/// A story as [`group`] forms it.
struct Grouped {
    section: usize,
    /// Its matches (indices into the rows), in digest order: the lead first.
    rows: Vec<usize>,
    /// The lead's score, raised by the lead item's matches of other watches.
    score: f64,
}

/// The stories of a set of matches, in the order sections list them: the matches in digest
/// order — the digest's watch order, then best score first, newest, lowest item id — each
/// story (cluster) once, led by its first match, so filed under the first of the digest's
/// watches it matched, by its best item there. What a delivery shows ([`assemble`]) and what
/// a claim takes of a backlog ([`choose`]) are both formed here.
fn group(rows: &[RowKey]) -> Vec<Grouped> {
    let mut idx: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].section.is_some())
        .collect();
    idx.sort_by(|&a, &b| {
        let (a, b) = (&rows[a], &rows[b]);
        a.section
            .cmp(&b.section)
            .then_with(|| b.score.total_cmp(&a.score))
            .then_with(|| b.published.cmp(&a.published))
            .then_with(|| a.item_id.cmp(&b.item_id))
    });
    let mut placed: HashMap<i64, usize> = HashMap::new();
    let mut out: Vec<Grouped> = Vec::new();
    for i in idx {
        let r = &rows[i];
        if let Some(&g) = placed.get(&r.cluster) {
            let story = &mut out[g];
            if rows[story.rows[0]].item_id == r.item_id && r.score > story.score {
                story.score = r.score;
            }
            story.rows.push(i);
            continue;
        }
        placed.insert(r.cluster, out.len());
        out.push(Grouped {
            section: r.section.unwrap_or_default(),
            rows: vec![i],
            score: r.score,
        });
    }
    out
}

/// Stories of one section the claim of a backlog takes first: more than a message shows of a
/// section but for the shortest headlines (a 100 KB digest of two watches lists about 60 of
/// each), so a second claim is rare, and few enough that a backlog of thousands costs a few
/// hundred stories' reading, rendering and handing back.
const CLAIM_CHUNK: usize = 128;

/// What a delivery of `dcfg` claims of `found` (matches of `watches`): everything, unless a
/// section has more than `cap` stories, when only its best `cap` are claimed and the rest
/// stays for the next delivery, counted in its "N more stories" from the start, as if claimed
/// and handed back. The message is the same either way as long as the layout — the top
/// stories, then each section's list in rank order — stops before the end of what was
/// claimed of a section; `Notifier::ready` makes sure, and claims more when it would not.
///
/// Everything is claimed also when a section without stories of its own is kept only for a
/// badge of a story that would not be claimed: that story decides whether the section shows.
fn choose(
    found: &[Candidate],
    watches: &[String],
    dcfg: &crate::config::Digest,
    cap: usize,
) -> Choice {
    // A cut section keeps its share of the top stories: the top is the best of all sections.
    let cap = cap.max(digest::TOP_MAX);
    let order: HashMap<&str, usize> = dcfg
        .watches
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let rows: Vec<RowKey> = found
        .iter()
        .map(|c| RowKey {
            section: order.get(watches[c.watch].as_str()).copied(),
            cluster: c.cluster_id,
            item_id: c.item_id,
            score: c.score,
            published: c.published,
            first_seen_at: c.first_seen_at,
        })
        .collect();
    let stories = group(&rows);
    let mut per_section: Vec<Vec<&Grouped>> = vec![Vec::new(); dcfg.watches.len()];
    for g in &stories {
        per_section[g.section].push(g);
    }
    if per_section.iter().all(|l| l.len() <= cap) {
        return Choice::All;
    }
    let key = |g: &Grouped| {
        let lead = &rows[g.rows[0]];
        digest::RankKey {
            score: g.score,
            published: lead.story_time(),
            item_id: lead.item_id,
        }
    };
    let mut clusters: HashSet<i64> = HashSet::new();
    let mut left = 0;
    for list in &mut per_section {
        if list.len() > cap {
            list.select_nth_unstable_by(cap - 1, |a, b| key(a).rank(&key(b)));
            left += list.len() - cap;
            list.truncate(cap);
        }
        clusters.extend(list.iter().map(|g| rows[g.rows[0]].cluster));
    }
    if !dcfg.send_empty {
        for (w, list) in per_section.iter().enumerate() {
            let badged = |claimed: bool| {
                rows.iter()
                    .any(|r| r.section == Some(w) && (!claimed || clusters.contains(&r.cluster)))
            };
            if list.is_empty() && badged(false) && !badged(true) {
                return Choice::All;
            }
        }
    }
    // A story with no match of the digest's watches is claimed and never shown, as before.
    let shown: HashSet<i64> = stories.iter().map(|g| rows[g.rows[0]].cluster).collect();
    clusters.extend(
        rows.iter()
            .map(|r| r.cluster)
            .filter(|c| !shown.contains(c)),
    );
    Choice::Some { clusters, left }
}

/// Whether the message `probe` (the render of `d`) shows the same stories as a claim of
/// everything would: in each section that may have been cut (it has at least `cap` stories),
/// some story did not fit. Then the layout stopped before the end of every cut section's list,
/// at the same story as with all of it (the budget depends on no story but the headline, the
/// first in layout order).
fn covers(d: &digest::Digest, probe: &Rendered, cap: usize) -> bool {
    if d.deferred == 0 {
        return true;
    }
    let left: HashSet<i64> = probe.deferred.iter().copied().collect();
    d.sections
        .iter()
        .all(|s| s.stories.len() < cap || s.stories.iter().any(|st| left.contains(&st.item_id)))
}

/// Builds the digest of one delivery from its claimed stories: sections in the digest's watch
/// order, each story once — under the first of its watches, with every watch of the digest it
/// matched in `watches` (one badge each), its best score and the evidence of all of them — and
/// the feed-health section when the digest shows it. Also returns each story's lead item id →
/// its cluster (what the store hands back when a story does not fit).
fn assemble(
    store: &Store,
    cfg: &Loaded,
    dcfg: &crate::config::Digest,
    kind: Kind,
    matches: Vec<crate::store::StoredMatch>,
    now: DateTime<Utc>,
) -> Result<(digest::Digest, HashMap<i64, i64>), NotifyError> {
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
    let weights = set_weights(cfg);
    // One entry per story (cluster): under the first of the digest's watches it matched, led
    // by its best-scored item; the other items of the cluster become "also reported by".
    let keys: Vec<RowKey> = matches
        .iter()
        .map(|m| RowKey {
            section: order.get(m.watch_id.as_str()).copied(),
            cluster: m.cluster_id,
            item_id: m.item_id,
            score: m.score,
            published: m.item.published,
            first_seen_at: m.first_seen_at,
        })
        .collect();
    let mut matches = matches;
    let mut leads: HashMap<i64, i64> = HashMap::new();
    for g in group(&keys) {
        let lead = &mut matches[g.rows[0]];
        leads.insert(lead.item_id, lead.cluster_id);
        let mut story = Story {
            item_id: lead.item_id,
            title: lead.item.title.clone(),
            link: lead.item.link.clone(),
            feed_name: lead.item.feed_name.clone(),
            published: keys[g.rows[0]].story_time(),
            summary: if lead.item.summary.is_empty() {
                lead.item.content.clone()
            } else {
                lead.item.summary.clone()
            },
            summary_field: if lead.item.summary.is_empty() {
                Field::Content
            } else {
                Field::Summary
            },
            score: g.score,
            evidence: std::mem::take(&mut lead.evidence),
            also_reported: Vec::new(),
            lang: lead.item.lang.clone(),
            watches: vec![lead.watch_id.clone()],
            weights: weights.clone(),
        };
        for &i in &g.rows[1..] {
            let m = &mut matches[i];
            if !story.watches.contains(&m.watch_id) {
                story.watches.push(m.watch_id.clone());
            }
            if m.item_id == story.item_id {
                // The same item under another watch: its evidence counts for the "why".
                for e in std::mem::take(&mut m.evidence) {
                    if !story.evidence.contains(&e) {
                        story.evidence.push(e);
                    }
                }
                continue;
            }
            let other = (m.item.feed_name.clone(), m.item.link.clone());
            if !story.also_reported.contains(&other) {
                story.also_reported.push(other);
            }
        }
        sections[g.section].stories.push(story);
    }
    // A watch stays when it lists a story, or when a story listed elsewhere also matched it
    // (its badge and count need the watch's name).
    let badged: std::collections::HashSet<String> = sections
        .iter()
        .flat_map(|s| s.stories.iter().flat_map(|st| st.watches.iter().cloned()))
        .collect();
    sections.retain(|s| !s.stories.is_empty() || badged.contains(&s.watch_id) || dcfg.send_empty);
    let mut feed_health = Vec::new();
    if dcfg.health {
        feed_health = feed_problems(store, cfg)?;
    }
    Ok((
        digest::Digest {
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
            detail: dcfg.detail,
            contact: dcfg.contact.clone(),
            deferred: 0,
        },
        leads,
    ))
}

/// Failing, moved and gone feeds of the config, for the operator's digest.
fn feed_problems(store: &Store, cfg: &Loaded) -> Result<Vec<FeedProblem>, NotifyError> {
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
    Ok(feed_health)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Evidence, Item, Verdict};
    use crate::store::NewItem;
    use chrono::TimeZone;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    const FEED: &str = "https://wire.policywatch.test/feed.xml";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 8, 0, 0)
            .single()
            .expect("time")
    }

    /// Watches a, b and c in one digest (a and b send immediate alerts).
    fn config() -> Loaded {
        let src = "[[feeds]]\nurl = \"https://wire.policywatch.test/feed.xml\"\nname = \"Wire\"\n\
            [[watches]]\nid = \"a\"\nquery = \"nvidia\"\nalert = \"immediate\"\n\
            [[watches]]\nid = \"b\"\nquery = \"gallium\"\nalert = \"immediate\"\n\
            [[watches]]\nid = \"c\"\nquery = \"huawei\"\n\
            [[digests]]\nid = \"daily\"\nschedule = \"daily 07:30\"\nwatches = [\"a\", \"b\", \"c\"]\nvia = \"log\"\n";
        crate::config::load_str("t.toml", src).expect("test config")
    }

    /// `n` stories of 1–3 items each, matched by random watches with tied and untied scores,
    /// dated and undated, with titles of every length. With `c_with_a`, watch c only ever
    /// matches an item that a matches too, so its section has no story of its own.
    fn backlog(seed: u64, n: usize, c_with_a: bool) -> Store {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = Store::open_in_memory().expect("store");
        store.sync_feeds([(FEED, "Wire")]).expect("feeds");
        store.digest_state("daily", t0()).expect("register");
        let mut new = Vec::new();
        let mut story_of = Vec::new();
        for story in 0..n {
            for _ in 0..rng.gen_range(1..=3) {
                let i = new.len();
                let watches: &[&str] = match (rng.gen_range(0..6), c_with_a) {
                    (0, _) => &["a"],
                    (1, _) => &["b"],
                    (2, _) => &["a", "b"],
                    (3, true) | (4, true) => &["a", "c"],
                    (3, false) => &["c"],
                    (4, false) => &["b", "c"],
                    _ => &["a", "b", "c"],
                };
                let verdicts = watches
                    .iter()
                    .map(|w| Verdict {
                        watch_id: (*w).into(),
                        score: [1.0, 2.0, 2.5, 4.0][rng.gen_range(0..4)]
                            + rng.gen_range(0..3) as f64,
                        evidence: vec![Evidence {
                            term: "nvidia".into(),
                            set: None,
                            concept: None,
                            field: Field::Title,
                            start: 0,
                            end: 6,
                        }],
                    })
                    .collect();
                let title = format!(
                    "Nvidia story {story} item {i} {}",
                    "x".repeat(rng.gen_range(0..120))
                );
                new.push(NewItem::plain(
                    Item {
                        guid: Some(format!("g{i}")),
                        link: Some(format!("https://wire.policywatch.test/{i}")),
                        title,
                        summary: "y".repeat(rng.gen_range(0..400)),
                        published: (rng.gen_range(0..5) > 0)
                            .then(|| t0() - chrono::Duration::minutes(rng.gen_range(0..50))),
                        feed_name: "Wire".into(),
                        ..Item::default()
                    },
                    verdicts,
                ));
                story_of.push(story);
            }
        }
        // Items of one story share the cluster of its first item.
        let mut first: HashMap<usize, i64> = HashMap::new();
        let mut k = 0;
        store
            .insert_items(
                FEED,
                &new,
                t0() + chrono::Duration::seconds(1),
                None,
                &mut |id, _, _| {
                    let c = *first.entry(story_of[k]).or_insert(id);
                    k += 1;
                    c
                },
            )
            .expect("insert");
        store
    }

    fn notifier(cfg: &Loaded, cap: usize) -> Notifier {
        let mut n = Notifier::new(cfg).expect("notifier");
        n.claim_cap = cap;
        n
    }

    /// Every message of `kind` the backlog gives, one delivery after another until nothing is
    /// left, each ready within `max_bytes`; how many stories each claim took; and the most
    /// stories one section showed in a message.
    fn messages(
        store: &mut Store,
        cfg: &Loaded,
        n: &Notifier,
        kind: Kind,
        max_bytes: usize,
    ) -> (Vec<Rendered>, Vec<usize>, usize, usize) {
        let dcfg = &cfg.digests[0];
        let (mut out, mut claimed, mut widest, mut kept) = (Vec::new(), Vec::new(), 0, 0);
        for k in 1..200 {
            let now = t0() + chrono::Duration::minutes(k);
            let Some(delivery) = n.claim(store, dcfg, kind, now).expect("claim") else {
                break;
            };
            let stories: HashSet<i64> = store
                .delivery_stories(delivery.id)
                .expect("stories")
                .iter()
                .map(|m| m.cluster_id)
                .collect();
            claimed.push(stories.len());
            let (p, probe) = n
                .ready(store, cfg, dcfg, &delivery, now, max_bytes)
                .expect("ready");
            let most = p.d.sections.iter().map(|s| s.stories.len()).max();
            widest = widest.max(most.unwrap_or(0));
            let rendered = digest::render(&p.d, &p.limits);
            // The layout `ready` keeps (nothing was handed back) is the message's.
            if let Some(probe) = probe {
                assert_eq!(probe, rendered, "the kept layout is not the message");
                kept += 1;
            }
            out.push(rendered);
            store.mark_sent(delivery.id, now, "logged").expect("sent");
        }
        (out, claimed, widest, kept)
    }

    #[test]
    fn a_claim_capped_below_the_backlog_gives_the_same_messages_as_a_claim_of_everything() {
        let cfg = config();
        // (cap, budget): caps above what the budget shows of a section (the cut claim is
        // enough), and one below it (the rest is claimed when the message reaches it).
        for (seed, c_with_a) in [(1, false), (2, true), (3, false)] {
            for (cap, max_bytes) in [(12, 20_000), (30, 40_000), (6, 40_000)] {
                for kind in [Kind::Digest, Kind::Alert] {
                    let what = format!("seed {seed} cap {cap} budget {max_bytes} {kind:?}");
                    let mut all = backlog(seed, 150, c_with_a);
                    let mut cut = backlog(seed, 150, c_with_a);
                    let (want, whole, _, _) =
                        messages(&mut all, &cfg, &notifier(&cfg, usize::MAX), kind, max_bytes);
                    let (got, taken, widest, kept) =
                        messages(&mut cut, &cfg, &notifier(&cfg, cap), kind, max_bytes);
                    assert!(want.len() > 2, "{what}: {} messages", want.len());
                    // Full messages handed stories back (their layout is made again); the
                    // last one did not, and its layout was kept.
                    assert!(
                        kept > 0 && kept < got.len(),
                        "{what}: {kept} of {} layouts kept",
                        got.len()
                    );
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g, w, "{what}: message {i}");
                    }
                    assert_eq!(got.len(), want.len(), "{what}: messages");
                    assert!(
                        taken[0] < whole[0],
                        "{what}: the first claim took {} of {} stories",
                        taken[0],
                        whole[0]
                    );
                    // Showing a whole cut section's worth needs the rest claimed.
                    assert_eq!(widest >= cap, cap == 6, "{what}: {widest} in a section");
                }
            }
        }
    }

    #[test]
    fn a_section_kept_only_for_a_badge_keeps_the_claim_whole() {
        let cfg = config();
        let dcfg = &cfg.digests[0];
        let watches = dcfg.watches.clone();
        // 20 stories of watch a; the weakest also matched c, whose section has none of its own.
        let mut found: Vec<Candidate> = (0..20)
            .map(|i| Candidate {
                item_id: i,
                watch: 0,
                score: 10.0 - i as f64 / 4.0,
                cluster_id: i,
                published: Some(t0()),
                first_seen_at: t0(),
            })
            .collect();
        let with_c = |item_id| Candidate {
            watch: 2,
            ..found[item_id as usize].clone()
        };
        let weakest = with_c(19);
        let strong = with_c(0);
        let Choice::Some { clusters, left } = choose(&found, &watches, dcfg, 8) else {
            panic!("a cut claim");
        };
        assert_eq!((clusters.len(), left), (8, 12));
        assert_eq!(clusters, (0..8).collect::<HashSet<i64>>(), "the 8 best");
        // Never fewer than the top stories can take from one section.
        let Choice::Some { clusters, .. } = choose(&found, &watches, dcfg, 2) else {
            panic!("a cut claim");
        };
        assert_eq!(clusters.len(), digest::TOP_MAX);
        // c's badge only on a story left out: everything is claimed.
        found.push(weakest);
        assert_eq!(choose(&found, &watches, dcfg, 8), Choice::All);
        // c's badge also on a claimed story: the cut stands.
        found.push(strong);
        assert!(matches!(
            choose(&found, &watches, dcfg, 8),
            Choice::Some { left: 12, .. }
        ));
        // No section beyond the cap: everything.
        assert_eq!(choose(&found, &watches, dcfg, 20), Choice::All);
    }

    #[test]
    fn a_capped_claim_counts_what_it_left_and_claims_it_next() {
        let cfg = config();
        let dcfg = &cfg.digests[0];
        let mut store = backlog(4, 300, false);
        let n = notifier(&cfg, 20);
        let d1 = n
            .claim(
                &mut store,
                dcfg,
                Kind::Digest,
                t0() + chrono::Duration::minutes(1),
            )
            .expect("claim")
            .expect("a delivery");
        let carried = |store: &Store, id: i64| -> HashSet<i64> {
            store
                .delivery_stories(id)
                .expect("stories")
                .iter()
                .map(|m| m.cluster_id)
                .collect()
        };
        let first = carried(&store, d1.id);
        assert!(first.len() <= 3 * 20, "{} stories", first.len());
        assert_eq!(
            first.len() + d1.deferred,
            300,
            "claimed + left = the backlog"
        );
        // The rest, topped up: every story once, and nothing left over.
        let more = store
            .claim_more(d1.id, &dcfg.watches, &mut |_| Choice::All)
            .expect("claim the rest");
        assert_eq!(more, d1.deferred);
        assert_eq!(store.delivery(d1.id).expect("delivery").deferred, 0);
        assert_eq!(carried(&store, d1.id).len(), 300);
        let again = store.claim_more(d1.id, &dcfg.watches, &mut |_| Choice::All);
        assert_eq!(again.expect("again"), 0);
        // A second delivery has nothing left to take.
        store.mark_sent(d1.id, t0(), "logged").expect("sent");
        let d2 = n
            .claim(
                &mut store,
                dcfg,
                Kind::Digest,
                t0() + chrono::Duration::minutes(2),
            )
            .expect("claim");
        assert_eq!(d2, None);
    }
}
