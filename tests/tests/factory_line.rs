//! The factory line end to end (issue 4): real gRPC on loopback behind TLS
//! 1.3 with client certificates, a real SoftHSM2 token, real ledger files,
//! `openssl verify` on every chain.
//!
//! Invariants shown here: 1 (nothing released before it is recorded — a
//! refused device gets nothing), 2 (one serial, RoT and device key per live
//! certificate, also when two stations race), 4 (quota, across a restart),
//! 7 (only authentic silicon), and every refusal with its own status.

use std::collections::BTreeSet;

use hsm_sim::rot::{Fleet, SimulatedRot};
use site::setup;
use station::run::{self, Job, Mode, Outcome, RunConfig};
use station::sim::SimLink;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_tests::{count, openssl_verify, station, Stack, SITE};

fn config(order: &str, mode: Mode) -> RunConfig {
    RunConfig {
        order_id: order.into(),
        mode,
        concurrency: 8,
        out_dir: None,
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: run::Protocol::Stream,
    }
}

fn jobs(rots: Vec<SimulatedRot>) -> Vec<Job<SimLink>> {
    rots.into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect()
}

fn take(fleet: Fleet) -> Vec<SimulatedRot> {
    fleet.into_devices().into_iter().map(|d| d.rot).collect()
}

fn provisioned(outcome: &Outcome) -> &run::Provisioned {
    match outcome {
        Outcome::Provisioned(p) => p,
        other => panic!("not provisioned: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_personalisation_modes_certify_and_every_chain_verifies_with_openssl() {
    let fleet = Fleet::builder().seed(11).genuine(8).build().expect("fleet");
    let stack = Stack::start("e2e-modes", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-MODES", SITE, 8))
        .await
        .expect("order");
    let mut rots = take(fleet);
    let hsm_rots = rots.split_off(4);
    let id = station(SITE, "st-01");
    let work = tempfile::tempdir().expect("work");
    for (mode, rots) in [(Mode::OnDevice, rots), (Mode::Hsm, hsm_rots)] {
        let channel = stack.channel(&id).await.expect("channel");
        let (report, links) = run::run(channel, config("PO-MODES", mode), jobs(rots))
            .await
            .expect("run");
        assert_eq!(report.provisioned(), 4, "{mode:?}: {:?}", report.outcomes);
        for (outcome, link) in report.outcomes.iter().zip(&links) {
            let p = provisioned(outcome);
            assert_eq!(p.chain.len(), 3);
            assert!(
                openssl_verify(&stack.root_pem(), &p.chain, work.path()).expect("openssl"),
                "{mode:?} chain"
            );
            assert!(provisioner::label::matches(&p.label, &p.rot_id));
            // The device holds its chain and the voucher it bound.
            assert_eq!(link.rot().certificate_chain(), p.chain.as_slice());
            let expected = match mode {
                Mode::OnDevice => v1::PersonalisationMode::OnDevice,
                Mode::Hsm => v1::PersonalisationMode::Hsm,
            };
            assert_eq!(link.rot().personalisation_mode(), Some(expected));
        }
    }
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(count(&entries, EventKind::Certified), 8);
    assert_eq!(count(&entries, EventKind::Claimed), 8);
    assert_eq!(count(&entries, EventKind::KeyDelivered), 4);
}

/// Claims and personalises a device by hand; returns the certify request.
async fn prepare(
    client: &mut v1::provisioning_client::ProvisioningClient<tonic::transport::Channel>,
    order: &str,
    rot: &mut SimulatedRot,
    serial: &str,
) -> v1::CertifyRequest {
    let begin = client
        .begin_claim(v1::BeginClaimRequest {
            order_id: order.into(),
            attestation: Some(rot.attestation()),
        })
        .await
        .expect("begin claim")
        .into_inner();
    let receipt = rot
        .claim(&begin.nonce, &begin.anchor)
        .expect("device claim");
    client
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(receipt),
            attestation: Some(rot.attestation()),
        })
        .await
        .expect("complete claim");
    let (_, ka) = rot.generate_identity_key(&begin.nonce).expect("keygen");
    let pop = rot.proof_of_possession(serial, &begin.nonce).expect("pop");
    v1::CertifyRequest {
        order_id: order.into(),
        rot_id: begin.rot_id,
        serial: serial.into(),
        key_attestation: Some(ka),
        subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(pop)),
        first_owner_public_key: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_refused_with_already_exists_recorded_and_nothing_issued() {
    let mut fleet = Fleet::builder().seed(12).genuine(6).build().expect("fleet");
    let stack = Stack::start("e2e-dups", &fleet, &[(SITE, "st-01"), (SITE, "st-02")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-DUP", SITE, 100))
        .await
        .expect("order");
    let clone = fleet.key_clone(0).expect("clone");
    let vendor = fleet.vendors()[0].name().to_owned();
    let (twin_a, twin_b) = {
        let v = fleet.vendor_mut(&vendor).expect("vendor");
        let mut a = v.manufacture_weak_entropy(99).expect("twin");
        let mut b = v.manufacture_weak_entropy(99).expect("twin");
        for rot in [&mut a, &mut b] {
            rot.set_firmware(stack.firmware);
            rot.lock_readout();
        }
        (a, b)
    };
    let mut rots = take(fleet);
    let mut client = stack
        .provisioning(&station(SITE, "st-01"))
        .await
        .expect("client");

    // The original, certified.
    let req = prepare(&mut client, "PO-DUP", &mut rots[0], "SN000001").await;
    let first = client
        .certify(req.clone())
        .await
        .expect("certified")
        .into_inner();
    assert!(!first.replayed);
    // A retried Certify returns the same certificate, replayed.
    let again = client.certify(req).await.expect("retry").into_inner();
    assert!(again.replayed);
    assert_eq!(again.certificate_chain, first.certificate_chain);
    assert_eq!(again.voucher, first.voucher);
    assert_eq!(again.ledger_seq, first.ledger_seq);

    // Duplicate serial: another device asks for SN000001.
    let req = prepare(&mut client, "PO-DUP", &mut rots[1], "SN000001").await;
    let err = client.certify(req).await.expect_err("duplicate serial");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&err),
        Some("duplicate-serial")
    );

    // Duplicate rot_id: a clone of the certified die. Its chain alone is
    // answered with a presence challenge; the clone signs it with the
    // attestation key it copied, and that proof is recorded.
    let mut clone = clone;
    let err = client
        .begin_claim(v1::BeginClaimRequest {
            order_id: "PO-DUP".into(),
            attestation: Some(clone.attestation()),
        })
        .await
        .expect_err("clone");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let presence = <v1::ClaimPresenceChallenge as prost::Message>::decode(err.details())
        .expect("a presence challenge in the details");
    let proof = clone
        .claim(&presence.nonce, &presence.anchor)
        .expect("the clone signs");
    let err = client
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(proof),
            attestation: Some(clone.attestation()),
        })
        .await
        .expect_err("a proven clone");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Duplicate device key: two dies with weak entropy make the same key.
    let mut twin_a = twin_a;
    let mut twin_b = twin_b;
    let req = prepare(&mut client, "PO-DUP", &mut twin_a, "SN000010").await;
    client.certify(req).await.expect("first twin");
    let req = prepare(&mut client, "PO-DUP", &mut twin_b, "SN000011").await;
    let err = client.certify(req).await.expect_err("duplicate key");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&err),
        Some("duplicate-device-key")
    );

    // Two stations racing on one serial: exactly one wins.
    let mut a = rots.remove(2);
    let mut b = rots.remove(2);
    let mut client_b = stack
        .provisioning(&station(SITE, "st-02"))
        .await
        .expect("client b");
    let req_a = prepare(&mut client, "PO-DUP", &mut a, "SN000020").await;
    let req_b = prepare(&mut client_b, "PO-DUP", &mut b, "SN000020").await;
    let (ra, rb) = tokio::join!(client.certify(req_a), client_b.certify(req_b));
    let results = [ra, rb];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let loser = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("a loser");
    assert_eq!(loser.code(), Code::AlreadyExists);

    let entries = stack.ledger_entries().await.expect("ledger");
    // serial, clone, key and race: four refusals recorded.
    assert_eq!(count(&entries, EventKind::DuplicateRejected), 4);
    // Original, first twin, race winner: three certificates, no more.
    assert_eq!(count(&entries, EventKind::Certified), 3);
    let certified_serials: BTreeSet<_> = entries
        .iter()
        .filter(|e| e.kind == EventKind::Certified as i32)
        .map(|e| e.serial.clone())
        .collect();
    assert_eq!(certified_serials.len(), 3);
    // Nothing issued to the refused devices.
    assert!(rots[1].certificate_chain().is_empty());
    assert!(twin_b.certificate_chain().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_own_status() {
    let mut fleet = Fleet::builder()
        .seed(13)
        .genuine(3)
        .impostors(1)
        .self_signed(1)
        .unknown_vendor(1)
        .build()
        .expect("fleet");
    let stack = Stack::start("e2e-refusals", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-R", SITE, 10))
        .await
        .expect("order");
    stack
        .open(&stack.order("PO-OTHER-SITE", "site-b", 10))
        .await
        .expect("order b");
    let mut expired = stack.order("PO-EXPIRED", SITE, 10);
    expired.not_before_ms = 1_000;
    expired.not_after_ms = 2_000;
    stack.open(&expired).await.expect("expired order opens");
    let devices = fleet.devices_mut();
    let mut client = stack
        .provisioning(&station(SITE, "st-01"))
        .await
        .expect("client");
    let begin = |order: &str, att: v1::RotAttestation| v1::BeginClaimRequest {
        order_id: order.into(),
        attestation: Some(att),
    };

    // Counterfeits: a self-signed die and a die of an unconfigured CA using
    // a vendor's name are refused at once.
    for d in &devices[4..6] {
        let err = client
            .begin_claim(begin("PO-R", d.rot.attestation()))
            .await
            .expect_err("counterfeit");
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{:?}: {err:?}",
            d.kind
        );
        assert_eq!(
            trustline_proto::refusal::refusal_reason(&err),
            Some("counterfeit")
        );
    }
    // An impostor (a genuine die's chain on another key) cannot sign as
    // the die: its claim receipt gives it away.
    let impostor = &mut devices[3].rot;
    let b = client
        .begin_claim(begin("PO-R", impostor.attestation()))
        .await
        .expect("the chain itself is genuine")
        .into_inner();
    let forged = impostor.claim(&b.nonce, &b.anchor).expect("impostor claim");
    let err = client
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(forged),
            attestation: Some(impostor.attestation()),
        })
        .await
        .expect_err("impostor");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&err),
        Some("counterfeit")
    );
    // Unknown, expired, another site's order.
    let att = devices[0].rot.attestation();
    let err = client
        .begin_claim(begin("PO-NONE", att.clone()))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .begin_claim(begin("PO-EXPIRED", att.clone()))
        .await
        .expect_err("expired");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&err),
        Some("order-window")
    );
    let err = client
        .begin_claim(begin("PO-OTHER-SITE", att.clone()))
        .await
        .expect_err("site");
    assert_eq!(err.code(), Code::PermissionDenied);

    // A claim, then a second claim of the claimed RoT.
    let rot = &mut devices[0].rot;
    let b = client
        .begin_claim(begin("PO-R", rot.attestation()))
        .await
        .expect("begin")
        .into_inner();
    let receipt = rot.claim(&b.nonce, &b.anchor).expect("claim");
    client
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(receipt.clone()),
            attestation: Some(rot.attestation()),
        })
        .await
        .expect("claimed");
    // A second claim of the claimed RoT: refused, and (its chain being
    // public) recorded nowhere.
    let err = client
        .begin_claim(begin("PO-R", rot.attestation()))
        .await
        .expect_err("second claim");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&err),
        Some("already-claimed")
    );

    // A replayed claim receipt: device 1 answers its fresh nonce with
    // device 0's old receipt.
    let replayer = &mut devices[1].rot;
    replayer.replay_claim_receipt(receipt);
    let b = client
        .begin_claim(begin("PO-R", replayer.attestation()))
        .await
        .expect("begin")
        .into_inner();
    let replayed = replayer.claim(&b.nonce, &b.anchor).expect("replays");
    let err = client
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(replayed),
            attestation: Some(replayer.attestation()),
        })
        .await
        .expect_err("replay");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&err),
        Some("nonce-replayed")
    );

    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(count(&entries, EventKind::CounterfeitRejected), 3);
    assert_eq!(count(&entries, EventKind::DuplicateRejected), 0);
    assert_eq!(count(&entries, EventKind::Claimed), 1);
    assert_eq!(count(&entries, EventKind::Certified), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_of_n_certifies_n_devices_even_across_a_restart() {
    let fleet = Fleet::builder().seed(14).genuine(6).build().expect("fleet");
    let mut stack = Stack::start("e2e-quota", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-Q", SITE, 3))
        .await
        .expect("order");
    let mut rots = take(fleet);
    let later = rots.split_off(4);
    let id = station(SITE, "st-01");
    let (report, _) = run::run(
        stack.channel(&id).await.expect("ch"),
        config("PO-Q", Mode::OnDevice),
        jobs(rots),
    )
    .await
    .expect("run");
    assert_eq!(report.provisioned(), 3);
    let refused: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.refusal().is_some())
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].code(), Some(Code::ResourceExhausted));

    stack.restart().await.expect("restart");
    let fresh_serials = RunConfig {
        first_serial: Some(100),
        ..config("PO-Q", Mode::Hsm)
    };
    let (report, _) = run::run(
        stack.channel(&id).await.expect("ch"),
        fresh_serials,
        jobs(later),
    )
    .await
    .expect("run");
    assert_eq!(report.provisioned(), 0, "{:?}", report.outcomes);
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| o.code() == Some(Code::ResourceExhausted)),
        "{:?}",
        report.outcomes
    );
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(count(&entries, EventKind::Certified), 3);
    assert_eq!(count(&entries, EventKind::QuotaRejected), 3);
    let mut status = stack.provisioning(setup::ADMIN).await.expect("admin");
    let s = status
        .get_order(v1::GetOrderRequest {
            order_id: "PO-Q".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!((s.certified, s.remaining), (3, 0));
}

/// Issue 14: the whole line on a ledger in PostgreSQL (`[ledger] database`):
/// certified up to the quota, refused past it across a restart, and the
/// database's ledger verifies offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_runs_on_a_postgresql_ledger_across_a_restart() {
    let cluster = pg_store::cluster::Cluster::start().expect("cluster");
    let url = cluster.create_database("line").await.expect("database");
    let fleet = Fleet::builder().seed(15).genuine(5).build().expect("fleet");
    let db = url.clone();
    let mut stack = Stack::start_with("e2e-postgres", &fleet, &[(SITE, "st-01")], move |_, c| {
        c.ledger.database = db;
        Ok(())
    })
    .await
    .expect("stack");
    stack
        .open(&stack.order("PO-PG", SITE, 3))
        .await
        .expect("order");
    let mut rots = take(fleet);
    let later = rots.split_off(3);
    let id = station(SITE, "st-01");
    let (report, _) = run::run(
        stack.channel(&id).await.expect("ch"),
        config("PO-PG", Mode::OnDevice),
        jobs(rots),
    )
    .await
    .expect("run");
    assert_eq!(report.provisioned(), 3, "{:?}", report.outcomes);
    stack.restart().await.expect("restart");
    let (report, _) = run::run(
        stack.channel(&id).await.expect("ch"),
        RunConfig {
            first_serial: Some(100),
            ..config("PO-PG", Mode::Hsm)
        },
        jobs(later),
    )
    .await
    .expect("run");
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| o.code() == Some(Code::ResourceExhausted)),
        "{:?}",
        report.outcomes
    );
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(count(&entries, EventKind::Certified), 3);
    assert_eq!(count(&entries, EventKind::QuotaRejected), 2);
    stack.stop().await.expect("stop");
    let v = pg_store::records::verify(&url, &Default::default(), &mut |_| {})
        .await
        .expect("verify");
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert_eq!(v.report.entries, entries.len() as u64);
}
