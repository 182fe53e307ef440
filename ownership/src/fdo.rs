//! FDO 1.1 ownership vouchers at the Ownership service (2.4.14.7, issue 17;
//! `docs/fdo-vouchers.md` §4 and §9).
//!
//! **Registering a transfer made by FDO tools.** `RegisterTransfer` takes an
//! FDO voucher in place of a Trustline one (recognised by its first bytes
//! [`FDO_VOUCHER_PREFIX`]). Before anything is appended, in order:
//! 1. it decodes strictly, and its GUID leads, through the unique key
//!    `fdo-guid`, to a device's `CERTIFIED` entry (else `NOT_FOUND`); the
//!    voucher's device certificate must be that device's (else the GUID is
//!    registered to another device: `ALREADY_EXISTS`, `fdo-guid`);
//! 2. the device is neither scrapped nor retired, and its FDO header was
//!    recorded at the factory: the voucher's `OVHeader` must be byte for byte
//!    the one `FDO_HEADER_BOUND` holds (whose SHA-256 is
//!    `CERTIFIED.fdo_header_sha256`) and its HMAC the one the device
//!    computed (else `INVALID_ARGUMENT`, `fdo-header`; no bound header at
//!    all is `FAILED_PRECONDITION`, `fdo-unbound`); the certificate chain is
//!    the certified one;
//! 3. the FDO chain of owners verifies from the OEM voucher key (a bad
//!    signature or a wrong `OVEHashPrevEntry` / `OVEHashHdrInfo` is
//!    `INVALID_ARGUMENT`; a new entry whose signature verifies under a
//!    former owner's or the manufacturer's key, not the current owner's, is
//!    `PERMISSION_DENIED`);
//! 4. the Trustline entries the leading FDO entries mirror (`OVEExtra`)
//!    rebuild a Trustline voucher that verifies from the OEM key, and the
//!    voucher's first entries are exactly the recorded transfers — a
//!    mirrored entry by its Trustline twin's hash and commitment, an
//!    FDO-only one by the FDO entry's hash — (a different entry at a
//!    recorded index is a fork, `ALREADY_EXISTS`; fewer entries than
//!    recorded is a cut-back voucher and mirrored entries beyond the
//!    recorded ones were never registered, both `FAILED_PRECONDITION`);
//! 5. a device in service cannot change hands (2.4.16.7).
//!
//! Then each new entry — all FDO-only, since no mirrored entry may follow
//! an FDO-only one — is recorded in order as `OWNERSHIP_TRANSFERRED`, with
//! the FDO entry's SHA-256 as `voucher_entry_sha256` and a **fresh salted
//! commitment**: an FDO entry carries no salt, so the service draws one,
//! commits to SHA-256(salt ‖ owner key) and forgets the salt — the ledger
//! still holds no owner key (invariant 6), and no two commitments can be
//! linked. Each append holds the same unique keys as any transfer
//! (`voucher-entry`, `device-field`), so a competing registration is a
//! fork, and a retry of the same voucher returns the recorded transfers
//! (`replayed`). A refusal in steps 1–4 is answered and adds nothing to the
//! ledger: the request has not yet proved a relation to the device
//! ([`crate::records`]). Once the new entry verified under the recorded
//! current owner, a later refusal (step 5) is recorded like any other.
//!
//! **The OEM's entry 0.** For a device whose header is bound,
//! `TransferFromManufacturer` also returns the FDO voucher with entry 0:
//! the FDO twin of the Trustline entry 0 (same next owner, the Trustline
//! entry in `OVEExtra`), signed by the OEM voucher key through the CA
//! (`SignVoucherEntry` with `fdo`), only after the Trustline entry 0 is
//! recorded (invariant 1). A retry signs the twin of the recorded entry
//! again; both name the same owner.

use backends::keys;
use prost::Message;
use rand::RngCore;
use trustline_proto::fdo::{encode_extra, FdoHeader, FdoVoucher, TRUSTLINE_ENTRY_EXTRA};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::{owner_commitment, SALT_LEN};

use crate::checks::voucher_error;
use crate::error::{Error, Result};
use crate::records::Witness;
use crate::state::{self, DeviceRecord, FieldState};
use crate::transfer::check_open;
use crate::{sha256, Ownership, TransferOutcome};

/// The first bytes of every FDO 1.1 voucher: a CBOR array of five, then
/// `OVProtVer` 101 (a Trustline voucher starts with an array of four).
pub const FDO_VOUCHER_PREFIX: [u8; 3] = [0x85, 0x18, 0x65];

/// Whether `voucher` is an FDO voucher (by its first bytes; decoding
/// decides the rest).
pub fn is_fdo_voucher(voucher: &[u8]) -> bool {
    voucher.starts_with(&FDO_VOUCHER_PREFIX)
}

/// Maps an FDO voucher failure to the refusal it is.
fn fdo_error(e: trustline_proto::Error) -> Error {
    use trustline_proto::Error as P;
    match e {
        P::FdoBadSignature { entry } => Error::BadSignature(format!(
            "fdo voucher entry {entry} does not verify under the owner before it: it was forged or altered"
        )),
        P::FdoBrokenChain { entry } => Error::Invalid(format!(
            "fdo voucher entry {entry} does not hash the entry before it (or, for entry 0, the header and hmac): entries were reordered, removed or inserted"
        )),
        P::FdoHeaderMismatch { entry } => Error::Invalid(format!(
            "fdo voucher entry {entry} hashes another header info (guid and device info)"
        )),
        P::FdoManufacturerMismatch => Error::Invalid(
            "the fdo voucher names another manufacturer key than the oem voucher key".into(),
        ),
        P::FdoChainMismatch => Error::Invalid(
            "the fdo voucher's certificate chain is not the one its header hashes".into(),
        ),
        P::FdoBadHeaderHmac => Error::FdoHeader(
            "the header or its hmac is not the one recorded at the factory".into(),
        ),
        other => Error::Invalid(format!("fdo voucher: {other}")),
    }
}

/// What `FDO_HEADER_BOUND` recorded for a device.
struct Bound {
    seq: u64,
    ov_header: Vec<u8>,
    header_hmac: [u8; 32],
}

/// A refusal, and whether the request proved its relation to the device
/// before it (so that the refusal is recorded).
type Refusal = (Error, Option<String>);

impl Ownership {
    /// The FDO header and HMAC the factory recorded for the device
    /// (`FDO_HEADER_BOUND`), checked against `CERTIFIED.fdo_header_sha256`;
    /// `None` when none was bound.
    async fn fdo_bound(&self, record: &DeviceRecord) -> Result<Option<Bound>> {
        if record.fdo_header_sha256.is_empty() {
            return Ok(None);
        }
        let Some(seq) = state::lookup(
            self.ledger.as_ref(),
            state::unique(keys::FDO_BOUND, record.rot_id.as_bytes().to_vec()),
        )
        .await?
        else {
            return Ok(None);
        };
        let entry = state::read_entry(self.ledger.as_ref(), seq).await?;
        let corrupt = |reason: &str| Error::CorruptEntry {
            seq,
            reason: reason.to_owned(),
        };
        if entry.kind != EventKind::FdoHeaderBound as i32 || entry.rot_id != record.rot_id {
            return Err(corrupt(
                "the fdo-bound key does not lead to the device's fdo header binding",
            ));
        }
        let payload = v1::FdoHeaderBoundPayload::decode(entry.payload.as_slice())
            .map_err(|e| corrupt(&e.to_string()))?;
        let header_hmac = <[u8; 32]>::try_from(payload.header_hmac.as_slice())
            .map_err(|_| corrupt("the bound header hmac is not 32 bytes"))?;
        if sha256(&payload.ov_header) != record.fdo_header_sha256
            || sha256(&header_hmac) != payload.header_hmac_sha256
        {
            return Err(corrupt(
                "the bound fdo header or hmac does not match its recorded hash",
            ));
        }
        Ok(Some(Bound {
            seq,
            ov_header: payload.ov_header,
            header_hmac,
        }))
    }

    /// The FDO voucher with entry 0 for a device whose FDO header is bound:
    /// the FDO twin of the recorded Trustline entry 0 (`trustline_entry`,
    /// naming `next_owner`), signed by the OEM voucher key through the CA.
    /// Empty for a device without a bound FDO header. Called only once the
    /// Trustline entry 0 is recorded.
    pub(crate) async fn fdo_first_voucher(
        &self,
        record: &DeviceRecord,
        trustline_entry: &[u8],
        next_owner: &[u8],
    ) -> Result<Vec<u8>> {
        let Some(bound) = self.fdo_bound(record).await? else {
            return Ok(vec![]);
        };
        let corrupt = |reason: String| Error::CorruptEntry {
            seq: bound.seq,
            reason,
        };
        let header = FdoHeader::decode(&bound.ov_header)
            .map_err(|e| corrupt(format!("the bound fdo header: {e}")))?;
        let mut fdo = FdoVoucher::new(
            header,
            bound.header_hmac,
            self.certified_chain(record)?.to_vec(),
        )
        .map_err(|e| corrupt(format!("the bound fdo header does not fit the chain: {e}")))?;
        if fdo.header_bytes() != bound.ov_header {
            return Err(corrupt(
                "the bound fdo header is not in canonical form".into(),
            ));
        }
        let extra = encode_extra(&[(TRUSTLINE_ENTRY_EXTRA, trustline_entry.to_vec())].into());
        let payload = fdo
            .next_entry_payload(next_owner, Some(extra))
            .map_err(|e| Error::Config(format!("fdo entry 0: {e}")))?;
        let signed = self
            .ca
            .sign_fdo_voucher_entry(payload)
            .await
            .map_err(Error::ca)?;
        fdo.push_entry(&signed)
            .map_err(|e| Error::Config(format!("the ca's fdo entry 0 does not verify: {e}")))?;
        Ok(fdo.encode())
    }

    /// Registers the FDO-only transfers an FDO voucher carries (module doc).
    pub(crate) async fn register_fdo_transfer(
        &self,
        actor: &str,
        voucher: &[u8],
    ) -> Result<TransferOutcome> {
        match self.fdo_transfers(actor, voucher).await {
            Ok(outcome) => Ok(outcome),
            Err((e, None)) => Err(e),
            Err((e, Some(rot_id))) => Err(self
                .refused(
                    Some(&rot_id),
                    actor,
                    "register-transfer",
                    Witness::Proven,
                    e,
                )
                .await),
        }
    }

    async fn fdo_transfers(
        &self,
        actor: &str,
        bytes: &[u8],
    ) -> std::result::Result<TransferOutcome, Refusal> {
        let unproven = |e: Error| (e, None);
        let fdo = FdoVoucher::decode(bytes).map_err(|e| unproven(fdo_error(e)))?;
        let guid = fdo.header().guid;
        let Some(certified_seq) = state::lookup(
            self.ledger.as_ref(),
            state::unique(keys::FDO_GUID, guid.to_vec()),
        )
        .await
        .map_err(unproven)?
        else {
            return Err(unproven(Error::UnknownDevice(format!(
                "with fdo guid {}",
                hex::encode(guid)
            ))));
        };
        let certified = state::read_entry(self.ledger.as_ref(), certified_seq)
            .await
            .map_err(unproven)?;
        if certified.kind != EventKind::Certified as i32 {
            return Err(unproven(Error::CorruptEntry {
                seq: certified_seq,
                reason: "the fdo-guid key does not lead to a certification".into(),
            }));
        }
        let record = self.record(&certified.rot_id).await.map_err(unproven)?;
        if fdo.cert_chain().first() != Some(&record.certificate) {
            return Err(unproven(Error::FdoGuidReused {
                guid: hex::encode(guid),
                seq: certified_seq,
            }));
        }
        check_open(&record).map_err(unproven)?;
        let bound = self
            .fdo_bound(&record)
            .await
            .map_err(unproven)?
            .ok_or_else(|| unproven(Error::FdoUnbound(record.rot_id.clone())))?;
        if fdo.header_bytes() != bound.ov_header {
            return Err(unproven(Error::FdoHeader(format!(
                "the voucher's header is not the one recorded for rot {} (ledger entries {} and {}): its rendezvous info, device info or keys were rewritten",
                record.rot_id, record.certified_seq, bound.seq
            ))));
        }
        if *fdo.header_hmac() != bound.header_hmac {
            return Err(unproven(Error::FdoHeader(format!(
                "the header hmac is not the one the device computed at the factory (ledger entry {})",
                bound.seq
            ))));
        }
        if fdo.cert_chain() != self.certified_chain(&record).map_err(unproven)?.as_slice() {
            return Err(unproven(Error::Invalid(
                "the fdo voucher carries another certificate chain than the certified one".into(),
            )));
        }
        let recorded = record.transfers.len();
        let verified = match fdo.verify(&self.chain.voucher_public_key) {
            Ok(v) => v,
            Err(trustline_proto::Error::FdoBadSignature { entry })
                if entry >= recorded && self.signed_by_former_owner(&fdo, entry) =>
            {
                return Err(unproven(Error::NotOwner(format!(
                    "fdo voucher entry {entry} is signed by a former owner or the manufacturer, not by the current owner"
                ))));
            }
            Err(e) => return Err(unproven(fdo_error(e))),
        };
        let view = fdo
            .to_trustline(&record.rot_id, &record.serial, None)
            .map_err(|e| unproven(fdo_error(e)))?;
        let mirrored = view
            .voucher
            .verify(&self.chain.voucher_public_key)
            .map_err(|e| unproven(voucher_error(e)))?;
        if recorded == 0 {
            return Err(unproven(Error::VoucherStale(
                "no transfer from the manufacturer is recorded for this device: the oem makes the first transfer".into(),
            )));
        }
        let found = verified.entries.len();
        if found < recorded {
            return Err(unproven(Error::VoucherStale(format!(
                "the fdo voucher holds {found} entries but {recorded} transfers are recorded: it was cut back to an earlier owner"
            ))));
        }
        for (index, transfer) in record.transfers.iter().enumerate() {
            let entry = &verified.entries[index];
            let same = match (entry.trustline_entry(), mirrored.entries.get(index)) {
                (Some(twin), Some(m)) => {
                    sha256(twin) == transfer.entry_sha256
                        && m.owner_commitment().as_slice() == transfer.commitment.as_slice()
                }
                _ => entry.entry_sha256.as_slice() == transfer.entry_sha256.as_slice(),
            };
            if !same {
                return Err(unproven(Error::TransferRecorded {
                    rot_id: record.rot_id.clone(),
                    index,
                    holder_seq: transfer.seq,
                }));
            }
        }
        if mirrored.entries.len() > recorded {
            return Err(unproven(Error::VoucherStale(format!(
                "the fdo voucher mirrors {} trustline transfers that were never registered: register the trustline voucher first",
                mirrored.entries.len() - recorded
            ))));
        }
        let fdo_voucher = bytes.to_vec();
        if found == recorded {
            // A retry of a registration that was recorded.
            let last = &record.transfers[recorded - 1];
            return Ok(TransferOutcome {
                voucher: fdo_voucher.clone(),
                ledger_seq: last.seq,
                owner_commitment: last.commitment.clone(),
                replayed: true,
                fdo_voucher,
            });
        }
        // The new entry verified under the recorded current owner: from here
        // a refusal is recorded (crate::records).
        let rot_id = record.rot_id.clone();
        let proven = |e: Error| (e, Some(rot_id.clone()));
        if record.state == FieldState::InService {
            return Err(proven(Error::Lifecycle {
                rot_id: record.rot_id.clone(),
                state: record.state.name(),
                why: "decommission it with the device's user-reset proof before its ownership changes (2.4.16.7)",
            }));
        }
        let mut now = record;
        for (index, entry) in verified.entries.iter().enumerate().skip(recorded) {
            let mut salt = [0u8; SALT_LEN];
            rand::thread_rng().fill_bytes(&mut salt);
            let commitment = owner_commitment(&salt, &entry.next_owner_public_key);
            self.record_transfer(
                actor,
                &now,
                index,
                commitment.to_vec(),
                entry.entry_sha256.to_vec(),
                vec![],
            )
            .await
            .map_err(proven)?;
            now = self.record(&rot_id).await.map_err(proven)?;
        }
        let last = now
            .transfers
            .get(found - 1)
            .ok_or_else(|| proven(Error::Concurrent(rot_id.clone())))?;
        Ok(TransferOutcome {
            voucher: fdo_voucher.clone(),
            ledger_seq: last.seq,
            owner_commitment: last.commitment.clone(),
            replayed: false,
            fdo_voucher,
        })
    }

    /// Whether entry `index` of `fdo` is signed by a key that owned the
    /// device before the owner it must be signed by: the manufacturer or an
    /// earlier entry's next owner.
    fn signed_by_former_owner(&self, fdo: &FdoVoucher, index: usize) -> bool {
        let mut former = vec![self.chain.voucher_public_key.clone()];
        former.extend(
            fdo.entry_payloads()
                .take(index.saturating_sub(1))
                .map(|p| p.next_owner_public_key.clone()),
        );
        former.iter().any(|key| fdo.entry_signed_by(index, key))
    }
}
