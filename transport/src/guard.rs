//! The one tower layer every call passes before reaching a service:
//! identity, lockout, the role × RPC table, rate and concurrency limits, the
//! deadline; and, on the way back, the final status for metrics, logs and
//! lockout counting (2.4.13.9, 2.4.13.30, 2.4.14.21).
//!
//! In order, for each request:
//!
//! 1. **Identity.** The [`Caller`] comes from the connection's verified
//!    client certificate (put there by [`crate::serve`], or tonic's own
//!    `TlsConnectInfo`), or, for in-process calls, from
//!    [`crate::InProcessChannel`]. Nothing else is accepted: a request with
//!    no verified certificate naming a caller, or whose certificate has
//!    expired or been revoked since the handshake (the server's CRL is
//!    re-read when it changes, issue 12.7), is refused `UNAUTHENTICATED`.
//!    A guard pinned to a site ([`Guard::pinned_to_site`]) refuses
//!    site-bound callers (stations, provisioners, site uplinks) of other
//!    sites with `PERMISSION_DENIED`.
//! 2. **Lockout.** A locked-out caller is refused `PERMISSION_DENIED`
//!    ("locked out").
//! 3. **Authorization.** [`crate::authz::authorize`]: `PERMISSION_DENIED`
//!    unless the table allows the caller's role; otherwise it yields the
//!    [`crate::Authorized`] caller.
//! 4. **Rate** (token bucket per caller) and **concurrency** (calls in flight
//!    per caller): `RESOURCE_EXHAUSTED`.
//! 5. **Deadline.** `min(grpc-timeout, max_deadline)`; past it the handler
//!    is dropped (or a response stream cut) with `DEADLINE_EXCEEDED`.
//! 6. The [`crate::Authorized`] caller is inserted into the request
//!    extensions ([`crate::authorized`] reads it) and the service runs.
//!
//! A line stream (a rule with [`crate::Rule::steps`]) passes the same
//! checks when it opens; the call deadline then bounds only the opening, and
//! its handler gets a [`StreamSteps`] that runs the checks of steps 2–4 and
//! the accounting below for each step it carries, under the step's own
//! rule (`guard/steps`).
//!
//! When the response ends, its `grpc-status` (headers or trailers) is
//! counted in `trustline_rpcs_total`, logged with caller id, role, method and
//! code (never payloads), and, when it is a refusal
//! ([`crate::lockout::counts_as_refusal`]), counted towards a lockout.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::authz;
use crate::identity::{Caller, Role};
use crate::limits::{parse_grpc_timeout, ConcurrencyLimiter, Limits, RateLimiter};
use crate::lockout::{LockoutTracker, Recorded};
use crate::metrics::{code_name, Metrics};
use crate::revocation::Revocations;

mod in_process;
mod response;
mod steps;

pub use in_process::InProcessChannel;
use response::{Completion, ObservedBody};
pub use steps::{Step, StepRefusal, StreamSteps};

/// Label used for methods that are not in the table (a fixed word, so an
/// attacker cannot grow the metric label space).
const UNKNOWN_METHOD: &str = "unknown";

/// Logs about refusals and lockouts use this target.
const LOCKOUT_TARGET: &str = "trustline::lockout";

/// The shared state of the guard: limits, limiters, lockouts, metrics.
/// Cloning is cheap; clones share everything. It is also the tower
/// [`Layer`] that wraps services in a [`GuardService`].
#[derive(Clone, Debug)]
pub struct Guard {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    lockouts: Arc<LockoutTracker>,
    rates: RateLimiter,
    concurrency: ConcurrencyLimiter,
    metrics: Metrics,
    home_site: Option<String>,
}

impl Guard {
    /// A guard with in-memory lockouts (cleared by a restart).
    pub fn new(limits: Limits, metrics: Metrics) -> Self {
        let lockouts = Arc::new(LockoutTracker::new(limits.lockout.clone()));
        Self::with_lockouts(limits, metrics, lockouts)
    }

    /// A guard that uses `lockouts` (e.g. one opened with a state file, or
    /// one shared by several servers in one process).
    pub fn with_lockouts(limits: Limits, metrics: Metrics, lockouts: Arc<LockoutTracker>) -> Self {
        Self::build(limits, metrics, lockouts, None)
    }

    /// A guard for the servers of one factory site (issue 13, "the two
    /// domains"): as [`Guard::with_lockouts`], and callers whose role is
    /// bound to a site — stations, provisioners, site uplinks — must belong
    /// to `site`. Every site's credentials come from the OEM's one service
    /// CA, so without this another site's provisioner certificate could call
    /// this site's CA.
    pub fn pinned_to_site(
        limits: Limits,
        metrics: Metrics,
        lockouts: Arc<LockoutTracker>,
        site: &str,
    ) -> Self {
        Self::build(limits, metrics, lockouts, Some(site.to_owned()))
    }

    fn build(
        limits: Limits,
        metrics: Metrics,
        lockouts: Arc<LockoutTracker>,
        home_site: Option<String>,
    ) -> Self {
        let rates = RateLimiter::new(limits.rate);
        let concurrency = ConcurrencyLimiter::new(limits.max_concurrent_per_caller);
        metrics
            .lockouts
            .set(i64::try_from(lockouts.count()).unwrap_or(i64::MAX));
        Self {
            shared: Arc::new(Shared {
                limits,
                lockouts,
                rates,
                concurrency,
                metrics,
                home_site,
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The lockout tracker (also behind the `Admin` service).
    pub fn lockouts(&self) -> &Arc<LockoutTracker> {
        &self.shared.lockouts
    }

    /// The metrics this guard records into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Updates the lockout gauge after a change.
    pub(crate) fn lockouts_changed(&self) {
        let count = self.shared.lockouts.count();
        self.shared
            .metrics
            .lockouts
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Runs the checks on one request, then the service.
    async fn handle<S, B>(
        self,
        mut req: http::Request<B>,
        mut inner: S,
    ) -> Result<http::Response<Body>, S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<Body>>,
    {
        let start = Instant::now();
        let path = req.uri().path().to_owned();
        let rule = authz::rule_for(&path);
        let method = rule.map_or(UNKNOWN_METHOD, |r| r.method);
        let carries_steps = rule.is_some_and(authz::Rule::carries_steps);

        let caller = match identify(&req) {
            Ok(caller) => caller,
            Err(reason) => {
                tracing::warn!(target: LOCKOUT_TARGET, method, path = ?path, reason = %reason, "unauthenticated request refused");
                self.shared.metrics.refused("unauthenticated");
                self.shared
                    .metrics
                    .rpc_finished(method, Code::Unauthenticated, start.elapsed());
                return Ok(Status::unauthenticated(format!(
                    "no verified client certificate naming a caller: {reason}"
                ))
                .into_http());
            }
        };
        let id = caller.id();
        let call = Call {
            caller: &caller,
            method,
            path: &path,
            start,
        };

        let authorized = match self.admit(&call) {
            Ok(authorized) => authorized,
            Err(refused) => return Ok(refused.into_http()),
        };
        let limits = &self.shared.limits;

        let Some(permit) = self.shared.concurrency.try_acquire(&id) else {
            let status = Status::resource_exhausted(format!(
                "{id}: more than {} calls in flight",
                limits.max_concurrent_per_caller
            ));
            return Ok(self
                .refuse(&call, status, "concurrency_limited", Tally::Count)
                .into_http());
        };

        let budget = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(limits.max_deadline(), |t| t.min(limits.max_deadline()));
        let deadline = tokio::time::Instant::now() + budget;

        req.extensions_mut().insert(authorized);
        if carries_steps {
            req.extensions_mut()
                .insert(StreamSteps::new(self.clone(), caller.clone()));
        }
        let completion = Completion {
            guard: self.clone(),
            caller,
            method,
            start,
            _permit: permit,
        };

        let response = match tokio::time::timeout_at(deadline, inner.call(req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                completion.finish(Code::Unknown, "service failed");
                return Err(e);
            }
            Err(_) => {
                let status = deadline_status(budget);
                completion.finish(status.code(), status.message());
                return Ok(status.into_http());
            }
        };

        // A trailers-only response (every error a handler returns) carries
        // its status in the headers; anything else ends with trailers.
        if let Some(status) = Status::from_header_map(response.headers()) {
            completion.finish(status.code(), status.message());
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let body = ObservedBody {
            inner: body,
            completion: Some(completion),
            // A line stream lives as long as the station keeps it; each of
            // its steps has the call deadline (`StreamSteps`).
            deadline: (!carries_steps).then(|| Box::pin(tokio::time::sleep_until(deadline))),
            budget,
            ended: false,
        };
        Ok(http::Response::from_parts(parts, Body::new(body)))
    }

    /// Checks 2–4 of the module doc (lockout, the role table, the rate) for
    /// one call or one step of a line stream; a refusal is already counted
    /// and logged.
    fn admit(&self, call: &Call<'_>) -> Result<authz::Authorized, Status> {
        let id = call.caller.id();
        if self.shared.lockouts.is_locked(&id) {
            let status = Status::permission_denied(format!(
                "{id} is locked out after repeated refused requests; an admin must clear it (Admin.ClearLockout)"
            ));
            return Err(self.refuse(call, status, "locked_out", Tally::Skip));
        }
        if let Some(home) = &self.shared.home_site {
            let site_bound = matches!(
                call.caller.role(),
                Role::Station | Role::Provisioner | Role::Site
            );
            if site_bound && call.caller.site() != home {
                let status = Status::permission_denied(format!(
                    "{id} belongs to site {}; this server serves site {home} only",
                    call.caller.site()
                ));
                return Err(self.refuse(call, status, "other_site", Tally::Count));
            }
        }
        let authorized = match authz::authorize(call.caller, call.path) {
            Ok(authorized) => authorized,
            Err(status) => return Err(self.refuse(call, status, "not_allowed", Tally::Count)),
        };
        let limits = &self.shared.limits;
        if !limits.unlimited_roles.contains(&call.caller.role()) {
            if let Err(wait) = self.shared.rates.try_acquire(&id, call.start) {
                let status = Status::resource_exhausted(format!(
                    "{id}: rate limit of {}/s (burst {}) exceeded; retry in {} ms",
                    limits.rate.per_second,
                    limits.rate.burst,
                    wait.as_millis().max(1)
                ));
                return Err(self.refuse(call, status, "rate_limited", Tally::Count));
            }
        }
        Ok(authorized)
    }

    /// Counts and logs a request (or step) the guard itself refuses.
    fn refuse(
        &self,
        call: &Call<'_>,
        status: Status,
        reason: &'static str,
        tally: Tally,
    ) -> Status {
        let metrics = &self.shared.metrics;
        metrics.refused(reason);
        metrics.rpc_finished(call.method, status.code(), call.start.elapsed());
        tracing::warn!(
            target: LOCKOUT_TARGET,
            caller = %call.caller,
            role = %call.caller.role(),
            method = call.method,
            path = ?call.path,
            code = code_name(status.code()),
            reason,
            "request refused"
        );
        if tally == Tally::Count {
            self.count_refusal(call.caller, call.method, status.code(), status.message());
        }
        status
    }

    fn count_refusal(&self, caller: &Caller, method: &str, code: Code, message: &str) {
        let reason = format!("{method}: {}: {message}", code_name(code));
        match self.shared.lockouts.record_refusal(caller, &reason) {
            Recorded::LockedOut => {
                tracing::warn!(
                    target: LOCKOUT_TARGET,
                    caller = %caller,
                    role = %caller.role(),
                    threshold = self.shared.lockouts.policy().threshold,
                    window_ms = self.shared.lockouts.policy().window_ms,
                    "caller locked out after repeated refused requests"
                );
                self.lockouts_changed();
            }
            Recorded::Counted | Recorded::AlreadyLocked | Recorded::Exempt => {}
        }
    }
}

/// What the guard knows about a call while deciding it.
struct Call<'a> {
    caller: &'a Caller,
    method: &'static str,
    path: &'a str,
    start: Instant,
}

/// Whether a refusal counts towards the caller's lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// It does (see [`counts_as_refusal`]).
    Count,
    /// It does not: the caller is already locked out.
    Skip,
}

fn deadline_status(budget: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "call exceeded its deadline of {} ms",
        budget.as_millis()
    ))
}

/// The identity of one TLS connection, established once after the handshake
/// and attached to each of its requests by [`crate::serve`].
#[derive(Debug, Clone)]
pub(crate) struct PeerIdentity {
    pub(crate) remote_addr: SocketAddr,
    pub(crate) caller: Arc<Result<Caller, String>>,
    /// When the client certificate expires: TLS checked it once, at the
    /// handshake; the guard checks it for every request on the connection.
    pub(crate) not_after: Option<SystemTime>,
    /// The client certificate's serial number.
    pub(crate) serial: Vec<u8>,
    /// The server's CRL, checked for every request on the connection.
    pub(crate) revocations: Option<Arc<Revocations>>,
}

/// Marks a request made in-process by [`InProcessChannel`].
#[derive(Debug, Clone)]
struct InProcessCaller(Caller);

/// Who sent this request. Network identities come first: a request that
/// came over a socket is judged only by its certificate.
fn identify<B>(req: &http::Request<B>) -> Result<Caller, String> {
    let ext = req.extensions();
    if let Some(peer) = ext.get::<PeerIdentity>() {
        if peer.not_after.is_some_and(|t| SystemTime::now() > t) {
            return Err(format!(
                "the client certificate expired during the connection (peer {})",
                peer.remote_addr
            ));
        }
        if let Some(revocations) = &peer.revocations {
            revocations
                .check(&peer.serial)
                .map_err(|reason| format!("{reason} (peer {})", peer.remote_addr))?;
        }
        return peer
            .caller
            .as_ref()
            .clone()
            .map_err(|e| format!("{e} (peer {})", peer.remote_addr));
    }
    if let Some(info) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        return match info.peer_certs() {
            Some(chain) => Caller::from_verified_chain(&chain).map_err(|e| e.to_string()),
            None => Err("the TLS connection presented no client certificate".into()),
        };
    }
    if let Some(InProcessCaller(caller)) = ext.get::<InProcessCaller>() {
        return Ok(caller.clone());
    }
    Err("the request did not arrive over mutual TLS".into())
}

impl<S> Layer<S> for Guard {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind the [`Guard`].
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    guard: Guard,
}

impl<S, B> Service<http::Request<B>> for GuardService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone may not be ready; take the one that is (tower's usual
        // dance for services called from a spawned future).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(self.guard.clone().handle(req, inner))
    }
}
