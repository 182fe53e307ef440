//! The service PKI: the service CA and the client and server certificates
//! that carry caller identities (2.4.13.25).
//!
//! Issuance is generic over rcgen's [`SigningKey`], so the binary passes the
//! HSM-backed service CA key (label `trustline-service-ca`, from
//! `ca_service`) and tests pass a software `rcgen::KeyPair`. Leaf keys are
//! P-256; [`issue_with_new_key`] makes a software key for callers that keep
//! keys in files (or pass a TPM/HSM key's public half to [`issue`]).
//!
//! Certificates:
//! - service CA: self-signed, `CA:TRUE, pathlen:0` (it signs leaves only),
//!   keyCertSign + cRLSign; it also signs the CRL ([`crate::revocation`]);
//! - client: subject CN = caller id (`role/site/name`, informative), SAN URI
//!   `urn:trustline:caller:<role>:<site>:<name>` (authoritative, see
//!   [`crate::identity`]), digitalSignature, EKU clientAuth only;
//! - server: subject CN = `server/site/name`, SAN URI
//!   `urn:trustline:server:<site>:<name>` ([`crate::identity::ServerIdentity`],
//!   no caller, no role), EKU serverAuth only, SAN DNS `localhost`, IP
//!   `127.0.0.1` and `::1` plus the names asked for (issue 12.5: a server's
//!   key file cannot call another service — servers refuse a client
//!   certificate without clientAuth, [`crate::tls`]).
//!
//! Every leaf has a 128-bit random serial. Client certificates are short
//! lived by default ([`DEFAULT_CLIENT_DAYS`]; `trustline pki renew` makes a
//! new one for the same identity), servers a little longer
//! ([`DEFAULT_SERVER_DAYS`]); every issuance is recorded in the PKI
//! directory's register ([`register`]) so that `trustline pki revoke NAME`
//! finds its serial.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::identity::{Caller, ServerIdentity};
use crate::tls::{CredentialPaths, SERVICE_CA_FILE};
use crate::Error;

pub mod register;

pub use register::{IssuedRecord, ISSUED_FILE};

/// The HSM label of the service CA key.
pub const SERVICE_CA_KEY_LABEL: &str = "trustline-service-ca";

/// The service PKI's directory inside a data directory (docs/operations.md).
pub const PKI_DIR: &str = "pki";

/// Default lifetime of a client certificate: short, so a stolen key file
/// stops working soon even if nobody revokes it (issue 12.7).
pub const DEFAULT_CLIENT_DAYS: u32 = 30;
/// Default lifetime of a server certificate.
pub const DEFAULT_SERVER_DAYS: u32 = 90;
/// Default lifetime of the service CA certificate.
pub const DEFAULT_SERVICE_CA_DAYS: u32 = 3650;

/// A validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: OffsetDateTime,
    /// Last instant the certificate is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From now (less five minutes, for clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateKind {
    /// A client: EKU clientAuth, the caller URI.
    Client,
    /// A server: EKU serverAuth only, the server URI
    /// `urn:trustline:server:<site>:<name>` made from the caller's site and
    /// name — the caller's role is not written, and the certificate cannot
    /// authenticate a client; SAN `localhost`, `127.0.0.1`, `::1` plus
    /// these.
    Server {
        /// Extra DNS names.
        dns_names: Vec<String>,
        /// Extra IP addresses.
        ip_addresses: Vec<IpAddr>,
    },
}

/// Everything about a leaf certificate except its keys.
#[derive(Debug, Clone)]
pub struct LeafParams {
    /// The identity it carries: a caller for a client certificate; for a
    /// server certificate its site and name make the server identity
    /// ([`LeafParams::server`]).
    pub caller: Caller,
    /// Client or server.
    pub kind: CertificateKind,
    /// When it is valid.
    pub validity: Validity,
}

impl LeafParams {
    /// The parameters of a server certificate for `server`.
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] never for a valid `server` (its tokens
    /// are already checked).
    pub fn server(
        server: &ServerIdentity,
        dns_names: Vec<String>,
        ip_addresses: Vec<IpAddr>,
        validity: Validity,
    ) -> Result<Self, Error> {
        // The role is not written into a server certificate (see
        // `CertificateKind::Server`); any role carries the site and name.
        Ok(Self {
            caller: Caller::new(crate::Role::Provisioner, server.site(), server.name())?,
            kind: CertificateKind::Server {
                dns_names,
                ip_addresses,
            },
            validity,
        })
    }

    /// The server identity a server certificate made from these
    /// parameters names (`None` for a client).
    pub fn server_identity(&self) -> Option<ServerIdentity> {
        match self.kind {
            CertificateKind::Client => None,
            CertificateKind::Server { .. } => {
                ServerIdentity::new(self.caller.site(), self.caller.name()).ok()
            }
        }
    }
}

/// Makes the self-signed service CA certificate for `key`.
///
/// # Errors
/// [`Error::Issue`] when rcgen or the key fails to sign.
pub fn service_ca_certificate<K: SigningKey>(
    key: &K,
    common_name: &str,
    validity: Validity,
) -> Result<CertificateDer<'static>, Error> {
    let params = ca_params(common_name, validity)?;
    let cert = params.self_signed(key).map_err(issue_error)?;
    Ok(cert.der().clone())
}

fn ca_params(common_name: &str, validity: Validity) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Issues a leaf certificate for `subject_key` under the service CA.
///
/// # Errors
/// [`Error::Credential`] when `ca_certificate` does not parse or was not made
/// for `ca_key`; [`Error::Issue`] when signing fails.
pub fn issue<K: SigningKey>(
    ca_certificate: &CertificateDer<'_>,
    ca_key: &K,
    subject_key: &impl PublicKeyData,
    params: &LeafParams,
) -> Result<CertificateDer<'static>, Error> {
    check_ca_matches_key(ca_certificate, ca_key)?;
    let issuer = Issuer::from_ca_cert_der(ca_certificate, ca_key)
        .map_err(|e| Error::credential("service CA certificate", e))?;
    let mut cert = CertificateParams::default();
    cert.is_ca = IsCa::ExplicitNoCa;
    cert.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    cert.use_authority_key_identifier_extension = true;
    cert.not_before = params.validity.not_before;
    cert.not_after = params.validity.not_after;
    cert.serial_number = Some(random_serial()?);
    let uri_san = |uri: String| -> Result<SanType, Error> {
        uri.try_into()
            .map(SanType::URI)
            .map_err(|e| Error::InvalidIdentity(format!("identity URI: {e}")))
    };
    match &params.kind {
        CertificateKind::Client => {
            cert.distinguished_name = distinguished_name(&params.caller.id());
            cert.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            cert.subject_alt_names = vec![uri_san(params.caller.to_uri())?];
        }
        CertificateKind::Server {
            dns_names,
            ip_addresses,
        } => {
            let server = ServerIdentity::new(params.caller.site(), params.caller.name())?;
            cert.distinguished_name = distinguished_name(&server.to_string());
            cert.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            cert.subject_alt_names = vec![uri_san(server.to_uri())?];
            let mut dns = vec!["localhost".to_owned()];
            dns.extend(
                dns_names
                    .iter()
                    .filter(|n| n.as_str() != "localhost")
                    .cloned(),
            );
            for name in dns {
                let name = name
                    .clone()
                    .try_into()
                    .map_err(|e| Error::InvalidIdentity(format!("DNS name {name:?}: {e}")))?;
                cert.subject_alt_names.push(SanType::DnsName(name));
            }
            let mut ips = vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            ips.extend(ip_addresses.iter().filter(|ip| !ip.is_loopback()));
            cert.subject_alt_names
                .extend(ips.into_iter().map(SanType::IpAddress));
        }
    }
    let cert = cert.signed_by(subject_key, &issuer).map_err(issue_error)?;
    Ok(cert.der().clone())
}

/// A certificate and the software private key it was issued for.
pub struct IssuedCredentials {
    /// The leaf certificate, PEM.
    pub certificate_pem: String,
    /// The P-256 private key, PKCS#8 PEM; zeroized on drop.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

/// Makes a fresh P-256 software key and issues a certificate for it.
///
/// # Errors
/// As [`issue`]; [`Error::Issue`] when key generation fails.
pub fn issue_with_new_key<K: SigningKey>(
    ca_certificate: &CertificateDer<'_>,
    ca_key: &K,
    params: &LeafParams,
) -> Result<IssuedCredentials, Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue_error)?;
    let der = issue(ca_certificate, ca_key, &key, params)?;
    Ok(IssuedCredentials {
        certificate_pem: to_pem(&der),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// PEM text of one certificate.
pub fn to_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Reads the service CA certificate (the first PEM `CERTIFICATE` block).
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Credential`] when it holds no
/// certificate.
pub fn read_ca_certificate(path: &Path) -> Result<CertificateDer<'static>, Error> {
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    CertificateDer::from_pem_slice(&bytes)
        .map_err(|e| Error::credential(format!("service CA {}", path.display()), e))
}

/// Writes the service CA certificate as `dir/service-ca.pem`, creating `dir`.
///
/// # Errors
/// [`Error::Io`] when the directory or file cannot be written.
pub fn write_ca_certificate(
    dir: &Path,
    ca_certificate: &CertificateDer<'_>,
) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(SERVICE_CA_FILE);
    write_file(&path, to_pem(ca_certificate).as_bytes(), 0o644, true)?;
    Ok(path)
}

/// Writes `dir/<name>.pem`, `dir/<name>.key` (mode 0600) and
/// `dir/service-ca.pem`. An existing certificate or key is never
/// overwritten.
///
/// # Errors
/// [`Error::Io`], e.g. `AlreadyExists` for an existing certificate or key.
pub fn write_credentials(
    dir: &Path,
    name: &str,
    issued: &IssuedCredentials,
    ca_certificate: &CertificateDer<'_>,
) -> Result<CredentialPaths, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let paths = CredentialPaths::in_dir(dir, name);
    write_file(&paths.key, issued.key_pem.as_bytes(), 0o600, false)?;
    write_file(
        &paths.certificate,
        issued.certificate_pem.as_bytes(),
        0o644,
        false,
    )?;
    write_file(&paths.ca, to_pem(ca_certificate).as_bytes(), 0o644, true)?;
    Ok(paths)
}

/// Replaces `dir/<name>.pem` and `dir/<name>.key` with a renewed
/// credential (`trustline pki renew`): the old certificate is kept as
/// `dir/retired/<name>-<serial>.pem` (so it can still be revoked by file),
/// then the new key and certificate are written through temporary files
/// and renamed into place, the key first.
///
/// # Errors
/// [`Error::Io`].
pub fn replace_credentials(
    dir: &Path,
    name: &str,
    issued: &IssuedCredentials,
    ca_certificate: &CertificateDer<'_>,
) -> Result<CredentialPaths, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let paths = CredentialPaths::in_dir(dir, name);
    if let Ok(old) = std::fs::read(&paths.certificate) {
        let serial = pem::parse(&old)
            .ok()
            .and_then(|b| register::serial_hex(b.contents()).ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let retired = dir.join(register::RETIRED_DIR);
        std::fs::create_dir_all(&retired).map_err(|e| Error::io(&retired, e))?;
        let keep = retired.join(format!("{name}-{serial}.pem"));
        write_file(&keep, &old, 0o644, true)?;
    }
    for (path, bytes, mode) in [
        (&paths.key, issued.key_pem.as_bytes(), 0o600),
        (&paths.certificate, issued.certificate_pem.as_bytes(), 0o644),
    ] {
        let tmp = path.with_extension("renew.tmp");
        let _ = std::fs::remove_file(&tmp);
        write_file(&tmp, bytes, mode, false)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    }
    write_file(&paths.ca, to_pem(ca_certificate).as_bytes(), 0o644, true)?;
    Ok(paths)
}

pub(crate) fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Trustline");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Issue("no randomness for a serial number".into()))?;
    // Positive and exactly 16 bytes long once DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn check_ca_matches_key<K: SigningKey>(ca: &CertificateDer<'_>, key: &K) -> Result<(), Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(ca)
        .map_err(|e| Error::credential("service CA certificate", e))?;
    if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(Error::credential(
            "service CA certificate",
            "was not made for this CA key",
        ));
    }
    Ok(())
}

fn issue_error(e: rcgen::Error) -> Error {
    Error::Issue(e.to_string())
}
