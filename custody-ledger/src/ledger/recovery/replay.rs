//! Replaying segment records past the index watermark into the index,
//! with the same per-entry checks as the offline verifier.

use std::collections::HashMap;
use std::sync::Arc;

use crate::checkpoint::{self, LedgerKey};
use crate::entry::{self, Constraints};
use crate::error::{Error, Result};
use crate::format::{self, CheckedRecord, Record};
use crate::index::{
    push_leaf, rot_bytes, Index, IndexState, IndexedCheckpoint, IndexedEntry, KeyHash, Location,
    Position, RotBytes,
};
use crate::merkle::{chain_head, leaf_hash, Frontier, Hash};

/// Entries replayed per index batch.
const REPLAY_CHUNK: usize = 8192;

/// Replays records into the index, checking them as it goes.
pub(super) struct Replayer<'a> {
    index: &'a Index,
    key: &'a LedgerKey,
    pub(super) state: IndexState,
    pub(super) next: u64,
    frontier: Frontier,
    entries: Vec<IndexedEntry>,
    checkpoints: Vec<IndexedCheckpoint>,
    keys: HashMap<KeyHash, u64>,
    quotas: HashMap<String, u64>,
    devices: HashMap<RotBytes, Hash>,
    last_checkpoint: u64,
}

impl<'a> Replayer<'a> {
    pub(super) fn new(index: &'a Index, key: &'a LedgerKey, state: IndexState) -> Result<Self> {
        let frontier = Frontier::from_reader(index, state.entries)?;
        let last_checkpoint = index.latest_checkpoint()?.map_or(0, |c| c.size);
        Ok(Self {
            index,
            key,
            next: state.entries,
            state,
            frontier,
            entries: Vec::new(),
            checkpoints: Vec::new(),
            keys: HashMap::new(),
            quotas: HashMap::new(),
            devices: HashMap::new(),
            last_checkpoint,
        })
    }

    pub(super) fn record(
        &mut self,
        segment: u64,
        name: &str,
        offset: u64,
        rec: CheckedRecord<'_>,
    ) -> Result<()> {
        let where_ = format!("{name} offset {offset}");
        let end = Position {
            segment,
            offset: offset + rec.total_len as u64,
        };
        match rec.parse().map_err(|e| Error::corrupt(&where_, e))? {
            Record::Entry(e) => {
                let location = Location {
                    segment,
                    offset,
                    len: rec.total_len as u32,
                };
                self.entry(&where_, location, e)?;
            }
            Record::Checkpoint(c) => {
                let cp = checkpoint::open(&c.note, self.key.spki(), Some(self.key.origin()))
                    .map_err(|e| Error::corrupt(&where_, e.to_string()))?;
                if cp.size != c.size || cp.root != c.root {
                    return Err(Error::corrupt(
                        &where_,
                        "checkpoint record disagrees with its note",
                    ));
                }
                if c.size > self.next || c.size < self.last_checkpoint {
                    return Err(Error::corrupt(
                        &where_,
                        format!(
                            "checkpoint of size {} out of order (after {} entries and a checkpoint of {})",
                            c.size, self.next, self.last_checkpoint
                        ),
                    ));
                }
                self.last_checkpoint = c.size;
                self.checkpoints.push(IndexedCheckpoint {
                    size: c.size,
                    root: c.root,
                    note: c.note,
                });
            }
            Record::Trailer(_) | Record::Key(_) => {
                return Err(Error::corrupt(&where_, "an export record inside a segment"));
            }
        }
        self.state.resume = end;
        if self.entries.len() >= REPLAY_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn entry(&mut self, where_: &str, location: Location, e: format::EntryRecord) -> Result<()> {
        let seq = self.next;
        let at = |what: String| Error::corrupt(format!("entry {seq} ({where_})"), what);
        if e.seq != seq {
            return Err(at(format!(
                "record has seq {} where {seq} was expected",
                e.seq
            )));
        }
        // The same per-entry checks as `trustline ledger verify`.
        let decoded = entry::check_stored(seq, &e.entry).map_err(at)?;
        if decoded.prev_hash != self.state.head {
            return Err(at("prev_hash does not match the hash chain: this entry or the one before it was altered".into()));
        }
        if decoded.time_ms < self.state.last_time_ms {
            return Err(at("time goes backwards".into()));
        }
        // check_stored made a non-empty rot_id 64 hex characters.
        let rot = if decoded.rot_id.is_empty() {
            None
        } else {
            Some(rot_bytes(&decoded.rot_id).map_err(|e| at(e.to_string()))?)
        };
        let expected_prev = match &rot {
            None => None,
            Some(rot) => match self.devices.get(rot) {
                Some(h) => Some(*h),
                None => self.index.device_last(rot)?.map(|(_, h)| h),
            },
        };
        if decoded.device_prev != expected_prev.map(|h| h.to_vec()).unwrap_or_default() {
            return Err(at(
                "device_prev does not match the device's previous entry".into()
            ));
        }
        let constraints = Constraints::of_entry(&decoded);
        let mut encoded = Vec::with_capacity(constraints.unique_keys.len());
        for k in &constraints.unique_keys {
            let enc = k.index_key();
            let holder = match self.keys.get(&enc) {
                Some(s) => Some(*s),
                None => self.index.key_holder(&enc)?,
            };
            if let Some(h) = holder {
                return Err(at(format!("unique key {k} is already held by entry {h}")));
            }
            encoded.push(enc);
        }
        if let Some(q) = &constraints.quota {
            let used = self.index.quotas_one(&q.counter)?
                + self.quotas.get(&q.counter).copied().unwrap_or(0);
            if used >= q.limit {
                return Err(at(format!(
                    "quota {:?} was already at its limit {}",
                    q.counter, q.limit
                )));
            }
            *self.quotas.entry(q.counter.clone()).or_default() += 1;
        }
        let leaf = leaf_hash(&e.entry);
        let nodes = push_leaf(&mut self.frontier, leaf);
        for enc in &encoded {
            self.keys.insert(*enc, seq);
        }
        if let Some(rot) = rot {
            self.devices.insert(rot, leaf);
        }
        self.state.head = chain_head(&self.state.head, &leaf);
        self.state.last_time_ms = decoded.time_ms;
        self.entries.push(IndexedEntry {
            seq,
            location,
            leaf,
            nodes,
            rot,
            keys: encoded.into_boxed_slice(),
            quota: constraints.quota.map(|q| Arc::from(q.counter)),
            time_ms: decoded.time_ms,
        });
        self.next += 1;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        self.state.entries = self.next;
        self.index
            .apply(&self.entries, &self.checkpoints, &self.state)?;
        self.entries.clear();
        self.checkpoints.clear();
        self.keys.clear();
        self.quotas.clear();
        self.devices.clear();
        Ok(())
    }
}
