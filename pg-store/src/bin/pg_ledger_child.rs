//! Test helper for `tests/replicas.rs` (not part of the product): opens the
//! PostgreSQL ledger at the URL given as a replica, appends from many tasks
//! as fast as it can and prints `acked <seq> <leaf hex>` for every
//! acknowledged append and `lease` once it signs checkpoints, until it is
//! killed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custody_ledger::{Draft, EventKind, LedgerEngine, UniqueKey};
use pg_store::{PgLedger, PgLedgerConfig};
use trustline_proto::signer::{Signer, SoftwareSigner};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(key_hex), Some(tag)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: pg-ledger-child URL KEY_HEX TAG");
        return std::process::ExitCode::from(2);
    };
    let Ok(bytes) = hex::decode(key_hex) else {
        return std::process::ExitCode::from(2);
    };
    let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) else {
        return std::process::ExitCode::from(2);
    };
    let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::from_key(key));
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return std::process::ExitCode::from(2);
    };
    rt.block_on(async move {
        let mut config = PgLedgerConfig::new(url);
        config.checkpoint_interval = Duration::from_millis(100);
        config.lease_ttl = Duration::from_millis(900);
        config.replica = Some(format!("child-{tag}"));
        let ledger = match PgLedger::open(config, signer).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("open failed: {e}");
                return std::process::ExitCode::from(3);
            }
        };
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let say = |o: &Mutex<std::io::Stdout>, line: String| {
            let mut o = o.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        };
        say(&out, "ready".into());
        let engine: Arc<dyn LedgerEngine> = Arc::new(ledger.clone());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let engine = engine.clone();
            let out = out.clone();
            let tag = tag.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let mut d = Draft::new(EventKind::Shipped);
                    d.actor = format!("{tag}-{t}-{i}");
                    let key = UniqueKey::new("child", format!("{tag}-{t}-{i}"));
                    let c = custody_ledger::Constraints {
                        unique_keys: vec![key],
                        quota: None,
                    };
                    if let Ok(a) = engine.append(d, c).await {
                        say(
                            &out,
                            format!("acked {} {}", a.seq, hex::encode(a.leaf_hash)),
                        );
                    }
                }
            }));
        }
        let mut said = false;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if ledger.holds_lease() && !said {
                said = true;
                say(&out, "lease".into());
            }
        }
    })
}
