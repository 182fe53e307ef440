//! A site's first intermediate (issue 13, enrolment at the OEM hub): the
//! site makes the generation-1 key on its own token and a PKCS#10 request;
//! the root signs it where the root is ([`super::sign_intermediate_request`])
//! and the site installs it ([`super::install_intermediate`]).

use std::path::Path;

use super::files::{request_path, write_pem, INTERMEDIATE_CERT_FILE};
use super::profile::{check_name, intermediate_dn, rcgen_failure};
use super::rotation::{undo_key, IntermediateRequest, CSR_TAG};
use crate::hsm::{take_signer_failure, Hsm};
use crate::keys::KeyLabels;
use crate::Error;

/// Starts a site with no intermediate yet (enrolment at the OEM hub, issue
/// 13): makes the generation-1 key on the site token and a PKCS#10 request
/// for organization `organization`, site `site`, written under
/// `intermediates/`; the hub signs it with the root
/// ([`super::sign_intermediate_request`]) and the site installs the certificate
/// ([`super::install_intermediate`]) once the root certificate is in `ca_dir`.
///
/// # Errors
/// [`Error::AlreadyInitialized`] when the directory has an intermediate or
/// the key exists; naming, HSM, encoding and I/O errors; on any error the
/// new key is removed.
pub fn request_first_intermediate(
    hsm: &Hsm,
    ca_dir: &Path,
    organization: &str,
    site: &str,
    labels: &KeyLabels,
) -> Result<IntermediateRequest, Error> {
    take_signer_failure();
    check_name("organization", organization)?;
    check_name("site", site)?;
    let label = labels.intermediate_label(1);
    let mut existing = Vec::new();
    if hsm.key_exists(&label)? {
        existing.push(format!("key {label:?}"));
    }
    let active = ca_dir.join(INTERMEDIATE_CERT_FILE);
    if active.exists() {
        existing.push(format!("file {}", active.display()));
    }
    if !existing.is_empty() {
        return Err(Error::AlreadyInitialized { existing });
    }
    let key = hsm.generate_key(&label)?;
    let file = request_path(ca_dir, 1);
    let result = (|| {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = intermediate_dn(organization, site, 1);
        let csr = params
            .serialize_request(&key)
            .map_err(|e| rcgen_failure("the intermediate request", e))?;
        let der = csr.der().to_vec();
        write_pem(&file, CSR_TAG, &der)?;
        Ok(der)
    })();
    match result {
        Ok(csr_der) => {
            tracing::info!(label, site, "first site intermediate requested");
            Ok(IntermediateRequest {
                generation: 1,
                label,
                csr_der,
                file,
            })
        }
        Err(e) => {
            undo_key(hsm, &label);
            Err(e)
        }
    }
}
