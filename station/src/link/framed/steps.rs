//! The typed steps of [`FramedLink`]: each `DeviceLink` method as its
//! request, sent with the link's retries, and its answer unpacked (a
//! readout lock that reads back unlocked is the device's refusal; a KDF the
//! device did not announce is refused before the request).

use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::device::v1::{self as dv1};
use trustline_proto::v1;

use super::{after_tries, missing, retryable, wrong_answer, FramedLink};
use crate::error::{Error, LinkFault, Result};
use crate::link::{DeviceLink, WrappedKey};

impl DeviceLink for FramedLink {
    async fn open(&mut self) -> Result<()> {
        let mut tries = 0;
        let mut first = None;
        loop {
            match self.ensure_session().await {
                Ok(()) => return Ok(()),
                Err(e) if tries < self.options.retries && retryable(&e, 2) => {
                    tries += 1;
                    first.get_or_insert(e);
                    let deadline = self.deadline();
                    self.port.reset(deadline).await;
                }
                Err(e) => {
                    self.port.abandon().await;
                    return Err(after_tries(first, e, tries));
                }
            }
        }
    }

    async fn status(&mut self) -> Result<dv1::StatusResponse> {
        match self.call(Step::Status(dv1::StatusRequest {})).await? {
            Answer::Status(s) => Ok(s),
            _ => Err(wrong_answer("status")),
        }
    }

    async fn read_attestation(&mut self) -> Result<v1::RotAttestation> {
        match self
            .call(Step::ReadAttestation(dv1::ReadAttestationRequest {}))
            .await?
        {
            Answer::ReadAttestation(r) => r.attestation.ok_or_else(|| missing("attestation")),
            _ => Err(wrong_answer("read_attestation")),
        }
    }

    async fn claim(&mut self, nonce: &[u8], anchor: &[u8]) -> Result<v1::SignedStatement> {
        let step = Step::Claim(dv1::ClaimRequest {
            nonce: nonce.to_vec(),
            anchor: anchor.to_vec(),
        });
        match self.call(step).await? {
            Answer::Claim(c) => c.receipt.ok_or_else(|| missing("claim receipt")),
            _ => Err(wrong_answer("claim")),
        }
    }

    async fn lock_readout(&mut self) -> Result<()> {
        match self
            .call(Step::LockReadout(dv1::LockReadoutRequest {}))
            .await?
        {
            Answer::LockReadout(r) if r.readout_locked => Ok(()),
            // 2.4.14.16: a device whose lock does not take is not
            // personalised (the provisioner would refuse its attestation).
            Answer::LockReadout(_) => Err(Error::DeviceRefused {
                code: "readout-unlocked".into(),
                reason: "the readout lock reads back unlocked".into(),
            }),
            _ => Err(wrong_answer("lock_readout")),
        }
    }

    async fn generate_key(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement> {
        let step = Step::GenerateKey(dv1::GenerateKeyRequest {
            challenge: challenge.to_vec(),
        });
        match self.call(step).await? {
            Answer::GenerateKey(k) => k.key_attestation.ok_or_else(|| missing("key attestation")),
            _ => Err(wrong_answer("generate_key")),
        }
    }

    async fn install_wrapped_key(
        &mut self,
        key: &WrappedKey,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        // Checked against the session's `hello` when one is open (the run
        // opens it first); else the device itself refuses an unknown KDF.
        if let Some(session) = &self.session {
            if !session.kdfs.contains(&key.kdf) {
                return Err(Error::link(
                    LinkFault::Protocol,
                    format!("the device does not announce the kdf {:?}", key.kdf),
                ));
            }
        }
        let step = Step::InstallWrappedKey(dv1::InstallWrappedKeyRequest {
            device_public_key: key.device_public_key.clone(),
            hsm_ephemeral_public_key: key.hsm_ephemeral_public_key.clone(),
            wrapped_key: key.wrapped_key.clone(),
            kdf: key.kdf.clone(),
            challenge: challenge.to_vec(),
        });
        match self.call(step).await? {
            Answer::InstallWrappedKey(k) => {
                k.key_attestation.ok_or_else(|| missing("key attestation"))
            }
            _ => Err(wrong_answer("install_wrapped_key")),
        }
    }

    async fn prove_possession(
        &mut self,
        serial: &str,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        let step = Step::ProvePossession(dv1::ProvePossessionRequest {
            serial: serial.to_owned(),
            challenge: challenge.to_vec(),
        });
        match self.call(step).await? {
            Answer::ProvePossession(p) => p.proof.ok_or_else(|| missing("proof")),
            _ => Err(wrong_answer("prove_possession")),
        }
    }

    async fn store_certification(&mut self, chain: &[Vec<u8>], voucher: &[u8]) -> Result<Vec<u8>> {
        let step = Step::StoreCertification(dv1::StoreCertificationRequest {
            certificate_chain: chain.to_vec(),
            voucher: voucher.to_vec(),
        });
        match self.call(step).await? {
            Answer::StoreCertification(s) => Ok(s.voucher),
            _ => Err(wrong_answer("store_certification")),
        }
    }

    async fn fdo_header_hmac(&mut self, ov_header: &[u8]) -> Result<Option<[u8; 32]>> {
        self.ensure_session().await?;
        if !self.announces(17) {
            return Ok(None);
        }
        let step = Step::FdoHeaderHmac(dv1::FdoHeaderHmacRequest {
            ov_header: ov_header.to_vec(),
        });
        match self.call(step).await? {
            Answer::FdoHeaderHmac(a) => a
                .hmac_sha256
                .as_slice()
                .try_into()
                .map(Some)
                .map_err(|_| wrong_answer("fdo_header_hmac")),
            _ => Err(wrong_answer("fdo_header_hmac")),
        }
    }

    async fn finish(&mut self) -> Result<()> {
        self.session = None;
        let deadline = self.deadline();
        let result = self.port.finish(deadline).await;
        if result.is_err() {
            self.port.abandon().await;
        }
        result
    }
}
