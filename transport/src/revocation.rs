//! Revoking client certificates (issue 12.7): a CRL signed by the service
//! CA in `<data>/pki/crl.pem`, written by `trustline pki revoke`, and the
//! live view every server keeps of it ([`Revocations`]).
//!
//! - [`revoke`] reads the current CRL (verified), adds serials, bumps the
//!   CRL number and writes the new one atomically (temporary file, fsync,
//!   rename); [`write_empty_crl`] starts one. The service CA key may be in
//!   the HSM: signing is generic over rcgen's `SigningKey`.
//! - [`Crl::verify`] accepts only a CRL issued and signed by the service
//!   CA. Servers never trust an unsigned list, never go back to a lower CRL
//!   number, and never accept a new CRL that drops a serial the current one
//!   lists: a replaced or rolled-back file is refused and the current list
//!   kept.
//! - A CRL past its nextUpdate still counts (it lists what was revoked);
//!   servers log that it is stale. Revoking again, or `trustline pki crl`,
//!   writes a fresh one.

use std::path::Path;

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber, SigningKey,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::pki::register::{hex_lower, strip_zeros};
use crate::pki::write_file;
use crate::Error;

mod live;

pub use live::Revocations;

/// The CRL's file name inside a PKI directory.
pub const CRL_FILE: &str = "crl.pem";
/// How long a CRL says it is current (its nextUpdate after thisUpdate).
pub const CRL_DAYS: i64 = 30;
const CRL_TAG: &str = "X509 CRL";

/// Why a certificate was revoked (RFC 5280 CRLReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No reason given.
    Unspecified,
    /// Its private key was, or may have been, compromised.
    KeyCompromise,
    /// The holder moved (e.g. a station to another site).
    AffiliationChanged,
    /// A renewed certificate replaces it.
    Superseded,
    /// The holder is retired.
    CessationOfOperation,
}

impl Reason {
    fn to_rcgen(self) -> RevocationReason {
        match self {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Reason::Unspecified,
            1 => Reason::KeyCompromise,
            3 => Reason::AffiliationChanged,
            4 => Reason::Superseded,
            5 => Reason::CessationOfOperation,
            _ => return None,
        })
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Its serial, lowercase hex without leading zero bytes.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why, if the CRL says.
    pub reason: Option<Reason>,
}

/// A CRL that verified under the service CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// The CRL number (grows with every new CRL).
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate, if given.
    pub next_update: Option<OffsetDateTime>,
    /// The revoked certificates.
    pub revoked: Vec<RevokedEntry>,
    /// The CRL, DER.
    pub der: Vec<u8>,
}

fn bad(what: &str, reason: impl ToString) -> Error {
    Error::credential(what, reason)
}

impl Crl {
    /// Parses `der` and checks that the service CA `ca` issued and signed it.
    ///
    /// # Errors
    /// [`Error::Credential`] for anything that does not hold.
    pub fn verify(der: &[u8], ca: &CertificateDer<'_>) -> Result<Self, Error> {
        let (_, ca_cert) =
            x509_parser::parse_x509_certificate(ca).map_err(|e| bad("service CA", e))?;
        let (rest, crl) = CertificateRevocationList::from_der(der).map_err(|e| bad("CRL", e))?;
        if !rest.is_empty() {
            return Err(bad("CRL", "trailing bytes"));
        }
        if crl.issuer().as_raw() != ca_cert.subject().as_raw() {
            return Err(bad("CRL", "not issued by the service CA"));
        }
        crl.verify_signature(ca_cert.public_key())
            .map_err(|e| bad("CRL", format!("signature does not verify: {e}")))?;
        let number = crl
            .crl_number()
            .ok_or_else(|| bad("CRL", "no CRL number"))?
            .to_bytes_be();
        if number.len() > 8 {
            return Err(bad("CRL", "CRL number too large"));
        }
        let number = number.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| RevokedEntry {
                serial: hex_lower(strip_zeros(r.raw_serial())),
                revoked_at: r.revocation_date.to_datetime(),
                reason: r.reason_code().and_then(|(_, c)| Reason::from_code(c.0)),
            })
            .collect();
        Ok(Self {
            number,
            this_update: crl.last_update().to_datetime(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            revoked,
            der: der.to_vec(),
        })
    }

    /// Whether the certificate with serial `serial` (big-endian bytes) is
    /// revoked.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let serial = hex_lower(strip_zeros(serial));
        self.revoked.iter().any(|r| r.serial == serial)
    }

    /// Whether its nextUpdate has passed.
    pub fn is_stale(&self, now: OffsetDateTime) -> bool {
        self.next_update.is_some_and(|t| t < now)
    }

    /// The CRL as PEM.
    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new(CRL_TAG, self.der.clone()))
    }
}

/// Reads and verifies the CRL at `path`.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Credential`] when it is not a
/// PEM CRL of the service CA.
pub fn read_crl(path: &Path, ca: &CertificateDer<'_>) -> Result<Crl, Error> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let block = pem::parse(&text).map_err(|e| bad(&path.display().to_string(), e))?;
    if block.tag() != CRL_TAG {
        return Err(bad(
            &path.display().to_string(),
            format!("expected an {CRL_TAG} PEM block, found {}", block.tag()),
        ));
    }
    Crl::verify(block.contents(), ca)
}

/// A certificate to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    /// Its serial, big-endian bytes.
    pub serial: Vec<u8>,
    /// Why.
    pub reason: Reason,
}

fn subject_key_id(ca: &CertificateDer<'_>) -> Result<Vec<u8>, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca).map_err(|e| bad("service CA", e))?;
    let id = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(id.0.to_vec())
            }
            _ => None,
        });
    id.ok_or_else(|| bad("service CA", "no subject key identifier"))
}

/// Signs a CRL numbered `number` listing `revoked` (earlier entries keep
/// their time and reason) with the service CA key.
fn sign<K: SigningKey>(
    ca: &CertificateDer<'_>,
    key: &K,
    number: u64,
    revoked: &[(Vec<u8>, OffsetDateTime, Option<Reason>)],
) -> Result<Crl, Error> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(CRL_DAYS),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|(serial, at, reason)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: *at,
                reason_code: reason.map(Reason::to_rcgen),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(subject_key_id(ca)?),
    };
    let issuer = Issuer::from_ca_cert_der(ca, key).map_err(|e| bad("service CA", e))?;
    let crl = params
        .signed_by(&issuer)
        .map_err(|e| Error::Issue(format!("the CRL: {e}")))?;
    Crl::verify(crl.der(), ca)
}

fn write(path: &Path, crl: &Crl) -> Result<(), Error> {
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, crl.pem().as_bytes(), 0o644, false)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes an empty CRL (number 1) to `pki_dir/crl.pem` unless one exists;
/// returns the CRL in force.
///
/// # Errors
/// [`Error::Credential`] when an existing CRL does not verify; signing and
/// I/O errors.
pub fn write_empty_crl<K: SigningKey>(
    pki_dir: &Path,
    ca: &CertificateDer<'_>,
    key: &K,
) -> Result<Crl, Error> {
    let path = pki_dir.join(CRL_FILE);
    if path.exists() {
        return read_crl(&path, ca);
    }
    std::fs::create_dir_all(pki_dir).map_err(|e| Error::io(pki_dir, e))?;
    let crl = sign(ca, key, 1, &[])?;
    write(&path, &crl)?;
    Ok(crl)
}

/// Adds `revoke` to the CRL in `pki_dir` (serials already listed keep their
/// entry), signs it with the next CRL number and replaces the file
/// atomically. With nothing new to add it still re-signs, which refreshes
/// thisUpdate and nextUpdate. Returns the new CRL.
///
/// # Errors
/// [`Error::Credential`] when the current CRL does not verify (nothing is
/// written); signing and I/O errors.
pub fn revoke<K: SigningKey>(
    pki_dir: &Path,
    ca: &CertificateDer<'_>,
    key: &K,
    revoke: &[Revoke],
) -> Result<Crl, Error> {
    let path = pki_dir.join(CRL_FILE);
    let current = if path.exists() {
        Some(read_crl(&path, ca)?)
    } else {
        None
    };
    let mut entries: Vec<(Vec<u8>, OffsetDateTime, Option<Reason>)> = Vec::new();
    if let Some(crl) = &current {
        for r in &crl.revoked {
            let serial = hex_to_bytes(&r.serial)?;
            entries.push((serial, r.revoked_at, r.reason));
        }
    }
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    for r in revoke {
        let serial = strip_zeros(&r.serial).to_vec();
        if serial.is_empty() || serial.len() > 20 || serial.iter().all(|b| *b == 0) {
            return Err(bad("serial", "must be 1 to 20 bytes and not zero"));
        }
        if !entries.iter().any(|(s, _, _)| *s == serial) {
            entries.push((serial, now, Some(r.reason)));
        }
    }
    let number = current.as_ref().map_or(1, |c| c.number + 1);
    std::fs::create_dir_all(pki_dir).map_err(|e| Error::io(pki_dir, e))?;
    let crl = sign(ca, key, number, &entries)?;
    write(&path, &crl)?;
    Ok(crl)
}

/// Installs a CRL received from elsewhere (the hub's service CA, at a site)
/// as `pki_dir/crl.pem`: it must verify under the service CA, carry a CRL
/// number above the installed one's and list every serial the installed
/// one lists.
///
/// # Errors
/// [`Error::Credential`] for a CRL that fails any of these; I/O errors.
pub fn install_crl(pki_dir: &Path, ca: &CertificateDer<'_>, der: &[u8]) -> Result<Crl, Error> {
    let new = Crl::verify(der, ca)?;
    let path = pki_dir.join(CRL_FILE);
    if path.exists() {
        let current = read_crl(&path, ca)?;
        live::check_successor(&current, &new).map_err(|reason| bad("CRL", reason))?;
    }
    std::fs::create_dir_all(pki_dir).map_err(|e| Error::io(pki_dir, e))?;
    write(&path, &new)?;
    Ok(new)
}

/// Decodes a lowercase or uppercase hex serial.
///
/// # Errors
/// [`Error::Credential`] when it is not hex.
pub fn hex_to_bytes(hex: &str) -> Result<Vec<u8>, Error> {
    let hex = hex.trim().trim_start_matches("0x");
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad(
            "serial",
            format!("{hex:?} is not an even number of hex digits"),
        ));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| bad("serial", e)))
        .collect()
}

#[cfg(test)]
mod tests;
