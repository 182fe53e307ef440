//! Runs the P-256 verifier comparison (`ca_service::bench::verifiers`) and
//! prints it, with the machine's load, until `trustline bench hsm` shows it:
//!
//! ```text
//! cargo run --release -p ca-service --features verifier-bench --example verify_bench [repetitions] [ms]
//! ```

use std::time::Duration;

use ca_service::bench::verifiers::{run, VerifierConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut config = VerifierConfig::default();
    if let Some(r) = args.next() {
        config.repetitions = r.parse()?;
    }
    if let Some(ms) = args.next() {
        config.phase = Duration::from_millis(ms.parse()?);
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", load.trim());
    }
    let report = run(&config, &mut |phase| eprintln!("{phase}"))?;
    print!("{report}");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", load.trim());
    }
    Ok(())
}
