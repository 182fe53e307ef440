//! Certificate revocation lists, signed by the active site intermediate in
//! the HSM (2.4.14.24).

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use super::profile::rcgen_failure;
use super::Ca;
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

impl Ca {
    /// Signs a CRL with the intermediate key listing `request.revoked`
    /// (2.4.14.24).
    ///
    /// # Errors
    /// [`Error::InvalidCrlRequest`] for inconsistent times or bad serials;
    /// the HSM error behind a failed signature.
    pub fn sign_crl(&self, request: &CrlRequest) -> Result<Vec<u8>, Error> {
        take_signer_failure();
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
        let params = CertificateRevocationListParams {
            this_update: request.this_update,
            next_update: request.next_update,
            crl_number: SerialNumber::from(request.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.intermediate_key_id.clone()),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| rcgen_failure("the CRL", e))?;
        Ok(crl.der().to_vec())
    }
}
