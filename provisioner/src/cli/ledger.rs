//! `trustline ledger …`: the custody ledger offline — verify, export, prove,
//! show a device's history (2.4.14.3, 2.4.14.12). Thin: the work is in
//! `custody_ledger::{verify, export, merkle}`; this module parses
//! arguments and prints.
//!
//! Every subcommand reads the files only (a data directory or an export),
//! never a running service, and trusts nothing it has not verified: `proof`
//! and `history` run the full verifier first and prove against the latest
//! checkpoint it checked. Exit codes: 0 verified, 1 a problem was found
//! (the first bad entry is named), 2 usage or I/O error.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Subcommand};
use custody_ledger::merkle::{self, Hash};
use custody_ledger::storage::FileStorage;
use custody_ledger::verify::{self, Options, Report, Verified, VerifiedEntry};
use serde_json::json;

use super::Outcome;

/// The ledger directory inside a data directory.
const LEDGER_DIR: &str = "ledger";

/// `trustline ledger` subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
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
}

/// Where the ledger is read from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// A data directory (its `ledger/` is read) or a ledger directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// An export file (`trustline ledger export`).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

/// What to verify against.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The ledger's checkpoint public key (PEM). Required with --export;
    /// with --data-dir it defaults to the directory's own ledger-key.pub.pem
    /// (an auditor should pass the key they obtained independently).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// The expected checkpoint origin [default: the first checkpoint's].
    #[arg(long)]
    pub origin: Option<String>,
    /// A signed checkpoint note kept from earlier (repeatable): the ledger
    /// must still contain it, with the same root.
    #[arg(long = "checkpoint", value_name = "NOTE_FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// Accept entries that no signed checkpoint covers (e.g. a running
    /// ledger's last moments) instead of failing; the report counts them.
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// `trustline ledger verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The ledger.
    #[command(flatten)]
    pub source: SourceArgs,
    /// The trust anchors.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `trustline ledger export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The export file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `trustline ledger proof` arguments.
#[derive(Debug, Args)]
pub struct ProofArgs {
    /// The ledger.
    #[command(flatten)]
    pub source: SourceArgs,
    /// The trust anchors.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The entry's sequence number.
    #[arg(long)]
    pub seq: u64,
    /// Print the proof as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `trustline ledger history` arguments.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The ledger.
    #[command(flatten)]
    pub source: SourceArgs,
    /// The trust anchors.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The device's rot_id (64 hex characters).
    #[arg(long)]
    pub rot_id: String,
    /// Print the history as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `ledger` subcommand.
///
/// # Errors
/// Usage and I/O errors; problems in the data are an [`Outcome::Findings`].
pub fn run(command: LedgerCommand) -> anyhow::Result<Outcome> {
    let stdout = std::io::stdout();
    let mut out = QuietPipe::new(BufWriter::new(stdout.lock()));
    let outcome = match command {
        LedgerCommand::Verify(a) => verify_cmd(&a, &mut out),
        LedgerCommand::Export(a) => export_cmd(&a, &mut out),
        LedgerCommand::Proof(a) => proof_cmd(&a, &mut out),
        LedgerCommand::History(a) => history_cmd(&a, &mut out),
    }?;
    out.flush().context("writing to standard output")?;
    Ok(outcome)
}

/// Standard output as the `ledger` subcommands write it: one lock for the
/// whole command, and a reader that goes away early (`… | head`) is not an
/// error. The first `BrokenPipe` closes the writer quietly: the rest of the
/// output is discarded and the command ends with its own outcome (the
/// verification it already did still decides the exit code). Every other
/// write error is returned.
pub(crate) struct QuietPipe<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> QuietPipe<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            closed: false,
        }
    }

    /// Whether the reader went away.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    fn quiet<T>(&mut self, r: io::Result<T>, discarded: T) -> io::Result<T> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(discarded)
            }
            other => other,
        }
    }
}

impl<W: Write> Write for QuietPipe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.quiet(r, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.quiet(r, ())
    }
}

fn ledger_dir(dir: &Path) -> PathBuf {
    let inner = dir.join(LEDGER_DIR);
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

fn options(source: &SourceArgs, trust: &TrustArgs) -> anyhow::Result<Options> {
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
fn run_verifier(
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
        (Some(dir), _) => {
            let dir = ledger_dir(dir);
            let storage =
                FileStorage::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            verify::verify_dir(&storage, &opts, &mut tick)
                .with_context(|| format!("verifying {}", dir.display()))?
        }
        (None, Some(path)) => verify::verify_export(path, &opts, &mut tick)
            .with_context(|| format!("verifying {}", path.display()))?,
        (None, None) => bail!("give --data-dir or --export"),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(verified)
}

fn hex32(h: &Hash) -> String {
    hex::encode(h)
}

fn report_json(r: &Report, seconds: f64) -> serde_json::Value {
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

fn verify_cmd(a: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
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
    }
    Ok(if r.is_ok() {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}

fn export_cmd(a: &ExportArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let dir = ledger_dir(&a.data_dir);
    let storage = FileStorage::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let s = custody_ledger::export::export(&storage, &a.out)
        .with_context(|| format!("exporting {}", dir.display()))?;
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

/// Refuses to prove anything from a ledger that does not verify.
fn require_ok(v: &Verified, json: bool, out: &mut dyn Write) -> io::Result<Option<Outcome>> {
    let Some(p) = v.report.problem.as_ref() else {
        return Ok(None);
    };
    if json {
        writeln!(out, "{}", json!({ "ok": false, "problem": p.to_string() }))?;
    } else {
        writeln!(
            out,
            "the ledger does not verify, so nothing is proven from it: {p}"
        )?;
    }
    Ok(Some(Outcome::Findings))
}

fn proof_cmd(a: &ProofArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut entry = None;
    let v = run_verifier(&a.source, &a.trust, a.json, &mut |e| {
        if e.seq == a.seq {
            entry = Some((e.bytes.to_vec(), e.leaf));
        }
    })?;
    if let Some(o) = require_ok(&v, a.json, out)? {
        return Ok(o);
    }
    let Some(cp) = &v.report.latest_checkpoint else {
        bail!("the ledger has no checkpoint yet");
    };
    let Some((bytes, leaf)) = entry else {
        bail!(
            "entry {} does not exist (the ledger has {} entries)",
            a.seq,
            v.report.entries
        );
    };
    if a.seq >= cp.size {
        bail!(
            "entry {} is not yet covered by a checkpoint (the latest covers {})",
            a.seq,
            cp.size
        );
    }
    let proof = merkle::inclusion_proof(&v.tree, a.seq, cp.size)?;
    merkle::verify_inclusion(&leaf, &proof, &cp.root)?;
    let path: Vec<String> = proof.path.iter().map(hex32).collect();
    if a.json {
        let doc = json!({
            "seq": a.seq,
            "entry": B64.encode(&bytes),
            "leaf_hash": hex32(&leaf),
            "tree_size": proof.tree_size,
            "root": hex32(&cp.root),
            "path": path,
            "checkpoint": cp.note,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "entry {} leaf {}", a.seq, hex32(&leaf))?;
        writeln!(
            out,
            "included in the tree of {} entries, root {}",
            proof.tree_size,
            hex32(&cp.root)
        )?;
        for (i, h) in path.iter().enumerate() {
            writeln!(out, "  path[{i}] {h}")?;
        }
        write!(out, "{}", cp.note)?;
    }
    Ok(Outcome::Success)
}

fn history_cmd(a: &HistoryArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if !trustline_proto::identity::is_well_formed_rot_id(&a.rot_id) {
        bail!("--rot-id must be 64 lowercase hex characters");
    }
    let mut entries = Vec::new();
    let v = run_verifier(&a.source, &a.trust, a.json, &mut |e| {
        if e.entry.rot_id == a.rot_id {
            entries.push((e.seq, e.leaf, e.entry.clone(), e.bytes.to_vec()));
        }
    })?;
    if let Some(o) = require_ok(&v, a.json, out)? {
        return Ok(o);
    }
    let cp = v.report.latest_checkpoint.clone();
    let mut items = Vec::new();
    for (seq, leaf, e, bytes) in &entries {
        let proof = match &cp {
            Some(cp) if *seq < cp.size => {
                let p = merkle::inclusion_proof(&v.tree, *seq, cp.size)?;
                merkle::verify_inclusion(leaf, &p, &cp.root)?;
                Some(p)
            }
            _ => None,
        };
        let kind = trustline_proto::v1::EventKind::try_from(e.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("EVENT_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| e.kind.to_string());
        items.push((seq, leaf, e, bytes, kind, proof));
    }
    if a.json {
        let list: Vec<_> = items
            .iter()
            .map(|(seq, leaf, e, bytes, kind, proof)| {
                json!({
                    "seq": seq,
                    "kind": kind,
                    "time_ms": e.time_ms,
                    "serial": e.serial,
                    "site": e.site,
                    "actor": e.actor,
                    "order_id": e.order_id,
                    "leaf_hash": hex32(leaf),
                    "entry": B64.encode(bytes),
                    "proof": proof.as_ref().map(|p| p.path.iter().map(hex32).collect::<Vec<_>>()),
                })
            })
            .collect();
        let doc = json!({
            "rot_id": a.rot_id,
            "checkpoint": cp.as_ref().map(|c| json!({ "size": c.size, "root": hex32(&c.root), "note": c.note })),
            "entries": list,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "device {}: {} entries", a.rot_id, items.len())?;
        for (seq, _, e, _, kind, proof) in &items {
            let proven = match proof {
                Some(p) => format!(
                    "proven against checkpoint {} ({} hashes)",
                    p.tree_size,
                    p.path.len()
                ),
                None => "not yet covered by a checkpoint".to_string(),
            };
            writeln!(
                out,
                "  #{seq:<8} {kind:<22} t={} site={} actor={} serial={} order={} — {proven}",
                e.time_ms, e.site, e.actor, e.serial, e.order_id
            )?;
        }
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    /// A reader that has gone away after `room` bytes.
    struct ClosedAfter {
        room: usize,
        got: Vec<u8>,
        kind: io::ErrorKind,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            Ok(())
        }
    }

    #[test]
    fn a_broken_pipe_ends_the_output_quietly() {
        let mut out = QuietPipe::new(ClosedAfter {
            room: 10,
            got: Vec::new(),
            kind: io::ErrorKind::BrokenPipe,
        });
        for i in 0..100 {
            writeln!(out, "line {i}").unwrap();
        }
        out.flush().unwrap();
        assert!(out.is_closed());
        assert_eq!(out.inner.got, b"line 0\nlin");
    }

    #[test]
    fn other_write_errors_are_reported() {
        let mut out = QuietPipe::new(ClosedAfter {
            room: 0,
            got: Vec::new(),
            kind: io::ErrorKind::StorageFull,
        });
        let err = writeln!(out, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(!out.is_closed());
    }
}
