//! cargo-fuzz target `statement`: see `trustline_fuzz::targets::statements::statement` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::statements::statement(data);
});
