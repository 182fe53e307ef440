//! `trustline ledger …`: the custody ledger offline — verify, export, prove,
//! show a device's history (2.4.14.3, 2.4.14.12). Thin: the work is in
//! `custody_ledger::{verify, export, merkle}`; this module parses
//! arguments and prints.
//!
//! Every subcommand reads the stored records only (a data directory, an
//! export, or a PostgreSQL ledger database with `--ledger postgres://…`),
//! never a running service, and trusts nothing it has not verified: `proof`
//! and `history` run the full verifier first and prove against the latest
//! checkpoint it checked. Exit codes: 0 verified, 1 a problem was found
//! (the first bad entry is named), 2 usage or I/O error.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use custody_ledger::merkle::Hash;
use custody_ledger::storage::FileStorage;
use custody_ledger::verify::{self, Options, Report, Verified, VerifiedEntry};
use serde_json::json;

use super::Outcome;
use backends::layout::LEDGER_DIR;

/// `trustline ledger` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// Recomputes the chain, the Merkle tree, every device chain, unique
    /// keys and quotas, and checks every checkpoint signature and their
    /// consistency; exits 1 naming the first bad entry.
    Verify(VerifyArgs),
    /// Writes a self-contained export (entries, checkpoints, key, trailer).
    Export(ExportArgs),
    /// The inclusion proof of one entry against the latest checkpoint.
    Proof(ProofArgs),
    /// Every entry of one device, each with its inclusion proof.
    History(HistoryArgs),
    /// Moves a stopped site's file ledger into an empty PostgreSQL
    /// database, then verifies the result against the files.
    Migrate(MigrateArgs),
}

/// Where the ledger is read from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct SourceArgs {
    /// A data directory (its `ledger/` is read) or a ledger directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// An export file (`trustline ledger export`).
    #[arg(long, value_name = "FILE")]
    pub(crate) export: Option<PathBuf>,
    /// A ledger in PostgreSQL (`postgres://…`).
    #[arg(long, value_name = "URL")]
    pub(crate) ledger: Option<String>,
}

/// What to verify against.
#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    /// The ledger's checkpoint public key (PEM). Required with --export;
    /// with --data-dir it defaults to the directory's own ledger-key.pub.pem
    /// (an auditor should pass the key they obtained independently).
    #[arg(long, value_name = "PEM")]
    pub(crate) key: Option<PathBuf>,
    /// The expected checkpoint origin [default: the first checkpoint's].
    #[arg(long)]
    pub(crate) origin: Option<String>,
    /// A signed checkpoint note kept from earlier (repeatable): the ledger
    /// must still contain it, with the same root.
    #[arg(long = "checkpoint", value_name = "NOTE_FILE")]
    pub(crate) checkpoints: Vec<PathBuf>,
    /// Accept entries that no signed checkpoint covers (e.g. a running
    /// ledger's last moments) instead of failing; the report counts them.
    #[arg(long)]
    pub(crate) allow_unsigned: bool,
}

/// `trustline ledger verify` arguments.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The ledger.
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The trust anchors.
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline ledger export` arguments.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The data directory.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "ledger",
        conflicts_with = "ledger"
    )]
    pub(crate) data_dir: Option<PathBuf>,
    /// A ledger in PostgreSQL (`postgres://…`).
    #[arg(long, value_name = "URL")]
    pub(crate) ledger: Option<String>,
    /// The export file to write.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline ledger proof` arguments.
#[derive(Debug, Args)]
pub(crate) struct ProofArgs {
    /// The ledger.
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The trust anchors.
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    /// The entry's sequence number.
    #[arg(long)]
    pub(crate) seq: u64,
    /// Print the proof as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline ledger history` arguments.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The ledger.
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The trust anchors.
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    /// The device's rot_id (64 hex characters).
    #[arg(long)]
    pub(crate) rot_id: String,
    /// Print the history as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `trustline ledger migrate` arguments.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The site's data directory (its `ledger/`) or ledger directory; the
    /// site must be stopped.
    #[arg(long, value_name = "DIR")]
    pub(crate) from: PathBuf,
    /// The empty PostgreSQL database (`postgres://…`).
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A runtime for the PostgreSQL calls of a synchronous command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn postgres_url(url: &str) -> anyhow::Result<&str> {
    if !pg_store::is_postgres_url(url) {
        bail!("--ledger takes a postgres:// URL");
    }
    Ok(url)
}

/// Runs a `ledger` subcommand.
///
/// # Errors
/// Usage and I/O errors; problems in the data are an [`Outcome::Findings`].
pub(crate) fn run(command: LedgerCommand) -> anyhow::Result<Outcome> {
    let stdout = std::io::stdout();
    let mut out = QuietPipe::new(BufWriter::new(stdout.lock()));
    let outcome = match command {
        LedgerCommand::Verify(a) => verify_cmd(&a, &mut out),
        LedgerCommand::Export(a) => export_cmd(&a, &mut out),
        LedgerCommand::Proof(a) => proof_cmd(&a, &mut out),
        LedgerCommand::History(a) => history_cmd(&a, &mut out),
        LedgerCommand::Migrate(a) => migrate_cmd(&a, &mut out),
    }?;
    out.flush().context("writing to standard output")?;
    Ok(outcome)
}

mod pipe;
mod proofs;

pub(crate) use pipe::QuietPipe;
use proofs::{history_cmd, proof_cmd};

pub(super) fn ledger_dir(dir: &Path) -> PathBuf {
    let inner = dir.join(LEDGER_DIR);
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

pub(super) fn options(source: &SourceArgs, trust: &TrustArgs) -> anyhow::Result<Options> {
    let key = match &trust.key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                custody_ledger::checkpoint::spki_from_pem(&pem)
                    .with_context(|| path.display().to_string())?,
            )
        }
        None if source.export.is_some() => bail!("--key is required with --export"),
        None => None,
    };
    let anchors = trust
        .checkpoints
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Options {
        key,
        origin: trust.origin.clone(),
        anchors,
        allow_unsigned_tail: trust.allow_unsigned,
        // `proof` and `history` prove from the recomputed tree.
        keep_tree: true,
    })
}

/// Runs the verifier over the source with a progress spinner.
pub(super) fn run_verifier(
    source: &SourceArgs,
    trust: &TrustArgs,
    quiet: bool,
    visit: &mut dyn FnMut(&VerifiedEntry<'_>),
) -> anyhow::Result<Verified> {
    let opts = options(source, trust)?;
    let bar = (!quiet).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b.set_message("verifying");
        b
    });
    let mut count = 0u64;
    let mut tick = |e: &VerifiedEntry<'_>| {
        count += 1;
        if count.is_multiple_of(65_536) {
            if let Some(b) = &bar {
                b.set_message(format!("verified {count} entries"));
            }
        }
        visit(e);
    };
    let verified = match (&source.data_dir, &source.export) {
        (None, None) if source.ledger.is_some() => {
            let url = postgres_url(source.ledger.as_deref().unwrap_or_default())?;
            runtime()?
                .block_on(pg_store::records::verify(url, &opts, &mut tick))
                .with_context(|| format!("verifying {}", pg_store::db::redact(url)))?
        }
        (Some(dir), _) => {
            let dir = ledger_dir(dir);
            let storage =
                FileStorage::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            verify::verify_dir(&storage, &opts, &mut tick)
                .with_context(|| format!("verifying {}", dir.display()))?
        }
        (None, Some(path)) => verify::verify_export(path, &opts, &mut tick)
            .with_context(|| format!("verifying {}", path.display()))?,
        (None, None) => bail!("give --data-dir, --export or --ledger"),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(verified)
}

pub(super) fn hex32(h: &Hash) -> String {
    hex::encode(h)
}

pub(super) fn report_json(r: &Report, seconds: f64) -> serde_json::Value {
    json!({
        "ok": r.is_ok(),
        "entries": r.entries,
        "checkpoints": r.checkpoints,
        "latest_checkpoint_size": r.latest_checkpoint.as_ref().map(|c| c.size),
        "uncovered_entries": r.uncovered,
        "root": hex32(&r.root),
        "head": hex32(&r.head),
        "devices": r.devices,
        "unique_keys": r.unique_keys,
        "quotas": r.quotas,
        "anchors": r.anchors,
        "seconds": seconds,
        "problem": r.problem.as_ref().map(|p| json!({
            "seq": p.seq,
            "location": p.location,
            "what": p.what,
            "message": p.to_string(),
        })),
    })
}

pub(super) fn verify_cmd(a: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let v = run_verifier(&a.source, &a.trust, a.json, &mut |_| {})?;
    let seconds = start.elapsed().as_secs_f64();
    let r = &v.report;
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report_json(r, seconds))?
        )?;
    } else if let Some(p) = &r.problem {
        writeln!(
            out,
            "ledger verification FAILED after {} good entries",
            r.entries
        )?;
        writeln!(out, "first problem: {p}")?;
    } else {
        writeln!(
            out,
            "ledger verified: {} entries, {} checkpoints (latest covers {}), {} devices, {} unique keys, in {seconds:.2} s",
            r.entries,
            r.checkpoints,
            r.latest_checkpoint.as_ref().map_or(0, |c| c.size),
            r.devices,
            r.unique_keys
        )?;
        writeln!(out, "root {}  head {}", hex32(&r.root), hex32(&r.head))?;
        for (counter, used) in &r.quotas {
            writeln!(out, "quota {counter}: {used}")?;
        }
        if r.uncovered > 0 {
            writeln!(
                out,
                "note (--allow-unsigned): the last {} entries are covered by no signed checkpoint",
                r.uncovered
            )?;
        }
        if a.trust.key.is_none() && a.source.data_dir.is_some() {
            writeln!(out, "note: checked with the directory's own ledger-key.pub.pem; pass --key to use one you trust")?;
        }
        if a.trust.key.is_none() && a.source.ledger.is_some() {
            writeln!(out, "note: checked with the key recorded in the database; pass --key to use one you trust")?;
        }
    }
    Ok(if r.is_ok() {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}

pub(super) fn export_cmd(a: &ExportArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let s = match (&a.data_dir, &a.ledger) {
        (Some(dir), _) => {
            let dir = ledger_dir(dir);
            let storage =
                FileStorage::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            custody_ledger::export::export(&storage, &a.out)
                .with_context(|| format!("exporting {}", dir.display()))?
        }
        (None, Some(url)) => {
            let url = postgres_url(url)?;
            runtime()?
                .block_on(pg_store::records::export(url, &a.out))
                .with_context(|| format!("exporting {}", pg_store::db::redact(url)))?
        }
        (None, None) => bail!("give --data-dir or --ledger"),
    };
    if a.json {
        let v = json!({
            "out": a.out.display().to_string(),
            "entries": s.entries,
            "checkpoints": s.checkpoints,
            "head": hex32(&s.head),
            "bytes": s.bytes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "exported {} entries and {} checkpoints ({} bytes) to {}",
            s.entries,
            s.checkpoints,
            s.bytes,
            a.out.display()
        )?;
    }
    Ok(Outcome::Success)
}

pub(super) fn migrate_cmd(a: &MigrateArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let dir = ledger_dir(&a.from);
    let url = postgres_url(&a.to)?;
    let s = runtime()?
        .block_on(pg_store::records::import_dir(&dir, url))
        .with_context(|| {
            format!(
                "moving {} into {}",
                dir.display(),
                pg_store::db::redact(url)
            )
        })?;
    if a.json {
        let v = json!({
            "entries": s.entries,
            "checkpoints": s.checkpoints,
            "root": hex32(&s.root),
            "head": hex32(&s.head),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "moved {} entries and {} checkpoints into {}; verified: root {} head {}",
            s.entries,
            s.checkpoints,
            pg_store::db::redact(url),
            hex32(&s.root),
            hex32(&s.head)
        )?;
    }
    Ok(Outcome::Success)
}
