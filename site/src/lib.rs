//! The deployable factory site: its configuration (`trustline.toml` and
//! environment overrides, [`config`]), the single-box preparation of its
//! data directory (the CA in the HSM, the checkpoint key on the ledger's own
//! token, the service PKI and its CRL, [`setup`]), the servers
//! (`trustline serve ca|ledger|provisioner|site|all`, [`serve`]), and the
//! uplink to the OEM hub that gets its ledger cosigned ([`uplink`]). An
//! enrolled site of the two-domain layout is prepared by the `deploy`
//! crate from the same pieces.
//!
//! Key design decision: every server is a function of a data directory, a
//! bound listener and a shutdown future (mini-redis' shape) that returns
//! once it has drained, so the binary, the demo, the benchmarks and the
//! tests run exactly the same code. The site is the only crate that wires
//! the services to each other — the provisioner and the ownership service
//! to the CA and the ledger, in-process or over mTLS — and the only one
//! that opens an HSM session or a ledger for them; the services themselves
//! know only [`backends`]' traits. It takes an HSM already opened: how the
//! HSM is found (a real module, or the embedded SoftHSM2 token) is the
//! `trustline` binary's business, so this crate never links the simulator.
//! The OEM hub (issue 13) is a sibling of this crate.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod serve;
pub mod setup;
pub mod uplink;

pub use config::Config;
pub use error::{Error, Result};
