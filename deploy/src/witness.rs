//! The hub's witness key in its HSM (Ed25519, `CKM_EDDSA`, label
//! `trustline-witness`) behind `hub::WitnessSigner`: the hub crate knows no
//! HSM, ca-service knows no hub, and this adapter joins them.

use ca_service::HsmEd25519Signer;

/// The HSM witness key as the hub's signer.
#[derive(Debug)]
pub struct HsmWitness(pub HsmEd25519Signer);

impl hub::WitnessSigner for HsmWitness {
    fn public_key(&self) -> [u8; 32] {
        self.0.public_key_bytes()
    }

    fn sign(&self, message: &[u8]) -> hub::Result<[u8; 64]> {
        self.0
            .try_sign(message)
            .map_err(|e| hub::Error::Signer(e.to_string()))
    }
}
