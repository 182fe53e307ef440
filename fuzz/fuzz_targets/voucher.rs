//! cargo-fuzz target `voucher`: see `trustline_fuzz::targets::voucher::voucher` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::voucher::voucher(data);
});
