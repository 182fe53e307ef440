//! The ownership voucher handed out at `Certify` (2.4.14.7), built with
//! [`trustline_proto::voucher`].
//!
//! The header binds the `rot_id`, the serial, the hash of the certificate
//! chain returned with it and the OEM voucher key. Its guid is derived from
//! the device certificate (whose 128-bit serial is random), so the
//! manufacturer voucher — the one with no entries,
//! [`Voucher::manufacturer`] — is a pure function of the `CERTIFIED` entry
//! and can be rebuilt exactly, and checked against the recorded
//! `voucher_sha256`, when a retried `Certify` is answered after a restart. When the first owner is known at `Certify`, entry 0 is signed by
//! the OEM voucher key in the HSM (via the CA) and only its salted
//! commitment is recorded (invariant 6); that entry is never stored by the
//! service, so it can be replayed only from the in-memory result cache.

use backends::CaApi;
use sha2::{Digest, Sha256};
use trustline_proto::v1;
use trustline_proto::voucher::{first_entry_payload, Voucher};

use crate::error::{Error, Result};

/// Has the CA sign entry 0 (manufacturer → `first_owner`) and appends it.
/// Returns the ledger's record of the transfer: the salted commitment and
/// the entry's hash, never the owner key.
///
/// # Errors
/// [`Error::Invalid`] when `first_owner` is not a P-256 key;
/// [`Error::Backend`] when the CA fails; [`Error::Invalid`] when the CA's
/// entry does not verify under the manufacturer key.
pub async fn add_first_owner(
    voucher: &mut Voucher,
    first_owner: &[u8],
    ca: &dyn CaApi,
) -> Result<v1::OwnershipPayload> {
    let payload = first_entry_payload(voucher.header(), first_owner)?;
    let cose = ca.sign_voucher_entry(payload).await.map_err(Error::ca)?;
    let entry = voucher
        .push_entry(&cose)
        .map_err(|e| Error::Config(format!("the ca's voucher entry does not verify: {e}")))?;
    Ok(v1::OwnershipPayload {
        owner_commitment: entry.owner_commitment().to_vec(),
        voucher_entry_index: 0,
        voucher_entry_sha256: Sha256::digest(&cose).to_vec(),
        sealed_entry: vec![],
    })
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
    }
}
