//! `trustline bench line`: the whole factory line's throughput on this
//! machine, per personalisation mode, next to the HSM's own bound measured
//! in the same run.
//!
//! What runs: a fresh data directory (embedded SoftHSM2 token, CA, PKI);
//! first the raw HSM rates (`ca_service::bench`, the `bench hsm`
//! measurement); then `trustline serve all` as a **child process** (so its
//! CPU is its own), and K stations in this process, each with its own
//! certificate and one long-lived mTLS channel carrying C devices in flight.
//! Dies are manufactured before the clock starts (the bench measures the
//! line, not the fab).
//!
//! Each mode runs twice, on the same server and machine: over the station
//! line stream (`Provisioning/Line`, folded steps: two messages per device
//! on-device, three in HSM mode) and over unary calls (three or four per
//! device), each with its own order and fresh dies.
//!
//! Reported per mode and protocol: devices/s (wall time of the K runs); server CPU per
//! device = (utime + stime of the server process, from
//! `/proc/<pid>/stat`, after − before) ÷ devices certified — the server's
//! own CPU only, not the simulated devices' or stations'; the same in units
//! of one P-256 verification (Trustline's strict verifier, one thread,
//! measured in this process just before the runs), a figure that moves
//! less with the machine's load than milliseconds do; the HSM bound =
//! HSM signatures/s ÷ HSM signatures per device (the certificate, plus the
//! first voucher entry when the run names a first owner — this bench names
//! none, so one); in HSM mode the same HSM also makes one wrapped key per
//! device, so the bound is 1 ÷ (signatures per device ÷ signatures/s + 1 ÷
//! wrapped keys/s); and the ratio of devices/s to that bound.
//!
//! SoftHSM2 runs inside the server process, so its CPU is part of the
//! server's. For on-device mode the report also gives an estimate of that
//! share (signatures per device × the CPU time of one signature, from the
//! single-session rate measured at the start, where one signature keeps one
//! core busy) and the server CPU without it: what the server itself would
//! spend in front of a hardware HSM. HSM mode gets no estimate: the wrapped
//! key rate is measured with several threads on a shared machine, which
//! gives no sound CPU time per key. The measured figure is the first.
//! Per mode, `stream_vs_unary` gives stream ÷ unary for devices/s and for
//! server CPU per device.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ca_service::bench::BenchConfig;
use ca_service::keys::KeyLabels;
use clap::Args;
use serde::Serialize;
use transport::ClientTls;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use super::hsm_args::HsmArgs;
use super::Outcome;
use site::setup;
use station::run::{self, Job, Mode, Protocol, RunConfig};
use station::sim::SimLink;
use station::sim::{fresh_dies, sim_vendors};

const SITE: &str = "site-1";

/// `trustline bench line` arguments.
#[derive(Debug, Args)]
pub(crate) struct LineArgs {
    /// Devices per mode.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub(crate) devices: usize,
    /// K: concurrent stations (each its own certificate and channel).
    #[arg(long, value_name = "K", default_value_t = 4)]
    pub(crate) stations: usize,
    /// Devices in flight per station.
    #[arg(long, value_name = "C", default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Modes to measure.
    #[arg(long, value_name = "MODE", default_values = ["on-device", "hsm"])]
    pub(crate) mode: Vec<Mode>,
    /// Protocols to measure, each mode on each.
    #[arg(long, value_name = "PROTOCOL", default_values = ["unary", "stream"])]
    pub(crate) protocol: Vec<ProtocolArg>,
    /// Seconds per phase of the HSM measurement.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub(crate) hsm_seconds: f64,
    /// Keep everything in this (empty or new) directory instead of a
    /// temporary one.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProtocolArg {
    /// One unary call per step.
    Unary,
    /// The station line stream.
    Stream,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Unary => Protocol::Unary,
            ProtocolArg::Stream => Protocol::Stream,
        }
    }
}

#[derive(Debug, Serialize)]
struct ModeReport {
    mode: Mode,
    protocol: Protocol,
    devices: usize,
    stations: usize,
    in_flight_per_station: usize,
    certified: usize,
    failed: usize,
    seconds: f64,
    devices_per_second: f64,
    server_cpu_ms_per_device: f64,
    /// Server CPU per device ÷ the CPU time of one P-256 verification
    /// measured in the same run: comparable across loads and machines.
    server_cpu_per_device_in_verifications: f64,
    station_and_devices_cpu_ms_per_device: f64,
    hsm_cpu_ms_per_device_estimate: Option<f64>,
    server_cpu_ms_per_device_without_hsm_estimate: Option<f64>,
    hsm_signatures_per_device: u32,
    hsm_wrapped_keys_per_device: u32,
    hsm_bound_devices_per_second: f64,
    ratio_to_hsm_bound: f64,
}

#[derive(Debug, Serialize)]
struct LineReport {
    hsm_signatures_per_second_1: f64,
    hsm_signatures_per_second_n: f64,
    hsm_sessions: usize,
    hsm_wrapped_keys_per_second: Option<f64>,
    /// Trustline's strict P-256 verifier, one thread, in this process just
    /// before the runs: the unit of `server_cpu_per_device_in_verifications`.
    p256_verifications_per_second: f64,
    modes: Vec<ModeReport>,
    stream_vs_unary: Vec<Comparison>,
    server_cpu_method: &'static str,
    /// `/proc/loadavg` (1, 5 and 15 minutes) before and after the runs: the
    /// figures are only comparable at a similar load.
    load_average_before: Option<[f64; 3]>,
    load_average_after: Option<[f64; 3]>,
}

/// The 1, 5 and 15 minute load averages, where `/proc/loadavg` exists.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Stream ÷ unary for one mode.
#[derive(Debug, Serialize)]
struct Comparison {
    mode: Mode,
    devices_per_second: f64,
    server_cpu_ms_per_device: f64,
}

fn comparisons(modes: &[ModeReport]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for stream in modes.iter().filter(|m| m.protocol == Protocol::Stream) {
        let unary = modes
            .iter()
            .find(|m| m.protocol == Protocol::Unary && m.mode == stream.mode);
        if let Some(unary) = unary {
            out.push(Comparison {
                mode: stream.mode,
                devices_per_second: stream.devices_per_second / unary.devices_per_second.max(1e-9),
                server_cpu_ms_per_device: stream.server_cpu_ms_per_device
                    / unary.server_cpu_ms_per_device.max(1e-9),
            });
        }
    }
    out
}

/// Runs `trustline bench line`.
///
/// # Errors
/// Set-up, server and run failures.
pub(crate) fn run(args: &LineArgs) -> anyhow::Result<Outcome> {
    if args.devices == 0 || args.stations == 0 || args.concurrency == 0 {
        bail!("--devices, --stations and --concurrency must be at least 1");
    }
    if args.protocol.is_empty() || args.mode.is_empty() {
        bail!("give at least one --mode and one --protocol");
    }
    let (dir, _temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = TempDir::create()?;
            (t.0.clone(), Some(t))
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(bench(args, &dir))
}

struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("trustline-bench-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line (11th and 12th after ")").
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
        .context("malformed stat")?;
    // Linux reports these in USER_HZ, which is 100 on every mainstream
    // architecture (sysconf(_SC_CLK_TCK)).
    Ok(ticks / 100.0)
}

async fn bench(args: &LineArgs, dir: &Path) -> anyhow::Result<Outcome> {
    transport::install_crypto_provider();
    let progress = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let tokens = HsmArgs::open_embedded(dir, 4)?;
    setup::init_ca(&tokens.ca, dir, SITE)?;
    setup::init_ledger_key(&tokens.ledger, dir)?;
    let stations: Vec<(String, String)> = (1..=args.stations)
        .map(|i| (SITE.to_owned(), format!("st-{i:02}")))
        .collect();
    setup::init_pki(&tokens.ca, dir, SITE, &stations)?;

    progress("measuring the HSM (raw signatures, issuance, wrapped keys)...");
    let sessions = 2;
    let hsm_report = ca_service::bench::run(
        &tokens.ca,
        &dir.join("bench-hsm"),
        &BenchConfig {
            sessions,
            phase: Duration::from_secs_f64(args.hsm_seconds),
        },
        &mut |_| {},
    )?;
    // The bound is the best rate the HSM showed (1 or N sessions).
    let raw = hsm_report
        .raw_signatures_n
        .per_second
        .max(hsm_report.raw_signatures_1.per_second);
    let wrapped = hsm_report.wrapped_keys_n.map(|c| c.rate.per_second);
    // CPU time of one signature: one session runs one at a time, so wall
    // time per signature (an upper bound on a loaded machine).
    let sign_cpu_ms = 1000.0 / hsm_report.raw_signatures_1.per_second.max(1e-9);
    // The factory signs no voucher entry (entry 0 is made OEM-side): one
    // HSM signature per device, the certificate's.
    let signatures_per_device: u32 = 1;
    let verifications = ca_service::bench::verifiers::strict_rate(Duration::from_millis(500))?;
    let verify_ms = 1000.0 / verifications.max(1e-9);

    let mut fleet = sim_vendors(rand::random())?;
    site::config::write_vendor_roots(&dir.join("vendors"), &fleet.vendor_roots())?;
    std::fs::write(
        dir.join(site::config::CONFIG_FILE),
        "[transport]\nmax_concurrent_per_caller = 1024\nmax_streams_per_connection = 1024\n\
         rate = { per_second = 1000000.0, burst = 1000000 }\n",
    )?;
    let exe = std::env::current_exe().context("locating the trustline binary")?;
    let mut child = Command::new(exe)
        .args(["serve", "all", "--data-dir"])
        .arg(dir)
        .arg("--embedded-hsm")
        .env("TRUSTLINE_PROVISIONER_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting trustline serve all")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .context("the server exited before listening")??;
        if let Some(a) = line.strip_prefix("listening all ") {
            break a.trim().to_owned();
        }
    };
    let pid = server.0.id();
    let connect = |name: String| {
        let addr = addr.clone();
        async move {
            let tls = ClientTls::from_files(&setup::credentials(dir, &name))?;
            anyhow::Ok(tls.connect(&addr).await?)
        }
    };
    let admin = ProvisioningClient::new(connect(setup::ADMIN.to_owned()).await?);
    let signer = tokens.ca.signer(&KeyLabels::default().order)?;
    let vendors: Vec<String> = fleet.vendor_roots().into_iter().map(|(n, _)| n).collect();

    let load_before = load_average();
    let runs: Vec<(Mode, Protocol)> = args
        .mode
        .iter()
        .flat_map(|m| args.protocol.iter().map(|p| (*m, Protocol::from(*p))))
        .collect();
    let mut modes = Vec::new();
    for (m, (mode, protocol)) in runs.iter().enumerate() {
        let order_id = format!("PO-BENCH-{m}");
        let now = backends::now_ms();
        let order = v1::ProductionOrder {
            order_id: order_id.clone(),
            sku: "BENCH".into(),
            site: SITE.into(),
            quantity: args.devices as u64,
            serial_scheme: Some(v1::SerialScheme {
                prefix: format!("B{m}-"),
                first: 1,
                last: 99_999_999,
                digits: 8,
            }),
            not_before_ms: now - 60_000,
            not_after_ms: now + 86_400_000,
            allowed_ic_vendors: vendors.clone(),
            allowed_firmware_sha256: fleet.firmware_sha256().to_vec(),
            ..Default::default()
        };
        let signed = trustline_proto::statement::sign(&signer, &order)?;
        admin
            .clone()
            .open_order(v1::OpenOrderRequest {
                signed_order: Some(signed),
            })
            .await
            .map_err(|s| anyhow::anyhow!("opening the order: {}", s.message()))?;
        progress(&format!("manufacturing {} simulated dies...", args.devices));
        let mut dies = fresh_dies(&mut fleet, args.devices)?;
        let per = args.devices.div_ceil(args.stations);
        let mut decks = Vec::new();
        for (i, station) in stations.iter().enumerate() {
            let take = per.min(dies.len());
            let jobs: Vec<Job<SimLink>> = dies
                .drain(..take)
                .map(|rot| Job {
                    link: SimLink::new(rot),
                    serial: None,
                })
                .collect();
            let channel = connect(setup::station_name(SITE, &station.1)).await?;
            decks.push((i, jobs, channel));
        }
        progress(&format!(
            "running {mode:?} over {protocol:?}: {} devices, {} stations x {} in flight...",
            args.devices, args.stations, args.concurrency
        ));
        let cpu_before = process_cpu_seconds(pid)?;
        let own_before = process_cpu_seconds(std::process::id())?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, jobs, channel) in decks {
            let config = RunConfig {
                order_id: order_id.clone(),
                mode: *mode,
                concurrency: args.concurrency,
                out_dir: None,
                first_serial: Some(1 + (i * per) as u64),
                progress: false,
                retries: 0,
                protocol: *protocol,
            };
            tasks.push(tokio::spawn(run::run(channel, config, jobs)));
        }
        let mut certified = 0;
        let mut failed = 0;
        for t in tasks {
            let (report, _) = t.await??;
            certified += report.provisioned();
            failed += report.outcomes.len() - report.provisioned();
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds(pid)? - cpu_before;
        let own = process_cpu_seconds(std::process::id())? - own_before;
        let devices_per_second = certified as f64 / seconds;
        let sign_seconds = f64::from(signatures_per_device) / raw.max(1e-9);
        let (wrapped_per_device, bound) = match (mode, wrapped) {
            (Mode::Hsm, Some(w)) => (1, 1.0 / (sign_seconds + 1.0 / w.max(1e-9))),
            // A token without key delivery fails HSM mode anyway.
            _ => (0, 1.0 / sign_seconds),
        };
        let server_cpu_ms = cpu * 1000.0 / certified.max(1) as f64;
        let hsm_cpu_ms =
            (wrapped_per_device == 0).then(|| f64::from(signatures_per_device) * sign_cpu_ms);
        modes.push(ModeReport {
            mode: *mode,
            protocol: *protocol,
            devices: args.devices,
            stations: args.stations,
            in_flight_per_station: args.concurrency,
            certified,
            failed,
            seconds,
            devices_per_second,
            server_cpu_ms_per_device: server_cpu_ms,
            server_cpu_per_device_in_verifications: server_cpu_ms / verify_ms,
            station_and_devices_cpu_ms_per_device: own * 1000.0 / certified.max(1) as f64,
            hsm_cpu_ms_per_device_estimate: hsm_cpu_ms,
            server_cpu_ms_per_device_without_hsm_estimate: hsm_cpu_ms
                .map(|h| (server_cpu_ms - h).max(0.0)),
            hsm_signatures_per_device: signatures_per_device,
            hsm_wrapped_keys_per_device: wrapped_per_device,
            hsm_bound_devices_per_second: bound,
            ratio_to_hsm_bound: devices_per_second / bound.max(1e-9),
        });
    }
    drop(server);
    let report = LineReport {
        hsm_signatures_per_second_1: hsm_report.raw_signatures_1.per_second,
        hsm_signatures_per_second_n: hsm_report.raw_signatures_n.per_second,
        hsm_sessions: sessions,
        hsm_wrapped_keys_per_second: wrapped,
        p256_verifications_per_second: verifications,
        stream_vs_unary: comparisons(&modes),
        modes,
        load_average_before: load_before,
        load_average_after: load_average(),
        server_cpu_method: "utime+stime of the `serve all` child from /proc/<pid>/stat, after minus before the run, divided by devices certified",
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "HSM: {:.0} signatures/s (1 session), {:.0}/s ({} sessions), wrapped keys {}/s",
            report.hsm_signatures_per_second_1,
            hsm_report.raw_signatures_n.per_second,
            sessions,
            wrapped.map_or("n/a".to_owned(), |w| format!("{w:.0}"))
        );
        println!(
            "P-256 verification (Trustline's strict verifier, 1 thread): {:.0}/s = {:.1} us each",
            report.p256_verifications_per_second,
            1e6 / report.p256_verifications_per_second.max(1e-9)
        );
        for m in &report.modes {
            println!(
                "{:?} over {:?}: {} of {} certified in {:.2} s = {:.0} devices/s; server CPU {:.3} ms/device{} \
                 = {:.1} verifications' worth (stations and simulated devices {:.3}); HSM bound {:.0}/s; ratio {:.2}",
                m.mode,
                m.protocol,
                m.certified,
                m.devices,
                m.seconds,
                m.devices_per_second,
                m.server_cpu_ms_per_device,
                m.hsm_cpu_ms_per_device_estimate
                    .zip(m.server_cpu_ms_per_device_without_hsm_estimate)
                    .map_or(String::new(), |(h, w)| format!(
                        " (of which in-process HSM ~{h:.3}, ~{w:.3} without it)"
                    )),
                m.server_cpu_per_device_in_verifications,
                m.station_and_devices_cpu_ms_per_device,
                m.hsm_bound_devices_per_second,
                m.ratio_to_hsm_bound
            );
        }
        if let (Some(b), Some(a)) = (report.load_average_before, report.load_average_after) {
            println!(
                "load average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2}",
                b[0], b[1], b[2], a[0], a[1], a[2]
            );
        }
        for c in &report.stream_vs_unary {
            println!(
                "{:?}: stream/unary {:.2}x devices/s, {:.2}x server CPU per device",
                c.mode, c.devices_per_second, c.server_cpu_ms_per_device
            );
        }
    }
    let failed: usize = report.modes.iter().map(|m| m.failed).sum();
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}
