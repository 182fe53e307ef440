//! The `Ownership` gRPC service: converts wire messages to the ownership
//! policy's inputs at the edge, and every error to a `tonic::Status` through
//! the one mapping in [`crate::error`].
//!
//! The transport's role × RPC table decides who may call each RPC before a
//! handler runs (the OEM's `admin` makes the first transfer and lifts
//! quarantines; `operator`s — owners and service providers — do the rest;
//! auditors read state), and
//! leaves the [`transport::Authorized`] caller in the request extensions;
//! each handler takes it — its absence being `UNAUTHENTICATED` — and never
//! checks the role again. The ledger's `actor` for every ownership entry is
//! the caller's role alone, never its certificate name, which could
//! identify the owner (2.4.16.3, 2.4.16.6).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trustline_proto::v1;
use trustline_proto::v1::ownership_server::{Ownership as OwnershipRpc, OwnershipServer};

use crate::manufacturer::FirstTransfer;
use crate::{LifecycleOutcome, Ownership, StepRequest, TransferOutcome};

/// The `Ownership` service over an [`Ownership`] policy.
#[derive(Clone)]
pub struct OwnershipService {
    ownership: Arc<Ownership>,
}

impl OwnershipService {
    /// Serves `ownership`.
    pub fn new(ownership: Arc<Ownership>) -> Self {
        Self { ownership }
    }

    /// The policy behind the service.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }
}

/// The `Ownership` gRPC server over `ownership`, with the transport's
/// message size limits.
pub fn server(
    ownership: Arc<Ownership>,
    limits: &transport::Limits,
) -> OwnershipServer<OwnershipService> {
    use transport::MessageLimits;
    OwnershipServer::new(OwnershipService::new(ownership)).with_message_limits(limits)
}

/// The authorized caller's role: the ledger's actor.
///
/// # Errors
/// `UNAUTHENTICATED` when the request carries no authorized caller.
fn actor<T>(request: &Request<T>) -> Result<&'static str, Status> {
    Ok(transport::authorized(request)?.caller().role().as_str())
}

#[tonic::async_trait]
impl OwnershipRpc for OwnershipService {
    async fn transfer_from_manufacturer(
        &self,
        request: Request<v1::TransferFromManufacturerRequest>,
    ) -> Result<Response<v1::TransferResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let first = FirstTransfer {
            voucher: r.voucher,
            next_owner_public_key: r.next_owner_public_key,
            first_owner_salt: r.first_owner_salt,
        };
        let outcome = self
            .ownership
            .transfer_from_manufacturer(actor, &first)
            .await?;
        Ok(transfer_response(outcome))
    }

    async fn register_transfer(
        &self,
        request: Request<v1::RegisterTransferRequest>,
    ) -> Result<Response<v1::TransferResponse>, Status> {
        let actor = actor(&request)?;
        let outcome = self
            .ownership
            .register_transfer(actor, &request.into_inner().voucher)
            .await?;
        Ok(transfer_response(outcome))
    }

    async fn get_challenge(
        &self,
        request: Request<v1::GetChallengeRequest>,
    ) -> Result<Response<v1::Challenge>, Status> {
        let caller = transport::authorized(&request)?.caller().clone();
        let r = request.into_inner();
        let (challenge, expires_at_ms) = self
            .ownership
            .challenge(&caller, &r.rot_id, &r.action)
            .await?;
        Ok(Response::new(v1::Challenge {
            challenge: challenge.to_vec(),
            expires_at_ms,
        }))
    }

    async fn onboard(
        &self,
        request: Request<v1::OnboardRequest>,
    ) -> Result<Response<v1::LifecycleResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let step = StepRequest {
            voucher: r.voucher,
            owner_authorization: r.owner_authorization,
            device_proof: r.device_proof,
            device_chain: r.device_chain,
        };
        let outcome = self.ownership.onboard(actor, &step).await?;
        Ok(lifecycle_response(outcome))
    }

    async fn decommission(
        &self,
        request: Request<v1::DecommissionRequest>,
    ) -> Result<Response<v1::LifecycleResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let step = reset_step(r.voucher, r.owner_authorization, r.reset_proof);
        let outcome = self.ownership.decommission(actor, &step).await?;
        Ok(lifecycle_response(outcome))
    }

    async fn recommission(
        &self,
        request: Request<v1::RecommissionRequest>,
    ) -> Result<Response<v1::LifecycleResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let step = reset_step(r.voucher, r.owner_authorization, r.reset_proof);
        let outcome = self.ownership.recommission(actor, &step).await?;
        Ok(lifecycle_response(outcome))
    }

    async fn retire(
        &self,
        request: Request<v1::RetireRequest>,
    ) -> Result<Response<v1::LifecycleResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let step = reset_step(r.voucher, r.owner_authorization, r.reset_proof);
        let outcome = self.ownership.retire(actor, &step).await?;
        Ok(lifecycle_response(outcome))
    }

    async fn get_revocation_list(
        &self,
        request: Request<v1::GetRevocationListRequest>,
    ) -> Result<Response<v1::RevocationList>, Status> {
        actor(&request)?;
        let crl = self.ownership.revocation_list().await?;
        Ok(Response::new(v1::RevocationList { crl }))
    }

    async fn get_device_state(
        &self,
        request: Request<v1::GetDeviceStateRequest>,
    ) -> Result<Response<v1::DeviceState>, Status> {
        actor(&request)?;
        let status = self
            .ownership
            .device_status(&request.get_ref().rot_id)
            .await?;
        Ok(Response::new(v1::DeviceState {
            rot_id: status.rot_id,
            state: status.state as i32,
            scrapped: status.scrapped,
            revoked: status.revoked,
            transfers: u32::try_from(status.transfers).unwrap_or(u32::MAX),
        }))
    }

    async fn lift_quarantine(
        &self,
        request: Request<v1::LiftQuarantineRequest>,
    ) -> Result<Response<v1::LiftQuarantineResponse>, Status> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let outcome = self
            .ownership
            .lift_quarantine(actor, &r.rot_id, r.duplicate_seq, &r.reason)
            .await?;
        Ok(Response::new(v1::LiftQuarantineResponse {
            rot_id: outcome.rot_id,
            ledger_seq: outcome.ledger_seq,
            quarantines_left: u32::try_from(outcome.quarantines_left).unwrap_or(u32::MAX),
        }))
    }
}

fn transfer_response(outcome: TransferOutcome) -> Response<v1::TransferResponse> {
    Response::new(v1::TransferResponse {
        voucher: outcome.voucher,
        ledger_seq: outcome.ledger_seq,
        owner_commitment: outcome.owner_commitment,
        replayed: outcome.replayed,
        fdo_voucher: outcome.fdo_voucher,
    })
}

fn lifecycle_response(outcome: LifecycleOutcome) -> Response<v1::LifecycleResponse> {
    Response::new(v1::LifecycleResponse {
        rot_id: outcome.rot_id,
        state: outcome.state.to_proto() as i32,
        ledger_seq: outcome.ledger_seq,
    })
}

/// A lifecycle step the device proves with its signed reset proof (the
/// chain is already known from certification).
fn reset_step(
    voucher: Vec<u8>,
    owner_authorization: Option<v1::SignedStatement>,
    reset_proof: Option<v1::SignedStatement>,
) -> StepRequest {
    StepRequest {
        voucher,
        owner_authorization,
        device_proof: reset_proof,
        device_chain: vec![],
    }
}
