//! The OEM's transfer to a device's first owner (2.4.14.7; issue 12 items
//! 1 and 10): the only way voucher entry 0 is made.
//!
//! `TransferFromManufacturer` is the OEM's step — the role table gives it
//! to `admin` alone; a station never names an owner (`Certify` signs no
//! entry). In order:
//! 1. the voucher is the certified device's manufacturer voucher (no
//!    entries, the header rebuilt from `CERTIFIED` byte for byte), the
//!    device is neither scrapped nor retired;
//! 2. if a first transfer is already recorded, the request is a retry or a
//!    second sale: the recorded entry is recovered from its seal (below)
//!    and returned as it was, with `replayed`, when it names the same
//!    owner key (either encoding); any other owner gets `ALREADY_EXISTS`;
//! 3. if the device's production order carries `first_owner_commitment`,
//!    the key and the salt in the request must open it
//!    ([`trustline_proto::voucher::first_owner_commitment`]), else
//!    `PERMISSION_DENIED` and nothing is signed;
//! 4. the CA signs entry 0 with the OEM voucher key and seals it under the
//!    OEM seal key (AES-256-GCM in the HSM, bound to the rot_id and index
//!    0); the ledger records `OWNERSHIP_TRANSFERRED` with the commitment,
//!    the entry's hash and the seal — ciphertext only, so the ledger still
//!    holds no owner key (invariant 6) — and only then is the voucher
//!    returned (invariant 1);
//! 5. for a device whose FDO header the factory bound, the CA then signs
//!    the FDO twin of the recorded entry 0 and the FDO voucher is returned
//!    beside it (issue 17, [`crate::fdo`]); a retry signs the twin again.
//!
//! Entry 0 is therefore never lost: after a lost response, a restart or a
//! crash, the retry returns the very bytes signed the first time. A seal
//! that does not open, or opens to an entry whose hash is not the recorded
//! one, is `DATA_LOSS`: the service never signs a replacement, which would
//! be a second entry 0 for the same device.

use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::{first_entry_payload, first_owner_commitment, Voucher};

use crate::checks::voucher_error;
use crate::error::{Error, Result};
use crate::records::Witness;
use crate::state::{self, DeviceRecord, Transfer};
use crate::transfer::{check_open, rot_hint};
use crate::{sha256, Ownership, TransferOutcome};

/// What `TransferFromManufacturer` asks for.
#[derive(Debug, Clone, Default)]
pub struct FirstTransfer {
    /// The manufacturer voucher (no entries), CBOR.
    pub voucher: Vec<u8>,
    /// The first owner's SubjectPublicKeyInfo DER (either point encoding).
    pub next_owner_public_key: Vec<u8>,
    /// The salt that opens the order's first-owner commitment, if it has
    /// one.
    pub first_owner_salt: Vec<u8>,
}

impl Ownership {
    /// The OEM transfers a certified device to its first owner (see the
    /// module doc).
    ///
    /// # Errors
    /// [`Error::Invalid`] (malformed voucher, key or salt, a voucher with
    /// entries, a header that is not the certified one),
    /// [`Error::FirstOwnerMismatch`], [`Error::UnknownDevice`],
    /// [`Error::Scrapped`], [`Error::Retired`], [`Error::TransferRecorded`]
    /// (another first owner is recorded), [`Error::SealBroken`],
    /// [`Error::Concurrent`], [`Error::Backend`]. Refusals are recorded.
    pub async fn transfer_from_manufacturer(
        &self,
        actor: &str,
        request: &FirstTransfer,
    ) -> Result<TransferOutcome> {
        match self.first_transfer(actor, request).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self
                .refused(
                    rot_hint(&request.voucher).as_deref(),
                    actor,
                    "transfer-from-manufacturer",
                    Witness::Oem,
                    e,
                )
                .await),
        }
    }

    async fn first_transfer(
        &self,
        actor: &str,
        request: &FirstTransfer,
    ) -> Result<TransferOutcome> {
        let decoded = Voucher::decode(&request.voucher).map_err(voucher_error)?;
        if !decoded.is_empty() {
            return Err(Error::Invalid(
                "the voucher already has entries: later transfers are registered with RegisterTransfer".into(),
            ));
        }
        let next_owner =
            trustline_proto::ecdsa::canonical_p256_spki(&request.next_owner_public_key)
                .map_err(|e| Error::Invalid(format!("next owner key: {e}")))?;
        let record = self.record(&decoded.header().rot_id).await?;
        check_open(&record)?;
        let manufacturer = self.check_voucher(&record, &request.voucher)?.voucher;
        if let Some(first) = record.transfers.first() {
            return self
                .replay_first(&record, first, manufacturer, &next_owner)
                .await;
        }
        self.check_first_owner(&record, &next_owner, &request.first_owner_salt)
            .await?;
        let payload = first_entry_payload(manufacturer.header(), &next_owner)?;
        let signed = self
            .ca
            .sign_sealed_voucher_entry(payload, record.rot_id.clone(), 0)
            .await
            .map_err(Error::ca)?;
        if signed.sealed_entry.is_empty() {
            return Err(Error::Config(
                "the ca returned voucher entry 0 without its sealed copy".into(),
            ));
        }
        let mut voucher = manufacturer.clone();
        let entry = voucher
            .push_entry(&signed.cose_sign1)
            .map_err(|e| Error::Config(format!("the ca's voucher entry does not verify: {e}")))?;
        let commitment = entry.owner_commitment().to_vec();
        let recorded = self
            .record_transfer(
                actor,
                &record,
                0,
                commitment.clone(),
                sha256(&signed.cose_sign1),
                signed.sealed_entry,
            )
            .await;
        match recorded {
            Ok(ledger_seq) => {
                // Entry 0 is recorded: its FDO twin may be signed and
                // released (invariant 1).
                let fdo_voucher = self
                    .fdo_first_voucher(&record, &signed.cose_sign1, &next_owner)
                    .await?;
                Ok(TransferOutcome {
                    voucher: voucher.encode(),
                    ledger_seq,
                    owner_commitment: commitment,
                    replayed: false,
                    fdo_voucher,
                })
            }
            // Another request recorded entry 0 first: the entry signed here
            // is dropped unreleased, and the recorded one answers — when it
            // names this owner.
            Err(Error::TransferRecorded { .. }) => {
                let now = self.record(&record.rot_id).await?;
                let first = now
                    .transfers
                    .first()
                    .ok_or_else(|| Error::Concurrent(record.rot_id.clone()))?;
                self.replay_first(&now, first, manufacturer, &next_owner)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// Answers a first transfer whose entry 0 is recorded: the recorded
    /// entry, recovered from its seal and checked against the recorded hash
    /// and commitment, when it names `next_owner`.
    async fn replay_first(
        &self,
        record: &DeviceRecord,
        first: &Transfer,
        manufacturer: Voucher,
        next_owner: &[u8],
    ) -> Result<TransferOutcome> {
        let taken = || Error::TransferRecorded {
            rot_id: record.rot_id.clone(),
            index: 0,
            holder_seq: first.seq,
        };
        if first.sealed_entry.is_empty() {
            // Recorded without a seal (at certification, before issue 12):
            // nothing to compare against, so no retry can be answered.
            return Err(taken());
        }
        let broken = |reason: String| Error::SealBroken {
            rot_id: record.rot_id.clone(),
            index: 0,
            seq: first.seq,
            reason,
        };
        let cose = match self
            .ca
            .unseal_voucher_entry(record.rot_id.clone(), 0, first.sealed_entry.clone())
            .await
        {
            Ok(cose) => cose,
            Err(status) if status.code() == Code::DataLoss => {
                return Err(broken(status.message().to_owned()))
            }
            Err(status) => return Err(Error::ca(status)),
        };
        if sha256(&cose) != first.entry_sha256 {
            return Err(broken(
                "the seal opens to an entry that is not the recorded one".into(),
            ));
        }
        let mut voucher = manufacturer;
        let entry = voucher
            .push_entry(&cose)
            .map_err(|e| broken(format!("the recovered entry does not verify: {e}")))?;
        if entry.owner_commitment().as_slice() != first.commitment.as_slice() {
            return Err(broken(
                "the recovered entry does not open the recorded commitment".into(),
            ));
        }
        if entry.next_owner_public_key != next_owner {
            return Err(taken());
        }
        let fdo_voucher = self.fdo_first_voucher(record, &cose, next_owner).await?;
        Ok(TransferOutcome {
            voucher: voucher.encode(),
            ledger_seq: first.seq,
            owner_commitment: first.commitment.clone(),
            replayed: true,
            fdo_voucher,
        })
    }

    /// Refuses a first owner the device's order does not commit to, when it
    /// commits to one (issue 12 item 1).
    async fn check_first_owner(
        &self,
        record: &DeviceRecord,
        next_owner: &[u8],
        salt: &[u8],
    ) -> Result<()> {
        let order = self.order_of(record).await?;
        if order.first_owner_commitment.is_empty() {
            return Ok(());
        }
        if salt.is_empty() {
            return Err(Error::FirstOwnerMismatch(format!(
                "order {} commits to a first owner: name it with the salt that opens the commitment",
                order.order_id
            )));
        }
        let salt = <&[u8; trustline_proto::voucher::FIRST_OWNER_SALT_LEN]>::try_from(salt)
            .map_err(|_| {
                Error::Invalid(format!(
                    "first_owner_salt has {} bytes, expected {}",
                    salt.len(),
                    trustline_proto::voucher::FIRST_OWNER_SALT_LEN
                ))
            })?;
        let opened = first_owner_commitment(salt, next_owner)?;
        if opened.as_slice() != order.first_owner_commitment.as_slice() {
            return Err(Error::FirstOwnerMismatch(format!(
                "the key and salt do not open the first-owner commitment of order {}",
                order.order_id
            )));
        }
        Ok(())
    }

    /// The production order a device was certified under, as its
    /// `ORDER_OPENED` entry recorded it (the factory verified its signature
    /// before recording it).
    async fn order_of(&self, record: &DeviceRecord) -> Result<v1::ProductionOrder> {
        let corrupt = |seq: u64, reason: String| Error::CorruptEntry { seq, reason };
        let Some(seq) = state::lookup(
            self.ledger.as_ref(),
            state::unique(backends::keys::ORDER, record.order_id.as_bytes().to_vec()),
        )
        .await?
        else {
            return Err(corrupt(
                record.certified_seq,
                format!(
                    "the certification names order {:?}, which the ledger never opened",
                    record.order_id
                ),
            ));
        };
        let entry = state::read_entry(self.ledger.as_ref(), seq).await?;
        if entry.kind != EventKind::OrderOpened as i32 || entry.order_id != record.order_id {
            return Err(corrupt(
                seq,
                "the order key does not lead to its opening".into(),
            ));
        }
        let payload = <v1::OrderOpenedPayload as prost::Message>::decode(entry.payload.as_slice())
            .map_err(|e| corrupt(seq, e.to_string()))?;
        let signed = payload
            .signed_order
            .ok_or_else(|| corrupt(seq, "order opening without its order".into()))?;
        trustline_proto::statement::decode_unverified::<v1::ProductionOrder>(&signed)
            .map_err(|e| corrupt(seq, e.to_string()))
    }
}
