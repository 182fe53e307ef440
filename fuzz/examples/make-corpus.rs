//! Writes the seed corpora under `fuzz/corpus/<target>/` and checks them.
//!
//! Run from the repository root (it uses the fuzz crate's own target dir):
//!
//! ```text
//! CARGO_TARGET_DIR=fuzz/target cargo run --manifest-path fuzz/Cargo.toml --example make-corpus
//! ```
//!
//! Each target gets a handful of valid and near-valid inputs, signed with
//! the fixed keys of `trustline_fuzz::fixtures` so the fuzzer starts past
//! the signature checks. Seeds are named `ok-*` (the harness must accept
//! them) or `bad-*` (it must refuse them); after writing, every seed is run
//! through its harness and the program fails if one is not where its name
//! says. The old corpus of each target is replaced. Seeds that carry
//! fresh randomness (RNG-signed certificates, ledger times) differ from
//! run to run; the rest are byte-for-byte reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use custody_ledger::format::{self, UnverifiedRecord};
use custody_ledger::storage::SimStorage;
use custody_ledger::{Draft, EventKind, Ledger, LedgerConfig, QuotaUse, UniqueKey};
use prost::Message;
use rcgen::{CertificateParams, KeyPair, SanType};
use trustline_fuzz::fixtures::{self, key, spki, KeyName, ORIGIN, SERIAL, SITE};
use trustline_fuzz::input::chunk;
use trustline_fuzz::targets::{self, factory, ledger, statements, transport, voucher};
use trustline_fuzz::{Outcome, TARGETS};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::statement;
use trustline_proto::v1;
use trustline_proto::voucher::{self as tv, Voucher};

/// Seeds by target, by file name.
type Corpus = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut corpus = Corpus::new();
    statement_seeds(&mut corpus);
    order_seeds(&mut corpus);
    claim_seeds(&mut corpus);
    attestation_seeds(&mut corpus)?;
    device_request_seeds(&mut corpus)?;
    voucher_seeds(&mut corpus)?;
    ledger_seeds(&mut corpus)?;
    note_seeds(&mut corpus);
    caller_seeds(&mut corpus)?;
    device_answer_seeds(&mut corpus)?;
    for (target, _) in TARGETS {
        if !corpus.contains_key(target) {
            bail!("no seeds for target {target}");
        }
    }
    write(&root, &corpus)?;
    check(&corpus)
}

fn add(corpus: &mut Corpus, target: &'static str, name: &str, sel: u8, body: &[u8]) {
    let mut data = vec![sel];
    data.extend_from_slice(body);
    corpus
        .entry(target)
        .or_default()
        .push((name.to_owned(), data));
}

fn write(root: &Path, corpus: &Corpus) -> Result<()> {
    for (target, seeds) in corpus {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data)?;
        }
    }
    Ok(())
}

/// Every `ok-*` seed is accepted and every `bad-*` seed refused.
fn check(corpus: &Corpus) -> Result<()> {
    let mut wrong = Vec::new();
    for (target, harness) in TARGETS {
        let seeds = &corpus[target];
        for (name, data) in seeds {
            let expected = if name.starts_with("ok-") {
                Outcome::Accepted
            } else {
                Outcome::Refused
            };
            let got = harness(data);
            if got != expected {
                wrong.push(format!("{target}/{name}: {got:?}"));
            }
        }
        println!("{target:>16}: {} seeds", seeds.len());
    }
    if !wrong.is_empty() {
        bail!("seeds not where their names say:\n  {}", wrong.join("\n  "));
    }
    println!("every ok-* seed accepted, every bad-* seed refused");
    Ok(())
}

fn flip(mut b: Vec<u8>, at: usize) -> Vec<u8> {
    let i = at.min(b.len().saturating_sub(1));
    if let Some(x) = b.get_mut(i) {
        *x ^= 0x01;
    }
    b
}

fn signed<S: statement::Statement>(signer: &SoftwareSigner, message: &S) -> v1::SignedStatement {
    statement::sign(signer, message).expect("a software key signs")
}

// ---------------------------------------------------------------- statements

fn statement_seeds(c: &mut Corpus) {
    let rot_id = fixtures::rot_id();
    let bodies: [Vec<u8>; 8] = [
        v1::TransportKeyStatement {
            rot_id: rot_id.clone(),
            public_key: spki(KeyName::Transport).to_vec(),
        }
        .encode_to_vec(),
        v1::ClaimReceipt {
            rot_id: rot_id.clone(),
            nonce: vec![7; 32],
            anchor_sha256: fixtures::anchor_sha256().to_vec(),
        }
        .encode_to_vec(),
        v1::KeyAttestation {
            rot_id: rot_id.clone(),
            device_public_key: spki(KeyName::Device).to_vec(),
            challenge: vec![7; 32],
            firmware_sha256: fixtures::firmware_sha256().to_vec(),
            readout_locked: true,
            anchor_sha256: fixtures::anchor_sha256().to_vec(),
            mode: v1::PersonalisationMode::OnDevice as i32,
        }
        .encode_to_vec(),
        v1::ProofOfPossession {
            rot_id: rot_id.clone(),
            serial: SERIAL.into(),
            device_public_key: spki(KeyName::Device).to_vec(),
            challenge: vec![7; 32],
        }
        .encode_to_vec(),
        v1::IdentityProof {
            rot_id: rot_id.clone(),
            challenge: vec![9; 32],
        }
        .encode_to_vec(),
        v1::ResetProof {
            rot_id: rot_id.clone(),
            challenge: vec![9; 32],
            reset_counter: 1,
            user_area_sha256: vec![0; 32],
            state: v1::DeviceLifecycle::Decommissioned as i32,
        }
        .encode_to_vec(),
        order_body(),
        v1::OwnerAuthorization {
            rot_id,
            challenge: vec![9; 32],
            action: "onboard".into(),
            voucher_sha256: vec![3; 32],
        }
        .encode_to_vec(),
    ];
    for (kind, body) in bodies.iter().enumerate() {
        let kind = kind as u8;
        let name = statements::KINDS[usize::from(kind)].trim_start_matches("trustline.v1.");
        let domain = statements::KINDS[usize::from(kind)];
        let sign = |signer: &SoftwareSigner, body: &[u8]| {
            let signature = signer
                .sign(&statement::signing_input(domain, body))
                .expect("a software key signs");
            v1::SignedStatement {
                body: body.to_vec(),
                signature,
            }
            .encode_to_vec()
        };
        let rot = key(KeyName::Rot);
        add(
            c,
            "statement",
            &format!("ok-{name}-wire"),
            kind,
            &sign(rot, body),
        );
        add(
            c,
            "statement",
            &format!("ok-{name}-body"),
            kind | statements::SIGN,
            body,
        );
        add(
            c,
            "statement",
            &format!("bad-{name}-other-key"),
            kind,
            &sign(key(KeyName::Forger), body),
        );
        let mut altered = v1::SignedStatement::decode(sign(rot, body).as_slice()).expect("decodes");
        altered.body = flip(altered.body, 3);
        add(
            c,
            "statement",
            &format!("bad-{name}-altered"),
            kind,
            &altered.encode_to_vec(),
        );
    }
    // A claim receipt's signature presented as a key attestation.
    add(c, "statement", "bad-receipt-as-attestation", 2, &{
        let receipt = &bodies[1];
        let signature = key(KeyName::Rot)
            .sign(&statement::signing_input(statements::KINDS[1], receipt))
            .expect("signs");
        v1::SignedStatement {
            body: receipt.clone(),
            signature,
        }
        .encode_to_vec()
    });
}

fn order_proto() -> v1::ProductionOrder {
    v1::ProductionOrder {
        order_id: "order-1".into(),
        sku: "SKU-FUZZ".into(),
        site: SITE.into(),
        quantity: 100,
        serial_scheme: Some(v1::SerialScheme {
            prefix: "SN".into(),
            first: 1,
            last: 999_999,
            digits: 6,
        }),
        not_before_ms: fixtures::NOW_MS - 86_400_000,
        not_after_ms: fixtures::NOW_MS + 86_400_000,
        allowed_ic_vendors: fixtures::vendor_names(),
        allowed_firmware_sha256: fixtures::firmware_sha256().to_vec(),
        ..Default::default()
    }
}

fn order_body() -> Vec<u8> {
    order_proto().encode_to_vec()
}

fn order_seeds(c: &mut Corpus) {
    let body = order_body();
    let wire = signed(key(KeyName::Order), &order_proto()).encode_to_vec();
    add(c, "order", "ok-signed-wire", factory::WIRE, &wire);
    add(c, "order", "ok-body", factory::SIGNED, &body);
    add(c, "order", "bad-forged", factory::FORGED, &body);
    add(
        c,
        "order",
        "bad-wire-other-key",
        factory::WIRE,
        &signed(key(KeyName::Forger), &order_proto()).encode_to_vec(),
    );
    type Change = fn(&mut v1::ProductionOrder);
    let variants: [(&str, Change); 7] = [
        ("bad-empty-window", |o| o.not_after_ms = o.not_before_ms),
        ("bad-unknown-vendor", |o| {
            o.allowed_ic_vendors.push("Nobody Semiconductor".into())
        }),
        ("bad-quantity-over-scheme", |o| o.quantity = 1_000_000),
        ("bad-serial-too-wide", |o| {
            if let Some(s) = o.serial_scheme.as_mut() {
                s.digits = 3;
            }
        }),
        ("bad-site-token", |o| o.site = "site a".into()),
        ("bad-firmware-digest", |o| {
            o.allowed_firmware_sha256.truncate(31)
        }),
        ("ok-unpadded-serials", |o| {
            if let Some(s) = o.serial_scheme.as_mut() {
                s.digits = 0;
                s.first = 0;
                s.last = u64::MAX;
            }
            o.quantity = u64::MAX;
        }),
    ];
    for (name, change) in variants {
        let mut o = order_proto();
        change(&mut o);
        add(c, "order", name, factory::SIGNED, &o.encode_to_vec());
    }
}

// ---------------------------------------------------------------- claims

fn claim_seeds(c: &mut Corpus) {
    let receipt = |rot_id: String, anchor: Vec<u8>| {
        v1::ClaimReceipt {
            rot_id,
            nonce: Vec::new(),
            anchor_sha256: anchor,
        }
        .encode_to_vec()
    };
    let good = receipt(fixtures::rot_id(), fixtures::anchor_sha256().to_vec());
    add(c, "claim_receipt", "ok-body", factory::SIGNED, &good);
    add(c, "claim_receipt", "bad-forged", factory::FORGED, &good);
    add(
        c,
        "claim_receipt",
        "bad-other-anchor",
        factory::SIGNED,
        &receipt(fixtures::rot_id(), vec![1; 32]),
    );
    add(
        c,
        "claim_receipt",
        "bad-other-rot",
        factory::SIGNED,
        &receipt("ab".repeat(32), fixtures::anchor_sha256().to_vec()),
    );
    let stale = signed(
        key(KeyName::Rot),
        &v1::ClaimReceipt {
            rot_id: fixtures::rot_id(),
            nonce: vec![7; 32],
            anchor_sha256: fixtures::anchor_sha256().to_vec(),
        },
    );
    add(
        c,
        "claim_receipt",
        "bad-unknown-nonce-wire",
        factory::WIRE,
        &stale.encode_to_vec(),
    );

    let tks =
        |rot_id: String, public_key: Vec<u8>| v1::TransportKeyStatement { rot_id, public_key };
    let good = tks(fixtures::rot_id(), spki(KeyName::Transport).to_vec());
    add(
        c,
        "transport_key",
        "ok-wire",
        factory::WIRE,
        &signed(key(KeyName::Rot), &good).encode_to_vec(),
    );
    add(
        c,
        "transport_key",
        "ok-body",
        factory::SIGNED,
        &good.encode_to_vec(),
    );
    add(
        c,
        "transport_key",
        "bad-forged",
        factory::FORGED,
        &good.encode_to_vec(),
    );
    add(
        c,
        "transport_key",
        "bad-other-rot",
        factory::SIGNED,
        &tks("cd".repeat(32), spki(KeyName::Transport).to_vec()).encode_to_vec(),
    );
    add(
        c,
        "transport_key",
        "bad-not-p256",
        factory::SIGNED,
        &tks(fixtures::rot_id(), b"not a key".to_vec()).encode_to_vec(),
    );
}

fn attestation_seeds(c: &mut Corpus) -> Result<()> {
    use factory::attestation::*;
    let mut vendors = fixtures::ic_vendors();
    let acme = vendors[0].manufacture()?;
    let borealis = vendors[1].manufacture()?;
    let t = "rot_attestation";
    add(
        c,
        t,
        "ok-acme-wire",
        WIRE,
        &acme.attestation().encode_to_vec(),
    );
    add(
        c,
        t,
        "ok-borealis-wire",
        WIRE,
        &borealis.attestation().encode_to_vec(),
    );
    add(
        c,
        t,
        "ok-acme-die",
        DIE_UNDER_INTERMEDIATE,
        &acme.attestation_chain()[0],
    );
    add(
        c,
        t,
        "ok-borealis-die",
        DIE_UNDER_ROOT,
        &borealis.attestation_chain()[0],
    );
    add(
        c,
        t,
        "ok-acme-intermediate",
        INTERMEDIATE,
        fixtures::vendor_intermediate(),
    );
    add(
        c,
        t,
        "bad-acme-die-under-root",
        DIE_UNDER_ROOT,
        &acme.attestation_chain()[0],
    );
    add(
        c,
        t,
        "bad-acme-die-flipped",
        DIE_UNDER_INTERMEDIATE,
        &flip(acme.attestation_chain()[0].clone(), 200),
    );
    let mut with_root = acme.attestation();
    with_root.cert_chain.push(vendors[0].root_der().to_vec());
    add(
        c,
        t,
        "ok-acme-with-root-wire",
        WIRE,
        &with_root.encode_to_vec(),
    );
    let rogues = hsm_sim::rot::Fleet::builder()
        .seed(0xbad)
        .genuine(1)
        .self_signed(1)
        .unknown_vendor(1)
        .build()?;
    for (i, d) in rogues.devices().iter().enumerate() {
        add(
            c,
            t,
            &format!("bad-rogue-{i}-wire"),
            WIRE,
            &d.rot.attestation().encode_to_vec(),
        );
    }
    Ok(())
}

fn device_request_seeds(c: &mut Corpus) -> Result<()> {
    use targets::ca::*;
    let t = "device_request";
    let mut vendors = fixtures::ic_vendors();
    let mut rot = vendors[0].manufacture()?;
    rot.claim(&[1; 32], b"anchor")?;
    rot.generate_identity_key(&[1; 32])?;
    let csr = rot.csr(SERIAL)?;
    add(c, t, "ok-csr", CSR, &csr);
    add(
        c,
        t,
        "bad-csr-altered",
        CSR,
        &flip(csr.clone(), csr.len() - 10),
    );
    add(
        c,
        t,
        "bad-csr-trailing",
        CSR,
        &[csr.clone(), vec![0]].concat(),
    );
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    add(
        c,
        t,
        "bad-csr-p384",
        CSR,
        CertificateParams::default().serialize_request(&p384)?.der(),
    );
    let pop = v1::ProofOfPossession {
        rot_id: fixtures::rot_id(),
        serial: SERIAL.into(),
        device_public_key: spki(KeyName::Device).to_vec(),
        challenge: vec![7; 32],
    };
    let proof = signed(key(KeyName::Device), &pop);
    let wire = |serial: &str, subject_key| v1::IssueDeviceCertificateRequest {
        product_serial: serial.into(),
        rot_id: fixtures::rot_id(),
        subject_key: Some(subject_key),
    };
    use v1::issue_device_certificate_request::SubjectKey as W;
    let possessed = W::PossessedKey(v1::PossessedKey {
        public_key: spki(KeyName::Device).to_vec(),
        proof: Some(proof.clone()),
    });
    add(
        c,
        t,
        "ok-wire-possessed",
        WIRE,
        &wire(SERIAL, possessed.clone()).encode_to_vec(),
    );
    add(
        c,
        t,
        "ok-wire-csr",
        WIRE,
        &wire(SERIAL, W::CsrDer(csr)).encode_to_vec(),
    );
    add(
        c,
        t,
        "bad-wire-serial",
        WIRE,
        &wire("SN_1", possessed.clone()).encode_to_vec(),
    );
    add(
        c,
        t,
        "bad-wire-other-serial",
        WIRE,
        &wire("SN000002", possessed).encode_to_vec(),
    );
    add(c, t, "ok-proof-body", SIGNED_PROOF, &pop.encode_to_vec());
    add(c, t, "bad-proof-forged", FORGED_PROOF, &pop.encode_to_vec());
    let mut other_key = pop.clone();
    other_key.device_public_key = spki(KeyName::Owner).to_vec();
    add(
        c,
        t,
        "bad-proof-names-other-key",
        SIGNED_PROOF,
        &other_key.encode_to_vec(),
    );
    Ok(())
}

// ---------------------------------------------------------------- vouchers

fn voucher_seeds(c: &mut Corpus) -> Result<()> {
    use voucher::*;
    let t = "voucher";
    let with_owner = fixtures::voucher_with_owner();
    let bound = fixtures::bound_voucher();
    add(c, t, "ok-one-entry", DECODE, &with_owner.encode());
    add(c, t, "ok-bound-no-entries", DECODE, &bound.encode());
    let mut two = with_owner.clone();
    let payload = fixtures::entry_payload(&two, spki(KeyName::Transport), 0x22);
    let cose = tv::sign_entry(&payload, key(KeyName::Owner))?;
    two.push_entry(&cose)?;
    add(c, t, "ok-two-entries", DECODE, &two.encode());
    let encoded = with_owner.encode();
    add(c, t, "bad-truncated", DECODE, &encoded[..encoded.len() - 5]);
    // The last bytes are the last entry's signature.
    add(
        c,
        t,
        "bad-entry-signature-altered",
        DECODE,
        &flip(encoded.clone(), encoded.len() - 3),
    );
    let mut forged_header = fixtures::voucher_header();
    forged_header.manufacturer_public_key = spki(KeyName::Forger).to_vec();
    let mut forged = Voucher::new(forged_header);
    let p = fixtures::entry_payload(&forged, spki(KeyName::Owner), 0x33);
    forged.push_entry(&tv::sign_entry(&p, key(KeyName::Forger))?)?;
    add(c, t, "bad-other-manufacturer", DECODE, &forged.encode());
    add(
        c,
        t,
        "ok-entry-payload",
        SIGN_ENTRY,
        &fixtures::entry_payload(bound, spki(KeyName::Owner), 0x11),
    );
    add(c, t, "bad-entry-payload-other-header", SIGN_ENTRY, &p);
    add(c, t, "ok-push-owner-entry", PUSH, &cose);
    add(
        c,
        t,
        "bad-push-forged-entry",
        PUSH,
        &tv::sign_entry(&payload, key(KeyName::Forger))?,
    );
    add(
        c,
        t,
        "ok-header",
        HEADER,
        &fixtures::voucher_header().encode(),
    );
    add(c, t, "bad-header-rot-id", HEADER, &{
        let mut h = fixtures::voucher_header();
        h.rot_id = h.rot_id.to_uppercase();
        h.encode()
    });
    add(c, t, "ok-extend", EXTEND, spki(KeyName::Transport));
    add(c, t, "bad-extend-not-a-key", EXTEND, b"not a key");
    Ok(())
}

// ---------------------------------------------------------------- ledger

/// A small real ledger in memory: its segment file, latest checkpoint and
/// an export made by the ledger's own exporter.
struct RealLedger {
    segment: Vec<u8>,
    export: Vec<u8>,
}

fn real_ledger() -> Result<RealLedger> {
    let dir = tempfile::tempdir()?;
    let storage = Arc::new(SimStorage::new());
    let mut config = LedgerConfig::new(dir.path());
    config.index_dir = Some(dir.path().join("index"));
    let signer = Arc::new(SoftwareSigner::from_key(key(KeyName::Ledger).key().clone()));
    let ledger = Ledger::open_with_storage(config, signer, storage.clone())?;
    let rot = fixtures::rot_id();
    let draft = |kind, rot_id: &str, serial: &str| Draft {
        kind,
        rot_id: rot_id.into(),
        serial: serial.into(),
        site: SITE.into(),
        actor: "station/site-a/st-01".into(),
        order_id: "order-1".into(),
        payload: vec![1, 2, 3],
    };
    ledger.append_blocking(
        draft(EventKind::OrderOpened, "", ""),
        vec![UniqueKey::new("order", "order-1")],
        None,
    )?;
    ledger.append_blocking(
        draft(EventKind::Claimed, &rot, ""),
        vec![UniqueKey::new("claim", rot.as_bytes())],
        None,
    )?;
    ledger.publish_checkpoint_blocking()?;
    ledger.append_blocking(
        draft(EventKind::Certified, &rot, SERIAL),
        vec![
            UniqueKey::new("serial", SERIAL),
            UniqueKey::new("rot", rot.as_bytes()),
        ],
        Some(QuotaUse::new("order/order-1", 2)),
    )?;
    ledger.publish_checkpoint_blocking()?;
    ledger.close();
    let segment = storage
        .file(ledger::FIRST_SEGMENT)
        .context("the ledger wrote its first segment")?;
    let out = dir.path().join("export.tlx");
    custody_ledger::export::export(storage.as_ref(), &out)?;
    let export = std::fs::read(&out)?;
    Ok(RealLedger { segment, export })
}

/// The records of a file after its header, as `FRAMED` chunks.
fn as_chunks(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = format::HEADER_LEN;
    while let Ok(rec) = UnverifiedRecord::new(&file[at..]).check() {
        // The key record of an export is written by the harness itself.
        if rec.kind != format::KIND_KEY {
            chunk(rec.kind - 1, rec.body, &mut out);
        }
        at += rec.total_len;
        if at >= file.len() {
            break;
        }
    }
    out
}

fn entry(kind: EventKind, rot_id: &str, keys: &[(&str, &str)], quota: Option<u64>) -> Vec<u8> {
    v1::LedgerEntry {
        seq: 0,
        time_ms: fixtures::NOW_MS,
        kind: kind as i32,
        rot_id: rot_id.into(),
        serial: String::new(),
        site: SITE.into(),
        actor: "station/site-a/st-01".into(),
        order_id: "order-1".into(),
        payload: vec![],
        prev_hash: vec![],
        device_prev: vec![],
        unique_keys: keys
            .iter()
            .map(|(n, v)| v1::UniqueKey {
                namespace: (*n).into(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        quota: quota.map(|limit| v1::QuotaUse {
            counter: "order/order-1".into(),
            limit,
        }),
    }
    .encode_to_vec()
}

/// A chained history: order, two devices claimed and certified under a
/// quota, checkpoints between; `tweak` may break it.
fn chained(tweak: impl Fn(&mut Vec<(u8, Vec<u8>)>)) -> Vec<u8> {
    let a = fixtures::rot_id();
    let b = "ab".repeat(32);
    let mut parts = vec![
        (
            0,
            entry(EventKind::OrderOpened, "", &[("order", "order-1")], None),
        ),
        (0, entry(EventKind::Claimed, &a, &[("claim", &a)], None)),
        (2, Vec::new()),
        (
            1,
            entry(
                EventKind::Certified,
                &a,
                &[("serial", "SN000001"), ("rot", &a)],
                Some(2),
            ),
        ),
        (0, entry(EventKind::Claimed, &b, &[("claim", &b)], None)),
        (
            1,
            entry(
                EventKind::Certified,
                &b,
                &[("serial", "SN000002"), ("rot", &b)],
                Some(2),
            ),
        ),
        (2, Vec::new()),
    ];
    tweak(&mut parts);
    let mut out = Vec::new();
    for (tag, body) in parts {
        chunk(tag, &body, &mut out);
    }
    out
}

fn ledger_seeds(c: &mut Corpus) -> Result<()> {
    use ledger::{CHAINED, FRAMED, RAW};
    let real = real_ledger()?;
    let a = fixtures::rot_id();
    let duplicate = chained(|p| p[4].1 = entry(EventKind::Claimed, &a, &[("claim", &a)], None));
    let over_quota = chained(|p| {
        p[5].1 = entry(EventKind::Certified, "", &[("serial", "SN000002")], Some(1));
    });
    let unknown_kind = chained(|p| p[1].1 = entry(EventKind::Unspecified, &a, &[], None));
    let altered = flip(real.segment.clone(), real.segment.len() / 2);
    let torn = &real.segment[..real.segment.len() - 7];
    for t in ["ledger_segment", "ledger_open"] {
        add(c, t, "ok-real-segment", RAW, &real.segment);
        add(
            c,
            t,
            "ok-real-segment-framed",
            FRAMED,
            &as_chunks(&real.segment),
        );
        add(c, t, "ok-chained", CHAINED, &chained(|_| {}));
        add(c, t, "bad-chained-duplicate-key", CHAINED, &duplicate);
        add(c, t, "bad-chained-over-quota", CHAINED, &over_quota);
        add(c, t, "bad-header", RAW, &flip(real.segment.clone(), 2));
    }
    // The verifier reports what the ledger's recovery cuts or lets through
    // on open: a damaged or torn record near the end of the last segment
    // (cut as a torn write: no `checkpoint.latest` anchors it here), and an
    // entry of an unknown kind (recovery does not check kinds).
    add(c, "ledger_segment", "bad-real-segment-torn", RAW, torn);
    add(
        c,
        "ledger_segment",
        "bad-real-segment-altered",
        RAW,
        &altered,
    );
    add(
        c,
        "ledger_segment",
        "bad-chained-unknown-kind",
        CHAINED,
        &unknown_kind,
    );
    add(c, "ledger_open", "ok-real-segment-torn-is-cut", RAW, torn);
    add(
        c,
        "ledger_open",
        "ok-real-segment-altered-is-cut",
        RAW,
        &altered,
    );
    add(
        c,
        "ledger_open",
        "ok-chained-unknown-kind-opens",
        CHAINED,
        &unknown_kind,
    );
    let t = "ledger_export";
    add(c, t, "ok-real-export", RAW, &real.export);
    add(
        c,
        t,
        "ok-real-export-framed",
        FRAMED,
        &as_chunks(&real.export),
    );
    add(c, t, "ok-chained", CHAINED, &chained(|_| {}));
    add(
        c,
        t,
        "bad-real-export-truncated",
        RAW,
        &real.export[..real.export.len() - 20],
    );
    add(
        c,
        t,
        "bad-real-export-altered",
        RAW,
        &flip(real.export.clone(), real.export.len() / 2),
    );
    add(c, t, "bad-chained-duplicate-key", CHAINED, &duplicate);
    add(c, t, "bad-segment-as-export", RAW, &real.segment);
    Ok(())
}

fn note_seeds(c: &mut Corpus) {
    use ledger::note::*;
    let t = "checkpoint_note";
    let lkey = custody_ledger::LedgerKey::new(ORIGIN, spki(KeyName::Ledger)).expect("P-256");
    let root = [5u8; 32];
    let cp =
        custody_ledger::checkpoint::sign(key(KeyName::Ledger), &lkey, 3, &root).expect("signs");
    add(c, t, "ok-note", ANY_ORIGIN, cp.note.as_bytes());
    add(c, t, "ok-note-our-origin", OUR_ORIGIN, cp.note.as_bytes());
    let text = custody_ledger::checkpoint::note_text(ORIGIN, 3, &root);
    add(c, t, "ok-text", SIGNED, text.as_bytes());
    add(
        c,
        t,
        "ok-text-extension-line",
        SIGNED,
        format!("{text}extension\n").as_bytes(),
    );
    add(
        c,
        t,
        "bad-text-leading-zero",
        SIGNED,
        custody_ledger::checkpoint::note_text(ORIGIN, 3, &root)
            .replacen("\n3\n", "\n03\n", 1)
            .as_bytes(),
    );
    let other = custody_ledger::checkpoint::note_text("other.example/log", 3, &root);
    add(c, t, "ok-other-origin-any", SIGNED, other.as_bytes());
    let other_note = ledger::sign_note(&other);
    add(
        c,
        t,
        "bad-other-origin-ours",
        OUR_ORIGIN,
        other_note.as_bytes(),
    );
    let fkey = custody_ledger::LedgerKey::new(ORIGIN, spki(KeyName::Forger)).expect("P-256");
    let forged =
        custody_ledger::checkpoint::sign(key(KeyName::Forger), &fkey, 3, &root).expect("signs");
    add(c, t, "bad-other-key", ANY_ORIGIN, forged.note.as_bytes());
    add(
        c,
        t,
        "bad-altered",
        ANY_ORIGIN,
        cp.note.replacen("\n3\n", "\n4\n", 1).as_bytes(),
    );
    add(
        c,
        t,
        "ok-key-pem",
        KEY_PEM,
        lkey.public_key_pem().as_bytes(),
    );
    add(
        c,
        t,
        "bad-key-pem",
        KEY_PEM,
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
}

// ---------------------------------------------------------------- callers

fn caller_seeds(c: &mut Corpus) -> Result<()> {
    use ::transport::identity::Role;
    use ::transport::pki::{self, CertificateKind, LeafParams, Validity};
    use ::transport::Caller;
    use transport::*;
    let t = "caller_identity";
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca =
        pki::service_ca_certificate(&ca_key, "fuzz service CA", Validity::days_from_now(3650))?;
    for (name, role, kind) in [
        ("ok-station-client", Role::Station, CertificateKind::Client),
        (
            "ok-provisioner-server",
            Role::Provisioner,
            CertificateKind::Server {
                dns_names: vec!["provisioner.example".into()],
                ip_addresses: vec![],
            },
        ),
    ] {
        let leaf = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = LeafParams {
            caller: Caller::new(role, SITE, "st-01")?,
            kind,
            validity: Validity::days_from_now(3650),
        };
        let der = pki::issue(&ca, &ca_key, &leaf, &params)?;
        add(c, t, name, CERTIFICATE, &der);
    }
    add(c, t, "bad-ca-has-no-caller", CERTIFICATE, &ca);
    let mut two = CertificateParams::new(Vec::<String>::new())?;
    two.subject_alt_names = vec![
        SanType::URI("urn:trustline:caller:admin:site-a:a".try_into()?),
        SanType::URI("urn:trustline:caller:station:site-a:b".try_into()?),
    ];
    let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    add(
        c,
        t,
        "bad-two-caller-uris",
        CERTIFICATE,
        two.self_signed(&k)?.der(),
    );
    add(
        c,
        t,
        "ok-uri",
        URI,
        b"urn:trustline:caller:station:site-a:st-01",
    );
    add(
        c,
        t,
        "ok-uri-auditor",
        URI,
        b"urn:trustline:caller:auditor:hq:audit.1",
    );
    add(
        c,
        t,
        "bad-uri-extra-part",
        URI,
        b"urn:trustline:caller:station:site-a:st-01:x",
    );
    add(
        c,
        t,
        "bad-uri-role",
        URI,
        b"urn:trustline:caller:root:site-a:st-01",
    );
    add(
        c,
        t,
        "bad-uri-token",
        URI,
        b"urn:trustline:caller:station:site a:st-01",
    );
    Ok(())
}

// ---------------------------------------------------------------- station

fn device_answer_seeds(c: &mut Corpus) -> Result<()> {
    use trustline_proto::device::encode_frame;
    use trustline_proto::device::v1 as dv1;
    use trustline_proto::device::v1::device_response::Result as Answer;
    let t = "device_answer";
    let frame = |id: u32, result: Answer| -> Result<Vec<u8>> {
        Ok(encode_frame(&dv1::DeviceResponse {
            id,
            result: Some(result),
        })?)
    };
    let lock = || {
        Answer::LockReadout(dv1::LockReadoutResponse {
            readout_locked: true,
        })
    };
    // Step 6 (lock_readout) is selector 4; request id 3.
    let answer = frame(3, lock())?;
    add(c, t, "ok-lock-readout", 4, &[&[3][..], &answer].concat());
    let stale = frame(2, lock())?;
    add(
        c,
        t,
        "ok-stale-then-answer",
        4,
        &[&[3][..], &stale, &answer].concat(),
    );
    let status = frame(
        3,
        Answer::Status(dv1::StatusResponse {
            rot_id: fixtures::rot_id(),
            ..Default::default()
        }),
    )?;
    add(c, t, "ok-status", 1, &[&[3][..], &status].concat());
    add(c, t, "bad-other-step", 5, &[&[3][..], &answer].concat());
    add(c, t, "bad-wrong-id", 4, &[&[2][..], &answer].concat());
    let refusal = frame(
        3,
        Answer::Error(dv1::DeviceError {
            code: dv1::ErrorCode::AlreadyClaimed as i32,
            reason: "root of trust is already claimed".into(),
        }),
    )?;
    add(c, t, "bad-device-error", 3, &[&[3][..], &refusal].concat());
    add(
        c,
        t,
        "bad-garbage",
        4,
        b"\x03\xde\xad\xbe\xef garbage, not a frame \x00\x01",
    );
    add(
        c,
        t,
        "bad-truncated",
        4,
        &[&[3][..], &answer[..answer.len() - 1]].concat(),
    );
    Ok(())
}
