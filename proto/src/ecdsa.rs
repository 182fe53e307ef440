//! ECDSA P-256 / SHA-256, strictly: canonical public keys, low-S signatures
//! and one verifier that refuses everything else.
//!
//! Why strict. An ECDSA signature `(r, s)` has a twin `(r, n − s)` that
//! verifies just as well, and anyone can compute it without the key. Where
//! Trustline identifies something by the hash of bytes that contain a
//! signature (voucher entries, stored statements), an observer could
//! register the twin first and have the owner's genuine bytes refused as a
//! fork (issue 12, "ECDSA malleability"). So:
//! - every signer Trustline has (the HSM's `CKM_ECDSA`, the software
//!   [`crate::signer::SoftwareSigner`]) emits the low-S form, `s ≤ n/2`
//!   ([`normalize_s`]);
//! - [`verify_strict`] — the verifier of statements, checkpoints and voucher
//!   COSE entries — refuses a high-S signature, and for the DER form any
//!   encoding other than the one DER allows, so one message and key have
//!   exactly one accepted signature encoding per signature;
//! - [`verify_x509`] accepts both forms: it is for X.509 signatures made by
//!   others with off-the-shelf libraries (an OEM's offline root signing the
//!   site intermediate, a PKCS#10 self-signature), whose bytes identify
//!   nothing here. A device whose secure element emits high-S signatures
//!   normalises them before sending (`s := n − s`, no key needed).
//!
//! Keys have one canonical form too: the same P-256 point can be written
//! compressed or uncompressed, so uniqueness keys and `rot_id`s hash
//! [`canonical_p256_spki`] (uncompressed point, `id-ecPublicKey` with the
//! named curve `prime256v1`), never the bytes presented.
//!
//! Verification runs on `ring` (the library rustls and x509-parser already
//! use here). `ca_service::bench::verifiers` measures it against aws-lc-rs
//! and the pure-Rust `p256` on the machine at hand: aws-lc-rs came out
//! 4–8 % faster (inside the run-to-run noise), p256 five times slower, so
//! ring stays (issue 16.3; figures in that module). [`VerifyingKey`] is the
//! prepared form: parse and check a key once (a vendor or order key),
//! verify many times. A check repeated in one process on the same inputs
//! (the provisioner and its in-process CA both checking a proof of
//! possession) costs one verification: [`verified`].

use p256::ecdsa::Signature;
use p256::elliptic_curve::scalar::IsHigh;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

use crate::Error;

mod verified;

/// Largest DER ECDSA P-256 signature (two 33-byte integers and headers).
pub const MAX_DER_SIGNATURE_LEN: usize = 72;
/// Length of a raw P-256 signature, `r ‖ s` (32 bytes each).
pub const RAW_SIGNATURE_LEN: usize = 64;
/// Largest SubjectPublicKeyInfo accepted, in bytes.
pub const MAX_SPKI_LEN: usize = 512;
/// Length of an uncompressed SEC1 P-256 point (`0x04 ‖ X ‖ Y`).
pub const UNCOMPRESSED_POINT_LEN: usize = 65;

/// How a signature's two integers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// DER `ECDSA-Sig-Value` (X.509, statements, checkpoints).
    Der,
    /// `r ‖ s`, 32 bytes each (COSE, RFC 9053 §2.1; PKCS#11 `CKM_ECDSA`).
    Raw,
}

/// Parses a SubjectPublicKeyInfo that must hold a P-256 key (compressed or
/// uncompressed point).
///
/// # Errors
/// [`Error::NotP256`] for any other key, curve or malformed encoding.
pub fn parse_p256_spki(spki_der: &[u8]) -> Result<p256::PublicKey, Error> {
    if spki_der.len() > MAX_SPKI_LEN {
        return Err(Error::NotP256(format!(
            "public key of {} bytes is larger than {MAX_SPKI_LEN}",
            spki_der.len()
        )));
    }
    p256::PublicKey::from_public_key_der(spki_der)
        .map_err(|e| Error::NotP256(format!("not a P-256 SubjectPublicKeyInfo: {e}")))
}

/// The canonical SubjectPublicKeyInfo DER of a P-256 public key: the
/// uncompressed point under `id-ecPublicKey` / `prime256v1`.
pub fn p256_spki(key: &p256::PublicKey) -> Vec<u8> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        // Encoding a valid point cannot fail.
        .unwrap_or_default()
}

/// The SubjectPublicKeyInfo DER of a P-256 public key with its point
/// compressed (SEC1 `0x02`/`0x03` ‖ X): the other encoding of the same key,
/// as some tools and secure elements write it. Never stored by Trustline;
/// [`canonical_p256_spki`] maps it back.
pub fn compressed_p256_spki(key: &p256::PublicKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (34) }
    const PREFIX: [u8; 26] = [
        0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x22, 0x00,
    ];
    let mut spki = PREFIX.to_vec();
    spki.extend_from_slice(key.to_encoded_point(true).as_bytes());
    spki
}

/// The canonical form of a P-256 SubjectPublicKeyInfo: what every
/// uniqueness key and identifier must hash, so that one key written two
/// ways (compressed, uncompressed) counts once.
///
/// # Errors
/// [`Error::NotP256`] as [`parse_p256_spki`].
pub fn canonical_p256_spki(spki_der: &[u8]) -> Result<Vec<u8>, Error> {
    parse_p256_spki(spki_der).map(|key| p256_spki(&key))
}

/// The low-S form of a signature: `(r, n − s)` when `s > n/2`, else the
/// signature itself. Both verify; only the low-S one is accepted by
/// [`verify_strict`].
pub fn normalize_s(signature: Signature) -> Signature {
    signature.normalize_s().unwrap_or(signature)
}

/// Whether `signature` is in low-S form.
pub fn is_low_s(signature: &Signature) -> bool {
    !bool::from(signature.s().is_high())
}

/// Parses a signature in `encoding`, refusing every form but the one
/// [`verify_strict`] accepts: DER that re-encodes to the same bytes, 64-byte
/// `r ‖ s`, `0 < r, s < n`, and `s ≤ n/2`.
///
/// # Errors
/// [`Error::BadSignature`] (`"signature"`) for anything else.
pub fn parse_strict(signature: &[u8], encoding: SignatureEncoding) -> Result<Signature, Error> {
    let bad = || Error::BadSignature("signature");
    let sig = match encoding {
        SignatureEncoding::Der => {
            if signature.len() > MAX_DER_SIGNATURE_LEN {
                return Err(bad());
            }
            let sig = Signature::from_der(signature).map_err(|_| bad())?;
            // One signature, one encoding: refuse any BER-ish variant
            // (leading zeros, long-form lengths) a lenient parser accepted.
            if sig.to_der().as_bytes() != signature {
                return Err(bad());
            }
            sig
        }
        SignatureEncoding::Raw => {
            if signature.len() != RAW_SIGNATURE_LEN {
                return Err(bad());
            }
            Signature::from_slice(signature).map_err(|_| bad())?
        }
    };
    if !is_low_s(&sig) {
        return Err(bad());
    }
    Ok(sig)
}

/// Verifies an ECDSA P-256 / SHA-256 signature over `message` by the key
/// `spki_der`, refusing high-S and non-canonical encodings (see the module
/// doc). The one verifier for statements, checkpoints and voucher entries.
///
/// # Errors
/// [`Error::NotP256`] for a bad key; [`Error::BadSignature`] (`"signature"`)
/// for a signature that does not verify or is not in its one accepted form.
pub fn verify_strict(
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
    encoding: SignatureEncoding,
) -> Result<(), Error> {
    let (point, sig) = strict_inputs(spki_der, signature, encoding)?;
    ring_verify_raw(point.as_bytes(), message, &sig.to_bytes())
}

/// Verifies a DER ECDSA P-256 / SHA-256 X.509 signature made by someone
/// else's library (certificates, PKCS#10 requests): high-S is accepted, as
/// every X.509 verifier does. Never use it where the signed bytes identify
/// something.
///
/// # Errors
/// [`Error::NotP256`] for a bad key, [`Error::BadSignature`] otherwise.
pub fn verify_x509(spki_der: &[u8], message: &[u8], signature_der: &[u8]) -> Result<(), Error> {
    let point = point_of(spki_der)?;
    ring_verify_der(point.as_bytes(), message, signature_der)
}

fn point_of(spki_der: &[u8]) -> Result<p256::EncodedPoint, Error> {
    parse_p256_spki(spki_der).map(|key| p256::EncodedPoint::from(&key))
}

/// As [`verify_strict`], but verified every time, also when this process
/// verified the same inputs before ([`verified`]): for measuring the
/// verifier itself (`ca_service::bench::verifiers`), not for checking.
///
/// # Errors
/// As [`verify_strict`].
pub fn verify_strict_every_time(
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
    encoding: SignatureEncoding,
) -> Result<(), Error> {
    let (point, sig) = strict_inputs(spki_der, signature, encoding)?;
    ring_raw(point.as_bytes(), message, &sig.to_bytes())
}

/// The key's point and the signature in its one accepted form.
fn strict_inputs(
    spki_der: &[u8],
    signature: &[u8],
    encoding: SignatureEncoding,
) -> Result<(p256::EncodedPoint, Signature), Error> {
    Ok((point_of(spki_der)?, parse_strict(signature, encoding)?))
}

fn ring_verify_raw(point: &[u8], message: &[u8], raw: &[u8]) -> Result<(), Error> {
    verified::TABLE.verified_once(verified::Algorithm::Fixed, point, message, raw, || {
        ring_raw(point, message, raw)
    })
}

fn ring_raw(point: &[u8], message: &[u8], raw: &[u8]) -> Result<(), Error> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(message, raw)
        .map_err(|_| Error::BadSignature("signature"))
}

fn ring_verify_der(point: &[u8], message: &[u8], signature_der: &[u8]) -> Result<(), Error> {
    if signature_der.len() > MAX_DER_SIGNATURE_LEN {
        return Err(Error::BadSignature("signature"));
    }
    verified::TABLE.verified_once(
        verified::Algorithm::Asn1,
        point,
        message,
        signature_der,
        || {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
                .verify(message, signature_der)
                .map_err(|_| Error::BadSignature("signature"))
        },
    )
}

/// A P-256 public key parsed and checked once, for verifying many
/// signatures (a vendor intermediate, an order key): skips the
/// SubjectPublicKeyInfo parse and point check on every call.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    point: [u8; UNCOMPRESSED_POINT_LEN],
    spki: Vec<u8>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VerifyingKey")
            .field(&hex::encode(&self.spki))
            .finish()
    }
}

impl VerifyingKey {
    /// Parses a P-256 SubjectPublicKeyInfo (either point form).
    ///
    /// # Errors
    /// [`Error::NotP256`] as [`parse_p256_spki`].
    pub fn from_spki(spki_der: &[u8]) -> Result<Self, Error> {
        parse_p256_spki(spki_der).map(|key| Self::from_public_key(&key))
    }

    /// The prepared form of `key`.
    pub fn from_public_key(key: &p256::PublicKey) -> Self {
        let encoded = p256::EncodedPoint::from(key);
        let mut point = [0u8; UNCOMPRESSED_POINT_LEN];
        // A `PublicKey` always encodes uncompressed as 65 bytes.
        point.copy_from_slice(encoded.as_bytes());
        Self {
            point,
            spki: p256_spki(key),
        }
    }

    /// The key's canonical SubjectPublicKeyInfo DER.
    pub fn canonical_spki(&self) -> &[u8] {
        &self.spki
    }

    /// The uncompressed SEC1 point.
    pub fn uncompressed_point(&self) -> &[u8; UNCOMPRESSED_POINT_LEN] {
        &self.point
    }

    /// As [`verify_strict`], with this key.
    ///
    /// # Errors
    /// [`Error::BadSignature`] (`"signature"`).
    pub fn verify_strict(
        &self,
        message: &[u8],
        signature: &[u8],
        encoding: SignatureEncoding,
    ) -> Result<(), Error> {
        let sig = parse_strict(signature, encoding)?;
        ring_verify_raw(&self.point, message, &sig.to_bytes())
    }

    /// As [`verify_x509`], with this key.
    ///
    /// # Errors
    /// [`Error::BadSignature`] (`"signature"`).
    pub fn verify_x509(&self, message: &[u8], signature_der: &[u8]) -> Result<(), Error> {
        ring_verify_der(&self.point, message, signature_der)
    }
}

#[cfg(test)]
mod tests;
