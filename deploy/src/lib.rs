//! The two trust domains deployed (issue 13; DESIGN.md "Two trust
//! domains"): the OEM hub's data directory and keys, the enrolment of a
//! factory site at the hub, and the wiring of `trustline serve hub`.
//!
//! Key design decision: each domain's keys are made on its own token and
//! never cross — the hub's token holds the OEM root (or it stays offline),
//! order, voucher and witness keys and the service CA; a site's CA token
//! holds its site intermediate alone and its ledger token the checkpoint
//! key alone. What crosses is public or short-lived and travels as files:
//! the site's request (a PKCS#10 request for its intermediate, its ledger's
//! public key and origin) goes to the hub; the hub's answer (the signed
//! intermediate, the OEM's public keys and root, the witness key, the
//! service CA and its CRL, and the site's service credentials) comes back
//! as one bundle the site installs after checking it.
//!
//! - [`hub`]: `trustline hub init` ([`hub::init`]), the hub's settings
//!   (`hub.toml`), the register of enrolled sites (`sites/<site>.toml`),
//!   and [`hub::serve`] (`hub::server::run` with the witness key from the
//!   hub's token);
//! - [`enrol`]: `trustline site init` ([`enrol::site_init`]), `trustline
//!   hub enroll-site` ([`enrol::enroll_site`]) and `trustline site install`
//!   ([`enrol::site_install`]);
//! - [`field`]: ownership at the hub (issue 13 item 4): the `Ownership`
//!   service's back ends over the registry, the mirror, the hub's own
//!   ledger and the OEM's keys;
//! - [`loopback`]: a hub and N sites in one process on loopback, wired by
//!   the functions above (`trustline demo --sites N`, end-to-end tests);
//! - [`bundle`]: the enrolment bundle's format;
//! - [`witness`]: the hub's HSM witness key behind `hub::WitnessSigner`.
//!
//! The single-box layout (every key in one data directory, `serve all`) is
//! `site::setup`'s; this crate uses its pieces (`setup::service_ca`,
//! `setup::init_ledger_key`, `setup::Wanted`).

#![forbid(unsafe_code)]

pub mod bundle;
pub mod enrol;
mod error;
pub mod field;
pub mod hub;
pub mod loopback;
pub mod witness;

pub use error::{Error, Result};
