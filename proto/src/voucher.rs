//! Ownership vouchers: a device's chain of owners, carried from the factory to
//! the field (2.4.14.7, 2.4.16.3/6).
//!
//! The structure follows the FIDO Device Onboard 1.1 ownership voucher so a
//! mapping stays easy: a header naming the device and the manufacturer key,
//! an optional device binding (FDO's `OVHeaderHMac`, here a signature by the
//! device identity key), and entries, each a COSE_Sign1 (RFC 9052) whose
//! payload hashes the previous entry and the header and names the next owner.
//! Entry 0 is signed by the manufacturer (OEM voucher) key; entry *i* > 0 by
//! the owner named in entry *i* − 1. The current owner is the key named in the
//! last entry, or the manufacturer while there is none.
//!
//! # Encoding (CBOR, RFC 8949, definite lengths, shortest heads)
//!
//! ```text
//! Voucher      = [ version: 1,                      ; FDO OVProtVer
//!                  header: bstr .cbor Header,       ; FDO OVHeaderTag
//!                  device_binding: bstr / null,     ; FDO OVHeaderHMac (tagged COSE_Sign1)
//!                  entries: [* bstr] ]              ; FDO OVEntryArray (tagged COSE_Sign1 each)
//! Header       = [ version: 1,                      ; FDO OVHProtVer
//!                  guid: bstr .size 16,             ; FDO OVGuid (random)
//!                  rot_id: tstr,                    ; 64 lowercase hex
//!                  serial: tstr,                    ; product serial (FDO OVDeviceInfo)
//!                  cert_chain_sha256: bstr .size 32,; FDO OVDevCertChainHash, see cert_chain_hash
//!                  manufacturer_key: bstr ]         ; FDO OVPubKey, P-256 SubjectPublicKeyInfo DER
//! EntryPayload = [ prev_hash: bstr .size 32,        ; FDO OVEHashPrevEntry
//!                  header_hash: bstr .size 32,      ; FDO OVEHashHdrInfo
//!                  commitment_salt: bstr .size 16,  ; in FDO's OVEExtra position
//!                  next_owner_key: bstr ]           ; FDO OVEPubKey, P-256 SPKI DER
//! ```
//!
//! Hashes are SHA-256. `header_hash` is over the header's bytes (the content
//! of the `header` bstr). `prev_hash` of entry 0 is the header hash; of entry
//! *i* > 0 it is the hash of entry *i* − 1's exact COSE bytes. Each entry is a
//! CBOR-tagged (18) COSE_Sign1 with protected header `{1: -7 (ES256), 3:
//! "application/vnd.trustline.voucher-entry+cbor", 4: SHA-256(signer SPKI)}`,
//! an empty unprotected header, an embedded payload and a 64-byte raw `r ‖ s`
//! signature (RFC 9053 §2.1) over the `Signature1` structure with empty
//! external AAD. The device binding has the same shape with content type
//! `"application/vnd.trustline.voucher-binding"` and the header hash as
//! payload; it sits outside the entries (as FDO's HMAC does) so the OEM can
//! sign entry 0 before or after the device binds the header.
//!
//! Decoding is strict: sizes are bounded before parsing, every item must have
//! its exact type and length, and the bytes must be the canonical encoding of
//! what was parsed (re-encoding must reproduce them), so one voucher has one
//! byte string and any altered byte is refused by [`Voucher::decode`] or by
//! verification. A decoded [`Voucher`] is *untrusted* until
//! [`Voucher::verify`] returns a [`VerifiedVoucher`].
//!
//! What the chain cannot show by itself: a voucher cut back to an earlier
//! owner is a valid earlier voucher. Compare the entry count with the ledger
//! ([`VerifiedVoucher::ensure_entries`]). With no entries, a header is bound
//! only by the device binding ([`Voucher::verify_device_binding`]).
//!
//! Owners stay private (invariant 6): the ledger records
//! [`owner_commitment`]`(salt, key)` with the entry's fresh salt, never the
//! key, so transfers of one device cannot be linked by their commitments.
//! An order may commit to the first owner the same way
//! ([`first_owner_commitment`], issue 12 item 1), and the entry the OEM
//! signs is kept only sealed under an HSM key ([`seal`], issue 12 item 10).
//!
//! Keys have one form (issue 12, canonical keys): the same P-256 key written
//! compressed or uncompressed names the same owner. Payload builders write
//! [`canonical_p256_spki`](crate::ecdsa::canonical_p256_spki), decoding
//! refuses any other form of an owner or manufacturer key, and key ids and
//! commitments hash the canonical form whatever form they are given.

//!
//! # Modules
//!
//! [`VoucherHeader`] (`header`), entries and their signing (`entry`), the
//! voucher and its chain walk (`chain`), and the two encodings underneath:
//! COSE_Sign1 with ES256 (`cose`) and the little CBOR the format needs
//! (`cbor`).

use sha2::{Digest, Sha256};

mod cbor;
mod chain;
mod cose;
mod entry;
mod header;
pub mod seal;

pub use chain::{VerifiedEntry, VerifiedVoucher, Voucher};
pub use entry::{first_entry_payload, sign_entry, EntryPayload};
pub use header::VoucherHeader;

/// The voucher format version (outer and header).
pub const VERSION: u64 = 1;
/// Largest encoded voucher accepted, in bytes; checked before parsing.
pub const MAX_VOUCHER_LEN: usize = 128 * 1024;
/// Most entries (ownership transfers) a voucher may hold.
pub const MAX_ENTRIES: usize = 64;
/// Largest encoded header accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 2048;
/// Largest encoded entry (or device binding) accepted, in bytes.
pub const MAX_ENTRY_LEN: usize = 1536;
/// Longest product serial, in bytes (printable ASCII).
pub const MAX_SERIAL_LEN: usize = 64;
/// Length of the voucher guid.
pub const GUID_LEN: usize = 16;
/// Domain separator of the guid of a manufacturer voucher
/// ([`Voucher::manufacturer`]): SHA-256(domain ‖ device certificate DER),
/// first [`GUID_LEN`] bytes.
pub const GUID_DOMAIN: &[u8] = b"trustline.voucher.guid\0";
/// Length of an entry's commitment salt.
pub const SALT_LEN: usize = 16;
/// COSE content type of a voucher entry.
pub const ENTRY_CONTENT_TYPE: &str = "application/vnd.trustline.voucher-entry+cbor";
/// COSE content type of the device binding.
pub const BINDING_CONTENT_TYPE: &str = "application/vnd.trustline.voucher-binding";

/// Length of a raw ES256 signature (`r ‖ s`).
const COSE_SIGNATURE_LEN: usize = 64;

// Every voucher within the per-part limits fits the overall limit.
const _: () = assert!(16 + MAX_HEADER_LEN + MAX_ENTRY_LEN * (MAX_ENTRIES + 1) <= MAX_VOUCHER_LEN);

/// SHA-256 over a certificate chain, leaf first: for each certificate, its
/// DER length as a 4-byte big-endian integer followed by the DER bytes. The
/// chain is the one `Certify` returns (device certificate, site
/// intermediate, OEM root). Length prefixes keep two different chains from
/// hashing alike by moving bytes across a certificate boundary.
pub fn cert_chain_hash<C: AsRef<[u8]>>(chain: &[C]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for cert in chain {
        let cert = cert.as_ref();
        // A DER certificate larger than 4 GiB cannot exist in memory here;
        // saturating keeps the function total.
        let len = u32::try_from(cert.len()).unwrap_or(u32::MAX);
        hasher.update(len.to_be_bytes());
        hasher.update(cert);
    }
    hasher.finalize().into()
}

/// Domain separator of [`first_owner_commitment`].
pub const FIRST_OWNER_DOMAIN: &[u8] = b"trustline.first-owner\0";
/// Length of the salt of a [`first_owner_commitment`].
pub const FIRST_OWNER_SALT_LEN: usize = 32;

/// The canonical form of a key when it is a P-256 SubjectPublicKeyInfo,
/// else the bytes as given (hashing stays total; a non-P-256 key is
/// refused wherever a key is checked).
fn canonical_or_raw(spki_der: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    crate::ecdsa::canonical_p256_spki(spki_der).map_or(
        std::borrow::Cow::Borrowed(spki_der),
        std::borrow::Cow::Owned,
    )
}

/// The salted owner commitment the ledger records for a transfer:
/// SHA-256(`salt` ‖ canonical `owner_spki`) (2.4.16.3, 2.4.16.6). The key
/// is hashed in its canonical form, so both encodings of one key commit
/// alike.
pub fn owner_commitment(salt: &[u8], owner_spki: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(canonical_or_raw(owner_spki));
    hasher.finalize().into()
}

/// The commitment a production order may carry to its devices' first owner
/// (`ProductionOrder.first_owner_commitment`, issue 12 item 1):
/// SHA-256([`FIRST_OWNER_DOMAIN`] ‖ `salt` ‖ canonical SPKI of the owner
/// key). The OEM keeps the salt; `TransferFromManufacturer` must be given
/// it with the key to name that owner.
///
/// # Errors
/// [`Error::NotP256`](crate::Error::NotP256) when `owner_spki` is not a
/// P-256 key.
pub fn first_owner_commitment(
    salt: &[u8; FIRST_OWNER_SALT_LEN],
    owner_spki: &[u8],
) -> Result<[u8; 32], crate::Error> {
    let canonical = crate::ecdsa::canonical_p256_spki(owner_spki)?;
    let mut hasher = Sha256::new();
    hasher.update(FIRST_OWNER_DOMAIN);
    hasher.update(salt);
    hasher.update(canonical);
    Ok(hasher.finalize().into())
}

/// The COSE key id of a signer: SHA-256 of its SubjectPublicKeyInfo DER in
/// canonical form (so a signer that presents its key compressed gets the
/// same id as the entry naming it uncompressed).
pub fn key_id(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical_or_raw(spki_der)).into()
}

/// Whether two SubjectPublicKeyInfo DERs name the same P-256 key (either
/// encoding); false when either is not a P-256 key.
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    match (
        crate::ecdsa::canonical_p256_spki(a),
        crate::ecdsa::canonical_p256_spki(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
