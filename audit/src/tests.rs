//! Unit tests of the analysis over entries built in memory (no ledger
//! files): each kind of finding, found exactly and only where it is.

use std::collections::BTreeMap;

use custody_ledger::EventKind;
use rcgen::KeyPair;
use trustline_proto::v1;

use super::analyze::{check_certificate, Analysis, AuditContext, Outcome};
use super::certs::{CaSet, DeviceCert};
use super::field::FieldIndex;
use super::report::FindingKind;
use super::synth::{self, Append, SyntheticDevice, SyntheticOem};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

/// Entries as the ledger would place them (seq and time filled in).
struct Entries {
    oem: SyntheticOem,
    list: Vec<v1::LedgerEntry>,
    time_ms: i64,
}

impl Entries {
    fn new() -> Self {
        Self {
            oem: SyntheticOem::generate().expect("oem"),
            list: Vec::new(),
            time_ms: T0,
        }
    }

    fn push(&mut self, a: Append) -> u64 {
        let seq = self.list.len() as u64;
        let d = a.draft;
        self.list.push(v1::LedgerEntry {
            seq,
            time_ms: self.time_ms,
            kind: d.kind as i32,
            rot_id: d.rot_id,
            serial: d.serial,
            site: d.site,
            actor: d.actor,
            order_id: d.order_id,
            payload: d.payload,
            ..Default::default()
        });
        seq
    }

    fn order(&mut self, id: &str, site: &str, quantity: u64) -> v1::ProductionOrder {
        let o = synth::order(
            id,
            site,
            quantity,
            &format!("{id}-"),
            (T0 - HOUR, T0 + 100 * HOUR),
        );
        let signed = self.oem.sign_order(&o).expect("sign");
        self.push(synth::order_opened(&o, signed));
        o
    }

    fn device(&self, o: &v1::ProductionOrder, n: u64) -> SyntheticDevice {
        SyntheticDevice::new(format!("{}-{n:09}", o.order_id)).expect("device")
    }

    /// Claims and certifies; returns the CERTIFIED entry.
    fn build(&mut self, o: &v1::ProductionOrder, d: &SyntheticDevice, station: &str) -> u64 {
        self.push(synth::claimed(o, d, station));
        let cert = self
            .oem
            .device_certificate(&d.serial, &d.rot_id, &d.key)
            .expect("cert");
        self.push(synth::certified(o, d, cert, &o.site, station))
    }

    fn context(&self, grace_ms: i64) -> AuditContext {
        AuditContext {
            order_key: self.oem.order_key_spki().to_vec(),
            ca: CaSet::new(&self.oem.ca_chain()).expect("ca"),
            in_flight_grace_ms: grace_ms,
        }
    }

    fn analyse(&self, grace_ms: i64, field: Option<FieldIndex>) -> Outcome {
        let ctx = self.context(grace_ms);
        let ca = ctx.ca.clone();
        let mut analysis = Analysis::new(ctx, field);
        let mut certs = super::report::Findings::default();
        for e in &self.list {
            if let Some(job) = analysis.observe_entry(e) {
                if let Some(f) = check_certificate(&ca, &job) {
                    certs.push(f);
                }
            }
        }
        let mut resolver = analysis.finish_pass1();
        if let Some(r) = resolver.as_mut() {
            for e in &self.list {
                r.observe_entry(&mut analysis, e);
            }
        }
        analysis.finish(resolver, certs)
    }
}

fn kinds(o: &Outcome) -> BTreeMap<FindingKind, u64> {
    o.findings.counts.clone()
}

fn entries_of(o: &Outcome, kind: FindingKind) -> Vec<Vec<u64>> {
    o.findings
        .items
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.entries.clone())
        .collect()
}

const ST1: &str = "station/site-a/st-01";
const ST2: &str = "station/site-a/st-02";

#[test]
fn a_clean_history_has_no_findings_and_counts_every_device() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 5);
    let devices: Vec<SyntheticDevice> = (1..=4).map(|n| e.device(&o, n)).collect();
    for d in &devices {
        e.build(&o, d, ST1);
    }
    e.push(synth::custody(
        EventKind::Shipped,
        &o,
        &devices[0],
        ST1,
        "out",
    ));
    e.push(synth::custody(
        EventKind::Received,
        &o,
        &devices[0],
        "station/site-b/st-01",
        "in",
    ));
    e.push(synth::custody(
        EventKind::Scrapped,
        &o,
        &devices[1],
        ST1,
        "crushed",
    ));
    let out = e.analyse(0, None);
    assert!(out.findings.is_empty(), "{:#?}", out.findings.items);
    let s = &out.orders[0];
    assert_eq!(
        (
            s.authorised,
            s.claimed,
            s.certified,
            s.shipped,
            s.scrapped,
            s.on_site
        ),
        (Some(5), 4, 4, 1, 1, 2)
    );
    assert!(s.signature_valid);
}

#[test]
fn duplicate_rots_keys_and_custody_anomalies_are_found_exactly() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 10);
    let a = e.device(&o, 1);
    let first = e.build(&o, &a, ST1);
    // The same RoT certified again with another serial and key (forced).
    let again = SyntheticDevice {
        serial: "PO-1-000000002".into(),
        ..e.device(&o, 2)
    };
    let again = SyntheticDevice {
        rot_id: a.rot_id.clone(),
        ..again
    };
    let cert = e
        .oem
        .device_certificate(&again.serial, &again.rot_id, &again.key)
        .expect("cert");
    let second = e.push(synth::certified(&o, &again, cert, "site-a", ST2).forced());
    // Another device carrying device a's key (a cloned key).
    let b = e.device(&o, 3);
    let key = KeyPair::from_pem(&a.key.serialize_pem()).expect("key");
    let b = SyntheticDevice {
        spki: a.spki.clone(),
        key,
        ..b
    };
    let b_cert = e.build(&o, &b, ST1);
    // Custody of a RoT never certified, and a certification without claim.
    let ghost = e.device(&o, 4);
    let shipped = e.push(synth::custody(EventKind::Shipped, &o, &ghost, ST1, "?"));
    let c = e.device(&o, 5);
    let cert = e
        .oem
        .device_certificate(&c.serial, &c.rot_id, &c.key)
        .expect("cert");
    let unclaimed = e.push(synth::certified(&o, &c, cert, "site-a", ST1));

    let out = e.analyse(0, None);
    assert_eq!(
        kinds(&out),
        BTreeMap::from([
            (FindingKind::DuplicateRot, 1),
            (FindingKind::DuplicateDeviceKey, 1),
            (FindingKind::CustodyWithoutCertificate, 1),
            (FindingKind::CertifiedWithoutClaim, 1),
        ]),
        "{:#?}",
        out.findings.items
    );
    assert_eq!(
        entries_of(&out, FindingKind::DuplicateRot),
        vec![vec![first, second]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::DuplicateDeviceKey),
        vec![vec![first, b_cert]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::CustodyWithoutCertificate),
        vec![vec![shipped]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::CertifiedWithoutClaim),
        vec![vec![unclaimed]]
    );
    // The re-certified RoT is one device on site, counted once.
    let s = &out.orders[0];
    assert_eq!((s.certified, s.on_site), (4, 3));
}

#[test]
fn scrapped_devices_that_reappear_are_findings() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 10);
    let a = e.device(&o, 1);
    e.build(&o, &a, ST1);
    let scrapped = e.push(synth::custody(EventKind::Scrapped, &o, &a, ST1, "crushed"));
    let shipped = e.push(synth::custody(EventKind::Shipped, &o, &a, ST1, "pallet 7"));
    // b is scrapped, and its very certificate turns up in the field.
    let b = e.device(&o, 2);
    e.push(synth::claimed(&o, &b, ST1));
    let b_der = e
        .oem
        .device_certificate(&b.serial, &b.rot_id, &b.key)
        .expect("cert");
    e.push(synth::certified(&o, &b, b_der.clone(), "site-a", ST1));
    e.push(synth::custody(EventKind::Scrapped, &o, &b, ST1, "crushed"));
    let mut field = FieldIndex::default();
    field.add(
        "seen/b.der".into(),
        DeviceCert::parse(&b_der).expect("parse"),
        true,
    );
    let out = e.analyse(0, Some(field));
    assert_eq!(
        kinds(&out),
        BTreeMap::from([
            (FindingKind::ShippedAfterScrapped, 1),
            (FindingKind::FieldScrapped, 1)
        ]),
        "{:#?}",
        out.findings.items
    );
    assert_eq!(
        entries_of(&out, FindingKind::ShippedAfterScrapped)[0],
        vec![scrapped, shipped]
    );
}

#[test]
fn certificates_and_orders_are_checked_against_the_oem_keys() {
    let mut e = Entries::new();
    let good = e.order("PO-1", "site-a", 10);
    // An order signed by someone else's key.
    let forged = synth::order("PO-X", "site-a", 10, "PO-X-", (T0 - HOUR, T0 + HOUR));
    let stranger = SyntheticOem::generate().expect("stranger");
    let forged_entry = e.push(synth::order_opened(
        &forged,
        stranger.sign_order(&forged).expect("sign"),
    ));
    let x = e.device(&forged, 1);
    let under_forged = e.build(&forged, &x, ST1);
    // A certificate from another CA; one naming another serial.
    let d1 = e.device(&good, 1);
    e.push(synth::claimed(&good, &d1, ST1));
    let foreign = stranger
        .device_certificate(&d1.serial, &d1.rot_id, &d1.key)
        .expect("cert");
    let foreign_entry = e.push(synth::certified(&good, &d1, foreign, "site-a", ST1));
    let d2 = e.device(&good, 2);
    e.push(synth::claimed(&good, &d2, ST1));
    let wrong = e
        .oem
        .device_certificate("PO-1-000000099", &d2.rot_id, &d2.key)
        .expect("cert");
    let wrong_entry = e.push(synth::certified(&good, &d2, wrong, "site-a", ST1));
    // Built at the wrong site, with a serial outside the scheme, and after
    // the window.
    let d3 = e.device(&good, 3);
    e.push(synth::claimed(&good, &d3, ST1));
    let cert = e
        .oem
        .device_certificate(&d3.serial, &d3.rot_id, &d3.key)
        .expect("cert");
    let wrong_site = e.push(synth::certified(
        &good,
        &d3,
        cert,
        "site-b",
        "station/site-b/st-01",
    ));
    let d4 = SyntheticDevice {
        serial: "ZZ-1".into(),
        ..e.device(&good, 4)
    };
    let outside_scheme = e.build(&good, &d4, ST1);
    e.time_ms = T0 + 200 * HOUR;
    let d5 = e.device(&good, 5);
    let late = e.build(&good, &d5, ST1);

    let out = e.analyse(0, None);
    assert_eq!(
        kinds(&out),
        BTreeMap::from([
            (FindingKind::OrderSignatureInvalid, 1),
            (FindingKind::CertifiedWithoutValidOrder, 1),
            (FindingKind::CertificateInvalid, 2),
            (FindingKind::CertifiedAtWrongSite, 1),
            (FindingKind::SerialOutsideScheme, 1),
            (FindingKind::CertifiedOutsideWindow, 1),
        ]),
        "{:#?}",
        out.findings.items
    );
    assert_eq!(
        entries_of(&out, FindingKind::OrderSignatureInvalid),
        vec![vec![forged_entry]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::CertifiedWithoutValidOrder),
        vec![vec![under_forged]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::CertificateInvalid),
        vec![vec![foreign_entry], vec![wrong_entry]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::CertifiedAtWrongSite),
        vec![vec![wrong_site]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::SerialOutsideScheme),
        vec![vec![outside_scheme]]
    );
    assert_eq!(
        entries_of(&out, FindingKind::CertifiedOutsideWindow),
        vec![vec![late]]
    );
    let forged_summary = out
        .orders
        .iter()
        .find(|o| o.order_id == "PO-X")
        .expect("order");
    assert!(!forged_summary.signature_valid);
    assert_eq!(forged_summary.authorised, None);
}

#[test]
fn weak_algorithms_in_recorded_certificates_are_findings() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 10);
    // A device key on P-384 (the intermediate still signs with
    // ecdsa-with-SHA256): not the P-256 every Trustline key must be.
    let d = e.device(&o, 1);
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    let d = SyntheticDevice {
        spki: rcgen::PublicKeyData::subject_public_key_info(&p384),
        key: p384,
        ..d
    };
    let weak = e.build(&o, &d, ST1);
    let out = e.analyse(0, None);
    assert_eq!(
        kinds(&out),
        BTreeMap::from([(FindingKind::CertificateInvalid, 1)])
    );
    assert_eq!(
        entries_of(&out, FindingKind::CertificateInvalid),
        vec![vec![weak]]
    );
    assert!(
        out.findings.items[0].message.contains("not a P-256 key"),
        "{}",
        out.findings.items[0].message
    );
}

#[test]
fn gaps_respect_the_in_flight_grace_and_refusals_explain_them() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 10);
    let stuck = e.device(&o, 1);
    let claim = e.push(synth::claimed(&o, &stuck, ST1));
    let clone = e.device(&o, 2);
    e.push(synth::claimed(&o, &clone, ST1));
    e.push(synth::rejected(
        EventKind::DuplicateRejected,
        &o,
        &clone.rot_id,
        &clone.serial,
        ST1,
        "certify",
        "serial is already certified",
    ));
    e.time_ms = T0 + HOUR;
    let d = e.device(&o, 3);
    e.build(&o, &d, ST1);

    let strict = e.analyse(10 * 60 * 1000, None);
    assert_eq!(
        kinds(&strict),
        BTreeMap::from([(FindingKind::ClaimedNotCertified, 1)])
    );
    assert_eq!(
        entries_of(&strict, FindingKind::ClaimedNotCertified),
        vec![vec![claim]]
    );
    let s = &strict.orders[0];
    assert_eq!(
        (
            s.claimed,
            s.claimed_not_certified,
            s.refused_after_claim,
            s.in_flight
        ),
        (3, 1, 1, 0)
    );

    let lenient = e.analyse(2 * HOUR, None);
    assert!(lenient.findings.is_empty());
    assert_eq!(lenient.orders[0].in_flight, 1);
}

/// 2.4.14.22, invariant 4: in a site's ledger, an order split across
/// sites is certified at an allocated site without a finding, up to that
/// site's share; beyond it is over quota, and at a site with no
/// allocation it is the wrong site.
#[test]
fn a_split_order_is_checked_against_the_sites_share() {
    let mut e = Entries::new();
    let mut o = synth::order("PO-S", "", 5, "PO-S-", (T0 - HOUR, T0 + 100 * HOUR));
    o.allocations = vec![
        v1::SiteAllocation {
            site: "site-a".into(),
            quantity: 2,
            offline_allowance: 0,
        },
        v1::SiteAllocation {
            site: "site-b".into(),
            quantity: 3,
            offline_allowance: 0,
        },
    ];
    let signed = e.oem.sign_order(&o).expect("sign");
    let mut opened = synth::order_opened(&o, signed);
    opened.draft.site = "site-a".into();
    e.push(opened);
    let mut seqs = Vec::new();
    for n in 1..=3 {
        let d = e.device(&o, n);
        e.push(synth::claimed(&o, &d, ST1));
        let cert = e
            .oem
            .device_certificate(&d.serial, &d.rot_id, &d.key)
            .expect("cert");
        seqs.push(e.push(synth::certified(&o, &d, cert, "site-a", ST1)));
    }
    let out = e.analyse(0, None);
    assert_eq!(kinds(&out), BTreeMap::from([(FindingKind::OverQuota, 1)]));
    assert_eq!(
        entries_of(&out, FindingKind::OverQuota),
        vec![vec![seqs[2]]]
    );
    assert_eq!(out.orders[0].site, "site-a,site-b");

    let d = e.device(&o, 4);
    e.push(synth::claimed(&o, &d, ST1));
    let cert = e
        .oem
        .device_certificate(&d.serial, &d.rot_id, &d.key)
        .expect("cert");
    let at_c = e.push(synth::certified(
        &o,
        &d,
        cert,
        "site-c",
        "station/site-c/st-01",
    ));
    let out = e.analyse(0, None);
    assert_eq!(
        entries_of(&out, FindingKind::CertifiedAtWrongSite),
        vec![vec![at_c]]
    );
}

#[test]
fn over_quota_names_the_entries_beyond_the_quantity() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 2);
    let mut last = Vec::new();
    for n in 1..=4 {
        let d = e.device(&o, n);
        last.push(e.build(&o, &d, ST1));
    }
    let out = e.analyse(0, None);
    assert_eq!(kinds(&out), BTreeMap::from([(FindingKind::OverQuota, 1)]));
    assert_eq!(
        entries_of(&out, FindingKind::OverQuota),
        vec![last[2..].to_vec()]
    );
    assert_eq!(
        (out.orders[0].authorised, out.orders[0].certified),
        (Some(2), 4)
    );
}

#[test]
fn refusals_are_grouped_by_site_and_station_and_bucketed_by_time() {
    let mut e = Entries::new();
    let o = e.order("PO-1", "site-a", 10);
    for (i, station) in [ST1, ST1, ST2].iter().enumerate() {
        e.time_ms = T0 + i as i64 * 5 * HOUR;
        e.push(synth::rejected(
            EventKind::CounterfeitRejected,
            &o,
            &"ab".repeat(32),
            "",
            station,
            "claim",
            "unknown vendor",
        ));
    }
    let out = e.analyse(0, None);
    assert!(out.findings.is_empty());
    let groups: Vec<(&str, &str, u64)> = out
        .refusals
        .groups
        .iter()
        .map(|g| (g.kind, g.actor.as_str(), g.count))
        .collect();
    assert_eq!(
        groups,
        vec![("counterfeit", ST1, 2), ("counterfeit", ST2, 1)]
    );
    let total: u64 = out.refusals.timeline.iter().map(|b| b.counterfeit).sum();
    assert_eq!(total, 3);
    assert_eq!(
        out.refusals.timeline.len(),
        11,
        "hourly buckets over 10 hours"
    );
    assert_eq!(out.orders[0].counterfeit_rejected, 3);
}

#[test]
fn fingerprints_find_repeats_only() {
    use super::fingerprint::{repeated, serial_fp};
    let mut fps = vec![
        serial_fp("a"),
        serial_fp("b"),
        serial_fp("a"),
        serial_fp("c"),
    ];
    let r = repeated(&mut fps);
    assert_eq!(r.len(), 1);
    assert!(r.contains(&serial_fp("a")));
}
