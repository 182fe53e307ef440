//! cargo-fuzz target `rot_attestation`: see `trustline_fuzz::targets::factory::rot_attestation` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::factory::rot_attestation(data);
});
