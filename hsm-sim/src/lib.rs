//! Simulated secure hardware for tests and the demo — never the production
//! path.
//!
//! Two halves: a SoftHSM2 token lifecycle (a token in a directory of its own,
//! initialised over PKCS#11), and simulated device roots of trust with their
//! IC vendors, including adversarial fleets (clones, counterfeits, replays),
//! which also answer the framed device protocol ([`device_session`]).

#![forbid(unsafe_code)]

pub mod device_session;
pub mod key_delivery;
pub mod rot;
pub mod softhsm;

/// Why simulated hardware refused an operation. Device refusals mirror what
/// real silicon would refuse; caller misuse ([`Error::InvalidInput`]) is kept
/// apart from them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The RoT's one-time claim slot is used (2.4.14.17): a second claim is
    /// refused, even one with the same anchor. Nothing changed on the device.
    #[error("root of trust is already claimed")]
    AlreadyClaimed,
    /// The operation needs a claimed RoT (an installed OEM trust anchor).
    #[error("root of trust is not claimed")]
    NotClaimed,
    /// The RoT already holds an identity key; it never makes or accepts a
    /// second one.
    #[error("root of trust already holds an identity key")]
    AlreadyPersonalised,
    /// The operation needs the device identity key, which is not there yet.
    #[error("root of trust holds no identity key")]
    NotPersonalised,
    /// A delivered key unwrapped to a key other than the one the HSM
    /// announced; the device refuses to use it.
    #[error("unwrapped key does not match the announced device public key")]
    KeyMismatch,
    /// A wrapped device key could not be unwrapped: bad HSM ephemeral key,
    /// unknown KDF, wrong transport key or corrupted blob.
    #[error("key delivery failed: {0}")]
    KeyDelivery(String),
    /// A lifecycle step that is not allowed from the device's state; the
    /// lifecycle only goes forward (2.4.16.4). Nothing changed.
    #[error("cannot {step} a device that is {from}")]
    IllegalTransition {
        /// The state the device is in.
        from: &'static str,
        /// The refused step.
        step: &'static str,
    },
    /// Caller misuse: an argument out of range (empty nonce, oversized
    /// anchor, user-area bounds, bad serial).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A certificate chain handed to the device does not certify its
    /// identity key, or a voucher does not describe this device.
    #[error("not this device's certification: {0}")]
    WrongCertification(String),
    /// X.509 generation failed in a simulated vendor CA or a CSR.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// The SoftHSM2 PKCS#11 module is not installed where it was looked for;
    /// names the paths and the `softhsm2` package to install.
    #[error(
        "SoftHSM2 is not installed (tried {}); install the `softhsm2` package \
         (apt-get install softhsm2 / dnf install softhsm) or set TRUSTLINE_PKCS11_MODULE",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    SoftHsmNotInstalled {
        /// Every path looked at.
        tried: Vec<std::path::PathBuf>,
    },
    /// A SoftHSM2 token-lifecycle step failed (configuration, module,
    /// token initialisation, PIN files).
    #[error("softhsm2: cannot {operation}: {reason}")]
    SoftHsm {
        /// The step.
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// Signing, statement or voucher encoding failed.
    #[error(transparent)]
    Proto(#[from] trustline_proto::Error),
}
