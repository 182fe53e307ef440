//! How devices ended: each device's [`Outcome`] — provisioned, refused by
//! the service, or failed — with its stage, a stable reason and what the
//! station knew of it ([`Known`]), and the run's [`Report`] counting them
//! by reason.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::Code;

use super::Provisioned;

/// What the station knew of a device when it stopped (for a device that
/// was refused or failed): its RoT once its attestation was read, its
/// serial once one was given to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Known {
    /// The RoT's id.
    pub rot_id: Option<String>,
    /// The serial it was given.
    pub serial: Option<String>,
}

/// How one device ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Claimed, personalised, certified and written.
    Provisioned(Provisioned),
    /// The service refused it for a reason the factory expects.
    Refused {
        /// The step: "claim", "complete-claim", "deliver-key", "certify".
        stage: &'static str,
        /// The gRPC code.
        code: Code,
        /// The `trustline-refusal` reason.
        reason: String,
        /// The service's message.
        message: String,
        /// The device.
        known: Known,
    },
    /// The line failed.
    Failed {
        /// The step ("hello", "read-attestation", "install-anchor", ...,
        /// "finish").
        stage: &'static str,
        /// The stable reason: `device:<code>` (the device refused, e.g.
        /// `device:already-claimed`), `link:<fault>` (e.g. `link:timeout`,
        /// `link:exit`, `link:malformed`), `service:<reason>` or
        /// `grpc:<code>` (the services failed), `station:<kind>`.
        reason: String,
        /// What happened (for `exec:` the exit status and the last lines of
        /// stderr).
        message: String,
        /// The device.
        known: Known,
    },
}

impl Outcome {
    /// The refusal reason, if refused.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Outcome::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The failure reason, if failed.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Outcome::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The gRPC code of a refusal.
    pub fn code(&self) -> Option<Code> {
        match self {
            Outcome::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The step at which a refused or failed device stopped.
    pub fn stage(&self) -> Option<&'static str> {
        match self {
            Outcome::Refused { stage, .. } | Outcome::Failed { stage, .. } => Some(stage),
            Outcome::Provisioned(_) => None,
        }
    }

    /// The device's RoT and serial, as far as the station knew them.
    pub fn known(&self) -> Known {
        match self {
            Outcome::Provisioned(p) => Known {
                rot_id: Some(p.rot_id.clone()),
                serial: Some(p.serial.clone()),
            },
            Outcome::Refused { known, .. } | Outcome::Failed { known, .. } => known.clone(),
        }
    }

    pub(super) fn with_known(mut self, ids: Known) -> Self {
        if let Outcome::Refused { known, .. } | Outcome::Failed { known, .. } = &mut self {
            *known = ids;
        }
        self
    }

    /// One line for the progress output.
    pub(super) fn line(&self, index: usize) -> Option<String> {
        let (what, stage, reason, message, known) = match self {
            Outcome::Provisioned(_) => return None,
            Outcome::Refused {
                stage,
                reason,
                message,
                known,
                ..
            } => ("refused", stage, reason, message, known),
            Outcome::Failed {
                stage,
                reason,
                message,
                known,
            } => ("FAILED", stage, reason, message, known),
        };
        let mut ids = String::new();
        if let Some(serial) = &known.serial {
            ids.push_str(&format!(" serial {serial}"));
        }
        if let Some(rot_id) = &known.rot_id {
            let short: String = rot_id.chars().take(16).collect();
            ids.push_str(&format!(" rot {short}"));
        }
        Some(format!(
            "device {index}{ids}: {what} at {stage} ({reason}): {message}"
        ))
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// Every device's outcome, in job order.
    pub outcomes: Vec<Outcome>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Devices provisioned.
    pub fn provisioned(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Provisioned(_)))
            .count()
    }

    /// Refusals by reason.
    pub fn refusals(&self) -> BTreeMap<String, usize> {
        count_by(self.outcomes.iter().filter_map(Outcome::refusal))
    }

    /// Failures by reason.
    pub fn failure_reasons(&self) -> BTreeMap<String, usize> {
        count_by(self.outcomes.iter().filter_map(Outcome::failure))
    }

    /// Devices that failed.
    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Failed { .. }))
            .collect()
    }

    /// Provisioned devices per second of wall time.
    pub fn devices_per_second(&self) -> f64 {
        self.provisioned() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn count_by<'a>(reasons: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for reason in reasons {
        *out.entry(reason.to_owned()).or_insert(0) += 1;
    }
    out
}
