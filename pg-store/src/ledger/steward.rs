//! The steward task: keeps this replica's view of the size and the latest
//! checkpoint fresh, renews its presence row and looks for other live
//! replicas, takes or renews the signer lease, and — while it holds the
//! lease — signs checkpoints on a cadence (see the parent module doc).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_ledger::checkpoint::{self, SignedCheckpoint};
use custody_ledger::merkle;
use custody_ledger::{Error, Result};
use tokio_postgres::IsolationLevel;

use super::{frontier_from, nodes, Inner, PgLedgerConfig, SIGNER_LEASE};
use crate::db::{self, Fault};

/// The task body.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let tick = tick(&inner.config);
    let mut last_publish = Instant::now();
    let mut first = true;
    loop {
        // The lease is tried at once on open, then every tick.
        let wait = if first { Duration::ZERO } else { tick };
        first = false;
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|&s| s) => break,
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = refresh(&inner).await {
            tracing::debug!(error = %e, "reading the ledger head");
        }
        if let Err(e) = announce(&inner).await {
            tracing::debug!(error = %e, "announcing this replica");
        }
        let holds = match take_lease(&inner).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "renewing the signer lease");
                false
            }
        };
        let uncovered = inner.size.load(Ordering::Acquire) > inner.latest().map_or(0, |c| c.size);
        if holds && uncovered && last_publish.elapsed() >= inner.config.checkpoint_interval {
            last_publish = Instant::now();
            if let Err(e) = publish(&inner).await {
                tracing::warn!(error = %e, "publishing a checkpoint");
            }
        }
    }
    // Closing: withdraw the presence row (another replica pipelines again
    // at its next look), cover what this replica appended (taking the
    // lease if it is free), then hand the lease on.
    if let Err(e) = withdraw(&inner).await {
        tracing::debug!(error = %e, "withdrawing this replica");
    }
    let _ = refresh(&inner).await;
    let uncovered = inner.size.load(Ordering::Acquire) > inner.latest().map_or(0, |c| c.size);
    if (uncovered && take_lease(&inner).await.unwrap_or(false))
        || inner.holds_lease.load(Ordering::Acquire)
    {
        let _ = refresh(&inner).await;
        if inner.size.load(Ordering::Acquire) > inner.latest().map_or(0, |c| c.size) {
            if let Err(e) = publish(&inner).await {
                tracing::warn!(error = %e, "publishing the closing checkpoint");
            }
        }
        if let Err(e) = release_lease(&inner).await {
            tracing::debug!(error = %e, "releasing the signer lease");
        }
    }
}

/// Reads the size and the latest checkpoint.
pub(crate) async fn refresh(inner: &Inner) -> Result<()> {
    let row = db::retry(inner.config.retry, "reading the ledger head", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_one(
                "SELECT h.size, c.note FROM ledger_head h LEFT JOIN LATERAL \
                 (SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1) c ON true \
                 WHERE h.id = 1",
                &[],
            )
            .await?)
    })
    .await?;
    let size: i64 = row.get(0);
    inner.size.fetch_max(size as u64, Ordering::AcqRel);
    if let Some(note) = row.get::<_, Option<String>>(1) {
        let known = inner.latest().map_or(0, |c| c.size);
        let cp = inner.open_note(&note)?;
        if cp.size > known {
            inner.adopt(cp);
        }
    }
    Ok(())
}

/// How often the steward looks: the checkpoint cadence, and at least
/// three times per lease time.
pub(crate) fn tick(config: &PgLedgerConfig) -> Duration {
    config
        .checkpoint_interval
        .min(config.lease_ttl / 3)
        .max(Duration::from_millis(20))
}

/// The prefix of the replicas' presence rows in `leases`.
const PRESENCE: &str = "replica/";

/// This replica's presence row in `leases`.
fn presence_row(inner: &Inner) -> String {
    format!("{PRESENCE}{}", inner.replica)
}

/// Renews this replica's presence row (live for the lease time) and looks
/// whether another replica's is live; the answer is kept in
/// `Inner::others_live` for the sequencer. A replica that dies leaves a
/// row that expires; one that closes removes its row.
pub(crate) async fn announce(inner: &Inner) -> Result<bool> {
    let ttl = inner.config.lease_ttl.as_secs_f64();
    let name = presence_row(inner);
    let others = db::retry(inner.config.retry, "announcing this replica", || async {
        let client = inner.pool.get().await?;
        client
            .execute(
                "INSERT INTO leases (name, holder, expires_at, epoch) \
                 VALUES ($1, $2, now() + make_interval(secs => $3), 0) \
                 ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
                &[&name, &inner.replica, &ttl],
            )
            .await?;
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM leases \
                 WHERE starts_with(name, $1) AND name <> $2 AND expires_at > now()",
                &[&PRESENCE, &name],
            )
            .await?
            .get(0);
        Ok(live > 0)
    })
    .await?;
    let before = inner.others_live.swap(others, Ordering::AcqRel);
    if others != before {
        tracing::debug!(replica = %inner.replica, others, "other replicas live");
    }
    Ok(others)
}

/// Removes this replica's presence row.
async fn withdraw(inner: &Inner) -> Result<()> {
    let name = presence_row(inner);
    db::retry(inner.config.retry, "withdrawing this replica", || async {
        let client = inner.pool.get().await?;
        client
            .execute("DELETE FROM leases WHERE name = $1", &[&name])
            .await?;
        Ok(())
    })
    .await
}

/// Takes the lease if it is free or expired, or renews it; returns whether
/// this replica holds it.
pub(crate) async fn take_lease(inner: &Inner) -> Result<bool> {
    let ttl = inner.config.lease_ttl.as_secs_f64();
    let row = db::retry(inner.config.retry, "renewing the signer lease", || async {
        let client = inner.pool.get().await?;
        Ok(client
            .query_opt(
                "UPDATE leases SET holder = $2, \
                 expires_at = now() + make_interval(secs => $3), \
                 epoch = epoch + CASE WHEN holder = $2 THEN 0 ELSE 1 END \
                 WHERE name = $1 AND (holder = $2 OR expires_at < now()) RETURNING epoch",
                &[&SIGNER_LEASE, &inner.replica, &ttl],
            )
            .await?)
    })
    .await?;
    let holds = row.is_some();
    let before = inner.holds_lease.swap(holds, Ordering::AcqRel);
    if holds && !before {
        let epoch: i64 = row.map_or(0, |r| r.get(0));
        tracing::info!(replica = %inner.replica, epoch, "this replica now signs checkpoints");
    } else if !holds && before {
        tracing::info!(replica = %inner.replica, "this replica no longer signs checkpoints");
    }
    Ok(holds)
}

async fn release_lease(inner: &Inner) -> Result<()> {
    db::retry(inner.config.retry, "releasing the signer lease", || async {
        let client = inner.pool.get().await?;
        client
            .execute(
                "UPDATE leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2",
                &[&SIGNER_LEASE, &inner.replica],
            )
            .await?;
        Ok(())
    })
    .await?;
    inner.holds_lease.store(false, Ordering::Release);
    Ok(())
}

/// Signs and stores a checkpoint of every committed entry, if this replica
/// holds the lease (`None` otherwise). Consistency with the last stored
/// checkpoint is proven from the stored subtrees before signing
/// (invariant 5).
pub(crate) async fn publish(inner: &Inner) -> Result<Option<SignedCheckpoint>> {
    let _one = inner.publishing.lock().await;
    let cp = db::retry(inner.config.retry, "publishing a checkpoint", || async {
        let mut client = inner.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await?;
        let valid = tx
            .query_opt(
                "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND expires_at > now() \
                 FOR UPDATE",
                &[&SIGNER_LEASE, &inner.replica],
            )
            .await?;
        if valid.is_none() {
            inner.holds_lease.store(false, Ordering::Release);
            return Ok(None);
        }
        let head = tx
            .query_one("SELECT size, frontier FROM ledger_head WHERE id = 1", &[])
            .await?;
        let size = head.get::<_, i64>(0) as u64;
        let (frontier, _) = frontier_from(size, head.get(1))?;
        let last = tx
            .query_opt(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|r| inner.open_note(r.get(0)))
            .transpose()?;
        let root = frontier.root();
        if let Some(l) = &last {
            if l.size == size {
                return Ok(Some(l.clone()));
            }
            if l.size > size {
                return Err(Fault::Final(Error::Corrupt {
                    location: format!("tree size {size}"),
                    what: format!(
                        "the ledger holds fewer entries than its last checkpoint ({})",
                        l.size
                    ),
                }));
            }
            let from = l.size;
            let proof = nodes::compute(&*tx, |r| merkle::consistency_proof(r, from, size)).await?;
            merkle::verify_consistency(&proof, &l.root, &root).map_err(|e| {
                Fault::Final(Error::Corrupt {
                    location: format!("tree size {size}"),
                    what: format!(
                        "refusing to sign a checkpoint inconsistent with the last one ({from}): {e}"
                    ),
                })
            })?;
        }
        let signer = inner.signer.clone();
        let key = inner.key.clone();
        let cp = tokio::task::spawn_blocking(move || {
            checkpoint::sign(signer.as_ref(), &key, size, &root)
        })
        .await
        .map_err(|_| Fault::Final(Error::Closed))??;
        tx.execute(
            "INSERT INTO checkpoints (size, root, note, position) VALUES ($1, $2, $3, $1)",
            &[&(size as i64), &cp.root.to_vec(), &cp.note],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(cp))
    })
    .await?;
    if let Some(cp) = &cp {
        inner.adopt(cp.clone());
        tracing::debug!(size = cp.size, "checkpoint published");
    }
    Ok(cp)
}

/// [`custody_ledger::LedgerEngine::publish_checkpoint`]: signs when this
/// replica holds (or can take) the lease; otherwise waits for the signing
/// replica to cover the entries committed so far.
pub(crate) async fn publish_on_demand(inner: &Arc<Inner>) -> Result<SignedCheckpoint> {
    inner.check_open()?;
    if take_lease(inner).await? {
        if let Some(cp) = publish(inner).await? {
            return Ok(cp);
        }
    }
    refresh(inner).await?;
    let target = inner.size.load(Ordering::Acquire);
    let deadline = Instant::now() + inner.config.lease_ttl * 2 + inner.config.checkpoint_interval;
    let mut rx = inner.checkpoint_size.subscribe();
    loop {
        if let Some(cp) = inner.latest().filter(|c| c.size >= target) {
            return Ok(cp);
        }
        if Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "no checkpoint of {target} entries was published in time: the signing replica \
                 may be down (the lease moves to another one within {:?})",
                inner.config.lease_ttl
            )));
        }
        // The signer may have died: try the lease again meanwhile.
        let _ = tokio::time::timeout(inner.config.checkpoint_interval, rx.changed()).await;
        refresh(inner).await?;
        if take_lease(inner).await? {
            if let Some(cp) = publish(inner).await? {
                return Ok(cp);
            }
        }
    }
}
