//! What an appender hands the ledger and what it gets back: a draft entry,
//! its unique keys and quota, and the appended entry's exact bytes.
//!
//! The ledger fills `seq`, `time_ms`, `prev_hash` and `device_prev` and
//! stores the resulting `trustline.v1.LedgerEntry` as its exact encoded
//! bytes; everything that hashes or verifies an entry works on those bytes
//! (2.4.14.12: every entry carries the device's `rot_id`).

use std::fmt;

use prost::Message;
use trustline_proto::v1;

use crate::error::{Error, Result};
use crate::merkle::Hash;

pub use trustline_proto::v1::EventKind;

/// Largest encoded entry, in bytes. Entries carry certificates, statements
/// and attestation evidence of a few kilobytes; a megabyte is far beyond any
/// legitimate one and bounds what a reader must buffer.
pub const MAX_ENTRY_LEN: usize = 1 << 20;
/// Most unique keys one append may declare.
pub const MAX_UNIQUE_KEYS: usize = 16;
/// Longest unique-key namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest unique-key value, in bytes.
pub const MAX_KEY_VALUE_LEN: usize = 1024;
/// Longest quota counter name, in bytes.
pub const MAX_COUNTER_LEN: usize = 255;
/// Longest text field of a draft (serial, site, actor, order id), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;

/// The parts of an entry the appender chooses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// What happened.
    pub kind: EventKind,
    /// The device, or empty for entries about orders (2.4.14.12).
    pub rot_id: String,
    /// The product serial, if any.
    pub serial: String,
    /// The factory site.
    pub site: String,
    /// The authenticated caller that caused the entry; never an owner
    /// identity (2.4.16.3).
    pub actor: String,
    /// The production order, if any (2.4.14.22).
    pub order_id: String,
    /// The encoded payload message for this kind.
    pub payload: Vec<u8>,
}

impl Draft {
    /// A draft of `kind` with every other field empty.
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// Checks sizes and shapes before anything is queued (every engine
    /// calls it before placing the draft).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.kind == EventKind::Unspecified {
            return Err(Error::InvalidArgument("event kind is unspecified".into()));
        }
        if !self.rot_id.is_empty()
            && !trustline_proto::identity::is_well_formed_rot_id(&self.rot_id)
        {
            return Err(Error::InvalidArgument(
                "rot_id must be 64 lowercase hex characters".into(),
            ));
        }
        for (name, value) in [
            ("serial", &self.serial),
            ("site", &self.site),
            ("actor", &self.actor),
            ("order_id", &self.order_id),
        ] {
            if value.len() > MAX_TEXT_LEN {
                return Err(Error::InvalidArgument(format!(
                    "{name} is longer than {MAX_TEXT_LEN} bytes"
                )));
            }
        }
        Ok(())
    }

    /// The full entry once the ledger has placed it, with its constraints:
    /// the exact bytes an engine stores.
    pub fn place(
        &self,
        seq: u64,
        time_ms: i64,
        prev_hash: &Hash,
        device_prev: Option<&Hash>,
        constraints: &Constraints,
    ) -> Vec<u8> {
        v1::LedgerEntry {
            seq,
            time_ms,
            kind: self.kind as i32,
            rot_id: self.rot_id.clone(),
            serial: self.serial.clone(),
            site: self.site.clone(),
            actor: self.actor.clone(),
            order_id: self.order_id.clone(),
            payload: self.payload.clone(),
            prev_hash: prev_hash.to_vec(),
            device_prev: device_prev.map(|h| h.to_vec()).unwrap_or_default(),
            unique_keys: constraints
                .unique_keys
                .iter()
                .map(|k| v1::UniqueKey {
                    namespace: k.namespace.clone(),
                    value: k.value.clone(),
                })
                .collect(),
            quota: constraints.quota.as_ref().map(|q| v1::QuotaUse {
                counter: q.counter.clone(),
                limit: q.limit,
            }),
        }
        .encode_to_vec()
    }
}

/// The checks one stored entry must pass on its own, whoever reads it back:
/// it decodes as a `LedgerEntry` whose encoding is canonical (re-encoding
/// gives the same bytes, so the hashed bytes have one meaning), it carries
/// the expected `seq`, a known event kind, an empty or well-formed `rot_id`
/// (2.4.14.12) and no unique key twice (2.4.14.4).
///
/// The offline verifier ([`crate::verify`]) and the live ledger on open
/// (replay and self-check) both call this one function, so the ledger never
/// serves an entry that `trustline ledger verify` refuses. Checks that need
/// the entries before this one (chain, device chain, held keys, quotas) are
/// made by each caller against its own state.
///
/// # Errors
/// What is wrong, in words; the caller adds where.
pub fn check_stored(seq: u64, bytes: &[u8]) -> std::result::Result<v1::LedgerEntry, String> {
    let e = v1::LedgerEntry::decode(bytes).map_err(|err| format!("not a LedgerEntry: {err}"))?;
    if e.encoded_len() != bytes.len() || e.encode_to_vec() != bytes {
        return Err("the entry is not canonically encoded".into());
    }
    if e.seq != seq {
        return Err(format!("the entry says seq {}", e.seq));
    }
    match EventKind::try_from(e.kind) {
        Ok(EventKind::Unspecified) | Err(_) => {
            return Err(format!("unknown event kind {}", e.kind));
        }
        Ok(_) => {}
    }
    if !e.rot_id.is_empty() && !trustline_proto::identity::is_well_formed_rot_id(&e.rot_id) {
        return Err("rot_id is malformed".into());
    }
    for (i, k) in e.unique_keys.iter().enumerate() {
        if e.unique_keys[..i].contains(k) {
            let key = UniqueKey::new(k.namespace.clone(), k.value.clone());
            return Err(format!("unique key {key} is declared twice"));
        }
    }
    Ok(e)
}

/// A key that at most one entry may ever hold, e.g. `("serial", "SN-0001")`
/// (invariant 2, 2.4.14.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueKey {
    /// What kind of key: "serial", "rot_id", "device_key", "claim".
    pub namespace: String,
    /// The key itself.
    pub value: Vec<u8>,
}

impl UniqueKey {
    /// A key in `namespace`.
    pub fn new(namespace: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            namespace: namespace.into(),
            value: value.into(),
        }
    }

    /// Checks the namespace and value sizes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        if self.namespace.is_empty() || self.namespace.len() > MAX_NAMESPACE_LEN {
            return Err(Error::InvalidArgument(format!(
                "unique-key namespace must be 1 to {MAX_NAMESPACE_LEN} bytes"
            )));
        }
        if self.value.is_empty() || self.value.len() > MAX_KEY_VALUE_LEN {
            return Err(Error::InvalidArgument(format!(
                "unique-key value must be 1 to {MAX_KEY_VALUE_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// The key as the live index stores it: the first 16 bytes of
    /// SHA-256 of [`UniqueKey::encoded`]. Short, fixed-size keys keep the
    /// index and the overlay small; two keys colliding (about 2^-64 at
    /// 2^32 keys) could only refuse an append as a false duplicate, never
    /// admit a real one (invariant 2 fails safe).
    pub(crate) fn index_key(&self) -> crate::index::KeyHash {
        use sha2::{Digest, Sha256};
        let mut out = [0u8; 16];
        out.copy_from_slice(&Sha256::digest(self.encoded())[..16]);
        out
    }

    /// The canonical form: `len(namespace) as u8 ‖ namespace ‖ value`.
    pub(crate) fn encoded(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.namespace.len() + self.value.len());
        // validate() bounds the namespace to 64 bytes.
        out.push(self.namespace.len() as u8);
        out.extend_from_slice(self.namespace.as_bytes());
        out.extend_from_slice(&self.value);
        out
    }
}

impl fmt::Display for UniqueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.value) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "{}:{s}", self.namespace),
            _ => write!(f, "{}:0x{}", self.namespace, hex::encode(&self.value)),
        }
    }
}

/// Counts the entry against `counter`; refused when `limit` entries already
/// count against it (invariant 4, 2.4.14.22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUse {
    /// The counter, e.g. "order/PO-1/certified".
    pub counter: String,
    /// The most entries that may count against it.
    pub limit: u64,
}

impl QuotaUse {
    /// A use of `counter` bounded by `limit`.
    pub fn new(counter: impl Into<String>, limit: u64) -> Self {
        Self {
            counter: counter.into(),
            limit,
        }
    }
}

/// The constraints an append declared. The ledger copies them into the
/// entry (`LedgerEntry.unique_keys`, `LedgerEntry.quota`), so they are
/// hashed, chained and signed with it and an offline verifier recomputes
/// uniqueness and quotas from signed data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// Keys the entry takes.
    pub unique_keys: Vec<UniqueKey>,
    /// The quota it counts against.
    pub quota: Option<QuotaUse>,
}

impl Constraints {
    /// The constraints recorded in a decoded entry.
    pub fn of_entry(entry: &v1::LedgerEntry) -> Self {
        Self {
            unique_keys: entry
                .unique_keys
                .iter()
                .map(|k| UniqueKey {
                    namespace: k.namespace.clone(),
                    value: k.value.clone(),
                })
                .collect(),
            quota: entry.quota.as_ref().map(|q| QuotaUse {
                counter: q.counter.clone(),
                limit: q.limit,
            }),
        }
    }

    /// Checks sizes, and that no key is declared twice.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        if self.unique_keys.len() > MAX_UNIQUE_KEYS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_UNIQUE_KEYS} unique keys per entry"
            )));
        }
        for (i, key) in self.unique_keys.iter().enumerate() {
            key.validate()?;
            if self.unique_keys[..i].contains(key) {
                return Err(Error::InvalidArgument(format!(
                    "unique key {key} is declared twice"
                )));
            }
        }
        if let Some(q) = &self.quota {
            if q.counter.is_empty() || q.counter.len() > MAX_COUNTER_LEN {
                return Err(Error::InvalidArgument(format!(
                    "quota counter must be 1 to {MAX_COUNTER_LEN} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// An acknowledged, durable entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number (its leaf index in the Merkle tree).
    pub seq: u64,
    /// The exact stored bytes of the `LedgerEntry`.
    pub entry: Vec<u8>,
    /// `SHA-256(0x00 ‖ entry)`.
    pub leaf_hash: Hash,
}

/// One stored entry, by sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its sequence number.
    pub seq: u64,
    /// The exact stored bytes of the `LedgerEntry`.
    pub entry: Vec<u8>,
}
