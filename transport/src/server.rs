//! The server entry point: an accept loop in the shape of mini-redis's
//! `server::run(listener, shutdown)`.
//!
//! [`serve`] accepts TCP connections while a semaphore has permits (the
//! connection cap), completes a TLS 1.3 handshake with a required client
//! certificate (bounded by the handshake timeout), reads the caller identity
//! from the verified chain once per connection, and serves HTTP/2 on it with
//! every request passing the [`Guard`] — which checks the certificate's
//! expiry and, when the server has a CRL, its revocation again on every
//! request, so a connection opened before a revocation dies on its next
//! call. There is no plaintext path: a client
//! that does not speak TLS fails the handshake and is dropped.
//!
//! Shutdown is graceful: when the `shutdown` future completes the listener is
//! closed, every connection is told to finish (HTTP/2 GOAWAY: in-flight calls
//! complete, new ones go elsewhere), and `serve` returns once all have
//! closed, or after the longest call deadline plus a second.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tonic::service::Routes;
use tower_layer::Layer;
use tower_service::Service;

use crate::guard::{Guard, GuardService, PeerIdentity};
use crate::identity::{self, Caller};
use crate::revocation::Revocations;
use crate::tls::{certificate_serial, ServerTls};
use crate::Error;

/// Largest HTTP/2 header list accepted (bytes).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Serves `routes` on `listener` behind mutual TLS and the `guard` until
/// `shutdown` completes, then drains connections and returns.
///
/// Build `routes` with [`crate::operational_routes`] (health, reflection,
/// admin) plus the crate's own services, each with
/// [`crate::MessageLimits::with_message_limits`] applied.
///
/// # Errors
/// [`Error::Listener`] only if the connection semaphore is closed, which
/// this function never does; accept errors (e.g. out of file descriptors)
/// are logged and retried after a short pause, and per-connection failures
/// (handshake refused, peer reset) end only that connection.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    tls: ServerTls,
    guard: Guard,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let limits = guard.limits().clone();
    let shared = Arc::new(ConnectionSettings {
        acceptor: TlsAcceptor::from(tls.config()),
        revocations: tls.revocations().cloned(),
        service: guard.layer(routes),
        handshake_timeout: limits.handshake_timeout(),
        drain_timeout: limits.max_deadline() + Duration::from_secs(1),
        max_streams: limits.max_streams_per_connection,
        guard,
    });
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connections watch `stop` for shutdown; each holds a clone of `done_tx`,
    // so `done_rx` yields `None` once every connection has finished.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => {
                permit.map_err(|e| Error::Listener(e.to_string()))?
            }
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = Connection {
            settings: shared.clone(),
            remote,
            stop: stop_rx.clone(),
            _done: done_tx.clone(),
            _permit: permit,
        };
        tokio::spawn(conn.run(tcp));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

struct ConnectionSettings {
    acceptor: TlsAcceptor,
    revocations: Option<Arc<Revocations>>,
    service: GuardService<Routes>,
    handshake_timeout: Duration,
    drain_timeout: Duration,
    max_streams: u32,
    guard: Guard,
}

/// One accepted connection; dropping it releases its slot.
struct Connection {
    settings: Arc<ConnectionSettings>,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) {
        let settings = self.settings.clone();
        let metrics = settings.guard.metrics().clone();
        let remote = self.remote;
        let _ = tcp.set_nodelay(true);
        let handshake =
            tokio::time::timeout(settings.handshake_timeout, settings.acceptor.accept(tcp));
        let tls = tokio::select! {
            () = stopped(&mut self.stop) => return,
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "tls handshake refused");
                    metrics.refused("tls_handshake");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "tls handshake timed out");
                    metrics.refused("tls_handshake_timeout");
                    return;
                }
            },
        };

        let chain = tls.get_ref().1.peer_certificates();
        let caller = match chain {
            Some(chain) => Caller::from_verified_chain(chain).map_err(|e| e.to_string()),
            None => Err("no verified client certificate".to_owned()),
        };
        let leaf = chain.and_then(|c| c.first());
        let not_after = leaf.and_then(|leaf| identity::not_after(leaf));
        let serial = leaf
            .map(|leaf| certificate_serial(leaf))
            .unwrap_or_default();
        match &caller {
            Ok(caller) => tracing::debug!(%remote, caller = %caller, "connection accepted"),
            Err(reason) => {
                tracing::warn!(%remote, reason = %reason, "client certificate names no caller; its requests will be refused")
            }
        }
        let peer = PeerIdentity {
            remote_addr: remote,
            caller: Arc::new(caller),
            not_after,
            serial,
            revocations: settings.revocations.clone(),
        };
        let service = TowerToHyperService::new(ConnectionService {
            peer,
            inner: settings.service.clone(),
        });
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_streams)
            .max_header_list_size(MAX_HEADER_LIST)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);

        metrics.connections.inc();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            }
            () = stopped(&mut self.stop) => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(settings.drain_timeout, conn).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "connection ended with an error"),
                    Err(_) => tracing::info!(%remote, "connection did not drain in time; closed"),
                }
            }
        }
        metrics.connections.dec();
    }
}

/// Completes once shutdown has been signalled (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The returned guard is dropped at once: it must not live across an await.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Attaches the connection's identity to each request and hands it to the
/// guarded routes.
#[derive(Clone)]
struct ConnectionService {
    peer: PeerIdentity,
    inner: GuardService<Routes>,
}

impl Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <GuardService<Routes> as Service<http::Request<Body>>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}
