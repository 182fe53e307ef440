//! `trustline bench hub` (issue 13): the hub's sustained ingest with
//! several sites pushing at once, and the lag from a site checkpoint to the
//! cosignature its uplink keeps (median, p99), beside each site's own
//! append rate in the same run (`hub::bench`). The sites run their real
//! uplink (`site::uplink`: every cosignature verified and kept durably)
//! unless `--uplink minimal` measures the hub's side alone. The hub's
//! store is the embedded one unless `--store postgres` puts it in
//! PostgreSQL (issue 14: a throwaway cluster, or `--database URL`);
//! `--store both` runs the same load on each in turn and prints them side
//! by side.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use hub::bench::{BenchConfig, BenchStore, StartedUplink, UplinkDriver};

use super::Outcome;

/// Which uplink the sites run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UplinkKind {
    /// The site's own uplink (`site::uplink`).
    Site,
    /// Push and ask for cosignatures, nothing verified or kept.
    Minimal,
}

/// Which store the hub runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// The embedded store (redb) in the scratch directory.
    Embedded,
    /// The PostgreSQL store, in a throwaway cluster unless --database.
    Postgres,
    /// The embedded store, then PostgreSQL, under the same load; printed
    /// side by side.
    Both,
}

/// `trustline bench hub` arguments.
#[derive(Debug, Args)]
pub(crate) struct HubArgs {
    /// Sites pushing at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) sites: usize,
    /// Concurrent appenders (stations) per site.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) appenders: usize,
    /// Entries each site appends.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub(crate) entries: u64,
    /// Most entries per push.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) push_batch: usize,
    /// Each site's append rate, entries/s (a line's pace: a certified
    /// device is two to three entries) [default: as fast as its ledger
    /// takes them].
    #[arg(long, value_name = "N")]
    pub(crate) rate: Option<f64>,
    /// The sites' checkpoint cadence, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub(crate) checkpoint_ms: u64,
    /// The uplink the sites run.
    #[arg(long, value_enum, default_value_t = UplinkKind::Site)]
    pub(crate) uplink: UplinkKind,
    /// The hub's store.
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub(crate) store: StoreKind,
    /// With --store postgres or both: an existing, empty database to use
    /// instead of a throwaway cluster.
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// A scratch directory [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The site's own uplink, for the benchmark.
struct SiteUplink;

impl UplinkDriver for SiteUplink {
    fn start<'a>(
        &'a self,
        site: &'a str,
        ledger: custody_ledger::Ledger,
        channel: transport::InProcessChannel,
        witness_key: &'a str,
        push_batch: usize,
    ) -> hub::bench::Starting<'a> {
        Box::pin(site_uplink(site, ledger, channel, witness_key, push_batch))
    }
}

/// [`SiteUplink`]'s start.
async fn site_uplink(
    site: &str,
    ledger: custody_ledger::Ledger,
    channel: transport::InProcessChannel,
    witness_key: &str,
    push_batch: usize,
) -> hub::Result<StartedUplink> {
    let config = site::uplink::UplinkConfig {
        hub: "in-process".into(),
        site: site.to_owned(),
        witness_key: witness_key.to_owned(),
        push_batch,
        ..site::uplink::UplinkConfig::default()
    };
    let handle = site::uplink::spawn(&config, ledger, channel, std::future::pending())
        .await
        .map_err(|e| hub::Error::Store(format!("bench: uplink: {e}")))?;
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let mut status = handle.subscribe();
    let forward = tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let size = status.borrow_and_update().cosigned_size();
            tx.send_if_modified(|s| std::mem::replace(s, size) != size);
        }
    });
    Ok(StartedUplink {
        cosigned: rx,
        stop: Box::new(move || {
            Box::pin(async move {
                handle.stop().await;
                forward.abort();
            })
        }),
    })
}

/// Runs `trustline bench hub`.
///
/// # Errors
/// Bad arguments; the benchmark's failures.
pub(crate) fn run(args: &HubArgs) -> anyhow::Result<Outcome> {
    if args.sites == 0 || args.appenders == 0 || args.entries == 0 {
        bail!("--sites, --appenders and --entries must be at least 1");
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be above 0");
    }
    if args.database.is_some() && args.store == StoreKind::Embedded {
        bail!("--database needs --store postgres or --store both");
    }
    let postgres = BenchStore::Postgres {
        database: args.database.clone(),
    };
    let stores = match args.store {
        StoreKind::Embedded => vec![BenchStore::Embedded],
        StoreKind::Postgres => vec![postgres],
        StoreKind::Both => vec![BenchStore::Embedded, postgres],
    };
    let temp = match &args.dir {
        None => Some(tempfile_dir()?),
        Some(_) => None,
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_default();
    let cfg = BenchConfig {
        sites: args.sites,
        appenders_per_site: args.appenders,
        entries_per_site: args.entries,
        push_batch: args.push_batch.clamp(1, hub::MAX_PUSH_ENTRIES),
        checkpoint_interval: Duration::from_millis(args.checkpoint_ms.max(1)),
        rate_per_site: args.rate,
        ..BenchConfig::new(dir.join("hub-bench"))
    };
    let spinner = (!args.json).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let progress = |phase: &str| {
        if let Some(s) = &spinner {
            s.set_message(phase.to_owned());
        }
    };
    let driver: &dyn UplinkDriver = match args.uplink {
        UplinkKind::Site => &SiteUplink,
        UplinkKind::Minimal => &hub::bench::MinimalUplink,
    };
    let comparison = hub::bench::compare(&cfg, &stores, driver, &progress)?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    // One store: its report as before (it names the store); several: the
    // comparison.
    match (args.json, comparison.runs.as_slice()) {
        (true, [report]) => println!("{}", serde_json::to_string_pretty(report)?),
        (true, _) => println!("{}", serde_json::to_string_pretty(&comparison)?),
        (false, [report]) => print!("{report}"),
        (false, _) => print!("{comparison}"),
    }
    if !args.json {
        println!("  uplink: {:?}", args.uplink);
    }
    drop(temp);
    Ok(Outcome::Success)
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<Scratch> {
    let dir = std::env::temp_dir().join(format!(
        "trustline-bench-hub-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(Scratch(dir))
}
