//! The engine seam: the narrow interface a ledger storage engine offers,
//! so that the gRPC service ([`crate::service::LedgerService`]) and
//! in-process callers work the same over any engine.
//!
//! Key design decision: the seam is drawn at the ledger's *semantics*, not
//! at its storage. An engine sequences appends, enforces their unique keys
//! and quota atomically with the entry, acknowledges only durable entries
//! (invariants 1, 2 and 4), keeps the RFC 6962 tree, signs consistent
//! checkpoints (invariant 5) and proves inclusion and consistency. How it
//! does so is its own business: the file engine ([`crate::Ledger`]:
//! segment files as the truth, a rebuildable index, one group-commit
//! writer) is the default; a server database (issue 14: PostgreSQL, one
//! transaction per batch, constraints as table constraints) is the next.
//!
//! What stays outside every engine, and so works on any of them: the
//! entry format and its per-entry checks ([`crate::entry`]), the Merkle
//! math ([`crate::merkle`]), checkpoints ([`crate::checkpoint`]), and the
//! offline verifier and export ([`crate::verify`], [`crate::export`]),
//! which read stored entry bytes and signed checkpoints only. An engine
//! must store each entry as its exact bytes, so that an export taken from
//! any engine verifies byte for byte.
//!
//! Every method is async (a database engine answers over the network); the
//! file engine runs its blocking reads on tokio's blocking pool, except the
//! unique-key lookup that every claim and certification makes: the
//! overlay in memory, else one descent of the index's key table, mostly in
//! its cache. It runs in place, because handing it to the pool cost more
//! CPU than the read (issue 16: in `bench line`'s profile the hand-offs
//! took 5.7 % of the server's CPU, the reads they carried 1.9 %).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::checkpoint::{LedgerKey, SignedCheckpoint};
use crate::entry::{Appended, Constraints, Draft, StoredEntry, UniqueKey};
use crate::error::{Error, Result};
use crate::ledger::{DeviceHistory, Ledger};
use crate::merkle::{ConsistencyProof, Hash, InclusionProof};

/// A boxed future of an engine call.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// One append: the draft and the constraints that take effect with it or
/// not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The entry's caller-chosen fields.
    pub draft: Draft,
    /// Its unique keys and quota.
    pub constraints: Constraints,
}

/// A ledger storage engine (see the module doc for the contract).
pub trait LedgerEngine: Send + Sync + fmt::Debug {
    /// The checkpoint identity: origin and public key.
    fn ledger_key(&self) -> &LedgerKey;

    /// Number of durable entries (the next entry's `seq`).
    fn size(&self) -> u64;

    /// Appends each of `appends` atomically with its constraints, checked
    /// against every earlier entry and the earlier appends of the batch,
    /// in order; answers once each outcome is durable. One result per
    /// append, in order: a refusal ([`Error::Conflict`],
    /// [`Error::QuotaExhausted`], [`Error::InvalidArgument`]) leaves
    /// nothing of that append and does not affect the others.
    fn append_batch(&self, appends: Vec<Append>) -> EngineFuture<'_, Vec<Result<Appended>>>;

    /// The exact stored bytes of entry `seq` ([`Error::NotFound`] past the
    /// end).
    fn entry(&self, seq: u64) -> EngineFuture<'_, Vec<u8>>;

    /// Entries `[start, end)`, at most `limit`, `end` clamped to the size.
    fn entries(&self, start: u64, end: u64, limit: usize) -> EngineFuture<'_, Vec<StoredEntry>>;

    /// The entry holding `key`, if any.
    fn lookup_key(&self, key: UniqueKey) -> EngineFuture<'_, Option<u64>>;

    /// How many durable entries count against `counter`.
    fn quota(&self, counter: String) -> EngineFuture<'_, u64>;

    /// The latest signed checkpoint, if any.
    fn latest_checkpoint(&self) -> Option<SignedCheckpoint>;

    /// Signs and publishes a checkpoint of every durable entry, consistent
    /// with every earlier one (or returns the latest when nothing is new).
    fn publish_checkpoint(&self) -> EngineFuture<'_, SignedCheckpoint>;

    /// The inclusion proof of `seq` in the tree of `tree_size` entries (0:
    /// the latest checkpoint's size).
    fn inclusion_proof(&self, seq: u64, tree_size: u64) -> EngineFuture<'_, InclusionProof>;

    /// The consistency proof from `from_size` to `to_size` (0: the latest
    /// checkpoint's size).
    fn consistency_proof(&self, from_size: u64, to_size: u64)
        -> EngineFuture<'_, ConsistencyProof>;

    /// A device's entries, each proven against one checkpoint (2.4.14.12).
    fn device_history(&self, rot_id: String) -> EngineFuture<'_, DeviceHistory>;

    /// The RFC 6962 root of the first `tree_size` entries (the empty root
    /// for 0; [`Error::OutOfRange`] past the size): what the hub uplink
    /// compares with the roots the hub says it holds.
    fn root(&self, tree_size: u64) -> EngineFuture<'_, Hash>;

    /// Waits until a published checkpoint covers at least `size` entries
    /// ([`Error::Closed`] when the ledger closes first).
    fn wait_for_checkpoint(&self, size: u64) -> EngineFuture<'_, SignedCheckpoint>;
}

impl dyn LedgerEngine {
    /// Appends one entry ([`LedgerEngine::append_batch`] of one).
    ///
    /// # Errors
    /// As [`LedgerEngine::append_batch`]'s per-append results.
    pub async fn append(&self, draft: Draft, constraints: Constraints) -> Result<Appended> {
        self.append_batch(vec![Append { draft, constraints }])
            .await?
            .pop()
            .ok_or(Error::Closed)?
    }
}

/// Runs blocking file-engine work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Closed)?
}

/// The file engine: the default.
impl LedgerEngine for Ledger {
    fn ledger_key(&self) -> &LedgerKey {
        Ledger::ledger_key(self)
    }

    fn size(&self) -> u64 {
        Ledger::size(self)
    }

    fn append_batch(&self, appends: Vec<Append>) -> EngineFuture<'_, Vec<Result<Appended>>> {
        Box::pin(async move {
            // Queued together, they reach the writer's same group commit
            // (up to its batch limits) and are answered in order.
            let queued: Vec<_> = appends
                .into_iter()
                .map(|a| self.submit(a.draft, a.constraints.unique_keys, a.constraints.quota))
                .collect();
            let mut out = Vec::with_capacity(queued.len());
            for q in queued {
                out.push(match q {
                    Ok(rx) => rx.await.map_err(|_| Error::Closed).and_then(|r| r),
                    Err(e) => Err(e),
                });
            }
            Ok(out)
        })
    }

    fn entry(&self, seq: u64) -> EngineFuture<'_, Vec<u8>> {
        let l = self.clone();
        Box::pin(blocking(move || l.get_entry(seq)))
    }

    fn entries(&self, start: u64, end: u64, limit: usize) -> EngineFuture<'_, Vec<StoredEntry>> {
        let l = self.clone();
        Box::pin(blocking(move || l.entries(start, end, limit)))
    }

    fn lookup_key(&self, key: UniqueKey) -> EngineFuture<'_, Option<u64>> {
        // In place (see the module doc).
        Box::pin(async move { Ledger::lookup_key(self, &key) })
    }

    fn quota(&self, counter: String) -> EngineFuture<'_, u64> {
        Box::pin(async move { Ledger::quota(self, &counter) })
    }

    fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        Ledger::latest_checkpoint(self)
    }

    fn publish_checkpoint(&self) -> EngineFuture<'_, SignedCheckpoint> {
        Box::pin(Ledger::publish_checkpoint(self))
    }

    fn inclusion_proof(&self, seq: u64, tree_size: u64) -> EngineFuture<'_, InclusionProof> {
        let l = self.clone();
        Box::pin(blocking(move || l.inclusion_proof(seq, tree_size)))
    }

    fn consistency_proof(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> EngineFuture<'_, ConsistencyProof> {
        let l = self.clone();
        Box::pin(blocking(move || l.consistency_proof(from_size, to_size)))
    }

    fn device_history(&self, rot_id: String) -> EngineFuture<'_, DeviceHistory> {
        Box::pin(async move { Ledger::device_history(self, &rot_id).await })
    }

    fn root(&self, tree_size: u64) -> EngineFuture<'_, Hash> {
        if tree_size == 0 {
            return Box::pin(async { Ok(crate::merkle::empty_root()) });
        }
        let l = self.clone();
        Box::pin(blocking(move || l.root(tree_size)))
    }

    fn wait_for_checkpoint(&self, size: u64) -> EngineFuture<'_, SignedCheckpoint> {
        Box::pin(Ledger::wait_for_checkpoint(self, size))
    }
}
