//! A device's ownership state, derived from the custody ledger alone.
//!
//! The ledger is the only store: a [`DeviceRecord`] is rebuilt from the
//! device's `CERTIFIED` entry (certificate, device key, order; and the
//! first transfer on ledgers written before issue 12 item 1, when a station
//! could name a first owner at certification), its `SCRAPPED` entry if
//! any, and its field events. Field events — `OWNERSHIP_TRANSFERRED`,
//! `ONBOARDED`, `DECOMMISSIONED`, `RECOMMISSIONED`, `RETIRED` — are found
//! through the unique key `device-field` → `rot_id/n`, which the *n*-th such
//! event of the device holds. Every state-changing append claims the next
//! `n`, so two requests decided on the same state cannot both be recorded
//! (optimistic concurrency through the ledger's atomic unique keys: correct
//! across restarts and across several provisioner instances). Lookups by
//! key see an entry as soon as its append is acknowledged, without waiting
//! for a checkpoint.
//!
//! Entries never change, so a record read once is a valid prefix forever:
//! the cache (a [`BoundedCache`]) keeps it and later reads only probe for
//! newer events; an evicted record is read again. The cache holds what the
//! ledger holds — owner commitments, never owner keys.

use backends::keys;
pub(crate) use backends::keys::unique;
use backends::{BoundedCache, LedgerApi};
use prost::Message;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};

/// Where a certified device is in its field life (2.4.16.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldState {
    /// Certified, never onboarded.
    Certified,
    /// Onboarded (or recommissioned) and serving its owner.
    InService,
    /// Taken out of service after a user reset; waits for a new owner.
    Decommissioned,
    /// End of life: final, certificate revoked.
    Retired,
}

impl FieldState {
    /// The state's lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldState::Certified => "certified and not yet onboarded",
            FieldState::InService => "in service",
            FieldState::Decommissioned => "decommissioned",
            FieldState::Retired => "retired",
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> v1::DeviceLifecycle {
        match self {
            FieldState::Certified => v1::DeviceLifecycle::Personalised,
            FieldState::InService => v1::DeviceLifecycle::InService,
            FieldState::Decommissioned => v1::DeviceLifecycle::Decommissioned,
            FieldState::Retired => v1::DeviceLifecycle::Retired,
        }
    }
}

/// One recorded transfer: the ledger's view of one voucher entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The entry that recorded it (`OWNERSHIP_TRANSFERRED`; `CERTIFIED` for
    /// a first owner named at certification on a ledger written before
    /// issue 12 item 1).
    pub seq: u64,
    /// The salted owner commitment.
    pub commitment: Vec<u8>,
    /// SHA-256 of the voucher entry's COSE bytes.
    pub entry_sha256: Vec<u8>,
    /// The entry sealed under the OEM seal key, for an entry the OEM
    /// signed and recorded with its seal (issue 12 item 10); else empty.
    pub sealed_entry: Vec<u8>,
}

/// What the ledger says about one certified device.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// The device.
    pub rot_id: String,
    /// Its product serial.
    pub serial: String,
    /// The production order it was certified under.
    pub order_id: String,
    /// The `CERTIFIED` entry.
    pub certified_seq: u64,
    /// The device certificate, DER.
    pub certificate: Vec<u8>,
    /// The certified device identity key, SPKI DER.
    pub device_public_key: Vec<u8>,
    /// SHA-256 of the device's FDO 1.1 `OVHeader`, for a device certified
    /// under an order with an FDO block (issue 17); else empty.
    pub fdo_header_sha256: Vec<u8>,
    /// The `SCRAPPED` entry, if the device was scrapped.
    pub scrapped: Option<u64>,
    /// The transfers, by voucher entry index.
    pub transfers: Vec<Transfer>,
    /// The field state.
    pub state: FieldState,
    /// The entry that put the device in its state (`None` while certified).
    pub state_seq: Option<u64>,
    /// When the state was entered (Unix ms; certification time while
    /// certified).
    pub state_time_ms: i64,
    /// Field events recorded: the next event claims `device-field` `n`.
    pub field_events: u64,
    /// The highest reset counter a recorded reset proof reported.
    pub last_reset_counter: u64,
}

impl DeviceRecord {
    /// Whether a transfer was recorded after the device's decommissioning
    /// (so a recommission is for a new owner).
    pub fn transferred_since_state_change(&self) -> bool {
        match (self.transfers.last(), self.state_seq) {
            (Some(t), Some(state_seq)) => t.seq > state_seq,
            _ => false,
        }
    }

    /// The current owner's commitment, if the device has an owner.
    pub fn owner_commitment(&self) -> Option<&[u8]> {
        self.transfers.last().map(|t| t.commitment.as_slice())
    }

    fn apply(&mut self, n: u64, seq: u64, entry: &v1::LedgerEntry) -> Result<()> {
        let corrupt = |reason: String| Error::CorruptEntry { seq, reason };
        if entry.rot_id != self.rot_id {
            return Err(corrupt(format!(
                "device-field {n} of {} names rot {}",
                self.rot_id, entry.rot_id
            )));
        }
        let kind = EventKind::try_from(entry.kind)
            .map_err(|_| corrupt(format!("unknown kind {}", entry.kind)))?;
        match kind {
            EventKind::OwnershipTransferred => {
                let p = v1::OwnershipPayload::decode(entry.payload.as_slice())
                    .map_err(|e| corrupt(e.to_string()))?;
                if p.voucher_entry_index as usize != self.transfers.len() {
                    return Err(corrupt(format!(
                        "transfer {} recorded after {} transfers",
                        p.voucher_entry_index,
                        self.transfers.len()
                    )));
                }
                self.transfers.push(Transfer {
                    seq,
                    commitment: p.owner_commitment,
                    entry_sha256: p.voucher_entry_sha256,
                    sealed_entry: p.sealed_entry,
                });
            }
            EventKind::Onboarded
            | EventKind::Decommissioned
            | EventKind::Recommissioned
            | EventKind::Retired => {
                let p = v1::LifecyclePayload::decode(entry.payload.as_slice())
                    .map_err(|e| corrupt(e.to_string()))?;
                if let Some(proof) = &p.device_proof {
                    if let Ok(reset) =
                        trustline_proto::statement::decode_unverified::<v1::ResetProof>(proof)
                    {
                        self.last_reset_counter = self.last_reset_counter.max(reset.reset_counter);
                    }
                }
                self.state = match kind {
                    EventKind::Onboarded | EventKind::Recommissioned => FieldState::InService,
                    EventKind::Decommissioned => FieldState::Decommissioned,
                    _ => FieldState::Retired,
                };
                self.state_seq = Some(seq);
                self.state_time_ms = entry.time_ms;
            }
            other => return Err(corrupt(format!("device-field {n} holds a {other:?} entry"))),
        }
        self.field_events = n + 1;
        Ok(())
    }
}

/// The unique key of a device's `n`-th field event.
pub fn field_key(rot_id: &str, n: u64) -> v1::UniqueKey {
    unique(keys::DEVICE_FIELD, format!("{rot_id}/{n}").into_bytes())
}

/// The unique key of a device's voucher entry `index`.
pub fn voucher_entry_key(rot_id: &str, index: usize) -> v1::UniqueKey {
    unique(
        keys::VOUCHER_ENTRY,
        format!("{rot_id}/{index}").into_bytes(),
    )
}

/// Device records read so far (each a prefix of the ledger's truth).
#[derive(Debug)]
pub struct DeviceCache {
    records: BoundedCache<String, DeviceRecord>,
}

impl DeviceCache {
    /// A cache of at most `max` devices (every record can be read again
    /// from the ledger).
    pub fn new(max: usize) -> Self {
        Self {
            records: BoundedCache::new(max),
        }
    }

    /// The device's current record, or `None` when it was never certified.
    ///
    /// # Errors
    /// [`Error::Backend`] when the ledger fails; [`Error::CorruptEntry`]
    /// when an entry does not decode as its kind promises.
    pub async fn load(&self, ledger: &dyn LedgerApi, rot_id: &str) -> Result<Option<DeviceRecord>> {
        let cached = self.records.get(rot_id);
        let mut record = match cached {
            Some(r) => r,
            None => match read_certified(ledger, rot_id).await? {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        if record.scrapped.is_none() {
            record.scrapped =
                lookup(ledger, unique(keys::SCRAPPED, rot_id.as_bytes().to_vec())).await?;
        }
        loop {
            let n = record.field_events;
            let Some(seq) = lookup(ledger, field_key(rot_id, n)).await? else {
                break;
            };
            let entry = read_entry(ledger, seq).await?;
            record.apply(n, seq, &entry)?;
        }
        // Another request may have cached a longer prefix meanwhile: keep it.
        self.records
            .insert_unless(rot_id.to_owned(), record.clone(), |cached| {
                cached.field_events > record.field_events
            });
        Ok(Some(record))
    }
}

async fn read_certified(ledger: &dyn LedgerApi, rot_id: &str) -> Result<Option<DeviceRecord>> {
    let Some(seq) = lookup(ledger, unique(keys::ROT, rot_id.as_bytes().to_vec())).await? else {
        return Ok(None);
    };
    let entry = read_entry(ledger, seq).await?;
    let corrupt = |reason: String| Error::CorruptEntry { seq, reason };
    if entry.kind != EventKind::Certified as i32 || entry.rot_id != rot_id {
        return Err(corrupt(format!(
            "the rot key of {rot_id} does not lead to its certification"
        )));
    }
    let payload = v1::CertifiedPayload::decode(entry.payload.as_slice())
        .map_err(|e| corrupt(e.to_string()))?;
    let transfers = payload
        .first_owner
        .map(|first| Transfer {
            seq,
            commitment: first.owner_commitment,
            entry_sha256: first.voucher_entry_sha256,
            sealed_entry: first.sealed_entry,
        })
        .into_iter()
        .collect();
    Ok(Some(DeviceRecord {
        rot_id: rot_id.to_owned(),
        serial: entry.serial,
        order_id: entry.order_id,
        certified_seq: seq,
        certificate: payload.certificate,
        device_public_key: payload.device_public_key,
        fdo_header_sha256: payload.fdo_header_sha256,
        scrapped: None,
        transfers,
        state: FieldState::Certified,
        state_seq: None,
        state_time_ms: entry.time_ms,
        field_events: 0,
        last_reset_counter: 0,
    }))
}

/// The entry holding `key`, if any.
pub(crate) async fn lookup(ledger: &dyn LedgerApi, key: v1::UniqueKey) -> Result<Option<u64>> {
    ledger.lookup_key(key).await.map_err(Error::ledger)
}

/// One stored entry, decoded.
pub(crate) async fn read_entry(ledger: &dyn LedgerApi, seq: u64) -> Result<v1::LedgerEntry> {
    let bytes = ledger.get_entry(seq).await.map_err(Error::ledger)?;
    v1::LedgerEntry::decode(bytes.as_slice()).map_err(|e| Error::CorruptEntry {
        seq,
        reason: e.to_string(),
    })
}
