//! The hub's store on PostgreSQL ([`PgHubStore`], issue 14): the tables of
//! the embedded store (`pg-store/migrations/V2__hub_registry.sql`), each
//! [`HubStore`] write one transaction, so several hub replicas on one
//! database agree.
//!
//! Key design decision: the rules that make replicas agree are database
//! rules. Advancing a site is a compare-and-set on its row, locked for the
//! transaction (`FOR UPDATE`): of two replicas ingesting the same batch one
//! commits and the other is refused, as with the embedded store. Cross-site
//! uniqueness is a constraint: the first site to certify an identity owns
//! its row in `hub_identity_owners`; a second site's insert waits for the
//! first's transaction to end and then conflicts, so two replicas ingesting
//! two sites at once cannot both miss a clone. The cosigned state is a
//! compare-and-set on the site row too.
//!
//! An ingest is a fixed number of statements whatever its batch holds: one
//! `unnest` statement per table, sent together on the connection (the
//! registry's in [`registry`]), so its cost is a few round trips and the
//! rows themselves.
//!
//! [`HubStore`] is synchronous (the embedded store is redb); this store runs
//! its database work on a thread of its own with its own runtime and
//! connection pool, and each call waits for its answer — so it works from
//! any caller, inside an async runtime or not. Transient failures are
//! retried with [`pg_store::db::retry`]; what remains is
//! [`Error::Store`].

use std::sync::Arc;

use custody_ledger::Hash;
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::TryFutureExt;
use pg_store::db::{self, Fault, RetryPolicy};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use crate::embedded::fork_digest;
use crate::error::{Error, Result};
use crate::model::{
    CloneHolder, CloneRecord, Cosigned, CosignedPoint, CustodyState, DeviceRecord, ForkKind,
    ForkRecord, IdentityKind, OrderSiteRow, SiteCounts, SiteRow,
};
mod registry;

use crate::store::{DeviceQuery, HubStore, IngestBatch, Prior, Probe};

type Job = Box<dyn FnOnce(Pool) -> BoxFuture<'static, ()> + Send>;

/// The hub's store in a PostgreSQL database.
pub struct PgHubStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    url: String,
}

impl std::fmt::Debug for PgHubStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHubStore")
            .field("database", &db::redact(&self.url))
            .finish_non_exhaustive()
    }
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn hash(b: &[u8], what: &str) -> std::result::Result<Hash, Fault> {
    b.try_into().map_err(|_| {
        Fault::Final(custody_ledger::Error::Corrupt {
            location: what.into(),
            what: format!("a hash of {} bytes", b.len()),
        })
    })
}

fn corrupt(what: impl Into<String>) -> Fault {
    Fault::Final(custody_ledger::Error::Corrupt {
        location: "hub store".into(),
        what: what.into(),
    })
}

fn hub_error(e: custody_ledger::Error) -> Error {
    match e {
        custody_ledger::Error::Corrupt { location, what } => {
            Error::Corrupt(format!("{location}: {what}"))
        }
        // A compare-and-set that failed is carried as an InvalidArgument.
        custody_ledger::Error::InvalidArgument(m) => Error::Store(m),
        other => Error::Store(other.to_string()),
    }
}

/// A refused compare-and-set (nothing was written).
fn moved(message: String) -> Fault {
    Fault::Final(custody_ledger::Error::InvalidArgument(message))
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgHubStore {
    /// Opens the store in the database at `url`, migrating the schema
    /// first (a newer schema is refused).
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be reached or migrated.
    pub fn open(url: &str) -> Result<Self> {
        let pool = db::pool(url, 8).map_err(store_err)?;
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let migrate_pool = pool.clone();
        std::thread::Builder::new()
            .name("hub-store-pg".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(store_err(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let migrated = async {
                        let mut client =
                            db::retry(RetryPolicy::default(), "connecting", || async {
                                Ok(migrate_pool.get().await?)
                            })
                            .await
                            .map_err(store_err)?;
                        pg_store::schema::migrate(&mut client)
                            .await
                            .map_err(store_err)
                    }
                    .await;
                    let ok = migrated.is_ok();
                    let _ = ready_tx.send(migrated);
                    if !ok {
                        return;
                    }
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job(pool.clone()));
                    }
                });
            })
            .map_err(store_err)?;
        ready_rx
            .recv()
            .map_err(|_| Error::Store("the store thread ended".into()))??;
        Ok(Self {
            jobs,
            url: url.to_string(),
        })
    }

    /// The server's version (`SHOW server_version`, e.g. `15.18 (Debian
    /// 15.18-0+deb12u1)`), for reports that name what they measured.
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be reached.
    pub fn server_version(&self) -> Result<String> {
        self.call("reading the server version", |pool| {
            Box::pin(async move {
                let c = pool.get().await?;
                Ok(c.query_one("SHOW server_version", &[]).await?.get(0))
            })
        })
    }

    /// Runs `op` (retried on transient failures) on the store's thread and
    /// waits for its answer.
    fn call<T, F>(&self, what: &'static str, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Pool) -> BoxFuture<'static, std::result::Result<T, Fault>> + Send + Sync + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let op = Arc::new(op);
        let job: Job = Box::new(move |pool| {
            Box::pin(async move {
                let r = db::retry(RetryPolicy::default(), what, || op(pool.clone())).await;
                let _ = tx.send(r);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Store("the store thread ended".into()))?;
        rx.recv()
            .map_err(|_| Error::Store("the store thread ended".into()))?
            .map_err(hub_error)
    }
}

fn site_row(r: &Row) -> std::result::Result<SiteRow, Fault> {
    let cosigned = match r.get::<_, Option<i64>>("cosigned_size") {
        Some(size) => Some(Cosigned {
            size: size as u64,
            root: hash(
                r.get::<_, Option<&[u8]>>("cosigned_root")
                    .unwrap_or_default(),
                "hub_sites.cosigned_root",
            )?,
            note: r
                .get::<_, Option<String>>("cosigned_note")
                .unwrap_or_default(),
            time: r.get::<_, Option<i64>>("cosigned_time").unwrap_or(0) as u64,
        }),
        None => None,
    };
    Ok(SiteRow {
        size: r.get::<_, i64>("size") as u64,
        head: hash(r.get("head"), "hub_sites.head")?,
        last_time_ms: r.get("last_time_ms"),
        cosigned,
        forks: r.get::<_, i64>("forks") as u64,
    })
}

const SITE_COLUMNS: &str =
    "size, head, last_time_ms, forks, cosigned_size, cosigned_root, cosigned_time, cosigned_note";

fn device_row(r: &Row) -> std::result::Result<DeviceRecord, Fault> {
    Ok(DeviceRecord {
        rot_id: r.get("rot_id"),
        site: r.get("site"),
        serial: r.get("serial"),
        order_id: r.get("order_id"),
        state: CustodyState::from_code(r.get::<_, i16>("state") as u8)
            .ok_or_else(|| corrupt("a device with an unknown state"))?,
        certified_seq: r.get::<_, i64>("certified_seq") as u64,
        last_seq: r.get::<_, i64>("last_seq") as u64,
        certificate: r.get("certificate"),
        device_key_sha256: hash(r.get("device_key_sha256"), "hub_devices.device_key_sha256")?,
        cross_site_clone: r.get("cross_site_clone"),
    })
}

const DEVICE_COLUMNS: &str = "rot_id, site, serial, order_id, state, certified_seq, last_seq, \
                              certificate, device_key_sha256, cross_site_clone";

fn fork_row(r: &Row) -> std::result::Result<ForkRecord, Fault> {
    Ok(ForkRecord {
        id: r.get::<_, i64>("id") as u64,
        site: r.get("site"),
        kind: ForkKind::from_code(r.get::<_, i16>("kind") as u8)
            .ok_or_else(|| corrupt("a fork of an unknown kind"))?,
        position: r.get::<_, i64>("position") as u64,
        held_hash: hash(r.get("held_hash"), "hub_forks.held_hash")?,
        offered_hash: hash(r.get("offered_hash"), "hub_forks.offered_hash")?,
        held_entry: r.get("held_entry"),
        offered_entry: r.get("offered_entry"),
        held_note: r.get("held_note"),
        offered_note: r.get("offered_note"),
        reason: r.get("reason"),
        time_ms: r.get("time_ms"),
        repeats: r.get::<_, i64>("repeats") as u64,
    })
}

const FORK_COLUMNS: &str = "id, site, kind, position, held_hash, offered_hash, held_entry, \
                            offered_entry, held_note, offered_note, reason, time_ms, repeats";

fn order_row(r: &Row) -> std::result::Result<OrderSiteRow, Fault> {
    Ok(OrderSiteRow {
        order_id: r.get("order_id"),
        site: r.get("site"),
        opened: r.get("opened"),
        opened_seq: r.get::<_, i64>("opened_seq") as u64,
        quantity: r.get::<_, i64>("quantity") as u64,
        allocation: r.get::<_, i64>("allocation") as u64,
        terms_sha256: hash(r.get("terms_sha256"), "hub_orders.terms_sha256")?,
        certified: r.get::<_, i64>("certified") as u64,
        scrapped: r.get::<_, i64>("scrapped") as u64,
    })
}

/// Locks the site's row (creating the default one first).
async fn lock_site(
    tx: &deadpool_postgres::Transaction<'_>,
    site: &str,
) -> std::result::Result<SiteRow, Fault> {
    let d = SiteRow::default();
    let lock_sql = format!("SELECT {SITE_COLUMNS} FROM hub_sites WHERE site = $1 FOR UPDATE");
    let (create, lock) = futures::try_join!(
        tx.prepare_cached(
            "INSERT INTO hub_sites (site, size, head, last_time_ms) VALUES ($1, 0, $2, $3) \
             ON CONFLICT (site) DO NOTHING",
        ),
        tx.prepare_cached(&lock_sql),
    )?;
    let create_p: [&(dyn ToSql + Sync); 3] = [&site, &&d.head[..], &d.last_time_ms];
    let lock_p: [&(dyn ToSql + Sync); 1] = [&site];
    let (_, r) = futures::try_join!(tx.execute(&create, &create_p), tx.query_one(&lock, &lock_p),)?;
    site_row(&r)
}

const ADVANCE_SITE: &str =
    "UPDATE hub_sites SET size = $2, head = $3, last_time_ms = $4 WHERE site = $1";

const PUT_ENTRIES: &str = "INSERT INTO hub_entries (site, seq, entry) \
     SELECT $1, * FROM unnest($2::int8[], $3::bytea[])";

const PUT_NODES: &str = "INSERT INTO hub_nodes (site, level, idx, hash) \
     SELECT $1, * FROM unnest($2::int2[], $3::int8[], $4::bytea[]) \
     ON CONFLICT (site, level, idx) DO UPDATE SET hash = excluded.hash";

const PUT_HEADS: &str = "INSERT INTO hub_device_heads (site, rot_id, leaf) \
     SELECT $1, * FROM unnest($2::text[], $3::bytea[]) \
     ON CONFLICT (site, rot_id) DO UPDATE SET leaf = excluded.leaf";

const PUT_KEYS: &str = "INSERT INTO hub_keys (site, key, seq) \
     SELECT $1, * FROM unnest($2::bytea[], $3::int8[]) \
     ON CONFLICT (site, key) DO UPDATE SET seq = excluded.seq";

const PUT_QUOTAS: &str = "INSERT INTO hub_quotas (site, counter, used) \
     SELECT $1, * FROM unnest($2::text[], $3::int8[]) \
     ON CONFLICT (site, counter) DO UPDATE SET used = excluded.used";

const PUT_DEVICE_ENTRIES: &str = "INSERT INTO hub_device_entries (site, rot_id, seq) \
     SELECT $1, * FROM unnest($2::text[], $3::int8[]) ON CONFLICT DO NOTHING";

async fn begin(
    client: &mut deadpool_postgres::Object,
) -> std::result::Result<deadpool_postgres::Transaction<'_>, Fault> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?)
}

impl HubStore for PgHubStore {
    fn site(&self, site: &str) -> Result<SiteRow> {
        let site = site.to_string();
        self.call("reading a site", move |pool| {
            let site = site.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                match c
                    .query_opt(
                        &format!("SELECT {SITE_COLUMNS} FROM hub_sites WHERE site = $1"),
                        &[&site],
                    )
                    .await?
                {
                    Some(r) => site_row(&r),
                    None => Ok(SiteRow::default()),
                }
            })
        })
    }

    fn prior(&self, site: &str, probe: &Probe) -> Result<Prior> {
        let site = site.to_string();
        let probe = probe.clone();
        self.call("reading what a batch needs", move |pool| {
            let (site, probe) = (site.clone(), probe.clone());
            Box::pin(async move {
                let c = pool.get().await?;
                let mut prior = Prior::default();
                if !probe.rot_ids.is_empty() {
                    for r in c
                        .query(
                            "SELECT rot_id, leaf FROM hub_device_heads \
                             WHERE site = $1 AND rot_id = ANY($2)",
                            &[&site, &probe.rot_ids],
                        )
                        .await?
                    {
                        prior
                            .device_heads
                            .insert(r.get(0), hash(r.get(1), "hub_device_heads.leaf")?);
                    }
                }
                if !probe.keys.is_empty() {
                    for r in c
                        .query(
                            "SELECT key, seq FROM hub_keys WHERE site = $1 AND key = ANY($2)",
                            &[&site, &probe.keys],
                        )
                        .await?
                    {
                        prior
                            .key_holders
                            .insert(r.get(0), r.get::<_, i64>(1) as u64);
                    }
                }
                if !probe.counters.is_empty() {
                    for r in c
                        .query(
                            "SELECT counter, used FROM hub_quotas \
                             WHERE site = $1 AND counter = ANY($2)",
                            &[&site, &probe.counters],
                        )
                        .await?
                    {
                        prior.quotas.insert(r.get(0), r.get::<_, i64>(1) as u64);
                    }
                }
                Ok(prior)
            })
        })
    }

    fn node(&self, site: &str, level: u8, index: u64) -> Result<Option<Hash>> {
        let site = site.to_string();
        self.call("reading a node", move |pool| {
            let site = site.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                c.query_opt(
                    "SELECT hash FROM hub_nodes WHERE site = $1 AND level = $2 AND idx = $3",
                    &[&site, &i16::from(level), &i(index)],
                )
                .await?
                .map(|r| hash(r.get(0), "hub_nodes.hash"))
                .transpose()
            })
        })
    }

    fn entries(&self, site: &str, start: u64, end: u64) -> Result<Vec<Vec<u8>>> {
        let site = site.to_string();
        self.call("reading entries", move |pool| {
            let site = site.clone();
            Box::pin(async move {
                if start >= end {
                    return Ok(Vec::new());
                }
                let c = pool.get().await?;
                Ok(c.query(
                    "SELECT entry FROM hub_entries WHERE site = $1 AND seq >= $2 AND seq < $3 \
                         ORDER BY seq",
                    &[&site, &i(start), &i(end)],
                )
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect())
            })
        })
    }

    fn commit_ingest(&self, batch: &IngestBatch) -> Result<()> {
        let batch = Arc::new((batch.clone(), registry::Folded::new(&batch.events)));
        self.call("committing an ingest", move |pool| {
            let b = batch.clone();
            Box::pin(async move {
                let (b, folded) = (&b.0, &b.1);
                let mut client = pool.get().await?;
                let tx = begin(&mut client).await?;
                let site = b.site.as_str();
                let stored = lock_site(&tx, site).await?;
                if stored.size != b.from {
                    return Err(moved(format!(
                        "site {site} is at {} entries, not {}: another writer moved it",
                        stored.size, b.from
                    )));
                }
                let seqs: Vec<i64> = (0..b.entries.len() as u64).map(|k| i(b.from + k)).collect();
                let levels: Vec<i16> = b.nodes.iter().map(|n| i16::from(n.0)).collect();
                let idxs: Vec<i64> = b.nodes.iter().map(|n| i(n.1)).collect();
                let hashes: Vec<&[u8]> = b.nodes.iter().map(|n| &n.2[..]).collect();
                let head_rots: Vec<&str> = b.device_heads.iter().map(|d| d.0.as_str()).collect();
                let leaves: Vec<&[u8]> = b.device_heads.iter().map(|d| &d.1[..]).collect();
                let keys: Vec<&[u8]> = b.keys.iter().map(|k| k.0.as_slice()).collect();
                let holders: Vec<i64> = b.keys.iter().map(|k| i(k.1)).collect();
                let counters: Vec<&str> = b.quotas.iter().map(|q| q.0.as_str()).collect();
                let used: Vec<i64> = b.quotas.iter().map(|q| i(q.1)).collect();
                let entry_rots: Vec<&str> = b.device_entries.iter().map(|d| d.0.as_str()).collect();
                let entry_seqs: Vec<i64> = b.device_entries.iter().map(|d| i(d.1)).collect();
                let (advance, entries, nodes, heads, keys_s, quotas, device_entries) = futures::try_join!(
                    tx.prepare_cached(ADVANCE_SITE),
                    tx.prepare_cached(PUT_ENTRIES),
                    tx.prepare_cached(PUT_NODES),
                    tx.prepare_cached(PUT_HEADS),
                    tx.prepare_cached(PUT_KEYS),
                    tx.prepare_cached(PUT_QUOTAS),
                    tx.prepare_cached(PUT_DEVICE_ENTRIES),
                )?;
                // Everything goes out at once on the connection; the
                // registry's statements follow in the same pipeline.
                let size = i(b.row.size);
                let head = &b.row.head[..];
                let advance_p: [&(dyn ToSql + Sync); 4] = [&site, &size, &head, &b.row.last_time_ms];
                let entries_p: [&(dyn ToSql + Sync); 3] = [&site, &seqs, &b.entries];
                let nodes_p: [&(dyn ToSql + Sync); 4] = [&site, &levels, &idxs, &hashes];
                let heads_p: [&(dyn ToSql + Sync); 3] = [&site, &head_rots, &leaves];
                let keys_p: [&(dyn ToSql + Sync); 3] = [&site, &keys, &holders];
                let quotas_p: [&(dyn ToSql + Sync); 3] = [&site, &counters, &used];
                let device_entries_p: [&(dyn ToSql + Sync); 3] = [&site, &entry_rots, &entry_seqs];
                futures::try_join!(
                    tx.execute(&advance, &advance_p).err_into(),
                    tx.execute(&entries, &entries_p).err_into(),
                    tx.execute(&nodes, &nodes_p).err_into(),
                    tx.execute(&heads, &heads_p).err_into(),
                    tx.execute(&keys_s, &keys_p).err_into(),
                    tx.execute(&quotas, &quotas_p).err_into(),
                    tx.execute(&device_entries, &device_entries_p).err_into(),
                    registry::write(&tx, site, folded),
                )?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn commit_cosigned(&self, site: &str, expected_size: u64, cosigned: &Cosigned) -> Result<()> {
        let site = site.to_string();
        let cosigned = cosigned.clone();
        self.call("committing a cosignature", move |pool| {
            let (site, c) = (site.clone(), cosigned.clone());
            Box::pin(async move {
                let mut client = pool.get().await?;
                let tx = begin(&mut client).await?;
                let row = lock_site(&tx, &site).await?;
                let held = row.cosigned.as_ref().map_or(0, |c| c.size);
                if held != expected_size {
                    return Err(moved(format!(
                        "site {site}'s cosigned size is {held}, not {expected_size}: another writer moved it"
                    )));
                }
                tx.execute(
                    "UPDATE hub_sites SET cosigned_size = $2, cosigned_root = $3, \
                     cosigned_time = $4, cosigned_note = $5 WHERE site = $1",
                    &[&site, &i(c.size), &c.root.to_vec(), &i(c.time), &c.note],
                )
                .await?;
                tx.execute(
                    "INSERT INTO hub_cosignatures (site, size, time, root) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&site, &i(c.size), &i(c.time), &c.root.to_vec()],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn record_fork(&self, fork: &ForkRecord) -> Result<ForkRecord> {
        let fork = fork.clone();
        self.call("recording a fork", move |pool| {
            let f = fork.clone();
            Box::pin(async move {
                let mut client = pool.get().await?;
                let tx = begin(&mut client).await?;
                let digest = fork_digest(&f).to_vec();
                let r = tx
                    .query_one(
                        &format!(
                            "INSERT INTO hub_forks (digest, site, kind, position, held_hash, \
                             offered_hash, held_entry, offered_entry, held_note, offered_note, \
                             reason, time_ms, repeats) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0) \
                             ON CONFLICT (digest) DO UPDATE SET repeats = hub_forks.repeats + 1 \
                             RETURNING {FORK_COLUMNS}, (xmax = 0) AS inserted"
                        ),
                        &[
                            &digest,
                            &f.site,
                            &i16::from(f.kind.code()),
                            &i(f.position),
                            &f.held_hash.to_vec(),
                            &f.offered_hash.to_vec(),
                            &f.held_entry,
                            &f.offered_entry,
                            &f.held_note,
                            &f.offered_note,
                            &f.reason,
                            &f.time_ms,
                        ],
                    )
                    .await?;
                let stored = fork_row(&r)?;
                if r.get::<_, bool>("inserted") {
                    lock_site(&tx, &f.site).await?;
                    tx.execute(
                        "UPDATE hub_sites SET forks = forks + 1 WHERE site = $1",
                        &[&f.site],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(stored)
            })
        })
    }

    fn devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceRecord>> {
        let query = query.clone();
        self.call("reading devices", move |pool| {
            let q = query.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                let rows = match &q {
                    DeviceQuery::RotId(rot) => {
                        c.query(
                            &format!(
                                "SELECT {DEVICE_COLUMNS} FROM hub_devices WHERE rot_id = $1 \
                                 ORDER BY site"
                            ),
                            &[rot],
                        )
                        .await?
                    }
                    DeviceQuery::Serial(serial) => {
                        c.query(
                            &format!(
                                "SELECT {DEVICE_COLUMNS} FROM hub_devices WHERE serial = $1 \
                                 AND serial <> '' ORDER BY site"
                            ),
                            &[serial],
                        )
                        .await?
                    }
                };
                rows.iter().map(device_row).collect()
            })
        })
    }

    fn site_counts(&self, site: &str) -> Result<SiteCounts> {
        let site = site.to_string();
        self.call("reading site counts", move |pool| {
            let site = site.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                Ok(c.query_opt(
                    "SELECT certified, shipped, received, scrapped FROM hub_site_counts \
                         WHERE site = $1",
                    &[&site],
                )
                .await?
                .map(|r| SiteCounts {
                    certified: r.get::<_, i64>(0) as u64,
                    shipped: r.get::<_, i64>(1) as u64,
                    received: r.get::<_, i64>(2) as u64,
                    scrapped: r.get::<_, i64>(3) as u64,
                })
                .unwrap_or_default())
            })
        })
    }

    fn order_rows(&self, order_id: Option<&str>) -> Result<Vec<OrderSiteRow>> {
        let order_id = order_id.map(str::to_string);
        self.call("reading orders", move |pool| {
            let order_id = order_id.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT order_id, site, opened, opened_seq, quantity, allocation, \
                         terms_sha256, certified, scrapped FROM hub_orders \
                         WHERE $1::text IS NULL OR order_id = $1 ORDER BY order_id, site",
                        &[&order_id],
                    )
                    .await?;
                rows.iter().map(order_row).collect()
            })
        })
    }

    fn forks(&self, site: Option<&str>) -> Result<Vec<ForkRecord>> {
        let site = site.map(str::to_string);
        self.call("reading forks", move |pool| {
            let site = site.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        &format!(
                            "SELECT {FORK_COLUMNS} FROM hub_forks \
                             WHERE $1::text IS NULL OR site = $1 ORDER BY id"
                        ),
                        &[&site],
                    )
                    .await?;
                rows.iter().map(fork_row).collect()
            })
        })
    }

    fn device_entries(&self, site: &str, rot_id: &str) -> Result<Vec<u64>> {
        let (site, rot_id) = (site.to_string(), rot_id.to_string());
        self.call("reading a device's entries", move |pool| {
            let (site, rot_id) = (site.clone(), rot_id.clone());
            Box::pin(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT seq FROM hub_device_entries WHERE site = $1 AND rot_id = $2 \
                         ORDER BY seq",
                        &[&site, &rot_id],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
            })
        })
    }

    fn cosignatures(&self, site: &str) -> Result<Vec<CosignedPoint>> {
        let site = site.to_string();
        self.call("reading cosignatures", move |pool| {
            let site = site.clone();
            Box::pin(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT size, time, root FROM hub_cosignatures WHERE site = $1 \
                         ORDER BY size",
                        &[&site],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(CosignedPoint {
                            size: r.get::<_, i64>(0) as u64,
                            time: r.get::<_, i64>(1) as u64,
                            root: hash(r.get(2), "hub_cosignatures.root")?,
                        })
                    })
                    .collect()
            })
        })
    }

    fn clones(&self) -> Result<Vec<CloneRecord>> {
        self.call("reading clones", move |pool| {
            Box::pin(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT c.kind, c.value, c.detected_ms, i.site, i.seq, i.rot_id, i.serial \
                         FROM hub_clones c JOIN hub_identities i \
                         ON i.kind = c.kind AND i.value = c.value \
                         ORDER BY c.kind, c.value, i.site",
                        &[],
                    )
                    .await?;
                let mut out: Vec<CloneRecord> = Vec::new();
                for r in rows {
                    let kind = IdentityKind::from_code(r.get::<_, i16>(0) as u8)
                        .ok_or_else(|| corrupt("a stored clone has an unknown kind"))?;
                    let value: Vec<u8> = r.get(1);
                    let holder = CloneHolder {
                        site: r.get(3),
                        seq: r.get::<_, i64>(4) as u64,
                        rot_id: r.get(5),
                        serial: r.get(6),
                    };
                    match out.last_mut() {
                        Some(last) if last.kind == kind && last.value == value => {
                            last.holders.push(holder);
                        }
                        _ => out.push(CloneRecord {
                            kind,
                            value,
                            holders: vec![holder],
                            detected_ms: r.get(2),
                        }),
                    }
                }
                Ok(out)
            })
        })
    }
}
