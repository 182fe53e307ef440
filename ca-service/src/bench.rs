//! `trustline bench hsm`: what the HSM and the CA deliver on this machine.
//!
//! Measured in one run, each phase for the same wall time:
//! - raw `CKM_ECDSA` P-256 signatures of a SHA-256 digest, with 1 and with N
//!   sessions (N threads, each holding one pooled session at a time);
//! - device certificates issued (from already verified requests: the CA's
//!   issuance path) with 1 and N threads;
//! - device certificates from untrusted requests (proof of possession
//!   verified, then issued) with N threads;
//! - wrapped device keys made in the HSM, with N threads.
//!
//! Every rate is reported with its ratio to the raw signature rate of the
//! same thread count, so the overhead of issuance on top of the one HSM
//! signature it needs is visible directly (goal: ≥ 0.8). The benchmark makes
//! its own throw-away CA keys on the token (label prefix `trustline-bench-`)
//! and destroys them afterwards.
//!
//! [`verifiers`] compares P-256 verification in ring, aws-lc-rs and p256
//! (issue 16.3); it needs no HSM.

pub mod verifiers;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::{statement, v1};

use crate::ca::{self, Ca, InitOptions};
use crate::hsm::Hsm;
use crate::keys::KeyLabels;
use crate::request::{DeviceCertificateRequest, SubjectKey, VerifiedRequest};
use crate::Error;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchConfig {
    /// N: threads for the multi-session phases (at most the pool size is
    /// useful).
    pub sessions: usize,
    /// Wall time of each phase.
    pub phase: Duration,
}

/// One measured rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Threads used.
    pub threads: usize,
    /// Operations completed.
    pub operations: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Operations per second.
    pub per_second: f64,
}

/// A rate and its ratio to the raw signature rate with as many threads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Compared {
    /// The rate.
    #[serde(flatten)]
    pub rate: Rate,
    /// `per_second` ÷ raw signatures per second with the same threads.
    pub ratio_to_raw_signatures: f64,
}

/// The benchmark's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The PKCS#11 module.
    pub module: String,
    /// The token.
    pub token: String,
    /// Sessions in the pool.
    pub pool_size: usize,
    /// The key-delivery KDF used.
    pub kdf: String,
    /// Raw signatures, 1 session.
    pub raw_signatures_1: Rate,
    /// Raw signatures, N sessions.
    pub raw_signatures_n: Rate,
    /// Certificates issued, 1 thread.
    pub certificates_1: Compared,
    /// Certificates issued, N threads.
    pub certificates_n: Compared,
    /// Certificates from untrusted requests (PoP verified), N threads.
    pub certificates_with_pop_n: Compared,
    /// Wrapped device keys, N threads (`None` when the token lacks ECDH or
    /// AES key wrap with padding).
    pub wrapped_keys_n: Option<Compared>,
}

/// Runs `op` on `threads` threads for `phase`; counts completions. Stops at
/// the first error and returns it.
fn measure(
    threads: usize,
    phase: Duration,
    op: &(dyn Fn(usize) -> Result<(), Error> + Sync),
) -> Result<Rate, Error> {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + phase;
    let first_error = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, done) = (&stop, &done);
                scope.spawn(move || -> Result<(), Error> {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if let Err(e) = op(i) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        i += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::WorkerFailed {
                        reason: "a benchmark thread panicked".to_owned(),
                    })
                })
            })
            .find_map(Result::err)
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let operations = done.load(Ordering::Relaxed);
    Ok(Rate {
        threads,
        operations,
        seconds,
        per_second: operations as f64 / seconds,
    })
}

fn compare(rate: Rate, raw: Rate) -> Compared {
    Compared {
        rate,
        ratio_to_raw_signatures: if raw.per_second > 0.0 {
            rate.per_second / raw.per_second
        } else {
            0.0
        },
    }
}

/// Untrusted requests for simulated devices (software keys with PoP).
fn sample_requests(count: usize) -> Result<Vec<DeviceCertificateRequest>, Error> {
    (0..count)
        .map(|i| {
            let device = SoftwareSigner::generate();
            let rot = SoftwareSigner::generate();
            let rot_id = trustline_proto::identity::rot_id(rot.public_key_der());
            let serial = format!("BENCH-{i:06}");
            let proof = statement::sign(
                &device,
                &v1::ProofOfPossession {
                    rot_id: rot_id.clone(),
                    serial: serial.clone(),
                    device_public_key: device.public_key_der().to_vec(),
                    challenge: vec![0; 32],
                },
            )
            .map_err(|e| Error::Encoding {
                what: "benchmark requests",
                reason: e.to_string(),
            })?;
            Ok(DeviceCertificateRequest {
                product_serial: serial,
                rot_id,
                subject_key: SubjectKey::Possessed {
                    public_key: device.public_key_der().to_vec(),
                    proof,
                },
            })
        })
        .collect()
}

/// Runs the benchmark on `hsm`, keeping its throw-away CA files in
/// `work_dir`. `progress` is told the name of each phase as it starts.
///
/// # Errors
/// Any HSM or CA error met on the way (the throw-away keys are destroyed
/// in every case).
pub fn run(
    hsm: &Hsm,
    work_dir: &Path,
    config: &BenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, Error> {
    let prefix = format!("trustline-bench-{}", hex::encode(rand::random::<[u8; 4]>()));
    let options = InitOptions {
        organization: "Trustline Bench".to_owned(),
        site: "bench".to_owned(),
        labels: KeyLabels::with_prefix(&prefix),
    };
    let ca_dir = work_dir.join(&prefix);
    progress("creating throw-away CA keys");
    ca::init(hsm, &options, &ca_dir)?;
    let result = run_phases(hsm, &ca_dir, &options.labels, config, progress);
    for label in options.labels.all() {
        if let Err(e) = hsm.destroy_key(label) {
            tracing::warn!(label, error = %e, "could not destroy a benchmark key");
        }
    }
    let _ = std::fs::remove_dir_all(&ca_dir);
    result
}

fn run_phases(
    hsm: &Hsm,
    ca_dir: &Path,
    labels: &KeyLabels,
    config: &BenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, Error> {
    let ca = Ca::open(hsm.clone(), ca_dir, labels)?;
    let n = config.sessions.max(1);
    let signer = ca.intermediate_signer();
    let digest = [0x5a; 32];
    let requests = sample_requests(64)?;
    let verified: Vec<VerifiedRequest> = requests
        .iter()
        .map(DeviceCertificateRequest::verify)
        .collect::<Result<_, _>>()?;
    let transport = SoftwareSigner::generate();

    let raw = |_: usize| signer.try_sign_digest(&digest).map(drop);
    let issue = |i: usize| ca.issue(&verified[i % verified.len()]).map(drop);
    let issue_pop = |i: usize| {
        let verified = requests[i % requests.len()].verify()?;
        ca.issue(&verified).map(drop)
    };
    let wrap = |_: usize| {
        ca.generate_wrapped_key(transport.public_key_der())
            .map(drop)
    };

    // Warm up each path once (first-use costs are not throughput).
    raw(0)?;
    issue(0)?;
    issue_pop(0)?;
    if hsm.supports_key_delivery() {
        wrap(0)?;
    }

    progress("raw signatures, 1 session");
    let raw_1 = measure(1, config.phase, &raw)?;
    progress("raw signatures, N sessions");
    let raw_n = measure(n, config.phase, &raw)?;
    progress("certificates, 1 thread");
    let certs_1 = measure(1, config.phase, &issue)?;
    progress("certificates, N threads");
    let certs_n = measure(n, config.phase, &issue)?;
    progress("certificates with proof of possession, N threads");
    let certs_pop = measure(n, config.phase, &issue_pop)?;
    let wrapped = if hsm.supports_key_delivery() {
        progress("wrapped device keys, N threads");
        Some(compare(measure(n, config.phase, &wrap)?, raw_n))
    } else {
        None
    };

    Ok(BenchReport {
        module: hsm.module_path().display().to_string(),
        token: hsm.token_label().to_owned(),
        pool_size: hsm.pool_size(),
        kdf: hsm.kdf().name().to_owned(),
        raw_signatures_1: raw_1,
        raw_signatures_n: raw_n,
        certificates_1: compare(certs_1, raw_1),
        certificates_n: compare(certs_n, raw_n),
        certificates_with_pop_n: compare(certs_pop, raw_n),
        wrapped_keys_n: wrapped,
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "HSM benchmark — module {}, token {:?}, pool of {} sessions, KDF {}",
            self.module, self.token, self.pool_size, self.kdf
        )?;
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, r: &Rate, ratio: Option<f64>| {
            write!(
                f,
                "  {name:<44} {:>9.0}/s  ({} in {:.1} s, {} thread{})",
                r.per_second,
                r.operations,
                r.seconds,
                r.threads,
                if r.threads == 1 { "" } else { "s" }
            )?;
            match ratio {
                Some(x) => writeln!(f, "  ratio to raw {x:.2}"),
                None => writeln!(f),
            }
        };
        line(
            f,
            "raw P-256 signatures (1 session)",
            &self.raw_signatures_1,
            None,
        )?;
        line(
            f,
            "raw P-256 signatures (N sessions)",
            &self.raw_signatures_n,
            None,
        )?;
        line(
            f,
            "certificates issued (1 thread)",
            &self.certificates_1.rate,
            Some(self.certificates_1.ratio_to_raw_signatures),
        )?;
        line(
            f,
            "certificates issued (N threads)",
            &self.certificates_n.rate,
            Some(self.certificates_n.ratio_to_raw_signatures),
        )?;
        line(
            f,
            "certificates incl. PoP check (N threads)",
            &self.certificates_with_pop_n.rate,
            Some(self.certificates_with_pop_n.ratio_to_raw_signatures),
        )?;
        match &self.wrapped_keys_n {
            Some(w) => line(
                f,
                "wrapped device keys (N threads)",
                &w.rate,
                Some(w.ratio_to_raw_signatures),
            ),
            None => writeln!(f, "  wrapped device keys: not supported by this token"),
        }
    }
}
