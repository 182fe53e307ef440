//! The voucher itself: building, encoding and strictly decoding it,
//! extending it to the next owner, binding it to the device, and walking
//! its chain of owners from the manufacturer key ([`Voucher::verify`]).

use ciborium::value::Value;
use coset::CoseSign1;
use sha2::{Digest, Sha256};

use super::cbor::*;
use super::cose::*;
use super::entry::*;
use super::*;
use crate::signer::Signer;
use crate::Error;

/// An ownership voucher as decoded or built: **not verified**. Call
/// [`Voucher::verify`] before trusting anything it says.
#[derive(Clone, Debug)]
pub struct Voucher {
    pub(super) header: VoucherHeader,
    pub(super) header_bytes: Vec<u8>,
    pub(super) binding: Option<(Vec<u8>, CoseSign1, [u8; 32])>,
    pub(super) entries: Vec<Entry>,
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

    /// The manufacturer voucher (no entries) of a certified device: the
    /// header names `rot_id`, `serial`, the hash of `chain` (device
    /// certificate first) and `manufacturer_key`, and its guid is derived
    /// from the device certificate (whose 128-bit serial is random) rather
    /// than drawn, so the voucher is a pure function of the certification
    /// and can be rebuilt exactly from the ledger's `CERTIFIED` entry.
    ///
    /// # Errors
    /// [`Error::VoucherMalformed`] for an empty chain; as
    /// [`VoucherHeader::new`] for a malformed rot_id, serial or key.
    pub fn manufacturer(
        rot_id: &str,
        serial: &str,
        chain: &[&[u8]],
        manufacturer_key: &[u8],
    ) -> Result<Self, Error> {
        let certificate = chain
            .first()
            .ok_or_else(|| malformed("empty certificate chain"))?;
        let mut header =
            VoucherHeader::new(rot_id, serial, cert_chain_hash(chain), manufacturer_key)?;
        let digest = Sha256::new()
            .chain_update(GUID_DOMAIN)
            .chain_update(certificate)
            .finalize();
        header.guid.copy_from_slice(&digest[..GUID_LEN]);
        Ok(Self::new(header))
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
        if !same_key(current_owner.public_key_der(), self.current_owner()) {
            return Err(Error::VoucherNotCurrentOwner);
        }
        let payload = self.next_entry_payload(next_owner_spki)?;
        let cose = sign_entry(&payload, current_owner)?;
        self.push_entry(&cose)
    }

    /// Walks the chain from `manufacturer_spki`: the header must name that
    /// key (in either encoding), and each entry must hash the header and its predecessor and be
    /// signed by the owner before it.
    ///
    /// # Errors
    /// [`Error::VoucherManufacturerMismatch`], then per entry, in order:
    /// [`Error::VoucherHeaderMismatch`] (altered header),
    /// [`Error::VoucherBrokenChain`] (reordered, removed or inserted entry),
    /// [`Error::VoucherWrongSigner`] (signed by someone other than the
    /// owner), [`Error::VoucherBadSignature`] (forged or altered entry).
    pub fn verify(&self, manufacturer_spki: &[u8]) -> Result<VerifiedVoucher, Error> {
        if !same_key(&self.header.manufacturer_public_key, manufacturer_spki) {
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
