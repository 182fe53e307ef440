//! Certification (DESIGN "factory flow" step 5; invariants 1, 2 and 4;
//! 2.4.14.3/4/9/16/17/18/22).
//!
//! Before the CA signs anything, a `Certify` request must show: a usable
//! order of the caller's site, a serial in the order's scheme, a claim of
//! this RoT under this order, a key attestation by the RoT's attestation key
//! that answers the claim nonce, names the OEM anchor, the order's firmware
//! and locked readout, and (in HSM mode) a key this provisioner delivered to
//! this RoT; and a proof of possession (or CSR) signed by that key, for the
//! same serial, RoT and nonce.
//!
//! Every signature — the key attestation, the proof of possession or the
//! CSR's self-signature — is verified here, before any uniqueness lookup,
//! replay answer or ledger record (issue 12 item 2): key attestations are
//! public (they are in the ledger), so a request that has not proved it
//! holds the device key must not be able to make the factory record a
//! duplicate against a device it never held. (The CA verifies the proof
//! again before it signs; the second check costs one P-256 verification,
//! about 65 µs per device.) A station never names the first owner: the
//! service refuses a request that does ([`Error::FirstOwner`]) before this
//! code runs, and no voucher entry is signed here.
//!
//! Then the CA signs, the manufacturer voucher is built, and the ledger appends
//! `CERTIFIED` with unique keys `serial`, `rot`, `device-key` (SHA-256 of
//! the canonical SPKI) and the order's quota counter in one atomic, durable
//! write — its limit this site's share of the order's quantity (the whole
//! quantity, or its allocation of an order split across sites,
//! `Order::share`; invariant 4), or less while the offline
//! allowance binds (`crate::allowance`) — and, for an order with an FDO
//! block, the SHA-256 of the device's FDO header and its GUID as the unique
//! key `fdo-guid` (`crate::fdo`). Only after that
//! append is acknowledged are the chain, label and voucher returned
//! (invariant 1). A collision or an exhausted quota is `crate::collisions`'
//! to answer: a retry of this very device, key and serial gets the stored
//! result, anything else is recorded and refused.
//!
//! The ledger's constraints are the authority (they hold under any
//! concurrency and across restarts); the lookups made before signing only
//! spare the HSM a signature for a request that would be refused. When two
//! stations race past them, the loser's certificate is signed but never
//! recorded and never released.

use std::sync::Arc;

use backends::{append_request, keys, AppendRefusal, BoundedCache};
use sha2::{Digest, Sha256};
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::v1::{EventKind, PersonalisationMode};
use x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256;
use x509_parser::prelude::FromDer;

use crate::claim::ClaimedRot;
use crate::collisions::namespace_name;
use crate::error::{Error, Result};
use crate::orders::Order;
use crate::{draft, fdo, key_hash, label, voucher, Actor, Factory};

/// Largest CSR accepted here (the CA applies its own limit too).
const MAX_CSR_LEN: usize = 4096;

/// How the device proves it holds the key to be certified.
#[derive(Debug, Clone)]
pub enum SubjectKey {
    /// A `ProofOfPossession` signed by the device key.
    Proof(v1::SignedStatement),
    /// A PKCS#10 CSR signed by the device key, DER.
    Csr(Vec<u8>),
}

/// A `Certify` request.
#[derive(Debug, Clone)]
pub struct CertifyInput {
    /// The order.
    pub order_id: String,
    /// The RoT.
    pub rot_id: String,
    /// The product serial.
    pub serial: String,
    /// The RoT's signed key attestation.
    pub key_attestation: v1::SignedStatement,
    /// Proof of possession of the device key.
    pub subject: SubjectKey,
}

/// What a certified device receives.
#[derive(Debug, Clone)]
pub struct Certified {
    /// DER: device certificate, site intermediate, OEM root.
    pub chain: Vec<Vec<u8>>,
    /// The physical label (2.4.14.11).
    pub label: String,
    /// The manufacturer ownership voucher (no entries yet), CBOR.
    pub voucher: Vec<u8>,
    /// The `CERTIFIED` entry.
    pub ledger_seq: u64,
    /// True when this answers a retry.
    pub replayed: bool,
}

#[derive(Debug)]
pub(crate) struct CachedResult {
    pub(crate) serial: String,
    /// SHA-256 of the canonical device key.
    pub(crate) device_key_hash: Vec<u8>,
    pub(crate) result: Certified,
}

/// Recent results by rot_id, so a retry is answered without a ledger read:
/// a [`BoundedCache`], since every result — chain, label and manufacturer
/// voucher — is rebuilt exactly from its `CERTIFIED` entry when it is not
/// here (see `crate::collisions`).
#[derive(Debug)]
pub(crate) struct ResultCache {
    results: BoundedCache<String, Arc<CachedResult>>,
}

impl ResultCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            results: BoundedCache::new(capacity),
        }
    }

    pub(crate) fn get(&self, rot_id: &str) -> Option<Arc<CachedResult>> {
        self.results.get(rot_id)
    }

    fn insert(&self, rot_id: String, value: CachedResult) {
        self.results.insert(rot_id, Arc::new(value));
    }
}

/// What the checks established about the device.
pub(crate) struct Checked {
    /// The device key as the key attestation names it.
    pub(crate) device_key: Vec<u8>,
    /// SHA-256 of its canonical SPKI: what uniqueness and retries compare.
    pub(crate) device_key_hash: Vec<u8>,
    pub(crate) mode: PersonalisationMode,
}

impl Factory {
    /// Certifies a claimed, personalised device (see the module doc).
    ///
    /// # Errors
    /// Order errors ([`Error::UnknownOrder`], [`Error::WrongSite`],
    /// [`Error::OrderClosed`], [`Error::OrderOutsideWindow`]);
    /// [`Error::Invalid`], [`Error::BadSignature`] (any signature that does
    /// not verify, before anything is looked up or recorded),
    /// [`Error::NotClaimed`],
    /// [`Error::AnchorMismatch`], [`Error::FirmwareNotAllowed`],
    /// [`Error::ReadoutNotLocked`], [`Error::KeyNotDelivered`];
    /// [`Error::Duplicate`] and [`Error::QuotaExhausted`] (both recorded);
    /// [`Error::Backend`].
    pub async fn certify(&self, actor: &Actor, input: CertifyInput) -> Result<Certified> {
        let known = self.usable_order(actor, &input.order_id).await?;
        let order = &known.order;
        // This site's share (2.4.14.22, invariant 4): its quota limit.
        let share = self.share(actor, order)?;
        if order.serials.parse(&input.serial).is_none() {
            return Err(Error::Invalid(format!(
                "serial {:?} is not in the serial scheme of order {}",
                input.serial, order.id
            )));
        }
        let claim = self.claimed(&input.rot_id).await?;
        if claim.order_id != order.id {
            return Err(Error::NotClaimed(input.rot_id.clone()));
        }
        let checked = self.check_attestation(order, &claim, &input).await?;

        // A retry answered from memory.
        if let Some(hit) = self.certified.get(&input.rot_id) {
            if hit.serial == input.serial && hit.device_key_hash == checked.device_key_hash {
                return Ok(Certified {
                    replayed: true,
                    ..hit.result.clone()
                });
            }
            return Err(self
                .duplicate(actor, order, &input, keys::ROT, hit.result.ledger_seq)
                .await);
        }

        // Spare the HSM a signature for a request the ledger would refuse.
        let device_key_hash = checked.device_key_hash.clone();
        let (by_rot, by_serial, by_key, used, limit) = futures::try_join!(
            self.lookup(keys::ROT, input.rot_id.as_bytes()),
            self.lookup(keys::SERIAL, input.serial.as_bytes()),
            self.lookup(keys::DEVICE_KEY, &device_key_hash),
            async {
                self.ledger
                    .get_quota(order.quota_counter())
                    .await
                    .map_err(Error::ledger)
            },
            self.certify_limit(order, &share),
        )?;
        for (namespace, holder) in [
            (keys::ROT, by_rot),
            (keys::SERIAL, by_serial),
            (keys::DEVICE_KEY, by_key),
        ] {
            if let Some(holder_seq) = holder {
                return self
                    .resolve_conflict(actor, order, &input, &checked, namespace, holder_seq)
                    .await;
            }
        }
        if used >= limit.value {
            return Err(self.limit_refused(actor, order, &input, used, &limit).await);
        }

        // The CA signs.
        let subject_key = match &input.subject {
            SubjectKey::Proof(proof) => {
                v1::issue_device_certificate_request::SubjectKey::PossessedKey(v1::PossessedKey {
                    public_key: checked.device_key.clone(),
                    proof: Some(proof.clone()),
                })
            }
            SubjectKey::Csr(der) => {
                v1::issue_device_certificate_request::SubjectKey::CsrDer(der.clone())
            }
        };
        let issued = self
            .ca
            .issue(v1::IssueDeviceCertificateRequest {
                product_serial: input.serial.clone(),
                rot_id: input.rot_id.clone(),
                subject_key: Some(subject_key),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => {
                    Error::Invalid(format!("the ca refused the request: {}", s.message()))
                }
                _ => Error::ca(s),
            })?;
        let chain = vec![
            issued.certificate,
            self.chain.intermediate.clone(),
            self.chain.root.clone(),
        ];

        // The manufacturer voucher: entry 0 is the OEM's to make, OEM-side.
        let voucher = voucher::manufacturer(
            &input.rot_id,
            &input.serial,
            &chain,
            &self.chain.voucher_public_key,
        )?;
        let label = label::label(&input.rot_id, &order.sku)?;
        // The FDO header, for an order with an FDO block (`crate::fdo`).
        let fdo = fdo::header(order, &voucher, &chain)?;

        // Recorded before released.
        let payload = v1::CertifiedPayload {
            certificate: chain[0].clone(),
            device_public_key: checked.device_key.clone(),
            mode: checked.mode as i32,
            key_attestation: Some(input.key_attestation.clone()),
            label: label.clone(),
            voucher_sha256: Sha256::digest(&voucher).to_vec(),
            first_owner: None,
            fdo_header_sha256: fdo
                .as_ref()
                .map(|(h, _)| Sha256::digest(h).to_vec())
                .unwrap_or_default(),
            fdo_header_hmac_sha256: vec![],
        };
        let entry = draft(
            EventKind::Certified,
            &input.rot_id,
            &input.serial,
            &share.site,
            actor,
            &order.id,
            &payload,
        );
        let mut unique = vec![
            keys::unique(keys::SERIAL, input.serial.as_bytes()),
            keys::unique(keys::ROT, input.rot_id.as_bytes()),
            keys::unique(keys::DEVICE_KEY, device_key_hash.clone()),
        ];
        if let Some((_, guid)) = &fdo {
            unique.push(keys::unique(keys::FDO_GUID, guid.to_vec()));
        }
        let request = append_request(
            entry,
            unique,
            Some(v1::QuotaUse {
                counter: order.quota_counter(),
                limit: limit.value,
            }),
        );
        match self.ledger.append(request).await {
            Ok(r) => {
                let result = Certified {
                    chain,
                    label,
                    voucher,
                    ledger_seq: r.seq,
                    replayed: false,
                };
                self.certified.insert(
                    input.rot_id.clone(),
                    CachedResult {
                        serial: input.serial.clone(),
                        device_key_hash,
                        result: result.clone(),
                    },
                );
                Ok(result)
            }
            Err(AppendRefusal::Conflict { key, holder_seq }) => {
                let (namespace, holder_seq) = match (key, holder_seq) {
                    (Some(k), Some(seq)) => (namespace_name(&k.namespace), seq),
                    _ => self.find_holder(&input, &device_key_hash).await?,
                };
                self.resolve_conflict(actor, order, &input, &checked, namespace, holder_seq)
                    .await
            }
            Err(AppendRefusal::Quota { used, .. }) => {
                Err(self.limit_refused(actor, order, &input, used, &limit).await)
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// Verifies the key attestation and the proof of possession (or CSR):
    /// every signature and every name, before anything is looked up.
    async fn check_attestation(
        &self,
        order: &Order,
        claim: &ClaimedRot,
        input: &CertifyInput,
    ) -> Result<Checked> {
        let ka: v1::KeyAttestation =
            statement::verify(&input.key_attestation, &claim.attestation_key)?;
        if ka.rot_id != claim.rot_id {
            return Err(Error::Invalid("key attestation names another rot".into()));
        }
        if ka.challenge != claim.nonce {
            return Err(Error::Invalid(
                "key attestation does not answer this claim's nonce".into(),
            ));
        }
        if ka.anchor_sha256 != self.chain.anchor_sha256 {
            return Err(Error::AnchorMismatch {
                found: hex::encode(&ka.anchor_sha256),
            });
        }
        if ka.firmware_sha256 != order.allowed_firmware_sha256 {
            return Err(Error::FirmwareNotAllowed {
                found: hex::encode(&ka.firmware_sha256),
            });
        }
        if !ka.readout_locked {
            return Err(Error::ReadoutNotLocked);
        }
        let device_key_hash = key_hash(&ka.device_public_key)?;
        let mode = match PersonalisationMode::try_from(ka.mode) {
            Ok(m @ (PersonalisationMode::OnDevice | PersonalisationMode::Hsm)) => m,
            _ => {
                return Err(Error::Invalid(
                    "key attestation names no personalisation mode".into(),
                ))
            }
        };
        match &input.subject {
            SubjectKey::Proof(proof) => {
                let pop: v1::ProofOfPossession = statement::verify(proof, &ka.device_public_key)?;
                if pop.rot_id != claim.rot_id
                    || pop.serial != input.serial
                    || pop.device_public_key != ka.device_public_key
                    || pop.challenge != claim.nonce
                {
                    return Err(Error::Invalid(
                        "proof of possession does not name this rot, serial, key and nonce".into(),
                    ));
                }
            }
            SubjectKey::Csr(der) => verify_csr(der, &device_key_hash)?,
        }
        // Only now a lookup: whether this provisioner delivered the key.
        if mode == PersonalisationMode::Hsm
            && !self.was_delivered(&claim.rot_id, &device_key_hash).await?
        {
            return Err(Error::KeyNotDelivered);
        }
        Ok(Checked {
            device_key: ka.device_public_key,
            device_key_hash,
            mode,
        })
    }
}

/// Checks that a CSR is for the attested key (its canonical hash is
/// `device_key_hash`) and that the key signed it (ECDSA P-256 / SHA-256).
fn verify_csr(der: &[u8], device_key_hash: &[u8]) -> Result<()> {
    if der.len() > MAX_CSR_LEN {
        return Err(Error::Invalid("csr is too large".into()));
    }
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| Error::Invalid(format!("csr does not parse: {e}")))?;
    let spki = csr.certification_request_info.subject_pki.raw;
    if key_hash(spki)? != device_key_hash {
        return Err(Error::Invalid(
            "csr is for another key than the attested one".into(),
        ));
    }
    if csr.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
        return Err(Error::Invalid(
            "csr is not signed with ecdsa-with-sha256".into(),
        ));
    }
    trustline_proto::ecdsa::verify_x509(
        spki,
        csr.certification_request_info.raw,
        &csr.signature_value.data,
    )
    .map_err(|_| Error::BadSignature("the csr's self-signature does not verify".into()))
}
