//! The custody ledger's unique-key namespaces, in one place so that no two
//! services pick the same name and every reader finds the keys a writer
//! set (namespace → value; the ledger holds each value at most once).
//!
//! The factory (`provisioner`) sets: `order` → order id (`ORDER_OPENED`),
//! `order-closed` → order id, `claim` → rot_id (`CLAIMED`), `delivered-key`
//! → SHA-256 of the device key (`KEY_DELIVERED`), and for `CERTIFIED`
//! (invariant 2) `serial` → serial, `rot` → rot_id, `device-key` → SHA-256
//! of the device key, with the quota counter `order/<id>` limited to the
//! order's quantity (invariant 4); `scrapped` → rot_id (`SCRAPPED`).
//!
//! The ownership service sets: `device-field` → `rot_id/n` on the *n*-th
//! field event of a device, `voucher-entry` → `rot_id/i` on the transfer
//! recorded for voucher entry *i*, and `revocation` → *k* on the *k*-th
//! retirement, counted by the quota counter `revocations`, and
//! `quarantine-lifted` → the `DUPLICATE_REJECTED` seq (decimal) a
//! `QUARANTINE_LIFTED` entry lifts. It reads the factory's `order`,
//! `claim`, `rot` and `scrapped`; the audit reads them all.

use trustline_proto::v1;

/// An opened order id.
pub const ORDER: &str = "order";
/// A closed order id.
pub const ORDER_CLOSED: &str = "order-closed";
/// A claimed RoT.
pub const CLAIM: &str = "claim";
/// An HSM-made device key (SHA-256 of its SPKI).
pub const DELIVERED_KEY: &str = "delivered-key";
/// A certified serial.
pub const SERIAL: &str = "serial";
/// A certified RoT.
pub const ROT: &str = "rot";
/// A certified device key (SHA-256 of its SPKI).
pub const DEVICE_KEY: &str = "device-key";
/// A scrapped RoT.
pub const SCRAPPED: &str = "scrapped";
/// The *n*-th field event of a device: `rot_id/n`.
pub const DEVICE_FIELD: &str = "device-field";
/// The transfer recorded for a voucher entry: `rot_id/index`.
pub const VOUCHER_ENTRY: &str = "voucher-entry";
/// The *k*-th retirement overall: decimal `k`.
pub const REVOCATION: &str = "revocation";
/// The quota counter of retirements.
pub const REVOCATIONS: &str = "revocations";
/// A lifted quarantine: the decimal seq of the `DUPLICATE_REJECTED` entry
/// a `QUARANTINE_LIFTED` entry lifts (each is lifted at most once).
pub const QUARANTINE_LIFTED: &str = "quarantine-lifted";

/// An FDO voucher GUID (issue 17): the 16 GUID bytes, held by the
/// `CERTIFIED` entry of the one device whose FDO header carries it.
pub const FDO_GUID: &str = "fdo-guid";
/// The FDO header HMAC a device made (issue 17): the `rot_id`, held by its
/// one `FDO_HEADER_BOUND` entry.
pub const FDO_BOUND: &str = "fdo-bound";

/// The unique key `value` in `namespace`.
pub fn unique(namespace: &str, value: impl Into<Vec<u8>>) -> v1::UniqueKey {
    v1::UniqueKey {
        namespace: namespace.to_owned(),
        value: value.into(),
    }
}
