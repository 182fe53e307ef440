//! `trustline inspect --sim`: physical inspection (2.4.14.10) of a device
//! on the simulated link.
//!
//! The inspection itself is [`station::inspect::inspect`]: it challenges the
//! device live, verifies its identity proof against its certificate and the
//! chain against the OEM root, checks the printed label against the
//! `rot_id`, and reads the device's custody history from the ledger with
//! every inclusion proof verified against a checkpoint signed by the ledger
//! key. A hardware probe back end implements
//! [`InspectLink`](station::inspect::InspectLink); the only back end in this
//! project is the simulated RoT, and a simulated die lives only in the
//! process that made it. So `--sim` runs the whole story in one process, in
//! `--dir`: an embedded SoftHSM2 token, the CA, the service PKI, `serve all`
//! behind mTLS, one simulated die provisioned by a station and transferred
//! by the OEM to a first owner — then the inspector, with the auditor's
//! credential and only the OEM root and the ledger key as trust anchors,
//! inspects it. `--label` checks another printed label (a relabelled
//! device is caught). Exit 0 when the device is authentic and its history
//! proven, 1 otherwise, 2 for set-up errors.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context};
use ca_service::keys::KeyLabels;
use clap::Args;
use hsm_sim::rot::Fleet;
use transport::ClientTls;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;
use trustline_proto::v1::ownership_client::OwnershipClient;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

use super::hsm_args::HsmArgs;
use super::Outcome;
use backends::RemoteLedgerReads;
use site::serve;
use site::setup;
use site::Config;
use station::inspect::{inspect, InspectConfig};
use station::run::{self, Job, Mode, RunConfig};
use station::sim::SimLink;

const SITE: &str = "site-1";
const ORDER: &str = "PO-INSPECT-1";
const STATION: &str = "st-01";

/// `trustline inspect` arguments.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Inspect a simulated device made, certified and transferred in this
    /// process (the only device link there is without a hardware probe).
    #[arg(long)]
    pub(crate) sim: bool,
    /// Where the token, CA, PKI and ledger go; must be empty or absent.
    #[arg(long, value_name = "DIR", default_value = "inspect-out")]
    pub(crate) dir: PathBuf,
    /// The label as printed on the device [default: the label the factory
    /// printed for it].
    #[arg(long, value_name = "LABEL")]
    pub(crate) label: Option<String>,
    /// Print the inspection as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the inspection.
///
/// # Errors
/// Without `--sim`, when `--dir` is not empty, or when a set-up step fails.
pub(crate) fn run(args: InspectArgs) -> anyhow::Result<Outcome> {
    ensure!(
        args.sim,
        "only the simulated device link exists: pass --sim (a hardware probe implements \
         station::inspect::InspectLink)"
    );
    super::fresh_dir(&args.dir)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(simulated(&args))
}

async fn simulated(args: &InspectArgs) -> anyhow::Result<Outcome> {
    transport::install_crypto_provider();
    let dir = args.dir.as_path();
    let tokens = HsmArgs::open_embedded(dir, 2)?;
    setup::init_ca(&tokens.ca, dir, SITE)?;
    setup::init_ledger_key(&tokens.ledger, dir)?;
    setup::init_pki(
        &tokens.ca,
        dir,
        SITE,
        &[(SITE.to_owned(), STATION.to_owned())],
    )?;
    let fleet = Fleet::builder()
        .seed(rand::random())
        .genuine(1)
        .build()
        .context("building a simulated die")?;
    site::config::write_vendor_roots(&dir.join("vendors"), &fleet.vendor_roots())?;
    let vendors: Vec<String> = fleet.vendor_roots().into_iter().map(|(n, _)| n).collect();
    let firmware = fleet.firmware_sha256();

    let config = Config::load(dir)?;
    let listener = serve::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (dir, config, tokens) = (dir.to_path_buf(), config.clone(), tokens.clone());
        tokio::spawn(async move {
            serve::serve_all(&dir, &config, tokens.ca, tokens.ledger, listener, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let connect = |name: &str| {
        let (addr, paths) = (addr.clone(), setup::credentials(dir, name));
        async move { anyhow::Ok(ClientTls::from_files(&paths)?.connect(&addr).await?) }
    };

    // The factory: an OEM order, one die through a station.
    let now = backends::now_ms();
    let order = v1::ProductionOrder {
        order_id: ORDER.into(),
        sku: "TL-SENSOR-1".into(),
        site: SITE.into(),
        quantity: 1,
        serial_scheme: Some(v1::SerialScheme {
            prefix: "TLS".into(),
            first: 1,
            last: 9_999,
            digits: 4,
        }),
        not_before_ms: now - 60_000,
        not_after_ms: now + 86_400_000,
        allowed_ic_vendors: vendors,
        allowed_firmware_sha256: firmware.to_vec(),
        ..Default::default()
    };
    let order_key = tokens
        .ca
        .signer(&KeyLabels::default().order)
        .context("the OEM order key")?;
    let admin = connect(setup::ADMIN).await?;
    ProvisioningClient::new(admin.clone())
        .open_order(v1::OpenOrderRequest {
            signed_order: Some(trustline_proto::statement::sign(&order_key, &order)?),
        })
        .await
        .map_err(|s| anyhow::anyhow!("opening the order: {}", s.message()))?;
    let jobs = fleet
        .into_devices()
        .into_iter()
        .map(|d| Job {
            link: SimLink::new(d.rot),
            serial: None,
        })
        .collect();
    let station = connect(&setup::station_name(SITE, STATION)).await?;
    let run_config = RunConfig {
        order_id: ORDER.into(),
        mode: Mode::OnDevice,
        concurrency: 1,
        out_dir: None,
        first_serial: None,
        progress: false,
        retries: 1,
        protocol: run::Protocol::Stream,
    };
    let (report, mut links) = run::run(station, run_config, jobs).await?;
    let Some(run::Outcome::Provisioned(device)) = report.outcomes.into_iter().next() else {
        bail!("the simulated die was not provisioned");
    };
    let mut link = links.pop().context("the die's link")?;

    // The OEM transfers it to a first owner (the HSM signs entry 0).
    let first_owner = SoftwareSigner::generate();
    OwnershipClient::new(admin)
        .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
            voucher: device.voucher.clone(),
            next_owner_public_key: first_owner.public_key_der().to_vec(),
            first_owner_salt: vec![],
        })
        .await
        .map_err(|s| anyhow::anyhow!("the first transfer: {}", s.message()))?;

    // The inspector: the auditor's credential; the OEM root and the ledger
    // key as the only trust anchors.
    let root = std::fs::read(dir.join(setup::CA_DIR).join(ca_service::ca::ROOT_CERT_FILE))?;
    let ledger_key = std::fs::read_to_string(dir.join(setup::LEDGER_KEY_FILE))?;
    let inspect_config = InspectConfig {
        oem_root: pem::parse(root).context("the OEM root")?.into_contents(),
        ledger_key: custody_ledger::checkpoint::spki_from_pem(&ledger_key)?,
        origin: None,
        label: Some(args.label.clone().unwrap_or(device.label)),
    };
    let reads = RemoteLedgerReads::new(connect(setup::AUDITOR).await?);
    let inspection = inspect(&mut link, &reads, &inspect_config).await;
    let _ = stop_tx.send(());
    server.await.context("the server task")??;
    let inspection = inspection?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print!("{}", inspection.render());
    }
    Ok(if inspection.authentic() {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}
