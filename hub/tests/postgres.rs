//! The hub's store on PostgreSQL (issue 14): the registry across sites
//! (cross-site clones, orders summed) as on the embedded store, kept across
//! a reopening, and two hub replicas on one database that agree — on a
//! clone found while both ingest at once, and on a site both advance; and
//! the hub benchmark measuring the hub on this store.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::sync::{Arc, OnceLock};

use common::{sync, Device, Oem, Site, WitnessKey};
use hub::model::IdentityKind;
use hub::store::DeviceQuery;
use hub::{Hub, HubConfig, PgHubStore, SiteConfig};
use pg_store::cluster::Cluster;
use trustline_proto::signer::Signer;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A fresh database on this test binary's cluster.
fn database(name: &str) -> String {
    let cluster = CLUSTER.get_or_init(|| Cluster::start().unwrap());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.create_database(name))
        .unwrap()
}

fn pg_hub(url: &str, key: &WitnessKey, sites: &[SiteConfig], order_key: Option<Vec<u8>>) -> Hub {
    let store = PgHubStore::open(url).unwrap();
    Hub::open(
        HubConfig {
            sites: sites.to_vec(),
            order_key,
        },
        key.cosigner(),
        Arc::new(store),
    )
    .unwrap()
}

#[test]
fn the_registry_on_postgresql_finds_clones_sums_orders_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = database("registry");
    let oem = Oem::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    let b = Site::open("site-b", &dir.path().join("b"));
    let split = oem.order("PO-S", "", 6, &[("site-a", 3), ("site-b", 3)]);
    a.open_order(split.clone(), "PO-S");
    b.open_order(split, "PO-S");
    let genuine = a.certify_many("g", 3, "PO-S", 3);
    let mut serial_clone = Device::new("c1");
    serial_clone.serial = genuine[0].serial.clone();
    let mut key_clone = Device::new("c2");
    key_clone.key = genuine[1].key.clone();
    b.certify(&serial_clone, "PO-S", 3);
    b.certify(&key_clone, "PO-S", 3);
    b.custody(custody_ledger::EventKind::Scrapped, &key_clone, "PO-S");
    let key = WitnessKey::new();
    let sites = [a.config(), b.config()];
    let order_key = Some(oem.order_key.public_key_der().to_vec());
    let hub = pg_hub(&url, &key, &sites, order_key.clone());
    sync(&hub, &a, &a.checkpoint()).unwrap();
    sync(&hub, &b, &b.checkpoint()).unwrap();

    let check = |hub: &Hub| {
        let mut clones = hub.clones().unwrap();
        clones.sort_by_key(|c| c.kind);
        assert_eq!(
            clones.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [IdentityKind::Serial, IdentityKind::DeviceKey]
        );
        for c in &clones {
            let sites: Vec<&str> = c.holders.iter().map(|h| h.site.as_str()).collect();
            assert_eq!(sites, ["site-a", "site-b"]);
        }
        let by_serial = hub
            .devices(&DeviceQuery::Serial(genuine[0].serial.clone()))
            .unwrap();
        assert_eq!(by_serial.len(), 2);
        assert!(by_serial.iter().all(|d| d.cross_site_clone));
        let honest = hub
            .devices(&DeviceQuery::RotId(genuine[2].rot_id.clone()))
            .unwrap();
        assert!(!honest[0].cross_site_clone);
        let o = hub.orders(Some("PO-S")).unwrap().remove(0);
        assert_eq!((o.quantity, o.certified), (6, 5));
        let b_row = o.sites.iter().find(|r| r.site == "site-b").unwrap();
        assert_eq!(
            (b_row.allocation, b_row.certified, b_row.scrapped),
            (3, 2, 1)
        );
        let figures = hub.site_figures().unwrap();
        let counts: Vec<(u64, u64)> = figures
            .iter()
            .map(|(_, c)| (c.certified, c.scrapped))
            .collect();
        assert_eq!(counts, [(3, 0), (2, 1)]);
        assert!(figures.iter().all(|(s, _)| s.cosigned.is_some()));
    };
    check(&hub);
    // A resend counts nothing twice.
    hub.push_entries("site-b", 0, b.entries(0, b.ledger.size()))
        .unwrap();
    check(&hub);
    drop(hub);
    // Reopened on the same database: the same registry and witness state.
    let again = pg_hub(&url, &key, &sites, order_key);
    check(&again);
    sync(&again, &a, &a.checkpoint()).unwrap();
}

/// Everything the registry answers about `devices`, with clone detection
/// times left out (they are the wall clock of each store's ingest).
fn registry_view(hub: &Hub, devices: &[Device]) -> String {
    let mut out = Vec::new();
    for d in devices {
        let mut by_rot = hub.devices(&DeviceQuery::RotId(d.rot_id.clone())).unwrap();
        by_rot.sort_by(|a, b| a.site.cmp(&b.site));
        let mut by_serial = hub.devices(&DeviceQuery::Serial(d.serial.clone())).unwrap();
        by_serial.sort_by(|a, b| a.site.cmp(&b.site));
        out.push(format!("{by_rot:?}\n{by_serial:?}"));
        for s in ["site-a", "site-b"] {
            let seqs = hub.store().device_entries(s, &d.rot_id).unwrap();
            out.push(format!("{s} {seqs:?}"));
        }
    }
    let mut clones = hub.clones().unwrap();
    clones.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
    for c in &mut clones {
        c.detected_ms = 0;
        c.holders.sort_by(|a, b| a.site.cmp(&b.site));
    }
    out.push(format!("{clones:?}"));
    out.push(format!("{:?}", hub.orders(None).unwrap()));
    let counts: Vec<_> = hub
        .site_figures()
        .unwrap()
        .into_iter()
        .map(|f| f.1)
        .collect();
    out.push(format!("{counts:?}"));
    out.join("\n")
}

/// The batched registry writes of the PostgreSQL store (one statement per
/// table and batch) give what the embedded store gives entry by entry: the
/// same entries pushed in batches of 1, 2, 3, 5 and 8 at two sites, with
/// custody before, within and after a device's batch, and clones of each
/// identity kind, found by whichever site comes second.
#[test]
fn the_registry_on_postgresql_matches_the_embedded_store_batch_for_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = database("conformance");
    let oem = Oem::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    let b = Site::open("site-b", &dir.path().join("b"));
    let split = oem.order("PO-S", "", 40, &[("site-a", 20), ("site-b", 20)]);
    a.open_order(split.clone(), "PO-S");
    let mut devices = a.certify_many("g", 8, "PO-S", 20);
    use custody_ledger::EventKind::{Received, Scrapped, Shipped};
    a.custody(Shipped, &devices[0], "PO-S");
    a.custody(Received, &devices[0], "PO-S");
    a.custody(Scrapped, &devices[1], "PO-S");
    let mut serial_clone = Device::new("c-serial");
    serial_clone.serial = devices[2].serial.clone();
    let mut rot_clone = Device::new("c-rot");
    rot_clone.rot_id = devices[3].rot_id.clone();
    let mut key_clone = Device::new("c-key");
    key_clone.key = devices[4].key.clone();
    b.certify(&serial_clone, "PO-S", 20);
    b.open_order(split, "PO-S");
    b.certify(&rot_clone, "PO-S", 20);
    b.custody(Shipped, &rot_clone, "PO-S");
    b.certify(&key_clone, "PO-S", 20);
    b.custody(Scrapped, &key_clone, "PO-S");
    let more_b = b.certify_many("h", 6, "PO-S", 20);
    b.custody(Shipped, &more_b[0], "PO-S");
    // Site A certifies the twin of a device site B holds, after B.
    let mut late_twin = Device::new("late");
    late_twin.serial = more_b[1].serial.clone();
    a.certify(&late_twin, "PO-S", 20);
    a.custody(Shipped, &devices[5], "PO-S");
    devices.extend([serial_clone, rot_clone, key_clone, late_twin]);
    devices.extend(more_b);

    let key = WitnessKey::new();
    let sites = [a.config(), b.config()];
    let order_key = Some(oem.order_key.public_key_der().to_vec());
    let pg = pg_hub(&url, &key, &sites, order_key.clone());
    let embedded = common::hub(&dir.path().join("hub"), &key, &sites, order_key);
    let (mut at_a, mut at_b) = (0u64, 0u64);
    let steps = [1u64, 2, 3, 5, 8];
    let mut k = 0;
    while at_a < a.ledger.size() || at_b < b.ledger.size() {
        for (site, at) in [(&a, &mut at_a), (&b, &mut at_b)] {
            let end = (*at + steps[k % steps.len()]).min(site.ledger.size());
            k += 1;
            if end > *at {
                let batch = site.entries(*at, end);
                for hub in [&pg, &embedded] {
                    hub.push_entries(&site.name, *at, batch.clone()).unwrap();
                }
                *at = end;
            }
        }
    }
    let want = registry_view(&embedded, &devices);
    assert_eq!(registry_view(&pg, &devices), want);
    // The scenario is what it says: four clones, custody moved.
    assert_eq!(embedded.clones().unwrap().len(), 4, "{want}");
    let shipped = embedded
        .devices(&DeviceQuery::RotId(devices[0].rot_id.clone()))
        .unwrap();
    assert_eq!(shipped[0].state, hub::model::CustodyState::Received);
}

#[test]
fn two_hub_replicas_on_one_database_agree() {
    let dir = tempfile::tempdir().unwrap();
    let url = database("replicas");
    let oem = Oem::new();
    let a = Site::open("site-a", &dir.path().join("a"));
    let b = Site::open("site-b", &dir.path().join("b"));
    a.open_order(oem.order("PO-A", "site-a", 50, &[]), "PO-A");
    b.open_order(oem.order("PO-B", "site-b", 50, &[]), "PO-B");
    // The same serial certified at both sites, among many others.
    let mut shared = Device::new("shared-a");
    shared.serial = "SN-SHARED".into();
    a.certify(&shared, "PO-A", 50);
    let mut twin = Device::new("shared-b");
    twin.serial = "SN-SHARED".into();
    b.certify(&twin, "PO-B", 50);
    a.certify_many("a", 20, "PO-A", 50);
    b.certify_many("b", 20, "PO-B", 50);
    let key = WitnessKey::new();
    let sites = [a.config(), b.config()];
    let one = pg_hub(&url, &key, &sites, None);
    let two = pg_hub(&url, &key, &sites, None);

    // Replica one ingests site A while replica two ingests site B.
    std::thread::scope(|s| {
        let x = s.spawn(|| sync(&one, &a, &a.checkpoint()).map(|_| ()));
        let y = s.spawn(|| sync(&two, &b, &b.checkpoint()).map(|_| ()));
        x.join().unwrap().unwrap();
        y.join().unwrap().unwrap();
    });
    for hub in [&one, &two] {
        let clones = hub.clones().unwrap();
        assert_eq!(clones.len(), 1, "{clones:?}");
        assert_eq!(clones[0].value, b"SN-SHARED");
        assert_eq!(clones[0].holders.len(), 2);
        let recs = hub
            .devices(&DeviceQuery::Serial("SN-SHARED".into()))
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|d| d.cross_site_clone), "{recs:?}");
    }

    // Both replicas push the same new batch of site A at once: the site
    // advances once and nothing is counted twice.
    a.certify_many("a2", 5, "PO-A", 50);
    let state = one.status("site-a").unwrap();
    let end = a.ledger.size();
    let batch = a.entries(state.mirror_size, end);
    std::thread::scope(|s| {
        let x = s.spawn(|| one.push_entries("site-a", state.mirror_size, batch.clone()));
        let y = s.spawn(|| two.push_entries("site-a", state.mirror_size, batch.clone()));
        let (x, y) = (x.join().unwrap(), y.join().unwrap());
        assert!(x.is_ok() || y.is_ok(), "{x:?} {y:?}");
    });
    assert_eq!(two.status("site-a").unwrap().mirror_size, end);
    let figures = one.site_figures().unwrap();
    assert_eq!(figures[0].1.certified, 26);
    assert_eq!(figures[1].1.certified, 21);
}

/// Counts the rows of `table` per site.
fn rows_per_site(url: &str, table: &str) -> Vec<(String, i64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        let rows = client
            .query(
                &format!("SELECT site, count(*) FROM {table} GROUP BY site ORDER BY site"),
                &[],
            )
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    })
}

/// Issue 14 (`trustline bench hub --store postgres`): a small benchmark run
/// on the PostgreSQL store mirrors every entry into its tables (and nothing
/// into an embedded store), the report names the store and the server, and
/// a second run on the same, no longer empty, database is refused.
#[test]
fn the_hub_bench_on_postgresql_mirrors_into_the_database_and_names_the_store() {
    use hub::bench::{BenchConfig, BenchStore};
    let dir = tempfile::tempdir().unwrap();
    let url = database("bench");
    let cfg = BenchConfig {
        sites: 2,
        appenders_per_site: 2,
        entries_per_site: 40,
        push_batch: 16,
        checkpoint_interval: std::time::Duration::from_millis(20),
        store: BenchStore::Postgres {
            database: Some(url.clone()),
        },
        ..BenchConfig::new(dir.path().join("run"))
    };
    let r = hub::bench::run(&cfg, &|_| {}).unwrap();
    assert_eq!(r.store, "postgres");
    let version = r.postgresql.clone().unwrap();
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "{version}"
    );
    assert_eq!(r.ingested, 80);
    let text = r.to_string();
    assert!(
        text.contains(&format!("on the postgres store (PostgreSQL {version})")),
        "{text}"
    );
    let entries = rows_per_site(&url, "hub_entries");
    assert_eq!(
        entries,
        [("site-0".to_string(), 40), ("site-1".to_string(), 40)]
    );
    let cosigned = rows_per_site(&url, "hub_cosignatures");
    assert_eq!(cosigned.len(), 2, "{cosigned:?}");
    assert!(!dir.path().join("run/hub/hub.redb").exists());

    let again = BenchConfig {
        dir: dir.path().join("again"),
        ..cfg
    };
    let err = hub::bench::run(&again, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("needs an empty one"), "{err}");
}
