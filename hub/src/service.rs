//! The `trustline.v1.Witness` and `trustline.v1.Registry` gRPC services
//! over a [`Hub`], and the one mapping from [`Error`] onto `tonic::Status`.
//!
//! Generated protobuf types stop here. Authentication and the role table
//! are the `transport` guard's; this module adds the site scoping only the
//! data can decide: a site's uplink identity (role `site`) pushes, gets
//! cosigned and reads only its own site (`transport::SiteScope::check`).
//!
//! | error | code | details |
//! | --- | --- | --- |
//! | unknown site or origin (tlog-witness 404), not found | `NOT_FOUND` | |
//! | no signature by the site key (403), another site's data | `PERMISSION_DENIED` | |
//! | malformed, old > new (400), bad proof (422), oversized batch | `INVALID_ARGUMENT` | |
//! | old size ≠ cosigned size (409), push gap, checkpoint beyond the mirror | `ABORTED` | `SiteState` |
//! | fork: rewritten entry, conflicting checkpoint (409) | `ALREADY_EXISTS` | `SiteState` |
//! | fork: entry fails verification | `INVALID_ARGUMENT` | `SiteState` |
//! | storage or witness signer failure | `UNAVAILABLE` | |
//! | stored data fails its checks | `DATA_LOSS` | |
//!
//! Refusals also carry a stable reason in the `trustline-refusal` response
//! metadata (`old-size-mismatch`, `behind`, `fork-rewritten-entry`,
//! `fork-bad-entry`, `fork-conflicting-checkpoint`).

use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use trustline_proto::v1;
use trustline_proto::v1::registry_server::{Registry, RegistryServer};
use trustline_proto::v1::witness_server::{Witness, WitnessServer};

use crate::error::Error;
use crate::hub::Hub;
use crate::model::{
    CloneRecord, CustodyState, DeviceRecord, ForkKind, ForkRecord, IdentityKind, OrderFigures,
    SiteStatus,
};
use crate::store::DeviceQuery;

/// The response metadata key naming a refusal's reason.
pub const REFUSAL_METADATA: &str = "trustline-refusal";

/// A site's state on the wire.
pub fn site_state_to_wire(s: &SiteStatus) -> v1::SiteState {
    let c = s.cosigned.as_ref();
    v1::SiteState {
        site: s.site.clone(),
        origin: s.origin.clone(),
        mirror_size: s.mirror_size,
        mirror_root: s.mirror_root.to_vec(),
        cosigned_size: c.map_or(0, |c| c.size),
        cosigned_root: c.map(|c| c.root.to_vec()).unwrap_or_default(),
        cosigned_note: c.map(|c| c.note.clone()).unwrap_or_default(),
        cosigned_time: c.map_or(0, |c| c.time),
        forks: s.forks,
    }
}

/// The `SiteState` an `ABORTED`, `ALREADY_EXISTS` or `INVALID_ARGUMENT`
/// (fork) status carries: what the hub holds.
pub fn site_state_details(status: &Status) -> Option<v1::SiteState> {
    if !matches!(
        status.code(),
        Code::Aborted | Code::AlreadyExists | Code::InvalidArgument
    ) || status.details().is_empty()
    {
        return None;
    }
    v1::SiteState::decode(status.details()).ok()
}

fn with_details(code: Code, message: String, state: &SiteStatus, reason: &'static str) -> Status {
    let mut status = Status::with_details(
        code,
        message,
        site_state_to_wire(state).encode_to_vec().into(),
    );
    status
        .metadata_mut()
        .insert(REFUSAL_METADATA, MetadataValue::from_static(reason));
    status
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::UnknownSite(_) | Error::UnknownOrigin(_) | Error::NotFound(_) => {
                Status::not_found(message)
            }
            Error::BadSignature(_) => Status::permission_denied(message),
            Error::InvalidArgument(_) | Error::BadProof(_) => Status::invalid_argument(message),
            Error::OldSizeMismatch { state, .. } => {
                with_details(Code::Aborted, message, &state, "old-size-mismatch")
            }
            Error::Behind { state, .. } => with_details(Code::Aborted, message, &state, "behind"),
            Error::Fork { kind, state, .. } => match kind {
                ForkKind::RewrittenEntry => {
                    with_details(Code::AlreadyExists, message, &state, "fork-rewritten-entry")
                }
                ForkKind::ConflictingCheckpoint => with_details(
                    Code::AlreadyExists,
                    message,
                    &state,
                    "fork-conflicting-checkpoint",
                ),
                ForkKind::BadEntry => {
                    with_details(Code::InvalidArgument, message, &state, "fork-bad-entry")
                }
            },
            Error::Store(_) | Error::Signer(_) => Status::unavailable(message),
            Error::Corrupt(_) => Status::data_loss(message),
            Error::Config(_) => Status::internal(message),
        }
    }
}

fn custody_to_wire(s: CustodyState) -> v1::CustodyState {
    match s {
        CustodyState::Certified => v1::CustodyState::Certified,
        CustodyState::Shipped => v1::CustodyState::Shipped,
        CustodyState::Received => v1::CustodyState::Received,
        CustodyState::Scrapped => v1::CustodyState::Scrapped,
    }
}

fn device_to_wire(d: DeviceRecord) -> v1::DeviceRecord {
    v1::DeviceRecord {
        rot_id: d.rot_id,
        site: d.site,
        serial: d.serial,
        order_id: d.order_id,
        state: custody_to_wire(d.state) as i32,
        certified_seq: d.certified_seq,
        last_seq: d.last_seq,
        certificate: d.certificate,
        device_key_sha256: d.device_key_sha256.to_vec(),
        cross_site_clone: d.cross_site_clone,
    }
}

fn fork_to_wire(f: ForkRecord) -> v1::Fork {
    let kind = match f.kind {
        ForkKind::RewrittenEntry => v1::ForkKind::RewrittenEntry,
        ForkKind::BadEntry => v1::ForkKind::BadEntry,
        ForkKind::ConflictingCheckpoint => v1::ForkKind::ConflictingCheckpoint,
    };
    v1::Fork {
        id: f.id,
        site: f.site,
        kind: kind as i32,
        position: f.position,
        held_hash: f.held_hash.to_vec(),
        offered_hash: f.offered_hash.to_vec(),
        held_entry: f.held_entry,
        offered_entry: f.offered_entry,
        held_note: f.held_note,
        offered_note: f.offered_note,
        reason: f.reason,
        time_ms: f.time_ms,
        repeats: f.repeats,
    }
}

fn clone_to_wire(c: CloneRecord) -> v1::CrossSiteClone {
    let kind = match c.kind {
        IdentityKind::Serial => v1::IdentityKind::Serial,
        IdentityKind::RotId => v1::IdentityKind::RotId,
        IdentityKind::DeviceKey => v1::IdentityKind::DeviceKey,
    };
    v1::CrossSiteClone {
        kind: kind as i32,
        value: c.value,
        holders: c
            .holders
            .into_iter()
            .map(|h| v1::CloneHolder {
                site: h.site,
                seq: h.seq,
                rot_id: h.rot_id,
                serial: h.serial,
            })
            .collect(),
        detected_ms: c.detected_ms,
    }
}

fn order_to_wire(o: OrderFigures) -> v1::OrderFigures {
    v1::OrderFigures {
        order_id: o.order_id,
        quantity: o.quantity,
        certified: o.certified,
        over_quantity: o.over_quantity,
        terms_differ: o.terms_differ,
        sites: o
            .sites
            .into_iter()
            .map(|r| v1::OrderSiteFigure {
                over_allocation: r.over_allocation(),
                site: r.site,
                allocation: r.allocation,
                certified: r.certified,
                scrapped: r.scrapped,
                opened: r.opened,
                opened_seq: r.opened_seq,
            })
            .collect(),
    }
}

/// The two hub services over one [`Hub`].
#[derive(Debug, Clone)]
pub struct HubService {
    hub: Hub,
}

impl HubService {
    /// The services over `hub`.
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }

    /// The tonic server for `trustline.v1.Witness`.
    pub fn witness_server(&self) -> WitnessServer<Self> {
        WitnessServer::new(self.clone())
    }

    /// The tonic server for `trustline.v1.Registry`.
    pub fn registry_server(&self) -> RegistryServer<Self> {
        RegistryServer::new(self.clone())
    }

    /// Runs blocking hub work (store transactions, fsync) off the async
    /// workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Hub) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let hub = self.hub.clone();
        tokio::task::spawn_blocking(move || f(hub))
            .await
            .map_err(|_| Status::internal("hub task failed"))?
            .map_err(Status::from)
    }
}

#[tonic::async_trait]
impl Witness for HubService {
    async fn push_entries(
        &self,
        request: Request<v1::PushEntriesRequest>,
    ) -> Result<Response<v1::SiteState>, Status> {
        let scope = transport::authorized(&request)?.scope();
        let req = request.into_inner();
        scope.check(&req.site)?;
        let state = self
            .blocking(move |hub| hub.push_entries(&req.site, req.start, req.entries))
            .await?;
        Ok(Response::new(site_state_to_wire(&state)))
    }

    async fn add_checkpoint(
        &self,
        request: Request<v1::AddCheckpointRequest>,
    ) -> Result<Response<v1::AddCheckpointResponse>, Status> {
        let scope = transport::authorized(&request)?.scope();
        let req = request.into_inner();
        // Scope the caller before any signature is checked or anything is
        // recorded: a site may only submit its own checkpoints.
        let site = self.hub.site_of_note(&req.checkpoint)?.site.clone();
        scope.check(&site)?;
        let c = self
            .blocking(move |hub| {
                hub.add_checkpoint(req.old_size, &req.consistency_proof, &req.checkpoint)
            })
            .await?;
        Ok(Response::new(v1::AddCheckpointResponse {
            signature_lines: c.signature_lines,
            cosigned_note: c.cosigned_note,
            timestamp: c.timestamp,
        }))
    }

    async fn get_site_state(
        &self,
        request: Request<v1::GetSiteStateRequest>,
    ) -> Result<Response<v1::SiteState>, Status> {
        let scope = transport::authorized(&request)?.scope();
        let req = request.into_inner();
        scope.check(&req.site)?;
        let state = self.blocking(move |hub| hub.status(&req.site)).await?;
        Ok(Response::new(site_state_to_wire(&state)))
    }

    async fn get_witness_key(
        &self,
        request: Request<v1::GetWitnessKeyRequest>,
    ) -> Result<Response<v1::WitnessKey>, Status> {
        transport::authorized(&request)?;
        let w = self.hub.witness();
        Ok(Response::new(v1::WitnessKey {
            name: w.name().to_string(),
            public_key: w.public_key().to_vec(),
            verifier_key: w.verifier_key(),
        }))
    }
}

#[tonic::async_trait]
impl Registry for HubService {
    async fn get_device(
        &self,
        request: Request<v1::GetDeviceRequest>,
    ) -> Result<Response<v1::DeviceRecords>, Status> {
        transport::authorized(&request)?;
        let req = request.into_inner();
        let query = match (req.rot_id.is_empty(), req.serial.is_empty()) {
            (false, true) => DeviceQuery::RotId(req.rot_id),
            (true, false) => DeviceQuery::Serial(req.serial),
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of rot_id and serial",
                ))
            }
        };
        let devices = self.blocking(move |hub| hub.devices(&query)).await?;
        if devices.is_empty() {
            return Err(Status::not_found("no site has certified that device"));
        }
        Ok(Response::new(v1::DeviceRecords {
            devices: devices.into_iter().map(device_to_wire).collect(),
        }))
    }

    async fn list_sites(
        &self,
        request: Request<v1::ListSitesRequest>,
    ) -> Result<Response<v1::SiteFigures>, Status> {
        transport::authorized(&request)?;
        let figures = self.blocking(|hub| hub.site_figures()).await?;
        Ok(Response::new(v1::SiteFigures {
            sites: figures
                .into_iter()
                .map(|(s, c)| v1::SiteFigure {
                    state: Some(site_state_to_wire(&s)),
                    certified: c.certified,
                    shipped: c.shipped,
                    received: c.received,
                    scrapped: c.scrapped,
                })
                .collect(),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<v1::ListOrdersRequest>,
    ) -> Result<Response<v1::OrderFiguresList>, Status> {
        transport::authorized(&request)?;
        let req = request.into_inner();
        let orders = self
            .blocking(move |hub| {
                hub.orders((!req.order_id.is_empty()).then_some(req.order_id.as_str()))
            })
            .await?;
        Ok(Response::new(v1::OrderFiguresList {
            orders: orders.into_iter().map(order_to_wire).collect(),
        }))
    }

    async fn list_forks(
        &self,
        request: Request<v1::ListForksRequest>,
    ) -> Result<Response<v1::Forks>, Status> {
        transport::authorized(&request)?;
        let req = request.into_inner();
        let forks = self
            .blocking(move |hub| hub.forks((!req.site.is_empty()).then_some(req.site.as_str())))
            .await?;
        Ok(Response::new(v1::Forks {
            forks: forks.into_iter().map(fork_to_wire).collect(),
        }))
    }

    async fn list_clones(
        &self,
        request: Request<v1::ListClonesRequest>,
    ) -> Result<Response<v1::CrossSiteClones>, Status> {
        transport::authorized(&request)?;
        let clones = self.blocking(|hub| hub.clones()).await?;
        Ok(Response::new(v1::CrossSiteClones {
            clones: clones.into_iter().map(clone_to_wire).collect(),
        }))
    }
}
