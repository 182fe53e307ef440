//! Finding and loading a PKCS#11 module, once per process.
//!
//! `C_Initialize` may be called once per process per module (a second call
//! answers `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and unloading a module
//! without `C_Finalize` would pull it from under other users in the same
//! process, so loaded modules are kept in a process-wide registry for the
//! life of the process and shared by every session pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;

use crate::Error;

/// The environment variable naming the PKCS#11 module when none is
/// configured explicitly.
pub const MODULE_ENV: &str = "TRUSTLINE_PKCS11_MODULE";

/// Where SoftHSM2's module lives on Debian, Ubuntu, Fedora and friends,
/// tried in order when no module is configured.
pub const SOFTHSM_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// Picks the module: `explicit` if given, else `$TRUSTLINE_PKCS11_MODULE`,
/// else the first of [`SOFTHSM_MODULE_PATHS`] that exists.
///
/// # Errors
/// [`Error::ModuleNotFound`] naming every path tried (and the `softhsm2`
/// package) when none exists.
pub fn resolve_module(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let from_env = std::env::var_os(MODULE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let candidates: Vec<PathBuf> = match (explicit, from_env) {
        (Some(path), _) => vec![path.to_path_buf()],
        (None, Some(path)) => vec![path],
        (None, None) => SOFTHSM_MODULE_PATHS.iter().map(PathBuf::from).collect(),
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(Error::ModuleNotFound { tried: candidates })
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Loads and initialises the module at `path`, or returns the context this
/// process already holds for it.
///
/// # Errors
/// [`Error::ModuleNotFound`] when the file does not exist,
/// [`Error::ModuleLoad`] when it is not a loadable PKCS#11 library,
/// [`Error::ModuleInit`] when `C_Initialize` fails.
pub fn load(path: &Path) -> Result<Pkcs11, Error> {
    if !path.is_file() {
        return Err(Error::ModuleNotFound {
            tried: vec![path.to_path_buf()],
        });
    }
    let key = path.canonicalize().map_err(|e| Error::ModuleLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // A poisoned registry only means another thread panicked while holding
    // it; the map itself is still consistent (inserts are atomic).
    let mut modules = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&key).map_err(|e| Error::ModuleLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Another component of this process (e.g. the SoftHSM test helper)
        // initialised the same library first: the library is shared.
        Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::ModuleInit {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
    modules.insert(key, ctx.clone());
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_explicit_module_names_the_path_and_the_package() {
        let err = resolve_module(Some(Path::new("/nonexistent/libnothing.so")))
            .expect_err("must be refused");
        let Error::ModuleNotFound { tried } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(tried, &[PathBuf::from("/nonexistent/libnothing.so")]);
        let msg = err.to_string();
        assert!(msg.contains("softhsm2"), "{msg}");
        assert!(msg.contains("/nonexistent/libnothing.so"), "{msg}");
    }

    #[test]
    fn loading_a_file_that_is_not_a_library_is_a_load_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("libfake.so");
        std::fs::write(&fake, b"not an ELF file").expect("write");
        let err = load(&fake).expect_err("must be refused");
        assert!(matches!(err, Error::ModuleLoad { .. }), "{err:?}");
    }
}
