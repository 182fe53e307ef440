//! A station locked out for repeated refusals stays locked out across a
//! restart of `serve all` until an admin clears it (2.4.14.21: signs of
//! compromise are acted on, and a restart is not a way around that).
//! Real gRPC over mTLS on loopback, real SoftHSM2, real state files.

use site::setup;
use tonic::Code;
use trustline_proto::v1;
use trustline_proto::v1::admin_client::AdminClient;
use trustline_tests::{genuine_fleet, station, Stack, SITE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_survives_a_restart_until_an_admin_clears_it() {
    let fleet = genuine_fleet(71, 1).expect("fleet");
    let mut stack = Stack::start("lockout-restart", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let st = station(SITE, "st-01");
    let threshold = transport::LockoutPolicy::default().threshold;

    // A station opening orders is refused (PERMISSION_DENIED) each time,
    // until the refusals cross the threshold and it is locked out.
    let signed = stack
        .sign(&stack.order("PO-LOCK", SITE, 1))
        .expect("signed order");
    let mut client = stack.provisioning(&st).await.expect("station client");
    let mut denied = 0;
    let mut locked = false;
    for _ in 0..threshold + 5 {
        let err = client
            .open_order(v1::OpenOrderRequest {
                signed_order: Some(signed.clone()),
            })
            .await
            .expect_err("a station may not open orders");
        match err.code() {
            Code::PermissionDenied if err.message().contains("locked out") => {
                locked = true;
                break;
            }
            Code::PermissionDenied => denied += 1,
            other => panic!("unexpected {other:?}: {err:?}"),
        }
    }
    assert!(locked, "not locked out after {denied} refusals");
    assert_eq!(denied, threshold, "locked out at the threshold");

    // Restarted, the server still refuses the station, even a call it is
    // allowed to make.
    stack.restart().await.expect("restart");
    let mut client = stack.provisioning(&st).await.expect("station client");
    let err = client
        .get_order(v1::GetOrderRequest {
            order_id: "PO-LOCK".into(),
        })
        .await
        .expect_err("still locked out");
    assert!(err.message().contains("locked out"), "{err:?}");

    // The admin sees it, with the reasons, and clears it.
    let mut admin = AdminClient::new(stack.channel(setup::ADMIN).await.expect("admin"));
    let lockouts = admin
        .list_lockouts(v1::ListLockoutsRequest {})
        .await
        .expect("list")
        .into_inner()
        .lockouts;
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert!(lockouts[0].caller.ends_with("/st-01"), "{lockouts:?}");
    assert!(
        lockouts[0].reasons.iter().any(|r| r.contains("OpenOrder")),
        "{lockouts:?}"
    );
    let cleared = admin
        .clear_lockout(v1::ClearLockoutRequest {
            caller: lockouts[0].caller.clone(),
        })
        .await
        .expect("clear")
        .into_inner();
    assert!(cleared.was_locked);

    // Cleared, and the clearing itself survives a restart.
    stack.restart().await.expect("restart");
    let mut client = stack.provisioning(&st).await.expect("station client");
    let err = client
        .get_order(v1::GetOrderRequest {
            order_id: "PO-LOCK".into(),
        })
        .await
        .expect_err("no such order");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    stack.stop().await.expect("stop");
}
