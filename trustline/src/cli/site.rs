//! `trustline site …`: a factory site's side of enrolment at the OEM hub
//! (issue 13; `deploy::enrol`).
//!
//! - `site init --data-dir S --site NAME`: the site intermediate key and its
//!   request on the site's CA token, the checkpoint key on the site's
//!   ledger token, `S/trustline.toml` naming the site; prints the request
//!   and the ledger key to carry to the hub (`trustline hub enroll-site`).
//! - `site install --data-dir S --bundle FILE`: installs what the hub
//!   answered, after checking it is for this site and chains to its root;
//!   then `trustline serve site` runs the site.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use deploy::bundle::Bundle;
use deploy::enrol::{self, DEFAULT_ORGANIZATION};
use serde::Serialize;

use super::hsm_args::{self, HsmArgs, LedgerHsmArgs};
use super::Outcome;

/// `trustline site` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SiteCommand {
    /// Makes the site's keys and its enrolment request.
    Init(InitArgs),
    /// Installs the hub's enrolment bundle.
    Install(InstallArgs),
}

/// `trustline site init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The site's data directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The site's name (what the OEM's orders and certificates call it).
    #[arg(long)]
    pub(crate) site: String,
    /// The OEM's name (subject O; the hub's root must carry the same).
    #[arg(long, default_value = DEFAULT_ORGANIZATION)]
    pub(crate) organization: String,
    /// The ledger's checkpoint origin [default:
    /// trustline.example/<site>/custody-ledger].
    #[arg(long)]
    pub(crate) origin: Option<String>,
    /// The site's CA token.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// The site's ledger token.
    #[command(flatten)]
    pub(crate) ledger_hsm: LedgerHsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline site install` arguments.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The site's data directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The bundle `trustline hub enroll-site` wrote.
    #[arg(long, value_name = "FILE")]
    pub(crate) bundle: PathBuf,
    /// The site's CA token (it holds the pending intermediate key).
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Serialize)]
struct InitSummary {
    site: String,
    origin: String,
    csr: String,
    ledger_key: String,
    ca_token: String,
    ledger_token: String,
}

#[derive(Serialize)]
struct InstallSummary {
    site: String,
    generation: u32,
    credentials: Vec<String>,
}

/// Runs a `site` subcommand.
///
/// # Errors
/// HSM, CA and I/O errors; a bundle for another site.
pub(crate) fn run(command: SiteCommand) -> anyhow::Result<Outcome> {
    match command {
        SiteCommand::Init(args) => init(&args),
        SiteCommand::Install(args) => install(&args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    let dir = Some(args.data_dir.as_path());
    let ca = hsm_args::open(&args.hsm.config(dir)?)?;
    let ledger = hsm_args::open(&args.ledger_hsm.config(&args.hsm, dir)?)?;
    let report = enrol::site_init(
        &ca,
        &ledger,
        &args.data_dir,
        &args.site,
        &args.organization,
        args.origin.as_deref(),
    )?;
    let summary = InitSummary {
        site: report.site,
        origin: report.origin,
        csr: report.csr_file.display().to_string(),
        ledger_key: report.ledger_key_file.display().to_string(),
        ca_token: ca.token_label().to_owned(),
        ledger_token: ledger.token_label().to_owned(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "site {} initialised: intermediate key on token {:?}, checkpoint key on token {:?}",
            summary.site, summary.ca_token, summary.ledger_token
        );
        println!("carry to the hub (`trustline hub enroll-site`):");
        println!("  --site {} --origin {}", summary.site, summary.origin);
        println!("  --csr {}", summary.csr);
        println!("  --ledger-key {}", summary.ledger_key);
    }
    Ok(Outcome::Success)
}

fn install(args: &InstallArgs) -> anyhow::Result<Outcome> {
    let bundle = Bundle::read(&args.bundle)?;
    let ca = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let report = enrol::site_install(&ca, &args.data_dir, &bundle)?;
    let summary = InstallSummary {
        site: bundle.site.clone(),
        generation: report.generation,
        credentials: report.credentials,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "site {} installed: intermediate generation {}, credentials {}",
            summary.site,
            summary.generation,
            summary.credentials.join(", ")
        );
        println!(
            "delete {} (it holds private keys); run `trustline serve site`",
            args.bundle.display()
        );
    }
    Ok(Outcome::Success)
}
