//! Re-verifying a site's entries before the hub mirrors them, with the
//! checks `trustline ledger verify` applies (invariant 5, 2.4.14.3,
//! 2.4.14.22): custody-ledger's shared per-entry check
//! (`custody_ledger::entry::check_stored`: canonical encoding, seq, known
//! kind, well-formed rot_id, no key declared twice), then, against the
//! site's stored state and the batch before it, sequence continuity, the
//! `prev_hash` chain, non-decreasing time, the `device_prev` chain, the
//! entries' own unique keys held once and no quota use beyond its declared
//! limit — all within the site's ledger. The Merkle tree grows with
//! custody-ledger's [`Frontier`], so the hub's roots are computed by the
//! same code as the site's.
//!
//! What the registry learns from each entry is decoded here too, from the
//! ledger's own payload formats (no X.509 parsing: a certificate is kept as
//! its bytes).

use std::collections::{HashMap, HashSet};

use custody_ledger::merkle::{chain_head, leaf_hash, Frontier, NodeReader};
use custody_ledger::{EventKind, Hash};
use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::v1;

use crate::error::{Error, Result};
use crate::model::{CustodyState, DeviceRecord, SiteConfig, SiteRow};
use crate::store::{HubStore, IngestBatch, Probe, RegistryEvent};

/// The Merkle subtrees of one site, read from the store.
pub(crate) struct StoreNodes<'a> {
    pub(crate) store: &'a dyn HubStore,
    pub(crate) site: &'a str,
}

impl NodeReader for StoreNodes<'_> {
    fn node(&self, level: u8, index: u64) -> custody_ledger::Result<Hash> {
        match self.store.node(self.site, level, index) {
            Ok(Some(h)) => Ok(h),
            Ok(None) => Err(custody_ledger::Error::NotFound(format!(
                "subtree ({level}, {index}) of site {} is not mirrored",
                self.site
            ))),
            Err(e) => Err(custody_ledger::Error::Index(e.to_string())),
        }
    }
}

/// A unique key as the store indexes it: `u32 BE len(namespace) ‖
/// namespace ‖ value`.
fn encode_key(k: &v1::UniqueKey) -> Vec<u8> {
    crate::store::encode_key(&k.namespace, &k.value)
}

fn key_text(k: &v1::UniqueKey) -> String {
    match std::str::from_utf8(&k.value) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{}:{s}", k.namespace),
        _ => format!("{}:0x{}", k.namespace, hex::encode(&k.value)),
    }
}

/// An entry that failed verification: its seq and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadEntry {
    pub(crate) seq: u64,
    pub(crate) reason: String,
    /// The offered bytes.
    pub(crate) entry: Vec<u8>,
}

/// How the hub reads signed orders out of `ORDER_OPENED` entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderReading {
    /// The OEM order key (SPKI DER); when set, an order that does not
    /// verify under it allocates nothing, so whatever a site certifies
    /// under it is flagged as over its allocation.
    pub(crate) order_key: Option<Vec<u8>>,
}

/// Checks `entries` (seqs `row.size..`) of `site` against the stored state;
/// returns the batch to commit, or the first bad entry.
///
/// # Errors
/// [`Error::Store`] when the state cannot be read.
pub(crate) fn check_batch(
    store: &dyn HubStore,
    site: &SiteConfig,
    row: &SiteRow,
    entries: Vec<Vec<u8>>,
    orders: &OrderReading,
) -> Result<std::result::Result<IngestBatch, BadEntry>> {
    let name = site.site.as_str();
    let from = row.size;
    let mut decoded = Vec::with_capacity(entries.len());
    for (i, bytes) in entries.iter().enumerate() {
        let seq = from + i as u64;
        match custody_ledger::entry::check_stored(seq, bytes) {
            Ok(e) => decoded.push(e),
            Err(reason) => {
                return Ok(Err(BadEntry {
                    seq,
                    reason,
                    entry: bytes.clone(),
                }))
            }
        }
    }
    let mut probe = Probe::default();
    let mut seen_rot = HashSet::new();
    let mut seen_counter = HashSet::new();
    for e in &decoded {
        if !e.rot_id.is_empty() && seen_rot.insert(e.rot_id.clone()) {
            probe.rot_ids.push(e.rot_id.clone());
        }
        probe.keys.extend(e.unique_keys.iter().map(encode_key));
        if let Some(q) = &e.quota {
            if seen_counter.insert(q.counter.clone()) {
                probe.counters.push(q.counter.clone());
            }
        }
    }
    let prior = store.prior(name, &probe)?;
    let nodes_reader = StoreNodes { store, site: name };
    let mut frontier = Frontier::from_reader(&nodes_reader, from)
        .map_err(|e| Error::Corrupt(format!("site {name}'s mirrored tree: {e}")))?;

    let mut device_heads = prior.device_heads;
    let mut key_holders = prior.key_holders;
    let mut quotas = prior.quotas;
    let mut new_heads: HashMap<String, Hash> = HashMap::new();
    let mut device_entries = Vec::new();
    let mut new_keys = Vec::new();
    let mut touched_quotas: HashSet<String> = HashSet::new();
    let mut nodes = Vec::with_capacity(entries.len() * 2);
    let mut events = Vec::new();
    let mut head = row.head;
    let mut last_time_ms = row.last_time_ms;

    for (i, (bytes, e)) in entries.iter().zip(&decoded).enumerate() {
        let seq = from + i as u64;
        let bad = |reason: String| {
            Ok(Err(BadEntry {
                seq,
                reason,
                entry: bytes.clone(),
            }))
        };
        if e.prev_hash != head {
            return bad("prev_hash does not match the hash chain".into());
        }
        if e.time_ms < last_time_ms {
            return bad("time goes backwards".into());
        }
        let expected_prev = if e.rot_id.is_empty() {
            Vec::new()
        } else {
            device_heads
                .get(&e.rot_id)
                .map(|h| h.to_vec())
                .unwrap_or_default()
        };
        if e.device_prev != expected_prev {
            return bad("device_prev does not match the device's previous entry".into());
        }
        let mut taken = Vec::with_capacity(e.unique_keys.len());
        for k in &e.unique_keys {
            let enc = encode_key(k);
            if let Some(holder) = key_holders.get(&enc) {
                return bad(format!(
                    "unique key {} is already held by entry {holder}",
                    key_text(k)
                ));
            }
            taken.push(enc);
        }
        if let Some(q) = &e.quota {
            let used = quotas.get(&q.counter).copied().unwrap_or(0);
            if used >= q.limit {
                return bad(format!(
                    "counted against quota {:?} already at its limit {} ({used} used)",
                    q.counter, q.limit
                ));
            }
        }
        // Accepted.
        for enc in taken {
            key_holders.insert(enc.clone(), seq);
            new_keys.push((enc, seq));
        }
        if let Some(q) = &e.quota {
            *quotas.entry(q.counter.clone()).or_default() += 1;
            touched_quotas.insert(q.counter.clone());
        }
        let leaf = leaf_hash(bytes);
        if !e.rot_id.is_empty() {
            device_heads.insert(e.rot_id.clone(), leaf);
            new_heads.insert(e.rot_id.clone(), leaf);
            device_entries.push((e.rot_id.clone(), seq));
        }
        frontier.push(leaf, &mut |n| nodes.push(n));
        head = chain_head(&head, &leaf);
        last_time_ms = e.time_ms;
        if let Some(ev) = registry_event(name, seq, e, orders) {
            events.push(ev);
        }
    }
    let size = from + entries.len() as u64;
    let quotas = touched_quotas
        .into_iter()
        .map(|c| {
            let n = quotas.get(&c).copied().unwrap_or(0);
            (c, n)
        })
        .collect();
    Ok(Ok(IngestBatch {
        site: name.to_string(),
        from,
        row: SiteRow {
            size,
            head,
            last_time_ms,
            ..row.clone()
        },
        entries,
        nodes,
        device_heads: new_heads.into_iter().collect(),
        device_entries,
        keys: new_keys,
        quotas,
        events,
    }))
}

/// What the registry learns from one accepted entry, if anything.
fn registry_event(
    site: &str,
    seq: u64,
    e: &v1::LedgerEntry,
    orders: &OrderReading,
) -> Option<RegistryEvent> {
    let kind = EventKind::try_from(e.kind).ok()?;
    match kind {
        EventKind::OrderOpened => {
            let signed = v1::OrderOpenedPayload::decode(e.payload.as_slice())
                .ok()?
                .signed_order?;
            let terms_sha256: Hash = Sha256::digest(&signed.body).into();
            let order = match &orders.order_key {
                Some(key) => {
                    trustline_proto::statement::verify::<v1::ProductionOrder>(&signed, key).ok()
                }
                None => v1::ProductionOrder::decode(signed.body.as_slice()).ok(),
            };
            let (quantity, allocation) = match &order {
                Some(o) => (o.quantity, allocation_of(o, site)),
                None => (0, 0),
            };
            Some(RegistryEvent::OrderOpened {
                order_id: e.order_id.clone(),
                seq,
                quantity,
                allocation,
                terms_sha256,
            })
        }
        EventKind::Certified => {
            let payload = v1::CertifiedPayload::decode(e.payload.as_slice()).unwrap_or_default();
            let device_key_sha256 = if payload.device_public_key.is_empty() {
                [0; 32]
            } else {
                Sha256::digest(&payload.device_public_key).into()
            };
            Some(RegistryEvent::Certified(DeviceRecord {
                rot_id: e.rot_id.clone(),
                site: site.to_string(),
                serial: e.serial.clone(),
                order_id: e.order_id.clone(),
                state: CustodyState::Certified,
                certified_seq: seq,
                last_seq: seq,
                certificate: payload.certificate,
                device_key_sha256,
                cross_site_clone: false,
            }))
        }
        EventKind::Shipped | EventKind::Received | EventKind::Scrapped => {
            let state = match kind {
                EventKind::Shipped => CustodyState::Shipped,
                EventKind::Received => CustodyState::Received,
                _ => CustodyState::Scrapped,
            };
            Some(RegistryEvent::Custody {
                rot_id: e.rot_id.clone(),
                seq,
                state,
                order_id: e.order_id.clone(),
            })
        }
        _ => None,
    }
}

/// What a signed order allocates to `site`: its allocation when the order
/// is split across sites, else its whole quantity when it names `site`,
/// else nothing (see the crate doc, "Orders split across sites").
pub fn allocation_of(order: &v1::ProductionOrder, site: &str) -> u64 {
    if order.allocations.is_empty() {
        return if order.site == site {
            order.quantity
        } else {
            0
        };
    }
    order
        .allocations
        .iter()
        .filter(|a| a.site == site)
        .map(|a| a.quantity)
        .sum()
}
