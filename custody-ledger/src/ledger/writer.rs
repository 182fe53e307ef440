//! The one group-commit writer.
//!
//! It takes every request queued since its last commit (up to a count and
//! byte budget), checks each append's constraints against the index, the
//! overlay and the batch itself, places the accepted entries, writes the
//! batch with one `write` and makes it durable with one `fdatasync`. Only
//! then are the appends acknowledged — and the refusals too, since a
//! refusal may name a holder from the same batch. The first write or sync
//! failure stops the ledger: nothing after it is known to be durable.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::overlay::OverlayCheckpoint;
use super::recovery::Recovered;
use super::{Shared, WriterMsg};
use crate::checkpoint::SignedCheckpoint;
use crate::entry::{Appended, Constraints, Draft, MAX_ENTRY_LEN};
use crate::error::{Error, Result};
use crate::format::{self, SEGMENT_MAGIC};
use crate::index::{
    push_leaf, rot_bytes, IndexedCheckpoint, IndexedEntry, KeyHash, Location, Position,
};
use crate::merkle::{chain_head, leaf_hash, Frontier, Hash};
use crate::segments::{segment_name, MAX_BATCH_BYTES};

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    next_seq: u64,
    head: Hash,
    last_time_ms: i64,
    frontier: Frontier,
    segment: u64,
    segment_len: u64,
    /// The batch buffer, kept between commits: a fresh 64 KiB allocation per
    /// commit made the allocator consolidate its free lists every time.
    buf: Vec<u8>,
    /// Quota counter names shared by the overlay entries that use them.
    counters: HashMap<String, Arc<str>>,
}

/// Counter names remembered for sharing, at most (then forgotten).
const MAX_COUNTERS: usize = 1024;

/// Initial capacity of the batch buffer.
const BATCH_BUFFER: usize = 64 * 1024;

/// An accepted append, written but not yet durable.
struct Staged {
    overlay: IndexedEntry,
    appended: Appended,
    quota: Option<String>,
}

/// What the batch decided for one request, sent once the batch is durable.
enum Outcome {
    Appended(oneshot::Sender<Result<Appended>>, Box<Staged>),
    Refused(oneshot::Sender<Result<Appended>>, Error),
    Checkpoint(oneshot::Sender<Result<()>>, OverlayCheckpoint),
}

/// Constraint state of the batch in flight.
#[derive(Default)]
struct BatchView {
    keys: HashMap<KeyHash, u64>,
    quotas: HashMap<String, u64>,
    devices: HashMap<crate::index::RotBytes, Hash>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, rec: &Recovered) -> Self {
        Self {
            shared,
            next_seq: rec.size,
            head: rec.head,
            last_time_ms: rec.last_time_ms,
            frontier: rec.frontier.clone(),
            segment: rec.segment,
            segment_len: rec.segment_len,
            buf: Vec::with_capacity(BATCH_BUFFER),
            counters: HashMap::new(),
        }
    }

    /// The thread body: commit batches until told to stop.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<WriterMsg>) {
        let max = self.shared.config.max_batch.max(1);
        let mut batch = Vec::with_capacity(max);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().position(|m| matches!(m, WriterMsg::Shutdown));
            let rest = stop.map(|i| batch.split_off(i)).unwrap_or_default();
            self.commit(std::mem::take(&mut batch));
            if stop.is_some() {
                for m in rest {
                    refuse(&self.shared, m, || Error::Closed);
                }
                break;
            }
        }
    }

    fn commit(&mut self, batch: Vec<WriterMsg>) {
        if let Err(e) = self.shared.check_running() {
            for m in batch {
                refuse(&self.shared, m, || clone_stop(&e));
            }
            return;
        }
        self.wait_for_room();
        if self.segment_len >= self.shared.config.segment_max_bytes {
            if let Err(e) = self.rotate() {
                self.fail(batch, e);
                return;
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut view = BatchView::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut leftover = Vec::new();
        for m in batch {
            if buf.len() as u64 >= MAX_BATCH_BYTES {
                leftover.push(m);
                continue;
            }
            match m {
                WriterMsg::Append {
                    draft,
                    constraints,
                    reply,
                } => match self.stage(&draft, &constraints, &mut buf, &mut view) {
                    Ok(s) => outcomes.push(Outcome::Appended(reply, Box::new(s))),
                    Err(e) => outcomes.push(Outcome::Refused(reply, e)),
                },
                WriterMsg::Checkpoint { checkpoint, reply } => {
                    let c = self.stage_checkpoint(&checkpoint, &mut buf);
                    outcomes.push(Outcome::Checkpoint(reply, c));
                }
                WriterMsg::Shutdown => {}
            }
        }
        if !buf.is_empty() {
            let name = segment_name(self.segment);
            let written = self
                .shared
                .storage
                .append(&name, &buf)
                .and_then(|()| self.shared.storage.sync(&name));
            if let Err(e) = written {
                let reason = format!("writing and syncing {name}: {e}");
                self.shared.stop(reason.clone());
                for o in outcomes {
                    match o {
                        Outcome::Appended(r, _) | Outcome::Refused(r, _) => {
                            answered(&self.shared);
                            let _ = r.send(Err(Error::Stopped(reason.clone())));
                        }
                        Outcome::Checkpoint(r, _) => {
                            let _ = r.send(Err(Error::Stopped(reason.clone())));
                        }
                    }
                }
                for m in leftover {
                    refuse(&self.shared, m, || Error::Stopped(reason.clone()));
                }
                return;
            }
            self.segment_len += buf.len() as u64;
        }
        if buf.capacity() <= MAX_BATCH_BYTES as usize * 2 {
            self.buf = buf;
        }
        self.publish(outcomes);
        if !leftover.is_empty() {
            self.commit(leftover);
        }
    }

    /// Makes the batch visible and acknowledges it. Runs only after the
    /// batch is durable.
    fn publish(&mut self, outcomes: Vec<Outcome>) {
        enum Reply {
            Append(oneshot::Sender<Result<Appended>>, Result<Appended>),
            Checkpoint(oneshot::Sender<Result<()>>),
        }
        let mut replies = Vec::with_capacity(outcomes.len());
        {
            let mut overlay = self.shared.overlay();
            let mut quotas = self.shared.quotas();
            for o in outcomes {
                match o {
                    Outcome::Appended(r, s) => {
                        let Staged {
                            overlay: entry,
                            appended,
                            quota,
                        } = *s;
                        overlay.push_entry(entry);
                        if let Some(q) = quota {
                            *quotas.entry(q).or_default() += 1;
                        }
                        replies.push(Reply::Append(r, Ok(appended)));
                    }
                    Outcome::Checkpoint(r, c) => {
                        overlay.push_checkpoint(c);
                        replies.push(Reply::Checkpoint(r));
                    }
                    Outcome::Refused(r, e) => replies.push(Reply::Append(r, Err(e))),
                }
            }
        }
        self.shared.overlay_changed.notify_all();
        for r in replies {
            match r {
                Reply::Append(r, result) => {
                    answered(&self.shared);
                    let _ = r.send(result);
                }
                Reply::Checkpoint(r) => {
                    let _ = r.send(Ok(()));
                }
            }
        }
    }

    fn fail(&self, batch: Vec<WriterMsg>, e: Error) {
        let reason = e.to_string();
        self.shared.stop(reason.clone());
        for m in batch {
            refuse(&self.shared, m, || Error::Stopped(reason.clone()));
        }
    }

    /// Waits while the index is too far behind.
    fn wait_for_room(&self) {
        let limit = self.shared.config.overlay_bytes.max(1);
        let mut overlay = self.shared.overlay();
        while overlay.bytes() >= limit && self.shared.check_running().is_ok() {
            overlay = self
                .shared
                .overlay_changed
                .wait(overlay)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Starts a new segment for entries from `next_seq` on: create it, sync
    /// the directory, write and sync its header.
    fn rotate(&mut self) -> Result<()> {
        let id = self.next_seq;
        let name = segment_name(id);
        let st = &self.shared.storage;
        st.create(&name)
            .and_then(|()| st.sync_dir())
            .and_then(|()| st.append(&name, &format::encode_header(SEGMENT_MAGIC, id)))
            .and_then(|()| st.sync(&name))
            .map_err(|e| Error::io(format!("starting segment {name}"), e))?;
        tracing::debug!(segment = %name, "new segment");
        self.segment = id;
        self.segment_len = format::HEADER_LEN as u64;
        Ok(())
    }

    /// Checks one append's constraints and places it in the batch.
    fn stage(
        &mut self,
        draft: &Draft,
        constraints: &Constraints,
        buf: &mut Vec<u8>,
        view: &mut BatchView,
    ) -> Result<Staged> {
        let sh = &self.shared;
        let encoded: Vec<KeyHash> = constraints
            .unique_keys
            .iter()
            .map(|k| k.index_key())
            .collect();
        // Draft::validate made a non-empty rot_id 64 hex characters.
        let rot = if draft.rot_id.is_empty() {
            None
        } else {
            Some(rot_bytes(&draft.rot_id)?)
        };
        let mut device_prev = None;
        {
            let overlay = sh.overlay();
            // Taken while the overlay is locked: whatever the indexer has
            // popped from it is already in this snapshot.
            let index = sh.index.snapshot()?;
            for (key, enc) in constraints.unique_keys.iter().zip(&encoded) {
                let holder = match view
                    .keys
                    .get(enc)
                    .copied()
                    .or_else(|| overlay.key_holder(enc))
                {
                    Some(s) => Some(s),
                    None => index.key_holder(enc)?,
                };
                if let Some(holder_seq) = holder {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        holder_seq,
                    });
                }
            }
            if let Some(rot) = &rot {
                device_prev = match view.devices.get(rot) {
                    Some(h) => Some(*h),
                    None => match overlay.device_last(rot) {
                        Some((_, h)) => Some(h),
                        None => index.device_last(rot)?.map(|(_, h)| h),
                    },
                };
            }
        }
        if let Some(q) = &constraints.quota {
            let used = sh.quotas().get(&q.counter).copied().unwrap_or(0)
                + view.quotas.get(&q.counter).copied().unwrap_or(0);
            if used >= q.limit {
                return Err(Error::QuotaExhausted {
                    counter: q.counter.clone(),
                    used,
                    limit: q.limit,
                });
            }
        }
        let seq = self.next_seq;
        let time_ms = now_ms().max(self.last_time_ms);
        let entry = draft.place(seq, time_ms, &self.head, device_prev.as_ref(), constraints);
        if entry.len() > MAX_ENTRY_LEN {
            return Err(Error::InvalidArgument(format!(
                "entry of {} bytes exceeds {MAX_ENTRY_LEN}",
                entry.len()
            )));
        }
        // Accepted: from here on nothing fails.
        let leaf = leaf_hash(&entry);
        self.head = chain_head(&self.head, &leaf);
        let offset = self.segment_len + buf.len() as u64;
        let start = buf.len();
        format::encode_entry(seq, &entry, buf);
        let len = (buf.len() - start) as u32;
        let nodes = push_leaf(&mut self.frontier, leaf);
        for enc in &encoded {
            view.keys.insert(*enc, seq);
        }
        if let Some(q) = &constraints.quota {
            *view.quotas.entry(q.counter.clone()).or_default() += 1;
        }
        if let Some(rot) = rot {
            view.devices.insert(rot, leaf);
        }
        self.next_seq += 1;
        self.last_time_ms = time_ms;
        let quota = constraints.quota.as_ref().map(|q| self.counter(&q.counter));
        Ok(Staged {
            overlay: IndexedEntry {
                seq,
                location: Location {
                    segment: self.segment,
                    offset,
                    len,
                },
                leaf,
                nodes,
                rot,
                keys: encoded.into_boxed_slice(),
                quota,
                time_ms,
            },
            appended: Appended {
                seq,
                entry,
                leaf_hash: leaf,
            },
            quota: constraints.quota.as_ref().map(|q| q.counter.clone()),
        })
    }

    /// The shared name of a quota counter.
    fn counter(&mut self, name: &str) -> Arc<str> {
        if let Some(c) = self.counters.get(name) {
            return c.clone();
        }
        if self.counters.len() >= MAX_COUNTERS {
            self.counters.clear();
        }
        let c: Arc<str> = Arc::from(name);
        self.counters.insert(name.to_string(), c.clone());
        c
    }

    fn stage_checkpoint(&mut self, c: &SignedCheckpoint, buf: &mut Vec<u8>) -> OverlayCheckpoint {
        format::encode_checkpoint(c.size, &c.root, &c.note, buf);
        OverlayCheckpoint {
            after: self.next_seq,
            data: IndexedCheckpoint {
                size: c.size,
                root: c.root,
                note: c.note.clone(),
            },
            end: Position {
                segment: self.segment,
                offset: self.segment_len + buf.len() as u64,
            },
        }
    }
}

/// Counts one append as answered.
fn answered(shared: &Shared) {
    shared
        .pending
        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
}

fn clone_stop(e: &Error) -> Error {
    match e {
        Error::Stopped(r) => Error::Stopped(r.clone()),
        _ => Error::Closed,
    }
}

/// Answers a request that will not be carried out.
fn refuse(shared: &Shared, m: WriterMsg, err: impl Fn() -> Error) {
    match m {
        WriterMsg::Append { reply, .. } => {
            answered(shared);
            let _ = reply.send(Err(err()));
        }
        WriterMsg::Checkpoint { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriterMsg::Shutdown => {}
    }
}
