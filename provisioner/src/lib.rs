//! The factory's policy and its `Provisioning` gRPC service: production
//! orders, claiming, personalisation, certification and custody events on
//! the line (2.4.14.3/4/9/11/12/14/17/18/22, 2.4.8.18).
//!
//! Key design decision: [`Factory`] holds only configuration and caches;
//! every durable fact lives in the custody ledger, reached through
//! [`backends::LedgerApi`], and every HSM operation is the CA's, through
//! [`backends::CaApi`], so the factory never touches an HSM session or a
//! ledger file, and anything it caches can be reloaded from the ledger after
//! a restart. The ledger's unique keys and quota counters — not locks here —
//! decide what is a duplicate and what is overproduction, under any
//! concurrency and across restarts (the namespaces are in
//! [`backends::keys`]).
//!
//! Who may call what is decided before a handler runs, by the transport's
//! role table; the service hands the factory an [`Actor`] built from the
//! already authorized caller, whose [`transport::SiteScope`] every
//! site-scoped step checks against the data's site through one function
//! ([`order_book::check_site`]).
//!
//! A station is never trusted with more than its own devices (issue 12):
//! it cannot name a device's first owner (`Certify` refuses one, and no
//! voucher entry is signed here — entry 0 is the OEM's, made by the
//! ownership service); a refusal is recorded against a device only after
//! the caller's site is checked and only when the request proved something
//! about the device (a clone is recorded only once a fresh signature by the
//! attestation key proves it — a replayed public chain leaves no trace);
//! every signature of a `Certify` request is verified before any lookup,
//! replay answer or record; and factory custody steps end once the device
//! has a field event.
//!
//! Modules: [`orders`] (the signed order), [`order_book`] (orders known to
//! the line, opening and closing them), [`vendors`], [`nonce`] (stateless
//! claim nonces under the site's claim key) and [`claim`] (claimed RoTs),
//! `claiming` (the claim flow and presence challenges), `personalise`,
//! `certify` and `collisions` (certification, retries, duplicates and
//! overproduction), [`allowance`] (the offline allowance beyond what the
//! hub witnessed), `custody`, [`label`], [`voucher`], [`service`] (the
//! gRPC edge), [`line`] (the station line stream over the same steps), and
//! [`error`].

#![forbid(unsafe_code)]

pub mod allowance;
mod certify;
pub mod claim;
mod claiming;
mod collisions;
mod custody;
pub mod error;
pub mod fdo;
pub mod label;
pub mod line;
pub mod nonce;
pub mod order_book;
pub mod orders;
mod personalise;
pub mod service;
pub mod vendors;
pub mod voucher;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use backends::{append_request, keys, AppendRefusal, CaApi, LedgerApi};
use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

pub use allowance::{Allowance, AllowanceProgress, Witnessed};
pub use certify::{Certified, CertifyInput, SubjectKey};
pub use claiming::ClaimChallenge;
pub use custody::CustodyKind;
pub use error::{Error, Result};
pub use nonce::ClaimKey;
pub use order_book::OrderProgress;
pub use personalise::DeliveredKey;

use claim::ClaimBook;
use order_book::OrderBook;
use orders::Order;
use vendors::{VendorRoot, VendorRoots};

/// What the factory is configured with.
#[derive(Debug, Clone)]
pub struct FactoryConfig {
    /// SubjectPublicKeyInfo DER of the OEM order key: every production order
    /// must verify against it.
    pub oem_order_key: Vec<u8>,
    /// The IC vendors whose silicon may be claimed.
    pub vendor_roots: Vec<VendorRoot>,
    /// The site's claim key: claim nonces are made and checked with it
    /// ([`nonce`]). Every provisioner replica of a site must have the same
    /// key, and it must outlive restarts (the site keeps it in its data
    /// directory), or claims begun before a restart cannot be completed.
    pub claim_key: ClaimKey,
    /// How long a claim nonce stays valid: long enough for a slow line or a
    /// restart between a device's receipt and `CompleteClaim` (a receipt
    /// whose nonce expired while the RoT is unclaimed is refused, and that
    /// die cannot sign a second first claim).
    pub claim_ttl: Duration,
    /// Most entries in each in-memory cache (claimed RoTs, certified
    /// results); beyond it they are reloaded from the ledger.
    pub cache_entries: usize,
    /// What the OEM hub has witnessed, when the site has a hub uplink: the
    /// orders' offline allowances count from it ([`allowance`]). `None`:
    /// no hub, no allowance applies.
    pub allowance: Option<Arc<dyn Allowance>>,
    /// This site's name as the OEM enrolled it (`[site] name`), when known:
    /// an order split across sites gives this site its allocation
    /// (`orders::Order::share`; 2.4.14.22, invariant 4) for a caller not
    /// bound to a site. A site-bound caller's own site always decides.
    pub site: Option<String>,
}

impl FactoryConfig {
    /// The default claim nonce lifetime: 30 minutes.
    pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(30 * 60);

    /// A configuration with the default limits.
    pub fn new(oem_order_key: Vec<u8>, vendor_roots: Vec<VendorRoot>, claim_key: ClaimKey) -> Self {
        Self {
            oem_order_key,
            vendor_roots,
            claim_key,
            claim_ttl: Self::DEFAULT_CLAIM_TTL,
            cache_entries: 1_000_000,
            allowance: None,
            site: None,
        }
    }
}

/// Who asks, as the factory needs to know it: made from the caller the
/// role table authorized (see [`service`]).
#[derive(Debug, Clone)]
pub struct Actor {
    /// The caller id recorded in the ledger (`role/site/name`).
    pub id: String,
    /// Which sites' orders and devices the caller may act on in this call
    /// (a station: its own site only).
    pub scope: transport::SiteScope,
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
            claims: ClaimBook::new(config.cache_entries),
            certified: certify::ResultCache::new(config.cache_entries),
            delivered: personalise::DeliveredKeys::new(config.cache_entries),
            orders: OrderBook::new(config.cache_entries),
            config,
            ledger,
            ca,
            vendors,
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

    // ---------------------------------------------------------------- ledger

    /// The entry holding the unique key `(namespace, value)`, if any.
    pub(crate) async fn lookup(&self, namespace: &str, value: &[u8]) -> Result<Option<u64>> {
        self.ledger
            .lookup_key(keys::unique(namespace, value))
            .await
            .map_err(Error::ledger)
    }

    /// One stored entry, decoded.
    pub(crate) async fn entry(&self, seq: u64) -> Result<v1::LedgerEntry> {
        let bytes = self.ledger.get_entry(seq).await.map_err(Error::ledger)?;
        v1::LedgerEntry::decode(bytes.as_slice()).map_err(|e| Error::CorruptEntry {
            seq,
            reason: e.to_string(),
        })
    }

    /// Records a refusal (no constraints); returns its sequence number.
    pub(crate) async fn record_refusal(
        &self,
        kind: EventKind,
        rot_id: &str,
        serial: &str,
        order: &Order,
        actor: &Actor,
        payload: &v1::RejectedPayload,
    ) -> Result<u64> {
        let site = self.entry_site(actor, order);
        let draft = draft(kind, rot_id, serial, &site, actor, &order.id, payload);
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

/// A factory entry: its site is always an order's site.
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

/// SHA-256 of a key's canonical SubjectPublicKeyInfo, as held under the
/// `device-key` and `delivered-key` namespaces: one P-256 key written
/// compressed or uncompressed is one key (invariant 2, issue 12).
///
/// # Errors
/// [`Error::Invalid`] for a key that is not P-256.
fn key_hash(spki: &[u8]) -> Result<Vec<u8>> {
    trustline_proto::identity::canonical_key_hash(spki)
        .map(|h| h.to_vec())
        .map_err(|e| Error::Invalid(format!("device key: {e}")))
}
