//! `trustline station run`: a factory station provisioning devices against
//! the provisioner over one long-lived mTLS channel.
//!
//! `--link` says what is in the sockets (`links`): real devices behind the
//! framed device protocol (`exec:COMMAND` per device, `serial:PATH[,BAUD]`)
//! or simulated dies (`sim`, also `--sim`): genuine dies of the simulated
//! IC vendors derived from `--sim-seed` (so the provisioner can be
//! configured with their roots: `trustline station sim-vendors --out DIR`
//! writes them as `<vendor>.pem`, the layout of the provisioner's vendor
//! roots directory), each run drawing fresh dies. The summary (`summary`)
//! counts refusals and failures by reason and lists every device that was
//! not provisioned. Exit codes: 0 when every device was provisioned or
//! refused for an expected reason, 1 when some device failed, 2 for usage
//! or start-up errors.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tonic::transport::Channel;
use transport::{ClientTls, CredentialPaths};

use super::Outcome;
use site::setup;
use station::link::LinkSpec;
use station::run::{self, Mode, RunConfig};
use station::sim::{sim_vendors, DEFAULT_SIM_SEED};

mod links;
mod summary;

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

/// What `station run --help` says after the options.
const RUN_AFTER_HELP: &str = "\
Device links (--link, once per socket; device i of the run uses link i mod the number given):
  sim                 simulated dies of the simulated IC vendors (--sim-seed)
  exec:COMMAND        the station starts COMMAND once per device and speaks the framed
                      device protocol (docs/device-protocol.md) with it: requests on its
                      stdin, answers on its stdout, logs on stderr. COMMAND is split into
                      words like a shell would, but no shell runs it; {index} in any word
                      becomes the device's index in the run (0, 1, ...), also given as
                      TRUSTLINE_DEVICE_INDEX (TRUSTLINE_DEVICE_SESSION counts restarts).
                      When the station closes stdin the command must exit with status 0.
  serial:PATH[,BAUD]  the same frames over a serial port, 8N1 raw, 115200 baud unless given;
                      {index} in PATH as above. Input before the first frame is discarded.
Each request must be answered within --device-timeout (an exec command is then killed);
opening a session (starting the command or opening the port, and hello) within
--device-open-timeout.
A lost answer (timeout, exit, malformed frame, wrong id) is tried again in a new session
up to --device-retries times: a repeatable step is repeated; claim and key steps are
recovered from the device's status, never repeated once done. A device that fails is
reported with its stage and a stable reason (device:<code>, link:<fault>, ...); the others
go on.

Examples:
  trustline station run --order PO-1 --out out --data-dir data --identity station-site-1-st-01 \\
      --link 'exec:python3 reference-device/device.py serve --state devs/dev-{index}' --devices 4
  trustline station run --order PO-1 --out out ... --link serial:/dev/ttyACM0 --link serial:/dev/ttyACM1";

/// `trustline station run` arguments.
#[derive(Debug, Args)]
#[command(after_help = RUN_AFTER_HELP)]
pub(crate) struct RunArgs {
    /// The production order.
    #[arg(long, value_name = "ID")]
    pub(crate) order: String,
    /// How many devices [default: one per --link].
    #[arg(long, value_name = "N")]
    pub(crate) devices: Option<usize>,
    /// The device link: sim, exec:COMMAND or serial:PATH[,BAUD] (see below);
    /// repeat it for several sockets.
    #[arg(long = "link", value_name = "LINK")]
    pub(crate) links: Vec<LinkSpec>,
    /// Use simulated devices (the same as --link sim).
    #[arg(long, conflicts_with = "links")]
    pub(crate) sim: bool,
    /// Seconds a device may take to answer one request (exec: then killed).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub(crate) device_timeout: std::time::Duration,
    /// Seconds opening a device session may take: starting the exec command
    /// or opening the port, and the answer to hello.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    pub(crate) device_open_timeout: std::time::Duration,
    /// How often a lost device answer is tried again, in a new session.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) device_retries: u32,
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
    /// One unary call per step instead of the line stream (for
    /// provisioners without `Provisioning/Line`, and as the baseline).
    #[arg(long)]
    pub(crate) unary: bool,
    /// The provisioner and this station's credentials.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// A duration in (possibly fractional) seconds, above zero.
fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let value: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(value > 0.0 && value <= 86_400.0) {
        return Err("give a number of seconds above 0 and at most 86400".into());
    }
    Ok(std::time::Duration::from_secs_f64(value))
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
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(station_run(*args))
        }
    }
}

async fn station_run(args: RunArgs) -> anyhow::Result<Outcome> {
    let specs = if args.sim || args.links.is_empty() {
        if !args.sim {
            bail!("say what is in the sockets: --link exec:COMMAND, --link serial:PATH or --sim");
        }
        vec![LinkSpec::Sim]
    } else {
        args.links.clone()
    };
    let devices = args.devices.unwrap_or(specs.len());
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    let identity = args.client.identity.clone();
    let options = station::link::LinkOptions {
        timeout: args.device_timeout,
        open_timeout: args.device_open_timeout,
        retries: args.device_retries,
        station: identity.unwrap_or_else(|| "station".into()),
    };
    let (jobs, labels) = links::jobs(&specs, devices, &options, args.sim_seed)?;
    let channel = args.client.connect("station").await?;
    let config = RunConfig {
        order_id: args.order.clone(),
        mode: args.mode,
        concurrency: args.concurrency,
        out_dir: Some(args.out.clone()),
        first_serial: args.first_serial,
        progress: !args.json,
        retries: args.retries,
        protocol: if args.unary {
            run::Protocol::Unary
        } else {
            run::Protocol::Stream
        },
    };
    let (report, _) = run::run(channel, config, jobs).await?;
    summary::print(&report, &labels, args.json)?;
    Ok(if report.failures().is_empty() {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}
