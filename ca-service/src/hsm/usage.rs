//! What each kind of key may do: the one place the PKCS#11 attribute
//! templates of every key Trustline makes are written, and reading the
//! attributes back.
//!
//! A token fills in whatever a template leaves out, and SoftHSM2's defaults
//! are generous (an EC private key made without a word gets `CKA_DECRYPT`,
//! `CKA_UNWRAP`, `CKA_SIGN_RECOVER` and `CKA_MODIFIABLE` true; its public
//! key `CKA_ENCRYPT` and `CKA_WRAP`). So every template names every usage
//! attribute, and each key gets exactly what it needs (issue 12.6;
//! invariant 3; 2.4.5.20):
//!
//! | key | object | true | false |
//! | --- | --- | --- | --- |
//! | signing (root, intermediate, order, voucher, checkpoint, service CA, witness) | private | TOKEN, PRIVATE, SENSITIVE, SIGN | EXTRACTABLE, MODIFIABLE, COPYABLE, SIGN_RECOVER, DECRYPT, UNWRAP, DERIVE |
//! | signing | public | TOKEN, VERIFY | PRIVATE, MODIFIABLE, COPYABLE, VERIFY_RECOVER, ENCRYPT, WRAP, DERIVE |
//! | HSM-made device key (session object) | private | PRIVATE, SENSITIVE, EXTRACTABLE (only to be wrapped) | TOKEN, MODIFIABLE, COPYABLE, SIGN, SIGN_RECOVER, DECRYPT, UNWRAP, DERIVE |
//! | HSM-made device key | public | — | TOKEN, MODIFIABLE, COPYABLE, VERIFY, VERIFY_RECOVER, ENCRYPT, WRAP, DERIVE |
//! | ephemeral ECDH key (session object) | private | PRIVATE, SENSITIVE, DERIVE | TOKEN, EXTRACTABLE, MODIFIABLE, COPYABLE, SIGN, SIGN_RECOVER, DECRYPT, UNWRAP |
//! | ephemeral ECDH key | public | — | TOKEN, MODIFIABLE, COPYABLE, VERIFY, VERIFY_RECOVER, ENCRYPT, WRAP, DERIVE |
//! | key-encryption key (AES-256, session object) | secret | PRIVATE, SENSITIVE, WRAP (MODIFIABLE: SoftHSM2 refuses it in a derive template) | TOKEN, EXTRACTABLE, COPYABLE, UNWRAP, ENCRYPT, DECRYPT, SIGN, VERIFY, DERIVE |
//! | OEM seal key `trustline-oem-seal` (AES-256, `CKM_AES_GCM`; issue 12 item 10) | secret | TOKEN, PRIVATE, SENSITIVE, ENCRYPT, DECRYPT | EXTRACTABLE, MODIFIABLE, COPYABLE, WRAP, UNWRAP, SIGN, VERIFY, DERIVE |
//!
//! `CKA_MODIFIABLE` false means nobody (not even the user) can later turn a
//! usage on; `CKA_DESTROYABLE` stays true so the benchmark's throw-away keys
//! and a failed `ca init` can be removed. SoftHSM2 2.6.1 honours every
//! attribute above (checked by `tests/hsm.rs`).

use std::collections::BTreeMap;

use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;

use super::pool::{Fault, P11Context};

/// The boolean attributes read back from a private key.
pub(crate) const PRIVATE_KEY_ATTRIBUTES: &[(AttributeType, &str)] = &[
    (AttributeType::Token, "CKA_TOKEN"),
    (AttributeType::Private, "CKA_PRIVATE"),
    (AttributeType::Sensitive, "CKA_SENSITIVE"),
    (AttributeType::Extractable, "CKA_EXTRACTABLE"),
    (AttributeType::AlwaysSensitive, "CKA_ALWAYS_SENSITIVE"),
    (AttributeType::NeverExtractable, "CKA_NEVER_EXTRACTABLE"),
    (AttributeType::Modifiable, "CKA_MODIFIABLE"),
    (AttributeType::Copyable, "CKA_COPYABLE"),
    (AttributeType::Sign, "CKA_SIGN"),
    (AttributeType::SignRecover, "CKA_SIGN_RECOVER"),
    (AttributeType::Decrypt, "CKA_DECRYPT"),
    (AttributeType::Unwrap, "CKA_UNWRAP"),
    (AttributeType::Derive, "CKA_DERIVE"),
];

/// The boolean attributes read back from a public key.
pub(crate) const PUBLIC_KEY_ATTRIBUTES: &[(AttributeType, &str)] = &[
    (AttributeType::Token, "CKA_TOKEN"),
    (AttributeType::Private, "CKA_PRIVATE"),
    (AttributeType::Modifiable, "CKA_MODIFIABLE"),
    (AttributeType::Copyable, "CKA_COPYABLE"),
    (AttributeType::Verify, "CKA_VERIFY"),
    (AttributeType::VerifyRecover, "CKA_VERIFY_RECOVER"),
    (AttributeType::Encrypt, "CKA_ENCRYPT"),
    (AttributeType::Wrap, "CKA_WRAP"),
    (AttributeType::Derive, "CKA_DERIVE"),
];

/// The boolean attributes read back from a secret (AES) key.
#[cfg(test)]
pub(crate) const SECRET_KEY_ATTRIBUTES: &[(AttributeType, &str)] = &[
    (AttributeType::Token, "CKA_TOKEN"),
    (AttributeType::Private, "CKA_PRIVATE"),
    (AttributeType::Sensitive, "CKA_SENSITIVE"),
    (AttributeType::Extractable, "CKA_EXTRACTABLE"),
    (AttributeType::Modifiable, "CKA_MODIFIABLE"),
    (AttributeType::Copyable, "CKA_COPYABLE"),
    (AttributeType::Wrap, "CKA_WRAP"),
    (AttributeType::Unwrap, "CKA_UNWRAP"),
    (AttributeType::Encrypt, "CKA_ENCRYPT"),
    (AttributeType::Decrypt, "CKA_DECRYPT"),
    (AttributeType::Sign, "CKA_SIGN"),
    (AttributeType::Verify, "CKA_VERIFY"),
    (AttributeType::Derive, "CKA_DERIVE"),
];

/// The boolean attributes read back from a long-lived secret key (the
/// seal key): the usages and protections of a secret key, and whether it was always
/// sensitive and never extractable.
pub(crate) const LONG_LIVED_SECRET_KEY_ATTRIBUTES: &[(AttributeType, &str)] = &[
    (AttributeType::Token, "CKA_TOKEN"),
    (AttributeType::Private, "CKA_PRIVATE"),
    (AttributeType::Sensitive, "CKA_SENSITIVE"),
    (AttributeType::Extractable, "CKA_EXTRACTABLE"),
    (AttributeType::AlwaysSensitive, "CKA_ALWAYS_SENSITIVE"),
    (AttributeType::NeverExtractable, "CKA_NEVER_EXTRACTABLE"),
    (AttributeType::Modifiable, "CKA_MODIFIABLE"),
    (AttributeType::Copyable, "CKA_COPYABLE"),
    (AttributeType::Wrap, "CKA_WRAP"),
    (AttributeType::Unwrap, "CKA_UNWRAP"),
    (AttributeType::Encrypt, "CKA_ENCRYPT"),
    (AttributeType::Decrypt, "CKA_DECRYPT"),
    (AttributeType::Sign, "CKA_SIGN"),
    (AttributeType::Verify, "CKA_VERIFY"),
    (AttributeType::Derive, "CKA_DERIVE"),
];

/// A key's boolean attributes by PKCS#11 name (`"CKA_SIGN"` → true), as
/// the token reports them.
pub type AttributeTable = BTreeMap<&'static str, bool>;

/// The attributes of a key pair on the token, as [`super::Hsm::key_attributes`]
/// reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairAttributes {
    /// The private key's.
    pub private: AttributeTable,
    /// The public key's.
    pub public: AttributeTable,
}

/// Templates of a long-lived signing key pair (the first row of the table):
/// `(public, private)`. `params` is the curve's `CKA_EC_PARAMS`.
pub(crate) fn signing_key_templates(
    label: &str,
    id: &[u8],
    params: &[u8],
) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::EcParams(params.to_vec()),
        Attribute::Verify(true),
        Attribute::VerifyRecover(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Sign(true),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    (public, private)
}

/// A public key of a session key pair that is never used by the token (the
/// HSM-made device key, the ephemeral ECDH key: the point is read, never
/// used to verify, encrypt or wrap).
fn inert_public_template(params: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::EcParams(params.to_vec()),
        Attribute::Verify(false),
        Attribute::VerifyRecover(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ]
}

/// The HSM-made device key pair: `(public, private)`. The private key is
/// extractable only so that `CKM_AES_KEY_WRAP_PAD` can wrap it; it can do
/// nothing else.
pub(crate) fn device_key_templates(params: &[u8]) -> (Vec<Attribute>, Vec<Attribute>) {
    let private = vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Sign(false),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    (inert_public_template(params), private)
}

/// The ephemeral ECDH key pair: `(public, private)`; the private key only
/// derives.
pub(crate) fn ephemeral_key_templates(params: &[u8]) -> (Vec<Attribute>, Vec<Attribute>) {
    let private = vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Derive(true),
        Attribute::Sign(false),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
    ];
    (inert_public_template(params), private)
}

/// The usage attributes of the derived key-encryption key (class, key type
/// and length are the caller's): it only wraps. SoftHSM2 refuses
/// `CKA_MODIFIABLE` in a `C_DeriveKey` template (`CKR_ATTRIBUTE_READ_ONLY`),
/// so it stays at the token's default; the key lives for one call.
pub(crate) fn kek_usage_template() -> Vec<Attribute> {
    vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Copyable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// The template of the OEM seal key (the last row of the table): an AES-256
/// token secret key that only encrypts and decrypts.
pub(crate) fn seal_key_template(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
        Attribute::KeyType(cryptoki::object::KeyType::AES),
        Attribute::ValueLen(cryptoki::types::Ulong::new(32)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// Reads the boolean attributes `wanted` of `handle`, one call each so that
/// an attribute the object does not have is simply absent from the table
/// rather than failing the whole read.
pub(crate) fn read_table(
    session: &Session,
    handle: ObjectHandle,
    wanted: &[(AttributeType, &'static str)],
) -> Result<AttributeTable, Fault> {
    let mut table = AttributeTable::new();
    for (kind, name) in wanted {
        let attrs = session
            .get_attributes(handle, &[*kind])
            .p11("C_GetAttributeValue")?;
        for a in attrs {
            let value = match a {
                Attribute::Token(v)
                | Attribute::Private(v)
                | Attribute::Sensitive(v)
                | Attribute::Extractable(v)
                | Attribute::AlwaysSensitive(v)
                | Attribute::NeverExtractable(v)
                | Attribute::Modifiable(v)
                | Attribute::Copyable(v)
                | Attribute::Sign(v)
                | Attribute::SignRecover(v)
                | Attribute::Decrypt(v)
                | Attribute::Unwrap(v)
                | Attribute::Derive(v)
                | Attribute::Verify(v)
                | Attribute::VerifyRecover(v)
                | Attribute::Encrypt(v)
                | Attribute::Wrap(v) => v,
                _ => continue,
            };
            table.insert(*name, value);
        }
    }
    Ok(table)
}
