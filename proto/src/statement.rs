//! Signed statements: a protobuf message and a P-256 signature over it.
//!
//! The signature is ECDSA P-256 / SHA-256 over `domain ‖ 0x00 ‖ body`, where
//! `domain` is the full protobuf name of the message type. The domain keeps a
//! signature made for one kind of statement (say a claim receipt) from being
//! accepted as another (say a key attestation). The body is kept as the exact
//! signed bytes and decoded only after the signature checks out ("parse,
//! don't validate": [`verify`] returns the decoded message or an error).
//!
//! Signatures are checked by [`crate::ecdsa::verify_strict`]: a high-S
//! twin of a valid signature, or a DER encoding other than the canonical
//! one, is a bad signature, so one statement has one accepted byte string
//! per signing (issue 12, "ECDSA malleability"). Every Trustline signer
//! emits low-S.

pub use crate::ecdsa::{canonical_p256_spki, p256_spki, parse_p256_spki, MAX_SPKI_LEN};
use crate::ecdsa::{verify_strict, SignatureEncoding};
use crate::signer::Signer;
use crate::v1;
use crate::Error;

/// Largest statement body accepted, in bytes.
pub const MAX_BODY_LEN: usize = 16 * 1024;
/// Largest DER ECDSA P-256 signature (two 33-byte integers and headers).
pub const MAX_SIGNATURE_LEN: usize = crate::ecdsa::MAX_DER_SIGNATURE_LEN;

/// A protobuf message that can be signed as a statement.
pub trait Statement: prost::Message + Default {
    /// The domain separator: the message's full protobuf name.
    const DOMAIN: &'static str;
}

macro_rules! statements {
    ($($ty:ident),* $(,)?) => {
        $(impl Statement for v1::$ty {
            const DOMAIN: &'static str = concat!("trustline.v1.", stringify!($ty));
        })*
    };
}

statements!(
    TransportKeyStatement,
    ClaimReceipt,
    KeyAttestation,
    ProofOfPossession,
    IdentityProof,
    ResetProof,
    ProductionOrder,
    OwnerAuthorization,
);

/// The bytes a statement's signature covers.
pub fn signing_input(domain: &str, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain.len() + 1 + body.len());
    input.extend_from_slice(domain.as_bytes());
    input.push(0);
    input.extend_from_slice(body);
    input
}

/// Encodes and signs `statement`.
///
/// # Errors
/// [`Error::Signer`] when the signer fails.
pub fn sign<S: Statement>(
    signer: &dyn Signer,
    statement: &S,
) -> Result<v1::SignedStatement, Error> {
    let body = statement.encode_to_vec();
    let signature = signer.sign(&signing_input(S::DOMAIN, &body))?;
    Ok(v1::SignedStatement { body, signature })
}

/// Verifies `signed` as a statement of type `S` by the P-256 key
/// `spki_der`, then decodes it.
///
/// # Errors
/// [`Error::BodyTooLarge`], [`Error::NotP256`], [`Error::BadSignature`] or
/// [`Error::Decode`], checked in that order.
pub fn verify<S: Statement>(signed: &v1::SignedStatement, spki_der: &[u8]) -> Result<S, Error> {
    if signed.body.len() > MAX_BODY_LEN {
        return Err(Error::BodyTooLarge {
            len: signed.body.len(),
            max: MAX_BODY_LEN,
        });
    }
    verify_signature(
        spki_der,
        &signing_input(S::DOMAIN, &signed.body),
        &signed.signature,
    )
    .map_err(|e| match e {
        Error::BadSignature(_) => Error::BadSignature(S::DOMAIN),
        other => other,
    })?;
    S::decode(signed.body.as_slice()).map_err(|source| Error::Decode {
        domain: S::DOMAIN,
        source,
    })
}

/// Decodes a statement's body without checking its signature: only for
/// learning which key to verify it with (e.g. the `rot_id` a receipt names).
/// The result must not be trusted until [`verify`] succeeds.
///
/// # Errors
/// [`Error::BodyTooLarge`] or [`Error::Decode`].
pub fn decode_unverified<S: Statement>(signed: &v1::SignedStatement) -> Result<S, Error> {
    if signed.body.len() > MAX_BODY_LEN {
        return Err(Error::BodyTooLarge {
            len: signed.body.len(),
            max: MAX_BODY_LEN,
        });
    }
    S::decode(signed.body.as_slice()).map_err(|source| Error::Decode {
        domain: S::DOMAIN,
        source,
    })
}

/// Verifies a DER ECDSA P-256 / SHA-256 signature over `message`, strictly
/// (low-S, canonical DER: [`crate::ecdsa::verify_strict`]).
///
/// # Errors
/// [`Error::NotP256`] for a bad key, [`Error::BadSignature`] otherwise.
pub fn verify_signature(
    spki_der: &[u8],
    message: &[u8],
    signature_der: &[u8],
) -> Result<(), Error> {
    verify_strict(spki_der, message, signature_der, SignatureEncoding::Der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::SoftwareSigner;

    fn receipt() -> v1::ClaimReceipt {
        v1::ClaimReceipt {
            rot_id: "ab".repeat(32),
            nonce: vec![7; 32],
            anchor_sha256: vec![9; 32],
        }
    }

    #[test]
    fn round_trip() {
        let key = SoftwareSigner::generate();
        let signed = sign(&key, &receipt()).expect("sign");
        let back: v1::ClaimReceipt = verify(&signed, key.public_key_der()).expect("verify");
        assert_eq!(back, receipt());
    }

    #[test]
    fn wrong_key_is_refused() {
        let key = SoftwareSigner::generate();
        let other = SoftwareSigner::generate();
        let signed = sign(&key, &receipt()).expect("sign");
        let err =
            verify::<v1::ClaimReceipt>(&signed, other.public_key_der()).expect_err("wrong key");
        assert!(matches!(
            err,
            Error::BadSignature("trustline.v1.ClaimReceipt")
        ));
    }

    #[test]
    fn a_signature_for_one_kind_is_refused_as_another() {
        let key = SoftwareSigner::generate();
        let signed = sign(&key, &receipt()).expect("sign");
        let err =
            verify::<v1::KeyAttestation>(&signed, key.public_key_der()).expect_err("wrong kind");
        assert!(matches!(err, Error::BadSignature(_)));
    }

    #[test]
    fn any_flipped_body_byte_is_refused() {
        let key = SoftwareSigner::generate();
        let signed = sign(&key, &receipt()).expect("sign");
        for i in 0..signed.body.len() {
            let mut bad = signed.clone();
            bad.body[i] ^= 0x01;
            assert!(
                verify::<v1::ClaimReceipt>(&bad, key.public_key_der()).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn oversized_and_truncated_inputs_are_refused() {
        let key = SoftwareSigner::generate();
        let mut signed = sign(&key, &receipt()).expect("sign");
        signed.signature.truncate(10);
        assert!(verify::<v1::ClaimReceipt>(&signed, key.public_key_der()).is_err());
        let huge = v1::SignedStatement {
            body: vec![0; MAX_BODY_LEN + 1],
            signature: vec![],
        };
        assert!(matches!(
            verify::<v1::ClaimReceipt>(&huge, key.public_key_der()),
            Err(Error::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn a_high_s_twin_of_a_statement_signature_is_refused() {
        let key = SoftwareSigner::generate();
        let signed = sign(&key, &receipt()).expect("sign");
        let sig = p256::ecdsa::Signature::from_der(&signed.signature).expect("der");
        assert!(crate::ecdsa::is_low_s(&sig));
        let twin = p256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).expect("twin");
        let mut forged = signed.clone();
        forged.signature = twin.to_der().as_bytes().to_vec();
        let input = signing_input(v1::ClaimReceipt::DOMAIN, &signed.body);
        crate::ecdsa::verify_x509(key.public_key_der(), &input, &forged.signature)
            .expect("the twin is a mathematically valid signature");
        assert!(matches!(
            verify::<v1::ClaimReceipt>(&forged, key.public_key_der()),
            Err(Error::BadSignature("trustline.v1.ClaimReceipt"))
        ));
        verify::<v1::ClaimReceipt>(&signed, key.public_key_der()).expect("the original verifies");
    }

    #[test]
    fn a_non_p256_key_is_refused_by_name() {
        // An Ed25519 SubjectPublicKeyInfo (RFC 8410 example).
        let ed25519 = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x19, 0xbf,
            0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc, 0x3b, 0x96,
            0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad, 0x70, 0x31,
            0x66, 0xe1,
        ];
        let key = SoftwareSigner::generate();
        let signed = sign(&key, &receipt()).expect("sign");
        assert!(matches!(
            verify::<v1::ClaimReceipt>(&signed, &ed25519),
            Err(Error::NotP256(_))
        ));
    }
}
