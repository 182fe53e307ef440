//! The custody ledger: append-only, hash-chained, Merkle-proven, signed.
//!
//! Key design decision: append-only segment files written by one
//! group-commit writer are the source of truth; the index (one redb file)
//! holds only what can be rebuilt from them. This crate knows nothing about X.509, PKCS#11,
//! gRPC authentication or production policy (2.4.14.3, 2.4.14.4, 2.4.14.12,
//! 2.4.14.22).
//!
//! - [`Ledger`] is the live ledger: [`Ledger::open`] with a
//!   [`LedgerConfig`] and a checkpoint [`trustline_proto::signer::Signer`],
//!   then [`Ledger::append`] a [`Draft`] with [`UniqueKey`]s and a
//!   [`QuotaUse`].
//! - [`engine`] is the seam a second storage engine (PostgreSQL, issue 14)
//!   implements: [`LedgerEngine`] — batched appends with constraints,
//!   entries, key lookups, quotas, checkpoints, proofs and device
//!   histories. [`Ledger`] (segments + index + threads) is the default
//!   engine; the gRPC [`service`] takes any `Arc<dyn LedgerEngine>`. The
//!   verifier and exports need no engine: they read entry bytes and signed
//!   checkpoints.
//! - [`merkle`] is the RFC 6962 / 9162 math, pure.
//! - [`checkpoint`] makes and checks C2SP signed-note checkpoints.
//! - [`format`] documents the segment and export files byte by byte.
//! - [`verify`] is the offline verifier and [`export`] writes exports.
//! - [`service`] is the `trustline.v1.CustodyLedger` gRPC service.
//! - [`bench`] measures it (`trustline bench ledger`).

#![forbid(unsafe_code)]

pub mod bench;
pub mod checkpoint;
pub mod engine;
pub mod entry;
mod error;
pub mod export;
pub mod format;
mod index;
mod ledger;
pub mod merkle;
mod segments;
pub mod service;
pub mod storage;
pub mod verify;

pub use checkpoint::{LedgerKey, SignedCheckpoint};
pub use engine::{Append, EngineFuture, LedgerEngine};
pub use entry::{Appended, Constraints, Draft, EventKind, QuotaUse, StoredEntry, UniqueKey};
pub use error::{Error, Result};
pub use ledger::{
    DeviceHistory, Ledger, LedgerConfig, ProvenEntry, DEFAULT_ORIGIN, INDEX_DIR,
    LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE,
};
pub use merkle::{ConsistencyProof, Hash, InclusionProof};
