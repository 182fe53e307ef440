//! Configured IC-vendor roots, and verification of a RoT's attestation chain
//! against them (invariant 7; 2.4.14.17, 2.4.14.18).
//!
//! Only ECDSA P-256 with SHA-256 is accepted anywhere in the chain (DESIGN,
//! "Identity"); signatures are checked with `ring`. A chain is refused — the
//! silicon is treated as counterfeit — when it is empty or oversized, does
//! not parse, is self-signed, is outside its validity, uses another
//! algorithm, has a non-CA issuer, or does not end at a configured root.
//!
//! Hot-path design: a vendor's intermediates are the same for thousands of
//! dies, so once an intermediate chain has been verified up to a root, its
//! issuing key is cached (in a [`BoundedCache`]: a miss only re-verifies)
//! by the SHA-256 of the intermediates' DER; each die then costs one parse
//! and one signature check.

use std::sync::Arc;

use backends::BoundedCache;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

/// Most certificates in an attestation chain (die, intermediates, root).
pub const MAX_CHAIN_LEN: usize = 4;
/// Largest certificate accepted, in bytes.
pub const MAX_CERT_LEN: usize = 4096;
/// Most distinct intermediate chains remembered.
const MAX_CACHED_ISSUERS: usize = 1024;

/// One configured IC vendor: a name and its root certificate.
#[derive(Debug, Clone)]
pub struct VendorRoot {
    /// The name orders use in `allowed_ic_vendors`.
    pub name: String,
    /// DER of the vendor's root certificate.
    pub certificate: Vec<u8>,
}

/// A RoT whose attestation chain verified to a configured vendor root.
#[derive(Debug, Clone)]
pub struct AuthenticRot {
    /// hex SHA-256 of the attestation key's SubjectPublicKeyInfo DER.
    pub rot_id: String,
    /// The attestation key's SubjectPublicKeyInfo DER.
    pub attestation_key: Vec<u8>,
    /// The vendor whose root the chain ends at.
    pub vendor: String,
}

/// A verified issuer: the key that signs die certificates, and who it is.
#[derive(Debug, Clone)]
struct Issuer {
    vendor: Arc<str>,
    subject: Vec<u8>,
    public_key: Vec<u8>,
}

#[derive(Debug)]
struct Root {
    name: Arc<str>,
    der: Vec<u8>,
    subject: Vec<u8>,
    public_key: Vec<u8>,
}

/// The configured vendor roots and the cache of verified issuers.
#[derive(Debug)]
pub struct VendorRoots {
    roots: Vec<Root>,
    // A verified issuer is recomputed from the chain on a miss.
    issuers: BoundedCache<[u8; 32], Issuer>,
}

impl VendorRoots {
    /// Parses the configured roots.
    ///
    /// # Errors
    /// [`Error::Config`] when a root does not parse, is not a self-signed
    /// P-256 CA certificate, or two roots share a name.
    pub fn new(roots: &[VendorRoot]) -> Result<Self> {
        let mut parsed = Vec::with_capacity(roots.len());
        for root in roots {
            if parsed.iter().any(|r: &Root| *r.name == root.name) {
                return Err(Error::Config(format!(
                    "vendor {:?} is configured twice",
                    root.name
                )));
            }
            let (_, cert) =
                x509_parser::parse_x509_certificate(&root.certificate).map_err(|e| {
                    Error::Config(format!("vendor {:?} root does not parse: {e}", root.name))
                })?;
            check_p256(cert.public_key())
                .map_err(|e| Error::Config(format!("vendor {:?} root: {e}", root.name)))?;
            if !cert.is_ca() {
                return Err(Error::Config(format!(
                    "vendor {:?} root is not a CA",
                    root.name
                )));
            }
            verify_signed_by(&cert, &cert.public_key().subject_public_key.data).map_err(|e| {
                Error::Config(format!(
                    "vendor {:?} root is not self-signed: {e}",
                    root.name
                ))
            })?;
            parsed.push(Root {
                name: root.name.as_str().into(),
                der: root.certificate.clone(),
                subject: cert.subject().as_raw().to_vec(),
                public_key: cert.public_key().subject_public_key.data.to_vec(),
            });
        }
        Ok(Self {
            roots: parsed,
            issuers: BoundedCache::new(MAX_CACHED_ISSUERS),
        })
    }

    /// The configured vendor names.
    pub fn names(&self) -> Vec<String> {
        self.roots.iter().map(|r| r.name.to_string()).collect()
    }

    /// Verifies a RoT attestation chain (die certificate first, then any
    /// intermediates; the root may be included or left out) at `now`.
    ///
    /// # Errors
    /// [`Error::Counterfeit`] with the reason.
    pub fn verify(&self, chain: &[Vec<u8>], now_ms: i64) -> Result<AuthenticRot> {
        if chain.is_empty() {
            return Err(Error::Counterfeit("empty attestation chain".into()));
        }
        if chain.len() > MAX_CHAIN_LEN || chain.iter().any(|c| c.len() > MAX_CERT_LEN) {
            return Err(Error::Counterfeit("attestation chain is too large".into()));
        }
        let chain = self.without_root(chain);
        let now = ASN1Time::from_timestamp(now_ms.div_euclid(1000))
            .map_err(|_| Error::Counterfeit("clock out of range".into()))?;
        let (_, die) = x509_parser::parse_x509_certificate(chain[0])
            .map_err(|e| Error::Counterfeit(format!("die certificate does not parse: {e}")))?;
        check_p256(die.public_key()).map_err(Error::Counterfeit)?;
        if die.subject().as_raw() == die.issuer().as_raw()
            && verify_signed_by(&die, &die.public_key().subject_public_key.data).is_ok()
        {
            return Err(Error::Counterfeit("self-signed die certificate".into()));
        }
        if !die.validity().is_valid_at(now) {
            return Err(Error::Counterfeit(
                "die certificate is outside its validity".into(),
            ));
        }
        let attestation_key = die.public_key().raw.to_vec();
        if chain.len() == 1 {
            // Dies signed by a root directly.
            let vendor = self.root_of(&die)?;
            return Ok(AuthenticRot {
                rot_id: trustline_proto::identity::rot_id(&attestation_key),
                attestation_key,
                vendor: vendor.to_string(),
            });
        }
        let issuer = self.issuer(&chain[1..], now)?;
        if die.issuer().as_raw() != issuer.subject.as_slice() {
            return Err(Error::Counterfeit(
                "die certificate names another issuer".into(),
            ));
        }
        verify_signed_by(&die, &issuer.public_key)
            .map_err(|e| Error::Counterfeit(format!("die certificate: {e}")))?;
        Ok(AuthenticRot {
            rot_id: trustline_proto::identity::rot_id(&attestation_key),
            attestation_key,
            vendor: issuer.vendor.to_string(),
        })
    }

    /// The RoT of an attestation chain that [`VendorRoots::verify`] accepted
    /// before, as a claim nonce's tag proves (`crate::nonce` binds the
    /// chain): its vendor is read from the cache of verified issuers (or is
    /// the one root whose subject the die names) without checking the die's
    /// signature again, so completing a claim costs no second chain
    /// verification. Anything else — a cache miss after a restart, a root
    /// no longer configured — is verified in full.
    ///
    /// # Errors
    /// As [`VendorRoots::verify`], when the chain is verified again.
    pub fn reverify(&self, chain: &[Vec<u8>], now_ms: i64) -> Result<AuthenticRot> {
        match self.already_verified(chain) {
            Some(rot) => Ok(rot),
            None => self.verify(chain, now_ms),
        }
    }

    fn already_verified(&self, chain: &[Vec<u8>]) -> Option<AuthenticRot> {
        if chain.is_empty() || chain.len() > MAX_CHAIN_LEN {
            return None;
        }
        let chain = self.without_root(chain);
        let (_, die) = x509_parser::parse_x509_certificate(chain[0]).ok()?;
        let vendor = if chain.len() == 1 {
            let mut roots = self
                .roots
                .iter()
                .filter(|r| r.subject.as_slice() == die.issuer().as_raw());
            let only = roots.next()?;
            if roots.next().is_some() {
                return None;
            }
            only.name.clone()
        } else {
            let issuer = self.issuers.get(&chain_key(&chain[1..]))?;
            if die.issuer().as_raw() != issuer.subject.as_slice() {
                return None;
            }
            issuer.vendor
        };
        let attestation_key = die.public_key().raw.to_vec();
        Some(AuthenticRot {
            rot_id: trustline_proto::identity::rot_id(&attestation_key),
            attestation_key,
            vendor: vendor.to_string(),
        })
    }

    /// The chain without a trailing copy of a configured root: the
    /// configured copy decides.
    fn without_root<'a>(&self, chain: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        let mut chain: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        if chain.len() > 1
            && self
                .roots
                .iter()
                .any(|r| Some(&r.der.as_slice()) == chain.last())
        {
            chain.pop();
        }
        chain
    }

    /// The verified issuer of a die certificate: the last intermediate, or a
    /// root when there is none. Cached per intermediate chain.
    fn issuer(&self, intermediates: &[&[u8]], now: ASN1Time) -> Result<Issuer> {
        let key = chain_key(intermediates);
        if let Some(hit) = self.issuers.get(&key) {
            return Ok(hit);
        }
        let issuer = self.verify_intermediates(intermediates, now)?;
        self.issuers.insert(key, issuer.clone());
        Ok(issuer)
    }

    fn verify_intermediates(&self, intermediates: &[&[u8]], now: ASN1Time) -> Result<Issuer> {
        let parsed = intermediates
            .iter()
            .map(|der| {
                x509_parser::parse_x509_certificate(der)
                    .map(|(_, c)| c)
                    .map_err(|e| Error::Counterfeit(format!("intermediate does not parse: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        // Walk from the top: the last intermediate must be signed by a root.
        let mut signer: Option<(Arc<str>, Vec<u8>, Vec<u8>)> = None;
        for cert in parsed.iter().rev() {
            check_p256(cert.public_key()).map_err(Error::Counterfeit)?;
            if !cert.is_ca() {
                return Err(Error::Counterfeit("an intermediate is not a CA".into()));
            }
            if !cert.validity().is_valid_at(now) {
                return Err(Error::Counterfeit(
                    "an intermediate is outside its validity".into(),
                ));
            }
            let vendor = match &signer {
                None => self.root_of(cert)?,
                Some((vendor, subject, public_key)) => {
                    if cert.issuer().as_raw() != subject.as_slice() {
                        return Err(Error::Counterfeit("intermediates do not chain".into()));
                    }
                    verify_signed_by(cert, public_key)
                        .map_err(|e| Error::Counterfeit(format!("intermediate: {e}")))?;
                    vendor.clone()
                }
            };
            signer = Some((
                vendor,
                cert.subject().as_raw().to_vec(),
                cert.public_key().subject_public_key.data.to_vec(),
            ));
        }
        signer
            .map(|(vendor, subject, public_key)| Issuer {
                vendor,
                subject,
                public_key,
            })
            .ok_or_else(|| Error::Counterfeit("no intermediates".into()))
    }

    /// The root that signed `cert`.
    fn root_of(&self, cert: &X509Certificate<'_>) -> Result<Arc<str>> {
        self.roots
            .iter()
            .filter(|r| r.subject.as_slice() == cert.issuer().as_raw())
            .find(|r| verify_signed_by(cert, &r.public_key).is_ok())
            .map(|r| r.name.clone())
            .ok_or_else(|| {
                Error::Counterfeit("chain does not end at a configured ic-vendor root".into())
            })
    }
}

/// The cache key of an intermediate chain: SHA-256 over its certificates,
/// each length-prefixed.
fn chain_key(intermediates: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for cert in intermediates {
        hasher.update((cert.len() as u32).to_be_bytes());
        hasher.update(cert);
    }
    hasher.finalize().into()
}

fn check_p256(spki: &SubjectPublicKeyInfo<'_>) -> std::result::Result<(), String> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err("key is not ecdsa p-256".into());
    }
    Ok(())
}

/// Checks `cert`'s ECDSA P-256 / SHA-256 signature with `ring`, given the
/// issuer's uncompressed public point.
fn verify_signed_by(
    cert: &X509Certificate<'_>,
    issuer_point: &[u8],
) -> std::result::Result<(), String> {
    if cert.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
        return Err("signature algorithm is not ecdsa-with-sha256".into());
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, issuer_point)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| "signature does not verify".to_string())
}
