//! The field lifecycle over the ledger (2.4.16.4, 2.4.16.7, 2.4.14.23/24):
//! a one-way state machine whose every step needs the current owner's
//! authorization and the device's signed proof.
//!
//! ```text
//! Certified ─onboard→ InService ─decommission→ Decommissioned
//!     │                  ↑                          │
//!     │                  └──────recommission────────┤   (new owner only)
//!     └──────────────── retire ─────────────────────┴──→ Retired (final)
//! ```
//!
//! - `Decommission` (in service → decommissioned): the owner's authorization
//!   and the device's `ResetProof` reporting the decommissioned state over
//!   the same challenge — the user data is erased before the device leaves
//!   its owner (2.4.16.7).
//! - `Recommission` (decommissioned → in service): the voucher extended by
//!   the decommissioning owner to the new owner (the transfer is recorded
//!   here if it was not registered yet), the new owner's authorization and
//!   a fresh `ResetProof` reporting the in-service state. Recommissioning
//!   for the same owner is refused: the step exists to hand a wiped device
//!   over.
//! - `Retire` (from any state but retired): the owner's authorization and a
//!   `ResetProof` reporting the retired state (2.4.14.24: data erased);
//!   records `RETIRED` with the certificate serial, holding the next
//!   `revocation` key, and re-signs the CRL. Nothing moves a retired device:
//!   later transfers, onboarding and steps are refused.
//!
//! A reset proof must carry a reset counter beyond every one recorded for
//! the device, so a proof is never accepted twice, even were a challenge to
//! repeat.

use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::Voucher;
use x509_parser::prelude::{FromDer, X509Certificate};

use backends::keys::{self, unique};
use backends::{append_request, now_ms, AppendRefusal};

use crate::challenges::Action;
use crate::checks::voucher_error;
use crate::error::{Error, Result};
use crate::records::{draft, Progress, Witness};
use crate::state::{field_key, DeviceRecord, FieldState};
use crate::transfer::check_open;
use crate::{LifecycleOutcome, Ownership, StepRequest};

/// Attempts at claiming the next revocation index when other retirements
/// race for it.
const REVOCATION_ATTEMPTS: usize = 16;

/// A step whose challenge was spent and whose device is known and open.
pub(super) struct BegunStep {
    /// The device.
    pub(super) record: DeviceRecord,
    /// The challenge the request answers.
    pub(super) challenge: Vec<u8>,
    /// The owner authorization (signature not yet checked).
    pub(super) authorization: v1::SignedStatement,
}

impl Ownership {
    /// The checks every step by the recorded current owner shares: the
    /// voucher is the device's and holds no unrecorded transfer, and its
    /// last key signed the challenge for `action` (2.4.14.7).
    pub(super) fn check_current_owner(
        &self,
        step: &BegunStep,
        request: &StepRequest,
        action: Action,
    ) -> Result<()> {
        let record = &step.record;
        let checked = self.check_voucher(record, &request.voucher)?;
        Self::check_recorded(record, &checked, 0)?;
        Self::check_authorization(
            &step.authorization,
            &checked,
            &record.rot_id,
            &step.challenge,
            action,
            &request.voucher,
        )
    }

    /// [`Self::check_current_owner`], then the device's proof of a user
    /// reset into `target` (2.4.16.7). Returns the reset proof to record.
    fn check_owner_and_reset(
        &self,
        step: &BegunStep,
        request: &StepRequest,
        action: Action,
        target: v1::DeviceLifecycle,
    ) -> Result<v1::SignedStatement> {
        self.check_current_owner(step, request, action)?;
        self.check_reset_proof(
            &step.record,
            request.device_proof.as_ref(),
            &step.challenge,
            target,
        )
    }

    /// Takes a device out of service after a user reset.
    ///
    /// # Errors
    /// As [`Ownership::onboard`], with [`Error::ResetRequired`] for a
    /// missing or invalid reset proof instead of the identity checks.
    pub async fn decommission(
        &self,
        actor: &str,
        request: &StepRequest,
    ) -> Result<LifecycleOutcome> {
        let progress = Progress::default();
        match self.decommission_checked(actor, request, &progress).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self
                .refused(
                    request.rot_hint().as_deref(),
                    actor,
                    "decommission",
                    Witness::step(request, &progress),
                    e,
                )
                .await),
        }
    }

    /// Returns a decommissioned device to service for a new owner.
    ///
    /// # Errors
    /// As [`Ownership::decommission`].
    pub async fn recommission(
        &self,
        actor: &str,
        request: &StepRequest,
    ) -> Result<LifecycleOutcome> {
        let progress = Progress::default();
        match self.recommission_checked(actor, request, &progress).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self
                .refused(
                    request.rot_hint().as_deref(),
                    actor,
                    "recommission",
                    Witness::step(request, &progress),
                    e,
                )
                .await),
        }
    }

    /// Retires a device for good and revokes its certificate.
    ///
    /// # Errors
    /// As [`Ownership::decommission`].
    pub async fn retire(&self, actor: &str, request: &StepRequest) -> Result<LifecycleOutcome> {
        let progress = Progress::default();
        match self.retire_checked(actor, request, &progress).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self
                .refused(
                    request.rot_hint().as_deref(),
                    actor,
                    "retire",
                    Witness::step(request, &progress),
                    e,
                )
                .await),
        }
    }

    /// Spends the request's challenge and loads its device: every step
    /// starts here, so a replayed challenge is refused before anything else
    /// and no challenge survives its first presentation.
    pub(super) async fn begin_step(
        &self,
        request: &StepRequest,
        action: Action,
        progress: &Progress,
    ) -> Result<BegunStep> {
        let rot_id = Voucher::decode(&request.voucher)
            .map_err(voucher_error)?
            .header()
            .rot_id
            .clone();
        let authorization = request
            .owner_authorization
            .clone()
            .ok_or_else(|| Error::Invalid("owner_authorization is missing".into()))?;
        let named: v1::OwnerAuthorization = statement::decode_unverified(&authorization)?;
        self.challenges
            .take(&named.challenge, &rot_id, action, now_ms())?;
        progress.challenge_spent(&named.challenge);
        let record = self.record(&rot_id).await?;
        check_open(&record)?;
        Ok(BegunStep {
            record,
            challenge: named.challenge,
            authorization,
        })
    }

    async fn decommission_checked(
        &self,
        actor: &str,
        request: &StepRequest,
        progress: &Progress,
    ) -> Result<LifecycleOutcome> {
        let step = self
            .begin_step(request, Action::Decommission, progress)
            .await?;
        let record = &step.record;
        if record.state != FieldState::InService {
            return Err(Error::Lifecycle {
                rot_id: record.rot_id.clone(),
                state: record.state.name(),
                why: "only a device in service can be decommissioned",
            });
        }
        let proof = self.check_owner_and_reset(
            &step,
            request,
            Action::Decommission,
            v1::DeviceLifecycle::Decommissioned,
        )?;
        let ledger_seq = self
            .record_step(
                actor,
                record,
                EventKind::Decommissioned,
                proof,
                String::new(),
            )
            .await?;
        Ok(LifecycleOutcome {
            rot_id: record.rot_id.clone(),
            state: FieldState::Decommissioned,
            ledger_seq,
        })
    }

    async fn recommission_checked(
        &self,
        actor: &str,
        request: &StepRequest,
        progress: &Progress,
    ) -> Result<LifecycleOutcome> {
        let step = self
            .begin_step(request, Action::Recommission, progress)
            .await?;
        let record = &step.record;
        if record.state != FieldState::Decommissioned {
            return Err(Error::Lifecycle {
                rot_id: record.rot_id.clone(),
                state: record.state.name(),
                why: "only a decommissioned device can be recommissioned",
            });
        }
        self.check_not_duplicated(record).await?;
        let checked = self.check_voucher(record, &request.voucher)?;
        let recorded = record.transfers.len();
        let new_transfer = checked.verified.entries.len() > recorded;
        Self::check_recorded(record, &checked, usize::from(new_transfer))?;
        if !new_transfer && !record.transferred_since_state_change() {
            return Err(Error::Lifecycle {
                rot_id: record.rot_id.clone(),
                state: record.state.name(),
                why:
                    "recommissioning is for a new owner: extend the voucher to the new owner first",
            });
        }
        Self::check_authorization(
            &step.authorization,
            &checked,
            &record.rot_id,
            &step.challenge,
            Action::Recommission,
            &request.voucher,
        )?;
        let proof = self.check_reset_proof(
            record,
            request.device_proof.as_ref(),
            &step.challenge,
            v1::DeviceLifecycle::InService,
        )?;
        let record = if new_transfer {
            let entry = &checked.verified.entries[recorded];
            self.record_transfer(
                actor,
                record,
                recorded,
                entry.owner_commitment().to_vec(),
                entry.entry_sha256.to_vec(),
                vec![],
            )
            .await?;
            // The step below must follow the transfer just recorded.
            let now = self.record(&record.rot_id).await?;
            if now.transfers.len() != recorded + 1 || now.state != FieldState::Decommissioned {
                return Err(Error::Concurrent(record.rot_id.clone()));
            }
            now
        } else {
            step.record.clone()
        };
        let ledger_seq = self
            .record_step(
                actor,
                &record,
                EventKind::Recommissioned,
                proof,
                String::new(),
            )
            .await?;
        Ok(LifecycleOutcome {
            rot_id: record.rot_id.clone(),
            state: FieldState::InService,
            ledger_seq,
        })
    }

    async fn retire_checked(
        &self,
        actor: &str,
        request: &StepRequest,
        progress: &Progress,
    ) -> Result<LifecycleOutcome> {
        let step = self.begin_step(request, Action::Retire, progress).await?;
        let record = &step.record;
        let proof = self.check_owner_and_reset(
            &step,
            request,
            Action::Retire,
            v1::DeviceLifecycle::Retired,
        )?;
        let serial = certificate_serial(record)?;
        let ledger_seq = self
            .record_step(
                actor,
                record,
                EventKind::Retired,
                proof,
                hex::encode(serial),
            )
            .await?;
        // The ledger is the truth; a CRL that cannot be signed now is
        // signed on the next request for it.
        if let Err(e) = self.revocations.current(self.ledger.as_ref()).await {
            tracing::warn!(error = %e, "crl not re-signed after a retirement");
        }
        Ok(LifecycleOutcome {
            rot_id: record.rot_id.clone(),
            state: FieldState::Retired,
            ledger_seq,
        })
    }

    /// Appends a lifecycle entry holding the device's next `device-field`
    /// (and for `RETIRED` the next `revocation` index, counted by the
    /// `revocations` quota counter).
    pub(super) async fn record_step(
        &self,
        actor: &str,
        record: &DeviceRecord,
        kind: EventKind,
        device_proof: v1::SignedStatement,
        revoked_certificate_serial: String,
    ) -> Result<u64> {
        let payload = v1::LifecyclePayload {
            device_proof: Some(device_proof),
            owner_commitment: record
                .owner_commitment()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            revoked_certificate_serial,
        };
        let field = field_key(&record.rot_id, record.field_events);
        let retiring = kind == EventKind::Retired;
        for _ in 0..REVOCATION_ATTEMPTS {
            let mut keys = vec![field.clone()];
            let mut quota = None;
            if retiring {
                let k = self
                    .ledger
                    .get_quota(keys::REVOCATIONS.to_owned())
                    .await
                    .map_err(Error::ledger)?;
                keys.push(unique(keys::REVOCATION, k.to_string().into_bytes()));
                quota = Some(v1::QuotaUse {
                    counter: keys::REVOCATIONS.to_owned(),
                    limit: u64::MAX,
                });
            }
            let entry = draft(kind, &record.rot_id, &record.serial, actor, &payload);
            match self.append(append_request(entry, keys, quota)).await {
                Ok(r) => return Ok(r.seq),
                Err(AppendRefusal::Conflict { key, .. }) => {
                    let lost_revocation_race = match key {
                        Some(k) => k.namespace == keys::REVOCATION,
                        None => {
                            retiring
                                && crate::state::lookup(self.ledger.as_ref(), field.clone())
                                    .await?
                                    .is_none()
                        }
                    };
                    if !lost_revocation_race {
                        return Err(Error::Concurrent(record.rot_id.clone()));
                    }
                }
                Err(AppendRefusal::Quota { .. }) => {
                    return Err(Error::Config("the revocations counter is exhausted".into()))
                }
                Err(AppendRefusal::Failed(s)) => return Err(Error::ledger(s)),
            }
        }
        Err(Error::Concurrent(record.rot_id.clone()))
    }
}

/// The device certificate's serial number (big-endian, no leading zeros).
pub(super) fn certificate_serial(record: &DeviceRecord) -> Result<Vec<u8>> {
    let (_, cert) =
        X509Certificate::from_der(&record.certificate).map_err(|e| Error::CorruptEntry {
            seq: record.certified_seq,
            reason: format!("the certified certificate does not parse: {e}"),
        })?;
    let raw = cert.tbs_certificate.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    if start == raw.len() {
        return Err(Error::CorruptEntry {
            seq: record.certified_seq,
            reason: "the certified certificate has a zero serial".into(),
        });
    }
    Ok(raw[start..].to_vec())
}
