//! The test vectors in `docs/device-protocol.md` match the code: every
//! fenced `test-vectors` block is parsed, every value is recomputed from the
//! document's `input.*` values with the real code paths (a fixed-key die
//! behind `DeviceSession`, proto's statements and vouchers, key delivery),
//! and every documented signature verifies with the verifiers the services
//! use. Then the reference device (`reference-device/`, written from the
//! document alone) runs its self-test against the same vectors. The FDO
//! voucher of §12.9 is checked with the FDO codec.

#[path = "support/vectors.rs"]
mod vectors;

use std::path::PathBuf;
use std::process::Command;

use trustline_proto::fdo::FdoVoucher;
use trustline_proto::statement::{verify, Statement};
use trustline_proto::v1;
use trustline_proto::voucher::Voucher;
use vectors::{Inputs, Val};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn document() -> std::collections::BTreeMap<String, Val> {
    let path = repo().join("docs/device-protocol.md");
    let doc = std::fs::read_to_string(&path).expect("docs/device-protocol.md");
    vectors::parse_document(&doc)
}

#[test]
fn every_documented_vector_is_what_the_code_computes() {
    let doc = document();
    let inputs = Inputs(
        doc.iter()
            .filter(|(k, _)| k.starts_with("input."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let computed = vectors::compute(&inputs).flat();
    let missing: Vec<_> = computed.keys().filter(|k| !doc.contains_key(*k)).collect();
    let stale: Vec<_> = doc.keys().filter(|k| !computed.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "not in the document: {missing:?}; no longer computed: {stale:?} \
         (regenerate with `cargo run -p hsm-sim --example device-protocol-vectors`)"
    );
    for (name, value) in &computed {
        assert_eq!(
            &doc[name], value,
            "{name} differs from the code (regenerate with `cargo run -p hsm-sim --example device-protocol-vectors`)"
        );
    }
}

fn check<S: Statement>(
    doc: &std::collections::BTreeMap<String, Val>,
    prefix: &str,
    key: &str,
) -> S {
    let signed = v1::SignedStatement {
        body: doc[&format!("{prefix}.body")].bytes().to_vec(),
        signature: doc[&format!("{prefix}.signature")].bytes().to_vec(),
    };
    // Low S (s ≤ n/2), as the document promises.
    let sig = p256::ecdsa::Signature::from_der(&signed.signature).expect("DER signature");
    assert!(
        sig.normalize_s().is_none(),
        "{prefix} signature is not low-S"
    );
    verify::<S>(&signed, doc[key].bytes()).unwrap_or_else(|e| panic!("{prefix}: {e}"))
}

#[test]
fn every_documented_signature_verifies_with_the_services_verifiers() {
    let doc = document();
    let rot_id = String::from_utf8(doc["rot-id"].bytes().to_vec()).expect("text");
    let t: v1::TransportKeyStatement = check(&doc, "transport-key", "attestation.spki");
    assert_eq!(t.rot_id, rot_id);
    let r: v1::ClaimReceipt = check(&doc, "claim-receipt", "attestation.spki");
    assert_eq!(r.nonce, doc["input.nonce"].bytes());
    let a: v1::KeyAttestation = check(&doc, "key-attestation-on-device", "attestation.spki");
    assert_eq!(a.device_public_key, doc["identity-on-device.spki"].bytes());
    let h: v1::KeyAttestation = check(&doc, "key-attestation-hsm", "attestation.spki");
    assert_eq!(h.device_public_key, doc["identity-hsm.spki"].bytes());
    let _: v1::ProofOfPossession = check(&doc, "proof-of-possession", "identity-on-device.spki");
    let _: v1::IdentityProof = check(&doc, "identity-proof", "identity-on-device.spki");
    let u: v1::ResetProof = check(&doc, "reset-proof-user-reset", "identity-on-device.spki");
    let d: v1::ResetProof = check(&doc, "reset-proof-decommission", "identity-on-device.spki");
    assert!(d.reset_counter > u.reset_counter);

    let bound = Voucher::decode(doc["voucher.bound"].bytes()).expect("bound voucher decodes");
    bound
        .verify(doc["manufacturer.spki"].bytes())
        .expect("entry 0 verifies under the manufacturer key");
    bound
        .verify_device_binding(
            &[doc["input.device-certificate"].bytes()],
            doc["identity-on-device.spki"].bytes(),
        )
        .expect("the device binding verifies");

    // The FDO voucher built from the device's HMAC verifies as FDO, its HMAC
    // with the die's secret, and it carries the Trustline entry 0.
    let fdo = FdoVoucher::decode(doc["fdo.voucher"].bytes()).expect("fdo voucher decodes");
    let verified = fdo
        .verify(doc["manufacturer.spki"].bytes())
        .expect("fdo entry 0 verifies under the manufacturer key");
    fdo.verify_header_hmac(doc["input.fdo-hmac-secret"].bytes())
        .expect("the header hmac verifies with the device secret");
    assert_eq!(fdo.header_bytes(), doc["fdo.ov-header"].bytes());
    assert_eq!(
        verified.entries[0].trustline_entry(),
        Some(doc["voucher.entry0"].bytes())
    );
    assert_eq!(
        verified.current_owner,
        doc["first-owner.spki"].bytes().to_vec()
    );
    let view = fdo
        .to_trustline(
            &rot_id,
            std::str::from_utf8(doc["input.serial"].bytes()).expect("text"),
            bound.device_binding(),
        )
        .expect("back to trustline");
    assert_eq!(view.voucher.encode(), doc["voucher.bound"].bytes());
}

#[test]
fn the_reference_device_passes_its_self_test_against_the_document() {
    let selftest = repo().join("reference-device/selftest.py");
    let out = Command::new("python3")
        .arg(&selftest)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 {} ({e}): run scripts/install-deps.sh",
                selftest.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "reference device self-test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
}
