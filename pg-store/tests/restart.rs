//! The database stopped and started under load: appends fail with
//! `UNAVAILABLE` while it is down, no acknowledged entry is lost, and the
//! engine resumes by itself (invariant 1). This binary stops its cluster,
//! so it has one of its own.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use custody_ledger::verify::Options;
use custody_ledger::{Constraints, Draft, Error, EventKind, LedgerEngine, UniqueKey};
use pg_store::{records, PgLedger, RetryPolicy};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_under_load_loses_nothing_and_service_resumes() {
    let url = database("restart").await;
    let mut cfg = config(&url);
    // Give up quickly while the server is down, so the test sees it.
    cfg.retry = RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    };
    let ledger = PgLedger::open(cfg, signer()).await.unwrap();
    let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let unavailable = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (engine, stop, unavailable, acks, progress) = (
            engine.clone(),
            stop.clone(),
            unavailable.clone(),
            acks.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let mut d = Draft::new(EventKind::Shipped);
                d.actor = format!("task-{t}/{i}");
                let c = Constraints {
                    unique_keys: vec![UniqueKey::new("n", format!("{t}-{i}"))],
                    quota: None,
                };
                match engine.append(d, c).await {
                    Ok(a) => {
                        acked.push(a);
                        i += 1;
                        acks.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(Error::Unavailable(_)) => {
                        unavailable.fetch_add(1, Ordering::AcqRel);
                        // Retried with a new key: the old one may have
                        // been written before the answer was lost.
                        i += 1;
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
                progress.notify_waiters();
            }
            acked
        }));
    }
    let wait_for = |n: u64, counter: Arc<AtomicU64>| {
        let progress = progress.clone();
        async move {
            while counter.load(Ordering::Acquire) < n {
                let _ = tokio::time::timeout(Duration::from_millis(50), progress.notified()).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait_for(100, acks.clone()))
        .await
        .unwrap();
    let stopper = tokio::task::spawn_blocking(|| cluster().stop());
    stopper.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(30), wait_for(8, unavailable.clone()))
        .await
        .expect("UNAVAILABLE while the database is down");
    let status: tonic::Status = Error::Unavailable("x".into()).into();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let before = acks.load(Ordering::Acquire);
    tokio::task::spawn_blocking(|| cluster().restart())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        wait_for(before + 100, acks.clone()),
    )
    .await
    .expect("service resumes by itself");
    stop.store(true, Ordering::Release);
    let mut acked = BTreeMap::new();
    for t in tasks {
        for a in t.await.unwrap() {
            assert!(acked.insert(a.seq, a).is_none());
        }
    }
    for (seq, a) in &acked {
        assert_eq!(
            &engine.entry(*seq).await.unwrap(),
            &a.entry,
            "entry {seq} kept"
        );
    }
    engine.publish_checkpoint().await.unwrap();
    ledger.close().await;
    let v = records::verify(&url, &Options::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert!(v.report.entries >= acked.len() as u64);
}
