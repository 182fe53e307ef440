//! The CA's checks of a device certificate request: the PKCS#10 CSR parser
//! and validator, and the proof-of-possession path
//! (`ca_service::request`, 2.4.9.3/4).

use ca_service::request::{verify_csr, DeviceCertificateRequest, SubjectKey};
use prost::Message;
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::issue_device_certificate_request::SubjectKey as WireSubjectKey;

use super::sign_body;
use crate::fixtures::{key, spki, KeyName};
use crate::input::selector;
use crate::Outcome;

/// Selector: the rest is a CSR, DER.
pub const CSR: u8 = 0;
/// Selector: the rest is an `IssueDeviceCertificateRequest` off the wire.
pub const WIRE: u8 = 1;
/// Selector: the rest is a `ProofOfPossession` body signed by the device
/// key the request names.
pub const SIGNED_PROOF: u8 = 2;
/// Selector: as [`SIGNED_PROOF`] but signed by another key.
pub const FORGED_PROOF: u8 = 3;

/// The `device_request` harness.
pub fn device_request(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    match sel % 4 {
        CSR => match verify_csr(rest) {
            Ok(key) => {
                let der = statement::p256_spki(&key);
                assert!(statement::parse_p256_spki(&der).is_ok());
                Outcome::Accepted
            }
            Err(_) => Outcome::Refused,
        },
        WIRE => {
            let Ok(wire) = v1::IssueDeviceCertificateRequest::decode(rest) else {
                return Outcome::Refused;
            };
            // The same mapping as the CA service's edge conversion.
            let subject_key = match wire.subject_key {
                Some(WireSubjectKey::PossessedKey(p)) => match p.proof {
                    Some(proof) => SubjectKey::Possessed {
                        public_key: p.public_key,
                        proof,
                    },
                    None => return Outcome::Refused,
                },
                Some(WireSubjectKey::CsrDer(der)) => SubjectKey::Csr(der),
                None => return Outcome::Refused,
            };
            let request = DeviceCertificateRequest {
                product_serial: wire.product_serial,
                rot_id: wire.rot_id,
                subject_key,
            };
            Outcome::from_bool(request.verify().is_ok())
        }
        mode => {
            let signer = if mode == SIGNED_PROOF {
                key(KeyName::Device)
            } else {
                key(KeyName::Forger)
            };
            let proof = sign_body::<v1::ProofOfPossession>(signer, rest);
            // The request names what the proof names, so the names match
            // whenever the body decodes.
            let named: v1::ProofOfPossession =
                statement::decode_unverified(&proof).unwrap_or_default();
            let request = DeviceCertificateRequest {
                product_serial: named.serial,
                rot_id: named.rot_id,
                subject_key: SubjectKey::Possessed {
                    public_key: spki(KeyName::Device).to_vec(),
                    proof,
                },
            };
            let Ok(verified) = request.verify() else {
                return Outcome::Refused;
            };
            assert_eq!(
                mode, SIGNED_PROOF,
                "a proof signed by another key was accepted"
            );
            assert_eq!(
                statement::p256_spki(verified.public_key()),
                spki(KeyName::Device)
            );
            assert_eq!(verified.product_serial(), request.product_serial);
            Outcome::Accepted
        }
    }
}
