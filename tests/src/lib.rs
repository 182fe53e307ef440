//! Helpers for the end-to-end tests: start real services on loopback with a
//! real SoftHSM2 token and real ledger files, and talk to them as clients do.
//!
//! [`Stack`] runs `trustline serve all` in this process on `127.0.0.1:0`
//! (the same `site::serve::serve_all` the binary runs) behind TLS 1.3
//! with client certificates from the stack's own service PKI, on two tokens
//! of its own — the CA's and the ledger's (the checkpoint key alone) — in
//! the process's shared SoftHSM2 test directory (SoftHSM2 reads its
//! configuration once per process). Clients connect with the
//! credentials the PKI issued: `admin`, `auditor`, and one per station.
//!
//! For tests that kill the server, [`ChildServer`] runs the real binary as a
//! child process with a data directory of its own.

#![forbid(unsafe_code)]

pub mod hub;
pub mod ownership;
pub mod reference;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use ca_service::{Hsm, HsmConfig, HsmSigner, PinSource};
use hsm_sim::rot::Fleet;
use hsm_sim::softhsm::TestToken;
use prost::Message;
use site::setup;
use site::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use transport::{ClientTls, Limits, RateLimit};
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

/// The site every test station belongs to unless it says otherwise.
pub const SITE: &str = "site-a";

/// Transport limits for tests: generous rates (tests measure behaviour,
/// not throttling) but the default lockout policy.
pub fn test_limits() -> Limits {
    Limits {
        rate: RateLimit {
            per_second: 100_000.0,
            burst: 100_000,
        },
        max_concurrent_per_caller: 256,
        max_streams_per_connection: 256,
        ..Limits::default()
    }
}

/// A running in-process Trustline (`serve all`).
pub struct Stack {
    /// The data directory (CA, ledger, PKI, vendor roots).
    pub dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA's HSM (a test token of its own).
    pub hsm: Hsm,
    /// The ledger's HSM (another test token: the checkpoint key alone).
    pub ledger_hsm: Hsm,
    /// The CA's token (label, module, PIN file), for the command line.
    pub ca_token: TestToken,
    /// The ledger's token.
    pub ledger_token: TestToken,
    /// The OEM order key.
    pub order_key: HsmSigner,
    /// IC vendors the provisioner trusts, and the firmware orders allow.
    pub vendors: Vec<String>,
    /// The firmware digest orders allow.
    pub firmware: [u8; 32],
    config: Config,
    server: Option<(oneshot::Sender<()>, JoinHandle<site::Result<()>>)>,
}

impl Stack {
    /// Prepares a data directory for `fleet`'s vendors with credentials for
    /// `stations` (site, name), and starts the services.
    ///
    /// # Errors
    /// Any set-up failure.
    pub async fn start(
        name: &str,
        fleet: &Fleet,
        stations: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_full(name, fleet, &[], stations, |_, _| Ok(())).await
    }

    /// As [`Stack::start`], with `prepare` editing the configuration and
    /// the data directory (e.g. an `[uplink]` and its credentials) before
    /// the services start (the configuration also holds across
    /// [`Stack::restart`]).
    ///
    /// # Errors
    /// Any set-up failure, or `prepare`'s.
    pub async fn start_with(
        name: &str,
        fleet: &Fleet,
        stations: &[(&str, &str)],
        prepare: impl FnOnce(&Path, &mut Config) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        Self::start_full(name, fleet, &[], stations, prepare).await
    }

    /// As [`Stack::start`], with more IC-vendor roots (name, DER) beside
    /// the fleet's — e.g. the reference device's vendor CA
    /// (docs/device-protocol.md §15) — all allowed in [`Stack::order`].
    ///
    /// # Errors
    /// Any set-up failure.
    pub async fn start_with_vendors(
        name: &str,
        fleet: &Fleet,
        extra_vendors: &[(String, Vec<u8>)],
        stations: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_full(name, fleet, extra_vendors, stations, |_, _| Ok(())).await
    }

    async fn start_full(
        name: &str,
        fleet: &Fleet,
        extra_vendors: &[(String, Vec<u8>)],
        stations: &[(&str, &str)],
        prepare: impl FnOnce(&Path, &mut Config) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        transport::install_crypto_provider();
        let (ca_token, hsm) = open_test_token(name)?;
        let (ledger_token, ledger_hsm) = open_test_token(&format!("{name}-ledger"))?;
        let dir = tempfile::tempdir()?;
        setup::init_ca(&hsm, dir.path(), SITE)?;
        setup::init_ledger_key(&ledger_hsm, dir.path())?;
        let stations: Vec<(String, String)> = stations
            .iter()
            .map(|(s, n)| ((*s).to_owned(), (*n).to_owned()))
            .collect();
        setup::init_pki(&hsm, dir.path(), SITE, &stations)?;
        let mut roots = fleet.vendor_roots();
        roots.extend_from_slice(extra_vendors);
        site::config::write_vendor_roots(&dir.path().join("vendors"), &roots)?;
        let order_key = hsm.signer(&ca_service::keys::KeyLabels::default().order)?;
        let mut config = Config::load(dir.path())?;
        config.transport = test_limits();
        prepare(dir.path(), &mut config)?;
        let mut stack = Self {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hsm,
            ledger_hsm,
            ca_token,
            ledger_token,
            order_key,
            vendors: roots.into_iter().map(|(n, _)| n).collect(),
            firmware: fleet.firmware_sha256(),
            config,
            server: None,
        };
        stack.run().await?;
        Ok(stack)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let dir = self.dir.path().to_path_buf();
        let config = self.config.clone();
        let hsm = self.hsm.clone();
        let ledger_hsm = self.ledger_hsm.clone();
        let join = tokio::spawn(async move {
            site::serve::serve_all(&dir, &config, hsm, ledger_hsm, listener, async {
                let _ = rx.await;
            })
            .await
        });
        self.server = Some((tx, join));
        // Ready when a client gets an answer.
        let mut last = None;
        for _ in 0..100 {
            match self.provisioning(setup::ADMIN).await {
                Ok(mut client) => match client
                    .get_order(v1::GetOrderRequest {
                        order_id: "-".into(),
                    })
                    .await
                {
                    Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
                    other => last = Some(format!("{other:?}")),
                },
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the stack did not come up: {last:?}")
    }

    /// Stops the services (graceful shutdown; the ledger is closed).
    ///
    /// # Errors
    /// When the server failed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((tx, join)) = self.server.take() {
            let _ = tx.send(());
            join.await??;
        }
        Ok(())
    }

    /// Stops and starts again on the same data directory and token.
    ///
    /// # Errors
    /// As [`Stack::stop`] and start-up.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.run().await
    }

    /// An mTLS channel with the credentials `identity` (e.g. `admin`,
    /// `auditor`, [`station`]).
    ///
    /// # Errors
    /// Credential or connection failure.
    pub async fn channel(&self, identity: &str) -> anyhow::Result<Channel> {
        let tls = ClientTls::from_files(&setup::credentials(self.dir.path(), identity))?;
        Ok(tls.connect(&self.addr.to_string()).await?)
    }

    /// A provisioning client as `identity`.
    ///
    /// # Errors
    /// As [`Stack::channel`].
    pub async fn provisioning(
        &self,
        identity: &str,
    ) -> anyhow::Result<ProvisioningClient<Channel>> {
        Ok(ProvisioningClient::new(self.channel(identity).await?))
    }

    /// A production order for `site` over the stack's vendors and firmware.
    pub fn order(&self, id: &str, site: &str, quantity: u64) -> v1::ProductionOrder {
        order(id, site, quantity, &self.vendors, self.firmware)
    }

    /// Signs `order` with the OEM order key in the HSM.
    ///
    /// # Errors
    /// HSM failure.
    pub fn sign(&self, order: &v1::ProductionOrder) -> anyhow::Result<v1::SignedStatement> {
        Ok(trustline_proto::statement::sign(&self.order_key, order)?)
    }

    /// Signs and opens `order` as the admin.
    ///
    /// # Errors
    /// When the provisioner refuses it.
    pub async fn open(&self, order: &v1::ProductionOrder) -> anyhow::Result<()> {
        let signed = self.sign(order)?;
        self.provisioning(setup::ADMIN)
            .await?
            .open_order(v1::OpenOrderRequest {
                signed_order: Some(signed),
            })
            .await?;
        Ok(())
    }

    /// Every ledger entry, read as the auditor.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn ledger_entries(&self) -> anyhow::Result<Vec<v1::LedgerEntry>> {
        ledger_entries(self.channel(setup::AUDITOR).await?).await
    }

    /// The OEM root certificate, PEM file.
    pub fn root_pem(&self) -> PathBuf {
        self.dir
            .path()
            .join("ca")
            .join(ca_service::ca::ROOT_CERT_FILE)
    }
}

/// A fresh token of its own in the process's shared SoftHSM2 test
/// directory, opened with a pool of four sessions.
///
/// # Errors
/// SoftHSM2 or HSM failures.
pub fn open_test_token(name: &str) -> anyhow::Result<(TestToken, Hsm)> {
    let token = hsm_sim::softhsm::test_token(name)?;
    let mut config = HsmConfig::new(token.label.clone(), PinSource::File(token.pin_file.clone()));
    config.module = Some(token.module.clone());
    let hsm = Hsm::open(&config)?;
    Ok((token, hsm))
}

/// The command-line options naming `token` as the CA's HSM.
pub fn hsm_options(token: &TestToken) -> Vec<String> {
    vec![
        "--pkcs11-module".into(),
        token.module.display().to_string(),
        "--token-label".into(),
        token.label.clone(),
        "--pin-file".into(),
        token.pin_file.display().to_string(),
    ]
}

/// The command-line options naming `token` as the ledger's HSM.
pub fn ledger_hsm_options(token: &TestToken) -> Vec<String> {
    vec![
        "--ledger-pkcs11-module".into(),
        token.module.display().to_string(),
        "--ledger-token-label".into(),
        token.label.clone(),
        "--ledger-pin-file".into(),
        token.pin_file.display().to_string(),
    ]
}

/// Runs `binary` (the tests' `CARGO_BIN_EXE_trustline-e2e`) with `args`;
/// returns (exit code, stdout, stderr).
///
/// # Errors
/// When it cannot be started.
pub fn cli(binary: &str, args: &[String]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .context("running trustline-e2e")?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A production order open now for 30 days.
pub fn order(
    id: &str,
    site: &str,
    quantity: u64,
    vendors: &[String],
    firmware: [u8; 32],
) -> v1::ProductionOrder {
    let now = backends::now_ms();
    v1::ProductionOrder {
        order_id: id.into(),
        sku: "SKU-TEST".into(),
        site: site.into(),
        quantity,
        serial_scheme: Some(v1::SerialScheme {
            prefix: "SN".into(),
            first: 1,
            last: 99_999,
            digits: 6,
        }),
        not_before_ms: now - 60_000,
        not_after_ms: now + 30 * 86_400_000,
        allowed_ic_vendors: vendors.to_vec(),
        allowed_firmware_sha256: firmware.to_vec(),
        ..Default::default()
    }
}

/// The credential name of station `name` of `site`.
pub fn station(site: &str, name: &str) -> String {
    setup::station_name(site, name)
}

/// Every ledger entry over `channel` (role auditor or admin).
///
/// # Errors
/// RPC or decoding failures.
pub async fn ledger_entries(channel: Channel) -> anyhow::Result<Vec<v1::LedgerEntry>> {
    let mut client = CustodyLedgerClient::new(channel);
    let mut stream = client
        .get_entries(v1::GetEntriesRequest { start: 0, end: 0 })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(stored) = stream.message().await? {
        out.push(v1::LedgerEntry::decode(stored.entry.as_slice())?);
    }
    Ok(out)
}

/// How many entries of `kind`.
pub fn count(entries: &[v1::LedgerEntry], kind: v1::EventKind) -> usize {
    entries.iter().filter(|e| e.kind == kind as i32).count()
}

/// Runs `openssl verify` on a chain (device certificate first) against the
/// root; returns whether it printed OK.
///
/// # Errors
/// When openssl cannot be run.
pub fn openssl_verify(root_pem: &Path, chain: &[Vec<u8>], work: &Path) -> anyhow::Result<bool> {
    let chain_pem = station::run::chain_pem(chain);
    let file = work.join(format!(
        "chain-{}.pem",
        hex::encode(&sha2_digest(&chain[0])[..8])
    ));
    std::fs::write(&file, chain_pem)?;
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root_pem)
        .arg("-untrusted")
        .arg(&file)
        .arg(&file)
        .output()
        .context("running openssl (install the openssl package)")?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with(": OK"))
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// `trustline serve all` as a child process on a data directory of its own.
pub struct ChildServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Starts `binary serve all --data-dir dir --embedded-hsm` with `extra`
    /// arguments and waits for its `listening` line.
    ///
    /// # Errors
    /// When it does not start.
    pub fn start(binary: &Path, dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(["serve", "all", "--data-dir"])
            .arg(dir)
            .arg("--embedded-hsm")
            .args(extra)
            .env("TRUSTLINE_PROVISIONER_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let status = child.wait()?;
                bail!("the server exited before listening: {status}");
            };
            let line = line?;
            if let Some(addr) = line.strip_prefix("listening all ") {
                break addr.trim().parse()?;
            }
        };
        Ok(Self { child, addr })
    }

    /// Kills it with SIGKILL (no shutdown, no flush) and reaps it.
    ///
    /// # Errors
    /// When the kill fails.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet for tests: seeded, with the given genuine count.
///
/// # Errors
/// Simulator failure.
pub fn genuine_fleet(seed: u64, n: usize) -> anyhow::Result<Fleet> {
    Ok(Fleet::builder().seed(seed).genuine(n).build()?)
}
