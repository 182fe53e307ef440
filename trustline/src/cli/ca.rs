//! `trustline ca …`: the certificate authority's administration.
//!
//! `ca init --data-dir DIR` creates the OEM root, site intermediate, OEM
//! order, OEM voucher and ledger checkpoint keys in the HSM (each once; a
//! second run refuses and names what exists) and writes the CA certificates
//! and public keys into the data directory layout of docs/operations.md.

use std::path::PathBuf;

use anyhow::Context;
use ca_service::ca::{self, InitOptions};
use ca_service::keys::KeyLabels;
use ca_service::Hsm;
use clap::{Args, Subcommand};
use serde::Serialize;

use backends::layout::{CA_DIR, LEDGER_KEY_FILE};

use super::hsm_args::HsmArgs;
use super::Outcome;

/// `trustline ca` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Creates the CA keys in the HSM and writes the CA certificates (PEM).
    Init(InitArgs),
}

/// `trustline ca init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The data directory (CA files go to <DIR>/ca).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The OEM's name, subject O of every certificate.
    #[arg(long, default_value = "Trustline OEM")]
    pub(crate) organization: String,
    /// The factory site, subject OU of the intermediate.
    #[arg(long, default_value = "site-1")]
    pub(crate) site: String,
    /// The HSM.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Serialize)]
struct InitSummary<'a> {
    token: &'a str,
    keys: &'a [String],
    files: Vec<String>,
}

/// Runs a `ca` subcommand.
///
/// # Errors
/// Any HSM, CA or I/O error, with context.
pub(crate) fn run(command: CaCommand) -> anyhow::Result<Outcome> {
    match command {
        CaCommand::Init(args) => init(&args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    let config = args.hsm.config(Some(&args.data_dir))?;
    let hsm = Hsm::open(&config).context("opening the HSM")?;
    let options = InitOptions {
        organization: args.organization.clone(),
        site: args.site.clone(),
        labels: KeyLabels::default(),
    };
    let mut report = ca::init(&hsm, &options, &args.data_dir.join(CA_DIR))?;
    let ledger_key = args.data_dir.join(LEDGER_KEY_FILE);
    if let Some(parent) = ledger_key.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Transitional (issue 12.6): the checkpoint key belongs on the ledger's
    // own token (`ca_service::ledger_key`); made here until that is wired.
    let checkpoint = hsm.generate_key(ca_service::keys::LEDGER_CHECKPOINT)?;
    report.keys.push(checkpoint.name().to_owned());
    ca::write_atomically(&ledger_key, checkpoint.public_key_pem().as_bytes())?;
    let mut files: Vec<String> = report
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    files.push(ledger_key.display().to_string());
    if args.json {
        let summary = InitSummary {
            token: hsm.token_label(),
            keys: &report.keys,
            files,
        };
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("CA initialised on token {:?}", hsm.token_label());
        println!("keys created in the HSM (sensitive, not extractable):");
        for key in &report.keys {
            println!("  {key}");
        }
        println!("files written:");
        for file in &files {
            println!("  {file}");
        }
    }
    Ok(Outcome::Success)
}
