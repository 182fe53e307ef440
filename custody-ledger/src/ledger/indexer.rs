//! The indexer thread: moves durable entries from the overlay into sled, in
//! large atomic batches that also move the watermark.
//!
//! sled costs far more CPU per entry than the durable append itself (about
//! 50k random inserts a second here, three or four per certified entry), so
//! the indexer stays out of the way of bursts: it runs when no append has
//! been waiting for a moment, when the overlay passes half its limit, or
//! when the ledger closes. Under sustained load beyond what sled absorbs, the
//! writer waits at the overlay limit, so memory stays bounded and the
//! sustained rate is sled's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::index::{IndexState, IndexedCheckpoint};

/// Entries per sled batch. Larger batches do not index faster, and sled's
/// memory balloons while it absorbs them back to back: with 4096 the
/// process grew by about 1 GB draining a 122k-entry backlog, with 512 by
/// under 0.2 GB at the same rate (`trustline bench ledger`).
const CHUNK: usize = 512;
/// Entries dropped from the overlay per lock hold.
const POP_SLICE: usize = 256;
/// How often a caught-up indexer flushes sled.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long the writer must have been idle before indexing starts.
const IDLE: Duration = Duration::from_millis(20);

/// The thread body. `state` is the watermark at open.
pub(crate) fn run(shared: &Arc<Shared>, mut state: IndexState) {
    let high = (shared.config.overlay_bytes / 2).max(1);
    let mut last_flush = Instant::now();
    loop {
        let taken = {
            let mut overlay = shared.overlay();
            loop {
                let stopping = overlay.indexer_stopping();
                if (stopping && overlay.is_idle()) || (!stopping && shared.check_running().is_err())
                {
                    // Closing with nothing left, or stopped after a failure
                    // (reopening replays the overlay from the segments).
                    return;
                }
                if overlay.is_idle() {
                    overlay = shared
                        .overlay_changed
                        .wait(overlay)
                        .unwrap_or_else(|p| p.into_inner());
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
        let (n_entries, n_checkpoints) = (taken.entries.len(), taken.checkpoints.len());
        if let Some(last) = taken.entries.last() {
            state.entries = last.data.seq + 1;
            state.head = last.head;
            state.last_time_ms = last.time_ms;
            state.resume = last.end;
        }
        if let Some(c) = taken.checkpoints.last() {
            state.resume = state.resume.max(c.end);
        }
        let checkpoints: Vec<IndexedCheckpoint> =
            taken.checkpoints.into_iter().map(|c| c.data).collect();
        let entries = taken.entries.iter().map(|e| &e.data);
        if let Err(e) = shared.index.apply(entries, &checkpoints, &state) {
            shared.stop(format!("updating the index: {e}"));
            return;
        }
        drop(taken.entries);
        // sled has them now: readers of these seqs may go straight to it.
        shared.indexed.store(state.entries, Ordering::Release);
        // Drop them from the overlay a slice at a time, so that readers
        // (proofs, lookups) and the writer never wait for a whole chunk.
        let mut left = n_entries;
        let mut checkpoints_left = n_checkpoints;
        let caught_up = loop {
            let n = left.min(POP_SLICE);
            let mut overlay = shared.overlay();
            overlay.pop(n, checkpoints_left);
            checkpoints_left = 0;
            left -= n;
            if left == 0 {
                break overlay.is_idle();
            }
        };
        shared.overlay_changed.notify_all();
        // sled's own timer is off; hand its buffers to the OS now and then
        // (only to shorten replay after a crash: the index is derived).
        if caught_up && last_flush.elapsed() >= FLUSH_EVERY {
            if let Err(e) = shared.index.flush() {
                tracing::warn!(error = %e, "flushing the index");
            }
            last_flush = Instant::now();
        }
    }
}
