//! After a lost answer to a one-time step (`claim`, `generate_key`,
//! `install_wrapped_key`), the station reads `status` in a new session
//! instead of repeating the step (docs/device-protocol.md §8.5, §10.1): the
//! statement the device signed is there, byte for byte. It is taken only
//! when it answers this very request — the same nonce and anchor, the same
//! challenge, mode and key — and still proves nothing by itself: the
//! provisioner verifies its signature as if it had come in the answer.

use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::device::v1::{self as dv1};
use trustline_proto::v1;

use crate::error::Error;

/// What `status` says about a one-time step whose answer was lost.
#[derive(Debug)]
pub(super) enum Recovered {
    /// The device did it: here is its answer.
    Done(Answer),
    /// The device did not do it (the slot or key is still empty): sending
    /// it again is not a repetition.
    NotDone,
    /// The device holds what another request made: the step would have
    /// been refused.
    Refused(Error),
}

/// Reads `status` for the one-time step `step`.
pub(super) fn recover(step: &Step, status: &dv1::StatusResponse) -> Recovered {
    match step {
        Step::Claim(r) => claim(r, status),
        Step::GenerateKey(r) => key(
            status,
            &r.challenge,
            None,
            v1::PersonalisationMode::OnDevice,
            Answer::GenerateKey,
        ),
        Step::InstallWrappedKey(r) => key(
            status,
            &r.challenge,
            Some(&r.device_public_key),
            v1::PersonalisationMode::Hsm,
            Answer::InstallWrappedKey,
        ),
        _ => Recovered::NotDone,
    }
}

fn claim(request: &dv1::ClaimRequest, status: &dv1::StatusResponse) -> Recovered {
    let Some(receipt) = &status.claim_receipt else {
        return Recovered::NotDone;
    };
    let anchor_sha256 = Sha256::digest(&request.anchor);
    match v1::ClaimReceipt::decode(receipt.body.as_slice()) {
        Ok(body) if body.nonce == request.nonce && body.anchor_sha256[..] == anchor_sha256[..] => {
            Recovered::Done(Answer::Claim(dv1::ClaimResponse {
                receipt: Some(receipt.clone()),
            }))
        }
        _ => Recovered::Refused(Error::DeviceRefused {
            code: "already-claimed".into(),
            reason: "status shows a claim receipt for another nonce or anchor".into(),
        }),
    }
}

fn key(
    status: &dv1::StatusResponse,
    challenge: &[u8],
    device_public_key: Option<&Vec<u8>>,
    mode: v1::PersonalisationMode,
    answer: fn(dv1::KeyAttestationResponse) -> Answer,
) -> Recovered {
    let Some(attestation) = &status.key_attestation else {
        return Recovered::NotDone;
    };
    match v1::KeyAttestation::decode(attestation.body.as_slice()) {
        Ok(body)
            if body.challenge == challenge
                && body.mode == mode as i32
                && device_public_key.is_none_or(|k| *k == body.device_public_key) =>
        {
            Recovered::Done(answer(dv1::KeyAttestationResponse {
                key_attestation: Some(attestation.clone()),
            }))
        }
        _ => Recovered::Refused(Error::DeviceRefused {
            code: "already-personalised".into(),
            reason: "status shows a key attestation for another challenge, mode or key".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: impl Message) -> v1::SignedStatement {
        v1::SignedStatement {
            body: body.encode_to_vec(),
            signature: vec![0x30],
        }
    }

    fn claim_step(nonce: &[u8]) -> Step {
        Step::Claim(dv1::ClaimRequest {
            nonce: nonce.to_vec(),
            anchor: b"anchor".to_vec(),
        })
    }

    #[test]
    fn a_claim_is_recovered_only_for_its_own_nonce_and_anchor() {
        let blank = dv1::StatusResponse::default();
        assert!(matches!(
            recover(&claim_step(b"n1"), &blank),
            Recovered::NotDone
        ));
        let status = dv1::StatusResponse {
            claim_receipt: Some(signed(v1::ClaimReceipt {
                rot_id: "r".into(),
                nonce: b"n1".to_vec(),
                anchor_sha256: Sha256::digest(b"anchor").to_vec(),
            })),
            ..Default::default()
        };
        let Recovered::Done(Answer::Claim(c)) = recover(&claim_step(b"n1"), &status) else {
            panic!("not recovered");
        };
        assert_eq!(c.receipt, status.claim_receipt);
        let Recovered::Refused(e) = recover(&claim_step(b"n2"), &status) else {
            panic!("another nonce recovered");
        };
        assert_eq!(e.reason(), "device:already-claimed");
    }

    #[test]
    fn a_key_attestation_is_recovered_only_for_its_challenge_mode_and_key() {
        let status = dv1::StatusResponse {
            key_attestation: Some(signed(v1::KeyAttestation {
                challenge: b"c".to_vec(),
                device_public_key: b"k".to_vec(),
                mode: v1::PersonalisationMode::Hsm as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let install = |key: &[u8], challenge: &[u8]| {
            Step::InstallWrappedKey(dv1::InstallWrappedKeyRequest {
                device_public_key: key.to_vec(),
                challenge: challenge.to_vec(),
                ..Default::default()
            })
        };
        assert!(matches!(
            recover(&install(b"k", b"c"), &status),
            Recovered::Done(Answer::InstallWrappedKey(_))
        ));
        for step in [
            install(b"other", b"c"),
            install(b"k", b"other"),
            Step::GenerateKey(dv1::GenerateKeyRequest {
                challenge: b"c".to_vec(),
            }),
        ] {
            assert!(
                matches!(recover(&step, &status), Recovered::Refused(_)),
                "{step:?}"
            );
        }
    }
}
