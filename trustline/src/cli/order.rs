//! `trustline order …`: the OEM's production orders (2.4.14.22).
//!
//! `order create` signs a `ProductionOrder` with the OEM order key in the
//! HSM (with `--fdo-rv`, an FDO block: [`super::fdo_args`]) and writes the
//! signed statement to a file; `order open` sends it to
//! the provisioner as an admin (`OpenOrder`); `order status` shows an
//! order's progress.

use std::path::PathBuf;

use anyhow::{bail, Context};
use ca_service::keys::KeyLabels;
use clap::{Args, Subcommand};
use prost::Message;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use super::hsm_args::HsmArgs;
use super::station::ClientArgs;
use super::Outcome;
use site::setup;

/// `trustline order` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum OrderCommand {
    /// Signs a production order with the OEM order key (HSM).
    Create(Box<CreateArgs>),
    /// Opens a signed order on the provisioner (as admin).
    Open(OpenArgs),
    /// Shows an order and how many devices it has certified.
    Status(StatusArgs),
}

/// `trustline order create` arguments.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The data directory (with --embedded-hsm, its embedded token holds the
    /// order key: the hub's, or a single box's).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The order id.
    #[arg(long)]
    pub(crate) id: String,
    /// The product.
    #[arg(long)]
    pub(crate) sku: String,
    /// The one site that may build it.
    #[arg(long)]
    pub(crate) site: String,
    /// The most devices it may certify.
    #[arg(long)]
    pub(crate) quantity: u64,
    /// Devices the site may certify beyond its last hub-cosigned
    /// checkpoint, e.g. while the hub is unreachable (2.4.14.20) [default:
    /// none named: only the quantity limits the site].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) offline_allowance: u64,
    /// Serial prefix.
    #[arg(long, default_value = "SN")]
    pub(crate) serial_prefix: String,
    /// First serial number.
    #[arg(long, default_value_t = 1)]
    pub(crate) first: u64,
    /// Last serial number [default: first + quantity - 1].
    #[arg(long)]
    pub(crate) last: Option<u64>,
    /// Zero-padded digits.
    #[arg(long, default_value_t = 8)]
    pub(crate) digits: u32,
    /// Days from now the order stays valid.
    #[arg(long, default_value_t = 30)]
    pub(crate) valid_days: u32,
    /// An allowed IC vendor (repeat for several).
    #[arg(long = "vendor", value_name = "NAME", required = true)]
    pub(crate) vendors: Vec<String>,
    /// SHA-256 (hex) of the only firmware image allowed.
    #[arg(long, value_name = "HEX")]
    pub(crate) firmware_sha256: String,
    /// Where to write the signed order.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// The FDO block (issue 17).
    #[command(flatten)]
    pub(crate) fdo: super::fdo_args::FdoArgs,
    /// The HSM.
    #[command(flatten)]
    pub(crate) hsm: HsmArgs,
}

/// `trustline order open` arguments.
#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    /// The signed order written by `order create`.
    #[arg(long, value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The provisioner and the admin's credentials.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `trustline order status` arguments.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The order id.
    #[arg(long)]
    pub(crate) id: String,
    /// The provisioner and the caller's credentials.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// Runs an `order` subcommand.
///
/// # Errors
/// HSM, I/O and RPC errors, with context.
pub(crate) fn run(command: OrderCommand) -> anyhow::Result<Outcome> {
    match command {
        OrderCommand::Create(args) => create(&args),
        OrderCommand::Open(args) => runtime()?.block_on(open(args)),
        OrderCommand::Status(args) => runtime()?.block_on(status(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the runtime")
}

fn create(args: &CreateArgs) -> anyhow::Result<Outcome> {
    let firmware = hex::decode(&args.firmware_sha256).context("--firmware-sha256 is not hex")?;
    if firmware.len() != 32 {
        bail!("--firmware-sha256 must be 32 bytes");
    }
    let now = backends::now_ms();
    let order = v1::ProductionOrder {
        order_id: args.id.clone(),
        sku: args.sku.clone(),
        site: args.site.clone(),
        quantity: args.quantity,
        offline_allowance: args.offline_allowance,
        serial_scheme: Some(v1::SerialScheme {
            prefix: args.serial_prefix.clone(),
            first: args.first,
            last: args
                .last
                .unwrap_or_else(|| args.first.saturating_add(args.quantity.saturating_sub(1))),
            digits: args.digits,
        }),
        not_before_ms: now - 60_000,
        not_after_ms: now + i64::from(args.valid_days) * 86_400_000,
        allowed_ic_vendors: args.vendors.clone(),
        allowed_firmware_sha256: firmware,
        fdo: args.fdo.block(&args.sku)?,
        ..Default::default()
    };
    let hsm = super::hsm_args::open(&args.hsm.config(args.data_dir.as_deref())?)?;
    let signer = hsm
        .signer(&KeyLabels::default().order)
        .context("the OEM order key (run `trustline hub init` or `trustline ca init` first)")?;
    let signed = trustline_proto::statement::sign(&signer, &order).context("signing the order")?;
    std::fs::write(&args.out, signed.encode_to_vec())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("signed order {} written to {}", args.id, args.out.display());
    Ok(Outcome::Success)
}

async fn open(args: OpenArgs) -> anyhow::Result<Outcome> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let signed = v1::SignedStatement::decode(bytes.as_slice()).context("not a signed order")?;
    let channel = args.client.connect(setup::ADMIN).await?;
    let response = ProvisioningClient::new(channel)
        .open_order(v1::OpenOrderRequest {
            signed_order: Some(signed),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    println!(
        "order {} opened (ledger entry {})",
        response.order_id, response.ledger_seq
    );
    Ok(Outcome::Success)
}

async fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let channel = args.client.connect(setup::ADMIN).await?;
    let status = ProvisioningClient::new(channel)
        .get_order(v1::GetOrderRequest { order_id: args.id })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let order = status.order.clone().unwrap_or_default();
    println!(
        "order {} sku {} site {}: {} of {} certified, {} remaining{}",
        order.order_id,
        order.sku,
        order.site,
        status.certified,
        order.quantity,
        status.remaining,
        if status.closed { " (closed)" } else { "" }
    );
    if let Some(line) = allowance_line(&status, backends::now_ms() / 1000) {
        println!("{line}");
    }
    Ok(Outcome::Success)
}

/// The offline allowance and the last cosignature's age, when the site has
/// a hub uplink (`OrderStatus` fields 5 to 8).
fn allowance_line(status: &v1::OrderStatus, now_secs: i64) -> Option<String> {
    let age = match status.last_cosignature_time {
        0 => "never cosigned by the hub".to_owned(),
        t => format!(
            "last hub cosignature {} s ago (tree size {})",
            now_secs
                .saturating_sub(i64::try_from(t).unwrap_or(i64::MAX))
                .max(0),
            status.last_cosigned_size
        ),
    };
    if status.allowance_applies {
        Some(format!(
            "offline allowance: {} left; {age}",
            status.allowance_left
        ))
    } else if status.last_cosignature_time > 0 {
        Some(format!("no offline allowance in the order; {age}"))
    } else {
        None
    }
}
