//! `trustline ledger verify` catches every edit, deletion, reordering and
//! truncation of stored entries, in a data directory and in an export
//! (invariant 5, 2.4.14.3). Each case changes one thing and expects the
//! offline verifier to name a problem.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use custody_ledger::format::{self, Record};
use custody_ledger::merkle::{chain_head, leaf_hash, GENESIS_HEAD};
use custody_ledger::storage::{SimStorage, Storage};
use custody_ledger::verify::{self, Options, Report};
use custody_ledger::{export, EventKind, Ledger, LedgerConfig, SignedCheckpoint};
use prost::Message;
use trustline_proto::signer::Signer;
use trustline_proto::v1::{self, LedgerEntry};

const SEGMENT: &str = "00000000000000000000.seg";

struct Fixture {
    files: Vec<(String, Vec<u8>)>,
    spki: Vec<u8>,
    /// A checkpoint an auditor kept: the last one.
    kept: SignedCheckpoint,
    /// The checkpoint key, to reopen the ledger.
    signer: Arc<dyn Signer>,
    /// Holds the index the fixture's ledger left behind (in `index/`).
    _index: tempfile::TempDir,
}

/// A ledger of 60 entries over 12 devices, checkpointed every 15.
fn fixture() -> Fixture {
    let index = tempfile::tempdir().unwrap();
    let mut config = LedgerConfig::new(index.path().join("unused"));
    config.index_dir = Some(index.path().join("index"));
    config.checkpoint_interval = Duration::from_secs(3600);
    let signer = signer();
    let storage = Arc::new(SimStorage::new());
    let ledger = Ledger::open_with_storage(config, signer.clone(), storage.clone()).unwrap();
    let mut kept = None;
    for i in 0..60u64 {
        if i % 2 == 0 {
            let (draft, keys, quota) = certified(i / 2, "PO-T", 30);
            ledger.append_blocking(draft, keys, quota).unwrap();
        } else {
            ledger
                .append_blocking(custody(i % 12, EventKind::Shipped, "shipped"), vec![], None)
                .unwrap();
        }
        if i % 15 == 14 {
            kept = Some(ledger.publish_checkpoint_blocking().unwrap());
        }
    }
    ledger.close();
    let files = storage
        .list()
        .unwrap()
        .into_iter()
        .map(|n| {
            let b = storage.file(&n).unwrap();
            (n, b)
        })
        .collect();
    Fixture {
        files,
        spki: signer.public_key_der().to_vec(),
        kept: kept.unwrap(),
        signer,
        _index: index,
    }
}

impl Fixture {
    fn segment(&self) -> Vec<u8> {
        self.files
            .iter()
            .find(|(n, _)| n == SEGMENT)
            .unwrap()
            .1
            .clone()
    }

    /// Verifies the fixture with the segment replaced by `segment`.
    fn verify_with(&self, segment: Vec<u8>, anchors: Vec<String>) -> Report {
        self.verify_opts(
            segment,
            Options {
                key: Some(self.spki.clone()),
                anchors,
                ..Options::default()
            },
        )
    }

    /// Verifies the fixture with the segment replaced by `segment`, with
    /// `opts`.
    fn verify_opts(&self, segment: Vec<u8>, opts: Options) -> Report {
        let s = SimStorage::new();
        for (n, b) in &self.files {
            s.set_file(
                n,
                if n == SEGMENT {
                    segment.clone()
                } else {
                    b.clone()
                },
            );
        }
        verify::verify_dir(&s, &opts, &mut |_| {}).unwrap().report
    }

    fn verify(&self, segment: Vec<u8>) -> Report {
        self.verify_with(segment, vec![])
    }

    /// Opens the live ledger on the fixture's files with the segment
    /// replaced by `segment`: with the index the fixture's ledger left
    /// behind (`own_index`: only what follows its watermark is replayed) or
    /// with none (everything is replayed into a new one).
    fn open_with(&self, segment: Vec<u8>, own_index: bool) -> custody_ledger::Result<Ledger> {
        let s = Arc::new(SimStorage::new());
        for (n, b) in &self.files {
            s.set_file(
                n,
                if n == SEGMENT {
                    segment.clone()
                } else {
                    b.clone()
                },
            );
        }
        let fresh = tempfile::tempdir().unwrap();
        let mut config = LedgerConfig::new(self._index.path().join("unused"));
        config.index_dir = Some(if own_index {
            self._index.path().join("index")
        } else {
            fresh.path().join("index")
        });
        config.checkpoint_interval = Duration::from_secs(3600);
        Ledger::open_with_storage(config, self.signer.clone(), s)
    }
}

fn entry_recs(seg: &[u8]) -> Vec<Rec> {
    records(seg)
        .into_iter()
        .filter(|r| matches!(r.record, Record::Entry(_)))
        .collect()
}

#[test]
fn the_untouched_ledger_verifies() {
    let f = fixture();
    let r = f.verify(f.segment());
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!(r.entries, 60);
    assert_eq!(r.checkpoints, 4);
    assert_eq!(r.uncovered, 0);
    assert_eq!(r.quotas.get("order/PO-T"), Some(&30));
    assert_eq!(r.unique_keys, 60);
    assert_eq!(r.devices, 30);
}

#[test]
fn every_flipped_byte_of_an_entry_record_is_caught() {
    let f = fixture();
    let seg = f.segment();
    let r = &entry_recs(&seg)[20];
    for i in r.offset..r.offset + r.len {
        let mut bad = seg.clone();
        bad[i] ^= 0x04;
        let rep = f.verify(bad);
        assert!(
            !rep.is_ok(),
            "flipping byte {} of entry 20's record went unnoticed",
            i - r.offset
        );
    }
}

#[test]
fn every_edited_byte_of_an_entry_is_caught_even_with_a_fixed_checksum() {
    let f = fixture();
    let seg = f.segment();
    let r = &entry_recs(&seg)[20];
    let Record::Entry(e) = &r.record else {
        unreachable!()
    };
    for i in 0..e.entry.len() {
        let mut entry = e.entry.clone();
        entry[i] ^= 0x01;
        let mut bad = seg[..r.offset].to_vec();
        bad.extend(entry_record(e.seq, &entry));
        bad.extend_from_slice(&seg[r.offset + r.len..]);
        let rep = f.verify(bad);
        let p = rep
            .problem
            .unwrap_or_else(|| panic!("editing byte {i} of entry 20 went unnoticed"));
        assert!(
            matches!(p.seq, Some(20) | Some(21)) || p.location.contains("checkpoint"),
            "byte {i}: {p}"
        );
    }
}

#[test]
fn a_deleted_entry_is_caught() {
    let f = fixture();
    let seg = f.segment();
    let r = &entry_recs(&seg)[20];
    let mut bad = seg[..r.offset].to_vec();
    bad.extend_from_slice(&seg[r.offset + r.len..]);
    let p = f.verify(bad).problem.expect("caught");
    assert_eq!(p.seq, Some(20), "{p}");
}

#[test]
fn reordered_entries_are_caught() {
    let f = fixture();
    let seg = f.segment();
    let recs = entry_recs(&seg);
    let (a, b) = (&recs[20], &recs[21]);
    assert_eq!(a.offset + a.len, b.offset);
    let mut bad = seg[..a.offset].to_vec();
    bad.extend_from_slice(&seg[b.offset..b.offset + b.len]);
    bad.extend_from_slice(&seg[a.offset..a.offset + a.len]);
    bad.extend_from_slice(&seg[b.offset + b.len..]);
    let p = f.verify(bad).problem.expect("caught");
    assert_eq!(p.seq, Some(20), "{p}");
}

/// Deletes entry 20 and rewrites everything after it into a perfectly
/// consistent chain; drops the checkpoint records that no longer match.
/// Only signatures can catch this.
fn rewritten_history(seg: &[u8]) -> Vec<u8> {
    let mut out = seg[..format::HEADER_LEN].to_vec();
    let mut head = GENESIS_HEAD;
    let mut devices = std::collections::HashMap::new();
    let mut next = 0u64;
    for r in records(seg) {
        match r.record {
            Record::Entry(e) if e.seq == 20 => {}
            Record::Entry(e) => {
                let mut entry = LedgerEntry::decode(e.entry.as_slice()).unwrap();
                entry.seq = next;
                entry.prev_hash = head.to_vec();
                entry.device_prev = devices
                    .get(&entry.rot_id)
                    .map(|h: &[u8; 32]| h.to_vec())
                    .unwrap_or_default();
                let bytes = entry.encode_to_vec();
                let leaf = leaf_hash(&bytes);
                head = chain_head(&head, &leaf);
                devices.insert(entry.rot_id.clone(), leaf);
                out.extend(entry_record(next, &bytes));
                next += 1;
            }
            Record::Checkpoint(c) if c.size <= 20 => {
                format::encode_checkpoint(c.size, &c.root, &c.note, &mut out);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_rewritten_history_is_caught_by_the_signed_checkpoints() {
    let f = fixture();
    let bad = rewritten_history(&f.segment());
    // checkpoint.latest still says 60 entries with the old root.
    let p = f
        .verify(bad.clone())
        .problem
        .expect("caught by checkpoint.latest");
    assert!(p.location.contains("checkpoint.latest"), "{p}");
    // Even if checkpoint.latest is replaced by an older, still-valid one,
    // a checkpoint the auditor kept catches it.
    let mut files = f.files.clone();
    let first_note = records(&f.segment())
        .into_iter()
        .find_map(|r| match r.record {
            Record::Checkpoint(c) => Some(c.note),
            _ => None,
        })
        .unwrap();
    for (n, b) in &mut files {
        if n == "checkpoint.latest" {
            *b = first_note.clone().into_bytes();
        }
    }
    let f2 = Fixture {
        files,
        spki: f.spki.clone(),
        kept: f.kept.clone(),
        signer: f.signer.clone(),
        _index: tempfile::tempdir().unwrap(),
    };
    // Without an outside anchor the rewrite is self-consistent, but the
    // entries after the old checkpoint are signed by nothing: that fails
    // closed, and passes only when an unsigned tail is allowed.
    let p = f2.verify(bad.clone()).problem.expect("fails closed");
    assert!(p.what.contains("after the latest signed checkpoint"), "{p}");
    let allowing = |anchors: Vec<String>| Options {
        key: Some(f.spki.clone()),
        anchors,
        allow_unsigned_tail: true,
        ..Options::default()
    };
    assert!(f2.verify_opts(bad.clone(), allowing(vec![])).is_ok());
    let p = f2
        .verify_opts(bad, allowing(vec![f.kept.note.clone()]))
        .problem
        .expect("caught by the kept checkpoint");
    assert!(p.location.contains("anchor"), "{p}");
}

#[test]
fn truncation_is_caught() {
    let f = fixture();
    let seg = f.segment();
    let recs = records(&seg);
    // At a record boundary: the segment looks whole, but checkpoint.latest
    // covers entries that are gone.
    let cut = recs[recs.len() - 5].offset;
    let p = f.verify(seg[..cut].to_vec()).problem.expect("caught");
    assert!(p.what.contains("removed"), "{p}");
    // Inside a record.
    let last = recs.last().unwrap();
    let p = f
        .verify(seg[..last.offset + last.len / 2].to_vec())
        .problem
        .expect("caught");
    assert!(p.what.contains("incomplete"), "{p}");
}

#[test]
fn an_export_verifies_alone_and_catches_tampering() {
    let f = fixture();
    let s = SimStorage::new();
    for (n, b) in &f.files {
        s.set_file(n, b.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.export");
    let summary = export::export(&s, &path).unwrap();
    assert_eq!((summary.entries, summary.checkpoints), (60, 4));
    let opts = Options {
        key: Some(f.spki.clone()),
        ..Options::default()
    };
    let mut seen = 0;
    let v = verify::verify_export(&path, &opts, &mut |_| seen += 1).unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert_eq!(seen, 60);
    assert_eq!(v.report.root, f.kept.root);

    let bytes = std::fs::read(&path).unwrap();
    let bad_path = dir.path().join("bad.export");
    let check = |b: &[u8], opts: &Options| {
        std::fs::write(&bad_path, b).unwrap();
        verify::verify_export(&bad_path, opts, &mut |_| {})
            .unwrap()
            .report
    };
    // Truncated anywhere: no trailer, or a damaged last record.
    for cut in [bytes.len() - 1, bytes.len() - 60, bytes.len() / 2, 40] {
        assert!(!check(&bytes[..cut], &opts).is_ok(), "cut at {cut}");
    }
    // One flipped byte in the middle.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x20;
    assert!(!check(&flipped, &opts).is_ok());
    // Another key.
    let other = Options {
        key: Some(signer().public_key_der().to_vec()),
        ..Options::default()
    };
    let p = check(&bytes, &other).problem.expect("wrong key");
    assert!(p.what.contains("another ledger key"), "{p}");
}

/// Entry 60 as the ledger would have placed it after the fixture's 60
/// entries — right seq, chain head, device chain and time — for a new
/// device, with two unique keys and no quota.
fn next_entry(seg: &[u8]) -> LedgerEntry {
    let mut head = GENESIS_HEAD;
    let mut time_ms = 0;
    for r in entry_recs(seg) {
        let Record::Entry(e) = r.record else {
            unreachable!()
        };
        head = chain_head(&head, &leaf_hash(&e.entry));
        time_ms = LedgerEntry::decode(e.entry.as_slice()).unwrap().time_ms;
    }
    let (draft, keys, _) = certified(1000, "PO-T", 30);
    LedgerEntry {
        seq: 60,
        time_ms,
        kind: draft.kind as i32,
        rot_id: draft.rot_id,
        serial: draft.serial,
        site: draft.site,
        actor: draft.actor,
        order_id: draft.order_id,
        payload: draft.payload,
        prev_hash: head.to_vec(),
        device_prev: Vec::new(),
        unique_keys: keys
            .into_iter()
            .map(|k| v1::UniqueKey {
                namespace: k.namespace,
                value: k.value,
            })
            .collect(),
        quota: None,
    }
}

/// The fixture's segment with `entry` appended as entry 60, in a record
/// with a correct length and checksum: only a check of the entry itself can
/// refuse it.
fn planted(f: &Fixture, entry: &[u8]) -> Vec<u8> {
    let mut seg = f.segment();
    seg.extend(entry_record(60, entry));
    seg
}

/// Both the live ledger's open (with and without its index) and the offline
/// verifier refuse `entry` as entry 60, saying `what` (2.4.14.3: open must
/// refuse what verify refuses).
fn assert_refused_as_entry_60(entry: &[u8], what: &str) {
    let f = fixture();
    let seg = planted(&f, entry);
    let p = f.verify(seg.clone()).problem.expect("verify refuses it");
    assert_eq!(p.seq, Some(60), "{p}");
    assert!(p.what.contains(what), "{p}");
    for own_index in [true, false] {
        let err = f
            .open_with(seg.clone(), own_index)
            .expect_err("open refuses it");
        let msg = err.to_string();
        assert!(
            matches!(err, custody_ledger::Error::Corrupt { .. }),
            "own index {own_index}: {msg}"
        );
        assert!(
            msg.contains("entry 60 ") && msg.contains(what),
            "own index {own_index}: {msg}"
        );
    }
}

#[test]
fn a_well_formed_planted_entry_is_accepted_by_open_and_verify() {
    // The control for the refusals below: the planting itself is sound.
    let f = fixture();
    let seg = planted(&f, &next_entry(&f.segment()).encode_to_vec());
    let r = f.verify_opts(
        seg.clone(),
        Options {
            key: Some(f.spki.clone()),
            allow_unsigned_tail: true,
            ..Options::default()
        },
    );
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!(r.entries, 61);
    assert_eq!(r.uncovered, 1);
    for own_index in [true, false] {
        let ledger = f.open_with(seg.clone(), own_index).unwrap();
        assert_eq!(ledger.size(), 61);
        ledger.close();
    }
}

#[test]
fn open_and_verify_refuse_a_malformed_rot_id() {
    for rot_id in ["ABC", &"A".repeat(64), &"0".repeat(63)] {
        let mut e = next_entry(&fixture().segment());
        e.rot_id = rot_id.to_string();
        assert_refused_as_entry_60(&e.encode_to_vec(), "rot_id is malformed");
    }
}

#[test]
fn open_and_verify_refuse_an_unknown_event_kind() {
    for kind in [0, 9999] {
        let mut e = next_entry(&fixture().segment());
        e.kind = kind;
        assert_refused_as_entry_60(&e.encode_to_vec(), "unknown event kind");
    }
}

#[test]
fn open_and_verify_refuse_a_unique_key_declared_twice() {
    let mut e = next_entry(&fixture().segment());
    let k = e.unique_keys[0].clone();
    e.unique_keys.push(k);
    assert_refused_as_entry_60(&e.encode_to_vec(), "declared twice");
}

#[test]
fn open_and_verify_refuse_a_non_canonical_encoding() {
    let canonical = next_entry(&fixture().segment()).encode_to_vec();
    // Field 1 (seq = 60) is `08 3c`: the same message with it moved to the
    // end decodes identically but is not the bytes that re-encode.
    assert_eq!(&canonical[..2], &[0x08, 0x3c]);
    let mut moved = canonical[2..].to_vec();
    moved.extend_from_slice(&canonical[..2]);
    assert_eq!(
        LedgerEntry::decode(moved.as_slice()).unwrap(),
        LedgerEntry::decode(canonical.as_slice()).unwrap()
    );
    assert_refused_as_entry_60(&moved, "not canonically encoded");
    // An unknown field (99, varint 1), which decoding would silently drop.
    let mut unknown = canonical.clone();
    unknown.extend_from_slice(&[0x98, 0x06, 0x01]);
    assert_refused_as_entry_60(&unknown, "not canonically encoded");
}

/// Writes an export of `records` (segment records, verbatim) under the
/// fixture's key, with a correct trailer: what someone holding only the
/// public key file could fabricate.
fn fabricated_export(f: &Fixture, records: &[Rec], seg: &[u8], path: &std::path::Path) {
    let mut out = format::encode_header(format::EXPORT_MAGIC, 0).to_vec();
    format::encode_key(custody_ledger::DEFAULT_ORIGIN, &f.spki, &mut out);
    let (mut entries, mut checkpoints, mut head) = (0, 0, GENESIS_HEAD);
    for r in records {
        out.extend_from_slice(&seg[r.offset..r.offset + r.len]);
        match &r.record {
            Record::Entry(e) => {
                entries += 1;
                head = chain_head(&head, &leaf_hash(&e.entry));
            }
            _ => checkpoints += 1,
        }
    }
    format::encode_trailer(
        &format::Trailer {
            entries,
            checkpoints,
            head,
        },
        &mut out,
    );
    std::fs::write(path, out).unwrap();
}

fn key_only(f: &Fixture) -> Options {
    Options {
        key: Some(f.spki.clone()),
        ..Options::default()
    }
}

/// Issue 12, item 12: a well-formed chain of entries that no checkpoint
/// signs proves nothing — anyone with the public key file can make one.
#[test]
fn a_fabricated_export_signed_by_nobody_fails() {
    let f = fixture();
    let seg = f.segment();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabricated.export");
    fabricated_export(&f, &entry_recs(&seg), &seg, &path);
    let r = verify::verify_export(&path, &key_only(&f), &mut |_| {})
        .unwrap()
        .report;
    let p = r.problem.expect("nothing signed covers it");
    assert!(p.what.contains("no signed checkpoint"), "{p}");
    assert_eq!(
        r.entries, 60,
        "every entry is well formed: only signatures are missing"
    );
    // The same as a data directory without checkpoints.
    let mut bare = seg[..format::HEADER_LEN].to_vec();
    for r in entry_recs(&seg) {
        bare.extend_from_slice(&seg[r.offset..r.offset + r.len]);
    }
    let s = SimStorage::new();
    s.set_file(SEGMENT, bare);
    let p = verify::verify_dir(&s, &key_only(&f), &mut |_| {})
        .unwrap()
        .report
        .problem
        .expect("nothing signed covers it");
    assert!(p.what.contains("no signed checkpoint"), "{p}");
}

/// Issue 12, item 12: entries after the latest signed checkpoint fail
/// unless explicitly allowed; allowed, the report counts them.
#[test]
fn an_unsigned_tail_fails_unless_allowed_and_is_counted() {
    let f = fixture();
    let seg = f.segment();
    // Entries 45..60 after the checkpoint of 45: drop the last checkpoint.
    let recs: Vec<Rec> = records(&seg)
        .into_iter()
        .filter(|r| !matches!(&r.record, Record::Checkpoint(c) if c.size == 60))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tail.export");
    fabricated_export(&f, &recs, &seg, &path);
    let r = verify::verify_export(&path, &key_only(&f), &mut |_| {})
        .unwrap()
        .report;
    let p = r.problem.expect("an unsigned tail fails closed");
    assert_eq!(p.seq, Some(45), "{p}");
    assert!(p.what.contains("after the latest signed checkpoint"), "{p}");
    let allowed = Options {
        allow_unsigned_tail: true,
        ..key_only(&f)
    };
    let r = verify::verify_export(&path, &allowed, &mut |_| {})
        .unwrap()
        .report;
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!((r.entries, r.uncovered), (60, 15));

    // A data directory whose last entries no checkpoint covers.
    let seg61 = planted(&f, &next_entry(&seg).encode_to_vec());
    let p = f.verify(seg61.clone()).problem.expect("fails closed");
    assert_eq!(p.seq, Some(60), "{p}");
    let r = f.verify_opts(seg61, allowed);
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!(r.uncovered, 1);
}

/// The flat-memory pass proves the same as the whole tree: a checkpoint
/// written after later entries, and anchors of every size, still verify,
/// and the kept tree (for proofs) has every leaf.
#[test]
fn anchors_of_every_size_and_the_kept_tree_agree_with_the_streaming_pass() {
    let f = fixture();
    let seg = f.segment();
    let notes: Vec<String> = records(&seg)
        .into_iter()
        .filter_map(|r| match r.record {
            Record::Checkpoint(c) => Some(c.note),
            _ => None,
        })
        .collect();
    let r = f.verify_with(seg.clone(), notes.clone());
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!(r.anchors, notes.len() as u64 + 1);
    let s = SimStorage::new();
    for (n, b) in &f.files {
        s.set_file(n, b.clone());
    }
    let kept = verify::verify_dir(
        &s,
        &Options {
            keep_tree: true,
            ..key_only(&f)
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(kept.tree.size(), 60);
    assert_eq!(kept.tree.root(), f.kept.root);
    let streamed = verify::verify_dir(&s, &key_only(&f), &mut |_| {}).unwrap();
    assert_eq!(streamed.report.root, f.kept.root);
    assert_eq!(streamed.tree.size(), 0, "no tree kept unless asked");
}
