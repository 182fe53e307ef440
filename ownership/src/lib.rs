//! Field life after the factory, and the `Ownership` gRPC service
//! (2.4.14.7, 2.4.14.18, 2.4.14.23/24, 2.4.16): voucher transfers,
//! onboarding, decommissioning, recommissioning and retirement, with the CRL
//! of retired devices.
//!
//! Key design decision: [`Ownership`] keeps no state of its own that
//! matters. Every fact lives in the custody ledger (reached through
//! [`backends::LedgerApi`] plus [`backends::LedgerReads`]), every signature
//! by an HSM key is the CA's (through [`backends::CaApi`] and
//! [`backends::CrlApi`]); concurrency is settled by the ledger's unique keys,
//! not by locks here. What it holds in memory — outstanding challenges, a
//! cache of device records, the current CRL — can be lost at any time. It
//! knows nothing of the factory's policy: it reads the factory's facts
//! (`CERTIFIED`, `SCRAPPED`, `DUPLICATE_REJECTED`) from the ledger through
//! the shared key namespaces of [`backends::keys`].
//!
//! # Owners stay private (invariant 6; 2.4.16.3, 2.4.16.6)
//!
//! The ledger records a transfer as `OWNERSHIP_TRANSFERRED` with
//! [`OwnershipPayload`](trustline_proto::v1::OwnershipPayload): the entry's
//! salted commitment SHA-256(salt ‖ owner key) — the salt is fresh for every
//! transfer and travels only inside the voucher — its index, and the hash of
//! the voucher entry; for entry 0, which the OEM voucher key signs, also the
//! entry sealed with AES-256-GCM under the OEM's HSM seal key (ciphertext
//! only: the key never leaves the HSM, see [`manufacturer`]). Never the
//! owner key in clear, never the voucher, never an owner signature (an
//! ECDSA signature and its message reveal the public key), and
//! the `actor` of every ownership entry is the caller's role only
//! (`operator`, `admin`), never a certificate name. Two transfers' commitments
//! share nothing, so ledger data alone cannot link one owner's transfer to a
//! later owner's, nor one device's owner to another's.
//!
//! # Concurrency
//!
//! Unique keys the ownership service asks the ledger to hold (namespace →
//! value, all in [`backends::keys`]): `device-field` → `rot_id/n` on the
//! *n*-th field event of a device (every transfer and lifecycle step: two
//! requests decided on the same state cannot both be recorded, see
//! [`state`]); `voucher-entry` → `rot_id/i` on the transfer recorded for
//! voucher entry *i* (two competing extensions of one voucher — a fork —
//! cannot both be recorded); and `revocation` → *k* on the *k*-th
//! retirement overall, counted by the quota counter `revocations` (the
//! CRL's source, see [`revocation`]).
//!
//! # Refusals
//!
//! Every check runs before anything is appended, so a refused request leaves
//! nothing behind but, at most, a `REQUEST_REJECTED` entry naming the
//! operation and the reason
//! ([`RejectedPayload`](trustline_proto::v1::RejectedPayload), with no owner
//! data). A refusal goes into a device's chain only when the request proved
//! a relation to that device (issue 12 item 4, see [`records`]): it came
//! from the OEM (the admin's first transfer), or carried a valid signature
//! by the device's recorded current owner, or by the device itself over a
//! challenge this service issued. Any other refusal — malformed, an unknown
//! `rot_id`, a caller with no relation to the device — is answered (and
//! counted toward the caller's lockout by the transport guard) but adds
//! nothing to the device's history, so no caller can fill another's device
//! history with refusals. Capacity refusals (`busy`) and failures of the
//! service are never recorded.
//!
//! # FDO vouchers (issue 17)
//!
//! `RegisterTransfer` also takes an FDO 1.1 voucher extended by FDO tools
//! and records its FDO-only entries as transfers with fresh salted
//! commitments, after the same checks as a Trustline voucher plus the
//! factory's record of the FDO header and HMAC; `TransferFromManufacturer`
//! returns the FDO twin of entry 0 the CA signed ([`fdo`]).
//!
//! # Quarantine
//!
//! A device whose identity another die presented at the factory (a
//! `DUPLICATE_REJECTED` entry names it) is quarantined: neither onboarded
//! nor recommissioned (2.4.14.18). After investigating, the OEM lifts it
//! (`LiftQuarantine`, admin only), recorded as `QUARANTINE_LIFTED` naming
//! the duplicate and the reason, holding `quarantine-lifted` → that seq
//! ([`quarantine`]). A device is accepted once every duplicate naming it is
//! lifted.

#![forbid(unsafe_code)]

pub mod challenges;
pub mod checks;
pub mod error;
pub mod fdo;
mod lifecycle;
pub mod manufacturer;
mod onboard;
pub mod quarantine;
pub mod records;
pub mod revocation;
pub mod service;
pub mod state;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use backends::{keys, now_ms, CaApi, CrlApi, LedgerApi, LedgerReads};
use sha2::{Digest, Sha256};
use trustline_proto::v1;

use challenges::{Action, ChallengeBook, Requester};
use revocation::Revocations;
use state::{DeviceCache, DeviceRecord, FieldState};

pub use challenges::{Budget, CHALLENGE_LEN};
pub use checks::verify_chain;
pub use error::{Error, Result};
pub use manufacturer::FirstTransfer;
pub use quarantine::QuarantineOutcome;

/// What the ownership service is configured with.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// How long a challenge stays valid.
    pub challenge_ttl: Duration,
    /// Most challenges outstanding at once, over all callers (a memory
    /// bound).
    pub max_challenges: usize,
    /// Most challenges one caller (and one site, for site-bound callers)
    /// may have outstanding at once (issue 12 item 4).
    pub challenge_budget: Budget,
    /// Most device records cached in memory.
    pub cache_entries: usize,
    /// Time between a CRL's thisUpdate and nextUpdate; a CRL is re-signed
    /// when half of it has passed.
    pub crl_validity: Duration,
    /// SHA-256 of a fully erased user-data area for the product's devices,
    /// when known: a reset proof must report it (2.4.16.7). `None` accepts
    /// any digest (the device's signature is still required).
    pub erased_user_area_sha256: Option<[u8; 32]>,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        Self {
            challenge_ttl: Duration::from_secs(300),
            max_challenges: 100_000,
            challenge_budget: Budget {
                per_caller: 1_000,
                per_site: 10_000,
            },
            cache_entries: 100_000,
            crl_validity: Duration::from_secs(7 * 24 * 3600),
            erased_user_area_sha256: None,
        }
    }
}

/// The services the ownership service reaches (the site wires them: remote
/// over mTLS, or in-process in `trustline serve all`).
#[derive(Clone)]
pub struct OwnershipBackends {
    /// Appends and lookups (shared with the factory).
    pub ledger: Arc<dyn LedgerApi>,
    /// Proven reads.
    pub reads: Arc<dyn LedgerReads>,
    /// The CA chain and voucher-entry signing (shared with the factory).
    pub ca: Arc<dyn CaApi>,
    /// CRL signing.
    pub crl: Arc<dyn CrlApi>,
    /// The registry across sites, at the hub (issue 13 item 4): a device
    /// whose identity another site certified too is refused for onboarding
    /// and recommissioning. `None` at a site, which knows no other site.
    pub registry: Option<Arc<dyn CloneRegistry>>,
}

/// What the ownership service asks the registry across sites (the hub's;
/// issue 13 items 3 and 4, 2.4.14.18, 2.4.14.22).
pub trait CloneRegistry: Send + Sync + 'static {
    /// When a serial, rot_id or device key of the device `rot_id` was
    /// certified at more than one site (a cross-site clone), the sites and
    /// entries holding it, in words; `None` when it was not.
    fn cross_site_clone(
        &self,
        rot_id: String,
    ) -> futures::future::BoxFuture<'_, std::result::Result<Option<String>, tonic::Status>>;
}

/// The CA chain as the ownership service checks devices against it.
#[derive(Debug, Clone)]
pub struct TrustChain {
    /// DER of the site intermediates devices chain through: the site's own
    /// at a site; every enrolled site's at the hub (issue 13 item 4), a
    /// device's being the one that issued its certificate.
    pub intermediates: Vec<Vec<u8>>,
    /// DER of the OEM root.
    pub root: Vec<u8>,
    /// The OEM voucher key, SubjectPublicKeyInfo DER.
    pub voucher_public_key: Vec<u8>,
}

/// The outcome of a recorded transfer.
#[derive(Debug, Clone)]
pub struct TransferOutcome {
    /// The voucher including the recorded entry, CBOR.
    pub voucher: Vec<u8>,
    /// The entry that recorded the transfer.
    pub ledger_seq: u64,
    /// The salted commitment recorded.
    pub owner_commitment: Vec<u8>,
    /// The transfer was recorded by an earlier request; this answers a
    /// retry with what was recorded then.
    pub replayed: bool,
    /// The FDO 1.1 voucher (CBOR): for the first transfer of a device whose
    /// FDO header is bound, with the OEM-signed FDO twin of entry 0; for a
    /// registered FDO voucher, that voucher ([`fdo`]). Else empty.
    pub fdo_voucher: Vec<u8>,
}

/// The outcome of a recorded lifecycle step.
#[derive(Debug, Clone)]
pub struct LifecycleOutcome {
    /// The device.
    pub rot_id: String,
    /// Its state now.
    pub state: FieldState,
    /// The entry that recorded the step.
    pub ledger_seq: u64,
}

/// A device's state as `GetDeviceState` reports it.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// The device.
    pub rot_id: String,
    /// Its lifecycle.
    pub state: v1::DeviceLifecycle,
    /// Scrapped at the factory.
    pub scrapped: bool,
    /// Its certificate is revoked (retired).
    pub revoked: bool,
    /// Transfers recorded.
    pub transfers: usize,
}

/// An owner-authorised step's request, as the wire gives it (the voucher
/// and the two signed statements stay in their signed form).
#[derive(Debug, Clone, Default)]
pub struct StepRequest {
    /// The voucher, CBOR.
    pub voucher: Vec<u8>,
    /// The `OwnerAuthorization` signed by the voucher's current owner.
    pub owner_authorization: Option<v1::SignedStatement>,
    /// The device's proof: `IdentityProof` for onboarding, `ResetProof`
    /// for the other steps.
    pub device_proof: Option<v1::SignedStatement>,
    /// For onboarding: the device chain (device, intermediate, root).
    pub device_chain: Vec<Vec<u8>>,
}

impl StepRequest {
    /// The device the request names — the voucher header's `rot_id`, else
    /// the owner authorization's — for recording a refusal; no trust
    /// implied.
    fn rot_hint(&self) -> Option<String> {
        transfer::rot_hint(&self.voucher).or_else(|| {
            self.owner_authorization.as_ref().and_then(|a| {
                trustline_proto::statement::decode_unverified::<v1::OwnerAuthorization>(a)
                    .ok()
                    .map(|auth| auth.rot_id)
            })
        })
    }
}

/// The ownership service's policy.
pub struct Ownership {
    config: OwnershipConfig,
    ledger: Arc<dyn LedgerApi>,
    reads: Arc<dyn LedgerReads>,
    ca: Arc<dyn CaApi>,
    registry: Option<Arc<dyn CloneRegistry>>,
    chain: TrustChain,
    challenges: ChallengeBook,
    devices: DeviceCache,
    revocations: Revocations,
}

impl Ownership {
    /// Starts the service: fetches the CA chain and the voucher key.
    ///
    /// # Errors
    /// [`Error::Backend`] when the CA cannot be reached; [`Error::Config`]
    /// for a malformed chain or voucher key.
    pub async fn start(config: OwnershipConfig, backends: OwnershipBackends) -> Result<Self> {
        let chain = backends.ca.get_chain().await.map_err(Error::ca)?;
        let mut intermediates = chain.certificates;
        let root = intermediates
            .pop()
            .filter(|_| !intermediates.is_empty())
            .ok_or_else(|| {
                Error::Config(
                    "the ca chain must hold at least one site intermediate, then the root".into(),
                )
            })?;
        trustline_proto::statement::parse_p256_spki(&chain.voucher_public_key)
            .map_err(|e| Error::Config(format!("oem voucher key: {e}")))?;
        Ok(Self {
            challenges: ChallengeBook::new(
                config.challenge_ttl,
                config.max_challenges,
                config.challenge_budget,
            ),
            devices: DeviceCache::new(config.cache_entries),
            revocations: Revocations::new(backends.crl, config.crl_validity),
            chain: TrustChain {
                intermediates,
                root,
                voucher_public_key: chain.voucher_public_key,
            },
            config,
            ledger: backends.ledger,
            reads: backends.reads,
            ca: backends.ca,
            registry: backends.registry,
        })
    }

    /// The CA chain devices are checked against.
    pub fn trust_chain(&self) -> &TrustChain {
        &self.chain
    }

    /// Issues a single-use challenge for `action` on a certified device to
    /// `caller`, counted against its budget (issue 12 item 4).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed `rot_id` or unknown action;
    /// [`Error::UnknownDevice`]; [`Error::OverBudget`] (this caller's own
    /// refusal); [`Error::Busy`]; [`Error::Backend`].
    pub async fn challenge(
        &self,
        caller: &transport::Caller,
        rot_id: &str,
        action: &str,
    ) -> Result<([u8; CHALLENGE_LEN], i64)> {
        let action = Action::parse(action)?;
        check_rot_id(rot_id)?;
        if self
            .devices
            .load(self.ledger.as_ref(), rot_id)
            .await?
            .is_none()
        {
            return Err(Error::UnknownDevice(rot_id.to_owned()));
        }
        self.challenges
            .issue(&Requester::of(caller), rot_id, action, now_ms())
    }

    /// A device's state as the ledger records it.
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::UnknownDevice`], [`Error::Backend`],
    /// [`Error::CorruptEntry`].
    pub async fn device_status(&self, rot_id: &str) -> Result<DeviceStatus> {
        check_rot_id(rot_id)?;
        if let Some(record) = self.devices.load(self.ledger.as_ref(), rot_id).await? {
            return Ok(DeviceStatus {
                rot_id: rot_id.to_owned(),
                state: record.state.to_proto(),
                scrapped: record.scrapped.is_some(),
                revoked: record.state == FieldState::Retired,
                transfers: record.transfers.len(),
            });
        }
        let claimed = state::lookup(
            self.ledger.as_ref(),
            state::unique(keys::CLAIM, rot_id.as_bytes().to_vec()),
        )
        .await?;
        if claimed.is_none() {
            return Err(Error::UnknownDevice(rot_id.to_owned()));
        }
        let scrapped = state::lookup(
            self.ledger.as_ref(),
            state::unique(keys::SCRAPPED, rot_id.as_bytes().to_vec()),
        )
        .await?;
        Ok(DeviceStatus {
            rot_id: rot_id.to_owned(),
            state: v1::DeviceLifecycle::Claimed,
            scrapped: scrapped.is_some(),
            revoked: false,
            transfers: 0,
        })
    }

    /// The current CRL of retired devices' certificates, DER (re-signed
    /// when a retirement was recorded since, or half its validity passed).
    ///
    /// # Errors
    /// [`Error::Backend`] when the ledger or the CA fails;
    /// [`Error::CorruptEntry`].
    pub async fn revocation_list(&self) -> Result<Vec<u8>> {
        self.revocations.current(self.ledger.as_ref()).await
    }

    /// The device's record; [`Error::UnknownDevice`] (or
    /// [`Error::Scrapped`] for a device scrapped before certification) when
    /// it was never certified.
    async fn record(&self, rot_id: &str) -> Result<DeviceRecord> {
        check_rot_id(rot_id)?;
        if let Some(record) = self.devices.load(self.ledger.as_ref(), rot_id).await? {
            return Ok(record);
        }
        let scrapped = state::lookup(
            self.ledger.as_ref(),
            state::unique(keys::SCRAPPED, rot_id.as_bytes().to_vec()),
        )
        .await?;
        if scrapped.is_some() {
            return Err(Error::Scrapped(rot_id.to_owned()));
        }
        Err(Error::UnknownDevice(rot_id.to_owned()))
    }
}

/// Refuses a malformed `rot_id`.
fn check_rot_id(rot_id: &str) -> Result<()> {
    if !trustline_proto::identity::is_well_formed_rot_id(rot_id) {
        return Err(Error::Invalid(format!(
            "{rot_id:?} is not a rot_id (64 lowercase hex characters)"
        )));
    }
    Ok(())
}

/// SHA-256 as a vector.
fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}
