//! The sled index: everything that can be rebuilt from the segment files.
//!
//! sled 0.34.7's `flush()` ends in `sync_file_range`, which flushes neither
//! the disk cache nor file metadata, so sled cannot back "recorded before
//! released" after a power cut. It is used only for derived data, written
//! behind the segment files and never ahead of them: a watermark says how
//! many entries (and which segment position) the index covers, and on open
//! everything past it is replayed. When the index is missing or unreadable
//! it is rebuilt from the segments.
//!
//! One sled tree, keys prefixed by a tag byte, so that one `apply_batch`
//! moves every derived value and the watermark together:
//!
//! ```text
//! M "format"                          → u32 LE index format
//! M "state"                           → watermark (IndexState::encode)
//! T tile u64 BE                       → 16 entry locations and the tile's
//!                                       Merkle nodes of levels 0..=4
//! N level u8, index u64 BE            → node hash (levels above 4)
//! K UniqueKey::index_key (16 bytes)  → holder seq u64 BE
//! Q counter                           → count u64 BE
//! D len u8, rot_id, seq u64 BE        → leaf hash of that entry
//! C size u64 BE                       → root hash ‖ signed note
//! ```
//!
//! Tiles keep the sequential, per-entry data to one sled write per 16
//! entries (small values: sled rewrites whole nodes, so large values cost
//! write amplification and slow reads): sled manages about 50k random
//! inserts a second here, so the remaining per-entry writes are the unique
//! keys and the device list.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::merkle::{CompletedNode, Hash, NodeReader};

const TAG_META: u8 = b'M';
const TAG_TILE: u8 = b'T';
const TAG_NODE: u8 = b'N';
const TAG_KEY: u8 = b'K';
const TAG_QUOTA: u8 = b'Q';
const TAG_DEVICE: u8 = b'D';
const TAG_CHECKPOINT: u8 = b'C';

/// Version of this layout; an index of another version is rebuilt.
const INDEX_FORMAT: u32 = 3;

/// Height of a tile: it holds the nodes of levels `0..=TILE_HEIGHT`.
pub(crate) const TILE_HEIGHT: u8 = 4;
/// Entries per tile.
pub(crate) const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
const LOCATION_LEN: usize = 20;
const TILE_LOCATIONS: usize = 2;
const TILE_NODES: usize = TILE_LOCATIONS + TILE_WIDTH as usize * LOCATION_LEN;
/// Nodes in a full tile: 16 + 8 + 4 + 2 + 1.
const TILE_NODE_COUNT: usize = 2 * TILE_WIDTH as usize - 1;
const TILE_LEN: usize = TILE_NODES + TILE_NODE_COUNT * 32;

/// Where an entry record is: segment (its `first_seq`), byte offset, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// A position in the segment stream: just after some record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// The watermark: what the index covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexState {
    /// Entries indexed: seqs `[0, entries)`.
    pub(crate) entries: u64,
    /// Where replay resumes: just after the last indexed record.
    pub(crate) resume: Position,
    /// Chain head after the last indexed entry.
    pub(crate) head: Hash,
    /// `time_ms` of the last indexed entry.
    pub(crate) last_time_ms: i64,
}

impl IndexState {
    const LEN: usize = 8 + 8 + 8 + 32 + 8;

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.entries.to_le_bytes());
        v.extend_from_slice(&self.resume.segment.to_le_bytes());
        v.extend_from_slice(&self.resume.offset.to_le_bytes());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.last_time_ms.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN {
            return None;
        }
        let u = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let mut head = [0u8; 32];
        head.copy_from_slice(&b[24..56]);
        Some(Self {
            entries: u(0),
            resume: Position {
                segment: u(8),
                offset: u(16),
            },
            head,
            last_time_ms: u(56) as i64,
        })
    }
}

/// One entry's derived data, as the writer or replay produced it.
#[derive(Debug, Clone)]
pub(crate) struct IndexedEntry {
    pub(crate) seq: u64,
    pub(crate) location: Location,
    /// The leaf (level 0) and every subtree this entry completed.
    pub(crate) nodes: Vec<CompletedNode>,
    pub(crate) rot_id: String,
    pub(crate) leaf: Hash,
    /// Unique keys in index form ([`crate::entry::UniqueKey::index_key`]).
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) quota: Option<String>,
}

/// A checkpoint record's derived data.
#[derive(Debug, Clone)]
pub(crate) struct IndexedCheckpoint {
    pub(crate) size: u64,
    pub(crate) root: Hash,
    pub(crate) note: String,
}

/// The sled index.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    db: sled::Db,
    /// The nodes above the tiles (one per 16 entries and fewer), also kept
    /// in memory: every proof needs a dozen of them, and sled reads of
    /// scattered small values are slow once the index outgrows its cache.
    upper: Arc<RwLock<HashMap<(u8, u64), Hash>>>,
}

fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn device_prefix(rot_id: &str) -> Vec<u8> {
    // rot_ids are 64 bytes (Draft::validate), so the length fits a byte.
    key(TAG_DEVICE, &[&[rot_id.len() as u8], rot_id.as_bytes()])
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn hash_of(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

/// Byte offset of node `(level, j)` (j relative to the tile) in a tile.
fn tile_node_offset(level: u8, j: u64) -> usize {
    // Levels 0..level come first: 16 + 8 + … nodes.
    let before: u64 = (0..level).map(|l| TILE_WIDTH >> l).sum();
    TILE_NODES + ((before + j) as usize) * 32
}

impl Index {
    /// Opens (or creates) the index in `dir`.
    ///
    /// # Errors
    /// [`Error::Index`] when sled cannot open it (the caller rebuilds).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from the segments. Frequent small flushes keep
            // sled's dirty data (which an ext4 journal commit may have to
            // write out before the writer's fdatasync returns) small.
            .flush_every_ms(Some(1000))
            .open()?;
        let index = Self {
            db,
            upper: Arc::new(RwLock::new(HashMap::new())),
        };
        match index.db.get(key(TAG_META, &[b"format"]))? {
            None => {
                if index.db.iter().next().is_some() {
                    return Err(Error::Index("index has data but no format marker".into()));
                }
                index
                    .db
                    .insert(key(TAG_META, &[b"format"]), &INDEX_FORMAT.to_le_bytes())?;
            }
            Some(v) if v.as_ref() == INDEX_FORMAT.to_le_bytes() => {}
            Some(_) => return Err(Error::Index("index format is not this version's".into())),
        }
        {
            let mut upper = index.upper.write().unwrap_or_else(|p| p.into_inner());
            for kv in index.db.scan_prefix([TAG_NODE]) {
                let (k, v) = kv?;
                let (Some(&level), Some(i), Some(h)) =
                    (k.get(1), k.get(2..).and_then(be_u64), hash_of(&v))
                else {
                    return Err(Error::Index("node record is malformed".into()));
                };
                upper.insert((level, i), h);
            }
        }
        Ok(index)
    }

    /// The watermark, or `None` for a fresh index.
    pub(crate) fn state(&self) -> Result<Option<IndexState>> {
        match self.db.get(key(TAG_META, &[b"state"]))? {
            None => Ok(None),
            Some(v) => IndexState::decode(&v)
                .map(Some)
                .ok_or_else(|| Error::Index("watermark record is malformed".into())),
        }
    }

    fn tile(&self, tile: u64) -> Result<Option<sled::IVec>> {
        let v = self.db.get(key(TAG_TILE, &[&tile.to_be_bytes()]))?;
        if let Some(v) = &v {
            if v.len() != TILE_LEN {
                return Err(Error::Index(format!("tile {tile} is malformed")));
            }
        }
        Ok(v)
    }

    fn tile_count(t: &[u8]) -> u64 {
        u64::from(u16::from_le_bytes([t[0], t[1]]))
    }

    /// Where entry `seq` is stored, if indexed.
    pub(crate) fn location(&self, seq: u64) -> Result<Option<Location>> {
        let Some(t) = self.tile(seq / TILE_WIDTH)? else {
            return Ok(None);
        };
        let j = seq % TILE_WIDTH;
        if j >= Self::tile_count(&t) {
            return Ok(None);
        }
        let at = TILE_LOCATIONS + j as usize * LOCATION_LEN;
        let b = &t[at..at + LOCATION_LEN];
        Ok(Some(Location {
            segment: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            offset: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()),
        }))
    }

    /// A stored subtree hash, if indexed.
    pub(crate) fn node(&self, level: u8, index: u64) -> Result<Option<Hash>> {
        if level > TILE_HEIGHT {
            // From memory: `upper` holds every stored node above the tiles
            // (loaded on open, extended by `apply` after sled has them).
            return Ok(self
                .upper
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(level, index))
                .copied());
        }
        let per_tile = TILE_WIDTH >> level;
        let (tile, j) = (index / per_tile, index % per_tile);
        let Some(t) = self.tile(tile)? else {
            return Ok(None);
        };
        if (j + 1) << level > Self::tile_count(&t) {
            return Ok(None);
        }
        let at = tile_node_offset(level, j);
        Ok(hash_of(&t[at..at + 32]))
    }

    /// The entry holding an encoded unique key.
    pub(crate) fn key_holder(&self, encoded: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .db
            .get(key(TAG_KEY, &[encoded]))?
            .and_then(|v| be_u64(&v)))
    }

    /// Every quota counter.
    pub(crate) fn quotas(&self) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for kv in self.db.scan_prefix([TAG_QUOTA]) {
            let (k, v) = kv?;
            let name = String::from_utf8(k[1..].to_vec())
                .map_err(|_| Error::Index("quota counter name is not UTF-8".into()))?;
            out.insert(
                name,
                be_u64(&v).ok_or_else(|| Error::Index("quota value is malformed".into()))?,
            );
        }
        Ok(out)
    }

    /// One quota counter.
    pub(crate) fn quotas_one(&self, counter: &str) -> Result<u64> {
        Ok(self
            .db
            .get(key(TAG_QUOTA, &[counter.as_bytes()]))?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// One device's indexed entries, in order: `(seq, leaf)`.
    pub(crate) fn device_entries(&self, rot_id: &str) -> Result<Vec<(u64, Hash)>> {
        let prefix = device_prefix(rot_id);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.push(Self::device_item(&prefix, &k, &v)?);
        }
        Ok(out)
    }

    /// One device's last indexed entry.
    pub(crate) fn device_last(&self, rot_id: &str) -> Result<Option<(u64, Hash)>> {
        let prefix = device_prefix(rot_id);
        let mut upper = prefix.clone();
        upper.extend_from_slice(&u64::MAX.to_be_bytes());
        // The greatest key below (prefix, u64::MAX): one descent, no iterator.
        match self.db.get_lt(&upper)? {
            Some((k, v)) if k.starts_with(&prefix) && k.len() == prefix.len() + 8 => {
                Ok(Some(Self::device_item(&prefix, &k, &v)?))
            }
            _ => Ok(None),
        }
    }

    fn device_item(prefix: &[u8], k: &[u8], v: &[u8]) -> Result<(u64, Hash)> {
        let seq = be_u64(&k[prefix.len()..])
            .ok_or_else(|| Error::Index("device key is malformed".into()))?;
        let leaf = hash_of(v).ok_or_else(|| Error::Index("device leaf is malformed".into()))?;
        Ok((seq, leaf))
    }

    /// The indexed checkpoint with the largest size.
    pub(crate) fn latest_checkpoint(&self) -> Result<Option<IndexedCheckpoint>> {
        match self.db.scan_prefix([TAG_CHECKPOINT]).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let size = be_u64(&k[1..])
                    .ok_or_else(|| Error::Index("checkpoint key is malformed".into()))?;
                if v.len() < 32 {
                    return Err(Error::Index("checkpoint value is malformed".into()));
                }
                let root = hash_of(&v[..32]).unwrap_or_default();
                let note = String::from_utf8(v[32..].to_vec())
                    .map_err(|_| Error::Index("checkpoint note is not UTF-8".into()))?;
                Ok(Some(IndexedCheckpoint { size, root, note }))
            }
        }
    }

    /// Applies a chunk of consecutive entries and checkpoints and moves the
    /// watermark to `state`, in one atomic sled batch.
    ///
    /// # Errors
    /// [`Error::Index`].
    pub(crate) fn apply<'e>(
        &self,
        entries: impl IntoIterator<Item = &'e IndexedEntry>,
        checkpoints: &[IndexedCheckpoint],
        state: &IndexState,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut tiles: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut quotas: HashMap<&str, u64> = HashMap::new();
        let mut upper = Vec::new();
        for e in entries {
            let tile_no = e.seq / TILE_WIDTH;
            let tile = match tiles.entry(tile_no) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let t = match self.tile(tile_no)? {
                        Some(t) => t.to_vec(),
                        None => vec![0u8; TILE_LEN],
                    };
                    v.insert(t)
                }
            };
            let j = e.seq % TILE_WIDTH;
            if Self::tile_count(tile) != j {
                return Err(Error::Index(format!(
                    "entry {} does not follow the indexed entries of its tile",
                    e.seq
                )));
            }
            let at = TILE_LOCATIONS + j as usize * LOCATION_LEN;
            tile[at..at + 8].copy_from_slice(&e.location.segment.to_le_bytes());
            tile[at + 8..at + 16].copy_from_slice(&e.location.offset.to_le_bytes());
            tile[at + 16..at + 20].copy_from_slice(&e.location.len.to_le_bytes());
            tile[0..2].copy_from_slice(&((j + 1) as u16).to_le_bytes());
            for &(level, index, hash) in &e.nodes {
                if level > TILE_HEIGHT {
                    batch.insert(key(TAG_NODE, &[&[level], &index.to_be_bytes()]), &hash[..]);
                    upper.push(((level, index), hash));
                } else {
                    let per_tile = TILE_WIDTH >> level;
                    let off = tile_node_offset(level, index % per_tile);
                    tile[off..off + 32].copy_from_slice(&hash);
                }
            }
            for k in &e.keys {
                batch.insert(key(TAG_KEY, &[k]), &e.seq.to_be_bytes());
            }
            if let Some(q) = &e.quota {
                *quotas.entry(q.as_str()).or_default() += 1;
            }
            if !e.rot_id.is_empty() {
                let mut k = device_prefix(&e.rot_id);
                k.extend_from_slice(&e.seq.to_be_bytes());
                batch.insert(k, &e.leaf[..]);
            }
        }
        for (tile_no, t) in tiles {
            batch.insert(key(TAG_TILE, &[&tile_no.to_be_bytes()]), t);
        }
        for (counter, add) in quotas {
            let k = key(TAG_QUOTA, &[counter.as_bytes()]);
            let now = self.db.get(&k)?.and_then(|v| be_u64(&v)).unwrap_or(0);
            batch.insert(k, &(now + add).to_be_bytes());
        }
        for c in checkpoints {
            let mut v = c.root.to_vec();
            v.extend_from_slice(c.note.as_bytes());
            batch.insert(key(TAG_CHECKPOINT, &[&c.size.to_be_bytes()]), v);
        }
        batch.insert(key(TAG_META, &[b"state"]), state.encode());
        self.db.apply_batch(batch)?;
        self.upper
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(upper);
        Ok(())
    }

    /// Flushes sled's buffers (best effort; the index is derived data).
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

impl NodeReader for Index {
    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        Index::node(self, level, index)?
            .ok_or_else(|| Error::Index(format!("subtree ({level}, {index}) is not indexed")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root, Frontier, MemoryTree};

    #[test]
    fn tiles_hold_locations_and_nodes_across_partial_applies() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), 8 << 20).unwrap();
        let mut frontier = Frontier::new();
        let mut mem = MemoryTree::new();
        let mut seq = 0u64;
        // Uneven chunks crossing tile boundaries.
        for chunk in [1usize, 2, 300, 255, 1, 700] {
            let mut entries = Vec::new();
            for _ in 0..chunk {
                let leaf = leaf_hash(&seq.to_le_bytes());
                let mut nodes = Vec::new();
                frontier.push(leaf, &mut |n| nodes.push(n));
                mem.push(leaf);
                entries.push(IndexedEntry {
                    seq,
                    location: Location {
                        segment: 0,
                        offset: seq * 10,
                        len: 10,
                    },
                    nodes,
                    rot_id: String::new(),
                    leaf,
                    keys: vec![seq.to_le_bytes().to_vec()],
                    quota: Some("q".into()),
                });
                seq += 1;
            }
            let state = IndexState {
                entries: seq,
                resume: Position {
                    segment: 0,
                    offset: seq * 10,
                },
                head: [0; 32],
                last_time_ms: 0,
            };
            index.apply(&entries, &[], &state).unwrap();
            assert_eq!(index.state().unwrap(), Some(state));
            assert_eq!(root(&index, seq).unwrap(), mem.root());
        }
        assert_eq!(index.location(1000).unwrap().unwrap().offset, 10_000);
        assert_eq!(index.location(seq).unwrap(), None);
        assert_eq!(index.key_holder(&77u64.to_le_bytes()).unwrap(), Some(77));
        assert_eq!(index.quotas().unwrap().get("q"), Some(&seq));
        assert_eq!(Frontier::from_reader(&index, seq).unwrap(), frontier);
    }
}
