//! Adversarial behaviour, for fleets only: replayed receipts, a readout lock
//! that does not take, key clones and impostors.

use p256::ecdsa::SigningKey;
use rand::rngs::StdRng;
use trustline_proto::signer::SoftwareSigner;
use trustline_proto::v1;

use super::{DieParts, SimulatedRot};
use crate::Error;

impl SimulatedRot {
    /// Makes this die answer every later claim with `receipt` (a receipt
    /// recorded from an earlier claim) instead of claiming: a replay.
    pub fn replay_claim_receipt(&mut self, receipt: v1::SignedStatement) {
        self.replayed_receipt = Some(receipt);
    }

    /// A die whose readout-lock fuse does not take.
    pub(crate) fn break_readout_lock(&mut self) {
        self.readout_lock_effective = false;
        self.readout_locked = false;
    }

    /// An exact copy of this die's secrets and certificate (same `rot_id`,
    /// valid signatures) in a blank die with its own transport key.
    pub(crate) fn copy_die(
        &self,
        transport_key: p256::SecretKey,
        rng: StdRng,
    ) -> Result<Self, Error> {
        let attestation = SoftwareSigner::from_key(self.attestation.key().clone());
        let mut copy = Self::assemble(DieParts {
            vendor: self.vendor.clone(),
            chip_serial: self.chip_serial.clone(),
            attestation,
            certified_spki: self.certified_spki.clone(),
            chain: self.chain.clone(),
            transport_key,
            rng,
        })?;
        copy.firmware_sha256 = self.firmware_sha256;
        Ok(copy)
    }

    /// This die's certificate chain and claimed identity on a different
    /// key: its signatures do not verify under the certificate.
    pub(crate) fn impersonate(
        &self,
        own_key: SigningKey,
        transport_key: p256::SecretKey,
        rng: StdRng,
    ) -> Result<Self, Error> {
        let mut impostor = Self::assemble(DieParts {
            vendor: self.vendor.clone(),
            chip_serial: self.chip_serial.clone(),
            attestation: SoftwareSigner::from_key(own_key),
            certified_spki: self.certified_spki.clone(),
            chain: self.chain.clone(),
            transport_key,
            rng,
        })?;
        impostor.firmware_sha256 = self.firmware_sha256;
        Ok(impostor)
    }
}
