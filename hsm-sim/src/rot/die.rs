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
//!
//! This module holds what a die is made of and what it says about itself;
//! each group of steps has its own submodule: [`claim`] (claim slot,
//! firmware, readout lock), [`personalise`] (identity key and its
//! attestation), [`certification`] (proofs, CSR, stored chain and voucher),
//! [`fdo`] (the FIDO Device Onboard header HMAC with the device secret made
//! at personalisation), [`field`] (user data, resets, lifecycle) and
//! [`adversary`] (fleet-only misbehaviour).

mod adversary;
mod certification;
mod claim;
mod fdo;
mod field;
mod personalise;

pub use fdo::MAX_FDO_HEADER_LEN;

use p256::ecdsa::SigningKey;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use trustline_proto::identity::rot_id;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::statement::{p256_spki, sign};
use trustline_proto::v1;
use zeroize::Zeroizing;

use super::lifecycle::Lifecycle;
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

/// The keys of a die built from fixed values rather than by a vendor: for the
/// device protocol's test vectors (`docs/device-protocol.md`), where every
/// byte a die signs must be reproducible. Signatures are RFC 6979
/// deterministic, so equal inputs give equal outputs.
pub struct FixedDie {
    /// The vendor name the die reports.
    pub vendor: String,
    /// The chip serial.
    pub chip_serial: String,
    /// The attestation key.
    pub attestation_key: SigningKey,
    /// The attestation chain, leaf first (may be empty when only statements
    /// matter; a provisioner would refuse such a die).
    pub chain: Vec<Vec<u8>>,
    /// The transport key HSM-made keys are wrapped to.
    pub transport_key: p256::SecretKey,
    /// The identity key an on-device key generation will "generate".
    pub on_device_identity_key: SigningKey,
    /// The firmware digest the die reports.
    pub firmware_sha256: [u8; 32],
    /// The FDO device secret (`DCHmacSecret`) personalisation will
    /// "generate".
    pub fdo_hmac_secret: [u8; 32],
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
    /// The receipt signed at the claim, kept for `StatusResponse`.
    claim_receipt: Option<v1::SignedStatement>,
    /// The key attestation signed at personalisation, kept likewise.
    key_attestation: Option<v1::SignedStatement>,
    /// A fixed key for the next on-device generation ([`FixedDie`]).
    next_identity_key: Option<SigningKey>,
    /// The FDO device secret (`DCHmacSecret`), made at personalisation;
    /// never leaves the die.
    fdo_hmac_secret: Option<Zeroizing<[u8; 32]>>,
    /// A fixed FDO secret for the next personalisation ([`FixedDie`]).
    next_fdo_hmac_secret: Option<Zeroizing<[u8; 32]>>,
    /// SHA-256 of the one FDO header the die has HMACed.
    fdo_header_sha256: Option<[u8; 32]>,
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
            claim_receipt: None,
            key_attestation: None,
            next_identity_key: None,
            fdo_hmac_secret: None,
            next_fdo_hmac_secret: None,
            fdo_header_sha256: None,
        })
    }

    /// A blank die from fixed keys (see [`FixedDie`]).
    ///
    /// # Errors
    /// [`Error::Proto`] if the transport-key statement cannot be signed.
    pub fn from_fixed(die: FixedDie) -> Result<Self, Error> {
        let attestation = SoftwareSigner::from_key(die.attestation_key);
        let certified_spki = attestation.public_key_der().to_vec();
        let mut rot = Self::assemble(DieParts {
            vendor: die.vendor,
            chip_serial: die.chip_serial,
            attestation,
            certified_spki,
            chain: die.chain,
            transport_key: die.transport_key,
            rng: StdRng::seed_from_u64(0),
        })?;
        rot.firmware_sha256 = die.firmware_sha256;
        rot.next_identity_key = Some(die.on_device_identity_key);
        rot.next_fdo_hmac_secret = Some(Zeroizing::new(die.fdo_hmac_secret));
        Ok(rot)
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

    /// The receipt this die signed when it was claimed (the same bytes; a
    /// replaying die has none).
    pub fn claim_receipt(&self) -> Option<&v1::SignedStatement> {
        self.claim_receipt.as_ref()
    }

    /// The identity key, or [`Error::NotPersonalised`].
    fn identity(&self) -> Result<&SoftwareSigner, Error> {
        self.identity
            .as_ref()
            .map(|i| &i.signer)
            .ok_or(Error::NotPersonalised)
    }

    /// The key attestation this die signed at personalisation.
    pub fn key_attestation(&self) -> Option<&v1::SignedStatement> {
        self.key_attestation.as_ref()
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
