//! Certificate revocation lists, signed in the HSM by the site intermediate
//! that issued the revoked devices (2.4.14.24).

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::files::{intermediate_path, read_certificate};
use super::profile::rcgen_failure;
use super::{subject_key_id, Ca};
use crate::hsm::take_signer_failure;
use crate::Error;

/// Largest number of entries in one CRL request.
pub const MAX_CRL_ENTRIES: usize = 1_000_000;

/// One revoked certificate in a CRL request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// The certificate's serial number bytes (big-endian, 1 to 20 bytes).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// What a CRL lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRequest {
    /// The revoked certificates.
    pub revoked: Vec<RevokedSerial>,
    /// The monotonic CRL number.
    pub crl_number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate (after thisUpdate).
    pub next_update: OffsetDateTime,
}

/// Checks a CRL request and turns it into rcgen's parameters.
pub(super) fn crl_params(
    request: &CrlRequest,
    key_id: &[u8],
) -> Result<CertificateRevocationListParams, Error> {
    let invalid = |reason: String| Error::InvalidCrlRequest { reason };
    if request.next_update <= request.this_update {
        return Err(invalid("next_update must be after this_update".to_owned()));
    }
    if request.revoked.len() > MAX_CRL_ENTRIES {
        return Err(invalid(format!(
            "{} entries, more than {MAX_CRL_ENTRIES}",
            request.revoked.len()
        )));
    }
    let mut revoked_certs = Vec::with_capacity(request.revoked.len());
    for (i, r) in request.revoked.iter().enumerate() {
        if r.serial.is_empty() || r.serial.len() > 20 || r.serial.iter().all(|b| *b == 0) {
            return Err(invalid(format!(
                "entry {i}: a serial must be 1 to 20 bytes and not zero"
            )));
        }
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&r.serial),
            revocation_time: r.revoked_at.replace_nanosecond(0).unwrap_or(r.revoked_at),
            reason_code: None,
            invalidity_date: None,
        });
    }
    Ok(CertificateRevocationListParams {
        this_update: request.this_update,
        next_update: request.next_update,
        crl_number: SerialNumber::from(request.crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::PreSpecified(key_id.to_vec()),
    })
}

impl Ca {
    /// Signs a CRL with the active intermediate key listing
    /// `request.revoked` (2.4.14.24). Devices issued under an earlier
    /// generation are revoked by that generation's CRL
    /// ([`Ca::sign_crl_for_generation`]).
    ///
    /// # Errors
    /// [`Error::InvalidCrlRequest`] for inconsistent times or bad serials;
    /// the HSM error behind a failed signature.
    pub fn sign_crl(&self, request: &CrlRequest) -> Result<Vec<u8>, Error> {
        take_signer_failure();
        let params = crl_params(request, &self.intermediate_key_id)?;
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| rcgen_failure("the CRL", e))?;
        Ok(crl.der().to_vec())
    }

    /// Signs a CRL as the site intermediate of `generation` (its archived
    /// certificate and its key, which stays on the token after a rotation):
    /// a verifier checks a device against the CRL of the intermediate that
    /// issued it, so after a rotation each generation with revoked devices
    /// needs its own CRL (2.4.14.24).
    ///
    /// # Errors
    /// [`Error::NotInitialized`] when the generation is not in the archive;
    /// [`Error::KeyNotFound`] when its key is gone;
    /// [`Error::CertificateKeyMismatch`]; then as [`Ca::sign_crl`].
    pub fn sign_crl_for_generation(
        &self,
        generation: u32,
        request: &CrlRequest,
    ) -> Result<Vec<u8>, Error> {
        if generation == self.generation {
            return self.sign_crl(request);
        }
        take_signer_failure();
        let der = read_certificate(&intermediate_path(&self.ca_dir, generation))?;
        let label = self.labels.intermediate_label(generation);
        let signer = self.hsm.signer(&label)?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).map_err(|e| {
            Error::NotInitialized {
                reason: format!("intermediate generation {generation} does not parse: {e}"),
            }
        })?;
        if cert.public_key().raw != signer.public_key_spki() {
            return Err(Error::CertificateKeyMismatch {
                role: "site intermediate",
                label,
            });
        }
        let key_id = subject_key_id(&cert).ok_or_else(|| Error::NotInitialized {
            reason: format!("intermediate generation {generation} has no subject key identifier"),
        })?;
        let params = crl_params(request, &key_id)?;
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), &signer)
            .map_err(|e| rcgen_failure("the CRL issuer", e))?;
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| rcgen_failure("the CRL", e))?;
        Ok(crl.der().to_vec())
    }
}
