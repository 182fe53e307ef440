//! `trustline audit`: the OEM's audit of a custody ledger for
//! overproduction, clones, counterfeits and gaps (2.4.14.3, 2.4.14.4,
//! 2.4.14.22), the audit across sites of a stopped OEM hub's data
//! (`--hub-dir`, issue 13 item 5; 2.4.14.20), and `trustline audit synth`,
//! which writes a clean synthetic ledger of N entries to measure it on.
//!
//! Thin: the work is in [`audit`]. Exit codes: 0 no findings, 1
//! findings (a ledger that does not verify is the first and only one), 2
//! usage or I/O error — and, with `--hub-dir`, a store, mirror, cosignature
//! or hub ledger that does not verify (it fails closed).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use trustline_proto::v1::custody_ledger_client::CustodyLedgerClient;

use super::Outcome;
use audit::{self, render, AuditOptions, LedgerSource};

/// `trustline audit` arguments, or a helper subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditCommand {
    /// A helper instead of an audit.
    #[command(subcommand)]
    pub(crate) tool: Option<AuditTool>,
    /// The audit.
    #[command(flatten)]
    pub(crate) args: AuditArgs,
}

/// Helpers.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditTool {
    /// Writes a clean synthetic ledger (real keys and certificates, the
    /// line's payloads and constraints) to measure the audit on.
    Synth(SynthArgs),
}

/// `trustline audit synth` arguments.
#[derive(Debug, Args)]
pub(crate) struct SynthArgs {
    /// The data directory to create (`ledger/` and `ca/` inside).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Exactly this many entries.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) entries: u64,
    /// Instead of N entries, the small two-site scenario the tests use,
    /// clean or with planted anomalies (an over-quota certificate, a
    /// duplicate serial across sites, an unrecorded certificate among the
    /// field sightings in DIR/field).
    #[arg(long, value_enum)]
    pub(crate) scenario: Option<Scenario>,
    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

/// The small scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// No anomaly.
    Clean,
    /// The three planted anomalies.
    Planted,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For a terminal.
    Text,
    /// For tools.
    Json,
    /// One self-contained HTML file with charts.
    Html,
}

/// Where the ledger comes from.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub(crate) struct AuditSource {
    /// A data directory (its `ledger/` is read; the OEM keys default to its
    /// `ca/` files) or a ledger directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// An export file (`trustline ledger export`).
    #[arg(long, value_name = "FILE")]
    pub(crate) export: Option<PathBuf>,
    /// A running ledger service (`host:port`), read as the `auditor` role
    /// over mutual TLS; its latest signed checkpoint is audited.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) endpoint: Option<String>,
    /// A stopped OEM hub's data directory (or a copy): every site's mirror,
    /// cosignatures, registry, forks and clones, and the hub's own ledger
    /// (issue 13 item 5). The OEM keys and CA certificates default to the
    /// hub's `ca/` files and every enrolled site's intermediate. The store
    /// is read where `serve hub` keeps it: PostgreSQL when `hub.toml` (or
    /// TRUSTLINE_HUB_DATABASE) names a database.
    #[arg(long, value_name = "DIR")]
    pub(crate) hub_dir: Option<PathBuf>,
    /// A ledger in PostgreSQL (`postgres://…`, issue 14): exported to a
    /// snapshot from one consistent read, which is verified and audited.
    #[arg(long, value_name = "URL")]
    pub(crate) ledger: Option<String>,
}

/// `trustline audit` arguments.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The ledger.
    #[command(flatten)]
    pub(crate) source: AuditSource,
    /// The OEM order key (PEM public key) that every production order must
    /// be signed with [default with --data-dir: DIR/ca/order-key.pub.pem].
    #[arg(long, value_name = "PEM")]
    pub(crate) order_key: Option<PathBuf>,
    /// The ledger's checkpoint key (PEM) [default with --data-dir: the
    /// ledger's own ledger-key.pub.pem; with --endpoint: the key the service
    /// reports, with a warning]. Required with --export.
    #[arg(long, value_name = "PEM")]
    pub(crate) ledger_key: Option<PathBuf>,
    /// OEM CA certificates (PEM or DER; repeatable): the root and the site
    /// intermediates [default with --data-dir: DIR/ca/oem-root.pem and
    /// DIR/ca/site-intermediate.pem].
    #[arg(long = "ca-cert", value_name = "PEM")]
    pub(crate) ca_certs: Vec<PathBuf>,
    /// A checkpoint note kept from an earlier audit (repeatable): the
    /// ledger must still contain it with the same root.
    #[arg(long = "checkpoint", value_name = "NOTE_FILE")]
    pub(crate) checkpoints: Vec<PathBuf>,
    /// A directory of device certificates seen in the field or at
    /// onboarding (PEM or DER files, searched recursively).
    #[arg(long, value_name = "DIR")]
    pub(crate) field: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Claims this recent (before the last entry) count as in flight, not
    /// as gaps, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub(crate) in_flight_grace: u64,
    /// Certificate-checking threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub(crate) jobs: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Client certificate directory for --endpoint (`pki/` of a data
    /// directory: NAME.pem, NAME.key, service-ca.pem).
    #[arg(long, value_name = "DIR")]
    pub(crate) pki: Option<PathBuf>,
    /// Client certificate name in --pki (an `auditor` certificate).
    #[arg(long, value_name = "NAME", default_value = "auditor")]
    pub(crate) name: String,
    /// With --endpoint: keep the signed snapshot the audit ran on here.
    #[arg(long, value_name = "FILE")]
    pub(crate) save_snapshot: Option<PathBuf>,
    /// With --hub-dir: a batch of a site's entries that waited longer than
    /// this for its cosignature counts as produced during an outage,
    /// seconds (a batch holding an offline-allowance refusal always does).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) outage_after: u64,
}

/// Runs `trustline audit`.
///
/// # Errors
/// Usage and I/O errors; findings are an [`Outcome::Findings`].
pub(crate) fn run(command: AuditCommand) -> anyhow::Result<Outcome> {
    match command.tool {
        Some(AuditTool::Synth(args)) => synth(&args),
        None => audit(command.args),
    }
}

fn synth(args: &SynthArgs) -> anyhow::Result<Outcome> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("{} exists and is not empty", args.out.display());
    }
    if let Some(scenario) = args.scenario {
        let planted = scenario == Scenario::Planted;
        let plant = audit::synth::Plant {
            over_quota: planted,
            duplicate_serial: planted,
            unrecorded_in_field: planted,
        };
        let s = audit::synth::seed_scenario(&args.out, &plant)?;
        println!(
            "wrote {} entries to {}; field sightings in {}",
            s.entries,
            s.data_dir.display(),
            s.field_dir.display()
        );
        return Ok(Outcome::Success);
    }
    let made = audit::synth::generate(&args.out, args.entries, !args.no_progress)?;
    println!(
        "wrote {} entries ({} devices, {} orders) to {} in {:.1} s",
        made.entries,
        made.devices,
        made.orders,
        made.data_dir.display(),
        made.duration_ms as f64 / 1000.0
    );
    Ok(Outcome::Success)
}

fn read_spki(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let block = pem::parse(&text).with_context(|| format!("{} is not PEM", path.display()))?;
    if block.tag() != "PUBLIC KEY" {
        bail!(
            "{} holds a {}, not a PUBLIC KEY",
            path.display(),
            block.tag()
        );
    }
    Ok(block.into_contents())
}

fn audit(args: AuditArgs) -> anyhow::Result<Outcome> {
    if let Some(dir) = args.source.hub_dir.clone() {
        return audit_hub(&dir, &args);
    }
    let data_dir = args.source.data_dir.clone();
    let defaults = |name: &str| data_dir.as_ref().map(|d| d.join("ca").join(name));
    let order_key_path = args
        .order_key
        .clone()
        .or_else(|| defaults("order-key.pub.pem"))
        .context("--order-key is required (the OEM order public key, PEM)")?;
    let ca_paths = if args.ca_certs.is_empty() {
        match (defaults("oem-root.pem"), defaults("site-intermediate.pem")) {
            (Some(root), Some(intermediate)) => vec![intermediate, root],
            _ => bail!("--ca-cert is required (the OEM root and site intermediates)"),
        }
    } else {
        args.ca_certs.clone()
    };
    let mut ca_certificates = Vec::new();
    for p in &ca_paths {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let found = audit::certs::certificates_in(&bytes);
        if found.is_empty() {
            bail!("{} holds no certificate", p.display());
        }
        ca_certificates.extend(found);
    }
    let mut anchors = Vec::new();
    for p in &args.checkpoints {
        anchors
            .push(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?);
    }
    let ledger_key = args.ledger_key.as_deref().map(read_spki).transpose()?;
    let mut options = AuditOptions {
        order_key: read_spki(&order_key_path)?,
        ledger_key,
        ca_certificates,
        anchors,
        field_dir: args.field.clone(),
        in_flight_grace_ms: i64::try_from(args.in_flight_grace.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        progress: !args.no_progress,
        allow_unsigned_tail: false,
    };
    // Kept alive until the audit is done when the snapshot is temporary.
    let mut _temp_dir = None;
    let source = match (
        &args.source.data_dir,
        &args.source.export,
        &args.source.endpoint,
    ) {
        (None, None, None) if args.source.ledger.is_some() => {
            let url = args.source.ledger.clone().unwrap_or_default();
            if !pg_store::is_postgres_url(&url) {
                bail!("--ledger takes a postgres:// URL");
            }
            let path = match &args.save_snapshot {
                Some(p) => p.clone(),
                None => {
                    let dir = tempfile_dir()?;
                    let p = dir.join("snapshot.tlexport");
                    _temp_dir = Some(TempDir(dir));
                    p
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a runtime")?;
            runtime
                .block_on(pg_store::records::export(&url, &path))
                .with_context(|| format!("exporting {}", pg_store::db::redact(&url)))?;
            if options.ledger_key.is_none() {
                eprintln!(
                    "warning: no --ledger-key given; verifying with the key the database records (give the key you obtained independently)"
                );
                options.ledger_key = Some(
                    runtime
                        .block_on(pg_store::records::stored_key(&url))
                        .context("reading the ledger key")?,
                );
            }
            LedgerSource::Export(path)
        }
        (Some(dir), None, None) => LedgerSource::DataDir(dir.clone()),
        (None, Some(file), None) => {
            if options.ledger_key.is_none() {
                bail!("--ledger-key is required with --export");
            }
            LedgerSource::Export(file.clone())
        }
        (None, None, Some(endpoint)) => {
            let path = match &args.save_snapshot {
                Some(p) => p.clone(),
                None => {
                    let dir = tempfile_dir()?;
                    let p = dir.join("snapshot.tlexport");
                    _temp_dir = Some(TempDir(dir));
                    p
                }
            };
            let snapshot = fetch_snapshot(endpoint, &args, &path)?;
            if options.ledger_key.is_none() {
                eprintln!(
                    "warning: no --ledger-key given; verifying with the key the service reports (give the key you obtained independently)"
                );
                options.ledger_key = Some(snapshot.service_key.clone());
            }
            LedgerSource::Export(snapshot.path)
        }
        _ => bail!("give one of --data-dir, --export, --endpoint, --ledger or --hub-dir"),
    };
    let report = audit::run(&source, &options)?;
    let rendered = match args.format {
        Format::Text => render::text(&report),
        Format::Json => render::json(&report),
        Format::Html => render::html(&report),
    };
    emit(
        args.out.as_deref(),
        &rendered,
        || {
            format!(
                "{}: {} entries, {} finding(s)",
                report.ledger.source,
                report.ledger.entries,
                report.findings.total()
            )
        },
        report.has_findings(),
    )
}

/// Prints the rendered report, or writes it to `out` and says so on
/// stderr with `summary`; the outcome follows the findings.
fn emit(
    out: Option<&Path>,
    rendered: &str,
    summary: impl FnOnce() -> String,
    has_findings: bool,
) -> anyhow::Result<Outcome> {
    match out {
        Some(path) => {
            std::fs::write(path, rendered)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{}; report written to {}", summary(), path.display());
        }
        None => print!("{rendered}"),
    }
    Ok(if has_findings {
        Outcome::Findings
    } else {
        Outcome::Success
    })
}

fn read_certificates(paths: &[PathBuf], out: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let found = audit::certs::certificates_in(&bytes);
        if found.is_empty() {
            bail!("{} holds no certificate", p.display());
        }
        out.extend(found);
    }
    Ok(())
}

/// `trustline audit --hub-dir`: the audit across sites. Fails closed: a
/// store that cannot be read, a mirror, cosignature or hub ledger that does
/// not verify is an error (exit 2), never a note.
fn audit_hub(dir: &Path, args: &AuditArgs) -> anyhow::Result<Outcome> {
    if args.format == Format::Html {
        bail!("--hub-dir writes text or JSON (--format text|json)");
    }
    let options = hub_options(
        dir,
        &HubSources {
            ca_certs: &args.ca_certs,
            order_key: args.order_key.clone(),
            ledger_key: args.ledger_key.clone(),
        },
        HubLimits {
            in_flight_grace_secs: args.in_flight_grace,
            jobs: args.jobs,
            outage_after_secs: args.outage_after,
        },
    )?;
    let report = audit::hub::run(&options)?;
    let rendered = match args.format {
        Format::Json => audit::hub::json(&report),
        _ => audit::hub::text(&report),
    };
    emit(
        args.out.as_deref(),
        &rendered,
        || {
            format!(
                "hub {}: {} sites, {} finding(s)",
                dir.display(),
                report.sites.len(),
                report.findings.len()
            )
        },
        report.has_findings(),
    )
}

/// Where the keys of a hub audit come from (defaults: the hub directory's).
pub(crate) struct HubSources<'a> {
    pub(crate) ca_certs: &'a [PathBuf],
    pub(crate) order_key: Option<PathBuf>,
    pub(crate) ledger_key: Option<PathBuf>,
}

/// The thresholds of a hub audit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubLimits {
    pub(crate) in_flight_grace_secs: u64,
    pub(crate) jobs: Option<usize>,
    pub(crate) outage_after_secs: u64,
}

impl Default for HubLimits {
    /// `trustline audit`'s defaults.
    fn default() -> Self {
        Self {
            in_flight_grace_secs: 600,
            jobs: None,
            outage_after_secs: 60,
        }
    }
}

/// The audit of the hub in `dir` (`<hub>/hub.toml`, its enrolled sites,
/// witness key, CA and ledger key; its store in PostgreSQL when `hub.toml`
/// or `TRUSTLINE_HUB_DATABASE` names one, as `serve hub` reads it).
pub(crate) fn hub_options(
    dir: &Path,
    sources: &HubSources<'_>,
    limits: HubLimits,
) -> anyhow::Result<audit::hub::HubAuditOptions> {
    let registered = deploy::hub::registered_sites(dir)
        .with_context(|| format!("reading the sites enrolled at {}", dir.display()))?;
    if registered.is_empty() {
        bail!(
            "{} has no enrolled site ({}/*.toml)",
            dir.display(),
            dir.join(deploy::hub::SITES_DIR).display()
        );
    }
    let mut sites = Vec::new();
    let mut ca_certificates = Vec::new();
    for r in &registered {
        sites.push(r.config()?);
        if sources.ca_certs.is_empty() {
            ca_certificates.extend(audit::certs::certificates_in(r.intermediate_pem.as_bytes()));
        }
    }
    if sources.ca_certs.is_empty() {
        read_certificates(&[dir.join("ca").join("oem-root.pem")], &mut ca_certificates)?;
    } else {
        read_certificates(sources.ca_certs, &mut ca_certificates)?;
    }
    let order_key = sources
        .order_key
        .clone()
        .unwrap_or_else(|| dir.join("ca").join("order-key.pub.pem"));
    let vkey_path = dir.join(deploy::hub::WITNESS_VKEY_FILE);
    let vkey = std::fs::read_to_string(&vkey_path)
        .with_context(|| format!("reading {}", vkey_path.display()))?;
    let witness = trustline_proto::cosignature::WitnessKey::from_verifier_key(vkey.trim())
        .with_context(|| format!("{} is not a witness verifier key", vkey_path.display()))?;
    let hub_ledger_key = sources
        .ledger_key
        .clone()
        .unwrap_or_else(|| dir.join("ledger").join("ledger-key.pub.pem"));
    // The store `serve hub` uses: PostgreSQL when `hub.toml` names one.
    let settings = deploy::hub::HubSettings::load(dir).with_context(|| {
        format!(
            "reading {}",
            dir.join(deploy::hub::HUB_CONFIG_FILE).display()
        )
    })?;
    let store_database = (!settings.hub.database.is_empty()).then(|| settings.hub.database.clone());
    Ok(audit::hub::HubAuditOptions {
        store_dir: dir.join(deploy::hub::STORE_DIR),
        store_database,
        sites,
        witness,
        hub_ledger: Some((dir.to_path_buf(), read_spki(&hub_ledger_key)?)),
        site: AuditOptions {
            order_key: read_spki(&order_key)?,
            ca_certificates,
            in_flight_grace_ms: i64::try_from(limits.in_flight_grace_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            jobs: limits
                .jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
            ..AuditOptions::default()
        },
        outage_after_secs: limits.outage_after_secs,
        now_ms: backends::now_ms(),
    })
}

fn fetch_snapshot(
    endpoint: &str,
    args: &AuditArgs,
    out: &Path,
) -> anyhow::Result<audit::source::Snapshot> {
    let pki = args
        .pki
        .clone()
        .or_else(|| args.source.data_dir.as_ref().map(|d| d.join("pki")))
        .context(
            "--pki is required with --endpoint (the directory holding the auditor certificate)",
        )?;
    let tls =
        transport::ClientTls::from_files(&transport::CredentialPaths::in_dir(&pki, &args.name))
            .with_context(|| {
                format!(
                    "loading client certificate {:?} from {}",
                    args.name,
                    pki.display()
                )
            })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let bar = audit::progress_bar(!args.no_progress, None, "fetching the signed ledger");
    let snapshot = runtime.block_on(async {
        let channel = tls.connect(endpoint).await?;
        let mut client = CustodyLedgerClient::new(channel).max_decoding_message_size(4 << 20);
        let snapshot = audit::source::snapshot(&mut client, out, &|n| bar.set_position(n)).await?;
        anyhow::Ok(snapshot)
    })?;
    bar.finish_and_clear();
    Ok(snapshot)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..16u32 {
        let dir = base.join(format!("trustline-audit-{}-{attempt}", std::process::id()));
        if std::fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    bail!("cannot create a temporary directory in {}", base.display())
}
