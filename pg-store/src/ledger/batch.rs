//! One append batch inside its transaction: what it reads, how its appends
//! are placed (checked, sequenced, encoded), and the rows it writes.
//!
//! A batch is staged on one of two bases ([`Base`]):
//!
//! - **Locked**: the head row is read `FOR UPDATE` first, so the batch sees
//!   the committed state and nothing can commit before it (every commit
//!   moves the head row).
//! - **After a batch in flight** (the pipeline of `sequencer.rs`): the
//!   batch is placed after the [`Tip`] the previous batch of this replica
//!   leaves if it commits, while that one is still committing. Its reads
//!   are overlaid with the predecessor's keys, device chains and quota
//!   uses; its inserts go out at once; its head-row update is sent only
//!   once the predecessor's has run and is a compare-and-swap on the
//!   predecessor's size *and* chain head, so it waits on the predecessor's
//!   row lock and lands only if exactly that predecessor committed. Any
//!   other outcome (the predecessor failed, another replica committed in
//!   between) fails the compare-and-swap and the batch is rolled back and
//!   placed again, locked.
//!
//! The compare-and-swap is the server's (`ledger_advance`, schema V6: it
//! locks the head row, compares, and raises SQLSTATE TL001 on a mismatch),
//! so the batch's `COMMIT` goes out in the same pipeline instead of a
//! round trip later: a failed compare-and-swap aborts the transaction and
//! the `COMMIT` behind it rolls back. That makes the order statements
//! reach the server in part of the rule: every statement of a batch is
//! prepared before any is sent ([`Statements`]), since one prepared on its
//! first use would go out only after the `COMMIT` queued behind it.
//!
//! In both cases unique keys are inserted without a lookup first
//! ([`KeyCheck::Insert`]): a key already held fails the insert on
//! `unique_keys`' primary key, the transaction is rolled back, and the
//! batch is placed again with the holders read first ([`KeyCheck::Lookup`])
//! so the taken key is refused with its holder's seq (invariant 2).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use custody_ledger::engine::Append;
use custody_ledger::entry::MAX_ENTRY_LEN;
use custody_ledger::merkle::{chain_head, leaf_hash, Hash};
use custody_ledger::{Appended, Error, Result, UniqueKey};
use deadpool_postgres::GenericClient;
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::tx::Tx;
use super::{frontier_bytes, frontier_from, to_hash, LOWEST_STORED};
use crate::db::Fault;

/// How long a batch placed after one in flight waits for a row lock: the
/// predecessor's commit takes milliseconds; a longer wait is on another
/// replica's batch that waits on this one's rows, and giving up (rolled
/// back, placed again locked) ends that cycle well before the database's
/// deadlock detection would.
pub(crate) const AFTER_LOCK_TIMEOUT: &str = "250ms";

/// Adds a batch's counts to the quota counters (counters sorted by the
/// caller, so that concurrent batches lock them in one order).
const QUOTA_UPSERT: &str = "INSERT INTO quotas (counter, used) \
     SELECT * FROM unnest($1::text[], $2::int8[]) \
     ON CONFLICT (counter) DO UPDATE SET used = quotas.used + excluded.used";

/// How a batch learns which of its unique keys are already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    /// No lookup: the keys are inserted, and a held one fails the insert
    /// (the batch is rolled back and placed again with [`KeyCheck::Lookup`]).
    /// When every key lands (the common case: a key is taken only by a
    /// replay or a race) the batch costs no index probe beyond the insert's
    /// own.
    Insert,
    /// Read the holders of the batch's keys before placing any append.
    Lookup,
}

/// What one batch changes besides its entries, for the batches placed
/// after it while it is in flight.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effects {
    /// The size before the batch and after it.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The keys it takes, with their seqs.
    pub(crate) keys: HashMap<(String, Vec<u8>), u64>,
    /// Per device, the leaf of its last entry in the batch.
    pub(crate) devices: HashMap<String, Hash>,
    /// Entries counted per quota counter.
    pub(crate) quotas: HashMap<String, u64>,
}

/// What a batch leaves behind if it commits: the base its successor is
/// placed on while this one (and those before it) are still in flight.
#[derive(Debug, Clone)]
pub(crate) struct Tip {
    /// The size before the batch.
    pub(crate) start: u64,
    /// The hash-chain head before it.
    pub(crate) start_head: Hash,
    /// The size after it.
    pub(crate) size: u64,
    /// The hash-chain head after it.
    pub(crate) head: Hash,
    pub(crate) last_time_ms: i64,
    /// The stored form of the Merkle frontier after it.
    pub(crate) frontier: Vec<u8>,
    /// The effects of the batches up to this one that may still be in
    /// flight when a successor is placed (the pipeline depth less one),
    /// oldest first: those a successor's snapshot may lack.
    pub(crate) recent: Vec<Effects>,
}

/// Where a batch is placed.
pub(crate) enum Base {
    /// On the committed state, the head row locked first.
    Locked,
    /// After a batch in flight: its tip, and a signal that fires once its
    /// head-row update has run (or it gave up).
    After(Tip, oneshot::Receiver<()>),
}

/// A staged batch: the answers and where it starts.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) results: Vec<Result<Appended>>,
    /// The size the batch was placed on and the size after it.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The first accepted entry (seq, bytes): looked up when the commit's
    /// answer is lost.
    pub(crate) first: Option<(u64, Vec<u8>)>,
}

/// The rows of a batch (also what an import writes per chunk).
#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) seqs: Vec<i64>,
    pub(crate) entries: Vec<Vec<u8>>,
    pub(crate) leaves: Vec<Vec<u8>>,
    pub(crate) rots: Vec<Option<String>>,
    pub(crate) node_levels: Vec<i16>,
    pub(crate) node_idxs: Vec<i64>,
    pub(crate) node_hashes: Vec<Vec<u8>>,
    pub(crate) key_ns: Vec<String>,
    pub(crate) key_values: Vec<Vec<u8>>,
    pub(crate) key_seqs: Vec<i64>,
    pub(crate) quota_counters: Vec<String>,
    pub(crate) quota_added: Vec<i64>,
    pub(crate) size: i64,
    pub(crate) head: Vec<u8>,
    pub(crate) last_time_ms: i64,
    pub(crate) frontier: Vec<u8>,
}

/// Why a batch's transaction was rolled back without a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// A unique key was already held: place again with
    /// [`KeyCheck::Lookup`].
    KeyTaken,
    /// Placed after a batch in flight that did not commit as placed, or
    /// after another replica's commit: place again, locked.
    Moved,
}

/// What the batch's reads found.
#[derive(Default)]
struct Seen {
    keys: HashMap<(String, Vec<u8>), u64>,
    quotas: HashMap<String, u64>,
    devices: HashMap<String, Hash>,
}

/// The state a batch is placed on.
struct Start {
    size: u64,
    head: Hash,
    last_time_ms: i64,
    frontier: Vec<u8>,
}

/// The reads a batch's checks need, placed on `base`. `Err(Ok(Moved))`
/// when the snapshot shows neither the base nor the committed tip.
async fn read(
    tx: &Tx,
    appends: &[&Append],
    base: &Base,
    check: KeyCheck,
) -> std::result::Result<std::result::Result<(Start, Seen), Missed>, Fault> {
    let mut ns = Vec::new();
    let mut values = Vec::new();
    let mut counters = Vec::new();
    let mut rots = Vec::new();
    for a in appends {
        if check == KeyCheck::Lookup {
            for k in &a.constraints.unique_keys {
                ns.push(k.namespace.clone());
                values.push(k.value.clone());
            }
        }
        if let Some(q) = &a.constraints.quota {
            counters.push(q.counter.clone());
        }
        if !a.draft.rot_id.is_empty() {
            rots.push(a.draft.rot_id.clone());
        }
    }
    counters.sort();
    counters.dedup();
    rots.sort();
    rots.dedup();

    let mut seen = Seen::default();
    let start = match base {
        Base::Locked => {
            let head = tx
                .query_one(
                    &tx.prepare_cached(
                        "SELECT size, head, last_time_ms, frontier FROM ledger_head \
                         WHERE id = 1 FOR UPDATE",
                    )
                    .await?,
                    &[],
                )
                .await?;
            Start {
                size: head.get::<_, i64>(0) as u64,
                head: to_hash(head.get(1), "ledger_head.head")?,
                last_time_ms: head.get(2),
                frontier: head.get::<_, Vec<u8>>(3),
            }
        }
        Base::After(tip, _) => Start {
            size: tip.size,
            head: tip.head,
            last_time_ms: tip.last_time_ms,
            frontier: tip.frontier.clone(),
        },
    };
    let below = start.size as i64;
    // The reads go out together (pipelined), after the head lock when
    // locked. The quota read also returns the head size of its own
    // snapshot, which says whether the batch in flight is in it.
    let key_stmt = tx
        .prepare_cached(
            "SELECT k.namespace, k.value, k.seq FROM unique_keys k \
             JOIN unnest($1::text[], $2::bytea[]) AS w(namespace, value) \
             ON k.namespace = w.namespace AND k.value = w.value",
        )
        .await?;
    let quota_stmt = tx
        .prepare_cached(
            "SELECT (SELECT size FROM ledger_head WHERE id = 1), q.counter, q.used \
             FROM (VALUES (1)) AS one(x) LEFT JOIN quotas q ON q.counter = ANY($1)",
        )
        .await?;
    let device_stmt = tx
        .prepare_cached(
            "SELECT w.rot, e.leaf FROM unnest($1::text[]) AS w(rot) CROSS JOIN LATERAL \
             (SELECT leaf FROM entries WHERE rot_id = w.rot AND seq < $2 \
              ORDER BY seq DESC LIMIT 1) e",
        )
        .await?;
    let key_params: [&(dyn ToSql + Sync); 2] = [&ns, &values];
    let quota_params: [&(dyn ToSql + Sync); 1] = [&counters];
    let device_params: [&(dyn ToSql + Sync); 2] = [&rots, &below];
    let none = || async { Ok::<_, tokio_postgres::Error>(Vec::new()) };
    let (key_rows, quota_rows, device_rows) = futures::try_join!(
        async {
            if ns.is_empty() {
                none().await
            } else {
                tx.query(&key_stmt, &key_params).await
            }
        },
        tx.query(&quota_stmt, &quota_params),
        async {
            if rots.is_empty() {
                none().await
            } else {
                tx.query(&device_stmt, &device_params).await
            }
        },
    )?;
    for r in key_rows {
        seen.keys
            .insert((r.get(0), r.get(1)), r.get::<_, i64>(2) as u64);
    }
    let mut snapshot_size = None;
    for r in quota_rows {
        snapshot_size = Some(r.get::<_, i64>(0) as u64);
        if let Some(counter) = r.get::<_, Option<String>>(1) {
            seen.quotas.insert(counter, r.get::<_, i64>(2) as u64);
        }
    }
    for r in device_rows {
        seen.devices
            .insert(r.get(0), to_hash(r.get(1), "entries.leaf")?);
    }
    if let Base::After(tip, _) = base {
        // The snapshot holds some prefix of the batches in flight: it must
        // stand at one of their boundaries, and the counts of those it
        // lacks are added. Keys and device chains are overlaid in order
        // (the same or newer than any row read).
        let Some(s) = snapshot_size else {
            return Ok(Err(Missed::Moved));
        };
        let at_boundary = tip.recent.first().is_some_and(|e| e.start == s)
            || tip.recent.iter().any(|e| e.end == s);
        if !at_boundary {
            return Ok(Err(Missed::Moved));
        }
        for e in &tip.recent {
            if e.end > s {
                for (counter, n) in &e.quotas {
                    *seen.quotas.entry(counter.clone()).or_default() += n;
                }
            }
            for (k, &seq) in &e.keys {
                seen.keys.insert(k.clone(), seq);
            }
            for (rot, leaf) in &e.devices {
                seen.devices.insert(rot.clone(), *leaf);
            }
        }
    }
    Ok(Ok((start, seen)))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads what the batch's checks need and places every acceptable append:
/// the answers, the rows to write and the tip the batch leaves (`depth`:
/// batches in flight at once).
pub(crate) async fn stage(
    tx: &Tx,
    appends: &[&Append],
    base: &Base,
    check: KeyCheck,
    depth: usize,
) -> std::result::Result<std::result::Result<(Staged, Rows, Tip), Missed>, Fault> {
    let (start, mut seen) = match read(tx, appends, base, check).await? {
        Ok(r) => r,
        Err(m) => return Ok(Err(m)),
    };
    let size = start.size;
    let mut chain = start.head;
    let mut last_time_ms = start.last_time_ms;
    let (mut frontier, mut known) = frontier_from(size, &start.frontier)?;

    let mut rows = Rows::default();
    let mut results = Vec::with_capacity(appends.len());
    let mut added: HashMap<String, u64> = HashMap::new();
    let mut tip_keys = HashMap::new();
    let mut tip_devices = HashMap::new();
    let mut first = None;
    let mut next = size;
    for a in appends {
        let c = &a.constraints;
        let d = &a.draft;
        let refusal = c
            .unique_keys
            .iter()
            .find_map(|k| {
                seen.keys
                    .get(&(k.namespace.clone(), k.value.clone()))
                    .map(|&holder_seq| Error::Conflict {
                        key: UniqueKey::new(k.namespace.clone(), k.value.clone()),
                        holder_seq,
                    })
            })
            .or_else(|| {
                c.quota.as_ref().and_then(|q| {
                    let used = seen.quotas.get(&q.counter).copied().unwrap_or(0)
                        + added.get(&q.counter).copied().unwrap_or(0);
                    (used >= q.limit).then(|| Error::QuotaExhausted {
                        counter: q.counter.clone(),
                        used,
                        limit: q.limit,
                    })
                })
            });
        if let Some(e) = refusal {
            results.push(Err(e));
            continue;
        }
        let device_prev = (!d.rot_id.is_empty())
            .then(|| seen.devices.get(&d.rot_id).copied())
            .flatten();
        let time_ms = now_ms().max(last_time_ms);
        let entry = d.place(next, time_ms, &chain, device_prev.as_ref(), c);
        if entry.len() > MAX_ENTRY_LEN {
            results.push(Err(Error::InvalidArgument(format!(
                "entry of {} bytes exceeds {MAX_ENTRY_LEN}",
                entry.len()
            ))));
            continue;
        }
        // Accepted.
        let seq = next;
        let leaf = leaf_hash(&entry);
        chain = chain_head(&chain, &leaf);
        last_time_ms = time_ms;
        frontier.push(leaf, &mut |(level, idx, hash)| {
            known.0.insert((level, idx), hash);
            if level >= LOWEST_STORED {
                rows.node_levels.push(i16::from(level));
                rows.node_idxs.push(idx as i64);
                rows.node_hashes.push(hash.to_vec());
            }
        });
        for k in &c.unique_keys {
            let key = (k.namespace.clone(), k.value.clone());
            seen.keys.insert(key.clone(), seq);
            tip_keys.insert(key, seq);
            rows.key_ns.push(k.namespace.clone());
            rows.key_values.push(k.value.clone());
            rows.key_seqs.push(seq as i64);
        }
        if let Some(q) = &c.quota {
            *added.entry(q.counter.clone()).or_default() += 1;
        }
        if !d.rot_id.is_empty() {
            seen.devices.insert(d.rot_id.clone(), leaf);
            tip_devices.insert(d.rot_id.clone(), leaf);
        }
        rows.seqs.push(seq as i64);
        rows.leaves.push(leaf.to_vec());
        rows.rots
            .push((!d.rot_id.is_empty()).then(|| d.rot_id.clone()));
        if first.is_none() {
            first = Some((seq, entry.clone()));
        }
        rows.entries.push(entry.clone());
        results.push(Ok(Appended {
            seq,
            entry,
            leaf_hash: leaf,
        }));
        next += 1;
    }
    let mut counts: Vec<_> = added.iter().map(|(c, &n)| (c.clone(), n)).collect();
    counts.sort();
    for (counter, n) in counts {
        rows.quota_counters.push(counter);
        rows.quota_added.push(n as i64);
    }
    rows.size = next as i64;
    rows.head = chain.to_vec();
    rows.last_time_ms = last_time_ms;
    rows.frontier = frontier_bytes(next, &known)?;
    let mut recent = match base {
        Base::After(prev, _) => prev.recent.clone(),
        Base::Locked => Vec::new(),
    };
    recent.push(Effects {
        start: size,
        end: next,
        keys: tip_keys,
        devices: tip_devices,
        quotas: added,
    });
    let keep = depth.max(2) - 1;
    if recent.len() > keep {
        recent.drain(..recent.len() - keep);
    }
    let tip = Tip {
        start: size,
        start_head: start.head,
        size: next,
        head: chain,
        last_time_ms,
        frontier: rows.frontier.clone(),
        recent,
    };
    Ok(Ok((
        Staged {
            results,
            start: size,
            end: next,
            first,
        },
        rows,
        tip,
    )))
}

/// A batch's statements, prepared (once per connection) before any of
/// them is sent: statements sent together then go out in the order they
/// are written, and the `COMMIT` behind them must be the last.
pub(crate) struct Statements {
    entries: Statement,
    nodes: Statement,
    keys: Statement,
    quotas: Statement,
    advance: Statement,
}

impl Statements {
    pub(crate) async fn prepare(
        c: &impl GenericClient,
    ) -> std::result::Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            entries: c
                .prepare_cached(
                    "INSERT INTO entries (seq, entry, leaf, rot_id) \
                     SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::text[])",
                )
                .await?,
            nodes: c
                .prepare_cached(
                    "INSERT INTO merkle_nodes (level, idx, hash) \
                     SELECT * FROM unnest($1::int2[], $2::int8[], $3::bytea[])",
                )
                .await?,
            // A plain insert: `ON CONFLICT DO NOTHING` costs a third more
            // per key here (it probes the index before inserting), and a
            // taken key is rare — the in-memory checks refuse what this
            // process knows of.
            keys: c
                .prepare_cached(
                    "INSERT INTO unique_keys (namespace, value, seq) \
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[])",
                )
                .await?,
            quotas: c.prepare_cached(QUOTA_UPSERT).await?,
            // The compare-and-swap on the head row, judged by the server
            // (`V6__head_compare_and_swap.sql`).
            advance: c
                .prepare_cached("SELECT ledger_advance($1, $2, $3, $4, $5, $6)")
                .await?,
        })
    }
}

/// A write that failed: `unsure` when its `COMMIT` went out and no answer
/// says how the transaction ended (the caller looks the batch up).
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) fault: Fault,
    pub(crate) unsure: bool,
}

impl Failed {
    /// Failed before the `COMMIT` went out, or with an answer that aborted
    /// the transaction: nothing was written.
    fn sure(e: tokio_postgres::Error) -> Failed {
        Failed {
            fault: e.into(),
            unsure: false,
        }
    }
}

/// Writes a staged batch placed on `expected` (its start size and chain
/// head) and ends its transaction: the inserts first; then — after `after`
/// fires, when the batch follows one in flight — the quota counts, the
/// head-row compare-and-swap on `expected` and the `COMMIT`, in one
/// pipeline. A head that is not at `expected` fails the compare-and-swap,
/// which aborts the transaction, and the `COMMIT` behind it rolls back
/// (`Ok(Err(Moved))`). `moved` fires once the compare-and-swap has run.
pub(crate) async fn write(
    mut tx: Tx,
    rows: &Rows,
    expected: (u64, Hash),
    after: Option<oneshot::Receiver<()>>,
    moved: Option<oneshot::Sender<()>>,
) -> std::result::Result<std::result::Result<(), Missed>, Failed> {
    let st = match Statements::prepare(&*tx).await {
        Ok(st) => st,
        Err(e) => {
            tx.rollback().await;
            return Err(Failed::sure(e));
        }
    };
    let key_params: [&(dyn ToSql + Sync); 3] = [&rows.key_ns, &rows.key_values, &rows.key_seqs];
    // Whether every key landed: a held key fails the insert on its
    // primary key, which aborts the transaction (and so every statement
    // after it in the pipeline).
    let inserts = async {
        if rows.key_ns.is_empty() {
            return Ok(true);
        }
        match tx.execute(&st.keys, &key_params).await {
            Ok(_) => Ok(true),
            Err(e) if key_taken(&e) => Ok(false),
            Err(e) => Err(e),
        }
    };
    // After a batch in flight the compare-and-swap waits on its row lock,
    // bounded (see `AFTER_LOCK_TIMEOUT`).
    let bound = after
        .is_some()
        .then(|| format!("SET LOCAL lock_timeout = '{AFTER_LOCK_TIMEOUT}'"));
    let (landed, inserted, bounded) =
        futures::join!(inserts, insert_rows(&*tx, &st, rows, false), async {
            match &bound {
                Some(b) => tx.batch_execute(b).await,
                None => Ok(()),
            }
        },);
    let early = match (landed, inserted, bounded) {
        (Ok(false), _, _) => Some(Ok(Err(Missed::KeyTaken))),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Some(Err(Failed::sure(e))),
        (Ok(true), Ok(()), Ok(())) => None,
    };
    if let Some(early) = early {
        tx.rollback().await;
        return early;
    }
    // The compare-and-swap goes out only once the predecessor's has run:
    // sent sooner, it could reach the head row first and miss.
    if let Some(after) = after {
        let _ = after.await;
    }
    let from_size = expected.0 as i64;
    let from_head = expected.1.to_vec();
    let head_params: [&(dyn ToSql + Sync); 6] = [
        &from_size,
        &from_head,
        &rows.size,
        &rows.head,
        &rows.last_time_ms,
        &rows.frontier,
    ];
    let quota_params: [&(dyn ToSql + Sync); 2] = [&rows.quota_counters, &rows.quota_added];
    // Counters sorted, so that concurrent batches lock them in one order;
    // then the head row; then the COMMIT (sent last: each future sends its
    // statement when first polled, in this order).
    let (quotas, advanced, committed) = futures::join!(
        async {
            if rows.quota_counters.is_empty() {
                Ok(0)
            } else {
                tx.execute(&st.quotas, &quota_params).await
            }
        },
        async {
            let r = tx.execute(&st.advance, &head_params).await;
            drop(moved);
            r
        },
        tx.commit(),
    );
    if committed
        .as_ref()
        .map_or_else(|e| e.as_db_error().is_some(), |()| true)
    {
        tx.ended();
    }
    let failed = match (quotas, advanced) {
        (Err(e), _) | (Ok(_), Err(e)) => Some(e),
        (Ok(_), Ok(_)) => None,
    };
    match (failed, committed) {
        (None, Ok(())) => Ok(Ok(())),
        (None, Err(e)) => Err(Failed {
            fault: e.into(),
            unsure: true,
        }),
        (Some(e), _) if head_moved(&e) => Ok(Err(Missed::Moved)),
        // An answer that aborted the transaction, or none (the connection
        // lost with the COMMIT sent).
        (Some(e), _) => {
            let unsure = e.as_db_error().is_none();
            Err(Failed {
                fault: e.into(),
                unsure,
            })
        }
    }
}

/// The head was not where the batch was placed (`ledger_advance` raised).
fn head_moved(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code() == HEAD_MOVED)
}

/// The SQLSTATE `ledger_advance` raises when the head is not at the size
/// and chain head given.
const HEAD_MOVED: &str = "TL001";

/// A unique key already held: the insert failed on `unique_keys`' primary
/// key (the backstop of invariant 2).
fn key_taken(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.table() == Some("unique_keys")
    })
}

/// Inserts rows: entries, Merkle nodes and, with `import`, unique keys and
/// quota counts too (never the head row), pipelined. An import's held key
/// is an error: it writes into fresh tables.
pub(crate) async fn insert_rows(
    tx: &impl GenericClient,
    st: &Statements,
    rows: &Rows,
    import: bool,
) -> std::result::Result<(), tokio_postgres::Error> {
    let entry_params: [&(dyn ToSql + Sync); 4] =
        [&rows.seqs, &rows.entries, &rows.leaves, &rows.rots];
    let node_params: [&(dyn ToSql + Sync); 3] =
        [&rows.node_levels, &rows.node_idxs, &rows.node_hashes];
    let key_params: [&(dyn ToSql + Sync); 3] = [&rows.key_ns, &rows.key_values, &rows.key_seqs];
    let quota_params: [&(dyn ToSql + Sync); 2] = [&rows.quota_counters, &rows.quota_added];
    let mut pending = vec![tx.execute(&st.entries, &entry_params)];
    if !rows.node_levels.is_empty() {
        pending.push(tx.execute(&st.nodes, &node_params));
    }
    if import && !rows.key_ns.is_empty() {
        pending.push(tx.execute(&st.keys, &key_params));
    }
    if import && !rows.quota_counters.is_empty() {
        pending.push(tx.execute(&st.quotas, &quota_params));
    }
    futures::future::try_join_all(pending).await?;
    Ok(())
}
