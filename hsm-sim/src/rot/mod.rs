//! Simulated device roots of trust (RoTs) and the IC vendors that make them.
//!
//! The factory line and the ownership service only ever talk to a device
//! through what its RoT signs, so the simulation is of the RoT alone:
//! - [`IcVendor`]: a vendor CA that manufactures dies, each with an
//!   attestation key certified under the vendor root (2.4.8.18);
//! - [`SimulatedRot`]: one die — one-time claim slot (2.4.14.17), on-device
//!   key generation or install of an HSM-made key, key attestation with
//!   firmware digest and readout lock (2.4.9.9, 2.4.14.16), proofs with the
//!   identity key, and the field life: user data, user reset and a one-way
//!   lifecycle ([`Lifecycle`], 2.4.16.4, 2.4.16.7);
//! - [`Fleet`]: genuine devices from several vendors mixed with clones,
//!   impostors, counterfeits and policy failures, for tests and the demo.
//!
//! Private keys never leave a die through this API; the only copies are the
//! deliberately adversarial ones a [`Fleet`] makes.

mod die;
mod fleet;
mod keys;
mod lifecycle;
mod vendor;

pub use die::{
    erased_user_area_sha256, FixedDie, SimulatedRot, ERASED_BYTE, MAX_ANCHOR_LEN,
    MAX_CHALLENGE_LEN, MAX_FDO_HEADER_LEN, MAX_STORED_CHAIN, USER_AREA_LEN,
};
pub use fleet::{default_firmware_sha256, DeviceKind, Expected, Fleet, FleetBuilder, FleetDevice};
pub use lifecycle::{Lifecycle, Step};
pub use vendor::{IcVendor, VendorShape};

#[cfg(test)]
mod tests;
