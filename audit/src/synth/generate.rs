//! A clean synthetic ledger of a given size ([`generate`]), for measuring
//! the audit: an audit of it must report no findings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use custody_ledger::{EventKind, Ledger, LedgerConfig};
use rand::RngCore;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;

use crate::error::{Error, Result};
use backends::layout;
use provisioner::orders;

use super::*;

/// Opens (creates) a ledger in `<data>/ledger` with a fresh software
/// checkpoint key.
///
/// # Errors
/// [`Error::Config`] when the ledger cannot be opened.
pub fn open_ledger(data_dir: &Path) -> Result<Ledger> {
    let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate());
    Ledger::open(LedgerConfig::new(data_dir.join(layout::LEDGER_DIR)), signer)
        .map_err(|e| synth_err("ledger", e))
}

/// What [`generate`] made.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Entries appended.
    pub entries: u64,
    /// Devices certified.
    pub devices: u64,
    /// Orders opened.
    pub orders: u64,
    /// Wall time, ms.
    pub duration_ms: u64,
}

/// Sites and orders of a generated ledger.
pub(super) const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
pub(super) const ORDERS: u64 = 9;
/// Appends in flight at once (the ledger commits them in groups).
pub(super) const IN_FLIGHT: usize = 512;

/// Generates a clean synthetic ledger of exactly `entries` entries in
/// `<data>/ledger` (and the OEM's public files in `<data>/ca`): nine orders
/// over three sites; about a third of the entries each claims, certifies
/// and ships (one device in fifty scrapped) a device with a real key and
/// certificate; one entry in a hundred a recorded duplicate or counterfeit
/// refusal. An audit of it must report no findings.
///
/// # Errors
/// [`Error::Config`] when `entries` is too small, or on a ledger or
/// certificate error.
pub fn generate(data_dir: &Path, entries: u64, progress: bool) -> Result<Generated> {
    let started = Instant::now();
    if entries < ORDERS + 3 {
        return Err(Error::Config(format!(
            "a synthetic ledger needs at least {} entries",
            ORDERS + 3
        )));
    }
    let refusals_wanted = entries / 100;
    let devices = (entries - ORDERS - refusals_wanted) / 3;
    let refusals = entries - ORDERS - devices * 3;
    let per_order = devices.div_ceil(ORDERS);
    let oem = Arc::new(SyntheticOem::generate()?);
    oem.write_public_files(data_dir)?;
    let ledger = Arc::new(open_ledger(data_dir)?);
    let now = backends::now_ms();
    let window = (now - 86_400_000, now + 30 * 86_400_000);
    let orders: Vec<v1::ProductionOrder> = (0..ORDERS)
        .map(|i| {
            let site = SITES[(i % 3) as usize];
            order(
                &format!("PO-{:03}", i + 1),
                site,
                per_order,
                &format!("SN{}-", i + 1),
                window,
            )
        })
        .collect();
    for o in &orders {
        order_opened(o, oem.sign_order(o)?).append_blocking(&ledger)?;
    }
    let bar = crate::progress_bar(progress, Some(entries), "generating");
    bar.inc(ORDERS);

    // Two threads make keys and certificates; the runtime appends them with
    // many appends in flight, each device's entries in order.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(usize, SyntheticDevice, Vec<u8>)>(4 * IN_FLIGHT);
    let makers: Vec<std::thread::JoinHandle<Result<()>>> = (0..2u64)
        .map(|t| {
            let tx = tx.clone();
            let oem = Arc::clone(&oem);
            std::thread::spawn(move || {
                let mut d = t;
                while d < devices {
                    let o = (d % ORDERS) as usize;
                    let number = d / ORDERS + 1;
                    let serial = orders::SerialScheme {
                        prefix: format!("SN{}-", o + 1),
                        first: 1,
                        last: per_order * 2,
                        digits: 9,
                    }
                    .format(number);
                    let device = SyntheticDevice::new(serial)?;
                    let cert =
                        oem.device_certificate(&device.serial, &device.rot_id, &device.key)?;
                    if tx.blocking_send((o, device, cert)).is_err() {
                        return Ok(());
                    }
                    d += 2;
                }
                Ok(())
            })
        })
        .collect();
    drop(tx);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| synth_err("runtime", e))?;
    let made = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut made = 0u64;
        let mut refused = 0u64;
        while let Some((o, device, cert)) = rx.recv().await {
            while tasks.len() >= IN_FLIGHT {
                if let Some(r) = tasks.join_next().await {
                    r.map_err(|e| synth_err("task", e))??;
                }
            }
            let order = orders[o].clone();
            let station = format!("station/{}/st-{:02}", order.site, made % 4 + 1);
            let scrap = made % 50 == 49;
            let refusal = if refused < refusals && made.is_multiple_of(3) {
                refused += 1;
                Some(refused)
            } else {
                None
            };
            let ledger = Arc::clone(&ledger);
            let bar = bar.clone();
            tasks.spawn(async move {
                let site = order.site.clone();
                claimed(&order, &device, &station).append(&ledger).await?;
                certified(&order, &device, cert, &site, &station)
                    .append(&ledger)
                    .await?;
                let (kind, note) = if scrap {
                    (EventKind::Scrapped, "failed final test; crushed, witnessed")
                } else {
                    (EventKind::Shipped, "pallet to distribution")
                };
                custody(kind, &order, &device, &station, note)
                    .append(&ledger)
                    .await?;
                let mut n = 3;
                if let Some(r) = refusal {
                    let mut clone_die = [0u8; 32];
                    rand::thread_rng().fill_bytes(&mut clone_die);
                    let rot = trustline_proto::identity::rot_id(&clone_die);
                    let (kind, operation, reason) = if r % 2 == 0 {
                        (
                            EventKind::DuplicateRejected,
                            "certify",
                            "serial is already certified",
                        )
                    } else {
                        (
                            EventKind::CounterfeitRejected,
                            "claim",
                            "attestation does not chain to a configured ic vendor",
                        )
                    };
                    let serial = if kind == EventKind::DuplicateRejected {
                        device.serial.clone()
                    } else {
                        String::new()
                    };
                    rejected(kind, &order, &rot, &serial, &station, operation, reason)
                        .append(&ledger)
                        .await?;
                    n += 1;
                }
                bar.inc(n);
                Ok::<(), Error>(())
            });
            made += 1;
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| synth_err("task", e))??;
        }
        // Refusals left over (when devices ran out first), against order 1.
        while refused < refusals {
            refused += 1;
            let mut fake = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut fake);
            rejected(
                EventKind::CounterfeitRejected,
                &orders[0],
                &trustline_proto::identity::rot_id(&fake),
                "",
                "station/site-a/st-01",
                "claim",
                "attestation does not chain to a configured ic vendor",
            )
            .append(&ledger)
            .await?;
            bar.inc(1);
        }
        Ok::<u64, Error>(made)
    })?;
    for m in makers {
        m.join()
            .map_err(|_| synth_err("certificate thread", "panicked"))??;
    }
    bar.finish_and_clear();
    ledger
        .publish_checkpoint_blocking()
        .map_err(|e| synth_err("checkpoint", e))?;
    let appended = ledger.size();
    match Arc::try_unwrap(ledger) {
        Ok(ledger) => ledger.close(),
        Err(_) => return Err(synth_err("ledger", "still in use at close")),
    }
    Ok(Generated {
        data_dir: data_dir.to_path_buf(),
        entries: appended,
        devices: made,
        orders: ORDERS,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
