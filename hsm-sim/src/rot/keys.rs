//! Software P-256 keys as rcgen signers, so simulated vendor CAs and device
//! identity keys sign certificates and CSRs without exporting key bytes.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use rand::rngs::StdRng;
use rcgen::{PublicKeyData, SignatureAlgorithm};

/// A borrowed P-256 key that rcgen can sign with (ECDSA with SHA-256, DER
/// signature).
pub(crate) struct RcgenKey<'a> {
    key: &'a SigningKey,
    point: Vec<u8>,
}

impl<'a> RcgenKey<'a> {
    pub(crate) fn new(key: &'a SigningKey) -> Self {
        let point = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        Self { key, point }
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // RFC 6979 deterministic signatures: a seeded fleet is reproducible.
        let sig: Signature = self.key.sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

/// A fresh P-256 key from the simulator's (possibly seeded) generator.
pub(crate) fn new_key(rng: &mut StdRng) -> SigningKey {
    SigningKey::random(rng)
}
