//! The FDO 1.1 ownership voucher: header, entry payload, the voucher itself,
//! its verification and its extension. The format and every hash are
//! described in [`super`] and in `docs/fdo-vouchers.md`.

use std::collections::BTreeMap;

use ring::hmac;
use sha2::{Digest, Sha256};

use super::cbor::{self, malformed, Item, Writer};
use super::cose;
use super::rendezvous::RendezvousInfo;
use super::{
    GUID_LEN, HASH_SHA256, HMAC_SHA256, MAX_CERT_LEN, MAX_CHAIN_LEN, MAX_DEVICE_INFO_LEN,
    MAX_ENTRIES, MAX_ENTRY_LEN, MAX_HEADER_LEN, MAX_VOUCHER_LEN, PEM_LABEL, PK_ENC_X509,
    PK_SECP256R1, PROTOCOL_VERSION, TRUSTLINE_ENTRY_EXTRA,
};
use crate::signer::Signer;
use crate::statement::parse_p256_spki;
use crate::Error;

/// FDO's `OVDevCertChainHash` value: SHA-256 over the concatenated DER of
/// every certificate of `OVDevCertChain`, device certificate first (the
/// contents of each byte string, nothing between them).
pub fn cert_chain_sha256<C: AsRef<[u8]>>(chain: &[C]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for cert in chain {
        hasher.update(cert.as_ref());
    }
    hasher.finalize().into()
}

/// FDO's `OVHeaderHMac` value: HMAC-SHA256 keyed with the device secret
/// (`DCHmacSecret`) over the `OVHeader` bytes (the contents of
/// `OVHeaderTag`). Only the device holds the secret; this is what it
/// computes (and what a test that knows a fixed secret checks).
pub fn header_hmac(secret: &[u8], header_bytes: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, header_bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Encodes an `OVEExtraInfo` map (`{ * int => bstr }`) canonically (keys in
/// the bytewise order of their encodings, RFC 8949 §4.2.1): the bytes to
/// put in [`FdoEntryPayload::extra`].
pub fn encode_extra(map: &BTreeMap<i64, Vec<u8>>) -> Vec<u8> {
    let mut pairs: Vec<(Vec<u8>, &Vec<u8>)> = map
        .iter()
        .map(|(k, v)| (Writer::new().int(*k).finish(), v))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = Writer::new();
    w.map(pairs.len());
    for (k, v) in pairs {
        w.raw(&k).bytes(v);
    }
    w.finish()
}

fn decode_extra(bytes: &[u8]) -> Result<BTreeMap<i64, Vec<u8>>, Error> {
    let item = cbor::parse(bytes, "OVEExtra")?;
    let mut map = BTreeMap::new();
    for (k, v) in item.map("OVEExtra")? {
        map.insert(
            k.int("OVEExtraInfoType")?,
            v.bytes("OVEExtra value")?.to_vec(),
        );
    }
    Ok(map)
}

fn write_hash(w: &mut Writer, hash_type: i64, value: &[u8]) {
    w.array(2).int(hash_type).bytes(value);
}

fn read_hash(item: &Item<'_>, expected_type: i64, what: &str) -> Result<[u8; 32], Error> {
    let parts = item.array_of(2, what)?;
    let hash_type = parts[0].int(what)?;
    if hash_type != expected_type {
        return Err(Error::FdoUnsupported(format!(
            "{what} has hash type {hash_type}; with SECP256R1 keys only {expected_type} is used"
        )));
    }
    parts[1].fixed(what)
}

fn write_public_key(w: &mut Writer, spki: &[u8]) {
    w.array(3).uint(PK_SECP256R1).uint(PK_ENC_X509).bytes(spki);
}

fn read_public_key(item: &Item<'_>, what: &str) -> Result<Vec<u8>, Error> {
    let parts = item.array_of(3, what)?;
    let pk_type = parts[0].uint(what)?;
    let pk_enc = parts[1].uint(what)?;
    if pk_type != PK_SECP256R1 || pk_enc != PK_ENC_X509 {
        return Err(Error::FdoUnsupported(format!(
            "{what} is pkType {pk_type} / pkEnc {pk_enc}; Trustline vouchers use \
             SECP256R1 ({PK_SECP256R1}) keys in X509 encoding ({PK_ENC_X509})"
        )));
    }
    let spki = parts[2].bytes(what)?.to_vec();
    parse_p256_spki(&spki)?;
    Ok(spki)
}

fn too_large(len: usize, max: usize) -> Error {
    Error::FdoTooLarge { len, max }
}

// ---------------------------------------------------------------------------
// OVHeader
// ---------------------------------------------------------------------------

/// `OVHeader`: what the voucher says about the device and its maker. Bound
/// by the device's HMAC and, through `OVEHashPrevEntry` and
/// `OVEHashHdrInfo`, by every entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdoHeader {
    /// `OVGuid`: the voucher's (and the device's FDO) GUID.
    pub guid: [u8; GUID_LEN],
    /// `OVRVInfo`: where to find the rendezvous server.
    pub rv_info: RendezvousInfo,
    /// `OVDeviceInfo`: free text naming the kind of device.
    pub device_info: String,
    /// `OVPubKey`: SubjectPublicKeyInfo DER of the manufacturer's P-256 key
    /// (`[SECP256R1, X509, spki]`).
    pub manufacturer_public_key: Vec<u8>,
    /// `OVDevCertChainHash` (SHA-256, see [`cert_chain_sha256`]).
    pub cert_chain_sha256: [u8; 32],
}

impl FdoHeader {
    fn check(&self) -> Result<(), Error> {
        self.rv_info.check()?;
        if self.device_info.len() > MAX_DEVICE_INFO_LEN {
            return Err(malformed(format!(
                "OVDeviceInfo is longer than {MAX_DEVICE_INFO_LEN} bytes"
            )));
        }
        parse_p256_spki(&self.manufacturer_public_key)?;
        Ok(())
    }

    /// The canonical encoding: the bytes the device HMACs and every entry
    /// hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.array(6).uint(PROTOCOL_VERSION).bytes(&self.guid);
        self.rv_info.write(&mut w);
        w.text(&self.device_info);
        write_public_key(&mut w, &self.manufacturer_public_key);
        write_hash(&mut w, HASH_SHA256, &self.cert_chain_sha256);
        w.finish()
    }

    /// Strictly decodes an `OVHeader`.
    ///
    /// # Errors
    /// [`Error::FdoTooLarge`], [`Error::FdoVersion`], [`Error::FdoMalformed`],
    /// [`Error::FdoUnsupported`] (another key type or hash, a null chain
    /// hash), [`Error::NotP256`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(too_large(bytes.len(), MAX_HEADER_LEN));
        }
        let item = cbor::parse(bytes, "OVHeader")?;
        let parts = item.array_of(6, "OVHeader")?;
        let version = parts[0].uint("OVHProtVer")?;
        if version != PROTOCOL_VERSION {
            return Err(Error::FdoVersion(version));
        }
        if parts[5].is_null() {
            return Err(Error::FdoUnsupported(
                "OVDevCertChainHash is null (an Intel EPID device); Trustline devices have \
                 certificate chains"
                    .to_owned(),
            ));
        }
        let header = Self {
            guid: parts[1].fixed("OVGuid")?,
            rv_info: RendezvousInfo::read(&parts[2])?,
            device_info: parts[3].text("OVDeviceInfo")?.to_owned(),
            manufacturer_public_key: read_public_key(&parts[4], "OVPubKey")?,
            cert_chain_sha256: read_hash(&parts[5], HASH_SHA256, "OVDevCertChainHash")?,
        };
        header.check()?;
        if header.encode() != bytes {
            return Err(malformed("OVHeader is not in canonical form"));
        }
        Ok(header)
    }

    /// `OVEHashHdrInfo`: SHA-256(`OVGuid` ‖ `OVDeviceInfo`), the 16 GUID
    /// bytes followed by the UTF-8 bytes of the device info.
    pub fn header_info_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.guid);
        hasher.update(self.device_info.as_bytes());
        hasher.finalize().into()
    }
}

// ---------------------------------------------------------------------------
// OVEntryPayload
// ---------------------------------------------------------------------------

/// `OVEntryPayload`: one transfer, bound to the previous entry and the
/// header, naming the next owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdoEntryPayload {
    /// `OVEHashPrevEntry` (SHA-256): of `OVHeader ‖ OVHeaderHMac` for entry
    /// 0, of the previous entry's bytes after.
    pub prev_hash: [u8; 32],
    /// `OVEHashHdrInfo` (SHA-256, see [`FdoHeader::header_info_hash`]).
    pub header_info_hash: [u8; 32],
    /// `OVEExtra`: the CBOR map (`OVEExtraInfo`) inside its byte string, or
    /// `None` for CBOR null.
    pub extra: Option<Vec<u8>>,
    /// `OVEPubKey`: SubjectPublicKeyInfo DER of the next owner's P-256 key.
    pub next_owner_public_key: Vec<u8>,
}

impl FdoEntryPayload {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.array(4);
        write_hash(&mut w, HASH_SHA256, &self.prev_hash);
        write_hash(&mut w, HASH_SHA256, &self.header_info_hash);
        match &self.extra {
            Some(extra) => w.bytes(extra),
            None => w.null(),
        };
        write_public_key(&mut w, &self.next_owner_public_key);
        w.finish()
    }

    /// Strictly decodes an entry payload.
    ///
    /// # Errors
    /// [`Error::FdoTooLarge`], [`Error::FdoMalformed`],
    /// [`Error::FdoUnsupported`], [`Error::NotP256`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(too_large(bytes.len(), MAX_ENTRY_LEN));
        }
        let item = cbor::parse(bytes, "OVEntryPayload")?;
        let parts = item.array_of(4, "OVEntryPayload")?;
        let extra = if parts[2].is_null() {
            None
        } else {
            let extra = parts[2].bytes("OVEExtra")?.to_vec();
            decode_extra(&extra)?;
            Some(extra)
        };
        let payload = Self {
            prev_hash: read_hash(&parts[0], HASH_SHA256, "OVEHashPrevEntry")?,
            header_info_hash: read_hash(&parts[1], HASH_SHA256, "OVEHashHdrInfo")?,
            extra,
            next_owner_public_key: read_public_key(&parts[3], "OVEPubKey")?,
        };
        if payload.encode() != bytes {
            return Err(malformed("OVEntryPayload is not in canonical form"));
        }
        Ok(payload)
    }

    /// The `OVEExtra` map, empty when `OVEExtra` is null.
    ///
    /// # Errors
    /// [`Error::FdoMalformed`] (cannot happen for a decoded payload).
    pub fn extra_map(&self) -> Result<BTreeMap<i64, Vec<u8>>, Error> {
        self.extra
            .as_deref()
            .map_or_else(|| Ok(BTreeMap::new()), decode_extra)
    }

    /// The Trustline voucher entry this FDO entry mirrors (the
    /// [`TRUSTLINE_ENTRY_EXTRA`] value of `OVEExtra`), if any.
    pub fn trustline_entry(&self) -> Option<Vec<u8>> {
        self.extra_map()
            .ok()
            .and_then(|mut m| m.remove(&TRUSTLINE_ENTRY_EXTRA))
    }
}

/// Signs an encoded entry payload as an FDO voucher entry (tagged
/// COSE_Sign1, ES256, low S); returns its bytes. The HSM-backed voucher key
/// signs entry 0 through this.
///
/// # Errors
/// The errors of [`FdoEntryPayload::decode`] when the bytes are not an
/// entry payload; [`Error::Signer`].
pub fn sign_entry(payload: &[u8], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    FdoEntryPayload::decode(payload)?;
    cose::sign(payload, signer)
}

/// Assembles voucher bytes from parts without checking them: for tools
/// that carry parts made elsewhere, and for tests that build broken
/// vouchers. [`FdoVoucher::decode`] and [`FdoVoucher::verify`] before
/// trusting the result.
pub fn assemble<C: AsRef<[u8]>, E: AsRef<[u8]>>(
    header_bytes: &[u8],
    hmac_value: &[u8; 32],
    chain: &[C],
    entries: &[E],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(5).uint(PROTOCOL_VERSION).bytes(header_bytes);
    write_hash(&mut w, HMAC_SHA256, hmac_value);
    w.array(chain.len());
    for cert in chain {
        w.bytes(cert.as_ref());
    }
    w.array(entries.len());
    for entry in entries {
        w.raw(entry.as_ref());
    }
    w.finish()
}

// ---------------------------------------------------------------------------
// OwnershipVoucher
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Entry {
    bytes: Vec<u8>,
    payload: FdoEntryPayload,
}

impl Entry {
    fn parse(bytes: &[u8], index: usize) -> Result<Self, Error> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(too_large(bytes.len(), MAX_ENTRY_LEN));
        }
        let sign1 = cose::parse(bytes, &format!("OVEntry {index}"))?;
        let payload = FdoEntryPayload::decode(sign1.payload)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            payload,
        })
    }

    fn hash(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    fn verifies_under(&self, spki: &[u8]) -> bool {
        cose::parse(&self.bytes, "OVEntry")
            .map(|s| cose::verifies(&s, spki))
            .unwrap_or(false)
    }
}

/// An FDO 1.1 `OwnershipVoucher` as decoded or built: **not verified**.
/// Call [`FdoVoucher::verify`] before trusting what it says.
#[derive(Clone, Debug)]
pub struct FdoVoucher {
    header: FdoHeader,
    header_bytes: Vec<u8>,
    hmac: [u8; 32],
    chain: Vec<Vec<u8>>,
    entries: Vec<Entry>,
}

/// One verified transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedFdoEntry {
    /// SPKI DER of the key that signed this entry (the owner before it).
    pub signer_public_key: Vec<u8>,
    /// SPKI DER of the owner this entry names.
    pub next_owner_public_key: Vec<u8>,
    /// SHA-256 of the entry's bytes (what the next entry hashes).
    pub entry_sha256: [u8; 32],
    /// The `OVEExtra` map (empty for null).
    pub extra: BTreeMap<i64, Vec<u8>>,
}

impl VerifiedFdoEntry {
    /// The Trustline voucher entry this entry mirrors, if it carries one.
    pub fn trustline_entry(&self) -> Option<&[u8]> {
        self.extra.get(&TRUSTLINE_ENTRY_EXTRA).map(Vec::as_slice)
    }
}

/// A voucher whose certificate chain hash and entry chain were checked from
/// the manufacturer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedFdoVoucher {
    /// The header.
    pub header: FdoHeader,
    /// SHA-256 of the `OVHeader` bytes (what the ledger can record).
    pub header_sha256: [u8; 32],
    /// SHA-256 of the 32-byte HMAC value (what the ledger can record).
    pub header_hmac_sha256: [u8; 32],
    /// The transfers, in order.
    pub entries: Vec<VerifiedFdoEntry>,
    /// SPKI DER of the current owner: the last entry's next owner, or the
    /// manufacturer while there is no entry.
    pub current_owner: Vec<u8>,
}

impl FdoVoucher {
    /// A voucher with no entries, from a header, the HMAC the device
    /// computed over its encoding, and the device certificate chain.
    ///
    /// # Errors
    /// [`Error::FdoChainMismatch`] when the header's chain hash is not the
    /// chain's; [`Error::FdoMalformed`] for a chain out of bounds or a
    /// header out of limits; [`Error::FdoTooLarge`].
    pub fn new(
        header: FdoHeader,
        header_hmac: [u8; 32],
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, Error> {
        header.check()?;
        check_chain(&chain)?;
        if cert_chain_sha256(&chain) != header.cert_chain_sha256 {
            return Err(Error::FdoChainMismatch);
        }
        let header_bytes = header.encode();
        if header_bytes.len() > MAX_HEADER_LEN {
            return Err(too_large(header_bytes.len(), MAX_HEADER_LEN));
        }
        Ok(Self {
            header,
            header_bytes,
            hmac: header_hmac,
            chain,
            entries: Vec::new(),
        })
    }

    /// The header (unverified).
    pub fn header(&self) -> &FdoHeader {
        &self.header
    }

    /// The `OVHeader` bytes (the contents of `OVHeaderTag`).
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// SHA-256 of the `OVHeader` bytes.
    pub fn header_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.header_bytes).into()
    }

    /// The `OVHeaderHMac` value (HMAC-SHA256, 32 bytes).
    pub fn header_hmac(&self) -> &[u8; 32] {
        &self.hmac
    }

    /// SHA-256 of the HMAC value: what the ledger records, since only the
    /// device can check the HMAC itself.
    pub fn header_hmac_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.hmac).into()
    }

    /// `OVDevCertChain`: the device certificate chain, device first.
    pub fn cert_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Number of entries (transfers).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the voucher has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries' payloads, in order (unverified).
    pub fn entry_payloads(&self) -> impl Iterator<Item = &FdoEntryPayload> {
        self.entries.iter().map(|e| &e.payload)
    }

    /// The exact bytes of entry `index` (a tagged COSE_Sign1).
    pub fn entry_bytes(&self, index: usize) -> Option<&[u8]> {
        self.entries.get(index).map(|e| e.bytes.as_slice())
    }

    /// SPKI DER of the current owner (unverified).
    pub fn current_owner(&self) -> &[u8] {
        self.entries
            .last()
            .map_or(self.header.manufacturer_public_key.as_slice(), |e| {
                e.payload.next_owner_public_key.as_slice()
            })
    }

    /// SHA-256 of the encoded voucher.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// `OVEHashPrevEntry` of entry 0: SHA-256 over the `OVHeader` bytes
    /// followed by the encoded `OVHeaderHMac` (`[5, bstr .size 32]`).
    pub fn first_prev_hash(&self) -> [u8; 32] {
        let mut hmac_item = Writer::new();
        write_hash(&mut hmac_item, HMAC_SHA256, &self.hmac);
        let mut hasher = Sha256::new();
        hasher.update(&self.header_bytes);
        hasher.update(hmac_item.finish());
        hasher.finalize().into()
    }

    fn expected_prev_hash(&self) -> [u8; 32] {
        self.entries
            .last()
            .map_or_else(|| self.first_prev_hash(), Entry::hash)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let entries: Vec<&[u8]> = self.entries.iter().map(|e| e.bytes.as_slice()).collect();
        assemble(&self.header_bytes, &self.hmac, &self.chain, &entries)
    }

    /// Strictly decodes a voucher. The result is unverified.
    ///
    /// # Errors
    /// [`Error::FdoTooLarge`] (before parsing), [`Error::FdoVersion`],
    /// [`Error::FdoTooManyEntries`], [`Error::FdoMalformed`] (wrong type,
    /// length, trailing or non-canonical bytes), [`Error::FdoUnsupported`]
    /// (valid FDO that Trustline does not take: RSA or P-384 keys, SHA-384,
    /// COSE keys or certificate chains as keys, an EPID device),
    /// [`Error::NotP256`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_VOUCHER_LEN {
            return Err(too_large(bytes.len(), MAX_VOUCHER_LEN));
        }
        let item = cbor::parse(bytes, "OwnershipVoucher")?;
        let parts = item.array_of(5, "OwnershipVoucher")?;
        let version = parts[0].uint("OVProtVer")?;
        if version != PROTOCOL_VERSION {
            return Err(Error::FdoVersion(version));
        }
        let header_bytes = parts[1].bytes("OVHeaderTag")?.to_vec();
        let header = FdoHeader::decode(&header_bytes)?;
        let hmac = read_hash(&parts[2], HMAC_SHA256, "OVHeaderHMac")?;
        if parts[3].is_null() {
            return Err(Error::FdoUnsupported(
                "OVDevCertChain is null (an Intel EPID device)".to_owned(),
            ));
        }
        let chain: Vec<Vec<u8>> = parts[3]
            .array("OVDevCertChain")?
            .iter()
            .map(|c| c.bytes("OVDevCertChain certificate").map(<[u8]>::to_vec))
            .collect::<Result<_, _>>()?;
        check_chain(&chain)?;
        let raw_entries = parts[4].array("OVEntryArray")?;
        if raw_entries.len() > MAX_ENTRIES {
            return Err(Error::FdoTooManyEntries { max: MAX_ENTRIES });
        }
        let entries = raw_entries
            .iter()
            .enumerate()
            .map(|(i, e)| Entry::parse(e.raw, i))
            .collect::<Result<Vec<_>, _>>()?;
        let voucher = Self {
            header,
            header_bytes,
            hmac,
            chain,
            entries,
        };
        if voucher.encode() != bytes {
            return Err(malformed("OwnershipVoucher is not in canonical form"));
        }
        Ok(voucher)
    }

    /// The PEM form FDO tools read and write: the CBOR voucher in base64
    /// under `-----BEGIN OWNERSHIP VOUCHER-----`.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PEM_LABEL, self.encode()))
    }

    /// Decodes the one `OWNERSHIP VOUCHER` block of a PEM text. Other PEM
    /// blocks (FDO manufacturing tools may store a key beside the voucher)
    /// are ignored, never parsed.
    ///
    /// # Errors
    /// [`Error::FdoPem`] for text that is not PEM or holds no voucher block,
    /// or more than one; then the errors of [`FdoVoucher::decode`].
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        if text.len() > MAX_VOUCHER_LEN * 2 {
            return Err(too_large(text.len(), MAX_VOUCHER_LEN * 2));
        }
        let blocks = pem::parse_many(text).map_err(|e| Error::FdoPem(e.to_string()))?;
        let mut vouchers = blocks.iter().filter(|b| b.tag() == PEM_LABEL);
        let Some(block) = vouchers.next() else {
            return Err(Error::FdoPem(format!("no {PEM_LABEL} block")));
        };
        if vouchers.next().is_some() {
            return Err(Error::FdoPem(format!("more than one {PEM_LABEL} block")));
        }
        Self::decode(block.contents())
    }

    /// Checks the header HMAC with the device secret (only the device, or a
    /// test with a fixed secret, has it).
    ///
    /// # Errors
    /// [`Error::FdoBadHeaderHmac`].
    pub fn verify_header_hmac(&self, secret: &[u8]) -> Result<(), Error> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, &self.header_bytes, &self.hmac).map_err(|_| Error::FdoBadHeaderHmac)
    }

    /// Checks the header and its HMAC against the hashes recorded when the
    /// device computed the HMAC at the factory (the ledger's
    /// `CertifiedPayload.fdo_header_sha256` and `fdo_header_hmac_sha256`).
    ///
    /// # Errors
    /// [`Error::FdoBadHeaderHmac`] when either differs.
    pub fn check_recorded(
        &self,
        header_sha256: &[u8; 32],
        header_hmac_sha256: &[u8; 32],
    ) -> Result<(), Error> {
        if self.header_sha256() != *header_sha256
            || self.header_hmac_sha256() != *header_hmac_sha256
        {
            return Err(Error::FdoBadHeaderHmac);
        }
        Ok(())
    }

    /// Verifies the voucher from `manufacturer_spki`: the header must name
    /// that key and hash this certificate chain; each entry must hash the
    /// entry before it (or the header and HMAC), hash the header info, and
    /// be signed by the owner before it.
    ///
    /// # Errors
    /// [`Error::FdoManufacturerMismatch`], [`Error::FdoChainMismatch`],
    /// then per entry in order: [`Error::FdoHeaderMismatch`],
    /// [`Error::FdoBrokenChain`], [`Error::FdoBadSignature`].
    pub fn verify(&self, manufacturer_spki: &[u8]) -> Result<VerifiedFdoVoucher, Error> {
        if self.header.manufacturer_public_key != manufacturer_spki {
            return Err(Error::FdoManufacturerMismatch);
        }
        if cert_chain_sha256(&self.chain) != self.header.cert_chain_sha256 {
            return Err(Error::FdoChainMismatch);
        }
        let info_hash = self.header.header_info_hash();
        let mut prev = self.first_prev_hash();
        let mut owner = self.header.manufacturer_public_key.clone();
        let mut entries = Vec::with_capacity(self.entries.len());
        for (index, entry) in self.entries.iter().enumerate() {
            check_entry(entry, index, &prev, &info_hash, &owner)?;
            let entry_sha256 = entry.hash();
            entries.push(VerifiedFdoEntry {
                signer_public_key: owner,
                next_owner_public_key: entry.payload.next_owner_public_key.clone(),
                entry_sha256,
                extra: entry.payload.extra_map()?,
            });
            prev = entry_sha256;
            owner = entry.payload.next_owner_public_key.clone();
        }
        Ok(VerifiedFdoVoucher {
            header: self.header.clone(),
            header_sha256: self.header_sha256(),
            header_hmac_sha256: self.header_hmac_sha256(),
            entries,
            current_owner: owner,
        })
    }

    /// The payload of the next entry, naming `next_owner_spki`, for the
    /// current owner to [`sign_entry`]. `extra` is an encoded `OVEExtraInfo`
    /// (see [`encode_extra`]) or `None`.
    ///
    /// # Errors
    /// [`Error::NotP256`], [`Error::FdoTooManyEntries`],
    /// [`Error::FdoMalformed`] (an `extra` that is not an `OVEExtraInfo`).
    pub fn next_entry_payload(
        &self,
        next_owner_spki: &[u8],
        extra: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Error> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(Error::FdoTooManyEntries { max: MAX_ENTRIES });
        }
        parse_p256_spki(next_owner_spki)?;
        if let Some(extra) = &extra {
            decode_extra(extra)?;
        }
        let payload = FdoEntryPayload {
            prev_hash: self.expected_prev_hash(),
            header_info_hash: self.header.header_info_hash(),
            extra,
            next_owner_public_key: next_owner_spki.to_vec(),
        }
        .encode();
        if payload.len() > MAX_ENTRY_LEN - 128 {
            return Err(too_large(payload.len(), MAX_ENTRY_LEN - 128));
        }
        Ok(payload)
    }

    /// Appends an entry signed elsewhere after checking that it continues
    /// this voucher and is signed by its current owner. Returns its payload.
    ///
    /// # Errors
    /// [`Error::FdoTooManyEntries`], the errors of decoding an entry, and
    /// the entry errors of [`FdoVoucher::verify`].
    pub fn push_entry(&mut self, cose_bytes: &[u8]) -> Result<&FdoEntryPayload, Error> {
        let index = self.entries.len();
        if index >= MAX_ENTRIES {
            return Err(Error::FdoTooManyEntries { max: MAX_ENTRIES });
        }
        let entry = Entry::parse(cose_bytes, index)?;
        check_entry(
            &entry,
            index,
            &self.expected_prev_hash(),
            &self.header.header_info_hash(),
            self.current_owner(),
        )?;
        self.entries.push(entry);
        Ok(&self.entries[index].payload)
    }

    /// The current owner transfers the device to `next_owner_spki`: signs a
    /// new last entry (2.4.14.7). Earlier entries are not re-verified:
    /// [`FdoVoucher::verify`] a voucher received from elsewhere first.
    ///
    /// # Errors
    /// [`Error::FdoNotCurrentOwner`]; the errors of
    /// [`FdoVoucher::next_entry_payload`]; [`Error::Signer`].
    pub fn extend(
        &mut self,
        current_owner: &dyn Signer,
        next_owner_spki: &[u8],
        extra: Option<Vec<u8>>,
    ) -> Result<&FdoEntryPayload, Error> {
        if current_owner.public_key_der() != self.current_owner() {
            return Err(Error::FdoNotCurrentOwner);
        }
        let payload = self.next_entry_payload(next_owner_spki, extra)?;
        let cose = sign_entry(&payload, current_owner)?;
        self.push_entry(&cose)
    }
}

fn check_chain(chain: &[Vec<u8>]) -> Result<(), Error> {
    if chain.is_empty() || chain.len() > MAX_CHAIN_LEN {
        return Err(malformed(format!(
            "OVDevCertChain must hold 1 to {MAX_CHAIN_LEN} certificates"
        )));
    }
    if let Some(cert) = chain
        .iter()
        .find(|c| c.is_empty() || c.len() > MAX_CERT_LEN)
    {
        return Err(malformed(format!(
            "a certificate of {} bytes is outside 1 to {MAX_CERT_LEN}",
            cert.len()
        )));
    }
    Ok(())
}

fn check_entry(
    entry: &Entry,
    index: usize,
    prev_hash: &[u8; 32],
    info_hash: &[u8; 32],
    signer_spki: &[u8],
) -> Result<(), Error> {
    if entry.payload.header_info_hash != *info_hash {
        return Err(Error::FdoHeaderMismatch { entry: index });
    }
    if entry.payload.prev_hash != *prev_hash {
        return Err(Error::FdoBrokenChain { entry: index });
    }
    if !entry.verifies_under(signer_spki) {
        return Err(Error::FdoBadSignature { entry: index });
    }
    Ok(())
}
