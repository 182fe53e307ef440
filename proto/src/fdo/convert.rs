//! Between Trustline's voucher ([`crate::voucher`]) and FDO's.
//!
//! Export builds the FDO header from the Trustline header plus what FDO needs
//! and Trustline does not hold ([`FdoDeviceData`]: rendezvous info and device
//! info), the HMAC the device computed over that header, and the device
//! certificate chain. Each Trustline entry then gets an FDO counterpart,
//! signed by the same key at the same moment ([`FdoVoucher::mirror_next`]):
//! its `OVEExtra` carries the Trustline entry's exact bytes under
//! [`TRUSTLINE_ENTRY_EXTRA`], so the FDO signature also binds the pairing.
//!
//! Import ([`FdoVoucher::to_trustline`]) rebuilds the Trustline voucher from
//! an FDO one: the header from the FDO fields plus the device's `rot_id` and
//! serial (which the ledger knows and the device certificate names), the
//! entries from the mirrored prefix. Entries an FDO tool added after it
//! carry no Trustline entry; they are counted ([`TrustlineView::fdo_only`])
//! for the Ownership service to register.

use super::cbor;
use super::header::{cert_chain_sha256, encode_extra, FdoHeader};
use super::rendezvous::RendezvousInfo;
use super::voucher::FdoVoucher;
use super::TRUSTLINE_ENTRY_EXTRA;
use crate::signer::Signer;
use crate::voucher::{cert_chain_hash, EntryPayload, Voucher, VoucherHeader};
use crate::Error;

/// What an FDO header needs that a Trustline voucher does not hold: set by
/// the OEM per order or at the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdoDeviceData {
    /// `OVRVInfo`: the rendezvous server(s) the device and owners use.
    pub rv_info: RendezvousInfo,
    /// `OVDeviceInfo`: the kind of device (make and model, say).
    pub device_info: String,
}

impl FdoDeviceData {
    /// The FDO block of a production order, checked: rendezvous info that
    /// decodes within FDO's limits, device info of at most
    /// [`super::MAX_DEVICE_INFO_LEN`] bytes.
    ///
    /// # Errors
    /// [`Error::FdoMalformed`], [`Error::FdoTooLarge`].
    pub fn from_order(order: &crate::v1::FdoOrder) -> Result<Self, Error> {
        if order.device_info.len() > super::MAX_DEVICE_INFO_LEN {
            return Err(super::header::too_large(
                order.device_info.len(),
                super::MAX_DEVICE_INFO_LEN,
            ));
        }
        Ok(Self {
            rv_info: RendezvousInfo::decode(&order.rendezvous_info)?,
            device_info: order.device_info.clone(),
        })
    }

    /// The production order's FDO block.
    pub fn to_order(&self) -> crate::v1::FdoOrder {
        crate::v1::FdoOrder {
            rendezvous_info: self.rv_info.encode(),
            device_info: self.device_info.clone(),
        }
    }
}

/// A Trustline voucher rebuilt from an FDO voucher.
#[derive(Clone, Debug)]
pub struct TrustlineView {
    /// The Trustline voucher: header and the mirrored entries (unverified:
    /// [`Voucher::verify`] it with the trusted manufacturer key).
    pub voucher: Voucher,
    /// How many FDO entries after the mirrored ones carry no Trustline entry
    /// (transfers made by FDO tools).
    pub fdo_only: usize,
}

fn mismatch(why: impl Into<String>) -> Error {
    Error::FdoTrustlineMismatch(why.into())
}

/// The exact bytes of each entry of a Trustline voucher (read from its
/// documented encoding: `[1, header, binding, [* bstr]]`).
fn trustline_entries(voucher: &Voucher) -> Result<Vec<Vec<u8>>, Error> {
    let bytes = voucher.encode();
    let item = cbor::parse(&bytes, "Trustline voucher")?;
    let parts = item.array_of(4, "Trustline voucher")?;
    parts[3]
        .array("Trustline voucher entries")?
        .iter()
        .map(|e| e.bytes("Trustline voucher entry").map(<[u8]>::to_vec))
        .collect()
}

impl FdoHeader {
    /// The FDO header describing the device of a Trustline header: the same
    /// GUID and manufacturer key, the FDO hash of the same certificate chain
    /// (`chain` must be the one `cert_chain_sha256` names).
    ///
    /// # Errors
    /// [`Error::FdoTrustlineMismatch`] when `chain` is not the header's
    /// chain; [`Error::FdoMalformed`] for data out of FDO's limits.
    pub fn from_trustline<C: AsRef<[u8]>>(
        header: &VoucherHeader,
        chain: &[C],
        data: &FdoDeviceData,
    ) -> Result<Self, Error> {
        if cert_chain_hash(chain) != header.cert_chain_sha256 {
            return Err(mismatch(
                "the certificate chain is not the one the Trustline header names",
            ));
        }
        Ok(Self {
            guid: header.guid,
            rv_info: data.rv_info.clone(),
            device_info: data.device_info.clone(),
            manufacturer_public_key: header.manufacturer_public_key.clone(),
            cert_chain_sha256: cert_chain_sha256(chain),
        })
    }
}

impl FdoVoucher {
    /// An FDO voucher with no entries for the device of `voucher`:
    /// `header_hmac` is what the device answered for
    /// `FdoHeader::from_trustline(..).encode()`. Then [`mirror_next`] once
    /// per Trustline entry, or use [`FdoVoucher::export`].
    ///
    /// [`mirror_next`]: FdoVoucher::mirror_next
    ///
    /// # Errors
    /// As [`FdoHeader::from_trustline`] and [`FdoVoucher::new`].
    pub fn from_trustline(
        voucher: &Voucher,
        chain: &[Vec<u8>],
        data: &FdoDeviceData,
        header_hmac: [u8; 32],
    ) -> Result<Self, Error> {
        let header = FdoHeader::from_trustline(voucher.header(), chain, data)?;
        Self::new(header, header_hmac, chain.to_vec())
    }

    /// Appends the FDO counterpart of Trustline entry `self.len()`: the same
    /// next owner, the Trustline entry's bytes in `OVEExtra`, signed by
    /// `signer` — the key that signed the Trustline entry (the OEM voucher
    /// key for entry 0, then each owner).
    ///
    /// # Errors
    /// [`Error::FdoTrustlineMismatch`] when `voucher` describes another
    /// device or has no such entry; [`Error::FdoNotCurrentOwner`] when
    /// `signer` is not the current owner; [`Error::Signer`].
    pub fn mirror_next(&mut self, voucher: &Voucher, signer: &dyn Signer) -> Result<(), Error> {
        self.check_same_device(voucher.header())?;
        let index = self.len();
        let entries = trustline_entries(voucher)?;
        let (Some(entry), Some(payload)) =
            (entries.get(index), voucher.entry_payloads().nth(index))
        else {
            return Err(mismatch(format!(
                "the Trustline voucher has no entry {index}"
            )));
        };
        let extra = encode_extra(&[(TRUSTLINE_ENTRY_EXTRA, entry.clone())].into());
        self.extend(signer, &payload.next_owner_public_key, Some(extra))?;
        Ok(())
    }

    /// The whole export: [`FdoVoucher::from_trustline`], then one
    /// [`FdoVoucher::mirror_next`] per signer (`signers[i]` signed Trustline
    /// entry `i`; fewer signers mirror a prefix).
    ///
    /// # Errors
    /// As the two steps.
    pub fn export(
        voucher: &Voucher,
        chain: &[Vec<u8>],
        data: &FdoDeviceData,
        header_hmac: [u8; 32],
        signers: &[&dyn Signer],
    ) -> Result<Self, Error> {
        let mut fdo = Self::from_trustline(voucher, chain, data, header_hmac)?;
        for signer in signers {
            fdo.mirror_next(voucher, *signer)?;
        }
        Ok(fdo)
    }

    fn check_same_device(&self, header: &VoucherHeader) -> Result<(), Error> {
        if header.guid != self.header().guid {
            return Err(mismatch("the vouchers have different GUIDs"));
        }
        if header.manufacturer_public_key != self.header().manufacturer_public_key {
            return Err(mismatch("the vouchers name different manufacturer keys"));
        }
        if header.cert_chain_sha256 != cert_chain_hash(self.cert_chain()) {
            return Err(mismatch(
                "the vouchers describe different certificate chains",
            ));
        }
        Ok(())
    }

    /// Rebuilds the Trustline voucher of this device: header from the FDO
    /// fields plus `rot_id` and `serial`, the device binding if given (the
    /// ledger's registered voucher holds it; FDO carries the HMAC instead),
    /// and the Trustline entries the leading FDO entries mirror. Each
    /// mirrored entry must name the same next owner as its FDO entry, and no
    /// mirrored entry may follow an FDO-only one.
    ///
    /// # Errors
    /// [`Error::FdoTrustlineMismatch`]; the errors of [`Voucher::decode`]
    /// and [`Voucher::push_entry`] (a mirrored entry that does not continue
    /// the rebuilt header — a wrong `rot_id` or serial shows here — or is not
    /// signed by the owner before it).
    pub fn to_trustline(
        &self,
        rot_id: &str,
        serial: &str,
        device_binding: Option<&[u8]>,
    ) -> Result<TrustlineView, Error> {
        let header = VoucherHeader {
            guid: self.header().guid,
            rot_id: rot_id.to_owned(),
            serial: serial.to_owned(),
            cert_chain_sha256: cert_chain_hash(self.cert_chain()),
            manufacturer_public_key: self.header().manufacturer_public_key.clone(),
        };
        // The documented encoding of an entry-less Trustline voucher, with
        // the binding in place; `decode` checks every part of it.
        let mut w = cbor::Writer::new();
        w.array(4).uint(1).bytes(&header.encode());
        match device_binding {
            Some(binding) => w.bytes(binding),
            None => w.null(),
        };
        w.array(0);
        let mut voucher = Voucher::decode(&w.finish())?;
        let mut fdo_only = 0;
        for (index, payload) in self.entry_payloads().enumerate() {
            match payload.trustline_entry() {
                Some(_) if fdo_only > 0 => {
                    return Err(mismatch(format!(
                        "FDO entry {index} mirrors a Trustline entry after an FDO-only entry"
                    )))
                }
                Some(entry) => {
                    let mirrored: EntryPayload = voucher.push_entry(&entry)?;
                    if mirrored.next_owner_public_key != payload.next_owner_public_key {
                        return Err(mismatch(format!(
                            "FDO entry {index} and the Trustline entry it carries name \
                             different owners"
                        )));
                    }
                }
                None => fdo_only += 1,
            }
        }
        Ok(TrustlineView { voucher, fdo_only })
    }
}
