//! Device keys made in the HSM, for devices without a good entropy source
//! (DESIGN.md step 4, "in the HSM"; 2.4.9.4, 2.4.14.19).
//!
//! In one session, all as session objects:
//! 1. a P-256 device key pair (private key sensitive, extractable only so it
//!    can be wrapped, and usable for nothing else: `usage.rs`);
//! 2. an ephemeral P-256 ECDH key pair;
//! 3. `CKM_ECDH1_DERIVE` of the ephemeral private key with the RoT's
//!    (attested) transport public key into an AES-256 key-encryption key —
//!    `CKD_NULL` (the shared x-coordinate, all SoftHSM2 offers) or
//!    `CKD_SHA256_KDF` (ANSI X9.63 with [`KEY_DELIVERY_SHARED_INFO`]);
//! 4. `CKM_AES_KEY_WRAP_PAD` (RFC 5649) of the device private key (PKCS#8);
//! 5. every object made is destroyed — and on any failure the session is
//!    closed rather than returned, which destroys whatever is left
//!    (invariant 3: the key leaves only wrapped, and no copy remains).
//!
//! The device side (`hsm_sim::key_delivery::unwrap_device_key`) redoes the
//! ECDH with its transport private key and the HSM's ephemeral public key.

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;

use super::ec::{uncompressed, P256_PARAMS};
use super::key::read_public_point;
use super::pool::{map_p11, rv, Fault, P11Context};
use super::usage::{device_key_templates, ephemeral_key_templates, kek_usage_template};
use super::Hsm;
use crate::Error;

/// The ANSI X9.63 SharedInfo used with [`KeyDeliveryKdf::EcdhSha256Kdf`]:
/// the key-encryption key is SHA-256(Z ‖ 00000001 ‖ this).
pub const KEY_DELIVERY_SHARED_INFO: &[u8] = b"trustline.v1.WrappedDeviceKey";

/// How the key-encryption key is derived from the ECDH shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyDeliveryKdf {
    /// `CKD_NULL`: the 32-byte x-coordinate of the shared point is the
    /// AES-256 key. The only KDF SoftHSM2 offers for `CKM_ECDH1_DERIVE`.
    #[default]
    EcdhXCoordinate,
    /// `CKD_SHA256_KDF` (ANSI X9.63) with [`KEY_DELIVERY_SHARED_INFO`], for
    /// HSMs that offer it.
    EcdhSha256Kdf,
}

impl KeyDeliveryKdf {
    /// The name reported in `WrappedDeviceKey.kdf`.
    pub fn name(self) -> &'static str {
        match self {
            KeyDeliveryKdf::EcdhXCoordinate => "ecdh-x-coordinate",
            KeyDeliveryKdf::EcdhSha256Kdf => "ecdh-sha256-kdf",
        }
    }

    fn ec_kdf(self) -> EcKdf<'static> {
        match self {
            KeyDeliveryKdf::EcdhXCoordinate => EcKdf::null(),
            KeyDeliveryKdf::EcdhSha256Kdf => EcKdf::sha256(KEY_DELIVERY_SHARED_INFO),
        }
    }
}

impl std::str::FromStr for KeyDeliveryKdf {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ecdh-x-coordinate" | "null" | "ckd-null" => Ok(KeyDeliveryKdf::EcdhXCoordinate),
            "ecdh-sha256-kdf" | "sha256" | "ckd-sha256-kdf" => Ok(KeyDeliveryKdf::EcdhSha256Kdf),
            other => Err(format!(
                "unknown key-delivery KDF {other:?} (expected ecdh-x-coordinate or ecdh-sha256-kdf)"
            )),
        }
    }
}

impl std::fmt::Display for KeyDeliveryKdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A device key made in the HSM and wrapped to a RoT's transport key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDeviceKey {
    /// The device public key, SubjectPublicKeyInfo DER.
    pub device_public_key: Vec<u8>,
    /// The HSM's ephemeral ECDH public key, SubjectPublicKeyInfo DER.
    pub hsm_ephemeral_public_key: Vec<u8>,
    /// The PKCS#8 device private key wrapped with `CKM_AES_KEY_WRAP_PAD`.
    pub wrapped_key: Vec<u8>,
    /// How the key-encryption key was derived.
    pub kdf: KeyDeliveryKdf,
}

/// Session objects made during one wrap; each destroyed exactly once.
struct Made<'s> {
    session: &'s Session,
    handles: Vec<ObjectHandle>,
}

impl Made<'_> {
    fn destroy_all(&mut self) -> Result<(), Fault> {
        while let Some(h) = self.handles.pop() {
            self.session.destroy_object(h).p11("C_DestroyObject")?;
        }
        Ok(())
    }
}

impl Hsm {
    /// Makes a device key pair in the HSM, wraps its private key to the RoT
    /// transport key `transport_spki` (P-256 SubjectPublicKeyInfo DER) and
    /// destroys every HSM object made. The caller must have verified that
    /// the transport key is attested by the RoT.
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] for a transport key that is not P-256;
    /// [`Error::MechanismUnsupported`] when the token lacks ECDH, AES key
    /// wrap with padding, or the configured KDF; precise PKCS#11 errors
    /// otherwise.
    pub fn generate_wrapped_key(&self, transport_spki: &[u8]) -> Result<WrappedDeviceKey, Error> {
        let transport =
            trustline_proto::statement::parse_p256_spki(transport_spki).map_err(|e| {
                Error::InvalidPublicKey {
                    what: "transport public key",
                    reason: e.to_string(),
                }
            })?;
        if let Some(missing) = self.missing_wrap_mechanism() {
            return Err(Error::MechanismUnsupported {
                mechanism: missing.to_owned(),
                reason: "the token does not list it".to_owned(),
            });
        }
        let transport_point = uncompressed(&transport);
        let kdf = self.kdf();
        let mut replaced = false;
        loop {
            let lease = self.pool().checkout()?;
            let mut made = Made {
                session: lease.session(),
                handles: Vec::with_capacity(5),
            };
            let outcome = wrap_in_session(&mut made, &transport_point, kdf);
            let outcome = outcome.and_then(|w| made.destroy_all().map(|()| w));
            let leftover = !made.handles.is_empty();
            drop(made);
            match outcome {
                Ok(wrapped) => return Ok(wrapped),
                Err(fault) => {
                    // Closing the session destroys every session object it
                    // made, whatever failed above.
                    lease.discard();
                    if leftover {
                        tracing::warn!("wrap failed; closed its session to destroy its objects");
                    }
                    match fault {
                        Fault::Ca(e) => return Err(e),
                        Fault::P11(call, e) => {
                            let closed = matches!(
                                rv(&e),
                                Some(
                                    cryptoki::error::RvError::SessionClosed
                                        | cryptoki::error::RvError::SessionHandleInvalid
                                )
                            );
                            if closed && !replaced {
                                replaced = true;
                                continue;
                            }
                            let err = map_p11(call, self.token_label(), &e);
                            return Err(match (call, err) {
                                ("C_DeriveKey", Error::MechanismUnsupported { reason, .. }) => {
                                    Error::MechanismUnsupported {
                                        mechanism: format!("CKM_ECDH1_DERIVE with {}", kdf.name()),
                                        reason,
                                    }
                                }
                                (_, other) => other,
                            });
                        }
                    }
                }
            }
        }
    }
}

fn wrap_in_session(
    made: &mut Made<'_>,
    transport_point: &[u8],
    kdf: KeyDeliveryKdf,
) -> Result<WrappedDeviceKey, Fault> {
    let s = made.session;
    // 1. The device key pair: session objects; the private key is sensitive
    //    and extractable only so that it can be wrapped (usage table in
    //    `usage.rs`).
    let (public_template, private_template) = device_key_templates(P256_PARAMS);
    let (device_public, device_private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .p11("C_GenerateKeyPair")?;
    made.handles.push(device_public);
    made.handles.push(device_private);
    // 2. The ephemeral ECDH key pair: it only derives.
    let (public_template, private_template) = ephemeral_key_templates(P256_PARAMS);
    let (ephemeral_public, ephemeral_private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .p11("C_GenerateKeyPair")?;
    made.handles.push(ephemeral_public);
    made.handles.push(ephemeral_private);
    let device_point = read_public_point(s, device_public, "device key")?;
    let ephemeral_point = read_public_point(s, ephemeral_public, "ephemeral key")?;
    // 3. The key-encryption key.
    let params = Ecdh1DeriveParams::new(kdf.ec_kdf(), transport_point);
    let mut kek_template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::new(32)),
    ];
    kek_template.extend(kek_usage_template());
    let kek = s
        .derive_key(
            &Mechanism::Ecdh1Derive(params),
            ephemeral_private,
            &kek_template,
        )
        .p11("C_DeriveKey")?;
    made.handles.push(kek);
    // 4. Wrap.
    let wrapped_key = s
        .wrap_key(&Mechanism::AesKeyWrapPad, kek, device_private)
        .p11("C_WrapKey")?;
    // A PKCS#8 P-256 key wraps to far more than one AES block; anything
    // shorter means the token misbehaved.
    if wrapped_key.len() < 16 {
        return Err(Fault::Ca(Error::Pkcs11 {
            operation: "C_WrapKey",
            reason: format!("the token returned {} bytes", wrapped_key.len()),
        }));
    }
    Ok(WrappedDeviceKey {
        device_public_key: trustline_proto::statement::p256_spki(&device_point),
        hsm_ephemeral_public_key: trustline_proto::statement::p256_spki(&ephemeral_point),
        wrapped_key,
        kdf,
    })
}

#[cfg(test)]
mod tests {
    use super::super::usage::{
        read_table, PRIVATE_KEY_ATTRIBUTES, PUBLIC_KEY_ATTRIBUTES, SECRET_KEY_ATTRIBUTES,
    };
    use super::*;

    fn table(pairs: &[(&'static str, bool)]) -> super::super::usage::AttributeTable {
        pairs.iter().copied().collect()
    }

    /// Every object the wrap path makes carries only the usage it needs
    /// (issue 12.6): read back over PKCS#11 before the objects are
    /// destroyed.
    #[test]
    fn wrap_path_objects_have_only_the_usages_they_need() {
        let token = hsm_sim::softhsm::test_token("wrap-usages").expect("token");
        let mut config = crate::HsmConfig::new(
            token.label.clone(),
            crate::PinSource::File(token.pin_file.clone()),
        );
        config.module = Some(token.module.clone());
        config.pool_size = 1;
        let hsm = Hsm::open(&config).expect("open");
        let transport = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let lease = hsm.pool().checkout().expect("session");
        let mut made = Made {
            session: lease.session(),
            handles: Vec::new(),
        };
        let point = uncompressed(&transport.public_key());
        if let Err(e) = wrap_in_session(&mut made, &point, KeyDeliveryKdf::EcdhXCoordinate) {
            panic!("wrap: {e:?}");
        }
        let s = lease.session();
        let [device_public, device_private, ephemeral_public, ephemeral_private, kek] =
            made.handles[..]
        else {
            panic!("expected five objects, got {}", made.handles.len());
        };
        let read = |h, wanted| {
            read_table(s, h, wanted)
                .map_err(|_| "read")
                .expect("attributes")
        };
        let inert_public = table(&[
            ("CKA_TOKEN", false),
            ("CKA_PRIVATE", true),
            ("CKA_MODIFIABLE", false),
            ("CKA_COPYABLE", false),
            ("CKA_VERIFY", false),
            ("CKA_VERIFY_RECOVER", false),
            ("CKA_ENCRYPT", false),
            ("CKA_WRAP", false),
            ("CKA_DERIVE", false),
        ]);
        let mut device_public_expected = inert_public.clone();
        let mut ephemeral_public_expected = inert_public;
        // CKA_PRIVATE of a public key is the token's default; only read it.
        let device_public_found = read(device_public, PUBLIC_KEY_ATTRIBUTES);
        let ephemeral_public_found = read(ephemeral_public, PUBLIC_KEY_ATTRIBUTES);
        device_public_expected.insert("CKA_PRIVATE", device_public_found["CKA_PRIVATE"]);
        ephemeral_public_expected.insert("CKA_PRIVATE", ephemeral_public_found["CKA_PRIVATE"]);
        assert_eq!(device_public_found, device_public_expected, "device public");
        assert_eq!(
            ephemeral_public_found, ephemeral_public_expected,
            "ephemeral public"
        );
        assert_eq!(
            read(device_private, PRIVATE_KEY_ATTRIBUTES),
            table(&[
                ("CKA_TOKEN", false),
                ("CKA_PRIVATE", true),
                ("CKA_SENSITIVE", true),
                ("CKA_EXTRACTABLE", true),
                ("CKA_ALWAYS_SENSITIVE", true),
                ("CKA_NEVER_EXTRACTABLE", false),
                ("CKA_MODIFIABLE", false),
                ("CKA_COPYABLE", false),
                ("CKA_SIGN", false),
                ("CKA_SIGN_RECOVER", false),
                ("CKA_DECRYPT", false),
                ("CKA_UNWRAP", false),
                ("CKA_DERIVE", false),
            ]),
            "device private"
        );
        assert_eq!(
            read(ephemeral_private, PRIVATE_KEY_ATTRIBUTES),
            table(&[
                ("CKA_TOKEN", false),
                ("CKA_PRIVATE", true),
                ("CKA_SENSITIVE", true),
                ("CKA_EXTRACTABLE", false),
                ("CKA_ALWAYS_SENSITIVE", true),
                ("CKA_NEVER_EXTRACTABLE", true),
                ("CKA_MODIFIABLE", false),
                ("CKA_COPYABLE", false),
                ("CKA_SIGN", false),
                ("CKA_SIGN_RECOVER", false),
                ("CKA_DECRYPT", false),
                ("CKA_UNWRAP", false),
                ("CKA_DERIVE", true),
            ]),
            "ephemeral private"
        );
        assert_eq!(
            read(kek, SECRET_KEY_ATTRIBUTES),
            table(&[
                ("CKA_TOKEN", false),
                ("CKA_PRIVATE", true),
                ("CKA_SENSITIVE", true),
                ("CKA_EXTRACTABLE", false),
                // SoftHSM2 refuses CKA_MODIFIABLE in a derive template.
                ("CKA_MODIFIABLE", true),
                ("CKA_COPYABLE", false),
                ("CKA_WRAP", true),
                ("CKA_UNWRAP", false),
                ("CKA_ENCRYPT", false),
                ("CKA_DECRYPT", false),
                ("CKA_SIGN", false),
                ("CKA_VERIFY", false),
                ("CKA_DERIVE", false),
            ]),
            "key-encryption key"
        );
        made.destroy_all().map_err(|_| "destroy").expect("destroy");
    }
}
