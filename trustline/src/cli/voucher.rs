//! `trustline voucher …`: an owner's tools for the ownership voucher
//! (2.4.14.7), offline — no service is contacted (owner keys are
//! `trustline owner keygen`, [`super::owner`]).
//!
//! - `voucher extend --voucher V --key owner.pem --to next.pub.pem --out V2`:
//!   the current owner signs the next owner's key into a new last entry;
//!   the voucher is verified first (against `--manufacturer-key` when
//!   given) and a key that is not the current owner's is refused before
//!   anything is signed. The new owner then registers the transfer with the
//!   ownership service (`RegisterTransfer`).
//! - `voucher verify --voucher V --manufacturer-key voucher-key.pub.pem
//!   [--chain device-chain.pem]`: walks the chain of owners from the OEM
//!   voucher key; with the device chain, also checks — failing closed
//!   (issue 12.12) — that the header describes it (chain hash), that the
//!   header's rot_id is the one the device certificate names (SAN URI
//!   `urn:trustline:rot:<id>`) and its serial the certificate's subject
//!   serialNumber, and that the device bound the header under the certified
//!   device key; a voucher without a device binding fails unless
//!   `--allow-unbound` says it may. Exit 1 when a check fails.
//! - `voucher show --voucher V [--json]`: what the voucher says, unverified.
//! - `voucher export --format fdo`, `voucher import`, and `extend`/`verify`
//!   on an FDO 1.1 voucher (PEM `OWNERSHIP VOUCHER`): [`fdo`] (issue 17).
//!
//! Keys are shown by fingerprint (SHA-256 of the SubjectPublicKeyInfo),
//! never printed whole.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use trustline_proto::signer::Signer;
use trustline_proto::voucher::cert_chain_hash;

use super::Outcome;

mod fdo;
mod files;

pub(crate) use files::{
    fingerprint, read_chain, read_private_key, read_public_key, read_voucher, write_new,
};

/// `trustline voucher` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum VoucherCommand {
    /// Transfers the device: signs the next owner's key into a new entry.
    Extend(ExtendArgs),
    /// Verifies the chain of owners from the OEM voucher key.
    Verify(VerifyArgs),
    /// Shows what a voucher says (unverified).
    Show(ShowArgs),
    /// Writes the voucher in another format (FDO 1.1).
    Export(fdo::ExportArgs),
    /// Verifies an FDO 1.1 voucher and rebuilds the Trustline voucher it
    /// carries.
    Import(fdo::ImportArgs),
}

/// `trustline voucher extend` arguments.
#[derive(Debug, Args)]
pub(crate) struct ExtendArgs {
    /// The voucher (CBOR).
    #[arg(long, value_name = "FILE")]
    pub(crate) voucher: PathBuf,
    /// The current owner's private key (PKCS#8 PEM).
    #[arg(long, value_name = "PEM")]
    pub(crate) key: PathBuf,
    /// The next owner's public key (PEM or DER SubjectPublicKeyInfo).
    #[arg(long, value_name = "PEM")]
    pub(crate) to: PathBuf,
    /// Where to write the extended voucher.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// The OEM voucher public key to verify the voucher against first
    /// [default: the key the header names, which checks only consistency].
    #[arg(long, value_name = "PEM")]
    pub(crate) manufacturer_key: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline voucher verify` arguments.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The voucher (CBOR).
    #[arg(long, value_name = "FILE")]
    pub(crate) voucher: PathBuf,
    /// The OEM voucher public key (PEM or DER).
    #[arg(long, value_name = "PEM")]
    pub(crate) manufacturer_key: PathBuf,
    /// The device's certificate chain (PEM: device, intermediate, root).
    #[arg(long, value_name = "PEM")]
    pub(crate) chain: Option<PathBuf>,
    /// With --chain: accept a voucher whose header the device has not bound
    /// (the chain hash, rot_id and serial are still checked).
    #[arg(long, requires = "chain")]
    pub(crate) allow_unbound: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline voucher show` arguments.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The voucher (CBOR).
    #[arg(long, value_name = "FILE")]
    pub(crate) voucher: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs a `voucher` subcommand.
///
/// # Errors
/// Unreadable files, malformed vouchers or keys, a key that is not the
/// current owner's.
pub(crate) fn run(command: VoucherCommand) -> anyhow::Result<Outcome> {
    match command {
        VoucherCommand::Extend(args) => extend(&args),
        VoucherCommand::Verify(args) => verify(&args),
        VoucherCommand::Show(args) => show(&args),
        VoucherCommand::Export(args) => fdo::export(&args),
        VoucherCommand::Import(args) => fdo::import(&args),
    }
}

#[derive(Serialize)]
struct Extended {
    out: String,
    rot_id: String,
    entry_index: usize,
    next_owner: String,
    voucher_sha256: String,
}

fn extend(args: &ExtendArgs) -> anyhow::Result<Outcome> {
    if fdo::is_fdo(&args.voucher)? {
        return fdo::extend(args);
    }
    let (_, mut voucher) = read_voucher(&args.voucher)?;
    let owner = read_private_key(&args.key)?;
    let next = read_public_key(&args.to)?;
    let manufacturer = match &args.manufacturer_key {
        Some(path) => read_public_key(path)?,
        None => voucher.header().manufacturer_public_key.clone(),
    };
    voucher
        .verify(&manufacturer)
        .context("the voucher does not verify; refusing to extend it")?;
    if owner.public_key_der() != voucher.current_owner() {
        bail!(
            "{} is not the voucher's current owner key (current owner {}); nothing was signed",
            args.key.display(),
            fingerprint(voucher.current_owner())
        );
    }
    voucher
        .extend(&owner, &next)
        .context("extending the voucher")?;
    let bytes = voucher.encode();
    write_new(&args.out, &bytes, None)?;
    let report = Extended {
        out: args.out.display().to_string(),
        rot_id: voucher.header().rot_id.clone(),
        entry_index: voucher.len() - 1,
        next_owner: fingerprint(&next),
        voucher_sha256: hex::encode(voucher.sha256()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "voucher of {} extended: entry {} names owner {}\nwrote {}\nregister the transfer with the ownership service (RegisterTransfer)",
            report.rot_id, report.entry_index, report.next_owner, report.out
        );
    }
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct Verification {
    rot_id: String,
    serial: String,
    chain_of_owners: String,
    transfers: usize,
    current_owner: Option<String>,
    device_chain: Option<String>,
    device_identity: Option<String>,
    device_binding: String,
    ok: bool,
}

fn verify(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    if fdo::is_fdo(&args.voucher)? {
        return fdo::verify(args);
    }
    let (_, voucher) = read_voucher(&args.voucher)?;
    let manufacturer = read_public_key(&args.manufacturer_key)?;
    let mut ok = true;
    let (chain_of_owners, transfers, current_owner) = match voucher.verify(&manufacturer) {
        Ok(v) => (
            "verified from the manufacturer key".to_owned(),
            v.entries.len(),
            (!v.entries.is_empty()).then(|| fingerprint(&v.current_owner)),
        ),
        Err(e) => {
            ok = false;
            (format!("FAILED: {e}"), 0, None)
        }
    };
    let (device_chain, device_identity, device_binding) = match &args.chain {
        None => (
            None,
            None,
            if voucher.device_binding().is_some() {
                "present (give --chain to check it)".to_owned()
            } else {
                "absent".to_owned()
            },
        ),
        Some(path) => {
            let chain = read_chain(path)?;
            let matches = cert_chain_hash(&chain) == voucher.header().cert_chain_sha256;
            ok &= matches;
            let chain_text = if matches {
                "the header describes this chain".to_owned()
            } else {
                "FAILED: the header describes another certificate chain".to_owned()
            };
            let identity = match device_identity(&chain[0], voucher.header()) {
                Ok(text) => text,
                Err(reason) => {
                    ok = false;
                    format!("FAILED: {reason}")
                }
            };
            let binding = match (voucher.device_binding(), device_key(&chain[0])) {
                (None, _) if args.allow_unbound => {
                    "absent: the device has not bound this header (accepted: --allow-unbound)"
                        .to_owned()
                }
                (None, _) => {
                    ok = false;
                    "FAILED: absent: the device has not bound this header \
                     (--allow-unbound accepts that)"
                        .to_owned()
                }
                (Some(_), None) => {
                    ok = false;
                    "FAILED: the device certificate does not parse".to_owned()
                }
                (Some(_), Some(spki)) => match voucher.verify_device_binding(&chain, &spki) {
                    Ok(()) => "verified under the device key".to_owned(),
                    Err(e) => {
                        ok = false;
                        format!("FAILED: {e}")
                    }
                },
            };
            (Some(chain_text), Some(identity), binding)
        }
    };
    let report = Verification {
        rot_id: voucher.header().rot_id.clone(),
        serial: voucher.header().serial.clone(),
        chain_of_owners,
        transfers,
        current_owner,
        device_chain,
        device_identity,
        device_binding,
        ok,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("voucher of {} (serial {})", report.rot_id, report.serial);
        println!("  chain of owners: {}", report.chain_of_owners);
        println!("  transfers: {}", report.transfers);
        if let Some(owner) = &report.current_owner {
            println!("  current owner: {owner}");
        }
        if let Some(chain) = &report.device_chain {
            println!("  device chain: {chain}");
        }
        if let Some(identity) = &report.device_identity {
            println!("  device identity: {identity}");
        }
        println!("  device binding: {}", report.device_binding);
        println!("{}", if ok { "OK" } else { "FAILED" });
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}

/// id-at-serialNumber (2.5.4.5).
const OID_SERIAL_NUMBER: &str = "2.5.4.5";

/// Checks that the device certificate names the header's rot_id (its one
/// `urn:trustline:rot:` SAN URI) and serial (its subject serialNumber).
fn device_identity(
    certificate: &[u8],
    header: &trustline_proto::voucher::VoucherHeader,
) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|e| format!("the device certificate does not parse: {e}"))?;
    let rots: Vec<&str> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => u.strip_prefix(trustline_proto::ROT_URI_PREFIX),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [rot_id] = rots.as_slice() else {
        return Err(format!(
            "the device certificate names {} rot_id URIs, expected one",
            rots.len()
        ));
    };
    if *rot_id != header.rot_id {
        return Err(format!(
            "the header names rot_id {}, the certificate {rot_id}",
            header.rot_id
        ));
    }
    let serials: Vec<&str> = cert
        .subject()
        .iter_attributes()
        .filter(|a| a.attr_type().to_id_string() == OID_SERIAL_NUMBER)
        .filter_map(|a| a.as_str().ok())
        .collect();
    let [serial] = serials.as_slice() else {
        return Err(format!(
            "the device certificate has {} subject serialNumber attributes, expected one",
            serials.len()
        ));
    };
    if *serial != header.serial {
        return Err(format!(
            "the header names serial {}, the certificate {serial}",
            header.serial
        ));
    }
    Ok("the certificate names the header's rot_id and serial".to_owned())
}

fn device_key(certificate: &[u8]) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(certificate)
        .ok()
        .map(|(_, c)| c.public_key().raw.to_vec())
}

#[derive(Serialize)]
struct Shown {
    rot_id: String,
    serial: String,
    guid: String,
    cert_chain_sha256: String,
    manufacturer_key: String,
    device_binding: bool,
    voucher_sha256: String,
    entries: Vec<ShownEntry>,
    current_owner: String,
}

#[derive(Serialize)]
struct ShownEntry {
    index: usize,
    next_owner: String,
    owner_commitment: String,
    prev_hash: String,
}

fn show(args: &ShowArgs) -> anyhow::Result<Outcome> {
    let (_, voucher) = read_voucher(&args.voucher)?;
    let header = voucher.header();
    let shown = Shown {
        rot_id: header.rot_id.clone(),
        serial: header.serial.clone(),
        guid: hex::encode(header.guid),
        cert_chain_sha256: hex::encode(header.cert_chain_sha256),
        manufacturer_key: fingerprint(&header.manufacturer_public_key),
        device_binding: voucher.device_binding().is_some(),
        voucher_sha256: hex::encode(voucher.sha256()),
        entries: voucher
            .entry_payloads()
            .enumerate()
            .map(|(index, p)| ShownEntry {
                index,
                next_owner: fingerprint(&p.next_owner_public_key),
                owner_commitment: hex::encode(p.owner_commitment()),
                prev_hash: hex::encode(p.prev_hash),
            })
            .collect(),
        current_owner: fingerprint(voucher.current_owner()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(Outcome::Success);
    }
    println!("voucher (unverified; `trustline voucher verify` checks it)");
    println!("  rot_id:            {}", shown.rot_id);
    println!("  serial:            {}", shown.serial);
    println!("  guid:              {}", shown.guid);
    println!("  cert chain sha256: {}", shown.cert_chain_sha256);
    println!("  manufacturer key:  {}", shown.manufacturer_key);
    println!(
        "  device binding:    {}",
        if shown.device_binding {
            "present"
        } else {
            "absent"
        }
    );
    println!("  voucher sha256:    {}", shown.voucher_sha256);
    for e in &shown.entries {
        println!(
            "  entry {}: owner {} (commitment {})",
            e.index, e.next_owner, e.owner_commitment
        );
    }
    println!(
        "  current owner:     {}{}",
        shown.current_owner,
        if shown.entries.is_empty() {
            " (the manufacturer)"
        } else {
            ""
        }
    );
    Ok(Outcome::Success)
}
