//! Reading what the verifier checks: the segment files and
//! `checkpoint.latest` of a data directory, or one export file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::checker::{Check, Checker};
use super::{Options, Problem};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::format::{self, Record, UnverifiedRecord, EXPORT_MAGIC, HEADER_LEN, RECORD_HEADER_LEN};
use crate::ledger::{LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use crate::segments::{self, End};
use crate::storage::Storage;

pub(super) fn key_from_dir(storage: &dyn Storage, opts: &Options) -> Result<Vec<u8>> {
    if let Some(k) = &opts.key {
        return Ok(k.clone());
    }
    let pem = storage
        .read_all(PUBLIC_KEY_FILE)
        .map_err(|e| Error::io(format!("reading {PUBLIC_KEY_FILE}"), e))?
        .ok_or_else(|| {
            Error::NotFound(format!("{PUBLIC_KEY_FILE}: give the ledger key explicitly"))
        })?;
    checkpoint::spki_from_pem(&String::from_utf8_lossy(&pem))
}

/// Walks a data directory through the checker.
pub(super) fn walk_dir(
    storage: &dyn Storage,
    opts: &Options,
    c: &mut Checker<'_>,
) -> Result<Check> {
    let segs = segments::list(storage)?;
    // Anchors first: each is checked when the pass reaches its size, so
    // the tree need not be kept.
    if let Some(note) = storage
        .read_all(LATEST_CHECKPOINT_FILE)
        .map_err(|e| Error::io(format!("reading {LATEST_CHECKPOINT_FILE}"), e))?
    {
        let note = String::from_utf8_lossy(&note).into_owned();
        if let Err(p) = c.anchor(LATEST_CHECKPOINT_FILE, &note) {
            return Ok(Err(p));
        }
    }
    if let Err(p) = add_anchors(opts, c) {
        return Ok(Err(p));
    }
    if segs.is_empty() {
        return Ok(Err(Problem {
            seq: None,
            location: "ledger directory".into(),
            what: "no segment files".into(),
        }));
    }
    for (i, &id) in segs.iter().enumerate() {
        let name = segments::segment_name(id);
        // One window of the segment in memory at a time, not the segment.
        let len = match storage.len(&name) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {name}"), e)),
        };
        let mut header = vec![0u8; HEADER_LEN.min(usize::try_from(len).unwrap_or(HEADER_LEN))];
        storage
            .read_at(&name, 0, &mut header)
            .map_err(|e| Error::io(format!("reading {name}"), e))?;
        if let Err(e) = segments::check_header(&name, id, &header) {
            return Ok(Err(Problem {
                seq: None,
                location: name,
                what: e.to_string(),
            }));
        }
        if id != c.next {
            return Ok(Err(Problem {
                seq: Some(c.next),
                location: name,
                what: format!("the segment starts at entry {id}: entries are missing or repeated"),
            }));
        }
        let mut found: Option<Problem> = None;
        let walked = segments::walk_file(storage, &name, len, HEADER_LEN as u64, |offset, rec| {
            if found.is_some() {
                return Ok(());
            }
            let location = format!("{name} offset {offset}");
            let result = match rec.parse() {
                Err(what) => Err(Problem {
                    seq: Some(c.next),
                    location: location.clone(),
                    what,
                }),
                Ok(Record::Entry(e)) => c.entry(&location, e),
                Ok(Record::Checkpoint(cp)) => c.checkpoint(&location, cp),
                Ok(_) => Err(Problem {
                    seq: None,
                    location: location.clone(),
                    what: "an export record inside a segment".into(),
                }),
            };
            found = result.err();
            Ok(())
        })?;
        if let Some(p) = found {
            return Ok(Err(p));
        }
        if let End::Bad(bad) = walked {
            let what = if i + 1 == segs.len() && bad.is_torn_tail() {
                format!(
                    "{}: the last record is incomplete or damaged (a torn write is cut when the \
                     ledger next opens; otherwise the entry was truncated)",
                    bad.reason
                )
            } else if i + 1 == segs.len() {
                bad.describe()
            } else {
                format!(
                    "{}: a damaged record inside a closed segment",
                    bad.describe()
                )
            };
            return Ok(Err(Problem {
                seq: Some(c.next),
                location: format!("{name} offset {}", bad.offset),
                what,
            }));
        }
    }
    Ok(c.end_of_entries())
}

/// Reads up to `buf.len()` bytes; returns how many (fewer only at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Walks an export file through the checker.
pub(super) fn walk_export(path: &Path, opts: &Options, c: &mut Checker<'_>) -> Result<Check> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let r = &mut r;
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let name = path.display().to_string();
    let at = |offset: u64| format!("{name} offset {offset}");
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(r, &mut header).map_err(io)?;
    if let Err(what) = format::parse_header(&header[..n], EXPORT_MAGIC) {
        return Ok(Err(Problem {
            seq: None,
            location: at(0),
            what,
        }));
    }
    if let Err(p) = add_anchors(opts, c) {
        return Ok(Err(p));
    }
    let mut offset = HEADER_LEN as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut first = true;
    let mut trailer = None;
    loop {
        buf.resize(RECORD_HEADER_LEN, 0);
        let n = read_full(r, &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let mut total = n;
        if n == RECORD_HEADER_LEN {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len <= format::MAX_BODY_LEN {
                buf.resize(RECORD_HEADER_LEN + len, 0);
                total += read_full(r, &mut buf[RECORD_HEADER_LEN..]).map_err(io)?;
            }
        }
        let rec = match UnverifiedRecord::new(&buf[..total]).check() {
            Ok(rec) => rec,
            Err(e) => {
                return Ok(Err(Problem {
                    seq: Some(c.next),
                    location: at(offset),
                    what: e.to_string(),
                }))
            }
        };
        if trailer.is_some() {
            return Ok(Err(Problem {
                seq: None,
                location: at(offset),
                what: "records after the trailer".into(),
            }));
        }
        let location = at(offset);
        let parsed = match rec.parse() {
            Ok(p) => p,
            Err(what) => {
                return Ok(Err(Problem {
                    seq: Some(c.next),
                    location,
                    what,
                }))
            }
        };
        let result = match parsed {
            Record::Key(k) if first => {
                if k.spki != c.spki {
                    Err(Problem {
                        seq: None,
                        location,
                        what: "the export was made for another ledger key than the one given"
                            .into(),
                    })
                } else {
                    if c.origin.is_none() {
                        c.origin = Some(k.origin);
                    }
                    Ok(())
                }
            }
            _ if first => Err(Problem {
                seq: None,
                location,
                what: "the export does not start with its key record".into(),
            }),
            Record::Entry(e) => c.entry(&location, e),
            Record::Checkpoint(cp) => c.checkpoint(&location, cp),
            Record::Trailer(t) => {
                trailer = Some(t);
                Ok(())
            }
            Record::Key(_) => Err(Problem {
                seq: None,
                location,
                what: "a second key record".into(),
            }),
        };
        if let Err(p) = result {
            return Ok(Err(p));
        }
        first = false;
        offset += total as u64;
    }
    let Some(t) = trailer else {
        return Ok(Err(Problem {
            seq: None,
            location: at(offset),
            what: "the export has no trailer: it was truncated".into(),
        }));
    };
    if t.entries != c.next || t.checkpoints != c.checkpoints || t.head != c.head {
        return Ok(Err(Problem {
            seq: None,
            location: "export trailer".into(),
            what: format!(
                "the trailer records {} entries and {} checkpoints, the export holds {} and {} (or \
                 a different chain head)",
                t.entries, t.checkpoints, c.next, c.checkpoints
            ),
        }));
    }
    Ok(c.end_of_entries())
}

/// Registers the auditor's anchors.
pub(super) fn add_anchors(opts: &Options, c: &mut Checker<'_>) -> Check {
    for (i, note) in opts.anchors.iter().enumerate() {
        c.anchor(&format!("anchor checkpoint #{}", i + 1), note)?;
    }
    Ok(())
}
