//! The registry across sites (issue 13.3, 2.4.14.4, 2.4.14.22): a serial,
//! rot_id or device key certified at two sites is a cross-site clone,
//! recorded and marked for onboarding to refuse; an order split across
//! sites is summed and any excess flagged.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use common::{hub, sign_order, sync, Device, Oem, Site, WitnessKey};
use custody_ledger::EventKind;
use hub::model::{CustodyState, IdentityKind};
use hub::store::DeviceQuery;
use trustline_proto::signer::{Signer, SoftwareSigner};

#[test]
fn the_same_serial_rot_id_or_device_key_at_two_sites_is_a_cross_site_clone() {
    let dir = tempfile::tempdir().unwrap();
    let oem = Oem::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    let b = Site::open("site-b", &dir.path().join("b"));
    a.open_order(oem.order("PO-A", "site-a", 10, &[]), "PO-A");
    b.open_order(oem.order("PO-B", "site-b", 10, &[]), "PO-B");
    let genuine = a.certify_many("g", 4, "PO-A", 10);
    // Site B presents one identity of each of three genuine devices.
    let mut serial_clone = Device::new("c1");
    serial_clone.serial = genuine[0].serial.clone();
    let mut rot_clone = Device::new("c2");
    rot_clone.rot_id = genuine[1].rot_id.clone();
    let mut key_clone = Device::new("c3");
    key_clone.key = genuine[2].key.clone();
    let honest = Device::new("b-own");
    for d in [&serial_clone, &rot_clone, &key_clone, &honest] {
        b.certify(d, "PO-B", 10);
    }
    b.custody(EventKind::Scrapped, &rot_clone, "PO-B");
    let key = WitnessKey::new();
    let hub = hub(
        &dir.path().join("hub"),
        &key,
        &[a.config(), b.config()],
        None,
    );
    sync(&hub, &a, &a.checkpoint()).unwrap();
    sync(&hub, &b, &b.checkpoint()).unwrap();

    let mut clones = hub.clones().unwrap();
    clones.sort_by_key(|c| c.kind);
    let kinds: Vec<IdentityKind> = clones.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            IdentityKind::Serial,
            IdentityKind::RotId,
            IdentityKind::DeviceKey
        ]
    );
    for c in &clones {
        let mut sites: Vec<&str> = c.holders.iter().map(|h| h.site.as_str()).collect();
        sites.sort_unstable();
        assert_eq!(sites, ["site-a", "site-b"], "{:?}", c.kind);
    }
    assert_eq!(clones[0].value, genuine[0].serial.as_bytes());
    // Both holders are marked; the honest devices are not.
    let by_serial = hub
        .devices(&DeviceQuery::Serial(genuine[0].serial.clone()))
        .unwrap();
    assert_eq!(by_serial.len(), 2);
    assert!(by_serial.iter().all(|d| d.cross_site_clone));
    let by_rot = hub
        .devices(&DeviceQuery::RotId(genuine[1].rot_id.clone()))
        .unwrap();
    assert_eq!(by_rot.len(), 2);
    assert!(by_rot.iter().all(|d| d.cross_site_clone));
    let scrapped = by_rot.iter().find(|d| d.site == "site-b").unwrap();
    assert_eq!(scrapped.state, CustodyState::Scrapped);
    for d in [&genuine[2], &key_clone] {
        let recs = hub.devices(&DeviceQuery::RotId(d.rot_id.clone())).unwrap();
        assert_eq!(recs.len(), 1);
        assert!(recs[0].cross_site_clone);
    }
    for d in [&genuine[3], &honest] {
        let recs = hub.devices(&DeviceQuery::RotId(d.rot_id.clone())).unwrap();
        assert_eq!(recs.len(), 1);
        assert!(!recs[0].cross_site_clone);
        assert!(!recs[0].certificate.is_empty());
    }
    // A resend counts no clone twice.
    hub.push_entries("site-b", 0, b.entries(0, b.ledger.size()))
        .unwrap();
    assert_eq!(hub.clones().unwrap().len(), 3);
}

#[test]
fn an_order_split_across_sites_is_summed_and_any_excess_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let oem = Oem::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    let b = Site::open("site-b", &dir.path().join("b"));
    let c = Site::open("site-c", &dir.path().join("c"));
    // One signed order of 5: three at site A, two at site B.
    let split = oem.order("PO-S", "", 5, &[("site-a", 3), ("site-b", 2)]);
    a.open_order(split.clone(), "PO-S");
    b.open_order(split, "PO-S");
    // Each site enforces its own share locally, offline.
    a.certify_many("a", 3, "PO-S", 3);
    assert!(a.try_certify(&Device::new("a-extra"), "PO-S", 3).is_err());
    b.certify_many("b", 2, "PO-S", 2);
    // Site C opened an order the OEM never signed, under the same id.
    let rogue_key = SoftwareSigner::generate();
    c.open_order(sign_order(&rogue_key, "PO-S", "site-c", 5, &[]), "PO-S");
    let key = WitnessKey::new();
    let order_key = Some(oem.order_key.public_key_der().to_vec());
    let sites = [a.config(), b.config(), c.config()];
    let hub = hub(&dir.path().join("hub"), &key, &sites, order_key);
    sync(&hub, &a, &a.checkpoint()).unwrap();
    sync(&hub, &b, &b.checkpoint()).unwrap();
    sync(&hub, &c, &c.checkpoint()).unwrap();

    let o = hub.orders(Some("PO-S")).unwrap().remove(0);
    assert_eq!((o.quantity, o.certified), (5, 5));
    assert!(!o.over_quantity);
    let row = |site: &str| o.sites.iter().find(|r| r.site == site).unwrap().clone();
    assert_eq!((row("site-a").allocation, row("site-a").certified), (3, 3));
    assert_eq!((row("site-b").allocation, row("site-b").certified), (2, 2));
    assert!(!row("site-a").over_allocation() && !row("site-b").over_allocation());
    // The unsigned order allocates nothing.
    assert_eq!(row("site-c").allocation, 0);
    assert!(o.terms_differ);

    // A compromised site B declares itself a larger quota: its own ledger
    // lets it, the hub's sum does not.
    b.certify_many("b-over", 1, "PO-S", 10);
    c.certify_many("c", 1, "PO-S", 10);
    sync(&hub, &b, &b.checkpoint()).unwrap();
    sync(&hub, &c, &c.checkpoint()).unwrap();
    let o = hub.orders(Some("PO-S")).unwrap().remove(0);
    assert_eq!(o.certified, 7);
    assert!(o.over_quantity);
    let b_row = o.sites.iter().find(|r| r.site == "site-b").unwrap();
    assert!(b_row.over_allocation());
    let c_row = o.sites.iter().find(|r| r.site == "site-c").unwrap();
    assert!(c_row.over_allocation());
    assert!(!o
        .sites
        .iter()
        .find(|r| r.site == "site-a")
        .unwrap()
        .over_allocation());
    // Per-site figures agree.
    let figures = hub.site_figures().unwrap();
    let certified: Vec<u64> = figures.iter().map(|(_, c)| c.certified).collect();
    assert_eq!(certified, [3, 3, 1]);
    assert_eq!(hub.orders(None).unwrap().len(), 1);
}

#[test]
fn allocations_follow_the_signed_order() {
    let single = trustline_proto::v1::ProductionOrder {
        site: "site-a".into(),
        quantity: 7,
        ..Default::default()
    };
    assert_eq!(hub::allocation_of(&single, "site-a"), 7);
    assert_eq!(hub::allocation_of(&single, "site-b"), 0);
    let split = trustline_proto::v1::ProductionOrder {
        quantity: 7,
        allocations: vec![
            trustline_proto::v1::SiteAllocation {
                site: "site-a".into(),
                quantity: 4,
                offline_allowance: 1,
            },
            trustline_proto::v1::SiteAllocation {
                site: "site-b".into(),
                quantity: 3,
                offline_allowance: 1,
            },
        ],
        ..Default::default()
    };
    assert_eq!(hub::allocation_of(&split, "site-a"), 4);
    assert_eq!(hub::allocation_of(&split, "site-b"), 3);
    assert_eq!(hub::allocation_of(&split, "site-c"), 0);
}
