//! `trustline owner keygen --out NAME`: a P-256 owner key, `NAME.pem`
//! (PKCS#8, mode 0600) and `NAME.pub.pem`, shown by fingerprint only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use super::voucher::{fingerprint, write_new};
use super::Outcome;

/// `trustline owner` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum OwnerCommand {
    /// Generates an owner key pair (P-256).
    Keygen(KeygenArgs),
}

/// `trustline owner keygen` arguments.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Output name: writes NAME.pem (private, 0600) and NAME.pub.pem.
    #[arg(long, value_name = "NAME")]
    pub(crate) out: PathBuf,
}

/// Runs an `owner` subcommand.
///
/// # Errors
/// When a file exists already or cannot be written.
pub(crate) fn run_owner(command: OwnerCommand) -> anyhow::Result<Outcome> {
    match command {
        OwnerCommand::Keygen(args) => keygen(&args),
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<Outcome> {
    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the private key")?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding the public key")?;
    let spki = key
        .verifying_key()
        .to_public_key_der()
        .context("encoding the public key")?;
    let private_path = with_suffix(&args.out, ".pem");
    let public_path = with_suffix(&args.out, ".pub.pem");
    if public_path.exists() {
        bail!("{} exists; nothing was written", public_path.display());
    }
    write_new(&private_path, private.as_bytes(), Some(0o600))?;
    write_new(&public_path, public.as_bytes(), None)?;
    println!(
        "owner key {}\n  private: {} (0600)\n  public:  {}",
        fingerprint(spki.as_bytes()),
        private_path.display(),
        public_path.display()
    );
    Ok(Outcome::Success)
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
