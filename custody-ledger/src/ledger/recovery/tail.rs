//! Planning what recovery may cut from the end of the ledger, and checking
//! the plan against what is known to be acknowledged before anything on
//! disk changes (issue 12, item 11; the rule is in docs/ledger-format.md).

use super::super::LATEST_CHECKPOINT_FILE;
use crate::checkpoint::{self, LedgerKey};
use crate::error::{Error, Result};
use crate::format::{self, Record, HEADER_LEN, SEGMENT_MAGIC};
use crate::index::{Index, Position};
use crate::segments::{self, segment_name, End};
use crate::storage::Storage;

/// The last segment, and what recovery would cut from the end of the
/// ledger. Nothing is changed on disk until [`TailPlan::apply`], which runs
/// only after the cut was checked against the index watermark and the
/// latest checkpoint.
pub(super) struct TailPlan {
    pub(super) id: u64,
    /// The segment's bytes, already without the planned cut.
    pub(super) bytes: Vec<u8>,
    /// Entry records kept in it.
    pub(super) entries: u64,
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
    pub(super) fn check_cut(&self, protect: &Protected) -> Result<()> {
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
    pub(super) fn apply(&self, storage: &dyn Storage) -> Result<()> {
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
pub(super) struct Protected {
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
pub(super) fn plan_tail(storage: &dyn Storage, segs: &mut Vec<u64>) -> Result<TailPlan> {
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
pub(super) fn protected(
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
