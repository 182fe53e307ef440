//! HSM options shared by every subcommand that opens the HSM, and their
//! conversion into `ca_service::HsmConfig`.
//!
//! The user PIN comes from `--pin-file` or from the environment variable
//! named by `--pin-env` — never from an argument, so it never lands in shell
//! history, `ps` output or logs. With `--data-dir` and no explicit HSM option
//! (`--pkcs11-module`, `--token-label`, `--pin-file`), the embedded SoftHSM2
//! token under `<data>/hsm` is used, created on first use with its PIN in
//! `<data>/hsm/user.pin` (0600) — the demo and laptop default
//! (docs/operations.md, "HSM keys and labels").

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use backends::layout::EMBEDDED_HSM_DIR;
use ca_service::hsm::{
    KeyDeliveryKdf, DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_PIN_ENV, DEFAULT_POOL_SIZE,
};
use ca_service::{HsmConfig, PinSource};

/// How to reach the HSM.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HsmArgs {
    /// The PKCS#11 module [default: $TRUSTLINE_PKCS11_MODULE, else SoftHSM2
    /// on its usual Debian/Ubuntu/Fedora paths].
    #[arg(long = "pkcs11-module", value_name = "PATH")]
    pub(crate) pkcs11_module: Option<PathBuf>,
    /// The token's label (tokens are found by label, never by slot number).
    #[arg(long, value_name = "LABEL")]
    pub(crate) token_label: Option<String>,
    /// A file holding the user PIN (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub(crate) pin_file: Option<PathBuf>,
    /// The environment variable holding the user PIN, when no --pin-file.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PIN_ENV)]
    pub(crate) pin_env: String,
    /// How many HSM sessions to open (real HSMs cap them).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_POOL_SIZE)]
    pub(crate) pool_size: usize,
    /// How HSM-made device keys derive their key-encryption key:
    /// ecdh-x-coordinate (CKD_NULL, SoftHSM2) or ecdh-sha256-kdf
    /// (CKD_SHA256_KDF).
    #[arg(long, value_name = "KDF", default_value = "ecdh-x-coordinate")]
    pub(crate) key_delivery_kdf: KeyDeliveryKdf,
}

impl HsmArgs {
    /// Opens (creating it on first use) the embedded SoftHSM2 token under
    /// `<dir>/hsm` with a pool of `pool_size` sessions: what the demo, the
    /// simulated inspection and the line bench run on.
    ///
    /// # Errors
    /// When the token cannot be created, initialised or opened.
    pub(crate) fn open_embedded(dir: &Path, pool_size: usize) -> anyhow::Result<ca_service::Hsm> {
        let args = Self {
            pkcs11_module: None,
            token_label: None,
            pin_file: None,
            pin_env: ca_service::hsm::DEFAULT_PIN_ENV.to_owned(),
            pool_size,
            key_delivery_kdf: KeyDeliveryKdf::default(),
        };
        ca_service::Hsm::open(&args.config(Some(dir))?).context("opening the embedded token")
    }

    /// Whether any option names an HSM explicitly (rather than the
    /// embedded token).
    pub(crate) fn is_explicit(&self) -> bool {
        self.pkcs11_module.is_some() || self.token_label.is_some() || self.pin_file.is_some()
    }

    /// The HSM configuration: the explicit HSM if any option names one,
    /// else the embedded token under `<data_dir>/hsm` (created on first
    /// use).
    ///
    /// # Errors
    /// When neither an explicit HSM nor a data directory is given, when an
    /// explicit HSM lacks a token label, or when the embedded token cannot
    /// be created.
    pub(crate) fn config(&self, data_dir: Option<&Path>) -> anyhow::Result<HsmConfig> {
        if self.pool_size == 0 {
            bail!("--pool-size must be at least 1");
        }
        let (module, token_label, pin) = if self.is_explicit() {
            let Some(label) = &self.token_label else {
                bail!(
                    "--token-label is required when naming an HSM (--pkcs11-module or --pin-file)"
                );
            };
            let pin = match &self.pin_file {
                Some(file) => PinSource::File(file.clone()),
                None => PinSource::Env(self.pin_env.clone()),
            };
            (self.pkcs11_module.clone(), label.clone(), pin)
        } else {
            let Some(data_dir) = data_dir else {
                bail!(
                    "no HSM given: use --data-dir for the embedded SoftHSM2 token, or \
                     --token-label with --pin-file/--pin-env (and --pkcs11-module) for a real HSM"
                );
            };
            let hsm_dir = data_dir.join(EMBEDDED_HSM_DIR);
            let token = hsm_sim::softhsm::embedded_token(&hsm_dir, None)
                .with_context(|| format!("embedded SoftHSM2 token in {}", hsm_dir.display()))?;
            if token.created {
                tracing::info!(dir = %hsm_dir.display(), "created the embedded SoftHSM2 token");
            }
            (
                Some(token.module),
                token.label,
                PinSource::File(token.pin_file),
            )
        };
        Ok(HsmConfig {
            module,
            token_label,
            pin,
            pool_size: self.pool_size,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            kdf: self.key_delivery_kdf,
        })
    }
}
