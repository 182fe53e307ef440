//! The `trustline` binary: parses the command line, then runs one
//! subcommand by calling into the Trustline crates (ripgrep's shape:
//! `main` → parse → run).
//!
//! Key design decision: the binary holds no policy of its own, so every
//! behaviour it shows is a library's and tested there: the factory is
//! `provisioner`, field life `ownership`, the audit `audit`, the station
//! `station`, the servers and their wiring `site`. It is the only crate
//! besides the tests that links `hsm-sim` — for the demo, the line bench,
//! `--sim` and the embedded SoftHSM2 token.
//!
//! Exit codes: 0 success, 1 a check found problems (e.g. `ledger verify`,
//! `audit`, a station run with failed devices), 2 usage or operational
//! error.

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
