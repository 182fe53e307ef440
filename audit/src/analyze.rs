//! The streaming analysis: one pass over the entries in ledger order that
//! keeps only bounded state, and a second pass only when fingerprint
//! matches must be re-checked exactly.
//!
//! State held in the first pass, for a ledger of E entries, D devices and O
//! orders:
//! - per order: its verified terms and counters (O small);
//! - per device: 16 bytes keyed by the RoT's 8-byte fingerprint — claim
//!   and certification order, custody flags, claim time ([`DeviceState`]);
//! - per certified device: the 8-byte fingerprints of its serial and key,
//!   in two vectors sorted at the end to find repeats;
//! - refusal counts by site and station, an hourly histogram, the latest
//!   few refusals; the first few findings of each kind.
//!
//! Nothing holds an entry after it is processed. Certificates go to worker
//! threads through a bounded channel ([`CertJob`]).
//!
//! The second pass ([`Resolver`]) runs when a serial or key fingerprint
//! repeats, when a RoT fingerprint was claimed or certified twice, or when a
//! device-level finding needs its details: it replays exactly — keyed by
//! the full values — only those few devices, serials and keys. Its memory is
//! bounded by the number of suspects, not by the ledger.
//!
//! Modules: [`pass`] (the first pass), `devices`, `orders` and `refusals`
//! (its state), `summary` (the end of the first pass), [`resolve`] (the
//! second pass).

use crate::certs::{CaSet, DeviceCert, OID_ECDSA_WITH_SHA256};
use crate::report::{Finding, FindingKind};
use trustline_proto::statement;

mod devices;
mod orders;
pub mod pass;
mod refusals;
pub mod resolve;
mod summary;

pub use pass::Analysis;
pub use resolve::Resolver;
pub use summary::Outcome;

use devices::*;
use orders::*;
use refusals::*;
use summary::emit;

/// Hourly buckets for the refusal histogram.
const HOUR_MS: i64 = 3_600_000;
/// Most bars in the refusal chart.
const MAX_TIMELINE_BUCKETS: i64 = 48;
/// Suspect fingerprints examined exactly; past this many, repeats are
/// counted by fingerprint alone (the report says so).
const MAX_EXACT_SUSPECTS: usize = 100_000;
/// Excess entries listed per over-quota order.
const MAX_EXCESS_LISTED: usize = 64;

/// What the analysis needs to know besides the entries.
#[derive(Debug, Clone)]
pub struct AuditContext {
    /// SubjectPublicKeyInfo DER of the OEM order key.
    pub order_key: Vec<u8>,
    /// The OEM CA certificates.
    pub ca: CaSet,
    /// A claim this close to the end of the ledger counts as in flight,
    /// not as a gap, ms.
    pub in_flight_grace_ms: i64,
}

/// A certificate to check, sent to a worker.
#[derive(Debug, Clone)]
pub struct CertJob {
    seq: u64,
    time_ms: i64,
    der: Vec<u8>,
    serial: String,
    rot_id: String,
    spki: Vec<u8>,
    site: String,
    actor: String,
    order_id: String,
}

/// Checks one recorded certificate: issued by the OEM CA, and naming the
/// serial, RoT and key its entry records (2.4.14.18).
pub fn check_certificate(ca: &CaSet, job: &CertJob) -> Option<Finding> {
    let mut problems = Vec::new();
    match DeviceCert::parse(&job.der) {
        Err(why) => problems.push(format!("certificate {why}")),
        Ok(cert) => {
            if let Err(why) = ca.check_issued(&job.der) {
                problems.push(why);
            }
            if cert.serial != job.serial {
                problems.push(format!("certificate names serial {:?}", cert.serial));
            }
            if cert.rot_id.as_deref() != Some(job.rot_id.as_str()) {
                problems.push(format!(
                    "certificate names rot {}",
                    cert.rot_id.as_deref().unwrap_or("(none)")
                ));
            }
            if cert.spki != job.spki {
                problems.push("certificate key is not the recorded device key".into());
            }
            // 2.4.9.5, 2.4.9.10: ECDSA P-256 with SHA-256 only.
            if cert.signature_algorithm != OID_ECDSA_WITH_SHA256 {
                problems.push(format!(
                    "signature algorithm {} is not ecdsa-with-SHA256",
                    cert.signature_algorithm
                ));
            }
            if statement::parse_p256_spki(&cert.spki).is_err() {
                problems.push("device key is not a P-256 key".into());
            }
        }
    }
    if problems.is_empty() {
        return None;
    }
    let mut f = Finding::new(
        FindingKind::CertificateInvalid,
        format!("recorded certificate is wrong: {}", problems.join("; ")),
    );
    f.entries = vec![job.seq];
    f.time_ms = Some(job.time_ms);
    f.serial = job.serial.clone();
    f.rot_id = job.rot_id.clone();
    f.site = job.site.clone();
    f.actor = job.actor.clone();
    f.order_id = job.order_id.clone();
    Some(f)
}
