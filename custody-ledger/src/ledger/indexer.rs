//! The indexer thread: moves durable entries from the overlay into the
//! index, in atomic chunks that also move the watermark, and makes the
//! index durable every few seconds.
//!
//! Indexing costs more CPU per entry than the durable append itself (each
//! entry is three random B-tree inserts: two unique keys and the device
//! list), and on a small machine the two compete for the same cores. So
//! the indexer stays out of the way of bursts: it runs when no append has
//! been waiting for a moment, when the overlay passes three quarters of its
//! byte limit, or when the ledger closes. A burst that fits in the overlay
//! is acknowledged at the speed of `fdatasync`; under sustained load the
//! writer waits at the limit, so memory stays bounded and the sustained
//! rate is the index's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::index::{IndexState, IndexedCheckpoint};
use crate::merkle::chain_head;

/// Most entries per index transaction.
const CHUNK: usize = 4096;
/// Entries dropped from the overlay per lock hold.
const POP_SLICE: usize = 256;
/// How often the index is made durable while it changes (an `fdatasync`
/// of the index file; also how long redb must keep the pages the chunks
/// since the last one freed).
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How long the writer must have been idle before indexing starts.
const IDLE: Duration = Duration::from_millis(20);

/// The thread body. `state` is the watermark at open.
pub(crate) fn run(shared: &Arc<Shared>, mut state: IndexState) {
    let high = (shared.config.overlay_bytes / 4 * 3).max(1);
    let mut last_flush = Instant::now();
    // Chunks applied since the last durable commit.
    let mut dirty = false;
    loop {
        let taken = {
            let mut overlay = shared.overlay();
            loop {
                let stopping = overlay.indexer_stopping();
                if (stopping && overlay.is_idle()) || (!stopping && shared.check_running().is_err())
                {
                    // Closing with nothing left (the close flushes), or
                    // stopped after a failure (reopening replays the
                    // overlay from the segments).
                    return;
                }
                if overlay.is_idle() {
                    if dirty {
                        // Caught up: make the index durable once the
                        // cadence says so, even if nothing else arrives.
                        let left = FLUSH_EVERY.saturating_sub(last_flush.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        overlay = shared
                            .overlay_changed
                            .wait_timeout(overlay, left)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    } else {
                        overlay = shared
                            .overlay_changed
                            .wait(overlay)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    continue;
                }
                let idle_for = overlay.last_push().elapsed();
                let quiet = shared.pending.load(Ordering::Acquire) == 0 && idle_for >= IDLE;
                if stopping || overlay.bytes() >= high || quiet {
                    break;
                }
                let idle_for = if idle_for >= IDLE {
                    Duration::ZERO
                } else {
                    idle_for
                };
                overlay = shared
                    .overlay_changed
                    .wait_timeout(overlay, IDLE - idle_for)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            overlay.take(CHUNK)
        };
        if !taken.entries.is_empty() || !taken.checkpoints.is_empty() {
            if !index_chunk(shared, &mut state, taken) {
                return;
            }
            dirty = true;
        }
        if dirty && last_flush.elapsed() >= FLUSH_EVERY {
            // Only durability and page reuse depend on this: the data is
            // derived, and a crash before it replays from the segments.
            if let Err(e) = shared.index.flush() {
                // After a failed durable commit redb must be reopened (it
                // recovers on open) before it takes another transaction.
                shared.stop(format!("making the index durable: {e}"));
                return;
            }
            dirty = false;
            last_flush = Instant::now();
        }
    }
}

/// Writes one chunk into the index and drops it from the overlay; `false`
/// when the index failed (the ledger is stopped).
fn index_chunk(shared: &Shared, state: &mut IndexState, taken: super::overlay::Taken) -> bool {
    let (n_entries, n_checkpoints) = (taken.entries.len(), taken.checkpoints.len());
    for e in &taken.entries {
        state.head = chain_head(&state.head, &e.leaf);
    }
    if let Some(last) = taken.entries.last() {
        state.entries = last.seq + 1;
        state.last_time_ms = last.time_ms;
        state.resume = last.end();
    }
    if let Some(c) = taken.checkpoints.last() {
        state.resume = state.resume.max(c.end);
    }
    let checkpoints: Vec<IndexedCheckpoint> =
        taken.checkpoints.into_iter().map(|c| c.data).collect();
    let entries = taken.entries.iter().map(|e| e.as_ref());
    if let Err(e) = shared.index.apply(entries, &checkpoints, state) {
        shared.stop(format!("updating the index: {e}"));
        return false;
    }
    drop(taken.entries);
    // The index has them now: readers of these seqs may go straight to it.
    shared.indexed.store(state.entries, Ordering::Release);
    // Drop them from the overlay a slice at a time, so that readers
    // (proofs, lookups) and the writer never wait for a whole chunk.
    let mut left = n_entries;
    let mut checkpoints_left = n_checkpoints;
    loop {
        let n = left.min(POP_SLICE);
        let mut overlay = shared.overlay();
        overlay.pop(n, checkpoints_left);
        checkpoints_left = 0;
        left -= n;
        if left == 0 {
            break;
        }
    }
    shared.overlay_changed.notify_all();
    true
}
