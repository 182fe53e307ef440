//! The station's side of the provisioner: either one line stream
//! (`Provisioning/Line`, the default) that carries the steps of every
//! device in flight, or one unary call per step (`--unary`, the baseline).
//!
//! Both answer a step the same way — the unary call's response, or its
//! status — so the rest of the station does not know which it used: a
//! [`v1::LineRefusal`] becomes the very `Status` the unary call would have
//! returned (code, message, details and the `trustline-refusal` metadata).
//!
//! The stream is multiplexed: each device has its own correlation id,
//! answers are routed back by it, and a device waits for one of the
//! stream's slots (the `trustline-line-in-flight` the provisioner announced)
//! before it sends, so a busy stream holds the station back instead of
//! refusing its devices. A stream that ends fails the steps it had in
//! flight with its status (`UNAVAILABLE` when it just stopped); the next
//! step opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use trustline_proto::v1;
use trustline_proto::v1::line_request::Step;
use trustline_proto::v1::line_response::Result as Answer;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use provisioner::line::IN_FLIGHT_HEADER;

/// How the station talks to the provisioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// One line stream for every device in flight, with folded steps.
    Stream,
    /// One unary call per step.
    Unary,
}

/// A step's refusal, with the step that refused (a folded request is two).
#[derive(Debug)]
pub(super) struct Refused {
    /// The unary RPC that refused: `BeginClaim`, `CompleteClaim`, ...
    pub(super) step: &'static str,
    pub(super) status: Status,
}

/// The provisioner, by one protocol or the other.
#[derive(Clone)]
pub(super) enum Provisioner {
    Unary(ProvisioningClient<Channel>),
    Stream(Arc<StreamClient>),
}

impl Provisioner {
    pub(super) fn new(channel: Channel, protocol: Protocol) -> Self {
        let client = ProvisioningClient::new(channel);
        match protocol {
            Protocol::Unary => Provisioner::Unary(client),
            Protocol::Stream => Provisioner::Stream(Arc::new(StreamClient {
                client,
                session: tokio::sync::Mutex::new(None),
                next_id: AtomicU64::new(1),
            })),
        }
    }

    /// The unary client on the same channel, for the calls that are no
    /// line step (the order's status, `BindFdoHeader`).
    pub(super) fn unary(&self) -> ProvisioningClient<Channel> {
        match self {
            Provisioner::Unary(c) => c.clone(),
            Provisioner::Stream(s) => s.client.clone(),
        }
    }

    /// Whether steps are folded (the stream carries folded requests).
    pub(super) fn folds(&self) -> bool {
        matches!(self, Provisioner::Stream(_))
    }

    /// A correlation id for a new device (0 for unary calls).
    pub(super) fn device_id(&self) -> u64 {
        match self {
            Provisioner::Unary(_) => 0,
            Provisioner::Stream(s) => s.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(super) async fn begin_claim(
        &self,
        id: u64,
        request: v1::BeginClaimRequest,
    ) -> Result<v1::BeginClaimResponse, Status> {
        match self {
            Provisioner::Unary(c) => c.clone().begin_claim(request).await.map(|r| r.into_inner()),
            Provisioner::Stream(s) => match s.call(id, Step::BeginClaim(request)).await {
                Ok(Answer::BeginClaim(r)) => Ok(r),
                other => Err(unexpected(other)),
            },
        }
    }

    pub(super) async fn complete_claim(
        &self,
        id: u64,
        request: v1::CompleteClaimRequest,
    ) -> Result<v1::CompleteClaimResponse, Status> {
        match self {
            Provisioner::Unary(c) => c
                .clone()
                .complete_claim(request)
                .await
                .map(|r| r.into_inner()),
            Provisioner::Stream(s) => match s.call(id, Step::CompleteClaim(request)).await {
                Ok(Answer::CompleteClaim(r)) => Ok(r),
                other => Err(unexpected(other)),
            },
        }
    }

    pub(super) async fn deliver_device_key(
        &self,
        id: u64,
        request: v1::DeliverDeviceKeyRequest,
    ) -> Result<v1::DeliverDeviceKeyResponse, Status> {
        match self {
            Provisioner::Unary(c) => c
                .clone()
                .deliver_device_key(request)
                .await
                .map(|r| r.into_inner()),
            Provisioner::Stream(s) => match s.call(id, Step::DeliverDeviceKey(request)).await {
                Ok(Answer::DeliverDeviceKey(r)) => Ok(r),
                other => Err(unexpected(other)),
            },
        }
    }

    pub(super) async fn certify(
        &self,
        id: u64,
        request: v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Status> {
        match self {
            Provisioner::Unary(c) => c.clone().certify(request).await.map(|r| r.into_inner()),
            Provisioner::Stream(s) => match s.call(id, Step::Certify(request)).await {
                Ok(Answer::Certify(r)) => Ok(r),
                other => Err(unexpected(other)),
            },
        }
    }

    /// `CompleteClaim` then `Certify` in one message (stream only; unary
    /// makes the two calls).
    pub(super) async fn claim_and_certify(
        &self,
        id: u64,
        claim: v1::CompleteClaimRequest,
        certify: v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Refused> {
        let Provisioner::Stream(s) = self else {
            self.complete_claim(id, claim)
                .await
                .map_err(|status| Refused {
                    step: "CompleteClaim",
                    status,
                })?;
            return self.certify(id, certify).await.map_err(|status| Refused {
                step: "Certify",
                status,
            });
        };
        let folded = v1::ClaimAndCertify {
            complete_claim: Some(claim),
            certify: Some(certify),
        };
        match s.call(id, Step::ClaimAndCertify(folded)).await? {
            Answer::ClaimAndCertify(v1::ClaimAndCertifyResponse {
                certify: Some(r), ..
            }) => Ok(r),
            other => Err(Refused {
                step: "Certify",
                status: unexpected(Ok(other)),
            }),
        }
    }

    /// `CompleteClaim` then `DeliverDeviceKey` in one message (stream only).
    pub(super) async fn claim_and_deliver(
        &self,
        id: u64,
        claim: v1::CompleteClaimRequest,
        deliver: v1::DeliverDeviceKeyRequest,
    ) -> Result<v1::DeliverDeviceKeyResponse, Refused> {
        let Provisioner::Stream(s) = self else {
            self.complete_claim(id, claim)
                .await
                .map_err(|status| Refused {
                    step: "CompleteClaim",
                    status,
                })?;
            return self
                .deliver_device_key(id, deliver)
                .await
                .map_err(|status| Refused {
                    step: "DeliverDeviceKey",
                    status,
                });
        };
        let folded = v1::ClaimAndDeliver {
            complete_claim: Some(claim),
            deliver_device_key: Some(deliver),
        };
        match s.call(id, Step::ClaimAndDeliver(folded)).await? {
            Answer::ClaimAndDeliver(v1::ClaimAndDeliverResponse {
                deliver_device_key: Some(r),
                ..
            }) => Ok(r),
            other => Err(Refused {
                step: "DeliverDeviceKey",
                status: unexpected(Ok(other)),
            }),
        }
    }
}

/// An answer of the wrong kind, or a refusal, as a status.
fn unexpected(answer: Result<Answer, Refused>) -> Status {
    match answer {
        Err(refused) => refused.status,
        Ok(_) => Status::internal("the provisioner answered another step than the one asked"),
    }
}

/// One line stream at a time, reopened after it ends.
pub(super) struct StreamClient {
    client: ProvisioningClient<Channel>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    next_id: AtomicU64,
}

type Waiting = oneshot::Sender<Result<Answer, Status>>;

/// One open line stream. Dropping the last handle closes the station's
/// side of it (the provisioner then answers what is in flight and ends it).
struct Session {
    outbound: mpsc::UnboundedSender<v1::LineRequest>,
    shared: Arc<Shared>,
}

/// What the session shares with the task that reads its answers.
struct Shared {
    pending: Mutex<HashMap<u64, Waiting>>,
    slots: Arc<Semaphore>,
    /// Set when the stream has ended, with its status.
    ended: Mutex<Option<Status>>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> Option<Status> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends the session: every step in flight fails with `status`.
    fn end(&self, status: Status) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        self.slots.close();
        for (_, waiting) in self.pending().drain() {
            let _ = waiting.send(Err(status.clone()));
        }
    }
}

impl StreamClient {
    /// Sends one step for device `id`, waits for its answer.
    async fn call(&self, id: u64, step: Step) -> Result<Answer, Refused> {
        let name = match &step {
            Step::BeginClaim(_) => "BeginClaim",
            Step::CompleteClaim(_) | Step::ClaimAndCertify(_) | Step::ClaimAndDeliver(_) => {
                "CompleteClaim"
            }
            Step::DeliverDeviceKey(_) => "DeliverDeviceKey",
            Step::Certify(_) => "Certify",
        };
        let failed = |status| Refused { step: name, status };
        let session = self.session().await.map_err(failed)?;
        let outbound = &session.outbound;
        let session = &session.shared;
        let slot = session
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| failed(session.ended().unwrap_or_else(stream_stopped)))?;
        let (tx, rx) = oneshot::channel();
        session.pending().insert(id, tx);
        // `end` marks the session ended before it fails what is pending: a
        // step registered after that is failed here, never left waiting.
        if let Some(status) = session.ended() {
            session.pending().remove(&id);
            return Err(failed(status));
        }
        let sent = outbound.send(v1::LineRequest {
            id,
            step: Some(step),
        });
        if sent.is_err() {
            session.pending().remove(&id);
            return Err(failed(session.ended().unwrap_or_else(stream_stopped)));
        }
        let answer = rx.await;
        drop(slot);
        match answer {
            Ok(Ok(Answer::Refusal(r))) => {
                let step = match r.step.as_str() {
                    "BeginClaim" => "BeginClaim",
                    "DeliverDeviceKey" => "DeliverDeviceKey",
                    "Certify" => "Certify",
                    _ => "CompleteClaim",
                };
                Err(Refused {
                    step,
                    status: refusal_status(r),
                })
            }
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(status)) => Err(failed(status)),
            Err(_) => Err(failed(session.ended().unwrap_or_else(stream_stopped))),
        }
    }

    /// The open session, or a new one.
    async fn session(&self) -> Result<Arc<Session>, Status> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref().filter(|s| s.shared.ended().is_none()) {
            return Ok(session.clone());
        }
        let (outbound, rx) = mpsc::unbounded_channel::<v1::LineRequest>();
        let requests =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let response = self.client.clone().line(requests).await?;
        let limit = response
            .metadata()
            .get(IN_FLIGHT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(limit)),
            ended: Mutex::new(None),
        });
        let session = Arc::new(Session {
            outbound,
            shared: shared.clone(),
        });
        let mut answers = response.into_inner();
        let reader = shared;
        tokio::spawn(async move {
            let status = loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        let waiting = reader.pending().remove(&answer.id);
                        if let (Some(waiting), Some(result)) = (waiting, answer.result) {
                            let _ = waiting.send(Ok(result));
                        }
                    }
                    Ok(None) => break stream_stopped(),
                    Err(status) => break status,
                }
            };
            reader.end(status);
        });
        *current = Some(session.clone());
        Ok(session)
    }
}

fn stream_stopped() -> Status {
    Status::unavailable("the line stream ended")
}

/// The status the unary call would have returned for this refusal.
fn refusal_status(r: v1::LineRefusal) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(reason) = MetadataValue::try_from(r.reason.as_str()) {
        if !r.reason.is_empty() {
            metadata.insert(trustline_proto::refusal::METADATA_KEY, reason);
        }
    }
    Status::with_details_and_metadata(Code::from(r.code), r.message, r.details.into(), metadata)
}
