//! Appends and keyed reads of the custody ledger: [`LedgerApi`], its
//! refusals ([`AppendRefusal`]), and the ledger reached over gRPC
//! ([`RemoteLedger`]) or through its service trait in this process
//! ([`LocalLedger`]). The ledger opened in this process and called directly
//! is [`crate::DirectLedger`].

use std::sync::Arc;

use futures::future::BoxFuture;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;
use trustline_proto::v1::custody_ledger_server::CustodyLedger;

use crate::identity::{methods, RequestIdentity};

/// Why an append was refused by the ledger: the crate's one error type.
///
/// Not `#[non_exhaustive]` on purpose: every caller that appends decides
/// each outcome (a conflict is a duplicate, a quota is overproduction, a
/// failure is a failure), and a new kind of refusal must break the build of
/// every append site until it decides that one too.
#[derive(Debug, thiserror::Error)]
pub enum AppendRefusal {
    /// A unique key is already held by entry `holder_seq`; nothing was
    /// appended.
    #[error("a unique key is already held by ledger entry {holder_seq:?}")]
    Conflict {
        /// The key that collided (`None` if the ledger did not say which).
        key: Option<v1::UniqueKey>,
        /// The entry that holds it.
        holder_seq: Option<u64>,
    },
    /// The quota counter is at its limit; nothing was appended.
    #[error("quota exhausted: {used} of {limit} used")]
    Quota {
        /// Count so far.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// Anything else: the ledger failed or could not be reached; whether
    /// the entry was appended is unknown to the caller, so nothing may be
    /// released on its strength.
    #[error("the ledger failed: {0}")]
    Failed(Status),
}

impl AppendRefusal {
    /// The refusal a ledger service's status stands for.
    pub fn from_status(status: Status) -> Self {
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

/// What the factory and the ownership service need from the custody ledger.
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

/// The ledger service running in this process, called through its trait
/// with the provisioner's own identity, authorized by the role table like
/// any networked call.
pub struct LocalLedger<S> {
    service: Arc<S>,
    identity: RequestIdentity,
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
            let request = self
                .identity
                .request(request, methods::LEDGER_APPEND)
                .map_err(AppendRefusal::Failed)?;
            self.service
                .append(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(AppendRefusal::from_status)
        })
    }

    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async move {
            let r = self
                .service
                .lookup_key(self.identity.request(
                    v1::LookupKeyRequest { key: Some(key) },
                    methods::LEDGER_LOOKUP_KEY,
                )?)
                .await?
                .into_inner();
            Ok(r.found.then_some(r.holder_seq))
        })
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_entry(
                    self.identity
                        .request(v1::GetEntryRequest { seq }, methods::LEDGER_GET_ENTRY)?,
                )
                .await?
                .into_inner()
                .entry)
        })
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .get_quota(
                    self.identity
                        .request(v1::GetQuotaRequest { counter }, methods::LEDGER_GET_QUOTA)?,
                )
                .await?
                .into_inner()
                .used)
        })
    }

    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async move {
            Ok(self
                .service
                .publish_checkpoint(self.identity.request(
                    v1::PublishCheckpointRequest {},
                    methods::LEDGER_PUBLISH_CHECKPOINT,
                )?)
                .await?
                .into_inner())
        })
    }
}

/// An append of `draft` with its constraints.
pub fn append_request(
    draft: v1::EntryDraft,
    unique_keys: Vec<v1::UniqueKey>,
    quota: Option<v1::QuotaUse>,
) -> v1::AppendRequest {
    v1::AppendRequest {
        draft: Some(draft),
        unique_keys,
        quota,
    }
}
