//! The ownership voucher handed out at `Certify` (2.4.14.7), built with
//! [`trustline_proto::voucher`]: the manufacturer voucher, with no entries.
//!
//! The header binds the `rot_id`, the serial, the hash of the certificate
//! chain returned with it and the OEM voucher key. Its guid is derived from
//! the device certificate (whose 128-bit serial is random), so the
//! manufacturer voucher ([`Voucher::manufacturer`]) is a pure function of
//! the `CERTIFIED` entry and can be rebuilt exactly, and checked against
//! the recorded `voucher_sha256`, when a retried `Certify` is answered after
//! a restart. The factory never signs a voucher entry: entry 0
//! (manufacturer → first owner) is the OEM's, made OEM-side by the
//! ownership service (issue 12 item 1), so a station can neither choose a
//! device's first owner nor hold the only copy of an entry.

use trustline_proto::voucher::Voucher;

use crate::error::Result;

/// The manufacturer voucher of a device certified with `chain` (device
/// certificate first), encoded: what `Certify` returns and records the
/// hash of.
///
/// # Errors
/// [`crate::Error::Invalid`] when the voucher cannot be built (a malformed
/// rot_id, serial or key).
pub fn manufacturer(
    rot_id: &str,
    serial: &str,
    chain: &[Vec<u8>],
    voucher_public_key: &[u8],
) -> Result<Vec<u8>> {
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    Ok(Voucher::manufacturer(rot_id, serial, &refs, voucher_public_key)?.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustline_proto::signer::{Signer, SoftwareSigner};

    #[test]
    fn the_manufacturer_voucher_is_rebuilt_exactly_from_the_certificate() {
        let oem = SoftwareSigner::generate();
        let rot = trustline_proto::identity::rot_id(b"x");
        let chain: [&[u8]; 3] = [b"cert-a", b"int", b"root"];
        let a = Voucher::manufacturer(&rot, "SN1", &chain, oem.public_key_der()).expect("voucher");
        let b = Voucher::manufacturer(&rot, "SN1", &chain, oem.public_key_der()).expect("voucher");
        assert_eq!(a.encode(), b.encode());
        a.verify(oem.public_key_der()).expect("verifies");
        let other: [&[u8]; 3] = [b"cert-b", b"int", b"root"];
        let c = Voucher::manufacturer(&rot, "SN1", &other, oem.public_key_der()).expect("voucher");
        assert_ne!(a.header().guid, c.header().guid);
        let owned: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
        assert_eq!(
            manufacturer(&rot, "SN1", &owned, oem.public_key_der()).expect("voucher"),
            a.encode()
        );
    }
}
