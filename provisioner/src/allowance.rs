//! The offline allowance (issue 13 item 2; 2.4.14.20, 2.4.14.22): a site
//! may certify at most the order's `offline_allowance` devices beyond what
//! the OEM hub has witnessed — the devices counted in its last
//! hub-cosigned checkpoint — so production goes on while the hub is
//! unreachable, but never further than the OEM signed for.
//!
//! The rule, for an order whose share at this site is `q` with allowance
//! `a` (`orders::Order::share`: the whole quantity and `offline_allowance`
//! of a single-site order, or the site's `SiteAllocation` of an order split
//! across sites; 2.4.14.22, invariant 4), at a site whose last hub-cosigned
//! checkpoint counts `w` devices under the order:
//!
//! ```text
//! limit = min(q, w + a)        (the order's quota counter may not exceed it)
//! ```
//!
//! It is enforced where the quantity is: the limit is the declared limit of
//! the `CERTIFIED` append's quota use, so the ledger's atomic quota check
//! is the authority and concurrent stations stop at exactly the limit. The
//! factory checks it before the CA signs too, so a refused device costs no
//! HSM signature unless two stations race past the check (as for the
//! quantity). A site's share bounds it even with no allowance and no hub,
//! so the sites of a split order never certify more than its quantity
//! between them. A device refused for the allowance is recorded as
//! `QUOTA_REJECTED` with a reason starting `offline allowance` and refused
//! with `RESOURCE_EXHAUSTED`, reason `offline-allowance`. When the hub
//! cosigns the backlog, `w` grows and the allowance is free again.
//!
//! No allowance applies — the order's quantity is the only limit, as before
//! the hub — when the site has no hub uplink ([`FactoryConfig::allowance`]
//! is `None`) or the site's share names none (`offline_allowance = 0`): an OEM
//! that wants its sites bounded signs an allowance into its orders.
//!
//! What the hub witnessed comes from the site's uplink through
//! [`Allowance`]. A stale answer is safe: an older cosigned checkpoint
//! never counts more devices, so the limit only comes out lower.
//!
//! [`FactoryConfig::allowance`]: crate::FactoryConfig::allowance

use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::certify::CertifyInput;
use crate::error::{Error, Result};
use crate::orders::{Order, Share};
use crate::{Actor, Factory};

/// What the OEM hub has witnessed of this site's ledger, for one order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Witnessed {
    /// Entries counted against the order's quota counter within the last
    /// checkpoint the hub cosigned.
    pub certified: u64,
    /// That checkpoint's tree size (0: the hub has cosigned nothing yet).
    pub size: u64,
    /// Its cosignature's timestamp, POSIX seconds (0: none).
    pub time: u64,
}

/// Where the factory learns what the hub has witnessed: the site's uplink
/// (in this process, or read from the process that runs the ledger).
#[tonic::async_trait]
pub trait Allowance: Send + Sync + std::fmt::Debug {
    /// What the hub has witnessed for the quota counter `counter` (e.g.
    /// `order/PO-1`).
    ///
    /// # Errors
    /// A status when it cannot be known (the uplink's process is
    /// unreachable); the factory then refuses to certify under an order
    /// with an allowance (fail closed).
    async fn witnessed(&self, counter: &str) -> std::result::Result<Witnessed, tonic::Status>;
}

/// The most devices the ledger may count under an order now, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// The quota use's declared limit.
    pub(crate) value: u64,
    /// This site's share of the order's quantity.
    pub(crate) quantity: u64,
    /// The allowance and what the hub witnessed, when an allowance applies.
    pub(crate) allowance: Option<(u64, Witnessed)>,
}

impl Limit {
    /// Whether the allowance, not the quantity, is what binds.
    fn by_allowance(&self) -> bool {
        self.value < self.quantity
    }
}

/// An order's allowance now, for `GetOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowanceProgress {
    /// Whether an allowance bounds the order at this site.
    pub applies: bool,
    /// Devices the site may still certify before the hub cosigns more
    /// (when `applies`).
    pub left: u64,
    /// What the hub witnessed.
    pub witnessed: Witnessed,
}

impl Factory {
    /// The quota limit of a `CERTIFIED` append under `order` now, at the
    /// site whose share is `share`.
    ///
    /// # Errors
    /// [`Error::Backend`] when what the hub witnessed cannot be read.
    pub(crate) async fn certify_limit(&self, order: &Order, share: &Share) -> Result<Limit> {
        let quantity = share.quantity;
        let (Some(source), allowance @ 1..) = (&self.config.allowance, share.offline_allowance)
        else {
            return Ok(Limit {
                value: quantity,
                quantity,
                allowance: None,
            });
        };
        let witnessed = source
            .witnessed(&order.quota_counter())
            .await
            .map_err(|s| Error::Backend {
                service: "uplink",
                status: Box::new(s),
            })?;
        Ok(Limit {
            value: quantity.min(witnessed.certified.saturating_add(allowance)),
            quantity,
            allowance: Some((allowance, witnessed)),
        })
    }

    /// The refusal for a certification at `limit` with `used` counted:
    /// the quantity's (`QUOTA_REJECTED`, [`Error::QuotaExhausted`]) or the
    /// allowance's (`QUOTA_REJECTED` naming the allowance,
    /// [`Error::OfflineAllowanceSpent`]), recorded either way.
    pub(crate) async fn limit_refused(
        &self,
        actor: &Actor,
        order: &Order,
        input: &CertifyInput,
        used: u64,
        limit: &Limit,
    ) -> Error {
        let Some((allowance, witnessed)) = limit
            .allowance
            .filter(|_| limit.by_allowance() && used < limit.quantity)
        else {
            return self
                .quota_refused(actor, order, input, used, limit.quantity)
                .await;
        };
        let payload = v1::RejectedPayload {
            operation: "certify".into(),
            reason: format!(
                "offline allowance of {allowance} spent: {used} certified, {} of them in the \
                 last checkpoint the hub cosigned (size {})",
                witnessed.certified, witnessed.size
            ),
            key: None,
            holder_seq: 0,
            evidence: vec![],
        };
        match self
            .record_refusal(
                EventKind::QuotaRejected,
                &input.rot_id,
                &input.serial,
                order,
                actor,
                &payload,
            )
            .await
        {
            Ok(_) => Error::OfflineAllowanceSpent {
                order_id: order.id.clone(),
                allowance,
                cosigned_size: witnessed.size,
                witnessed: witnessed.certified,
            },
            Err(e) => e,
        }
    }

    /// The order's allowance now, given `certified` under it (`None`: no
    /// hub uplink).
    ///
    /// # Errors
    /// [`Error::Backend`] when what the hub witnessed cannot be read.
    pub(crate) async fn allowance_progress(
        &self,
        order: &Order,
        share: &Share,
        certified: u64,
    ) -> Result<Option<AllowanceProgress>> {
        let Some(source) = &self.config.allowance else {
            return Ok(None);
        };
        let limit = self.certify_limit(order, share).await?;
        let witnessed = match limit.allowance {
            Some((_, w)) => w,
            None => source
                .witnessed(&order.quota_counter())
                .await
                .map_err(|s| Error::Backend {
                    service: "uplink",
                    status: Box::new(s),
                })?,
        };
        Ok(Some(AllowanceProgress {
            applies: limit.allowance.is_some(),
            left: limit.value.saturating_sub(certified),
            witnessed,
        }))
    }
}
