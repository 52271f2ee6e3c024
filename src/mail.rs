//! Sending rendered digests by SMTP: the `[smtp]` config section, building the MIME message and
//! handing it to the relay.
//!
//! In: [`SmtpConfig`] (from the config file), a [`Rendered`] digest from `digest`, recipients,
//! and the delivery's stable Message-ID from `notify`. Out: a `lettre::Message`, and for a send
//! to one recipient either the server's acceptance reply or a [`SendError`] whose
//! [`SendClass`] says what to do about it (decided in `retry`, from the reply code and the
//! phase it came in).
//!
//! # Security
//! - TLS is required by default (STARTTLS, or implicit TLS on 465) with rustls and the webpki
//!   roots plus an optional extra CA (`ca_file`) for internal relays. Plain SMTP is refused
//!   unless the relay is on loopback (a local MTA).
//! - The password is read once, from a file, an environment variable or a systemd credential
//!   (`$CREDENTIALS_DIRECTORY/<name>`, from `LoadCredential=`), never from the config file
//!   itself, and never appears in `Debug` output or logs.
//! - Header values that could come from feeds (the subject) are cleaned of CR/LF before lettre
//!   encodes them; Message-ID and List-Id are validated to a strict character set.
//!
//! # One transaction per recipient, a deadline on every phase
//! A digest goes to each recipient in its own SMTP transaction (same message, same
//! Message-ID): an SMTP transaction with several `RCPT TO` succeeds or fails as one message,
//! and lettre reports the first refused recipient as the failure of the whole send. One
//! transaction each gives every recipient an exact outcome of their own — a 550 for one
//! address fails that address only — at the price of a connection per recipient, which a few
//! digests a day can afford. (One connection with `RSET` between transactions would save the
//! handshakes, but a broken transaction then leaves the connection's state in doubt.)
//!
//! lettre's transport applies its timeout to the TCP connect only; a relay that accepts and
//! then goes silent would hold a send for ever. So the conversation is driven here with
//! lettre's connection type, each phase (connect + greeting + EHLO, STARTTLS, AUTH, MAIL,
//! each RCPT, DATA, the message and its final reply, QUIT) under its own deadline of `[smtp]
//! timeout` (a few of them for the phases that are several exchanges). The caller
//! (`notify`) runs sends in their own task, so even those deadlines never hold up polling.

use std::fmt;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use serde::Deserialize;

use crate::digest::{clean_line, Rendered};
use crate::retry::{
    classify_smtp, smtp_reply_means_too_large, SendClass, SmtpFailure, SmtpPhase,
    SMTP_PHASE_EXCHANGES,
};
use crate::secret::SecretSource;

/// CA bundles larger than this are not what `ca_file` is for.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;
/// Server replies and error texts are cut to this many characters in [`SendError`].
const MAX_ERROR_CHARS: usize = 600;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connect, then STARTTLS; refusing to go on without it. Port 587 by default.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS"). Port 465 by default.
    Tls,
    /// No encryption: only for a relay on loopback. Port 25 by default.
    None,
}

impl TlsMode {
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

/// The `[smtp]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (one line; a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// systemd credential name: the password is read from `$CREDENTIALS_DIRECTORY/<name>`.
    #[serde(default)]
    pub password_credential: Option<String>,
    /// Sender mailbox, e.g. `policywatch <alerts@example.org>`.
    pub from: String,
    /// Extra trusted root certificate(s), PEM, for internal relays and tests.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connect and per-command timeout, e.g. "30s".
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest message the relay takes; bigger digests are trimmed before sending.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("[smtp] {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("[smtp] cannot read the password from {source_desc}: {reason}")]
    Password { source_desc: String, reason: String },
    #[error("[smtp] ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("invalid mail address `{address}`: {reason}")]
    Address { address: String, reason: String },
    #[error("invalid {header}: {reason}")]
    Header {
        header: &'static str,
        reason: String,
    },
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("message is {size} bytes, above the relay's limit of {max} bytes (smtp.max_message_bytes): trim it")]
    TooLarge { size: usize, max: usize },
    #[error("[smtp] TLS setup failed: {0}")]
    Tls(String),
}

/// A send that did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What to do about it (decided by `retry`).
    pub class: SendClass,
    /// `class` is [`SendClass::Transient`]: trying the same message again later may succeed.
    pub transient: bool,
    /// The SMTP reply code (or the webhook's HTTP status), when the server answered.
    pub code: Option<u16>,
    /// Not sooner than this from the answer (a webhook's `Retry-After`); SMTP has no such
    /// hint.
    pub retry_after: Option<Duration>,
    /// What happened, with the server's words and a hint; one line.
    pub message: String,
}

impl SendError {
    fn new(class: SendClass, code: Option<u16>, message: &str) -> SendError {
        SendError {
            class,
            transient: class == SendClass::Transient,
            code,
            retry_after: None,
            message: truncate(message, MAX_ERROR_CHARS),
        }
    }

    /// The relay refused the message for its size: a trimmed digest may pass.
    pub fn is_too_large(&self) -> bool {
        self.class == SendClass::TooLarge || smtp_reply_means_too_large(self.code, &self.message)
    }
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.tls.default_port())
    }

    /// Checks what can be checked without touching files or the network.
    pub fn validate(&self) -> Result<(), MailError> {
        let bad = |key, reason: &str| {
            Err(MailError::Config {
                key,
                reason: reason.to_string(),
            })
        };
        let host = self.host.trim();
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("host", "write the relay's host name or IP address");
        }
        if self.port == Some(0) {
            return bad(
                "port",
                "0 is not a port: leave it out for the default of the tls mode",
            );
        }
        if self.tls == TlsMode::None && !is_loopback_host(host) {
            return bad(
                "tls",
                "\"none\" sends the password and the mail in clear text: it is allowed only for \
                 a relay on loopback (localhost, 127.0.0.1, ::1); use \"starttls\" or \"tls\"",
            );
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| MailError::Config {
                key: "from",
                reason: format!(
                    "`{}` is not a mailbox ({e}): write e.g. \"policywatch <alerts@example.org>\"",
                    clean_line(&self.from)
                ),
            })?;
        let sources = self.password_source();
        if let Err((key, reason)) = sources.validate("password") {
            return Err(MailError::Config {
                key: if key.ends_with("_credential") {
                    "password_credential"
                } else {
                    "password_file"
                },
                reason,
            });
        }
        match (&self.username, sources.count()) {
            (Some(_), 0) => {
                return bad(
                    "username",
                    "a username needs a password: set password_file, password_env or \
                     password_credential",
                )
            }
            (None, 1) => return bad("username", "a password is set but no username"),
            _ => {}
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be above zero, e.g. \"30s\"");
        }
        Ok(())
    }

    fn password_source(&self) -> SecretSource {
        SecretSource {
            file: self.password_file.clone(),
            env: self.password_env.clone(),
            credential: self.password_credential.clone(),
        }
    }

    /// Reads the password from its source (see `secret`); `env` looks up environment
    /// variables (injected so tests need not change the process environment).
    fn read_password(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, MailError> {
        match self.password_source().read("password", "password", env) {
            Ok(pw) => Ok(pw.map(|p| p.expose().to_string())),
            Err(e) => Err(MailError::Password {
                source_desc: e.source_desc,
                reason: e.reason,
            }),
        }
    }
}

/// What `check` found about the SMTP password source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCheck {
    /// There is none, or it exists and holds a password.
    Ok,
    /// The daemon would refuse to start: `key` is the config key to point at.
    Error {
        key: &'static str,
        message: String,
        hint: String,
    },
    /// Cannot be checked here.
    Warning { key: &'static str, message: String },
}

impl SmtpConfig {
    /// Whether the password source exists and is readable, as the daemon will read it
    /// (`check`). A systemd credential can only be checked where `$CREDENTIALS_DIRECTORY` is
    /// set; elsewhere that is a warning.
    pub fn check_password_source(&self, env: &dyn Fn(&str) -> Option<String>) -> SourceCheck {
        let key = if self.password_file.is_some() {
            "password_file"
        } else if self.password_env.is_some() {
            "password_env"
        } else if let Some(name) = &self.password_credential {
            if env("CREDENTIALS_DIRECTORY").is_none() {
                return SourceCheck::Warning {
                    key: "password_credential",
                    message: format!(
                        "[smtp] password_credential `{name}` is only available under systemd \
                         (LoadCredential={name}:/path in the unit); not checked here"
                    ),
                };
            }
            "password_credential"
        } else {
            return SourceCheck::Ok;
        };
        match self.read_password(env) {
            Ok(_) => SourceCheck::Ok,
            Err(e) => SourceCheck::Error {
                key,
                message: e.to_string(),
                hint: match key {
                    "password_file" => "create the file with the password on one line (mode \
                        0600, readable by the service), or point password_file at it"
                        .into(),
                    "password_env" => format!(
                        "set {} in the service's environment (Environment= or \
                         EnvironmentFile= in the unit), or use password_file",
                        self.password_env.as_deref().unwrap_or("the variable")
                    ),
                    _ => "check LoadCredential= in the unit and the file it names".into(),
                },
            },
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `Auto-Submitted: auto-generated` (RFC 3834): tells vacation responders and ticket systems
/// not to answer.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// `X-Auto-Response-Suppress: All`: Exchange's own switch for the same.
#[derive(Clone)]
struct AutoResponseSuppress;

impl Header for AutoResponseSuppress {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoResponseSuppress)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "All".into())
    }
}

/// `List-Id: <id>` (RFC 2919), so people can filter digests into a folder.
#[derive(Clone)]
struct ListId(String);

impl Header for ListId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Id")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListId(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// Sends digests through one configured relay. Holds no connection: each send opens its own.
pub struct Mailer {
    from: Mailbox,
    host: String,
    port: u16,
    tls: TlsMode,
    /// Set unless `tls = "none"`.
    tls_params: Option<TlsParameters>,
    credentials: Option<Credentials>,
    username: Option<String>,
    timeout: Duration,
    max_message_bytes: Option<usize>,
    hello: ClientId,
}

impl fmt::Debug for Mailer {
    // Written by hand so the credentials are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.username.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl Mailer {
    /// Validates the config, reads the password and the extra CA, and prepares the TLS
    /// parameters. Does not connect.
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, MailError> {
        Self::with_env(cfg, &|k| std::env::var(k).ok())
    }

    fn with_env(
        cfg: &SmtpConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Mailer, MailError> {
        cfg.validate()?;
        let host = cfg.host.trim().to_string();
        let port = cfg.port();
        let from: Mailbox = cfg.from.parse().map_err(|e| MailError::Address {
            address: cfg.from.clone(),
            reason: format!("{e}"),
        })?;
        let password = cfg.read_password(env)?;
        let tls_params = if cfg.tls != TlsMode::None {
            // rustls wants the bare name or address, without IPv6 brackets.
            let domain = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let mut params = TlsParameters::builder(domain);
            if let Some(path) = &cfg.ca_file {
                params = params.add_root_certificate(read_ca(path)?);
            }
            Some(
                params
                    .build_rustls()
                    .map_err(|e| MailError::Tls(e.to_string()))?,
            )
        } else {
            None
        };
        let credentials = match (&cfg.username, password) {
            (Some(user), Some(pw)) => Some(Credentials::new(user.clone(), pw)),
            _ => None,
        };
        Ok(Mailer {
            from,
            host,
            port,
            tls: cfg.tls,
            tls_params,
            credentials,
            username: cfg.username.clone(),
            timeout: cfg.timeout,
            max_message_bytes: cfg.max_message_bytes,
            hello: ClientId::default(),
        })
    }

    /// `[smtp] timeout`: the deadline of each phase of a send.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn max_message_bytes(&self) -> Option<usize> {
        self.max_message_bytes
    }

    /// The List-Id for a digest: `<digest>.policywatch.<sender's domain>` (RFC 2919 wants it
    /// under a domain the sender controls). Characters outside `[a-z0-9-]` become `-`.
    pub fn list_id(&self, digest_id: &str) -> String {
        let mut name: String = digest_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(60)
            .collect();
        name = name.trim_matches('-').to_string();
        if name.is_empty() {
            name = "digest".into();
        }
        let domain: String = self
            .from
            .email
            .domain()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .collect();
        let domain = domain.trim_matches('.');
        if domain.is_empty() {
            format!("{name}.policywatch")
        } else {
            format!("{name}.policywatch.{domain}")
        }
    }

    /// Builds the multipart/alternative message (plain text first, HTML preferred) with
    /// `Date`, `Message-ID` (`message_id` with or without angle brackets, e.g.
    /// `delivery-42.daily@policywatch`), `Auto-Submitted: auto-generated` and `List-Id:
    /// <list_id>`. Fails with [`MailError::TooLarge`] above `max_message_bytes`.
    pub fn build_message(
        &self,
        to: &[String],
        rendered: &Rendered,
        message_id: &str,
        date: DateTime<Utc>,
        list_id: &str,
    ) -> Result<Message, MailError> {
        self.build_message_referring(to, rendered, message_id, date, list_id, None)
    }

    /// [`Mailer::build_message`] with `References: <earlier>` (an explicit resend names the
    /// message it repeats, so mail clients thread them).
    pub fn build_message_referring(
        &self,
        to: &[String],
        rendered: &Rendered,
        message_id: &str,
        date: DateTime<Utc>,
        list_id: &str,
        references: Option<&str>,
    ) -> Result<Message, MailError> {
        if to.is_empty() {
            return Err(MailError::Address {
                address: String::new(),
                reason: "no recipients".into(),
            });
        }
        let mut b = Message::builder().from(self.from.clone());
        for addr in to {
            let mbox: Mailbox = addr.parse().map_err(|e| MailError::Address {
                address: clean_line(addr),
                reason: format!("{e}"),
            })?;
            b = b.to(mbox);
        }
        let mid = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        if !is_msg_id(mid) {
            return Err(MailError::Header {
                header: "Message-ID",
                reason: format!("`{}` is not of the form left@right", clean_line(message_id)),
            });
        }
        if !is_dot_atom(list_id) {
            return Err(MailError::Header {
                header: "List-Id",
                reason: format!(
                    "`{}` must be letters, digits, '-' and '.', e.g. daily.policywatch.example.org",
                    clean_line(list_id)
                ),
            });
        }
        if let Some(r) = references {
            let r = r.trim().trim_start_matches('<').trim_end_matches('>');
            if is_msg_id(r) {
                b = b.references(format!("<{r}>"));
            }
        }
        let msg = b
            // The renderer already keeps the subject on one line; cleaning again here keeps
            // that true for any caller.
            .subject(clean_line(&rendered.subject))
            .date(SystemTime::from(date))
            .message_id(Some(format!("<{mid}>")))
            .header(AutoSubmitted)
            .header(AutoResponseSuppress)
            .header(ListId(list_id.to_string()))
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(rendered.text.clone()))
                    .singlepart(SinglePart::html(rendered.html.clone())),
            )
            .map_err(|e| MailError::Build(e.to_string()))?;
        if let Some(max) = self.max_message_bytes {
            let size = msg.formatted().len();
            if size > max {
                return Err(MailError::TooLarge { size, max });
            }
        }
        Ok(msg)
    }

    /// Hands the message to the relay in one transaction to every recipient of its envelope
    /// (`send-test`). Ok is the server's acceptance reply ("250 2.0.0 OK queued as ..."):
    /// only then is the message the relay's responsibility.
    pub async fn send(&self, msg: &Message) -> Result<String, SendError> {
        self.transaction(msg.envelope().to(), &msg.formatted())
            .await
    }

    /// Sends the formatted message `body` to one recipient (`Name <addr>` or `addr`), in a
    /// transaction of its own: the outcome is that recipient's alone.
    pub async fn send_to(&self, recipient: &str, body: &[u8]) -> Result<String, SendError> {
        let addr = match recipient.parse::<Mailbox>() {
            Ok(m) => m.email,
            Err(e) => {
                let msg = format!("`{}` is not a mail address: {e}", clean_line(recipient));
                return Err(SendError::new(SendClass::RecipientRefused, None, &msg));
            }
        };
        self.transaction(std::slice::from_ref(&addr), body).await
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn transaction(&self, to: &[Address], body: &[u8]) -> Result<String, SendError> {
        let t = self.timeout;
        let several = t.saturating_mul(SMTP_PHASE_EXCHANGES);
        let wrapper = match self.tls {
            TlsMode::Tls => self.tls_params.clone(),
            _ => None,
        };
        let connect = AsyncSmtpConnection::connect_tokio1(
            (
                self.host.trim_start_matches('[').trim_end_matches(']'),
                self.port,
            ),
            Some(t),
            &self.hello,
            wrapper,
            None,
        );
        let mut conn = self.phase(SmtpPhase::Connect, several, connect).await?;
        let result = self.converse(&mut conn, to, body).await;
        // A polite QUIT, bounded like every phase, when the connection is still in a state
        // to take it (the server answered); its answer changes nothing. After a timeout or a
        // failed TLS upgrade the connection is only dropped.
        if result.as_ref().map_or_else(|e| e.code.is_some(), |_| true) {
            let _ = tokio::time::timeout(t, conn.quit()).await;
        }
        result
    }

    async fn converse(
        &self,
        conn: &mut AsyncSmtpConnection,
        to: &[Address],
        body: &[u8],
    ) -> Result<String, SendError> {
        let t = self.timeout;
        let several = t.saturating_mul(SMTP_PHASE_EXCHANGES);
        if let (TlsMode::Starttls, Some(params)) = (self.tls, &self.tls_params) {
            if !conn.can_starttls() {
                let msg = format!(
                    "{} does not offer STARTTLS, and policywatch never sends in clear text:                      set [smtp] tls = \"tls\" if the relay speaks TLS from the first byte                      (port 465), or use a relay that offers STARTTLS",
                    self.server()
                );
                return Err(SendError::new(SendClass::Hold, None, &msg));
            }
            let upgrade = conn.starttls(params.clone(), &self.hello);
            self.phase(SmtpPhase::Starttls, several, upgrade).await?;
        }
        if let Some(creds) = &self.credentials {
            let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], creds);
            self.phase(SmtpPhase::Auth, several, auth).await?;
        }
        let mut params = Vec::new();
        if !body.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                let msg = format!(
                    "{} does not take 8-bit messages (no 8BITMIME)",
                    self.server()
                );
                return Err(SendError::new(SendClass::MessageRefused, None, &msg));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let non_ascii = std::iter::once(&self.from.email)
            .chain(to)
            .any(|a: &Address| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            params.push(MailParameter::SmtpUtfEight);
        }
        let mail = conn.command(Mail::new(Some(self.from.email.clone()), params));
        self.phase(SmtpPhase::MailFrom, t, mail).await?;
        for rcpt in to {
            let cmd = conn.command(Rcpt::new(rcpt.clone(), vec![]));
            self.phase(SmtpPhase::RcptTo, t, cmd)
                .await
                .map_err(|mut e| {
                    e.message = truncate(&format!("{rcpt}: {}", e.message), MAX_ERROR_CHARS);
                    e
                })?;
        }
        self.phase(SmtpPhase::Data, t, conn.command(Data)).await?;
        // Writing the message and waiting for the verdict on it: two exchanges' worth.
        let resp = self
            .phase(SmtpPhase::Data, t.saturating_mul(2), conn.message(body))
            .await?;
        let text: Vec<&str> = resp.message().collect();
        Ok(clean_line(&format!(
            "{} {}",
            u16::from(resp.code()),
            text.join(" ")
        )))
    }

    /// Runs one phase of the conversation under its deadline.
    async fn phase<T>(
        &self,
        phase: SmtpPhase,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, SendError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(&e, phase)),
            Err(_) => {
                let msg = format!(
                    "SMTP server {} did not answer within {} ({})",
                    self.server(),
                    humantime::format_duration(limit),
                    phase_name(phase)
                );
                Err(SendError::new(SendClass::Transient, None, &msg))
            }
        }
    }

    fn classify(&self, e: &lettre::transport::smtp::Error, phase: SmtpPhase) -> SendError {
        let code = e.status().map(u16::from);
        let failure = if code.is_some() {
            SmtpFailure::Reply
        } else if e.is_timeout() {
            SmtpFailure::Timeout
        } else if e.is_tls() || tls_failure_in(e) {
            SmtpFailure::Tls
        } else if e.is_client() {
            SmtpFailure::Client
        } else if e.is_response() {
            SmtpFailure::Protocol
        } else {
            SmtpFailure::Connection
        };
        let server = self.server();
        let detail = clean_line(&e.to_string());
        let class = classify_smtp(code, failure, phase, &detail);
        let message = match (failure, code) {
            (_, Some(c @ (530 | 534 | 535 | 538))) => format!(
                "SMTP authentication with {server} failed ({c}): {detail}; check [smtp] \
                 username and its password source, then reload"
            ),
            (_, Some(c)) if class == SendClass::TooLarge => {
                format!("{server} refused the message as too large ({c}): {detail}")
            }
            (_, Some(c)) if phase == SmtpPhase::MailFrom && c >= 500 => format!(
                "{server} refused the sender {} ({c}): {detail}; check [smtp] from",
                self.from.email
            ),
            (_, Some(c)) if phase == SmtpPhase::RcptTo && c >= 500 => {
                format!("{server} refused the recipient ({c}): {detail}")
            }
            (_, Some(c)) if c >= 500 => format!("{server} refused the message ({c}): {detail}"),
            (_, Some(c)) => format!("{server} deferred the message ({c}): {detail}"),
            (SmtpFailure::Timeout, None) => format!(
                "SMTP server {server} did not answer within {} ({}): {detail}",
                humantime::format_duration(self.timeout),
                phase_name(phase)
            ),
            (SmtpFailure::Tls, None) => format!(
                "TLS with {server} failed: {detail} (for a private relay or a self-signed \
                 certificate, set [smtp] ca_file)"
            ),
            (SmtpFailure::Client, None) if detail.contains("authentication mechanism") => format!(
                "{server} offers no authentication mechanism we use (PLAIN or LOGIN over TLS): \
                 {detail}; check that the relay expects a login, or remove [smtp] username"
            ),
            (SmtpFailure::Client, None) => format!("cannot send via {server}: {detail}"),
            (SmtpFailure::Protocol, None) => {
                format!("SMTP server {server} sent an unexpected reply: {detail}")
            }
            _ => format!("cannot reach SMTP server {server}: {detail}"),
        };
        SendError::new(class, code, &message)
    }
}

fn phase_name(phase: SmtpPhase) -> &'static str {
    match phase {
        SmtpPhase::Connect => "connect, greeting and EHLO",
        SmtpPhase::Starttls => "STARTTLS",
        SmtpPhase::Auth => "AUTH",
        SmtpPhase::MailFrom => "MAIL FROM",
        SmtpPhase::RcptTo => "RCPT TO",
        SmtpPhase::Data => "DATA and the final reply",
    }
}

/// Whether a rustls error hides in the error's source chain. lettre reports a failed TLS
/// handshake (untrusted or expired certificate, wrong name) as a connection error, and the
/// difference matters to the person reading the log.
fn tls_failure_in(e: &lettre::transport::smtp::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}

fn read_ca(path: &Path) -> Result<Certificate, MailError> {
    let err = |reason: String| MailError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut pem = Vec::new();
    f.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| err(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(err(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    // lettre accepts a file without certificates and trusts nothing extra; say so instead.
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(err(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| err(e.to_string()))
}

/// `left@right` made of RFC 5322 atext and dots: what we generate, and nothing that could end
/// the header or the angle brackets.
fn is_msg_id(s: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    match s.split_once('@') {
        Some((l, r)) => {
            s.len() <= 250
                && !l.is_empty()
                && !r.is_empty()
                && l.chars().all(atext)
                && r.chars().all(atext)
        }
        None => false,
    }
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && !s.starts_with('.')
        && !s.ends_with('.')
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> SmtpConfig {
        toml::from_str(toml_text).expect("config parses")
    }

    fn base() -> SmtpConfig {
        cfg(r#"
            host = "smtp.example.org"
            from = "policywatch <alerts@example.org>"
        "#)
    }

    fn rendered(subject: &str) -> Rendered {
        Rendered {
            subject: subject.into(),
            text: "plain body\n".into(),
            html: "<p>html body</p>\n".into(),
            shown: 1,
            listed: 0,
            trimmed: 0,
            deferred: Vec::new(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_starttls_587_and_30s() {
        let c = base();
        assert_eq!(c.tls, TlsMode::Starttls);
        assert_eq!(c.port(), 587);
        assert_eq!(c.timeout, Duration::from_secs(30));
        c.validate().expect("valid");
        let c = cfg(r#"
            host = "smtp.example.org"
            tls = "tls"
            from = "a@example.org"
            timeout = "1m 30s"
        "#);
        assert_eq!((c.port(), c.timeout), (465, Duration::from_secs(90)));
    }

    #[test]
    fn unknown_keys_and_modes_are_rejected() {
        let e = toml::from_str::<SmtpConfig>("host = \"h\"\nfrom = \"a@b.c\"\npassword = \"x\"\n")
            .expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `password`"), "{e}");
        let e = toml::from_str::<SmtpConfig>("host = \"h\"\nfrom = \"a@b.c\"\ntls = \"ssl\"\n")
            .expect_err("unknown mode");
        assert!(e.to_string().contains("starttls"), "{e}");
    }

    #[test]
    fn validation_says_what_to_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "host = \"smtp.example.org\"\ntls = \"none\"",
                "only for a relay on loopback",
            ),
            ("host = \"\"", "host"),
            ("host = \"h\"\nport = 0", "0 is not a port"),
            ("host = \"h\"\nusername = \"u\"", "needs a password"),
            ("host = \"h\"\npassword_env = \"P\"", "no username"),
            (
                "host = \"h\"\nusername = \"u\"\npassword_env = \"P\"\npassword_file = \"/x\"",
                "only one of",
            ),
            (
                "host = \"h\"\nusername = \"u\"\npassword_credential = \"../etc/shadow\"",
                "LoadCredential",
            ),
        ];
        for (body, want) in cases {
            let c = cfg(&format!("{body}\nfrom = \"a@example.org\"\n"));
            let e = c.validate().expect_err(body).to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let c = cfg("host = \"h\"\nfrom = \"not an address\"\n");
        assert!(c.validate().expect_err("from").to_string().contains("from"));
        for host in ["localhost", "127.0.0.1", "::1", "[::1]", "127.0.0.53"] {
            let c = cfg(&format!(
                "host = \"{host}\"\ntls = \"none\"\nfrom = \"a@example.org\"\n"
            ));
            c.validate().unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(c.port(), 25);
        }
    }

    #[test]
    fn password_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        let mut c = base();
        c.username = Some("u".into());
        c.password_file = Some(file.clone());
        assert_eq!(
            c.read_password(&no_env).expect("file").as_deref(),
            Some("s3cret")
        );

        std::fs::write(&file, "\n").expect("write");
        assert!(c
            .read_password(&no_env)
            .expect_err("empty")
            .to_string()
            .contains("empty"));
        std::fs::write(&file, "x".repeat(5000)).expect("write");
        assert!(c
            .read_password(&no_env)
            .expect_err("big")
            .to_string()
            .contains("larger"));

        c.password_file = None;
        c.password_env = Some("PW_VAR".into());
        let env = |k: &str| (k == "PW_VAR").then(|| "from-env".to_string());
        assert_eq!(
            c.read_password(&env).expect("env").as_deref(),
            Some("from-env")
        );
        assert!(c
            .read_password(&no_env)
            .expect_err("unset")
            .to_string()
            .contains("not set"));

        c.password_env = None;
        c.password_credential = Some("smtp-password".into());
        std::fs::write(dir.path().join("smtp-password"), "from-cred\r\n").expect("write");
        let d = dir.path().to_string_lossy().to_string();
        let env = move |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| d.clone());
        assert_eq!(
            c.read_password(&env).expect("cred").as_deref(),
            Some("from-cred")
        );
        let e = c.read_password(&no_env).expect_err("no dir").to_string();
        assert!(e.contains("LoadCredential=smtp-password:"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut c = base();
        c.username = Some("user".into());
        c.password_env = Some("PW".into());
        let env = |_: &str| Some("hunter2-very-secret".to_string());
        let m = Mailer::with_env(&c, &env).expect("mailer");
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").expect("write");
        let mut c = base();
        c.ca_file = Some(p);
        let e = Mailer::with_env(&c, &no_env)
            .expect_err("bad ca")
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn message_has_headers_and_both_parts() {
        let m = Mailer::with_env(&base(), &no_env).expect("mailer");
        let date = DateTime::parse_from_rfc3339("2026-11-28T06:30:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let msg = m
            .build_message(
                &["Analyst <analyst@example.org>".into()],
                &rendered("policywatch: 3 export-controls\r\nBcc: victim@example.org"),
                "delivery-42.daily@policywatch",
                date,
                "daily.policywatch",
            )
            .expect("message");
        let raw = String::from_utf8(msg.formatted()).expect("utf8");
        let head = raw.split("\r\n\r\n").next().expect("headers");
        assert!(
            head.contains("Message-ID: <delivery-42.daily@policywatch>"),
            "{head}"
        );
        assert!(head.contains("Auto-Submitted: auto-generated"), "{head}");
        assert!(head.contains("List-Id: <daily.policywatch>"), "{head}");
        assert!(
            head.contains("Date: Sat, 28 Nov 2026 06:30:00 +0000"),
            "{head}"
        );
        assert!(head.contains("multipart/alternative"), "{head}");
        // The CR/LF in the subject became a space: no header line starts with "Bcc".
        assert!(
            !head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc")),
            "{head}"
        );
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
    }

    #[test]
    fn list_ids_are_safe_and_under_the_sender_domain() {
        let m = Mailer::with_env(&base(), &no_env).expect("mailer");
        assert_eq!(m.list_id("daily"), "daily.policywatch.example.org");
        assert_eq!(
            m.list_id("Week ly/<x>"),
            "week-ly--x.policywatch.example.org"
        );
        assert_eq!(m.list_id("日报"), "digest.policywatch.example.org");
        assert!(is_dot_atom(&m.list_id("a b\r\nc")));
    }

    #[test]
    fn bad_ids_addresses_and_sizes_are_refused() {
        let mut c = base();
        c.max_message_bytes = Some(500);
        let m = Mailer::with_env(&c, &no_env).expect("mailer");
        let now = Utc::now();
        let r = rendered("s");
        let to = vec!["a@example.org".to_string()];
        let e = m
            .build_message(&to, &r, "no-at-sign", now, "l")
            .expect_err("mid");
        assert!(e.to_string().contains("Message-ID"), "{e}");
        let e = m
            .build_message(&to, &r, "a@b>\r\nX: y", now, "l")
            .expect_err("mid");
        assert!(e.to_string().contains("Message-ID"), "{e}");
        let e = m
            .build_message(&to, &r, "a@b", now, "bad list>")
            .expect_err("list");
        assert!(e.to_string().contains("List-Id"), "{e}");
        let e = m
            .build_message(&["nobody".into()], &r, "a@b", now, "l")
            .expect_err("to");
        assert!(e.to_string().contains("nobody"), "{e}");
        assert!(m.build_message(&[], &r, "a@b", now, "l").is_err());
        let big = Rendered {
            text: "x".repeat(2000),
            ..r.clone()
        };
        match m.build_message(&to, &big, "a@b", now, "l") {
            Err(MailError::TooLarge { size, max: 500 }) => assert!(size > 2000),
            other => panic!("{other:?}"),
        }
    }
}
