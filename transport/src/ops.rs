//! Operational services every Trustline server carries: gRPC health,
//! reflection over `trustline_proto::FILE_DESCRIPTOR_SET`, and `Admin`.
//! Any authenticated caller may use health and reflection (see
//! [`crate::authz`]); they still go through mTLS and the guard.

use tonic::service::RoutesBuilder;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::admin::AdminService;
use crate::guard::Guard;
use crate::limits::{Limits, MessageLimits};
use crate::Error;

/// The gRPC health service and its reporter (set each service serving once
/// it is ready: `reporter.set_serving::<CaServer<_>>().await`).
pub fn health_service(limits: &Limits) -> (HealthReporter, HealthServer<HealthService>) {
    let reporter = HealthReporter::new();
    let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()))
        .with_message_limits(limits);
    (reporter, server)
}

/// Routes holding health, reflection (v1 and v1alpha, for older tools) and
/// the `Admin` service for `guard`'s lockouts; add the crate's own services
/// and pass `builder.routes()` to [`crate::serve`].
///
/// # Errors
/// [`Error::Reflection`] when the descriptor sets do not decode (a build
/// problem, not a runtime one).
pub fn operational_routes(guard: &Guard) -> Result<(RoutesBuilder, HealthReporter), Error> {
    let limits = guard.limits();
    let (reporter, health) = health_service(limits);
    let reflection_v1 = reflection_builder()
        .build_v1()
        .map_err(|e| Error::Reflection(e.to_string()))?
        .with_message_limits(limits);
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| Error::Reflection(e.to_string()))?
        .with_message_limits(limits);
    let mut builder = RoutesBuilder::default();
    builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminService::new(guard.clone()).into_server());
    Ok((builder, reporter))
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trustline_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
