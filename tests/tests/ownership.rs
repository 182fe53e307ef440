//! Ownership after the factory end to end (issue 5): real gRPC on loopback
//! behind TLS 1.3 with client certificates, a real SoftHSM2 token (the OEM
//! voucher key signs entry 0, the site intermediate signs the CRL), real
//! ledger files, `openssl crl -verify`.
//!
//! Shown here: a device's whole life — factory → owner A → reseller B →
//! operator C, onboarding, decommissioning, recommissioning by D,
//! retirement — every step in the ledger with a proven history and a live
//! identity check (2.4.14.7, 2.4.14.10, 2.4.14.18, 2.4.14.24, 2.4.16.4,
//! 2.4.16.7); every refusal with its own status and nothing recorded but
//! the refusal; no owner key anywhere in the data directory (invariant 6,
//! 2.4.16.3, 2.4.16.6); the CRL listing exactly the retired devices.

use std::process::Command;

use backends::RemoteLedgerReads;
use hsm_sim::rot::{Fleet, SimulatedRot};
use prost::Message;
use site::setup;
use station::inspect::{inspect, InspectConfig};
use station::sim::SimLink;
use tonic::transport::Channel;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::ownership_client::OwnershipClient;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::{sign_entry, Voucher};
use trustline_tests::ownership::{
    certificate_serial_hex, entries_since, extend, files_containing, first_transfer,
    issue_operator, openssl_crl, ownership, provision, Owner, RawVoucher,
};
use trustline_tests::{station, Stack, SITE};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

type Client = OwnershipClient<Channel>;

fn take(fleet: Fleet) -> Vec<SimulatedRot> {
    fleet.into_devices().into_iter().map(|d| d.rot).collect()
}

fn certificate_der(path: &std::path::Path) -> Vec<u8> {
    transport::pki::read_ca_certificate(path)
        .expect("certificate")
        .to_vec()
}

fn public_key_der(path: &std::path::Path) -> Vec<u8> {
    custody_ledger::checkpoint::spki_from_pem(&std::fs::read_to_string(path).expect("read"))
        .expect("public key")
}

async fn challenge(op: &mut Client, rot_id: &str, action: &str) -> Vec<u8> {
    op.get_challenge(v1::GetChallengeRequest {
        rot_id: rot_id.into(),
        action: action.into(),
    })
    .await
    .expect("challenge")
    .into_inner()
    .challenge
}

/// Asserts a refusal's code and stable reason.
fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    reason: &str,
) -> tonic::Status {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&status),
        Some(reason),
        "{status:?}"
    );
    assert!(!status.message().is_empty());
    status
}

/// Asserts that exactly one entry was appended since `before`: the
/// `REQUEST_REJECTED` of `operation` for `rot_id`, with no owner data.
async fn only_the_refusal(
    stack: &Stack,
    before: usize,
    rot_id: &str,
    operation: &str,
    actor: &str,
) {
    let new = entries_since(stack, before).await.expect("ledger");
    assert_eq!(new.len(), 1, "{operation}: {new:?}");
    let e = &new[0];
    assert_eq!(e.kind, EventKind::RequestRejected as i32, "{operation}");
    assert_eq!(e.rot_id, rot_id);
    assert_eq!(e.actor, actor, "the actor is the role only (2.4.16.3)");
    assert!(e.site.is_empty());
    let payload = v1::RejectedPayload::decode(e.payload.as_slice()).expect("payload");
    assert_eq!(payload.operation, operation);
    assert!(!payload.reason.is_empty());
    assert!(payload.evidence.is_empty());
}

async fn ledger_len(stack: &Stack) -> usize {
    stack.ledger_entries().await.expect("ledger").len()
}

/// An onboarding request: the owner's authorization and the device's live
/// identity proof over `ch`.
fn onboard_request(
    voucher: &[u8],
    chain: &[Vec<u8>],
    owner: &Owner,
    rot: &SimulatedRot,
    ch: &[u8],
) -> v1::OnboardRequest {
    v1::OnboardRequest {
        voucher: voucher.to_vec(),
        device_chain: chain.to_vec(),
        owner_authorization: Some(owner.authorize(rot.rot_id(), ch, "onboard", voucher)),
        device_proof: Some(rot.identity_proof(ch).expect("identity proof")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_lives_from_the_factory_to_retirement_with_every_step_recorded_and_proven() {
    let fleet = Fleet::builder().seed(51).genuine(1).build().expect("fleet");
    let mut stack = Stack::start("own-life", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    let (p, link) = provision(&stack, "PO-LIFE", take(fleet), None)
        .await
        .expect("provision")
        .remove(0);
    let p = p.expect("provisioned");
    let mut rot = link.into_rot();
    let rot_id = p.rot_id.clone();
    let (a, b, c, d) = (Owner::new(), Owner::new(), Owner::new(), Owner::new());
    let mut admin = ownership(&stack, setup::ADMIN).await.expect("admin");
    let mut op = ownership(&stack, operator).await.expect("operator");
    let voucher_key = public_key_der(
        &stack
            .dir
            .path()
            .join("ca")
            .join(ca_service::ca::VOUCHER_KEY_FILE),
    );

    // The OEM transfers the device to A: the HSM signs entry 0.
    let t = admin
        .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
            voucher: p.voucher.clone(),
            next_owner_public_key: a.spki(),
        })
        .await
        .expect("first transfer")
        .into_inner();
    let voucher_a = t.voucher;
    let verified = Voucher::decode(&voucher_a)
        .expect("voucher")
        .verify(&voucher_key)
        .expect("verifies");
    assert_eq!(verified.current_owner, a.spki());
    assert_eq!(
        verified.entries[0].owner_commitment().to_vec(),
        t.owner_commitment
    );

    // A sells to reseller B, B to operator C: extended offline, registered.
    let voucher_b = extend(&voucher_a, &a, &b);
    op.register_transfer(v1::RegisterTransferRequest {
        voucher: voucher_b.clone(),
    })
    .await
    .expect("A to B");
    let voucher_c = extend(&voucher_b, &b, &c);
    let t_c = op
        .register_transfer(v1::RegisterTransferRequest {
            voucher: voucher_c.clone(),
        })
        .await
        .expect("B to C")
        .into_inner();
    // Registering the same voucher again is a retry, not a new transfer.
    let again = op
        .register_transfer(v1::RegisterTransferRequest {
            voucher: voucher_c.clone(),
        })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.ledger_seq, t_c.ledger_seq);

    // C onboards it: C's authorization and the device's live identity proof.
    let ch = challenge(&mut op, &rot_id, "onboard").await;
    let onboarded = op
        .onboard(onboard_request(&voucher_c, &p.chain, &c, &rot, &ch))
        .await
        .expect("onboard")
        .into_inner();
    assert_eq!(onboarded.state, v1::DeviceLifecycle::InService as i32);
    rot.enter_service().expect("device in service");
    rot.write_user_data(0, b"C's wifi password")
        .expect("user data");

    // C decommissions it: the device erases C's data and proves it.
    let ch = challenge(&mut op, &rot_id, "decommission").await;
    let reset = rot.decommission(&ch).expect("device decommission");
    assert!(rot
        .user_data()
        .iter()
        .all(|b| *b == hsm_sim::rot::ERASED_BYTE));
    op.decommission(v1::DecommissionRequest {
        voucher: voucher_c.clone(),
        owner_authorization: Some(c.authorize(&rot_id, &ch, "decommission", &voucher_c)),
        reset_proof: Some(reset),
    })
    .await
    .expect("decommission");

    // C hands it to D; D recommissions it (the transfer is recorded here).
    let voucher_d = extend(&voucher_c, &c, &d);
    let ch = challenge(&mut op, &rot_id, "recommission").await;
    let reset = rot.recommission(&ch).expect("device recommission");
    op.recommission(v1::RecommissionRequest {
        voucher: voucher_d.clone(),
        owner_authorization: Some(d.authorize(&rot_id, &ch, "recommission", &voucher_d)),
        reset_proof: Some(reset),
    })
    .await
    .expect("recommission");

    // D retires it: final, the certificate is revoked.
    let ch = challenge(&mut op, &rot_id, "retire").await;
    let reset = rot.retire(&ch).expect("device retire");
    let retired = op
        .retire(v1::RetireRequest {
            voucher: voucher_d.clone(),
            owner_authorization: Some(d.authorize(&rot_id, &ch, "retire", &voucher_d)),
            reset_proof: Some(reset),
        })
        .await
        .expect("retire")
        .into_inner();
    assert_eq!(retired.state, v1::DeviceLifecycle::Retired as i32);
    let state = op
        .get_device_state(v1::GetDeviceStateRequest {
            rot_id: rot_id.clone(),
        })
        .await
        .expect("state")
        .into_inner();
    assert_eq!(state.state, v1::DeviceLifecycle::Retired as i32);
    assert!(state.revoked && !state.scrapped);
    assert_eq!(state.transfers, 4);

    // Every step is in the ledger, proven against a signed checkpoint; the
    // device authenticates live against its chain (2.4.14.10).
    let reads = RemoteLedgerReads::new(stack.channel(setup::AUDITOR).await.expect("auditor"));
    let config = InspectConfig {
        oem_root: certificate_der(&stack.root_pem()),
        ledger_key: public_key_der(&stack.dir.path().join(setup::LEDGER_KEY_FILE)),
        origin: None,
        label: Some(p.label.clone()),
    };
    let mut link = SimLink::new(rot);
    let inspection = inspect(&mut link, &reads, &config).await.expect("inspect");
    assert!(inspection.authentic(), "{}", inspection.render());
    let kinds: Vec<&str> = inspection.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CLAIMED",
            "CERTIFIED",
            "OWNERSHIP_TRANSFERRED",
            "OWNERSHIP_TRANSFERRED",
            "OWNERSHIP_TRANSFERRED",
            "ONBOARDED",
            "DECOMMISSIONED",
            "OWNERSHIP_TRANSFERRED",
            "RECOMMISSIONED",
            "RETIRED"
        ]
    );
    assert!(inspection.history.iter().all(|e| e.proven));
    let ownership_actors: Vec<&str> = inspection.history[2..]
        .iter()
        .map(|e| e.actor.as_str())
        .collect();
    assert_eq!(ownership_actors[0], "admin");
    assert!(
        ownership_actors[1..].iter().all(|a| *a == "operator"),
        "{ownership_actors:?}"
    );
    // A device presenting another label is caught.
    let wrong = InspectConfig {
        label: Some("TL-0000-0000-0000-0000-0/SKU-TEST".into()),
        ..config.clone()
    };
    assert!(!inspect(&mut link, &reads, &wrong)
        .await
        .expect("inspect")
        .authentic());

    // Retired is final: onboarding and transfers are refused, and only the
    // refusal is recorded.
    let rot = link.into_rot();
    let before = ledger_len(&stack).await;
    let ch = challenge(&mut op, &rot_id, "onboard").await;
    refused(
        op.onboard(onboard_request(&voucher_d, &p.chain, &d, &rot, &ch))
            .await,
        Code::FailedPrecondition,
        "retired",
    );
    only_the_refusal(&stack, before, &rot_id, "onboard", "operator").await;
    let e = Owner::new();
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(v1::RegisterTransferRequest {
            voucher: extend(&voucher_d, &d, &e),
        })
        .await,
        Code::FailedPrecondition,
        "retired",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;

    // The CRL, signed by the site intermediate in the HSM, verifies with
    // openssl and lists exactly the retired device.
    let crl = op
        .get_revocation_list(v1::GetRevocationListRequest {})
        .await
        .expect("crl")
        .into_inner()
        .crl;
    let work = tempfile::tempdir().expect("work");
    let (ok, serials) = openssl_crl(&crl, &p.chain[1..], work.path()).expect("openssl");
    assert!(ok, "openssl crl -verify");
    assert_eq!(serials, vec![certificate_serial_hex(&p.chain[0])]);

    // No owner key anywhere in the data directory — ledger segments, the
    // sled index, the token, the PKI — once the services have flushed and
    // stopped. The scan does find what the ledger does hold.
    stack.stop().await.expect("stop");
    let ledger_dir = stack.dir.path().join(setup::LEDGER_DIR);
    assert!(!files_containing(&ledger_dir, &[p.chain[0].clone()])
        .expect("scan")
        .is_empty());
    let needles: Vec<Vec<u8>> = [&a, &b, &c, &d, &e]
        .iter()
        .flat_map(|o| o.key_encodings())
        .collect();
    let leaks = files_containing(stack.dir.path(), &needles).expect("scan");
    assert!(leaks.is_empty(), "owner keys found in {leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_reordered_forked_and_unauthorised_transfers_are_refused_and_only_the_refusal_recorded(
) {
    let fleet = Fleet::builder().seed(52).genuine(1).build().expect("fleet");
    let mut stack = Stack::start("own-forge", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    let (a, b, c, d, m) = (
        Owner::new(),
        Owner::new(),
        Owner::new(),
        Owner::new(),
        Owner::new(),
    );
    // The OEM transfers it to A: entry 0, signed OEM-side.
    let (p, link) = provision(&stack, "PO-FORGE", take(fleet), Some(&a))
        .await
        .expect("provision")
        .remove(0);
    let p = p.expect("provisioned");
    let rot = link.into_rot();
    let rot_id = p.rot_id.clone();
    let mut admin = ownership(&stack, setup::ADMIN).await.expect("admin");
    let mut op = ownership(&stack, operator).await.expect("operator");
    let register = |voucher: Vec<u8>| v1::RegisterTransferRequest { voucher };

    // The OEM cannot transfer the device a second time.
    let mut manufacturer = RawVoucher::split(&p.voucher);
    manufacturer.entries.clear();
    let before = ledger_len(&stack).await;
    refused(
        admin
            .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
                voucher: manufacturer.join(),
                next_owner_public_key: m.spki(),
            })
            .await,
        Code::AlreadyExists,
        "transfer-recorded",
    );
    only_the_refusal(
        &stack,
        before,
        &rot_id,
        "transfer-from-manufacturer",
        "admin",
    )
    .await;

    // A sells to B.
    let voucher_b = extend(&p.voucher, &a, &b);
    op.register_transfer(register(voucher_b.clone()))
        .await
        .expect("A to B");

    // Mallory, not the owner, signs an entry giving the device to herself.
    let payload = Voucher::decode(&voucher_b)
        .expect("voucher")
        .next_entry_payload(&m.spki())
        .expect("payload");
    let mut raw = RawVoucher::split(&voucher_b);
    raw.entries
        .push(sign_entry(&payload, &m.key).expect("sign"));
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(raw.join())).await,
        Code::PermissionDenied,
        "not-owner",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;

    // A, no longer the owner, sells the device again from its old voucher:
    // a fork of entry 1.
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(extend(&p.voucher, &a, &m)))
            .await,
        Code::AlreadyExists,
        "transfer-recorded",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;

    // A forged entry (one signature bit flipped).
    let voucher_c = extend(&voucher_b, &b, &c);
    let mut raw = RawVoucher::split(&voucher_c);
    let last = raw.entries.last_mut().expect("entry");
    let n = last.len();
    last[n - 1] ^= 0x01;
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(raw.join())).await,
        Code::InvalidArgument,
        "bad-signature",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;

    // Reordered entries.
    let mut raw = RawVoucher::split(&voucher_c);
    raw.entries.swap(1, 2);
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(raw.join())).await,
        Code::InvalidArgument,
        "invalid",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;

    // A voucher cut back to an earlier owner, and one carrying two
    // unregistered transfers.
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(p.voucher.clone())).await,
        Code::FailedPrecondition,
        "voucher-stale",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(extend(&voucher_c, &c, &d)))
            .await,
        Code::FailedPrecondition,
        "voucher-stale",
    );
    only_the_refusal(&stack, before, &rot_id, "register-transfer", "operator").await;

    // An owner authorization by someone other than the current owner.
    let ch = challenge(&mut op, &rot_id, "onboard").await;
    let before = ledger_len(&stack).await;
    refused(
        op.onboard(onboard_request(&voucher_b, &p.chain, &m, &rot, &ch))
            .await,
        Code::PermissionDenied,
        "not-owner",
    );
    only_the_refusal(&stack, before, &rot_id, "onboard", "operator").await;

    // The owner's tools (`trustline voucher …`, `trustline owner keygen`)
    // make a transfer the service accepts, and refuse a key that is not the
    // current owner's.
    let work = tempfile::tempdir().expect("work");
    let w = |name: &str| work.path().join(name);
    std::fs::write(w("b.pem"), pkcs8_pem(&b)).expect("write");
    let vb = w("b.voucher");
    std::fs::write(&vb, &voucher_b).expect("write");
    cli(&["owner", "keygen", "--out", path(&w("next"))], 0);
    cli(&["voucher", "show", "--voucher", path(&vb), "--json"], 0);
    cli(
        &[
            "voucher",
            "extend",
            "--voucher",
            path(&vb),
            "--key",
            path(&w("next.pem")),
            "--to",
            path(&w("next.pub.pem")),
            "--out",
            path(&w("bad.voucher")),
        ],
        2,
    );
    cli(
        &[
            "voucher",
            "extend",
            "--voucher",
            path(&vb),
            "--key",
            path(&w("b.pem")),
            "--to",
            path(&w("next.pub.pem")),
            "--out",
            path(&w("c.voucher")),
        ],
        0,
    );
    let chain = w("chain.pem");
    std::fs::write(&chain, station::run::chain_pem(&p.chain)).expect("write");
    let voucher_key = stack
        .dir
        .path()
        .join("ca")
        .join(ca_service::ca::VOUCHER_KEY_FILE);
    cli(
        &[
            "voucher",
            "verify",
            "--voucher",
            path(&w("c.voucher")),
            "--manufacturer-key",
            path(&voucher_key),
            "--chain",
            path(&chain),
        ],
        0,
    );
    let mut tampered = std::fs::read(w("c.voucher")).expect("read");
    let n = tampered.len();
    tampered[n - 1] ^= 0x01;
    std::fs::write(w("tampered.voucher"), &tampered).expect("write");
    cli(
        &[
            "voucher",
            "verify",
            "--voucher",
            path(&w("tampered.voucher")),
            "--manufacturer-key",
            path(&voucher_key),
        ],
        1,
    );
    let extended = std::fs::read(w("c.voucher")).expect("read");
    op.register_transfer(register(extended))
        .await
        .expect("B to the new owner via the CLI");

    stack.stop().await.expect("stop");
    let needles: Vec<Vec<u8>> = [&a, &b, &c, &d, &m]
        .iter()
        .flat_map(|o| o.key_encodings())
        .collect();
    let leaks = files_containing(stack.dir.path(), &needles).expect("scan");
    assert!(leaks.is_empty(), "owner keys found in {leaks:?}");
}

fn pkcs8_pem(owner: &Owner) -> String {
    use p256::pkcs8::EncodePrivateKey;
    owner
        .key
        .key()
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .expect("pem")
        .to_string()
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn cli(args: &[&str], code: i32) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run trustline");
    assert_eq!(
        out.status.code(),
        Some(code),
        "trustline {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_refuses_replays_clones_scrapped_devices_and_steps_without_a_user_reset() {
    let mut fleet = Fleet::builder().seed(53).genuine(4).build().expect("fleet");
    let clone = fleet.key_clone(0).expect("clone");
    let mut stack = Stack::start("own-refuse", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    let a = Owner::new();
    let b = Owner::new();
    let mut devices = provision(&stack, "PO-REFUSE", take(fleet), None)
        .await
        .expect("provision");
    // Device 1 is scrapped on the line, while the factory still holds it (a
    // station cannot scrap a device that left the factory); the others go
    // to A.
    let mut station_client = stack
        .provisioning(&station(SITE, "st-01"))
        .await
        .expect("station");
    station_client
        .record_custody(v1::RecordCustodyRequest {
            rot_id: devices[1].0.as_ref().expect("provisioned").rot_id.clone(),
            kind: EventKind::Scrapped as i32,
            note: "dropped in test".into(),
        })
        .await
        .expect("scrap");
    for i in [0, 2, 3] {
        let p = devices[i].0.as_mut().expect("provisioned");
        p.voucher = first_transfer(&stack, &p.voucher, &a)
            .await
            .expect("first transfer");
    }
    // A copy of device 0's RoT is refused at the factory (DUPLICATE_REJECTED).
    let (refused_clone, _) = provision(&stack, "PO-REFUSE", vec![clone], Some(&a))
        .await
        .expect("clone")
        .remove(0);
    assert!(refused_clone.is_none());
    let mut devices: Vec<(station::run::Provisioned, SimulatedRot)> = devices
        .into_iter()
        .map(|(p, link)| (p.expect("provisioned"), link.into_rot()))
        .collect();
    let mut op = ownership(&stack, operator).await.expect("operator");
    let rot_ids: Vec<String> = devices.iter().map(|(_, r)| r.rot_id().to_owned()).collect();

    // A replayed onboarding challenge.
    let (p2, rot2) = &mut devices[2];
    let ch = challenge(&mut op, &rot_ids[2], "onboard").await;
    let request = onboard_request(&p2.voucher, &p2.chain, &a, rot2, &ch);
    op.onboard(request.clone()).await.expect("onboard");
    rot2.enter_service().expect("in service");
    let before = ledger_len(&stack).await;
    refused(
        op.onboard(request).await,
        Code::FailedPrecondition,
        "challenge",
    );
    only_the_refusal(&stack, before, &rot_ids[2], "onboard", "operator").await;

    // A transfer of a device in service, without a user reset.
    let voucher_b = extend(&p2.voucher, &a, &b);
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(v1::RegisterTransferRequest {
            voucher: voucher_b.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "lifecycle",
    );
    only_the_refusal(&stack, before, &rot_ids[2], "register-transfer", "operator").await;

    // A decommission without the device's reset proof, then with a reset
    // proof that does not report the decommissioned state.
    for with_proof in [false, true] {
        let ch = challenge(&mut op, &rot_ids[2], "decommission").await;
        let reset_proof = with_proof.then(|| rot2.user_reset(&ch).expect("user reset"));
        let before = ledger_len(&stack).await;
        refused(
            op.decommission(v1::DecommissionRequest {
                voucher: p2.voucher.clone(),
                owner_authorization: Some(a.authorize(
                    &rot_ids[2],
                    &ch,
                    "decommission",
                    &p2.voucher,
                )),
                reset_proof,
            })
            .await,
            Code::FailedPrecondition,
            "reset-required",
        );
        only_the_refusal(&stack, before, &rot_ids[2], "decommission", "operator").await;
    }
    let ch = challenge(&mut op, &rot_ids[2], "decommission").await;
    op.decommission(v1::DecommissionRequest {
        voucher: p2.voucher.clone(),
        owner_authorization: Some(a.authorize(&rot_ids[2], &ch, "decommission", &p2.voucher)),
        reset_proof: Some(rot2.decommission(&ch).expect("decommission")),
    })
    .await
    .expect("decommission");

    // A recommission for the same owner, then one without a reset: refused,
    // and B's transfer is not recorded either.
    let ch = challenge(&mut op, &rot_ids[2], "recommission").await;
    let before = ledger_len(&stack).await;
    refused(
        op.recommission(v1::RecommissionRequest {
            voucher: p2.voucher.clone(),
            owner_authorization: Some(a.authorize(&rot_ids[2], &ch, "recommission", &p2.voucher)),
            reset_proof: None,
        })
        .await,
        Code::FailedPrecondition,
        "lifecycle",
    );
    only_the_refusal(&stack, before, &rot_ids[2], "recommission", "operator").await;
    let ch = challenge(&mut op, &rot_ids[2], "recommission").await;
    let before = ledger_len(&stack).await;
    refused(
        op.recommission(v1::RecommissionRequest {
            voucher: voucher_b.clone(),
            owner_authorization: Some(b.authorize(&rot_ids[2], &ch, "recommission", &voucher_b)),
            reset_proof: None,
        })
        .await,
        Code::FailedPrecondition,
        "reset-required",
    );
    only_the_refusal(&stack, before, &rot_ids[2], "recommission", "operator").await;
    let ch = challenge(&mut op, &rot_ids[2], "recommission").await;
    op.recommission(v1::RecommissionRequest {
        voucher: voucher_b.clone(),
        owner_authorization: Some(b.authorize(&rot_ids[2], &ch, "recommission", &voucher_b)),
        reset_proof: Some(rot2.recommission(&ch).expect("recommission")),
    })
    .await
    .expect("recommission by B");

    // A scrapped device (scrapped on the line, above).
    let (p1, rot1) = &devices[1];
    let ch = challenge(&mut op, &rot_ids[1], "onboard").await;
    let before = ledger_len(&stack).await;
    refused(
        op.onboard(onboard_request(&p1.voucher, &p1.chain, &a, rot1, &ch))
            .await,
        Code::FailedPrecondition,
        "scrapped",
    );
    only_the_refusal(&stack, before, &rot_ids[1], "onboard", "operator").await;

    // A second device presenting device 3's identity without its key: its
    // chain and voucher, the owner's authorization, a proof by another key.
    let (p3, rot3) = &devices[3];
    let impostor_key = trustline_proto::signer::SoftwareSigner::generate();
    let ch = challenge(&mut op, &rot_ids[3], "onboard").await;
    let mut request = onboard_request(&p3.voucher, &p3.chain, &a, rot3, &ch);
    request.device_proof = Some(
        trustline_proto::statement::sign(
            &impostor_key,
            &v1::IdentityProof {
                rot_id: rot_ids[3].clone(),
                challenge: ch.clone(),
            },
        )
        .expect("sign"),
    );
    let before = ledger_len(&stack).await;
    refused(
        op.onboard(request).await,
        Code::FailedPrecondition,
        "not-authentic",
    );
    only_the_refusal(&stack, before, &rot_ids[3], "onboard", "operator").await;
    // ... or another certified device's chain.
    let ch = challenge(&mut op, &rot_ids[3], "onboard").await;
    let request = onboard_request(&p3.voucher, &devices[0].0.chain, &a, rot3, &ch);
    let before = ledger_len(&stack).await;
    refused(
        op.onboard(request).await,
        Code::FailedPrecondition,
        "not-authentic",
    );
    only_the_refusal(&stack, before, &rot_ids[3], "onboard", "operator").await;

    // Device 0, whose RoT a clone presented at the factory, is quarantined:
    // neither it nor the clone is onboarded (2.4.14.18).
    let (p0, rot0) = &devices[0];
    let ch = challenge(&mut op, &rot_ids[0], "onboard").await;
    let before = ledger_len(&stack).await;
    refused(
        op.onboard(onboard_request(&p0.voucher, &p0.chain, &a, rot0, &ch))
            .await,
        Code::FailedPrecondition,
        "duplicated",
    );
    only_the_refusal(&stack, before, &rot_ids[0], "onboard", "operator").await;

    // Retire devices 2 (in service with B) and 3 (never onboarded): the CRL
    // lists exactly them, also after a restart (rebuilt from the ledger).
    let mut retired = Vec::new();
    for (i, owner, voucher) in [
        (2usize, &b, voucher_b.clone()),
        (3, &a, devices[3].0.voucher.clone()),
    ] {
        let ch = challenge(&mut op, &rot_ids[i], "retire").await;
        let reset = devices[i].1.retire(&ch).expect("device retire");
        op.retire(v1::RetireRequest {
            voucher: voucher.clone(),
            owner_authorization: Some(owner.authorize(&rot_ids[i], &ch, "retire", &voucher)),
            reset_proof: Some(reset),
        })
        .await
        .expect("retire");
        retired.push(certificate_serial_hex(&devices[i].0.chain[0]));
    }
    retired.sort();
    let issuers = devices[0].0.chain[1..].to_vec();
    let work = tempfile::tempdir().expect("work");
    for restart in [false, true] {
        if restart {
            stack.restart().await.expect("restart");
            op = ownership(&stack, operator).await.expect("operator");
        }
        let crl = op
            .get_revocation_list(v1::GetRevocationListRequest {})
            .await
            .expect("crl")
            .into_inner()
            .crl;
        let (ok, mut serials) = openssl_crl(&crl, &issuers, work.path()).expect("openssl");
        serials.sort();
        assert!(ok, "openssl crl -verify");
        assert_eq!(serials, retired, "restart: {restart}");
    }
    stack.stop().await.expect("stop");
}
