//! Helpers shared by the CA's integration tests: a SoftHSM2 token per test
//! (one shared token directory per test process), a freshly initialised CA,
//! simulated devices, and the openssl command line as the independent judge
//! of every certificate and CRL.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use ca_service::ca::{self, InitOptions};
use ca_service::keys::KeyLabels;
use ca_service::{Ca, DeviceCertificateRequest, Hsm, HsmConfig, PinSource, SubjectKey};
use hsm_sim::softhsm::{test_token, TestToken};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::{identity, statement, v1};

/// A token of its own for one test, and a pool on it.
pub(crate) fn hsm(name: &str, pool_size: usize) -> (TestToken, Hsm) {
    let token = test_token(name).expect("SoftHSM2 test token");
    let hsm = Hsm::open(&config(&token, pool_size)).expect("open HSM");
    (token, hsm)
}

/// The configuration for `token`.
pub(crate) fn config(token: &TestToken, pool_size: usize) -> HsmConfig {
    let mut config = HsmConfig::new(token.label.clone(), PinSource::File(token.pin_file.clone()));
    config.module = Some(token.module.clone());
    config.pool_size = pool_size;
    config
}

/// A token with an initialised CA on it.
pub(crate) struct Fixture {
    pub(crate) token: TestToken,
    pub(crate) hsm: Hsm,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: Ca,
}

impl Fixture {
    pub(crate) fn ca_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("ca")
    }
}

pub(crate) fn fixture(name: &str, pool_size: usize) -> Fixture {
    let (token, hsm) = hsm(name, pool_size);
    let dir = tempfile::tempdir().expect("tempdir");
    ca::init(&hsm, &InitOptions::default(), &dir.path().join("ca")).expect("ca init");
    let ca = Ca::open(hsm.clone(), &dir.path().join("ca"), &KeyLabels::default()).expect("ca open");
    Fixture {
        token,
        hsm,
        dir,
        ca,
    }
}

/// A fresh simulated RoT id.
pub(crate) fn rot_id() -> String {
    identity::rot_id(SoftwareSigner::generate().public_key_der())
}

/// A request with proof of possession by `device`.
pub(crate) fn pop_request(
    device: &dyn Signer,
    serial: &str,
    rot_id: &str,
) -> DeviceCertificateRequest {
    let proof = statement::sign(
        device,
        &v1::ProofOfPossession {
            rot_id: rot_id.to_owned(),
            serial: serial.to_owned(),
            device_public_key: device.public_key_der().to_vec(),
            challenge: vec![1; 32],
        },
    )
    .expect("sign PoP");
    DeviceCertificateRequest {
        product_serial: serial.to_owned(),
        rot_id: rot_id.to_owned(),
        subject_key: SubjectKey::Possessed {
            public_key: device.public_key_der().to_vec(),
            proof,
        },
    }
}

/// A PKCS#10 CSR made by `key` with common name `cn`.
pub(crate) fn csr(key: &rcgen::KeyPair, cn: &str) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serialize_request(key).expect("CSR").der().to_vec()
}

pub(crate) fn pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// Runs openssl with `args` in `dir`; returns (success, stdout + stderr).
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line must be installed (scripts/install-deps.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Asserts that `openssl verify -CAfile root.pem -untrusted
/// intermediate.pem` accepts every certificate in `certs` (DER).
pub(crate) fn assert_openssl_verifies(ca: &Ca, certs: &[Vec<u8>]) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("root.pem"),
        pem("CERTIFICATE", ca.root_der()),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("intermediate.pem"),
        pem("CERTIFICATE", ca.intermediate_der()),
    )
    .expect("write");
    let mut args = vec![
        "verify".to_owned(),
        "-CAfile".to_owned(),
        "root.pem".to_owned(),
        "-untrusted".to_owned(),
        "intermediate.pem".to_owned(),
    ];
    for (i, cert) in certs.iter().enumerate() {
        let name = format!("device-{i}.pem");
        std::fs::write(dir.path().join(&name), pem("CERTIFICATE", cert)).expect("write");
        args.push(name);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = openssl(dir.path(), &args);
    assert!(ok, "openssl verify failed:\n{text}");
    let oks = text.lines().filter(|l| l.ends_with(": OK")).count();
    assert_eq!(oks, certs.len(), "openssl verify output:\n{text}");
}
