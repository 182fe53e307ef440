//! The HSM-backed certificate authority: the only crate that links cryptoki.
//!
//! Key design decision: every private key it uses (OEM root, site
//! intermediate, order, voucher, checkpoint and service-CA keys) is a
//! `CKA_SENSITIVE`, non-extractable token object; device keys made in the
//! HSM leave it only wrapped to the device's attested transport key and are
//! destroyed right after (invariant 3; 2.4.5.20, 2.4.9.4, 2.4.14.19).
//!
//! Map:
//! - [`hsm`]: module loading, the session pool, keys, [`hsm::HsmSigner`]
//!   (Trustline `Signer` + rcgen `SigningKey`), HSM-made wrapped device keys;
//! - [`ca`]: `ca init`, device certificate issuance, CRLs, voucher entries;
//! - [`request`]: what a certificate request must prove (PoP or CSR);
//! - [`service`]: the `CertificateAuthority` gRPC service;
//! - [`bench`]: `trustline bench hsm`;
//! - [`keys`]: the HSM key labels.

#![forbid(unsafe_code)]

pub mod bench;
pub mod ca;
mod error;
pub mod hsm;
pub mod keys;
pub mod request;
pub mod service;

pub use ca::{Ca, InitOptions, InitReport, IssuedCertificate};
pub use error::Error;
pub use hsm::{Hsm, HsmConfig, HsmSigner, PinSource};
pub use request::{DeviceCertificateRequest, SubjectKey, VerifiedRequest};
pub use service::CaService;
