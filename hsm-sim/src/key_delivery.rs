//! The device side of HSM-made key delivery: a RoT unwraps the device key
//! the CA made in the HSM and wrapped to its transport key
//! (`ca_service::hsm::Hsm::generate_wrapped_key`; DESIGN.md step 4;
//! 2.4.9.4, 2.4.14.19).
//!
//! 1. ECDH of the RoT's transport private key with the HSM's ephemeral
//!    public key gives the shared point's x-coordinate Z.
//! 2. The AES-256 key-encryption key is Z itself (`"ecdh-x-coordinate"`, what
//!    `CKD_NULL` gives on SoftHSM2) or SHA-256(Z ‖ 00000001 ‖
//!    [`SHA256_KDF_SHARED_INFO`]) (`"ecdh-sha256-kdf"`, ANSI X9.63 with
//!    SHA-256, what `CKD_SHA256_KDF` gives on HSMs that offer it).
//! 3. AES key wrap with padding (RFC 5649) unwraps a PKCS#8 PrivateKeyInfo.
//!    SoftHSM2 zero-pads the PKCS#8 to a multiple of 8 before wrapping, so
//!    only the outer SEQUENCE's length is trusted and the rest must be zero.

use aes_kw::KekAes256;
use p256::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;

/// The KDF name for `CKD_NULL`: the key-encryption key is the x-coordinate.
pub const KDF_ECDH_X_COORDINATE: &str = "ecdh-x-coordinate";
/// The KDF name for `CKD_SHA256_KDF` (ANSI X9.63, SHA-256).
pub const KDF_ECDH_SHA256: &str = "ecdh-sha256-kdf";
/// The X9.63 SharedInfo of [`KDF_ECDH_SHA256`] (the same bytes as
/// `ca_service::hsm::KEY_DELIVERY_SHARED_INFO`).
pub const SHA256_KDF_SHARED_INFO: &[u8] = b"trustline.v1.WrappedDeviceKey";

/// Largest wrapped blob accepted (a P-256 PKCS#8 key wraps to about 80 to
/// 160 bytes depending on the optional fields the HSM includes).
pub const MAX_WRAPPED_LEN: usize = 512;

fn refused(reason: impl Into<String>) -> Error {
    Error::KeyDelivery(reason.into())
}

/// Derives the AES-256 key-encryption key from the transport secret and the
/// HSM's ephemeral public key.
///
/// # Errors
/// [`Error::KeyDelivery`] for a bad ephemeral key or an unknown KDF.
pub fn key_encryption_key(
    transport_secret: &p256::SecretKey,
    hsm_ephemeral_spki: &[u8],
    kdf: &str,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let ephemeral = trustline_proto::statement::parse_p256_spki(hsm_ephemeral_spki)
        .map_err(|e| refused(format!("HSM ephemeral key: {e}")))?;
    let shared =
        p256::ecdh::diffie_hellman(transport_secret.to_nonzero_scalar(), ephemeral.as_affine());
    let z = shared.raw_secret_bytes();
    let mut kek = Zeroizing::new([0u8; 32]);
    match kdf {
        KDF_ECDH_X_COORDINATE => kek.copy_from_slice(&z[..]),
        KDF_ECDH_SHA256 => {
            let mut h = Sha256::new();
            h.update(&z[..]);
            h.update(1u32.to_be_bytes());
            h.update(SHA256_KDF_SHARED_INFO);
            kek.copy_from_slice(&h.finalize());
        }
        other => {
            return Err(refused(format!(
                "unknown KDF {other:?} (expected {KDF_ECDH_X_COORDINATE} or {KDF_ECDH_SHA256})"
            )))
        }
    }
    Ok(kek)
}

/// Unwraps a device private key delivered by the HSM.
///
/// # Errors
/// [`Error::KeyDelivery`] when the ephemeral key is not P-256, the KDF is
/// unknown, the blob fails RFC 5649's integrity check (wrong transport key,
/// corrupted or truncated blob), or the plaintext is not a P-256 PKCS#8 key
/// followed only by zero padding.
pub fn unwrap_device_key(
    transport_secret: &p256::SecretKey,
    hsm_ephemeral_spki: &[u8],
    wrapped: &[u8],
    kdf: &str,
) -> Result<p256::SecretKey, Error> {
    if wrapped.len() > MAX_WRAPPED_LEN {
        return Err(refused(format!(
            "wrapped key of {} bytes exceeds {MAX_WRAPPED_LEN}",
            wrapped.len()
        )));
    }
    let kek = key_encryption_key(transport_secret, hsm_ephemeral_spki, kdf)?;
    let plain = Zeroizing::new(
        KekAes256::from(*kek)
            .unwrap_with_padding_vec(wrapped)
            .map_err(|e| {
                refused(format!(
                    "unwrap failed ({e}): wrong transport key or corrupted blob"
                ))
            })?,
    );
    let len = outer_sequence_len(&plain)?;
    let (pkcs8, padding) = plain.split_at(len);
    if padding.iter().any(|b| *b != 0) {
        return Err(refused("non-zero bytes follow the PKCS#8 key"));
    }
    p256::SecretKey::from_pkcs8_der(pkcs8)
        .map_err(|e| refused(format!("unwrapped bytes are not a P-256 PKCS#8 key: {e}")))
}

/// The total length (header included) of the DER SEQUENCE at the start of
/// `der`, checked to fit.
fn outer_sequence_len(der: &[u8]) -> Result<usize, Error> {
    let bad = || refused("unwrapped bytes do not start with a DER SEQUENCE");
    let (header, body) = match der {
        [0x30, n, ..] if *n < 0x80 => (2, usize::from(*n)),
        [0x30, 0x81, n, ..] => (3, usize::from(*n)),
        [0x30, 0x82, hi, lo, ..] => (4, usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => return Err(bad()),
    };
    let total = header + body;
    if total > der.len() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::rand_core::OsRng;
    use p256::pkcs8::EncodePrivateKey;

    /// The HSM half in software, as SoftHSM2 does it: PKCS#8, zero padding
    /// to a multiple of 8, RFC 5649 wrap.
    fn wrap_like_the_hsm(
        device: &p256::SecretKey,
        transport_public: &p256::PublicKey,
        kdf: &str,
    ) -> (Vec<u8>, Vec<u8>) {
        let ephemeral = p256::SecretKey::random(&mut OsRng);
        let ephemeral_spki = trustline_proto::statement::p256_spki(&ephemeral.public_key());
        let shared =
            p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), transport_public.as_affine());
        let z = shared.raw_secret_bytes();
        let kek: [u8; 32] = match kdf {
            KDF_ECDH_X_COORDINATE => z[..].try_into().expect("32 bytes"),
            _ => {
                let mut h = Sha256::new();
                h.update(&z[..]);
                h.update(1u32.to_be_bytes());
                h.update(SHA256_KDF_SHARED_INFO);
                h.finalize().into()
            }
        };
        let mut plain = device.to_pkcs8_der().expect("pkcs8").as_bytes().to_vec();
        plain.resize(plain.len().next_multiple_of(8), 0);
        let wrapped = KekAes256::from(kek)
            .wrap_with_padding_vec(&plain)
            .expect("wrap");
        (ephemeral_spki, wrapped)
    }

    #[test]
    fn both_kdfs_round_trip() {
        for kdf in [KDF_ECDH_X_COORDINATE, KDF_ECDH_SHA256] {
            let transport = p256::SecretKey::random(&mut OsRng);
            let device = p256::SecretKey::random(&mut OsRng);
            let (eph, wrapped) = wrap_like_the_hsm(&device, &transport.public_key(), kdf);
            let got = unwrap_device_key(&transport, &eph, &wrapped, kdf).expect("unwrap");
            assert_eq!(got.to_bytes(), device.to_bytes(), "{kdf}");
        }
    }

    #[test]
    fn wrong_key_wrong_kdf_and_tampering_are_refused() {
        let transport = p256::SecretKey::random(&mut OsRng);
        let device = p256::SecretKey::random(&mut OsRng);
        let (eph, wrapped) =
            wrap_like_the_hsm(&device, &transport.public_key(), KDF_ECDH_X_COORDINATE);
        let other = p256::SecretKey::random(&mut OsRng);
        for (secret, kdf, blob) in [
            (&other, KDF_ECDH_X_COORDINATE, wrapped.clone()),
            (&transport, KDF_ECDH_SHA256, wrapped.clone()),
            (&transport, "hkdf", wrapped.clone()),
            (&transport, KDF_ECDH_X_COORDINATE, {
                let mut b = wrapped.clone();
                b[10] ^= 1;
                b
            }),
            (
                &transport,
                KDF_ECDH_X_COORDINATE,
                wrapped[..wrapped.len() - 8].to_vec(),
            ),
        ] {
            assert!(
                matches!(
                    unwrap_device_key(secret, &eph, &blob, kdf),
                    Err(Error::KeyDelivery(_))
                ),
                "{kdf}"
            );
        }
        assert!(matches!(
            unwrap_device_key(&transport, b"not a key", &wrapped, KDF_ECDH_X_COORDINATE),
            Err(Error::KeyDelivery(_))
        ));
    }

    #[test]
    fn sequence_lengths_are_read_from_the_header() {
        assert_eq!(outer_sequence_len(&[0x30, 0x01, 0x00, 0x00]).ok(), Some(3));
        assert!(outer_sequence_len(&[0x30, 0x05, 0x00]).is_err());
        assert!(outer_sequence_len(&[0x31, 0x01, 0x00]).is_err());
        let mut long = vec![0x30, 0x81, 0x80];
        long.resize(0x83, 0);
        assert_eq!(outer_sequence_len(&long).ok(), Some(0x83));
    }
}
