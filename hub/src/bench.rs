//! `trustline bench hub` (issue 13): what the hub does on this machine,
//! measured in one run (not a timed test).
//!
//! Several real site ledgers (custody-ledger, software checkpoint keys,
//! publishing a checkpoint on their usual cadence) are filled by concurrent
//! appenders with `CERTIFIED`-shaped entries (unique keys, a quota, a
//! certificate-sized payload). One uplink per site pushes new entries to
//! the hub and submits each new checkpoint, over gRPC through `transport`'s
//! guard (in-process channel: the full request path except TLS). The
//! uplink is a parameter ([`UplinkDriver`]): `trustline bench hub` runs the
//! site's own (`site::uplink`: it verifies and durably keeps each
//! cosignature), [`run`] the [`MinimalUplink`]. Reported:
//!
//! - each site's own durable append rate in the same run;
//! - the hub's sustained ingest rate, all sites together (entries/s from
//!   the start to the last entry mirrored and cosigned);
//! - the lag from a site publishing a checkpoint to holding its
//!   cosignature, median and p99 (it includes pushing the entries the
//!   checkpoint covers).
//!
//! The hub's store is a parameter too ([`BenchStore`], `--store`): the
//! embedded store or PostgreSQL, and [`compare`] runs the same load on each
//! in turn; every report names the store it measured.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_ledger::{Draft, EventKind, Ledger, LedgerConfig, QuotaUse, UniqueKey};
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;
use trustline_proto::v1::witness_client::WitnessClient;

use crate::cosign::{Cosigner, SoftwareWitnessSigner};
use crate::error::{Error, Result};
use crate::hub::HubConfig;
use crate::model::SiteConfig;

mod stores;

pub use stores::{compare, BenchStore, Comparison};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A scratch directory; site ledgers and the hub's store are created in
    /// it.
    pub dir: PathBuf,
    /// Sites pushing at once.
    pub sites: usize,
    /// Concurrent appenders per site (stations).
    pub appenders_per_site: usize,
    /// Entries each site appends.
    pub entries_per_site: u64,
    /// Most entries per push.
    pub push_batch: usize,
    /// The sites' checkpoint cadence.
    pub checkpoint_interval: Duration,
    /// Each site's append rate, entries/s (`None`: as fast as its ledger
    /// takes them).
    pub rate_per_site: Option<f64>,
    /// The hub's store.
    pub store: BenchStore,
}

impl BenchConfig {
    /// The standard run in `dir`: two sites at full rate, 16 stations each,
    /// 20k entries each, checkpoints every 500 ms as in production, the
    /// hub on its embedded store.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sites: 2,
            appenders_per_site: 16,
            entries_per_site: 20_000,
            push_batch: 1024,
            checkpoint_interval: Duration::from_millis(500),
            rate_per_site: None,
            store: BenchStore::Embedded,
        }
    }
}

/// One site's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    /// The site.
    pub site: String,
    /// Entries it appended.
    pub entries: u64,
    /// Its durable append rate, entries/s.
    pub append_rate: f64,
    /// Checkpoints the hub cosigned for it.
    pub cosignatures: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The hub's store: `embedded` or `postgres`.
    pub store: String,
    /// The PostgreSQL server's version, when the store is there.
    pub postgresql: Option<String>,
    /// Each site's configured append rate, entries/s (`None`: as fast as
    /// its ledger takes them).
    pub rate_per_site: Option<f64>,
    /// Per site.
    pub sites: Vec<SiteReport>,
    /// Entries mirrored by the hub, all sites.
    pub ingested: u64,
    /// The hub's ingest rate, entries/s, all sites together.
    pub ingest_rate: f64,
    /// Checkpoint → cosignature lag, median, milliseconds.
    pub lag_median_ms: f64,
    /// Checkpoint → cosignature lag, 99th percentile, milliseconds.
    pub lag_p99_ms: f64,
    /// Checkpoint → cosignature lag, worst, milliseconds.
    pub lag_max_ms: f64,
    /// Cosignature lag samples.
    pub lag_samples: usize,
}

impl BenchReport {
    /// The sites' append rates added up, entries/s.
    pub fn appended_rate(&self) -> f64 {
        self.sites.iter().map(|s| s.append_rate).sum()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = match &self.postgresql {
            Some(v) => format!("the {} store (PostgreSQL {v})", self.store),
            None => format!("the {} store", self.store),
        };
        writeln!(
            f,
            "hub ingest and witness on {store}, {} sites pushing at once",
            self.sites.len()
        )?;
        for s in &self.sites {
            writeln!(
                f,
                "  {:<10} appended {:>8} entries at {:>9.0}/s (site ledger, same run), {} cosignatures",
                s.site, s.entries, s.append_rate, s.cosignatures
            )?;
        }
        writeln!(
            f,
            "  hub ingest {:>8} entries at {:>9.0}/s (sites together appended at {:.0}/s)",
            self.ingested,
            self.ingest_rate,
            self.appended_rate()
        )?;
        writeln!(
            f,
            "  checkpoint → cosignature lag: median {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
            self.lag_median_ms, self.lag_p99_ms, self.lag_max_ms, self.lag_samples
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench_err(what: &str, e: impl fmt::Display) -> Error {
    Error::Store(format!("bench: {what}: {e}"))
}

/// A `CERTIFIED`-shaped draft for device `n` of `site`.
fn certified(site: &str, n: u64) -> (Draft, Vec<UniqueKey>, Option<QuotaUse>) {
    let rot_id = hex::encode(Sha256::digest(format!("{site} rot {n}")));
    let serial = format!("{site}-SN-{n:09}");
    let key = Sha256::digest(format!("{site} key {n}")).to_vec();
    let payload = v1::CertifiedPayload {
        certificate: vec![0x30; 600],
        device_public_key: key.clone(),
        label: serial.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    let keys = vec![
        UniqueKey::new("serial", serial.as_bytes().to_vec()),
        UniqueKey::new("rot", rot_id.as_bytes().to_vec()),
        UniqueKey::new("device-key", Sha256::digest(&key).to_vec()),
    ];
    let draft = Draft {
        kind: EventKind::Certified,
        rot_id,
        serial,
        site: site.to_string(),
        actor: format!("station/{site}/bench"),
        order_id: "BENCH".into(),
        payload,
    };
    (draft, keys, Some(QuotaUse::new("order/BENCH", u64::MAX)))
}

/// When each checkpoint size was first seen published.
type Published = Arc<Mutex<BTreeMap<u64, Instant>>>;

/// A future the benchmark awaits.
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A driver's start: the uplink once it runs.
pub type Starting<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<StartedUplink>> + Send + 'a>>;

/// A site's uplink as the benchmark runs it.
pub struct StartedUplink {
    /// The tree size of the latest cosignature the uplink kept.
    pub cosigned: watch::Receiver<u64>,
    /// Stops it.
    pub stop: Box<dyn FnOnce() -> BoxFuture + Send>,
}

/// Starts each site's uplink: the site's own (`site::uplink`, what
/// `trustline bench hub` runs) or [`MinimalUplink`].
pub trait UplinkDriver: Sync {
    /// Starts the uplink of `site`'s `ledger` to the hub over `channel` (a
    /// `Role::Site` caller through the guard), checking cosignatures
    /// against `witness_key` (a verifier key), at most `push_batch`
    /// entries a push. Called inside the benchmark's runtime.
    ///
    /// # Errors
    /// [`Error::Store`] naming what failed.
    fn start<'a>(
        &'a self,
        site: &'a str,
        ledger: Ledger,
        channel: transport::InProcessChannel,
        witness_key: &'a str,
        push_batch: usize,
    ) -> Starting<'a>;
}

/// The least an uplink does: push what the hub lacks, then ask for a
/// cosignature of the latest checkpoint as soon as the mirror covers it;
/// nothing verified, nothing kept. The hub's own cost, apart from the
/// site's.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinimalUplink;

impl UplinkDriver for MinimalUplink {
    fn start<'a>(
        &'a self,
        site: &'a str,
        ledger: Ledger,
        channel: transport::InProcessChannel,
        _witness_key: &'a str,
        push_batch: usize,
    ) -> Starting<'a> {
        Box::pin(async move { Ok(minimal_uplink(site, ledger, channel, push_batch)) })
    }
}

/// [`MinimalUplink`]'s loop.
fn minimal_uplink(
    site: &str,
    ledger: Ledger,
    channel: transport::InProcessChannel,
    push_batch: usize,
) -> StartedUplink {
    let mut client = WitnessClient::new(channel)
        .max_decoding_message_size(crate::server::WITNESS_MAX_DECODE_BYTES)
        .max_encoding_message_size(crate::server::WITNESS_MAX_DECODE_BYTES);
    let (tx, rx) = watch::channel(0u64);
    let running = Arc::new(AtomicBool::new(true));
    let name = site.to_string();
    let keep_running = running.clone();
    let task = tokio::spawn(async move {
        let mut mirror = 0u64;
        let mut cosigned = 0u64;
        let mut seen: Vec<custody_ledger::SignedCheckpoint> = Vec::new();
        while keep_running.load(Ordering::Acquire) {
            let size = ledger.size();
            if let Some(cp) = ledger.latest_checkpoint() {
                if seen.last().is_none_or(|l| l.size < cp.size) {
                    seen.push(cp);
                }
            }
            seen.retain(|c| c.size > cosigned);
            // The newest published checkpoint the mirror covers.
            if let Some(cp) = seen.iter().rev().find(|c| c.size <= mirror).cloned() {
                let proof = if cosigned == 0 {
                    Vec::new()
                } else {
                    ledger
                        .consistency_proof(cosigned, cp.size)
                        .map_err(|e| bench_err("proof", e))?
                        .path
                        .iter()
                        .map(|h| h.to_vec())
                        .collect()
                };
                client
                    .add_checkpoint(v1::AddCheckpointRequest {
                        old_size: cosigned,
                        consistency_proof: proof,
                        checkpoint: cp.note.clone(),
                    })
                    .await
                    .map_err(|e| bench_err("add-checkpoint", e))?;
                cosigned = cp.size;
                tx.send_replace(cosigned);
                continue;
            }
            if mirror < size {
                let l = ledger.clone();
                let from = mirror;
                let entries =
                    tokio::task::spawn_blocking(move || l.entries(from, size, push_batch))
                        .await
                        .map_err(|e| bench_err("read", e))?
                        .map_err(|e| bench_err("read", e))?;
                let state = client
                    .push_entries(v1::PushEntriesRequest {
                        site: name.clone(),
                        start: mirror,
                        entries: entries.into_iter().map(|e| e.entry).collect(),
                    })
                    .await
                    .map_err(|e| bench_err("push", e))?
                    .into_inner();
                mirror = state.mirror_size;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok::<_, Error>(())
    });
    StartedUplink {
        cosigned: rx,
        stop: Box::new(move || {
            running.store(false, Ordering::Release);
            Box::pin(async move {
                match task.await {
                    Ok(Err(e)) => tracing::warn!("bench uplink: {e}"),
                    Err(e) => tracing::warn!("bench uplink: {e}"),
                    Ok(Ok(())) => {}
                }
            })
        }),
    }
}

struct SiteRun {
    name: String,
    ledger: Ledger,
    published: Published,
}

/// Runs the benchmark with [`MinimalUplink`]; `progress` gets a line per
/// phase.
///
/// # Errors
/// [`Error::Store`] naming what failed (ledger, hub or gRPC).
pub fn run(cfg: &BenchConfig, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<BenchReport> {
    run_with(cfg, &MinimalUplink, progress)
}

/// Runs the benchmark with the uplinks `driver` starts.
///
/// # Errors
/// [`Error::Store`] naming what failed (ledger, hub or gRPC).
pub fn run_with(
    cfg: &BenchConfig,
    driver: &dyn UplinkDriver,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<BenchReport> {
    std::fs::create_dir_all(&cfg.dir).map_err(|e| bench_err("scratch dir", e))?;
    let mut sites = Vec::new();
    let mut configs = Vec::new();
    for i in 0..cfg.sites {
        let name = format!("site-{i}");
        let signer = Arc::new(SoftwareSigner::generate());
        let mut lc = LedgerConfig::new(cfg.dir.join(&name));
        lc.origin = format!("{name}.bench.example/ledger");
        lc.checkpoint_interval = cfg.checkpoint_interval;
        let ledger = Ledger::open(lc.clone(), signer.clone() as Arc<dyn Signer>)
            .map_err(|e| bench_err("site ledger", e))?;
        configs.push(SiteConfig::new(&name, &lc.origin, signer.public_key_der())?);
        sites.push(SiteRun {
            name,
            ledger,
            published: Arc::new(Mutex::new(BTreeMap::new())),
        });
    }
    let witness = Cosigner::new(
        "bench.example/hub-witness",
        Box::new(SoftwareWitnessSigner::generate()?),
    )?;
    let witness_key = witness.verifier_key();
    let opened = stores::open_hub(
        &cfg.store,
        &cfg.dir.join("hub"),
        HubConfig {
            sites: configs,
            order_key: None,
        },
        witness,
        progress,
    )?;
    let hub = &opened.hub;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| bench_err("runtime", e))?;
    let limits = transport::Limits {
        unlimited_roles: transport::Role::ALL.to_vec(),
        ..transport::Limits::default()
    };
    let guard = transport::Guard::new(limits, transport::Metrics::new());
    let routes = crate::server::routes(hub, &guard).map_err(|e| bench_err("routes", e))?;
    progress(&format!(
        "{} sites × {} appenders × {} entries",
        cfg.sites, cfg.appenders_per_site, cfg.entries_per_site
    ));

    let appending = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let report = runtime.block_on(async {
        // Watch each site's checkpoints as they are published.
        let mut watchers = Vec::new();
        for s in &sites {
            let ledger = s.ledger.clone();
            let published = s.published.clone();
            watchers.push(tokio::spawn(async move {
                let mut next = 1;
                while let Ok(cp) = ledger.wait_for_checkpoint(next).await {
                    if let Ok(mut p) = published.lock() {
                        p.entry(cp.size).or_insert_with(Instant::now);
                    }
                    next = cp.size + 1;
                }
            }));
        }
        // Uplinks, and what they cosign when.
        let mut uplinks = Vec::new();
        for s in &sites {
            let caller = transport::Caller::new(transport::Role::Site, &s.name, "uplink")
                .map_err(|e| bench_err("caller", e))?;
            let channel = transport::InProcessChannel::new(routes.clone(), &guard, caller);
            let started = driver
                .start(
                    &s.name,
                    s.ledger.clone(),
                    channel,
                    &witness_key,
                    cfg.push_batch,
                )
                .await?;
            let mut rx = started.cosigned;
            let published = s.published.clone();
            let ledger = s.ledger.clone();
            let appending = appending.clone();
            let collector = tokio::spawn(async move {
                let mut lags = Vec::new();
                let mut last = 0u64;
                loop {
                    let size = *rx.borrow_and_update();
                    if size > last {
                        let seen = published.lock().ok().and_then(|p| p.get(&size).copied());
                        if let Some(t) = seen {
                            lags.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        last = size;
                    }
                    if !appending.load(Ordering::Acquire)
                        && ledger
                            .latest_checkpoint()
                            .is_some_and(|c| c.size == ledger.size())
                        && last >= ledger.size()
                    {
                        return (lags, Instant::now());
                    }
                    // Woken by each cosignature; the timeout notices the end.
                    let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
                }
            });
            uplinks.push((collector, started.stop));
        }
        // Stations.
        let mut appenders = Vec::new();
        for s in &sites {
            let per = cfg.entries_per_site / cfg.appenders_per_site.max(1) as u64;
            // Each appender's share of the site's rate, as a gap between
            // its appends on a fixed schedule.
            let gap = cfg
                .rate_per_site
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(cfg.appenders_per_site.max(1) as f64 / r));
            for a in 0..cfg.appenders_per_site as u64 {
                let ledger = s.ledger.clone();
                let name = s.name.clone();
                appenders.push(std::thread::spawn(move || -> Result<(u64, Instant)> {
                    let began = Instant::now();
                    for k in 0..per {
                        if let Some(gap) = gap {
                            let due = began + gap.mul_f64(k as f64);
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        }
                        let (d, keys, q) = certified(&name, a * per + k);
                        ledger
                            .append_blocking(d, keys, q)
                            .map_err(|e| bench_err("site append", e))?;
                    }
                    Ok((per, Instant::now()))
                }));
            }
        }
        let mut appended: BTreeMap<usize, (u64, Instant)> = BTreeMap::new();
        for (n, h) in appenders.into_iter().enumerate() {
            let site = n / cfg.appenders_per_site.max(1);
            let (count, done) = h.join().map_err(|_| bench_err("appender", "panicked"))??;
            let e = appended.entry(site).or_insert((0, done));
            e.0 += count;
            e.1 = e.1.max(done);
        }
        progress("sites appended; publishing the last checkpoints");
        for s in &sites {
            s.ledger
                .publish_checkpoint()
                .await
                .map_err(|e| bench_err("publish", e))?;
        }
        appending.store(false, Ordering::Release);
        let mut last = start;
        let mut per_site_lags: Vec<Vec<f64>> = Vec::new();
        for (collector, stop) in uplinks {
            let (lags, done) = collector.await.map_err(|e| bench_err("uplink", e))?;
            stop().await;
            last = last.max(done);
            per_site_lags.push(lags);
        }
        for w in watchers {
            w.abort();
        }
        let mut ingested = 0u64;
        let mut reports = Vec::new();
        for (i, s) in sites.iter().enumerate() {
            ingested += hub.status(&s.name)?.mirror_size;
            let (count, done) = appended.get(&i).copied().unwrap_or((0, start));
            let secs = done.duration_since(start).as_secs_f64().max(1e-9);
            reports.push(SiteReport {
                site: s.name.clone(),
                entries: count,
                append_rate: count as f64 / secs,
                cosignatures: per_site_lags[i].len(),
            });
        }
        let mut lags: Vec<f64> = per_site_lags.into_iter().flatten().collect();
        lags.sort_by(f64::total_cmp);
        let secs = last.duration_since(start).as_secs_f64().max(1e-9);
        Ok::<_, Error>(BenchReport {
            store: cfg.store.name().to_string(),
            postgresql: opened.postgresql.clone(),
            rate_per_site: cfg.rate_per_site,
            sites: reports,
            ingested,
            ingest_rate: ingested as f64 / secs,
            lag_median_ms: percentile(&lags, 0.5),
            lag_p99_ms: percentile(&lags, 0.99),
            lag_max_ms: lags.last().copied().unwrap_or(0.0),
            lag_samples: lags.len(),
        })
    })?;
    for s in sites {
        s.ledger.close();
    }
    progress("done");
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    #[test]
    fn a_small_run_mirrors_and_cosigns_everything_appended() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BenchConfig {
            sites: 2,
            appenders_per_site: 2,
            entries_per_site: 60,
            push_batch: 16,
            checkpoint_interval: Duration::from_millis(20),
            ..BenchConfig::new(dir.path())
        };
        let r = run(&cfg, &|_| {}).unwrap();
        assert_eq!(r.sites.len(), 2);
        assert_eq!(r.ingested, 120);
        assert!(r
            .sites
            .iter()
            .all(|s| s.entries == 60 && s.cosignatures >= 1));
        assert!(r.lag_samples >= 2);
        assert_eq!(r.store, "embedded");
        assert!(r.postgresql.is_none());
        let text = r.to_string();
        assert!(text.contains("site-0") && text.contains("lag"));
        assert!(text.contains("on the embedded store"), "{text}");
    }
}
