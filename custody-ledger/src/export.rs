//! Exports: one self-contained file an auditor can verify offline with the
//! ledger's public key (`trustline ledger verify --export FILE --key PEM`).
//!
//! Layout (details in [`crate::format`]): a header with magic `TLLEDEXP`,
//! a key record (origin and public key), every entry and checkpoint record
//! of the segments verbatim and in order, and a trailer record with the
//! entry and checkpoint counts and the final chain head, so that a
//! truncated export is caught. Exporting a running ledger is safe: a record
//! still being written at the end of the last segment is left out.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::format::{self, Record, Trailer, EXPORT_MAGIC, HEADER_LEN};
use crate::ledger::{LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use crate::merkle::{chain_head, leaf_hash, Hash, GENESIS_HEAD};
use crate::segments::{self, End};
use crate::storage::Storage;

/// What was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries written.
    pub entries: u64,
    /// Checkpoint records written.
    pub checkpoints: u64,
    /// Chain head after the last entry.
    pub head: Hash,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes an export of the ledger in `storage` to `out` (through a
/// temporary file, synced and renamed into place).
///
/// # Errors
/// [`Error::NotFound`] when the ledger has no key or no checkpoint yet;
/// [`Error::Corrupt`] for a damaged record before the end; [`Error::Io`].
pub fn export(storage: &dyn Storage, out: &Path) -> Result<ExportSummary> {
    let pem = storage
        .read_all(PUBLIC_KEY_FILE)
        .map_err(|e| Error::io(format!("reading {PUBLIC_KEY_FILE}"), e))?
        .ok_or_else(|| Error::NotFound(format!("{PUBLIC_KEY_FILE}: not a ledger directory")))?;
    let spki = checkpoint::spki_from_pem(&String::from_utf8_lossy(&pem))?;
    let latest = storage
        .read_all(LATEST_CHECKPOINT_FILE)
        .map_err(|e| Error::io(format!("reading {LATEST_CHECKPOINT_FILE}"), e))?
        .ok_or_else(|| {
            Error::NotFound("the ledger has no checkpoint yet: nothing signed to export".into())
        })?;
    let latest = String::from_utf8_lossy(&latest).into_owned();
    let origin = latest.lines().next().unwrap_or_default().to_string();
    checkpoint::open(&latest, &spki, Some(&origin))?;

    let tmp = out.with_extension("partial");
    let file =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    let mut head_buf = format::encode_header(EXPORT_MAGIC, 0).to_vec();
    format::encode_key(&origin, &spki, &mut head_buf);
    w.write_all(&head_buf).map_err(io)?;
    let mut bytes = head_buf.len() as u64;
    let mut trailer = Trailer {
        entries: 0,
        checkpoints: 0,
        head: GENESIS_HEAD,
    };
    let segs = segments::list(storage)?;
    for (i, &id) in segs.iter().enumerate() {
        let seg = segments::read(storage, id)?;
        let name = segments::segment_name(id);
        let mut write_err = None;
        let end = segments::walk(&seg, HEADER_LEN, |offset, rec| {
            let start = offset as usize;
            match rec
                .parse()
                .map_err(|e| Error::corrupt(format!("{name} offset {offset}"), e))?
            {
                Record::Entry(e) => {
                    trailer.entries += 1;
                    trailer.head = chain_head(&trailer.head, &leaf_hash(&e.entry));
                }
                Record::Checkpoint(_) => trailer.checkpoints += 1,
                _ => {
                    return Err(Error::corrupt(
                        format!("{name} offset {offset}"),
                        "an export record in a segment",
                    ))
                }
            }
            if let Err(e) = w.write_all(&seg[start..start + rec.total_len]) {
                write_err.get_or_insert(e);
            }
            bytes += rec.total_len as u64;
            Ok(())
        })?;
        if let Some(e) = write_err {
            return Err(io(e));
        }
        if let End::Bad(bad) = end {
            // A record still being written at the end of a running ledger's
            // last segment is left out; anything else is damage.
            if i + 1 != segs.len() || !bad.is_torn_tail() {
                return Err(Error::corrupt(
                    format!("{name} offset {}", bad.offset),
                    bad.describe(),
                ));
            }
        }
    }
    let mut t = Vec::new();
    format::encode_trailer(&trailer, &mut t);
    w.write_all(&t).map_err(io)?;
    bytes += t.len() as u64;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(format!("renaming to {}", out.display()), e))?;
    Ok(ExportSummary {
        entries: trailer.entries,
        checkpoints: trailer.checkpoints,
        head: trailer.head,
        bytes,
    })
}
