//! `trustline pki …`: the service PKI behind mutual TLS (2.4.13.25).
//!
//! - `pki init --data-dir DIR` creates the service CA key in the HSM (label
//!   `trustline-service-ca`, sensitive, not extractable) and writes its
//!   self-signed certificate to `<DIR>/pki/service-ca.pem`;
//! - `pki issue --role R --site S --name N` issues a client certificate (or,
//!   with `--server`, a server certificate that can also act as a client)
//!   carrying `urn:trustline:caller:R:S:N`, with a fresh P-256 key written
//!   0600 beside it;
//! - `pki roles` prints the role × RPC table (`--json` for scripts).
//!
//! The issuance logic lives in `transport::pki`; this module only opens the
//! HSM (with the shared HSM options) and handles files and output.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ca_service::keys::SERVICE_CA;
use ca_service::Hsm;
use clap::{Args, Subcommand};
use serde::Serialize;
use transport::pki::{self, CertificateKind, LeafParams, Validity, PKI_DIR};
use transport::tls::SERVICE_CA_FILE;
use transport::{authz, Caller, Role};

use super::hsm_args::HsmArgs;
use super::Outcome;

/// `trustline pki` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Creates the service CA (key in the HSM) and writes its certificate.
    Init(InitArgs),
    /// Issues a client or server certificate and its private key.
    Issue(IssueArgs),
    /// Prints which role may call which RPC.
    Roles(RolesArgs),
}

/// `trustline pki init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The data directory (the certificate goes to <DIR>/pki).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The CA certificate's subject common name.
    #[arg(long, default_value = "Trustline service CA")]
    pub(crate) common_name: String,
    /// Validity of the CA certificate, in days.
    #[arg(long, default_value_t = 3650)]
    pub(crate) days: u32,
    /// The HSM.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline pki issue` arguments.
#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The data directory holding the service CA (<DIR>/pki/service-ca.pem).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The caller's role: station, provisioner, auditor, operator or admin.
    #[arg(long, value_parser = parse_role)]
    pub(crate) role: Role,
    /// The caller's site (stations act for this site only); `hq` for roles
    /// not tied to a site.
    #[arg(long)]
    pub(crate) site: String,
    /// The caller's name within its site.
    #[arg(long)]
    pub(crate) name: String,
    /// Where to write `<stem>.pem`, `<stem>.key` and `service-ca.pem`
    /// [default: <data-dir>/pki].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// File name stem [default: the --name].
    #[arg(long, value_name = "STEM")]
    pub(crate) file_stem: Option<String>,
    /// Issue a server certificate (serverAuth and clientAuth; SAN localhost,
    /// 127.0.0.1, ::1 and any --dns/--ip).
    #[arg(long)]
    pub(crate) server: bool,
    /// An extra DNS name for a server certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME", requires = "server")]
    pub(crate) dns_names: Vec<String>,
    /// An extra IP address for a server certificate (repeatable).
    #[arg(long = "ip", value_name = "ADDR", requires = "server")]
    pub(crate) ip_addresses: Vec<IpAddr>,
    /// Validity in days, from now.
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u32,
    /// The HSM holding the service CA key.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline pki roles` arguments.
#[derive(Debug, Args)]
pub(crate) struct RolesArgs {
    /// Print the table as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_role(s: &str) -> Result<Role, transport::Error> {
    s.parse()
}

/// Runs a `pki` subcommand.
///
/// # Errors
/// Any HSM, PKI or I/O error, with context.
pub(crate) fn run(command: PkiCommand) -> anyhow::Result<Outcome> {
    match command {
        PkiCommand::Init(args) => init(&args),
        PkiCommand::Issue(args) => issue(&args),
        PkiCommand::Roles(args) => roles(&args),
    }
}

fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PKI_DIR).join(SERVICE_CA_FILE)
}

#[derive(Serialize)]
struct InitSummary {
    token: String,
    key: &'static str,
    key_created: bool,
    certificate: String,
}

fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    let cert_path = ca_path(&args.data_dir);
    let config = args.hsm.config(Some(&args.data_dir))?;
    let hsm = Hsm::open(&config).context("opening the HSM")?;
    let key_exists = hsm
        .key_exists(SERVICE_CA)
        .context("looking for the service CA key")?;
    if key_exists && cert_path.exists() {
        bail!(
            "the service CA exists already: key {SERVICE_CA:?} on token {:?} and {}",
            hsm.token_label(),
            cert_path.display()
        );
    }
    // A key without its certificate (an earlier run stopped half-way) gets
    // its certificate now rather than a second key.
    let signer = if key_exists {
        hsm.signer(SERVICE_CA)
    } else {
        hsm.generate_key(SERVICE_CA)
    }
    .context("the service CA key")?;
    let cert = pki::service_ca_certificate(
        &signer,
        &args.common_name,
        Validity::days_from_now(args.days),
    )?;
    let written = pki::write_ca_certificate(&args.data_dir.join(PKI_DIR), &cert)?;
    let summary = InitSummary {
        token: hsm.token_label().to_owned(),
        key: SERVICE_CA,
        key_created: !key_exists,
        certificate: written.display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "service CA key {:?} on token {:?} ({})",
            summary.key,
            summary.token,
            if summary.key_created {
                "created"
            } else {
                "existing"
            }
        );
        println!("certificate written: {}", summary.certificate);
    }
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct IssueSummary {
    caller: String,
    uri: String,
    server: bool,
    not_after: String,
    certificate: String,
    key: String,
    ca: String,
}

fn issue(args: &IssueArgs) -> anyhow::Result<Outcome> {
    let caller = Caller::new(args.role, &args.site, &args.name)?;
    let ca_cert = pki::read_ca_certificate(&ca_path(&args.data_dir))
        .context("the service CA certificate (run `trustline pki init` first)")?;
    let config = args.hsm.config(Some(&args.data_dir))?;
    let hsm = Hsm::open(&config).context("opening the HSM")?;
    let signer = hsm
        .signer(SERVICE_CA)
        .context("the service CA key (run `trustline pki init` first)")?;
    let kind = if args.server {
        CertificateKind::Server {
            dns_names: args.dns_names.clone(),
            ip_addresses: args.ip_addresses.clone(),
        }
    } else {
        CertificateKind::Client
    };
    let validity = Validity::days_from_now(args.days);
    let params = LeafParams {
        caller: caller.clone(),
        kind,
        validity,
    };
    let issued = pki::issue_with_new_key(&ca_cert, &signer, &params)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.data_dir.join(PKI_DIR));
    let stem = args.file_stem.as_deref().unwrap_or(&args.name);
    let paths = pki::write_credentials(&out, stem, &issued, &ca_cert)?;
    let summary = IssueSummary {
        caller: caller.id(),
        uri: caller.to_uri(),
        server: args.server,
        not_after: validity
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        certificate: paths.certificate.display().to_string(),
        key: paths.key.display().to_string(),
        ca: paths.ca.display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "issued a {} certificate for {} ({}), valid until {}",
            if summary.server { "server" } else { "client" },
            summary.caller,
            summary.uri,
            summary.not_after
        );
        println!("  certificate: {}", summary.certificate);
        println!("  key (0600):  {}", summary.key);
        println!("  service CA:  {}", summary.ca);
    }
    Ok(Outcome::Success)
}

fn roles(args: &RolesArgs) -> anyhow::Result<Outcome> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&authz::table_json())?);
    } else {
        print!("{}", authz::render_table());
    }
    Ok(Outcome::Success)
}
