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
//! 2. The index is opened; when it cannot be opened (damaged, or of
//!    another format), it is deleted and rebuilt. The planned cut is checked against what is known to be
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
//! `tail.rs` plans and checks the cut (steps 1–2), `replay.rs` replays
//! records (step 3); this file ties them together and self-checks.
//!
//! When steps 3–4 fail on an existing index, the index is rebuilt from the
//! segments once and the checks run again; if they still fail the ledger
//! refuses to open with an [`Error::Corrupt`] saying what and where.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use super::{LedgerConfig, LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use crate::checkpoint::{self, LedgerKey, SignedCheckpoint};
use crate::entry;
use crate::error::{Error, Result};
use crate::format::{self, CheckedRecord, Record, HEADER_LEN};
use crate::index::{Index, IndexState, Location, Position};
use crate::merkle::{self, chain_head, leaf_hash, Frontier, Hash, GENESIS_HEAD};
use crate::segments::{self, segment_name, End};
use crate::storage::Storage;

mod replay;
mod tail;

use replay::Replayer;
use tail::{plan_tail, protected};

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

/// Opens the index, rebuilding it when it cannot be opened. Returns whether
/// it is fresh (empty).
fn open_index(path: &Path, cache: u64) -> Result<(Index, bool)> {
    let existed = path.exists();
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| Index::open(path, cache)));
    match opened {
        Ok(Ok(index)) => {
            let fresh = !existed || index.state()?.is_none();
            Ok((index, fresh))
        }
        // The ledger is open elsewhere: rebuilding would make two writers.
        Ok(Err(e @ Error::Io { .. })) => Err(e),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the index cannot be opened; rebuilding it from the segments");
            Ok((wipe_and_open(path, cache)?, true))
        }
        Err(_) => {
            tracing::warn!("opening the index panicked; rebuilding it from the segments");
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
        // The last segment is in memory already; the others are read a
        // window at a time.
        let len = if id == tail.id {
            tail.bytes.len() as u64
        } else {
            segments::checked_len(storage, id)?
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
        if start > len {
            return Err(Failure::Refuse(Error::corrupt(
                &name,
                format!(
                    "the index resumes at offset {start} but the segment is only {len} bytes: \
                     segment data was lost"
                ),
            )));
        }
        let record = |offset, rec: CheckedRecord<'_>| rp.record(id, &name, offset, rec);
        let end = if id == tail.id {
            segments::walk(&tail.bytes, start as usize, record)?
        } else {
            segments::walk_file(storage, &name, len, start, record)?
        };
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
