//! PostgreSQL engines for Trustline (issue 14).
//!
//! Key design decision: PostgreSQL is an engine behind the seams the crates
//! already have, not a second code path. [`PgLedger`] implements
//! [`custody_ledger::LedgerEngine`], so the gRPC service, the tools and the
//! site work on it unchanged; entries are stored as their exact bytes, so
//! the offline verifier and exports are those of the file engine
//! ([`records`]: `ledger verify`, `ledger export`, `ledger migrate` read and
//! write the same formats). Every rule (unique keys, quotas, one linear
//! history, one checkpoint per size) is decided in a database transaction,
//! so several replicas on one database agree.
//!
//! - [`ledger`]: the engine — batched appends, the signer lease, reads and
//!   proofs.
//! - [`records`]: verify, export and import a ledger held in PostgreSQL.
//! - [`schema`]: versioned migrations (refinery), applied on start.
//! - [`db`]: connections and bounded retries.
//! - [`bench`]: the file and PostgreSQL engines measured side by side.
//! - [`cluster`]: a throwaway PostgreSQL cluster for tests, benchmarks and
//!   the demo.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cluster;
pub mod db;
mod error;
pub mod ledger;
pub mod records;
pub mod schema;

pub use db::{is_postgres_url, RetryPolicy};
pub use error::{Error, Result};
pub use ledger::{BatchStats, PgLedger, PgLedgerConfig};
