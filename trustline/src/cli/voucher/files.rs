//! The files an owner's tools read and write: vouchers (CBOR), P-256 keys
//! (PEM or DER; private keys zeroized after parsing), certificate chains
//! (PEM), key fingerprints, and files that must not exist yet.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use trustline_proto::signer::SoftwareSigner;
use trustline_proto::voucher::Voucher;
use zeroize::Zeroizing;

/// SHA-256 fingerprint of a key, hex.
pub(crate) fn fingerprint(spki: &[u8]) -> String {
    hex::encode(Sha256::digest(spki))
}

/// Reads a voucher file (CBOR).
///
/// # Errors
/// Unreadable or malformed.
pub(crate) fn read_voucher(path: &Path) -> anyhow::Result<(Vec<u8>, Voucher)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let voucher =
        Voucher::decode(&bytes).with_context(|| format!("{} is not a voucher", path.display()))?;
    Ok((bytes, voucher))
}

/// Reads a P-256 public key (PEM `PUBLIC KEY` or SPKI DER).
///
/// # Errors
/// Unreadable, or not a P-256 key.
pub(crate) fn read_public_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        let block = pem::parse(&bytes).with_context(|| format!("{} is not PEM", path.display()))?;
        if block.tag() != "PUBLIC KEY" {
            bail!(
                "{}: expected a PUBLIC KEY PEM block, found {}",
                path.display(),
                block.tag()
            );
        }
        block.into_contents()
    } else {
        bytes
    };
    trustline_proto::statement::parse_p256_spki(&der)
        .with_context(|| format!("{}", path.display()))?;
    Ok(der)
}

/// Reads a private key (PKCS#8 PEM); its text is zeroized after parsing.
///
/// # Errors
/// Unreadable, or not a P-256 PKCS#8 key.
pub(crate) fn read_private_key(path: &Path) -> anyhow::Result<SoftwareSigner> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    SoftwareSigner::from_pkcs8_pem(&text).with_context(|| format!("{}", path.display()))
}

/// Reads a PEM certificate chain (leaf first).
///
/// # Errors
/// Unreadable, or no CERTIFICATE block.
pub(crate) fn read_chain(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let chain: Vec<Vec<u8>> = pem::parse_many(&bytes)
        .with_context(|| format!("{} is not PEM", path.display()))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if chain.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(chain)
}

/// Writes a file that must not exist yet (with `mode` on Unix).
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode.unwrap_or(0o644));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
