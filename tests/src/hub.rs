//! An OEM hub for the end-to-end tests (issue 13): `hub::server::run` in
//! this process over TLS 1.3 with client certificates from a service PKI
//! of its own (the hub's trust domain, apart from the site's), a software
//! witness key that survives restarts, and its embedded store behind a
//! [`Gate`] that can hold an ingest commit — so a test can stop the site or
//! the hub while a sync is in flight, at a moment it chose rather than
//! one it guessed.
//!
//! Restarting reopens the store from disk on the same port; "crashing"
//! fails the held commit (as if the process died before it), then
//! restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::Context;
use hub::model::{CloneRecord, DeviceRecord, ForkRecord, OrderSiteRow, SiteCounts, SiteRow};
use hub::store::{DeviceQuery, HubStore, IngestBatch, Prior, Probe};
use hub::{Cosigner, EmbeddedStore, Hub, HubConfig, SiteConfig, SoftwareWitnessSigner};
use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{Caller, Guard, Metrics, Role, ServerTls};

/// The witness's key name in tests.
pub const WITNESS: &str = "oem.example/hub-witness";

/// Holds the store's ingest commits on request.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    held: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Commits done so far.
    commits: u64,
    /// Hold the commit after this many.
    hold_after: Option<u64>,
    /// The held commit's fate: `Some(true)` fails it (a crash before it).
    verdict: Option<bool>,
}

impl Gate {
    /// Holds the next commit after `more` further commits.
    pub fn hold_after(&self, more: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.hold_after = Some(s.commits + more);
        s.verdict = None;
    }

    /// Waits until a commit is being held.
    pub async fn wait_held(&self) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }

    /// Lets the held commit through (`fail`: refuses it, nothing written).
    pub fn release(&self, fail: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.verdict = Some(fail);
        s.hold_after = None;
        self.changed.notify_all();
    }

    /// Ingest commits done.
    pub fn commits(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).commits
    }

    fn before_commit(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.hold_after == Some(s.commits) {
            self.held.send_replace(true);
            while s.verdict.is_none() {
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            self.held.send_replace(false);
            if s.verdict.take() == Some(true) {
                return false;
            }
        }
        true
    }

    fn committed(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).commits += 1;
    }
}

/// The embedded store with a [`Gate`] before each ingest commit.
#[derive(Debug)]
pub struct GatedStore {
    inner: EmbeddedStore,
    gate: Arc<Gate>,
}

impl HubStore for GatedStore {
    fn site(&self, site: &str) -> hub::Result<SiteRow> {
        self.inner.site(site)
    }
    fn prior(&self, site: &str, probe: &Probe) -> hub::Result<Prior> {
        self.inner.prior(site, probe)
    }
    fn node(&self, site: &str, level: u8, index: u64) -> hub::Result<Option<custody_ledger::Hash>> {
        self.inner.node(site, level, index)
    }
    fn entries(&self, site: &str, start: u64, end: u64) -> hub::Result<Vec<Vec<u8>>> {
        self.inner.entries(site, start, end)
    }
    fn commit_ingest(&self, batch: &IngestBatch) -> hub::Result<()> {
        if !self.gate.before_commit() {
            return Err(hub::Error::Store(
                "the hub died before this commit (simulated)".into(),
            ));
        }
        self.inner.commit_ingest(batch)?;
        self.gate.committed();
        Ok(())
    }
    fn commit_cosigned(
        &self,
        site: &str,
        expected_size: u64,
        cosigned: &hub::model::Cosigned,
    ) -> hub::Result<()> {
        self.inner.commit_cosigned(site, expected_size, cosigned)
    }
    fn record_fork(&self, fork: &ForkRecord) -> hub::Result<ForkRecord> {
        self.inner.record_fork(fork)
    }
    fn device_entries(&self, site: &str, rot_id: &str) -> hub::Result<Vec<u64>> {
        self.inner.device_entries(site, rot_id)
    }
    fn devices(&self, query: &DeviceQuery) -> hub::Result<Vec<DeviceRecord>> {
        self.inner.devices(query)
    }
    fn site_counts(&self, site: &str) -> hub::Result<SiteCounts> {
        self.inner.site_counts(site)
    }
    fn order_rows(&self, order_id: Option<&str>) -> hub::Result<Vec<OrderSiteRow>> {
        self.inner.order_rows(order_id)
    }
    fn forks(&self, site: Option<&str>) -> hub::Result<Vec<ForkRecord>> {
        self.inner.forks(site)
    }
    fn clones(&self) -> hub::Result<Vec<CloneRecord>> {
        self.inner.clones()
    }
}

/// A running server: its stop signal and its task.
type Running = (
    oneshot::Sender<()>,
    JoinHandle<Result<(), transport::Error>>,
);

/// A hub on loopback.
pub struct HubServer {
    /// Its store directory.
    pub dir: PathBuf,
    /// Where it listens (the same across restarts).
    pub addr: SocketAddr,
    /// The gate before its ingest commits.
    pub gate: Arc<Gate>,
    ca_cert: CertificateDer<'static>,
    ca_key: KeyPair,
    witness_pkcs8: Vec<u8>,
    sites: Vec<SiteConfig>,
    hub: Option<Hub>,
    server: Option<Running>,
}

impl HubServer {
    /// A hub with its own PKI and witness key, its store in `dir`, its
    /// port chosen now (it listens from [`HubServer::start`]).
    ///
    /// # Errors
    /// Key, certificate or socket failures.
    pub fn prepare(dir: &Path) -> anyhow::Result<Self> {
        transport::install_crypto_provider();
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let ca_cert = pki::service_ca_certificate(
            &ca_key,
            "Test hub service CA",
            Validity::days_from_now(2),
        )?;
        let witness_pkcs8 = witness_pkcs8()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            addr,
            gate: Arc::new(Gate::default()),
            ca_cert,
            ca_key,
            witness_pkcs8,
            sites: Vec::new(),
            hub: None,
            server: None,
        })
    }

    /// The witness.
    ///
    /// # Errors
    /// Never for the key made in [`HubServer::prepare`].
    pub fn cosigner(&self) -> anyhow::Result<Cosigner> {
        Ok(Cosigner::new(
            WITNESS,
            Box::new(SoftwareWitnessSigner::from_pkcs8(&self.witness_pkcs8)?),
        )?)
    }

    /// The `[uplink]` settings of `site` towards this hub, with quick
    /// retries for tests.
    ///
    /// # Errors
    /// As [`HubServer::cosigner`].
    pub fn uplink_config(&self, site: &str) -> anyhow::Result<site::uplink::UplinkConfig> {
        Ok(site::uplink::UplinkConfig {
            hub: self.addr.to_string(),
            site: site.to_owned(),
            witness_key: self.cosigner()?.verifier_key(),
            retry_min_ms: 20,
            retry_max_ms: 200,
            ..site::uplink::UplinkConfig::default()
        })
    }

    /// Writes the uplink's client credentials (role `site`, issued by this
    /// hub's service CA) where `config` says, inside `data_dir`.
    ///
    /// # Errors
    /// Issuance or I/O failures.
    pub fn write_uplink_credentials(
        &self,
        data_dir: &Path,
        config: &site::uplink::UplinkConfig,
    ) -> anyhow::Result<()> {
        let caller = Caller::new(Role::Site, &config.site, "uplink")?;
        let issued = pki::issue_with_new_key(
            &self.ca_cert,
            &self.ca_key,
            &LeafParams {
                caller,
                kind: CertificateKind::Client,
                validity: Validity::days_from_now(2),
            },
        )?;
        pki::write_credentials(
            &data_dir.join(&config.credentials_dir),
            &config.credential_name,
            &issued,
            &self.ca_cert,
        )?;
        Ok(())
    }

    /// Configures a site (before [`HubServer::start`]) from its data
    /// directory's ledger key, with the site ledger's origin.
    ///
    /// # Errors
    /// An unreadable key.
    pub fn add_site(&mut self, name: &str, data_dir: &Path) -> anyhow::Result<()> {
        let pem = std::fs::read_to_string(data_dir.join(site::setup::LEDGER_KEY_FILE))
            .context("the site's ledger key")?;
        let spki = custody_ledger::checkpoint::spki_from_pem(&pem)?;
        self.sites.push(SiteConfig::new(
            name,
            custody_ledger::DEFAULT_ORIGIN,
            &spki,
        )?);
        Ok(())
    }

    /// Opens the store from disk and serves on [`HubServer::addr`].
    ///
    /// # Errors
    /// Store, key or socket failures.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let store = GatedStore {
            inner: EmbeddedStore::open(&self.dir)?,
            gate: self.gate.clone(),
        };
        let hub = Hub::open(
            HubConfig {
                sites: self.sites.clone(),
                order_key: None,
            },
            self.cosigner()?,
            Arc::new(store),
        )?;
        let server = Caller::new(Role::Admin, "hq", "hub")?;
        let issued = pki::issue_with_new_key(
            &self.ca_cert,
            &self.ca_key,
            &LeafParams {
                caller: server,
                kind: CertificateKind::Server {
                    dns_names: vec![],
                    ip_addresses: vec![],
                },
                validity: Validity::days_from_now(2),
            },
        )?;
        let tls = ServerTls::new(
            vec![CertificateDer::from_pem_slice(
                issued.certificate_pem.as_bytes(),
            )?],
            PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?,
            std::slice::from_ref(&self.ca_cert),
        )?;
        let guard = Guard::new(crate::test_limits(), Metrics::new());
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(hub::server::run(
            hub.clone(),
            listener,
            tls,
            guard,
            async move {
                let _ = rx.await;
            },
        ));
        self.hub = Some(hub);
        self.server = Some((tx, join));
        Ok(())
    }

    /// Stops serving (calls in flight drain) and closes the store.
    ///
    /// # Errors
    /// When the server failed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((tx, join)) = self.server.take() {
            let _ = tx.send(());
            join.await??;
        }
        self.hub = None;
        Ok(())
    }

    /// The held commit never happens (the hub "dies" before it), then the
    /// hub stops and starts again from disk.
    ///
    /// # Errors
    /// As [`HubServer::stop`] and [`HubServer::start`].
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        self.gate.release(true);
        self.stop().await?;
        self.start().await
    }

    /// The running hub.
    ///
    /// # Panics
    /// When it is not running (a test bug).
    pub fn hub(&self) -> &Hub {
        self.hub.as_ref().expect("the hub is running")
    }
}

/// A fresh Ed25519 witness key as PKCS#8, kept so that a restarted hub
/// signs with the same key.
fn witness_pkcs8() -> anyhow::Result<Vec<u8>> {
    let rng = ring::rand::SystemRandom::new();
    Ok(ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("cannot make an Ed25519 key"))?
        .as_ref()
        .to_vec())
}
