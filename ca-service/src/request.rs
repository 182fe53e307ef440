//! What a device certificate request must prove before the CA signs it.
//!
//! Parse, don't validate: [`DeviceCertificateRequest::verify`] turns the
//! untrusted request into a [`VerifiedRequest`] — a product serial that fits
//! the subject's serialNumber, a well-formed `rot_id`, and a P-256 device key
//! whose holder proved possession — and only a [`VerifiedRequest`] can be
//! issued. Possession is proved either by a `ProofOfPossession` statement
//! signed by the key and naming the same key, serial and RoT, or by a PKCS#10
//! CSR (size-limited, P-256 only, ecdsa-with-SHA256, self-signature checked).
//! The statement's `challenge` (the claim nonce) is checked by the
//! provisioner, which owns the claim session; the CA checks the signature
//! and the names.

use trustline_proto::identity::is_well_formed_rot_id;
use trustline_proto::statement::{self, parse_p256_spki};
use trustline_proto::v1;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::FromDer;

use crate::Error;

/// Largest PKCS#10 CSR accepted, in bytes; refused before parsing.
pub const MAX_CSR_LEN: usize = 4096;
/// Largest product serial (X.520 ub-serial-number).
pub const MAX_PRODUCT_SERIAL_LEN: usize = 64;

/// How the requester proves it holds the device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKey {
    /// A P-256 SubjectPublicKeyInfo and a `ProofOfPossession` signed by it.
    Possessed {
        /// SubjectPublicKeyInfo DER.
        public_key: Vec<u8>,
        /// The signed `ProofOfPossession`.
        proof: v1::SignedStatement,
    },
    /// A PKCS#10 CSR, DER.
    Csr(Vec<u8>),
}

/// An untrusted request for a device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificateRequest {
    /// The product serial, for the subject's serialNumber attribute.
    pub product_serial: String,
    /// The device RoT's id, for the SAN URI.
    pub rot_id: String,
    /// The device key and its proof of possession.
    pub subject_key: SubjectKey,
}

/// A request whose every field has been checked; the only input to
/// issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    product_serial: String,
    rot_id: String,
    public_key: p256::PublicKey,
}

impl VerifiedRequest {
    /// The product serial.
    pub fn product_serial(&self) -> &str {
        &self.product_serial
    }

    /// The RoT id.
    pub fn rot_id(&self) -> &str {
        &self.rot_id
    }

    /// The device public key.
    pub fn public_key(&self) -> &p256::PublicKey {
        &self.public_key
    }
}

impl DeviceCertificateRequest {
    /// Checks the request.
    ///
    /// # Errors
    /// [`Error::InvalidProductSerial`], [`Error::InvalidRotId`],
    /// [`Error::InvalidPublicKey`], [`Error::ProofOfPossession`], or for a
    /// CSR [`Error::CsrTooLarge`], [`Error::CsrMalformed`],
    /// [`Error::CsrUnsupportedKey`], [`Error::CsrUnsupportedSignature`],
    /// [`Error::CsrBadSignature`].
    pub fn verify(&self) -> Result<VerifiedRequest, Error> {
        check_product_serial(&self.product_serial)?;
        check_rot_id(&self.rot_id)?;
        let public_key = match &self.subject_key {
            SubjectKey::Possessed { public_key, proof } => {
                verify_possession(public_key, proof, &self.product_serial, &self.rot_id)?
            }
            SubjectKey::Csr(der) => verify_csr(der)?,
        };
        Ok(VerifiedRequest {
            product_serial: self.product_serial.clone(),
            rot_id: self.rot_id.clone(),
            public_key,
        })
    }
}

/// Checks that `serial` can be the subject's serialNumber: 1 to 64
/// characters of the PrintableString alphabet.
///
/// # Errors
/// [`Error::InvalidProductSerial`].
pub fn check_product_serial(serial: &str) -> Result<(), Error> {
    let fail = |reason: String| Error::InvalidProductSerial { reason };
    if serial.is_empty() {
        return Err(fail("it is empty".to_owned()));
    }
    if serial.len() > MAX_PRODUCT_SERIAL_LEN {
        return Err(fail(format!(
            "{} characters, more than {MAX_PRODUCT_SERIAL_LEN}",
            serial.len()
        )));
    }
    if let Some(c) = serial.chars().find(|c| !is_printable(*c)) {
        return Err(fail(format!(
            "character {c:?} is not allowed (letters, digits, space and '()+,-./:=? only)"
        )));
    }
    Ok(())
}

fn is_printable(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

fn check_rot_id(rot_id: &str) -> Result<(), Error> {
    if is_well_formed_rot_id(rot_id) {
        return Ok(());
    }
    Err(Error::InvalidRotId {
        rot_id: rot_id.chars().take(80).collect(),
    })
}

fn verify_possession(
    public_key: &[u8],
    proof: &v1::SignedStatement,
    serial: &str,
    rot_id: &str,
) -> Result<p256::PublicKey, Error> {
    let key = parse_p256_spki(public_key).map_err(|e| Error::InvalidPublicKey {
        what: "device public key",
        reason: e.to_string(),
    })?;
    let pop: v1::ProofOfPossession = statement::verify(proof, public_key).map_err(|e| match e {
        trustline_proto::Error::BadSignature(_) => Error::ProofOfPossession {
            reason: "its signature does not verify with the device public key".to_owned(),
        },
        other => Error::ProofOfPossession {
            reason: other.to_string(),
        },
    })?;
    if pop.device_public_key != public_key {
        return Err(Error::ProofOfPossession {
            reason: "it names a different device public key".to_owned(),
        });
    }
    if pop.serial != serial {
        return Err(Error::ProofOfPossession {
            reason: format!("it names serial {:?}, not {serial:?}", pop.serial),
        });
    }
    if pop.rot_id != rot_id {
        return Err(Error::ProofOfPossession {
            reason: format!("it names rot_id {:?}, not {rot_id:?}", pop.rot_id),
        });
    }
    Ok(key)
}

/// Checks a PKCS#10 CSR and returns its P-256 key.
///
/// # Errors
/// [`Error::CsrTooLarge`] (checked first, before any parsing),
/// [`Error::CsrMalformed`], [`Error::CsrUnsupportedKey`],
/// [`Error::CsrUnsupportedSignature`], [`Error::CsrBadSignature`].
pub fn verify_csr(der: &[u8]) -> Result<p256::PublicKey, Error> {
    if der.len() > MAX_CSR_LEN {
        return Err(Error::CsrTooLarge {
            len: der.len(),
            max: MAX_CSR_LEN,
        });
    }
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| Error::CsrMalformed {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::CsrMalformed {
            reason: format!("{} bytes follow the request", rest.len()),
        });
    }
    let spki = &csr.certification_request_info.subject_pki;
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(Error::CsrUnsupportedKey {
            key: oid_name(&spki.algorithm.algorithm),
        });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == OID_EC_P256 => {}
        Some(c) => {
            return Err(Error::CsrUnsupportedKey {
                key: format!("EC on curve {}", oid_name(&c)),
            })
        }
        None => {
            return Err(Error::CsrUnsupportedKey {
                key: "EC without a named curve".to_owned(),
            })
        }
    }
    if csr.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
        return Err(Error::CsrUnsupportedSignature {
            algorithm: oid_name(&csr.signature_algorithm.algorithm),
        });
    }
    // A PKCS#10 self-signature from the device's own library: high-S is
    // accepted as by every X.509 verifier (the CSR's bytes identify
    // nothing; the key does, canonicalised).
    trustline_proto::ecdsa::verify_x509(
        spki.raw,
        csr.certification_request_info.raw,
        &csr.signature_value.data,
    )
    .map_err(|e| match e {
        trustline_proto::Error::NotP256(reason) => Error::CsrUnsupportedKey { key: reason },
        _ => Error::CsrBadSignature,
    })?;
    parse_p256_spki(spki.raw).map_err(|e| Error::CsrUnsupportedKey { key: e.to_string() })
}

fn oid_name(oid: &Oid<'_>) -> String {
    let dotted = oid.to_id_string();
    let name = match dotted.as_str() {
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.3.132.0.34" => "secp384r1 (P-384)",
        "1.3.132.0.35" => "secp521r1 (P-521)",
        "1.3.132.0.10" => "secp256k1",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        _ => return dotted,
    };
    format!("{name} ({dotted})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_serials_must_fit_printable_string() {
        assert!(check_product_serial("SN-000123").is_ok());
        assert!(check_product_serial("A1 (rev.2)").is_ok());
        for bad in ["", "é", "a_b", "a*b", &"x".repeat(65)] {
            assert!(
                matches!(
                    check_product_serial(bad),
                    Err(Error::InvalidProductSerial { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_oversized_csr_is_refused_before_parsing() {
        let err = verify_csr(&vec![0x30; MAX_CSR_LEN + 1]).expect_err("must be refused");
        assert!(
            matches!(err, Error::CsrTooLarge { len, max } if len == MAX_CSR_LEN + 1 && max == MAX_CSR_LEN)
        );
        assert!(matches!(
            verify_csr(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(Error::CsrMalformed { .. })
        ));
    }
}
