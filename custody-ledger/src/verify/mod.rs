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
//! - an export ends with a trailer whose counts and chain head match;
//! - signed coverage (fails closed, issue 12 item 12): a ledger with no
//!   signed checkpoint, or with entries after its latest checkpoint, is a
//!   problem — nothing signed vouches for those entries, and anyone holding
//!   the key file could have fabricated them — unless the caller allows an
//!   unsigned tail ([`Options::allow_unsigned_tail`]); the report then says
//!   how many entries are uncovered ([`Report::uncovered`]).
//!
//! The first problem stops the pass and is reported with the entry and the
//! place it was found.
//!
//! Memory stays flat in the tree: the pass keeps the frontier of the tree
//! (O(log n) hashes) and the leaves since the latest checkpoint's size, and
//! checks anchors as the pass reaches their size. The whole tree, which
//! offline proofs need, is kept only on request ([`Options::keep_tree`]).
//! What grows with the ledger is inherent to the checks: one small map slot
//! per unique key and per device.
//!
//! Modules: `checker` (per-record checks and state), `tree` (the streaming
//! tree), `files` (reading a data directory or an export).

mod checker;
mod files;
mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use trustline_proto::v1::LedgerEntry;

use crate::checkpoint::SignedCheckpoint;
use crate::error::{Error, Result};
use crate::merkle::{Hash, MemoryTree};
use crate::storage::Storage;

use checker::Checker;

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
    /// Accept entries that no signed checkpoint covers (a live ledger's
    /// last moments, a ledger that never published one) instead of failing;
    /// the report still counts them ([`Report::uncovered`]). Off by
    /// default: the verifier fails closed (issue 12, item 12).
    pub allow_unsigned_tail: bool,
    /// Keep the whole recomputed tree in [`Verified::tree`] for offline
    /// proofs (64 bytes per entry). Off by default: the pass then keeps
    /// O(log n) of the tree and [`Verified::tree`] is empty.
    pub keep_tree: bool,
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
    /// The Merkle tree of every entry checked when [`Options::keep_tree`]
    /// asked for it; empty otherwise.
    pub tree: MemoryTree,
}

/// A visitor called for each accepted entry.
pub type Visitor<'a> = &'a mut dyn FnMut(&VerifiedEntry<'_>);

/// Verifies a ledger directory (its segment files and `checkpoint.latest`).
///
/// # Errors
/// Only when it cannot be read or no key is available; problems in the data
/// are in [`Report::problem`].
pub fn verify_dir(storage: &dyn Storage, opts: &Options, visit: Visitor<'_>) -> Result<Verified> {
    let spki = files::key_from_dir(storage, opts)?;
    let mut c = Checker::new(spki, opts, visit);
    let problem = files::walk_dir(storage, opts, &mut c)?.err();
    Ok(c.finish(problem, opts))
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
    let mut c = Checker::new(spki, opts, visit);
    let problem = files::walk_export(path, opts, &mut c)?.err();
    Ok(c.finish(problem, opts))
}

/// The verifier fed record by record, for engines whose records do not
/// live in files (a database engine, issue 14): the same checks as
/// [`verify_dir`] in the same order. The caller gives the engine's latest
/// checkpoint note as an anchor ([`RecordVerifier::anchor`]) before the
/// records, then every entry and checkpoint record in the order they were
/// written, then calls [`RecordVerifier::finish`]. After the first problem
/// the rest is ignored.
pub struct RecordVerifier<'v> {
    checker: Checker<'v>,
    opts: Options,
    problem: Option<Problem>,
}

impl fmt::Debug for RecordVerifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordVerifier")
            .field("next", &self.checker.next)
            .field("problem", &self.problem)
            .finish()
    }
}

impl<'v> RecordVerifier<'v> {
    /// A verifier with the ledger key `spki`; the anchors of `opts` are
    /// registered at once.
    pub fn new(spki: Vec<u8>, opts: &Options, visit: Visitor<'v>) -> Self {
        let mut checker = Checker::new(spki, opts, visit);
        let problem = files::add_anchors(opts, &mut checker).err();
        Self {
            checker,
            opts: opts.clone(),
            problem,
        }
    }

    /// Whether a problem has been found (the rest is then ignored).
    pub fn failed(&self) -> bool {
        self.problem.is_some()
    }

    /// The sequence number the next entry must have.
    pub fn next_seq(&self) -> u64 {
        self.checker.next
    }

    /// A checkpoint note the records must cover with the same root.
    pub fn anchor(&mut self, label: &str, note: &str) {
        if self.problem.is_none() {
            self.problem = self.checker.anchor(label, note).err();
        }
    }

    /// The next record, found at `location` (named in a problem).
    pub fn record(&mut self, location: &str, record: crate::format::Record) {
        if self.problem.is_some() {
            return;
        }
        let result = match record {
            crate::format::Record::Entry(e) => self.checker.entry(location, e),
            crate::format::Record::Checkpoint(c) => self.checker.checkpoint(location, c),
            _ => Err(Problem {
                seq: None,
                location: location.to_string(),
                what: "only entry and checkpoint records belong to a ledger".into(),
            }),
        };
        self.problem = result.err();
    }

    /// A problem the caller found itself (e.g. in an engine's derived
    /// data), unless one was found before.
    pub fn problem(&mut self, problem: Problem) {
        self.problem.get_or_insert(problem);
    }

    /// The report, after the end-of-ledger checks.
    pub fn finish(mut self) -> Verified {
        if self.problem.is_none() {
            self.problem = self.checker.end_of_entries().err();
        }
        self.checker.finish(self.problem, &self.opts)
    }
}
