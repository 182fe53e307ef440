//! The station run: drives devices through claim, personalisation and
//! certification with K concurrent workers over one long-lived mTLS channel
//! (a new TLS handshake per device would cost more than the device), and
//! writes what each certified device received. By default every device's
//! steps travel on one line stream over that channel, with the claim
//! folded into the next step ([`Protocol::Stream`], `run/line`); with
//! [`Protocol::Unary`] each step is its own call. The outcomes, reasons and
//! outputs are the same either way.
//!
//! Every device ends in one of three outcomes: provisioned; refused (the
//! service said no for a reason the factory expects — a clone, a
//! counterfeit, overproduction, a policy failure — carried in the
//! `trustline-refusal` metadata); or failed (the line itself failed: the
//! network, a service error, a device that refused a step, stopped
//! answering or whose link broke). Refused and failed devices carry their
//! stage, a stable reason (`device:already-claimed`, `link:timeout`, ...;
//! see [`Outcome::Failed`]) and what the station knew of them (rot_id,
//! serial); each failure is printed above the progress bar as it happens. A
//! run with any failure is unsuccessful; refusals are the line doing its
//! job.
//!
//! Outputs (with an output directory): `<serial>.pem` (the chain, device
//! certificate first), `<serial>.voucher.cbor` (the voucher as the device
//! bound it) and one JSON line per provisioned device in `devices.jsonl`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Channel;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use provisioner::orders::SerialScheme;

use crate::error::{Error, Result};
use crate::link::DeviceLink;

pub mod allowance;
mod fdo;
mod line;
mod outputs;
mod provision;
mod report;

pub use line::Protocol;
pub use outputs::chain_pem;
use outputs::write_outputs;
use provision::provision;
pub use report::{Known, Outcome, Report};

/// How devices get their identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The RoT generates the key (key attestation).
    OnDevice,
    /// The HSM generates the key and delivers it wrapped to the RoT.
    Hsm,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "on-device" => Ok(Mode::OnDevice),
            "hsm" => Ok(Mode::Hsm),
            other => Err(format!("unknown mode {other:?} (on-device or hsm)")),
        }
    }
}

/// One device to provision.
pub struct Job<L> {
    /// The device.
    pub link: L,
    /// A serial to use instead of the next free one (a device that carries
    /// its own serial, e.g. a rework or a cloned label).
    pub serial: Option<String>,
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The production order.
    pub order_id: String,
    /// Personalisation mode.
    pub mode: Mode,
    /// Devices in flight at once (workers), all on one channel.
    pub concurrency: usize,
    /// Where to write chains, vouchers and the manifest.
    pub out_dir: Option<PathBuf>,
    /// The serial number (within the order's scheme) to start from; `None`
    /// starts after the devices the order has certified so far.
    pub first_serial: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// How often a step is retried when the service is unavailable (a
    /// retried `Certify` is answered from the ledger, never twice).
    pub retries: u32,
    /// The line stream (the default) or one unary call per step.
    pub protocol: Protocol,
}

/// A device that was certified.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// Its serial.
    pub serial: String,
    /// Its RoT.
    pub rot_id: String,
    /// Its physical label.
    pub label: String,
    /// Its chain, DER, device certificate first.
    pub chain: Vec<Vec<u8>>,
    /// The voucher as the device bound it.
    pub voucher: Vec<u8>,
    /// For an order with an FDO block and a device that announces step 17:
    /// its FDO 1.1 voucher with no entries (header, the device's HMAC,
    /// chain), CBOR (issue 17).
    pub fdo_voucher: Option<Vec<u8>>,
    /// The `CERTIFIED` entry.
    pub ledger_seq: u64,
    /// Whether the answer was a replay.
    pub replayed: bool,
}

/// Live counters for the progress line.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) provisioned: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) reasons: Mutex<BTreeMap<String, u64>>,
    pub(super) failures: Mutex<BTreeMap<String, u64>>,
    /// The offline allowance's note ([`allowance::note`]).
    pub(super) allowance: Arc<Mutex<String>>,
}

impl Counters {
    fn record(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Provisioned(_) => self.provisioned.fetch_add(1, Ordering::Relaxed),
            Outcome::Refused { reason, .. } => {
                let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
                *r.entry(reason.clone()).or_insert(0) += 1;
                self.refused.fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Failed { reason, .. } => {
                let mut r = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                *r.entry(reason.clone()).or_insert(0) += 1;
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn message(&self) -> String {
        let list = |m: &Mutex<BTreeMap<String, u64>>| {
            let m = m.lock().unwrap_or_else(|p| p.into_inner());
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let note = self.allowance.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "ok={} refused={} [{}] failed={} [{}]{}{}",
            self.provisioned.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            list(&self.reasons),
            self.failed.load(Ordering::Relaxed),
            list(&self.failures),
            if note.is_empty() { "" } else { " | " },
            note
        )
    }
}

/// Where the next serial comes from.
pub(super) struct Serials {
    pub(super) scheme: SerialScheme,
    pub(super) next: AtomicU64,
}

impl Serials {
    pub(super) fn next(&self) -> Option<String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n <= self.scheme.last).then(|| self.scheme.format(n))
    }
}

/// State shared by the workers.
pub(super) struct Shared<L> {
    pub(super) config: RunConfig,
    pub(super) serials: Serials,
    pub(super) queue: Mutex<VecDeque<(usize, Job<L>)>>,
    pub(super) results: Mutex<Vec<Option<(Outcome, L)>>>,
    pub(super) counters: Counters,
    pub(super) manifest: Option<Mutex<std::fs::File>>,
}

/// Runs `jobs` through the line; returns the report and the devices.
///
/// # Errors
/// [`Error::Backend`] when the order cannot be read (nothing was done);
/// [`Error::Io`] when the output directory cannot be created. Per-device
/// problems are outcomes, not errors.
pub async fn run<L: DeviceLink + 'static>(
    channel: Channel,
    config: RunConfig,
    jobs: Vec<Job<L>>,
) -> Result<(Report, Vec<L>)> {
    let status = ProvisioningClient::new(channel.clone())
        .get_order(v1::GetOrderRequest {
            order_id: config.order_id.clone(),
        })
        .await
        .map_err(|s| Error::Backend {
            service: "provisioner",
            status: Box::new(s),
        })?
        .into_inner();
    let order = status
        .order
        .clone()
        .ok_or_else(|| Error::Invalid("the provisioner returned no order".into()))?;
    let scheme = order
        .serial_scheme
        .ok_or_else(|| Error::Invalid("the order has no serial scheme".into()))?;
    let scheme = SerialScheme {
        prefix: scheme.prefix,
        first: scheme.first,
        last: scheme.last,
        digits: scheme.digits,
    };
    let first = config
        .first_serial
        .unwrap_or(scheme.first.saturating_add(status.certified));
    let manifest = match &config.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let path = dir.join("devices.jsonl");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            Some(Mutex::new(file))
        }
        None => None,
    };
    let total = jobs.len();
    let progress = if config.progress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let workers = config.concurrency.clamp(1, total.max(1));
    let shared = Arc::new(Shared {
        serials: Serials {
            scheme,
            next: AtomicU64::new(first),
        },
        queue: Mutex::new(jobs.into_iter().enumerate().collect()),
        results: Mutex::new((0..total).map(|_| None).collect()),
        counters: Counters::default(),
        manifest,
        config,
    });
    let client = line::Provisioner::new(channel, shared.config.protocol);
    let refresher = shared.config.progress.then(|| {
        allowance::refresh(
            client.unary(),
            shared.config.order_id.clone(),
            &status,
            shared.counters.allowance.clone(),
        )
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let shared = shared.clone();
        let client = client.clone();
        let progress = progress.clone();
        tasks.spawn(async move { worker(shared, client, progress).await });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            return Err(Error::Config(format!("a station worker panicked: {e}")));
        }
    }
    let elapsed = started.elapsed();
    if let Some(r) = refresher {
        r.abort();
    }
    progress.finish_with_message(shared.counters.message());
    let results = std::mem::take(&mut *shared.results.lock().unwrap_or_else(|p| p.into_inner()));
    let mut outcomes = Vec::with_capacity(total);
    let mut links = Vec::with_capacity(total);
    for result in results.into_iter().flatten() {
        outcomes.push(result.0);
        links.push(result.1);
    }
    Ok((Report { outcomes, elapsed }, links))
}

async fn worker<L: DeviceLink>(
    shared: Arc<Shared<L>>,
    client: line::Provisioner,
    progress: ProgressBar,
) {
    loop {
        let next = shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some((index, mut job)) = next else {
            return;
        };
        let mut known = Known::default();
        let outcome = match provision(&shared, client.clone(), &mut job, &mut known).await {
            Ok(p) => {
                if let Err(e) = write_outputs(&shared, &p) {
                    known.serial = Some(p.serial);
                    Outcome::Failed {
                        stage: "write",
                        reason: e.reason(),
                        message: e.to_string(),
                        known: Known::default(),
                    }
                } else {
                    Outcome::Provisioned(p)
                }
            }
            Err(o) => o,
        };
        let outcome = outcome.with_known(known);
        if matches!(outcome, Outcome::Refused { .. }) {
            // The service refused the device: its session ends normally (a
            // failed link has already stopped itself). The outcome stays
            // the refusal whatever the link says.
            let _ = job.link.finish().await;
        }
        shared.counters.record(&outcome);
        // Failures are printed as they happen; refusals (the line doing its
        // job) are counted by reason in the bar's message.
        if matches!(outcome, Outcome::Failed { .. }) {
            if let Some(line) = outcome.line(index) {
                progress.println(line);
            }
        }
        progress.inc(1);
        if index % 16 == 0 || !matches!(outcome, Outcome::Provisioned(_)) {
            progress.set_message(shared.counters.message());
        }
        shared.results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some((outcome, job.link));
    }
}
