//! `trustline hub …`: the OEM hub's side of the two trust domains (issue
//! 13; `deploy::hub`, `deploy::enrol`).
//!
//! - `hub init --data-dir H`: the OEM root, order, voucher and witness keys
//!   and the service CA on the hub's token; root certificate, public keys,
//!   witness key, service PKI and `hub.toml` in `H`.
//! - `hub enroll-site --data-dir H --site NAME --csr FILE --ledger-key FILE
//!   --out BUNDLE`: the root signs the site's intermediate request, the site
//!   is registered for the witness (site, origin, ledger key), the service
//!   CA issues the site's credentials, and everything the site needs goes
//!   into BUNDLE (0600: it holds the site's TLS keys). Restart `serve hub`
//!   to witness the new site.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use deploy::enrol::{self, EnrolRequest, DEFAULT_ORGANIZATION};
use serde::Serialize;

use super::ca::read_der;
use super::hsm_args::{self, HsmArgs};
use super::Outcome;

/// `trustline hub` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum HubCommand {
    /// Creates the OEM's keys on the hub's token and the hub's directory.
    Init(InitArgs),
    /// Enrols a factory site: signs its intermediate, registers its ledger,
    /// issues its credentials, writes its bundle.
    EnrollSite(EnrollArgs),
}

/// `trustline hub init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The hub's data directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The OEM's name, subject O of every certificate.
    #[arg(long, default_value = DEFAULT_ORGANIZATION)]
    pub(crate) organization: String,
    /// The witness's cosigner name (its signed-note key name).
    #[arg(long, default_value = deploy::hub::DEFAULT_WITNESS_NAME)]
    pub(crate) witness_name: String,
    /// The hub's HSM token.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline hub enroll-site` arguments.
#[derive(Debug, Args)]
pub(crate) struct EnrollArgs {
    /// The hub's data directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The site's name (as in its request).
    #[arg(long)]
    pub(crate) site: String,
    /// The site's intermediate request (`trustline site init` wrote it).
    #[arg(long, value_name = "FILE")]
    pub(crate) csr: PathBuf,
    /// The site ledger's checkpoint public key (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) ledger_key: PathBuf,
    /// The site ledger's checkpoint origin [default: the one `site init`
    /// chose by default for this site].
    #[arg(long)]
    pub(crate) origin: Option<String>,
    /// A station of the site to issue a credential for (repeat).
    #[arg(long = "station", value_name = "NAME")]
    pub(crate) stations: Vec<String>,
    /// Where to write the bundle (a new file).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// The hub's HSM token (the OEM root and the service CA).
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Serialize)]
struct InitSummary {
    token: String,
    keys: Vec<String>,
    files: Vec<String>,
    witness: String,
}

#[derive(Serialize)]
struct EnrollSummary {
    site: String,
    origin: String,
    bundle: String,
    credentials: Vec<String>,
}

/// Runs a `hub` subcommand.
///
/// # Errors
/// HSM, CA, PKI and I/O errors, with context.
pub(crate) fn run(command: HubCommand) -> anyhow::Result<Outcome> {
    match command {
        HubCommand::Init(args) => init(&args),
        HubCommand::EnrollSite(args) => enroll(&args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let report = deploy::hub::init(&hsm, &args.data_dir, &args.organization, &args.witness_name)?;
    let summary = InitSummary {
        token: hsm.token_label().to_owned(),
        keys: report.keys,
        files: report
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        witness: report.witness_verifier_key,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("hub initialised on token {:?}", summary.token);
        println!("keys created in the HSM (sensitive, not extractable):");
        for key in &summary.keys {
            println!("  {key}");
        }
        println!("witness: {}", summary.witness);
        println!("files written:");
        for file in &summary.files {
            println!("  {file}");
        }
    }
    Ok(Outcome::Success)
}

fn enroll(args: &EnrollArgs) -> anyhow::Result<Outcome> {
    let request = EnrolRequest {
        site: args.site.clone(),
        origin: args
            .origin
            .clone()
            .unwrap_or_else(|| enrol::default_origin(&args.site)),
        csr_der: read_der(&args.csr, "CERTIFICATE REQUEST")?,
        ledger_key_der: read_der(&args.ledger_key, "PUBLIC KEY")?,
        stations: args.stations.clone(),
    };
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let bundle = enrol::enroll_site(&hsm, &args.data_dir, &request, &args.out)?;
    let summary = EnrollSummary {
        site: bundle.site.clone(),
        origin: bundle.origin.clone(),
        bundle: args.out.display().to_string(),
        credentials: bundle.credentials.iter().map(|c| c.name.clone()).collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "site {} enrolled (ledger origin {}); bundle written to {} (it holds the site's \
             TLS keys: carry it as a secret, then `trustline site install`)",
            summary.site, summary.origin, summary.bundle
        );
        println!("credentials: {}", summary.credentials.join(", "));
        println!("restart `trustline serve hub` to witness the new site");
    }
    Ok(Outcome::Success)
}
