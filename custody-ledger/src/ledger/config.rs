//! How a ledger is opened: its directory, file names and tuning.

use std::path::PathBuf;
use std::time::Duration;

/// File holding the latest signed checkpoint note: an anchor that reveals a
/// cut-off tail even when the index is gone.
pub const LATEST_CHECKPOINT_FILE: &str = "checkpoint.latest";
/// File holding the checkpoint public key (PEM), for auditors.
pub const PUBLIC_KEY_FILE: &str = "ledger-key.pub.pem";
/// The index directory's name inside the ledger directory.
pub const INDEX_DIR: &str = "index";

/// How to open a ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The ledger directory (`<data>/ledger`): segments, the latest
    /// checkpoint, the public key, and the index below it.
    pub dir: PathBuf,
    /// Where the index lives; `None` means `<dir>/index`.
    pub index_dir: Option<PathBuf>,
    /// The checkpoint origin and signed-note key name.
    pub origin: String,
    /// How often a checkpoint is published while there are new entries.
    pub checkpoint_interval: Duration,
    /// A segment is closed once it reaches this size.
    pub segment_max_bytes: u64,
    /// Most requests taken into one group commit.
    pub max_batch: usize,
    /// Most bytes of durable entries held in memory ahead of the index
    /// (an estimate of what each holds: about 0.5 KB for a
    /// `Certified`-like entry with two unique keys, map slots included);
    /// the writer waits for the indexer beyond this.
    ///
    /// Trade-off: the overlay is what lets a burst be acknowledged at the
    /// speed of `fdatasync` rather than of the index. The indexer leaves it
    /// alone until three quarters of it are used (or appends pause), so a
    /// burst of about that size runs at full speed; beyond it appends go at
    /// the index's sustained rate. Bounded by bytes, not entries, so large
    /// entries cannot blow it up, and independent of the ledger's size
    /// (issue 16, item 4).
    ///
    /// The default, 64 MiB (about 140k such entries), holds the
    /// 100k-append burst of `trustline bench ledger`'s 256 appenders; with
    /// it and the index cache the bench process peaked at about 185 MB with
    /// a one-million-entry ledger and 230 MB with five million (figures in
    /// `docs/ledger-format.md`).
    pub overlay_bytes: usize,
    /// Entries before the last checkpoint re-read and re-hashed on open.
    pub tail_check: u64,
    /// The index's (redb's) cache in bytes: nine tenths read cache, one
    /// tenth write buffer. The index's only memory besides a transaction's
    /// pages in flight.
    pub index_cache_bytes: u64,
}

/// The default checkpoint origin.
pub const DEFAULT_ORIGIN: &str = "trustline.example/custody-ledger";

impl LedgerConfig {
    /// Defaults for a ledger in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            index_dir: None,
            origin: DEFAULT_ORIGIN.to_string(),
            checkpoint_interval: Duration::from_millis(500),
            segment_max_bytes: 64 << 20,
            max_batch: 2048,
            overlay_bytes: 64 << 20,
            tail_check: 4096,
            index_cache_bytes: 32 << 20,
        }
    }

    /// The index directory.
    pub fn index_path(&self) -> PathBuf {
        self.index_dir
            .clone()
            .unwrap_or_else(|| self.dir.join(INDEX_DIR))
    }
}
