//! The hub over gRPC (issue 13.1): behind `transport`'s guard, a site's
//! uplink pushes and gets cosigned only its own ledger, every refusal has
//! its code and carries what the hub holds, auditors read the registry,
//! and [`hub::server::run`] serves it all over mTLS on loopback.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::Arc;

use common::{hub, Device, Oem, Site, WitnessKey, WITNESS};
use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::Code;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{Caller, ClientTls, Guard, InProcessChannel, Limits, Metrics, Role, ServerTls};
use trustline_proto::signer::SoftwareSigner;
use trustline_proto::v1;
use trustline_proto::v1::registry_client::RegistryClient;
use trustline_proto::v1::witness_client::WitnessClient;

fn channel(hub: &hub::Hub, guard: &Guard, role: Role, site: &str) -> InProcessChannel {
    let routes = hub::server::routes(hub, guard).unwrap();
    InProcessChannel::new(routes, guard, Caller::new(role, site, "c1").unwrap())
}

fn push(site: &Site, start: u64) -> v1::PushEntriesRequest {
    v1::PushEntriesRequest {
        site: site.name.clone(),
        start,
        entries: site.entries(start, site.ledger.size()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_over_grpc_scopes_sites_and_maps_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let key = WitnessKey::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    let b = Site::open("site-b", &dir.path().join("b"));
    let oem = Oem::new();
    a.open_order(oem.order("PO-1", "site-a", 10, &[]), "PO-1");
    a.certify_many("a", 3, "PO-1", 10);
    b.open_order(oem.order("PO-2", "site-b", 10, &[]), "PO-2");
    let mut clone = Device::new("b0");
    clone.serial = "SN-a-0".into();
    b.certify(&clone, "PO-2", 10);
    let hub = hub(
        &dir.path().join("hub"),
        &key,
        &[a.config(), b.config()],
        None,
    );
    let limits = Limits {
        unlimited_roles: Role::ALL.to_vec(),
        ..Limits::default()
    };
    let guard = Guard::new(limits, Metrics::new());
    let mut site_a = WitnessClient::new(channel(&hub, &guard, Role::Site, "site-a"));
    let mut site_b = WitnessClient::new(channel(&hub, &guard, Role::Site, "site-b"));

    // The key.
    let wk = site_a
        .get_witness_key(v1::GetWitnessKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wk.name, WITNESS);
    assert_eq!(wk.verifier_key, key.cosigner().verifier_key());

    // Site B may not push, be cosigned for, or read site A.
    let err = site_b.push_entries(push(&a, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let cp = a.checkpoint();
    let add = |old_size: u64, proof: Vec<Vec<u8>>, note: &str| v1::AddCheckpointRequest {
        old_size,
        consistency_proof: proof,
        checkpoint: note.to_string(),
    };
    let err = site_b
        .add_checkpoint(add(0, vec![], &cp.note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = site_b
        .get_site_state(v1::GetSiteStateRequest {
            site: "site-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(hub.status("site-a").unwrap().mirror_size, 0);

    // Beyond the mirror: ABORTED with what the hub holds.
    let err = site_a
        .add_checkpoint(add(0, vec![], &cp.note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let held = hub::service::site_state_details(&err).unwrap();
    assert_eq!((held.mirror_size, held.cosigned_size), (0, 0));
    let state = site_a.push_entries(push(&a, 0)).await.unwrap().into_inner();
    assert_eq!(state.mirror_size, cp.size);
    assert_eq!(state.mirror_root, cp.root.to_vec());
    let ok = site_a
        .add_checkpoint(add(0, vec![], &cp.note))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.cosigned_note,
        format!("{}{}", cp.note, ok.signature_lines)
    );
    hub::cosign::verify_cosignature(&ok.cosigned_note, WITNESS, &key.cosigner().public_key())
        .unwrap();

    // 409: a stale old size, with the held size and root in the details.
    a.certify_many("more", 2, "PO-1", 10);
    let cp2 = a.checkpoint();
    site_a.push_entries(push(&a, cp.size)).await.unwrap();
    let err = site_a
        .add_checkpoint(add(0, vec![], &cp2.note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(
        err.metadata().get("trustline-refusal").unwrap(),
        "old-size-mismatch"
    );
    let held = hub::service::site_state_details(&err).unwrap();
    assert_eq!(held.cosigned_size, cp.size);
    assert_eq!(held.cosigned_root, cp.root.to_vec());
    // 422 and 400.
    let err = site_a
        .add_checkpoint(add(cp.size, vec![vec![0; 32]], &cp2.note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = site_a
        .add_checkpoint(add(cp2.size + 1, vec![], &cp2.note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // 403 and 404.
    let impostor = Site::open_with(
        "site-a",
        &dir.path().join("impostor"),
        Arc::new(SoftwareSigner::generate()),
    );
    impostor.certify_many("x", 1, "PO-1", 10);
    let err = site_a
        .add_checkpoint(add(0, vec![], &impostor.checkpoint().note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let stranger = Site::open("site-z", &dir.path().join("z"));
    stranger.certify_many("z", 1, "PO-9", 10);
    let err = site_a
        .add_checkpoint(add(0, vec![], &stranger.checkpoint().note))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    site_a
        .add_checkpoint(add(cp.size, a.proof(cp.size, cp2.size), &cp2.note))
        .await
        .unwrap();

    // A rewritten entry: ALREADY_EXISTS, recorded, with what the hub holds.
    let mut rewritten = push(&a, 0);
    rewritten.entries[1] = b.entries(1, 2).remove(0);
    let err = site_a.push_entries(rewritten).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.metadata().get("trustline-refusal").unwrap(),
        "fork-rewritten-entry"
    );
    let held = hub::service::site_state_details(&err).unwrap();
    assert_eq!((held.cosigned_size, held.forks), (cp2.size, 1));

    // Site B syncs: a cross-site clone of a serial.
    site_b.push_entries(push(&b, 0)).await.unwrap();

    // The registry, for auditors only.
    let mut auditor = RegistryClient::new(channel(&hub, &guard, Role::Auditor, "hq"));
    let sites = auditor
        .list_sites(v1::ListSitesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sites.sites.len(), 2);
    assert_eq!(sites.sites[0].certified, 5);
    let forks = auditor
        .list_forks(v1::ListForksRequest {
            site: "site-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forks.forks.len(), 1);
    assert_eq!(forks.forks[0].kind, v1::ForkKind::RewrittenEntry as i32);
    assert_eq!(forks.forks[0].position, 1);
    let clones = auditor
        .list_clones(v1::ListClonesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clones.clones.len(), 1);
    assert_eq!(clones.clones[0].kind, v1::IdentityKind::Serial as i32);
    let devices = auditor
        .get_device(v1::GetDeviceRequest {
            serial: "SN-a-0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(devices.devices.len(), 2);
    assert!(devices.devices.iter().all(|d| d.cross_site_clone));
    let err = auditor
        .get_device(v1::GetDeviceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let orders = auditor
        .list_orders(v1::ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orders.orders.len(), 2);
    let mut as_site = RegistryClient::new(channel(&hub, &guard, Role::Site, "site-a"));
    let err = as_site
        .list_sites(v1::ListSitesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut as_auditor = WitnessClient::new(channel(&hub, &guard, Role::Auditor, "hq"));
    let err = as_auditor.push_entries(push(&a, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let state = as_auditor
        .get_site_state(v1::GetSiteStateRequest {
            site: "site-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.cosigned_size, cp2.size);
}

/// Certificate and key for a caller, from a throw-away service CA.
fn issue(
    ca_cert: &CertificateDer<'static>,
    ca_key: &KeyPair,
    caller: &Caller,
    kind: CertificateKind,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let issued = pki::issue_with_new_key(
        ca_cert,
        ca_key,
        &LeafParams {
            caller: caller.clone(),
            kind,
            validity: Validity::days_from_now(1),
        },
    )
    .unwrap();
    (
        vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_hub_over_mtls_and_stops_on_shutdown() {
    transport::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let key = WitnessKey::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    a.certify_many("a", 2, "PO-1", 10);
    let cp = a.checkpoint();
    let hub = hub(&dir.path().join("hub"), &key, &[a.config()], None);

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = pki::service_ca_certificate(&ca_key, "Test service CA", Validity::days_from_now(1))
        .unwrap();
    let server = Caller::new(Role::Admin, "hq", "hub").unwrap();
    let (chain, server_key) = issue(
        &ca,
        &ca_key,
        &server,
        CertificateKind::Server {
            dns_names: vec![],
            ip_addresses: vec![],
        },
    );
    let tls = ServerTls::new(chain, server_key, std::slice::from_ref(&ca)).unwrap();
    let guard = Guard::new(Limits::default(), Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hub::server::run(
        hub.clone(),
        listener,
        tls,
        guard,
        async move {
            let _ = stopped.await;
        },
    ));

    let uplink = Caller::new(Role::Site, "site-a", "uplink").unwrap();
    let (chain, client_key) = issue(&ca, &ca_key, &uplink, CertificateKind::Client);
    let client = ClientTls::new(chain, client_key, std::slice::from_ref(&ca)).unwrap();
    let endpoint = format!("https://localhost:{}", addr.port());
    let mut witness = WitnessClient::new(client.connect(&endpoint).await.unwrap());
    witness.push_entries(push(&a, 0)).await.unwrap();
    let c = witness
        .add_checkpoint(v1::AddCheckpointRequest {
            old_size: 0,
            consistency_proof: vec![],
            checkpoint: cp.note.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    hub::cosign::verify_cosignature(&c.cosigned_note, WITNESS, &key.cosigner().public_key())
        .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(hub.status("site-a").unwrap().cosigned_size(), cp.size);
}
