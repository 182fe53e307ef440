//! What an audit found: the report model that the text, JSON and HTML
//! renderers share.
//!
//! A report holds only bounded data: one summary per order, refusal counts
//! grouped by site, station and kind, a time histogram of refusals, and the
//! findings — every finding is counted, but only the first
//! [`MAX_EXAMPLES_PER_KIND`] of each kind are kept in full, so that a badly
//! broken ledger of a million entries still yields a report of a few
//! hundred kilobytes.

use std::collections::BTreeMap;

use serde::Serialize;

/// Findings of one kind kept in full; the rest are only counted.
pub const MAX_EXAMPLES_PER_KIND: usize = 200;
/// Refusal events listed one by one (the latest ones); all are counted.
pub const MAX_LISTED_REFUSALS: usize = 200;

/// What kind of problem a finding is. Each names the requirement whose
/// evidence it undermines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingKind {
    /// The ledger itself does not verify (chain, tree, checkpoints,
    /// constraints): nothing else in it can be trusted, so the audit stops
    /// (2.4.14.3).
    LedgerVerifyFailed,
    /// An entry does not decode as what its kind promises.
    UndecodableEntry,
    /// An `ORDER_OPENED` whose production order does not verify against the
    /// OEM order key, or is malformed (2.4.14.22).
    OrderSignatureInvalid,
    /// A device certified under an order that was never opened, was opened
    /// only later, or whose signature fails (2.4.14.22).
    CertifiedWithoutValidOrder,
    /// A device certified outside its order's validity window.
    CertifiedOutsideWindow,
    /// A device certified after its order was closed.
    CertifiedAfterClose,
    /// A device certified by a site other than the one its order names.
    CertifiedAtWrongSite,
    /// A serial outside the order's serial scheme.
    SerialOutsideScheme,
    /// An order with more devices certified than it authorised
    /// (overproduction, 2.4.14.22).
    OverQuota,
    /// One product serial on more than one certified device (2.4.14.4).
    DuplicateSerial,
    /// One RoT certified more than once (2.4.14.3).
    DuplicateRot,
    /// One device key on more than one certificate (a cloned key, 2.4.14.9).
    DuplicateDeviceKey,
    /// One RoT claimed more than once.
    DuplicateClaim,
    /// A device certified without a claim of its RoT under the same order
    /// (2.4.14.18).
    CertifiedWithoutClaim,
    /// A recorded certificate that does not chain to the OEM CA, or does not
    /// name the serial, RoT and key its entry records.
    CertificateInvalid,
    /// A RoT claimed but neither certified, refused nor scrapped: a gap
    /// between claimed and certified (2.4.14.22).
    ClaimedNotCertified,
    /// A custody event (shipped, received, scrapped) for a device that was
    /// never certified (2.4.14.12).
    CustodyWithoutCertificate,
    /// A device shipped after it was recorded as scrapped (2.4.14.14).
    ShippedAfterScrapped,
    /// A field certificate that the ledger never recorded and that shares
    /// no serial or key with a recorded one (overproduction, or a
    /// certificate not issued by the OEM line).
    FieldUnrecorded,
    /// A field certificate that is not the recorded one but carries a
    /// recorded serial or key: a clone (2.4.14.3, 2.4.14.4).
    FieldClone,
    /// A field certificate of a device recorded as scrapped (2.4.14.14).
    FieldScrapped,
}

impl FindingKind {
    /// The requirement whose evidence this kind of finding undermines.
    pub fn requirement(self) -> &'static str {
        match self {
            FindingKind::LedgerVerifyFailed | FindingKind::UndecodableEntry => "2.4.14.3",
            FindingKind::OrderSignatureInvalid
            | FindingKind::CertifiedWithoutValidOrder
            | FindingKind::CertifiedOutsideWindow
            | FindingKind::CertifiedAfterClose
            | FindingKind::CertifiedAtWrongSite
            | FindingKind::SerialOutsideScheme
            | FindingKind::OverQuota
            | FindingKind::ClaimedNotCertified
            | FindingKind::FieldUnrecorded => "2.4.14.22",
            FindingKind::DuplicateSerial | FindingKind::FieldClone => "2.4.14.4",
            FindingKind::DuplicateRot | FindingKind::DuplicateClaim => "2.4.14.3",
            FindingKind::DuplicateDeviceKey => "2.4.14.9",
            FindingKind::CertifiedWithoutClaim | FindingKind::CertificateInvalid => "2.4.14.18",
            FindingKind::CustodyWithoutCertificate => "2.4.14.12",
            FindingKind::ShippedAfterScrapped | FindingKind::FieldScrapped => "2.4.14.14",
        }
    }

    /// The kebab-case name used in every output format.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::LedgerVerifyFailed => "ledger-verify-failed",
            FindingKind::UndecodableEntry => "undecodable-entry",
            FindingKind::OrderSignatureInvalid => "order-signature-invalid",
            FindingKind::CertifiedWithoutValidOrder => "certified-without-valid-order",
            FindingKind::CertifiedOutsideWindow => "certified-outside-window",
            FindingKind::CertifiedAfterClose => "certified-after-close",
            FindingKind::CertifiedAtWrongSite => "certified-at-wrong-site",
            FindingKind::SerialOutsideScheme => "serial-outside-scheme",
            FindingKind::OverQuota => "over-quota",
            FindingKind::DuplicateSerial => "duplicate-serial",
            FindingKind::DuplicateRot => "duplicate-rot",
            FindingKind::DuplicateDeviceKey => "duplicate-device-key",
            FindingKind::DuplicateClaim => "duplicate-claim",
            FindingKind::CertifiedWithoutClaim => "certified-without-claim",
            FindingKind::CertificateInvalid => "certificate-invalid",
            FindingKind::ClaimedNotCertified => "claimed-not-certified",
            FindingKind::CustodyWithoutCertificate => "custody-without-certificate",
            FindingKind::ShippedAfterScrapped => "shipped-after-scrapped",
            FindingKind::FieldUnrecorded => "field-unrecorded",
            FindingKind::FieldClone => "field-clone",
            FindingKind::FieldScrapped => "field-scrapped",
        }
    }
}

/// One finding: what is wrong, where, and the entries that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// The requirement it concerns.
    pub requirement: &'static str,
    /// One sentence, lowercase, for people.
    pub message: String,
    /// The ledger entries that show it, in ledger order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<u64>,
    /// The production order.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub order_id: String,
    /// The factory site(s).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// The station (ledger actor).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub actor: String,
    /// The product serial.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub serial: String,
    /// The RoT.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rot_id: String,
    /// When (ledger time of the first entry named), Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<i64>,
    /// The field sighting file, for field findings.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub file: String,
}

impl Finding {
    /// A finding of `kind` with `message`; the other fields are filled by
    /// the caller.
    pub fn new(kind: FindingKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            requirement: kind.requirement(),
            message: message.into(),
            entries: Vec::new(),
            order_id: String::new(),
            site: String::new(),
            actor: String::new(),
            serial: String::new(),
            rot_id: String::new(),
            time_ms: None,
            file: String::new(),
        }
    }
}

/// Every finding counted; the first few of each kind kept in full.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// How many of each kind.
    pub counts: BTreeMap<FindingKind, u64>,
    /// The kept findings, in the order they were found.
    pub items: Vec<Finding>,
}

impl Findings {
    /// Counts `finding` and keeps it if its kind has room.
    pub fn push(&mut self, finding: Finding) {
        let kind = finding.kind;
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        if *count as usize <= MAX_EXAMPLES_PER_KIND {
            self.items.push(finding);
        }
    }

    /// Total findings of every kind.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// How many of `kind`.
    pub fn count(&self, kind: FindingKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }
}

/// One production order, as the ledger shows it (2.4.14.22).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrderSummary {
    /// The order id.
    pub order_id: String,
    /// The product.
    pub sku: String,
    /// The site the order names.
    pub site: String,
    /// Devices the OEM authorised (the signed quantity); `None` when the
    /// order was never opened or its signature fails.
    pub authorised: Option<u64>,
    /// Whether the recorded order verifies against the OEM order key.
    pub signature_valid: bool,
    /// The `ORDER_OPENED` entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_entry: Option<u64>,
    /// Validity window start, Unix ms.
    pub not_before_ms: i64,
    /// Validity window end (exclusive), Unix ms.
    pub not_after_ms: i64,
    /// Closed early (`ORDER_CLOSED`).
    pub closed: bool,
    /// RoTs claimed under the order.
    pub claimed: u64,
    /// `CERTIFIED` entries under the order.
    pub certified: u64,
    /// Certified devices that left the site (last custody event shipped or
    /// received).
    pub shipped: u64,
    /// Certified devices scrapped.
    pub scrapped: u64,
    /// Certified devices neither shipped nor scrapped: still on site.
    pub on_site: u64,
    /// Claimed RoTs whose certification was refused (duplicate or quota) and
    /// that were not scrapped or certified afterwards.
    pub refused_after_claim: u64,
    /// Claimed RoTs neither certified, refused nor scrapped, claimed within
    /// the in-flight grace before the end of the ledger.
    pub in_flight: u64,
    /// Claimed RoTs neither certified, refused nor scrapped (findings).
    pub claimed_not_certified: u64,
    /// `DUPLICATE_REJECTED` entries naming the order.
    pub duplicate_rejected: u64,
    /// `COUNTERFEIT_REJECTED` entries naming the order.
    pub counterfeit_rejected: u64,
    /// `QUOTA_REJECTED` entries naming the order.
    pub quota_rejected: u64,
}

/// Refusals of one kind by one station.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefusalGroup {
    /// "duplicate", "counterfeit", "quota" or "request".
    pub kind: &'static str,
    /// The site.
    pub site: String,
    /// The station (ledger actor).
    pub actor: String,
    /// How many.
    pub count: u64,
    /// The first, Unix ms.
    pub first_ms: i64,
    /// The last, Unix ms.
    pub last_ms: i64,
}

/// One recorded refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefusalEvent {
    /// The entry.
    pub entry: u64,
    /// When, Unix ms.
    pub time_ms: i64,
    /// "duplicate", "counterfeit", "quota" or "request".
    pub kind: &'static str,
    /// The site.
    pub site: String,
    /// The station.
    pub actor: String,
    /// The order.
    pub order_id: String,
    /// The serial, if any.
    pub serial: String,
    /// The RoT, if any.
    pub rot_id: String,
    /// What was refused, e.g. "certify".
    pub operation: String,
    /// Why, as recorded.
    pub reason: String,
}

/// Refusals counted in one time bucket (for the chart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TimeBucket {
    /// Start of the bucket, Unix ms.
    pub start_ms: i64,
    /// `DUPLICATE_REJECTED` entries.
    pub duplicate: u64,
    /// `COUNTERFEIT_REJECTED` entries.
    pub counterfeit: u64,
    /// `QUOTA_REJECTED` entries.
    pub quota: u64,
}

/// Duplicate, counterfeit and quota attempts the line caught (not findings:
/// the controls worked; the OEM still wants to know who tried).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Refusals {
    /// By kind, site and station.
    pub groups: Vec<RefusalGroup>,
    /// The latest [`MAX_LISTED_REFUSALS`] refusals, oldest first.
    pub recent: Vec<RefusalEvent>,
    /// Over time; bucket width in `bucket_ms`.
    pub timeline: Vec<TimeBucket>,
    /// Width of each timeline bucket, ms.
    pub bucket_ms: i64,
}

/// What the ledger verification said.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerSummary {
    /// Where the ledger was read from.
    pub source: String,
    /// Entries read.
    pub entries: u64,
    /// Whether the ledger verified (chain, tree, checkpoints, constraints).
    pub verified: bool,
    /// The verifier's words.
    pub verify_message: String,
    /// Size of the latest signed checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_size: Option<u64>,
    /// Root hash of the latest signed checkpoint, hex.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub checkpoint_root: String,
    /// Entries by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Time of the first entry, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<i64>,
    /// Time of the last entry, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
}

/// What the field sightings showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldSummary {
    /// Certificates read.
    pub certificates: u64,
    /// Of those, the ones the ledger recorded.
    pub recorded: u64,
    /// Not recorded and sharing nothing with a recorded certificate.
    pub unrecorded: u64,
    /// Not recorded but carrying a recorded serial or key.
    pub clones: u64,
    /// Recorded, of scrapped devices.
    pub scrapped: u64,
    /// Unrecorded certificates that nevertheless chain to the OEM CA (its
    /// key signed outside the line: a leaked or misused CA key).
    pub issued_by_oem_ca_unrecorded: u64,
    /// Files that held no certificate.
    pub unreadable_files: Vec<String>,
}

/// How the audit ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Passes over the entries after verification (1, or 2 when
    /// fingerprint matches had to be re-checked exactly).
    pub passes: u32,
    /// The first pass (the verifier's, with the analysis riding along), ms.
    pub first_pass_ms: u64,
    /// The second pass (re-checking suspects), ms; 0 when not needed.
    pub second_pass_ms: u64,
    /// Certificates whose signature was checked.
    pub certificates_checked: u64,
    /// Peak resident set size of the process, KiB (Linux `VmHWM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
}

/// The whole audit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// When the report was made, Unix ms.
    pub generated_at_ms: i64,
    /// The ledger and its verification.
    pub ledger: LedgerSummary,
    /// Every order, by id.
    pub orders: Vec<OrderSummary>,
    /// Caught duplicate, counterfeit and quota attempts.
    pub refusals: Refusals,
    /// Field sightings, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldSummary>,
    /// The findings.
    pub findings: Findings,
    /// How the run went.
    pub stats: RunStats,
}

impl AuditReport {
    /// Whether the audit found anything (exit code 1).
    pub fn has_findings(&self) -> bool {
        !self.findings.is_empty()
    }
}
