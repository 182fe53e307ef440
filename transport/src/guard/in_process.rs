//! [`InProcessChannel`]: a channel to services in the same process that
//! still passes the whole guard, as if the request had come with the given
//! caller's certificate.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::service::Routes;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::identity::Caller;

use super::*;

/// A channel to services in the same process that still passes the guard:
/// the given caller is attached to each request as if it had come with that
/// certificate, and the table, limits, deadline and lockout apply.
///
/// Use it with any generated client, e.g.
/// `CertificateAuthorityClient::new(InProcessChannel::new(routes, &guard, caller))`,
/// so the provisioner's code is the same whether the CA is in-process
/// (`serve all`) or across the network.
#[derive(Clone)]
pub struct InProcessChannel {
    service: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>,
    caller: Caller,
}

impl std::fmt::Debug for InProcessChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessChannel")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl InProcessChannel {
    /// A channel into `routes`, guarded by `guard`, calling as `caller`.
    pub fn new(routes: Routes, guard: &Guard, caller: Caller) -> Self {
        Self::from_service(routes, guard, caller)
    }

    /// A channel into any HTTP service that answers gRPC (e.g. one generated
    /// server, or a test double), guarded by `guard`, calling as `caller`.
    pub fn from_service<S>(service: S, guard: &Guard, caller: Caller) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            service: BoxCloneSyncService::new(guard.layer(service)),
            caller,
        }
    }

    /// The caller every request is made as.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl Service<http::Request<Body>> for InProcessChannel {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        req.extensions_mut()
            .insert(InProcessCaller(self.caller.clone()));
        Box::pin(self.service.call(req))
    }
}
