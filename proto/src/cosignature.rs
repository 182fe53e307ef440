//! C2SP tlog-cosignature `cosignature/v1` (Ed25519) as both trust domains
//! read it: the witness key's name, ID and verifier-key string, the signed
//! message, and the verification of a cosignature line in a signed note
//! (issue 13; 2.4.14.6, 2.4.14.20). The hub makes cosignatures
//! (`hub::cosign::Cosigner`); a site's uplink checks every one it is
//! given before it keeps it, with the same code.
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
//! a signature line. `t` is POSIX seconds.

use ring::signature::{UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

use crate::signer::ED25519_PUBLIC_KEY_LEN;
use crate::Error;

/// The signed-note signature type of Ed25519 cosignatures.
pub const SIGNATURE_TYPE_COSIGNATURE_V1: u8 = 0x04;
/// The em dash that starts a note signature line.
pub const EM_DASH: char = '\u{2014}';
/// Bytes in a cosignature blob: key ID, timestamp, signature.
pub const BLOB_LEN: usize = 4 + 8 + 64;

fn bad(what: impl Into<String>) -> Error {
    Error::Note(what.into())
}

/// The key ID of an Ed25519 cosigner `name` with public key `public_key`.
pub fn key_id(name: &str, public_key: &[u8; ED25519_PUBLIC_KEY_LEN]) -> [u8; 4] {
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
/// [`Error::Note`] when the note has no blank line or does not end in a
/// newline.
pub fn split_note(note: &str) -> Result<(&str, &str), Error> {
    if !note.ends_with('\n') {
        return Err(bad("note does not end with a newline"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("note has no blank line"))?;
    Ok((&note[..split + 1], &note[split + 2..]))
}

/// A witness's public identity: its key name and Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    public_key: [u8; ED25519_PUBLIC_KEY_LEN],
}

impl WitnessKey {
    /// The witness `name` with `public_key`.
    ///
    /// # Errors
    /// [`Error::Note`] when the name is empty or holds spaces, `+` or
    /// control characters.
    pub fn new(name: &str, public_key: [u8; ED25519_PUBLIC_KEY_LEN]) -> Result<Self, Error> {
        if name.is_empty()
            || name.len() > 255
            || name
                .chars()
                .any(|c| c.is_whitespace() || c == '+' || c.is_control())
        {
            return Err(bad(format!(
                "witness name {name:?} must be 1 to 255 bytes without spaces, '+' or control characters"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            public_key,
        })
    }

    /// Parses a verifier key `<name>+<key ID hex>+base64(0x04 ‖ key)`
    /// (what the hub's `GetWitnessKey` and `hub init` print); the key ID
    /// must match.
    ///
    /// # Errors
    /// [`Error::Note`] naming what is wrong.
    pub fn from_verifier_key(text: &str) -> Result<Self, Error> {
        use base64::Engine as _;
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("a verifier key is <name>+<key id>+<base64 key>"));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| bad("the verifier key's key is not base64"))?;
        let Some((&SIGNATURE_TYPE_COSIGNATURE_V1, pk)) = raw.split_first() else {
            return Err(bad("the verifier key is not a cosignature/v1 (0x04) key"));
        };
        let public_key: [u8; ED25519_PUBLIC_KEY_LEN] = pk
            .try_into()
            .map_err(|_| bad("the verifier key's Ed25519 key is not 32 bytes"))?;
        let w = Self::new(name, public_key)?;
        if hex::encode(key_id(name, &public_key)) != id.to_ascii_lowercase() {
            return Err(bad("the verifier key's key id does not match its key"));
        }
        Ok(w)
    }

    /// The key name (the cosignature lines' name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        self.public_key
    }

    /// The key ID.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.public_key)
    }

    /// The verifier key string.
    pub fn verifier_key(&self) -> String {
        use base64::Engine as _;
        let mut k = vec![SIGNATURE_TYPE_COSIGNATURE_V1];
        k.extend_from_slice(&self.public_key);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            base64::engine::general_purpose::STANDARD.encode(k)
        )
    }

    /// Finds and verifies this witness's `cosignature/v1` line in `note`;
    /// returns its timestamp. Lines by other keys (the site's own
    /// signature, other witnesses) are ignored, as c2sp.org/signed-note
    /// requires; a line with this name and key ID that does not verify
    /// refuses the note.
    ///
    /// # Errors
    /// [`Error::Note`] when the note is malformed or holds no valid
    /// cosignature by this key.
    pub fn verify(&self, note: &str) -> Result<u64, Error> {
        use base64::Engine as _;
        let (body, sigs) = split_note(note)?;
        let id = self.key_id();
        let mut found = None;
        for line in sigs.lines() {
            let Some((line_name, b64)) = line
                .strip_prefix(EM_DASH)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|r| r.split_once(' '))
            else {
                return Err(bad(
                    "signature line does not start with an em dash and a space",
                ));
            };
            let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return Err(bad("signature is not base64"));
            };
            if line_name != self.name || blob.len() < 4 || blob[..4] != id {
                continue;
            }
            if blob.len() != BLOB_LEN {
                return Err(bad("cosignature has the wrong length"));
            }
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&blob[4..12]);
            let timestamp = u64::from_be_bytes(ts);
            UnparsedPublicKey::new(&ED25519, &self.public_key)
                .verify(&signed_message(body, timestamp), &blob[12..])
                .map_err(|_| bad("cosignature does not verify"))?;
            found = Some(timestamp);
        }
        found.ok_or_else(|| bad(format!("no cosignature by {}", self.name)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;
    use crate::signer::{Ed25519Signer, SoftwareEd25519Signer};
    use base64::Engine as _;

    const BODY: &str = "example.com/log\n42\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    fn cosign(key: &SoftwareEd25519Signer, name: &str, t: u64) -> String {
        let sig = key.sign(&signed_message(BODY, t)).unwrap();
        let mut blob = key_id(name, &key.public_key()).to_vec();
        blob.extend_from_slice(&t.to_be_bytes());
        blob.extend_from_slice(&sig);
        format!(
            "{BODY}\n{EM_DASH} {name} {}\n",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    #[test]
    fn a_cosignature_verifies_under_its_verifier_key_only() {
        let key = SoftwareEd25519Signer::generate().unwrap();
        let w = WitnessKey::new("w.example/w1", key.public_key()).unwrap();
        let note = cosign(&key, w.name(), 1_700_000_000);
        assert_eq!(w.verify(&note).unwrap(), 1_700_000_000);
        let parsed = WitnessKey::from_verifier_key(&w.verifier_key()).unwrap();
        assert_eq!(parsed, w);
        // Another body, key or name: refused.
        assert!(w.verify(&note.replace("\n42\n", "\n43\n")).is_err());
        let other = SoftwareEd25519Signer::generate().unwrap();
        let w2 = WitnessKey::new("w.example/w1", other.public_key()).unwrap();
        assert!(w2.verify(&note).is_err());
        // A verifier key whose ID does not match its key is refused.
        let vk = w.verifier_key();
        let mut parts: Vec<&str> = vk.splitn(3, '+').collect();
        parts[1] = "00000000";
        assert!(WitnessKey::from_verifier_key(&parts.join("+")).is_err());
        assert!(WitnessKey::from_verifier_key("nonsense").is_err());
    }
}
