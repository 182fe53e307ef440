//! The checks every ownership step shares: the voucher against the device's
//! certification and the recorded transfers, the owner's authorization, the
//! device's certificate chain and its signed proofs.
//!
//! Each check names precisely what failed; none of them records anything.

use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::voucher::{cert_chain_hash, VerifiedVoucher, Voucher};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::challenges::Action;
use crate::error::{Error, Result};
use crate::state::DeviceRecord;
use crate::Ownership;

/// A voucher that decoded, describes the certified device and verified
/// from the OEM voucher key (not yet compared with the recorded transfers).
pub(super) struct CheckedVoucher {
    /// The decoded voucher.
    pub(super) voucher: Voucher,
    /// Its verified chain of owners.
    pub(super) verified: VerifiedVoucher,
}

/// Maps a voucher verification failure to the refusal it is.
pub(super) fn voucher_error(e: trustline_proto::Error) -> Error {
    use trustline_proto::Error as P;
    match e {
        P::VoucherWrongSigner { entry } => Error::NotOwner(format!(
            "voucher entry {entry} is not signed by the owner before it"
        )),
        P::VoucherBadSignature { entry } => Error::BadSignature(format!(
            "voucher entry {entry} does not verify: it was forged or altered"
        )),
        P::VoucherBrokenChain { entry } => Error::Invalid(format!(
            "voucher entry {entry} does not follow the entry before it: entries were reordered, removed or inserted"
        )),
        P::VoucherHeaderMismatch { entry } => Error::Invalid(format!(
            "voucher entry {entry} was made for another voucher header"
        )),
        P::VoucherManufacturerMismatch => {
            Error::Invalid("the voucher names another manufacturer key than the oem voucher key".into())
        }
        P::VoucherTruncated { recorded, found } => Error::VoucherStale(format!(
            "the voucher holds {found} entries but {recorded} transfers are recorded: it was cut back to an earlier owner"
        )),
        P::VoucherBadBinding | P::VoucherChainMismatch => {
            Error::Invalid("the voucher's device binding does not verify under the certified device key".into())
        }
        other => Error::Invalid(format!("voucher: {other}")),
    }
}

impl Ownership {
    /// The certified chain of a device: its certificate, the intermediate
    /// that issued it, the root. With one intermediate (a site) that is the
    /// one; with several (the hub, one per enrolled site, issue 13 item 4)
    /// the one whose key signed the device certificate.
    ///
    /// # Errors
    /// [`Error::CorruptEntry`] when no configured intermediate issued the
    /// recorded certificate.
    pub(super) fn certified_chain(&self, record: &DeviceRecord) -> Result<[Vec<u8>; 3]> {
        let intermediate = match self.chain.intermediates.as_slice() {
            [only] => only,
            several => several
                .iter()
                .find(|i| issued_by(&record.certificate, i))
                .ok_or_else(|| Error::CorruptEntry {
                    seq: record.certified_seq,
                    reason: format!(
                        "no site intermediate known here issued the certificate of rot {}",
                        record.rot_id
                    ),
                })?,
        };
        Ok([
            record.certificate.clone(),
            intermediate.clone(),
            self.chain.root.clone(),
        ])
    }

    /// Decodes `bytes` and checks that the voucher is the one made for this
    /// device at certification (the header is rebuilt from the `CERTIFIED`
    /// entry and must match byte for byte: rot_id, serial, chain hash, guid,
    /// manufacturer key), that its chain of owners verifies from the OEM
    /// voucher key, and that a device binding, if present, verifies under
    /// the certified device key.
    pub(super) fn check_voucher(
        &self,
        record: &DeviceRecord,
        bytes: &[u8],
    ) -> Result<CheckedVoucher> {
        let voucher = Voucher::decode(bytes).map_err(voucher_error)?;
        let chain = self.certified_chain(record)?;
        let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        let expected = Voucher::manufacturer(
            &record.rot_id,
            &record.serial,
            &refs,
            &self.chain.voucher_public_key,
        )?;
        if voucher.header_bytes() != expected.header_bytes() {
            let header = voucher.header();
            let what = if header.rot_id != record.rot_id {
                "another device"
            } else if header.serial != record.serial {
                "another serial"
            } else if header.cert_chain_sha256 != expected.header().cert_chain_sha256 {
                "another certificate chain"
            } else if header.manufacturer_public_key != self.chain.voucher_public_key {
                "another manufacturer key"
            } else {
                "another voucher (guid)"
            };
            return Err(Error::Invalid(format!(
                "the voucher header names {what} than the one certified for rot {} (ledger entry {})",
                record.rot_id, record.certified_seq
            )));
        }
        let verified = voucher
            .verify(&self.chain.voucher_public_key)
            .map_err(voucher_error)?;
        if voucher.device_binding().is_some() {
            voucher
                .verify_device_binding(&chain, &record.device_public_key)
                .map_err(voucher_error)?;
        }
        Ok(CheckedVoucher { voucher, verified })
    }

    /// Checks that the voucher's first entries are exactly the transfers
    /// recorded for the device (no fork, no truncation), and that it holds
    /// `extra` more (0: none unregistered; 1: the one new transfer this
    /// request registers).
    pub(super) fn check_recorded(
        record: &DeviceRecord,
        checked: &CheckedVoucher,
        extra: usize,
    ) -> Result<()> {
        let recorded = record.transfers.len();
        let found = checked.verified.entries.len();
        checked
            .verified
            .ensure_entries(recorded)
            .map_err(voucher_error)?;
        for (index, (entry, transfer)) in checked
            .verified
            .entries
            .iter()
            .zip(&record.transfers)
            .enumerate()
        {
            if entry.entry_sha256.as_slice() != transfer.entry_sha256.as_slice()
                || entry.owner_commitment().as_slice() != transfer.commitment.as_slice()
            {
                return Err(Error::TransferRecorded {
                    rot_id: record.rot_id.clone(),
                    index,
                    holder_seq: transfer.seq,
                });
            }
        }
        if found > recorded + extra {
            return Err(Error::VoucherStale(format!(
                "the voucher holds {} transfers not registered with the ledger ({recorded} recorded): register each transfer as it is made",
                found - recorded
            )));
        }
        if found < recorded + extra {
            return Err(Error::VoucherStale(format!(
                "the voucher holds no new transfer beyond the {recorded} recorded"
            )));
        }
        Ok(())
    }

    /// Verifies the owner's authorization for `action` under the voucher's
    /// current owner key, answering `challenge` and naming this device and
    /// this very voucher.
    pub(super) fn check_authorization(
        signed: &v1::SignedStatement,
        checked: &CheckedVoucher,
        rot_id: &str,
        challenge: &[u8],
        action: Action,
        voucher_bytes: &[u8],
    ) -> Result<()> {
        if checked.verified.entries.is_empty() {
            return Err(Error::VoucherStale(
                "the voucher names no owner yet: the oem makes the first transfer".into(),
            ));
        }
        let auth: v1::OwnerAuthorization =
            statement::verify(signed, &checked.verified.current_owner).map_err(|e| match e {
                trustline_proto::Error::BadSignature(_) => Error::NotOwner(
                    "the owner authorization is not signed by the voucher's current owner key"
                        .into(),
                ),
                other => Error::from(other),
            })?;
        if auth.rot_id != rot_id || auth.challenge != challenge {
            return Err(Error::Invalid(
                "the owner authorization names another device or challenge".into(),
            ));
        }
        if auth.action != action.as_str() {
            return Err(Error::Invalid(format!(
                "the owner authorization is for {:?}, not {:?}",
                auth.action,
                action.as_str()
            )));
        }
        if auth.voucher_sha256 != crate::sha256(voucher_bytes) {
            return Err(Error::Invalid(
                "the owner authorization names another voucher".into(),
            ));
        }
        Ok(())
    }

    /// Checks the device's presented chain (2.4.14.18): device certificate,
    /// site intermediate, OEM root; each signed by the next, the root the
    /// configured OEM root, all valid now; the device certificate the very
    /// one recorded in the device's `CERTIFIED` entry; and the chain the one
    /// the voucher header names.
    pub(super) fn check_device_chain(
        &self,
        record: &DeviceRecord,
        chain: &[Vec<u8>],
    ) -> Result<()> {
        let [device, intermediate, root] = chain else {
            return Err(Error::NotAuthentic(format!(
                "the device chain has {} certificates, expected device, site intermediate and oem root",
                chain.len()
            )));
        };
        if *root != self.chain.root {
            return Err(Error::NotAuthentic(
                "the device chain does not end at the oem root".into(),
            ));
        }
        verify_chain(device, intermediate, root, backends::now_ms())?;
        if *device != record.certificate {
            return Err(Error::NotAuthentic(format!(
                "the device certificate is not the one certified for rot {} (ledger entry {})",
                record.rot_id, record.certified_seq
            )));
        }
        if cert_chain_hash(chain) != cert_chain_hash(&self.certified_chain(record)?) {
            return Err(Error::NotAuthentic(
                "the device chain is not the certified chain".into(),
            ));
        }
        Ok(())
    }

    /// Verifies a live `IdentityProof` under the certified device key.
    pub(super) fn check_identity_proof(
        record: &DeviceRecord,
        signed: Option<&v1::SignedStatement>,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        let signed = signed.ok_or_else(|| {
            Error::Invalid("device_proof (the device's identity proof) is missing".into())
        })?;
        let proof: v1::IdentityProof = statement::verify(signed, &record.device_public_key).map_err(|_| {
            Error::NotAuthentic(
                "the identity proof does not verify under the certified device key: the device does not hold its identity key (a clone?)".into(),
            )
        })?;
        if proof.rot_id != record.rot_id || proof.challenge != challenge {
            return Err(Error::NotAuthentic(
                "the identity proof names another device or challenge".into(),
            ));
        }
        Ok(signed.clone())
    }

    /// Verifies the device's `ResetProof` (2.4.16.7): signed by the certified
    /// device key over this challenge, reporting the expected state, a reset
    /// counter beyond every reset recorded before, and (when configured) an
    /// erased user-data area.
    pub(super) fn check_reset_proof(
        &self,
        record: &DeviceRecord,
        signed: Option<&v1::SignedStatement>,
        challenge: &[u8],
        expected: v1::DeviceLifecycle,
    ) -> Result<v1::SignedStatement> {
        let signed = signed.ok_or_else(|| {
            Error::ResetRequired(
                "the request carries no reset proof: reset the device's user data first".into(),
            )
        })?;
        let proof: v1::ResetProof =
            statement::verify(signed, &record.device_public_key).map_err(|_| {
                Error::ResetRequired(
                    "the reset proof is not signed by the certified device key".into(),
                )
            })?;
        if proof.rot_id != record.rot_id || proof.challenge != challenge {
            return Err(Error::ResetRequired(
                "the reset proof names another device or challenge".into(),
            ));
        }
        if proof.state != expected as i32 {
            let found = v1::DeviceLifecycle::try_from(proof.state)
                .map_or("an unknown state".to_owned(), |s| format!("{s:?}"));
            return Err(Error::ResetRequired(format!(
                "the device reports {found} after its reset, expected {expected:?}"
            )));
        }
        if proof.reset_counter <= record.last_reset_counter {
            return Err(Error::ResetRequired(format!(
                "the reset counter {} did not advance past the recorded {}: not a fresh reset",
                proof.reset_counter, record.last_reset_counter
            )));
        }
        if let Some(erased) = &self.config.erased_user_area_sha256 {
            if proof.user_area_sha256 != erased.as_slice() {
                return Err(Error::ResetRequired(
                    "the device reports a user-data area that is not erased".into(),
                ));
            }
        }
        Ok(signed.clone())
    }
}

/// Verifies device ← intermediate ← root signatures (the root self-signed)
/// and every certificate's validity at `now_ms`.
///
/// # Errors
/// [`Error::NotAuthentic`] naming the certificate that fails.
pub fn verify_chain(device: &[u8], intermediate: &[u8], root: &[u8], now_ms: i64) -> Result<()> {
    let device = parse("device", device)?;
    let intermediate = parse("intermediate", intermediate)?;
    let root = parse("root", root)?;
    let now = x509_parser::time::ASN1Time::from_timestamp(now_ms / 1000)
        .map_err(|e| Error::Config(format!("current time: {e}")))?;
    for (what, cert, issuer) in [
        ("root", &root, &root),
        ("intermediate", &intermediate, &root),
        ("device", &device, &intermediate),
    ] {
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|_| {
                Error::NotAuthentic(format!(
                    "the {what} certificate is not signed by its issuer in the chain"
                ))
            })?;
        if !cert.validity().is_valid_at(now) {
            return Err(Error::NotAuthentic(format!(
                "the {what} certificate is not valid now"
            )));
        }
    }
    Ok(())
}

/// Whether the certificate `cert` carries a signature by the key of the CA
/// certificate `issuer` (both DER; anything that does not parse is not).
fn issued_by(cert: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        X509Certificate::from_der(cert),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::NotAuthentic(format!("the {what} certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::NotAuthentic(format!(
            "the {what} certificate has trailing bytes"
        )));
    }
    Ok(cert)
}
