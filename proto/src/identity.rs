//! How a device's root of trust is named.
//!
//! `rot_id` = lowercase hex of SHA-256 over the DER SubjectPublicKeyInfo of the
//! RoT attestation key (DESIGN.md, "Identity"). It is the device's key in the
//! custody ledger (2.4.14.12).

use sha2::{Digest, Sha256};

/// Length in characters of a well-formed `rot_id`.
pub const ROT_ID_LEN: usize = 64;

/// The `rot_id` of the RoT whose attestation key has this SubjectPublicKeyInfo.
pub fn rot_id(attestation_spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(attestation_spki_der))
}

/// Whether `s` has the shape of a `rot_id` (64 lowercase hex characters).
pub fn is_well_formed_rot_id(s: &str) -> bool {
    s.len() == ROT_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rot_id_is_hex_sha256_of_spki() {
        let id = rot_id(b"spki");
        assert!(is_well_formed_rot_id(&id));
        assert_eq!(
            id,
            "6feecc8c16c5551d9feb3eb5f77e2da773bf68bd9ef9c52927ceb2c86e56892b"
        );
        assert_ne!(rot_id(b"spki"), rot_id(b"spkj"));
        assert!(!is_well_formed_rot_id("ABC"));
        assert!(!is_well_formed_rot_id(&id.to_uppercase()));
    }
}
