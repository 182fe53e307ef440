//! Ownership transfers (2.4.14.7): registering a transfer an owner made
//! offline by extending the voucher, and the record every transfer leaves
//! (the OEM's first transfer is [`crate::manufacturer`]).
//!
//! A transfer is recorded as `OWNERSHIP_TRANSFERRED` with the new entry's
//! salted commitment, its index and its hash — never the owner key in clear
//! (entry 0 also carries its seal) — holding `voucher-entry` →
//! `rot_id/index` and the device's next `device-field`. A voucher entry
//! signed by the HSM reaches the caller only once that record is durable
//! (invariant 1). A device in service cannot change hands until it is
//! decommissioned with a user reset (2.4.16.7); a scrapped or retired
//! device cannot change hands at all.

use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::Voucher;

use backends::{append_request, AppendRefusal};

use crate::checks::voucher_error;
use crate::error::{Error, Result};
use crate::records::{draft, Witness};
use crate::state::{field_key, voucher_entry_key, DeviceRecord, FieldState};
use crate::{Ownership, TransferOutcome};

/// The `rot_id` a voucher names, if it decodes (for recording a refusal;
/// no trust implied).
pub(crate) fn rot_hint(voucher: &[u8]) -> Option<String> {
    Voucher::decode(voucher)
        .ok()
        .map(|v| v.header().rot_id.clone())
}

impl Ownership {
    /// Registers a transfer its owner made offline: the voucher's last entry
    /// is new, every earlier one must be exactly what the ledger recorded.
    /// Registering the same voucher again returns the recorded transfer.
    ///
    /// # Errors
    /// [`Error::Invalid`] / [`Error::BadSignature`] (malformed, forged or
    /// reordered entries, another device's header), [`Error::NotOwner`] (an
    /// entry signed by someone other than the owner before it),
    /// [`Error::TransferRecorded`] (a fork: another entry is recorded at that
    /// index), [`Error::VoucherStale`] (cut back, or several unregistered
    /// entries), [`Error::Lifecycle`] (in service: no user reset yet),
    /// [`Error::UnknownDevice`], [`Error::Scrapped`], [`Error::Retired`],
    /// [`Error::Concurrent`], [`Error::Backend`]. Refusals are recorded.
    ///
    /// An FDO 1.1 voucher ([`crate::fdo::is_fdo_voucher`]) is registered
    /// by [`crate::fdo`]'s rules: its FDO-only entries are recorded, and
    /// [`Error::FdoHeader`], [`Error::FdoUnbound`], [`Error::FdoGuidReused`]
    /// are among its refusals.
    pub async fn register_transfer(&self, actor: &str, voucher: &[u8]) -> Result<TransferOutcome> {
        if crate::fdo::is_fdo_voucher(voucher) {
            return self.register_fdo_transfer(actor, voucher).await;
        }
        match self.next_transfer(actor, voucher).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self
                .refused(
                    rot_hint(voucher).as_deref(),
                    actor,
                    "register-transfer",
                    Witness::voucher(voucher),
                    e,
                )
                .await),
        }
    }

    async fn next_transfer(&self, actor: &str, voucher: &[u8]) -> Result<TransferOutcome> {
        let rot_id = Voucher::decode(voucher)
            .map_err(voucher_error)?
            .header()
            .rot_id
            .clone();
        let record = self.record(&rot_id).await?;
        check_open(&record)?;
        let Some(last) = record.transfers.last() else {
            return Err(Error::VoucherStale(
                "no transfer from the manufacturer is recorded for this device: the oem makes the first transfer".into(),
            ));
        };
        let checked = self.check_voucher(&record, voucher)?;
        let recorded = record.transfers.len();
        if checked.verified.entries.len() == recorded {
            // A retry of a registration that was recorded.
            Self::check_recorded(&record, &checked, 0)?;
            return Ok(TransferOutcome {
                voucher: voucher.to_vec(),
                ledger_seq: last.seq,
                owner_commitment: last.commitment.clone(),
                replayed: true,
                fdo_voucher: vec![],
            });
        }
        Self::check_recorded(&record, &checked, 1)?;
        if record.state == FieldState::InService {
            return Err(Error::Lifecycle {
                rot_id: record.rot_id.clone(),
                state: record.state.name(),
                why: "decommission it with the device's user-reset proof before its ownership changes (2.4.16.7)",
            });
        }
        let entry = &checked.verified.entries[recorded];
        let commitment = entry.owner_commitment().to_vec();
        let ledger_seq = self
            .record_transfer(
                actor,
                &record,
                recorded,
                commitment.clone(),
                entry.entry_sha256.to_vec(),
                vec![],
            )
            .await?;
        Ok(TransferOutcome {
            voucher: voucher.to_vec(),
            ledger_seq,
            owner_commitment: commitment,
            replayed: false,
            fdo_voucher: vec![],
        })
    }

    /// Appends `OWNERSHIP_TRANSFERRED` for voucher entry `index` (with the
    /// entry's seal for one the OEM signed). When another request won the
    /// race for the same keys, the same entry is a retry (its record is
    /// returned), a different one a fork.
    pub(crate) async fn record_transfer(
        &self,
        actor: &str,
        record: &DeviceRecord,
        index: usize,
        owner_commitment: Vec<u8>,
        entry_sha256: Vec<u8>,
        sealed_entry: Vec<u8>,
    ) -> Result<u64> {
        let payload = v1::OwnershipPayload {
            owner_commitment,
            voucher_entry_index: u32::try_from(index)
                .map_err(|_| Error::Invalid("voucher entry index out of range".into()))?,
            voucher_entry_sha256: entry_sha256.clone(),
            sealed_entry,
        };
        let entry = draft(
            EventKind::OwnershipTransferred,
            &record.rot_id,
            &record.serial,
            actor,
            &payload,
        );
        let keys = vec![
            voucher_entry_key(&record.rot_id, index),
            field_key(&record.rot_id, record.field_events),
        ];
        match self.append(append_request(entry, keys, None)).await {
            Ok(r) => Ok(r.seq),
            Err(AppendRefusal::Conflict { .. }) => {
                let now = self.record(&record.rot_id).await?;
                match now.transfers.get(index) {
                    Some(t) if t.entry_sha256 == entry_sha256 => Ok(t.seq),
                    Some(t) => Err(Error::TransferRecorded {
                        rot_id: record.rot_id.clone(),
                        index,
                        holder_seq: t.seq,
                    }),
                    None => Err(Error::Concurrent(record.rot_id.clone())),
                }
            }
            Err(AppendRefusal::Quota { .. }) => Err(Error::Config("quota on a transfer".into())),
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }
}

/// A scrapped or retired device cannot change hands, be onboarded or take
/// any further lifecycle step.
pub(crate) fn check_open(record: &DeviceRecord) -> Result<()> {
    if record.scrapped.is_some() {
        return Err(Error::Scrapped(record.rot_id.clone()));
    }
    if record.state == FieldState::Retired {
        return Err(Error::Retired(record.rot_id.clone()));
    }
    Ok(())
}
