//! EC encodings at the PKCS#11 boundary: the P-256 `CKA_EC_PARAMS`, the
//! `CKA_EC_POINT` (raw or DER OCTET STRING, depending on the token), and the
//! conversion of `CKM_ECDSA`'s raw r‖s into the DER `ECDSA-Sig-Value` X.509
//! needs.

use crate::Error;

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7): the
/// `CKA_EC_PARAMS` of every key this CA makes or accepts.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Length of an uncompressed SEC1 P-256 point (0x04 ‖ X ‖ Y).
pub(crate) const POINT_LEN: usize = 65;

/// Extracts the uncompressed point from a `CKA_EC_POINT` value, which tokens
/// return either raw or wrapped in a DER OCTET STRING (SoftHSM2 does the
/// latter), and checks that it is on the P-256 curve.
pub(crate) fn point_from_ec_point(value: &[u8]) -> Option<p256::PublicKey> {
    let raw = match value {
        [0x04, 0x41, rest @ ..] if rest.len() == POINT_LEN => rest,
        [0x04, ..] if value.len() == POINT_LEN => value,
        _ => return None,
    };
    p256::PublicKey::from_sec1_bytes(raw).ok()
}

/// The uncompressed SEC1 encoding of `key`.
pub(crate) fn uncompressed(key: &p256::PublicKey) -> Vec<u8> {
    p256::EncodedPoint::from(key).as_bytes().to_vec()
}

/// Converts a `CKM_ECDSA` P-256 signature (r‖s, 32 bytes each) into DER,
/// in low-S form: the token may return either twin `(r, s)` / `(r, n − s)`
/// and Trustline's strict verifier accepts only the low one.
///
/// # Errors
/// [`Error::Pkcs11`] when the token returned something that is not a valid
/// P-256 signature.
pub(crate) fn raw_signature_to_low_s_der(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let sig = p256::ecdsa::Signature::from_slice(raw).map_err(|_| Error::Pkcs11 {
        operation: "C_Sign",
        reason: format!(
            "the token returned a {}-byte value that is not a P-256 r||s signature",
            raw.len()
        ),
    })?;
    let sig = trustline_proto::ecdsa::normalize_s(sig);
    Ok(sig.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    #[test]
    fn raw_signatures_become_der_that_verifies() {
        let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let digest = [7u8; 32];
        let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).expect("sign");
        let low = trustline_proto::ecdsa::normalize_s(sig);
        let high = p256::ecdsa::Signature::from_scalars(low.r(), -*low.s()).expect("twin");
        // Either twin from the token becomes the one low-S DER signature.
        for raw in [low.to_bytes(), high.to_bytes()] {
            let der = raw_signature_to_low_s_der(&raw).expect("der");
            assert_eq!(der, low.to_der().as_bytes());
        }
        assert!(raw_signature_to_low_s_der(&[0u8; 64]).is_err());
        assert!(raw_signature_to_low_s_der(&[1u8; 63]).is_err());
    }

    #[test]
    fn ec_points_are_read_raw_or_wrapped() {
        let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng).public_key();
        let raw = uncompressed(&key);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&raw);
        assert_eq!(point_from_ec_point(&raw), Some(key));
        assert_eq!(point_from_ec_point(&wrapped), Some(key));
        assert_eq!(point_from_ec_point(&raw[..64]), None);
    }
}
