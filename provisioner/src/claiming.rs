//! The claim flow on the line (DESIGN "factory flow" steps 2–3; invariant
//! 7; 2.4.14.17, 2.4.14.18; issue 12 items 2, 4 and 9).
//!
//! `BeginClaim` checks the caller's site and order, verifies a blank RoT's
//! vendor chain (a counterfeit is recorded, `COUNTERFEIT_REJECTED`) and
//! hands out a stateless claim nonce ([`crate::nonce`]) and the OEM anchor.
//! No HSM signature is spent: a blank RoT could not check one, and the
//! receipt proves what was installed.
//!
//! An already claimed RoT is answered `ALREADY_EXISTS` and nothing is
//! recorded: its chain is public (it is in the ledger), so presenting it
//! proves nothing. The answer carries a presence challenge (a nonce of
//! purpose `presence`); only a die that holds the attestation key — a
//! clone — can sign a receipt over it, and only such a receipt, sent with
//! `CompleteClaim`, records `DUPLICATE_REJECTED` (with the receipt and chain
//! as evidence). So a station of any site replaying a fielded device's chain
//! cannot quarantine it.
//!
//! `CompleteClaim` takes the receipt and the attestation again. Before
//! anything is recorded it checks, in order: the nonce's order and the
//! caller's site (another site's caller learns nothing and records
//! nothing), that this site issued the nonce for this RoT, order, caller
//! and attestation, and the chain. Then a receipt identical to the one
//! recorded for the RoT gets the recorded claim back (idempotent: a lost
//! response or a retry after a ledger hiccup costs nothing); an expired
//! nonce is refused; a receipt the attestation key did not sign is an
//! impostor (`COUNTERFEIT_REJECTED`); a receipt naming another anchor is
//! refused; and `CLAIMED` is appended with unique key `("claim", rot_id)`,
//! the only thing that spends a nonce. The cache of claimed RoTs is
//! [`crate::claim`]'s.

use backends::{append_request, keys, now_ms, AppendRefusal};
use prost::Message;
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::claim::{spki_of_certificate, ClaimedRot};
use crate::error::{Error, Result};
use crate::nonce::{self, Binding, Purpose};
use crate::order_book::{check_site, check_usable, KnownOrder};
use crate::orders::Order;
use crate::vendors::{self, AuthenticRot};
use crate::{draft, payload_of, Actor, Factory};

/// The answer to `BeginClaim`.
#[derive(Debug, Clone)]
pub struct ClaimChallenge {
    /// The RoT.
    pub rot_id: String,
    /// The claim nonce.
    pub nonce: Vec<u8>,
    /// The anchor to install.
    pub anchor: Vec<u8>,
    /// When the nonce expires, Unix ms.
    pub expires_at_ms: i64,
}

/// A receipt presented with `CompleteClaim`, with what was established
/// about it before anything is recorded.
struct Presented<'a> {
    rot: AuthenticRot,
    attestation: &'a v1::RotAttestation,
    receipt: &'a v1::SignedStatement,
    expired: bool,
}

impl Factory {
    /// Verifies a blank RoT and issues a claim nonce (invariant 7); for a
    /// claimed RoT, records nothing and answers with a presence challenge.
    ///
    /// # Errors
    /// Order errors (the site first); [`Error::Counterfeit`] (recorded as
    /// `COUNTERFEIT_REJECTED`); [`Error::VendorNotAllowed`];
    /// [`Error::AlreadyClaimed`] with a presence challenge (nothing
    /// recorded); [`Error::Backend`].
    pub async fn begin_claim(
        &self,
        actor: &Actor,
        order_id: &str,
        attestation: &v1::RotAttestation,
    ) -> Result<ClaimChallenge> {
        let known = self.usable_order(actor, order_id).await?;
        let now = now_ms();
        let rot = match self.vendors.verify(&attestation.cert_chain, now) {
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
        let digest = nonce::attestation_digest(attestation);
        let site = self.entry_site(actor, &known.order);
        let binding = Binding {
            rot_id: &rot.rot_id,
            order_id: &known.order.id,
            site: &site,
            caller: &actor.id,
            attestation: &digest,
        };
        let expires_at_ms = now.saturating_add(self.config.claim_ttl.as_millis() as i64);
        if self.claim_holder(&rot.rot_id).await?.is_some() {
            // The chain is public: nothing is recorded until a receipt over
            // this challenge proves the presenter holds the die's key.
            let nonce = nonce::mint(
                &self.config.claim_key,
                Purpose::Presence,
                &binding,
                expires_at_ms,
            )?;
            return Err(Error::AlreadyClaimed {
                rot_id: rot.rot_id.clone(),
                presence: Some(Box::new(v1::ClaimPresenceChallenge {
                    rot_id: rot.rot_id.clone(),
                    nonce,
                    anchor: self.chain.root.clone(),
                    expires_at_ms,
                })),
            });
        }
        let nonce = nonce::mint(
            &self.config.claim_key,
            Purpose::Claim,
            &binding,
            expires_at_ms,
        )?;
        Ok(ClaimChallenge {
            rot_id: rot.rot_id,
            nonce,
            anchor: self.chain.root.clone(),
            expires_at_ms,
        })
    }

    /// Verifies a claim receipt and records `CLAIMED`; answers a receipt
    /// over a presence challenge (see the module doc).
    ///
    /// # Errors
    /// [`Error::WrongSite`] (checked before anything is recorded),
    /// [`Error::NonceReplayed`], [`Error::NonceExpired`],
    /// [`Error::Counterfeit`] (recorded for an unclaimed RoT),
    /// [`Error::AnchorMismatch`], order errors, [`Error::AlreadyClaimed`]
    /// (recorded as `DUPLICATE_REJECTED` only for a receipt the attestation
    /// key signed), [`Error::Backend`].
    pub async fn complete_claim(
        &self,
        actor: &Actor,
        receipt: &v1::SignedStatement,
        attestation: &v1::RotAttestation,
    ) -> Result<(String, u64)> {
        let body: v1::ClaimReceipt = statement::decode_unverified(receipt)?;
        let opened = nonce::Opened::parse(&body.nonce)?;
        let known = match self.order(opened.order_id).await {
            Err(Error::UnknownOrder(_)) => return Err(Error::NonceReplayed),
            other => other?,
        };
        // The caller's site before anything else: another site's station
        // records nothing here (issue 12 item 4).
        check_site(actor, &known.order)?;
        let digest = nonce::attestation_digest(attestation);
        let rot_id = claimed_rot_id(&attestation.cert_chain);
        let site = self.entry_site(actor, &known.order);
        let purpose = opened.check(
            &self.config.claim_key,
            &Binding {
                rot_id: &rot_id,
                order_id: &known.order.id,
                site: &site,
                caller: &actor.id,
                attestation: &digest,
            },
        )?;
        let now = now_ms();
        let rot = self.vendors.reverify(&attestation.cert_chain, now)?;
        if body.rot_id != rot.rot_id {
            return Err(Error::Invalid("receipt names another rot".into()));
        }
        let presented = Presented {
            rot,
            attestation,
            receipt,
            expired: now >= opened.expires_at_ms,
        };
        match purpose {
            Purpose::Claim => self.finish_claim(actor, &known, presented, now).await,
            Purpose::Presence => Err(self.presence(actor, &known.order, presented).await),
        }
    }

    /// A receipt over a claim nonce.
    async fn finish_claim(
        &self,
        actor: &Actor,
        known: &KnownOrder,
        presented: Presented<'_>,
        now: i64,
    ) -> Result<(String, u64)> {
        let rot = &presented.rot;
        let verified = match statement::verify(presented.receipt, &rot.attestation_key) {
            Ok(r) => Some(r),
            Err(trustline_proto::Error::BadSignature(_)) => None,
            Err(e) => return Err(e.into()),
        };
        // The first claim of a fresh receipt goes straight to the append
        // (whose unique key answers "claimed already"); only an expired or
        // forged receipt looks for a recorded claim first, so that nothing
        // is recorded against a claimed RoT and a late retry still gets its
        // claim back.
        let Some(receipt) = verified.filter(|_: &v1::ClaimReceipt| !presented.expired) else {
            if let Some(holder) = self.claim_holder(&rot.rot_id).await? {
                return self
                    .claimed_before(actor, &known.order, &presented, holder)
                    .await;
            }
            if presented.expired {
                return Err(Error::NonceExpired);
            }
            return Err(self.impostor(actor, &known.order, &presented).await);
        };
        if receipt.anchor_sha256 != self.chain.anchor_sha256 {
            return Err(Error::AnchorMismatch {
                found: hex::encode(&receipt.anchor_sha256),
            });
        }
        check_usable(known, actor, now)?;
        let order = &known.order;
        let site = self.entry_site(actor, order);
        let payload = v1::ClaimedPayload {
            receipt: Some(presented.receipt.clone()),
            attestation_chain: presented.attestation.cert_chain.clone(),
            ic_vendor: rot.vendor.clone(),
            transport_key: presented.attestation.transport_key.clone(),
        };
        let draft = draft(
            EventKind::Claimed,
            &rot.rot_id,
            "",
            &site,
            actor,
            &order.id,
            &payload,
        );
        let key = keys::unique(keys::CLAIM, rot.rot_id.as_bytes());
        match self
            .ledger
            .append(append_request(draft, vec![key], None))
            .await
        {
            Ok(r) => {
                self.claims.remember(ClaimedRot {
                    rot_id: rot.rot_id.clone(),
                    attestation_key: rot.attestation_key.clone(),
                    nonce: receipt.nonce,
                    order_id: order.id.clone(),
                    site,
                    transport_key: presented.attestation.transport_key.clone(),
                    verified_transport_key: Default::default(),
                    claimed_seq: r.seq,
                });
                Ok((rot.rot_id.clone(), r.seq))
            }
            Err(AppendRefusal::Conflict { holder_seq, .. }) => {
                let holder = match holder_seq {
                    Some(seq) => seq,
                    None => self.claim_holder(&rot.rot_id).await?.unwrap_or_default(),
                };
                self.claimed_before(actor, order, &presented, holder).await
            }
            Err(AppendRefusal::Quota { .. }) => Err(Error::Config("quota on a claim".into())),
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// A claim receipt for a RoT claimed as entry `holder`: the recorded
    /// receipt itself gets the recorded claim back (issue 12 item 9); any
    /// other is a second receipt.
    async fn claimed_before(
        &self,
        actor: &Actor,
        order: &Order,
        presented: &Presented<'_>,
        holder: u64,
    ) -> Result<(String, u64)> {
        let entry = self.entry(holder).await?;
        let payload: v1::ClaimedPayload = payload_of(&entry, EventKind::Claimed)?;
        if payload.receipt.as_ref() == Some(presented.receipt) {
            return Ok((presented.rot.rot_id.clone(), holder));
        }
        if presented.expired {
            return Err(Error::AlreadyClaimed {
                rot_id: presented.rot.rot_id.clone(),
                presence: None,
            });
        }
        Err(self.second_receipt(actor, order, presented, holder).await)
    }

    /// A receipt over a presence challenge.
    async fn presence(&self, actor: &Actor, order: &Order, presented: Presented<'_>) -> Error {
        let holder = match self.claim_holder(&presented.rot.rot_id).await {
            Ok(Some(holder)) => holder,
            // Presence challenges are issued for claimed RoTs only, and a
            // claim is never undone.
            Ok(None) => return Error::NotClaimed(presented.rot.rot_id.clone()),
            Err(e) => return e,
        };
        if presented.expired {
            return Error::NonceExpired;
        }
        self.second_receipt(actor, order, &presented, holder).await
    }

    /// A fresh receipt for a claimed RoT: a clone when the attestation key
    /// signed it — recorded as `DUPLICATE_REJECTED` with the receipt and
    /// chain as evidence — and otherwise proof of nothing, recorded nowhere.
    async fn second_receipt(
        &self,
        actor: &Actor,
        order: &Order,
        presented: &Presented<'_>,
        holder_seq: u64,
    ) -> Error {
        let rot_id = &presented.rot.rot_id;
        if statement::verify::<v1::ClaimReceipt>(presented.receipt, &presented.rot.attestation_key)
            .is_err()
        {
            return Error::AlreadyClaimed {
                rot_id: rot_id.clone(),
                presence: None,
            };
        }
        let mut evidence = vec![presented.receipt.encode_to_vec()];
        evidence.extend(
            presented
                .attestation
                .cert_chain
                .iter()
                .take(vendors::MAX_CHAIN_LEN)
                .cloned(),
        );
        let payload = v1::RejectedPayload {
            operation: "claim".into(),
            reason: "a second die signed as this claimed rot (a clone)".into(),
            key: Some(keys::unique(keys::CLAIM, rot_id.as_bytes())),
            holder_seq,
            evidence,
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
            Ok(_) => Error::AlreadyClaimed {
                rot_id: rot_id.clone(),
                presence: None,
            },
            Err(e) => e,
        }
    }

    /// Records a first-claim receipt the attestation key did not sign (the
    /// die cannot sign with the key its certificate names: an impostor,
    /// invariant 7) and returns the error to send.
    async fn impostor(&self, actor: &Actor, order: &Order, presented: &Presented<'_>) -> Error {
        let e = Error::Counterfeit(
            "claim receipt is not signed by the certified attestation key".into(),
        );
        let payload = v1::RejectedPayload {
            operation: "claim".into(),
            reason: e.to_string(),
            key: None,
            holder_seq: 0,
            evidence: presented.attestation.cert_chain.clone(),
        };
        match self
            .record_refusal(
                EventKind::CounterfeitRejected,
                &presented.rot.rot_id,
                "",
                order,
                actor,
                &payload,
            )
            .await
        {
            Ok(_) => e,
            Err(failed) => failed,
        }
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
