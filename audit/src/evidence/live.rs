//! Live evidence from a ledger: the result of verifying it now with the
//! ledger crate's offline verifier, its latest signed checkpoint, and how
//! many entries of each kind it holds (2.3: evidence an assessor can
//! re-derive from the files).

use std::collections::BTreeMap;

use custody_ledger::verify;
use serde::Serialize;
use trustline_proto::v1::EventKind;

use crate::error::Result;
use crate::LedgerSource;

/// What the ledger showed when the evidence was made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveEvidence {
    /// Where it was read from.
    pub source: String,
    /// When it was verified, Unix ms.
    pub verified_at_ms: i64,
    /// Whether it verified.
    pub verified: bool,
    /// The verifier's words.
    pub verify_message: String,
    /// Entries.
    pub entries: u64,
    /// Size of the latest signed checkpoint.
    pub checkpoint_size: Option<u64>,
    /// Its root hash, hex.
    pub checkpoint_root: String,
    /// Entries by kind (`CERTIFIED`, ...), only of verified entries.
    pub by_kind: BTreeMap<String, u64>,
}

impl LiveEvidence {
    /// Entries of `kind`.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.by_kind.get(kind_name(kind)).copied().unwrap_or(0)
    }
}

/// "CERTIFIED" for `EventKind::Certified`.
pub fn kind_name(kind: EventKind) -> &'static str {
    kind.as_str_name().trim_start_matches("EVENT_KIND_")
}

/// Verifies `source` now and counts its entries.
///
/// # Errors
/// [`crate::Error::Config`] when the source cannot be read or no ledger key
/// is known.
pub fn collect(source: &LedgerSource, ledger_key: Option<Vec<u8>>) -> Result<LiveEvidence> {
    let mut by_kind: BTreeMap<i32, u64> = BTreeMap::new();
    let options = verify::Options {
        key: ledger_key,
        origin: None,
        anchors: Vec::new(),
        ..verify::Options::default()
    };
    let verified = source.verify(&options, &mut |ve| {
        *by_kind.entry(ve.entry.kind).or_insert(0) += 1;
    })?;
    let report = verified.report;
    let mut live = LiveEvidence {
        source: source.describe(),
        verified_at_ms: backends::now_ms(),
        verified: report.problem.is_none(),
        entries: report.entries,
        ..LiveEvidence::default()
    };
    live.verify_message = match &report.problem {
        None => format!(
            "verified: {} entries, {} checkpoints, {} devices",
            report.entries, report.checkpoints, report.devices
        ),
        Some(p) => format!("does not verify: {p}"),
    };
    if let Some(cp) = &report.latest_checkpoint {
        live.checkpoint_size = Some(cp.size);
        live.checkpoint_root = hex::encode(cp.root);
    }
    live.by_kind = by_kind
        .into_iter()
        .map(|(k, n)| {
            let name = EventKind::try_from(k)
                .map_or_else(|_| format!("KIND_{k}"), |k| kind_name(k).to_owned());
            (name, n)
        })
        .collect();
    Ok(live)
}
