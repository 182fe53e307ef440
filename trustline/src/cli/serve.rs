//! `trustline serve ca|ledger|provisioner|all --data-dir DIR`: runs the
//! services (`site::serve`; the configuration is `site::config`). Prints one line
//! `listening <service> <addr>` on stdout per listener once it accepts
//! connections, and stops gracefully on SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use ca_service::Hsm;
use clap::{Args, ValueEnum};

use super::hsm_args::HsmArgs;
use super::Outcome;
use site::serve;
use site::setup;
use site::Config;

/// Which service(s) to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Which {
    /// The certificate authority alone.
    Ca,
    /// The custody ledger alone.
    Ledger,
    /// The provisioner alone (reaches the CA and the ledger over mTLS).
    Provisioner,
    /// All three in one process (embedded token and ledger under the data
    /// directory by default).
    All,
}

/// `trustline serve` arguments.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Which service(s) to run.
    #[arg(value_enum)]
    pub(crate) which: Which,
    /// The data directory (its layout: docs/operations.md).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// Prepare what is missing first: the CA in the HSM and the service PKI
    /// (server, admin, auditor certificates, and stations named with
    /// --station).
    #[arg(long)]
    pub(crate) init: bool,
    /// With --init: a station credential to issue, `site/name` (repeat).
    #[arg(long, value_name = "SITE/NAME")]
    pub(crate) station: Vec<String>,
    /// With --init: the factory site the CA intermediate is for.
    #[arg(long, default_value = "site-1")]
    pub(crate) site: String,
    /// The HSM.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
}

/// Runs `trustline serve`.
///
/// # Errors
/// Configuration, HSM, credential and listener errors.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(serve_main(args))
}

async fn serve_main(args: ServeArgs) -> anyhow::Result<Outcome> {
    transport::install_crypto_provider();
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = Config::load(dir)?;
    let hsm = match args.which {
        Which::Provisioner if !args.init => None,
        _ => Some(Hsm::open(&args.hsm.config(Some(dir))?).context("opening the HSM")?),
    };
    if args.init {
        if let Some(hsm) = &hsm {
            setup::init_ca(hsm, dir, &args.site)?;
            let stations = args
                .station
                .iter()
                .map(|s| {
                    s.split_once('/')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .with_context(|| format!("--station {s:?} is not site/name"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            setup::init_pki(hsm, dir, &stations)?;
        }
    }
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let announce = |service: &str, listener: &tokio::net::TcpListener| -> anyhow::Result<()> {
        let addr = listener.local_addr().context("listener address")?;
        println!("listening {service} {addr}");
        Ok(())
    };
    match (args.which, hsm) {
        (Which::Ca, Some(hsm)) => {
            let listener = serve::bind(&config.ca.listen).await?;
            announce("ca", &listener)?;
            serve::serve_ca(dir, &config, hsm, listener, shutdown).await?;
        }
        (Which::Ledger, Some(hsm)) => {
            let listener = serve::bind(&config.ledger.listen).await?;
            announce("ledger", &listener)?;
            serve::serve_ledger(dir, &config, &hsm, listener, shutdown).await?;
        }
        (Which::Provisioner, _) => {
            let listener = serve::bind(&config.provisioner.listen).await?;
            announce("provisioner", &listener)?;
            serve::serve_provisioner(dir, &config, listener, shutdown).await?;
        }
        (Which::All, Some(hsm)) => {
            let listener = serve::bind(&config.provisioner.listen).await?;
            announce("all", &listener)?;
            serve::serve_all(dir, &config, hsm, listener, shutdown).await?;
        }
        (_, None) => anyhow::bail!("no HSM opened"),
    }
    Ok(Outcome::Success)
}
