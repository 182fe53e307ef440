//! The `trustline.v1.Admin` gRPC service: lists and clears lockouts
//! (2.4.14.21). Only the `admin` role reaches it (see [`crate::authz`]).

use tonic::{Request, Response, Status};
use trustline_proto::v1::admin_server::{Admin, AdminServer};
use trustline_proto::v1::{
    ClearLockoutRequest, ClearLockoutResponse, ListLockoutsRequest, ListLockoutsResponse, Lockout,
};

use crate::guard::Guard;
use crate::identity::caller;
use crate::limits::MessageLimits;

/// The `Admin` service over a guard's lockout tracker.
#[derive(Debug, Clone)]
pub struct AdminService {
    guard: Guard,
}

impl AdminService {
    /// The service for `guard`'s lockouts.
    pub fn new(guard: Guard) -> Self {
        Self { guard }
    }

    /// The generated server, with the guard's message limits applied.
    pub fn into_server(self) -> AdminServer<Self> {
        let limits = self.guard.limits().clone();
        AdminServer::new(self).with_message_limits(&limits)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_lockouts(
        &self,
        request: Request<ListLockoutsRequest>,
    ) -> Result<Response<ListLockoutsResponse>, Status> {
        caller(&request)?;
        let lockouts = self
            .guard
            .lockouts()
            .lockouts()
            .into_iter()
            .map(|r| Lockout {
                caller: r.caller,
                since_ms: r.since_ms,
                reasons: r.reasons,
            })
            .collect();
        Ok(Response::new(ListLockoutsResponse { lockouts }))
    }

    async fn clear_lockout(
        &self,
        request: Request<ClearLockoutRequest>,
    ) -> Result<Response<ClearLockoutResponse>, Status> {
        let admin = caller(&request)?.clone();
        let target = request.into_inner().caller;
        if target.is_empty() {
            return Err(Status::invalid_argument(
                "caller is required, e.g. \"station/site-a/st-01\"",
            ));
        }
        let was_locked = self.guard.lockouts().clear(&target);
        self.guard.lockouts_changed();
        tracing::warn!(
            target: "trustline::lockout",
            admin = %admin,
            cleared = ?target,
            was_locked,
            "lockout cleared"
        );
        Ok(Response::new(ClearLockoutResponse { was_locked }))
    }
}
