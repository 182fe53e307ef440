//! The station line stream, `Provisioning/Line` (issue 16): one long-lived
//! bidirectional stream per station carrying the steps of many devices in
//! flight, each message tagged with its device's correlation id.
//!
//! Nothing here decides policy. Each step is the unary RPC of the same name,
//! run by the same function ([`ProvisioningService`]'s `*_step`, which the
//! unary handlers call too), admitted and accounted by the transport's
//! [`StreamSteps`] under the unary RPC's own row of the role table (its
//! roles, its site scope, the rate limit, the lockout count, its metrics);
//! so a step gets the same checks, records and refusals — code, message,
//! `trustline-refusal` reason and details, carried in a
//! [`v1::LineRefusal`] — as its unary call, and a device is recorded before
//! anything is released to it exactly as there. A folded step
//! (`ClaimAndCertify`, `ClaimAndDeliver`) is the two unary steps one after
//! the other: the second runs only once the first is recorded, and a refusal
//! names the step that refused.
//!
//! What ends the stream, with its status: a frame that does not decode
//! (`INVALID_ARGUMENT`) or is larger than the decode limit (`OUT_OF_RANGE`,
//! tonic's), a message without an id or a step (`INVALID_ARGUMENT`), a
//! caller locked out meanwhile (`PERMISSION_DENIED`). A caller whose role
//! may not open the stream never gets one: the guard refuses the call. A
//! refused step ends nothing but that step.
//!
//! Backpressure: at most [`StreamSteps::max_in_flight`] steps run at once
//! per stream, announced in the [`IN_FLIGHT_HEADER`] response header; one
//! more is refused `RESOURCE_EXHAUSTED` (`stream-full`) for its device alone,
//! as is a second step for a device whose step is still running
//! (`FAILED_PRECONDITION`, `step-in-flight`). An answer the station does not
//! read holds its step's slot, so a station that stops reading stops being
//! served. When the station cuts the stream, the steps in flight are dropped
//! as a unary call is when its connection drops: each leaves what its unary
//! call would leave, and is retried the same way.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};
use transport::{StepRefusal, StreamSteps};
use trustline_proto::v1;
use trustline_proto::v1::line_request::Step;
use trustline_proto::v1::line_response::Result as Answer;

use crate::service::{actor_of, ProvisioningService};
use crate::Actor;

/// The stream's gRPC path.
pub const METHOD: &str = "/trustline.v1.Provisioning/Line";
/// The response header naming the most steps the stream runs at once.
pub const IN_FLIGHT_HEADER: &str = "trustline-line-in-flight";

const BEGIN_CLAIM: &str = "/trustline.v1.Provisioning/BeginClaim";
const COMPLETE_CLAIM: &str = "/trustline.v1.Provisioning/CompleteClaim";
const DELIVER_DEVICE_KEY: &str = "/trustline.v1.Provisioning/DeliverDeviceKey";
const CERTIFY: &str = "/trustline.v1.Provisioning/Certify";

/// The answers of one stream.
pub type LineStream = Pin<Box<dyn Stream<Item = Result<v1::LineResponse, Status>> + Send>>;

/// Opens a line stream: the driver runs in its own task; the answers flow
/// through a bounded channel.
///
/// # Errors
/// `UNAUTHENTICATED` when the request did not pass the guard as a line
/// stream.
pub(crate) fn open(
    service: ProvisioningService,
    request: Request<Streaming<v1::LineRequest>>,
) -> Result<Response<LineStream>, Status> {
    let steps = StreamSteps::of(&request)?.clone();
    let limit = steps.max_in_flight();
    let inbound = request.into_inner();
    let (answers, rx) = mpsc::channel(limit);
    tokio::spawn(drive(service, steps, inbound, answers));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Box::pin(stream) as LineStream);
    response
        .metadata_mut()
        .insert(IN_FLIGHT_HEADER, MetadataValue::from(limit as u64));
    Ok(response)
}

/// What the steps of one stream share.
struct Line {
    service: ProvisioningService,
    steps: StreamSteps,
    answers: mpsc::Sender<Result<v1::LineResponse, Status>>,
    slots: Arc<Semaphore>,
    /// Devices with a step running.
    busy: Mutex<HashSet<u64>>,
    /// A step that ends the stream reports here.
    fatal: mpsc::UnboundedSender<Status>,
}

/// Reads the stream until it ends, running each step in its own task.
async fn drive(
    service: ProvisioningService,
    steps: StreamSteps,
    mut inbound: Streaming<v1::LineRequest>,
    answers: mpsc::Sender<Result<v1::LineResponse, Status>>,
) {
    let (fatal, mut fatal_rx) = mpsc::unbounded_channel();
    let line = Arc::new(Line {
        slots: Arc::new(Semaphore::new(steps.max_in_flight())),
        service,
        steps,
        answers: answers.clone(),
        busy: Mutex::new(HashSet::new()),
        fatal,
    });
    let mut running = JoinSet::new();
    let end = loop {
        while running.try_join_next().is_some() {}
        let message = tokio::select! {
            Some(status) = fatal_rx.recv() => break Err(status),
            message = inbound.message() => message,
        };
        let request = match message {
            Ok(Some(request)) => request,
            Ok(None) => break Ok(()),
            Err(status) => break Err(frame_status(status)),
        };
        if request.id == 0 {
            break Err(Status::invalid_argument(
                "a line message carries no device id",
            ));
        }
        let Some(step) = request.step else {
            break Err(Status::invalid_argument(format!(
                "line message for device {} carries no step",
                request.id
            )));
        };
        let id = request.id;
        let Ok(slot) = line.slots.clone().try_acquire_owned() else {
            let status = trustline_proto::refusal::status(
                Code::ResourceExhausted,
                format!(
                    "the line stream already runs {} steps; wait for an answer",
                    line.steps.max_in_flight()
                ),
                "stream-full",
            );
            line.send(id, refused(step_name(&step), &status)).await;
            continue;
        };
        if !line.busy().insert(id) {
            let status = trustline_proto::refusal::status(
                Code::FailedPrecondition,
                format!("device {id} already has a step running on this stream"),
                "step-in-flight",
            );
            drop(slot);
            line.send(id, refused(step_name(&step), &status)).await;
            continue;
        }
        let line = line.clone();
        running.spawn(async move {
            let answer = line.answer(step).await;
            // Free the slot and the id before the answer can reach the
            // station, so its next step is never refused for them; a slot
            // in the answer channel is taken first, so an unread answer
            // still holds back the stream.
            let Ok(permit) = line.answers.reserve().await else {
                return;
            };
            line.busy().remove(&id);
            drop(slot);
            match answer {
                Ok(result) => permit.send(Ok(v1::LineResponse {
                    id,
                    result: Some(result),
                })),
                Err(end) => {
                    drop(permit);
                    let _ = line.fatal.send(end);
                }
            }
        });
    };
    match end {
        // The station closed its side: answer every step in flight, then end.
        Ok(()) => loop {
            tokio::select! {
                Some(status) = fatal_rx.recv() => {
                    let _ = answers.send(Err(status)).await;
                    break;
                }
                joined = running.join_next() => if joined.is_none() { break },
            }
        },
        // Dropping `running` drops the steps in flight, as a unary call is
        // dropped with its connection.
        Err(status) => {
            running.abort_all();
            let _ = answers.send(Err(status)).await;
        }
    }
}

/// The stream-ending status for an inbound frame error: tonic reports a
/// frame that does not decode as `INTERNAL`; for the station it is its
/// malformed input.
fn frame_status(status: Status) -> Status {
    match status.code() {
        Code::Internal => {
            Status::invalid_argument(format!("malformed line frame: {}", status.message()))
        }
        _ => status,
    }
}

/// The unary RPC name of a step, as a refusal names it.
fn step_name(step: &Step) -> &'static str {
    match step {
        Step::BeginClaim(_) => "BeginClaim",
        Step::CompleteClaim(_) | Step::ClaimAndCertify(_) | Step::ClaimAndDeliver(_) => {
            "CompleteClaim"
        }
        Step::DeliverDeviceKey(_) => "DeliverDeviceKey",
        Step::Certify(_) => "Certify",
    }
}

/// A refused step's answer: the status its unary call would have returned.
fn refused(step: &str, status: &Status) -> Answer {
    Answer::Refusal(v1::LineRefusal {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason: trustline_proto::refusal::refusal_reason(status)
            .unwrap_or_default()
            .to_owned(),
        details: status.details().to_vec(),
        step: step.to_owned(),
    })
}

/// How one step (or one half of a folded step) did not succeed.
enum NotDone {
    /// Refused: the device's answer.
    Refused(Answer),
    /// The stream ends.
    End(Status),
}

impl Line {
    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, id: u64, result: Answer) {
        let _ = self
            .answers
            .send(Ok(v1::LineResponse {
                id,
                result: Some(result),
            }))
            .await;
    }

    /// Runs one step; `Err` ends the stream.
    async fn answer(&self, step: Step) -> Result<Answer, Status> {
        let service = &self.service;
        let done = match step {
            Step::BeginClaim(r) => self
                .guarded(BEGIN_CLAIM, |a| async move {
                    service.begin_claim_step(&a, r).await
                })
                .await
                .map(Answer::BeginClaim),
            Step::CompleteClaim(r) => self
                .guarded(COMPLETE_CLAIM, |a| async move {
                    service.complete_claim_step(&a, r).await
                })
                .await
                .map(Answer::CompleteClaim),
            Step::DeliverDeviceKey(r) => self
                .guarded(DELIVER_DEVICE_KEY, |a| async move {
                    service.deliver_device_key_step(&a, r).await
                })
                .await
                .map(Answer::DeliverDeviceKey),
            Step::Certify(r) => self
                .guarded(
                    CERTIFY,
                    |a| async move { service.certify_step(&a, r).await },
                )
                .await
                .map(Answer::Certify),
            Step::ClaimAndCertify(folded) => self.claim_and_certify(folded).await,
            Step::ClaimAndDeliver(folded) => self.claim_and_deliver(folded).await,
        };
        match done {
            Ok(answer) | Err(NotDone::Refused(answer)) => Ok(answer),
            Err(NotDone::End(status)) => Err(status),
        }
    }

    /// `CompleteClaim`, then — once the claim is recorded — `Certify`.
    async fn claim_and_certify(&self, folded: v1::ClaimAndCertify) -> Result<Answer, NotDone> {
        let service = &self.service;
        let claim = folded.complete_claim.unwrap_or_default();
        let certify = folded.certify.unwrap_or_default();
        let complete_claim = self
            .guarded(COMPLETE_CLAIM, |a| async move {
                service.complete_claim_step(&a, claim).await
            })
            .await?;
        let certify = self
            .guarded(CERTIFY, |a| async move {
                service.certify_step(&a, certify).await
            })
            .await?;
        Ok(Answer::ClaimAndCertify(v1::ClaimAndCertifyResponse {
            complete_claim: Some(complete_claim),
            certify: Some(certify),
        }))
    }

    /// `CompleteClaim`, then — once the claim is recorded — `DeliverDeviceKey`.
    async fn claim_and_deliver(&self, folded: v1::ClaimAndDeliver) -> Result<Answer, NotDone> {
        let service = &self.service;
        let claim = folded.complete_claim.unwrap_or_default();
        let deliver = folded.deliver_device_key.unwrap_or_default();
        let complete_claim = self
            .guarded(COMPLETE_CLAIM, |a| async move {
                service.complete_claim_step(&a, claim).await
            })
            .await?;
        let delivered = self
            .guarded(DELIVER_DEVICE_KEY, |a| async move {
                service.deliver_device_key_step(&a, deliver).await
            })
            .await?;
        Ok(Answer::ClaimAndDeliver(v1::ClaimAndDeliverResponse {
            complete_claim: Some(complete_claim),
            deliver_device_key: Some(delivered),
        }))
    }

    /// One unary step on the stream: admitted by the transport under the
    /// unary RPC's rule, run with the call deadline, accounted as the call.
    async fn guarded<T, F, Fut>(&self, method: &'static str, run: F) -> Result<T, NotDone>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let name = method.rsplit('/').next().unwrap_or(method);
        let step = match self.steps.begin(METHOD, method) {
            Ok(step) => step,
            Err(StepRefusal::EndStream(status)) => return Err(NotDone::End(status)),
            Err(StepRefusal::Step(status)) => return Err(NotDone::Refused(refused(name, &status))),
        };
        let deadline = self.steps.step_deadline();
        let result = match tokio::time::timeout(deadline, run(actor_of(step.authorized()))).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "step exceeded its deadline of {} ms",
                deadline.as_millis()
            ))),
        };
        match result {
            Ok(answer) => {
                step.finish(Code::Ok, "");
                Ok(answer)
            }
            Err(status) => {
                step.finish(status.code(), status.message());
                Err(NotDone::Refused(refused(name, &status)))
            }
        }
    }
}
