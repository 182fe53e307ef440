//! Segment files: names, listing, and walking their records, saying where
//! and why a walk met bytes that are not a record and whether they can be a
//! torn write. The byte layout is in [`crate::format`]; what recovery does
//! with a bad record is in `ledger::recovery`.

use crate::error::{Error, Result};
use crate::format::{self, CheckedRecord, FrameError, UnverifiedRecord, HEADER_LEN, SEGMENT_MAGIC};
use crate::storage::Storage;

/// Suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// The most bytes one group commit can leave unsynced: the writer has at
/// most one batch written and not yet synced (it syncs a batch before it
/// acknowledges it and before it writes the next one), and a batch stops
/// growing once it holds [`MAX_BATCH_BYTES`], so it is at most that plus one
/// record. A bad record further from the end of the last segment than this
/// sits under data that a successful `fdatasync` made durable: it is
/// corruption, never a torn write.
pub(crate) const TORN_WINDOW: u64 =
    MAX_BATCH_BYTES + (format::RECORD_HEADER_LEN + format::MAX_BODY_LEN) as u64;

/// The writer starts a new batch once this many bytes are queued.
pub(crate) const MAX_BATCH_BYTES: u64 = 4 << 20;

/// The file name of the segment whose first entry is `first_seq`.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The `first_seq` a segment file name encodes.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments present, by `first_seq`, in order.
///
/// # Errors
/// [`Error::Io`].
pub(crate) fn list(storage: &dyn Storage) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = storage
        .list()
        .map_err(|e| Error::io("listing the ledger directory", e))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Reads a whole segment and checks its header.
///
/// # Errors
/// [`Error::Io`]; [`Error::Corrupt`] for a bad header.
pub(crate) fn read(storage: &dyn Storage, id: u64) -> Result<Vec<u8>> {
    let name = segment_name(id);
    let bytes = storage
        .read_all(&name)
        .map_err(|e| Error::io(format!("reading {name}"), e))?
        .ok_or_else(|| Error::corrupt(&name, "segment file vanished"))?;
    check_header(&name, id, &bytes)?;
    Ok(bytes)
}

/// Checks a segment header against the name's `first_seq`.
pub(crate) fn check_header(name: &str, id: u64, bytes: &[u8]) -> Result<()> {
    let first = format::parse_header(bytes, SEGMENT_MAGIC)
        .map_err(|what| Error::corrupt(format!("{name} header"), what))?;
    if first != id {
        return Err(Error::corrupt(
            format!("{name} header"),
            format!("header says the first entry is {first}, the name says {id}"),
        ));
    }
    Ok(())
}

/// How a walk over a segment's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The last record ends exactly at the end of the bytes.
    Clean,
    /// The bytes from some offset on are not a record.
    Bad(BadRecord),
}

/// The first place in a segment where the bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRecord {
    /// Where the bad record starts.
    pub(crate) offset: u64,
    /// Why it is not a record.
    pub(crate) reason: FrameError,
    /// Bytes from `offset` to the end of the segment.
    pub(crate) remaining: u64,
    /// Where the first valid record after it starts, when one does and the
    /// bad record is within [`TORN_WINDOW`] of the end (further in, the
    /// answer does not matter: it is corruption either way).
    pub(crate) next_valid: Option<u64>,
}

impl BadRecord {
    /// Whether this can be the torn tail of the last batch: within one
    /// batch of the end, and with no valid record after it (a torn write
    /// leaves missing, short, zeroed or garbage bytes at the very end; valid
    /// records after bad bytes mean the bad bytes were once durable).
    pub(crate) fn is_torn_tail(&self) -> bool {
        self.remaining <= TORN_WINDOW && self.next_valid.is_none()
    }

    /// Why it is or is not a torn write, in words.
    pub(crate) fn describe(&self) -> String {
        match self.next_valid {
            _ if self.remaining > TORN_WINDOW => format!(
                "{}, and {} bytes follow: more than one batch could leave unsynced, so this is \
                 corruption of durable data, not a torn write",
                self.reason, self.remaining
            ),
            Some(at) => format!(
                "{}, and a valid record follows at offset {at}: bytes before a durable record \
                 were damaged, so this is corruption, not a torn write",
                self.reason
            ),
            None => format!("{} ({} bytes to the end)", self.reason, self.remaining),
        }
    }
}

/// The offset of the first valid record (framing, CRC and body) that starts
/// after `from`, if any.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<u64> {
    (from + 1..bytes.len())
        .find(|&at| {
            UnverifiedRecord::new(&bytes[at..])
                .check()
                .is_ok_and(|r| r.parse().is_ok())
        })
        .map(|at| at as u64)
}

/// Walks the records of `bytes` from `start`, calling `each(offset,
/// record)` for each in order, and says how the walk ended. Whether a bad
/// record may be cut is the caller's decision ([`BadRecord::is_torn_tail`]
/// is necessary, not sufficient).
///
/// # Errors
/// Whatever `each` returns.
pub(crate) fn walk(
    bytes: &[u8],
    start: usize,
    mut each: impl FnMut(u64, CheckedRecord<'_>) -> Result<()>,
) -> Result<End> {
    let mut at = start.max(HEADER_LEN);
    while at < bytes.len() {
        match UnverifiedRecord::new(&bytes[at..]).check() {
            Ok(rec) => {
                let len = rec.total_len;
                each(at as u64, rec)?;
                at += len;
            }
            Err(reason) => {
                let remaining = (bytes.len() - at) as u64;
                let next_valid = if remaining <= TORN_WINDOW {
                    next_valid_record(bytes, at)
                } else {
                    None
                };
                return Ok(End::Bad(BadRecord {
                    offset: at as u64,
                    reason,
                    remaining,
                    next_valid,
                }));
            }
        }
    }
    Ok(End::Clean)
}
