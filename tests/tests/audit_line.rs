//! The audit of a real factory line (issue 6): stations provision genuine
//! devices, one past the quota, a key clone and a counterfeit through the
//! real services (gRPC, TLS 1.3 with client certificates, SoftHSM2, ledger
//! files); then `trustline audit --endpoint` reads the running ledger as
//! the `auditor` role over mutual TLS and finds nothing wrong, with the
//! line's own figures per order, the refusals by station, and every
//! certificate a station received recorded (2.4.14.3, 2.4.14.22).

use std::path::Path;
use std::process::Command;

use hsm_sim::rot::Fleet;
use site::setup;
use station::run::{self, Job, Mode, RunConfig};
use station::sim::SimLink;
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_tests::{station, Stack, SITE};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_of_a_running_line_over_mtls_matches_what_the_line_did() {
    let fleet = Fleet::builder()
        .seed(66)
        .genuine(6)
        .key_clones(1)
        .self_signed(1)
        .build()
        .expect("fleet");
    let stack = Stack::start("e2e-audit", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-AUD", SITE, 5))
        .await
        .expect("order");
    let out = tempfile::tempdir().expect("out");
    let jobs: Vec<Job<SimLink>> = fleet
        .into_devices()
        .into_iter()
        .map(|d| Job {
            link: SimLink::new(d.rot),
            serial: None,
        })
        .collect();
    let config = RunConfig {
        order_id: "PO-AUD".into(),
        mode: Mode::OnDevice,
        concurrency: 1,
        out_dir: Some(out.path().to_path_buf()),
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: run::Protocol::Stream,
    };
    let channel = stack
        .channel(&station(SITE, "st-01"))
        .await
        .expect("channel");
    let (report, _) = run::run(channel, config, jobs).await.expect("run");
    assert_eq!(report.provisioned(), 5, "{:?}", report.outcomes);

    // The certificates stations received are the field sightings.
    let field = tempfile::tempdir().expect("field");
    for entry in std::fs::read_dir(out.path()).expect("out").flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "pem") {
            std::fs::copy(&p, field.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    // Sign everything appended so far, as the admin.
    let mut ledger = CustodyLedgerClient::new(stack.channel(setup::ADMIN).await.expect("admin"));
    ledger
        .publish_checkpoint(v1::PublishCheckpointRequest {})
        .await
        .expect("checkpoint");

    let data = stack.dir.path();
    let ca = data.join("ca");
    let snapshot = out.path().join("snapshot.tlexport");
    let addr = stack.addr.to_string();
    let args: Vec<String> = [
        "audit",
        "--endpoint",
        &addr,
        "--pki",
        path(&data.join("pki")),
        "--name",
        setup::AUDITOR,
        "--order-key",
        path(&ca.join(ca_service::ca::ORDER_KEY_FILE)),
        "--ledger-key",
        path(&data.join(setup::LEDGER_KEY_FILE)),
        "--ca-cert",
        path(&ca.join(ca_service::ca::ROOT_CERT_FILE)),
        "--ca-cert",
        path(&ca.join(ca_service::ca::INTERMEDIATE_CERT_FILE)),
        "--field",
        path(field.path()),
        "--save-snapshot",
        path(&snapshot),
        "--format",
        "json",
        "--no-progress",
        "--in-flight-grace",
        "0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let result = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output())
        .await
        .expect("join")
        .expect("run trustline audit");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).expect("json");
    assert_eq!(json["ledger"]["verified"], true, "{json}");
    assert_eq!(json["findings"]["counts"], serde_json::json!({}), "{json}");
    let order = &json["orders"][0];
    assert_eq!(order["order_id"], "PO-AUD");
    assert_eq!(order["authorised"], 5);
    assert_eq!(order["certified"], 5);
    assert_eq!(order["quota_rejected"], 1);
    assert_eq!(order["on_site"], 5);
    assert!(order["counterfeit_rejected"].as_u64() >= Some(1), "{order}");
    assert!(order["duplicate_rejected"].as_u64() >= Some(1), "{order}");
    assert_eq!(json["field"]["certificates"], 5);
    assert_eq!(json["field"]["recorded"], 5);
    let groups = json["refusals"]["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    assert!(
        groups
            .iter()
            .all(|g| g["site"] == SITE && g["actor"].as_str().is_some_and(|a| a.contains("st-01"))),
        "{groups:?}"
    );
    assert!(snapshot.exists(), "the signed snapshot is kept");
}
