//! Service credentials over the wire: a server's certificate is never a
//! caller (issue 12.5), and a client certificate can be revoked and renewed
//! while the servers run (issue 12.7).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::sync::Arc;

use site::setup;
use tonic::Code;
use transport::ClientTls;
use trustline_proto::v1;
use trustline_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_tests::{cli, genuine_fleet, hsm_options, station, Stack, SITE};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

async fn get_chain(tls: &ClientTls, addr: &str) -> Result<v1::CertificateChain, tonic::Status> {
    let channel = match tls.connect(addr).await {
        Ok(c) => c,
        Err(e) => return Err(tonic::Status::unavailable(e.to_string())),
    };
    CertificateAuthorityClient::new(channel)
        .get_chain(v1::GetChainRequest {})
        .await
        .map(tonic::Response::into_inner)
}

fn tls(stack: &Stack, name: &str) -> ClientTls {
    ClientTls::from_files(&setup::credentials(stack.dir.path(), name)).expect("credentials")
}

/// A refusal of the certificate itself: at the handshake (a transport
/// error on the first call), never an answer.
fn refused_at_handshake(result: Result<v1::CertificateChain, tonic::Status>) {
    let err = result.expect_err("must be refused");
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_credentials_cannot_call_the_ca_only_the_provisioners_client_can() {
    let fleet = genuine_fleet(51, 1).unwrap();
    let stack = Stack::start("svc-ids", &fleet, &[(SITE, "st-01")])
        .await
        .unwrap();
    // The CA alone, as `serve ca` runs it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (dir, hsm) = (stack.dir.path().to_path_buf(), stack.hsm.clone());
    let config = site::Config::load(&dir).unwrap();
    let ca = tokio::spawn(async move {
        site::serve::serve_ca(&dir, &config, hsm, listener, async {
            let _ = stopped.await;
        })
        .await
    });

    // The ledger host's key file, used as a client: refused before any RPC
    // (serverAuth only, no caller), and so is the provisioner's server
    // certificate and the CA's own.
    for server in [
        setup::LEDGER_SERVER,
        setup::PROVISIONER_SERVER,
        setup::CA_SERVER,
    ] {
        refused_at_handshake(get_chain(&tls(&stack, server), &addr).await);
    }
    // A station is a caller, but not the CA's.
    let err = get_chain(&tls(&stack, &station(SITE, "st-01")), &addr)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The provisioner's client certificate is the one caller of the CA.
    let chain = get_chain(&tls(&stack, setup::PROVISIONER), &addr)
        .await
        .unwrap();
    assert_eq!(chain.certificates.len(), 2);

    // No server certificate carries the provisioner's role.
    for server in [
        setup::LEDGER_SERVER,
        setup::PROVISIONER_SERVER,
        setup::CA_SERVER,
    ] {
        let pem =
            std::fs::read(stack.dir.path().join("pki").join(format!("{server}.pem"))).unwrap();
        let der = pem::parse(pem).unwrap().into_contents();
        assert!(
            transport::Caller::from_certificate(&der).is_err(),
            "{server}"
        );
        assert_eq!(
            transport::ServerIdentity::from_certificate(&der)
                .unwrap()
                .name(),
            server.trim_end_matches("-server")
        );
    }
    stop.send(()).unwrap();
    ca.await.unwrap().unwrap();
}

async fn get_order(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    ProvisioningClient::new(channel)
        .get_order(v1::GetOrderRequest {
            order_id: "PO-REV".into(),
        })
        .await
        .map(|_| ())
}

fn pki_cli(stack: &Stack, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend([
        "--data-dir".to_owned(),
        stack.dir.path().display().to_string(),
    ]);
    all.extend(hsm_options(&stack.ca_token));
    let (code, stdout, stderr) = cli(BIN, &all).unwrap();
    assert_eq!(code, Some(0), "{args:?}: {stdout}\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_station_is_refused_on_its_open_channel_and_stays_refused_after_renewal() {
    let fleet = genuine_fleet(52, 1).unwrap();
    let stack = Stack::start("svc-revoke", &fleet, &[(SITE, "st-01"), (SITE, "st-02")])
        .await
        .unwrap();
    stack.open(&stack.order("PO-REV", SITE, 5)).await.unwrap();
    let name = station(SITE, "st-01");
    let channel = stack.channel(&name).await.unwrap();
    get_order(channel.clone()).await.unwrap();

    // The thief's copy of the station's credential.
    let stolen = tempfile::tempdir().unwrap();
    let paths = setup::credentials(stack.dir.path(), &name);
    for file in [&paths.certificate, &paths.key, &paths.ca] {
        std::fs::copy(file, stolen.path().join(file.file_name().unwrap())).unwrap();
    }
    let stolen = transport::CredentialPaths::in_dir(stolen.path(), &name);

    let out = pki_cli(
        &stack,
        &["pki", "revoke", &name, "--reason", "key-compromise"],
    );
    assert!(out.contains("revoked serial"), "{out}");

    // The channel opened before the revocation: refused on its next call,
    // with no restart.
    let err = get_order(channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    // A new connection with it does not get past the handshake.
    let err = match ClientTls::from_files(&stolen)
        .unwrap()
        .connect(&stack.addr.to_string())
        .await
    {
        Ok(c) => get_order(c).await.unwrap_err(),
        Err(e) => tonic::Status::unavailable(e.to_string()),
    };
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(err.code(), Code::NotFound, "{err:?}");
    // Others of the site are unaffected.
    get_order(stack.channel(&station(SITE, "st-02")).await.unwrap())
        .await
        .unwrap();

    // Renewed under the same name: the new certificate works, the revoked
    // serial stays revoked.
    let out = pki_cli(&stack, &["pki", "renew", &name]);
    assert!(out.contains("renewed"), "{out}");
    get_order(stack.channel(&name).await.unwrap())
        .await
        .unwrap();
    let still = match ClientTls::from_files(&stolen)
        .unwrap()
        .connect(&stack.addr.to_string())
        .await
    {
        Ok(c) => get_order(c).await,
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(still.is_err(), "the revoked certificate came back to life");
    assert!(stack
        .dir
        .path()
        .join("pki/retired")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_with_revoke_old_swaps_credentials_without_a_restart() {
    let fleet = genuine_fleet(53, 1).unwrap();
    let stack = Stack::start("svc-renew", &fleet, &[(SITE, "st-01")])
        .await
        .unwrap();
    stack.open(&stack.order("PO-REV", SITE, 5)).await.unwrap();
    let name = station(SITE, "st-01");
    let old = Arc::new(stack.channel(&name).await.unwrap());
    get_order((*old).clone()).await.unwrap();
    let register = stack.dir.path().join("pki");
    let before = transport::pki::register::latest(&register, &name)
        .unwrap()
        .unwrap();
    let out = pki_cli(
        &stack,
        &["pki", "renew", &name, "--revoke-old", "--days", "7"],
    );
    assert!(out.contains("(revoked)"), "{out}");
    let after = transport::pki::register::latest(&register, &name)
        .unwrap()
        .unwrap();
    assert_ne!(before.serial, after.serial);
    assert_eq!(before.identity, after.identity);
    // The old connection dies on its next call, the renewed key gets in.
    let err = get_order((*old).clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    get_order(stack.channel(&name).await.unwrap())
        .await
        .unwrap();
    let crl = pki_cli(&stack, &["pki", "crl", "--json"]);
    let crl: serde_json::Value = serde_json::from_str(&crl).unwrap();
    assert_eq!(crl["revoked"][0]["serial"], before.serial.as_str());
    assert_eq!(crl["revoked"][0]["reason"], "superseded");
}
