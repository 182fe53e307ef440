//! cargo-fuzz target `transport_key`: see `trustline_fuzz::targets::factory::transport_key` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::factory::transport_key(data);
});
