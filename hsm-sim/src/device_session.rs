//! A simulated die behind the framed device protocol
//! (`docs/device-protocol.md`, `trustline.device.v1`): the device end of an
//! `exec:` or `serial:` link, answering each `DeviceRequest` with the
//! `DeviceResponse` real firmware would give.
//!
//! A session starts with `hello`; any other request first is refused with
//! `ERROR_CODE_PROTOCOL`. Every refusal is an `ERROR_CODE_*` answer and
//! leaves the die as it was (the die checks everything before it changes
//! anything). A framing error — a header announcing 0 or more than
//! `MAX_FRAME_LEN` bytes, a stream ending inside a frame — ends the
//! session, since the stream is out of step.

use std::io::{Read, Write};

use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::device::v1::{self as dv1, ErrorCode};
use trustline_proto::device::{
    decode_request, read_frame, write_frame, MAX_FRAME_LEN, PROTOCOL_VERSION,
};

use crate::key_delivery::{KDF_ECDH_SHA256, KDF_ECDH_X_COORDINATE};
use crate::rot::SimulatedRot;
use crate::Error;

/// The `DeviceRequest.step` field numbers this device implements: all of
/// version 1 and the additive `fdo_header_hmac` (17).
pub const STEPS: [u32; 16] = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];

/// A die in a socket, speaking the device protocol.
pub struct DeviceSession {
    rot: SimulatedRot,
    version: Option<u32>,
}

impl DeviceSession {
    /// Puts `rot` behind the protocol; the session waits for `hello`.
    pub fn new(rot: SimulatedRot) -> Self {
        Self { rot, version: None }
    }

    /// The die.
    pub fn rot(&self) -> &SimulatedRot {
        &self.rot
    }

    /// Takes the die out.
    pub fn into_rot(self) -> SimulatedRot {
        self.rot
    }

    /// Answers one frame body: a body that is not a `DeviceRequest` gets
    /// `ERROR_CODE_MALFORMED` with id 0.
    pub fn handle_frame(&mut self, body: &[u8]) -> dv1::DeviceResponse {
        match decode_request(body) {
            Ok(request) => self.handle(&request),
            Err(e) => error(0, ErrorCode::Malformed, e.to_string()),
        }
    }

    /// Answers one request.
    pub fn handle(&mut self, request: &dv1::DeviceRequest) -> dv1::DeviceResponse {
        let id = request.id;
        // An unknown step field decodes as no step at all.
        let Some(step) = &request.step else {
            return error(
                id,
                ErrorCode::Unsupported,
                "the request names no step this device knows",
            );
        };
        if let Step::Hello(hello) = step {
            return self.hello(id, hello);
        }
        if self.version.is_none() {
            return error(id, ErrorCode::Protocol, "hello must come first");
        }
        match self.step(step) {
            Ok(result) => dv1::DeviceResponse {
                id,
                result: Some(result),
            },
            Err((code, reason)) => error(id, code, reason),
        }
    }

    /// Serves frames from `reader` until it ends cleanly.
    ///
    /// # Errors
    /// [`Error::Proto`] with the framing error that ended the session (after
    /// answering it with `ERROR_CODE_MALFORMED` where the link still
    /// writes), or a write error.
    pub fn serve<R: Read, W: Write>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<(), Error> {
        loop {
            let body = match read_frame(reader) {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // Best effort: the peer may already be gone.
                    let _ = write_frame(writer, &error(0, ErrorCode::Malformed, e.to_string()));
                    return Err(e.into());
                }
            };
            let response = self.handle_frame(&body);
            write_frame(writer, &response)?;
        }
    }

    fn hello(&mut self, id: u32, hello: &dv1::HelloRequest) -> dv1::DeviceResponse {
        if !hello.versions.contains(&PROTOCOL_VERSION) {
            self.version = None;
            return error(
                id,
                ErrorCode::Protocol,
                format!("this device speaks protocol version {PROTOCOL_VERSION} only"),
            );
        }
        self.version = Some(PROTOCOL_VERSION);
        dv1::DeviceResponse {
            id,
            result: Some(Answer::Hello(dv1::HelloResponse {
                version: PROTOCOL_VERSION,
                steps: STEPS.to_vec(),
                kdfs: vec![KDF_ECDH_X_COORDINATE.into(), KDF_ECDH_SHA256.into()],
                max_frame_len: MAX_FRAME_LEN as u32,
                device_info: format!("hsm-sim simulated rot ({})", self.rot.vendor_name()),
            })),
        }
    }

    fn step(&mut self, step: &Step) -> Result<Answer, (ErrorCode, String)> {
        let rot = &mut self.rot;
        Ok(match step {
            // Answered before a session exists (see `handle`).
            Step::Hello(_) => return Err((ErrorCode::Protocol, "hello out of place".into())),
            Step::Status(_) => Answer::Status(dv1::StatusResponse {
                rot_id: rot.rot_id().to_owned(),
                lifecycle: rot.lifecycle().to_proto() as i32,
                readout_locked: rot.readout_locked(),
                firmware_sha256: rot.firmware_sha256().to_vec(),
                claim_receipt: rot.claim_receipt().cloned(),
                key_attestation: rot.key_attestation().cloned(),
                reset_counter: rot.reset_counter(),
                certified: !rot.certificate_chain().is_empty(),
            }),
            Step::ReadAttestation(_) => Answer::ReadAttestation(dv1::ReadAttestationResponse {
                attestation: Some(rot.attestation()),
            }),
            Step::Claim(r) => Answer::Claim(dv1::ClaimResponse {
                receipt: Some(rot.claim(&r.nonce, &r.anchor).map_err(refusal)?),
            }),
            Step::LockReadout(_) => {
                rot.lock_readout();
                Answer::LockReadout(dv1::LockReadoutResponse {
                    readout_locked: rot.readout_locked(),
                })
            }
            Step::GenerateKey(r) => {
                let (_, attestation) = rot.generate_identity_key(&r.challenge).map_err(refusal)?;
                Answer::GenerateKey(dv1::KeyAttestationResponse {
                    key_attestation: Some(attestation),
                })
            }
            Step::InstallWrappedKey(r) => {
                if r.kdf != KDF_ECDH_X_COORDINATE && r.kdf != KDF_ECDH_SHA256 {
                    return Err((ErrorCode::Unsupported, format!("unknown kdf {:?}", r.kdf)));
                }
                let attestation = rot
                    .install_wrapped_key(
                        &r.device_public_key,
                        &r.hsm_ephemeral_public_key,
                        &r.wrapped_key,
                        &r.kdf,
                        &r.challenge,
                    )
                    .map_err(refusal)?;
                Answer::InstallWrappedKey(dv1::KeyAttestationResponse {
                    key_attestation: Some(attestation),
                })
            }
            Step::ProvePossession(r) => Answer::ProvePossession(dv1::ProvePossessionResponse {
                proof: Some(
                    rot.proof_of_possession(&r.serial, &r.challenge)
                        .map_err(refusal)?,
                ),
            }),
            Step::StoreCertification(r) => {
                Answer::StoreCertification(dv1::StoreCertificationResponse {
                    voucher: rot
                        .store_certification(&r.certificate_chain, &r.voucher)
                        .map_err(refusal)?,
                })
            }
            Step::IdentityProof(r) => Answer::IdentityProof(dv1::IdentityProofResponse {
                proof: Some(rot.identity_proof(&r.challenge).map_err(refusal)?),
            }),
            Step::UserReset(r) => Answer::UserReset(reset(rot.user_reset(&r.challenge))?),
            Step::EnterService(_) => {
                rot.enter_service().map_err(refusal)?;
                Answer::EnterService(dv1::EnterServiceResponse {
                    lifecycle: rot.lifecycle().to_proto() as i32,
                })
            }
            Step::Decommission(r) => Answer::Decommission(reset(rot.decommission(&r.challenge))?),
            Step::Recommission(r) => Answer::Recommission(reset(rot.recommission(&r.challenge))?),
            Step::Retire(r) => Answer::Retire(reset(rot.retire(&r.challenge))?),
            Step::FdoHeaderHmac(r) => Answer::FdoHeaderHmac(dv1::FdoHeaderHmacResponse {
                hmac_sha256: rot.fdo_header_hmac(&r.ov_header).map_err(refusal)?.to_vec(),
            }),
        })
    }
}

fn reset(
    proof: Result<trustline_proto::v1::SignedStatement, Error>,
) -> Result<dv1::ResetProofResponse, (ErrorCode, String)> {
    Ok(dv1::ResetProofResponse {
        proof: Some(proof.map_err(refusal)?),
    })
}

/// The wire code of a die's refusal.
pub fn error_code(e: &Error) -> ErrorCode {
    match e {
        Error::AlreadyClaimed => ErrorCode::AlreadyClaimed,
        Error::NotClaimed => ErrorCode::NotClaimed,
        Error::AlreadyPersonalised => ErrorCode::AlreadyPersonalised,
        Error::NotPersonalised => ErrorCode::NotPersonalised,
        Error::KeyMismatch => ErrorCode::KeyMismatch,
        Error::KeyDelivery(_) => ErrorCode::KeyDeliveryFailed,
        Error::IllegalTransition { .. } => ErrorCode::IllegalTransition,
        Error::InvalidInput(_) => ErrorCode::InvalidArgument,
        Error::WrongCertification(_) => ErrorCode::WrongCertification,
        // A voucher or FDO header that does not decode or verify is not this
        // device's.
        Error::Proto(p) if is_voucher_error(p) => ErrorCode::WrongCertification,
        _ => ErrorCode::Internal,
    }
}

fn is_voucher_error(e: &trustline_proto::Error) -> bool {
    use trustline_proto::Error as P;
    matches!(
        e,
        P::VoucherTooLarge { .. }
            | P::VoucherMalformed(_)
            | P::VoucherVersion(_)
            | P::VoucherTooManyEntries { .. }
            | P::VoucherChainMismatch
            | P::VoucherNotBound
            | P::VoucherBadBinding
            | P::NotP256(_)
            | P::FdoTooLarge { .. }
            | P::FdoMalformed(_)
            | P::FdoVersion(_)
            | P::FdoUnsupported(_)
    )
}

fn refusal(e: Error) -> (ErrorCode, String) {
    (error_code(&e), e.to_string())
}

fn error(id: u32, code: ErrorCode, reason: impl Into<String>) -> dv1::DeviceResponse {
    let mut reason = reason.into();
    if reason.len() > 256 {
        let mut cut = 256;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    dv1::DeviceResponse {
        id,
        result: Some(Answer::Error(dv1::DeviceError {
            code: code as i32,
            reason,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use trustline_proto::device::encode_frame;

    use crate::rot::{Fleet, Lifecycle, VendorShape};

    fn session() -> DeviceSession {
        let fleet = Fleet::builder()
            .seed(15)
            .vendor("Acme Silicon", VendorShape::RootOnly)
            .genuine(1)
            .build()
            .expect("fleet");
        let rot = fleet.into_devices().remove(0).rot;
        DeviceSession::new(rot)
    }

    fn req(id: u32, step: Step) -> dv1::DeviceRequest {
        dv1::DeviceRequest {
            id,
            step: Some(step),
        }
    }

    fn hello(versions: Vec<u32>) -> Step {
        Step::Hello(dv1::HelloRequest {
            versions,
            station: "st".into(),
        })
    }

    fn code(response: &dv1::DeviceResponse) -> Option<ErrorCode> {
        match &response.result {
            Some(Answer::Error(e)) => ErrorCode::try_from(e.code).ok(),
            _ => None,
        }
    }

    fn claim(id: u32) -> dv1::DeviceRequest {
        req(
            id,
            Step::Claim(dv1::ClaimRequest {
                nonce: vec![1; 32],
                anchor: b"anchor".to_vec(),
            }),
        )
    }

    #[test]
    fn hello_comes_first_and_needs_version_1() {
        let mut s = session();
        let r = s.handle(&req(1, Step::Status(dv1::StatusRequest {})));
        assert_eq!((r.id, code(&r)), (1, Some(ErrorCode::Protocol)));
        let r = s.handle(&req(2, hello(vec![2])));
        assert_eq!(code(&r), Some(ErrorCode::Protocol));
        let r = s.handle(&req(3, hello(vec![2, 1])));
        let Some(Answer::Hello(h)) = r.result else {
            panic!("no hello answer: {r:?}");
        };
        assert_eq!(h.version, 1);
        assert_eq!(h.steps, STEPS.to_vec());
        assert_eq!(h.kdfs, [KDF_ECDH_X_COORDINATE, KDF_ECDH_SHA256]);
        let r = s.handle(&req(4, Step::Status(dv1::StatusRequest {})));
        assert!(matches!(r.result, Some(Answer::Status(_))), "{r:?}");
    }

    #[test]
    fn unknown_steps_and_garbage_are_refused_by_code() {
        let mut s = session();
        s.handle(&req(1, hello(vec![1])));
        // Field 40 is no step of version 1: prost keeps it as unknown.
        let unknown = [0x08, 0x07, 0xc2, 0x02, 0x00];
        let r = s.handle_frame(&unknown);
        assert_eq!((r.id, code(&r)), (7, Some(ErrorCode::Unsupported)));
        let r = s.handle_frame(&[0xff, 0xff, 0xff]);
        assert_eq!((r.id, code(&r)), (0, Some(ErrorCode::Malformed)));
    }

    #[test]
    fn refusals_change_nothing_and_status_returns_the_signed_receipt() {
        let mut s = session();
        s.handle(&req(1, hello(vec![1])));
        let Some(Answer::Claim(first)) = s.handle(&claim(2)).result else {
            panic!("claim refused");
        };
        assert_eq!(code(&s.handle(&claim(3))), Some(ErrorCode::AlreadyClaimed));
        let bad_kdf = req(
            4,
            Step::InstallWrappedKey(dv1::InstallWrappedKeyRequest {
                kdf: "hkdf".into(),
                challenge: vec![1; 32],
                ..Default::default()
            }),
        );
        assert_eq!(code(&s.handle(&bad_kdf)), Some(ErrorCode::Unsupported));
        let garbage_key = req(
            5,
            Step::InstallWrappedKey(dv1::InstallWrappedKeyRequest {
                kdf: KDF_ECDH_X_COORDINATE.into(),
                hsm_ephemeral_public_key: b"not a key".to_vec(),
                wrapped_key: vec![0; 40],
                challenge: vec![1; 32],
                ..Default::default()
            }),
        );
        assert_eq!(
            code(&s.handle(&garbage_key)),
            Some(ErrorCode::KeyDeliveryFailed)
        );
        let early = req(
            6,
            Step::ProvePossession(dv1::ProvePossessionRequest {
                serial: "SN-1".into(),
                challenge: vec![1; 32],
            }),
        );
        assert_eq!(code(&s.handle(&early)), Some(ErrorCode::NotPersonalised));
        let Some(Answer::Status(status)) = s
            .handle(&req(7, Step::Status(dv1::StatusRequest {})))
            .result
        else {
            panic!("no status");
        };
        assert_eq!(status.claim_receipt, first.receipt);
        assert_eq!(status.key_attestation, None);
        assert_eq!(s.rot().lifecycle(), Lifecycle::Claimed);
    }

    #[test]
    fn serve_answers_until_a_clean_end_and_stops_at_a_bad_frame() {
        let mut s = session();
        let mut input = encode_frame(&req(1, hello(vec![1]))).expect("frame");
        input.extend(encode_frame(&claim(2)).expect("frame"));
        let mut output = Vec::new();
        s.serve(&mut input.as_slice(), &mut output)
            .expect("clean end");
        let mut reader = output.as_slice();
        let mut ids = Vec::new();
        while let Some(body) = trustline_proto::device::read_frame(&mut reader).expect("frame") {
            let r = dv1::DeviceResponse::decode(body.as_slice()).expect("response");
            assert_eq!(code(&r), None, "{r:?}");
            ids.push(r.id);
        }
        assert_eq!(ids, [1, 2]);

        let mut output = Vec::new();
        let bad = [0xff, 0xff, 0xff, 0xff, 0x00];
        let err = s
            .serve(&mut bad.as_slice(), &mut output)
            .expect_err("bad length");
        assert!(matches!(
            err,
            Error::Proto(trustline_proto::Error::FrameLength { .. })
        ));
        let body = trustline_proto::device::read_frame(&mut output.as_slice())
            .expect("frame")
            .expect("an answer");
        let r = dv1::DeviceResponse::decode(body.as_slice()).expect("response");
        assert_eq!((r.id, code(&r)), (0, Some(ErrorCode::Malformed)));
    }
}
