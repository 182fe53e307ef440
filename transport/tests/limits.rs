//! Limits over real mTLS connections (2.4.13.30, 2.4.14.21): oversized
//! messages, floods and lockouts cleared by an admin, deadlines (also
//! cutting a response stream), and per-caller concurrency. Refused calls
//! never reach their handler.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{TestCa, TestServer};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use transport::{Guard, InProcessChannel, Limits, MessageLimits, Metrics, RateLimit};
use trustline_proto::v1::admin_client::AdminClient;
use trustline_proto::v1::admin_server::{Admin, AdminServer};
use trustline_proto::v1::{
    ClearLockoutRequest, ClearLockoutResponse, ListLockoutsRequest, ListLockoutsResponse,
};

/// An `Admin` double: `ListLockouts` never answers, `ClearLockout` counts.
#[derive(Default, Clone)]
struct TestAdmin {
    started: Arc<AtomicUsize>,
    cleared: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Admin for TestAdmin {
    async fn list_lockouts(
        &self,
        _: Request<ListLockoutsRequest>,
    ) -> Result<Response<ListLockoutsResponse>, Status> {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }

    async fn clear_lockout(
        &self,
        _: Request<ClearLockoutRequest>,
    ) -> Result<Response<ClearLockoutResponse>, Status> {
        self.cleared.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ClearLockoutResponse { was_locked: false }))
    }
}

async fn test_admin_server(limits: Limits, admin: TestAdmin) -> TestServer {
    let ca = Arc::new(TestCa::new());
    TestServer::start(ca, limits, move |guard| {
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(AdminServer::new(admin).with_message_limits(guard.limits()));
        routes.routes()
    })
    .await
}

async fn check(channel: tonic::transport::Channel) -> Result<(), Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_the_handler_runs() {
    let mut limits = common::test_limits();
    limits.max_decode_bytes = 1024;
    let admin = TestAdmin::default();
    let server = test_admin_server(limits, admin.clone()).await;
    let mut client = AdminClient::new(server.channel(&common::admin()).await);

    let err = client
        .clear_lockout(ClearLockoutRequest {
            caller: "x".repeat(4096),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert_eq!(admin.cleared.load(Ordering::SeqCst), 0);

    client
        .clear_lockout(ClearLockoutRequest {
            caller: "station/site-a/st-01".into(),
        })
        .await
        .unwrap();
    assert_eq!(admin.cleared.load(Ordering::SeqCst), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flooding_station_is_limited_then_locked_out_until_an_admin_clears_it() {
    let mut limits = common::test_limits();
    // Five calls, then (practically) no refill.
    limits.rate = RateLimit {
        per_second: 0.001,
        burst: 5,
    };
    limits.lockout.threshold = 10;
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca, limits).await;
    let station = common::station("site-a", "st-01");
    let channel = server.channel(&station).await;

    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(match check(channel.clone()).await {
            Ok(()) => Code::Ok,
            Err(status) => {
                if status.code() == Code::PermissionDenied {
                    assert!(status.message().contains("locked out"), "{status:?}");
                }
                status.code()
            }
        });
    }
    let expected: Vec<Code> = [Code::Ok; 5]
        .into_iter()
        .chain([Code::ResourceExhausted; 10])
        .chain([Code::PermissionDenied; 15])
        .collect();
    assert_eq!(codes, expected);

    // Other stations are unaffected.
    check(server.channel(&common::station("site-a", "st-02")).await)
        .await
        .unwrap();

    // The admin sees the lockout and why, and clears it.
    let mut admin = AdminClient::new(server.channel(&common::admin()).await);
    let lockouts = admin
        .list_lockouts(ListLockoutsRequest {})
        .await
        .unwrap()
        .into_inner()
        .lockouts;
    assert_eq!(lockouts.len(), 1);
    assert_eq!(lockouts[0].caller, "station/site-a/st-01");
    assert!(lockouts[0].since_ms > 0);
    assert!(
        lockouts[0]
            .reasons
            .last()
            .unwrap()
            .contains("RESOURCE_EXHAUSTED")
            && lockouts[0].reasons.last().unwrap().contains("rate limit"),
        "{:?}",
        lockouts[0].reasons
    );
    let cleared = admin
        .clear_lockout(ClearLockoutRequest {
            caller: station.id(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.was_locked);
    assert!(server.guard.lockouts().lockouts().is_empty());

    // No longer locked out (its bucket is still empty, so: rate-limited).
    let err = check(channel.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Refused calls never reached the handler: exactly 6 health checks ran.
    let text = server.guard.metrics().encode();
    assert!(
        text.contains(r#"trustline_rpcs_total{method="/grpc.health.v1.Health/Check",code="OK"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trustline_refusals_total{reason="locked_out"} 15"#),
        "{text}"
    );
    assert!(text.contains("trustline_lockouts 0"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_call_past_the_server_deadline_is_refused() {
    let mut limits = common::test_limits();
    limits.max_deadline_ms = 300;
    let admin = TestAdmin::default();
    let server = test_admin_server(limits, admin.clone()).await;
    let mut client = AdminClient::new(server.channel(&common::admin()).await);
    let started = std::time::Instant::now();
    let err = client
        .list_lockouts(ListLockoutsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("300 ms"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(admin.started.load(Ordering::SeqCst), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_client_grpc_timeout_is_honoured() {
    // In-process, so only the server side can time the call out.
    let admin = TestAdmin::default();
    let guard = Guard::new(common::test_limits(), Metrics::new());
    let channel =
        InProcessChannel::from_service(AdminServer::new(admin.clone()), &guard, common::admin());
    let mut request = Request::new(ListLockoutsRequest {});
    request.set_timeout(Duration::from_millis(100));
    let err = AdminClient::new(channel)
        .list_lockouts(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("100 ms"), "{}", err.message());
}

#[tokio::test]
async fn a_response_stream_is_cut_at_the_deadline() {
    let mut limits = common::test_limits();
    limits.max_deadline_ms = 300;
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca, limits).await;
    let channel = server.channel(&common::station("site-a", "st-01")).await;
    // Health/Watch streams until the client leaves.
    let mut stream = HealthClient::new(channel)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    let err = tokio::time::timeout(Duration::from_secs(4), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_in_flight_are_capped_per_caller() {
    let mut limits = common::test_limits();
    limits.max_concurrent_per_caller = 1;
    // The polling below must not lock the station out.
    limits.lockout.threshold = 1000;
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca, limits).await;
    let station = common::station("site-a", "st-01");
    let channel = server.channel(&station).await;

    // An open Watch stream holds the station's one slot.
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(watch.next().await.unwrap().is_ok());
    let err = check(channel.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("in flight"), "{}", err.message());
    // Another caller has its own slot.
    check(server.channel(&common::station("site-a", "st-02")).await)
        .await
        .unwrap();

    // Closing the stream frees the slot (once the server sees the reset).
    drop(watch);
    let mut freed = false;
    for _ in 0..100 {
        if check(channel.clone()).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the slot was never released");
    server.shutdown().await.unwrap();
}
