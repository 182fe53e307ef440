//! Runs `hub::bench` with its standard configuration in a scratch
//! directory and prints the report (`--json` for JSON) — the runner until
//! `trustline bench hub` is wired into the binary.
//!
//! `cargo run --release -p hub --example bench_hub [-- --json] [--sites N]
//! [--entries N] [--appenders N]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("error: cannot create a scratch directory");
        return ExitCode::FAILURE;
    };
    let mut cfg = hub::bench::BenchConfig::new(dir.path());
    if let Some(n) = value("--sites") {
        cfg.sites = n as usize;
    }
    if let Some(n) = value("--entries") {
        cfg.entries_per_site = n;
    }
    if let Some(n) = value("--appenders") {
        cfg.appenders_per_site = n as usize;
    }
    match hub::bench::run(&cfg, &|line| eprintln!("{line}")) {
        Ok(report) if args.iter().any(|a| a == "--json") => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
