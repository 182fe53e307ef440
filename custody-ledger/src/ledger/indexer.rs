//! The indexer thread: moves durable entries from the overlay into sled, in
//! large atomic batches that also move the watermark.

use std::sync::Arc;

use super::Shared;
use crate::index::{IndexState, IndexedCheckpoint, IndexedEntry};

/// Entries per sled batch.
const CHUNK: usize = 8192;

/// The thread body. `state` is the watermark at open.
pub(crate) fn run(shared: &Arc<Shared>, mut state: IndexState) {
    loop {
        let taken = {
            let mut overlay = shared.overlay();
            while overlay.is_idle() && !overlay.indexer_stopping() && shared.check_running().is_ok()
            {
                overlay = shared
                    .overlay_changed
                    .wait(overlay)
                    .unwrap_or_else(|p| p.into_inner());
            }
            // Idle means closing or stopped; after a failure the overlay is
            // left as it is (reopening replays it from the segments).
            if overlay.is_idle() || (shared.check_running().is_err() && !overlay.indexer_stopping())
            {
                return;
            }
            overlay.take(CHUNK)
        };
        let (n_entries, n_checkpoints) = (taken.entries.len(), taken.checkpoints.len());
        if n_entries == 0 && n_checkpoints == 0 {
            return;
        }
        if let Some(last) = taken.entries.last() {
            state.entries = last.data.seq + 1;
            state.head = last.head;
            state.last_time_ms = last.time_ms;
            state.resume = last.end;
        }
        if let Some(c) = taken.checkpoints.last() {
            state.resume = state.resume.max(c.end);
        }
        let entries: Vec<IndexedEntry> = taken.entries.into_iter().map(|e| e.data).collect();
        let checkpoints: Vec<IndexedCheckpoint> =
            taken.checkpoints.into_iter().map(|c| c.data).collect();
        if let Err(e) = shared.index.apply(&entries, &checkpoints, &state) {
            shared.stop(format!("updating the index: {e}"));
            return;
        }
        shared.overlay().pop(n_entries, n_checkpoints);
        shared.overlay_changed.notify_all();
    }
}
