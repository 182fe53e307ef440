//! The simulated device link: a [`DeviceLink`] over `hsm_sim`'s
//! [`SimulatedRot`], for the demo, the benchmark and tests. Never used by a
//! service.

use hsm_sim::rot::SimulatedRot;
use trustline_proto::v1;

use super::link::{DeviceLink, WrappedKey};
use crate::error::{Error, Result};

/// A simulated die in a station socket.
pub struct SimLink {
    rot: SimulatedRot,
}

impl SimLink {
    /// Puts `rot` in the socket.
    pub fn new(rot: SimulatedRot) -> Self {
        Self { rot }
    }

    /// The die (to inspect it after a run).
    pub fn rot(&self) -> &SimulatedRot {
        &self.rot
    }

    /// Takes the die out of the socket.
    pub fn into_rot(self) -> SimulatedRot {
        self.rot
    }
}

fn device(e: hsm_sim::Error) -> Error {
    Error::Device(e.to_string())
}

impl DeviceLink for SimLink {
    async fn read_attestation(&mut self) -> Result<v1::RotAttestation> {
        Ok(self.rot.attestation())
    }

    async fn claim(&mut self, nonce: &[u8], anchor: &[u8]) -> Result<v1::SignedStatement> {
        self.rot.claim(nonce, anchor).map_err(device)
    }

    async fn lock_readout(&mut self) -> Result<()> {
        self.rot.lock_readout();
        Ok(())
    }

    async fn generate_key(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement> {
        self.rot
            .generate_identity_key(challenge)
            .map(|(_, attestation)| attestation)
            .map_err(device)
    }

    async fn install_wrapped_key(
        &mut self,
        key: &WrappedKey,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        self.rot
            .install_wrapped_key(
                &key.device_public_key,
                &key.hsm_ephemeral_public_key,
                &key.wrapped_key,
                &key.kdf,
                challenge,
            )
            .map_err(device)
    }

    async fn prove_possession(
        &mut self,
        serial: &str,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        self.rot
            .proof_of_possession(serial, challenge)
            .map_err(device)
    }

    async fn store_certification(&mut self, chain: &[Vec<u8>], voucher: &[u8]) -> Result<Vec<u8>> {
        self.rot.store_certification(chain, voucher).map_err(device)
    }
}
