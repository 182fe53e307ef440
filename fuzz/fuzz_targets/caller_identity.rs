//! cargo-fuzz target `caller_identity`: see `trustline_fuzz::targets::transport::caller_identity` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::transport::caller_identity(data);
});
