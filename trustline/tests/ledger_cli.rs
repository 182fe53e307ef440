//! `trustline ledger verify|proof|history|export` whose standard output is
//! a pipe nobody reads any more (`… | head`): each ends normally with its
//! own exit code, without a panic (2.4.14.12: a device's history is read
//! from the command line).

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use custody_ledger::{Draft, EventKind, Ledger, LedgerConfig};
use trustline_proto::signer::{Signer, SoftwareSigner};

const ROT: &str = "5f9c4ab08cac7457e9111a30e4664920607ea2c115a1433d7be98e97e64244ca";

/// A data directory whose ledger holds 40 entries of one device, all
/// covered by a checkpoint.
fn data_dir(dir: &Path) {
    let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate());
    let ledger = Ledger::open(LedgerConfig::new(dir.join("ledger")), signer).unwrap();
    for i in 0..40 {
        let draft = Draft {
            rot_id: ROT.into(),
            site: "site-a".into(),
            actor: "station/site-a/st-01".into(),
            payload: format!("move {i}").into_bytes(),
            ..Draft::new(EventKind::Shipped)
        };
        ledger.append_blocking(draft, vec![], None).unwrap();
    }
    ledger.publish_checkpoint_blocking().unwrap();
    ledger.close();
}

/// Runs `trustline` with `args` and its standard output on a pipe whose
/// read end is already closed; returns the exit code and standard error.
fn run_into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn ledger_commands_piped_into_a_closed_reader_exit_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    data_dir(tmp.path());
    let data = tmp.path().to_str().unwrap();
    let export = tmp.path().join("ledger.export");
    let export = export.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["ledger", "verify", "--data-dir", data],
        &["ledger", "proof", "--data-dir", data, "--seq", "7"],
        &[
            "ledger",
            "proof",
            "--data-dir",
            data,
            "--seq",
            "7",
            "--json",
        ],
        &["ledger", "history", "--data-dir", data, "--rot-id", ROT],
        &[
            "ledger",
            "history",
            "--data-dir",
            data,
            "--rot-id",
            ROT,
            "--json",
        ],
        &["ledger", "export", "--data-dir", data, "--out", export],
    ];
    for args in cases {
        let (code, stderr) = run_into_closed_pipe(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The export was written even though nobody read the summary.
    assert!(std::fs::metadata(export).unwrap().len() > 0);
    // Findings keep their exit code: a missing entry is a usage error (2),
    // reported on standard error.
    let (code, stderr) =
        run_into_closed_pipe(&["ledger", "proof", "--data-dir", data, "--seq", "99"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}
