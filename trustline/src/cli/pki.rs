//! `trustline pki …`: the service PKI behind mutual TLS (2.4.13.25).
//!
//! - `pki init --data-dir DIR` creates the service CA key in the HSM (label
//!   `trustline-service-ca`, sensitive, not extractable) and writes its
//!   self-signed certificate to `<DIR>/pki/service-ca.pem`;
//!   and an empty CRL (`<DIR>/pki/crl.pem`);
//! - `pki issue --role R --site S --name N` issues a client certificate
//!   carrying `urn:trustline:caller:R:S:N` (30 days by default), or with
//!   `--server` a server certificate (`urn:trustline:server:S:N`, serverAuth
//!   only, no role: it can never be used as a client; 90 days), with a fresh
//!   P-256 key written 0600 beside it, and records it in `pki/issued.jsonl`;
//! - `pki revoke NAME|--serial HEX [--reason R]` adds the certificate to the
//!   CRL the service CA signs (`pki/crl.pem`); every server picks the new CRL
//!   up on its next handshake or request, without a restart (issue 12.7);
//! - `pki renew NAME` issues a new certificate and key for the same
//!   identity, keeps the old certificate in `pki/retired/` and, with
//!   `--revoke-old`, revokes it;
//! - `pki crl` shows the CRL (`--refresh` re-signs it with fresh dates);
//!   `pki install-crl --crl FILE` installs a CRL received from the hub;
//! - `pki roles` prints the role × RPC table (`--json` for scripts).
//!
//! The issuance and revocation logic lives in `transport::pki` and
//! `transport::revocation`; this module only opens the HSM (with the shared
//! HSM options) and handles files and output.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ca_service::keys::SERVICE_CA;
use clap::{Args, Subcommand};
use serde::Serialize;
use transport::pki::{self, CertificateKind, LeafParams, Validity, PKI_DIR};
use transport::tls::SERVICE_CA_FILE;
use transport::{authz, Caller, Role, ServerIdentity};

use super::hsm_args::{self, HsmArgs};
use super::Outcome;

mod revoke;

pub(crate) use revoke::{CrlArgs, InstallCrlArgs, RenewArgs, RevokeArgs};

/// `trustline pki` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Creates the service CA (key in the HSM) and writes its certificate.
    Init(InitArgs),
    /// Issues a client or server certificate and its private key.
    Issue(IssueArgs),
    /// Revokes a certificate: adds it to the service CA's CRL.
    Revoke(RevokeArgs),
    /// Issues a new certificate and key for the same identity.
    Renew(RenewArgs),
    /// Shows the CRL (or re-signs it with --refresh).
    Crl(CrlArgs),
    /// Installs a CRL signed by the service CA elsewhere (the hub).
    InstallCrl(InstallCrlArgs),
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
    #[arg(long, default_value_t = pki::DEFAULT_SERVICE_CA_DAYS)]
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
    /// The caller's role: station, provisioner, auditor, operator, admin or
    /// site (not for --server: a server certificate names no role).
    #[arg(long, value_parser = parse_role, required_unless_present = "server")]
    pub(crate) role: Option<Role>,
    /// The caller's (or server's) site (stations act for this site only);
    /// `hq` for roles not tied to a site.
    #[arg(long)]
    pub(crate) site: String,
    /// The caller's (or server's) name within its site.
    #[arg(long)]
    pub(crate) name: String,
    /// Where to write `<stem>.pem`, `<stem>.key` and `service-ca.pem`
    /// [default: <data-dir>/pki].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// File name stem [default: the --name].
    #[arg(long, value_name = "STEM")]
    pub(crate) file_stem: Option<String>,
    /// Issue a server certificate: serverAuth only, SAN
    /// urn:trustline:server:<site>:<name>, localhost, 127.0.0.1, ::1 and any
    /// --dns/--ip. It cannot be used as a client.
    #[arg(long, conflicts_with = "role")]
    pub(crate) server: bool,
    /// An extra DNS name for a server certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME", requires = "server")]
    pub(crate) dns_names: Vec<String>,
    /// An extra IP address for a server certificate (repeatable).
    #[arg(long = "ip", value_name = "ADDR", requires = "server")]
    pub(crate) ip_addresses: Vec<IpAddr>,
    /// Validity in days, from now [default: 30 for a client, 90 for a
    /// server].
    #[arg(long)]
    pub(crate) days: Option<u32>,
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
        PkiCommand::Revoke(args) => revoke::revoke(&args),
        PkiCommand::Renew(args) => revoke::renew(&args),
        PkiCommand::Crl(args) => revoke::crl(&args),
        PkiCommand::InstallCrl(args) => revoke::install_crl(&args),
        PkiCommand::Roles(args) => roles(&args),
    }
}

pub(crate) fn ca_path(data_dir: &Path) -> PathBuf {
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
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
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
    if !key_exists {
        // A fresh service CA starts a fresh CRL.
        let _ = std::fs::remove_file(
            args.data_dir
                .join(PKI_DIR)
                .join(transport::revocation::CRL_FILE),
        );
    }
    transport::revocation::write_empty_crl(&args.data_dir.join(PKI_DIR), &cert, &signer)?;
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
    serial: String,
    server: bool,
    not_after: String,
    certificate: String,
    key: String,
    ca: String,
}

fn issue(args: &IssueArgs) -> anyhow::Result<Outcome> {
    let ca_cert = pki::read_ca_certificate(&ca_path(&args.data_dir))
        .context("the service CA certificate (run `trustline pki init` first)")?;
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let signer = hsm
        .signer(SERVICE_CA)
        .context("the service CA key (run `trustline pki init` first)")?;
    let (params, identity) = if args.server {
        let server = ServerIdentity::new(&args.site, &args.name)?;
        let days = args.days.unwrap_or(pki::DEFAULT_SERVER_DAYS);
        let params = LeafParams::server(
            &server,
            args.dns_names.clone(),
            args.ip_addresses.clone(),
            Validity::days_from_now(days),
        )?;
        (params, (server.to_string(), server.to_uri()))
    } else {
        let role = args
            .role
            .context("--role is required for a client certificate")?;
        let caller = Caller::new(role, &args.site, &args.name)?;
        let days = args.days.unwrap_or(pki::DEFAULT_CLIENT_DAYS);
        let params = LeafParams {
            caller: caller.clone(),
            kind: CertificateKind::Client,
            validity: Validity::days_from_now(days),
        };
        (params, (caller.id(), caller.to_uri()))
    };
    let validity = params.validity;
    let issued = pki::issue_with_new_key(&ca_cert, &signer, &params)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.data_dir.join(PKI_DIR));
    let stem = args.file_stem.as_deref().unwrap_or(&args.name);
    let paths = pki::write_credentials(&out, stem, &issued, &ca_cert)?;
    let der = pem::parse(&issued.certificate_pem).context("the issued certificate")?;
    let record = pki::register::record(&args.data_dir.join(PKI_DIR), stem, der.contents())?;
    let summary = IssueSummary {
        caller: identity.0,
        uri: identity.1,
        serial: record.serial,
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
        println!("  serial:      {}", summary.serial);
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
