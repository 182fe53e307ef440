//! Segment files: names, listing, and walking their records with torn-tail
//! detection. The byte layout is in [`crate::format`].

use crate::error::{Error, Result};
use crate::format::{self, CheckedRecord, FrameError, UnverifiedRecord, HEADER_LEN, SEGMENT_MAGIC};
use crate::storage::Storage;

/// Suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// How far from the end of the last segment a bad record may be and still
/// count as a torn write. The writer never has more than one batch
/// unsynced, and a batch stops growing at [`MAX_BATCH_BYTES`] plus one
/// entry; a bad record further from the end than this sits under data that
/// a successful `fdatasync` made durable, so it is corruption, not a tear.
pub(crate) const TORN_WINDOW: u64 = 2 * MAX_BATCH_BYTES + format::MAX_BODY_LEN as u64;

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
    /// The bytes from `offset` on are not a record, and they are close
    /// enough to the end to be a torn write (see [`TORN_WINDOW`]).
    Torn {
        /// Where the first bad record starts.
        offset: u64,
        /// Why it is not a record.
        reason: FrameError,
    },
}

/// Walks the records of `bytes` from `start`, calling `each(offset,
/// record)` for each in order.
///
/// # Errors
/// [`Error::Corrupt`] for a bad record too far from the end to be a torn
/// write; whatever `each` returns.
pub(crate) fn walk(
    name: &str,
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
                if remaining > TORN_WINDOW {
                    return Err(Error::corrupt(
                        format!("{name} offset {at}"),
                        format!("{reason}, and {remaining} bytes follow: not a torn write"),
                    ));
                }
                return Ok(End::Torn {
                    offset: at as u64,
                    reason,
                });
            }
        }
    }
    Ok(End::Clean)
}
