//! Recovery never deletes acknowledged entries (issue 12, item 11;
//! invariant 1, "recorded before released"). On open, a bad record is cut
//! only when it can be the torn tail of the last batch — within one batch
//! of the end, with no valid record after it — and only when the cut stays
//! above the index watermark and the latest signed checkpoint. Otherwise
//! the ledger refuses to open, names file, offset and seq, and leaves every
//! segment byte as it was.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use custody_ledger::format::Record;
use custody_ledger::{Error, Ledger, INDEX_DIR, LATEST_CHECKPOINT_FILE};
use trustline_proto::signer::Signer;

const SEGMENT: &str = "00000000000000000000.seg";

/// A closed ledger of `n` entries, checkpointed every 15 and at close.
fn closed_ledger(dir: &Path, n: u64, signer: Arc<dyn Signer>) {
    let ledger = Ledger::open(config(dir), signer).unwrap();
    for d in 0..n {
        let (draft, keys, quota) = certified(d, "PO-R", 10_000);
        ledger.append_blocking(draft, keys, quota).unwrap();
        if d % 15 == 14 {
            ledger.publish_checkpoint_blocking().unwrap();
        }
    }
    ledger.close();
}

fn segment(dir: &Path) -> PathBuf {
    dir.join(SEGMENT)
}

/// The record of entry `seq` in a segment's bytes.
fn entry_at(bytes: &[u8], seq: u64) -> Rec {
    records(bytes)
        .into_iter()
        .find(|r| matches!(&r.record, Record::Entry(e) if e.seq == seq))
        .unwrap()
}

/// Turns the closed 66-entry ledger into one whose last six entries no
/// checkpoint covers: the closing checkpoint record (of size 66, the last
/// record) is removed and `checkpoint.latest` goes back to size 60, as
/// after a crash before the next checkpoint. The index is left as it is.
fn drop_the_closing_checkpoint(dir: &Path) {
    let bytes = std::fs::read(segment(dir)).unwrap();
    let recs = records(&bytes);
    let last = recs.last().unwrap();
    assert!(matches!(&last.record, Record::Checkpoint(c) if c.size == 66));
    let sixty = recs
        .iter()
        .find_map(|r| match &r.record {
            Record::Checkpoint(c) if c.size == 60 => Some(c.note.clone()),
            _ => None,
        })
        .unwrap();
    std::fs::write(segment(dir), &bytes[..last.offset]).unwrap();
    std::fs::write(dir.join(LATEST_CHECKPOINT_FILE), sixty).unwrap();
}

fn remove_index(dir: &Path) {
    std::fs::remove_dir_all(dir.join(INDEX_DIR)).unwrap();
}

/// Flips one bit in the middle of entry `seq`'s record; returns the
/// record's offset.
fn flip_entry(dir: &Path, seq: u64) -> usize {
    let mut bytes = std::fs::read(segment(dir)).unwrap();
    let r = entry_at(&bytes, seq);
    bytes[r.offset + r.len / 2] ^= 0x08;
    std::fs::write(segment(dir), &bytes).unwrap();
    r.offset
}

/// Opens, expects a refusal naming the segment, `offset` and `seq`, and
/// checks that the segment is byte for byte what it was before.
fn assert_refused_untouched(
    dir: &Path,
    signer: Arc<dyn Signer>,
    offset: usize,
    seq: u64,
) -> String {
    let before = std::fs::read(segment(dir)).unwrap();
    let err = Ledger::open(config(dir), signer).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{SEGMENT} offset {offset} (entry {seq})")),
        "the refusal names file, offset and seq: {msg}"
    );
    assert_eq!(
        std::fs::read(segment(dir)).unwrap(),
        before,
        "a refused open changes nothing: {msg}"
    );
    msg
}

#[test]
fn a_flipped_bit_in_an_acknowledged_entry_mid_segment_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), 300, signer.clone());
    let offset = flip_entry(dir.path(), 150);
    // With the index the ledger left behind, and with none (rebuilt).
    assert_refused_untouched(dir.path(), signer.clone(), offset, 150);
    remove_index(dir.path());
    let msg = assert_refused_untouched(dir.path(), signer, offset, 150);
    assert!(msg.contains("valid record follows"), "{msg}");
}

#[test]
fn a_torn_final_record_of_the_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), 66, signer.clone());
    let whole = std::fs::read(segment(dir.path())).unwrap();
    // A batch that was being written when the power went: a whole entry
    // record and the first half of the next one, never acknowledged.
    let (draft, keys, quota) = certified(900, "PO-R", 10_000);
    let placed = {
        let probe = tempfile::tempdir().unwrap();
        let l = Ledger::open(config(probe.path()), signer.clone()).unwrap();
        let a = l.append_blocking(draft, keys, quota).unwrap();
        l.close();
        a.entry
    };
    let record = entry_record(66, &placed);
    for torn in [
        record[..record.len() / 2].to_vec(),
        vec![0u8; 700],
        vec![0x5a; 3],
    ] {
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&torn);
        std::fs::write(segment(dir.path()), &bytes).unwrap();
        let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
        assert_eq!(ledger.size(), 66);
        ledger.close();
        let after = std::fs::read(segment(dir.path())).unwrap();
        assert_eq!(after, whole, "exactly the torn bytes were cut");
    }
}

#[test]
fn bad_bytes_followed_by_valid_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), 66, signer.clone());
    drop_the_closing_checkpoint(dir.path());
    // No index: neither the watermark nor a checkpoint covers entry 63,
    // only the valid entries 64 and 65 after it show it was durable.
    remove_index(dir.path());
    let offset = flip_entry(dir.path(), 63);
    let msg = assert_refused_untouched(dir.path(), signer, offset, 63);
    assert!(msg.contains("valid record follows"), "{msg}");
}

#[test]
fn a_damaged_last_record_that_nothing_covers_is_cut_like_a_torn_write() {
    // The control for the two refusals below: the same damage is a torn
    // write when neither the index nor a checkpoint covers it.
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), 66, signer.clone());
    drop_the_closing_checkpoint(dir.path());
    remove_index(dir.path());
    let offset = flip_entry(dir.path(), 65);
    let before = std::fs::read(segment(dir.path())).unwrap();
    let ledger = Ledger::open(config(dir.path()), signer).unwrap();
    assert_eq!(ledger.size(), 65);
    ledger.close();
    // Cut at the damaged record; the close then signed a checkpoint of 65.
    let after = std::fs::read(segment(dir.path())).unwrap();
    assert_eq!(&after[..offset], &before[..offset]);
    assert!(matches!(
        &records(&after[..]).last().unwrap().record,
        Record::Checkpoint(c) if c.size == 65 && records(&after[..]).last().unwrap().offset == offset
    ));
}

#[test]
fn a_cut_below_the_index_watermark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), 66, signer.clone());
    drop_the_closing_checkpoint(dir.path());
    // The index the ledger left behind covers all 66 entries.
    let offset = flip_entry(dir.path(), 65);
    let msg = assert_refused_untouched(dir.path(), signer, offset, 65);
    assert!(msg.contains("the index already covers 66 entries"), "{msg}");
}

#[test]
fn a_cut_below_the_latest_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), 66, signer.clone());
    let note66 = std::fs::read(dir.path().join(LATEST_CHECKPOINT_FILE)).unwrap();
    remove_index(dir.path());

    // The closing checkpoint record, torn at its end: checkpoint.latest
    // was published after it was synced, so it cannot be a torn write.
    let bytes = std::fs::read(segment(dir.path())).unwrap();
    let last = records(&bytes).pop().unwrap();
    std::fs::write(segment(dir.path()), &bytes[..bytes.len() - 5]).unwrap();
    let msg = assert_refused_untouched(dir.path(), signer.clone(), last.offset, 66);
    assert!(msg.contains("checkpoint record"), "{msg}");

    // The last entry damaged with checkpoint.latest covering it.
    std::fs::write(segment(dir.path()), &bytes).unwrap();
    drop_the_closing_checkpoint(dir.path());
    std::fs::write(dir.path().join(LATEST_CHECKPOINT_FILE), note66).unwrap();
    let offset = flip_entry(dir.path(), 65);
    let msg = assert_refused_untouched(dir.path(), signer, offset, 65);
    assert!(
        msg.contains("checkpoint.latest covers 66 entries and the cut would leave 65"),
        "{msg}"
    );
}
