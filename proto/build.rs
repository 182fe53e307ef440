//! Generates the tonic/prost code for `trustline.v1` and the device
//! protocol's `trustline.device.v1` with a vendored `protoc`,
//! so a fresh machine needs nothing but cargo.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "trustline/v1/common.proto",
    "trustline/v1/ledger.proto",
    "trustline/v1/hub.proto",
    "trustline/v1/ca.proto",
    "trustline/v1/provisioning.proto",
    "trustline/v1/ownership.proto",
    "trustline/v1/admin.proto",
    "trustline/device/v1/device.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Edition 2021: set_var is safe here; the build script is single-threaded.
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("trustline_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
