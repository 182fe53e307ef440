//! What the ownership service writes besides its steps: its entries' shape
//! (the actor is the caller's role only and no site or order is named,
//! invariant 6) and the `REQUEST_REJECTED` entry a refusal leaves in a
//! device's chain — only when the request proved a relation to the device.
//!
//! # Whose refusals are recorded (issue 12 item 4)
//!
//! A device's history is evidence; a caller with no relation to a device
//! must not be able to add to it. A refusal is recorded against the device
//! it names only when the request showed one of:
//! - it is the OEM's own step ([`Witness::Oem`]: the first transfer, which
//!   the role table gives to the OEM's admin alone);
//! - a signature by the device's *recorded* current owner: an owner
//!   authorization that verifies under the key the last recorded transfer
//!   names, or a new voucher entry that key signed (the voucher's earlier
//!   entries being exactly the recorded ones);
//! - a signature by the device itself: an identity or reset proof that
//!   verifies under the certified device key over a challenge this service
//!   issued for the device and that this very request spent (a device proof
//!   copied from the ledger, where lifecycle entries keep them, answers an
//!   old challenge and proves nothing).
//!
//! Every other refusal is answered with its precise status — which the
//! transport guard counts toward the caller's lockout — and adds nothing to
//! any device's history. The checks here only verify signatures; none
//! records anything or spends a challenge.

use std::sync::OnceLock;

use backends::{append_request, keys, AppendRefusal};
use prost::Message;
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::Error;
use crate::state::DeviceRecord;
use crate::{state, Ownership, StepRequest};

/// What one owner-side request established while it was checked: the
/// challenge it spent, once [`crate::challenges::ChallengeBook::take`]
/// accepted it (so a device proof over it is fresh).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    fresh_challenge: OnceLock<Vec<u8>>,
}

impl Progress {
    /// Notes that the request spent `challenge`, issued for its device and
    /// step and unexpired.
    pub(crate) fn challenge_spent(&self, challenge: &[u8]) {
        let _ = self.fresh_challenge.set(challenge.to_vec());
    }
}

/// Who a refused request came from, as far as recording its refusal goes.
pub(crate) enum Witness<'a> {
    /// The OEM's own step: recorded whenever it names a device with ledger
    /// history.
    Oem,
    /// An owner-side request: recorded only when it proves a relation to
    /// the device (see the module doc).
    Owner {
        /// The voucher presented.
        voucher: &'a [u8],
        /// The owner authorization presented, if any.
        owner_authorization: Option<&'a v1::SignedStatement>,
        /// The device's proof presented, if any.
        device_proof: Option<&'a v1::SignedStatement>,
        /// What the request established while checked.
        progress: Option<&'a Progress>,
    },
    /// A request that proved its relation to the device while it was
    /// checked: an FDO voucher whose new entry verified under the recorded
    /// current owner, its earlier entries being the recorded ones
    /// ([`crate::fdo`]).
    Proven,
}

impl<'a> Witness<'a> {
    /// The witness of an owner-authorised step.
    pub(crate) fn step(request: &'a StepRequest, progress: &'a Progress) -> Self {
        Witness::Owner {
            voucher: &request.voucher,
            owner_authorization: request.owner_authorization.as_ref(),
            device_proof: request.device_proof.as_ref(),
            progress: Some(progress),
        }
    }

    /// The witness of a registration (a voucher and nothing else).
    pub(crate) fn voucher(voucher: &'a [u8]) -> Self {
        Witness::Owner {
            voucher,
            owner_authorization: None,
            device_proof: None,
            progress: None,
        }
    }
}

impl Ownership {
    /// Appends one ownership entry with its constraints.
    pub(crate) async fn append(
        &self,
        request: v1::AppendRequest,
    ) -> std::result::Result<v1::AppendResponse, AppendRefusal> {
        self.ledger.append(request).await
    }

    /// Records a refusal about the device `rot_hint` when it has ledger
    /// history and `witness` proves a relation to it (module doc), and
    /// returns the error to send. Failures of the line itself (backend,
    /// corrupt entry) and capacity answers are returned as they are.
    pub(crate) async fn refused(
        &self,
        rot_hint: Option<&str>,
        actor: &str,
        operation: &str,
        witness: Witness<'_>,
        error: Error,
    ) -> Error {
        if !error.is_expected_refusal() {
            return error;
        }
        let Some(rot_id) = rot_hint.filter(|r| trustline_proto::identity::is_well_formed_rot_id(r))
        else {
            return error;
        };
        let serial = match self.devices.load(self.ledger.as_ref(), rot_id).await {
            Ok(Some(record)) => {
                if !self.proves_relation(&record, &witness) {
                    return error;
                }
                record.serial
            }
            Ok(None) => {
                // Claimed, never certified: only the OEM's refusals count
                // (nobody else can prove anything about such a device).
                if !matches!(witness, Witness::Oem) {
                    return error;
                }
                match state::lookup(
                    self.ledger.as_ref(),
                    state::unique(keys::CLAIM, rot_id.as_bytes().to_vec()),
                )
                .await
                {
                    Ok(Some(_)) => String::new(),
                    Ok(None) => return error,
                    Err(e) => return e,
                }
            }
            Err(e) => return e,
        };
        let (key, holder_seq) = match &error {
            Error::TransferRecorded {
                index, holder_seq, ..
            } => (Some(state::voucher_entry_key(rot_id, *index)), *holder_seq),
            Error::Duplicated { seq, .. } => (None, *seq),
            _ => (None, 0),
        };
        let payload = v1::RejectedPayload {
            operation: operation.to_owned(),
            reason: error.to_string(),
            key,
            holder_seq,
            evidence: vec![],
        };
        let draft = draft(EventKind::RequestRejected, rot_id, &serial, actor, &payload);
        match self.append(append_request(draft, vec![], None)).await {
            Ok(_) => error,
            Err(AppendRefusal::Failed(s)) => Error::ledger(s),
            Err(other) => Error::Config(format!("unconstrained append refused: {other:?}")),
        }
    }

    /// Whether `witness` proves a relation to the device `record` (module
    /// doc). Verifies signatures only.
    fn proves_relation(&self, record: &DeviceRecord, witness: &Witness<'_>) -> bool {
        let Witness::Owner {
            voucher,
            owner_authorization,
            device_proof,
            progress,
        } = witness
        else {
            return true;
        };
        let fresh = progress.and_then(|p| p.fresh_challenge.get());
        if let (Some(proof), Some(challenge)) = (device_proof, fresh) {
            if device_signed(record, proof, challenge) {
                return true;
            }
        }
        let Ok(checked) = self.check_voucher(record, voucher) else {
            return false;
        };
        let recorded = record.transfers.len();
        let entries = &checked.verified.entries;
        if recorded == 0
            || entries.len() < recorded
            || entries
                .iter()
                .zip(&record.transfers)
                .any(|(e, t)| e.entry_sha256.as_slice() != t.entry_sha256.as_slice())
        {
            return false;
        }
        // The voucher's walk verified every entry under the owner before
        // it: a new entry at `recorded` is the current owner's signature.
        if entries.len() > recorded {
            return true;
        }
        let owner = &entries[recorded - 1].next_owner_public_key;
        owner_authorization.is_some_and(|signed| {
            statement::verify::<v1::OwnerAuthorization>(signed, owner)
                .is_ok_and(|auth| auth.rot_id == record.rot_id)
        })
    }
}

/// Whether `proof` is an identity or reset proof by the certified device
/// key over `challenge`, naming the device.
fn device_signed(record: &DeviceRecord, proof: &v1::SignedStatement, challenge: &[u8]) -> bool {
    let key = &record.device_public_key;
    statement::verify::<v1::IdentityProof>(proof, key)
        .is_ok_and(|p| p.rot_id == record.rot_id && p.challenge == challenge)
        || statement::verify::<v1::ResetProof>(proof, key)
            .is_ok_and(|p| p.rot_id == record.rot_id && p.challenge == challenge)
}

/// An ownership entry: the actor is the caller's role only, and no site or
/// order is named (invariant 6).
pub(crate) fn draft(
    kind: EventKind,
    rot_id: &str,
    serial: &str,
    actor: &str,
    payload: &impl Message,
) -> v1::EntryDraft {
    v1::EntryDraft {
        kind: kind as i32,
        rot_id: rot_id.to_owned(),
        serial: serial.to_owned(),
        site: String::new(),
        actor: actor.to_owned(),
        order_id: String::new(),
        payload: payload.encode_to_vec(),
    }
}
