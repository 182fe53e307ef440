//! Quarantine (2.4.14.18; issue 12 item 2): a device that a
//! `DUPLICATE_REJECTED` entry names is neither onboarded nor
//! recommissioned — another die presented its identity at the factory, so
//! which of the two was certified is in doubt — until the OEM, having
//! investigated, lifts it.
//!
//! `LiftQuarantine {rot_id, duplicate_seq, reason}` is the OEM's step (the
//! role table gives it to `admin` alone). It is refused, and records
//! nothing, when `duplicate_seq` is not a `DUPLICATE_REJECTED` entry naming
//! that device (`FAILED_PRECONDITION`, `not-quarantined`), when that
//! quarantine is already lifted (`ALREADY_EXISTS`, `quarantine-lifted`) or
//! when the reason is empty or too long (`INVALID_ARGUMENT`). Otherwise it
//! records `QUARANTINE_LIFTED` with
//! [`QuarantineLiftedPayload`](trustline_proto::v1::QuarantineLiftedPayload)
//! `{duplicate_seq, reason}`, chained to the device (its `rot_id`) and
//! holding the unique key `quarantine-lifted` → `duplicate_seq`, so each
//! duplicate is lifted at most once, also when two admins race. A device
//! is accepted again once every duplicate naming it is lifted; a duplicate
//! recorded later quarantines it again.

use std::collections::BTreeSet;

use backends::{append_request, keys, AppendRefusal};
use prost::Message;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};
use crate::records::draft;
use crate::state::{lookup, unique, DeviceRecord};
use crate::{check_rot_id, Ownership};

/// Longest reason recorded with a lifted quarantine, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// The outcome of a lifted quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineOutcome {
    /// The device.
    pub rot_id: String,
    /// The `QUARANTINE_LIFTED` entry.
    pub ledger_seq: u64,
    /// Duplicates naming the device that are still not lifted.
    pub quarantines_left: usize,
}

/// The duplicates naming a device and the ones lifted, from its history.
#[derive(Debug, Default)]
struct Quarantines {
    duplicates: BTreeSet<u64>,
    lifted: BTreeSet<u64>,
}

impl Quarantines {
    fn first_unlifted(&self) -> Option<u64> {
        self.duplicates.difference(&self.lifted).next().copied()
    }

    fn unlifted(&self) -> usize {
        self.duplicates.difference(&self.lifted).count()
    }
}

impl Ownership {
    /// Lifts the quarantine the `DUPLICATE_REJECTED` entry `duplicate_seq`
    /// put on `rot_id` (see the module doc). Refusals record nothing.
    ///
    /// # Errors
    /// [`Error::Invalid`] (malformed `rot_id`, empty or oversized reason),
    /// [`Error::NotQuarantined`], [`Error::QuarantineLifted`],
    /// [`Error::Backend`], [`Error::CorruptEntry`].
    pub async fn lift_quarantine(
        &self,
        actor: &str,
        rot_id: &str,
        duplicate_seq: u64,
        reason: &str,
    ) -> Result<QuarantineOutcome> {
        check_rot_id(rot_id)?;
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(Error::Invalid(format!(
                "the reason must say what the investigation found, in 1 to {MAX_REASON_LEN} bytes"
            )));
        }
        let not_quarantined = || Error::NotQuarantined {
            rot_id: rot_id.to_owned(),
            seq: duplicate_seq,
        };
        let duplicate = match self.ledger.get_entry(duplicate_seq).await {
            Ok(bytes) => {
                v1::LedgerEntry::decode(bytes.as_slice()).map_err(|e| Error::CorruptEntry {
                    seq: duplicate_seq,
                    reason: e.to_string(),
                })?
            }
            Err(s) if matches!(s.code(), Code::NotFound | Code::OutOfRange) => {
                return Err(not_quarantined())
            }
            Err(s) => return Err(Error::ledger(s)),
        };
        if duplicate.kind != EventKind::DuplicateRejected as i32 || duplicate.rot_id != rot_id {
            return Err(not_quarantined());
        }
        let key = unique(
            keys::QUARANTINE_LIFTED,
            duplicate_seq.to_string().into_bytes(),
        );
        if let Some(lifted_seq) = lookup(self.ledger.as_ref(), key.clone()).await? {
            return Err(Error::QuarantineLifted {
                seq: duplicate_seq,
                lifted_seq,
            });
        }
        let serial = self
            .devices
            .load(self.ledger.as_ref(), rot_id)
            .await?
            .map(|r| r.serial)
            .unwrap_or_default();
        let payload = v1::QuarantineLiftedPayload {
            duplicate_seq,
            reason: reason.to_owned(),
        };
        let entry = draft(
            EventKind::QuarantineLifted,
            rot_id,
            &serial,
            actor,
            &payload,
        );
        let ledger_seq = match self
            .append(append_request(entry, vec![key.clone()], None))
            .await
        {
            Ok(r) => r.seq,
            Err(AppendRefusal::Conflict { .. }) => {
                let lifted_seq = lookup(self.ledger.as_ref(), key).await?.unwrap_or_default();
                return Err(Error::QuarantineLifted {
                    seq: duplicate_seq,
                    lifted_seq,
                });
            }
            Err(AppendRefusal::Quota { .. }) => {
                return Err(Error::Config("quota on a lifted quarantine".into()))
            }
            Err(AppendRefusal::Failed(s)) => return Err(Error::ledger(s)),
        };
        let quarantines_left = self.quarantines(rot_id).await?.unlifted();
        Ok(QuarantineOutcome {
            rot_id: rot_id.to_owned(),
            ledger_seq,
            quarantines_left,
        })
    }

    /// Refuses a device whose identity another die presented at the factory
    /// (a `DUPLICATE_REJECTED` entry names its `rot_id`; 2.4.14.18) unless
    /// the OEM lifted every such quarantine.
    /// At the hub, also refuses a cross-site clone: a device whose serial,
    /// rot_id or device key another site certified too (issue 13 item 3):
    /// which site made the genuine one is in doubt.
    pub(crate) async fn check_not_duplicated(&self, record: &DeviceRecord) -> Result<()> {
        if let Some(registry) = &self.registry {
            if let Some(holders) = registry
                .cross_site_clone(record.rot_id.clone())
                .await
                .map_err(Error::ledger)?
            {
                return Err(Error::CrossSiteClone {
                    rot_id: record.rot_id.clone(),
                    holders,
                });
            }
        }
        match self.quarantines(&record.rot_id).await?.first_unlifted() {
            Some(seq) => Err(Error::Duplicated {
                rot_id: record.rot_id.clone(),
                seq,
            }),
            None => Ok(()),
        }
    }

    /// The duplicates naming `rot_id` and the lifted ones, from its
    /// history (which includes entries not yet covered by a checkpoint).
    async fn quarantines(&self, rot_id: &str) -> Result<Quarantines> {
        let history = self
            .reads
            .device_history(rot_id.to_owned())
            .await
            .map_err(Error::ledger)?;
        let mut found = Quarantines::default();
        for proven in history.entries {
            let Some(stored) = proven.entry else { continue };
            let entry = v1::LedgerEntry::decode(stored.entry.as_slice()).map_err(|e| {
                Error::CorruptEntry {
                    seq: stored.seq,
                    reason: e.to_string(),
                }
            })?;
            if entry.rot_id != rot_id {
                continue;
            }
            if entry.kind == EventKind::DuplicateRejected as i32 {
                found.duplicates.insert(stored.seq);
            } else if entry.kind == EventKind::QuarantineLifted as i32 {
                let p =
                    v1::QuarantineLiftedPayload::decode(entry.payload.as_slice()).map_err(|e| {
                        Error::CorruptEntry {
                            seq: stored.seq,
                            reason: e.to_string(),
                        }
                    })?;
                found.lifted.insert(p.duplicate_seq);
            }
        }
        Ok(found)
    }
}
