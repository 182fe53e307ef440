//! The station run: drives devices through claim, personalisation and
//! certification with K concurrent workers over one long-lived mTLS channel
//! (a new TLS handshake per device would cost more than the device), and
//! writes what each certified device received.
//!
//! Every device ends in one of three outcomes: provisioned; refused (the
//! service said no for a reason the factory expects — a clone, a
//! counterfeit, overproduction, a policy failure — carried in the
//! `trustline-refusal` metadata); or failed (the line itself failed: the
//! network, a service error, a device that stopped answering). A run with
//! any failure is unsuccessful; refusals are the line doing its job.
//!
//! Outputs (with an output directory): `<serial>.pem` (the chain, device
//! certificate first), `<serial>.voucher.cbor` (the voucher as the device
//! bound it) and one JSON line per provisioned device in `devices.jsonl`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Channel;
use tonic::{Code, Status};
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use provisioner::orders::SerialScheme;
use trustline_proto::refusal::{is_failure, refusal_reason};

use crate::error::{Error, Result};
use crate::link::{DeviceLink, WrappedKey};

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
    /// First owner's public key to name in every voucher, if known.
    pub first_owner: Option<Vec<u8>>,
    /// The serial number (within the order's scheme) to start from; `None`
    /// starts after the devices the order has certified so far.
    pub first_serial: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// How often a step is retried when the service is unavailable (a
    /// retried `Certify` is answered from the ledger, never twice).
    pub retries: u32,
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
    /// The `CERTIFIED` entry.
    pub ledger_seq: u64,
    /// Whether the answer was a replay.
    pub replayed: bool,
}

/// How one device ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Claimed, personalised, certified and written.
    Provisioned(Provisioned),
    /// The service refused it for a reason the factory expects.
    Refused {
        /// The step: "claim", "complete-claim", "deliver-key", "certify".
        stage: &'static str,
        /// The gRPC code.
        code: Code,
        /// The `trustline-refusal` reason.
        reason: String,
        /// The service's message.
        message: String,
    },
    /// The line failed.
    Failed {
        /// The step.
        stage: &'static str,
        /// What happened.
        message: String,
    },
}

impl Outcome {
    /// The refusal reason, if refused.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Outcome::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The gRPC code of a refusal.
    pub fn code(&self) -> Option<Code> {
        match self {
            Outcome::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// Every device's outcome, in job order.
    pub outcomes: Vec<Outcome>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Devices provisioned.
    pub fn provisioned(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Provisioned(_)))
            .count()
    }

    /// Refusals by reason.
    pub fn refusals(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for reason in self.outcomes.iter().filter_map(Outcome::refusal) {
            *out.entry(reason.to_owned()).or_insert(0) += 1;
        }
        out
    }

    /// Devices that failed.
    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Failed { .. }))
            .collect()
    }

    /// Provisioned devices per second of wall time.
    pub fn devices_per_second(&self) -> f64 {
        self.provisioned() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Live counters for the progress line.
#[derive(Default)]
struct Counters {
    provisioned: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
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
            Outcome::Failed { .. } => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn message(&self) -> String {
        let reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let reasons: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "ok={} refused={} [{}] errors={}",
            self.provisioned.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            reasons.join(" "),
            self.failed.load(Ordering::Relaxed)
        )
    }
}

/// Where the next serial comes from.
struct Serials {
    scheme: SerialScheme,
    next: AtomicU64,
}

impl Serials {
    fn next(&self) -> Option<String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n <= self.scheme.last).then(|| self.scheme.format(n))
    }
}

/// State shared by the workers.
struct Shared<L> {
    config: RunConfig,
    serials: Serials,
    queue: Mutex<VecDeque<(usize, Job<L>)>>,
    results: Mutex<Vec<Option<(Outcome, L)>>>,
    counters: Counters,
    manifest: Option<Mutex<std::fs::File>>,
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
    let mut client = ProvisioningClient::new(channel);
    let status = client
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
    client: ProvisioningClient<Channel>,
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
        let outcome = match provision(&shared, client.clone(), &mut job).await {
            Ok(p) => {
                if let Err(e) = write_outputs(&shared, &p) {
                    Outcome::Failed {
                        stage: "write",
                        message: e.to_string(),
                    }
                } else {
                    Outcome::Provisioned(p)
                }
            }
            Err(o) => o,
        };
        shared.counters.record(&outcome);
        progress.inc(1);
        if index % 16 == 0 || !matches!(outcome, Outcome::Provisioned(_)) {
            progress.set_message(shared.counters.message());
        }
        shared.results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some((outcome, job.link));
    }
}

/// Classifies a status from the service.
fn refused(stage: &'static str, status: Status) -> Outcome {
    let reason = refusal_reason(&status).map(str::to_owned);
    match reason {
        Some(reason) if !is_failure(&reason) => Outcome::Refused {
            stage,
            code: status.code(),
            reason,
            message: status.message().to_owned(),
        },
        _ => Outcome::Failed {
            stage,
            message: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}

fn failed(stage: &'static str) -> impl Fn(Error) -> Outcome {
    move |e| Outcome::Failed {
        stage,
        message: e.to_string(),
    }
}

/// Calls `f` until it succeeds, is refused, or has failed `retries + 1`
/// times with `UNAVAILABLE`.
async fn with_retries<T, F, Fut>(retries: u32, mut f: F) -> std::result::Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Status>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(s) if s.code() == Code::Unavailable && attempt < retries => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
            other => return other,
        }
    }
}

async fn provision<L: DeviceLink>(
    shared: &Shared<L>,
    mut client: ProvisioningClient<Channel>,
    job: &mut Job<L>,
) -> std::result::Result<Provisioned, Outcome> {
    let config = &shared.config;
    let link = &mut job.link;
    let attestation = link
        .read_attestation()
        .await
        .map_err(failed("read-attestation"))?;
    let begin = client
        .begin_claim(v1::BeginClaimRequest {
            order_id: config.order_id.clone(),
            attestation: Some(attestation),
        })
        .await
        .map_err(|s| refused("claim", s))?
        .into_inner();
    let receipt = link
        .claim(&begin.nonce, &begin.anchor)
        .await
        .map_err(failed("install-anchor"))?;
    client
        .complete_claim(v1::CompleteClaimRequest {
            receipt: Some(receipt),
        })
        .await
        .map_err(|s| refused("complete-claim", s))?;
    link.lock_readout().await.map_err(failed("lock"))?;
    let key_attestation = match config.mode {
        Mode::OnDevice => link
            .generate_key(&begin.nonce)
            .await
            .map_err(failed("generate-key"))?,
        Mode::Hsm => {
            let request = v1::DeliverDeviceKeyRequest {
                rot_id: begin.rot_id.clone(),
                order_id: config.order_id.clone(),
            };
            let delivered = client
                .deliver_device_key(request)
                .await
                .map_err(|s| refused("deliver-key", s))?
                .into_inner();
            let key = WrappedKey {
                device_public_key: delivered.device_public_key,
                hsm_ephemeral_public_key: delivered.hsm_ephemeral_public_key,
                wrapped_key: delivered.wrapped_key,
                kdf: delivered.kdf,
            };
            link.install_wrapped_key(&key, &begin.nonce)
                .await
                .map_err(failed("install-key"))?
        }
    };
    let serial = match job.serial.clone() {
        Some(s) => s,
        None => shared.serials.next().ok_or_else(|| Outcome::Failed {
            stage: "serial",
            message: "the order's serial scheme is used up".into(),
        })?,
    };
    let proof = link
        .prove_possession(&serial, &begin.nonce)
        .await
        .map_err(failed("prove-possession"))?;
    let request = v1::CertifyRequest {
        order_id: config.order_id.clone(),
        rot_id: begin.rot_id.clone(),
        serial: serial.clone(),
        key_attestation: Some(key_attestation),
        subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(proof)),
        first_owner_public_key: config.first_owner.clone().unwrap_or_default(),
    };
    let certified = with_retries(config.retries, || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.certify(request).await }
    })
    .await
    .map_err(|s| refused("certify", s))?
    .into_inner();
    let voucher = link
        .store_certification(&certified.certificate_chain, &certified.voucher)
        .await
        .map_err(failed("store-certification"))?;
    Ok(Provisioned {
        serial,
        rot_id: begin.rot_id,
        label: certified.label,
        chain: certified.certificate_chain,
        voucher,
        ledger_seq: certified.ledger_seq,
        replayed: certified.replayed,
    })
}

/// The chain as PEM, device certificate first.
pub fn chain_pem(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect()
}

fn write_outputs<L>(shared: &Shared<L>, p: &Provisioned) -> Result<()> {
    let Some(dir) = &shared.config.out_dir else {
        return Ok(());
    };
    let chain_path = dir.join(format!("{}.pem", p.serial));
    std::fs::write(&chain_path, chain_pem(&p.chain)).map_err(|e| Error::io(&chain_path, e))?;
    let voucher_path = dir.join(format!("{}.voucher.cbor", p.serial));
    std::fs::write(&voucher_path, &p.voucher).map_err(|e| Error::io(&voucher_path, e))?;
    if let Some(manifest) = &shared.manifest {
        let line = serde_json::json!({
            "serial": p.serial,
            "rot_id": p.rot_id,
            "label": p.label,
            "ledger_seq": p.ledger_seq,
            "replayed": p.replayed,
        });
        let mut file = manifest.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{line}").map_err(|e| Error::io(&dir.join("devices.jsonl"), e))?;
    }
    Ok(())
}
