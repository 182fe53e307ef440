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
    /// Where the sled index lives; `None` means `<dir>/index`.
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
    /// (an estimate of what each holds: about 0.6 KB for a `Certified`-like
    /// entry with two unique keys); the writer waits for the indexer
    /// beyond this.
    ///
    /// Trade-off: the overlay is what lets a burst be acknowledged at the
    /// speed of `fdatasync` rather than of the index. The indexer leaves it
    /// alone until it is half full (or appends pause), so a burst of about
    /// half the limit runs at full speed; at the limit appends go at the
    /// index's sustained rate. Bounded by bytes, not entries, so large
    /// entries cannot blow it up (issue 16, item 4).
    ///
    /// Measured with `trustline bench ledger` (`--overlay-mib`), 2-vCPU
    /// machine under load 6–10: with 64 MiB the 100k-append burst of 256
    /// appenders no longer fits and runs at the index's (sled's) rate —
    /// 3.4k/s against 21.8k/s before — so the default stays large enough
    /// to absorb such a burst until the index is cheaper to write; the
    /// compact entries hold about half the memory per entry they held.
    /// 192 MiB was chosen from that measurement, not measured itself.
    pub overlay_bytes: usize,
    /// Entries before the last checkpoint re-read and re-hashed on open.
    pub tail_check: u64,
    /// sled's cache size in bytes.
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
