//! cargo-fuzz target `ledger_segment`: see `trustline_fuzz::targets::ledger::ledger_segment` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::ledger::ledger_segment(data);
});
