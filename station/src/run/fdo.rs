//! The FDO header HMAC of a certified device (issue 17; device protocol
//! step 17, `docs/device-protocol.md` §7.1; `docs/fdo-vouchers.md` §9).
//!
//! After `store_certification`, for an order with an FDO block and a device
//! that announces step 17: the station builds the device's FDO header from
//! the voucher it stored, its chain and the order's (signed) FDO block, asks
//! the device for the HMAC over it, and sends the HMAC to the provisioner
//! (`BindFdoHeader`), which records it against the header it recorded at
//! `Certify` and answers that header. A header the provisioner did not
//! record is the station's failure (`station:fdo-header-mismatch`): nothing
//! is written for it. The result is the device's FDO voucher with no
//! entries (header, HMAC, chain), which the run writes as
//! `<serial>.fdo-voucher.pem`.

use tonic::transport::Channel;
use trustline_proto::fdo::{FdoDeviceData, FdoHeader, FdoVoucher};
use trustline_proto::v1;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::voucher::Voucher;

use crate::link::DeviceLink;

use super::provision::{failed, refused, with_retries};
use super::{Known, Outcome};

fn station_failure(reason: &str, message: String) -> Outcome {
    Outcome::Failed {
        stage: "fdo-header-hmac",
        reason: format!("station:{reason}"),
        message,
        known: Known::default(),
    }
}

/// Binds the device's FDO header (see the module doc). `Ok(None)` when the
/// order has no FDO block or the device does not announce step 17.
pub(super) async fn bind<L: DeviceLink>(
    client: &mut ProvisioningClient<Channel>,
    link: &mut L,
    retries: u32,
    order_id: &str,
    rot_id: &str,
    chain: &[Vec<u8>],
    voucher: &[u8],
) -> std::result::Result<Option<Vec<u8>>, Outcome> {
    let order = client
        .get_order(v1::GetOrderRequest {
            order_id: order_id.to_owned(),
        })
        .await
        .map_err(|s| refused("fdo-header-hmac", s))?
        .into_inner()
        .order;
    let Some(block) = order.and_then(|o| o.fdo) else {
        return Ok(None);
    };
    let built = FdoDeviceData::from_order(&block).and_then(|data| {
        let voucher = Voucher::decode(voucher)?;
        FdoHeader::from_trustline(voucher.header(), chain, &data)
    });
    let header = built.map_err(|e| station_failure("fdo-header", e.to_string()))?;
    let ov_header = header.encode();
    let Some(hmac) = link
        .fdo_header_hmac(&ov_header)
        .await
        .map_err(failed("fdo-header-hmac"))?
    else {
        return Ok(None);
    };
    let request = v1::BindFdoHeaderRequest {
        rot_id: rot_id.to_owned(),
        header_hmac: hmac.to_vec(),
    };
    let bound = with_retries(retries, || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.bind_fdo_header(request).await }
    })
    .await
    .map_err(|s| refused("fdo-header-hmac", s))?
    .into_inner();
    if bound.ov_header != ov_header {
        return Err(station_failure(
            "fdo-header-mismatch",
            "the provisioner recorded another fdo header than the one the device bound".into(),
        ));
    }
    let fdo = FdoVoucher::new(header, hmac, chain.to_vec())
        .map_err(|e| station_failure("fdo-header", e.to_string()))?;
    Ok(Some(fdo.encode()))
}
