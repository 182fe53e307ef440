//! FIDO Device Onboard 1.1: the device binds an FDO voucher header
//! (`OVHeader`) with its device secret (`DCHmacSecret`), giving the
//! voucher's `OVHeaderHMac` (`docs/device-protocol.md` §7.1). The secret is
//! made at personalisation from the die's entropy and never leaves the die.

use sha2::{Digest, Sha256};
use trustline_proto::fdo::{self, FdoHeader};
use trustline_proto::voucher::Voucher;

use super::SimulatedRot;
use crate::Error;

/// Largest `OVHeader` the die takes, in bytes.
pub const MAX_FDO_HEADER_LEN: usize = 4096;

impl SimulatedRot {
    /// HMAC-SHA256 with the device secret over `ov_header`, for a header
    /// that describes this die's stored certification: the GUID and
    /// manufacturer key of its stored voucher, the FDO hash of its stored
    /// chain. The die binds one header in its life; asking again for the
    /// same header gets the same HMAC (a station that lost the answer
    /// repeats the step).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or oversized header,
    /// [`Error::NotPersonalised`], [`Error::WrongCertification`] (not
    /// certified, another device's header, another header already bound),
    /// [`Error::Proto`] for a header that does not decode.
    pub fn fdo_header_hmac(&mut self, ov_header: &[u8]) -> Result<[u8; 32], Error> {
        if ov_header.is_empty() || ov_header.len() > MAX_FDO_HEADER_LEN {
            return Err(Error::InvalidInput(format!(
                "ov_header must be 1 to {MAX_FDO_HEADER_LEN} bytes"
            )));
        }
        self.identity()?;
        let secret = self
            .fdo_hmac_secret
            .as_ref()
            .ok_or(Error::NotPersonalised)?;
        let stored = self
            .voucher
            .as_deref()
            .ok_or_else(|| Error::WrongCertification("the device is not certified".to_owned()))?;
        let stored = Voucher::decode(stored)?;
        let header = FdoHeader::decode(ov_header)?;
        if header.guid != stored.header().guid
            || header.manufacturer_public_key != stored.header().manufacturer_public_key
        {
            return Err(Error::WrongCertification(
                "the fdo header names another voucher".to_owned(),
            ));
        }
        if header.cert_chain_sha256 != fdo::cert_chain_sha256(&self.certificate_chain) {
            return Err(Error::WrongCertification(
                "the fdo header names another certificate chain".to_owned(),
            ));
        }
        let digest: [u8; 32] = Sha256::digest(ov_header).into();
        if self.fdo_header_sha256.is_some_and(|bound| bound != digest) {
            return Err(Error::WrongCertification(
                "another fdo header is already bound".to_owned(),
            ));
        }
        let hmac = fdo::header_hmac(secret.as_ref(), ov_header);
        self.fdo_header_sha256 = Some(digest);
        Ok(hmac)
    }

    /// SHA-256 of the FDO header this die has bound, if any.
    pub fn fdo_header_sha256(&self) -> Option<[u8; 32]> {
        self.fdo_header_sha256
    }
}
