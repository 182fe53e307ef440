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
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The signed-note signature type of Ed25519 cosignatures.
pub const SIGNATURE_TYPE_COSIGNATURE_V1: u8 = 0x04;
/// The em dash that starts a note signature line.
const EM_DASH: char = '\u{2014}';
/// Bytes in a cosignature blob: key ID, timestamp, signature.
const BLOB_LEN: usize = 4 + 8 + 64;

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

/// The key ID of an Ed25519 cosigner `name` with public key `public_key`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([SIGNATURE_TYPE_COSIGNATURE_V1]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The message a `cosignature/v1` signs for `body` at `timestamp`.
pub fn signed_message(body: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{body}").into_bytes()
}

/// Splits a signed note into its body (through the newline before the blank
/// line) and its signature lines.
///
/// # Errors
/// [`Error::InvalidArgument`] when the note has no blank line or does not
/// end in a newline.
pub fn split_note(note: &str) -> Result<(&str, &str)> {
    if !note.ends_with('\n') {
        return Err(Error::InvalidArgument(
            "note does not end with a newline".into(),
        ));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| Error::InvalidArgument("note has no blank line".into()))?;
    Ok((&note[..split + 1], &note[split + 2..]))
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
/// `public_key` in `note`; returns its timestamp. Lines by other keys are
/// ignored; a line with this name and key ID that does not verify refuses
/// the note.
///
/// # Errors
/// [`Error::BadSignature`] when there is no valid cosignature by this key;
/// [`Error::InvalidArgument`] for a malformed note.
pub fn verify_cosignature(note: &str, name: &str, public_key: &[u8; 32]) -> Result<u64> {
    let (body, sigs) = split_note(note)?;
    let id = key_id(name, public_key);
    let mut found = None;
    for line in sigs.lines() {
        let Some((line_name, b64)) = line
            .strip_prefix(EM_DASH)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|r| r.split_once(' '))
        else {
            return Err(Error::InvalidArgument(
                "signature line does not start with an em dash and a space".into(),
            ));
        };
        let Ok(blob) = B64.decode(b64) else {
            return Err(Error::InvalidArgument("signature is not base64".into()));
        };
        if line_name != name || blob.len() < 4 || blob[..4] != id {
            continue;
        }
        if blob.len() != BLOB_LEN {
            return Err(Error::BadSignature(
                "cosignature has the wrong length".into(),
            ));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&blob[4..12]);
        let timestamp = u64::from_be_bytes(ts);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&signed_message(body, timestamp), &blob[12..])
            .map_err(|_| Error::BadSignature("cosignature does not verify".into()))?;
        found = Some(timestamp);
    }
    found.ok_or_else(|| Error::BadSignature(format!("no cosignature by {name}")))
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
        let parts: Vec<&str> = vk.split('+').collect();
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
