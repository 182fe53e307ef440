//! Where the HSM user PIN comes from: a file or an environment variable,
//! never a command-line argument, and never a log line.
//!
//! The PIN is read into zeroizing memory and handed to cryptoki as a
//! `secrecy` secret; `Debug` of every type here shows only the source.

use std::fmt;
use std::path::PathBuf;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::Error;

/// The environment variable that holds the PIN by default.
pub const DEFAULT_PIN_ENV: &str = "TRUSTLINE_HSM_PIN";

/// Where to read the user PIN from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (a trailing newline is ignored). It should be
    /// readable by the service's user only (mode 0600).
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "PinSource::File({})", p.display()),
            PinSource::Env(v) => write!(f, "PinSource::Env({v})"),
        }
    }
}

impl Default for PinSource {
    fn default() -> Self {
        PinSource::Env(DEFAULT_PIN_ENV.to_owned())
    }
}

impl PinSource {
    /// A description of the source for messages (never the PIN).
    pub fn describe(&self) -> String {
        match self {
            PinSource::File(p) => format!("file {}", p.display()),
            PinSource::Env(v) => format!("environment variable {v}"),
        }
    }

    /// Reads the PIN.
    ///
    /// # Errors
    /// [`Error::PinSource`] when the file or variable is missing, unreadable,
    /// not UTF-8 or empty.
    pub(crate) fn read(&self) -> Result<AuthPin, Error> {
        let fail = |reason: String| Error::PinSource {
            source_name: self.describe(),
            reason,
        };
        let text: Zeroizing<String> = match self {
            PinSource::File(path) => {
                warn_if_shared(path);
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| fail("the file is not UTF-8".to_owned()))?;
                Zeroizing::new(text.to_owned())
            }
            PinSource::Env(var) => match std::env::var(var) {
                Ok(v) => Zeroizing::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(fail("it is not set".to_owned()))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(fail("it is not UTF-8".to_owned()))
                }
            },
        };
        let pin = text.trim_end_matches(['\n', '\r']);
        if pin.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        Ok(AuthPin::from(pin))
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the HSM PIN file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &std::path::Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_pin_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        std::fs::write(&path, "123456\n").expect("write");
        let pin = PinSource::File(path).read().expect("read");
        assert_eq!(pin.expose_secret(), "123456");
    }

    #[test]
    fn missing_and_empty_sources_are_refused_without_showing_a_pin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = PinSource::File(dir.path().join("absent"));
        assert!(matches!(missing.read(), Err(Error::PinSource { .. })));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let err = PinSource::File(empty).read().expect_err("must be refused");
        assert!(err.to_string().contains("empty"), "{err}");
        let unset = PinSource::Env("TRUSTLINE_TEST_PIN_THAT_IS_NEVER_SET".to_owned());
        let err = unset.read().expect_err("must be refused");
        assert!(err.to_string().contains("not set"), "{err}");
    }

    #[test]
    fn debug_shows_the_source_only() {
        let s = format!("{:?}", PinSource::Env("X".to_owned()));
        assert_eq!(s, "PinSource::Env(X)");
    }
}
