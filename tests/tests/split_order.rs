//! An order split across two sites never exceeds its quantity (issue 13
//! item 3; 2.4.14.22, invariant 4): two enrolled sites on their own tokens,
//! one OEM order of 10 split 6 + 4 (each allocation with its own offline
//! allowance) opened at both; each site certifies up to its share and the
//! next device is refused `RESOURCE_EXHAUSTED` (`quota`) with no
//! certificate recorded for it; the hub, fed by both uplinks, counts 10
//! and flags nothing; an order whose allocations sum above its quantity is
//! refused at opening and not recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::time::Duration;

use ca_service::keys::KeyLabels;
use deploy::loopback::{Loopback, SiteSpec};
use hsm_sim::rot::{Fleet, SimulatedRot};
use site::setup;
use station::run::{self, Job, Mode, Outcome, RunConfig};
use station::sim::SimLink;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::registry_client::RegistryClient;
use trustline_proto::v1::uplink_client::UplinkClient;
use trustline_tests::{count, ledger_entries, open_test_token, test_limits};

/// Order `id` of `quantity` split as `parts` (site, quantity, allowance),
/// signed by the hub's order key.
fn split_order(
    net: &Loopback,
    id: &str,
    quantity: u64,
    parts: &[(&str, u64, u64)],
    vendors: &[String],
    fw: [u8; 32],
) -> v1::SignedStatement {
    let mut order = trustline_tests::order(id, "", quantity, vendors, fw);
    order.allocations = parts
        .iter()
        .map(|(site, quantity, offline_allowance)| v1::SiteAllocation {
            site: (*site).into(),
            quantity: *quantity,
            offline_allowance: *offline_allowance,
        })
        .collect();
    let key = net.hub_hsm().signer(&KeyLabels::default().order).unwrap();
    trustline_proto::statement::sign(&key, &order).unwrap()
}

async fn admin(net: &Loopback, i: usize) -> ProvisioningClient<tonic::transport::Channel> {
    ProvisioningClient::new(net.site_channel(i, setup::ADMIN, true).await.unwrap())
}

/// Provisions `rots` at site `i` under `order`, serials from `first`.
async fn provision(
    net: &Loopback,
    i: usize,
    order: &str,
    first: u64,
    rots: Vec<SimulatedRot>,
) -> Vec<Outcome> {
    let s = &net.sites[i];
    let station = setup::station_name(&s.name, &s.stations[0]);
    let channel = net.site_channel(i, &station, false).await.unwrap();
    let config = RunConfig {
        order_id: order.into(),
        mode: Mode::OnDevice,
        concurrency: 2,
        out_dir: None,
        first_serial: Some(first),
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
    run::run(channel, config, jobs).await.unwrap().0.outcomes
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

/// Checks site `i`'s run: exactly `share` provisioned, the rest refused at
/// certify for quota with no `CERTIFIED` entry of theirs; the site's
/// status shows its share used up (2.4.14.22, invariant 4).
async fn stopped_at_share(net: &Loopback, i: usize, outcomes: &[Outcome], share: u64) {
    let site = &net.sites[i].name;
    let provisioned = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Provisioned(_)))
        .count() as u64;
    assert_eq!(provisioned, share, "{site}: {outcomes:?}");
    let entries = ledger_entries(net.site_channel(i, setup::AUDITOR, true).await.unwrap())
        .await
        .unwrap();
    for o in outcomes {
        if let Outcome::Refused {
            stage,
            code,
            reason,
            known,
            ..
        } = o
        {
            assert_eq!(
                (*stage, *code, reason.as_str()),
                ("certify", Code::ResourceExhausted, "quota")
            );
            let rot = known.rot_id.clone().unwrap();
            assert!(
                !entries
                    .iter()
                    .any(|e| e.rot_id == rot && e.kind == v1::EventKind::Certified as i32),
                "{site}: nothing certified for the refused device"
            );
        } else {
            assert!(matches!(o, Outcome::Provisioned(_)), "{site}: {o:?}");
        }
    }
    let refused = outcomes.len() as u64 - share;
    assert_eq!(
        count(&entries, v1::EventKind::QuotaRejected) as u64,
        refused,
        "{site}: each refusal recorded as QUOTA_REJECTED"
    );
    for e in entries
        .iter()
        .filter(|e| e.kind == v1::EventKind::Certified as i32)
    {
        assert_eq!(&e.site, site);
        assert_eq!(
            e.quota.as_ref().map(|q| q.limit),
            Some(share),
            "its share is the limit"
        );
    }
    let status = admin(net, i)
        .await
        .get_order(v1::GetOrderRequest {
            order_id: "PO-SPLIT".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = status.share.unwrap();
    assert_eq!((s.site.as_str(), s.quantity), (site.as_str(), share));
    assert_eq!((status.certified, status.remaining), (share, 0));
    assert!(
        status.allowance_applies,
        "the allocation's allowance is the one enforced"
    );
}

/// 2.4.14.22, invariant 4: an order of 10 split 6 + 4 across two sites
/// certifies 6 at one and 4 at the other, never more than 10 together;
/// the hub counts 10 and flags nothing; allocations above the quantity
/// are refused at opening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_split_across_two_sites_never_exceeds_its_quantity() {
    transport::install_crypto_provider();
    let (_t0, hub_hsm) = open_test_token("split-hub").unwrap();
    let (_t1, a_ca) = open_test_token("split-a-ca").unwrap();
    let (_t2, a_ledger) = open_test_token("split-a-ledger").unwrap();
    let (_t3, b_ca) = open_test_token("split-b-ca").unwrap();
    let (_t4, b_ledger) = open_test_token("split-b-ledger").unwrap();
    let fleet = Fleet::builder().seed(151).genuine(12).build().unwrap();
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

    // Allocations above the quantity: refused at opening, nothing recorded.
    let over = split_order(
        &net,
        "PO-OVER",
        10,
        &[("site-a", 6, 0), ("site-b", 5, 0)],
        &vendors,
        fw,
    );
    let err = admin(&net, 0)
        .await
        .open_order(v1::OpenOrderRequest {
            signed_order: Some(over),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let missing = admin(&net, 0)
        .await
        .get_order(v1::GetOrderRequest {
            order_id: "PO-OVER".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // One signed order, opened at both sites; each allocation's allowance
    // equals its share, so a hub that cosigns late cannot make the run flaky.
    let signed = split_order(
        &net,
        "PO-SPLIT",
        10,
        &[("site-a", 6, 6), ("site-b", 4, 4)],
        &vendors,
        fw,
    );
    for i in 0..2 {
        admin(&net, i)
            .await
            .open_order(v1::OpenOrderRequest {
                signed_order: Some(signed.clone()),
            })
            .await
            .unwrap();
    }
    let mut rots: Vec<SimulatedRot> = fleet.into_devices().into_iter().map(|d| d.rot).collect();
    let at_b = rots.split_off(7);
    let a = provision(&net, 0, "PO-SPLIT", 1, rots).await;
    let b = provision(&net, 1, "PO-SPLIT", 51, at_b).await;
    stopped_at_share(&net, 0, &a, 6).await;
    stopped_at_share(&net, 1, &b, 4).await;

    // The hub sums both sites: 10 of 10, nothing over.
    synced(&net, 0).await;
    synced(&net, 1).await;
    let mut registry = RegistryClient::new(net.hub_channel(setup::AUDITOR).await.unwrap());
    let figures = registry
        .list_orders(v1::ListOrdersRequest {
            order_id: "PO-SPLIT".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let [order] = figures.orders.as_slice() else {
        panic!("{figures:?}")
    };
    assert_eq!((order.quantity, order.certified), (10, 10));
    assert!(!order.over_quantity && !order.terms_differ, "{order:?}");
    let mut sites: Vec<(String, u64, u64, bool)> = order
        .sites
        .iter()
        .map(|s| (s.site.clone(), s.allocation, s.certified, s.over_allocation))
        .collect();
    sites.sort();
    assert_eq!(
        sites,
        vec![
            ("site-a".into(), 6, 6, false),
            ("site-b".into(), 4, 4, false)
        ]
    );
    for o in a.iter().chain(&b) {
        if let Outcome::Refused { known, .. } = o {
            let err = registry
                .get_device(v1::GetDeviceRequest {
                    rot_id: known.rot_id.clone().unwrap(),
                    serial: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::NotFound,
                "the hub holds no refused device"
            );
        }
    }
    net.stop_all().await.unwrap();
}
