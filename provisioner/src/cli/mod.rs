//! The `trustline` command line: parses arguments, then runs one subcommand.
//!
//! Each subcommand lives in a module of its own named after it
//! (`cli/ca.rs`, `cli/ledger.rs`, ...), holding its clap arguments and a
//! `run` function; this module only dispatches. Exit codes: 0 success, 1 a
//! check found problems (e.g. `ledger verify`, `audit`), 2 usage or
//! operational error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Trustline: claims, personalises, certifies and records devices on the
/// factory line, and carries their ownership afterwards.
#[derive(Debug, Parser)]
#[command(name = "trustline", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. "info" or "trustline=debug".
    #[arg(long, global = true, env = "TRUSTLINE_LOG", default_value = "warn")]
    pub log: String,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// What a subcommand reports back to `main`.
pub enum Outcome {
    /// Everything asked for was done and every check passed.
    Success,
    /// The command ran but a check found problems (exit code 1).
    Findings,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {}
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Logs go to stderr so that `--json` output on stdout stays parseable.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
