//! Unit tests of the voucher codec and chain walk (2.4.14.7): round trips,
//! a chain of owners, each hostile case with its own error, and corruption
//! of every byte.

use coset::TaggedCborSerializable;
use sha2::Digest;

use super::cose::{cose_structure, der_to_raw};
use super::entry::Entry;
use super::*;
use crate::signer::{Signer, SoftwareSigner};
use crate::Error;

fn chain() -> Vec<Vec<u8>> {
    vec![
        b"device cert".to_vec(),
        b"site intermediate".to_vec(),
        b"oem root".to_vec(),
    ]
}

fn header(manufacturer: &SoftwareSigner) -> VoucherHeader {
    VoucherHeader::new(
        &"ab".repeat(32),
        "TL-000042",
        cert_chain_hash(&chain()),
        manufacturer.public_key_der(),
    )
    .expect("header")
}

struct Owners {
    oem: SoftwareSigner,
    a: SoftwareSigner,
    b: SoftwareSigner,
    c: SoftwareSigner,
}

fn owners() -> Owners {
    Owners {
        oem: SoftwareSigner::generate(),
        a: SoftwareSigner::generate(),
        b: SoftwareSigner::generate(),
        c: SoftwareSigner::generate(),
    }
}

/// OEM → A → B → C.
fn three_owner_voucher(o: &Owners) -> Voucher {
    let mut v = Voucher::new(header(&o.oem));
    v.extend(&o.oem, o.a.public_key_der()).expect("oem → a");
    v.extend(&o.a, o.b.public_key_der()).expect("a → b");
    v.extend(&o.b, o.c.public_key_der()).expect("b → c");
    v
}

/// Re-encodes `v` with its entries replaced by `entries` (raw COSE bytes),
/// bypassing every check, as an attacker would.
fn with_entries(v: &Voucher, entries: Vec<Vec<u8>>) -> Vec<u8> {
    let mut forged = v.clone();
    forged.entries = entries
        .iter()
        .enumerate()
        .map(|(i, b)| Entry::parse(b, i).expect("entry parses"))
        .collect();
    forged.encode()
}

fn raw_entries(v: &Voucher) -> Vec<Vec<u8>> {
    v.entries.iter().map(|e| e.bytes.clone()).collect()
}

#[test]
fn round_trip_without_and_with_entries() {
    let o = owners();
    let empty = Voucher::new(header(&o.oem));
    let back = Voucher::decode(&empty.encode()).expect("decode");
    assert_eq!(back.encode(), empty.encode());
    assert_eq!(back.header(), empty.header());
    assert_eq!(back.current_owner(), o.oem.public_key_der());

    let full = three_owner_voucher(&o);
    let bytes = full.encode();
    let back = Voucher::decode(&bytes).expect("decode");
    assert_eq!(back.encode(), bytes);
    assert_eq!(back.len(), 3);
    assert_eq!(back.current_owner(), o.c.public_key_der());
    assert_eq!(back.sha256(), full.sha256());
}

#[test]
fn a_chain_of_three_owners_verifies() {
    let o = owners();
    let v = Voucher::decode(&three_owner_voucher(&o).encode()).expect("decode");
    let verified = v.verify(o.oem.public_key_der()).expect("verify");
    assert_eq!(verified.current_owner, o.c.public_key_der());
    assert_eq!(verified.entries.len(), 3);
    let signers: Vec<&[u8]> = verified
        .entries
        .iter()
        .map(|e| e.signer_public_key.as_slice())
        .collect();
    assert_eq!(
        signers,
        [
            o.oem.public_key_der(),
            o.a.public_key_der(),
            o.b.public_key_der()
        ]
    );
    verified
        .ensure_entries(3)
        .expect("all recorded transfers present");
    // Fresh salts: the three commitments share nothing, and each is
    // SHA-256(salt ‖ key).
    let e = &verified.entries[1];
    assert_eq!(
        e.owner_commitment(),
        owner_commitment(&e.commitment_salt, o.b.public_key_der())
    );
    assert_ne!(
        verified.entries[0].commitment_salt,
        verified.entries[1].commitment_salt
    );
}

#[test]
fn an_empty_voucher_is_owned_by_the_manufacturer() {
    let o = owners();
    let v = Voucher::new(header(&o.oem));
    let verified = v.verify(o.oem.public_key_der()).expect("verify");
    assert_eq!(verified.current_owner, o.oem.public_key_der());
    assert!(verified.entries.is_empty());
}

#[test]
fn the_hsm_path_builds_entry_zero_from_parts() {
    // What the provisioner and the HSM-backed CA do: payload here, signature
    // there, append and check here.
    let o = owners();
    let h = header(&o.oem);
    let mut v = Voucher::new(h.clone());
    let payload = first_entry_payload(&h, o.a.public_key_der()).expect("payload");
    assert_eq!(
        EntryPayload::decode(&payload).expect("decodes").prev_hash,
        h.hash()
    );
    let cose = sign_entry(&payload, &o.oem).expect("sign");
    let pushed = v.push_entry(&cose).expect("push");
    assert_eq!(pushed.next_owner_public_key, o.a.public_key_der());
    v.verify(o.oem.public_key_der()).expect("verify");

    // The same via next_entry_payload for a later entry.
    let payload = v.next_entry_payload(o.b.public_key_der()).expect("payload");
    v.push_entry(&sign_entry(&payload, &o.a).expect("sign"))
        .expect("push");
    assert_eq!(
        v.verify(o.oem.public_key_der())
            .expect("verify")
            .current_owner,
        o.b.public_key_der()
    );
}

#[test]
fn cose_signatures_are_raw_r_s() {
    let o = owners();
    let v = three_owner_voucher(&o);
    let signers = [&o.oem, &o.a, &o.b];
    for (entry, signer) in v.entries.iter().zip(signers) {
        assert_eq!(entry.cose.signature.len(), 64);
        assert_eq!(entry.kid, key_id(signer.public_key_der()));
        // The raw signature is r ‖ s of a P-256 signature.
        p256::ecdsa::Signature::from_slice(&entry.cose.signature).expect("r ‖ s");
    }
}

#[test]
fn sign_entry_refuses_bytes_that_are_not_an_entry_payload() {
    let o = owners();
    assert!(matches!(
        sign_entry(b"\x83\x01\x02\x03", &o.oem),
        Err(Error::VoucherMalformed(_))
    ));
    assert!(matches!(
        sign_entry(b"", &o.oem),
        Err(Error::VoucherMalformed(_))
    ));
    // A header is not an entry payload either.
    let h = header(&o.oem).encode();
    assert!(matches!(
        sign_entry(&h, &o.oem),
        Err(Error::VoucherMalformed(_))
    ));
    // Nor a payload whose next owner is not a P-256 key.
    let bad = EntryPayload {
        prev_hash: [1; 32],
        header_hash: [2; 32],
        commitment_salt: [3; SALT_LEN],
        next_owner_public_key: b"not a key".to_vec(),
    };
    assert!(matches!(
        sign_entry(&bad.encode(), &o.oem),
        Err(Error::NotP256(_))
    ));
}

#[test]
fn extending_with_a_key_that_is_not_the_current_owner_is_refused() {
    let o = owners();
    let mut v = Voucher::new(header(&o.oem));
    v.extend(&o.oem, o.a.public_key_der()).expect("oem → a");
    // The manufacturer no longer owns it; B never did.
    assert!(matches!(
        v.extend(&o.oem, o.b.public_key_der()),
        Err(Error::VoucherNotCurrentOwner)
    ));
    assert!(matches!(
        v.extend(&o.b, o.c.public_key_der()),
        Err(Error::VoucherNotCurrentOwner)
    ));
    assert_eq!(v.len(), 1);
}

#[test]
fn an_entry_signed_by_someone_else_is_refused() {
    let o = owners();
    let mallory = SoftwareSigner::generate();
    let mut v = Voucher::new(header(&o.oem));
    v.extend(&o.oem, o.a.public_key_der()).expect("oem → a");
    // Mallory signs a well-formed next entry naming herself.
    let payload = v
        .next_entry_payload(mallory.public_key_der())
        .expect("payload");
    let cose = sign_entry(&payload, &mallory).expect("sign");
    assert!(matches!(
        v.push_entry(&cose),
        Err(Error::VoucherWrongSigner { entry: 1 })
    ));
    // Smuggled into the encoding instead, verification refuses it.
    let mut entries = raw_entries(&v);
    entries.push(cose);
    let smuggled = Voucher::decode(&with_entries(&v, entries)).expect("decodes");
    assert!(matches!(
        smuggled.verify(o.oem.public_key_der()),
        Err(Error::VoucherWrongSigner { entry: 1 })
    ));
}

#[test]
fn an_entry_claiming_the_owners_key_id_but_signed_by_another_key_is_forged() {
    let o = owners();
    let mallory = SoftwareSigner::generate();
    let mut v = Voucher::new(header(&o.oem));
    v.extend(&o.oem, o.a.public_key_der()).expect("oem → a");
    let payload = v
        .next_entry_payload(mallory.public_key_der())
        .expect("payload");
    // Mallory's signature under A's key id.
    let cose = cose_structure(ENTRY_CONTENT_TYPE, &key_id(o.a.public_key_der()), payload)
        .try_create_signature(b"", |tbs| der_to_raw(&mallory.sign(tbs)?))
        .expect("sign")
        .build()
        .to_tagged_vec()
        .expect("encode");
    assert!(matches!(
        v.push_entry(&cose),
        Err(Error::VoucherBadSignature { entry: 1 })
    ));
}

#[test]
fn a_forged_entry_is_refused() {
    let o = owners();
    let mallory = SoftwareSigner::generate();
    let v = three_owner_voucher(&o);
    // Entry 1 (A → B) rewritten to name Mallory, A's signature kept.
    let original = &v.entries[1];
    let mut payload = original.payload.clone();
    payload.next_owner_public_key = mallory.public_key_der().to_vec();
    let forged = cose_structure(ENTRY_CONTENT_TYPE, &original.kid, payload.encode())
        .signature(original.cose.signature.clone())
        .build()
        .to_tagged_vec()
        .expect("encode");
    let mut entries = raw_entries(&v);
    entries[1] = forged;
    let bad = Voucher::decode(&with_entries(&v, entries)).expect("decodes");
    assert!(matches!(
        bad.verify(o.oem.public_key_der()),
        Err(Error::VoucherBadSignature { entry: 1 })
    ));
}

#[test]
fn reordered_or_removed_entries_are_refused() {
    let o = owners();
    let v = three_owner_voucher(&o);
    let mut swapped = raw_entries(&v);
    swapped.swap(1, 2);
    let bad = Voucher::decode(&with_entries(&v, swapped)).expect("decodes");
    assert!(matches!(
        bad.verify(o.oem.public_key_der()),
        Err(Error::VoucherBrokenChain { entry: 1 })
    ));

    let mut removed = raw_entries(&v);
    removed.remove(1);
    let bad = Voucher::decode(&with_entries(&v, removed)).expect("decodes");
    assert!(matches!(
        bad.verify(o.oem.public_key_der()),
        Err(Error::VoucherBrokenChain { entry: 1 })
    ));
}

#[test]
fn a_voucher_cut_back_to_an_earlier_owner_is_caught_against_the_ledger() {
    let o = owners();
    let v = three_owner_voucher(&o);
    let mut cut = raw_entries(&v);
    cut.truncate(2);
    let bad = Voucher::decode(&with_entries(&v, cut)).expect("decodes");
    // On its own it is B's valid voucher…
    let verified = bad
        .verify(o.oem.public_key_der())
        .expect("a valid earlier voucher");
    assert_eq!(verified.current_owner, o.b.public_key_der());
    // …but the ledger recorded three transfers.
    assert!(matches!(
        verified.ensure_entries(3),
        Err(Error::VoucherTruncated {
            recorded: 3,
            found: 2
        })
    ));
}

#[test]
fn truncated_bytes_never_decode() {
    let o = owners();
    let bytes = three_owner_voucher(&o).encode();
    for len in 0..bytes.len() {
        assert!(
            Voucher::decode(&bytes[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Voucher::decode(&longer),
        Err(Error::VoucherMalformed(_))
    ));
}

#[test]
fn an_altered_header_is_refused() {
    let o = owners();
    let v = three_owner_voucher(&o);
    let mut altered = v.clone();
    altered.header.serial = "TL-000043".to_owned();
    altered.header_bytes = altered.header.encode();
    let bad = Voucher::decode(&altered.encode()).expect("decodes");
    assert!(matches!(
        bad.verify(o.oem.public_key_der()),
        Err(Error::VoucherHeaderMismatch { entry: 0 })
    ));
    // An entry lifted from another device's voucher does not fit either.
    let other = three_owner_voucher(&o);
    let mut entries = raw_entries(&v);
    entries[0] = other.entries[0].bytes.clone();
    let bad = Voucher::decode(&with_entries(&v, entries)).expect("decodes");
    assert!(matches!(
        bad.verify(o.oem.public_key_der()),
        Err(Error::VoucherHeaderMismatch { entry: 0 })
    ));
}

#[test]
fn another_manufacturer_key_is_refused() {
    let o = owners();
    let v = three_owner_voucher(&o);
    assert!(matches!(
        v.verify(o.a.public_key_der()),
        Err(Error::VoucherManufacturerMismatch)
    ));
}

#[test]
fn the_device_binding_covers_the_header_and_chain() {
    let o = owners();
    let device = SoftwareSigner::generate();
    let mut v = three_owner_voucher(&o);
    assert!(matches!(
        v.verify_device_binding(&chain(), device.public_key_der()),
        Err(Error::VoucherNotBound)
    ));
    v.bind_to_device(&device).expect("bind");
    assert!(matches!(
        v.bind_to_device(&device),
        Err(Error::VoucherAlreadyBound)
    ));
    let back = Voucher::decode(&v.encode()).expect("decode");
    back.verify(o.oem.public_key_der())
        .expect("chain still verifies");
    back.verify_device_binding(&chain(), device.public_key_der())
        .expect("binding");
    let other = SoftwareSigner::generate();
    assert!(matches!(
        back.verify_device_binding(&chain(), other.public_key_der()),
        Err(Error::VoucherBadBinding)
    ));
    let mut other_chain = chain();
    other_chain.swap(0, 1);
    assert!(matches!(
        back.verify_device_binding(&other_chain, device.public_key_der()),
        Err(Error::VoucherChainMismatch)
    ));
}

#[test]
fn cert_chain_hash_is_length_prefixed() {
    // Moving a byte across a certificate boundary changes the hash.
    assert_ne!(
        cert_chain_hash(&[b"ab".as_slice(), b"c"]),
        cert_chain_hash(&[b"a".as_slice(), b"bc"])
    );
    let mut expected = Sha256::new();
    expected.update([0, 0, 0, 2]);
    expected.update(b"ab");
    let expected: [u8; 32] = expected.finalize().into();
    assert_eq!(cert_chain_hash(&[b"ab"]), expected);
}

#[test]
fn headers_with_bad_fields_are_refused() {
    let o = owners();
    let spki = o.oem.public_key_der();
    let hash = cert_chain_hash(&chain());
    assert!(matches!(
        VoucherHeader::new("AB", "S1", hash, spki),
        Err(Error::VoucherMalformed(_))
    ));
    let id = "ab".repeat(32);
    assert!(matches!(
        VoucherHeader::new(&id, "", hash, spki),
        Err(Error::VoucherMalformed(_))
    ));
    assert!(matches!(
        VoucherHeader::new(&id, "a b", hash, spki),
        Err(Error::VoucherMalformed(_))
    ));
    assert!(matches!(
        VoucherHeader::new(&id, "S1", hash, b"key"),
        Err(Error::NotP256(_))
    ));
    let long = "S".repeat(MAX_SERIAL_LEN + 1);
    assert!(matches!(
        VoucherHeader::new(&id, &long, hash, spki),
        Err(Error::VoucherMalformed(_))
    ));
}

#[test]
fn oversized_and_unknown_version_vouchers_are_refused() {
    assert!(matches!(
        Voucher::decode(&vec![0u8; MAX_VOUCHER_LEN + 1]),
        Err(Error::VoucherTooLarge { .. })
    ));
    let o = owners();
    let mut bytes = Voucher::new(header(&o.oem)).encode();
    assert_eq!(bytes[1], VERSION as u8);
    bytes[1] = 2;
    assert!(matches!(
        Voucher::decode(&bytes),
        Err(Error::VoucherVersion(2))
    ));
}

#[test]
fn non_canonical_encodings_are_refused() {
    let o = owners();
    let bytes = Voucher::new(header(&o.oem)).encode();
    // Version 1 written with a one-byte head (0x18 0x01) instead of 0x01.
    let mut long_head = vec![bytes[0], 0x18, 0x01];
    long_head.extend_from_slice(&bytes[2..]);
    assert!(matches!(
        Voucher::decode(&long_head),
        Err(Error::VoucherMalformed(_))
    ));
    // The outer array written with indefinite length.
    let mut indefinite = vec![0x9f];
    indefinite.extend_from_slice(&bytes[1..]);
    indefinite.push(0xff);
    assert!(matches!(
        Voucher::decode(&indefinite),
        Err(Error::VoucherMalformed(_))
    ));
}

/// Flipping any bit pattern in any byte of a bound, three-owner voucher is
/// caught by decoding, chain verification or the device binding.
#[test]
fn flipping_any_byte_is_caught() {
    let o = owners();
    let device = SoftwareSigner::generate();
    let mut v = three_owner_voucher(&o);
    v.bind_to_device(&device).expect("bind");
    let bytes = v.encode();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= mask;
            let caught = match Voucher::decode(&bad) {
                Err(_) => true,
                Ok(d) => {
                    d.verify(o.oem.public_key_der()).is_err()
                        || d.verify_device_binding(&chain(), device.public_key_der())
                            .is_err()
                }
            };
            assert!(caught, "flipping byte {i} with {mask:#04x} went unnoticed");
        }
    }
}

/// A signer that presents its key compressed (as some tools and secure
/// elements do): the same key, the other encoding.
struct Compressed {
    inner: SoftwareSigner,
    spki: Vec<u8>,
}

impl Compressed {
    fn of(inner: SoftwareSigner) -> Self {
        let key = crate::ecdsa::parse_p256_spki(inner.public_key_der()).expect("key");
        let spki = crate::ecdsa::compressed_p256_spki(&key);
        Self { inner, spki }
    }
}

impl Signer for Compressed {
    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
        self.inner.sign_digest(digest)
    }
}

/// Issue 12, canonical keys: an owner key given compressed and the same
/// key given uncompressed name the same owner — the entry stores the
/// canonical form, commitments and key ids hash it, the owner can extend
/// with either form, and a payload naming the compressed form is refused.
#[test]
fn an_owner_key_given_compressed_or_uncompressed_names_the_same_owner() {
    let o = owners();
    let a = Compressed::of(SoftwareSigner::generate());
    let uncompressed = crate::ecdsa::canonical_p256_spki(&a.spki).expect("canonical");
    assert_ne!(a.spki, uncompressed);
    let h = header(&o.oem);

    let from_compressed = first_entry_payload(&h, &a.spki).expect("payload");
    let from_uncompressed = first_entry_payload(&h, &uncompressed).expect("payload");
    let p1 = EntryPayload::decode(&from_compressed).expect("decodes");
    let p2 = EntryPayload::decode(&from_uncompressed).expect("decodes");
    assert_eq!(p1.next_owner_public_key, uncompressed);
    assert_eq!(p2.next_owner_public_key, uncompressed);
    assert_eq!(
        p1.owner_commitment(),
        owner_commitment(&p1.commitment_salt, &a.spki),
        "the commitment hashes the canonical key whatever form it is given"
    );
    assert_eq!(key_id(&a.spki), key_id(&uncompressed));
    assert!(same_key(&a.spki, &uncompressed));
    assert!(!same_key(&a.spki, o.b.public_key_der()));
    let salt = [5u8; FIRST_OWNER_SALT_LEN];
    assert_eq!(
        first_owner_commitment(&salt, &a.spki).expect("commitment"),
        first_owner_commitment(&salt, &uncompressed).expect("commitment")
    );
    assert_ne!(
        first_owner_commitment(&salt, &a.spki).expect("commitment"),
        first_owner_commitment(&[6u8; FIRST_OWNER_SALT_LEN], &a.spki).expect("commitment")
    );

    // The owner, holding the key in compressed form, extends the voucher.
    let mut v = Voucher::new(h.clone());
    v.push_entry(&sign_entry(&from_compressed, &o.oem).expect("sign"))
        .expect("entry 0");
    v.extend(&a, o.b.public_key_der())
        .expect("a extends with either form");
    let verified = Voucher::decode(&v.encode())
        .expect("decode")
        .verify(o.oem.public_key_der())
        .expect("verify");
    assert_eq!(verified.entries[0].next_owner_public_key, uncompressed);
    assert_eq!(verified.entries[1].signer_public_key, uncompressed);

    // A payload written with the compressed form is not canonical.
    let mut raw = EntryPayload::decode(&from_compressed).expect("payload");
    raw.next_owner_public_key = a.spki.clone();
    assert!(matches!(
        EntryPayload::decode(&raw.encode()),
        Err(Error::VoucherMalformed(_))
    ));
    // Nor is a header naming the manufacturer key compressed.
    let oem_compressed = Compressed::of(SoftwareSigner::generate());
    let h2 = VoucherHeader::new(
        &"ab".repeat(32),
        "TL-000042",
        cert_chain_hash(&chain()),
        &oem_compressed.spki,
    )
    .expect("header");
    assert_ne!(h2.manufacturer_public_key, oem_compressed.spki);
    Voucher::new(h2)
        .verify(&oem_compressed.spki)
        .expect("the manufacturer key in either form verifies");
}
