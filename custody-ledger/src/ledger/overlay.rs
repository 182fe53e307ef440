//! Durable entries not yet in the index, held in memory so that
//! acknowledgement never waits for the index.
//!
//! The writer pushes entries here only after their batch is durable; the
//! indexer copies a prefix into the index and then pops it. Readers look
//! here first and in the index second: since an entry leaves the overlay
//! only after the index has it, no reader can miss it in between.
//!
//! Each entry is an [`IndexedEntry`] (about 200 bytes for a
//! `Certified`-like one) plus its slots in the key and device maps; the
//! overlay counts an estimate of all of it against
//! [`super::LedgerConfig::overlay_bytes`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::index::{IndexedCheckpoint, IndexedEntry, KeyHash, Location, Position, RotBytes};
use crate::merkle::Hash;

/// What one entry costs in the overlay: its struct behind an `Arc`, its
/// heap parts, its deque slots, and its slots in the key and device maps
/// (hash map slots at half load, plus the allocator's bookkeeping).
fn entry_bytes(e: &IndexedEntry) -> usize {
    const ALLOC: usize = 16;
    const ARC: usize = 16 + ALLOC;
    const KEY_SLOT: usize = 2 * (std::mem::size_of::<KeyHash>() + 8 + 1);
    const DEVICE_SLOT: usize = 2 * (std::mem::size_of::<RotBytes>() + 8 + 1);
    let heap = |n: usize| if n == 0 { 0 } else { n + ALLOC };
    std::mem::size_of::<IndexedEntry>()
        + ARC
        + std::mem::size_of::<Arc<IndexedEntry>>()
        + std::mem::size_of::<Option<u64>>()
        + heap(std::mem::size_of_val(&*e.nodes))
        + heap(std::mem::size_of_val(&*e.keys))
        + e.keys.len() * KEY_SLOT
        + if e.rot.is_some() { DEVICE_SLOT } else { 0 }
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
    /// The seq of `entries[0]`: everything below is in the index.
    base: u64,
    /// Shared with the indexer's [`Taken`], so taking a chunk copies
    /// pointers, not entries, while the lock is held.
    entries: VecDeque<Arc<IndexedEntry>>,
    /// For each entry, the seq of the same device's previous entry when
    /// that one is in the overlay too.
    device_prev: VecDeque<Option<u64>>,
    checkpoints: VecDeque<OverlayCheckpoint>,
    keys: HashMap<KeyHash, u64>,
    /// A device's last entry in the overlay.
    devices: HashMap<RotBytes, u64>,
    /// Estimated heap bytes held ([`entry_bytes`] of every entry).
    bytes: usize,
    stop_indexer: bool,
    last_push: Instant,
}

/// What the indexer takes in one go.
pub(crate) struct Taken {
    pub(crate) entries: Vec<Arc<IndexedEntry>>,
    pub(crate) checkpoints: Vec<OverlayCheckpoint>,
}

impl Overlay {
    /// An empty overlay over an index holding `base` entries.
    pub(crate) fn new(base: u64) -> Self {
        Self {
            base,
            entries: VecDeque::new(),
            device_prev: VecDeque::new(),
            checkpoints: VecDeque::new(),
            keys: HashMap::new(),
            devices: HashMap::new(),
            bytes: 0,
            stop_indexer: false,
            last_push: Instant::now(),
        }
    }

    /// Durable entries, indexed or not.
    pub(crate) fn durable_size(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Estimated heap bytes the overlay holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
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
    pub(crate) fn push_entry(&mut self, e: IndexedEntry) {
        debug_assert_eq!(e.seq, self.durable_size());
        self.last_push = Instant::now();
        self.bytes += entry_bytes(&e);
        for k in e.keys.iter() {
            self.keys.insert(*k, e.seq);
        }
        let prev = e.rot.and_then(|rot| self.devices.insert(rot, e.seq));
        self.device_prev.push_back(prev);
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
        let entries: Vec<Arc<IndexedEntry>> = self.entries.iter().take(max).cloned().collect();
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

    /// Drops what the indexer has just written to the index.
    pub(crate) fn pop(&mut self, entries: usize, checkpoints: usize) {
        for _ in 0..entries {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.device_prev.pop_front();
            self.bytes = self.bytes.saturating_sub(entry_bytes(&e));
            for k in e.keys.iter() {
                if self.keys.get(k) == Some(&e.seq) {
                    self.keys.remove(k);
                }
            }
            if let Some(rot) = &e.rot {
                if self.devices.get(rot) == Some(&e.seq) {
                    self.devices.remove(rot);
                }
            }
            self.base += 1;
        }
        for _ in 0..checkpoints {
            self.checkpoints.pop_front();
        }
    }

    fn entry(&self, seq: u64) -> Option<&IndexedEntry> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get(i).map(|e| e.as_ref())
    }

    pub(crate) fn location(&self, seq: u64) -> Option<Location> {
        self.entry(seq).map(|e| e.location)
    }

    /// A subtree hash, from the entry that completed it: the subtree
    /// `(level, index)` ends at seq `(index + 1)·2^level − 1`.
    pub(crate) fn node(&self, level: u8, index: u64) -> Option<Hash> {
        let last = index
            .checked_add(1)?
            .checked_mul(1u64.checked_shl(u32::from(level))?)?
            .checked_sub(1)?;
        self.entry(last)?.node(level, index)
    }

    pub(crate) fn key_holder(&self, encoded: &KeyHash) -> Option<u64> {
        self.keys.get(encoded).copied()
    }

    pub(crate) fn device_last(&self, rot: &RotBytes) -> Option<(u64, Hash)> {
        let seq = *self.devices.get(rot)?;
        Some((seq, self.entry(seq)?.leaf))
    }

    /// The device's entries in the overlay, oldest first.
    pub(crate) fn device_seqs(&self, rot: &RotBytes) -> Vec<u64> {
        let mut out = Vec::new();
        let mut next = self.devices.get(rot).copied();
        // Links to entries already popped (below `base`) end the walk.
        while let Some(seq) = next.filter(|&s| s >= self.base) {
            out.push(seq);
            next = usize::try_from(seq - self.base)
                .ok()
                .and_then(|i| self.device_prev.get(i).copied().flatten());
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;
    use crate::index::push_leaf;
    use crate::merkle::{leaf_hash, Frontier, MemoryTree, NodeReader};

    fn key_of(seq: u64) -> KeyHash {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&seq.to_le_bytes());
        k
    }

    fn entry(seq: u64, frontier: &mut Frontier, rot: u8) -> IndexedEntry {
        let leaf = leaf_hash(&seq.to_le_bytes());
        IndexedEntry {
            seq,
            location: Location {
                segment: 0,
                offset: seq,
                len: 1,
            },
            leaf,
            nodes: push_leaf(frontier, leaf),
            rot: Some([rot; 32]),
            keys: Box::new([key_of(seq)]),
            quota: None,
            time_ms: 0,
        }
    }

    #[test]
    fn nodes_device_chains_and_bytes_follow_pushes_and_pops() {
        let mut frontier = Frontier::new();
        let mut tree = MemoryTree::new();
        let mut o = Overlay::new(0);
        let (a, b) = ([b'a'; 32], [b'b'; 32]);
        for seq in 0..40u64 {
            let rot = if seq % 3 == 0 { b'a' } else { b'b' };
            o.push_entry(entry(seq, &mut frontier, rot));
            tree.push(leaf_hash(&seq.to_le_bytes()));
        }
        let full = o.bytes();
        assert!(full > 40 * 200, "{full}");
        // Every complete subtree is found through the entry that ended it.
        for level in 0..6u8 {
            for index in 0..(40u64 >> level) {
                assert_eq!(
                    o.node(level, index),
                    Some(tree.node(level, index).unwrap()),
                    "({level}, {index})"
                );
            }
        }
        assert_eq!(o.node(3, 5), None, "not complete yet");
        let in_a: Vec<u64> = (0..40).filter(|s| s % 3 == 0).collect();
        assert_eq!(o.device_seqs(&a), in_a);
        o.pop(10, 0);
        assert!(o.bytes() < full);
        let in_a: Vec<u64> = (10..40).filter(|s| s % 3 == 0).collect();
        assert_eq!(o.device_seqs(&a), in_a, "links below the base end the walk");
        assert_eq!(o.device_last(&b).unwrap().0, 38);
        assert_eq!(o.node(0, 3), None, "popped");
        assert_eq!(o.key_holder(&key_of(12)), Some(12));
        assert_eq!(o.key_holder(&key_of(2)), None);
        o.pop(30, 0);
        assert_eq!((o.bytes(), o.device_seqs(&a).len()), (0, 0));
    }
}
