//! Unit tests of the questionnaire: every row answered once, applicability
//! by class, and the shape of each output format.

use super::controls::{Status, CONTROLS};
use super::requirements::{self, Applicability};
use super::*;

#[test]
fn every_requirement_has_exactly_one_control_and_no_control_is_orphaned() {
    let reqs = requirements::all();
    for r in &reqs {
        let n = CONTROLS.iter().filter(|c| c.req == r.number).count();
        assert_eq!(n, 1, "{} has {n} controls", r.number);
    }
    for c in CONTROLS {
        assert!(
            reqs.iter().any(|r| r.number == c.req),
            "control for unknown row {}",
            c.req
        );
    }
}

#[test]
fn rows_say_who_supplies_what() {
    for c in CONTROLS {
        match c.status {
            Status::Trustline => {
                assert!(
                    !c.tests.is_empty(),
                    "{} claims Trustline meets it but names no test",
                    c.req
                );
                assert!(
                    c.oem.is_empty(),
                    "{} is Trustline's alone but asks the oem for {}",
                    c.req,
                    c.oem
                );
            }
            Status::Shared => {
                assert!(
                    !c.tests.is_empty(),
                    "{} claims a Trustline part but names no test",
                    c.req
                );
                assert!(
                    !c.oem.is_empty(),
                    "{} is shared but says nothing of the oem's part",
                    c.req
                );
            }
            Status::Oem => assert!(
                !c.oem.is_empty(),
                "{} must say what the oem supplies",
                c.req
            ),
        }
    }
}

#[test]
fn applicability_follows_the_class() {
    let at = |class: u8, req: &str| {
        build(class, None)
            .rows
            .into_iter()
            .find(|r| r.req_no == req)
            .map(|r| r.applicability)
            .expect("row")
    };
    // "Mandatory for Class 2 and above".
    assert_eq!(at(1, "2.4.14.22"), Applicability::NotApplicable);
    assert_eq!(at(2, "2.4.14.22"), Applicability::Mandatory);
    // "Mandatory for Class 1 and above".
    assert_eq!(at(0, "2.4.14.3"), Applicability::NotApplicable);
    assert_eq!(at(1, "2.4.14.3"), Applicability::Mandatory);
    // "Mandatory for all classes", "Advisory for all classes".
    assert_eq!(at(0, "2.4.14.20"), Applicability::Mandatory);
    assert_eq!(at(4, "2.4.14.2"), Applicability::Advisory);
}

#[test]
fn every_format_carries_every_row() {
    let live = LiveEvidence {
        source: "test".into(),
        verified: true,
        verify_message: "verified: 3 entries".into(),
        entries: 3,
        checkpoint_size: Some(3),
        checkpoint_root: "ab".repeat(32),
        ..LiveEvidence::default()
    };
    let e = build(2, Some(live));
    assert_eq!(e.rows.len(), requirements::all().len());
    let csv = csv(&e);
    // Header plus one record per row; quoted newlines never occur.
    assert_eq!(csv.matches("\r\n").count(), e.rows.len() + 1);
    assert!(csv
        .starts_with("Req No,Requirement,Applicability,How it is met,Evidence,Responsibility\r\n"));
    let md = markdown(&e);
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| 2.4.")).count(),
        e.rows.len()
    );
    let json: serde_json::Value = serde_json::from_str(&json(&e)).expect("json");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(e.rows.len()));
    let quota = e
        .rows
        .iter()
        .find(|r| r.req_no == "2.4.14.22")
        .expect("row");
    assert!(
        quota.live.contains("latest checkpoint size 3"),
        "{}",
        quota.live
    );
    assert!(quota
        .evidence
        .contains("trustline/tests/audit.rs::planted_anomalies_are_reported_exactly"));
}
