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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `trustline demo --sites 2 --postgres` (issue 14 items 3, 5 and 6): the
/// hub's store and the first site's ledger live in a throwaway PostgreSQL
/// cluster. The site's uplink pushes from the database (its ledger
/// directory holds only the cosigned notes, no segment), the hub's registry
/// catches the clone and the fork there, the ledger verifies from the
/// database, and the hub audit over the store in PostgreSQL finds exactly
/// what the demo staged.
#[test]
fn the_two_site_demo_on_postgresql_keeps_the_hub_store_and_a_site_ledger_there_and_audits_them() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let (code, out, err) = trustline_tests::cli(
        BIN,
        &[
            "demo".into(),
            "--sites".into(),
            "2".into(),
            "--postgres".into(),
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
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(n(&j, "offline_certified"), 5);
    assert_eq!(n(&j, "offline_refused"), 3);
    assert_eq!(n(&j, "cross_site_clones_detected"), 1);
    assert_eq!(n(&j, "forks_refused"), 1);
    assert_eq!(n(&j, "provisioned"), 24 - 3 + 1);
    assert_eq!(j["ledger_verified"], true);
    let note = j["checkpoint"].as_str().unwrap();
    assert_eq!(
        note.matches("\n— ").count(),
        2,
        "site and witness lines: {note}"
    );

    // Where the data went: the hub's store and site-1's entries in the
    // database, site-2 on files.
    let audit = &j["hub_audit"];
    assert!(
        audit["store"].as_str().unwrap().starts_with("postgres://"),
        "{audit}"
    );
    assert!(!dir.join("hub/store").exists(), "no embedded hub store");
    let segments = |site: &str| {
        std::fs::read_dir(dir.join(site).join("ledger"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    assert_eq!(segments("site-1"), 0, "site-1's entries are in postgresql");
    assert!(segments("site-2") >= 1);
    assert!(dir.join("site-1/ledger/checkpoint.cosigned").is_file());

    // The audit over the store in PostgreSQL: the staged fork, clone and
    // offline production, nothing else.
    let t = &audit["totals"];
    assert_eq!(n(t, "sites"), 2);
    assert_eq!(n(t, "forks_refused"), 1);
    assert_eq!(n(t, "cross_site_clones"), 1);
    assert_eq!(n(t, "certified"), n(&j, "provisioned"));
    assert_eq!(n(t, "offline_certified"), 5);
    assert_eq!(n(t, "offline_refused"), 3);
    assert_eq!(n(t, "uncosigned_certified"), 0);
    assert_eq!(
        audit["findings"],
        serde_json::json!(["fork-refused", "cross-site-clone"])
    );
}

fn audit_hub(hub: &std::path::Path) -> (Option<i32>, String, String) {
    trustline_tests::cli(
        BIN,
        &[
            "audit".into(),
            "--hub-dir".into(),
            hub.display().to_string(),
            "--format".into(),
            "json".into(),
            "--no-progress".into(),
        ],
    )
    .unwrap()
}

/// `trustline audit --hub-dir` over the demo's hub (issue 13 item 5;
/// 2.4.14.20, 2.4.14.22): every site's mirror re-verified with its own key
/// and its last cosignature with the witness key; per-site and per-order
/// figures; the fork and the cross-site clone the demo planted, as
/// findings; the offline production the demo staged, found from the hub's
/// cosignature history and the site's allowance refusals; the hub's own
/// ledger verified. A witness key that did not sign the cosignatures, a
/// store that is not there or not a store, and a mirrored entry edited in
/// the store fail the audit (exit 2).
#[test]
fn the_hub_audit_reports_every_site_the_planted_fork_clone_and_offline_production_and_fails_closed()
{
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
    let demo: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hub = dir.join("hub");

    let (code, out, err) = audit_hub(&hub);
    assert_eq!(
        code,
        Some(1),
        "the planted fork and clone are findings: {out}\n{err}"
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &j["totals"];
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(n(t, "sites"), 2);
    assert_eq!(n(t, "forks_refused"), 1);
    assert_eq!(n(t, "cross_site_clones"), 1);
    assert_eq!(n(t, "certified"), demo["provisioned"].as_u64().unwrap());
    assert_eq!(
        n(t, "offline_certified"),
        demo["offline_certified"].as_u64().unwrap()
    );
    assert_eq!(
        n(t, "offline_refused"),
        demo["offline_refused"].as_u64().unwrap()
    );
    assert_eq!(n(t, "uncosigned_certified"), 0, "the backlog was cosigned");
    let kinds: Vec<&str> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["fork-refused", "cross-site-clone"], "{j}");
    let clone = &j["clones"][0];
    assert_eq!(clone["holders"].as_array().unwrap().len(), 2, "{clone}");
    let sites = j["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 2);
    for s in sites {
        let c = &s["cosigned"];
        assert_eq!(n(c, "size"), n(s, "mirror_entries"), "{s}");
        assert!(c["age_secs"].is_u64(), "{s}");
        assert!(n(&s["offline"], "cosignatures") >= 1, "{s}");
        let order = &s["orders"][0];
        assert_eq!(n(order, "certified"), n(s, "certified"));
        assert!(n(order, "allocation") >= n(order, "certified"));
    }
    // The forged history came from site-1, the offline production from the
    // last site: one backlog holding exactly the allowance and its refusals.
    assert_eq!(n(&sites[0], "forks_refused"), 1);
    assert_eq!(n(&sites[1], "forks_refused"), 0);
    let backlogs = sites[1]["offline"]["backlogs"].as_array().unwrap();
    assert_eq!(backlogs.len(), 1, "{}", sites[1]);
    assert_eq!(
        n(&backlogs[0], "certified"),
        demo["offline_certified"].as_u64().unwrap()
    );
    assert_eq!(
        n(&backlogs[0], "allowance_refused"),
        demo["offline_refused"].as_u64().unwrap()
    );
    assert!(sites[0]["offline"]["backlogs"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(n(&j["hub_ledger"], "entries") >= 1, "{j}");
    // The text report says the same.
    let (code, text, err) = trustline_tests::cli(
        BIN,
        &[
            "audit".into(),
            "--hub-dir".into(),
            hub.display().to_string(),
        ],
    )
    .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        text.contains("forks refused 1  cross-site clones 1"),
        "{text}"
    );

    // Fails closed: another witness key, no store, not a store, an edited
    // mirrored entry.
    let other = work.path().join("other-witness");
    copy_dir(&hub, &other);
    let vkey = std::fs::read_to_string(hub.join("witness.vkey")).unwrap();
    let name = vkey.trim().split('+').next().unwrap();
    let stranger = hub::Cosigner::new(
        name,
        Box::new(hub::SoftwareWitnessSigner::generate().unwrap()),
    )
    .unwrap();
    std::fs::write(other.join("witness.vkey"), stranger.verifier_key()).unwrap();
    let (code, _, err) = audit_hub(&other);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not verify under witness"), "{err}");

    let gone = work.path().join("no-store");
    copy_dir(&hub, &gone);
    std::fs::remove_dir_all(gone.join("store")).unwrap();
    let (code, _, err) = audit_hub(&gone);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no hub store"), "{err}");

    let garbage = work.path().join("garbage");
    copy_dir(&hub, &garbage);
    std::fs::write(garbage.join("store/hub.redb"), vec![0x5a; 8192]).unwrap();
    let (code, _, err) = audit_hub(&garbage);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("hub store"), "{err}");

    let edited = work.path().join("edited");
    copy_dir(&hub, &edited);
    {
        const ENTRIES: redb::TableDefinition<(&str, u64), &[u8]> =
            redb::TableDefinition::new("entries");
        let db = redb::Database::open(edited.join("store/hub.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            use redb::ReadableTable as _;
            let mut t = w.open_table(ENTRIES).unwrap();
            let mut bytes = t.get(("site-2", 3)).unwrap().unwrap().value().to_vec();
            let at = bytes
                .windows(6)
                .position(|w| w == b"site-2")
                .expect("the entry names its site");
            bytes[at + 5] = b'9';
            t.insert(("site-2", 3), bytes.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let (code, _, err) = audit_hub(&edited);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("site-2's mirror at the hub does not verify"),
        "{err}"
    );
}
