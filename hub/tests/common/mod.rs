//! Test helpers: real custody-ledger site ledgers in temp dirs with
//! software signers, entries in the factory's payload formats, a hub on the
//! embedded store with a software witness key, and a minimal uplink that
//! pushes entries and asks for a cosignature.

#![allow(dead_code, clippy::unwrap_used)] // Shared by several test binaries; tests may unwrap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use custody_ledger::{
    Draft, EventKind, Ledger, LedgerConfig, QuotaUse, SignedCheckpoint, UniqueKey,
};
use hub::{Cosignature, Cosigner, Hub, HubConfig, SiteConfig, SoftwareWitnessSigner};
use prost::Message;
use ring::signature::Ed25519KeyPair;
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;

/// Runs blocking ledger calls also from inside a (multi-threaded) runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// The witness's key name in tests.
pub(crate) const WITNESS: &str = "oem.example/hub-witness";

/// The origin of a site's ledger.
pub(crate) fn origin(site: &str) -> String {
    format!("{site}.example/ledger")
}

/// A device identity.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub(crate) rot_id: String,
    pub(crate) serial: String,
    pub(crate) key: Vec<u8>,
}

impl Device {
    /// A device whose identities derive from `tag`.
    pub(crate) fn new(tag: &str) -> Self {
        Self {
            rot_id: hex::encode(Sha256::digest(format!("rot {tag}"))),
            serial: format!("SN-{tag}"),
            key: Sha256::digest(format!("key {tag}")).to_vec(),
        }
    }
}

/// A site: its real ledger, its signer, its name.
pub(crate) struct Site {
    pub(crate) name: String,
    pub(crate) signer: Arc<SoftwareSigner>,
    pub(crate) ledger: Ledger,
}

impl Site {
    /// A site ledger in `dir` with a fresh key.
    pub(crate) fn open(name: &str, dir: &Path) -> Self {
        Self::open_with(name, dir, Arc::new(SoftwareSigner::generate()))
    }

    /// A site ledger in `dir` with `signer` (a forged site reuses the
    /// genuine key: what a compromised site host holds).
    pub(crate) fn open_with(name: &str, dir: &Path, signer: Arc<SoftwareSigner>) -> Self {
        let mut config = LedgerConfig::new(dir);
        config.origin = origin(name);
        // Checkpoints only on demand: the tests decide when.
        config.checkpoint_interval = Duration::from_secs(3600);
        let ledger = Ledger::open(config, signer.clone() as Arc<dyn Signer>).unwrap();
        Self {
            name: name.to_string(),
            signer,
            ledger,
        }
    }

    /// The hub's configuration of this site.
    pub(crate) fn config(&self) -> SiteConfig {
        SiteConfig::new(
            &self.name,
            &origin(&self.name),
            self.signer.public_key_der(),
        )
        .unwrap()
    }

    fn draft(
        &self,
        kind: EventKind,
        device: Option<&Device>,
        order: &str,
        payload: Vec<u8>,
    ) -> Draft {
        Draft {
            kind,
            rot_id: device.map(|d| d.rot_id.clone()).unwrap_or_default(),
            serial: device.map(|d| d.serial.clone()).unwrap_or_default(),
            site: self.name.clone(),
            actor: format!("station/{}/st-01", self.name),
            order_id: order.to_string(),
            payload,
        }
    }

    /// Records `ORDER_OPENED` for a signed order.
    pub(crate) fn open_order(&self, signed: v1::SignedStatement, order_id: &str) {
        let payload = v1::OrderOpenedPayload {
            signed_order: Some(signed),
        }
        .encode_to_vec();
        let draft = self.draft(EventKind::OrderOpened, None, order_id, payload);
        let key = UniqueKey::new("order", order_id.as_bytes().to_vec());
        blocking(|| self.ledger.append_blocking(draft, vec![key], None)).unwrap();
    }

    /// Records `CERTIFIED` of `device` under `order`, counted against the
    /// site's quota `limit`, with the factory's unique keys.
    pub(crate) fn certify(&self, device: &Device, order: &str, limit: u64) {
        self.try_certify(device, order, limit).unwrap();
    }

    /// As [`Site::certify`], returning the ledger's refusal.
    pub(crate) fn try_certify(
        &self,
        device: &Device,
        order: &str,
        limit: u64,
    ) -> custody_ledger::Result<custody_ledger::Appended> {
        let payload = v1::CertifiedPayload {
            certificate: format!("certificate of {}", device.serial).into_bytes(),
            device_public_key: device.key.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let draft = self.draft(EventKind::Certified, Some(device), order, payload);
        let keys = vec![
            UniqueKey::new("serial", device.serial.as_bytes().to_vec()),
            UniqueKey::new("rot", device.rot_id.as_bytes().to_vec()),
            UniqueKey::new("device-key", Sha256::digest(&device.key).to_vec()),
        ];
        let quota = Some(QuotaUse::new(format!("order/{order}"), limit));
        blocking(|| self.ledger.append_blocking(draft, keys, quota))
    }

    /// Records a custody event of `device`.
    pub(crate) fn custody(&self, kind: EventKind, device: &Device, order: &str) {
        let payload = v1::CustodyPayload {
            note: "test".into(),
        }
        .encode_to_vec();
        let draft = self.draft(kind, Some(device), order, payload);
        blocking(|| self.ledger.append_blocking(draft, vec![], None)).unwrap();
    }

    /// `n` certified devices `<tag>-0..n` under `order`.
    pub(crate) fn certify_many(&self, tag: &str, n: usize, order: &str, limit: u64) -> Vec<Device> {
        (0..n)
            .map(|i| {
                let d = Device::new(&format!("{tag}-{i}"));
                self.certify(&d, order, limit);
                d
            })
            .collect()
    }

    /// Signs a checkpoint covering everything.
    pub(crate) fn checkpoint(&self) -> SignedCheckpoint {
        blocking(|| self.ledger.publish_checkpoint_blocking()).unwrap()
    }

    /// Entries `[start, end)` as exact bytes.
    pub(crate) fn entries(&self, start: u64, end: u64) -> Vec<Vec<u8>> {
        self.ledger
            .entries(start, end, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.entry)
            .collect()
    }

    /// The consistency proof from `from` to `to` as wire hashes.
    pub(crate) fn proof(&self, from: u64, to: u64) -> Vec<Vec<u8>> {
        self.ledger
            .consistency_proof(from, to)
            .unwrap()
            .path
            .iter()
            .map(|h| h.to_vec())
            .collect()
    }
}

/// An OEM order key and signed orders.
pub(crate) struct Oem {
    pub(crate) order_key: SoftwareSigner,
}

impl Oem {
    pub(crate) fn new() -> Self {
        Self {
            order_key: SoftwareSigner::generate(),
        }
    }

    /// A signed order.
    pub(crate) fn order(
        &self,
        id: &str,
        site: &str,
        quantity: u64,
        allocations: &[(&str, u64)],
    ) -> v1::SignedStatement {
        sign_order(&self.order_key, id, site, quantity, allocations)
    }
}

/// A production order signed by `key`.
pub(crate) fn sign_order(
    key: &SoftwareSigner,
    id: &str,
    site: &str,
    quantity: u64,
    allocations: &[(&str, u64)],
) -> v1::SignedStatement {
    let order = v1::ProductionOrder {
        order_id: id.into(),
        sku: "SKU-HUB".into(),
        site: site.into(),
        quantity,
        allocations: allocations
            .iter()
            .map(|(s, q)| v1::SiteAllocation {
                site: (*s).into(),
                quantity: *q,
                offline_allowance: 10,
            })
            .collect(),
        ..Default::default()
    };
    trustline_proto::statement::sign(key, &order).unwrap()
}

/// The witness key, kept as PKCS#8 so a restarted hub has the same key.
pub(crate) struct WitnessKey {
    pkcs8: Vec<u8>,
}

impl WitnessKey {
    pub(crate) fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        Self {
            pkcs8: Ed25519KeyPair::generate_pkcs8(&rng)
                .unwrap()
                .as_ref()
                .to_vec(),
        }
    }

    pub(crate) fn cosigner(&self) -> Cosigner {
        Cosigner::new(
            WITNESS,
            Box::new(SoftwareWitnessSigner::from_pkcs8(&self.pkcs8).unwrap()),
        )
        .unwrap()
    }
}

/// A hub on the embedded store in `dir` for `sites`.
pub(crate) fn hub(
    dir: &Path,
    key: &WitnessKey,
    sites: &[SiteConfig],
    order_key: Option<Vec<u8>>,
) -> Hub {
    Hub::open_embedded(
        dir,
        HubConfig {
            sites: sites.to_vec(),
            order_key,
        },
        key.cosigner(),
    )
    .unwrap()
}

/// What an uplink does: push every entry the hub lacks, then ask for a
/// cosignature of `checkpoint` with a proof from the hub's cosigned size.
pub(crate) fn sync(
    hub: &Hub,
    site: &Site,
    checkpoint: &SignedCheckpoint,
) -> hub::Result<Cosignature> {
    let state = hub.status(&site.name)?;
    let end = site.ledger.size();
    if end > state.mirror_size {
        hub.push_entries(
            &site.name,
            state.mirror_size,
            site.entries(state.mirror_size, end),
        )?;
    }
    let old = state.cosigned_size();
    let proof = if old == 0 || old == checkpoint.size {
        Vec::new()
    } else {
        site.proof(old, checkpoint.size)
    };
    hub.add_checkpoint(old, &proof, &checkpoint.note)
}
