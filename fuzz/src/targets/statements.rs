//! Signed statements of every kind: `trustline_proto::statement::verify`
//! and `decode_unverified`, as every service calls them on statements from
//! RoTs, devices, owners and the OEM.
//!
//! Selector byte: bits 0–2 pick the kind (in [`KINDS`] order); bit 7 set
//! means the rest is a body to be signed by the fixed key (so decoding is
//! reached), clear means the rest is a `SignedStatement` as it arrives on
//! the wire.

use std::fmt::Debug;

use prost::Message;
use trustline_proto::statement::{self, Statement};
use trustline_proto::v1;

use super::sign_body;
use crate::fixtures::{key, spki, KeyName};
use crate::input::selector;
use crate::Outcome;

/// The statement kinds, by selector value.
pub const KINDS: [&str; 8] = [
    v1::TransportKeyStatement::DOMAIN,
    v1::ClaimReceipt::DOMAIN,
    v1::KeyAttestation::DOMAIN,
    v1::ProofOfPossession::DOMAIN,
    v1::IdentityProof::DOMAIN,
    v1::ResetProof::DOMAIN,
    v1::ProductionOrder::DOMAIN,
    v1::OwnerAuthorization::DOMAIN,
];

/// Selector bit: sign the rest as a body.
pub const SIGN: u8 = 0x80;

/// The `statement` harness.
pub fn statement(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let sign = sel & SIGN != 0;
    match sel & 0x07 {
        0 => check::<v1::TransportKeyStatement>(rest, sign),
        1 => check::<v1::ClaimReceipt>(rest, sign),
        2 => check::<v1::KeyAttestation>(rest, sign),
        3 => check::<v1::ProofOfPossession>(rest, sign),
        4 => check::<v1::IdentityProof>(rest, sign),
        5 => check::<v1::ResetProof>(rest, sign),
        6 => check::<v1::ProductionOrder>(rest, sign),
        _ => check::<v1::OwnerAuthorization>(rest, sign),
    }
}

fn check<S: Statement + PartialEq + Debug>(rest: &[u8], sign: bool) -> Outcome {
    let signed = if sign {
        sign_body::<S>(key(KeyName::Rot), rest)
    } else {
        match v1::SignedStatement::decode(rest) {
            Ok(s) => s,
            Err(_) => return Outcome::Refused,
        }
    };
    let unverified = statement::decode_unverified::<S>(&signed);
    let verified = statement::verify::<S>(&signed, spki(KeyName::Rot));
    // A signature verifies under one key only, and a signature made for one
    // kind never verifies as another.
    assert!(
        verified.is_err() || statement::verify::<S>(&signed, spki(KeyName::Forger)).is_err(),
        "a statement verified under two keys"
    );
    if verified.is_ok() {
        if S::DOMAIN == v1::IdentityProof::DOMAIN {
            assert!(statement::verify::<v1::ResetProof>(&signed, spki(KeyName::Rot)).is_err());
        } else {
            assert!(statement::verify::<v1::IdentityProof>(&signed, spki(KeyName::Rot)).is_err());
        }
    }
    match verified {
        Ok(verified) => {
            assert_eq!(
                unverified.ok().as_ref(),
                Some(&verified),
                "decode_unverified disagrees with verify"
            );
            let again = S::decode(verified.encode_to_vec().as_slice())
                .expect("a re-encoded statement decodes");
            assert_eq!(again, verified, "a statement does not survive re-encoding");
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    }
}
