//! The claim flow on the line (DESIGN "factory flow" steps 2–3; invariant
//! 7): `BeginClaim` verifies a blank RoT's vendor chain and opens a claim
//! session, `CompleteClaim` verifies its receipt and records `CLAIMED`. The
//! sessions and the cache of claimed RoTs are [`crate::claim`]'s.

use std::sync::Arc;

use backends::{append_request, keys, now_ms, AppendRefusal};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::claim::{ClaimedRot, PendingClaim};
use crate::error::{Error, Result};
use crate::order_book::check_usable;
use crate::orders::Order;
use crate::vendors;
use crate::{draft, payload_of, Actor, Factory};

/// The answer to `BeginClaim`.
#[derive(Debug, Clone)]
pub struct ClaimChallenge {
    /// The RoT.
    pub rot_id: String,
    /// The single-use nonce.
    pub nonce: Vec<u8>,
    /// The anchor to install.
    pub anchor: Vec<u8>,
    /// When the nonce expires, Unix ms.
    pub expires_at_ms: i64,
}

impl Factory {
    /// Verifies a blank RoT and opens a claim session (invariant 7).
    ///
    /// # Errors
    /// Order errors; [`Error::Counterfeit`] (recorded as
    /// `COUNTERFEIT_REJECTED`); [`Error::VendorNotAllowed`];
    /// [`Error::AlreadyClaimed`] (recorded as `DUPLICATE_REJECTED`);
    /// [`Error::Busy`]; [`Error::Backend`].
    pub async fn begin_claim(
        &self,
        actor: &Actor,
        order_id: &str,
        attestation: &v1::RotAttestation,
    ) -> Result<ClaimChallenge> {
        let known = self.usable_order(actor, order_id).await?;
        let now = now_ms();
        let verified = self.vendors.verify(&attestation.cert_chain, now);
        let rot = match verified {
            Ok(v) => v,
            Err(e) => {
                let payload = v1::RejectedPayload {
                    operation: "claim".into(),
                    reason: e.to_string(),
                    key: None,
                    holder_seq: 0,
                    evidence: attestation
                        .cert_chain
                        .iter()
                        .take(vendors::MAX_CHAIN_LEN)
                        .cloned()
                        .collect(),
                };
                let rot_id = claimed_rot_id(&attestation.cert_chain);
                self.record_refusal(
                    EventKind::CounterfeitRejected,
                    &rot_id,
                    "",
                    &known.order,
                    actor,
                    &payload,
                )
                .await?;
                return Err(e);
            }
        };
        if !known.order.allowed_ic_vendors.contains(&rot.vendor) {
            return Err(Error::VendorNotAllowed {
                vendor: rot.vendor,
                order_id: order_id.to_owned(),
            });
        }
        if let Some(holder) = self.claim_holder(&rot.rot_id).await? {
            // The RoT is claimed already: a clone if the presenter can sign
            // as the die (its transport-key statement verifies), else an
            // impostor carrying a genuine die's chain — counterfeit
            // (invariant 7). On a first claim the receipt settles the same
            // question, so the happy path spends no signature check here.
            if let Some(signed) = &attestation.transport_key {
                if let Err(e) = verify_transport_key(signed, &rot) {
                    let payload = v1::RejectedPayload {
                        operation: "claim".into(),
                        reason: e.to_string(),
                        key: None,
                        holder_seq: 0,
                        evidence: attestation.cert_chain.clone(),
                    };
                    self.record_refusal(
                        EventKind::CounterfeitRejected,
                        &rot.rot_id,
                        "",
                        &known.order,
                        actor,
                        &payload,
                    )
                    .await?;
                    return Err(e);
                }
            }
            return Err(self
                .duplicate_claim(&rot.rot_id, &known.order, actor, holder)
                .await);
        }
        let expires_at_ms = now.saturating_add(self.config.claim_ttl.as_millis() as i64);
        let rot_id = rot.rot_id.clone();
        let nonce = self.claims.begin(
            PendingClaim {
                rot,
                chain: attestation.cert_chain.clone(),
                transport_key: attestation.transport_key.clone(),
                verified_transport_key: None,
                order_id: order_id.to_owned(),
                site: known.order.site.clone(),
                expires_at_ms,
            },
            now,
        )?;
        Ok(ClaimChallenge {
            rot_id,
            nonce: nonce.to_vec(),
            anchor: self.chain.root.clone(),
            expires_at_ms,
        })
    }

    /// Verifies a claim receipt and records `CLAIMED`.
    ///
    /// # Errors
    /// [`Error::NonceReplayed`], [`Error::NonceExpired`],
    /// [`Error::BadSignature`], [`Error::AnchorMismatch`],
    /// [`Error::WrongSite`], [`Error::AlreadyClaimed`] (recorded),
    /// [`Error::Backend`].
    pub async fn complete_claim(
        &self,
        actor: &Actor,
        receipt: &v1::SignedStatement,
    ) -> Result<(String, u64)> {
        let claim = match self
            .claims
            .complete(receipt, &self.chain.anchor_sha256, now_ms())
        {
            Ok((claim, _receipt)) => claim,
            Err(Error::ReceiptForged(claim)) => {
                // The die cannot sign with the key its certificate names: an
                // impostor (invariant 7).
                let e = Error::Counterfeit(
                    "claim receipt is not signed by the certified attestation key".into(),
                );
                let known = self.order(&claim.order_id).await?;
                let payload = v1::RejectedPayload {
                    operation: "claim".into(),
                    reason: e.to_string(),
                    key: None,
                    holder_seq: 0,
                    evidence: claim.chain.clone(),
                };
                self.record_refusal(
                    EventKind::CounterfeitRejected,
                    &claim.rot.rot_id,
                    "",
                    &known.order,
                    actor,
                    &payload,
                )
                .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let known = self.order(&claim.order_id).await?;
        check_usable(&known, actor, now_ms())?;
        let payload = v1::ClaimedPayload {
            receipt: Some(receipt.clone()),
            attestation_chain: claim.chain.clone(),
            ic_vendor: claim.rot.vendor.clone(),
            transport_key: claim.transport_key.clone(),
        };
        let rot_id = claim.rot.rot_id.clone();
        let draft = draft(
            EventKind::Claimed,
            &rot_id,
            "",
            &claim.site,
            actor,
            &claim.order_id,
            &payload,
        );
        let key = keys::unique(keys::CLAIM, rot_id.as_bytes());
        match self
            .ledger
            .append(append_request(draft, vec![key], None))
            .await
        {
            Ok(r) => {
                self.claims.remember(ClaimedRot {
                    rot_id: rot_id.clone(),
                    attestation_key: claim.rot.attestation_key,
                    nonce: receipt_nonce(receipt),
                    order_id: claim.order_id,
                    site: claim.site,
                    transport_key: claim.transport_key,
                    verified_transport_key: claim
                        .verified_transport_key
                        .map(std::sync::OnceLock::from)
                        .unwrap_or_default(),
                    claimed_seq: r.seq,
                });
                Ok((rot_id, r.seq))
            }
            Err(AppendRefusal::Conflict { holder_seq, .. }) => {
                let holder = match holder_seq {
                    Some(seq) => seq,
                    None => self.claim_holder(&rot_id).await?.unwrap_or_default(),
                };
                Err(self
                    .duplicate_claim(&rot_id, &known.order, actor, holder)
                    .await)
            }
            Err(AppendRefusal::Quota { .. }) => Err(Error::Config("quota on a claim".into())),
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// The `CLAIMED` entry of a RoT, if any.
    async fn claim_holder(&self, rot_id: &str) -> Result<Option<u64>> {
        if let Some(c) = self.claims.claimed(rot_id) {
            return Ok(Some(c.claimed_seq));
        }
        self.lookup(keys::CLAIM, rot_id.as_bytes()).await
    }

    /// Records a refused second claim and returns the error to send.
    async fn duplicate_claim(
        &self,
        rot_id: &str,
        order: &Order,
        actor: &Actor,
        holder_seq: u64,
    ) -> Error {
        let payload = v1::RejectedPayload {
            operation: "claim".into(),
            reason: "rot is already claimed".into(),
            key: Some(keys::unique(keys::CLAIM, rot_id.as_bytes())),
            holder_seq,
            evidence: vec![],
        };
        match self
            .record_refusal(
                EventKind::DuplicateRejected,
                rot_id,
                "",
                order,
                actor,
                &payload,
            )
            .await
        {
            Ok(_) => Error::AlreadyClaimed(rot_id.to_owned()),
            Err(e) => e,
        }
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

/// The rot_id an attestation chain names, if its first certificate parses
/// (for recording refusals; no trust is implied).
fn claimed_rot_id(chain: &[Vec<u8>]) -> String {
    chain
        .first()
        .and_then(|c| spki_of_certificate(c))
        .map(|spki| trustline_proto::identity::rot_id(&spki))
        .unwrap_or_default()
}

fn spki_of_certificate(der: &[u8]) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c.public_key().raw.to_vec())
}

/// Verifies a RoT's transport-key statement against its attestation key;
/// returns the transport key.
fn verify_transport_key(
    signed: &v1::SignedStatement,
    rot: &vendors::AuthenticRot,
) -> Result<Vec<u8>> {
    let stmt: v1::TransportKeyStatement =
        trustline_proto::statement::verify(signed, &rot.attestation_key)
            .map_err(|e| Error::Counterfeit(format!("transport key statement: {e}")))?;
    if stmt.rot_id != rot.rot_id {
        return Err(Error::Counterfeit(
            "transport key statement names another rot".into(),
        ));
    }
    trustline_proto::statement::parse_p256_spki(&stmt.public_key)
        .map_err(|e| Error::Counterfeit(format!("transport key: {e}")))?;
    Ok(stmt.public_key)
}

fn receipt_nonce(receipt: &v1::SignedStatement) -> Vec<u8> {
    trustline_proto::statement::decode_unverified::<v1::ClaimReceipt>(receipt)
        .map(|r| r.nonce)
        .unwrap_or_default()
}
