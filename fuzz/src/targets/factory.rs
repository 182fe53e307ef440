//! The factory's checks of what stations and the OEM send: signed
//! production orders, claim receipts and their stateless nonces,
//! transport-key statements and RoT attestation chains (2.4.14.17/18/22, invariant 7), through the same
//! `provisioner` functions the line runs.

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use prost::Message;
use provisioner::claim::ClaimedRot;
use provisioner::nonce::{self, Binding, ClaimKey, Purpose};
use provisioner::order_book::{check_usable, KnownOrder};
use provisioner::orders::Order;
use provisioner::vendors::VendorRoots;
use trustline_proto::statement;
use trustline_proto::v1;

use super::sign_body;
use crate::fixtures::{self, key, spki, KeyName, NOW_MS, SITE};
use crate::input::selector;
use crate::Outcome;

/// Selector: the rest is a `SignedStatement` (or message) off the wire.
pub const WIRE: u8 = 0;
/// Selector: the rest is a body, signed by the key the check trusts.
pub const SIGNED: u8 = 1;
/// Selector: the rest is a body, signed by a key the check does not trust.
pub const FORGED: u8 = 2;

/// The `order` harness: `Order::verify` as `OpenOrder` runs it, then the
/// checks every later step runs on the order.
pub fn order(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let signed = match sel % 3 {
        WIRE => match v1::SignedStatement::decode(rest) {
            Ok(s) => s,
            Err(_) => return Outcome::Refused,
        },
        SIGNED => sign_body::<v1::ProductionOrder>(key(KeyName::Order), rest),
        _ => sign_body::<v1::ProductionOrder>(key(KeyName::Forger), rest),
    };
    let Ok(order) = Order::verify(&signed, spki(KeyName::Order), &fixtures::vendor_names()) else {
        return Outcome::Refused;
    };
    assert_ne!(
        sel % 3,
        FORGED,
        "an order signed by another key was accepted"
    );
    // What was accepted is exactly what was signed.
    let body: v1::ProductionOrder =
        statement::decode_unverified(&signed).expect("an accepted order decodes");
    assert_eq!(
        body,
        order.to_proto(),
        "the accepted order differs from the signed one"
    );
    let s = &order.serials;
    assert!(!s.is_empty() && s.first <= s.last);
    assert!(order.quantity >= 1 && order.quantity <= s.len());
    for n in [s.first, s.last, s.first + (s.last - s.first) / 2] {
        assert_eq!(
            s.parse(&s.format(n)),
            Some(n),
            "serial {n} does not round-trip"
        );
    }
    assert!(order.not_before_ms < order.not_after_ms);
    let _ = s.parse(&String::from_utf8_lossy(rest));
    let known = KnownOrder {
        order,
        closed: AtomicBool::new(false),
    };
    let station = provisioner::Actor {
        id: format!("station/{SITE}/fuzz"),
        scope: transport::SiteScope::Site(SITE.into()),
    };
    let admin = provisioner::Actor {
        id: "admin/hq/fuzz".into(),
        scope: transport::SiteScope::Any,
    };
    let _ = check_usable(&known, &station, NOW_MS);
    let _ = check_usable(&known, &admin, NOW_MS);
    Outcome::Accepted
}

/// Appends `nonce = value` (field 2) to a `ClaimReceipt` body: protobuf
/// keeps the last value of a field, so whatever the fuzzer's body says, the
/// receipt answers the nonce the harness issued.
pub fn with_nonce(body: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.push(0x12);
    // Claim nonces are at most 96 bytes: a one-byte length.
    out.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(nonce);
    out
}

/// The `claim_receipt` harness: the checks `CompleteClaim` makes on a
/// receipt before anything is recorded, in its order — decode, open the
/// stateless nonce, check it was issued for this RoT, order, site, caller
/// and attestation, verify the RoT's signature, compare the names — against
/// a nonce issued for the fixed RoT.
///
/// Selector [`WIRE`]: the rest is a `SignedStatement`; [`SIGNED`] /
/// [`FORGED`]: the rest is a receipt body, made to answer the issued
/// nonce and signed by the RoT (or by another key).
pub fn claim_receipt(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let claim_key = ClaimKey::from_bytes(&[7; 32]).expect("a 32-byte key");
    let attestation = nonce::attestation_digest(&v1::RotAttestation::default());
    let rot_id = fixtures::rot_id();
    let caller = format!("station/{SITE}/fuzz");
    let binding = Binding {
        rot_id: &rot_id,
        order_id: "order-1",
        site: SITE,
        caller: &caller,
        attestation: &attestation,
    };
    let issued = nonce::mint(&claim_key, Purpose::Claim, &binding, NOW_MS + 300_000)
        .expect("a nonce for a valid order id");
    let receipt = match sel % 3 {
        WIRE => match v1::SignedStatement::decode(rest) {
            Ok(s) => s,
            Err(_) => return Outcome::Refused,
        },
        SIGNED => sign_body::<v1::ClaimReceipt>(key(KeyName::Rot), &with_nonce(rest, &issued)),
        _ => sign_body::<v1::ClaimReceipt>(key(KeyName::Forger), &with_nonce(rest, &issued)),
    };
    let Ok(body) = statement::decode_unverified::<v1::ClaimReceipt>(&receipt) else {
        return Outcome::Refused;
    };
    let Ok(opened) = nonce::Opened::parse(&body.nonce) else {
        return Outcome::Refused;
    };
    let Ok(purpose) = opened.check(&claim_key, &binding) else {
        return Outcome::Refused;
    };
    // Only the issued nonce checks.
    assert_eq!(purpose, Purpose::Claim);
    assert_eq!(
        body.nonce, issued,
        "a nonce the harness did not issue checked"
    );
    assert!(opened.expires_at_ms > NOW_MS);
    let Ok(verified) = statement::verify::<v1::ClaimReceipt>(&receipt, spki(KeyName::Rot)) else {
        return Outcome::Refused;
    };
    assert_ne!(
        sel % 3,
        FORGED,
        "a receipt signed by another key was accepted"
    );
    if verified.rot_id != rot_id || verified.anchor_sha256 != fixtures::anchor_sha256() {
        return Outcome::Refused;
    }
    assert_eq!(verified.nonce, issued);
    Outcome::Accepted
}

/// A claimed RoT whose transport-key statement is `signed`.
fn claimed_rot(signed: v1::SignedStatement) -> ClaimedRot {
    ClaimedRot {
        rot_id: fixtures::rot_id(),
        attestation_key: spki(KeyName::Rot).to_vec(),
        nonce: vec![7; 32],
        order_id: "order-1".into(),
        site: SITE.into(),
        transport_key: Some(signed),
        verified_transport_key: OnceLock::new(),
        claimed_seq: 1,
    }
}

/// The `transport_key` harness: `ClaimedRot::transport_key`, the check
/// that stands between a RoT's statement and wrapping a device key to it.
pub fn transport_key(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let signed = match sel % 3 {
        WIRE => match v1::SignedStatement::decode(rest) {
            Ok(s) => s,
            Err(_) => return Outcome::Refused,
        },
        SIGNED => sign_body::<v1::TransportKeyStatement>(key(KeyName::Rot), rest),
        _ => sign_body::<v1::TransportKeyStatement>(key(KeyName::Forger), rest),
    };
    let rot = claimed_rot(signed);
    let Ok(first) = rot.transport_key().map(<[u8]>::to_vec) else {
        return Outcome::Refused;
    };
    assert_ne!(
        sel % 3,
        FORGED,
        "a transport key signed by another key was accepted"
    );
    assert!(statement::parse_p256_spki(&first).is_ok());
    assert_eq!(rot.transport_key().ok(), Some(first.as_slice()));
    Outcome::Accepted
}

/// Selector values of the `rot_attestation` harness.
pub mod attestation {
    /// The rest is a `RotAttestation` message off the wire.
    pub const WIRE: u8 = 0;
    /// The rest is a die certificate issued by the first vendor's
    /// intermediate, which is appended.
    pub const DIE_UNDER_INTERMEDIATE: u8 = 1;
    /// The rest is a die certificate issued by a vendor root directly.
    pub const DIE_UNDER_ROOT: u8 = 2;
    /// The rest is an intermediate certificate, presented above a fixed
    /// die of the first vendor.
    pub const INTERMEDIATE: u8 = 3;
}

/// A die of the first vendor, fixed, for [`attestation::INTERMEDIATE`].
fn fixed_die() -> &'static [u8] {
    static DIE: OnceLock<Vec<u8>> = OnceLock::new();
    DIE.get_or_init(|| {
        let mut vendors = fixtures::ic_vendors();
        let rot = vendors[0]
            .manufacture()
            .expect("a seeded vendor makes a die");
        rot.attestation_chain()[0].clone()
    })
}

/// The `rot_attestation` harness: the vendor-chain verification
/// `BeginClaim` runs on a blank RoT (invariant 7), then the RoT's
/// transport-key statement against the attested key.
pub fn rot_attestation(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let (chain, transport) = match sel % 4 {
        attestation::WIRE => match v1::RotAttestation::decode(rest) {
            Ok(a) => (a.cert_chain, a.transport_key),
            Err(_) => return Outcome::Refused,
        },
        attestation::DIE_UNDER_INTERMEDIATE => (
            vec![rest.to_vec(), fixtures::vendor_intermediate().to_vec()],
            None,
        ),
        attestation::DIE_UNDER_ROOT => (vec![rest.to_vec()], None),
        _ => (vec![fixed_die().to_vec(), rest.to_vec()], None),
    };
    let roots = VendorRoots::new(fixtures::vendor_roots()).expect("the fixed roots are valid");
    let first = roots.verify(&chain, NOW_MS);
    // The second run takes the verified-issuer cache: it must agree.
    let second = roots.verify(&chain, NOW_MS);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                (&a.rot_id, &a.attestation_key, &a.vendor),
                (&b.rot_id, &b.attestation_key, &b.vendor)
            );
        }
        (Err(_), Err(_)) => {}
        _ => panic!("the issuer cache changed the verdict: {first:?} then {second:?}"),
    }
    let Ok(rot) = first else {
        return Outcome::Refused;
    };
    assert_eq!(
        rot.rot_id,
        trustline_proto::identity::rot_id(&rot.attestation_key)
    );
    assert!(statement::parse_p256_spki(&rot.attestation_key).is_ok());
    assert!(fixtures::vendor_names().contains(&rot.vendor));
    if let Some(signed) = transport {
        let claimed = ClaimedRot {
            rot_id: rot.rot_id.clone(),
            attestation_key: rot.attestation_key.clone(),
            ..claimed_rot(signed)
        };
        if let Ok(key) = claimed.transport_key() {
            assert!(statement::parse_p256_spki(key).is_ok());
        }
    }
    Outcome::Accepted
}
