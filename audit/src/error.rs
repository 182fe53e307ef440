//! The audit's one error enum. Problems *in* the ledger are findings in the
//! report, never errors: an error means the audit could not run (a key,
//! certificate, sighting or source that cannot be read, a ledger service
//! that cannot be reached). The audit serves no RPC, so there is no mapping
//! onto `tonic::Status`.

/// Why an audit, an evidence report or a synthetic ledger could not be
/// made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key, a CA certificate, a field sighting or the source cannot be
    /// used, or no ledger key is known; nothing was audited.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The ledger service refused or failed while its snapshot was taken;
    /// no partial snapshot is audited.
    #[error("{service} failed: {status}")]
    Backend {
        /// "ledger".
        service: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
