//! The factory's one error enum, and its one mapping onto `tonic::Status`.
//!
//! Every refusal carries a precise gRPC code, a lowercase message and a
//! stable machine-readable reason in the `trustline-refusal` response
//! metadata ([`trustline_proto::refusal`]), so that a station can count
//! refusals by reason without parsing messages. The codes follow one rule:
//!
//! - `PERMISSION_DENIED`: *who* is asking is not allowed (another site's
//!   order, a role that may not do this, a station naming a first owner);
//! - `FAILED_PRECONDITION`: the device, claim or order is not in a state that
//!   allows the step (counterfeit silicon, a claim nonce not issued for this
//!   RoT and caller, or expired, an expired or closed order, firmware not
//!   allowed, readout not locked, a device that left the factory);
//! - `ALREADY_EXISTS`: a second claim, or a serial, RoT or device key that is
//!   already certified (invariant 2); a second claim's status carries a
//!   `ClaimPresenceChallenge` in its details when the presenter may still
//!   prove it holds the die's attestation key;
//! - `RESOURCE_EXHAUSTED`: the order's quota is used up (invariant 4), or
//!   the site's offline allowance beyond what the hub witnessed is
//!   (2.4.14.20);
//! - `NOT_FOUND`: no such order or device;
//! - `INVALID_ARGUMENT`: malformed input, or a statement whose signature does
//!   not verify;
//! - `UNAVAILABLE` / `INTERNAL`: the CA or the ledger could not be reached or
//!   failed; nothing was released.

use tonic::{Code, Status};

/// Why a provisioning request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The RoT's attestation does not chain to a configured IC-vendor root,
    /// or the chain is malformed or self-signed (invariant 7, 2.4.14.18).
    /// Recorded as `COUNTERFEIT_REJECTED`; the device gets no claim.
    #[error("counterfeit silicon: {0}")]
    Counterfeit(String),
    /// The RoT is authentic but its IC vendor is not allowed by the order.
    #[error("ic vendor {vendor:?} is not allowed by order {order_id}")]
    VendorNotAllowed {
        /// The vendor the chain verified against.
        vendor: String,
        /// The order.
        order_id: String,
    },
    /// The claim nonce was not issued by this site for this RoT, order,
    /// caller and attestation (a receipt replayed from elsewhere, another
    /// station's nonce, a forged nonce). Nothing is recorded.
    #[error("claim nonce was not issued for this rot, order and caller")]
    NonceReplayed,
    /// The claim nonce expired before the receipt came back (a final
    /// refusal: the die has signed its one receipt). Nothing is recorded.
    #[error("claim nonce expired")]
    NonceExpired,
    /// The RoT is already claimed. Nothing is recorded for a bare
    /// presentation of its chain; only a receipt over a presence challenge
    /// (or a second first-claim receipt) that verifies under its attestation
    /// key — a proven clone — is recorded, as `DUPLICATE_REJECTED`.
    #[error("rot {rot_id} is already claimed")]
    AlreadyClaimed {
        /// The RoT.
        rot_id: String,
        /// The presence challenge sent in the status details, when the
        /// presenter may still prove it holds the attestation key.
        presence: Option<Box<trustline_proto::v1::ClaimPresenceChallenge>>,
    },
    /// A station named a device's first owner at `Certify`: only the OEM
    /// names (or commits to) a first owner, OEM-side. Nothing is signed or
    /// recorded.
    #[error("a station may not name a device's first owner")]
    FirstOwner,
    /// The receipt or key attestation names a trust anchor other than the
    /// OEM's: the RoT belongs to someone else.
    #[error("the rot reports trust anchor {found}, not the oem anchor")]
    AnchorMismatch {
        /// Hex SHA-256 of the anchor the RoT reported.
        found: String,
    },
    /// No production order with this id was opened.
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// The order's validity window does not include now.
    #[error("order {order_id} is outside its validity window")]
    OrderOutsideWindow {
        /// The order.
        order_id: String,
    },
    /// The order was closed.
    #[error("order {0} is closed")]
    OrderClosed(String),
    /// The order belongs to another site than the calling station's.
    #[error("order {order_id} belongs to site {order_site:?}, not {caller_site:?}")]
    WrongSite {
        /// The order.
        order_id: String,
        /// The order's site.
        order_site: String,
        /// The caller's site.
        caller_site: String,
    },
    /// An order with this id was already opened.
    #[error("order {0} already exists")]
    OrderExists(String),
    /// A signed statement (order, receipt, attestation, proof) does not
    /// verify against the key it must be signed by.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The request is malformed: a missing field, a wrong length, a serial
    /// outside the order's scheme, a statement that names another device.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The device has not been claimed (or not under this order).
    #[error("rot {0} is not claimed under this order")]
    NotClaimed(String),
    /// The key attestation reports firmware other than the order allows
    /// (2.4.14.16).
    #[error("firmware {found} is not the firmware allowed by the order")]
    FirmwareNotAllowed {
        /// Hex SHA-256 of the measured firmware.
        found: String,
    },
    /// The key attestation reports unlocked debug/readout interfaces
    /// (2.4.14.16, 2.4.14.17).
    #[error("device readout interfaces are not locked")]
    ReadoutNotLocked,
    /// The HSM-mode device key was not delivered by this provisioner to this
    /// RoT.
    #[error("device key was not delivered to this rot")]
    KeyNotDelivered,
    /// A serial, RoT or device key is already certified (invariant 2).
    /// Recorded as `DUPLICATE_REJECTED`; nothing is issued.
    #[error("duplicate {namespace}: already held by ledger entry {holder_seq}")]
    Duplicate {
        /// The unique-key namespace: "serial", "rot" or "device-key".
        namespace: String,
        /// The entry holding it.
        holder_seq: u64,
    },
    /// The order's quota is used up (invariant 4): its quantity, or this
    /// site's allocation of an order split across sites (2.4.14.22).
    /// Recorded as `QUOTA_REJECTED`; nothing is issued.
    #[error("order {order_id} has certified its quantity of {limit}")]
    QuotaExhausted {
        /// The order.
        order_id: String,
        /// Its quantity at this site.
        limit: u64,
    },
    /// The site has certified the order's offline allowance beyond what
    /// the OEM hub has witnessed (2.4.14.20; `crate::allowance`): the hub
    /// has not cosigned its recent entries, most likely because it is
    /// unreachable. Recorded as `QUOTA_REJECTED`; nothing is issued.
    /// Certification resumes by itself once the hub cosigns the backlog.
    #[error(
        "hub unreachable, offline allowance spent: order {order_id} may certify {allowance} \
         devices beyond the {witnessed} the hub witnessed (its last cosigned checkpoint covers \
         {cosigned_size} entries); certification resumes once the hub cosigns the backlog"
    )]
    OfflineAllowanceSpent {
        /// The order.
        order_id: String,
        /// Its offline allowance.
        allowance: u64,
        /// The tree size of the last checkpoint the hub cosigned.
        cosigned_size: u64,
        /// Devices of the order that checkpoint covers.
        witnessed: u64,
    },
    /// No certified device has this `rot_id`.
    #[error("no certified device {0}")]
    UnknownDevice(String),
    /// The device was scrapped; no further custody step is possible
    /// (2.4.14.14).
    #[error("device {0} was scrapped")]
    Scrapped(String),
    /// The device has left the factory (a transfer, onboarding or other
    /// field event is recorded): factory custody steps — shipping,
    /// receiving, scrapping — are over for it.
    #[error("device {0} has left the factory: its field life has begun")]
    LeftFactory(String),
    /// `BindFdoHeader` for a device whose order has no FDO block, or whose
    /// `CERTIFIED` entry records no FDO header (issue 17).
    #[error("device {0} has no fdo voucher header: its order has no fdo block")]
    NoFdo(String),
    /// `BindFdoHeader` with another HMAC than the one already recorded for
    /// the device (a device HMACs one header in its life).
    #[error("device {rot_id} has another fdo header hmac recorded (entry {holder_seq})")]
    FdoBound {
        /// The device.
        rot_id: String,
        /// The `FDO_HEADER_BOUND` entry.
        holder_seq: u64,
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
            Error::Counterfeit(_) => "counterfeit",
            Error::VendorNotAllowed { .. } => "vendor-not-allowed",
            Error::NonceReplayed => "nonce-replayed",
            Error::NonceExpired => "nonce-expired",
            Error::AlreadyClaimed { .. } => "already-claimed",
            Error::FirstOwner => "first-owner",
            Error::AnchorMismatch { .. } => "anchor-mismatch",
            Error::UnknownOrder(_) => "unknown-order",
            Error::OrderOutsideWindow { .. } => "order-window",
            Error::OrderClosed(_) => "order-closed",
            Error::WrongSite { .. } => "wrong-site",
            Error::OrderExists(_) => "order-exists",
            Error::BadSignature(_) => "bad-signature",
            Error::Invalid(_) => "invalid",
            Error::NotClaimed(_) => "not-claimed",
            Error::FirmwareNotAllowed { .. } => "firmware",
            Error::ReadoutNotLocked => "readout-unlocked",
            Error::KeyNotDelivered => "key-not-delivered",
            Error::Duplicate { namespace, .. } => match namespace.as_str() {
                "serial" => "duplicate-serial",
                "rot" => "duplicate-rot",
                "fdo-guid" => "duplicate-fdo-guid",
                _ => "duplicate-device-key",
            },
            Error::QuotaExhausted { .. } => "quota",
            Error::OfflineAllowanceSpent { .. } => "offline-allowance",
            Error::UnknownDevice(_) => "unknown-device",
            Error::Scrapped(_) => "scrapped",
            Error::LeftFactory(_) => "left-factory",
            Error::NoFdo(_) => "no-fdo",
            Error::FdoBound { .. } => "fdo-bound",
            Error::Backend { .. } => "backend",
            Error::CorruptEntry { .. } => "corrupt-entry",
            Error::Config(_) => "config",
        }
    }

    /// The gRPC code for this error (see the module doc for the rule).
    pub fn code(&self) -> Code {
        match self {
            Error::WrongSite { .. } | Error::FirstOwner => Code::PermissionDenied,
            Error::Counterfeit(_)
            | Error::VendorNotAllowed { .. }
            | Error::NonceReplayed
            | Error::NonceExpired
            | Error::AnchorMismatch { .. }
            | Error::OrderOutsideWindow { .. }
            | Error::OrderClosed(_)
            | Error::NotClaimed(_)
            | Error::FirmwareNotAllowed { .. }
            | Error::ReadoutNotLocked
            | Error::KeyNotDelivered
            | Error::Scrapped(_)
            | Error::LeftFactory(_)
            | Error::NoFdo(_) => Code::FailedPrecondition,
            Error::AlreadyClaimed { .. }
            | Error::Duplicate { .. }
            | Error::OrderExists(_)
            | Error::FdoBound { .. } => Code::AlreadyExists,
            Error::QuotaExhausted { .. } | Error::OfflineAllowanceSpent { .. } => {
                Code::ResourceExhausted
            }
            Error::UnknownOrder(_) | Error::UnknownDevice(_) => Code::NotFound,
            Error::BadSignature(_) | Error::Invalid(_) => Code::InvalidArgument,
            Error::Backend { status, .. } => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Code::Unavailable,
                _ => Code::Internal,
            },
            Error::CorruptEntry { .. } | Error::Config(_) => Code::Internal,
        }
    }

    /// Whether this is a refusal the factory expects now and then (a clone,
    /// a counterfeit, overproduction), as opposed to a failure of the line.
    pub fn is_expected_refusal(&self) -> bool {
        !matches!(
            self,
            Error::Backend { .. } | Error::CorruptEntry { .. } | Error::Config(_)
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
        let status = trustline_proto::refusal::status(e.code(), e.to_string(), e.reason());
        match &e {
            // The presence challenge rides in the status details.
            Error::AlreadyClaimed {
                presence: Some(challenge),
                ..
            } => Status::with_details_and_metadata(
                status.code(),
                status.message(),
                prost::Message::encode_to_vec(challenge.as_ref()).into(),
                status.metadata().clone(),
            ),
            _ => status,
        }
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
