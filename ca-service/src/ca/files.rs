//! The CA directory: its file names, atomic writes, reading certificates,
//! and the archive of site intermediate generations.
//!
//! ```text
//! <ca>/oem-root.pem                          the OEM root certificate
//! <ca>/site-intermediate.pem                 the active site intermediate (what signs now)
//! <ca>/intermediates/site-intermediate-<g>.pem      every intermediate ever installed, by generation
//! <ca>/intermediates/site-intermediate-<g>.csr.pem  a request waiting for the root's signature
//! <ca>/order-key.pub.pem  voucher-key.pub.pem
//! ```
//!
//! Generation 1 is the intermediate `ca init` made; each rotation adds one.
//! Older generations stay in the archive for the chains of devices already
//! issued. A directory made before the archive existed has generation 1
//! only (its active intermediate).

use std::path::{Path, PathBuf};

use crate::Error;

/// The OEM root certificate's file name in the CA directory.
pub const ROOT_CERT_FILE: &str = "oem-root.pem";
/// The active site intermediate certificate's file name in the CA directory.
pub const INTERMEDIATE_CERT_FILE: &str = "site-intermediate.pem";
/// The OEM order key's public key file name in the CA directory.
pub const ORDER_KEY_FILE: &str = "order-key.pub.pem";
/// The OEM voucher key's public key file name in the CA directory.
pub const VOUCHER_KEY_FILE: &str = "voucher-key.pub.pem";
/// The archive of intermediate generations, under the CA directory.
pub const INTERMEDIATES_DIR: &str = "intermediates";

const ARCHIVE_PREFIX: &str = "site-intermediate-";
const CERT_SUFFIX: &str = ".pem";
const CSR_SUFFIX: &str = ".csr.pem";

/// The archive path of generation `generation`'s certificate.
pub fn intermediate_path(ca_dir: &Path, generation: u32) -> PathBuf {
    ca_dir
        .join(INTERMEDIATES_DIR)
        .join(format!("{ARCHIVE_PREFIX}{generation}{CERT_SUFFIX}"))
}

/// The path of generation `generation`'s pending request.
pub fn request_path(ca_dir: &Path, generation: u32) -> PathBuf {
    ca_dir
        .join(INTERMEDIATES_DIR)
        .join(format!("{ARCHIVE_PREFIX}{generation}{CSR_SUFFIX}"))
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a
/// crash leaves either the old file or the new one.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))
}

/// Writes `der` as PEM with `tag` to `path`, atomically, creating the
/// directory.
pub(crate) fn write_pem(path: &Path, tag: &str, der: &[u8]) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    write_atomically(
        path,
        pem::encode(&pem::Pem::new(tag, der.to_vec())).as_bytes(),
    )
}

/// Reads one PEM block tagged `tag` from `path`.
pub(crate) fn read_pem(path: &Path, tag: &str) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotInitialized {
            reason: format!("{} is missing (run `trustline ca init`)", path.display()),
        },
        _ => Error::io("reading", path, e),
    })?;
    let block = pem::parse(&text).map_err(|e| Error::NotInitialized {
        reason: format!("{} is not PEM: {e}", path.display()),
    })?;
    if block.tag() != tag {
        return Err(Error::NotInitialized {
            reason: format!("{} holds a {}, not a {tag}", path.display(), block.tag()),
        });
    }
    Ok(block.into_contents())
}

/// Reads a PEM certificate.
pub(crate) fn read_certificate(path: &Path) -> Result<Vec<u8>, Error> {
    read_pem(path, "CERTIFICATE")
}

/// One site intermediate generation in the CA directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateRecord {
    /// Its generation (1 = made by `ca init`).
    pub generation: u32,
    /// The certificate, DER.
    pub certificate_der: Vec<u8>,
    /// Whether it is the active one (signs new devices and CRLs).
    pub active: bool,
}

/// The generations in the archive with a file ending in `suffix`.
fn archived(ca_dir: &Path, suffix: &str) -> Result<Vec<u32>, Error> {
    let dir = ca_dir.join(INTERMEDIATES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir, e)),
    };
    let mut generations = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading", &dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(ARCHIVE_PREFIX) else {
            continue;
        };
        let Some(number) = rest.strip_suffix(suffix) else {
            continue;
        };
        // `<g>.csr.pem` also ends in `.pem`: only plain digits count.
        if let Ok(g) = number.parse::<u32>() {
            if g >= 1 && number.bytes().all(|b| b.is_ascii_digit()) {
                generations.push(g);
            }
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

/// Generations with a pending request.
pub(crate) fn pending_requests(ca_dir: &Path) -> Result<Vec<u32>, Error> {
    archived(ca_dir, CSR_SUFFIX)
}

/// The generation of the active intermediate `active_der`: the archived
/// generation with the same bytes, or 1 for a directory without an archive
/// entry for it (made before rotation existed).
pub(crate) fn active_generation(ca_dir: &Path, active_der: &[u8]) -> Result<u32, Error> {
    for g in archived(ca_dir, CERT_SUFFIX)?.into_iter().rev() {
        if read_certificate(&intermediate_path(ca_dir, g))? == active_der {
            return Ok(g);
        }
    }
    Ok(1)
}

/// The next free generation: one past every archived certificate and
/// pending request (and past 1).
pub(crate) fn next_generation(ca_dir: &Path) -> Result<u32, Error> {
    let highest = archived(ca_dir, CERT_SUFFIX)?
        .into_iter()
        .chain(pending_requests(ca_dir)?)
        .max()
        .unwrap_or(1);
    Ok(highest.max(1) + 1)
}

/// Every site intermediate of the CA in `ca_dir`, oldest first, the active
/// one marked: the chains of devices issued before a rotation need their
/// own generation's certificate.
///
/// # Errors
/// [`Error::NotInitialized`] when the active certificate is missing;
/// [`Error::Io`].
pub fn intermediates(ca_dir: &Path) -> Result<Vec<IntermediateRecord>, Error> {
    let active_der = read_certificate(&ca_dir.join(INTERMEDIATE_CERT_FILE))?;
    let mut out = Vec::new();
    for g in archived(ca_dir, CERT_SUFFIX)? {
        let der = read_certificate(&intermediate_path(ca_dir, g))?;
        let active = der == active_der;
        out.push(IntermediateRecord {
            generation: g,
            certificate_der: der,
            active,
        });
    }
    if !out.iter().any(|r| r.active) {
        // A directory from before the archive: the active one is generation 1.
        out.retain(|r| r.generation != 1);
        out.insert(
            0,
            IntermediateRecord {
                generation: 1,
                certificate_der: active_der,
                active: true,
            },
        );
    }
    Ok(out)
}
