//! `trustline ca …`: the certificate authority's administration.
//!
//! - `ca init --data-dir DIR` (the single-box layout) creates the OEM root,
//!   site intermediate, OEM order and OEM voucher keys on the CA token and
//!   the ledger checkpoint key on the ledger's own token (issue 12.6; each
//!   once: a second run refuses and names what exists), and writes the CA
//!   certificates and public keys into the data directory layout of
//!   docs/operations.md.
//! - `ca rotate-intermediate --data-dir DIR` makes a new site intermediate:
//!   signed at once when the root is on the same token; with `--request
//!   --out FILE` only the key and a PKCS#10 request (the root is at the hub
//!   or offline); `--install FILE` installs the certificate the root signed.
//! - `ca sign-intermediate --data-dir H --csr FILE --out FILE`: where the
//!   root is (the hub, or the offline machine), signs a site's request.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ca_service::ca::{self, InitOptions};
use ca_service::keys::{KeyLabels, LEDGER_CHECKPOINT};
use clap::{Args, Subcommand};
use serde::Serialize;

use backends::layout::{CA_DIR, LEDGER_KEY_FILE};

use super::hsm_args::{self, HsmArgs, LedgerHsmArgs};
use super::Outcome;

/// `trustline ca` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Creates the CA keys in the HSM and writes the CA certificates (PEM).
    Init(InitArgs),
    /// Rotates the site intermediate (docs/operations.md, "Rotating the
    /// site intermediate").
    RotateIntermediate(RotateArgs),
    /// Signs a site intermediate request with the OEM root (at the hub).
    SignIntermediate(SignArgs),
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
    /// The CA's HSM token.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// The ledger's own token (the checkpoint key).
    #[command(flatten)]
    pub(crate) ledger_hsm: LedgerHsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline ca rotate-intermediate` arguments.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The site's data directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// Only make the new key and a request for the root's signature.
    #[arg(long, requires = "out", conflicts_with = "install")]
    pub(crate) request: bool,
    /// With --request: where to write the request (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Install the intermediate certificate the root signed (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) install: Option<PathBuf>,
    /// The site's CA token.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline ca sign-intermediate` arguments.
#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The data directory holding the root certificate (<DIR>/ca/oem-root.pem).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The site's request (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub(crate) csr: PathBuf,
    /// Where to write the signed intermediate certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// The token holding the OEM root key.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
}

#[derive(Serialize)]
struct InitSummary<'a> {
    token: &'a str,
    keys: &'a [String],
    ledger_token: &'a str,
    ledger_key: &'static str,
    files: Vec<String>,
}

/// Runs a `ca` subcommand.
///
/// # Errors
/// Any HSM, CA or I/O error, with context.
pub(crate) fn run(command: CaCommand) -> anyhow::Result<Outcome> {
    match command {
        CaCommand::Init(args) => init(&args),
        CaCommand::RotateIntermediate(args) => rotate(&args),
        CaCommand::SignIntermediate(args) => sign(&args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    let dir = Some(args.data_dir.as_path());
    let hsm = hsm_args::open(&args.hsm.config(dir)?)?;
    let ledger = hsm_args::open(&args.ledger_hsm.config(&args.hsm, dir)?)?;
    let options = InitOptions {
        organization: args.organization.clone(),
        site: args.site.clone(),
        labels: KeyLabels::default(),
    };
    let ledger_key = args.data_dir.join(LEDGER_KEY_FILE);
    if ledger_key.exists() {
        bail!(
            "{} exists: the ledger's checkpoint key is made already",
            ledger_key.display()
        );
    }
    let report = ca::init(&hsm, &options, &args.data_dir.join(CA_DIR))?;
    ca_service::ledger_key::init(&ledger, LEDGER_CHECKPOINT, &ledger_key)
        .context("the ledger checkpoint key on the ledger token")?;
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
            ledger_token: ledger.token_label(),
            ledger_key: LEDGER_CHECKPOINT,
            files,
        };
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("CA initialised on token {:?}", hsm.token_label());
        println!("keys created in the HSM (sensitive, not extractable):");
        for key in &report.keys {
            println!("  {key}");
        }
        println!(
            "  {LEDGER_CHECKPOINT} (on the ledger token {:?})",
            ledger.token_label()
        );
        println!("files written:");
        for file in &files {
            println!("  {file}");
        }
    }
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct RotateSummary {
    action: &'static str,
    generation: u32,
    label: String,
    files: Vec<String>,
}

fn rotate(args: &RotateArgs) -> anyhow::Result<Outcome> {
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let ca_dir = args.data_dir.join(CA_DIR);
    let labels = KeyLabels::default();
    let summary = if args.request {
        let out = args.out.as_ref().context("--request needs --out")?;
        let request = ca::request_intermediate(&hsm, &ca_dir, &labels)?;
        write_new(out, request.csr_pem().as_bytes())?;
        RotateSummary {
            action: "requested",
            generation: request.generation,
            label: request.label,
            files: vec![
                request.file.display().to_string(),
                out.display().to_string(),
            ],
        }
    } else {
        let rotation = match &args.install {
            Some(file) => {
                let der = read_der(file, "CERTIFICATE")?;
                ca::install_intermediate(&hsm, &ca_dir, &labels, &der)?
            }
            None => ca::rotate_intermediate(&hsm, &ca_dir, &labels).context(
                "rotating with the root on this token (if the root is elsewhere: --request --out FILE, then --install FILE)",
            )?,
        };
        RotateSummary {
            action: if args.install.is_some() {
                "installed"
            } else {
                "rotated"
            },
            generation: rotation.generation,
            label: rotation.label,
            files: rotation
                .files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "site intermediate generation {} {} (key {:?})",
            summary.generation, summary.action, summary.label
        );
        for file in &summary.files {
            println!("  {file}");
        }
        if summary.action != "requested" {
            println!("restart the provisioner (or `serve site|all`) to sign with it");
        } else {
            println!("have the root sign it: `trustline ca sign-intermediate --csr … --out …` at the hub, then `--install`");
        }
    }
    Ok(Outcome::Success)
}

fn sign(args: &SignArgs) -> anyhow::Result<Outcome> {
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let root_der = read_der(
        &args.data_dir.join(CA_DIR).join(ca::ROOT_CERT_FILE),
        "CERTIFICATE",
    )?;
    let csr = read_der(&args.csr, "CERTIFICATE REQUEST")?;
    let root = hsm
        .signer(&KeyLabels::default().root)
        .context("the OEM root key")?;
    let der = ca::sign_intermediate_request(&root, &root_der, &csr)?;
    write_new(
        &args.out,
        pem::encode(&pem::Pem::new("CERTIFICATE", der)).as_bytes(),
    )?;
    println!(
        "site intermediate signed by the OEM root: {}",
        args.out.display()
    );
    Ok(Outcome::Success)
}

/// Reads one PEM block tagged `tag` (or raw DER).
pub(crate) fn read_der(path: &std::path::Path, tag: &str) -> anyhow::Result<Vec<u8>> {
    site::config::read_der(path, tag).with_context(|| format!("reading {}", path.display()))
}

/// Writes a new file (never overwrites).
pub(crate) fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}
