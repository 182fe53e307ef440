//! The transport crate's one error type.
//!
//! Errors here are about setting things up (certificates, keys, sockets,
//! state files) or about a caller's certificate not naming a caller. Refusals
//! of individual RPCs are not errors of this crate: they are `tonic::Status`
//! values produced by the guard layer (see [`crate::guard`]).

use std::path::PathBuf;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file (certificate, key, CA, lockout state) could not be read or
    /// written; nothing was changed beyond what the OS may have done.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM or DER input did not hold what was expected (no certificate, no
    /// private key, not P-256, ...). The input is refused as a whole.
    #[error("{what}: {reason}")]
    Credential {
        /// What was being loaded, e.g. "client certificate".
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// rustls refused the TLS configuration (e.g. key and certificate do not
    /// match, or the CA cannot be used to verify clients).
    #[error("tls configuration: {0}")]
    Tls(String),
    /// A role, site or name is not a valid caller token, or a caller URI is
    /// malformed. Caller misuse: fix the argument.
    #[error("invalid caller identity: {0}")]
    InvalidIdentity(String),
    /// A verified client certificate does not name exactly one caller; the
    /// connection is served but every request on it is refused.
    #[error("client certificate names no caller: {0}")]
    NoCaller(String),
    /// Certificate issuance failed in rcgen or in the signing key (for an
    /// HSM-backed key: session lost, key missing).
    #[error("certificate issuance: {0}")]
    Issue(String),
    /// A client could not reach or set up a channel to a server.
    #[error("connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A listener could not be used (bind, local address, not loopback for
    /// the metrics endpoint).
    #[error("listener: {0}")]
    Listener(String),
    /// The lockout state file exists but does not parse; the server does not
    /// start rather than forget lockouts (2.4.14.21).
    #[error("lockout state {path}: {reason}")]
    LockoutState {
        /// The state file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// gRPC reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn credential(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Credential {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
