//! The ownership service's one error enum, and its one mapping onto
//! `tonic::Status`.
//!
//! Every refusal carries a precise gRPC code, a lowercase message and a
//! stable machine-readable reason in the `trustline-refusal` response
//! metadata ([`trustline_proto::refusal`]). The codes follow one rule:
//!
//! - `PERMISSION_DENIED`: the caller does not hold the device's current
//!   owner key, or names a first owner the order's commitment does not
//!   open;
//! - `FAILED_PRECONDITION`: the device, challenge or voucher is not in a
//!   state that allows the step (a spent or expired challenge, a stale
//!   voucher, the wrong lifecycle step, a missing reset proof, a scrapped,
//!   retired or quarantined device, a cross-site clone, a device that is
//!   not the certified one, a device whose FDO header was never bound);
//! - `ALREADY_EXISTS`: a transfer for this voucher entry is already recorded
//!   (a fork, or a first transfer to another owner), a quarantine is
//!   already lifted, or an FDO voucher's GUID belongs to another device;
//! - `RESOURCE_EXHAUSTED`: the caller (or its site) holds its whole budget
//!   of outstanding challenges; other callers are unaffected;
//! - `DATA_LOSS`: the sealed copy of a recorded voucher entry does not open
//!   or does not match the recorded entry; nothing is re-signed;
//! - `NOT_FOUND`: no such device;
//! - `INVALID_ARGUMENT`: malformed input, a signature that does not
//!   verify, or an FDO header or HMAC that is not the recorded one;
//! - `ABORTED`: another request changed the device's recorded ownership
//!   state first; retry with a fresh challenge;
//! - `UNAVAILABLE` / `INTERNAL`: the CA or the ledger could not be reached or
//!   failed; nothing was released.

use tonic::{Code, Status};

/// Why an ownership request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signed statement (owner authorization, device proof, voucher
    /// entry) does not verify against the key it must be signed by.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The request is malformed: a missing field, a wrong length, a
    /// voucher that does not decode, a statement that names another device.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No certified device has this `rot_id`.
    #[error("no certified device {0}")]
    UnknownDevice(String),
    /// The device was scrapped; no further custody step is possible
    /// (2.4.14.14).
    #[error("device {0} was scrapped")]
    Scrapped(String),
    /// An ownership step answers a challenge that was never issued, has
    /// expired, was issued for another device or step, or was already used
    /// (a replay). Challenges are single-use; nothing but the refusal is
    /// recorded.
    #[error("challenge is unknown, expired, issued for another device or step, or already used")]
    ChallengeRefused,
    /// The caller does not hold the device's current owner key: a voucher
    /// entry or an owner authorization is signed by someone other than the
    /// owner before it (2.4.14.7). Nothing is recorded but the refusal.
    #[error("not the current owner: {0}")]
    NotOwner(String),
    /// The voucher does not match the transfers the ledger recorded for the
    /// device: cut back to an earlier owner, or carrying transfers that were
    /// not registered.
    #[error("voucher does not match the recorded transfers: {0}")]
    VoucherStale(String),
    /// A transfer with this index is already recorded for the device (a
    /// competing extension, i.e. a fork, or a repeated first transfer).
    #[error("transfer {index} of device {rot_id} is already recorded (ledger entry {holder_seq})")]
    TransferRecorded {
        /// The device.
        rot_id: String,
        /// The voucher entry index.
        index: usize,
        /// The entry holding it.
        holder_seq: u64,
    },
    /// The device's recorded lifecycle does not allow this step (2.4.16.4):
    /// e.g. a transfer of a device still in service (no user reset), an
    /// onboarding of a decommissioned device.
    #[error("device {rot_id} is {state}: {why}")]
    Lifecycle {
        /// The device.
        rot_id: String,
        /// Its recorded state.
        state: &'static str,
        /// What the caller must do instead.
        why: &'static str,
    },
    /// The device was retired and its certificate revoked (2.4.14.24): no
    /// further transfer, onboarding or lifecycle step.
    #[error("device {0} is retired; its certificate is revoked")]
    Retired(String),
    /// Another die presented this device's identity at the factory (a
    /// `DUPLICATE_REJECTED` entry names it): which of the two is genuine is
    /// in doubt, so the device is not put in service (2.4.14.18).
    #[error(
        "device {rot_id} is quarantined: a second die presented its identity (ledger entry {seq})"
    )]
    Duplicated {
        /// The device.
        rot_id: String,
        /// The `DUPLICATE_REJECTED` entry.
        seq: u64,
    },
    /// The device's serial, rot_id or device key was certified at more than
    /// one site (a cross-site clone, found by the hub's registry; issue 13
    /// item 3): which site made the genuine device is in doubt, so it is
    /// not put in service (2.4.14.18, 2.4.14.22).
    #[error("device {rot_id} is a cross-site clone: {holders}")]
    CrossSiteClone {
        /// The device.
        rot_id: String,
        /// The sites and entries holding its identities, in words.
        holders: String,
    },
    /// The device did not prove the identity certified for it: another
    /// certificate, a chain that does not lead to the OEM root, or a proof
    /// not signed by the certified key (a clone or an impostor, 2.4.14.18).
    #[error("device is not the certified device: {0}")]
    NotAuthentic(String),
    /// The step needs the device's signed proof of a user reset (2.4.16.7)
    /// and none, or no valid one, was given.
    #[error("a valid user-reset proof from the device is required: {0}")]
    ResetRequired(String),
    /// Another request changed the device's recorded state between this
    /// request's checks and its append; nothing was recorded for it.
    #[error("device {0} changed while the request was checked; retry with a fresh challenge")]
    Concurrent(String),
    /// Too many challenges are outstanding; try again later. Nothing was
    /// recorded.
    #[error("too many outstanding challenges")]
    Busy,
    /// The caller (or, for a site-bound caller, its site) already holds its
    /// budget of outstanding challenges (issue 12 item 4): its own refusal,
    /// which leaves every other caller's budget alone. Nothing is recorded.
    #[error(
        "{holder} holds {limit} outstanding challenges, its budget: use or let some expire first"
    )]
    OverBudget {
        /// "this caller" or "this caller's site".
        holder: &'static str,
        /// The budget.
        limit: usize,
    },
    /// The device's order commits to a first owner and the key (with the
    /// salt) given does not open that commitment (issue 12 item 1): nothing
    /// was signed.
    #[error("the first owner named is not the one the order commits to: {0}")]
    FirstOwnerMismatch(String),
    /// The sealed copy of a recorded voucher entry does not open, or opens
    /// to an entry that is not the recorded one (issue 12 item 10). The
    /// record cannot be replayed, and nothing is signed in its place.
    #[error("the recorded voucher entry {index} of device {rot_id} cannot be recovered (ledger entry {seq}): {reason}")]
    SealBroken {
        /// The device.
        rot_id: String,
        /// The voucher entry index.
        index: usize,
        /// The entry holding the seal.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// `LiftQuarantine` named an entry that is not a `DUPLICATE_REJECTED`
    /// naming this device: there is no such quarantine to lift.
    #[error("ledger entry {seq} is not a duplicate rejection of device {rot_id}")]
    NotQuarantined {
        /// The device.
        rot_id: String,
        /// The entry named.
        seq: u64,
    },
    /// The quarantine of this `DUPLICATE_REJECTED` entry is already lifted.
    #[error("the quarantine of ledger entry {seq} is already lifted (ledger entry {lifted_seq})")]
    QuarantineLifted {
        /// The `DUPLICATE_REJECTED` entry.
        seq: u64,
        /// The `QUARANTINE_LIFTED` entry.
        lifted_seq: u64,
    },
    /// An FDO voucher's header or HMAC is not the one the factory recorded
    /// for the device (issue 17): `CERTIFIED.fdo_header_sha256` and the
    /// `FDO_HEADER_BOUND` header and HMAC. A header rewritten (another
    /// rendezvous server, device info) or another HMAC is refused even
    /// though only the device could check the HMAC itself.
    #[error("fdo voucher header: {0}")]
    FdoHeader(String),
    /// An FDO voucher names a device for which the factory recorded no FDO
    /// header, or whose header HMAC was never bound (no `FDO_HEADER_BOUND`).
    #[error("device {0} has no recorded fdo header and hmac")]
    FdoUnbound(String),
    /// An FDO voucher's GUID is registered to another device than the one
    /// its certificate chain names (issue 17: one GUID, one device).
    #[error("fdo guid {guid} is registered to another device (ledger entry {seq})")]
    FdoGuidReused {
        /// The GUID, hex.
        guid: String,
        /// The `CERTIFIED` entry holding the GUID.
        seq: u64,
    },
    /// The CA or the ledger refused or failed; nothing was released.
    #[error("{service} failed: {status}")]
    Backend {
        /// "ca" or "ledger".
        service: &'static str,
        /// Its status.
        status: Box<Status>,
    },
    /// A stored ledger entry does not decode as what its kind promises.
    #[error("corrupt ledger entry {seq}: {reason}")]
    CorruptEntry {
        /// The entry.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A configuration or start-up problem.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The stable reason reported in `trustline-refusal` metadata.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadSignature(_) => "bad-signature",
            Error::Invalid(_) => "invalid",
            Error::UnknownDevice(_) => "unknown-device",
            Error::Scrapped(_) => "scrapped",
            Error::ChallengeRefused => "challenge",
            Error::NotOwner(_) => "not-owner",
            Error::VoucherStale(_) => "voucher-stale",
            Error::TransferRecorded { .. } => "transfer-recorded",
            Error::Lifecycle { .. } => "lifecycle",
            Error::Retired(_) => "retired",
            Error::Duplicated { .. } => "duplicated",
            Error::CrossSiteClone { .. } => "cross-site-clone",
            Error::NotAuthentic(_) => "not-authentic",
            Error::ResetRequired(_) => "reset-required",
            Error::Concurrent(_) => "concurrent",
            Error::Busy | Error::OverBudget { .. } => "busy",
            Error::FirstOwnerMismatch(_) => "first-owner",
            Error::SealBroken { .. } => "sealed-entry",
            Error::NotQuarantined { .. } => "not-quarantined",
            Error::QuarantineLifted { .. } => "quarantine-lifted",
            Error::FdoHeader(_) => "fdo-header",
            Error::FdoUnbound(_) => "fdo-unbound",
            Error::FdoGuidReused { .. } => "fdo-guid",
            Error::Backend { .. } => "backend",
            Error::CorruptEntry { .. } => "corrupt-entry",
            Error::Config(_) => "config",
        }
    }

    /// The gRPC code for this error (see the module doc for the rule).
    pub fn code(&self) -> Code {
        match self {
            Error::NotOwner(_) | Error::FirstOwnerMismatch(_) => Code::PermissionDenied,
            Error::Scrapped(_)
            | Error::ChallengeRefused
            | Error::VoucherStale(_)
            | Error::Lifecycle { .. }
            | Error::Retired(_)
            | Error::Duplicated { .. }
            | Error::CrossSiteClone { .. }
            | Error::NotAuthentic(_)
            | Error::ResetRequired(_)
            | Error::NotQuarantined { .. }
            | Error::FdoUnbound(_) => Code::FailedPrecondition,
            Error::TransferRecorded { .. }
            | Error::QuarantineLifted { .. }
            | Error::FdoGuidReused { .. } => Code::AlreadyExists,
            Error::OverBudget { .. } => Code::ResourceExhausted,
            Error::SealBroken { .. } => Code::DataLoss,
            Error::Concurrent(_) => Code::Aborted,
            Error::UnknownDevice(_) => Code::NotFound,
            Error::BadSignature(_) | Error::Invalid(_) | Error::FdoHeader(_) => {
                Code::InvalidArgument
            }
            Error::Busy => Code::Unavailable,
            Error::Backend { status, .. } => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Code::Unavailable,
                _ => Code::Internal,
            },
            Error::CorruptEntry { .. } | Error::Config(_) => Code::Internal,
        }
    }

    /// Whether this is a refusal of the request (recorded as
    /// `REQUEST_REJECTED` when it names a device and the request proved a
    /// relation to it, see [`crate::records`]), as opposed to a failure of
    /// the service or of its stored data, or a capacity answer.
    pub fn is_expected_refusal(&self) -> bool {
        !matches!(
            self,
            Error::Backend { .. }
                | Error::CorruptEntry { .. }
                | Error::Config(_)
                | Error::Busy
                | Error::OverBudget { .. }
                | Error::SealBroken { .. }
        )
    }

    pub(crate) fn ledger(status: Status) -> Self {
        Error::Backend {
            service: "ledger",
            status: Box::new(status),
        }
    }

    pub(crate) fn ca(status: Status) -> Self {
        Error::Backend {
            service: "ca",
            status: Box::new(status),
        }
    }
}

impl From<trustline_proto::Error> for Error {
    fn from(e: trustline_proto::Error) -> Self {
        use trustline_proto::Error as P;
        match e {
            P::BadSignature(what) => Error::BadSignature(what.to_string()),
            other => Error::Invalid(other.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        trustline_proto::refusal::status(e.code(), e.to_string(), e.reason())
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
