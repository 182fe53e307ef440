//! The guard for the steps of a line stream (issue 16): a stream that
//! carries many devices' steps must not be a way around the checks their
//! unary calls pass. The guard admits the stream as a call
//! (`crate::guard`), then hands its handler a [`StreamSteps`]; for each
//! step the handler asks [`StreamSteps::begin`] with the step's unary path,
//! which runs the same lockout, role-table and rate checks under the step's
//! own [`crate::Rule`] (its site scope included) and yields a [`Step`]
//! carrying the step's [`Authorized`] caller; [`Step::finish`] then counts
//! the step's final code in the metrics and, for a refusal, towards the
//! caller's lockout — exactly what the guard does when a unary call ends.

use std::time::{Duration, Instant};

use tonic::{Code, Status};

use crate::authz::{self, Authorized};
use crate::identity::Caller;

use super::{Call, Guard, UNKNOWN_METHOD};

/// The per-step guard of one line stream, in its request's extensions
/// (read it with [`StreamSteps::of`]). Only the guard makes one.
#[derive(Clone, Debug)]
pub struct StreamSteps {
    guard: Guard,
    caller: Caller,
}

/// Why a step was not admitted.
#[derive(Debug)]
pub enum StepRefusal {
    /// The caller may no longer use the stream (it is locked out): the
    /// stream ends with this status.
    EndStream(Status),
    /// This step alone is refused (its role, the rate limit, a path that
    /// is not one of the stream's steps); the stream goes on.
    Step(Status),
}

/// One admitted step: its authorized caller, and the accounting to do when
/// it ends.
#[derive(Debug)]
pub struct Step {
    guard: Guard,
    authorized: Authorized,
    method: &'static str,
    start: Instant,
}

impl StreamSteps {
    pub(super) fn new(guard: Guard, caller: Caller) -> Self {
        Self { guard, caller }
    }

    /// The stream guard the guard put into `request`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when there is none (the request did not pass the
    /// guard as a line stream): never "allow".
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&StreamSteps, Status> {
        request
            .extensions()
            .get::<StreamSteps>()
            .ok_or_else(|| Status::unauthenticated("request carries no authorized line stream"))
    }

    /// The caller that opened the stream.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The most steps the stream may run at once
    /// ([`crate::Limits::max_in_flight_per_stream`], at least 1).
    pub fn max_in_flight(&self) -> usize {
        usize::try_from(self.guard.limits().max_in_flight_per_stream)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// How long one step may run ([`crate::Limits::max_deadline_ms`]).
    pub fn step_deadline(&self) -> Duration {
        self.guard.limits().max_deadline()
    }

    /// Admits one step named by its unary path
    /// (`/trustline.v1.Provisioning/Certify`): lockout, the role table
    /// (the step's own rule and site scope), the rate limit.
    ///
    /// # Errors
    /// [`StepRefusal::EndStream`] for a locked-out caller;
    /// [`StepRefusal::Step`] with `PERMISSION_DENIED` for a role the step's
    /// rule does not allow or a path that is not one of the stream's steps,
    /// `RESOURCE_EXHAUSTED` past the rate limit. Each refusal is counted as
    /// the guard counts a refused call.
    pub fn begin(&self, stream: &str, step: &str) -> Result<Step, StepRefusal> {
        let start = Instant::now();
        let is_step = authz::rule_for(stream).is_some_and(|r| r.steps.contains(&step));
        let method = authz::rule_for(step).map_or(UNKNOWN_METHOD, |r| r.method);
        let call = Call {
            caller: &self.caller,
            method,
            path: step,
            start,
        };
        if !is_step {
            let status = Status::permission_denied(format!(
                "{}: {step} is not a step of {stream}",
                self.caller
            ));
            return Err(StepRefusal::Step(self.guard.refuse(
                &call,
                status,
                "not_allowed",
                super::Tally::Count,
            )));
        }
        let locked = self.guard.lockouts().is_locked(&self.caller.id());
        match self.guard.admit(&call) {
            Ok(authorized) => Ok(Step {
                guard: self.guard.clone(),
                authorized,
                method,
                start,
            }),
            Err(status) if locked => Err(StepRefusal::EndStream(status)),
            Err(status) => Err(StepRefusal::Step(status)),
        }
    }
}

impl Step {
    /// The caller as the step's rule authorized it (its scope is the step's).
    pub fn authorized(&self) -> &Authorized {
        &self.authorized
    }

    /// Accounts for the step's end with `code` (`Code::Ok` for success):
    /// metrics, logs and, for a refusal, the caller's lockout count.
    pub fn finish(self, code: Code, message: &str) {
        self.guard.call_finished(
            self.authorized.caller(),
            self.method,
            self.start,
            code,
            message,
        );
    }
}
