//! The custody ledger on PostgreSQL: [`PgLedger`], a
//! [`custody_ledger::LedgerEngine`].
//!
//! Key design decision: the database is the only state shared between
//! replicas, and every rule is decided inside a transaction.
//!
//! - **Appends** (`sequencer.rs`, `batch.rs`): each process queues appends
//!   to one task that takes all of them at once (group commit) into one
//!   transaction. The batch checks the unique keys, quotas and device
//!   chains of the whole batch against the tables and the batch itself,
//!   assigns the range `[size, size + n)`, inserts entries (their exact
//!   bytes), Merkle nodes, keys and quota counts, moves the single head row
//!   once — a compare-and-swap on the state it was placed on, judged by the
//!   server (`ledger_advance`, schema V6), so batches of every replica make
//!   one linear history — and commits with `synchronous_commit = on`, the
//!   `COMMIT` sent in one pipeline behind the compare-and-swap. Only then
//!   is each append answered (invariants 1, 2, 4). Keys are inserted
//!   without a lookup, the `unique_keys` primary key being the check and
//!   the backstop for invariant 2 (a held key rolls the batch back, and it
//!   is placed again with the holders read first). Two batches of a
//!   replica are in flight at once (the next placed after the one
//!   committing) while no other replica writes; otherwise one at a time on
//!   the locked head row. The transaction is driven by hand (`tx.rs`) so
//!   that its `BEGIN` and `COMMIT` can share pipelines with its statements.
//! - **Presence** (`steward.rs`): each replica renews a row of its own in
//!   `leases` every tick and looks for others' live rows; it pipelines
//!   only while it sees none, so two replicas' batches do not first
//!   collide to find out about each other.
//! - **Checkpoints** (`steward.rs`): one replica at a time signs, the holder
//!   of a lease row with an expiry in database time (no advisory locks:
//!   the PostgreSQL-compatible distributed engines lack them). It signs
//!   inside a transaction that locks the lease row and checks it still
//!   holds it, after checking consistency with the last checkpoint
//!   (invariant 5); `checkpoints.size` is the primary key, so two
//!   checkpoints of one size cannot both be stored. When the holder dies
//!   its lease expires and another replica takes over within
//!   [`PgLedgerConfig::lease_ttl`] and a tick.
//! - **Reads** (`read.rs`) go to any connection of the pool; proofs read
//!   the stored subtrees (`nodes.rs`).
//! - **Failures**: serialization failures and lost connections are retried
//!   with bounded backoff ([`crate::db`]); when the server stays down the
//!   callers get [`custody_ledger::Error::Unavailable`] and the pool
//!   reconnects by itself later. A commit whose answer was lost is looked
//!   up before it is retried, so it is never applied twice.

pub(crate) mod batch;
mod nodes;
mod read;
pub(crate) mod sequencer;
mod steward;
mod tx;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use custody_ledger::checkpoint::{self, LedgerKey, SignedCheckpoint};
use custody_ledger::engine::{Append, EngineFuture, LedgerEngine};
use custody_ledger::merkle::{ConsistencyProof, InclusionProof};
use custody_ledger::{Appended, DeviceHistory, StoredEntry, UniqueKey};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use trustline_proto::signer::Signer;

use crate::db::{self, RetryPolicy};
use crate::error::{Error, Result};
use crate::schema;

pub(crate) use nodes::{
    fetch as fetch_nodes, frontier_bytes, frontier_from, frontier_positions, to_hash, MapNodes,
    LOWEST_STORED,
};

/// The name of the lease row that decides the checkpoint signer.
pub const SIGNER_LEASE: &str = "checkpoint-signer";

/// How a PostgreSQL ledger is opened.
#[derive(Debug, Clone)]
pub struct PgLedgerConfig {
    /// The database: a `postgres://` URL or a key=value connection string.
    pub url: String,
    /// The checkpoint origin and signed-note key name.
    pub origin: String,
    /// How often the signer publishes a checkpoint while there are new
    /// entries.
    pub checkpoint_interval: Duration,
    /// How long the signer's lease lasts unless renewed (renewed every
    /// third of it): the longest a dead signer delays checkpoints.
    pub lease_ttl: Duration,
    /// Most appends in one transaction.
    pub max_batch: usize,
    /// Connections in the pool (one per batch in flight, the rest for
    /// reads and the checkpoint signer).
    pub pool_size: usize,
    /// Batches of this replica in flight at once: one committing, the
    /// others placed after it (see `ledger/batch.rs`). 1: one batch at a
    /// time, each on the locked head row. A replica that sees another
    /// replica's writes runs at depth 1 for a while by itself.
    pub pipeline_depth: usize,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// This replica's name in the lease row; `None`: host, process id and
    /// a random suffix.
    pub replica: Option<String>,
}

impl PgLedgerConfig {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            origin: custody_ledger::DEFAULT_ORIGIN.to_string(),
            checkpoint_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(3),
            max_batch: 1024,
            pool_size: 16,
            pipeline_depth: 2,
            retry: RetryPolicy::default(),
            replica: None,
        }
    }
}

/// Counts of a replica's committed batches (see [`PgLedger::batch_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches that wrote entries.
    pub committed: u64,
    /// Of those, the ones placed after a batch still in flight (the
    /// pipeline of two; the rest were placed on a locked head row).
    pub pipelined: u64,
}

/// A batch of appends queued for the sequencer.
pub(crate) struct Queued {
    pub(crate) appends: Vec<Append>,
    pub(crate) reply: oneshot::Sender<Vec<custody_ledger::Result<Appended>>>,
}

/// State shared by the handles and the two tasks.
pub(crate) struct Inner {
    pub(crate) config: PgLedgerConfig,
    pub(crate) pool: Pool,
    pub(crate) key: LedgerKey,
    pub(crate) signer: Arc<dyn Signer>,
    pub(crate) replica: String,
    /// Entries known to be durable (this replica's commits and what the
    /// steward last read).
    pub(crate) size: AtomicU64,
    /// Batches this replica committed, and how many of them were placed
    /// after one in flight.
    pub(crate) committed: AtomicU64,
    pub(crate) pipelined: AtomicU64,
    pub(crate) latest: RwLock<Option<SignedCheckpoint>>,
    pub(crate) checkpoint_size: watch::Sender<u64>,
    pub(crate) holds_lease: AtomicBool,
    /// Whether another replica's presence row was live at the last look
    /// (`steward::announce`): while one is, this replica does not pipeline.
    pub(crate) others_live: AtomicBool,
    /// Serializes this replica's signing.
    pub(crate) publishing: tokio::sync::Mutex<()>,
    pub(crate) closed: AtomicBool,
    pub(crate) queue: mpsc::UnboundedSender<Queued>,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Inner {
    pub(crate) fn check_open(&self) -> custody_ledger::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(custody_ledger::Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn latest(&self) -> Option<SignedCheckpoint> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adopts a checkpoint if it is newer than the one known.
    pub(crate) fn adopt(&self, cp: SignedCheckpoint) {
        let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
        if latest.as_ref().is_none_or(|l| l.size < cp.size) {
            let size = cp.size;
            *latest = Some(cp);
            drop(latest);
            self.size.fetch_max(size, Ordering::AcqRel);
            self.checkpoint_size.send_replace(size);
        }
    }

    /// Opens a checkpoint note read from the database: it must carry a
    /// valid signature by this ledger's key (a row altered in the database
    /// is refused, never served).
    pub(crate) fn open_note(&self, note: &str) -> custody_ledger::Result<SignedCheckpoint> {
        checkpoint::open(note, self.key.spki(), Some(self.key.origin()))
    }
}

/// Stops the tasks when the last handle goes.
struct CloseGuard {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
    }
}

/// A handle on a custody ledger in PostgreSQL. Cheap to clone; the tasks
/// stop when the last handle is dropped or [`PgLedger::close`] is called.
#[derive(Clone)]
pub struct PgLedger {
    inner: Arc<Inner>,
    guard: Arc<CloseGuard>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("database", &db::redact(&self.inner.config.url))
            .field("replica", &self.inner.replica)
            .field("size", &self.inner.size.load(Ordering::Relaxed))
            .finish()
    }
}

fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 4];
    let _ = getrandom_bytes(&mut r);
    format!("{host}-{}-{}", std::process::id(), hex::encode(r))
}

fn getrandom_bytes(out: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(out)
}

impl PgLedger {
    /// Opens (or creates) the ledger in the database of `config.url`,
    /// signing checkpoints with `signer` when this replica holds the lease.
    /// The schema is migrated first; a newer schema is refused.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached,
    /// [`Error::SchemaTooNew`], [`Error::Migration`],
    /// [`Error::OtherLedger`] when the database holds another key or
    /// origin, [`Error::Config`].
    pub async fn open(config: PgLedgerConfig, signer: Arc<dyn Signer>) -> Result<PgLedger> {
        let key = LedgerKey::new(&config.origin, signer.public_key_der())?;
        let pool = db::pool(&config.url, config.pool_size)?;
        let mut client = connect(&pool, config.retry).await?;
        schema::migrate(&mut client).await?;
        check_meta(&client, &key).await?;
        let row = client
            .query_one(
                "SELECT h.size, c.note FROM ledger_head h LEFT JOIN LATERAL \
                 (SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1) c ON true \
                 WHERE h.id = 1",
                &[],
            )
            .await
            .map_err(|e| database("reading the head row", e))?;
        drop(client);
        let size: i64 = row.get(0);
        let latest = match row.get::<_, Option<String>>(1) {
            Some(note) => Some(checkpoint::open(&note, key.spki(), Some(key.origin()))?),
            None => None,
        };
        let latest_size = latest.as_ref().map_or(0, |c| c.size);
        let (queue, rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let (checkpoint_size, _) = watch::channel(latest_size);
        let replica = config.replica.clone().unwrap_or_else(replica_name);
        let inner = Arc::new(Inner {
            config,
            pool,
            key,
            signer,
            replica,
            size: AtomicU64::new(size as u64),
            committed: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
            latest: RwLock::new(latest),
            checkpoint_size,
            holds_lease: AtomicBool::new(false),
            // Until the first look says otherwise.
            others_live: AtomicBool::new(true),
            publishing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            queue,
            shutdown,
        });
        // Before the first batch: whether it may pipeline. A replica that
        // finds others live gives them two of their ticks to see it, so
        // that none of them still pipelines when its first batch comes.
        match steward::announce(&inner).await {
            Ok(false) => {}
            Ok(true) => tokio::time::sleep(2 * steward::tick(&inner.config)).await,
            Err(e) => tracing::warn!(
                error = %e,
                "announcing this replica; its batches go one at a time until it is announced"
            ),
        }
        let tasks = vec![
            tokio::spawn(sequencer::run(inner.clone(), rx)),
            tokio::spawn(steward::run(inner.clone())),
        ];
        tracing::info!(
            database = %db::redact(&inner.config.url),
            replica = %inner.replica,
            entries = size,
            checkpoint = latest_size,
            "custody ledger open on postgresql"
        );
        Ok(PgLedger {
            guard: Arc::new(CloseGuard {
                inner: inner.clone(),
                tasks: Mutex::new(tasks),
            }),
            inner,
        })
    }

    /// This replica's name in the lease row.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// How this replica's appends were committed so far.
    pub fn batch_stats(&self) -> BatchStats {
        BatchStats {
            committed: self.inner.committed.load(Ordering::Relaxed),
            pipelined: self.inner.pipelined.load(Ordering::Relaxed),
        }
    }

    /// Whether another replica was live at this one's last look (its
    /// presence row renewed within the lease time). While one is, this
    /// replica places its batches one at a time on the locked head row.
    pub fn sees_other_replicas(&self) -> bool {
        self.inner.others_live.load(Ordering::Acquire)
    }

    /// Whether this replica held the signer lease at its last renewal.
    pub fn holds_lease(&self) -> bool {
        self.inner.holds_lease.load(Ordering::Acquire)
    }

    /// Waits until a published checkpoint covers at least `size` entries.
    ///
    /// # Errors
    /// [`custody_ledger::Error::Closed`] when the ledger closes first.
    pub async fn wait_for_checkpoint(&self, size: u64) -> custody_ledger::Result<SignedCheckpoint> {
        let mut rx = self.inner.checkpoint_size.subscribe();
        rx.wait_for(|&s| s >= size)
            .await
            .map_err(|_| custody_ledger::Error::Closed)?;
        self.inner.latest().ok_or(custody_ledger::Error::Closed)
    }

    /// Closes this replica: stops taking appends, publishes a last
    /// checkpoint if it holds the lease and entries are uncovered, and
    /// gives the lease up so another replica takes over at once.
    pub async fn close(self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        let tasks =
            std::mem::take(&mut *self.guard.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        self.inner.pool.close();
    }
}

/// A connection, with retries.
async fn connect(pool: &Pool, policy: RetryPolicy) -> Result<deadpool_postgres::Object> {
    db::retry(policy, "connecting", || async { Ok(pool.get().await?) })
        .await
        .map_err(|e| match e {
            custody_ledger::Error::Unavailable(m) => Error::Unavailable(m),
            other => Error::Ledger(other),
        })
}

fn database(context: &str, source: tokio_postgres::Error) -> Error {
    Error::Database {
        context: context.into(),
        source,
    }
}

/// Records the ledger key on first open; refuses another key or origin.
async fn check_meta(client: &tokio_postgres::Client, key: &LedgerKey) -> Result<()> {
    client
        .execute(
            "INSERT INTO ledger_meta (id, origin, public_key_pem) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
            &[&key.origin(), &key.public_key_pem()],
        )
        .await
        .map_err(|e| database("recording the ledger key", e))?;
    let row = client
        .query_one(
            "SELECT origin, public_key_pem FROM ledger_meta WHERE id = 1",
            &[],
        )
        .await
        .map_err(|e| database("reading the ledger key", e))?;
    let origin: String = row.get(0);
    let pem: String = row.get(1);
    if checkpoint::spki_from_pem(&pem)? != key.spki() {
        return Err(Error::OtherLedger(
            "its checkpoint key differs from the signer's (key rotation is not supported)".into(),
        ));
    }
    if origin != key.origin() {
        return Err(Error::OtherLedger(format!(
            "its origin is {origin:?}, not {:?}",
            key.origin()
        )));
    }
    Ok(())
}

impl LedgerEngine for PgLedger {
    fn ledger_key(&self) -> &LedgerKey {
        &self.inner.key
    }

    fn size(&self) -> u64 {
        self.inner.size.load(Ordering::Acquire)
    }

    fn append_batch(
        &self,
        appends: Vec<Append>,
    ) -> EngineFuture<'_, Vec<custody_ledger::Result<Appended>>> {
        Box::pin(sequencer::submit(&self.inner, appends))
    }

    fn entry(&self, seq: u64) -> EngineFuture<'_, Vec<u8>> {
        Box::pin(read::entry(&self.inner, seq))
    }

    fn entries(&self, start: u64, end: u64, limit: usize) -> EngineFuture<'_, Vec<StoredEntry>> {
        Box::pin(read::entries(&self.inner, start, end, limit))
    }

    fn lookup_key(&self, key: UniqueKey) -> EngineFuture<'_, Option<u64>> {
        Box::pin(read::lookup_key(&self.inner, key))
    }

    fn quota(&self, counter: String) -> EngineFuture<'_, u64> {
        Box::pin(read::quota(&self.inner, counter))
    }

    fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.inner.latest()
    }

    fn publish_checkpoint(&self) -> EngineFuture<'_, SignedCheckpoint> {
        Box::pin(steward::publish_on_demand(&self.inner))
    }

    fn inclusion_proof(&self, seq: u64, tree_size: u64) -> EngineFuture<'_, InclusionProof> {
        Box::pin(read::inclusion_proof(&self.inner, seq, tree_size))
    }

    fn consistency_proof(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> EngineFuture<'_, ConsistencyProof> {
        Box::pin(read::consistency_proof(&self.inner, from_size, to_size))
    }

    fn device_history(&self, rot_id: String) -> EngineFuture<'_, DeviceHistory> {
        Box::pin(read::device_history(&self.inner, rot_id))
    }

    fn root(&self, tree_size: u64) -> EngineFuture<'_, custody_ledger::Hash> {
        Box::pin(read::root(&self.inner, tree_size))
    }

    fn wait_for_checkpoint(&self, size: u64) -> EngineFuture<'_, SignedCheckpoint> {
        Box::pin(PgLedger::wait_for_checkpoint(self, size))
    }
}
