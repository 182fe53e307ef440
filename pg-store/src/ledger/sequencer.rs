//! The sequencer task: group commit of appends, one transaction per
//! batch, two batches deep (see the parent module doc).
//!
//! The task takes every queued append into one batch and starts its
//! transaction on a connection of its own. While that batch commits (its
//! last inserts, the WAL flush), the next batch is already placed after it
//! ([`Base::After`]) on a second connection: its reads, placing and inserts
//! run beside the first batch's commit, on the database's other core, and
//! only its head-row update (and the `COMMIT` pipelined behind it) waits
//! for the first to commit. Answers go out
//! in batch order. A batch that does not land as placed (its predecessor
//! failed, another replica committed in between, a key was already held)
//! is rolled back and, once the batches in flight have landed, committed
//! again on its own, locked — the path every batch took before the
//! pipeline, kept as the fallback.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_ledger::engine::Append;
use custody_ledger::entry::MAX_ENTRY_LEN;
use custody_ledger::{Appended, Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{self, Base, Failed, KeyCheck, Missed, Staged, Tip};
use super::tx::Tx;
use super::{Inner, Queued};
use crate::db::{Backoff, Fault};

/// Most bytes of entries in one transaction.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Validates and queues `appends`; answers once the batch is committed.
pub(crate) async fn submit(
    inner: &Arc<Inner>,
    appends: Vec<Append>,
) -> Result<Vec<Result<Appended>>> {
    inner.check_open()?;
    // Malformed appends are answered at once; the rest keep their order.
    let mut out: Vec<Option<Result<Appended>>> = Vec::with_capacity(appends.len());
    let mut valid = Vec::with_capacity(appends.len());
    for a in appends {
        match validate(&a) {
            Ok(()) => {
                out.push(None);
                valid.push(a);
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    if !valid.is_empty() {
        let (reply, rx) = oneshot::channel();
        inner
            .queue
            .send(Queued {
                appends: valid,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        let mut results = rx.await.map_err(|_| Error::Closed)?.into_iter();
        for slot in out.iter_mut().filter(|s| s.is_none()) {
            *slot = Some(results.next().unwrap_or(Err(Error::Closed)));
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.unwrap_or(Err(Error::Closed)))
        .collect())
}

fn validate(a: &Append) -> Result<()> {
    a.draft.validate()?;
    if a.draft.payload.len() > MAX_ENTRY_LEN / 2 {
        return Err(Error::InvalidArgument(format!(
            "payload is larger than {} bytes",
            MAX_ENTRY_LEN / 2
        )));
    }
    a.constraints.validate()
}

/// A batch in flight.
struct Flight {
    task: JoinHandle<(Vec<Queued>, Landing)>,
    /// How many appends it carries.
    appends: usize,
    /// The tip it leaves if it commits, once it is placed (`Err`: it failed
    /// before being placed).
    tip: Option<oneshot::Receiver<Tip>>,
    /// Fires once its head-row update has run or it gave up: the next
    /// batch's own update goes out only then.
    moved: Option<oneshot::Receiver<()>>,
}

/// How a batch in flight ended.
enum Landing {
    /// Committed, or answered without writing (only refusals).
    Done {
        staged: Staged,
        /// Placed after a batch in flight: answers that wrote nothing
        /// stand only if that batch committed as placed.
        after: bool,
    },
    /// Rolled back, or its commit's answer was lost (`unsure`): to be
    /// committed again on its own. `other_writer`: the miss may be another
    /// replica's doing (the head moved, a fault), not a held key.
    Again {
        unsure: Option<Staged>,
        other_writer: bool,
    },
}

/// Whether this replica pipelines. Only while it is the one writer: a
/// batch placed after one in flight holds rows at seqs it has not locked
/// yet, and another replica's locked batch wanting the same seqs would
/// wait on them while holding the head row (a deadlock the database
/// breaks only after its `deadlock_timeout`, and that the pipelined batch
/// breaks sooner with its `lock_timeout`, [`batch::AFTER_LOCK_TIMEOUT`]).
/// So a replica goes locked, one batch at a time, while it sees another
/// replica's presence row live (`steward::announce`), and — should that
/// row be missed — for [`LOCKED_FOR`] after it sees another's writes (its
/// batch starts where it did not leave the head) or a batch that missed.
#[derive(Debug)]
struct Mode<'a> {
    /// The configured pipeline depth.
    depth: usize,
    /// Whether another replica was live at the steward's last look.
    others: &'a AtomicBool,
    /// Where this replica's last landed batch left the head.
    expected: Option<u64>,
    locked_until: Option<Instant>,
}

/// How long a replica stays locked after another replica wrote.
const LOCKED_FOR: Duration = Duration::from_secs(5);

impl Mode<'_> {
    /// With a depth above one, no other replica live, after a batch landed
    /// where this replica expected it, and not within [`LOCKED_FOR`] of a
    /// sign of another writer.
    fn pipelining(&self) -> bool {
        self.depth > 1
            && !self.others.load(Ordering::Acquire)
            && self.expected.is_some()
            && self.locked_until.is_none_or(|t| Instant::now() >= t)
    }

    fn landed(&mut self, st: &Staged) {
        if self.expected.is_some_and(|e| e != st.start) {
            self.contended();
        }
        self.expected = Some(st.end);
    }

    /// A sign of another writer. Seen while another replica is known live
    /// it says nothing new (that replica's presence keeps this one locked,
    /// and only while it lasts); otherwise it locks for [`LOCKED_FOR`].
    fn contended(&mut self) {
        if !self.others.load(Ordering::Acquire) {
            self.locked_until = Some(Instant::now() + LOCKED_FOR);
        }
    }
}

/// With a batch in flight, how many times in a row the task yields
/// finding nothing new before it closes the next batch.
const GATHER_YIELDS: u32 = 3;

/// What the task waits for.
enum Next {
    Batch(Queued),
    Landed(std::result::Result<(Vec<Queued>, Landing), tokio::task::JoinError>),
    Stop,
}

/// The task body.
pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut shutdown = inner.shutdown.subscribe();
    let max = inner.config.max_batch.max(1);
    let mut flights: VecDeque<Flight> = VecDeque::new();
    let depth = inner.config.pipeline_depth.max(1);
    let mut mode = Mode {
        depth,
        others: &inner.others_live,
        expected: None,
        locked_until: None,
    };
    loop {
        if flights.len() >= depth {
            land_oldest(&inner, &mut flights, &mut mode).await;
            continue;
        }
        let next = if let Some(oldest) = flights.front_mut() {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|&s| s) => Next::Stop,
                r = &mut oldest.task => Next::Landed(r),
                m = rx.recv() => m.map_or(Next::Stop, Next::Batch),
            }
        } else {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|&s| s) => Next::Stop,
                m = rx.recv() => m.map_or(Next::Stop, Next::Batch),
            }
        };
        let first = match next {
            Next::Stop => break,
            Next::Batch(m) => m,
            Next::Landed(r) => {
                flights.pop_front();
                deliver(&inner, r, &mut flights, &mut mode).await;
                continue;
            }
        };
        let mut batch = vec![first];
        let mut count = batch[0].appends.len();
        let mut bytes = size_of_batch(&batch[0]);
        // While pipelining, half of what is waiting, so that two batches
        // alternate (one committing while the next is placed and
        // inserted) instead of one batch holding every caller.
        let cap = if mode.pipelining() {
            let in_flight: usize = flights.iter().map(|f| f.appends).sum();
            (in_flight + count + rx.len()).div_ceil(depth).clamp(1, max)
        } else {
            max
        };
        // Everything queued up to the cap, and what arrives while the task
        // yields: the callers a landed batch just answered are
        // resubmitting, and a batch per straggler would cost a transaction
        // each.
        let mut quiet = 0;
        while count < cap && bytes < MAX_BATCH_BYTES && quiet < GATHER_YIELDS {
            match rx.try_recv() {
                Ok(m) => {
                    count += m.appends.len();
                    bytes += size_of_batch(&m);
                    batch.push(m);
                    quiet = 0;
                }
                Err(_) if flights.is_empty() => break,
                Err(_) => {
                    quiet += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        // After the batch in flight once it is placed; otherwise locked,
        // and a locked batch starts only when nothing of this replica is
        // in flight (see `Mode`).
        let mut after = None;
        if let Some(prev) = flights.back_mut() {
            if mode.pipelining() {
                let tip = match prev.tip.take() {
                    Some(rx) => rx.await.ok(),
                    None => None,
                };
                if let (Some(tip), Some(moved)) = (tip, prev.moved.take()) {
                    after = Some(Base::After(tip, moved));
                }
            }
        }
        let base = match after {
            Some(base) => base,
            None => {
                while !flights.is_empty() {
                    land_oldest(&inner, &mut flights, &mut mode).await;
                }
                Base::Locked
            }
        };
        flights.push_back(launch(&inner, batch, base));
    }
    while !flights.is_empty() {
        land_oldest(&inner, &mut flights, &mut mode).await;
    }
    rx.close();
    while let Ok(q) = rx.try_recv() {
        let n = q.appends.len();
        let _ = q.reply.send((0..n).map(|_| Err(Error::Closed)).collect());
    }
}

/// Starts a batch's transaction on its own task.
fn launch(inner: &Arc<Inner>, batch: Vec<Queued>, base: Base) -> Flight {
    let appends = batch.iter().map(|q| q.appends.len()).sum();
    let (tip_tx, tip_rx) = oneshot::channel();
    let (moved_tx, moved_rx) = oneshot::channel();
    let inner = inner.clone();
    let task = tokio::spawn(async move {
        let appends: Vec<&Append> = batch.iter().flat_map(|q| q.appends.iter()).collect();
        let after = matches!(base, Base::After(..));
        let signals = Some((tip_tx, moved_tx));
        let landing = match attempt(&inner, &appends, base, KeyCheck::Insert, signals).await {
            Ok(staged) => Landing::Done { staged, after },
            Err(Miss::Rolled(m)) => Landing::Again {
                unsure: None,
                other_writer: m == Missed::Moved,
            },
            Err(Miss::Fault(_, unsure)) => Landing::Again {
                unsure,
                other_writer: true,
            },
        };
        drop(appends);
        (batch, landing)
    });
    Flight {
        task,
        appends,
        tip: Some(tip_rx),
        moved: Some(moved_rx),
    }
}

/// Waits for the oldest batch in flight and answers it.
async fn land_oldest(inner: &Inner, flights: &mut VecDeque<Flight>, mode: &mut Mode<'_>) {
    if let Some(f) = flights.pop_front() {
        let r = f.task.await;
        deliver(inner, r, flights, mode).await;
    }
}

/// Answers a landed batch. One that must be committed again is, locked,
/// after every later batch in flight has landed (they cannot wait on it,
/// and committing it beside them could deadlock on their rows).
async fn deliver(
    inner: &Inner,
    landed: std::result::Result<(Vec<Queued>, Landing), tokio::task::JoinError>,
    rest: &mut VecDeque<Flight>,
    mode: &mut Mode<'_>,
) {
    let mut again = Vec::new();
    let mut missed = false;
    match landed {
        // Answers that wrote nothing stand only if the batch they were
        // placed after landed as placed.
        Ok((batch, Landing::Done { staged, after }))
            if staged.first.is_some() || !after || mode.expected == Some(staged.start) =>
        {
            mode.landed(&staged);
            reply(batch, finish(inner, staged));
        }
        Ok((batch, Landing::Done { .. })) => {
            again.push((batch, None));
            missed = true;
        }
        Ok((
            batch,
            Landing::Again {
                unsure,
                other_writer,
            },
        )) => {
            again.push((batch, unsure));
            missed |= other_writer;
        }
        // The task panicked: its callers' reply channels are gone (they
        // see `Closed`); nothing was acknowledged.
        Err(_) => {
            tracing::error!("a ledger batch task failed");
            missed = true;
        }
    }
    if again.is_empty() && !missed {
        return;
    }
    // The later batches in flight miss because this one did: only this
    // one's miss says whether another replica writes.
    if missed {
        mode.contended();
    }
    mode.expected = None;
    while let Some(f) = rest.pop_front() {
        match f.task.await {
            // Committed: its base was real.
            Ok((b, Landing::Done { staged, .. })) if staged.first.is_some() => {
                reply(b, finish(inner, staged));
            }
            Ok((b, Landing::Done { .. })) => again.push((b, None)),
            Ok((b, Landing::Again { unsure, .. })) => again.push((b, unsure)),
            Err(_) => tracing::error!("a ledger batch task failed"),
        }
    }
    for (b, unsure) in again {
        let appends: Vec<&Append> = b.iter().flat_map(|q| q.appends.iter()).collect();
        let results = commit(inner, &appends, unsure).await;
        drop(appends);
        reply(b, results);
    }
}

/// Sends each caller its answers, in order.
fn reply(batch: Vec<Queued>, results: Vec<Result<Appended>>) {
    let mut results = results.into_iter();
    for q in batch {
        let n = q.appends.len();
        let answer: Vec<_> = (0..n)
            .map(|_| results.next().unwrap_or(Err(Error::Closed)))
            .collect();
        let _ = q.reply.send(answer);
    }
}

fn size_of_batch(q: &Queued) -> usize {
    q.appends.iter().map(|a| a.draft.payload.len() + 256).sum()
}

/// One batch committed on its own (locked), retried on transient failures;
/// every append gets the same kind of answer on failure. `unsure`: an
/// earlier attempt whose commit answer was lost, looked up first.
async fn commit(
    inner: &Inner,
    appends: &[&Append],
    mut unsure: Option<Staged>,
) -> Vec<Result<Appended>> {
    let mut backoff = Backoff::new(inner.config.retry, "appending to the ledger");
    let mut check = KeyCheck::Insert;
    loop {
        if let Some(st) = unsure.take() {
            match landed(inner, &st).await {
                Ok(true) => return finish(inner, st),
                Ok(false) => {}
                Err(f) => {
                    unsure = Some(st);
                    if let Err(e) = backoff.failed(f).await {
                        // Outcome unknown: nothing is acknowledged.
                        return fail_all(appends.len(), &e);
                    }
                    continue;
                }
            }
        }
        match attempt(inner, appends, Base::Locked, check, None).await {
            Ok(st) => return finish(inner, st),
            Err(Miss::Rolled(Missed::KeyTaken)) => check = KeyCheck::Lookup,
            // Locked: the head cannot move; should it, place again.
            Err(Miss::Rolled(Missed::Moved)) => {}
            Err(Miss::Fault(fault, st)) => {
                unsure = st;
                if let Err(e) = backoff.failed(fault).await {
                    return fail_all(appends.len(), &e);
                }
            }
        }
    }
}

fn finish(inner: &Inner, st: Staged) -> Vec<Result<Appended>> {
    if st.end > st.start {
        inner.size.fetch_max(st.end, Ordering::AcqRel);
    }
    st.results
}

fn fail_all(n: usize, e: &Error) -> Vec<Result<Appended>> {
    (0..n)
        .map(|_| {
            Err(match e {
                Error::Unavailable(m) => Error::Unavailable(m.clone()),
                Error::Corrupt { location, what } => Error::Corrupt {
                    location: location.clone(),
                    what: what.clone(),
                },
                other => Error::Io {
                    context: "appending to the ledger".into(),
                    source: std::io::Error::other(other.to_string()),
                },
            })
        })
        .collect()
}

/// Whether a batch whose commit answer was lost is in the database.
async fn landed(inner: &Inner, st: &Staged) -> std::result::Result<bool, Fault> {
    let Some((seq, bytes)) = &st.first else {
        return Ok(true);
    };
    let client = inner.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT entry FROM entries WHERE seq = $1",
            &[&(*seq as i64)],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, &[u8]>(0) == bytes.as_slice()))
}

/// Why an attempt did not commit.
enum Miss {
    /// Rolled back, nothing written.
    Rolled(Missed),
    /// A transient or final fault; with the staged batch when the commit
    /// itself failed (outcome unknown).
    Fault(Fault, Option<Staged>),
}

/// One attempt on `base`. `signals`: where to send the tip once placed and
/// the signal once the head update has run (a batch of the pipeline).
async fn attempt(
    inner: &Inner,
    appends: &[&Append],
    base: Base,
    check: KeyCheck,
    signals: Option<(oneshot::Sender<Tip>, oneshot::Sender<()>)>,
) -> std::result::Result<Staged, Miss> {
    let fault = |f: Fault| Miss::Fault(f, None);
    let (tip_tx, moved_tx) = match signals {
        Some((t, m)) => (Some(t), Some(m)),
        None => (None, None),
    };
    let client = inner.pool.get().await.map_err(|e| fault(e.into()))?;
    let tx = Tx::new(client);
    // `BEGIN` goes out in one pipeline with the batch's reads.
    let (begun, staged) = futures::join!(
        tx.begin(),
        batch::stage(&tx, appends, &base, check, inner.config.pipeline_depth)
    );
    if let Err(e) = begun {
        // Dropped: the connection is closed, whatever it began.
        return Err(fault(e.into()));
    }
    let (st, rows, tip) = match staged {
        Ok(Ok(staged)) => staged,
        Ok(Err(m)) => {
            tx.rollback().await;
            return Err(Miss::Rolled(m));
        }
        Err(f) => {
            tx.rollback().await;
            return Err(fault(f));
        }
    };
    let expected = (tip.start, tip.start_head);
    if let Some(t) = tip_tx {
        let _ = t.send(tip);
    }
    let after = match base {
        Base::After(_, moved) => Some(moved),
        Base::Locked => None,
    };
    let after_prev = after.is_some();
    if st.first.is_none() {
        // Only refusals: nothing to write. The head is unchanged, so the
        // successor may follow at once.
        drop(moved_tx);
        tx.rollback().await;
        return Ok(st);
    }
    match batch::write(tx, &rows, expected, after, moved_tx).await {
        Ok(Ok(())) => {
            inner.committed.fetch_add(1, Ordering::Relaxed);
            if after_prev {
                inner.pipelined.fetch_add(1, Ordering::Relaxed);
            }
            tracing::trace!(
                appends = appends.len(),
                entries = st.end - st.start,
                pipelined = after_prev,
                "batch committed"
            );
            Ok(st)
        }
        Ok(Err(m)) => Err(Miss::Rolled(m)),
        Err(Failed { fault, unsure }) => Err(Miss::Fault(fault, unsure.then_some(st))),
    }
}
