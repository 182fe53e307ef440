//! `trustline pki revoke|renew|crl|install-crl`: revocation and renewal of
//! service certificates (issue 12.7).
//!
//! A revocation is a new CRL signed by the service CA key in the HSM and
//! written atomically to `<data>/pki/crl.pem`; every server checks callers
//! against that file's current version on every handshake and every
//! request, so the revoked certificate is refused (`UNAUTHENTICATED`) on
//! its next call — also on a connection opened before — without a restart.
//! At a site whose service CA is the hub's, the hub revokes and the site
//! installs the hub's CRL (`pki install-crl`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use ca_service::keys::SERVICE_CA;
use clap::{Args, ValueEnum};
use serde::Serialize;
use transport::pki::{self, register, CertificateKind, LeafParams, Validity, PKI_DIR};
use transport::revocation::{self, Reason, Revoke, CRL_FILE};
use transport::{Caller, ServerIdentity};

use super::super::hsm_args::{self, HsmArgs};
use super::super::Outcome;
use super::ca_path;

/// Why a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReasonArg {
    /// No reason given.
    Unspecified,
    /// The key was, or may have been, stolen.
    KeyCompromise,
    /// The holder moved elsewhere.
    AffiliationChanged,
    /// A renewed certificate replaces it.
    Superseded,
    /// The holder is retired.
    CessationOfOperation,
}

impl From<ReasonArg> for Reason {
    fn from(r: ReasonArg) -> Self {
        match r {
            ReasonArg::Unspecified => Reason::Unspecified,
            ReasonArg::KeyCompromise => Reason::KeyCompromise,
            ReasonArg::AffiliationChanged => Reason::AffiliationChanged,
            ReasonArg::Superseded => Reason::Superseded,
            ReasonArg::CessationOfOperation => Reason::CessationOfOperation,
        }
    }
}

/// `trustline pki revoke` arguments.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The data directory holding the service CA (and its register).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The credential name: its latest certificate is revoked.
    #[arg(
        value_name = "NAME",
        required_unless_present = "serial",
        conflicts_with = "serial"
    )]
    pub(crate) name: Option<String>,
    /// The serial number (hex) of the certificate to revoke.
    #[arg(long, value_name = "HEX")]
    pub(crate) serial: Option<String>,
    /// Why.
    #[arg(long, value_enum, default_value = "key-compromise")]
    pub(crate) reason: ReasonArg,
    /// The HSM holding the service CA key.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline pki renew` arguments.
#[derive(Debug, Args)]
pub(crate) struct RenewArgs {
    /// The data directory holding the service CA (and its register).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The credential name to renew.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// Where the credential's files are [default: <data-dir>/pki].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Validity in days [default: 30 for a client, 90 for a server].
    #[arg(long)]
    pub(crate) days: Option<u32>,
    /// Also revoke the certificate it replaces (reason superseded).
    #[arg(long)]
    pub(crate) revoke_old: bool,
    /// The HSM holding the service CA key.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline pki crl` arguments.
#[derive(Debug, Args)]
pub(crate) struct CrlArgs {
    /// The data directory (its <DIR>/pki/crl.pem).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// Re-sign the CRL with fresh dates (needs the service CA key).
    #[arg(long)]
    pub(crate) refresh: bool,
    /// The HSM holding the service CA key (with --refresh).
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline pki install-crl` arguments.
#[derive(Debug, Args)]
pub(crate) struct InstallCrlArgs {
    /// The data directory whose <DIR>/pki/crl.pem to replace.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The CRL (PEM) the service CA signed, e.g. the hub's pki/crl.pem.
    #[arg(long, value_name = "FILE")]
    pub(crate) crl: PathBuf,
}

#[derive(Serialize)]
struct CrlSummary {
    crl: String,
    number: u64,
    revoked: Vec<RevokedSummary>,
}

#[derive(Serialize)]
struct RevokedSummary {
    serial: String,
    revoked_at: String,
    reason: Option<Reason>,
}

fn summary(crl: &revocation::Crl, path: &std::path::Path) -> CrlSummary {
    CrlSummary {
        crl: path.display().to_string(),
        number: crl.number,
        revoked: crl
            .revoked
            .iter()
            .map(|r| RevokedSummary {
                serial: r.serial.clone(),
                revoked_at: r
                    .revoked_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                reason: r.reason,
            })
            .collect(),
    }
}

fn print_crl(summary: &CrlSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    println!(
        "CRL {} ({}): {} revoked",
        summary.number,
        summary.crl,
        summary.revoked.len()
    );
    for r in &summary.revoked {
        let reason = r
            .reason
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unspecified".to_owned());
        println!("  {} revoked {} ({reason})", r.serial, r.revoked_at);
    }
    Ok(())
}

/// The serial of the latest certificate issued as `name`: from the
/// register, else from `<pki>/<name>.pem`.
fn serial_of(pki_dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    if let Some(record) = register::latest(pki_dir, name)? {
        return Ok(record.serial);
    }
    let path = pki_dir.join(format!("{name}.pem"));
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "no certificate named {name:?} in {} nor {}",
            pki_dir.join(register::ISSUED_FILE).display(),
            path.display()
        )
    })?;
    let block = pem::parse(&text).with_context(|| format!("{} is not PEM", path.display()))?;
    Ok(register::serial_hex(block.contents())?)
}

pub(crate) fn revoke(args: &RevokeArgs) -> anyhow::Result<Outcome> {
    let pki_dir = args.data_dir.join(PKI_DIR);
    let serial = match (&args.name, &args.serial) {
        (_, Some(hex)) => hex.trim().to_ascii_lowercase(),
        (Some(name), None) => serial_of(&pki_dir, name)?,
        (None, None) => bail!("give a credential NAME or --serial HEX"),
    };
    let ca_cert =
        pki::read_ca_certificate(&ca_path(&args.data_dir)).context("the service CA certificate")?;
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let key = hsm.signer(SERVICE_CA).context("the service CA key")?;
    let crl = revocation::revoke(
        &pki_dir,
        &ca_cert,
        &key,
        &[Revoke {
            serial: revocation::hex_to_bytes(&serial)?,
            reason: args.reason.into(),
        }],
    )?;
    if !args.json {
        println!(
            "revoked serial {serial}{}; servers refuse it from their next call on",
            args.name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    print_crl(&summary(&crl, &pki_dir.join(CRL_FILE)), args.json)?;
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct RenewSummary {
    name: String,
    identity: String,
    old_serial: String,
    serial: String,
    not_after: String,
    certificate: String,
    key: String,
    old_revoked: bool,
}

pub(crate) fn renew(args: &RenewArgs) -> anyhow::Result<Outcome> {
    let pki_dir = args.data_dir.join(PKI_DIR);
    let out = args.out.clone().unwrap_or_else(|| pki_dir.clone());
    let Some(old) = register::latest(&pki_dir, &args.name)? else {
        bail!(
            "{:?} is not in the register {}: issue it with `trustline pki issue`",
            args.name,
            pki_dir.join(register::ISSUED_FILE).display()
        );
    };
    let old_file = out.join(format!("{}.pem", args.name));
    let old_der = std::fs::read(&old_file)
        .ok()
        .and_then(|t| pem::parse(t).ok())
        .map(pem::Pem::into_contents);
    let params = if old.kind == "server" {
        let server = ServerIdentity::from_uri(&old.identity)?;
        let (dns, ips) = old_der.as_deref().map(extra_names).unwrap_or_default();
        let days = args.days.unwrap_or(pki::DEFAULT_SERVER_DAYS);
        LeafParams::server(&server, dns, ips, Validity::days_from_now(days))?
    } else {
        LeafParams {
            caller: Caller::from_uri(&old.identity)?,
            kind: CertificateKind::Client,
            validity: Validity::days_from_now(args.days.unwrap_or(pki::DEFAULT_CLIENT_DAYS)),
        }
    };
    let ca_cert =
        pki::read_ca_certificate(&ca_path(&args.data_dir)).context("the service CA certificate")?;
    let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
    let key = hsm.signer(SERVICE_CA).context("the service CA key")?;
    let issued = pki::issue_with_new_key(&ca_cert, &key, &params)?;
    let paths = pki::replace_credentials(&out, &args.name, &issued, &ca_cert)?;
    let der = pem::parse(&issued.certificate_pem).context("the issued certificate")?;
    let record = register::record(&pki_dir, &args.name, der.contents())?;
    if args.revoke_old {
        revocation::revoke(
            &pki_dir,
            &ca_cert,
            &key,
            &[Revoke {
                serial: revocation::hex_to_bytes(&old.serial)?,
                reason: Reason::Superseded,
            }],
        )?;
    }
    let summary = RenewSummary {
        name: args.name.clone(),
        identity: record.identity.clone(),
        old_serial: old.serial,
        serial: record.serial,
        not_after: record.not_after,
        certificate: paths.certificate.display().to_string(),
        key: paths.key.display().to_string(),
        old_revoked: args.revoke_old,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "renewed {} ({}): serial {} replaces {}{}, valid until {}",
            summary.name,
            summary.identity,
            summary.serial,
            summary.old_serial,
            if summary.old_revoked {
                " (revoked)"
            } else {
                " (still valid: `trustline pki revoke --serial` it once the new one is in use)"
            },
            summary.not_after
        );
        println!("  certificate: {}", summary.certificate);
        println!("  key (0600):  {}", summary.key);
    }
    Ok(Outcome::Success)
}

/// The DNS names and IP addresses of a server certificate beyond the
/// loopback ones every server certificate has.
fn extra_names(der: &[u8]) -> (Vec<String>, Vec<std::net::IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (dns, ips);
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) if *d != "localhost" => dns.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip.filter(|ip| !ip.is_loopback()) {
                        ips.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    (dns, ips)
}

pub(crate) fn crl(args: &CrlArgs) -> anyhow::Result<Outcome> {
    let pki_dir = args.data_dir.join(PKI_DIR);
    let path = pki_dir.join(CRL_FILE);
    let ca_cert =
        pki::read_ca_certificate(&ca_path(&args.data_dir)).context("the service CA certificate")?;
    let crl = if args.refresh {
        let hsm = hsm_args::open(&args.hsm.config(Some(&args.data_dir))?)?;
        let key = hsm.signer(SERVICE_CA).context("the service CA key")?;
        revocation::revoke(&pki_dir, &ca_cert, &key, &[])?
    } else {
        revocation::read_crl(&path, &ca_cert)?
    };
    print_crl(&summary(&crl, &path), args.json)?;
    Ok(Outcome::Success)
}

pub(crate) fn install_crl(args: &InstallCrlArgs) -> anyhow::Result<Outcome> {
    let ca_cert =
        pki::read_ca_certificate(&ca_path(&args.data_dir)).context("the service CA certificate")?;
    let der = super::super::ca::read_der(&args.crl, "X509 CRL")?;
    let pki_dir = args.data_dir.join(PKI_DIR);
    let crl = revocation::install_crl(&pki_dir, &ca_cert, &der)?;
    println!(
        "installed CRL {} ({} revoked) as {}",
        crl.number,
        crl.revoked.len(),
        pki_dir.join(CRL_FILE).display()
    );
    Ok(Outcome::Success)
}
