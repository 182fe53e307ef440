//! A small seeded two-site history with planted anomalies
//! ([`seed_scenario`]), and what an audit of it must find.

use std::path::{Path, PathBuf};

use custody_ledger::EventKind;
use rand::RngCore;
use trustline_proto::v1;

use crate::error::Result;

use super::*;

/// What [`seed_scenario`] plants besides the clean history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plant {
    /// A sixth certificate under the five-device order `PO-A`, appended
    /// without the order's quota counter (bypassing the provisioner).
    pub over_quota: bool,
    /// A certificate at site-b under `PO-B` carrying the serial of a
    /// site-a device, appended without the serial's unique key.
    pub duplicate_serial: bool,
    /// A certificate issued by the OEM intermediate that the ledger never
    /// recorded, among the field sightings.
    pub unrecorded_in_field: bool,
}

/// A seeded scenario and what an audit of it must find.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The data directory (`ledger/`, `ca/`).
    pub data_dir: PathBuf,
    /// The field sightings directory.
    pub field_dir: PathBuf,
    /// Per order: id, authorised, certified entries.
    pub orders: Vec<(String, u64, u64)>,
    /// Every `CERTIFIED` entry, in order.
    pub certified_entries: Vec<u64>,
    /// The planted over-quota certification.
    pub over_quota_entry: Option<u64>,
    /// The original and the planted certification of the duplicated serial.
    pub duplicate_serial_entries: Option<(u64, u64)>,
    /// The duplicated serial.
    pub duplicate_serial: String,
    /// The field file holding the unrecorded certificate.
    pub unrecorded_file: Option<PathBuf>,
    /// Entries in the ledger.
    pub entries: u64,
}

/// Seeds `<data>` with a small two-site history in the line's formats —
/// orders PO-A (site-a, 5 devices) and PO-B (site-b, 5 devices) sharing one
/// serial scheme; devices certified, shipped, received and scrapped; a
/// counterfeit refused; a clone refused as a duplicate and scrapped; a
/// sixth PO-A device refused over quota and scrapped — plus the anomalies
/// `plant` asks for, and a field sightings directory (`<data>/field`) with
/// two recorded certificates and the OEM chain.
///
/// # Errors
/// [`Error::Config`] on a ledger, certificate or file error.
pub fn seed_scenario(data_dir: &Path, plant: &Plant) -> Result<Scenario> {
    let oem = SyntheticOem::generate()?;
    oem.write_public_files(data_dir)?;
    let ledger = open_ledger(data_dir)?;
    let now = backends::now_ms();
    let window = (now - 86_400_000, now + 86_400_000);
    let make_order = |id: &str, site: &str| v1::ProductionOrder {
        serial_scheme: Some(v1::SerialScheme {
            prefix: "SN-".into(),
            first: 1,
            last: 1000,
            digits: 9,
        }),
        ..order(id, site, 5, "SN-", window)
    };
    let po_a = make_order("PO-A", "site-a");
    let po_b = make_order("PO-B", "site-b");
    for o in [&po_a, &po_b] {
        order_opened(o, oem.sign_order(o)?).append_blocking(&ledger)?;
    }
    let a1 = "station/site-a/st-01";
    let a2 = "station/site-a/st-02";
    let b1 = "station/site-b/st-01";
    let mut certified_entries = Vec::new();
    let mut build = |o: &v1::ProductionOrder,
                     serial: &str,
                     station: &str,
                     forced: bool|
     -> Result<(SyntheticDevice, u64, Vec<u8>)> {
        let d = SyntheticDevice::new(serial)?;
        claimed(o, &d, station).append_blocking(&ledger)?;
        let der = oem.device_certificate(&d.serial, &d.rot_id, &d.key)?;
        let a = certified(o, &d, der.clone(), &o.site, station);
        let seq = if forced { a.forced() } else { a }.append_blocking(&ledger)?;
        certified_entries.push(seq);
        Ok((d, seq, der))
    };
    let mut site_a = Vec::new();
    for n in 1..=5 {
        site_a.push(build(
            &po_a,
            &format!("SN-{n:09}"),
            if n % 2 == 0 { a2 } else { a1 },
            false,
        )?);
    }
    let mut site_b = Vec::new();
    for n in 101..=103 {
        site_b.push(build(&po_b, &format!("SN-{n:09}"), b1, false)?);
    }
    for (d, _, _) in &site_a[..3] {
        custody(EventKind::Shipped, &po_a, d, a1, "pallet 1 to distribution")
            .append_blocking(&ledger)?;
    }
    custody(
        EventKind::Received,
        &po_a,
        &site_a[0].0,
        "station/dc-1/rx-01",
        "received at dc-1",
    )
    .append_blocking(&ledger)?;
    custody(
        EventKind::Scrapped,
        &po_a,
        &site_a[4].0,
        a1,
        "failed final test; crushed",
    )
    .append_blocking(&ledger)?;
    custody(EventKind::Shipped, &po_b, &site_b[0].0, b1, "pallet 9").append_blocking(&ledger)?;
    // Caught by the line: a counterfeit, a clone, one device over quota.
    let mut die = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut die);
    rejected(
        EventKind::CounterfeitRejected,
        &po_a,
        &trustline_proto::identity::rot_id(&die),
        "",
        a2,
        "claim",
        "attestation does not chain to a configured ic vendor",
    )
    .append_blocking(&ledger)?;
    let clone = SyntheticDevice::new("SN-000000101")?;
    claimed(&po_b, &clone, b1).append_blocking(&ledger)?;
    rejected(
        EventKind::DuplicateRejected,
        &po_b,
        &clone.rot_id,
        &clone.serial,
        b1,
        "certify",
        "serial is already certified",
    )
    .append_blocking(&ledger)?;
    custody(
        EventKind::Scrapped,
        &po_b,
        &clone,
        b1,
        "clone destroyed (2.4.14.4)",
    )
    .append_blocking(&ledger)?;
    let sixth = SyntheticDevice::new("SN-000000006")?;
    claimed(&po_a, &sixth, a1).append_blocking(&ledger)?;
    rejected(
        EventKind::QuotaRejected,
        &po_a,
        &sixth.rot_id,
        &sixth.serial,
        a1,
        "certify",
        "order PO-A has certified its quantity of 5",
    )
    .append_blocking(&ledger)?;
    custody(
        EventKind::Scrapped,
        &po_a,
        &sixth,
        a1,
        "over quota; crushed",
    )
    .append_blocking(&ledger)?;

    let mut scenario = Scenario {
        data_dir: data_dir.to_path_buf(),
        field_dir: data_dir.join("field"),
        orders: Vec::new(),
        certified_entries: Vec::new(),
        over_quota_entry: None,
        duplicate_serial_entries: None,
        duplicate_serial: String::new(),
        unrecorded_file: None,
        entries: 0,
    };
    if plant.over_quota {
        let (_, seq, _) = build(&po_a, "SN-000000007", a2, true)?;
        scenario.over_quota_entry = Some(seq);
    }
    if plant.duplicate_serial {
        let serial = site_a[1].0.serial.clone();
        let (_, seq, _) = build(&po_b, &serial, b1, true)?;
        scenario.duplicate_serial_entries = Some((site_a[1].1, seq));
        scenario.duplicate_serial = serial;
    }
    let field = &scenario.field_dir;
    std::fs::create_dir_all(field.join("onboarding")).map_err(|e| synth_err("field dir", e))?;
    let pem_of = |der: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| synth_err("field file", e))
    };
    // A chain file: device certificate then the OEM CA certificates.
    write(
        field.join("onboarding/device-1-chain.pem"),
        format!(
            "{}{}{}",
            pem_of(&site_a[0].2),
            pem_of(&oem.intermediate_der()),
            pem_of(&oem.root_der())
        ),
    )?;
    std::fs::write(field.join("device-b1.der"), &site_b[0].2)
        .map_err(|e| synth_err("field file", e))?;
    if plant.unrecorded_in_field {
        let d = SyntheticDevice::new("SN-000000777")?;
        let der = oem.device_certificate(&d.serial, &d.rot_id, &d.key)?;
        let path = field.join("grey-market-unit.pem");
        write(path.clone(), pem_of(&der))?;
        scenario.unrecorded_file = Some(path);
    }
    ledger
        .publish_checkpoint_blocking()
        .map_err(|e| synth_err("checkpoint", e))?;
    scenario.entries = ledger.size();
    ledger.close();
    let a_count = 5 + u64::from(plant.over_quota);
    let b_count = 3 + u64::from(plant.duplicate_serial);
    scenario.orders = vec![("PO-A".into(), 5, a_count), ("PO-B".into(), 5, b_count)];
    scenario.certified_entries = certified_entries;
    Ok(scenario)
}
