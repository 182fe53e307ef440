//! Personalisation: the identity key made on the device or delivered
//! wrapped by the HSM, and the key attestation that vouches for it (2.4.9.4,
//! 2.4.9.9, 2.4.14.19).

use p256::ecdsa::SigningKey;
use rand::RngCore;
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::statement::sign;
use trustline_proto::v1;
use zeroize::Zeroizing;

use super::{check_challenge, Identity, SimulatedRot};
use crate::rot::lifecycle::Step;
use crate::Error;

impl SimulatedRot {
    /// Generates the identity key on the device and attests it with the
    /// attestation key (on-device personalisation). Returns the key's SPKI
    /// and the signed `KeyAttestation`.
    ///
    /// # Errors
    /// [`Error::NotClaimed`] before a claim, [`Error::AlreadyPersonalised`]
    /// when a key exists, [`Error::InvalidInput`] for a bad challenge.
    pub fn generate_identity_key(
        &mut self,
        challenge: &[u8],
    ) -> Result<(Vec<u8>, v1::SignedStatement), Error> {
        self.ready_to_personalise(challenge)?;
        let key = match self.next_identity_key.take() {
            Some(fixed) => fixed,
            None => SigningKey::random(&mut self.rng),
        };
        let signer = SoftwareSigner::from_key(key);
        let spki = signer.public_key_der().to_vec();
        let attestation = self.personalise(signer, v1::PersonalisationMode::OnDevice, challenge)?;
        Ok((spki, attestation))
    }

    /// Installs an identity key the HSM made and wrapped to this RoT's
    /// transport key (HSM personalisation). The RoT refuses a key that does
    /// not unwrap to `device_public_key`, then attests it.
    ///
    /// # Errors
    /// [`Error::NotClaimed`], [`Error::AlreadyPersonalised`],
    /// [`Error::InvalidInput`]; [`Error::KeyDelivery`] (or the unwrap's own
    /// error) when the blob does not unwrap; [`Error::KeyMismatch`] when it
    /// unwraps to another key.
    pub fn install_wrapped_key(
        &mut self,
        device_public_key: &[u8],
        hsm_ephemeral_public_key: &[u8],
        wrapped: &[u8],
        kdf: &str,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement, Error> {
        self.ready_to_personalise(challenge)?;
        let secret = crate::key_delivery::unwrap_device_key(
            &self.transport_key,
            hsm_ephemeral_public_key,
            wrapped,
            kdf,
        )?;
        let signer = SoftwareSigner::from_key(SigningKey::from(&secret));
        if signer.public_key_der() != device_public_key {
            return Err(Error::KeyMismatch);
        }
        self.personalise(signer, v1::PersonalisationMode::Hsm, challenge)
    }

    fn ready_to_personalise(&self, challenge: &[u8]) -> Result<(), Error> {
        check_challenge(challenge)?;
        if self.anchor.is_none() {
            return Err(Error::NotClaimed);
        }
        if self.identity.is_some() {
            return Err(Error::AlreadyPersonalised);
        }
        Ok(())
    }

    fn personalise(
        &mut self,
        signer: SoftwareSigner,
        mode: v1::PersonalisationMode,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement, Error> {
        let next = self.lifecycle.after(Step::Personalise)?;
        let statement = v1::KeyAttestation {
            rot_id: self.rot_id.clone(),
            device_public_key: signer.public_key_der().to_vec(),
            challenge: challenge.to_vec(),
            firmware_sha256: self.firmware_sha256.to_vec(),
            readout_locked: self.readout_locked,
            anchor_sha256: self
                .anchor
                .as_deref()
                .map(|a| Sha256::digest(a).to_vec())
                .unwrap_or_default(),
            mode: mode as i32,
        };
        let signed = sign(&self.attestation, &statement)?;
        // The FDO device secret is made with the identity, from the die's
        // own entropy, and never leaves it.
        let fdo_secret = self.next_fdo_hmac_secret.take().unwrap_or_else(|| {
            let mut secret = Zeroizing::new([0u8; 32]);
            self.rng.fill_bytes(secret.as_mut());
            secret
        });
        self.fdo_hmac_secret = Some(fdo_secret);
        self.identity = Some(Identity { signer, mode });
        self.lifecycle = next;
        self.key_attestation = Some(signed.clone());
        Ok(signed)
    }

    /// SPKI DER of the identity key, once personalised.
    pub fn identity_public_key(&self) -> Option<&[u8]> {
        self.identity.as_ref().map(|i| i.signer.public_key_der())
    }

    /// How the identity key came to be, once personalised.
    pub fn personalisation_mode(&self) -> Option<v1::PersonalisationMode> {
        self.identity.as_ref().map(|i| i.mode)
    }
}
