//! Helpers shared by the integration tests: keys, configs, sample entries,
//! and record-level access to segment files for tampering.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // Shared by several test binaries; tests may unwrap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use custody_ledger::format::{self, Record, UnverifiedRecord, HEADER_LEN};
use custody_ledger::{Draft, EventKind, LedgerConfig, QuotaUse, UniqueKey};
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};

/// A fresh software checkpoint key.
pub fn signer() -> Arc<dyn Signer> {
    Arc::new(SoftwareSigner::generate())
}

/// A config for a ledger in `dir` with a quick checkpoint cadence.
pub fn config(dir: &Path) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir);
    c.checkpoint_interval = Duration::from_millis(100);
    c
}

/// The rot_id of simulated device `n`.
pub fn rot(n: u64) -> String {
    hex::encode(Sha256::digest(format!("device-{n}")))
}

/// A `Certified`-like draft for device `device`, with serial and rot_id
/// keys and a quota on `order`.
pub fn certified(
    device: u64,
    order: &str,
    limit: u64,
) -> (Draft, Vec<UniqueKey>, Option<QuotaUse>) {
    let serial = format!("SN-{device:06}");
    let draft = Draft {
        kind: EventKind::Certified,
        rot_id: rot(device),
        serial: serial.clone(),
        site: "site-a".into(),
        actor: "station/site-a/st-01".into(),
        order_id: order.into(),
        payload: format!("certificate of {device}").into_bytes(),
    };
    let keys = vec![
        UniqueKey::new("serial", serial),
        UniqueKey::new("rot_id", rot(device)),
    ];
    (
        draft,
        keys,
        Some(QuotaUse::new(format!("order/{order}"), limit)),
    )
}

/// A custody event (no constraints) for device `device`.
pub fn custody(device: u64, kind: EventKind, note: &str) -> Draft {
    Draft {
        kind,
        rot_id: rot(device),
        site: "site-a".into(),
        actor: "station/site-a/st-02".into(),
        payload: note.as_bytes().to_vec(),
        ..Draft::default()
    }
}

/// A record in a segment file: offset, total length, parsed.
pub struct Rec {
    pub offset: usize,
    pub len: usize,
    pub record: Record,
}

/// Every record of a segment file's bytes.
pub fn records(bytes: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let rec = UnverifiedRecord::new(&bytes[at..])
            .check()
            .expect("well-formed segment");
        out.push(Rec {
            offset: at,
            len: rec.total_len,
            record: rec.parse().expect("parses"),
        });
        at += rec.total_len;
    }
    out
}

/// The encoded bytes of an entry record.
pub fn entry_record(seq: u64, entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    format::encode_entry(seq, entry, &mut out);
    out
}

/// Segment file names in a directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}
