//! `trustline serve ca|ledger|provisioner|site|all`: the services, each
//! alone or all in one process, every listener behind the transport's TLS
//! 1.3 client-certificate layer, the service CA's CRL (reloaded on change)
//! and role table.
//!
//! Tokens (issue 12.6, issue 13): the CA opens the CA token, the ledger the
//! ledger's own token (the checkpoint key alone, `ca_service::ledger_key`);
//! `serve ledger` logs into the ledger token only. `serve site` runs the
//! three services in one process on an enrolled site (the two-domain
//! layout): it refuses a CA token that holds any private key but the site
//! intermediates, and its guard accepts site-bound callers of its own site
//! only, and serves no `Ownership` (the site holds no OEM voucher key:
//! field life is the hub's, issue 13 item 4). `serve all` is the
//! single-box variant — the same wiring on a data
//! directory that keeps every key in one place (laptops, the demo); on an
//! enrolled site directory it is `serve site`.
//!
//! Shaped like mini-redis: each `serve_*` takes a bound listener and a
//! shutdown future and returns when the server has drained, so the binary,
//! the demo and the tests run exactly the same code.
//!
//! Alone, the provisioner reaches the CA and the ledger over mTLS with its
//! own client certificate (role `provisioner`); together (`all`) it calls
//! them in-process — through the same role table — and only the
//! provisioner and ledger services listen (the CA has no caller but the
//! provisioner, so it gets no socket).
//!
//! The ledger is the file engine in `<data>/ledger` unless `[ledger]
//! database` (or `--ledger postgres://…`) names a PostgreSQL database
//! (issue 14): then [`SiteLedger::Postgres`] serves the same services
//! (the hub uplink runs on either).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backends::{
    layout, CaApi, DirectLedger, LedgerApi, LocalCa, LocalCrl, LocalLedger, LocalLedgerReads,
    RemoteCa, RemoteCrl, RemoteLedger, RemoteLedgerReads, RequestIdentity,
};
use ownership::{Ownership, OwnershipBackends};
use provisioner::{ClaimKey, Factory, FactoryConfig};
use tokio::net::TcpListener;
use transport::{Caller, ClientTls, Guard, MessageLimits, Metrics, Role, ServerTls};
use trustline_proto::v1::certificate_authority_server::CertificateAuthorityServer;
use trustline_proto::v1::custody_ledger_server::CustodyLedgerServer;

use crate::config::{read_der, Config};
use crate::error::{Error, Result};
use crate::setup;

/// The provisioner's identity when it calls the CA and the ledger.
pub fn provisioner_caller() -> Caller {
    // Both tokens are valid constants; `Caller::new` only refuses bad tokens.
    Caller::new(Role::Provisioner, setup::HQ, setup::PROVISIONER)
        .unwrap_or_else(|_| unreachable!("constant caller tokens are valid"))
}

/// The ownership service's back ends over (mTLS) channels to the ledger and
/// the CA services.
pub fn remote_ownership_backends(
    ledger: tonic::transport::Channel,
    ca: tonic::transport::Channel,
) -> OwnershipBackends {
    OwnershipBackends {
        ledger: Arc::new(RemoteLedger::new(ledger.clone())),
        reads: Arc::new(RemoteLedgerReads::new(ledger)),
        ca: Arc::new(RemoteCa::new(ca.clone())),
        crl: Arc::new(RemoteCrl::new(ca)),
        registry: None,
    }
}

/// The ownership service's back ends in `trustline serve all`: the ledger
/// opened in this process and the CA, called as the provisioner (through
/// the role table).
pub fn direct_ownership_backends(
    ledger: &custody_ledger::Ledger,
    ca: Arc<ca_service::Ca>,
) -> OwnershipBackends {
    direct_ownership_backends_on(Arc::new(ledger.clone()), ca)
}

/// [`direct_ownership_backends`] over any ledger engine.
pub fn direct_ownership_backends_on(
    ledger: Arc<dyn custody_ledger::LedgerEngine>,
    ca: Arc<ca_service::Ca>,
) -> OwnershipBackends {
    let identity = RequestIdentity::new(provisioner_caller());
    let ca_service = Arc::new(ca_service::CaService::new(ca));
    let ledger_service = Arc::new(custody_ledger::service::LedgerService::with_engine(
        ledger.clone(),
    ));
    OwnershipBackends {
        ledger: Arc::new(DirectLedger::with_engine(ledger)),
        reads: Arc::new(LocalLedgerReads::new(ledger_service, identity.clone())),
        ca: Arc::new(LocalCa::new(ca_service.clone(), identity.clone())),
        crl: Arc::new(LocalCrl::new(ca_service, identity)),
        registry: None,
    }
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
    allowance: Option<Arc<dyn provisioner::Allowance>>,
) -> Result<Arc<Factory>> {
    let order_key_path = data_dir
        .join(layout::CA_DIR)
        .join(ca_service::ca::ORDER_KEY_FILE);
    let order_key = read_der(&order_key_path, "PUBLIC KEY")?;
    let roots = config.vendor_roots(data_dir)?;
    if roots.is_empty() {
        tracing::warn!(
            "no IC-vendor roots configured: every device will be refused as counterfeit"
        );
    }
    let mut factory_config = FactoryConfig::new(order_key, roots, claim_key(data_dir)?);
    factory_config.claim_ttl = Duration::from_secs(config.provisioner.claim_ttl_secs.max(1));
    factory_config.allowance = allowance;
    factory_config.site = config.site.name.clone();
    Ok(Arc::new(Factory::start(factory_config, ledger, ca).await?))
}

/// The site's claim key, `<data>/claim.key` (32 random bytes, mode 0600),
/// made on first start: every provisioner of the site reads the same file,
/// so a claim begun before a restart, or at another replica, completes
/// (`provisioner::nonce`). Made atomically — written to a temporary file,
/// then linked into place only if no other process got there first.
///
/// # Errors
/// [`Error::Io`] when it cannot be read or made; [`Error::Config`] for a
/// file that is not 32 bytes.
pub fn claim_key(data_dir: &Path) -> Result<ClaimKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(layout::CLAIM_KEY_FILE);
    if !path.exists() {
        let secret = ClaimKey::fresh_secret()?;
        let tmp = data_dir.join(format!(
            "{}.tmp-{}",
            layout::CLAIM_KEY_FILE,
            std::process::id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(&secret)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => std::fs::File::open(data_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(data_dir, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    let secret = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    ClaimKey::from_bytes(&secret).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// The guard of one server process. Its lockouts persist in
/// `<data>/lockouts/<server>.json`, so restarting a server does not clear a
/// station locked out for repeated refusals (2.4.14.21): only an admin's
/// `ClearLockout` does. One file per server, since `serve ca|ledger|provisioner`
/// may run as separate processes over one data directory. On an enrolled
/// site (`[site] name`) it is pinned to that site.
fn guard(data_dir: &Path, config: &Config, server: &str) -> Result<Guard> {
    let dir = data_dir.join(layout::LOCKOUTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("{server}.json"));
    let lockouts = transport::LockoutTracker::open(config.transport.lockout.clone(), &path)
        .map_err(|e| Error::Config(format!("lockout state {}: {e}", path.display())))?;
    let count = lockouts.count();
    if count > 0 {
        tracing::warn!(count, path = %path.display(), "callers still locked out from an earlier run");
    }
    let (limits, metrics, lockouts) = (
        config.transport.clone(),
        Metrics::global().clone(),
        Arc::new(lockouts),
    );
    Ok(match &config.site.name {
        Some(site) => Guard::pinned_to_site(limits, metrics, lockouts, site),
        None => Guard::with_lockouts(limits, metrics, lockouts),
    })
}

/// A server's TLS: its credentials and the service CA's CRL
/// (`<data>/pki/crl.pem`, required, reloaded when it changes).
fn server_tls(data_dir: &Path, name: &str) -> Result<ServerTls> {
    ServerTls::from_files_with_crl(&setup::credentials(data_dir, name))
        .map_err(|e| Error::Config(format!("server credentials {name:?} and the CRL (run `trustline serve all --init`, `trustline pki issue --server` or `trustline site install`): {e}")))
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
        &data_dir.join(layout::CA_DIR),
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
    if config.site.name.is_some() {
        check_site_token(&hsm)?;
    }
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
    // An enrolled site holds no OEM voucher key: field life is the hub's
    // (issue 13 item 4), so the site serves no `Ownership`.
    let ownership = if config.site.name.is_some() {
        None
    } else {
        Some(
            Ownership::start(
                config.ownership.to_config(),
                remote_ownership_backends(ledger_channel.clone(), ca_channel.clone()),
            )
            .await?,
        )
    };
    let allowance = config.uplink.as_ref().map(|_| {
        Arc::new(crate::uplink::RemoteAllowance::new(ledger_channel.clone()))
            as Arc<dyn provisioner::Allowance>
    });
    let factory = factory(
        data_dir,
        config,
        Arc::new(RemoteLedger::new(ledger_channel)),
        Arc::new(RemoteCa::new(ca_channel)),
        allowance,
    )
    .await?;
    let guard = guard(data_dir, config, setup::PROVISIONER)?;
    let (mut routes, _health) =
        transport::operational_routes(&guard).map_err(|e| Error::Config(e.to_string()))?;
    routes.add_service(provisioner::service::server(factory, guard.limits()));
    if let Some(ownership) = ownership {
        routes.add_service(ownership::service::server(
            Arc::new(ownership),
            guard.limits(),
        ));
    }
    run_server(
        routes,
        listener,
        server_tls(data_dir, setup::PROVISIONER_SERVER)?,
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
    routes.add_service(provisioner::service::server(factory, guard.limits()));
    Ok(routes)
}

/// Opens the ledger of a data directory, its checkpoints signed by the
/// checkpoint key on the ledger's own token `ledger_hsm` — which must hold
/// no other private key (`ca_service::ledger_key::open`) and match
/// `<data>/ledger/ledger-key.pub.pem` — under the configured origin.
///
/// # Errors
/// [`Error::Config`] when the key or the ledger cannot be opened.
pub fn open_ledger(
    data_dir: &Path,
    config: &Config,
    ledger_hsm: &ca_service::Hsm,
) -> Result<custody_ledger::Ledger> {
    let signer = ca_service::ledger_key::open(ledger_hsm, ca_service::keys::LEDGER_CHECKPOINT)
        .map_err(|e| {
            Error::Config(format!(
                "the ledger checkpoint key on the ledger token (`trustline ca init` or `trustline site init` makes it): {e}"
            ))
        })?;
    setup::check_ledger_key_file(&data_dir.join(layout::LEDGER_KEY_FILE), &signer)?;
    let mut ledger_config = custody_ledger::LedgerConfig::new(data_dir.join(layout::LEDGER_DIR));
    ledger_config.origin = config.ledger.origin.clone();
    custody_ledger::Ledger::open(ledger_config, Arc::new(signer))
        .map_err(|e| Error::Config(format!("opening the ledger: {e}")))
}

/// The ledger a site serves.
#[derive(Debug, Clone)]
pub enum SiteLedger {
    /// Segment files in `<data>/ledger` (the default).
    Files(custody_ledger::Ledger),
    /// A PostgreSQL database (`[ledger] database`).
    Postgres(pg_store::PgLedger),
}

impl SiteLedger {
    /// The engine behind the services.
    pub fn engine(&self) -> Arc<dyn custody_ledger::LedgerEngine> {
        match self {
            SiteLedger::Files(l) => Arc::new(l.clone()),
            SiteLedger::Postgres(l) => Arc::new(l.clone()),
        }
    }

    /// Closes it: a last checkpoint, then the files' threads stopped and
    /// index synced, or the database lease given up.
    pub async fn close(self) {
        match self {
            SiteLedger::Files(l) => l.close(),
            SiteLedger::Postgres(l) => l.close().await,
        }
    }

    /// Starts the hub uplink when one is configured, on either engine. Its
    /// cosignatures are kept in `<data>/ledger/` on both: beside the
    /// segment files, or alone there when the entries are in PostgreSQL
    /// (one uplink per site: the hub's ingest is idempotent, but each
    /// process counts its offline allowance from its own uplink).
    async fn uplink(
        &self,
        data_dir: &Path,
        config: &Config,
    ) -> Result<Option<crate::uplink::Handle>> {
        let ledger = match self {
            SiteLedger::Files(l) => crate::uplink::UplinkLedger::from(l.clone()),
            SiteLedger::Postgres(_) => {
                crate::uplink::UplinkLedger::new(self.engine(), data_dir.join(layout::LEDGER_DIR))
            }
        };
        crate::uplink::start(data_dir, config, ledger).await
    }
}

/// Opens the site's ledger: PostgreSQL when `config.ledger.database` is
/// set, else the files of the data directory; checkpoints signed by the
/// ledger key on the ledger token either way.
///
/// # Errors
/// [`Error::Config`] when the key or the ledger cannot be opened.
pub async fn open_site_ledger(
    data_dir: &Path,
    config: &Config,
    ledger_hsm: &ca_service::Hsm,
) -> Result<SiteLedger> {
    let url = config.ledger.database.trim();
    if url.is_empty() {
        return open_ledger(data_dir, config, ledger_hsm).map(SiteLedger::Files);
    }
    if !pg_store::is_postgres_url(url) {
        return Err(Error::Config(format!(
            "[ledger] database must be a postgres:// URL, not {}",
            pg_store::db::redact(url)
        )));
    }
    let signer = ca_service::ledger_key::open(ledger_hsm, ca_service::keys::LEDGER_CHECKPOINT)
        .map_err(|e| {
            Error::Config(format!(
                "the ledger checkpoint key on the ledger token (`trustline ca init` or `trustline site init` makes it): {e}"
            ))
        })?;
    setup::check_ledger_key_file(&data_dir.join(layout::LEDGER_KEY_FILE), &signer)?;
    let mut pg = pg_store::PgLedgerConfig::new(url);
    pg.origin = config.ledger.origin.clone();
    pg.pipeline_depth = config.ledger.database_pipeline_depth;
    pg_store::PgLedger::open(pg, Arc::new(signer))
        .await
        .map(SiteLedger::Postgres)
        .map_err(|e| Error::Config(format!("opening the ledger in postgresql: {e}")))
}

/// Serves the ledger alone, logged into the ledger's token only.
///
/// # Errors
/// As [`open_ledger`]; server start-up failures.
pub async fn serve_ledger(
    data_dir: &Path,
    config: &Config,
    ledger_hsm: &ca_service::Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ledger = open_site_ledger(data_dir, config, ledger_hsm).await?;
    let uplink = ledger.uplink(data_dir, config).await?;
    let served = async {
        let guard = guard(data_dir, config, setup::LEDGER_SERVER)?;
        let (mut routes, _health) =
            transport::operational_routes(&guard).map_err(|e| Error::Config(e.to_string()))?;
        routes.add_service(
            CustodyLedgerServer::new(custody_ledger::service::LedgerService::with_engine(
                ledger.engine(),
            ))
            .with_message_limits(guard.limits()),
        );
        if let Some(u) = &uplink {
            routes.add_service(u.service().server(guard.limits()));
        }
        run_server(
            routes,
            listener,
            server_tls(data_dir, setup::LEDGER_SERVER)?,
            guard,
            shutdown,
        )
        .await
    }
    .await;
    if let Some(u) = uplink {
        u.stop().await;
    }
    ledger.close().await;
    served
}

/// Which layout a data directory is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every key in one place (`serve all --init`: laptops, the demo).
    SingleBox,
    /// An enrolled site (`trustline site init` / `site install`): the CA
    /// token holds the site intermediates only.
    Site,
}

/// Refuses a site whose CA token holds a private key other than its site
/// intermediates (the OEM's root, order, voucher and service CA keys are
/// the hub's, issue 13).
///
/// # Errors
/// [`Error::Config`] naming the keys.
pub fn check_site_token(hsm: &ca_service::Hsm) -> Result<()> {
    let base = ca_service::keys::SITE_INTERMEDIATE;
    let mut foreign: Vec<String> = hsm
        .private_keys()
        .map_err(|e| Error::Config(format!("listing the site token's keys: {e}")))?
        .into_iter()
        .filter(|k| k.token)
        .map(|k| k.label)
        .filter(|label| !is_intermediate_label(label, base))
        .collect();
    foreign.sort();
    foreign.dedup();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the site's CA token {:?} holds {foreign:?}: a site keeps only its intermediate \
         (the OEM's keys stay at the hub); serve this directory with `serve all` if it is a \
         single-box layout",
        hsm.token_label()
    )))
}

/// Whether `label` is a site intermediate generation's: `base` or
/// `base-g<n>` (`ca_service::keys::KeyLabels::intermediate_label`).
fn is_intermediate_label(label: &str, base: &str) -> bool {
    match label.strip_prefix(base) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix("-g")
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Serves everything in one process: the provisioner calls the CA and the
/// ledger in-process; the provisioner and the ledger (for auditors) listen
/// on `listener`. The CA opens `ca_hsm`, the ledger `ledger_hsm`. On an
/// enrolled site directory (`[site] name`) this is [`serve_site`].
///
/// # Errors
/// As [`open_ca`], [`open_ledger`] and [`factory`]; server failures.
pub async fn serve_all(
    data_dir: &Path,
    config: &Config,
    ca_hsm: ca_service::Hsm,
    ledger_hsm: ca_service::Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let layout = if config.site.name.is_some() {
        Layout::Site
    } else {
        Layout::SingleBox
    };
    serve_in_one_process(
        data_dir, config, ca_hsm, ledger_hsm, layout, listener, shutdown,
    )
    .await
}

/// Serves an enrolled site: as [`serve_all`], after checking that the data
/// directory is a site's (`[site] name`) and its CA token holds no OEM key
/// ([`check_site_token`]); the guard accepts site-bound callers of this
/// site only.
///
/// # Errors
/// [`Error::Config`] for a directory that is not an enrolled site or a
/// token with OEM keys; then as [`serve_all`].
pub async fn serve_site(
    data_dir: &Path,
    config: &Config,
    ca_hsm: ca_service::Hsm,
    ledger_hsm: ca_service::Hsm,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if config.site.name.is_none() {
        return Err(Error::Config(format!(
            "{} is not an enrolled site (no [site] name in trustline.toml): run `trustline site \
             init` and `trustline site install`, or `serve all` for the single-box layout",
            data_dir.display()
        )));
    }
    serve_in_one_process(
        data_dir,
        config,
        ca_hsm,
        ledger_hsm,
        Layout::Site,
        listener,
        shutdown,
    )
    .await
}

async fn serve_in_one_process(
    data_dir: &Path,
    config: &Config,
    ca_hsm: ca_service::Hsm,
    ledger_hsm: ca_service::Hsm,
    layout: Layout,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if layout == Layout::Site {
        check_site_token(&ca_hsm)?;
    }
    let ledger = open_site_ledger(data_dir, config, &ledger_hsm).await?;
    let uplink = ledger.uplink(data_dir, config).await?;
    let served = async {
        let ca = open_ca(data_dir, ca_hsm)?;
        // The site layout holds no OEM voucher key: the `Ownership`
        // service runs at the hub (issue 13 item 4), never at a site.
        let ownership = match layout {
            Layout::SingleBox => Some(
                Ownership::start(
                    config.ownership.to_config(),
                    direct_ownership_backends_on(ledger.engine(), ca.clone()),
                )
                .await?,
            ),
            Layout::Site => None,
        };
        let factory = factory(
            data_dir,
            config,
            Arc::new(DirectLedger::with_engine(ledger.engine())),
            local_ca(ca),
            uplink.as_ref().map(crate::uplink::Handle::allowance),
        )
        .await?;
        let guard = guard(data_dir, config, setup::ALL_SERVER)?;
        let mut routes = provisioning_routes(&guard, factory)?;
        if let Some(ownership) = ownership {
            routes.add_service(ownership::service::server(
                Arc::new(ownership),
                guard.limits(),
            ));
        }
        routes.add_service(
            CustodyLedgerServer::new(custody_ledger::service::LedgerService::with_engine(
                ledger.engine(),
            ))
            .with_message_limits(guard.limits()),
        );
        if let Some(u) = &uplink {
            routes.add_service(u.service().server(guard.limits()));
        }
        run_server(
            routes,
            listener,
            server_tls(data_dir, setup::PROVISIONER_SERVER)?,
            guard,
            shutdown,
        )
        .await
    }
    .await;
    if let Some(u) = uplink {
        u.stop().await;
    }
    ledger.close().await;
    served
}

#[cfg(test)]
mod tests {
    use super::is_intermediate_label;

    #[test]
    fn only_intermediate_generations_count_as_the_sites_keys() {
        let base = ca_service::keys::SITE_INTERMEDIATE;
        for ok in [base.to_owned(), format!("{base}-g2"), format!("{base}-g17")] {
            assert!(is_intermediate_label(&ok, base), "{ok}");
        }
        for other in [
            format!("{base}x"),
            format!("{base}-g"),
            format!("{base}-g2x"),
            ca_service::keys::OEM_ROOT.to_owned(),
            ca_service::keys::SERVICE_CA.to_owned(),
        ] {
            assert!(!is_intermediate_label(&other, base), "{other}");
        }
    }
}
