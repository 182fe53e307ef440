//! The register of issued certificates: one JSON line per certificate the
//! service CA signed (`<pki>/issued.jsonl`), so that `trustline pki revoke
//! NAME` finds the serial of a credential whose files are elsewhere (a
//! station's own machine, a site's bundle) and `pki renew` knows what it
//! renews. The register holds public facts only (names, serials, validity);
//! the CRL, not the register, is what servers trust.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::identity::{Caller, ServerIdentity};
use crate::Error;

/// The register's file name inside a PKI directory.
pub const ISSUED_FILE: &str = "issued.jsonl";
/// Where renewed credentials' previous certificates are kept, inside a PKI
/// directory.
pub const RETIRED_DIR: &str = "retired";

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// The credential name (file stem), e.g. `station-site-1-st-01`.
    pub name: String,
    /// The serial number, lowercase hex of its big-endian bytes.
    pub serial: String,
    /// The identity URI it carries (caller or server).
    pub identity: String,
    /// `client` or `server`.
    pub kind: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
}

/// The serial number of a DER certificate, lowercase hex.
///
/// # Errors
/// [`Error::Credential`] when it does not parse.
pub fn serial_hex(der: &[u8]) -> Result<String, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::credential("certificate", e))?;
    Ok(hex_lower(strip_zeros(cert.raw_serial())))
}

/// Serial bytes without leading zero bytes (DER adds one to keep a serial
/// positive; CRLs and certificates are compared without it).
pub(crate) fn strip_zeros(serial: &[u8]) -> &[u8] {
    let start = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    &serial[start..]
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    t.to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the register says about a DER certificate issued as `name`.
///
/// # Errors
/// [`Error::Credential`] when it does not parse or names neither a caller
/// nor a server.
pub fn describe(name: &str, der: &[u8]) -> Result<IssuedRecord, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::credential("certificate", e))?;
    let (identity, kind) = match Caller::from_certificate(der) {
        Ok(caller) => (caller.to_uri(), "client"),
        Err(_) => match ServerIdentity::from_certificate(der) {
            Ok(server) => (server.to_uri(), "server"),
            Err(e) => return Err(Error::credential("certificate", e)),
        },
    };
    Ok(IssuedRecord {
        name: name.to_owned(),
        serial: hex_lower(strip_zeros(cert.raw_serial())),
        identity,
        kind: kind.to_owned(),
        not_before: rfc3339(cert.validity().not_before),
        not_after: rfc3339(cert.validity().not_after),
    })
}

/// Appends the certificate `der`, issued as `name`, to `dir`'s register
/// (creating it) and syncs it.
///
/// # Errors
/// [`Error::Credential`] for a certificate that does not parse;
/// [`Error::Io`].
pub fn record(dir: &Path, name: &str, der: &[u8]) -> Result<IssuedRecord, Error> {
    let entry = describe(name, der)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(ISSUED_FILE);
    let mut line =
        serde_json::to_string(&entry).map_err(|e| Error::credential("register entry", e))?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&path, e))?;
    Ok(entry)
}

/// Every certificate in `dir`'s register, in issuance order (none when the
/// register does not exist).
///
/// # Errors
/// [`Error::Io`]; [`Error::Credential`] for a line that does not parse.
pub fn read(dir: &Path) -> Result<Vec<IssuedRecord>, Error> {
    let path = dir.join(ISSUED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::credential(format!("{} line {}", path.display(), i + 1), e))
        })
        .collect()
}

/// The certificate issued last under `name`, if any.
///
/// # Errors
/// As [`read`].
pub fn latest(dir: &Path, name: &str) -> Result<Option<IssuedRecord>, Error> {
    Ok(read(dir)?.into_iter().rev().find(|r| r.name == name))
}
