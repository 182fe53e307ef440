//! Mutual TLS over real sockets (2.4.13.25): the right clients get in with
//! their certificate's identity; no certificate, an expired one, one from
//! another CA, one naming no caller, TLS 1.2 and plaintext are all refused.
//! Also: health and reflection, graceful shutdown, the metrics endpoint, and
//! issued certificate files.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestCa, TestServer};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{ClientTls, CredentialPaths, Role, ServerTls};
use trustline_proto::v1::admin_client::AdminClient;
use trustline_proto::v1::ListLockoutsRequest;

async fn health_check(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Connecting may succeed (TLS 1.3: the client finishes before the server
/// judges its certificate); then the first RPC must fail.
async fn assert_refused(tls: &ClientTls, server: &TestServer) {
    match tls.connect(&server.endpoint()).await {
        Err(_) => {}
        Ok(channel) => {
            let err = health_check(channel).await.unwrap_err();
            assert!(
                matches!(
                    err.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal
                ),
                "unexpected status {err:?}"
            );
        }
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    transport::install_crypto_provider()
}

fn roots(ca: &TestCa) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    roots
}

#[tokio::test]
async fn clients_with_a_service_certificate_get_in_with_their_role() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;

    let station = common::station("site-a", "st-01");
    health_check(server.channel(&station).await).await.unwrap();

    // The role comes from the certificate: a station may not list lockouts,
    // an admin may.
    let err = AdminClient::new(server.channel(&station).await)
        .list_lockouts(ListLockoutsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("station/site-a/st-01"),
        "{}",
        err.message()
    );
    let list = AdminClient::new(server.channel(&common::admin()).await)
        .list_lockouts(ListLockoutsRequest {})
        .await
        .unwrap();
    assert!(list.into_inner().lockouts.is_empty());

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_expired_and_foreign_client_certificates_are_refused() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;
    let station = common::station("site-a", "st-01");

    // No client certificate at all.
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(&ca))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    assert_refused(&ClientTls::from_config(Arc::new(config)), &server).await;

    // Expired yesterday.
    let now = time::OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    assert_refused(&ca.client_tls_with(&station, expired), &server).await;

    // Issued by another CA (that the client itself trusts the server's CA
    // does not help it).
    let other = TestCa::new();
    let (chain, key) = other.issue(
        &station,
        CertificateKind::Client,
        Validity::days_from_now(1),
    );
    let foreign = ClientTls::new(chain, key, std::slice::from_ref(&ca.cert)).unwrap();
    assert_refused(&foreign, &server).await;

    // The server still serves good clients.
    health_check(server.channel(&station).await).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_verified_certificate_naming_no_caller_is_never_allowed() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;

    // Signed by the service CA, valid, but without a caller URI.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca.cert, &ca.key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let tls = ClientTls::new(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        std::slice::from_ref(&ca.cert),
    )
    .unwrap();
    let channel = tls.connect(&server.endpoint()).await.unwrap();
    let err = health_check(channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_1_2_and_plaintext_clients_are_refused() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;
    let station = common::station("site-a", "st-01");

    // TLS 1.2 only, with a perfectly good certificate.
    let (chain, key) = ca.issue(
        &station,
        CertificateKind::Client,
        Validity::days_from_now(1),
    );
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(&ca))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let err = ClientTls::from_config(Arc::new(config))
        .connect(&server.endpoint())
        .await
        .unwrap_err();
    assert!(matches!(err, transport::Error::Connect { .. }), "{err}");

    // A plaintext gRPC client.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let err = health_check(channel).await.unwrap_err();
            assert_ne!(err.code(), Code::Ok);
        }
    }

    // Raw bytes of an HTTP/2 preface: the server answers, if at all, with a
    // TLS alert, never with HTTP/2, and closes.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .ok();
    assert!(buf.is_empty() || buf[0] == 0x15, "not a TLS alert: {buf:?}");

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_is_graceful_and_closes_the_listener() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;
    let station = common::station("site-a", "st-01");
    let channel = server.channel(&station).await;
    health_check(channel.clone()).await.unwrap();
    let addr = server.addr;
    // An idle, open connection does not hold shutdown up.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn reflection_lists_the_trustline_services() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;
    let channel = server
        .channel(&common::caller(Role::Operator, "hq", "op"))
        .await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "trustline.v1.Provisioning",
        "trustline.v1.CertificateAuthority",
        "trustline.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    drop(stream);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_are_served_on_loopback_only() {
    let metrics = transport::Metrics::new();
    metrics.device_certified("site-a");
    metrics.observe_hsm("sign", Duration::from_micros(120));
    metrics.set_ledger_entries(42);
    metrics.observe_ledger_append(Duration::from_millis(2));

    let public = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = transport::serve_metrics(public, metrics.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, transport::Error::Listener(_)), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(transport::serve_metrics(listener, metrics, async move {
        let _ = stopped.await;
    }));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for expected in [
        r#"trustline_devices_certified_total{site="site-a"} 1"#,
        "trustline_ledger_entries 42",
        r#"trustline_hsm_latency_seconds_count{operation="sign"} 1"#,
        "trustline_ledger_append_latency_seconds_count 1",
    ] {
        assert!(body.contains(expected), "{expected} missing from {body}");
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn issued_credential_files_load_and_the_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Arc::new(TestCa::new());
    let dir = tempfile::tempdir().unwrap();
    let params = LeafParams {
        caller: common::caller(Role::Provisioner, "hq", "prov-1"),
        kind: CertificateKind::Server {
            dns_names: vec!["ca.trustline.internal".to_owned()],
            ip_addresses: vec!["10.0.0.7".parse().unwrap()],
        },
        validity: Validity::days_from_now(30),
    };
    let issued = pki::issue_with_new_key(&ca.cert, &ca.key, &params).unwrap();
    let paths = pki::write_credentials(dir.path(), "prov-1", &issued, &ca.cert).unwrap();
    assert_eq!(paths, CredentialPaths::in_dir(dir.path(), "prov-1"));
    let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwritten.
    assert!(pki::write_credentials(dir.path(), "prov-1", &issued, &ca.cert).is_err());

    // The files load, and the server certificate names what it should: a
    // server identity, never a caller (issue 12.5).
    ServerTls::from_files(&paths).unwrap();
    let der = rustls_pki_types::CertificateDer::from(
        pem::parse(&issued.certificate_pem)
            .unwrap()
            .contents()
            .to_vec(),
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names = format!("{:?}", san.value.general_names);
    for expected in [
        "urn:trustline:server:hq:prov-1",
        "localhost",
        "ca.trustline.internal",
        "[127, 0, 0, 1]",
        "[10, 0, 0, 7]",
    ] {
        assert!(names.contains(expected), "{expected} not in {names}");
    }
    assert!(!names.contains("urn:trustline:caller:"), "{names}");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert_eq!(cert.raw_serial().len(), 16);
    assert!(transport::Caller::from_certificate(&der).is_err());
    assert_eq!(
        transport::ServerIdentity::from_certificate(&der)
            .unwrap()
            .to_uri(),
        "urn:trustline:server:hq:prov-1"
    );

    // A certificate cannot be issued with a key that is not the CA's.
    let wrong = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    assert!(pki::issue_with_new_key(&ca.cert, &wrong, &params).is_err());
}

#[tokio::test]
async fn a_connection_outliving_its_certificate_is_refused_from_then_on() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;
    let now = time::OffsetDateTime::now_utc();
    let short = Validity {
        not_before: now - time::Duration::minutes(1),
        not_after: now + time::Duration::seconds(2),
    };
    let tls = ca.client_tls_with(&common::station("site-a", "st-01"), short);
    let channel = tls.connect(&server.endpoint()).await.unwrap();
    health_check(channel.clone()).await.unwrap();
    // X.509 times have one-second resolution: wait until surely past it.
    let expired_at = std::time::SystemTime::from(now + time::Duration::seconds(3));
    let wait = expired_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let err = health_check(channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_guard_also_reads_identities_on_tonics_own_tls_listener() {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let ca = Arc::new(TestCa::new());
    let params = LeafParams {
        caller: common::caller(Role::Provisioner, "hq", "server"),
        kind: CertificateKind::Server {
            dns_names: vec![],
            ip_addresses: vec![],
        },
        validity: Validity::days_from_now(1),
    };
    let issued = pki::issue_with_new_key(&ca.cert, &ca.key, &params).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &issued.certificate_pem,
            issued.key_pem.as_bytes(),
        ))
        .client_ca_root(Certificate::from_pem(pki::to_pem(&ca.cert)));
    let guard = transport::Guard::new(common::test_limits(), transport::Metrics::new());
    let routes = transport::operational_routes(&guard).unwrap().0.routes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .layer(guard.clone())
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            }),
    );
    let endpoint = format!("https://{addr}");
    let station = common::station("site-a", "st-01");
    let channel = ca.client_tls(&station).connect(&endpoint).await.unwrap();
    health_check(channel.clone()).await.unwrap();
    let err = AdminClient::new(channel)
        .list_lockouts(ListLockoutsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("station/site-a/st-01"));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
