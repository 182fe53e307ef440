//! Physical inspection (2.4.14.10): an authorised actor holding a device
//! discovers and authenticates its RoT-backed identity live, and reads its
//! custody history from the ledger with every entry proven.
//!
//! [`inspect`] asks the device (over an [`InspectLink`]: a probe on the
//! device's programming or debug interface, or the simulated link) for its
//! `rot_id` and certificate chain, then sends it a fresh random challenge
//! that it must sign with its identity key. It checks:
//! - the chain: device ← site intermediate ← the OEM root the inspector
//!   trusts (byte for byte), signatures and validity;
//! - the device certificate names the device's `rot_id` (SAN
//!   `urn:trustline:rot:<rot_id>`) and the printed label, when given,
//!   encodes that `rot_id` (2.4.14.11);
//! - the identity proof verifies under the certified key and answers this
//!   challenge — copied public data without the key fails here;
//! - the history: the checkpoint's signature under the ledger key the
//!   inspector trusts, every entry's inclusion proof against it, every
//!   entry naming this device, each entry's `device_prev` the leaf hash of
//!   the entry before it (so no entry of the device was left out), and one
//!   `CERTIFIED` entry whose certificate is the one the device presented.
//!
//! Every failed check is a finding in the [`Inspection`]; the device is
//! authentic only when there is none. Nothing is recorded: inspection reads.

use std::future::Future;

use prost::Message;
use rand::RngCore;
use serde::Serialize;
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use x509_parser::extensions::GeneralName;

use backends::LedgerReads;
use provisioner::label;

use crate::error::{Error, Result};

/// What an inspector asks of a device in hand.
pub trait InspectLink: Send {
    /// The device's `rot_id`, as its RoT reports it.
    fn rot_id(&mut self) -> impl Future<Output = Result<String>> + Send;
    /// The certificate chain stored in the device (device certificate
    /// first).
    fn certificate_chain(&mut self) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// An `IdentityProof` over `challenge`, signed by the identity key.
    fn identity_proof(
        &mut self,
        challenge: &[u8],
    ) -> impl Future<Output = Result<v1::SignedStatement>> + Send;
}

/// What the inspector trusts.
#[derive(Debug, Clone)]
pub struct InspectConfig {
    /// The OEM root certificate, DER.
    pub oem_root: Vec<u8>,
    /// The ledger's checkpoint public key, SubjectPublicKeyInfo DER.
    pub ledger_key: Vec<u8>,
    /// The expected checkpoint origin, if known.
    pub origin: Option<String>,
    /// The label printed on the device, as read by the inspector.
    pub label: Option<String>,
}

/// One entry of the device's proven history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// Sequence number.
    pub seq: u64,
    /// Unix ms.
    pub time_ms: i64,
    /// The event kind, e.g. `CERTIFIED`.
    pub kind: String,
    /// Who caused it (`station/site/name`, or a role for ownership steps).
    pub actor: String,
    /// The site named, if any.
    pub site: String,
    /// Whether its inclusion proof verified against the checkpoint.
    pub proven: bool,
}

/// The result of an inspection.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The device's `rot_id`.
    pub rot_id: String,
    /// The product serial (from the `CERTIFIED` entry).
    pub serial: String,
    /// Whether the printed label matched, when one was given.
    pub label_matches: Option<bool>,
    /// The chain verified to the OEM root.
    pub chain_verified: bool,
    /// The device answered the challenge with its certified identity key.
    pub identity_proven: bool,
    /// The checkpoint the history is proven against (size, hex root).
    pub checkpoint_size: u64,
    /// Hex root hash of that checkpoint.
    pub checkpoint_root: String,
    /// The proven history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// What is wrong; empty when the device is authentic and its history
    /// proven.
    pub findings: Vec<String>,
}

impl Inspection {
    /// No finding: the identity is authentic and the history proven.
    pub fn authentic(&self) -> bool {
        self.findings.is_empty()
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!("device {} (serial {})\n", self.rot_id, self.serial);
        let yes = |b: bool| if b { "ok" } else { "FAILED" };
        if let Some(m) = self.label_matches {
            out.push_str(&format!("  printed label:      {}\n", yes(m)));
        }
        out.push_str(&format!(
            "  chain to oem root:  {}\n",
            yes(self.chain_verified)
        ));
        out.push_str(&format!(
            "  live identity:      {}\n",
            yes(self.identity_proven)
        ));
        out.push_str(&format!(
            "  custody history, proven against checkpoint {} (root {}):\n",
            self.checkpoint_size, self.checkpoint_root
        ));
        for e in &self.history {
            out.push_str(&format!(
                "    #{:<6} {:<24} {:<22} {:<28} {}\n",
                e.seq,
                rfc3339(e.time_ms),
                e.kind,
                e.actor,
                if e.proven { "proven" } else { "NOT PROVEN" }
            ));
        }
        if self.findings.is_empty() {
            out.push_str("AUTHENTIC\n");
        } else {
            for f in &self.findings {
                out.push_str(&format!("  finding: {f}\n"));
            }
            out.push_str("NOT AUTHENTIC\n");
        }
        out
    }
}

/// Unix ms as RFC 3339 (UTC), or the number when out of range.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Inspects the device on `link` (see the module doc).
///
/// # Errors
/// [`Error::Device`] when the device does not answer; [`Error::Backend`]
/// when the ledger cannot be read. Failed checks are findings, not errors.
pub async fn inspect<L: InspectLink>(
    link: &mut L,
    reads: &dyn LedgerReads,
    config: &InspectConfig,
) -> Result<Inspection> {
    let mut findings = Vec::new();
    let rot_id = link.rot_id().await?;
    if !trustline_proto::identity::is_well_formed_rot_id(&rot_id) {
        return Err(Error::Device(format!(
            "the device reports a malformed rot_id {rot_id:?}"
        )));
    }
    let chain = link.certificate_chain().await?;

    // The identity, live.
    let chain_verified = match check_chain(&chain, &config.oem_root, &rot_id) {
        Ok(()) => true,
        Err(e) => {
            findings.push(e);
            false
        }
    };
    let mut challenge = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    let proof = link.identity_proof(&challenge).await?;
    let identity_proven = match chain.first().and_then(|c| spki_of(c)) {
        None => {
            findings.push("the device presented no parsable certificate".into());
            false
        }
        Some(spki) => {
            match statement::verify::<v1::IdentityProof>(&proof, &spki) {
                Ok(p) if p.rot_id == rot_id && p.challenge == challenge => true,
                Ok(_) => {
                    findings.push("the identity proof names another device or challenge".into());
                    false
                }
                Err(e) => {
                    findings.push(format!("the identity proof does not verify under the device certificate's key: {e}"));
                    false
                }
            }
        }
    };
    let label_matches = config.label.as_deref().map(|printed| {
        let m = label::matches(printed, &rot_id);
        if !m {
            findings.push(format!(
                "the printed label {printed:?} does not encode this device's rot_id"
            ));
        }
        m
    });

    // The custody history, proven.
    let history = reads
        .device_history(rot_id.clone())
        .await
        .map_err(Error::ledger)?;
    let (checkpoint_size, root) = match check_checkpoint(&history, config) {
        Ok(v) => v,
        Err(e) => {
            findings.push(e);
            (0, [0u8; 32])
        }
    };
    let mut entries = Vec::with_capacity(history.entries.len());
    let mut previous_leaf: Option<[u8; 32]> = None;
    let mut serial = String::new();
    let mut certified = 0usize;
    for proven in &history.entries {
        let Some(stored) = &proven.entry else {
            findings.push("the ledger returned a history entry without its bytes".into());
            continue;
        };
        let leaf = custody_ledger::merkle::leaf_hash(&stored.entry);
        let proven_ok = proven
            .proof
            .as_ref()
            .and_then(|p| custody_ledger::service::inclusion_from_wire(p).ok())
            .is_some_and(|p| {
                p.leaf_index == stored.seq
                    && custody_ledger::merkle::verify_inclusion(&leaf, &p, &root).is_ok()
            });
        if !proven_ok {
            findings.push(format!(
                "entry {} is not proven against the checkpoint",
                stored.seq
            ));
        }
        let Ok(entry) = v1::LedgerEntry::decode(stored.entry.as_slice()) else {
            findings.push(format!("entry {} does not decode", stored.seq));
            continue;
        };
        if entry.rot_id != rot_id || entry.seq != stored.seq {
            findings.push(format!(
                "entry {} names another device or position",
                stored.seq
            ));
        }
        let expected_prev = previous_leaf.map(|h| h.to_vec()).unwrap_or_default();
        if entry.device_prev != expected_prev {
            findings.push(format!(
                "entry {} does not follow the device's previous entry: the history is incomplete",
                stored.seq
            ));
        }
        previous_leaf = Some(leaf);
        let kind = EventKind::try_from(entry.kind).unwrap_or(EventKind::Unspecified);
        if kind == EventKind::Certified {
            certified += 1;
            serial.clone_from(&entry.serial);
            match v1::CertifiedPayload::decode(entry.payload.as_slice()) {
                Ok(p) if chain.first() == Some(&p.certificate) => {}
                _ => findings.push(format!(
                    "the device certificate is not the one recorded in entry {}",
                    stored.seq
                )),
            }
        }
        entries.push(HistoryEntry {
            seq: stored.seq,
            time_ms: entry.time_ms,
            kind: kind
                .as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_owned(),
            actor: entry.actor,
            site: entry.site,
            proven: proven_ok,
        });
    }
    if certified != 1 {
        findings.push(format!(
            "the ledger holds {certified} certifications of this device, expected one"
        ));
    }
    Ok(Inspection {
        rot_id,
        serial,
        label_matches,
        chain_verified,
        identity_proven,
        checkpoint_size,
        checkpoint_root: hex::encode(root),
        history: entries,
        findings,
    })
}

fn spki_of(certificate: &[u8]) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(certificate)
        .ok()
        .map(|(_, c)| c.public_key().raw.to_vec())
}

/// The chain leads to the trusted OEM root and names `rot_id`.
fn check_chain(
    chain: &[Vec<u8>],
    oem_root: &[u8],
    rot_id: &str,
) -> std::result::Result<(), String> {
    let [device, intermediate, root] = chain else {
        return Err(format!(
            "the device holds {} certificates, expected device, intermediate and root",
            chain.len()
        ));
    };
    if root.as_slice() != oem_root {
        return Err("the device's chain does not end at the trusted oem root".into());
    }
    ownership::verify_chain(device, intermediate, root, backends::now_ms())
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(device).map_err(|e| e.to_string())?;
    let expected = format!("{}{rot_id}", trustline_proto::ROT_URI_PREFIX);
    let names_rot = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::URI(u) if *u == expected))
        });
    if !names_rot {
        return Err("the device certificate does not name the device's rot_id".into());
    }
    Ok(())
}

/// The history's checkpoint, verified under the trusted ledger key.
fn check_checkpoint(
    history: &v1::DeviceHistory,
    config: &InspectConfig,
) -> std::result::Result<(u64, [u8; 32]), String> {
    let checkpoint = history
        .checkpoint
        .as_ref()
        .ok_or_else(|| "the ledger returned a history without its checkpoint".to_owned())?;
    let opened = custody_ledger::checkpoint::open(
        &checkpoint.note,
        &config.ledger_key,
        config.origin.as_deref(),
    )
    .map_err(|e| format!("the checkpoint does not verify under the ledger key: {e}"))?;
    if opened.size != checkpoint.size || opened.root.as_slice() != checkpoint.root_hash.as_slice() {
        return Err("the checkpoint's fields differ from its signed note".into());
    }
    Ok((opened.size, opened.root))
}
