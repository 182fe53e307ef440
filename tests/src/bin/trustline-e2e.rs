//! The `trustline` binary, built inside the test crate so that end-to-end
//! tests can run it as a child process (`CARGO_BIN_EXE_trustline-e2e`) —
//! e.g. to kill the provisioner with SIGKILL mid-run.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    provisioner::cli::main()
}
