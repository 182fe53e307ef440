//! The ledger's file I/O behind one small trait.
//!
//! [`FileStorage`] is the real thing: a directory, `write` and
//! `File::sync_data` (`fdatasync`). [`SimStorage`] keeps two images of every
//! file — what a reader sees now ("live") and what would survive a power cut
//! ("durable") — and can be told to crash at its Nth sync, so tests can
//! check what a crash at every point leaves behind.
//!
//! Only segment files, the latest-checkpoint file and the public key go
//! through this trait; the index is derived data and lives beside it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Flat-namespace file storage for one ledger directory.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Names of the files present.
    ///
    /// # Errors
    /// I/O errors.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates an empty file; fails if it exists.
    ///
    /// # Errors
    /// I/O errors, `AlreadyExists`.
    fn create(&self, name: &str) -> io::Result<()>;
    /// Appends to the end of a file.
    ///
    /// # Errors
    /// I/O errors.
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes a file's data durable (`fdatasync`).
    ///
    /// # Errors
    /// I/O errors: after one, nothing written since the last successful sync
    /// may be assumed durable.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries durable (`fsync` of the directory).
    ///
    /// # Errors
    /// I/O errors.
    fn sync_dir(&self) -> io::Result<()>;
    /// A file's length.
    ///
    /// # Errors
    /// I/O errors, `NotFound`.
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// I/O errors, `UnexpectedEof`.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// A whole file, or `None` when it does not exist.
    ///
    /// # Errors
    /// I/O errors.
    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Cuts a file to `len` bytes and makes that durable.
    ///
    /// # Errors
    /// I/O errors.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Removes a file and makes that durable.
    ///
    /// # Errors
    /// I/O errors.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Replaces a file's whole content atomically and durably (write a
    /// temporary file, sync it, rename it over, sync the directory).
    ///
    /// # Errors
    /// I/O errors; the old content stays.
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()>;
}

/// Files in a real directory.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    // Open handles, reused for appends and positional reads. A std Mutex:
    // it is held only to look a handle up, never across I/O.
    handles: Mutex<HashMap<String, Arc<File>>>,
}

impl FileStorage {
    /// Storage in `dir`, created if missing.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            handles: Mutex::new(HashMap::new()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<String, Arc<File>>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, name: &str) -> io::Result<Arc<File>> {
        if let Some(f) = self.handles().get(name) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.dir.join(name))?,
        );
        self.handles().insert(name.to_string(), f.clone());
        Ok(f)
    }
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                if let Some(n) = e.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(self.dir.join(name))?;
        self.handles().insert(name.to_string(), Arc::new(f));
        Ok(())
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let f = self.handle(name)?;
        (&*f).write_all(data)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(self.handle(name)?.metadata()?.len())
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.handle(name)?.read_exact_at(buf, offset)
    }

    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let f = self.handle(name)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.handles().remove(name);
        std::fs::remove_file(self.dir.join(name))?;
        self.sync_dir()
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(name))?;
        self.handles().remove(name);
        self.sync_dir()
    }
}

/// What a simulated crash leaves of the bytes written after the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Torn {
    /// Nothing: every unsynced byte is lost.
    Nothing,
    /// A prefix of the unsynced bytes, of a length picked by the seed.
    Prefix(u64),
    /// Some unsynced bytes, then garbage, lengths picked by the seed.
    Garbage(u64),
}

#[derive(Debug, Default, Clone)]
struct SimState {
    live: BTreeMap<String, Vec<u8>>,
    durable: BTreeMap<String, Vec<u8>>,
    // Names whose directory entry is durable.
    durable_names: BTreeSet<String>,
    syncs: u64,
    crash_at: Option<u64>,
    crashed: bool,
}

/// An in-memory storage that simulates power cuts: a "live" image (what
/// reads see) and a "durable" image (what survives). With
/// [`SimStorage::crash_at_sync`] the Nth sync fails and so does every call
/// after it, as if the machine had stopped; [`SimStorage::after_crash`] then
/// gives the storage a restarted machine would find.
#[derive(Debug, Default)]
pub struct SimStorage {
    state: Mutex<SimState>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash: the machine is down")
}

fn missing(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

/// splitmix64, for picking torn lengths from a seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SimStorage {
    /// A storage that never crashes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage whose `n`th sync (1-based; `sync`, `sync_dir`, `truncate`,
    /// `remove` and `replace` each count as one) fails without taking
    /// effect, and every call after it fails too.
    pub fn crash_at_sync(n: u64) -> Self {
        let s = Self::default();
        s.lock().crash_at = Some(n);
        s
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Whether the simulated machine has crashed.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The storage a restarted machine finds: the durable image, plus, per
    /// `torn`, part of what had been written but not synced.
    pub fn after_crash(&self, torn: Torn) -> SimStorage {
        let st = self.lock();
        let mut next = SimState::default();
        for name in &st.durable_names {
            let durable = st.durable.get(name).cloned().unwrap_or_default();
            let live = st.live.get(name).cloned().unwrap_or_default();
            let mut bytes = durable.clone();
            let unsynced = if live.starts_with(&durable) {
                &live[durable.len()..]
            } else {
                &[][..]
            };
            let seed = mix(name.len() as u64 ^ st.syncs);
            match torn {
                Torn::Nothing => {}
                Torn::Prefix(s) if !unsynced.is_empty() => {
                    let n = (mix(s ^ seed) % (unsynced.len() as u64 + 1)) as usize;
                    bytes.extend_from_slice(&unsynced[..n]);
                }
                Torn::Garbage(s) if !unsynced.is_empty() => {
                    let r = mix(s ^ seed);
                    let n = (r % (unsynced.len() as u64 + 1)) as usize;
                    bytes.extend_from_slice(&unsynced[..n]);
                    let junk = 1 + (r >> 32) % 64;
                    bytes.extend((0..junk).map(|i| mix(r ^ i) as u8));
                }
                Torn::Prefix(_) | Torn::Garbage(_) => {}
            }
            next.live.insert(name.clone(), bytes.clone());
            next.durable.insert(name.clone(), bytes);
            next.durable_names.insert(name.clone());
        }
        SimStorage {
            state: Mutex::new(next),
        }
    }

    /// A file's live bytes (for tests that tamper with them).
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().live.get(name).cloned()
    }

    /// Overwrites a file in both images (for tests that tamper with it).
    pub fn set_file(&self, name: &str, bytes: Vec<u8>) {
        let mut st = self.lock();
        st.live.insert(name.to_string(), bytes.clone());
        st.durable.insert(name.to_string(), bytes);
        st.durable_names.insert(name.to_string());
    }

    /// Counts a sync; `Err` if this one is the crash or the machine is down.
    fn count_sync(st: &mut SimState) -> io::Result<()> {
        if st.crashed {
            return Err(crashed());
        }
        st.syncs += 1;
        if st.crash_at == Some(st.syncs) {
            st.crashed = true;
            return Err(crashed());
        }
        Ok(())
    }

    fn up(st: &SimState) -> io::Result<()> {
        if st.crashed {
            Err(crashed())
        } else {
            Ok(())
        }
    }
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let st = self.lock();
        Self::up(&st)?;
        Ok(st.live.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let mut st = self.lock();
        Self::up(&st)?;
        if st.live.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_string(),
            ));
        }
        st.live.insert(name.to_string(), Vec::new());
        Ok(())
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        Self::up(&st)?;
        st.live
            .get_mut(name)
            .ok_or_else(|| missing(name))?
            .extend_from_slice(data);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut st = self.lock();
        Self::count_sync(&mut st)?;
        let live = st.live.get(name).cloned().ok_or_else(|| missing(name))?;
        st.durable.insert(name.to_string(), live);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.lock();
        Self::count_sync(&mut st)?;
        st.durable_names = st.live.keys().cloned().collect();
        Ok(())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let st = self.lock();
        Self::up(&st)?;
        Ok(st.live.get(name).ok_or_else(|| missing(name))?.len() as u64)
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.lock();
        Self::up(&st)?;
        let f = st.live.get(name).ok_or_else(|| missing(name))?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = f
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let st = self.lock();
        Self::up(&st)?;
        Ok(st.live.get(name).cloned())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        Self::count_sync(&mut st)?;
        let f = st.live.get_mut(name).ok_or_else(|| missing(name))?;
        f.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        let f = f.clone();
        st.durable.insert(name.to_string(), f);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.lock();
        Self::count_sync(&mut st)?;
        st.live.remove(name).ok_or_else(|| missing(name))?;
        st.durable.remove(name);
        st.durable_names.remove(name);
        Ok(())
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        Self::count_sync(&mut st)?;
        st.live.insert(name.to_string(), data.to_vec());
        st.durable.insert(name.to_string(), data.to_vec());
        st.durable_names.insert(name.to_string());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    #[test]
    fn sim_keeps_only_synced_bytes_and_synced_names() {
        let s = SimStorage::new();
        s.create("a").unwrap();
        s.sync_dir().unwrap();
        s.append("a", b"durable").unwrap();
        s.sync("a").unwrap();
        s.append("a", b"-lost").unwrap();
        s.create("b").unwrap();
        s.append("b", b"never named").unwrap();
        s.sync("b").unwrap();
        let after = s.after_crash(Torn::Nothing);
        assert_eq!(after.read_all("a").unwrap().unwrap(), b"durable");
        assert_eq!(
            after.read_all("b").unwrap(),
            None,
            "b's name was never synced"
        );
        let torn = s.after_crash(Torn::Garbage(3));
        assert!(torn.read_all("a").unwrap().unwrap().starts_with(b"durable"));
    }

    #[test]
    fn sim_crash_fails_that_sync_and_everything_after() {
        let s = SimStorage::crash_at_sync(2);
        s.create("a").unwrap();
        s.append("a", b"x").unwrap();
        s.sync("a").unwrap();
        s.append("a", b"y").unwrap();
        assert!(s.sync("a").is_err());
        assert!(s.has_crashed());
        assert!(s.append("a", b"z").is_err());
        assert!(s.read_all("a").is_err());
        assert_eq!(s.after_crash(Torn::Nothing).read_all("a").unwrap(), None);
    }

    #[test]
    fn file_storage_appends_reads_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        s.create("seg").unwrap();
        s.append("seg", b"hello ").unwrap();
        s.append("seg", b"world").unwrap();
        s.sync("seg").unwrap();
        s.sync_dir().unwrap();
        let mut buf = [0u8; 5];
        s.read_at("seg", 6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(s.len("seg").unwrap(), 11);
        s.truncate("seg", 5).unwrap();
        assert_eq!(s.read_all("seg").unwrap().unwrap(), b"hello");
        s.replace("latest", b"one").unwrap();
        s.replace("latest", b"two").unwrap();
        assert_eq!(s.read_all("latest").unwrap().unwrap(), b"two");
        assert_eq!(
            s.list().unwrap(),
            vec!["latest".to_string(), "seg".to_string()]
        );
        s.remove("seg").unwrap();
        assert_eq!(s.read_all("seg").unwrap(), None);
    }
}
