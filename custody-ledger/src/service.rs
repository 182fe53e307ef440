//! The `trustline.v1.CustodyLedger` gRPC service over any
//! [`LedgerEngine`] (the file engine, [`Ledger`], by default).
//!
//! Generated protobuf types stop here: requests are converted to the
//! ledger's domain types and answers back. Authentication and
//! authorization are done in front of this service by the `transport`
//! crate; this module knows nothing about callers.
//!
//! Errors map onto `tonic::Status` in one place, the `From<Error>` impl
//! below. Refusals carry their details as the encoded message in the
//! status details: `ALREADY_EXISTS` carries a `trustline.v1.AppendConflict`,
//! `RESOURCE_EXHAUSTED` a `trustline.v1.QuotaExhausted`; clients decode them
//! with [`append_conflict`] and [`quota_exhausted`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_server::{CustodyLedger, CustodyLedgerServer};

use crate::checkpoint::SignedCheckpoint;
use crate::engine::LedgerEngine;
use crate::entry::{Constraints, Draft, EventKind, QuotaUse, UniqueKey};
use crate::error::Error;
use crate::ledger::Ledger;
use crate::merkle::{ConsistencyProof, InclusionProof};

/// Entries sent per read in `GetEntries`.
const STREAM_CHUNK: usize = 256;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Conflict { key, holder_seq } => {
                let details = v1::AppendConflict {
                    key: Some(v1::UniqueKey {
                        namespace: key.namespace,
                        value: key.value,
                    }),
                    holder_seq,
                };
                Status::with_details(Code::AlreadyExists, message, details.encode_to_vec().into())
            }
            Error::QuotaExhausted {
                counter,
                used,
                limit,
            } => {
                let details = v1::QuotaExhausted {
                    counter,
                    used,
                    limit,
                };
                Status::with_details(
                    Code::ResourceExhausted,
                    message,
                    details.encode_to_vec().into(),
                )
            }
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            Error::NotFound(_) => Status::not_found(message),
            Error::Stopped(_) | Error::Closed | Error::Signer(_) | Error::Unavailable(_) => {
                Status::unavailable(message)
            }
            Error::Corrupt { .. } => Status::data_loss(message),
            Error::KeyMismatch { .. } => Status::failed_precondition(message),
            Error::Io { .. } | Error::Index(_) | Error::Checkpoint(_) | Error::Proof(_) => {
                Status::internal(message)
            }
        }
    }
}

/// The conflict an `ALREADY_EXISTS` status from `Append` carries.
pub fn append_conflict(status: &Status) -> Option<v1::AppendConflict> {
    if status.code() != Code::AlreadyExists {
        return None;
    }
    v1::AppendConflict::decode(status.details()).ok()
}

/// The exhausted quota a `RESOURCE_EXHAUSTED` status from `Append` carries.
pub fn quota_exhausted(status: &Status) -> Option<v1::QuotaExhausted> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    v1::QuotaExhausted::decode(status.details()).ok()
}

/// Converts a wire draft to the domain's.
fn draft_from_wire(d: v1::EntryDraft) -> Result<Draft, Error> {
    let kind = EventKind::try_from(d.kind)
        .map_err(|_| Error::InvalidArgument(format!("unknown event kind {}", d.kind)))?;
    Ok(Draft {
        kind,
        rot_id: d.rot_id,
        serial: d.serial,
        site: d.site,
        actor: d.actor,
        order_id: d.order_id,
        payload: d.payload,
    })
}

fn key_from_wire(k: v1::UniqueKey) -> UniqueKey {
    UniqueKey {
        namespace: k.namespace,
        value: k.value,
    }
}

/// A checkpoint on the wire.
pub fn checkpoint_to_wire(c: &SignedCheckpoint) -> v1::Checkpoint {
    v1::Checkpoint {
        note: c.note.clone(),
        size: c.size,
        root_hash: c.root.to_vec(),
    }
}

/// An inclusion proof on the wire.
pub fn inclusion_to_wire(p: &InclusionProof) -> v1::InclusionProof {
    v1::InclusionProof {
        leaf_index: p.leaf_index,
        tree_size: p.tree_size,
        path: p.path.iter().map(|h| h.to_vec()).collect(),
    }
}

/// A consistency proof on the wire.
pub fn consistency_to_wire(p: &ConsistencyProof) -> v1::ConsistencyProof {
    v1::ConsistencyProof {
        from_size: p.from_size,
        to_size: p.to_size,
        path: p.path.iter().map(|h| h.to_vec()).collect(),
    }
}

/// An inclusion proof from the wire, for clients that verify it.
///
/// # Errors
/// [`Error::Proof`] when a path element is not 32 bytes.
pub fn inclusion_from_wire(p: &v1::InclusionProof) -> Result<InclusionProof, Error> {
    Ok(InclusionProof {
        leaf_index: p.leaf_index,
        tree_size: p.tree_size,
        path: hashes_from_wire(&p.path)?,
    })
}

/// A consistency proof from the wire, for clients that verify it.
///
/// # Errors
/// [`Error::Proof`] when a path element is not 32 bytes.
pub fn consistency_from_wire(p: &v1::ConsistencyProof) -> Result<ConsistencyProof, Error> {
    Ok(ConsistencyProof {
        from_size: p.from_size,
        to_size: p.to_size,
        path: hashes_from_wire(&p.path)?,
    })
}

fn hashes_from_wire(path: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, Error> {
    path.iter()
        .map(|h| {
            h.as_slice()
                .try_into()
                .map_err(|_| Error::Proof("a proof hash is not 32 bytes".into()))
        })
        .collect()
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct LedgerService {
    engine: Arc<dyn LedgerEngine>,
}

impl LedgerService {
    /// A service over the file engine `ledger`.
    pub fn new(ledger: Ledger) -> Self {
        Self::with_engine(Arc::new(ledger))
    }

    /// A service over any engine.
    pub fn with_engine(engine: Arc<dyn LedgerEngine>) -> Self {
        Self { engine }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> CustodyLedgerServer<Self> {
        CustodyLedgerServer::new(self)
    }
}

#[tonic::async_trait]
impl CustodyLedger for LedgerService {
    async fn append(
        &self,
        request: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        let r = request.into_inner();
        let draft =
            draft_from_wire(r.draft.ok_or_else(|| {
                Status::invalid_argument("invalid request: the draft is missing")
            })?)?;
        let keys = r.unique_keys.into_iter().map(key_from_wire).collect();
        let quota = r.quota.map(|q| QuotaUse {
            counter: q.counter,
            limit: q.limit,
        });
        let a = self
            .engine
            .append(
                draft,
                Constraints {
                    unique_keys: keys,
                    quota,
                },
            )
            .await?;
        Ok(Response::new(v1::AppendResponse {
            seq: a.seq,
            entry: a.entry,
            leaf_hash: a.leaf_hash.to_vec(),
        }))
    }

    async fn get_checkpoint(
        &self,
        _request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::Checkpoint>, Status> {
        let c = self
            .engine
            .latest_checkpoint()
            .ok_or_else(|| Status::not_found("not found: no checkpoint has been published yet"))?;
        Ok(Response::new(checkpoint_to_wire(&c)))
    }

    async fn publish_checkpoint(
        &self,
        _request: Request<v1::PublishCheckpointRequest>,
    ) -> Result<Response<v1::Checkpoint>, Status> {
        let c = self.engine.publish_checkpoint().await?;
        Ok(Response::new(checkpoint_to_wire(&c)))
    }

    async fn get_entry(
        &self,
        request: Request<v1::GetEntryRequest>,
    ) -> Result<Response<v1::StoredEntry>, Status> {
        let seq = request.into_inner().seq;
        let entry = self.engine.entry(seq).await?;
        Ok(Response::new(v1::StoredEntry { seq, entry }))
    }

    type GetEntriesStream =
        Pin<Box<dyn Stream<Item = Result<v1::StoredEntry, Status>> + Send + 'static>>;

    async fn get_entries(
        &self,
        request: Request<v1::GetEntriesRequest>,
    ) -> Result<Response<Self::GetEntriesStream>, Status> {
        let r = request.into_inner();
        let size = self.engine.size();
        let end = if r.end == 0 { size } else { r.end };
        if r.start > end || end > size {
            return Err(Error::OutOfRange(format!(
                "range [{}, {end}) is not within the ledger's {size} entries",
                r.start
            ))
            .into());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let engine = self.engine.clone();
        let start = r.start;
        tokio::spawn(async move {
            let mut next = start;
            while next < end {
                let chunk = engine
                    .entries(next, end, STREAM_CHUNK)
                    .await
                    .map_err(Status::from);
                match chunk {
                    Ok(entries) if !entries.is_empty() => {
                        next += entries.len() as u64;
                        for e in entries {
                            if tx
                                .send(Ok(v1::StoredEntry {
                                    seq: e.seq,
                                    entry: e.entry,
                                }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Ok(_) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lookup_key(
        &self,
        request: Request<v1::LookupKeyRequest>,
    ) -> Result<Response<v1::LookupKeyResponse>, Status> {
        let key = key_from_wire(
            request
                .into_inner()
                .key
                .ok_or_else(|| Status::invalid_argument("invalid request: the key is missing"))?,
        );
        let holder = self.engine.lookup_key(key).await?;
        Ok(Response::new(v1::LookupKeyResponse {
            found: holder.is_some(),
            holder_seq: holder.unwrap_or(0),
        }))
    }

    async fn get_quota(
        &self,
        request: Request<v1::GetQuotaRequest>,
    ) -> Result<Response<v1::QuotaValue>, Status> {
        let counter = request.into_inner().counter;
        let used = self.engine.quota(counter.clone()).await?;
        Ok(Response::new(v1::QuotaValue { counter, used }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<v1::InclusionProofRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        let r = request.into_inner();
        let p = self.engine.inclusion_proof(r.seq, r.tree_size).await?;
        Ok(Response::new(inclusion_to_wire(&p)))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<v1::ConsistencyProofRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        let r = request.into_inner();
        let p = self
            .engine
            .consistency_proof(r.from_size, r.to_size)
            .await?;
        Ok(Response::new(consistency_to_wire(&p)))
    }

    async fn get_device_history(
        &self,
        request: Request<v1::DeviceHistoryRequest>,
    ) -> Result<Response<v1::DeviceHistory>, Status> {
        let rot_id = request.into_inner().rot_id;
        let h = self.engine.device_history(rot_id).await?;
        Ok(Response::new(v1::DeviceHistory {
            checkpoint: Some(checkpoint_to_wire(&h.checkpoint)),
            entries: h
                .entries
                .iter()
                .map(|p| v1::ProvenEntry {
                    entry: Some(v1::StoredEntry {
                        seq: p.entry.seq,
                        entry: p.entry.entry.clone(),
                    }),
                    proof: Some(inclusion_to_wire(&p.proof)),
                })
                .collect(),
        }))
    }

    async fn get_ledger_key(
        &self,
        _request: Request<v1::GetLedgerKeyRequest>,
    ) -> Result<Response<v1::LedgerKey>, Status> {
        let k = self.engine.ledger_key();
        Ok(Response::new(v1::LedgerKey {
            origin: k.origin().to_string(),
            key_name: k.origin().to_string(),
            public_key: k.spki().to_vec(),
            verifier_key: k.verifier_key(),
        }))
    }
}
