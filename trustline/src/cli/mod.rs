//! The `trustline` command line: parses arguments, then runs one subcommand.
//!
//! Each subcommand lives in a module of its own named after it
//! (`cli/ca.rs`, `cli/ledger.rs`, ...), holding its clap arguments and a
//! `run` function; this module only dispatches. Exit codes: 0 success, 1 a
//! check found problems (e.g. `ledger verify`, `audit`), 2 usage or
//! operational error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod bench_hub;
pub(crate) mod bench_line;
pub(crate) mod ca;
pub(crate) mod demo;
mod demo_sites;
pub(crate) mod evidence;
pub(crate) mod fdo_args;
pub(crate) mod hsm_args;
pub(crate) mod hub;
pub(crate) mod inspect;
pub(crate) mod ledger;
pub(crate) mod order;
pub(crate) mod owner;
pub(crate) mod pki;
pub(crate) mod serve;
pub(crate) mod site;
pub(crate) mod station;
pub(crate) mod voucher;

/// Trustline: claims, personalises, certifies and records devices on the
/// factory line, and carries their ownership afterwards.
#[derive(Debug, Parser)]
#[command(name = "trustline", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. "info" or "trustline=debug".
    #[arg(long, global = true, env = "TRUSTLINE_LOG", default_value = "warn")]
    pub(crate) log: String,
    /// The subcommand.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The certificate authority: `ca init|rotate-intermediate|sign-intermediate`.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// The OEM hub: `hub init|enroll-site` (the two trust domains).
    #[command(subcommand)]
    Hub(hub::HubCommand),
    /// A factory site's enrolment at the hub: `site init|install`.
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Throughput measurements: `bench hsm`.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Runs the services: `serve ca|ledger|provisioner|site|all|hub`
    /// (`all` is the single-box laptop/demo layout).
    Serve(serve::ServeArgs),
    /// A factory station: `station run`, `station sim-vendors`.
    #[command(subcommand)]
    Station(station::StationCommand),
    /// OEM production orders: `order create|open|status`.
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// The factory line end to end on this machine: token, CA, PKI,
    /// services behind mTLS, an order, S stations, clones and counterfeits,
    /// the ledger verified.
    Demo(demo::DemoArgs),
    /// The service PKI for mutual TLS: `pki init|issue|revoke|renew|crl|install-crl|roles`.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// The custody ledger offline: `ledger verify|export|proof|history`.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// The OEM's audit of a custody ledger: overproduction, clones,
    /// counterfeits and gaps per order (exit 1 on findings).
    Audit(audit::AuditCommand),
    /// The assurance questionnaire rows answered at a class, with live
    /// ledger evidence.
    Evidence(evidence::EvidenceArgs),
    /// Ownership vouchers, offline: `voucher extend|verify|show` (2.4.14.7).
    #[command(subcommand)]
    Voucher(voucher::VoucherCommand),
    /// Owner keys: `owner keygen`.
    #[command(subcommand)]
    Owner(owner::OwnerCommand),
    /// Physical inspection of a device in hand (2.4.14.10): live identity
    /// against the chain, custody history with proofs (`--sim`).
    Inspect(inspect::InspectArgs),
}

/// What a subcommand reports back to `main`.
pub(crate) enum Outcome {
    /// Everything asked for was done and every check passed.
    Success,
    /// The command ran but a check found problems (exit code 1).
    Findings,
}

/// Parses the command line and runs it.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Ca(command) => ca::run(command),
        Command::Hub(command) => hub::run(command),
        Command::Site(command) => site::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Station(command) => station::run(command),
        Command::Order(command) => order::run(command),
        Command::Pki(command) => pki::run(command),
        Command::Ledger(command) => ledger::run(command),
        Command::Voucher(command) => voucher::run(command),
        Command::Owner(command) => owner::run_owner(command),
        Command::Inspect(args) => inspect::run(args),
        Command::Audit(command) => audit::run(command),
        Command::Evidence(args) => evidence::run(args),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Logs go to stderr so that `--json` output on stdout stays parseable.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Makes `dir` for a run's artifacts: it may not exist yet, or be empty, so
/// that a run never mixes its files with (or overwrites) an earlier one's.
fn fresh_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty: remove it or choose another --dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
