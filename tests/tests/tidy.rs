//! Repository hygiene checked inside `cargo test`: every Rust module says
//! what it is for.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name.starts_with('.')
                || name.starts_with("target")
                || name == "corpus"
                || name == "artifacts"
            {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} Rust files under {}",
        files.len(),
        root.display()
    );
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a //! doc: {missing:#?}"
    );
}

/// The workspace's crates, lowest first: a crate may depend (outside its
/// dev-dependencies) only on crates before it (ARCHITECTURE.md, "Crates and
/// the direction of their dependencies").
const CRATE_ORDER: &[&str] = &[
    "trustline-proto",
    "transport",
    "custody-ledger",
    "pg-store",
    "ca-service",
    "hsm-sim",
    "backends",
    "provisioner",
    "ownership",
    "station",
    "site",
    "hub",
    "audit",
    "deploy",
    "trustline",
    "trustline-tests",
];

/// Dependencies that would be allowed by the order but break an absence
/// ARCHITECTURE.md states: (crate, must not depend on).
const ABSENCES: &[(&str, &str)] = &[
    ("custody-ledger", "transport"),
    ("custody-ledger", "ca-service"),
    ("backends", "ca-service"),
    ("provisioner", "ca-service"),
    ("provisioner", "custody-ledger"),
    ("ownership", "provisioner"),
    ("ownership", "ca-service"),
    ("ownership", "custody-ledger"),
    ("audit", "ownership"),
    ("audit", "station"),
    ("audit", "site"),
    ("audit", "ca-service"),
    ("audit", "deploy"),
    ("station", "site"),
    ("station", "ca-service"),
    ("hub", "provisioner"),
    ("hub", "station"),
    ("hub", "site"),
    ("hub", "ca-service"),
];

/// Crates that may link the simulator (the binary's demo, bench and `--sim`
/// paths, and the tests).
const SIMULATOR_USERS: &[&str] = &["trustline", "trustline-tests"];

/// One workspace member's manifest.
struct Manifest {
    name: String,
    path: PathBuf,
    /// Non-dev dependencies (normal and build): name → its table or value.
    deps: Vec<(String, toml::Value)>,
}

fn manifests() -> Vec<Manifest> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
    let workspace: toml::Table = text.parse().expect("root manifest parses");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("member path").to_owned());
    members
        .map(|member| {
            let path = root.join(&member).join("Cargo.toml");
            let text = std::fs::read_to_string(&path).expect("member manifest");
            let manifest: toml::Table = text.parse().expect("member manifest parses");
            let name = manifest["package"]["name"]
                .as_str()
                .expect("package name")
                .to_owned();
            let mut deps = Vec::new();
            for section in ["dependencies", "build-dependencies"] {
                if let Some(table) = manifest.get(section).and_then(toml::Value::as_table) {
                    for (dep, value) in table {
                        let dep = value
                            .get("package")
                            .and_then(toml::Value::as_str)
                            .unwrap_or(dep)
                            .to_owned();
                        deps.push((dep, value.clone()));
                    }
                }
            }
            Manifest { name, path, deps }
        })
        .collect()
}

#[test]
fn crate_dependencies_point_one_way() {
    let manifests = manifests();
    assert!(manifests.len() >= CRATE_ORDER.len() - 1, "too few members");
    let rank = |name: &str| CRATE_ORDER.iter().position(|c| *c == name);
    let mut wrong = Vec::new();
    for m in &manifests {
        let Some(own) = rank(&m.name) else {
            wrong.push(format!(
                "{} ({}) is not in CRATE_ORDER: place it",
                m.name,
                m.path.display()
            ));
            continue;
        };
        for (dep, _) in &m.deps {
            if let Some(theirs) = rank(dep) {
                if theirs >= own {
                    wrong.push(format!(
                        "{} depends on {dep}, which is not below it",
                        m.name
                    ));
                }
            }
            if ABSENCES.contains(&(m.name.as_str(), dep.as_str())) {
                wrong.push(format!("{} must not depend on {dep}", m.name));
            }
        }
    }
    assert!(wrong.is_empty(), "dependency order broken: {wrong:#?}");
}

#[test]
fn only_the_binary_and_the_tests_link_the_simulator() {
    let mut wrong = Vec::new();
    for m in manifests() {
        for (dep, value) in &m.deps {
            let optional = value
                .get("optional")
                .and_then(toml::Value::as_bool)
                .unwrap_or(false);
            if dep == "hsm-sim" && !SIMULATOR_USERS.contains(&m.name.as_str()) {
                // The station's simulated link, only behind its `sim` feature.
                if !(m.name == "station" && optional) {
                    wrong.push(format!("{} has a non-dev dependency on hsm-sim", m.name));
                }
            }
            let features = value
                .get("features")
                .and_then(toml::Value::as_array)
                .cloned()
                .unwrap_or_default();
            let enables_sim =
                dep == "station" && features.iter().any(|f| f.as_str() == Some("sim"));
            if enables_sim && !SIMULATOR_USERS.contains(&m.name.as_str()) {
                wrong.push(format!("{} enables station's sim feature", m.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the simulator reaches a service: {wrong:#?}"
    );
}

/// Crates whose root module must state their concept and key design
/// decision (the simulator and the test harness are tools, not concepts).
const CONCEPT_CRATES: &[(&str, &str)] = &[
    ("trustline-proto", "proto/src/lib.rs"),
    ("transport", "transport/src/lib.rs"),
    ("custody-ledger", "custody-ledger/src/lib.rs"),
    ("pg-store", "pg-store/src/lib.rs"),
    ("ca-service", "ca-service/src/lib.rs"),
    ("backends", "backends/src/lib.rs"),
    ("provisioner", "provisioner/src/lib.rs"),
    ("ownership", "ownership/src/lib.rs"),
    ("audit", "audit/src/lib.rs"),
    ("station", "station/src/lib.rs"),
    ("site", "site/src/lib.rs"),
    ("hub", "hub/src/lib.rs"),
    ("deploy", "deploy/src/lib.rs"),
    ("trustline", "trustline/src/main.rs"),
];

#[test]
fn every_crate_states_its_key_design_decision() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let names: Vec<String> = manifests().into_iter().map(|m| m.name).collect();
    for (name, _) in CONCEPT_CRATES {
        assert!(names.iter().any(|n| n == name), "{name} is not a member");
    }
    let missing: Vec<_> = CONCEPT_CRATES
        .iter()
        .filter(|(_, file)| {
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            let doc: String = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join("\n");
            !doc.contains("Key design decision")
        })
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "crates whose root doc states no key design decision: {missing:?}"
    );
}
