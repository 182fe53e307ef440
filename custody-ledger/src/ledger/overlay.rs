//! Durable entries not yet in sled, held in memory so that acknowledgement
//! never waits for the index.
//!
//! The writer pushes entries here only after their batch is durable; the
//! indexer copies a prefix into sled and then pops it. Readers look here
//! first and in sled second: since an entry leaves the overlay only after
//! sled has it, no reader can miss it in between.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::index::{IndexedCheckpoint, IndexedEntry, Location, Position};
use crate::merkle::Hash;

/// A durable entry awaiting the index.
#[derive(Debug, Clone)]
pub(crate) struct OverlayEntry {
    pub(crate) data: IndexedEntry,
    /// Just after its record.
    pub(crate) end: Position,
    /// The chain head after it.
    pub(crate) head: Hash,
    pub(crate) time_ms: i64,
}

/// A durable checkpoint record awaiting the index.
#[derive(Debug, Clone)]
pub(crate) struct OverlayCheckpoint {
    /// Entries written before the record.
    pub(crate) after: u64,
    pub(crate) data: IndexedCheckpoint,
    pub(crate) end: Position,
}

/// The overlay.
#[derive(Debug)]
pub(crate) struct Overlay {
    /// The seq of `entries[0]`: everything below is in sled.
    base: u64,
    /// Shared with the indexer's [`Taken`], so taking a chunk copies
    /// pointers, not entries, while the lock is held.
    entries: VecDeque<Arc<OverlayEntry>>,
    checkpoints: VecDeque<OverlayCheckpoint>,
    keys: HashMap<Vec<u8>, u64>,
    nodes: HashMap<(u8, u64), Hash>,
    devices: HashMap<String, VecDeque<(u64, Hash)>>,
    stop_indexer: bool,
    last_push: Instant,
}

/// What the indexer takes in one go.
pub(crate) struct Taken {
    pub(crate) entries: Vec<Arc<OverlayEntry>>,
    pub(crate) checkpoints: Vec<OverlayCheckpoint>,
}

impl Overlay {
    /// An empty overlay over an index holding `base` entries.
    pub(crate) fn new(base: u64) -> Self {
        Self {
            base,
            entries: VecDeque::new(),
            checkpoints: VecDeque::new(),
            keys: HashMap::new(),
            nodes: HashMap::new(),
            devices: HashMap::new(),
            stop_indexer: false,
            last_push: Instant::now(),
        }
    }

    /// Durable entries, indexed or not.
    pub(crate) fn durable_size(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Entries awaiting the index.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the indexer has nothing to do.
    pub(crate) fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.checkpoints.is_empty()
    }

    pub(crate) fn stop_indexer(&mut self) {
        self.stop_indexer = true;
    }

    pub(crate) fn indexer_stopping(&self) -> bool {
        self.stop_indexer
    }

    /// When the writer last added something.
    pub(crate) fn last_push(&self) -> Instant {
        self.last_push
    }

    /// Adds a durable entry (the next seq).
    pub(crate) fn push_entry(&mut self, e: OverlayEntry) {
        debug_assert_eq!(e.data.seq, self.durable_size());
        self.last_push = Instant::now();
        for k in &e.data.keys {
            self.keys.insert(k.clone(), e.data.seq);
        }
        for &(level, index, hash) in &e.data.nodes {
            self.nodes.insert((level, index), hash);
        }
        if !e.data.rot_id.is_empty() {
            self.devices
                .entry(e.data.rot_id.clone())
                .or_default()
                .push_back((e.data.seq, e.data.leaf));
        }
        self.entries.push_back(Arc::new(e));
    }

    /// Adds a durable checkpoint record.
    pub(crate) fn push_checkpoint(&mut self, c: OverlayCheckpoint) {
        self.last_push = Instant::now();
        self.checkpoints.push_back(c);
    }

    /// Copies up to `max` entries, and the checkpoint records written among
    /// them, for the indexer.
    pub(crate) fn take(&self, max: usize) -> Taken {
        let entries: Vec<Arc<OverlayEntry>> = self.entries.iter().take(max).cloned().collect();
        let upto = self.base + entries.len() as u64;
        let checkpoints = self
            .checkpoints
            .iter()
            .take_while(|c| c.after <= upto)
            .cloned()
            .collect();
        Taken {
            entries,
            checkpoints,
        }
    }

    /// Drops what the indexer has just written to sled.
    pub(crate) fn pop(&mut self, entries: usize, checkpoints: usize) {
        for _ in 0..entries {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            for k in &e.data.keys {
                if self.keys.get(k) == Some(&e.data.seq) {
                    self.keys.remove(k);
                }
            }
            for &(level, index, _) in &e.data.nodes {
                self.nodes.remove(&(level, index));
            }
            if !e.data.rot_id.is_empty() {
                if let Some(list) = self.devices.get_mut(&e.data.rot_id) {
                    list.pop_front();
                    if list.is_empty() {
                        self.devices.remove(&e.data.rot_id);
                    }
                }
            }
            self.base += 1;
        }
        for _ in 0..checkpoints {
            self.checkpoints.pop_front();
        }
    }

    pub(crate) fn location(&self, seq: u64) -> Option<Location> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get(i).map(|e| e.data.location)
    }

    pub(crate) fn node(&self, level: u8, index: u64) -> Option<Hash> {
        self.nodes.get(&(level, index)).copied()
    }

    pub(crate) fn key_holder(&self, encoded: &[u8]) -> Option<u64> {
        self.keys.get(encoded).copied()
    }

    pub(crate) fn device_last(&self, rot_id: &str) -> Option<(u64, Hash)> {
        self.devices.get(rot_id).and_then(|l| l.back()).copied()
    }

    pub(crate) fn device_seqs(&self, rot_id: &str) -> Vec<u64> {
        self.devices
            .get(rot_id)
            .map(|l| l.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default()
    }
}
