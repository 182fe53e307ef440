//! FDO 1.1 voucher headers at the factory (issue 17; 2.4.14.7;
//! `docs/fdo-vouchers.md` §3 and §9).
//!
//! For an order with an FDO block, `Certify` builds the device's FDO
//! `OVHeader` itself — the voucher's GUID and manufacturer key, the FDO
//! hash of the chain it just issued, the order's rendezvous and device
//! info — and records SHA-256 of it in the `CERTIFIED` entry
//! (`fdo_header_sha256`) with the GUID as the unique key `fdo-guid`, in
//! the same atomic append (invariants 1 and 2): nothing about the header is
//! left to the station, and no two devices share a GUID.
//!
//! The device can HMAC that header (step 17) only once it holds its
//! certification, that is after the `CERTIFIED` entry is durable and
//! released. The station then sends the HMAC with `BindFdoHeader`; the
//! provisioner rebuilds the header from the `CERTIFIED` entry and the order
//! (the station names only the HMAC, never a header), checks it against the
//! recorded hash, and appends `FDO_HEADER_BOUND` with the header, the HMAC
//! and its hash under the unique key `fdo-bound` → `rot_id`: once per
//! device. The same HMAC again is a replay; another HMAC is
//! `ALREADY_EXISTS` (`fdo-bound`) and nothing is recorded. Only the device
//! can check the HMAC; the record makes any later voucher checkable
//! against exactly the header and HMAC the factory saw
//! (`FdoVoucher::check_recorded`).

use backends::{append_request, keys, AppendRefusal};
use sha2::{Digest, Sha256};
use trustline_proto::fdo::FdoHeader;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::Voucher;

use crate::error::{Error, Result};
use crate::order_book::check_site;
use crate::orders::Order;
use crate::{draft, payload_of, voucher, Actor, Factory};

/// The FDO header of a device certified under `order` with `chain`, when
/// the order has an FDO block: its bytes and its GUID.
///
/// # Errors
/// [`Error::Invalid`] when the manufacturer voucher or the header cannot be
/// built (a malformed rot_id, serial or key).
pub(crate) fn header(
    order: &Order,
    manufacturer_voucher: &[u8],
    chain: &[Vec<u8>],
) -> Result<Option<(Vec<u8>, [u8; 16])>> {
    let Some(data) = &order.fdo else {
        return Ok(None);
    };
    let voucher = Voucher::decode(manufacturer_voucher)?;
    let header = FdoHeader::from_trustline(voucher.header(), chain, data)?;
    Ok(Some((header.encode(), header.guid)))
}

/// What `BindFdoHeader` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdoBound {
    /// The `FDO_HEADER_BOUND` entry.
    pub ledger_seq: u64,
    /// The `OVHeader` bytes the HMAC is over.
    pub ov_header: Vec<u8>,
    /// True when this answers a retry.
    pub replayed: bool,
}

impl Factory {
    /// Records the HMAC device `rot_id` computed over its FDO header (see
    /// the module doc).
    ///
    /// # Errors
    /// [`Error::Invalid`] (not a rot_id, an HMAC that is not 32 bytes),
    /// [`Error::UnknownDevice`], [`Error::WrongSite`] (a device of another
    /// site's order), [`Error::NoFdo`], [`Error::FdoBound`],
    /// [`Error::CorruptEntry`] (a `CERTIFIED` entry whose rebuilt header is
    /// not the recorded one), [`Error::Backend`].
    pub async fn bind_fdo_header(
        &self,
        actor: &Actor,
        rot_id: &str,
        header_hmac: &[u8],
    ) -> Result<FdoBound> {
        if !trustline_proto::identity::is_well_formed_rot_id(rot_id) {
            return Err(Error::Invalid(format!("{rot_id:?} is not a rot_id")));
        }
        if header_hmac.len() != 32 {
            return Err(Error::Invalid(format!(
                "an fdo header hmac is 32 bytes, not {}",
                header_hmac.len()
            )));
        }
        let Some(holder) = self.lookup(keys::ROT, rot_id.as_bytes()).await? else {
            return Err(Error::UnknownDevice(rot_id.to_owned()));
        };
        let device = self.entry(holder).await?;
        if device.kind != EventKind::Certified as i32 {
            return Err(Error::UnknownDevice(rot_id.to_owned()));
        }
        let known = self.order(&device.order_id).await?;
        check_site(actor, &known.order)?;
        let certified: v1::CertifiedPayload = payload_of(&device, EventKind::Certified)?;
        if certified.fdo_header_sha256.is_empty() {
            return Err(Error::NoFdo(rot_id.to_owned()));
        }
        let chain = vec![
            certified.certificate.clone(),
            self.chain.intermediate.clone(),
            self.chain.root.clone(),
        ];
        let manufacturer = voucher::manufacturer(
            rot_id,
            &device.serial,
            &chain,
            &self.chain.voucher_public_key,
        )?;
        let Some((ov_header, _)) = header(&known.order, &manufacturer, &chain)? else {
            return Err(Error::NoFdo(rot_id.to_owned()));
        };
        if Sha256::digest(&ov_header)[..] != certified.fdo_header_sha256[..] {
            return Err(Error::CorruptEntry {
                seq: device.seq,
                reason: "the rebuilt fdo header does not match the recorded hash".into(),
            });
        }
        let payload = v1::FdoHeaderBoundPayload {
            ov_header: ov_header.clone(),
            header_hmac: header_hmac.to_vec(),
            header_hmac_sha256: Sha256::digest(header_hmac).to_vec(),
        };
        let entry = draft(
            EventKind::FdoHeaderBound,
            rot_id,
            &device.serial,
            &device.site,
            actor,
            &device.order_id,
            &payload,
        );
        let key = keys::unique(keys::FDO_BOUND, rot_id.as_bytes());
        match self
            .ledger
            .append(append_request(entry, vec![key], None))
            .await
        {
            Ok(r) => Ok(FdoBound {
                ledger_seq: r.seq,
                ov_header,
                replayed: false,
            }),
            Err(AppendRefusal::Conflict { .. }) => {
                let Some(seq) = self.lookup(keys::FDO_BOUND, rot_id.as_bytes()).await? else {
                    return Err(Error::ledger(tonic::Status::internal(
                        "the ledger reported a conflict on fdo-bound but holds no such key",
                    )));
                };
                let bound: v1::FdoHeaderBoundPayload =
                    payload_of(&self.entry(seq).await?, EventKind::FdoHeaderBound)?;
                if bound.header_hmac == header_hmac && bound.ov_header == ov_header {
                    Ok(FdoBound {
                        ledger_seq: seq,
                        ov_header,
                        replayed: true,
                    })
                } else {
                    Err(Error::FdoBound {
                        rot_id: rot_id.to_owned(),
                        holder_seq: seq,
                    })
                }
            }
            Err(AppendRefusal::Quota { .. }) => {
                Err(Error::Config("quota on an fdo header binding".into()))
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }
}
