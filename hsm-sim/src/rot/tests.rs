//! Tests of the simulated silicon: the claim slot, statements and their keys,
//! vendor chains, clones and counterfeits, personalisation, certification,
//! and the one-way field lifecycle.

use rcgen::{CertificateParams, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use trustline_proto::statement::verify;
use trustline_proto::v1;
use trustline_proto::voucher::{cert_chain_hash, Voucher, VoucherHeader};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::Error;

const ANCHOR: &[u8] = b"OEM root certificate DER";
const NONCE: &[u8] = &[7; 32];

fn fleet() -> Fleet {
    Fleet::builder()
        .seed(42)
        .genuine(4)
        .key_clones(1)
        .impostors(1)
        .self_signed(1)
        .unknown_vendor(1)
        .wrong_firmware(1)
        .readout_unlocked(1)
        .build()
        .expect("fleet")
}

fn first_of(fleet: &mut Fleet, kind: fn(DeviceKind) -> bool) -> &mut SimulatedRot {
    &mut fleet
        .devices_mut()
        .iter_mut()
        .find(|d| kind(d.kind))
        .expect("device of that kind")
        .rot
}

fn spki_of(cert_der: &[u8]) -> Vec<u8> {
    let (_, cert) = X509Certificate::from_der(cert_der).expect("certificate parses");
    cert.public_key().raw.to_vec()
}

/// Whether `chain` (leaf first, root excluded) chains to `root_der` with
/// valid signatures at every link.
fn chains_to(chain: &[Vec<u8>], root_der: &[u8]) -> bool {
    fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(der).map(|(_, c)| c).ok()
    }
    let Some(root) = parse(root_der) else {
        return false;
    };
    let mut certs = Vec::new();
    for der in chain {
        let Some(cert) = parse(der) else {
            return false;
        };
        certs.push(cert);
    }
    certs.push(root);
    certs.windows(2).all(|pair| {
        pair[0].issuer() == pair[1].subject()
            && pair[0].verify_signature(Some(pair[1].public_key())).is_ok()
    })
}

/// Claims and personalises `rot` on the device.
fn personalised(rot: &mut SimulatedRot) -> Vec<u8> {
    rot.claim(NONCE, ANCHOR).expect("claim");
    let (spki, _) = rot.generate_identity_key(NONCE).expect("keygen");
    spki
}

/// A device certificate for `spki` and the CA that issued it (leaf first).
fn device_chain(spki: &[u8], serial: &str) -> Vec<Vec<u8>> {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, serial);
    let subject = rcgen::SubjectPublicKeyInfo::from_der(spki).expect("spki");
    let leaf = leaf.signed_by(&subject, &issuer).expect("leaf");
    vec![leaf.der().to_vec(), ca_cert.der().to_vec()]
}

fn voucher_for(rot: &SimulatedRot, chain: &[Vec<u8>]) -> Vec<u8> {
    let oem = trustline_proto::signer::SoftwareSigner::generate();
    let header = VoucherHeader::new(
        rot.rot_id(),
        "TL-1",
        cert_chain_hash(chain),
        trustline_proto::signer::Signer::public_key_der(&oem),
    )
    .expect("header");
    Voucher::new(header).encode()
}

// ---------------------------------------------------------------------------
// Claim slot and statements.
// ---------------------------------------------------------------------------

#[test]
fn claim_is_one_time_even_with_the_same_anchor() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    assert_eq!(rot.lifecycle(), Lifecycle::Blank);
    let receipt = rot.claim(NONCE, ANCHOR).expect("first claim");
    let body: v1::ClaimReceipt =
        verify(&receipt, rot.attestation_public_key()).expect("receipt verifies");
    assert_eq!(body.rot_id, rot.rot_id());
    assert_eq!(body.nonce, NONCE);
    assert_eq!(body.anchor_sha256, Sha256::digest(ANCHOR).to_vec());
    assert!(matches!(
        rot.claim(NONCE, ANCHOR),
        Err(Error::AlreadyClaimed)
    ));
    assert!(matches!(
        rot.claim(&[8; 32], b"another anchor"),
        Err(Error::AlreadyClaimed)
    ));
    assert_eq!(rot.anchor(), Some(ANCHOR));
    assert_eq!(rot.lifecycle(), Lifecycle::Claimed);
}

#[test]
fn bad_claim_inputs_are_refused_without_using_the_slot() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    assert!(matches!(
        rot.claim(&[], ANCHOR),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(rot.claim(NONCE, &[]), Err(Error::InvalidInput(_))));
    assert!(matches!(
        rot.claim(NONCE, &vec![1; MAX_ANCHOR_LEN + 1]),
        Err(Error::InvalidInput(_))
    ));
    rot.claim(NONCE, ANCHOR).expect("the slot is still free");
}

#[test]
fn statements_verify_under_their_own_attestation_key_only() {
    let mut fleet = fleet();
    let other_key = fleet.devices()[1].rot.attestation_public_key().to_vec();
    let rot = &mut fleet.devices_mut()[0].rot;
    // The certificate names the key the die signs with.
    assert_eq!(
        spki_of(&rot.attestation_chain()[0]),
        rot.attestation_public_key()
    );
    assert_eq!(
        rot.rot_id(),
        trustline_proto::identity::rot_id(rot.attestation_public_key())
    );

    let attestation = rot.attestation();
    let transport = attestation.transport_key.expect("transport statement");
    let stmt: v1::TransportKeyStatement =
        verify(&transport, rot.attestation_public_key()).expect("transport key attested");
    assert_eq!(stmt.public_key, rot.transport_public_key());
    assert!(verify::<v1::TransportKeyStatement>(&transport, &other_key).is_err());

    let receipt = rot.claim(NONCE, ANCHOR).expect("claim");
    assert!(verify::<v1::ClaimReceipt>(&receipt, &other_key).is_err());

    let (spki, attestation) = rot.generate_identity_key(NONCE).expect("keygen");
    assert!(verify::<v1::KeyAttestation>(&attestation, &other_key).is_err());
    let body: v1::KeyAttestation =
        verify(&attestation, rot.attestation_public_key()).expect("key attestation");
    assert_eq!(body.device_public_key, spki);
    assert_eq!(body.mode, v1::PersonalisationMode::OnDevice as i32);
    assert_eq!(body.firmware_sha256, default_firmware_sha256().to_vec());
    assert!(body.readout_locked);
    assert_eq!(body.anchor_sha256, Sha256::digest(ANCHOR).to_vec());
    assert_eq!(body.challenge, NONCE);
    // Statements made by the identity key do not pass for the die's.
    let proof = rot.identity_proof(NONCE).expect("identity proof");
    assert!(verify::<v1::IdentityProof>(&proof, rot.attestation_public_key()).is_err());
    verify::<v1::IdentityProof>(&proof, &spki).expect("identity proof verifies");
}

// ---------------------------------------------------------------------------
// Vendors, clones, counterfeits.
// ---------------------------------------------------------------------------

#[test]
fn genuine_dies_chain_to_their_vendor_root_only() {
    let fleet = fleet();
    let roots = fleet.vendor_roots();
    assert_eq!(roots.len(), 2, "two vendors by default");
    let mut vendors_seen = std::collections::HashSet::new();
    for device in fleet
        .devices()
        .iter()
        .filter(|d| d.kind == DeviceKind::Genuine)
    {
        let rot = &device.rot;
        vendors_seen.insert(rot.vendor_name().to_owned());
        let matching: Vec<&str> = roots
            .iter()
            .filter(|(_, root)| chains_to(rot.attestation_chain(), root))
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(matching, [rot.vendor_name()]);
        // The chip serial is in the subject; the root is not sent.
        let (_, leaf) = X509Certificate::from_der(&rot.attestation_chain()[0]).expect("leaf");
        assert!(leaf.subject().to_string().contains(rot.chip_serial()));
        assert!(!rot
            .attestation_chain()
            .iter()
            .any(|c| roots.iter().any(|(_, r)| r == c)));
    }
    assert_eq!(
        vendors_seen.len(),
        2,
        "genuine devices come from both vendors"
    );
    // One vendor issues through an intermediate, the other from its root.
    let lens: Vec<usize> = fleet
        .vendors()
        .iter()
        .map(|v| usize::from(v.intermediate_der().is_some()))
        .collect();
    assert_eq!(lens, [1, 0]);
}

#[test]
fn counterfeits_do_not_chain_to_any_configured_vendor_root() {
    let fleet = fleet();
    let roots = fleet.vendor_roots();
    let counterfeits: Vec<&FleetDevice> = fleet
        .devices()
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::SelfSigned | DeviceKind::UnknownVendor))
        .collect();
    assert_eq!(counterfeits.len(), 2);
    for device in counterfeits {
        for (name, root) in &roots {
            assert!(
                !chains_to(device.rot.attestation_chain(), root),
                "{} chains to {name}",
                device.kind.name()
            );
        }
        // They pose as a configured vendor.
        assert_eq!(device.rot.vendor_name(), roots[0].0);
        assert_eq!(device.kind.expected(), Expected::CounterfeitRejected);
    }
}

#[test]
fn key_clones_share_the_rot_id_and_sign_validly() {
    let mut fleet = fleet();
    let (of, clone_index) = fleet
        .devices()
        .iter()
        .enumerate()
        .find_map(|(i, d)| match d.kind {
            DeviceKind::KeyClone { of } => Some((of, i)),
            _ => None,
        })
        .expect("a clone");
    let original_id = fleet.devices()[of].rot.rot_id().to_owned();
    let original_key = fleet.devices()[of].rot.attestation_public_key().to_vec();
    let clone = &mut fleet.devices_mut()[clone_index].rot;
    assert_eq!(clone.rot_id(), original_id);
    // Its own claim slot, and signatures that verify: only the ledger can
    // tell it from the original.
    let receipt = clone.claim(NONCE, ANCHOR).expect("clone claims");
    verify::<v1::ClaimReceipt>(&receipt, &original_key).expect("clone's receipt verifies");
    // Clones made later (of a certified device) behave the same.
    let late = fleet.key_clone(of).expect("clone");
    assert_eq!(late.rot_id(), original_id);
}

#[test]
fn impostors_share_the_rot_id_but_their_signatures_fail() {
    let mut fleet = fleet();
    let (of, index) = fleet
        .devices()
        .iter()
        .enumerate()
        .find_map(|(i, d)| match d.kind {
            DeviceKind::Impostor { of } => Some((of, i)),
            _ => None,
        })
        .expect("an impostor");
    let victim_chain = fleet.devices()[of].rot.attestation_chain().to_vec();
    let roots = fleet.vendor_roots();
    let impostor = &mut fleet.devices_mut()[index].rot;
    assert_eq!(impostor.attestation_chain(), victim_chain.as_slice());
    assert!(roots
        .iter()
        .any(|(_, r)| chains_to(impostor.attestation_chain(), r)));
    let cert_key = spki_of(&impostor.attestation_chain()[0]);
    let transport = impostor.attestation().transport_key.expect("statement");
    assert!(verify::<v1::TransportKeyStatement>(&transport, &cert_key).is_err());
    let receipt = impostor.claim(NONCE, ANCHOR).expect("claims");
    assert!(verify::<v1::ClaimReceipt>(&receipt, &cert_key).is_err());
}

#[test]
fn a_replaying_die_answers_with_the_recorded_receipt() {
    let mut fleet = fleet();
    let original = fleet.devices_mut()[0]
        .rot
        .claim(NONCE, ANCHOR)
        .expect("claim");
    let mut clone = fleet.key_clone(0).expect("clone");
    clone.replay_claim_receipt(original.clone());
    let replayed = clone.claim(&[9; 32], ANCHOR).expect("answers");
    assert_eq!(replayed, original);
    let body: v1::ClaimReceipt = verify(&replayed, clone.attestation_public_key()).expect("valid");
    assert_ne!(body.nonce, vec![9; 32], "the receipt names the old nonce");
    assert_eq!(clone.anchor(), None, "nothing was installed");
}

#[test]
fn policy_failures_report_themselves_truthfully() {
    let mut fleet = fleet();
    let unlocked = first_of(&mut fleet, |k| k == DeviceKind::ReadoutUnlocked);
    unlocked.lock_readout();
    assert!(!unlocked.readout_locked(), "the lock does not take");
    unlocked.claim(NONCE, ANCHOR).expect("claim");
    let key = unlocked.attestation_public_key().to_vec();
    let (_, att) = unlocked.generate_identity_key(NONCE).expect("keygen");
    assert!(
        !verify::<v1::KeyAttestation>(&att, &key)
            .expect("verifies")
            .readout_locked
    );

    let firmware = fleet.firmware_sha256();
    let wrong = first_of(&mut fleet, |k| k == DeviceKind::WrongFirmware);
    assert_ne!(wrong.firmware_sha256(), firmware);
    wrong.claim(NONCE, ANCHOR).expect("claim");
    let key = wrong.attestation_public_key().to_vec();
    let (_, att) = wrong.generate_identity_key(NONCE).expect("keygen");
    let body: v1::KeyAttestation = verify(&att, &key).expect("verifies");
    assert_ne!(body.firmware_sha256, firmware.to_vec());
    assert!(body.readout_locked);
}

#[test]
fn devices_can_be_driven_from_other_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SimulatedRot>();
    assert_send_sync::<Fleet>();
}

#[test]
fn a_seeded_fleet_is_reproducible() {
    let ids = |f: &Fleet| {
        f.devices()
            .iter()
            .map(|d| d.rot.rot_id().to_owned())
            .collect::<Vec<_>>()
    };
    let a = fleet();
    let b = fleet();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.vendor_roots(), b.vendor_roots());
    let c = Fleet::builder().seed(43).genuine(4).build().expect("fleet");
    assert_ne!(ids(&a)[..4], ids(&c)[..]);
    assert!(matches!(
        Fleet::builder().key_clones(1).build(),
        Err(Error::InvalidInput(_))
    ));
}

// ---------------------------------------------------------------------------
// Personalisation and certification.
// ---------------------------------------------------------------------------

#[test]
fn keys_are_made_only_after_a_claim_and_only_once() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    assert!(matches!(
        rot.generate_identity_key(NONCE),
        Err(Error::NotClaimed)
    ));
    assert!(matches!(
        rot.identity_proof(NONCE),
        Err(Error::NotPersonalised)
    ));
    assert!(matches!(rot.csr("TL-1"), Err(Error::NotPersonalised)));
    rot.claim(NONCE, ANCHOR).expect("claim");
    let (spki, _) = rot.generate_identity_key(NONCE).expect("keygen");
    assert_eq!(rot.identity_public_key(), Some(spki.as_slice()));
    assert!(matches!(
        rot.generate_identity_key(NONCE),
        Err(Error::AlreadyPersonalised)
    ));
    assert_eq!(rot.lifecycle(), Lifecycle::Personalised);
}

#[test]
fn proofs_and_csr_are_signed_by_the_identity_key() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    let spki = personalised(rot);
    let pop = rot.proof_of_possession("TL-000001", NONCE).expect("pop");
    let body: v1::ProofOfPossession = verify(&pop, &spki).expect("pop verifies");
    assert_eq!(body.serial, "TL-000001");
    assert_eq!(body.device_public_key, spki);
    assert_eq!(body.rot_id, rot.rot_id());

    let csr = rot.csr("TL-000001").expect("csr");
    let (rest, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
        .expect("csr parses");
    assert!(rest.is_empty());
    req.verify_signature().expect("csr self-signature");
    assert_eq!(
        req.certification_request_info.subject_pki.raw,
        spki.as_slice()
    );
    assert!(req
        .certification_request_info
        .subject
        .to_string()
        .contains("TL-000001"));
    assert!(matches!(rot.csr(""), Err(Error::InvalidInput(_))));
}

#[test]
fn the_device_stores_its_certification_and_binds_the_voucher() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    let spki = personalised(rot);
    let chain = device_chain(&spki, "TL-1");
    let voucher = voucher_for(rot, &chain);

    // Another key's certificate is refused.
    let other = trustline_proto::signer::SoftwareSigner::generate();
    let wrong_chain = device_chain(
        trustline_proto::signer::Signer::public_key_der(&other),
        "TL-1",
    );
    assert!(matches!(
        rot.store_certification(&wrong_chain, &voucher),
        Err(Error::WrongCertification(_))
    ));
    // A voucher for another chain is refused.
    let other_voucher = voucher_for(rot, &device_chain(&spki, "TL-2"));
    assert!(matches!(
        rot.store_certification(&chain, &other_voucher),
        Err(Error::WrongCertification(_))
    ));
    assert!(rot.certificate_chain().is_empty());

    let bound = rot.store_certification(&chain, &voucher).expect("stored");
    assert_eq!(rot.certificate_chain(), chain.as_slice());
    assert_eq!(rot.voucher(), Some(bound.as_slice()));
    Voucher::decode(&bound)
        .expect("decodes")
        .verify_device_binding(&chain, &spki)
        .expect("bound by the identity key");
    // A retry stores the same thing.
    assert_eq!(
        rot.store_certification(&chain, &bound).expect("retry"),
        bound
    );
}

#[test]
fn the_fdo_header_hmac_binds_one_header_of_this_devices_certification() {
    use trustline_proto::fdo::{self, FdoDeviceData, FdoHeader, FdoVoucher, RendezvousInfo};

    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    let data = FdoDeviceData {
        rv_info: RendezvousInfo::server("rv.example.test", 8041, fdo::rendezvous::protocol::HTTPS),
        device_info: "Acme Sensor X1".into(),
    };
    // Before personalisation there is no secret, before certification no
    // header to check against.
    let some_header = [0x86];
    assert!(matches!(
        rot.fdo_header_hmac(&some_header),
        Err(Error::NotPersonalised)
    ));
    let spki = personalised(rot);
    assert!(matches!(
        rot.fdo_header_hmac(&some_header),
        Err(Error::WrongCertification(_))
    ));
    let chain = device_chain(&spki, "TL-1");
    let bound = rot
        .store_certification(&chain, &voucher_for(rot, &chain))
        .expect("stored");
    let voucher = Voucher::decode(&bound).expect("bound voucher");
    let header = FdoHeader::from_trustline(voucher.header(), &chain, &data).expect("fdo header");

    // Refusals: empty, garbage, another guid, another chain.
    assert!(matches!(
        rot.fdo_header_hmac(&[]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        rot.fdo_header_hmac(b"not cbor"),
        Err(Error::Proto(trustline_proto::Error::FdoMalformed(_)))
    ));
    let mut other_guid = header.clone();
    other_guid.guid[0] ^= 1;
    assert!(matches!(
        rot.fdo_header_hmac(&other_guid.encode()),
        Err(Error::WrongCertification(_))
    ));
    let mut other_chain = header.clone();
    other_chain.cert_chain_sha256 = fdo::cert_chain_sha256(&chain[..1]);
    assert!(matches!(
        rot.fdo_header_hmac(&other_chain.encode()),
        Err(Error::WrongCertification(_))
    ));
    assert_eq!(rot.fdo_header_sha256(), None, "refusals bind nothing");

    // The header of its own certification: an HMAC that makes a valid FDO
    // voucher, the same again on a retry, and no second header.
    let hmac = rot.fdo_header_hmac(&header.encode()).expect("hmac");
    assert_eq!(rot.fdo_header_hmac(&header.encode()).expect("retry"), hmac);
    let mut relabelled = header.clone();
    relabelled.device_info = "Acme Sensor X2".into();
    assert!(matches!(
        rot.fdo_header_hmac(&relabelled.encode()),
        Err(Error::WrongCertification(_))
    ));
    let fdo = FdoVoucher::from_trustline(&voucher, &chain, &data, hmac).expect("fdo voucher");
    fdo.verify(&voucher.header().manufacturer_public_key)
        .expect("verifies");
    assert_eq!(rot.fdo_header_sha256(), Some(fdo.header_sha256()));
    // Two dies never share a secret: the same header HMACs differently.
    let other = &mut fleet.devices_mut()[1].rot;
    let spki = personalised(other);
    let chain2 = device_chain(&spki, "TL-2");
    let bound2 = other
        .store_certification(&chain2, &voucher_for(other, &chain2))
        .expect("stored");
    let header2 = FdoHeader::from_trustline(
        Voucher::decode(&bound2).expect("voucher").header(),
        &chain2,
        &data,
    )
    .expect("header");
    let hmac2 = other.fdo_header_hmac(&header2.encode()).expect("hmac");
    assert_ne!(fdo::header_hmac(&[0; 32], &header2.encode()), hmac2);
    assert_ne!(hmac2, hmac);
}

// ---------------------------------------------------------------------------
// Field life.
// ---------------------------------------------------------------------------

#[test]
fn the_lifecycle_only_goes_forward() {
    use Lifecycle::*;
    let allowed = [
        (Blank, Step::Claim, Claimed),
        (Claimed, Step::Personalise, Personalised),
        (Personalised, Step::EnterService, InService),
        (InService, Step::Decommission, Decommissioned),
        (Decommissioned, Step::Recommission, InService),
        (Personalised, Step::Retire, Retired),
        (InService, Step::Retire, Retired),
        (Decommissioned, Step::Retire, Retired),
    ];
    for from in Lifecycle::ALL {
        for step in Step::ALL {
            let expected = allowed
                .iter()
                .find(|(f, s, _)| *f == from && *s == step)
                .map(|(_, _, to)| *to);
            match (from.after(step), expected) {
                (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} {step:?}"),
                (Err(Error::IllegalTransition { .. }), None) => {}
                (got, want) => panic!("{from:?} {step:?}: got {got:?}, want {want:?}"),
            }
        }
    }
    // Retired is final.
    assert!(Step::ALL.iter().all(|s| Retired.after(*s).is_err()));
}

#[test]
fn the_device_refuses_steps_backwards_and_after_retirement() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    personalised(rot);
    assert!(matches!(
        rot.decommission(NONCE),
        Err(Error::IllegalTransition { .. })
    ));
    rot.enter_service().expect("onboarded");
    assert!(matches!(
        rot.enter_service(),
        Err(Error::IllegalTransition { .. })
    ));
    assert!(matches!(
        rot.recommission(NONCE),
        Err(Error::IllegalTransition { .. })
    ));
    rot.decommission(NONCE).expect("decommission");
    assert!(matches!(
        rot.decommission(NONCE),
        Err(Error::IllegalTransition { .. })
    ));
    assert!(matches!(
        rot.enter_service(),
        Err(Error::IllegalTransition { .. })
    ));
    rot.recommission(NONCE)
        .expect("recommission for a new owner");
    assert_eq!(rot.lifecycle(), Lifecycle::InService);
    rot.retire(NONCE).expect("retire");
    let counter = rot.reset_counter();
    for refused in [
        rot.decommission(NONCE),
        rot.recommission(NONCE),
        rot.retire(NONCE),
    ] {
        assert!(matches!(refused, Err(Error::IllegalTransition { .. })));
    }
    assert!(matches!(
        rot.enter_service(),
        Err(Error::IllegalTransition { .. })
    ));
    assert!(matches!(
        rot.write_user_data(0, b"x"),
        Err(Error::IllegalTransition { .. })
    ));
    assert_eq!(rot.reset_counter(), counter, "refusals change nothing");
    assert_eq!(rot.lifecycle(), Lifecycle::Retired);
}

#[test]
fn user_reset_erases_the_area_and_bumps_the_counter() {
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    assert!(matches!(rot.user_reset(NONCE), Err(Error::NotPersonalised)));
    let spki = personalised(rot);
    rot.enter_service().expect("in service");
    let secret = b"wifi password: hunter2";
    rot.write_user_data(100, secret).expect("write");
    assert_eq!(&rot.user_data()[100..100 + secret.len()], secret);
    assert!(matches!(
        rot.write_user_data(USER_AREA_LEN - 1, b"ab"),
        Err(Error::InvalidInput(_))
    ));
    let written_hash = Sha256::digest(rot.user_data()).to_vec();

    let proof = rot.user_reset(NONCE).expect("reset");
    let body: v1::ResetProof = verify(&proof, &spki).expect("reset proof verifies");
    assert!(rot.user_data().iter().all(|b| *b == ERASED_BYTE));
    assert_eq!(body.user_area_sha256, erased_user_area_sha256().to_vec());
    assert_ne!(body.user_area_sha256, written_hash);
    assert_eq!(body.reset_counter, 1);
    assert_eq!(body.state, v1::DeviceLifecycle::InService as i32);
    assert_eq!(body.challenge, NONCE);
    assert_eq!(body.rot_id, rot.rot_id());

    // Every step out of service is a reset too, and the counter only grows.
    rot.write_user_data(0, secret).expect("write");
    let proof = rot.decommission(&[2; 32]).expect("decommission");
    let body: v1::ResetProof = verify(&proof, &spki).expect("verifies");
    assert_eq!(body.reset_counter, 2);
    assert_eq!(body.state, v1::DeviceLifecycle::Decommissioned as i32);
    assert!(rot.user_data().iter().all(|b| *b == ERASED_BYTE));
    let body: v1::ResetProof =
        verify(&rot.recommission(&[3; 32]).expect("recommission"), &spki).expect("verifies");
    assert_eq!(body.reset_counter, 3);
    assert_eq!(body.state, v1::DeviceLifecycle::InService as i32);
}

/// The HSM half of key delivery in software (SoftHSM2's shape: PKCS#8 zero
/// padded to a multiple of 8, RFC 5649 wrap); ECDH is symmetric, so the
/// device-side KEK derivation serves.
fn wrap_for(rot: &SimulatedRot, device: &p256::SecretKey, kdf: &str) -> (Vec<u8>, Vec<u8>) {
    use p256::pkcs8::EncodePrivateKey;
    let ephemeral = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let kek = crate::key_delivery::key_encryption_key(&ephemeral, &rot.transport_public_key(), kdf)
        .expect("kek");
    let mut plain = device.to_pkcs8_der().expect("pkcs8").as_bytes().to_vec();
    plain.resize(plain.len().div_ceil(8) * 8, 0);
    let wrapped = aes_kw::KekAes256::from(*kek)
        .wrap_with_padding_vec(&plain)
        .expect("wrap");
    (
        trustline_proto::statement::p256_spki(&ephemeral.public_key()),
        wrapped,
    )
}

#[test]
fn an_hsm_made_key_is_installed_only_if_it_is_the_announced_one() {
    use crate::key_delivery::KDF_ECDH_X_COORDINATE as KDF;
    let mut fleet = fleet();
    let rot = &mut fleet.devices_mut()[0].rot;
    let device = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let device_spki = trustline_proto::statement::p256_spki(&device.public_key());
    let (eph, wrapped) = wrap_for(rot, &device, KDF);
    assert!(matches!(
        rot.install_wrapped_key(&device_spki, &eph, &wrapped, KDF, NONCE),
        Err(Error::NotClaimed)
    ));
    rot.claim(NONCE, ANCHOR).expect("claim");

    // A blob for another key than the one announced.
    let decoy = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let (decoy_eph, decoy_wrapped) = wrap_for(rot, &decoy, KDF);
    assert!(matches!(
        rot.install_wrapped_key(&device_spki, &decoy_eph, &decoy_wrapped, KDF, NONCE),
        Err(Error::KeyMismatch)
    ));
    // A corrupted blob.
    let mut corrupted = wrapped.clone();
    corrupted[5] ^= 1;
    assert!(matches!(
        rot.install_wrapped_key(&device_spki, &eph, &corrupted, KDF, NONCE),
        Err(Error::KeyDelivery(_))
    ));
    assert_eq!(rot.identity_public_key(), None, "refusals install nothing");

    let attestation = rot
        .install_wrapped_key(&device_spki, &eph, &wrapped, KDF, NONCE)
        .expect("install");
    let body: v1::KeyAttestation =
        verify(&attestation, rot.attestation_public_key()).expect("attested");
    assert_eq!(body.mode, v1::PersonalisationMode::Hsm as i32);
    assert_eq!(body.device_public_key, device_spki);
    assert_eq!(
        rot.personalisation_mode(),
        Some(v1::PersonalisationMode::Hsm)
    );
    let proof = rot.identity_proof(NONCE).expect("proof");
    verify::<v1::IdentityProof>(&proof, &device_spki).expect("the installed key signs");
    assert!(matches!(
        rot.install_wrapped_key(&device_spki, &eph, &wrapped, KDF, NONCE),
        Err(Error::AlreadyPersonalised)
    ));
}
