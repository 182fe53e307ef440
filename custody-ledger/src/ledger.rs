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
//!   in-memory overlay into the redb index in atomic chunks, behind the
//!   writer, and makes the index durable every few seconds.
//!   Acknowledgement never waits for the index.
//! - the **publisher** (`publisher.rs`) signs checkpoints on a short
//!   cadence and on demand, after checking consistency with the last one.
//!
//! Readers see exactly the durable entries: the overlay (durable, not yet
//! indexed) first, then the index.
//!
//! Memory does not grow with the ledger (issue 16, item 4): the overlay is
//! bounded by bytes ([`LedgerConfig::overlay_bytes`]), the index by its
//! cache ([`LedgerConfig::index_cache_bytes`]); the writer keeps the
//! Merkle frontier (O(log n)); everything else is read from the index.
//!
//! Where things are: `config.rs` (how a ledger is opened), `shared.rs` (the
//! state and messages the threads share), `read.rs` (entries, lookups,
//! proofs, device histories), `recovery/` (what open does), `overlay.rs`,
//! and one file per thread. This file holds the handle: open, append,
//! checkpoints, close.

mod config;
mod indexer;
mod overlay;
mod publisher;
mod read;
mod recovery;
mod shared;
mod writer;

pub use config::{
    LedgerConfig, DEFAULT_ORIGIN, INDEX_DIR, LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE,
};
pub(crate) use shared::{LiveNodes, PublisherMsg, Shared, Threads, WriterMsg};

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};

use tokio::sync::{oneshot, watch};
use trustline_proto::signer::Signer;

use crate::checkpoint::{LedgerKey, SignedCheckpoint};
use crate::entry::{Appended, Constraints, Draft, QuotaUse, StoredEntry, UniqueKey, MAX_ENTRY_LEN};
use crate::error::{Error, Result};
use crate::merkle::InclusionProof;
use crate::storage::{FileStorage, Storage};

use overlay::Overlay;

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

    /// Entries the index holds (the rest are in the overlay).
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

    /// Closes the ledger: publishes a last checkpoint if entries are
    /// uncovered, stops the threads, and brings the index up to date. Other
    /// handles fail with [`Error::Closed`] afterwards.
    pub fn close(self) {
        self.threads.shutdown();
    }
}
