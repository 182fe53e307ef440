//! `trustline evidence --class N`: the assurance questionnaire rows for
//! 2.4.14, 2.4.16 and the identity and key rows, answered for this
//! production system at class N, with live evidence from a ledger when one
//! is given (the ledger is verified now). Thin: the work is in
//! [`audit::evidence`].

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::Outcome;
use audit::evidence;
use audit::LedgerSource;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Comma-separated values (RFC 4180).
    Csv,
    /// JSON with every part as a field.
    Json,
    /// A Markdown table.
    Md,
}

/// `trustline evidence` arguments.
#[derive(Debug, Args)]
pub(crate) struct EvidenceArgs {
    /// The assurance class, 0 to 4 ("Mandatory for Class N and above"
    /// applies to classes N..4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=4))]
    pub(crate) class: u8,
    /// A data directory whose ledger supplies live evidence.
    #[arg(long, value_name = "DIR", conflicts_with = "export")]
    pub(crate) data_dir: Option<PathBuf>,
    /// An export file that supplies live evidence (needs --ledger-key).
    #[arg(long, value_name = "FILE")]
    pub(crate) export: Option<PathBuf>,
    /// The ledger's checkpoint key (PEM) [default with --data-dir: the
    /// ledger's own ledger-key.pub.pem].
    #[arg(long, value_name = "PEM")]
    pub(crate) ledger_key: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub(crate) format: Format,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

/// Runs `trustline evidence`. Exits 1 when the given ledger does not verify
/// (the questionnaire is still written, saying so).
///
/// # Errors
/// Usage and I/O errors.
pub(crate) fn run(args: EvidenceArgs) -> anyhow::Result<Outcome> {
    let ledger_key = match &args.ledger_key {
        Some(p) => {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let block = pem::parse(&text).with_context(|| format!("{} is not PEM", p.display()))?;
            Some(block.into_contents())
        }
        None => None,
    };
    let source = match (&args.data_dir, &args.export) {
        (Some(dir), _) => Some(LedgerSource::DataDir(dir.clone())),
        (None, Some(file)) => {
            if ledger_key.is_none() {
                bail!("--ledger-key is required with --export");
            }
            Some(LedgerSource::Export(file.clone()))
        }
        (None, None) => None,
    };
    let live = source
        .map(|s| evidence::live::collect(&s, ledger_key))
        .transpose()?;
    let verified = live.as_ref().is_none_or(|l| l.verified);
    let e = evidence::build(args.class, live);
    let text = match args.format {
        Format::Csv => evidence::csv(&e),
        Format::Json => evidence::json(&e),
        Format::Md => evidence::markdown(&e),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(if verified {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}
