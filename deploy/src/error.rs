//! The crate's one error enum: what setting up or enrolling a domain can
//! run into. It serves no RPC of its own (the hub's service maps its own
//! errors), so there is no mapping onto `tonic::Status`.

/// Why a deployment step failed. Each step checks before it writes, so a
/// refused step leaves the directories as they were (a half-written step
/// says which file it stopped at).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// An input was refused: a request for another site, a bundle for
    /// another site or origin, a site enrolled twice, a malformed file.
    #[error("refused: {0}")]
    Refused(String),
    /// A step that runs once has already run; names what exists.
    #[error("already initialised: {0}")]
    AlreadyInitialized(String),
    /// The HSM or the CA failed.
    #[error(transparent)]
    Ca(#[from] ca_service::Error),
    /// The service PKI failed.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The site's set-up failed.
    #[error(transparent)]
    Site(#[from] site::Error),
    /// The hub refused its configuration or failed.
    #[error(transparent)]
    Hub(#[from] hub::Error),
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
