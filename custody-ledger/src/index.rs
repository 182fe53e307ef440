//! The index: everything that can be rebuilt from the segment files, in one
//! redb file (`<index dir>/index.redb`).
//!
//! The index is derived data, written behind the segment files and never
//! ahead of them: a watermark says how many entries (and which segment
//! position) it covers, and on open everything past it is replayed. When
//! the index is missing, unreadable or of another format it is rebuilt from
//! the segments.
//!
//! Each [`Index::apply`] is one redb write transaction that moves every
//! derived value and the watermark together, committed with
//! `Durability::None`: visible to readers at once, not yet synced. Every
//! few seconds, and on close, [`Index::flush`] makes a durable commit (one
//! `fdatasync`, with redb's quick-repair allocator state) that persists all
//! of them. After a crash or power cut redb opens at its last durable
//! commit — a consistent, checksummed snapshot whose watermark only covers
//! entries that were synced to the segments before it was written — and the
//! rest is replayed. Pages freed by non-durable commits are reused only
//! after the next durable one, so the flush cadence also bounds the file's
//! growth.
//!
//! Memory: redb reads and writes the file through its own cache, bounded by
//! the configured size; nothing here grows with the ledger (issue 16,
//! item 4).
//!
//! Tables:
//!
//! ```text
//! meta         "format"              → u32 LE index format
//!              "state"               → watermark (IndexState::encode)
//! tiles        tile u64              → 16 entry locations and the tile's
//!                                      Merkle nodes of levels 0..=4
//! nodes        (level u8, index u64) → node hash (levels above 4)
//! keys         UniqueKey::index_key  → holder seq
//! quotas       counter               → count
//! devices      (rot_id bytes, seq)   → leaf hash of that entry
//! checkpoints  size u64              → root hash ‖ signed note
//! ```
//!
//! Tiles keep the sequential, per-entry data to one small record per 16
//! entries; the remaining per-entry writes are the unique keys and the
//! device list.

use std::cell::OnceCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::merkle::{Frontier, Hash, NodeReader};

/// The index file inside the index directory.
pub(crate) const INDEX_FILE: &str = "index.redb";

/// Version of this layout; an index of another version is rebuilt.
/// Format 4: redb (formats up to 3 were sled directories).
const INDEX_FORMAT: u32 = 4;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TILES: TableDefinition<u64, &[u8]> = TableDefinition::new("tiles");
const NODES: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("nodes");
const KEYS: TableDefinition<&KeyHash, u64> = TableDefinition::new("keys");
const QUOTAS: TableDefinition<&str, u64> = TableDefinition::new("quotas");
const DEVICES: TableDefinition<&DeviceKey, &[u8; 32]> = TableDefinition::new("devices");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");

/// A unique key in index form ([`crate::entry::UniqueKey::index_key`]).
pub(crate) type KeyHash = [u8; 16];
/// A `rot_id` (64 lowercase hex characters) as its 32 bytes.
pub(crate) type RotBytes = [u8; 32];
/// A device list key: the `rot_id`'s bytes and the entry's seq (big
/// endian, so that a device's entries sort by seq).
type DeviceKey = [u8; 40];

/// Key types are byte arrays compared with `memcmp` (redb's `[T; N]`
/// compares and encodes element by element).
fn device_key(rot: &RotBytes, seq: u64) -> DeviceKey {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(rot);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// A node above the tiles: its level in the top byte (a ledger never
/// reaches 2^56 entries), its index below.
fn node_key(level: u8, index: u64) -> u64 {
    (u64::from(level) << 56) | (index & ((1 << 56) - 1))
}

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

/// One entry's derived data, as the writer or replay produced it; also
/// what the overlay holds per entry, so it is kept compact.
#[derive(Debug, Clone)]
pub(crate) struct IndexedEntry {
    pub(crate) seq: u64,
    pub(crate) location: Location,
    pub(crate) leaf: Hash,
    /// The subtrees of levels 1, 2, … this entry completed (level `l` is
    /// node `(l, seq >> l)`; half the entries complete none).
    pub(crate) nodes: Box<[Hash]>,
    /// The `rot_id`'s bytes, for an entry about a device.
    pub(crate) rot: Option<RotBytes>,
    /// Unique keys in index form.
    pub(crate) keys: Box<[KeyHash]>,
    /// The quota counter it counts against (shared between entries).
    pub(crate) quota: Option<Arc<str>>,
    pub(crate) time_ms: i64,
}

impl IndexedEntry {
    /// Just after its record.
    pub(crate) fn end(&self) -> Position {
        Position {
            segment: self.location.segment,
            offset: self.location.offset + u64::from(self.location.len),
        }
    }

    /// A subtree hash this entry completed, if `(level, index)` is one.
    pub(crate) fn node(&self, level: u8, index: u64) -> Option<Hash> {
        if level == 0 {
            return (index == self.seq).then_some(self.leaf);
        }
        if self.seq.checked_shr(u32::from(level)) != Some(index) {
            return None;
        }
        self.nodes.get(usize::from(level) - 1).copied()
    }
}

/// Pushes `leaf` onto `frontier` and returns the hashes of the subtrees
/// above the leaf it completed ([`IndexedEntry::nodes`]).
pub(crate) fn push_leaf(frontier: &mut Frontier, leaf: Hash) -> Box<[Hash]> {
    let mut nodes = Vec::new();
    frontier.push(leaf, &mut |(level, _, hash)| {
        if level > 0 {
            nodes.push(hash);
        }
    });
    nodes.into_boxed_slice()
}

/// A checkpoint record's derived data.
#[derive(Debug, Clone)]
pub(crate) struct IndexedCheckpoint {
    pub(crate) size: u64,
    pub(crate) root: Hash,
    pub(crate) note: String,
}

/// The index. Cheap to clone (one shared database).
#[derive(Clone)]
pub(crate) struct Index {
    db: Arc<Database>,
    /// Set when a commit failed: redb must be reopened (it recovers on
    /// open) before it takes another write transaction.
    failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

/// Any redb failure as [`Error::Index`].
fn ix(e: impl std::fmt::Display) -> Error {
    Error::Index(e.to_string())
}

/// The 32 bytes of a well-formed `rot_id`.
pub(crate) fn rot_bytes(rot_id: &str) -> Result<RotBytes> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(rot_id, &mut out)
        .map_err(|_| Error::Index(format!("rot_id {rot_id:?} is not 64 hex characters")))?;
    Ok(out)
}

/// Byte offset of node `(level, j)` (j relative to the tile) in a tile.
fn tile_node_offset(level: u8, j: u64) -> usize {
    // Levels 0..level come first: 16 + 8 + … nodes.
    let before: u64 = (0..level).map(|l| TILE_WIDTH >> l).sum();
    TILE_NODES + ((before + j) as usize) * 32
}

fn device_seq(k: &DeviceKey) -> u64 {
    u64::from_be_bytes(k[32..].try_into().unwrap_or_default())
}

fn tile_count(t: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([t[0], t[1]]))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// Reads one tile's bytes through `f`, checking its length.
fn with_tile<T>(
    tiles: &ReadOnlyTable<u64, &'static [u8]>,
    tile: u64,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<Option<T>> {
    let Some(g) = tiles.get(tile).map_err(ix)? else {
        return Ok(None);
    };
    let t = g.value();
    if t.len() != TILE_LEN {
        return Err(Error::Index(format!("tile {tile} is malformed")));
    }
    Ok(Some(f(t)))
}

/// A read transaction over the index: a consistent snapshot for several
/// lookups, opening each table once. Short-lived (a live snapshot keeps
/// redb from reusing the pages it sees).
pub(crate) struct Snapshot {
    tx: ReadTransaction,
    tiles: OnceCell<ReadOnlyTable<u64, &'static [u8]>>,
    nodes: OnceCell<ReadOnlyTable<u64, &'static [u8; 32]>>,
    keys: OnceCell<ReadOnlyTable<&'static KeyHash, u64>>,
    devices: OnceCell<ReadOnlyTable<&'static DeviceKey, &'static [u8; 32]>>,
}

/// Opens a table of the snapshot once.
fn table<'s, K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &ReadTransaction,
    cell: &'s OnceCell<ReadOnlyTable<K, V>>,
    def: TableDefinition<'static, K, V>,
) -> Result<&'s ReadOnlyTable<K, V>> {
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let t = tx.open_table(def).map_err(ix)?;
    Ok(cell.get_or_init(|| t))
}

impl Snapshot {
    fn new(tx: ReadTransaction) -> Self {
        Self {
            tx,
            tiles: OnceCell::new(),
            nodes: OnceCell::new(),
            keys: OnceCell::new(),
            devices: OnceCell::new(),
        }
    }

    /// The watermark, or `None` for a fresh index.
    pub(crate) fn state(&self) -> Result<Option<IndexState>> {
        let meta = self.tx.open_table(META).map_err(ix)?;
        let Some(v) = meta.get("state").map_err(ix)? else {
            return Ok(None);
        };
        IndexState::decode(v.value())
            .map(Some)
            .ok_or_else(|| Error::Index("watermark record is malformed".into()))
    }

    /// Where entry `seq` is stored, if indexed.
    pub(crate) fn location(&self, seq: u64) -> Result<Option<Location>> {
        let tiles = table(&self.tx, &self.tiles, TILES)?;
        let j = seq % TILE_WIDTH;
        let found = with_tile(tiles, seq / TILE_WIDTH, |t| {
            if j >= tile_count(t) {
                return None;
            }
            let at = TILE_LOCATIONS + j as usize * LOCATION_LEN;
            let b = &t[at..at + LOCATION_LEN];
            Some(Location {
                segment: le_u64(&b[0..8]),
                offset: le_u64(&b[8..16]),
                len: u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()),
            })
        })?;
        Ok(found.flatten())
    }

    /// A stored subtree hash, if indexed.
    pub(crate) fn node(&self, level: u8, index: u64) -> Result<Option<Hash>> {
        if level > TILE_HEIGHT {
            let nodes = table(&self.tx, &self.nodes, NODES)?;
            return Ok(nodes
                .get(node_key(level, index))
                .map_err(ix)?
                .map(|g| *g.value()));
        }
        let tiles = table(&self.tx, &self.tiles, TILES)?;
        let per_tile = TILE_WIDTH >> level;
        let (tile, j) = (index / per_tile, index % per_tile);
        let found = with_tile(tiles, tile, |t| {
            if (j + 1) << level > tile_count(t) {
                return None;
            }
            let at = tile_node_offset(level, j);
            t[at..at + 32].try_into().ok()
        })?;
        Ok(found.flatten())
    }

    /// The entry holding a unique key (index form).
    pub(crate) fn key_holder(&self, key: &KeyHash) -> Result<Option<u64>> {
        let t = table(&self.tx, &self.keys, KEYS)?;
        Ok(t.get(key).map_err(ix)?.map(|g| g.value()))
    }

    /// One device's indexed entries, in order: `(seq, leaf)`.
    pub(crate) fn device_entries(&self, rot: &RotBytes) -> Result<Vec<(u64, Hash)>> {
        let t = table(&self.tx, &self.devices, DEVICES)?;
        let mut out = Vec::new();
        let (lo, hi) = (device_key(rot, 0), device_key(rot, u64::MAX));
        for kv in t.range::<&DeviceKey>(&lo..=&hi).map_err(ix)? {
            let (k, v) = kv.map_err(ix)?;
            out.push((device_seq(k.value()), *v.value()));
        }
        Ok(out)
    }

    /// One device's last indexed entry: `(seq, leaf)`.
    pub(crate) fn device_last(&self, rot: &RotBytes) -> Result<Option<(u64, Hash)>> {
        let t = table(&self.tx, &self.devices, DEVICES)?;
        let (lo, hi) = (device_key(rot, 0), device_key(rot, u64::MAX));
        let last = t.range::<&DeviceKey>(&lo..=&hi).map_err(ix)?.next_back();
        match last {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.map_err(ix)?;
                Ok(Some((device_seq(k.value()), *v.value())))
            }
        }
    }
}

impl NodeReader for Snapshot {
    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        Snapshot::node(self, level, index)?
            .ok_or_else(|| Error::Index(format!("subtree ({level}, {index}) is not indexed")))
    }
}

impl Index {
    /// Opens (or creates) the index in the directory `dir`, with a redb
    /// cache of `cache_bytes`.
    ///
    /// # Errors
    /// [`Error::Io`] when the index is open already (the ledger is open
    /// elsewhere: the caller refuses); [`Error::Index`] when the directory
    /// holds anything else, or redb cannot open the file, or it is of
    /// another format (the caller rebuilds).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Index(format!("creating {}: {e}", dir.display())))?;
        let listing = std::fs::read_dir(dir)
            .map_err(|e| Error::Index(format!("listing {}: {e}", dir.display())))?;
        for e in listing {
            let e = e.map_err(|e| Error::Index(format!("listing {}: {e}", dir.display())))?;
            if e.file_name() != INDEX_FILE {
                return Err(Error::Index(format!(
                    "{} holds {:?}: an index of another format",
                    dir.display(),
                    e.file_name()
                )));
            }
        }
        let db = match Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(dir.join(INDEX_FILE))
        {
            Ok(db) => db,
            // redb holds an exclusive lock on the file while it is open:
            // the ledger's guard against two writers on one directory.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::io(
                    format!(
                        "opening the index in {}: the ledger is open already (another process, \
                         or another handle in this one)",
                        dir.display()
                    ),
                    std::io::Error::from(std::io::ErrorKind::WouldBlock),
                ))
            }
            Err(e) => return Err(ix(e)),
        };
        let tx = db.begin_write().map_err(ix)?;
        {
            let mut meta = tx.open_table(META).map_err(ix)?;
            let format = meta.get("format").map_err(ix)?.map(|g| g.value().to_vec());
            match format {
                None => {
                    if meta.len().map_err(ix)? > 0 || has_data(&tx)? {
                        return Err(Error::Index("index has data but no format marker".into()));
                    }
                    meta.insert("format", &INDEX_FORMAT.to_le_bytes()[..])
                        .map_err(ix)?;
                }
                Some(v) if v == INDEX_FORMAT.to_le_bytes() => {}
                Some(_) => return Err(Error::Index("index format is not this version's".into())),
            }
        }
        // Every table exists from here on, so readers can open them.
        tx.open_table(TILES).map_err(ix)?;
        tx.open_table(NODES).map_err(ix)?;
        tx.open_table(KEYS).map_err(ix)?;
        tx.open_table(QUOTAS).map_err(ix)?;
        tx.open_table(DEVICES).map_err(ix)?;
        tx.open_table(CHECKPOINTS).map_err(ix)?;
        tx.commit().map_err(ix)?;
        Ok(Self {
            db: Arc::new(db),
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    fn read(&self) -> Result<ReadTransaction> {
        self.db.begin_read().map_err(ix)
    }

    /// A snapshot for several lookups.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot::new(self.read()?))
    }

    /// The watermark, or `None` for a fresh index.
    pub(crate) fn state(&self) -> Result<Option<IndexState>> {
        self.snapshot()?.state()
    }

    /// Where entry `seq` is stored, if indexed.
    pub(crate) fn location(&self, seq: u64) -> Result<Option<Location>> {
        self.snapshot()?.location(seq)
    }

    /// A stored subtree hash, if indexed.
    pub(crate) fn node(&self, level: u8, index: u64) -> Result<Option<Hash>> {
        self.snapshot()?.node(level, index)
    }

    /// The entry holding a unique key (index form).
    pub(crate) fn key_holder(&self, key: &KeyHash) -> Result<Option<u64>> {
        self.snapshot()?.key_holder(key)
    }

    /// One device's last indexed entry.
    pub(crate) fn device_last(&self, rot: &RotBytes) -> Result<Option<(u64, Hash)>> {
        self.snapshot()?.device_last(rot)
    }

    /// One device's indexed entries, in order: `(seq, leaf)`.
    pub(crate) fn device_entries(&self, rot: &RotBytes) -> Result<Vec<(u64, Hash)>> {
        self.snapshot()?.device_entries(rot)
    }

    /// Every quota counter.
    pub(crate) fn quotas(&self) -> Result<std::collections::HashMap<String, u64>> {
        let tx = self.read()?;
        let t = tx.open_table(QUOTAS).map_err(ix)?;
        let mut out = std::collections::HashMap::new();
        for kv in t.iter().map_err(ix)? {
            let (k, v) = kv.map_err(ix)?;
            out.insert(k.value().to_string(), v.value());
        }
        Ok(out)
    }

    /// One quota counter.
    pub(crate) fn quotas_one(&self, counter: &str) -> Result<u64> {
        let tx = self.read()?;
        let t = tx.open_table(QUOTAS).map_err(ix)?;
        Ok(t.get(counter).map_err(ix)?.map_or(0, |g| g.value()))
    }

    /// The indexed checkpoint with the largest size.
    pub(crate) fn latest_checkpoint(&self) -> Result<Option<IndexedCheckpoint>> {
        let tx = self.read()?;
        let t = tx.open_table(CHECKPOINTS).map_err(ix)?;
        let Some((k, v)) = t.last().map_err(ix)? else {
            return Ok(None);
        };
        let v = v.value();
        if v.len() < 32 {
            return Err(Error::Index("checkpoint value is malformed".into()));
        }
        let root: Hash = v[..32].try_into().unwrap_or_default();
        let note = String::from_utf8(v[32..].to_vec())
            .map_err(|_| Error::Index("checkpoint note is not UTF-8".into()))?;
        Ok(Some(IndexedCheckpoint {
            size: k.value(),
            root,
            note,
        }))
    }

    /// Applies a chunk of consecutive entries and checkpoints and moves the
    /// watermark to `state`, in one atomic transaction (visible at once,
    /// durable at the next [`Index::flush`]).
    ///
    /// # Errors
    /// [`Error::Index`].
    pub(crate) fn apply<'e>(
        &self,
        entries: impl IntoIterator<Item = &'e IndexedEntry>,
        checkpoints: &[IndexedCheckpoint],
        state: &IndexState,
    ) -> Result<()> {
        self.write(Durability::None, |tx| {
            apply_in(tx, entries, checkpoints, state)
        })
    }

    /// Makes every applied chunk durable: one durable redb commit (an
    /// `fdatasync` of the index file), which also lets redb reuse the pages
    /// that the chunks since the last one freed.
    ///
    /// # Errors
    /// [`Error::Index`].
    pub(crate) fn flush(&self) -> Result<()> {
        self.write(Durability::Immediate, |_| Ok(()))
    }

    /// One write transaction; a durable one also saves redb's allocator
    /// state (quick repair: no full scan on the next open after a crash).
    fn write(
        &self,
        durability: Durability,
        body: impl FnOnce(&WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Index(
                "an earlier index commit failed; reopen the ledger".into(),
            ));
        }
        let result = (|| {
            let mut tx = self.db.begin_write().map_err(ix)?;
            let durable = !matches!(durability, Durability::None);
            tx.set_durability(durability);
            tx.set_quick_repair(durable);
            body(&tx)?;
            tx.commit().map_err(ix)
        })();
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }
}

/// Whether any data table holds a record (an index without a format
/// marker must be empty).
fn has_data(tx: &WriteTransaction) -> Result<bool> {
    Ok(tx
        .list_tables()
        .map_err(ix)?
        .any(|t| t.name() != META.name()))
}

fn apply_in<'e>(
    tx: &WriteTransaction,
    entries: impl IntoIterator<Item = &'e IndexedEntry>,
    checkpoints: &[IndexedCheckpoint],
    state: &IndexState,
) -> Result<()> {
    let mut tiles_t = tx.open_table(TILES).map_err(ix)?;
    let mut nodes_t = tx.open_table(NODES).map_err(ix)?;
    let mut keys_t = tx.open_table(KEYS).map_err(ix)?;
    let mut devices_t = tx.open_table(DEVICES).map_err(ix)?;
    let mut quotas: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    // The tile being filled: (number, bytes).
    let mut tile: Option<(u64, Vec<u8>)> = None;
    let mut keys: Vec<(KeyHash, u64)> = Vec::new();
    let mut devices: Vec<(DeviceKey, Hash)> = Vec::new();
    for e in entries {
        let tile_no = e.seq / TILE_WIDTH;
        if tile.as_ref().map(|(n, _)| *n) != Some(tile_no) {
            if let Some((n, t)) = tile.take() {
                tiles_t.insert(n, &t[..]).map_err(ix)?;
            }
            let t = match tiles_t.get(tile_no).map_err(ix)? {
                Some(g) if g.value().len() == TILE_LEN => g.value().to_vec(),
                Some(_) => return Err(Error::Index(format!("tile {tile_no} is malformed"))),
                None => vec![0u8; TILE_LEN],
            };
            tile = Some((tile_no, t));
        }
        let Some((_, t)) = tile.as_mut() else {
            continue;
        };
        let j = e.seq % TILE_WIDTH;
        if tile_count(t) != j {
            return Err(Error::Index(format!(
                "entry {} does not follow the indexed entries of its tile",
                e.seq
            )));
        }
        let at = TILE_LOCATIONS + j as usize * LOCATION_LEN;
        t[at..at + 8].copy_from_slice(&e.location.segment.to_le_bytes());
        t[at + 8..at + 16].copy_from_slice(&e.location.offset.to_le_bytes());
        t[at + 16..at + 20].copy_from_slice(&e.location.len.to_le_bytes());
        t[0..2].copy_from_slice(&((j + 1) as u16).to_le_bytes());
        let leaf_at = tile_node_offset(0, j);
        t[leaf_at..leaf_at + 32].copy_from_slice(&e.leaf);
        for (level, hash) in (1u8..).zip(e.nodes.iter()) {
            let index = e.seq >> level;
            if level > TILE_HEIGHT {
                nodes_t.insert(node_key(level, index), hash).map_err(ix)?;
            } else {
                let per_tile = TILE_WIDTH >> level;
                let off = tile_node_offset(level, index % per_tile);
                t[off..off + 32].copy_from_slice(hash);
            }
        }
        keys.extend(e.keys.iter().map(|k| (*k, e.seq)));
        if let Some(q) = &e.quota {
            *quotas.entry(q).or_default() += 1;
        }
        if let Some(rot) = &e.rot {
            devices.push((device_key(rot, e.seq), e.leaf));
        }
    }
    if let Some((n, t)) = tile.take() {
        tiles_t.insert(n, &t[..]).map_err(ix)?;
    }
    // In key order: neighbouring inserts share the B-tree path.
    keys.sort_unstable();
    for (k, seq) in &keys {
        keys_t.insert(k, seq).map_err(ix)?;
    }
    devices.sort_unstable_by_key(|d| d.0);
    for (k, leaf) in &devices {
        devices_t.insert(k, leaf).map_err(ix)?;
    }
    let mut quotas_t = tx.open_table(QUOTAS).map_err(ix)?;
    for (counter, add) in quotas {
        let now = quotas_t.get(counter).map_err(ix)?.map_or(0, |g| g.value());
        quotas_t.insert(counter, now + add).map_err(ix)?;
    }
    let mut checkpoints_t = tx.open_table(CHECKPOINTS).map_err(ix)?;
    for c in checkpoints {
        let mut v = c.root.to_vec();
        v.extend_from_slice(c.note.as_bytes());
        checkpoints_t.insert(c.size, &v[..]).map_err(ix)?;
    }
    let mut meta = tx.open_table(META).map_err(ix)?;
    meta.insert("state", &state.encode()[..]).map_err(ix)?;
    Ok(())
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

    fn key_of(seq: u64) -> KeyHash {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&seq.to_le_bytes());
        k
    }

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
                let nodes = push_leaf(&mut frontier, leaf);
                mem.push(leaf);
                entries.push(IndexedEntry {
                    seq,
                    location: Location {
                        segment: 0,
                        offset: seq * 10,
                        len: 10,
                    },
                    leaf,
                    nodes,
                    rot: Some([(seq % 3) as u8; 32]),
                    keys: Box::new([key_of(seq)]),
                    quota: Some("q".into()),
                    time_ms: 0,
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
        assert_eq!(index.key_holder(&key_of(77)).unwrap(), Some(77));
        assert_eq!(index.quotas().unwrap().get("q"), Some(&seq));
        assert_eq!(Frontier::from_reader(&index, seq).unwrap(), frontier);
        // Every stored node, tiles and above, is the tree's.
        for level in 0..12u8 {
            for i in 0..(seq >> level) {
                assert_eq!(index.node(level, i).unwrap(), mem.node(level, i).ok());
            }
        }
        let device: Vec<u64> = (0..seq).filter(|s| s % 3 == 1).collect();
        let listed = index.device_entries(&[1; 32]).unwrap();
        assert_eq!(listed.iter().map(|d| d.0).collect::<Vec<_>>(), device);
        assert_eq!(listed[4].1, mem.node(0, device[4]).unwrap());
        assert_eq!(index.device_last(&[1; 32]).unwrap(), listed.last().copied());
        assert_eq!(index.device_last(&[7; 32]).unwrap(), None);
    }
}
