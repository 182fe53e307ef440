//! The `Provisioning` gRPC service: converts wire messages to the factory's
//! inputs at the edge, and every factory error to a `tonic::Status` through
//! the one mapping in [`crate::error`].
//!
//! Authorization happens before a handler runs, in one place: the
//! transport's role × RPC table, asked by the guard (or by
//! `transport::internal_request` in-process), which leaves a
//! [`transport::Authorized`] caller in the request extensions. Handlers
//! take it — its absence is `UNAUTHENTICATED`, never "allow" — and never
//! check roles themselves; the factory gets the caller's id and
//! [`transport::SiteScope`], which binds a station to its site for every
//! order and device it touches.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trustline_proto::v1;
use trustline_proto::v1::provisioning_server::{Provisioning, ProvisioningServer};

use crate::error::Error;
use crate::{Actor, CertifyInput, CustodyKind, Factory, SubjectKey};

/// The `Provisioning` service over a [`Factory`].
#[derive(Clone)]
pub struct ProvisioningService {
    factory: Arc<Factory>,
}

impl ProvisioningService {
    /// Serves `factory`.
    pub fn new(factory: Arc<Factory>) -> Self {
        Self { factory }
    }

    /// The factory behind the service.
    pub fn factory(&self) -> &Arc<Factory> {
        &self.factory
    }
}

/// The `Provisioning` gRPC server over `factory`, with the transport's
/// message size limits.
pub fn server(
    factory: Arc<Factory>,
    limits: &transport::Limits,
) -> ProvisioningServer<ProvisioningService> {
    use transport::MessageLimits;
    ProvisioningServer::new(ProvisioningService::new(factory)).with_message_limits(limits)
}

/// The factory's view of the caller the role table authorized.
///
/// # Errors
/// `UNAUTHENTICATED` when the request carries no authorized caller.
fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    transport::authorized(request).map(actor_of)
}

/// The factory's view of an authorized caller (of a unary call, or of one
/// step of a line stream).
pub(crate) fn actor_of(authorized: &transport::Authorized) -> Actor {
    Actor {
        id: authorized.caller().id(),
        scope: authorized.scope(),
    }
}

fn missing(field: &str) -> Status {
    Error::Invalid(format!("{field} is missing")).into()
}

#[tonic::async_trait]
impl Provisioning for ProvisioningService {
    async fn open_order(
        &self,
        request: Request<v1::OpenOrderRequest>,
    ) -> Result<Response<v1::OpenOrderResponse>, Status> {
        let actor = actor(&request)?;
        let signed = request
            .into_inner()
            .signed_order
            .ok_or_else(|| missing("signed_order"))?;
        let (order_id, ledger_seq) = self.factory.open_order(&actor, &signed).await?;
        Ok(Response::new(v1::OpenOrderResponse {
            order_id,
            ledger_seq,
        }))
    }

    async fn close_order(
        &self,
        request: Request<v1::CloseOrderRequest>,
    ) -> Result<Response<v1::CloseOrderResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let ledger_seq = self
            .factory
            .close_order(&actor, &r.order_id, &r.reason)
            .await?;
        Ok(Response::new(v1::CloseOrderResponse { ledger_seq }))
    }

    async fn get_order(
        &self,
        request: Request<v1::GetOrderRequest>,
    ) -> Result<Response<v1::OrderStatus>, Status> {
        let actor = actor(&request)?;
        let progress = self
            .factory
            .order_progress(&actor, &request.get_ref().order_id)
            .await?;
        let allowance = progress.allowance.unwrap_or(crate::AllowanceProgress {
            applies: false,
            left: 0,
            witnessed: crate::Witnessed::default(),
        });
        Ok(Response::new(v1::OrderStatus {
            remaining: progress.share.quantity.saturating_sub(progress.certified),
            share: Some(v1::SiteAllocation {
                site: progress.share.site.clone(),
                quantity: progress.share.quantity,
                offline_allowance: progress.share.offline_allowance,
            }),
            order: Some(progress.order.to_proto()),
            certified: progress.certified,
            closed: progress.closed,
            allowance_applies: allowance.applies,
            allowance_left: if allowance.applies { allowance.left } else { 0 },
            last_cosignature_time: allowance.witnessed.time,
            last_cosigned_size: allowance.witnessed.size,
        }))
    }

    async fn begin_claim(
        &self,
        request: Request<v1::BeginClaimRequest>,
    ) -> Result<Response<v1::BeginClaimResponse>, Status> {
        let actor = actor(&request)?;
        self.begin_claim_step(&actor, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn complete_claim(
        &self,
        request: Request<v1::CompleteClaimRequest>,
    ) -> Result<Response<v1::CompleteClaimResponse>, Status> {
        let actor = actor(&request)?;
        self.complete_claim_step(&actor, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn deliver_device_key(
        &self,
        request: Request<v1::DeliverDeviceKeyRequest>,
    ) -> Result<Response<v1::DeliverDeviceKeyResponse>, Status> {
        let actor = actor(&request)?;
        self.deliver_device_key_step(&actor, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn certify(
        &self,
        request: Request<v1::CertifyRequest>,
    ) -> Result<Response<v1::CertifyResponse>, Status> {
        let actor = actor(&request)?;
        self.certify_step(&actor, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn record_custody(
        &self,
        request: Request<v1::RecordCustodyRequest>,
    ) -> Result<Response<v1::RecordCustodyResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let kind = CustodyKind::from_event(r.kind)?;
        let ledger_seq = self
            .factory
            .record_custody(&actor, &r.rot_id, kind, &r.note)
            .await?;
        Ok(Response::new(v1::RecordCustodyResponse { ledger_seq }))
    }

    async fn bind_fdo_header(
        &self,
        request: Request<v1::BindFdoHeaderRequest>,
    ) -> Result<Response<v1::BindFdoHeaderResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let bound = self
            .factory
            .bind_fdo_header(&actor, &r.rot_id, &r.header_hmac)
            .await?;
        Ok(Response::new(v1::BindFdoHeaderResponse {
            ledger_seq: bound.ledger_seq,
            ov_header: bound.ov_header,
            replayed: bound.replayed,
        }))
    }

    type LineStream = crate::line::LineStream;

    async fn line(
        &self,
        request: Request<tonic::Streaming<v1::LineRequest>>,
    ) -> Result<Response<Self::LineStream>, Status> {
        crate::line::open(self.clone(), request)
    }
}

/// The line's steps, one function each: the unary RPCs and the line stream
/// ([`crate::line`]) both call these, so a step is one piece of code
/// whichever way it arrives.
impl ProvisioningService {
    /// `BeginClaim` for an authorized `actor`.
    pub(crate) async fn begin_claim_step(
        &self,
        actor: &Actor,
        r: v1::BeginClaimRequest,
    ) -> Result<v1::BeginClaimResponse, Status> {
        let attestation = r.attestation.ok_or_else(|| missing("attestation"))?;
        let c = self
            .factory
            .begin_claim(actor, &r.order_id, &attestation)
            .await?;
        Ok(v1::BeginClaimResponse {
            rot_id: c.rot_id,
            nonce: c.nonce,
            anchor: c.anchor,
            expires_at_ms: c.expires_at_ms,
        })
    }

    /// `CompleteClaim` for an authorized `actor`.
    pub(crate) async fn complete_claim_step(
        &self,
        actor: &Actor,
        r: v1::CompleteClaimRequest,
    ) -> Result<v1::CompleteClaimResponse, Status> {
        let receipt = r.receipt.ok_or_else(|| missing("receipt"))?;
        let attestation = r.attestation.ok_or_else(|| missing("attestation"))?;
        let (rot_id, ledger_seq) = self
            .factory
            .complete_claim(actor, &receipt, &attestation)
            .await?;
        Ok(v1::CompleteClaimResponse { rot_id, ledger_seq })
    }

    /// `DeliverDeviceKey` for an authorized `actor`.
    pub(crate) async fn deliver_device_key_step(
        &self,
        actor: &Actor,
        r: v1::DeliverDeviceKeyRequest,
    ) -> Result<v1::DeliverDeviceKeyResponse, Status> {
        let k = self
            .factory
            .deliver_device_key(actor, &r.rot_id, &r.order_id)
            .await?;
        Ok(v1::DeliverDeviceKeyResponse {
            device_public_key: k.device_public_key,
            hsm_ephemeral_public_key: k.hsm_ephemeral_public_key,
            wrapped_key: k.wrapped_key,
            kdf: k.kdf,
            ledger_seq: k.ledger_seq,
        })
    }

    /// `Certify` for an authorized `actor`.
    pub(crate) async fn certify_step(
        &self,
        actor: &Actor,
        r: v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Status> {
        // The first owner is the OEM's to name (issue 12 item 1): refused
        // before anything is looked up, signed or recorded.
        if !r.first_owner_public_key.is_empty() {
            return Err(Error::FirstOwner.into());
        }
        let subject = match r.subject_key {
            Some(v1::certify_request::SubjectKey::ProofOfPossession(p)) => SubjectKey::Proof(p),
            Some(v1::certify_request::SubjectKey::CsrDer(d)) => SubjectKey::Csr(d),
            None => return Err(missing("proof_of_possession or csr_der")),
        };
        let input = CertifyInput {
            order_id: r.order_id,
            rot_id: r.rot_id,
            serial: r.serial,
            key_attestation: r
                .key_attestation
                .ok_or_else(|| missing("key_attestation"))?,
            subject,
        };
        let c = self.factory.certify(actor, input).await?;
        Ok(v1::CertifyResponse {
            certificate_chain: c.chain,
            label: c.label,
            voucher: c.voucher,
            ledger_seq: c.ledger_seq,
            replayed: c.replayed,
        })
    }
}
