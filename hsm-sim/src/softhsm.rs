//! SoftHSM2 token lifecycle for the demo, the embedded `serve all` default
//! and tests: a token directory of its own (its own `softhsm2.conf` and
//! `tokens/`), tokens initialised and PINs set over PKCS#11 — no
//! `softhsm2-util`.
//!
//! SoftHSM2 facts that shape this module (DESIGN.md):
//! - it reads `SOFTHSM2_CONF` once per process, at `C_Initialize`, so a
//!   process can use one token directory only. [`SoftHsm::open`] sets the
//!   variable before initialising and refuses a second, different
//!   directory in the same process. Tests that run as threads of one process
//!   share [`shared_test_dir`] and each make their own token with
//!   [`test_token`];
//! - slot ids change when a token is initialised, so tokens are always found
//!   by label;
//! - `C_InitToken` takes the one free slot, so token creation is serialised
//!   within the process;
//! - `directories.tokendir` must be an absolute path (SoftHSM2 would take a
//!   relative one from the process's working directory), so the
//!   `softhsm2.conf` of a token directory is rewritten on every open to name
//!   the directory where it is now: a copied or moved demo directory opens
//!   its own tokens, never the original's (issue 12, "smaller").
//!
//! An embedded data directory holds two tokens in its `hsm/`: the CA's
//! ([`embedded_token`]) and the ledger's ([`embedded_ledger_token`], the
//! checkpoint key alone, issue 12.6), each with its own PIN file.
//!
//! The module is found on the usual Debian, Ubuntu and Fedora paths, or
//! from an explicit path or `$TRUSTLINE_PKCS11_MODULE`; when it is missing
//! the error names the `softhsm2` package.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::Error;

/// The environment variable naming the PKCS#11 module.
pub const MODULE_ENV: &str = "TRUSTLINE_PKCS11_MODULE";
/// The environment variable SoftHSM2 reads its configuration path from.
pub const CONF_ENV: &str = "SOFTHSM2_CONF";
/// The label of the embedded token under `<data>/hsm`.
pub const EMBEDDED_TOKEN_LABEL: &str = "trustline";
/// The embedded token's user PIN file, inside the token directory.
pub const USER_PIN_FILE: &str = "user.pin";
/// The label of the embedded ledger token (the checkpoint key alone).
pub const EMBEDDED_LEDGER_TOKEN_LABEL: &str = "trustline-ledger";
/// The embedded ledger token's user PIN file, inside the token directory.
pub const LEDGER_PIN_FILE: &str = "ledger.pin";
/// Longest token label PKCS#11 allows, in bytes.
pub const MAX_LABEL_LEN: usize = 32;

/// Where SoftHSM2's module lives on Debian, Ubuntu, Fedora and friends.
pub const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

fn failed(operation: &'static str, reason: impl Into<String>) -> Error {
    Error::SoftHsm {
        operation,
        reason: reason.into(),
    }
}

/// Finds the SoftHSM2 module: `explicit` if given, else
/// `$TRUSTLINE_PKCS11_MODULE`, else the first of [`MODULE_PATHS`] present.
///
/// # Errors
/// [`Error::SoftHsmNotInstalled`], naming the paths tried and the package.
pub fn find_module(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let from_env = std::env::var_os(MODULE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let candidates: Vec<PathBuf> = match (explicit, from_env) {
        (Some(p), _) => vec![p.to_path_buf()],
        (None, Some(p)) => vec![p],
        (None, None) => MODULE_PATHS.iter().map(PathBuf::from).collect(),
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(Error::SoftHsmNotInstalled { tried: candidates })
}

/// The SoftHSM2 configuration this process initialised the module with.
struct Active {
    conf: PathBuf,
    dir: PathBuf,
    module: PathBuf,
    ctx: Pkcs11,
}

fn active() -> MutexGuard<'static, Option<Active>> {
    static ACTIVE: OnceLock<Mutex<Option<Active>>> = OnceLock::new();
    // The guarded value is only ever replaced whole; a panic elsewhere
    // cannot leave it half-written.
    ACTIVE
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A SoftHSM2 token directory this process uses.
#[derive(Clone)]
pub struct SoftHsm {
    dir: PathBuf,
    conf: PathBuf,
    module: PathBuf,
    ctx: Pkcs11,
}

impl std::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsm")
            .field("dir", &self.dir)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

fn conf_text(tokens: &Path) -> String {
    format!(
        "# SoftHSM2 configuration written by Trustline (hsm-sim).\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n\
         slots.mechanisms = ALL\n",
        tokens.display()
    )
}

/// Writes `text` to `conf` unless it already says exactly that: through a
/// temporary file and a rename, so another process opening the same
/// directory never reads half a file.
fn write_conf(conf: &Path, text: &str) -> Result<(), Error> {
    if std::fs::read_to_string(conf).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let fail =
        |e: std::io::Error| failed("write softhsm2.conf", format!("{}: {e}", conf.display()));
    let tmp = conf.with_extension(format!("conf.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, conf).map_err(fail)
}

impl SoftHsm {
    /// Uses the token directory `dir` (created with its `softhsm2.conf` and
    /// `tokens/` when missing; the configuration rewritten to name `dir`
    /// when it names another place) for this process: sets `SOFTHSM2_CONF`,
    /// loads the module and initialises it.
    ///
    /// # Errors
    /// [`Error::SoftHsmNotInstalled`]; [`Error::SoftHsm`] when this process
    /// already uses another directory, or the files or the module fail.
    pub fn open(dir: &Path, module: Option<&Path>) -> Result<Self, Error> {
        let module = find_module(module)?;
        std::fs::create_dir_all(dir.join("tokens"))
            .map_err(|e| failed("create token directory", format!("{}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| failed("open token directory", format!("{}: {e}", dir.display())))?;
        let conf = dir.join("softhsm2.conf");
        let mut active = active();
        if let Some(a) = active.as_ref() {
            if a.conf != conf {
                return Err(failed(
                    "open token directory",
                    format!(
                        "this process already uses SoftHSM2 with {}; SoftHSM2 reads \
                         SOFTHSM2_CONF once per process, so {} needs a process of its own",
                        a.dir.display(),
                        dir.display()
                    ),
                ));
            }
            return Ok(Self {
                dir: a.dir.clone(),
                conf: a.conf.clone(),
                module: a.module.clone(),
                ctx: a.ctx.clone(),
            });
        }
        write_conf(&conf, &conf_text(&dir.join("tokens")))?;
        let previous: Option<OsString> = std::env::var_os(CONF_ENV);
        // SoftHSM2 reads this at C_Initialize, just below.
        std::env::set_var(CONF_ENV, &conf);
        let ctx = Pkcs11::new(&module)
            .map_err(|e| failed("load module", format!("{}: {e}", module.display())))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _))
                if previous.as_deref() == Some(conf.as_os_str()) => {}
            Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                return Err(failed(
                    "initialise module",
                    format!(
                        "SoftHSM2 was already initialised in this process with another \
                         configuration ({}); {} needs a process of its own",
                        previous
                            .as_deref()
                            .map(|p| Path::new(p).display().to_string())
                            .unwrap_or_else(|| "the system default".to_owned()),
                        dir.display()
                    ),
                ))
            }
            Err(e) => return Err(failed("initialise module", e.to_string())),
        }
        *active = Some(Active {
            conf: conf.clone(),
            dir: dir.clone(),
            module: module.clone(),
            ctx: ctx.clone(),
        });
        Ok(Self {
            dir,
            conf,
            module,
            ctx,
        })
    }

    /// The token directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `softhsm2.conf` this process uses.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The PKCS#11 module.
    pub fn module_path(&self) -> &Path {
        &self.module
    }

    /// Labels of the initialised tokens.
    ///
    /// # Errors
    /// [`Error::SoftHsm`].
    pub fn token_labels(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .initialised_tokens()?
            .into_iter()
            .map(|(_, label)| label)
            .collect())
    }

    /// Whether an initialised token carries `label`.
    ///
    /// # Errors
    /// [`Error::SoftHsm`].
    pub fn has_token(&self, label: &str) -> Result<bool, Error> {
        Ok(self.token_labels()?.iter().any(|l| l == label))
    }

    fn initialised_tokens(&self) -> Result<Vec<(Slot, String)>, Error> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| failed("list slots", e.to_string()))?;
        let mut out = Vec::new();
        for slot in slots {
            let info = self
                .ctx
                .get_token_info(slot)
                .map_err(|e| failed("read token info", e.to_string()))?;
            if info.token_initialized() {
                out.push((slot, info.label().trim_end().to_owned()));
            }
        }
        Ok(out)
    }

    /// Initialises a new token labelled `label` in the free slot and sets
    /// its SO and user PINs, all over PKCS#11.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad label or PIN; [`Error::SoftHsm`]
    /// when a token with this label exists or the module refuses.
    pub fn create_token(&self, label: &str, so_pin: &str, user_pin: &str) -> Result<(), Error> {
        if label.is_empty() || label.len() > MAX_LABEL_LEN || label.trim() != label {
            return Err(Error::InvalidInput(format!(
                "token label {label:?} must be 1 to {MAX_LABEL_LEN} bytes without surrounding spaces"
            )));
        }
        for pin in [so_pin, user_pin] {
            if pin.len() < 4 || pin.len() > 255 {
                return Err(Error::InvalidInput(
                    "SoftHSM2 PINs must be 4 to 255 bytes".to_owned(),
                ));
            }
        }
        // C_InitToken takes the one free slot: serialise creation within
        // the process (the same lock guards the module's configuration).
        let _guard = active();
        let tokens = self.initialised_tokens()?;
        if tokens.iter().any(|(_, l)| l == label) {
            return Err(failed(
                "create token",
                format!(
                    "a token labelled {label:?} already exists in {}",
                    self.dir.display()
                ),
            ));
        }
        let free = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| failed("list slots", e.to_string()))?
            .into_iter()
            .find(|slot| {
                self.ctx
                    .get_token_info(*slot)
                    .map(|info| !info.token_initialized())
                    .unwrap_or(false)
            })
            .ok_or_else(|| failed("create token", "SoftHSM2 offers no free slot"))?;
        let so = AuthPin::from(so_pin);
        let user = AuthPin::from(user_pin);
        self.ctx
            .init_token(free, &so, label)
            .map_err(|e| failed("initialise token", e.to_string()))?;
        // The slot id changes on initialisation: find the token again.
        let slot = self
            .initialised_tokens()?
            .into_iter()
            .find(|(_, l)| l == label)
            .map(|(slot, _)| slot)
            .ok_or_else(|| {
                failed(
                    "create token",
                    format!("token {label:?} vanished after init"),
                )
            })?;
        let session = self
            .ctx
            .open_rw_session(slot)
            .map_err(|e| failed("open session", e.to_string()))?;
        session
            .login(UserType::So, Some(&so))
            .map_err(|e| failed("log in as SO", e.to_string()))?;
        session
            .init_pin(&user)
            .map_err(|e| failed("set user PIN", e.to_string()))?;
        session
            .logout()
            .map_err(|e| failed("log out", e.to_string()))?;
        tracing::info!(label, dir = %self.dir.display(), "SoftHSM2 token created");
        Ok(())
    }
}

/// A random PIN: 24 hex characters (96 bits).
fn random_pin() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 12]);
    rand::thread_rng().fill_bytes(bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// Writes a new file readable by its owner only (0600).
fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| failed("write PIN file", format!("{}: {e}", path.display())))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| failed("write PIN file", format!("{}: {e}", path.display())))
}

/// The embedded token under a data directory's `hsm/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedToken {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token label ([`EMBEDDED_TOKEN_LABEL`] or
    /// [`EMBEDDED_LEDGER_TOKEN_LABEL`]).
    pub label: String,
    /// The 0600 file holding the user PIN.
    pub pin_file: PathBuf,
    /// Whether this call created the token.
    pub created: bool,
}

/// Opens the embedded CA token in `hsm_dir` (`<data>/hsm`), creating it on
/// first use with random SO and user PINs; the user PIN goes to
/// `hsm_dir/user.pin` (0600) and the SO PIN is discarded (the demo token is
/// never re-initialised; a real HSM is administered by its own tools).
///
/// # Errors
/// [`Error::SoftHsmNotInstalled`]; [`Error::SoftHsm`] when the token exists
/// but its PIN file is missing, or the module fails.
pub fn embedded_token(hsm_dir: &Path, module: Option<&Path>) -> Result<EmbeddedToken, Error> {
    embedded(hsm_dir, module, EMBEDDED_TOKEN_LABEL, USER_PIN_FILE)
}

/// Opens the embedded ledger token in `hsm_dir`, beside the CA token, with
/// a PIN of its own in `hsm_dir/ledger.pin`: the checkpoint key lives there
/// alone (issue 12.6).
///
/// # Errors
/// As [`embedded_token`].
pub fn embedded_ledger_token(
    hsm_dir: &Path,
    module: Option<&Path>,
) -> Result<EmbeddedToken, Error> {
    embedded(
        hsm_dir,
        module,
        EMBEDDED_LEDGER_TOKEN_LABEL,
        LEDGER_PIN_FILE,
    )
}

/// Opens the embedded token `label` in `hsm_dir`, creating it on first use
/// with a PIN of its own in `hsm_dir/<label>.pin`: one token per trust
/// domain and role when a demo runs several domains in one process (the
/// OEM hub's, and each site's CA and ledger tokens; issue 13).
///
/// # Errors
/// As [`embedded_token`].
pub fn embedded_named_token(
    hsm_dir: &Path,
    module: Option<&Path>,
    label: &str,
) -> Result<EmbeddedToken, Error> {
    embedded(hsm_dir, module, label, &format!("{label}.pin"))
}

fn embedded(
    hsm_dir: &Path,
    module: Option<&Path>,
    label: &str,
    pin_file_name: &str,
) -> Result<EmbeddedToken, Error> {
    let softhsm = SoftHsm::open(hsm_dir, module)?;
    let pin_file = softhsm.dir().join(pin_file_name);
    let created = if softhsm.has_token(label)? {
        if !pin_file.is_file() {
            return Err(failed(
                "open embedded token",
                format!(
                    "token {label:?} exists but its PIN file {} is missing",
                    pin_file.display()
                ),
            ));
        }
        false
    } else {
        let so_pin = random_pin();
        let user_pin = random_pin();
        softhsm.create_token(label, &so_pin, &user_pin)?;
        if pin_file.exists() {
            std::fs::remove_file(&pin_file)
                .map_err(|e| failed("replace PIN file", format!("{}: {e}", pin_file.display())))?;
        }
        write_private_file(&pin_file, user_pin.as_bytes())?;
        true
    };
    Ok(EmbeddedToken {
        module: softhsm.module_path().to_path_buf(),
        label: label.to_owned(),
        pin_file,
        created,
    })
}

const TEST_DIR_PREFIX: &str = "trustline-softhsm-test-";

/// The token directory shared by every test thread of this process, created
/// on first use under the system temp directory. Directories left by test
/// processes that have exited are removed on the way.
///
/// # Errors
/// [`Error::SoftHsmNotInstalled`]; [`Error::SoftHsm`].
pub fn shared_test_dir() -> Result<SoftHsm, Error> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        remove_stale_test_dirs();
        let mut suffix = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut suffix);
        std::env::temp_dir().join(format!(
            "{TEST_DIR_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(suffix)
        ))
    });
    SoftHsm::open(dir, None)
}

fn remove_stale_test_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEST_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A token made for one test in the shared test directory.
pub struct TestToken {
    /// The token's label (unique in the process).
    pub label: String,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// A 0600 file holding the user PIN.
    pub pin_file: PathBuf,
    user_pin: Zeroizing<String>,
}

impl std::fmt::Debug for TestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestToken")
            .field("label", &self.label)
            .field("pin_file", &self.pin_file)
            .finish_non_exhaustive()
    }
}

impl TestToken {
    /// The user PIN (tests only).
    pub fn user_pin(&self) -> &str {
        &self.user_pin
    }
}

/// Creates a token for one test in [`shared_test_dir`], labelled `name`
/// plus a random suffix (so parallel tests never share a token), with random
/// PINs and its user PIN in a 0600 file.
///
/// # Errors
/// [`Error::SoftHsmNotInstalled`]; [`Error::SoftHsm`].
pub fn test_token(name: &str) -> Result<TestToken, Error> {
    let softhsm = shared_test_dir()?;
    let mut suffix = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut suffix);
    let base: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(MAX_LABEL_LEN - 9)
        .collect();
    let label = format!("{base}-{}", hex::encode(suffix));
    let so_pin = random_pin();
    let user_pin = random_pin();
    softhsm.create_token(&label, &so_pin, &user_pin)?;
    let pins = softhsm.dir().join("pins");
    std::fs::create_dir_all(&pins)
        .map_err(|e| failed("create PIN directory", format!("{}: {e}", pins.display())))?;
    let pin_file = pins.join(format!("{label}.pin"));
    write_private_file(&pin_file, user_pin.as_bytes())?;
    Ok(TestToken {
        label,
        module: softhsm.module_path().to_path_buf(),
        pin_file,
        user_pin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_names_the_package() {
        let err = find_module(Some(Path::new("/nonexistent/libsofthsm2.so")))
            .expect_err("must be refused");
        assert!(matches!(err, Error::SoftHsmNotInstalled { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("softhsm2"), "{msg}");
        assert!(msg.contains("/nonexistent/libsofthsm2.so"), "{msg}");
    }

    #[test]
    fn tokens_are_created_over_pkcs11_and_found_by_label() {
        let a = test_token("sim-a").expect("token a");
        let b = test_token("sim-b").expect("token b");
        assert_ne!(a.label, b.label);
        let softhsm = shared_test_dir().expect("shared dir");
        assert!(softhsm.has_token(&a.label).expect("list"));
        assert!(softhsm.has_token(&b.label).expect("list"));
        assert_eq!(
            std::env::var_os(CONF_ENV).as_deref(),
            Some(softhsm.conf_path().as_os_str())
        );
        let err = softhsm
            .create_token(&a.label, "12345678", "12345678")
            .expect_err("must be refused");
        assert!(err.to_string().contains("already exists"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.pin_file)
                .expect("pin file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            std::fs::read_to_string(&a.pin_file).expect("read pin"),
            a.user_pin()
        );
    }

    #[test]
    fn a_configuration_naming_another_directory_is_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(&conf, conf_text(Path::new("/elsewhere/tokens"))).expect("write");
        let here = conf_text(&dir.path().join("tokens"));
        write_conf(&conf, &here).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&conf).expect("read"), here);
        // Unchanged when already right (no temporary files left either).
        write_conf(&conf, &here).expect("again");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("softhsm2.conf")]);
    }

    #[test]
    fn a_second_token_directory_in_one_process_is_refused() {
        shared_test_dir().expect("shared dir");
        let other = tempfile::tempdir().expect("tempdir");
        let err = SoftHsm::open(other.path(), None).expect_err("must be refused");
        assert!(err.to_string().contains("process of its own"), "{err}");
    }

    #[test]
    fn bad_labels_and_pins_are_refused() {
        let softhsm = shared_test_dir().expect("shared dir");
        for label in ["", " padded", &"x".repeat(33)] {
            assert!(matches!(
                softhsm.create_token(label, "12345678", "12345678"),
                Err(Error::InvalidInput(_))
            ));
        }
        assert!(matches!(
            softhsm.create_token("short-pin", "123", "12345678"),
            Err(Error::InvalidInput(_))
        ));
    }
}
