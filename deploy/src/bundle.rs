//! The enrolment bundle: what the hub gives a site (`trustline hub
//! enroll-site --out FILE`, installed by `trustline site install --bundle
//! FILE`). One JSON file, written 0600:
//!
//! ```text
//! { "format": "trustline-site-bundle/1",
//!   "site", "origin", "organization",
//!   "root_pem", "intermediate_pem", "order_key_pem", "voucher_key_pem",
//!   "service_ca_pem", "crl_pem",
//!   "witness_name", "witness_verifier_key", "witness_public_key_pem",
//!   "credentials": [ { "name", "certificate_pem", "key_pem" }, … ] }
//! ```
//!
//! Everything in it is public except the credentials' private keys (the
//! site's TLS keys, made by the hub's service CA tooling): carry the file as
//! a secret and delete it once installed. No HSM key is ever in it.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format tag of a bundle.
pub const BUNDLE_FORMAT: &str = "trustline-site-bundle/1";

/// One service credential for the site.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The credential name (file stem under `<site>/pki/`).
    pub name: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The P-256 private key, PKCS#8 PEM (a secret).
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// See the module documentation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The site it is for.
    pub site: String,
    /// The checkpoint origin the hub registered for the site's ledger.
    pub origin: String,
    /// The OEM's organization name.
    pub organization: String,
    /// The OEM root certificate.
    pub root_pem: String,
    /// The site intermediate certificate the root signed.
    pub intermediate_pem: String,
    /// The OEM order key (public).
    pub order_key_pem: String,
    /// The OEM voucher key (public).
    pub voucher_key_pem: String,
    /// The service CA certificate.
    pub service_ca_pem: String,
    /// The service CA's current CRL.
    pub crl_pem: String,
    /// The witness's cosigner name.
    pub witness_name: String,
    /// The witness's signed-note verifier key.
    pub witness_verifier_key: String,
    /// The witness's public key, PEM.
    pub witness_public_key_pem: String,
    /// The site's service credentials.
    pub credentials: Vec<Credential>,
}

impl Bundle {
    /// Writes the bundle to a new file (mode 0600; an existing file is
    /// never overwritten).
    ///
    /// # Errors
    /// [`Error::Io`], e.g. when the file exists.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Refused(format!("bundle: {e}")))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, e))
    }

    /// Reads a bundle.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Refused`] for a file that is not a bundle of
    /// this format.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bundle: Bundle = serde_json::from_str(&text)
            .map_err(|e| Error::Refused(format!("{} is not a site bundle: {e}", path.display())))?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(Error::Refused(format!(
                "{}: format {:?}, expected {BUNDLE_FORMAT:?}",
                path.display(),
                bundle.format
            )));
        }
        Ok(bundle)
    }
}
