//! FIDO Device Onboard 1.1 ownership vouchers (protocol version 101), so
//! that FDO owner and rendezvous services can take the devices Trustline
//! makes (2.4.14.7: an ownership proof "based on open standards").
//!
//! `docs/fdo-vouchers.md` is the full description: the mapping from
//! Trustline's voucher, every hash byte by byte, what Trustline's own checks
//! add, and what a round trip keeps.
//!
//! # Encoding (FDO 1.1 §3.4, CDDL; CBOR with definite lengths and shortest heads)
//!
//! ```text
//! OwnershipVoucher = [ OVProtVer: 101,
//!                      OVHeaderTag: bstr .cbor OVHeader,
//!                      OVHeaderHMac: [5 (HMAC-SHA256), bstr .size 32],
//!                      OVDevCertChain: [+ bstr],           ; DER, device certificate first
//!                      OVEntryArray: [* OVEntry] ]
//! OVHeader         = [ OVHProtVer: 101,
//!                      OVGuid: bstr .size 16,
//!                      OVRVInfo: RendezvousInfo,
//!                      OVDeviceInfo: tstr,
//!                      OVPubKey: [10 (SECP256R1), 1 (X509), bstr SPKI DER],
//!                      OVDevCertChainHash: [-16 (SHA256), bstr .size 32] ]
//! OVEntry          = 18([ bstr {1: -7}, {}, bstr .cbor OVEntryPayload, bstr .size 64 ])
//! OVEntryPayload   = [ OVEHashPrevEntry: [-16, bstr .size 32],
//!                      OVEHashHdrInfo: [-16, bstr .size 32],
//!                      OVEExtra: null / bstr .cbor { * int => bstr },
//!                      OVEPubKey: [10, 1, bstr SPKI DER] ]
//! ```
//!
//! - `OVHeaderHMac` = HMAC-SHA256(`DCHmacSecret`, OVHeader bytes), computed
//!   by the device (the device protocol's `fdo_header_hmac` step).
//! - `OVDevCertChainHash` = SHA-256(cert₀ ‖ cert₁ ‖ …), the DER bytes only.
//! - `OVEHashHdrInfo` = SHA-256(OVGuid ‖ OVDeviceInfo).
//! - `OVEHashPrevEntry` of entry 0 = SHA-256(OVHeader bytes ‖ encoded
//!   OVHeaderHMac); of entry *i* > 0 = SHA-256(entry *i* − 1's bytes as they
//!   appear in `OVEntryArray`, tag included).
//! - Entry 0 is signed by `OVPubKey`, entry *i* > 0 by entry *i* − 1's
//!   `OVEPubKey`: COSE_Sign1 with ES256 over `["Signature1", protected, h'',
//!   payload]`.
//!
//! Trustline takes the P-256 subset of FDO: every key SECP256R1 in X509
//! encoding, every hash SHA-256, the HMAC HMAC-SHA256; RSA, P-384, COSE-key
//! or chain encodings and EPID devices are refused as
//! [`crate::Error::FdoUnsupported`]. Decoding is strict (sizes bounded
//! before parsing, exact types, canonical bytes, no trailing bytes) and
//! keeps the exact bytes of the header and of every entry, so an imported
//! voucher is exported byte for byte. A decoded [`FdoVoucher`] is untrusted
//! until [`FdoVoucher::verify`] returns.

mod cbor;
mod convert;
mod cose;
mod header;
pub mod rendezvous;
mod voucher;

#[cfg(test)]
mod tests;

pub use convert::{FdoDeviceData, TrustlineView};
pub use header::{
    cert_chain_sha256, encode_extra, header_hmac, sign_entry, FdoEntryPayload, FdoHeader,
};
pub use rendezvous::{RendezvousInfo, RendezvousInstr};
pub use voucher::{assemble, FdoVoucher, VerifiedFdoEntry, VerifiedFdoVoucher};

/// FDO protocol version 1.1 as it travels (`OVProtVer`, `OVHProtVer`).
pub const PROTOCOL_VERSION: u64 = 101;
/// The PEM label FDO tools use for a voucher.
pub const PEM_LABEL: &str = "OWNERSHIP VOUCHER";
/// Length of `OVGuid`.
pub const GUID_LEN: usize = 16;
/// Length of the device secret `DCHmacSecret` Trustline devices make.
pub const HMAC_SECRET_LEN: usize = 32;

/// FDO `hashtype` SHA256 (COSE's number).
pub const HASH_SHA256: i64 = -16;
/// FDO `hashtype` SHA384 (refused: P-256 keys pair with SHA-256).
pub const HASH_SHA384: i64 = -43;
/// FDO `hashtype` HMAC-SHA256.
pub const HMAC_SHA256: i64 = 5;
/// FDO `hashtype` HMAC-SHA384 (refused).
pub const HMAC_SHA384: i64 = 6;
/// FDO `pkType` SECP256R1.
pub const PK_SECP256R1: u64 = 10;
/// FDO `pkEnc` X509 (the body is a SubjectPublicKeyInfo DER).
pub const PK_ENC_X509: u64 = 1;
/// COSE algorithm ES256 (ECDSA P-256 with SHA-256).
pub const COSE_ALG_ES256: i64 = -7;
/// CBOR tag of a COSE_Sign1.
pub const COSE_SIGN1_TAG: u64 = 18;
/// The `OVEExtraInfoType` under which an FDO entry carries the Trustline
/// voucher entry it mirrors (ASCII "TRL0" as a negative number: outside
/// the range -65536..65535 the FDO Alliance reserves).
pub const TRUSTLINE_ENTRY_EXTRA: i64 = -1 - 0x5452_4c30;

/// Largest encoded voucher accepted, checked before parsing.
pub const MAX_VOUCHER_LEN: usize = 320 * 1024;
/// Largest `OVHeader` accepted.
pub const MAX_HEADER_LEN: usize = 4096;
/// Largest entry (tagged COSE_Sign1) accepted.
pub const MAX_ENTRY_LEN: usize = 4096;
/// Most entries accepted (as many as a Trustline voucher holds).
pub const MAX_ENTRIES: usize = crate::voucher::MAX_ENTRIES;
/// Most certificates in `OVDevCertChain`.
pub const MAX_CHAIN_LEN: usize = 8;
/// Largest certificate accepted.
pub const MAX_CERT_LEN: usize = 4096;
/// Longest `OVDeviceInfo`, in bytes.
pub const MAX_DEVICE_INFO_LEN: usize = 512;

// Every voucher within the per-part limits fits the overall limit.
const _: () = assert!(
    64 + MAX_HEADER_LEN + MAX_CHAIN_LEN * (MAX_CERT_LEN + 3) + MAX_ENTRIES * (MAX_ENTRY_LEN + 3)
        <= MAX_VOUCHER_LEN
);
