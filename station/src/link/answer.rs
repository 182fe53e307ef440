//! The station's reading of one answer frame (docs/device-protocol.md §9):
//! the body must decode as a `DeviceResponse`, carry the request's id (an
//! earlier id is a stale answer to skip, any other is refused), and answer
//! the step asked — or be the device's `DeviceError`, mapped to a stable
//! reason. Pure functions over bytes, so the fuzz target drives them.

use trustline_proto::device::decode_response;
use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::device::v1::{self as dv1, ErrorCode};

use crate::error::{Error, LinkFault, Result};

/// The longest device text the station keeps (the protocol allows 256 bytes).
const MAX_REASON_LEN: usize = 256;

/// What one frame body turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// The answer to the request.
    Answer(Answer),
    /// An answer to an earlier request (its id), e.g. a late answer that
    /// arrived after its request timed out: skipped.
    Stale(u32),
}

/// Reads one frame body as the answer to request `id` for step number
/// `step` (the `DeviceRequest.step` field number).
///
/// # Errors
/// [`Error::Link`] with [`LinkFault::Malformed`] for bytes that are not a
/// `DeviceResponse`, an answer without a result, or the device's report of
/// a framing error (id 0); [`LinkFault::WrongId`] for an id that is neither
/// `id` nor earlier; [`LinkFault::WrongAnswer`] for an answer to another
/// step; [`Error::DeviceRefused`] for the device's `DeviceError`.
pub fn check_answer(body: &[u8], id: u32, step: u32) -> Result<Checked> {
    let response = decode_response(body)
        .map_err(|e| Error::link(LinkFault::Malformed, format!("the answer {e}")))?;
    if response.id == 0 {
        let detail = match &response.result {
            Some(Answer::Error(e)) => {
                format!("the device reports a framing error: {}", clean(&e.reason))
            }
            _ => "an answer with id 0 that is not a framing error".to_owned(),
        };
        return Err(Error::link(LinkFault::Malformed, detail));
    }
    if response.id < id {
        return Ok(Checked::Stale(response.id));
    }
    if response.id != id {
        return Err(Error::link(
            LinkFault::WrongId,
            format!("an answer with id {} to request {id}", response.id),
        ));
    }
    let Some(result) = response.result else {
        return Err(Error::link(
            LinkFault::Malformed,
            format!("the answer to request {id} carries no result this station knows"),
        ));
    };
    if let Answer::Error(e) = &result {
        return Err(refusal(e));
    }
    let answered = answer_step(&result);
    if answered != step {
        return Err(Error::link(
            LinkFault::WrongAnswer,
            format!(
                "request {id} asked for {} and the device answered {}",
                step_name(step),
                step_name(answered)
            ),
        ));
    }
    Ok(Checked::Answer(result))
}

/// The device's refusal as an error with its stable code name.
fn refusal(e: &dv1::DeviceError) -> Error {
    Error::DeviceRefused {
        code: code_name(e.code),
        reason: clean(&e.reason),
    }
}

/// The stable name of a `DeviceError` code: `ERROR_CODE_ALREADY_CLAIMED`
/// is `already-claimed`; a code this station does not know is `unknown`.
pub fn code_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(c) => c
            .as_str_name()
            .trim_start_matches("ERROR_CODE_")
            .to_ascii_lowercase()
            .replace('_', "-"),
        Err(_) => "unknown".into(),
    }
}

/// Device text made safe to print: at most 256 bytes, no control
/// characters.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON_LEN));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_LEN {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The field number of a request's step (§10.1).
pub fn request_step(step: &Step) -> u32 {
    match step {
        Step::Hello(_) => 2,
        Step::Status(_) => 3,
        Step::ReadAttestation(_) => 4,
        Step::Claim(_) => 5,
        Step::LockReadout(_) => 6,
        Step::GenerateKey(_) => 7,
        Step::InstallWrappedKey(_) => 8,
        Step::ProvePossession(_) => 9,
        Step::StoreCertification(_) => 10,
        Step::IdentityProof(_) => 11,
        Step::UserReset(_) => 12,
        Step::EnterService(_) => 13,
        Step::Decommission(_) => 14,
        Step::Recommission(_) => 15,
        Step::Retire(_) => 16,
        Step::FdoHeaderHmac(_) => 17,
    }
}

/// The field number of an answer (the same as its request's; 100 for an
/// error).
pub fn answer_step(answer: &Answer) -> u32 {
    match answer {
        Answer::Hello(_) => 2,
        Answer::Status(_) => 3,
        Answer::ReadAttestation(_) => 4,
        Answer::Claim(_) => 5,
        Answer::LockReadout(_) => 6,
        Answer::GenerateKey(_) => 7,
        Answer::InstallWrappedKey(_) => 8,
        Answer::ProvePossession(_) => 9,
        Answer::StoreCertification(_) => 10,
        Answer::IdentityProof(_) => 11,
        Answer::UserReset(_) => 12,
        Answer::EnterService(_) => 13,
        Answer::Decommission(_) => 14,
        Answer::Recommission(_) => 15,
        Answer::Retire(_) => 16,
        Answer::FdoHeaderHmac(_) => 17,
        Answer::Error(_) => 100,
    }
}

/// The document's name of a step number (`read_attestation`, ...).
pub fn step_name(step: u32) -> &'static str {
    match step {
        2 => "hello",
        3 => "status",
        4 => "read_attestation",
        5 => "claim",
        6 => "lock_readout",
        7 => "generate_key",
        8 => "install_wrapped_key",
        9 => "prove_possession",
        10 => "store_certification",
        11 => "identity_proof",
        12 => "user_reset",
        13 => "enter_service",
        14 => "decommission",
        15 => "recommission",
        16 => "retire",
        17 => "fdo_header_hmac",
        100 => "error",
        _ => "an unknown step",
    }
}

/// Whether §10.1 marks the step safe to repeat after a lost answer. The
/// one-time steps that sign a statement (`claim`, `generate_key`,
/// `install_wrapped_key`) are recovered from `status` instead; the field
/// lifecycle steps, and `user_reset` (which would count again), are never
/// repeated by the station.
pub fn repeatable(step: u32) -> bool {
    matches!(step, 2 | 3 | 4 | 6 | 9 | 10 | 11 | 17)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn body(id: u32, result: Answer) -> Vec<u8> {
        dv1::DeviceResponse {
            id,
            result: Some(result),
        }
        .encode_to_vec()
    }

    fn lock(locked: bool) -> Answer {
        Answer::LockReadout(dv1::LockReadoutResponse {
            readout_locked: locked,
        })
    }

    fn fault(r: Result<Checked>) -> Option<LinkFault> {
        match r {
            Err(Error::Link { fault, .. }) => Some(fault),
            _ => None,
        }
    }

    #[test]
    fn the_answer_to_the_request_is_taken_and_a_stale_one_skipped() {
        assert_eq!(
            check_answer(&body(7, lock(true)), 7, 6).expect("answer"),
            Checked::Answer(lock(true))
        );
        assert_eq!(
            check_answer(&body(5, lock(true)), 7, 6).expect("stale"),
            Checked::Stale(5)
        );
    }

    #[test]
    fn wrong_ids_other_steps_garbage_and_framing_reports_are_refused() {
        assert_eq!(
            fault(check_answer(&body(8, lock(true)), 7, 6)),
            Some(LinkFault::WrongId)
        );
        assert_eq!(
            fault(check_answer(&body(7, lock(true)), 7, 5)),
            Some(LinkFault::WrongAnswer)
        );
        assert_eq!(
            fault(check_answer(&[0xff, 0xff, 0xff], 7, 6)),
            Some(LinkFault::Malformed)
        );
        let framing = body(
            0,
            Answer::Error(dv1::DeviceError {
                code: ErrorCode::Malformed as i32,
                reason: "bad length".into(),
            }),
        );
        assert_eq!(
            fault(check_answer(&framing, 7, 6)),
            Some(LinkFault::Malformed)
        );
        // An unknown result field decodes as no result.
        let unknown = [0x08, 0x07, 0xa2, 0x01, 0x00];
        assert_eq!(
            fault(check_answer(&unknown, 7, 6)),
            Some(LinkFault::Malformed)
        );
    }

    #[test]
    fn a_device_error_is_a_refusal_with_a_stable_code_name() {
        let refused = body(
            3,
            Answer::Error(dv1::DeviceError {
                code: ErrorCode::AlreadyClaimed as i32,
                reason: "root of trust is already claimed\n\x1b[2J".into(),
            }),
        );
        let Err(e) = check_answer(&refused, 3, 5) else {
            panic!("accepted a refusal");
        };
        assert_eq!(e.reason(), "device:already-claimed");
        assert!(!e.to_string().contains('\x1b'), "{e}");
        assert_eq!(code_name(ErrorCode::KeyMismatch as i32), "key-mismatch");
        assert_eq!(code_name(999), "unknown");
        assert_eq!(clean(&"é".repeat(300)).len(), 256);
    }

    #[test]
    fn every_step_number_round_trips_through_its_name_and_repeatability_follows_the_table() {
        for n in 2..=17 {
            assert_ne!(step_name(n), "an unknown step");
        }
        let one_time = [5, 7, 8, 12, 13, 14, 15, 16];
        for n in 2..=17 {
            assert_eq!(repeatable(n), !one_time.contains(&n), "step {n}");
        }
    }
}
