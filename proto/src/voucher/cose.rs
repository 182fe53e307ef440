//! COSE_Sign1 (RFC 9052) with ES256, in the one shape vouchers use: a
//! tagged COSE_Sign1 with protected `{alg, content type, kid}`, an empty
//! unprotected header, an embedded payload and a raw `r ‖ s` signature.

use coset::{iana, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

use super::cbor::*;
use super::*;
use crate::signer::Signer;
use crate::Error;

pub(super) fn cose_structure(
    content_type: &str,
    kid: &[u8; 32],
    payload: Vec<u8>,
) -> CoseSign1Builder {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .content_type(content_type.to_owned())
        .key_id(kid.to_vec())
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
}

pub(super) fn cose_sign(
    content_type: &str,
    payload: Vec<u8>,
    signer: &dyn Signer,
) -> Result<Vec<u8>, Error> {
    let kid = key_id(signer.public_key_der());
    let cose = cose_structure(content_type, &kid, payload)
        .try_create_signature(b"", |tbs| {
            let der = signer.sign(tbs)?;
            der_to_raw(&der)
        })?
        .build();
    cose.to_tagged_vec()
        .map_err(|e| Error::Signer(format!("cannot encode a COSE_Sign1: {e}")))
}

/// RFC 9053 §2.1: ECDSA signatures in COSE are `r ‖ s`, each 32 bytes for
/// P-256; `Signer` returns DER.
pub(super) fn der_to_raw(der: &[u8]) -> Result<Vec<u8>, Error> {
    let sig = p256::ecdsa::Signature::from_der(der)
        .map_err(|e| Error::Signer(format!("signer returned a malformed DER signature: {e}")))?;
    Ok(sig.to_bytes().to_vec())
}

/// Strictly parses a tagged COSE_Sign1 of our one shape; returns it and its
/// key id.
pub(super) fn parse_cose(
    bytes: &[u8],
    content_type: &str,
    index: usize,
) -> Result<(CoseSign1, [u8; 32]), Error> {
    let what = if content_type == ENTRY_CONTENT_TYPE {
        format!("entry {index}")
    } else {
        "device binding".to_owned()
    };
    if bytes.len() > MAX_ENTRY_LEN {
        return Err(Error::VoucherTooLarge {
            len: bytes.len(),
            max: MAX_ENTRY_LEN,
        });
    }
    let cose = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| malformed(format!("{what} is not a tagged COSE_Sign1: {e}")))?;
    let header = &cose.protected.header;
    if header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::ES256)) {
        return Err(malformed(format!("{what} is not signed with ES256")));
    }
    if header.content_type != Some(coset::ContentType::Text(content_type.to_owned())) {
        return Err(malformed(format!(
            "{what} does not have content type {content_type}"
        )));
    }
    let kid: [u8; 32] = header
        .key_id
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("{what} key id is not 32 bytes")))?;
    let Some(payload) = cose.payload.clone() else {
        return Err(malformed(format!("{what} has a detached payload")));
    };
    if cose.signature.len() != COSE_SIGNATURE_LEN {
        return Err(malformed(format!("{what} signature is not 64 bytes")));
    }
    // Anything else (other header parameters, an unprotected header, a
    // different order or encoding) makes the canonical bytes differ.
    let canonical = cose_structure(content_type, &kid, payload)
        .signature(cose.signature.clone())
        .build()
        .to_tagged_vec()
        .map_err(|e| malformed(format!("{what} cannot be re-encoded: {e}")))?;
    if canonical != bytes {
        return Err(malformed(format!("{what} is not in canonical form")));
    }
    Ok((cose, kid))
}

pub(super) fn cose_signature_ok(cose: &CoseSign1, spki: &[u8]) -> bool {
    // Strict: a high-S twin would be other COSE bytes for the same entry.
    cose.verify_signature(b"", |sig, tbs| {
        crate::ecdsa::verify_strict(spki, tbs, sig, crate::ecdsa::SignatureEncoding::Raw)
    })
    .is_ok()
}
