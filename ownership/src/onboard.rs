//! Onboarding (2.4.14.18): the current owner puts an authentic, certified
//! device in service.
//!
//! The onboarding policy, checked in this order, every check before anything
//! is appended:
//! 1. the challenge is one this service issued for this device and step, not
//!    expired, never used (it is spent by this request whatever follows);
//! 2. the device is certified, not scrapped, not retired (its certificate
//!    revoked), never onboarded (a decommissioned device is recommissioned
//!    instead), and not quarantined: a `DUPLICATE_REJECTED` entry naming its
//!    `rot_id` means a second die presented this identity at the factory, so
//!    which of the two was certified is in doubt — until the OEM lifts that
//!    quarantine ([`crate::quarantine`]);
//! 3. the voucher is the certified device's, verifies from the OEM voucher
//!    key, and holds exactly the recorded transfers;
//! 4. the owner authorization is signed by the voucher's current owner for
//!    this device, challenge, step and voucher;
//! 5. the device's chain is its certified certificate under the site
//!    intermediate and the OEM root, and the device signs the challenge with
//!    the certified identity key — a clone holding copied public data but
//!    not the key fails here.
//!
//! Then `ONBOARDED` is recorded with the device's identity proof and the
//! owner's commitment (never the owner key). A refusal is recorded only
//! when the request carried the current owner's or the device's signature
//! ([`crate::records`]).

use trustline_proto::v1::EventKind;

use crate::challenges::Action;
use crate::error::{Error, Result};
use crate::records::{Progress, Witness};
use crate::state::FieldState;
use crate::{LifecycleOutcome, Ownership, StepRequest};

impl Ownership {
    /// Onboards a device for its current owner (see the module doc).
    ///
    /// # Errors
    /// [`Error::ChallengeRefused`], [`Error::UnknownDevice`],
    /// [`Error::Scrapped`], [`Error::Retired`], [`Error::Lifecycle`],
    /// [`Error::Duplicated`], [`Error::Invalid`], [`Error::BadSignature`],
    /// [`Error::NotOwner`], [`Error::VoucherStale`],
    /// [`Error::TransferRecorded`], [`Error::NotAuthentic`],
    /// [`Error::Concurrent`], [`Error::Backend`]. Refusals are recorded.
    pub async fn onboard(&self, actor: &str, request: &StepRequest) -> Result<LifecycleOutcome> {
        let progress = Progress::default();
        match self.onboard_checked(actor, request, &progress).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self
                .refused(
                    request.rot_hint().as_deref(),
                    actor,
                    "onboard",
                    Witness::step(request, &progress),
                    e,
                )
                .await),
        }
    }

    async fn onboard_checked(
        &self,
        actor: &str,
        request: &StepRequest,
        progress: &Progress,
    ) -> Result<LifecycleOutcome> {
        let step = self.begin_step(request, Action::Onboard, progress).await?;
        let record = &step.record;
        match record.state {
            FieldState::Certified => {}
            FieldState::InService => {
                return Err(Error::Lifecycle {
                    rot_id: record.rot_id.clone(),
                    state: record.state.name(),
                    why: "it is already onboarded",
                })
            }
            FieldState::Decommissioned | FieldState::Retired => {
                return Err(Error::Lifecycle {
                    rot_id: record.rot_id.clone(),
                    state: record.state.name(),
                    why: "a decommissioned device returns to service by recommissioning for its new owner",
                })
            }
        }
        self.check_not_duplicated(record).await?;
        self.check_current_owner(&step, request, Action::Onboard)?;
        self.check_device_chain(record, &request.device_chain)?;
        let proof =
            Self::check_identity_proof(record, request.device_proof.as_ref(), &step.challenge)?;
        let ledger_seq = self
            .record_step(actor, record, EventKind::Onboarded, proof, String::new())
            .await?;
        Ok(LifecycleOutcome {
            rot_id: record.rot_id.clone(),
            state: FieldState::InService,
            ledger_seq,
        })
    }
}
