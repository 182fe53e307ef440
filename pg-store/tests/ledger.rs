//! The PostgreSQL engine against a real server: appends, chains, proofs,
//! checkpoints, device histories, constraint races across restarts,
//! schema and key refusals (invariants 1, 2, 4, 5; 2.4.14.4, 2.4.14.12,
//! 2.4.14.22).

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;

use common::*;
use custody_ledger::merkle::{self, leaf_hash, verify_consistency, verify_inclusion};
use custody_ledger::{Append, Constraints, Error, EventKind, LedgerEngine, QuotaUse, UniqueKey};
use pg_store::PgLedger;
use prost::Message;
use trustline_proto::v1::LedgerEntry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_chain_prove_and_survive_a_reopen() {
    let url = database("chain").await;
    let signer = signer();
    let ledger = open(&url, &signer).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let mut appended = Vec::new();
    for d in 0..6u64 {
        let (draft, c) = certified(d, "PO-1", 100);
        appended.push(engine.append(draft, c).await.unwrap());
        let shipped = custody(d % 3, EventKind::Shipped, "to the warehouse");
        appended.push(
            engine
                .append(shipped, Constraints::default())
                .await
                .unwrap(),
        );
    }
    let mut head = merkle::GENESIS_HEAD;
    let mut last_of_device = std::collections::HashMap::new();
    for (i, a) in appended.iter().enumerate() {
        assert_eq!(a.seq, i as u64);
        assert_eq!(engine.entry(a.seq).await.unwrap(), a.entry, "exact bytes");
        assert_eq!(a.leaf_hash, leaf_hash(&a.entry));
        let e = LedgerEntry::decode(a.entry.as_slice()).unwrap();
        assert_eq!(e.prev_hash, head);
        let expected: Vec<u8> = last_of_device
            .get(&e.rot_id)
            .map(|h: &[u8; 32]| h.to_vec())
            .unwrap_or_default();
        assert_eq!(e.device_prev, expected, "device chain (2.4.14.12)");
        last_of_device.insert(e.rot_id.clone(), a.leaf_hash);
        head = merkle::chain_head(&head, &a.leaf_hash);
    }
    let listed = engine.entries(3, 100, 4).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    assert_eq!(
        engine
            .lookup_key(UniqueKey::new("serial", "SN-000002"))
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(engine.quota("order/PO-1".into()).await.unwrap(), 6);
    assert!(matches!(engine.entry(12).await, Err(Error::NotFound(_))));

    let first = engine.publish_checkpoint().await.unwrap();
    assert_eq!(first.size, 12);
    for a in &appended {
        let p = engine.inclusion_proof(a.seq, 0).await.unwrap();
        verify_inclusion(&a.leaf_hash, &p, &first.root).unwrap();
    }
    let history = engine.device_history(rot(1)).await.unwrap();
    assert_eq!(
        history
            .entries
            .iter()
            .map(|p| p.entry.seq)
            .collect::<Vec<_>>(),
        [2, 3, 9]
    );
    for p in &history.entries {
        verify_inclusion(
            &leaf_hash(&p.entry.entry),
            &p.proof,
            &history.checkpoint.root,
        )
        .unwrap();
    }
    let extra = engine
        .append(
            custody(7, EventKind::Shipped, "later"),
            Constraints::default(),
        )
        .await
        .unwrap();
    let second = engine.publish_checkpoint().await.unwrap();
    assert_eq!(second.size, 13);
    let c = engine.consistency_proof(12, 13).await.unwrap();
    verify_consistency(&c, &first.root, &second.root).unwrap();
    ledger.close().await;

    // Reopened: the same entries and checkpoint, and the sequence goes on.
    let again = open(&url, &signer).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(again.clone());
    assert_eq!(engine.size(), 13);
    assert_eq!(engine.latest_checkpoint().unwrap(), second);
    assert_eq!(engine.entry(extra.seq).await.unwrap(), extra.entry);
    let next = engine
        .append(
            custody(7, EventKind::Shipped, "after the reopen"),
            Constraints::default(),
        )
        .await
        .unwrap();
    assert_eq!(next.seq, 13);
    let e = LedgerEntry::decode(next.entry.as_slice()).unwrap();
    assert_eq!(e.device_prev, extra.leaf_hash.to_vec());
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racers_on_one_unique_key_one_wins() {
    let url = database("racers").await;
    let ledger = open(&url, &signer()).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let (draft, mut c) = certified(i, "PO-R", 1000);
            // Everyone claims the same serial (invariant 2, 2.4.14.4).
            c.unique_keys[0] = UniqueKey::new("serial", "SN-CONTESTED");
            engine.append(draft, c).await
        }));
    }
    let mut won = Vec::new();
    let mut holders = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => won.push(a.seq),
            Err(Error::Conflict { key, holder_seq }) => {
                assert_eq!(key, UniqueKey::new("serial", "SN-CONTESTED"));
                holders.push(holder_seq);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one racer wins");
    assert_eq!(holders.len(), 63);
    assert!(
        holders.iter().all(|&h| h == won[0]),
        "refusals name the winner"
    );
    assert_eq!(engine.size(), 1, "refusals leave nothing behind");
    // The table constraint is the backstop: a second holder cannot be
    // written even behind the engine's back.
    let c = sql(&url).await;
    let err = c
        .execute(
            "INSERT INTO unique_keys (namespace, value, seq) VALUES ('serial', 'SN-CONTESTED', 0)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racers_over_a_quota_of_ten_and_the_count_survives_restarts() {
    let url = database("quota").await;
    let signer = signer();
    let ledger = open(&url, &signer).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let (draft, c) = certified(i, "PO-Q", 10);
            engine.append(draft, c).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::QuotaExhausted { used, limit, .. }) => {
                assert_eq!((used, limit), (10, 10));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 10, "invariant 4 (2.4.14.22)");
    ledger.close().await;
    for round in 0..2u64 {
        let ledger = open(&url, &signer).await;
        let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
        assert_eq!(engine.quota("order/PO-Q".into()).await.unwrap(), 10 + round);
        let (draft, c) = certified(100 + round, "PO-Q", 10);
        match engine.append(draft, c).await {
            Err(Error::QuotaExhausted { used, .. }) => assert_eq!(used, 10 + round),
            other => panic!("unexpected {other:?}"),
        }
        // A higher limit declared later admits more (the limit is the
        // append's, the count the ledger's).
        let (draft, c) = certified(200 + round, "PO-Q", 12);
        engine.append(draft, c).await.unwrap();
        ledger.close().await;
    }
    let ledger = open(&url, &signer).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    assert_eq!(engine.quota("order/PO-Q".into()).await.unwrap(), 12);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_checked_in_order_and_refusals_leave_nothing() {
    let url = database("batch").await;
    let ledger = open(&url, &signer()).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let key = UniqueKey::new("claim", "C-1");
    let with = |k: Option<&UniqueKey>, q: Option<QuotaUse>| Append {
        draft: custody(1, EventKind::Shipped, "x"),
        constraints: Constraints {
            unique_keys: k.into_iter().cloned().collect(),
            quota: q,
        },
    };
    let out = engine
        .append_batch(vec![
            with(Some(&key), None),
            with(Some(&key), None),
            with(None, Some(QuotaUse::new("q", 1))),
            with(None, Some(QuotaUse::new("q", 1))),
            with(Some(&UniqueKey::new("", "empty namespace")), None),
            with(None, None),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().seq, 0);
    assert!(matches!(
        &out[1],
        Err(Error::Conflict { holder_seq: 0, .. })
    ));
    assert_eq!(out[2].as_ref().unwrap().seq, 1);
    assert!(matches!(
        &out[3],
        Err(Error::QuotaExhausted { used: 1, .. })
    ));
    assert!(matches!(&out[4], Err(Error::InvalidArgument(_))));
    assert_eq!(out[5].as_ref().unwrap().seq, 2);
    assert_eq!(engine.size(), 3);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_and_another_key_are_refused() {
    let url = database("refusals").await;
    let signer = signer();
    open(&url, &signer).await.close().await;
    let other = PgLedger::open(config(&url), common::signer())
        .await
        .unwrap_err();
    assert!(
        matches!(other, pg_store::Error::OtherLedger(_)),
        "another checkpoint key: {other}"
    );
    let c = sql(&url).await;
    c.execute(
        &format!(
            "INSERT INTO {} (version, name, applied_on, checksum) VALUES (999, 'future', '', '0')",
            pg_store::schema::HISTORY_TABLE
        ),
        &[],
    )
    .await
    .unwrap();
    let err = PgLedger::open(config(&url), signer.clone())
        .await
        .unwrap_err();
    match &err {
        pg_store::Error::SchemaTooNew { found, supported } => {
            assert_eq!(*found, 999);
            assert_eq!(*supported, pg_store::schema::latest_version());
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("newer than version"), "{err}");
}

/// Only subtrees of 16 leaves or more are stored (schema V5); proofs that
/// need smaller ones hash them from the leaves. Every inclusion proof of
/// a 70-entry ledger, at several tree sizes, and the consistency proofs
/// between them verify against the signed roots, and `merkle_nodes` holds
/// the 7 subtrees of level 4 and up, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_hash_the_small_subtrees_from_leaves_and_only_large_ones_are_stored() {
    let url = database("small-subtrees").await;
    let ledger = open(&url, &signer()).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let mut leaves = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 0..70u64 {
        let a = engine
            .append(
                custody(i % 5, EventKind::Shipped, "x"),
                Constraints::default(),
            )
            .await
            .unwrap();
        leaves.push(a.leaf_hash);
        if [1, 15, 16, 17, 33, 47, 64, 70].contains(&(i + 1)) {
            checkpoints.push(engine.publish_checkpoint().await.unwrap());
        }
    }
    for cp in &checkpoints {
        for seq in 0..cp.size {
            let p = engine.inclusion_proof(seq, cp.size).await.unwrap();
            verify_inclusion(&leaves[seq as usize], &p, &cp.root)
                .unwrap_or_else(|e| panic!("leaf {seq} in {}: {e}", cp.size));
        }
    }
    for (k, old) in checkpoints.iter().enumerate() {
        for new in &checkpoints[k + 1..] {
            let p = engine.consistency_proof(old.size, new.size).await.unwrap();
            verify_consistency(&p, &old.root, &new.root)
                .unwrap_or_else(|e| panic!("{} to {}: {e}", old.size, new.size));
        }
    }
    let c = sql(&url).await;
    let rows: Vec<(i16, i64)> = c
        .query(
            "SELECT level, count(*) FROM merkle_nodes GROUP BY level ORDER BY level",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(4, 4), (5, 2), (6, 1)]);
    ledger.close().await;
}

#[path = "ledger/records.rs"]
mod records;
#[path = "ledger/replicas.rs"]
mod replicas;

/// The pipeline of two batches (a batch placed after one still
/// committing) keeps every rule exact: 96 appenders at once over shared
/// devices, a quota that runs out mid-run and serials raced by two
/// appenders each. Device chains link across batches in flight
/// (2.4.14.12), the quota admits exactly its limit (invariant 4,
/// 2.4.14.22), each serial lands once (invariant 2, 2.4.14.4), the hash
/// chain is whole (invariant 1), and most batches were in fact pipelined;
/// the same with the pipeline off (depth 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_keep_chains_quotas_and_keys_exact() {
    for depth in [2, 1] {
        racing_appenders_at_depth(depth).await;
    }
}

async fn racing_appenders_at_depth(depth: usize) {
    let url = database("pipeline").await;
    let mut cfg = config(&url);
    cfg.pipeline_depth = depth;
    let ledger = PgLedger::open(cfg, signer()).await.unwrap();
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    const APPENDERS: u64 = 96;
    const ROUNDS: u64 = 12;
    const LIMIT: u64 = 300;
    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for r in 0..ROUNDS {
                // In the first round appenders 2k and 2k+1 race for one
                // serial; later rounds' serials are each their own.
                let device = if r == 0 {
                    1_000 + a / 2
                } else {
                    10_000 + a * ROUNDS + r
                };
                let (draft, c) = certified(device, "PO-P", LIMIT);
                outcomes.push(engine.append(draft, c).await);
                // A custody event on one of eight shared devices.
                let shipped = custody(a % 8, EventKind::Shipped, &format!("{a}/{r}"));
                engine
                    .append(shipped, Constraints::default())
                    .await
                    .unwrap();
            }
            outcomes
        }));
    }
    let (mut certified_ok, mut taken, mut exhausted) = (0u64, 0u64, 0u64);
    for t in tasks {
        for outcome in t.await.unwrap() {
            match outcome {
                Ok(_) => certified_ok += 1,
                Err(Error::Conflict { .. }) => taken += 1,
                Err(Error::QuotaExhausted { used, limit, .. }) => {
                    assert_eq!((used, limit), (LIMIT, LIMIT));
                    exhausted += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    assert_eq!(certified_ok, LIMIT, "the quota admits exactly its limit");
    assert_eq!(certified_ok + taken + exhausted, APPENDERS * ROUNDS);
    assert_eq!(engine.quota("order/PO-P".into()).await.unwrap(), LIMIT);

    let size = engine.size();
    assert_eq!(size, LIMIT + APPENDERS * ROUNDS);
    let mut head = merkle::GENESIS_HEAD;
    let mut last_of_device = std::collections::HashMap::new();
    let mut serials = std::collections::HashSet::new();
    for e in engine.entries(0, size, 100_000).await.unwrap() {
        let leaf = leaf_hash(&e.entry);
        let d = LedgerEntry::decode(e.entry.as_slice()).unwrap();
        assert_eq!(d.seq, e.seq);
        assert_eq!(d.prev_hash, head, "hash chain at {}", e.seq);
        let expected: Vec<u8> = last_of_device
            .get(&d.rot_id)
            .map(|h: &[u8; 32]| h.to_vec())
            .unwrap_or_default();
        assert_eq!(d.device_prev, expected, "device chain at {}", e.seq);
        last_of_device.insert(d.rot_id.clone(), leaf);
        if !d.serial.is_empty() {
            assert!(serials.insert(d.serial.clone()), "{} twice", d.serial);
        }
        head = merkle::chain_head(&head, &leaf);
    }
    let stats = ledger.batch_stats();
    if depth > 1 {
        assert!(
            stats.pipelined * 2 > stats.committed,
            "most batches placed after one in flight: {stats:?}"
        );
    } else {
        assert_eq!(stats.pipelined, 0, "depth 1 places every batch locked");
    }
    ledger.close().await;
}

/// The head row's compare-and-swap is the server's (schema V6,
/// `ledger_advance`), so that a batch's `COMMIT` can be sent in one
/// pipeline behind it: placed on a head that is not there, it raises
/// TL001, and the `COMMIT` behind it rolls the whole transaction back;
/// placed after a transaction in flight, it waits for that one and lands
/// exactly when it committed (invariant 1: one linear history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_moves_only_from_where_a_batch_was_placed() {
    let url = database("advance").await;
    let signer = signer();
    let ledger = open(&url, &signer).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let (draft, c) = certified(1, "PO-A", 10);
    engine.append(draft, c).await.unwrap();
    ledger.close().await;

    let advance = "SELECT ledger_advance($1, $2, $3, $4, 0, '\\x'::bytea)";
    let a = sql(&url).await;
    // Prepared first: a statement prepared on its first use would go out
    // after the COMMIT pipelined behind it.
    let advance_a = a.prepare(advance).await.unwrap();
    let (size, at) = ledger_head(&a).await;
    assert_eq!(size, 1);
    let next = vec![7u8; 32];

    // Placed on a size the head is not at, or on another chain head:
    // refused, and what the transaction wrote before is rolled back by
    // the COMMIT sent behind it.
    let to = size + 1;
    for (from_size, from_head) in [(0i64, at.clone()), (size, vec![1u8; 32])] {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&from_size, &from_head, &to, &next];
        let (marked, refused, committed) = futures::join!(
            a.batch_execute("BEGIN; INSERT INTO quotas (counter, used) VALUES ('marker', 1)"),
            a.execute(&advance_a, &params),
            a.batch_execute("COMMIT"),
        );
        marked.unwrap();
        let e = refused.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("TL001"), "{e:?}");
        committed.unwrap();
        assert_eq!(
            ledger_head(&a).await,
            (size, at.clone()),
            "the head did not move"
        );
        let marker = a
            .query_opt("SELECT used FROM quotas WHERE counter = 'marker'", &[])
            .await
            .unwrap();
        assert!(marker.is_none(), "nothing of the transaction committed");
    }

    // Placed after a transaction in flight: it waits on the row, and
    // lands when that one commits as placed, or is refused when it rolls
    // back — judged on the row the first one left, not on the snapshot.
    for first_commits in [true, false] {
        let b = sql(&url).await;
        a.batch_execute("BEGIN").await.unwrap();
        a.execute(&advance_a, &[&size, &at, &to, &next])
            .await
            .unwrap();
        let advance_b = b.prepare(advance).await.unwrap();
        let second = tokio::spawn(async move {
            let (from, to) = (size + 1, size + 2);
            let (next, after_next) = (vec![7u8; 32], vec![9u8; 32]);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&from, &next, &to, &after_next];
            let (begun, advanced, committed) = futures::join!(
                b.batch_execute("BEGIN"),
                b.execute(&advance_b, &params),
                b.batch_execute("COMMIT"),
            );
            begun.unwrap();
            committed.unwrap();
            advanced
                .map(|_| ())
                .map_err(|e| e.code().map(|c| c.code().to_owned()))
        });
        // The second waits on the row lock of the first.
        let mut waited = false;
        for _ in 0..200 {
            let waiting: i64 = a
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                waited = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(waited, "the second compare-and-swap waits on the first");
        a.batch_execute(if first_commits { "COMMIT" } else { "ROLLBACK" })
            .await
            .unwrap();
        let outcome = second.await.unwrap();
        let (now, now_head) = ledger_head(&a).await;
        if first_commits {
            assert_eq!(outcome, Ok(()), "lands after the one it was placed after");
            assert_eq!((now, now_head), (size + 2, vec![9u8; 32]));
            // Back to where the rest of the test expects the head.
            a.execute(
                "UPDATE ledger_head SET size = $1, head = $2 WHERE id = 1",
                &[&size, &at],
            )
            .await
            .unwrap();
        } else {
            assert_eq!(outcome, Err(Some("TL001".to_owned())));
            assert_eq!((now, now_head), (size, at.clone()), "nothing moved");
        }
    }
}

async fn ledger_head(c: &tokio_postgres::Client) -> (i64, Vec<u8>) {
    let r = c
        .query_one("SELECT size, head FROM ledger_head WHERE id = 1", &[])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}
