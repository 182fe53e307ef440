//! The sequencer task: group commit of appends, one transaction per batch
//! (see the parent module doc).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use custody_ledger::engine::Append;
use custody_ledger::entry::MAX_ENTRY_LEN;
use custody_ledger::merkle::{chain_head, leaf_hash, Hash};
use custody_ledger::{Appended, Error, Result, UniqueKey};
use deadpool_postgres::Transaction;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::{frontier_bytes, frontier_from, to_hash, Inner, Queued};
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

/// The task body.
pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut shutdown = inner.shutdown.subscribe();
    let max = inner.config.max_batch.max(1);
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.wait_for(|&s| s) => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let mut batch = vec![first];
        let mut count = batch[0].appends.len();
        let mut bytes = size_of_batch(&batch[0]);
        while count < max && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => {
                    count += m.appends.len();
                    bytes += size_of_batch(&m);
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let appends: Vec<&Append> = batch.iter().flat_map(|q| q.appends.iter()).collect();
        let mut results = commit(&inner, &appends).await.into_iter();
        for q in batch {
            let n = q.appends.len();
            let answer: Vec<_> = (0..n)
                .map(|_| results.next().unwrap_or(Err(Error::Closed)))
                .collect();
            let _ = q.reply.send(answer);
        }
    }
    rx.close();
    while let Ok(q) = rx.try_recv() {
        let n = q.appends.len();
        let _ = q.reply.send((0..n).map(|_| Err(Error::Closed)).collect());
    }
}

fn size_of_batch(q: &Queued) -> usize {
    q.appends.iter().map(|a| a.draft.payload.len() + 256).sum()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A staged batch: the answers and the rows to insert.
struct Staged {
    results: Vec<Result<Appended>>,
    /// The first accepted entry (seq, bytes): looked up when the commit's
    /// answer is lost.
    first: Option<(u64, Vec<u8>)>,
    last_seq: Option<u64>,
}

/// One batch, retried on transient failures; every append gets the same
/// kind of answer on failure.
async fn commit(inner: &Inner, appends: &[&Append]) -> Vec<Result<Appended>> {
    let mut backoff = Backoff::new(inner.config.retry, "appending to the ledger");
    let mut unsure: Option<Staged> = None;
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
        match attempt(inner, appends).await {
            Ok(st) => return finish(inner, st),
            Err((fault, st)) => {
                unsure = st;
                if let Err(e) = backoff.failed(fault).await {
                    return fail_all(appends.len(), &e);
                }
            }
        }
    }
}

fn finish(inner: &Inner, st: Staged) -> Vec<Result<Appended>> {
    if let Some(last) = st.last_seq {
        inner.size.fetch_max(last + 1, Ordering::AcqRel);
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

/// What the batch's transaction read.
#[derive(Default)]
struct Seen {
    keys: HashMap<(String, Vec<u8>), u64>,
    quotas: HashMap<String, u64>,
    devices: HashMap<String, Hash>,
}

/// One attempt. On a failed commit the staged batch comes back: its
/// outcome is unknown.
async fn attempt(
    inner: &Inner,
    appends: &[&Append],
) -> std::result::Result<Staged, (Fault, Option<Staged>)> {
    let mut client = inner.pool.get().await.map_err(|e| (e.into(), None))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(|e| (e.into(), None))?;
    let (st, rows) = stage(&tx, appends).await.map_err(|f| (f, None))?;
    if st.first.is_none() {
        // Only refusals: nothing to write.
        let _ = tx.rollback().await;
        return Ok(st);
    }
    write(&tx, rows).await.map_err(|f| (f, None))?;
    match tx.commit().await {
        Ok(()) => Ok(st),
        Err(e) => Err((e.into(), Some(st))),
    }
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

/// Locks the head row, reads what the batch's checks need, and places
/// every acceptable append.
async fn stage(
    tx: &Transaction<'_>,
    appends: &[&Append],
) -> std::result::Result<(Staged, Rows), Fault> {
    let head = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT size, head, last_time_ms, frontier FROM ledger_head WHERE id = 1 FOR UPDATE",
            )
            .await?,
            &[],
        )
        .await?;
    let size = head.get::<_, i64>(0) as u64;
    let mut chain = to_hash(head.get(1), "ledger_head.head")?;
    let mut last_time_ms: i64 = head.get(2);
    let (mut frontier, mut known) = frontier_from(size, head.get(3))?;

    let mut ns = Vec::new();
    let mut values = Vec::new();
    let mut counters = Vec::new();
    let mut rots = Vec::new();
    for a in appends {
        for k in &a.constraints.unique_keys {
            ns.push(k.namespace.clone());
            values.push(k.value.clone());
        }
        if let Some(q) = &a.constraints.quota {
            counters.push(q.counter.clone());
        }
        if !a.draft.rot_id.is_empty() {
            rots.push(a.draft.rot_id.clone());
        }
    }
    rots.sort();
    rots.dedup();
    // The three reads go out together (pipelined), after the head lock.
    let key_stmt = tx
        .prepare_cached(
            "SELECT k.namespace, k.value, k.seq FROM unique_keys k \
             JOIN unnest($1::text[], $2::bytea[]) AS w(namespace, value) \
             ON k.namespace = w.namespace AND k.value = w.value",
        )
        .await?;
    let quota_stmt = tx
        .prepare_cached("SELECT counter, used FROM quotas WHERE counter = ANY($1) FOR UPDATE")
        .await?;
    let device_stmt = tx
        .prepare_cached(
            "SELECT w.rot, e.leaf FROM unnest($1::text[]) AS w(rot) CROSS JOIN LATERAL \
             (SELECT leaf FROM entries WHERE rot_id = w.rot ORDER BY seq DESC LIMIT 1) e",
        )
        .await?;
    let key_params: [&(dyn ToSql + Sync); 2] = [&ns, &values];
    let quota_params: [&(dyn ToSql + Sync); 1] = [&counters];
    let device_params: [&(dyn ToSql + Sync); 1] = [&rots];
    let none = || async { Ok::<_, tokio_postgres::Error>(Vec::new()) };
    let (key_rows, quota_rows, device_rows) = futures::try_join!(
        async {
            if ns.is_empty() {
                none().await
            } else {
                tx.query(&key_stmt, &key_params).await
            }
        },
        async {
            if counters.is_empty() {
                none().await
            } else {
                tx.query(&quota_stmt, &quota_params).await
            }
        },
        async {
            if rots.is_empty() {
                none().await
            } else {
                tx.query(&device_stmt, &device_params).await
            }
        },
    )?;
    let mut seen = Seen::default();
    for r in key_rows {
        seen.keys
            .insert((r.get(0), r.get(1)), r.get::<_, i64>(2) as u64);
    }
    for r in quota_rows {
        seen.quotas.insert(r.get(0), r.get::<_, i64>(1) as u64);
    }
    for r in device_rows {
        seen.devices
            .insert(r.get(0), to_hash(r.get(1), "entries.leaf")?);
    }

    let mut rows = Rows::default();
    let mut results = Vec::with_capacity(appends.len());
    let mut added: HashMap<String, u64> = HashMap::new();
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
            if level > 0 {
                rows.node_levels.push(i16::from(level));
                rows.node_idxs.push(idx as i64);
                rows.node_hashes.push(hash.to_vec());
            }
        });
        for k in &c.unique_keys {
            seen.keys
                .insert((k.namespace.clone(), k.value.clone()), seq);
            rows.key_ns.push(k.namespace.clone());
            rows.key_values.push(k.value.clone());
            rows.key_seqs.push(seq as i64);
        }
        if let Some(q) = &c.quota {
            *added.entry(q.counter.clone()).or_default() += 1;
        }
        if !d.rot_id.is_empty() {
            seen.devices.insert(d.rot_id.clone(), leaf);
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
    let mut added: Vec<_> = added.into_iter().collect();
    added.sort();
    for (counter, n) in added {
        rows.quota_counters.push(counter);
        rows.quota_added.push(n as i64);
    }
    rows.size = next as i64;
    rows.head = chain.to_vec();
    rows.last_time_ms = last_time_ms;
    rows.frontier = frontier_bytes(next, &known)?;
    let last_seq = (next > size).then(|| next - 1);
    Ok((
        Staged {
            results,
            first,
            last_seq,
        },
        rows,
    ))
}

/// Inserts a staged batch's rows and moves the head row, once: the
/// statements go out together (pipelined on the connection, executed in
/// order), so a batch waits for one round trip here, not five.
async fn write(tx: &Transaction<'_>, rows: Rows) -> std::result::Result<(), Fault> {
    let head = tx
        .prepare_cached(
            "UPDATE ledger_head SET size = $1, head = $2, last_time_ms = $3, frontier = $4 \
             WHERE id = 1",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 4] =
        [&rows.size, &rows.head, &rows.last_time_ms, &rows.frontier];
    let update = tx.execute(&head, &params);
    futures::try_join!(insert_rows(tx, &rows), update)?;
    Ok(())
}

/// Inserts rows: entries, Merkle nodes, keys, quota counts (no head row),
/// pipelined.
pub(crate) async fn insert_rows(
    tx: &Transaction<'_>,
    rows: &Rows,
) -> std::result::Result<(), tokio_postgres::Error> {
    // Prepared once per connection.
    let entries = tx
        .prepare_cached(
            "INSERT INTO entries (seq, entry, leaf, rot_id) \
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::text[])",
        )
        .await?;
    let nodes = tx
        .prepare_cached(
            "INSERT INTO merkle_nodes (level, idx, hash) \
             SELECT * FROM unnest($1::int2[], $2::int8[], $3::bytea[])",
        )
        .await?;
    let keys = tx
        .prepare_cached(
            "INSERT INTO unique_keys (namespace, value, seq) \
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[])",
        )
        .await?;
    // Counters sorted, so that concurrent batches lock them in one order.
    let quotas = tx
        .prepare_cached(
            "INSERT INTO quotas (counter, used) SELECT * FROM unnest($1::text[], $2::int8[]) \
             ON CONFLICT (counter) DO UPDATE SET used = quotas.used + excluded.used",
        )
        .await?;
    let entry_params: [&(dyn ToSql + Sync); 4] =
        [&rows.seqs, &rows.entries, &rows.leaves, &rows.rots];
    let node_params: [&(dyn ToSql + Sync); 3] =
        [&rows.node_levels, &rows.node_idxs, &rows.node_hashes];
    let key_params: [&(dyn ToSql + Sync); 3] = [&rows.key_ns, &rows.key_values, &rows.key_seqs];
    let quota_params: [&(dyn ToSql + Sync); 2] = [&rows.quota_counters, &rows.quota_added];
    let mut pending = vec![tx.execute(&entries, &entry_params)];
    if !rows.node_levels.is_empty() {
        pending.push(tx.execute(&nodes, &node_params));
    }
    if !rows.key_ns.is_empty() {
        pending.push(tx.execute(&keys, &key_params));
    }
    if !rows.quota_counters.is_empty() {
        pending.push(tx.execute(&quotas, &quota_params));
    }
    futures::future::try_join_all(pending).await?;
    Ok(())
}
