//! Field life at the hub (issue 13 item 4; 2.4.14.7, 2.4.14.22, 2.4.16):
//! the ownership service's back ends over the hub's registry and mirror,
//! the hub's own custody ledger and the OEM's keys on the hub token, so
//! the first transfer, transfers, onboarding, decommissioning,
//! recommissioning, retirement and the CRL run at the hub — also while the
//! site that made a device is offline or gone.
//!
//! Key design decision: the ownership policy (crate `ownership`) is the one
//! the site used to run, unchanged; only its seam gets a hub
//! implementation. [`HubLedger`] is its [`LedgerApi`] and [`LedgerReads`]:
//! it reads the factory's facts from the mirror (each site's re-verified
//! entries and their unique keys) and keeps every field event in the hub's
//! own ledger (`<hub>/ledger/`, checkpoints signed by the hub ledger key on
//! the hub token), which `trustline ledger verify --data-dir <hub>` checks.
//! [`HubCa`] is its [`CaApi`] and [`CrlApi`]: the OEM voucher and seal keys
//! sign and seal voucher entries, the OEM root signs the CRL, and the
//! chain offered is every enrolled site's intermediate and the root (the
//! policy picks the intermediate that issued each device). [`HubLedger`] is
//! also its [`CloneRegistry`]: a device whose serial, rot_id or device key
//! two sites certified is refused for onboarding.
//!
//! # Sequence numbers
//!
//! The policy names entries by one `u64`. Below 2^63 that is the hub
//! ledger's own seq; a mirrored site entry is `2^63 | tag << 40 | seq`,
//! `tag` being the first 23 bits of SHA-256 of the site's name (stable as
//! sites are enrolled; two sites whose tags collide are refused at start)
//! and `seq` the entry's seq in the site's ledger (below 2^40). So a
//! `QUARANTINE_LIFTED` or `REQUEST_REJECTED` entry of the hub ledger that
//! names a site entry names it for good ([`site_entry`] splits it).
//!
//! Unique-key namespaces the factory sets (`order`, `order-closed`,
//! `claim`, `delivered-key`, `serial`, `rot`, `device-key`, `scrapped`) are
//! looked up in the mirror, site by site in name order (a cross-site clone
//! has several holders: the first is returned, and onboarding refuses the
//! device anyway); the ownership namespaces are the hub ledger's, and an
//! append that claims a factory namespace is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use backends::{
    keys, AppendRefusal, CaApi, CrlApi, DirectLedger, LedgerApi, LedgerReads, LocalLedgerReads,
    RequestIdentity,
};
use ca_service::{Hsm, OemSigner};
use custody_ledger::service::LedgerService;
use futures::future::BoxFuture;
use hub::model::IdentityKind;
use hub::store::{encode_key, DeviceQuery, Probe};
use hub::Hub;
use ownership::CloneRegistry;
use sha2::{Digest, Sha256};
use tonic::Status;
use trustline_proto::v1;

use crate::error::{Error, Result};

/// The hub ledger's checkpoint key on the hub token (P-256).
pub const HUB_LEDGER_KEY: &str = "trustline-hub-ledger";
/// The hub ledger's default checkpoint origin.
pub const DEFAULT_HUB_LEDGER_ORIGIN: &str = "trustline.example/oem-hub";

/// The bit that marks a mirrored site entry's seq.
const MIRROR_BIT: u64 = 1 << 63;
/// Bits of a site entry's own seq.
const SEQ_BITS: u32 = 40;
/// Bits of a site's tag.
const TAG_BITS: u32 = 23;

/// The unique-key namespaces the factory sets: answered from the mirror.
const FACTORY_NAMESPACES: [&str; 8] = [
    keys::ORDER,
    keys::ORDER_CLOSED,
    keys::CLAIM,
    keys::DELIVERED_KEY,
    keys::SERIAL,
    keys::ROT,
    keys::DEVICE_KEY,
    keys::SCRAPPED,
];

/// A site's tag: the first 23 bits of SHA-256 of its name.
fn tag_of(site: &str) -> u64 {
    let d = Sha256::digest(site.as_bytes());
    let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    u64::from(v >> (32 - TAG_BITS))
}

/// The hub's name for entry `seq` of a site whose tag is `tag`.
fn mirror_seq(tag: u64, seq: u64) -> u64 {
    MIRROR_BIT | (tag << SEQ_BITS) | seq
}

/// The `(site tag, site seq)` a hub seq names, when it names a mirrored
/// site entry; `None` for the hub ledger's own entries.
pub fn site_entry(seq: u64) -> Option<(u64, u64)> {
    (seq & MIRROR_BIT != 0)
        .then_some(((seq & !MIRROR_BIT) >> SEQ_BITS, seq & ((1 << SEQ_BITS) - 1)))
}

fn hub_status(e: hub::Error) -> Status {
    Status::unavailable(format!("hub store: {e}"))
}

/// Opens the hub's own custody ledger (`<dir>/ledger/`), its checkpoints
/// signed by [`HUB_LEDGER_KEY`] on the hub token — made, with
/// `<dir>/ledger/ledger-key.pub.pem`, on first use — under `origin`.
///
/// # Errors
/// HSM failures; a public key file that is not the token's key; ledger
/// failures.
pub fn open_hub_ledger(dir: &Path, hsm: &Hsm, origin: &str) -> Result<custody_ledger::Ledger> {
    let key_file = dir.join(backends::layout::LEDGER_KEY_FILE);
    let signer = if hsm.key_exists(HUB_LEDGER_KEY)? {
        hsm.signer(HUB_LEDGER_KEY)?
    } else {
        if key_file.exists() {
            return Err(Error::Refused(format!(
                "{} exists but the hub token holds no key {HUB_LEDGER_KEY:?}",
                key_file.display()
            )));
        }
        let signer = hsm.generate_key(HUB_LEDGER_KEY)?;
        if let Some(parent) = key_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        ca_service::ca::write_atomically(&key_file, signer.public_key_pem().as_bytes())?;
        tracing::info!(label = HUB_LEDGER_KEY, "hub ledger key created");
        signer
    };
    let der = site::config::read_der(&key_file, "PUBLIC KEY")?;
    if der != signer.public_key_spki() {
        return Err(Error::Refused(format!(
            "{} is not the public key of {HUB_LEDGER_KEY:?} on the hub token",
            key_file.display()
        )));
    }
    let mut config = custody_ledger::LedgerConfig::new(dir.join(backends::layout::LEDGER_DIR));
    config.origin = origin.to_owned();
    custody_ledger::Ledger::open(config, Arc::new(signer))
        .map_err(|e| Error::Refused(format!("opening the hub ledger: {e}")))
}

/// The ownership service's ledger at the hub: the mirror for the factory's
/// facts, the hub ledger for field events (module doc).
pub struct HubLedger {
    hub: Hub,
    own: DirectLedger,
    reads: LocalLedgerReads<LedgerService>,
    /// Sites in name order with their tags.
    sites: Vec<(String, u64)>,
    by_tag: HashMap<u64, String>,
}

impl HubLedger {
    /// Over `hub`'s store and the hub ledger `ledger`.
    ///
    /// # Errors
    /// [`Error::Refused`] when two enrolled sites' tags collide (rename
    /// one).
    pub fn new(hub: Hub, ledger: &custody_ledger::Ledger) -> Result<Self> {
        let mut sites = Vec::new();
        let mut by_tag = HashMap::new();
        for config in hub.sites() {
            let tag = tag_of(&config.site);
            if let Some(other) = by_tag.insert(tag, config.site.clone()) {
                return Err(Error::Refused(format!(
                    "sites {other:?} and {:?} share the entry tag {tag:#x}: rename one",
                    config.site
                )));
            }
            sites.push((config.site.clone(), tag));
        }
        let identity = RequestIdentity::new(site::serve::provisioner_caller());
        Ok(Self {
            reads: LocalLedgerReads::new(Arc::new(LedgerService::new(ledger.clone())), identity),
            own: DirectLedger::new(ledger.clone()),
            hub,
            sites,
            by_tag,
        })
    }

    /// The hub's name of entry `seq` of `site` (module doc).
    ///
    /// # Errors
    /// [`Error::Refused`] for a site the hub does not know or a seq beyond
    /// 2^40.
    pub fn seq_of(&self, site: &str, seq: u64) -> Result<u64> {
        let tag = self
            .sites
            .iter()
            .find(|(s, _)| s == site)
            .map(|(_, t)| *t)
            .ok_or_else(|| Error::Refused(format!("site {site:?} is not enrolled")))?;
        if seq >> SEQ_BITS != 0 {
            return Err(Error::Refused(format!("site seq {seq} is beyond 2^40")));
        }
        Ok(mirror_seq(tag, seq))
    }

    fn mirror_lookup(&self, key: &v1::UniqueKey) -> Result<Option<u64>, Status> {
        let probe = Probe {
            keys: vec![encode_key(&key.namespace, &key.value)],
            ..Probe::default()
        };
        for (site, tag) in &self.sites {
            let prior = self.hub.store().prior(site, &probe).map_err(hub_status)?;
            if let Some(seq) = prior.key_holders.values().next() {
                return Ok(Some(mirror_seq(*tag, *seq)));
            }
        }
        Ok(None)
    }

    fn mirror_entry(&self, tag: u64, seq: u64) -> Result<Vec<u8>, Status> {
        let site = self
            .by_tag
            .get(&tag)
            .ok_or_else(|| Status::not_found(format!("no enrolled site has tag {tag:#x}")))?;
        self.hub
            .store()
            .entries(site, seq, seq.saturating_add(1))
            .map_err(hub_status)?
            .into_iter()
            .next()
            .ok_or_else(|| Status::not_found(format!("site {site} has no mirrored entry {seq}")))
    }
}

impl LedgerApi for HubLedger {
    fn append(
        &self,
        request: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>> {
        if let Some(k) = request
            .unique_keys
            .iter()
            .find(|k| FACTORY_NAMESPACES.contains(&k.namespace.as_str()))
        {
            let status = Status::failed_precondition(format!(
                "the hub records field events only; {:?} is a factory key",
                k.namespace
            ));
            return Box::pin(async move { Err(AppendRefusal::Failed(status)) });
        }
        self.own.append(request)
    }

    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        if FACTORY_NAMESPACES.contains(&key.namespace.as_str()) {
            return Box::pin(async move { self.mirror_lookup(&key) });
        }
        self.own.lookup_key(key)
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        match site_entry(seq) {
            Some((tag, seq)) => Box::pin(async move { self.mirror_entry(tag, seq) }),
            None => self.own.get_entry(seq),
        }
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        self.own.get_quota(counter)
    }

    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        self.own.publish_checkpoint()
    }
}

impl LedgerReads for HubLedger {
    /// The device's entries at every site that mirrored some (no inclusion
    /// proof: each is proven by its site's cosigned checkpoint, `trustline
    /// ledger verify` over the site's export), then its field events in the
    /// hub ledger, each proven against the hub ledger's checkpoint.
    fn device_history(&self, rot_id: String) -> BoxFuture<'_, Result<v1::DeviceHistory, Status>> {
        Box::pin(async move {
            let mut entries = Vec::new();
            for (site, tag) in &self.sites {
                let store = self.hub.store();
                for seq in store.device_entries(site, &rot_id).map_err(hub_status)? {
                    let entry = self.mirror_entry(*tag, seq)?;
                    entries.push(v1::ProvenEntry {
                        entry: Some(v1::StoredEntry {
                            seq: mirror_seq(*tag, seq),
                            entry,
                        }),
                        proof: None,
                    });
                }
            }
            let mut own = self.reads.device_history(rot_id).await?;
            entries.append(&mut own.entries);
            own.entries = entries;
            Ok(own)
        })
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        self.reads.checkpoint()
    }

    fn ledger_key(&self) -> BoxFuture<'_, Result<v1::LedgerKey, Status>> {
        self.reads.ledger_key()
    }
}

impl CloneRegistry for HubLedger {
    fn cross_site_clone(&self, rot_id: String) -> BoxFuture<'_, Result<Option<String>, Status>> {
        Box::pin(async move {
            let records = self
                .hub
                .devices(&DeviceQuery::RotId(rot_id.clone()))
                .map_err(hub_status)?;
            if !records.iter().any(|r| r.cross_site_clone) && records.len() < 2 {
                return Ok(None);
            }
            let mut parts = Vec::new();
            for clone in self.hub.clones().map_err(hub_status)? {
                if !clone.holders.iter().any(|h| h.rot_id == rot_id) {
                    continue;
                }
                let what = match clone.kind {
                    IdentityKind::Serial => {
                        format!("serial {}", String::from_utf8_lossy(&clone.value))
                    }
                    IdentityKind::RotId => "rot_id".to_owned(),
                    IdentityKind::DeviceKey => "device key".to_owned(),
                };
                let holders: Vec<String> = clone
                    .holders
                    .iter()
                    .map(|h| format!("{} entry {}", h.site, h.seq))
                    .collect();
                parts.push(format!(
                    "its {what} is certified at {}",
                    holders.join(" and ")
                ));
            }
            if parts.is_empty() {
                let sites: Vec<String> = records
                    .iter()
                    .map(|r| format!("{} entry {}", r.site, r.certified_seq))
                    .collect();
                parts.push(format!("it is certified at {}", sites.join(" and ")));
            }
            Ok(Some(parts.join("; ")))
        })
    }
}

/// The ownership service's CA at the hub: the OEM's keys on the hub token
/// (module doc). It issues no device certificate and makes no device key:
/// stations call their site for those.
pub struct HubCa {
    oem: Arc<OemSigner>,
    intermediates: Vec<Vec<u8>>,
}

impl HubCa {
    /// Over the OEM's keys, offering `intermediates` (every enrolled site's
    /// intermediate, DER) and the root as the chain.
    pub fn new(oem: OemSigner, intermediates: Vec<Vec<u8>>) -> Self {
        Self {
            oem: Arc::new(oem),
            intermediates,
        }
    }

    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&OemSigner) -> Result<T, ca_service::Error> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, Status>> {
        let oem = Arc::clone(&self.oem);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&oem))
                .await
                .map_err(|e| Status::internal(format!("the hub signer stopped: {e}")))?
                .map_err(Status::from)
        })
    }
}

fn no_issuance<T: Send + 'static>() -> BoxFuture<'static, Result<T, Status>> {
    Box::pin(async {
        Err(Status::failed_precondition(
            "the hub issues no device certificates and makes no device keys: stations call their site",
        ))
    })
}

impl CaApi for HubCa {
    fn issue(
        &self,
        _request: v1::IssueDeviceCertificateRequest,
    ) -> BoxFuture<'_, Result<v1::IssueDeviceCertificateResponse, Status>> {
        no_issuance()
    }

    fn generate_wrapped_key(
        &self,
        _request: v1::GenerateWrappedKeyRequest,
    ) -> BoxFuture<'_, Result<v1::WrappedDeviceKey, Status>> {
        no_issuance()
    }

    fn get_chain(&self) -> BoxFuture<'_, Result<v1::CertificateChain, Status>> {
        let mut certificates = self.intermediates.clone();
        certificates.push(self.oem.root_der().to_vec());
        let voucher_public_key = self.oem.voucher_public_key_der().to_vec();
        Box::pin(async move {
            Ok(v1::CertificateChain {
                certificates,
                voucher_public_key,
            })
        })
    }

    fn sign_voucher_entry(&self, entry_payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        self.blocking(move |oem| oem.sign_voucher_entry(&entry_payload))
    }

    fn sign_fdo_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        self.blocking(move |oem| oem.sign_fdo_voucher_entry(&entry_payload))
    }

    fn sign_sealed_voucher_entry(
        &self,
        entry_payload: Vec<u8>,
        rot_id: String,
        entry_index: u32,
    ) -> BoxFuture<'_, Result<v1::SignVoucherEntryResponse, Status>> {
        self.blocking(move |oem| {
            let sealed = oem.sign_and_seal_voucher_entry(&entry_payload, &rot_id, entry_index)?;
            Ok(v1::SignVoucherEntryResponse {
                cose_sign1: sealed.cose_sign1,
                sealed_entry: sealed.sealed,
            })
        })
    }

    fn unseal_voucher_entry(
        &self,
        rot_id: String,
        entry_index: u32,
        sealed_entry: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        self.blocking(move |oem| oem.unseal_voucher_entry(&rot_id, entry_index, &sealed_entry))
    }
}

impl CrlApi for HubCa {
    fn sign_crl(&self, request: v1::SignCrlRequest) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        self.blocking(move |oem| oem.sign_crl(&ca_service::service::crl_request(request)?))
    }
}

/// The ownership service at the hub over `hub` and the hub ledger: the
/// OEM's keys from `hsm`, the root certificate from `<dir>/ca/`, every
/// enrolled site's intermediate from `<dir>/sites/`.
///
/// `None` while no site is enrolled (the service would know no device and
/// no intermediate; restart after `hub enroll-site`, as for the witness).
///
/// # Errors
/// Missing keys or certificates; a site record whose intermediate is not
/// PEM; [`ownership::Error`]s of start-up (as [`Error::Refused`]).
pub async fn start_ownership(
    dir: &Path,
    hsm: &Hsm,
    hub: &Hub,
    ledger: &custody_ledger::Ledger,
    config: ownership::OwnershipConfig,
) -> Result<Option<ownership::Ownership>> {
    let oem = OemSigner::open(
        hsm.clone(),
        &dir.join(site::setup::CA_DIR),
        &ca_service::keys::KeyLabels::default(),
    )?;
    let intermediates = crate::hub::registered_sites(dir)?
        .iter()
        .map(|s| {
            pem::parse(&s.intermediate_pem)
                .map(|p| p.contents().to_vec())
                .map_err(|e| Error::Refused(format!("site {}: intermediate: {e}", s.site)))
        })
        .collect::<Result<Vec<_>>>()?;
    if intermediates.is_empty() {
        tracing::warn!("no site is enrolled: the ownership service is not served");
        return Ok(None);
    }
    let ca = Arc::new(HubCa::new(oem, intermediates));
    let field = Arc::new(HubLedger::new(hub.clone(), ledger)?);
    let backends = ownership::OwnershipBackends {
        ledger: field.clone(),
        reads: field.clone(),
        ca: ca.clone(),
        crl: ca,
        registry: Some(field),
    };
    ownership::Ownership::start(config, backends)
        .await
        .map(Some)
        .map_err(|e| Error::Refused(format!("starting the ownership service: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_entry_seq_round_trips_and_never_looks_like_a_hub_seq() {
        let tag = tag_of("site-a");
        assert!(tag < 1 << TAG_BITS);
        let seq = mirror_seq(tag, 41);
        assert_eq!(site_entry(seq), Some((tag, 41)));
        assert_eq!(site_entry(41), None);
        assert_ne!(tag_of("site-a"), tag_of("site-b"));
    }
}
