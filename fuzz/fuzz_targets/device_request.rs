//! cargo-fuzz target `device_request`: see `trustline_fuzz::targets::ca::device_request` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::ca::device_request(data);
});
