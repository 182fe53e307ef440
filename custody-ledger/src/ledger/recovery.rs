//! Opening a ledger: cut the torn tail, bring the index up to date (or
//! rebuild it), and check the tail against the last checkpoint before
//! serving anything.
//!
//! 1. The last segment is read whole and a cut is *planned*, never made
//!    yet. A bad record is a torn write (never acknowledged: its batch's
//!    `fdatasync` did not return) only when it lies within one batch of the
//!    end ([`segments::TORN_WINDOW`]: the writer has at most one batch
//!    unsynced) and no valid record follows it. Anywhere else it is
//!    corruption: open refuses, naming file, offset and seq.
//! 2. The index is opened; when sled cannot open it, it is deleted and
//!    rebuilt. The planned cut is checked against what is known to be
//!    acknowledged: the index watermark (entries and resume position), the
//!    index's last checkpoint record and `checkpoint.latest`. A cut that
//!    would remove an entry or checkpoint record either covers is refused
//!    and nothing on disk changes; only then is the cut made. An index that
//!    covers more entries than the segments hold means segment data was
//!    lost: refused.
//! 3. Records past the index watermark are replayed into the index. Each
//!    entry passes the same per-entry checks as the offline verifier
//!    (`entry::check_stored`: canonical encoding, seq, known kind,
//!    well-formed `rot_id`, no key declared twice), and the hash chain,
//!    device chains, unique keys and quotas are checked.
//! 4. Self-check: the last checkpoint (from the segments, and from
//!    `checkpoint.latest`, which must not be ahead of them) verifies with the
//!    ledger key, its root matches the tree, and the last `tail_check`
//!    entries before it and every entry after it are re-read from the
//!    segments, re-checked with `entry::check_stored` and re-hashed against
//!    the index and the chain.
//!
//! When steps 3–4 fail on an existing index, the index is rebuilt from the
//! segments once and the checks run again; if they still fail the ledger
//! refuses to open with an [`Error::Corrupt`] saying what and where.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use super::{LedgerConfig, LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use crate::checkpoint::{self, LedgerKey, SignedCheckpoint};
use crate::entry::{self, Constraints};
use crate::error::{Error, Result};
use crate::format::{self, CheckedRecord, Record, HEADER_LEN, SEGMENT_MAGIC};
use crate::index::{Index, IndexState, IndexedCheckpoint, IndexedEntry, Location, Position};
use crate::merkle::{self, chain_head, leaf_hash, Frontier, Hash, GENESIS_HEAD};
use crate::segments::{self, segment_name, End};
use crate::storage::Storage;

/// Entries replayed per index batch.
const REPLAY_CHUNK: usize = 8192;

/// What the writer, indexer and readers start from.
pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) index_state: IndexState,
    pub(crate) size: u64,
    pub(crate) head: Hash,
    pub(crate) last_time_ms: i64,
    pub(crate) frontier: Frontier,
    pub(crate) segment: u64,
    pub(crate) segment_len: u64,
    pub(crate) latest: Option<SignedCheckpoint>,
    pub(crate) quotas: HashMap<String, u64>,
}

/// Writes the public key file on first open; refuses a signer with a
/// different key later.
///
/// # Errors
/// [`Error::KeyMismatch`], [`Error::Io`], [`Error::Checkpoint`].
pub(crate) fn check_public_key(storage: &dyn Storage, key: &LedgerKey) -> Result<()> {
    match storage
        .read_all(PUBLIC_KEY_FILE)
        .map_err(|e| Error::io(format!("reading {PUBLIC_KEY_FILE}"), e))?
    {
        Some(pem) => {
            let text = String::from_utf8(pem)
                .map_err(|_| Error::Checkpoint(format!("{PUBLIC_KEY_FILE} is not text")))?;
            if checkpoint::spki_from_pem(&text)? != key.spki() {
                return Err(Error::KeyMismatch {
                    path: PUBLIC_KEY_FILE.to_string(),
                });
            }
            Ok(())
        }
        None => storage
            .replace(PUBLIC_KEY_FILE, key.public_key_pem().as_bytes())
            .map_err(|e| Error::io(format!("writing {PUBLIC_KEY_FILE}"), e)),
    }
}

/// The last segment, and what recovery would cut from the end of the
/// ledger. Nothing is changed on disk until [`TailPlan::apply`], which runs
/// only after the cut was checked against the index watermark and the
/// latest checkpoint.
struct TailPlan {
    id: u64,
    /// The segment's bytes, already without the planned cut.
    bytes: Vec<u8>,
    /// Entry records kept in it.
    entries: u64,
    /// The largest checkpoint size among the records kept in it.
    checkpoint_kept: Option<u64>,
    /// The torn tail to cut, if any.
    cut: Option<Cut>,
    /// Later segments whose creation was torn (header never durable, no
    /// record): removed by `apply`.
    torn_creations: Vec<u64>,
    /// No segment existed: segment 0 is created by `apply`.
    create_first: bool,
}

/// A planned cut of the last segment.
struct Cut {
    /// Where the bad record starts; the segment is cut to this length.
    offset: u64,
    /// The bytes cut.
    len: u64,
    /// Why the bytes there are not a record.
    reason: String,
}

impl TailPlan {
    /// Where a cut starts, for messages: file, offset and the first seq it
    /// would remove.
    fn cut_location(&self, cut: &Cut) -> String {
        format!(
            "{} offset {} (entry {})",
            segment_name(self.id),
            cut.offset,
            self.id + self.entries
        )
    }

    /// Refuses a cut that would remove anything known to be durable and
    /// acknowledged: entries or records the index covers (its watermark),
    /// or entries and the checkpoint record that a signed checkpoint covers
    /// (`checkpoint.latest` and the index's last checkpoint record). Since
    /// the writer acknowledges nothing before its batch is synced, the
    /// index and the published checkpoints only ever cover synced bytes.
    fn check_cut(&self, protect: &Protected) -> Result<()> {
        let Some(cut) = &self.cut else {
            return Ok(());
        };
        let kept = self.id + self.entries;
        let refuse = |why: String| {
            Err(Error::corrupt(
                self.cut_location(cut),
                format!(
                    "{}; it looks like a torn write, but {why}, so the bytes were durable and \
                     acknowledged: refusing to open and leaving every file as it is (restore \
                     the segment from a copy or an export)",
                    cut.reason
                ),
            ))
        };
        if protect.indexed_entries > kept {
            return refuse(format!(
                "the index already covers {} entries and the cut would leave {kept}",
                protect.indexed_entries
            ));
        }
        if protect.resume.segment > self.id
            || (protect.resume.segment == self.id && protect.resume.offset > cut.offset)
        {
            return refuse(format!(
                "the index has already read records up to {} offset {}",
                segment_name(protect.resume.segment),
                protect.resume.offset
            ));
        }
        if let Some((size, source)) = &protect.checkpoint {
            if *size > kept {
                return refuse(format!(
                    "{source} covers {size} entries and the cut would leave {kept}"
                ));
            }
            let record_kept = self.checkpoint_kept.is_some_and(|k| k >= *size)
                || protect.checkpoint_before_tail >= *size;
            if *size > 0 && !record_kept {
                return refuse(format!(
                    "{source} covers {size} entries and the cut would remove the checkpoint \
                     record that was written before it was published"
                ));
            }
        }
        Ok(())
    }

    /// Makes the plan so on disk: removes segments whose creation was torn,
    /// creates segment 0 when none is left, cuts the torn tail.
    fn apply(&self, storage: &dyn Storage) -> Result<()> {
        for &id in &self.torn_creations {
            let name = segment_name(id);
            tracing::warn!(segment = %name, "removing a segment whose creation was torn");
            storage
                .remove(&name)
                .map_err(|e| Error::io(format!("removing {name}"), e))?;
        }
        if self.create_first {
            let name = segment_name(0);
            let header = format::encode_header(SEGMENT_MAGIC, 0);
            storage
                .create(&name)
                .and_then(|()| storage.sync_dir())
                .and_then(|()| storage.append(&name, &header))
                .and_then(|()| storage.sync(&name))
                .map_err(|e| Error::io(format!("creating {name}"), e))?;
        }
        if let Some(cut) = &self.cut {
            let name = segment_name(self.id);
            tracing::warn!(
                segment = %name,
                offset = cut.offset,
                cut = cut.len,
                reason = %cut.reason,
                "cutting a torn tail (an unacknowledged write)"
            );
            storage
                .truncate(&name, cut.offset)
                .map_err(|e| Error::io(format!("cutting the torn tail of {name}"), e))?;
        }
        Ok(())
    }
}

/// What a cut must never go below.
struct Protected {
    /// Entries the index covers (its watermark).
    indexed_entries: u64,
    /// Where the index's replay resumes: every record before it is indexed.
    resume: Position,
    /// The largest signed checkpoint known (size, where it was found).
    checkpoint: Option<(u64, &'static str)>,
    /// The largest checkpoint record in segments before the last one.
    checkpoint_before_tail: u64,
}

/// Finds the last segment and plans what to cut: segments whose creation
/// was torn, and a torn tail. Changes nothing.
///
/// # Errors
/// [`Error::Corrupt`] naming file, offset and seq when a bad record cannot
/// be a torn write (too far from the end, or valid records follow it).
fn plan_tail(storage: &dyn Storage, segs: &mut Vec<u64>) -> Result<TailPlan> {
    let mut torn_creations = Vec::new();
    loop {
        let Some(&id) = segs.last() else {
            segs.push(0);
            return Ok(TailPlan {
                id: 0,
                bytes: format::encode_header(SEGMENT_MAGIC, 0).to_vec(),
                entries: 0,
                checkpoint_kept: None,
                cut: None,
                torn_creations,
                create_first: true,
            });
        };
        let name = segment_name(id);
        let mut bytes = storage
            .read_all(&name)
            .map_err(|e| Error::io(format!("reading {name}"), e))?
            .unwrap_or_default();
        if format::parse_header(&bytes, SEGMENT_MAGIC).is_err() && torn_creation(&bytes) {
            // Created, but its header never became durable (records are
            // written only after it is synced): it holds nothing.
            torn_creations.push(id);
            segs.pop();
            continue;
        }
        segments::check_header(&name, id, &bytes)?;
        let mut entries = 0u64;
        let mut checkpoint_kept = None;
        let end = segments::walk(&bytes, HEADER_LEN, |_, rec| {
            if rec.kind == format::KIND_ENTRY {
                entries += 1;
            } else if rec.kind == format::KIND_CHECKPOINT {
                if let Ok(Record::Checkpoint(c)) = rec.parse() {
                    checkpoint_kept = checkpoint_kept.max(Some(c.size));
                }
            }
            Ok(())
        })?;
        let mut cut = None;
        if let End::Bad(bad) = end {
            let location = format!("{name} offset {} (entry {})", bad.offset, id + entries);
            if !bad.is_torn_tail() {
                return Err(Error::corrupt(location, bad.describe()));
            }
            cut = Some(Cut {
                offset: bad.offset,
                len: bad.remaining,
                reason: bad.describe(),
            });
            bytes.truncate(bad.offset as usize);
        }
        return Ok(TailPlan {
            id,
            bytes,
            entries,
            checkpoint_kept,
            cut,
            torn_creations,
            create_first: false,
        });
    }
}

/// What the cut must be checked against: the index watermark, the index's
/// last checkpoint record and `checkpoint.latest` (its signature checked
/// with the ledger key).
fn protected(
    storage: &dyn Storage,
    index: &Index,
    key: &LedgerKey,
    plan: &TailPlan,
    segs: &[u64],
) -> Result<Protected> {
    let state = index.state()?;
    let mut checkpoint: Option<(u64, &'static str)> = index
        .latest_checkpoint()?
        .map(|c| (c.size, "the index's last checkpoint record"));
    if plan.cut.is_some() {
        if let Some(bytes) = storage
            .read_all(LATEST_CHECKPOINT_FILE)
            .map_err(|e| Error::io(format!("reading {LATEST_CHECKPOINT_FILE}"), e))?
        {
            let cp = String::from_utf8(bytes)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|note| {
                    checkpoint::open(&note, key.spki(), Some(key.origin()))
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    Error::corrupt(
                        LATEST_CHECKPOINT_FILE,
                        format!("{e}: cannot tell whether the torn tail was acknowledged"),
                    )
                })?;
            if checkpoint.is_none_or(|(s, _)| cp.size > s) {
                checkpoint = Some((cp.size, LATEST_CHECKPOINT_FILE));
            }
        }
    }
    // Checkpoint records in earlier segments count as kept.
    let mut checkpoint_before_tail = 0;
    if let Some((size, _)) = checkpoint {
        if plan.checkpoint_kept.is_none_or(|k| k < size) && plan.cut.is_some() {
            for &id in segs.iter().filter(|&&id| id < plan.id).rev() {
                let bytes = segments::read(storage, id)?;
                segments::walk(&bytes, HEADER_LEN, |_, rec| {
                    if let Ok(Record::Checkpoint(c)) = rec.parse() {
                        checkpoint_before_tail = checkpoint_before_tail.max(c.size);
                    }
                    Ok(())
                })?;
                if checkpoint_before_tail > 0 {
                    break;
                }
            }
        }
    }
    Ok(Protected {
        indexed_entries: state.as_ref().map_or(0, |s| s.entries),
        resume: state.map_or(
            Position {
                segment: 0,
                offset: HEADER_LEN as u64,
            },
            |s| s.resume,
        ),
        checkpoint,
        checkpoint_before_tail,
    })
}

/// Whether a segment with a bad header is the remains of a creation torn
/// by a crash: short, and without a single valid record after the header.
fn torn_creation(bytes: &[u8]) -> bool {
    if bytes.len() as u64 > HEADER_LEN as u64 + segments::TORN_WINDOW {
        return false;
    }
    (HEADER_LEN.min(bytes.len())..bytes.len())
        .all(|at| format::UnverifiedRecord::new(&bytes[at..]).check().is_err())
}

/// Opens the index, rebuilding it when sled cannot open it. Returns whether
/// it is fresh (empty).
fn open_index(path: &Path, cache: u64) -> Result<(Index, bool)> {
    let existed = path.exists();
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| Index::open(path, cache)));
    match opened {
        Ok(Ok(index)) => {
            let fresh = !existed || index.state()?.is_none();
            Ok((index, fresh))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the index cannot be opened; rebuilding it from the segments");
            Ok((wipe_and_open(path, cache)?, true))
        }
        Err(_) => {
            tracing::warn!("sled panicked opening the index; rebuilding it from the segments");
            Ok((wipe_and_open(path, cache)?, true))
        }
    }
}

fn wipe_and_open(path: &Path, cache: u64) -> Result<Index> {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .map_err(|e| Error::io(format!("removing the index {}", path.display()), e))?;
    }
    Index::open(path, cache)
}

/// Recovers the ledger in `storage`.
///
/// # Errors
/// [`Error::Corrupt`] with what and where; [`Error::Io`].
pub(crate) fn recover(
    config: &LedgerConfig,
    storage: &dyn Storage,
    key: &LedgerKey,
) -> Result<Recovered> {
    let mut segs = segments::list(storage)?;
    let plan = plan_tail(storage, &mut segs)?;
    if segs.first() != Some(&0) {
        return Err(Error::corrupt(
            segment_name(segs.first().copied().unwrap_or(0)),
            "the first segment does not start at entry 0: earlier segments are missing",
        ));
    }
    let path = config.index_path();
    let (index, fresh) = open_index(&path, config.index_cache_bytes)?;
    // Nothing is cut below what the index or a signed checkpoint covers:
    // refuse first, change the files after.
    plan.check_cut(&protected(storage, &index, key, &plan, &segs)?)?;
    plan.apply(storage)?;
    let tail = Tail {
        id: plan.id,
        entries: plan.entries,
        bytes: plan.bytes,
    };
    match replay_and_check(config, storage, key, index, &segs, &tail) {
        Ok(r) => Ok(r),
        Err(Failure::Refuse(e)) => Err(e),
        Err(Failure::Suspect(e)) if fresh => Err(e),
        Err(Failure::Suspect(e)) => {
            tracing::warn!(error = %e, "the index disagrees with the segments; rebuilding it");
            let index = wipe_and_open(&path, config.index_cache_bytes)?;
            replay_and_check(config, storage, key, index, &segs, &tail).map_err(Failure::into_error)
        }
    }
}

/// The last segment after recovery: what replay reads.
struct Tail {
    id: u64,
    bytes: Vec<u8>,
    entries: u64,
}

/// Why recovery stopped.
enum Failure {
    /// The segments themselves are wrong, or the disk fails: rebuilding the
    /// index would not help (or would hide lost data).
    Refuse(Error),
    /// Something disagrees that a rebuilt index might fix.
    Suspect(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Refuse(e) | Failure::Suspect(e) => e,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { .. } => Failure::Refuse(e),
            other => Failure::Suspect(other),
        }
    }
}

fn replay_and_check(
    config: &LedgerConfig,
    storage: &dyn Storage,
    key: &LedgerKey,
    index: Index,
    segs: &[u64],
    tail: &Tail,
) -> std::result::Result<Recovered, Failure> {
    let size = tail.id + tail.entries;
    let state = index.state()?.unwrap_or(IndexState {
        entries: 0,
        resume: Position {
            segment: 0,
            offset: HEADER_LEN as u64,
        },
        head: GENESIS_HEAD,
        last_time_ms: 0,
    });
    if state.entries > size {
        return Err(Failure::Refuse(Error::corrupt(
            "segment files",
            format!(
                "the index covers {} entries but the segments hold only {size}: entries were \
                 removed from the segments (if the segments are known to be right, delete the \
                 index directory to rebuild it)",
                state.entries
            ),
        )));
    }
    let mut rp = Replayer::new(&index, key, state)?;
    let resume = rp.state.resume;
    for &id in segs.iter().filter(|&&id| id >= resume.segment) {
        let name = segment_name(id);
        let owned;
        let bytes: &[u8] = if id == tail.id {
            &tail.bytes
        } else {
            owned = segments::read(storage, id)?;
            &owned
        };
        let start = if id == resume.segment {
            resume.offset
        } else {
            if id != rp.next {
                return Err(Failure::Refuse(Error::corrupt(
                    &name,
                    format!(
                        "segment starts at entry {id} but the previous one ends before {}",
                        rp.next
                    ),
                )));
            }
            HEADER_LEN as u64
        };
        if start > bytes.len() as u64 {
            return Err(Failure::Refuse(Error::corrupt(
                &name,
                format!(
                    "the index resumes at offset {start} but the segment is only {} bytes: \
                     segment data was lost",
                    bytes.len()
                ),
            )));
        }
        let end = segments::walk(bytes, start as usize, |offset, rec| {
            rp.record(id, &name, offset, rec)
        })?;
        if let End::Bad(bad) = end {
            return Err(Failure::Refuse(Error::corrupt(
                format!("{name} offset {} (entry {})", bad.offset, rp.next),
                format!("{} (a segment other than the last)", bad.describe()),
            )));
        }
    }
    rp.flush()?;
    if rp.next != size {
        return Err(Failure::Refuse(Error::corrupt(
            "segment files",
            format!(
                "replay found {} entries where the segments hold {size}",
                rp.next
            ),
        )));
    }
    let state = rp.state.clone();
    let quotas = index.quotas()?;
    let latest = latest_checkpoint(storage, &index, key, size)?;
    self_check(config, storage, &index, latest.as_ref(), size, &state)?;
    let frontier = Frontier::from_reader(&index, size)?;
    Ok(Recovered {
        index_state: state.clone(),
        index,
        size,
        head: state.head,
        last_time_ms: state.last_time_ms,
        frontier,
        segment: tail.id,
        segment_len: tail.bytes.len() as u64,
        latest,
        quotas,
    })
}

/// The last checkpoint: the index's (from the segments), checked against
/// `checkpoint.latest`.
fn latest_checkpoint(
    storage: &dyn Storage,
    index: &Index,
    key: &LedgerKey,
    size: u64,
) -> std::result::Result<Option<SignedCheckpoint>, Failure> {
    let from_index = match index.latest_checkpoint()? {
        Some(c) => {
            let cp = checkpoint::open(&c.note, key.spki(), Some(key.origin())).map_err(|e| {
                Error::corrupt(
                    format!("checkpoint record of size {}", c.size),
                    e.to_string(),
                )
            })?;
            Some(cp)
        }
        None => None,
    };
    let file = storage
        .read_all(LATEST_CHECKPOINT_FILE)
        .map_err(|e| Error::io(format!("reading {LATEST_CHECKPOINT_FILE}"), e))?;
    if let Some(bytes) = file {
        let note = String::from_utf8(bytes)
            .map_err(|_| Failure::Refuse(Error::corrupt(LATEST_CHECKPOINT_FILE, "not UTF-8")))?;
        let cp = checkpoint::open(&note, key.spki(), Some(key.origin()))
            .map_err(|e| Failure::Refuse(Error::corrupt(LATEST_CHECKPOINT_FILE, e.to_string())))?;
        let have = from_index.as_ref().map_or(0, |c| c.size);
        if cp.size > have {
            return Err(Failure::Refuse(Error::corrupt(
                "segment files",
                format!(
                    "{LATEST_CHECKPOINT_FILE} covers {} entries but the segments' last checkpoint \
                     covers {have} and they hold {size} entries: the end of the ledger was cut off",
                    cp.size
                ),
            )));
        }
    }
    Ok(from_index)
}

/// Verifies the tail against the last checkpoint and the chain head.
fn self_check(
    config: &LedgerConfig,
    storage: &dyn Storage,
    index: &Index,
    latest: Option<&SignedCheckpoint>,
    size: u64,
    state: &IndexState,
) -> Result<()> {
    if let Some(cp) = latest {
        if cp.size > size {
            return Err(Error::corrupt(
                "segment files",
                format!(
                    "the last checkpoint covers {} entries but only {size} are stored",
                    cp.size
                ),
            ));
        }
        let root = merkle::root(index, cp.size)?;
        if root != cp.root {
            return Err(Error::corrupt(
                format!("tree size {}", cp.size),
                "the stored entries do not produce the last checkpoint's root hash",
            ));
        }
    }
    let covered = latest.map_or(size, |c| c.size);
    let start = covered.saturating_sub(config.tail_check);
    let mut head: Option<Hash> = None;
    for seq in start..size {
        let loc = index
            .location(seq)?
            .ok_or_else(|| Error::Index(format!("entry {seq} is not indexed")))?;
        let entry = read_entry_at(storage, seq, loc)?;
        let where_ = || {
            format!(
                "entry {seq} ({} offset {})",
                segment_name(loc.segment),
                loc.offset
            )
        };
        let decoded =
            entry::check_stored(seq, &entry).map_err(|what| Error::corrupt(where_(), what))?;
        let leaf = leaf_hash(&entry);
        if Some(leaf) != index.node(0, seq)? {
            return Err(Error::corrupt(
                where_(),
                "the entry's hash differs from the indexed leaf",
            ));
        }
        if let Some(h) = head {
            if decoded.prev_hash != h {
                return Err(Error::corrupt(where_(), "prev_hash does not match the hash chain: this entry or the one before it was altered"));
            }
        }
        head = Some(chain_head(
            &hash32(&decoded.prev_hash).unwrap_or_default(),
            &leaf,
        ));
    }
    if let Some(h) = head {
        if h != state.head {
            return Err(Error::corrupt(
                format!("entry {}", size - 1),
                "the chain head of the stored entries differs from the index's",
            ));
        }
    }
    Ok(())
}

fn hash32(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

/// Reads one entry record at a known location.
pub(crate) fn read_entry_at(storage: &dyn Storage, seq: u64, loc: Location) -> Result<Vec<u8>> {
    let name = segment_name(loc.segment);
    let mut buf = vec![0u8; loc.len as usize];
    storage
        .read_at(&name, loc.offset, &mut buf)
        .map_err(|e| Error::io(format!("reading entry {seq} from {name}"), e))?;
    let where_ = || format!("{name} offset {} (entry {seq})", loc.offset);
    let rec = format::UnverifiedRecord::new(&buf)
        .check()
        .map_err(|e| Error::corrupt(where_(), e.to_string()))?;
    match rec.parse().map_err(|e| Error::corrupt(where_(), e))? {
        Record::Entry(e) if e.seq == seq => Ok(e.entry),
        _ => Err(Error::corrupt(
            where_(),
            "the index points at another record",
        )),
    }
}

/// Replays records into the index, checking them as it goes.
struct Replayer<'a> {
    index: &'a Index,
    key: &'a LedgerKey,
    state: IndexState,
    next: u64,
    frontier: Frontier,
    entries: Vec<IndexedEntry>,
    checkpoints: Vec<IndexedCheckpoint>,
    keys: HashMap<Vec<u8>, u64>,
    quotas: HashMap<String, u64>,
    devices: HashMap<String, Hash>,
    last_checkpoint: u64,
}

impl<'a> Replayer<'a> {
    fn new(index: &'a Index, key: &'a LedgerKey, state: IndexState) -> Result<Self> {
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

    fn record(
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
        let expected_prev = if decoded.rot_id.is_empty() {
            None
        } else {
            match self.devices.get(&decoded.rot_id) {
                Some(h) => Some(*h),
                None => self.index.device_last(&decoded.rot_id)?.map(|(_, h)| h),
            }
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
        let mut nodes = Vec::with_capacity(2);
        self.frontier.push(leaf, &mut |n| nodes.push(n));
        for enc in &encoded {
            self.keys.insert(enc.clone(), seq);
        }
        if !decoded.rot_id.is_empty() {
            self.devices.insert(decoded.rot_id.clone(), leaf);
        }
        self.state.head = chain_head(&self.state.head, &leaf);
        self.state.last_time_ms = decoded.time_ms;
        self.entries.push(IndexedEntry {
            seq,
            location,
            nodes,
            rot_id: decoded.rot_id,
            leaf,
            keys: encoded,
            quota: constraints.quota.map(|q| q.counter),
        });
        self.next += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
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
