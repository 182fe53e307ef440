//! Signing keys behind one interface.
//!
//! Every key that signs something in Trustline — the CA keys, the OEM order
//! and voucher keys, the ledger checkpoint key in the HSM; a simulated RoT's
//! keys; an owner's voucher key in a file — is a [`Signer`]: callers see the
//! public key and signatures, never private key bytes.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use crate::Error;

/// An ECDSA P-256 / SHA-256 signing key.
pub trait Signer: Send + Sync {
    /// SubjectPublicKeyInfo DER of the key.
    fn public_key_der(&self) -> &[u8];

    /// Signs a SHA-256 digest; returns a DER-encoded ECDSA signature.
    ///
    /// # Errors
    /// [`Error::Signer`] when the key cannot sign (HSM unavailable, session
    /// lost, key missing).
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error>;

    /// Signs SHA-256(`message`); returns a DER-encoded ECDSA signature.
    ///
    /// # Errors
    /// As [`Signer::sign_digest`].
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.sign_digest(&Sha256::digest(message).into())
    }
}

/// A P-256 key held in process memory: for simulated devices, tests, and
/// owner voucher keys kept in files. Never used for CA, order, voucher or
/// checkpoint keys in production (those live in the HSM).
pub struct SoftwareSigner {
    key: p256::ecdsa::SigningKey,
    public_der: Vec<u8>,
}

impl SoftwareSigner {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_key(p256::ecdsa::SigningKey::random(&mut rand_core_os()))
    }

    /// Wraps an existing key.
    pub fn from_key(key: p256::ecdsa::SigningKey) -> Self {
        let public_der = key
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            // Encoding a valid P-256 point as SPKI cannot fail.
            .unwrap_or_default();
        Self { key, public_der }
    }

    /// Loads a PKCS#8 private key (DER).
    ///
    /// # Errors
    /// [`Error::KeyFormat`] when the bytes are not a P-256 PKCS#8 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(der)
            .map_err(|e| Error::KeyFormat(format!("not a P-256 PKCS#8 private key: {e}")))?;
        Ok(Self::from_key(key))
    }

    /// Loads a PKCS#8 private key (PEM).
    ///
    /// # Errors
    /// [`Error::KeyFormat`] when the text is not a P-256 PKCS#8 PEM key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| Error::KeyFormat(format!("not a P-256 PKCS#8 PEM private key: {e}")))?;
        Ok(Self::from_key(key))
    }

    /// The underlying key, for simulators that also need ECDH or export.
    pub fn key(&self) -> &p256::ecdsa::SigningKey {
        &self.key
    }
}

impl Signer for SoftwareSigner {
    fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let sig: p256::ecdsa::Signature = self
            .key
            .sign_prehash(digest)
            .map_err(|e| Error::Signer(format!("software signature failed: {e}")))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

fn rand_core_os() -> p256::elliptic_curve::rand_core::OsRng {
    p256::elliptic_curve::rand_core::OsRng
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::verify_signature;

    #[test]
    fn software_signature_verifies_and_binds_the_message() {
        let signer = SoftwareSigner::generate();
        let sig = signer.sign(b"hello").expect("sign");
        verify_signature(signer.public_key_der(), b"hello", &sig).expect("verifies");
        assert!(verify_signature(signer.public_key_der(), b"hellO", &sig).is_err());
    }
}
