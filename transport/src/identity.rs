//! Who is calling: roles, sites and caller names carried in client
//! certificates, and the [`Caller`] attached to every request.
//!
//! # Encoding in the certificate
//!
//! A Trustline client certificate (issued by `trustline pki issue`, see
//! [`crate::pki`]) carries exactly one subjectAltName URI of the form
//!
//! ```text
//! urn:trustline:caller:<role>:<site>:<name>
//! ```
//!
//! - `<role>` is one of `station`, `provisioner`, `auditor`, `operator`,
//!   `admin`, `site` ([`Role`]);
//! - `<site>` is the factory site a station belongs to (e.g. `site-a`); roles
//!   that are not tied to a site conventionally use `hq`;
//! - `<name>` names the caller within its site (e.g. `st-01`).
//!
//! Site and name are 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting
//! with a letter or digit, so the URI cannot be ambiguous and the caller id
//! `role/site/name` (used in logs, lockouts and the ledger's `actor` field)
//! cannot be forged by choosing a name with separators in it.
//!
//! Only the URI counts: the subject CN is informative. A certificate with no
//! such URI, or with more than one, names no caller, and every request on its
//! connection is refused with `UNAUTHENTICATED`. The certificate chain itself
//! has already been verified against the service CA by the TLS layer; the
//! absence of a verified certificate is never treated as "allow".
//!
//! Servers have identities of their own (issue 12.5): a server certificate
//! carries `urn:trustline:server:<site>:<name>` ([`ServerIdentity`]), no
//! caller URI and no clientAuth, so a server's key file can never call
//! another service (the TLS layer refuses a client certificate without
//! clientAuth, and a certificate without a caller URI names no caller).
//!
//! # In handlers
//!
//! The guard layer ([`crate::guard`]) authorizes every call against the role
//! table and puts the [`Authorized`] caller into the request extensions; a
//! handler reads it with [`authorized`] (or just the caller with [`caller`])
//! and scopes site-bound work with [`Authorized::scope`]. In-process callers
//! (the provisioner calling the CA and the ledger inside `trustline serve
//! all`) build their requests with [`internal_request`], which asks the same
//! table for the method, or go through [`crate::InProcessChannel`].

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tonic::Status;
use x509_parser::extensions::GeneralName;

use crate::authz::{self, Authorized};
use crate::Error;

mod server;

pub use server::{ServerIdentity, SERVER_URI_PREFIX};

/// The URI prefix that marks a caller identity in a subjectAltName.
pub const CALLER_URI_PREFIX: &str = "urn:trustline:caller:";

/// Longest site or name token.
const MAX_TOKEN_LEN: usize = 64;

/// What a caller is allowed to do is decided by its role (2.4.13.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A programming station on a factory line; acts only for its own site.
    Station,
    /// The provisioning service itself: the only caller of the CA and the
    /// only writer of the ledger.
    Provisioner,
    /// Read-only access to orders, the ledger and device state.
    Auditor,
    /// A device owner or service provider: ownership transfers, onboarding,
    /// field lifecycle.
    Operator,
    /// The OEM's administrators: orders, first transfers, lockouts.
    Admin,
    /// A factory site's uplink to the OEM hub: pushes its own site ledger's
    /// entries and checkpoints to the witness; acts only for its own site.
    Site,
}

impl Role {
    /// Every role, in the order tables print them.
    pub const ALL: [Role; 6] = [
        Role::Station,
        Role::Provisioner,
        Role::Auditor,
        Role::Operator,
        Role::Admin,
        Role::Site,
    ];

    /// The role's name as it appears in certificates and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Station => "station",
            Role::Provisioner => "provisioner",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Site => "site",
        }
    }

    /// Whether callers of this role may act only for their own site in
    /// site-scoped RPCs (see [`Authorized::scope`]).
    pub fn is_site_scoped(self) -> bool {
        matches!(self, Role::Station | Role::Site)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidIdentity(format!(
                    "unknown role {s:?} (expected one of station, provisioner, auditor, operator, admin, site)"
                ))
            })
    }
}

/// An authenticated caller: taken from a verified client certificate, or
/// stated by in-process code that calls a service directly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    role: Role,
    site: String,
    name: String,
}

impl Caller {
    /// A caller with a validated site and name.
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] when the site or name is not a valid token
    /// (1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit).
    pub fn new(role: Role, site: &str, name: &str) -> Result<Self, Error> {
        check_token("site", site)?;
        check_token("name", name)?;
        Ok(Self {
            role,
            site: site.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The caller's site.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The caller's name within its site.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The caller id `role/site/name`, e.g. `station/site-a/st-01`: the key
    /// for lockouts and rate limits and the ledger's `actor` field.
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// The subjectAltName URI that carries this caller in a certificate.
    pub fn to_uri(&self) -> String {
        format!(
            "{CALLER_URI_PREFIX}{}:{}:{}",
            self.role, self.site, self.name
        )
    }

    /// Parses a caller URI (`urn:trustline:caller:<role>:<site>:<name>`).
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] when the URI is not a well-formed caller URI.
    pub fn from_uri(uri: &str) -> Result<Self, Error> {
        let rest = uri
            .strip_prefix(CALLER_URI_PREFIX)
            .ok_or_else(|| Error::InvalidIdentity(format!("{uri:?} is not a caller URI")))?;
        let mut parts = rest.split(':');
        let (Some(role), Some(site), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::InvalidIdentity(format!(
                "{uri:?} does not have the form {CALLER_URI_PREFIX}<role>:<site>:<name>"
            )));
        };
        Caller::new(role.parse()?, site, name)
    }

    /// The caller named by a certificate chain (leaf first), as handed over by
    /// the TLS layer after it verified the chain against the service CA.
    ///
    /// # Errors
    /// [`Error::NoCaller`] when the chain is empty, the leaf does not parse,
    /// or the leaf carries no caller URI or more than one.
    pub fn from_verified_chain(chain: &[CertificateDer<'_>]) -> Result<Self, Error> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::NoCaller("no client certificate".into()))?;
        Caller::from_certificate(leaf)
    }

    /// The caller named by one certificate's subjectAltName.
    ///
    /// # Errors
    /// As [`Caller::from_verified_chain`].
    pub fn from_certificate(der: &[u8]) -> Result<Self, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::NoCaller(format!("certificate does not parse: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| Error::NoCaller(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| Error::NoCaller("no subjectAltName".into()))?;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(CALLER_URI_PREFIX) => Some(*u),
            _ => None,
        });
        let (Some(uri), None) = (found.next(), found.next()) else {
            return Err(Error::NoCaller(
                "exactly one caller URI is required in subjectAltName".into(),
            ));
        };
        Caller::from_uri(uri).map_err(|e| Error::NoCaller(e.to_string()))
    }
}

/// When a certificate stops being valid; `None` when it does not parse.
/// The server checks it on every request, so a connection outliving its
/// certificate is refused from then on.
pub(crate) fn not_after(der: &[u8]) -> Option<std::time::SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.role, self.site, self.name)
    }
}

pub(crate) fn check_token(what: &str, token: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let starts_ok = token
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if token.len() > MAX_TOKEN_LEN || !starts_ok || !token.chars().all(ok_char) {
        return Err(Error::InvalidIdentity(format!(
            "{what} {token:?} must be 1 to {MAX_TOKEN_LEN} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )));
    }
    Ok(())
}

/// The authorized caller of a request.
///
/// # Errors
/// `UNAUTHENTICATED` when the request carries no [`Authorized`] value: it
/// did not pass through the guard layer and was not built with
/// [`internal_request`]. A handler must refuse such a request, never treat
/// it as allowed.
pub fn authorized<T>(request: &tonic::Request<T>) -> Result<&Authorized, Status> {
    request
        .extensions()
        .get::<Authorized>()
        .ok_or_else(|| Status::unauthenticated("request carries no authorized caller"))
}

/// The authenticated caller of a request (of its [`Authorized`] value).
///
/// # Errors
/// As [`authorized`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    authorized(request).map(Authorized::caller)
}

/// A request from in-process code (e.g. the provisioner calling the CA inside
/// `trustline serve all`) that bypasses the network but not the role table:
/// `caller` is authorized for `method` (the fully-qualified gRPC path) by
/// [`authz::authorize`], and the [`Authorized`] value goes into the request,
/// so handlers see exactly what they would over mTLS.
///
/// Limits, deadlines and lockouts are the guard's; use
/// [`crate::InProcessChannel`] to have them too.
///
/// # Errors
/// `PERMISSION_DENIED` when the table does not allow `caller` to call
/// `method`; nothing is built.
pub fn internal_request<T>(
    message: T,
    caller: &Caller,
    method: &str,
) -> Result<tonic::Request<T>, Status> {
    let authorized = authz::authorize(caller, method)?;
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(authorized);
    Ok(request)
}

#[cfg(test)]
mod tests;
