//! The station's one error enum. Per-device refusals and failures during a
//! run are outcomes in the run's report, not errors: an error here means a
//! run or an inspection could not be done at all. The station serves no
//! RPC, so there is no mapping onto `tonic::Status`; the refusals it reads
//! come with the services' `trustline-refusal` reasons
//! ([`trustline_proto::refusal`]).

/// Why a station run, a device exchange or an inspection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device on the station's link refused or failed an operation.
    #[error("device: {0}")]
    Device(String),
    /// A service (the provisioner, the ledger) refused or failed a call the
    /// run or inspection could not do without; nothing was done for the
    /// devices.
    #[error("{service} failed: {status}")]
    Backend {
        /// "provisioner" or "ledger".
        service: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
    /// A service answered with something malformed (an order without its
    /// serial scheme, ...).
    #[error("invalid answer: {0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A start-up problem (no randomness, a worker that panicked, a
    /// simulator that could not be built).
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn ledger(status: tonic::Status) -> Self {
        Error::Backend {
            service: "ledger",
            status: Box::new(status),
        }
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
