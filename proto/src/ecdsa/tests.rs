//! Strict ECDSA: high-S twins and non-canonical encodings are refused,
//! canonical keys are one per point (issue 12, "Smaller").

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

use super::*;

const MESSAGE: &[u8] = b"trustline.v1.ClaimReceipt\0body";

/// The SPKI prefix for an uncompressed P-256 point (id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes).
const UNCOMPRESSED_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
/// The same for a compressed point (BIT STRING of 34 bytes).
const COMPRESSED_PREFIX: &str = "3039301306072a8648ce3d020106082a8648ce3d030107032200";

fn key() -> SigningKey {
    SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
}

fn spki_of(key: &SigningKey) -> Vec<u8> {
    p256_spki(&p256::PublicKey::from(key.verifying_key()))
}

fn compressed_spki_of(key: &SigningKey) -> Vec<u8> {
    let mut spki = hex::decode(COMPRESSED_PREFIX).expect("hex");
    spki.extend_from_slice(key.verifying_key().to_encoded_point(true).as_bytes());
    spki
}

/// A low-S signature over `MESSAGE` and its high-S twin `(r, n − s)`.
fn twins(key: &SigningKey) -> (Signature, Signature) {
    let digest = Sha256::digest(MESSAGE);
    let sig: Signature = key.sign_prehash(&digest).expect("sign");
    let low = normalize_s(sig);
    let high = Signature::from_scalars(low.r(), -*low.s()).expect("twin");
    (low, high)
}

#[test]
fn a_high_s_twin_is_refused_in_der_and_raw_form_but_is_a_valid_x509_signature() {
    let k = key();
    let spki = spki_of(&k);
    let (low, high) = twins(&k);
    assert!(is_low_s(&low));
    assert!(!is_low_s(&high));
    // The twin is a genuine signature: lenient X.509 verification takes it.
    verify_x509(&spki, MESSAGE, high.to_der().as_bytes()).expect("the twin verifies leniently");
    verify_x509(&spki, MESSAGE, low.to_der().as_bytes()).expect("low-S verifies leniently");

    verify_strict(
        &spki,
        MESSAGE,
        low.to_der().as_bytes(),
        SignatureEncoding::Der,
    )
    .expect("low-S DER verifies");
    verify_strict(&spki, MESSAGE, &low.to_bytes(), SignatureEncoding::Raw)
        .expect("low-S raw verifies");
    for (encoding, bytes) in [
        (SignatureEncoding::Der, high.to_der().as_bytes().to_vec()),
        (SignatureEncoding::Raw, high.to_bytes().to_vec()),
    ] {
        let err = verify_strict(&spki, MESSAGE, &bytes, encoding).expect_err("high-S refused");
        assert!(
            matches!(err, Error::BadSignature("signature")),
            "{encoding:?}: {err:?}"
        );
    }
    let prepared = VerifyingKey::from_spki(&spki).expect("key");
    assert!(prepared
        .verify_strict(MESSAGE, high.to_der().as_bytes(), SignatureEncoding::Der)
        .is_err());
    assert!(prepared
        .verify_strict(MESSAGE, &high.to_bytes(), SignatureEncoding::Raw)
        .is_err());
    prepared
        .verify_strict(MESSAGE, &low.to_bytes(), SignatureEncoding::Raw)
        .expect("prepared key verifies");
    prepared
        .verify_x509(MESSAGE, high.to_der().as_bytes())
        .expect("prepared key, lenient");
}

#[test]
fn a_signature_in_the_wrong_encoding_or_padded_der_is_refused() {
    let k = key();
    let spki = spki_of(&k);
    let (low, _) = twins(&k);
    let der = low.to_der().as_bytes().to_vec();
    // r with a superfluous leading zero: same integers, other bytes.
    let r_len = usize::from(der[3]);
    let mut padded = vec![0x30, der[1] + 1, 0x02, der[3] + 1, 0x00];
    padded.extend_from_slice(&der[4..4 + r_len]);
    padded.extend_from_slice(&der[4 + r_len..]);
    assert!(verify_strict(&spki, MESSAGE, &padded, SignatureEncoding::Der).is_err());
    assert!(verify_strict(&spki, MESSAGE, &der, SignatureEncoding::Raw).is_err());
    assert!(verify_strict(&spki, MESSAGE, &low.to_bytes(), SignatureEncoding::Der).is_err());
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(verify_strict(&spki, MESSAGE, &trailing, SignatureEncoding::Der).is_err());
    assert!(verify_strict(&spki, b"another message", &der, SignatureEncoding::Der).is_err());
}

#[test]
fn compressed_and_uncompressed_forms_of_one_key_have_one_canonical_spki() {
    let k = key();
    let uncompressed = spki_of(&k);
    let compressed = compressed_spki_of(&k);
    assert!(hex::encode(&uncompressed).starts_with(UNCOMPRESSED_PREFIX));
    assert_ne!(compressed, uncompressed);
    assert_eq!(
        canonical_p256_spki(&compressed).expect("compressed"),
        uncompressed
    );
    assert_eq!(
        canonical_p256_spki(&uncompressed).expect("uncompressed"),
        uncompressed
    );
    assert_eq!(
        VerifyingKey::from_spki(&compressed)
            .expect("key")
            .canonical_spki(),
        uncompressed.as_slice()
    );
    // A signature checks out under either form.
    let (low, _) = twins(&k);
    verify_strict(
        &compressed,
        MESSAGE,
        &low.to_bytes(),
        SignatureEncoding::Raw,
    )
    .expect("compressed key verifies");
}

#[test]
fn a_non_p256_or_malformed_key_is_refused() {
    let k = key();
    let good = spki_of(&k);
    // The same point under secp384r1's OID.
    let mut p384 = good.clone();
    let at = hex::encode(&p384)
        .find("06082a8648ce3d030107")
        .expect("curve oid")
        / 2;
    p384.splice(at..at + 10, hex::decode("06052b81040022").expect("hex"));
    p384[1] -= 3;
    p384[3] -= 3;
    // An Ed25519 key (RFC 8410 example).
    let ed25519 = hex::decode(
        "302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1",
    )
    .expect("hex");
    let mut off_curve = good.clone();
    let last = off_curve.len() - 1;
    off_curve[last] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    for (what, bad) in [
        ("p384", p384),
        ("ed25519", ed25519),
        ("off curve", off_curve),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("trailing byte", trailing),
        ("empty", Vec::new()),
        ("oversized", vec![0x30; MAX_SPKI_LEN + 1]),
    ] {
        assert!(
            matches!(canonical_p256_spki(&bad), Err(Error::NotP256(_))),
            "{what}"
        );
        assert!(VerifyingKey::from_spki(&bad).is_err(), "{what}");
    }
}

#[test]
fn normalising_is_idempotent_and_keeps_r() {
    let k = key();
    let (low, high) = twins(&k);
    assert_eq!(normalize_s(high), low);
    assert_eq!(normalize_s(low), low);
    assert_eq!(high.r().to_bytes(), low.r().to_bytes());
    assert!(parse_strict(&high.to_bytes(), SignatureEncoding::Raw).is_err());
    assert_eq!(
        parse_strict(&low.to_bytes(), SignatureEncoding::Raw).expect("low"),
        low
    );
}

#[test]
fn a_high_s_twin_of_a_voucher_entry_is_refused() {
    use crate::signer::{Signer, SoftwareSigner};
    use crate::voucher::{cert_chain_hash, sign_entry, Voucher, VoucherHeader};
    use coset::{CoseSign1, TaggedCborSerializable};

    let oem = SoftwareSigner::generate();
    let owner = SoftwareSigner::generate();
    let header = VoucherHeader::new(
        &"cd".repeat(32),
        "TL-000007",
        cert_chain_hash(&[b"device".to_vec()]),
        oem.public_key_der(),
    )
    .expect("header");
    let voucher = Voucher::new(header);
    let payload = voucher
        .next_entry_payload(owner.public_key_der())
        .expect("payload");
    let genuine = sign_entry(&payload, &oem).expect("sign");
    let mut cose = CoseSign1::from_tagged_slice(&genuine).expect("cose");
    let low = Signature::from_slice(&cose.signature).expect("r||s");
    assert!(is_low_s(&low), "the signer must emit low-S");
    let twin = Signature::from_scalars(low.r(), -*low.s()).expect("twin");
    cose.signature = twin.to_bytes().to_vec();
    let malleated = cose.to_tagged_vec().expect("encode");
    assert_ne!(malleated, genuine);

    let err = voucher
        .clone()
        .push_entry(&malleated)
        .expect_err("the twin must be refused");
    assert!(
        matches!(err, Error::VoucherBadSignature { entry: 0 }),
        "{err:?}"
    );
    voucher
        .clone()
        .push_entry(&genuine)
        .expect("the genuine entry is accepted");
}

#[test]
fn the_compressed_encoder_writes_the_other_form_of_the_same_key() {
    let k = key();
    let public = p256::PublicKey::from(k.verifying_key());
    assert_eq!(compressed_p256_spki(&public), compressed_spki_of(&k));
    assert_eq!(
        canonical_p256_spki(&compressed_p256_spki(&public)).expect("canonical"),
        spki_of(&k)
    );
}

/// Issue 16.3: a check repeated on the same inputs is answered from what
/// this process verified, and nothing else is: another key, another
/// message or a flipped bit is verified (and refused) as before.
#[test]
fn a_remembered_verification_answers_only_its_own_inputs() {
    let k = key();
    let spki = spki_of(&k);
    let (low, _) = twins(&k);
    let der = low.to_der().as_bytes().to_vec();
    for _ in 0..2 {
        verify_strict(&spki, MESSAGE, &der, SignatureEncoding::Der).expect("genuine, strict");
        verify_x509(&spki, MESSAGE, &der).expect("genuine, x509");
    }
    let other = spki_of(&key());
    assert!(verify_strict(&other, MESSAGE, &der, SignatureEncoding::Der).is_err());
    assert!(verify_x509(&other, MESSAGE, &der).is_err());
    let mut longer = MESSAGE.to_vec();
    longer.push(0);
    assert!(verify_strict(&spki, &longer, &der, SignatureEncoding::Der).is_err());
    assert!(verify_x509(&spki, &longer, &der).is_err());
    let mut raw = low.to_bytes().to_vec();
    raw[40] ^= 1;
    assert!(verify_strict(&spki, MESSAGE, &raw, SignatureEncoding::Raw).is_err());
    raw[40] ^= 1;
    verify_strict(&spki, MESSAGE, &raw, SignatureEncoding::Raw).expect("genuine, raw");

    // The verifiers go through the process's table: what verified is held
    // (verified again first, in case a concurrent test took its slot).
    let point = p256::EncodedPoint::from(p256::PublicKey::from(k.verifying_key()));
    let held = |check: &dyn Fn() -> bool, algorithm, signature: &[u8]| {
        (0..3).any(|_| {
            check() && verified::TABLE.holds(algorithm, point.as_bytes(), MESSAGE, signature)
        })
    };
    assert!(held(
        &|| verify_strict(&spki, MESSAGE, &der, SignatureEncoding::Der).is_ok(),
        verified::Algorithm::Fixed,
        &raw,
    ));
    assert!(held(
        &|| verify_x509(&spki, MESSAGE, &der).is_ok(),
        verified::Algorithm::Asn1,
        &der,
    ));
    assert!(!verified::TABLE.holds(verified::Algorithm::Fixed, point.as_bytes(), &longer, &raw));
}
