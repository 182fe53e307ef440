//! The device protocol's test vectors, computed with the real code paths:
//! a fixed-key `SimulatedRot` behind `DeviceSession`, `trustline_proto`'s
//! statement and voucher code, `hsm_sim::key_delivery`. Shared by the test
//! that checks `docs/device-protocol.md` and by the example that prints the
//! blocks for it (`cargo run -p hsm-sim --example device-protocol-vectors`).
//!
//! Values are hex byte strings or quoted text. Signatures made by the die
//! are compared in low-S form: the vectors are RFC 6979 signatures with `s`
//! normalised to `s ≤ n/2`, which is what the wire requires.

#![allow(dead_code)]

use std::collections::BTreeMap;

use aes_kw::KekAes256;
use hsm_sim::device_session::DeviceSession;
use hsm_sim::key_delivery::{
    key_encryption_key, KDF_ECDH_SHA256, KDF_ECDH_X_COORDINATE, SHA256_KDF_SHARED_INFO,
};
use hsm_sim::rot::{erased_user_area_sha256, FixedDie, SimulatedRot};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePrivateKey;
use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::device::v1 as dv1;
use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::device::{encode_frame, PROTOCOL_VERSION};
use trustline_proto::fdo::{self, FdoDeviceData, FdoHeader, FdoVoucher, RendezvousInfo};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::statement::{p256_spki, signing_input, Statement};
use trustline_proto::v1;
use trustline_proto::voucher::{
    cert_chain_hash, key_id, sign_entry, EntryPayload, Voucher, VoucherHeader, BINDING_CONTENT_TYPE,
};

/// One vector value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Val {
    /// Bytes, written as lowercase hex.
    Hex(Vec<u8>),
    /// Text, written in double quotes.
    Text(String),
}

impl Val {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Val::Hex(b) => b,
            Val::Text(t) => t.as_bytes(),
        }
    }
}

/// The `input.*` vectors.
pub(crate) struct Inputs(pub BTreeMap<String, Val>);

impl Inputs {
    pub(crate) fn get(&self, name: &str) -> &[u8] {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("input {name} is missing"))
            .bytes()
    }

    fn text(&self, name: &str) -> String {
        String::from_utf8(self.get(name).to_vec()).expect("utf-8 input")
    }

    fn key(&self, name: &str) -> SigningKey {
        SigningKey::from_slice(self.get(name)).expect("a P-256 scalar")
    }

    fn secret(&self, name: &str) -> p256::SecretKey {
        p256::SecretKey::from_slice(self.get(name)).expect("a P-256 scalar")
    }

    /// The inputs as first chosen: scalars from hashes of labels, a leaf
    /// certificate made for the on-device identity key.
    pub(crate) fn defaults() -> Self {
        let mut m = BTreeMap::new();
        let scalar = |label: &str| Val::Hex(Sha256::digest(label.as_bytes()).to_vec());
        for (name, label) in [
            ("input.key.attestation", "attestation"),
            ("input.key.transport", "transport"),
            ("input.key.identity-on-device", "identity on device"),
            ("input.key.identity-hsm", "identity made in the hsm"),
            ("input.key.hsm-ephemeral", "hsm ephemeral"),
            ("input.key.manufacturer", "oem voucher key"),
            ("input.key.first-owner", "first owner"),
        ] {
            m.insert(
                name.to_owned(),
                scalar(&format!("trustline device protocol vector: {label}")),
            );
        }
        m.insert("input.nonce".into(), Val::Hex((0u8..32).collect()));
        m.insert(
            "input.anchor".into(),
            Val::Text("Trustline test vector OEM trust anchor".into()),
        );
        m.insert(
            "input.firmware-sha256".into(),
            Val::Hex(Sha256::digest(b"trustline simulated firmware 1.0").to_vec()),
        );
        m.insert("input.serial".into(), Val::Text("TL-0000001".into()));
        m.insert(
            "input.field-challenge".into(),
            Val::Hex((32u8..64).collect()),
        );
        m.insert(
            "input.voucher-guid".into(),
            Val::Hex((0xa0u8..0xb0).collect()),
        );
        m.insert(
            "input.commitment-salt".into(),
            Val::Hex((0xc0u8..0xd0).collect()),
        );
        m.insert("input.station".into(), Val::Text("station-01".into()));
        m.insert(
            "input.fdo-hmac-secret".into(),
            Val::Hex(Sha256::digest(b"trustline device protocol vector: fdo hmac secret").to_vec()),
        );
        m.insert(
            "input.fdo-device-info".into(),
            Val::Text("Trustline vector device".into()),
        );
        m.insert(
            "input.fdo-rv-dns".into(),
            Val::Text("rv.vector.test".into()),
        );
        m.insert(
            "input.fdo-rv-port".into(),
            Val::Hex(8041u16.to_be_bytes().to_vec()),
        );
        let mut inputs = Self(m);
        let cert = leaf_certificate(
            &inputs.key("input.key.identity-on-device"),
            &inputs.text("input.serial"),
        );
        inputs
            .0
            .insert("input.device-certificate".into(), Val::Hex(cert));
        inputs
    }
}

/// A device certificate for `key` issued by a throwaway CA, deterministic
/// (fixed serial, dates and RFC 6979 signature). Only an input: the device
/// checks that the leaf names its key, nothing more.
fn leaf_certificate(key: &SigningKey, serial: &str) -> Vec<u8> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, SerialNumber};
    struct Rk<'a>(&'a SigningKey, Vec<u8>);
    impl rcgen::PublicKeyData for Rk<'_> {
        fn der_bytes(&self) -> &[u8] {
            &self.1
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }
    impl rcgen::SigningKey for Rk<'_> {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::Signature = self.0.sign(msg);
            Ok(sig
                .normalize_s()
                .unwrap_or(sig)
                .to_der()
                .as_bytes()
                .to_vec())
        }
    }
    let rk = |k: &'static SigningKey| {
        Rk(
            k,
            k.verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        )
    };
    let ca_key: &'static SigningKey = Box::leak(Box::new(
        SigningKey::from_slice(&Sha256::digest(
            b"trustline device protocol vector: site ca",
        ))
        .expect("scalar"),
    ));
    let key: &'static SigningKey = Box::leak(Box::new(key.clone()));
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Vector Site CA");
    ca.distinguished_name = dn;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(9999, 12, 31);
    ca.serial_number = Some(SerialNumber::from_slice(&[1]));
    let ca_signer = rk(ca_key);
    let issuer = Issuer::from_params(&ca, &ca_signer);
    let mut leaf = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
    leaf.distinguished_name = dn;
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(9999, 12, 31);
    leaf.serial_number = Some(SerialNumber::from_slice(&[0x42; 16]));
    leaf.signed_by(&rk(key), &issuer)
        .expect("leaf")
        .der()
        .to_vec()
}

/// A signer that returns low-S signatures (for the voucher entry the
/// vectors make themselves).
struct LowS(SoftwareSigner);

impl Signer for LowS {
    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, trustline_proto::Error> {
        Ok(low_s_der(&self.0.sign_digest(digest)?))
    }
}

/// A DER ECDSA signature with `s` normalised to the low half.
pub(crate) fn low_s_der(der: &[u8]) -> Vec<u8> {
    let sig = p256::ecdsa::Signature::from_der(der).expect("a DER signature");
    sig.normalize_s()
        .unwrap_or(sig)
        .to_der()
        .as_bytes()
        .to_vec()
}

/// A raw `r ‖ s` signature with `s` normalised to the low half.
pub(crate) fn low_s_raw(raw: &[u8]) -> Vec<u8> {
    let sig = p256::ecdsa::Signature::from_slice(raw).expect("a raw signature");
    sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
}

fn low_s(signed: &v1::SignedStatement) -> v1::SignedStatement {
    v1::SignedStatement {
        body: signed.body.clone(),
        signature: low_s_der(&signed.signature),
    }
}

/// The vectors, in groups (one fenced block per group in the document).
pub(crate) struct Out {
    pub(crate) groups: Vec<(String, Vec<(String, Val)>)>,
}

impl Out {
    fn group(&mut self, name: &str) {
        self.groups.push((name.to_owned(), Vec::new()));
    }
    fn hex(&mut self, name: &str, bytes: impl AsRef<[u8]>) {
        self.put(name, Val::Hex(bytes.as_ref().to_vec()));
    }
    fn text(&mut self, name: &str, text: impl Into<String>) {
        self.put(name, Val::Text(text.into()));
    }
    fn put(&mut self, name: &str, val: Val) {
        self.groups
            .last_mut()
            .expect("a group")
            .1
            .push((name.to_owned(), val));
    }

    /// Body, signing input, its SHA-256, the low-S signature and the
    /// encoded SignedStatement of a statement.
    fn statement<S: Statement>(&mut self, prefix: &str, signed: &v1::SignedStatement) {
        let signed = low_s(signed);
        let input = signing_input(S::DOMAIN, &signed.body);
        self.text(&format!("{prefix}.domain"), S::DOMAIN);
        self.hex(&format!("{prefix}.body"), &signed.body);
        self.hex(&format!("{prefix}.signing-input"), &input);
        self.hex(
            &format!("{prefix}.signing-input-sha256"),
            Sha256::digest(&input),
        );
        self.hex(&format!("{prefix}.signature"), &signed.signature);
        self.hex(
            &format!("{prefix}.signed-statement"),
            signed.encode_to_vec(),
        );
    }

    /// Every value by name.
    pub(crate) fn flat(&self) -> BTreeMap<String, Val> {
        let mut m = BTreeMap::new();
        for (_, entries) in &self.groups {
            for (k, v) in entries {
                assert!(m.insert(k.clone(), v.clone()).is_none(), "{k} twice");
            }
        }
        m
    }
}

fn fixed_die(i: &Inputs) -> SimulatedRot {
    SimulatedRot::from_fixed(FixedDie {
        vendor: "Vector Silicon".into(),
        chip_serial: "VECT-0000000001".into(),
        attestation_key: i.key("input.key.attestation"),
        chain: Vec::new(),
        transport_key: i.secret("input.key.transport"),
        on_device_identity_key: i.key("input.key.identity-on-device"),
        firmware_sha256: i.get("input.firmware-sha256").try_into().expect("32 bytes"),
        fdo_hmac_secret: i.get("input.fdo-hmac-secret").try_into().expect("32 bytes"),
    })
    .expect("fixed die")
}

fn request(id: u32, step: Step) -> dv1::DeviceRequest {
    dv1::DeviceRequest {
        id,
        step: Some(step),
    }
}

fn answer(session: &mut DeviceSession, req: &dv1::DeviceRequest) -> Answer {
    session.handle(req).result.expect("a result")
}

fn signed_of(a: Answer) -> v1::SignedStatement {
    let s = match a {
        Answer::Claim(r) => r.receipt,
        Answer::GenerateKey(r) | Answer::InstallWrappedKey(r) => r.key_attestation,
        Answer::ProvePossession(r) => r.proof,
        Answer::IdentityProof(r) => r.proof,
        Answer::UserReset(r) | Answer::Decommission(r) => r.proof,
        other => panic!("not a statement answer: {other:?}"),
    };
    s.expect("a statement")
}

/// Everything, from the inputs.
pub(crate) fn compute(i: &Inputs) -> Out {
    let mut out = Out { groups: Vec::new() };
    let nonce = i.get("input.nonce").to_vec();
    let anchor = i.get("input.anchor").to_vec();
    let serial = i.text("input.serial");
    let field_challenge = i.get("input.field-challenge").to_vec();

    // Keys.
    out.group("keys");
    for name in [
        "input.key.attestation",
        "input.key.transport",
        "input.key.identity-on-device",
        "input.key.identity-hsm",
        "input.key.hsm-ephemeral",
        "input.key.manufacturer",
        "input.key.first-owner",
    ] {
        out.hex(name, i.get(name));
    }
    let spki = |name: &str| p256_spki(&i.secret(name).public_key());
    out.hex("attestation.spki", spki("input.key.attestation"));
    out.text(
        "rot-id",
        trustline_proto::identity::rot_id(&spki("input.key.attestation")),
    );
    out.hex("transport.spki", spki("input.key.transport"));
    out.hex(
        "identity-on-device.spki",
        spki("input.key.identity-on-device"),
    );
    out.hex("identity-hsm.spki", spki("input.key.identity-hsm"));
    out.hex("hsm-ephemeral.spki", spki("input.key.hsm-ephemeral"));
    out.hex("manufacturer.spki", spki("input.key.manufacturer"));
    out.hex("first-owner.spki", spki("input.key.first-owner"));

    // The transport-key statement, as the blank die reports it.
    let mut session = DeviceSession::new(fixed_die(i));
    out.group("transport-key");
    let attestation = session.rot().attestation();
    out.statement::<v1::TransportKeyStatement>(
        "transport-key",
        attestation
            .transport_key
            .as_ref()
            .expect("transport statement"),
    );

    // Frames: hello, claim, a refused second claim.
    out.group("frames");
    out.text("input.station", i.text("input.station"));
    let hello = request(
        1,
        Step::Hello(dv1::HelloRequest {
            versions: vec![PROTOCOL_VERSION],
            station: i.text("input.station"),
        }),
    );
    out.hex("frame.hello.request", encode_frame(&hello).expect("frame"));
    let hello_response = session.handle(&hello);
    out.hex(
        "frame.hello.response",
        encode_frame(&hello_response).expect("frame"),
    );
    let claim = request(
        2,
        Step::Claim(dv1::ClaimRequest {
            nonce: nonce.clone(),
            anchor: anchor.clone(),
        }),
    );
    out.hex("frame.claim.request", encode_frame(&claim).expect("frame"));
    let mut claim_response = session.handle(&claim);
    let receipt = match &mut claim_response.result {
        Some(Answer::Claim(r)) => {
            let receipt = r.receipt.clone().expect("receipt");
            r.receipt = Some(low_s(&receipt));
            receipt
        }
        other => panic!("claim answered {other:?}"),
    };
    out.hex(
        "frame.claim.response",
        encode_frame(&claim_response).expect("frame"),
    );
    let again = request(
        3,
        Step::Claim(dv1::ClaimRequest {
            nonce: nonce.clone(),
            anchor: anchor.clone(),
        }),
    );
    out.hex(
        "frame.claim-again.request",
        encode_frame(&again).expect("frame"),
    );
    out.hex(
        "frame.claim-again.response",
        encode_frame(&session.handle(&again)).expect("frame"),
    );

    out.group("claim-receipt");
    out.hex("input.nonce", &nonce);
    out.text("input.anchor", i.text("input.anchor"));
    out.hex("anchor-sha256", Sha256::digest(&anchor));
    out.statement::<v1::ClaimReceipt>("claim-receipt", &receipt);

    // On-device personalisation.
    out.group("key-attestation-on-device");
    out.hex("input.firmware-sha256", i.get("input.firmware-sha256"));
    answer(
        &mut session,
        &request(4, Step::LockReadout(dv1::LockReadoutRequest {})),
    );
    let ka = signed_of(answer(
        &mut session,
        &request(
            5,
            Step::GenerateKey(dv1::GenerateKeyRequest {
                challenge: nonce.clone(),
            }),
        ),
    ));
    out.statement::<v1::KeyAttestation>("key-attestation-on-device", &ka);

    out.group("proof-of-possession");
    out.text("input.serial", serial.clone());
    let pop = signed_of(answer(
        &mut session,
        &request(
            6,
            Step::ProvePossession(dv1::ProvePossessionRequest {
                serial: serial.clone(),
                challenge: nonce.clone(),
            }),
        ),
    ));
    out.statement::<v1::ProofOfPossession>("proof-of-possession", &pop);

    // The voucher as Certify returns it, and as the device binds it.
    out.group("voucher");
    let cert = i.get("input.device-certificate").to_vec();
    out.hex("input.device-certificate", &cert);
    out.hex("input.voucher-guid", i.get("input.voucher-guid"));
    out.hex("input.commitment-salt", i.get("input.commitment-salt"));
    let chain = vec![cert];
    let chain_hash = cert_chain_hash(&chain);
    out.hex("voucher.cert-chain-sha256", chain_hash);
    let header = VoucherHeader {
        guid: i.get("input.voucher-guid").try_into().expect("16 bytes"),
        rot_id: session.rot().rot_id().to_owned(),
        serial: serial.clone(),
        cert_chain_sha256: chain_hash,
        manufacturer_public_key: spki("input.key.manufacturer"),
    };
    out.hex("voucher.header", header.encode());
    out.hex("voucher.header-sha256", header.hash());
    let mut voucher = Voucher::new(header.clone());
    let payload = EntryPayload {
        prev_hash: header.hash(),
        header_hash: header.hash(),
        commitment_salt: i.get("input.commitment-salt").try_into().expect("16 bytes"),
        next_owner_public_key: spki("input.key.first-owner"),
    };
    let manufacturer = LowS(SoftwareSigner::from_key(i.key("input.key.manufacturer")));
    let entry0 = sign_entry(&payload.encode(), &manufacturer).expect("entry 0");
    voucher
        .push_entry(&entry0)
        .expect("entry 0 continues the voucher");
    out.hex("voucher.entry0", &entry0);
    let unbound = voucher.encode();
    out.hex("voucher.unbound", &unbound);
    let device_spki = spki("input.key.identity-on-device");
    let kid = key_id(&device_spki);
    out.hex("voucher.binding.kid", kid);
    let protected = binding_protected(&kid);
    out.hex("voucher.binding.protected", &protected);
    let tbs = sig_structure(&protected, &header.hash());
    out.hex("voucher.binding.sig-structure", &tbs);
    out.hex("voucher.binding.sig-structure-sha256", Sha256::digest(&tbs));
    let bound = match answer(
        &mut session,
        &request(
            7,
            Step::StoreCertification(dv1::StoreCertificationRequest {
                certificate_chain: chain.clone(),
                voucher: unbound.clone(),
            }),
        ),
    ) {
        Answer::StoreCertification(r) => r.voucher,
        other => panic!("store answered {other:?}"),
    };
    let bound_voucher = Voucher::decode(&bound).expect("bound voucher decodes");
    let binding = bound_voucher.device_binding().expect("bound").to_vec();
    let (binding_head, binding_sig) = binding.split_at(binding.len() - 64);
    let binding_low: Vec<u8> = [binding_head, &low_s_raw(binding_sig)].concat();
    out.hex(
        "voucher.binding.signature",
        &binding_low[binding_low.len() - 64..],
    );
    out.hex("voucher.binding", &binding_low);
    // The bound voucher differs from the unbound one only in the binding.
    let bound_low = rebind(&bound, &binding, &binding_low);
    out.hex("voucher.bound", &bound_low);

    // FDO: the header the station builds, the device's HMAC over it, and
    // the FDO voucher with entry 0 mirrored.
    out.group("fdo-header-hmac");
    out.hex("input.fdo-hmac-secret", i.get("input.fdo-hmac-secret"));
    out.text("input.fdo-device-info", i.text("input.fdo-device-info"));
    out.text("input.fdo-rv-dns", i.text("input.fdo-rv-dns"));
    out.hex("input.fdo-rv-port", i.get("input.fdo-rv-port"));
    let port = u16::from_be_bytes(i.get("input.fdo-rv-port").try_into().expect("2 bytes"));
    let data = FdoDeviceData {
        rv_info: RendezvousInfo::server(
            &i.text("input.fdo-rv-dns"),
            port,
            fdo::rendezvous::protocol::HTTPS,
        ),
        device_info: i.text("input.fdo-device-info"),
    };
    let fdo_header = FdoHeader::from_trustline(&header, &chain, &data).expect("fdo header");
    let ov_header = fdo_header.encode();
    out.hex("fdo.cert-chain-sha256", fdo::cert_chain_sha256(&chain));
    out.hex("fdo.hdr-info-sha256", fdo_header.header_info_hash());
    out.hex("fdo.ov-header", &ov_header);
    out.hex("fdo.ov-header-sha256", Sha256::digest(&ov_header));
    let hmac_request = request(
        20,
        Step::FdoHeaderHmac(dv1::FdoHeaderHmacRequest {
            ov_header: ov_header.clone(),
        }),
    );
    out.hex(
        "frame.fdo-header-hmac.request",
        encode_frame(&hmac_request).expect("frame"),
    );
    let hmac_response = session.handle(&hmac_request);
    let hmac: [u8; 32] = match &hmac_response.result {
        Some(Answer::FdoHeaderHmac(r)) => r.hmac_sha256.as_slice().try_into().expect("32 bytes"),
        other => panic!("fdo header hmac answered {other:?}"),
    };
    out.hex(
        "frame.fdo-header-hmac.response",
        encode_frame(&hmac_response).expect("frame"),
    );
    out.hex("fdo.header-hmac", hmac);
    out.hex("fdo.header-hmac-sha256", Sha256::digest(hmac));
    let tl = Voucher::decode(&bound_low).expect("bound voucher");
    let mut fdo_voucher =
        FdoVoucher::from_trustline(&tl, &chain, &data, hmac).expect("fdo voucher");
    out.hex("fdo.first-prev-hash", fdo_voucher.first_prev_hash());
    fdo_voucher
        .mirror_next(&tl, &manufacturer)
        .expect("entry 0 mirrored");
    let fdo_payload = fdo_voucher
        .entry_payloads()
        .next()
        .expect("entry 0")
        .encode();
    out.hex("fdo.entry0.payload", &fdo_payload);
    out.hex("fdo.entry0", fdo_voucher.entry_bytes(0).expect("entry 0"));
    out.hex("fdo.voucher", fdo_voucher.encode());

    // Field life on the same device.
    out.group("identity-proof");
    out.hex("input.field-challenge", &field_challenge);
    let ip = signed_of(answer(
        &mut session,
        &request(
            8,
            Step::IdentityProof(dv1::IdentityProofRequest {
                challenge: field_challenge.clone(),
            }),
        ),
    ));
    out.statement::<v1::IdentityProof>("identity-proof", &ip);

    out.group("reset-proofs");
    out.hex("erased-user-area-sha256", erased_user_area_sha256());
    let reset = signed_of(answer(
        &mut session,
        &request(
            9,
            Step::UserReset(dv1::UserResetRequest {
                challenge: field_challenge.clone(),
            }),
        ),
    ));
    out.statement::<v1::ResetProof>("reset-proof-user-reset", &reset);
    answer(
        &mut session,
        &request(10, Step::EnterService(dv1::EnterServiceRequest {})),
    );
    let decommission = signed_of(answer(
        &mut session,
        &request(
            11,
            Step::Decommission(dv1::DecommissionRequest {
                challenge: field_challenge.clone(),
            }),
        ),
    ));
    out.statement::<v1::ResetProof>("reset-proof-decommission", &decommission);

    // HSM personalisation: the same die, fresh, under each KDF.
    out.group("key-delivery");
    let transport = i.secret("input.key.transport");
    let ephemeral = i.secret("input.key.hsm-ephemeral");
    let eph_spki = spki("input.key.hsm-ephemeral");
    let z = p256::ecdh::diffie_hellman(
        ephemeral.to_nonzero_scalar(),
        transport.public_key().as_affine(),
    );
    out.hex("key-delivery.z", z.raw_secret_bytes());
    let mut pkcs8 = i
        .secret("input.key.identity-hsm")
        .to_pkcs8_der()
        .expect("pkcs8")
        .as_bytes()
        .to_vec();
    out.hex("key-delivery.pkcs8", &pkcs8);
    pkcs8.resize(pkcs8.len().next_multiple_of(8), 0);
    out.hex("key-delivery.plaintext", &pkcs8);
    let mut attestations = Vec::new();
    for kdf in [KDF_ECDH_X_COORDINATE, KDF_ECDH_SHA256] {
        let kek = key_encryption_key(&transport, &eph_spki, kdf).expect("kek");
        if kdf == KDF_ECDH_SHA256 {
            out.text(
                "key-delivery.sha256-kdf-shared-info",
                String::from_utf8_lossy(SHA256_KDF_SHARED_INFO),
            );
        }
        out.hex(&format!("key-delivery.{kdf}.kek"), *kek);
        let wrapped = KekAes256::from(*kek)
            .wrap_with_padding_vec(&pkcs8)
            .expect("wrap");
        out.hex(&format!("key-delivery.{kdf}.wrapped"), &wrapped);
        let mut hsm_session = DeviceSession::new(fixed_die(i));
        answer(&mut hsm_session, &hello);
        answer(&mut hsm_session, &claim);
        answer(
            &mut hsm_session,
            &request(4, Step::LockReadout(dv1::LockReadoutRequest {})),
        );
        let install = request(
            5,
            Step::InstallWrappedKey(dv1::InstallWrappedKeyRequest {
                device_public_key: spki("input.key.identity-hsm"),
                hsm_ephemeral_public_key: eph_spki.clone(),
                wrapped_key: wrapped,
                kdf: kdf.to_owned(),
                challenge: nonce.clone(),
            }),
        );
        attestations.push(signed_of(answer(&mut hsm_session, &install)));
    }
    assert_eq!(
        attestations[0], attestations[1],
        "the kdf does not change the attestation"
    );
    out.group("key-attestation-hsm");
    out.statement::<v1::KeyAttestation>("key-attestation-hsm", &attestations[0]);
    out
}

/// The protected header of the device binding: `{1: -7, 3: content type,
/// 4: kid}` in that order.
pub(crate) fn binding_protected(kid: &[u8; 32]) -> Vec<u8> {
    let ct = BINDING_CONTENT_TYPE.as_bytes();
    let mut p = vec![0xa3, 0x01, 0x26, 0x03];
    cbor_head(&mut p, 3, ct.len());
    p.extend_from_slice(ct);
    p.push(0x04);
    cbor_head(&mut p, 2, kid.len());
    p.extend_from_slice(kid);
    p
}

/// COSE `Sig_structure` for a COSE_Sign1 with empty external AAD.
pub(crate) fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0x84, 0x6a];
    t.extend_from_slice(b"Signature1");
    cbor_head(&mut t, 2, protected.len());
    t.extend_from_slice(protected);
    t.push(0x40);
    cbor_head(&mut t, 2, payload.len());
    t.extend_from_slice(payload);
    t
}

fn cbor_head(out: &mut Vec<u8>, major: u8, len: usize) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=255 => out.extend_from_slice(&[m | 24, len as u8]),
        _ => {
            out.push(m | 25);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
}

/// `voucher` with the binding bytes `old` replaced by `new` (same length).
fn rebind(voucher: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let at = voucher
        .windows(old.len())
        .position(|w| w == old)
        .expect("the binding is in the voucher");
    [&voucher[..at], new, &voucher[at + old.len()..]].concat()
}

/// Formats one group as the body of a fenced `test-vectors` block.
pub(crate) fn format_group(entries: &[(String, Val)]) -> String {
    let mut s = String::new();
    for (name, val) in entries {
        match val {
            Val::Text(t) => s.push_str(&format!("{name}: \"{t}\"\n")),
            Val::Hex(b) if b.len() <= 32 => s.push_str(&format!("{name}: {}\n", hex::encode(b))),
            Val::Hex(b) => {
                s.push_str(&format!("{name}:\n"));
                for chunk in b.chunks(32) {
                    s.push_str(&format!("  {}\n", hex::encode(chunk)));
                }
            }
        }
    }
    s
}

/// Parses every fenced `test-vectors` block of a Markdown document.
pub(crate) fn parse_document(doc: &str) -> BTreeMap<String, Val> {
    let mut out = BTreeMap::new();
    let mut in_block = false;
    let mut current: Option<(String, String)> = None;
    let finish = |cur: &mut Option<(String, String)>, out: &mut BTreeMap<String, Val>| {
        if let Some((name, hexs)) = cur.take() {
            let val = Val::Hex(hex::decode(&hexs).unwrap_or_else(|e| panic!("{name}: {e}")));
            assert!(out.insert(name.clone(), val).is_none(), "{name} twice");
        }
    };
    for line in doc.lines() {
        if !in_block {
            in_block = line.trim_end() == "```test-vectors";
            continue;
        }
        if line.trim_end() == "```" {
            finish(&mut current, &mut out);
            in_block = false;
            continue;
        }
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(cont) = line.strip_prefix("  ") {
            let (_, hexs) = current
                .as_mut()
                .unwrap_or_else(|| panic!("stray line {line:?}"));
            hexs.push_str(cont.trim());
            continue;
        }
        finish(&mut current, &mut out);
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not `name: value`: {line:?}"));
        let value = value.trim();
        if let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            assert!(
                out.insert(name.to_owned(), Val::Text(text.to_owned()))
                    .is_none(),
                "{name} twice"
            );
        } else {
            current = Some((name.to_owned(), value.to_owned()));
        }
    }
    assert!(!in_block, "unterminated test-vectors block");
    out
}
