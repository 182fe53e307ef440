//! The factory's first touch: the one-time claim slot (2.4.14.17), the
//! firmware measurement and the readout lock (2.4.14.16).

use sha2::{Digest, Sha256};
use trustline_proto::statement::sign;
use trustline_proto::v1;

use super::{check_challenge, SimulatedRot, MAX_ANCHOR_LEN};
use crate::rot::lifecycle::Step;
use crate::Error;

impl SimulatedRot {
    /// Installs the OEM trust anchor in the one-time claim slot and signs a
    /// receipt over (rot_id, nonce, SHA-256 of the anchor) with the
    /// attestation key (2.4.14.17).
    ///
    /// # Errors
    /// [`Error::AlreadyClaimed`] for any second claim, even with the same
    /// anchor; [`Error::InvalidInput`] for an empty or oversized nonce or
    /// anchor.
    pub fn claim(&mut self, nonce: &[u8], anchor: &[u8]) -> Result<v1::SignedStatement, Error> {
        check_challenge(nonce)?;
        if anchor.is_empty() || anchor.len() > MAX_ANCHOR_LEN {
            return Err(Error::InvalidInput(format!(
                "trust anchor must be 1 to {MAX_ANCHOR_LEN} bytes"
            )));
        }
        if let Some(replayed) = &self.replayed_receipt {
            // Adversarial firmware: answers with a recorded receipt and
            // installs nothing.
            return Ok(replayed.clone());
        }
        if self.anchor.is_some() {
            return Err(Error::AlreadyClaimed);
        }
        let next = self.lifecycle.after(Step::Claim)?;
        let receipt = sign(
            &self.attestation,
            &v1::ClaimReceipt {
                rot_id: self.rot_id.clone(),
                nonce: nonce.to_vec(),
                anchor_sha256: Sha256::digest(anchor).to_vec(),
            },
        )?;
        self.anchor = Some(anchor.to_vec());
        self.lifecycle = next;
        self.claim_receipt = Some(receipt.clone());
        Ok(receipt)
    }

    /// The installed trust anchor, once claimed.
    pub fn anchor(&self) -> Option<&[u8]> {
        self.anchor.as_deref()
    }

    /// Records the digest of the firmware image the RoT measured (as
    /// programming a new image would).
    pub fn set_firmware(&mut self, firmware_sha256: [u8; 32]) {
        self.firmware_sha256 = firmware_sha256;
    }

    /// The measured firmware digest.
    pub fn firmware_sha256(&self) -> [u8; 32] {
        self.firmware_sha256
    }

    /// Locks the debug and readout interfaces (one-way; 2.4.14.16). On a die
    /// whose lock fuse does not take (an adversarial fleet member) the flag
    /// stays clear, and its key attestations say so.
    pub fn lock_readout(&mut self) {
        if self.readout_lock_effective {
            self.readout_locked = true;
        }
    }

    /// Whether readout is locked.
    pub fn readout_locked(&self) -> bool {
        self.readout_locked
    }
}
