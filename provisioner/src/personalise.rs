//! HSM personalisation (DESIGN "factory flow" step 4, second way; 2.4.9.4,
//! 2.4.9.9, 2.4.14.9): for devices with weak entropy the CA makes the
//! identity key in the HSM, wraps it to the RoT's transport key and destroys
//! its copy; the RoT unwraps it.
//!
//! The transport key must be attested — signed by the RoT's attestation key,
//! which chains to an IC-vendor root — or the key would be handed to whoever
//! supplied the transport key. `KEY_DELIVERED` is recorded (with the hash of
//! the wrapped blob) before the wrapped key is returned (invariant 1), and
//! it names the device key (unique key `delivered-key` → SHA-256 of its
//! canonical SPKI) so that `Certify` accepts an HSM-mode key only if this
//! provisioner delivered it to this RoT, in whichever point form the key
//! attestation writes it.

use backends::{append_request, keys, AppendRefusal, BoundedCache};
use sha2::{Digest, Sha256};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};
use crate::orders::Order;
use crate::{draft, key_hash, Actor, Factory};

/// A device key made in the HSM, wrapped to a RoT.
#[derive(Debug, Clone)]
pub struct DeliveredKey {
    /// SubjectPublicKeyInfo DER of the device key.
    pub device_public_key: Vec<u8>,
    /// SubjectPublicKeyInfo DER of the HSM's ephemeral ECDH key.
    pub hsm_ephemeral_public_key: Vec<u8>,
    /// The wrapped private key.
    pub wrapped_key: Vec<u8>,
    /// The key-encryption key derivation used.
    pub kdf: String,
    /// The `KEY_DELIVERED` entry.
    pub ledger_seq: u64,
}

/// Device keys delivered to RoTs, as (rot_id, SHA-256 of the canonical
/// device key) pairs: a [`BoundedCache`] of the ledger's `delivered-key`
/// unique keys, so a miss is answered from the ledger.
#[derive(Debug)]
pub(crate) struct DeliveredKeys {
    pairs: BoundedCache<(String, Vec<u8>), ()>,
}

impl DeliveredKeys {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            pairs: BoundedCache::new(capacity),
        }
    }

    fn remember(&self, rot_id: &str, device_key_hash: Vec<u8>) {
        self.pairs.insert((rot_id.to_owned(), device_key_hash), ());
    }

    fn contains(&self, rot_id: &str, device_key_hash: &[u8]) -> bool {
        self.pairs
            .get(&(rot_id.to_owned(), device_key_hash.to_vec()))
            .is_some()
    }
}

impl Factory {
    /// Makes a device key in the HSM for a claimed RoT and returns it wrapped
    /// to the RoT's attested transport key, after recording `KEY_DELIVERED`.
    ///
    /// # Errors
    /// Order errors; [`Error::NotClaimed`]; [`Error::Invalid`] or
    /// [`Error::BadSignature`] for a missing or unattested transport key;
    /// [`Error::Backend`].
    pub async fn deliver_device_key(
        &self,
        actor: &Actor,
        rot_id: &str,
        order_id: &str,
    ) -> Result<DeliveredKey> {
        let known = self.usable_order(actor, order_id).await?;
        let claim = self.claimed(rot_id).await?;
        if claim.order_id != known.order.id {
            return Err(Error::NotClaimed(rot_id.to_owned()));
        }
        let transport_key = claim.transport_key()?.to_vec();
        // No HSM key for a device the order can no longer certify here
        // (this site's share, invariant 4).
        let share = self.share(actor, &known.order)?;
        let used = self
            .ledger
            .get_quota(known.order.quota_counter())
            .await
            .map_err(Error::ledger)?;
        if used >= share.quantity {
            return Err(self
                .delivery_over_quota(actor, &known.order, rot_id, used, share.quantity)
                .await);
        }
        let wrapped = self
            .ca
            .generate_wrapped_key(v1::GenerateWrappedKeyRequest {
                transport_public_key: transport_key,
                rot_id: rot_id.to_owned(),
            })
            .await
            .map_err(Error::ca)?;
        let payload = v1::KeyDeliveredPayload {
            device_public_key: wrapped.device_public_key.clone(),
            hsm_ephemeral_public_key: wrapped.hsm_ephemeral_public_key.clone(),
            wrapped_key_sha256: Sha256::digest(&wrapped.wrapped_key).to_vec(),
        };
        let entry = draft(
            EventKind::KeyDelivered,
            rot_id,
            "",
            &share.site,
            actor,
            order_id,
            &payload,
        );
        let device_key_hash = key_hash(&wrapped.device_public_key)?;
        let key = keys::unique(keys::DELIVERED_KEY, device_key_hash.clone());
        let seq = match self
            .ledger
            .append(append_request(entry, vec![key], None))
            .await
        {
            Ok(r) => r.seq,
            // A fresh HSM key pair colliding with a recorded one would mean a
            // broken HSM RNG: refuse to hand it out.
            Err(AppendRefusal::Conflict { .. }) => {
                return Err(Error::Config(
                    "the hsm made a device key that was already delivered".into(),
                ))
            }
            Err(AppendRefusal::Quota { .. }) => {
                return Err(Error::Config("quota on a key delivery".into()))
            }
            Err(AppendRefusal::Failed(s)) => return Err(Error::ledger(s)),
        };
        self.delivered.remember(rot_id, device_key_hash);
        Ok(DeliveredKey {
            device_public_key: wrapped.device_public_key,
            hsm_ephemeral_public_key: wrapped.hsm_ephemeral_public_key,
            wrapped_key: wrapped.wrapped_key,
            kdf: wrapped.kdf,
            ledger_seq: seq,
        })
    }

    /// Records a key delivery refused for quota and returns the error.
    async fn delivery_over_quota(
        &self,
        actor: &Actor,
        order: &Order,
        rot_id: &str,
        used: u64,
        limit: u64,
    ) -> Error {
        let payload = v1::RejectedPayload {
            operation: "deliver-key".into(),
            reason: format!("order quota of {limit} reached ({used} certified)"),
            key: None,
            holder_seq: 0,
            evidence: vec![],
        };
        match self
            .record_refusal(EventKind::QuotaRejected, rot_id, "", order, actor, &payload)
            .await
        {
            Ok(_) => Error::QuotaExhausted {
                order_id: order.id.clone(),
                limit,
            },
            Err(e) => e,
        }
    }

    /// Whether the device key whose canonical hash is `device_key_hash`
    /// was delivered by this provisioner to `rot_id`.
    pub(crate) async fn was_delivered(&self, rot_id: &str, device_key_hash: &[u8]) -> Result<bool> {
        if self.delivered.contains(rot_id, device_key_hash) {
            return Ok(true);
        }
        let Some(seq) = self.lookup(keys::DELIVERED_KEY, device_key_hash).await? else {
            return Ok(false);
        };
        let entry = self.entry(seq).await?;
        let delivered = entry.kind == EventKind::KeyDelivered as i32 && entry.rot_id == rot_id;
        if delivered {
            self.delivered.remember(rot_id, device_key_hash.to_vec());
        }
        Ok(delivered)
    }
}
