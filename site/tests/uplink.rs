//! The site's uplink against a real hub in this process (issue 13 item 1;
//! 2.4.14.6, 2.4.14.20, 2.4.14.22): real custody-ledger ledgers with
//! software keys, the hub on its embedded store, gRPC through the
//! transport guard with the site's `Role::Site` caller. The suite in
//! `tests/` runs the same over mTLS with the factory and stations.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use custody_ledger::{Draft, EventKind, Ledger, LedgerConfig, QuotaUse, UniqueKey};
use site::uplink::{self, LinkState};
use tokio::sync::Notify;
use tonic::body::Body;
use transport::{Caller, InProcessChannel, Limits, Role};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;

mod common;
use common::{Fixture, ORIGIN, SITE, WITNESS};

/// A site ledger with `signer`, checkpoints only on demand.
fn open_ledger(dir: &Path, signer: &Arc<SoftwareSigner>) -> Ledger {
    let mut config = LedgerConfig::new(dir);
    config.origin = ORIGIN.into();
    config.checkpoint_interval = Duration::from_secs(3600);
    Ledger::open(config, signer.clone() as Arc<dyn Signer>).unwrap()
}

/// Appends `n` `CERTIFIED`-shaped entries under `order`, tagged `tag`.
fn certify(ledger: &Ledger, tag: &str, n: usize, order: &str) {
    for i in 0..n {
        let serial = format!("SN-{tag}-{i}");
        let draft = Draft {
            kind: EventKind::Certified,
            rot_id: hex::encode(sha2_256(&serial)),
            serial: serial.clone(),
            site: SITE.into(),
            actor: format!("station/{SITE}/st-01"),
            order_id: order.into(),
            payload: Vec::new(),
        };
        let keys = vec![UniqueKey::new("serial", serial.into_bytes())];
        let quota = Some(QuotaUse::new(format!("order/{order}"), 1_000));
        tokio::task::block_in_place(|| ledger.append_blocking(draft, keys, quota)).unwrap();
    }
}

fn sha2_256(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

fn checkpoint(ledger: &Ledger) -> custody_ledger::SignedCheckpoint {
    tokio::task::block_in_place(|| ledger.publish_checkpoint_blocking()).unwrap()
}

impl Fixture {
    fn ledger(&self, name: &str) -> Ledger {
        open_ledger(&self.dir.path().join(name), &self.signer)
    }
}

/// A channel that can be cut (the hub unreachable) and that can hold
/// every `PushEntries` call until released.
#[derive(Clone)]
struct Wire {
    inner: InProcessChannel,
    up: Arc<AtomicBool>,
    hold_pushes: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl Wire {
    fn new(inner: InProcessChannel) -> Self {
        Self {
            inner,
            up: Arc::new(AtomicBool::new(true)),
            hold_pushes: Arc::new(AtomicBool::new(false)),
            held: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(Notify::new()),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<Body>> for Wire {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(|e: Infallible| match e {})
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !self.up.load(Ordering::Acquire) {
            return Box::pin(async { Err("connection refused: the hub is unreachable".into()) });
        }
        let hold =
            self.hold_pushes.load(Ordering::Acquire) && req.uri().path().ends_with("/PushEntries");
        let (held, release) = (self.held.clone(), self.release.clone());
        let mut inner = self.inner.clone();
        Box::pin(async move {
            if hold {
                let released = release.notified();
                held.fetch_add(1, Ordering::AcqRel);
                released.await;
            }
            tower::Service::call(&mut inner, req)
                .await
                .map_err(|e| match e {})
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_gets_every_checkpoint_cosigned_and_keeps_both_signature_lines() {
    let f = Fixture::new();
    let ledger = f.ledger("a");
    certify(&ledger, "a", 20, "PO-1");
    let cp = checkpoint(&ledger);
    let up = uplink::spawn(
        &f.config(),
        ledger.clone(),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let s = up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    assert_eq!(s.state, LinkState::Online);
    assert_eq!(s.hub_mirror_size, 20);
    assert_eq!(s.witnessed("order/PO-1").certified, 20);

    // The kept note: the site's checkpoint with the witness's line.
    let kept = std::fs::read_to_string(ledger.dir().join("checkpoint.cosigned")).unwrap();
    assert!(kept.starts_with(&cp.note) && kept.len() > cp.note.len());
    custody_ledger::checkpoint::open(&kept, f.signer.public_key_der(), Some(ORIGIN)).unwrap();
    let w = f.cosigner().witness_key();
    assert_eq!(w.verify(&kept).unwrap(), s.cosigned.as_ref().unwrap().time);
    // Independently of our code: the C2SP verifier written in Python.
    let case = serde_json::json!({
        "note": kept,
        "site_spki_hex": hex::encode(f.signer.public_key_der()),
        "witness_name": WITNESS,
        "witness_key_hex": hex::encode(w.public_key()),
        "entries_hex": ledger.entries(0, cp.size, usize::MAX).unwrap()
            .iter().map(|e| hex::encode(&e.entry)).collect::<Vec<_>>(),
    });
    let case_path = f.dir.path().join("case.json");
    std::fs::write(&case_path, case.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../hub/tests/verify_cosigned.py"
        ))
        .arg(&case_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python verifier: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // More entries, another checkpoint: cosigned with a consistency proof
    // from the last cosigned size; the history keeps both.
    certify(&ledger, "b", 9, "PO-1");
    certify(&ledger, "c", 2, "PO-2");
    let cp2 = checkpoint(&ledger);
    let s = up.wait_for(|s| s.cosigned_size() >= cp2.size).await;
    assert_eq!(s.witnessed("order/PO-1").certified, 29);
    assert_eq!(s.witnessed("order/PO-2").certified, 2);
    let history = uplink::store::history(ledger.dir()).unwrap();
    assert_eq!(
        history.iter().map(|(size, _)| *size).collect::<Vec<_>>(),
        vec![cp.size, cp2.size]
    );
    assert_eq!(f.hub.status(SITE).unwrap().cosigned_size(), cp2.size);

    // `ledger verify` takes the cosigned note as a kept checkpoint.
    up.stop().await;
    ledger.close();
    let storage = custody_ledger::storage::FileStorage::open(&f.dir.path().join("a")).unwrap();
    let kept = std::fs::read_to_string(f.dir.path().join("a/checkpoint.cosigned")).unwrap();
    let opts = custody_ledger::verify::Options {
        anchors: vec![kept],
        ..Default::default()
    };
    let r = custody_ledger::verify::verify_dir(&storage, &opts, &mut |_| {})
        .unwrap()
        .report;
    assert!(r.is_ok(), "{:?}", r.problem);
    // `checkpoint.latest` and the cosigned note.
    assert_eq!(r.anchors, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hub_is_retried_and_the_backlog_syncs_when_it_returns() {
    let f = Fixture::new();
    let ledger = f.ledger("a");
    let wire = Wire::new(f.channel());
    wire.up.store(false, Ordering::Release);
    let up = uplink::spawn(
        &f.config(),
        ledger.clone(),
        wire.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let s = up.wait_for(|s| s.state == LinkState::Backoff).await;
    assert!(s.last_error.unwrap().contains("unreachable"));
    certify(&ledger, "offline", 30, "PO-1");
    let cp = checkpoint(&ledger);
    assert_eq!(up.status().cosigned_size(), 0);
    assert_eq!(f.hub.status(SITE).unwrap().mirror_size, 0);

    wire.up.store(true, Ordering::Release);
    let s = up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    assert_eq!(s.state, LinkState::Online);
    assert_eq!(s.witnessed("order/PO-1").certified, 30);
    let held = f.hub.status(SITE).unwrap();
    assert_eq!((held.mirror_size, held.cosigned_size()), (30, cp.size));
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_site_reloads_its_cosignature_and_takes_over_one_it_missed() {
    let f = Fixture::new();
    let ledger = f.ledger("a");
    certify(&ledger, "a", 5, "PO-1");
    let cp = checkpoint(&ledger);
    let up = uplink::spawn(
        &f.config(),
        ledger.clone(),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    up.stop().await;

    // The hub cosigns a later checkpoint the site never kept (it stopped
    // before the answer came back).
    certify(&ledger, "b", 3, "PO-1");
    let cp2 = checkpoint(&ledger);
    let entries: Vec<Vec<u8>> = ledger
        .entries(5, 8, 8)
        .unwrap()
        .into_iter()
        .map(|e| e.entry)
        .collect();
    f.hub.push_entries(SITE, 5, entries).unwrap();
    let proof: Vec<Vec<u8>> = ledger
        .consistency_proof(cp.size, cp2.size)
        .unwrap()
        .path
        .iter()
        .map(|h| h.to_vec())
        .collect();
    f.hub.add_checkpoint(cp.size, &proof, &cp2.note).unwrap();

    // On start the kept one counts at once; the hub's newer one is taken
    // over after it verifies.
    let wire = Wire::new(f.channel());
    wire.up.store(false, Ordering::Release);
    let up = uplink::spawn(
        &f.config(),
        ledger.clone(),
        wire.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(up.status().cosigned_size(), cp.size);
    assert_eq!(up.status().witnessed("order/PO-1").certified, 5);
    wire.up.store(true, Ordering::Release);
    let s = up.wait_for(|s| s.cosigned_size() >= cp2.size).await;
    assert_eq!(s.witnessed("order/PO-1").certified, 8);
    assert_eq!(s.cosignatures, 0, "taken over, not cosigned again");
    up.stop().await;
}

/// Copies a closed ledger directory's files (not its index).
fn copy_ledger(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_a_rewritten_history_and_the_uplink_stops_and_says_so() {
    let f = Fixture::new();
    // The genuine site, cosigned at 10.
    let genuine = f.ledger("genuine");
    certify(&genuine, "g", 10, "PO-1");
    let cp = checkpoint(&genuine);
    let up = uplink::spawn(
        &f.config(),
        genuine.clone(),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    up.stop().await;
    genuine.close();

    // A site host that rewrote its history from entry 10 on, under the
    // site's own key (what a compromised host holds).
    copy_ledger(&f.dir.path().join("genuine"), &f.dir.path().join("forged"));
    let forged = f.ledger("forged");
    certify(&forged, "forged", 5, "PO-1");
    checkpoint(&forged);
    let genuine = f.ledger("genuine");
    certify(&genuine, "g2", 6, "PO-1");
    let cp2 = checkpoint(&genuine);

    // The forged uplink learns the hub's state (which its ledger agrees
    // with up to 10) and is held at its first push while the genuine site
    // syncs 10..16; then its push of a different 10..15 reaches the hub.
    let wire = Wire::new(f.channel());
    wire.hold_pushes.store(true, Ordering::Release);
    let forged_up = uplink::spawn(
        &f.config(),
        forged.clone(),
        wire.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    while wire.held.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }
    let up = uplink::spawn(
        &f.config(),
        genuine.clone(),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    up.wait_for(|s| s.cosigned_size() >= cp2.size).await;
    wire.hold_pushes.store(false, Ordering::Release);
    wire.release.notify_waiters();

    let s = forged_up.wait_for(|s| s.state == LinkState::Forked).await;
    let fork = s.fork.clone().unwrap();
    assert!(fork.reason.contains("AlreadyExists"), "{}", fork.reason);
    assert!(
        fork.reason.contains("rewrote its history"),
        "{}",
        fork.reason
    );
    assert_eq!(fork.hub.unwrap().mirror_size, cp2.size);
    assert_eq!(
        transport::Metrics::global().uplink.forked.get(),
        1,
        "visible in the metrics"
    );
    // Visible on the site's status service.
    let mut routes = tonic::service::Routes::default();
    routes = routes.add_service(forged_up.service().server(&Limits::default()));
    let mut client = v1::uplink_client::UplinkClient::new(InProcessChannel::new(
        routes,
        &f.guard,
        Caller::new(Role::Operator, "hq", "ops").unwrap(),
    ));
    let st = client
        .get_uplink_status(v1::GetUplinkStatusRequest {
            quota_counters: vec!["order/PO-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, v1::UplinkState::Forked as i32);
    assert!(st.fork_reason.contains("rewrote"));
    assert_eq!(
        st.cosigned_size, cp.size,
        "the allowance still counts from 10"
    );
    assert_eq!(st.cosigned_quota_uses["order/PO-1"], 10);
    // It stopped for good: the hub recorded the fork once, never again.
    forged_up.stop().await;
    let forks = f.hub.forks(Some(SITE)).unwrap();
    assert_eq!(forks.len(), 1);
    assert_eq!(forks[0].repeats, 0);
    assert_eq!(forks[0].position, 10);
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_ledger_disagrees_with_the_hub_stops_without_pushing() {
    let f = Fixture::new();
    let genuine = f.ledger("genuine");
    certify(&genuine, "g", 4, "PO-1");
    let cp = checkpoint(&genuine);
    let up = uplink::spawn(
        &f.config(),
        genuine.clone(),
        f.channel(),
        std::future::pending(),
    )
    .await
    .unwrap();
    up.wait_for(|s| s.cosigned_size() >= cp.size).await;
    up.stop().await;

    // Another history under the same key (a restored or rebuilt ledger):
    // the hub holds 4 entries this one does not have.
    let other = f.ledger("other");
    certify(&other, "x", 6, "PO-1");
    checkpoint(&other);
    let wire = Wire::new(f.channel());
    let up = uplink::spawn(
        &f.config(),
        other.clone(),
        wire.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let s = up.wait_for(|s| s.state == LinkState::Forked).await;
    assert!(
        s.fork.unwrap().reason.contains("histories differ"),
        "{:?}",
        s.last_error
    );
    up.stop().await;
    assert_eq!(f.hub.status(SITE).unwrap().mirror_size, 4);
    assert!(f.hub.forks(None).unwrap().is_empty(), "nothing was pushed");

    // And the kept cosignature of the genuine ledger, put beside the other
    // one, stops it at start.
    copy_kept(&f.dir.path().join("genuine"), &f.dir.path().join("other"));
    let up = uplink::spawn(&f.config(), other.clone(), wire, std::future::pending())
        .await
        .unwrap();
    assert_eq!(up.status().state, LinkState::Forked);
    up.stop().await;
}

fn copy_kept(from: &Path, to: &Path) {
    for name in ["uplink-state.json", "checkpoint.cosigned"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}
