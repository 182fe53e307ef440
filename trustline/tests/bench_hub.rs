//! `trustline bench hub --store postgres|both --database URL` (issue 14):
//! the hub's store in the benchmark really is PostgreSQL when asked (the
//! entries land in its tables), and the report, text and JSON, names the
//! store measured and the server's version. Small runs: a few seconds.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use pg_store::cluster::Cluster;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh database on this test binary's cluster.
fn database(name: &str) -> String {
    let cluster = CLUSTER.get_or_init(|| Cluster::start().unwrap());
    runtime().block_on(cluster.create_database(name)).unwrap()
}

/// The hub's mirrored entries in the database at `url`, per site.
fn mirrored(url: &str) -> Vec<(String, i64)> {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT site, count(*) FROM hub_entries GROUP BY site ORDER BY site",
                &[],
            )
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    })
}

/// Runs a small `trustline bench hub` with `extra` arguments; returns the
/// exit code and standard output, standard error appended.
fn bench_hub(extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .args([
            "bench",
            "hub",
            "--appenders",
            "2",
            "--entries",
            "30",
            "--push-batch",
            "16",
            "--checkpoint-ms",
            "20",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_hub_on_postgresql_mirrors_into_the_database_and_names_the_store() {
    let url = database("bench_text");
    let (code, out, err) = bench_hub(&["--store", "postgres", "--database", &url]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("on the postgres store (PostgreSQL "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("hub ingest") && l.contains(" 60 entries")),
        "{out}"
    );
    assert_eq!(
        mirrored(&url),
        [("site-0".to_string(), 30), ("site-1".to_string(), 30)]
    );

    // --database without a PostgreSQL store is refused, not ignored; no
    // --store at all measures the embedded store and says so.
    let (code, out, err) = bench_hub(&["--database", &url]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("--database needs --store postgres"), "{err}");
    let (code, out, err) = bench_hub(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("on the embedded store"), "{out}");
}

#[test]
fn bench_hub_store_both_runs_each_store_under_the_same_load_and_reports_both_in_json() {
    let url = database("bench_both");
    let (code, out, err) = bench_hub(&[
        "--store",
        "both",
        "--database",
        &url,
        "--rate",
        "500",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    assert_eq!(runs[0]["store"], "embedded");
    assert!(runs[0]["postgresql"].is_null(), "{v}");
    assert_eq!(runs[1]["store"], "postgres");
    assert!(
        runs[1]["postgresql"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    for r in runs {
        assert_eq!(r["ingested"], 60, "{v}");
        assert_eq!(r["rate_per_site"], 500.0, "{v}");
    }
    assert!(
        v["postgres_to_embedded_ingest"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{v}"
    );
    assert_eq!(
        mirrored(&url),
        [("site-0".to_string(), 30), ("site-1".to_string(), 30)]
    );
}
