//! Entries in exactly the payload formats, unique keys and quota counters
//! the factory line writes ([`Append`]), and synthetic production orders.

use custody_ledger::{Draft, EventKind, Ledger, QuotaUse, UniqueKey};
use prost::Message;
use sha2::{Digest, Sha256};
use trustline_proto::v1;

use crate::error::Result;
use backends::keys;
use provisioner::{label, orders};

use super::*;

/// One append: the draft and the constraints the line would declare.
#[derive(Debug, Clone)]
pub struct Append {
    /// The entry.
    pub draft: Draft,
    /// Its unique keys.
    pub keys: Vec<UniqueKey>,
    /// Its quota use.
    pub quota: Option<QuotaUse>,
}

impl Append {
    /// The same entry without any constraint: what a writer that bypasses
    /// the line's checks would append.
    #[must_use]
    pub fn forced(mut self) -> Self {
        self.keys.clear();
        self.quota = None;
        self
    }

    /// Appends it and waits until it is durable.
    ///
    /// # Errors
    /// [`Error::Config`] with the ledger's refusal.
    pub fn append_blocking(self, ledger: &Ledger) -> Result<u64> {
        ledger
            .append_blocking(self.draft, self.keys, self.quota)
            .map(|a| a.seq)
            .map_err(|e| synth_err("append", e))
    }

    /// Appends it from async code.
    ///
    /// # Errors
    /// [`Error::Config`] with the ledger's refusal.
    pub async fn append(self, ledger: &Ledger) -> Result<u64> {
        ledger
            .append(self.draft, self.keys, self.quota)
            .await
            .map(|a| a.seq)
            .map_err(|e| synth_err("append", e))
    }
}

pub(super) fn draft(
    kind: EventKind,
    rot_id: &str,
    serial: &str,
    site: &str,
    actor: &str,
    order_id: &str,
    payload: &impl Message,
) -> Draft {
    Draft {
        kind,
        rot_id: rot_id.to_owned(),
        serial: serial.to_owned(),
        site: site.to_owned(),
        actor: actor.to_owned(),
        order_id: order_id.to_owned(),
        payload: payload.encode_to_vec(),
    }
}

/// `ORDER_OPENED` for a signed order.
pub fn order_opened(order: &v1::ProductionOrder, signed: v1::SignedStatement) -> Append {
    let payload = v1::OrderOpenedPayload {
        signed_order: Some(signed),
    };
    Append {
        draft: draft(
            EventKind::OrderOpened,
            "",
            "",
            &order.site,
            OEM_ACTOR,
            &order.order_id,
            &payload,
        ),
        keys: vec![UniqueKey::new(
            keys::ORDER,
            order.order_id.as_bytes().to_vec(),
        )],
        quota: None,
    }
}

/// `CLAIMED` of a device under an order, by a station.
pub fn claimed(order: &v1::ProductionOrder, device: &SyntheticDevice, station: &str) -> Append {
    let payload = v1::ClaimedPayload {
        receipt: None,
        attestation_chain: Vec::new(),
        ic_vendor: "synthetic".into(),
        transport_key: None,
    };
    Append {
        draft: draft(
            EventKind::Claimed,
            &device.rot_id,
            "",
            &order.site,
            station,
            &order.order_id,
            &payload,
        ),
        keys: vec![UniqueKey::new(
            keys::CLAIM,
            device.rot_id.as_bytes().to_vec(),
        )],
        quota: None,
    }
}

/// `CERTIFIED` of a device with its certificate, at `site` (normally the
/// order's), with the line's unique keys and the order's quota counter.
pub fn certified(
    order: &v1::ProductionOrder,
    device: &SyntheticDevice,
    certificate: Vec<u8>,
    site: &str,
    station: &str,
) -> Append {
    let spki = device.spki.clone();
    let payload = v1::CertifiedPayload {
        certificate,
        device_public_key: spki.clone(),
        mode: v1::PersonalisationMode::OnDevice as i32,
        key_attestation: None,
        label: label::label(&device.rot_id, &order.sku).unwrap_or_default(),
        voucher_sha256: Vec::new(),
        first_owner: None,
        ..Default::default()
    };
    Append {
        draft: draft(
            EventKind::Certified,
            &device.rot_id,
            &device.serial,
            site,
            station,
            &order.order_id,
            &payload,
        ),
        keys: vec![
            UniqueKey::new(keys::SERIAL, device.serial.as_bytes().to_vec()),
            UniqueKey::new(keys::ROT, device.rot_id.as_bytes().to_vec()),
            UniqueKey::new(keys::DEVICE_KEY, Sha256::digest(&spki).to_vec()),
        ],
        quota: Some(QuotaUse::new(
            orders::quota_counter(&order.order_id),
            order.quantity,
        )),
    }
}

/// `SHIPPED`, `RECEIVED` or `SCRAPPED` of a device.
pub fn custody(
    kind: EventKind,
    order: &v1::ProductionOrder,
    device: &SyntheticDevice,
    station: &str,
    note: &str,
) -> Append {
    let payload = v1::CustodyPayload {
        note: note.to_owned(),
    };
    let keys = if kind == EventKind::Scrapped {
        vec![UniqueKey::new(
            keys::SCRAPPED,
            device.rot_id.as_bytes().to_vec(),
        )]
    } else {
        Vec::new()
    };
    Append {
        draft: draft(
            kind,
            &device.rot_id,
            &device.serial,
            &order.site,
            station,
            &order.order_id,
            &payload,
        ),
        keys,
        quota: None,
    }
}

/// A recorded refusal (`DUPLICATE_REJECTED`, `COUNTERFEIT_REJECTED`,
/// `QUOTA_REJECTED`), no constraints.
pub fn rejected(
    kind: EventKind,
    order: &v1::ProductionOrder,
    rot_id: &str,
    serial: &str,
    station: &str,
    operation: &str,
    reason: &str,
) -> Append {
    let payload = v1::RejectedPayload {
        operation: operation.to_owned(),
        reason: reason.to_owned(),
        key: None,
        holder_seq: 0,
        evidence: Vec::new(),
    };
    Append {
        draft: draft(
            kind,
            rot_id,
            serial,
            &order.site,
            station,
            &order.order_id,
            &payload,
        ),
        keys: Vec::new(),
        quota: None,
    }
}

/// A production order in the synthetic OEM's shape.
pub fn order(
    id: &str,
    site: &str,
    quantity: u64,
    prefix: &str,
    window_ms: (i64, i64),
) -> v1::ProductionOrder {
    v1::ProductionOrder {
        order_id: id.to_owned(),
        sku: "SKU-SYN".into(),
        site: site.to_owned(),
        quantity,
        serial_scheme: Some(v1::SerialScheme {
            prefix: prefix.to_owned(),
            first: 1,
            last: quantity.saturating_mul(2).max(1),
            digits: 9,
        }),
        not_before_ms: window_ms.0,
        not_after_ms: window_ms.1,
        allowed_ic_vendors: vec!["synthetic".into()],
        allowed_firmware_sha256: vec![0x5a; 32],
        ..Default::default()
    }
}
