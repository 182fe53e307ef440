//! The orders the line knows (2.4.14.22): opening and closing them, their
//! progress, and the checks every later step makes — the one site check
//! ([`check_site`]), then the open/closed state and the validity window
//! ([`check_usable`]).
//!
//! The ledger is the truth; [`OrderBook`] caches verified orders, filled on
//! first use, and anything in it is reloaded from the `ORDER_OPENED` entry
//! (and the `order-closed` key) when it is not there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use backends::{append_request, keys, now_ms, AppendRefusal, BoundedCache};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};
use crate::orders::{Order, Share};
use crate::{draft, payload_of, Actor, Factory};

/// An order and its progress.
#[derive(Debug, Clone)]
pub struct OrderProgress {
    /// The order.
    pub order: Order,
    /// Devices certified under it.
    pub certified: u64,
    /// Closed early.
    pub closed: bool,
    /// This site's share of it (2.4.14.22, invariant 4): what it may
    /// certify here.
    pub share: Share,
    /// Its offline allowance and what the hub witnessed (`None`: the site
    /// has no hub uplink).
    pub allowance: Option<crate::AllowanceProgress>,
}

/// An order the line knows, with its open/closed state.
#[derive(Debug)]
pub struct KnownOrder {
    /// The verified order.
    pub order: Order,
    /// Set once `ORDER_CLOSED` is recorded.
    pub closed: AtomicBool,
}

impl KnownOrder {
    /// Whether the order was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Orders seen since start, by id: a [`BoundedCache`] of what the ledger
/// records (see `Factory::order`); an evicted order is read and verified
/// again, closed state included.
#[derive(Debug)]
pub struct OrderBook {
    orders: BoundedCache<String, Arc<KnownOrder>>,
}

impl OrderBook {
    /// A book caching at most `capacity` orders.
    pub fn new(capacity: usize) -> Self {
        Self {
            orders: BoundedCache::new(capacity),
        }
    }

    /// A cached order.
    pub fn get(&self, id: &str) -> Option<Arc<KnownOrder>> {
        self.orders.get(id)
    }

    /// Caches an order; returns the cached one if another task got there
    /// first.
    pub fn insert(&self, order: Order, closed: bool) -> Arc<KnownOrder> {
        self.orders.get_or_insert_with(order.id.clone(), || {
            Arc::new(KnownOrder {
                order,
                closed: AtomicBool::new(closed),
            })
        })
    }
}

/// The one site check of the factory (2.4.14.22): whether `actor` may act
/// on `order`, or on a device certified (or claimed) under it. Every
/// site-scoped step calls it. A site-bound caller may act only when the
/// order gives its site a share ([`Order::share`]: the order's one site,
/// or an allocation of a split order, invariant 4).
///
/// # Errors
/// [`Error::WrongSite`] naming the order, its sites and the caller's.
pub fn check_site(actor: &Actor, order: &Order) -> Result<()> {
    match actor.scope.own_site() {
        Some(site) if order.share(site).is_none() => Err(Error::WrongSite {
            order_id: order.id.clone(),
            order_site: order.sites(),
            caller_site: site.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Checks that `order` may be built now by `actor`.
///
/// # Errors
/// [`Error::WrongSite`] (see [`check_site`]), [`Error::OrderClosed`] or
/// [`Error::OrderOutsideWindow`], in that order.
pub fn check_usable(known: &KnownOrder, actor: &Actor, now_ms: i64) -> Result<()> {
    let order = &known.order;
    check_site(actor, order)?;
    if known.is_closed() {
        return Err(Error::OrderClosed(order.id.clone()));
    }
    if now_ms < order.not_before_ms || now_ms >= order.not_after_ms {
        return Err(Error::OrderOutsideWindow {
            order_id: order.id.clone(),
        });
    }
    Ok(())
}

impl Factory {
    /// Opens an OEM-signed production order; records `ORDER_OPENED`.
    ///
    /// # Errors
    /// [`Error::BadSignature`], [`Error::Invalid`], [`Error::OrderExists`],
    /// [`Error::Backend`].
    pub async fn open_order(
        &self,
        actor: &Actor,
        signed: &v1::SignedStatement,
    ) -> Result<(String, u64)> {
        let order = Order::verify(signed, &self.config.oem_order_key, &self.vendors.names())?;
        let payload = v1::OrderOpenedPayload {
            signed_order: Some(signed.clone()),
        };
        let draft = draft(
            EventKind::OrderOpened,
            "",
            "",
            &self.entry_site(actor, &order),
            actor,
            &order.id,
            &payload,
        );
        let key = keys::unique(keys::ORDER, order.id.as_bytes());
        match self
            .ledger
            .append(append_request(draft, vec![key], None))
            .await
        {
            Ok(r) => {
                let id = order.id.clone();
                self.orders.insert(order, false);
                Ok((id, r.seq))
            }
            Err(AppendRefusal::Conflict { .. }) => Err(Error::OrderExists(order.id)),
            Err(AppendRefusal::Quota { .. }) => {
                Err(Error::Config("quota on an order opening".into()))
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// Closes an order early; records `ORDER_CLOSED`.
    ///
    /// # Errors
    /// [`Error::UnknownOrder`], [`Error::OrderClosed`] when already closed,
    /// [`Error::Invalid`] for an overlong reason, [`Error::Backend`].
    pub async fn close_order(&self, actor: &Actor, order_id: &str, reason: &str) -> Result<u64> {
        if reason.len() > 1024 {
            return Err(Error::Invalid("reason is longer than 1024 bytes".into()));
        }
        let known = self.order(order_id).await?;
        let payload = v1::OrderClosedPayload {
            reason: reason.to_owned(),
        };
        let draft = draft(
            EventKind::OrderClosed,
            "",
            "",
            &self.entry_site(actor, &known.order),
            actor,
            order_id,
            &payload,
        );
        let key = keys::unique(keys::ORDER_CLOSED, order_id.as_bytes());
        match self
            .ledger
            .append(append_request(draft, vec![key], None))
            .await
        {
            Ok(r) => {
                known.closed.store(true, Ordering::Release);
                Ok(r.seq)
            }
            Err(AppendRefusal::Conflict { .. }) => {
                known.closed.store(true, Ordering::Release);
                Err(Error::OrderClosed(order_id.to_owned()))
            }
            Err(AppendRefusal::Quota { .. }) => {
                Err(Error::Config("quota on an order closing".into()))
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }

    /// An order and how many devices it has certified.
    ///
    /// # Errors
    /// [`Error::UnknownOrder`], [`Error::WrongSite`] for a station of
    /// another site, [`Error::Backend`].
    pub async fn order_progress(&self, actor: &Actor, order_id: &str) -> Result<OrderProgress> {
        let known = self.order(order_id).await?;
        let share = self.share(actor, &known.order)?;
        let certified = self
            .ledger
            .get_quota(known.order.quota_counter())
            .await
            .map_err(Error::ledger)?;
        let allowance = self
            .allowance_progress(&known.order, &share, certified)
            .await?;
        Ok(OrderProgress {
            order: known.order.clone(),
            share,
            certified,
            closed: known.is_closed(),
            allowance,
        })
    }

    /// This site's share of `order` as `actor` acts on it (2.4.14.22,
    /// invariant 4): the one function every limit reads. The site is the
    /// caller's own site, else this factory's (`FactoryConfig::site`); a
    /// single-site order's share is the whole order for any caller its
    /// site check lets through, as before split orders.
    ///
    /// # Errors
    /// [`Error::WrongSite`] when the order gives the site nothing (or, for
    /// a split order, no site is known).
    pub(crate) fn share(&self, actor: &Actor, order: &Order) -> Result<Share> {
        check_site(actor, order)?;
        let site = match actor.scope.own_site().or(self.config.site.as_deref()) {
            Some(site) if !order.allocations.is_empty() => site,
            _ => order.site.as_str(),
        };
        order.share(site).ok_or_else(|| Error::WrongSite {
            order_id: order.id.clone(),
            order_site: order.sites(),
            caller_site: site.to_owned(),
        })
    }

    /// The site recorded on a factory entry under `order`: the order's one
    /// site, or for a split order the site acting on it (the caller's,
    /// else this factory's; empty when neither is known).
    pub(crate) fn entry_site(&self, actor: &Actor, order: &Order) -> String {
        if order.allocations.is_empty() {
            return order.site.clone();
        }
        actor
            .scope
            .own_site()
            .or(self.config.site.as_deref())
            .unwrap_or_default()
            .to_owned()
    }

    /// The order `order_id`, from the cache or the ledger.
    pub(crate) async fn order(&self, order_id: &str) -> Result<Arc<KnownOrder>> {
        if let Some(known) = self.orders.get(order_id) {
            return Ok(known);
        }
        let Some(seq) = self.lookup(keys::ORDER, order_id.as_bytes()).await? else {
            return Err(Error::UnknownOrder(order_id.to_owned()));
        };
        let entry = self.entry(seq).await?;
        let payload: v1::OrderOpenedPayload = payload_of(&entry, EventKind::OrderOpened)?;
        let signed = payload.signed_order.ok_or_else(|| Error::CorruptEntry {
            seq,
            reason: "order opening without its order".into(),
        })?;
        let order = Order::verify(&signed, &self.config.oem_order_key, &self.vendors.names())
            .map_err(|e| Error::CorruptEntry {
                seq,
                reason: format!("recorded order no longer verifies: {e}"),
            })?;
        let closed = self
            .lookup(keys::ORDER_CLOSED, order_id.as_bytes())
            .await?
            .is_some();
        Ok(self.orders.insert(order, closed))
    }

    /// The order, checked usable now by `actor`.
    pub(crate) async fn usable_order(
        &self,
        actor: &Actor,
        order_id: &str,
    ) -> Result<Arc<KnownOrder>> {
        let known = self.order(order_id).await?;
        check_usable(&known, actor, now_ms())?;
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustline_proto::signer::{Signer, SoftwareSigner};
    use trustline_proto::statement;

    fn at(site: &str) -> Actor {
        Actor {
            id: format!("station/{site}/st-01"),
            scope: transport::SiteScope::Site(site.into()),
        }
    }

    fn anywhere() -> Actor {
        Actor {
            id: "admin/hq/oem".into(),
            scope: transport::SiteScope::Any,
        }
    }

    fn vendors() -> Vec<String> {
        vec!["acme".into()]
    }

    fn raw() -> v1::ProductionOrder {
        crate::orders::tests::raw()
    }

    #[test]
    fn usability_checks_site_window_and_closure() {
        let oem = SoftwareSigner::generate();
        let mut o = raw();
        o.not_before_ms = 100;
        o.not_after_ms = 200;
        let order = Order::verify(
            &statement::sign(&oem, &o).expect("sign"),
            oem.public_key_der(),
            &vendors(),
        )
        .expect("verify");
        let book = OrderBook::new(4);
        let known = book.insert(order, false);
        let (a, b, any) = (at("site-a"), at("site-b"), anywhere());
        assert!(check_usable(&known, &a, 150).is_ok());
        assert!(check_usable(&known, &any, 150).is_ok());
        assert!(matches!(
            check_usable(&known, &b, 150),
            Err(Error::WrongSite { .. })
        ));
        assert!(matches!(
            check_usable(&known, &a, 99),
            Err(Error::OrderOutsideWindow { .. })
        ));
        assert!(matches!(
            check_usable(&known, &a, 200),
            Err(Error::OrderOutsideWindow { .. })
        ));
        known.closed.store(true, Ordering::Release);
        assert!(matches!(
            check_usable(&known, &a, 150),
            Err(Error::OrderClosed(_))
        ));
    }

    /// 2.4.14.22, invariant 4: a station may use a split order only when
    /// its site has an allocation; others are refused as for another
    /// site's order (`wrong-site`).
    #[test]
    fn a_split_order_admits_only_its_allocated_sites() {
        let oem = SoftwareSigner::generate();
        let o = crate::orders::tests::split(&[("site-a", 6, 0), ("site-b", 4, 0)]);
        let order = Order::verify(
            &statement::sign(&oem, &o).expect("sign"),
            oem.public_key_der(),
            &vendors(),
        )
        .expect("verify");
        assert!(check_site(&at("site-a"), &order).is_ok());
        assert!(check_site(&at("site-b"), &order).is_ok());
        assert!(check_site(&anywhere(), &order).is_ok());
        match check_site(&at("site-c"), &order) {
            Err(e @ Error::WrongSite { .. }) => {
                assert_eq!(e.reason(), "wrong-site");
                assert!(e.to_string().contains("site-a,site-b"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
