//! The voucher header: what a voucher says about the device and its maker
//! (FDO's `OVHeader`), its canonical encoding and strict decoding.

use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::cbor::*;
use super::*;
use crate::ecdsa::canonical_p256_spki;
use crate::identity::is_well_formed_rot_id;
use crate::Error;

/// What a voucher says about the device and its maker. Signed indirectly:
/// every entry carries the hash of its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoucherHeader {
    /// Random identifier of this voucher (FDO's GUID).
    pub guid: [u8; GUID_LEN],
    /// The device's `rot_id`.
    pub rot_id: String,
    /// The product serial on the device certificate.
    pub serial: String,
    /// [`cert_chain_hash`] of the device certificate chain.
    pub cert_chain_sha256: [u8; 32],
    /// SubjectPublicKeyInfo DER of the manufacturer (OEM voucher) key, in
    /// canonical form.
    pub manufacturer_public_key: Vec<u8>,
}

impl VoucherHeader {
    /// A header with a fresh random guid; the manufacturer key is kept in
    /// canonical form.
    ///
    /// # Errors
    /// [`Error::VoucherMalformed`] for a malformed `rot_id` or serial,
    /// [`Error::NotP256`] when the manufacturer key is not P-256.
    pub fn new(
        rot_id: &str,
        serial: &str,
        cert_chain_sha256: [u8; 32],
        manufacturer_public_key: &[u8],
    ) -> Result<Self, Error> {
        let mut guid = [0u8; GUID_LEN];
        OsRng.fill_bytes(&mut guid);
        let header = Self {
            guid,
            rot_id: rot_id.to_owned(),
            serial: serial.to_owned(),
            cert_chain_sha256,
            manufacturer_public_key: canonical_p256_spki(manufacturer_public_key)?,
        };
        header.check()?;
        Ok(header)
    }

    fn check(&self) -> Result<(), Error> {
        if !is_well_formed_rot_id(&self.rot_id) {
            return Err(malformed(
                "header rot_id is not 64 lowercase hex characters",
            ));
        }
        check_serial(&self.serial)?;
        if canonical_p256_spki(&self.manufacturer_public_key)? != self.manufacturer_public_key {
            return Err(malformed(
                "header manufacturer key is not in canonical form (uncompressed point)",
            ));
        }
        Ok(())
    }

    /// The canonical CBOR encoding (the bytes every entry hashes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.manufacturer_public_key.len());
        put_head(&mut out, MAJOR_ARRAY, 6);
        put_uint(&mut out, VERSION);
        put_bytes(&mut out, &self.guid);
        put_text(&mut out, &self.rot_id);
        put_text(&mut out, &self.serial);
        put_bytes(&mut out, &self.cert_chain_sha256);
        put_bytes(&mut out, &self.manufacturer_public_key);
        out
    }

    /// SHA-256 of [`VoucherHeader::encode`].
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Strictly decodes a header.
    ///
    /// # Errors
    /// [`Error::VoucherTooLarge`], [`Error::VoucherVersion`],
    /// [`Error::VoucherMalformed`] or [`Error::NotP256`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(Error::VoucherTooLarge {
                len: bytes.len(),
                max: MAX_HEADER_LEN,
            });
        }
        let mut items = array(parse_cbor(bytes, "header")?, 6, "header")?.into_iter();
        let version = uint(next(&mut items), "header version")?;
        if version != VERSION {
            return Err(Error::VoucherVersion(version));
        }
        let header = Self {
            guid: fixed(next(&mut items), "header guid")?,
            rot_id: text(next(&mut items), "header rot_id")?,
            serial: text(next(&mut items), "header serial")?,
            cert_chain_sha256: fixed(next(&mut items), "header cert_chain_sha256")?,
            manufacturer_public_key: bytes_of(next(&mut items), "header manufacturer key")?,
        };
        header.check()?;
        if header.encode() != bytes {
            return Err(malformed("header is not in canonical form"));
        }
        Ok(header)
    }
}

pub(super) fn check_serial(serial: &str) -> Result<(), Error> {
    if serial.is_empty()
        || serial.len() > MAX_SERIAL_LEN
        || !serial.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed(format!(
            "serial must be 1 to {MAX_SERIAL_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}
