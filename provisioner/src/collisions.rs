//! A `Certify` that collides with what the ledger holds (invariants 2 and
//! 4): a retry of this very device, key and serial gets its stored result
//! (`replayed = true`, rebuilt from the `CERTIFIED` entry when it is no
//! longer cached); any other collision is a duplicate, recorded as
//! `DUPLICATE_REJECTED` and refused with `ALREADY_EXISTS`; an exhausted
//! quota is recorded as `QUOTA_REJECTED` and refused with
//! `RESOURCE_EXHAUSTED`. Nothing is released in either refusal.

use backends::keys;
use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::certify::{Certified, CertifyInput, Checked};
use crate::error::{Error, Result};
use crate::orders::Order;
use crate::{key_hash, payload_of, voucher, Actor, Factory};

impl Factory {
    /// A collision with entry `holder_seq` under `namespace`: the same
    /// device, serial and key is a retry (replayed); anything else is a
    /// duplicate, recorded and refused.
    pub(crate) async fn resolve_conflict(
        &self,
        actor: &Actor,
        order: &Order,
        input: &CertifyInput,
        checked: &Checked,
        namespace: &'static str,
        holder_seq: u64,
    ) -> Result<Certified> {
        let holder = self.entry(holder_seq).await?;
        if holder.kind == EventKind::Certified as i32
            && holder.rot_id == input.rot_id
            && holder.serial == input.serial
        {
            let payload: v1::CertifiedPayload = payload_of(&holder, EventKind::Certified)?;
            if key_hash(&payload.device_public_key).ok().as_ref() == Some(&checked.device_key_hash)
            {
                return self.replay(&holder, payload);
            }
        }
        Err(self
            .duplicate(actor, order, input, namespace, holder_seq)
            .await)
    }

    /// The stored result of a certification, rebuilt from its entry.
    fn replay(&self, holder: &v1::LedgerEntry, payload: v1::CertifiedPayload) -> Result<Certified> {
        if let Some(hit) = self.certified.get(&holder.rot_id) {
            if hit.result.ledger_seq == holder.seq {
                return Ok(Certified {
                    replayed: true,
                    ..hit.result.clone()
                });
            }
        }
        let chain = vec![
            payload.certificate,
            self.chain.intermediate.clone(),
            self.chain.root.clone(),
        ];
        let voucher = voucher::manufacturer(
            &holder.rot_id,
            &holder.serial,
            &chain,
            &self.chain.voucher_public_key,
        )?;
        // Entries written before issue 12 may name a first owner signed at
        // Certify: their recorded hash covers entry 0, which was never stored
        // (invariant 6), so only the manufacturer voucher can go back.
        if payload.first_owner.is_none()
            && Sha256::digest(&voucher)[..] != payload.voucher_sha256[..]
        {
            return Err(Error::CorruptEntry {
                seq: holder.seq,
                reason: "the rebuilt voucher does not match the recorded hash".into(),
            });
        }
        Ok(Certified {
            chain,
            label: payload.label,
            voucher,
            ledger_seq: holder.seq,
            replayed: true,
        })
    }

    /// Records `DUPLICATE_REJECTED` and returns the error to send.
    pub(crate) async fn duplicate(
        &self,
        actor: &Actor,
        order: &Order,
        input: &CertifyInput,
        namespace: &'static str,
        holder_seq: u64,
    ) -> Error {
        let key_value = match namespace {
            keys::SERIAL => input.serial.as_bytes().to_vec(),
            keys::ROT => input.rot_id.as_bytes().to_vec(),
            _ => decode_device_key_hash(&input.key_attestation),
        };
        let payload = v1::RejectedPayload {
            operation: "certify".into(),
            reason: format!("{namespace} is already certified"),
            key: Some(keys::unique(namespace, key_value)),
            holder_seq,
            evidence: vec![input.key_attestation.encode_to_vec()],
        };
        match self
            .record_refusal(
                EventKind::DuplicateRejected,
                &input.rot_id,
                &input.serial,
                order,
                actor,
                &payload,
            )
            .await
        {
            Ok(_) => Error::Duplicate {
                namespace: namespace.to_owned(),
                holder_seq,
            },
            Err(e) => e,
        }
    }

    /// Records `QUOTA_REJECTED` and returns the error to send; `limit` is
    /// this site's share of the order (2.4.14.22, invariant 4).
    pub(crate) async fn quota_refused(
        &self,
        actor: &Actor,
        order: &Order,
        input: &CertifyInput,
        used: u64,
        limit: u64,
    ) -> Error {
        let payload = v1::RejectedPayload {
            operation: "certify".into(),
            reason: format!("order quota of {limit} reached ({used} certified)"),
            key: None,
            holder_seq: 0,
            evidence: vec![],
        };
        match self
            .record_refusal(
                EventKind::QuotaRejected,
                &input.rot_id,
                &input.serial,
                order,
                actor,
                &payload,
            )
            .await
        {
            Ok(_) => Error::QuotaExhausted {
                order_id: order.id.clone(),
                limit,
            },
            Err(e) => e,
        }
    }

    /// Which unique key collided, when the ledger did not say.
    pub(crate) async fn find_holder(
        &self,
        input: &CertifyInput,
        device_key_hash: &[u8],
    ) -> Result<(&'static str, u64)> {
        for (namespace, value) in [
            (keys::ROT, input.rot_id.as_bytes()),
            (keys::SERIAL, input.serial.as_bytes()),
            (keys::DEVICE_KEY, device_key_hash),
        ] {
            if let Some(seq) = self.lookup(namespace, value).await? {
                return Ok((namespace, seq));
            }
        }
        Err(Error::ledger(tonic::Status::internal(
            "the ledger reported a conflict but holds none of the keys",
        )))
    }
}

pub(crate) fn namespace_name(namespace: &str) -> &'static str {
    match namespace {
        keys::SERIAL => keys::SERIAL,
        keys::ROT => keys::ROT,
        keys::FDO_GUID => keys::FDO_GUID,
        _ => keys::DEVICE_KEY,
    }
}

/// The canonical device-key hash a (verified) key attestation names.
fn decode_device_key_hash(ka: &v1::SignedStatement) -> Vec<u8> {
    statement::decode_unverified::<v1::KeyAttestation>(ka)
        .ok()
        .and_then(|k| key_hash(&k.device_public_key).ok())
        .unwrap_or_default()
}
