//! Factory policy tests against the real CA on a SoftHSM2 test token and an
//! in-memory ledger double that applies unique keys and quotas as the
//! custody ledger does (the end-to-end suite in `tests/` uses the real one).
//! What a hostile station tries, and how a claim survives hiccups (issue
//! 12), is in `hostile`.

mod hostile;
mod split;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use hsm_sim::rot::{Fleet, SimulatedRot};
use prost::Message;
use tonic::Status;
use trustline_proto::signer::Signer;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use backends::{now_ms, AppendRefusal, CaApi, LedgerApi, LocalCa, RequestIdentity};

use super::*;

#[derive(Default)]
struct MemState {
    entries: Vec<Vec<u8>>,
    keys: HashMap<(String, Vec<u8>), u64>,
    quotas: HashMap<String, u64>,
    /// While set, every append fails as an unreachable ledger would.
    down: bool,
}

/// Unique keys and quotas checked and applied under one lock, like the
/// ledger's atomic append.
#[derive(Default)]
struct MemLedger(Mutex<MemState>);

impl MemLedger {
    fn kinds(&self) -> Vec<EventKind> {
        let state = self.0.lock().expect("lock");
        state
            .entries
            .iter()
            .map(|e| {
                EventKind::try_from(v1::LedgerEntry::decode(e.as_slice()).expect("entry").kind)
                    .expect("kind")
            })
            .collect()
    }

    fn count(&self, kind: EventKind) -> usize {
        self.kinds().into_iter().filter(|k| *k == kind).count()
    }

    fn set_down(&self, down: bool) {
        self.0.lock().expect("lock").down = down;
    }

    fn len(&self) -> usize {
        self.0.lock().expect("lock").entries.len()
    }

    /// The decoded entries from `from` on.
    fn entries_from(&self, from: usize) -> Vec<v1::LedgerEntry> {
        self.0.lock().expect("lock").entries[from..]
            .iter()
            .map(|e| v1::LedgerEntry::decode(e.as_slice()).expect("entry"))
            .collect()
    }
}

impl LedgerApi for MemLedger {
    fn append(
        &self,
        request: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>> {
        Box::pin(async move {
            let mut state = self.0.lock().expect("lock");
            if state.down {
                return Err(AppendRefusal::Failed(Status::unavailable("ledger down")));
            }
            for key in &request.unique_keys {
                if let Some(seq) = state.keys.get(&(key.namespace.clone(), key.value.clone())) {
                    return Err(AppendRefusal::Conflict {
                        key: Some(key.clone()),
                        holder_seq: Some(*seq),
                    });
                }
            }
            if let Some(q) = &request.quota {
                let used = state.quotas.get(&q.counter).copied().unwrap_or(0);
                if used >= q.limit {
                    return Err(AppendRefusal::Quota {
                        used,
                        limit: q.limit,
                    });
                }
            }
            let seq = state.entries.len() as u64;
            let draft = request.draft.clone().unwrap_or_default();
            let entry = v1::LedgerEntry {
                seq,
                time_ms: now_ms(),
                kind: draft.kind,
                rot_id: draft.rot_id,
                serial: draft.serial,
                site: draft.site,
                actor: draft.actor,
                order_id: draft.order_id,
                payload: draft.payload,
                prev_hash: vec![0; 32],
                device_prev: vec![],
                unique_keys: request.unique_keys.clone(),
                quota: request.quota.clone(),
            }
            .encode_to_vec();
            for key in request.unique_keys {
                state.keys.insert((key.namespace, key.value), seq);
            }
            if let Some(q) = request.quota {
                *state.quotas.entry(q.counter).or_insert(0) += 1;
            }
            state.entries.push(entry.clone());
            Ok(v1::AppendResponse {
                seq,
                entry,
                leaf_hash: vec![],
            })
        })
    }

    fn lookup_key(&self, key: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async move {
            Ok(self
                .0
                .lock()
                .expect("lock")
                .keys
                .get(&(key.namespace, key.value))
                .copied())
        })
    }

    fn get_entry(&self, seq: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            self.0
                .lock()
                .expect("lock")
                .entries
                .get(seq as usize)
                .cloned()
                .ok_or_else(|| Status::not_found("no entry"))
        })
    }

    fn get_quota(&self, counter: String) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            Ok(self
                .0
                .lock()
                .expect("lock")
                .quotas
                .get(&counter)
                .copied()
                .unwrap_or(0))
        })
    }

    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async { Err(Status::unimplemented("no checkpoints in the test double")) })
    }
}

struct Line {
    factory: Factory,
    ledger: Arc<MemLedger>,
    ca: Arc<dyn CaApi>,
    config: FactoryConfig,
    order_signer: ca_service::HsmSigner,
    fleet: Fleet,
    /// Vendor names orders allow: the fleet's and any extra ones.
    vendors: Vec<String>,
    _dir: tempfile::TempDir,
}

fn station() -> Actor {
    station_of("site-a", "st-01")
}

fn station_of(site: &str, name: &str) -> Actor {
    Actor {
        id: format!("station/{site}/{name}"),
        scope: transport::SiteScope::Site(site.into()),
    }
}

fn admin() -> Actor {
    Actor {
        id: "admin/hq/oem".into(),
        scope: transport::SiteScope::Any,
    }
}

async fn line(name: &str, fleet: Fleet) -> Line {
    line_with(name, fleet, vec![]).await
}

/// A line trusting `fleet`'s vendors and `extra` roots.
async fn line_with(name: &str, fleet: Fleet, extra: Vec<VendorRoot>) -> Line {
    let token = hsm_sim::softhsm::test_token(name).expect("token");
    let mut config = ca_service::HsmConfig::new(
        token.label.clone(),
        ca_service::PinSource::File(token.pin_file.clone()),
    );
    config.module = Some(token.module.clone());
    let hsm = ca_service::Hsm::open(&config).expect("hsm");
    let dir = tempfile::tempdir().expect("dir");
    ca_service::ca::init(&hsm, &ca_service::InitOptions::default(), dir.path()).expect("ca init");
    let labels = ca_service::keys::KeyLabels::default();
    let order_signer = hsm.signer(&labels.order).expect("order key");
    let ca = ca_service::Ca::open(hsm, dir.path(), &labels).expect("ca");
    let identity = RequestIdentity::new(
        transport::Caller::new(transport::Role::Provisioner, "hq", "provisioner").expect("caller"),
    );
    let ca: Arc<dyn CaApi> = Arc::new(LocalCa::new(
        Arc::new(ca_service::CaService::new(Arc::new(ca))),
        identity,
    ));
    let ledger = Arc::new(MemLedger::default());
    let mut vendor_roots: Vec<VendorRoot> = fleet
        .vendor_roots()
        .into_iter()
        .map(|(name, certificate)| VendorRoot { name, certificate })
        .collect();
    vendor_roots.extend(extra);
    let vendors = vendor_roots.iter().map(|v| v.name.clone()).collect();
    let config = FactoryConfig::new(
        order_signer.public_key_der().to_vec(),
        vendor_roots,
        ClaimKey::ephemeral().expect("claim key"),
    );
    let factory = Factory::start(config.clone(), ledger.clone(), ca.clone())
        .await
        .expect("factory");
    Line {
        factory,
        ledger,
        ca,
        config,
        order_signer,
        fleet,
        vendors,
        _dir: dir,
    }
}

impl Line {
    fn order(
        &self,
        id: &str,
        site: &str,
        quantity: u64,
        window: (i64, i64),
    ) -> v1::SignedStatement {
        let order = v1::ProductionOrder {
            order_id: id.into(),
            sku: "SKU-1".into(),
            site: site.into(),
            quantity,
            serial_scheme: Some(v1::SerialScheme {
                prefix: "SN".into(),
                first: 1,
                last: 1000,
                digits: 6,
            }),
            not_before_ms: window.0,
            not_after_ms: window.1,
            allowed_ic_vendors: self.vendors.clone(),
            allowed_firmware_sha256: self.fleet.firmware_sha256().to_vec(),
            ..Default::default()
        };
        trustline_proto::statement::sign(&self.order_signer, &order).expect("sign order")
    }

    async fn open(&self, id: &str, quantity: u64) {
        self.open_at(id, "site-a", quantity).await;
    }

    async fn open_at(&self, id: &str, site: &str, quantity: u64) {
        let signed = self.order(id, site, quantity, (0, i64::MAX));
        self.factory
            .open_order(&admin(), &signed)
            .await
            .expect("open order");
    }

    /// The factory restarted: a new process over the same ledger, CA and
    /// configuration (the claim key included).
    async fn restart(&mut self) {
        self.factory = Factory::start(self.config.clone(), self.ledger.clone(), self.ca.clone())
            .await
            .expect("factory");
    }

    /// Claims `rot` under `order` as `actor`; returns the challenge.
    async fn claim(
        &self,
        actor: &Actor,
        order: &str,
        rot: &mut SimulatedRot,
    ) -> Result<ClaimChallenge> {
        let challenge = self
            .factory
            .begin_claim(actor, order, &rot.attestation())
            .await?;
        let receipt = rot
            .claim(&challenge.nonce, &challenge.anchor)
            .expect("device claim");
        self.factory
            .complete_claim(actor, &receipt, &rot.attestation())
            .await?;
        Ok(challenge)
    }

    /// Claims and personalises `rot` on-device; returns the certify input.
    async fn prepare(
        &self,
        order: &str,
        rot: &mut SimulatedRot,
        serial: &str,
    ) -> Result<CertifyInput> {
        let challenge = self.claim(&station(), order, rot).await?;
        let (_, ka) = rot.generate_identity_key(&challenge.nonce).expect("keygen");
        let pop = rot
            .proof_of_possession(serial, &challenge.nonce)
            .expect("pop");
        Ok(CertifyInput {
            order_id: order.into(),
            rot_id: challenge.rot_id,
            serial: serial.into(),
            key_attestation: ka,
            subject: SubjectKey::Proof(pop),
        })
    }
}

fn take(fleet: &mut Fleet, i: usize) -> SimulatedRot {
    let devices = fleet.devices_mut();
    std::mem::replace(
        &mut devices[i].rot,
        Fleet::builder()
            .genuine(1)
            .build()
            .expect("spare")
            .into_devices()
            .remove(0)
            .rot,
    )
}

#[tokio::test]
async fn a_device_is_certified_once_and_a_retry_is_replayed() {
    let fleet = Fleet::builder().seed(1).genuine(2).build().expect("fleet");
    let mut line = line("factory-happy", fleet).await;
    line.open("PO-1", 10).await;
    let mut rot = take(&mut line.fleet, 0);
    let input = line
        .prepare("PO-1", &mut rot, "SN000001")
        .await
        .expect("prepared");
    let first = line
        .factory
        .certify(&station(), input.clone())
        .await
        .expect("certified");
    assert!(!first.replayed);
    assert_eq!(first.chain.len(), 3);
    assert!(label::matches(&first.label, &input.rot_id));
    rot.store_certification(&first.chain, &first.voucher)
        .expect("device accepts it");
    let again = line
        .factory
        .certify(&station(), input)
        .await
        .expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.chain, first.chain);
    assert_eq!(again.ledger_seq, first.ledger_seq);
    assert_eq!(line.ledger.count(EventKind::Certified), 1);
    assert_eq!(line.ledger.count(EventKind::DuplicateRejected), 0);
}

#[tokio::test]
async fn duplicates_clones_counterfeits_and_overproduction_are_refused_and_recorded() {
    let fleet = Fleet::builder()
        .seed(2)
        .genuine(3)
        .key_clones(1)
        .impostors(1)
        .self_signed(1)
        .unknown_vendor(1)
        .build()
        .expect("fleet");
    let mut line = line("factory-refusals", fleet).await;
    line.open("PO-2", 2).await;
    let mut a = take(&mut line.fleet, 0);
    let mut b = take(&mut line.fleet, 1);
    let mut c = take(&mut line.fleet, 2);
    let input = line.prepare("PO-2", &mut a, "SN000001").await.expect("a");
    line.factory
        .certify(&station(), input)
        .await
        .expect("a certified");

    // Same serial on another device.
    let input = line.prepare("PO-2", &mut b, "SN000001").await.expect("b");
    let err = line
        .factory
        .certify(&station(), input.clone())
        .await
        .expect_err("duplicate serial");
    assert!(
        matches!(&err, Error::Duplicate { namespace, .. } if namespace == "serial"),
        "{err}"
    );
    assert_eq!(Status::from(err).code(), tonic::Code::AlreadyExists);
    // The device with a fresh serial goes through; the third exceeds quota 2.
    let input = CertifyInput {
        serial: "SN000002".into(),
        subject: SubjectKey::Proof(
            b.proof_of_possession("SN000002", &input_nonce(&input))
                .expect("pop"),
        ),
        ..input
    };
    line.factory
        .certify(&station(), input)
        .await
        .expect("b certified");
    let input = line.prepare("PO-2", &mut c, "SN000003").await.expect("c");
    let err = line
        .factory
        .certify(&station(), input)
        .await
        .expect_err("quota");
    assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
    assert_eq!(line.ledger.count(EventKind::QuotaRejected), 1);

    // Clone of a claimed die: a second claim, answered with a presence
    // challenge that only a die holding the attestation key can sign.
    let devices = line.fleet.devices_mut();
    let clone = &mut devices[3].rot;
    let err = line
        .factory
        .begin_claim(&station(), "PO-2", &clone.attestation())
        .await
        .expect_err("clone");
    let Error::AlreadyClaimed {
        presence: Some(presence),
        ..
    } = err
    else {
        panic!("no presence challenge: {err}");
    };
    let proof = clone
        .claim(&presence.nonce, &presence.anchor)
        .expect("the clone signs");
    let err = line
        .factory
        .complete_claim(&station(), &proof, &clone.attestation())
        .await
        .expect_err("a proven clone");
    assert!(matches!(err, Error::AlreadyClaimed { .. }), "{err}");
    // An impostor carrying the claimed die's chain on another key: its
    // answer to the presence challenge does not verify, so it proves
    // nothing and nothing is recorded against the die it imitates.
    let impostor = &mut line.fleet.devices_mut()[4].rot;
    let err = line
        .factory
        .begin_claim(&station(), "PO-2", &impostor.attestation())
        .await
        .expect_err("impostor");
    let Error::AlreadyClaimed {
        presence: Some(presence),
        ..
    } = err
    else {
        panic!("no presence challenge: {err}");
    };
    let forged = impostor
        .claim(&presence.nonce, &presence.anchor)
        .expect("the impostor signs with its own key");
    let err = line
        .factory
        .complete_claim(&station(), &forged, &impostor.attestation())
        .await
        .expect_err("unproven");
    assert!(
        matches!(err, Error::AlreadyClaimed { presence: None, .. }),
        "{err}"
    );
    // Self-signed, unknown vendor.
    for i in 5..7 {
        let att = line.fleet.devices()[i].rot.attestation();
        let err = line
            .factory
            .begin_claim(&station(), "PO-2", &att)
            .await
            .expect_err("counterfeit");
        assert!(matches!(err, Error::Counterfeit(_)), "device {i}: {err}");
        assert_eq!(Status::from(err).code(), tonic::Code::FailedPrecondition);
    }
    assert_eq!(line.ledger.count(EventKind::CounterfeitRejected), 2);
    assert_eq!(line.ledger.count(EventKind::DuplicateRejected), 2);
    assert_eq!(line.ledger.count(EventKind::Certified), 2);
}

fn input_nonce(input: &CertifyInput) -> Vec<u8> {
    trustline_proto::statement::decode_unverified::<v1::KeyAttestation>(&input.key_attestation)
        .expect("ka")
        .challenge
}

#[tokio::test]
async fn orders_are_checked_for_site_window_and_signature() {
    let fleet = Fleet::builder().seed(3).genuine(1).build().expect("fleet");
    let line = line("factory-orders", fleet).await;
    let att = line.fleet.devices()[0].rot.attestation();
    let err = line
        .factory
        .begin_claim(&station(), "nope", &att)
        .await
        .expect_err("unknown");
    assert_eq!(Status::from(err).code(), tonic::Code::NotFound);
    let expired = line.order("PO-old", "site-a", 5, (0, 1000));
    line.factory
        .open_order(&admin(), &expired)
        .await
        .expect("open");
    let err = line
        .factory
        .begin_claim(&station(), "PO-old", &att)
        .await
        .expect_err("expired");
    assert_eq!(Status::from(err).code(), tonic::Code::FailedPrecondition);
    let other = line.order("PO-b", "site-b", 5, (0, i64::MAX));
    line.factory
        .open_order(&admin(), &other)
        .await
        .expect("open");
    let err = line
        .factory
        .begin_claim(&station(), "PO-b", &att)
        .await
        .expect_err("site");
    assert_eq!(Status::from(err).code(), tonic::Code::PermissionDenied);
    let err = line
        .factory
        .open_order(&admin(), &other)
        .await
        .expect_err("twice");
    assert_eq!(Status::from(err).code(), tonic::Code::AlreadyExists);
    let mut forged = line.order("PO-f", "site-a", 5, (0, i64::MAX));
    forged.signature[10] ^= 1;
    let err = line
        .factory
        .open_order(&admin(), &forged)
        .await
        .expect_err("forged");
    assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
}

/// 2.4.14.16: the firmware the RoT attests must be the order's, and its
/// readout must be locked, before a certificate is issued.
#[tokio::test]
async fn wrong_firmware_and_an_unlocked_readout_are_refused_before_issuance() {
    let fleet = Fleet::builder()
        .seed(4)
        .genuine(1)
        .wrong_firmware(1)
        .readout_unlocked(1)
        .build()
        .expect("fleet");
    let mut line = line("factory-firmware", fleet).await;
    line.open("PO-4", 3).await;
    let mut genuine = take(&mut line.fleet, 0);
    let mut tampered = take(&mut line.fleet, 1);
    let mut unlocked = take(&mut line.fleet, 2);

    let input = line
        .prepare("PO-4", &mut tampered, "SN000001")
        .await
        .expect("claimed");
    let err = line
        .factory
        .certify(&station(), input)
        .await
        .expect_err("tampered firmware");
    assert!(matches!(err, Error::FirmwareNotAllowed { .. }), "{err}");
    assert_eq!(Status::from(err).code(), tonic::Code::FailedPrecondition);

    let input = line
        .prepare("PO-4", &mut unlocked, "SN000002")
        .await
        .expect("claimed");
    let err = line
        .factory
        .certify(&station(), input)
        .await
        .expect_err("readout unlocked");
    assert!(matches!(err, Error::ReadoutNotLocked), "{err}");
    assert_eq!(Status::from(err).code(), tonic::Code::FailedPrecondition);
    assert_eq!(line.ledger.count(EventKind::Certified), 0);

    // The same order still certifies a genuine, locked device.
    let input = line
        .prepare("PO-4", &mut genuine, "SN000003")
        .await
        .expect("claimed");
    line.factory
        .certify(&station(), input)
        .await
        .expect("genuine certified");
    assert_eq!(line.ledger.count(EventKind::Certified), 1);
}

/// Invariant 1: a certificate the ledger did not record is never released —
/// with the ledger down, certify fails and returns no chain; once it is back,
/// the same device certifies with its (new) certificate recorded.
#[tokio::test]
async fn nothing_is_released_when_the_ledger_cannot_record_it() {
    let fleet = Fleet::builder().seed(5).genuine(1).build().expect("fleet");
    let mut line = line("factory-ledger-down", fleet).await;
    line.open("PO-5", 1).await;
    let mut rot = take(&mut line.fleet, 0);
    let input = line
        .prepare("PO-5", &mut rot, "SN000001")
        .await
        .expect("claimed");

    line.ledger.set_down(true);
    let err = line
        .factory
        .certify(&station(), input.clone())
        .await
        .expect_err("nothing without the ledger");
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert_eq!(Status::from(err).code(), tonic::Code::Unavailable);
    line.ledger.set_down(false);
    assert_eq!(line.ledger.count(EventKind::Certified), 0);

    let certified = line
        .factory
        .certify(&station(), input)
        .await
        .expect("certified once the ledger is back");
    assert!(!certified.replayed);
    let entry = v1::LedgerEntry::decode(
        line.ledger.0.lock().expect("lock").entries[certified.ledger_seq as usize].as_slice(),
    )
    .expect("entry");
    assert_eq!(entry.kind, EventKind::Certified as i32);
    assert_eq!(line.ledger.count(EventKind::Certified), 1);
}

/// 2.4.5.32, 2.4.14.17: a receipt is recorded only when the RoT signed it
/// over a nonce this site issued it, before the nonce expired, naming the
/// OEM anchor; an expired, forged, replayed or foreign-anchor receipt is
/// refused (only the impostor's forgery is recorded, as a counterfeit).
#[tokio::test]
async fn expired_forged_and_foreign_anchor_receipts_are_refused() {
    let mut fleet = Fleet::builder().seed(6).genuine(3).build().expect("fleet");
    let mut impostor = fleet.impostor(2).expect("impostor");
    let mut line = line("factory-receipts", fleet).await;
    line.open("PO-6", 10).await;
    let mut late = take(&mut line.fleet, 0);
    let mut foreign = take(&mut line.fleet, 1);

    // Expired: a line whose nonces expire at once.
    line.config.claim_ttl = std::time::Duration::ZERO;
    line.restart().await;
    let c = line
        .factory
        .begin_claim(&station(), "PO-6", &late.attestation())
        .await
        .expect("begin");
    let receipt = late.claim(&c.nonce, &c.anchor).expect("receipt");
    let err = line
        .factory
        .complete_claim(&station(), &receipt, &late.attestation())
        .await
        .expect_err("expired");
    assert!(matches!(err, Error::NonceExpired), "{err}");
    line.config.claim_ttl = FactoryConfig::DEFAULT_CLAIM_TTL;
    line.restart().await;

    // A receipt naming another anchor.
    let c = line
        .factory
        .begin_claim(&station(), "PO-6", &foreign.attestation())
        .await
        .expect("begin");
    let receipt = foreign
        .claim(&c.nonce, b"someone else's anchor")
        .expect("receipt");
    let err = line
        .factory
        .complete_claim(&station(), &receipt, &foreign.attestation())
        .await
        .expect_err("foreign anchor");
    assert!(matches!(err, Error::AnchorMismatch { .. }), "{err}");

    // A receipt answering another die's nonce.
    let err = line
        .factory
        .complete_claim(&station(), &receipt, &late.attestation())
        .await
        .expect_err("another die's nonce");
    assert!(matches!(err, Error::NonceReplayed), "{err}");

    // A forgery: the chain is genuine, the signer is not the die.
    let c = line
        .factory
        .begin_claim(&station(), "PO-6", &impostor.attestation())
        .await
        .expect("begin");
    let forged = impostor.claim(&c.nonce, &c.anchor).expect("forged");
    let err = line
        .factory
        .complete_claim(&station(), &forged, &impostor.attestation())
        .await
        .expect_err("forged");
    assert!(matches!(err, Error::Counterfeit(_)), "{err}");
    assert_eq!(line.ledger.count(EventKind::CounterfeitRejected), 1);
    assert_eq!(line.ledger.count(EventKind::Claimed), 0);
}
