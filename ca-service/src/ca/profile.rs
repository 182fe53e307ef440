//! The certificate profile (DESIGN.md "Identity", IEEE 802.1AR IDevID
//! style): names, validity, serials and extensions of the root, the site
//! intermediates and device certificates.
//!
//! - OEM root: self-signed, `CA:true, pathlen:1`, keyCertSign + cRLSign, SKI;
//! - site intermediate: signed by the root, `CA:true, pathlen:0`,
//!   keyCertSign + cRLSign, SKI + AKI; subject O = the OEM, OU = the site,
//!   CN = "`<O>` `<site>` Intermediate CA" (generation 1) or "... CA G`<n>`"
//!   (later generations, so that two intermediates of one site never share
//!   a name);
//! - device: signed by the intermediate, X.509 v3, 128-bit random positive
//!   serial, subject O = the intermediate's O, CN = serialNumber = product
//!   serial, SAN URI `urn:trustline:rot:<rot_id>`, keyUsage
//!   digitalSignature (critical), `CA:false` (critical), SKI + AKI,
//!   notBefore = issuance, notAfter = 99991231235959Z (GeneralizedTime: an
//!   IDevID lives as long as the device, 802.1AR §8.5). CA certificates get
//!   the same notAfter so that a chain never outlives its anchor.

use rand::RngCore;
use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::hsm::take_signer_failure;
use crate::request::VerifiedRequest;
use crate::Error;

/// The SAN URI prefix naming a device's RoT.
pub const ROT_URI_PREFIX: &str = "urn:trustline:rot:";

/// 802.1AR's "no well-defined expiration": 9999-12-31 23:59:59 UTC.
pub fn idevid_not_after() -> OffsetDateTime {
    time::macros::datetime!(9999-12-31 23:59:59 UTC)
}

pub(super) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// 16 random bytes with a non-zero first byte: a positive 128-bit serial
/// whose DER encoding never loses a leading byte.
pub(super) fn random_serial() -> [u8; 16] {
    let mut rng = rand::thread_rng();
    let mut serial = [0u8; 16];
    loop {
        rng.fill_bytes(&mut serial);
        if serial[0] != 0 {
            return serial;
        }
    }
}

/// The precise error behind an rcgen failure (an HSM signature that failed
/// through rcgen's opaque `RemoteKeyError`), else an encoding error.
pub(super) fn rcgen_failure(what: &'static str, e: rcgen::Error) -> Error {
    if matches!(e, rcgen::Error::RemoteKeyError) {
        if let Some(hsm_error) = take_signer_failure() {
            return hsm_error;
        }
    }
    Error::Encoding {
        what,
        reason: e.to_string(),
    }
}

pub(super) fn check_name(what: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() || value.len() > 64 || value.chars().any(char::is_control) {
        return Err(Error::Encoding {
            what: "CA names",
            reason: format!("the {what} must be 1 to 64 printable characters"),
        });
    }
    Ok(())
}

/// Parameters of a CA certificate.
pub(super) fn ca_params(
    dn: DistinguishedName,
    path_len: u8,
    issued_by_other: bool,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = now();
    params.not_after = idevid_not_after();
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = issued_by_other;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

/// The root's subject.
pub(super) fn root_dn(organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, format!("{organization} Root CA"));
    dn
}

/// A site intermediate's subject for `generation`.
pub(super) fn intermediate_dn(
    organization: &str,
    site: &str,
    generation: u32,
) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::OrganizationalUnitName, site);
    let cn = if generation <= 1 {
        format!("{organization} {site} Intermediate CA")
    } else {
        format!("{organization} {site} Intermediate CA G{generation}")
    };
    dn.push(DnType::CommonName, cn);
    dn
}

/// The parameters of a device certificate for `request` (2.4.8.18).
pub(super) fn device_params(
    organization: &str,
    request: &VerifiedRequest,
    serial: &[u8; 16],
) -> Result<CertificateParams, Error> {
    let printable = PrintableString::try_from(request.product_serial()).map_err(|e| {
        Error::InvalidProductSerial {
            reason: e.to_string(),
        }
    })?;
    let mut dn = DistinguishedName::new();
    if !organization.is_empty() {
        dn.push(DnType::OrganizationName, organization);
    }
    dn.push(
        DnType::CommonName,
        DnValue::PrintableString(printable.clone()),
    );
    // id-at-serialNumber (2.5.4.5), PrintableString.
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        DnValue::PrintableString(printable),
    );
    let uri = rcgen::string::Ia5String::try_from(format!("{ROT_URI_PREFIX}{}", request.rot_id()))
        .map_err(|e| Error::InvalidRotId {
        rot_id: e.to_string(),
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = now();
    params.not_after = idevid_not_after();
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}

/// A P-256 subject public key as rcgen wants it: the uncompressed point.
pub(super) struct SubjectPoint(pub(super) Vec<u8>);

impl rcgen::PublicKeyData for SubjectPoint {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}
