//! `trustline demo`: the whole factory line on this machine, end to end.
//!
//! In a fresh directory: an embedded SoftHSM2 token, the CA (`ca init`), the
//! service PKI (service CA key in the token; server, admin and station
//! certificates), then `serve all` on loopback behind TLS 1.3 with client
//! certificates. The OEM signs and opens an order for N devices; S stations
//! provision N genuine devices plus one past the quota, a few key clones,
//! impostors and counterfeits (station 1 makes its keys in the HSM, the
//! others on the device); the ledger publishes a checkpoint; the services
//! stop; the ledger files are verified offline and every chain with
//! `openssl verify`. Beside each device's chain and Trustline voucher the
//! stations write its FDO 1.1 voucher, `<serial>.fdo-voucher.pem` (the
//! order names an FDO rendezvous server; issue 17), each verified here. `--json` prints exactly `{provisioned,
//! duplicates_rejected, counterfeits_rejected, quota_rejected,
//! ledger_entries, checkpoint, ledger_verified, devices_per_second}`.
//!
//! `--sites N` (N ≥ 2) runs the two trust domains instead: an OEM hub and N
//! enrolled sites (`demo_sites`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use ca_service::keys::KeyLabels;
use clap::Args;
use hsm_sim::rot::Fleet;
use serde::Serialize;
use transport::{ClientTls, Limits, RateLimit};
use trustline_proto::signer::Signer;
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use super::hsm_args::HsmArgs;
use super::Outcome;
use site::serve;
use site::setup;
use site::Config;
use station::run::{self, Job, Mode, Report, RunConfig};
use station::sim::SimLink;

/// The demo's factory site.
const SITE: &str = "site-1";
/// The FDO rendezvous server the demo's order names (issue 17).
pub(super) const DEMO_RENDEZVOUS: &str = "rv.trustline.example";

/// The demo's order.
const ORDER: &str = "PO-DEMO-1";

/// `trustline demo` arguments.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Genuine devices ordered and built.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub(crate) devices: usize,
    /// Stations on the line, each with its own certificate and channel.
    #[arg(long, value_name = "S", default_value_t = 4)]
    pub(crate) stations: usize,
    /// Where every artifact goes (token, CA, PKI, ledger, device chains and
    /// vouchers); must not exist yet or be empty.
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    pub(crate) dir: PathBuf,
    /// Print exactly the summary JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// Factory sites: 1 runs the single-box line; 2 or more run an OEM hub
    /// and that many enrolled sites, each on tokens of its own (issue 13).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) sites: usize,
    /// Keep the data in PostgreSQL (issue 14): the single box's ledger, or
    /// with --sites the hub's store and the first site's ledger; a
    /// throwaway cluster is started for the demo and stopped after it.
    #[arg(long)]
    pub(crate) postgres: bool,
}

#[derive(Serialize)]
struct Summary {
    provisioned: usize,
    duplicates_rejected: usize,
    counterfeits_rejected: usize,
    quota_rejected: usize,
    ledger_entries: u64,
    checkpoint: String,
    ledger_verified: bool,
    devices_per_second: f64,
}

/// Runs the demo.
///
/// # Errors
/// When `--dir` is not empty, or any set-up, service or I/O step fails.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    ensure!(
        args.devices > 0 && args.stations > 0,
        "--devices and --stations must be at least 1"
    );
    ensure!(args.sites > 0, "--sites must be at least 1");
    super::fresh_dir(&args.dir)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    if args.sites > 1 {
        return runtime.block_on(super::demo_sites::demo(&args));
    }
    runtime.block_on(demo(&args))
}

fn say(args: &DemoArgs, line: &str) {
    if !args.json {
        println!("{line}");
    }
}

/// Limits for a line on one machine: the default per-station rate (200
/// calls/s) would make the demo measure the throttle.
pub(crate) fn demo_limits() -> Limits {
    Limits {
        rate: RateLimit {
            per_second: 50_000.0,
            burst: 50_000,
        },
        max_concurrent_per_caller: 128,
        max_streams_per_connection: 256,
        ..Limits::default()
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<Outcome> {
    transport::install_crypto_provider();
    let dir = args.dir.as_path();
    let tokens = HsmArgs::open_embedded(dir, 4)?;
    setup::init_ca(&tokens.ca, dir, SITE)?;
    setup::init_ledger_key(&tokens.ledger, dir)?;
    let stations: Vec<(String, String)> = (1..=args.stations)
        .map(|i| (SITE.to_owned(), format!("st-{i:02}")))
        .collect();
    setup::init_pki(&tokens.ca, dir, SITE, &stations)?;
    say(
        args,
        &format!("token, CA and service PKI ready in {}", dir.display()),
    );

    // Silicon: N genuine dies plus one past the quota, and the adversaries.
    let clones = 3.min(args.devices);
    let fleet = Fleet::builder()
        .seed(rand::random())
        .genuine(args.devices + 1)
        .key_clones(clones)
        .impostors(2)
        .self_signed(2)
        .unknown_vendor(2)
        .build()
        .context("building the simulated fleet")?;
    site::config::write_vendor_roots(&dir.join("vendors"), &fleet.vendor_roots())?;
    let vendors: Vec<String> = fleet.vendor_roots().into_iter().map(|(n, _)| n).collect();
    let firmware = fleet.firmware_sha256();

    // The services, behind mTLS on loopback.
    let mut config = Config::load(dir)?;
    config.transport = demo_limits();
    // With --postgres: the ledger in a throwaway cluster, gone after the run.
    let cluster = if args.postgres {
        let cluster = tokio::task::spawn_blocking(pg_store::cluster::Cluster::start)
            .await
            .context("starting postgresql")??;
        config.ledger.database = cluster.create_database("demo").await?;
        say(
            args,
            &format!(
                "ledger in PostgreSQL: {} (a throwaway cluster)",
                config.ledger.database
            ),
        );
        Some(cluster)
    } else {
        None
    };
    let listener = serve::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (dir, config, tokens) = (dir.to_path_buf(), config.clone(), tokens.clone());
        tokio::spawn(async move {
            serve::serve_all(&dir, &config, tokens.ca, tokens.ledger, listener, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    say(
        args,
        &format!("serve all listening on {addr} (TLS 1.3, client certificates required)"),
    );
    let connect = |name: String| {
        let addr = addr.clone();
        async move {
            let tls = ClientTls::from_files(&setup::credentials(dir, &name))?;
            anyhow::Ok(tls.connect(&addr).await?)
        }
    };

    // The OEM signs the order in the HSM and opens it.
    let now = backends::now_ms();
    let order = v1::ProductionOrder {
        order_id: ORDER.into(),
        sku: "TL-SENSOR-1".into(),
        site: SITE.into(),
        quantity: args.devices as u64,
        serial_scheme: Some(v1::SerialScheme {
            prefix: "TLS".into(),
            first: 1,
            last: 99_999_999,
            digits: 8,
        }),
        not_before_ms: now - 60_000,
        not_after_ms: now + 7 * 86_400_000,
        allowed_ic_vendors: vendors,
        allowed_firmware_sha256: firmware.to_vec(),
        // Issue 17: every device also gets an FDO 1.1 voucher
        // (`<serial>.fdo-voucher.pem`, written by the station).
        fdo: Some(
            trustline_proto::fdo::FdoDeviceData {
                rv_info: trustline_proto::fdo::RendezvousInfo::server(
                    DEMO_RENDEZVOUS,
                    8041,
                    trustline_proto::fdo::rendezvous::protocol::HTTPS,
                ),
                device_info: "Trustline TL-SENSOR-1".into(),
            }
            .to_order(),
        ),
        ..Default::default()
    };
    let signer = tokens
        .ca
        .signer(&KeyLabels::default().order)
        .context("the OEM order key")?;
    let signed = trustline_proto::statement::sign(&signer, &order)?;
    let voucher_spki = tokens
        .ca
        .signer(&KeyLabels::default().voucher)
        .context("the OEM voucher key")?
        .public_key_der()
        .to_vec();
    let admin = connect(setup::ADMIN.to_owned()).await?;
    ProvisioningClient::new(admin.clone())
        .open_order(v1::OpenOrderRequest {
            signed_order: Some(signed),
        })
        .await
        .map_err(|s| anyhow::anyhow!("opening the order: {}", s.message()))?;
    say(
        args,
        &format!(
            "order {ORDER} opened: {} x TL-SENSOR-1 at {SITE}",
            args.devices
        ),
    );

    // S stations, devices dealt in turn; each its own serial range.
    let mut decks: Vec<Vec<Job<SimLink>>> = (0..args.stations).map(|_| Vec::new()).collect();
    for (i, device) in fleet.into_devices().into_iter().enumerate() {
        decks[i % args.stations].push(Job {
            link: SimLink::new(device.rot),
            serial: None,
        });
    }
    let out = dir.join("devices");
    let span = (args.devices as u64 + 100) / args.stations as u64 + 1;
    let started = Instant::now();
    let mut runs = Vec::new();
    for (i, jobs) in decks.into_iter().enumerate() {
        let channel = connect(setup::station_name(SITE, &stations[i].1)).await?;
        let config = RunConfig {
            order_id: ORDER.into(),
            mode: if i == 1 { Mode::Hsm } else { Mode::OnDevice },
            concurrency: 16,
            out_dir: Some(out.clone()),
            first_serial: Some(1 + i as u64 * span),
            progress: !args.json && i == 0,
            retries: 1,
            protocol: run::Protocol::Stream,
        };
        runs.push(tokio::spawn(run::run(channel, config, jobs)));
    }
    let mut reports: Vec<Report> = Vec::new();
    for r in runs {
        reports.push(r.await.context("a station task")??.0);
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Sign a checkpoint over everything, then stop (the ledger closes).
    let checkpoint = CustodyLedgerClient::new(admin)
        .publish_checkpoint(v1::PublishCheckpointRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("publishing a checkpoint: {}", s.message()))?
        .into_inner();
    let _ = stop_tx.send(());
    server.await.context("the server task")??;

    // Offline checks: the ledger (its files, or its rows), every chain.
    let verified = if cluster.is_some() {
        let export = dir.join("ledger.export");
        pg_store::records::export(&config.ledger.database, &export).await?;
        say(
            args,
            &format!("ledger exported from PostgreSQL to {}", export.display()),
        );
        pg_store::records::verify(&config.ledger.database, &Default::default(), &mut |_| {}).await?
    } else {
        let storage = custody_ledger::storage::FileStorage::open(&dir.join(setup::LEDGER_DIR))?;
        custody_ledger::verify::verify_dir(&storage, &Default::default(), &mut |_| {})?
    };
    drop(cluster);
    let chains: Vec<Vec<Vec<u8>>> = reports
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .filter_map(|o| match o {
            run::Outcome::Provisioned(p) => Some(p.chain.clone()),
            _ => None,
        })
        .collect();
    let root = dir.join(setup::CA_DIR).join(ca_service::ca::ROOT_CERT_FILE);
    let openssl_ok = openssl_verify_all(&root, &out, &reports);
    let (fdo_ok, fdo_n) = fdo_verify_all(&voucher_spki, &out, &reports);

    let count = |pred: &dyn Fn(&str) -> bool| -> usize {
        reports
            .iter()
            .flat_map(|r| r.outcomes.iter())
            .filter_map(run::Outcome::refusal)
            .filter(|r| pred(r))
            .count()
    };
    let failures: usize = reports.iter().map(|r| r.failures().len()).sum();
    let summary = Summary {
        provisioned: chains.len(),
        duplicates_rejected: count(&|r| r.starts_with("duplicate") || r == "already-claimed"),
        counterfeits_rejected: count(&|r| r == "counterfeit"),
        quota_rejected: count(&|r| r == "quota"),
        ledger_entries: verified.report.entries,
        checkpoint: checkpoint.note.clone(),
        ledger_verified: verified.report.is_ok(),
        devices_per_second: chains.len() as f64 / elapsed.max(1e-9),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!();
        println!(
            "provisioned            {:>6}  ({:.0} devices/s over {} stations)",
            summary.provisioned, summary.devices_per_second, args.stations
        );
        println!(
            "duplicates rejected    {:>6}  (key clones of claimed dies)",
            summary.duplicates_rejected
        );
        println!(
            "counterfeits rejected  {:>6}  (impostors, self-signed, unknown vendor)",
            summary.counterfeits_rejected
        );
        println!(
            "quota rejected         {:>6}  (devices past the order's quantity)",
            summary.quota_rejected
        );
        println!("failures               {failures:>6}");
        println!(
            "ledger entries         {:>6}  verified offline: {}",
            summary.ledger_entries,
            if summary.ledger_verified { "yes" } else { "NO" }
        );
        println!("fdo vouchers           {fdo_ok:>6} of {fdo_n} verify (<serial>.fdo-voucher.pem)");
        match openssl_ok {
            Some((ok, n)) => println!("openssl verify         {ok:>6} of {n} chains OK"),
            None => println!("openssl verify         skipped (openssl not installed)"),
        }
        println!("checkpoint:\n{}", summary.checkpoint.trim_end());
        println!("artifacts in {}", dir.display());
    }
    let chains_ok = openssl_ok.is_none_or(|(ok, n)| ok == n);
    Ok(
        if failures == 0 && summary.ledger_verified && chains_ok && fdo_ok == fdo_n {
            Outcome::Success
        } else {
            Outcome::Findings
        },
    )
}

/// Each provisioned device's `<serial>.fdo-voucher.pem`, read back and
/// verified against the OEM voucher key (chain hash, no entries yet): how
/// many verify, of how many devices.
fn fdo_verify_all(voucher_spki: &[u8], out: &Path, reports: &[Report]) -> (usize, usize) {
    let serials: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .filter_map(|o| match o {
            run::Outcome::Provisioned(p) => Some(p.serial.as_str()),
            _ => None,
        })
        .collect();
    let ok = serials
        .iter()
        .filter(|serial| {
            std::fs::read_to_string(out.join(format!("{serial}.fdo-voucher.pem")))
                .ok()
                .and_then(|pem| trustline_proto::fdo::FdoVoucher::from_pem(&pem).ok())
                .is_some_and(|fdo| fdo.verify(voucher_spki).is_ok())
        })
        .count();
    (ok, serials.len())
}

/// `openssl verify` on every written chain; `None` without openssl.
fn openssl_verify_all(root: &Path, out: &Path, reports: &[Report]) -> Option<(usize, usize)> {
    let serials: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .filter_map(|o| match o {
            run::Outcome::Provisioned(p) => Some(p.serial.as_str()),
            _ => None,
        })
        .collect();
    let mut ok = 0;
    for serial in &serials {
        let chain = out.join(format!("{serial}.pem"));
        let result = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(root)
            .arg("-untrusted")
            .arg(&chain)
            .arg(&chain)
            .output();
        match result {
            Ok(o) if o.status.success() => ok += 1,
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    Some((ok, serials.len()))
}
