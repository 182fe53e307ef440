//! Refusals seen in the ledger: counts by site and station, an hourly
//! histogram (rebucketed for the chart), and the latest few.

use std::collections::{BTreeMap, HashMap, VecDeque};

use trustline_proto::v1::{self, EventKind};

use super::*;
use crate::report::{RefusalEvent, RefusalGroup, Refusals, TimeBucket, MAX_LISTED_REFUSALS};

#[derive(Debug, Default)]
pub(super) struct RefusalAcc {
    pub(super) groups: HashMap<(&'static str, String, String), RefusalGroup>,
    pub(super) hours: BTreeMap<i64, [u64; 3]>,
    pub(super) recent: VecDeque<RefusalEvent>,
}

pub(super) fn refusal_kind(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::DuplicateRejected => Some("duplicate"),
        EventKind::CounterfeitRejected => Some("counterfeit"),
        EventKind::QuotaRejected => Some("quota"),
        EventKind::RequestRejected => Some("request"),
        _ => None,
    }
}

impl RefusalAcc {
    pub(super) fn add(
        &mut self,
        e: &v1::LedgerEntry,
        kind: &'static str,
        payload: &v1::RejectedPayload,
    ) {
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

    pub(super) fn finish(self) -> Refusals {
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
pub(super) fn rebucket(hours: &BTreeMap<i64, [u64; 3]>) -> (Vec<TimeBucket>, i64) {
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
