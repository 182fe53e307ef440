//! The HSM layer against a real SoftHSM2 token: every PKCS#11 failure gets a
//! precise error, CA keys stay sensitive and non-extractable, keys are found
//! by label and by PKCS#11 URI, a lost login is restored, and HSM-made
//! device keys reach the device only wrapped and leave nothing on the token
//! (invariant 3; 2.4.5.20, 2.4.9.4, 2.4.14.19).

mod common;

use ca_service::hsm::{KeyDeliveryKdf, Pkcs11Uri};
use ca_service::keys::KeyLabels;
use ca_service::{Error, Hsm, HsmConfig, PinSource};
use common::{assert_openssl_verifies, config, fixture, hsm, pop_request, rot_id};
use hsm_sim::key_delivery::unwrap_device_key;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::statement::{p256_spki, verify_signature};

#[test]
fn a_wrong_pin_is_refused_by_name() {
    let token = hsm_sim::softhsm::test_token("wrong-pin").expect("token");
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "not-the-pin-0000\n").expect("write");
    let mut config = config(&token, 2);
    config.pin = PinSource::File(pin);
    let err = Hsm::open(&config).expect_err("must be refused");
    assert!(
        matches!(&err, Error::WrongPin { label } if *label == token.label),
        "{err:?}"
    );
    assert!(err.to_string().contains("incorrect"), "{err}");
    assert!(
        !err.to_string().contains("not-the-pin"),
        "the PIN leaked: {err}"
    );
}

#[test]
fn a_missing_token_is_refused_with_the_labels_present() {
    let token = hsm_sim::softhsm::test_token("present").expect("token");
    let mut config = config(&token, 1);
    config.token_label = "no-such-token".to_owned();
    let err = Hsm::open(&config).expect_err("must be refused");
    let Error::TokenNotFound { label, available } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(label, "no-such-token");
    assert!(available.contains(&token.label), "{available:?}");
}

#[test]
fn a_missing_module_names_the_softhsm2_package() {
    let mut config = HsmConfig::new("any", PinSource::Env("UNUSED".to_owned()));
    config.module = Some("/nonexistent/lib/libsofthsm2.so".into());
    let err = Hsm::open(&config).expect_err("must be refused");
    assert!(matches!(err, Error::ModuleNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`softhsm2`"), "{msg}");
    assert!(msg.contains("/nonexistent/lib/libsofthsm2.so"), "{msg}");
}

#[test]
fn an_unset_pin_variable_is_a_pin_source_error() {
    let token = hsm_sim::softhsm::test_token("pin-env").expect("token");
    let mut config = config(&token, 1);
    config.pin = PinSource::Env("TRUSTLINE_TEST_PIN_NEVER_SET".to_owned());
    let err = Hsm::open(&config).expect_err("must be refused");
    assert!(matches!(err, Error::PinSource { .. }), "{err:?}");
    assert!(
        err.to_string().contains("TRUSTLINE_TEST_PIN_NEVER_SET"),
        "{err}"
    );
}

#[test]
fn ca_keys_are_sensitive_and_never_extractable() {
    let f = fixture("protection", 2);
    for label in KeyLabels::default().all() {
        let p = f.hsm.key_protection(label).expect("protection");
        assert!(p.token, "{label} is not a token object");
        assert!(p.private, "{label} is not CKA_PRIVATE");
        assert!(p.sensitive, "{label} is not CKA_SENSITIVE");
        assert!(!p.extractable, "{label} is CKA_EXTRACTABLE");
        assert!(p.always_sensitive, "{label} was not always sensitive");
        assert!(p.never_extractable, "{label} was once extractable");
    }
}

#[test]
fn keys_are_found_by_label_and_by_pkcs11_uri() {
    let (token, hsm) = hsm("uri", 2);
    let made = hsm.generate_key("device-ca").expect("generate");
    let by_label = hsm.signer("device-ca").expect("by label");
    let uri = Pkcs11Uri::private_key(&token.label, "device-ca");
    let by_uri = hsm.signer_by_uri(&uri).expect("by uri");
    assert_eq!(made.public_key_der(), by_label.public_key_der());
    assert_eq!(made.public_key_der(), by_uri.public_key_der());
    let sig = by_uri.sign(b"message").expect("sign");
    verify_signature(made.public_key_der(), b"message", &sig).expect("HSM signature verifies");

    assert!(matches!(
        hsm.generate_key("device-ca"),
        Err(Error::KeyExists { .. })
    ));
    assert!(matches!(
        hsm.signer("no-such-key"),
        Err(Error::KeyNotFound {
            class: "private",
            ..
        })
    ));
    assert!(matches!(
        hsm.signer_by_uri("pkcs11:token=elsewhere;object=device-ca"),
        Err(Error::UriTokenMismatch { .. })
    ));
    assert!(matches!(
        hsm.signer_by_uri("pkcs11:object=device-ca;type=public"),
        Err(Error::InvalidUri { .. })
    ));
    assert!(matches!(
        hsm.signer_by_uri(&format!(
            "pkcs11:token={};object=device-ca?pin-value=1234",
            token.label
        )),
        Err(Error::InvalidUri { .. })
    ));
}

#[test]
fn a_lost_login_is_restored_without_an_error() {
    let (_token, hsm) = hsm("relogin", 2);
    let signer = hsm.generate_key("k").expect("generate");
    signer.try_sign(b"before").expect("sign");
    // Login is per application: logging out on any session logs every
    // pooled session out, as an HSM reset would.
    let ctx = ca_service::hsm::module::load(hsm.module_path()).expect("module");
    let slot = cryptoki::slot::Slot::try_from(hsm.slot_id()).expect("slot");
    let session = ctx.open_ro_session(slot).expect("session");
    session.logout().expect("logout");
    drop(session);
    let sig = signer.try_sign(b"after").expect("the pool logs in again");
    verify_signature(signer.public_key_der(), b"after", &sig).expect("verifies");
}

#[test]
fn hsm_made_device_keys_unwrap_on_the_device_and_leave_nothing_behind() {
    let f = fixture("wrap", 2);
    let before = f.hsm.private_keys().expect("list");
    assert_eq!(before.len(), 4, "{before:?}");
    let mut certs = Vec::new();
    for i in 0..3 {
        let transport = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let wrapped =
            f.ca.generate_wrapped_key(&p256_spki(&transport.public_key()))
                .expect("wrap");
        assert_eq!(wrapped.kdf, KeyDeliveryKdf::EcdhXCoordinate);
        assert_eq!(
            wrapped.kdf.name(),
            hsm_sim::key_delivery::KDF_ECDH_X_COORDINATE
        );
        let device_key = unwrap_device_key(
            &transport,
            &wrapped.hsm_ephemeral_public_key,
            &wrapped.wrapped_key,
            wrapped.kdf.name(),
        )
        .expect("the device unwraps its key");
        assert_eq!(
            p256_spki(&device_key.public_key()),
            wrapped.device_public_key
        );

        // Another transport key cannot unwrap it.
        let stranger = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        assert!(unwrap_device_key(
            &stranger,
            &wrapped.hsm_ephemeral_public_key,
            &wrapped.wrapped_key,
            wrapped.kdf.name()
        )
        .is_err());

        let device = SoftwareSigner::from_key(p256::ecdsa::SigningKey::from(device_key));
        let request = pop_request(&device, &format!("SN-WRAP-{i}"), &rot_id());
        let issued =
            f.ca.issue(&request.verify().expect("verify"))
                .expect("issue");
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.certificate).expect("parse");
        assert_eq!(cert.public_key().raw, wrapped.device_public_key.as_slice());
        certs.push(issued.certificate);
    }
    assert_openssl_verifies(&f.ca, &certs);
    let after = f.hsm.private_keys().expect("list");
    assert_eq!(
        after, before,
        "a device key or ephemeral key was left on the token"
    );
    assert!(after.iter().all(|k| k.token));
}

#[test]
fn kdf_constants_match_the_device_side() {
    assert_eq!(
        ca_service::hsm::KEY_DELIVERY_SHARED_INFO,
        hsm_sim::key_delivery::SHA256_KDF_SHARED_INFO
    );
    assert_eq!(
        KeyDeliveryKdf::EcdhSha256Kdf.name(),
        hsm_sim::key_delivery::KDF_ECDH_SHA256
    );
    assert_eq!(
        "ecdh-sha256-kdf".parse::<KeyDeliveryKdf>(),
        Ok(KeyDeliveryKdf::EcdhSha256Kdf)
    );
}

#[test]
fn a_kdf_the_token_lacks_is_a_clear_error_and_leaves_nothing_behind() {
    let token = hsm_sim::softhsm::test_token("kdf").expect("token");
    let mut config = config(&token, 1);
    config.kdf = KeyDeliveryKdf::EcdhSha256Kdf;
    let hsm = Hsm::open(&config).expect("open");
    let before = hsm.private_keys().expect("list");
    let transport = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let err = hsm
        .generate_wrapped_key(&p256_spki(&transport.public_key()))
        .expect_err("must be refused");
    let Error::MechanismUnsupported { mechanism, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(mechanism.contains("ecdh-sha256-kdf"), "{mechanism}");
    assert_eq!(hsm.private_keys().expect("list"), before);
}

#[test]
fn a_transport_key_that_is_not_p256_is_refused() {
    let (_token, hsm) = hsm("bad-transport", 1);
    let err = hsm
        .generate_wrapped_key(b"not a key")
        .expect_err("must be refused");
    assert!(
        matches!(
            err,
            Error::InvalidPublicKey {
                what: "transport public key",
                ..
            }
        ),
        "{err:?}"
    );
}
