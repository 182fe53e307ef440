//! Several replicas on one database: one linear history, one signer at a
//! time chosen by the lease row, and a takeover when the signer dies.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use custody_ledger::merkle::leaf_hash;
use custody_ledger::verify::Options;
use custody_ledger::{Constraints, Draft, EventKind, LedgerEngine, UniqueKey};
use pg_store::records;
use trustline_proto::signer::{Signer, SoftwareSigner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_appending_at_once_make_one_history() {
    let url = database("replicas").await;
    let signer = signer();
    let a = open(&url, &signer).await;
    let b = open(&url, &signer).await;
    let mut tasks = Vec::new();
    for (r, replica) in [a.clone(), b.clone()].into_iter().enumerate() {
        let engine: Arc<dyn LedgerEngine> = Arc::new(replica);
        for t in 0..8u64 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..25u64 {
                    let mut d = Draft::new(EventKind::Shipped);
                    d.actor = format!("replica-{r}/task-{t}/{i}");
                    let c = Constraints {
                        unique_keys: vec![UniqueKey::new("n", format!("{r}-{t}-{i}"))],
                        quota: None,
                    };
                    acked.push(engine.append(d, c).await.unwrap());
                }
                acked
            }));
        }
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        for a in t.await.unwrap() {
            assert!(
                acked.insert(a.seq, a).is_none(),
                "a sequence number given twice"
            );
        }
    }
    assert_eq!(acked.len(), 400);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (0..400).collect::<Vec<_>>(),
        "no gap"
    );
    let ea: Arc<dyn LedgerEngine> = Arc::new(a.clone());
    let eb: Arc<dyn LedgerEngine> = Arc::new(b.clone());
    let cp = ea.publish_checkpoint().await.unwrap();
    assert_eq!(eb.publish_checkpoint().await.unwrap().size, cp.size);
    assert!(
        !(a.holds_lease() && b.holds_lease()),
        "one signer at a time"
    );
    for (seq, x) in &acked {
        assert_eq!(
            eb.entry(*seq).await.unwrap(),
            x.entry,
            "acknowledged bytes stored"
        );
    }
    a.close().await;
    b.close().await;
    // Every checkpoint is consistent with every other (one recomputed
    // tree) and the history is one chain.
    let v = records::verify(&url, &Options::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert_eq!(v.report.entries, 400);
    assert!(v.report.checkpoints >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_loses_nothing_and_another_replica_takes_over() {
    let url = database("takeover").await;
    let key = SoftwareSigner::generate();
    let key_hex = hex::encode(key.key().to_bytes());
    let signer: Arc<dyn Signer> = Arc::new(key);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-ledger-child"))
        .args([&url, &key_hex, "a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait until the child signs and has entries acknowledged.
    let mut acked = BTreeMap::new();
    let mut lease = false;
    while !lease || acked.len() < 200 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the child runs");
        if line == "lease" {
            lease = true;
        } else if let Some(rest) = line.strip_prefix("acked ") {
            let (seq, leaf) = rest.split_once(' ').unwrap();
            acked.insert(seq.parse::<u64>().unwrap(), leaf.to_string());
        }
    }
    // A second replica, then the signer is killed mid-batch.
    let b = open(&url, &signer).await;
    assert!(!b.holds_lease(), "the child holds the lease");
    child.kill().unwrap();
    child.wait().unwrap();
    while let Ok(line) = rx.try_recv() {
        if let Some(rest) = line.strip_prefix("acked ") {
            let (seq, leaf) = rest.split_once(' ').unwrap();
            acked.insert(seq.parse::<u64>().unwrap(), leaf.to_string());
        }
    }
    let start = Instant::now();
    let mut rx_cp = b.clone();
    let engine: Arc<dyn LedgerEngine> = Arc::new(b.clone());
    let after = engine
        .append(Draft::new(EventKind::Shipped), Constraints::default())
        .await
        .unwrap();
    // publish_checkpoint waits for (or takes) the lease.
    let cp = engine.publish_checkpoint().await.unwrap();
    assert!(cp.size > after.seq);
    assert!(b.holds_lease(), "the surviving replica signs now");
    eprintln!("takeover after {:?}", start.elapsed());
    let _ = rx_cp.wait_for_checkpoint(cp.size).await.unwrap();
    for (seq, leaf) in &acked {
        let stored = engine.entry(*seq).await.unwrap();
        assert_eq!(
            &hex::encode(leaf_hash(&stored)),
            leaf,
            "acknowledged entry {seq} kept"
        );
    }
    b.close().await;
    let v = records::verify(&url, &Options::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    rx_cp = open(&url, &signer).await;
    rx_cp.close().await;
}

/// A replica pipelines its batches only while it sees no other replica
/// live: each renews a presence row, so two replicas go one batch at a
/// time on the locked head row before their batches can collide, and the
/// survivor pipelines again once the other closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_pipelines_only_while_it_sees_no_other() {
    let url = database("presence").await;
    let signer = signer();
    let a = open(&url, &signer).await;
    assert!(!a.sees_other_replicas(), "alone on the database");
    let load = |ledgers: Vec<pg_store::PgLedger>, round: u64| async move {
        let mut tasks = Vec::new();
        for (r, l) in ledgers.into_iter().enumerate() {
            let engine: Arc<dyn LedgerEngine> = Arc::new(l);
            for t in 0..48u64 {
                let engine = engine.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..8u64 {
                        let mut d = Draft::new(EventKind::Shipped);
                        d.actor = format!("{round}/{r}/{t}/{i}");
                        engine.append(d, Constraints::default()).await.unwrap();
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    };
    let until = |f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "not within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    load(vec![a.clone()], 0).await;
    let alone = a.batch_stats();
    assert!(alone.pipelined > 0, "alone, it pipelines: {alone:?}");

    let b = open(&url, &signer).await;
    assert!(b.sees_other_replicas(), "the second sees the first at once");
    until(&|| a.sees_other_replicas());
    load(vec![a.clone(), b.clone()], 1).await;
    assert_eq!(
        a.batch_stats().pipelined,
        alone.pipelined,
        "{:?}",
        a.batch_stats()
    );
    assert_eq!(b.batch_stats().pipelined, 0, "{:?}", b.batch_stats());
    assert!(b.batch_stats().committed > 0);

    b.close().await;
    until(&|| !a.sees_other_replicas());
    load(vec![a.clone()], 2).await;
    assert!(
        a.batch_stats().pipelined > alone.pipelined,
        "pipelines again once alone: {:?}",
        a.batch_stats()
    );
    a.close().await;
    let v = records::verify(&url, &Options::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(v.report.is_ok(), "{:?}", v.report.problem);
    assert_eq!(v.report.entries, 48 * 8 * 4);
}
