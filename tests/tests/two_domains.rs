//! The two trust domains (issue 13, "The two domains"; DESIGN.md "Two trust
//! domains"): the OEM's keys on the hub's token, a site enrolled at the hub
//! with its intermediate alone on its CA token and its checkpoint key alone
//! on its ledger token; the enrolled site certifies devices whose chains
//! `openssl verify` accepts against the OEM root, its uplink credential
//! reaches the hub's witness, and its other credentials do not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::path::Path;

use ca_service::keys::{
    KeyLabels, LEDGER_CHECKPOINT, OEM_ORDER, OEM_ROOT, OEM_VOUCHER, SERVICE_CA, SITE_INTERMEDIATE,
    WITNESS,
};
use ca_service::Hsm;
use deploy::enrol::{self, EnrolRequest, DEFAULT_ORGANIZATION};
use site::setup;
use station::run::{self, Job, Mode, RunConfig};
use station::sim::SimLink;
use tonic::Code;
use transport::ClientTls;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::witness_client::WitnessClient;
use trustline_tests::{open_test_token, openssl_verify, test_limits};

const SITE_A: &str = "site-a";

fn private_keys(hsm: &Hsm) -> Vec<String> {
    let mut keys: Vec<String> = hsm
        .private_keys()
        .unwrap()
        .into_iter()
        .filter(|k| k.token)
        .map(|k| k.label)
        .collect();
    keys.sort();
    keys
}

fn client(dir: &Path, name: &str) -> ClientTls {
    ClientTls::from_files(&setup::credentials(dir, name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_site_holds_no_oem_key_and_certifies_devices_that_chain_to_the_oem_root() {
    transport::install_crypto_provider();
    let (_hub_token, hub) = open_test_token("domains-hub").unwrap();
    let (_site_token, site_ca) = open_test_token("domains-site").unwrap();
    let (_ledger_token, site_ledger) = open_test_token("domains-ledger").unwrap();
    let work = tempfile::tempdir().unwrap();
    let (hub_dir, site_dir) = (work.path().join("hub"), work.path().join("site"));

    // The hub, then the site's request, the enrolment, the installation.
    deploy::hub::init(&hub, &hub_dir, DEFAULT_ORGANIZATION, "hub-test").unwrap();
    let init = enrol::site_init(
        &site_ca,
        &site_ledger,
        &site_dir,
        SITE_A,
        DEFAULT_ORGANIZATION,
        None,
    )
    .unwrap();
    let request = EnrolRequest {
        site: SITE_A.into(),
        origin: init.origin.clone(),
        csr_der: site::config::read_der(&init.csr_file, "CERTIFICATE REQUEST").unwrap(),
        ledger_key_der: site::config::read_der(&init.ledger_key_file, "PUBLIC KEY").unwrap(),
        stations: vec!["st-01".into()],
    };
    let bundle_path = work.path().join("site-a.bundle");
    // A request for another site is refused and registers nothing.
    let wrong = EnrolRequest {
        site: "site-b".into(),
        ..request.clone()
    };
    assert!(enrol::enroll_site(&hub, &hub_dir, &wrong, &bundle_path).is_err());
    assert!(deploy::hub::registered_sites(&hub_dir).unwrap().is_empty());
    enrol::enroll_site(&hub, &hub_dir, &request, &bundle_path).unwrap();
    assert!(
        enrol::enroll_site(&hub, &hub_dir, &request, &work.path().join("again")).is_err(),
        "a site is enrolled once"
    );
    let bundle = deploy::bundle::Bundle::read(&bundle_path).unwrap();
    assert_eq!(bundle.site, SITE_A);
    enrol::site_install(&site_ca, &site_dir, &bundle).unwrap();

    // The keys of each domain, enumerated over PKCS#11.
    assert_eq!(private_keys(&site_ca), [SITE_INTERMEDIATE]);
    assert_eq!(private_keys(&site_ledger), [LEDGER_CHECKPOINT]);
    let mut hub_keys = vec![
        OEM_ORDER,
        OEM_ROOT,
        OEM_VOUCHER,
        SERVICE_CA,
        WITNESS,
        deploy::field::HUB_LEDGER_KEY,
    ];
    hub_keys.sort_unstable();
    assert_eq!(private_keys(&hub), hub_keys);
    // A token holding OEM keys is refused as a site's.
    assert!(site::serve::check_site_token(&hub).is_err());
    site::serve::check_site_token(&site_ca).unwrap();

    // The site, as `serve site` runs it.
    let fleet = trustline_tests::genuine_fleet(61, 3).unwrap();
    site::config::write_vendor_roots(&site_dir.join("vendors"), &fleet.vendor_roots()).unwrap();
    let mut config = site::Config::load(&site_dir).unwrap();
    config.transport = test_limits();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_addr = listener.local_addr().unwrap().to_string();
    let (stop_site, site_stopped) = tokio::sync::oneshot::channel::<()>();
    let site_server = {
        let (dir, ca, ledger) = (site_dir.clone(), site_ca.clone(), site_ledger.clone());
        tokio::spawn(async move {
            site::serve::serve_site(&dir, &config, ca, ledger, listener, async {
                let _ = site_stopped.await;
            })
            .await
        })
    };

    // The OEM signs the order with the hub's order key; its admin opens it.
    let vendors: Vec<String> = fleet.vendor_roots().into_iter().map(|(n, _)| n).collect();
    let order = trustline_tests::order("PO-DOM", SITE_A, 3, &vendors, fleet.firmware_sha256());
    let order_key = hub.signer(&KeyLabels::default().order).unwrap();
    let signed = trustline_proto::statement::sign(&order_key, &order).unwrap();
    let mut admin = ProvisioningClient::new(
        client(&hub_dir, setup::ADMIN)
            .connect(&site_addr)
            .await
            .unwrap(),
    );
    admin
        .open_order(v1::OpenOrderRequest {
            signed_order: Some(signed),
        })
        .await
        .unwrap();

    let station_channel = client(&site_dir, &setup::station_name(SITE_A, "st-01"))
        .connect(&site_addr)
        .await
        .unwrap();
    let jobs = fleet
        .into_devices()
        .into_iter()
        .map(|d| Job {
            link: SimLink::new(d.rot),
            serial: None,
        })
        .collect();
    let config = RunConfig {
        order_id: "PO-DOM".into(),
        mode: Mode::OnDevice,
        concurrency: 2,
        out_dir: None,
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: station::run::Protocol::Stream,
    };
    let (report, _) = run::run(station_channel, config, jobs).await.unwrap();
    let chains: Vec<Vec<Vec<u8>>> = report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            run::Outcome::Provisioned(p) => Some(p.chain.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(chains.len(), 3, "{:?}", report.failures());
    let root = hub_dir.join("ca").join(ca_service::ca::ROOT_CERT_FILE);
    for chain in &chains {
        assert!(openssl_verify(&root, chain, work.path()).unwrap());
    }

    // The hub: the site's uplink reaches the witness; its provisioner does
    // not (the role table), and the hub's own server key is no caller.
    let settings = deploy::hub::HubSettings::load(&hub_dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_addr = listener.local_addr().unwrap().to_string();
    let (stop_hub, hub_stopped) = tokio::sync::oneshot::channel::<()>();
    let hub_server = {
        let (dir, hsm) = (hub_dir.clone(), hub.clone());
        tokio::spawn(async move {
            deploy::hub::serve(&dir, &settings, &hsm, listener, async {
                let _ = hub_stopped.await;
            })
            .await
        })
    };
    let state = |name: &str, dir: &Path| {
        let (tls, addr) = (client(dir, name), hub_addr.clone());
        async move {
            let channel = tls
                .connect(&addr)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            WitnessClient::new(channel)
                .get_site_state(v1::GetSiteStateRequest {
                    site: SITE_A.into(),
                })
                .await
        }
    };
    let answer = state(setup::UPLINK, &site_dir).await.unwrap().into_inner();
    assert_eq!(answer.cosigned_size, 0);
    let err = state(setup::PROVISIONER, &site_dir).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(state(deploy::hub::HUB_SERVER, &hub_dir).await.is_err());

    stop_hub.send(()).unwrap();
    hub_server.await.unwrap().unwrap();
    stop_site.send(()).unwrap();
    site_server.await.unwrap().unwrap();
}
