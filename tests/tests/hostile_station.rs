//! A hostile station against the factory, end to end (issue 12 items 1–4
//! and 9): real gRPC on loopback behind TLS 1.3 with client certificates of
//! two sites, a real SoftHSM2 token, real ledger files. Each test fails on
//! the code before the fix:
//!
//! - a station cannot name a device's first owner (item 1);
//! - a station of another site replaying a fielded device's public chain
//!   records nothing against it, and the device still onboards; a real
//!   clone is still recorded (item 2);
//! - a replayed key attestation with an unsigned proof of possession
//!   records nothing (item 2, same site);
//! - a device that left the factory cannot be scrapped, shipped or
//!   received by a station (item 3);
//! - another site's station presenting a forged receipt records nothing,
//!   and one caller's flood of claims does not make another caller busy
//!   (item 4);
//! - a claim survives a provisioner restart between the device's receipt
//!   and `CompleteClaim`, and a lost response (item 9).

use hsm_sim::rot::{Fleet, SimulatedRot};
use prost::Message;
use sha2::Digest;
use tonic::transport::Channel;
use tonic::Code;
use trustline_proto::refusal::refusal_reason;
use trustline_proto::signer::SoftwareSigner;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::EventKind;
use trustline_tests::ownership::{first_transfer, issue_operator, ownership, provision, Owner};
use trustline_tests::{count, station, Stack, SITE};

/// The other site, whose station turns hostile.
const SITE_B: &str = "site-b";

type Client = ProvisioningClient<Channel>;

async fn stack(name: &str, fleet: &Fleet) -> Stack {
    let stack = Stack::start(name, fleet, &[(SITE, "st-01"), (SITE_B, "st-66")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-A", SITE, 100))
        .await
        .expect("order a");
    stack
        .open(&stack.order("PO-B", SITE_B, 100))
        .await
        .expect("order b: same vendors");
    stack
}

async fn client(stack: &Stack, site: &str, name: &str) -> Client {
    stack
        .provisioning(&station(site, name))
        .await
        .expect("client")
}

fn take(fleet: Fleet) -> Vec<SimulatedRot> {
    fleet.into_devices().into_iter().map(|d| d.rot).collect()
}

/// Claims and personalises `rot` under `order`; returns the certify request.
async fn prepare(
    client: &mut Client,
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
    let receipt = rot.claim(&begin.nonce, &begin.anchor).expect("claim");
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

fn naming(entries: &[v1::LedgerEntry], kind: EventKind, rot_id: &str) -> usize {
    entries
        .iter()
        .filter(|e| e.kind == kind as i32 && e.rot_id == rot_id)
        .count()
}

fn presence(status: &tonic::Status) -> v1::ClaimPresenceChallenge {
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(refusal_reason(status), Some("already-claimed"));
    v1::ClaimPresenceChallenge::decode(status.details()).expect("a presence challenge")
}

/// Item 1: `CertifyRequest.first_owner_public_key` from a station is
/// refused PERMISSION_DENIED (`first-owner`) before anything is signed or
/// recorded; the same device certifies without it, with no voucher entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_naming_a_first_owner_is_refused_and_nothing_is_recorded() {
    let fleet = Fleet::builder().seed(81).genuine(1).build().expect("fleet");
    let stack = stack("hostile-owner", &fleet).await;
    let mut rot = take(fleet).remove(0);
    let mut st = client(&stack, SITE, "st-01").await;
    let request = prepare(&mut st, "PO-A", &mut rot, "SN000001").await;
    let before = stack.ledger_entries().await.expect("ledger").len();
    let rogue_owner = SoftwareSigner::generate();
    let err = st
        .certify(v1::CertifyRequest {
            first_owner_public_key: trustline_proto::signer::Signer::public_key_der(&rogue_owner)
                .to_vec(),
            ..request.clone()
        })
        .await
        .expect_err("a station names no owner");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(refusal_reason(&err), Some("first-owner"));
    assert_eq!(stack.ledger_entries().await.expect("ledger").len(), before);
    let certified = st.certify(request).await.expect("certified").into_inner();
    let voucher = trustline_proto::voucher::Voucher::decode(&certified.voucher).expect("voucher");
    assert!(voucher.is_empty(), "the factory signs no voucher entry");
}

/// Item 2: a station of another site, with an order for the same IC
/// vendor, replays a claimed RoT's public chain (and its recorded receipt,
/// and a forged answer to the presence challenge): nothing is recorded
/// against the RoT, and the device is transferred and onboarded afterwards.
/// A real clone answering the challenge with the copied key is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sites_station_replaying_a_claimed_chain_records_nothing_and_the_victim_onboards() {
    let mut fleet = Fleet::builder().seed(82).genuine(1).build().expect("fleet");
    let mut clone = fleet.key_clone(0).expect("clone");
    let stack = stack("hostile-replay", &fleet).await;
    let (victim, link) = provision(&stack, "PO-A", take(fleet), None)
        .await
        .expect("provision")
        .remove(0);
    let victim = victim.expect("the victim is provisioned");
    let rot = link.into_rot();
    let entries = stack.ledger_entries().await.expect("ledger");
    let claimed = entries
        .iter()
        .find(|e| e.kind == EventKind::Claimed as i32 && e.rot_id == victim.rot_id)
        .expect("claimed");
    let recorded = v1::ClaimedPayload::decode(claimed.payload.as_slice()).expect("payload");
    // The public chain and transport statement, as the ledger holds them.
    let public = v1::RotAttestation {
        cert_chain: recorded.attestation_chain.clone(),
        transport_key: recorded.transport_key.clone(),
    };
    let before = entries.len();

    let mut rogue = client(&stack, SITE_B, "st-66").await;
    for _ in 0..3 {
        let err = rogue
            .begin_claim(v1::BeginClaimRequest {
                order_id: "PO-B".into(),
                attestation: Some(public.clone()),
            })
            .await
            .expect_err("claimed already");
        let challenge = presence(&err);
        assert_eq!(challenge.rot_id, victim.rot_id);
        // The recorded receipt, replayed: its nonce is site A's.
        let err = rogue
            .complete_claim(v1::CompleteClaimRequest {
                receipt: recorded.receipt.clone(),
                attestation: Some(public.clone()),
            })
            .await
            .expect_err("replayed receipt");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        // A receipt over the challenge that the die did not sign.
        let forged = trustline_proto::statement::sign(
            &SoftwareSigner::generate(),
            &v1::ClaimReceipt {
                rot_id: victim.rot_id.clone(),
                nonce: challenge.nonce.clone(),
                anchor_sha256: sha2::Sha256::digest(&challenge.anchor).to_vec(),
            },
        )
        .expect("sign");
        let err = rogue
            .complete_claim(v1::CompleteClaimRequest {
                receipt: Some(forged),
                attestation: Some(public.clone()),
            })
            .await
            .expect_err("forged presence receipt");
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        assert!(err.details().is_empty(), "no second challenge");
    }
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(entries.len(), before, "a replay records nothing");

    // The victim is transferred and onboarded: it is not quarantined.
    let owner = Owner::new();
    let voucher = first_transfer(&stack, &victim.voucher, &owner.spki(), &[])
        .await
        .expect("first transfer")
        .voucher;
    let operator = issue_operator(&stack).expect("operator");
    let mut op = ownership(&stack, operator).await.expect("operator");
    let ch = op
        .get_challenge(v1::GetChallengeRequest {
            rot_id: victim.rot_id.clone(),
            action: "onboard".into(),
        })
        .await
        .expect("challenge")
        .into_inner()
        .challenge;
    op.onboard(v1::OnboardRequest {
        voucher: voucher.clone(),
        device_chain: victim.chain.clone(),
        owner_authorization: Some(owner.authorize(&victim.rot_id, &ch, "onboard", &voucher)),
        device_proof: Some(rot.identity_proof(&ch).expect("identity proof")),
    })
    .await
    .expect("the victim onboards");

    // A real clone at site B signs the presence challenge: recorded.
    let err = rogue
        .begin_claim(v1::BeginClaimRequest {
            order_id: "PO-B".into(),
            attestation: Some(clone.attestation()),
        })
        .await
        .expect_err("clone");
    let challenge = presence(&err);
    let proof = clone
        .claim(&challenge.nonce, &challenge.anchor)
        .expect("the clone holds the key");
    let err = rogue
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(proof),
            attestation: Some(clone.attestation()),
        })
        .await
        .expect_err("a proven clone");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(
        naming(&entries, EventKind::DuplicateRejected, &victim.rot_id),
        1
    );
    assert_eq!(
        naming(&entries, EventKind::CounterfeitRejected, &victim.rot_id),
        0
    );
}

/// Item 2, same site: the key attestation in the ledger, replayed with a
/// proof of possession the device key did not sign and another serial, is
/// refused INVALID_ARGUMENT before any lookup, and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_key_attestation_with_an_unsigned_proof_records_nothing() {
    let fleet = Fleet::builder().seed(83).genuine(1).build().expect("fleet");
    let stack = stack("hostile-pop", &fleet).await;
    let (victim, _) = provision(&stack, "PO-A", take(fleet), None)
        .await
        .expect("provision")
        .remove(0);
    let victim = victim.expect("provisioned");
    let entries = stack.ledger_entries().await.expect("ledger");
    let certified = entries
        .iter()
        .find(|e| e.kind == EventKind::Certified as i32)
        .expect("certified");
    let payload = v1::CertifiedPayload::decode(certified.payload.as_slice()).expect("payload");
    let ka_signed = payload.key_attestation.expect("key attestation");
    let ka: v1::KeyAttestation =
        trustline_proto::statement::decode_unverified(&ka_signed).expect("ka");
    let pop = v1::ProofOfPossession {
        rot_id: victim.rot_id.clone(),
        serial: "SN000777".into(),
        device_public_key: ka.device_public_key.clone(),
        challenge: ka.challenge.clone(),
    };
    let mut neighbour = client(&stack, SITE, "st-01").await;
    let err = neighbour
        .certify(v1::CertifyRequest {
            order_id: "PO-A".into(),
            rot_id: victim.rot_id.clone(),
            serial: "SN000777".into(),
            key_attestation: Some(ka_signed),
            subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(
                v1::SignedStatement {
                    body: pop.encode_to_vec(),
                    signature: vec![],
                },
            )),
            first_owner_public_key: vec![],
        })
        .await
        .expect_err("an unsigned proof");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(refusal_reason(&err), Some("bad-signature"));
    let after = stack.ledger_entries().await.expect("ledger");
    assert_eq!(after.len(), entries.len(), "nothing recorded");
    assert_eq!(count(&after, EventKind::DuplicateRejected), 0);
}

/// Item 3: once the device has a field event (here the OEM's first
/// transfer), no station ships, receives or scraps it:
/// FAILED_PRECONDITION `left-factory`, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transferred_device_cannot_be_scrapped_shipped_or_received_by_a_station() {
    let fleet = Fleet::builder().seed(84).genuine(1).build().expect("fleet");
    let stack = stack("hostile-custody", &fleet).await;
    let (p, _) = provision(&stack, "PO-A", take(fleet), Some(&Owner::new()))
        .await
        .expect("provision and transfer")
        .remove(0);
    let rot_id = p.expect("provisioned").rot_id;
    let before = stack.ledger_entries().await.expect("ledger").len();
    for (site, name, kind) in [
        (SITE, "st-01", EventKind::Scrapped),
        (SITE, "st-01", EventKind::Shipped),
        (SITE_B, "st-66", EventKind::Received),
    ] {
        let err = client(&stack, site, name)
            .await
            .record_custody(v1::RecordCustodyRequest {
                rot_id: rot_id.clone(),
                kind: kind as i32,
                note: "after the sale".into(),
            })
            .await
            .expect_err("left the factory");
        assert_eq!(err.code(), Code::FailedPrecondition, "{kind:?}: {err:?}");
        assert_eq!(refusal_reason(&err), Some("left-factory"), "{kind:?}");
    }
    assert_eq!(stack.ledger_entries().await.expect("ledger").len(), before);
}

/// Item 4: a station of site B presenting a forged receipt for a claim
/// begun under a site-A order records nothing (the site is checked before
/// any refusal is recorded), and a flood of BeginClaim by one station does
/// not make another station `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sites_forged_receipt_records_nothing_and_a_flood_spends_no_shared_capacity() {
    let mut fleet = Fleet::builder().seed(85).genuine(2).build().expect("fleet");
    let mut impostor = fleet.impostor(0).expect("impostor");
    let stack = stack("hostile-site", &fleet).await;
    let mut rots = take(fleet);
    let mut own = client(&stack, SITE, "st-01").await;
    let mut rogue = client(&stack, SITE_B, "st-66").await;
    let begin = own
        .begin_claim(v1::BeginClaimRequest {
            order_id: "PO-A".into(),
            attestation: Some(impostor.attestation()),
        })
        .await
        .expect("the chain itself is genuine")
        .into_inner();
    let forged = impostor.claim(&begin.nonce, &begin.anchor).expect("signs");
    let before = stack.ledger_entries().await.expect("ledger").len();
    let err = rogue
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(forged),
            attestation: Some(impostor.attestation()),
        })
        .await
        .expect_err("another site");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(refusal_reason(&err), Some("wrong-site"));
    assert_eq!(stack.ledger_entries().await.expect("ledger").len(), before);

    // Site A's station floods BeginClaim; site B's claims undisturbed.
    let flood = rots.remove(0);
    for _ in 0..200 {
        own.begin_claim(v1::BeginClaimRequest {
            order_id: "PO-A".into(),
            attestation: Some(flood.attestation()),
        })
        .await
        .expect("no shared capacity to run out of");
    }
    let mut other = rots.remove(0);
    prepare(&mut rogue, "PO-B", &mut other, "SN000001").await;
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(count(&entries, EventKind::Claimed), 1);
    assert_eq!(count(&entries, EventKind::CounterfeitRejected), 0);
}

/// Item 9: the provisioner restarts between the device's receipt and
/// CompleteClaim: the claim completes (the claim key lives in the data
/// directory), the same receipt sent again (a lost response) gets the same
/// entry, and the device goes on to be certified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_survives_a_restart_between_receipt_and_complete_claim_and_a_lost_response() {
    let fleet = Fleet::builder().seed(86).genuine(1).build().expect("fleet");
    let mut stack = stack("hostile-restart", &fleet).await;
    let mut rot = take(fleet).remove(0);
    let mut st = client(&stack, SITE, "st-01").await;
    let begin = st
        .begin_claim(v1::BeginClaimRequest {
            order_id: "PO-A".into(),
            attestation: Some(rot.attestation()),
        })
        .await
        .expect("begin")
        .into_inner();
    let receipt = rot.claim(&begin.nonce, &begin.anchor).expect("receipt");
    stack.restart().await.expect("restart");
    let mut st = client(&stack, SITE, "st-01").await;
    let complete = v1::CompleteClaimRequest {
        receipt: Some(receipt),
        attestation: Some(rot.attestation()),
    };
    let first = st
        .complete_claim(complete.clone())
        .await
        .expect("completes after the restart")
        .into_inner();
    let again = st
        .complete_claim(complete)
        .await
        .expect("the same receipt again")
        .into_inner();
    assert_eq!(again.ledger_seq, first.ledger_seq);
    let (_, ka) = rot.generate_identity_key(&begin.nonce).expect("keygen");
    let pop = rot
        .proof_of_possession("SN000001", &begin.nonce)
        .expect("pop");
    st.certify(v1::CertifyRequest {
        order_id: "PO-A".into(),
        rot_id: begin.rot_id,
        serial: "SN000001".into(),
        key_attestation: Some(ka),
        subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(pop)),
        first_owner_public_key: vec![],
    })
    .await
    .expect("certified");
    let entries = stack.ledger_entries().await.expect("ledger");
    assert_eq!(count(&entries, EventKind::Claimed), 1);
    assert_eq!(count(&entries, EventKind::Certified), 1);
}
