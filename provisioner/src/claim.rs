//! Claimed RoTs, as the later steps of the line need them (DESIGN "factory
//! flow" steps 4–5).
//!
//! The ledger's `CLAIMED` entry (unique key `("claim", rot_id)`) is the
//! truth and survives restarts; [`ClaimBook`] only caches what was read or
//! recorded, in a [`BoundedCache`], so a miss is read from the ledger again.
//! There is no pending-claim state at all: claim nonces are stateless
//! ([`crate::nonce`]). The factory reads a claim with `Factory::claimed`
//! (cache, then ledger) and asks whether one exists with
//! `Factory::claim_holder`.

use std::sync::{Arc, OnceLock};

use backends::{keys, BoundedCache};

use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};
use crate::{payload_of, Factory};

/// A claimed RoT, as the factory needs it for the later steps.
#[derive(Debug)]
pub struct ClaimedRot {
    /// The RoT.
    pub rot_id: String,
    /// Its attestation key (SubjectPublicKeyInfo DER).
    pub attestation_key: Vec<u8>,
    /// The nonce of the claim session: key attestations and proofs of
    /// possession must answer it.
    pub nonce: Vec<u8>,
    /// The order it was claimed under.
    pub order_id: String,
    /// The site it was claimed at.
    pub site: String,
    /// Its transport-key statement, as presented at claim time.
    pub transport_key: Option<v1::SignedStatement>,
    /// The transport key once its statement has been verified.
    pub verified_transport_key: OnceLock<Vec<u8>>,
    /// The `CLAIMED` entry.
    pub claimed_seq: u64,
}

impl ClaimedRot {
    /// The transport key, verified to be attested by the RoT's attestation
    /// key (wrapping a device key to an unattested key would hand it to
    /// whoever supplied that key).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the RoT presented no transport key or names
    /// another RoT; [`Error::BadSignature`] when the statement does not
    /// verify.
    pub fn transport_key(&self) -> Result<&[u8]> {
        if let Some(key) = self.verified_transport_key.get() {
            return Ok(key);
        }
        let signed = self
            .transport_key
            .as_ref()
            .ok_or_else(|| Error::Invalid("the rot presented no transport key".into()))?;
        let stmt: v1::TransportKeyStatement = statement::verify(signed, &self.attestation_key)?;
        if stmt.rot_id != self.rot_id {
            return Err(Error::Invalid(
                "transport key statement names another rot".into(),
            ));
        }
        statement::parse_p256_spki(&stmt.public_key)?;
        Ok(self.verified_transport_key.get_or_init(|| stmt.public_key))
    }
}

/// The cache of claimed RoTs.
#[derive(Debug)]
pub struct ClaimBook {
    claimed: BoundedCache<String, Arc<ClaimedRot>>,
}

impl ClaimBook {
    /// A book caching at most `max_claimed` claimed RoTs.
    pub fn new(max_claimed: usize) -> Self {
        Self {
            claimed: BoundedCache::new(max_claimed),
        }
    }

    /// A cached claimed RoT.
    pub fn claimed(&self, rot_id: &str) -> Option<Arc<ClaimedRot>> {
        self.claimed.get(rot_id)
    }

    /// Caches a claimed RoT.
    pub fn remember(&self, rot: ClaimedRot) -> Arc<ClaimedRot> {
        let rot = Arc::new(rot);
        self.claimed.insert(rot.rot_id.clone(), rot.clone());
        rot
    }
}

impl Factory {
    /// The `CLAIMED` entry of a RoT, if any.
    pub(crate) async fn claim_holder(&self, rot_id: &str) -> Result<Option<u64>> {
        if let Some(c) = self.claims.claimed(rot_id) {
            return Ok(Some(c.claimed_seq));
        }
        self.lookup(keys::CLAIM, rot_id.as_bytes()).await
    }

    /// A claimed RoT, from the cache or the ledger.
    pub(crate) async fn claimed(&self, rot_id: &str) -> Result<Arc<ClaimedRot>> {
        if let Some(c) = self.claims.claimed(rot_id) {
            return Ok(c);
        }
        let Some(seq) = self.lookup(keys::CLAIM, rot_id.as_bytes()).await? else {
            return Err(Error::NotClaimed(rot_id.to_owned()));
        };
        let entry = self.entry(seq).await?;
        let payload: v1::ClaimedPayload = payload_of(&entry, EventKind::Claimed)?;
        let corrupt = |reason: &str| Error::CorruptEntry {
            seq,
            reason: reason.to_owned(),
        };
        let die = payload
            .attestation_chain
            .first()
            .ok_or_else(|| corrupt("claim without attestation chain"))?;
        let attestation_key = spki_of_certificate(die)
            .ok_or_else(|| corrupt("attestation certificate does not parse"))?;
        if trustline_proto::identity::rot_id(&attestation_key) != rot_id {
            return Err(corrupt("claim names another rot"));
        }
        let receipt = payload
            .receipt
            .ok_or_else(|| corrupt("claim without receipt"))?;
        Ok(self.claims.remember(ClaimedRot {
            rot_id: rot_id.to_owned(),
            attestation_key,
            nonce: receipt_nonce(&receipt),
            order_id: entry.order_id,
            site: entry.site,
            transport_key: payload.transport_key,
            verified_transport_key: Default::default(),
            claimed_seq: seq,
        }))
    }
}

/// The SubjectPublicKeyInfo DER of a certificate, if it parses.
pub(crate) fn spki_of_certificate(der: &[u8]) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c.public_key().raw.to_vec())
}

fn receipt_nonce(receipt: &v1::SignedStatement) -> Vec<u8> {
    statement::decode_unverified::<v1::ClaimReceipt>(receipt)
        .map(|r| r.nonce)
        .unwrap_or_default()
}
