//! The site's one error enum: configuration, files, and the start-up
//! failures of the services it wires (each service's own error, wrapped).
//! The site serves no RPC of its own, so it has no mapping onto
//! `tonic::Status`: the services it runs map their own errors.

/// Why setting up or running a site failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration or start-up problem: a malformed `trustline.toml`,
    /// missing credentials, a CA or ledger that does not open, an address
    /// that cannot be bound. Nothing was served.
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
    /// The factory did not start (e.g. the CA could not be reached, a vendor
    /// root does not parse).
    #[error(transparent)]
    Provisioner(#[from] provisioner::Error),
    /// The ownership service did not start.
    #[error(transparent)]
    Ownership(#[from] ownership::Error),
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
