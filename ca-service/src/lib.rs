//! The HSM-backed certificate authority: the only crate that links cryptoki.
//!
//! Key design decision: every private key it uses (OEM root, site
//! intermediate, order, voucher, checkpoint and service-CA keys) is a
//! `CKA_SENSITIVE`, non-extractable token object; device keys made in the
//! HSM leave it only wrapped to the device's attested transport key and are
//! destroyed right after (invariant 3; 2.4.5.20, 2.4.9.4, 2.4.14.19).

#![forbid(unsafe_code)]
