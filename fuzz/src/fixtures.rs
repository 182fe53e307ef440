//! The fixed context the harnesses decode against: software keys derived
//! from constants, seeded IC vendors, a fixed clock, a fixed voucher.
//!
//! Everything here is deterministic, so a seed written by `make-corpus`
//! (signed with these keys) is still correctly signed when the fuzzer runs
//! it, and a crash found once reproduces.

use std::sync::OnceLock;

use hsm_sim::rot::{IcVendor, VendorShape};
use provisioner::vendors::VendorRoot;
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::voucher::{self, EntryPayload, Voucher, VoucherHeader};

/// The clock every time-dependent check is run at: 2026-01-01T00:00:00Z.
pub const NOW_MS: i64 = 1_767_225_600_000;
/// The checkpoint origin (the ledger's default).
pub const ORIGIN: &str = custody_ledger::DEFAULT_ORIGIN;
/// The product serial in the fixed voucher and seeds.
pub const SERIAL: &str = "SN000001";
/// The site of the fixed orders and claims.
pub const SITE: &str = "site-a";
/// The IC vendors the factory is configured with (names and seeds).
pub const VENDORS: [(&str, VendorShape, u64); 2] = [
    ("Acme Silicon", VendorShape::WithIntermediate, 0x5eed_0001),
    ("Borealis Semiconductor", VendorShape::RootOnly, 0x5eed_0002),
];

/// Which fixed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName {
    /// The OEM production-order key.
    Order = 1,
    /// A RoT attestation key (the claimed RoT of the claim harnesses).
    Rot = 2,
    /// A device identity key.
    Device = 3,
    /// The OEM voucher (manufacturer) key.
    Manufacturer = 4,
    /// A first owner's key.
    Owner = 5,
    /// The ledger checkpoint key.
    Ledger = 6,
    /// A RoT transport key.
    Transport = 7,
    /// Somebody else: signatures by it must never be accepted.
    Forger = 9,
}

/// The fixed software key `name`: its scalar is the byte `name` repeated.
pub fn key(name: KeyName) -> &'static SoftwareSigner {
    static KEYS: OnceLock<Vec<(KeyName, SoftwareSigner)>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            KeyName::Order,
            KeyName::Rot,
            KeyName::Device,
            KeyName::Manufacturer,
            KeyName::Owner,
            KeyName::Ledger,
            KeyName::Transport,
            KeyName::Forger,
        ]
        .into_iter()
        .map(|n| {
            let scalar = p256::FieldBytes::from([n as u8; 32]);
            // A scalar of one repeated small byte is far below the group
            // order and not zero, so it is always a valid key.
            let signing = p256::ecdsa::SigningKey::from_bytes(&scalar)
                .expect("a repeated small byte is a valid P-256 scalar");
            (n, SoftwareSigner::from_key(signing))
        })
        .collect()
    });
    keys.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| k)
        .expect("every key name is in the table")
}

/// SubjectPublicKeyInfo DER of the fixed key `name`.
pub fn spki(name: KeyName) -> &'static [u8] {
    key(name).public_key_der()
}

/// The `rot_id` of the fixed RoT ([`KeyName::Rot`]).
pub fn rot_id() -> String {
    trustline_proto::identity::rot_id(spki(KeyName::Rot))
}

/// The OEM trust anchor the claim harnesses expect a receipt to name.
pub fn anchor_sha256() -> [u8; 32] {
    Sha256::digest(b"trustline fuzz OEM root certificate").into()
}

/// The firmware digest the fixed orders allow.
pub fn firmware_sha256() -> [u8; 32] {
    hsm_sim::rot::default_firmware_sha256()
}

/// The configured IC vendors, made afresh from their seeds (the corpus
/// generator manufactures dies with them).
pub fn ic_vendors() -> Vec<IcVendor> {
    VENDORS
        .iter()
        .map(|(name, shape, seed)| {
            IcVendor::with_seed(name, *shape, *seed).expect("seeded simulated vendor")
        })
        .collect()
}

/// The vendor roots the factory is configured with.
pub fn vendor_roots() -> &'static [VendorRoot] {
    static ROOTS: OnceLock<Vec<VendorRoot>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        ic_vendors()
            .iter()
            .map(|v| VendorRoot {
                name: v.name().to_owned(),
                certificate: v.root_der().to_vec(),
            })
            .collect()
    })
}

/// The configured vendor names.
pub fn vendor_names() -> Vec<String> {
    vendor_roots().iter().map(|r| r.name.clone()).collect()
}

/// The intermediate of the first vendor (its dies are certified by it).
pub fn vendor_intermediate() -> &'static [u8] {
    static INTERMEDIATE: OnceLock<Vec<u8>> = OnceLock::new();
    INTERMEDIATE.get_or_init(|| {
        ic_vendors()
            .first()
            .and_then(|v| v.intermediate_der().map(<[u8]>::to_vec))
            .expect("the first vendor has an intermediate")
    })
}

/// The device certificate chain the fixed voucher describes. Only its hash
/// matters to the voucher, so plain bytes stand in for certificates.
pub fn device_chain() -> [&'static [u8]; 3] {
    [b"device certificate", b"site intermediate", b"oem root"]
}

/// The fixed voucher header: the fixed RoT, serial, chain and
/// manufacturer key, with a fixed guid.
pub fn voucher_header() -> VoucherHeader {
    VoucherHeader {
        guid: [0x42; voucher::GUID_LEN],
        rot_id: rot_id(),
        serial: SERIAL.to_owned(),
        cert_chain_sha256: voucher::cert_chain_hash(&device_chain()),
        manufacturer_public_key: spki(KeyName::Manufacturer).to_vec(),
    }
}

/// An entry payload continuing `voucher`, naming `next_owner`, with a salt
/// fixed by `salt` (so seeds are reproducible).
pub fn entry_payload(voucher: &Voucher, next_owner: &[u8], salt: u8) -> Vec<u8> {
    // The voucher builds the payload (it knows the previous entry's hash);
    // only its random salt is replaced.
    let fresh = voucher
        .next_entry_payload(next_owner)
        .expect("a P-256 next owner on a voucher with room");
    let mut payload = EntryPayload::decode(&fresh).expect("the voucher's own payload decodes");
    payload.commitment_salt = [salt; voucher::SALT_LEN];
    payload.encode()
}

/// The fixed voucher: header, device binding by [`KeyName::Device`], and
/// entry 0 from the manufacturer to [`KeyName::Owner`].
pub fn voucher_with_owner() -> &'static Voucher {
    static VOUCHER: OnceLock<Voucher> = OnceLock::new();
    VOUCHER.get_or_init(|| {
        let mut v = bound_voucher().clone();
        let payload = entry_payload(&v, spki(KeyName::Owner), 0x11);
        let cose = voucher::sign_entry(&payload, key(KeyName::Manufacturer))
            .expect("the manufacturer signs a well-formed entry");
        v.push_entry(&cose).expect("entry 0 continues the voucher");
        v
    })
}

/// The fixed voucher before any transfer: header and device binding only;
/// its current owner is the manufacturer.
pub fn bound_voucher() -> &'static Voucher {
    static VOUCHER: OnceLock<Voucher> = OnceLock::new();
    VOUCHER.get_or_init(|| {
        let mut v = Voucher::new(voucher_header());
        v.bind_to_device(key(KeyName::Device))
            .expect("a fresh voucher binds");
        v
    })
}
