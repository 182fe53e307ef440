//! The audit across sites (issue 13 item 5; 2.4.14.20, 2.4.14.22): the
//! OEM hub's store — its re-verified mirror of every site's ledger, its
//! cosignatures, its registry, its fork and clone records; embedded files
//! or PostgreSQL (issue 14) — and the hub's own ledger, read offline from a
//! stopped hub (or a copy; a PostgreSQL store may also be read live).
//!
//! Key design decision: nothing the hub store says is taken on trust where
//! it can be checked. Every site's mirror is written out in the export
//! format and run through the single-site audit ([`crate::run`]) with that
//! site's ledger key — the ledger verifier first, so a mirror that does not
//! verify is an error, never a note —, its latest cosigned note is checked
//! against the witness key, and the hub's own ledger is verified with its
//! key. What only the registry knows (forks refused, cross-site clones,
//! per-order sums across sites) is reported as the hub recorded it.
//!
//! # Production during outages, exactly
//!
//! The hub stores every checkpoint it cosigned (size, time). The entries
//! `[previous size, size)` were cosigned together: one *batch*, whose
//! *wait* is the cosignature's time (hub clock, seconds) less the time of
//! the batch's first entry (site clock, ms). A batch is an *outage backlog*
//! when its wait exceeds `outage_after_secs`, or when it holds a
//! `QUOTA_REJECTED` entry whose reason starts `offline allowance` (the site
//! itself recorded that it had spent its allowance beyond its last
//! cosignature, 2.4.14.20). `offline_certified` counts the `CERTIFIED`
//! entries in outage backlogs: devices certified beyond the site's last
//! cosigned checkpoint that waited that long for the witness. Entries after
//! the latest cosignature are reported apart (`uncosigned_*`): certified,
//! mirrored, not yet witnessed. A hub store written before the history
//! existed has only its latest cosignature: the first batch then spans
//! everything before it.

mod offline;
mod render;

pub use render::{json, text};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hub::model::{CloneRecord, ForkRecord, IdentityKind, OrderFigures};
use hub::store::HubStore;
use hub::{EmbeddedStore, PgHubStore, SiteConfig};
use serde::Serialize;
use trustline_proto::cosignature::WitnessKey;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};
use crate::report::AuditReport;
use crate::{AuditOptions, LedgerSource};

/// How the allowance refusal's recorded reason starts
/// (`provisioner::allowance`).
const ALLOWANCE_REASON: &str = "offline allowance";
/// Mirrored entries read from the store at once.
const CHUNK: u64 = 1024;

/// What the audit across sites checks against.
#[derive(Debug, Clone)]
pub struct HubAuditOptions {
    /// The hub's embedded store directory (`<hub>/store`).
    pub store_dir: PathBuf,
    /// The hub's store in PostgreSQL (`[hub] database`, issue 14), read
    /// instead of `store_dir` when set.
    pub store_database: Option<String>,
    /// Every site enrolled at the hub: name, origin, ledger key.
    pub sites: Vec<SiteConfig>,
    /// The witness's key (`<hub>/witness.vkey`).
    pub witness: WitnessKey,
    /// The hub's own ledger: its data directory and checkpoint key.
    pub hub_ledger: Option<(PathBuf, Vec<u8>)>,
    /// The single-site audit's options for each mirror: the OEM order key
    /// and CA certificates (the root and every site's intermediate).
    pub site: AuditOptions,
    /// A batch that waited longer than this for its cosignature is an
    /// outage backlog, seconds.
    pub outage_after_secs: u64,
    /// Now, Unix ms (ages are measured from it).
    pub now_ms: i64,
}

/// The latest cosigned checkpoint of a site.
#[derive(Debug, Clone, Serialize)]
pub struct CosignedSummary {
    /// Its size.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// The cosignature's time, POSIX seconds.
    pub time: u64,
    /// Seconds from it to the audit.
    pub age_secs: u64,
}

/// A batch of entries cosigned together after a wait beyond the threshold
/// or holding an allowance refusal.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// First entry.
    pub from: u64,
    /// One past the last entry (the cosigned size).
    pub to: u64,
    /// `CERTIFIED` entries in it.
    pub certified: u64,
    /// Allowance refusals in it.
    pub allowance_refused: u64,
    /// Time of its first entry, Unix ms (site clock).
    pub first_entry_ms: i64,
    /// The cosignature's time, POSIX seconds (hub clock).
    pub cosigned_at: u64,
    /// Cosignature time less first entry time, seconds (0 if negative).
    pub wait_secs: u64,
}

/// What a site produced while it could not be witnessed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OfflineSummary {
    /// The threshold the backlogs were found with, seconds.
    pub outage_after_secs: u64,
    /// Cosignatures the hub keeps for the site.
    pub cosignatures: u64,
    /// The outage backlogs.
    pub backlogs: Vec<Backlog>,
    /// `CERTIFIED` entries in outage backlogs.
    pub offline_certified: u64,
    /// `QUOTA_REJECTED` entries refused for the offline allowance (all of
    /// the mirror).
    pub offline_refused: u64,
    /// Mirrored entries after the latest cosignature.
    pub uncosigned_entries: u64,
    /// `CERTIFIED` among them.
    pub uncosigned_certified: u64,
    /// Seconds since the first of them, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncosigned_for_secs: Option<u64>,
}

/// One order at one site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteOrder {
    /// The order.
    pub order_id: String,
    /// Its signed total quantity.
    pub quantity: u64,
    /// What it allocates to this site.
    pub allocation: u64,
    /// Certified here under it.
    pub certified: u64,
    /// Certified here as a share of the allocation, percent.
    pub quota_used_pct: f64,
    /// Refused here under it: duplicate, counterfeit and quota.
    pub refused: u64,
}

/// One site, as the hub holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteAudit {
    /// The site.
    pub site: String,
    /// Its checkpoint origin.
    pub origin: String,
    /// Entries mirrored.
    pub mirror_entries: u64,
    /// The verifier's words on the mirror (it verified, or the audit
    /// would have stopped).
    pub verify_message: String,
    /// The latest cosignature, its witness signature checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosigned: Option<CosignedSummary>,
    /// `CERTIFIED`, `SHIPPED`, `RECEIVED`, `SCRAPPED` (registry).
    pub certified: u64,
    /// Shipped.
    pub shipped: u64,
    /// Received.
    pub received: u64,
    /// Scrapped.
    pub scrapped: u64,
    /// Refusals recorded in the site's ledger, by kind.
    pub refused: BTreeMap<String, u64>,
    /// Per order.
    pub orders: Vec<SiteOrder>,
    /// Production while not witnessed.
    pub offline: OfflineSummary,
    /// Forks the hub refused from the site.
    pub forks_refused: u64,
    /// The single-site audit of the mirror.
    pub audit: AuditReport,
}

/// An order across sites.
#[derive(Debug, Clone, Serialize)]
pub struct OrderAcross {
    /// The order.
    pub order_id: String,
    /// The signed quantity.
    pub quantity: u64,
    /// Certified across sites.
    pub certified: u64,
    /// Per site: (site, allocation, certified).
    pub sites: Vec<(String, u64, u64)>,
    /// More than the quantity across sites.
    pub over_quantity: bool,
    /// A site over its allocation.
    pub over_allocation: Vec<String>,
    /// Two sites opened different signed terms under the id.
    pub terms_differ: bool,
}

/// A fork the hub refused.
#[derive(Debug, Clone, Serialize)]
pub struct ForkSummary {
    /// Its id at the hub.
    pub id: u64,
    /// The site.
    pub site: String,
    /// What kind.
    pub kind: String,
    /// The entry seq or checkpoint size.
    pub position: u64,
    /// The hash the hub holds there, hex.
    pub held: String,
    /// The hash offered, hex.
    pub offered: String,
    /// What differs.
    pub reason: String,
    /// First seen, Unix ms.
    pub time_ms: i64,
    /// Offered again since.
    pub repeats: u64,
}

/// A holder of a cloned identity.
#[derive(Debug, Clone, Serialize)]
pub struct CloneHolderSummary {
    /// The site.
    pub site: String,
    /// Its `CERTIFIED` entry.
    pub seq: u64,
    /// The rot_id certified there.
    pub rot_id: String,
    /// The serial certified there.
    pub serial: String,
}

/// An identity certified at more than one site.
#[derive(Debug, Clone, Serialize)]
pub struct CloneSummary {
    /// "serial", "rot_id" or "device_key".
    pub kind: &'static str,
    /// The value (hex for a device key).
    pub value: String,
    /// Every holder.
    pub holders: Vec<CloneHolderSummary>,
    /// When the hub saw the second holder, Unix ms.
    pub detected_ms: i64,
}

/// The hub's own ledger of field-life events.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubLedgerSummary {
    /// Entries.
    pub entries: u64,
    /// The verifier's words.
    pub verify_message: String,
    /// Entries by kind.
    pub by_kind: BTreeMap<String, u64>,
}

/// Totals across sites.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubTotals {
    /// Sites audited.
    pub sites: u64,
    /// Certified across sites.
    pub certified: u64,
    /// Refused across sites.
    pub refused: u64,
    /// Forks the hub refused.
    pub forks_refused: u64,
    /// Identities certified at more than one site.
    pub cross_site_clones: u64,
    /// Certified in outage backlogs.
    pub offline_certified: u64,
    /// Refused for the offline allowance.
    pub offline_refused: u64,
    /// Certified, mirrored, not yet cosigned.
    pub uncosigned_certified: u64,
    /// The oldest latest cosignature, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_cosignature_secs: Option<u64>,
}

/// A finding across sites (exit code 1).
#[derive(Debug, Clone, Serialize)]
pub struct HubFinding {
    /// "fork-refused", "cross-site-clone", "over-quantity",
    /// "over-allocation", "terms-differ", "never-cosigned" or
    /// "site-audit" (a finding of a mirror's own audit).
    pub kind: &'static str,
    /// The site, when one.
    pub site: String,
    /// In words.
    pub detail: String,
}

/// The audit across sites.
#[derive(Debug, Clone, Serialize)]
pub struct HubReport {
    /// When, Unix ms.
    pub generated_at_ms: i64,
    /// The store read.
    pub store: String,
    /// Totals.
    pub totals: HubTotals,
    /// Every site.
    pub sites: Vec<SiteAudit>,
    /// Every order across sites.
    pub orders: Vec<OrderAcross>,
    /// Forks refused.
    pub forks: Vec<ForkSummary>,
    /// Cross-site clones.
    pub clones: Vec<CloneSummary>,
    /// The hub's own ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_ledger: Option<HubLedgerSummary>,
    /// The findings.
    pub findings: Vec<HubFinding>,
}

impl HubReport {
    /// Whether anything was found (exit code 1).
    pub fn has_findings(&self) -> bool {
        !self.findings.is_empty()
    }
}

fn store_error(what: &str, e: hub::Error) -> Error {
    Error::Config(format!("hub store: {what}: {e}"))
}

/// A temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let base = std::env::temp_dir();
        for attempt in 0..64u32 {
            let dir = base.join(format!(
                "trustline-hub-audit-{}-{attempt}",
                std::process::id()
            ));
            if std::fs::create_dir(&dir).is_ok() {
                return Ok(Self(dir));
            }
        }
        Err(Error::io(&base, "cannot create a scratch directory"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the audit across sites.
///
/// # Errors
/// [`Error::Config`] when the store cannot be opened or read, a mirror or
/// the hub's ledger does not verify, or a cosigned note does not verify
/// under the witness key: the audit fails closed.
pub fn run(options: &HubAuditOptions) -> Result<HubReport> {
    let (store, location): (Box<dyn HubStore>, String) = match &options.store_database {
        Some(url) => {
            let location = pg_store::db::redact(url);
            let store = PgHubStore::open(url).map_err(|e| store_error(&location, e))?;
            (Box::new(store), location)
        }
        None => {
            let location = options.store_dir.display().to_string();
            let store = EmbeddedStore::open_existing(&options.store_dir)
                .map_err(|e| store_error(&location, e))?;
            (Box::new(store), location)
        }
    };
    let store = &*store;
    let scratch = Scratch::new()?;
    let mut report = HubReport {
        generated_at_ms: options.now_ms,
        store: location,
        totals: HubTotals::default(),
        sites: Vec::new(),
        orders: Vec::new(),
        forks: Vec::new(),
        clones: Vec::new(),
        hub_ledger: None,
        findings: Vec::new(),
    };
    let forks = store.forks(None).map_err(|e| store_error("forks", e))?;
    for config in &options.sites {
        let site = audit_site(store, config, options, &scratch.0, &forks)?;
        report.sites.push(site);
    }
    report.forks = forks.iter().map(fork_summary).collect();
    report.clones = store
        .clones()
        .map_err(|e| store_error("clones", e))?
        .iter()
        .map(clone_summary)
        .collect();
    report.orders = orders_across(store)?;
    if let Some((dir, key)) = &options.hub_ledger {
        report.hub_ledger = Some(hub_ledger(dir, key)?);
    }
    findings(&mut report);
    totals(&mut report);
    Ok(report)
}

fn audit_site(
    store: &dyn HubStore,
    config: &SiteConfig,
    options: &HubAuditOptions,
    scratch: &Path,
    forks: &[ForkRecord],
) -> Result<SiteAudit> {
    let name = config.site.as_str();
    let err = |e| store_error(&format!("site {name}"), e);
    let row = store.site(name).map_err(err)?;
    // The mirror through the single-site audit: the verifier first.
    let export = scratch.join(format!("{name}.tlexport"));
    hub::export_mirror(store, config, &export).map_err(err)?;
    let mut site_options = options.site.clone();
    site_options.ledger_key = Some(config.key.spki().to_vec());
    site_options.allow_unsigned_tail = true;
    site_options.anchors.clear();
    let mut audit = crate::run(&LedgerSource::Export(export.clone()), &site_options)?;
    let _ = std::fs::remove_file(&export);
    if !audit.ledger.verified {
        return Err(Error::Config(format!(
            "site {name}'s mirror at the hub does not verify: {}",
            audit.ledger.verify_message
        )));
    }
    audit.ledger.source = format!("hub mirror of {name}");
    // The latest cosignature: the witness signed exactly this note.
    let cosigned = match &row.cosigned {
        None => None,
        Some(c) => {
            let time = options.witness.verify(&c.note).map_err(|e| {
                Error::Config(format!(
                    "site {name}'s cosigned checkpoint does not verify under witness {}: {e}",
                    options.witness.name()
                ))
            })?;
            if time != c.time {
                return Err(Error::Config(format!(
                    "site {name}'s cosignature says time {time}, the hub store {}",
                    c.time
                )));
            }
            Some(CosignedSummary {
                size: c.size,
                root: hex::encode(c.root),
                time: c.time,
                age_secs: u64::try_from(options.now_ms / 1000)
                    .unwrap_or(0)
                    .saturating_sub(c.time),
            })
        }
    };
    let mut points = store.cosignatures(name).map_err(err)?;
    points.sort_by_key(|p| p.size);
    if let Some(c) = &row.cosigned {
        if points.last().map(|p| p.size) != Some(c.size) {
            return Err(Error::Config(format!(
                "site {name}: the hub's cosignature history does not end at its latest cosigned size {}",
                c.size
            )));
        }
    }
    let offline = offline::offline(store, name, row.size, &points, options)?;
    let counts = store.site_counts(name).map_err(err)?;
    let mut refused = BTreeMap::new();
    for g in &audit.refusals.groups {
        *refused.entry(g.kind.to_string()).or_insert(0) += g.count;
    }
    let rows = store.order_rows(None).map_err(err)?;
    let orders = rows
        .iter()
        .filter(|r| r.site == name)
        .map(|r| {
            let refused = audit
                .orders
                .iter()
                .filter(|o| o.order_id == r.order_id)
                .map(|o| o.duplicate_rejected + o.counterfeit_rejected + o.quota_rejected)
                .sum();
            SiteOrder {
                order_id: r.order_id.clone(),
                quantity: r.quantity,
                allocation: r.allocation,
                certified: r.certified,
                quota_used_pct: if r.allocation == 0 {
                    0.0
                } else {
                    (r.certified as f64 * 1000.0 / r.allocation as f64).round() / 10.0
                },
                refused,
            }
        })
        .collect();
    Ok(SiteAudit {
        site: name.to_string(),
        origin: config.origin().to_string(),
        mirror_entries: row.size,
        verify_message: audit.ledger.verify_message.clone(),
        cosigned,
        certified: counts.certified,
        shipped: counts.shipped,
        received: counts.received,
        scrapped: counts.scrapped,
        refused,
        orders,
        offline,
        forks_refused: forks.iter().filter(|f| f.site == name).count() as u64,
        audit,
    })
}

fn fork_summary(f: &ForkRecord) -> ForkSummary {
    ForkSummary {
        id: f.id,
        site: f.site.clone(),
        kind: f.kind.to_string(),
        position: f.position,
        held: hex::encode(f.held_hash),
        offered: hex::encode(f.offered_hash),
        reason: f.reason.clone(),
        time_ms: f.time_ms,
        repeats: f.repeats,
    }
}

fn clone_summary(c: &CloneRecord) -> CloneSummary {
    let (kind, value) = match c.kind {
        IdentityKind::Serial => ("serial", String::from_utf8_lossy(&c.value).into_owned()),
        IdentityKind::RotId => ("rot_id", String::from_utf8_lossy(&c.value).into_owned()),
        IdentityKind::DeviceKey => ("device_key", hex::encode(&c.value)),
    };
    CloneSummary {
        kind,
        value,
        holders: c
            .holders
            .iter()
            .map(|h| CloneHolderSummary {
                site: h.site.clone(),
                seq: h.seq,
                rot_id: h.rot_id.clone(),
                serial: h.serial.clone(),
            })
            .collect(),
        detected_ms: c.detected_ms,
    }
}

fn orders_across(store: &dyn HubStore) -> Result<Vec<OrderAcross>> {
    let rows = store
        .order_rows(None)
        .map_err(|e| store_error("orders", e))?;
    let mut grouped: BTreeMap<String, Vec<hub::model::OrderSiteRow>> = BTreeMap::new();
    for r in rows {
        grouped.entry(r.order_id.clone()).or_default().push(r);
    }
    Ok(grouped
        .into_iter()
        .map(|(id, rows)| {
            let f = OrderFigures::from_rows(&id, rows);
            OrderAcross {
                over_allocation: f
                    .sites
                    .iter()
                    .filter(|r| r.over_allocation())
                    .map(|r| r.site.clone())
                    .collect(),
                sites: f
                    .sites
                    .iter()
                    .map(|r| (r.site.clone(), r.allocation, r.certified))
                    .collect(),
                order_id: f.order_id,
                quantity: f.quantity,
                certified: f.certified,
                over_quantity: f.over_quantity,
                terms_differ: f.terms_differ,
            }
        })
        .collect())
}

fn hub_ledger(dir: &Path, key: &[u8]) -> Result<HubLedgerSummary> {
    let options = custody_ledger::verify::Options {
        key: Some(key.to_vec()),
        ..custody_ledger::verify::Options::default()
    };
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let verified = LedgerSource::DataDir(dir.to_path_buf()).verify(&options, &mut |ve| {
        let kind = EventKind::try_from(ve.entry.kind).map_or_else(
            |_| format!("kind {}", ve.entry.kind),
            |k| k.as_str_name().into(),
        );
        *by_kind.entry(kind).or_insert(0) += 1;
    })?;
    let r = verified.report;
    if let Some(problem) = r.problem {
        return Err(Error::Config(format!(
            "the hub's own ledger ({}) does not verify: {problem}",
            dir.display()
        )));
    }
    Ok(HubLedgerSummary {
        entries: r.entries,
        verify_message: format!("{} entries, {} checkpoints", r.entries, r.checkpoints),
        by_kind,
    })
}

fn findings(report: &mut HubReport) {
    let mut out = Vec::new();
    for f in &report.forks {
        out.push(HubFinding {
            kind: "fork-refused",
            site: f.site.clone(),
            detail: format!(
                "the hub refused a fork from {} at {} ({}): {}",
                f.site, f.position, f.kind, f.reason
            ),
        });
    }
    for c in &report.clones {
        let holders: Vec<String> = c
            .holders
            .iter()
            .map(|h| format!("{} entry {}", h.site, h.seq))
            .collect();
        out.push(HubFinding {
            kind: "cross-site-clone",
            site: String::new(),
            detail: format!(
                "{} {} certified at {}",
                c.kind,
                c.value,
                holders.join(" and ")
            ),
        });
    }
    for o in &report.orders {
        if o.over_quantity {
            out.push(HubFinding {
                kind: "over-quantity",
                site: String::new(),
                detail: format!(
                    "order {}: {} certified across sites, quantity {}",
                    o.order_id, o.certified, o.quantity
                ),
            });
        }
        for site in &o.over_allocation {
            out.push(HubFinding {
                kind: "over-allocation",
                site: site.clone(),
                detail: format!(
                    "order {}: {site} certified beyond its allocation",
                    o.order_id
                ),
            });
        }
        if o.terms_differ {
            out.push(HubFinding {
                kind: "terms-differ",
                site: String::new(),
                detail: format!("order {}: sites opened different signed terms", o.order_id),
            });
        }
    }
    for s in &report.sites {
        if s.cosigned.is_none() && s.mirror_entries > 0 {
            out.push(HubFinding {
                kind: "never-cosigned",
                site: s.site.clone(),
                detail: format!(
                    "{}: {} entries mirrored, none ever cosigned",
                    s.site, s.mirror_entries
                ),
            });
        }
        for (kind, n) in &s.audit.findings.counts {
            out.push(HubFinding {
                kind: "site-audit",
                site: s.site.clone(),
                detail: format!("{}: {n} × {kind:?} in its mirror's audit", s.site),
            });
        }
    }
    report.findings = out;
}

fn totals(report: &mut HubReport) {
    let t = &mut report.totals;
    t.sites = report.sites.len() as u64;
    for s in &report.sites {
        t.certified += s.certified;
        t.refused += s.refused.values().sum::<u64>();
        t.offline_certified += s.offline.offline_certified;
        t.offline_refused += s.offline.offline_refused;
        t.uncosigned_certified += s.offline.uncosigned_certified;
        if let Some(c) = &s.cosigned {
            t.oldest_cosignature_secs =
                Some(t.oldest_cosignature_secs.unwrap_or(0).max(c.age_secs));
        }
    }
    t.forks_refused = report.forks.len() as u64;
    t.cross_site_clones = report.clones.len() as u64;
}
