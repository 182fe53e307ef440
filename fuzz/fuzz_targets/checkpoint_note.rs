//! cargo-fuzz target `checkpoint_note`: see `trustline_fuzz::targets::ledger::checkpoint_note` for
//! the decoder it drives and the properties it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trustline_fuzz::targets::ledger::checkpoint_note(data);
});
