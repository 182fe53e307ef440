//! The FDO codec on its own: round trips, strict decoding, verification,
//! extension and the Trustline conversion (2.4.14.7). The interoperability
//! tests against an independent FDO implementation are in
//! `hsm-sim/tests/fdo_interop.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::signer::{Signer, SoftwareSigner};
use crate::voucher::{cert_chain_hash, Voucher, VoucherHeader};
use crate::Error;

const ROT_ID: &str = "b70152c465faa1b3c99d0b7157398ff1b970c84544d874381a410c1d2a131bb9";
const SERIAL: &str = "TL-0000042";
const SECRET: [u8; 32] = [7; 32];

struct World {
    oem: SoftwareSigner,
    owners: Vec<SoftwareSigner>,
    device: SoftwareSigner,
    chain: Vec<Vec<u8>>,
    data: FdoDeviceData,
}

fn world() -> World {
    World {
        oem: SoftwareSigner::generate(),
        owners: (0..3).map(|_| SoftwareSigner::generate()).collect(),
        device: SoftwareSigner::generate(),
        chain: vec![
            b"device certificate".to_vec(),
            b"site intermediate".to_vec(),
        ],
        data: FdoDeviceData {
            rv_info: RendezvousInfo::server("rv.example.test", 8041, rendezvous::protocol::HTTPS),
            device_info: "Acme Sensor X1".to_owned(),
        },
    }
}

/// A bound Trustline voucher with `transfers` entries (OEM → owner 0 → …).
fn trustline(w: &World, transfers: usize) -> Voucher {
    let header = VoucherHeader::new(
        ROT_ID,
        SERIAL,
        cert_chain_hash(&w.chain),
        w.oem.public_key_der(),
    )
    .expect("header");
    let mut v = Voucher::new(header);
    v.bind_to_device(&w.device).expect("bind");
    let mut signer: &dyn Signer = &w.oem;
    for owner in &w.owners[..transfers] {
        v.extend(signer, owner.public_key_der()).expect("extend");
        signer = owner;
    }
    v
}

fn signers(w: &World, n: usize) -> Vec<&dyn Signer> {
    let mut s: Vec<&dyn Signer> = vec![&w.oem];
    s.extend(w.owners.iter().map(|o| o as &dyn Signer));
    s.truncate(n);
    s
}

/// The FDO export of `tl`, its HMAC made with `SECRET`.
fn export(w: &World, tl: &Voucher) -> FdoVoucher {
    let header = FdoHeader::from_trustline(tl.header(), &w.chain, &w.data).expect("header");
    let hmac = header_hmac(&SECRET, &header.encode());
    FdoVoucher::export(tl, &w.chain, &w.data, hmac, &signers(w, tl.len())).expect("export")
}

#[test]
fn an_export_round_trips_byte_for_byte_and_back_to_the_same_trustline_voucher() {
    let w = world();
    let tl = trustline(&w, 2);
    let fdo = export(&w, &tl);
    let bytes = fdo.encode();
    let pem = fdo.to_pem();
    assert!(
        pem.starts_with("-----BEGIN OWNERSHIP VOUCHER-----"),
        "{pem}"
    );
    let imported = FdoVoucher::from_pem(&pem).expect("pem decodes");
    assert_eq!(
        imported.encode(),
        bytes,
        "export → import → export is identical"
    );
    assert_eq!(FdoVoucher::decode(&bytes).expect("decodes").encode(), bytes);

    // Every FDO field is the Trustline one or the data given.
    let verified = imported.verify(w.oem.public_key_der()).expect("verifies");
    assert_eq!(verified.header.guid, tl.header().guid);
    assert_eq!(verified.header.rv_info, w.data.rv_info);
    assert_eq!(verified.header.device_info, w.data.device_info);
    assert_eq!(
        verified.header.cert_chain_sha256,
        cert_chain_sha256(&w.chain)
    );
    assert_eq!(imported.cert_chain(), w.chain.as_slice());
    assert_eq!(verified.current_owner, w.owners[1].public_key_der());
    assert_eq!(verified.entries.len(), 2);
    assert_eq!(
        verified.entries[0].signer_public_key,
        w.oem.public_key_der()
    );
    imported.verify_header_hmac(&SECRET).expect("hmac");

    // And back: the very same Trustline voucher, binding included.
    let view = imported
        .to_trustline(ROT_ID, SERIAL, tl.device_binding())
        .expect("to trustline");
    assert_eq!(view.fdo_only, 0);
    assert_eq!(view.voucher.encode(), tl.encode());
    view.voucher
        .verify(w.oem.public_key_der())
        .expect("the rebuilt voucher verifies");
}

#[test]
fn an_fdo_tool_extension_is_an_fdo_only_transfer_after_the_mirrored_ones() {
    let w = world();
    let tl = trustline(&w, 1);
    let mut fdo = export(&w, &tl);
    fdo.extend(&w.owners[0], w.owners[2].public_key_der(), None)
        .expect("owner 0 extends in FDO only");
    let fdo = FdoVoucher::decode(&fdo.encode()).expect("decodes");
    let verified = fdo.verify(w.oem.public_key_der()).expect("verifies");
    assert_eq!(verified.current_owner, w.owners[2].public_key_der());
    assert!(verified.entries[0].trustline_entry().is_some());
    assert!(verified.entries[1].trustline_entry().is_none());
    let view = fdo.to_trustline(ROT_ID, SERIAL, None).expect("view");
    assert_eq!((view.voucher.len(), view.fdo_only), (1, 1));

    // A wrong rot_id does not rebuild the header the mirrored entry hashes.
    assert!(matches!(
        fdo.to_trustline(&ROT_ID.replace('b', "c"), SERIAL, None),
        Err(Error::VoucherHeaderMismatch { entry: 0 })
    ));
}

#[test]
fn only_the_current_owner_extends_and_nothing_is_signed_otherwise() {
    let w = world();
    let mut fdo = export(&w, &trustline(&w, 1));
    let before = fdo.encode();
    assert!(matches!(
        fdo.extend(&w.oem, w.owners[2].public_key_der(), None),
        Err(Error::FdoNotCurrentOwner)
    ));
    // An entry signed by the wrong key is refused by push_entry too.
    let payload = fdo
        .next_entry_payload(w.owners[2].public_key_der(), None)
        .expect("payload");
    let forged = sign_entry(&payload, &w.owners[2]).expect("sign");
    assert!(matches!(
        fdo.push_entry(&forged),
        Err(Error::FdoBadSignature { entry: 1 })
    ));
    assert_eq!(
        fdo.encode(),
        before,
        "a refusal leaves the voucher as it was"
    );
    // Mirroring checks the Trustline voucher is this device's.
    let other = trustline(&world(), 2);
    assert!(matches!(
        fdo.mirror_next(&other, &w.owners[0]),
        Err(Error::FdoTrustlineMismatch(_))
    ));
}

#[test]
fn a_broken_entry_a_wrong_header_hash_and_a_tampered_header_are_refused() {
    let w = world();
    let fdo = export(&w, &trustline(&w, 2));
    let mfg = w.oem.public_key_der();
    let entries: Vec<Vec<u8>> = (0..fdo.len())
        .map(|i| fdo.entry_bytes(i).expect("entry").to_vec())
        .collect();
    let rebuild = |header: &[u8], entries: &[Vec<u8>]| {
        FdoVoucher::decode(&assemble(
            header,
            fdo.header_hmac(),
            fdo.cert_chain(),
            entries,
        ))
    };

    // A flipped signature byte: the entry no longer verifies.
    let mut broken = entries.clone();
    let last = broken[1].len() - 1;
    broken[1][last] ^= 1;
    let v = rebuild(fdo.header_bytes(), &broken).expect("still decodes");
    assert!(matches!(
        v.verify(mfg),
        Err(Error::FdoBadSignature { entry: 1 })
    ));

    // A well-signed entry with the wrong OVEHashHdrInfo.
    let mut payload = FdoEntryPayload::decode(
        &FdoVoucher::decode(&fdo.encode())
            .expect("decodes")
            .next_entry_payload(w.owners[2].public_key_der(), None)
            .expect("payload"),
    )
    .expect("payload decodes");
    payload.header_info_hash[0] ^= 1;
    let wrong = sign_entry(&payload.encode(), &w.owners[1]).expect("sign");
    let v = rebuild(fdo.header_bytes(), &[entries.clone(), vec![wrong]].concat()).expect("decodes");
    assert!(matches!(
        v.verify(mfg),
        Err(Error::FdoHeaderMismatch { entry: 2 })
    ));

    // Reordered entries break the chain.
    let swapped = vec![entries[1].clone(), entries[0].clone()];
    let v = rebuild(fdo.header_bytes(), &swapped).expect("decodes");
    assert!(matches!(
        v.verify(mfg),
        Err(Error::FdoHeaderMismatch { .. }
            | Error::FdoBrokenChain { .. }
            | Error::FdoBadSignature { .. })
    ));

    // A tampered header: other device info (caught by every entry's
    // OVEHashHdrInfo) or other rendezvous info (caught by entry 0's
    // OVEHashPrevEntry); both also fail the HMAC.
    let mut header = fdo.header().clone();
    header.device_info = "Acme Sensor X2".into();
    let v = rebuild(&header.encode(), &entries).expect("decodes");
    assert!(matches!(
        v.verify(mfg),
        Err(Error::FdoHeaderMismatch { entry: 0 })
    ));
    assert!(matches!(
        v.verify_header_hmac(&SECRET),
        Err(Error::FdoBadHeaderHmac)
    ));
    let mut header = fdo.header().clone();
    header.rv_info = RendezvousInfo::server("evil.example.test", 443, rendezvous::protocol::HTTPS);
    let v = rebuild(&header.encode(), &entries).expect("decodes");
    assert!(matches!(
        v.verify(mfg),
        Err(Error::FdoBrokenChain { entry: 0 })
    ));
    assert!(matches!(
        v.verify_header_hmac(&SECRET),
        Err(Error::FdoBadHeaderHmac)
    ));
    assert!(matches!(
        v.check_recorded(&fdo.header_sha256(), &fdo.header_hmac_sha256()),
        Err(Error::FdoBadHeaderHmac)
    ));
    fdo.check_recorded(&fdo.header_sha256(), &fdo.header_hmac_sha256())
        .expect("the original is what was recorded");

    // Another certificate chain, or another manufacturer.
    let v = FdoVoucher::decode(&assemble(
        fdo.header_bytes(),
        fdo.header_hmac(),
        &[b"another device".to_vec()],
        &entries,
    ))
    .expect("decodes");
    assert!(matches!(v.verify(mfg), Err(Error::FdoChainMismatch)));
    assert!(matches!(
        fdo.verify(w.owners[0].public_key_der()),
        Err(Error::FdoManufacturerMismatch)
    ));
    assert!(matches!(
        fdo.verify_header_hmac(&[8; 32]),
        Err(Error::FdoBadHeaderHmac)
    ));
}

fn malformed(bytes: &[u8]) -> Error {
    match FdoVoucher::decode(bytes) {
        Err(e) => e,
        Ok(_) => panic!("{} bytes decoded", bytes.len()),
    }
}

#[test]
fn strict_decoding_refuses_every_deviation() {
    let w = world();
    let fdo = export(&w, &trustline(&w, 1));
    let bytes = fdo.encode();
    let entry = fdo.entry_bytes(0).expect("entry").to_vec();

    // Trailing bytes, truncation, an empty input.
    assert!(matches!(
        malformed(&[bytes.clone(), vec![0]].concat()),
        Error::FdoMalformed(_)
    ));
    assert!(matches!(
        malformed(&bytes[..bytes.len() - 1]),
        Error::FdoMalformed(_)
    ));
    assert!(matches!(malformed(&[]), Error::FdoMalformed(_)));
    // Oversized input is refused before parsing.
    assert!(matches!(
        malformed(&vec![0u8; MAX_VOUCHER_LEN + 1]),
        Error::FdoTooLarge { .. }
    ));
    // An unknown protocol version (100 is FDO 1.0).
    let mut v100 = bytes.clone();
    assert_eq!(&v100[..2], [0x85, 0x18]);
    v100[2] = 100;
    assert!(matches!(malformed(&v100), Error::FdoVersion(100)));
    let mut h100 = fdo.header_bytes().to_vec();
    h100[2] = 100;
    assert!(matches!(
        malformed(&assemble(
            &h100,
            fdo.header_hmac(),
            fdo.cert_chain(),
            &[&entry]
        )),
        Error::FdoVersion(100)
    ));
    // Wrong types: the voucher as a map, the header as text.
    assert!(matches!(malformed(&[0xa0]), Error::FdoMalformed(_)));
    let mut text_header = bytes.clone();
    let at = 3; // after 85 18 65: the header's bstr head
    assert_eq!(text_header[at] >> 5, 2);
    text_header[at] = (text_header[at] & 0x1f) | (3 << 5);
    assert!(matches!(malformed(&text_header), Error::FdoMalformed(_)));
    // A non-shortest head for OVProtVer.
    let long = [&[0x85, 0x19, 0x00, 0x65][..], &bytes[3..]].concat();
    assert!(matches!(malformed(&long), Error::FdoMalformed(_)));
    // An indefinite-length entry array.
    let tail = assemble(
        fdo.header_bytes(),
        fdo.header_hmac(),
        fdo.cert_chain(),
        &[&entry],
    );
    let cut = tail.len() - entry.len() - 1;
    assert_eq!(tail[cut], 0x81);
    let indefinite = [&tail[..cut], &[0x9f], &entry[..], &[0xff]].concat();
    assert!(matches!(malformed(&indefinite), Error::FdoMalformed(_)));
    // An untagged entry, and one with a detached payload.
    let untagged = assemble(
        fdo.header_bytes(),
        fdo.header_hmac(),
        fdo.cert_chain(),
        &[&entry[1..]],
    );
    assert!(matches!(malformed(&untagged), Error::FdoMalformed(_)));
    // Too many entries.
    let many: Vec<&[u8]> = vec![&entry; MAX_ENTRIES + 1];
    assert!(matches!(
        malformed(&assemble(
            fdo.header_bytes(),
            fdo.header_hmac(),
            fdo.cert_chain(),
            &many
        )),
        Error::FdoTooManyEntries { .. }
    ));
    // An empty certificate chain.
    let empty: [&[u8]; 0] = [];
    assert!(matches!(
        malformed(&assemble(
            fdo.header_bytes(),
            fdo.header_hmac(),
            &empty,
            &[&entry]
        )),
        Error::FdoMalformed(_)
    ));
}

#[test]
fn valid_fdo_outside_the_p256_profile_is_unsupported() {
    let w = world();
    let fdo = export(&w, &trustline(&w, 0));
    let header = fdo.header_bytes();
    // The chain hash as SHA-384 (-43 = 0x38 0x2a) instead of SHA-256 (0x2f).
    let at = header.len() - 36;
    assert_eq!(&header[at..at + 3], [0x82, 0x2f, 0x58]);
    let sha384 = [&header[..at + 1], &[0x38, 0x2a], &header[at + 2..]].concat();
    assert!(matches!(
        FdoHeader::decode(&sha384),
        Err(Error::FdoUnsupported(_))
    ));
    // The manufacturer key as a COSE key (pkEnc 3).
    let pk = header
        .windows(3)
        .position(|w| w == [0x83, 0x0a, 0x01])
        .expect("OVPubKey");
    let mut cose_key = header.to_vec();
    cose_key[pk + 2] = 0x03;
    assert!(matches!(
        FdoHeader::decode(&cose_key),
        Err(Error::FdoUnsupported(_))
    ));
    // An EPID device: null chain hash.
    let epid = [&header[..at], &[0xf6][..]].concat();
    assert!(matches!(
        FdoHeader::decode(&epid),
        Err(Error::FdoUnsupported(_))
    ));
}

#[test]
fn pem_needs_exactly_one_voucher_block() {
    let w = world();
    let fdo = export(&w, &trustline(&w, 1));
    let pem = fdo.to_pem();
    let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let with_key = format!("{pem}{key}");
    assert_eq!(
        FdoVoucher::from_pem(&with_key)
            .expect("a key beside it is ignored")
            .encode(),
        fdo.encode()
    );
    assert!(matches!(FdoVoucher::from_pem(key), Err(Error::FdoPem(_))));
    assert!(matches!(
        FdoVoucher::from_pem(&format!("{pem}{pem}")),
        Err(Error::FdoPem(_))
    ));
    assert!(matches!(
        FdoVoucher::from_pem("not pem"),
        Err(Error::FdoPem(_))
    ));
}

#[test]
fn the_documented_hashes_are_what_the_code_computes() {
    let w = world();
    let fdo = export(&w, &trustline(&w, 2));
    let h = fdo.header();
    let mut info = h.guid.to_vec();
    info.extend_from_slice(h.device_info.as_bytes());
    assert_eq!(h.header_info_hash(), crate::voucher::key_id(&info));
    let hmac_item = [&[0x82, 0x05, 0x58, 0x20][..], fdo.header_hmac()].concat();
    let first = [fdo.header_bytes(), &hmac_item].concat();
    let payloads: Vec<_> = fdo.entry_payloads().cloned().collect();
    assert_eq!(payloads[0].prev_hash, crate::voucher::key_id(&first));
    assert_eq!(
        payloads[1].prev_hash,
        crate::voucher::key_id(fdo.entry_bytes(0).expect("entry 0"))
    );
    assert_eq!(
        h.cert_chain_sha256,
        crate::voucher::key_id(&w.chain.concat())
    );
    assert_eq!(
        fdo.header_hmac_sha256(),
        crate::voucher::key_id(fdo.header_hmac())
    );
    // Entries Trustline signs: 18([h'a10126', {}, payload, sig]).
    let entry = fdo.entry_bytes(0).expect("entry");
    assert_eq!(&entry[..6], [0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26]);
    assert_eq!(entry[6], 0xa0);
    // OVEExtra: { TRUSTLINE_ENTRY_EXTRA: Trustline entry 0 }.
    let extra = payloads[0].extra_map().expect("extra");
    assert_eq!(
        extra.keys().copied().collect::<Vec<_>>(),
        [TRUSTLINE_ENTRY_EXTRA]
    );
    assert_eq!(
        &payloads[0].extra.as_deref().expect("extra")[..6],
        [0xa1, 0x3a, 0x54, 0x52, 0x4c, 0x30]
    );
    let map: BTreeMap<i64, Vec<u8>> = [(-1, vec![1]), (0, vec![2]), (-2, vec![3])].into();
    // Canonical order sorts by encoded key: 0x00, 0x20, 0x21.
    assert_eq!(
        encode_extra(&map),
        [0xa3, 0x00, 0x41, 2, 0x20, 0x41, 1, 0x21, 0x41, 3]
    );
}

#[test]
fn an_orders_fdo_block_round_trips_and_bad_blocks_are_refused() {
    use crate::fdo::{FdoDeviceData, RendezvousInfo};
    let data = FdoDeviceData {
        rv_info: RendezvousInfo::server("rv.example.com", 8041, rendezvous::protocol::HTTPS),
        device_info: "Acme Sensor X1".into(),
    };
    let block = data.to_order();
    assert_eq!(FdoDeviceData::from_order(&block).expect("decodes"), data);
    assert_eq!(
        RendezvousInfo::decode(&data.rv_info.encode()).expect("decodes"),
        data.rv_info
    );
    let mut trailing = block.clone();
    trailing.rendezvous_info.push(0);
    assert!(matches!(
        FdoDeviceData::from_order(&trailing),
        Err(Error::FdoMalformed(_))
    ));
    let empty = crate::v1::FdoOrder {
        rendezvous_info: vec![0x80],
        device_info: "x".into(),
    };
    assert!(matches!(
        FdoDeviceData::from_order(&empty),
        Err(Error::FdoMalformed(_))
    ));
    let long = crate::v1::FdoOrder {
        device_info: "x".repeat(513),
        ..block
    };
    assert!(matches!(
        FdoDeviceData::from_order(&long),
        Err(Error::FdoTooLarge { .. })
    ));
}
