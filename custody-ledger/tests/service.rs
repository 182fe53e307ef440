//! The `CustodyLedger` gRPC service on loopback, called as a client would:
//! every RPC, and refusals with their codes and details.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use common::*;
use custody_ledger::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use custody_ledger::service::{self, LedgerService};
use custody_ledger::{checkpoint, Ledger};
use tokio_stream::StreamExt;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;

fn wire_append(device: u64, limit: u64) -> v1::AppendRequest {
    let (d, keys, quota) = certified(device, "PO-G", limit);
    v1::AppendRequest {
        draft: Some(v1::EntryDraft {
            kind: d.kind as i32,
            rot_id: d.rot_id,
            serial: d.serial,
            site: d.site,
            actor: d.actor,
            order_id: d.order_id,
            payload: d.payload,
        }),
        unique_keys: keys
            .into_iter()
            .map(|k| v1::UniqueKey {
                namespace: k.namespace,
                value: k.value,
            })
            .collect(),
        quota: quota.map(|q| v1::QuotaUse {
            counter: q.counter,
            limit: q.limit,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path()), signer()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LedgerService::new(ledger.clone()).into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let mut c = CustodyLedgerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let key = c
        .get_ledger_key(v1::GetLedgerKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.verifier_key, ledger.ledger_key().verifier_key());
    assert_eq!(
        c.get_checkpoint(v1::GetCheckpointRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let mut leaves = Vec::new();
    for d in 0..5 {
        let r = c.append(wire_append(d, 5)).await.unwrap().into_inner();
        assert_eq!(r.seq, d);
        assert_eq!(r.leaf_hash, leaf_hash(&r.entry).to_vec());
        leaves.push(leaf_hash(&r.entry));
    }
    // Refusals: codes and details.
    let dup = c.append(wire_append(2, 100)).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let conflict = service::append_conflict(&dup).expect("AppendConflict details");
    assert_eq!(conflict.holder_seq, 2);
    assert_eq!(conflict.key.unwrap().namespace, "serial");
    let over = c.append(wire_append(9, 5)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    let q = service::quota_exhausted(&over).expect("QuotaExhausted details");
    assert_eq!((q.used, q.limit), (5, 5));
    let empty = c
        .append(v1::AppendRequest {
            draft: None,
            unique_keys: vec![],
            quota: None,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    let cp = c
        .publish_checkpoint(v1::PublishCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cp.size, 5);
    checkpoint::open(&cp.note, &key.public_key, Some(&key.origin)).unwrap();
    assert_eq!(
        c.get_checkpoint(v1::GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner(),
        cp
    );
    let root: [u8; 32] = cp.root_hash.as_slice().try_into().unwrap();

    let e = c
        .get_entry(v1::GetEntryRequest { seq: 3 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leaf_hash(&e.entry), leaves[3]);
    assert_eq!(
        c.get_entry(v1::GetEntryRequest { seq: 50 })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let all: Vec<_> = c
        .get_entries(v1::GetEntriesRequest { start: 1, end: 0 })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );

    let found = c
        .lookup_key(v1::LookupKeyRequest {
            key: Some(v1::UniqueKey {
                namespace: "serial".into(),
                value: b"SN-000004".to_vec(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.found);
    assert_eq!(found.holder_seq, 4);
    let quota = c
        .get_quota(v1::GetQuotaRequest {
            counter: "order/PO-G".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quota.used, 5);

    let p = c
        .get_inclusion_proof(v1::InclusionProofRequest {
            seq: 2,
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    verify_inclusion(
        &leaves[2],
        &service::inclusion_from_wire(&p).unwrap(),
        &root,
    )
    .unwrap();
    let old_root = ledger.root(3).unwrap();
    let p = c
        .get_consistency_proof(v1::ConsistencyProofRequest {
            from_size: 3,
            to_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    verify_consistency(
        &service::consistency_from_wire(&p).unwrap(),
        &old_root,
        &root,
    )
    .unwrap();
    assert_eq!(
        c.get_inclusion_proof(v1::InclusionProofRequest {
            seq: 9,
            tree_size: 0
        })
        .await
        .unwrap_err()
        .code(),
        Code::OutOfRange
    );

    let h = c
        .get_device_history(v1::DeviceHistoryRequest { rot_id: rot(1) })
        .await
        .unwrap()
        .into_inner();
    let hroot: [u8; 32] = h
        .checkpoint
        .unwrap()
        .root_hash
        .as_slice()
        .try_into()
        .unwrap();
    assert_eq!(h.entries.len(), 1);
    let pe = &h.entries[0];
    verify_inclusion(
        &leaf_hash(&pe.entry.as_ref().unwrap().entry),
        &service::inclusion_from_wire(pe.proof.as_ref().unwrap()).unwrap(),
        &hroot,
    )
    .unwrap();

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    drop(c);
    ledger.close();
}
