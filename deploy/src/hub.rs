//! The OEM hub's data directory, its keys, the sites it knows, and `serve
//! hub`.
//!
//! ```text
//! <hub>/hub.toml                    settings: [hub] listen, witness_name, database; [transport]
//! <hub>/ca/oem-root.pem             the OEM root certificate (its key on the hub token, or offline)
//! <hub>/ca/order-key.pub.pem        the OEM order key (public)
//! <hub>/ca/voucher-key.pub.pem      the OEM voucher key (public)
//! <hub>/witness.vkey                the witness's signed-note verifier key
//! <hub>/witness-key.pub.pem         the witness's Ed25519 public key
//! <hub>/pki/                        the service CA (key on the hub token), crl.pem, issued.jsonl,
//!                                   hub.pem/.key (server), admin, auditor
//! <hub>/sites/<site>.toml           an enrolled site: origin, ledger key, intermediate
//! <hub>/store/                      the hub's embedded store (mirror, registry, cosignatures)
//! <hub>/ledger/                     the hub's custody ledger of field-life events, ledger-key.pub.pem
//! <hub>/lockouts/hub.json           callers locked out
//! <hub>/hsm/                        the embedded SoftHSM2 token (demo and laptops only)
//! ```
//!
//! The hub's token holds the OEM root (the demo's; in production it may
//! stay offline and sign intermediates with `trustline ca
//! sign-intermediate`), order and voucher keys, the witness key
//! (`trustline-witness`, Ed25519), the OEM seal key, the hub ledger's
//! checkpoint key (`trustline-hub-ledger`) and the service CA key.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_service::ca::{self, InitOptions};
use ca_service::keys::{KeyLabels, WITNESS};
use ca_service::Hsm;
use serde::{Deserialize, Serialize};
use site::setup::{self, Wanted};
use tokio::net::TcpListener;
use transport::{Caller, CredentialPaths, Guard, Limits, Metrics, Role, ServerIdentity, ServerTls};

use crate::error::{Error, Result};
use crate::witness::HsmWitness;

/// The hub's settings file.
pub const HUB_CONFIG_FILE: &str = "hub.toml";
/// Enrolled sites, one `<site>.toml` each.
pub const SITES_DIR: &str = "sites";
/// The hub's embedded store.
pub const STORE_DIR: &str = "store";
/// The witness's signed-note verifier key (text).
pub const WITNESS_VKEY_FILE: &str = "witness.vkey";
/// The witness's public key (PEM SubjectPublicKeyInfo).
pub const WITNESS_PUBLIC_KEY_FILE: &str = "witness-key.pub.pem";
/// The hub server's credential name.
pub const HUB_SERVER: &str = "hub";
/// Where the hub listens unless configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7410";
/// The witness's default cosigner name.
pub const DEFAULT_WITNESS_NAME: &str = "trustline-hub";

/// `[hub]` of `hub.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    /// Where `serve hub` listens (`TRUSTLINE_HUB_LISTEN`).
    pub listen: String,
    /// The witness's cosigner name (its note key name).
    pub witness_name: String,
    /// The checkpoint origin of the hub's own ledger (field-life events).
    pub ledger_origin: String,
    /// The PostgreSQL database of the hub's store (a `postgres://` URL,
    /// issue 14; `TRUSTLINE_HUB_DATABASE`); empty: the embedded store in
    /// `<hub>/store`.
    pub database: String,
}

impl Default for HubSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            witness_name: DEFAULT_WITNESS_NAME.into(),
            ledger_origin: crate::field::DEFAULT_HUB_LEDGER_ORIGIN.into(),
            database: String::new(),
        }
    }
}

/// Everything `serve hub` reads from `<hub>/hub.toml` (every key optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSettings {
    /// The hub.
    pub hub: HubSection,
    /// Transport limits (message sizes, rates, lockouts).
    pub transport: Limits,
    /// The ownership service at the hub (challenges, budgets, CRL).
    pub ownership: site::config::OwnershipSettings,
}

impl HubSettings {
    /// Reads `<dir>/hub.toml` if present, then `TRUSTLINE_HUB_LISTEN` and
    /// `TRUSTLINE_HUB_DATABASE`.
    ///
    /// # Errors
    /// [`Error::Refused`] for a malformed file; [`Error::Io`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(HUB_CONFIG_FILE);
        let mut settings: HubSettings = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HubSettings::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if let Some(v) = std::env::var("TRUSTLINE_HUB_LISTEN")
            .ok()
            .filter(|v| !v.is_empty())
        {
            settings.hub.listen = v;
        }
        if let Some(v) = std::env::var("TRUSTLINE_HUB_DATABASE")
            .ok()
            .filter(|v| !v.is_empty())
        {
            settings.hub.database = v;
        }
        Ok(settings)
    }
}

/// What [`init`] made.
#[derive(Debug, Clone)]
pub struct HubInit {
    /// Keys created on the hub's token.
    pub keys: Vec<String>,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The witness's verifier key.
    pub witness_verifier_key: String,
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    ca::write_atomically(path, text.as_bytes())?;
    Ok(())
}

/// The hub's credentials: its server certificate and the OEM's admin and
/// auditor.
fn hub_credentials() -> Result<Vec<Wanted>> {
    Ok(vec![
        Wanted::server(HUB_SERVER, &ServerIdentity::new(setup::HQ, HUB_SERVER)?)?,
        Wanted::client(setup::ADMIN, Caller::new(Role::Admin, setup::HQ, "oem")?),
        Wanted::client(
            setup::AUDITOR,
            Caller::new(Role::Auditor, setup::HQ, setup::AUDITOR)?,
        ),
    ])
}

/// `trustline hub init`: on the hub's token the OEM root, order and voucher
/// keys ([`ca::init_oem`]), the witness key and the service CA; in `dir`
/// the root certificate, the OEM public keys, the witness key, the service
/// CA with an empty CRL, the hub server, admin and auditor credentials, and
/// `hub.toml`. Runs once.
///
/// # Errors
/// [`Error::AlreadyInitialized`] for a directory or token that has a hub;
/// HSM, PKI and I/O errors.
pub fn init(hsm: &Hsm, dir: &Path, organization: &str, witness_name: &str) -> Result<HubInit> {
    if hsm.key_exists(WITNESS)? {
        return Err(Error::AlreadyInitialized(format!(
            "key {WITNESS:?} on token {:?}",
            hsm.token_label()
        )));
    }
    let options = InitOptions {
        organization: organization.to_owned(),
        labels: KeyLabels::default(),
        ..InitOptions::default()
    };
    let report = ca::init_oem(hsm, &options, &dir.join(setup::CA_DIR))?;
    let mut keys = report.keys;
    let mut files = report.files;
    let witness = hsm.generate_ed25519_key(WITNESS)?;
    keys.push(WITNESS.to_owned());
    let public_key_pem = witness.public_key_pem();
    let cosigner = hub::Cosigner::new(witness_name, Box::new(HsmWitness(witness)))?;
    let vkey = cosigner.verifier_key();
    for (file, text) in [
        (WITNESS_VKEY_FILE, format!("{vkey}\n")),
        (WITNESS_PUBLIC_KEY_FILE, public_key_pem),
    ] {
        let path = dir.join(file);
        write_new(&path, &text)?;
        files.push(path);
    }
    let ledger = crate::field::open_hub_ledger(dir, hsm, &settings_origin(dir))?;
    ledger.close();
    keys.push(crate::field::HUB_LEDGER_KEY.to_owned());
    files.push(dir.join(backends::layout::LEDGER_KEY_FILE));
    let pki_dir = dir.join(setup::PKI_DIR);
    let (ca_key, ca_cert) = setup::service_ca(hsm, &pki_dir)?;
    keys.push(transport::pki::SERVICE_CA_KEY_LABEL.to_owned());
    setup::issue_missing(&ca_key, &ca_cert, &pki_dir, &pki_dir, &hub_credentials()?)?;
    let settings = HubSettings {
        hub: HubSection {
            witness_name: witness_name.to_owned(),
            ..HubSection::default()
        },
        ..HubSettings::default()
    };
    let config_path = dir.join(HUB_CONFIG_FILE);
    if !config_path.exists() {
        let text = format!(
            "# Written by `trustline hub init`.\n[hub]\nlisten = {:?}\nwitness_name = {:?}\nledger_origin = {:?}\n",
            settings.hub.listen, settings.hub.witness_name, settings.hub.ledger_origin
        );
        write_new(&config_path, &text)?;
        files.push(config_path);
    }
    files.push(pki_dir);
    tracing::info!(dir = %dir.display(), witness = %vkey, "hub initialised");
    Ok(HubInit {
        keys,
        files,
        witness_verifier_key: vkey,
    })
}

/// The hub ledger's origin from `<dir>/hub.toml` (the default before the
/// file exists).
fn settings_origin(dir: &Path) -> String {
    HubSettings::load(dir)
        .map(|s| s.hub.ledger_origin)
        .unwrap_or_else(|_| crate::field::DEFAULT_HUB_LEDGER_ORIGIN.into())
}

/// One site enrolled at the hub (`<hub>/sites/<site>.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredSite {
    /// The site's name (its callers' certificates name it).
    pub site: String,
    /// Its ledger's checkpoint origin.
    pub origin: String,
    /// Its ledger's checkpoint public key, PEM.
    pub ledger_key_pem: String,
    /// Its site intermediate certificate, PEM.
    pub intermediate_pem: String,
    /// When it was enrolled, RFC 3339.
    pub enrolled_at: String,
}

impl RegisteredSite {
    /// The hub's view of it.
    ///
    /// # Errors
    /// [`Error::Hub`] for a bad origin or key; [`Error::Refused`] for a
    /// key that is not PEM.
    pub fn config(&self) -> Result<hub::SiteConfig> {
        let block = pem::parse(&self.ledger_key_pem)
            .map_err(|e| Error::Refused(format!("site {}: ledger key: {e}", self.site)))?;
        Ok(hub::SiteConfig::new(
            &self.site,
            &self.origin,
            block.contents(),
        )?)
    }
}

/// Every site enrolled at the hub in `dir`, by name.
///
/// # Errors
/// [`Error::Io`]; [`Error::Refused`] for a file that does not parse.
pub fn registered_sites(dir: &Path) -> Result<Vec<RegisteredSite>> {
    let sites_dir = dir.join(SITES_DIR);
    let entries = match std::fs::read_dir(&sites_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&sites_dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            toml::from_str(&text).map_err(|e| Error::Refused(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// Adds `site` to the hub's register; refuses a site enrolled already or an
/// origin another site uses.
///
/// # Errors
/// [`Error::Refused`]; [`Error::Io`].
pub fn register_site(dir: &Path, site: &RegisteredSite) -> Result<()> {
    check_unregistered(dir, &site.site, &site.origin)?;
    site.config()?;
    let path = dir.join(SITES_DIR).join(format!("{}.toml", site.site));
    let text = toml::to_string(site).map_err(|e| Error::Refused(format!("site record: {e}")))?;
    write_new(&path, &text)
}

/// Refuses `site` or `origin` if a registered site has it.
///
/// # Errors
/// [`Error::Refused`].
pub fn check_unregistered(dir: &Path, site: &str, origin: &str) -> Result<()> {
    for known in registered_sites(dir)? {
        if known.site == site {
            return Err(Error::Refused(format!(
                "site {site:?} is enrolled already ({}/{site}.toml)",
                dir.join(SITES_DIR).display()
            )));
        }
        if known.origin == origin {
            return Err(Error::Refused(format!(
                "site {:?} already signs its checkpoints as {origin:?}",
                known.site
            )));
        }
    }
    Ok(())
}

/// The hub's configuration: every enrolled site and the OEM order key.
///
/// # Errors
/// As [`registered_sites`]; a missing order key.
pub fn hub_config(dir: &Path) -> Result<hub::HubConfig> {
    let sites = registered_sites(dir)?
        .iter()
        .map(RegisteredSite::config)
        .collect::<Result<Vec<_>>>()?;
    let order_key = site::config::read_der(
        &dir.join(setup::CA_DIR).join(ca::ORDER_KEY_FILE),
        "PUBLIC KEY",
    )?;
    Ok(hub::HubConfig {
        sites,
        order_key: Some(order_key),
    })
}

/// `trustline serve hub`: the hub over its embedded store in
/// `<dir>/store`, witnessing every enrolled site (the register is read at
/// start: restart after `hub enroll-site`), cosigning with the witness key
/// on `hsm`, and the `Ownership` service over the registry and the hub's
/// own ledger in `<dir>/ledger` ([`crate::field`]), behind TLS 1.3 with the hub's server credential and the
/// service CA's CRL, until `shutdown` completes.
///
/// # Errors
/// HSM, configuration and server failures.
pub async fn serve(
    dir: &Path,
    settings: &HubSettings,
    hsm: &Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let witness = hsm.ed25519_signer(WITNESS)?;
    let cosigner = hub::Cosigner::new(&settings.hub.witness_name, Box::new(HsmWitness(witness)))?;
    let config = hub_config(dir)?;
    if config.sites.is_empty() {
        tracing::warn!("no site is enrolled at this hub (`trustline hub enroll-site`)");
    }
    let hub = if settings.hub.database.is_empty() {
        hub::Hub::open_embedded(&dir.join(STORE_DIR), config, cosigner)?
    } else {
        let url = settings.hub.database.clone();
        let store = tokio::task::spawn_blocking(move || hub::PgHubStore::open(&url))
            .await
            .map_err(|_| hub::Error::Store("opening the store panicked".into()))??;
        hub::Hub::open(config, cosigner, Arc::new(store))?
    };
    let ledger = crate::field::open_hub_ledger(dir, hsm, &settings.hub.ledger_origin)?;
    let served = serve_open(dir, settings, hsm, &hub, &ledger, listener, shutdown).await;
    ledger.close();
    served
}

/// `serve hub` once the hub and its ledger are open.
async fn serve_open(
    dir: &Path,
    settings: &HubSettings,
    hsm: &Hsm,
    hub: &hub::Hub,
    ledger: &custody_ledger::Ledger,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ownership =
        crate::field::start_ownership(dir, hsm, hub, ledger, settings.ownership.to_config())
            .await?;
    let lockouts_dir = dir.join(setup::LOCKOUTS_DIR);
    std::fs::create_dir_all(&lockouts_dir).map_err(|e| Error::io(&lockouts_dir, e))?;
    let lockouts = transport::LockoutTracker::open(
        settings.transport.lockout.clone(),
        &lockouts_dir.join(format!("{HUB_SERVER}.json")),
    )?;
    let guard = Guard::with_lockouts(
        settings.transport.clone(),
        Metrics::global().clone(),
        Arc::new(lockouts),
    );
    let tls = ServerTls::from_files_with_crl(&CredentialPaths::in_dir(
        &dir.join(setup::PKI_DIR),
        HUB_SERVER,
    ))?;
    let mut routes = hub::server::routes_builder(hub, &guard)?;
    if let Some(ownership) = ownership {
        routes.add_service(ownership::service::server(
            Arc::new(ownership),
            guard.limits(),
        ));
    }
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        witness = %hub.witness().verifier_key(),
        "hub serving"
    );
    transport::serve(routes.routes(), listener, tls, guard, shutdown).await?;
    Ok(())
}
