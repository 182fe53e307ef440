//! The CRL as a running server sees it: loaded at start-up, and reloaded
//! whenever the file changes — checked on every handshake and on every
//! request, with one `stat` — so a revocation takes effect on the revoked
//! caller's next call, on a connection opened before it too, without a
//! restart (issue 12.7).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls_pki_types::CertificateDer;

use super::{read_crl, Crl};
use crate::pki::register::hex_lower;
use crate::Error;

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        len: meta.len(),
    })
}

#[derive(Debug)]
struct Live {
    /// The file version last looked at (loaded or refused).
    seen: Option<Stamp>,
    crl: Arc<Crl>,
}

/// The service CA's CRL for a server, kept current.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    ca: CertificateDer<'static>,
    live: RwLock<Live>,
    reload: Mutex<()>,
}

/// Whether `new` may replace `current`: a higher number listing every
/// serial `current` lists (or the very same CRL).
pub(super) fn check_successor(current: &Crl, new: &Crl) -> Result<(), String> {
    if new.der == current.der {
        return Ok(());
    }
    if new.number <= current.number {
        return Err(format!(
            "CRL number {} is not above the installed {}",
            new.number, current.number
        ));
    }
    if let Some(dropped) = current
        .revoked
        .iter()
        .find(|r| !new.revoked.iter().any(|n| n.serial == r.serial))
    {
        return Err(format!(
            "CRL {} no longer lists serial {} that CRL {} revoked",
            new.number, dropped.serial, current.number
        ));
    }
    Ok(())
}

impl Revocations {
    /// Loads the CRL at `path`, which the service CA `ca` must have signed.
    ///
    /// # Errors
    /// [`Error::Io`] when it is missing (a server does not start without
    /// one: `trustline pki init` writes an empty CRL), [`Error::Credential`]
    /// when it does not verify.
    pub fn open(path: &Path, ca: &CertificateDer<'_>) -> Result<Arc<Self>, Error> {
        let seen = stamp(path);
        let crl = read_crl(path, ca)?;
        if crl.is_stale(time::OffsetDateTime::now_utc()) {
            tracing::warn!(path = %path.display(), number = crl.number, "the CRL is past its nextUpdate; it still counts — run `trustline pki crl` to refresh it");
        }
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            ca: ca.clone().into_owned(),
            live: RwLock::new(Live {
                seen,
                crl: Arc::new(crl),
            }),
            reload: Mutex::new(()),
        }))
    }

    /// The CRL in force now (after picking up a changed file).
    pub fn current(&self) -> Arc<Crl> {
        self.refresh();
        self.read_live().crl.clone()
    }

    /// Refuses a revoked serial (big-endian bytes), with the reason for the
    /// log and the caller.
    ///
    /// # Errors
    /// A message naming the serial and the CRL number.
    pub fn check(&self, serial: &[u8]) -> Result<(), String> {
        let crl = self.current();
        if crl.is_revoked(serial) {
            return Err(format!(
                "the client certificate (serial {}) is revoked (CRL {})",
                hex_lower(super::strip_zeros(serial)),
                crl.number
            ));
        }
        Ok(())
    }

    fn read_live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        // Replaced whole under the write lock; a panic cannot leave it torn.
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reloads the file if it changed since it was last looked at. A file
    /// that vanished, does not verify, or would go back (a lower number, a
    /// dropped serial) is refused and the CRL in force kept (fail closed).
    fn refresh(&self) {
        let now = stamp(&self.path);
        if self.read_live().seen == now {
            return;
        }
        let _one = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        let current = {
            let live = self.read_live();
            if live.seen == now {
                return;
            }
            live.crl.clone()
        };
        let next = match now {
            None => {
                tracing::error!(path = %self.path.display(), number = current.number, "the CRL file is gone; keeping the CRL in force");
                None
            }
            Some(_) => match read_crl(&self.path, &self.ca) {
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, number = current.number, "a changed CRL was refused; keeping the CRL in force");
                    None
                }
                Ok(new) => match check_successor(&current, &new) {
                    Err(reason) => {
                        tracing::error!(path = %self.path.display(), %reason, "a changed CRL was refused; keeping the CRL in force");
                        None
                    }
                    Ok(()) => {
                        tracing::info!(path = %self.path.display(), number = new.number, revoked = new.revoked.len(), "CRL reloaded");
                        Some(Arc::new(new))
                    }
                },
            },
        };
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.seen = now;
        if let Some(crl) = next {
            live.crl = crl;
        }
    }
}
