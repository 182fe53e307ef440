//! A server's identity in its certificate: `urn:trustline:server:<site>:<name>`
//! (issue 12.5). It names a listener (the CA, the ledger, the provisioner,
//! the hub), never a caller: a certificate carrying it has serverAuth only
//! and no caller URI, so the guard cannot read a role from it.

use std::fmt;

use x509_parser::extensions::GeneralName;

use super::check_token;
use crate::Error;

/// The URI prefix that marks a server identity in a subjectAltName.
pub const SERVER_URI_PREFIX: &str = "urn:trustline:server:";

/// Which server a certificate is for: the site it serves (`hq` for the OEM's
/// own servers) and its name there (`ca`, `ledger`, `provisioner`, `hub`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerIdentity {
    site: String,
    name: String,
}

impl ServerIdentity {
    /// A server identity with a validated site and name.
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] for a site or name that is not a token
    /// (the rules of [`super::Caller::new`]).
    pub fn new(site: &str, name: &str) -> Result<Self, Error> {
        check_token("site", site)?;
        check_token("name", name)?;
        Ok(Self {
            site: site.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The site it serves.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Its name within the site.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subjectAltName URI.
    pub fn to_uri(&self) -> String {
        format!("{SERVER_URI_PREFIX}{}:{}", self.site, self.name)
    }

    /// Parses a server URI.
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] when it is not `urn:trustline:server:<site>:<name>`.
    pub fn from_uri(uri: &str) -> Result<Self, Error> {
        let rest = uri
            .strip_prefix(SERVER_URI_PREFIX)
            .ok_or_else(|| Error::InvalidIdentity(format!("{uri:?} is not a server URI")))?;
        let mut parts = rest.split(':');
        let (Some(site), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidIdentity(format!(
                "{uri:?} does not have the form {SERVER_URI_PREFIX}<site>:<name>"
            )));
        };
        Self::new(site, name)
    }

    /// The server named by a certificate's subjectAltName.
    ///
    /// # Errors
    /// [`Error::InvalidIdentity`] when the certificate does not parse or
    /// carries no server URI, or more than one.
    pub fn from_certificate(der: &[u8]) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidIdentity(reason);
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| bad(format!("certificate does not parse: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| bad("no subjectAltName".into()))?;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(SERVER_URI_PREFIX) => Some(*u),
            _ => None,
        });
        let (Some(uri), None) = (found.next(), found.next()) else {
            return Err(bad(
                "exactly one server URI is required in subjectAltName".into()
            ));
        };
        Self::from_uri(uri)
    }
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server/{}/{}", self.site, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_uris_round_trip_and_are_not_caller_uris() {
        let id = ServerIdentity::new("site-a", "ca").expect("valid");
        assert_eq!(id.to_uri(), "urn:trustline:server:site-a:ca");
        assert_eq!(ServerIdentity::from_uri(&id.to_uri()).expect("parses"), id);
        assert!(crate::Caller::from_uri(&id.to_uri()).is_err());
        for bad in [
            "urn:trustline:server:site-a",
            "urn:trustline:server:site-a:ca:extra",
            "urn:trustline:caller:provisioner:hq:ca",
            "urn:trustline:server::ca",
        ] {
            assert!(ServerIdentity::from_uri(bad).is_err(), "{bad}");
        }
    }
}
