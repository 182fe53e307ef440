//! Which store the benchmarked hub runs on (issue 14): the embedded store
//! or PostgreSQL ([`BenchStore`]), and each store in turn under the same
//! load ([`compare`]), so that the ratio between them comes from one run
//! of a noisy machine.
//!
//! PostgreSQL is an existing, empty database when one is named, else a
//! throwaway cluster (`pg_store::cluster`) started for the run and removed
//! after it. A store that already holds any of the benchmark's sites is
//! refused: the sites are new ledgers, so earlier rows would read as forks.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use pg_store::cluster::Cluster;
use serde::Serialize;

use super::{bench_err, run_with, BenchConfig, BenchReport, UplinkDriver};
use crate::cosign::Cosigner;
use crate::error::{Error, Result};
use crate::hub::{Hub, HubConfig};
use crate::pg::PgHubStore;

/// The database a throwaway cluster's run uses.
const THROWAWAY_DATABASE: &str = "hub_bench";

/// The hub's store in a benchmark run.
#[derive(Clone, PartialEq, Eq)]
pub enum BenchStore {
    /// The embedded store (redb) in the scratch directory.
    Embedded,
    /// The PostgreSQL store ([`PgHubStore`]).
    Postgres {
        /// An existing, empty database; `None`: a throwaway cluster.
        database: Option<String>,
    },
}

impl fmt::Debug for BenchStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => f.write_str("Embedded"),
            Self::Postgres { database } => f
                .debug_struct("Postgres")
                .field("database", &database.as_deref().map(pg_store::db::redact))
                .finish(),
        }
    }
}

impl BenchStore {
    /// `embedded` or `postgres`, as the reports name it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Postgres { .. } => "postgres",
        }
    }
}

/// The benchmark's hub, open on its store.
pub(super) struct OpenHub {
    /// The hub.
    pub(super) hub: Hub,
    /// The PostgreSQL server's version, when the store is there.
    pub(super) postgresql: Option<String>,
    /// The throwaway cluster, when the run started one; dropped (stopped
    /// and removed) after the hub.
    _cluster: Option<Cluster>,
}

/// Opens the hub of a run on `store` (the embedded store in `dir`),
/// refusing a store that already holds one of `config`'s sites.
///
/// # Errors
/// [`Error::Config`] for a store that is not empty; the store's errors.
pub(super) fn open_hub(
    store: &BenchStore,
    dir: &Path,
    config: HubConfig,
    witness: Cosigner,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<OpenHub> {
    let sites: Vec<String> = config.sites.iter().map(|s| s.site.clone()).collect();
    let (hub, postgresql, cluster) = match store {
        BenchStore::Embedded => (Hub::open_embedded(dir, config, witness)?, None, None),
        BenchStore::Postgres { database } => {
            let (url, cluster) = match database {
                Some(url) => (url.clone(), None),
                None => {
                    progress("starting a throwaway PostgreSQL cluster");
                    let (url, cluster) = throwaway()?;
                    (url, Some(cluster))
                }
            };
            let store = PgHubStore::open(&url)?;
            let version = store.server_version()?;
            let hub = Hub::open(config, witness, Arc::new(store))?;
            (hub, Some(version), cluster)
        }
    };
    for site in &sites {
        let row = hub.store().site(site)?;
        if row.size > 0 || row.cosigned.is_some() {
            return Err(Error::Config(format!(
                "the {} hub store already holds {site} ({} entries): the benchmark needs an \
                 empty one",
                store.name(),
                row.size
            )));
        }
    }
    Ok(OpenHub {
        hub,
        postgresql,
        _cluster: cluster,
    })
}

/// A throwaway cluster and the URL of its benchmark database.
fn throwaway() -> Result<(String, Cluster)> {
    let cluster = Cluster::start().map_err(|e| bench_err("postgresql cluster", e))?;
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| bench_err("runtime", e))?
        .block_on(cluster.create_database(THROWAWAY_DATABASE))
        .map_err(|e| bench_err("postgresql cluster", e))?;
    Ok((url, cluster))
}

/// Runs of the same load on several stores, in run order.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// One report per store.
    pub runs: Vec<BenchReport>,
    /// PostgreSQL's ingest rate over the embedded store's, when both ran.
    pub postgres_to_embedded_ingest: Option<f64>,
}

impl Comparison {
    fn run_on(&self, store: &str) -> Option<&BenchReport> {
        self.runs.iter().find(|r| r.store == store)
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.runs.first() else {
            return writeln!(f, "hub ingest and witness: nothing ran");
        };
        let rate = first
            .rate_per_site
            .map_or("as fast as its ledger takes them".to_string(), |r| {
                format!("{r:.0}/s")
            });
        writeln!(
            f,
            "hub ingest and witness, {} sites pushing at once, each appending {rate}; \
             each store in turn under the same load (appended/s: the sites together)",
            first.sites.len()
        )?;
        writeln!(
            f,
            "  {:<10} {:>11} {:>9} {:>10} {:>11} {:>11} {:>11} {:>8}",
            "store",
            "appended/s",
            "ingested",
            "ingest/s",
            "lag p50 ms",
            "lag p99 ms",
            "lag max ms",
            "samples"
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "  {:<10} {:>11.0} {:>9} {:>10.0} {:>11.1} {:>11.1} {:>11.1} {:>8}",
                r.store,
                r.appended_rate(),
                r.ingested,
                r.ingest_rate,
                r.lag_median_ms,
                r.lag_p99_ms,
                r.lag_max_ms,
                r.lag_samples
            )?;
        }
        for r in &self.runs {
            if let Some(v) = &r.postgresql {
                writeln!(f, "  {}: PostgreSQL {v}", r.store)?;
            }
        }
        if let (Some(e), Some(p)) = (self.run_on("embedded"), self.run_on("postgres")) {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            writeln!(
                f,
                "  postgres / embedded: ingest {:.2}×, lag p50 {:.2}×, lag p99 {:.2}×",
                ratio(p.ingest_rate, e.ingest_rate),
                ratio(p.lag_median_ms, e.lag_median_ms),
                ratio(p.lag_p99_ms, e.lag_p99_ms)
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark once per store of `stores`, in order, with the same
/// load (`cfg`, its `store` replaced), each in `<cfg.dir>/<store name>`.
///
/// # Errors
/// As [`run_with`]; [`Error::Config`] when a store is named twice.
pub fn compare(
    cfg: &BenchConfig,
    stores: &[BenchStore],
    driver: &dyn UplinkDriver,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Comparison> {
    let mut runs: Vec<BenchReport> = Vec::with_capacity(stores.len());
    for store in stores {
        if runs.iter().any(|r| r.store == store.name()) {
            return Err(Error::Config(format!("store {} named twice", store.name())));
        }
        let run_cfg = BenchConfig {
            dir: cfg.dir.join(store.name()),
            store: store.clone(),
            ..cfg.clone()
        };
        let prefixed = |line: &str| progress(&format!("{}: {line}", store.name()));
        runs.push(run_with(&run_cfg, driver, &prefixed)?);
    }
    let mut comparison = Comparison {
        runs,
        postgres_to_embedded_ingest: None,
    };
    if let (Some(e), Some(p)) = (comparison.run_on("embedded"), comparison.run_on("postgres")) {
        if e.ingest_rate > 0.0 {
            comparison.postgres_to_embedded_ingest = Some(p.ingest_rate / e.ingest_rate);
        }
    }
    Ok(comparison)
}
