//! The sealed copy of a voucher entry the OEM signed (issue 12 item 10):
//! what `CertificateAuthority/SignVoucherEntry` returns beside the entry and
//! `Ownership` records in `OwnershipPayload.sealed_entry`, so entry 0 is
//! never lost — and never in clear in the ledger (invariant 6; 2.4.16.3).
//!
//! ```text
//! sealed = version (0x01) ‖ iv (12 bytes, random) ‖ AES-256-GCM(entry) ‖ tag (16 bytes)
//! aad    = "trustline.voucher-entry-seal\0" ‖ rot_id (64 ASCII hex) ‖ entry index (u32 BE)
//! ```
//!
//! The key is the OEM's HSM secret key `trustline-oem-seal` (AES-256,
//! sensitive, never extractable, encrypt/decrypt only); the CA seals and
//! opens inside the HSM (`CKM_AES_GCM`). The additional data binds the
//! ciphertext to one device and one entry index: a seal copied into
//! another device's record, or to another index, does not open. Whoever
//! opens one still checks the entry against the recorded entry hash.

use crate::identity::is_well_formed_rot_id;
use crate::Error;

/// The format version, the first byte of a sealed entry.
pub const SEAL_VERSION: u8 = 1;
/// Length of the AES-GCM initialisation vector.
pub const SEAL_IV_LEN: usize = 12;
/// Length of the AES-GCM tag, appended to the ciphertext.
pub const SEAL_TAG_LEN: usize = 16;
/// Domain separator at the start of the additional data.
pub const SEAL_AAD_DOMAIN: &[u8] = b"trustline.voucher-entry-seal\0";
/// Largest sealed entry accepted: a largest entry plus the framing.
pub const MAX_SEALED_LEN: usize = 1 + SEAL_IV_LEN + super::MAX_ENTRY_LEN + SEAL_TAG_LEN;

/// The additional authenticated data of the seal of entry `index` of
/// `rot_id`'s voucher.
///
/// # Errors
/// [`Error::VoucherMalformed`] for a malformed `rot_id`.
pub fn seal_aad(rot_id: &str, index: u32) -> Result<Vec<u8>, Error> {
    if !is_well_formed_rot_id(rot_id) {
        return Err(Error::VoucherMalformed(
            "a sealed entry names a rot_id that is not 64 lowercase hex characters".into(),
        ));
    }
    let mut aad = Vec::with_capacity(SEAL_AAD_DOMAIN.len() + rot_id.len() + 4);
    aad.extend_from_slice(SEAL_AAD_DOMAIN);
    aad.extend_from_slice(rot_id.as_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    Ok(aad)
}

/// Frames a sealed entry: version, `iv`, then the ciphertext with its tag.
pub fn frame_sealed(iv: &[u8; SEAL_IV_LEN], ciphertext_and_tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + SEAL_IV_LEN + ciphertext_and_tag.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(iv);
    out.extend_from_slice(ciphertext_and_tag);
    out
}

/// Splits a sealed entry into its IV and its ciphertext with tag (nothing
/// is authenticated yet).
///
/// # Errors
/// [`Error::VoucherTooLarge`] beyond [`MAX_SEALED_LEN`];
/// [`Error::VoucherMalformed`] for another version or a seal too short to
/// hold an IV, a tag and one byte.
pub fn split_sealed(sealed: &[u8]) -> Result<([u8; SEAL_IV_LEN], &[u8]), Error> {
    if sealed.len() > MAX_SEALED_LEN {
        return Err(Error::VoucherTooLarge {
            len: sealed.len(),
            max: MAX_SEALED_LEN,
        });
    }
    let Some((&version, rest)) = sealed.split_first() else {
        return Err(Error::VoucherMalformed("the sealed entry is empty".into()));
    };
    if version != SEAL_VERSION {
        return Err(Error::VoucherMalformed(format!(
            "sealed entry version {version}, expected {SEAL_VERSION}"
        )));
    }
    if rest.len() <= SEAL_IV_LEN + SEAL_TAG_LEN {
        return Err(Error::VoucherMalformed(
            "the sealed entry is too short".into(),
        ));
    }
    let (iv, body) = rest.split_at(SEAL_IV_LEN);
    let mut out = [0u8; SEAL_IV_LEN];
    out.copy_from_slice(iv);
    Ok((out, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aad_binds_device_and_index_and_framing_round_trips() {
        let rot = "ab".repeat(32);
        let a = seal_aad(&rot, 0).expect("aad");
        assert!(a.starts_with(SEAL_AAD_DOMAIN));
        assert_ne!(a, seal_aad(&rot, 1).expect("aad"));
        assert_ne!(a, seal_aad(&"cd".repeat(32), 0).expect("aad"));
        assert!(seal_aad("AB", 0).is_err());

        let iv = [7u8; SEAL_IV_LEN];
        let body = vec![9u8; 40];
        let sealed = frame_sealed(&iv, &body);
        let (iv2, body2) = split_sealed(&sealed).expect("split");
        assert_eq!((iv2, body2), (iv, body.as_slice()));
        let mut other = sealed.clone();
        other[0] = 2;
        assert!(split_sealed(&other).is_err(), "unknown version");
        assert!(split_sealed(&sealed[..1 + SEAL_IV_LEN + SEAL_TAG_LEN]).is_err());
        assert!(split_sealed(&[]).is_err());
        assert!(split_sealed(&vec![SEAL_VERSION; MAX_SEALED_LEN + 1]).is_err());
    }
}
