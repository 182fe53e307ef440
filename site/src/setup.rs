//! Preparing a data directory (the layout of [`backends::layout`], described
//! in docs/operations.md): the CA in the HSM and the service PKI whose
//! certificates every listener and client uses.
//!
//! Used by `trustline serve all --init`, the demo, the benchmark and the
//! end-to-end tests, so that all of them run the same services behind the
//! same mTLS. Each step is skipped when its output exists, so preparing a
//! prepared directory changes nothing.
//!
//! Credential names in `<data>/pki/` (each `<name>.pem` + `<name>.key`):
//! `provisioner` (server and the provisioner's client identity), `ca` and
//! `ledger` (servers), `admin` (the OEM), `auditor`, and one per station
//! asked for (`station-<site>-<name>`).

use std::path::{Path, PathBuf};

use ca_service::ca::{self, InitOptions};
use ca_service::keys::KeyLabels;
use ca_service::Hsm;
use rustls_pki_types::CertificateDer;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{Caller, CredentialPaths, Role};

use crate::error::{Error, Result};

pub use backends::layout::{CA_DIR, LEDGER_DIR, LEDGER_KEY_FILE, LOCKOUTS_DIR, PKI_DIR};

/// The provisioner's credential name.
pub const PROVISIONER: &str = "provisioner";
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

/// The site that roles without a site use (transport's convention).
pub const HQ: &str = "hq";

/// How long service certificates made here are valid.
const PKI_DAYS: u32 = 825;

/// The credential name of a station.
pub fn station_name(site: &str, name: &str) -> String {
    format!("station-{site}-{name}")
}

/// Creates the CA (keys on the token, certificates in `<data>/ca`) unless it
/// exists, and writes the ledger checkpoint public key.
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
    let ledger_key = data_dir.join(LEDGER_KEY_FILE);
    if let Some(parent) = ledger_key.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    // Transitional (issue 12.6): `ca init` no longer makes the checkpoint
    // key; it belongs on the ledger's own token (`ca_service::ledger_key`).
    // Until serve/setup open that second token it is made here, as before.
    let checkpoint = hsm
        .generate_key(ca_service::keys::LEDGER_CHECKPOINT)
        .map_err(|e| Error::Config(format!("ledger checkpoint key: {e}")))?;
    ca::write_atomically(&ledger_key, checkpoint.public_key_pem().as_bytes())
        .map_err(|e| Error::Config(format!("writing the ledger key: {e}")))
}

/// Makes the service CA (its key on the token, label
/// `trustline-service-ca`) unless it exists, and issues the credentials of
/// the services, the admin, the auditor and `stations` (site, name) that do
/// not exist yet.
///
/// # Errors
/// [`Error::Config`] for HSM, PKI and I/O failures.
pub fn init_pki(hsm: &Hsm, data_dir: &Path, stations: &[(String, String)]) -> Result<PathBuf> {
    let dir = data_dir.join(PKI_DIR);
    let label = pki::SERVICE_CA_KEY_LABEL;
    let cfg = |e: &dyn std::fmt::Display| Error::Config(format!("service pki: {e}"));
    let key = if hsm.key_exists(label).map_err(|e| cfg(&e))? {
        hsm.signer(label).map_err(|e| cfg(&e))?
    } else {
        hsm.generate_key(label).map_err(|e| cfg(&e))?
    };
    let ca_path = dir.join(transport::tls::SERVICE_CA_FILE);
    let ca_cert: CertificateDer<'static> = if ca_path.exists() {
        let text = std::fs::read(&ca_path).map_err(|e| Error::io(&ca_path, e))?;
        let block = pem::parse(&text).map_err(|e| Error::io(&ca_path, e))?;
        CertificateDer::from(block.contents().to_vec())
    } else {
        let cert = pki::service_ca_certificate(
            &key,
            "Trustline service CA",
            Validity::days_from_now(PKI_DAYS),
        )
        .map_err(|e| cfg(&e))?;
        pki::write_ca_certificate(&dir, &cert).map_err(|e| cfg(&e))?;
        cert
    };
    let server = || CertificateKind::Server {
        dns_names: vec![],
        ip_addresses: vec![],
    };
    let mut wanted = vec![
        (
            PROVISIONER.to_owned(),
            Role::Provisioner,
            HQ.to_owned(),
            PROVISIONER.to_owned(),
            server(),
        ),
        (
            CA_SERVER.to_owned(),
            Role::Provisioner,
            HQ.to_owned(),
            CA_SERVER.to_owned(),
            server(),
        ),
        (
            LEDGER_SERVER.to_owned(),
            Role::Provisioner,
            HQ.to_owned(),
            LEDGER_SERVER.to_owned(),
            server(),
        ),
        (
            ADMIN.to_owned(),
            Role::Admin,
            HQ.to_owned(),
            "oem".to_owned(),
            CertificateKind::Client,
        ),
        (
            AUDITOR.to_owned(),
            Role::Auditor,
            HQ.to_owned(),
            AUDITOR.to_owned(),
            CertificateKind::Client,
        ),
    ];
    for (site, name) in stations {
        wanted.push((
            station_name(site, name),
            Role::Station,
            site.clone(),
            name.clone(),
            CertificateKind::Client,
        ));
    }
    for (file, role, site, name, kind) in wanted {
        if dir.join(format!("{file}.pem")).exists() {
            continue;
        }
        let caller = Caller::new(role, &site, &name).map_err(|e| cfg(&e))?;
        let params = LeafParams {
            caller,
            kind,
            validity: Validity::days_from_now(PKI_DAYS),
        };
        let issued = pki::issue_with_new_key(&ca_cert, &key, &params).map_err(|e| cfg(&e))?;
        pki::write_credentials(&dir, &file, &issued, &ca_cert).map_err(|e| cfg(&e))?;
    }
    Ok(dir)
}

/// The credential paths of `name` in a data directory.
pub fn credentials(data_dir: &Path, name: &str) -> CredentialPaths {
    CredentialPaths::in_dir(&data_dir.join(PKI_DIR), name)
}
