//! Ownership vouchers (2.4.14.7, 2.4.16.3/6): the strict CBOR/COSE decoder
//! and the chain walk in `trustline_proto::voucher`, as transfer and
//! onboarding run them on vouchers handed in by owners and devices.

use trustline_proto::voucher::{self, Voucher, VoucherHeader};

use crate::fixtures::{self, key, spki, KeyName};
use crate::input::selector;
use crate::Outcome;

/// Selector: the rest is an encoded voucher.
pub const DECODE: u8 = 0;
/// Selector: the rest is an entry payload; the manufacturer signs it and it
/// is pushed onto the fixed bound voucher.
pub const SIGN_ENTRY: u8 = 1;
/// Selector: the rest is a COSE entry pushed onto the fixed voucher whose
/// owner is [`KeyName::Owner`].
pub const PUSH: u8 = 2;
/// Selector: the rest is an encoded voucher header.
pub const HEADER: u8 = 3;
/// Selector: the rest is a next owner's public key; the current owner
/// extends the fixed voucher to it.
pub const EXTEND: u8 = 4;

/// The `voucher` harness.
pub fn voucher(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    match sel % 5 {
        DECODE => decode(rest),
        SIGN_ENTRY => {
            let Ok(cose) = voucher::sign_entry(rest, key(KeyName::Manufacturer)) else {
                return Outcome::Refused;
            };
            let mut v = fixtures::bound_voucher().clone();
            Outcome::from_bool(v.push_entry(&cose).is_ok() && round_trips(&v))
        }
        PUSH => {
            let mut v = fixtures::voucher_with_owner().clone();
            Outcome::from_bool(v.push_entry(rest).is_ok() && round_trips(&v))
        }
        HEADER => match VoucherHeader::decode(rest) {
            Ok(h) => {
                assert_eq!(
                    h.encode(),
                    rest,
                    "a header decoded from non-canonical bytes"
                );
                Outcome::Accepted
            }
            Err(_) => Outcome::Refused,
        },
        _ => {
            let mut v = fixtures::voucher_with_owner().clone();
            Outcome::from_bool(v.extend(key(KeyName::Owner), rest).is_ok() && round_trips(&v))
        }
    }
}

fn decode(bytes: &[u8]) -> Outcome {
    let Ok(v) = Voucher::decode(bytes) else {
        return Outcome::Refused;
    };
    assert_eq!(
        v.encode(),
        bytes,
        "a voucher decoded from non-canonical bytes"
    );
    let header =
        VoucherHeader::decode(v.header_bytes()).expect("a decoded voucher's header decodes");
    assert_eq!(&header, v.header());
    // Whatever the chain, the device binding check must not panic.
    let _ = v.verify_device_binding(&fixtures::device_chain(), spki(KeyName::Device));
    let Ok(verified) = v.verify(spki(KeyName::Manufacturer)) else {
        return Outcome::Refused;
    };
    assert_eq!(verified.entries.len(), v.len());
    assert_eq!(verified.current_owner, v.current_owner());
    assert!(verified.ensure_entries(v.len()).is_ok());
    assert!(verified.ensure_entries(v.len() + 1).is_err());
    Outcome::Accepted
}

/// A voucher built here must encode, decode and verify from the
/// manufacturer key, unchanged.
fn round_trips(v: &Voucher) -> bool {
    let encoded = v.encode();
    let back = Voucher::decode(&encoded).expect("a built voucher decodes");
    assert_eq!(back.encode(), encoded);
    let verified = back
        .verify(spki(KeyName::Manufacturer))
        .expect("a built voucher verifies");
    assert_eq!(verified.current_owner, v.current_owner());
    true
}
