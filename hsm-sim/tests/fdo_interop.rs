//! FDO 1.1 vouchers against an FDO implementation written by someone else
//! (2.4.14.7, "based on open standards"): `fdo-check/fdocheck.py`, written
//! from the FDO specification's CDDL on PyPI's `cbor2` and `cryptography`,
//! run as a subprocess (`scripts/install-deps.sh` installs both).
//!
//! A simulated die is claimed, personalised and certified through the
//! device protocol, binds its Trustline voucher and computes the FDO header
//! HMAC with its device secret (step 17); Trustline exports the FDO voucher
//! (entry 0 by the OEM key, entry 1 by the first owner). Then:
//! - the Python implementation decodes and verifies it (HMAC included) and
//!   reports the same fields;
//! - it extends the voucher to a third owner, and Trustline's codec verifies
//!   the result and maps it back onto the Trustline voucher;
//! - a broken entry, a wrong header hash and a tampered header are refused
//!   by both;
//! - export → import → export is byte-identical and keeps every field.

use std::path::{Path, PathBuf};
use std::process::Command;

use hsm_sim::device_session::DeviceSession;
use hsm_sim::rot::{FixedDie, SimulatedRot};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rand::rngs::OsRng;
use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
use serde_json::Value;
use trustline_proto::device::v1 as dv1;
use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::fdo::{
    self, assemble, sign_entry, FdoDeviceData, FdoEntryPayload, FdoHeader, FdoVoucher,
    RendezvousInfo,
};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::voucher::{cert_chain_hash, Voucher, VoucherHeader};
use trustline_proto::Error;

const SERIAL: &str = "TL-0004711";
/// The die's FDO device secret: fixed so that the independent checker can
/// verify the HMAC too (a real die never reveals it).
const SECRET: [u8; 32] = [0x5a; 32];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the independent checker; returns (exit status, parsed JSON).
fn fdocheck(args: &[&str]) -> (i32, Value) {
    let script = repo().join("fdo-check/fdocheck.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 {} ({e}): run scripts/install-deps.sh",
                script.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the FDO checker lacks a package (run scripts/install-deps.sh): {stderr}"
    );
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("fdocheck printed no JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json)
}

fn verify_with_python(dir: &Path, voucher: &FdoVoucher, mfg_pem: &Path) -> (i32, Value) {
    let path = dir.join("check.pem");
    std::fs::write(&path, voucher.to_pem()).expect("write");
    fdocheck(&[
        "verify",
        "--voucher",
        path.to_str().expect("path"),
        "--manufacturer-key",
        mfg_pem.to_str().expect("path"),
        "--hmac-secret",
        &hex::encode(SECRET),
    ])
}

fn public_pem(dir: &Path, name: &str, signer: &SoftwareSigner) -> PathBuf {
    let path = dir.join(format!("{name}.pub.pem"));
    let pem = signer
        .key()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    std::fs::write(&path, pem).expect("write");
    path
}

fn private_pem(dir: &Path, name: &str, signer: &SoftwareSigner) -> PathBuf {
    let path = dir.join(format!("{name}.key.pem"));
    let pem = signer
        .key()
        .to_pkcs8_pem(LineEnding::LF)
        .expect("pkcs8 pem");
    std::fs::write(&path, pem.as_bytes()).expect("write");
    path
}

fn ask(session: &mut DeviceSession, id: u32, step: Step) -> Answer {
    let response = session.handle(&dv1::DeviceRequest {
        id,
        step: Some(step),
    });
    match response.result {
        Some(Answer::Error(e)) => panic!("step {id} refused: {e:?}"),
        Some(answer) => answer,
        None => panic!("step {id} got no answer"),
    }
}

/// A device certificate for `spki` (subject serialNumber = `serial`) and the
/// CA that issued it, leaf first.
fn device_chain(spki: &[u8], serial: &str) -> Vec<Vec<u8>> {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Interop Site CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
    let subject = rcgen::SubjectPublicKeyInfo::from_der(spki).expect("spki");
    let leaf = leaf.signed_by(&subject, &issuer).expect("leaf");
    vec![leaf.der().to_vec(), ca_cert.der().to_vec()]
}

struct Made {
    rot_id: String,
    chain: Vec<Vec<u8>>,
    oem: SoftwareSigner,
    owners: Vec<SoftwareSigner>,
    trustline: Voucher,
    fdo: FdoVoucher,
}

/// The factory and the first transfer, as Trustline does them.
fn factory() -> Made {
    let die = SimulatedRot::from_fixed(FixedDie {
        vendor: "Interop Silicon".into(),
        chip_serial: "INTEROP-1".into(),
        attestation_key: SigningKey::random(&mut OsRng),
        chain: Vec::new(),
        transport_key: p256::SecretKey::random(&mut OsRng),
        on_device_identity_key: SigningKey::random(&mut OsRng),
        firmware_sha256: [1; 32],
        fdo_hmac_secret: SECRET,
    })
    .expect("die");
    let rot_id = die.rot_id().to_owned();
    let mut session = DeviceSession::new(die);
    ask(
        &mut session,
        1,
        Step::Hello(dv1::HelloRequest {
            versions: vec![1],
            station: "interop".into(),
        }),
    );
    let nonce = vec![9; 32];
    ask(
        &mut session,
        2,
        Step::Claim(dv1::ClaimRequest {
            nonce: nonce.clone(),
            anchor: b"OEM root".to_vec(),
        }),
    );
    ask(
        &mut session,
        3,
        Step::LockReadout(dv1::LockReadoutRequest {}),
    );
    ask(
        &mut session,
        4,
        Step::GenerateKey(dv1::GenerateKeyRequest { challenge: nonce }),
    );
    let spki = session
        .rot()
        .identity_public_key()
        .expect("personalised")
        .to_vec();
    let chain = device_chain(&spki, SERIAL);

    // Certify: the voucher with entry 0 to the first owner, bound by the
    // device.
    let oem = SoftwareSigner::generate();
    let owners: Vec<SoftwareSigner> = (0..3).map(|_| SoftwareSigner::generate()).collect();
    let header = VoucherHeader::new(
        &rot_id,
        SERIAL,
        cert_chain_hash(&chain),
        oem.public_key_der(),
    )
    .expect("header");
    let mut unbound = Voucher::new(header);
    unbound
        .extend(&oem, owners[0].public_key_der())
        .expect("entry 0");
    let Answer::StoreCertification(stored) = ask(
        &mut session,
        5,
        Step::StoreCertification(dv1::StoreCertificationRequest {
            certificate_chain: chain.clone(),
            voucher: unbound.encode(),
        }),
    ) else {
        panic!("not a store answer");
    };
    let mut trustline = Voucher::decode(&stored.voucher).expect("bound voucher");

    // The FDO header, and the device's HMAC over it (step 17).
    let data = FdoDeviceData {
        rv_info: RendezvousInfo::server("rv.interop.test", 8041, fdo::rendezvous::protocol::HTTPS),
        device_info: "Interop Sensor".into(),
    };
    let fdo_header =
        FdoHeader::from_trustline(trustline.header(), &chain, &data).expect("fdo header");
    let Answer::FdoHeaderHmac(mac) = ask(
        &mut session,
        6,
        Step::FdoHeaderHmac(dv1::FdoHeaderHmacRequest {
            ov_header: fdo_header.encode(),
        }),
    ) else {
        panic!("not an hmac answer");
    };
    let hmac: [u8; 32] = mac.hmac_sha256.try_into().expect("32 bytes");
    let mut fdo = FdoVoucher::from_trustline(&trustline, &chain, &data, hmac).expect("fdo");
    fdo.mirror_next(&trustline, &oem).expect("entry 0 mirrored");

    // The first owner hands it on with Trustline's tools: both formats.
    trustline
        .extend(&owners[0], owners[1].public_key_der())
        .expect("trustline entry 1");
    fdo.mirror_next(&trustline, &owners[0])
        .expect("entry 1 mirrored");
    Made {
        rot_id,
        chain,
        oem,
        owners,
        trustline,
        fdo,
    }
}

#[test]
fn a_trustline_export_verifies_with_the_independent_fdo_implementation() {
    let m = factory();
    let dir = tempfile::tempdir().expect("tempdir");
    let mfg = public_pem(dir.path(), "oem", &m.oem);
    let (status, json) = verify_with_python(dir.path(), &m.fdo, &mfg);
    assert_eq!(status, 0, "{json}");
    assert_eq!(json["valid"], true);
    assert_eq!(
        json["hmac_checked"], true,
        "the HMAC verified with the secret"
    );
    assert_eq!(json["protocol_version"], 101);
    assert_eq!(json["guid"], hex::encode(m.trustline.header().guid));
    assert_eq!(json["device_info"], "Interop Sensor");
    assert_eq!(json["rv_info"][0][0]["name"], "RVDns");
    assert_eq!(json["rv_info"][0][0]["value"], "rv.interop.test");
    assert_eq!(json["rv_info"][0][1]["value"], 8041);
    assert_eq!(
        json["manufacturer_key"]["spki"],
        hex::encode(m.oem.public_key_der())
    );
    assert_eq!(
        json["cert_chain_hash"],
        hex::encode(fdo::cert_chain_sha256(&m.chain))
    );
    assert_eq!(
        json["cert_chain"][0]["subject"],
        format!("2.5.4.5={SERIAL}")
    );
    assert_eq!(json["header_sha256"], hex::encode(m.fdo.header_sha256()));
    assert_eq!(
        json["header_hmac_sha256"],
        hex::encode(m.fdo.header_hmac_sha256())
    );
    let entries = json["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    let verified = m.fdo.verify(m.oem.public_key_der()).expect("rust verifies");
    for (e, v) in entries.iter().zip(&verified.entries) {
        assert_eq!(e["signer_spki"], hex::encode(&v.signer_public_key));
        assert_eq!(e["next_owner_spki"], hex::encode(&v.next_owner_public_key));
        assert_eq!(e["sha256"], hex::encode(v.entry_sha256));
        // The Trustline entry rides along in OVEExtra.
        let key = fdo::TRUSTLINE_ENTRY_EXTRA.to_string();
        assert_eq!(
            e["extra"][key.as_str()],
            hex::encode(v.trustline_entry().expect("mirrored"))
        );
    }
    assert_eq!(
        json["current_owner_spki"],
        hex::encode(m.owners[1].public_key_der())
    );
}

#[test]
fn a_voucher_extended_by_the_independent_implementation_verifies_in_trustline() {
    let m = factory();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.pem");
    std::fs::write(&input, m.fdo.to_pem()).expect("write");
    let out = dir.path().join("out.pem");
    let key = private_pem(dir.path(), "owner1", &m.owners[1]);
    let next = public_pem(dir.path(), "owner2", &m.owners[2]);
    let args = |key: &Path| {
        vec![
            "extend".to_owned(),
            "--voucher".into(),
            input.display().to_string(),
            "--owner-key".into(),
            key.display().to_string(),
            "--next-owner".into(),
            next.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    // Only the current owner can extend there too.
    let not_owner = private_pem(dir.path(), "owner0", &m.owners[0]);
    let (status, json) = fdocheck(
        &args(&not_owner)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!((status, &json["valid"]), (1, &Value::Bool(false)), "{json}");

    let (status, _) = fdocheck(&args(&key).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(status, 0);
    let text = std::fs::read_to_string(&out).expect("extended voucher");
    let extended = FdoVoucher::from_pem(&text).expect("Trustline decodes it");
    // Import → export gives back the independent implementation's bytes,
    // and even its PEM text.
    assert_eq!(
        extended.encode(),
        pem::parse(&text).expect("pem").contents(),
        "an FDO tool's voucher round-trips byte for byte"
    );
    assert_eq!(extended.to_pem(), text);
    let verified = extended
        .verify(m.oem.public_key_der())
        .expect("Trustline verifies it");
    assert_eq!(verified.entries.len(), 3);
    assert_eq!(verified.current_owner, m.owners[2].public_key_der());
    assert!(verified.entries[2].trustline_entry().is_none());
    // Header and HMAC are the ones the device made (what the ledger
    // records), and the HMAC still verifies with the device secret.
    extended
        .check_recorded(&m.fdo.header_sha256(), &m.fdo.header_hmac_sha256())
        .expect("same header and hmac");
    extended.verify_header_hmac(&SECRET).expect("hmac");
    // The FDO tool's entry follows Trustline's two unchanged.
    for i in 0..2 {
        assert_eq!(extended.entry_bytes(i), m.fdo.entry_bytes(i));
    }
    // Mapped back: the Trustline voucher as registered, plus one transfer
    // made outside Trustline for the Ownership service to register.
    let view = extended
        .to_trustline(&m.rot_id, SERIAL, m.trustline.device_binding())
        .expect("to trustline");
    assert_eq!(view.voucher.encode(), m.trustline.encode());
    assert_eq!(view.fdo_only, 1);
    // Trustline keeps extending what the FDO tool made.
    let mut again = extended;
    again
        .extend(&m.owners[2], m.owners[0].public_key_der(), None)
        .expect("owner 2 extends");
    let (status, json) =
        verify_with_python(dir.path(), &again, &public_pem(dir.path(), "oem", &m.oem));
    assert_eq!(status, 0, "{json}");
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(4));
}

/// Asserts Trustline refuses `bytes` with `expected`, and the independent
/// implementation refuses them too, naming `python_says`.
fn both_refuse(
    dir: &Path,
    m: &Made,
    bytes: &[u8],
    expected: fn(&Error) -> bool,
    python_says: &str,
) {
    let result = FdoVoucher::decode(bytes).and_then(|v| v.verify(m.oem.public_key_der()));
    match result {
        Err(e) => assert!(expected(&e), "Trustline refused with another error: {e}"),
        Ok(_) => panic!("Trustline accepted a voucher that is {python_says}"),
    }
    let path = dir.join("refused.pem");
    std::fs::write(
        &path,
        pem::encode(&pem::Pem::new(fdo::PEM_LABEL, bytes.to_vec())),
    )
    .expect("write");
    let (status, json) = fdocheck(&["verify", "--voucher", path.to_str().expect("path")]);
    assert_eq!(
        status, 1,
        "the independent implementation accepted it: {json}"
    );
    let error = json["error"].as_str().expect("an error");
    assert!(error.contains(python_says), "{error}");
}

#[test]
fn a_broken_entry_a_wrong_header_hash_and_a_tampered_header_are_refused_by_both() {
    let m = factory();
    let dir = tempfile::tempdir().expect("tempdir");
    let entries: Vec<Vec<u8>> = (0..m.fdo.len())
        .map(|i| m.fdo.entry_bytes(i).expect("entry").to_vec())
        .collect();
    let header = m.fdo.header_bytes();
    let hmac = m.fdo.header_hmac();

    // A broken entry: one bit of entry 1's signature flipped.
    let mut broken = entries.clone();
    let last = broken[1].len() - 1;
    broken[1][last] ^= 0x01;
    both_refuse(
        dir.path(),
        &m,
        &assemble(header, hmac, &m.chain, &broken),
        |e| matches!(e, Error::FdoBadSignature { entry: 1 }),
        "signature does not verify",
    );

    // A wrong header hash: a correctly signed entry 2 whose OVEHashHdrInfo
    // is not the header's.
    let mut payload = FdoEntryPayload::decode(
        &m.fdo
            .next_entry_payload(m.owners[2].public_key_der(), None)
            .expect("payload"),
    )
    .expect("payload");
    payload.header_info_hash[31] ^= 0x80;
    let wrong = sign_entry(&payload.encode(), &m.owners[1]).expect("signed");
    both_refuse(
        dir.path(),
        &m,
        &assemble(
            header,
            hmac,
            &m.chain,
            &[entries.clone(), vec![wrong]].concat(),
        ),
        |e| matches!(e, Error::FdoHeaderMismatch { entry: 2 }),
        "OVEHashHdrInfo",
    );

    // A tampered header: the rendezvous server swapped for another one.
    // Entry 0 hashes the header, so its OVEHashPrevEntry no longer matches.
    let mut tampered = m.fdo.header().clone();
    tampered.rv_info =
        RendezvousInfo::server("rv.attacker.test", 443, fdo::rendezvous::protocol::HTTPS);
    both_refuse(
        dir.path(),
        &m,
        &assemble(&tampered.encode(), hmac, &m.chain, &entries),
        |e| matches!(e, Error::FdoBrokenChain { entry: 0 }),
        "OVEHashPrevEntry",
    );
    // …and the device's HMAC, and the ledger's hashes, give it away even
    // without entries.
    let bare = FdoVoucher::decode(&assemble(
        &tampered.encode(),
        hmac,
        &m.chain,
        &[] as &[&[u8]],
    ))
    .expect("decodes");
    assert!(matches!(
        bare.verify_header_hmac(&SECRET),
        Err(Error::FdoBadHeaderHmac)
    ));
    assert!(matches!(
        bare.check_recorded(&m.fdo.header_sha256(), &m.fdo.header_hmac_sha256()),
        Err(Error::FdoBadHeaderHmac)
    ));
    let path = dir.path().join("bare.pem");
    std::fs::write(&path, bare.to_pem()).expect("write");
    let (status, json) = fdocheck(&[
        "verify",
        "--voucher",
        path.to_str().expect("path"),
        "--hmac-secret",
        &hex::encode(SECRET),
    ]);
    assert_eq!(status, 1, "{json}");
    assert!(json["error"]
        .as_str()
        .expect("error")
        .contains("OVHeaderHMac"));

    // Another device's certificate chain under this header.
    let other_chain = device_chain(m.owners[0].public_key_der(), SERIAL);
    both_refuse(
        dir.path(),
        &m,
        &assemble(header, hmac, &other_chain, &entries),
        |e| matches!(e, Error::FdoChainMismatch),
        "OVDevCertChainHash",
    );
}

#[test]
fn a_round_trip_keeps_every_field_byte_for_byte() {
    let m = factory();
    let dir = tempfile::tempdir().expect("tempdir");
    let mfg = public_pem(dir.path(), "oem", &m.oem);
    let exported = m.fdo.to_pem();
    let imported = FdoVoucher::from_pem(&exported).expect("import");
    assert_eq!(imported.to_pem(), exported, "export → import → export");
    assert_eq!(imported.encode(), m.fdo.encode());
    assert_eq!(imported.header(), m.fdo.header());
    assert_eq!(imported.header_hmac(), m.fdo.header_hmac());
    assert_eq!(imported.cert_chain(), m.chain.as_slice());
    let (_, before) = verify_with_python(dir.path(), &m.fdo, &mfg);
    let (_, after) = verify_with_python(dir.path(), &imported, &mfg);
    assert_eq!(
        before, after,
        "the independent implementation sees the same fields"
    );
    // And the Trustline voucher comes back whole, binding included.
    let view = imported
        .to_trustline(&m.rot_id, SERIAL, m.trustline.device_binding())
        .expect("to trustline");
    assert_eq!(view.voucher.encode(), m.trustline.encode());
    view.voucher
        .verify(m.oem.public_key_der())
        .expect("verifies as a Trustline voucher");
    view.voucher
        .verify_device_binding(&m.chain, &m.chain_leaf_spki())
        .expect("and its device binding");
}

impl Made {
    fn chain_leaf_spki(&self) -> Vec<u8> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, leaf) = X509Certificate::from_der(&self.chain[0]).expect("leaf");
        leaf.public_key().raw.to_vec()
    }
}
