//! Test helpers: a throw-away service CA, credentials for any caller, and a
//! real server on `127.0.0.1:0` behind mTLS and the guard.

#![allow(dead_code, clippy::unwrap_used)] // Shared by several test binaries; tests may unwrap.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{Caller, ClientTls, Guard, Limits, Metrics, Role, ServerTls};

/// A service CA with a software key.
pub(crate) struct TestCa {
    pub(crate) key: KeyPair,
    pub(crate) cert: CertificateDer<'static>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = pki::service_ca_certificate(&key, "Test service CA", Validity::days_from_now(1))
            .unwrap();
        Self { key, cert }
    }

    /// Certificate chain and key for a caller.
    pub(crate) fn issue(
        &self,
        caller: &Caller,
        kind: CertificateKind,
        validity: Validity,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let issued = pki::issue_with_new_key(
            &self.cert,
            &self.key,
            &LeafParams {
                caller: caller.clone(),
                kind,
                validity,
            },
        )
        .unwrap();
        let cert = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        (vec![cert], key)
    }

    pub(crate) fn server_tls(&self) -> ServerTls {
        let (chain, key) = self.server_credentials();
        ServerTls::new(chain, key, std::slice::from_ref(&self.cert)).unwrap()
    }

    /// A server certificate (serverAuth only, `urn:trustline:server:hq:server`).
    pub(crate) fn server_credentials(
        &self,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let caller = Caller::new(Role::Provisioner, "hq", "server").unwrap();
        self.issue(
            &caller,
            CertificateKind::Server {
                dns_names: vec![],
                ip_addresses: vec![],
            },
            Validity::days_from_now(1),
        )
    }

    pub(crate) fn client_tls(&self, caller: &Caller) -> ClientTls {
        self.client_tls_with(caller, Validity::days_from_now(1))
    }

    pub(crate) fn client_tls_with(&self, caller: &Caller, validity: Validity) -> ClientTls {
        let (chain, key) = self.issue(caller, CertificateKind::Client, validity);
        ClientTls::new(chain, key, std::slice::from_ref(&self.cert)).unwrap()
    }
}

pub(crate) fn caller(role: Role, site: &str, name: &str) -> Caller {
    Caller::new(role, site, name).unwrap()
}

pub(crate) fn admin() -> Caller {
    caller(Role::Admin, "hq", "alice")
}

pub(crate) fn station(site: &str, name: &str) -> Caller {
    caller(Role::Station, site, name)
}

/// Limits for tests: generous unless a test tightens them.
pub(crate) fn test_limits() -> Limits {
    Limits {
        handshake_timeout_ms: 2_000,
        max_deadline_ms: 5_000,
        ..Limits::default()
    }
}

/// A running server.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) guard: Guard,
    pub(crate) ca: Arc<TestCa>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), transport::Error>>>,
}

impl TestServer {
    /// Serves `routes(guard)` behind mTLS with `limits`.
    pub(crate) async fn start(
        ca: Arc<TestCa>,
        limits: Limits,
        routes: impl FnOnce(&Guard) -> Routes,
    ) -> Self {
        let guard = Guard::new(limits, Metrics::new());
        let tls = ca.server_tls();
        Self::start_with(ca, guard, tls, routes).await
    }

    /// Serves `routes(guard)` with `guard` and `tls` as given.
    pub(crate) async fn start_with(
        ca: Arc<TestCa>,
        guard: Guard,
        tls: ServerTls,
        routes: impl FnOnce(&Guard) -> Routes,
    ) -> Self {
        let routes = routes(&guard);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(transport::serve(
            routes,
            listener,
            tls,
            guard.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            guard,
            ca,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Health, reflection and Admin only.
    pub(crate) async fn operational(ca: Arc<TestCa>, limits: Limits) -> Self {
        Self::start(ca, limits, |guard| {
            transport::operational_routes(guard).unwrap().0.routes()
        })
        .await
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub(crate) async fn channel(&self, caller: &Caller) -> tonic::transport::Channel {
        self.ca
            .client_tls(caller)
            .connect(&self.endpoint())
            .await
            .unwrap()
    }

    /// Signals shutdown and waits for `serve` to return.
    pub(crate) async fn shutdown(mut self) -> Result<(), transport::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}
