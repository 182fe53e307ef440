//! The ledger's checkpoint key on a token and PIN of its own (issue 12.6):
//! `trustline serve ledger` runs with the ledger token alone, signs
//! checkpoints, and has no way to reach a CA key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ca_service::keys::LEDGER_CHECKPOINT;
use site::setup;
use transport::ClientTls;
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_tests::{hsm_options, ledger_hsm_options, open_test_token, SITE};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

/// Kills the child server when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ledger_signs_checkpoints_with_the_ledger_token_alone() {
    transport::install_crypto_provider();
    let (ca_token, ca) = open_test_token("ledger-only-ca").unwrap();
    let (ledger_token, ledger) = open_test_token("ledger-only").unwrap();
    let dir = tempfile::tempdir().unwrap();
    setup::init_ca(&ca, dir.path(), SITE).unwrap();
    setup::init_ledger_key(&ledger, dir.path()).unwrap();
    setup::init_pki(&ca, dir.path(), SITE, &[]).unwrap();

    // The ledger's token holds exactly one private key: the checkpoint key.
    let keys: Vec<String> = ledger
        .private_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert_eq!(keys, [LEDGER_CHECKPOINT]);
    assert!(!ca.key_exists(LEDGER_CHECKPOINT).unwrap());

    // `serve ledger` refuses the CA token's options: it logs into the ledger
    // token only.
    let mut args: Vec<String> = vec!["serve".into(), "ledger".into(), "--data-dir".into()];
    args.push(dir.path().display().to_string());
    let mut with_ca = args.clone();
    with_ca.extend(hsm_options(&ca_token));
    with_ca.extend(ledger_hsm_options(&ledger_token));
    let (code, _, stderr) = trustline_tests::cli(BIN, &with_ca).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ledger token only"), "{stderr}");
    // Nor does it start on a token that holds other keys (the CA's).
    let mut shared = args.clone();
    shared.extend(ledger_hsm_options(&ca_token));
    let (code, _, stderr) = trustline_tests::cli(BIN, &shared).unwrap();
    assert_eq!(code, Some(2), "{stderr}");

    args.extend(ledger_hsm_options(&ledger_token));
    let mut child = Command::new(BIN)
        .args(&args)
        .env("TRUSTLINE_LEDGER_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Child(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("the ledger exited").unwrap();
        if let Some(a) = line.strip_prefix("listening ledger ") {
            break a.trim().to_owned();
        }
    };
    let admin = ClientTls::from_files(&setup::credentials(dir.path(), setup::ADMIN)).unwrap();
    let mut client = CustodyLedgerClient::new(admin.connect(&addr).await.unwrap());
    let checkpoint = client
        .publish_checkpoint(v1::PublishCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let key =
        site::config::read_der(&dir.path().join(setup::LEDGER_KEY_FILE), "PUBLIC KEY").unwrap();
    custody_ledger::checkpoint::open(&checkpoint.note, &key, None)
        .expect("signed by the ledger key");
    drop(child);
}
