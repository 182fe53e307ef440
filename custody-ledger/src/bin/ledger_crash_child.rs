//! Test helper for `tests/kill9.rs` (not part of the product): opens the
//! ledger in the directory given, appends from many tasks as fast as it can
//! and prints `acked <seq> <leaf hex>` for every acknowledged append, until
//! it is killed.

use std::io::Write;
use std::sync::{Arc, Mutex};

use custody_ledger::{Draft, EventKind, Ledger, LedgerConfig, QuotaUse, UniqueKey};
use trustline_proto::signer::{Signer, SoftwareSigner};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(round)) = (args.next(), args.next()) else {
        eprintln!("usage: ledger-crash-child DIR ROUND");
        return std::process::ExitCode::from(2);
    };
    let dir = std::path::PathBuf::from(dir);
    // The same key every round: its scalar lives beside the ledger.
    let key_path = dir.join("child-signer.key");
    let signer = match std::fs::read(&key_path) {
        Ok(bytes) => match p256::ecdsa::SigningKey::from_slice(&bytes) {
            Ok(k) => SoftwareSigner::from_key(k),
            Err(e) => {
                eprintln!("bad key file: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        Err(_) => {
            let s = SoftwareSigner::generate();
            if std::fs::write(&key_path, s.key().to_bytes()).is_err() {
                return std::process::ExitCode::from(2);
            }
            s
        }
    };
    let mut config = LedgerConfig::new(dir.join("ledger"));
    config.checkpoint_interval = std::time::Duration::from_millis(50);
    config.segment_max_bytes = 64 * 1024;
    let signer: Arc<dyn Signer> = Arc::new(signer);
    let ledger = match Ledger::open(config, signer) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("open failed: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return std::process::ExitCode::from(2),
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(o, "ready");
        let _ = o.flush();
    }
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let ledger = ledger.clone();
            let out = out.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let n = t * 1_000_000 + i;
                    let rot = hex_id(&format!("{round}-{}", n % 50));
                    let draft = Draft {
                        kind: EventKind::Shipped,
                        rot_id: rot,
                        serial: format!("SN-{round}-{n}"),
                        site: "site-a".into(),
                        actor: "station/site-a/kill9".into(),
                        order_id: "PO-K9".into(),
                        payload: vec![7; 100 + (n % 200) as usize],
                    };
                    let keys = vec![UniqueKey::new("serial", format!("SN-{round}-{n}"))];
                    match ledger
                        .append(draft, keys, Some(QuotaUse::new("kill9", u64::MAX)))
                        .await
                    {
                        Ok(a) => {
                            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                            let _ = writeln!(o, "acked {} {}", a.seq, hex_encode(&a.leaf_hash));
                            let _ = o.flush();
                        }
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    std::process::ExitCode::SUCCESS
}

fn hex_id(s: &str) -> String {
    use sha2::Digest;
    hex_encode(&sha2::Sha256::digest(s.as_bytes()))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
