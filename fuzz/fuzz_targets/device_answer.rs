//! cargo-fuzz target `device_answer`: see `trustline_fuzz::targets::station::device_answer`
//! for the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::station::device_answer(data);
});
