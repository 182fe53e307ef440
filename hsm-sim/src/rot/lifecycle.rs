//! A device's lifecycle as its RoT enforces it: a one-way state machine
//! (2.4.16.4). Steps only go forward; the one loop is recommissioning, which
//! returns a decommissioned device to service for a new owner. Retirement is
//! final.
//!
//! ```text
//! Blank ─claim→ Claimed ─personalise→ Personalised ─enter service→ InService
//!                                          │                        │   ↑
//!                                          │              decommission  recommission
//!                                          │                        ↓   │
//!                                          │                     Decommissioned
//!                                          └──────── retire ────────┴──────→ Retired (final)
//! ```

use trustline_proto::v1;

use crate::Error;

/// Where a device is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Fresh from the IC vendor: no trust anchor installed.
    Blank,
    /// The OEM trust anchor is installed (one time only).
    Claimed,
    /// The identity key is in the RoT.
    Personalised,
    /// Onboarded and serving an owner.
    InService,
    /// Taken out of service after a user reset; waits for a new owner.
    Decommissioned,
    /// End of life; nothing moves it again.
    Retired,
}

/// A lifecycle step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Install the OEM trust anchor.
    Claim,
    /// Generate or install the identity key.
    Personalise,
    /// First onboarding by an owner.
    EnterService,
    /// Leave service (user data erased), 2.4.16.4/2.4.16.7.
    Decommission,
    /// Return to service for a new owner (user data erased again).
    Recommission,
    /// End of life (user data erased), 2.4.14.24.
    Retire,
}

impl Lifecycle {
    /// Every state, in order.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Blank,
        Lifecycle::Claimed,
        Lifecycle::Personalised,
        Lifecycle::InService,
        Lifecycle::Decommissioned,
        Lifecycle::Retired,
    ];

    /// The state after `step`, or a refusal naming the state and the step.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] for any step the diagram above does not
    /// show, in particular every step backwards and every step after
    /// retirement.
    pub fn after(self, step: Step) -> Result<Lifecycle, Error> {
        use Lifecycle::*;
        let next = match (self, step) {
            (Blank, Step::Claim) => Claimed,
            (Claimed, Step::Personalise) => Personalised,
            (Personalised, Step::EnterService) => InService,
            (InService, Step::Decommission) => Decommissioned,
            (Decommissioned, Step::Recommission) => InService,
            (Personalised | InService | Decommissioned, Step::Retire) => Retired,
            _ => {
                return Err(Error::IllegalTransition {
                    from: self.name(),
                    step: step.name(),
                })
            }
        };
        Ok(next)
    }

    /// The state's lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Blank => "blank",
            Lifecycle::Claimed => "claimed",
            Lifecycle::Personalised => "personalised",
            Lifecycle::InService => "in service",
            Lifecycle::Decommissioned => "decommissioned",
            Lifecycle::Retired => "retired",
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> v1::DeviceLifecycle {
        match self {
            Lifecycle::Blank => v1::DeviceLifecycle::Blank,
            Lifecycle::Claimed => v1::DeviceLifecycle::Claimed,
            Lifecycle::Personalised => v1::DeviceLifecycle::Personalised,
            Lifecycle::InService => v1::DeviceLifecycle::InService,
            Lifecycle::Decommissioned => v1::DeviceLifecycle::Decommissioned,
            Lifecycle::Retired => v1::DeviceLifecycle::Retired,
        }
    }
}

impl Step {
    /// Every step.
    pub const ALL: [Step; 6] = [
        Step::Claim,
        Step::Personalise,
        Step::EnterService,
        Step::Decommission,
        Step::Recommission,
        Step::Retire,
    ];

    /// The step's lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Step::Claim => "claim",
            Step::Personalise => "personalise",
            Step::EnterService => "enter service",
            Step::Decommission => "decommission",
            Step::Recommission => "recommission",
            Step::Retire => "retire",
        }
    }
}
