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

/// Runs `trustline` with `args`; returns the exit code and standard output.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 14: `ledger migrate` moves a file ledger into PostgreSQL, and
/// `verify`, `proof`, `history` and `export` read it as they read files;
/// the two exports are identical and a tampered row fails `verify`.
#[test]
fn ledger_tools_read_a_postgresql_ledger_as_they_read_files() {
    let tmp = tempfile::tempdir().unwrap();
    data_dir(tmp.path());
    let data = tmp.path().to_str().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = pg_store::cluster::Cluster::start().unwrap();
    let url = rt.block_on(cluster.create_database("cli")).unwrap();

    let (code, out) = run(&["ledger", "migrate", "--from", data, "--to", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("moved 40 entries"), "{out}");
    let (code, out) = run(&["ledger", "verify", "--ledger", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ledger verified: 40 entries"), "{out}");
    let (code, out) = run(&["ledger", "proof", "--ledger", &url, "--seq", "7", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["ledger", "history", "--ledger", &url, "--rot-id", ROT]);
    assert_eq!(code, Some(0), "{out}");

    let files = tmp.path().join("files.export");
    let pg = tmp.path().join("pg.export");
    let (code, out) = run(&[
        "ledger",
        "export",
        "--data-dir",
        data,
        "--out",
        files.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&[
        "ledger",
        "export",
        "--ledger",
        &url,
        "--out",
        pg.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(&files).unwrap(), std::fs::read(&pg).unwrap());

    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("DELETE FROM merkle_nodes WHERE level = 4 AND idx = 1")
            .await
            .unwrap();
    });
    let (code, out) = run(&["ledger", "verify", "--ledger", &url]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("merkle_nodes row (4, 1)"), "{out}");
}

/// `trustline demo --postgres` (what `scripts/demo.sh --postgres` runs):
/// the line with its ledger in a throwaway PostgreSQL cluster, verified.
#[test]
fn the_demo_runs_with_its_ledger_in_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let (code, out) = run(&[
        "demo",
        "--postgres",
        "--devices",
        "3",
        "--stations",
        "1",
        "--json",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let start = out.find("{\n").unwrap_or(0);
    let end = out.rfind('}').map_or(out.len(), |e| e + 1);
    let v: serde_json::Value = serde_json::from_str(&out[start..end]).unwrap();
    assert_eq!(v["provisioned"], 3, "{out}");
    assert_eq!(v["ledger_verified"], true, "{out}");
    assert!(dir.join("ledger.export").exists());
}
