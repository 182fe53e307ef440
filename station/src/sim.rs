//! The simulated device link (feature `sim`): a [`DeviceLink`] and an
//! [`InspectLink`] over `hsm_sim`'s [`SimulatedRot`], and the simulated IC
//! vendors and fresh dies the demo, the benchmark, `station run --sim` and
//! the tests put in the sockets. Never used by a service.

use hsm_sim::rot::{Fleet, FleetBuilder, SimulatedRot};
use trustline_proto::device::v1 as dv1;
use trustline_proto::v1;

use crate::error::{Error, Result};
use crate::inspect::InspectLink;
use crate::link::{DeviceLink, WrappedKey};

/// The default seed of the simulated IC vendors.
pub const DEFAULT_SIM_SEED: u64 = 0x7275_7374;

/// The simulated vendors for `seed` (the same seed gives the same roots).
///
/// # Errors
/// [`Error::Config`] when the simulator fails.
pub fn sim_vendors(seed: u64) -> Result<Fleet> {
    FleetBuilder::default()
        .seed(seed)
        .build()
        .map_err(|e| Error::Config(format!("building the simulated vendors: {e}")))
}

/// `n` fresh genuine dies of the vendors of `fleet`, in turn, as programmed
/// by the line (firmware measured, readout locked).
///
/// # Errors
/// [`Error::Config`] when the simulator fails.
pub fn fresh_dies(fleet: &mut Fleet, n: usize) -> Result<Vec<SimulatedRot>> {
    let firmware = fleet.firmware_sha256();
    let names: Vec<String> = fleet
        .vendors()
        .iter()
        .map(|v| v.name().to_owned())
        .collect();
    for name in &names {
        if let Some(v) = fleet.vendor_mut(name) {
            v.reseed(rand::random());
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = &names[i % names.len()];
        let vendor = fleet
            .vendor_mut(name)
            .ok_or_else(|| Error::Config(format!("vendor {name} vanished")))?;
        let mut rot = vendor
            .manufacture()
            .map_err(|e| Error::Config(format!("manufacturing a simulated die: {e}")))?;
        rot.set_firmware(firmware);
        rot.lock_readout();
        out.push(rot);
    }
    Ok(out)
}

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

/// A die's refusal, under the code the framed protocol would carry
/// (`device:already-claimed`, ...), so simulated and real devices fail with
/// the same reasons.
fn device(e: hsm_sim::Error) -> Error {
    let code = hsm_sim::device_session::error_code(&e) as i32;
    Error::DeviceRefused {
        code: crate::link::answer::code_name(code),
        reason: e.to_string(),
    }
}

impl DeviceLink for SimLink {
    async fn status(&mut self) -> Result<dv1::StatusResponse> {
        let rot = &self.rot;
        Ok(dv1::StatusResponse {
            rot_id: rot.rot_id().to_owned(),
            lifecycle: rot.lifecycle().to_proto() as i32,
            readout_locked: rot.readout_locked(),
            firmware_sha256: rot.firmware_sha256().to_vec(),
            claim_receipt: rot.claim_receipt().cloned(),
            key_attestation: rot.key_attestation().cloned(),
            reset_counter: rot.reset_counter(),
            certified: !rot.certificate_chain().is_empty(),
        })
    }

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

    async fn fdo_header_hmac(&mut self, ov_header: &[u8]) -> Result<Option<[u8; 32]>> {
        self.rot
            .fdo_header_hmac(ov_header)
            .map(Some)
            .map_err(device)
    }
}

impl InspectLink for SimLink {
    async fn rot_id(&mut self) -> Result<String> {
        Ok(self.rot().rot_id().to_owned())
    }

    async fn certificate_chain(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(self.rot().certificate_chain().to_vec())
    }

    async fn identity_proof(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement> {
        self.rot().identity_proof(challenge).map_err(device)
    }
}
