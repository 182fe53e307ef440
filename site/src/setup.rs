//! Preparing a data directory (the layout of [`backends::layout`], described
//! in docs/operations.md): the CA in the HSM, the ledger's checkpoint key on
//! a token of its own, and the service PKI whose certificates every
//! listener and client uses.
//!
//! Used by `trustline serve all --init`, the demo, the benchmark and the
//! end-to-end tests, so that all of them run the same services behind the
//! same mTLS. Each step is skipped when its output exists, so preparing a
//! prepared directory changes nothing. This is the single-box layout (every
//! key of the OEM and the site in one place, for laptops and the demo); the
//! two-domain layout (a hub and enrolled sites, issue 13) is prepared by the
//! `deploy` crate with the same pieces.
//!
//! Credential names in `<data>/pki/` (each `<name>.pem` + `<name>.key`):
//! `provisioner` (the provisioner's client identity, the only caller of the
//! CA), `provisioner-server`, `ca` and `ledger` (server certificates:
//! serverAuth only, a server identity and no role, issue 12.5), `admin`
//! (the OEM), `auditor`, and one per station asked for
//! (`station-<site>-<name>`). Every certificate issued is in the register
//! `pki/issued.jsonl`; the CRL is `pki/crl.pem`.

use std::path::{Path, PathBuf};

use ca_service::ca::{self, InitOptions};
use ca_service::keys::{KeyLabels, LEDGER_CHECKPOINT};
use ca_service::{ledger_key, Hsm, HsmSigner};
use rustls_pki_types::CertificateDer;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{Caller, CredentialPaths, Role, ServerIdentity};

use crate::error::{Error, Result};

pub use backends::layout::{CA_DIR, LEDGER_DIR, LEDGER_KEY_FILE, LOCKOUTS_DIR, PKI_DIR};

/// The provisioner's client credential name (role `provisioner`).
pub const PROVISIONER: &str = "provisioner";
/// The provisioner's server credential name.
pub const PROVISIONER_SERVER: &str = "provisioner-server";
/// The CA server's credential name.
pub const CA_SERVER: &str = "ca";
/// The ledger server's credential name.
pub const LEDGER_SERVER: &str = "ledger";
/// The name `serve all` keeps its lockout state under.
pub const ALL_SERVER: &str = "all";
/// The OEM administrator's credential name.
pub const ADMIN: &str = "admin";
/// The auditor's credential name.
pub const AUDITOR: &str = "auditor";
/// A site's uplink to the hub: credential name and caller name (role
/// `site`).
pub const UPLINK: &str = "uplink";

/// The site that roles without a site use (transport's convention).
pub const HQ: &str = "hq";

/// The credential name of a station.
pub fn station_name(site: &str, name: &str) -> String {
    format!("station-{site}-{name}")
}

/// Creates the single-box CA — OEM root, site intermediate, OEM order and
/// voucher keys on `hsm`, certificates in `<data>/ca` — unless it exists.
///
/// # Errors
/// [`Error::Config`] for HSM, CA and I/O failures.
pub fn init_ca(hsm: &Hsm, data_dir: &Path, site: &str) -> Result<()> {
    let ca_dir = data_dir.join(CA_DIR);
    if ca_dir.join(ca::ROOT_CERT_FILE).exists() {
        return Ok(());
    }
    let options = InitOptions {
        site: site.to_owned(),
        labels: KeyLabels::default(),
        ..InitOptions::default()
    };
    ca::init(hsm, &options, &ca_dir).map_err(|e| Error::Config(format!("ca init: {e}")))?;
    Ok(())
}

/// Creates the ledger's checkpoint key on the ledger's own token
/// (`ledger_hsm`, which must hold no other private key; issue 12.6) and
/// writes `<data>/ledger/ledger-key.pub.pem`, unless the public key file
/// exists — then checks that the token holds the key.
///
/// # Errors
/// [`Error::Config`] when the token is shared with other keys, lacks the key
/// of an existing file, or the HSM or the file fails.
pub fn init_ledger_key(ledger_hsm: &Hsm, data_dir: &Path) -> Result<()> {
    let file = data_dir.join(LEDGER_KEY_FILE);
    let fail = |e: ca_service::Error| Error::Config(format!("the ledger checkpoint key: {e}"));
    if file.exists() {
        let signer = ledger_key::open(ledger_hsm, LEDGER_CHECKPOINT).map_err(fail)?;
        check_ledger_key_file(&file, &signer)?;
        return Ok(());
    }
    ledger_key::init(ledger_hsm, LEDGER_CHECKPOINT, &file).map_err(fail)?;
    Ok(())
}

/// Checks that `file` holds `signer`'s public key.
///
/// # Errors
/// [`Error::Config`] when it does not.
pub fn check_ledger_key_file(file: &Path, signer: &HsmSigner) -> Result<()> {
    let der = crate::config::read_der(file, "PUBLIC KEY")?;
    if der != signer.public_key_spki() {
        return Err(Error::Config(format!(
            "{} is not the public key of {LEDGER_CHECKPOINT:?} on token {:?}",
            file.display(),
            signer.hsm().token_label()
        )));
    }
    Ok(())
}

/// The service CA of a data directory: its key (made on `hsm` when
/// missing) and its certificate (made when missing), and its CRL (an empty
/// one when missing).
///
/// # Errors
/// [`Error::Config`] for HSM, PKI and I/O failures.
pub fn service_ca(hsm: &Hsm, pki_dir: &Path) -> Result<(HsmSigner, CertificateDer<'static>)> {
    let label = pki::SERVICE_CA_KEY_LABEL;
    let cfg = |e: &dyn std::fmt::Display| Error::Config(format!("service pki: {e}"));
    let key = if hsm.key_exists(label).map_err(|e| cfg(&e))? {
        hsm.signer(label).map_err(|e| cfg(&e))?
    } else {
        hsm.generate_key(label).map_err(|e| cfg(&e))?
    };
    let ca_path = pki_dir.join(transport::tls::SERVICE_CA_FILE);
    let ca_cert: CertificateDer<'static> = if ca_path.exists() {
        pki::read_ca_certificate(&ca_path).map_err(|e| cfg(&e))?
    } else {
        let cert = pki::service_ca_certificate(
            &key,
            "Trustline service CA",
            Validity::days_from_now(pki::DEFAULT_SERVICE_CA_DAYS),
        )
        .map_err(|e| cfg(&e))?;
        pki::write_ca_certificate(pki_dir, &cert).map_err(|e| cfg(&e))?;
        cert
    };
    transport::revocation::write_empty_crl(pki_dir, &ca_cert, &key).map_err(|e| cfg(&e))?;
    Ok((key, ca_cert))
}

/// One credential to issue: file name and what its certificate says.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The file stem under the PKI directory.
    pub file: String,
    /// The certificate's identity and kind.
    pub params: LeafParams,
}

impl Wanted {
    /// A client credential for `caller`, valid for the default client
    /// lifetime.
    pub fn client(file: &str, caller: Caller) -> Self {
        Self {
            file: file.to_owned(),
            params: LeafParams {
                caller,
                kind: CertificateKind::Client,
                validity: Validity::days_from_now(pki::DEFAULT_CLIENT_DAYS),
            },
        }
    }

    /// A server credential for `server` (loopback names), valid for the
    /// default server lifetime.
    ///
    /// # Errors
    /// [`Error::Config`] never for a valid identity.
    pub fn server(file: &str, server: &ServerIdentity) -> Result<Self> {
        let params = LeafParams::server(
            server,
            vec![],
            vec![],
            Validity::days_from_now(pki::DEFAULT_SERVER_DAYS),
        )
        .map_err(|e| Error::Config(format!("service pki: {e}")))?;
        Ok(Self {
            file: file.to_owned(),
            params,
        })
    }
}

/// Issues every credential in `wanted` whose certificate does not exist yet
/// in `out_dir`, records each in `register_dir`'s register, and returns the
/// names issued.
///
/// # Errors
/// [`Error::Config`] for PKI and I/O failures.
pub fn issue_missing(
    key: &HsmSigner,
    ca_cert: &CertificateDer<'static>,
    out_dir: &Path,
    register_dir: &Path,
    wanted: &[Wanted],
) -> Result<Vec<String>> {
    let cfg = |e: &dyn std::fmt::Display| Error::Config(format!("service pki: {e}"));
    let mut issued_names = Vec::new();
    for w in wanted {
        if out_dir.join(format!("{}.pem", w.file)).exists() {
            continue;
        }
        let issued = pki::issue_with_new_key(ca_cert, key, &w.params).map_err(|e| cfg(&e))?;
        pki::write_credentials(out_dir, &w.file, &issued, ca_cert).map_err(|e| cfg(&e))?;
        let der = pem::parse(&issued.certificate_pem).map_err(|e| cfg(&e))?;
        pki::register::record(register_dir, &w.file, der.contents()).map_err(|e| cfg(&e))?;
        issued_names.push(w.file.clone());
    }
    Ok(issued_names)
}

/// The single-box service credentials: the provisioner's client identity
/// (`provisioner/hq/provisioner`, the caller `serve all` uses in-process),
/// the provisioner, CA and ledger servers of `site`, the admin, the auditor
/// and `stations` (site, name).
///
/// # Errors
/// [`Error::Config`] for an invalid site or station token.
pub fn single_box_credentials(site: &str, stations: &[(String, String)]) -> Result<Vec<Wanted>> {
    let cfg = |e: transport::Error| Error::Config(format!("service pki: {e}"));
    let server = |name: &str| ServerIdentity::new(site, name).map_err(cfg);
    let mut wanted = vec![
        Wanted::client(
            PROVISIONER,
            Caller::new(Role::Provisioner, HQ, PROVISIONER).map_err(cfg)?,
        ),
        Wanted::server(PROVISIONER_SERVER, &server(PROVISIONER)?)?,
        Wanted::server(CA_SERVER, &server(CA_SERVER)?)?,
        Wanted::server(LEDGER_SERVER, &server(LEDGER_SERVER)?)?,
        Wanted::client(ADMIN, Caller::new(Role::Admin, HQ, "oem").map_err(cfg)?),
        Wanted::client(
            AUDITOR,
            Caller::new(Role::Auditor, HQ, AUDITOR).map_err(cfg)?,
        ),
    ];
    for (station_site, name) in stations {
        wanted.push(Wanted::client(
            &station_name(station_site, name),
            Caller::new(Role::Station, station_site, name).map_err(cfg)?,
        ));
    }
    Ok(wanted)
}

/// Makes the service CA (its key on `hsm`, label `trustline-service-ca`)
/// unless it exists, with an empty CRL, and issues the single-box
/// credentials ([`single_box_credentials`]) that do not exist yet.
///
/// # Errors
/// [`Error::Config`] for HSM, PKI and I/O failures.
pub fn init_pki(
    hsm: &Hsm,
    data_dir: &Path,
    site: &str,
    stations: &[(String, String)],
) -> Result<PathBuf> {
    let dir = data_dir.join(PKI_DIR);
    let (key, ca_cert) = service_ca(hsm, &dir)?;
    issue_missing(
        &key,
        &ca_cert,
        &dir,
        &dir,
        &single_box_credentials(site, stations)?,
    )?;
    Ok(dir)
}

/// The credential paths of `name` in a data directory.
pub fn credentials(data_dir: &Path, name: &str) -> CredentialPaths {
    CredentialPaths::in_dir(&data_dir.join(PKI_DIR), name)
}
