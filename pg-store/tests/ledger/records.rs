//! Verify, export and migrate on PostgreSQL: tampered rows are caught, an
//! export equals the files' byte for byte (invariant 5, 2.4.14.3).

use std::sync::Arc;

use crate::common::*;
use custody_ledger::verify::{self, Options};
use custody_ledger::{Constraints, EventKind, Ledger, LedgerConfig, LedgerEngine};
use pg_store::records;

/// A ledger of `n` devices (a `Certified` and a `Shipped` entry each),
/// checkpointed and closed.
async fn filled(url: &str, n: u64) {
    let ledger = open(url, &signer()).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    for d in 0..n {
        let (draft, c) = certified(d, "PO-T", 1000);
        engine.append(draft, c).await.unwrap();
        engine
            .append(
                custody(d, EventKind::Shipped, "out"),
                Constraints::default(),
            )
            .await
            .unwrap();
        if d == n / 2 {
            engine.publish_checkpoint().await.unwrap();
        }
    }
    engine.publish_checkpoint().await.unwrap();
    ledger.close().await;
}

async fn problem(url: &str) -> Option<String> {
    let v = records::verify(url, &Options::default(), &mut |_| {})
        .await
        .unwrap();
    v.report.problem.map(|p| p.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_rows_are_caught_by_verify() {
    let url = database("tamper").await;
    filled(&url, 20).await;
    let v = records::verify(&url, &Options::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert_eq!(v.report.entries, 40);
    assert_eq!(v.report.unique_keys, 40);
    let c = sql(&url).await;

    // An entry's bytes (its last byte).
    let original: Vec<u8> = c
        .query_one("SELECT entry FROM entries WHERE seq = 7", &[])
        .await
        .unwrap()
        .get(0);
    c.batch_execute(
        "UPDATE entries SET entry = overlay(entry placing '\\x21'::bytea from length(entry) for 1) \
         WHERE seq = 7",
    )
    .await
    .unwrap();
    let p = problem(&url).await.expect("an altered entry is caught");
    assert!(p.contains("entry 7"), "{p}");
    c.execute("UPDATE entries SET entry = $1 WHERE seq = 7", &[&original])
        .await
        .unwrap();

    // A leaf column that no longer matches its entry.
    let leaf: Vec<u8> = c
        .query_one("SELECT leaf FROM entries WHERE seq = 3", &[])
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE entries SET leaf = $1 WHERE seq = 3",
        &[&vec![0u8; 32]],
    )
    .await
    .unwrap();
    let p = problem(&url).await.expect("an altered leaf is caught");
    assert!(p.contains("leaf hash"), "{p}");
    c.execute("UPDATE entries SET leaf = $1 WHERE seq = 3", &[&leaf])
        .await
        .unwrap();

    // A Merkle node: proofs would be served from it.
    let node: Vec<u8> = c
        .query_one(
            "SELECT hash FROM merkle_nodes WHERE level = 4 AND idx = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE merkle_nodes SET hash = $1 WHERE level = 4 AND idx = 1",
        &[&vec![7u8; 32]],
    )
    .await
    .unwrap();
    let p = problem(&url).await.expect("an altered node is caught");
    assert!(p.contains("merkle_nodes row (4, 1)"), "{p}");
    c.execute(
        "UPDATE merkle_nodes SET hash = $1 WHERE level = 4 AND idx = 1",
        &[&node],
    )
    .await
    .unwrap();
    assert_eq!(problem(&url).await, None, "restored");

    // A deleted entry row (a Shipped entry: it holds no key), inside the
    // ledger and at its end.
    c.batch_execute("DELETE FROM entries WHERE seq = 11")
        .await
        .unwrap();
    let p = problem(&url).await.expect("a deleted row is caught");
    assert!(p.contains("entry 11"), "{p}");
    c.batch_execute(
        "BEGIN; DELETE FROM merkle_nodes WHERE (idx + 1) * (1::bigint << level) - 1 >= 38; \
         DELETE FROM entries WHERE seq >= 38 AND seq <> 38; COMMIT",
    )
    .await
    .unwrap();
    assert!(problem(&url).await.is_some(), "a cut-off tail is caught");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_from_postgresql_equals_one_from_files_and_migrate_moves_a_site() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    let mut cfg = LedgerConfig::new(dir.path().join("ledger"));
    cfg.checkpoint_interval = std::time::Duration::from_millis(50);
    let files = Ledger::open(cfg, signer.clone()).unwrap();
    for d in 0..30u64 {
        let (draft, c) = certified(d, "PO-M", 1000);
        files.append(draft, c.unique_keys, c.quota).await.unwrap();
        if d % 10 == 9 {
            files.publish_checkpoint().await.unwrap();
        }
        files
            .append(custody(d % 4, EventKind::Shipped, "out"), vec![], None)
            .await
            .unwrap();
    }
    files.close();

    let url = database("migrate").await;
    let moved = records::import_dir(&dir.path().join("ledger"), &url)
        .await
        .unwrap();
    assert_eq!(moved.entries, 60);

    let from_files = dir.path().join("files.export");
    let storage = custody_ledger::storage::FileStorage::open(&dir.path().join("ledger")).unwrap();
    custody_ledger::export::export(&storage, &from_files).unwrap();
    let from_pg = dir.path().join("pg.export");
    let s = records::export(&url, &from_pg).await.unwrap();
    assert_eq!(s.entries, 60);
    assert_eq!(
        std::fs::read(&from_files).unwrap(),
        std::fs::read(&from_pg).unwrap(),
        "byte for byte"
    );
    let opts = Options {
        key: Some(signer.public_key_der().to_vec()),
        ..Options::default()
    };
    let v = verify::verify_export(&from_pg, &opts, &mut |_| {}).unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);

    // The moved ledger goes on in PostgreSQL with the same key.
    let ledger = open(&url, &signer).await;
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    assert_eq!(engine.size(), 60);
    let (draft, c) = certified(5, "PO-M", 1000);
    assert!(
        matches!(
            engine.append(draft, c).await,
            Err(custody_ledger::Error::Conflict { .. })
        ),
        "keys moved with the entries"
    );
    assert_eq!(engine.quota("order/PO-M".into()).await.unwrap(), 30);
    let a = engine
        .append(
            custody(1, EventKind::Shipped, "after the move"),
            Constraints::default(),
        )
        .await
        .unwrap();
    assert_eq!(a.seq, 60);
    engine.publish_checkpoint().await.unwrap();
    ledger.close().await;
    assert_eq!(problem(&url).await, None);

    // A second migration into a database that holds a ledger is refused.
    let err = records::import_dir(&dir.path().join("ledger"), &url)
        .await
        .unwrap_err();
    assert!(matches!(err, pg_store::Error::OtherLedger(_)), "{err}");
}
