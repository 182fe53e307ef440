//! Outage backlogs: a site's mirrored entries summed into the batches the
//! witness cosigned together, and the tail it has not cosigned yet (the
//! rule is in the parent module's doc; 2.4.14.20).

use custody_ledger::entry::check_stored;
use hub::store::HubStore;
use hub::CosignedPoint;
use prost::Message;
use trustline_proto::v1::{EventKind, RejectedPayload};

use super::{store_error, Backlog, HubAuditOptions, OfflineSummary, ALLOWANCE_REASON, CHUNK};
use crate::error::{Error, Result};

/// One batch being summed.
#[derive(Default)]
struct Batch {
    from: u64,
    certified: u64,
    allowance_refused: u64,
    first_ms: Option<i64>,
}

/// Sums a site's entries, in order, into cosignature batches and the
/// uncosigned tail (see the module doc).
struct Batcher<'a> {
    points: std::iter::Peekable<std::slice::Iter<'a, CosignedPoint>>,
    batch: Batch,
    out: OfflineSummary,
    threshold_ms: i64,
    now_ms: i64,
    seq: u64,
}

impl<'a> Batcher<'a> {
    fn new(points: &'a [CosignedPoint], outage_after_secs: u64, now_ms: i64) -> Self {
        Self {
            points: points.iter().peekable(),
            batch: Batch::default(),
            out: OfflineSummary {
                outage_after_secs,
                cosignatures: points.len() as u64,
                ..OfflineSummary::default()
            },
            threshold_ms: i64::try_from(outage_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            now_ms,
            seq: 0,
        }
    }

    /// The next entry: its time, whether it is a `CERTIFIED` one, whether
    /// it is an allowance refusal.
    fn observe(&mut self, time_ms: i64, certified: bool, allowance: bool) {
        self.out.offline_refused += u64::from(allowance);
        if self.points.peek().is_some() {
            self.batch.first_ms.get_or_insert(time_ms);
            self.batch.certified += u64::from(certified);
            self.batch.allowance_refused += u64::from(allowance);
        } else {
            self.out.uncosigned_entries += 1;
            self.out.uncosigned_certified += u64::from(certified);
            if self.out.uncosigned_entries == 1 {
                self.out.uncosigned_for_secs =
                    Some(u64::try_from((self.now_ms - time_ms) / 1000).unwrap_or(0));
            }
        }
        self.seq += 1;
        // Every point this entry completes closes the batch (sizes are
        // distinct and increasing; an empty batch closes to nothing).
        while let Some(p) = self.points.next_if(|p| p.size <= self.seq) {
            self.close(*p);
            self.batch = Batch {
                from: self.seq,
                ..Batch::default()
            };
        }
    }

    fn close(&mut self, point: CosignedPoint) {
        let Some(first_ms) = self.batch.first_ms else {
            return;
        };
        let cosigned_ms = i64::try_from(point.time.saturating_mul(1000)).unwrap_or(i64::MAX);
        let wait_ms = cosigned_ms.saturating_sub(first_ms).max(0);
        if wait_ms > self.threshold_ms || self.batch.allowance_refused > 0 {
            self.out.offline_certified += self.batch.certified;
            self.out.backlogs.push(Backlog {
                from: self.batch.from,
                to: point.size,
                certified: self.batch.certified,
                allowance_refused: self.batch.allowance_refused,
                first_entry_ms: first_ms,
                cosigned_at: point.time,
                wait_secs: u64::try_from(wait_ms / 1000).unwrap_or(0),
            });
        }
    }

    /// The summary, or an error when a cosigned size lies beyond the
    /// entries seen.
    fn finish(mut self, site: &str) -> Result<OfflineSummary> {
        if let Some(p) = self.points.peek() {
            return Err(Error::Config(format!(
                "site {site}: the hub cosigned size {} but mirrors only {} entries",
                p.size, self.seq
            )));
        }
        Ok(self.out)
    }
}

pub(super) fn offline(
    store: &dyn HubStore,
    site: &str,
    size: u64,
    points: &[CosignedPoint],
    options: &HubAuditOptions,
) -> Result<OfflineSummary> {
    let mut batcher = Batcher::new(points, options.outage_after_secs, options.now_ms);
    let mut seq = 0u64;
    while seq < size {
        let chunk = store
            .entries(site, seq, (seq + CHUNK).min(size))
            .map_err(|e| store_error(&format!("site {site}"), e))?;
        if chunk.is_empty() {
            return Err(Error::Config(format!(
                "site {site}'s mirror ends at {seq}, its watermark says {size}"
            )));
        }
        for bytes in chunk {
            let entry = check_stored(seq, &bytes)
                .map_err(|e| Error::Config(format!("site {site}'s mirrored entry {seq}: {e}")))?;
            let certified = entry.kind == EventKind::Certified as i32;
            let allowance = entry.kind == EventKind::QuotaRejected as i32
                && RejectedPayload::decode(entry.payload.as_slice())
                    .is_ok_and(|p| p.reason.starts_with(ALLOWANCE_REASON));
            batcher.observe(entry.time_ms, certified, allowance);
            seq += 1;
        }
    }
    batcher.finish(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(size: u64, time: u64) -> CosignedPoint {
        CosignedPoint {
            size,
            time,
            root: [0; 32],
        }
    }

    /// Outage backlogs (2.4.14.20): a batch that waited beyond the
    /// threshold, or that holds an allowance refusal, is one; a prompt
    /// batch is not; the tail after the last cosignature is counted apart.
    #[test]
    fn backlogs_are_batches_that_waited_or_hit_the_allowance() {
        let points = [point(3, 10), point(6, 200), point(8, 210), point(9, 211)];
        let mut b = Batcher::new(&points, 60, 300_000);
        // Batch [0, 3): cosigned promptly.
        for t in [9_000, 9_500, 9_900] {
            b.observe(t, true, false);
        }
        // Batch [3, 6): the hub was away for three minutes.
        for t in [20_000, 21_000, 22_000] {
            b.observe(t, true, false);
        }
        // Batch [6, 8): prompt, but the site spent its allowance.
        b.observe(205_000, true, false);
        b.observe(206_000, false, true);
        // Batch [8, 9): prompt.
        b.observe(210_500, true, false);
        // Not cosigned yet.
        b.observe(250_000, true, false);
        b.observe(251_000, false, false);
        let out = b.finish("s").unwrap_or_else(|e| panic!("{e}"));
        let spans: Vec<(u64, u64, u64, u64)> = out
            .backlogs
            .iter()
            .map(|b| (b.from, b.to, b.certified, b.allowance_refused))
            .collect();
        assert_eq!(spans, [(3, 6, 3, 0), (6, 8, 1, 1)]);
        assert_eq!(out.backlogs[0].wait_secs, 180);
        assert_eq!(out.offline_certified, 4);
        assert_eq!(out.offline_refused, 1);
        assert_eq!(out.uncosigned_entries, 2);
        assert_eq!(out.uncosigned_certified, 1);
        assert_eq!(out.uncosigned_for_secs, Some(50));
        assert_eq!(out.cosignatures, 4);

        // A cosigned size beyond the entries is an error, not a figure.
        let mut short = Batcher::new(&points, 60, 0);
        short.observe(1, true, false);
        assert!(short.finish("s").is_err());
    }
}
