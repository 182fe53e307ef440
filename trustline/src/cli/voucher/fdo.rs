//! FDO 1.1 vouchers in `trustline voucher …` (issue 17;
//! `docs/fdo-vouchers.md`), offline like the rest of the command:
//!
//! - `voucher export --format fdo --voucher V.cbor --fdo F.pem [--key K.pem]…
//!   --out OUT.pem`: the FDO voucher (PEM `OWNERSHIP VOUCHER`) of the
//!   Trustline voucher `V`. `F` is an FDO voucher of the same device — the
//!   station's `<serial>.fdo-voucher.pem` holds its header and the device's
//!   HMAC —, whose entries must mirror a prefix of `V`'s; each `--key`, in
//!   order, signs the FDO twin of the next Trustline entry (the key that
//!   signed that Trustline entry). Every Trustline entry must end up
//!   mirrored, else nothing is written. Entry 0 is the OEM's: `F` must
//!   already hold it — the FDO voucher `Ownership/TransferFromManufacturer`
//!   returns (`fdo_voucher`, CBOR or PEM), whose entry 0 the CA signed with
//!   the OEM voucher key — so no key of the OEM's is ever given here.
//! - `voucher import --voucher F.pem --manufacturer-key M.pem --out V.cbor`:
//!   verifies the FDO voucher from the manufacturer key (fail closed),
//!   rebuilds the Trustline voucher its entries mirror (`rot_id` and serial
//!   from the device certificate), verifies that too, writes it and says
//!   what is new: the FDO-only transfers after it.
//! - `voucher extend` and `voucher verify` take an FDO PEM voucher as well
//!   (recognised by its `-----BEGIN OWNERSHIP VOUCHER-----` line): the
//!   current owner signs an FDO entry for the next owner; `verify` walks
//!   the FDO chain of owners and, with `--chain`, checks that the voucher
//!   carries exactly that certificate chain. Any failure is exit 1.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use trustline_proto::fdo::{FdoVoucher, RendezvousInfo};
use trustline_proto::signer::Signer;

use super::{
    fingerprint, read_chain, read_private_key, read_public_key, read_voucher, write_new,
    ExtendArgs, VerifyArgs,
};
use crate::cli::Outcome;

/// The voucher formats `voucher export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// FIDO Device Onboard 1.1, PEM `OWNERSHIP VOUCHER`.
    Fdo,
}

/// `trustline voucher export` arguments.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The format to write.
    #[arg(long, value_enum)]
    pub(crate) format: Format,
    /// The Trustline voucher (CBOR).
    #[arg(long, value_name = "FILE")]
    pub(crate) voucher: PathBuf,
    /// An FDO voucher of the same device (PEM or CBOR): its header, HMAC,
    /// chain and already mirrored entries, entry 0 included — the one
    /// `TransferFromManufacturer` returns (`fdo_voucher`).
    #[arg(long, value_name = "PEM")]
    pub(crate) fdo: PathBuf,
    /// The private key (PKCS#8 PEM) that signed the next Trustline entry
    /// not yet mirrored; repeat, in entry order.
    #[arg(long = "key", value_name = "PEM")]
    pub(crate) keys: Vec<PathBuf>,
    /// Where to write the FDO voucher (must not exist).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
}

/// `trustline voucher import` arguments.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The FDO voucher (PEM).
    #[arg(long, value_name = "PEM")]
    pub(crate) voucher: PathBuf,
    /// The OEM voucher public key (PEM or DER).
    #[arg(long, value_name = "PEM")]
    pub(crate) manufacturer_key: PathBuf,
    /// Where to write the Trustline voucher its entries mirror (CBOR).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// True when `path` holds an FDO voucher in PEM form.
pub(crate) fn is_fdo(path: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(std::str::from_utf8(&bytes).is_ok_and(|t| t.contains("-----BEGIN OWNERSHIP VOUCHER-----")))
}

/// An FDO voucher from a file: PEM, or the CBOR `Ownership/
/// TransferFromManufacturer` returns in `fdo_voucher`.
fn read_fdo(path: &Path) -> anyhow::Result<FdoVoucher> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let decoded = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => FdoVoucher::from_pem(text),
        _ => FdoVoucher::decode(&bytes),
    };
    decoded.with_context(|| format!("{} is not an FDO voucher", path.display()))
}

/// The `rot_id` and serial the device certificate names (its one
/// `urn:trustline:rot:` SAN URI and its subject serialNumber).
fn device_names(certificate: &[u8]) -> anyhow::Result<(String, String)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|e| anyhow::anyhow!("the device certificate does not parse: {e}"))?;
    let rots: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => u
                        .strip_prefix(trustline_proto::ROT_URI_PREFIX)
                        .map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let serials: Vec<String> = cert
        .subject()
        .iter_attributes()
        .filter(|a| a.attr_type().to_id_string() == "2.5.4.5")
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    match (rots.as_slice(), serials.as_slice()) {
        ([rot], [serial]) => Ok((rot.clone(), serial.clone())),
        _ => bail!(
            "the device certificate names {} rot_id URIs and {} serial numbers, expected one each",
            rots.len(),
            serials.len()
        ),
    }
}

/// `voucher export --format fdo`.
pub(crate) fn export(args: &ExportArgs) -> anyhow::Result<Outcome> {
    let Format::Fdo = args.format;
    let (_, voucher) = read_voucher(&args.voucher)?;
    let mut fdo = read_fdo(&args.fdo)?;
    let (rot_id, serial) = device_names(&fdo.cert_chain()[0])?;
    ensure!(
        rot_id == voucher.header().rot_id && serial == voucher.header().serial,
        "{} is the FDO voucher of {rot_id} (serial {serial}), not of {}",
        args.fdo.display(),
        voucher.header().rot_id
    );
    // The FDO voucher's entries must mirror a prefix of the Trustline ones.
    let view = fdo
        .to_trustline(&rot_id, &serial, voucher.device_binding())
        .context("the FDO voucher does not mirror this Trustline voucher")?;
    ensure!(
        view.fdo_only == 0,
        "the FDO voucher has {} FDO-only entries: it has moved on in FDO, export from it instead",
        view.fdo_only
    );
    let mirrored = view.voucher.len();
    ensure!(
        mirrored <= voucher.len(),
        "the FDO voucher mirrors more entries than the Trustline voucher has"
    );
    for i in 0..mirrored {
        ensure!(
            voucher.entry_payloads().nth(i) == view.voucher.entry_payloads().nth(i),
            "FDO entry {i} mirrors another Trustline entry {i}"
        );
    }
    let missing = voucher.len() - mirrored;
    ensure!(
        mirrored > 0 || voucher.is_empty(),
        "{} has no entry 0: entry 0 is the OEM's, signed by the OEM voucher key in the CA; \
         start from the FDO voucher TransferFromManufacturer returned (fdo_voucher)",
        args.fdo.display()
    );
    ensure!(
        args.keys.len() == missing,
        "the Trustline voucher has {missing} entries not yet in the FDO voucher; give one --key per entry (got {})",
        args.keys.len()
    );
    for path in &args.keys {
        let key = read_private_key(path)?;
        fdo.mirror_next(&voucher, &key)
            .with_context(|| format!("{} did not sign the next entry", path.display()))?;
    }
    fdo.verify(&voucher.header().manufacturer_public_key)
        .context("the exported FDO voucher does not verify")?;
    write_new(&args.out, fdo.to_pem().as_bytes(), None)?;
    println!(
        "fdo voucher of {rot_id} written to {}: {} entries ({} newly mirrored)",
        args.out.display(),
        fdo.len(),
        missing
    );
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct Imported {
    rot_id: String,
    serial: String,
    guid: String,
    device_info: String,
    rendezvous: Vec<String>,
    header_sha256: String,
    header_hmac_sha256: String,
    entries: usize,
    mirrored_trustline_entries: usize,
    fdo_only_transfers: usize,
    current_owner: String,
    out: Option<String>,
}

/// The rendezvous directives, one line each (`variable=value`).
fn rendezvous_lines(info: &RendezvousInfo) -> Vec<String> {
    info.directives
        .iter()
        .map(|d| {
            d.iter()
                .map(|i| match (i.text_value(), i.uint_value()) {
                    (Some(t), _) => format!("{}={t}", i.variable),
                    (None, Some(n)) => format!("{}={n}", i.variable),
                    (None, None) => match &i.value {
                        Some(v) => format!("{}=0x{}", i.variable, hex::encode(v)),
                        None => i.variable.to_string(),
                    },
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `voucher import`.
pub(crate) fn import(args: &ImportArgs) -> anyhow::Result<Outcome> {
    let fdo = read_fdo(&args.voucher)?;
    let manufacturer = read_public_key(&args.manufacturer_key)?;
    let verified = fdo
        .verify(&manufacturer)
        .context("the FDO voucher does not verify; nothing imported")?;
    let (rot_id, serial) = device_names(&fdo.cert_chain()[0])?;
    let view = fdo
        .to_trustline(&rot_id, &serial, None)
        .context("the Trustline entries the FDO voucher carries do not fit it")?;
    view.voucher
        .verify(&manufacturer)
        .context("the mirrored Trustline voucher does not verify")?;
    if let Some(out) = &args.out {
        write_new(out, &view.voucher.encode(), None)?;
    }
    let report = Imported {
        rot_id,
        serial,
        guid: hex::encode(fdo.header().guid),
        device_info: fdo.header().device_info.clone(),
        rendezvous: rendezvous_lines(&fdo.header().rv_info),
        header_sha256: hex::encode(verified.header_sha256),
        header_hmac_sha256: hex::encode(verified.header_hmac_sha256),
        entries: fdo.len(),
        mirrored_trustline_entries: view.voucher.len(),
        fdo_only_transfers: view.fdo_only,
        current_owner: fingerprint(&verified.current_owner),
        out: args.out.as_ref().map(|p| p.display().to_string()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "fdo voucher of {} (serial {})",
            report.rot_id, report.serial
        );
        println!("  guid: {}", report.guid);
        println!("  device info: {}", report.device_info);
        for line in &report.rendezvous {
            println!("  rendezvous: {line}");
        }
        println!("  chain of owners: verified from the manufacturer key");
        println!(
            "  entries: {} ({} mirror Trustline entries, {} FDO-only transfers to register)",
            report.entries, report.mirrored_trustline_entries, report.fdo_only_transfers
        );
        println!("  current owner: {}", report.current_owner);
        if let Some(out) = &report.out {
            println!("wrote the Trustline voucher to {out} (without the device binding)");
        }
    }
    Ok(Outcome::Success)
}

/// `voucher extend` on an FDO voucher: an FDO-only entry.
pub(crate) fn extend(args: &ExtendArgs) -> anyhow::Result<Outcome> {
    let mut fdo = read_fdo(&args.voucher)?;
    let owner = read_private_key(&args.key)?;
    let next = read_public_key(&args.to)?;
    let manufacturer = match &args.manufacturer_key {
        Some(path) => read_public_key(path)?,
        None => fdo.header().manufacturer_public_key.clone(),
    };
    fdo.verify(&manufacturer)
        .context("the FDO voucher does not verify; refusing to extend it")?;
    if owner.public_key_der() != fdo.current_owner() {
        bail!(
            "{} is not the voucher's current owner key (current owner {}); nothing was signed",
            args.key.display(),
            fingerprint(fdo.current_owner())
        );
    }
    fdo.extend(&owner, &next, None)
        .context("extending the FDO voucher")?;
    write_new(&args.out, fdo.to_pem().as_bytes(), None)?;
    println!(
        "fdo voucher extended: entry {} names owner {}\nwrote {}",
        fdo.len() - 1,
        fingerprint(&next),
        args.out.display()
    );
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct FdoVerification {
    format: &'static str,
    guid: String,
    chain_of_owners: String,
    transfers: usize,
    current_owner: Option<String>,
    device_chain: Option<String>,
    ok: bool,
}

/// `voucher verify` on an FDO voucher. Fails closed: a voucher that does
/// not decode, verify or carry the given chain is exit 1.
pub(crate) fn verify(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let fdo = read_fdo(&args.voucher)?;
    let manufacturer = read_public_key(&args.manufacturer_key)?;
    let mut ok = true;
    let (chain_of_owners, transfers, current_owner) = match fdo.verify(&manufacturer) {
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
    let device_chain = match &args.chain {
        None => None,
        Some(path) => {
            let chain = read_chain(path)?;
            Some(if chain == fdo.cert_chain() {
                "the voucher carries this chain".to_owned()
            } else {
                ok = false;
                "FAILED: the voucher carries another certificate chain".to_owned()
            })
        }
    };
    let report = FdoVerification {
        format: "fdo",
        guid: hex::encode(fdo.header().guid),
        chain_of_owners,
        transfers,
        current_owner,
        device_chain,
        ok,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("fdo voucher {}", report.guid);
        println!("  chain of owners: {}", report.chain_of_owners);
        println!("  transfers: {}", report.transfers);
        if let Some(owner) = &report.current_owner {
            println!("  current owner: {owner}");
        }
        if let Some(chain) = &report.device_chain {
            println!("  device chain: {chain}");
        }
        println!("{}", if ok { "OK" } else { "FAILED" });
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}
