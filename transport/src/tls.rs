//! TLS 1.3 with client certificates, on both ends (2.4.13.25).
//!
//! Both configurations are built by hand on rustls with the ring provider:
//! TLS 1.3 only (tonic's stock `ServerTlsConfig` would also accept 1.2),
//! ALPN `h2`, the service CA as the only trust anchor, and on the server a
//! client certificate that is required and verified (`WebPkiClientVerifier`,
//! then EKU clientAuth required and, when the server has one, the CRL:
//! `tls/verifier.rs`). With TLS 1.3 a refused client certificate
//! surfaces on the client's first RPC, not at connect: the client finishes
//! its half of the handshake before the server has judged its certificate.
//!
//! The client side ([`ClientTls::connect`]) does the TLS itself in a custom
//! connector, so tonic sees the endpoint as `http://host:port`; the bytes on
//! the wire are TLS 1.3 all the same.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::revocation::{Revocations, CRL_FILE};
use crate::Error;

mod verifier;

pub(crate) use verifier::serial as certificate_serial;

/// The ring crypto provider, installed as the process default on first use.
///
/// rustls panics when it must pick a default and finds two providers
/// compiled in (ring and aws-lc-rs); installing ring explicitly at start-up
/// removes the guess. Every config in this crate also names the provider
/// explicitly. Idempotent; call it first thing in `main`.
pub fn install_crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let ring = Arc::new(rustls::crypto::ring::default_provider());
            // Err means another provider was installed first (by us on
            // another thread, or by the embedding program); ours is still
            // used explicitly below.
            let _ = CryptoProvider::install_default(ring.as_ref().clone());
            ring
        })
        .clone()
}

/// Where one party's certificate, private key and the service CA live.
/// `trustline pki issue --out DIR --name N` writes `DIR/N.pem`,
/// `DIR/N.key` (mode 0600) and `DIR/service-ca.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPaths {
    /// The certificate (PEM; leaf first if a chain).
    pub certificate: PathBuf,
    /// The PKCS#8 private key (PEM).
    pub key: PathBuf,
    /// The service CA certificate (PEM): the only trust anchor.
    pub ca: PathBuf,
}

/// File name of the service CA certificate in a PKI directory.
pub const SERVICE_CA_FILE: &str = "service-ca.pem";

impl CredentialPaths {
    /// The standard file names for `name` under `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            certificate: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(SERVICE_CA_FILE),
        }
    }

    /// The CRL beside the service CA certificate (`<dir>/crl.pem`).
    pub fn crl(&self) -> PathBuf {
        self.ca.with_file_name(CRL_FILE)
    }

    fn load(&self) -> Result<Loaded, Error> {
        let certificate = read_certs(&self.certificate, "certificate")?;
        let ca = read_certs(&self.ca, "service CA")?;
        let key_pem =
            zeroize::Zeroizing::new(fs::read(&self.key).map_err(|e| Error::io(&self.key, e))?);
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| Error::credential(format!("private key {}", self.key.display()), e))?;
        Ok(Loaded {
            certificate,
            key,
            ca,
        })
    }
}

struct Loaded {
    certificate: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: Vec<CertificateDer<'static>>,
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::credential(format!("{what} {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(Error::credential(
            format!("{what} {}", path.display()),
            "no CERTIFICATE block",
        ));
    }
    Ok(certs)
}

fn root_store(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|e| Error::credential("service CA", e))?;
    }
    Ok(roots)
}

/// A server's TLS 1.3 configuration: its certificate and key, the service
/// CA every client certificate must chain to (with EKU clientAuth), and —
/// for every Trustline server — the service CA's CRL, kept current
/// ([`Revocations`]).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    revocations: Option<Arc<Revocations>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds the configuration from DER.
    ///
    /// # Errors
    /// [`Error::Credential`] when the CA is unusable; [`Error::Tls`] when
    /// rustls refuses the certificate and key.
    pub fn new(
        certificate: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: &[CertificateDer<'static>],
    ) -> Result<Self, Error> {
        Self::build(certificate, key, client_ca, None)
    }

    /// As [`ServerTls::new`], refusing client certificates the CRL behind
    /// `revocations` lists — at the handshake here, and on every request in
    /// the guard ([`crate::serve`] passes it on).
    ///
    /// # Errors
    /// As [`ServerTls::new`].
    pub fn with_revocations(
        certificate: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: &[CertificateDer<'static>],
        revocations: Arc<Revocations>,
    ) -> Result<Self, Error> {
        Self::build(certificate, key, client_ca, Some(revocations))
    }

    fn build(
        certificate: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: &[CertificateDer<'static>],
        revocations: Option<Arc<Revocations>>,
    ) -> Result<Self, Error> {
        let provider = install_crypto_provider();
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(client_ca)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
        let verifier = Arc::new(verifier::ClientVerifier {
            inner,
            revocations: revocations.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificate, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Stations keep their connection; no session resumption is needed,
        // and without tickets every connection proves its certificate afresh.
        config.send_tls13_tickets = 0;
        Ok(Self {
            config: Arc::new(config),
            revocations,
        })
    }

    /// Loads PEM files (no CRL: see [`ServerTls::from_files_with_crl`]).
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, else as [`ServerTls::new`].
    pub fn from_files(paths: &CredentialPaths) -> Result<Self, Error> {
        let loaded = paths.load()?;
        Self::new(loaded.certificate, loaded.key, &loaded.ca)
    }

    /// Loads PEM files and the CRL beside the service CA
    /// ([`CredentialPaths::crl`]), which must exist and verify; changes to
    /// it are picked up while serving.
    ///
    /// # Errors
    /// As [`ServerTls::from_files`] and [`Revocations::open`].
    pub fn from_files_with_crl(paths: &CredentialPaths) -> Result<Self, Error> {
        let loaded = paths.load()?;
        let ca = loaded
            .ca
            .first()
            .ok_or_else(|| Error::credential("service CA", "no certificate"))?;
        let revocations = Revocations::open(&paths.crl(), ca)?;
        Self::with_revocations(loaded.certificate, loaded.key, &loaded.ca, revocations)
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The CRL this server checks callers against, if any.
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        self.revocations.as_ref()
    }
}

/// A client's TLS 1.3 configuration: its certificate and key (which name its
/// caller identity), and the service CA as the only root.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the configuration from DER.
    ///
    /// # Errors
    /// [`Error::Credential`] when the CA is unusable; [`Error::Tls`] when
    /// rustls refuses the certificate and key.
    pub fn new(
        certificate: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        service_ca: &[CertificateDer<'static>],
    ) -> Result<Self, Error> {
        let provider = install_crypto_provider();
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(root_store(service_ca)?)
            .with_client_auth_cert(certificate, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            server_name: None,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Uses a rustls configuration built elsewhere, e.g. one whose client
    /// key lives in a TPM behind a custom `rustls::sign::SigningKey`. It
    /// should offer TLS 1.3 and ALPN `h2` and trust only the service CA; the
    /// server refuses anything else anyway.
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            server_name: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Loads PEM files.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files, else as [`ClientTls::new`].
    pub fn from_files(paths: &CredentialPaths) -> Result<Self, Error> {
        let loaded = paths.load()?;
        Self::new(loaded.certificate, loaded.key, &loaded.ca)
    }

    /// Verifies the server's certificate against `name` instead of the
    /// endpoint's host.
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] when `name` is neither a DNS name nor an IP
    /// address.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, Error> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::InvalidIdentity(format!("server name {name:?}: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// How long a TCP connect plus TLS handshake may take (default 5 s).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// Connects to `endpoint` (`host:port`, `https://host:port` or
    /// `http://host:port`: TLS is used whatever the scheme says) and returns
    /// a channel for any generated client. Keep the channel: a new
    /// connection costs a full handshake.
    ///
    /// # Errors
    /// [`Error::Connect`] when the endpoint is malformed or the first
    /// connection fails (refused, TLS handshake failed). Note that a server
    /// refusing this client's certificate shows up on the first RPC instead.
    pub async fn connect(&self, endpoint: &str) -> Result<Channel, Error> {
        let (endpoint_cfg, connector) = self.endpoint(endpoint)?;
        endpoint_cfg
            .connect_with_connector(connector)
            .await
            .map_err(|e| Error::Connect {
                endpoint: endpoint.to_owned(),
                reason: error_chain(&e),
            })
    }

    /// Like [`ClientTls::connect`] but connects on first use.
    ///
    /// # Errors
    /// [`Error::Connect`] when the endpoint is malformed.
    pub fn connect_lazy(&self, endpoint: &str) -> Result<Channel, Error> {
        let (endpoint_cfg, connector) = self.endpoint(endpoint)?;
        Ok(endpoint_cfg.connect_with_connector_lazy(connector))
    }

    fn endpoint(&self, endpoint: &str) -> Result<(Endpoint, TlsConnect), Error> {
        let bad = |reason: String| Error::Connect {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let authority = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .unwrap_or(endpoint)
            .trim_end_matches('/');
        let uri: Uri = format!("http://{authority}")
            .parse()
            .map_err(|e| bad(format!("not host:port: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.port_u16().is_none() {
            return Err(bad("no port".into()));
        }
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host)
                .map_err(|e| bad(format!("host is not a valid server name: {e}")))?,
        };
        let endpoint_cfg = Endpoint::from(uri)
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let connector = TlsConnect {
            connector: TlsConnector::from(self.config.clone()),
            server_name,
        };
        Ok((endpoint_cfg, connector))
    }
}

/// The connector tonic calls for each new connection: TCP, then TLS 1.3.
#[derive(Clone)]
struct TlsConnect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("endpoint has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().ok_or("endpoint has no port")?;
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err("server did not negotiate ALPN h2".into());
            }
            Ok(TokioIo::new(tls))
        })
    }
}

/// The error and its sources, joined, for messages.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
