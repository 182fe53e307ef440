//! The station's device links end to end (issue 15): the reference device
//! (`reference-device/`, written from docs/device-protocol.md alone) behind
//! `exec:` and `serial:` (a pseudo-terminal pair), driven by the station
//! against a real `serve all` — mTLS on loopback, SoftHSM2, ledger files,
//! `openssl verify` — with the reference device's IC-vendor CA configured
//! on the provisioner (§15).
//!
//! Shown here: both personalisation modes through both links, every chain
//! verifying and every voucher bound by the device; faulty devices (dying,
//! answering garbage, too slow, signing with the wrong key) fail alone with
//! their reason while the others go on, and the ledger records only what
//! happened; a lost answer to a one-time step is recovered from `status`,
//! never repeated; `station run --link` and its JSON summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use station::link::{DeviceLink, LineLink, LinkOptions, LinkSpec};
use station::run::{self, Job, Mode, Outcome, RunConfig};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::Voucher;
use trustline_tests::reference::{exec_spec, PtyDevice, ReferenceVendor};
use trustline_tests::{genuine_fleet, openssl_verify, station, Stack, SITE};

const VENDOR: &str = "Reference-Silicon";

fn config(order: &str, mode: Mode) -> RunConfig {
    RunConfig {
        order_id: order.into(),
        mode,
        concurrency: 4,
        out_dir: None,
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: run::Protocol::Stream,
    }
}

fn options(timeout: Duration, retries: u32) -> LinkOptions {
    LinkOptions {
        timeout,
        open_timeout: Duration::from_secs(60),
        retries,
        station: "st-01".into(),
    }
}

/// A stack trusting the reference vendor (with an issuing intermediate in
/// the dies' chains), and an open order of `quantity`.
async fn stack(name: &str, order: &str, quantity: u64) -> (Stack, ReferenceVendor) {
    let vendor = ReferenceVendor::create(VENDOR, true).expect("reference vendor CA");
    let fleet = genuine_fleet(1, 0).expect("fleet");
    let stack = Stack::start_with_vendors(
        name,
        &fleet,
        &[vendor.root().expect("vendor root")],
        &[(SITE, "st-01")],
    )
    .await
    .expect("stack");
    stack
        .open(&stack.order(order, SITE, quantity))
        .await
        .expect("order");
    (stack, vendor)
}

/// Jobs for the links of `specs` (device i on spec i).
fn jobs(specs: &[String], options: &LinkOptions) -> Vec<Job<LineLink>> {
    specs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let spec: LinkSpec = text.parse().expect("link spec");
            Job {
                link: spec.framed(index, options).expect("a framed link").into(),
                serial: None,
            }
        })
        .collect()
}

/// Every ledger entry kind recorded for each rot_id.
async fn kinds_by_rot(stack: &Stack) -> BTreeMap<String, Vec<EventKind>> {
    let mut out: BTreeMap<String, Vec<EventKind>> = BTreeMap::new();
    for e in stack.ledger_entries().await.expect("ledger") {
        if !e.rot_id.is_empty() {
            let kind = EventKind::try_from(e.kind).expect("kind");
            out.entry(e.rot_id).or_default().push(kind);
        }
    }
    out
}

fn provisioned(outcome: &Outcome) -> &run::Provisioned {
    match outcome {
        Outcome::Provisioned(p) => p,
        other => panic!("not provisioned: {other:?}"),
    }
}

/// The device's identity key, as its certificate names it.
fn leaf_spki(chain: &[Vec<u8>]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
    cert.public_key().raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_through_exec_and_serial_with_the_reference_device_and_every_chain_verifies() {
    let (stack, vendor) = stack("links-modes", "PO-LINKS", 8).await;
    let states = tempfile::tempdir().expect("states");
    let work = tempfile::tempdir().expect("work");
    let channel = || async {
        stack
            .channel(&station(SITE, "st-01"))
            .await
            .expect("channel")
    };
    let link_options = options(Duration::from_secs(10), 1);
    let mut rots = BTreeMap::new();
    let mut certified = Vec::new();
    for (round, mode) in [Mode::OnDevice, Mode::Hsm].into_iter().enumerate() {
        // exec: two dies, one command per device, `{index}` picks the die.
        let exec_dir = states.path().join(format!("exec-{round}"));
        for i in 0..2 {
            let rot = vendor
                .init(&exec_dir.join(format!("dev-{i}")), &[])
                .expect("init");
            rots.insert(rot, mode);
        }
        let spec = exec_spec(&exec_dir);
        let exec_jobs = jobs(&[spec.clone(), spec], &link_options);
        // serial: two dies, each serving a pseudo-terminal.
        let mut ptys = Vec::new();
        for i in 0..2 {
            let state = states.path().join(format!("serial-{round}-{i}"));
            rots.insert(vendor.init(&state, &[]).expect("init"), mode);
            ptys.push(PtyDevice::start(&state).expect("pty device"));
        }
        let specs: Vec<String> = ptys.iter().map(PtyDevice::spec).collect();
        let serial_jobs = jobs(&specs, &link_options);
        for (link, jobs) in [("exec", exec_jobs), ("serial", serial_jobs)] {
            let (report, mut links) = run::run(channel().await, config("PO-LINKS", mode), jobs)
                .await
                .expect("run");
            assert_eq!(
                report.provisioned(),
                2,
                "{link} {mode:?}: {:?}",
                report.outcomes
            );
            for (outcome, device) in report.outcomes.iter().zip(links.iter_mut()) {
                let p = provisioned(outcome);
                assert_eq!(rots.get(&p.rot_id), Some(&mode), "{link}: an unknown die");
                // Device certificate, site intermediate, OEM root.
                assert_eq!(p.chain.len(), 3);
                assert!(
                    openssl_verify(&stack.root_pem(), &p.chain, work.path()).expect("openssl"),
                    "{link} {mode:?}: the chain does not verify"
                );
                // The voucher came back bound by the device's identity key.
                Voucher::decode(&p.voucher)
                    .expect("voucher")
                    .verify_device_binding(&p.chain, &leaf_spki(&p.chain))
                    .expect("bound by the device");
                // A new session finds the device certified and personalised.
                let status = device.status().await.expect("status");
                assert_eq!(status.rot_id, p.rot_id);
                assert!(status.certified && status.readout_locked);
                assert_eq!(status.lifecycle, v1::DeviceLifecycle::Personalised as i32);
                certified.push(p.rot_id.clone());
            }
        }
    }
    assert_eq!(certified.len(), 8);
    let kinds = kinds_by_rot(&stack).await;
    for (rot, mode) in &rots {
        let mut expected = vec![EventKind::Claimed];
        if *mode == Mode::Hsm {
            expected.push(EventKind::KeyDelivered);
        }
        expected.push(EventKind::Certified);
        assert_eq!(kinds.get(rot), Some(&expected), "{mode:?} {rot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_devices_fail_alone_with_their_reason_and_the_ledger_records_only_what_happened() {
    let (stack, vendor) = stack("links-faults", "PO-FAULTS", 10).await;
    let states = tempfile::tempdir().expect("states");
    let faults: [&[&str]; 6] = [
        &[],
        &["die-at=lock-readout"],
        &["garbage-at=generate-key"],
        &["slow-at=prove-possession:30"],
        &["wrong-key-at=claim"],
        &[],
    ];
    let rots: Vec<String> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            vendor
                .init(&states.path().join(format!("dev-{i}")), f)
                .expect("init")
        })
        .collect();
    let spec = exec_spec(states.path());
    let specs = vec![spec; faults.len()];
    let mut cfg = config("PO-FAULTS", Mode::OnDevice);
    cfg.concurrency = faults.len();
    let (report, mut links) = run::run(
        stack
            .channel(&station(SITE, "st-01"))
            .await
            .expect("channel"),
        cfg,
        jobs(&specs, &options(Duration::from_secs(4), 1)),
    )
    .await
    .expect("run");
    let o = &report.outcomes;
    // The healthy devices went on.
    for i in [0, 5] {
        assert_eq!(provisioned(&o[i]).rot_id, rots[i]);
    }
    // Each faulty one stopped at its step, with its reason and its RoT.
    let expect = [
        (1, "lock", "link:exit"),
        (2, "generate-key", "link:malformed"),
        (3, "prove-possession", "link:timeout"),
    ];
    for (i, stage, reason) in expect {
        assert_eq!(o[i].stage(), Some(stage), "device {i}: {:?}", o[i]);
        assert_eq!(o[i].failure(), Some(reason), "device {i}: {:?}", o[i]);
        assert_eq!(o[i].known().rot_id.as_deref(), Some(rots[i].as_str()));
    }
    let Outcome::Failed { message, .. } = &o[1] else {
        panic!("device 1 did not fail");
    };
    // The exit status and the command's last stderr lines.
    assert!(message.contains("75"), "{message}");
    assert!(message.contains("dying at lock-readout"), "{message}");
    // The slow device had its serial when it stopped.
    assert!(o[3].known().serial.is_some());
    // The wrong-key receipt is refused by the provisioner, not the station.
    assert_eq!(o[4].refusal(), Some("counterfeit"), "{:?}", o[4]);
    assert_eq!(o[4].stage(), Some("complete-claim"));
    assert_eq!(
        report.failure_reasons(),
        BTreeMap::from([
            ("link:exit".to_owned(), 1),
            ("link:malformed".to_owned(), 1),
            ("link:timeout".to_owned(), 1),
        ])
    );

    // The ledger: claimed and nothing after for the devices that failed
    // after CompleteClaim; the counterfeit refusal, and no claim, for the
    // wrong key.
    let kinds = kinds_by_rot(&stack).await;
    for i in [0, 5] {
        assert_eq!(
            kinds.get(&rots[i]),
            Some(&vec![EventKind::Claimed, EventKind::Certified])
        );
    }
    for i in [1, 2, 3] {
        assert_eq!(
            kinds.get(&rots[i]),
            Some(&vec![EventKind::Claimed]),
            "device {i}"
        );
    }
    assert_eq!(
        kinds.get(&rots[4]),
        Some(&vec![EventKind::CounterfeitRejected])
    );
    // And the devices agree: claimed, not personalised.
    for i in [1, 2] {
        let status = links[i].status().await.expect("status");
        assert_eq!(status.lifecycle, v1::DeviceLifecycle::Claimed as i32);
        assert!(status.key_attestation.is_none() && !status.certified);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_serial_port_a_late_claim_answer_is_recovered_from_status_and_faults_fail_alone() {
    let (stack, vendor) = stack("links-serial", "PO-SERIAL", 6).await;
    let states = tempfile::tempdir().expect("states");
    let faults: [&[&str]; 4] = [
        &[],
        // Answers the claim after the station gave up on it: the station
        // must take the receipt from `status`, since the device refuses a
        // second claim.
        &["slow-at=claim:2"],
        &["die-at=generate-key"],
        &["garbage-at=prove-possession"],
    ];
    let mut rots = Vec::new();
    let mut ptys = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let state = states.path().join(format!("dev-{i}"));
        rots.push(vendor.init(&state, f).expect("init"));
        ptys.push(PtyDevice::start(&state).expect("pty device"));
    }
    let specs: Vec<String> = ptys.iter().map(PtyDevice::spec).collect();
    let mut cfg = config("PO-SERIAL", Mode::OnDevice);
    cfg.concurrency = faults.len();
    let (report, _links) = run::run(
        stack
            .channel(&station(SITE, "st-01"))
            .await
            .expect("channel"),
        cfg,
        jobs(&specs, &options(Duration::from_secs(1), 3)),
    )
    .await
    .expect("run");
    let o = &report.outcomes;
    for i in [0, 1] {
        assert_eq!(provisioned(&o[i]).rot_id, rots[i], "{:?}", o[i]);
    }
    assert_eq!(o[2].stage(), Some("generate-key"));
    assert_eq!(o[2].failure(), Some("link:hangup"), "{:?}", o[2]);
    assert_eq!(o[3].stage(), Some("prove-possession"));
    assert_eq!(o[3].failure(), Some("link:malformed"), "{:?}", o[3]);
    let kinds = kinds_by_rot(&stack).await;
    for i in [0, 1] {
        assert_eq!(
            kinds.get(&rots[i]),
            Some(&vec![EventKind::Claimed, EventKind::Certified]),
            "device {i}"
        );
    }
    for i in [2, 3] {
        assert_eq!(
            kinds.get(&rots[i]),
            Some(&vec![EventKind::Claimed]),
            "device {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_run_with_an_exec_link_reports_each_failed_device_in_its_json_summary() {
    let (stack, vendor) = stack("links-cli", "PO-CLI", 6).await;
    // The same line over the line stream (the default) and with `--unary`:
    // the same outcomes, stages, reasons and outputs.
    let mut summaries = Vec::new();
    for (run, protocol) in [None, Some("--unary")].into_iter().enumerate() {
        summaries.push(cli_run(&stack, &vendor, run, protocol).await);
    }
    let [stream, unary] = <[serde_json::Value; 2]>::try_from(summaries).expect("two");
    assert_eq!(stream, unary);
}

/// One `station run --json` over three reference devices (the second dies
/// at its claim); the summary without its timings, links and ids.
async fn cli_run(
    stack: &Stack,
    vendor: &ReferenceVendor,
    run: usize,
    protocol: Option<&str>,
) -> serde_json::Value {
    let states = tempfile::tempdir().expect("states");
    let out = tempfile::tempdir().expect("out");
    let faults: [&[&str]; 3] = [&[], &["die-at=claim"], &[]];
    let rots: Vec<String> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            vendor
                .init(&states.path().join(format!("dev-{i}")), f)
                .expect("init")
        })
        .collect();
    let binary = Path::new(env!("CARGO_BIN_EXE_trustline-e2e"));
    let output = tokio::process::Command::new(binary)
        .args(["station", "run", "--order", "PO-CLI", "--devices", "3"])
        .args(["--first-serial", &(1 + 10 * run).to_string()])
        .arg("--out")
        .arg(out.path())
        .arg("--link")
        .arg(exec_spec(states.path()))
        .args(["--device-timeout", "5", "--device-retries", "0", "--json"])
        .args(protocol)
        .arg("--server")
        .arg(stack.addr.to_string())
        .arg("--data-dir")
        .arg(stack.dir.path())
        .arg("--identity")
        .arg(station(SITE, "st-01"))
        .output()
        .await
        .expect("station run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Exit 1: a device failed (the others were provisioned).
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut summary: serde_json::Value = serde_json::from_str(&stdout).expect("json summary");
    assert_eq!(summary["provisioned"], 2, "{summary}");
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["failed_reasons"]["link:exit"], 1);
    let devices = summary["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{summary}");
    let d = &devices[0];
    assert_eq!(d["index"], 1);
    assert_eq!(d["outcome"], "failed");
    assert_eq!(d["stage"], "install-anchor");
    assert_eq!(d["reason"], "link:exit");
    assert_eq!(d["rot_id"], rots[1].as_str());
    assert!(d["serial"].is_null());
    assert!(
        d["link"].as_str().expect("link").contains("dev-1"),
        "{summary}"
    );
    assert!(
        d["message"]
            .as_str()
            .expect("message")
            .contains("dying at claim"),
        "{summary}"
    );
    // Two chains and vouchers written; nothing recorded for the dead die.
    let pems = std::fs::read_dir(out.path())
        .expect("out")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.path().extension().is_some_and(|x| x == "pem"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(pems, 2);
    let kinds = kinds_by_rot(stack).await;
    assert_eq!(kinds.get(&rots[1]), None);
    for i in [0, 2] {
        assert_eq!(
            kinds.get(&rots[i]),
            Some(&vec![EventKind::Claimed, EventKind::Certified])
        );
    }
    // What differs between two runs by nature: time, paths, the die.
    if let Some(object) = summary.as_object_mut() {
        object.retain(|k, _| !k.contains("second"));
    }
    if let Some(devices) = summary["devices"].as_array_mut() {
        for d in devices
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            d.remove("link");
            d.remove("rot_id");
            d.remove("message");
        }
    }
    summary
}
