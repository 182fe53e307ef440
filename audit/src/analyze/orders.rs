//! Per-order state of the first pass: the order's terms as the OEM signed
//! them (verified against the order key) and its counters.

use prost::Message;
use trustline_proto::statement;
use trustline_proto::v1::{self};

use crate::report::OrderSummary;
use provisioner::orders::SerialScheme;

#[derive(Debug, Clone)]
pub(super) struct Terms {
    pub(super) site: String,
    pub(super) quantity: u64,
    /// An order split across sites (issue 13 item 3): each site's share.
    pub(super) allocations: Vec<(String, u64)>,
    pub(super) not_before_ms: i64,
    pub(super) not_after_ms: i64,
    pub(super) serials: SerialScheme,
}

#[derive(Debug, Clone, Default)]
pub(super) struct OrderState {
    pub(super) summary: OrderSummary,
    pub(super) terms: Option<Terms>,
    pub(super) opened_seq: Option<u64>,
    pub(super) closed_seq: Option<u64>,
    pub(super) excess: Vec<u64>,
    pub(super) excess_count: u64,
}

impl Terms {
    /// What the order lets `site` certify (2.4.14.22, invariant 4): the
    /// whole quantity at its one site, or `site`'s allocation of an order
    /// split across sites; `None` when it gives `site` nothing.
    pub(super) fn share(&self, site: &str) -> Option<u64> {
        if self.allocations.is_empty() {
            return (self.site == site).then_some(self.quantity);
        }
        self.allocations
            .iter()
            .find(|(s, _)| s == site)
            .map(|(_, q)| *q)
    }

    /// The sites the order names, for messages.
    pub(super) fn sites(&self) -> String {
        if self.allocations.is_empty() {
            return self.site.clone();
        }
        let names: Vec<&str> = self.allocations.iter().map(|(s, _)| s.as_str()).collect();
        names.join(",")
    }
}

/// Checks an `ORDER_OPENED` payload against the OEM order key.
pub(super) fn verify_order(
    entry: &v1::LedgerEntry,
    order_key: &[u8],
) -> Result<(v1::ProductionOrder, Terms), String> {
    let payload = v1::OrderOpenedPayload::decode(entry.payload.as_slice())
        .map_err(|e| format!("payload does not decode: {e}"))?;
    let signed = payload
        .signed_order
        .ok_or_else(|| "payload holds no signed order".to_owned())?;
    let order: v1::ProductionOrder =
        statement::verify(&signed, order_key).map_err(|e| format!("signed order: {e}"))?;
    if order.order_id != entry.order_id {
        return Err(format!(
            "entry names order {:?} but the signed order is {:?}",
            entry.order_id, order.order_id
        ));
    }
    let scheme = order
        .serial_scheme
        .clone()
        .ok_or_else(|| "signed order has no serial scheme".to_owned())?;
    if order.quantity == 0
        || order.not_before_ms >= order.not_after_ms
        || scheme.first > scheme.last
    {
        return Err("signed order has no quantity, window or serial range".into());
    }
    let terms = Terms {
        site: order.site.clone(),
        quantity: order.quantity,
        allocations: order
            .allocations
            .iter()
            .map(|a| (a.site.clone(), a.quantity))
            .collect(),
        not_before_ms: order.not_before_ms,
        not_after_ms: order.not_after_ms,
        serials: SerialScheme {
            prefix: scheme.prefix,
            first: scheme.first,
            last: scheme.last,
            digits: scheme.digits,
        },
    };
    Ok((order, terms))
}
