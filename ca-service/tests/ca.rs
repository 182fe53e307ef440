//! The CA against a real SoftHSM2 token, judged by the openssl command line:
//! `ca init` runs once, every certificate issued (from a proof of
//! possession or a CSR) verifies against the chain and follows the IDevID
//! profile, bad requests get specific errors, 16 issuers share 4 sessions,
//! CRLs verify, and the gRPC service works over loopback (2.4.8.18,
//! 2.4.14.7, 2.4.14.19, 2.4.14.24).

mod common;

use std::sync::Arc;

use ca_service::ca::{self, CrlRequest, InitOptions, RevokedSerial, INTERMEDIATE_CERT_FILE};
use ca_service::keys::KeyLabels;
use ca_service::request::MAX_CSR_LEN;
use ca_service::{Ca, CaService, DeviceCertificateRequest, Error, SubjectKey};
use common::{assert_openssl_verifies, csr, fixture, openssl, pem, pop_request, rot_id};
use time::OffsetDateTime;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;
use trustline_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn csr_request(csr_der: Vec<u8>) -> DeviceCertificateRequest {
    DeviceCertificateRequest {
        product_serial: "SN-CSR-1".to_owned(),
        rot_id: rot_id(),
        subject_key: SubjectKey::Csr(csr_der),
    }
}

#[test]
fn every_certificate_issued_verifies_with_openssl_and_follows_the_profile() {
    let f = fixture("issue", 2);
    let mut certs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..3 {
        let device = SoftwareSigner::generate();
        let rot = rot_id();
        let serial = format!("SN-{i:04}");
        let issued =
            f.ca.issue(
                &pop_request(&device, &serial, &rot)
                    .verify()
                    .expect("verify"),
            )
            .expect("issue");
        expected.push((
            serial,
            rot,
            device.public_key_der().to_vec(),
            issued.serial.clone(),
        ));
        certs.push(issued.certificate);
    }
    for i in 0..2 {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let request = DeviceCertificateRequest {
            product_serial: format!("SN-CSR-{i}"),
            rot_id: rot_id(),
            subject_key: SubjectKey::Csr(csr(&key, "whatever the device asks")),
        };
        let issued =
            f.ca.issue(&request.verify().expect("verify"))
                .expect("issue");
        expected.push((
            request.product_serial.clone(),
            request.rot_id.clone(),
            rcgen::PublicKeyData::subject_public_key_info(&key),
            issued.serial.clone(),
        ));
        certs.push(issued.certificate);
    }
    assert_openssl_verifies(&f.ca, &certs);

    let (_, intermediate) =
        x509_parser::parse_x509_certificate(f.ca.intermediate_der()).expect("intermediate");
    let int_ski = intermediate
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("intermediate SKI");
    for (der, (serial, rot, spki, cert_serial)) in certs.iter().zip(&expected) {
        let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse");
        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        assert_eq!(cert.public_key().raw, spki.as_slice());
        assert_eq!(cert.serial.to_bytes_be(), *cert_serial);
        assert_eq!(cert_serial.len(), 16);
        assert!(cert_serial[0] != 0);
        let subject_serial: Vec<_> = cert
            .subject()
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .map(|a| a.as_str().expect("string").to_owned())
            .collect();
        assert_eq!(subject_serial, vec![serial.clone()]);
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("san")
            .expect("has san")
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(u) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, vec![format!("urn:trustline:rot:{rot}")]);
        let bc = cert.basic_constraints().expect("bc").expect("has bc");
        assert!(bc.critical && !bc.value.ca);
        let ku = cert.key_usage().expect("ku").expect("has ku");
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
        let aki = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("AKI");
        assert_eq!(aki, int_ski);
        assert!(cert.iter_extensions().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::SubjectKeyIdentifier(_)
        )));
        // notAfter is 99991231235959Z, a GeneralizedTime (802.1AR).
        assert_eq!(
            cert.validity().not_after.to_datetime(),
            ca::idevid_not_after()
        );
        assert!(der.windows(17).any(|w| w == b"\x18\x0f99991231235959Z"));
    }
}

#[test]
fn init_runs_once_and_refuses_an_initialised_token_or_directory() {
    let f = fixture("init-once", 1);
    let err = ca::init(&f.hsm, &InitOptions::default(), &f.ca_dir()).expect_err("must be refused");
    let Error::AlreadyInitialized { existing } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(
        existing.len(),
        7,
        "four signing keys, the seal key and two files: {existing:?}"
    );
    let elsewhere = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        ca::init(&f.hsm, &InitOptions::default(), elsewhere.path()),
        Err(Error::AlreadyInitialized { .. })
    ));
    assert_eq!(f.hsm.private_keys().expect("list").len(), 4);
}

#[test]
fn open_checks_the_certificates_against_the_hsm() {
    let f = fixture("open-checks", 1);
    let missing = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Ca::open(f.hsm.clone(), missing.path(), &KeyLabels::default()),
        Err(Error::NotInitialized { .. })
    ));
    // An intermediate certificate for another key is refused.
    std::fs::copy(
        f.ca_dir().join(ca::ROOT_CERT_FILE),
        f.ca_dir().join(INTERMEDIATE_CERT_FILE),
    )
    .expect("copy");
    let err =
        Ca::open(f.hsm.clone(), &f.ca_dir(), &KeyLabels::default()).expect_err("must be refused");
    assert!(
        matches!(
            err,
            Error::CertificateKeyMismatch {
                role: "site intermediate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_csrs_get_specific_errors() {
    // Another curve.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let err = csr_request(csr(&p384, "x"))
        .verify()
        .expect_err("must be refused");
    assert!(
        matches!(&err, Error::CsrUnsupportedKey { key } if key.contains("P-384")),
        "{err:?}"
    );
    // Another algorithm.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let err = csr_request(csr(&ed, "x"))
        .verify()
        .expect_err("must be refused");
    assert!(
        matches!(&err, Error::CsrUnsupportedKey { key } if key.contains("Ed25519")),
        "{err:?}"
    );
    // A bad signature: one byte of the signed content changed.
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut bad = csr(&p256, "device-AAAA");
    let at = bad
        .windows(4)
        .position(|w| w == b"AAAA")
        .expect("CN in CSR");
    bad[at + 3] = b'B';
    let err = csr_request(bad).verify().expect_err("must be refused");
    assert!(matches!(err, Error::CsrBadSignature), "{err:?}");
    // Too large: refused before parsing.
    let mut huge = csr(&p256, "x");
    huge.resize(MAX_CSR_LEN + 1, 0);
    let err = csr_request(huge).verify().expect_err("must be refused");
    assert!(
        matches!(err, Error::CsrTooLarge { len, max: MAX_CSR_LEN } if len == MAX_CSR_LEN + 1),
        "{err:?}"
    );
    // Not a CSR at all.
    let err = csr_request(b"\x30\x03\x02\x01\x00".to_vec())
        .verify()
        .expect_err("must be refused");
    assert!(matches!(err, Error::CsrMalformed { .. }), "{err:?}");
    // Trailing bytes.
    let mut trailing = csr(&p256, "x");
    trailing.push(0);
    assert!(matches!(
        csr_request(trailing).verify(),
        Err(Error::CsrMalformed { .. })
    ));
}

#[test]
fn bad_proofs_of_possession_get_specific_errors() {
    let device = SoftwareSigner::generate();
    let rot = rot_id();
    // Signed by another key.
    let mut request = pop_request(&device, "SN-1", &rot);
    let impostor = SoftwareSigner::generate();
    if let SubjectKey::Possessed { public_key, .. } = &mut request.subject_key {
        *public_key = impostor.public_key_der().to_vec();
    }
    let err = request.verify().expect_err("must be refused");
    assert!(matches!(err, Error::ProofOfPossession { .. }), "{err:?}");
    // Naming another serial or RoT.
    let mut other_serial = pop_request(&device, "SN-1", &rot);
    other_serial.product_serial = "SN-2".to_owned();
    let err = other_serial.verify().expect_err("must be refused");
    assert!(
        matches!(&err, Error::ProofOfPossession { reason } if reason.contains("serial")),
        "{err:?}"
    );
    let mut other_rot = pop_request(&device, "SN-1", &rot);
    other_rot.rot_id = rot_id();
    let err = other_rot.verify().expect_err("must be refused");
    assert!(
        matches!(&err, Error::ProofOfPossession { reason } if reason.contains("rot_id")),
        "{err:?}"
    );
    // Malformed names and keys.
    let mut bad_rot = pop_request(&device, "SN-1", &rot);
    bad_rot.rot_id = "ABC".to_owned();
    assert!(matches!(bad_rot.verify(), Err(Error::InvalidRotId { .. })));
    let bad_serial = pop_request(&device, "SN_1", &rot);
    assert!(matches!(
        bad_serial.verify(),
        Err(Error::InvalidProductSerial { .. })
    ));
    let mut bad_key = pop_request(&device, "SN-1", &rot);
    if let SubjectKey::Possessed { public_key, .. } = &mut bad_key.subject_key {
        *public_key = b"not a key".to_vec();
    }
    assert!(matches!(
        bad_key.verify(),
        Err(Error::InvalidPublicKey { .. })
    ));
}

#[test]
fn sixteen_concurrent_issuers_share_a_pool_of_four_sessions() {
    let f = fixture("concurrent", 4);
    let ca = Arc::new(f.ca);
    let requests: Vec<_> = (0..16)
        .map(|t| {
            (0..3)
                .map(|i| {
                    pop_request(
                        &SoftwareSigner::generate(),
                        &format!("SN-{t}-{i}"),
                        &rot_id(),
                    )
                    .verify()
                    .expect("verify")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|batch| {
            let ca = Arc::clone(&ca);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                batch
                    .iter()
                    .map(|r| ca.issue(r).expect("issue under contention"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let issued: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("issuer thread"))
        .collect();
    assert_eq!(issued.len(), 48);
    let serials: std::collections::HashSet<_> = issued.iter().map(|c| c.serial.clone()).collect();
    assert_eq!(serials.len(), 48, "serials must be unique");
    assert_eq!(ca.hsm().pool_size(), 4);
    let certs: Vec<_> = issued.into_iter().map(|c| c.certificate).collect();
    assert_openssl_verifies(&ca, &certs);
}

#[test]
fn crls_list_the_serials_and_verify_with_openssl() {
    let f = fixture("crl", 1);
    let revoked_cert =
        f.ca.issue(
            &pop_request(&SoftwareSigner::generate(), "SN-REVOKED", &rot_id())
                .verify()
                .expect("verify"),
        )
        .expect("issue");
    let now = OffsetDateTime::now_utc();
    let crl =
        f.ca.sign_crl(&CrlRequest {
            revoked: vec![
                RevokedSerial {
                    serial: revoked_cert.serial.clone(),
                    revoked_at: now,
                },
                RevokedSerial {
                    serial: vec![0x01, 0x02, 0x03],
                    revoked_at: now,
                },
            ],
            crl_number: 7,
            this_update: now,
            next_update: now + time::Duration::days(7),
        })
        .expect("sign CRL");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("crl.pem"), pem("X509 CRL", &crl)).expect("write");
    std::fs::write(
        dir.path().join("chain.pem"),
        format!(
            "{}{}",
            pem("CERTIFICATE", f.ca.intermediate_der()),
            pem("CERTIFICATE", f.ca.root_der())
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("root.pem"),
        pem("CERTIFICATE", f.ca.root_der()),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("intermediate.pem"),
        pem("CERTIFICATE", f.ca.intermediate_der()),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("device.pem"),
        pem("CERTIFICATE", &revoked_cert.certificate),
    )
    .expect("write");
    let (ok, text) = openssl(
        dir.path(),
        &[
            "crl",
            "-in",
            "crl.pem",
            "-CAfile",
            "chain.pem",
            "-noout",
            "-text",
        ],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(
        text.to_lowercase()
            .contains(&hex::encode(&revoked_cert.serial)),
        "serial missing:\n{text}"
    );
    assert!(text.contains("010203"), "{text}");
    // The revoked certificate is now refused by a CRL-checking verifier.
    let (ok, text) = openssl(
        dir.path(),
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "device.pem",
        ],
    );
    assert!(!ok && text.contains("revoked"), "{text}");

    let err =
        f.ca.sign_crl(&CrlRequest {
            revoked: vec![],
            crl_number: 8,
            this_update: now,
            next_update: now,
        })
        .expect_err("must be refused");
    assert!(matches!(err, Error::InvalidCrlRequest { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_service_issues_wraps_signs_crls_and_voucher_entries() {
    let f = fixture("grpc", 2);
    let ca = Arc::new(f.ca);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CaService::new(Arc::clone(&ca)).into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let mut client = CertificateAuthorityClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let chain = client
        .get_chain(v1::GetChainRequest {})
        .await
        .expect("chain")
        .into_inner();
    assert_eq!(
        chain.certificates,
        vec![ca.intermediate_der().to_vec(), ca.root_der().to_vec()]
    );
    assert_eq!(chain.voucher_public_key, ca.voucher_public_key_der());

    let device = SoftwareSigner::generate();
    let rot = rot_id();
    let request = pop_request(&device, "SN-GRPC-1", &rot);
    let SubjectKey::Possessed { public_key, proof } = request.subject_key else {
        unreachable!("pop_request makes a possessed key");
    };
    let issued = client
        .issue_device_certificate(v1::IssueDeviceCertificateRequest {
            product_serial: "SN-GRPC-1".to_owned(),
            rot_id: rot.clone(),
            subject_key: Some(
                v1::issue_device_certificate_request::SubjectKey::PossessedKey(v1::PossessedKey {
                    public_key,
                    proof: Some(proof),
                }),
            ),
        })
        .await
        .expect("issue")
        .into_inner();
    assert_eq!(issued.chain, chain.certificates);
    assert_eq!(issued.certificate_serial.len(), 16);
    assert_openssl_verifies(&ca, std::slice::from_ref(&issued.certificate));

    let status = client
        .issue_device_certificate(v1::IssueDeviceCertificateRequest {
            product_serial: "SN-GRPC-2".to_owned(),
            rot_id: rot.clone(),
            subject_key: Some(v1::issue_device_certificate_request::SubjectKey::CsrDer(
                vec![0x30; MAX_CSR_LEN + 1],
            )),
        })
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("exceeds"), "{}", status.message());
    let status = client
        .issue_device_certificate(v1::IssueDeviceCertificateRequest {
            product_serial: "SN-GRPC-3".to_owned(),
            rot_id: rot.clone(),
            subject_key: None,
        })
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let transport = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let wrapped = client
        .generate_wrapped_key(v1::GenerateWrappedKeyRequest {
            transport_public_key: trustline_proto::statement::p256_spki(&transport.public_key()),
            rot_id: rot.clone(),
        })
        .await
        .expect("wrap")
        .into_inner();
    let key = hsm_sim::key_delivery::unwrap_device_key(
        &transport,
        &wrapped.hsm_ephemeral_public_key,
        &wrapped.wrapped_key,
        &wrapped.kdf,
    )
    .expect("unwrap");
    assert_eq!(
        trustline_proto::statement::p256_spki(&key.public_key()),
        wrapped.device_public_key
    );

    let now_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let crl = client
        .sign_crl(v1::SignCrlRequest {
            revoked: vec![v1::RevokedCertificate {
                serial: issued.certificate_serial.clone(),
                revoked_at_ms: now_ms,
            }],
            crl_number: 1,
            this_update_ms: now_ms,
            next_update_ms: now_ms + 86_400_000,
        })
        .await
        .expect("crl")
        .into_inner()
        .crl;
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).expect("CRL parses");
    assert_eq!(parsed.iter_revoked_certificates().count(), 1);

    let header = trustline_proto::voucher::VoucherHeader::new(
        &rot,
        "SN-GRPC-1",
        trustline_proto::voucher::cert_chain_hash(std::slice::from_ref(&issued.certificate)),
        &chain.voucher_public_key,
    )
    .expect("header");
    let owner = SoftwareSigner::generate();
    let payload = trustline_proto::voucher::first_entry_payload(&header, owner.public_key_der())
        .expect("payload");
    let entry = client
        .sign_voucher_entry(v1::SignVoucherEntryRequest {
            entry_payload: payload.clone(),
            ..Default::default()
        })
        .await
        .expect("voucher entry")
        .into_inner()
        .cose_sign1;
    let mut voucher = trustline_proto::voucher::Voucher::new(header);
    voucher
        .push_entry(&entry)
        .expect("entry continues the voucher");
    voucher
        .verify(&chain.voucher_public_key)
        .expect("signed by the OEM voucher key");
    assert_eq!(voucher.current_owner(), owner.public_key_der());
    let status = client
        .sign_voucher_entry(v1::SignVoucherEntryRequest {
            entry_payload: b"not cbor".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Issue 17: asked for an FDO entry, the CA validates the payload as an
    // FDO `OVEntryPayload` (a Trustline payload is refused, and the reverse),
    // signs it with the same OEM voucher key, and never seals it.
    let fdo_header = trustline_proto::fdo::FdoHeader {
        guid: [9; 16],
        rv_info: trustline_proto::fdo::RendezvousInfo::server(
            "rv.example.com",
            8041,
            trustline_proto::fdo::rendezvous::protocol::HTTPS,
        ),
        device_info: "test".into(),
        manufacturer_public_key: chain.voucher_public_key.clone(),
        cert_chain_sha256: trustline_proto::fdo::cert_chain_sha256(std::slice::from_ref(
            &issued.certificate,
        )),
    };
    let mut fdo = trustline_proto::fdo::FdoVoucher::new(
        fdo_header,
        [0; 32],
        vec![issued.certificate.clone()],
    )
    .expect("fdo voucher");
    let fdo_payload = fdo
        .next_entry_payload(owner.public_key_der(), None)
        .expect("fdo payload");
    let fdo_entry = client
        .sign_voucher_entry(v1::SignVoucherEntryRequest {
            entry_payload: fdo_payload.clone(),
            fdo: true,
            ..Default::default()
        })
        .await
        .expect("fdo entry")
        .into_inner();
    assert!(fdo_entry.sealed_entry.is_empty());
    fdo.push_entry(&fdo_entry.cose_sign1)
        .expect("an fdo entry 0 signed by the OEM voucher key");
    for (what, request) in [
        (
            "a trustline payload as fdo",
            v1::SignVoucherEntryRequest {
                entry_payload: payload.clone(),
                fdo: true,
                ..Default::default()
            },
        ),
        (
            "an fdo payload as trustline",
            v1::SignVoucherEntryRequest {
                entry_payload: fdo_payload.clone(),
                ..Default::default()
            },
        ),
        (
            "a sealed fdo entry",
            v1::SignVoucherEntryRequest {
                entry_payload: fdo_payload.clone(),
                rot_id: rot.clone(),
                entry_index: 0,
                fdo: true,
            },
        ),
    ] {
        let status = client.sign_voucher_entry(request).await.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }

    // Issue 12 item 10: named for a device and index, the entry comes back
    // sealed under the OEM seal key too; only that device and index open it.
    let sealed = client
        .sign_voucher_entry(v1::SignVoucherEntryRequest {
            entry_payload: payload.clone(),
            rot_id: rot.clone(),
            entry_index: 0,
            fdo: false,
        })
        .await
        .expect("sealed voucher entry")
        .into_inner();
    assert!(!sealed.sealed_entry.is_empty());
    assert!(
        !sealed
            .sealed_entry
            .windows(owner.public_key_der().len())
            .any(|w| w == owner.public_key_der()),
        "the seal holds no owner key in clear"
    );
    let unseal =
        |rot_id: &str, entry_index: u32, sealed_entry: &[u8]| v1::UnsealVoucherEntryRequest {
            rot_id: rot_id.to_owned(),
            entry_index,
            sealed_entry: sealed_entry.to_vec(),
        };
    let opened = client
        .unseal_voucher_entry(unseal(&rot, 0, &sealed.sealed_entry))
        .await
        .expect("unseal")
        .into_inner();
    assert_eq!(opened.cose_sign1, sealed.cose_sign1);
    let mut flipped = sealed.sealed_entry.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x01;
    let other_rot = "ab".repeat(32);
    for (what, request) in [
        ("an altered byte", unseal(&rot, 0, &flipped)),
        (
            "another device",
            unseal(&other_rot, 0, &sealed.sealed_entry),
        ),
        ("another index", unseal(&rot, 1, &sealed.sealed_entry)),
        (
            "a truncated seal",
            unseal(
                &rot,
                0,
                &sealed.sealed_entry[..sealed.sealed_entry.len() - 1],
            ),
        ),
        ("no seal", unseal(&rot, 0, &[])),
    ] {
        let status = client.unseal_voucher_entry(request).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::DataLoss, "{what}: {status:?}");
    }
    let status = client
        .unseal_voucher_entry(unseal("NOT-A-ROT", 0, &sealed.sealed_entry))
        .await
        .expect_err("malformed rot_id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}
