//! `trustline demo --sites 2` (issue 13 item 6; 2.4.14.20, 2.4.14.22): the
//! binary runs an OEM hub and two enrolled sites on loopback, each on its
//! own embedded tokens, and its JSON figures say what happened: the last
//! site certified exactly its offline allowance while the hub was down and
//! was refused past it, the hub caught one cross-site clone and refused
//! one forged history, every cosigned checkpoint was kept, and every
//! ledger verified offline. `--dir` keeps each domain's data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap (ARCHITECTURE.md).

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

#[test]
fn the_two_site_demo_reports_the_offline_allowance_clones_and_forks_it_staged() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let (code, out, err) = trustline_tests::cli(
        BIN,
        &[
            "demo".into(),
            "--sites".into(),
            "2".into(),
            "--devices".into(),
            "24".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--json".into(),
        ],
    )
    .unwrap();
    assert_eq!(code, Some(0), "{out}\n{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k} in {j}"));
    assert_eq!(n("sites"), 2);
    assert_eq!(n("offline_certified"), 5, "the order's offline allowance");
    assert_eq!(n("offline_refused"), 3);
    assert_eq!(n("cross_site_clones_detected"), 1);
    assert_eq!(n("forks_refused"), 1);
    assert_eq!(n("duplicates_rejected"), 1);
    assert_eq!(n("counterfeits_rejected"), 1);
    // 24 genuine dies, 3 refused offline; the cross-site clone certified.
    assert_eq!(n("provisioned"), 24 - 3 + 1);
    assert_eq!(j["ledger_verified"], true);
    assert!(n("cosigned_checkpoints") >= 4, "{j}");
    let note = j["checkpoint"].as_str().unwrap();
    assert_eq!(
        note.matches("\n— ").count(),
        2,
        "site and witness lines: {note}"
    );

    // Every domain's data is kept: the witness key, each site's cosigned
    // notes, the hub's ledger.
    for f in [
        "hub/witness-key.pub.pem",
        "hub/witness.vkey",
        "hub/ledger/ledger-key.pub.pem",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    for site in ["site-1", "site-2"] {
        let history =
            std::fs::read_to_string(dir.join(site).join("ledger/cosigned-checkpoints.jsonl"))
                .unwrap();
        assert!(history.lines().count() >= 1, "{site}: {history}");
        // Each certified device's chain, voucher and FDO voucher (issue 17).
        let devices: Vec<String> = std::fs::read_dir(dir.join("devices").join(site))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let fdo = devices
            .iter()
            .filter(|f| f.ends_with(".fdo-voucher.pem"))
            .count();
        assert!(fdo >= 5, "{site}: {devices:?}");
    }
    let one = std::fs::read_dir(dir.join("devices/site-1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".fdo-voucher.pem"))
        .unwrap();
    let checked = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fdo-check/fdocheck.py"
        ))
        .args(["verify", "--voucher"])
        .arg(&one)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "fdocheck: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
