//! The OEM seal key: an AES-256 secret key on the token that encrypts and
//! decrypts with `CKM_AES_GCM` and does nothing else (issue 12 item 10).
//!
//! It seals the voucher entry the OEM voucher key signed, so that the
//! entry can be kept in the ledger without the ledger holding the owner key
//! in clear (invariant 6) and be returned again on a retry. The key is a
//! `CKA_TOKEN`, `CKA_SENSITIVE`, non-extractable, non-modifiable secret key
//! with `CKA_ENCRYPT` and `CKA_DECRYPT` only (template in
//! [`super::usage::seal_key_template`]); the plaintext and the key meet only
//! inside the HSM. The IV is 12 random bytes per seal; the tag is 128 bits.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;

use super::pool::{rv, Fault, P11Context};
use super::usage::{
    read_table, seal_key_template, AttributeTable, LONG_LIVED_SECRET_KEY_ATTRIBUTES,
};
use super::Hsm;
use crate::Error;

/// Length of the AES-GCM IV used for seals.
pub const SEAL_IV_LEN: usize = 12;
/// Length of the AES-GCM tag, in bits.
const SEAL_TAG_BITS: u64 = 128;

fn find_secret(session: &Session, label: &str, token: &str) -> Result<ObjectHandle, Fault> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .p11("C_FindObjects")?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Fault::Ca(Error::KeyNotFound {
            label: label.to_owned(),
            class: "secret",
            token: token.to_owned(),
        })),
        many => Err(Fault::Ca(Error::AmbiguousKey {
            label: label.to_owned(),
            class: "secret",
            count: many.len(),
        })),
    }
}

impl Hsm {
    /// Generates the AES-256 seal key on the token under `label`, with the
    /// seal-key attributes of [`super::usage`] (encrypt and decrypt only,
    /// sensitive, never extractable, not modifiable).
    ///
    /// # Errors
    /// [`Error::KeyExists`] when an object with this label exists;
    /// [`Error::MechanismUnsupported`] when the token lacks `CKM_AES_GCM`;
    /// a precise PKCS#11 error otherwise.
    pub fn generate_seal_key(&self, label: &str) -> Result<(), Error> {
        if !self.mechanisms().aes_gcm {
            return Err(Error::MechanismUnsupported {
                mechanism: "CKM_AES_GCM".to_owned(),
                reason: "the token does not list it".to_owned(),
            });
        }
        let id: [u8; 16] = rand::random();
        self.pool().run(|s| {
            let existing = s
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .p11("C_FindObjects")?;
            if !existing.is_empty() {
                return Err(Fault::Ca(Error::KeyExists {
                    label: label.to_owned(),
                }));
            }
            s.generate_key(&Mechanism::AesKeyGen, &seal_key_template(label, &id))
                .p11("C_GenerateKey")?;
            Ok(())
        })?;
        tracing::info!(label, token = %self.token_label(), "generated HSM seal key");
        Ok(())
    }

    /// Whether a secret key labelled `label` exists.
    ///
    /// # Errors
    /// A precise PKCS#11 error.
    pub fn secret_key_exists(&self, label: &str) -> Result<bool, Error> {
        self.pool().run(|s| {
            Ok(!s
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .p11("C_FindObjects")?
                .is_empty())
        })
    }

    /// Every boolean usage and protection attribute of the secret key
    /// labelled `label`, as the token reports them.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`], [`Error::AmbiguousKey`] and precise PKCS#11
    /// errors.
    pub fn secret_key_attributes(&self, label: &str) -> Result<AttributeTable, Error> {
        let token = self.token_label();
        self.pool().run(|s| {
            let handle = find_secret(s, label, token)?;
            read_table(s, handle, LONG_LIVED_SECRET_KEY_ATTRIBUTES)
        })
    }

    /// Encrypts `plaintext` with AES-256-GCM under the seal key `label`,
    /// binding `aad`; returns the ciphertext followed by the 16-byte tag.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`]; precise PKCS#11 errors.
    pub fn seal(
        &self,
        label: &str,
        iv: &[u8; SEAL_IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let token = self.token_label();
        self.pool().run(|s| {
            let key = find_secret(s, label, token)?;
            let mut iv = *iv;
            let params = GcmParams::new(&mut iv, aad, Ulong::new(SEAL_TAG_BITS))
                .map_err(|e| Fault::P11("C_EncryptInit", e))?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
                .p11("C_Encrypt")
        })
    }

    /// Decrypts and authenticates a seal made by [`Hsm::seal`] with the same
    /// `iv` and `aad`.
    ///
    /// # Errors
    /// [`Error::SealBroken`] when the tag does not verify (the ciphertext,
    /// IV or additional data differ from the ones sealed);
    /// [`Error::KeyNotFound`]; precise PKCS#11 errors.
    pub fn unseal(
        &self,
        label: &str,
        iv: &[u8; SEAL_IV_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let token = self.token_label();
        self.pool().run(|s| {
            let key = find_secret(s, label, token)?;
            let mut iv = *iv;
            let params = GcmParams::new(&mut iv, aad, Ulong::new(SEAL_TAG_BITS))
                .map_err(|e| Fault::P11("C_DecryptInit", e))?;
            match s.decrypt(&Mechanism::AesGcm(params), key, ciphertext_and_tag) {
                Ok(plain) => Ok(plain),
                Err(e) if tag_failure(s, key, &e)? => Err(Fault::Ca(Error::SealBroken {
                    reason: "the seal does not open: altered, or made for another device or entry"
                        .to_owned(),
                })),
                Err(e) => Err(Fault::P11("C_Decrypt", e)),
            }
        })
    }
}

/// Whether a failed `C_Decrypt` under the seal key was the tag refusing
/// the data. Tokens report that differently — `CKR_ENCRYPTED_DATA_INVALID`
/// as PKCS#11 3.0 asks, SoftHSM2 2.6 `CKR_GENERAL_ERROR` — so a general
/// error is told apart from a failing token by a probe: a fresh value
/// sealed and opened in the same session. If the probe works the token is
/// fine and the data was at fault; if not, the token's error stands.
fn tag_failure(s: &Session, key: ObjectHandle, e: &cryptoki::error::Error) -> Result<bool, Fault> {
    use cryptoki::error::RvError;
    match rv(e) {
        Some(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange) => Ok(true),
        Some(RvError::GeneralError | RvError::FunctionFailed) => {
            let mut iv: [u8; SEAL_IV_LEN] = rand::random();
            let probe = b"trustline seal probe";
            let aad = b"probe";
            let sealed = {
                let params = GcmParams::new(&mut iv, aad, Ulong::new(SEAL_TAG_BITS))
                    .map_err(|e| Fault::P11("C_EncryptInit", e))?;
                s.encrypt(&Mechanism::AesGcm(params), key, probe)
            };
            let Ok(sealed) = sealed else {
                return Ok(false);
            };
            let params = GcmParams::new(&mut iv, aad, Ulong::new(SEAL_TAG_BITS))
                .map_err(|e| Fault::P11("C_DecryptInit", e))?;
            Ok(s.decrypt(&Mechanism::AesGcm(params), key, &sealed)
                .is_ok_and(|opened| opened == probe))
        }
        _ => Ok(false),
    }
}
