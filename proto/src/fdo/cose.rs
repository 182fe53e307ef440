//! The COSE_Sign1 (RFC 9052 §4.2) of an FDO voucher entry: tag 18, a
//! protected header naming ES256 (`{1: -7}`, FDO's `OVSignType` for
//! SECP256R1 keys), an unprotected header, the embedded payload and a
//! 64-byte `r ‖ s` signature (RFC 9053 §2.1) over `Sig_structure =
//! ["Signature1", protected, h'', payload]` — FDO 1.1 uses no external AAD.
//!
//! Entries Trustline signs have exactly `{1: -7}` and `{}`. Entries from
//! other FDO tools are read as they are: the protected header must name
//! ES256 and carry no `crit` (a critical parameter this code cannot honour
//! is a refusal); other parameters and the unprotected header are kept in
//! the entry's bytes, which is what the next entry hashes.

use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

use super::cbor::{self, malformed, Kind, Writer};
use super::{COSE_ALG_ES256, COSE_SIGN1_TAG};
use crate::signer::Signer;
use crate::statement::parse_p256_spki;
use crate::Error;

/// `{1: -7}`, the protected header Trustline writes.
const PROTECTED_ES256: [u8; 3] = [0xa1, 0x01, 0x26];
const SIGNATURE_LEN: usize = 64;
const LABEL_ALG: i64 = 1;
const LABEL_CRIT: i64 = 2;

/// A parsed entry COSE_Sign1.
#[derive(Clone, Debug)]
pub(crate) struct Sign1<'a> {
    pub(crate) protected: &'a [u8],
    pub(crate) payload: &'a [u8],
    pub(crate) signature: &'a [u8],
}

/// The `Sig_structure` signed for a COSE_Sign1 with empty external AAD.
pub(crate) fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    Writer::new()
        .array(4)
        .text("Signature1")
        .bytes(protected)
        .bytes(&[])
        .bytes(payload)
        .finish()
}

/// Parses a tagged COSE_Sign1 of an entry (`what` names it in refusals).
pub(crate) fn parse<'a>(bytes: &'a [u8], what: &str) -> Result<Sign1<'a>, Error> {
    let item = cbor::parse(bytes, what)?;
    let Kind::Tag(tag, inner) = &item.kind else {
        return Err(malformed(format!("{what} is not a tagged COSE_Sign1")));
    };
    if *tag != COSE_SIGN1_TAG {
        return Err(malformed(format!("{what} has tag {tag}, not 18")));
    }
    let parts = inner.array_of(4, what)?;
    let protected = parts[0].bytes("COSE protected header")?;
    parts[1].map("COSE unprotected header")?;
    if parts[2].is_null() {
        return Err(malformed(format!("{what} has a detached payload")));
    }
    let payload = parts[2].bytes("COSE payload")?;
    let signature = parts[3].bytes("COSE signature")?;
    if signature.len() != SIGNATURE_LEN {
        return Err(malformed(format!("{what} signature is not 64 bytes")));
    }
    check_protected(protected, what)?;
    Ok(Sign1 {
        protected,
        payload,
        signature,
    })
}

fn check_protected(protected: &[u8], what: &str) -> Result<(), Error> {
    let header = cbor::parse(protected, "COSE protected header")?;
    let mut alg = None;
    for (label, value) in header.map("COSE protected header")? {
        match label.int("COSE header label") {
            Ok(LABEL_ALG) => alg = Some(value.int("COSE alg")?),
            Ok(LABEL_CRIT) => {
                return Err(Error::FdoUnsupported(format!(
                    "{what} has critical COSE header parameters"
                )))
            }
            _ => {}
        }
    }
    match alg {
        Some(COSE_ALG_ES256) => Ok(()),
        Some(other) => Err(Error::FdoUnsupported(format!(
            "{what} is signed with COSE algorithm {other}, not ES256 (-7)"
        ))),
        None => Err(malformed(format!("{what} names no COSE algorithm"))),
    }
}

/// Whether `sign1` verifies under the P-256 key `spki`.
pub(crate) fn verifies(sign1: &Sign1<'_>, spki: &[u8]) -> bool {
    let Ok(key) = parse_p256_spki(spki) else {
        return false;
    };
    let point = p256::EncodedPoint::from(key);
    let tbs = sig_structure(sign1.protected, sign1.payload);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_bytes())
        .verify(&tbs, sign1.signature)
        .is_ok()
}

/// Signs `payload` as a Trustline-made entry: `18([h'a10126', {}, payload,
/// r ‖ s])` with `s` in the low half.
///
/// # Errors
/// [`Error::Signer`] when the signer fails or returns a malformed signature.
pub(crate) fn sign(payload: &[u8], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    let der = signer.sign(&sig_structure(&PROTECTED_ES256, payload))?;
    let sig = p256::ecdsa::Signature::from_der(&der)
        .map_err(|e| Error::Signer(format!("signer returned a malformed DER signature: {e}")))?;
    let sig = sig.normalize_s().unwrap_or(sig);
    Ok(Writer::new()
        .tag(COSE_SIGN1_TAG)
        .array(4)
        .bytes(&PROTECTED_ES256)
        .map(0)
        .bytes(payload)
        .bytes(&sig.to_bytes())
        .finish())
}
