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
//! the refusal — and that only when the request proved a relation to the
//! device (issue 12 item 4); no owner key anywhere in the data directory
//! (invariant 6, 2.4.16.3, 2.4.16.6); the CRL listing exactly the retired
//! devices. And issue 12's ownership half: the first owner named by the OEM
//! only, matching the order's commitment (item 1); entry 0 kept sealed and
//! replayed after a restart (item 10); quarantines lifted by the OEM
//! (item 2); challenge budgets per caller (item 4); owner keys in canonical
//! form (canonical keys).

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
use trustline_proto::voucher::{first_owner_commitment, sign_entry, Voucher};
use trustline_tests::ownership::{
    certificate_serial_hex, device_entries, entries_since, extend, files_containing,
    first_transfer, issue_operator, issue_operator_named, openssl_crl, ownership, plant, provision,
    Owner, RawVoucher,
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

/// Asserts that nothing was appended since `before`.
async fn nothing_recorded(stack: &Stack, before: usize) {
    let new = entries_since(stack, before).await.expect("ledger");
    assert!(new.is_empty(), "recorded: {new:?}");
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
            first_owner_salt: vec![],
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
    // The OEM transfers the device to A (`TransferFromManufacturer`).
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

    // The OEM cannot transfer the device a second time, to another owner.
    let mut manufacturer = RawVoucher::split(&p.voucher);
    manufacturer.entries.clear();
    let before = ledger_len(&stack).await;
    refused(
        admin
            .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
                voucher: manufacturer.join(),
                next_owner_public_key: m.spki(),
                first_owner_salt: vec![],
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
    // Refused, and — carrying no signature by the current owner or the
    // device — not recorded in the device's history (issue 12 item 4).
    refused(
        op.register_transfer(register(raw.join())).await,
        Code::PermissionDenied,
        "not-owner",
    );
    nothing_recorded(&stack, before).await;

    // A, no longer the owner, sells the device again from its old voucher:
    // a fork of entry 1 (A is not the current owner: not recorded).
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(extend(&p.voucher, &a, &m)))
            .await,
        Code::AlreadyExists,
        "transfer-recorded",
    );
    nothing_recorded(&stack, before).await;

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
    nothing_recorded(&stack, before).await;

    // Reordered entries.
    let mut raw = RawVoucher::split(&voucher_c);
    raw.entries.swap(1, 2);
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(raw.join())).await,
        Code::InvalidArgument,
        "invalid",
    );
    nothing_recorded(&stack, before).await;

    // A voucher cut back to an earlier owner (no new signature: not
    // recorded), and one carrying two unregistered transfers (the first of
    // them signed by the current owner B: recorded).
    let before = ledger_len(&stack).await;
    refused(
        op.register_transfer(register(p.voucher.clone())).await,
        Code::FailedPrecondition,
        "voucher-stale",
    );
    nothing_recorded(&stack, before).await;
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
        p.voucher = first_transfer(&stack, &p.voucher, &a.spki(), &[])
            .await
            .expect("first transfer")
            .voucher;
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

fn voucher_key(stack: &Stack) -> Vec<u8> {
    public_key_der(
        &stack
            .dir
            .path()
            .join("ca")
            .join(ca_service::ca::VOUCHER_KEY_FILE),
    )
}

fn first_request(voucher: &[u8], owner: &[u8], salt: &[u8]) -> v1::TransferFromManufacturerRequest {
    v1::TransferFromManufacturerRequest {
        voucher: voucher.to_vec(),
        next_owner_public_key: owner.to_vec(),
        first_owner_salt: salt.to_vec(),
    }
}

/// The other encoding (compressed point) of an owner's key.
fn compressed(owner: &Owner) -> Vec<u8> {
    let key = trustline_proto::ecdsa::parse_p256_spki(&owner.spki()).expect("key");
    trustline_proto::ecdsa::compressed_p256_spki(&key)
}

/// Issue 12 item 1, OEM side: the first owner comes from the OEM. An order
/// that commits to its first owner makes `TransferFromManufacturer` refuse
/// any other key, a wrong salt and a missing one (`PERMISSION_DENIED`,
/// nothing signed: only the refusal is recorded); a station or an operator
/// may not call it at all (the role table); the committed owner is named —
/// here with its key compressed, which the entry names in canonical form
/// and a retry in the other encoding recognises (issue 12, canonical keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_owner_is_named_by_the_oem_and_must_open_the_orders_commitment() {
    let fleet = Fleet::builder().seed(54).genuine(1).build().expect("fleet");
    let stack = Stack::start("own-first", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    let (a, b) = (Owner::new(), Owner::new());
    let salt = [0x5a; 32];
    let mut order = stack.order("PO-FIRST", SITE, 10);
    order.first_owner_commitment = first_owner_commitment(&salt, &a.spki())
        .expect("commitment")
        .to_vec();
    stack.open(&order).await.expect("open the committed order");
    let (p, _link) = provision(&stack, "PO-FIRST", take(fleet), None)
        .await
        .expect("provision")
        .remove(0);
    let p = p.expect("provisioned");
    let mut admin = ownership(&stack, setup::ADMIN).await.expect("admin");

    for (what, request) in [
        ("another owner", first_request(&p.voucher, &b.spki(), &salt)),
        (
            "a wrong salt",
            first_request(&p.voucher, &a.spki(), &[0x5b; 32]),
        ),
        ("no salt", first_request(&p.voucher, &a.spki(), &[])),
    ] {
        let before = ledger_len(&stack).await;
        let status = refused(
            admin.transfer_from_manufacturer(request).await,
            Code::PermissionDenied,
            "first-owner",
        );
        assert!(status.message().contains("PO-FIRST"), "{what}: {status:?}");
        only_the_refusal(
            &stack,
            before,
            &p.rot_id,
            "transfer-from-manufacturer",
            "admin",
        )
        .await;
    }
    let before = ledger_len(&stack).await;
    refused(
        admin
            .transfer_from_manufacturer(first_request(&p.voucher, &a.spki(), &[1; 31]))
            .await,
        Code::InvalidArgument,
        "invalid",
    );
    only_the_refusal(
        &stack,
        before,
        &p.rot_id,
        "transfer-from-manufacturer",
        "admin",
    )
    .await;

    // Neither a station nor an operator names a first owner: the role table
    // refuses them before any handler runs, and nothing is recorded.
    let before = ledger_len(&stack).await;
    for identity in [station(SITE, "st-01"), operator.to_owned()] {
        let mut client = ownership(&stack, &identity).await.expect("client");
        let status = client
            .transfer_from_manufacturer(first_request(&p.voucher, &a.spki(), &salt))
            .await
            .expect_err("only the OEM names the first owner");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{identity}: {status:?}"
        );
    }
    nothing_recorded(&stack, before).await;

    // The committed owner, its key given compressed.
    let t = admin
        .transfer_from_manufacturer(first_request(&p.voucher, &compressed(&a), &salt))
        .await
        .expect("the committed first owner")
        .into_inner();
    assert!(!t.replayed);
    let verified = Voucher::decode(&t.voucher)
        .expect("voucher")
        .verify(&voucher_key(&stack))
        .expect("signed by the OEM voucher key");
    assert_eq!(verified.current_owner, a.spki(), "named in canonical form");
    let recorded = entries_since(&stack, before).await.expect("ledger");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].kind, EventKind::OwnershipTransferred as i32);
    // The same owner in the other encoding is the same owner: a retry.
    let before = ledger_len(&stack).await;
    let again = admin
        .transfer_from_manufacturer(first_request(&p.voucher, &a.spki(), &salt))
        .await
        .expect("retry")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.voucher, t.voucher);
    nothing_recorded(&stack, before).await;
}

/// Issue 12 item 10: voucher entry 0 is never lost. The ledger keeps it
/// sealed under the OEM's HSM seal key (ciphertext only: no owner key in
/// the data directory, invariant 6); a retried `TransferFromManufacturer`
/// for the same owner returns the very same bytes with `replayed`, also
/// after a restart, and records nothing; another owner is `ALREADY_EXISTS`.
/// A planted entry whose seal was made for another device, or altered, is
/// `DATA_LOSS`: refused, never re-signed, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_zero_is_kept_sealed_and_a_retry_returns_it_even_after_a_restart() {
    let fleet = Fleet::builder().seed(55).genuine(3).build().expect("fleet");
    let mut stack = Stack::start("own-seal", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let devices: Vec<station::run::Provisioned> = provision(&stack, "PO-SEAL", take(fleet), None)
        .await
        .expect("provision")
        .into_iter()
        .map(|(p, _)| p.expect("provisioned"))
        .collect();
    let (x, y, z) = (&devices[0], &devices[1], &devices[2]);
    let (a, b) = (Owner::new(), Owner::new());
    let mut admin = ownership(&stack, setup::ADMIN).await.expect("admin");

    let before = ledger_len(&stack).await;
    let first = admin
        .transfer_from_manufacturer(first_request(&x.voucher, &a.spki(), &[]))
        .await
        .expect("first transfer")
        .into_inner();
    assert!(!first.replayed);
    let recorded = entries_since(&stack, before).await.expect("ledger");
    assert_eq!(recorded.len(), 1);
    let payload = v1::OwnershipPayload::decode(recorded[0].payload.as_slice()).expect("payload");
    assert_eq!(payload.voucher_entry_index, 0);
    assert!(!payload.sealed_entry.is_empty(), "entry 0 is kept, sealed");
    for needle in a.key_encodings() {
        assert!(
            !payload
                .sealed_entry
                .windows(needle.len())
                .any(|w| w == needle),
            "the seal holds no owner key in clear"
        );
    }

    // A lost response: the retry gets the same entry, and nothing is added.
    let before = ledger_len(&stack).await;
    let retry = admin
        .transfer_from_manufacturer(first_request(&x.voucher, &a.spki(), &[]))
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(retry.voucher, first.voucher);
    assert_eq!(retry.ledger_seq, first.ledger_seq);
    assert_eq!(retry.owner_commitment, first.owner_commitment);
    nothing_recorded(&stack, before).await;

    // After a restart (no cache survives it) the same bytes again.
    stack.restart().await.expect("restart");
    let mut admin = ownership(&stack, setup::ADMIN).await.expect("admin");
    let before = ledger_len(&stack).await;
    let after = admin
        .transfer_from_manufacturer(first_request(&x.voucher, &a.spki(), &[]))
        .await
        .expect("retry after a restart")
        .into_inner();
    assert!(after.replayed);
    assert_eq!(
        after.voucher, first.voucher,
        "the same bytes after a restart"
    );
    assert_eq!(after.ledger_seq, first.ledger_seq);
    nothing_recorded(&stack, before).await;

    // Another owner: the first transfer is taken.
    let before = ledger_len(&stack).await;
    refused(
        admin
            .transfer_from_manufacturer(first_request(&x.voucher, &b.spki(), &[]))
            .await,
        Code::AlreadyExists,
        "transfer-recorded",
    );
    only_the_refusal(
        &stack,
        before,
        &x.rot_id,
        "transfer-from-manufacturer",
        "admin",
    )
    .await;

    // Planted entries 0 (as a compromised ledger writer could append them):
    // y's holds x's seal (made for another device), z's an altered copy.
    let mut altered = payload.sealed_entry.clone();
    altered[20] ^= 0x01;
    for (device, sealed) in [(y, payload.sealed_entry.clone()), (z, altered)] {
        let planted = v1::OwnershipPayload {
            sealed_entry: sealed,
            ..payload.clone()
        };
        plant(
            &stack,
            v1::EntryDraft {
                kind: EventKind::OwnershipTransferred as i32,
                rot_id: device.rot_id.clone(),
                serial: device.serial.clone(),
                actor: "admin".into(),
                payload: planted.encode_to_vec(),
                ..Default::default()
            },
            vec![
                ownership::state::voucher_entry_key(&device.rot_id, 0),
                ownership::state::field_key(&device.rot_id, 0),
            ],
        )
        .await
        .expect("plant");
        let before = ledger_len(&stack).await;
        refused(
            admin
                .transfer_from_manufacturer(first_request(&device.voucher, &a.spki(), &[]))
                .await,
            Code::DataLoss,
            "sealed-entry",
        );
        nothing_recorded(&stack, before).await;
    }

    stack.stop().await.expect("stop");
    let needles: Vec<Vec<u8>> = [&a, &b].iter().flat_map(|o| o.key_encodings()).collect();
    let leaks = files_containing(stack.dir.path(), &needles).expect("scan");
    assert!(leaks.is_empty(), "owner keys found in {leaks:?}");
}

/// A `DUPLICATE_REJECTED` naming `rot_id`, as the factory records a die
/// that proved it holds an already claimed RoT's attestation key.
fn duplicate(rot_id: &str) -> v1::EntryDraft {
    v1::EntryDraft {
        kind: EventKind::DuplicateRejected as i32,
        rot_id: rot_id.to_owned(),
        site: SITE.into(),
        actor: format!("station/{SITE}/st-01"),
        order_id: "PO-LIFT".into(),
        payload: v1::RejectedPayload {
            operation: "claim".into(),
            reason: "a second die signed a fresh challenge with this rot's attestation key".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        ..Default::default()
    }
}

/// Issue 12 item 2 (ownership half): a device that duplicates name is
/// quarantined until the OEM lifts every one of them, each with its reason,
/// recorded as `QUARANTINE_LIFTED` in the device's chain. Only the admin may
/// lift; a seq that is no duplicate of that device, an empty reason and a
/// second lift are refused and record nothing; the offline verifier knows
/// the new kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_is_lifted_by_the_oem_for_a_recorded_duplicate_and_then_the_device_onboards() {
    let fleet = Fleet::builder().seed(56).genuine(2).build().expect("fleet");
    let mut stack = Stack::start("own-lift", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    let a = Owner::new();
    let mut devices: Vec<(station::run::Provisioned, SimulatedRot)> =
        provision(&stack, "PO-LIFT", take(fleet), Some(&a))
            .await
            .expect("provision")
            .into_iter()
            .map(|(p, link)| (p.expect("provisioned"), link.into_rot()))
            .collect();
    let (p1, _) = devices.pop().expect("device 1");
    let (p0, rot0) = devices.pop().expect("device 0");
    let rot_id = p0.rot_id.clone();
    let dup_a = plant(&stack, duplicate(&rot_id), vec![])
        .await
        .expect("plant");
    let dup_b = plant(&stack, duplicate(&rot_id), vec![])
        .await
        .expect("plant");
    let other = plant(&stack, duplicate(&p1.rot_id), vec![])
        .await
        .expect("plant");
    let mut op = ownership(&stack, operator).await.expect("operator");
    let mut admin = ownership(&stack, setup::ADMIN).await.expect("admin");
    let lift = |seq: u64, reason: &str| v1::LiftQuarantineRequest {
        rot_id: rot_id.clone(),
        duplicate_seq: seq,
        reason: reason.into(),
    };
    const WHY: &str = "the clone was traced to a test rig at the factory and destroyed";

    let ch = challenge(&mut op, &rot_id, "onboard").await;
    refused(
        op.onboard(onboard_request(&p0.voucher, &p0.chain, &a, &rot0, &ch))
            .await,
        Code::FailedPrecondition,
        "duplicated",
    );

    // Only the OEM lifts a quarantine.
    let before = ledger_len(&stack).await;
    for identity in [operator.to_owned(), setup::AUDITOR.to_owned()] {
        let mut client = ownership(&stack, &identity).await.expect("client");
        let status = client
            .lift_quarantine(lift(dup_a, WHY))
            .await
            .expect_err("only the admin lifts");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{identity}: {status:?}"
        );
    }
    // Seqs that are no duplicate of this device, and a lift without a reason.
    for seq in [other, p0.ledger_seq, 1 << 40] {
        refused(
            admin.lift_quarantine(lift(seq, WHY)).await,
            Code::FailedPrecondition,
            "not-quarantined",
        );
    }
    refused(
        admin.lift_quarantine(lift(dup_a, "  ")).await,
        Code::InvalidArgument,
        "invalid",
    );
    nothing_recorded(&stack, before).await;

    // One of two lifted: still quarantined by the other.
    let before = ledger_len(&stack).await;
    let lifted = admin
        .lift_quarantine(lift(dup_a, WHY))
        .await
        .expect("lift")
        .into_inner();
    assert_eq!(lifted.quarantines_left, 1);
    let new = entries_since(&stack, before).await.expect("ledger");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].seq, lifted.ledger_seq);
    assert_eq!(new[0].kind, EventKind::QuarantineLifted as i32);
    assert_eq!(new[0].rot_id, rot_id, "chained to the device");
    assert_eq!(new[0].actor, "admin");
    let payload = v1::QuarantineLiftedPayload::decode(new[0].payload.as_slice()).expect("payload");
    assert_eq!(
        (payload.duplicate_seq, payload.reason.as_str()),
        (dup_a, WHY)
    );
    let before = ledger_len(&stack).await;
    refused(
        admin.lift_quarantine(lift(dup_a, WHY)).await,
        Code::AlreadyExists,
        "quarantine-lifted",
    );
    nothing_recorded(&stack, before).await;
    let ch = challenge(&mut op, &rot_id, "onboard").await;
    let status = refused(
        op.onboard(onboard_request(&p0.voucher, &p0.chain, &a, &rot0, &ch))
            .await,
        Code::FailedPrecondition,
        "duplicated",
    );
    assert!(
        status.message().contains(&format!("entry {dup_b}")),
        "{status:?}"
    );

    // Both lifted: the device onboards; the other device stays quarantined.
    let lifted = admin
        .lift_quarantine(lift(dup_b, WHY))
        .await
        .expect("lift")
        .into_inner();
    assert_eq!(lifted.quarantines_left, 0);
    let ch = challenge(&mut op, &rot_id, "onboard").await;
    op.onboard(onboard_request(&p0.voucher, &p0.chain, &a, &rot0, &ch))
        .await
        .expect("onboarded once every quarantine is lifted");
    let state = op
        .get_device_state(v1::GetDeviceStateRequest {
            rot_id: p1.rot_id.clone(),
        })
        .await
        .expect("state")
        .into_inner();
    assert_eq!(state.state, v1::DeviceLifecycle::Personalised as i32);
    let kinds: Vec<i32> = device_entries(&stack, &rot_id)
        .await
        .expect("history")
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::QuarantineLifted as i32)
            .count(),
        2
    );

    // The offline verifier accepts the ledger with its new kind.
    stack.stop().await.expect("stop");
    cli(
        &["ledger", "verify", "--data-dir", path(stack.dir.path())],
        0,
    );
}

/// Issue 12 item 4: onboarding challenges are budgeted per caller. One
/// operator at its budget gets its own refusal (`RESOURCE_EXHAUSTED`,
/// `busy`, nothing recorded); another operator still gets challenges; a
/// challenge spent gives the budget back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_at_its_challenge_budget_is_refused_alone() {
    let fleet = Fleet::builder().seed(57).genuine(1).build().expect("fleet");
    let stack = Stack::start_with("own-budget", &fleet, &[(SITE, "st-01")], |_, config| {
        config.ownership.challenges_per_caller = 3;
        Ok(())
    })
    .await
    .expect("stack");
    let busy = issue_operator(&stack).expect("operator");
    issue_operator_named(&stack, "operator-2", "service-provider").expect("operator 2");
    let a = Owner::new();
    let (p, link) = provision(&stack, "PO-BUDGET", take(fleet), Some(&a))
        .await
        .expect("provision")
        .remove(0);
    let p = p.expect("provisioned");
    let rot = link.into_rot();
    let mut op1 = ownership(&stack, busy).await.expect("operator 1");
    let mut op2 = ownership(&stack, "operator-2").await.expect("operator 2");

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(challenge(&mut op1, &p.rot_id, "onboard").await);
    }
    let before = ledger_len(&stack).await;
    refused(
        op1.get_challenge(v1::GetChallengeRequest {
            rot_id: p.rot_id.clone(),
            action: "onboard".into(),
        })
        .await,
        Code::ResourceExhausted,
        "busy",
    );
    nothing_recorded(&stack, before).await;
    // The other operator is unaffected.
    for _ in 0..3 {
        challenge(&mut op2, &p.rot_id, "onboard").await;
    }
    // Spending a challenge (a real onboarding) gives operator 1 one back.
    op1.onboard(onboard_request(&p.voucher, &p.chain, &a, &rot, &held[0]))
        .await
        .expect("onboard");
    challenge(&mut op1, &p.rot_id, "decommission").await;
}

/// Issue 12 item 4: a caller with no relation to a device cannot add
/// `REQUEST_REJECTED` entries to its history. A stranger operator's forged
/// transfer, its own authorizations and a device proof copied from the
/// ledger are each refused — counted toward its lockout, which follows —
/// while the device's history stays exactly as it was; the owner's own
/// refused request is still recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_with_no_relation_to_a_device_cannot_add_to_its_history() {
    let fleet = Fleet::builder().seed(58).genuine(1).build().expect("fleet");
    let stack = Stack::start("own-stranger", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    issue_operator_named(&stack, "stranger", "stranger").expect("stranger");
    let (a, m) = (Owner::new(), Owner::new());
    let (p, link) = provision(&stack, "PO-STRANGER", take(fleet), Some(&a))
        .await
        .expect("provision")
        .remove(0);
    let p = p.expect("provisioned");
    let rot = link.into_rot();
    let rot_id = p.rot_id.clone();
    let mut op = ownership(&stack, operator).await.expect("operator");
    let ch = challenge(&mut op, &rot_id, "onboard").await;
    op.onboard(onboard_request(&p.voucher, &p.chain, &a, &rot, &ch))
        .await
        .expect("the owner onboards it");
    let history = device_entries(&stack, &rot_id).await.expect("history");
    // The device's identity proof as the ONBOARDED entry keeps it.
    let copied_proof = history
        .iter()
        .find(|e| e.kind == EventKind::Onboarded as i32)
        .and_then(|e| v1::LifecyclePayload::decode(e.payload.as_slice()).ok())
        .and_then(|l| l.device_proof)
        .expect("recorded identity proof");
    let payload = Voucher::decode(&p.voucher)
        .expect("voucher")
        .next_entry_payload(&m.spki())
        .expect("payload");
    let mut forged = RawVoucher::split(&p.voucher);
    forged
        .entries
        .push(sign_entry(&payload, &m.key).expect("sign"));
    let forged = forged.join();

    let mut stranger = ownership(&stack, "stranger").await.expect("stranger");
    let threshold = transport::LockoutPolicy::default().threshold;
    let mut refusals = 0u32;
    let mut locked = false;
    for attempt in 0..threshold + 4 {
        let result = match attempt % 4 {
            0 => stranger
                .register_transfer(v1::RegisterTransferRequest {
                    voucher: forged.clone(),
                })
                .await
                .map(drop),
            kind => {
                let action = ["", "onboard", "decommission", "retire"][kind as usize];
                let ch = match stranger
                    .get_challenge(v1::GetChallengeRequest {
                        rot_id: rot_id.clone(),
                        action: action.into(),
                    })
                    .await
                {
                    Ok(c) => c.into_inner().challenge,
                    Err(s) => {
                        assert!(s.message().contains("locked out"), "{s:?}");
                        locked = true;
                        break;
                    }
                };
                let auth = Some(m.authorize(&rot_id, &ch, action, &p.voucher));
                let proof = Some(copied_proof.clone());
                match kind {
                    1 => stranger
                        .onboard(v1::OnboardRequest {
                            voucher: p.voucher.clone(),
                            device_chain: p.chain.clone(),
                            owner_authorization: auth,
                            device_proof: proof,
                        })
                        .await
                        .map(drop),
                    2 => stranger
                        .decommission(v1::DecommissionRequest {
                            voucher: p.voucher.clone(),
                            owner_authorization: auth,
                            reset_proof: None,
                        })
                        .await
                        .map(drop),
                    _ => stranger
                        .retire(v1::RetireRequest {
                            voucher: p.voucher.clone(),
                            owner_authorization: auth,
                            reset_proof: proof,
                        })
                        .await
                        .map(drop),
                }
            }
        };
        let status = result.expect_err("a stranger is refused");
        if status.message().contains("locked out") {
            locked = true;
            break;
        }
        assert!(
            matches!(
                status.code(),
                Code::PermissionDenied | Code::FailedPrecondition
            ),
            "{status:?}"
        );
        refusals += 1;
    }
    assert!(locked, "not locked out after {refusals} refusals");
    assert_eq!(
        refusals, threshold,
        "every refusal counted toward the lockout"
    );
    assert_eq!(
        device_entries(&stack, &rot_id)
            .await
            .expect("history")
            .len(),
        history.len(),
        "the stranger added nothing to the device's history"
    );

    // The owner's own refused request (no reset proof) is recorded.
    let ch = challenge(&mut op, &rot_id, "decommission").await;
    let before = ledger_len(&stack).await;
    refused(
        op.decommission(v1::DecommissionRequest {
            voucher: p.voucher.clone(),
            owner_authorization: Some(a.authorize(&rot_id, &ch, "decommission", &p.voucher)),
            reset_proof: None,
        })
        .await,
        Code::FailedPrecondition,
        "reset-required",
    );
    only_the_refusal(&stack, before, &rot_id, "decommission", "operator").await;
}
