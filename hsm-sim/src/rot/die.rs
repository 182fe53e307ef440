//! One simulated die's root of trust: what a station or an owner can ask of
//! real device silicon, and nothing more.
//!
//! Keys never leave it: the attestation key signs statements about the die
//! (its transport key, its claim, its identity key); the identity key —
//! generated on the device or delivered wrapped by the HSM — signs proofs of
//! possession, CSRs, live identity proofs and reset proofs. The claim slot is
//! one-time (2.4.14.17). The lifecycle only goes forward (2.4.16.4), and
//! every step out of service erases the user-data area and signs a proof of
//! it (2.4.16.7).

use p256::ecdsa::SigningKey;
use rand::rngs::StdRng;
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue};
use sha2::{Digest, Sha256};
use trustline_proto::identity::rot_id;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::statement::{p256_spki, sign};
use trustline_proto::v1;
use trustline_proto::voucher::{cert_chain_hash, Voucher};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keys::RcgenKey;
use super::lifecycle::{Lifecycle, Step};
use crate::Error;

/// Size of the user-data area, in bytes.
pub const USER_AREA_LEN: usize = 4096;
/// The value of an erased user-data byte (erased flash reads as 0xFF).
pub const ERASED_BYTE: u8 = 0xff;
/// Longest challenge or nonce a RoT signs over, in bytes.
pub const MAX_CHALLENGE_LEN: usize = 256;
/// Largest trust anchor the claim slot holds, in bytes.
pub const MAX_ANCHOR_LEN: usize = 16 * 1024;
/// Most certificates the device stores in its chain.
pub const MAX_STORED_CHAIN: usize = 8;

/// SHA-256 of a fully erased user-data area: what a genuine reset proof
/// reports, so a verifier can check the erasure without the device.
pub fn erased_user_area_sha256() -> [u8; 32] {
    Sha256::digest([ERASED_BYTE; USER_AREA_LEN]).into()
}

/// Everything a die is made of at the vendor's fab.
pub(crate) struct DieParts {
    pub(crate) vendor: String,
    pub(crate) chip_serial: String,
    /// The key the die actually signs with.
    pub(crate) attestation: SoftwareSigner,
    /// The attestation key as the chain's leaf certificate names it (the
    /// same key, except for an impostor).
    pub(crate) certified_spki: Vec<u8>,
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) transport_key: p256::SecretKey,
    /// The die's own entropy source (seeded from its maker's).
    pub(crate) rng: StdRng,
}

struct Identity {
    signer: SoftwareSigner,
    mode: v1::PersonalisationMode,
}

/// A simulated device root of trust (one die).
pub struct SimulatedRot {
    vendor: String,
    chip_serial: String,
    rot_id: String,
    attestation: SoftwareSigner,
    certified_spki: Vec<u8>,
    chain: Vec<Vec<u8>>,
    transport_key: p256::SecretKey,
    transport_statement: v1::SignedStatement,
    anchor: Option<Vec<u8>>,
    identity: Option<Identity>,
    firmware_sha256: [u8; 32],
    readout_locked: bool,
    readout_lock_effective: bool,
    replayed_receipt: Option<v1::SignedStatement>,
    certificate_chain: Vec<Vec<u8>>,
    voucher: Option<Vec<u8>>,
    user_area: Vec<u8>,
    reset_counter: u64,
    lifecycle: Lifecycle,
    rng: StdRng,
}

impl SimulatedRot {
    /// Builds a blank die and signs its transport-key statement.
    pub(crate) fn assemble(parts: DieParts) -> Result<Self, Error> {
        let rot_id = rot_id(&parts.certified_spki);
        let transport_statement = sign(
            &parts.attestation,
            &v1::TransportKeyStatement {
                rot_id: rot_id.clone(),
                public_key: p256_spki(&parts.transport_key.public_key()),
            },
        )?;
        Ok(Self {
            vendor: parts.vendor,
            chip_serial: parts.chip_serial,
            rot_id,
            attestation: parts.attestation,
            certified_spki: parts.certified_spki,
            chain: parts.chain,
            transport_key: parts.transport_key,
            transport_statement,
            anchor: None,
            identity: None,
            firmware_sha256: [0; 32],
            readout_locked: false,
            readout_lock_effective: true,
            replayed_receipt: None,
            certificate_chain: Vec::new(),
            voucher: None,
            user_area: vec![ERASED_BYTE; USER_AREA_LEN],
            reset_counter: 0,
            lifecycle: Lifecycle::Blank,
            rng: parts.rng,
        })
    }

    // -----------------------------------------------------------------
    // Identity of the die.
    // -----------------------------------------------------------------

    /// The die's `rot_id`: hex SHA-256 of the attestation key's SPKI as its
    /// certificate names it.
    pub fn rot_id(&self) -> &str {
        &self.rot_id
    }

    /// The name of the vendor that made (or is imitated by) this die.
    pub fn vendor_name(&self) -> &str {
        &self.vendor
    }

    /// The vendor's chip serial in the attestation certificate's subject.
    pub fn chip_serial(&self) -> &str {
        &self.chip_serial
    }

    /// SubjectPublicKeyInfo DER of the attestation key as the die's
    /// certificate names it: what a verifier checks its statements with.
    pub fn attestation_public_key(&self) -> &[u8] {
        &self.certified_spki
    }

    /// The attestation chain, leaf first, without the vendor root.
    pub fn attestation_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// What a blank RoT reports about itself (2.4.8.18, 2.4.14.17): its
    /// chain and its transport key, signed by the attestation key.
    pub fn attestation(&self) -> v1::RotAttestation {
        v1::RotAttestation {
            cert_chain: self.chain.clone(),
            transport_key: Some(self.transport_statement.clone()),
        }
    }

    /// SubjectPublicKeyInfo DER of the transport key HSM-made keys are
    /// wrapped to.
    pub fn transport_public_key(&self) -> Vec<u8> {
        p256_spki(&self.transport_key.public_key())
    }

    /// Where the device is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    // -----------------------------------------------------------------
    // Factory: claim, measurement, personalisation, certification.
    // -----------------------------------------------------------------

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
        let key = SigningKey::random(&mut self.rng);
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
        self.identity = Some(Identity { signer, mode });
        self.lifecycle = next;
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

    fn identity(&self) -> Result<&SoftwareSigner, Error> {
        self.identity
            .as_ref()
            .map(|i| &i.signer)
            .ok_or(Error::NotPersonalised)
    }

    /// Proves possession of the identity key for a certificate request for
    /// `serial` (signed by the identity key).
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn proof_of_possession(
        &self,
        serial: &str,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement, Error> {
        check_challenge(challenge)?;
        check_serial(serial)?;
        let identity = self.identity()?;
        Ok(sign(
            identity,
            &v1::ProofOfPossession {
                rot_id: self.rot_id.clone(),
                serial: serial.to_owned(),
                device_public_key: identity.public_key_der().to_vec(),
                challenge: challenge.to_vec(),
            },
        )?)
    }

    /// A PKCS#10 CSR (DER) for `serial`, signed by the identity key; the
    /// subject carries the serial as X.520 serialNumber.
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`],
    /// [`Error::Certificate`].
    pub fn csr(&self, serial: &str) -> Result<Vec<u8>, Error> {
        check_serial(serial)?;
        let identity = self.identity()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let value = serial
            .try_into()
            .map(DnValue::PrintableString)
            .unwrap_or_else(|_| DnValue::Utf8String(serial.to_owned()));
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), value);
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&RcgenKey::new(identity.key()))
            .map_err(super::vendor::cert_err)?;
        Ok(csr.der().to_vec())
    }

    /// Answers a live challenge with the identity key (onboarding, physical
    /// inspection, 2.4.14.10).
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn identity_proof(&self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        check_challenge(challenge)?;
        Ok(sign(
            self.identity()?,
            &v1::IdentityProof {
                rot_id: self.rot_id.clone(),
                challenge: challenge.to_vec(),
            },
        )?)
    }

    /// Stores the certificate chain (leaf first) and the ownership voucher
    /// returned by `Certify`, and binds the voucher header with the identity
    /// key (as FDO binds it with a device secret). Returns the bound voucher.
    /// The device refuses a chain whose leaf does not certify its identity
    /// key, and a voucher that names another device or chain. Storing the
    /// same certification again (a retry) returns the same voucher.
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::WrongCertification`],
    /// [`Error::InvalidInput`], [`Error::Proto`] (voucher decoding).
    pub fn store_certification(
        &mut self,
        chain: &[Vec<u8>],
        voucher: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let identity = self.identity()?;
        if chain.is_empty() || chain.len() > MAX_STORED_CHAIN {
            return Err(Error::InvalidInput(format!(
                "certificate chain must hold 1 to {MAX_STORED_CHAIN} certificates"
            )));
        }
        let (_, leaf) = X509Certificate::from_der(&chain[0])
            .map_err(|e| Error::WrongCertification(format!("leaf does not parse: {e}")))?;
        if leaf.public_key().raw != identity.public_key_der() {
            return Err(Error::WrongCertification(
                "leaf certificate names another key".to_owned(),
            ));
        }
        let mut voucher = Voucher::decode(voucher)?;
        if voucher.header().rot_id != self.rot_id {
            return Err(Error::WrongCertification(
                "voucher names another device".to_owned(),
            ));
        }
        if voucher.header().cert_chain_sha256 != cert_chain_hash(chain) {
            return Err(Error::WrongCertification(
                "voucher names another certificate chain".to_owned(),
            ));
        }
        match voucher.device_binding() {
            Some(_) => voucher.verify_device_binding(chain, identity.public_key_der())?,
            None => voucher.bind_to_device(identity)?,
        }
        let bound = voucher.encode();
        self.certificate_chain = chain.to_vec();
        self.voucher = Some(bound.clone());
        Ok(bound)
    }

    /// The stored certificate chain (empty before certification).
    pub fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.certificate_chain
    }

    /// The stored (device-bound) voucher.
    pub fn voucher(&self) -> Option<&[u8]> {
        self.voucher.as_deref()
    }

    // -----------------------------------------------------------------
    // Field life: user data, resets, the one-way lifecycle.
    // -----------------------------------------------------------------

    /// Writes `data` into the user-data area at `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the write does not fit the area;
    /// [`Error::IllegalTransition`] on a retired device.
    pub fn write_user_data(&mut self, offset: usize, data: &[u8]) -> Result<(), Error> {
        if self.lifecycle == Lifecycle::Retired {
            return Err(Error::IllegalTransition {
                from: self.lifecycle.name(),
                step: "write user data",
            });
        }
        let end = offset
            .checked_add(data.len())
            .filter(|end| *end <= USER_AREA_LEN)
            .ok_or_else(|| {
                Error::InvalidInput(format!("user-data write past {USER_AREA_LEN} bytes"))
            })?;
        self.user_area[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// The whole user-data area.
    pub fn user_data(&self) -> &[u8] {
        &self.user_area
    }

    /// Resets completed so far (monotonic).
    pub fn reset_counter(&self) -> u64 {
        self.reset_counter
    }

    /// Erases the user-data area and signs a `ResetProof` with the identity
    /// key carrying the SHA-256 of the erased area, the bumped reset counter
    /// and the current state (2.4.16.7).
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn user_reset(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, None)
    }

    /// First onboarding: a personalised device enters service.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] from any other state.
    pub fn enter_service(&mut self) -> Result<(), Error> {
        self.lifecycle = self.lifecycle.after(Step::EnterService)?;
        Ok(())
    }

    /// Takes the device out of service: erases the user data and signs the
    /// reset proof (state decommissioned) over `challenge` (2.4.16.4).
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] unless in service;
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn decommission(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, Some(Step::Decommission))
    }

    /// Returns a decommissioned device to service for a new owner, erasing
    /// the user data again and signing the proof (state in service).
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] unless decommissioned;
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn recommission(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, Some(Step::Recommission))
    }

    /// Retires the device for good, erasing the user data and signing the
    /// proof (state retired, 2.4.14.24). Nothing moves it afterwards.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] when blank, claimed or already retired;
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn retire(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, Some(Step::Retire))
    }

    /// Checks everything first, then erases, steps and signs: a refusal
    /// changes nothing.
    fn reset_and_prove(
        &mut self,
        challenge: &[u8],
        step: Option<Step>,
    ) -> Result<v1::SignedStatement, Error> {
        check_challenge(challenge)?;
        let next = match step {
            Some(step) => self.lifecycle.after(step)?,
            None => self.lifecycle,
        };
        self.identity()?;
        self.user_area.fill(ERASED_BYTE);
        self.reset_counter += 1;
        self.lifecycle = next;
        let proof = v1::ResetProof {
            rot_id: self.rot_id.clone(),
            challenge: challenge.to_vec(),
            reset_counter: self.reset_counter,
            user_area_sha256: Sha256::digest(&self.user_area).to_vec(),
            state: next.to_proto() as i32,
        };
        Ok(sign(self.identity()?, &proof)?)
    }

    // -----------------------------------------------------------------
    // Adversarial behaviour (fleets only).
    // -----------------------------------------------------------------

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

fn check_challenge(challenge: &[u8]) -> Result<(), Error> {
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE_LEN {
        return Err(Error::InvalidInput(format!(
            "challenge must be 1 to {MAX_CHALLENGE_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_serial(serial: &str) -> Result<(), Error> {
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidInput(
            "serial must be 1 to 64 printable ASCII characters".to_owned(),
        ));
    }
    Ok(())
}
