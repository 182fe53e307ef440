//! The second pass ([`Resolver`]): replays exactly — keyed by full values —
//! only the devices, serials and keys whose fingerprints repeat or whose
//! findings need details; its memory is bounded by the suspects.

use std::collections::HashMap;

use prost::Message;
use trustline_proto::v1::{self, EventKind};

use super::pass::*;
use super::*;
use crate::fingerprint::{key_fp, rot_fp, serial_fp, Fp, FpMap, FpSet};
use crate::report::{Finding, FindingKind};

#[derive(Debug, Clone)]
pub(super) struct Hit {
    pub(super) seq: u64,
    pub(super) time_ms: i64,
    pub(super) site: String,
    pub(super) actor: String,
    pub(super) order_id: String,
    pub(super) serial: String,
    pub(super) rot_id: String,
}

impl Hit {
    pub(super) fn of(e: &v1::LedgerEntry) -> Self {
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
pub(super) struct ExactDevice {
    pub(super) fp: Fp,
    pub(super) emit: u8,
    pub(super) state: DeviceState,
    pub(super) claim: Option<Hit>,
    pub(super) cert: Option<u64>,
    pub(super) scrap: Option<u64>,
}

/// The second pass: exact values for the suspects.
#[derive(Debug)]
pub struct Resolver {
    pub(super) replay: FpMap<u8>,
    pub(super) suspects: FpSet,
    pub(super) serials: FpSet,
    pub(super) keys: FpSet,
    pub(super) exact: HashMap<String, ExactDevice>,
    pub(super) serial_hits: HashMap<String, Vec<Hit>>,
    pub(super) key_hits: HashMap<Vec<u8>, Vec<Hit>>,
    pub(super) by_fingerprint_only: u64,
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

    pub(super) fn finish(
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
