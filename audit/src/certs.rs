//! Device certificates as the audit reads them: what they name (product
//! serial, RoT, key) and whether the OEM CA issued them.
//!
//! The OEM's CA certificates are given by the auditor (their own copies,
//! never taken on the audited party's word in production): every
//! self-signed one is a trust anchor, every other one must chain to an
//! anchor, and a device certificate must be signed by one of them that is a
//! CA. Signatures are checked with `ring` (through x509-parser), the same
//! code the rest of Trustline verifies with.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

/// The SAN URI prefix that names a device's RoT (as the CA writes it).
pub const ROT_URI_PREFIX: &str = trustline_proto::ROT_URI_PREFIX;

/// id-at-serialNumber (2.5.4.5).
const OID_SERIAL_NUMBER: &str = "2.5.4.5";
/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2): the only signature algorithm
/// Trustline's CA uses (2.4.9.5).
pub const OID_ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

/// What a device certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCert {
    /// SHA-256 of the certificate DER.
    pub sha256: [u8; 32],
    /// The subject serialNumber (the product serial), or the CN when there
    /// is no serialNumber attribute.
    pub serial: String,
    /// The RoT named by the SAN URI, if any.
    pub rot_id: Option<String>,
    /// SubjectPublicKeyInfo DER of the device key.
    pub spki: Vec<u8>,
    /// The signature algorithm, as a dotted OID.
    pub signature_algorithm: String,
}

impl DeviceCert {
    /// Parses a DER certificate.
    ///
    /// # Errors
    /// A description of why it does not parse.
    pub fn parse(der: &[u8]) -> std::result::Result<Self, String> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("does not parse: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let subject = cert.subject();
        let serial = subject
            .iter_attributes()
            .find(|a| a.attr_type().to_id_string() == OID_SERIAL_NUMBER)
            .or_else(|| subject.iter_common_name().next())
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let rot_id = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::URI(uri) => uri.strip_prefix(ROT_URI_PREFIX).map(str::to_owned),
                    _ => None,
                })
            });
        Ok(Self {
            sha256: Sha256::digest(der).into(),
            serial,
            rot_id,
            spki: cert.public_key().raw.to_vec(),
            signature_algorithm: cert.signature_algorithm.algorithm.to_id_string(),
        })
    }
}

/// One CA certificate that may issue device certificates.
#[derive(Debug, Clone)]
struct Issuer {
    subject: Vec<u8>,
    spki: Vec<u8>,
}

/// The OEM's CA certificates, checked to chain to a self-signed anchor.
#[derive(Debug, Clone, Default)]
pub struct CaSet {
    issuers: Vec<Issuer>,
    anchors: usize,
}

impl CaSet {
    /// Checks and keeps `certificates` (DER).
    ///
    /// # Errors
    /// [`Error::Config`] when one does not parse, is not a CA, or does not
    /// chain to a self-signed certificate among them.
    pub fn new(certificates: &[Vec<u8>]) -> Result<Self> {
        let parsed: Vec<X509Certificate<'_>> = certificates
            .iter()
            .enumerate()
            .map(|(i, der)| {
                X509Certificate::from_der(der)
                    .map(|(_, c)| c)
                    .map_err(|e| Error::Config(format!("ca certificate {i} does not parse: {e}")))
            })
            .collect::<Result<_>>()?;
        let is_ca = |c: &X509Certificate<'_>| {
            c.basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|bc| bc.value.ca)
        };
        let mut trusted: Vec<usize> = Vec::new();
        for (i, c) in parsed.iter().enumerate() {
            if c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok() {
                if !is_ca(c) {
                    return Err(Error::Config(format!(
                        "ca certificate {} is self-signed but not a ca",
                        c.subject()
                    )));
                }
                trusted.push(i);
            }
        }
        if trusted.is_empty() {
            return Err(Error::Config(
                "the ca chain holds no self-signed root: give the oem root certificate".into(),
            ));
        }
        let anchors = trusted.len();
        // Add every certificate signed by a trusted one until nothing changes.
        loop {
            let before = trusted.len();
            for (i, c) in parsed.iter().enumerate() {
                if trusted.contains(&i) || !is_ca(c) {
                    continue;
                }
                let signed_by_trusted = trusted.iter().any(|t| {
                    let issuer = &parsed[*t];
                    issuer.subject().as_raw() == c.issuer().as_raw()
                        && c.verify_signature(Some(issuer.public_key())).is_ok()
                });
                if signed_by_trusted {
                    trusted.push(i);
                }
            }
            if trusted.len() == before {
                break;
            }
        }
        if let Some((_, c)) = parsed
            .iter()
            .enumerate()
            .find(|(i, _)| !trusted.contains(i))
        {
            return Err(Error::Config(format!(
                "ca certificate {} is not a ca that chains to a given root",
                c.subject()
            )));
        }
        let issuers = trusted
            .iter()
            .map(|i| Issuer {
                subject: parsed[*i].subject().as_raw().to_vec(),
                spki: parsed[*i].public_key().raw.to_vec(),
            })
            .collect();
        Ok(Self { issuers, anchors })
    }

    /// How many CA certificates (anchors and intermediates) are held.
    pub fn len(&self) -> usize {
        self.issuers.len()
    }

    /// Whether no CA certificate is held.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// How many of them are self-signed anchors.
    pub fn anchors(&self) -> usize {
        self.anchors
    }

    /// Whether `der` is a certificate signed by one of the CA certificates.
    ///
    /// # Errors
    /// Why not, in words.
    pub fn check_issued(&self, der: &[u8]) -> std::result::Result<(), String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("does not parse: {e}"))?;
        let issuer_name = cert.issuer().as_raw();
        let mut named = false;
        for issuer in self.issuers.iter().filter(|i| i.subject == issuer_name) {
            named = true;
            let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&issuer.spki) else {
                continue;
            };
            if cert.verify_signature(Some(&spki)).is_ok() {
                return Ok(());
            }
        }
        if named {
            Err(format!(
                "signature does not verify under the oem ca named {}",
                cert.issuer()
            ))
        } else {
            Err(format!("issuer {} is not an oem ca", cert.issuer()))
        }
    }
}

/// Every certificate in `bytes`: PEM blocks labelled CERTIFICATE, or one
/// DER certificate.
pub fn certificates_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.first() == Some(&0x30) {
        return vec![bytes.to_vec()];
    }
    pem::parse_many(bytes)
        .map(|blocks| {
            blocks
                .into_iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(|b| b.into_contents())
                .collect()
        })
        .unwrap_or_default()
}
