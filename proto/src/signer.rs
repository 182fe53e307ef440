//! Signing keys behind one interface.
//!
//! Every key that signs something in Trustline — the CA keys, the OEM order
//! and voucher keys, the ledger checkpoint key in the HSM; a simulated RoT's
//! keys; an owner's voucher key in a file — is a [`Signer`]: callers see the
//! public key and signatures, never private key bytes. The hub's witness
//! key (C2SP `cosignature/v1`, issue 13) is an [`Ed25519Signer`].
//!
//! Every [`Signer`] emits low-S signatures (`s ≤ n/2`), the only form
//! [`crate::ecdsa::verify_strict`] accepts (issue 12, "ECDSA
//! malleability").

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use ring::signature::KeyPair as _;
use sha2::{Digest, Sha256};

use crate::Error;

/// An ECDSA P-256 / SHA-256 signing key.
pub trait Signer: Send + Sync {
    /// SubjectPublicKeyInfo DER of the key.
    fn public_key_der(&self) -> &[u8];

    /// Signs a SHA-256 digest; returns a DER-encoded ECDSA signature in
    /// low-S form ([`crate::ecdsa::normalize_s`]).
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
        // p256 does not normalise: half its signatures are high-S.
        Ok(crate::ecdsa::normalize_s(sig).to_der().as_bytes().to_vec())
    }
}

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4:
/// `id-Ed25519` 1.3.101.112, no parameters, a 33-byte BIT STRING).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 signing key (pure Ed25519, RFC 8032): the hub's witness key
/// for C2SP `cosignature/v1` signatures (issue 13). HSM-backed in
/// production (`ca_service::hsm::HsmEd25519Signer`), [`SoftwareEd25519Signer`]
/// in tests.
pub trait Ed25519Signer: Send + Sync {
    /// The 32-byte public key.
    fn public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN];

    /// Signs `message`.
    ///
    /// # Errors
    /// [`Error::Signer`] when the key cannot sign (HSM unavailable, key
    /// missing).
    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], Error>;
}

/// The SubjectPublicKeyInfo DER of an Ed25519 public key (RFC 8410), e.g.
/// for `openssl pkeyutl -verify -rawin` or a key file.
pub fn ed25519_spki(public_key: &[u8; ED25519_PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut spki = Vec::with_capacity(ED25519_SPKI_PREFIX.len() + ED25519_PUBLIC_KEY_LEN);
    spki.extend_from_slice(&ED25519_SPKI_PREFIX);
    spki.extend_from_slice(public_key);
    spki
}

/// Verifies an Ed25519 signature (ring refuses non-canonical `S`).
///
/// # Errors
/// [`Error::BadSignature`] (`"Ed25519 signature"`).
pub fn verify_ed25519(
    public_key: &[u8; ED25519_PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message, signature)
        .map_err(|_| Error::BadSignature("Ed25519 signature"))
}

/// An Ed25519 key held in process memory (tests, simulations). Never the
/// production witness key: that lives in the hub's HSM.
pub struct SoftwareEd25519Signer {
    key: ring::signature::Ed25519KeyPair,
}

impl std::fmt::Debug for SoftwareEd25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareEd25519Signer")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl SoftwareEd25519Signer {
    /// A fresh random key.
    ///
    /// # Errors
    /// [`Error::KeyFormat`] when the system random source fails.
    pub fn generate() -> Result<Self, Error> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::KeyFormat("cannot generate an Ed25519 key".to_owned()))?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// Loads a PKCS#8 (v1 or v2) Ed25519 private key, DER.
    ///
    /// # Errors
    /// [`Error::KeyFormat`] when the bytes are not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| Error::KeyFormat(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        Ok(Self { key })
    }

    /// The key with this 32-byte seed (RFC 8032 private key), for test
    /// vectors.
    ///
    /// # Errors
    /// [`Error::KeyFormat`] for a seed ring refuses.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, Error> {
        let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| Error::KeyFormat(format!("not an Ed25519 seed: {e}")))?;
        Ok(Self { key })
    }
}

impl Ed25519Signer for SoftwareEd25519Signer {
    fn public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        let mut out = [0u8; ED25519_PUBLIC_KEY_LEN];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], Error> {
        let mut out = [0u8; ED25519_SIGNATURE_LEN];
        out.copy_from_slice(self.key.sign(message).as_ref());
        Ok(out)
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

    #[test]
    fn every_software_signature_is_low_s() {
        // p256 alone gives high-S about half the time: 64 signatures would
        // all be low-S by chance with probability 2^-64.
        let signer = SoftwareSigner::generate();
        for i in 0u32..64 {
            let sig = signer.sign(&i.to_be_bytes()).expect("sign");
            let parsed = p256::ecdsa::Signature::from_der(&sig).expect("der");
            assert!(crate::ecdsa::is_low_s(&parsed), "signature {i} is high-S");
            verify_signature(signer.public_key_der(), &i.to_be_bytes(), &sig).expect("verifies");
        }
    }

    #[test]
    fn ed25519_matches_rfc8032_test_1_and_refuses_changes() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .expect("hex")
                .try_into()
                .expect("32 bytes");
        let signer = SoftwareEd25519Signer::from_seed(&seed).expect("seed");
        assert_eq!(
            hex::encode(signer.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = signer.sign(b"").expect("sign");
        assert_eq!(
            hex::encode(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        verify_ed25519(&signer.public_key(), b"", &sig).expect("verifies");
        assert!(verify_ed25519(&signer.public_key(), b"x", &sig).is_err());
        let mut bad = sig;
        bad[63] ^= 0x10;
        assert!(verify_ed25519(&signer.public_key(), b"", &bad).is_err());
        let spki = ed25519_spki(&signer.public_key());
        assert_eq!(spki.len(), 44);
        assert_eq!(&spki[12..], signer.public_key().as_slice());

        let fresh = SoftwareEd25519Signer::generate().expect("generate");
        let sig = fresh.sign(b"checkpoint").expect("sign");
        verify_ed25519(&fresh.public_key(), b"checkpoint", &sig).expect("verifies");
        assert!(SoftwareEd25519Signer::from_pkcs8_der(b"not a key").is_err());
    }
}
