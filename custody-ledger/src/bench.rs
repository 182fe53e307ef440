//! `trustline bench ledger`: what the ledger does on this disk, measured in
//! one run (not a timed test).
//!
//! 1. Raw `fdatasync`/s of the same disk: 300-byte append + `sync_data`.
//! 2. Durable appends/s with 1, 16 and 256 concurrent appenders, and the
//!    p50/p99 acknowledgement latency (each acknowledgement means the entry
//!    is on disk). Entries look like `Certified` ones: a rot_id, a serial,
//!    a 200-byte payload, two unique keys and a quota.
//! 3. Time until a signed checkpoint covers a new entry.
//! 4. Optionally at N entries (default one million): the sustained fill
//!    rate, inclusion and consistency proofs/s, and the time of a full
//!    offline verify of the data directory.
//! 5. The process's peak resident memory in each phase (Linux `VmHWM`,
//!    reset between phases through `/proc/self/clear_refs`) and over the
//!    whole run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};

use crate::entry::{Draft, EventKind, QuotaUse, UniqueKey};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, LedgerConfig};
use crate::storage::FileStorage;
use crate::verify;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A scratch directory on the disk to measure; ledgers are created in
    /// it and removed afterwards.
    pub dir: PathBuf,
    /// `(concurrent appenders, total appends)` per level.
    pub levels: Vec<(usize, u64)>,
    /// Checkpoint-latency samples.
    pub checkpoint_samples: usize,
    /// Entries for the large-ledger part; 0 skips it.
    pub large_entries: u64,
    /// How long to generate proofs for, per kind.
    pub proof_time: Duration,
    /// The checkpoint cadence of the measured ledgers.
    pub checkpoint_interval: Duration,
    /// The measured ledgers' [`LedgerConfig::overlay_bytes`] (to weigh
    /// memory against burst throughput).
    pub overlay_bytes: usize,
}

impl BenchConfig {
    /// The standard run in `dir`: 1/16/256 appenders and a one-million-entry
    /// ledger.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            levels: vec![(1, 2_000), (16, 20_000), (256, 100_000)],
            checkpoint_samples: 8,
            large_entries: 1_000_000,
            proof_time: Duration::from_secs(2),
            checkpoint_interval: LedgerConfig::new(".").checkpoint_interval,
            overlay_bytes: LedgerConfig::new(".").overlay_bytes,
        }
    }
}

/// One concurrency level.
#[derive(Debug, Clone)]
pub struct AppendLevel {
    /// Concurrent appenders.
    pub concurrency: usize,
    /// Appends made.
    pub appends: u64,
    /// Durable appends per second.
    pub per_second: f64,
    /// Median acknowledgement latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile acknowledgement latency, milliseconds.
    pub p99_ms: f64,
    /// Worst acknowledgement latency, milliseconds.
    pub max_ms: f64,
    /// Peak resident memory of the process during this level, bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// The large-ledger part.
#[derive(Debug, Clone)]
pub struct LargeReport {
    /// Entries in the ledger.
    pub entries: u64,
    /// Sustained durable appends/s while filling it (256 appenders),
    /// including waits for the index to keep up.
    pub fill_per_second: f64,
    /// Seconds after the fill until the index held every entry.
    pub index_catch_up_seconds: f64,
    /// Inclusion proofs generated per second against the latest checkpoint,
    /// with the index caught up.
    pub inclusion_proofs_per_second: f64,
    /// Consistency proofs generated per second.
    pub consistency_proofs_per_second: f64,
    /// Seconds to reopen the ledger (recovery and self-check).
    pub reopen_seconds: f64,
    /// Seconds for a full offline verify of the data directory.
    pub verify_seconds: f64,
    /// Bytes of segment files.
    pub segment_bytes: u64,
    /// Peak resident memory while filling and until the index caught up.
    pub fill_peak_rss_bytes: Option<u64>,
    /// Peak resident memory while generating proofs and reopening.
    pub serve_peak_rss_bytes: Option<u64>,
    /// Peak resident memory of the offline verify.
    pub verify_peak_rss_bytes: Option<u64>,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Raw 300-byte append + `fdatasync` per second on the same disk.
    pub fdatasync_per_second: f64,
    /// Bytes of a typical entry record.
    pub record_bytes: usize,
    /// Per concurrency level.
    pub levels: Vec<AppendLevel>,
    /// Milliseconds from acknowledgement until a checkpoint covered the
    /// entry, per sample.
    pub checkpoint_latency_ms: Vec<f64>,
    /// The large-ledger part, if run.
    pub large: Option<LargeReport>,
    /// The process's peak resident memory over the whole run, in bytes
    /// (`VmHWM`; `None` where the platform does not say).
    pub peak_rss_bytes: Option<u64>,
}

/// The process's peak resident set size, from `/proc/self/status`.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Starts a new peak-memory phase: resets `VmHWM` to the current resident
/// size (Linux `clear_refs` value 5; elsewhere the peak stays the run's).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A sample `Certified`-like append number `n` of run `run`.
fn sample(run: u64, n: u64) -> (Draft, Vec<UniqueKey>, Option<QuotaUse>) {
    let rot_id = hex::encode(Sha256::digest(format!("bench-{run}-{n}")));
    let serial = format!("SN-{run:04}-{n:010}");
    let mut payload = vec![0u8; 200];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (n as u8).wrapping_add(i as u8);
    }
    let draft = Draft {
        kind: EventKind::Certified,
        rot_id: rot_id.clone(),
        serial: serial.clone(),
        site: "site-a".into(),
        actor: "station/site-a/st-01".into(),
        order_id: "PO-BENCH".into(),
        payload,
    };
    let keys = vec![
        UniqueKey::new("serial", serial),
        UniqueKey::new("rot_id", rot_id),
    ];
    (
        draft,
        keys,
        Some(QuotaUse::new(format!("bench/{run}"), u64::MAX)),
    )
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Raw append + `fdatasync` rate of the disk under `dir`.
fn raw_fdatasync(dir: &Path, time: Duration) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fdatasync.probe");
    let mut f =
        std::fs::File::create(&path).map_err(|e| Error::io("creating the probe file", e))?;
    let buf = [0x5au8; 300];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        f.write_all(&buf)
            .map_err(|e| Error::io("writing the probe file", e))?;
        f.sync_data()
            .map_err(|e| Error::io("syncing the probe file", e))?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

/// `total` appends spread over `concurrency` tasks; returns per-append
/// latencies in milliseconds and the elapsed time.
async fn append_load(
    ledger: &Ledger,
    run: u64,
    concurrency: usize,
    total: u64,
) -> Result<(Vec<f64>, Duration)> {
    let per_task = total / concurrency as u64;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency as u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task as usize);
            for i in 0..per_task {
                let (d, k, q) = sample(run, t * per_task + i);
                let t0 = Instant::now();
                ledger.append(d, k, q).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, Error>(lat)
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    for t in tasks {
        all.extend(t.await.map_err(|_| Error::Closed)??);
    }
    Ok((all, start.elapsed()))
}

fn ledger_config(dir: &Path, cfg: &BenchConfig) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir);
    c.checkpoint_interval = cfg.checkpoint_interval;
    c.overlay_bytes = cfg.overlay_bytes;
    c
}

/// Runs the benchmark, reporting progress through `progress`.
///
/// # Errors
/// Any ledger or I/O error.
pub fn run(cfg: &BenchConfig, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<BenchReport> {
    std::fs::create_dir_all(&cfg.dir)
        .map_err(|e| Error::io(format!("creating {}", cfg.dir.display()), e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate());

    progress("measuring raw fdatasync");
    let fdatasync_per_second = raw_fdatasync(&cfg.dir, Duration::from_millis(1500))?;

    let (d, k, q) = sample(0, 0);
    let mut rec = Vec::new();
    let entry = d.place(
        0,
        0,
        &[0; 32],
        Some(&[0; 32]),
        &crate::entry::Constraints {
            unique_keys: k,
            quota: q,
        },
    );
    crate::format::encode_entry(0, &entry, &mut rec);

    let dir = cfg.dir.join("appends");
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(ledger_config(&dir, cfg), signer.clone())?;
    let mut levels = Vec::new();
    for (run, &(concurrency, total)) in cfg.levels.iter().enumerate() {
        progress(&format!(
            "{total} durable appends with {concurrency} appenders"
        ));
        reset_peak_rss();
        let (mut lat, took) =
            rt.block_on(append_load(&ledger, run as u64 + 1, concurrency, total))?;
        lat.sort_by(f64::total_cmp);
        levels.push(AppendLevel {
            concurrency,
            appends: lat.len() as u64,
            per_second: lat.len() as f64 / took.as_secs_f64(),
            p50_ms: percentile(&lat, 50),
            p99_ms: percentile(&lat, 99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            peak_rss_bytes: peak_rss_bytes(),
        });
    }

    progress("time until a checkpoint covers an entry");
    let mut checkpoint_latency_ms = Vec::new();
    for i in 0..cfg.checkpoint_samples {
        let lag = rt.block_on(async {
            // Decorrelate from the publisher's ticker.
            tokio::time::sleep(Duration::from_millis((i as u64 * 137) % 400)).await;
            let (d, k, q) = sample(999, i as u64);
            let a = ledger.append(d, k, q).await?;
            let t0 = Instant::now();
            ledger.wait_for_checkpoint(a.seq + 1).await?;
            Ok::<_, Error>(t0.elapsed().as_secs_f64() * 1e3)
        })?;
        checkpoint_latency_ms.push(lag);
    }
    ledger.close();
    let _ = std::fs::remove_dir_all(&dir);

    let large = if cfg.large_entries > 0 {
        Some(large(cfg, &rt, signer, progress)?)
    } else {
        None
    };
    // The phases reset the peak: the run's is the largest of theirs.
    let peak_rss_bytes = levels
        .iter()
        .map(|l| l.peak_rss_bytes)
        .chain(large.iter().flat_map(|g| {
            [
                g.fill_peak_rss_bytes,
                g.serve_peak_rss_bytes,
                g.verify_peak_rss_bytes,
            ]
        }))
        .chain([peak_rss_bytes()])
        .flatten()
        .max();
    Ok(BenchReport {
        fdatasync_per_second,
        record_bytes: rec.len(),
        levels,
        checkpoint_latency_ms,
        large,
        peak_rss_bytes,
    })
}

fn large(
    cfg: &BenchConfig,
    rt: &tokio::runtime::Runtime,
    signer: Arc<dyn Signer>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<LargeReport> {
    let dir = cfg.dir.join("large");
    let _ = std::fs::remove_dir_all(&dir);
    let n = cfg.large_entries;
    reset_peak_rss();
    let ledger = Ledger::open(ledger_config(&dir, cfg), signer.clone())?;
    let start = Instant::now();
    let step = (n / 10).max(1);
    let mut done = 0u64;
    while done < n {
        let chunk = step.min(n - done);
        let concurrency = 256usize.min(chunk as usize).max(1);
        let total = chunk / concurrency as u64 * concurrency as u64;
        rt.block_on(append_load(&ledger, 10_000 + done, concurrency, total))?;
        done += total;
        progress(&format!("filling: {done} of {n} entries"));
    }
    let fill_per_second = done as f64 / start.elapsed().as_secs_f64();
    let cp = rt.block_on(ledger.publish_checkpoint())?;

    // Proofs are measured in the steady state, once the indexer has moved
    // the overlay's backlog into the index (a burst leaves up to
    // `overlay_bytes` of entries behind; while it drains, proofs compete with
    // it for the CPU).
    progress("waiting for the index to catch up");
    let t0 = Instant::now();
    while ledger.indexed() < ledger.size() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let index_catch_up_seconds = t0.elapsed().as_secs_f64();
    let fill_peak_rss_bytes = peak_rss_bytes();
    reset_peak_rss();

    progress("generating proofs");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = Instant::now();
    let mut proofs = 0u64;
    while t0.elapsed() < cfg.proof_time {
        ledger.inclusion_proof(rnd() % cp.size, 0)?;
        proofs += 1;
    }
    let inclusion_proofs_per_second = proofs as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut proofs = 0u64;
    while t0.elapsed() < cfg.proof_time {
        ledger.consistency_proof(1 + rnd() % cp.size, 0)?;
        proofs += 1;
    }
    let consistency_proofs_per_second = proofs as f64 / t0.elapsed().as_secs_f64();
    ledger.close();

    progress("reopening");
    let t0 = Instant::now();
    let ledger = Ledger::open(ledger_config(&dir, cfg), signer)?;
    let reopen_seconds = t0.elapsed().as_secs_f64();
    ledger.close();
    let serve_peak_rss_bytes = peak_rss_bytes();
    reset_peak_rss();

    progress("verifying offline");
    let storage =
        FileStorage::open(&dir).map_err(|e| Error::io("opening the ledger directory", e))?;
    let segment_bytes: u64 = std::fs::read_dir(&dir)
        .map_err(|e| Error::io("listing the ledger directory", e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let t0 = Instant::now();
    let verified = verify::verify_dir(&storage, &verify::Options::default(), &mut |_| {})?;
    let verify_seconds = t0.elapsed().as_secs_f64();
    let verify_peak_rss_bytes = peak_rss_bytes();
    if let Some(p) = verified.report.problem {
        return Err(Error::corrupt(
            p.location.clone(),
            format!("bench ledger failed verify: {p}"),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(LargeReport {
        entries: done,
        fill_per_second,
        index_catch_up_seconds,
        inclusion_proofs_per_second,
        consistency_proofs_per_second,
        reopen_seconds,
        verify_seconds,
        segment_bytes,
        fill_peak_rss_bytes,
        serve_peak_rss_bytes,
        verify_peak_rss_bytes,
    })
}
