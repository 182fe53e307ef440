//! The factory station's side of the line: drives the devices in a
//! station's sockets through claim, personalisation and certification
//! against the provisioner ([`run`]), and inspects a device in hand
//! ([`inspect`], 2.4.14.10).
//!
//! Key design decision: the station talks to devices only through the
//! [`link::DeviceLink`] seam — one exchange with the device's RoT per
//! method, never a device private key — so a programmer or debug-probe back
//! end plugs in without touching the line, and to services only over gRPC
//! with its own client certificate. Real devices speak the documented
//! framed protocol (`docs/device-protocol.md`) behind
//! [`link::FramedLink`], over a command's standard streams (`exec:`) or a
//! serial port (`serial:`); the link owns the per-request timeout, the
//! retries (a repeatable step repeated, a one-time step recovered from
//! `status`) and a stable reason for every failure. The simulated link
//! ([`sim::SimLink`], over `hsm-sim`) is behind the cargo feature `sim`, so
//! the simulator is linked only where it is asked for (the demo, the
//! bench, `--sim` and tests).

#![forbid(unsafe_code)]

pub mod error;
pub mod inspect;
pub mod link;
pub mod run;
#[cfg(feature = "sim")]
pub mod sim;

pub use error::{Error, Result};
