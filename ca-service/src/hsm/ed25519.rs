//! Ed25519 keys on the token: the hub's witness key for C2SP
//! `cosignature/v1` (issue 13), made with `CKM_EC_EDWARDS_KEY_PAIR_GEN` and
//! used with `CKM_EDDSA` (pure Ed25519, no parameters) — both offered by
//! SoftHSM2 2.6.
//!
//! The curve is named in `CKA_EC_PARAMS` either as the PrintableString
//! `"edwards25519"` (PKCS#11 3.0 §2.3.10, what SoftHSM2 writes on the
//! private key) or as the OID `id-Ed25519` 1.3.101.112 (RFC 8410); both are
//! accepted when reading. The public point is in `CKA_EC_POINT` as a DER
//! OCTET STRING of the 32 bytes (some tokens return the raw 32 bytes; both
//! are accepted). The private key gets the signing-key attributes of
//! [`super::usage`]: `CKA_SIGN` only, sensitive, never extractable.

use std::sync::RwLock;

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use trustline_proto::signer::{
    ed25519_spki, Ed25519Signer, ED25519_PUBLIC_KEY_LEN, ED25519_SIGNATURE_LEN,
};

use super::key::{find_one, KeyLookup};
use super::pool::{rv, Fault, P11Context};
use super::usage::signing_key_templates;
use super::Hsm;
use crate::Error;

/// `CKA_EC_PARAMS` naming Ed25519 by the PrintableString `edwards25519`.
pub(crate) const ED25519_PARAMS_NAME: &[u8] = &[
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];
/// `CKA_EC_PARAMS` naming Ed25519 by its OID, 1.3.101.112 (RFC 8410).
pub(crate) const ED25519_PARAMS_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Whether `params` names Ed25519, in either form.
pub(crate) fn is_ed25519_params(params: &[u8]) -> bool {
    params == ED25519_PARAMS_NAME || params == ED25519_PARAMS_OID
}

/// A readable name for the curve `params` name, for error messages.
fn curve_name(params: &[u8]) -> String {
    match params {
        [0x13, len, name @ ..] if usize::from(*len) == name.len() => {
            String::from_utf8_lossy(name).into_owned()
        }
        [0x06, 0x03, 0x2b, 0x65, 0x71] => "edwards448 (1.3.101.113)".to_owned(),
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => "P-256".to_owned(),
        other => format!("parameters {}", hex::encode(other)),
    }
}

/// Extracts the 32-byte public key from a `CKA_EC_POINT` value: a DER OCTET
/// STRING of 32 bytes, or the raw 32 bytes.
pub(crate) fn ed25519_point(value: &[u8]) -> Option<[u8; ED25519_PUBLIC_KEY_LEN]> {
    let raw = match value {
        [0x04, 0x20, rest @ ..] if rest.len() == ED25519_PUBLIC_KEY_LEN => rest,
        _ if value.len() == ED25519_PUBLIC_KEY_LEN => value,
        _ => return None,
    };
    raw.try_into().ok()
}

/// Reads and checks an Ed25519 public key object.
fn read_public(
    session: &Session,
    handle: ObjectHandle,
    name: &str,
) -> Result<[u8; ED25519_PUBLIC_KEY_LEN], Fault> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        .p11("C_GetAttributeValue")?;
    let mut params = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let params = params.unwrap_or_default();
    if !is_ed25519_params(&params) {
        return Err(Fault::Ca(Error::KeyNotEd25519 {
            label: name.to_owned(),
            found: curve_name(&params),
        }));
    }
    point.as_deref().and_then(ed25519_point).ok_or_else(|| {
        Fault::Ca(Error::KeyNotEd25519 {
            label: name.to_owned(),
            found: "a CKA_EC_POINT that is not 32 bytes".to_owned(),
        })
    })
}

/// An Ed25519 private key in the HSM (the witness key), usable as a
/// Trustline [`Ed25519Signer`]. Holds a clone of the session pool; the
/// private key never leaves the token.
pub struct HsmEd25519Signer {
    hsm: Hsm,
    lookup: KeyLookup,
    handle: RwLock<ObjectHandle>,
    public: [u8; ED25519_PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for HsmEd25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmEd25519Signer")
            .field("key", &self.lookup.name)
            .field("token", &self.hsm.token_label())
            .finish_non_exhaustive()
    }
}

impl HsmEd25519Signer {
    /// The key's label.
    pub fn name(&self) -> &str {
        &self.lookup.name
    }

    /// The 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        self.public
    }

    /// The public key as SubjectPublicKeyInfo DER (RFC 8410).
    pub fn public_key_spki(&self) -> Vec<u8> {
        ed25519_spki(&self.public)
    }

    /// The public key as PEM (`PUBLIC KEY`), e.g. the hub's witness key file.
    pub fn public_key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.public_key_spki()))
    }

    fn handle(&self) -> ObjectHandle {
        *self.handle.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs `message` in the HSM with `CKM_EDDSA` (pure Ed25519). A stale
    /// object handle is refreshed by finding the key again, once.
    ///
    /// # Errors
    /// [`Error::MechanismUnsupported`] when the token lacks `CKM_EDDSA`; a
    /// precise [`Error`] for every other PKCS#11 failure.
    pub fn try_sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], Error> {
        let token = self.hsm.token_label();
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let raw = self
            .hsm
            .pool()
            .run(|s| match s.sign(&mechanism, self.handle(), message) {
                Ok(sig) => Ok(sig),
                Err(e)
                    if matches!(
                        rv(&e),
                        Some(
                            cryptoki::error::RvError::KeyHandleInvalid
                                | cryptoki::error::RvError::ObjectHandleInvalid
                        )
                    ) =>
                {
                    let fresh = find_one(s, &self.lookup, ObjectClass::PRIVATE_KEY, token)?;
                    *self.handle.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    s.sign(&mechanism, fresh, message).p11("C_Sign")
                }
                Err(e) => Err(Fault::P11("C_Sign", e)),
            })?;
        raw.as_slice().try_into().map_err(|_| Error::Pkcs11 {
            operation: "C_Sign",
            reason: format!(
                "the token returned a {}-byte value, not a 64-byte Ed25519 signature",
                raw.len()
            ),
        })
    }
}

impl Ed25519Signer for HsmEd25519Signer {
    fn public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        self.public
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], trustline_proto::Error> {
        self.try_sign(message).map_err(|e| {
            tracing::warn!(key = %self.lookup.name, error = %e, "HSM Ed25519 signature failed");
            trustline_proto::Error::Signer(e.to_string())
        })
    }
}

impl Hsm {
    /// Generates an Ed25519 signing key pair on the token under `label`
    /// (e.g. [`crate::keys::WITNESS`]), with the signing-key attributes of
    /// [`super::usage`] and the curve named `edwards25519`.
    ///
    /// # Errors
    /// [`Error::MechanismUnsupported`] when the token lacks
    /// `CKM_EC_EDWARDS_KEY_PAIR_GEN` or `CKM_EDDSA`; [`Error::KeyExists`]
    /// when an object with this label exists; precise PKCS#11 errors.
    pub fn generate_ed25519_key(&self, label: &str) -> Result<HsmEd25519Signer, Error> {
        self.require_eddsa()?;
        let id: [u8; 16] = rand::random();
        let lookup = KeyLookup::label(label);
        let (private, public) = self.pool().run(|s| {
            let existing = s
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .p11("C_FindObjects")?;
            if !existing.is_empty() {
                return Err(Fault::Ca(Error::KeyExists {
                    label: label.to_owned(),
                }));
            }
            let (public_template, private_template) =
                signing_key_templates(label, &id, ED25519_PARAMS_NAME);
            let (public, private) = s
                .generate_key_pair(
                    &Mechanism::EccEdwardsKeyPairGen,
                    &public_template,
                    &private_template,
                )
                .p11("C_GenerateKeyPair")?;
            let point = read_public(s, public, label)?;
            Ok((private, point))
        })?;
        tracing::info!(label, token = %self.token_label(), "generated HSM Ed25519 key");
        Ok(HsmEd25519Signer {
            hsm: self.clone(),
            lookup,
            handle: RwLock::new(private),
            public,
        })
    }

    /// The Ed25519 signer for the private key labelled `label`.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when the token has no such private or public
    /// key, [`Error::AmbiguousKey`] when several match,
    /// [`Error::KeyNotEd25519`] for another key type or curve (P-256,
    /// Ed448), [`Error::MechanismUnsupported`] without `CKM_EDDSA`.
    pub fn ed25519_signer(&self, label: &str) -> Result<HsmEd25519Signer, Error> {
        self.require_eddsa()?;
        let lookup = KeyLookup::label(label);
        let token = self.token_label().to_owned();
        let (handle, public) = self.pool().run(|s| {
            let handle = find_one(s, &lookup, ObjectClass::PRIVATE_KEY, &token)?;
            let key_type = s
                .get_attributes(handle, &[AttributeType::KeyType])
                .p11("C_GetAttributeValue")?;
            if !key_type.contains(&Attribute::KeyType(KeyType::EC_EDWARDS)) {
                let found = key_type
                    .iter()
                    .find_map(|a| match a {
                        Attribute::KeyType(t) => Some(format!("a {t} key")),
                        _ => None,
                    })
                    .unwrap_or_else(|| "a key without a key type".to_owned());
                return Err(Fault::Ca(Error::KeyNotEd25519 {
                    label: lookup.name.clone(),
                    found,
                }));
            }
            let public = find_one(s, &lookup, ObjectClass::PUBLIC_KEY, &token)?;
            let point = read_public(s, public, &lookup.name)?;
            Ok((handle, point))
        })?;
        Ok(HsmEd25519Signer {
            hsm: self.clone(),
            lookup,
            handle: RwLock::new(handle),
            public,
        })
    }

    fn require_eddsa(&self) -> Result<(), Error> {
        let m = self.mechanisms();
        let missing = if !m.edwards_key_gen {
            "CKM_EC_EDWARDS_KEY_PAIR_GEN"
        } else if !m.eddsa {
            "CKM_EDDSA"
        } else {
            return Ok(());
        };
        Err(Error::MechanismUnsupported {
            mechanism: missing.to_owned(),
            reason: format!("token {:?} does not offer it", self.token_label()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_read_wrapped_or_raw_and_curves_by_name_or_oid() {
        let key = [7u8; 32];
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&key);
        assert_eq!(ed25519_point(&wrapped), Some(key));
        assert_eq!(ed25519_point(&key), Some(key));
        assert_eq!(ed25519_point(&wrapped[..33]), None);
        assert_eq!(ed25519_point(&[0x04, 0x39, 1, 2, 3]), None);
        assert!(is_ed25519_params(ED25519_PARAMS_NAME));
        assert!(is_ed25519_params(ED25519_PARAMS_OID));
        assert!(!is_ed25519_params(&[0x06, 0x03, 0x2b, 0x65, 0x71]));
        assert_eq!(
            curve_name(&[0x06, 0x03, 0x2b, 0x65, 0x71]),
            "edwards448 (1.3.101.113)"
        );
        assert_eq!(curve_name(ED25519_PARAMS_NAME), "edwards25519");
    }
}
