//! `trustline bench …`: throughput measurements (never timed tests).
//!
//! `bench hsm` measures raw HSM P-256 signatures/s with 1 and N sessions,
//! certificates issued/s and wrapped device keys/s, each with its ratio to
//! the raw signature rate of the same run (`ca_service::bench`). Without HSM
//! options it runs on a fresh embedded SoftHSM2 token in a temporary
//! directory (or under `--data-dir`), with throw-away keys either way.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use ca_service::bench::{self, BenchConfig};
use clap::{Args, Subcommand};

use super::hsm_args::HsmArgs;
use super::Outcome;

/// `trustline bench` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Bench {
    /// HSM and CA: raw P-256 signatures/s (1 and N sessions), certificates
    /// issued/s and HSM-made wrapped device keys/s.
    Hsm(HsmBenchArgs),
    /// Custody ledger: durable appends/s with 1, 16 and 256 appenders,
    /// p50/p99 acknowledgement latency, raw fdatasync/s of the same disk,
    /// checkpoint lag, and proofs/s and full verify time at 1M entries.
    Ledger(LedgerBenchArgs),
    /// The factory line end to end: devices/s per personalisation mode with
    /// K stations, server CPU per device, and the ratio to the HSM bound
    /// measured in the same run.
    Line(super::bench_line::LineArgs),
    /// The OEM hub: sustained ingest with several sites pushing at once,
    /// checkpoint → cosignature lag (median, p99), each site's append rate
    /// in the same run.
    Hub(super::bench_hub::HubArgs),
}

/// `trustline bench ledger` arguments.
#[derive(Debug, Args)]
pub(crate) struct LedgerBenchArgs {
    /// A scratch directory on the disk to measure [default: a temporary
    /// directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Entries in the large ledger for proofs/s, verify time and memory
    /// (e.g. 5000000 to check that memory stays flat); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) entries: u64,
    /// Multiplies the appends per concurrency level (2k, 20k, 100k).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub(crate) scale: f64,
    /// The measured ledgers' overlay limit in MiB (durable entries held in
    /// memory ahead of the index) [default: the ledger's default].
    #[arg(long, value_name = "MIB")]
    pub(crate) overlay_mib: Option<usize>,
    /// `postgres`: the file engine and the PostgreSQL engine side by side
    /// (issue 14), in a throwaway cluster unless --database is given.
    #[arg(long, value_enum, default_value = "files")]
    pub(crate) backend: Backend,
    /// With --backend postgres: an existing, empty database to use.
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which ledger engine `bench ledger` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// The file engine alone (the full report, large ledger included).
    Files,
    /// The file and PostgreSQL engines side by side.
    Postgres,
}

/// `trustline bench hsm` arguments.
#[derive(Debug, Args)]
pub(crate) struct HsmBenchArgs {
    /// N: sessions (and threads) for the multi-session phases.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) sessions: usize,
    /// Seconds per phase (six phases).
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// A data directory whose embedded token to use [default: a fresh token
    /// in a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The HSM (overrides the embedded token).
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
}

/// A fresh directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "trustline-bench-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a `bench` subcommand.
///
/// # Errors
/// HSM and CA errors, with context.
pub(crate) fn run(command: Bench) -> anyhow::Result<Outcome> {
    match command {
        Bench::Hsm(args) => hsm(&args),
        Bench::Line(args) => super::bench_line::run(&args),
        Bench::Ledger(args) => ledger(&args),
        Bench::Hub(args) => super::bench_hub::run(&args),
    }
}

fn hsm(args: &HsmBenchArgs) -> anyhow::Result<Outcome> {
    if args.sessions == 0 || !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--sessions must be at least 1 and --seconds between 0 and 600");
    }
    let temp = match (&args.data_dir, args.hsm.is_explicit()) {
        (None, false) => Some(TempDir::create()?),
        _ => None,
    };
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.0.clone()));
    // A measurement, not a service: without a named HSM it measures a
    // throw-away embedded SoftHSM2 token.
    let mut hsm_args = args.hsm.clone();
    hsm_args.embedded_hsm |= !hsm_args.is_explicit();
    let mut config = hsm_args.config(data_dir.as_deref())?;
    config.pool_size = config.pool_size.max(args.sessions);
    let hsm = super::hsm_args::open(&config)?;
    let work_dir = match &data_dir {
        Some(d) => d.join("bench"),
        None => std::env::temp_dir(),
    };
    let bench_config = BenchConfig {
        sessions: args.sessions,
        phase: Duration::from_secs_f64(args.seconds),
    };
    let spinner = (!args.json).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let report = bench::run(&hsm, &work_dir, &bench_config, &mut |phase| {
        if let Some(s) = &spinner {
            s.set_message(phase.to_owned());
        }
    })?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    drop(temp);
    Ok(Outcome::Success)
}

fn ledger(args: &LedgerBenchArgs) -> anyhow::Result<Outcome> {
    use custody_ledger::bench as lb;
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        bail!("--scale must be above 0 and at most 100");
    }
    let temp = match &args.dir {
        None => Some(TempDir::create()?),
        Some(_) => None,
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.0.clone()))
        .context("no scratch directory")?;
    if args.backend == Backend::Postgres {
        return ledger_postgres(args, &dir);
    }
    let mut config = lb::BenchConfig::new(dir.join("ledger-bench"));
    for level in &mut config.levels {
        level.1 = ((level.1 as f64 * args.scale) as u64).max(level.0 as u64);
    }
    config.large_entries = args.entries;
    if let Some(n) = args.overlay_mib {
        if n == 0 {
            bail!("--overlay-mib must be at least 1");
        }
        config.overlay_bytes = n << 20;
    }
    let spinner = (!args.json).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let report = lb::run(&config, &|phase: &str| {
        if let Some(s) = &spinner {
            s.set_message(phase.to_owned());
        }
    })?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let mut lags = report.checkpoint_latency_ms.clone();
    lags.sort_by(f64::total_cmp);
    let lag_max = lags.last().copied().unwrap_or(0.0);
    let lag_median = lags.get(lags.len() / 2).copied().unwrap_or(0.0);
    if args.json {
        let levels: Vec<_> = report
            .levels
            .iter()
            .map(|l| {
                serde_json::json!({
                    "appenders": l.concurrency,
                    "appends": l.appends,
                    "per_second": l.per_second,
                    "p50_ms": l.p50_ms,
                    "p99_ms": l.p99_ms,
                    "max_ms": l.max_ms,
                    "peak_rss_bytes": l.peak_rss_bytes,
                })
            })
            .collect();
        let large = report.large.as_ref().map(|g| {
            serde_json::json!({
                "entries": g.entries,
                "fill_per_second": g.fill_per_second,
                "index_catch_up_seconds": g.index_catch_up_seconds,
                "inclusion_proofs_per_second": g.inclusion_proofs_per_second,
                "consistency_proofs_per_second": g.consistency_proofs_per_second,
                "reopen_seconds": g.reopen_seconds,
                "verify_seconds": g.verify_seconds,
                "segment_bytes": g.segment_bytes,
                "fill_peak_rss_bytes": g.fill_peak_rss_bytes,
                "serve_peak_rss_bytes": g.serve_peak_rss_bytes,
                "verify_peak_rss_bytes": g.verify_peak_rss_bytes,
            })
        });
        let v = serde_json::json!({
            "fdatasync_per_second": report.fdatasync_per_second,
            "record_bytes": report.record_bytes,
            "appends": levels,
            "checkpoint_lag_ms": { "median": lag_median, "max": lag_max, "samples": report.checkpoint_latency_ms },
            "large": large,
            "overlay_bytes": config.overlay_bytes,
            "peak_rss_bytes": report.peak_rss_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("custody ledger on {}", dir.display());
        println!(
            "raw 300-byte append + fdatasync: {:.0}/s",
            report.fdatasync_per_second
        );
        println!(
            "entry record: {} bytes (Certified-like, 2 unique keys, 1 quota)",
            report.record_bytes
        );
        let mb = |b: Option<u64>| b.map_or("?".to_string(), |b| format!("{} MB", b >> 20));
        for l in &report.levels {
            println!(
                "{:>4} appenders: {:>8.0} durable appends/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} appends)  peak RSS {}",
                l.concurrency, l.per_second, l.p50_ms, l.p99_ms, l.max_ms, l.appends, mb(l.peak_rss_bytes)
            );
        }
        println!("signed checkpoint covers a new entry after: median {lag_median:.0} ms, max {lag_max:.0} ms");
        if let Some(g) = &report.large {
            println!(
                "at {} entries ({} MB of segments):",
                g.entries,
                g.segment_bytes >> 20
            );
            println!(
                "  sustained fill (256 appenders, index keeping up): {:.0} appends/s  peak RSS {}",
                g.fill_per_second,
                mb(g.fill_peak_rss_bytes)
            );
            println!(
                "  index caught up {:.1} s after the fill; then:",
                g.index_catch_up_seconds
            );
            println!("  inclusion proofs: {:.0}/s", g.inclusion_proofs_per_second);
            println!(
                "  consistency proofs: {:.0}/s",
                g.consistency_proofs_per_second
            );
            println!(
                "  reopen (recovery + self-check): {:.2} s",
                g.reopen_seconds
            );
            println!(
                "  proofs and reopen: peak RSS {}",
                mb(g.serve_peak_rss_bytes)
            );
            println!(
                "  full offline verify: {:.2} s  peak RSS {}",
                g.verify_seconds,
                mb(g.verify_peak_rss_bytes)
            );
        }
        if let Some(b) = report.peak_rss_bytes {
            println!(
                "peak resident memory over the run: {} MB (overlay limit {} MiB)",
                b >> 20,
                config.overlay_bytes >> 20
            );
        }
    }
    drop(temp);
    Ok(Outcome::Success)
}

/// `bench ledger --backend postgres`: both engines in one run.
fn ledger_postgres(args: &LedgerBenchArgs, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    let mut config = pg_store::bench::BenchConfig::new(dir.join("ledger-bench"));
    for level in &mut config.levels {
        level.1 = ((level.1 as f64 * args.scale) as u64).max(level.0 as u64);
    }
    config.database = args.database.clone();
    let spinner = (!args.json).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let report = runtime.block_on(pg_store::bench::run(&config, &|phase: &str| {
        if let Some(s) = &spinner {
            s.set_message(phase.to_owned());
        }
    }))?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    if args.json {
        let levels: Vec<_> = report
            .levels
            .iter()
            .map(|l| {
                serde_json::json!({
                    "backend": l.backend,
                    "appenders": l.concurrency,
                    "appends": l.appends,
                    "per_second": l.per_second,
                    "p50_ms": l.p50_ms,
                    "p99_ms": l.p99_ms,
                })
            })
            .collect();
        let lags: Vec<_> = report
            .checkpoint_lag_ms
            .iter()
            .map(|(b, m, x)| serde_json::json!({"backend": b, "median_ms": m, "max_ms": x}))
            .collect();
        let v = serde_json::json!({
            "postgresql": report.server_version,
            "levels": levels,
            "checkpoint_lag": lags,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Outcome::Success);
    }
    println!(
        "custody ledger: files and PostgreSQL {} side by side",
        report.server_version
    );
    println!(
        "{:<22} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "backend", "appenders", "appends", "appends/s", "p50 ms", "p99 ms"
    );
    for l in &report.levels {
        println!(
            "{:<22} {:>9} {:>9} {:>12.0} {:>9.2} {:>9.2}",
            l.backend, l.concurrency, l.appends, l.per_second, l.p50_ms, l.p99_ms
        );
    }
    for l in report.levels.iter().filter(|l| l.backend == "postgres") {
        let files = report
            .levels
            .iter()
            .find(|f| f.backend == "files" && f.concurrency == l.concurrency);
        if let Some(f) = files.filter(|f| f.per_second > 0.0) {
            println!(
                "postgres / files at {} appenders: {:.2}",
                l.concurrency,
                l.per_second / f.per_second
            );
        }
    }
    for (b, m, x) in &report.checkpoint_lag_ms {
        println!("checkpoint lag ({b}): median {m:.0} ms, max {x:.0} ms");
    }
    Ok(Outcome::Success)
}
