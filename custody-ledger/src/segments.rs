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

/// Checks a segment's header and returns the segment's length.
///
/// # Errors
/// [`Error::Io`]; [`Error::Corrupt`] for a bad header.
pub(crate) fn checked_len(storage: &dyn Storage, id: u64) -> Result<u64> {
    let name = segment_name(id);
    let io = |e| Error::io(format!("reading {name}"), e);
    let len = storage.len(&name).map_err(io)?;
    let mut header = vec![0u8; HEADER_LEN.min(usize::try_from(len).unwrap_or(HEADER_LEN))];
    storage.read_at(&name, 0, &mut header).map_err(io)?;
    check_header(&name, id, &header)?;
    Ok(len)
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
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len()).find(|&at| {
        UnverifiedRecord::new(&bytes[at..])
            .check()
            .is_ok_and(|r| r.parse().is_ok())
    })
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
    let start = start.max(HEADER_LEN).min(bytes.len());
    walk_tail(&bytes[start..], start as u64, &mut each)
}

/// Walks `bytes`, the end of a segment from file offset `base` on.
fn walk_tail(
    bytes: &[u8],
    base: u64,
    each: &mut dyn FnMut(u64, CheckedRecord<'_>) -> Result<()>,
) -> Result<End> {
    let mut at = 0usize;
    while at < bytes.len() {
        match UnverifiedRecord::new(&bytes[at..]).check() {
            Ok(rec) => {
                let len = rec.total_len;
                each(base + at as u64, rec)?;
                at += len;
            }
            Err(reason) => {
                let remaining = (bytes.len() - at) as u64;
                let next_valid = if remaining <= TORN_WINDOW {
                    next_valid_record(bytes, at).map(|n| base + n as u64)
                } else {
                    None
                };
                return Ok(End::Bad(BadRecord {
                    offset: base + at as u64,
                    reason,
                    remaining,
                    next_valid,
                }));
            }
        }
    }
    Ok(End::Clean)
}

/// Bytes read at a time by [`walk_file`]: more than the torn window and
/// than the largest record.
const WALK_WINDOW: u64 = 8 << 20;

/// [`walk`] over a segment file read a window at a time (memory: one
/// window, not the segment), from file offset `start` (at least the
/// header's end) to `len`, its length. It ends exactly as [`walk`] over
/// the whole file would.
///
/// # Errors
/// [`Error::Io`]; whatever `each` returns.
pub(crate) fn walk_file(
    storage: &dyn Storage,
    name: &str,
    len: u64,
    start: u64,
    mut each: impl FnMut(u64, CheckedRecord<'_>) -> Result<()>,
) -> Result<End> {
    const _: () = assert!(
        WALK_WINDOW > TORN_WINDOW
            && WALK_WINDOW > (format::RECORD_HEADER_LEN + format::MAX_BODY_LEN) as u64
    );
    let read = |from: u64, n: u64, buf: &mut Vec<u8>| -> Result<()> {
        buf.resize(n as usize, 0);
        storage
            .read_at(name, from, buf)
            .map_err(|e| Error::io(format!("reading {name}"), e))
    };
    let mut buf = Vec::new();
    let mut pos = start.max(HEADER_LEN as u64).min(len);
    loop {
        if len - pos <= WALK_WINDOW {
            // The end of the file: exactly what `walk` sees there,
            // including the search for a valid record after a bad one.
            read(pos, len - pos, &mut buf)?;
            return walk_tail(&buf, pos, &mut each);
        }
        read(pos, WALK_WINDOW, &mut buf)?;
        let mut at = 0usize;
        loop {
            match UnverifiedRecord::new(&buf[at..]).check() {
                Ok(rec) => {
                    let n = rec.total_len;
                    each(pos + at as u64, rec)?;
                    at += n;
                }
                Err(reason) if at == 0 => {
                    // A whole window holds any record: this one is bad,
                    // and more than the torn window follows it.
                    return Ok(End::Bad(BadRecord {
                        offset: pos,
                        reason,
                        remaining: len - pos,
                        next_valid: None,
                    }));
                }
                // A record across the window's end: read on from it.
                Err(_) => break,
            }
        }
        pos += at as u64;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    /// A segment of about 22 MiB (three windows), record offsets included.
    fn segment() -> (Vec<u8>, Vec<u64>) {
        let mut bytes = format::encode_header(SEGMENT_MAGIC, 0).to_vec();
        let mut offsets = Vec::new();
        let mut seq = 0u64;
        while bytes.len() < 22 << 20 {
            offsets.push(bytes.len() as u64);
            // Sizes vary so that records straddle the window boundaries.
            let len = 1 + (seq as usize * 7919) % (300 << 10);
            let entry: Vec<u8> = (0..len).map(|i| (i as u64 ^ seq) as u8).collect();
            format::encode_entry(seq, &entry, &mut bytes);
            seq += 1;
        }
        (bytes, offsets)
    }

    /// Offsets visited and the end, by `walk` over the whole bytes and by
    /// `walk_file` over the same bytes as a file.
    fn both(bytes: &[u8]) -> [(Vec<u64>, End); 2] {
        let storage = SimStorage::new();
        storage.create("s").unwrap();
        storage.append("s", bytes).unwrap();
        let mut seen = Vec::new();
        let end = walk(bytes, HEADER_LEN, |o, _| {
            seen.push(o);
            Ok(())
        })
        .unwrap();
        let mut seen_file = Vec::new();
        let end_file = walk_file(&storage, "s", bytes.len() as u64, 0, |o, _| {
            seen_file.push(o);
            Ok(())
        })
        .unwrap();
        [(seen, end), (seen_file, end_file)]
    }

    #[test]
    fn walking_a_file_by_windows_ends_as_walking_it_whole() {
        let (clean, offsets) = segment();
        let [whole, windows] = both(&clean);
        assert_eq!(whole.0, offsets);
        assert_eq!(whole, windows);
        assert_eq!(whole.1, End::Clean);
        let len = clean.len();
        // Damage far from the end, across a window boundary, within the
        // torn window (with valid records after it), and a torn tail.
        for at in [
            100,
            (8 << 20) - 3,
            8 << 20,
            (16 << 20) + 5,
            len - (3 << 20),
            len - 10,
        ] {
            let mut bad = clean.clone();
            bad[at] ^= 0x40;
            let [whole, windows] = both(&bad);
            assert!(matches!(whole.1, End::Bad(_)), "damage at {at}");
            assert_eq!(whole, windows, "damage at {at}");
        }
        let [whole, windows] = both(&clean[..len - 7]);
        assert!(matches!(&whole.1, End::Bad(b) if b.is_torn_tail()));
        assert_eq!(whole, windows);
    }
}
