//! What the ownership service writes besides its steps: its entries' shape
//! (the actor is the caller's role only and no site or order is named,
//! invariant 6) and the `REQUEST_REJECTED` entry a refusal about a device
//! with ledger history leaves behind — nothing else.

use backends::{append_request, keys, AppendRefusal};
use prost::Message;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::Error;
use crate::{state, Ownership};

impl Ownership {
    /// Appends one ownership entry with its constraints.
    pub(crate) async fn append(
        &self,
        request: v1::AppendRequest,
    ) -> std::result::Result<v1::AppendResponse, AppendRefusal> {
        self.ledger.append(request).await
    }

    /// Records a refusal about the device `rot_hint` (when it has ledger
    /// history) and returns the error to send. Failures of the line itself
    /// (backend, corrupt entry) are returned as they are.
    pub(crate) async fn refused(
        &self,
        rot_hint: Option<&str>,
        actor: &str,
        operation: &str,
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
            Ok(Some(record)) => record.serial,
            Ok(None) => {
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
