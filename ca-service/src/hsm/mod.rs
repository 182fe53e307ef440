//! The HSM layer: a PKCS#11 module, one token found by label, a pool of
//! logged-in sessions, and the P-256 keys on it.
//!
//! [`Hsm::open`] loads the module (once per process), finds the token by
//! label (slot ids change when tokens are initialised), reads the PIN from
//! its [`PinSource`], opens [`HsmConfig::pool_size`] sessions and logs in.
//! [`Hsm`] is a cheap handle (`Clone`, `Send`, `Sync`) around that pool.
//! Every key it generates gets the attributes of [`usage`] (only the usages
//! it needs); P-256 signing keys sign through [`HsmSigner`], Ed25519 keys
//! (the hub's witness) through [`HsmEd25519Signer`]; the OEM seal key
//! (AES-256-GCM) seals and opens voucher entries ([`Hsm::seal`]).
//! Everything here is blocking; async callers run it on
//! `tokio::task::spawn_blocking`.

mod ec;
mod ed25519;
mod key;
pub mod module;
mod pin;
mod pool;
mod seal;
pub mod uri;
pub mod usage;
mod wrap;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
use cryptoki::slot::Slot;

pub(crate) use ec::uncompressed as uncompressed_point;
pub use ed25519::HsmEd25519Signer;
pub(crate) use key::take_signer_failure;
pub use key::{HsmSigner, KeyObject, KeyProtection};
pub use module::{resolve_module, MODULE_ENV, SOFTHSM_MODULE_PATHS};
pub use pin::{PinSource, DEFAULT_PIN_ENV};
pub use seal::SEAL_IV_LEN;
pub use uri::Pkcs11Uri;
pub use usage::{AttributeTable, KeyPairAttributes};
pub use wrap::{KeyDeliveryKdf, WrappedDeviceKey, KEY_DELIVERY_SHARED_INFO};

use crate::Error;
use pool::{map_p11, Pool};

/// Default number of pooled sessions.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default time a caller waits for a free session.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach the HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmConfig {
    /// The PKCS#11 module; `None` uses `$TRUSTLINE_PKCS11_MODULE` or the
    /// usual SoftHSM2 locations ([`resolve_module`]).
    pub module: Option<PathBuf>,
    /// The token's label.
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// How many sessions to open (real HSMs cap them).
    pub pool_size: usize,
    /// How long a caller waits for a free session before
    /// [`Error::PoolExhausted`].
    pub checkout_timeout: Duration,
    /// The KDF for HSM-made device keys.
    pub kdf: KeyDeliveryKdf,
}

impl HsmConfig {
    /// A configuration with default pool size, timeout and KDF.
    pub fn new(token_label: impl Into<String>, pin: PinSource) -> Self {
        Self {
            module: None,
            token_label: token_label.into(),
            pin,
            pool_size: DEFAULT_POOL_SIZE,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            kdf: KeyDeliveryKdf::default(),
        }
    }
}

/// Optional mechanisms, probed once at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mechanisms {
    pub(crate) ecdh_derive: bool,
    pub(crate) aes_key_wrap_pad: bool,
    pub(crate) edwards_key_gen: bool,
    pub(crate) eddsa: bool,
    pub(crate) aes_gcm: bool,
}

struct Inner {
    pool: Pool,
    module: PathBuf,
    kdf: KeyDeliveryKdf,
    mechanisms: Mechanisms,
}

/// A logged-in session pool on one token. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.inner.module)
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the module, finds the token, reads the PIN, opens the sessions
    /// and logs in.
    ///
    /// # Errors
    /// [`Error::ModuleNotFound`], [`Error::ModuleLoad`],
    /// [`Error::ModuleInit`], [`Error::TokenNotFound`],
    /// [`Error::PinSource`], [`Error::WrongPin`], [`Error::PinLocked`],
    /// [`Error::Login`], [`Error::MechanismUnsupported`] (no P-256 ECDSA),
    /// or another precise PKCS#11 error.
    pub fn open(config: &HsmConfig) -> Result<Self, Error> {
        let module = resolve_module(config.module.as_deref())?;
        let ctx = module::load(&module)?;
        let slot = find_token(&ctx, &config.token_label)?;
        for (mechanism, name) in [
            (MechanismType::ECDSA, "CKM_ECDSA"),
            (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
        ] {
            if ctx.get_mechanism_info(slot, mechanism).is_err() {
                return Err(Error::MechanismUnsupported {
                    mechanism: name.to_owned(),
                    reason: format!("token {:?} does not offer it", config.token_label),
                });
            }
        }
        // Probe with C_GetMechanismInfo: cryptoki's mechanism list silently
        // drops codes it has no name for.
        let mechanisms = Mechanisms {
            ecdh_derive: ctx
                .get_mechanism_info(slot, MechanismType::ECDH1_DERIVE)
                .is_ok(),
            aes_key_wrap_pad: ctx
                .get_mechanism_info(slot, MechanismType::AES_KEY_WRAP_PAD)
                .is_ok(),
            edwards_key_gen: ctx
                .get_mechanism_info(slot, MechanismType::ECC_EDWARDS_KEY_PAIR_GEN)
                .is_ok(),
            eddsa: ctx.get_mechanism_info(slot, MechanismType::EDDSA).is_ok(),
            aes_gcm: ctx.get_mechanism_info(slot, MechanismType::AES_GCM).is_ok(),
        };
        let pin = config.pin.read()?;
        let pool = Pool::open(
            ctx,
            slot,
            config.token_label.clone(),
            pin,
            config.pool_size,
            config.checkout_timeout,
        )?;
        tracing::info!(
            module = %module.display(),
            token = %config.token_label,
            sessions = pool.size(),
            "HSM session pool open"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                module,
                kdf: config.kdf,
                mechanisms,
            }),
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    pub(crate) fn mechanisms(&self) -> Mechanisms {
        self.inner.mechanisms
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        self.inner.pool.token()
    }

    /// The module's path.
    pub fn module_path(&self) -> &Path {
        &self.inner.module
    }

    /// The number of pooled sessions.
    pub fn pool_size(&self) -> usize {
        self.inner.pool.size()
    }

    /// The KDF used for HSM-made device keys.
    pub fn kdf(&self) -> KeyDeliveryKdf {
        self.inner.kdf
    }

    /// Whether the token can make wrapped device keys (ECDH derive and AES
    /// key wrap with padding).
    pub fn supports_key_delivery(&self) -> bool {
        self.missing_wrap_mechanism().is_none()
    }

    fn missing_wrap_mechanism(&self) -> Option<&'static str> {
        let m = self.inner.mechanisms;
        if !m.ecdh_derive {
            Some("CKM_ECDH1_DERIVE")
        } else if !m.aes_key_wrap_pad {
            Some("CKM_AES_KEY_WRAP_PAD")
        } else {
            None
        }
    }

    /// The slot the token is in now (for diagnostics only: slot ids change).
    pub fn slot_id(&self) -> u64 {
        self.inner.pool.slot().id()
    }
}

/// Finds the slot holding the initialised token labelled `label`.
fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, Error> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| map_p11("C_GetSlotList", label, &e))?;
    let mut available = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_p11("C_GetTokenInfo", label, &e))?;
        if !info.token_initialized() {
            continue;
        }
        let found = info.label().trim_end();
        if found == label {
            matching.push(slot);
        } else {
            available.push(found.to_owned());
        }
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Error::TokenNotFound {
            label: label.to_owned(),
            available,
        }),
        many => Err(Error::AmbiguousToken {
            label: label.to_owned(),
            count: many.len(),
        }),
    }
}
