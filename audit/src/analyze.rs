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

use std::collections::{BTreeMap, HashMap, VecDeque};

use prost::Message;
use trustline_proto::statement;
use trustline_proto::v1::{self, EventKind};

use super::certs::{CaSet, DeviceCert, OID_ECDSA_WITH_SHA256};
use super::field::FieldIndex;
use super::fingerprint::{key_fp, repeated, rot_fp, rot_key, serial_fp, Fp, FpMap, FpSet};
use super::report::{
    Finding, FindingKind, Findings, LedgerSummary, OrderSummary, RefusalEvent, RefusalGroup,
    Refusals, TimeBucket, MAX_EXAMPLES_PER_KIND, MAX_LISTED_REFUSALS,
};
use provisioner::orders::SerialScheme;

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

// ------------------------------------------------------------------ devices

/// Device flags.
mod flag {
    pub(super) const CLAIMED: u16 = 1 << 0;
    pub(super) const CERTIFIED: u16 = 1 << 1;
    pub(super) const LEFT_SITE: u16 = 1 << 2;
    pub(super) const SCRAPPED: u16 = 1 << 3;
    pub(super) const REFUSED: u16 = 1 << 4;
    /// Claimed or certified twice: replayed exactly in the second pass.
    pub(super) const MULTI: u16 = 1 << 5;
    /// Certified without a claim under the same order.
    pub(super) const A_NO_CLAIM: u16 = 1 << 8;
    /// Custody event before certification.
    pub(super) const A_CUSTODY: u16 = 1 << 9;
    /// Custody event after scrapping.
    pub(super) const A_AFTER_SCRAP: u16 = 1 << 10;
}

/// Anomalies one event can show (bit mask).
mod anomaly {
    pub(super) const DUP_CLAIM: u8 = 1 << 0;
    pub(super) const DUP_ROT: u8 = 1 << 1;
    pub(super) const NO_CLAIM: u8 = 1 << 2;
    pub(super) const CUSTODY: u8 = 1 << 3;
    pub(super) const AFTER_SCRAP: u8 = 1 << 4;
}

/// No order.
const NO_ORDER: u32 = u32::MAX;

/// What the audit remembers about one device: 16 bytes (24 with its key
/// in the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceState {
    order: u32,
    claimed_s: u32,
    /// 32 more bits of the RoT's hash: two RoTs whose 64-bit fingerprints
    /// collide are told apart here (and replayed exactly), so that one
    /// device's history is never silently merged into another's unless 96
    /// bits collide.
    tag: u32,
    flags: u16,
}

impl Default for DeviceState {
    fn default() -> Self {
        Self {
            order: NO_ORDER,
            claimed_s: 0,
            tag: 0,
            flags: 0,
        }
    }
}

impl DeviceState {
    fn has(self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Applies one event; returns the anomalies it shows. The same machine
    /// runs in both passes, so they cannot disagree.
    fn step(&mut self, kind: EventKind, order: u32, time_ms: i64, operation_is_claim: bool) -> u8 {
        let mut found = 0;
        match kind {
            EventKind::Claimed => {
                if self.has(flag::CLAIMED) {
                    found |= anomaly::DUP_CLAIM;
                } else {
                    self.flags |= flag::CLAIMED;
                    self.claimed_s = u32::try_from(time_ms.max(0) / 1000).unwrap_or(u32::MAX);
                    if !self.has(flag::CERTIFIED) {
                        self.order = order;
                    }
                }
            }
            EventKind::Certified => {
                if self.has(flag::CERTIFIED) {
                    found |= anomaly::DUP_ROT;
                } else {
                    if !self.has(flag::CLAIMED) || self.order != order {
                        found |= anomaly::NO_CLAIM;
                    }
                    self.flags |= flag::CERTIFIED;
                    self.order = order;
                }
            }
            EventKind::Shipped | EventKind::Received => {
                if !self.has(flag::CERTIFIED) {
                    found |= anomaly::CUSTODY;
                }
                if self.has(flag::SCRAPPED) {
                    found |= anomaly::AFTER_SCRAP;
                }
                self.flags |= flag::LEFT_SITE;
            }
            EventKind::Scrapped => {
                if !self.has(flag::CERTIFIED) && !self.has(flag::CLAIMED) {
                    found |= anomaly::CUSTODY;
                }
                if self.has(flag::SCRAPPED) {
                    found |= anomaly::AFTER_SCRAP;
                }
                self.flags |= flag::SCRAPPED;
            }
            EventKind::DuplicateRejected | EventKind::QuotaRejected if !operation_is_claim => {
                self.flags |= flag::REFUSED;
            }
            _ => {}
        }
        found
    }
}

/// Whether an event kind moves a device's state.
fn is_device_event(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Claimed
            | EventKind::Certified
            | EventKind::Shipped
            | EventKind::Received
            | EventKind::Scrapped
            | EventKind::DuplicateRejected
            | EventKind::QuotaRejected
    )
}

/// Where a device stands at the end, for the order's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Certified,
    Refused,
    ScrappedUncertified,
    InFlight,
    Gap,
    Unclaimed,
}

fn standing(s: DeviceState, last_ms: i64, grace_ms: i64) -> Standing {
    if s.has(flag::CERTIFIED) {
        Standing::Certified
    } else if !s.has(flag::CLAIMED) {
        Standing::Unclaimed
    } else if s.has(flag::SCRAPPED) {
        Standing::ScrappedUncertified
    } else if s.has(flag::REFUSED) {
        Standing::Refused
    } else if i64::from(s.claimed_s) * 1000 >= last_ms.saturating_sub(grace_ms) {
        Standing::InFlight
    } else {
        Standing::Gap
    }
}

fn tally(o: &mut OrderSummary, s: DeviceState, st: Standing) {
    if s.has(flag::CLAIMED) {
        o.claimed += 1;
    }
    match st {
        Standing::Certified => {
            if s.has(flag::SCRAPPED) {
                o.scrapped += 1;
            } else if s.has(flag::LEFT_SITE) {
                o.shipped += 1;
            } else {
                o.on_site += 1;
            }
        }
        Standing::Refused => o.refused_after_claim += 1,
        Standing::InFlight => o.in_flight += 1,
        Standing::Gap => o.claimed_not_certified += 1,
        Standing::ScrappedUncertified | Standing::Unclaimed => {}
    }
}

// ------------------------------------------------------------------- orders

#[derive(Debug, Clone)]
struct Terms {
    site: String,
    quantity: u64,
    not_before_ms: i64,
    not_after_ms: i64,
    serials: SerialScheme,
}

#[derive(Debug, Clone, Default)]
struct OrderState {
    summary: OrderSummary,
    terms: Option<Terms>,
    opened_seq: Option<u64>,
    closed_seq: Option<u64>,
    excess: Vec<u64>,
    excess_count: u64,
}

/// Checks an `ORDER_OPENED` payload against the OEM order key.
fn verify_order(
    entry: &v1::LedgerEntry,
    order_key: &[u8],
) -> Result<(v1::ProductionOrder, Terms), String> {
    let payload = v1::OrderOpenedPayload::decode(entry.payload.as_slice())
        .map_err(|e| format!("payload does not decode: {e}"))?;
    let signed = payload
        .signed_order
        .ok_or_else(|| "payload holds no signed order".to_owned())?;
    let order: v1::ProductionOrder =
        statement::verify(&signed, order_key).map_err(|e| format!("signed order: {e}"))?;
    if order.order_id != entry.order_id {
        return Err(format!(
            "entry names order {:?} but the signed order is {:?}",
            entry.order_id, order.order_id
        ));
    }
    let scheme = order
        .serial_scheme
        .clone()
        .ok_or_else(|| "signed order has no serial scheme".to_owned())?;
    if order.quantity == 0
        || order.not_before_ms >= order.not_after_ms
        || scheme.first > scheme.last
    {
        return Err("signed order has no quantity, window or serial range".into());
    }
    let terms = Terms {
        site: order.site.clone(),
        quantity: order.quantity,
        not_before_ms: order.not_before_ms,
        not_after_ms: order.not_after_ms,
        serials: SerialScheme {
            prefix: scheme.prefix,
            first: scheme.first,
            last: scheme.last,
            digits: scheme.digits,
        },
    };
    Ok((order, terms))
}

// ----------------------------------------------------------------- refusals

#[derive(Debug, Default)]
struct RefusalAcc {
    groups: HashMap<(&'static str, String, String), RefusalGroup>,
    hours: BTreeMap<i64, [u64; 3]>,
    recent: VecDeque<RefusalEvent>,
}

fn refusal_kind(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::DuplicateRejected => Some("duplicate"),
        EventKind::CounterfeitRejected => Some("counterfeit"),
        EventKind::QuotaRejected => Some("quota"),
        EventKind::RequestRejected => Some("request"),
        _ => None,
    }
}

impl RefusalAcc {
    fn add(&mut self, e: &v1::LedgerEntry, kind: &'static str, payload: &v1::RejectedPayload) {
        let g = self
            .groups
            .entry((kind, e.site.clone(), e.actor.clone()))
            .or_insert_with(|| RefusalGroup {
                kind,
                site: e.site.clone(),
                actor: e.actor.clone(),
                count: 0,
                first_ms: e.time_ms,
                last_ms: e.time_ms,
            });
        g.count += 1;
        g.first_ms = g.first_ms.min(e.time_ms);
        g.last_ms = g.last_ms.max(e.time_ms);
        let column = match kind {
            "duplicate" => Some(0),
            "counterfeit" => Some(1),
            "quota" => Some(2),
            _ => None,
        };
        if let Some(c) = column {
            self.hours
                .entry(e.time_ms.div_euclid(HOUR_MS))
                .or_insert([0; 3])[c] += 1;
        }
        if self.recent.len() == MAX_LISTED_REFUSALS {
            self.recent.pop_front();
        }
        self.recent.push_back(RefusalEvent {
            entry: e.seq,
            time_ms: e.time_ms,
            kind,
            site: e.site.clone(),
            actor: e.actor.clone(),
            order_id: e.order_id.clone(),
            serial: e.serial.clone(),
            rot_id: e.rot_id.clone(),
            operation: payload.operation.chars().take(64).collect(),
            reason: payload.reason.chars().take(256).collect(),
        });
    }

    fn finish(self) -> Refusals {
        let mut groups: Vec<RefusalGroup> = self.groups.into_values().collect();
        groups.sort_by(|a, b| (a.kind, &a.site, &a.actor).cmp(&(b.kind, &b.site, &b.actor)));
        let (timeline, bucket_ms) = rebucket(&self.hours);
        Refusals {
            groups,
            recent: self.recent.into_iter().collect(),
            timeline,
            bucket_ms,
        }
    }
}

/// Folds hourly counts into at most [`MAX_TIMELINE_BUCKETS`] equal buckets
/// covering the whole span (empty buckets included, so time reads
/// linearly).
fn rebucket(hours: &BTreeMap<i64, [u64; 3]>) -> (Vec<TimeBucket>, i64) {
    let (Some(first), Some(last)) = (hours.keys().next(), hours.keys().next_back()) else {
        return (Vec::new(), HOUR_MS);
    };
    let span_hours = last - first + 1;
    let per_bucket = (span_hours + MAX_TIMELINE_BUCKETS - 1) / MAX_TIMELINE_BUCKETS;
    let buckets = (span_hours + per_bucket - 1) / per_bucket;
    let mut out: Vec<TimeBucket> = (0..buckets)
        .map(|i| TimeBucket {
            start_ms: (first + i * per_bucket) * HOUR_MS,
            ..TimeBucket::default()
        })
        .collect();
    for (hour, counts) in hours {
        let i = usize::try_from((hour - first) / per_bucket).unwrap_or(0);
        if let Some(b) = out.get_mut(i) {
            b.duplicate += counts[0];
            b.counterfeit += counts[1];
            b.quota += counts[2];
        }
    }
    (out, per_bucket * HOUR_MS)
}

// ------------------------------------------------------------------ pass 1

/// The first pass.
pub struct Analysis {
    ctx: AuditContext,
    orders: Vec<OrderState>,
    order_index: HashMap<String, u32>,
    devices: FpMap<DeviceState>,
    serial_fps: Vec<Fp>,
    key_fps: Vec<Fp>,
    findings: Findings,
    refusals: RefusalAcc,
    ledger: LedgerSummary,
    by_kind: BTreeMap<i32, u64>,
    field: Option<FieldIndex>,
}

fn finding_at(kind: FindingKind, message: String, e: &v1::LedgerEntry) -> Finding {
    let mut f = Finding::new(kind, message);
    f.entries = vec![e.seq];
    f.time_ms = Some(e.time_ms);
    f.order_id = e.order_id.clone();
    f.site = e.site.clone();
    f.actor = e.actor.clone();
    f.serial = e.serial.clone();
    f.rot_id = e.rot_id.clone();
    f
}

impl Analysis {
    /// A fresh analysis.
    pub fn new(ctx: AuditContext, field: Option<FieldIndex>) -> Self {
        Self {
            ctx,
            orders: Vec::new(),
            order_index: HashMap::new(),
            devices: FpMap::default(),
            serial_fps: Vec::new(),
            key_fps: Vec::new(),
            findings: Findings::default(),
            refusals: RefusalAcc::default(),
            ledger: LedgerSummary::default(),
            by_kind: BTreeMap::new(),
            field,
        }
    }

    fn order_slot(&mut self, id: &str) -> u32 {
        if let Some(i) = self.order_index.get(id) {
            return *i;
        }
        let i = u32::try_from(self.orders.len()).unwrap_or(NO_ORDER - 1);
        self.orders.push(OrderState {
            summary: OrderSummary {
                order_id: id.to_owned(),
                ..OrderSummary::default()
            },
            ..OrderState::default()
        });
        self.order_index.insert(id.to_owned(), i);
        i
    }

    /// Processes entry `seq` from its exact stored bytes. Returns a
    /// certificate to check, if the entry recorded one.
    pub fn observe(&mut self, seq: u64, bytes: &[u8]) -> Option<CertJob> {
        match v1::LedgerEntry::decode(bytes) {
            Ok(e) => self.observe_entry(&e),
            Err(err) => {
                self.ledger.entries += 1;
                let mut f = Finding::new(
                    FindingKind::UndecodableEntry,
                    format!("entry does not decode: {err}"),
                );
                f.entries = vec![seq];
                self.findings.push(f);
                None
            }
        }
    }

    /// Processes one decoded entry (the verifier decodes each entry once
    /// and hands it over). Returns a certificate to check, if the entry
    /// recorded one.
    pub fn observe_entry(&mut self, entry: &v1::LedgerEntry) -> Option<CertJob> {
        self.ledger.entries += 1;
        *self.by_kind.entry(entry.kind).or_insert(0) += 1;
        self.ledger.first_ms.get_or_insert(entry.time_ms);
        self.ledger.last_ms = Some(entry.time_ms);
        let kind = EventKind::try_from(entry.kind).unwrap_or(EventKind::Unspecified);
        let order = if entry.order_id.is_empty() {
            NO_ORDER
        } else {
            self.order_slot(&entry.order_id)
        };
        let mut job = None;
        let mut operation_is_claim = false;
        match kind {
            EventKind::OrderOpened => self.order_opened(entry, order),
            EventKind::OrderClosed => {
                if let Some(o) = self.orders.get_mut(order as usize) {
                    o.closed_seq.get_or_insert(entry.seq);
                    o.summary.closed = true;
                }
            }
            EventKind::Certified => job = self.certified(entry, order),
            _ => {
                if let Some(name) = refusal_kind(kind) {
                    let payload =
                        v1::RejectedPayload::decode(entry.payload.as_slice()).unwrap_or_default();
                    operation_is_claim = payload.operation == "claim";
                    self.refusals.add(entry, name, &payload);
                    if let Some(o) = self.orders.get_mut(order as usize) {
                        match kind {
                            EventKind::DuplicateRejected => o.summary.duplicate_rejected += 1,
                            EventKind::CounterfeitRejected => o.summary.counterfeit_rejected += 1,
                            EventKind::QuotaRejected => o.summary.quota_rejected += 1,
                            _ => {}
                        }
                    }
                }
            }
        }
        if !entry.rot_id.is_empty() && is_device_event(kind) {
            let (fp, tag) = rot_key(&entry.rot_id);
            let refusal = matches!(
                kind,
                EventKind::DuplicateRejected | EventKind::QuotaRejected
            );
            let state = if refusal {
                self.devices.get_mut(&fp)
            } else {
                Some(self.devices.entry(fp).or_insert(DeviceState {
                    tag,
                    ..DeviceState::default()
                }))
            };
            if let Some(state) = state {
                if state.tag != tag {
                    // Two RoTs share a fingerprint: replay both exactly.
                    state.flags |= flag::MULTI;
                }
                let found = state.step(kind, order, entry.time_ms, operation_is_claim);
                if found & (anomaly::DUP_CLAIM | anomaly::DUP_ROT) != 0 {
                    state.flags |= flag::MULTI;
                }
                if found & anomaly::NO_CLAIM != 0 {
                    state.flags |= flag::A_NO_CLAIM;
                }
                if found & anomaly::CUSTODY != 0 {
                    state.flags |= flag::A_CUSTODY;
                }
                if found & anomaly::AFTER_SCRAP != 0 {
                    state.flags |= flag::A_AFTER_SCRAP;
                }
            }
        }
        job
    }

    fn order_opened(&mut self, entry: &v1::LedgerEntry, order: u32) {
        let Some(o) = self.orders.get_mut(order as usize) else {
            let f = finding_at(
                FindingKind::OrderSignatureInvalid,
                "order opening names no order".into(),
                entry,
            );
            self.findings.push(f);
            return;
        };
        if o.opened_seq.is_some() {
            // The first opening stands; the ledger's `order` unique key
            // keeps a second one out of any ledger the line wrote.
            return;
        }
        o.opened_seq = Some(entry.seq);
        o.summary.opened_entry = Some(entry.seq);
        match verify_order(entry, &self.ctx.order_key) {
            Ok((po, terms)) => {
                o.summary.sku = po.sku;
                o.summary.site = po.site;
                o.summary.authorised = Some(po.quantity);
                o.summary.signature_valid = true;
                o.summary.not_before_ms = po.not_before_ms;
                o.summary.not_after_ms = po.not_after_ms;
                o.terms = Some(terms);
            }
            Err(why) => {
                o.summary.site = entry.site.clone();
                let f = finding_at(
                    FindingKind::OrderSignatureInvalid,
                    format!(
                        "order {} is not authorised by the oem order key: {why}",
                        entry.order_id
                    ),
                    entry,
                );
                self.findings.push(f);
            }
        }
    }

    fn certified(&mut self, entry: &v1::LedgerEntry, order: u32) -> Option<CertJob> {
        let payload = match v1::CertifiedPayload::decode(entry.payload.as_slice()) {
            Ok(p) => p,
            Err(e) => {
                self.findings.push(finding_at(
                    FindingKind::UndecodableEntry,
                    format!("certified payload does not decode: {e}"),
                    entry,
                ));
                return None;
            }
        };
        self.serial_fps.push(serial_fp(&entry.serial));
        self.key_fps.push(key_fp(&payload.device_public_key));
        if let Some(field) = &mut self.field {
            field.observe_recorded(
                entry.seq,
                &payload.certificate,
                &entry.serial,
                &payload.device_public_key,
            );
        }
        let mut found = Vec::new();
        match self.orders.get_mut(order as usize) {
            None => found.push((
                FindingKind::CertifiedWithoutValidOrder,
                "device certified under no order".to_owned(),
            )),
            Some(o) => {
                o.summary.certified += 1;
                match (&o.terms, o.opened_seq) {
                    (_, None) => found.push((
                        FindingKind::CertifiedWithoutValidOrder,
                        format!(
                            "order {} was not opened before this certification",
                            entry.order_id
                        ),
                    )),
                    (None, Some(_)) => found.push((
                        FindingKind::CertifiedWithoutValidOrder,
                        format!(
                            "order {} is not authorised by the oem order key",
                            entry.order_id
                        ),
                    )),
                    (Some(t), Some(_)) => {
                        if entry.time_ms < t.not_before_ms || entry.time_ms >= t.not_after_ms {
                            found.push((
                                FindingKind::CertifiedOutsideWindow,
                                format!(
                                    "certified at {} ms, outside order {}'s window [{}, {})",
                                    entry.time_ms, entry.order_id, t.not_before_ms, t.not_after_ms
                                ),
                            ));
                        }
                        if let Some(closed) = o.closed_seq {
                            found.push((
                                FindingKind::CertifiedAfterClose,
                                format!("order {} was closed by entry {closed}", entry.order_id),
                            ));
                        }
                        if entry.site != t.site {
                            found.push((
                                FindingKind::CertifiedAtWrongSite,
                                format!(
                                    "certified at site {:?}; order {} is for site {:?}",
                                    entry.site, entry.order_id, t.site
                                ),
                            ));
                        }
                        if t.serials.parse(&entry.serial).is_none() {
                            found.push((
                                FindingKind::SerialOutsideScheme,
                                format!(
                                    "serial {:?} is not in order {}'s serial scheme",
                                    entry.serial, entry.order_id
                                ),
                            ));
                        }
                        if o.summary.certified > t.quantity {
                            o.excess_count += 1;
                            if o.excess.len() < MAX_EXCESS_LISTED {
                                o.excess.push(entry.seq);
                            }
                        }
                    }
                }
            }
        }
        for (kind, message) in found {
            self.findings.push(finding_at(kind, message, entry));
        }
        Some(CertJob {
            seq: entry.seq,
            time_ms: entry.time_ms,
            der: payload.certificate,
            serial: entry.serial.clone(),
            rot_id: entry.rot_id.clone(),
            spki: payload.device_public_key,
            site: entry.site.clone(),
            actor: entry.actor.clone(),
            order_id: entry.order_id.clone(),
        })
    }

    /// Ends the first pass: tallies orders, finds suspects, and plans the
    /// second pass (`None` when nothing needs an exact look).
    pub fn finish_pass1(&mut self) -> Option<Resolver> {
        for o in &mut self.orders {
            if o.excess_count > 0 {
                let t = o.summary.authorised.unwrap_or(0);
                let mut f = Finding::new(
                    FindingKind::OverQuota,
                    format!(
                        "order {} certified {} devices but authorised {t}: {} over quota",
                        o.summary.order_id, o.summary.certified, o.excess_count
                    ),
                );
                f.entries = o.excess.clone();
                f.order_id = o.summary.order_id.clone();
                f.site = o.summary.site.clone();
                self.findings.push(f);
            }
        }
        let mut serials = repeated(&mut self.serial_fps);
        let mut keys = repeated(&mut self.key_fps);
        self.serial_fps = Vec::new();
        self.key_fps = Vec::new();
        let last_ms = self.ledger.last_ms.unwrap_or(0);
        let grace = self.ctx.in_flight_grace_ms;
        // Devices to replay exactly, and which findings to emit for them.
        let mut replay: FpMap<u8> = FpMap::default();
        let mut selected: BTreeMap<FindingKind, usize> = BTreeMap::new();
        let mut counted_only: BTreeMap<FindingKind, u64> = BTreeMap::new();
        let mut suspects = FpSet::default();
        for (fp, s) in &self.devices {
            if s.has(flag::MULTI) {
                suspects.insert(*fp);
                replay.insert(*fp, emit::ALL);
                continue;
            }
            let st = standing(*s, last_ms, grace);
            if let Some(o) = self.orders.get_mut(s.order as usize) {
                tally(&mut o.summary, *s, st);
            }
            let wanted = [
                (
                    s.has(flag::A_NO_CLAIM),
                    FindingKind::CertifiedWithoutClaim,
                    emit::NO_CLAIM,
                ),
                (
                    s.has(flag::A_CUSTODY),
                    FindingKind::CustodyWithoutCertificate,
                    emit::CUSTODY,
                ),
                (
                    s.has(flag::A_AFTER_SCRAP),
                    FindingKind::ShippedAfterScrapped,
                    emit::AFTER_SCRAP,
                ),
                (
                    st == Standing::Gap,
                    FindingKind::ClaimedNotCertified,
                    emit::GAP,
                ),
            ];
            for (present, kind, bit) in wanted {
                if !present {
                    continue;
                }
                let n = selected.entry(kind).or_insert(0);
                if *n < MAX_EXAMPLES_PER_KIND {
                    *n += 1;
                    *replay.entry(*fp).or_insert(0) |= bit;
                } else {
                    *counted_only.entry(kind).or_insert(0) += 1;
                }
            }
        }
        for (kind, n) in counted_only {
            *self.findings.counts.entry(kind).or_insert(0) += n;
        }
        let exact_budget = MAX_EXACT_SUSPECTS;
        let mut by_fingerprint_only = 0u64;
        for (set, kind) in [
            (&mut serials, FindingKind::DuplicateSerial),
            (&mut keys, FindingKind::DuplicateDeviceKey),
        ] {
            if set.len() > exact_budget {
                let extra: Vec<Fp> = set.iter().copied().skip(exact_budget).collect();
                for fp in extra {
                    set.remove(&fp);
                    by_fingerprint_only += 1;
                    *self.findings.counts.entry(kind).or_insert(0) += 1;
                }
            }
        }
        if replay.is_empty() && serials.is_empty() && keys.is_empty() {
            return None;
        }
        Some(Resolver {
            replay,
            suspects,
            serials,
            keys,
            exact: HashMap::new(),
            serial_hits: HashMap::new(),
            key_hits: HashMap::new(),
            by_fingerprint_only,
        })
    }

    /// Ends the audit: applies the second pass (if any) and builds the
    /// report's parts.
    pub fn finish(mut self, resolver: Option<Resolver>, extra: Findings) -> Outcome {
        let last_ms = self.ledger.last_ms.unwrap_or(0);
        let grace = self.ctx.in_flight_grace_ms;
        let mut exact_states: HashMap<String, DeviceState> = HashMap::new();
        if let Some(r) = resolver {
            r.finish(&mut self, last_ms, grace, &mut exact_states);
        }
        for (kind, n) in extra.counts {
            *self.findings.counts.entry(kind).or_insert(0) += n;
        }
        let kept: BTreeMap<FindingKind, usize> =
            self.findings
                .items
                .iter()
                .fold(BTreeMap::new(), |mut m, f| {
                    *m.entry(f.kind).or_insert(0) += 1;
                    m
                });
        let mut room = kept;
        for f in extra.items {
            let n = room.entry(f.kind).or_insert(0);
            if *n < MAX_EXAMPLES_PER_KIND {
                *n += 1;
                self.findings.items.push(f);
            }
        }
        let field = self
            .field
            .take()
            .map(|field| self.field_findings(&field, &exact_states));
        // Ledger order; findings about field sightings (no entry) last.
        let at = |f: &Finding| (f.entries.first().copied().unwrap_or(u64::MAX), f.kind);
        self.findings.items.sort_by_key(at);
        self.ledger.by_kind = self
            .by_kind
            .iter()
            .map(|(k, n)| {
                let name = EventKind::try_from(*k)
                    .map(|k| k.as_str_name().trim_start_matches("EVENT_KIND_").to_owned())
                    .unwrap_or_else(|_| format!("KIND_{k}"));
                (name, *n)
            })
            .collect();
        let mut orders: Vec<OrderSummary> = self.orders.into_iter().map(|o| o.summary).collect();
        orders.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        Outcome {
            ledger: self.ledger,
            orders,
            refusals: self.refusals.finish(),
            field,
            findings: self.findings,
        }
    }

    fn field_findings(
        &mut self,
        field: &FieldIndex,
        exact: &HashMap<String, DeviceState>,
    ) -> super::report::FieldSummary {
        let mut summary = super::report::FieldSummary {
            unreadable_files: field.unreadable.clone(),
            ..Default::default()
        };
        for s in field.sightings() {
            summary.certificates += 1;
            let f = |kind: FindingKind, message: String, entries: Vec<u64>| {
                let mut f = Finding::new(kind, message);
                f.entries = entries;
                f.serial = s.cert.serial.clone();
                f.rot_id = s.cert.rot_id.clone().unwrap_or_default();
                f.file = s.file.clone();
                f
            };
            if let Some(seq) = s.recorded_entry {
                summary.recorded += 1;
                let state = s.cert.rot_id.as_deref().and_then(|rot| {
                    exact
                        .get(rot)
                        .copied()
                        .or_else(|| self.devices.get(&rot_fp(rot)).copied())
                });
                if state.is_some_and(|st| st.has(flag::SCRAPPED)) {
                    summary.scrapped += 1;
                    self.findings.push(f(
                        FindingKind::FieldScrapped,
                        format!(
                            "certificate of a device recorded as scrapped seen in the field ({})",
                            s.file
                        ),
                        vec![seq],
                    ));
                }
                continue;
            }
            if !s.clashes.is_empty() || s.clashes_with_sighting {
                summary.clones += 1;
                self.findings.push(f(
                    FindingKind::FieldClone,
                    format!(
                        "unrecorded certificate carries a serial or key of another certificate{} ({})",
                        if s.clashes.is_empty() { "" } else { " recorded in the ledger" },
                        s.file
                    ),
                    s.clashes.clone(),
                ));
                continue;
            }
            summary.unrecorded += 1;
            let how = if s.issued_by_oem_ca {
                summary.issued_by_oem_ca_unrecorded += 1;
                "it chains to the oem ca: the ca key signed a device outside the line"
            } else {
                "it does not chain to the oem ca"
            };
            self.findings.push(f(
                FindingKind::FieldUnrecorded,
                format!(
                    "certificate seen in the field was never recorded; {how} ({})",
                    s.file
                ),
                Vec::new(),
            ));
        }
        summary
    }
}

/// Which findings a replayed device emits (bit mask).
mod emit {
    pub(super) const NO_CLAIM: u8 = 1 << 0;
    pub(super) const CUSTODY: u8 = 1 << 1;
    pub(super) const AFTER_SCRAP: u8 = 1 << 2;
    pub(super) const GAP: u8 = 1 << 3;
    pub(super) const DUPLICATES: u8 = 1 << 4;
    pub(super) const ALL: u8 = 0xff;
}

/// The parts of the report the analysis produces.
#[derive(Debug)]
pub struct Outcome {
    /// Ledger summary (verification fields filled by the caller).
    pub ledger: LedgerSummary,
    /// Every order.
    pub orders: Vec<OrderSummary>,
    /// Refusals.
    pub refusals: Refusals,
    /// Field sightings.
    pub field: Option<super::report::FieldSummary>,
    /// Findings.
    pub findings: Findings,
}

// ------------------------------------------------------------------ pass 2

#[derive(Debug, Clone)]
struct Hit {
    seq: u64,
    time_ms: i64,
    site: String,
    actor: String,
    order_id: String,
    serial: String,
    rot_id: String,
}

impl Hit {
    fn of(e: &v1::LedgerEntry) -> Self {
        Self {
            seq: e.seq,
            time_ms: e.time_ms,
            site: e.site.clone(),
            actor: e.actor.clone(),
            order_id: e.order_id.clone(),
            serial: e.serial.clone(),
            rot_id: e.rot_id.clone(),
        }
    }
}

#[derive(Debug)]
struct ExactDevice {
    fp: Fp,
    emit: u8,
    state: DeviceState,
    claim: Option<Hit>,
    cert: Option<u64>,
    scrap: Option<u64>,
}

/// The second pass: exact values for the suspects.
#[derive(Debug)]
pub struct Resolver {
    replay: FpMap<u8>,
    suspects: FpSet,
    serials: FpSet,
    keys: FpSet,
    exact: HashMap<String, ExactDevice>,
    serial_hits: HashMap<String, Vec<Hit>>,
    key_hits: HashMap<Vec<u8>, Vec<Hit>>,
    by_fingerprint_only: u64,
}

impl Resolver {
    /// Suspect fingerprints that could not be examined exactly.
    pub fn counted_by_fingerprint_only(&self) -> u64 {
        self.by_fingerprint_only
    }

    /// Processes an entry again; `analysis` supplies the order table and
    /// takes the findings.
    pub fn observe_entry(&mut self, analysis: &mut Analysis, entry: &v1::LedgerEntry) {
        let kind = EventKind::try_from(entry.kind).unwrap_or(EventKind::Unspecified);
        if kind == EventKind::Certified {
            if self.serials.contains(&serial_fp(&entry.serial)) {
                self.serial_hits
                    .entry(entry.serial.clone())
                    .or_default()
                    .push(Hit::of(entry));
            }
            if !self.keys.is_empty() {
                if let Ok(p) = v1::CertifiedPayload::decode(entry.payload.as_slice()) {
                    if self.keys.contains(&key_fp(&p.device_public_key)) {
                        self.key_hits
                            .entry(p.device_public_key)
                            .or_default()
                            .push(Hit::of(entry));
                    }
                }
            }
        }
        if entry.rot_id.is_empty() || !is_device_event(kind) {
            return;
        }
        let fp = rot_fp(&entry.rot_id);
        let Some(emit_bits) = self.replay.get(&fp).copied() else {
            return;
        };
        let refusal = matches!(
            kind,
            EventKind::DuplicateRejected | EventKind::QuotaRejected
        );
        if refusal && !self.exact.contains_key(&entry.rot_id) {
            return;
        }
        let operation_is_claim = refusal
            && v1::RejectedPayload::decode(entry.payload.as_slice())
                .is_ok_and(|p| p.operation == "claim");
        let order = if entry.order_id.is_empty() {
            NO_ORDER
        } else {
            analysis
                .order_index
                .get(&entry.order_id)
                .copied()
                .unwrap_or(NO_ORDER)
        };
        let d = self
            .exact
            .entry(entry.rot_id.clone())
            .or_insert_with(|| ExactDevice {
                fp,
                emit: emit_bits,
                state: DeviceState::default(),
                claim: None,
                cert: None,
                scrap: None,
            });
        let found = d.state.step(kind, order, entry.time_ms, operation_is_claim);
        let mut out = Vec::new();
        let earlier = |seq: Option<u64>| seq.into_iter().chain([entry.seq]).collect::<Vec<_>>();
        if found & anomaly::DUP_CLAIM != 0 && d.emit & emit::DUPLICATES != 0 {
            out.push((
                FindingKind::DuplicateClaim,
                "rot claimed more than once".to_owned(),
                earlier(d.claim.as_ref().map(|h| h.seq)),
            ));
        }
        if found & anomaly::DUP_ROT != 0 && d.emit & emit::DUPLICATES != 0 {
            out.push((
                FindingKind::DuplicateRot,
                "rot certified more than once".to_owned(),
                earlier(d.cert),
            ));
        }
        if found & anomaly::NO_CLAIM != 0 && d.emit & emit::NO_CLAIM != 0 {
            let why = match &d.claim {
                Some(c) => format!(
                    "its rot was claimed under order {}, not {}",
                    c.order_id, entry.order_id
                ),
                None => "its rot was never claimed".to_owned(),
            };
            out.push((
                FindingKind::CertifiedWithoutClaim,
                format!("device certified but {why}"),
                vec![entry.seq],
            ));
        }
        if found & anomaly::CUSTODY != 0 && d.emit & emit::CUSTODY != 0 {
            out.push((
                FindingKind::CustodyWithoutCertificate,
                format!(
                    "{} recorded for a device that was not certified",
                    kind.as_str_name()
                        .trim_start_matches("EVENT_KIND_")
                        .to_lowercase()
                ),
                vec![entry.seq],
            ));
        }
        if found & anomaly::AFTER_SCRAP != 0 && d.emit & emit::AFTER_SCRAP != 0 {
            out.push((
                FindingKind::ShippedAfterScrapped,
                format!(
                    "{} recorded after the device was scrapped",
                    kind.as_str_name()
                        .trim_start_matches("EVENT_KIND_")
                        .to_lowercase()
                ),
                earlier(d.scrap),
            ));
        }
        match kind {
            EventKind::Claimed if d.claim.is_none() => d.claim = Some(Hit::of(entry)),
            EventKind::Certified if d.cert.is_none() => d.cert = Some(entry.seq),
            EventKind::Scrapped if d.scrap.is_none() => d.scrap = Some(entry.seq),
            _ => {}
        }
        for (k, message, entries) in out {
            let mut f = finding_at(k, message, entry);
            f.entries = entries;
            analysis.findings.push(f);
        }
    }

    fn finish(
        self,
        analysis: &mut Analysis,
        last_ms: i64,
        grace: i64,
        exact_states: &mut HashMap<String, DeviceState>,
    ) {
        for (rot_id, d) in self.exact {
            let st = standing(d.state, last_ms, grace);
            if self.suspects.contains(&d.fp) {
                if let Some(o) = analysis.orders.get_mut(d.state.order as usize) {
                    tally(&mut o.summary, d.state, st);
                }
            }
            if st == Standing::Gap && d.emit & emit::GAP != 0 {
                if let Some(c) = &d.claim {
                    let mut f = Finding::new(
                        FindingKind::ClaimedNotCertified,
                        format!(
                            "rot claimed under order {} but never certified, refused or scrapped",
                            c.order_id
                        ),
                    );
                    f.entries = vec![c.seq];
                    f.time_ms = Some(c.time_ms);
                    f.order_id = c.order_id.clone();
                    f.site = c.site.clone();
                    f.actor = c.actor.clone();
                    f.rot_id = rot_id.clone();
                    analysis.findings.push(f);
                }
            }
            exact_states.insert(rot_id, d.state);
        }
        let groups = self
            .serial_hits
            .into_iter()
            .map(|(v, h)| (FindingKind::DuplicateSerial, format!("serial {v:?}"), h))
            .chain(self.key_hits.into_values().map(|h| {
                (
                    FindingKind::DuplicateDeviceKey,
                    "one device key".to_owned(),
                    h,
                )
            }));
        for (kind, what, hits) in groups {
            if hits.len() < 2 {
                continue;
            }
            let mut sites: Vec<&str> = hits.iter().map(|h| h.site.as_str()).collect();
            sites.sort_unstable();
            sites.dedup();
            let mut f = Finding::new(
                kind,
                format!(
                    "{what} is on {} certified devices (sites {})",
                    hits.len(),
                    sites.join(", ")
                ),
            );
            f.entries = hits.iter().map(|h| h.seq).collect();
            f.time_ms = hits.first().map(|h| h.time_ms);
            f.site = sites.join(",");
            let first = &hits[0];
            f.order_id = first.order_id.clone();
            f.actor = first.actor.clone();
            f.serial = first.serial.clone();
            f.rot_id = first.rot_id.clone();
            analysis.findings.push(f);
        }
    }
}
