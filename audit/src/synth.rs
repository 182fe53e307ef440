//! Synthetic ledgers for testing and measuring the audit: an OEM with a
//! software order key and CA, devices with real P-256 keys and X.509
//! certificates, and entries in exactly the payload formats and with the
//! unique keys and quota counters the factory line uses
//! ([`backends::keys`]), appended through the custody
//! ledger's public API with a software checkpoint signer (no HSM).
//!
//! Synthetic claims carry no RoT receipt or attestation chain (the audit
//! does not re-verify those; the factory did when it claimed), and
//! synthetic certifications no key attestation or voucher digest. Anything
//! the audit reads — orders, certificates, serials, keys, sites, stations,
//! custody — is what the line writes.
//!
//! [`Append::forced`] drops an append's constraints: that is how the tests
//! plant what the line would have refused (an over-quota certificate, a
//! duplicate serial), as a compromised or buggy writer could.
//!
//! Modules: `oem` (the synthetic OEM and devices), `entries` (what the line
//! appends), `generate` (a clean ledger of any size), `scenario` (a seeded
//! history with planted anomalies).

use crate::error::Error;

mod entries;
mod generate;
mod oem;
mod scenario;

pub use entries::{certified, claimed, custody, order, order_opened, rejected, Append};
pub use generate::{generate, open_ledger, Generated};
pub use oem::{SyntheticDevice, SyntheticOem};
pub use scenario::{seed_scenario, Plant, Scenario};

pub(super) fn synth_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("synthetic {what}: {e}"))
}

/// The actor that opens orders in synthetic ledgers.
pub const OEM_ACTOR: &str = "admin/oem/ops";
