//! The witness (issue 13.1, 2.4.14.6, 2.4.14.22): cosignatures verify with
//! the site key and the witness key in an independent verifier; the hub
//! refuses rewritten, truncated and forked histories, also after a restart,
//! and says which size and root it holds.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{hub, sync, Oem, Site, WitnessKey, WITNESS};
use custody_ledger::merkle::empty_root;
use hub::model::ForkKind;
use hub::Error;
use trustline_proto::signer::{Signer, SoftwareSigner};

#[test]
fn a_cosigned_checkpoint_verifies_with_the_site_key_and_the_witness_key_independently() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open("site-a", &dir.path().join("a"));
    let oem = Oem::new();
    site.open_order(oem.order("PO-1", "site-a", 10, &[]), "PO-1");
    site.certify_many("a", 4, "PO-1", 10);
    let cp = site.checkpoint();
    let key = WitnessKey::new();
    let hub = hub(&dir.path().join("hub"), &key, &[site.config()], None);
    let c = sync(&hub, &site, &cp).unwrap();
    assert_eq!(c.cosigned_note, format!("{}{}", cp.note, c.signature_lines));
    assert!(c
        .signature_lines
        .starts_with(&format!("\u{2014} {WITNESS} ")));
    assert!(c.signature_lines.ends_with('\n') && c.signature_lines.lines().count() == 1);

    // Our own verifiers agree…
    custody_ledger::checkpoint::open(&c.cosigned_note, site.signer.public_key_der(), None).unwrap();
    let w = key.cosigner();
    assert_eq!(
        hub::cosign::verify_cosignature(&c.cosigned_note, WITNESS, &w.public_key()).unwrap(),
        c.timestamp
    );
    // …and so does one written from the specifications in Python.
    let case = serde_json::json!({
        "note": c.cosigned_note,
        "site_spki_hex": hex::encode(site.signer.public_key_der()),
        "witness_name": WITNESS,
        "witness_key_hex": hex::encode(w.public_key()),
        "entries_hex": site.entries(0, cp.size).iter().map(hex::encode).collect::<Vec<_>>(),
    });
    let python = |case: &serde_json::Value| {
        let path = dir.path().join("case.json");
        std::fs::write(&path, case.to_string()).unwrap();
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/verify_cosigned.py"
            ))
            .arg(&path)
            .output()
            .expect("python3 must be installed (scripts/install-deps.sh)")
    };
    let out = python(&case);
    assert_ne!(
        out.status.code(),
        Some(3),
        "python3 lacks the cryptography package: run scripts/install-deps.sh"
    );
    assert!(
        out.status.success(),
        "independent verifier refused the cosigned note: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The independent verifier is not a rubber stamp: a changed timestamp
    // byte, a changed entry and another witness key are each refused.
    let mut forged = case.clone();
    let line = c.signature_lines.trim_end();
    let (prefix, b64) = line.rsplit_once(' ').unwrap();
    let mut blob = base64_decode(b64);
    blob[11] ^= 1;
    forged["note"] = serde_json::json!(format!("{}{prefix} {}\n", cp.note, base64_encode(&blob)));
    assert_eq!(python(&forged).status.code(), Some(1));
    let mut forged = case.clone();
    forged["entries_hex"][0] = serde_json::json!("00");
    assert_eq!(python(&forged).status.code(), Some(1));
    let mut forged = case;
    forged["witness_key_hex"] = serde_json::json!(hex::encode([7u8; 32]));
    assert_eq!(python(&forged).status.code(), Some(1));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn the_hub_refuses_rewritten_truncated_and_forked_histories_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = WitnessKey::new();
    let oem = Oem::new();
    let signer = Arc::new(SoftwareSigner::generate());
    let genuine = Site::open_with("site-a", &dir.path().join("genuine"), signer.clone());
    genuine.open_order(oem.order("PO-1", "site-a", 100, &[]), "PO-1");
    genuine.certify_many("g", 2, "PO-1", 100);
    let small = genuine.checkpoint(); // size 3
    genuine.certify_many("h", 2, "PO-1", 100);
    let cosigned = genuine.checkpoint(); // size 5
    let hub_dir = dir.path().join("hub");
    let hub1 = hub(&hub_dir, &key, &[genuine.config()], None);
    sync(&hub1, &genuine, &cosigned).unwrap();
    let held_root = cosigned.root;

    // A compromised site host rebuilds its history with the genuine key.
    let forged = Site::open_with("site-a", &dir.path().join("forged"), signer);
    forged.open_order(oem.order("PO-1", "site-a", 100, &[]), "PO-1");
    forged.certify_many("f", 4, "PO-1", 100);
    let forged_cp5 = forged.checkpoint();
    forged.certify_many("f2", 3, "PO-1", 100);
    let forged_cp8 = forged.checkpoint();

    let check = |hub: &hub::Hub, after_restart: bool| {
        // Rewritten entries: refused, recorded, the hub says what it holds.
        match hub.push_entries("site-a", 0, forged.entries(0, 8)) {
            Err(Error::Fork { kind, state, .. }) => {
                assert_eq!(kind, ForkKind::RewrittenEntry);
                assert_eq!((state.mirror_size, state.cosigned_size()), (5, 5));
                assert_eq!(state.cosigned.as_ref().unwrap().root, held_root);
            }
            other => panic!("rewritten history accepted: {other:?}"),
        }
        // A forked checkpoint of the size it cosigned: refused as a fork.
        match hub.add_checkpoint(5, &[], &forged_cp5.note) {
            Err(Error::Fork { kind, state, .. }) => {
                assert_eq!(kind, ForkKind::ConflictingCheckpoint);
                assert_eq!(state.cosigned.as_ref().unwrap().root, held_root);
            }
            other => panic!("forked checkpoint cosigned: {other:?}"),
        }
        // A forked, longer checkpoint: its proof cannot reach the held root.
        let proof = forged.proof(5, 8);
        assert!(
            matches!(
                hub.add_checkpoint(5, &proof, &forged_cp8.note),
                Err(Error::BadProof(_))
            ),
            "forked extension cosigned"
        );
        // Truncation: an older, smaller checkpoint is not cosigned again.
        match hub.add_checkpoint(0, &[], &small.note) {
            Err(Error::OldSizeMismatch { offered, state }) => {
                assert_eq!(offered, 0);
                assert_eq!(state.cosigned_size(), 5);
                assert_eq!(state.cosigned.as_ref().unwrap().root, held_root);
            }
            other => panic!("truncated history cosigned: {other:?}"),
        }
        assert!(matches!(
            hub.add_checkpoint(5, &[], &small.note),
            Err(Error::InvalidArgument(_))
        ));
        let state = hub.status("site-a").unwrap();
        assert_eq!(state.cosigned_size(), 5);
        assert_eq!(state.forks, 2, "after restart: {after_restart}");
        assert_eq!(state.mirror_root, held_root);
    };
    check(&hub1, false);
    let forks_before = hub1.forks(Some("site-a")).unwrap();
    assert_eq!(forks_before.len(), 2);
    let rewritten = &forks_before[0];
    assert_eq!(rewritten.position, 0, "the first differing entry");
    assert_eq!(rewritten.held_entry, genuine.entries(0, 1)[0]);
    assert_eq!(rewritten.offered_entry, forged.entries(0, 1)[0]);
    let conflict = &forks_before[1];
    assert_eq!(conflict.held_hash, held_root);
    assert_eq!(conflict.offered_hash, forged_cp5.root);
    assert!(conflict.held_note.starts_with(&cosigned.note));
    assert_eq!(conflict.offered_note, forged_cp5.note);
    drop(hub1);

    // After a restart the hub holds the same line, and the same forks
    // offered again are counted, not recorded twice.
    let hub2 = hub(&hub_dir, &key, &[genuine.config()], None);
    check(&hub2, true);
    let forks_after = hub2.forks(None).unwrap();
    assert_eq!(forks_after.len(), 2);
    assert_eq!(forks_after[0].repeats, 1);
    // The genuine site goes on being cosigned.
    genuine.certify_many("i", 2, "PO-1", 100);
    let next = genuine.checkpoint();
    let c = sync(&hub2, &genuine, &next).unwrap();
    assert_eq!(c.size, 7);
}

#[test]
fn each_witness_refusal_follows_tlog_witness() {
    let dir = tempfile::tempdir().unwrap();
    let key = WitnessKey::new();
    let site = Site::open("site-a", &dir.path().join("a"));
    let other = Site::open("site-b", &dir.path().join("b"));
    let hub = hub(&dir.path().join("hub"), &key, &[site.config()], None);
    let oem = Oem::new();
    site.open_order(oem.order("PO-1", "site-a", 10, &[]), "PO-1");
    site.certify_many("a", 3, "PO-1", 10);
    let cp4 = site.checkpoint();

    // 404: an origin the hub does not witness.
    other.certify_many("b", 1, "PO-9", 10);
    let foreign = other.checkpoint();
    assert!(matches!(
        hub.add_checkpoint(0, &[], &foreign.note),
        Err(Error::UnknownOrigin(_))
    ));
    // 403: the right origin signed by another key.
    let impostor = Site::open_with(
        "site-a",
        &dir.path().join("impostor"),
        Arc::new(SoftwareSigner::generate()),
    );
    impostor.certify_many("x", 1, "PO-1", 10);
    let forged = impostor.checkpoint();
    assert!(matches!(
        hub.add_checkpoint(0, &[], &forged.note),
        Err(Error::BadSignature(_))
    ));
    // 400: malformed notes and proofs.
    for bad in ["", "site-a.example/ledger\n01\nAA==\n\n", "no blank line\n"] {
        assert!(matches!(
            hub.add_checkpoint(0, &[], bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        hub.add_checkpoint(1, &vec![vec![0u8; 32]; 64], &cp4.note),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        hub.add_checkpoint(0, &[vec![0u8; 32]], &cp4.note),
        Err(Error::InvalidArgument(_))
    ));
    // Beyond the mirror: push first, then it is cosigned.
    match hub.add_checkpoint(0, &[], &cp4.note) {
        Err(Error::Behind { state, .. }) => assert_eq!(state.mirror_size, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(hub.status("site-a").unwrap().mirror_root, empty_root());
    let first = sync(&hub, &site, &cp4).unwrap();
    // The same checkpoint again is cosigned again (old size = its size).
    let again = hub.add_checkpoint(4, &[], &cp4.note).unwrap();
    assert!(again.timestamp >= first.timestamp);
    // 409: a stale old size, with the held size and root.
    site.certify_many("b", 2, "PO-1", 10);
    let cp6 = site.checkpoint();
    let push = hub.push_entries("site-a", 4, site.entries(4, 6)).unwrap();
    assert_eq!(push.mirror_size, 6);
    match hub.add_checkpoint(0, &[], &cp6.note) {
        Err(Error::OldSizeMismatch { state, .. }) => {
            assert_eq!(state.cosigned_size(), 4);
            assert_eq!(state.cosigned.unwrap().root, cp4.root);
        }
        other => panic!("{other:?}"),
    }
    // 422: a proof that does not verify (nothing recorded).
    let mut proof = site.proof(4, 6);
    proof[0][0] ^= 1;
    assert!(matches!(
        hub.add_checkpoint(4, &proof, &cp6.note),
        Err(Error::BadProof(_))
    ));
    assert_eq!(hub.status("site-a").unwrap().forks, 0);
    let c = hub.add_checkpoint(4, &site.proof(4, 6), &cp6.note).unwrap();
    assert_eq!(c.size, 6);
}
