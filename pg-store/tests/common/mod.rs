//! Helpers shared by the PostgreSQL test binaries: one throwaway cluster
//! per test binary, one database per test, keys and sample entries.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // Shared by several test binaries; tests may unwrap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use custody_ledger::{Constraints, Draft, EventKind, QuotaUse, UniqueKey};
use pg_store::cluster::Cluster;
use pg_store::{PgLedger, PgLedgerConfig};
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The test binary's cluster, started on first use (stopped when the
/// process ends, by the cluster's watchdog).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start().expect("start a throwaway postgresql cluster"))
}

/// A fresh database on the cluster; its URL.
pub async fn database(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    cluster()
        .create_database(&format!("{name}_{n}"))
        .await
        .unwrap()
}

/// A fresh software checkpoint key.
pub fn signer() -> Arc<dyn Signer> {
    Arc::new(SoftwareSigner::generate())
}

/// A config with a quick checkpoint cadence and lease.
pub fn config(url: &str) -> PgLedgerConfig {
    let mut c = PgLedgerConfig::new(url);
    c.checkpoint_interval = Duration::from_millis(100);
    c.lease_ttl = Duration::from_millis(900);
    c
}

/// Opens a replica.
pub async fn open(url: &str, signer: &Arc<dyn Signer>) -> PgLedger {
    PgLedger::open(config(url), signer.clone()).await.unwrap()
}

/// The rot_id of simulated device `n`.
pub fn rot(n: u64) -> String {
    hex::encode(Sha256::digest(format!("device-{n}")))
}

/// A `Certified`-like append for device `device`, with serial and rot_id
/// keys and a quota on `order`.
pub fn certified(device: u64, order: &str, limit: u64) -> (Draft, Constraints) {
    let serial = format!("SN-{device:06}");
    let draft = Draft {
        kind: EventKind::Certified,
        rot_id: rot(device),
        serial: serial.clone(),
        site: "site-a".into(),
        actor: "station/site-a/st-01".into(),
        order_id: order.into(),
        payload: format!("certificate of {device}").into_bytes(),
    };
    let c = Constraints {
        unique_keys: vec![
            UniqueKey::new("serial", serial),
            UniqueKey::new("rot_id", rot(device)),
        ],
        quota: Some(QuotaUse::new(format!("order/{order}"), limit)),
    };
    (draft, c)
}

/// A custody event (no constraints) for device `device`.
pub fn custody(device: u64, kind: EventKind, note: &str) -> Draft {
    Draft {
        kind,
        rot_id: rot(device),
        site: "site-a".into(),
        actor: "station/site-a/st-02".into(),
        payload: note.as_bytes().to_vec(),
        ..Draft::default()
    }
}

/// A plain connection for tampering and inspection.
pub async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}
