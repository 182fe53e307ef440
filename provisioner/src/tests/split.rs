//! An order split across sites at one factory (issue 13 item 3; 2.4.14.22,
//! invariant 4): the factory checks the allocations when the order is
//! opened, admits only the allocated sites, and limits this site's quota
//! counter for the order to its allocation. Two real sites are in
//! `tests/tests/split_order.rs`.

use super::*;

impl Line {
    /// Order `id` of `quantity` split as `parts` (site, quantity), signed.
    fn split_order(&self, id: &str, quantity: u64, parts: &[(&str, u64)]) -> v1::SignedStatement {
        let mut order: v1::ProductionOrder = trustline_proto::statement::verify(
            &self.order(id, "", quantity, (0, i64::MAX)),
            self.order_signer.public_key_der(),
        )
        .expect("own order");
        order.allocations = parts
            .iter()
            .map(|(site, q)| v1::SiteAllocation {
                site: (*site).into(),
                quantity: *q,
                offline_allowance: 0,
            })
            .collect();
        trustline_proto::statement::sign(&self.order_signer, &order).expect("sign order")
    }
}

/// 2.4.14.22, invariant 4: site-a certifies up to its allocation of 2 of
/// an order of 3 split 2 + 1, the next device is refused for quota and
/// recorded as such; a site with no allocation is refused as for another
/// site's order; allocations above the quantity are refused at opening.
#[tokio::test]
async fn a_site_certifies_only_its_share_of_a_split_order() {
    let fleet = Fleet::builder().seed(41).genuine(3).build().expect("fleet");
    let mut line = line("factory-split", fleet).await;

    let over = line.split_order("PO-OVER", 3, &[("site-a", 2), ("site-b", 2)]);
    let err = line
        .factory
        .open_order(&admin(), &over)
        .await
        .expect_err("over");
    assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
    assert!(line.ledger.kinds().is_empty(), "nothing recorded");

    let signed = line.split_order("PO-S", 3, &[("site-a", 2), ("site-b", 1)]);
    line.factory
        .open_order(&admin(), &signed)
        .await
        .expect("open split order");

    // A station of a site the order does not allocate to.
    let mut c = take(&mut line.fleet, 2);
    let before = line.ledger.len();
    let err = line
        .claim(&station_of("site-c", "st-01"), "PO-S", &mut c)
        .await
        .expect_err("site-c");
    assert_eq!(err.reason(), "wrong-site");
    assert_eq!(Status::from(err).code(), tonic::Code::PermissionDenied);
    assert_eq!(line.ledger.len(), before, "nothing recorded for site-c");

    for (i, serial) in [(0, "SN000001"), (1, "SN000002")] {
        let mut rot = take(&mut line.fleet, i);
        let input = line.prepare("PO-S", &mut rot, serial).await.expect("prep");
        line.factory
            .certify(&station(), input)
            .await
            .expect("within site-a's share");
    }
    let input = line.prepare("PO-S", &mut c, "SN000003").await.expect("c");
    let err = line
        .factory
        .certify(&station(), input)
        .await
        .expect_err("over site-a's share");
    assert!(
        matches!(&err, Error::QuotaExhausted { limit: 2, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "quota");
    assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
    assert_eq!(line.ledger.count(EventKind::Certified), 2);
    assert_eq!(line.ledger.count(EventKind::QuotaRejected), 1);
    for e in line.ledger.entries_from(0) {
        if e.kind == EventKind::Certified as i32 {
            assert_eq!(e.site, "site-a");
            assert_eq!(e.quota.map(|q| q.limit), Some(2), "share is the limit");
        }
    }
    let progress = line
        .factory
        .order_progress(&station(), "PO-S")
        .await
        .expect("progress");
    assert_eq!((progress.share.quantity, progress.certified), (2, 2));
    let b = line
        .factory
        .order_progress(&station_of("site-b", "st-01"), "PO-S")
        .await
        .expect("site-b progress");
    assert_eq!(b.share.site, "site-b");
    assert_eq!(b.share.quantity, 1);

    // The share holds after a restart (reloaded from ORDER_OPENED).
    line.restart().await;
    let progress = line
        .factory
        .order_progress(&station(), "PO-S")
        .await
        .expect("progress after restart");
    assert_eq!(progress.share.quantity, 2);
}
