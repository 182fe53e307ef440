//! The ledger opened in this process, called directly ([`DirectLedger`]):
//! the hot path of every device in `trustline serve all`, with no protobuf
//! round trip and no service layer. It is the ledger's owner calling its own
//! ledger, so no role table applies; the ledger's gRPC service, on the same
//! ledger, still answers only what the table allows. It works over any
//! ledger engine (files, PostgreSQL).

use std::sync::Arc;

use custody_ledger::LedgerEngine;
use futures::future::BoxFuture;
use tonic::Status;
use trustline_proto::v1;

use crate::ledger::{AppendRefusal, LedgerApi};

/// The ledger in this process, called directly.
pub struct DirectLedger(Arc<dyn LedgerEngine>);

impl DirectLedger {
    /// Wraps an open file ledger.
    pub fn new(ledger: custody_ledger::Ledger) -> Self {
        Self(Arc::new(ledger))
    }

    /// Wraps any open ledger engine.
    pub fn with_engine(engine: Arc<dyn LedgerEngine>) -> Self {
        Self(engine)
    }
}

fn ledger_status(e: custody_ledger::Error) -> Status {
    use custody_ledger::Error as E;
    match e {
        E::NotFound(m) => Status::not_found(m),
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::OutOfRange(m) => Status::out_of_range(m),
        E::Stopped(_) | E::Closed | E::Unavailable(_) => Status::unavailable(e.to_string()),
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
            let constraints = custody_ledger::Constraints {
                unique_keys: keys,
                quota,
            };
            match self.0.append(draft, constraints).await {
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
                .lookup_key(custody_ledger::UniqueKey::new(key.namespace, key.value))
                .await
                .map_err(ledger_status)
        })
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move { self.0.entry(seq).await.map_err(ledger_status) })
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move { self.0.quota(counter).await.map_err(ledger_status) })
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
