//! The role × RPC table against the protos, and the guard layer enforcing it
//! for every role and every method (2.4.13.9, 2.4.16.5); site scoping of
//! stations through the authorized caller's `SiteScope` (2.4.14.22).

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prost::Message;
use tonic::body::Body;
use tonic::{Code, Request, Response, Status};
use tower::ServiceExt;
use transport::authz;
use transport::{Guard, InProcessChannel, Limits, LockoutPolicy, Metrics, Role};
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::provisioning_server::{Provisioning, ProvisioningServer};
use trustline_proto::v1::*;

/// Every method path in `trustline_proto::FILE_DESCRIPTOR_SET`.
fn proto_methods() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(trustline_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = BTreeSet::new();
    for file in set.file {
        let package = file.package().to_owned();
        for service in file.service {
            for method in &service.method {
                methods.insert(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    methods
}

/// The operational methods every server carries besides the protos'.
const OPERATIONAL: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

#[test]
fn every_rpc_in_the_protos_has_a_row() {
    let methods = proto_methods();
    assert!(methods.len() >= 30, "only {} methods found", methods.len());
    let missing: Vec<_> = methods
        .iter()
        .filter(|m| authz::rule_for(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "RPCs with no row in transport::authz::RULES (decide who may call them): {missing:#?}"
    );
}

#[test]
fn every_row_names_a_real_rpc_once() {
    let methods = proto_methods();
    let mut seen = BTreeSet::new();
    for rule in authz::rules() {
        assert!(
            methods.contains(rule.method) || OPERATIONAL.contains(&rule.method),
            "row for a method that does not exist: {}",
            rule.method
        );
        assert!(seen.insert(rule.method), "two rows for {}", rule.method);
        assert!(!rule.roles.is_empty(), "nobody may call {}", rule.method);
    }
}

#[test]
fn the_table_says_what_the_design_says() {
    let allowed = |m: &str| {
        let rule = authz::rule_for(m).unwrap();
        Role::ALL
            .into_iter()
            .filter(|r| rule.allows(*r))
            .collect::<Vec<_>>()
    };
    for m in proto_methods() {
        if m.starts_with("/trustline.v1.CertificateAuthority/")
            || m == "/trustline.v1.CustodyLedger/Append"
        {
            assert_eq!(allowed(&m), [Role::Provisioner], "{m}");
        }
        if m.starts_with("/trustline.v1.Admin/") {
            assert_eq!(allowed(&m), [Role::Admin], "{m}");
        }
        // Only stations run the factory flow, and only for their own site.
        let rule = authz::rule_for(&m).unwrap();
        if rule.allows(Role::Station) && m.starts_with("/trustline.v1.Provisioning/") {
            assert!(
                rule.site_scoped,
                "{m} lets stations act without site scoping"
            );
        }
        // Auditors only read.
        if rule.allows(Role::Auditor) {
            let name = m.rsplit('/').next().unwrap();
            assert!(
                name.starts_with("Get") || name.starts_with("List") || name == "LookupKey",
                "auditor may call {m}"
            );
        }
    }
    assert_eq!(
        allowed("/trustline.v1.Provisioning/OpenOrder"),
        [Role::Admin]
    );
    assert_eq!(
        allowed("/trustline.v1.Ownership/TransferFromManufacturer"),
        [Role::Admin]
    );
    assert_eq!(allowed("/trustline.v1.Ownership/Onboard"), [Role::Operator]);
}

#[test]
fn the_printed_table_has_every_row_and_role() {
    let text = authz::render_table();
    for rule in authz::rules() {
        assert!(text.contains(rule.method), "{} missing", rule.method);
    }
    for role in Role::ALL {
        assert!(text.contains(role.as_str()));
    }
    let json = authz::table_json();
    assert_eq!(json.as_array().unwrap().len(), authz::rules().len());
    assert_eq!(json[0]["roles"][0], "provisioner");
}

/// Limits under which only the table can refuse: no rate limit, no lockout.
fn table_only_limits() -> Limits {
    Limits {
        unlimited_roles: Role::ALL.to_vec(),
        lockout: LockoutPolicy {
            threshold: u32::MAX,
            ..LockoutPolicy::default()
        },
        ..Limits::default()
    }
}

fn grpc_request(path: &str) -> http::Request<Body> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn the_layer_allows_exactly_what_the_table_says_for_every_role_and_method() {
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let handler = tower::service_fn(move |_req: http::Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Status::new(Code::Ok, "").into_http::<Body>()) }
    });
    let guard = Guard::new(table_only_limits(), Metrics::new());
    let mut methods: Vec<String> = proto_methods().into_iter().collect();
    methods.extend(OPERATIONAL.iter().map(|m| (*m).to_owned()));
    let unknown = [
        "/trustline.v1.Provisioning/Nope",
        "/trustline.v1.Admin/ListLockouts/extra",
        "/grpc.health.v1.Health/Check2",
        "/",
    ];

    let mut expected_handled = 0;
    for role in Role::ALL {
        let caller = common::caller(role, "site-a", "c1");
        let channel = InProcessChannel::from_service(handler.clone(), &guard, caller);
        for method in &methods {
            let allowed = authz::rule_for(method).unwrap().allows(role);
            let response = channel.clone().oneshot(grpc_request(method)).await.unwrap();
            let status = Status::from_header_map(response.headers()).unwrap();
            if allowed {
                expected_handled += 1;
                assert_eq!(status.code(), Code::Ok, "{role} {method}: {status:?}");
            } else {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{role} {method}: {status:?}"
                );
                assert!(
                    status.message().contains(role.as_str())
                        && status.message().contains(method.as_str()),
                    "unclear refusal: {}",
                    status.message()
                );
            }
        }
        for method in unknown {
            let response = channel.clone().oneshot(grpc_request(method)).await.unwrap();
            let status = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), Code::PermissionDenied, "{role} {method}");
            assert!(status.message().contains("unknown methods are denied"));
        }
    }
    assert_eq!(handled.load(Ordering::SeqCst), expected_handled);
    assert!(expected_handled > 0);
    // Refusals are visible in the metrics by method and code.
    let text = guard.metrics().encode();
    assert!(
        text.contains(
            r#"method="/trustline.v1.CertificateAuthority/SignCrl",code="PERMISSION_DENIED""#
        ),
        "{text}"
    );
    assert!(text.contains(r#"method="unknown",code="PERMISSION_DENIED""#));
}

/// A Provisioning service that knows two orders and scopes GetOrder by site
/// the way the real one must.
struct SiteScoped {
    orders: HashMap<String, String>,
}

#[tonic::async_trait]
impl Provisioning for SiteScoped {
    async fn open_order(
        &self,
        _: Request<OpenOrderRequest>,
    ) -> Result<Response<OpenOrderResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn close_order(
        &self,
        _: Request<CloseOrderRequest>,
    ) -> Result<Response<CloseOrderResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<OrderStatus>, Status> {
        let scope = transport::authorized(&request)?.scope();
        let id = &request.get_ref().order_id;
        let site = self
            .orders
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no order {id}")))?;
        scope.check(site)?;
        Ok(Response::new(OrderStatus {
            order: Some(ProductionOrder {
                order_id: id.clone(),
                site: site.clone(),
                ..ProductionOrder::default()
            }),
            ..OrderStatus::default()
        }))
    }
    async fn begin_claim(
        &self,
        _: Request<BeginClaimRequest>,
    ) -> Result<Response<BeginClaimResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn complete_claim(
        &self,
        _: Request<CompleteClaimRequest>,
    ) -> Result<Response<CompleteClaimResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn deliver_device_key(
        &self,
        _: Request<DeliverDeviceKeyRequest>,
    ) -> Result<Response<DeliverDeviceKeyResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn certify(
        &self,
        _: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn record_custody(
        &self,
        _: Request<RecordCustodyRequest>,
    ) -> Result<Response<RecordCustodyResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn bind_fdo_header(
        &self,
        _: Request<BindFdoHeaderRequest>,
    ) -> Result<Response<BindFdoHeaderResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type LineStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LineResponse, Status>> + Send + 'static>,
    >;

    /// Each BeginClaim step admitted by the stream guard and scoped by the
    /// step's authorized caller, the way the real service runs its steps.
    async fn line(
        &self,
        request: Request<tonic::Streaming<LineRequest>>,
    ) -> Result<Response<Self::LineStream>, Status> {
        let steps = transport::StreamSteps::of(&request)?.clone();
        let orders = self.orders.clone();
        let inbound = request.into_inner();
        let answers = futures::stream::unfold(Some(inbound), move |inbound| {
            let (steps, orders) = (steps.clone(), orders.clone());
            async move {
                let mut inbound = inbound?;
                let request = match inbound.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return None,
                    Err(s) => return Some((Err(s), None)),
                };
                let Some(line_request::Step::BeginClaim(begin)) = request.step else {
                    return Some((Err(Status::invalid_argument("not a begin claim")), None));
                };
                let step = match steps.begin(LINE, "/trustline.v1.Provisioning/BeginClaim") {
                    Ok(step) => step,
                    Err(transport::StepRefusal::EndStream(s)) => return Some((Err(s), None)),
                    Err(transport::StepRefusal::Step(s)) => {
                        return Some((Ok(refusal(request.id, &s)), Some(inbound)))
                    }
                };
                let site = orders.get(&begin.order_id).cloned().unwrap_or_default();
                let answer = match step.authorized().scope().check(&site) {
                    Ok(()) => {
                        step.finish(Code::Ok, "");
                        LineResponse {
                            id: request.id,
                            result: Some(line_response::Result::BeginClaim(
                                BeginClaimResponse::default(),
                            )),
                        }
                    }
                    Err(e) => {
                        let s = Status::from(e);
                        step.finish(s.code(), s.message());
                        refusal(request.id, &s)
                    }
                };
                Some((Ok(answer), Some(inbound)))
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

const LINE: &str = "/trustline.v1.Provisioning/Line";

fn refusal(id: u64, s: &Status) -> LineResponse {
    LineResponse {
        id,
        result: Some(line_response::Result::Refusal(LineRefusal {
            code: s.code() as i32,
            message: s.message().to_owned(),
            ..LineRefusal::default()
        })),
    }
}

#[tokio::test]
async fn a_line_streams_steps_pass_the_guard_as_their_calls_and_a_lockout_ends_it() {
    let mut limits = table_only_limits();
    limits.lockout.threshold = 3;
    limits.unlimited_roles = vec![];
    limits.rate = transport::RateLimit {
        per_second: 0.001,
        burst: 6,
    };
    let guard = Guard::new(limits, Metrics::new());
    let service = SiteScoped {
        orders: HashMap::from([
            ("order-a".to_owned(), "site-a".to_owned()),
            ("order-b".to_owned(), "site-b".to_owned()),
        ]),
    };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(ProvisioningServer::new(service));
    let routes = routes.routes();
    let station = common::station("site-a", "st-01");
    let mut client = ProvisioningClient::new(InProcessChannel::new(
        routes.clone(),
        &guard,
        station.clone(),
    ));
    let begin = |id: u64, order: &str| LineRequest {
        id,
        step: Some(line_request::Step::BeginClaim(BeginClaimRequest {
            order_id: order.to_owned(),
            attestation: None,
        })),
    };

    // Own site, another site (refused for the step, scoped by the step's
    // rule), own site again: the stream goes on. Opening the stream took
    // one token of the rate limit's burst of 6, each step one more.
    let requests = futures::stream::iter(vec![
        begin(1, "order-a"),
        begin(2, "order-b"),
        begin(3, "order-a"),
        begin(4, "order-a"),
        begin(5, "order-a"),
        begin(6, "order-a"),
    ]);
    let mut answers = client.line(requests).await.unwrap().into_inner();
    let mut codes = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        codes.push(match answer.result.unwrap() {
            line_response::Result::Refusal(r) => Code::from(r.code),
            _ => Code::Ok,
        });
    }
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::PermissionDenied,
            Code::Ok,
            Code::Ok,
            Code::Ok,
            // The seventh token: the rate limit holds per step.
            Code::ResourceExhausted,
        ]
    );
    // Each step is in the metrics under its own method.
    let text = guard.metrics().encode();
    assert!(
        text.contains(r#"method="/trustline.v1.Provisioning/BeginClaim",code="PERMISSION_DENIED""#),
        "{text}"
    );
    // The refused steps counted towards the lockout (another site, the
    // rate): one more refusal locks the station out.
    assert!(!guard.lockouts().is_locked(&station.id()));
    let mut limits = table_only_limits();
    limits.lockout.threshold = 2;
    let guard = Guard::new(limits, Metrics::new());
    let mut client =
        ProvisioningClient::new(InProcessChannel::new(routes, &guard, station.clone()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut answers = client.line(requests).await.unwrap().into_inner();
    for id in 1..=2 {
        tx.send(begin(id, "order-b")).unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert!(matches!(
            answer.result,
            Some(line_response::Result::Refusal(_))
        ));
    }
    assert!(guard.lockouts().is_locked(&station.id()));
    // Locked out: the next step ends the stream.
    tx.send(begin(3, "order-a")).unwrap();
    let err = answers.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("locked out"), "{}", err.message());
}

#[tokio::test]
async fn a_station_of_site_a_cannot_act_on_site_b_orders_and_is_counted() {
    let mut limits = table_only_limits();
    limits.lockout.threshold = 3;
    let guard = Guard::new(limits, Metrics::new());
    let service = SiteScoped {
        orders: HashMap::from([
            ("order-a".to_owned(), "site-a".to_owned()),
            ("order-b".to_owned(), "site-b".to_owned()),
        ]),
    };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(ProvisioningServer::new(service));
    let routes = routes.routes();
    let get = |order: &str| GetOrderRequest {
        order_id: order.to_owned(),
    };

    let station_a = common::station("site-a", "st-01");
    let mut client = ProvisioningClient::new(InProcessChannel::new(
        routes.clone(),
        &guard,
        station_a.clone(),
    ));
    let own = client.get_order(get("order-a")).await.unwrap().into_inner();
    assert_eq!(own.order.unwrap().site, "site-a");
    for _ in 0..2 {
        let err = client.get_order(get("order-b")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("site-b"), "{}", err.message());
    }
    // An auditor reads any site's order.
    let mut auditor = ProvisioningClient::new(InProcessChannel::new(
        routes.clone(),
        &guard,
        common::caller(Role::Auditor, "hq", "aud"),
    ));
    assert!(auditor.get_order(get("order-b")).await.is_ok());

    // The service's refusals count towards the station's lockout: the third
    // one locks it out, and then even its own site's order is refused.
    assert!(!guard.lockouts().is_locked(&station_a.id()));
    let _ = client.get_order(get("order-b")).await.unwrap_err();
    assert!(guard.lockouts().is_locked(&station_a.id()));
    let err = client.get_order(get("order-a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("locked out"), "{}", err.message());
    let reasons = &guard.lockouts().lockouts()[0].reasons;
    assert_eq!(reasons.len(), 3);
    assert!(reasons[0].contains("/trustline.v1.Provisioning/GetOrder: PERMISSION_DENIED"));

    // Unimplemented and not-found answers are not refusals.
    let station_c = common::station("site-c", "st-09");
    let mut client_c =
        ProvisioningClient::new(InProcessChannel::new(routes, &guard, station_c.clone()));
    for _ in 0..4 {
        let err = client_c.get_order(get("order-x")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    assert!(!guard.lockouts().is_locked(&station_c.id()));
}
