//! The CRL: signing, verifying, installing, and the live view servers keep.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use rcgen::KeyPair;

use super::*;
use crate::pki::{self, Validity};

fn new_ca() -> (KeyPair, CertificateDer<'static>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert =
        pki::service_ca_certificate(&key, "Test service CA", Validity::days_from_now(1)).unwrap();
    (key, cert)
}

fn revoke_one(serial: &[u8]) -> Revoke {
    Revoke {
        serial: serial.to_vec(),
        reason: Reason::KeyCompromise,
    }
}

#[test]
fn a_crl_grows_its_number_and_keeps_every_serial() {
    let (key, ca) = new_ca();
    let dir = tempfile::tempdir().unwrap();
    let empty = write_empty_crl(dir.path(), &ca, &key).unwrap();
    assert_eq!(empty.number, 1);
    assert!(empty.revoked.is_empty());
    // A second call keeps the CRL in force.
    assert_eq!(write_empty_crl(dir.path(), &ca, &key).unwrap(), empty);

    let one = revoke(dir.path(), &ca, &key, &[revoke_one(&[0x41; 16])]).unwrap();
    assert_eq!(one.number, 2);
    assert!(one.is_revoked(&[0x41; 16]));
    // DER's leading zero byte does not hide a serial.
    let mut padded = vec![0];
    padded.extend([0x41; 16]);
    assert!(one.is_revoked(&padded));
    assert!(!one.is_revoked(&[0x42; 16]));
    assert_eq!(one.revoked[0].reason, Some(Reason::KeyCompromise));

    let two = revoke(dir.path(), &ca, &key, &[revoke_one(&[0x42; 16])]).unwrap();
    assert_eq!(two.number, 3);
    assert!(two.is_revoked(&[0x41; 16]) && two.is_revoked(&[0x42; 16]));
    assert_eq!(read_crl(&dir.path().join(CRL_FILE), &ca).unwrap(), two);
}

#[test]
fn a_crl_of_another_ca_or_an_edited_one_does_not_verify() {
    let (key, ca) = new_ca();
    let (other_key, other_ca) = new_ca();
    let dir = tempfile::tempdir().unwrap();
    let crl = revoke(
        dir.path(),
        &other_ca,
        &other_key,
        &[revoke_one(&[0x41; 16])],
    )
    .unwrap();
    assert!(Crl::verify(&crl.der, &ca).is_err());
    let mut edited = crl.der.clone();
    let last = edited.len() - 3;
    edited[last] ^= 1;
    assert!(Crl::verify(&edited, &other_ca).is_err());
    // A CA's CRL does verify under its own certificate only.
    let mine = write_empty_crl(&dir.path().join("mine"), &ca, &key).unwrap();
    assert!(Crl::verify(&mine.der, &other_ca).is_err());
}

#[test]
fn installing_refuses_an_older_crl_or_one_that_drops_a_serial() {
    let (key, ca) = new_ca();
    let hub = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    let first = revoke(hub.path(), &ca, &key, &[revoke_one(&[0x41; 16])]).unwrap();
    let second = revoke(hub.path(), &ca, &key, &[revoke_one(&[0x42; 16])]).unwrap();
    install_crl(site.path(), &ca, &second.der).unwrap();
    // The same CRL again is fine; an older one is not.
    install_crl(site.path(), &ca, &second.der).unwrap();
    let err = install_crl(site.path(), &ca, &first.der).unwrap_err();
    assert!(err.to_string().contains("not above"), "{err}");
    // A higher number that forgets a revoked serial is refused too.
    let forgetful = sign(&ca, &key, 9, &[]).unwrap();
    let err = install_crl(site.path(), &ca, &forgetful.der).unwrap_err();
    assert!(err.to_string().contains("no longer lists"), "{err}");
    assert_eq!(
        read_crl(&site.path().join(CRL_FILE), &ca).unwrap().number,
        second.number
    );
}

#[test]
fn the_live_view_follows_the_file_and_never_goes_back() {
    let (key, ca) = new_ca();
    let dir = tempfile::tempdir().unwrap();
    write_empty_crl(dir.path(), &ca, &key).unwrap();
    let path = dir.path().join(CRL_FILE);
    let live = Revocations::open(&path, &ca).unwrap();
    assert!(live.check(&[0x41; 16]).is_ok());

    let old = std::fs::read(&path).unwrap();
    revoke(dir.path(), &ca, &key, &[revoke_one(&[0x41; 16])]).unwrap();
    let refused = live.check(&[0x41; 16]).unwrap_err();
    assert!(refused.contains("revoked (CRL 2)"), "{refused}");

    // Putting the older file back, or garbage, or removing it, changes
    // nothing: the serial stays revoked.
    std::fs::write(&path, &old).unwrap();
    assert!(live.check(&[0x41; 16]).is_err());
    std::fs::write(&path, b"not a crl").unwrap();
    assert!(live.check(&[0x41; 16]).is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(live.check(&[0x41; 16]).is_err());
    assert_eq!(live.current().number, 2);

    // A missing file at start-up is an error, not an empty list.
    assert!(Revocations::open(&path, &ca).is_err());
}

#[test]
fn serials_are_hex_of_one_to_twenty_bytes() {
    assert_eq!(hex_to_bytes("0A0b").unwrap(), vec![0x0a, 0x0b]);
    for bad in ["", "abc", "zz", "0x"] {
        assert!(hex_to_bytes(bad).is_err(), "{bad}");
    }
    let (key, ca) = new_ca();
    let dir = tempfile::tempdir().unwrap();
    assert!(revoke(dir.path(), &ca, &key, &[revoke_one(&[0; 4])]).is_err());
    assert!(revoke(dir.path(), &ca, &key, &[revoke_one(&[1; 21])]).is_err());
    assert!(!dir.path().join(CRL_FILE).exists());
}
