//! Where an audit reads the ledger from: a data directory, an export file,
//! or a running ledger service (as the `auditor` role over mutual TLS).
//!
//! Every read goes through the ledger crate's offline verifier
//! (`custody_ledger::verify`), whose visitor hands over each entry only
//! after it has checked it, so the audit never looks at an entry the
//! verifier has not accepted. A running service is first copied into a
//! local export of its latest signed checkpoint — entries `[0, size)`, the
//! signed note, the key and a trailer — and that file is verified and
//! audited like any export: the audit covers exactly what the ledger has
//! signed, and the snapshot can be kept as the evidence it was run on.

use std::io::Write;
use std::path::{Path, PathBuf};

use custody_ledger::format;
use custody_ledger::merkle::{chain_head, leaf_hash, GENESIS_HEAD};
use custody_ledger::verify::{self, Verified, VerifiedEntry};
use trustline_proto::v1;
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;

use crate::error::{Error, Result};

/// A ledger to audit.
#[derive(Debug, Clone)]
pub enum LedgerSource {
    /// A data directory (`<data>/ledger`) or a ledger directory itself.
    DataDir(PathBuf),
    /// An export file (`trustline ledger export`).
    Export(PathBuf),
}

impl LedgerSource {
    /// For people: what is being audited.
    pub fn describe(&self) -> String {
        match self {
            LedgerSource::DataDir(p) => format!("data directory {}", p.display()),
            LedgerSource::Export(p) => format!("export {}", p.display()),
        }
    }

    /// The ledger directory of a data directory: `<dir>/ledger` when it
    /// exists, else `dir` itself.
    pub fn ledger_dir(dir: &Path) -> PathBuf {
        let inner = dir.join(backends::layout::LEDGER_DIR);
        if inner.is_dir() {
            inner
        } else {
            dir.to_path_buf()
        }
    }

    /// How many entries the latest checkpoint covers, when that is cheap to
    /// learn (for the progress bar only: nothing here is trusted).
    pub fn size_hint(&self) -> Option<u64> {
        match self {
            LedgerSource::DataDir(dir) => {
                let note = std::fs::read_to_string(
                    Self::ledger_dir(dir).join(custody_ledger::LATEST_CHECKPOINT_FILE),
                )
                .ok()?;
                note.lines().nth(1)?.trim().parse().ok()
            }
            LedgerSource::Export(_) => None,
        }
    }

    /// Runs the ledger crate's verifier over the source, calling `visit`
    /// for every entry it accepts, in order.
    ///
    /// # Errors
    /// [`Error::Config`] when the source cannot be read or no ledger key is
    /// known; problems in the data are in the returned report.
    pub fn verify(
        &self,
        options: &verify::Options,
        visit: &mut dyn FnMut(&VerifiedEntry<'_>),
    ) -> Result<Verified> {
        match self {
            LedgerSource::DataDir(dir) => {
                let ledger_dir = Self::ledger_dir(dir);
                if !ledger_dir.is_dir() {
                    return Err(Error::Config(format!(
                        "{} is not a directory",
                        dir.display()
                    )));
                }
                let storage = custody_ledger::storage::FileStorage::open(&ledger_dir)
                    .map_err(|e| Error::io(&ledger_dir, e))?;
                verify::verify_dir(&storage, options, visit)
                    .map_err(|e| Error::Config(format!("verifying {}: {e}", ledger_dir.display())))
            }
            LedgerSource::Export(path) => verify::verify_export(path, options, visit)
                .map_err(|e| Error::Config(format!("verifying {}: {e}", path.display()))),
        }
    }
}

/// What a snapshot of a running ledger holds.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The export written.
    pub path: PathBuf,
    /// Entries in it (the latest checkpoint's size).
    pub entries: u64,
    /// The ledger key the service reported (SubjectPublicKeyInfo DER).
    pub service_key: Vec<u8>,
}

/// Copies the signed prefix of a running ledger into an export file at
/// `out`: the latest checkpoint, its key, entries `[0, size)` streamed with
/// `GetEntries`, and a trailer. Nothing is checked here; the caller
/// verifies the file (with the key it trusts, not the one the service
/// reported).
///
/// # Errors
/// [`Error::Backend`] when the service refuses or fails; [`Error::Io`] for
/// a local file problem; [`Error::Config`] for a stream that ends early.
pub async fn snapshot(
    client: &mut CustodyLedgerClient<tonic::transport::Channel>,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<Snapshot> {
    let backend = |s: tonic::Status| Error::Backend {
        service: "ledger",
        status: Box::new(s),
    };
    let key = client
        .get_ledger_key(v1::GetLedgerKeyRequest {})
        .await
        .map_err(backend)?
        .into_inner();
    let checkpoint = client
        .get_checkpoint(v1::GetCheckpointRequest {})
        .await
        .map_err(backend)?
        .into_inner();
    let root: [u8; 32] = checkpoint.root_hash.as_slice().try_into().map_err(|_| {
        Error::Config("the service sent a checkpoint root that is not 32 bytes".into())
    })?;
    let file_err = |e: std::io::Error| Error::io(out, e);
    let file = std::fs::File::create(out).map_err(file_err)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut buf = format::encode_header(format::EXPORT_MAGIC, 0).to_vec();
    format::encode_key(&key.origin, &key.public_key, &mut buf);
    w.write_all(&buf).map_err(file_err)?;
    let mut head = GENESIS_HEAD;
    let mut next = 0u64;
    if checkpoint.size > 0 {
        let mut stream = client
            .get_entries(v1::GetEntriesRequest {
                start: 0,
                end: checkpoint.size,
            })
            .await
            .map_err(backend)?
            .into_inner();
        while let Some(stored) = stream.message().await.map_err(backend)? {
            if stored.seq != next {
                return Err(Error::Config(format!(
                    "the service sent entry {} where {next} was expected",
                    stored.seq
                )));
            }
            buf.clear();
            format::encode_entry(stored.seq, &stored.entry, &mut buf);
            w.write_all(&buf).map_err(file_err)?;
            head = chain_head(&head, &leaf_hash(&stored.entry));
            next += 1;
            progress(next);
            if next == checkpoint.size {
                break;
            }
        }
    }
    if next != checkpoint.size {
        return Err(Error::Config(format!(
            "the service sent {next} entries but its checkpoint covers {}",
            checkpoint.size
        )));
    }
    buf.clear();
    format::encode_checkpoint(checkpoint.size, &root, &checkpoint.note, &mut buf);
    format::encode_trailer(
        &format::Trailer {
            entries: next,
            checkpoints: 1,
            head,
        },
        &mut buf,
    );
    w.write_all(&buf).map_err(file_err)?;
    let file = w.into_inner().map_err(|e| file_err(e.into_error()))?;
    file.sync_all().map_err(file_err)?;
    Ok(Snapshot {
        path: out.to_path_buf(),
        entries: next,
        service_key: key.public_key,
    })
}
