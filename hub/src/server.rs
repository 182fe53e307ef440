//! Serving the hub: its routes behind `transport`'s guard, and a
//! mini-redis-shaped [`run`] that a binary calls with a listener and a
//! shutdown future (`trustline serve hub`, phase 2).

use std::future::Future;

use tokio::net::TcpListener;
use tonic::service::Routes;
use transport::{Guard, ServerTls};

use crate::hub::Hub;
use crate::service::HubService;

/// Largest `PushEntries` request the Witness service decodes: a full batch
/// of site entries (certificates and attestations of a few KiB each), well
/// above the guard's default limit for single-device requests.
pub const WITNESS_MAX_DECODE_BYTES: usize = 16 << 20;

/// The hub's routes: `Witness`, `Registry` and the operational services
/// (health, reflection, Admin for lockouts). Use them with
/// [`transport::serve`] (see [`run`]) or an [`transport::InProcessChannel`].
///
/// # Errors
/// [`transport::Error`] when the operational routes cannot be built.
pub fn routes(hub: &Hub, guard: &Guard) -> Result<Routes, transport::Error> {
    Ok(routes_builder(hub, guard)?.routes())
}

/// As [`routes`], still open for more services (`trustline serve hub`
/// adds the `Ownership` service, issue 13 item 4).
///
/// # Errors
/// As [`routes`].
pub fn routes_builder(
    hub: &Hub,
    guard: &Guard,
) -> Result<tonic::service::RoutesBuilder, transport::Error> {
    let limits = guard.limits();
    let (mut builder, _health) = transport::operational_routes(guard)?;
    let service = HubService::new(hub.clone());
    builder.add_service(
        service
            .witness_server()
            .max_decoding_message_size(limits.max_decode_bytes.max(WITNESS_MAX_DECODE_BYTES))
            .max_encoding_message_size(limits.max_encode_bytes),
    );
    builder.add_service(
        service
            .registry_server()
            .max_decoding_message_size(limits.max_decode_bytes)
            .max_encoding_message_size(limits.max_encode_bytes),
    );
    Ok(builder)
}

/// Serves the hub on `listener` over TLS 1.3 with client certificates,
/// every call through `guard` (role table, limits, lockouts), until
/// `shutdown` completes; in-flight calls are drained first.
///
/// # Errors
/// [`transport::Error`] when the routes cannot be built or the server
/// fails.
pub async fn run(
    hub: Hub,
    listener: TcpListener,
    tls: ServerTls,
    guard: Guard,
    shutdown: impl Future<Output = ()>,
) -> Result<(), transport::Error> {
    let routes = routes(&hub, &guard)?;
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        witness = %hub.witness().verifier_key(),
        "hub serving"
    );
    transport::serve(routes, listener, tls, guard, shutdown).await
}
