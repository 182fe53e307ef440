//! What the handle and the writer, indexer and publisher threads share:
//! the messages they exchange, the shared state with its latched failure,
//! the node reader over overlay and index, and the thread joiner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};
use trustline_proto::signer::Signer;

use super::overlay::Overlay;
use super::LedgerConfig;
use crate::checkpoint::{LedgerKey, SignedCheckpoint};
use crate::entry::{Appended, Constraints, Draft};
use crate::error::{Error, Result};
use crate::index::{Index, Location, Snapshot};
use crate::merkle::{Hash, NodeReader};
use crate::storage::Storage;

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
    /// Entries in the index (the indexer's watermark): readers of older
    /// data go straight to the index without taking the overlay lock.
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
        super::recovery::read_entry_at(self.storage.as_ref(), seq, self.location(seq)?)
    }
}

/// Reads subtree hashes for one proof or root: from one index snapshot
/// for what was indexed when it was made, else from the overlay, else
/// from the index as it is now (indexed since).
pub(crate) struct LiveNodes<'a> {
    shared: &'a Shared,
    indexed: u64,
    snapshot: Snapshot,
}

impl<'a> LiveNodes<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Result<Self> {
        // The watermark first: the snapshot then holds everything below it.
        let indexed = shared.indexed.load(Ordering::Acquire);
        Ok(Self {
            shared,
            indexed,
            snapshot: shared.index.snapshot()?,
        })
    }
}

impl NodeReader for LiveNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        let end = (index + 1) << level;
        if end <= self.indexed {
            return NodeReader::node(&self.snapshot, level, index);
        }
        if let Some(h) = self.shared.overlay().node(level, index) {
            return Ok(h);
        }
        NodeReader::node(&self.shared.index, level, index)
    }
}

/// Joins the threads when the last handle goes.
pub(crate) struct Threads {
    pub(crate) shared: Arc<Shared>,
    pub(crate) handles: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Threads {
    pub(crate) fn shutdown(&self) {
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
