//! How a Trustline service reaches the custody ledger and the CA, and the
//! few things every service over them shares.
//!
//! Key design decision: services see only traits — [`LedgerApi`] and
//! [`CaApi`] for the factory's appends, reads and signatures,
//! [`LedgerReads`] and [`CrlApi`] for proven reads and CRL signing — each
//! with a remote implementation (the generated gRPC client over an mTLS
//! channel) and a local one (the service implementation in this process,
//! called through its trait). A local call is authorized by the same role
//! table as a networked one ([`RequestIdentity`]), so `trustline serve all`
//! cannot do in one process what the split services would refuse. No
//! service ever holds an HSM session or opens a ledger file through this
//! crate, except the ledger's owner calling its own ledger
//! ([`DirectLedger`]).
//!
//! Also here, because every service over the ledger needs them and this is
//! the lowest crate they all use: the one bounded cache ([`cache`]), the
//! ledger's unique-key namespaces ([`keys`]) and the data-directory layout
//! ([`layout`]).

#![forbid(unsafe_code)]

mod ca;
pub mod cache;
mod direct;
pub mod identity;
pub mod keys;
pub mod layout;
mod ledger;
mod reads;

pub use ca::{CaApi, LocalCa, RemoteCa};
pub use cache::BoundedCache;
pub use direct::DirectLedger;
pub use identity::RequestIdentity;
pub use ledger::{append_request, AppendRefusal, LedgerApi, LocalLedger, RemoteLedger};
pub use reads::{CrlApi, LedgerReads, LocalCrl, LocalLedgerReads, RemoteCrl, RemoteLedgerReads};

/// The current time, Unix ms (the unit of every ledger timestamp).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
