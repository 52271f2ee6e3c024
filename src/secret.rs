//! Secrets kept out of the config file: the SMTP password and the webhook signing key.
//!
//! In: where a secret lives — a file, an environment variable, or a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`, from `LoadCredential=`). Out: the secret as a [`Secret`],
//! whose `Debug` never shows it, or a [`SecretError`] naming the source (never the value).
//!
//! Read once when the config is adopted (start or reload), so a wrong path fails then, not
//! at 07:30. Files are bounded in size: a secret is small, and a misconfigured path to a log
//! file must not be read whole.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Secret files and credentials larger than this are not secrets.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Where one secret comes from. At most one of the three is set (checked by [`validate`]).
///
/// [`validate`]: SecretSource::validate
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSource {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
    pub credential: Option<String>,
}

/// A secret value. Printing it with `{:?}` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret that could not be read: which source (e.g. "secret_file /etc/x"), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the {what} from {source_desc}: {reason}")]
pub struct SecretError {
    /// "password", "secret".
    pub what: &'static str,
    pub source_desc: String,
    pub reason: String,
}

impl SecretSource {
    /// How many sources are set.
    pub fn count(&self) -> usize {
        [
            self.file.is_some(),
            self.env.is_some(),
            self.credential.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count()
    }

    /// What can be checked without I/O: one source at most, a credential given by name.
    /// `prefix` names the keys in messages ("password" → `password_file`, ...). The error is
    /// (key, what to write instead).
    pub fn validate(&self, prefix: &str) -> Result<(), (String, String)> {
        if self.count() > 1 {
            return Err((
                format!("{prefix}_file"),
                format!("set only one of {prefix}_file, {prefix}_env, {prefix}_credential"),
            ));
        }
        if let Some(name) = &self.credential {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err((
                    format!("{prefix}_credential"),
                    "write the credential's name as given in LoadCredential=NAME:path, not a path"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Reads the secret; `None` when no source is set. `env` looks up environment variables
    /// (injected so tests need not change the process environment). A trailing newline (files
    /// written by `echo`) is not part of the secret; an empty secret is an error.
    pub fn read(
        &self,
        prefix: &'static str,
        what: &'static str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Secret>, SecretError> {
        let err = |desc: &str, reason: String| SecretError {
            what,
            source_desc: desc.to_string(),
            reason,
        };
        let (desc, raw) = if let Some(path) = &self.file {
            let desc = format!("{prefix}_file {}", path.display());
            let raw = read_small_file(path, MAX_SECRET_BYTES).map_err(|r| err(&desc, r))?;
            (desc, raw)
        } else if let Some(var) = &self.env {
            let desc = format!("{prefix}_env {var}");
            let v = env(var)
                .ok_or_else(|| err(&desc, "the variable is not set (or not UTF-8)".into()))?;
            (desc, v)
        } else if let Some(name) = &self.credential {
            let desc = format!("{prefix}_credential {name}");
            let dir = env("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                err(
                    &desc,
                    format!(
                        "CREDENTIALS_DIRECTORY is not set: run under systemd with \
                         LoadCredential={name}:/path/to/secret in the unit"
                    ),
                )
            })?;
            let path = Path::new(&dir).join(name);
            let raw = read_small_file(&path, MAX_SECRET_BYTES)
                .map_err(|r| err(&desc, format!("{}: {r}", path.display())))?;
            (desc, raw)
        } else {
            return Ok(None);
        };
        let value = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(&raw);
        if value.is_empty() {
            return Err(err(&desc, "it is empty".into()));
        }
        Ok(Some(Secret(value.to_string())))
    }
}

/// Reads a text file of at most `max` bytes; the error says why (the caller names the file).
pub fn read_small_file(path: &Path, max: u64) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = String::new();
    f.take(max + 1)
        .read_to_string(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > max {
        return Err(format!("it is larger than {max} bytes"));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sources_read_and_redact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, "k3y\n").expect("write");
        let s = SecretSource {
            file: Some(file.clone()),
            ..Default::default()
        };
        let got = s
            .read("secret", "secret", &no_env)
            .expect("file")
            .expect("set");
        assert_eq!(got.expose(), "k3y");
        assert_eq!(format!("{got:?}"), "<redacted>");
        std::fs::write(&file, "").expect("write");
        let e = s.read("secret", "secret", &no_env).expect_err("empty");
        assert!(
            e.to_string()
                .starts_with("cannot read the secret from secret_file "),
            "{e}"
        );
        assert!(!e.to_string().contains("k3y"));

        let s = SecretSource {
            env: Some("HOOK_KEY".into()),
            ..Default::default()
        };
        let env = |k: &str| (k == "HOOK_KEY").then(|| "from-env".to_string());
        assert_eq!(
            s.read("secret", "secret", &env).unwrap().unwrap().expose(),
            "from-env"
        );
        assert!(SecretSource::default()
            .read("secret", "secret", &no_env)
            .unwrap()
            .is_none());
        let two = SecretSource {
            env: Some("A".into()),
            credential: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(two.validate("secret").unwrap_err().0, "secret_file");
        let path_cred = SecretSource {
            credential: Some("/etc/x".into()),
            ..Default::default()
        };
        assert_eq!(
            path_cred.validate("secret").unwrap_err().0,
            "secret_credential"
        );
    }
}
