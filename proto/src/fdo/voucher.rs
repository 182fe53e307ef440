//! The FDO 1.1 ownership voucher itself: decoding, encoding, PEM,
//! verification and extension. Its signed parts are in [`super::header`];
//! the format and every hash are described in [`super`] and in
//! `docs/fdo-vouchers.md`.

use std::collections::BTreeMap;

use ring::hmac;
use sha2::{Digest, Sha256};

use super::cbor::{self, malformed, Writer};
use super::cose;
use super::header::{
    cert_chain_sha256, decode_extra, read_hash, sign_entry, too_large, write_hash, FdoEntryPayload,
    FdoHeader,
};
use super::{
    HMAC_SHA256, MAX_CERT_LEN, MAX_CHAIN_LEN, MAX_ENTRIES, MAX_ENTRY_LEN, MAX_HEADER_LEN,
    MAX_VOUCHER_LEN, PEM_LABEL, PROTOCOL_VERSION, TRUSTLINE_ENTRY_EXTRA,
};
use crate::signer::Signer;
use crate::statement::parse_p256_spki;
use crate::Error;

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

    /// Whether entry `index`'s signature verifies under `spki` (its
    /// payload unchecked): tells an entry signed by a key that is not the
    /// owner before it (a former owner, the manufacturer) from one that was
    /// altered, once [`FdoVoucher::verify`] refused its signature.
    pub fn entry_signed_by(&self, index: usize, spki: &[u8]) -> bool {
        self.entries
            .get(index)
            .is_some_and(|e| e.verifies_under(spki))
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
    /// under `-----BEGIN OWNERSHIP VOUCHER-----`, 64 characters a line, LF.
    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new(PEM_LABEL, self.encode()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
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
