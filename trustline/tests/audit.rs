//! The audit over real ledger files (issue 6): a seeded two-site ledger
//! written through the custody ledger's public API with the line's payloads
//! and constraints; planted anomalies — an over-quota certificate forced
//! past the quota, a duplicate serial across sites, a certificate seen in
//! the field but never recorded, a tampered entry — are reported exactly,
//! and a clean ledger has no findings (2.4.14.3, 2.4.14.4, 2.4.14.22).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use audit::report::{AuditReport, FindingKind};
use audit::synth::{seed_scenario, Plant, Scenario};
use audit::{self, AuditOptions, LedgerSource};
use custody_ledger::format;
use prost::Message;
use trustline_proto::v1;

fn pem_contents(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).expect("read pem");
    pem::parse_many(text)
        .expect("pem")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// The OEM's keys as an auditor holds them (here: the files the seeder
/// wrote), and the field sightings.
fn options(s: &Scenario) -> AuditOptions {
    let ca = s.data_dir.join("ca");
    let mut ca_certificates = pem_contents(&ca.join("site-intermediate.pem"));
    ca_certificates.extend(pem_contents(&ca.join("oem-root.pem")));
    AuditOptions {
        order_key: pem_contents(&ca.join("order-key.pub.pem")).remove(0),
        ledger_key: Some(pem_contents(&s.data_dir.join("ledger/ledger-key.pub.pem")).remove(0)),
        ca_certificates,
        field_dir: Some(s.field_dir.clone()),
        in_flight_grace_ms: 0,
        jobs: 2,
        ..AuditOptions::default()
    }
}

fn kinds(r: &AuditReport) -> BTreeMap<FindingKind, u64> {
    r.findings.counts.clone()
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .args(args)
        .output()
        .expect("run trustline");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn audit_json(s: &Scenario) -> (i32, serde_json::Value) {
    let data = s.data_dir.to_str().expect("utf-8 path");
    let field = s.field_dir.to_str().expect("utf-8 path");
    let out = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .args([
            "audit",
            "--data-dir",
            data,
            "--field",
            field,
            "--format",
            "json",
            "--no-progress",
        ])
        .args(["--in-flight-grace", "0"])
        .output()
        .expect("run trustline");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn a_clean_ledger_has_no_findings() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = seed_scenario(dir.path(), &Plant::default()).expect("seed");
    let report =
        audit::run(&LedgerSource::DataDir(s.data_dir.clone()), &options(&s)).expect("audit");
    assert!(report.ledger.verified, "{}", report.ledger.verify_message);
    assert!(report.findings.is_empty(), "{:#?}", report.findings.items);
    assert_eq!(report.ledger.entries, s.entries);
    let a = &report.orders[0];
    assert_eq!(a.order_id, "PO-A");
    // 6 claimed: five certified (3 shipped, 1 scrapped, 1 on site) and one
    // refused over quota and scrapped.
    assert_eq!(
        (
            a.authorised,
            a.claimed,
            a.certified,
            a.shipped,
            a.scrapped,
            a.on_site,
            a.quota_rejected
        ),
        (Some(5), 6, 5, 3, 1, 1, 1)
    );
    let b = &report.orders[1];
    assert_eq!(
        (
            b.authorised,
            b.claimed,
            b.certified,
            b.shipped,
            b.on_site,
            b.duplicate_rejected
        ),
        (Some(5), 4, 3, 1, 2, 1)
    );
    let field = report.field.as_ref().expect("field");
    assert_eq!((field.certificates, field.recorded), (2, 2));
    assert_eq!(report.refusals.groups.len(), 3);

    let (code, json) = audit_json(&s);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["findings"]["counts"], serde_json::json!({}));
}

#[test]
fn planted_anomalies_are_reported_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let plant = Plant {
        over_quota: true,
        duplicate_serial: true,
        unrecorded_in_field: true,
    };
    let s = seed_scenario(dir.path(), &plant).expect("seed");
    let export = dir.path().join("ledger.export");
    let storage =
        custody_ledger::storage::FileStorage::open(&s.data_dir.join("ledger")).expect("storage");
    custody_ledger::export::export(&storage, &export).expect("export");

    for source in [
        LedgerSource::DataDir(s.data_dir.clone()),
        LedgerSource::Export(export.clone()),
    ] {
        let report = audit::run(&source, &options(&s)).expect("audit");
        assert!(report.ledger.verified, "{}", report.ledger.verify_message);
        assert_eq!(
            kinds(&report),
            BTreeMap::from([
                (FindingKind::OverQuota, 1),
                (FindingKind::DuplicateSerial, 1),
                (FindingKind::FieldUnrecorded, 1),
            ]),
            "{}: {:#?}",
            source.describe(),
            report.findings.items
        );
        let find = |k: FindingKind| {
            report
                .findings
                .items
                .iter()
                .find(|f| f.kind == k)
                .expect("finding")
        };
        let over = find(FindingKind::OverQuota);
        assert_eq!(over.entries, vec![s.over_quota_entry.expect("planted")]);
        assert_eq!(over.order_id, "PO-A");
        let dup = find(FindingKind::DuplicateSerial);
        let (first, second) = s.duplicate_serial_entries.expect("planted");
        assert_eq!(dup.entries, vec![first, second]);
        assert_eq!(dup.serial, s.duplicate_serial);
        assert_eq!(dup.site, "site-a,site-b");
        let field = find(FindingKind::FieldUnrecorded);
        assert_eq!(
            field.file,
            s.unrecorded_file
                .as_ref()
                .expect("planted")
                .display()
                .to_string()
        );
        assert!(
            field.message.contains("chains to the oem ca"),
            "{}",
            field.message
        );
        // The per-order figures show the overproduction.
        let figures: Vec<(String, Option<u64>, u64)> = report
            .orders
            .iter()
            .map(|o| (o.order_id.clone(), o.authorised, o.certified))
            .collect();
        let expected: Vec<(String, Option<u64>, u64)> = s
            .orders
            .iter()
            .map(|(id, a, c)| (id.clone(), Some(*a), *c))
            .collect();
        assert_eq!(figures, expected);
    }

    let (code, json) = audit_json(&s);
    assert_eq!(code, 1, "findings exit 1: {json}");
    assert_eq!(
        json["findings"]["counts"],
        serde_json::json!({"over-quota": 1, "duplicate-serial": 1, "field-unrecorded": 1})
    );
}

/// Rewrites entry `seq`'s serial in the segment files, re-framing the
/// record with a valid checksum: only the hash chain and the signed
/// checkpoints can tell.
fn tamper_serial(ledger_dir: &Path, seq: u64, to: &str) {
    let mut segments: Vec<_> = std::fs::read_dir(ledger_dir)
        .expect("ledger dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    for path in segments {
        let bytes = std::fs::read(&path).expect("segment");
        let mut out = bytes[..format::HEADER_LEN].to_vec();
        let mut at = format::HEADER_LEN;
        let mut changed = false;
        while at + format::RECORD_HEADER_LEN <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("len")) as usize;
            let total = format::RECORD_HEADER_LEN + len;
            let record = &bytes[at..at + total];
            let body = &record[format::RECORD_BODY..];
            let is_target = record[format::RECORD_KIND] == format::KIND_ENTRY
                && u64::from_le_bytes(body[..8].try_into().expect("seq")) == seq;
            if is_target {
                let mut entry =
                    v1::LedgerEntry::decode(&body[format::ENTRY_BYTES..]).expect("entry");
                assert_eq!(entry.serial.len(), to.len(), "keep the length");
                entry.serial = to.to_owned();
                format::encode_entry(seq, &entry.encode_to_vec(), &mut out);
                changed = true;
            } else {
                out.extend_from_slice(record);
            }
            at += total;
        }
        if changed {
            std::fs::write(&path, out).expect("write segment");
            return;
        }
    }
    panic!("entry {seq} not found");
}

#[test]
fn a_tampered_entry_is_the_only_finding_and_stops_the_audit() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = seed_scenario(dir.path(), &Plant::default()).expect("seed");
    let victim = s.certified_entries[1];
    tamper_serial(&s.data_dir.join("ledger"), victim, "SN-000000999");
    let report =
        audit::run(&LedgerSource::DataDir(s.data_dir.clone()), &options(&s)).expect("audit");
    assert!(!report.ledger.verified);
    assert_eq!(
        kinds(&report),
        BTreeMap::from([(FindingKind::LedgerVerifyFailed, 1)])
    );
    let f = &report.findings.items[0];
    // The next entry's prev_hash no longer matches the altered one.
    assert_eq!(f.entries, vec![victim + 1], "{}", f.message);
    assert!(f.message.contains("altered"), "{}", f.message);
    // The audit stopped: nothing after verification was reported.
    assert!(report.orders.is_empty());
    assert!(report.field.is_none());

    let (code, json) = audit_json(&s);
    assert_eq!(code, 1);
    assert_eq!(
        json["findings"]["counts"],
        serde_json::json!({"ledger-verify-failed": 1})
    );
    let (code, text) = cli(&[
        "audit",
        "--data-dir",
        s.data_dir.to_str().expect("utf-8"),
        "--no-progress",
    ]);
    assert_eq!(code, 1);
    assert!(text.contains("NOT VERIFIED"), "{text}");
}

/// Issue 14: `trustline audit --ledger postgres://…` audits a ledger moved
/// into PostgreSQL and finds exactly what it finds in the files.
#[test]
fn an_audit_of_the_ledger_in_postgresql_finds_what_the_files_show() {
    let dir = tempfile::tempdir().expect("tmp");
    let plant = Plant {
        over_quota: true,
        duplicate_serial: true,
        unrecorded_in_field: true,
    };
    let s = seed_scenario(dir.path(), &plant).expect("seed");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = pg_store::cluster::Cluster::start().expect("cluster");
    let url = rt.block_on(cluster.create_database("audit")).expect("db");
    rt.block_on(pg_store::records::import_dir(
        &s.data_dir.join("ledger"),
        &url,
    ))
    .expect("migrate");
    let ca = s.data_dir.join("ca");
    let key = s.data_dir.join("ledger/ledger-key.pub.pem");
    let (files_code, files) = audit_json(&s);
    let field = s.field_dir.to_str().expect("utf-8 path");
    let (code, out) = cli(&[
        "audit",
        "--ledger",
        &url,
        "--ledger-key",
        key.to_str().expect("utf-8"),
        "--order-key",
        ca.join("order-key.pub.pem").to_str().expect("utf-8"),
        "--ca-cert",
        ca.join("oem-root.pem").to_str().expect("utf-8"),
        "--ca-cert",
        ca.join("site-intermediate.pem").to_str().expect("utf-8"),
        "--field",
        field,
        "--format",
        "json",
        "--no-progress",
        "--in-flight-grace",
        "0",
    ]);
    let start = out.find('{').unwrap_or(0);
    let pg: serde_json::Value =
        serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, files_code);
    assert_eq!(pg["ledger"]["entries"], files["ledger"]["entries"]);
    assert_eq!(pg["ledger"]["verified"], serde_json::json!(true));
    assert_eq!(pg["findings"], files["findings"]);
    assert_eq!(pg["orders"], files["orders"]);
}
