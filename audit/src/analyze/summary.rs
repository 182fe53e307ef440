//! The end of the first pass: orders tallied, suspects found, the second
//! pass planned, and the findings and summaries the report gets.

use std::collections::{BTreeMap, HashMap};

use trustline_proto::v1::EventKind;

use super::pass::*;
use super::*;
use crate::field::FieldIndex;
use crate::fingerprint::{repeated, rot_fp, Fp, FpMap, FpSet};
use crate::report::{
    Finding, FindingKind, Findings, LedgerSummary, OrderSummary, Refusals, MAX_EXAMPLES_PER_KIND,
};

impl Analysis {
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

    pub(super) fn field_findings(
        &mut self,
        field: &FieldIndex,
        exact: &HashMap<String, DeviceState>,
    ) -> crate::report::FieldSummary {
        let mut summary = crate::report::FieldSummary {
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
pub(super) mod emit {
    pub(in crate::analyze) const NO_CLAIM: u8 = 1 << 0;
    pub(in crate::analyze) const CUSTODY: u8 = 1 << 1;
    pub(in crate::analyze) const AFTER_SCRAP: u8 = 1 << 2;
    pub(in crate::analyze) const GAP: u8 = 1 << 3;
    pub(in crate::analyze) const DUPLICATES: u8 = 1 << 4;
    pub(in crate::analyze) const ALL: u8 = 0xff;
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
    pub field: Option<crate::report::FieldSummary>,
    /// Findings.
    pub findings: Findings,
}
