//! `trustline voucher verify --chain` fails closed (issue 12.12): a voucher
//! the device never bound, or whose header names another rot_id or serial
//! than the device certificate, is refused (exit 1) unless a flag accepts
//! an unbound header explicitly (2.4.14.7).

use std::process::Command;

use rcgen::{CertificateParams, DnType, IsCa, KeyPair, SanType};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::voucher::Voucher;

const BIN: &str = env!("CARGO_BIN_EXE_trustline");

fn rot_id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A device chain (device, intermediate, root) whose device certificate
/// names `rot` and `serial` and certifies `device`'s key.
fn chain(device: &SoftwareSigner, rot: &str, serial: &str) -> Vec<Vec<u8>> {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut root = CertificateParams::new(Vec::<String>::new()).expect("params");
    root.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.distinguished_name.push(DnType::CommonName, "root");
    let root_cert = root.self_signed(&root_key).expect("root");
    let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut int = CertificateParams::new(Vec::<String>::new()).expect("params");
    int.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    int.distinguished_name
        .push(DnType::CommonName, "intermediate");
    let root_issuer = rcgen::Issuer::new(root, &root_key);
    let int_cert = int.signed_by(&int_key, &root_issuer).expect("intermediate");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.distinguished_name.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString(serial.try_into().expect("printable")),
    );
    leaf.subject_alt_names = vec![SanType::URI(
        format!("{}{rot}", trustline_proto::ROT_URI_PREFIX)
            .try_into()
            .expect("uri"),
    )];
    let device_key = rcgen::SubjectPublicKeyInfo::from_der(device.public_key_der()).expect("spki");
    let int_issuer = rcgen::Issuer::new(int, &int_key);
    let leaf_cert = leaf.signed_by(&device_key, &int_issuer).expect("device");
    vec![
        leaf_cert.der().to_vec(),
        int_cert.der().to_vec(),
        root_cert.der().to_vec(),
    ]
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    /// A voucher whose header says `header_rot` and `header_serial` for
    /// `chain`, bound by `binder` if any.
    fn new(
        chain: &[Vec<u8>],
        header_rot: &str,
        header_serial: &str,
        binder: Option<&SoftwareSigner>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let oem = SoftwareSigner::generate();
        let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        let mut voucher =
            Voucher::manufacturer(header_rot, header_serial, &refs, oem.public_key_der())
                .expect("voucher");
        if let Some(device) = binder {
            voucher.bind_to_device(device).expect("bind");
        }
        std::fs::write(dir.path().join("voucher.cbor"), voucher.encode()).expect("write");
        let key = pem::encode(&pem::Pem::new("PUBLIC KEY", oem.public_key_der().to_vec()));
        std::fs::write(dir.path().join("oem.pem"), key).expect("write");
        let chain_pem: String = chain
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone())))
            .collect();
        std::fs::write(dir.path().join("chain.pem"), chain_pem).expect("write");
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs `voucher verify --chain` with `extra`; exit code and stdout.
    fn verify(&self, extra: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(BIN)
            .args(["voucher", "verify", "--voucher"])
            .arg(self.path("voucher.cbor"))
            .arg("--manufacturer-key")
            .arg(self.path("oem.pem"))
            .arg("--chain")
            .arg(self.path("chain.pem"))
            .args(extra)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

#[test]
fn a_bound_voucher_naming_the_certified_device_verifies() {
    let device = SoftwareSigner::generate();
    let c = chain(&device, &rot_id(1), "SN-0001");
    let case = Case::new(&c, &rot_id(1), "SN-0001", Some(&device));
    let (code, out) = case.verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verified under the device key"), "{out}");
    assert!(
        out.contains("names the header's rot_id and serial"),
        "{out}"
    );
}

#[test]
fn an_unbound_voucher_fails_unless_explicitly_allowed() {
    let device = SoftwareSigner::generate();
    let c = chain(&device, &rot_id(2), "SN-0002");
    let case = Case::new(&c, &rot_id(2), "SN-0002", None);
    let (code, out) = case.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED: absent"), "{out}");
    let (code, out) = case.verify(&["--allow-unbound"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("accepted: --allow-unbound"), "{out}");
}

#[test]
fn a_header_naming_another_rot_id_or_serial_fails_even_when_bound() {
    let device = SoftwareSigner::generate();
    let c = chain(&device, &rot_id(3), "SN-0003");
    // The chain hash matches and the device key bound the header, but the
    // header speaks of another device.
    for (rot, serial, what) in [
        (rot_id(4), "SN-0003", "rot_id"),
        (rot_id(3), "SN-0004", "serial"),
    ] {
        let case = Case::new(&c, &rot, serial, Some(&device));
        let (code, out) = case.verify(&[]);
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(out.contains(&format!("the header names {what}")), "{out}");
        // No flag accepts that.
        let (code, _) = case.verify(&["--allow-unbound"]);
        assert_eq!(code, Some(1), "{what}");
    }
}

#[test]
fn a_binding_by_another_key_fails() {
    let device = SoftwareSigner::generate();
    let other = SoftwareSigner::generate();
    let c = chain(&device, &rot_id(5), "SN-0005");
    let case = Case::new(&c, &rot_id(5), "SN-0005", Some(&other));
    let (code, out) = case.verify(&[]);
    assert_eq!(code, Some(1), "{out}");
}
