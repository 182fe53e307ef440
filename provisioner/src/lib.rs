//! The factory line's policy: production orders, claiming, personalisation,
//! certification and custody events (2.4.14.3/4/9/11/12/14/17/18/22,
//! 2.4.8.18), independent of gRPC.
//!
//! [`Factory`] holds the configuration and caches; every durable fact lives
//! in the custody ledger, reached through [`backends::LedgerApi`], and every
//! HSM operation is the CA's, through [`backends::CaApi`]. Anything cached
//! here can be reloaded from the ledger after a restart.
//!
//! Unique keys the factory asks the ledger to hold (namespace → value):
//! `order` → order id (`ORDER_OPENED`), `order-closed` → order id,
//! `claim` → rot_id (`CLAIMED`), `delivered-key` → SHA-256 of the device
//! key (`KEY_DELIVERED`), and for `CERTIFIED` (invariant 2) `serial` →
//! serial, `rot` → rot_id, `device-key` → SHA-256 of the device key, with
//! the quota counter `order/<id>` limited to the order's quantity
//! (invariant 4); `scrapped` → rot_id (`SCRAPPED`).

pub mod backends;
mod certify;
pub mod claim;
mod custody;
pub mod label;
pub mod orders;
mod personalise;
pub mod service;
pub mod vendors;
pub mod voucher;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

pub use certify::{Certified, CertifyInput, SubjectKey};
pub use custody::CustodyKind;
pub use personalise::DeliveredKey;

use crate::error::{Error, Result};
use backends::{AppendRefusal, CaApi, LedgerApi};
use claim::{ClaimBook, ClaimedRot, PendingClaim};
use orders::{KnownOrder, Order, OrderBook};
use vendors::{VendorRoot, VendorRoots};

/// Unique-key namespaces (see the module doc).
pub mod keys {
    /// An opened order id.
    pub const ORDER: &str = "order";
    /// A closed order id.
    pub const ORDER_CLOSED: &str = "order-closed";
    /// A claimed RoT.
    pub const CLAIM: &str = "claim";
    /// An HSM-made device key (SHA-256 of its SPKI).
    pub const DELIVERED_KEY: &str = "delivered-key";
    /// A certified serial.
    pub const SERIAL: &str = "serial";
    /// A certified RoT.
    pub const ROT: &str = "rot";
    /// A certified device key (SHA-256 of its SPKI).
    pub const DEVICE_KEY: &str = "device-key";
    /// A scrapped RoT.
    pub const SCRAPPED: &str = "scrapped";
}

/// What the factory is configured with.
#[derive(Debug, Clone)]
pub struct FactoryConfig {
    /// SubjectPublicKeyInfo DER of the OEM order key: every production order
    /// must verify against it.
    pub oem_order_key: Vec<u8>,
    /// The IC vendors whose silicon may be claimed.
    pub vendor_roots: Vec<VendorRoot>,
    /// How long a claim nonce stays valid.
    pub claim_ttl: Duration,
    /// Most claim sessions open at once.
    pub max_pending_claims: usize,
    /// Most entries in each in-memory cache (claimed RoTs, certified
    /// results); beyond it they are reloaded from the ledger.
    pub cache_entries: usize,
}

impl FactoryConfig {
    /// A configuration with the default limits.
    pub fn new(oem_order_key: Vec<u8>, vendor_roots: Vec<VendorRoot>) -> Self {
        Self {
            oem_order_key,
            vendor_roots,
            claim_ttl: Duration::from_secs(300),
            max_pending_claims: 100_000,
            cache_entries: 1_000_000,
        }
    }
}

/// Who asks, as the factory needs to know it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The caller id recorded in the ledger (`role/site/name`).
    pub id: String,
    /// The site the caller is bound to, for site-scoped roles (stations);
    /// `None` for roles that act for every site.
    pub site: Option<String>,
}

/// The CA chain, fetched once at start.
#[derive(Debug, Clone)]
pub struct CaChain {
    /// DER of the site intermediate.
    pub intermediate: Vec<u8>,
    /// DER of the OEM root: also the trust anchor installed in each RoT.
    pub root: Vec<u8>,
    /// SHA-256 of the anchor.
    pub anchor_sha256: [u8; 32],
    /// The OEM voucher key, SubjectPublicKeyInfo DER.
    pub voucher_public_key: Vec<u8>,
}

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

/// An order and its progress.
#[derive(Debug, Clone)]
pub struct OrderProgress {
    /// The order.
    pub order: Order,
    /// Devices certified under it.
    pub certified: u64,
    /// Closed early.
    pub closed: bool,
}

/// The factory line.
pub struct Factory {
    config: FactoryConfig,
    ledger: Arc<dyn LedgerApi>,
    ca: Arc<dyn CaApi>,
    vendors: VendorRoots,
    orders: OrderBook,
    claims: ClaimBook,
    chain: CaChain,
    certified: certify::ResultCache,
    delivered: personalise::DeliveredKeys,
}

impl Factory {
    /// Starts the factory: parses the vendor roots and fetches the CA chain.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad vendor root or CA chain;
    /// [`Error::Backend`] when the CA cannot be reached.
    pub async fn start(
        config: FactoryConfig,
        ledger: Arc<dyn LedgerApi>,
        ca: Arc<dyn CaApi>,
    ) -> Result<Self> {
        trustline_proto::statement::parse_p256_spki(&config.oem_order_key)
            .map_err(|e| Error::Config(format!("oem order key: {e}")))?;
        let vendors = VendorRoots::new(&config.vendor_roots)?;
        let chain = ca.get_chain().await.map_err(Error::ca)?;
        let [intermediate, root] = <[Vec<u8>; 2]>::try_from(chain.certificates).map_err(|c| {
            Error::Config(format!(
                "the ca chain has {} certificates, expected intermediate and root",
                c.len()
            ))
        })?;
        let chain = CaChain {
            anchor_sha256: Sha256::digest(&root).into(),
            intermediate,
            root,
            voucher_public_key: chain.voucher_public_key,
        };
        Ok(Self {
            claims: ClaimBook::new(config.max_pending_claims, config.cache_entries),
            certified: certify::ResultCache::new(config.cache_entries),
            delivered: personalise::DeliveredKeys::default(),
            config,
            ledger,
            ca,
            vendors,
            orders: OrderBook::default(),
            chain,
        })
    }

    /// The CA chain and anchor.
    pub fn chain(&self) -> &CaChain {
        &self.chain
    }

    /// The configured vendor names.
    pub fn vendor_names(&self) -> Vec<String> {
        self.vendors.names()
    }

    // ---------------------------------------------------------------- orders

    /// Opens an OEM-signed production order; records `ORDER_OPENED`.
    ///
    /// # Errors
    /// [`Error::BadSignature`], [`Error::Invalid`], [`Error::OrderExists`],
    /// [`Error::Backend`].
    pub async fn open_order(
        &self,
        actor: &Actor,
        signed: &v1::SignedStatement,
    ) -> Result<(String, u64)> {
        let order = Order::verify(signed, &self.config.oem_order_key, &self.vendors.names())?;
        let payload = v1::OrderOpenedPayload {
            signed_order: Some(signed.clone()),
        };
        let draft = draft(
            EventKind::OrderOpened,
            "",
            "",
            &order.site,
            actor,
            &order.id,
            &payload,
        );
        let key = unique(keys::ORDER, order.id.as_bytes());
        match self
            .ledger
            .append(append_request(draft, vec![key], None))
            .await
        {
            Ok(r) => {
                let id = order.id.clone();
                self.orders.insert(order, false);
                Ok((id, r.seq))
            }
            Err(AppendRefusal::Conflict { .. }) => Err(Error::OrderExists(order.id)),
            Err(AppendRefusal::Quota { .. }) => {
                Err(Error::Config("quota on an order opening".into()))
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// Closes an order early; records `ORDER_CLOSED`.
    ///
    /// # Errors
    /// [`Error::UnknownOrder`], [`Error::OrderClosed`] when already closed,
    /// [`Error::Invalid`] for an overlong reason, [`Error::Backend`].
    pub async fn close_order(&self, actor: &Actor, order_id: &str, reason: &str) -> Result<u64> {
        if reason.len() > 1024 {
            return Err(Error::Invalid("reason is longer than 1024 bytes".into()));
        }
        let known = self.order(order_id).await?;
        let payload = v1::OrderClosedPayload {
            reason: reason.to_owned(),
        };
        let draft = draft(
            EventKind::OrderClosed,
            "",
            "",
            &known.order.site,
            actor,
            order_id,
            &payload,
        );
        let key = unique(keys::ORDER_CLOSED, order_id.as_bytes());
        match self
            .ledger
            .append(append_request(draft, vec![key], None))
            .await
        {
            Ok(r) => {
                known
                    .closed
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok(r.seq)
            }
            Err(AppendRefusal::Conflict { .. }) => {
                known
                    .closed
                    .store(true, std::sync::atomic::Ordering::Release);
                Err(Error::OrderClosed(order_id.to_owned()))
            }
            Err(AppendRefusal::Quota { .. }) => {
                Err(Error::Config("quota on an order closing".into()))
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// An order and how many devices it has certified.
    ///
    /// # Errors
    /// [`Error::UnknownOrder`], [`Error::WrongSite`] for a station of
    /// another site, [`Error::Backend`].
    pub async fn order_progress(&self, actor: &Actor, order_id: &str) -> Result<OrderProgress> {
        let known = self.order(order_id).await?;
        if let Some(site) = &actor.site {
            if *site != known.order.site {
                return Err(Error::WrongSite {
                    order_id: order_id.to_owned(),
                    order_site: known.order.site.clone(),
                    caller_site: site.clone(),
                });
            }
        }
        let certified = self
            .ledger
            .get_quota(known.order.quota_counter())
            .await
            .map_err(Error::ledger)?;
        Ok(OrderProgress {
            order: known.order.clone(),
            certified,
            closed: known.is_closed(),
        })
    }

    /// The order `order_id`, from the cache or the ledger.
    async fn order(&self, order_id: &str) -> Result<Arc<KnownOrder>> {
        if let Some(known) = self.orders.get(order_id) {
            return Ok(known);
        }
        let Some(seq) = self.lookup(keys::ORDER, order_id.as_bytes()).await? else {
            return Err(Error::UnknownOrder(order_id.to_owned()));
        };
        let entry = self.entry(seq).await?;
        let payload: v1::OrderOpenedPayload = payload_of(&entry, EventKind::OrderOpened)?;
        let signed = payload.signed_order.ok_or_else(|| Error::CorruptEntry {
            seq,
            reason: "order opening without its order".into(),
        })?;
        let order = Order::verify(&signed, &self.config.oem_order_key, &self.vendors.names())
            .map_err(|e| Error::CorruptEntry {
                seq,
                reason: format!("recorded order no longer verifies: {e}"),
            })?;
        let closed = self
            .lookup(keys::ORDER_CLOSED, order_id.as_bytes())
            .await?
            .is_some();
        Ok(self.orders.insert(order, closed))
    }

    /// The order, checked usable now by `actor`.
    async fn usable_order(&self, actor: &Actor, order_id: &str) -> Result<Arc<KnownOrder>> {
        let known = self.order(order_id).await?;
        orders::check_usable(&known, actor.site.as_deref(), now_ms())?;
        Ok(known)
    }

    // ---------------------------------------------------------------- claims

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
        orders::check_usable(&known, actor.site.as_deref(), now_ms())?;
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
        let key = unique(keys::CLAIM, rot_id.as_bytes());
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
            key: Some(unique(keys::CLAIM, rot_id.as_bytes())),
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
    async fn claimed(&self, rot_id: &str) -> Result<Arc<ClaimedRot>> {
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

    // ---------------------------------------------------------------- ledger

    async fn lookup(&self, namespace: &str, value: &[u8]) -> Result<Option<u64>> {
        self.ledger
            .lookup_key(unique(namespace, value))
            .await
            .map_err(Error::ledger)
    }

    async fn entry(&self, seq: u64) -> Result<v1::LedgerEntry> {
        let bytes = self.ledger.get_entry(seq).await.map_err(Error::ledger)?;
        v1::LedgerEntry::decode(bytes.as_slice()).map_err(|e| Error::CorruptEntry {
            seq,
            reason: e.to_string(),
        })
    }

    /// Records a refusal (no constraints); returns its sequence number.
    async fn record_refusal(
        &self,
        kind: EventKind,
        rot_id: &str,
        serial: &str,
        order: &Order,
        actor: &Actor,
        payload: &v1::RejectedPayload,
    ) -> Result<u64> {
        let draft = draft(kind, rot_id, serial, &order.site, actor, &order.id, payload);
        match self
            .ledger
            .append(append_request(draft, vec![], None))
            .await
        {
            Ok(r) => Ok(r.seq),
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
            Err(other) => Err(Error::Config(format!(
                "unconstrained append refused: {other:?}"
            ))),
        }
    }
}

/// The current time, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unique(namespace: &str, value: &[u8]) -> v1::UniqueKey {
    v1::UniqueKey {
        namespace: namespace.to_owned(),
        value: value.to_vec(),
    }
}

/// An append of `draft` with its constraints (shared with ownership).
pub(crate) fn append_request(
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

#[allow(clippy::too_many_arguments)]
fn draft(
    kind: EventKind,
    rot_id: &str,
    serial: &str,
    site: &str,
    actor: &Actor,
    order_id: &str,
    payload: &impl Message,
) -> v1::EntryDraft {
    v1::EntryDraft {
        kind: kind as i32,
        rot_id: rot_id.to_owned(),
        serial: serial.to_owned(),
        site: site.to_owned(),
        actor: actor.id.clone(),
        order_id: order_id.to_owned(),
        payload: payload.encode_to_vec(),
    }
}

/// Decodes an entry's payload, checking its kind.
fn payload_of<P: Message + Default>(entry: &v1::LedgerEntry, kind: EventKind) -> Result<P> {
    if entry.kind != kind as i32 {
        return Err(Error::CorruptEntry {
            seq: entry.seq,
            reason: format!("expected a {kind:?} entry, found kind {}", entry.kind),
        });
    }
    P::decode(entry.payload.as_slice()).map_err(|e| Error::CorruptEntry {
        seq: entry.seq,
        reason: e.to_string(),
    })
}

/// SHA-256 of a key, as held under the `device-key` and `delivered-key`
/// namespaces.
fn key_hash(spki: &[u8]) -> Vec<u8> {
    Sha256::digest(spki).to_vec()
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
