//! Voucher entries: the payload naming the next owner, bound to the header
//! and the previous entry (FDO's `OVEntryPayload`), how entry 0 is built and
//! signed for the OEM voucher key, and the check of one entry in a chain.

use coset::CoseSign1;
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::cbor::*;
use super::cose::*;
use super::*;
use crate::ecdsa::canonical_p256_spki;
use crate::signer::Signer;
use crate::Error;

/// The payload of one voucher entry: who the next owner is, bound to the
/// header and the previous entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPayload {
    /// SHA-256 of the previous entry's COSE bytes, or the header hash for
    /// entry 0.
    pub prev_hash: [u8; 32],
    /// SHA-256 of the encoded header.
    pub header_hash: [u8; 32],
    /// Fresh random salt for this transfer's [`owner_commitment`].
    pub commitment_salt: [u8; SALT_LEN],
    /// SubjectPublicKeyInfo DER of the next owner's P-256 key, in canonical
    /// form (uncompressed point; [`EntryPayload::decode`] refuses another).
    pub next_owner_public_key: Vec<u8>,
}

impl EntryPayload {
    /// The canonical CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.next_owner_public_key.len());
        put_head(&mut out, MAJOR_ARRAY, 4);
        put_bytes(&mut out, &self.prev_hash);
        put_bytes(&mut out, &self.header_hash);
        put_bytes(&mut out, &self.commitment_salt);
        put_bytes(&mut out, &self.next_owner_public_key);
        out
    }

    /// Strictly decodes an entry payload.
    ///
    /// # Errors
    /// [`Error::VoucherTooLarge`], [`Error::VoucherMalformed`] or
    /// [`Error::NotP256`] (the next owner key).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(Error::VoucherTooLarge {
                len: bytes.len(),
                max: MAX_ENTRY_LEN,
            });
        }
        let mut items = array(parse_cbor(bytes, "entry payload")?, 4, "entry payload")?.into_iter();
        let payload = Self {
            prev_hash: fixed(next(&mut items), "entry prev_hash")?,
            header_hash: fixed(next(&mut items), "entry header_hash")?,
            commitment_salt: fixed(next(&mut items), "entry commitment_salt")?,
            next_owner_public_key: bytes_of(next(&mut items), "entry next owner key")?,
        };
        if canonical_p256_spki(&payload.next_owner_public_key)? != payload.next_owner_public_key {
            return Err(malformed(
                "entry next owner key is not in canonical form (uncompressed point)",
            ));
        }
        if payload.encode() != bytes {
            return Err(malformed("entry payload is not in canonical form"));
        }
        Ok(payload)
    }

    /// This transfer's [`owner_commitment`].
    pub fn owner_commitment(&self) -> [u8; 32] {
        owner_commitment(&self.commitment_salt, &self.next_owner_public_key)
    }
}

/// Builds the payload of a voucher's entry 0 (manufacturer → first owner)
/// with a fresh salt, ready for [`sign_entry`] by the OEM voucher key. The
/// owner key may be given compressed or uncompressed; the payload names
/// its canonical form.
///
/// # Errors
/// [`Error::NotP256`] when `next_owner_spki` is not a P-256 key.
pub fn first_entry_payload(
    header: &VoucherHeader,
    next_owner_spki: &[u8],
) -> Result<Vec<u8>, Error> {
    let header_hash = header.hash();
    new_payload(header_hash, header_hash, next_owner_spki)
}

pub(super) fn new_payload(
    prev_hash: [u8; 32],
    header_hash: [u8; 32],
    next_owner_spki: &[u8],
) -> Result<Vec<u8>, Error> {
    let next_owner_public_key = canonical_p256_spki(next_owner_spki)?;
    let mut commitment_salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut commitment_salt);
    Ok(EntryPayload {
        prev_hash,
        header_hash,
        commitment_salt,
        next_owner_public_key,
    }
    .encode())
}

/// Signs an encoded entry payload as a voucher entry; returns the tagged
/// COSE_Sign1 bytes. The HSM-backed CA calls this with the OEM voucher key.
///
/// # Errors
/// [`Error::VoucherMalformed`] (or [`Error::VoucherTooLarge`],
/// [`Error::NotP256`]) when the bytes do not decode as an entry payload;
/// [`Error::Signer`] when the signer fails or returns a malformed signature.
pub fn sign_entry(entry_payload_cbor: &[u8], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    EntryPayload::decode(entry_payload_cbor)?;
    cose_sign(ENTRY_CONTENT_TYPE, entry_payload_cbor.to_vec(), signer)
}

/// One parsed, not yet verified, entry.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) bytes: Vec<u8>,
    pub(super) kid: [u8; 32],
    pub(super) cose: CoseSign1,
    pub(super) payload: EntryPayload,
}

impl Entry {
    pub(super) fn parse(bytes: &[u8], index: usize) -> Result<Self, Error> {
        let (cose, kid) = parse_cose(bytes, ENTRY_CONTENT_TYPE, index)?;
        let payload = EntryPayload::decode(cose.payload.as_deref().unwrap_or_default())?;
        Ok(Self {
            bytes: bytes.to_vec(),
            kid,
            cose,
            payload,
        })
    }

    pub(super) fn hash(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }
}

pub(super) fn check_entry(
    entry: &Entry,
    index: usize,
    prev_hash: &[u8; 32],
    header_hash: &[u8; 32],
    signer_spki: &[u8],
) -> Result<(), Error> {
    if entry.payload.header_hash != *header_hash {
        return Err(Error::VoucherHeaderMismatch { entry: index });
    }
    if entry.payload.prev_hash != *prev_hash {
        return Err(Error::VoucherBrokenChain { entry: index });
    }
    if entry.kid != key_id(signer_spki) {
        return Err(Error::VoucherWrongSigner { entry: index });
    }
    if !cose_signature_ok(&entry.cose, signer_spki) {
        return Err(Error::VoucherBadSignature { entry: index });
    }
    Ok(())
}
