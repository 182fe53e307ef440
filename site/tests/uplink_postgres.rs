//! The site's uplink when the site's ledger is in PostgreSQL (issue 14
//! item 5: the hub's sync reads a PostgreSQL ledger exactly as it reads
//! files; issue 13 item 1; 2.4.14.20, 2.4.14.22): a real throwaway
//! cluster, a real hub in this process on its embedded store, gRPC
//! through the transport guard with the site's `Role::Site` caller.
//!
//! Shown: every entry reaches the hub and each checkpoint is cosigned;
//! the cosignature is kept in `<data>/ledger/` and counts for the offline
//! allowance again after a restart; a second database that holds another
//! history under the same site key and origin is a fork, refused without
//! a push.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use custody_ledger::{Constraints, Draft, EventKind, LedgerEngine, QuotaUse, UniqueKey};
use pg_store::cluster::Cluster;
use pg_store::{PgLedger, PgLedgerConfig};
use site::uplink::{self, LinkState, UplinkLedger};
use trustline_proto::signer::{Signer, SoftwareSigner};

mod common;
use common::{cosigner, Fixture, ORIGIN, SITE};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The test binary's one throwaway cluster.
fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start().expect("start a throwaway postgresql cluster"))
}

async fn open_pg(db: &str, signer: &Arc<SoftwareSigner>) -> PgLedger {
    let url = cluster().create_database(db).await.unwrap();
    let mut config = PgLedgerConfig::new(url);
    config.origin = ORIGIN.into();
    // Checkpoints only when the test asks for them.
    config.checkpoint_interval = Duration::from_secs(3600);
    PgLedger::open(config, signer.clone() as Arc<dyn Signer>)
        .await
        .unwrap()
}

/// Appends `n` `CERTIFIED`-shaped entries under `order`, tagged `tag`.
async fn certify(ledger: &PgLedger, tag: &str, n: usize, order: &str) {
    let engine: &dyn LedgerEngine = ledger;
    for i in 0..n {
        let serial = format!("SN-{tag}-{i}");
        let draft = Draft {
            kind: EventKind::Certified,
            rot_id: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&serial)),
            serial: serial.clone(),
            site: SITE.into(),
            actor: format!("station/{SITE}/st-01"),
            order_id: order.into(),
            payload: Vec::new(),
        };
        let constraints = Constraints {
            unique_keys: vec![UniqueKey::new("serial", serial.into_bytes())],
            quota: Some(QuotaUse::new(format!("order/{order}"), 1_000)),
        };
        engine.append(draft, constraints).await.unwrap();
    }
}

impl Fixture {
    /// The uplink's view of `ledger`, its cosignatures kept in
    /// `<dir>/<name>/ledger` (a site data directory's ledger folder).
    fn uplink_ledger(&self, ledger: &PgLedger, name: &str) -> UplinkLedger {
        UplinkLedger::new(
            Arc::new(ledger.clone()),
            self.dir.path().join(name).join("ledger"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_site_ledger_is_mirrored_cosigned_and_its_cosignature_kept_across_a_restart() {
    let f = Fixture::new();
    let pg = open_pg("uplink_genuine", &f.signer).await;
    certify(&pg, "a", 10, "PO-1").await;
    let cp = LedgerEngine::publish_checkpoint(&pg).await.unwrap();
    assert_eq!(cp.size, 10);

    let up = uplink::spawn(
        &f.config(),
        f.uplink_ledger(&pg, "site"),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let s = up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    assert_eq!(s.state, LinkState::Online, "{:?}", s.last_error);
    assert_eq!(s.witnessed("order/PO-1").certified, 10);
    let hub = f.hub.status(SITE).unwrap();
    assert_eq!(hub.mirror_size, 10, "every entry mirrored at the hub");
    // The hub's RFC 6962 root over what it mirrors is the database's: it
    // holds the exact stored bytes of every entry.
    assert_eq!(hub.mirror_root, LedgerEngine::root(&pg, 10).await.unwrap());
    // The kept note: the site's checkpoint and the witness's line, in
    // `<data>/ledger/` although the entries are in PostgreSQL.
    let kept_path = f.dir.path().join("site/ledger/checkpoint.cosigned");
    let kept = std::fs::read_to_string(&kept_path).unwrap();
    assert!(kept.starts_with(&cp.note) && kept.len() > cp.note.len());
    custody_ledger::checkpoint::open(&kept, f.signer.public_key_der(), Some(ORIGIN)).unwrap();
    let time = cosigner(&f.witness_pkcs8)
        .witness_key()
        .verify(&kept)
        .unwrap();
    assert_eq!(time, s.cosigned.as_ref().unwrap().time);

    // More entries: pushed and cosigned as they come.
    certify(&pg, "b", 5, "PO-1").await;
    let cp2 = LedgerEngine::publish_checkpoint(&pg).await.unwrap();
    let s = up.wait_for(|s| s.cosigned_size() >= cp2.size).await;
    assert_eq!(s.witnessed("order/PO-1").certified, 15);
    up.stop().await;

    // A restart, the hub unreachable: the kept cosignature counts at once.
    let offline = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
        Err::<http::Response<tonic::body::Body>, Box<dyn std::error::Error + Send + Sync>>(
            "connection refused: the hub is unreachable".into(),
        )
    });
    let up = uplink::spawn(
        &f.config(),
        f.uplink_ledger(&pg, "site"),
        offline,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(up.status().cosigned_size(), cp2.size);
    assert_eq!(up.status().witnessed("order/PO-1").certified, 15);
    up.stop().await;
    pg.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_ledger_with_another_history_is_a_fork_and_nothing_is_pushed() {
    let f = Fixture::new();
    let genuine = open_pg("uplink_fork_genuine", &f.signer).await;
    certify(&genuine, "a", 4, "PO-1").await;
    let cp = LedgerEngine::publish_checkpoint(&genuine).await.unwrap();
    let up = uplink::spawn(
        &f.config(),
        f.uplink_ledger(&genuine, "genuine"),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    up.stop().await;

    // Same key, same origin, another history of more entries.
    let other = open_pg("uplink_fork_other", &f.signer).await;
    certify(&other, "x", 6, "PO-1").await;
    LedgerEngine::publish_checkpoint(&other).await.unwrap();
    let up = uplink::spawn(
        &f.config(),
        f.uplink_ledger(&other, "other"),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let s = up.wait_for(|s| s.state == LinkState::Forked).await;
    assert_eq!(s.state, LinkState::Forked);
    assert!(
        s.fork.as_ref().unwrap().reason.contains("root"),
        "{:?}",
        s.fork
    );
    up.stop().await;
    assert_eq!(
        f.hub.status(SITE).unwrap().mirror_size,
        4,
        "nothing of the other history was pushed"
    );
    assert_eq!(f.hub.status(SITE).unwrap().cosigned_size(), cp.size);
    genuine.close().await;
    other.close().await;
}
