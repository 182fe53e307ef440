//! Assurance evidence: the IoT Security Foundation Assurance Framework 3.0
//! questionnaire rows this production system answers — 2.4.14, 2.4.16 and
//! the identity and key rows — at a chosen assurance class, with how each
//! is met, who is responsible, the tests that prove Trustline's part and
//! live evidence from the ledger (section 2.3's evidence process).
//!
//! Key design decision: the rows are the framework's own text embedded in
//! the binary ([`requirements`]), and the answers come from one table in
//! code ([`controls`]) that names real tests — a test of this crate checks
//! that each named test exists — so the questionnaire cannot drift from
//! what the code does without a test failing.

pub mod controls;
pub mod live;
mod render;
pub mod requirements;
#[cfg(test)]
mod tests;

use serde::Serialize;
use trustline_proto::v1::EventKind;

use controls::{Control, Live, Status};
pub use live::LiveEvidence;
pub use render::{csv, json, markdown};
use requirements::{Applicability, Requirement};

/// One answered questionnaire row.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceRow {
    /// "2.4.14.22".
    pub req_no: &'static str,
    /// The section it is listed under.
    pub section: &'static str,
    /// The requirement, verbatim.
    pub requirement: &'static str,
    /// The framework's applicability column, verbatim.
    pub applicability_rule: &'static str,
    /// Applicability at the chosen class.
    pub applicability: Applicability,
    /// Who meets it.
    pub status: Status,
    /// How it is met.
    pub how_met: String,
    /// Tests that prove Trustline's part, as `path::function`.
    pub tests: Vec<String>,
    /// Live evidence from the ledger, in words.
    pub live: String,
    /// Evidence, in words (tests and live evidence, or what the OEM must
    /// show).
    pub evidence: String,
    /// Responsibility, in words.
    pub responsibility: String,
    /// What the OEM must supply (empty when nothing).
    pub oem_must_supply: &'static str,
}

/// The questionnaire at one class.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The assurance class (0 to 4).
    pub class: u8,
    /// When it was made, Unix ms.
    pub generated_at_ms: i64,
    /// The ledger it was made from, if any.
    pub ledger: Option<LiveEvidence>,
    /// The rows, in framework order.
    pub rows: Vec<EvidenceRow>,
    /// Attribution of the requirement texts.
    pub attribution: &'static str,
}

/// Builds the questionnaire at `class`, with live evidence from `ledger`
/// when given.
pub fn build(class: u8, ledger: Option<LiveEvidence>) -> Evidence {
    let rows = requirements::all()
        .into_iter()
        .map(|r| row(&r, class, ledger.as_ref()))
        .collect();
    Evidence {
        class,
        generated_at_ms: backends::now_ms(),
        ledger,
        rows,
        attribution: requirements::ATTRIBUTION,
    }
}

const UNMAPPED: Control = Control {
    req: "",
    status: Status::Oem,
    how: "Trustline makes no claim for this row.",
    tests: &[],
    live: &[],
    oem: "all of the evidence for this row.",
};

fn row(r: &Requirement, class: u8, ledger: Option<&LiveEvidence>) -> EvidenceRow {
    let c = controls::control(r.number).unwrap_or(&UNMAPPED);
    let tests: Vec<String> = c
        .tests
        .iter()
        .map(|t| format!("{}::{}", t.file, t.function))
        .collect();
    let live = if c.status == Status::Oem {
        String::new()
    } else {
        live_text(c.live, ledger)
    };
    let mut evidence = Vec::new();
    if !tests.is_empty() {
        evidence.push(format!("Tests: {}.", tests.join("; ")));
    }
    if !live.is_empty() {
        evidence.push(format!("Ledger: {live}"));
    }
    if !c.oem.is_empty() {
        evidence.push(format!("OEM evidence: {}", c.oem));
    }
    let responsibility = match c.status {
        Status::Trustline => "Trustline".to_owned(),
        Status::Shared => format!("Trustline and OEM; the OEM supplies {}", c.oem),
        Status::Oem => format!("OEM supplies {}", c.oem),
    };
    EvidenceRow {
        req_no: r.number,
        section: r.section,
        requirement: r.text,
        applicability_rule: r.applicability_text,
        applicability: r.rule.at(class),
        status: c.status,
        how_met: c.how.to_owned(),
        tests,
        live,
        evidence: evidence.join(" "),
        responsibility,
        oem_must_supply: c.oem,
    }
}

/// The live figures of one row, in words.
fn live_text(items: &[Live], ledger: Option<&LiveEvidence>) -> String {
    let Some(l) = ledger else {
        return "no ledger given (run with --data-dir or --export for live evidence).".into();
    };
    let n = |k: EventKind| l.count(k);
    let mut parts = Vec::new();
    for item in items {
        parts.push(match item {
            Live::Orders => format!(
                "{} orders opened, {} closed",
                n(EventKind::OrderOpened),
                n(EventKind::OrderClosed)
            ),
            Live::Claims => format!("{} RoTs claimed", n(EventKind::Claimed)),
            Live::Certified => format!("{} devices certified", n(EventKind::Certified)),
            Live::KeysDelivered => format!(
                "{} HSM-made keys delivered wrapped",
                n(EventKind::KeyDelivered)
            ),
            Live::Duplicates => format!(
                "{} duplicate attempts refused",
                n(EventKind::DuplicateRejected)
            ),
            Live::Counterfeits => format!(
                "{} counterfeit attempts refused",
                n(EventKind::CounterfeitRejected)
            ),
            Live::QuotaRefusals => format!(
                "{} over-quota attempts refused",
                n(EventKind::QuotaRejected)
            ),
            Live::Custody => format!(
                "{} shipped, {} received, {} scrapped",
                n(EventKind::Shipped),
                n(EventKind::Received),
                n(EventKind::Scrapped)
            ),
            Live::Ownership => format!(
                "{} ownership transfers, {} onboardings",
                n(EventKind::OwnershipTransferred),
                n(EventKind::Onboarded)
            ),
            Live::Lifecycle => format!(
                "{} decommissioned, {} recommissioned, {} retired",
                n(EventKind::Decommissioned),
                n(EventKind::Recommissioned),
                n(EventKind::Retired)
            ),
        });
    }
    let checkpoint = match l.checkpoint_size {
        Some(size) => format!("latest checkpoint size {size}, root {}", l.checkpoint_root),
        None => "no signed checkpoint".to_owned(),
    };
    parts.push(checkpoint);
    parts.push(format!(
        "ledger {} at {}: {}",
        if l.verified {
            "verified"
        } else {
            "FAILED verification"
        },
        crate::render::when(l.verified_at_ms),
        l.verify_message
    ));
    format!("{}.", parts.join("; "))
}
