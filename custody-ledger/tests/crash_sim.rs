//! Power cuts at every sync, simulated: a storage backend keeps a "live"
//! and a "durable" image and crashes at its Nth sync. After every crash,
//! whatever the torn tail looks like, the reopened ledger holds every
//! acknowledged entry byte for byte, nothing half-written, and passes the
//! offline verifier (invariants 1 and 5).

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use custody_ledger::storage::{SimStorage, Storage, Torn};
use custody_ledger::{verify, Error, EventKind, Ledger, LedgerConfig};

fn sim_config(index: &std::path::Path) -> LedgerConfig {
    let mut c = LedgerConfig::new(index.join("unused"));
    c.index_dir = Some(index.join("index"));
    // Checkpoints only when asked, so the sync count is the test's.
    c.checkpoint_interval = Duration::from_secs(3600);
    // Rotate often, so crashes land in segment creation too.
    c.segment_max_bytes = 2048;
    c
}

/// Appends from four tasks until the storage dies (or 48 appends are done);
/// returns the acknowledged `(seq, bytes)` and the error that stopped it.
fn load(ledger: &Ledger) -> (Vec<(u64, Vec<u8>)>, Option<Error>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..12u64 {
                    let d = t * 100 + i;
                    let (draft, keys, quota) = certified(d, "PO-C", 10_000);
                    match ledger.append(draft, keys, quota).await {
                        Ok(a) => acked.push((a.seq, a.entry)),
                        Err(e) => return (acked, Some(e)),
                    }
                    if i % 4 == 3 {
                        if let Err(e) = ledger.publish_checkpoint().await {
                            return (acked, Some(e));
                        }
                    }
                }
                (acked, None)
            }));
        }
        let mut all = Vec::new();
        let mut err = None;
        for t in tasks {
            let (a, e) = t.await.unwrap();
            all.extend(a);
            err = err.or(e);
        }
        (all, err)
    })
}

#[test]
fn a_crash_at_every_sync_loses_nothing_acknowledged() {
    let signer = signer();
    let mut crashed_runs = 0;
    for n in 1..=70u64 {
        let index = tempfile::tempdir().unwrap();
        let storage = Arc::new(SimStorage::crash_at_sync(n));
        let (acked, err) = match Ledger::open_with_storage(
            sim_config(index.path()),
            signer.clone(),
            storage.clone(),
        ) {
            Ok(ledger) => {
                let (acked, err) = load(&ledger);
                if storage.has_crashed() {
                    // The first failure is latched: the ledger answers
                    // "stopped" without touching the disk again.
                    let (draft, keys, quota) = certified(9999, "PO-C", 10_000);
                    assert!(matches!(
                        ledger.append_blocking(draft, keys, quota),
                        Err(Error::Stopped(_))
                    ));
                    assert!(matches!(ledger.get_entry(0), Err(Error::Stopped(_))));
                }
                ledger.close();
                (acked, err)
            }
            Err(e) => (Vec::new(), Some(e)),
        };
        if !storage.has_crashed() {
            assert!(err.is_none(), "sync {n}: {err:?}");
            continue;
        }
        crashed_runs += 1;
        let torn = match n % 3 {
            0 => Torn::Nothing,
            1 => Torn::Prefix(n),
            _ => Torn::Garbage(n),
        };
        let image = Arc::new(storage.after_crash(torn));
        let ledger =
            Ledger::open_with_storage(sim_config(index.path()), signer.clone(), image.clone())
                .unwrap_or_else(|e| panic!("crash at sync {n} ({torn:?}): reopen failed: {e}"));
        for (seq, bytes) in &acked {
            assert_eq!(
                &ledger
                    .get_entry(*seq)
                    .unwrap_or_else(|e| panic!("sync {n}: entry {seq} lost: {e}")),
                bytes,
                "sync {n}: entry {seq} differs"
            );
        }
        assert!(ledger.size() >= acked.len() as u64);
        // The reopened ledger works.
        let a = ledger
            .append_blocking(
                custody(1, EventKind::Scrapped, "after the crash"),
                vec![],
                None,
            )
            .unwrap();
        assert_eq!(a.seq + 1, ledger.size());
        ledger.publish_checkpoint_blocking().unwrap();
        ledger.close();
        let verified = verify::verify_dir(
            image.as_ref() as &dyn Storage,
            &verify::Options::default(),
            &mut |_| {},
        )
        .unwrap();
        assert!(
            verified.report.is_ok(),
            "sync {n}: {:?}",
            verified.report.problem
        );
        assert_eq!(verified.report.uncovered, 0);
    }
    assert!(
        crashed_runs > 40,
        "only {crashed_runs} runs crashed: raise the sync range"
    );
}
