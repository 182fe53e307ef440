//! The offline verifier: everything an auditor needs to trust the ledger,
//! recomputed from a data directory or an export plus the ledger's public
//! key — no index, no server, no signer (invariant 5, 2.4.14.3).
//!
//! In one pass over the records, in order, it checks:
//! - framing and checksums, and that sequence numbers run 0, 1, 2, … with
//!   no gap, repeat or reordering;
//! - every entry passes the per-entry checks it shares with the live
//!   ledger's open (`entry::check_stored`: canonical `LedgerEntry`, right
//!   `seq`, known kind, well-formed `rot_id`, no key declared twice); its
//!   `prev_hash` (the chain head before it) and `device_prev` (the leaf hash
//!   of the same device's previous entry) are right, and its time does not
//!   go backwards;
//! - unique keys are held by one entry only, and no entry counted against a
//!   quota already at its declared limit;
//! - every checkpoint's signature verifies with the given key, its sizes
//!   never decrease, and its root equals the root recomputed from the
//!   entries. All roots come from one recomputed tree, so every checkpoint
//!   is consistent with every other;
//! - anchors: `checkpoint.latest` of a data directory and any checkpoint
//!   notes the auditor kept must be covered by the entries with the same
//!   root — so cutting entries off the end is caught;
//! - an export ends with a trailer whose counts and chain head match.
//!
//! The first problem stops the pass and is reported with the entry and the
//! place it was found.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};
use trustline_proto::v1::LedgerEntry;

use crate::checkpoint::{self, SignedCheckpoint};
use crate::entry::{self, Constraints};
use crate::error::{Error, Result};
use crate::format::{
    self, EntryRecord, Record, UnverifiedRecord, EXPORT_MAGIC, HEADER_LEN, RECORD_HEADER_LEN,
};
use crate::ledger::{LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use crate::merkle::{self, chain_head, leaf_hash, Hash, MemoryTree, GENESIS_HEAD};
use crate::segments::{self, End};
use crate::storage::Storage;

/// What the verifier checks against.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// SubjectPublicKeyInfo DER of the ledger's checkpoint key; `None` reads
    /// `ledger-key.pub.pem` from the data directory (an auditor should
    /// supply the key they obtained independently).
    pub key: Option<Vec<u8>>,
    /// The expected checkpoint origin; `None` takes the first checkpoint's
    /// and requires every later one to match.
    pub origin: Option<String>,
    /// Checkpoint notes kept from earlier (e.g. by a witness or a previous
    /// audit): each must be covered by the ledger with the same root.
    pub anchors: Vec<String>,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry it concerns, when it concerns one.
    pub seq: Option<u64>,
    /// Where: file and offset, or what was being checked.
    pub location: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "entry {seq} ({}): {}", self.location, self.what),
            None => write!(f, "{}: {}", self.location, self.what),
        }
    }
}

/// What the verifier found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Entries checked.
    pub entries: u64,
    /// Checkpoint records checked.
    pub checkpoints: u64,
    /// The last checkpoint.
    pub latest_checkpoint: Option<SignedCheckpoint>,
    /// The root of the tree of every entry checked.
    pub root: Hash,
    /// The chain head after the last entry.
    pub head: Hash,
    /// Distinct devices.
    pub devices: u64,
    /// Unique keys held.
    pub unique_keys: u64,
    /// Entries per quota counter.
    pub quotas: BTreeMap<String, u64>,
    /// Entries after the last checkpoint (not yet signed for).
    pub uncovered: u64,
    /// Anchors checked.
    pub anchors: u64,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl Report {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// An entry as the verifier accepted it, handed to the caller's visitor.
#[derive(Debug)]
pub struct VerifiedEntry<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// Its exact bytes.
    pub bytes: &'a [u8],
    /// Its leaf hash.
    pub leaf: Hash,
    /// Decoded.
    pub entry: &'a LedgerEntry,
}

/// The report and the recomputed tree (for offline proofs).
#[derive(Debug)]
pub struct Verified {
    /// What was found.
    pub report: Report,
    /// The Merkle tree of every entry checked.
    pub tree: MemoryTree,
}

/// A visitor called for each accepted entry.
pub type Visitor<'a> = &'a mut dyn FnMut(&VerifiedEntry<'_>);

/// Map key for a unique key or rot_id: the first half of its SHA-256. Two
/// different keys colliding could only make the verifier report a false
/// duplicate, never miss a real one.
fn short_hash(b: &[u8]) -> [u8; 16] {
    let h = Sha256::digest(b);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}

struct Checker<'v> {
    spki: Vec<u8>,
    origin: Option<String>,
    tree: MemoryTree,
    head: Hash,
    next: u64,
    last_time_ms: i64,
    devices: HashMap<[u8; 16], Hash>,
    keys: HashMap<[u8; 16], u64>,
    quotas: HashMap<String, u64>,
    checkpoints: u64,
    anchors: u64,
    latest: Option<SignedCheckpoint>,
    visit: Visitor<'v>,
}

type Check = std::result::Result<(), Problem>;

impl<'v> Checker<'v> {
    fn new(spki: Vec<u8>, origin: Option<String>, visit: Visitor<'v>) -> Self {
        Self {
            spki,
            origin,
            tree: MemoryTree::new(),
            head: GENESIS_HEAD,
            next: 0,
            last_time_ms: i64::MIN,
            devices: HashMap::new(),
            keys: HashMap::new(),
            quotas: HashMap::new(),
            checkpoints: 0,
            anchors: 0,
            latest: None,
            visit,
        }
    }

    fn entry(&mut self, location: &str, rec: EntryRecord) -> Check {
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
        let device = (!e.rot_id.is_empty()).then(|| short_hash(e.rot_id.as_bytes()));
        let expected_prev = device
            .and_then(|d| self.devices.get(&d))
            .map(|h| h.to_vec())
            .unwrap_or_default();
        if e.device_prev != expected_prev {
            return Err(bad(
                "device_prev does not match the device's previous entry".into(),
            ));
        }
        let constraints = Constraints::of_entry(&e);
        let mut new_keys = Vec::with_capacity(constraints.unique_keys.len());
        for k in &constraints.unique_keys {
            let h = short_hash(&k.encoded());
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
            self.devices.insert(d, leaf);
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
        Ok(())
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
        let root = merkle::root(&self.tree, cp.size).map_err(|e| e.to_string())?;
        if root != cp.root {
            return Err(format!(
                "the root hash of the first {} entries is not the one the checkpoint signs: an entry \
                 was changed, removed or reordered",
                cp.size
            ));
        }
        Ok(())
    }

    fn checkpoint(&mut self, location: &str, rec: format::CheckpointRecord) -> Check {
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
        self.checkpoints += 1;
        self.latest = Some(cp);
        Ok(())
    }

    fn anchor(&mut self, label: &str, note: &str) -> Check {
        let bad = |what: String| Problem {
            seq: None,
            location: label.to_string(),
            what,
        };
        let cp = self.open_note(note).map_err(bad)?;
        self.root_matches(&cp).map_err(bad)?;
        self.anchors += 1;
        Ok(())
    }

    fn finish(self, problem: Option<Problem>) -> Verified {
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
                anchors: self.anchors,
                problem,
            },
            tree: self.tree,
        }
    }
}

fn key_from_dir(storage: &dyn Storage, opts: &Options) -> Result<Vec<u8>> {
    if let Some(k) = &opts.key {
        return Ok(k.clone());
    }
    let pem = storage
        .read_all(PUBLIC_KEY_FILE)
        .map_err(|e| Error::io(format!("reading {PUBLIC_KEY_FILE}"), e))?
        .ok_or_else(|| {
            Error::NotFound(format!("{PUBLIC_KEY_FILE}: give the ledger key explicitly"))
        })?;
    checkpoint::spki_from_pem(&String::from_utf8_lossy(&pem))
}

/// Verifies a ledger directory (its segment files and `checkpoint.latest`).
///
/// # Errors
/// Only when it cannot be read or no key is available; problems in the data
/// are in [`Report::problem`].
pub fn verify_dir(storage: &dyn Storage, opts: &Options, visit: Visitor<'_>) -> Result<Verified> {
    let spki = key_from_dir(storage, opts)?;
    let mut c = Checker::new(spki, opts.origin.clone(), visit);
    let problem = walk_dir(storage, opts, &mut c)?.err();
    Ok(c.finish(problem))
}

fn walk_dir(storage: &dyn Storage, opts: &Options, c: &mut Checker<'_>) -> Result<Check> {
    let segs = segments::list(storage)?;
    if segs.is_empty() {
        return Ok(Err(Problem {
            seq: None,
            location: "ledger directory".into(),
            what: "no segment files".into(),
        }));
    }
    for (i, &id) in segs.iter().enumerate() {
        let name = segments::segment_name(id);
        let Some(bytes) = storage
            .read_all(&name)
            .map_err(|e| Error::io(format!("reading {name}"), e))?
        else {
            continue;
        };
        if let Err(e) = segments::check_header(&name, id, &bytes) {
            return Ok(Err(Problem {
                seq: None,
                location: name,
                what: e.to_string(),
            }));
        }
        if id != c.next {
            return Ok(Err(Problem {
                seq: Some(c.next),
                location: name,
                what: format!("the segment starts at entry {id}: entries are missing or repeated"),
            }));
        }
        let mut found: Option<Problem> = None;
        let walked = segments::walk(&bytes, HEADER_LEN, |offset, rec| {
            if found.is_some() {
                return Ok(());
            }
            let location = format!("{name} offset {offset}");
            let result = match rec.parse() {
                Err(what) => Err(Problem {
                    seq: Some(c.next),
                    location: location.clone(),
                    what,
                }),
                Ok(Record::Entry(e)) => c.entry(&location, e),
                Ok(Record::Checkpoint(cp)) => c.checkpoint(&location, cp),
                Ok(_) => Err(Problem {
                    seq: None,
                    location: location.clone(),
                    what: "an export record inside a segment".into(),
                }),
            };
            found = result.err();
            Ok(())
        })?;
        if let Some(p) = found {
            return Ok(Err(p));
        }
        if let End::Bad(bad) = walked {
            let what = if i + 1 == segs.len() && bad.is_torn_tail() {
                format!(
                    "{}: the last record is incomplete or damaged (a torn write is cut when the \
                     ledger next opens; otherwise the entry was truncated)",
                    bad.reason
                )
            } else if i + 1 == segs.len() {
                bad.describe()
            } else {
                format!("{}: a damaged record inside a closed segment", bad.describe())
            };
            return Ok(Err(Problem {
                seq: Some(c.next),
                location: format!("{name} offset {}", bad.offset),
                what,
            }));
        }
    }
    if let Some(note) = storage
        .read_all(LATEST_CHECKPOINT_FILE)
        .map_err(|e| Error::io(format!("reading {LATEST_CHECKPOINT_FILE}"), e))?
    {
        let note = String::from_utf8_lossy(&note).into_owned();
        if let Err(p) = c.anchor(LATEST_CHECKPOINT_FILE, &note) {
            return Ok(Err(p));
        }
    }
    for (i, note) in opts.anchors.iter().enumerate() {
        if let Err(p) = c.anchor(&format!("anchor checkpoint #{}", i + 1), note) {
            return Ok(Err(p));
        }
    }
    Ok(Ok(()))
}

/// Verifies an export file. The key must be given ([`Options::key`]); the
/// key inside the export is only compared with it.
///
/// # Errors
/// Only when the file cannot be read or no key is given; problems in the
/// data are in [`Report::problem`].
pub fn verify_export(path: &Path, opts: &Options, visit: Visitor<'_>) -> Result<Verified> {
    let spki = opts.key.clone().ok_or_else(|| {
        Error::InvalidArgument("verifying an export needs the ledger's public key".into())
    })?;
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut c = Checker::new(spki, opts.origin.clone(), visit);
    let problem = walk_export(&mut r, path, opts, &mut c)?.err();
    Ok(c.finish(problem))
}

/// Reads up to `buf.len()` bytes; returns how many (fewer only at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn walk_export(
    r: &mut impl Read,
    path: &Path,
    opts: &Options,
    c: &mut Checker<'_>,
) -> Result<Check> {
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let name = path.display().to_string();
    let at = |offset: u64| format!("{name} offset {offset}");
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(r, &mut header).map_err(io)?;
    if let Err(what) = format::parse_header(&header[..n], EXPORT_MAGIC) {
        return Ok(Err(Problem {
            seq: None,
            location: at(0),
            what,
        }));
    }
    let mut offset = HEADER_LEN as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut first = true;
    let mut trailer = None;
    loop {
        buf.resize(RECORD_HEADER_LEN, 0);
        let n = read_full(r, &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let mut total = n;
        if n == RECORD_HEADER_LEN {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len <= format::MAX_BODY_LEN {
                buf.resize(RECORD_HEADER_LEN + len, 0);
                total += read_full(r, &mut buf[RECORD_HEADER_LEN..]).map_err(io)?;
            }
        }
        let rec = match UnverifiedRecord::new(&buf[..total]).check() {
            Ok(rec) => rec,
            Err(e) => {
                return Ok(Err(Problem {
                    seq: Some(c.next),
                    location: at(offset),
                    what: e.to_string(),
                }))
            }
        };
        if trailer.is_some() {
            return Ok(Err(Problem {
                seq: None,
                location: at(offset),
                what: "records after the trailer".into(),
            }));
        }
        let location = at(offset);
        let parsed = match rec.parse() {
            Ok(p) => p,
            Err(what) => {
                return Ok(Err(Problem {
                    seq: Some(c.next),
                    location,
                    what,
                }))
            }
        };
        let result = match parsed {
            Record::Key(k) if first => {
                if k.spki != c.spki {
                    Err(Problem {
                        seq: None,
                        location,
                        what: "the export was made for another ledger key than the one given"
                            .into(),
                    })
                } else {
                    if c.origin.is_none() {
                        c.origin = Some(k.origin);
                    }
                    Ok(())
                }
            }
            _ if first => Err(Problem {
                seq: None,
                location,
                what: "the export does not start with its key record".into(),
            }),
            Record::Entry(e) => c.entry(&location, e),
            Record::Checkpoint(cp) => c.checkpoint(&location, cp),
            Record::Trailer(t) => {
                trailer = Some(t);
                Ok(())
            }
            Record::Key(_) => Err(Problem {
                seq: None,
                location,
                what: "a second key record".into(),
            }),
        };
        if let Err(p) = result {
            return Ok(Err(p));
        }
        first = false;
        offset += total as u64;
    }
    let Some(t) = trailer else {
        return Ok(Err(Problem {
            seq: None,
            location: at(offset),
            what: "the export has no trailer: it was truncated".into(),
        }));
    };
    if t.entries != c.next || t.checkpoints != c.checkpoints || t.head != c.head {
        return Ok(Err(Problem {
            seq: None,
            location: "export trailer".into(),
            what: format!(
                "the trailer records {} entries and {} checkpoints, the export holds {} and {} (or \
                 a different chain head)",
                t.entries, t.checkpoints, c.next, c.checkpoints
            ),
        }));
    }
    for (i, note) in opts.anchors.iter().enumerate() {
        if let Err(p) = c.anchor(&format!("anchor checkpoint #{}", i + 1), note) {
            return Ok(Err(p));
        }
    }
    Ok(Ok(()))
}
