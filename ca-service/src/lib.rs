//! The HSM-backed certificate authority: the only crate that links cryptoki.
//!
//! Key design decision: every private key it uses (OEM root, site
//! intermediate, order, voucher, checkpoint, service-CA and witness keys)
//! is a `CKA_SENSITIVE`, non-extractable, non-modifiable token object that
//! can only sign; device keys made in the HSM leave it only wrapped to the
//! device's attested transport key and are destroyed right after
//! (invariant 3; 2.4.5.20, 2.4.9.4, 2.4.14.19; issue 12.6). The ledger's
//! checkpoint key is on a token of its own. The one secret key, the OEM
//! seal key, is as sensitive and non-extractable and can only encrypt and
//! decrypt (AES-256-GCM): it seals the voucher entries the OEM signs so the
//! ledger can keep them without an owner key in clear (issue 12 item 10).
//!
//! Map:
//! - [`hsm`]: module loading, the session pool, keys and their usage
//!   attributes ([`hsm::usage`]), [`hsm::HsmSigner`] (Trustline `Signer` +
//!   rcgen `SigningKey`), [`hsm::HsmEd25519Signer`] (the witness),
//!   HSM-made wrapped device keys;
//! - [`ca`]: `ca init`, device certificate issuance, CRLs, voucher entries
//!   and their seals, site intermediate rotation;
//! - [`ledger_key`]: the ledger's checkpoint key on its own token;
//! - [`request`]: what a certificate request must prove (PoP or CSR);
//! - [`service`]: the `CertificateAuthority` gRPC service;
//! - [`bench`]: `trustline bench hsm` and the P-256 verifier comparison;
//! - [`keys`]: the HSM key labels.

#![forbid(unsafe_code)]

pub mod bench;
pub mod ca;
mod error;
pub mod hsm;
pub mod keys;
pub mod ledger_key;
pub mod request;
pub mod service;

pub use ca::{Ca, InitOptions, InitReport, IssuedCertificate, OemSigner, SealedEntry};
pub use error::Error;
pub use hsm::{Hsm, HsmConfig, HsmEd25519Signer, HsmSigner, PinSource};
pub use request::{DeviceCertificateRequest, SubjectKey, VerifiedRequest};
pub use service::CaService;
