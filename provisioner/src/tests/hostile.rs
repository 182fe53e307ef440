//! What a hostile station tries against the factory, and how a claim
//! survives a hiccup (issue 12 items 1–4, 6 and 9): each test fails on the
//! code before the fix. The same attacks over real gRPC are in
//! `tests/tests/hostile_station.rs`.

use p256::ecdsa::SigningKey;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use trustline_proto::signer::SoftwareSigner;
use trustline_proto::statement;
use trustline_proto::v1::provisioning_server::Provisioning;

use super::*;

/// The presence challenge of an `ALREADY_EXISTS` answer.
fn presence_of(err: Error) -> v1::ClaimPresenceChallenge {
    match err {
        Error::AlreadyClaimed {
            presence: Some(p), ..
        } => *p,
        other => panic!("expected a presence challenge, got {other}"),
    }
}

/// A receipt over `nonce` naming `rot_id`, signed by a key that is not the
/// die's.
fn forged_receipt(rot_id: &str, nonce: &[u8], anchor: &[u8]) -> v1::SignedStatement {
    statement::sign(
        &SoftwareSigner::generate(),
        &v1::ClaimReceipt {
            rot_id: rot_id.into(),
            nonce: nonce.to_vec(),
            anchor_sha256: Sha256::digest(anchor).to_vec(),
        },
    )
    .expect("sign")
}

fn victim_claim_seq(line: &Line, rot_id: &str) -> u64 {
    line.ledger
        .entries_from(0)
        .iter()
        .find(|e| e.kind == EventKind::Claimed as i32 && e.rot_id == rot_id)
        .map(|e| e.seq)
        .expect("claimed")
}

fn count_naming(line: &Line, kind: EventKind, rot_id: &str) -> usize {
    line.ledger
        .entries_from(0)
        .iter()
        .filter(|e| e.kind == kind as i32 && e.rot_id == rot_id)
        .count()
}

/// Issue 12 item 2: the chain of a claimed RoT is public; presenting it —
/// from any station of any site with an order for the same vendor — is
/// answered ALREADY_EXISTS with a presence challenge and records nothing,
/// and neither a replayed nor a forged receipt gets further. Only a die
/// that signs the presence challenge with the attestation key (a clone) is
/// recorded, with its receipt as evidence.
#[tokio::test]
async fn a_replayed_chain_records_nothing_and_only_a_proven_clone_is_recorded() {
    let mut fleet = Fleet::builder().seed(21).genuine(1).build().expect("fleet");
    let mut clone = fleet.key_clone(0).expect("clone");
    let mut line = line("hostile-replay", fleet).await;
    line.open("PO-A", 10).await;
    line.open_at("PO-B", "site-b", 10).await;
    let mut victim = take(&mut line.fleet, 0);
    let input = line
        .prepare("PO-A", &mut victim, "SN000001")
        .await
        .expect("victim claimed");
    let rot_id = input.rot_id.clone();
    let recorded_receipt = victim.claim_receipt().expect("receipt").clone();
    let before = line.ledger.len();

    // The station that claimed it gets its claim back for the same receipt
    // (a retry), recording nothing.
    let (_, seq) = line
        .factory
        .complete_claim(&station(), &recorded_receipt, &victim.attestation())
        .await
        .expect("a retry of the recorded claim");
    assert_eq!(seq, victim_claim_seq(&line, &rot_id));

    let rogue = station_of("site-b", "st-66");
    let neighbour = station_of("site-a", "st-02");
    for actor in [&rogue, &neighbour] {
        let order = if actor.id.contains("site-b") {
            "PO-B"
        } else {
            "PO-A"
        };
        let err = line
            .factory
            .begin_claim(actor, order, &victim.attestation())
            .await
            .expect_err("claimed already");
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        let presence = presence_of(err);
        assert_eq!(presence.rot_id, rot_id);
        // The victim's recorded receipt, replayed.
        let err = line
            .factory
            .complete_claim(actor, &recorded_receipt, &victim.attestation())
            .await
            .expect_err("replayed receipt");
        if actor.id.contains("site-b") {
            assert!(matches!(err, Error::WrongSite { .. }), "{err}");
        } else {
            assert!(matches!(err, Error::NonceReplayed), "{err}");
        }
        // A receipt over the presence challenge not signed by the die.
        let forged = forged_receipt(&rot_id, &presence.nonce, &presence.anchor);
        let err = line
            .factory
            .complete_claim(actor, &forged, &victim.attestation())
            .await
            .expect_err("forged presence receipt");
        assert!(
            matches!(err, Error::AlreadyClaimed { presence: None, .. }),
            "{err}"
        );
    }
    assert_eq!(line.ledger.len(), before, "nothing recorded for a replay");

    // The victim goes on to be certified.
    line.factory
        .certify(&station(), input)
        .await
        .expect("the victim still certifies");

    // A real clone, at the other site: it signs the presence challenge.
    let err = line
        .factory
        .begin_claim(&rogue, "PO-B", &clone.attestation())
        .await
        .expect_err("clone");
    let presence = presence_of(err);
    let proof = clone
        .claim(&presence.nonce, &presence.anchor)
        .expect("the clone holds the key");
    let err = line
        .factory
        .complete_claim(&rogue, &proof, &clone.attestation())
        .await
        .expect_err("clone refused");
    assert_eq!(Status::from(err).code(), tonic::Code::AlreadyExists);
    assert_eq!(
        count_naming(&line, EventKind::DuplicateRejected, &rot_id),
        1
    );
    let dup = line
        .ledger
        .entries_from(0)
        .into_iter()
        .find(|e| e.kind == EventKind::DuplicateRejected as i32)
        .expect("duplicate");
    let payload = v1::RejectedPayload::decode(dup.payload.as_slice()).expect("payload");
    assert_eq!(
        payload.evidence[0],
        proof.encode_to_vec(),
        "the receipt is evidence"
    );
    assert_eq!(dup.site, "site-b");
    assert_eq!(
        count_naming(&line, EventKind::CounterfeitRejected, &rot_id),
        0
    );
}

/// Issue 12 item 2, same-site variant: a key attestation is public (it is
/// in the ledger); a Certify that replays it with a proof of possession the
/// device key did not sign is refused as a bad signature before any lookup,
/// and records nothing. The genuine device asking for a second serial —
/// a request that does prove the key — is still a recorded duplicate.
#[tokio::test]
async fn a_replayed_key_attestation_with_an_unsigned_proof_records_nothing() {
    let fleet = Fleet::builder().seed(22).genuine(1).build().expect("fleet");
    let mut line = line("hostile-pop", fleet).await;
    line.open("PO-P", 10).await;
    let mut rot = take(&mut line.fleet, 0);
    let input = line
        .prepare("PO-P", &mut rot, "SN000001")
        .await
        .expect("prepared");
    line.factory
        .certify(&station(), input.clone())
        .await
        .expect("certified");
    let before = line.ledger.len();

    let ka: v1::KeyAttestation = statement::decode_unverified(&input.key_attestation).expect("ka");
    let pop = v1::ProofOfPossession {
        rot_id: input.rot_id.clone(),
        serial: "SN000002".into(),
        device_public_key: ka.device_public_key.clone(),
        challenge: ka.challenge.clone(),
    };
    let unsigned = v1::SignedStatement {
        body: pop.encode_to_vec(),
        signature: vec![],
    };
    let wrong_key = statement::sign(&SoftwareSigner::generate(), &pop).expect("sign");
    for proof in [unsigned, wrong_key] {
        let err = line
            .factory
            .certify(
                &station(),
                CertifyInput {
                    serial: "SN000002".into(),
                    subject: SubjectKey::Proof(proof),
                    ..input.clone()
                },
            )
            .await
            .expect_err("unsigned proof");
        assert!(matches!(err, Error::BadSignature(_)), "{err}");
        assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
    }
    // A CSR that is not the device's either.
    let err = line
        .factory
        .certify(
            &station(),
            CertifyInput {
                serial: "SN000002".into(),
                subject: SubjectKey::Csr(vec![0x30, 0x03, 0x02, 0x01, 0x00]),
                ..input.clone()
            },
        )
        .await
        .expect_err("bad csr");
    assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
    assert_eq!(line.ledger.len(), before, "nothing recorded");

    let signed = rot
        .proof_of_possession("SN000002", &ka.challenge)
        .expect("pop");
    let err = line
        .factory
        .certify(
            &station(),
            CertifyInput {
                serial: "SN000002".into(),
                subject: SubjectKey::Proof(signed),
                ..input
            },
        )
        .await
        .expect_err("second serial");
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
    assert_eq!(line.ledger.count(EventKind::DuplicateRejected), 1);
}

/// Issue 12 item 9: the nonce is spent only by the durable CLAIMED record.
/// A ledger outage during CompleteClaim, a lost response (the same receipt
/// sent again) and a provisioner restart between the device's receipt and
/// CompleteClaim all end in one CLAIMED entry; a restart with another
/// claim key cannot complete the claim.
#[tokio::test]
async fn a_claim_survives_a_ledger_outage_a_lost_response_and_a_restart() {
    let fleet = Fleet::builder().seed(23).genuine(2).build().expect("fleet");
    let mut line = line("hostile-hiccups", fleet).await;
    line.open("PO-H", 10).await;
    let mut first = take(&mut line.fleet, 0);
    let mut second = take(&mut line.fleet, 1);

    let c = line
        .factory
        .begin_claim(&station(), "PO-H", &first.attestation())
        .await
        .expect("begin");
    let receipt = first.claim(&c.nonce, &c.anchor).expect("receipt");
    line.ledger.set_down(true);
    let err = line
        .factory
        .complete_claim(&station(), &receipt, &first.attestation())
        .await
        .expect_err("ledger down");
    assert_eq!(Status::from(err).code(), tonic::Code::Unavailable);
    line.ledger.set_down(false);
    let (rot_id, seq) = line
        .factory
        .complete_claim(&station(), &receipt, &first.attestation())
        .await
        .expect("the retry claims");
    let again = line
        .factory
        .complete_claim(&station(), &receipt, &first.attestation())
        .await
        .expect("a lost response, sent again");
    assert_eq!(again, (rot_id.clone(), seq));
    line.restart().await;
    let after_restart = line
        .factory
        .complete_claim(&station(), &receipt, &first.attestation())
        .await
        .expect("and again after a restart");
    assert_eq!(after_restart.1, seq);

    // A restart between the receipt and CompleteClaim.
    let c = line
        .factory
        .begin_claim(&station(), "PO-H", &second.attestation())
        .await
        .expect("begin");
    let receipt = second.claim(&c.nonce, &c.anchor).expect("receipt");
    let config = line.config.clone();
    line.config.claim_key = ClaimKey::ephemeral().expect("key");
    line.restart().await;
    let err = line
        .factory
        .complete_claim(&station(), &receipt, &second.attestation())
        .await
        .expect_err("another site key");
    assert!(matches!(err, Error::NonceReplayed), "{err}");
    line.config = config;
    line.restart().await;
    line.factory
        .complete_claim(&station(), &receipt, &second.attestation())
        .await
        .expect("the site's key survives the restart");
    assert_eq!(line.ledger.count(EventKind::Claimed), 2);
    assert_eq!(line.ledger.count(EventKind::DuplicateRejected), 0);
}

/// Issue 12 item 4: claim nonces hold no server state, so one caller's
/// flood of BeginClaim spends no capacity another caller needs (before,
/// every caller shared one map of pending claims that answered `busy` when
/// full), and an early nonce still completes after the flood.
#[tokio::test]
async fn one_callers_flood_of_begin_claim_does_not_make_another_caller_busy() {
    let fleet = Fleet::builder().seed(24).genuine(2).build().expect("fleet");
    let mut line = line("hostile-flood", fleet).await;
    line.open("PO-A", 10).await;
    line.open_at("PO-B", "site-b", 10).await;
    let mut own = take(&mut line.fleet, 0);
    let mut other = take(&mut line.fleet, 1);
    let flooder = station();
    let early = line
        .factory
        .begin_claim(&flooder, "PO-A", &own.attestation())
        .await
        .expect("begin");
    for _ in 0..300 {
        line.factory
            .begin_claim(&flooder, "PO-A", &own.attestation())
            .await
            .expect("no capacity to run out of");
    }
    line.claim(&station_of("site-b", "st-02"), "PO-B", &mut other)
        .await
        .expect("another caller is unaffected");
    let receipt = own.claim(&early.nonce, &early.anchor).expect("receipt");
    line.factory
        .complete_claim(&flooder, &receipt, &own.attestation())
        .await
        .expect("the early nonce still completes");
    assert_eq!(line.ledger.count(EventKind::Claimed), 2);
}

/// Issue 12 item 4: the caller's site is checked before any refusal is
/// recorded. A station of site B presenting a forged receipt for a claim
/// begun under a site-A order records nothing (before, the forged-receipt
/// branch recorded COUNTERFEIT_REJECTED first); site A's own station still
/// gets the impostor recorded.
#[tokio::test]
async fn a_forged_receipt_from_another_sites_station_records_nothing() {
    let mut fleet = Fleet::builder().seed(25).genuine(1).build().expect("fleet");
    let mut impostor = fleet.impostor(0).expect("impostor");
    let line = line("hostile-site", fleet).await;
    line.open("PO-A", 10).await;
    let c = line
        .factory
        .begin_claim(&station(), "PO-A", &impostor.attestation())
        .await
        .expect("the chain itself is genuine");
    let forged = impostor.claim(&c.nonce, &c.anchor).expect("impostor signs");
    let before = line.ledger.len();
    let err = line
        .factory
        .complete_claim(
            &station_of("site-b", "st-01"),
            &forged,
            &impostor.attestation(),
        )
        .await
        .expect_err("another site");
    assert!(matches!(err, Error::WrongSite { .. }), "{err}");
    assert_eq!(line.ledger.len(), before, "nothing recorded");
    let err = line
        .factory
        .complete_claim(&station(), &forged, &impostor.attestation())
        .await
        .expect_err("impostor");
    assert!(matches!(err, Error::Counterfeit(_)), "{err}");
    assert_eq!(line.ledger.count(EventKind::CounterfeitRejected), 1);
}

/// Issue 12 item 3: factory custody ends when the device's field life
/// begins (the ownership service's first `device-field` key): no station
/// ships, receives or scraps it afterwards.
#[tokio::test]
async fn custody_ends_once_the_device_has_a_field_event() {
    let fleet = Fleet::builder().seed(26).genuine(1).build().expect("fleet");
    let mut line = line("hostile-custody", fleet).await;
    line.open("PO-C", 10).await;
    let mut rot = take(&mut line.fleet, 0);
    let input = line
        .prepare("PO-C", &mut rot, "SN000001")
        .await
        .expect("prepared");
    let rot_id = input.rot_id.clone();
    line.factory
        .certify(&station(), input)
        .await
        .expect("certified");
    line.factory
        .record_custody(&station(), &rot_id, CustodyKind::Shipped, "to the hub")
        .await
        .expect("shipped while in the factory's custody");
    // The OEM transfers it: the ownership service records its first field
    // event.
    line.ledger
        .append(append_request(
            v1::EntryDraft {
                kind: EventKind::OwnershipTransferred as i32,
                rot_id: rot_id.clone(),
                ..Default::default()
            },
            vec![keys::unique(
                keys::DEVICE_FIELD,
                format!("{rot_id}/0").into_bytes(),
            )],
            None,
        ))
        .await
        .expect("transfer recorded");
    let before = line.ledger.len();
    for (actor, kind) in [
        (station(), CustodyKind::Scrapped),
        (station(), CustodyKind::Shipped),
        (station_of("site-b", "st-01"), CustodyKind::Received),
    ] {
        let err = line
            .factory
            .record_custody(&actor, &rot_id, kind, "")
            .await
            .expect_err("left the factory");
        assert!(matches!(err, Error::LeftFactory(_)), "{kind:?}: {err}");
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            trustline_proto::refusal::refusal_reason(&status),
            Some("left-factory")
        );
    }
    assert_eq!(line.ledger.len(), before);
}

/// Issue 12 item 1: a station that names a first owner at Certify is
/// refused PERMISSION_DENIED (`first-owner`) at the service edge, before
/// anything is looked up, signed or recorded.
#[tokio::test]
async fn a_station_naming_a_first_owner_is_refused_before_anything_happens() {
    let fleet = Fleet::builder().seed(27).genuine(1).build().expect("fleet");
    let mut line = line("hostile-owner", fleet).await;
    line.open("PO-O", 10).await;
    let mut rot = take(&mut line.fleet, 0);
    let input = line
        .prepare("PO-O", &mut rot, "SN000001")
        .await
        .expect("prepared");
    let service = service::ProvisioningService::new(Arc::new(
        Factory::start(line.config.clone(), line.ledger.clone(), line.ca.clone())
            .await
            .expect("factory"),
    ));
    let SubjectKey::Proof(pop) = input.subject.clone() else {
        panic!("a proof")
    };
    let request = |owner: Vec<u8>| {
        transport::internal_request(
            v1::CertifyRequest {
                order_id: input.order_id.clone(),
                rot_id: input.rot_id.clone(),
                serial: input.serial.clone(),
                key_attestation: Some(input.key_attestation.clone()),
                subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(
                    pop.clone(),
                )),
                first_owner_public_key: owner,
            },
            &transport::Caller::new(transport::Role::Station, "site-a", "st-01").expect("caller"),
            "/trustline.v1.Provisioning/Certify",
        )
        .expect("authorized")
    };
    let before = line.ledger.len();
    let status = service
        .certify(request(
            SoftwareSigner::generate().public_key_der().to_vec(),
        ))
        .await
        .expect_err("a station names no owner");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&status),
        Some("first-owner")
    );
    assert_eq!(line.ledger.len(), before, "nothing recorded");
    let certified = service
        .certify(request(vec![]))
        .await
        .expect("certified without one")
        .into_inner();
    let voucher = trustline_proto::voucher::Voucher::decode(&certified.voucher).expect("voucher");
    assert!(voucher.is_empty(), "no entry signed at the factory");
}

// ------------------------------------------------------------ two point forms

/// An IC vendor of the test's own (rcgen), so that the test holds its dies'
/// attestation keys and can write a key attestation naming the same device
/// key in its compressed form.
struct TwinVendor {
    params: CertificateParams,
    key: KeyPair,
    root: VendorRoot,
}

fn twin_vendor() -> TwinVendor {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "Twin Silicon root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params.self_signed(&key).expect("root").der().to_vec();
    TwinVendor {
        params,
        key,
        root: VendorRoot {
            name: "twin".into(),
            certificate: root,
        },
    }
}

fn scalar(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 32]).expect("scalar")
}

/// A die of `vendor` with attestation key `attestation` whose on-device key
/// generation yields `identity`.
fn twin_die(
    vendor: &TwinVendor,
    attestation: &SigningKey,
    identity: &SigningKey,
    firmware: [u8; 32],
) -> SimulatedRot {
    use p256::pkcs8::EncodePrivateKey;
    let pkcs8 = attestation.to_pkcs8_der().expect("pkcs8");
    let die_key = KeyPair::try_from(pkcs8.as_bytes()).expect("die key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "twin RoT attestation key");
    params.is_ca = IsCa::ExplicitNoCa;
    let issuer = Issuer::from_params(&vendor.params, &vendor.key);
    let cert = params.signed_by(&die_key, &issuer).expect("die cert");
    let mut rot = SimulatedRot::from_fixed(hsm_sim::rot::FixedDie {
        vendor: "twin".into(),
        chip_serial: "TW-1".into(),
        attestation_key: attestation.clone(),
        chain: vec![cert.der().to_vec()],
        transport_key: p256::SecretKey::from_slice(&[9; 32]).expect("transport"),
        on_device_identity_key: identity.clone(),
        firmware_sha256: firmware,
        fdo_hmac_secret: [0; 32],
    })
    .expect("die");
    rot.lock_readout();
    rot
}

/// The same P-256 key with a compressed point (RFC 5480 allows both).
fn compressed_spki(key: &SigningKey) -> Vec<u8> {
    let mut spki =
        hex::decode("3039301306072a8648ce3d020106082a8648ce3d030107032200").expect("hex");
    spki.extend_from_slice(key.verifying_key().to_encoded_point(true).as_bytes());
    spki
}

/// Issue 12 "canonical keys": uniqueness keys hash the canonical SPKI, so
/// one device key presented uncompressed by one die and compressed by its
/// weak-entropy twin is one key: the second Certify is ALREADY_EXISTS.
#[tokio::test]
async fn one_device_key_in_two_point_forms_is_one_key() {
    let fleet = Fleet::builder().seed(28).genuine(1).build().expect("fleet");
    let vendor = twin_vendor();
    let firmware = fleet.firmware_sha256();
    let line = line_with("hostile-points", fleet, vec![vendor.root.clone()]).await;
    line.open("PO-T", 10).await;
    let identity = scalar(3);
    let (att_a, att_b) = (scalar(1), scalar(2));
    let mut a = twin_die(&vendor, &att_a, &identity, firmware);
    let mut b = twin_die(&vendor, &att_b, &identity, firmware);

    let input = line
        .prepare("PO-T", &mut a, "SN000001")
        .await
        .expect("twin a");
    line.factory
        .certify(&station(), input)
        .await
        .expect("twin a certified");

    let c = line
        .claim(&station(), "PO-T", &mut b)
        .await
        .expect("claimed");
    let short = compressed_spki(&identity);
    let ka = statement::sign(
        &SoftwareSigner::from_key(att_b),
        &v1::KeyAttestation {
            rot_id: c.rot_id.clone(),
            device_public_key: short.clone(),
            challenge: c.nonce.clone(),
            firmware_sha256: firmware.to_vec(),
            readout_locked: true,
            anchor_sha256: Sha256::digest(&c.anchor).to_vec(),
            mode: v1::PersonalisationMode::OnDevice as i32,
        },
    )
    .expect("ka");
    let pop = statement::sign(
        &SoftwareSigner::from_key(identity),
        &v1::ProofOfPossession {
            rot_id: c.rot_id.clone(),
            serial: "SN000002".into(),
            device_public_key: short,
            challenge: c.nonce.clone(),
        },
    )
    .expect("pop");
    let err = line
        .factory
        .certify(
            &station(),
            CertifyInput {
                order_id: "PO-T".into(),
                rot_id: c.rot_id,
                serial: "SN000002".into(),
                key_attestation: ka,
                subject: SubjectKey::Proof(pop),
            },
        )
        .await
        .expect_err("the same key, compressed");
    assert!(
        matches!(&err, Error::Duplicate { namespace, .. } if namespace == "device-key"),
        "{err}"
    );
    assert_eq!(Status::from(err).code(), tonic::Code::AlreadyExists);
    assert_eq!(line.ledger.count(EventKind::Certified), 1);
}
