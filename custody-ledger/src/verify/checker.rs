//! The verifier's state and its per-record checks: the chain, device
//! chains, unique keys, quotas, checkpoint signatures and roots, anchors
//! and, at the end, signed coverage.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use super::tree::StreamTree;
use super::{Options, Problem, Report, Verified, VerifiedEntry, Visitor};
use crate::checkpoint::{self, SignedCheckpoint};
use crate::entry::{self, Constraints};
use crate::format::{CheckpointRecord, EntryRecord};
use crate::merkle::{chain_head, empty_root, leaf_hash, Hash, GENESIS_HEAD};

/// The result of one check: the first problem, if any.
pub(super) type Check = std::result::Result<(), Problem>;

/// The verifier's short hashes: 64-bit SipHash with a key drawn at random
/// for each run, so whoever wrote the ledger cannot aim for a collision.
///
/// - Unique keys and `rot_id`s are map keys by their short hash. Two
///   different keys colliding (about 1 in 10^7 for a ledger of 2 million
///   keys) could only make the verifier report a false duplicate — fail
///   closed — never miss a real one.
/// - A device's last leaf hash is kept as its short hash (8 bytes, not 32,
///   per device: flat enough for an audit of millions of devices). A
///   `device_prev` that is not the previous leaf passes only if its short
///   hash collides with the leaf's under a key its writer never saw: a
///   chance of 2^-64 per entry.
struct ShortHash(RandomState);

impl ShortHash {
    fn of(&self, b: &[u8]) -> u64 {
        self.0.hash_one(b)
    }
}

/// The maps' hasher: their keys are short hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ShortMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// A checkpoint the ledger must cover, checked when the pass reaches its
/// size.
struct Anchor {
    label: String,
    checkpoint: SignedCheckpoint,
    /// Its note's origin line.
    origin: String,
}

pub(super) struct Checker<'v> {
    pub(super) spki: Vec<u8>,
    pub(super) origin: Option<String>,
    tree: StreamTree,
    pub(super) head: Hash,
    pub(super) next: u64,
    last_time_ms: i64,
    short: ShortHash,
    /// Per device: the short hash of its last leaf.
    devices: ShortMap<u64>,
    /// Per unique key: the entry holding it.
    keys: ShortMap<u64>,
    quotas: HashMap<String, u64>,
    pub(super) checkpoints: u64,
    anchors_checked: u64,
    /// Anchors not yet reached, by size.
    anchors: BTreeMap<u64, Vec<Anchor>>,
    latest: Option<SignedCheckpoint>,
    visit: Visitor<'v>,
}

impl<'v> Checker<'v> {
    pub(super) fn new(spki: Vec<u8>, opts: &Options, visit: Visitor<'v>) -> Self {
        Self {
            spki,
            origin: opts.origin.clone(),
            tree: StreamTree::new(opts.keep_tree),
            head: GENESIS_HEAD,
            next: 0,
            last_time_ms: i64::MIN,
            short: ShortHash(RandomState::new()),
            devices: ShortMap::default(),
            keys: ShortMap::default(),
            quotas: HashMap::new(),
            checkpoints: 0,
            anchors_checked: 0,
            anchors: BTreeMap::new(),
            latest: None,
            visit,
        }
    }

    pub(super) fn entry(&mut self, location: &str, rec: EntryRecord) -> Check {
        let seq = self.next;
        let bad = |what: String| Problem {
            seq: Some(seq),
            location: location.to_string(),
            what,
        };
        if rec.seq != seq {
            return Err(bad(format!(
                "the record says seq {} where seq {seq} was expected: an entry is missing, repeated \
                 or out of order",
                rec.seq
            )));
        }
        let e = entry::check_stored(seq, &rec.entry).map_err(bad)?;
        if e.prev_hash != self.head {
            return Err(bad("prev_hash does not match the hash chain: this entry or the one before it was altered".into()));
        }
        if e.time_ms < self.last_time_ms {
            return Err(bad("time goes backwards".into()));
        }
        let device = (!e.rot_id.is_empty()).then(|| self.short.of(e.rot_id.as_bytes()));
        let prev_ok = match device.and_then(|d| self.devices.get(&d)) {
            None => e.device_prev.is_empty(),
            Some(&last) => {
                e.device_prev.len() == 32 && self.short.of(e.device_prev.as_slice()) == last
            }
        };
        if !prev_ok {
            return Err(bad(
                "device_prev does not match the device's previous entry".into(),
            ));
        }
        let constraints = Constraints::of_entry(&e);
        let mut new_keys = Vec::with_capacity(constraints.unique_keys.len());
        for k in &constraints.unique_keys {
            let h = self.short.of(&k.encoded());
            if let Some(holder) = self.keys.get(&h) {
                return Err(bad(format!(
                    "unique key {k} is already held by entry {holder}"
                )));
            }
            new_keys.push(h);
        }
        if let Some(q) = &constraints.quota {
            let used = self.quotas.get(&q.counter).copied().unwrap_or(0);
            if used >= q.limit {
                return Err(bad(format!(
                    "counted against quota {:?} already at its limit {} ({used} used)",
                    q.counter, q.limit
                )));
            }
        }
        // Accepted.
        for h in new_keys {
            self.keys.insert(h, seq);
        }
        if let Some(q) = &constraints.quota {
            *self.quotas.entry(q.counter.clone()).or_default() += 1;
        }
        let leaf = leaf_hash(&rec.entry);
        if let Some(d) = device {
            self.devices.insert(d, self.short.of(leaf.as_slice()));
        }
        self.tree.push(leaf);
        self.head = chain_head(&self.head, &leaf);
        self.last_time_ms = e.time_ms;
        self.next += 1;
        (self.visit)(&VerifiedEntry {
            seq,
            bytes: &rec.entry,
            leaf,
            entry: &e,
        });
        self.reach_anchors()
    }

    /// Opens a note with the key and the expected (or first seen) origin.
    fn open_note(&mut self, note: &str) -> std::result::Result<SignedCheckpoint, String> {
        let cp = checkpoint::open(note, &self.spki, self.origin.as_deref())
            .map_err(|e| e.to_string())?;
        if self.origin.is_none() {
            self.origin = note.lines().next().map(str::to_string);
        }
        Ok(cp)
    }

    fn root_matches(&self, cp: &SignedCheckpoint) -> std::result::Result<(), String> {
        if cp.size > self.next {
            return Err(format!(
                "the checkpoint covers {} entries but only {} precede it: entries were removed",
                cp.size, self.next
            ));
        }
        let root = self.tree.root_at(cp.size).ok_or_else(|| {
            format!(
                "the tree of {} entries is no longer at hand (checkpoint sizes go backwards)",
                cp.size
            )
        })?;
        if root != cp.root {
            return Err(format!(
                "the root hash of the first {} entries is not the one the checkpoint signs: an entry \
                 was changed, removed or reordered",
                cp.size
            ));
        }
        Ok(())
    }

    pub(super) fn checkpoint(&mut self, location: &str, rec: CheckpointRecord) -> Check {
        let bad = |what: String| Problem {
            seq: None,
            location: format!("checkpoint of size {} at {location}", rec.size),
            what,
        };
        let cp = self.open_note(&rec.note).map_err(bad)?;
        if cp.size != rec.size || cp.root != rec.root {
            return Err(bad(
                "the record's size or root differs from its signed note".into(),
            ));
        }
        if let Some(l) = &self.latest {
            if cp.size < l.size {
                return Err(bad(format!(
                    "checkpoint sizes go backwards ({} after {}): the log was rewritten",
                    cp.size, l.size
                )));
            }
        }
        self.root_matches(&cp).map_err(bad)?;
        // Later checkpoints are at least this large: the leaves before it
        // are not needed again.
        self.tree.settle(cp.size);
        self.checkpoints += 1;
        self.latest = Some(cp);
        Ok(())
    }

    /// Registers a checkpoint the ledger must cover (`checkpoint.latest`,
    /// an auditor's note); it is checked when the pass reaches its size.
    pub(super) fn anchor(&mut self, label: &str, note: &str) -> Check {
        let bad = |what: String| Problem {
            seq: None,
            location: label.to_string(),
            what,
        };
        let cp = checkpoint::open(note, &self.spki, self.origin.as_deref())
            .map_err(|e| bad(e.to_string()))?;
        let anchor = Anchor {
            label: label.to_string(),
            origin: note.lines().next().unwrap_or_default().to_string(),
            checkpoint: cp,
        };
        self.anchors
            .entry(anchor.checkpoint.size)
            .or_default()
            .push(anchor);
        self.reach_anchors()
    }

    /// Checks the anchors of the size the pass has reached.
    fn reach_anchors(&mut self) -> Check {
        let Some(anchors) = self.anchors.remove(&self.next) else {
            return Ok(());
        };
        let root = if self.next == 0 {
            empty_root()
        } else {
            self.tree.root()
        };
        for a in anchors {
            let bad = |what: String| Problem {
                seq: None,
                location: a.label.clone(),
                what,
            };
            if let Some(origin) = &self.origin {
                if &a.origin != origin {
                    return Err(bad(format!(
                        "the checkpoint's origin {:?} is not the ledger's {origin:?}",
                        a.origin
                    )));
                }
            }
            if root != a.checkpoint.root {
                return Err(bad(format!(
                    "the root hash of the first {} entries is not the one the checkpoint signs: an \
                     entry was changed, removed or reordered",
                    a.checkpoint.size
                )));
            }
            self.anchors_checked += 1;
        }
        Ok(())
    }

    /// After the last record: anchors larger than the ledger.
    pub(super) fn end_of_entries(&mut self) -> Check {
        if let Some((&size, anchors)) = self.anchors.iter().next() {
            let label = anchors.first().map(|a| a.label.clone()).unwrap_or_default();
            return Err(Problem {
                seq: None,
                location: label,
                what: format!(
                    "the checkpoint covers {size} entries but only {} precede it: entries were \
                     removed",
                    self.next
                ),
            });
        }
        Ok(())
    }

    /// Signed coverage: fails closed unless an unsigned tail is allowed.
    fn coverage(&self, opts: &Options) -> Option<Problem> {
        if opts.allow_unsigned_tail {
            return None;
        }
        match &self.latest {
            None => Some(Problem {
                seq: (self.next > 0).then_some(0),
                location: "signed checkpoints".into(),
                what: format!(
                    "no signed checkpoint covers this ledger ({} entries): nothing signed vouches \
                     for them (allow an unsigned tail explicitly to accept them)",
                    self.next
                ),
            }),
            Some(cp) if cp.size < self.next => Some(Problem {
                seq: Some(cp.size),
                location: "signed checkpoints".into(),
                what: format!(
                    "entries {} to {} ({} entries) come after the latest signed checkpoint (size {}): \
                     nothing signed vouches for them (allow an unsigned tail explicitly to accept \
                     them)",
                    cp.size,
                    self.next - 1,
                    self.next - cp.size,
                    cp.size
                ),
            }),
            Some(_) => None,
        }
    }

    pub(super) fn finish(self, problem: Option<Problem>, opts: &Options) -> Verified {
        let problem = problem.or_else(|| self.coverage(opts));
        let uncovered = self.next - self.latest.as_ref().map_or(0, |c| c.size);
        Verified {
            report: Report {
                entries: self.next,
                checkpoints: self.checkpoints,
                latest_checkpoint: self.latest,
                root: self.tree.root(),
                head: self.head,
                devices: self.devices.len() as u64,
                unique_keys: self.keys.len() as u64,
                quotas: self.quotas.into_iter().collect(),
                uncovered,
                anchors: self.anchors_checked,
                problem,
            },
            tree: self.tree.into_tree(),
        }
    }
}
