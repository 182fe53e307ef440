//! cargo-fuzz target `ledger_export`: see `trustline_fuzz::targets::ledger::ledger_export` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::ledger::ledger_export(data);
});
