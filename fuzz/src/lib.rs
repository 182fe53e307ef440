//! Fuzz harnesses for every decoder of outside bytes in Trustline (issue 7,
//! item 4; 2.4.13.9 hostile input).
//!
//! Each cargo-fuzz target in `fuzz_targets/` is one line that hands the
//! fuzzer's bytes to a harness here, so the harnesses can also be run on
//! the seed corpus by `examples/make-corpus.rs` (which writes
//! `corpus/<target>/` and checks that every `ok-*` seed is accepted and
//! every `bad-*` seed refused). Every harness drives the real decoder the
//! service uses, with a fixed context ([`fixtures`]: fixed software keys,
//! seeded IC vendors, a fixed clock) and checks properties that must hold
//! for any input beyond "does not panic".
//!
//! | target | decoder |
//! | --- | --- |
//! | `statement` | `trustline_proto::statement::{decode_unverified, verify}` for all eight statement kinds |
//! | `order` | `provisioner::orders::Order::verify` (the factory's signed-order check) |
//! | `claim_receipt` | `provisioner::nonce::Opened` (the stateless claim nonce) and the receipt checks of `CompleteClaim` |
//! | `transport_key` | `provisioner::claim::ClaimedRot::transport_key` |
//! | `rot_attestation` | `RotAttestation` wire decode + `provisioner::vendors::VendorRoots::verify` |
//! | `device_request` | `ca_service::request::{verify_csr, DeviceCertificateRequest::verify}` |
//! | `voucher` | `trustline_proto::voucher::{Voucher::decode, verify, push_entry, VoucherHeader::decode}` |
//! | `ledger_segment` | segment files through `custody_ledger::verify::verify_dir` |
//! | `ledger_open` | segment files through `custody_ledger::Ledger::open_with_storage` (recovery) |
//! | `ledger_export` | `custody_ledger::verify::verify_export` |
//! | `checkpoint_note` | `custody_ledger::checkpoint::{open, spki_from_pem}` |
//! | `caller_identity` | `transport::Caller::{from_certificate, from_verified_chain, from_uri}` |
//! | `device_answer` | `trustline_proto::device::read_frame` + `station::link::answer::check_answer` (a device's answers on an `exec:`/`serial:` link) |
//!
//! Most harnesses read a first selector byte: one value feeds the bytes to
//! the decoder as they would arrive from outside; another signs them first
//! with the fixed key the decoder trusts (or frames them with correct
//! checksums), so the fuzzer gets past signatures and checksums into the
//! parsing behind them.

#![forbid(unsafe_code)]

pub mod fixtures;
pub mod input;
pub mod targets;

/// How far a harness got with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The decoder accepted the input (signature, checksum and shape).
    Accepted,
    /// The decoder refused the input cleanly.
    Refused,
}

impl Outcome {
    /// `Accepted` when `ok`, else `Refused`.
    pub fn from_bool(ok: bool) -> Self {
        if ok {
            Self::Accepted
        } else {
            Self::Refused
        }
    }
}

/// A harness: the fuzzer's bytes in, how far they got out.
pub type Harness = fn(&[u8]) -> Outcome;

/// Every target by name, as `fuzz_targets/<name>.rs` runs it.
pub const TARGETS: &[(&str, Harness)] = &[
    ("statement", targets::statements::statement),
    ("order", targets::factory::order),
    ("claim_receipt", targets::factory::claim_receipt),
    ("transport_key", targets::factory::transport_key),
    ("rot_attestation", targets::factory::rot_attestation),
    ("device_request", targets::ca::device_request),
    ("voucher", targets::voucher::voucher),
    ("ledger_segment", targets::ledger::ledger_segment),
    ("ledger_open", targets::ledger::ledger_open),
    ("ledger_export", targets::ledger::ledger_export),
    ("checkpoint_note", targets::ledger::checkpoint_note),
    ("caller_identity", targets::transport::caller_identity),
    ("device_answer", targets::station::device_answer),
];
