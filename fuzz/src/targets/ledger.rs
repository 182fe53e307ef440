//! The custody ledger's readers of bytes from disk and from auditors:
//! segment files (through the offline verifier and through the ledger's own
//! recovery on open), export files, checkpoint notes and the ledger key PEM
//! (invariant 5, 2.4.14.3).
//!
//! Selector values shared by the file harnesses:
//! - [`RAW`]: the rest is the whole file;
//! - [`FRAMED`]: the rest is chunks (see [`crate::input::chunks`]), each
//!   framed as one record of kind `tag % 4 + 1` with a correct checksum,
//!   behind a correct file header;
//! - [`CHAINED`]: as [`FRAMED`], but chunks with `tag % 4` 0 or 1 are
//!   `LedgerEntry` messages whose `seq`, `prev_hash`, `device_prev` and
//!   time are fixed up to continue the chain, and `tag % 4 == 2` asks for a
//!   checkpoint of the tree so far, signed by the ledger key; `3` is a raw
//!   record of the kind named by its first byte. The fuzzer thus reaches
//!   the unique-key, quota, tree and signature checks behind the chain.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use custody_ledger::checkpoint::{self, LedgerKey};
use custody_ledger::format::{self, EXPORT_MAGIC, SEGMENT_MAGIC};
use custody_ledger::merkle::{chain_head, leaf_hash, Hash, MemoryTree, GENESIS_HEAD};
use custody_ledger::storage::SimStorage;
use custody_ledger::verify::{self, Options};
use custody_ledger::{Ledger, LedgerConfig, LATEST_CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use prost::Message;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;

use crate::fixtures::{key, spki, KeyName, ORIGIN};
use crate::input::{chunks, selector, Chunk};
use crate::Outcome;

/// Selector: the whole file.
pub const RAW: u8 = 0;
/// Selector: records framed with correct checksums.
pub const FRAMED: u8 = 1;
/// Selector: entries chained and checkpoints signed.
pub const CHAINED: u8 = 2;

/// The name of the first segment file.
pub const FIRST_SEGMENT: &str = "00000000000000000000.seg";

/// Records built from chunks, and what they hold.
#[derive(Debug, Default)]
pub struct Built {
    /// The framed records.
    pub records: Vec<u8>,
    /// Entry records.
    pub entries: u64,
    /// Checkpoint records.
    pub checkpoints: u64,
    /// The chain head after the last entry.
    pub head: Hash,
    /// The last checkpoint note signed here.
    pub latest: Option<String>,
    /// Whether every record came from a fixed-up entry of a known kind or a
    /// signed checkpoint (no raw record).
    pub clean: bool,
}

/// One record with a correct checksum, as the ledger frames it.
pub fn frame(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(body);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + format::RECORD_LEN..start + format::RECORD_CRC]);
    crc.update(&out[start + format::RECORD_KIND..]);
    let crc = crc.finalize().to_le_bytes();
    out[start + format::RECORD_CRC..start + format::RECORD_KIND].copy_from_slice(&crc);
}

fn ledger_key() -> LedgerKey {
    LedgerKey::new(ORIGIN, spki(KeyName::Ledger)).expect("the fixed ledger key is P-256")
}

/// Frames `chunks` as records; with `chain`, fixes entries up and signs
/// checkpoints (see the module doc).
pub fn build(chunks: &[Chunk<'_>], chain: bool) -> Built {
    let mut built = Built {
        head: GENESIS_HEAD,
        clean: true,
        ..Built::default()
    };
    let mut tree = MemoryTree::new();
    let mut devices: HashMap<String, Hash> = HashMap::new();
    let mut last_time = i64::MIN;
    for c in chunks {
        if !chain {
            built.clean = false;
            frame(c.tag % 4 + 1, c.body, &mut built.records);
            continue;
        }
        match c.tag % 4 {
            0 | 1 => {
                let seq = built.entries;
                let bytes = match v1::LedgerEntry::decode(c.body) {
                    Ok(mut e) => {
                        // Known differences: recovery on open does not
                        // check event kinds, rot_id shapes or a key declared
                        // twice in one entry; the offline verifier does.
                        if !shape_ok(&e) {
                            built.clean = false;
                        }
                        e.seq = seq;
                        e.prev_hash = built.head.to_vec();
                        e.time_ms = e.time_ms.max(last_time);
                        last_time = e.time_ms;
                        e.device_prev = if e.rot_id.is_empty() {
                            Vec::new()
                        } else {
                            devices
                                .get(&e.rot_id)
                                .map(|h| h.to_vec())
                                .unwrap_or_default()
                        };
                        let bytes = e.encode_to_vec();
                        if !e.rot_id.is_empty() {
                            devices.insert(e.rot_id, leaf_hash(&bytes));
                        }
                        bytes
                    }
                    Err(_) => {
                        built.clean = false;
                        c.body.to_vec()
                    }
                };
                let leaf = leaf_hash(&bytes);
                tree.push(leaf);
                built.head = chain_head(&built.head, &leaf);
                built.entries += 1;
                let mut body = seq.to_le_bytes().to_vec();
                body.extend_from_slice(&bytes);
                frame(format::KIND_ENTRY, &body, &mut built.records);
            }
            2 => {
                let cp = checkpoint::sign(
                    key(KeyName::Ledger),
                    &ledger_key(),
                    tree.size(),
                    &tree.root(),
                )
                .expect("the fixed ledger key signs");
                let mut body = cp.size.to_le_bytes().to_vec();
                body.extend_from_slice(&cp.root);
                body.extend_from_slice(cp.note.as_bytes());
                frame(format::KIND_CHECKPOINT, &body, &mut built.records);
                built.checkpoints += 1;
                built.latest = Some(cp.note);
            }
            _ => {
                built.clean = false;
                let (kind, body) = c.body.split_first().map_or((0, &[][..]), |(k, b)| (*k, b));
                frame(kind, body, &mut built.records);
            }
        }
    }
    built
}

/// Whether an entry passes the verifier's shape checks that recovery on
/// open does not repeat (see [`ledger_open`]).
fn shape_ok(e: &v1::LedgerEntry) -> bool {
    let kind_ok = matches!(
        v1::EventKind::try_from(e.kind),
        Ok(k) if k != v1::EventKind::Unspecified
    );
    let rot_ok = e.rot_id.is_empty() || trustline_proto::identity::is_well_formed_rot_id(&e.rot_id);
    let keys_distinct = e
        .unique_keys
        .iter()
        .enumerate()
        .all(|(i, k)| !e.unique_keys[..i].contains(k));
    kind_ok && rot_ok && keys_distinct
}

/// A ledger directory in memory: one segment file, the key file, and the
/// latest checkpoint when there is one. Returns it and what was built (for
/// [`RAW`], an empty `Built`).
pub fn segment_storage(sel: u8, rest: &[u8]) -> (SimStorage, Built) {
    let storage = SimStorage::new();
    storage.set_file(PUBLIC_KEY_FILE, ledger_key().public_key_pem().into_bytes());
    let built = match sel % 3 {
        RAW => {
            storage.set_file(FIRST_SEGMENT, rest.to_vec());
            Built::default()
        }
        mode => {
            let built = build(&chunks(rest), mode == CHAINED);
            let mut file = format::encode_header(SEGMENT_MAGIC, 0).to_vec();
            file.extend_from_slice(&built.records);
            storage.set_file(FIRST_SEGMENT, file);
            if let Some(note) = &built.latest {
                storage.set_file(LATEST_CHECKPOINT_FILE, note.clone().into_bytes());
            }
            built
        }
    };
    (storage, built)
}

fn options() -> Options {
    Options {
        key: Some(spki(KeyName::Ledger).to_vec()),
        origin: None,
        anchors: Vec::new(),
        // The harnesses compare open with verify on chained files, whose
        // tail no checkpoint need cover.
        allow_unsigned_tail: true,
        keep_tree: false,
    }
}

/// The `ledger_segment` harness: a segment file through the offline
/// verifier (`trustline ledger verify`).
pub fn ledger_segment(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let (storage, built) = segment_storage(sel, rest);
    let verified = verify::verify_dir(&storage, &options(), &mut |_| {})
        .expect("with the key given, problems in the data are reported, not returned");
    let report = verified.report;
    if !report.is_ok() {
        return Outcome::Refused;
    }
    if sel % 3 == CHAINED {
        assert_eq!(report.entries, built.entries);
        assert_eq!(report.checkpoints, built.checkpoints);
        assert_eq!(report.head, built.head);
    }
    Outcome::Accepted
}

/// A fresh scratch directory for one run of a harness that needs files, in
/// memory when the machine has `/dev/shm`; removed when dropped.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trustline-fuzz-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::Builder::new().prefix("trustline-fuzz-").tempdir())
        .expect("a scratch directory")
}

/// The `ledger_open` harness: a segment file through the ledger's own
/// recovery (`Ledger::open_with_storage`: cut a torn tail, replay into a
/// fresh index, self-check), then every entry read back. A ledger that
/// opens a chained directory must also pass the offline verifier, except
/// for the entry shape checks only the verifier makes ([`shape_ok`]).
pub fn ledger_open(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let (storage, built) = segment_storage(sel, rest);
    let storage = Arc::new(storage);
    let dir = scratch();
    let mut config = LedgerConfig::new(dir.path());
    config.index_dir = Some(dir.path().join("index"));
    config.index_cache_bytes = 1 << 20;
    config.checkpoint_interval = std::time::Duration::from_secs(3600);
    let signer = Arc::new(SoftwareSigner::from_key(key(KeyName::Ledger).key().clone()));
    let opened = Ledger::open_with_storage(config, signer, storage.clone());
    let outcome = match opened {
        Ok(ledger) => {
            let size = ledger.size();
            for seq in 0..size {
                let entry = ledger
                    .get_entry(seq)
                    .expect("an entry of an open ledger reads back");
                assert!(v1::LedgerEntry::decode(entry.as_slice()).is_ok());
            }
            ledger.close();
            if sel % 3 == CHAINED && built.clean {
                let report = verify::verify_dir(storage.as_ref(), &options(), &mut |_| {})
                    .expect("with the key given, problems are reported")
                    .report;
                assert!(
                    report.is_ok(),
                    "the ledger opened a directory the verifier refuses: {:?}",
                    report.problem
                );
            }
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    };
    drop(dir);
    outcome
}

/// The `ledger_export` harness: an export file through the offline
/// verifier (`trustline ledger verify --export`). [`FRAMED`] and
/// [`CHAINED`] put a correct header and key record first; [`CHAINED`] also
/// a correct trailer last.
pub fn ledger_export(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let mut built = Built::default();
    let file = match sel % 3 {
        RAW => rest.to_vec(),
        mode => {
            built = build(&chunks(rest), mode == CHAINED);
            let mut file = format::encode_header(EXPORT_MAGIC, 0).to_vec();
            let mut key_body = u16::try_from(ORIGIN.len())
                .unwrap_or(0)
                .to_le_bytes()
                .to_vec();
            key_body.extend_from_slice(ORIGIN.as_bytes());
            key_body.extend_from_slice(spki(KeyName::Ledger));
            frame(format::KIND_KEY, &key_body, &mut file);
            file.extend_from_slice(&built.records);
            if mode == CHAINED {
                let mut trailer = built.entries.to_le_bytes().to_vec();
                trailer.extend_from_slice(&built.checkpoints.to_le_bytes());
                trailer.extend_from_slice(&built.head);
                frame(format::KIND_TRAILER, &trailer, &mut file);
            }
            file
        }
    };
    let dir = scratch();
    let path = dir.path().join("export.tlx");
    std::fs::write(&path, &file).expect("writing the scratch export");
    let verified = verify::verify_export(&path, &options(), &mut |_| {})
        .expect("a readable export with the key given is reported on, not refused");
    let report = verified.report;
    if !report.is_ok() {
        return Outcome::Refused;
    }
    if sel % 3 == CHAINED {
        assert_eq!(report.entries, built.entries);
        assert_eq!(report.head, built.head);
    }
    Outcome::Accepted
}

/// Selector values of the `checkpoint_note` harness.
pub mod note {
    /// The rest is a note, opened with no expected origin.
    pub const ANY_ORIGIN: u8 = 0;
    /// The rest is a note, opened expecting the ledger's origin.
    pub const OUR_ORIGIN: u8 = 1;
    /// The rest is a note text; the ledger key signs it and the signature
    /// line is appended.
    pub const SIGNED: u8 = 2;
    /// The rest is a PEM public key (`ledger-key.pub.pem`).
    pub const KEY_PEM: u8 = 3;
}

/// Signs a note text with the ledger key under the key name of its first
/// line, as the ledger would.
pub fn sign_note(text: &str) -> String {
    let name = text.lines().next().unwrap_or_default();
    let mut blob = checkpoint::key_id(spki(KeyName::Ledger)).to_vec();
    blob.extend_from_slice(
        &key(KeyName::Ledger)
            .sign(text.as_bytes())
            .expect("a software key signs"),
    );
    format!("{text}\n\u{2014} {name} {}\n", B64.encode(blob))
}

/// The `checkpoint_note` harness: `checkpoint::open` (what the verifier,
/// the ledger on open and auditors run on notes) and `spki_from_pem`.
pub fn checkpoint_note(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return Outcome::Refused;
    };
    if sel % 4 == note::KEY_PEM {
        let Ok(spki) = checkpoint::spki_from_pem(text) else {
            return Outcome::Refused;
        };
        let key = LedgerKey::new(ORIGIN, &spki).expect("a key from a P-256 PEM is a ledger key");
        assert_eq!(
            checkpoint::spki_from_pem(&key.public_key_pem()).ok(),
            Some(spki)
        );
        return Outcome::Accepted;
    }
    let note = match sel % 4 {
        note::SIGNED => sign_note(text),
        _ => text.to_owned(),
    };
    let expected = (sel % 4 == note::OUR_ORIGIN).then_some(ORIGIN);
    let Ok(cp) = checkpoint::open(&note, spki(KeyName::Ledger), expected) else {
        return Outcome::Refused;
    };
    let origin = note.lines().next().unwrap_or_default();
    assert_eq!(cp.note, note);
    assert!(
        note.starts_with(&checkpoint::note_text(origin, cp.size, &cp.root)),
        "the opened checkpoint is not what its text says"
    );
    if let Some(expected) = expected {
        assert_eq!(origin, expected);
    }
    Outcome::Accepted
}
