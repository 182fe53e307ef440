//! How the factory reaches the CA and the custody ledger: over gRPC when the
//! services run apart, in-process when `trustline serve all` runs them
//! together.
//!
//! Remote back ends speak the generated contract through the generated
//! client. In-process, the CA is called through its service trait (no
//! encoding, no socket, the same checks the service makes), and the ledger
//! through `custody_ledger::Ledger`'s own async append — the hot path of
//! every device, with no protobuf round trip. The factory sees only
//! [`LedgerApi`] and [`CaApi`], and never an HSM session or a ledger file
//! (ARCHITECTURE.md).

use std::sync::Arc;

use futures::future::BoxFuture;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustline_proto::v1;
use trustline_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use trustline_proto::v1::certificate_authority_server::CertificateAuthority;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_proto::v1::custody_ledger_server::CustodyLedger;

/// Why an append was refused by the ledger.
#[derive(Debug)]
pub enum AppendRefusal {
    /// A unique key is already held by entry `holder_seq`.
    Conflict {
        /// The key that collided (`None` if the ledger did not say which).
        key: Option<v1::UniqueKey>,
        /// The entry that holds it.
        holder_seq: Option<u64>,
    },
    /// The quota counter is at its limit.
    Quota {
        /// Count so far.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// Anything else: the ledger failed or could not be reached.
    Failed(Status),
}

impl AppendRefusal {
    fn from_status(status: Status) -> Self {
        match status.code() {
            Code::AlreadyExists => {
                let conflict = v1::AppendConflict::decode(status.details()).ok();
                AppendRefusal::Conflict {
                    key: conflict.as_ref().and_then(|c| c.key.clone()),
                    holder_seq: conflict.map(|c| c.holder_seq),
                }
            }
            Code::ResourceExhausted => {
                match v1::QuotaExhausted::decode(status.details()) {
                    Ok(q) => AppendRefusal::Quota {
                        used: q.used,
                        limit: q.limit,
                    },
                    // A quota refusal without details still is one (the
                    // limit is the order's quantity, which the caller knows).
                    Err(_) => AppendRefusal::Quota { used: 0, limit: 0 },
                }
            }
            _ => AppendRefusal::Failed(status),
        }
    }
}

/// What the factory needs from the custody ledger.
pub trait LedgerApi: Send + Sync + 'static {
    /// Appends one entry with its constraints; resolves once it is durable.
    fn append(
        &self,
        request: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>>;
    /// The entry holding a unique key, if any.
    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>>;
    /// The exact stored bytes of one entry.
    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
    /// A quota counter's current value.
    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>>;
    /// Signs and publishes a checkpoint covering every entry so far.
    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>>;
}

/// What the factory needs from the CA.
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
}

/// The ledger reached over gRPC.
#[derive(Clone)]
pub struct RemoteLedger(CustodyLedgerClient<Channel>);

impl RemoteLedger {
    /// Over an (mTLS) channel to the ledger service.
    pub fn new(channel: Channel) -> Self {
        Self(CustodyLedgerClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }
}

impl LedgerApi for RemoteLedger {
    fn append(
        &self,
        request: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            client
                .append(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(AppendRefusal::from_status)
        })
    }

    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            let r = client
                .lookup_key(v1::LookupKeyRequest { key: Some(key) })
                .await?
                .into_inner();
            Ok(r.found.then_some(r.holder_seq))
        })
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .get_entry(v1::GetEntryRequest { seq })
                .await?
                .into_inner()
                .entry)
        })
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .get_quota(v1::GetQuotaRequest { counter })
                .await?
                .into_inner()
                .used)
        })
    }

    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            Ok(client
                .publish_checkpoint(v1::PublishCheckpointRequest {})
                .await?
                .into_inner())
        })
    }
}

/// The ledger service running in this process, called through its trait.
pub struct LocalLedger<S> {
    service: Arc<S>,
    identity: RequestIdentity,
}

/// The caller the in-process services see: the transport layer puts a
/// verified `Caller` into every networked request, so in-process requests
/// carry one too (the provisioner's own identity), never none.
#[derive(Clone)]
pub struct RequestIdentity(transport::Caller);

impl RequestIdentity {
    /// The provisioner's own identity, as the CA and ledger see it.
    pub fn new(caller: transport::Caller) -> Self {
        Self(caller)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        transport::internal_request(message, self.0.clone())
    }
}

impl<S: CustodyLedger> LocalLedger<S> {
    /// Wraps an in-process ledger service.
    pub fn new(service: Arc<S>, identity: RequestIdentity) -> Self {
        Self { service, identity }
    }
}

impl<S: CustodyLedger> LedgerApi for LocalLedger<S> {
    fn append(
        &self,
        request: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>> {
        Box::pin(async move {
            self.service
                .append(self.identity.request(request))
                .await
                .map(tonic::Response::into_inner)
                .map_err(AppendRefusal::from_status)
        })
    }

    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async move {
            let r = self
                .service
                .lookup_key(
                    self.identity
                        .request(v1::LookupKeyRequest { key: Some(key) }),
                )
                .await?
                .into_inner();
            Ok(r.found.then_some(r.holder_seq))
        })
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_entry(self.identity.request(v1::GetEntryRequest { seq }))
                .await?
                .into_inner()
                .entry)
        })
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_quota(self.identity.request(v1::GetQuotaRequest { counter }))
                .await?
                .into_inner()
                .used)
        })
    }

    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .publish_checkpoint(self.identity.request(v1::PublishCheckpointRequest {}))
                .await?
                .into_inner())
        })
    }
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
                .sign_voucher_entry(v1::SignVoucherEntryRequest { entry_payload })
                .await?
                .into_inner()
                .cose_sign1)
        })
    }
}

/// The CA service running in this process, called through its trait.
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
                .issue_device_certificate(self.identity.request(request))
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
                .generate_wrapped_key(self.identity.request(request))
                .await?
                .into_inner())
        })
    }

    fn get_chain(&self) -> BoxFuture<'_, Result<v1::CertificateChain, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_chain(self.identity.request(v1::GetChainRequest {}))
                .await?
                .into_inner())
        })
    }

    fn sign_voucher_entry(&self, entry_payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .sign_voucher_entry(
                    self.identity
                        .request(v1::SignVoucherEntryRequest { entry_payload }),
                )
                .await?
                .into_inner()
                .cose_sign1)
        })
    }
}

/// The ledger in this process, called directly.
pub struct DirectLedger(custody_ledger::Ledger);

impl DirectLedger {
    /// Wraps an open ledger.
    pub fn new(ledger: custody_ledger::Ledger) -> Self {
        Self(ledger)
    }
}

fn ledger_status(e: custody_ledger::Error) -> Status {
    use custody_ledger::Error as E;
    match e {
        E::NotFound(m) => Status::not_found(m),
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::OutOfRange(m) => Status::out_of_range(m),
        E::Stopped(_) | E::Closed => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl LedgerApi for DirectLedger {
    fn append(
        &self,
        request: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>> {
        Box::pin(async move {
            let d = request.draft.unwrap_or_default();
            let draft = custody_ledger::Draft {
                kind: v1::EventKind::try_from(d.kind).unwrap_or_default(),
                rot_id: d.rot_id,
                serial: d.serial,
                site: d.site,
                actor: d.actor,
                order_id: d.order_id,
                payload: d.payload,
            };
            let keys = request
                .unique_keys
                .into_iter()
                .map(|k| custody_ledger::UniqueKey::new(k.namespace, k.value))
                .collect();
            let quota = request
                .quota
                .map(|q| custody_ledger::QuotaUse::new(q.counter, q.limit));
            match self.0.append(draft, keys, quota).await {
                Ok(a) => Ok(v1::AppendResponse {
                    seq: a.seq,
                    entry: a.entry,
                    leaf_hash: a.leaf_hash.to_vec(),
                }),
                Err(custody_ledger::Error::Conflict { key, holder_seq }) => {
                    Err(AppendRefusal::Conflict {
                        key: Some(v1::UniqueKey {
                            namespace: key.namespace,
                            value: key.value,
                        }),
                        holder_seq: Some(holder_seq),
                    })
                }
                Err(custody_ledger::Error::QuotaExhausted { used, limit, .. }) => {
                    Err(AppendRefusal::Quota { used, limit })
                }
                Err(e) => Err(AppendRefusal::Failed(ledger_status(e))),
            }
        })
    }

    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async move {
            self.0
                .lookup_key(&custody_ledger::UniqueKey::new(key.namespace, key.value))
                .map_err(ledger_status)
        })
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move { self.0.get_entry(seq).map_err(ledger_status) })
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move { self.0.quota(&counter).map_err(ledger_status) })
    }

    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async move {
            let c = self.0.publish_checkpoint().await.map_err(ledger_status)?;
            Ok(v1::Checkpoint {
                note: c.note,
                size: c.size,
                root_hash: c.root.to_vec(),
            })
        })
    }
}
