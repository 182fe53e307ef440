//! The live ledger: open, append, read, prove, checkpoint, close.
//!
//! Three threads do the work behind [`Ledger`]:
//!
//! - the **writer** (`writer.rs`) owns the segment files. It takes every
//!   queued request, checks constraints, places entries, writes the batch,
//!   calls `fdatasync` once, and only then acknowledges each append
//!   (invariant 1, "recorded before released"). The first write or sync
//!   failure is latched: every later call fails with
//!   [`Error::Stopped`] until the ledger is reopened.
//! - the **indexer** (`indexer.rs`) moves durable entries from the
//!   in-memory overlay into sled in large atomic batches, behind the writer.
//!   Acknowledgement never waits for sled.
//! - the **publisher** (`publisher.rs`) signs checkpoints on a short
//!   cadence and on demand, after checking consistency with the last one.
//!
//! Readers see exactly the durable entries: the overlay (durable, not yet in
//! sled) first, then sled.

mod indexer;
mod overlay;
mod publisher;
mod recovery;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use trustline_proto::signer::Signer;

use crate::checkpoint::{LedgerKey, SignedCheckpoint};
use crate::entry::{Appended, Constraints, Draft, QuotaUse, StoredEntry, UniqueKey, MAX_ENTRY_LEN};
use crate::error::{Error, Result};
use crate::index::{Index, Location};
use crate::merkle::{self, ConsistencyProof, Hash, InclusionProof, NodeReader};
use crate::storage::{FileStorage, Storage};

use overlay::Overlay;

/// File holding the latest signed checkpoint note: an anchor that reveals a
/// cut-off tail even when the index is gone.
pub const LATEST_CHECKPOINT_FILE: &str = "checkpoint.latest";
/// File holding the checkpoint public key (PEM), for auditors.
pub const PUBLIC_KEY_FILE: &str = "ledger-key.pub.pem";
/// The index directory's name inside the ledger directory.
pub const INDEX_DIR: &str = "index";

/// How to open a ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The ledger directory (`<data>/ledger`): segments, the latest
    /// checkpoint, the public key, and the index below it.
    pub dir: PathBuf,
    /// Where the sled index lives; `None` means `<dir>/index`.
    pub index_dir: Option<PathBuf>,
    /// The checkpoint origin and signed-note key name.
    pub origin: String,
    /// How often a checkpoint is published while there are new entries.
    pub checkpoint_interval: Duration,
    /// A segment is closed once it reaches this size.
    pub segment_max_bytes: u64,
    /// Most requests taken into one group commit.
    pub max_batch: usize,
    /// Most bytes of durable entries held in memory ahead of the index
    /// (an estimate of what each holds: about 0.6 KB for a `Certified`-like
    /// entry with two unique keys); the writer waits for the indexer
    /// beyond this.
    ///
    /// Trade-off: the overlay is what lets a burst be acknowledged at the
    /// speed of `fdatasync` rather than of the index. The indexer leaves it
    /// alone until it is half full (or appends pause), so a burst of about
    /// half the limit runs at full speed; at the limit appends go at the
    /// index's sustained rate. Bounded by bytes, not entries, so large
    /// entries cannot blow it up, and kept small, so the ledger's memory
    /// stays flat whatever its size (issue 16, item 4). Measured with
    /// `trustline bench ledger` (its `--overlay-mib`).
    pub overlay_bytes: usize,
    /// Entries before the last checkpoint re-read and re-hashed on open.
    pub tail_check: u64,
    /// sled's cache size in bytes.
    pub index_cache_bytes: u64,
}

/// The default checkpoint origin.
pub const DEFAULT_ORIGIN: &str = "trustline.example/custody-ledger";

impl LedgerConfig {
    /// Defaults for a ledger in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            index_dir: None,
            origin: DEFAULT_ORIGIN.to_string(),
            checkpoint_interval: Duration::from_millis(500),
            segment_max_bytes: 64 << 20,
            max_batch: 2048,
            overlay_bytes: 64 << 20,
            tail_check: 4096,
            index_cache_bytes: 32 << 20,
        }
    }

    /// The index directory.
    pub fn index_path(&self) -> PathBuf {
        self.index_dir
            .clone()
            .unwrap_or_else(|| self.dir.join(INDEX_DIR))
    }
}

/// A device's entries, each with an inclusion proof against one checkpoint.
#[derive(Debug, Clone)]
pub struct DeviceHistory {
    /// The checkpoint every proof is computed against.
    pub checkpoint: SignedCheckpoint,
    /// The device's entries, oldest first.
    pub entries: Vec<ProvenEntry>,
}

/// An entry and its inclusion proof.
#[derive(Debug, Clone)]
pub struct ProvenEntry {
    /// The entry.
    pub entry: StoredEntry,
    /// Its inclusion proof.
    pub proof: InclusionProof,
}

/// Messages to the writer thread.
pub(crate) enum WriterMsg {
    Append {
        draft: Draft,
        constraints: Constraints,
        reply: oneshot::Sender<Result<Appended>>,
    },
    Checkpoint {
        checkpoint: SignedCheckpoint,
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown,
}

/// Messages to the publisher thread.
pub(crate) enum PublisherMsg {
    Publish(oneshot::Sender<Result<SignedCheckpoint>>),
    Shutdown,
}

/// State shared by the handle and the three threads.
pub(crate) struct Shared {
    pub(crate) config: LedgerConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) index: Index,
    pub(crate) key: LedgerKey,
    pub(crate) signer: Arc<dyn Signer>,
    pub(crate) overlay: Mutex<Overlay>,
    /// Signalled when the overlay gains entries (indexer) or loses them
    /// (a writer waiting for room).
    pub(crate) overlay_changed: Condvar,
    /// Durable entries per quota counter; changed only by the writer.
    pub(crate) quotas: Mutex<HashMap<String, u64>>,
    /// The latched failure.
    pub(crate) stopped: Mutex<Option<String>>,
    pub(crate) closed: AtomicBool,
    /// Appends submitted and not yet answered: the indexer waits for zero.
    pub(crate) pending: AtomicUsize,
    /// Entries in sled (the indexer's watermark): readers of older data
    /// go straight to sled without taking the overlay lock.
    pub(crate) indexed: AtomicU64,
    pub(crate) latest: RwLock<Option<SignedCheckpoint>>,
    pub(crate) checkpoint_size: watch::Sender<u64>,
    pub(crate) writer_tx: mpsc::Sender<WriterMsg>,
    pub(crate) publisher_tx: mpsc::Sender<PublisherMsg>,
}

impl Shared {
    pub(crate) fn overlay(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn quotas(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.quotas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Latches the first failure.
    pub(crate) fn stop(&self, reason: String) {
        let mut s = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            tracing::error!(%reason, "custody ledger stopped");
            *s = Some(reason);
        }
        drop(s);
        self.overlay_changed.notify_all();
    }

    /// `Err` once the ledger has stopped or closed.
    pub(crate) fn check_running(&self) -> Result<()> {
        if let Some(reason) = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(Error::Stopped(reason.clone()));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Durable entries.
    pub(crate) fn size(&self) -> u64 {
        self.overlay().durable_size()
    }

    pub(crate) fn latest(&self) -> Option<SignedCheckpoint> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn location(&self, seq: u64) -> Result<Location> {
        if let Some(loc) = self.overlay().location(seq) {
            return Ok(loc);
        }
        self.index
            .location(seq)?
            .ok_or_else(|| Error::Index(format!("entry {seq} is durable but not indexed")))
    }

    /// Reads entry `seq` (which must be durable) from its segment.
    pub(crate) fn read_entry(&self, seq: u64) -> Result<Vec<u8>> {
        recovery::read_entry_at(self.storage.as_ref(), seq, self.location(seq)?)
    }
}

/// Reads subtree hashes from the overlay, then sled.
pub(crate) struct LiveNodes<'a>(pub(crate) &'a Shared);

impl NodeReader for LiveNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        let end = (index + 1) << level;
        if end <= self.0.indexed.load(Ordering::Acquire) {
            return NodeReader::node(&self.0.index, level, index);
        }
        if let Some(h) = self.0.overlay().node(level, index) {
            return Ok(h);
        }
        NodeReader::node(&self.0.index, level, index)
    }
}

/// Joins the threads when the last handle goes.
struct Threads {
    shared: Arc<Shared>,
    handles: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Threads {
    fn shutdown(&self) {
        let handles: Vec<_> =
            std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        if handles.is_empty() {
            return;
        }
        // Publisher first (it may publish a last checkpoint through the
        // writer), then the writer, then the indexer drains the overlay.
        let _ = self.shared.publisher_tx.send(PublisherMsg::Shutdown);
        for (name, h) in handles {
            if name == "writer" {
                let _ = self.shared.writer_tx.send(WriterMsg::Shutdown);
            }
            if name == "indexer" {
                self.shared.overlay().stop_indexer();
                self.shared.overlay_changed.notify_all();
            }
            if h.join().is_err() {
                tracing::error!(thread = name, "custody ledger thread panicked");
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        if let Err(e) = self.shared.index.flush() {
            tracing::warn!(error = %e, "flushing the index on close");
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A handle on an open ledger. Cheap to clone; the ledger closes when the
/// last handle is dropped or [`Ledger::close`] is called.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
    threads: Arc<Threads>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.shared.config.dir)
            .field("size", &self.shared.size())
            .finish()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `config.dir` on real files, signing
    /// checkpoints with `signer`.
    ///
    /// On open the torn tail of the last segment is cut, the index is
    /// brought up to date (or rebuilt when missing or unreadable), and the
    /// tail is verified against the last checkpoint (see
    /// [`Ledger::open_with_storage`]).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] (the ledger refuses to serve; the
    /// message says what and where), [`Error::KeyMismatch`].
    pub fn open(config: LedgerConfig, signer: Arc<dyn Signer>) -> Result<Ledger> {
        let storage = FileStorage::open(&config.dir)
            .map_err(|e| Error::io(format!("creating {}", config.dir.display()), e))?;
        Self::open_with_storage(config, signer, Arc::new(storage))
    }

    /// Opens the ledger on any [`Storage`] (tests use
    /// [`crate::storage::SimStorage`]); the index still lives in
    /// `config.index_path()`.
    ///
    /// # Errors
    /// As [`Ledger::open`].
    pub fn open_with_storage(
        config: LedgerConfig,
        signer: Arc<dyn Signer>,
        storage: Arc<dyn Storage>,
    ) -> Result<Ledger> {
        let key = LedgerKey::new(&config.origin, signer.public_key_der())?;
        recovery::check_public_key(storage.as_ref(), &key)?;
        let rec = recovery::recover(&config, storage.as_ref(), &key)?;
        let (writer_tx, writer_rx) = mpsc::channel();
        let (publisher_tx, publisher_rx) = mpsc::channel();
        let latest_size = rec.latest.as_ref().map_or(0, |c| c.size);
        let (checkpoint_size, _) = watch::channel(latest_size);
        let shared = Arc::new(Shared {
            config: config.clone(),
            storage,
            index: rec.index.clone(),
            key,
            signer,
            overlay: Mutex::new(Overlay::new(rec.size)),
            overlay_changed: Condvar::new(),
            quotas: Mutex::new(rec.quotas.clone()),
            stopped: Mutex::new(None),
            closed: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            indexed: AtomicU64::new(rec.size),
            latest: RwLock::new(rec.latest.clone()),
            checkpoint_size,
            writer_tx,
            publisher_tx,
        });
        let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("ledger-{name}"))
                .spawn(f)
                .map(|h| (name, h))
                .map_err(|e| Error::io(format!("starting the {name} thread"), e))
        };
        let mut handles = Vec::new();
        let s = shared.clone();
        let state = rec.index_state.clone();
        handles.push(spawn(
            "publisher",
            Box::new(move || publisher::run(&s, publisher_rx)),
        )?);
        let s = shared.clone();
        let w = writer::Writer::new(s, &rec);
        handles.push(spawn("writer", Box::new(move || w.run(writer_rx)))?);
        let s = shared.clone();
        handles.push(spawn("indexer", Box::new(move || indexer::run(&s, state)))?);
        tracing::info!(
            dir = %config.dir.display(),
            entries = rec.size,
            checkpoint = latest_size,
            "custody ledger open"
        );
        Ok(Ledger {
            threads: Arc::new(Threads {
                shared: shared.clone(),
                handles: Mutex::new(handles),
            }),
            shared,
        })
    }

    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    /// The checkpoint identity: origin and public key.
    pub fn ledger_key(&self) -> &LedgerKey {
        &self.shared.key
    }

    /// Number of durable entries (the next entry's `seq`).
    pub fn size(&self) -> u64 {
        self.shared.size()
    }

    /// Entries the sled index holds (the rest are in the overlay).
    pub(crate) fn indexed(&self) -> u64 {
        self.shared.indexed.load(Ordering::Acquire)
    }

    /// Queues one append for the writer; the receiver answers once it is
    /// durable or refused.
    pub(crate) fn submit(
        &self,
        draft: Draft,
        unique_keys: Vec<UniqueKey>,
        quota: Option<QuotaUse>,
    ) -> Result<oneshot::Receiver<Result<Appended>>> {
        self.shared.check_running()?;
        draft.validate()?;
        if draft.payload.len() > MAX_ENTRY_LEN / 2 {
            return Err(Error::InvalidArgument(format!(
                "payload is larger than {} bytes",
                MAX_ENTRY_LEN / 2
            )));
        }
        let constraints = Constraints { unique_keys, quota };
        constraints.validate()?;
        let (reply, rx) = oneshot::channel();
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        let sent = self.shared.writer_tx.send(WriterMsg::Append {
            draft,
            constraints,
            reply,
        });
        if sent.is_err() {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        Ok(rx)
    }

    /// Appends one entry with its constraints, atomically, and returns once
    /// it is durable on disk (invariant 1). The unique keys and the quota
    /// are checked against the index and against the batch in flight, and
    /// take effect with the entry or not at all (invariants 2 and 4,
    /// 2.4.14.4, 2.4.14.22).
    ///
    /// # Errors
    /// [`Error::Conflict`] naming the key and its holder;
    /// [`Error::QuotaExhausted`]; [`Error::InvalidArgument`];
    /// [`Error::Stopped`] / [`Error::Closed`]. After any error nothing of
    /// this entry is stored — except that [`Error::Stopped`] means the
    /// outcome of appends in the failed batch is unknown (they were not
    /// acknowledged; after reopening each is either wholly there or absent).
    pub async fn append(
        &self,
        draft: Draft,
        unique_keys: Vec<UniqueKey>,
        quota: Option<QuotaUse>,
    ) -> Result<Appended> {
        let rx = self.submit(draft, unique_keys, quota)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// [`Ledger::append`] for threads outside an async runtime.
    ///
    /// # Errors
    /// As [`Ledger::append`].
    pub fn append_blocking(
        &self,
        draft: Draft,
        unique_keys: Vec<UniqueKey>,
        quota: Option<QuotaUse>,
    ) -> Result<Appended> {
        let rx = self.submit(draft, unique_keys, quota)?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// The exact stored bytes of entry `seq`.
    ///
    /// # Errors
    /// [`Error::NotFound`] past the end; [`Error::Corrupt`] when the stored
    /// record fails its checksum.
    pub fn get_entry(&self, seq: u64) -> Result<Vec<u8>> {
        self.shared.check_running()?;
        let size = self.size();
        if seq >= size {
            return Err(Error::NotFound(format!(
                "entry {seq} (the ledger has {size} entries)"
            )));
        }
        self.shared.read_entry(seq)
    }

    /// Entries `[start, end)`, at most `limit` of them; `end` is clamped to
    /// the durable size.
    ///
    /// # Errors
    /// As [`Ledger::get_entry`].
    pub fn entries(&self, start: u64, end: u64, limit: usize) -> Result<Vec<StoredEntry>> {
        self.shared.check_running()?;
        let end = end.min(self.size()).min(start.saturating_add(limit as u64));
        (start..end)
            .map(|seq| {
                Ok(StoredEntry {
                    seq,
                    entry: self.shared.read_entry(seq)?,
                })
            })
            .collect()
    }

    /// The entry holding `key`, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed key; [`Error::Index`].
    pub fn lookup_key(&self, key: &UniqueKey) -> Result<Option<u64>> {
        self.shared.check_running()?;
        key.validate()?;
        let enc = key.index_key();
        if let Some(seq) = self.shared.overlay().key_holder(&enc) {
            return Ok(Some(seq));
        }
        self.shared.index.key_holder(&enc)
    }

    /// How many durable entries count against `counter`.
    ///
    /// # Errors
    /// [`Error::Stopped`] / [`Error::Closed`].
    pub fn quota(&self, counter: &str) -> Result<u64> {
        self.shared.check_running()?;
        Ok(self.shared.quotas().get(counter).copied().unwrap_or(0))
    }

    /// The latest signed checkpoint, if one has been published.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.shared.latest()
    }

    /// Signs and publishes a checkpoint covering every durable entry (or
    /// returns the latest one if nothing is new). It is consistent with
    /// every earlier checkpoint (invariant 5): that is checked before
    /// signing.
    ///
    /// # Errors
    /// [`Error::Signer`], [`Error::Corrupt`] when the tree is inconsistent
    /// with the last checkpoint (nothing is signed), storage errors.
    pub async fn publish_checkpoint(&self) -> Result<SignedCheckpoint> {
        self.shared.check_running()?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .publisher_tx
            .send(PublisherMsg::Publish(tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// [`Ledger::publish_checkpoint`] for threads outside an async runtime.
    ///
    /// # Errors
    /// As [`Ledger::publish_checkpoint`].
    pub fn publish_checkpoint_blocking(&self) -> Result<SignedCheckpoint> {
        self.shared.check_running()?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .publisher_tx
            .send(PublisherMsg::Publish(tx))
            .map_err(|_| Error::Closed)?;
        rx.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Waits until a published checkpoint covers at least `size` entries.
    ///
    /// # Errors
    /// [`Error::Closed`] when the ledger closes first.
    pub async fn wait_for_checkpoint(&self, size: u64) -> Result<SignedCheckpoint> {
        let mut rx = self.shared.checkpoint_size.subscribe();
        rx.wait_for(|&s| s >= size)
            .await
            .map_err(|_| Error::Closed)?;
        self.latest_checkpoint().ok_or(Error::Closed)
    }

    fn resolve_size(&self, tree_size: u64) -> Result<u64> {
        if tree_size == 0 {
            return self
                .latest_checkpoint()
                .map(|c| c.size)
                .ok_or_else(|| Error::NotFound("no checkpoint has been published yet".into()));
        }
        let size = self.size();
        if tree_size > size {
            return Err(Error::OutOfRange(format!(
                "tree size {tree_size} is beyond the ledger's {size} entries"
            )));
        }
        Ok(tree_size)
    }

    /// The inclusion proof of entry `seq` in the tree of `tree_size`
    /// entries (0: the latest checkpoint's size).
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::NotFound`] (no checkpoint yet).
    pub fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<InclusionProof> {
        self.shared.check_running()?;
        let size = self.resolve_size(tree_size)?;
        merkle::inclusion_proof(&LiveNodes(&self.shared), seq, size)
    }

    /// The consistency proof from `from_size` to `to_size` (0: the latest
    /// checkpoint's size).
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::NotFound`] (no checkpoint yet).
    pub fn consistency_proof(&self, from_size: u64, to_size: u64) -> Result<ConsistencyProof> {
        self.shared.check_running()?;
        let to = self.resolve_size(to_size)?;
        merkle::consistency_proof(&LiveNodes(&self.shared), from_size, to)
    }

    /// The root hash of the tree of `tree_size` entries (0: the latest
    /// checkpoint's size).
    ///
    /// # Errors
    /// As [`Ledger::inclusion_proof`].
    pub fn root(&self, tree_size: u64) -> Result<Hash> {
        let size = self.resolve_size(tree_size)?;
        merkle::root(&LiveNodes(&self.shared), size)
    }

    /// Every entry of the device `rot_id` (2.4.14.12), each with an
    /// inclusion proof against one checkpoint. A checkpoint is published
    /// first when the latest one does not cover the device's last entry.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed `rot_id`, plus those of
    /// [`Ledger::publish_checkpoint`].
    pub async fn device_history(&self, rot_id: &str) -> Result<DeviceHistory> {
        self.shared.check_running()?;
        if !trustline_proto::identity::is_well_formed_rot_id(rot_id) {
            return Err(Error::InvalidArgument(
                "rot_id must be 64 lowercase hex characters".into(),
            ));
        }
        let seqs = self.device_seqs(rot_id)?;
        let covered = self.latest_checkpoint().map_or(0, |c| c.size);
        let needs = seqs.last().map_or(0, |&s| s + 1);
        let checkpoint = match self.latest_checkpoint() {
            Some(c) if covered >= needs => c,
            _ => self.publish_checkpoint().await?,
        };
        let this = self.clone();
        let rot = rot_id.to_string();
        tokio::task::spawn_blocking(move || this.prove_history(&rot, checkpoint))
            .await
            .map_err(|_| Error::Closed)?
    }

    fn device_seqs(&self, rot_id: &str) -> Result<Vec<u64>> {
        let mut seqs: BTreeMap<u64, ()> = BTreeMap::new();
        for (seq, _) in self.shared.index.device_entries(rot_id)? {
            seqs.insert(seq, ());
        }
        for seq in self.shared.overlay().device_seqs(rot_id) {
            seqs.insert(seq, ());
        }
        Ok(seqs.into_keys().collect())
    }

    fn prove_history(&self, rot_id: &str, checkpoint: SignedCheckpoint) -> Result<DeviceHistory> {
        let nodes = LiveNodes(&self.shared);
        let mut entries = Vec::new();
        for seq in self.device_seqs(rot_id)? {
            if seq >= checkpoint.size {
                break;
            }
            entries.push(ProvenEntry {
                entry: StoredEntry {
                    seq,
                    entry: self.shared.read_entry(seq)?,
                },
                proof: merkle::inclusion_proof(&nodes, seq, checkpoint.size)?,
            });
        }
        Ok(DeviceHistory {
            checkpoint,
            entries,
        })
    }

    /// Closes the ledger: publishes a last checkpoint if entries are
    /// uncovered, stops the threads, and brings the index up to date. Other
    /// handles fail with [`Error::Closed`] afterwards.
    pub fn close(self) {
        self.threads.shutdown();
    }
}
