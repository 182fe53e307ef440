//! The crate's one error enum.
//!
//! Caller misuse ([`Error::InvalidArgument`], [`Error::OutOfRange`]) is kept
//! apart from refusals that are the ledger doing its job ([`Error::Conflict`],
//! [`Error::QuotaExhausted`]), from storage trouble ([`Error::Io`],
//! [`Error::Stopped`]) and from stored data that fails its checks
//! ([`Error::Corrupt`]). The one mapping onto `tonic::Status` lives in
//! [`crate::service`].

use crate::entry::UniqueKey;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A unique key of the append is already held by an earlier entry
    /// (invariant 2, 2.4.14.4). Nothing was written; the caller should record
    /// the refusal (e.g. a `DuplicateRejected` entry) and give up.
    #[error("unique key {key} is already held by entry {holder_seq}")]
    Conflict {
        /// The key that collided.
        key: UniqueKey,
        /// The sequence number of the entry that holds it.
        holder_seq: u64,
    },
    /// The quota counter has reached its limit (invariant 4, 2.4.14.22).
    /// Nothing was written.
    #[error("quota {counter:?} is exhausted: {used} of {limit} used")]
    QuotaExhausted {
        /// The counter.
        counter: String,
        /// How many entries count against it.
        used: u64,
        /// The limit the append declared.
        limit: u64,
    },
    /// The request is malformed (caller misuse): an empty or oversized field,
    /// a duplicated unique key, an unspecified event kind. Nothing was written.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A sequence number, tree size or range beyond what the ledger holds or
    /// has signed.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// Something asked for does not exist: an entry, a checkpoint.
    #[error("not found: {0}")]
    NotFound(String),
    /// A storage operation failed. When it happens inside the writer the
    /// failure is latched: the ledger answers [`Error::Stopped`] from then on.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on which file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write or `fdatasync` failed, so nothing written since is
    /// known to be durable; every call fails until the ledger is reopened
    /// (which re-reads the files and cuts any torn tail).
    #[error("ledger stopped after a storage failure ({0}); reopen it")]
    Stopped(String),
    /// The ledger has been closed.
    #[error("ledger is closed")]
    Closed,
    /// The engine's storage cannot be reached right now (a database engine
    /// whose server is down or unreachable, after bounded retries). Nothing
    /// was acknowledged; the engine reconnects by itself, so the caller may
    /// retry later.
    #[error("ledger storage is unavailable: {0}")]
    Unavailable(String),
    /// Stored data fails its checks: a checksum, the hash chain, a device
    /// chain, a checkpoint. The ledger refuses to serve rather than serve
    /// wrong evidence. `location` names the file, offset or entry.
    #[error("ledger data is corrupt at {location}: {what}")]
    Corrupt {
        /// Where: segment file, offset, entry sequence number.
        location: String,
        /// What is wrong.
        what: String,
    },
    /// The index failed. The index is derived data: reopening rebuilds
    /// it from the segment files.
    #[error("index: {0}")]
    Index(String),
    /// The checkpoint signer (an HSM key in production) could not sign.
    /// No checkpoint was published; the next attempt retries.
    #[error("checkpoint signer failed: {0}")]
    Signer(String),
    /// A checkpoint note, ledger key or signature is malformed or does not
    /// verify (bad data from a file or a peer).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An inclusion or consistency proof does not verify.
    #[error("proof does not verify: {0}")]
    Proof(String),
    /// The signer's public key is not the key this ledger was created with
    /// (`ledger-key.pub.pem`). Key rotation is not supported; refusing keeps
    /// every checkpoint verifiable with the one published key.
    #[error("the checkpoint signer's key differs from the ledger key in {path}")]
    KeyMismatch {
        /// The key file.
        path: String,
    },
}

impl Error {
    /// An [`Error::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Corrupt`].
    pub(crate) fn corrupt(location: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            location: location.into(),
            what: what.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
