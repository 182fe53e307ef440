//! What a station needs from the device in its socket: the `DeviceLink`
//! trait, which a programmer or debug-probe back end implements (the
//! simulated one is `crate::sim`, feature `sim`).
//!
//! Every method is one exchange with the device's RoT over the programming
//! interface; the station never sees a device private key. The methods are
//! async so that a back end doing slow probe I/O can run it on a blocking
//! thread without holding up the station's other sockets.

use std::future::Future;

use trustline_proto::v1;

use crate::error::Result;

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

/// One device on a station's programming interface.
pub trait DeviceLink: Send {
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
}
