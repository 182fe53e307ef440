//! The OEM's offline audit of a custody ledger — overproduction, clones,
//! counterfeits and gaps per order (2.4.14.3, 2.4.14.4, 2.4.14.22) — and
//! the assurance evidence built on it ([`evidence`]).
//!
//! It runs at the OEM, away from the factory: it reads a data directory, an
//! export or a ledger service's signed snapshot, and knows nothing of how a
//! site is served or wired (it never depends on `site`); what the factory
//! records it knows from the factory's own definitions (the order's serial
//! scheme, the label, the ledger's key namespaces).
//!
//! Key design decision: the ledger crate's offline verifier reads the
//! ledger, and the audit sees each entry only after the verifier has
//! accepted it (its visitor). If verification fails, nothing in the ledger
//! can be trusted: that is the one finding and the audit stops. Otherwise
//! the same pass feeds the streaming analysis ([`analyze`]), which keeps
//! bounded state (per order, and 24 bytes per device), and a second pass
//! runs only to re-check fingerprint matches exactly.
//!
//! ```text
//! source ──verify──▶ Analysis::observe_entry ──CertJob──▶ worker threads (X.509 checks)
//!                        │ finish_pass1
//!                        ▼
//!                    Resolver (second verified pass, only the suspects)
//!                        │ finish
//!                        ▼
//!                    AuditReport ──▶ text | JSON | HTML
//! ```

#![forbid(unsafe_code)]

pub mod analyze;
pub mod certs;
pub mod error;
pub mod evidence;
pub mod field;
mod fingerprint;
pub mod hub;
pub mod render;
pub mod report;
pub mod source;
pub mod synth;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use custody_ledger::verify;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use analyze::{check_certificate, Analysis, AuditContext, CertJob};
use certs::CaSet;
pub use error::{Error, Result};
use field::FieldIndex;
use report::{AuditReport, Finding, FindingKind, Findings, RunStats};
pub use source::LedgerSource;

/// Certificates queued for the checking threads at most.
const CERT_QUEUE: usize = 4096;

/// What an audit checks against, and how it runs.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// SubjectPublicKeyInfo DER of the OEM order key.
    pub order_key: Vec<u8>,
    /// SubjectPublicKeyInfo DER of the ledger's checkpoint key; `None`
    /// reads the key stored in a data directory (an export needs it).
    pub ledger_key: Option<Vec<u8>>,
    /// The OEM CA certificates (DER): the root and the site intermediates.
    pub ca_certificates: Vec<Vec<u8>>,
    /// Checkpoint notes kept from earlier audits or witnesses: the ledger
    /// must still contain each with the same root.
    pub anchors: Vec<String>,
    /// A directory of field sightings (device certificates, PEM or DER).
    pub field_dir: Option<PathBuf>,
    /// Claims this close to the last entry count as in flight, ms.
    pub in_flight_grace_ms: i64,
    /// Certificate-checking threads; 0 checks on the reading thread.
    pub jobs: usize,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
    /// Accept entries after the latest signed checkpoint (the hub's mirror
    /// of a site holds entries it re-verified but has not cosigned yet;
    /// [`hub`] counts them apart). Off: the verifier fails closed.
    pub allow_unsigned_tail: bool,
}

/// Runs the audit of `source`.
///
/// # Errors
/// [`Error::Config`] when the keys, CA certificates, field sightings or the
/// source cannot be read. Problems *in* the ledger are findings in the
/// report, not errors.
pub fn run(source: &LedgerSource, options: &AuditOptions) -> Result<AuditReport> {
    let started = Instant::now();
    trustline_proto::statement::parse_p256_spki(&options.order_key)
        .map_err(|e| Error::Config(format!("oem order key: {e}")))?;
    let ca = CaSet::new(&options.ca_certificates)?;
    let field = match &options.field_dir {
        Some(dir) => Some(FieldIndex::load(dir, &ca)?),
        None => None,
    };
    let ctx = AuditContext {
        order_key: options.order_key.clone(),
        ca: ca.clone(),
        in_flight_grace_ms: options.in_flight_grace_ms,
    };
    let verify_options = verify::Options {
        key: options.ledger_key.clone(),
        origin: None,
        anchors: options.anchors.clone(),
        allow_unsigned_tail: options.allow_unsigned_tail,
        ..verify::Options::default()
    };
    let mut analysis = Analysis::new(ctx, field);
    let bar = progress_bar(
        options.progress,
        source.size_hint(),
        "verifying and auditing",
    );

    // Pass 1: the verifier's pass, with the analysis as its visitor and
    // certificates checked by worker threads.
    let cert_findings = Arc::new(Mutex::new(Findings::default()));
    let mut certificates_checked = 0u64;
    let verified = std::thread::scope(|scope| -> Result<verify::Verified> {
        let (tx, rx) = sync_channel::<CertJob>(CERT_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..options.jobs {
            let rx = Arc::clone(&rx);
            let ca = &ca;
            let out = Arc::clone(&cert_findings);
            scope.spawn(move || check_worker(&rx, ca, &out));
        }
        let inline = options.jobs == 0;
        let result = source.verify(&verify_options, &mut |ve| {
            bar.inc(1);
            if let Some(job) = analysis.observe_entry(ve.entry) {
                certificates_checked += 1;
                if inline {
                    if let Some(f) = check_certificate(&ca, &job) {
                        lock(&cert_findings).push(f);
                    }
                } else if let Err(back) = tx.send(job) {
                    // Every worker is gone (one panicked): check here.
                    if let Some(f) = check_certificate(&ca, &back.0) {
                        lock(&cert_findings).push(f);
                    }
                }
            }
        });
        drop(tx);
        result
    })?;
    bar.finish_and_clear();
    let first_pass_ms = elapsed_ms(started);
    let mut verified = verified;
    // The recomputed tree is the verifier's; the audit does not need it.
    verified.tree = custody_ledger::merkle::MemoryTree::new();
    let vr = verified.report;
    let mut report = AuditReport {
        generated_at_ms: backends::now_ms(),
        ..AuditReport::default()
    };
    report.ledger.source = source.describe();
    report.ledger.entries = vr.entries;
    if let Some(cp) = &vr.latest_checkpoint {
        report.ledger.checkpoint_size = Some(cp.size);
        report.ledger.checkpoint_root = hex::encode(cp.root);
    }
    if let Some(problem) = vr.problem {
        // Nothing in a ledger that does not verify can be trusted.
        report.ledger.verified = false;
        report.ledger.verify_message = problem.to_string();
        let mut f = Finding::new(
            FindingKind::LedgerVerifyFailed,
            format!("the ledger does not verify: {problem}"),
        );
        f.entries = problem.seq.into_iter().collect();
        report.findings.push(f);
        report.stats = RunStats {
            duration_ms: elapsed_ms(started),
            passes: 1,
            first_pass_ms,
            second_pass_ms: 0,
            certificates_checked,
            peak_rss_kib: peak_rss_kib(),
        };
        return Ok(report);
    }
    report.ledger.verified = true;
    report.ledger.verify_message = format!(
        "{} entries, {} checkpoints ({} entries after the latest), {} devices, {} unique keys, {} anchors",
        vr.entries, vr.checkpoints, vr.uncovered, vr.devices, vr.unique_keys, vr.anchors
    );

    // Pass 2, only when suspects need an exact look.
    let second_started = Instant::now();
    let mut passes = 1;
    let resolver = match analysis.finish_pass1() {
        None => None,
        Some(mut resolver) => {
            passes = 2;
            let bar = progress_bar(options.progress, Some(vr.entries), "re-checking suspects");
            let again = source.verify(&verify_options, &mut |ve| {
                bar.inc(1);
                resolver.observe_entry(&mut analysis, ve.entry);
            })?;
            bar.finish_and_clear();
            if again.report.problem.is_some() || again.report.entries != vr.entries {
                return Err(Error::Config(
                    "the ledger changed between the two passes of the audit; audit a stopped ledger or an export"
                        .into(),
                ));
            }
            Some(resolver)
        }
    };
    let second_pass_ms = if passes == 2 {
        elapsed_ms(second_started)
    } else {
        0
    };
    let cert_findings = std::mem::take(&mut *lock(&cert_findings));
    let outcome = analysis.finish(resolver, cert_findings);
    report.ledger.by_kind = outcome.ledger.by_kind;
    report.ledger.first_ms = outcome.ledger.first_ms;
    report.ledger.last_ms = outcome.ledger.last_ms;
    report.orders = outcome.orders;
    report.refusals = outcome.refusals;
    report.field = outcome.field;
    report.findings = outcome.findings;
    report.stats = RunStats {
        duration_ms: elapsed_ms(started),
        passes,
        first_pass_ms,
        second_pass_ms,
        certificates_checked,
        peak_rss_kib: peak_rss_kib(),
    };
    Ok(report)
}

fn check_worker(rx: &Mutex<Receiver<CertJob>>, ca: &CaSet, out: &Mutex<Findings>) {
    loop {
        // Hold the receiver lock only to take one job.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return;
        };
        if let Some(f) = check_certificate(ca, &job) {
            lock(out).push(f);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A progress bar on stderr: a bar when the size is known, a counter
/// otherwise; hidden when `show` is false or stderr is not a terminal.
pub fn progress_bar(show: bool, total: Option<u64>, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:32}] {human_pos}/{human_len} entries, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{prefix} {spinner} {human_pos} entries, {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_prefix(what.to_owned());
    bar
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
