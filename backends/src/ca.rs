//! Issuance, key delivery, the CA chain and voucher-entry signing (and
//! sealing) by the CA
//! ([`CaApi`]), reached over gRPC ([`RemoteCa`]) or through its service
//! trait in this process ([`LocalCa`]). Only the CA holds HSM sessions; a
//! caller sees requests and answers, never a key.

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::Status;
use trustline_proto::v1;
use trustline_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use trustline_proto::v1::certificate_authority_server::CertificateAuthority;

use crate::identity::{methods, RequestIdentity};

/// What the factory and the ownership service need from the CA.
pub trait CaApi: Send + Sync + 'static {
    /// Issues a device certificate.
    fn issue(
        &self,
        request: v1::IssueDeviceCertificateRequest,
    ) -> BoxFuture<'_, Result<v1::IssueDeviceCertificateResponse, Status>>;
    /// Makes a device key in the HSM and wraps it to a transport key.
    fn generate_wrapped_key(
        &self,
        request: v1::GenerateWrappedKeyRequest,
    ) -> BoxFuture<'_, Result<v1::WrappedDeviceKey, Status>>;
    /// The CA chain and the OEM voucher key.
    fn get_chain(&self) -> BoxFuture<'_, Result<v1::CertificateChain, Status>>;
    /// Signs a voucher entry with the OEM voucher key.
    fn sign_voucher_entry(&self, entry_payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
    /// Signs an FDO 1.1 voucher entry payload (`OVEntryPayload`) with the
    /// OEM voucher key: the FDO twin of entry 0 (issue 17).
    fn sign_fdo_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
    /// Signs a voucher entry with the OEM voucher key and seals it for entry
    /// `entry_index` of `rot_id`'s voucher under the OEM seal key: returns
    /// the COSE entry and its sealed copy (issue 12 item 10).
    fn sign_sealed_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
        rot_id: String,
        entry_index: u32,
    ) -> BoxFuture<'_, Result<v1::SignVoucherEntryResponse, Status>>;
    /// Opens a sealed voucher entry made for `rot_id`'s entry `entry_index`
    /// (`DATA_LOSS` when it does not open).
    fn unseal_voucher_entry(
        &self,
        rot_id: String,
        entry_index: u32,
        sealed_entry: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
}

/// The CA reached over gRPC.
#[derive(Clone)]
pub struct RemoteCa(CertificateAuthorityClient<Channel>);

impl RemoteCa {
    /// Over an (mTLS) channel to the CA service.
    pub fn new(channel: Channel) -> Self {
        Self(CertificateAuthorityClient::new(channel))
    }
}

impl CaApi for RemoteCa {
    fn issue(
        &self,
        request: v1::IssueDeviceCertificateRequest,
    ) -> BoxFuture<'_, Result<v1::IssueDeviceCertificateResponse, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move { Ok(client.issue_device_certificate(request).await?.into_inner()) })
    }

    fn generate_wrapped_key(
        &self,
        request: v1::GenerateWrappedKeyRequest,
    ) -> BoxFuture<'_, Result<v1::WrappedDeviceKey, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move { Ok(client.generate_wrapped_key(request).await?.into_inner()) })
    }

    fn get_chain(&self) -> BoxFuture<'_, Result<v1::CertificateChain, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move { Ok(client.get_chain(v1::GetChainRequest {}).await?.into_inner()) })
    }

    fn sign_voucher_entry(&self, entry_payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .sign_voucher_entry(v1::SignVoucherEntryRequest {
                    entry_payload,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .cose_sign1)
        })
    }

    fn sign_sealed_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
        rot_id: String,
        entry_index: u32,
    ) -> BoxFuture<'_, Result<v1::SignVoucherEntryResponse, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .sign_voucher_entry(v1::SignVoucherEntryRequest {
                    entry_payload,
                    rot_id,
                    entry_index,
                    fdo: false,
                })
                .await?
                .into_inner())
        })
    }

    fn sign_fdo_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .sign_voucher_entry(v1::SignVoucherEntryRequest {
                    entry_payload,
                    fdo: true,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .cose_sign1)
        })
    }

    fn unseal_voucher_entry(
        &self,
        rot_id: String,
        entry_index: u32,
        sealed_entry: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .unseal_voucher_entry(v1::UnsealVoucherEntryRequest {
                    rot_id,
                    entry_index,
                    sealed_entry,
                })
                .await?
                .into_inner()
                .cose_sign1)
        })
    }
}

/// The CA service running in this process, called through its trait with
/// the provisioner's own identity, authorized by the role table like any
/// networked call.
pub struct LocalCa<S> {
    service: Arc<S>,
    identity: RequestIdentity,
}

impl<S: CertificateAuthority> LocalCa<S> {
    /// Wraps an in-process CA service.
    pub fn new(service: Arc<S>, identity: RequestIdentity) -> Self {
        Self { service, identity }
    }
}

impl<S: CertificateAuthority> CaApi for LocalCa<S> {
    fn issue(
        &self,
        request: v1::IssueDeviceCertificateRequest,
    ) -> BoxFuture<'_, Result<v1::IssueDeviceCertificateResponse, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .issue_device_certificate(self.identity.request(request, methods::CA_ISSUE)?)
                .await?
                .into_inner())
        })
    }

    fn generate_wrapped_key(
        &self,
        request: v1::GenerateWrappedKeyRequest,
    ) -> BoxFuture<'_, Result<v1::WrappedDeviceKey, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .generate_wrapped_key(
                    self.identity
                        .request(request, methods::CA_GENERATE_WRAPPED_KEY)?,
                )
                .await?
                .into_inner())
        })
    }

    fn get_chain(&self) -> BoxFuture<'_, Result<v1::CertificateChain, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_chain(
                    self.identity
                        .request(v1::GetChainRequest {}, methods::CA_GET_CHAIN)?,
                )
                .await?
                .into_inner())
        })
    }

    fn sign_voucher_entry(&self, entry_payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .sign_voucher_entry(self.identity.request(
                    v1::SignVoucherEntryRequest {
                        entry_payload,
                        ..Default::default()
                    },
                    methods::CA_SIGN_VOUCHER_ENTRY,
                )?)
                .await?
                .into_inner()
                .cose_sign1)
        })
    }

    fn sign_sealed_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
        rot_id: String,
        entry_index: u32,
    ) -> BoxFuture<'_, Result<v1::SignVoucherEntryResponse, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .sign_voucher_entry(self.identity.request(
                    v1::SignVoucherEntryRequest {
                        entry_payload,
                        rot_id,
                        entry_index,
                        fdo: false,
                    },
                    methods::CA_SIGN_VOUCHER_ENTRY,
                )?)
                .await?
                .into_inner())
        })
    }

    fn sign_fdo_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .sign_voucher_entry(self.identity.request(
                    v1::SignVoucherEntryRequest {
                        entry_payload,
                        fdo: true,
                        ..Default::default()
                    },
                    methods::CA_SIGN_VOUCHER_ENTRY,
                )?)
                .await?
                .into_inner()
                .cose_sign1)
        })
    }

    fn unseal_voucher_entry(
        &self,
        rot_id: String,
        entry_index: u32,
        sealed_entry: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .unseal_voucher_entry(self.identity.request(
                    v1::UnsealVoucherEntryRequest {
                        rot_id,
                        entry_index,
                        sealed_entry,
                    },
                    methods::CA_UNSEAL_VOUCHER_ENTRY,
                )?)
                .await?
                .into_inner()
                .cose_sign1)
        })
    }
}
