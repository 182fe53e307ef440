//! `trustline serve ca|ledger|provisioner|site|all|hub --data-dir DIR`: runs
//! the services (`site::serve`, `deploy::hub::serve`; the configuration is
//! `site::config`, `deploy::hub::HubSettings`). Prints one line `listening
//! <service> <addr>` on stdout per listener once it accepts connections,
//! and stops gracefully on SIGINT or SIGTERM.
//!
//! The HSM tokens are opened, and their PIN variables removed from the
//! environment, before the runtime starts any thread (issue 12.8): `serve
//! ca` opens the CA token, `serve ledger` the ledger token only, `serve
//! site|all` both, `serve hub` the hub's token, `serve provisioner` none.
//! With no HSM option at all `serve` stops and names the options; the
//! embedded SoftHSM2 tokens are used only with `--embedded-hsm`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ca_service::Hsm;
use clap::{Args, ValueEnum};

use super::hsm_args::{self, HsmArgs, LedgerHsmArgs};
use super::Outcome;
use site::serve;
use site::setup;
use site::Config;

/// Which service(s) to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Which {
    /// The certificate authority alone (the CA token).
    Ca,
    /// The custody ledger alone (the ledger token, nothing else).
    Ledger,
    /// The provisioner alone (reaches the CA and the ledger over mTLS).
    Provisioner,
    /// An enrolled factory site (`trustline site init` / `site install`):
    /// provisioner, CA and ledger in one process; its CA token holds the
    /// site intermediate only, its ledger token the checkpoint key only.
    Site,
    /// The single-box layout, for laptops and the demo: the same services
    /// as `site` in one process on a data directory that keeps every key —
    /// the OEM's root, order and voucher keys too — in one place (`--init`
    /// makes it). Not a factory layout.
    All,
    /// The OEM hub (`trustline hub init`): the witness and registry of
    /// every enrolled site, with the witness key on the hub's token.
    Hub,
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
    /// Prepare what is missing first (single-box layout): the CA in the
    /// HSM, the ledger's checkpoint key on the ledger token and the service
    /// PKI (server, admin, auditor certificates, and stations named with
    /// --station). Not for `site` and `hub`, which `trustline site
    /// init|install` and `trustline hub init` prepare.
    #[arg(long)]
    pub(crate) init: bool,
    /// With --init: a station credential to issue, `site/name` (repeat).
    #[arg(long, value_name = "SITE/NAME")]
    pub(crate) station: Vec<String>,
    /// With --init: the factory site the CA intermediate is for.
    #[arg(long, default_value = "site-1")]
    pub(crate) site: String,
    /// The ledger's PostgreSQL database (`postgres://…`, issue 14) for
    /// `ledger`, `all` and `site`, overriding `[ledger] database`; by
    /// default the segment files in the data directory.
    #[arg(long, value_name = "URL")]
    pub(crate) ledger: Option<String>,
    /// The CA's (or the hub's) HSM token.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
    /// The ledger's own token.
    #[command(flatten)]
    pub(crate) ledger_hsm: LedgerHsmArgs,
}

/// The tokens one `serve` opens.
struct Tokens {
    ca: Option<Hsm>,
    ledger: Option<Hsm>,
}

/// Opens exactly the tokens `which` (and `--init`) needs.
fn open_tokens(args: &ServeArgs) -> anyhow::Result<Tokens> {
    let dir = Some(args.data_dir.as_path());
    let ca = || -> anyhow::Result<Hsm> { hsm_args::open(&args.hsm.config(dir)?) };
    let ledger =
        || -> anyhow::Result<Hsm> { hsm_args::open(&args.ledger_hsm.config(&args.hsm, dir)?) };
    Ok(match args.which {
        Which::Ca | Which::Hub => Tokens {
            ca: Some(ca()?),
            ledger: None,
        },
        Which::Ledger => {
            if args.hsm.is_explicit() {
                bail!(
                    "serve ledger logs into the ledger token only: name it with \
                     --ledger-token-label and --ledger-pin-file/--ledger-pin-env (and \
                     --ledger-pkcs11-module), not --token-label/--pin-file/--pkcs11-module"
                );
            }
            Tokens {
                ca: None,
                ledger: Some(ledger()?),
            }
        }
        Which::Provisioner if !args.init => Tokens {
            ca: None,
            ledger: None,
        },
        Which::Provisioner | Which::Site | Which::All => Tokens {
            ca: Some(ca()?),
            ledger: Some(ledger()?),
        },
    })
}

/// The single-box preparation of `--init`.
fn init(args: &ServeArgs, tokens: &Tokens) -> anyhow::Result<()> {
    if matches!(args.which, Which::Site | Which::Hub) {
        bail!("`serve site|hub --init` does not exist: `trustline site init`/`site install` and `trustline hub init` prepare those directories");
    }
    let dir = &args.data_dir;
    if let Some(hsm) = &tokens.ca {
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
        setup::init_pki(hsm, dir, &args.site, &stations)?;
    }
    if let Some(ledger) = &tokens.ledger {
        setup::init_ledger_key(ledger, dir)?;
    }
    Ok(())
}

/// Runs `trustline serve`.
///
/// # Errors
/// Configuration, HSM, credential and listener errors.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    transport::install_crypto_provider();
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Before the runtime: PIN variables are removed once read, which must
    // happen while this is the only thread.
    let tokens = open_tokens(&args)?;
    if args.init {
        init(&args, &tokens)?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(serve_main(args, tokens))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn announce(service: &str, listener: &tokio::net::TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    println!("listening {service} {addr}");
    Ok(())
}

async fn serve_main(args: ServeArgs, tokens: Tokens) -> anyhow::Result<Outcome> {
    let dir = &args.data_dir;
    let shutdown = shutdown_signal();
    if args.which == Which::Hub {
        let settings = deploy::hub::HubSettings::load(dir)?;
        let listener = serve::bind(&settings.hub.listen).await?;
        announce("hub", &listener)?;
        let hsm = tokens.ca.context("no hub token opened")?;
        deploy::hub::serve(dir, &settings, &hsm, listener, shutdown).await?;
        return Ok(Outcome::Success);
    }
    let mut config = Config::load(dir)?;
    if let Some(url) = &args.ledger {
        config.ledger.database = url.clone();
    }
    match (args.which, tokens.ca, tokens.ledger) {
        (Which::Ca, Some(hsm), _) => {
            let listener = serve::bind(&config.ca.listen).await?;
            announce("ca", &listener)?;
            serve::serve_ca(dir, &config, hsm, listener, shutdown).await?;
        }
        (Which::Ledger, _, Some(ledger)) => {
            let listener = serve::bind(&config.ledger.listen).await?;
            announce("ledger", &listener)?;
            serve::serve_ledger(dir, &config, &ledger, listener, shutdown).await?;
        }
        (Which::Provisioner, _, _) => {
            let listener = serve::bind(&config.provisioner.listen).await?;
            announce("provisioner", &listener)?;
            serve::serve_provisioner(dir, &config, listener, shutdown).await?;
        }
        (Which::Site, Some(hsm), Some(ledger)) => {
            let listener = serve::bind(&config.provisioner.listen).await?;
            announce("site", &listener)?;
            serve::serve_site(dir, &config, hsm, ledger, listener, shutdown).await?;
        }
        (Which::All, Some(hsm), Some(ledger)) => {
            let listener = serve::bind(&config.provisioner.listen).await?;
            announce("all", &listener)?;
            serve::serve_all(dir, &config, hsm, ledger, listener, shutdown).await?;
        }
        _ => bail!("the HSM tokens this service needs were not opened"),
    }
    Ok(Outcome::Success)
}
