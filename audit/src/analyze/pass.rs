//! The first pass ([`Analysis`]): each verified entry in ledger order
//! updates the bounded per-order and per-device state, and certificates go
//! out as [`CertJob`]s.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use trustline_proto::v1::{self, EventKind};

use super::*;
use crate::field::FieldIndex;
use crate::fingerprint::{key_fp, rot_key, serial_fp, Fp, FpMap};
use crate::report::{Finding, FindingKind, Findings, LedgerSummary, OrderSummary};

/// The first pass.
pub struct Analysis {
    pub(super) ctx: AuditContext,
    pub(super) orders: Vec<OrderState>,
    pub(super) order_index: HashMap<String, u32>,
    pub(super) devices: FpMap<DeviceState>,
    pub(super) serial_fps: Vec<Fp>,
    pub(super) key_fps: Vec<Fp>,
    pub(super) findings: Findings,
    pub(super) refusals: RefusalAcc,
    pub(super) ledger: LedgerSummary,
    pub(super) by_kind: BTreeMap<i32, u64>,
    pub(super) field: Option<FieldIndex>,
}

pub(super) fn finding_at(kind: FindingKind, message: String, e: &v1::LedgerEntry) -> Finding {
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

    pub(super) fn order_slot(&mut self, id: &str) -> u32 {
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

    pub(super) fn order_opened(&mut self, entry: &v1::LedgerEntry, order: u32) {
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
                o.summary.site = terms.sites();
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

    pub(super) fn certified(&mut self, entry: &v1::LedgerEntry, order: u32) -> Option<CertJob> {
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
                        let share = t.share(&entry.site);
                        if share.is_none() {
                            found.push((
                                FindingKind::CertifiedAtWrongSite,
                                format!(
                                    "certified at site {:?}; order {} is for site {:?}",
                                    entry.site,
                                    entry.order_id,
                                    t.sites()
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
                        // A site's ledger holds its own certifications:
                        // over its share is over (invariant 4).
                        if o.summary.certified > share.unwrap_or(t.quantity) {
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
}
