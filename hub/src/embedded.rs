//! The embedded [`HubStore`]: one redb file on the hub's disk.
//!
//! Why redb and not sled (which the site ledger uses as a rebuildable
//! index): here the store is the truth — the witness's cosigned state and
//! the fork evidence cannot be rebuilt from anything — and every commit must
//! be durable before the hub answers. redb commits are ACID and, at its
//! default durability, end in `fsync`; sled 0.34's flush does not (see
//! DESIGN.md, "The custody ledger"). One write transaction per call, so a
//! batch of entries, everything derived from it and the site's watermark
//! become durable together or not at all.
//!
//! Tables (keys are tuples; rows are encoded by this module, integers
//! big-endian, strings and byte strings as `u32 length ‖ bytes`):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `sites` | site | `SiteRow`: version 1, size, head, last time, forks, cosigned? (size, root, time, note) |
//! | `entries` | (site, seq) | the entry's exact bytes |
//! | `nodes` | (site, level, index) | 32-byte subtree hash (level 0: leaf hash) |
//! | `device_heads` | (site, rot_id) | leaf hash of the device's latest entry |
//! | `device_entries` | (site, rot_id, seq) | empty: the device's entries at the site |
//! | `keys` | (site, encoded unique key) | holder seq |
//! | `quotas` | (site, counter) | count |
//! | `devices` | (rot_id, site) | `DeviceRecord` less its key |
//! | `serials` | (serial, site) | rot_id |
//! | `identities` | (kind, value, site) | holder: seq, rot_id, serial |
//! | `clones` | (kind, value) | detected, Unix ms |
//! | `orders` | (order, site) | `OrderSiteRow` less its key |
//! | `site_counts` | site | certified, shipped, received, scrapped |
//! | `cosignatures` | (site, size) | every cosigned checkpoint: time (POSIX s), root |
//! | `forks` | id | `ForkRecord` less its id |
//! | `fork_index` | SHA-256(site, kind, position, offered hash) | id |
//! | `meta` | name | `format` = 1, `next_fork` |
//!
//! On PostgreSQL (issue 14) each table becomes one with the same key as its
//! primary key; `identities` gains the cross-site check as a query in the
//! ingest transaction.

use std::path::Path;

use custody_ledger::Hash;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{
    CloneHolder, CloneRecord, Cosigned, CosignedPoint, CustodyState, DeviceRecord, ForkKind,
    ForkRecord, IdentityKind, OrderSiteRow, SiteCounts, SiteRow,
};
use crate::store::{identities, DeviceQuery, HubStore, IngestBatch, Prior, Probe, RegistryEvent};

const SITES: TableDefinition<&str, &[u8]> = TableDefinition::new("sites");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const NODES: TableDefinition<(&str, u8, u64), &[u8]> = TableDefinition::new("nodes");
const DEVICE_HEADS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("device_heads");
const DEVICE_ENTRIES: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("device_entries");
const KEYS: TableDefinition<(&str, &[u8]), u64> = TableDefinition::new("keys");
const QUOTAS: TableDefinition<(&str, &str), u64> = TableDefinition::new("quotas");
const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
const SERIALS: TableDefinition<(&str, &str), &str> = TableDefinition::new("serials");
const IDENTITIES: TableDefinition<(u8, &[u8], &str), &[u8]> = TableDefinition::new("identities");
const CLONES: TableDefinition<(u8, &[u8]), i64> = TableDefinition::new("clones");
const ORDERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("orders");
const SITE_COUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("site_counts");
const FORKS: TableDefinition<u64, &[u8]> = TableDefinition::new("forks");
/// Every checkpoint the witness cosigned (the audit's history of each
/// site's cosignatures, issue 13 item 5). A store written before this table
/// existed gains it empty on open: its history starts then.
const COSIGNATURES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("cosignatures");
const FORK_INDEX: TableDefinition<&[u8], u64> = TableDefinition::new("fork_index");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this code writes and reads (2: `device_entries`,
/// issue 13 item 4; a version-1 store lacks it and is refused).
const FORMAT: u64 = 2;
/// The file name inside the hub's data directory.
pub const STORE_FILE: &str = "hub.redb";

/// The hub's store in one redb file.
pub struct EmbeddedStore {
    db: Database,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/hub.redb`.
    ///
    /// # Errors
    /// [`Error::Store`] when the file cannot be opened (another process
    /// holds it); [`Error::Corrupt`] for a file of another layout version.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Store(format!("creating {}: {e}", dir.display())))?;
        let db = Database::create(dir.join(STORE_FILE))?;
        let w = db.begin_write()?;
        {
            w.open_table(SITES)?;
            w.open_table(ENTRIES)?;
            w.open_table(NODES)?;
            w.open_table(DEVICE_HEADS)?;
            w.open_table(DEVICE_ENTRIES)?;
            w.open_table(KEYS)?;
            w.open_table(QUOTAS)?;
            w.open_table(DEVICES)?;
            w.open_table(SERIALS)?;
            w.open_table(IDENTITIES)?;
            w.open_table(CLONES)?;
            w.open_table(ORDERS)?;
            w.open_table(SITE_COUNTS)?;
            w.open_table(FORKS)?;
            w.open_table(FORK_INDEX)?;
            w.open_table(COSIGNATURES)?;
            let mut meta = w.open_table(META)?;
            let format = meta.get("format")?.map(|g| g.value());
            match format {
                None => {
                    meta.insert("format", FORMAT)?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(Error::Corrupt(format!(
                        "{STORE_FILE} has layout version {other}; this hub reads {FORMAT}"
                    )))
                }
            }
        }
        w.commit()?;
        Ok(Self { db })
    }

    /// Opens an existing `<dir>/hub.redb` for reading (the audit): refuses a
    /// directory without one instead of creating it, and a file of another
    /// layout version. It writes nothing, but redb locks the file: a hub
    /// serving it must be stopped, or a copy audited.
    ///
    /// # Errors
    /// [`Error::Store`] when there is no store or it cannot be opened;
    /// [`Error::Corrupt`] when it is not a hub store of this layout.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        let path = dir.join(STORE_FILE);
        if !path.is_file() {
            return Err(Error::Store(format!("no hub store at {}", path.display())));
        }
        let db = Database::open(&path)
            .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
        {
            let r = db.begin_read()?;
            let meta = r
                .open_table(META)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
            match meta.get("format")?.map(|g| g.value()) {
                Some(FORMAT) => {}
                other => {
                    return Err(Error::Corrupt(format!(
                        "{} has layout version {other:?}; this hub reads {FORMAT}",
                        path.display()
                    )))
                }
            }
        }
        Ok(Self { db })
    }
}

// ---------------------------------------------------------------------------
// Row encoding.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn hash(mut self, v: &Hash) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        // Rows hold entries, notes and certificates, each far below 4 GiB
        // (entries are at most 1 MiB).
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
    fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
}

struct Dec<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Self { b, at: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| Error::Corrupt(format!("a stored {} row is truncated", self.what)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(a))
    }
    fn hash(&mut self) -> Result<Hash> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        let n = u32::from_be_bytes(a) as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| Error::Corrupt(format!("a stored {} row holds bad UTF-8", self.what)))
    }
    fn end(&self) -> Result<()> {
        if self.at != self.b.len() {
            return Err(Error::Corrupt(format!(
                "a stored {} row has trailing bytes",
                self.what
            )));
        }
        Ok(())
    }
}

fn hash_of(b: &[u8], what: &str) -> Result<Hash> {
    b.try_into()
        .map_err(|_| Error::Corrupt(format!("a stored {what} is not 32 bytes")))
}

fn encode_site(r: &SiteRow) -> Vec<u8> {
    let e = Enc::default()
        .u8(1)
        .u64(r.size)
        .hash(&r.head)
        .i64(r.last_time_ms)
        .u64(r.forks);
    match &r.cosigned {
        None => e.u8(0).0,
        Some(c) => e.u8(1).u64(c.size).hash(&c.root).u64(c.time).str(&c.note).0,
    }
}

fn decode_site(b: &[u8]) -> Result<SiteRow> {
    let mut d = Dec::new(b, "site");
    if d.u8()? != 1 {
        return Err(Error::Corrupt(
            "a stored site row has an unknown version".into(),
        ));
    }
    let size = d.u64()?;
    let head = d.hash()?;
    let last_time_ms = d.i64()?;
    let forks = d.u64()?;
    let cosigned = match d.u8()? {
        0 => None,
        _ => Some(Cosigned {
            size: d.u64()?,
            root: d.hash()?,
            time: d.u64()?,
            note: d.str()?,
        }),
    };
    d.end()?;
    Ok(SiteRow {
        size,
        head,
        last_time_ms,
        cosigned,
        forks,
    })
}

fn encode_device(r: &DeviceRecord) -> Vec<u8> {
    Enc::default()
        .str(&r.serial)
        .str(&r.order_id)
        .u8(r.state.code())
        .u64(r.certified_seq)
        .u64(r.last_seq)
        .bytes(&r.certificate)
        .hash(&r.device_key_sha256)
        .u8(u8::from(r.cross_site_clone))
        .0
}

fn decode_device(rot_id: &str, site: &str, b: &[u8]) -> Result<DeviceRecord> {
    let mut d = Dec::new(b, "device");
    let r = DeviceRecord {
        rot_id: rot_id.to_string(),
        site: site.to_string(),
        serial: d.str()?,
        order_id: d.str()?,
        state: CustodyState::from_code(d.u8()?)
            .ok_or_else(|| Error::Corrupt("a stored device has an unknown state".into()))?,
        certified_seq: d.u64()?,
        last_seq: d.u64()?,
        certificate: d.bytes()?,
        device_key_sha256: d.hash()?,
        cross_site_clone: d.u8()? != 0,
    };
    d.end()?;
    Ok(r)
}

fn encode_order(r: &OrderSiteRow) -> Vec<u8> {
    Enc::default()
        .u8(u8::from(r.opened))
        .u64(r.opened_seq)
        .u64(r.quantity)
        .u64(r.allocation)
        .hash(&r.terms_sha256)
        .u64(r.certified)
        .u64(r.scrapped)
        .0
}

fn decode_order(order_id: &str, site: &str, b: &[u8]) -> Result<OrderSiteRow> {
    let mut d = Dec::new(b, "order");
    let r = OrderSiteRow {
        order_id: order_id.to_string(),
        site: site.to_string(),
        opened: d.u8()? != 0,
        opened_seq: d.u64()?,
        quantity: d.u64()?,
        allocation: d.u64()?,
        terms_sha256: d.hash()?,
        certified: d.u64()?,
        scrapped: d.u64()?,
    };
    d.end()?;
    Ok(r)
}

fn encode_holder(h: &CloneHolder) -> Vec<u8> {
    Enc::default().u64(h.seq).str(&h.rot_id).str(&h.serial).0
}

fn decode_holder(site: &str, b: &[u8]) -> Result<CloneHolder> {
    let mut d = Dec::new(b, "identity");
    let h = CloneHolder {
        site: site.to_string(),
        seq: d.u64()?,
        rot_id: d.str()?,
        serial: d.str()?,
    };
    d.end()?;
    Ok(h)
}

fn encode_counts(c: &SiteCounts) -> Vec<u8> {
    Enc::default()
        .u64(c.certified)
        .u64(c.shipped)
        .u64(c.received)
        .u64(c.scrapped)
        .0
}

fn decode_counts(b: &[u8]) -> Result<SiteCounts> {
    let mut d = Dec::new(b, "site counts");
    let c = SiteCounts {
        certified: d.u64()?,
        shipped: d.u64()?,
        received: d.u64()?,
        scrapped: d.u64()?,
    };
    d.end()?;
    Ok(c)
}

fn encode_fork(f: &ForkRecord) -> Vec<u8> {
    Enc::default()
        .str(&f.site)
        .u8(f.kind.code())
        .u64(f.position)
        .hash(&f.held_hash)
        .hash(&f.offered_hash)
        .bytes(&f.held_entry)
        .bytes(&f.offered_entry)
        .str(&f.held_note)
        .str(&f.offered_note)
        .str(&f.reason)
        .i64(f.time_ms)
        .u64(f.repeats)
        .0
}

fn decode_fork(id: u64, b: &[u8]) -> Result<ForkRecord> {
    let mut d = Dec::new(b, "fork");
    let f = ForkRecord {
        id,
        site: d.str()?,
        kind: ForkKind::from_code(d.u8()?)
            .ok_or_else(|| Error::Corrupt("a stored fork has an unknown kind".into()))?,
        position: d.u64()?,
        held_hash: d.hash()?,
        offered_hash: d.hash()?,
        held_entry: d.bytes()?,
        offered_entry: d.bytes()?,
        held_note: d.str()?,
        offered_note: d.str()?,
        reason: d.str()?,
        time_ms: d.i64()?,
        repeats: d.u64()?,
    };
    d.end()?;
    Ok(f)
}

pub(crate) fn fork_digest(f: &ForkRecord) -> Hash {
    let mut h = Sha256::new();
    h.update((f.site.len() as u64).to_be_bytes());
    h.update(f.site.as_bytes());
    h.update([f.kind.code()]);
    h.update(f.position.to_be_bytes());
    h.update(f.offered_hash);
    h.finalize().into()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------
// Registry writes inside one ingest transaction.
// ---------------------------------------------------------------------------

fn apply_events(w: &WriteTransaction, site: &str, events: &[RegistryEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut devices = w.open_table(DEVICES)?;
    let mut serials = w.open_table(SERIALS)?;
    let mut ids = w.open_table(IDENTITIES)?;
    let mut clones = w.open_table(CLONES)?;
    let mut orders = w.open_table(ORDERS)?;
    let mut counts_t = w.open_table(SITE_COUNTS)?;
    let mut counts = match counts_t.get(site)? {
        Some(g) => decode_counts(g.value())?,
        None => SiteCounts::default(),
    };
    let order_row =
        |orders: &redb::Table<(&str, &str), &[u8]>, order: &str| -> Result<OrderSiteRow> {
            match orders.get((order, site))? {
                Some(g) => decode_order(order, site, g.value()),
                None => Ok(OrderSiteRow {
                    order_id: order.to_string(),
                    site: site.to_string(),
                    ..OrderSiteRow::default()
                }),
            }
        };
    for ev in events {
        match ev {
            RegistryEvent::OrderOpened {
                order_id,
                seq,
                quantity,
                allocation,
                terms_sha256,
            } => {
                let mut row = order_row(&orders, order_id)?;
                row.opened = true;
                row.opened_seq = *seq;
                row.quantity = *quantity;
                row.allocation = *allocation;
                row.terms_sha256 = *terms_sha256;
                orders.insert((order_id.as_str(), site), encode_order(&row).as_slice())?;
            }
            RegistryEvent::Certified(device) => {
                counts.certified += 1;
                if !device.order_id.is_empty() {
                    let mut row = order_row(&orders, &device.order_id)?;
                    row.certified += 1;
                    orders.insert(
                        (device.order_id.as_str(), site),
                        encode_order(&row).as_slice(),
                    )?;
                }
                let mut record = device.clone();
                let holder = CloneHolder {
                    site: site.to_string(),
                    seq: device.certified_seq,
                    rot_id: device.rot_id.clone(),
                    serial: device.serial.clone(),
                };
                for (kind, value) in identities(device) {
                    let k = kind.code();
                    let mut others = Vec::new();
                    for item in ids.range((k, value.as_slice(), "")..)? {
                        let (key, v) = item?;
                        let (kk, kv, ks) = key.value();
                        if kk != k || kv != value.as_slice() {
                            break;
                        }
                        if ks != site {
                            others.push(decode_holder(ks, v.value())?);
                        }
                    }
                    ids.insert(
                        (k, value.as_slice(), site),
                        encode_holder(&holder).as_slice(),
                    )?;
                    if others.is_empty() {
                        continue;
                    }
                    // A cross-site clone: recorded once per identity, and
                    // every holder's device record is marked.
                    record.cross_site_clone = true;
                    if clones.get((k, value.as_slice()))?.is_none() {
                        clones.insert((k, value.as_slice()), now_ms())?;
                    }
                    for other in others {
                        let key = (other.rot_id.as_str(), other.site.as_str());
                        let marked = match devices.get(key)? {
                            Some(g) => {
                                let mut d = decode_device(&other.rot_id, &other.site, g.value())?;
                                d.cross_site_clone = true;
                                Some(d)
                            }
                            None => None,
                        };
                        if let Some(d) = marked {
                            devices.insert(key, encode_device(&d).as_slice())?;
                        }
                    }
                }
                devices.insert(
                    (device.rot_id.as_str(), site),
                    encode_device(&record).as_slice(),
                )?;
                if !device.serial.is_empty() {
                    serials.insert((device.serial.as_str(), site), device.rot_id.as_str())?;
                }
            }
            RegistryEvent::Custody {
                rot_id,
                seq,
                state,
                order_id,
            } => {
                counts.count_custody(*state);
                let updated = match devices.get((rot_id.as_str(), site))? {
                    Some(g) => {
                        let mut d = decode_device(rot_id, site, g.value())?;
                        d.state = *state;
                        d.last_seq = *seq;
                        Some(d)
                    }
                    None => None,
                };
                if let Some(d) = updated {
                    devices.insert((rot_id.as_str(), site), encode_device(&d).as_slice())?;
                }
                if *state == CustodyState::Scrapped && !order_id.is_empty() {
                    let mut row = order_row(&orders, order_id)?;
                    row.scrapped += 1;
                    orders.insert((order_id.as_str(), site), encode_order(&row).as_slice())?;
                }
            }
        }
    }
    counts_t.insert(site, encode_counts(&counts).as_slice())?;
    Ok(())
}

impl HubStore for EmbeddedStore {
    fn site(&self, site: &str) -> Result<SiteRow> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SITES)?;
        match t.get(site)? {
            Some(g) => decode_site(g.value()),
            None => Ok(SiteRow::default()),
        }
    }

    fn prior(&self, site: &str, probe: &Probe) -> Result<Prior> {
        let r = self.db.begin_read()?;
        let heads = r.open_table(DEVICE_HEADS)?;
        let keys = r.open_table(KEYS)?;
        let quotas = r.open_table(QUOTAS)?;
        let mut prior = Prior::default();
        for rot in &probe.rot_ids {
            if let Some(g) = heads.get((site, rot.as_str()))? {
                prior
                    .device_heads
                    .insert(rot.clone(), hash_of(g.value(), "device head")?);
            }
        }
        for key in &probe.keys {
            if let Some(g) = keys.get((site, key.as_slice()))? {
                prior.key_holders.insert(key.clone(), g.value());
            }
        }
        for counter in &probe.counters {
            if let Some(g) = quotas.get((site, counter.as_str()))? {
                prior.quotas.insert(counter.clone(), g.value());
            }
        }
        Ok(prior)
    }

    fn node(&self, site: &str, level: u8, index: u64) -> Result<Option<Hash>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(NODES)?;
        t.get((site, level, index))?
            .map(|g| hash_of(g.value(), "node"))
            .transpose()
    }

    fn entries(&self, site: &str, start: u64, end: u64) -> Result<Vec<Vec<u8>>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(ENTRIES)?;
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        for item in t.range((site, start)..(site, end))? {
            let (_, v) = item?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    fn commit_ingest(&self, batch: &IngestBatch) -> Result<()> {
        let site = batch.site.as_str();
        let w = self.db.begin_write()?;
        {
            let mut sites = w.open_table(SITES)?;
            let stored = match sites.get(site)? {
                Some(g) => decode_site(g.value())?,
                None => SiteRow::default(),
            };
            if stored.size != batch.from {
                // Dropping the transaction aborts it: nothing is written.
                return Err(Error::Store(format!(
                    "site {site} is at {} entries, not {}: another writer moved it",
                    stored.size, batch.from
                )));
            }
            let row = SiteRow {
                cosigned: stored.cosigned,
                forks: stored.forks,
                ..batch.row.clone()
            };
            sites.insert(site, encode_site(&row).as_slice())?;
            let mut entries = w.open_table(ENTRIES)?;
            for (i, e) in batch.entries.iter().enumerate() {
                entries.insert((site, batch.from + i as u64), e.as_slice())?;
            }
            let mut nodes = w.open_table(NODES)?;
            for (level, index, hash) in &batch.nodes {
                nodes.insert((site, *level, *index), hash.as_slice())?;
            }
            let mut heads = w.open_table(DEVICE_HEADS)?;
            for (rot, hash) in &batch.device_heads {
                heads.insert((site, rot.as_str()), hash.as_slice())?;
            }
            let mut device_entries = w.open_table(DEVICE_ENTRIES)?;
            for (rot, seq) in &batch.device_entries {
                device_entries.insert((site, rot.as_str(), *seq), ())?;
            }
            let mut keys = w.open_table(KEYS)?;
            for (key, seq) in &batch.keys {
                keys.insert((site, key.as_slice()), *seq)?;
            }
            let mut quotas = w.open_table(QUOTAS)?;
            for (counter, n) in &batch.quotas {
                quotas.insert((site, counter.as_str()), *n)?;
            }
        }
        apply_events(&w, site, &batch.events)?;
        w.commit()?;
        Ok(())
    }

    fn commit_cosigned(&self, site: &str, expected_size: u64, cosigned: &Cosigned) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut sites = w.open_table(SITES)?;
            let mut row = match sites.get(site)? {
                Some(g) => decode_site(g.value())?,
                None => SiteRow::default(),
            };
            let held = row.cosigned.as_ref().map_or(0, |c| c.size);
            if held != expected_size {
                return Err(Error::Store(format!(
                    "site {site}'s cosigned size is {held}, not {expected_size}: another writer moved it"
                )));
            }
            row.cosigned = Some(cosigned.clone());
            sites.insert(site, encode_site(&row).as_slice())?;
            let mut history = w.open_table(COSIGNATURES)?;
            let value = Enc::default().u64(cosigned.time).hash(&cosigned.root).0;
            history.insert((site, cosigned.size), value.as_slice())?;
        }
        w.commit()?;
        Ok(())
    }

    fn record_fork(&self, fork: &ForkRecord) -> Result<ForkRecord> {
        let digest = fork_digest(fork);
        let w = self.db.begin_write()?;
        let stored = {
            let mut index = w.open_table(FORK_INDEX)?;
            let mut forks = w.open_table(FORKS)?;
            let existing = index.get(digest.as_slice())?.map(|g| g.value());
            match existing {
                Some(id) => {
                    let mut f = match forks.get(id)? {
                        Some(g) => decode_fork(id, g.value())?,
                        None => {
                            return Err(Error::Corrupt(format!("fork {id} is indexed but missing")))
                        }
                    };
                    f.repeats += 1;
                    forks.insert(id, encode_fork(&f).as_slice())?;
                    f
                }
                None => {
                    let mut meta = w.open_table(META)?;
                    let id = meta.get("next_fork")?.map_or(1, |g| g.value());
                    meta.insert("next_fork", id + 1)?;
                    let f = ForkRecord {
                        id,
                        repeats: 0,
                        ..fork.clone()
                    };
                    forks.insert(id, encode_fork(&f).as_slice())?;
                    index.insert(digest.as_slice(), id)?;
                    let mut sites = w.open_table(SITES)?;
                    let mut row = match sites.get(fork.site.as_str())? {
                        Some(g) => decode_site(g.value())?,
                        None => SiteRow::default(),
                    };
                    row.forks += 1;
                    sites.insert(fork.site.as_str(), encode_site(&row).as_slice())?;
                    f
                }
            }
        };
        w.commit()?;
        Ok(stored)
    }

    fn device_entries(&self, site: &str, rot_id: &str) -> Result<Vec<u64>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(DEVICE_ENTRIES)?;
        let mut out = Vec::new();
        for item in t.range((site, rot_id, 0)..=(site, rot_id, u64::MAX))? {
            let (k, _) = item?;
            out.push(k.value().2);
        }
        Ok(out)
    }

    fn devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceRecord>> {
        let r = self.db.begin_read()?;
        let devices = r.open_table(DEVICES)?;
        let mut keys: Vec<(String, String)> = Vec::new();
        match query {
            DeviceQuery::RotId(rot) => {
                for item in devices.range((rot.as_str(), "")..)? {
                    let (k, _) = item?;
                    let (kr, ks) = k.value();
                    if kr != rot {
                        break;
                    }
                    keys.push((kr.to_string(), ks.to_string()));
                }
            }
            DeviceQuery::Serial(serial) => {
                let serials = r.open_table(SERIALS)?;
                for item in serials.range((serial.as_str(), "")..)? {
                    let (k, v) = item?;
                    let (kserial, ks) = k.value();
                    if kserial != serial {
                        break;
                    }
                    keys.push((v.value().to_string(), ks.to_string()));
                }
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (rot, site) in keys {
            if let Some(g) = devices.get((rot.as_str(), site.as_str()))? {
                out.push(decode_device(&rot, &site, g.value())?);
            }
        }
        Ok(out)
    }

    fn site_counts(&self, site: &str) -> Result<SiteCounts> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SITE_COUNTS)?;
        match t.get(site)? {
            Some(g) => decode_counts(g.value()),
            None => Ok(SiteCounts::default()),
        }
    }

    fn order_rows(&self, order_id: Option<&str>) -> Result<Vec<OrderSiteRow>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(ORDERS)?;
        let mut out = Vec::new();
        let start = order_id.unwrap_or("");
        for item in t.range((start, "")..)? {
            let (k, v) = item?;
            let (ko, ks) = k.value();
            if order_id.is_some_and(|o| o != ko) {
                break;
            }
            out.push(decode_order(ko, ks, v.value())?);
        }
        Ok(out)
    }

    fn forks(&self, site: Option<&str>) -> Result<Vec<ForkRecord>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(FORKS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let f = decode_fork(k.value(), v.value())?;
            if site.is_none_or(|s| s == f.site) {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn cosignatures(&self, site: &str) -> Result<Vec<CosignedPoint>> {
        let r = self.db.begin_read()?;
        let t = match r.open_table(COSIGNATURES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in t.range((site, 0)..=(site, u64::MAX))? {
            let (k, v) = item?;
            let mut d = Dec::new(v.value(), "cosignature");
            out.push(CosignedPoint {
                size: k.value().1,
                time: d.u64()?,
                root: d.hash()?,
            });
            d.end()?;
        }
        Ok(out)
    }

    fn clones(&self) -> Result<Vec<CloneRecord>> {
        let r = self.db.begin_read()?;
        let clones = r.open_table(CLONES)?;
        let ids = r.open_table(IDENTITIES)?;
        let mut out = Vec::new();
        for item in clones.iter()? {
            let (k, v) = item?;
            let (kind, value) = k.value();
            let mut holders = Vec::new();
            for h in ids.range((kind, value, "")..)? {
                let (hk, hv) = h?;
                let (hkind, hvalue, hsite) = hk.value();
                if hkind != kind || hvalue != value {
                    break;
                }
                holders.push(decode_holder(hsite, hv.value())?);
            }
            out.push(CloneRecord {
                kind: IdentityKind::from_code(kind)
                    .ok_or_else(|| Error::Corrupt("a stored clone has an unknown kind".into()))?,
                value: value.to_vec(),
                holders,
                detected_ms: v.value(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    fn cosigned(size: u64, time: u64) -> Cosigned {
        Cosigned {
            size,
            root: [size as u8; 32],
            note: format!("note {size}"),
            time,
        }
    }

    /// The audit's history of cosignatures (issue 13 item 5, 2.4.14.20):
    /// every cosigned checkpoint is kept, in the same transaction as the
    /// witness state, and a reader never creates a store.
    #[test]
    fn every_cosigned_checkpoint_is_kept_and_a_reader_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        assert!(matches!(
            EmbeddedStore::open_existing(&missing),
            Err(Error::Store(_))
        ));
        assert!(!missing.exists(), "the reader created the directory");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.commit_cosigned("s", 0, &cosigned(3, 100)).unwrap();
            store.commit_cosigned("s", 3, &cosigned(7, 160)).unwrap();
            // A stale compare-and-set writes nothing, history included.
            assert!(store.commit_cosigned("s", 3, &cosigned(9, 170)).is_err());
            store.commit_cosigned("t", 0, &cosigned(2, 120)).unwrap();
        }
        let store = EmbeddedStore::open_existing(dir.path()).unwrap();
        let s = store.cosignatures("s").unwrap();
        assert_eq!(
            s.iter().map(|p| (p.size, p.time)).collect::<Vec<_>>(),
            [(3, 100), (7, 160)]
        );
        assert_eq!(s[1].root, [7; 32]);
        assert_eq!(store.cosignatures("t").unwrap().len(), 1);
        assert!(store.cosignatures("u").unwrap().is_empty());
    }
}
