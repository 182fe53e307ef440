//! A whole two-domain deployment on loopback: one OEM hub and N enrolled
//! sites in this process, each on tokens of its own, wired exactly as
//! `trustline hub init`, `site init`, `hub enroll-site`, `site install`,
//! `serve hub` and `serve site` wire them (the same functions) — what
//! `trustline demo --sites N` runs and what the end-to-end tests of the
//! hub's field life and audit run (issue 13 items 4 to 6).
//!
//! Each server keeps its port across restarts, so a site's uplink (which
//! retries with backoff) finds the hub again, and the caller can stop the
//! hub — or one site — mid-run and start it again.
//!
//! ```text
//! <dir>/hub/            the hub's data directory (deploy::hub)
//! <dir>/<site>/         each site's data directory (site::setup)
//! <dir>/<site>.bundle   its enrolment bundle
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ca_service::Hsm;
use site::setup::{self, Wanted};
use site::uplink::UplinkConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use transport::{Caller, ClientTls, Limits, Role};

use crate::enrol::{self, EnrolRequest};
use crate::error::{Error, Result};

/// A running server: its stop signal and its task.
struct Running<E> {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::result::Result<(), E>>,
}

impl<E: std::fmt::Display> Running<E> {
    fn spawn<F>(serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        let (stop, rx) = oneshot::channel();
        Self {
            stop,
            task: tokio::spawn(serve(rx)),
        }
    }

    async fn stop(self, what: &str) -> Result<()> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Refused(format!("{what} failed: {e}"))),
            Err(e) => Err(Error::Refused(format!("{what} task: {e}"))),
        }
    }
}

/// One enrolled site of the deployment.
pub struct LoopSite {
    /// The site's name.
    pub name: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its stations' names (credentials `station-<site>-<name>`).
    pub stations: Vec<String>,
    /// Where it listens (the same across restarts).
    pub addr: SocketAddr,
    ca: Hsm,
    ledger: Hsm,
    config: site::Config,
    server: Option<Running<site::Error>>,
}

impl LoopSite {
    /// Its configuration as served (with its `[uplink]` to the hub).
    pub fn config(&self) -> &site::Config {
        &self.config
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }
}

/// A hub and its sites on loopback.
pub struct Loopback {
    /// The hub's data directory.
    pub hub_dir: PathBuf,
    /// Where the hub listens (the same across restarts).
    pub hub_addr: SocketAddr,
    /// The hub witness's verifier key.
    pub witness_key: String,
    /// The sites, in the order given.
    pub sites: Vec<LoopSite>,
    hub_hsm: Hsm,
    hub_settings: crate::hub::HubSettings,
    hub: Option<Running<Error>>,
}

fn free_port() -> Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Refused(format!("no loopback port: {e}")))
}

/// A site to enrol: its name, its CA token, its ledger token, its stations.
pub struct SiteSpec {
    /// The site's name.
    pub name: String,
    /// Its CA token (the site intermediate alone once installed).
    pub ca: Hsm,
    /// Its ledger token (the checkpoint key alone).
    pub ledger: Hsm,
    /// Its stations' names.
    pub stations: Vec<String>,
}

impl Loopback {
    /// Sets the deployment up in `dir` (which must be empty or absent): the
    /// hub on `hub_hsm`, then every site initialised, enrolled at the hub
    /// and installed, with `vendor_roots` as its IC-vendor roots; every
    /// server runs with `limits`, every uplink retries within
    /// `retry_ms` (min, max).
    ///
    /// # Errors
    /// Any set-up step's.
    pub fn init(
        dir: &Path,
        hub_hsm: Hsm,
        sites: Vec<SiteSpec>,
        vendor_roots: &[(String, Vec<u8>)],
        limits: &Limits,
        retry_ms: (u64, u64),
    ) -> Result<Self> {
        let hub_dir = dir.join("hub");
        let init = crate::hub::init(
            &hub_hsm,
            &hub_dir,
            enrol::DEFAULT_ORGANIZATION,
            crate::hub::DEFAULT_WITNESS_NAME,
        )?;
        let hub_addr = free_port()?;
        let mut hub_settings = crate::hub::HubSettings::load(&hub_dir)?;
        hub_settings.transport = limits.clone();
        let mut out = Vec::with_capacity(sites.len());
        for spec in sites {
            let site_dir = dir.join(&spec.name);
            let made = enrol::site_init(
                &spec.ca,
                &spec.ledger,
                &site_dir,
                &spec.name,
                enrol::DEFAULT_ORGANIZATION,
                None,
            )?;
            let request = EnrolRequest {
                site: spec.name.clone(),
                origin: made.origin.clone(),
                csr_der: site::config::read_der(&made.csr_file, "CERTIFICATE REQUEST")?,
                ledger_key_der: site::config::read_der(&made.ledger_key_file, "PUBLIC KEY")?,
                stations: spec.stations.clone(),
            };
            let bundle_path = dir.join(format!("{}.bundle", spec.name));
            enrol::enroll_site(&hub_hsm, &hub_dir, &request, &bundle_path)?;
            let bundle = crate::bundle::Bundle::read(&bundle_path)?;
            enrol::site_install(&spec.ca, &site_dir, &bundle)?;
            site::config::write_vendor_roots(
                &site_dir.join(backends::layout::VENDORS_DIR),
                vendor_roots,
            )?;
            let mut config = site::Config::load(&site_dir)?;
            config.transport = limits.clone();
            config.uplink = Some(UplinkConfig {
                hub: hub_addr.to_string(),
                site: spec.name.clone(),
                witness_key: init.witness_verifier_key.clone(),
                credentials_dir: PathBuf::from(setup::PKI_DIR),
                credential_name: setup::UPLINK.into(),
                retry_min_ms: retry_ms.0,
                retry_max_ms: retry_ms.1,
                ..UplinkConfig::default()
            });
            out.push(LoopSite {
                name: spec.name,
                dir: site_dir,
                stations: spec.stations,
                addr: free_port()?,
                ca: spec.ca,
                ledger: spec.ledger,
                config,
                server: None,
            });
        }
        Ok(Self {
            hub_dir,
            hub_addr,
            witness_key: init.witness_verifier_key,
            sites: out,
            hub_hsm,
            hub_settings,
            hub: None,
        })
    }

    /// The hub's token.
    pub fn hub_hsm(&self) -> &Hsm {
        &self.hub_hsm
    }

    /// Puts the hub's store in the PostgreSQL database `url` (issue 14),
    /// written into `<hub>/hub.toml` as `serve hub` and `trustline audit
    /// --hub-dir` read it. Call it before [`Loopback::start_hub`].
    ///
    /// # Errors
    /// When `hub.toml` cannot be read or written.
    pub fn set_hub_database(&mut self, url: &str) -> Result<()> {
        let path = self.hub_dir.join(crate::hub::HUB_CONFIG_FILE);
        let mut table: toml::Table = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .parse()
                .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let hub = table
            .entry("hub")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(hub) = hub.as_table_mut() else {
            return Err(Error::Refused(format!(
                "{}: [hub] is not a table",
                path.display()
            )));
        };
        hub.insert("database".into(), toml::Value::String(url.into()));
        std::fs::write(&path, table.to_string()).map_err(|e| Error::io(&path, e))?;
        self.hub_settings.hub.database = url.into();
        Ok(())
    }

    /// Puts site `i`'s custody ledger in the PostgreSQL database `url`
    /// (`[ledger] database`, issue 14); its uplink pushes from there. Call
    /// it before [`Loopback::start_site`].
    ///
    /// # Errors
    /// When there is no site `i`.
    pub fn set_site_ledger_database(&mut self, i: usize, url: &str) -> Result<()> {
        let s = self
            .sites
            .get_mut(i)
            .ok_or_else(|| Error::Refused(format!("no site {i}")))?;
        s.config.ledger.database = url.into();
        Ok(())
    }

    /// Starts `serve hub` on [`Loopback::hub_addr`].
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_hub(&mut self) -> Result<()> {
        if self.hub.is_some() {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.hub_addr)
            .await
            .map_err(|e| Error::Refused(format!("binding {}: {e}", self.hub_addr)))?;
        let (dir, settings, hsm) = (
            self.hub_dir.clone(),
            self.hub_settings.clone(),
            self.hub_hsm.clone(),
        );
        self.hub = Some(Running::spawn(move |rx| async move {
            crate::hub::serve(&dir, &settings, &hsm, listener, async {
                let _ = rx.await;
            })
            .await
        }));
        Ok(())
    }

    /// Stops the hub (calls in flight drain; its ledger closes).
    ///
    /// # Errors
    /// When it had failed.
    pub async fn stop_hub(&mut self) -> Result<()> {
        match self.hub.take() {
            Some(r) => r.stop("the hub").await,
            None => Ok(()),
        }
    }

    /// Starts `serve site` for site `i` on its address.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_site(&mut self, i: usize) -> Result<()> {
        let s = self
            .sites
            .get_mut(i)
            .ok_or_else(|| Error::Refused(format!("no site {i}")))?;
        if s.server.is_some() {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(s.addr)
            .await
            .map_err(|e| Error::Refused(format!("binding {}: {e}", s.addr)))?;
        let (dir, config, ca, ledger) = (
            s.dir.clone(),
            s.config.clone(),
            s.ca.clone(),
            s.ledger.clone(),
        );
        s.server = Some(Running::spawn(move |rx| async move {
            site::serve::serve_site(&dir, &config, ca, ledger, listener, async {
                let _ = rx.await;
            })
            .await
        }));
        Ok(())
    }

    /// Stops site `i` (its uplink stops, its ledger closes).
    ///
    /// # Errors
    /// When it had failed.
    pub async fn stop_site(&mut self, i: usize) -> Result<()> {
        let Some(s) = self.sites.get_mut(i) else {
            return Ok(());
        };
        match s.server.take() {
            Some(r) => r.stop(&format!("site {}", s.name)).await,
            None => Ok(()),
        }
    }

    /// Starts the hub and every site.
    ///
    /// # Errors
    /// As [`Loopback::start_hub`] and [`Loopback::start_site`].
    pub async fn start_all(&mut self) -> Result<()> {
        self.start_hub().await?;
        for i in 0..self.sites.len() {
            self.start_site(i).await?;
        }
        Ok(())
    }

    /// Stops every site, then the hub.
    ///
    /// # Errors
    /// The first failure.
    pub async fn stop_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        for i in 0..self.sites.len() {
            let r = self.stop_site(i).await;
            if first.is_ok() {
                first = r;
            }
        }
        let r = self.stop_hub().await;
        first.and(r)
    }

    /// A channel to the hub as the hub credential `name` (`admin`,
    /// `auditor`, or one [`Loopback::issue_hub_client`] made).
    ///
    /// # Errors
    /// Credential or connection failures.
    pub async fn hub_channel(&self, name: &str) -> Result<Channel> {
        connect(&self.hub_dir, name, &self.hub_addr.to_string()).await
    }

    /// A channel to site `i` as `name`: a credential of the site's own
    /// (`station-<site>-<station>`, `uplink`) or, with `from_hub`, of the
    /// hub's (`admin`, `auditor`: the OEM's, which every site trusts).
    ///
    /// # Errors
    /// Credential or connection failures.
    pub async fn site_channel(&self, i: usize, name: &str, from_hub: bool) -> Result<Channel> {
        let s = self
            .sites
            .get(i)
            .ok_or_else(|| Error::Refused(format!("no site {i}")))?;
        let dir = if from_hub { &self.hub_dir } else { &s.dir };
        connect(dir, name, &s.addr.to_string()).await
    }

    /// A channel to the hub as site `i`'s credential `name` (its `uplink`,
    /// issued by the hub's service CA at enrolment).
    ///
    /// # Errors
    /// Credential or connection failures.
    pub async fn site_to_hub(&self, i: usize, name: &str) -> Result<Channel> {
        let s = self
            .sites
            .get(i)
            .ok_or_else(|| Error::Refused(format!("no site {i}")))?;
        connect(&s.dir, name, &self.hub_addr.to_string()).await
    }

    /// Issues a client credential `name` at the hub (its service CA, in
    /// `<hub>/pki`) for `caller`: an owner's or service provider's
    /// `operator` identity, for the `Ownership` service at the hub.
    ///
    /// # Errors
    /// PKI failures.
    pub fn issue_hub_client(&self, name: &str, caller: Caller) -> Result<()> {
        let pki_dir = self.hub_dir.join(setup::PKI_DIR);
        let (key, cert) = setup::service_ca(&self.hub_hsm, &pki_dir)?;
        setup::issue_missing(
            &key,
            &cert,
            &pki_dir,
            &pki_dir,
            &[Wanted::client(name, caller)],
        )?;
        Ok(())
    }

    /// Issues the `operator` credential at the hub (role `operator`, an
    /// owner's tool) and returns its name.
    ///
    /// # Errors
    /// As [`Loopback::issue_hub_client`].
    pub fn issue_operator(&self) -> Result<&'static str> {
        const OPERATOR: &str = "operator";
        self.issue_hub_client(OPERATOR, Caller::new(Role::Operator, setup::HQ, "owner")?)?;
        Ok(OPERATOR)
    }
}

async fn connect(dir: &Path, name: &str, addr: &str) -> Result<Channel> {
    let tls = ClientTls::from_files(&setup::credentials(dir, name))?;
    Ok(tls.connect(addr).await?)
}
