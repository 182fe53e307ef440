//! The two-domain CA layout (issue 13): the OEM's root, order and voucher
//! keys on the hub's token ([`ca::init_oem`]); a site's first intermediate
//! requested on the site's token, signed by the root, installed at the
//! site; the site's CA opens and issues with no OEM key on its token, and
//! refuses to sign voucher entries.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

mod common;

use ca_service::ca::{self, InitOptions};
use ca_service::keys::{KeyLabels, OEM_ORDER, OEM_ROOT, OEM_SEAL, OEM_VOUCHER, SITE_INTERMEDIATE};
use ca_service::{Ca, Error};
use trustline_proto::signer::SoftwareSigner;

#[test]
fn a_site_enrolled_at_the_hub_issues_with_only_its_intermediate_on_its_token() {
    let (_hub_token, hub) = common::hsm("enrol-hub", 1);
    let (_site_token, site) = common::hsm("enrol-site", 1);
    let hub_dir = tempfile::tempdir().unwrap();
    let site_dir = tempfile::tempdir().unwrap();
    let (hub_ca, site_ca) = (hub_dir.path().join("ca"), site_dir.path().join("ca"));
    let labels = KeyLabels::default();

    let report = ca::init_oem(&hub, &InitOptions::default(), &hub_ca).unwrap();
    assert_eq!(report.keys, [OEM_ROOT, OEM_ORDER, OEM_VOUCHER, OEM_SEAL]);
    assert!(
        hub.secret_key_exists(OEM_SEAL).unwrap(),
        "the hub keeps the OEM seal key"
    );
    assert!(!hub.key_exists(SITE_INTERMEDIATE).unwrap());
    assert!(matches!(
        ca::init_oem(&hub, &InitOptions::default(), &hub_ca),
        Err(Error::AlreadyInitialized { .. })
    ));

    let request =
        ca::request_first_intermediate(&site, &site_ca, "Trustline OEM", "site-a", &labels)
            .unwrap();
    assert_eq!(request.generation, 1);
    let root = hub.signer(OEM_ROOT).unwrap();
    let root_der = pem::parse(&report.root_pem).unwrap().into_contents();
    let cert = ca::sign_intermediate_request(&root, &root_der, &request.csr_der).unwrap();

    // The site installs it once it holds the root certificate and the OEM's
    // public keys.
    for file in [ca::ROOT_CERT_FILE, ca::VOUCHER_KEY_FILE, ca::ORDER_KEY_FILE] {
        std::fs::copy(hub_ca.join(file), site_ca.join(file)).unwrap();
    }
    let rotation = ca::install_intermediate(&site, &site_ca, &labels, &cert).unwrap();
    assert_eq!((rotation.generation, rotation.previous_generation), (1, 0));

    let mut on_site: Vec<String> = site
        .private_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.label)
        .collect();
    on_site.sort();
    assert_eq!(on_site, [SITE_INTERMEDIATE]);

    let ca = Ca::open(site.clone(), &site_ca, &labels).unwrap();
    let device = SoftwareSigner::generate();
    let rot = common::rot_id();
    let request = common::pop_request(&device, "SN-ENROL-1", &rot);
    let issued = ca.issue(&request.verify().unwrap()).unwrap();
    common::assert_openssl_verifies(&ca, &[issued.certificate]);
    assert_eq!(
        ca.voucher_public_key_der(),
        hub.signer(OEM_VOUCHER).unwrap().public_key_spki()
    );
    assert!(ca.voucher_signer().is_none());
    // Opening a site CA makes no OEM seal key on the site's token.
    assert!(!site.secret_key_exists(OEM_SEAL).unwrap());
    let payload = vec![0xa0];
    assert!(matches!(
        ca.sign_voucher_entry(&payload),
        Err(Error::KeyNotFound { .. })
    ));

    // A second first request is refused, and nothing new is made.
    assert!(matches!(
        ca::request_first_intermediate(&site, &site_ca, "Trustline OEM", "site-a", &labels),
        Err(Error::AlreadyInitialized { .. })
    ));
    assert_eq!(site.private_keys().unwrap().len(), 1);
}
