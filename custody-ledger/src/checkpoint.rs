//! Checkpoints: C2SP tlog-checkpoint signed notes with ECDSA P-256
//! signatures (signed-note signature type `0x02`).
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <base64 root hash>\n
//! \n
//! — <key name> <base64(key ID ‖ DER ECDSA signature)>\n
//! ```
//!
//! - The signature is ECDSA P-256 over SHA-256 of the note text (the three
//!   lines, final newline included), DER-encoded, as the
//!   transparency-dev witness implementation that c2sp.org/signed-note cites
//!   for type `0x02` produces and checks.
//! - For type `0x02` the key ID is *not* the generic recommendation
//!   `SHA-256(name ‖ 0x0A ‖ type ‖ key)[:4]`: c2sp.org/signed-note says it is
//!   "the truncated SHA-256 hash of the DER encoded public key in SPKI
//!   format", i.e. `SHA-256(SPKI)[:4]`, big-endian. That is what
//!   [`key_id`] computes, and what the verifier key string
//!   `<name>+<key ID, 8 hex>+base64(0x02 ‖ SPKI)` carries.
//! - The key name is the origin (tlog-checkpoint: it SHOULD match).
//! - Signing goes through [`trustline_proto::signer::Signer`]: an HSM key
//!   in production (2.4.9.3), a software key in tests.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};
use trustline_proto::signer::Signer;

use crate::error::{Error, Result};
use crate::merkle::Hash;

/// The signed-note signature type of ECDSA signatures.
pub const SIGNATURE_TYPE_ECDSA: u8 = 0x02;
/// The em dash that starts a signature line.
const EM_DASH: char = '\u{2014}';
/// Signature lines a note may carry before it is refused.
const MAX_SIGNATURES: usize = 16;
/// Largest note accepted, in bytes.
pub const MAX_NOTE_LEN: usize = 16 * 1024;

/// The ledger's checkpoint identity: origin (= key name) and public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerKey {
    origin: String,
    spki: Vec<u8>,
    key_id: [u8; 4],
}

/// The signed-note key ID of an ECDSA key: `SHA-256(SPKI DER)[:4]`.
pub fn key_id(spki: &[u8]) -> [u8; 4] {
    let h = Sha256::digest(spki);
    [h[0], h[1], h[2], h[3]]
}

/// Checks that `origin` can be a checkpoint origin and a note key name:
/// non-empty, no spaces, no `+`, no control characters.
///
/// # Errors
/// [`Error::InvalidArgument`] saying what is wrong.
pub fn validate_origin(origin: &str) -> Result<()> {
    if origin.is_empty() || origin.len() > 255 {
        return Err(Error::InvalidArgument(
            "origin must be 1 to 255 bytes".into(),
        ));
    }
    if origin
        .chars()
        .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(Error::InvalidArgument(format!(
            "origin {origin:?} must not contain spaces, '+' or control characters"
        )));
    }
    Ok(())
}

impl LedgerKey {
    /// The identity of a ledger with `origin` whose checkpoint key has this
    /// SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad origin, [`Error::Checkpoint`] for
    /// a key that is not P-256.
    pub fn new(origin: &str, spki: &[u8]) -> Result<Self> {
        validate_origin(origin)?;
        trustline_proto::statement::parse_p256_spki(spki)
            .map_err(|e| Error::Checkpoint(format!("checkpoint key: {e}")))?;
        Ok(Self {
            origin: origin.to_string(),
            spki: spki.to_vec(),
            key_id: key_id(spki),
        })
    }

    /// The checkpoint origin, also the note key name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// SubjectPublicKeyInfo DER of the checkpoint key.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The signed-note verifier key: `<name>+<key ID hex>+base64(0x02 ‖ SPKI)`.
    pub fn verifier_key(&self) -> String {
        let mut k = vec![SIGNATURE_TYPE_ECDSA];
        k.extend_from_slice(&self.spki);
        format!(
            "{}+{}+{}",
            self.origin,
            hex::encode(self.key_id),
            B64.encode(k)
        )
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub fn public_key_pem(&self) -> String {
        spki_to_pem(&self.spki)
    }
}

/// PEM (`PUBLIC KEY`) of a P-256 SubjectPublicKeyInfo.
pub fn spki_to_pem(spki: &[u8]) -> String {
    p256::PublicKey::from_public_key_der(spki)
        .ok()
        .and_then(|k| k.to_public_key_pem(LineEnding::LF).ok())
        // LedgerKey::new checked the key is P-256, so this cannot fail.
        .unwrap_or_default()
}

/// The SubjectPublicKeyInfo DER of a PEM `PUBLIC KEY` holding a P-256 key.
///
/// # Errors
/// [`Error::Checkpoint`] when the text is not such a key.
pub fn spki_from_pem(pem: &str) -> Result<Vec<u8>> {
    let key = p256::PublicKey::from_public_key_pem(pem.trim())
        .map_err(|e| Error::Checkpoint(format!("not a P-256 public key PEM: {e}")))?;
    Ok(trustline_proto::statement::p256_spki(&key))
}

/// A checkpoint whose signature has been made or checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree size.
    pub size: u64,
    /// The root hash at that size.
    pub root: Hash,
    /// The full signed note.
    pub note: String,
}

/// The note text of a checkpoint: origin, size, base64 root, each ending in
/// a newline.
pub fn note_text(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Signs the checkpoint `(size, root)` with `signer`, whose public key must
/// be `key`'s.
///
/// # Errors
/// [`Error::Signer`] when the signer fails, [`Error::KeyMismatch`]-like
/// [`Error::Checkpoint`] when it signs with another key.
pub fn sign(
    signer: &dyn Signer,
    key: &LedgerKey,
    size: u64,
    root: &Hash,
) -> Result<SignedCheckpoint> {
    if signer.public_key_der() != key.spki() {
        return Err(Error::Checkpoint(
            "the signer does not hold the ledger key".into(),
        ));
    }
    let text = note_text(&key.origin, size, root);
    let sig = signer
        .sign(text.as_bytes())
        .map_err(|e| Error::Signer(e.to_string()))?;
    let mut blob = key.key_id.to_vec();
    blob.extend_from_slice(&sig);
    let note = format!("{text}\n{EM_DASH} {} {}\n", key.origin, B64.encode(blob));
    Ok(SignedCheckpoint {
        size,
        root: *root,
        note,
    })
}

/// Parses a signed note and verifies its signature by the key `spki` under
/// the key name that equals its origin. Signatures by other keys are
/// ignored, as c2sp.org/signed-note requires; a failing signature by this
/// key refuses the whole note.
///
/// # Errors
/// [`Error::Checkpoint`] saying what is wrong.
pub fn open(note: &str, spki: &[u8], expected_origin: Option<&str>) -> Result<SignedCheckpoint> {
    let bad = |what: &str| Error::Checkpoint(what.to_string());
    if note.len() > MAX_NOTE_LEN {
        return Err(bad("note is too long"));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad("note contains control characters"));
    }
    if !note.ends_with('\n') {
        return Err(bad("note does not end with a newline"));
    }
    // The text ends at the last blank line.
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("note has no blank line before its signatures"))?;
    let text = &note[..split + 1];
    let sigs = &note[split + 2..];
    let mut lines = text.lines();
    let origin = lines.next().ok_or_else(|| bad("note has no origin line"))?;
    let size_line = lines
        .next()
        .ok_or_else(|| bad("note has no tree size line"))?;
    let root_line = lines
        .next()
        .ok_or_else(|| bad("note has no root hash line"))?;
    if lines.any(str::is_empty) {
        return Err(bad("checkpoint extension lines must not be empty"));
    }
    validate_origin(origin).map_err(|e| Error::Checkpoint(e.to_string()))?;
    if let Some(expected) = expected_origin {
        if origin != expected {
            return Err(Error::Checkpoint(format!(
                "checkpoint origin {origin:?} is not {expected:?}"
            )));
        }
    }
    if size_line.is_empty()
        || !size_line.bytes().all(|b| b.is_ascii_digit())
        || (size_line.len() > 1 && size_line.starts_with('0'))
    {
        return Err(bad(
            "tree size is not a decimal number without leading zeros",
        ));
    }
    let size: u64 = size_line
        .parse()
        .map_err(|_| bad("tree size does not fit 64 bits"))?;
    let root_bytes = B64
        .decode(root_line)
        .map_err(|_| bad("root hash is not base64"))?;
    let root: Hash = root_bytes
        .try_into()
        .map_err(|_| bad("root hash is not 32 bytes"))?;

    let id = key_id(spki);
    let mut verified = false;
    for (i, line) in sigs.lines().enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(bad("note has too many signatures"));
        }
        let rest = line
            .strip_prefix(EM_DASH)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| bad("signature line does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("signature line has no key name"))?;
        let blob = B64
            .decode(b64)
            .map_err(|_| bad("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(bad("signature is too short"));
        }
        if name != origin || blob[..4] != id {
            continue;
        }
        trustline_proto::statement::verify_signature(spki, text.as_bytes(), &blob[4..])
            .map_err(|e| Error::Checkpoint(format!("checkpoint signature does not verify: {e}")))?;
        verified = true;
    }
    if !verified {
        return Err(bad("no signature by the ledger key"));
    }
    Ok(SignedCheckpoint {
        size,
        root,
        note: note.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;
    use trustline_proto::signer::SoftwareSigner;

    fn setup() -> (SoftwareSigner, LedgerKey) {
        let s = SoftwareSigner::generate();
        let k = LedgerKey::new("example.com/ledger", s.public_key_der()).unwrap();
        (s, k)
    }

    #[test]
    fn round_trip_and_shape() {
        let (s, k) = setup();
        let cp = sign(&s, &k, 42, &[7; 32]).unwrap();
        let lines: Vec<&str> = cp.note.lines().collect();
        assert_eq!(lines[0], "example.com/ledger");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], B64.encode([7u8; 32]));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} example.com/ledger "));
        let back = open(&cp.note, k.spki(), Some("example.com/ledger")).unwrap();
        assert_eq!(back, cp);
        // The key ID is SHA-256(SPKI)[:4].
        let blob = B64.decode(lines[4].rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(blob[..4], Sha256::digest(k.spki())[..4]);
        let vk = k.verifier_key();
        assert!(vk.starts_with(&format!("example.com/ledger+{}+", hex::encode(k.key_id()))));
        assert_eq!(
            B64.decode(vk.splitn(3, '+').nth(2).unwrap()).unwrap()[0],
            0x02
        );
        assert_eq!(spki_from_pem(&k.public_key_pem()).unwrap(), k.spki());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let (s, k) = setup();
        let cp = sign(&s, &k, 42, &[7; 32]).unwrap();
        let text_len = cp.note.find("\n\n").unwrap() + 1;
        for i in 0..text_len {
            let mut b = cp.note.clone().into_bytes();
            b[i] ^= 0x01;
            if let Ok(n) = String::from_utf8(b) {
                assert!(open(&n, k.spki(), None).is_err(), "byte {i}");
            }
        }
        let other = SoftwareSigner::generate();
        assert!(open(&cp.note, other.public_key_der(), None).is_err());
        assert!(open(&cp.note, k.spki(), Some("other/origin")).is_err());
    }

    #[test]
    fn unknown_signatures_are_ignored_but_one_is_needed() {
        let (s, k) = setup();
        let cp = sign(&s, &k, 1, &[1; 32]).unwrap();
        let with_witness = format!(
            "{}\u{2014} witness.example/w {}\n",
            cp.note,
            B64.encode([9u8; 70])
        );
        assert!(open(&with_witness, k.spki(), None).is_ok());
        let text = note_text("example.com/ledger", 1, &[1; 32]);
        let unsigned = format!(
            "{text}\n\u{2014} witness.example/w {}\n",
            B64.encode([9u8; 70])
        );
        assert!(open(&unsigned, k.spki(), None).is_err());
    }
}
