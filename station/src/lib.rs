//! The station client: drives the devices in a station's sockets through
//! the factory flow against the provisioner (issue 4, item 4).
//!
//! [`link::DeviceLink`] is what a programmer or debug-probe back end
//! implements; [`sim::SimLink`] is the simulated one; [`run::run`] is the
//! line itself.

pub mod link;
pub mod run;
pub mod sim;
