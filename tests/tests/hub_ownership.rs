//! Ownership at the hub (issue 13 item 4; 2.4.14.7, 2.4.14.18, 2.4.14.22,
//! 2.4.16): two enrolled sites on their own tokens, their uplinks feeding
//! the hub's mirror and registry; with the device's factory site stopped,
//! the OEM names the first owner at the hub and the owner onboards the
//! device there; a rot_id certified at both sites (a cross-site clone) is
//! refused for onboarding with its own status and reason; a site serves no
//! `Ownership`; the hub's own ledger of field events passes `trustline
//! ledger verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::time::Duration;

use ca_service::keys::KeyLabels;
use deploy::loopback::{Loopback, SiteSpec};
use hsm_sim::rot::{Fleet, SimulatedRot};
use site::setup;
use station::run::{self, Job, Mode, Outcome, Provisioned, RunConfig};
use station::sim::SimLink;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::ownership_client::OwnershipClient;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::uplink_client::UplinkClient;
use trustline_tests::ownership::Owner;
use trustline_tests::{open_test_token, test_limits};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

/// Opens order `id` for `site` at that site, signed by the hub's order key.
async fn open_order(net: &Loopback, i: usize, id: &str, vendors: &[String], fw: [u8; 32]) {
    let site = &net.sites[i].name;
    let order = trustline_tests::order(id, site, 100, vendors, fw);
    let key = net.hub_hsm().signer(&KeyLabels::default().order).unwrap();
    let signed = trustline_proto::statement::sign(&key, &order).unwrap();
    ProvisioningClient::new(net.site_channel(i, setup::ADMIN, true).await.unwrap())
        .open_order(v1::OpenOrderRequest {
            signed_order: Some(signed),
        })
        .await
        .unwrap();
}

/// Provisions `rots` at site `i` under `order`; returns each outcome with
/// its device.
async fn provision(
    net: &Loopback,
    i: usize,
    order: &str,
    rots: Vec<SimulatedRot>,
) -> Vec<(Outcome, SimulatedRot)> {
    let s = &net.sites[i];
    let station = setup::station_name(&s.name, &s.stations[0]);
    let channel = net.site_channel(i, &station, false).await.unwrap();
    let config = RunConfig {
        order_id: order.into(),
        mode: Mode::OnDevice,
        concurrency: 2,
        out_dir: None,
        first_serial: Some(1 + 1000 * i as u64),
        progress: false,
        retries: 0,
        protocol: station::run::Protocol::Stream,
    };
    let jobs = rots
        .into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect();
    let (report, links) = run::run(channel, config, jobs).await.unwrap();
    report
        .outcomes
        .into_iter()
        .zip(links.into_iter().map(SimLink::into_rot))
        .collect()
}

fn provisioned(o: &(Outcome, SimulatedRot)) -> Provisioned {
    match &o.0 {
        Outcome::Provisioned(p) => p.clone(),
        other => panic!("not provisioned: {other:?}"),
    }
}

/// Waits until the hub cosigned all of site `i`'s ledger.
async fn synced(net: &Loopback, i: usize) {
    let mut client = UplinkClient::new(net.site_channel(i, setup::AUDITOR, true).await.unwrap());
    loop {
        let s = client
            .get_uplink_status(v1::GetUplinkStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        if s.cosigned_size > 0 && s.cosigned_size == s.ledger_size {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_onboards_a_device_whose_factory_is_stopped_and_refuses_a_cross_site_clone() {
    transport::install_crypto_provider();
    let (_t0, hub_hsm) = open_test_token("hubown-hub").unwrap();
    let (_t1, a_ca) = open_test_token("hubown-a-ca").unwrap();
    let (_t2, a_ledger) = open_test_token("hubown-a-ledger").unwrap();
    let (_t3, b_ca) = open_test_token("hubown-b-ca").unwrap();
    let (_t4, b_ledger) = open_test_token("hubown-b-ledger").unwrap();
    let mut fleet = Fleet::builder().seed(131).genuine(2).build().unwrap();
    let clone = fleet.key_clone(0).unwrap();
    let (vendors, fw): (Vec<String>, _) = (
        fleet.vendor_roots().into_iter().map(|(n, _)| n).collect(),
        fleet.firmware_sha256(),
    );
    let work = tempfile::tempdir().unwrap();
    let spec = |name: &str, ca, ledger| SiteSpec {
        name: name.into(),
        ca,
        ledger,
        stations: vec!["st-01".into()],
    };
    let mut net = Loopback::init(
        work.path(),
        hub_hsm,
        vec![
            spec("site-a", a_ca, a_ledger),
            spec("site-b", b_ca, b_ledger),
        ],
        &fleet.vendor_roots(),
        &test_limits(),
        (20, 200),
    )
    .unwrap();
    net.start_all().await.unwrap();

    // Site A makes two devices; site B certifies a die carrying device 0's
    // identity (it never saw the original: a clone across sites).
    open_order(&net, 0, "PO-A", &vendors, fw).await;
    open_order(&net, 1, "PO-B", &vendors, fw).await;
    let rots: Vec<SimulatedRot> = fleet.into_devices().into_iter().map(|d| d.rot).collect();
    let made = provision(&net, 0, "PO-A", rots).await;
    let (genuine, original) = (provisioned(&made[1]), provisioned(&made[0]));
    let copy = provisioned(&provision(&net, 1, "PO-B", vec![clone]).await[0]);
    assert_eq!(copy.rot_id, original.rot_id);
    synced(&net, 0).await;
    synced(&net, 1).await;

    // Site A is now gone; the hub alone answers.
    net.stop_site(0).await.unwrap();
    net.stop_site(1).await.unwrap();
    let operator = net.issue_operator().unwrap();
    let mut admin = OwnershipClient::new(net.hub_channel(setup::ADMIN).await.unwrap());
    let mut op = OwnershipClient::new(net.hub_channel(operator).await.unwrap());
    let owner = Owner::new();

    // The first transfer, named by the OEM at the hub (OEM voucher key on
    // the hub token), then onboarding with the device's live proof.
    let first = admin
        .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
            voucher: genuine.voucher.clone(),
            next_owner_public_key: owner.spki(),
            first_owner_salt: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    let device = &made[1].1;
    let onboard = |voucher: Vec<u8>, rot: &SimulatedRot, chain: Vec<Vec<u8>>, ch: Vec<u8>| {
        v1::OnboardRequest {
            owner_authorization: Some(owner.authorize(rot.rot_id(), &ch, "onboard", &voucher)),
            device_proof: Some(rot.identity_proof(&ch).unwrap()),
            voucher,
            device_chain: chain,
        }
    };
    let challenger = op.clone();
    let challenge = |rot_id: String| {
        let mut op = challenger.clone();
        async move {
            op.get_challenge(v1::GetChallengeRequest {
                rot_id,
                action: "onboard".into(),
            })
            .await
            .map(|c| c.into_inner().challenge)
        }
    };
    let ch = challenge(genuine.rot_id.clone()).await.unwrap();
    let done = op
        .onboard(onboard(
            first.voucher.clone(),
            device,
            genuine.chain.clone(),
            ch,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, v1::DeviceLifecycle::InService as i32);
    let state = op
        .get_device_state(v1::GetDeviceStateRequest {
            rot_id: genuine.rot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (state.state, state.transfers),
        (v1::DeviceLifecycle::InService as i32, 1)
    );

    // The rot_id certified at both sites: the OEM may still name a first
    // owner, but onboarding refuses the device, naming both sites.
    let to_clone_owner = admin
        .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
            voucher: original.voucher.clone(),
            next_owner_public_key: owner.spki(),
            first_owner_salt: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let ch = challenge(original.rot_id.clone()).await.unwrap();
    let refused = op
        .onboard(onboard(
            to_clone_owner.voucher,
            &made[0].1,
            original.chain.clone(),
            ch,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        refused.metadata().get("trustline-refusal").unwrap(),
        "cross-site-clone"
    );
    assert!(
        refused.message().contains("site-a") && refused.message().contains("site-b"),
        "{}",
        refused.message()
    );

    // A site serves no Ownership: its token holds no voucher key.
    net.start_site(0).await.unwrap();
    let at_site = OwnershipClient::new(net.site_channel(0, setup::ADMIN, true).await.unwrap())
        .get_device_state(v1::GetDeviceStateRequest {
            rot_id: genuine.rot_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(at_site.code(), Code::Unimplemented, "{at_site:?}");
    net.stop_all().await.unwrap();

    // The hub's ledger of field events verifies offline.
    let (code, out, err) = trustline_tests::cli(
        BIN,
        &[
            "ledger".into(),
            "verify".into(),
            "--data-dir".into(),
            net.hub_dir.display().to_string(),
            "--json".into(),
        ],
    )
    .unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["entries"].as_u64().unwrap() >= 3, "{report}");
}
