//! The mirror (issue 13.3, 2.4.14.3): ingest is idempotent — a resent
//! batch, a hub killed mid-ingest and a site replaying from an older size
//! lose nothing and count nothing twice; an entry that fails verification
//! is refused and recorded; the mirror exports in the ledger's format and
//! verifies offline.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{sync, Oem, Site, WitnessKey};
use custody_ledger::EventKind;
use hub::model::{Cosigned, ForkKind, ForkRecord, SiteRow};
use hub::store::{DeviceQuery, HubStore, IngestBatch, Prior, Probe};
use hub::{EmbeddedStore, Error, Hub, HubConfig};
use prost::Message;
use trustline_proto::signer::Signer;
use trustline_proto::v1;

/// What a crash does to a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The process dies before the transaction commits.
    BeforeCommit,
    /// The transaction commits, the process dies before answering.
    AfterCommit,
}

/// The embedded store with a crash injected at the Nth ingest commit.
#[derive(Debug)]
struct CrashingStore {
    inner: EmbeddedStore,
    crash_at: usize,
    how: Crash,
    commits: AtomicUsize,
}

impl HubStore for CrashingStore {
    fn site(&self, site: &str) -> hub::Result<SiteRow> {
        self.inner.site(site)
    }
    fn prior(&self, site: &str, probe: &Probe) -> hub::Result<Prior> {
        self.inner.prior(site, probe)
    }
    fn node(&self, site: &str, level: u8, index: u64) -> hub::Result<Option<[u8; 32]>> {
        self.inner.node(site, level, index)
    }
    fn entries(&self, site: &str, start: u64, end: u64) -> hub::Result<Vec<Vec<u8>>> {
        self.inner.entries(site, start, end)
    }
    fn commit_ingest(&self, batch: &IngestBatch) -> hub::Result<()> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.crash_at {
            if self.how == Crash::AfterCommit {
                self.inner.commit_ingest(batch)?;
            }
            return Err(Error::Store("simulated crash".into()));
        }
        self.inner.commit_ingest(batch)
    }
    fn commit_cosigned(&self, site: &str, expected: u64, c: &Cosigned) -> hub::Result<()> {
        self.inner.commit_cosigned(site, expected, c)
    }
    fn record_fork(&self, fork: &ForkRecord) -> hub::Result<ForkRecord> {
        self.inner.record_fork(fork)
    }
    fn device_entries(&self, site: &str, rot_id: &str) -> hub::Result<Vec<u64>> {
        self.inner.device_entries(site, rot_id)
    }
    fn devices(&self, q: &DeviceQuery) -> hub::Result<Vec<hub::model::DeviceRecord>> {
        self.inner.devices(q)
    }
    fn site_counts(&self, site: &str) -> hub::Result<hub::model::SiteCounts> {
        self.inner.site_counts(site)
    }
    fn order_rows(&self, o: Option<&str>) -> hub::Result<Vec<hub::model::OrderSiteRow>> {
        self.inner.order_rows(o)
    }
    fn forks(&self, site: Option<&str>) -> hub::Result<Vec<ForkRecord>> {
        self.inner.forks(site)
    }
    fn clones(&self) -> hub::Result<Vec<hub::model::CloneRecord>> {
        self.inner.clones()
    }
}

fn open(dir: &Path, key: &WitnessKey, site: &Site, crash: Option<(usize, Crash)>) -> Hub {
    let config = HubConfig {
        sites: vec![site.config()],
        order_key: None,
    };
    let inner = EmbeddedStore::open(dir).unwrap();
    let store: Arc<dyn HubStore> = match crash {
        None => Arc::new(inner),
        Some((crash_at, how)) => Arc::new(CrashingStore {
            inner,
            crash_at,
            how,
            commits: AtomicUsize::new(0),
        }),
    };
    Hub::open(config, key.cosigner(), store).unwrap()
}

/// Site "site-a" with an order and `n` certified devices, 3 of them shipped.
fn busy_site(dir: &Path, n: usize) -> Site {
    let site = Site::open("site-a", dir);
    site.open_order(Oem::new().order("PO-1", "site-a", 100, &[]), "PO-1");
    let devices = site.certify_many("d", n, "PO-1", 100);
    for d in devices.iter().take(3) {
        site.custody(EventKind::Shipped, d, "PO-1");
    }
    site
}

fn figures(hub: &Hub) -> (u64, u64, u64, u64) {
    let (state, counts) = hub.site_figures().unwrap().remove(0);
    let order = hub.orders(Some("PO-1")).unwrap();
    (
        state.mirror_size,
        counts.certified,
        counts.shipped,
        order.first().map_or(0, |o| o.certified),
    )
}

#[test]
fn a_resent_batch_and_a_replay_from_an_older_size_count_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let site = busy_site(&dir.path().join("a"), 8);
    let key = WitnessKey::new();
    let hub = open(&dir.path().join("hub"), &key, &site, None);
    let n = site.ledger.size();
    let all = site.entries(0, n);
    hub.push_entries("site-a", 0, all[..5].to_vec()).unwrap();
    hub.push_entries("site-a", 0, all.clone()).unwrap();
    let once = figures(&hub);
    assert_eq!(once, (n, 8, 3, 8));
    // Resent whole, replayed from an older size, resent in pieces.
    hub.push_entries("site-a", 0, all.clone()).unwrap();
    hub.push_entries("site-a", 4, all[4..].to_vec()).unwrap();
    hub.push_entries("site-a", 2, all[2..6].to_vec()).unwrap();
    hub.push_entries("site-a", n, Vec::new()).unwrap();
    assert_eq!(figures(&hub), once);
    let d = hub.devices(&DeviceQuery::Serial("SN-d-0".into())).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].state, hub::model::CustodyState::Shipped);
    // A gap is refused with the size to resume from; nothing changes.
    site.certify_many("late", 2, "PO-1", 100);
    let late = site.entries(n + 1, n + 2);
    match hub.push_entries("site-a", n + 1, late) {
        Err(Error::Behind { state, .. }) => assert_eq!(state.mirror_size, n),
        other => panic!("{other:?}"),
    }
    assert_eq!(figures(&hub), once);
}

#[test]
fn a_hub_killed_mid_ingest_loses_nothing_and_counts_nothing_twice() {
    for how in [Crash::BeforeCommit, Crash::AfterCommit] {
        let dir = tempfile::tempdir().unwrap();
        let site = busy_site(&dir.path().join("a"), 10);
        let key = WitnessKey::new();
        let hub_dir = dir.path().join("hub");
        let n = site.ledger.size();
        let all = site.entries(0, n);
        // The first batch commits; the hub dies in the second.
        let crashing = open(&hub_dir, &key, &site, Some((2, how)));
        crashing
            .push_entries("site-a", 0, all[..6].to_vec())
            .unwrap();
        let died = crashing.push_entries("site-a", 6, all[6..].to_vec());
        assert!(matches!(died, Err(Error::Store(_))), "{how:?}: {died:?}");
        drop(crashing);
        // Restarted, the hub holds either the whole second batch or none of
        // it; the site, which got no answer, resends from what it last knew.
        let hub = open(&hub_dir, &key, &site, None);
        let held = hub.status("site-a").unwrap().mirror_size;
        match how {
            Crash::BeforeCommit => assert_eq!(held, 6),
            Crash::AfterCommit => assert_eq!(held, n),
        }
        hub.push_entries("site-a", 6, all[6..].to_vec()).unwrap();
        assert_eq!(figures(&hub), (n, 10, 3, 10), "{how:?}");
        let cp = site.checkpoint();
        sync(&hub, &site, &cp).unwrap();
    }
}

#[test]
fn an_entry_that_fails_verification_is_refused_recorded_and_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let site = busy_site(&dir.path().join("a"), 4);
    let key = WitnessKey::new();
    let hub = open(&dir.path().join("hub"), &key, &site, None);
    let all = site.entries(0, site.ledger.size());
    hub.push_entries("site-a", 0, all[..2].to_vec()).unwrap();

    // Non-canonical bytes (check_stored), an edited entry (the chain breaks
    // at the next one), two entries swapped (seq), an entry cut off.
    let mut trailing = all.clone();
    trailing[3].push(0);
    let mut noncanonical = all.clone();
    noncanonical[3].extend_from_slice(&[0x2a, 1, b'x']); // a second serial field
    let mut edited = all.clone();
    let mut e = v1::LedgerEntry::decode(edited[2].as_slice()).unwrap();
    e.serial = "SN-forged".into();
    edited[2] = e.encode_to_vec();
    let mut swapped = all.clone();
    swapped.swap(2, 3);
    let cases = [
        (trailing, 3, "not a LedgerEntry"),
        (noncanonical, 3, "not canonically encoded"),
        (edited, 3, "prev_hash"),
        (swapped, 2, "seq"),
    ];
    for (i, (entries, bad_at, what)) in cases.into_iter().enumerate() {
        match hub.push_entries("site-a", 0, entries) {
            Err(Error::Fork {
                kind,
                reason,
                state,
            }) => {
                assert_eq!(kind, ForkKind::BadEntry);
                assert!(reason.contains(what), "{reason}");
                assert_eq!(state.mirror_size, 2, "nothing of the batch is kept");
                assert_eq!(state.forks, i as u64 + 1);
            }
            other => panic!("bad entry accepted: {other:?}"),
        }
        let forks = hub.forks(Some("site-a")).unwrap();
        assert_eq!(forks.last().unwrap().position, bad_at);
    }
    // An entry from another ledger: the chain does not continue.
    let other = busy_site(&dir.path().join("b"), 4);
    let theirs = other.entries(2, 3);
    assert!(matches!(
        hub.push_entries("site-a", 2, theirs),
        Err(Error::Fork {
            kind: ForkKind::BadEntry,
            ..
        })
    ));
    // The genuine entries still go in.
    hub.push_entries("site-a", 2, all[2..].to_vec()).unwrap();
    assert_eq!(figures(&hub).1, 4);
}

#[test]
fn a_mirror_exports_in_the_ledger_format_and_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let site = busy_site(&dir.path().join("a"), 5);
    let key = WitnessKey::new();
    let hub = open(&dir.path().join("hub"), &key, &site, None);
    let cp = site.checkpoint();
    sync(&hub, &site, &cp).unwrap();
    let out = dir.path().join("site-a.export");
    assert_eq!(hub.export_site("site-a", &out).unwrap(), cp.size);
    let opts = custody_ledger::verify::Options {
        key: Some(site.signer.public_key_der().to_vec()),
        origin: Some(common::origin("site-a")),
        anchors: vec![cp.note.clone()],
        ..Default::default()
    };
    let verified = custody_ledger::verify::verify_export(&out, &opts, &mut |_| {}).unwrap();
    assert!(verified.report.is_ok(), "{:?}", verified.report.problem);
    assert_eq!(verified.report.entries, cp.size);
    assert_eq!(verified.report.checkpoints, 1);
    assert_eq!(verified.report.root, cp.root);
    // The site's own export of the same entries has the same entry records.
    let bytes = std::fs::read(&out).unwrap();
    for e in site.entries(0, cp.size) {
        assert!(bytes.windows(e.len()).any(|w| w == e.as_slice()));
    }
}
