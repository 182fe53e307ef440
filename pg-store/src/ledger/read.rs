//! Reads: entries, key lookups, quotas, proofs and device histories, from
//! any connection of the pool. Readers see committed entries only.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use custody_ledger::merkle::{self, ConsistencyProof, Hash, InclusionProof};
use custody_ledger::{DeviceHistory, Error, ProvenEntry, Result, StoredEntry, UniqueKey};

use super::{nodes, steward, Inner};
use crate::db;

pub(crate) async fn entry(inner: &Inner, seq: u64) -> Result<Vec<u8>> {
    inner.check_open()?;
    let s = i64::try_from(seq).map_err(|_| Error::NotFound(format!("entry {seq}")))?;
    let row = db::retry(inner.config.retry, "reading an entry", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_opt("SELECT entry FROM entries WHERE seq = $1", &[&s])
            .await?)
    })
    .await?;
    row.map(|r| r.get::<_, Vec<u8>>(0)).ok_or_else(|| {
        Error::NotFound(format!(
            "entry {seq} (the ledger has {} entries)",
            inner.size.load(Ordering::Acquire)
        ))
    })
}

pub(crate) async fn entries(
    inner: &Inner,
    start: u64,
    end: u64,
    limit: usize,
) -> Result<Vec<StoredEntry>> {
    inner.check_open()?;
    let end = end.min(start.saturating_add(limit as u64));
    if start >= end {
        return Ok(Vec::new());
    }
    let (a, b) = (clamp(start), clamp(end));
    let rows = db::retry(inner.config.retry, "reading entries", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query(
                "SELECT seq, entry FROM entries WHERE seq >= $1 AND seq < $2 ORDER BY seq",
                &[&a, &b],
            )
            .await?)
    })
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        let seq = r.get::<_, i64>(0) as u64;
        // Only a prefix of the range may be committed; a gap is damage.
        if seq != start + i as u64 {
            return Err(Error::Corrupt {
                location: format!("entries table at seq {}", start + i as u64),
                what: "the entry is missing".into(),
            });
        }
        out.push(StoredEntry {
            seq,
            entry: r.get(1),
        });
    }
    Ok(out)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) async fn lookup_key(inner: &Inner, key: UniqueKey) -> Result<Option<u64>> {
    inner.check_open()?;
    key.validate()?;
    let row = db::retry(inner.config.retry, "looking a key up", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT seq FROM unique_keys WHERE namespace = $1 AND value = $2",
                &[&key.namespace, &key.value],
            )
            .await?)
    })
    .await?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

pub(crate) async fn quota(inner: &Inner, counter: String) -> Result<u64> {
    inner.check_open()?;
    let row = db::retry(inner.config.retry, "reading a quota", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_opt("SELECT used FROM quotas WHERE counter = $1", &[&counter])
            .await?)
    })
    .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// The committed size, read from the head row.
async fn db_size(inner: &Inner) -> Result<u64> {
    let row = db::retry(inner.config.retry, "reading the ledger size", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_one("SELECT size FROM ledger_head WHERE id = 1", &[])
            .await?)
    })
    .await?;
    let size = row.get::<_, i64>(0) as u64;
    inner.size.fetch_max(size, Ordering::AcqRel);
    Ok(size)
}

async fn resolve_size(inner: &Inner, tree_size: u64) -> Result<u64> {
    if tree_size == 0 {
        return inner
            .latest()
            .map(|c| c.size)
            .ok_or_else(|| Error::NotFound("no checkpoint has been published yet".into()));
    }
    if tree_size > inner.size.load(Ordering::Acquire) {
        let size = db_size(inner).await?;
        if tree_size > size {
            return Err(Error::OutOfRange(format!(
                "tree size {tree_size} is beyond the ledger's {size} entries"
            )));
        }
    }
    Ok(tree_size)
}

pub(crate) async fn inclusion_proof(
    inner: &Inner,
    seq: u64,
    tree_size: u64,
) -> Result<InclusionProof> {
    inner.check_open()?;
    let size = resolve_size(inner, tree_size).await?;
    if seq >= size {
        return Err(Error::OutOfRange(format!(
            "entry {seq} is not in the tree of {size} entries"
        )));
    }
    db::retry(inner.config.retry, "proving inclusion", || async {
        let client = inner.pool.get().await?;
        nodes::compute(&**client, |r| merkle::inclusion_proof(r, seq, size)).await
    })
    .await
}

pub(crate) async fn consistency_proof(
    inner: &Inner,
    from_size: u64,
    to_size: u64,
) -> Result<ConsistencyProof> {
    inner.check_open()?;
    let to = resolve_size(inner, to_size).await?;
    db::retry(inner.config.retry, "proving consistency", || async {
        let client = inner.pool.get().await?;
        nodes::compute(&**client, |r| merkle::consistency_proof(r, from_size, to)).await
    })
    .await
}

/// The root of the first `tree_size` entries (0: the empty tree, unlike
/// the proofs, where 0 names the latest checkpoint's size).
pub(crate) async fn root(inner: &Inner, tree_size: u64) -> Result<Hash> {
    inner.check_open()?;
    if tree_size == 0 {
        return Ok(merkle::empty_root());
    }
    let size = resolve_size(inner, tree_size).await?;
    db::retry(inner.config.retry, "computing a root", || async {
        let client = inner.pool.get().await?;
        nodes::compute(&**client, |r| merkle::root(r, size)).await
    })
    .await
}

pub(crate) async fn device_history(inner: &Arc<Inner>, rot_id: String) -> Result<DeviceHistory> {
    inner.check_open()?;
    if !trustline_proto::identity::is_well_formed_rot_id(&rot_id) {
        return Err(Error::InvalidArgument(
            "rot_id must be 64 lowercase hex characters".into(),
        ));
    }
    let last = db::retry(inner.config.retry, "reading a device history", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_opt("SELECT max(seq) FROM entries WHERE rot_id = $1", &[&rot_id])
            .await?
            .and_then(|r| r.get::<_, Option<i64>>(0)))
    })
    .await?;
    let needs = last.map_or(0, |s| s as u64 + 1);
    let checkpoint = match inner.latest() {
        Some(c) if c.size >= needs => c,
        _ => steward::publish_on_demand(inner).await?,
    };
    let size = checkpoint.size;
    let entries = db::retry(inner.config.retry, "proving a device history", || async {
        let client = inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, entry FROM entries WHERE rot_id = $1 AND seq < $2 ORDER BY seq",
                &[&rot_id, &(size as i64)],
            )
            .await?;
        let seqs: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        let proofs = nodes::compute(&**client, |r| {
            seqs.iter()
                .map(|&s| merkle::inclusion_proof(r, s, size))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        Ok(rows
            .into_iter()
            .zip(proofs)
            .map(|(r, proof)| ProvenEntry {
                entry: StoredEntry {
                    seq: r.get::<_, i64>(0) as u64,
                    entry: r.get(1),
                },
                proof,
            })
            .collect())
    })
    .await?;
    Ok(DeviceHistory {
        checkpoint,
        entries,
    })
}
