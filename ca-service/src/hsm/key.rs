//! P-256 keys on the token: generating them (sensitive, non-extractable
//! token objects), finding them by label or PKCS#11 URI, reading how they
//! are protected, and signing with them through [`HsmSigner`].
//!
//! [`HsmSigner`] implements both Trustline's [`Signer`] (statements,
//! vouchers, checkpoints) and rcgen's [`rcgen::SigningKey`], so rcgen builds
//! certificates and CRLs whose signature is made inside the HSM. SoftHSM2
//! has no `CKM_ECDSA_SHA256`, so the SHA-256 digest is computed here and
//! signed with `CKM_ECDSA`; the token's raw r‖s is DER-encoded for X.509.

use std::cell::RefCell;
use std::sync::RwLock;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256};
use trustline_proto::signer::Signer;

use super::ec::{point_from_ec_point, raw_signature_to_low_s_der, uncompressed, P256_PARAMS};
use super::pool::{Fault, P11Context};
use super::uri::{ObjectType, Pkcs11Uri};
use super::usage::{
    read_table, signing_key_templates, KeyPairAttributes, PRIVATE_KEY_ATTRIBUTES,
    PUBLIC_KEY_ATTRIBUTES,
};
use super::Hsm;
use crate::Error;

/// How a key is found again on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLookup {
    /// `CKA_LABEL`.
    pub(crate) label: Option<String>,
    /// `CKA_ID`.
    pub(crate) id: Option<Vec<u8>>,
    /// How to name the key in messages.
    pub(crate) name: String,
}

impl KeyLookup {
    pub(crate) fn label(label: &str) -> Self {
        Self {
            label: Some(label.to_owned()),
            id: None,
            name: label.to_owned(),
        }
    }

    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(label) = &self.label {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

fn class_name(class: ObjectClass) -> &'static str {
    if class == ObjectClass::PRIVATE_KEY {
        "private"
    } else {
        "public"
    }
}

/// Finds exactly one object of `class` matching `lookup`.
pub(crate) fn find_one(
    session: &Session,
    lookup: &KeyLookup,
    class: ObjectClass,
    token: &str,
) -> Result<ObjectHandle, Fault> {
    let found = session
        .find_objects(&lookup.template(class))
        .p11("C_FindObjects")?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Fault::Ca(Error::KeyNotFound {
            label: lookup.name.clone(),
            class: class_name(class),
            token: token.to_owned(),
        })),
        many => Err(Fault::Ca(Error::AmbiguousKey {
            label: lookup.name.clone(),
            class: class_name(class),
            count: many.len(),
        })),
    }
}

/// Reads a P-256 public key object's point, checking its curve.
pub(crate) fn read_public_point(
    session: &Session,
    handle: ObjectHandle,
    name: &str,
) -> Result<p256::PublicKey, Fault> {
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
    let not_p256 = || {
        Fault::Ca(Error::KeyNotP256 {
            label: name.to_owned(),
        })
    };
    if params.as_deref() != Some(P256_PARAMS) {
        return Err(not_p256());
    }
    point
        .as_deref()
        .and_then(point_from_ec_point)
        .ok_or_else(not_p256)
}

/// How a private key is protected on the token, as the token reports it
/// (evidence for invariant 3; 2.4.5.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_TOKEN`: persistent on the token.
    pub token: bool,
    /// `CKA_PRIVATE`: usable only after login.
    pub private: bool,
    /// `CKA_SENSITIVE`: the value can never be read in clear.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the value can be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it has been sensitive since creation.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it has never been extractable.
    pub never_extractable: bool,
}

/// A private key object the token holds, as listed by [`Hsm::private_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyObject {
    /// `CKA_LABEL` (empty when unset).
    pub label: String,
    /// `CKA_TOKEN`: a persistent object (false for session objects).
    pub token: bool,
}

thread_local! {
    /// The precise error behind the last signing failure this thread's
    /// [`HsmSigner`] reported through a foreign trait (rcgen's
    /// `SigningKey`, Trustline's `Signer`): those can only carry an opaque
    /// error, and the CA wants to report which HSM failure it was.
    static LAST_SIGNER_FAILURE: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// Takes the HSM error behind the last opaque signing failure on this
/// thread.
pub(crate) fn take_signer_failure() -> Option<Error> {
    LAST_SIGNER_FAILURE.with(|cell| cell.borrow_mut().take())
}

fn stash_signer_failure(key: &str, e: Error) -> String {
    tracing::warn!(key, error = %e, "HSM signature failed");
    let message = e.to_string();
    LAST_SIGNER_FAILURE.with(|cell| *cell.borrow_mut() = Some(e));
    message
}

/// A P-256 private key in the HSM, usable as a Trustline [`Signer`] and as
/// an rcgen [`rcgen::SigningKey`]. Holds a clone of the session pool; the
/// private key never leaves the token.
pub struct HsmSigner {
    hsm: Hsm,
    lookup: KeyLookup,
    handle: RwLock<ObjectHandle>,
    spki: Vec<u8>,
    point: Vec<u8>,
}

impl std::fmt::Debug for HsmSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmSigner")
            .field("key", &self.lookup.name)
            .field("token", &self.hsm.token_label())
            .finish_non_exhaustive()
    }
}

impl HsmSigner {
    pub(crate) fn load(hsm: &Hsm, lookup: KeyLookup) -> Result<Self, Error> {
        let token = hsm.token_label().to_owned();
        let (handle, public) = hsm.pool().run(|s| {
            let handle = find_one(s, &lookup, ObjectClass::PRIVATE_KEY, &token)?;
            let key_type = s
                .get_attributes(handle, &[AttributeType::KeyType])
                .p11("C_GetAttributeValue")?;
            if !key_type.contains(&Attribute::KeyType(KeyType::EC)) {
                return Err(Fault::Ca(Error::KeyNotP256 {
                    label: lookup.name.clone(),
                }));
            }
            let public = find_one(s, &lookup, ObjectClass::PUBLIC_KEY, &token)?;
            let point = read_public_point(s, public, &lookup.name)?;
            Ok((handle, point))
        })?;
        Ok(Self::new(hsm.clone(), lookup, handle, &public))
    }

    pub(crate) fn new(
        hsm: Hsm,
        lookup: KeyLookup,
        handle: ObjectHandle,
        public: &p256::PublicKey,
    ) -> Self {
        Self {
            hsm,
            lookup,
            handle: RwLock::new(handle),
            spki: trustline_proto::statement::p256_spki(public),
            point: uncompressed(public),
        }
    }

    /// The key's label (or the URI it was found by).
    pub fn name(&self) -> &str {
        &self.lookup.name
    }

    /// The public key, SubjectPublicKeyInfo DER.
    pub fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    /// The public key as PEM (`PUBLIC KEY`).
    pub fn public_key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki.clone()))
    }

    /// The session pool this key signs through.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    fn handle(&self) -> ObjectHandle {
        *self.handle.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs a SHA-256 digest in the HSM with `CKM_ECDSA`; returns the DER
    /// signature in low-S form (tokens return either twin; Trustline's
    /// verifiers accept only low-S, issue 12 "ECDSA malleability"). A stale object handle (the token was re-opened) is
    /// refreshed by finding the key again, once.
    ///
    /// # Errors
    /// A precise [`Error`] for every PKCS#11 failure.
    pub fn try_sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let token = self.hsm.token_label();
        let raw = self.hsm.pool().run(|s| {
            let handle = self.handle();
            match s.sign(&Mechanism::Ecdsa, handle, digest) {
                Ok(sig) => Ok(sig),
                Err(e)
                    if matches!(
                        super::pool::rv(&e),
                        Some(
                            cryptoki::error::RvError::KeyHandleInvalid
                                | cryptoki::error::RvError::ObjectHandleInvalid
                        )
                    ) =>
                {
                    let fresh = find_one(s, &self.lookup, ObjectClass::PRIVATE_KEY, token)?;
                    *self.handle.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    s.sign(&Mechanism::Ecdsa, fresh, digest).p11("C_Sign")
                }
                Err(e) => Err(Fault::P11("C_Sign", e)),
            }
        })?;
        raw_signature_to_low_s_der(&raw)
    }

    /// Signs SHA-256(`message`) in the HSM; returns the DER signature.
    ///
    /// # Errors
    /// As [`HsmSigner::try_sign_digest`].
    pub fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.try_sign_digest(&Sha256::digest(message).into())
    }
}

impl Signer for HsmSigner {
    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, trustline_proto::Error> {
        self.try_sign_digest(digest)
            .map_err(|e| trustline_proto::Error::Signer(stash_signer_failure(&self.lookup.name, e)))
    }
}

impl rcgen::PublicKeyData for HsmSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for HsmSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.try_sign(msg).map_err(|e| {
            stash_signer_failure(&self.lookup.name, e);
            rcgen::Error::RemoteKeyError
        })
    }
}

impl Hsm {
    /// Generates a P-256 signing key pair on the token under `label`, with
    /// the signing-key attributes of [`super::usage`] (private key
    /// `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`,
    /// not `CKA_MODIFIABLE`, `CKA_SIGN` and no other usage); the public key
    /// beside it with the same label and a random 16-byte `CKA_ID`
    /// (invariant 3, issue 12.6).
    ///
    /// # Errors
    /// [`Error::KeyExists`] when an object with this label exists already;
    /// a precise PKCS#11 error otherwise.
    pub fn generate_key(&self, label: &str) -> Result<HsmSigner, Error> {
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
                signing_key_templates(label, &id, P256_PARAMS);
            let (public, private) = s
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public_template,
                    &private_template,
                )
                .p11("C_GenerateKeyPair")?;
            let point = read_public_point(s, public, label)?;
            Ok((private, point))
        })?;
        tracing::info!(label, token = %self.token_label(), "generated HSM key");
        Ok(HsmSigner::new(self.clone(), lookup, private, &public))
    }

    /// The signer for the private key labelled `label`.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when the token has no such private or public
    /// key, [`Error::AmbiguousKey`] when several match,
    /// [`Error::KeyNotP256`] for another key type.
    pub fn signer(&self, label: &str) -> Result<HsmSigner, Error> {
        HsmSigner::load(self, KeyLookup::label(label))
    }

    /// The signer for the private key a PKCS#11 URI (RFC 7512) names, e.g.
    /// `pkcs11:token=factory;object=trustline-site-intermediate;type=private`.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a malformed URI or one that names neither
    /// an object nor an id or a type other than `private`;
    /// [`Error::UriTokenMismatch`] when it names another token; then as
    /// [`Hsm::signer`].
    pub fn signer_by_uri(&self, uri: &str) -> Result<HsmSigner, Error> {
        let parsed = Pkcs11Uri::parse(uri)?;
        if let Some(token) = &parsed.token {
            if token != self.token_label() {
                return Err(Error::UriTokenMismatch {
                    uri_token: token.clone(),
                    token: self.token_label().to_owned(),
                });
            }
        }
        if !matches!(parsed.object_type, None | Some(ObjectType::Private)) {
            return Err(Error::InvalidUri {
                reason: "a signing key URI must name type=private (or no type)".to_owned(),
            });
        }
        if parsed.object.is_none() && parsed.id.is_none() {
            return Err(Error::InvalidUri {
                reason: "the URI names neither an object label nor an id".to_owned(),
            });
        }
        HsmSigner::load(
            self,
            KeyLookup {
                label: parsed.object,
                id: parsed.id,
                name: uri.to_owned(),
            },
        )
    }

    /// Whether a private key labelled `label` exists.
    ///
    /// # Errors
    /// A precise PKCS#11 error.
    pub fn key_exists(&self, label: &str) -> Result<bool, Error> {
        let lookup = KeyLookup::label(label);
        self.pool().run(|s| {
            Ok(!s
                .find_objects(&lookup.template(ObjectClass::PRIVATE_KEY))
                .p11("C_FindObjects")?
                .is_empty())
        })
    }

    /// How the private key labelled `label` is protected, as the token
    /// reports it.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] and precise PKCS#11 errors.
    pub fn key_protection(&self, label: &str) -> Result<KeyProtection, Error> {
        let lookup = KeyLookup::label(label);
        let token = self.token_label();
        self.pool().run(|s| {
            let handle = find_one(s, &lookup, ObjectClass::PRIVATE_KEY, token)?;
            let attrs = s
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .p11("C_GetAttributeValue")?;
            let mut p = KeyProtection {
                token: false,
                private: false,
                sensitive: false,
                extractable: true,
                always_sensitive: false,
                never_extractable: false,
            };
            for a in attrs {
                match a {
                    Attribute::Token(v) => p.token = v,
                    Attribute::Private(v) => p.private = v,
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    _ => {}
                }
            }
            Ok(p)
        })
    }

    /// Every boolean usage and protection attribute of the key pair
    /// labelled `label` (private and public object), as the token reports
    /// them: the evidence behind the table in [`super::usage`].
    ///
    /// # Errors
    /// [`Error::KeyNotFound`], [`Error::AmbiguousKey`] and precise PKCS#11
    /// errors.
    pub fn key_attributes(&self, label: &str) -> Result<KeyPairAttributes, Error> {
        let lookup = KeyLookup::label(label);
        let token = self.token_label();
        self.pool().run(|s| {
            let private = find_one(s, &lookup, ObjectClass::PRIVATE_KEY, token)?;
            let public = find_one(s, &lookup, ObjectClass::PUBLIC_KEY, token)?;
            Ok(KeyPairAttributes {
                private: read_table(s, private, PRIVATE_KEY_ATTRIBUTES)?,
                public: read_table(s, public, PUBLIC_KEY_ATTRIBUTES)?,
            })
        })
    }

    /// Every private key object visible to this application: token keys and
    /// any session keys still alive in any of its sessions.
    ///
    /// # Errors
    /// Precise PKCS#11 errors.
    pub fn private_keys(&self) -> Result<Vec<KeyObject>, Error> {
        self.pool().run(|s| {
            let handles = s
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .p11("C_FindObjects")?;
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                let attrs = s
                    .get_attributes(h, &[AttributeType::Label, AttributeType::Token])
                    .p11("C_GetAttributeValue")?;
                let mut key = KeyObject {
                    label: String::new(),
                    token: false,
                };
                for a in attrs {
                    match a {
                        Attribute::Label(l) => key.label = String::from_utf8_lossy(&l).into_owned(),
                        Attribute::Token(t) => key.token = t,
                        _ => {}
                    }
                }
                out.push(key);
            }
            Ok(out)
        })
    }

    /// Destroys the private and public key objects labelled `label` (for
    /// throw-away keys such as the benchmark's). Returns how many objects
    /// were destroyed.
    ///
    /// # Errors
    /// Precise PKCS#11 errors.
    pub fn destroy_key(&self, label: &str) -> Result<usize, Error> {
        self.pool().run(|s| {
            let handles = s
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .p11("C_FindObjects")?;
            for h in &handles {
                s.destroy_object(*h).p11("C_DestroyObject")?;
            }
            Ok(handles.len())
        })
    }
}
