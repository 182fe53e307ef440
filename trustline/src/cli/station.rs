//! `trustline station run`: a factory station provisioning devices against
//! the provisioner over one long-lived mTLS channel.
//!
//! `--sim` puts simulated dies in the sockets: genuine dies of the
//! simulated IC vendors derived from `--sim-seed` (so the provisioner can be
//! configured with their roots: `trustline station sim-vendors --out DIR`
//! writes them as `<vendor>.pem`, the layout of the provisioner's vendor
//! roots directory), each run drawing fresh dies. Exit codes: 0 when every
//! device was provisioned or refused for an expected reason, 1 when some
//! device failed, 2 for usage or start-up errors.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use tonic::transport::Channel;
use transport::{ClientTls, CredentialPaths};

use super::Outcome;
use site::setup;
use station::run::{self, Job, Mode, Report, RunConfig};
use station::sim::{fresh_dies, sim_vendors, SimLink, DEFAULT_SIM_SEED};

/// `trustline station` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum StationCommand {
    /// Provisions devices: claim, personalise, certify, write.
    Run(Box<RunArgs>),
    /// Writes the simulated IC vendors' root certificates (for the
    /// provisioner's vendor roots directory).
    SimVendors(SimVendorsArgs),
}

/// How a client reaches a Trustline service.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// The provisioner, `host:port`.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:7400",
        env = "TRUSTLINE_SERVER"
    )]
    pub(crate) server: String,
    /// This client's certificate (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["key", "ca_cert"])]
    pub(crate) cert: Option<PathBuf>,
    /// This client's private key (PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// The service CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Or: a data directory whose `pki/<identity>.pem|.key` to use.
    #[arg(long, value_name = "DIR", conflicts_with = "cert")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The credential name under `<data-dir>/pki` (e.g. station-site-1-st-01).
    #[arg(long, value_name = "NAME")]
    pub(crate) identity: Option<String>,
}

impl ClientArgs {
    /// The credential files.
    ///
    /// # Errors
    /// When neither `--cert/--key/--ca-cert` nor `--data-dir` with
    /// `--identity` is given.
    pub(crate) fn paths(&self, default_identity: &str) -> anyhow::Result<CredentialPaths> {
        match (&self.cert, &self.key, &self.ca_cert, &self.data_dir) {
            (Some(cert), Some(key), Some(ca), _) => Ok(CredentialPaths {
                certificate: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            (None, _, _, Some(dir)) => Ok(setup::credentials(
                dir,
                self.identity.as_deref().unwrap_or(default_identity),
            )),
            _ => bail!("give --cert, --key and --ca-cert, or --data-dir with --identity"),
        }
    }

    /// Connects (one channel, kept for the whole run).
    ///
    /// # Errors
    /// Credential and connection failures.
    pub(crate) async fn connect(&self, default_identity: &str) -> anyhow::Result<Channel> {
        let tls =
            ClientTls::from_files(&self.paths(default_identity)?).context("client credentials")?;
        tls.connect(&self.server)
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }
}

/// `trustline station run` arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The production order.
    #[arg(long, value_name = "ID")]
    pub(crate) order: String,
    /// How many devices.
    #[arg(long, value_name = "N")]
    pub(crate) devices: usize,
    /// Use simulated devices (the only device link built in).
    #[arg(long)]
    pub(crate) sim: bool,
    /// Devices in flight at once over the one channel.
    #[arg(long, value_name = "K", default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// How device keys are made.
    #[arg(long, value_name = "MODE", default_value = "on-device")]
    pub(crate) mode: Mode,
    /// Where to write each device's chain (PEM) and voucher.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// The serial number to start at [default: after the devices the order
    /// has certified].
    #[arg(long, value_name = "N")]
    pub(crate) first_serial: Option<u64>,
    /// The simulated vendors' seed (must match `sim-vendors`).
    #[arg(long, value_name = "SEED", default_value_t = DEFAULT_SIM_SEED)]
    pub(crate) sim_seed: u64,
    /// Retries of a step when the provisioner is unavailable.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) retries: u32,
    /// Print the summary as JSON (no progress bar).
    #[arg(long)]
    pub(crate) json: bool,
    /// The provisioner and this station's credentials.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `trustline station sim-vendors` arguments.
#[derive(Debug, Args)]
pub(crate) struct SimVendorsArgs {
    /// Where to write `<vendor>.pem`.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// The simulated vendors' seed.
    #[arg(long, value_name = "SEED", default_value_t = DEFAULT_SIM_SEED)]
    pub(crate) sim_seed: u64,
}

#[derive(Serialize)]
struct Summary {
    provisioned: usize,
    refused: std::collections::BTreeMap<String, usize>,
    failed: usize,
    seconds: f64,
    devices_per_second: f64,
}

/// Runs a `station` subcommand.
///
/// # Errors
/// Usage and start-up errors.
pub(crate) fn run(command: StationCommand) -> anyhow::Result<Outcome> {
    match command {
        StationCommand::SimVendors(args) => {
            let fleet = sim_vendors(args.sim_seed)?;
            site::config::write_vendor_roots(&args.out, &fleet.vendor_roots())?;
            for (name, _) in fleet.vendor_roots() {
                println!("{}", args.out.join(format!("{name}.pem")).display());
            }
            Ok(Outcome::Success)
        }
        StationCommand::Run(args) => {
            if !args.sim {
                bail!("only simulated devices are built in: pass --sim (a probe back end implements station::link::DeviceLink)");
            }
            if args.devices == 0 {
                bail!("--devices must be at least 1");
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(station_run(*args))
        }
    }
}

async fn station_run(args: RunArgs) -> anyhow::Result<Outcome> {
    let mut fleet = sim_vendors(args.sim_seed)?;
    let dies = fresh_dies(&mut fleet, args.devices)?;
    let channel = args.client.connect("station").await?;
    let jobs = dies
        .into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect();
    let config = RunConfig {
        order_id: args.order.clone(),
        mode: args.mode,
        concurrency: args.concurrency,
        out_dir: Some(args.out.clone()),
        first_owner: None,
        first_serial: args.first_serial,
        progress: !args.json,
        retries: args.retries,
    };
    let (report, _) = run::run(channel, config, jobs).await?;
    print_report(&report, args.json)?;
    Ok(if report.failures().is_empty() {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    let summary = Summary {
        provisioned: report.provisioned(),
        refused: report.refusals(),
        failed: report.failures().len(),
        seconds: report.elapsed.as_secs_f64(),
        devices_per_second: report.devices_per_second(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "provisioned {} devices in {:.2} s ({:.0} devices/s)",
        summary.provisioned, summary.seconds, summary.devices_per_second
    );
    for (reason, n) in &summary.refused {
        match run::allowance::explain(reason) {
            Some(meaning) => println!("refused ({reason}): {n} — {meaning}"),
            None => println!("refused ({reason}): {n}"),
        }
    }
    for failure in report.failures() {
        if let run::Outcome::Failed { stage, message } = failure {
            println!("FAILED at {stage}: {message}");
        }
    }
    Ok(())
}
