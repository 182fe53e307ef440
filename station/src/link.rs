//! What a station needs from the device in its socket: the `DeviceLink`
//! trait, the one seam between the line and a device, and its
//! implementations — the framed protocol of `docs/device-protocol.md`
//! ([`FramedLink`]) over a command's standard streams (`exec:`) or a serial
//! port (`serial:`), the simulated die (`crate::sim`, feature `sim`) — and
//! [`LineLink`], whichever of them `--link` ([`LinkSpec`]) chose.
//!
//! Every method is one exchange with the device's RoT over the programming
//! interface; the station never sees a device private key. The methods are
//! async so that a back end doing slow probe I/O does not hold up the
//! station's other sockets. A link owns its timeouts and retries
//! ([`LinkOptions`]): a per-request timeout, and after a lost answer a new
//! session that repeats a step the protocol marks repeatable, or reads
//! `status` to recover the statement a one-time step signed.

use std::future::Future;

use trustline_proto::device::v1 as dv1;
use trustline_proto::v1;

use crate::error::Result;

pub mod answer;
mod exec;
mod framed;
mod line;
mod recovery;
mod serial;

pub use exec::{ExecCommand, ENV_DEVICE_INDEX, ENV_DEVICE_SESSION, INDEX_PLACEHOLDER};
pub use framed::FramedLink;
pub use line::{LineLink, LinkSpec};
pub use serial::{SerialPath, DEFAULT_BAUD};

/// An HSM-made device key, wrapped to the RoT's transport key.
#[derive(Debug, Clone)]
pub struct WrappedKey {
    /// SubjectPublicKeyInfo DER of the device key the blob unwraps to.
    pub device_public_key: Vec<u8>,
    /// SubjectPublicKeyInfo DER of the HSM's ephemeral ECDH key.
    pub hsm_ephemeral_public_key: Vec<u8>,
    /// The wrapped private key.
    pub wrapped_key: Vec<u8>,
    /// The key-encryption key derivation.
    pub kdf: String,
}

/// Timeouts and retries of a framed link (docs/device-protocol.md §8.5).
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// How long one request may wait for its answer; then the answer counts
    /// as lost (an `exec:` command is killed).
    pub timeout: std::time::Duration,
    /// How long opening a session may take — starting the command (a
    /// programmer attaching to its probe) or opening the port, and the
    /// answer to `hello`; at least [`LinkOptions::timeout`].
    pub open_timeout: std::time::Duration,
    /// How many times a lost answer is tried again, each time in a new
    /// session: a repeatable step is repeated; a one-time step (`claim`,
    /// `generate_key`, `install_wrapped_key`) is recovered from `status`
    /// when the device did it, and sent again only when `status` shows it
    /// did not.
    pub retries: u32,
    /// The station's name, sent in `hello` (for the device's log).
    pub station: String,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(10),
            open_timeout: std::time::Duration::from_secs(30),
            retries: 1,
            station: "trustline-station".into(),
        }
    }
}

/// One device on a station's programming interface.
pub trait DeviceLink: Send {
    /// Opens the session (a framed link starts its command or opens its
    /// port and says `hello`, checking the version and steps). Optional:
    /// every other method opens the session when there is none.
    fn open(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The device's own account of itself (`status`, §10.1): unsigned, for
    /// diagnostics and recovery, never evidence.
    fn status(&mut self) -> impl Future<Output = Result<dv1::StatusResponse>> + Send;

    /// Reads the blank RoT's attestation (vendor chain, transport key).
    fn read_attestation(&mut self) -> impl Future<Output = Result<v1::RotAttestation>> + Send;

    /// Installs the OEM trust anchor in the RoT's one-time claim slot and
    /// returns its signed claim receipt over `nonce`.
    fn claim(
        &mut self,
        nonce: &[u8],
        anchor: &[u8],
    ) -> impl Future<Output = Result<v1::SignedStatement>> + Send;

    /// Locks debug and readout interfaces (before personalisation, so that
    /// the key attestation can report it; 2.4.14.16).
    fn lock_readout(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// On-device personalisation: the RoT generates its identity key and
    /// returns the signed key attestation answering `challenge`.
    fn generate_key(
        &mut self,
        challenge: &[u8],
    ) -> impl Future<Output = Result<v1::SignedStatement>> + Send;

    /// HSM personalisation: the RoT unwraps `key` and returns the signed key
    /// attestation answering `challenge`.
    fn install_wrapped_key(
        &mut self,
        key: &WrappedKey,
        challenge: &[u8],
    ) -> impl Future<Output = Result<v1::SignedStatement>> + Send;

    /// A proof of possession of the identity key for `serial`.
    fn prove_possession(
        &mut self,
        serial: &str,
        challenge: &[u8],
    ) -> impl Future<Output = Result<v1::SignedStatement>> + Send;

    /// Writes the certificate chain and voucher into the device; returns the
    /// voucher as the device bound it (its header signed by the device).
    fn store_certification(
        &mut self,
        chain: &[Vec<u8>],
        voucher: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// The FDO header HMAC (step 17, `docs/device-protocol.md` §7.1): the
    /// device's HMAC over `ov_header`, a header describing its stored
    /// certification. `None` when the device does not announce the step
    /// (it cannot take part in FDO onboarding; nothing is asked).
    fn fdo_header_hmac(
        &mut self,
        ov_header: &[u8],
    ) -> impl Future<Output = Result<Option<[u8; 32]>>> + Send {
        let _ = ov_header;
        async { Ok(None) }
    }

    /// Ends the session once the device has everything (an `exec:` command
    /// must then exit with status 0). A failure here means the device got
    /// its certification but its programmer did not finish cleanly.
    fn finish(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}
