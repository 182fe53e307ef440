//! P-256 / SHA-256 signature verification in the libraries at hand, on this
//! machine, single-threaded, in one run (issue 16.3).
//!
//! Each repetition measures every library for the same wall time, one
//! after the other, so a moment of load hits all of them alike; the report
//! gives the median, minimum and maximum per library and the ratio of each
//! median to ring's. Inputs are those of the factory line: 16 keys, a DER
//! signature each over a 200-byte message, taken in turn.
//!
//! Rows:
//! - `ring`, `aws-lc-rs`, `p256` — the library alone, the key given as its
//!   uncompressed point on every call;
//! - `… prepared` — the key parsed once (`aws_lc_rs::signature::ParsedPublicKey`,
//!   `p256::ecdsa::VerifyingKey`; ring has no prepared ECDSA key);
//! - `trustline strict` — Trustline's strict verifier from
//!   SubjectPublicKeyInfo DER (what statement verification does: parse the
//!   key, refuse high-S and non-canonical DER, then ring), verified every
//!   time ([`trustline_proto::ecdsa::verify_strict_every_time`]);
//! - `trustline strict, remembered` — the same check repeated on inputs this
//!   process verified before, answered from its table of verified inputs
//!   (the provisioner and its in-process CA checking one proof of
//!   possession): a hash and a lookup instead of a verification.
//!
//! aws-lc-rs is measured only when the crate is built with the
//! `verifier-bench` feature (it builds AWS-LC from C; aws-lc-rs 1.19 /
//! aws-lc-sys 0.47 build with the `cc` crate alone, no cmake or clang).
//!
//! Measured here (2 vCPU shared with other builds, load average 4–5,
//! release build, three runs of 5–7 repetitions; medians, verifications
//! per second): ring 15.0k–15.8k; aws-lc-rs 15.6k–17.0k (×1.04–1.08 of
//! ring), prepared 15.7k–16.9k (×1.05–1.07); p256 2.7k–3.1k (×0.18–0.20),
//! prepared 2.8k–2.9k; Trustline's strict verifier on ring 15.0k–15.8k
//! (×1.00–1.02: the low-S and canonical-DER checks cost nothing visible),
//! with a prepared key 15.1k–15.8k (that row is gone: preparing saved
//! nothing). For comparison, `openssl speed ecdsap256` on the same machine
//! verifies 14.2k/s (70 µs), so about 65 µs is this CPU's P-256 floor, not
//! ring's. The spread inside one run is ±20 %, so aws-lc-rs
//! is not clearly faster, and ring stays: it is well kept, already in the
//! graph (rustls, rcgen, x509-parser) and needs no C build. Preparing a key
//! saves little (the SubjectPublicKeyInfo parse is small next to the
//! ~65 µs of the verification); caching *verified results* per order or
//! vendor is what saves work. Reproduce with
//! `cargo run --release -p ca-service --features verifier-bench --example verify_bench`.

use std::time::{Duration, Instant};

use p256::ecdsa::signature::Verifier as _;
use serde::Serialize;
use trustline_proto::ecdsa::{
    verify_strict, verify_strict_every_time, SignatureEncoding, VerifyingKey,
};
use trustline_proto::signer::{Signer, SoftwareSigner};

use crate::Error;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifierConfig {
    /// Repetitions (each measures every library once).
    pub repetitions: usize,
    /// Wall time per library per repetition.
    pub phase: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            repetitions: 5,
            phase: Duration::from_millis(500),
        }
    }
}

/// One library's rates over the repetitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifierRate {
    /// The library and mode.
    pub library: &'static str,
    /// Verifications per second, one per repetition.
    pub per_second: Vec<f64>,
    /// Their median.
    pub median: f64,
    /// The median ÷ ring's median.
    pub ratio_to_ring: f64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifierReport {
    /// Wall time per library per repetition, seconds.
    pub phase_seconds: f64,
    /// One row per library and mode.
    pub rates: Vec<VerifierRate>,
    /// Whether aws-lc-rs was built in (feature `verifier-bench`).
    pub aws_lc_rs_measured: bool,
}

struct Sample {
    message: Vec<u8>,
    spki: Vec<u8>,
    point: Vec<u8>,
    der: Vec<u8>,
}

fn samples() -> Result<Vec<Sample>, Error> {
    (0..16u8)
        .map(|i| {
            let key = SoftwareSigner::generate();
            let message = vec![i; 200];
            let der = key.sign(&message).map_err(|e| Error::Encoding {
                what: "benchmark signatures",
                reason: e.to_string(),
            })?;
            let prepared =
                VerifyingKey::from_spki(key.public_key_der()).map_err(|e| Error::Encoding {
                    what: "benchmark keys",
                    reason: e.to_string(),
                })?;
            Ok(Sample {
                message,
                spki: key.public_key_der().to_vec(),
                point: prepared.uncompressed_point().to_vec(),
                der,
            })
        })
        .collect()
}

type Check<'a> = Box<dyn Fn(usize) -> bool + 'a>;

/// The verifiers, each checking sample `i % 16`.
fn verifiers(s: &[Sample]) -> Result<Vec<(&'static str, Check<'_>)>, Error> {
    let n = s.len();
    let p256_keys: Vec<p256::ecdsa::VerifyingKey> = s
        .iter()
        .map(|x| p256::ecdsa::VerifyingKey::from_sec1_bytes(&x.point))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Encoding {
            what: "benchmark keys",
            reason: e.to_string(),
        })?;
    let mut out: Vec<(&'static str, Check<'_>)> = vec![
        (
            "ring",
            Box::new(move |i| {
                let x = &s[i % n];
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    &x.point,
                )
                .verify(&x.message, &x.der)
                .is_ok()
            }),
        ),
        (
            "p256",
            Box::new(move |i| {
                let x = &s[i % n];
                let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&x.point) else {
                    return false;
                };
                p256::ecdsa::Signature::from_der(&x.der)
                    .is_ok_and(|sig| key.verify(&x.message, &sig).is_ok())
            }),
        ),
        (
            "p256 prepared",
            Box::new(move |i| {
                let x = &s[i % n];
                p256::ecdsa::Signature::from_der(&x.der)
                    .is_ok_and(|sig| p256_keys[i % n].verify(&x.message, &sig).is_ok())
            }),
        ),
        (
            "trustline strict",
            Box::new(move |i| {
                let x = &s[i % n];
                verify_strict_every_time(&x.spki, &x.message, &x.der, SignatureEncoding::Der)
                    .is_ok()
            }),
        ),
        (
            "trustline strict, remembered",
            Box::new(move |i| {
                let x = &s[i % n];
                verify_strict(&x.spki, &x.message, &x.der, SignatureEncoding::Der).is_ok()
            }),
        ),
    ];
    aws_lc(s, &mut out)?;
    Ok(out)
}

#[cfg(feature = "verifier-bench")]
fn aws_lc<'a>(s: &'a [Sample], out: &mut Vec<(&'static str, Check<'a>)>) -> Result<(), Error> {
    use aws_lc_rs::signature::{ParsedPublicKey, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
    let n = s.len();
    let parsed: Vec<ParsedPublicKey> = s
        .iter()
        .map(|x| ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &x.point))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Encoding {
            what: "benchmark keys",
            reason: e.to_string(),
        })?;
    out.push((
        "aws-lc-rs",
        Box::new(move |i| {
            let x = &s[i % n];
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &x.point)
                .verify(&x.message, &x.der)
                .is_ok()
        }),
    ));
    out.push((
        "aws-lc-rs prepared",
        Box::new(move |i| {
            let x = &s[i % n];
            parsed[i % n].verify_sig(&x.message, &x.der).is_ok()
        }),
    ));
    Ok(())
}

#[cfg(not(feature = "verifier-bench"))]
fn aws_lc<'a>(_s: &'a [Sample], _out: &mut Vec<(&'static str, Check<'a>)>) -> Result<(), Error> {
    Ok(())
}

/// Verifications per second of `check` for `phase`; fails on any refusal
/// (a verifier that refuses a good signature measures nothing).
fn rate(name: &str, check: &dyn Fn(usize) -> bool, phase: Duration) -> Result<f64, Error> {
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < phase {
        for _ in 0..32 {
            if !check(done) {
                return Err(Error::Encoding {
                    what: "the verifier benchmark",
                    reason: format!("{name} refused a valid signature"),
                });
            }
            done += 1;
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Measures every verifier, `config.repetitions` times, on the calling
/// thread. `progress` is told each repetition as it starts.
///
/// # Errors
/// [`Error::Encoding`] when a verifier refuses a valid signature.
pub fn run(
    config: &VerifierConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<VerifierReport, Error> {
    let samples = samples()?;
    let checks = verifiers(&samples)?;
    // Warm up (tables, caches) once each.
    for (name, check) in &checks {
        rate(name, check.as_ref(), Duration::from_millis(20))?;
    }
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); checks.len()];
    for r in 0..config.repetitions.max(1) {
        progress(&format!(
            "P-256 verification, repetition {} of {}",
            r + 1,
            config.repetitions.max(1)
        ));
        for (i, (name, check)) in checks.iter().enumerate() {
            per[i].push(rate(name, check.as_ref(), config.phase)?);
        }
    }
    let ring = median(&per[0]);
    let rates = checks
        .iter()
        .zip(per)
        .map(|((name, _), per_second)| {
            let m = median(&per_second);
            VerifierRate {
                library: name,
                median: m,
                ratio_to_ring: if ring > 0.0 { m / ring } else { 0.0 },
                per_second,
            }
        })
        .collect();
    Ok(VerifierReport {
        phase_seconds: config.phase.as_secs_f64(),
        rates,
        aws_lc_rs_measured: cfg!(feature = "verifier-bench"),
    })
}

/// Trustline's strict verifier alone (the `trustline strict` row, verified
/// every time), single-threaded for `phase`: verifications per second, the
/// unit `trustline bench line` measures a device's server CPU in.
///
/// # Errors
/// [`Error::Encoding`] when it refuses a valid signature.
pub fn strict_rate(phase: Duration) -> Result<f64, Error> {
    let samples = samples()?;
    let n = samples.len();
    let check = |i: usize| {
        let x = &samples[i % n];
        verify_strict_every_time(&x.spki, &x.message, &x.der, SignatureEncoding::Der).is_ok()
    };
    rate("trustline strict", &check, Duration::from_millis(20))?;
    rate("trustline strict", &check, phase)
}

impl std::fmt::Display for VerifierReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "P-256 / SHA-256 verification, 1 thread, {:.2} s per library per repetition",
            self.phase_seconds
        )?;
        for r in &self.rates {
            let (lo, hi) = r
                .per_second
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            writeln!(
                f,
                "  {:<28} median {:>8.0}/s  (min {:>8.0}, max {:>8.0})  ×{:.2} ring",
                r.library, r.median, lo, hi, r.ratio_to_ring
            )?;
        }
        if !self.aws_lc_rs_measured {
            writeln!(
                f,
                "  aws-lc-rs: not built in (build ca-service with feature `verifier-bench`)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verifier_accepts_the_samples_and_refuses_a_flipped_signature() {
        let mut s = samples().expect("samples");
        for (name, check) in verifiers(&s).expect("verifiers") {
            for i in 0..s.len() {
                assert!(check(i), "{name} refused sample {i}");
            }
        }
        // Corrupt every sample: each verifier must now refuse each one.
        for x in &mut s {
            let last = x.message.len() - 1;
            x.message[last] ^= 1;
        }
        for (name, check) in verifiers(&s).expect("verifiers") {
            for i in 0..s.len() {
                assert!(!check(i), "{name} accepted a changed message {i}");
            }
        }
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
