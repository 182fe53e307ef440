//! HSM options shared by every subcommand that opens an HSM, and their
//! conversion into `ca_service::HsmConfig`.
//!
//! Two tokens (issue 12.6): the CA's (`--pkcs11-module`, `--token-label`,
//! `--pin-file`/`--pin-env`) and the ledger's, which holds the checkpoint
//! key alone (`--ledger-token-label`, default `trustline-ledger`;
//! `--ledger-pin-file`/`--ledger-pin-env`, default
//! `$TRUSTLINE_LEDGER_HSM_PIN`; `--ledger-pkcs11-module`, default the CA's
//! module). A PIN comes from a file or from an environment variable — never
//! from an argument, so it never lands in shell history, `ps` output or
//! logs — and a variable is removed from the process environment as soon
//! as the token is open ([`open`]), before any thread starts, so child
//! processes do not inherit it.
//!
//! No silent embedded HSM (issue 12.8): with no HSM option at all a command
//! stops and names the options. `--embedded-hsm` asks explicitly for the
//! SoftHSM2 tokens under `<data>/hsm` (created on first use, PINs in
//! `user.pin` and `ledger.pin`, 0600) — the demo and laptop layout
//! (docs/operations.md, "HSM keys and labels"); `trustline demo` uses it by
//! itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use backends::layout::EMBEDDED_HSM_DIR;
use ca_service::hsm::{
    KeyDeliveryKdf, DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_PIN_ENV, DEFAULT_POOL_SIZE,
};
use ca_service::ledger_key::{LEDGER_PIN_ENV, LEDGER_TOKEN_LABEL};
use ca_service::{Hsm, HsmConfig, PinSource};

/// What to say when no HSM is named.
const NO_HSM: &str = "no HSM given: name the HSM with --pkcs11-module PATH --token-label LABEL \
    and --pin-file FILE (or --pin-env VAR), or pass --embedded-hsm for the SoftHSM2 token under \
    <data-dir>/hsm (demo and laptops only, never a factory)";

/// How to reach the CA's HSM token.
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
    /// The environment variable holding the user PIN, when no --pin-file
    /// (removed from the environment once read).
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PIN_ENV)]
    pub(crate) pin_env: String,
    /// Use the embedded SoftHSM2 tokens under <data-dir>/hsm, created on
    /// first use with their PINs beside them: for the demo and laptops
    /// only.
    #[arg(long, conflicts_with_all = ["pkcs11_module", "token_label", "pin_file"])]
    pub(crate) embedded_hsm: bool,
    /// How many HSM sessions to open (real HSMs cap them).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_POOL_SIZE)]
    pub(crate) pool_size: usize,
    /// How HSM-made device keys derive their key-encryption key:
    /// ecdh-x-coordinate (CKD_NULL, SoftHSM2) or ecdh-sha256-kdf
    /// (CKD_SHA256_KDF).
    #[arg(long, value_name = "KDF", default_value = "ecdh-x-coordinate")]
    pub(crate) key_delivery_kdf: KeyDeliveryKdf,
}

/// How to reach the ledger's own token (the checkpoint key alone).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LedgerHsmArgs {
    /// The ledger token's PKCS#11 module [default: the CA's --pkcs11-module].
    #[arg(long = "ledger-pkcs11-module", value_name = "PATH")]
    pub(crate) ledger_pkcs11_module: Option<PathBuf>,
    /// The ledger token's label.
    #[arg(long, value_name = "LABEL", default_value = LEDGER_TOKEN_LABEL)]
    pub(crate) ledger_token_label: String,
    /// A file holding the ledger token's user PIN (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub(crate) ledger_pin_file: Option<PathBuf>,
    /// The environment variable holding the ledger token's PIN, when no
    /// --ledger-pin-file (removed from the environment once read).
    #[arg(long, value_name = "VAR", default_value = LEDGER_PIN_ENV)]
    pub(crate) ledger_pin_env: String,
}

/// The two embedded tokens of a data directory.
#[derive(Debug, Clone)]
pub(crate) struct EmbeddedTokens {
    /// The CA's token (`trustline`).
    pub(crate) ca: Hsm,
    /// The ledger's token (`trustline-ledger`), the checkpoint key alone.
    pub(crate) ledger: Hsm,
}

/// Opens `config`'s token, then removes its PIN variable (if the PIN came
/// from one) from the environment, so that no child process inherits it.
/// Call it before any thread starts: changing the environment while other
/// threads may read it is unsound on some platforms.
///
/// # Errors
/// When the token cannot be opened.
pub(crate) fn open(config: &HsmConfig) -> anyhow::Result<Hsm> {
    let hsm = Hsm::open(config)
        .with_context(|| format!("opening the HSM token {:?}", config.token_label))?;
    forget_pin_variable(&config.pin);
    Ok(hsm)
}

/// Removes the PIN's environment variable, if it came from one.
fn forget_pin_variable(pin: &PinSource) {
    if let PinSource::Env(var) = pin {
        std::env::remove_var(var);
    }
}

fn embedded_config(
    token: hsm_sim::softhsm::EmbeddedToken,
    pool_size: usize,
    kdf: KeyDeliveryKdf,
) -> HsmConfig {
    HsmConfig {
        module: Some(token.module),
        token_label: token.label,
        pin: PinSource::File(token.pin_file),
        pool_size,
        checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
        kdf,
    }
}

impl HsmArgs {
    /// Opens (creating them on first use) the embedded SoftHSM2 tokens
    /// under `<dir>/hsm` with a pool of `pool_size` sessions each: what the
    /// demo, the simulated inspection and the line bench run on.
    ///
    /// # Errors
    /// When a token cannot be created, initialised or opened.
    pub(crate) fn open_embedded(dir: &Path, pool_size: usize) -> anyhow::Result<EmbeddedTokens> {
        let args = Self::embedded(pool_size);
        let ca = open(&args.config(Some(dir))?)?;
        let ledger = open(&LedgerHsmArgs::default().config(&args, Some(dir))?)?;
        Ok(EmbeddedTokens { ca, ledger })
    }

    /// Options that name the embedded tokens.
    pub(crate) fn embedded(pool_size: usize) -> Self {
        Self {
            pkcs11_module: None,
            token_label: None,
            pin_file: None,
            pin_env: DEFAULT_PIN_ENV.to_owned(),
            embedded_hsm: true,
            pool_size,
            key_delivery_kdf: KeyDeliveryKdf::default(),
        }
    }

    /// Whether any option names an HSM explicitly.
    pub(crate) fn is_explicit(&self) -> bool {
        self.pkcs11_module.is_some() || self.token_label.is_some() || self.pin_file.is_some()
    }

    /// The CA token's configuration: the explicit HSM, or with
    /// `--embedded-hsm` the embedded token under `<data_dir>/hsm` (created
    /// on first use).
    ///
    /// # Errors
    /// When no HSM is named (naming the options), an explicit HSM lacks a
    /// token label, `--embedded-hsm` comes without a data directory, or the
    /// embedded token cannot be created.
    pub(crate) fn config(&self, data_dir: Option<&Path>) -> anyhow::Result<HsmConfig> {
        if self.pool_size == 0 {
            bail!("--pool-size must be at least 1");
        }
        if self.embedded_hsm {
            let Some(data_dir) = data_dir else {
                bail!("--embedded-hsm needs --data-dir (its tokens live under <data-dir>/hsm)");
            };
            let hsm_dir = data_dir.join(EMBEDDED_HSM_DIR);
            let token = hsm_sim::softhsm::embedded_token(&hsm_dir, None)
                .with_context(|| format!("embedded SoftHSM2 token in {}", hsm_dir.display()))?;
            if token.created {
                tracing::info!(dir = %hsm_dir.display(), "created the embedded SoftHSM2 token");
            }
            return Ok(embedded_config(
                token,
                self.pool_size,
                self.key_delivery_kdf,
            ));
        }
        if !self.is_explicit() {
            bail!("{NO_HSM}");
        }
        let Some(label) = &self.token_label else {
            bail!("--token-label is required when naming an HSM (--pkcs11-module or --pin-file)");
        };
        let pin = match &self.pin_file {
            Some(file) => PinSource::File(file.clone()),
            None => PinSource::Env(self.pin_env.clone()),
        };
        Ok(HsmConfig {
            module: self.pkcs11_module.clone(),
            token_label: label.clone(),
            pin,
            pool_size: self.pool_size,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            kdf: self.key_delivery_kdf,
        })
    }
}

impl Default for LedgerHsmArgs {
    fn default() -> Self {
        Self {
            ledger_pkcs11_module: None,
            ledger_token_label: LEDGER_TOKEN_LABEL.to_owned(),
            ledger_pin_file: None,
            ledger_pin_env: LEDGER_PIN_ENV.to_owned(),
        }
    }
}

impl LedgerHsmArgs {
    /// Whether any ledger option was given explicitly.
    pub(crate) fn is_explicit(&self) -> bool {
        self.ledger_pkcs11_module.is_some()
            || self.ledger_pin_file.is_some()
            || self.ledger_token_label != LEDGER_TOKEN_LABEL
    }

    /// The ledger token's configuration: with `--embedded-hsm` the embedded
    /// ledger token beside the CA's; otherwise the ledger options, the
    /// module defaulting to the CA's.
    ///
    /// # Errors
    /// When no HSM is named at all (naming the options), or the embedded
    /// token cannot be created.
    pub(crate) fn config(
        &self,
        ca: &HsmArgs,
        data_dir: Option<&Path>,
    ) -> anyhow::Result<HsmConfig> {
        if ca.pool_size == 0 {
            bail!("--pool-size must be at least 1");
        }
        if ca.embedded_hsm {
            if self.is_explicit() {
                bail!("--embedded-hsm uses the embedded ledger token: drop the --ledger-* options");
            }
            let Some(data_dir) = data_dir else {
                bail!("--embedded-hsm needs --data-dir (its tokens live under <data-dir>/hsm)");
            };
            let hsm_dir = data_dir.join(EMBEDDED_HSM_DIR);
            let token =
                hsm_sim::softhsm::embedded_ledger_token(&hsm_dir, None).with_context(|| {
                    format!("embedded SoftHSM2 ledger token in {}", hsm_dir.display())
                })?;
            if token.created {
                tracing::info!(dir = %hsm_dir.display(), "created the embedded SoftHSM2 ledger token");
            }
            return Ok(embedded_config(token, ca.pool_size, ca.key_delivery_kdf));
        }
        if !self.is_explicit() && !ca.is_explicit() {
            bail!(
                "{NO_HSM}; the ledger's token is named with --ledger-token-label LABEL and \
                 --ledger-pin-file FILE (or --ledger-pin-env VAR)"
            );
        }
        let pin = match &self.ledger_pin_file {
            Some(file) => PinSource::File(file.clone()),
            None => PinSource::Env(self.ledger_pin_env.clone()),
        };
        Ok(HsmConfig {
            module: self
                .ledger_pkcs11_module
                .clone()
                .or_else(|| ca.pkcs11_module.clone()),
            token_label: self.ledger_token_label.clone(),
            pin,
            pool_size: ca.pool_size,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            kdf: ca.key_delivery_kdf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> HsmArgs {
        HsmArgs {
            embedded_hsm: false,
            ..HsmArgs::embedded(1)
        }
    }

    #[test]
    fn no_hsm_option_is_an_error_naming_the_options() {
        let dir = tempfile::tempdir().expect("dir");
        let err = none().config(Some(dir.path())).expect_err("refused");
        let msg = err.to_string();
        for option in [
            "--pkcs11-module",
            "--token-label",
            "--pin-file",
            "--embedded-hsm",
        ] {
            assert!(msg.contains(option), "{option} not named in {msg}");
        }
        let err = LedgerHsmArgs::default()
            .config(&none(), Some(dir.path()))
            .expect_err("refused");
        assert!(err.to_string().contains("--ledger-pin-file"), "{err}");
        // Nothing was created behind the caller's back.
        assert!(!dir.path().join(EMBEDDED_HSM_DIR).exists());
    }

    #[test]
    fn the_pin_variable_is_gone_once_the_token_is_open_and_children_do_not_inherit_it() {
        let token = hsm_sim::softhsm::test_token("forget-pin").expect("token");
        let var = "TRUSTLINE_TEST_FORGOTTEN_PIN";
        std::env::set_var(var, token.user_pin());
        let mut config = HsmConfig::new(token.label.clone(), PinSource::Env(var.to_owned()));
        config.module = Some(token.module.clone());
        config.pool_size = 1;
        let hsm = open(&config).expect("open");
        assert_eq!(hsm.token_label(), token.label);
        assert!(std::env::var_os(var).is_none());
        let child = std::process::Command::new("env")
            .output()
            .expect("run env(1)");
        let environment = String::from_utf8_lossy(&child.stdout);
        assert!(
            !environment.contains(var) && !environment.contains(token.user_pin()),
            "the child inherited the PIN variable"
        );
    }
}
