//! Ownership vouchers: a device's chain of owners, carried from the factory to
//! the field (2.4.14.7, 2.4.16.3/6).
//!
//! The structure follows the FIDO Device Onboard 1.1 ownership voucher so a
//! mapping stays easy: a header naming the device and the manufacturer key,
//! an optional device binding (FDO's `OVHeaderHMac`, here a signature by the
//! device identity key), and entries, each a COSE_Sign1 (RFC 9052) whose
//! payload hashes the previous entry and the header and names the next owner.
//! Entry 0 is signed by the manufacturer (OEM voucher) key; entry *i* > 0 by
//! the owner named in entry *i* − 1. The current owner is the key named in the
//! last entry, or the manufacturer while there is none.
//!
//! # Encoding (CBOR, RFC 8949, definite lengths, shortest heads)
//!
//! ```text
//! Voucher      = [ version: 1,                      ; FDO OVProtVer
//!                  header: bstr .cbor Header,       ; FDO OVHeaderTag
//!                  device_binding: bstr / null,     ; FDO OVHeaderHMac (tagged COSE_Sign1)
//!                  entries: [* bstr] ]              ; FDO OVEntryArray (tagged COSE_Sign1 each)
//! Header       = [ version: 1,                      ; FDO OVHProtVer
//!                  guid: bstr .size 16,             ; FDO OVGuid (random)
//!                  rot_id: tstr,                    ; 64 lowercase hex
//!                  serial: tstr,                    ; product serial (FDO OVDeviceInfo)
//!                  cert_chain_sha256: bstr .size 32,; FDO OVDevCertChainHash, see cert_chain_hash
//!                  manufacturer_key: bstr ]         ; FDO OVPubKey, P-256 SubjectPublicKeyInfo DER
//! EntryPayload = [ prev_hash: bstr .size 32,        ; FDO OVEHashPrevEntry
//!                  header_hash: bstr .size 32,      ; FDO OVEHashHdrInfo
//!                  commitment_salt: bstr .size 16,  ; in FDO's OVEExtra position
//!                  next_owner_key: bstr ]           ; FDO OVEPubKey, P-256 SPKI DER
//! ```
//!
//! Hashes are SHA-256. `header_hash` is over the header's bytes (the content
//! of the `header` bstr). `prev_hash` of entry 0 is the header hash; of entry
//! *i* > 0 it is the hash of entry *i* − 1's exact COSE bytes. Each entry is a
//! CBOR-tagged (18) COSE_Sign1 with protected header `{1: -7 (ES256), 3:
//! "application/vnd.trustline.voucher-entry+cbor", 4: SHA-256(signer SPKI)}`,
//! an empty unprotected header, an embedded payload and a 64-byte raw `r ‖ s`
//! signature (RFC 9053 §2.1) over the `Signature1` structure with empty
//! external AAD. The device binding has the same shape with content type
//! `"application/vnd.trustline.voucher-binding"` and the header hash as
//! payload; it sits outside the entries (as FDO's HMAC does) so the OEM can
//! sign entry 0 before or after the device binds the header.
//!
//! Decoding is strict: sizes are bounded before parsing, every item must have
//! its exact type and length, and the bytes must be the canonical encoding of
//! what was parsed (re-encoding must reproduce them), so one voucher has one
//! byte string and any altered byte is refused by [`Voucher::decode`] or by
//! verification. A decoded [`Voucher`] is *untrusted* until
//! [`Voucher::verify`] returns a [`VerifiedVoucher`].
//!
//! What the chain cannot show by itself: a voucher cut back to an earlier
//! owner is a valid earlier voucher. Compare the entry count with the ledger
//! ([`VerifiedVoucher::ensure_entries`]). With no entries, a header is bound
//! only by the device binding ([`Voucher::verify_device_binding`]).
//!
//! Owners stay private (invariant 6): the ledger records
//! [`owner_commitment`]`(salt, key)` with the entry's fresh salt, never the
//! key, so transfers of one device cannot be linked by their commitments.

use ciborium::value::Value;
use coset::{iana, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::identity::is_well_formed_rot_id;
use crate::signer::Signer;
use crate::statement::parse_p256_spki;
use crate::Error;

/// The voucher format version (outer and header).
pub const VERSION: u64 = 1;
/// Largest encoded voucher accepted, in bytes; checked before parsing.
pub const MAX_VOUCHER_LEN: usize = 128 * 1024;
/// Most entries (ownership transfers) a voucher may hold.
pub const MAX_ENTRIES: usize = 64;
/// Largest encoded header accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 2048;
/// Largest encoded entry (or device binding) accepted, in bytes.
pub const MAX_ENTRY_LEN: usize = 1536;
/// Longest product serial, in bytes (printable ASCII).
pub const MAX_SERIAL_LEN: usize = 64;
/// Length of the voucher guid.
pub const GUID_LEN: usize = 16;
/// Length of an entry's commitment salt.
pub const SALT_LEN: usize = 16;
/// COSE content type of a voucher entry.
pub const ENTRY_CONTENT_TYPE: &str = "application/vnd.trustline.voucher-entry+cbor";
/// COSE content type of the device binding.
pub const BINDING_CONTENT_TYPE: &str = "application/vnd.trustline.voucher-binding";

const COSE_SIGNATURE_LEN: usize = 64;

// Every voucher within the per-part limits fits the overall limit.
const _: () = assert!(16 + MAX_HEADER_LEN + MAX_ENTRY_LEN * (MAX_ENTRIES + 1) <= MAX_VOUCHER_LEN);

/// SHA-256 over a certificate chain, leaf first: for each certificate, its
/// DER length as a 4-byte big-endian integer followed by the DER bytes. The
/// chain is the one `Certify` returns (device certificate, site
/// intermediate, OEM root). Length prefixes keep two different chains from
/// hashing alike by moving bytes across a certificate boundary.
pub fn cert_chain_hash<C: AsRef<[u8]>>(chain: &[C]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for cert in chain {
        let cert = cert.as_ref();
        // A DER certificate larger than 4 GiB cannot exist in memory here;
        // saturating keeps the function total.
        let len = u32::try_from(cert.len()).unwrap_or(u32::MAX);
        hasher.update(len.to_be_bytes());
        hasher.update(cert);
    }
    hasher.finalize().into()
}

/// The salted owner commitment the ledger records for a transfer:
/// SHA-256(`salt` ‖ `owner_spki`) (2.4.16.3, 2.4.16.6).
pub fn owner_commitment(salt: &[u8], owner_spki: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(owner_spki);
    hasher.finalize().into()
}

/// The COSE key id of a signer: SHA-256 of its SubjectPublicKeyInfo DER.
pub fn key_id(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// What a voucher says about the device and its maker. Signed indirectly:
/// every entry carries the hash of its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoucherHeader {
    /// Random identifier of this voucher (FDO's GUID).
    pub guid: [u8; GUID_LEN],
    /// The device's `rot_id`.
    pub rot_id: String,
    /// The product serial on the device certificate.
    pub serial: String,
    /// [`cert_chain_hash`] of the device certificate chain.
    pub cert_chain_sha256: [u8; 32],
    /// SubjectPublicKeyInfo DER of the manufacturer (OEM voucher) key.
    pub manufacturer_public_key: Vec<u8>,
}

impl VoucherHeader {
    /// A header with a fresh random guid.
    ///
    /// # Errors
    /// [`Error::VoucherMalformed`] for a malformed `rot_id` or serial,
    /// [`Error::NotP256`] when the manufacturer key is not P-256.
    pub fn new(
        rot_id: &str,
        serial: &str,
        cert_chain_sha256: [u8; 32],
        manufacturer_public_key: &[u8],
    ) -> Result<Self, Error> {
        let mut guid = [0u8; GUID_LEN];
        OsRng.fill_bytes(&mut guid);
        let header = Self {
            guid,
            rot_id: rot_id.to_owned(),
            serial: serial.to_owned(),
            cert_chain_sha256,
            manufacturer_public_key: manufacturer_public_key.to_vec(),
        };
        header.check()?;
        Ok(header)
    }

    fn check(&self) -> Result<(), Error> {
        if !is_well_formed_rot_id(&self.rot_id) {
            return Err(malformed(
                "header rot_id is not 64 lowercase hex characters",
            ));
        }
        check_serial(&self.serial)?;
        parse_p256_spki(&self.manufacturer_public_key)?;
        Ok(())
    }

    /// The canonical CBOR encoding (the bytes every entry hashes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.manufacturer_public_key.len());
        put_head(&mut out, MAJOR_ARRAY, 6);
        put_uint(&mut out, VERSION);
        put_bytes(&mut out, &self.guid);
        put_text(&mut out, &self.rot_id);
        put_text(&mut out, &self.serial);
        put_bytes(&mut out, &self.cert_chain_sha256);
        put_bytes(&mut out, &self.manufacturer_public_key);
        out
    }

    /// SHA-256 of [`VoucherHeader::encode`].
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Strictly decodes a header.
    ///
    /// # Errors
    /// [`Error::VoucherTooLarge`], [`Error::VoucherVersion`],
    /// [`Error::VoucherMalformed`] or [`Error::NotP256`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(Error::VoucherTooLarge {
                len: bytes.len(),
                max: MAX_HEADER_LEN,
            });
        }
        let mut items = array(parse_cbor(bytes, "header")?, 6, "header")?.into_iter();
        let version = uint(next(&mut items), "header version")?;
        if version != VERSION {
            return Err(Error::VoucherVersion(version));
        }
        let header = Self {
            guid: fixed(next(&mut items), "header guid")?,
            rot_id: text(next(&mut items), "header rot_id")?,
            serial: text(next(&mut items), "header serial")?,
            cert_chain_sha256: fixed(next(&mut items), "header cert_chain_sha256")?,
            manufacturer_public_key: bytes_of(next(&mut items), "header manufacturer key")?,
        };
        header.check()?;
        if header.encode() != bytes {
            return Err(malformed("header is not in canonical form"));
        }
        Ok(header)
    }
}

/// The payload of one voucher entry: who the next owner is, bound to the
/// header and the previous entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPayload {
    /// SHA-256 of the previous entry's COSE bytes, or the header hash for
    /// entry 0.
    pub prev_hash: [u8; 32],
    /// SHA-256 of the encoded header.
    pub header_hash: [u8; 32],
    /// Fresh random salt for this transfer's [`owner_commitment`].
    pub commitment_salt: [u8; SALT_LEN],
    /// SubjectPublicKeyInfo DER of the next owner's P-256 key.
    pub next_owner_public_key: Vec<u8>,
}

impl EntryPayload {
    /// The canonical CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.next_owner_public_key.len());
        put_head(&mut out, MAJOR_ARRAY, 4);
        put_bytes(&mut out, &self.prev_hash);
        put_bytes(&mut out, &self.header_hash);
        put_bytes(&mut out, &self.commitment_salt);
        put_bytes(&mut out, &self.next_owner_public_key);
        out
    }

    /// Strictly decodes an entry payload.
    ///
    /// # Errors
    /// [`Error::VoucherTooLarge`], [`Error::VoucherMalformed`] or
    /// [`Error::NotP256`] (the next owner key).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(Error::VoucherTooLarge {
                len: bytes.len(),
                max: MAX_ENTRY_LEN,
            });
        }
        let mut items = array(parse_cbor(bytes, "entry payload")?, 4, "entry payload")?.into_iter();
        let payload = Self {
            prev_hash: fixed(next(&mut items), "entry prev_hash")?,
            header_hash: fixed(next(&mut items), "entry header_hash")?,
            commitment_salt: fixed(next(&mut items), "entry commitment_salt")?,
            next_owner_public_key: bytes_of(next(&mut items), "entry next owner key")?,
        };
        parse_p256_spki(&payload.next_owner_public_key)?;
        if payload.encode() != bytes {
            return Err(malformed("entry payload is not in canonical form"));
        }
        Ok(payload)
    }

    /// This transfer's [`owner_commitment`].
    pub fn owner_commitment(&self) -> [u8; 32] {
        owner_commitment(&self.commitment_salt, &self.next_owner_public_key)
    }
}

/// Builds the payload of a voucher's entry 0 (manufacturer → first owner)
/// with a fresh salt, ready for [`sign_entry`] by the OEM voucher key.
///
/// # Errors
/// [`Error::NotP256`] when `next_owner_spki` is not a P-256 key.
pub fn first_entry_payload(
    header: &VoucherHeader,
    next_owner_spki: &[u8],
) -> Result<Vec<u8>, Error> {
    let header_hash = header.hash();
    new_payload(header_hash, header_hash, next_owner_spki)
}

fn new_payload(
    prev_hash: [u8; 32],
    header_hash: [u8; 32],
    next_owner_spki: &[u8],
) -> Result<Vec<u8>, Error> {
    parse_p256_spki(next_owner_spki)?;
    let mut commitment_salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut commitment_salt);
    Ok(EntryPayload {
        prev_hash,
        header_hash,
        commitment_salt,
        next_owner_public_key: next_owner_spki.to_vec(),
    }
    .encode())
}

/// Signs an encoded entry payload as a voucher entry; returns the tagged
/// COSE_Sign1 bytes. The HSM-backed CA calls this with the OEM voucher key.
///
/// # Errors
/// [`Error::VoucherMalformed`] (or [`Error::VoucherTooLarge`],
/// [`Error::NotP256`]) when the bytes do not decode as an entry payload;
/// [`Error::Signer`] when the signer fails or returns a malformed signature.
pub fn sign_entry(entry_payload_cbor: &[u8], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    EntryPayload::decode(entry_payload_cbor)?;
    cose_sign(ENTRY_CONTENT_TYPE, entry_payload_cbor.to_vec(), signer)
}

/// One parsed, not yet verified, entry.
#[derive(Clone, Debug)]
struct Entry {
    bytes: Vec<u8>,
    kid: [u8; 32],
    cose: CoseSign1,
    payload: EntryPayload,
}

impl Entry {
    fn parse(bytes: &[u8], index: usize) -> Result<Self, Error> {
        let (cose, kid) = parse_cose(bytes, ENTRY_CONTENT_TYPE, index)?;
        let payload = EntryPayload::decode(cose.payload.as_deref().unwrap_or_default())?;
        Ok(Self {
            bytes: bytes.to_vec(),
            kid,
            cose,
            payload,
        })
    }

    fn hash(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }
}

/// An ownership voucher as decoded or built: **not verified**. Call
/// [`Voucher::verify`] before trusting anything it says.
#[derive(Clone, Debug)]
pub struct Voucher {
    header: VoucherHeader,
    header_bytes: Vec<u8>,
    binding: Option<(Vec<u8>, CoseSign1, [u8; 32])>,
    entries: Vec<Entry>,
}

/// One verified transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEntry {
    /// SPKI DER of the key that signed this entry (the owner before it).
    pub signer_public_key: Vec<u8>,
    /// SPKI DER of the owner this entry names.
    pub next_owner_public_key: Vec<u8>,
    /// The salt of this transfer's commitment.
    pub commitment_salt: [u8; SALT_LEN],
    /// SHA-256 of the entry's COSE bytes.
    pub entry_sha256: [u8; 32],
}

impl VerifiedEntry {
    /// This transfer's [`owner_commitment`].
    pub fn owner_commitment(&self) -> [u8; 32] {
        owner_commitment(&self.commitment_salt, &self.next_owner_public_key)
    }
}

/// A voucher whose chain has been walked from the manufacturer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedVoucher {
    /// The header (bound by every entry's header hash).
    pub header: VoucherHeader,
    /// SHA-256 of the encoded header.
    pub header_sha256: [u8; 32],
    /// The transfers, in order.
    pub entries: Vec<VerifiedEntry>,
    /// SPKI DER of the current owner: the last entry's next owner, or the
    /// manufacturer key when there are no entries.
    pub current_owner: Vec<u8>,
}

impl VerifiedVoucher {
    /// Refuses a voucher that holds fewer entries than the ledger has
    /// recorded transfers for this device: a voucher cut back to an earlier
    /// owner is otherwise a valid voucher.
    ///
    /// # Errors
    /// [`Error::VoucherTruncated`].
    pub fn ensure_entries(&self, recorded: usize) -> Result<(), Error> {
        if self.entries.len() < recorded {
            return Err(Error::VoucherTruncated {
                recorded,
                found: self.entries.len(),
            });
        }
        Ok(())
    }
}

impl Voucher {
    /// A voucher with no entries: the manufacturer named in `header` is its
    /// owner.
    pub fn new(header: VoucherHeader) -> Self {
        let header_bytes = header.encode();
        Self {
            header,
            header_bytes,
            binding: None,
            entries: Vec::new(),
        }
    }

    /// The header (unverified).
    pub fn header(&self) -> &VoucherHeader {
        &self.header
    }

    /// The encoded header.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// SHA-256 of the encoded header.
    pub fn header_hash(&self) -> [u8; 32] {
        Sha256::digest(&self.header_bytes).into()
    }

    /// Number of entries (transfers).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the voucher has no entries yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries' payloads in order (unverified).
    pub fn entry_payloads(&self) -> impl Iterator<Item = &EntryPayload> {
        self.entries.iter().map(|e| &e.payload)
    }

    /// SPKI DER of the current owner (unverified): the key named in the last
    /// entry, or the manufacturer key.
    pub fn current_owner(&self) -> &[u8] {
        self.entries
            .last()
            .map_or(self.header.manufacturer_public_key.as_slice(), |e| {
                e.payload.next_owner_public_key.as_slice()
            })
    }

    /// The device binding's COSE bytes, if the device has bound the header.
    pub fn device_binding(&self) -> Option<&[u8]> {
        self.binding.as_ref().map(|(bytes, _, _)| bytes.as_slice())
    }

    /// SHA-256 of the encoded voucher (what an `OwnerAuthorization` names).
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// The canonical CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.header_bytes.len()
                + 512
                + self
                    .entries
                    .iter()
                    .map(|e| e.bytes.len() + 3)
                    .sum::<usize>(),
        );
        put_head(&mut out, MAJOR_ARRAY, 4);
        put_uint(&mut out, VERSION);
        put_bytes(&mut out, &self.header_bytes);
        match &self.binding {
            Some((bytes, _, _)) => put_bytes(&mut out, bytes),
            None => out.push(CBOR_NULL),
        }
        put_head(&mut out, MAJOR_ARRAY, self.entries.len() as u64);
        for entry in &self.entries {
            put_bytes(&mut out, &entry.bytes);
        }
        out
    }

    /// Strictly decodes a voucher. The result is unverified.
    ///
    /// # Errors
    /// [`Error::VoucherTooLarge`], [`Error::VoucherVersion`],
    /// [`Error::VoucherTooManyEntries`], [`Error::VoucherMalformed`] or
    /// [`Error::NotP256`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_VOUCHER_LEN {
            return Err(Error::VoucherTooLarge {
                len: bytes.len(),
                max: MAX_VOUCHER_LEN,
            });
        }
        let mut items = array(parse_cbor(bytes, "voucher")?, 4, "voucher")?.into_iter();
        let version = uint(next(&mut items), "voucher version")?;
        if version != VERSION {
            return Err(Error::VoucherVersion(version));
        }
        let header_bytes = bytes_of(next(&mut items), "voucher header")?;
        let header = VoucherHeader::decode(&header_bytes)?;
        let binding = match next(&mut items) {
            Value::Null => None,
            Value::Bytes(b) => {
                let (cose, kid) = parse_cose(&b, BINDING_CONTENT_TYPE, 0)?;
                Some((b, cose, kid))
            }
            _ => return Err(malformed("device binding is neither bytes nor null")),
        };
        let Value::Array(raw_entries) = next(&mut items) else {
            return Err(malformed("voucher entries are not an array"));
        };
        if raw_entries.len() > MAX_ENTRIES {
            return Err(Error::VoucherTooManyEntries { max: MAX_ENTRIES });
        }
        let mut entries = Vec::with_capacity(raw_entries.len());
        for (index, raw) in raw_entries.into_iter().enumerate() {
            let Value::Bytes(b) = raw else {
                return Err(malformed(format!("entry {index} is not a byte string")));
            };
            entries.push(Entry::parse(&b, index)?);
        }
        let voucher = Self {
            header,
            header_bytes,
            binding,
            entries,
        };
        if voucher.encode() != bytes {
            return Err(malformed("voucher is not in canonical form"));
        }
        Ok(voucher)
    }

    /// Builds the payload of the next entry (naming `next_owner_spki`) with
    /// a fresh salt, for the current owner to [`sign_entry`]. For a voucher
    /// with no entries this is the manufacturer's entry 0.
    ///
    /// # Errors
    /// [`Error::NotP256`] for a key that is not P-256,
    /// [`Error::VoucherTooManyEntries`] when the voucher is full.
    pub fn next_entry_payload(&self, next_owner_spki: &[u8]) -> Result<Vec<u8>, Error> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(Error::VoucherTooManyEntries { max: MAX_ENTRIES });
        }
        new_payload(
            self.expected_prev_hash(),
            self.header_hash(),
            next_owner_spki,
        )
    }

    /// Appends an entry signed elsewhere (by the HSM, via [`sign_entry`])
    /// after checking it continues this voucher and is signed by the current
    /// owner. Returns the entry's payload (for its owner commitment).
    ///
    /// # Errors
    /// [`Error::VoucherTooManyEntries`], [`Error::VoucherMalformed`] and the
    /// chain errors of [`Voucher::verify`] for this entry.
    pub fn push_entry(&mut self, cose_bytes: &[u8]) -> Result<EntryPayload, Error> {
        let index = self.entries.len();
        if index >= MAX_ENTRIES {
            return Err(Error::VoucherTooManyEntries { max: MAX_ENTRIES });
        }
        let entry = Entry::parse(cose_bytes, index)?;
        check_entry(
            &entry,
            index,
            &self.expected_prev_hash(),
            &self.header_hash(),
            self.current_owner(),
        )?;
        let payload = entry.payload.clone();
        self.entries.push(entry);
        Ok(payload)
    }

    /// The current owner transfers the device to `next_owner_spki`: signs a
    /// new last entry (2.4.14.7). Returns the new entry's payload. Earlier
    /// entries are not re-verified here: [`Voucher::verify`] a voucher
    /// received from elsewhere before extending it.
    ///
    /// # Errors
    /// [`Error::VoucherNotCurrentOwner`] when `current_owner` is not the
    /// voucher's current owner; [`Error::NotP256`],
    /// [`Error::VoucherTooManyEntries`], [`Error::Signer`].
    pub fn extend(
        &mut self,
        current_owner: &dyn Signer,
        next_owner_spki: &[u8],
    ) -> Result<EntryPayload, Error> {
        if current_owner.public_key_der() != self.current_owner() {
            return Err(Error::VoucherNotCurrentOwner);
        }
        let payload = self.next_entry_payload(next_owner_spki)?;
        let cose = sign_entry(&payload, current_owner)?;
        self.push_entry(&cose)
    }

    /// Walks the chain from `manufacturer_spki`: the header must name that
    /// key, and each entry must hash the header and its predecessor and be
    /// signed by the owner before it.
    ///
    /// # Errors
    /// [`Error::VoucherManufacturerMismatch`], then per entry, in order:
    /// [`Error::VoucherHeaderMismatch`] (altered header),
    /// [`Error::VoucherBrokenChain`] (reordered, removed or inserted entry),
    /// [`Error::VoucherWrongSigner`] (signed by someone other than the
    /// owner), [`Error::VoucherBadSignature`] (forged or altered entry).
    pub fn verify(&self, manufacturer_spki: &[u8]) -> Result<VerifiedVoucher, Error> {
        if self.header.manufacturer_public_key != manufacturer_spki {
            return Err(Error::VoucherManufacturerMismatch);
        }
        let header_sha256 = self.header_hash();
        let mut prev = header_sha256;
        let mut owner = self.header.manufacturer_public_key.clone();
        let mut entries = Vec::with_capacity(self.entries.len());
        for (index, entry) in self.entries.iter().enumerate() {
            check_entry(entry, index, &prev, &header_sha256, &owner)?;
            let entry_sha256 = entry.hash();
            entries.push(VerifiedEntry {
                signer_public_key: owner,
                next_owner_public_key: entry.payload.next_owner_public_key.clone(),
                commitment_salt: entry.payload.commitment_salt,
                entry_sha256,
            });
            prev = entry_sha256;
            owner = entry.payload.next_owner_public_key.clone();
        }
        Ok(VerifiedVoucher {
            header: self.header.clone(),
            header_sha256,
            entries,
            current_owner: owner,
        })
    }

    /// The device binds the header with its identity key (as FDO binds it
    /// with a device secret), so no HSM signature is spent per device on it.
    ///
    /// # Errors
    /// [`Error::VoucherAlreadyBound`], [`Error::Signer`].
    pub fn bind_to_device(&mut self, device: &dyn Signer) -> Result<(), Error> {
        if self.binding.is_some() {
            return Err(Error::VoucherAlreadyBound);
        }
        let bytes = cose_sign(BINDING_CONTENT_TYPE, self.header_hash().to_vec(), device)?;
        let (cose, kid) = parse_cose(&bytes, BINDING_CONTENT_TYPE, 0)?;
        self.binding = Some((bytes, cose, kid));
        Ok(())
    }

    /// Checks that the header describes `device_chain` (by
    /// [`cert_chain_hash`]) and that the device key `device_spki` — the
    /// caller takes it from the chain's leaf certificate — bound it.
    ///
    /// # Errors
    /// [`Error::VoucherChainMismatch`], [`Error::VoucherNotBound`],
    /// [`Error::VoucherBadBinding`].
    pub fn verify_device_binding<C: AsRef<[u8]>>(
        &self,
        device_chain: &[C],
        device_spki: &[u8],
    ) -> Result<(), Error> {
        if cert_chain_hash(device_chain) != self.header.cert_chain_sha256 {
            return Err(Error::VoucherChainMismatch);
        }
        let Some((_, cose, kid)) = &self.binding else {
            return Err(Error::VoucherNotBound);
        };
        if *kid != key_id(device_spki)
            || cose.payload.as_deref() != Some(self.header_hash().as_slice())
            || !cose_signature_ok(cose, device_spki)
        {
            return Err(Error::VoucherBadBinding);
        }
        Ok(())
    }

    fn expected_prev_hash(&self) -> [u8; 32] {
        self.entries
            .last()
            .map_or_else(|| self.header_hash(), Entry::hash)
    }
}

fn check_entry(
    entry: &Entry,
    index: usize,
    prev_hash: &[u8; 32],
    header_hash: &[u8; 32],
    signer_spki: &[u8],
) -> Result<(), Error> {
    if entry.payload.header_hash != *header_hash {
        return Err(Error::VoucherHeaderMismatch { entry: index });
    }
    if entry.payload.prev_hash != *prev_hash {
        return Err(Error::VoucherBrokenChain { entry: index });
    }
    if entry.kid != key_id(signer_spki) {
        return Err(Error::VoucherWrongSigner { entry: index });
    }
    if !cose_signature_ok(&entry.cose, signer_spki) {
        return Err(Error::VoucherBadSignature { entry: index });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// COSE_Sign1 with ES256.
// ---------------------------------------------------------------------------

fn cose_structure(content_type: &str, kid: &[u8; 32], payload: Vec<u8>) -> CoseSign1Builder {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .content_type(content_type.to_owned())
        .key_id(kid.to_vec())
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
}

fn cose_sign(content_type: &str, payload: Vec<u8>, signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    let kid = key_id(signer.public_key_der());
    let cose = cose_structure(content_type, &kid, payload)
        .try_create_signature(b"", |tbs| {
            let der = signer.sign(tbs)?;
            der_to_raw(&der)
        })?
        .build();
    cose.to_tagged_vec()
        .map_err(|e| Error::Signer(format!("cannot encode a COSE_Sign1: {e}")))
}

/// RFC 9053 §2.1: ECDSA signatures in COSE are `r ‖ s`, each 32 bytes for
/// P-256; `Signer` returns DER.
fn der_to_raw(der: &[u8]) -> Result<Vec<u8>, Error> {
    let sig = p256::ecdsa::Signature::from_der(der)
        .map_err(|e| Error::Signer(format!("signer returned a malformed DER signature: {e}")))?;
    Ok(sig.to_bytes().to_vec())
}

/// Strictly parses a tagged COSE_Sign1 of our one shape; returns it and its
/// key id.
fn parse_cose(
    bytes: &[u8],
    content_type: &str,
    index: usize,
) -> Result<(CoseSign1, [u8; 32]), Error> {
    let what = if content_type == ENTRY_CONTENT_TYPE {
        format!("entry {index}")
    } else {
        "device binding".to_owned()
    };
    if bytes.len() > MAX_ENTRY_LEN {
        return Err(Error::VoucherTooLarge {
            len: bytes.len(),
            max: MAX_ENTRY_LEN,
        });
    }
    let cose = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| malformed(format!("{what} is not a tagged COSE_Sign1: {e}")))?;
    let header = &cose.protected.header;
    if header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::ES256)) {
        return Err(malformed(format!("{what} is not signed with ES256")));
    }
    if header.content_type != Some(coset::ContentType::Text(content_type.to_owned())) {
        return Err(malformed(format!(
            "{what} does not have content type {content_type}"
        )));
    }
    let kid: [u8; 32] = header
        .key_id
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("{what} key id is not 32 bytes")))?;
    let Some(payload) = cose.payload.clone() else {
        return Err(malformed(format!("{what} has a detached payload")));
    };
    if cose.signature.len() != COSE_SIGNATURE_LEN {
        return Err(malformed(format!("{what} signature is not 64 bytes")));
    }
    // Anything else (other header parameters, an unprotected header, a
    // different order or encoding) makes the canonical bytes differ.
    let canonical = cose_structure(content_type, &kid, payload)
        .signature(cose.signature.clone())
        .build()
        .to_tagged_vec()
        .map_err(|e| malformed(format!("{what} cannot be re-encoded: {e}")))?;
    if canonical != bytes {
        return Err(malformed(format!("{what} is not in canonical form")));
    }
    Ok((cose, kid))
}

fn cose_signature_ok(cose: &CoseSign1, spki: &[u8]) -> bool {
    // Strict: a high-S twin would be other COSE bytes for the same entry.
    cose.verify_signature(b"", |sig, tbs| {
        crate::ecdsa::verify_strict(spki, tbs, sig, crate::ecdsa::SignatureEncoding::Raw)
    })
    .is_ok()
}

// ---------------------------------------------------------------------------
// The little CBOR this format needs: unsigned integers, byte and text
// strings, arrays, null — always definite length, shortest head.
// ---------------------------------------------------------------------------

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const CBOR_NULL: u8 = 0xf6;

fn put_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[m | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn put_uint(out: &mut Vec<u8>, n: u64) {
    put_head(out, MAJOR_UINT, n);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn malformed(why: impl Into<String>) -> Error {
    Error::VoucherMalformed(why.into())
}

fn parse_cbor(bytes: &[u8], what: &str) -> Result<Value, Error> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest)
        .map_err(|e| malformed(format!("{what} is not CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{what} has {} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

fn array(value: Value, len: usize, what: &str) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(malformed(format!("{what} is not an array of {len} items"))),
    }
}

/// The next item of an array whose length was checked; `Null` past the end
/// (which every typed accessor then refuses).
fn next(items: &mut std::vec::IntoIter<Value>) -> Value {
    items.next().unwrap_or(Value::Null)
}

fn uint(value: Value, what: &str) -> Result<u64, Error> {
    match value {
        Value::Integer(i) => u64::try_from(i).map_err(|_| malformed(format!("{what} is negative"))),
        _ => Err(malformed(format!("{what} is not an unsigned integer"))),
    }
}

fn bytes_of(value: Value, what: &str) -> Result<Vec<u8>, Error> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(malformed(format!("{what} is not a byte string"))),
    }
}

fn fixed<const N: usize>(value: Value, what: &str) -> Result<[u8; N], Error> {
    bytes_of(value, what)?
        .try_into()
        .map_err(|_| malformed(format!("{what} is not {N} bytes")))
}

fn text(value: Value, what: &str) -> Result<String, Error> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(malformed(format!("{what} is not a text string"))),
    }
}

fn check_serial(serial: &str) -> Result<(), Error> {
    if serial.is_empty()
        || serial.len() > MAX_SERIAL_LEN
        || !serial.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed(format!(
            "serial must be 1 to {MAX_SERIAL_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
