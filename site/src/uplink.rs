//! The site's uplink to the OEM hub (issue 13 items 1 and 2; 2.4.14.6,
//! 2.4.14.20, 2.4.14.22): it pushes every entry of the site's custody
//! ledger to the hub's `Witness` service and asks the hub to cosign each
//! new checkpoint, and keeps every cosignature next to its checkpoint.
//!
//! Key design decision: the uplink is the site's only outbound link and
//! believes nothing it is told. It opens every connection (factories
//! allow outbound calls only), over mTLS with the site's `Role::Site`
//! client certificate issued by the hub's service CA. It checks each
//! answer against its own ledger — the hub's mirrored and cosigned roots
//! must be this ledger's roots at those sizes, each cosigned note must
//! carry the site's signature and a `cosignature/v1` by the configured
//! witness key — and counts the offline allowance only from cosignatures
//! it verified itself.
//!
//! # The loop ([`run`](self))
//!
//! 1. `GetSiteState`: what the hub mirrors and the last checkpoint it
//!    cosigned (C2SP tlog-witness: the size to prove consistency from).
//!    A hub that mirrors more entries than this ledger holds, or other
//!    roots, holds another history: a fork. A cosignature the hub made that
//!    the site has not kept (the site stopped before it could) is taken
//!    over, after it verifies.
//! 2. `PushEntries` from the hub's mirror size, at most `push_batch`
//!    entries (exact stored bytes) at a time, while the hub lacks any.
//! 3. `AddCheckpoint(old size = the hub's cosigned size, consistency proof
//!    from it, a checkpoint)` for the newest checkpoint the ledger
//!    published that the mirror covers — also on the way through a
//!    backlog, so the allowance's base keeps moving; the
//!    answer's cosigned note is verified and kept ([`store`]) before the
//!    uplink moves on.
//! 4. Idle: wait for the ledger's next checkpoint (pushing new entries
//!    ahead of it every 100 ms).
//!
//! An `ABORTED` answer (the hub's state moved: another old size, a push
//! gap) resynchronises from step 1. An unreachable hub, a timeout, or a
//! refusal that may pass (the hub does not know this site yet, its storage
//! failed) backs off exponentially from `retry_min_ms` to `retry_max_ms`
//! and resynchronises; meanwhile the factory certifies on the offline
//! allowance ([`provisioner::allowance`]). A fork answer — `ALREADY_EXISTS`
//! (a rewritten entry, a conflicting checkpoint) or a refusal whose reason
//! starts with `fork` — or a fork the uplink finds itself stops it for
//! good: logged at error level, `trustline_uplink_forked` set to 1, state
//! [`LinkState::Forked`] with the hub's words and state in
//! [`UplinkStatus::fork`] and on `Uplink/GetUplinkStatus`. It is never
//! retried: a rewritten history must not be offered forever.
//!
//! # Where cosignatures live
//!
//! In the ledger directory, beside `checkpoint.latest` ([`store`]):
//! `checkpoint.cosigned` (the latest cosigned note, both signature lines,
//! replaced atomically), `cosigned-checkpoints.jsonl` (every cosigned note,
//! append-only) and `uplink-state.json`. The site serves the cosigned note
//! on `trustline.v1.Uplink/GetUplinkStatus` (the ledger's own
//! `CustodyLedger/GetCheckpoint` keeps answering the latest checkpoint the
//! site signed, which is newer). `trustline ledger verify --checkpoint
//! <data>/ledger/checkpoint.cosigned` accepts the cosigned note: signature
//! lines by other keys are ignored, as c2sp.org/signed-note requires.
//!
//! # What the factory reads
//!
//! Per ledger quota counter (`order/<id>`), the uses within the latest
//! cosigned checkpoint ([`Cosigned::quota_uses`]), counted by the uplink
//! from the entries as each cosignature is kept. The factory's limit is
//! `min(quantity, uses + offline allowance)` ([`provisioner::allowance`]).
//! [`Handle::allowance`] reads it in this process; [`RemoteAllowance`]
//! over the `Uplink` service of the process that runs the ledger.

mod config;
mod run;
mod status;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use custody_ledger::{Ledger, LedgerEngine};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codegen::{Body, Bytes, StdError};
use trustline_proto::v1::witness_client::WitnessClient;

pub use config::UplinkConfig;
pub use status::{
    ForkReport, HubView, LinkState, LocalAllowance, RemoteAllowance, UplinkService, UplinkStatus,
};
pub use store::Cosigned;

use crate::error::{Error, Result};

/// Most bytes one hub answer may carry (a `SiteState` with a note).
const MAX_DECODE_BYTES: usize = 1 << 20;
/// Most bytes one push may carry (the hub decodes up to 16 MiB).
const MAX_ENCODE_BYTES: usize = 16 << 20;

/// The ledger an uplink pushes — on any engine (issue 14: the files or
/// PostgreSQL) — and the directory where its cosignatures are kept.
#[derive(Debug, Clone)]
pub struct UplinkLedger {
    engine: Arc<dyn LedgerEngine>,
    dir: std::path::PathBuf,
}

impl UplinkLedger {
    /// `engine`'s uplink, keeping its cosignatures ([`store`]) in `dir`
    /// (created when missing).
    pub fn new(engine: Arc<dyn LedgerEngine>, dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            engine,
            dir: dir.into(),
        }
    }

    /// Where the cosignatures are kept.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// A file ledger keeps its cosignatures in its own directory.
impl From<Ledger> for UplinkLedger {
    fn from(ledger: Ledger) -> Self {
        let dir = ledger.dir().to_path_buf();
        Self::new(Arc::new(ledger), dir)
    }
}

/// A running uplink.
#[derive(Debug)]
pub struct Handle {
    status: watch::Receiver<UplinkStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    ledger: Arc<dyn LedgerEngine>,
}

/// Starts the uplink of `ledger` to the hub on `hub` (a channel from
/// [`UplinkConfig::connect`], or any gRPC channel, e.g. an in-process
/// one); it runs until `shutdown` completes or [`Handle::stop`].
///
/// The cosignature kept before the last stop is reloaded first and counts
/// for the offline allowance at once, after it verifies (both signatures,
/// and its root is this ledger's).
///
/// # Errors
/// [`Error::Config`] for bad settings; [`Error::Io`] when the kept state
/// cannot be read. A kept cosignature whose root is not this ledger's
/// starts the uplink in [`LinkState::Forked`].
pub async fn spawn<T>(
    config: &UplinkConfig,
    ledger: impl Into<UplinkLedger>,
    hub: T,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Handle>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    let settings = config.settings()?;
    let UplinkLedger {
        engine: ledger,
        dir,
    } = ledger.into();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let store = store::CosignedStore::new(&dir);
    let kept = store.load()?;
    let mut status = UplinkStatus {
        state: LinkState::Starting,
        hub: settings.hub.clone(),
        site: settings.site.clone(),
        hub_mirror_size: 0,
        cosigned: None,
        last_contact_ms: 0,
        last_error: None,
        fork: None,
        cosignatures: 0,
    };
    if let Some(c) = kept {
        match check_kept(&*ledger, &settings.witness, &c).await {
            Ok(()) => status.cosigned = Some(Arc::new(c)),
            Err(KeptProblem::Unverified(why)) => {
                tracing::warn!(
                    "the kept cosigned checkpoint is not used ({why}); the hub's state replaces it"
                );
            }
            Err(KeptProblem::Fork(reason)) => {
                tracing::error!(%reason, "UPLINK STOPPED: the kept cosigned checkpoint is not this ledger's");
                status.state = LinkState::Forked;
                status.last_error = Some(reason.clone());
                status.fork = Some(ForkReport { reason, hub: None });
            }
        }
    }
    let metrics = transport::Metrics::global().uplink.clone();
    if status.state == LinkState::Forked {
        metrics.forked.set(1);
    }
    if let Some(c) = &status.cosigned {
        metrics
            .cosigned_size
            .set(i64::try_from(c.size).unwrap_or(i64::MAX));
    }
    let forked = status.state == LinkState::Forked;
    let (status_tx, status_rx) = watch::channel(status);
    let (stop_tx, stop_rx) = watch::channel(false);
    let link = run::Link {
        settings,
        ledger: ledger.clone(),
        client: WitnessClient::new(hub)
            .max_decoding_message_size(MAX_DECODE_BYTES)
            .max_encoding_message_size(MAX_ENCODE_BYTES),
        store,
        status: status_tx,
        stop: stop_rx,
        metrics,
        hub: None,
        seen: std::collections::VecDeque::new(),
    };
    let task = tokio::spawn(async move {
        if !forked {
            link.run().await;
        }
    });
    let stopper = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopper.send(true);
    });
    Ok(Handle {
        status: status_rx,
        stop: stop_tx,
        task,
        ledger,
    })
}

enum KeptProblem {
    /// It does not verify (another witness key configured since?): not
    /// used.
    Unverified(String),
    /// It verifies but this ledger has another root at its size.
    Fork(String),
}

async fn check_kept(
    ledger: &dyn LedgerEngine,
    witness: &trustline_proto::cosignature::WitnessKey,
    c: &Cosigned,
) -> std::result::Result<(), KeptProblem> {
    let key = ledger.ledger_key();
    let cp = custody_ledger::checkpoint::open(&c.note, key.spki(), Some(key.origin()))
        .map_err(|e| KeptProblem::Unverified(e.to_string()))?;
    let time = witness
        .verify(&c.note)
        .map_err(|e| KeptProblem::Unverified(e.to_string()))?;
    if cp.size != c.size || cp.root != c.root || time != c.time {
        return Err(KeptProblem::Unverified(
            "its fields do not match its note".into(),
        ));
    }
    let size = ledger.size();
    if c.size > size {
        return Err(KeptProblem::Fork(format!(
            "the hub cosigned {} entries of this ledger, which now holds {size}: entries were lost",
            c.size
        )));
    }
    let root = ledger
        .root(c.size)
        .await
        .map_err(|e| KeptProblem::Unverified(format!("reading the ledger: {e}")))?;
    if root != c.root {
        return Err(KeptProblem::Fork(format!(
            "the hub cosigned a root for size {} that is not this ledger's: its history was rewritten",
            c.size
        )));
    }
    Ok(())
}

impl Handle {
    /// The status now.
    pub fn status(&self) -> UplinkStatus {
        self.status.borrow().clone()
    }

    /// The status as it changes.
    pub fn subscribe(&self) -> watch::Receiver<UplinkStatus> {
        self.status.clone()
    }

    /// Waits until `f` holds for the status (or the uplink is gone) and
    /// returns that status.
    pub async fn wait_for(&self, f: impl FnMut(&UplinkStatus) -> bool) -> UplinkStatus {
        let mut rx = self.status.clone();
        let seen = rx.wait_for(f).await.map(|s| s.clone());
        seen.unwrap_or_else(|_| self.status())
    }

    /// What the factory counts its offline allowance from.
    pub fn allowance(&self) -> Arc<dyn provisioner::Allowance> {
        Arc::new(LocalAllowance::new(self.status.clone()))
    }

    /// The `trustline.v1.Uplink` service over this uplink.
    pub fn service(&self) -> UplinkService {
        UplinkService::new(self.status.clone(), self.ledger.clone())
    }

    /// Stops the uplink and waits for it (a call in flight is abandoned;
    /// everything kept is already durable).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the uplink of a data directory's `ledger` when `trustline.toml`
/// has an `[uplink]` section (what `serve site`, `serve all` and `serve
/// ledger` call); `None` when it has none. Stop it with [`Handle::stop`]
/// before the ledger closes.
///
/// # Errors
/// As [`UplinkConfig::connect`] and [`spawn`].
pub async fn start(
    data_dir: &std::path::Path,
    config: &crate::Config,
    ledger: UplinkLedger,
) -> Result<Option<Handle>> {
    let Some(uplink) = &config.uplink else {
        return Ok(None);
    };
    let channel = uplink.connect(data_dir)?;
    let handle = spawn(uplink, ledger, channel, std::future::pending()).await?;
    tracing::info!(hub = %uplink.hub, site = %uplink.site, "uplink to the hub started");
    Ok(Some(handle))
}

/// Reads the `[uplink]` section's kept cosigned note of a data directory's
/// ledger, unchecked (for tools; the uplink checks it before use).
///
/// # Errors
/// [`Error::Io`].
pub fn kept_note(ledger_dir: &std::path::Path) -> Result<Option<String>> {
    let path = ledger_dir.join(store::COSIGNED_NOTE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}
