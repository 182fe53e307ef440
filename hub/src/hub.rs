//! The hub's core: the witness state machine, ingest into the mirror, and
//! the registry reads. Blocking code over a [`HubStore`]; the gRPC service
//! runs it off the async workers.
//!
//! No per-site state lives in memory: every call reads what it needs from
//! the store and commits with a compare-and-set on what it read, so a hub
//! restart (or a second hub process on a shared database) loses nothing
//! and can never cosign against a stale view. A per-site mutex only keeps
//! one process from doing the same work twice at once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use custody_ledger::format;
use custody_ledger::merkle::{self, leaf_hash, ConsistencyProof, Frontier};
use custody_ledger::Hash;

use crate::check::{check_batch, OrderReading, StoreNodes};
use crate::cosign::{split_note, Cosigner};
use crate::embedded::EmbeddedStore;
use crate::error::{Error, Result};
use crate::model::{
    CloneRecord, Cosigned, DeviceRecord, ForkKind, ForkRecord, OrderFigures, SiteConfig,
    SiteCounts, SiteRow, SiteStatus,
};
use crate::store::{DeviceQuery, HubStore};

/// Most entries one push may carry.
pub const MAX_PUSH_ENTRIES: usize = 4096;
/// Most consistency proof hashes (C2SP tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// How the hub is set up.
#[derive(Debug, Clone, Default)]
pub struct HubConfig {
    /// Every site the hub witnesses, mirrors and registers.
    pub sites: Vec<SiteConfig>,
    /// The OEM order key (SPKI DER). When set, an opened order that does
    /// not verify under it allocates nothing to its site.
    pub order_key: Option<Vec<u8>>,
}

/// A cosigned checkpoint, as answered to the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// The site.
    pub site: String,
    /// The tlog-witness response body: the cosignature line.
    pub signature_lines: String,
    /// The checkpoint with the cosignature appended.
    pub cosigned_note: String,
    /// The cosignature's timestamp, POSIX seconds.
    pub timestamp: u64,
    /// Its tree size.
    pub size: u64,
}

struct Slot {
    config: SiteConfig,
    lock: Mutex<()>,
}

struct Inner {
    sites: HashMap<String, Slot>,
    origins: HashMap<String, String>,
    store: Arc<dyn HubStore>,
    cosigner: Cosigner,
    orders: OrderReading,
}

/// The hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("sites", &self.inner.sites.keys().collect::<Vec<_>>())
            .field("witness", &self.inner.cosigner)
            .finish()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks a checkpoint note's syntax (so a malformed note is 400, not 403)
/// and returns its origin, to route it before its signature is checked.
fn parse_origin(note: &str) -> Result<String> {
    if note.len() > custody_ledger::checkpoint::MAX_NOTE_LEN {
        return Err(Error::InvalidArgument("checkpoint note is too long".into()));
    }
    let (body, _) = split_note(note)?;
    let mut lines = body.lines();
    let bad = |what: &str| Error::InvalidArgument(format!("checkpoint {what}"));
    let origin = lines.next().ok_or_else(|| bad("has no origin line"))?;
    let size_line = lines.next().ok_or_else(|| bad("has no size line"))?;
    let root_line = lines.next().ok_or_else(|| bad("has no root line"))?;
    if size_line.is_empty()
        || !size_line.bytes().all(|b| b.is_ascii_digit())
        || (size_line.len() > 1 && size_line.starts_with('0'))
    {
        return Err(bad("size is not a decimal without leading zeros"));
    }
    size_line
        .parse::<u64>()
        .map_err(|_| bad("size does not fit 64 bits"))?;
    B64.decode(root_line)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| bad("root is not 32 bytes of base64"))?;
    Ok(origin.to_string())
}

impl Hub {
    /// A hub over `store`, cosigning with `cosigner`.
    ///
    /// # Errors
    /// [`Error::Config`] when two sites share a name or an origin.
    pub fn open(config: HubConfig, cosigner: Cosigner, store: Arc<dyn HubStore>) -> Result<Hub> {
        let mut sites = HashMap::new();
        let mut origins = HashMap::new();
        for s in config.sites {
            if origins
                .insert(s.origin().to_string(), s.site.clone())
                .is_some()
            {
                return Err(Error::Config(format!(
                    "two sites have checkpoint origin {:?}",
                    s.origin()
                )));
            }
            let name = s.site.clone();
            if sites
                .insert(
                    name.clone(),
                    Slot {
                        config: s,
                        lock: Mutex::new(()),
                    },
                )
                .is_some()
            {
                return Err(Error::Config(format!("site {name:?} is configured twice")));
            }
        }
        tracing::info!(sites = sites.len(), witness = %cosigner.verifier_key(), "hub open");
        Ok(Hub {
            inner: Arc::new(Inner {
                sites,
                origins,
                store,
                cosigner,
                orders: OrderReading {
                    order_key: config.order_key,
                },
            }),
        })
    }

    /// A hub on the embedded store in `dir` (`<dir>/hub.redb`).
    ///
    /// # Errors
    /// As [`Hub::open`] and [`EmbeddedStore::open`].
    pub fn open_embedded(dir: &Path, config: HubConfig, cosigner: Cosigner) -> Result<Hub> {
        let store = EmbeddedStore::open(dir)?;
        Self::open(config, cosigner, Arc::new(store))
    }

    /// The witness.
    pub fn witness(&self) -> &Cosigner {
        &self.inner.cosigner
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn HubStore> {
        &self.inner.store
    }

    fn slot(&self, site: &str) -> Result<&Slot> {
        self.inner
            .sites
            .get(site)
            .ok_or_else(|| Error::UnknownSite(site.to_string()))
    }

    /// The configuration of `site`.
    ///
    /// # Errors
    /// [`Error::UnknownSite`].
    pub fn site_config(&self, site: &str) -> Result<&SiteConfig> {
        Ok(&self.slot(site)?.config)
    }

    /// The site whose checkpoints carry `origin`.
    ///
    /// # Errors
    /// [`Error::UnknownOrigin`].
    pub fn site_of_origin(&self, origin: &str) -> Result<&SiteConfig> {
        let site = self
            .inner
            .origins
            .get(origin)
            .ok_or_else(|| Error::UnknownOrigin(origin.to_string()))?;
        self.site_config(site)
    }

    /// The site a checkpoint note is for (by its origin line), before any
    /// signature is checked: lets the service scope the caller first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed note,
    /// [`Error::UnknownOrigin`].
    pub fn site_of_note(&self, note: &str) -> Result<&SiteConfig> {
        let origin = parse_origin(note)?;
        self.site_of_origin(&origin)
    }

    /// Configured sites, by name.
    pub fn sites(&self) -> Vec<&SiteConfig> {
        let mut v: Vec<&SiteConfig> = self.inner.sites.values().map(|s| &s.config).collect();
        v.sort_by(|a, b| a.site.cmp(&b.site));
        v
    }

    fn lock<'a>(&self, slot: &'a Slot) -> MutexGuard<'a, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is taken over.
        slot.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status_of(&self, config: &SiteConfig, row: &SiteRow) -> Result<SiteStatus> {
        let store = self.inner.store.as_ref();
        let frontier = Frontier::from_reader(
            &StoreNodes {
                store,
                site: &config.site,
            },
            row.size,
        )
        .map_err(|e| Error::Corrupt(format!("site {}'s mirrored tree: {e}", config.site)))?;
        Ok(SiteStatus {
            site: config.site.clone(),
            origin: config.origin().to_string(),
            mirror_size: row.size,
            mirror_root: frontier.root(),
            cosigned: row.cosigned.clone(),
            forks: row.forks,
        })
    }

    /// What the hub holds for `site`.
    ///
    /// # Errors
    /// [`Error::UnknownSite`], [`Error::Store`].
    pub fn status(&self, site: &str) -> Result<SiteStatus> {
        let slot = self.slot(site)?;
        let row = self.inner.store.site(site)?;
        self.status_of(&slot.config, &row)
    }

    fn fork(&self, config: &SiteConfig, fork: ForkRecord) -> Result<Error> {
        let stored = self.inner.store.record_fork(&fork)?;
        tracing::warn!(
            site = %config.site,
            kind = %fork.kind,
            position = fork.position,
            id = stored.id,
            repeats = stored.repeats,
            reason = %fork.reason,
            "fork refused and recorded"
        );
        let row = self.inner.store.site(&config.site)?;
        Ok(Error::Fork {
            kind: fork.kind,
            reason: fork.reason,
            state: Box::new(self.status_of(config, &row)?),
        })
    }

    /// Ingests entries `[start, start + entries.len())` of `site`'s ledger
    /// (2.4.14.3, 2.4.14.22). Entries the hub already holds must be
    /// byte-identical (they are skipped: a resend or a replay from an older
    /// size counts nothing twice); the rest are re-verified in order and
    /// committed atomically with the site's watermark and the registry.
    ///
    /// # Errors
    /// [`Error::Behind`] when `start` is beyond the mirror;
    /// [`Error::Fork`] for a rewritten entry ([`ForkKind::RewrittenEntry`])
    /// or an entry that fails verification ([`ForkKind::BadEntry`]), both
    /// recorded; [`Error::InvalidArgument`] for an oversized batch;
    /// [`Error::UnknownSite`]; [`Error::Store`]. A refused batch adds no
    /// entry.
    pub fn push_entries(
        &self,
        site: &str,
        start: u64,
        mut entries: Vec<Vec<u8>>,
    ) -> Result<SiteStatus> {
        let slot = self.slot(site)?;
        if entries.len() > MAX_PUSH_ENTRIES {
            return Err(Error::InvalidArgument(format!(
                "a push carries at most {MAX_PUSH_ENTRIES} entries"
            )));
        }
        if let Some(i) = entries
            .iter()
            .position(|e| e.len() > custody_ledger::entry::MAX_ENTRY_LEN)
        {
            return Err(Error::InvalidArgument(format!(
                "entry {} is larger than {} bytes",
                start.saturating_add(i as u64),
                custody_ledger::entry::MAX_ENTRY_LEN
            )));
        }
        let end = start
            .checked_add(entries.len() as u64)
            .ok_or_else(|| Error::InvalidArgument("entry range overflows".into()))?;
        let config = &slot.config;
        let store = self.inner.store.as_ref();
        let _guard = self.lock(slot);
        let row = store.site(site)?;
        if start > row.size {
            return Err(Error::Behind {
                what: format!(
                    "the push starts at entry {start} but the hub holds {} entries of site {site}: push from there",
                    row.size
                ),
                state: Box::new(self.status_of(config, &row)?),
            });
        }
        // The overlap with what the hub holds must be byte-identical.
        let overlap_end = end.min(row.size);
        for seq in start..overlap_end {
            let offered = &entries[(seq - start) as usize];
            let held = store.node(site, 0, seq)?.ok_or_else(|| {
                Error::Corrupt(format!("site {site}'s leaf {seq} is not mirrored"))
            })?;
            let offered_hash = leaf_hash(offered);
            if held != offered_hash {
                let held_entry = store
                    .entries(site, seq, seq + 1)?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                return Err(self.fork(
                    config,
                    ForkRecord {
                        id: 0,
                        site: site.to_string(),
                        kind: ForkKind::RewrittenEntry,
                        position: seq,
                        held_hash: held,
                        offered_hash,
                        held_entry,
                        offered_entry: offered.clone(),
                        held_note: String::new(),
                        offered_note: String::new(),
                        reason: format!(
                            "entry {seq} differs from the one the hub holds: the site rewrote its history"
                        ),
                        time_ms: now_ms(),
                        repeats: 0,
                    },
                )?);
            }
        }
        let skip = (overlap_end.saturating_sub(start)) as usize;
        let fresh = entries.split_off(skip.min(entries.len()));
        if fresh.is_empty() {
            return self.status_of(config, &row);
        }
        let batch = match check_batch(store, config, &row, fresh, &self.inner.orders)? {
            Ok(b) => b,
            Err(bad) => {
                let offered = bad.entry;
                return Err(self.fork(
                    config,
                    ForkRecord {
                        id: 0,
                        site: site.to_string(),
                        kind: ForkKind::BadEntry,
                        position: bad.seq,
                        held_hash: [0; 32],
                        offered_hash: leaf_hash(&offered),
                        held_entry: Vec::new(),
                        offered_entry: offered,
                        held_note: String::new(),
                        offered_note: String::new(),
                        reason: format!("entry {}: {}", bad.seq, bad.reason),
                        time_ms: now_ms(),
                        repeats: 0,
                    },
                )?);
            }
        };
        store.commit_ingest(&batch)?;
        tracing::debug!(
            site,
            from = batch.from,
            to = batch.row.size,
            "entries mirrored"
        );
        let row = SiteRow {
            cosigned: row.cosigned,
            forks: row.forks,
            ..batch.row
        };
        self.status_of(config, &row)
    }

    /// C2SP tlog-witness `add-checkpoint` (2.4.14.6, 2.4.14.20): verifies
    /// the site's signature, that `old_size` is the last cosigned size, the
    /// consistency proof from it, and that the checkpoint's root is the
    /// root of the entries the hub mirrored; then cosigns, persists the new
    /// state durably, and only then answers. Check and persist are one
    /// compare-and-set, so a cosigned size never goes back.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (malformed, too many proof lines, old
    /// size above the new one); [`Error::UnknownOrigin`];
    /// [`Error::BadSignature`]; [`Error::OldSizeMismatch`];
    /// [`Error::BadProof`]; [`Error::Behind`] (mirror too short);
    /// [`Error::Fork`] ([`ForkKind::ConflictingCheckpoint`], recorded);
    /// [`Error::Signer`], [`Error::Store`] (nothing answered).
    pub fn add_checkpoint(
        &self,
        old_size: u64,
        proof: &[Vec<u8>],
        note: &str,
    ) -> Result<Cosignature> {
        if proof.len() > MAX_PROOF_LINES {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_PROOF_LINES} consistency proof lines"
            )));
        }
        let path: Vec<Hash> = proof
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .map_err(|_| Error::InvalidArgument("a proof hash is not 32 bytes".into()))
            })
            .collect::<Result<_>>()?;
        let origin = parse_origin(note)?;
        let config = self.site_of_origin(&origin)?.clone();
        let site = config.site.as_str();
        let cp = custody_ledger::checkpoint::open(note, config.key.spki(), Some(config.origin()))
            .map_err(|e| Error::BadSignature(e.to_string()))?;
        if old_size > cp.size {
            return Err(Error::InvalidArgument(format!(
                "old size {old_size} is larger than the checkpoint's size {}",
                cp.size
            )));
        }
        if old_size == 0 && !path.is_empty() {
            return Err(Error::InvalidArgument(
                "the proof must be empty when the old size is 0".into(),
            ));
        }
        let (body, _) = split_note(note)?;
        let slot = self.slot(site)?;
        let store = self.inner.store.as_ref();
        let _guard = self.lock(slot);
        let row = store.site(site)?;
        let nodes = StoreNodes { store, site };
        let conflict = |held_hash: Hash, held_note: String, reason: String| ForkRecord {
            id: 0,
            site: site.to_string(),
            kind: ForkKind::ConflictingCheckpoint,
            position: cp.size,
            held_hash,
            offered_hash: cp.root,
            held_entry: Vec::new(),
            offered_entry: Vec::new(),
            held_note,
            offered_note: note.to_string(),
            reason,
            time_ms: now_ms(),
            repeats: 0,
        };
        // A signed root that differs from what the hub holds for that size
        // is a fork, whatever the old size says.
        if let Some(c) = row.cosigned.as_ref().filter(|c| c.size == cp.size) {
            if c.root != cp.root {
                let reason = format!(
                    "the site signed a different root for size {} than the one the hub cosigned",
                    cp.size
                );
                return Err(self.fork(&config, conflict(c.root, c.note.clone(), reason))?);
            }
        }
        if cp.size <= row.size {
            let mirrored = merkle::root(&nodes, cp.size)
                .map_err(|e| Error::Corrupt(format!("site {site}'s mirrored tree: {e}")))?;
            if mirrored != cp.root {
                let held_note = row
                    .cosigned
                    .as_ref()
                    .map(|c| c.note.clone())
                    .unwrap_or_default();
                let reason = format!(
                    "the checkpoint's root for size {} is not the root of the {} entries the hub mirrors",
                    cp.size, cp.size
                );
                return Err(self.fork(&config, conflict(mirrored, held_note, reason))?);
            }
        }
        let held_size = row.cosigned.as_ref().map_or(0, |c| c.size);
        if old_size != held_size {
            return Err(Error::OldSizeMismatch {
                offered: old_size,
                state: Box::new(self.status_of(&config, &row)?),
            });
        }
        let old_root = row
            .cosigned
            .as_ref()
            .map_or_else(merkle::empty_root, |c| c.root);
        merkle::verify_consistency(
            &ConsistencyProof {
                from_size: old_size,
                to_size: cp.size,
                path,
            },
            &old_root,
            &cp.root,
        )
        .map_err(|e| Error::BadProof(e.to_string()))?;
        if cp.size > row.size {
            return Err(Error::Behind {
                what: format!(
                    "the checkpoint covers {} entries but the hub mirrors {} of site {site}: push the entries first",
                    cp.size, row.size
                ),
                state: Box::new(self.status_of(&config, &row)?),
            });
        }
        // Cosignature timestamps never go backwards for a site.
        let timestamp = now_secs().max(row.cosigned.as_ref().map_or(0, |c| c.time));
        let line = self.inner.cosigner.cosign(body, timestamp)?;
        let cosigned_note = format!("{note}{line}");
        store.commit_cosigned(
            site,
            held_size,
            &Cosigned {
                size: cp.size,
                root: cp.root,
                note: cosigned_note.clone(),
                time: timestamp,
            },
        )?;
        tracing::debug!(site, size = cp.size, "checkpoint cosigned");
        Ok(Cosignature {
            site: site.to_string(),
            signature_lines: line,
            cosigned_note,
            timestamp,
            size: cp.size,
        })
    }

    /// Every site's record of a device.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceRecord>> {
        self.inner.store.devices(query)
    }

    /// Every configured site's state and counts.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn site_figures(&self) -> Result<Vec<(SiteStatus, SiteCounts)>> {
        self.sites()
            .into_iter()
            .map(|c| {
                let row = self.inner.store.site(&c.site)?;
                Ok((
                    self.status_of(c, &row)?,
                    self.inner.store.site_counts(&c.site)?,
                ))
            })
            .collect()
    }

    /// Per-order figures across sites (one order, or all).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn orders(&self, order_id: Option<&str>) -> Result<Vec<OrderFigures>> {
        let rows = self.inner.store.order_rows(order_id)?;
        let mut out: Vec<OrderFigures> = Vec::new();
        let mut group = Vec::new();
        for row in rows {
            if group
                .last()
                .is_some_and(|r: &crate::model::OrderSiteRow| r.order_id != row.order_id)
            {
                let id = group[0].order_id.clone();
                out.push(OrderFigures::from_rows(&id, std::mem::take(&mut group)));
            }
            group.push(row);
        }
        if let Some(first) = group.first() {
            let id = first.order_id.clone();
            out.push(OrderFigures::from_rows(&id, group));
        }
        Ok(out)
    }

    /// Recorded forks (one site, or all).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn forks(&self, site: Option<&str>) -> Result<Vec<ForkRecord>> {
        self.inner.store.forks(site)
    }

    /// Cross-site clones.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn clones(&self) -> Result<Vec<CloneRecord>> {
        self.inner.store.clones()
    }

    /// Writes `site`'s mirror as a custody-ledger export (the format of
    /// `trustline ledger export`, see `custody_ledger::format`): key record,
    /// every mirrored entry, the latest cosigned checkpoint (both signature
    /// lines) after the entries it covers, trailer. `trustline ledger
    /// verify --export FILE --key <site key>` checks it offline. Returns the
    /// number of entries written.
    ///
    /// # Errors
    /// [`Error::UnknownSite`], [`Error::Store`] (also for file errors).
    pub fn export_site(&self, site: &str, out: &Path) -> Result<u64> {
        export_mirror(self.inner.store.as_ref(), self.site_config(site)?, out)
    }
}

/// Writes the mirror of the site `config` names, as [`Hub::export_site`]
/// does, straight from a store (the audit reads a stopped hub's store this
/// way, without its witness key).
///
/// # Errors
/// [`Error::Store`] (also for file errors), [`Error::Corrupt`].
pub fn export_mirror(store: &dyn HubStore, config: &SiteConfig, out: &Path) -> Result<u64> {
    let site = config.site.as_str();
    let row = store.site(site)?;
    let io = |e: std::io::Error| Error::Store(format!("writing {}: {e}", out.display()));
    let file = File::create(out).map_err(io)?;
    let mut w = BufWriter::new(file);
    w.write_all(&format::encode_header(format::EXPORT_MAGIC, 0))
        .map_err(io)?;
    let mut buf = Vec::new();
    format::encode_key(config.origin(), config.key.spki(), &mut buf);
    let mut head = merkle::GENESIS_HEAD;
    let mut checkpoints = 0u64;
    let mut seq = 0u64;
    const CHUNK: u64 = 1024;
    while seq < row.size {
        let chunk = store.entries(site, seq, (seq + CHUNK).min(row.size))?;
        if chunk.is_empty() {
            return Err(Error::Corrupt(format!(
                "site {site}'s mirror ends at {seq}, its watermark says {}",
                row.size
            )));
        }
        for e in chunk {
            format::encode_entry(seq, &e, &mut buf);
            head = merkle::chain_head(&head, &leaf_hash(&e));
            seq += 1;
            if let Some(c) = row.cosigned.as_ref().filter(|c| c.size == seq) {
                format::encode_checkpoint(c.size, &c.root, &c.note, &mut buf);
                checkpoints += 1;
            }
        }
        w.write_all(&buf).map_err(io)?;
        buf.clear();
    }
    format::encode_trailer(
        &format::Trailer {
            entries: row.size,
            checkpoints,
            head,
        },
        &mut buf,
    );
    w.write_all(&buf).map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(row.size)
}
