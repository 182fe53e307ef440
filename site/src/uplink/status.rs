//! What the uplink shows: its state, what the hub holds, the latest
//! cosigned checkpoint; the `trustline.v1.Uplink` service that serves it;
//! and the two ways the factory reads what the hub witnessed for its
//! offline allowance ([`provisioner::Allowance`]): from the uplink in this
//! process, or over the ledger process's `Uplink` service when the
//! provisioner runs apart.

use std::sync::Arc;

use custody_ledger::Hash;
use provisioner::{Allowance, Witnessed};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use trustline_proto::v1;
use trustline_proto::v1::uplink_client::UplinkClient;
use trustline_proto::v1::uplink_server::{Uplink, UplinkServer};

use super::store::Cosigned;

/// Where the link to the hub stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Started, not yet in contact with the hub.
    Starting,
    /// The last exchange with the hub succeeded.
    Online,
    /// The hub is unreachable or refused for a reason that may pass:
    /// retrying with backoff.
    Backoff,
    /// The hub said this site's history forks from what it holds (or holds
    /// one this site's ledger does not contain). Stopped for good: an
    /// operator must investigate; the site certifies only within its
    /// offline allowance.
    Forked,
    /// Shut down.
    Stopped,
}

/// What the hub holds for this site, as it last said (`SiteState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubView {
    /// Entries it mirrors.
    pub mirror_size: u64,
    /// Their root.
    pub mirror_root: Hash,
    /// The size of the last checkpoint it cosigned.
    pub cosigned_size: u64,
    /// Its root.
    pub cosigned_root: Hash,
}

impl HubView {
    /// From the wire (a malformed root reads as zeros, which never matches
    /// a real root: the uplink then treats it as a fork).
    pub(crate) fn from_wire(s: &v1::SiteState) -> Self {
        let hash = |b: &[u8]| <Hash>::try_from(b).unwrap_or([0; 32]);
        Self {
            mirror_size: s.mirror_size,
            mirror_root: hash(&s.mirror_root),
            cosigned_size: s.cosigned_size,
            cosigned_root: if s.cosigned_size == 0 {
                custody_ledger::merkle::empty_root()
            } else {
                hash(&s.cosigned_root)
            },
        }
    }

    fn to_wire(self, site: &str) -> v1::SiteState {
        v1::SiteState {
            site: site.to_owned(),
            mirror_size: self.mirror_size,
            mirror_root: self.mirror_root.to_vec(),
            cosigned_size: self.cosigned_size,
            cosigned_root: self.cosigned_root.to_vec(),
            ..Default::default()
        }
    }
}

/// Why the uplink stopped on a fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkReport {
    /// What the hub said, or what the uplink found.
    pub reason: String,
    /// What the hub holds, when it said.
    pub hub: Option<HubView>,
}

/// The uplink's status.
#[derive(Debug, Clone)]
pub struct UplinkStatus {
    /// The link's state.
    pub state: LinkState,
    /// The hub endpoint.
    pub hub: String,
    /// This site's name at the hub.
    pub site: String,
    /// Entries the hub mirrors, as it last said.
    pub hub_mirror_size: u64,
    /// The latest checkpoint the hub cosigned, with its quota uses.
    pub cosigned: Option<Arc<Cosigned>>,
    /// The last successful exchange with the hub, Unix milliseconds (0:
    /// none).
    pub last_contact_ms: i64,
    /// Why the last exchange failed.
    pub last_error: Option<String>,
    /// Set once stopped on a fork.
    pub fork: Option<ForkReport>,
    /// Cosignatures received since start.
    pub cosignatures: u64,
}

impl UplinkStatus {
    /// The tree size of the latest cosigned checkpoint (0: none).
    pub fn cosigned_size(&self) -> u64 {
        self.cosigned.as_ref().map_or(0, |c| c.size)
    }

    /// What the hub witnessed for one quota counter.
    pub fn witnessed(&self, counter: &str) -> Witnessed {
        self.cosigned
            .as_ref()
            .map_or(Witnessed::default(), |c| Witnessed {
                certified: c.quota_uses.get(counter).copied().unwrap_or(0),
                size: c.size,
                time: c.time,
            })
    }

    /// On the wire, with the uses of `counters`.
    pub fn to_wire(&self, ledger_size: u64, counters: &[String]) -> v1::UplinkStatus {
        let state = match self.state {
            LinkState::Starting => v1::UplinkState::Starting,
            LinkState::Online => v1::UplinkState::Online,
            LinkState::Backoff => v1::UplinkState::Backoff,
            LinkState::Forked => v1::UplinkState::Forked,
            LinkState::Stopped => v1::UplinkState::Stopped,
        };
        let c = self.cosigned.as_deref();
        v1::UplinkStatus {
            state: state as i32,
            hub: self.hub.clone(),
            ledger_size,
            hub_mirror_size: self.hub_mirror_size,
            cosigned_size: c.map_or(0, |c| c.size),
            cosigned_root: c.map(|c| c.root.to_vec()).unwrap_or_default(),
            cosigned_note: c.map(|c| c.note.clone()).unwrap_or_default(),
            cosigned_time: c.map_or(0, |c| c.time),
            last_contact_ms: self.last_contact_ms,
            last_error: self.last_error.clone().unwrap_or_default(),
            fork_reason: self
                .fork
                .as_ref()
                .map(|f| f.reason.clone())
                .unwrap_or_default(),
            fork_hub_state: self
                .fork
                .as_ref()
                .and_then(|f| f.hub)
                .map(|h| h.to_wire(&self.site)),
            cosigned_quota_uses: counters
                .iter()
                .map(|k| (k.clone(), self.witnessed(k).certified))
                .collect(),
            cosignatures: self.cosignatures,
        }
    }
}

/// The factory's view of the uplink in this process.
#[derive(Debug, Clone)]
pub struct LocalAllowance {
    status: watch::Receiver<UplinkStatus>,
}

impl LocalAllowance {
    pub(crate) fn new(status: watch::Receiver<UplinkStatus>) -> Self {
        Self { status }
    }
}

#[tonic::async_trait]
impl Allowance for LocalAllowance {
    async fn witnessed(&self, counter: &str) -> Result<Witnessed, Status> {
        Ok(self.status.borrow().witnessed(counter))
    }
}

/// The factory's view of the uplink of the process that runs the ledger
/// (`serve provisioner` apart from `serve ledger`), over its `Uplink`
/// service. Fails closed: an unreachable or absent service is an error,
/// and the factory refuses to certify under an order with an allowance.
#[derive(Debug, Clone)]
pub struct RemoteAllowance {
    client: UplinkClient<tonic::transport::Channel>,
}

impl RemoteAllowance {
    /// Over the (mTLS) channel to the ledger process.
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            client: UplinkClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl Allowance for RemoteAllowance {
    async fn witnessed(&self, counter: &str) -> Result<Witnessed, Status> {
        let s = self
            .client
            .clone()
            .get_uplink_status(v1::GetUplinkStatusRequest {
                quota_counters: vec![counter.to_owned()],
            })
            .await?
            .into_inner();
        Ok(Witnessed {
            certified: s.cosigned_quota_uses.get(counter).copied().unwrap_or(0),
            size: s.cosigned_size,
            time: s.cosigned_time,
        })
    }
}

/// The `trustline.v1.Uplink` service over a running uplink.
#[derive(Debug, Clone)]
pub struct UplinkService {
    status: watch::Receiver<UplinkStatus>,
    ledger: std::sync::Arc<dyn custody_ledger::LedgerEngine>,
}

/// Most quota counters one status read may ask for.
const MAX_COUNTERS: usize = 256;

impl UplinkService {
    pub(crate) fn new(
        status: watch::Receiver<UplinkStatus>,
        ledger: std::sync::Arc<dyn custody_ledger::LedgerEngine>,
    ) -> Self {
        Self { status, ledger }
    }

    /// The tonic server, with the transport's message limits.
    pub fn server(self, limits: &transport::Limits) -> UplinkServer<Self> {
        UplinkServer::new(self)
            .max_decoding_message_size(limits.max_decode_bytes)
            .max_encoding_message_size(limits.max_encode_bytes)
    }
}

#[tonic::async_trait]
impl Uplink for UplinkService {
    async fn get_uplink_status(
        &self,
        request: Request<v1::GetUplinkStatusRequest>,
    ) -> Result<Response<v1::UplinkStatus>, Status> {
        transport::authorized(&request)?;
        let counters = request.into_inner().quota_counters;
        if counters.len() > MAX_COUNTERS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_COUNTERS} quota counters"
            )));
        }
        let status = self.status.borrow().clone();
        Ok(Response::new(status.to_wire(self.ledger.size(), &counters)))
    }
}
