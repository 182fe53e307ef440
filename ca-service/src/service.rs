//! The `CertificateAuthority` gRPC service over a [`Ca`].
//!
//! Generated prost types stop here: each RPC converts its request into the
//! CA's domain types, runs the HSM work on `tokio::task::spawn_blocking`
//! (a signature is tens of microseconds of CPU in the HSM library and a
//! session checkout may wait: neither may stall the runtime's workers), and
//! maps errors through the crate's one `From<Error> for tonic::Status`.
//! Authentication and authorization (only the provisioner may call the CA)
//! are enforced by the `transport` layer in front of this service.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use trustline_proto::identity::is_well_formed_rot_id;
use trustline_proto::v1;
use trustline_proto::v1::certificate_authority_server::{
    CertificateAuthority, CertificateAuthorityServer,
};
use trustline_proto::v1::issue_device_certificate_request::SubjectKey as WireSubjectKey;

use crate::ca::{Ca, CrlRequest, RevokedSerial};
use crate::request::{DeviceCertificateRequest, SubjectKey};
use crate::Error;

/// The CA's gRPC service.
#[derive(Debug, Clone)]
pub struct CaService {
    ca: Arc<Ca>,
}

impl CaService {
    /// A service over `ca`.
    pub fn new(ca: Arc<Ca>) -> Self {
        Self { ca }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> CertificateAuthorityServer<Self> {
        CertificateAuthorityServer::new(self)
    }

    /// Runs `work` against the CA on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Ca) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let ca = Arc::clone(&self.ca);
        tokio::task::spawn_blocking(move || work(&ca))
            .await
            .map_err(|e| Error::WorkerFailed {
                reason: e.to_string(),
            })?
            .map_err(Status::from)
    }
}

/// Converts the wire request into the domain request.
fn issue_request(
    req: v1::IssueDeviceCertificateRequest,
) -> Result<DeviceCertificateRequest, Error> {
    let subject_key = match req.subject_key {
        Some(WireSubjectKey::PossessedKey(possessed)) => SubjectKey::Possessed {
            public_key: possessed.public_key,
            proof: possessed.proof.ok_or_else(|| Error::ProofOfPossession {
                reason: "the proof is missing".to_owned(),
            })?,
        },
        Some(WireSubjectKey::CsrDer(der)) => SubjectKey::Csr(der),
        None => return Err(Error::MissingSubjectKey),
    };
    Ok(DeviceCertificateRequest {
        product_serial: req.product_serial,
        rot_id: req.rot_id,
        subject_key,
    })
}

/// Refuses a malformed `rot_id` before any HSM work.
fn check_rot_id(rot_id: &str) -> Result<(), Error> {
    if !is_well_formed_rot_id(rot_id) {
        return Err(Error::InvalidRotId {
            rot_id: rot_id.chars().take(80).collect(),
        });
    }
    Ok(())
}

fn time_from_ms(field: &str, ms: i64) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|_| {
        Error::InvalidCrlRequest {
            reason: format!("{field} {ms} ms is out of range"),
        }
    })
}

/// The CRL a `SignCrlRequest` asks for (also for the hub's CRL signer).
///
/// # Errors
/// [`Error::InvalidCrlRequest`] for a time that does not convert.
pub fn crl_request(req: v1::SignCrlRequest) -> Result<CrlRequest, Error> {
    let revoked = req
        .revoked
        .into_iter()
        .map(|r| {
            Ok(RevokedSerial {
                serial: r.serial,
                revoked_at: time_from_ms("revoked_at_ms", r.revoked_at_ms)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(CrlRequest {
        revoked,
        crl_number: req.crl_number,
        this_update: time_from_ms("this_update_ms", req.this_update_ms)?,
        next_update: time_from_ms("next_update_ms", req.next_update_ms)?,
    })
}

#[tonic::async_trait]
impl CertificateAuthority for CaService {
    async fn issue_device_certificate(
        &self,
        request: Request<v1::IssueDeviceCertificateRequest>,
    ) -> Result<Response<v1::IssueDeviceCertificateResponse>, Status> {
        let request = issue_request(request.into_inner())?;
        let (issued, chain) = self
            .blocking(move |ca| {
                let verified = request.verify()?;
                Ok((ca.issue(&verified)?, ca.chain()))
            })
            .await?;
        Ok(Response::new(v1::IssueDeviceCertificateResponse {
            certificate: issued.certificate,
            certificate_serial: issued.serial,
            chain,
        }))
    }

    async fn generate_wrapped_key(
        &self,
        request: Request<v1::GenerateWrappedKeyRequest>,
    ) -> Result<Response<v1::WrappedDeviceKey>, Status> {
        let req = request.into_inner();
        check_rot_id(&req.rot_id)?;
        let rot_id = req.rot_id;
        let wrapped = self
            .blocking(move |ca| {
                let wrapped = ca.generate_wrapped_key(&req.transport_public_key)?;
                tracing::info!(rot_id = %rot_id, kdf = %wrapped.kdf, "device key made in the HSM and wrapped");
                Ok(wrapped)
            })
            .await?;
        Ok(Response::new(v1::WrappedDeviceKey {
            device_public_key: wrapped.device_public_key,
            hsm_ephemeral_public_key: wrapped.hsm_ephemeral_public_key,
            wrapped_key: wrapped.wrapped_key,
            kdf: wrapped.kdf.name().to_owned(),
        }))
    }

    async fn get_chain(
        &self,
        _request: Request<v1::GetChainRequest>,
    ) -> Result<Response<v1::CertificateChain>, Status> {
        Ok(Response::new(v1::CertificateChain {
            certificates: self.ca.chain(),
            voucher_public_key: self.ca.voucher_public_key_der().to_vec(),
        }))
    }

    async fn sign_voucher_entry(
        &self,
        request: Request<v1::SignVoucherEntryRequest>,
    ) -> Result<Response<v1::SignVoucherEntryResponse>, Status> {
        let req = request.into_inner();
        if req.fdo {
            // An FDO entry (issue 17): validated as an FDO payload, never
            // sealed.
            if !req.rot_id.is_empty() {
                return Err(Status::invalid_argument(
                    "an fdo voucher entry is not sealed: leave rot_id empty",
                ));
            }
            let payload = req.entry_payload;
            let cose_sign1 = self
                .blocking(move |ca| ca.sign_fdo_voucher_entry(&payload))
                .await?;
            return Ok(Response::new(v1::SignVoucherEntryResponse {
                cose_sign1,
                sealed_entry: vec![],
            }));
        }
        if req.rot_id.is_empty() {
            let payload = req.entry_payload;
            let cose_sign1 = self
                .blocking(move |ca| ca.sign_voucher_entry(&payload))
                .await?;
            return Ok(Response::new(v1::SignVoucherEntryResponse {
                cose_sign1,
                sealed_entry: vec![],
            }));
        }
        check_rot_id(&req.rot_id)?;
        let sealed = self
            .blocking(move |ca| {
                ca.sign_and_seal_voucher_entry(&req.entry_payload, &req.rot_id, req.entry_index)
            })
            .await?;
        Ok(Response::new(v1::SignVoucherEntryResponse {
            cose_sign1: sealed.cose_sign1,
            sealed_entry: sealed.sealed,
        }))
    }

    async fn unseal_voucher_entry(
        &self,
        request: Request<v1::UnsealVoucherEntryRequest>,
    ) -> Result<Response<v1::UnsealVoucherEntryResponse>, Status> {
        let req = request.into_inner();
        check_rot_id(&req.rot_id)?;
        let cose_sign1 = self
            .blocking(move |ca| {
                ca.unseal_voucher_entry(&req.rot_id, req.entry_index, &req.sealed_entry)
            })
            .await?;
        Ok(Response::new(v1::UnsealVoucherEntryResponse { cose_sign1 }))
    }

    async fn sign_crl(
        &self,
        request: Request<v1::SignCrlRequest>,
    ) -> Result<Response<v1::SignCrlResponse>, Status> {
        let crl = crl_request(request.into_inner())?;
        let crl = self.blocking(move |ca| ca.sign_crl(&crl)).await?;
        Ok(Response::new(v1::SignCrlResponse { crl }))
    }
}
