//! Enrolling a factory site at the OEM hub (issue 13):
//!
//! 1. `trustline site init --data-dir S --site NAME` ([`site_init`]): on
//!    the site's CA token the site intermediate key (generation 1) and a
//!    PKCS#10 request for it; on the site's ledger token the checkpoint
//!    key; `S/trustline.toml` names the site and its ledger's origin.
//! 2. `trustline hub enroll-site --data-dir H --site NAME --csr … --ledger-key
//!    …` ([`enroll_site`]): the root signs the intermediate (the request
//!    must name this site and the OEM's organization); the site is
//!    registered for the witness (site, origin, ledger key); the service CA
//!    issues the site's credentials (provisioner client and server, CA and
//!    ledger servers, the uplink with role `site`, stations); all of it goes
//!    into one bundle ([`crate::bundle`]).
//! 3. `trustline site install --data-dir S --bundle …` ([`site_install`]):
//!    checks the bundle is for this site and origin, installs the OEM's
//!    public keys and root, the intermediate (it must chain to that root and
//!    match the pending key on the site's token), the service CA, its CRL,
//!    the credentials and the witness key; then checks that the site's CA
//!    token holds no key but its intermediate.

use std::path::{Path, PathBuf};

use ca_service::ca::{self, IntermediateRequest};
use ca_service::keys::{KeyLabels, OEM_ROOT, SERVICE_CA};
use ca_service::Hsm;
use site::setup::{self, Wanted};
use transport::pki;
use transport::{Caller, Role, ServerIdentity};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::bundle::{Bundle, Credential, BUNDLE_FORMAT};
use crate::error::{Error, Result};
use crate::hub::{self as hub_dir, RegisteredSite};

/// Where a site keeps what it knows of its hub.
pub const SITE_HUB_DIR: &str = "hub";
/// The default organization (subject O of the OEM's certificates).
pub const DEFAULT_ORGANIZATION: &str = "Trustline OEM";

/// The checkpoint origin a site's ledger signs as unless told otherwise.
pub fn default_origin(site: &str) -> String {
    format!("trustline.example/{site}/custody-ledger")
}

/// What [`site_init`] made (or found made).
#[derive(Debug, Clone)]
pub struct SiteInit {
    /// The site.
    pub site: String,
    /// Its ledger's checkpoint origin.
    pub origin: String,
    /// The intermediate request to carry to the hub.
    pub csr_file: PathBuf,
    /// The ledger's checkpoint public key to carry to the hub.
    pub ledger_key_file: PathBuf,
    /// The site token's key for the intermediate.
    pub intermediate_label: String,
}

/// `trustline site init`: see the module documentation. Idempotent: a
/// second run finds the key, the request and the ledger key it made.
///
/// # Errors
/// [`Error::Refused`] for an invalid site name or a directory that is
/// another site's; HSM, CA and I/O errors (a ledger token shared with other
/// keys is refused).
pub fn site_init(
    ca_hsm: &Hsm,
    ledger_hsm: &Hsm,
    dir: &Path,
    site: &str,
    organization: &str,
    origin: Option<&str>,
) -> Result<SiteInit> {
    ServerIdentity::new(site, "site").map_err(|e| Error::Refused(format!("site name: {e}")))?;
    let origin = origin.map_or_else(|| default_origin(site), str::to_owned);
    site::config::write_site(dir, site, &origin)?;
    setup::init_ledger_key(ledger_hsm, dir)?;
    let ca_dir = dir.join(setup::CA_DIR);
    let labels = KeyLabels::default();
    let label = labels.intermediate_label(1);
    let csr_file = ca::request_path(&ca_dir, 1);
    let pending = csr_file.exists() && ca_hsm.key_exists(&label)?;
    if !pending {
        let IntermediateRequest { file, .. } =
            ca::request_first_intermediate(ca_hsm, &ca_dir, organization, site, &labels)?;
        debug_assert_eq!(file, csr_file);
    }
    Ok(SiteInit {
        site: site.to_owned(),
        origin,
        csr_file,
        ledger_key_file: dir.join(setup::LEDGER_KEY_FILE),
        intermediate_label: label,
    })
}

/// What a site asks the hub for.
#[derive(Debug, Clone)]
pub struct EnrolRequest {
    /// The site's name.
    pub site: String,
    /// Its ledger's checkpoint origin.
    pub origin: String,
    /// The PKCS#10 request for its intermediate, DER.
    pub csr_der: Vec<u8>,
    /// Its ledger's checkpoint public key, SubjectPublicKeyInfo DER.
    pub ledger_key_der: Vec<u8>,
    /// Station credentials to issue (names within the site).
    pub stations: Vec<String>,
}

/// The site a request names (its OU).
fn requested_site(csr_der: &[u8]) -> Result<String> {
    let (_, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| Error::Refused(format!("the intermediate request does not parse: {e}")))?;
    let site = csr
        .certification_request_info
        .subject
        .iter_organizational_unit()
        .next()
        .and_then(|v| v.as_str().ok())
        .map(str::to_owned);
    site.ok_or_else(|| Error::Refused("the intermediate request names no site (OU)".into()))
}

/// The site's service credentials.
fn site_credentials(site: &str, stations: &[String]) -> Result<Vec<Wanted>> {
    let server = |name: &str| ServerIdentity::new(site, name);
    let mut wanted = vec![
        Wanted::client(
            setup::PROVISIONER,
            Caller::new(Role::Provisioner, site, setup::PROVISIONER)?,
        ),
        Wanted::server(setup::PROVISIONER_SERVER, &server(setup::PROVISIONER)?)?,
        Wanted::server(setup::CA_SERVER, &server(setup::CA_SERVER)?)?,
        Wanted::server(setup::LEDGER_SERVER, &server(setup::LEDGER_SERVER)?)?,
        Wanted::client(setup::UPLINK, Caller::new(Role::Site, site, setup::UPLINK)?),
    ];
    for name in stations {
        wanted.push(Wanted::client(
            &setup::station_name(site, name),
            Caller::new(Role::Station, site, name)?,
        ));
    }
    Ok(wanted)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// `trustline hub enroll-site`: see the module documentation. Writes the
/// bundle to `out` (a new file, 0600), then registers the site; nothing is
/// registered when anything before fails.
///
/// # Errors
/// [`Error::Refused`] for a request naming another site, a site or origin
/// enrolled already, a ledger key that is not P-256; HSM, CA, PKI and I/O
/// errors.
pub fn enroll_site(hsm: &Hsm, dir: &Path, request: &EnrolRequest, out: &Path) -> Result<Bundle> {
    let site = &request.site;
    hub_dir::check_unregistered(dir, site, &request.origin)?;
    let named = requested_site(&request.csr_der)?;
    if &named != site {
        return Err(Error::Refused(format!(
            "the intermediate request is for site {named:?}, not {site:?}"
        )));
    }
    let ledger_key_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", request.ledger_key_der.clone()));
    hub::SiteConfig::new(site, &request.origin, &request.ledger_key_der)?;
    if out.exists() {
        return Err(Error::Refused(format!("{} exists", out.display())));
    }

    let ca_dir = dir.join(setup::CA_DIR);
    let root_pem = read_text(&ca_dir.join(ca::ROOT_CERT_FILE))?;
    let root_der = pem::parse(&root_pem)
        .map_err(|e| Error::Refused(format!("the root certificate: {e}")))?
        .into_contents();
    let root = hsm.signer(OEM_ROOT)?;
    let intermediate_der = ca::sign_intermediate_request(&root, &root_der, &request.csr_der)?;
    let intermediate_pem = pem::encode(&pem::Pem::new("CERTIFICATE", intermediate_der));
    let organization = x509_parser::parse_x509_certificate(&root_der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_organization()
                .next()
                .and_then(|o| o.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default();

    let pki_dir = dir.join(setup::PKI_DIR);
    let ca_cert = pki::read_ca_certificate(&pki_dir.join(transport::tls::SERVICE_CA_FILE))?;
    let ca_key = hsm.signer(SERVICE_CA)?;
    let mut credentials = Vec::new();
    for wanted in site_credentials(site, &request.stations)? {
        let issued = pki::issue_with_new_key(&ca_cert, &ca_key, &wanted.params)?;
        let der = pem::parse(&issued.certificate_pem)
            .map_err(|e| Error::Refused(format!("issued certificate: {e}")))?;
        pki::register::record(&pki_dir, &wanted.file, der.contents())?;
        credentials.push(Credential {
            name: wanted.file,
            certificate_pem: issued.certificate_pem.clone(),
            key_pem: issued.key_pem.to_string(),
        });
    }
    let crl =
        transport::revocation::read_crl(&pki_dir.join(transport::revocation::CRL_FILE), &ca_cert)?;
    let settings = hub_dir::HubSettings::load(dir)?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        site: site.clone(),
        origin: request.origin.clone(),
        organization,
        root_pem,
        intermediate_pem: intermediate_pem.clone(),
        order_key_pem: read_text(&ca_dir.join(ca::ORDER_KEY_FILE))?,
        voucher_key_pem: read_text(&ca_dir.join(ca::VOUCHER_KEY_FILE))?,
        service_ca_pem: pki::to_pem(&ca_cert),
        crl_pem: crl.pem(),
        witness_name: settings.hub.witness_name,
        witness_verifier_key: read_text(&dir.join(hub_dir::WITNESS_VKEY_FILE))?
            .trim()
            .to_owned(),
        witness_public_key_pem: read_text(&dir.join(hub_dir::WITNESS_PUBLIC_KEY_FILE))?,
        credentials,
    };
    bundle.write(out)?;
    hub_dir::register_site(
        dir,
        &RegisteredSite {
            site: site.clone(),
            origin: request.origin.clone(),
            ledger_key_pem,
            intermediate_pem,
            enrolled_at: now_rfc3339(),
        },
    )?;
    tracing::info!(site, origin = %request.origin, "site enrolled");
    Ok(bundle)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What [`site_install`] installed.
#[derive(Debug, Clone)]
pub struct SiteInstall {
    /// The intermediate's generation now active.
    pub generation: u32,
    /// The credentials installed under `<site>/pki`.
    pub credentials: Vec<String>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn der_of(text: &str, tag: &str, what: &str) -> Result<Vec<u8>> {
    let block = pem::parse(text).map_err(|e| Error::Refused(format!("bundle {what}: {e}")))?;
    if block.tag() != tag {
        return Err(Error::Refused(format!(
            "bundle {what}: a {} PEM block, expected {tag}",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// `trustline site install`: see the module documentation.
///
/// # Errors
/// [`Error::Refused`] for a bundle of another site or origin, or one whose
/// intermediate does not chain to its root or match the pending key; a CA
/// token holding OEM keys; HSM, PKI and I/O errors.
pub fn site_install(ca_hsm: &Hsm, dir: &Path, bundle: &Bundle) -> Result<SiteInstall> {
    let config = site::Config::load(dir)?;
    let Some(name) = &config.site.name else {
        return Err(Error::Refused(format!(
            "{} is not a site directory: run `trustline site init` first",
            dir.display()
        )));
    };
    if name != &bundle.site || config.ledger.origin != bundle.origin {
        return Err(Error::Refused(format!(
            "the bundle is for site {:?} (origin {:?}); this directory is site {name:?} (origin {:?})",
            bundle.site, bundle.origin, config.ledger.origin
        )));
    }
    // Parse everything before writing anything.
    let root = der_of(&bundle.root_pem, "CERTIFICATE", "root")?;
    let intermediate = der_of(&bundle.intermediate_pem, "CERTIFICATE", "intermediate")?;
    let service_ca = rustls_pki_types::CertificateDer::from(der_of(
        &bundle.service_ca_pem,
        "CERTIFICATE",
        "service CA",
    )?);
    let crl = der_of(&bundle.crl_pem, "X509 CRL", "CRL")?;
    transport::revocation::Crl::verify(&crl, &service_ca)?;
    der_of(&bundle.order_key_pem, "PUBLIC KEY", "order key")?;
    der_of(&bundle.voucher_key_pem, "PUBLIC KEY", "voucher key")?;

    let ca_dir = dir.join(setup::CA_DIR);
    let root_path = ca_dir.join(ca::ROOT_CERT_FILE);
    if root_path.exists() && der_of(&read_text(&root_path)?, "CERTIFICATE", "root")? != root {
        return Err(Error::Refused(format!(
            "{} holds another OEM root",
            root_path.display()
        )));
    }
    let mut files = Vec::new();
    for (file, text) in [
        (ca::ROOT_CERT_FILE, &bundle.root_pem),
        (ca::ORDER_KEY_FILE, &bundle.order_key_pem),
        (ca::VOUCHER_KEY_FILE, &bundle.voucher_key_pem),
    ] {
        let path = ca_dir.join(file);
        ca::write_atomically(&path, text.as_bytes())?;
        files.push(path);
    }
    let rotation = ca::install_intermediate(ca_hsm, &ca_dir, &KeyLabels::default(), &intermediate)?;
    files.extend(rotation.files);

    let pki_dir = dir.join(setup::PKI_DIR);
    pki::write_ca_certificate(&pki_dir, &service_ca)?;
    transport::revocation::install_crl(&pki_dir, &service_ca, &crl)?;
    let mut installed = Vec::new();
    for credential in &bundle.credentials {
        let issued = pki::IssuedCredentials {
            certificate_pem: credential.certificate_pem.clone(),
            key_pem: zeroize::Zeroizing::new(credential.key_pem.clone()),
        };
        pki::replace_credentials(&pki_dir, &credential.name, &issued, &service_ca)?;
        installed.push(credential.name.clone());
    }
    let hub_dir = dir.join(SITE_HUB_DIR);
    for (file, text) in [
        (
            hub_dir::WITNESS_VKEY_FILE,
            format!("{}\n", bundle.witness_verifier_key),
        ),
        (
            hub_dir::WITNESS_PUBLIC_KEY_FILE,
            bundle.witness_public_key_pem.clone(),
        ),
    ] {
        std::fs::create_dir_all(&hub_dir).map_err(|e| Error::io(&hub_dir, e))?;
        let path = hub_dir.join(file);
        ca::write_atomically(&path, text.as_bytes())?;
        files.push(path);
    }
    site::serve::check_site_token(ca_hsm)?;
    tracing::info!(site = %bundle.site, generation = rotation.generation, "site installed");
    Ok(SiteInstall {
        generation: rotation.generation,
        credentials: installed,
        files,
    })
}
