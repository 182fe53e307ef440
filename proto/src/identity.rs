//! How a device's root of trust and its keys are named.
//!
//! `rot_id` = lowercase hex of SHA-256 over the DER SubjectPublicKeyInfo of the
//! RoT attestation key (DESIGN.md, "Identity"). It is the device's key in the
//! custody ledger (2.4.14.12).
//!
//! The SubjectPublicKeyInfo hashed is the key's canonical form
//! ([`crate::ecdsa::canonical_p256_spki`]: uncompressed point, standard
//! AlgorithmIdentifier), not the bytes presented: one P-256 key written
//! compressed and uncompressed is one RoT and one device key, never two
//! (2.4.14.11, issue 12 "canonical keys"). Every key Trustline itself
//! encodes is already canonical, so existing `rot_id`s are unchanged.

use sha2::{Digest, Sha256};

use crate::ecdsa::canonical_p256_spki;
use crate::Error;

/// Length in characters of a well-formed `rot_id`.
pub const ROT_ID_LEN: usize = 64;

/// The `rot_id` of the RoT whose attestation key has this SubjectPublicKeyInfo,
/// refusing a key that is not P-256.
///
/// # Errors
/// [`Error::NotP256`] for any other key or a malformed encoding.
pub fn try_rot_id(attestation_spki_der: &[u8]) -> Result<String, Error> {
    canonical_p256_spki(attestation_spki_der).map(|spki| hex::encode(Sha256::digest(spki)))
}

/// The `rot_id` of the RoT whose attestation key has this
/// SubjectPublicKeyInfo: [`try_rot_id`] for a P-256 key; for bytes that are
/// no P-256 key, the hash of the bytes themselves, so that a refusal can
/// still be recorded against what was presented. Such a name never reaches
/// a certificate: the claim path refuses the key first (invariant 7).
pub fn rot_id(attestation_spki_der: &[u8]) -> String {
    try_rot_id(attestation_spki_der)
        .unwrap_or_else(|_| hex::encode(Sha256::digest(attestation_spki_der)))
}

/// SHA-256 of a P-256 key's canonical SubjectPublicKeyInfo: the value a
/// uniqueness key on a device key must carry (invariant 2).
///
/// # Errors
/// [`Error::NotP256`] for any other key or a malformed encoding.
pub fn canonical_key_hash(spki_der: &[u8]) -> Result<[u8; 32], Error> {
    canonical_p256_spki(spki_der).map(|spki| Sha256::digest(spki).into())
}

/// Whether `s` has the shape of a `rot_id` (64 lowercase hex characters).
pub fn is_well_formed_rot_id(s: &str) -> bool {
    s.len() == ROT_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{Signer, SoftwareSigner};

    /// The same key with a compressed point (RFC 5480 allows both).
    fn compressed(signer: &SoftwareSigner) -> Vec<u8> {
        let mut spki =
            hex::decode("3039301306072a8648ce3d020106082a8648ce3d030107032200").expect("hex");
        spki.extend_from_slice(
            signer
                .key()
                .verifying_key()
                .to_encoded_point(true)
                .as_bytes(),
        );
        spki
    }

    #[test]
    fn rot_id_is_hex_sha256_of_the_canonical_spki() {
        let key = SoftwareSigner::generate();
        let id = rot_id(key.public_key_der());
        assert!(is_well_formed_rot_id(&id));
        assert_eq!(id, hex::encode(Sha256::digest(key.public_key_der())));
        assert_eq!(try_rot_id(key.public_key_der()).expect("p256"), id);
        assert_ne!(rot_id(SoftwareSigner::generate().public_key_der()), id);
        assert!(!is_well_formed_rot_id("ABC"));
        assert!(!is_well_formed_rot_id(&id.to_uppercase()));
    }

    #[test]
    fn compressed_and_uncompressed_forms_give_one_rot_id_and_one_key_hash() {
        let key = SoftwareSigner::generate();
        let short = compressed(&key);
        assert_ne!(short.as_slice(), key.public_key_der());
        assert_eq!(rot_id(&short), rot_id(key.public_key_der()));
        assert_eq!(
            try_rot_id(&short).expect("compressed"),
            try_rot_id(key.public_key_der()).expect("uncompressed")
        );
        assert_eq!(
            canonical_key_hash(&short).expect("compressed"),
            canonical_key_hash(key.public_key_der()).expect("uncompressed")
        );
    }

    #[test]
    fn a_key_that_is_not_p256_is_refused_and_named_by_its_bytes() {
        for bad in [&b"spki"[..], &[0x30, 0x00], &[]] {
            assert!(matches!(try_rot_id(bad), Err(Error::NotP256(_))));
            assert!(matches!(canonical_key_hash(bad), Err(Error::NotP256(_))));
        }
        assert_eq!(
            rot_id(b"spki"),
            "6feecc8c16c5551d9feb3eb5f77e2da773bf68bd9ef9c52927ceb2c86e56892b"
        );
        assert_ne!(rot_id(b"spki"), rot_id(b"spkj"));
    }
}
