//! `trustline demo --sites N` (N ≥ 2): the two trust domains on this
//! machine (issue 13 item 6). An OEM hub and N factory sites on loopback,
//! each on embedded SoftHSM2 tokens of its own (`<dir>/hsm`: the hub's, and
//! per site a CA token and a ledger token), set up by the real `hub init`,
//! `site init`, `hub enroll-site` and `site install` and served by the real
//! `serve hub` and `serve site` ([`deploy::loopback`]).
//!
//! The run: every site opens its own signed order and provisions; the
//! first site's line also meets a same-site key clone and a counterfeit;
//! the last site's uplink then goes down (the hub stops) and it keeps
//! producing on its order's offline allowance, exactly that many, the next
//! devices refused `offline-allowance`; the hub comes back, the backlog is
//! cosigned by itself and the rest of the devices are certified. A die
//! carrying a first-site device's identity is certified at the last site
//! (a cross-site clone, caught by the hub's registry); a site pushes a
//! rewritten entry to the hub (a forged history, refused and recorded as a
//! fork). With every factory stopped, the hub onboards a first-site device
//! (the OEM names its first owner at the hub) and refuses the clone. Then
//! every ledger — each site's and the hub's — is verified offline.
//!
//! `--json` prints the single-site demo's fields plus `{sites,
//! cosigned_checkpoints, offline_certified, offline_refused,
//! cross_site_clones_detected, forks_refused}`. `--dir` keeps everything:
//! `<dir>/hub` (the witness's public key `witness-key.pub.pem` and
//! `witness.vkey`, the store, the hub ledger), `<dir>/<site>` (its ledger
//! with every cosigned checkpoint note in
//! `ledger/cosigned-checkpoints.jsonl` and the latest in
//! `ledger/checkpoint.cosigned`), `<dir>/<site>.bundle`.
//!
//! `--postgres` (issue 14) puts the hub's store and the first site's
//! ledger in a throwaway PostgreSQL cluster: the site's uplink pushes from
//! the database, the offline check verifies its ledger there, and — before
//! the cluster goes — the demo runs the hub audit (`trustline audit
//! --hub-dir`'s code) over the store in PostgreSQL; `--json` then adds
//! `hub_audit` (the audit's totals and finding kinds).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use ca_service::keys::KeyLabels;
use ca_service::{Hsm, HsmConfig, PinSource};
use deploy::loopback::{Loopback, SiteSpec};
use hsm_sim::rot::{DeviceKind, Fleet, SimulatedRot};
use serde::Serialize;
use sha2::{Digest, Sha256};
use site::setup;
use station::run::{self, Job, Mode, Outcome, Provisioned, RunConfig};
use station::sim::SimLink;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_proto::v1::ownership_client::OwnershipClient;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::registry_client::RegistryClient;
use trustline_proto::v1::uplink_client::UplinkClient;
use trustline_proto::v1::witness_client::WitnessClient;

use super::demo::{demo_limits, DemoArgs};
use super::Outcome as CliOutcome;

/// Devices the last site may certify beyond its last cosigned checkpoint.
const OFFLINE_ALLOWANCE: u64 = 5;
/// Devices presented past the allowance while the hub is down.
const PAST_ALLOWANCE: usize = 3;

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
    sites: usize,
    cosigned_checkpoints: u64,
    offline_certified: usize,
    offline_refused: usize,
    cross_site_clones_detected: usize,
    forks_refused: usize,
    /// With `--postgres`: the hub audit over the store in PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    hub_audit: Option<serde_json::Value>,
}

fn say(args: &DemoArgs, line: &str) {
    if !args.json {
        println!("{line}");
    }
}

/// Opens (creating it) the embedded token `label` under `<dir>/hsm`.
fn token(dir: &Path, label: &str) -> anyhow::Result<Hsm> {
    let t = hsm_sim::softhsm::embedded_named_token(
        &dir.join(backends::layout::EMBEDDED_HSM_DIR),
        None,
        label,
    )
    .with_context(|| format!("embedded token {label}"))?;
    let mut config = HsmConfig::new(t.label, PinSource::File(t.pin_file));
    config.module = Some(t.module);
    config.pool_size = 4;
    super::hsm_args::open(&config)
}

/// What one station run gave back: outcomes with their devices.
type Made = Vec<(Outcome, SimulatedRot)>;

/// Runs the multi-site demo in the runtime.
///
/// # Errors
/// Any set-up, service or I/O failure.
pub(crate) async fn demo(args: &DemoArgs) -> anyhow::Result<CliOutcome> {
    transport::install_crypto_provider();
    let dir = args.dir.as_path();
    let n = args.sites;
    ensure!(
        args.devices >= n * 2,
        "--devices must be at least twice --sites"
    );
    let names: Vec<String> = (1..=n).map(|i| format!("site-{i}")).collect();
    let hub_hsm = token(dir, "hub")?;
    let mut specs = Vec::with_capacity(n);
    for name in &names {
        specs.push(SiteSpec {
            name: name.clone(),
            ca: token(dir, &format!("{name}-ca"))?,
            ledger: token(dir, &format!("{name}-ledger"))?,
            stations: vec!["st-01".into()],
        });
    }

    // Silicon for every site from one vendor set; the adversaries.
    let mut fleet = Fleet::builder()
        .seed(rand::random())
        .genuine(args.devices)
        .unknown_vendor(1)
        .build()
        .context("building the simulated fleet")?;
    let cross_clone = fleet.key_clone(0)?;
    let same_site_clone = fleet.key_clone(1)?;
    let duplicated = same_site_clone.rot_id().to_owned();
    let vendor_roots = fleet.vendor_roots();
    let vendors: Vec<String> = vendor_roots.iter().map(|(n, _)| n.clone()).collect();
    let firmware = fleet.firmware_sha256();
    let mut net = Loopback::init(
        dir,
        hub_hsm,
        specs,
        &vendor_roots,
        &demo_limits(),
        (50, 400),
    )?;
    // --postgres: the hub's store and the first site's ledger in a
    // throwaway cluster, gone after the run.
    let cluster = if args.postgres {
        let cluster = tokio::task::spawn_blocking(pg_store::cluster::Cluster::start)
            .await
            .context("starting postgresql")??;
        net.set_hub_database(&cluster.create_database("hub").await?)?;
        let site_db = cluster.create_database("site_1").await?;
        net.set_site_ledger_database(0, &site_db)?;
        say(
            args,
            &format!(
                "hub store and {}'s ledger in PostgreSQL on 127.0.0.1:{} (a throwaway cluster)",
                names[0],
                cluster.port()
            ),
        );
        Some(cluster)
    } else {
        None
    };
    net.start_all().await?;
    say(
        args,
        &format!(
            "hub on {} (witness {}), {} sites enrolled, each on its own tokens",
            net.hub_addr, net.witness_key, n
        ),
    );

    // Every site opens its order, signed with the OEM order key at the hub.
    let order_key = net.hub_hsm().signer(&KeyLabels::default().order)?;
    let per_site = args.devices / n;
    for (i, name) in names.iter().enumerate() {
        let now = backends::now_ms();
        let order = v1::ProductionOrder {
            order_id: order_id(i),
            sku: "TL-SENSOR-1".into(),
            site: name.clone(),
            quantity: per_site as u64 + 10,
            serial_scheme: Some(v1::SerialScheme {
                prefix: format!("TL{}", i + 1),
                first: 1,
                last: 99_999_999,
                digits: 8,
            }),
            not_before_ms: now - 60_000,
            not_after_ms: now + 7 * 86_400_000,
            allowed_ic_vendors: vendors.clone(),
            allowed_firmware_sha256: firmware.to_vec(),
            // Issue 17: every device also gets an FDO 1.1 voucher
            // (`devices/<site>/<serial>.fdo-voucher.pem`).
            fdo: Some(
                trustline_proto::fdo::FdoDeviceData {
                    rv_info: trustline_proto::fdo::RendezvousInfo::server(
                        super::demo::DEMO_RENDEZVOUS,
                        8041,
                        trustline_proto::fdo::rendezvous::protocol::HTTPS,
                    ),
                    device_info: "Trustline TL-SENSOR-1".into(),
                }
                .to_order(),
            ),
            offline_allowance: if i + 1 == n {
                OFFLINE_ALLOWANCE
            } else {
                per_site as u64 + 10
            },
            ..Default::default()
        };
        let signed = trustline_proto::statement::sign(&order_key, &order)?;
        ProvisioningClient::new(net.site_channel(i, setup::ADMIN, true).await?)
            .open_order(v1::OpenOrderRequest {
                signed_order: Some(signed),
            })
            .await
            .map_err(|s| anyhow::anyhow!("opening {}: {}", order.order_id, s.message()))?;
    }

    // Deal the dies: site i gets its share; the last site's share splits
    // into online, offline (allowance + past it) and after-sync parts.
    let (mut dies, mut adversaries): (Vec<_>, Vec<_>) = fleet
        .into_devices()
        .into_iter()
        .partition(|d| d.kind == DeviceKind::Genuine);
    let mut dies: Vec<SimulatedRot> = dies.drain(..).map(|d| d.rot).collect();
    let counterfeit = adversaries.pop().context("the counterfeit die")?.rot;
    let mut shares: Vec<Vec<SimulatedRot>> = Vec::with_capacity(n);
    for i in 0..n {
        let take = if i + 1 == n { dies.len() } else { per_site };
        shares.push(dies.drain(..take).collect());
    }
    let started = Instant::now();
    let mut made: Vec<Made> = (0..n).map(|_| Vec::new()).collect();
    let last = n - 1;
    // Online production everywhere but the last site's offline part.
    let offline_part = OFFLINE_ALLOWANCE as usize + PAST_ALLOWANCE;
    let mut last_share = std::mem::take(&mut shares[last]);
    let keep = last_share.len().saturating_sub(offline_part + 2);
    let mut online_last: Vec<SimulatedRot> = last_share.drain(..keep).collect();
    let offline: Vec<SimulatedRot> = last_share
        .drain(..offline_part.min(last_share.len()))
        .collect();
    let after_sync = last_share;
    shares[last] = std::mem::take(&mut online_last);
    // After its line, the first site meets a second die carrying a device's
    // identity and a die of an unknown vendor.
    let mut adversaries = Some(vec![same_site_clone, counterfeit]);
    // The other sites run their lines at once (their orders allow a
    // backlog of their whole quantity); the last site, whose allowance is
    // small, runs in batches of its allowance, each cosigned before the
    // next, as a line paced by its uplink would.
    let mut runs = Vec::new();
    let mut last_batches = Vec::new();
    for (i, share) in shares.into_iter().enumerate() {
        if i == last {
            last_batches = share;
            continue;
        }
        let channel = net.site_channel(i, &station(&net, i), false).await?;
        let out = devices_dir(dir, &names[i]);
        let extra = if i == 0 {
            adversaries.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        runs.push((
            i,
            tokio::spawn(async move {
                let mut made = run_line(channel.clone(), i, 0, share, true, &out).await?;
                if !extra.is_empty() {
                    made.extend(run_line(channel, i, 400, extra, true, &out).await?);
                }
                anyhow::Ok(made)
            }),
        ));
    }
    made[last].extend(paced(&net, dir, last, 100, last_batches).await?);
    for (i, r) in runs {
        made[i].extend(r.await.context("a station task")??);
    }
    for i in 0..n {
        synced(&net, i).await?;
    }
    say(args, "every site provisioned and cosigned by the hub");

    // The last site loses its uplink: the hub stops.
    net.stop_hub().await?;
    say(
        args,
        &format!(
            "hub down: {} keeps producing on its offline allowance ({OFFLINE_ALLOWANCE})",
            names[last]
        ),
    );
    let channel = net.site_channel(last, &station(&net, last), false).await?;
    let offline_made = run_line(
        channel,
        last,
        500,
        offline,
        args.json,
        &devices_dir(dir, &names[last]),
    )
    .await?;
    let offline_certified = offline_made
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Provisioned(_)))
        .count();
    let offline_refused = offline_made
        .iter()
        .filter(|(o, _)| o.refusal() == Some(station::run::allowance::REASON))
        .count();
    say(
        args,
        &format!("offline: {offline_certified} certified, {offline_refused} refused (hub unreachable, offline allowance spent)"),
    );
    // A refused die stays claimed and uncertified at the site (its claim is
    // recorded; nothing else is): it is investigated, not re-presented.
    made[last].extend(offline_made);

    // The hub returns; the backlog syncs by itself; production resumes.
    net.start_hub().await?;
    synced(&net, last).await?;
    let mut tail = after_sync;
    tail.push(cross_clone);
    made[last].extend(paced(&net, dir, last, 800, tail).await?);
    let elapsed = started.elapsed().as_secs_f64();
    for i in 0..n {
        synced(&net, i).await?;
    }
    say(
        args,
        "hub back: the backlog is cosigned and the allowance free again",
    );

    // A forged history: the first site's uplink identity pushes a rewritten
    // copy of an entry the hub already holds.
    let forged = forge(&net).await?;
    say(
        args,
        &format!("forged history refused by the hub: {forged}"),
    );

    // Every factory stops; the hub alone does field life.
    for i in 0..n {
        net.stop_site(i).await?;
    }
    let (onboarded, clone_refusal) = field_life(&net, &made, &duplicated).await?;
    say(
        args,
        &format!("factories stopped: the hub onboarded {onboarded}; the cross-site clone: {clone_refusal}"),
    );

    // What the hub holds.
    let mut registry = RegistryClient::new(net.hub_channel(setup::AUDITOR).await?);
    let clones = registry
        .list_clones(v1::ListClonesRequest {})
        .await?
        .into_inner()
        .clones
        .len();
    let forks = registry
        .list_forks(v1::ListForksRequest::default())
        .await?
        .into_inner()
        .forks
        .len();
    net.stop_all().await?;

    // Offline checks: every site's ledger and the hub's.
    let mut ledger_entries = 0;
    let mut verified_all = true;
    let mut cosigned_checkpoints = 0;
    for s in &net.sites {
        let database = &s.config().ledger.database;
        let v = if database.is_empty() {
            let storage =
                custody_ledger::storage::FileStorage::open(&s.dir.join(setup::LEDGER_DIR))?;
            custody_ledger::verify::verify_dir(&storage, &Default::default(), &mut |_| {})?
        } else {
            pg_store::records::verify(database, &Default::default(), &mut |_| {}).await?
        };
        ledger_entries += v.report.entries;
        verified_all &= v.report.is_ok();
        let history = s
            .dir
            .join(setup::LEDGER_DIR)
            .join(site::uplink::store::COSIGNED_HISTORY_FILE);
        cosigned_checkpoints += std::fs::read_to_string(&history)
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
            .unwrap_or(0);
    }
    let storage = custody_ledger::storage::FileStorage::open(&net.hub_dir.join(setup::LEDGER_DIR))?;
    let hub_verified =
        custody_ledger::verify::verify_dir(&storage, &Default::default(), &mut |_| {})?;
    verified_all &= hub_verified.report.is_ok();
    let checkpoint = std::fs::read_to_string(
        net.sites[0]
            .dir
            .join(setup::LEDGER_DIR)
            .join(site::uplink::store::COSIGNED_NOTE_FILE),
    )
    .unwrap_or_default();
    // With the store in PostgreSQL, the hub audit runs now, while the
    // cluster does.
    let hub_audit = match &cluster {
        Some(_) => Some(audit_hub_store(&net.hub_dir).await?),
        None => None,
    };
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .context("stopping postgresql")??;
    }

    let outcomes = made.iter().flatten().map(|(o, _)| o);
    let mut summary = Summary {
        provisioned: 0,
        duplicates_rejected: 0,
        counterfeits_rejected: 0,
        quota_rejected: 0,
        ledger_entries,
        checkpoint,
        ledger_verified: verified_all,
        devices_per_second: 0.0,
        sites: n,
        cosigned_checkpoints,
        offline_certified,
        offline_refused,
        cross_site_clones_detected: clones,
        forks_refused: forks,
        hub_audit,
    };
    let mut failures = 0;
    for o in outcomes {
        match o {
            Outcome::Provisioned(_) => summary.provisioned += 1,
            Outcome::Failed { .. } => failures += 1,
            other => match other.refusal() {
                Some(r) if r.starts_with("duplicate") || r == "already-claimed" => {
                    summary.duplicates_rejected += 1;
                }
                Some("counterfeit") => summary.counterfeits_rejected += 1,
                Some("quota") => summary.quota_rejected += 1,
                _ => {}
            },
        }
    }
    summary.devices_per_second = summary.provisioned as f64 / elapsed.max(1e-9);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!();
        println!("sites                  {:>6}", summary.sites);
        println!(
            "provisioned            {:>6}  ({:.0} devices/s)",
            summary.provisioned, summary.devices_per_second
        );
        println!("duplicates rejected    {:>6}", summary.duplicates_rejected);
        println!(
            "counterfeits rejected  {:>6}",
            summary.counterfeits_rejected
        );
        println!("failures               {failures:>6}");
        println!("cosigned checkpoints   {:>6}", summary.cosigned_checkpoints);
        println!(
            "offline                {:>6}  certified on the allowance, {} refused past it",
            summary.offline_certified, summary.offline_refused
        );
        println!(
            "cross-site clones      {:>6}  detected by the hub's registry",
            summary.cross_site_clones_detected
        );
        println!("forks refused          {:>6}", summary.forks_refused);
        println!(
            "ledger entries         {:>6}  every ledger verified offline: {}",
            summary.ledger_entries,
            if summary.ledger_verified { "yes" } else { "NO" }
        );
        println!(
            "cosigned checkpoint of {}:\n{}",
            names[0],
            summary.checkpoint.trim_end()
        );
        println!("artifacts in {}", dir.display());
        match &summary.hub_audit {
            Some(a) => println!(
                "hub audit over the store in PostgreSQL: {} finding(s) {} (the cluster is gone now)",
                a["findings"].as_array().map_or(0, Vec::len),
                a["findings"]
            ),
            None => println!(
                "audit every site: trustline audit --hub-dir {}",
                dir.join("hub").display()
            ),
        }
    }
    let audited = summary.hub_audit.as_ref().is_none_or(|a| {
        a["totals"]["forks_refused"] == summary.forks_refused
            && a["totals"]["cross_site_clones"] == summary.cross_site_clones_detected
            && a["totals"]["offline_certified"] == summary.offline_certified
    });
    let expected = summary.offline_certified == OFFLINE_ALLOWANCE as usize
        && summary.offline_refused == PAST_ALLOWANCE
        && summary.cross_site_clones_detected >= 1
        && summary.forks_refused >= 1
        && audited;
    Ok(if failures == 0 && summary.ledger_verified && expected {
        CliOutcome::Success
    } else {
        CliOutcome::Findings
    })
}

/// The hub audit (`trustline audit --hub-dir`'s options and code) over
/// the stopped hub in `hub_dir`: its totals and the kinds of its findings.
async fn audit_hub_store(hub_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let dir = hub_dir.to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        let options = super::audit::hub_options(
            &dir,
            &super::audit::HubSources {
                ca_certs: &[],
                order_key: None,
                ledger_key: None,
            },
            super::audit::HubLimits::default(),
        )?;
        anyhow::Ok(audit::hub::run(&options)?)
    })
    .await
    .context("the hub audit")??;
    let full: serde_json::Value = serde_json::from_str(&audit::hub::json(&report))?;
    let kinds: Vec<serde_json::Value> = full["findings"]
        .as_array()
        .map(|f| f.iter().map(|f| f["kind"].clone()).collect())
        .unwrap_or_default();
    Ok(serde_json::json!({
        "store": report.store,
        "totals": full["totals"],
        "findings": kinds,
    }))
}

/// Where a site's station writes each device's chain and vouchers.
fn devices_dir(dir: &Path, site: &str) -> PathBuf {
    dir.join("devices").join(site)
}

fn order_id(i: usize) -> String {
    format!("PO-DEMO-{}", i + 1)
}

fn station(net: &Loopback, i: usize) -> String {
    setup::station_name(&net.sites[i].name, &net.sites[i].stations[0])
}

/// One station run at site `i` (serials from `offset` within the site's
/// range), outcomes with their devices.
async fn run_line(
    channel: tonic::transport::Channel,
    i: usize,
    offset: u64,
    dies: Vec<SimulatedRot>,
    quiet: bool,
    out: &Path,
) -> anyhow::Result<Made> {
    let config = RunConfig {
        order_id: order_id(i),
        mode: Mode::OnDevice,
        concurrency: 8,
        out_dir: Some(out.to_path_buf()),
        first_serial: Some(1 + offset),
        progress: !quiet && offset == 0 && i == 0,
        retries: 1,
        protocol: station::run::Protocol::Stream,
    };
    let jobs = dies
        .into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect();
    let (report, links) = run::run(channel, config, jobs).await?;
    Ok(report
        .outcomes
        .into_iter()
        .zip(links.into_iter().map(SimLink::into_rot))
        .collect())
}

/// Runs `dies` at site `i` in batches of the offline allowance, each
/// cosigned before the next (a line paced by its uplink).
async fn paced(
    net: &Loopback,
    dir: &Path,
    i: usize,
    mut offset: u64,
    mut dies: Vec<SimulatedRot>,
) -> anyhow::Result<Made> {
    let mut made = Vec::new();
    while !dies.is_empty() {
        let rest = dies.split_off(dies.len().min(OFFLINE_ALLOWANCE as usize));
        let batch = std::mem::replace(&mut dies, rest);
        let channel = net.site_channel(i, &station(net, i), false).await?;
        let len = batch.len() as u64;
        made.extend(
            run_line(
                channel,
                i,
                offset,
                batch,
                true,
                &devices_dir(dir, &net.sites[i].name),
            )
            .await?,
        );
        offset += len;
        synced(net, i).await?;
    }
    Ok(made)
}

/// Waits until the hub has cosigned all of site `i`'s ledger (its uplink
/// syncs by itself).
async fn synced(net: &Loopback, i: usize) -> anyhow::Result<()> {
    let mut client = UplinkClient::new(net.site_channel(i, setup::AUDITOR, true).await?);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = client
            .get_uplink_status(v1::GetUplinkStatusRequest::default())
            .await?
            .into_inner();
        if s.cosigned_size > 0 && s.cosigned_size == s.ledger_size {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "site {} is not cosigned after 60 s: {}",
            net.sites[i].name,
            s.last_error
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The first site's uplink identity pushes a rewritten copy of its entry 1
/// (a history the site rewrote); returns the hub's answer.
async fn forge(net: &Loopback) -> anyhow::Result<String> {
    let mut ledger = CustodyLedgerClient::new(net.site_channel(0, setup::AUDITOR, true).await?);
    let entry = ledger
        .get_entry(v1::GetEntryRequest { seq: 1 })
        .await?
        .into_inner()
        .entry;
    let mut decoded = <v1::LedgerEntry as prost::Message>::decode(entry.as_slice())?;
    decoded.actor = "rewritten".into();
    let forged = prost::Message::encode_to_vec(&decoded);
    let refused = WitnessClient::new(net.site_to_hub(0, setup::UPLINK).await?)
        .push_entries(v1::PushEntriesRequest {
            site: net.sites[0].name.clone(),
            start: 1,
            entries: vec![forged],
        })
        .await;
    match refused {
        Ok(_) => anyhow::bail!("the hub accepted a rewritten entry"),
        Err(s) => Ok(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// The ownership clients at the hub and the owner's key.
struct Field {
    admin: OwnershipClient<tonic::transport::Channel>,
    op: OwnershipClient<tonic::transport::Channel>,
    owner: SoftwareSigner,
}

impl Field {
    /// The OEM's first transfer of `p` to the owner, then the owner's
    /// onboarding with the device's live identity proof; the onboarding's
    /// answer.
    async fn onboard(
        &mut self,
        p: &Provisioned,
        rot: &SimulatedRot,
    ) -> anyhow::Result<Result<(), tonic::Status>> {
        let voucher = self
            .admin
            .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
                voucher: p.voucher.clone(),
                next_owner_public_key: self.owner.public_key_der().to_vec(),
                first_owner_salt: vec![],
            })
            .await?
            .into_inner()
            .voucher;
        let challenge = self
            .op
            .get_challenge(v1::GetChallengeRequest {
                rot_id: p.rot_id.clone(),
                action: "onboard".into(),
            })
            .await?
            .into_inner()
            .challenge;
        let authorization = trustline_proto::statement::sign(
            &self.owner,
            &v1::OwnerAuthorization {
                rot_id: p.rot_id.clone(),
                challenge: challenge.clone(),
                action: "onboard".into(),
                voucher_sha256: Sha256::digest(&voucher).to_vec(),
            },
        )?;
        Ok(self
            .op
            .onboard(v1::OnboardRequest {
                voucher,
                owner_authorization: Some(authorization),
                device_proof: Some(rot.identity_proof(&challenge)?),
                device_chain: p.chain.clone(),
            })
            .await
            .map(|_| ()))
    }
}

/// With every site stopped: the OEM names the first owner of a first-site
/// device at the hub and the owner onboards it; the cross-site clone's
/// onboarding is refused. Returns the onboarded rot_id and the refusal.
/// `duplicated` is the rot_id a second die presented at the first site
/// (quarantined there): not the one onboarded.
async fn field_life(
    net: &Loopback,
    made: &[Made],
    duplicated: &str,
) -> anyhow::Result<(String, String)> {
    let operator = net.issue_operator()?;
    let mut field = Field {
        admin: OwnershipClient::new(net.hub_channel(setup::ADMIN).await?),
        op: OwnershipClient::new(net.hub_channel(operator).await?),
        owner: SoftwareSigner::generate(),
    };
    let elsewhere = |rot_id: &str| {
        made[1..]
            .iter()
            .flatten()
            .any(|(o, _)| matches!(o, Outcome::Provisioned(q) if q.rot_id == rot_id))
    };
    let mut genuine = None;
    let mut cloned = None;
    for (o, rot) in &made[0] {
        if let Outcome::Provisioned(p) = o {
            if elsewhere(&p.rot_id) {
                cloned.get_or_insert((p, rot));
            } else if p.rot_id != duplicated {
                genuine.get_or_insert((p, rot));
            }
        }
    }
    let (p, rot) = genuine.context("a genuine first-site device")?;
    field
        .onboard(p, rot)
        .await?
        .map_err(|s| anyhow::anyhow!("onboarding at the hub: {}", s.message()))?;
    let (original, rot) = cloned.context("the device cloned at another site")?;
    let refusal = match field.onboard(original, rot).await? {
        Ok(()) => anyhow::bail!("the hub onboarded a cross-site clone"),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    Ok((p.rot_id.clone(), refusal))
}
