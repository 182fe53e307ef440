//! What the keys on the tokens may do, read back over PKCS#11 (issue 12.6;
//! invariant 3; 2.4.5.20): every signing key only signs; the ledger's
//! checkpoint key lives on a token of its own; every HSM ECDSA signature is
//! low-S (issue 12, "ECDSA malleability"); the witness's Ed25519 key signs
//! in the HSM and is checked by ring and by openssl (issue 13).

mod common;

use std::collections::BTreeMap;

use ca_service::hsm::KeyPairAttributes;
use ca_service::keys::{KeyLabels, LEDGER_CHECKPOINT, SERVICE_CA, WITNESS};
use ca_service::{ledger_key, Error, Hsm};
use common::{fixture, hsm, openssl};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use trustline_proto::signer::{verify_ed25519, Ed25519Signer, Signer};
use trustline_proto::statement::verify_signature;

fn table(pairs: &[(&'static str, bool)]) -> BTreeMap<&'static str, bool> {
    pairs.iter().copied().collect()
}

/// The attributes every long-lived signing key must have, written out here
/// rather than taken from the crate, so that a change to the templates
/// fails this test.
fn signing_key() -> KeyPairAttributes {
    KeyPairAttributes {
        private: table(&[
            ("CKA_TOKEN", true),
            ("CKA_PRIVATE", true),
            ("CKA_SENSITIVE", true),
            ("CKA_EXTRACTABLE", false),
            ("CKA_ALWAYS_SENSITIVE", true),
            ("CKA_NEVER_EXTRACTABLE", true),
            ("CKA_MODIFIABLE", false),
            ("CKA_COPYABLE", false),
            ("CKA_SIGN", true),
            ("CKA_SIGN_RECOVER", false),
            ("CKA_DECRYPT", false),
            ("CKA_UNWRAP", false),
            ("CKA_DERIVE", false),
        ]),
        public: table(&[
            ("CKA_TOKEN", true),
            ("CKA_PRIVATE", false),
            ("CKA_MODIFIABLE", false),
            ("CKA_COPYABLE", false),
            ("CKA_VERIFY", true),
            ("CKA_VERIFY_RECOVER", false),
            ("CKA_ENCRYPT", false),
            ("CKA_WRAP", false),
            ("CKA_DERIVE", false),
        ]),
    }
}

#[test]
fn every_key_ca_init_makes_only_signs_and_so_do_the_service_ca_checkpoint_and_witness_keys() {
    let f = fixture("usages", 1);
    let expected = signing_key();
    for label in KeyLabels::default().all() {
        assert_eq!(
            f.hsm.key_attributes(label).expect("attributes"),
            expected,
            "{label}"
        );
    }
    // The service PKI's CA key is made by the same generator (setup.rs).
    f.hsm.generate_key(SERVICE_CA).expect("service CA key");
    assert_eq!(
        f.hsm.key_attributes(SERVICE_CA).expect("attributes"),
        expected
    );
    let (_ledger_token, ledger) = hsm("usages-ledger", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    ledger_key::init(&ledger, LEDGER_CHECKPOINT, &dir.path().join("key.pem")).expect("init");
    assert_eq!(
        ledger
            .key_attributes(LEDGER_CHECKPOINT)
            .expect("attributes"),
        expected
    );
    let (_hub_token, hub) = hsm("usages-hub", 1);
    hub.generate_ed25519_key(WITNESS).expect("witness");
    assert_eq!(hub.key_attributes(WITNESS).expect("attributes"), expected);
    // And a usage cannot be switched on afterwards.
    let ctx = ca_service::hsm::module::load(f.hsm.module_path()).expect("module");
    let slot = cryptoki::slot::Slot::try_from(f.hsm.slot_id()).expect("slot");
    let session = ctx.open_rw_session(slot).expect("session");
    let root = session
        .find_objects(&[
            Attribute::Label(KeyLabels::default().root.into_bytes()),
            Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
        ])
        .expect("find");
    let err = session
        .update_attributes(root[0], &[Attribute::Decrypt(true)])
        .expect_err("a non-modifiable key refuses new usages");
    assert!(
        matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::ActionProhibited, _)
        ),
        "{err}"
    );
}

/// Issue 12 item 10: the OEM seal key that `ca init` makes is an AES-256
/// token secret key that only encrypts and decrypts, sensitive and never
/// extractable; a CA initialised before it existed gets one on open.
#[test]
fn the_seal_key_only_encrypts_and_decrypts_and_never_leaves_the_token() {
    let f = fixture("seal-usages", 1);
    let labels = KeyLabels::default();
    assert_eq!(labels.seal, ca_service::keys::OEM_SEAL);
    let expected = table(&[
        ("CKA_TOKEN", true),
        ("CKA_PRIVATE", true),
        ("CKA_SENSITIVE", true),
        ("CKA_EXTRACTABLE", false),
        ("CKA_ALWAYS_SENSITIVE", true),
        ("CKA_NEVER_EXTRACTABLE", true),
        ("CKA_MODIFIABLE", false),
        ("CKA_COPYABLE", false),
        ("CKA_WRAP", false),
        ("CKA_UNWRAP", false),
        ("CKA_ENCRYPT", true),
        ("CKA_DECRYPT", true),
        ("CKA_SIGN", false),
        ("CKA_VERIFY", false),
        ("CKA_DERIVE", false),
    ]);
    assert_eq!(
        f.hsm
            .secret_key_attributes(&labels.seal)
            .expect("attributes"),
        expected
    );
    // It is not a signing key pair, and it cannot be read out.
    assert!(!f.hsm.key_exists(&labels.seal).expect("exists"));
    let session = open_session(&f.hsm);
    let handle = session
        .find_objects(&[
            Attribute::Label(labels.seal.clone().into_bytes()),
            Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
        ])
        .expect("find")[0];
    let value = session.get_attributes(handle, &[cryptoki::object::AttributeType::Value]);
    assert!(
        !matches!(&value, Ok(attrs) if attrs.iter().any(|a| matches!(a, Attribute::Value(v) if !v.is_empty()))),
        "the seal key's value is readable: {value:?}"
    );
    // A CA from before the seal key: opening it makes one.
    f.hsm.destroy_key(&labels.seal).expect("destroy");
    assert!(!f.hsm.secret_key_exists(&labels.seal).expect("exists"));
    let ca = ca_service::Ca::open(f.hsm.clone(), &f.ca_dir(), &labels).expect("open");
    assert_eq!(
        f.hsm
            .secret_key_attributes(&labels.seal)
            .expect("attributes"),
        expected
    );
    let rot = "cd".repeat(32);
    let oem = ca
        .voucher_signer()
        .expect("single-box CA holds the voucher key")
        .public_key_der()
        .to_vec();
    let header = trustline_proto::voucher::VoucherHeader::new(
        &rot,
        "SN-SEAL",
        trustline_proto::voucher::cert_chain_hash(&[b"device".to_vec()]),
        &oem,
    )
    .expect("header");
    let owner = trustline_proto::signer::SoftwareSigner::generate();
    let payload = trustline_proto::voucher::first_entry_payload(&header, owner.public_key_der())
        .expect("payload");
    let sealed = ca
        .sign_and_seal_voucher_entry(&payload, &rot, 0)
        .expect("seal");
    assert_eq!(
        ca.unseal_voucher_entry(&rot, 0, &sealed.sealed)
            .expect("open"),
        sealed.cose_sign1
    );
    // Two seals of one entry differ (fresh IVs).
    let again = ca
        .sign_and_seal_voucher_entry(&payload, &rot, 0)
        .expect("seal");
    assert_ne!(again.sealed[1..13], sealed.sealed[1..13]);
    let r = ca.unseal_voucher_entry(&rot, 1, &sealed.sealed);
    assert!(matches!(r, Err(Error::SealBroken { .. })), "{r:?}");
}

#[test]
fn the_checkpoint_key_lives_on_a_token_of_its_own() {
    let f = fixture("ledger-split", 1);
    // The CA token holds no checkpoint key any more.
    let err = ledger_key::open(&f.hsm, LEDGER_CHECKPOINT).expect_err("no such key");
    assert!(
        matches!(&err, Error::KeyNotFound { label, class: "private", .. } if label == LEDGER_CHECKPOINT),
        "{err:?}"
    );
    // Nor can one be made there.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ledger").join("ledger-key.pub.pem");
    let err = ledger_key::init(&f.hsm, LEDGER_CHECKPOINT, &file).expect_err("shared token");
    let Error::TokenShared { others, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(others.len(), 4, "{others:?}");
    assert!(!file.exists());
    assert!(!f.hsm.key_exists(LEDGER_CHECKPOINT).expect("exists"));

    // Its own token, its own PIN.
    let (ledger_token, ledger) = hsm("ledger-own", 1);
    assert_ne!(ledger_token.pin_file, f.token.pin_file);
    let report = ledger_key::init(&ledger, LEDGER_CHECKPOINT, &file).expect("init");
    assert_eq!(report.token, ledger_token.label);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        report.public_key_pem
    );
    let signer = ledger_key::open(&ledger, LEDGER_CHECKPOINT).expect("open");
    assert_eq!(signer.public_key_pem(), report.public_key_pem);
    let sig = signer.sign(b"checkpoint").expect("sign");
    verify_signature(signer.public_key_der(), b"checkpoint", &sig).expect("verifies");
    assert!(matches!(
        ledger_key::init(&ledger, LEDGER_CHECKPOINT, &file),
        Err(Error::AlreadyInitialized { .. })
    ));
    // A CA key put on the ledger token makes the ledger refuse it.
    ledger.generate_key("stray-ca-key").expect("generate");
    let err = ledger_key::open(&ledger, LEDGER_CHECKPOINT).expect_err("shared");
    assert!(
        matches!(&err, Error::TokenShared { others, .. } if others == &["stray-ca-key".to_owned()]),
        "{err:?}"
    );
}

#[test]
fn every_hsm_ecdsa_signature_is_low_s() {
    let f = fixture("low-s", 1);
    let signer = f.ca.intermediate_signer();
    // SoftHSM2 returns high-S about half the time: 64 low-S signatures by
    // chance would have probability 2^-64.
    for i in 0u32..64 {
        let message = i.to_be_bytes();
        let der = signer.try_sign(&message).expect("sign");
        let sig = p256::ecdsa::Signature::from_der(&der).expect("der");
        assert!(trustline_proto::ecdsa::is_low_s(&sig), "signature {i}");
        verify_signature(signer.public_key_der(), &message, &der).expect("strict verify");
    }
}

fn open_session(hsm: &Hsm) -> cryptoki::session::Session {
    let ctx = ca_service::hsm::module::load(hsm.module_path()).expect("module");
    let slot = cryptoki::slot::Slot::try_from(hsm.slot_id()).expect("slot");
    // Login is per application: the pool's login covers this session.
    ctx.open_rw_session(slot).expect("session")
}

/// Makes an Edwards key pair with `params` under `label` outside the CA's
/// code, as another tool would.
fn foreign_edwards_key(hsm: &Hsm, label: &str, params: &[u8]) {
    let s = open_session(hsm);
    s.generate_key_pair(
        &Mechanism::EccEdwardsKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::EcParams(params.to_vec()),
            Attribute::Verify(true),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Sign(true),
        ],
    )
    .expect("generate");
}

#[test]
fn hsm_ed25519_signatures_verify_with_ring_and_openssl() {
    let (_token, hub) = hsm("witness", 1);
    let made = hub.generate_ed25519_key(WITNESS).expect("generate");
    let witness = hub.ed25519_signer(WITNESS).expect("open");
    assert_eq!(made.public_key(), witness.public_key());
    let protection = hub.key_protection(WITNESS).expect("protection");
    assert!(protection.sensitive && !protection.extractable && protection.never_extractable);

    let message = b"cosignature/v1\ntime 1700000000\nexample.com/site-1\n42\nAAAA\n";
    let sig = witness.sign(message).expect("sign");
    verify_ed25519(&witness.public_key(), message, &sig).expect("ring verifies");
    assert!(verify_ed25519(&witness.public_key(), b"another", &sig).is_err());

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("witness.pem"), witness.public_key_pem()).expect("write");
    std::fs::write(dir.path().join("msg.bin"), message).expect("write");
    std::fs::write(dir.path().join("sig.bin"), sig).expect("write");
    let verify = [
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "witness.pem",
        "-rawin",
        "-in",
        "msg.bin",
        "-sigfile",
        "sig.bin",
    ];
    let (ok, text) = openssl(dir.path(), &verify);
    assert!(ok, "openssl refused the HSM's Ed25519 signature:\n{text}");
    assert!(text.contains("Signature Verified Successfully"), "{text}");
    let mut bad = sig;
    bad[0] ^= 1;
    std::fs::write(dir.path().join("sig.bin"), bad).expect("write");
    let (ok, text) = openssl(dir.path(), &verify);
    assert!(!ok, "openssl accepted a corrupted signature:\n{text}");

    // A key whose curve is named by the OID 1.3.101.112 works as well.
    foreign_edwards_key(&hub, "oid-named", &[0x06, 0x03, 0x2b, 0x65, 0x70]);
    let by_oid = hub
        .ed25519_signer("oid-named")
        .expect("OID-named Ed25519 key");
    let sig = by_oid.sign(b"m").expect("sign");
    verify_ed25519(&by_oid.public_key(), b"m", &sig).expect("verifies");
}

#[test]
fn a_wrong_curve_or_an_absent_ed25519_key_is_a_clear_error() {
    let (_token, hub) = hsm("witness-errors", 1);
    let err = hub.ed25519_signer(WITNESS).expect_err("absent");
    assert!(
        matches!(&err, Error::KeyNotFound { label, class: "private", .. } if label == WITNESS),
        "{err:?}"
    );
    foreign_edwards_key(&hub, "ed448", &[0x06, 0x03, 0x2b, 0x65, 0x71]);
    let err = hub.ed25519_signer("ed448").expect_err("Ed448");
    let Error::KeyNotEd25519 { found, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(found.contains("edwards448"), "{err}");
    hub.generate_key("p256").expect("P-256 key");
    let err = hub.ed25519_signer("p256").expect_err("P-256");
    assert!(
        matches!(&err, Error::KeyNotEd25519 { found, .. } if found.contains("CKK_EC")),
        "{err:?}"
    );
    hub.generate_ed25519_key(WITNESS).expect("generate");
    assert!(matches!(
        hub.generate_ed25519_key(WITNESS),
        Err(Error::KeyExists { .. })
    ));
}
