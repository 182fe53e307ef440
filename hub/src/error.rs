//! The crate's one error enum. The one mapping onto `tonic::Status` is in
//! [`crate::service`].
//!
//! Caller misuse ([`Error::InvalidArgument`]) is kept apart from what a
//! site's data says ([`Error::BadSignature`], [`Error::BadProof`],
//! [`Error::Fork`]), from protocol resynchronisation
//! ([`Error::OldSizeMismatch`], [`Error::Behind`]) and from the hub's own
//! trouble ([`Error::Store`], [`Error::Signer`]).

use crate::model::{ForkKind, SiteStatus};

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No site with this name is configured at the hub. Nothing was read.
    #[error("unknown site {0:?}")]
    UnknownSite(String),
    /// No site is configured with this checkpoint origin (tlog-witness
    /// 404). Nothing was read.
    #[error("unknown checkpoint origin {0:?}")]
    UnknownOrigin(String),
    /// The checkpoint carries no valid signature by the site's configured
    /// ledger key (tlog-witness 403). Nothing was recorded.
    #[error("checkpoint is not signed by the site's ledger key: {0}")]
    BadSignature(String),
    /// Malformed request: bad note syntax, an old size above the new one
    /// (tlog-witness 400), too many proof lines, an oversized batch.
    /// Nothing was recorded.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The consistency proof does not verify (tlog-witness 422). Nothing
    /// was recorded and nothing cosigned.
    #[error("consistency proof does not verify: {0}")]
    BadProof(String),
    /// The request's old size is not the size of the latest checkpoint the
    /// hub cosigned (tlog-witness 409); `state` says what the hub holds, so
    /// the site retries from there.
    #[error("old size {offered} is not the last cosigned size {}", state.cosigned_size())]
    OldSizeMismatch {
        /// The old size the request named.
        offered: u64,
        /// What the hub holds for the site.
        state: Box<SiteStatus>,
    },
    /// The hub does not hold the entries the request builds on: a push that
    /// starts beyond the mirror, or a checkpoint larger than the mirror.
    /// The site pushes from `state.mirror_size` and retries.
    #[error("{what}")]
    Behind {
        /// What is missing.
        what: String,
        /// What the hub holds for the site.
        state: Box<SiteStatus>,
    },
    /// The site's data contradicts what the hub holds or fails verification:
    /// a rewritten entry, an entry `trustline ledger verify` refuses, a
    /// checkpoint whose root differs from the hub's. Refused and recorded
    /// durably with its evidence; the hub will never cosign it.
    #[error("fork refused and recorded ({kind}): {reason}")]
    Fork {
        /// What kind of fork.
        kind: ForkKind,
        /// What differs, in words.
        reason: String,
        /// What the hub holds for the site (after recording the fork).
        state: Box<SiteStatus>,
    },
    /// A registry read asked for something the hub does not hold.
    #[error("not found: {0}")]
    NotFound(String),
    /// The hub's storage failed or lost a compare-and-set to a concurrent
    /// writer; nothing of the request is committed.
    #[error("hub storage: {0}")]
    Store(String),
    /// Stored data fails its checks; the hub refuses to serve it.
    #[error("hub data is corrupt: {0}")]
    Corrupt(String),
    /// The witness signer (an HSM key in production) could not sign.
    /// Nothing was persisted or answered.
    #[error("witness signer failed: {0}")]
    Signer(String),
    /// The hub's configuration is unusable (bad origin, bad key, two sites
    /// with one origin).
    #[error("hub configuration: {0}")]
    Config(String),
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        })*
    };
}

redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
