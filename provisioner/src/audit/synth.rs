//! Synthetic ledgers for testing and measuring the audit: an OEM with a
//! software order key and CA, devices with real P-256 keys and X.509
//! certificates, and entries in exactly the payload formats and with the
//! unique keys and quota counters the factory line uses
//! ([`crate::factory`]'s module doc), appended through the custody
//! ledger's public API with a software checkpoint signer (no HSM).
//!
//! Synthetic claims carry no RoT receipt or attestation chain (the audit
//! does not re-verify those; the factory did when it claimed), and
//! synthetic certifications no key attestation or voucher digest. Anything
//! the audit reads — orders, certificates, serials, keys, sites, stations,
//! custody — is what the line writes.
//!
//! [`Append::forced`] drops an append's constraints: that is how the tests
//! plant what the line would have refused (an over-quota certificate, a
//! duplicate serial), as a compromised or buggy writer could.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use custody_ledger::{Draft, EventKind, Ledger, LedgerConfig, QuotaUse, UniqueKey};
use prost::Message;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, DnValue, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;

use super::certs::ROT_URI_PREFIX;
use crate::error::{Error, Result};
use crate::factory::{keys, label, orders};

fn synth_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("synthetic {what}: {e}"))
}

/// The actor that opens orders in synthetic ledgers.
pub const OEM_ACTOR: &str = "admin/oem/ops";

/// A synthetic OEM: order key, root CA and one site intermediate, all in
/// memory.
pub struct SyntheticOem {
    order_key: SoftwareSigner,
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for SyntheticOem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticOem").finish_non_exhaustive()
    }
}

fn ca_params(cn: &str, pathlen: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Synthetic OEM");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(pathlen));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl SyntheticOem {
    /// Fresh keys and CA certificates.
    ///
    /// # Errors
    /// [`Error::Config`] when rcgen fails.
    pub fn generate() -> Result<Self> {
        let root_key = KeyPair::generate().map_err(|e| synth_err("root key", e))?;
        let root = CertifiedIssuer::self_signed(ca_params("Synthetic OEM root", 1), root_key)
            .map_err(|e| synth_err("root", e))?;
        let int_key = KeyPair::generate().map_err(|e| synth_err("intermediate key", e))?;
        let intermediate =
            CertifiedIssuer::signed_by(ca_params("Synthetic site intermediate", 0), int_key, &root)
                .map_err(|e| synth_err("intermediate", e))?;
        Ok(Self {
            order_key: SoftwareSigner::generate(),
            root,
            intermediate,
        })
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// The site intermediate, DER.
    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate.der().to_vec()
    }

    /// The CA certificates, DER: intermediate, root.
    pub fn ca_chain(&self) -> Vec<Vec<u8>> {
        vec![self.intermediate_der(), self.root_der()]
    }

    /// The OEM order key, SubjectPublicKeyInfo DER.
    pub fn order_key_spki(&self) -> &[u8] {
        self.order_key.public_key_der()
    }

    /// Signs a production order with the OEM order key (2.4.14.22).
    ///
    /// # Errors
    /// [`Error::Config`] when signing fails.
    pub fn sign_order(&self, order: &v1::ProductionOrder) -> Result<v1::SignedStatement> {
        trustline_proto::statement::sign(&self.order_key, order).map_err(|e| synth_err("order", e))
    }

    /// A device certificate in the CA's profile: subject CN and
    /// serialNumber = product serial, SAN URI naming the RoT, signed by the
    /// site intermediate.
    ///
    /// # Errors
    /// [`Error::Config`] when rcgen fails.
    pub fn device_certificate(&self, serial: &str, rot_id: &str, key: &KeyPair) -> Result<Vec<u8>> {
        self.certificate_signed_by(serial, rot_id, key, &self.intermediate)
    }

    /// The same profile signed by another issuer (for a certificate that is
    /// not the OEM's).
    ///
    /// # Errors
    /// [`Error::Config`] when rcgen fails.
    pub fn certificate_signed_by(
        &self,
        serial: &str,
        rot_id: &str,
        key: &KeyPair,
        issuer: &CertifiedIssuer<'static, KeyPair>,
    ) -> Result<Vec<u8>> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Synthetic OEM");
        let printable =
            rcgen::string::PrintableString::try_from(serial).map_err(|e| synth_err("serial", e))?;
        dn.push(
            DnType::CommonName,
            DnValue::PrintableString(printable.clone()),
        );
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(printable),
        );
        params.distinguished_name = dn;
        let uri = rcgen::string::Ia5String::try_from(format!("{ROT_URI_PREFIX}{rot_id}"))
            .map_err(|e| synth_err("rot uri", e))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(key, issuer)
            .map_err(|e| synth_err("certificate", e))?;
        Ok(cert.der().to_vec())
    }

    /// Writes the OEM's public material where `trustline audit --data-dir`
    /// looks by default: `<data>/ca/oem-root.pem`, `site-intermediate.pem`,
    /// `order-key.pub.pem`.
    ///
    /// # Errors
    /// [`Error::Config`] on a file error.
    pub fn write_public_files(&self, data_dir: &Path) -> Result<()> {
        let ca = data_dir.join("ca");
        std::fs::create_dir_all(&ca).map_err(|e| synth_err("ca dir", e))?;
        let write = |name: &str, text: String| {
            std::fs::write(ca.join(name), text).map_err(|e| synth_err(name, e))
        };
        write("oem-root.pem", self.root.pem())?;
        write("site-intermediate.pem", self.intermediate.pem())?;
        write(
            "order-key.pub.pem",
            pem::encode(&pem::Pem::new("PUBLIC KEY", self.order_key_spki().to_vec())),
        )
    }
}

/// A synthetic device: a random RoT id and a real P-256 identity key.
pub struct SyntheticDevice {
    /// The RoT.
    pub rot_id: String,
    /// The product serial.
    pub serial: String,
    /// The identity key.
    pub key: KeyPair,
    /// Its SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
}

impl std::fmt::Debug for SyntheticDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticDevice")
            .field("rot_id", &self.rot_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl SyntheticDevice {
    /// A device with a fresh RoT and key.
    ///
    /// # Errors
    /// [`Error::Config`] when key generation fails.
    pub fn new(serial: impl Into<String>) -> Result<Self> {
        let mut die = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut die);
        let key = KeyPair::generate().map_err(|e| synth_err("device key", e))?;
        Ok(Self {
            rot_id: trustline_proto::identity::rot_id(&die),
            serial: serial.into(),
            spki: key.subject_public_key_info(),
            key,
        })
    }
}

/// One append: the draft and the constraints the line would declare.
#[derive(Debug, Clone)]
pub struct Append {
    /// The entry.
    pub draft: Draft,
    /// Its unique keys.
    pub keys: Vec<UniqueKey>,
    /// Its quota use.
    pub quota: Option<QuotaUse>,
}

impl Append {
    /// The same entry without any constraint: what a writer that bypasses
    /// the line's checks would append.
    #[must_use]
    pub fn forced(mut self) -> Self {
        self.keys.clear();
        self.quota = None;
        self
    }

    /// Appends it and waits until it is durable.
    ///
    /// # Errors
    /// [`Error::Config`] with the ledger's refusal.
    pub fn append_blocking(self, ledger: &Ledger) -> Result<u64> {
        ledger
            .append_blocking(self.draft, self.keys, self.quota)
            .map(|a| a.seq)
            .map_err(|e| synth_err("append", e))
    }

    /// Appends it from async code.
    ///
    /// # Errors
    /// [`Error::Config`] with the ledger's refusal.
    pub async fn append(self, ledger: &Ledger) -> Result<u64> {
        ledger
            .append(self.draft, self.keys, self.quota)
            .await
            .map(|a| a.seq)
            .map_err(|e| synth_err("append", e))
    }
}

fn draft(
    kind: EventKind,
    rot_id: &str,
    serial: &str,
    site: &str,
    actor: &str,
    order_id: &str,
    payload: &impl Message,
) -> Draft {
    Draft {
        kind,
        rot_id: rot_id.to_owned(),
        serial: serial.to_owned(),
        site: site.to_owned(),
        actor: actor.to_owned(),
        order_id: order_id.to_owned(),
        payload: payload.encode_to_vec(),
    }
}

/// `ORDER_OPENED` for a signed order.
pub fn order_opened(order: &v1::ProductionOrder, signed: v1::SignedStatement) -> Append {
    let payload = v1::OrderOpenedPayload {
        signed_order: Some(signed),
    };
    Append {
        draft: draft(
            EventKind::OrderOpened,
            "",
            "",
            &order.site,
            OEM_ACTOR,
            &order.order_id,
            &payload,
        ),
        keys: vec![UniqueKey::new(
            keys::ORDER,
            order.order_id.as_bytes().to_vec(),
        )],
        quota: None,
    }
}

/// `CLAIMED` of a device under an order, by a station.
pub fn claimed(order: &v1::ProductionOrder, device: &SyntheticDevice, station: &str) -> Append {
    let payload = v1::ClaimedPayload {
        receipt: None,
        attestation_chain: Vec::new(),
        ic_vendor: "synthetic".into(),
        transport_key: None,
    };
    Append {
        draft: draft(
            EventKind::Claimed,
            &device.rot_id,
            "",
            &order.site,
            station,
            &order.order_id,
            &payload,
        ),
        keys: vec![UniqueKey::new(
            keys::CLAIM,
            device.rot_id.as_bytes().to_vec(),
        )],
        quota: None,
    }
}

/// `CERTIFIED` of a device with its certificate, at `site` (normally the
/// order's), with the line's unique keys and the order's quota counter.
pub fn certified(
    order: &v1::ProductionOrder,
    device: &SyntheticDevice,
    certificate: Vec<u8>,
    site: &str,
    station: &str,
) -> Append {
    let spki = device.spki.clone();
    let payload = v1::CertifiedPayload {
        certificate,
        device_public_key: spki.clone(),
        mode: v1::PersonalisationMode::OnDevice as i32,
        key_attestation: None,
        label: label::label(&device.rot_id, &order.sku).unwrap_or_default(),
        voucher_sha256: Vec::new(),
        first_owner: None,
    };
    Append {
        draft: draft(
            EventKind::Certified,
            &device.rot_id,
            &device.serial,
            site,
            station,
            &order.order_id,
            &payload,
        ),
        keys: vec![
            UniqueKey::new(keys::SERIAL, device.serial.as_bytes().to_vec()),
            UniqueKey::new(keys::ROT, device.rot_id.as_bytes().to_vec()),
            UniqueKey::new(keys::DEVICE_KEY, Sha256::digest(&spki).to_vec()),
        ],
        quota: Some(QuotaUse::new(
            orders::quota_counter(&order.order_id),
            order.quantity,
        )),
    }
}

/// `SHIPPED`, `RECEIVED` or `SCRAPPED` of a device.
pub fn custody(
    kind: EventKind,
    order: &v1::ProductionOrder,
    device: &SyntheticDevice,
    station: &str,
    note: &str,
) -> Append {
    let payload = v1::CustodyPayload {
        note: note.to_owned(),
    };
    let keys = if kind == EventKind::Scrapped {
        vec![UniqueKey::new(
            keys::SCRAPPED,
            device.rot_id.as_bytes().to_vec(),
        )]
    } else {
        Vec::new()
    };
    Append {
        draft: draft(
            kind,
            &device.rot_id,
            &device.serial,
            &order.site,
            station,
            &order.order_id,
            &payload,
        ),
        keys,
        quota: None,
    }
}

/// A recorded refusal (`DUPLICATE_REJECTED`, `COUNTERFEIT_REJECTED`,
/// `QUOTA_REJECTED`), no constraints.
pub fn rejected(
    kind: EventKind,
    order: &v1::ProductionOrder,
    rot_id: &str,
    serial: &str,
    station: &str,
    operation: &str,
    reason: &str,
) -> Append {
    let payload = v1::RejectedPayload {
        operation: operation.to_owned(),
        reason: reason.to_owned(),
        key: None,
        holder_seq: 0,
        evidence: Vec::new(),
    };
    Append {
        draft: draft(
            kind,
            rot_id,
            serial,
            &order.site,
            station,
            &order.order_id,
            &payload,
        ),
        keys: Vec::new(),
        quota: None,
    }
}

/// A production order in the synthetic OEM's shape.
pub fn order(
    id: &str,
    site: &str,
    quantity: u64,
    prefix: &str,
    window_ms: (i64, i64),
) -> v1::ProductionOrder {
    v1::ProductionOrder {
        order_id: id.to_owned(),
        sku: "SKU-SYN".into(),
        site: site.to_owned(),
        quantity,
        serial_scheme: Some(v1::SerialScheme {
            prefix: prefix.to_owned(),
            first: 1,
            last: quantity.saturating_mul(2).max(1),
            digits: 9,
        }),
        not_before_ms: window_ms.0,
        not_after_ms: window_ms.1,
        allowed_ic_vendors: vec!["synthetic".into()],
        allowed_firmware_sha256: vec![0x5a; 32],
        ..Default::default()
    }
}

/// Opens (creates) a ledger in `<data>/ledger` with a fresh software
/// checkpoint key.
///
/// # Errors
/// [`Error::Config`] when the ledger cannot be opened.
pub fn open_ledger(data_dir: &Path) -> Result<Ledger> {
    let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate());
    Ledger::open(LedgerConfig::new(data_dir.join("ledger")), signer)
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
const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
const ORDERS: u64 = 9;
/// Appends in flight at once (the ledger commits them in groups).
const IN_FLIGHT: usize = 512;

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
    let now = crate::factory::now_ms();
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
    let bar = super::progress_bar(progress, Some(entries), "generating");
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
    let now = crate::factory::now_ms();
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
