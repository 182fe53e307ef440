//! The provisioner killed mid-run (SIGKILL, no shutdown) while a station is
//! certifying: after a restart, every device the station received a
//! certificate for is in the ledger with that very certificate
//! (invariant 1: recorded before released), and the ledger files verify.
//!
//! Its own test binary: it runs the real `trustline serve all` as a child
//! process with its own embedded SoftHSM2 token, so this process never
//! loads SoftHSM2 at all.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prost::Message;
use site::setup;
use station::run::{self, Job, Mode, Outcome, RunConfig};
use station::sim::SimLink;
use transport::ClientTls;
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_tests::ChildServer;

const SITE: &str = "site-1";
const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

fn cli(args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run trustline");
    assert!(
        out.status.success(),
        "trustline {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn channel(
    dir: &Path,
    identity: &str,
    addr: std::net::SocketAddr,
) -> tonic::transport::Channel {
    ClientTls::from_files(&setup::credentials(dir, identity))
        .expect("credentials")
        .connect(&addr.to_string())
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioner_killed_mid_run_loses_no_acknowledged_device() {
    transport::install_crypto_provider();
    let data = tempfile::tempdir().expect("dir");
    let dir = data.path();
    let mut fleet = station::sim::sim_vendors(5).expect("vendors");
    site::config::write_vendor_roots(&dir.join("vendors"), &fleet.vendor_roots()).expect("roots");
    std::fs::write(
        dir.join("trustline.toml"),
        "[transport]\nmax_concurrent_per_caller = 256\nrate = { per_second = 100000.0, burst = 100000 }\n",
    )
    .expect("config");
    let station_id = setup::station_name(SITE, "st-01");
    let server = ChildServer::start(
        Path::new(BIN),
        dir,
        &["--init", "--station", &format!("{SITE}/st-01")],
    )
    .expect("server");

    // The OEM signs and opens an order (the CLI, as an operator would).
    let order_file = dir.join("order.bin");
    let vendors: Vec<String> = fleet.vendor_roots().into_iter().map(|(n, _)| n).collect();
    let firmware = hex::encode(fleet.firmware_sha256());
    let mut args = vec![
        "order",
        "create",
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "--embedded-hsm",
        "--id",
        "PO-CRASH",
        "--sku",
        "SKU-1",
        "--site",
        SITE,
        "--quantity",
        "10000",
        "--firmware-sha256",
        &firmware,
        "--out",
        order_file.to_str().expect("utf-8"),
    ];
    for v in &vendors {
        args.extend(["--vendor", v.as_str()]);
    }
    cli(&args);
    let addr = server.addr.to_string();
    cli(&[
        "order",
        "open",
        "--file",
        order_file.to_str().expect("utf-8"),
        "--server",
        &addr,
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "--identity",
        setup::ADMIN,
    ]);

    // A station certifies 300 devices; the server dies under it.
    let dies = station::sim::fresh_dies(&mut fleet, 300).expect("dies");
    let out = dir.join("station-out");
    let config = RunConfig {
        order_id: "PO-CRASH".into(),
        mode: Mode::OnDevice,
        concurrency: 16,
        out_dir: Some(out.clone()),
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: run::Protocol::Stream,
    };
    let jobs = dies
        .into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect();
    let station = tokio::spawn(run::run(
        channel(dir, &station_id, server.addr).await,
        config,
        jobs,
    ));
    let manifest = out.join("devices.jsonl");
    for _ in 0..600 {
        let done = std::fs::read_to_string(&manifest)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("SIGKILL");
    let (report, _) = station.await.expect("station task").expect("station run");
    let received: Vec<&run::Provisioned> = report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Provisioned(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        received.len() >= 30,
        "the kill came too early: {}",
        received.len()
    );
    assert!(received.len() < 300, "the kill came too late to be mid-run");

    // Restarted: every certificate a station received is recorded.
    let server = ChildServer::start(Path::new(BIN), dir, &[]).expect("restart");
    let mut ledger = CustodyLedgerClient::new(channel(dir, setup::AUDITOR, server.addr).await);
    for p in &received {
        let found = ledger
            .lookup_key(v1::LookupKeyRequest {
                key: Some(v1::UniqueKey {
                    namespace: "rot".into(),
                    value: p.rot_id.as_bytes().to_vec(),
                }),
            })
            .await
            .expect("lookup")
            .into_inner();
        assert!(
            found.found,
            "device {} was released but is not in the ledger",
            p.serial
        );
        assert_eq!(found.holder_seq, p.ledger_seq);
        let stored = ledger
            .get_entry(v1::GetEntryRequest {
                seq: found.holder_seq,
            })
            .await
            .expect("entry")
            .into_inner();
        let entry = v1::LedgerEntry::decode(stored.entry.as_slice()).expect("entry");
        let payload = v1::CertifiedPayload::decode(entry.payload.as_slice()).expect("payload");
        assert_eq!(payload.certificate, p.chain[0], "device {}", p.serial);
    }
    drop(server);

    // The ledger files verify offline after the crash and the restart.
    let storage =
        custody_ledger::storage::FileStorage::open(&dir.join(setup::LEDGER_DIR)).expect("storage");
    // Integrity, not coverage: the last entries after the restart need not
    // be under a checkpoint yet (the verifier fails closed on that unless
    // told).
    let options = custody_ledger::verify::Options {
        allow_unsigned_tail: true,
        ..Default::default()
    };
    let verified =
        custody_ledger::verify::verify_dir(&storage, &options, &mut |_| {}).expect("verify");
    assert!(verified.report.is_ok(), "{:?}", verified.report.problem);
    assert!(verified.report.entries as usize >= received.len());
}
