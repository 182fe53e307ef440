//! The registry writes of one ingest on PostgreSQL: a batch's events folded
//! in entry order into what they come to, then written with one statement
//! per table instead of about eleven per certified device (issue 14: the
//! hub's ingest keeps up with two sites at line rate).
//!
//! Folding keeps the embedded store's meaning (`crate::embedded`), event by
//! event:
//! - an order row gains the last `ORDER_OPENED` terms of the batch and the
//!   sum of its certifications and scraps;
//! - a device certified in the batch is written once, with the custody the
//!   batch records after its certification; custody of a device certified
//!   before the batch updates its row to the batch's last state;
//! - every identity of every certification is checked against the other
//!   sites in one query, after this site has taken the identities' owner
//!   rows (in one sorted order, so two sites' batches wait on each other
//!   instead of deadlocking). A hit records the clone once and marks every
//!   holder, here and at the other sites.
//!
//! The statements of one phase go out together on the transaction's
//! connection (tokio-postgres pipelines concurrent queries), so a batch
//! costs two round trips, not one per statement.

use std::collections::{BTreeMap, BTreeSet};

use custody_ledger::Hash;
use pg_store::db::Fault;
use tokio_postgres::types::ToSql;

use crate::embedded::now_ms;
use crate::model::{CustodyState, DeviceRecord, SiteCounts};
use crate::store::{identities, RegistryEvent};

use super::i;

/// What one order row gains from a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct OrderDelta {
    /// The last `ORDER_OPENED` of the batch: seq, quantity, allocation, terms.
    opened: Option<(u64, u64, u64, Hash)>,
    certified: u64,
    scrapped: u64,
}

/// One site's identity taken by a certification in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Taken {
    seq: u64,
    rot_id: String,
    serial: String,
}

/// A batch's registry events, folded in entry order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Folded {
    orders: BTreeMap<String, OrderDelta>,
    /// Devices certified in the batch, with the custody recorded after.
    certified: BTreeMap<String, DeviceRecord>,
    /// Latest custody (state, seq) of devices certified before the batch.
    custody: BTreeMap<String, (CustodyState, u64)>,
    /// Every identity the batch's certifications take, by (kind, value); the
    /// last certification wins, as the upsert of the entry-by-entry path.
    identities: BTreeMap<(i16, Vec<u8>), Taken>,
    counts: SiteCounts,
}

impl Folded {
    /// Folds `events` (in entry order).
    pub(super) fn new(events: &[RegistryEvent]) -> Self {
        let mut f = Folded::default();
        for ev in events {
            match ev {
                RegistryEvent::OrderOpened {
                    order_id,
                    seq,
                    quantity,
                    allocation,
                    terms_sha256,
                } => {
                    f.orders.entry(order_id.clone()).or_default().opened =
                        Some((*seq, *quantity, *allocation, *terms_sha256));
                }
                RegistryEvent::Certified(device) => {
                    f.counts.certified += 1;
                    if !device.order_id.is_empty() {
                        f.orders
                            .entry(device.order_id.clone())
                            .or_default()
                            .certified += 1;
                    }
                    for (kind, value) in identities(device) {
                        let taken = Taken {
                            seq: device.certified_seq,
                            rot_id: device.rot_id.clone(),
                            serial: device.serial.clone(),
                        };
                        f.identities.insert((i16::from(kind.code()), value), taken);
                    }
                    // The certification's row replaces every column, so
                    // custody recorded before it in the batch is moot.
                    f.custody.remove(&device.rot_id);
                    f.certified.insert(device.rot_id.clone(), device.clone());
                }
                RegistryEvent::Custody {
                    rot_id,
                    seq,
                    state,
                    order_id,
                } => {
                    f.counts.count_custody(*state);
                    match f.certified.get_mut(rot_id) {
                        Some(d) => {
                            d.state = *state;
                            d.last_seq = *seq;
                        }
                        None => {
                            f.custody.insert(rot_id.clone(), (*state, *seq));
                        }
                    }
                    if *state == CustodyState::Scrapped && !order_id.is_empty() {
                        f.orders.entry(order_id.clone()).or_default().scrapped += 1;
                    }
                }
            }
        }
        f
    }

    fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.certified.is_empty()
            && self.custody.is_empty()
            && self.counts == SiteCounts::default()
    }
}

const TAKE_OWNERS: &str = "INSERT INTO hub_identity_owners (kind, value, site) \
     SELECT k, v, $3 FROM unnest($1::int2[], $2::bytea[]) AS t(k, v) ON CONFLICT DO NOTHING";

const OTHER_HOLDERS: &str = "SELECT h.kind, h.value, h.site, h.rot_id FROM hub_identities h \
     JOIN unnest($1::int2[], $2::bytea[]) AS t(k, v) ON h.kind = t.k AND h.value = t.v \
     WHERE h.site <> $3";

const HOLD_IDENTITIES: &str =
    "INSERT INTO hub_identities (kind, value, site, seq, rot_id, serial) \
     SELECT k, v, $3, s, r, n FROM unnest($1::int2[], $2::bytea[], $4::int8[], $5::text[], \
     $6::text[]) AS t(k, v, s, r, n) ON CONFLICT (kind, value, site) DO UPDATE \
     SET seq = excluded.seq, rot_id = excluded.rot_id, serial = excluded.serial";

const ADD_TO_ORDERS: &str = "INSERT INTO hub_orders (order_id, site, opened, opened_seq, \
     quantity, allocation, terms_sha256, certified, scrapped) \
     SELECT o, $1, op, s, q, a, t, c, x FROM unnest($2::text[], $3::bool[], $4::int8[], \
     $5::int8[], $6::int8[], $7::bytea[], $8::int8[], $9::int8[]) AS u(o, op, s, q, a, t, c, x) \
     ON CONFLICT (order_id, site) DO UPDATE SET \
     opened = hub_orders.opened OR excluded.opened, \
     opened_seq = CASE WHEN excluded.opened THEN excluded.opened_seq ELSE hub_orders.opened_seq END, \
     quantity = CASE WHEN excluded.opened THEN excluded.quantity ELSE hub_orders.quantity END, \
     allocation = CASE WHEN excluded.opened THEN excluded.allocation \
     ELSE hub_orders.allocation END, \
     terms_sha256 = CASE WHEN excluded.opened THEN excluded.terms_sha256 \
     ELSE hub_orders.terms_sha256 END, \
     certified = hub_orders.certified + excluded.certified, \
     scrapped = hub_orders.scrapped + excluded.scrapped";

const ADD_TO_COUNTS: &str = "INSERT INTO hub_site_counts (site, certified, shipped, received, \
     scrapped) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site) DO UPDATE SET \
     certified = hub_site_counts.certified + excluded.certified, \
     shipped = hub_site_counts.shipped + excluded.shipped, \
     received = hub_site_counts.received + excluded.received, \
     scrapped = hub_site_counts.scrapped + excluded.scrapped";

const PUT_DEVICES: &str = "INSERT INTO hub_devices (rot_id, site, serial, order_id, state, \
     certified_seq, last_seq, certificate, device_key_sha256, cross_site_clone) \
     SELECT r, $1, n, o, st, c, l, cert, k, x FROM unnest($2::text[], $3::text[], $4::text[], \
     $5::int2[], $6::int8[], $7::int8[], $8::bytea[], $9::bytea[], $10::bool[]) \
     AS t(r, n, o, st, c, l, cert, k, x) \
     ON CONFLICT (rot_id, site) DO UPDATE SET serial = excluded.serial, \
     order_id = excluded.order_id, state = excluded.state, \
     certified_seq = excluded.certified_seq, last_seq = excluded.last_seq, \
     certificate = excluded.certificate, device_key_sha256 = excluded.device_key_sha256, \
     cross_site_clone = excluded.cross_site_clone";

const MOVE_DEVICES: &str = "UPDATE hub_devices d SET state = t.st, last_seq = t.l \
     FROM unnest($2::text[], $3::int2[], $4::int8[]) AS t(r, st, l) \
     WHERE d.rot_id = t.r AND d.site = $1";

const RECORD_CLONES: &str = "INSERT INTO hub_clones (kind, value, detected_ms) \
     SELECT k, v, $3 FROM unnest($1::int2[], $2::bytea[]) AS t(k, v) ON CONFLICT DO NOTHING";

const MARK_CLONES: &str = "UPDATE hub_devices d SET cross_site_clone = true \
     FROM unnest($1::text[], $2::text[]) AS t(r, s) WHERE d.rot_id = t.r AND d.site = t.s";

/// Writes a folded batch of `site`'s events in `tx`.
pub(super) async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    site: &str,
    f: &Folded,
) -> std::result::Result<(), Fault> {
    if f.is_empty() {
        return Ok(());
    }
    // Phase one: take the identities, find their other holders, hold them
    // here; add to the orders and the counts.
    let kinds: Vec<i16> = f.identities.keys().map(|k| k.0).collect();
    let values: Vec<&[u8]> = f.identities.keys().map(|k| k.1.as_slice()).collect();
    let seqs: Vec<i64> = f.identities.values().map(|t| i(t.seq)).collect();
    let rots: Vec<&str> = f.identities.values().map(|t| t.rot_id.as_str()).collect();
    let serials: Vec<&str> = f.identities.values().map(|t| t.serial.as_str()).collect();
    let zero = [0u8; 32];
    let order_ids: Vec<&str> = f.orders.keys().map(String::as_str).collect();
    let opened: Vec<bool> = f.orders.values().map(|o| o.opened.is_some()).collect();
    let terms = |pick: fn(&(u64, u64, u64, Hash)) -> i64| -> Vec<i64> {
        f.orders
            .values()
            .map(|o| o.opened.as_ref().map_or(0, pick))
            .collect()
    };
    let (opened_seq, quantity, allocation) =
        (terms(|o| i(o.0)), terms(|o| i(o.1)), terms(|o| i(o.2)));
    let terms_sha256: Vec<&[u8]> = f
        .orders
        .values()
        .map(|o| o.opened.as_ref().map_or(&zero[..], |t| &t.3[..]))
        .collect();
    let order_certified: Vec<i64> = f.orders.values().map(|o| i(o.certified)).collect();
    let order_scrapped: Vec<i64> = f.orders.values().map(|o| i(o.scrapped)).collect();
    let c = &f.counts;
    let (take, others, hold, orders, counts) = futures::try_join!(
        tx.prepare_cached(TAKE_OWNERS),
        tx.prepare_cached(OTHER_HOLDERS),
        tx.prepare_cached(HOLD_IDENTITIES),
        tx.prepare_cached(ADD_TO_ORDERS),
        tx.prepare_cached(ADD_TO_COUNTS),
    )?;
    let take_p: [&(dyn ToSql + Sync); 3] = [&kinds, &values, &site];
    let hold_p: [&(dyn ToSql + Sync); 6] = [&kinds, &values, &site, &seqs, &rots, &serials];
    let orders_p: [&(dyn ToSql + Sync); 9] = [
        &site,
        &order_ids,
        &opened,
        &opened_seq,
        &quantity,
        &allocation,
        &terms_sha256,
        &order_certified,
        &order_scrapped,
    ];
    let counts_p: [&(dyn ToSql + Sync); 5] = [
        &site,
        &i(c.certified),
        &i(c.shipped),
        &i(c.received),
        &i(c.scrapped),
    ];
    let (_, holders, _, _, _) = futures::try_join!(
        tx.execute(&take, &take_p),
        tx.query(&others, &take_p),
        tx.execute(&hold, &hold_p),
        tx.execute(&orders, &orders_p),
        tx.execute(&counts, &counts_p),
    )?;

    // Phase two: the clones found, the devices with their flags, custody.
    let mut cloned: BTreeSet<(i16, Vec<u8>)> = BTreeSet::new();
    let mut marked: BTreeSet<(String, String)> = BTreeSet::new();
    let mut cloned_here: BTreeSet<&str> = BTreeSet::new();
    for h in &holders {
        let key: (i16, Vec<u8>) = (h.get(0), h.get(1));
        if let Some(t) = f.identities.get(&key) {
            cloned_here.insert(t.rot_id.as_str());
        }
        marked.insert((h.get(3), h.get(2)));
        cloned.insert(key);
    }
    let devices: Vec<&DeviceRecord> = f.certified.values().collect();
    let d_rot: Vec<&str> = devices.iter().map(|d| d.rot_id.as_str()).collect();
    let d_serial: Vec<&str> = devices.iter().map(|d| d.serial.as_str()).collect();
    let d_order: Vec<&str> = devices.iter().map(|d| d.order_id.as_str()).collect();
    let d_state: Vec<i16> = devices.iter().map(|d| i16::from(d.state.code())).collect();
    let d_cert_seq: Vec<i64> = devices.iter().map(|d| i(d.certified_seq)).collect();
    let d_last: Vec<i64> = devices.iter().map(|d| i(d.last_seq)).collect();
    let d_cert: Vec<&[u8]> = devices.iter().map(|d| d.certificate.as_slice()).collect();
    let d_key: Vec<&[u8]> = devices.iter().map(|d| &d.device_key_sha256[..]).collect();
    let d_clone: Vec<bool> = devices
        .iter()
        .map(|d| d.cross_site_clone || cloned_here.contains(d.rot_id.as_str()))
        .collect();
    let m_rot: Vec<&str> = f.custody.keys().map(String::as_str).collect();
    let m_state: Vec<i16> = f.custody.values().map(|m| i16::from(m.0.code())).collect();
    let m_seq: Vec<i64> = f.custody.values().map(|m| i(m.1)).collect();
    let c_kind: Vec<i16> = cloned.iter().map(|k| k.0).collect();
    let c_value: Vec<&[u8]> = cloned.iter().map(|k| k.1.as_slice()).collect();
    let x_rot: Vec<&str> = marked.iter().map(|m| m.0.as_str()).collect();
    let x_site: Vec<&str> = marked.iter().map(|m| m.1.as_str()).collect();
    let (put, mv, record, mark) = futures::try_join!(
        tx.prepare_cached(PUT_DEVICES),
        tx.prepare_cached(MOVE_DEVICES),
        tx.prepare_cached(RECORD_CLONES),
        tx.prepare_cached(MARK_CLONES),
    )?;
    let put_p: [&(dyn ToSql + Sync); 10] = [
        &site,
        &d_rot,
        &d_serial,
        &d_order,
        &d_state,
        &d_cert_seq,
        &d_last,
        &d_cert,
        &d_key,
        &d_clone,
    ];
    let move_p: [&(dyn ToSql + Sync); 4] = [&site, &m_rot, &m_state, &m_seq];
    let now = now_ms();
    let record_p: [&(dyn ToSql + Sync); 3] = [&c_kind, &c_value, &now];
    let mark_p: [&(dyn ToSql + Sync); 2] = [&x_rot, &x_site];
    futures::try_join!(
        tx.execute(&put, &put_p),
        tx.execute(&mv, &move_p),
        tx.execute(&record, &record_p),
        tx.execute(&mark, &mark_p),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

    use super::*;

    fn device(rot: &str, serial: &str, order: &str, seq: u64) -> DeviceRecord {
        DeviceRecord {
            rot_id: rot.into(),
            site: String::new(),
            serial: serial.into(),
            order_id: order.into(),
            state: CustodyState::Certified,
            certified_seq: seq,
            last_seq: seq,
            certificate: vec![1, 2, 3],
            device_key_sha256: [seq as u8; 32],
            cross_site_clone: false,
        }
    }

    fn custody(rot: &str, seq: u64, state: CustodyState, order: &str) -> RegistryEvent {
        RegistryEvent::Custody {
            rot_id: rot.into(),
            seq,
            state,
            order_id: order.into(),
        }
    }

    #[test]
    fn folding_keeps_entry_order_per_device_and_sums_per_order() {
        let events = vec![
            // Custody of an earlier device, then of one certified later in
            // the batch (moot: the certification replaces the row).
            custody("old", 1, CustodyState::Shipped, "PO"),
            custody("new", 2, CustodyState::Shipped, "PO"),
            RegistryEvent::Certified(device("new", "SN-1", "PO", 3)),
            RegistryEvent::OrderOpened {
                order_id: "PO".into(),
                seq: 4,
                quantity: 10,
                allocation: 5,
                terms_sha256: [9; 32],
            },
            custody("new", 5, CustodyState::Scrapped, "PO"),
            custody("old", 6, CustodyState::Received, "PO"),
            RegistryEvent::Certified(device("other", "", "", 7)),
        ];
        let f = Folded::new(&events);
        assert_eq!(f.custody.get("old"), Some(&(CustodyState::Received, 6)));
        assert!(!f.custody.contains_key("new"));
        let new = &f.certified["new"];
        assert_eq!(
            (new.state, new.certified_seq, new.last_seq),
            (CustodyState::Scrapped, 3, 5)
        );
        assert_eq!(
            f.orders["PO"],
            OrderDelta {
                opened: Some((4, 10, 5, [9; 32])),
                certified: 1,
                scrapped: 1,
            }
        );
        assert_eq!(f.orders.len(), 1, "a device without an order adds to none");
        assert_eq!(
            (
                f.counts.certified,
                f.counts.shipped,
                f.counts.received,
                f.counts.scrapped
            ),
            (2, 2, 1, 1)
        );
        // Serial, rot_id and key of "new"; rot_id and key of "other".
        assert_eq!(f.identities.len(), 5);
        assert_eq!(f.identities[&(1, b"SN-1".to_vec())].rot_id, "new");
        assert!(Folded::new(&[]).is_empty());
    }
}
