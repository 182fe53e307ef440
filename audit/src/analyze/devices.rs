//! Per-device state of the first pass: 16 bytes per RoT fingerprint —
//! claim and certification order, custody flags, claim time — and how a
//! device's standing is tallied into its order's summary.

use trustline_proto::v1::EventKind;

use crate::report::OrderSummary;

/// Device flags.
pub(super) mod flag {
    pub(in crate::analyze) const CLAIMED: u16 = 1 << 0;
    pub(in crate::analyze) const CERTIFIED: u16 = 1 << 1;
    pub(in crate::analyze) const LEFT_SITE: u16 = 1 << 2;
    pub(in crate::analyze) const SCRAPPED: u16 = 1 << 3;
    pub(in crate::analyze) const REFUSED: u16 = 1 << 4;
    /// Claimed or certified twice: replayed exactly in the second pass.
    pub(in crate::analyze) const MULTI: u16 = 1 << 5;
    /// Certified without a claim under the same order.
    pub(in crate::analyze) const A_NO_CLAIM: u16 = 1 << 8;
    /// Custody event before certification.
    pub(in crate::analyze) const A_CUSTODY: u16 = 1 << 9;
    /// Custody event after scrapping.
    pub(in crate::analyze) const A_AFTER_SCRAP: u16 = 1 << 10;
}

/// Anomalies one event can show (bit mask).
pub(super) mod anomaly {
    pub(in crate::analyze) const DUP_CLAIM: u8 = 1 << 0;
    pub(in crate::analyze) const DUP_ROT: u8 = 1 << 1;
    pub(in crate::analyze) const NO_CLAIM: u8 = 1 << 2;
    pub(in crate::analyze) const CUSTODY: u8 = 1 << 3;
    pub(in crate::analyze) const AFTER_SCRAP: u8 = 1 << 4;
}

/// No order.
pub(super) const NO_ORDER: u32 = u32::MAX;

/// What the audit remembers about one device: 16 bytes (24 with its key
/// in the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceState {
    pub(super) order: u32,
    pub(super) claimed_s: u32,
    /// 32 more bits of the RoT's hash: two RoTs whose 64-bit fingerprints
    /// collide are told apart here (and replayed exactly), so that one
    /// device's history is never silently merged into another's unless 96
    /// bits collide.
    pub(super) tag: u32,
    pub(super) flags: u16,
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
    pub(super) fn has(self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Applies one event; returns the anomalies it shows. The same machine
    /// runs in both passes, so they cannot disagree.
    pub(super) fn step(
        &mut self,
        kind: EventKind,
        order: u32,
        time_ms: i64,
        operation_is_claim: bool,
    ) -> u8 {
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
pub(super) fn is_device_event(kind: EventKind) -> bool {
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
pub(super) enum Standing {
    Certified,
    Refused,
    ScrappedUncertified,
    InFlight,
    Gap,
    Unclaimed,
}

pub(super) fn standing(s: DeviceState, last_ms: i64, grace_ms: i64) -> Standing {
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

pub(super) fn tally(o: &mut OrderSummary, s: DeviceState, st: Standing) {
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
