//! `trustline bench ledger --backend postgres`: the file engine and the
//! PostgreSQL engine measured side by side in one run, through the same
//! [`LedgerEngine`] calls and the same load (not a timed test).
//!
//! Per backend and concurrency level (1, 16, 256 appenders by default):
//! durable appends/s and the p50/p99 acknowledgement latency, entries
//! shaped like `Certified` ones (a rot_id, a serial, a 200-byte payload, two
//! unique keys and a quota). Then the time until a signed checkpoint covers
//! a new entry, PostgreSQL with two replicas on one database sharing
//! the appenders, and one replica with its pipeline off (depth 1: one
//! batch at a time on the locked head row) for comparison. PostgreSQL runs
//! in a throwaway cluster on this machine unless a database URL is given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_ledger::{
    Constraints, Draft, EventKind, Ledger, LedgerConfig, LedgerEngine, QuotaUse, UniqueKey,
};
use trustline_proto::signer::{Signer, SoftwareSigner};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::{PgLedger, PgLedgerConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A scratch directory for the file engine (and the throwaway cluster's
    /// data lives in the system's temporary directory).
    pub dir: PathBuf,
    /// `(concurrent appenders, total appends)` per level.
    pub levels: Vec<(usize, u64)>,
    /// Checkpoint-latency samples per backend.
    pub checkpoint_samples: usize,
    /// An existing, empty PostgreSQL database; `None`: a throwaway cluster.
    pub database: Option<String>,
    /// The checkpoint cadence of both engines.
    pub checkpoint_interval: Duration,
}

impl BenchConfig {
    /// The standard run.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            levels: vec![(1, 1_000), (16, 10_000), (256, 40_000)],
            checkpoint_samples: 8,
            database: None,
            checkpoint_interval: Duration::from_millis(500),
        }
    }
}

/// One backend at one concurrency level.
#[derive(Debug, Clone)]
pub struct Level {
    /// `files`, `postgres`, `postgres, 2 replicas` or `postgres, depth 1`.
    pub backend: String,
    /// Concurrent appenders (over all replicas).
    pub concurrency: usize,
    /// Appends acknowledged.
    pub appends: u64,
    /// Durable appends per second.
    pub per_second: f64,
    /// Median acknowledgement latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The PostgreSQL server's version string.
    pub server_version: String,
    /// Per backend and level, in run order.
    pub levels: Vec<Level>,
    /// Per backend: milliseconds from acknowledgement until a checkpoint
    /// covered the entry (median, max).
    pub checkpoint_lag_ms: Vec<(String, f64, f64)>,
}

fn sample(run: u64, i: u64) -> (Draft, Constraints) {
    // Any 32-byte digest makes a well-formed rot_id.
    let rot = hex::encode(custody_ledger::merkle::leaf_hash(
        format!("bench-{run}-{i}").as_bytes(),
    ));
    let serial = format!("SN-{run}-{i:09}");
    let draft = Draft {
        kind: EventKind::Certified,
        rot_id: rot.clone(),
        serial: serial.clone(),
        site: "site-bench".into(),
        actor: "station/site-bench/st-01".into(),
        order_id: format!("PO-{run}"),
        payload: vec![0x5a; 200],
    };
    let c = Constraints {
        unique_keys: vec![
            UniqueKey::new("serial", serial),
            UniqueKey::new("rot_id", rot),
        ],
        quota: Some(QuotaUse::new(format!("order/PO-{run}"), u64::MAX)),
    };
    (draft, c)
}

async fn load(
    engines: &[Arc<dyn LedgerEngine>],
    run: u64,
    concurrency: usize,
    total: u64,
) -> custody_ledger::Result<(Vec<f64>, Duration)> {
    let per_task = (total / concurrency as u64).max(1);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency as u64 {
        let engine = engines[t as usize % engines.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task as usize);
            for i in 0..per_task {
                let (d, c) = sample(run, t * per_task + i);
                let t0 = Instant::now();
                engine.append(d, c).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, custody_ledger::Error>(lat)
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    for t in tasks {
        all.extend(t.await.map_err(|_| custody_ledger::Error::Closed)??);
    }
    Ok((all, start.elapsed()))
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

fn level(backend: &str, concurrency: usize, mut lat: Vec<f64>, took: Duration) -> Level {
    lat.sort_by(f64::total_cmp);
    Level {
        backend: backend.into(),
        concurrency,
        appends: lat.len() as u64,
        per_second: lat.len() as f64 / took.as_secs_f64(),
        p50_ms: percentile(&lat, 50),
        p99_ms: percentile(&lat, 99),
    }
}

async fn lag(
    engine: &Arc<dyn LedgerEngine>,
    wait: impl Fn(u64) -> futures::future::BoxFuture<'static, custody_ledger::Result<()>>,
    samples: usize,
) -> custody_ledger::Result<(f64, f64)> {
    let mut lags = Vec::new();
    for i in 0..samples as u64 {
        tokio::time::sleep(Duration::from_millis((i * 137) % 400)).await;
        let (d, c) = sample(999, i);
        let a = engine.append(d, c).await?;
        let t0 = Instant::now();
        wait(a.seq + 1).await?;
        lags.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    lags.sort_by(f64::total_cmp);
    Ok((percentile(&lags, 50), lags.last().copied().unwrap_or(0.0)))
}

/// Runs the comparison, reporting progress through `progress`.
///
/// # Errors
/// Cluster, database, ledger and I/O errors.
pub async fn run(
    cfg: &BenchConfig,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<BenchReport> {
    let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate());
    let cluster = match &cfg.database {
        Some(_) => None,
        None => {
            progress("starting a throwaway postgresql cluster");
            Some(
                tokio::task::spawn_blocking(Cluster::start)
                    .await
                    .map_err(|_| Error::Cluster("starting the cluster panicked".into()))??,
            )
        }
    };
    let url = match (&cfg.database, &cluster) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => c.create_database("bench").await?,
        (None, None) => return Err(Error::Config("no database".into())),
    };
    let server_version = {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::Unavailable(crate::db::describe(&e)))?;
        let task = tokio::spawn(conn);
        let v: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|source| Error::Database {
                context: "reading the server version".into(),
                source,
            })?
            .get(0);
        drop(client);
        let _ = task.await;
        v
    };

    let dir = cfg.dir.join("files");
    let _ = std::fs::remove_dir_all(&dir);
    let mut fc = LedgerConfig::new(&dir);
    fc.checkpoint_interval = cfg.checkpoint_interval;
    let files = Ledger::open(fc, signer.clone())?;
    let mut pc = PgLedgerConfig::new(&url);
    pc.checkpoint_interval = cfg.checkpoint_interval;
    pc.replica = Some("bench-a".into());
    let pg = PgLedger::open(pc.clone(), signer.clone()).await?;
    let mut levels = Vec::new();
    let backends: [(&str, Vec<Arc<dyn LedgerEngine>>); 2] = [
        ("files", vec![Arc::new(files.clone())]),
        ("postgres", vec![Arc::new(pg.clone())]),
    ];
    for (run, &(concurrency, total)) in cfg.levels.iter().enumerate() {
        for (name, engines) in &backends {
            progress(&format!(
                "{name}: {total} durable appends with {concurrency} appenders"
            ));
            let (lat, took) = load(engines, run as u64 + 1, concurrency, total).await?;
            levels.push(level(name, concurrency, lat, took));
        }
    }
    progress("postgres: two replicas sharing the appenders");
    pc.replica = Some("bench-b".into());
    let pg2 = PgLedger::open(pc.clone(), signer.clone()).await?;
    if let Some(&(concurrency, total)) = cfg.levels.last() {
        let engines: Vec<Arc<dyn LedgerEngine>> = vec![Arc::new(pg.clone()), Arc::new(pg2.clone())];
        let (lat, took) = load(&engines, 100, concurrency, total).await?;
        levels.push(level("postgres, 2 replicas", concurrency, lat, took));
    }
    pg2.close().await;
    // The same database one batch at a time (no pipeline), last: after it
    // the other replicas would see its writes and go locked for a while.
    progress("postgres: one batch at a time (pipeline depth 1)");
    pc.replica = Some("bench-c".into());
    pc.pipeline_depth = 1;
    let pg1 = PgLedger::open(pc, signer.clone()).await?;
    if let Some(&(concurrency, total)) = cfg.levels.last() {
        let engines: Vec<Arc<dyn LedgerEngine>> = vec![Arc::new(pg1.clone())];
        let (lat, took) = load(&engines, 101, concurrency, total).await?;
        levels.push(level("postgres, depth 1", concurrency, lat, took));
    }
    pg1.close().await;

    progress("time until a checkpoint covers an entry");
    let mut checkpoint_lag_ms = Vec::new();
    let fe: Arc<dyn LedgerEngine> = Arc::new(files.clone());
    let f2 = files.clone();
    let (m, x) = lag(
        &fe,
        move |size| {
            let f = f2.clone();
            Box::pin(async move { f.wait_for_checkpoint(size).await.map(|_| ()) })
        },
        cfg.checkpoint_samples,
    )
    .await?;
    checkpoint_lag_ms.push(("files".to_string(), m, x));
    let pe: Arc<dyn LedgerEngine> = Arc::new(pg.clone());
    let p2 = pg.clone();
    let (m, x) = lag(
        &pe,
        move |size| {
            let p = p2.clone();
            Box::pin(async move { p.wait_for_checkpoint(size).await.map(|_| ()) })
        },
        cfg.checkpoint_samples,
    )
    .await?;
    checkpoint_lag_ms.push(("postgres".to_string(), m, x));
    files.close();
    pg.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    drop(cluster);
    Ok(BenchReport {
        server_version,
        levels,
        checkpoint_lag_ms,
    })
}
