//! The live ledger through its Rust API: appends, chains, proofs,
//! checkpoints, device history, constraint races, restarts, index rebuilds
//! and refusal to serve corrupt data (invariants 1, 2, 4, 5; 2.4.14.4,
//! 2.4.14.12, 2.4.14.22).

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;

use common::*;
use custody_ledger::format::Record;
use custody_ledger::merkle::{self, leaf_hash, verify_consistency, verify_inclusion};
use custody_ledger::{checkpoint, Error, EventKind, Ledger, UniqueKey, INDEX_DIR};
use prost::Message;
use trustline_proto::v1::LedgerEntry;

fn decode(bytes: &[u8]) -> LedgerEntry {
    LedgerEntry::decode(bytes).expect("a LedgerEntry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_chain_prove_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    let mut appended = Vec::new();
    for d in 0..6u64 {
        let (draft, keys, quota) = certified(d, "PO-1", 100);
        appended.push(ledger.append(draft, keys, quota).await.unwrap());
        appended.push(
            ledger
                .append(
                    custody(d % 3, EventKind::Shipped, "to the warehouse"),
                    vec![],
                    None,
                )
                .await
                .unwrap(),
        );
    }
    // Sequence, global chain and per-device chain (2.4.14.12).
    let mut head = merkle::GENESIS_HEAD;
    let mut last_of_device = std::collections::HashMap::new();
    for (i, a) in appended.iter().enumerate() {
        assert_eq!(a.seq, i as u64);
        assert_eq!(
            ledger.get_entry(a.seq).unwrap(),
            a.entry,
            "stored bytes are the acknowledged bytes"
        );
        assert_eq!(a.leaf_hash, leaf_hash(&a.entry));
        let e = decode(&a.entry);
        assert_eq!(e.seq, a.seq);
        assert_eq!(e.prev_hash, head);
        let expected_prev: Vec<u8> = last_of_device
            .get(&e.rot_id)
            .map(|h: &[u8; 32]| h.to_vec())
            .unwrap_or_default();
        assert_eq!(e.device_prev, expected_prev, "entry {i}");
        last_of_device.insert(e.rot_id.clone(), a.leaf_hash);
        head = merkle::chain_head(&head, &a.leaf_hash);
    }
    // The constraints are inside the hashed entry.
    let first = decode(&appended[0].entry);
    assert_eq!(first.unique_keys.len(), 2);
    assert_eq!(first.quota.as_ref().map(|q| q.limit), Some(100));

    let cp = ledger.publish_checkpoint().await.unwrap();
    assert_eq!(cp.size, 12);
    let opened = checkpoint::open(
        &cp.note,
        signer.public_key_der(),
        Some(ledger.ledger_key().origin()),
    )
    .unwrap();
    assert_eq!(opened, cp);
    for a in &appended {
        let p = ledger.inclusion_proof(a.seq, 0).unwrap();
        verify_inclusion(&a.leaf_hash, &p, &cp.root).unwrap();
    }
    let old_root = ledger.root(5).unwrap();
    verify_consistency(
        &ledger.consistency_proof(5, 0).unwrap(),
        &old_root,
        &cp.root,
    )
    .unwrap();

    let history = ledger.device_history(&rot(1)).await.unwrap();
    let seqs: Vec<u64> = history.entries.iter().map(|p| p.entry.seq).collect();
    assert_eq!(seqs, vec![2, 3, 9]);
    for p in &history.entries {
        verify_inclusion(
            &leaf_hash(&p.entry.entry),
            &p.proof,
            &history.checkpoint.root,
        )
        .unwrap();
    }
    assert_eq!(
        ledger
            .lookup_key(&UniqueKey::new("serial", "SN-000004"))
            .unwrap(),
        Some(8)
    );
    assert_eq!(
        ledger
            .lookup_key(&UniqueKey::new("serial", "SN-999999"))
            .unwrap(),
        None
    );
    assert_eq!(ledger.quota("order/PO-1").unwrap(), 6);
    ledger.close();

    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    assert_eq!(ledger.size(), 12);
    assert_eq!(ledger.latest_checkpoint().unwrap().size, 12);
    assert_eq!(ledger.quota("order/PO-1").unwrap(), 6);
    let next = ledger
        .append(custody(1, EventKind::Received, "arrived"), vec![], None)
        .await
        .unwrap();
    assert_eq!(next.seq, 12);
    let e = decode(&next.entry);
    assert_eq!(e.prev_hash, head, "the chain continues across the restart");
    assert_eq!(e.device_prev, appended[9].leaf_hash.to_vec());
    // A checkpoint after the restart is consistent with the one before.
    let cp2 = ledger.publish_checkpoint().await.unwrap();
    verify_consistency(
        &ledger.consistency_proof(12, 13).unwrap(),
        &cp.root,
        &cp2.root,
    )
    .unwrap();
    ledger.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_published_on_the_cadence_without_asking() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path()), signer()).unwrap();
    let a = ledger
        .append(custody(1, EventKind::Shipped, "x"), vec![], None)
        .await
        .unwrap();
    let cp = ledger.wait_for_checkpoint(a.seq + 1).await.unwrap();
    assert!(cp.size > a.seq);
    ledger.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racers_on_one_unique_key_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path()), signer()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let (draft, _, _) = certified(i, "PO-1", 1000);
            ledger
                .append(draft, vec![UniqueKey::new("serial", "SN-RACE")], None)
                .await
        }));
    }
    let mut wins = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => wins.push(a.seq),
            Err(Error::Conflict { key, holder_seq }) => {
                assert_eq!(key, UniqueKey::new("serial", "SN-RACE"));
                conflicts.push(holder_seq);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one append takes the key");
    assert_eq!(conflicts.len(), 63);
    assert!(
        conflicts.iter().all(|&h| h == wins[0]),
        "every refusal names the holder"
    );
    assert_eq!(ledger.size(), 1, "refusals leave nothing behind");
    assert_eq!(
        ledger
            .lookup_key(&UniqueKey::new("serial", "SN-RACE"))
            .unwrap(),
        Some(wins[0])
    );
    ledger.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racers_over_a_quota_of_ten_and_the_count_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let (draft, keys, quota) = certified(i, "PO-Q", 10);
            ledger.append(draft, keys, quota).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::QuotaExhausted {
                counter,
                used,
                limit,
            }) => {
                assert_eq!(counter, "order/PO-Q");
                assert_eq!((used, limit), (10, 10));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 10);
    assert_eq!(ledger.quota("order/PO-Q").unwrap(), 10);
    assert_eq!(ledger.size(), 10);
    ledger.close();

    // Across a restart…
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    assert_eq!(ledger.quota("order/PO-Q").unwrap(), 10);
    let (draft, keys, quota) = certified(100, "PO-Q", 10);
    assert!(matches!(
        ledger.append(draft, keys, quota).await,
        Err(Error::QuotaExhausted { used: 10, .. })
    ));
    ledger.close();

    // …and across an index rebuild.
    std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
    let ledger = Ledger::open(config(dir.path()), signer).unwrap();
    assert_eq!(ledger.quota("order/PO-Q").unwrap(), 10);
    let (draft, keys, quota) = certified(101, "PO-Q", 10);
    assert!(matches!(
        ledger.append(draft, keys, quota).await,
        Err(Error::QuotaExhausted { .. })
    ));
    ledger.close();
}

/// One request per batch, so that each append is checked against earlier
/// batches that are durable but may not be indexed yet (still in the
/// overlay): unique keys, quotas and device chains must see them
/// (invariants 2 and 4, 2.4.14.4, 2.4.14.12, 2.4.14.22).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_hold_across_batches_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_batch = 1;
    let ledger = Ledger::open(cfg, signer()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..96u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            // Two devices, each with many entries; twelve serials, each
            // wanted eight times; one quota of 8.
            let (mut draft, _, quota) = certified(i % 2, "PO-P", 8);
            draft.serial = format!("SN-P-{}", i % 12);
            let keys = vec![UniqueKey::new("serial", draft.serial.clone())];
            ledger.append(draft, keys, quota).await
        }));
    }
    let (mut wins, mut conflicts, mut exhausted) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(Error::QuotaExhausted { used: 8, .. }) => exhausted += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 8, "the quota stops appends at 8");
    assert!(conflicts > 0 && exhausted > 0, "{conflicts} {exhausted}");
    assert_eq!(wins + conflicts + exhausted, 96);
    assert_eq!(ledger.quota("order/PO-P").unwrap(), 8);
    ledger.close();
    // The offline verifier recomputes keys, quotas and every device chain.
    let storage = custody_ledger::storage::FileStorage::open(dir.path()).unwrap();
    let v = custody_ledger::verify::verify_dir(
        &storage,
        &custody_ledger::verify::Options::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert_eq!(v.report.entries, 8);
    assert_eq!(v.report.unique_keys, 8);
}

/// With a tiny overlay the indexer moves entries into the index while
/// appends and reads go on, and the writer waits for room after nearly
/// every batch: every acknowledged entry is found by every reader at every
/// moment — its bytes, its keys, its device chain — and a key is never
/// granted twice (memory bound of issue 16, item 4; invariants 1, 2;
/// 2.4.14.4, 2.4.14.12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_constraints_follow_entries_from_a_tiny_overlay_into_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.overlay_bytes = 4 << 10;
    let signer = signer();
    let ledger = Ledger::open(cfg.clone(), signer.clone()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..40u64 {
                // Eight devices shared by all tasks; each serial wanted
                // by two tasks.
                let device = (t * 40 + i) % 8;
                let (mut draft, _, _) = certified(device, "PO-T", u64::MAX);
                draft.serial = format!("SN-T-{}", (t / 2) * 40 + i);
                let key = UniqueKey::new("serial", draft.serial.clone());
                match ledger.append(draft, vec![key.clone()], None).await {
                    Ok(a) => {
                        assert_eq!(ledger.get_entry(a.seq).unwrap(), a.entry);
                        assert_eq!(ledger.lookup_key(&key).unwrap(), Some(a.seq));
                        mine.push((a.seq, key));
                    }
                    Err(Error::Conflict { holder_seq, .. }) => {
                        assert_eq!(ledger.lookup_key(&key).unwrap(), Some(holder_seq));
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            mine
        }));
    }
    let mut granted = Vec::new();
    for t in tasks {
        granted.extend(t.await.unwrap());
    }
    assert_eq!(granted.len(), 160, "each of 160 serials granted once");
    let size = ledger.size();
    assert_eq!(size, 160);
    // Every device's history holds exactly its entries, chained.
    let mut total = 0;
    for device in 0..8u64 {
        let h = ledger.device_history(&rot(device)).await.unwrap();
        let mut prev = Vec::new();
        for p in &h.entries {
            let e = decode(&p.entry.entry);
            assert_eq!(e.rot_id, rot(device));
            assert_eq!(e.device_prev, prev);
            prev = leaf_hash(&p.entry.entry).to_vec();
            verify_inclusion(&leaf_hash(&p.entry.entry), &p.proof, &h.checkpoint.root).unwrap();
        }
        total += h.entries.len();
    }
    assert_eq!(total, 160);
    ledger.close();
    // The same answers after a reopen from the index alone.
    let ledger = Ledger::open(cfg, signer).unwrap();
    for (seq, key) in &granted {
        assert_eq!(ledger.lookup_key(key).unwrap(), Some(*seq));
    }
    ledger.close();
}

/// Everything a reader can ask, for comparing two openings of one ledger.
fn answers(ledger: &Ledger, rt: &tokio::runtime::Runtime) -> Vec<String> {
    let mut out = Vec::new();
    let size = ledger.size();
    out.push(format!("size {size}"));
    out.push(format!("checkpoint {:?}", ledger.latest_checkpoint()));
    for seq in (0..size).step_by(37) {
        out.push(format!(
            "entry {seq} {}",
            hex::encode(ledger.get_entry(seq).unwrap())
        ));
        out.push(format!(
            "proof {seq} {:?}",
            ledger.inclusion_proof(seq, 0).unwrap()
        ));
    }
    for from in [1, 100, 255, 256, 257, 511] {
        out.push(format!(
            "consistency {from} {:?}",
            ledger.consistency_proof(from, 0).unwrap()
        ));
    }
    for d in (0..400).step_by(29) {
        out.push(format!(
            "key {d} {:?}",
            ledger
                .lookup_key(&UniqueKey::new("serial", format!("SN-{d:06}")))
                .unwrap()
        ));
        let h = rt.block_on(ledger.device_history(&rot(d))).unwrap();
        let seqs: Vec<u64> = h.entries.iter().map(|p| p.entry.seq).collect();
        out.push(format!(
            "history {d} {seqs:?} {:?}",
            h.entries.last().map(|p| p.proof.clone())
        ));
    }
    for order in ["PO-A", "PO-B"] {
        out.push(format!(
            "quota {order} {}",
            ledger.quota(&format!("order/{order}")).unwrap()
        ));
    }
    out
}

fn fill(ledger: &Ledger, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        for d in 0..400u64 {
            let order = if d % 3 == 0 { "PO-A" } else { "PO-B" };
            let (draft, keys, quota) = certified(d, order, 1000);
            ledger.append(draft, keys, quota).await.unwrap();
            if d % 2 == 0 {
                ledger
                    .append(custody(d / 2, EventKind::Shipped, "s"), vec![], None)
                    .await
                    .unwrap();
            }
            if d % 150 == 0 {
                ledger.publish_checkpoint().await.unwrap();
            }
        }
        ledger.publish_checkpoint().await.unwrap();
    });
}

#[test]
fn a_deleted_or_damaged_index_is_rebuilt_and_answers_the_same() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    fill(&ledger, &rt);
    let before = answers(&ledger, &rt);
    ledger.close();

    std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    assert_eq!(answers(&ledger, &rt), before, "rebuilt from the segments");
    ledger.close();

    // Garbage over every file of the index.
    for e in walk(&dir.path().join(INDEX_DIR)) {
        std::fs::write(&e, b"not an index at all").unwrap();
    }
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    assert_eq!(answers(&ledger, &rt), before, "rebuilt after damage");
    ledger.close();

    // An index directory of another format (an older sled index held
    // `conf`, `db` and `snap.*` files) is replaced by a rebuilt one.
    let index = dir.path().join(INDEX_DIR);
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::create_dir_all(&index).unwrap();
    std::fs::write(index.join("conf"), b"segment_size: 524288").unwrap();
    std::fs::write(index.join("db"), [0u8; 4096]).unwrap();
    let ledger = Ledger::open(config(dir.path()), signer).unwrap();
    assert_eq!(answers(&ledger, &rt), before, "rebuilt over another format");
    ledger.close();
    let left: Vec<_> = walk(&index)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["index.redb"]);
}

/// The index's exclusive lock keeps a second writer off an open ledger:
/// opening it again (from this process or another) is refused and changes
/// nothing, rather than rebuilding the index under the first writer.
#[test]
fn a_ledger_open_elsewhere_is_refused_not_rebuilt() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    let ledger = Ledger::open(config(dir.path()), signer.clone()).unwrap();
    fill(&ledger, &rt);
    let err = Ledger::open(config(dir.path()), signer.clone()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("open already"), "{err}");
    // The first handle goes on serving and appending.
    let (draft, keys, quota) = certified(10_000, "PO-A", 1000);
    rt.block_on(ledger.append(draft, keys, quota)).unwrap();
    rt.block_on(ledger.publish_checkpoint()).unwrap();
    let before = answers(&ledger, &rt);
    ledger.close();
    let ledger = Ledger::open(config(dir.path()), signer).unwrap();
    assert_eq!(answers(&ledger, &rt), before);
    ledger.close();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Builds a closed ledger of 300 entries, fully checkpointed.
fn closed_ledger(dir: &std::path::Path, signer: Arc<dyn trustline_proto::signer::Signer>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ledger = Ledger::open(config(dir), signer).unwrap();
    rt.block_on(async {
        for d in 0..300u64 {
            let (draft, keys, quota) = certified(d, "PO-1", 1000);
            ledger.append(draft, keys, quota).await.unwrap();
        }
        ledger.publish_checkpoint().await.unwrap();
    });
    ledger.close();
}

#[test]
fn an_edited_entry_makes_the_ledger_refuse_to_open_and_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), signer.clone());
    let seg = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    // Edit entry 290 (inside the tail that open re-checks), with a correct
    // checksum, so only the hashes can tell.
    let recs = records(&bytes);
    let r = recs
        .iter()
        .find(|r| matches!(&r.record, Record::Entry(e) if e.seq == 290))
        .unwrap();
    let Record::Entry(e) = &r.record else {
        unreachable!()
    };
    let mut entry = decode(&e.entry);
    entry.serial = "SN-FORGED".into();
    let forged = entry_record(290, &entry.encode_to_vec());
    bytes.splice(r.offset..r.offset + r.len, forged);
    std::fs::write(seg, &bytes).unwrap();
    let err = Ledger::open(config(dir.path()), signer).unwrap_err();
    match err {
        Error::Corrupt { location, what } => {
            assert!(
                location.contains("290")
                    || location.contains("291")
                    || location.contains("tree size"),
                "location names the entry: {location}: {what}"
            );
        }
        other => panic!("expected a corruption refusal, got {other}"),
    }
}

#[test]
fn entries_cut_off_the_end_make_the_ledger_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    closed_ledger(dir.path(), signer.clone());
    let seg = &segment_files(dir.path())[0];
    let bytes = std::fs::read(seg).unwrap();
    let recs = records(&bytes);
    // Cut the last 20 records at a record boundary (no torn tail to see).
    let cut = recs[recs.len() - 20].offset;
    std::fs::write(seg, &bytes[..cut]).unwrap();
    let err = Ledger::open(config(dir.path()), signer.clone()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // Even with the index gone, checkpoint.latest still reveals the cut.
    std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
    let err = Ledger::open(config(dir.path()), signer).unwrap_err();
    assert!(err.to_string().contains("cut off"), "{err}");
}

#[test]
fn another_checkpoint_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    closed_ledger(dir.path(), signer());
    assert!(matches!(
        Ledger::open(config(dir.path()), signer()),
        Err(Error::KeyMismatch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_appends_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path()), signer()).unwrap();
    let (draft, _, _) = certified(1, "PO-1", 10);
    let twice = vec![UniqueKey::new("serial", "A"), UniqueKey::new("serial", "A")];
    assert!(matches!(
        ledger.append(draft.clone(), twice, None).await,
        Err(Error::InvalidArgument(_))
    ));
    let mut bad = draft.clone();
    bad.rot_id = "not-a-rot-id".into();
    assert!(matches!(
        ledger.append(bad, vec![], None).await,
        Err(Error::InvalidArgument(_))
    ));
    let mut unspecified = draft;
    unspecified.kind = EventKind::Unspecified;
    assert!(matches!(
        ledger.append(unspecified, vec![], None).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(ledger.size(), 0);
    assert!(matches!(ledger.get_entry(0), Err(Error::NotFound(_))));
    assert!(matches!(
        ledger.inclusion_proof(0, 0),
        Err(Error::NotFound(_))
    ));
    ledger.close();
}

/// The engine seam (issue 14 preparation): a batch through
/// `LedgerEngine::append_batch` is checked in order against earlier
/// entries and earlier appends of the batch, one result per append, and a
/// refusal leaves nothing of that append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_the_engine_seam_is_checked_in_order() {
    use custody_ledger::{Append, Constraints, LedgerEngine};
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path()), signer()).unwrap();
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let append = |device: u64, limit: u64| {
        let (draft, unique_keys, quota) = certified(device, "PO-E", limit);
        Append {
            draft,
            constraints: Constraints { unique_keys, quota },
        }
    };
    let results = engine
        .append_batch(vec![append(1, 2), append(1, 2), append(2, 2), append(3, 2)])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    let first = results[0].as_ref().unwrap().seq;
    assert!(
        matches!(&results[1], Err(Error::Conflict { holder_seq, .. }) if *holder_seq == first),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok());
    assert!(matches!(
        &results[3],
        Err(Error::QuotaExhausted { used: 2, .. })
    ));
    assert_eq!(engine.size(), 2);
    assert_eq!(engine.quota("order/PO-E".into()).await.unwrap(), 2);
    let bytes = engine.entry(first).await.unwrap();
    assert_eq!(&bytes, &results[0].as_ref().unwrap().entry);
    let cp = engine.publish_checkpoint().await.unwrap();
    let p = engine.inclusion_proof(first, 0).await.unwrap();
    verify_inclusion(&leaf_hash(&bytes), &p, &cp.root).unwrap();
    assert_eq!(
        engine
            .lookup_key(UniqueKey::new("serial", "SN-000002"))
            .await
            .unwrap(),
        Some(first + 1)
    );
    ledger.close();
}
