//! The custody ledger's checkpoint key, on a token of its own (issue 12.6).
//!
//! A ledger host needs its checkpoint signer and nothing else: if it logged
//! into the CA's token to get it, the host (and anyone who took its PIN)
//! could use the root, intermediate, order and voucher keys too. So the
//! checkpoint key is made by [`init`] on a separately opened [`Hsm`] — its
//! own [`crate::HsmConfig`]: module, token label (default
//! [`LEDGER_TOKEN_LABEL`]), PIN source (default `$`[`LEDGER_PIN_ENV`]) —
//! and opened by [`open`], which refuses a token that holds any other
//! private key. `ca::init` makes no checkpoint key.
//!
//! Wiring (for `serve ledger`, `serve all` and `setup`):
//! ```text
//! let ledger_hsm = Hsm::open(&HsmConfig::new(LEDGER_TOKEN_LABEL, PinSource::Env(LEDGER_PIN_ENV.into())))?;
//! ledger_key::init(&ledger_hsm, keys::LEDGER_CHECKPOINT, &data_dir.join("ledger/ledger-key.pub.pem"))?; // once
//! let signer = ledger_key::open(&ledger_hsm, keys::LEDGER_CHECKPOINT)?;  // at every start
//! custody_ledger::Ledger::open(config, Arc::new(signer))
//! ```

use std::path::{Path, PathBuf};

use crate::ca::write_atomically;
use crate::hsm::{Hsm, HsmSigner};
use crate::Error;

/// The default label of the ledger's own token.
pub const LEDGER_TOKEN_LABEL: &str = "trustline-ledger";
/// The default environment variable holding the ledger token's user PIN
/// (never the CA token's PIN).
pub const LEDGER_PIN_ENV: &str = "TRUSTLINE_LEDGER_HSM_PIN";
/// The file name of the checkpoint public key beside the ledger.
pub const LEDGER_KEY_FILE_NAME: &str = "ledger-key.pub.pem";

/// What [`init`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointKeyReport {
    /// The key's label.
    pub label: String,
    /// The token it is on.
    pub token: String,
    /// The public key, PEM SubjectPublicKeyInfo.
    pub public_key_pem: String,
    /// Where the public key was written.
    pub file: PathBuf,
}

/// Labels of the private keys on `hsm`'s token other than `label`.
fn other_private_keys(hsm: &Hsm, label: &str) -> Result<Vec<String>, Error> {
    let mut others: Vec<String> = hsm
        .private_keys()?
        .into_iter()
        .filter(|k| k.token && k.label != label)
        .map(|k| k.label)
        .collect();
    others.sort();
    others.dedup();
    Ok(others)
}

fn refuse_shared(hsm: &Hsm, label: &str) -> Result<(), Error> {
    let others = other_private_keys(hsm, label)?;
    if others.is_empty() {
        return Ok(());
    }
    Err(Error::TokenShared {
        token: hsm.token_label().to_owned(),
        label: label.to_owned(),
        others,
    })
}

/// Creates the checkpoint key `label` on `hsm` — which must be the ledger's
/// own token, holding no other private key — and writes its public key as
/// PEM to `public_key_file` (creating the directory). Runs once: an
/// existing key or file is refused; if writing the file fails the key is
/// destroyed again.
///
/// # Errors
/// [`Error::TokenShared`] when the token holds other private keys;
/// [`Error::AlreadyInitialized`] when the key or the file exists; HSM and
/// I/O errors.
pub fn init(hsm: &Hsm, label: &str, public_key_file: &Path) -> Result<CheckpointKeyReport, Error> {
    refuse_shared(hsm, label)?;
    let mut existing = Vec::new();
    if hsm.key_exists(label)? {
        existing.push(format!("key {label:?}"));
    }
    if public_key_file.exists() {
        existing.push(format!("file {}", public_key_file.display()));
    }
    if !existing.is_empty() {
        return Err(Error::AlreadyInitialized { existing });
    }
    let signer = hsm.generate_key(label)?;
    let public_key_pem = signer.public_key_pem();
    let written = public_key_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or(Ok(()), |dir| {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))
        })
        .and_then(|()| write_atomically(public_key_file, public_key_pem.as_bytes()));
    if let Err(e) = written {
        if let Err(destroy) = hsm.destroy_key(label) {
            tracing::error!(label, error = %destroy, "could not remove the checkpoint key after a failed init");
        }
        return Err(e);
    }
    tracing::info!(label, token = %hsm.token_label(), "ledger checkpoint key created");
    Ok(CheckpointKeyReport {
        label: label.to_owned(),
        token: hsm.token_label().to_owned(),
        public_key_pem,
        file: public_key_file.to_path_buf(),
    })
}

/// Opens the checkpoint signer `label` on the ledger's token.
///
/// # Errors
/// [`Error::KeyNotFound`] when the token has no such key (for example the
/// CA token, which no longer holds one); [`Error::TokenShared`] when the
/// token holds other private keys (a ledger host must not be able to use
/// them); other HSM errors.
pub fn open(hsm: &Hsm, label: &str) -> Result<HsmSigner, Error> {
    let signer = hsm.signer(label)?;
    refuse_shared(hsm, label)?;
    Ok(signer)
}
