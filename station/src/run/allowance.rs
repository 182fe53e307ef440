//! What the operator sees of the site's offline allowance (issue 13,
//! 2.4.14.20): the progress line shows the devices the site may still
//! certify before the OEM hub cosigns more of its ledger, and the age of
//! the last cosignature (refreshed from `GetOrder` every few seconds); a
//! device refused because the allowance is spent reads "hub unreachable,
//! offline allowance spent".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;

/// The refusal reason of a certification past the offline allowance.
pub const REASON: &str = "offline-allowance";

/// How often the progress line's allowance is refreshed.
const REFRESH: Duration = Duration::from_secs(2);

/// What a refusal reason means to the operator, where it needs saying.
pub fn explain(reason: &str) -> Option<&'static str> {
    (reason == REASON).then_some("hub unreachable, offline allowance spent")
}

/// The progress line's note for an order's status at `now_secs` (empty
/// when the site has no hub uplink).
pub fn note(status: &v1::OrderStatus, now_secs: u64) -> String {
    let age = match status.last_cosignature_time {
        0 => "not yet cosigned".to_owned(),
        t => format!("cosigned {} s ago", now_secs.saturating_sub(t)),
    };
    if status.allowance_applies {
        format!("allowance {} left, {age}", status.allowance_left)
    } else if status.last_cosignature_time > 0 {
        age
    } else {
        String::new()
    }
}

fn now_secs() -> u64 {
    u64::try_from(backends::now_ms() / 1000).unwrap_or(0)
}

/// Keeps `into` up to date with the order's note until aborted.
pub(super) fn refresh(
    mut client: ProvisioningClient<Channel>,
    order_id: String,
    first: &v1::OrderStatus,
    into: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    *into.lock().unwrap_or_else(|p| p.into_inner()) = note(first, now_secs());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            let Ok(status) = client
                .get_order(v1::GetOrderRequest {
                    order_id: order_id.clone(),
                })
                .await
            else {
                continue;
            };
            *into.lock().unwrap_or_else(|p| p.into_inner()) =
                note(&status.into_inner(), now_secs());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_shows_the_allowance_and_the_cosignature_age() {
        let mut s = v1::OrderStatus {
            allowance_applies: true,
            allowance_left: 7,
            last_cosignature_time: 100,
            last_cosigned_size: 40,
            ..Default::default()
        };
        assert_eq!(note(&s, 112), "allowance 7 left, cosigned 12 s ago");
        s.allowance_applies = false;
        assert_eq!(note(&s, 112), "cosigned 12 s ago");
        assert_eq!(note(&v1::OrderStatus::default(), 112), "");
        assert_eq!(
            explain("offline-allowance"),
            Some("hub unreachable, offline allowance spent")
        );
        assert_eq!(explain("quota"), None);
    }
}
