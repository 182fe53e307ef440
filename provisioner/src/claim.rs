//! Claiming a RoT for the OEM (DESIGN "factory flow" steps 2–3; Appendix B,
//! "Claiming").
//!
//! `BeginClaim` hands out a single-use random nonce with an expiry and the
//! OEM trust anchor (the DER of the OEM root certificate). No HSM signature
//! is spent: a blank RoT could not check one, and the receipt proves what was
//! installed. `CompleteClaim` takes the RoT's receipt, consumes the nonce
//! (whether or not the receipt then verifies — a nonce is good for one try),
//! verifies the receipt with the attestation key of the RoT the nonce was
//! issued to, and refuses a receipt that names any other anchor.
//!
//! Claimed RoTs are remembered here in a [`BoundedCache`]; the ledger's
//! `CLAIMED` entry (unique key `("claim", rot_id)`) is the truth and
//! survives restarts. Pending claims are not a cache — they cannot be
//! reloaded — so they live in a bounded map of their own that refuses new
//! sessions with [`Error::Busy`] when full and never evicts one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use backends::BoundedCache;

use trustline_proto::statement;
use trustline_proto::v1;

use crate::error::{Error, Result};
use crate::vendors::AuthenticRot;

/// Length of a claim nonce.
pub const NONCE_LEN: usize = 32;

/// A claim session between `BeginClaim` and `CompleteClaim`.
#[derive(Debug, Clone)]
pub struct PendingClaim {
    /// The authentic RoT the nonce was issued to.
    pub rot: AuthenticRot,
    /// Its attestation chain as presented (recorded with the claim).
    pub chain: Vec<Vec<u8>>,
    /// Its transport-key statement as presented.
    pub transport_key: Option<v1::SignedStatement>,
    /// The transport key, verified against the attestation key.
    pub verified_transport_key: Option<Vec<u8>>,
    /// The order it is being claimed under.
    pub order_id: String,
    /// The order's site.
    pub site: String,
    /// When the nonce stops being accepted, Unix ms.
    pub expires_at_ms: i64,
}

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

/// Open claim sessions and the cache of claimed RoTs.
#[derive(Debug)]
pub struct ClaimBook {
    max_pending: usize,
    // A std Mutex: held only for map operations, never across await.
    pending: Mutex<HashMap<[u8; NONCE_LEN], PendingClaim>>,
    claimed: BoundedCache<String, Arc<ClaimedRot>>,
}

impl ClaimBook {
    /// A book holding at most `max_pending` open sessions and caching at
    /// most `max_claimed` claimed RoTs.
    pub fn new(max_pending: usize, max_claimed: usize) -> Self {
        Self {
            max_pending,
            pending: Mutex::new(HashMap::new()),
            claimed: BoundedCache::new(max_claimed),
        }
    }

    /// Opens a session; returns its fresh nonce.
    ///
    /// # Errors
    /// [`Error::Busy`] when too many sessions are open even after dropping
    /// the expired ones.
    pub fn begin(&self, claim: PendingClaim, now_ms: i64) -> Result<[u8; NONCE_LEN]> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| Error::Config("no system randomness".into()))?;
        let mut pending = lock(&self.pending);
        if pending.len() >= self.max_pending {
            pending.retain(|_, p| p.expires_at_ms > now_ms);
            if pending.len() >= self.max_pending {
                return Err(Error::Busy);
            }
        }
        pending.insert(nonce, claim);
        Ok(nonce)
    }

    /// Consumes the session a receipt answers and verifies the receipt.
    ///
    /// # Errors
    /// [`Error::NonceReplayed`] for an unknown or spent nonce,
    /// [`Error::NonceExpired`], [`Error::ReceiptForged`] (the receipt is not
    /// signed by the attestation key the nonce was issued to),
    /// [`Error::Invalid`] for a receipt naming another RoT, and
    /// [`Error::AnchorMismatch`] for a receipt naming another anchor.
    pub fn complete(
        &self,
        receipt: &v1::SignedStatement,
        anchor_sha256: &[u8; 32],
        now_ms: i64,
    ) -> Result<(PendingClaim, v1::ClaimReceipt)> {
        let unverified: v1::ClaimReceipt = statement::decode_unverified(receipt)?;
        let nonce: [u8; NONCE_LEN] = unverified
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::NonceReplayed)?;
        let claim = lock(&self.pending)
            .remove(&nonce)
            .ok_or(Error::NonceReplayed)?;
        if now_ms >= claim.expires_at_ms {
            return Err(Error::NonceExpired);
        }
        let verified: v1::ClaimReceipt =
            match statement::verify(receipt, &claim.rot.attestation_key) {
                Ok(v) => v,
                Err(trustline_proto::Error::BadSignature(_)) => {
                    return Err(Error::ReceiptForged(Box::new(claim)))
                }
                Err(e) => return Err(e.into()),
            };
        if verified.rot_id != claim.rot.rot_id {
            return Err(Error::Invalid("receipt names another rot".into()));
        }
        if verified.anchor_sha256 != anchor_sha256 {
            return Err(Error::AnchorMismatch {
                found: hex::encode(&verified.anchor_sha256),
            });
        }
        Ok((claim, verified))
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

    /// Open sessions (for metrics and tests).
    pub fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Map operations leave the map consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustline_proto::signer::{Signer, SoftwareSigner};

    fn pending(key: &SoftwareSigner, expires_at_ms: i64) -> PendingClaim {
        let attestation_key = key.public_key_der().to_vec();
        PendingClaim {
            rot: AuthenticRot {
                rot_id: trustline_proto::identity::rot_id(&attestation_key),
                attestation_key,
                vendor: "acme".into(),
            },
            chain: vec![],
            transport_key: None,
            verified_transport_key: None,
            order_id: "PO-1".into(),
            site: "site-a".into(),
            expires_at_ms,
        }
    }

    fn receipt(key: &SoftwareSigner, nonce: &[u8], anchor: &[u8; 32]) -> v1::SignedStatement {
        let r = v1::ClaimReceipt {
            rot_id: trustline_proto::identity::rot_id(key.public_key_der()),
            nonce: nonce.to_vec(),
            anchor_sha256: anchor.to_vec(),
        };
        statement::sign(key, &r).expect("sign")
    }

    #[test]
    fn a_nonce_is_good_for_exactly_one_receipt() {
        let book = ClaimBook::new(10, 10);
        let key = SoftwareSigner::generate();
        let nonce = book.begin(pending(&key, 1000), 0).expect("begin");
        let r = receipt(&key, &nonce, &[7; 32]);
        assert!(book.complete(&r, &[7; 32], 10).is_ok());
        assert!(matches!(
            book.complete(&r, &[7; 32], 10),
            Err(Error::NonceReplayed)
        ));
    }

    #[test]
    fn expired_forged_and_foreign_anchor_receipts_are_refused() {
        let book = ClaimBook::new(10, 10);
        let key = SoftwareSigner::generate();
        let nonce = book.begin(pending(&key, 1000), 0).expect("begin");
        assert!(matches!(
            book.complete(&receipt(&key, &nonce, &[7; 32]), &[7; 32], 1000),
            Err(Error::NonceExpired)
        ));
        let nonce = book.begin(pending(&key, 1000), 0).expect("begin");
        let impostor = SoftwareSigner::generate();
        let mut forged = receipt(&impostor, &nonce, &[7; 32]);
        let mut body: v1::ClaimReceipt = statement::decode_unverified(&forged).expect("decode");
        body.rot_id = trustline_proto::identity::rot_id(key.public_key_der());
        forged = statement::sign(&impostor, &body).expect("sign");
        assert!(matches!(
            book.complete(&forged, &[7; 32], 10),
            Err(Error::ReceiptForged(_))
        ));
        let nonce = book.begin(pending(&key, 1000), 0).expect("begin");
        assert!(matches!(
            book.complete(&receipt(&key, &nonce, &[8; 32]), &[7; 32], 10),
            Err(Error::AnchorMismatch { .. })
        ));
    }

    #[test]
    fn a_full_book_drops_expired_sessions_then_refuses() {
        let book = ClaimBook::new(2, 10);
        let key = SoftwareSigner::generate();
        book.begin(pending(&key, 5), 0).expect("begin");
        book.begin(pending(&key, 5), 0).expect("begin");
        assert!(matches!(book.begin(pending(&key, 50), 1), Err(Error::Busy)));
        book.begin(pending(&key, 50), 10)
            .expect("expired ones dropped");
        assert_eq!(book.pending_len(), 1);
    }
}
