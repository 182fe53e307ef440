//! No device certified offline is missing at the hub after the sync, even
//! when the site or the hub dies during it (issue 13 items 1–3;
//! invariant 1 across the two trust domains; 2.4.14.20, 2.4.14.22).
//!
//! The site is the real `trustline serve all` as a child process (its own
//! embedded SoftHSM2 token; this process never loads SoftHSM2), killed
//! with SIGKILL while its uplink pushes the backlog. The hub runs in this
//! process on its embedded store behind a gate that holds an ingest commit
//! on request, so each kill lands mid-sync by construction: the site dies
//! while a push is in flight (the hub then commits it, the answer is
//! lost), and the hub "dies" with a push in flight (its commit never
//! happens) and restarts from disk.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use site::setup;
use station::run::{self, Job, Mode, Outcome, RunConfig};
use station::sim::SimLink;
use transport::ClientTls;
use trustline_proto::v1;
use trustline_proto::v1::uplink_client::UplinkClient;
use trustline_tests::hub::HubServer;
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

/// Waits until the hub has cosigned everything the (quiet) site holds.
async fn synced(dir: &Path, site: &ChildServer) -> v1::UplinkStatus {
    let mut client = UplinkClient::new(channel(dir, setup::AUDITOR, site.addr).await);
    loop {
        let s = client
            .get_uplink_status(v1::GetUplinkStatusRequest {
                quota_counters: vec!["order/PO-SYNC".into()],
            })
            .await
            .expect("uplink status")
            .into_inner();
        if s.cosigned_size > 0 && s.cosigned_size == s.ledger_size {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn certify(
    dir: &Path,
    site: &ChildServer,
    fleet: &mut hsm_sim::rot::Fleet,
    n: usize,
    first_serial: u64,
) -> Vec<run::Provisioned> {
    let dies = station::sim::fresh_dies(fleet, n).expect("dies");
    let config = RunConfig {
        order_id: "PO-SYNC".into(),
        mode: Mode::OnDevice,
        concurrency: 4,
        out_dir: None,
        first_serial: Some(first_serial),
        progress: false,
        retries: 0,
        protocol: station::run::Protocol::Stream,
    };
    let jobs = dies
        .into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect();
    let station_id = setup::station_name(SITE, "st-01");
    let (report, _) = run::run(channel(dir, &station_id, site.addr).await, config, jobs)
        .await
        .expect("station run");
    let out: Vec<run::Provisioned> = report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Provisioned(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(out.len(), n, "{:?}", report.outcomes);
    out
}

fn all_at_hub(hub: &hub::Hub, devices: &[run::Provisioned]) {
    for p in devices {
        let records = hub
            .devices(&hub::store::DeviceQuery::RotId(p.rot_id.clone()))
            .expect("registry");
        assert_eq!(
            records.len(),
            1,
            "device {} certified offline is missing at the hub",
            p.serial
        );
        assert_eq!(records[0].certified_seq, p.ledger_seq);
        assert_eq!(records[0].certificate, p.chain[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_device_certified_offline_is_missing_at_the_hub_when_the_site_or_the_hub_dies_mid_sync()
{
    transport::install_crypto_provider();
    let data = tempfile::tempdir().expect("dir");
    let dir = data.path();
    let mut hub = HubServer::prepare(&dir.join("hub-store")).expect("hub");
    let site_dir = dir.join("site");
    std::fs::create_dir_all(&site_dir).expect("site dir");
    let uplink = hub.uplink_config(SITE).expect("uplink");
    hub.write_uplink_credentials(&site_dir, &uplink)
        .expect("uplink credentials");
    let mut fleet = station::sim::sim_vendors(5).expect("vendors");
    site::config::write_vendor_roots(&site_dir.join("vendors"), &fleet.vendor_roots())
        .expect("roots");
    // Two entries a push: the backlog takes many pushes to sync.
    std::fs::write(
        site_dir.join("trustline.toml"),
        format!(
            "[transport]\nmax_concurrent_per_caller = 256\nrate = {{ per_second = 100000.0, burst = 100000 }}\n\
             [uplink]\nhub = \"{}\"\nsite = \"{SITE}\"\nwitness_key = \"{}\"\npush_batch = 2\n\
             retry_min_ms = 20\nretry_max_ms = 200\n",
            uplink.hub, uplink.witness_key
        ),
    )
    .expect("config");
    let site = ChildServer::start(
        Path::new(BIN),
        &site_dir,
        &["--init", "--station", &format!("{SITE}/st-01")],
    )
    .expect("site");
    hub.add_site(SITE, &site_dir).expect("site key");

    // The OEM signs an order with an offline allowance of 100 and opens it.
    let order_file = dir.join("order.bin");
    let firmware = hex::encode(fleet.firmware_sha256());
    let vendors: Vec<String> = fleet.vendor_roots().into_iter().map(|(n, _)| n).collect();
    let site_path = site_dir.to_str().expect("utf-8");
    let mut args = vec![
        "order",
        "create",
        "--data-dir",
        site_path,
        "--embedded-hsm",
        "--id",
        "PO-SYNC",
        "--sku",
        "SKU-1",
        "--site",
        SITE,
        "--quantity",
        "1000",
        "--offline-allowance",
        "100",
        "--firmware-sha256",
        &firmware,
        "--out",
        order_file.to_str().expect("utf-8"),
    ];
    for v in &vendors {
        args.extend(["--vendor", v.as_str()]);
    }
    cli(&args);
    let addr = site.addr.to_string();
    cli(&[
        "order",
        "open",
        "--file",
        order_file.to_str().expect("utf-8"),
        "--server",
        &addr,
        "--data-dir",
        site_path,
        "--identity",
        setup::ADMIN,
    ]);

    // The hub has never been up: 20 devices on the allowance.
    let mut devices = certify(&site_dir, &site, &mut fleet, 20, 1).await;

    // The hub comes up; the site dies with its fourth push in flight.
    hub.gate.hold_after(3);
    hub.start().await.expect("hub up");
    hub.gate.wait_held().await;
    site.kill().expect("SIGKILL the site");
    hub.gate.release(false);
    while hub.gate.commits() < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mirrored = hub.hub().status(SITE).expect("status").mirror_size;
    assert_eq!(mirrored, 8, "three pushes and the one in flight");

    // Restarted, the site resumes from what the hub holds.
    let site = ChildServer::start(Path::new(BIN), &site_dir, &[]).expect("site restart");
    let s = synced(&site_dir, &site).await;
    assert_eq!(s.cosigned_quota_uses["order/PO-SYNC"], 20);
    all_at_hub(hub.hub(), &devices);

    // The hub goes down; 20 more devices offline; it comes back and dies
    // with the third push of the backlog in flight, and restarts from disk.
    hub.stop().await.expect("hub down");
    devices.extend(certify(&site_dir, &site, &mut fleet, 20, 500).await);
    hub.gate.hold_after(2);
    hub.start().await.expect("hub up again");
    hub.gate.wait_held().await;
    hub.crash_and_restart()
        .await
        .expect("hub crash and restart");
    let s = synced(&site_dir, &site).await;
    assert_eq!(s.cosigned_quota_uses["order/PO-SYNC"], 40);
    all_at_hub(hub.hub(), &devices);
    let held = hub.hub().status(SITE).expect("status");
    assert_eq!(held.mirror_size, s.ledger_size);
    assert_eq!(held.cosigned_size(), s.cosigned_size);
    assert_eq!(
        hub.hub().site_figures().expect("figures")[0].1.certified,
        40
    );
    assert!(hub.hub().forks(None).expect("forks").is_empty());
    drop(site);
    hub.stop().await.expect("hub stop");
}
