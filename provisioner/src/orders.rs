//! OEM production orders (2.4.14.22): verified against the OEM order key,
//! checked for shape, and consulted on every step of the line (site, window,
//! allowed vendors and firmware, serial scheme, quantity).
//!
//! An order may be split across sites (issue 13 item 3; invariant 4): its
//! `allocations` give each site its share of the quantity and its own
//! offline allowance. [`Order::share`] is the one answer to "what may this
//! site build under this order" — the site check, the quota limit of every
//! `CERTIFIED` append and the offline allowance all read it, so each site
//! enforces its own share locally (offline included) and no site's count
//! can take the order past its quantity.
//!
//! The OEM retains authorisation: an order is only ever taken from a
//! `SignedStatement` whose signature verifies against the configured OEM
//! order public key, and the signed bytes are what the ledger records, so an
//! auditor can re-verify every order the line ever built against.

use trustline_proto::statement;
use trustline_proto::v1;

use crate::error::{Error, Result};

/// Longest order id, SKU, site or serial prefix accepted.
const MAX_TOKEN_LEN: usize = 64;
/// Most serial digits accepted (u64 has 20).
const MAX_SERIAL_DIGITS: u32 = 20;

/// A verified, well-formed production order.
#[derive(Debug, Clone)]
pub struct Order {
    /// The order id.
    pub id: String,
    /// The product.
    pub sku: String,
    /// The one site whose stations may build it (empty for an order split
    /// across sites).
    pub site: String,
    /// The most devices it may certify, across every site.
    pub quantity: u64,
    /// Each site's share when the order is split across sites (empty: the
    /// whole quantity is `site`'s); see [`Order::share`].
    pub allocations: Vec<Share>,
    /// Devices the site may certify beyond its last hub-cosigned
    /// checkpoint (0: none named; see `crate::allowance`).
    pub offline_allowance: u64,
    /// How its serials are formed.
    pub serials: SerialScheme,
    /// Validity window, Unix ms: `[not_before_ms, not_after_ms)`.
    pub not_before_ms: i64,
    /// End of the validity window (exclusive).
    pub not_after_ms: i64,
    /// IC vendors whose silicon may be used.
    pub allowed_ic_vendors: Vec<String>,
    /// SHA-256 of the one firmware image allowed.
    pub allowed_firmware_sha256: [u8; 32],
    /// What the devices' FDO voucher header needs (issue 17), from the
    /// order's FDO block; `None` when the order has none.
    pub fdo: Option<trustline_proto::fdo::FdoDeviceData>,
    /// The signed order exactly as the OEM signed it.
    pub signed: v1::SignedStatement,
}

/// What one site may build under an order (2.4.14.22, invariant 4): the
/// limit of its quota counter for the order and its offline allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The site.
    pub site: String,
    /// The most devices the site may certify under the order.
    pub quantity: u64,
    /// Devices it may certify beyond its last hub-cosigned checkpoint
    /// (0: none named; see `crate::allowance`).
    pub offline_allowance: u64,
}

impl Share {
    fn to_proto(&self) -> v1::SiteAllocation {
        v1::SiteAllocation {
            site: self.site.clone(),
            quantity: self.quantity,
            offline_allowance: self.offline_allowance,
        }
    }
}

/// `prefix` followed by a decimal number in `[first, last]`, zero-padded to
/// `digits` (no padding when `digits` is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialScheme {
    /// Fixed prefix.
    pub prefix: String,
    /// Lowest number.
    pub first: u64,
    /// Highest number.
    pub last: u64,
    /// Zero-padded width.
    pub digits: u32,
}

impl SerialScheme {
    /// The serial numbered `n`.
    pub fn format(&self, n: u64) -> String {
        format!("{}{:0width$}", self.prefix, n, width = self.digits as usize)
    }

    /// The number of a serial, if it belongs to the scheme.
    pub fn parse(&self, serial: &str) -> Option<u64> {
        let digits = serial.strip_prefix(&self.prefix)?;
        if digits.is_empty()
            || digits.len() > MAX_SERIAL_DIGITS as usize
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        if self.digits > 0 && digits.len() != self.digits as usize {
            return None;
        }
        if self.digits == 0 && digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        (self.first..=self.last).contains(&n).then_some(n)
    }

    /// How many serials the scheme has.
    pub fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never true for a validated scheme.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

impl Order {
    /// Verifies `signed` against the OEM order key and checks its shape.
    ///
    /// # Errors
    /// [`Error::BadSignature`] when the signature does not verify;
    /// [`Error::Invalid`] for a malformed order.
    pub fn verify(
        signed: &v1::SignedStatement,
        oem_order_key_spki: &[u8],
        known_vendors: &[String],
    ) -> Result<Self> {
        let raw: v1::ProductionOrder =
            statement::verify(signed, oem_order_key_spki).map_err(|e| match e {
                trustline_proto::Error::BadSignature(_) => Error::BadSignature(
                    "production order is not signed by the oem order key".into(),
                ),
                other => Error::from(other),
            })?;
        token("order id", &raw.order_id)?;
        token("sku", &raw.sku)?;
        let allocations = allocations(&raw)?;
        let scheme = raw
            .serial_scheme
            .ok_or_else(|| Error::Invalid("order has no serial scheme".into()))?;
        if scheme.prefix.len() > MAX_TOKEN_LEN
            || !scheme
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Invalid(format!(
                "serial prefix {:?} must be up to {MAX_TOKEN_LEN} of A-Z a-z 0-9 - _",
                scheme.prefix
            )));
        }
        if scheme.first > scheme.last || scheme.digits > MAX_SERIAL_DIGITS {
            return Err(Error::Invalid(
                "serial scheme range is empty or too wide".into(),
            ));
        }
        let serials = SerialScheme {
            prefix: scheme.prefix,
            first: scheme.first,
            last: scheme.last,
            digits: scheme.digits,
        };
        if serials.digits > 0
            && serials.format(serials.last).len() - serials.prefix.len() > serials.digits as usize
        {
            return Err(Error::Invalid(format!(
                "serial {} does not fit in {} digits",
                serials.last, serials.digits
            )));
        }
        if raw.quantity == 0 || raw.quantity > serials.len() {
            return Err(Error::Invalid(format!(
                "quantity {} must be between 1 and the {} serials of the scheme",
                raw.quantity,
                serials.len()
            )));
        }
        if raw.not_before_ms >= raw.not_after_ms {
            return Err(Error::Invalid("order validity window is empty".into()));
        }
        if raw.allowed_ic_vendors.is_empty() {
            return Err(Error::Invalid("order allows no ic vendor".into()));
        }
        if let Some(unknown) = raw
            .allowed_ic_vendors
            .iter()
            .find(|v| !known_vendors.contains(v))
        {
            return Err(Error::Invalid(format!(
                "order allows ic vendor {unknown:?}, which has no configured root"
            )));
        }
        let allowed_firmware_sha256: [u8; 32] =
            raw.allowed_firmware_sha256
                .as_slice()
                .try_into()
                .map_err(|_| Error::Invalid("allowed firmware digest must be 32 bytes".into()))?;
        let fdo = raw
            .fdo
            .as_ref()
            .map(trustline_proto::fdo::FdoDeviceData::from_order)
            .transpose()
            .map_err(|e| Error::Invalid(format!("the order's fdo block: {e}")))?;
        Ok(Self {
            id: raw.order_id,
            sku: raw.sku,
            site: raw.site,
            quantity: raw.quantity,
            allocations,
            offline_allowance: raw.offline_allowance,
            serials,
            not_before_ms: raw.not_before_ms,
            not_after_ms: raw.not_after_ms,
            allowed_ic_vendors: raw.allowed_ic_vendors,
            allowed_firmware_sha256,
            fdo,
            signed: signed.clone(),
        })
    }

    /// `site`'s share of the order (2.4.14.22, invariant 4): for a
    /// single-site order, its whole quantity and offline allowance when
    /// `site` is its site; for a split order, `site`'s allocation. `None`:
    /// the order gives `site` nothing, and no step of `site` may use it.
    pub fn share(&self, site: &str) -> Option<Share> {
        if self.allocations.is_empty() {
            return (self.site == site).then(|| Share {
                site: self.site.clone(),
                quantity: self.quantity,
                offline_allowance: self.offline_allowance,
            });
        }
        self.allocations.iter().find(|a| a.site == site).cloned()
    }

    /// The sites the order names, for messages: its site, or its
    /// allocations' sites joined by `,`.
    pub fn sites(&self) -> String {
        if self.allocations.is_empty() {
            return self.site.clone();
        }
        let names: Vec<&str> = self.allocations.iter().map(|a| a.site.as_str()).collect();
        names.join(",")
    }

    /// The order's quota counter in the ledger.
    pub fn quota_counter(&self) -> String {
        quota_counter(&self.id)
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::ProductionOrder {
        v1::ProductionOrder {
            order_id: self.id.clone(),
            sku: self.sku.clone(),
            site: self.site.clone(),
            quantity: self.quantity,
            offline_allowance: self.offline_allowance,
            serial_scheme: Some(v1::SerialScheme {
                prefix: self.serials.prefix.clone(),
                first: self.serials.first,
                last: self.serials.last,
                digits: self.serials.digits,
            }),
            not_before_ms: self.not_before_ms,
            not_after_ms: self.not_after_ms,
            allowed_ic_vendors: self.allowed_ic_vendors.clone(),
            allowed_firmware_sha256: self.allowed_firmware_sha256.to_vec(),
            fdo: self
                .fdo
                .as_ref()
                .map(trustline_proto::fdo::FdoDeviceData::to_order),
            allocations: self.allocations.iter().map(Share::to_proto).collect(),
            ..Default::default()
        }
    }
}

/// The ledger quota counter of order `order_id`.
pub fn quota_counter(order_id: &str) -> String {
    format!("order/{order_id}")
}

/// Checks a split order's allocations (2.4.14.22, invariant 4): `site`
/// empty, distinct well-formed sites, quantities above 0 summing to at most
/// the order's quantity. A single-site order needs a well-formed `site`.
///
/// # Errors
/// [`Error::Invalid`] naming what is wrong.
fn allocations(raw: &v1::ProductionOrder) -> Result<Vec<Share>> {
    if raw.allocations.is_empty() {
        token("site", &raw.site)?;
        return Ok(vec![]);
    }
    if !raw.site.is_empty() {
        return Err(Error::Invalid(format!(
            "an order split across sites names no site of its own (site {:?})",
            raw.site
        )));
    }
    let mut shares: Vec<Share> = Vec::with_capacity(raw.allocations.len());
    let mut total: u64 = 0;
    for a in &raw.allocations {
        token("allocation site", &a.site)?;
        if shares.iter().any(|s| s.site == a.site) {
            return Err(Error::Invalid(format!(
                "site {:?} is allocated twice",
                a.site
            )));
        }
        if a.quantity == 0 {
            return Err(Error::Invalid(format!(
                "the allocation of site {:?} is 0",
                a.site
            )));
        }
        total = total.saturating_add(a.quantity);
        shares.push(Share {
            site: a.site.clone(),
            quantity: a.quantity,
            offline_allowance: a.offline_allowance,
        });
    }
    if total > raw.quantity {
        return Err(Error::Invalid(format!(
            "allocations sum to {total}, above the order's quantity of {}",
            raw.quantity
        )));
    }
    Ok(shares)
}

fn token(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= MAX_TOKEN_LEN
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {s:?} must be 1 to {MAX_TOKEN_LEN} of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use trustline_proto::signer::{Signer, SoftwareSigner};

    pub(crate) fn raw() -> v1::ProductionOrder {
        v1::ProductionOrder {
            order_id: "PO-1".into(),
            sku: "SKU-1".into(),
            site: "site-a".into(),
            quantity: 10,
            serial_scheme: Some(v1::SerialScheme {
                prefix: "SN".into(),
                first: 1,
                last: 100,
                digits: 6,
            }),
            not_before_ms: 0,
            not_after_ms: i64::MAX,
            allowed_ic_vendors: vec!["acme".into()],
            allowed_firmware_sha256: vec![1; 32],
            ..Default::default()
        }
    }

    fn vendors() -> Vec<String> {
        vec!["acme".into()]
    }

    #[test]
    fn a_signed_order_verifies_and_a_forged_one_does_not() {
        let oem = SoftwareSigner::generate();
        let other = SoftwareSigner::generate();
        let signed = statement::sign(&oem, &raw()).expect("sign");
        let order = Order::verify(&signed, oem.public_key_der(), &vendors()).expect("verify");
        assert_eq!(order.id, "PO-1");
        assert_eq!(order.to_proto(), raw());
        let forged = statement::sign(&other, &raw()).expect("sign");
        assert!(matches!(
            Order::verify(&forged, oem.public_key_der(), &vendors()),
            Err(Error::BadSignature(_))
        ));
    }

    #[test]
    fn malformed_orders_are_refused() {
        let oem = SoftwareSigner::generate();
        type Edit = Box<dyn Fn(&mut v1::ProductionOrder)>;
        let cases: Vec<Edit> = vec![
            Box::new(|o| o.quantity = 0),
            Box::new(|o| o.quantity = 101),
            Box::new(|o| o.site = "a/b".into()),
            Box::new(|o| o.not_after_ms = o.not_before_ms),
            Box::new(|o| o.allowed_ic_vendors = vec!["unknown".into()]),
            Box::new(|o| o.allowed_ic_vendors.clear()),
            Box::new(|o| o.allowed_firmware_sha256 = vec![1; 31]),
            Box::new(|o| o.serial_scheme = None),
            Box::new(|o| {
                if let Some(s) = o.serial_scheme.as_mut() {
                    s.digits = 2;
                }
            }),
        ];
        for (i, edit) in cases.iter().enumerate() {
            let mut o = raw();
            edit(&mut o);
            let signed = statement::sign(&oem, &o).expect("sign");
            assert!(
                matches!(
                    Order::verify(&signed, oem.public_key_der(), &vendors()),
                    Err(Error::Invalid(_))
                ),
                "case {i}"
            );
        }
    }

    pub(crate) fn split(parts: &[(&str, u64, u64)]) -> v1::ProductionOrder {
        v1::ProductionOrder {
            site: String::new(),
            allocations: parts
                .iter()
                .map(|(site, quantity, offline_allowance)| v1::SiteAllocation {
                    site: (*site).into(),
                    quantity: *quantity,
                    offline_allowance: *offline_allowance,
                })
                .collect(),
            ..raw()
        }
    }

    /// 2.4.14.22, invariant 4: a split order's allocations name distinct
    /// sites, each above 0, summing to at most the quantity, with no site
    /// of its own; anything else is refused before it is recorded.
    #[test]
    fn split_orders_are_checked_at_verification() {
        let oem = SoftwareSigner::generate();
        let verify = |o: &v1::ProductionOrder| {
            let signed = statement::sign(&oem, o).expect("sign");
            Order::verify(&signed, oem.public_key_der(), &vendors())
        };
        let ok = verify(&split(&[("site-a", 6, 2), ("site-b", 4, 1)])).expect("verify");
        assert_eq!(ok.to_proto(), split(&[("site-a", 6, 2), ("site-b", 4, 1)]));
        assert!(
            verify(&split(&[("site-a", 3, 0)])).is_ok(),
            "under the quantity"
        );
        let bad = [
            split(&[("site-a", 6, 0), ("site-b", 5, 0)]),
            split(&[("site-a", 6, 0), ("site-a", 4, 0)]),
            split(&[("site-a", 6, 0), ("site-b", 0, 0)]),
            split(&[("site-a", 6, 0), ("", 4, 0)]),
            split(&[("site-a", 6, 0), ("a/b", 4, 0)]),
            split(&[("site-a", u64::MAX, 0), ("site-b", 2, 0)]),
            v1::ProductionOrder {
                site: "site-a".into(),
                ..split(&[("site-a", 6, 0)])
            },
        ];
        for (i, o) in bad.iter().enumerate() {
            assert!(matches!(verify(o), Err(Error::Invalid(_))), "case {i}");
        }
    }

    /// 2.4.14.22, invariant 4: a site's share is its allocation of a split
    /// order, the whole order for its single site, and nothing otherwise.
    #[test]
    fn a_site_shares_only_what_the_order_gives_it() {
        let oem = SoftwareSigner::generate();
        let verify = |o: &v1::ProductionOrder| {
            let signed = statement::sign(&oem, o).expect("sign");
            Order::verify(&signed, oem.public_key_der(), &vendors()).expect("verify")
        };
        let single = verify(&v1::ProductionOrder {
            offline_allowance: 3,
            ..raw()
        });
        assert_eq!(
            single.share("site-a"),
            Some(Share {
                site: "site-a".into(),
                quantity: 10,
                offline_allowance: 3
            })
        );
        assert_eq!(single.share("site-b"), None);
        assert_eq!(single.sites(), "site-a");
        let two = verify(&split(&[("site-a", 6, 2), ("site-b", 4, 1)]));
        let share = |s| two.share(s).map(|s| (s.quantity, s.offline_allowance));
        assert_eq!(share("site-a"), Some((6, 2)));
        assert_eq!(share("site-b"), Some((4, 1)));
        assert_eq!(share("site-c"), None);
        assert_eq!(share(""), None);
        assert_eq!(two.sites(), "site-a,site-b");
    }

    #[test]
    fn serials_follow_the_scheme() {
        let s = SerialScheme {
            prefix: "SN".into(),
            first: 5,
            last: 20,
            digits: 4,
        };
        assert_eq!(s.format(7), "SN0007");
        assert_eq!(s.parse("SN0007"), Some(7));
        for bad in [
            "SN007", "SN0004", "SN0021", "XX0007", "SN00a7", "SN", "SN+007",
        ] {
            assert_eq!(s.parse(bad), None, "{bad}");
        }
        let free = SerialScheme { digits: 0, ..s };
        assert_eq!(free.parse("SN7"), Some(7));
        assert_eq!(free.parse("SN07"), None);
    }
}
