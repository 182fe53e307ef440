//! Where the uplink keeps each cosignature, next to the checkpoint it
//! cosigns, in the ledger directory (`<data>/ledger/`):
//!
//! | file | what | how it is written |
//! | --- | --- | --- |
//! | `checkpoint.cosigned` | the latest cosigned checkpoint: the C2SP note with the site's and the witness's signature lines | replaced atomically (temporary file, fsync, rename, directory fsync) |
//! | `cosigned-checkpoints.jsonl` | every cosigned checkpoint ever received, one JSON object a line: `size`, `root` (hex), `time` (the cosignature's POSIX seconds), `note` | appended and fsync'd before the two others change |
//! | `uplink-state.json` | the uplink's own state: the latest cosigned checkpoint and, per ledger quota counter, its uses within it (what the offline allowance counts from) | replaced atomically |
//!
//! A crash between the three writes leaves the history one record ahead,
//! which is harmless: `uplink-state.json` is what the uplink reloads (and
//! the hub's answer corrects any lag), `checkpoint.cosigned` is rewritten
//! from it on start. A torn last history line is skipped by readers.
//!
//! Nothing here is trusted on reload without checks: the uplink verifies
//! the note's two signatures and that its root is the root of the site's
//! own ledger at that size before it counts from it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use custody_ledger::Hash;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The latest cosigned checkpoint (both signature lines).
pub const COSIGNED_NOTE_FILE: &str = "checkpoint.cosigned";
/// Every cosigned checkpoint, JSON lines.
pub const COSIGNED_HISTORY_FILE: &str = "cosigned-checkpoints.jsonl";
/// The uplink's state.
pub const STATE_FILE: &str = "uplink-state.json";

/// A checkpoint of this site's ledger that the hub cosigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// Its tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// The note with the site's and the witness's signature lines.
    pub note: String,
    /// The cosignature's timestamp, POSIX seconds.
    pub time: u64,
    /// Per quota counter, how many entries within `[0, size)` count
    /// against it.
    pub quota_uses: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct StateRecord {
    version: u32,
    size: u64,
    root: String,
    time: u64,
    note: String,
    quota_uses: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct HistoryRecord<'a> {
    size: u64,
    root: String,
    time: u64,
    note: &'a str,
}

/// The three files in a ledger directory.
#[derive(Debug, Clone)]
pub(crate) struct CosignedStore {
    dir: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(path, e)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

impl CosignedStore {
    /// The files in the ledger directory `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The uplink's state as last saved, unchecked (`None`: none saved).
    ///
    /// # Errors
    /// [`Error::Io`] when the file exists but cannot be read or parsed.
    pub(crate) fn load(&self) -> Result<Option<Cosigned>> {
        let path = self.dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let r: StateRecord = serde_json::from_str(&text).map_err(|e| io(&path, e))?;
        let root: Hash = hex::decode(&r.root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io(&path, "root is not 32 bytes of hex"))?;
        if r.version != 1 {
            return Err(io(&path, format!("unknown version {}", r.version)));
        }
        let c = Cosigned {
            size: r.size,
            root,
            note: r.note,
            time: r.time,
            quota_uses: r.quota_uses,
        };
        // The published note follows the state.
        let note_path = self.dir.join(COSIGNED_NOTE_FILE);
        if std::fs::read_to_string(&note_path).ok().as_deref() != Some(c.note.as_str()) {
            replace(&note_path, c.note.as_bytes())?;
        }
        Ok(Some(c))
    }

    /// Keeps `c`: appended to the history, then the state and the
    /// published note replaced, each durable before the next.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn save(&self, c: &Cosigned) -> Result<()> {
        let root = hex::encode(c.root);
        let history = self.dir.join(COSIGNED_HISTORY_FILE);
        let mut line = serde_json::to_string(&HistoryRecord {
            size: c.size,
            root: root.clone(),
            time: c.time,
            note: &c.note,
        })
        .map_err(|e| io(&history, e))?;
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history)
            .map_err(|e| io(&history, e))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| io(&history, e))?;
        let state = self.dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(&StateRecord {
            version: 1,
            size: c.size,
            root,
            time: c.time,
            note: c.note.clone(),
            quota_uses: c.quota_uses.clone(),
        })
        .map_err(|e| io(&state, e))?;
        replace(&state, text.as_bytes())?;
        replace(&self.dir.join(COSIGNED_NOTE_FILE), c.note.as_bytes())
    }
}

/// Every cosigned checkpoint note in a ledger directory's history, oldest
/// first (a torn last line is skipped).
///
/// # Errors
/// [`Error::Io`] when the history exists but cannot be read, or a line
/// before the last does not parse.
pub fn history(ledger_dir: &Path) -> Result<Vec<(u64, String)>> {
    #[derive(Deserialize)]
    struct Owned {
        size: u64,
        note: String,
    }
    let path = ledger_dir.join(COSIGNED_HISTORY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&path, e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Owned>(line) {
            Ok(r) => out.push((r.size, r.note)),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => return Err(io(&path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    fn cosigned(size: u64) -> Cosigned {
        Cosigned {
            size,
            root: [size as u8; 32],
            note: format!("o\n{size}\nroot\n\n\u{2014} o sig\n\u{2014} w cosig\n"),
            time: 1_700_000_000 + size,
            quota_uses: BTreeMap::from([("order/PO-1".to_string(), size / 2)]),
        }
    }

    #[test]
    fn the_state_round_trips_and_the_history_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = CosignedStore::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        store.save(&cosigned(4)).unwrap();
        store.save(&cosigned(9)).unwrap();
        assert_eq!(store.load().unwrap(), Some(cosigned(9)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(COSIGNED_NOTE_FILE)).unwrap(),
            cosigned(9).note
        );
        let h = history(dir.path()).unwrap();
        assert_eq!(
            h.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![4, 9],
            "every cosigned checkpoint is kept"
        );
        // A torn last line (a crash mid-append) is skipped; the note file is
        // rewritten from the state on load.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(COSIGNED_HISTORY_FILE))
            .unwrap();
        f.write_all(b"{\"size\": 12, \"no").unwrap();
        std::fs::write(dir.path().join(COSIGNED_NOTE_FILE), "stale").unwrap();
        assert_eq!(history(dir.path()).unwrap().len(), 2);
        assert_eq!(store.load().unwrap(), Some(cosigned(9)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(COSIGNED_NOTE_FILE)).unwrap(),
            cosigned(9).note
        );
    }
}
