//! `trustline serve ca|ledger|provisioner|all`: the services, each alone or
//! all in one process, every listener behind the transport's TLS 1.3
//! client-certificate layer and role table.
//!
//! Shaped like mini-redis: each `serve_*` takes a bound listener and a
//! shutdown future and returns when the server has drained, so the binary,
//! the demo and the tests run exactly the same code.
//!
//! Alone, the provisioner reaches the CA and the ledger over mTLS with its
//! own client certificate (role `provisioner`); together (`all`) it calls
//! them in-process, and only the provisioner and ledger services listen
//! (the CA has no caller but the provisioner, so it gets no socket).
//!
//! Configuration: `<data>/trustline.toml` (every key optional) with
//! environment overrides — `TRUSTLINE_PROVISIONER_LISTEN`,
//! `TRUSTLINE_CA_LISTEN`, `TRUSTLINE_LEDGER_LISTEN`,
//! `TRUSTLINE_CA_ENDPOINT`, `TRUSTLINE_LEDGER_ENDPOINT`,
//! `TRUSTLINE_VENDOR_ROOTS_DIR`, `TRUSTLINE_CLAIM_TTL_SECS`:
//!
//! ```toml
//! [provisioner]
//! listen = "127.0.0.1:7400"
//! ca_endpoint = "127.0.0.1:7401"       # when the CA runs apart
//! ledger_endpoint = "127.0.0.1:7402"   # when the ledger runs apart
//! vendor_roots_dir = "vendors"         # <name>.pem: one IC-vendor root each
//! claim_ttl_secs = 300
//! [[vendors]]                          # or name them one by one
//! name = "Acme Silicon"
//! root = "/etc/trustline/acme-root.pem"
//! [ca]
//! listen = "127.0.0.1:7401"
//! [ledger]
//! listen = "127.0.0.1:7402"
//! [transport]                          # transport::Limits
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use transport::{Caller, ClientTls, Guard, Limits, MessageLimits, Metrics, Role, ServerTls};
use trustline_proto::v1::certificate_authority_server::CertificateAuthorityServer;
use trustline_proto::v1::custody_ledger_server::CustodyLedgerServer;
use trustline_proto::v1::provisioning_server::ProvisioningServer;

use crate::error::{Error, Result};
use crate::factory::backends::{
    CaApi, DirectLedger, LedgerApi, LocalCa, LocalLedger, RemoteCa, RemoteLedger, RequestIdentity,
};
use crate::factory::service::ProvisioningService;
use crate::factory::vendors::VendorRoot;
use crate::factory::{Factory, FactoryConfig};
use crate::setup;

/// The configuration file inside a data directory.
pub const CONFIG_FILE: &str = "trustline.toml";

/// Everything `trustline serve` reads from `trustline.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The provisioner.
    pub provisioner: ProvisionerConfig,
    /// The CA service.
    pub ca: ListenConfig,
    /// The ledger service.
    pub ledger: ListenConfig,
    /// IC-vendor roots named one by one.
    pub vendors: Vec<VendorConfig>,
    /// Transport limits (message sizes, rates, lockouts).
    pub transport: Limits,
}

/// The provisioner's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionerConfig {
    /// Where it listens.
    pub listen: String,
    /// The CA service, when it runs apart.
    pub ca_endpoint: String,
    /// The ledger service, when it runs apart.
    pub ledger_endpoint: String,
    /// A directory of `<vendor name>.pem` root certificates, relative to the
    /// data directory.
    pub vendor_roots_dir: PathBuf,
    /// How long a claim nonce is valid, in seconds.
    pub claim_ttl_secs: u64,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".into(),
            ca_endpoint: "127.0.0.1:7401".into(),
            ledger_endpoint: "127.0.0.1:7402".into(),
            vendor_roots_dir: PathBuf::from("vendors"),
            claim_ttl_secs: 300,
        }
    }
}

/// A listening service's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Where it listens.
    pub listen: String,
}

/// One IC vendor named in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// The name orders use.
    pub name: String,
    /// Its root certificate (PEM or DER), relative to the data directory.
    pub root: PathBuf,
}

impl Config {
    /// Reads `<data>/trustline.toml` if present, then applies environment
    /// overrides.
    ///
    /// # Errors
    /// [`Error::Config`] for an unreadable or malformed file.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        let mut config: Config = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        } else {
            Config::default()
        };
        if config.ca.listen.is_empty() {
            config.ca.listen = "127.0.0.1:7401".into();
        }
        if config.ledger.listen.is_empty() {
            config.ledger.listen = "127.0.0.1:7402".into();
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("TRUSTLINE_PROVISIONER_LISTEN") {
            config.provisioner.listen = v;
        }
        if let Some(v) = env("TRUSTLINE_CA_LISTEN") {
            config.ca.listen = v;
        }
        if let Some(v) = env("TRUSTLINE_LEDGER_LISTEN") {
            config.ledger.listen = v;
        }
        if let Some(v) = env("TRUSTLINE_CA_ENDPOINT") {
            config.provisioner.ca_endpoint = v;
        }
        if let Some(v) = env("TRUSTLINE_LEDGER_ENDPOINT") {
            config.provisioner.ledger_endpoint = v;
        }
        if let Some(v) = env("TRUSTLINE_VENDOR_ROOTS_DIR") {
            config.provisioner.vendor_roots_dir = PathBuf::from(v);
        }
        if let Some(v) = env("TRUSTLINE_CLAIM_TTL_SECS") {
            config.provisioner.claim_ttl_secs = v
                .parse()
                .map_err(|e| Error::Config(format!("TRUSTLINE_CLAIM_TTL_SECS: {e}")))?;
        }
        Ok(config)
    }

    /// The configured IC-vendor roots: those named in `[[vendors]]` and
    /// every `<name>.pem`/`<name>.der` in the roots directory.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Config`] for unreadable certificates.
    pub fn vendor_roots(&self, data_dir: &Path) -> Result<Vec<VendorRoot>> {
        let mut roots = Vec::new();
        for v in &self.vendors {
            roots.push(VendorRoot {
                name: v.name.clone(),
                certificate: read_der(&data_dir.join(&v.root), "CERTIFICATE")?,
            });
        }
        let dir = data_dir.join(&self.provisioner.vendor_roots_dir);
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pem" | "der")))
                .collect();
            files.sort();
            for path in files {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .ok_or_else(|| Error::Config(format!("{}: not a vendor name", path.display())))?
                    .to_owned();
                roots.push(VendorRoot {
                    name,
                    certificate: read_der(&path, "CERTIFICATE")?,
                });
            }
        }
        Ok(roots)
    }
}

/// Reads a PEM block with `tag` (or raw DER) from `path`.
///
/// # Errors
/// [`Error::Io`] when unreadable, [`Error::Config`] for the wrong PEM block.
pub fn read_der(path: &Path, tag: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    let block = pem::parse(&bytes).map_err(|e| Error::io(path, e))?;
    if block.tag() != tag {
        return Err(Error::Config(format!(
            "{}: expected a {tag} PEM block, found {}",
            path.display(),
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// Writes IC-vendor roots as `<dir>/<name>.pem` (what the provisioner
/// reads from its vendor roots directory).
///
/// # Errors
/// [`Error::Io`].
pub fn write_vendor_roots(dir: &Path, roots: &[(String, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, der) in roots {
        let path = dir.join(format!("{name}.pem"));
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// The provisioner's identity when it calls the CA and the ledger.
pub fn provisioner_caller() -> Caller {
    // Both tokens are valid constants; `Caller::new` only refuses bad tokens.
    Caller::new(Role::Provisioner, setup::HQ, setup::PROVISIONER)
        .unwrap_or_else(|_| unreachable!("constant caller tokens are valid"))
}

/// Builds the factory over the given back ends from a data directory.
///
/// # Errors
/// [`Error::Config`] for a missing order key or bad vendor roots;
/// [`Error::Backend`] when the CA cannot be reached.
pub async fn factory(
    data_dir: &Path,
    config: &Config,
    ledger: Arc<dyn LedgerApi>,
    ca: Arc<dyn CaApi>,
) -> Result<Arc<Factory>> {
    let order_key_path = data_dir
        .join(setup::CA_DIR)
        .join(ca_service::ca::ORDER_KEY_FILE);
    let order_key = read_der(&order_key_path, "PUBLIC KEY")?;
    let roots = config.vendor_roots(data_dir)?;
    if roots.is_empty() {
        tracing::warn!(
            "no IC-vendor roots configured: every device will be refused as counterfeit"
        );
    }
    let mut factory_config = FactoryConfig::new(order_key, roots);
    factory_config.claim_ttl = Duration::from_secs(config.provisioner.claim_ttl_secs.max(1));
    Ok(Arc::new(Factory::start(factory_config, ledger, ca).await?))
}

/// The guard of one server process. Its lockouts persist in
/// `<data>/lockouts/<server>.json`, so restarting a server does not clear a
/// station locked out for repeated refusals (2.4.14.21): only an admin's
/// `ClearLockout` does. One file per server, since `serve ca|ledger|provisioner`
/// may run as separate processes over one data directory.
fn guard(data_dir: &Path, config: &Config, server: &str) -> Result<Guard> {
    let dir = data_dir.join(setup::LOCKOUTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("{server}.json"));
    let lockouts = transport::LockoutTracker::open(config.transport.lockout.clone(), &path)
        .map_err(|e| Error::Config(format!("lockout state {}: {e}", path.display())))?;
    let count = lockouts.count();
    if count > 0 {
        tracing::warn!(count, path = %path.display(), "callers still locked out from an earlier run");
    }
    Ok(Guard::with_lockouts(
        config.transport.clone(),
        Metrics::global().clone(),
        Arc::new(lockouts),
    ))
}

fn server_tls(data_dir: &Path, name: &str) -> Result<ServerTls> {
    ServerTls::from_files(&setup::credentials(data_dir, name))
        .map_err(|e| Error::Config(format!("server credentials {name:?} (run `trustline serve all --init` or `trustline pki issue`): {e}")))
}

async fn run_server(
    routes: tonic::service::RoutesBuilder,
    listener: TcpListener,
    tls: ServerTls,
    guard: Guard,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    transport::serve(routes.routes(), listener, tls, guard, shutdown)
        .await
        .map_err(|e| Error::Config(format!("server: {e}")))
}

/// Opens the CA of a data directory on `hsm`.
///
/// # Errors
/// [`Error::Config`] when the CA is missing or does not match the HSM.
pub fn open_ca(data_dir: &Path, hsm: ca_service::Hsm) -> Result<Arc<ca_service::Ca>> {
    ca_service::Ca::open(
        hsm,
        &data_dir.join(setup::CA_DIR),
        &ca_service::keys::KeyLabels::default(),
    )
    .map(Arc::new)
    .map_err(|e| Error::Config(format!("opening the CA: {e}")))
}

/// Serves the CA alone.
///
/// # Errors
/// As [`open_ca`]; server start-up failures.
pub async fn serve_ca(
    data_dir: &Path,
    config: &Config,
    hsm: ca_service::Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ca = open_ca(data_dir, hsm)?;
    let guard = guard(data_dir, config, setup::CA_SERVER)?;
    let (mut routes, _health) =
        transport::operational_routes(&guard).map_err(|e| Error::Config(e.to_string()))?;
    routes.add_service(
        CertificateAuthorityServer::new(ca_service::CaService::new(ca))
            .with_message_limits(guard.limits()),
    );
    run_server(
        routes,
        listener,
        server_tls(data_dir, setup::CA_SERVER)?,
        guard,
        shutdown,
    )
    .await
}

/// Serves the provisioner alone, reaching the CA and the ledger over mTLS.
///
/// # Errors
/// Credential, connection and start-up failures.
pub async fn serve_provisioner(
    data_dir: &Path,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let client = ClientTls::from_files(&setup::credentials(data_dir, setup::PROVISIONER))
        .map_err(|e| Error::Config(format!("provisioner client credentials: {e}")))?;
    let ca_channel = client
        .connect(&config.provisioner.ca_endpoint)
        .await
        .map_err(|e| Error::Config(format!("connecting to the CA: {e}")))?;
    let ledger_channel = client
        .connect(&config.provisioner.ledger_endpoint)
        .await
        .map_err(|e| Error::Config(format!("connecting to the ledger: {e}")))?;
    let ownership = crate::ownership::Ownership::start(
        crate::ownership::OwnershipConfig::default(),
        crate::ownership::OwnershipBackends::remote(ledger_channel.clone(), ca_channel.clone()),
    )
    .await?;
    let factory = factory(
        data_dir,
        config,
        Arc::new(RemoteLedger::new(ledger_channel)),
        Arc::new(RemoteCa::new(ca_channel)),
    )
    .await?;
    let guard = guard(data_dir, config, setup::PROVISIONER)?;
    let (mut routes, _health) =
        transport::operational_routes(&guard).map_err(|e| Error::Config(e.to_string()))?;
    routes.add_service(
        ProvisioningServer::new(ProvisioningService::new(factory))
            .with_message_limits(guard.limits()),
    );
    routes.add_service(crate::ownership::service::server(
        Arc::new(ownership),
        guard.limits(),
    ));
    run_server(
        routes,
        listener,
        server_tls(data_dir, setup::PROVISIONER)?,
        guard,
        shutdown,
    )
    .await
}

/// Binds `addr`.
///
/// # Errors
/// [`Error::Config`] naming the address.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))
}

/// The in-process CA back end over an open CA.
pub fn local_ca(ca: Arc<ca_service::Ca>) -> Arc<dyn CaApi> {
    Arc::new(LocalCa::new(
        Arc::new(ca_service::CaService::new(ca)),
        RequestIdentity::new(provisioner_caller()),
    ))
}

/// The in-process ledger back end over a ledger service.
pub fn local_ledger<S: trustline_proto::v1::custody_ledger_server::CustodyLedger>(
    service: Arc<S>,
) -> Arc<dyn LedgerApi> {
    Arc::new(LocalLedger::new(
        service,
        RequestIdentity::new(provisioner_caller()),
    ))
}

/// Routes of the provisioner (and, in `all`, the ledger) on one listener.
fn provisioning_routes(
    guard: &Guard,
    factory: Arc<Factory>,
) -> Result<tonic::service::RoutesBuilder> {
    let (mut routes, _health) =
        transport::operational_routes(guard).map_err(|e| Error::Config(e.to_string()))?;
    routes.add_service(
        ProvisioningServer::new(ProvisioningService::new(factory))
            .with_message_limits(guard.limits()),
    );
    Ok(routes)
}

/// Opens the ledger of a data directory, its checkpoints signed by the
/// ledger key on `hsm`.
///
/// # Errors
/// [`Error::Config`] when the key or the ledger cannot be opened.
pub fn open_ledger(data_dir: &Path, hsm: &ca_service::Hsm) -> Result<custody_ledger::Ledger> {
    let signer = hsm
        .signer(ca_service::keys::LEDGER_CHECKPOINT)
        .map_err(|e| {
            Error::Config(format!(
                "the ledger checkpoint key (run `trustline ca init`): {e}"
            ))
        })?;
    let config = custody_ledger::LedgerConfig::new(data_dir.join(setup::LEDGER_DIR));
    custody_ledger::Ledger::open(config, Arc::new(signer))
        .map_err(|e| Error::Config(format!("opening the ledger: {e}")))
}

/// Closes the ledger: a last checkpoint, threads stopped, index synced.
fn close_ledger(ledger: custody_ledger::Ledger) {
    ledger.close();
}

/// Serves the ledger alone.
///
/// # Errors
/// As [`open_ledger`]; server start-up failures.
pub async fn serve_ledger(
    data_dir: &Path,
    config: &Config,
    hsm: &ca_service::Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ledger = open_ledger(data_dir, hsm)?;
    let guard = guard(data_dir, config, setup::LEDGER_SERVER)?;
    let (mut routes, _health) =
        transport::operational_routes(&guard).map_err(|e| Error::Config(e.to_string()))?;
    routes.add_service(
        CustodyLedgerServer::new(custody_ledger::service::LedgerService::new(ledger.clone()))
            .with_message_limits(guard.limits()),
    );
    let served = run_server(
        routes,
        listener,
        server_tls(data_dir, setup::LEDGER_SERVER)?,
        guard,
        shutdown,
    )
    .await;
    close_ledger(ledger);
    served
}

/// Serves everything in one process: the provisioner calls the CA and the
/// ledger in-process; the provisioner and the ledger (for auditors) listen
/// on `listener`.
///
/// # Errors
/// As [`open_ca`], [`open_ledger`] and [`factory`]; server failures.
pub async fn serve_all(
    data_dir: &Path,
    config: &Config,
    hsm: ca_service::Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ledger = open_ledger(data_dir, &hsm)?;
    let served = async {
        let ca = open_ca(data_dir, hsm)?;
        let ownership = crate::ownership::Ownership::start(
            crate::ownership::OwnershipConfig::default(),
            crate::ownership::OwnershipBackends::direct(&ledger, ca.clone(), provisioner_caller()),
        )
        .await?;
        let factory = factory(
            data_dir,
            config,
            Arc::new(DirectLedger::new(ledger.clone())),
            local_ca(ca),
        )
        .await?;
        let guard = guard(data_dir, config, setup::ALL_SERVER)?;
        let mut routes = provisioning_routes(&guard, factory)?;
        routes.add_service(crate::ownership::service::server(
            Arc::new(ownership),
            guard.limits(),
        ));
        routes.add_service(
            CustodyLedgerServer::new(custody_ledger::service::LedgerService::new(ledger.clone()))
                .with_message_limits(guard.limits()),
        );
        run_server(
            routes,
            listener,
            server_tls(data_dir, setup::PROVISIONER)?,
            guard,
            shutdown,
        )
        .await
    }
    .await;
    close_ledger(ledger);
    served
}
