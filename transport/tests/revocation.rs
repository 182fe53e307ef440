//! Who may present a certificate as a client, and for how long: server
//! certificates never (issue 12.5), revoked certificates not from their next
//! call on (issue 12.7), other sites' site-bound callers not at a site's
//! servers (issue 13, "the two domains").

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;

use common::{TestCa, TestServer};
use rustls_pki_types::PrivateKeyDer;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use transport::pki::{LeafParams, Validity};
use transport::revocation::{self, Reason, Revoke};
use transport::{ClientTls, Guard, LockoutTracker, Metrics, Role, ServerIdentity, ServerTls};

async fn health(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// The handshake may complete on the client's side (TLS 1.3); the first RPC
/// must then fail at the transport level.
async fn refused_at_handshake(tls: &ClientTls, server: &TestServer) {
    if let Ok(channel) = tls.connect(&server.endpoint()).await {
        let err = health(channel).await.unwrap_err();
        assert!(
            matches!(
                err.code(),
                Code::Unavailable | Code::Unknown | Code::Internal
            ),
            "{err:?}"
        );
    }
}

fn client_from(ca: &TestCa, cert: rcgen::Certificate, key: &rcgen::KeyPair) -> ClientTls {
    ClientTls::new(
        vec![cert.der().clone()],
        PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        std::slice::from_ref(&ca.cert),
    )
    .unwrap()
}

#[tokio::test]
async fn server_certificates_and_certificates_without_client_auth_are_refused_as_clients() {
    let ca = Arc::new(TestCa::new());
    let server = TestServer::operational(ca.clone(), common::test_limits()).await;

    // A server's credentials (serverAuth only, a server URI) as a client.
    let (chain, key) = ca.server_credentials();
    let as_client = ClientTls::new(chain, key, std::slice::from_ref(&ca.cert)).unwrap();
    refused_at_handshake(&as_client, &server).await;

    // A caller URI does not make up for a missing clientAuth: neither with
    // serverAuth only nor without any EKU (which WebPKI alone would accept).
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca.cert, &ca.key).unwrap();
    for eku in [vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth], vec![]] {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "urn:trustline:caller:provisioner:hq:ledger"
                .try_into()
                .unwrap(),
        )];
        params.extended_key_usages = eku;
        let cert = params.signed_by(&key, &issuer).unwrap();
        refused_at_handshake(&client_from(&ca, cert, &key), &server).await;
    }

    // Clients still get in.
    health(server.channel(&common::station("site-a", "st-01")).await)
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_identity_is_written_without_a_role() {
    let ca = TestCa::new();
    let server = ServerIdentity::new("site-a", "ledger").unwrap();
    let params = LeafParams::server(&server, vec![], vec![], Validity::days_from_now(1)).unwrap();
    assert_eq!(params.server_identity(), Some(server.clone()));
    let issued = transport::pki::issue_with_new_key(&ca.cert, &ca.key, &params).unwrap();
    let der = pem::parse(&issued.certificate_pem).unwrap().into_contents();
    assert_eq!(ServerIdentity::from_certificate(&der).unwrap(), server);
    let text = String::from_utf8_lossy(&der).into_owned();
    assert!(!text.contains("provisioner"), "a role leaked into {text:?}");
}

/// A server on a CRL in `dir`, signed by the test CA.
async fn server_with_crl(ca: Arc<TestCa>, dir: &std::path::Path) -> TestServer {
    revocation::write_empty_crl(dir, &ca.cert, &ca.key).unwrap();
    let revocations =
        transport::Revocations::open(&dir.join(revocation::CRL_FILE), &ca.cert).unwrap();
    let (chain, key) = ca.server_credentials();
    let tls = ServerTls::with_revocations(chain, key, std::slice::from_ref(&ca.cert), revocations)
        .unwrap();
    let guard = Guard::new(common::test_limits(), Metrics::new());
    TestServer::start_with(ca, guard, tls, |guard| {
        transport::operational_routes(guard).unwrap().0.routes()
    })
    .await
}

fn serial_of(tls_cert_pem: &str) -> Vec<u8> {
    let der = pem::parse(tls_cert_pem).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test]
async fn a_revoked_client_is_refused_on_its_next_call_and_cannot_reconnect() {
    let ca = Arc::new(TestCa::new());
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_crl(ca.clone(), dir.path()).await;

    let station = common::station("site-a", "st-01");
    let issued = transport::pki::issue_with_new_key(
        &ca.cert,
        &ca.key,
        &LeafParams {
            caller: station.clone(),
            kind: transport::pki::CertificateKind::Client,
            validity: Validity::days_from_now(1),
        },
    )
    .unwrap();
    let paths = transport::pki::write_credentials(dir.path(), "st-01", &issued, &ca.cert).unwrap();
    let tls = ClientTls::from_files(&paths).unwrap();
    let channel = tls.connect(&server.endpoint()).await.unwrap();
    health(channel.clone()).await.unwrap();

    revocation::revoke(
        dir.path(),
        &ca.cert,
        &ca.key,
        &[Revoke {
            serial: serial_of(&issued.certificate_pem),
            reason: Reason::KeyCompromise,
        }],
    )
    .unwrap();

    // The open connection's next call, no restart: UNAUTHENTICATED.
    let err = health(channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    // A new connection does not get past the handshake.
    refused_at_handshake(&tls, &server).await;
    // Another caller of the same site is unaffected.
    health(server.channel(&common::station("site-a", "st-02")).await)
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_guard_pinned_to_a_site_refuses_site_bound_callers_of_other_sites() {
    let ca = Arc::new(TestCa::new());
    let limits = common::test_limits();
    let lockouts = Arc::new(LockoutTracker::new(limits.lockout.clone()));
    let guard = Guard::pinned_to_site(limits, Metrics::new(), lockouts, "site-a");
    let tls = ca.server_tls();
    let server = TestServer::start_with(ca.clone(), guard, tls, |guard| {
        transport::operational_routes(guard).unwrap().0.routes()
    })
    .await;
    for role in [Role::Station, Role::Provisioner, Role::Site] {
        let other = common::caller(role, "site-b", "x");
        let err = health(server.channel(&other).await).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}: {err:?}");
        assert!(
            err.message().contains("site site-a only"),
            "{}",
            err.message()
        );
        health(server.channel(&common::caller(role, "site-a", "x")).await)
            .await
            .unwrap();
    }
    // The OEM's callers are not bound to a site.
    health(server.channel(&common::admin()).await)
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}
