//! The parts of an FDO 1.1 voucher that are signed or hashed: `OVHeader`,
//! `OVEntryPayload` and its `OVEExtra`, FDO's `Hash` and `PublicKey`
//! structures, the certificate chain hash and the header HMAC.

use std::collections::BTreeMap;

use ring::hmac;
use sha2::{Digest, Sha256};

use super::cbor::{self, malformed, Item, Writer};
use super::cose;
use super::rendezvous::RendezvousInfo;
use super::{
    GUID_LEN, HASH_SHA256, MAX_DEVICE_INFO_LEN, MAX_ENTRY_LEN, MAX_HEADER_LEN, PK_ENC_X509,
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

pub(super) fn decode_extra(bytes: &[u8]) -> Result<BTreeMap<i64, Vec<u8>>, Error> {
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

pub(super) fn write_hash(w: &mut Writer, hash_type: i64, value: &[u8]) {
    w.array(2).int(hash_type).bytes(value);
}

pub(super) fn read_hash(
    item: &Item<'_>,
    expected_type: i64,
    what: &str,
) -> Result<[u8; 32], Error> {
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

pub(super) fn too_large(len: usize, max: usize) -> Error {
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
    pub(super) fn check(&self) -> Result<(), Error> {
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
