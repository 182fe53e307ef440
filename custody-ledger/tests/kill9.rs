//! A child process appends under load and is killed with SIGKILL at random
//! moments, many times. After every kill the ledger reopens, every
//! acknowledged append is there byte for byte (by leaf hash), nothing
//! unacknowledged is half there, and the offline verifier passes
//! (invariant 1, "recorded before released").

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_ledger::merkle::leaf_hash;
use custody_ledger::storage::FileStorage;
use custody_ledger::{verify, Ledger, LedgerConfig};
use rand::Rng;
use trustline_proto::signer::{Signer, SoftwareSigner};

const ROUNDS: u32 = 12;

fn child_signer(dir: &std::path::Path) -> Arc<dyn Signer> {
    let bytes = std::fs::read(dir.join("child-signer.key")).expect("the child wrote its key");
    Arc::new(SoftwareSigner::from_key(
        p256::ecdsa::SigningKey::from_slice(&bytes).expect("a P-256 scalar"),
    ))
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut total_acked = 0usize;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-crash-child"))
            .arg(dir.path())
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to open the ledger, then kill it after a
        // random moment of appending.
        let ready = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child opens the ledger");
        assert_eq!(ready, "ready", "round {round}");
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(20..400));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        let mut this_round = 0;
        for line in rx.try_iter() {
            let mut parts = line.split(' ');
            if parts.next() == Some("acked") {
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                let leaf = parts.next().unwrap().to_string();
                assert!(
                    acked.insert(seq, leaf).is_none(),
                    "seq {seq} acknowledged twice"
                );
                this_round += 1;
            }
        }
        total_acked += this_round;

        // Restart: every acknowledged entry is present with the same hash.
        let ledger_dir = dir.path().join("ledger");
        let mut config = LedgerConfig::new(&ledger_dir);
        config.checkpoint_interval = Duration::from_secs(3600);
        let ledger = Ledger::open(config, child_signer(dir.path()))
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        for (seq, leaf) in &acked {
            let entry = ledger
                .get_entry(*seq)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged entry {seq} lost: {e}"));
            assert_eq!(
                &hex::encode(leaf_hash(&entry)),
                leaf,
                "round {round}: entry {seq} changed"
            );
        }
        ledger.close();
        let storage = FileStorage::open(&ledger_dir).unwrap();
        let v = verify::verify_dir(&storage, &verify::Options::default(), &mut |_| {}).unwrap();
        assert!(v.report.is_ok(), "round {round}: {:?}", v.report.problem);
        assert!(v.report.entries >= acked.len() as u64);
    }
    assert!(
        total_acked > 100,
        "the child acknowledged only {total_acked} appends"
    );
}
