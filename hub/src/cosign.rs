//! C2SP tlog-cosignature `cosignature/v1` with Ed25519: the witness key
//! behind a signer trait, the signed message, the signature line and its
//! verification.
//!
//! ```text
//! signed message = "cosignature/v1\n" ‖ "time <t>\n" ‖ <checkpoint body>
//! key ID         = SHA-256(<name> ‖ "\n" ‖ 0x04 ‖ <32-byte public key>)[:4]
//! line           = "— <name> " ‖ base64(key ID ‖ u64 BE t ‖ 64-byte signature) ‖ "\n"
//! verifier key   = <name> "+" <key ID, 8 hex> "+" base64(0x04 ‖ public key)
//! ```
//!
//! The checkpoint body is the note text up to and including the newline
//! before the blank line (origin, size, root and any extension lines), never
//! a signature line. `t` is POSIX seconds, decimal without leading zeros.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use trustline_proto::cosignature::{self, WitnessKey, BLOB_LEN, EM_DASH};

use crate::error::{Error, Result};

pub use trustline_proto::cosignature::{key_id, signed_message, SIGNATURE_TYPE_COSIGNATURE_V1};

/// An Ed25519 signing key: the witness key. In production it is an HSM key
/// (`CKM_EDDSA`); [`SoftwareWitnessSigner`] serves tests and benchmarks.
/// Callers see the public key and signatures, never private key bytes.
pub trait WitnessSigner: Send + Sync {
    /// The 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];

    /// Signs `message` (pure Ed25519, RFC 8032).
    ///
    /// # Errors
    /// [`Error::Signer`] when the key cannot sign (HSM unavailable).
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]>;
}

/// An Ed25519 key in process memory, over `ring`. Never the production
/// witness key (that lives in the hub's HSM).
pub struct SoftwareWitnessSigner {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for SoftwareWitnessSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareWitnessSigner")
            .field("public_key", &hex::encode(self.public_key()))
            .finish()
    }
}

impl SoftwareWitnessSigner {
    /// A fresh random key.
    ///
    /// # Errors
    /// [`Error::Signer`] when the system random source fails.
    pub fn generate() -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Signer("cannot generate an Ed25519 key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads a PKCS#8 (v1 or v2) Ed25519 private key.
    ///
    /// # Errors
    /// [`Error::Signer`] when the bytes are not such a key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| Error::Signer(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(Self { key })
    }
}

impl WitnessSigner for SoftwareWitnessSigner {
    fn public_key(&self) -> [u8; 32] {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.key.public_key().as_ref());
        pk
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        let sig = self.key.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        Ok(out)
    }
}

/// Splits a signed note into its body (through the newline before the blank
/// line) and its signature lines.
///
/// # Errors
/// [`Error::InvalidArgument`] when the note has no blank line or does not
/// end in a newline.
pub fn split_note(note: &str) -> Result<(&str, &str)> {
    cosignature::split_note(note).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// The witness: its key name and its signer.
pub struct Cosigner {
    name: String,
    signer: Box<dyn WitnessSigner>,
    public_key: [u8; 32],
    key_id: [u8; 4],
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner")
            .field("verifier_key", &self.verifier_key())
            .finish()
    }
}

impl Cosigner {
    /// A witness named `name` (a schema-less URL, e.g.
    /// `oem.example/hub-witness`) signing with `signer`.
    ///
    /// # Errors
    /// [`Error::Config`] when the name is empty or holds spaces, `+` or
    /// control characters.
    pub fn new(name: &str, signer: Box<dyn WitnessSigner>) -> Result<Self> {
        custody_ledger::checkpoint::validate_origin(name)
            .map_err(|e| Error::Config(format!("witness name: {e}")))?;
        let public_key = signer.public_key();
        Ok(Self {
            name: name.to_string(),
            key_id: key_id(name, &public_key),
            public_key,
            signer,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The signed-note verifier key `<name>+<key ID hex>+base64(0x04 ‖ key)`.
    pub fn verifier_key(&self) -> String {
        let mut k = vec![SIGNATURE_TYPE_COSIGNATURE_V1];
        k.extend_from_slice(&self.public_key);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(k)
        )
    }

    /// The witness's public identity, as sites configure it to check its
    /// cosignatures.
    pub fn witness_key(&self) -> WitnessKey {
        // The name was validated as an origin in `new`, which is stricter
        // than a witness key name.
        WitnessKey::new(&self.name, self.public_key)
            .unwrap_or_else(|_| unreachable!("a cosigner's name is a valid witness name"))
    }

    /// The cosignature line for checkpoint `body` at `timestamp`.
    ///
    /// # Errors
    /// [`Error::Signer`]; [`Error::InvalidArgument`] for a timestamp beyond
    /// 2^63 - 1.
    pub fn cosign(&self, body: &str, timestamp: u64) -> Result<String> {
        if timestamp > i64::MAX as u64 {
            return Err(Error::InvalidArgument(
                "cosignature timestamp beyond 2^63 - 1".into(),
            ));
        }
        let sig = self.signer.sign(&signed_message(body, timestamp))?;
        let mut blob = Vec::with_capacity(BLOB_LEN);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&sig);
        Ok(format!("{EM_DASH} {} {}\n", self.name, B64.encode(blob)))
    }
}

/// Finds and verifies the `cosignature/v1` line of witness `name` with
/// `public_key` in `note`; returns its timestamp (see
/// [`trustline_proto::cosignature::WitnessKey::verify`], the check sites
/// run too).
///
/// # Errors
/// [`Error::BadSignature`] when the note is malformed or holds no valid
/// cosignature by this key.
pub fn verify_cosignature(note: &str, name: &str, public_key: &[u8; 32]) -> Result<u64> {
    WitnessKey::new(name, *public_key)
        .and_then(|w| w.verify(note))
        .map_err(|e| Error::BadSignature(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    const BODY: &str = "example.com/log\n42\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    #[test]
    fn a_cosignature_verifies_and_binds_body_time_and_key() {
        let w = Cosigner::new(
            "witness.example/w1",
            Box::new(SoftwareWitnessSigner::generate().unwrap()),
        )
        .unwrap();
        let line = w.cosign(BODY, 1_679_315_147).unwrap();
        let note = format!("{BODY}\n{line}");
        assert_eq!(
            verify_cosignature(&note, w.name(), &w.public_key()).unwrap(),
            1_679_315_147
        );
        // Another body, another key, another name: refused.
        let other = note.replace("\n42\n", "\n43\n");
        assert!(verify_cosignature(&other, w.name(), &w.public_key()).is_err());
        assert!(verify_cosignature(&note, w.name(), &[7; 32]).is_err());
        assert!(verify_cosignature(&note, "witness.example/w2", &w.public_key()).is_err());
        // The blob is key ID ‖ u64 BE timestamp ‖ signature.
        let blob = B64
            .decode(line.trim_end().rsplit(' ').next().unwrap())
            .unwrap();
        assert_eq!(blob.len(), 76);
        assert_eq!(blob[..4], key_id(w.name(), &w.public_key()));
        assert_eq!(blob[4..12], 1_679_315_147u64.to_be_bytes());
        let vk = w.verifier_key();
        let parts: Vec<&str> = vk.splitn(3, '+').collect();
        assert_eq!(parts[0], "witness.example/w1");
        assert_eq!(parts[1], hex::encode(&blob[..4]));
        assert_eq!(B64.decode(parts[2]).unwrap()[0], 0x04);
    }

    #[test]
    fn the_signed_message_is_the_c2sp_one() {
        assert_eq!(
            signed_message(BODY, 7),
            format!("cosignature/v1\ntime 7\n{BODY}").into_bytes()
        );
    }
}
