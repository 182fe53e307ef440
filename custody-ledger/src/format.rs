//! The on-disk format of segment files and exports, byte by byte.
//!
//! All integers are little-endian. CRC-32 is the IEEE / ISO-HDLC polynomial
//! (`crc32fast`), the one zlib, gzip and PNG use.
//!
//! # Segment file
//!
//! The ledger's source of truth is a directory of segment files named
//! `<first_seq>.seg`, `first_seq` written as 20 decimal digits, so that names
//! sort in sequence order. Each is a [header](#header) followed by
//! [records](#record), appended only. A segment is closed when it reaches the
//! configured size and the next batch starts a new file.
//!
//! ## Header
//!
//! ```text
//! offset size field
//!      0    8 magic: "TLLEDSEG" (segment) or "TLLEDEXP" (export)
//!      8    2 format version, u16 = 1
//!     10    2 reserved, zero
//!     12    8 first_seq, u64: sequence number of the first entry record in
//!             this file (always 0 in an export)
//!     20    8 reserved, zero
//!     28    4 CRC-32 of bytes [0, 28)
//! ```
//!
//! ## Record
//!
//! ```text
//! offset size field
//!      0    4 len, u32: length of the body (not counting these 9 bytes)
//!      4    4 CRC-32 of bytes [0, 4) ‖ [8, 9 + len): covers len, kind, body
//!      8    1 kind: 1 entry, 2 checkpoint, 3 export trailer, 4 export key
//!      9  len body
//! ```
//!
//! `len` is at most [`MAX_BODY_LEN`]; a record with a larger `len`, an
//! unknown kind or a wrong CRC is not a record.
//!
//! ### Entry body (kind 1)
//!
//! ```text
//! offset size field
//!      0    8 seq, u64 (equals the `seq` field inside the entry)
//!      8    … the `trustline.v1.LedgerEntry`, exactly as hashed, to the end
//!             of the body
//! ```
//!
//! The entry carries the constraints its append declared
//! (`LedgerEntry.unique_keys`, `LedgerEntry.quota`), so they are covered by
//! the leaf hash, the chain and the signed checkpoints, and an offline
//! verifier recomputes uniqueness and quota counts from signed data.
//!
//! ### Checkpoint body (kind 2)
//!
//! ```text
//! offset size field
//!      0    8 tree size, u64
//!      8   32 root hash
//!     40    … the C2SP signed note, UTF-8, to the end of the body
//! ```
//!
//! A checkpoint record is written after the entries it covers, in the same
//! group commit as whatever entries arrived meanwhile.
//!
//! ### Export key body (kind 4), first record of an export
//!
//! ```text
//! offset size field
//!      0    2 origin_len, u16
//!      2    n origin (UTF-8): the checkpoint origin and key name
//!    2+n    … SubjectPublicKeyInfo DER of the checkpoint key
//! ```
//!
//! ### Export trailer body (kind 3), last record of an export
//!
//! ```text
//! offset size field
//!      0    8 entries, u64
//!      8    8 checkpoint records, u64
//!     16   32 chain head after the last entry
//! ```
//!
//! # Export file
//!
//! A header with magic `TLLEDEXP`, one key record, then every entry and
//! checkpoint record of the ledger in order (the segment records verbatim),
//! then one trailer record. An export missing its trailer was truncated.
//!
//! # What the media is assumed to guarantee
//!
//! - Bytes written before a successful `fdatasync` of their file are read
//!   back as written. The CRC detects accidental corruption anyway; it is no
//!   defence against deliberate edits, which the hash chain, the Merkle tree
//!   and the signed checkpoints catch.
//! - Bytes written after the last successful `fdatasync` may be missing, cut
//!   short, or replaced by zeros or garbage (a torn tail). Nothing earlier is
//!   affected. No sector-write atomicity is assumed.
//! - A file whose directory was synced after it was created stays in the
//!   directory. The ledger syncs the directory after creating a segment and
//!   syncs a new segment's header before writing records into it.

use crate::entry::MAX_ENTRY_LEN;
use crate::merkle::Hash;

/// Magic of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TLLEDSEG";
/// Magic of an export file.
pub const EXPORT_MAGIC: [u8; 8] = *b"TLLEDEXP";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Length of a file header.
pub const HEADER_LEN: usize = 32;
/// Offset of the magic in the header.
pub const HEADER_MAGIC: usize = 0;
/// Offset of the version in the header.
pub const HEADER_VERSION: usize = 8;
/// Offset of `first_seq` in the header.
pub const HEADER_FIRST_SEQ: usize = 12;
/// Offset of the header CRC.
pub const HEADER_CRC: usize = 28;

/// Length of a record's framing (len, crc, kind).
pub const RECORD_HEADER_LEN: usize = 9;
/// Offset of `len` in a record.
pub const RECORD_LEN: usize = 0;
/// Offset of the CRC in a record.
pub const RECORD_CRC: usize = 4;
/// Offset of the kind byte in a record.
pub const RECORD_KIND: usize = 8;
/// Offset of the body in a record.
pub const RECORD_BODY: usize = 9;
/// Largest record body.
pub const MAX_BODY_LEN: usize = MAX_ENTRY_LEN + 64 * 1024;

/// Record kind: a ledger entry.
pub const KIND_ENTRY: u8 = 1;
/// Record kind: a signed checkpoint.
pub const KIND_CHECKPOINT: u8 = 2;
/// Record kind: the trailer of an export.
pub const KIND_TRAILER: u8 = 3;
/// Record kind: the ledger key at the start of an export.
pub const KIND_KEY: u8 = 4;

/// Offset of `seq` in an entry body.
pub const ENTRY_SEQ: usize = 0;
/// Offset of the entry bytes in an entry body.
pub const ENTRY_BYTES: usize = 8;
/// Offset of the tree size in a checkpoint body.
pub const CHECKPOINT_SIZE: usize = 0;
/// Offset of the root hash in a checkpoint body.
pub const CHECKPOINT_ROOT: usize = 8;
/// Offset of the note in a checkpoint body.
pub const CHECKPOINT_NOTE: usize = 40;
/// Length of a trailer body.
pub const TRAILER_LEN: usize = 48;

/// Encodes a file header.
pub fn encode_header(magic: [u8; 8], first_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[HEADER_MAGIC..HEADER_MAGIC + 8].copy_from_slice(&magic);
    h[HEADER_VERSION..HEADER_VERSION + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[HEADER_FIRST_SEQ..HEADER_FIRST_SEQ + 8].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_CRC]);
    h[HEADER_CRC..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header; returns its `first_seq`.
///
/// # Errors
/// A description of what is wrong.
pub fn parse_header(bytes: &[u8], magic: [u8; 8]) -> Result<u64, String> {
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(format!(
            "header is {} bytes, shorter than {HEADER_LEN}",
            bytes.len()
        ));
    };
    if crc32fast::hash(&h[..HEADER_CRC]) != u32_at(h, HEADER_CRC) {
        return Err("header checksum does not match".into());
    }
    if h[HEADER_MAGIC..HEADER_MAGIC + 8] != magic {
        return Err(format!(
            "wrong magic {:?}, expected {:?}",
            String::from_utf8_lossy(&h[..8]),
            String::from_utf8_lossy(&magic)
        ));
    }
    let version = u16::from_le_bytes([h[HEADER_VERSION], h[HEADER_VERSION + 1]]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not {FORMAT_VERSION}"));
    }
    Ok(u64_at(h, HEADER_FIRST_SEQ))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends one framed record to `out`.
fn frame(kind: u8, body_parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = body_parts.iter().map(|p| p.len()).sum();
    debug_assert!(len <= MAX_BODY_LEN);
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    for p in body_parts {
        out.extend_from_slice(p);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + RECORD_CRC]);
    crc.update(&out[start + RECORD_KIND..]);
    let crc = crc.finalize();
    out[start + RECORD_CRC..start + RECORD_KIND].copy_from_slice(&crc.to_le_bytes());
}

/// Appends an entry record to `out`.
pub fn encode_entry(seq: u64, entry: &[u8], out: &mut Vec<u8>) {
    frame(KIND_ENTRY, &[&seq.to_le_bytes(), entry], out);
}

/// Appends a checkpoint record to `out`.
pub fn encode_checkpoint(size: u64, root: &Hash, note: &str, out: &mut Vec<u8>) {
    frame(
        KIND_CHECKPOINT,
        &[&size.to_le_bytes(), root, note.as_bytes()],
        out,
    );
}

/// Appends an export key record to `out`.
pub fn encode_key(origin: &str, spki: &[u8], out: &mut Vec<u8>) {
    frame(
        KIND_KEY,
        &[
            &(origin.len() as u16).to_le_bytes(),
            origin.as_bytes(),
            spki,
        ],
        out,
    );
}

/// Appends an export trailer record to `out`.
pub fn encode_trailer(trailer: &Trailer, out: &mut Vec<u8>) {
    frame(
        KIND_TRAILER,
        &[
            &trailer.entries.to_le_bytes(),
            &trailer.checkpoints.to_le_bytes(),
            &trailer.head,
        ],
        out,
    );
}

/// Bytes read from a file at a position where a record may start. Nothing
/// about them is trusted until [`UnverifiedRecord::check`] succeeds.
#[derive(Debug, Clone, Copy)]
pub struct UnverifiedRecord<'a> {
    bytes: &'a [u8],
}

/// Why the bytes at a position are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the framing or its `len` needs.
    Short {
        /// Bytes the record would need.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// `len` is larger than [`MAX_BODY_LEN`].
    TooLong(u32),
    /// The CRC does not match.
    BadChecksum,
    /// The kind byte is not one this version knows.
    UnknownKind(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short { needed, available } => {
                write!(f, "record needs {needed} bytes but only {available} remain")
            }
            FrameError::TooLong(len) => write!(f, "record length {len} exceeds {MAX_BODY_LEN}"),
            FrameError::BadChecksum => f.write_str("record checksum does not match"),
            FrameError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl<'a> UnverifiedRecord<'a> {
    /// The bytes from a record's start to the end of what was read.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Checks the framing and the CRC.
    ///
    /// # Errors
    /// [`FrameError`] saying why these bytes are not a record.
    pub fn check(self) -> Result<CheckedRecord<'a>, FrameError> {
        let b = self.bytes;
        if b.len() < RECORD_HEADER_LEN {
            return Err(FrameError::Short {
                needed: RECORD_HEADER_LEN,
                available: b.len(),
            });
        }
        let len = u32_at(b, RECORD_LEN);
        if len as usize > MAX_BODY_LEN {
            return Err(FrameError::TooLong(len));
        }
        let total = RECORD_HEADER_LEN + len as usize;
        if b.len() < total {
            return Err(FrameError::Short {
                needed: total,
                available: b.len(),
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b[RECORD_LEN..RECORD_CRC]);
        crc.update(&b[RECORD_KIND..total]);
        if crc.finalize() != u32_at(b, RECORD_CRC) {
            return Err(FrameError::BadChecksum);
        }
        let kind = b[RECORD_KIND];
        if !matches!(kind, KIND_ENTRY | KIND_CHECKPOINT | KIND_TRAILER | KIND_KEY) {
            return Err(FrameError::UnknownKind(kind));
        }
        Ok(CheckedRecord {
            kind,
            body: &b[RECORD_BODY..total],
            total_len: total,
        })
    }
}

/// A record whose framing and CRC are right; its body is not yet parsed.
#[derive(Debug, Clone, Copy)]
pub struct CheckedRecord<'a> {
    /// The kind byte.
    pub kind: u8,
    /// The body.
    pub body: &'a [u8],
    /// Bytes the whole record takes, framing included.
    pub total_len: usize,
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A ledger entry.
    Entry(EntryRecord),
    /// A signed checkpoint.
    Checkpoint(CheckpointRecord),
    /// The end of an export.
    Trailer(Trailer),
    /// The ledger key at the start of an export.
    Key(KeyRecord),
}

/// An entry record. `entry` has passed the CRC but has not been decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The sequence number in the record framing.
    pub seq: u64,
    /// The exact `LedgerEntry` bytes.
    pub entry: Vec<u8>,
}

/// A checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// The tree size it claims.
    pub size: u64,
    /// The root it claims.
    pub root: Hash,
    /// The signed note, not yet verified.
    pub note: String,
}

/// An export trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Entries in the export.
    pub entries: u64,
    /// Checkpoint records in the export.
    pub checkpoints: u64,
    /// Chain head after the last entry.
    pub head: Hash,
}

/// An export key record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The checkpoint origin and key name.
    pub origin: String,
    /// SubjectPublicKeyInfo DER of the checkpoint key.
    pub spki: Vec<u8>,
}

/// A cursor over a body that reports truncation instead of panicking.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                format!(
                    "body ends at {} but a field needs bytes up to {}",
                    self.b.len(),
                    self.at + n
                )
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "text field is not UTF-8".to_string())
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at..];
        self.at = self.b.len();
        s
    }
    fn finish(&self) -> Result<(), String> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the last field",
                self.b.len() - self.at
            ))
        }
    }
}

impl CheckedRecord<'_> {
    /// Parses the body by kind.
    ///
    /// # Errors
    /// A description of the first malformed field.
    pub fn parse(&self) -> Result<Record, String> {
        let mut r = Reader {
            b: self.body,
            at: 0,
        };
        match self.kind {
            KIND_ENTRY => {
                let seq = r.u64()?;
                let entry = r.rest();
                if entry.len() > MAX_ENTRY_LEN {
                    return Err(format!(
                        "entry of {} bytes exceeds {MAX_ENTRY_LEN}",
                        entry.len()
                    ));
                }
                Ok(Record::Entry(EntryRecord {
                    seq,
                    entry: entry.to_vec(),
                }))
            }
            KIND_CHECKPOINT => {
                let size = r.u64()?;
                let mut root = [0u8; 32];
                root.copy_from_slice(r.take(32)?);
                let note = String::from_utf8(r.rest().to_vec())
                    .map_err(|_| "checkpoint note is not UTF-8".to_string())?;
                Ok(Record::Checkpoint(CheckpointRecord { size, root, note }))
            }
            KIND_TRAILER => {
                let entries = r.u64()?;
                let checkpoints = r.u64()?;
                let mut head = [0u8; 32];
                head.copy_from_slice(r.take(32)?);
                r.finish()?;
                Ok(Record::Trailer(Trailer {
                    entries,
                    checkpoints,
                    head,
                }))
            }
            KIND_KEY => {
                let n = usize::from(r.u16()?);
                let origin = r.utf8(n)?;
                let spki = r.rest().to_vec();
                Ok(Record::Key(KeyRecord { origin, spki }))
            }
            other => Err(format!("unknown record kind {other}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_every_flipped_byte_is_refused() {
        let h = encode_header(SEGMENT_MAGIC, 4242);
        assert_eq!(parse_header(&h, SEGMENT_MAGIC), Ok(4242));
        assert!(parse_header(&h, EXPORT_MAGIC).is_err());
        for i in 0..HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(parse_header(&bad, SEGMENT_MAGIC).is_err(), "byte {i}");
        }
        assert!(parse_header(&h[..31], SEGMENT_MAGIC).is_err());
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode_entry(7, b"entry bytes", &mut buf);
        let first = buf.len();
        encode_checkpoint(8, &[3; 32], "note\n", &mut buf);
        let rec = UnverifiedRecord::new(&buf).check().expect("entry frame");
        assert_eq!(rec.total_len, first);
        assert_eq!(
            rec.parse(),
            Ok(Record::Entry(EntryRecord {
                seq: 7,
                entry: b"entry bytes".to_vec(),
            }))
        );
        let rec = UnverifiedRecord::new(&buf[first..])
            .check()
            .expect("checkpoint frame");
        assert_eq!(
            rec.parse(),
            Ok(Record::Checkpoint(CheckpointRecord {
                size: 8,
                root: [3; 32],
                note: "note\n".into()
            }))
        );
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_of_a_record_is_refused() {
        let mut buf = Vec::new();
        encode_entry(7, b"entry bytes", &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(UnverifiedRecord::new(&bad).check().is_err(), "byte {i}");
        }
        for cut in 0..buf.len() {
            assert!(
                UnverifiedRecord::new(&buf[..cut]).check().is_err(),
                "cut {cut}"
            );
        }
    }
}
