//! What the ownership service and physical inspection need from the ledger
//! and the CA beyond [`LedgerApi`](crate::LedgerApi) and
//! [`CaApi`](crate::CaApi): a device's proven history (for clone evidence
//! and physical inspection), the latest checkpoint and the ledger key (to
//! verify proofs), and CRL signing.
//!
//! Like the other back ends, each comes remote (the generated gRPC client
//! over an mTLS channel) or local (the service implementation in this
//! process, called through its trait with the provisioner's own identity,
//! authorized by the role table), so their users never see a ledger file or
//! an HSM session.

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::Status;
use trustline_proto::v1;
use trustline_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use trustline_proto::v1::certificate_authority_server::CertificateAuthority;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_proto::v1::custody_ledger_server::CustodyLedger;

use crate::identity::{methods, RequestIdentity};

/// Largest ledger message accepted from a remote ledger (a device history
/// with proofs is far smaller; this only bounds a misbehaving peer).
const MAX_LEDGER_MESSAGE: usize = 16 * 1024 * 1024;

/// Ledger reads that carry proofs.
pub trait LedgerReads: Send + Sync + 'static {
    /// Every entry of one device, each with an inclusion proof against one
    /// checkpoint.
    fn device_history(&self, rot_id: String) -> BoxFuture<'_, Result<v1::DeviceHistory, Status>>;
    /// The latest signed checkpoint.
    fn checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>>;
    /// The ledger's checkpoint-signing public key.
    fn ledger_key(&self) -> BoxFuture<'_, Result<v1::LedgerKey, Status>>;
}

/// CRL signing by the CA (site intermediate key, in the HSM).
pub trait CrlApi: Send + Sync + 'static {
    /// Signs a CRL; returns its DER.
    fn sign_crl(&self, request: v1::SignCrlRequest) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
}

/// The ledger's proven reads over gRPC.
#[derive(Clone)]
pub struct RemoteLedgerReads(CustodyLedgerClient<Channel>);

impl RemoteLedgerReads {
    /// Over an (mTLS) channel to the ledger service.
    pub fn new(channel: Channel) -> Self {
        Self(CustodyLedgerClient::new(channel).max_decoding_message_size(MAX_LEDGER_MESSAGE))
    }
}

impl LedgerReads for RemoteLedgerReads {
    fn device_history(&self, rot_id: String) -> BoxFuture<'_, Result<v1::DeviceHistory, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .get_device_history(v1::DeviceHistoryRequest { rot_id })
                .await?
                .into_inner())
        })
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .get_checkpoint(v1::GetCheckpointRequest {})
                .await?
                .into_inner())
        })
    }

    fn ledger_key(&self) -> BoxFuture<'_, Result<v1::LedgerKey, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .get_ledger_key(v1::GetLedgerKeyRequest {})
                .await?
                .into_inner())
        })
    }
}

/// The ledger service in this process, called through its trait.
pub struct LocalLedgerReads<S> {
    service: Arc<S>,
    identity: RequestIdentity,
}

impl<S: CustodyLedger> LocalLedgerReads<S> {
    /// Wraps an in-process ledger service; `identity` is the provisioner's
    /// own, as the ledger sees it.
    pub fn new(service: Arc<S>, identity: RequestIdentity) -> Self {
        Self { service, identity }
    }
}

impl<S: CustodyLedger> LedgerReads for LocalLedgerReads<S> {
    fn device_history(&self, rot_id: String) -> BoxFuture<'_, Result<v1::DeviceHistory, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_device_history(self.identity.request(
                    v1::DeviceHistoryRequest { rot_id },
                    methods::LEDGER_DEVICE_HISTORY,
                )?)
                .await?
                .into_inner())
        })
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_checkpoint(
                    self.identity
                        .request(v1::GetCheckpointRequest {}, methods::LEDGER_GET_CHECKPOINT)?,
                )
                .await?
                .into_inner())
        })
    }

    fn ledger_key(&self) -> BoxFuture<'_, Result<v1::LedgerKey, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_ledger_key(
                    self.identity
                        .request(v1::GetLedgerKeyRequest {}, methods::LEDGER_GET_LEDGER_KEY)?,
                )
                .await?
                .into_inner())
        })
    }
}

/// CRL signing over gRPC.
#[derive(Clone)]
pub struct RemoteCrl(CertificateAuthorityClient<Channel>);

impl RemoteCrl {
    /// Over an (mTLS) channel to the CA service.
    pub fn new(channel: Channel) -> Self {
        Self(CertificateAuthorityClient::new(channel))
    }
}

impl CrlApi for RemoteCrl {
    fn sign_crl(&self, request: v1::SignCrlRequest) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move { Ok(client.sign_crl(request).await?.into_inner().crl) })
    }
}

/// The CA service in this process, called through its trait.
pub struct LocalCrl<S> {
    service: Arc<S>,
    identity: RequestIdentity,
}

impl<S: CertificateAuthority> LocalCrl<S> {
    /// Wraps an in-process CA service; `identity` is the provisioner's own,
    /// as the CA sees it.
    pub fn new(service: Arc<S>, identity: RequestIdentity) -> Self {
        Self { service, identity }
    }
}

impl<S: CertificateAuthority> CrlApi for LocalCrl<S> {
    fn sign_crl(&self, request: v1::SignCrlRequest) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .sign_crl(self.identity.request(request, methods::CA_SIGN_CRL)?)
                .await?
                .into_inner()
                .crl)
        })
    }
}
