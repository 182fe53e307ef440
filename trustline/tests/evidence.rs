//! `trustline evidence` (issue 6): every questionnaire row that claims a
//! test names a test that exists — the named file holds a `#[test]` (or
//! `#[tokio::test]`) function of that name — and the output carries live
//! evidence from a seeded ledger, in every format (section 2.3).

use std::path::{Path, PathBuf};
use std::process::Command;

use audit::synth::{seed_scenario, Plant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn evidence(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .arg("evidence")
        .args(args)
        .output()
        .expect("run trustline");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8"),
    )
}

/// Whether `source` defines a test function `name`: `fn name(` with a
/// `#[test]` or `#[tokio::test…]` attribute among the lines just above it.
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let t = line.trim_start();
        let defines = ["fn ", "async fn "].iter().any(|p| {
            t.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(&format!("{name}(")))
        });
        defines
            && lines[i.saturating_sub(4)..i].iter().any(|l| {
                l.trim_start().starts_with("#[test]") || l.trim_start().starts_with("#[tokio::test")
            })
    })
}

#[test]
fn every_test_the_evidence_names_exists() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = seed_scenario(dir.path(), &Plant::default()).expect("seed");
    let (code, out) = evidence(&[
        "--class",
        "2",
        "--format",
        "json",
        "--data-dir",
        s.data_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rows = json["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 49, "every row of the excerpt");
    let mut named = 0;
    let mut missing = Vec::new();
    for row in rows {
        let req = row["req_no"].as_str().expect("req_no");
        for test in row["tests"].as_array().expect("tests") {
            let test = test.as_str().expect("test");
            let (file, function) = test.split_once("::").expect("file::function");
            named += 1;
            let source = std::fs::read_to_string(repo_root().join(file)).unwrap_or_default();
            if !defines_test(&source, function) {
                missing.push(format!("{req}: {test}"));
            }
        }
        // Rows Trustline answers carry the live evidence; the others say
        // what the OEM must supply.
        match row["status"].as_str().expect("status") {
            "oem" => assert!(
                !row["oem_must_supply"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{req}"
            ),
            _ => {
                let live = row["live"].as_str().expect("live");
                assert!(
                    live.contains(&format!("latest checkpoint size {}", s.entries)),
                    "{req}: {live}"
                );
                assert!(live.contains("ledger verified"), "{req}: {live}");
            }
        }
    }
    assert!(named > 40, "only {named} tests named");
    assert!(
        missing.is_empty(),
        "rows name tests that do not exist: {missing:#?}"
    );
}

#[test]
fn applicability_and_every_format_follow_the_class() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = seed_scenario(dir.path(), &Plant::default()).expect("seed");
    let data = s.data_dir.to_str().expect("utf-8");
    let (_, csv) = evidence(&["--class", "1", "--format", "csv", "--data-dir", data]);
    // 2.4.14.22 is "Mandatory for Class 2 and above": not applicable at 1.
    let row = csv
        .lines()
        .find(|l| l.starts_with("2.4.14.22,"))
        .expect("row");
    assert!(row.contains("not applicable at class 1"), "{row}");
    assert!(row.contains("8 devices certified"), "{row}");
    let (_, md) = evidence(&["--class", "3", "--format", "md"]);
    let row = md
        .lines()
        .find(|l| l.starts_with("| 2.4.14.22 |"))
        .expect("row");
    assert!(row.contains("mandatory at class 3"), "{row}");
    assert!(row.contains("no ledger given"), "{row}");
    assert!(md.contains("CC BY 4.0"), "attribution");
    let out = dir.path().join("evidence.json");
    let (code, _) = evidence(&[
        "--class",
        "4",
        "--format",
        "json",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("out")).expect("json");
    assert_eq!(json["class"], 4);
}
