//! `trustline order …`: the OEM's production orders (2.4.14.22).
//!
//! `order create` signs a `ProductionOrder` with the OEM order key in the
//! HSM (with `--fdo-rv`, an FDO block: [`super::fdo_args`]) and writes the
//! signed statement to a file; `order open` sends it to
//! the provisioner as an admin (`OpenOrder`); `order status` shows an
//! order's progress and the calling site's share of it.
//!
//! `--allocation SITE=N[:ALLOWANCE]` (repeatable, instead of `--site`)
//! splits the order across sites (issue 13 item 3; 2.4.14.22, invariant
//! 4): each site may certify at most its `N` and `ALLOWANCE` beyond its
//! last hub-cosigned checkpoint; the provisioner refuses allocations that
//! sum above `--quantity`.

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
    #[arg(long, required_unless_present = "allocations")]
    pub(crate) site: Option<String>,
    /// A site's share of an order split across sites, `SITE=N` or
    /// `SITE=N:ALLOWANCE` (its offline allowance; repeat per site; instead
    /// of --site and --offline-allowance; 2.4.14.22).
    #[arg(
        long = "allocation",
        value_name = "SITE=N[:ALLOWANCE]",
        value_parser = parse_allocation,
        conflicts_with_all = ["site", "offline_allowance"]
    )]
    pub(crate) allocations: Vec<v1::SiteAllocation>,
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
        site: args.site.clone().unwrap_or_default(),
        quantity: args.quantity,
        offline_allowance: args.offline_allowance,
        allocations: args.allocations.clone(),
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
    if let Some(line) = share_line(&status) {
        println!("{line}");
    }
    if let Some(line) = allowance_line(&status, backends::now_ms() / 1000) {
        println!("{line}");
    }
    Ok(Outcome::Success)
}

/// `SITE=N[:ALLOWANCE]`, one `--allocation`.
fn parse_allocation(s: &str) -> Result<v1::SiteAllocation, String> {
    let (site, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SITE=N[:ALLOWANCE]"))?;
    let (quantity, allowance) = rest.split_once(':').unwrap_or((rest, "0"));
    let number = |what: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|e| format!("{what} {v:?} in {s:?}: {e}"))
    };
    if site.is_empty() {
        return Err(format!("{s:?} names no site"));
    }
    Ok(v1::SiteAllocation {
        site: site.to_owned(),
        quantity: number("quantity", quantity)?,
        offline_allowance: number("allowance", allowance)?,
    })
}

/// The calling site's share of a split order (`OrderStatus.share`; for a
/// single-site order the share is the whole order, already shown).
fn share_line(status: &v1::OrderStatus) -> Option<String> {
    let order = status.order.as_ref()?;
    if order.allocations.is_empty() {
        return None;
    }
    let share = status.share.as_ref()?;
    Some(format!(
        "split across {} sites: site {}'s share is {} of {} (offline allowance {}), {} remaining here",
        order.allocations.len(),
        share.site,
        share.quantity,
        order.quantity,
        share.offline_allowance,
        status.remaining
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.4.14.22: `--allocation` parses a site's share and its allowance.
    #[test]
    fn allocations_parse_and_the_share_is_shown() {
        let a = parse_allocation("site-a=6:2").expect("parse");
        assert_eq!(
            (a.site.as_str(), a.quantity, a.offline_allowance),
            ("site-a", 6, 2)
        );
        let b = parse_allocation("site-b=4").expect("parse");
        assert_eq!((b.quantity, b.offline_allowance), (4, 0));
        for bad in ["site-a", "=4", "site-a=x", "site-a=4:", "site-a=-1"] {
            assert!(parse_allocation(bad).is_err(), "{bad}");
        }
        let mut status = v1::OrderStatus {
            order: Some(v1::ProductionOrder {
                quantity: 10,
                allocations: vec![a.clone(), b],
                ..Default::default()
            }),
            share: Some(a),
            certified: 5,
            remaining: 1,
            ..Default::default()
        };
        assert_eq!(
            share_line(&status).as_deref(),
            Some(
                "split across 2 sites: site site-a's share is 6 of 10 (offline allowance 2), \
                 1 remaining here"
            )
        );
        if let Some(o) = status.order.as_mut() {
            o.allocations.clear();
        }
        assert_eq!(share_line(&status), None);
    }
}
