//! cargo-fuzz target `order`: see `trustline_fuzz::targets::factory::order` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::factory::order(data);
});
