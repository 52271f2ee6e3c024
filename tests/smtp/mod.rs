//! Test harness around `tests/smtp/server.py`: a real SMTP server process (aiosmtpd) on
//! 127.0.0.1 with STARTTLS under a throwaway CA made with rcgen, AUTH, and scripted faults.
//!
//! When python3 or aiosmtpd is missing the tests skip with a printed reason, unless
//! `POLICYWATCH_REQUIRE_SMTP=1` (CI) makes that a failure.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use policywatch::mail::{SmtpConfig, TlsMode};

pub const INSTALL_HINT: &str = "python3 -m pip install aiosmtpd";
pub const USER: &str = "digest-sender";
pub const PASSWORD: &str = "correct horse battery staple";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/smtp")
        .join(name)
}

/// Whether the SMTP server can run here. Prints why not, once; panics instead under
/// `POLICYWATCH_REQUIRE_SMTP=1`.
pub fn available() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let res = OK.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .output();
        match out {
            Err(e) => Err(format!("python3 not runnable: {e}")),
            Ok(o) if !o.status.success() => Err(format!(
                "aiosmtpd not importable: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Ok(_) => Ok(()),
        }
    });
    match res {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("POLICYWATCH_REQUIRE_SMTP").as_deref() == Ok("1") {
                panic!("POLICYWATCH_REQUIRE_SMTP=1 but the test SMTP server cannot run ({why}); install it with: {INSTALL_HINT}");
            }
            // Straight to stderr, not eprintln!: the test harness swallows eprintln! output of
            // passing tests, and a skip must be seen.
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: SMTP tests need python3 with aiosmtpd ({why}); install with: \
                     {INSTALL_HINT} (set POLICYWATCH_REQUIRE_SMTP=1 to make this a failure)"
                );
            });
            false
        }
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost, as PEM files in `dir`.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "policywatch test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "policywatch test SMTP server");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");

    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certs.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&certs.cert, leaf_cert.pem()).expect("write cert");
    std::fs::write(&certs.key, leaf_key.serialize_pem()).expect("write key");
    certs
}

#[derive(Clone, Debug)]
pub struct Opts {
    /// "starttls", "tls" or "plain".
    pub mode: &'static str,
    pub auth: bool,
    pub auth_reject: bool,
    pub max_bytes: Option<usize>,
    pub tempfail: u32,
    /// Addresses refused with 550 at RCPT TO.
    pub reject_rcpt: Vec<String>,
    /// Take the message, then never answer.
    pub hang_after_data: bool,
    /// 0: any free port.
    pub port: u16,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mode: "starttls",
            auth: true,
            auth_reject: false,
            max_bytes: None,
            tempfail: 0,
            reject_rcpt: Vec::new(),
            hang_after_data: false,
            port: 0,
        }
    }
}

/// What outlives one server process: the temp dir, the certificates, the password file and
/// the directory received messages land in. A test can stop a server and start another on
/// the same port with the same certificate ("the relay was down for a while").
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub certs: Certs,
    pub messages_dir: PathBuf,
    pub password_file: PathBuf,
}

impl Env {
    /// None when SMTP tests are skipped here (see [`available`]).
    pub fn new() -> Option<Env> {
        if !available() {
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let certs = make_certs(tmp.path());
        let messages_dir = tmp.path().join("received");
        std::fs::create_dir(&messages_dir).expect("mkdir");
        let password_file = tmp.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write password");
        Some(Env {
            tmp,
            certs,
            messages_dir,
            password_file,
        })
    }

    /// Starts a server process; it stores messages in this env's directory.
    pub fn start(&self, opts: Opts) -> Server {
        let mut cmd = Command::new("python3");
        cmd.arg(script("server.py"))
            .arg("--dir")
            .arg(&self.messages_dir)
            .args(["--mode", opts.mode])
            .args(["--port", &opts.port.to_string()])
            .arg("--cert")
            .arg(&self.certs.cert)
            .arg("--key")
            .arg(&self.certs.key);
        if opts.auth {
            cmd.args(["--user", USER, "--password", PASSWORD]);
        }
        if opts.auth_reject {
            cmd.arg("--auth-reject");
        }
        if let Some(n) = opts.max_bytes {
            cmd.args(["--max-bytes", &n.to_string()]);
        }
        if opts.tempfail > 0 {
            cmd.args(["--tempfail", &opts.tempfail.to_string()]);
        }
        for a in &opts.reject_rcpt {
            cmd.args(["--reject-rcpt", a]);
        }
        if opts.hang_after_data {
            cmd.arg("--hang-after-data");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3 tests/smtp/server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        // Blocks until the server listens (or dies: then the line is empty).
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read port line");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not report its port, said {line:?}"));
        let stdin = child.stdin.take();
        Server {
            child,
            stdin,
            opts,
            port,
            messages_dir: self.messages_dir.clone(),
        }
    }

    /// The client config that trusts this env's CA and logs in with the right password.
    pub fn config(&self, port: u16, tls: TlsMode) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            tls,
            username: Some(USER.into()),
            password_file: Some(self.password_file.clone()),
            password_env: None,
            password_credential: None,
            from: "policywatch <digests@policywatch.test>".into(),
            ca_file: Some(self.certs.ca.clone()),
            timeout: Duration::from_secs(10),
            max_message_bytes: None,
        }
    }

    /// Stored messages, oldest first.
    pub fn messages(&self) -> Vec<PathBuf> {
        numbered(&self.messages_dir, "msg-", "eml")
    }

    /// Refusals the server recorded (one JSON file each: code, bytes), oldest first.
    pub fn rejections(&self) -> Vec<serde_json::Value> {
        numbered(&self.messages_dir, "rejected-", "json")
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read"))
                    .expect("rejection json")
            })
            .collect()
    }

    /// Messages the server took and then never answered (`hang_after_data`), oldest first.
    pub fn hung(&self) -> Vec<PathBuf> {
        numbered(&self.messages_dir, "hung-", "json")
    }

    /// The envelope recipients of every stored message, in order.
    pub fn envelope_recipients(&self) -> Vec<Vec<String>> {
        self.messages()
            .iter()
            .map(|m| {
                self.meta(m)["rcpt_tos"]
                    .as_array()
                    .expect("rcpt_tos")
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .collect()
    }

    /// The session facts the server recorded next to a message (TLS, login, envelope).
    pub fn meta(&self, eml: &Path) -> serde_json::Value {
        let text = std::fs::read_to_string(eml.with_extension("json")).expect("meta");
        serde_json::from_str(&text).expect("meta json")
    }
}

fn numbered(dir: &Path, prefix: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter_map(|p| {
            let n = p
                .file_stem()?
                .to_str()?
                .strip_prefix(prefix)?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// A running server process. Killed (and reaped) on drop; it also exits by itself when our
/// end of its stdin closes.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pub opts: Opts,
    pub port: u16,
    messages_dir: PathBuf,
}

impl Server {
    /// The client TLS mode matching this server. A "plain" server gets a STARTTLS client too:
    /// tests use that to show we refuse to send in clear text.
    pub fn client_tls(&self) -> TlsMode {
        if self.opts.mode == "tls" {
            TlsMode::Tls
        } else {
            TlsMode::Starttls
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One env with one server, for tests that need no restarts.
pub struct Single {
    pub env: Env,
    pub server: Server,
}

impl Single {
    /// Starts a server, or returns None when SMTP tests are skipped here.
    pub fn start(opts: Opts) -> Option<Single> {
        let env = Env::new()?;
        let server = env.start(opts);
        Some(Single { env, server })
    }

    pub fn config(&self) -> SmtpConfig {
        self.env.config(self.server.port, self.server.client_tls())
    }

    pub fn messages(&self) -> Vec<PathBuf> {
        self.env.messages()
    }

    pub fn meta(&self, eml: &Path) -> serde_json::Value {
        self.env.meta(eml)
    }
}

/// Parses a stored message with Python's `email` package (not lettre): headers, parts.
pub fn parse_message(eml: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(script("parse_mail.py"))
        .arg(eml)
        .output()
        .expect("run parse_mail.py");
    assert!(
        out.status.success(),
        "parse_mail.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser json")
}

/// All values of a header in a parsed message (case-insensitive name).
pub fn header_values(parsed: &serde_json::Value, name: &str) -> Vec<String> {
    parsed["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `cfg` as the `[smtp]` table of a config file, for tests that run the binary.
pub fn smtp_table(cfg: &SmtpConfig) -> toml_edit::Table {
    let mut t = toml_edit::Table::new();
    t["host"] = toml_edit::value(cfg.host.as_str());
    t["port"] = toml_edit::value(i64::from(cfg.port.expect("port")));
    t["tls"] = toml_edit::value(match cfg.tls {
        TlsMode::Starttls => "starttls",
        TlsMode::Tls => "tls",
        TlsMode::None => "none",
    });
    if let Some(u) = &cfg.username {
        t["username"] = toml_edit::value(u.as_str());
    }
    if let Some(p) = &cfg.password_file {
        t["password_file"] = toml_edit::value(p.to_string_lossy().as_ref());
    }
    t["from"] = toml_edit::value(cfg.from.as_str());
    if let Some(p) = &cfg.ca_file {
        t["ca_file"] = toml_edit::value(p.to_string_lossy().as_ref());
    }
    t["timeout"] = toml_edit::value(humantime::format_duration(cfg.timeout).to_string());
    t
}

/// Turns a test config into one that mails: every watch alerts immediately (no gap), and the
/// first digest goes by email through `smtp` to `to`.
pub fn mail_by_alert(doc: &mut toml_edit::DocumentMut, smtp: &SmtpConfig, to: &str) {
    doc["daemon"]["alert_min_gap"] = toml_edit::value("0s");
    if let Some(ws) = doc["watches"].as_array_of_tables_mut() {
        for w in ws.iter_mut() {
            w["alert"] = toml_edit::value("immediate");
        }
    }
    doc["smtp"] = toml_edit::Item::Table(smtp_table(smtp));
    doc["digests"][0]["via"] = toml_edit::value("email");
    let mut list = toml_edit::Array::new();
    list.push(to);
    doc["digests"][0]["to"] = toml_edit::value(list);
}

/// Parses many stored messages with one Python process (see [`parse_message`]).
pub fn parse_messages(emls: &[PathBuf]) -> Vec<serde_json::Value> {
    if emls.is_empty() {
        return Vec::new();
    }
    let out = Command::new("python3")
        .arg(script("parse_mail.py"))
        .args(emls)
        .output()
        .expect("run parse_mail.py");
    assert!(
        out.status.success(),
        "parse_mail.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("parser json"))
        .collect()
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// An SMTP config pointing at a loopback port where nothing listens (needs no python).
pub fn dead_server_config() -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(dead_port()),
        tls: TlsMode::Starttls,
        username: None,
        password_file: None,
        password_env: None,
        password_credential: None,
        from: "digests@policywatch.test".into(),
        ca_file: None,
        timeout: Duration::from_secs(5),
        max_message_bytes: None,
    }
}
