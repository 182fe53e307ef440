//! Prometheus metrics: one registry, handles the services increment, and a
//! text endpoint on its own port.
//!
//! The endpoint speaks plain HTTP/1.1 and [`serve_metrics`] refuses any
//! listener that is not bound to a loopback address: metrics are the only
//! thing Trustline serves without mutual TLS, and they hold only counts and
//! latencies (no identities, no keys). Expose them further through a local
//! scraper or an authenticating proxy.
//!
//! Metric names (all prefixed `trustline_`):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `devices_certified_total` | counter | `site` |
//! | `refusals_total` | counter | `reason` |
//! | `hsm_latency_seconds` | histogram | `operation` |
//! | `ledger_entries` | gauge | — |
//! | `ledger_append_latency_seconds` | histogram | — |
//! | `rpcs_total` | counter | `method`, `code` |
//! | `rpc_latency_seconds` | histogram | `method` |
//! | `connections` | gauge | — |
//! | `lockouts` | gauge | — |
//! | `uplink_cosigned_size` | gauge | — |
//! | `uplink_unwitnessed_entries` | gauge | — |
//! | `uplink_forked` | gauge | — |
//! | `uplink_cosignatures_total` | counter | — |

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::Code;

use crate::Error;

/// Label of [`Metrics::devices_certified`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// The factory site.
    pub site: String,
}

/// Label of [`Metrics::refusals`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A short, fixed reason, e.g. `permission_denied`, `rate_limited`,
    /// `duplicate`, `counterfeit` (never free text: it is a label).
    pub reason: String,
}

/// Label of [`Metrics::hsm_latency`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The HSM operation, e.g. `sign`, `generate_wrapped_key`.
    pub operation: String,
}

/// Labels of [`Metrics::rpcs`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The fully-qualified method, or `unknown` for paths not in the table.
    pub method: String,
    /// The final gRPC status, e.g. `OK`, `PERMISSION_DENIED`.
    pub code: String,
}

/// Label of [`Metrics::rpc_latency`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The fully-qualified method, or `unknown`.
    pub method: String,
}

/// A histogram constructor, as `Family` needs one per label set.
pub type HistogramFn = fn() -> Histogram;

/// Every Trustline metric. Cloning is cheap and clones share the values.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Devices certified, by site.
    pub devices_certified: Family<SiteLabel, Counter>,
    /// Refused requests, by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// Time spent in HSM operations, by operation.
    pub hsm_latency: Family<OperationLabel, Histogram, HistogramFn>,
    /// Entries in the custody ledger.
    pub ledger_entries: Gauge,
    /// Time from append request to durable acknowledgement.
    pub ledger_append_latency: Histogram,
    /// Finished RPCs by method and final status.
    pub rpcs: Family<RpcLabels, Counter>,
    /// RPC latency by method (until the response ends).
    pub rpc_latency: Family<MethodLabel, Histogram, HistogramFn>,
    /// Open mTLS connections.
    pub connections: Gauge,
    /// Callers locked out now.
    pub lockouts: Gauge,
    /// A site's uplink to the OEM hub (issue 13).
    pub uplink: UplinkMetrics,
}

/// A site uplink's metrics (issue 13, 2.4.14.20).
#[derive(Debug, Clone, Default)]
pub struct UplinkMetrics {
    /// Tree size of the last checkpoint the hub cosigned.
    pub cosigned_size: Gauge,
    /// Site ledger entries the hub has not cosigned yet.
    pub unwitnessed: Gauge,
    /// 1 once the uplink stopped on a fork answer from the hub, else 0.
    pub forked: Gauge,
    /// Cosignatures received.
    pub cosignatures: Counter,
}

fn hsm_histogram() -> Histogram {
    // 50 µs .. ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn rpc_histogram() -> Histogram {
    // 100 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every Trustline metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trustline");
        let devices_certified = Family::<SiteLabel, Counter>::default();
        let refusals = Family::<ReasonLabel, Counter>::default();
        let hsm_latency = Family::new_with_constructor(hsm_histogram as HistogramFn);
        let ledger_entries = Gauge::default();
        let ledger_append_latency = hsm_histogram();
        let rpcs = Family::<RpcLabels, Counter>::default();
        let rpc_latency = Family::new_with_constructor(rpc_histogram as HistogramFn);
        let connections = Gauge::default();
        let lockouts = Gauge::default();
        let uplink = UplinkMetrics::default();
        registry.register(
            "devices_certified",
            "Devices certified",
            devices_certified.clone(),
        );
        registry.register("refusals", "Refused requests", refusals.clone());
        registry.register(
            "hsm_latency_seconds",
            "HSM operation latency",
            hsm_latency.clone(),
        );
        registry.register(
            "ledger_entries",
            "Entries in the custody ledger",
            ledger_entries.clone(),
        );
        registry.register(
            "ledger_append_latency_seconds",
            "Ledger append latency until durable",
            ledger_append_latency.clone(),
        );
        registry.register("rpcs", "Finished RPCs", rpcs.clone());
        registry.register("rpc_latency_seconds", "RPC latency", rpc_latency.clone());
        registry.register("connections", "Open mTLS connections", connections.clone());
        registry.register("lockouts", "Callers locked out", lockouts.clone());
        registry.register(
            "uplink_cosigned_size",
            "Tree size of the last checkpoint the hub cosigned",
            uplink.cosigned_size.clone(),
        );
        registry.register(
            "uplink_unwitnessed_entries",
            "Site ledger entries the hub has not cosigned yet",
            uplink.unwitnessed.clone(),
        );
        registry.register(
            "uplink_forked",
            "1 once the uplink stopped on a fork answer from the hub",
            uplink.forked.clone(),
        );
        registry.register(
            "uplink_cosignatures",
            "Cosignatures received from the hub",
            uplink.cosignatures.clone(),
        );
        Self {
            registry: Arc::new(registry),
            devices_certified,
            refusals,
            hsm_latency,
            ledger_entries,
            ledger_append_latency,
            rpcs,
            rpc_latency,
            connections,
            lockouts,
            uplink,
        }
    }

    /// The process-wide metrics, for code that has no handle passed to it.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::new)
    }

    /// Counts one certified device.
    pub fn device_certified(&self, site: &str) {
        self.devices_certified
            .get_or_create(&SiteLabel {
                site: site.to_owned(),
            })
            .inc();
    }

    /// Counts one refusal; `reason` must be a short fixed word (it is a label).
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records one HSM operation's latency.
    pub fn observe_hsm(&self, operation: &str, elapsed: Duration) {
        self.hsm_latency
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the number of ledger entries.
    pub fn set_ledger_entries(&self, entries: u64) {
        self.ledger_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Records one ledger append's latency (request to durable ack).
    pub fn observe_ledger_append(&self, elapsed: Duration) {
        self.ledger_append_latency.observe(elapsed.as_secs_f64());
    }

    /// Records one finished RPC.
    pub fn rpc_finished(&self, method: &str, code: Code, elapsed: Duration) {
        self.rpcs
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code: code_name(code).to_owned(),
            })
            .inc();
        self.rpc_latency
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The canonical name of a gRPC status code, e.g. `PERMISSION_DENIED`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Concurrent scrapes served at once.
const MAX_SCRAPES: usize = 8;

/// Serves `GET /metrics` (OpenMetrics text) on `listener` until `shutdown`
/// completes. Any other path answers 404.
///
/// # Errors
/// [`Error::Listener`] when the listener is not bound to a loopback address
/// (metrics are served without TLS, so only to this machine).
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::Listener(e.to_string()))?;
    if !local.ip().is_loopback() {
        return Err(Error::Listener(format!(
            "the metrics endpoint is plain HTTP and must listen on loopback, not {local}"
        )));
    }
    let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                continue;
            }
        };
        let Ok(permit) = scrapes.clone().try_acquire_owned() else {
            // Too many scrapes at once: close the connection.
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response =
                        if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                            http::Response::builder()
                                .header(
                                    http::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(metrics.encode())
                        } else {
                            http::Response::builder()
                                .status(http::StatusCode::NOT_FOUND)
                                .body("not found\n".to_owned())
                        };
                    response
                }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection failed");
            }
            drop(permit);
        });
    }
}
