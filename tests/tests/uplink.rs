//! A site and its OEM hub end to end (issue 13 items 1 and 2; 2.4.14.6,
//! 2.4.14.20, 2.4.14.22): `serve all` with an `[uplink]`, a real SoftHSM2
//! token, stations over mTLS; the hub over mTLS with its own PKI. The site
//! keeps producing while the hub is unreachable, up to the order's offline
//! allowance exactly — under concurrent stations — refuses past it with
//! its own status and reason, and resumes once the backlog is cosigned;
//! every device certified offline reaches the hub; the cosigned note
//! verifies with the site key and the witness key, independently of our
//! code, and `trustline ledger verify` accepts it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hsm_sim::rot::{Fleet, SimulatedRot};
use site::setup;
use station::run::{self, Job, Mode, Outcome, RunConfig};
use station::sim::SimLink;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::uplink_client::UplinkClient;
use trustline_tests::hub::{HubServer, WITNESS};
use trustline_tests::{station, Stack, SITE};

fn config(order: &str, first_serial: u64) -> RunConfig {
    RunConfig {
        order_id: order.into(),
        mode: Mode::OnDevice,
        concurrency: 4,
        out_dir: None,
        first_serial: Some(first_serial),
        progress: false,
        retries: 0,
        protocol: station::run::Protocol::Stream,
    }
}

fn jobs(rots: Vec<SimulatedRot>) -> Vec<Job<SimLink>> {
    rots.into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect()
}

fn provisioned(report: &run::Report) -> Vec<run::Provisioned> {
    report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Provisioned(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

async fn uplink_status(stack: &Stack) -> v1::UplinkStatus {
    UplinkClient::new(stack.channel(setup::AUDITOR).await.expect("channel"))
        .get_uplink_status(v1::GetUplinkStatusRequest {
            quota_counters: vec!["order/PO-OFF".into()],
        })
        .await
        .expect("uplink status")
        .into_inner()
}

/// Waits until the hub has cosigned everything the site's ledger holds
/// (the site is quiet).
async fn synced(stack: &Stack) -> v1::UplinkStatus {
    loop {
        let s = uplink_status(stack).await;
        if s.cosigned_size > 0 && s.cosigned_size == s.ledger_size {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn order_status(stack: &Stack) -> v1::OrderStatus {
    stack
        .provisioning(setup::ADMIN)
        .await
        .expect("admin")
        .get_order(v1::GetOrderRequest {
            order_id: "PO-OFF".into(),
        })
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_offline_past_its_allowance_stops_at_exactly_the_allowance_and_resumes_after_the_sync(
) {
    let fleet = Fleet::builder()
        .seed(31)
        .genuine(45)
        .build()
        .expect("fleet");
    let work = tempfile::tempdir().expect("dir");
    let mut hub = HubServer::prepare(&work.path().join("hub")).expect("hub");
    let uplink = hub.uplink_config(SITE).expect("uplink config");
    let mut stack = Stack::start_with(
        "e2e-uplink",
        &fleet,
        &[(SITE, "st-01"), (SITE, "st-02")],
        |dir, config| {
            hub.write_uplink_credentials(dir, &uplink)?;
            config.uplink = Some(uplink.clone());
            Ok(())
        },
    )
    .await
    .expect("stack");
    hub.add_site(SITE, stack.dir.path()).expect("site key");
    hub.start().await.expect("hub up");
    let mut order = stack.order("PO-OFF", SITE, 40);
    order.offline_allowance = 10;
    stack.open(&order).await.expect("order");
    let mut rots: Vec<SimulatedRot> = fleet.into_devices().into_iter().map(|d| d.rot).collect();
    let (st1, st2) = (station(SITE, "st-01"), station(SITE, "st-02"));

    // Online: 5 devices, cosigned.
    let batch: Vec<_> = rots.drain(..5).collect();
    let (report, _) = run::run(
        stack.channel(&st1).await.expect("ch"),
        config("PO-OFF", 1),
        jobs(batch),
    )
    .await
    .expect("run");
    let mut certified = provisioned(&report);
    assert_eq!(certified.len(), 5);
    let s = synced(&stack).await;
    assert_eq!(s.state, v1::UplinkState::Online as i32);
    assert_eq!(s.cosigned_quota_uses["order/PO-OFF"], 5);
    let o = order_status(&stack).await;
    assert!(o.allowance_applies);
    assert_eq!(o.allowance_left, 10);
    assert_eq!(o.last_cosigned_size, s.cosigned_size);
    assert!(o.last_cosignature_time > 0);

    // The hub goes away. Two stations race 30 devices: exactly the
    // allowance (10) is certified, the rest refused with its own reason.
    hub.stop().await.expect("hub down");
    let a: Vec<_> = rots.drain(..15).collect();
    let b: Vec<_> = rots.drain(..15).collect();
    let (ra, rb) = tokio::join!(
        async {
            run::run(
                stack.channel(&st1).await.expect("ch"),
                config("PO-OFF", 1_000),
                jobs(a),
            )
            .await
        },
        async {
            run::run(
                stack.channel(&st2).await.expect("ch"),
                config("PO-OFF", 2_000),
                jobs(b),
            )
            .await
        },
    );
    let (ra, rb) = (ra.expect("run a").0, rb.expect("run b").0);
    let offline: Vec<_> = provisioned(&ra)
        .into_iter()
        .chain(provisioned(&rb))
        .collect();
    assert_eq!(offline.len(), 10, "exactly the allowance");
    for o in ra.outcomes.iter().chain(&rb.outcomes) {
        match o {
            Outcome::Provisioned(_) => {}
            Outcome::Refused {
                stage,
                code,
                reason,
                message,
                ..
            } => {
                assert_eq!(*stage, "certify");
                assert_eq!(*code, Code::ResourceExhausted);
                assert_eq!(reason, "offline-allowance");
                assert!(
                    message.starts_with("hub unreachable, offline allowance spent"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        station::run::allowance::explain("offline-allowance"),
        Some("hub unreachable, offline allowance spent")
    );
    certified.extend(offline);
    let o = order_status(&stack).await;
    assert_eq!((o.certified, o.allowance_left), (15, 0));
    let s = uplink_status(&stack).await;
    assert_eq!(s.state, v1::UplinkState::Backoff as i32);
    assert!(s.cosigned_size < s.ledger_size);

    // The hub returns: the backlog syncs by itself, the allowance is free.
    hub.start().await.expect("hub back");
    let s = synced(&stack).await;
    assert_eq!(s.cosigned_quota_uses["order/PO-OFF"], 15);
    let o = order_status(&stack).await;
    assert_eq!(o.allowance_left, 10);
    let batch: Vec<_> = rots.drain(..10).collect();
    let (report, _) = run::run(
        stack.channel(&st2).await.expect("ch"),
        config("PO-OFF", 3_000),
        jobs(batch),
    )
    .await
    .expect("run");
    assert_eq!(provisioned(&report).len(), 10, "{:?}", report.outcomes);
    certified.extend(provisioned(&report));
    let s = synced(&stack).await;

    // Every device certified, offline or not, is at the hub.
    let at_hub = hub.hub();
    for p in &certified {
        let records = at_hub
            .devices(&hub::store::DeviceQuery::RotId(p.rot_id.clone()))
            .expect("registry");
        assert_eq!(records.len(), 1, "device {} at the hub", p.serial);
        assert_eq!(records[0].certified_seq, p.ledger_seq);
        assert_eq!(records[0].certificate, p.chain[0]);
    }
    assert_eq!(at_hub.site_figures().expect("figures")[0].1.certified, 25);
    let held = at_hub.status(SITE).expect("status");
    assert_eq!(
        (held.mirror_size, held.cosigned_size()),
        (s.ledger_size, s.cosigned_size)
    );

    // The cosigned note verifies with the site key and the witness key,
    // in the independent Python verifier.
    let note = s.cosigned_note.clone();
    let kept = std::fs::read_to_string(stack.dir.path().join("ledger/checkpoint.cosigned"))
        .expect("kept note");
    assert_eq!(kept, note);
    let spki = custody_ledger::checkpoint::spki_from_pem(
        &std::fs::read_to_string(stack.dir.path().join(setup::LEDGER_KEY_FILE)).expect("key"),
    )
    .expect("spki");
    let entries: Vec<String> = ledger_bytes(&stack, s.cosigned_size).await;
    let witness = hub.cosigner().expect("witness");
    let case = serde_json::json!({
        "note": note,
        "site_spki_hex": hex::encode(&spki),
        "witness_name": WITNESS,
        "witness_key_hex": hex::encode(witness.public_key()),
        "entries_hex": entries,
    });
    let case_path = work.path().join("case.json");
    std::fs::write(&case_path, case.to_string()).expect("case");
    python_verifies(&case_path);

    // `trustline ledger verify` accepts it as a kept checkpoint.
    stack.stop().await.expect("stop");
    hub.stop().await.expect("hub stop");
    ledger_verify(
        stack.dir.path(),
        &stack.dir.path().join("ledger/checkpoint.cosigned"),
    );
}

async fn ledger_bytes(stack: &Stack, size: u64) -> Vec<String> {
    let mut client = v1::custody_ledger_client::CustodyLedgerClient::new(
        stack.channel(setup::AUDITOR).await.expect("channel"),
    );
    let mut stream = client
        .get_entries(v1::GetEntriesRequest {
            start: 0,
            end: size,
        })
        .await
        .expect("entries")
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.expect("entry") {
        out.push(hex::encode(e.entry));
    }
    assert_eq!(out.len() as u64, size);
    out
}

fn python_verifies(case: &Path) {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../hub/tests/verify_cosigned.py"
        ))
        .arg(case)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "independent verifier: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ledger_verify(data: &Path, note: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustline-e2e"))
        .args(["ledger", "verify", "--data-dir"])
        .arg(data)
        .arg("--checkpoint")
        .arg(note)
        .output()
        .expect("trustline ledger verify");
    assert!(
        out.status.success(),
        "ledger verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
