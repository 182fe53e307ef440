//! Factory protocol and policy, ownership, audit and evidence, the station
//! client, and the `trustline` command line.
//!
//! Key design decision: the provisioner composes the CA and the custody
//! ledger through their gRPC contracts, in-process or over the network,
//! and never touches an HSM session or a ledger file itself.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod error;
pub mod evidence;
pub mod factory;
pub mod inspect;
pub mod ownership;
pub mod serve;
pub mod setup;
pub mod station;

pub use error::{Error, Result};
