//! The hub's storage behind one narrow trait: the mirror of every site's
//! entries, what re-verifying the next entry needs, the witness's latest
//! cosigned checkpoint, forks, and the registry across sites.
//!
//! Every write is one call and one atomic, durable transaction:
//! [`HubStore::commit_ingest`] stores a verified batch of entries together
//! with everything derived from them and the site's watermark (so a restart
//! mid-ingest leaves either all of it or none, and the site's resend
//! replays exactly); [`HubStore::commit_cosigned`] replaces the witness
//! state of one site; [`HubStore::record_fork`] adds evidence. The first two
//! are compare-and-set on what the caller read, so two hub processes on one
//! database (issue 14) cannot both advance a site, and a checkpoint is never
//! cosigned on a state that moved underneath.
//!
//! The embedded default is [`crate::embedded::EmbeddedStore`] (redb, one
//! file on the hub's disk, fsync on commit). A PostgreSQL store maps each
//! method onto one serializable transaction over the tables named in the
//! embedded store's module doc.

use std::collections::HashMap;

use custody_ledger::Hash;

use crate::error::Result;
use crate::model::{
    CloneRecord, CosignedPoint, CustodyState, DeviceRecord, ForkRecord, IdentityKind, OrderSiteRow,
    SiteCounts, SiteRow,
};

/// What checking a batch of one site's entries needs to know about the
/// entries before it, asked for in one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Devices whose previous entry's leaf hash is needed (`device_prev`).
    pub rot_ids: Vec<String>,
    /// Unique keys (`u32 BE len(namespace) ‖ namespace ‖ value`) whose holder
    /// is needed.
    pub keys: Vec<Vec<u8>>,
    /// Quota counters whose count is needed.
    pub counters: Vec<String>,
}

/// The answers to a [`Probe`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prior {
    /// Leaf hash of each device's latest entry (absent: none yet).
    pub device_heads: HashMap<String, Hash>,
    /// Holder seq of each key that is held.
    pub key_holders: HashMap<Vec<u8>, u64>,
    /// Count of each counter (absent: 0).
    pub quotas: HashMap<String, u64>,
}

/// What the registry learns from one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// `ORDER_OPENED`: the site opened a signed order.
    OrderOpened {
        /// The order.
        order_id: String,
        /// The entry's seq.
        seq: u64,
        /// The signed order's total quantity.
        quantity: u64,
        /// What it allocates to this site.
        allocation: u64,
        /// SHA-256 of the signed order body.
        terms_sha256: Hash,
    },
    /// `CERTIFIED`: the site certified a device. The store checks its
    /// serial, rot_id and device key against every other site's in the same
    /// transaction and records a cross-site clone when another site holds
    /// one of them.
    Certified(DeviceRecord),
    /// `SHIPPED`, `RECEIVED`, `SCRAPPED`.
    Custody {
        /// The device.
        rot_id: String,
        /// The entry's seq.
        seq: u64,
        /// The new state.
        state: CustodyState,
        /// The order the entry names.
        order_id: String,
    },
}

/// A verified batch of one site's entries and everything derived from it,
/// committed in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestBatch {
    /// The site.
    pub site: String,
    /// The watermark the batch was checked against; the commit fails
    /// unless the stored watermark still is this.
    pub from: u64,
    /// The site's row after the batch (watermark `from + entries.len()`).
    pub row: SiteRow,
    /// The entries' exact bytes, seqs `from..`.
    pub entries: Vec<Vec<u8>>,
    /// Merkle subtrees the batch completed: `(level, index, hash)`; level 0
    /// is each entry's leaf hash.
    pub nodes: Vec<(u8, u64, Hash)>,
    /// New latest-entry leaf hash per device.
    pub device_heads: Vec<(String, Hash)>,
    /// Every entry of the batch that names a device: `(rot_id, seq)`, so a
    /// device's site history is found without a scan (ownership at the hub
    /// reads it, issue 13 item 4).
    pub device_entries: Vec<(String, u64)>,
    /// Unique keys taken, with their holder seq.
    pub keys: Vec<(Vec<u8>, u64)>,
    /// New absolute counts per quota counter.
    pub quotas: Vec<(String, u64)>,
    /// What the registry learns, in entry order.
    pub events: Vec<RegistryEvent>,
}

/// How to find a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceQuery {
    /// By RoT id.
    RotId(String),
    /// By product serial.
    Serial(String),
}

/// The hub's storage. Implementations must make every `commit_*` and
/// `record_fork` durable before returning `Ok`.
pub trait HubStore: Send + Sync + std::fmt::Debug {
    /// A site's ingest and witness state (the default row when the store has
    /// never seen the site).
    ///
    /// # Errors
    /// [`crate::Error::Store`], [`crate::Error::Corrupt`].
    fn site(&self, site: &str) -> Result<SiteRow>;

    /// What checking the next entries of `site` needs.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn prior(&self, site: &str, probe: &Probe) -> Result<Prior>;

    /// A mirrored Merkle subtree of `site` (level 0: a leaf hash), if the
    /// store holds it.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn node(&self, site: &str, level: u8, index: u64) -> Result<Option<Hash>>;

    /// Mirrored entries `[start, end)` of `site` (clamped to the watermark).
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn entries(&self, site: &str, start: u64, end: u64) -> Result<Vec<Vec<u8>>>;

    /// Commits a verified batch atomically with the site's watermark.
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the stored watermark is not
    /// `batch.from` (nothing is written) or storage fails.
    fn commit_ingest(&self, batch: &IngestBatch) -> Result<()>;

    /// Replaces the site's latest cosigned checkpoint, if its stored size is
    /// still `expected_size` (0: none).
    ///
    /// # Errors
    /// [`crate::Error::Store`] when it is not (nothing is written) or
    /// storage fails.
    fn commit_cosigned(
        &self,
        site: &str,
        expected_size: u64,
        cosigned: &crate::model::Cosigned,
    ) -> Result<()>;

    /// Records a fork. The same fork offered again (same site, kind,
    /// position and offered hash) is not recorded twice: its `repeats`
    /// grows. Returns the stored record.
    ///
    /// # Errors
    /// [`crate::Error::Store`].
    fn record_fork(&self, fork: &ForkRecord) -> Result<ForkRecord>;

    /// The seqs of `site`'s mirrored entries that name `rot_id`, in order.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn device_entries(&self, site: &str, rot_id: &str) -> Result<Vec<u64>>;

    /// Every site's record of a device.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceRecord>>;

    /// A site's entry counts.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn site_counts(&self, site: &str) -> Result<SiteCounts>;

    /// Per-(order, site) rows, of one order or of all, ordered by order.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn order_rows(&self, order_id: Option<&str>) -> Result<Vec<OrderSiteRow>>;

    /// Recorded forks, of one site or of all, oldest first.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn forks(&self, site: Option<&str>) -> Result<Vec<ForkRecord>>;

    /// Every cross-site clone.
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn clones(&self) -> Result<Vec<CloneRecord>>;

    /// Every checkpoint of `site` the witness cosigned, by size. A store
    /// that keeps no history answers the latest only (the default).
    ///
    /// # Errors
    /// As [`HubStore::site`].
    fn cosignatures(&self, site: &str) -> Result<Vec<CosignedPoint>> {
        Ok(self
            .site(site)?
            .cosigned
            .map(|c| CosignedPoint {
                size: c.size,
                time: c.time,
                root: c.root,
            })
            .into_iter()
            .collect())
    }
}

/// A unique key as the store keys it: `u32 BE len(namespace) ‖ namespace
/// ‖ value` (the [`Probe::keys`] encoding).
pub fn encode_key(namespace: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + namespace.len() + value.len());
    out.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(value);
    out
}

/// The identities a certification takes across sites: its serial, rot_id
/// and device key hash (each only when the entry carries it).
pub fn identities(d: &DeviceRecord) -> Vec<(IdentityKind, Vec<u8>)> {
    let mut out = Vec::with_capacity(3);
    if !d.serial.is_empty() {
        out.push((IdentityKind::Serial, d.serial.as_bytes().to_vec()));
    }
    if !d.rot_id.is_empty() {
        out.push((IdentityKind::RotId, d.rot_id.as_bytes().to_vec()));
    }
    if d.device_key_sha256 != [0; 32] {
        out.push((IdentityKind::DeviceKey, d.device_key_sha256.to_vec()));
    }
    out
}
