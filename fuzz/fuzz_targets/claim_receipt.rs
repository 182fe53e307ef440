//! cargo-fuzz target `claim_receipt`: see `trustline_fuzz::targets::factory::claim_receipt` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::factory::claim_receipt(data);
});
