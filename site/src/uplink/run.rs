//! The uplink's loop: learn what the hub holds, push the entries it lacks,
//! ask it to cosign the latest checkpoint, keep the cosignature; back off
//! while the hub is unreachable; stop for good on a fork.
//!
//! Every answer of the hub is checked against the site's own ledger before
//! it is believed: the roots it says it mirrors and cosigned must be the
//! roots of this ledger at those sizes, and a cosigned note must carry the
//! site's signature and a `cosignature/v1` by the configured witness key.
//! A hub that holds a history this ledger does not contain is a fork as
//! much as a hub that refuses this site's history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use custody_ledger::{Hash, LedgerEngine};
use prost::Message;
use tokio::sync::watch;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::{Code, Status};
use trustline_proto::v1;
use trustline_proto::v1::witness_client::WitnessClient;

use super::config::Settings;
use super::status::{ForkReport, HubView, LinkState, UplinkStatus};
use super::store::{Cosigned, CosignedStore};

/// How long an idle uplink waits for a new checkpoint before it looks for
/// new entries to push ahead of it (so that a checkpoint finds its entries
/// mostly mirrored already, and its cosignature comes one call later).
const PUSH_AHEAD: Duration = Duration::from_millis(100);
/// Resynchronisations in a row answered without backoff.
const FREE_RESYNCS: u32 = 3;
/// Checkpoints remembered until the mirror covers them.
const SEEN_CHECKPOINTS: usize = 64;

/// Why a step did not complete.
#[derive(Debug)]
enum Failure {
    /// The hub's answer moved on from what the uplink believed: ask it
    /// where it stands and resume from there.
    Resync(String),
    /// Unreachable, or refused for a reason that may pass.
    Transient(String),
    /// The histories fork: stop for good.
    Fork(String, Option<HubView>),
    /// Shutting down (the stop signal, or the ledger closed).
    Closed,
}

/// What a step did.
enum Progress {
    Worked,
    Idle,
}

/// The state of one running uplink.
pub(crate) struct Link<T> {
    pub(crate) settings: Settings,
    pub(crate) ledger: Arc<dyn LedgerEngine>,
    pub(crate) client: WitnessClient<T>,
    pub(crate) store: CosignedStore,
    pub(crate) status: watch::Sender<UplinkStatus>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) metrics: transport::UplinkMetrics,
    /// What the hub holds, as it last said (`None`: ask it).
    pub(crate) hub: Option<HubView>,
    /// Checkpoints the ledger published that the hub has not cosigned,
    /// oldest first: while the hub works through a backlog, each one it
    /// covers is cosigned on the way, so the allowance's base keeps moving.
    pub(crate) seen: std::collections::VecDeque<custody_ledger::SignedCheckpoint>,
}

fn now_ms() -> i64 {
    backends::now_ms()
}

/// Sorts a hub refusal into what the uplink does about it.
fn classify(status: &Status) -> Failure {
    let reason = trustline_proto::refusal::refusal_reason(status).unwrap_or("");
    let held = (!status.details().is_empty())
        .then(|| v1::SiteState::decode(status.details()).ok())
        .flatten()
        .map(|s| HubView::from_wire(&s));
    let said = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::AlreadyExists => Failure::Fork(format!("the hub refused: {said}"), held),
        Code::InvalidArgument if reason.starts_with("fork") => {
            Failure::Fork(format!("the hub refused: {said}"), held)
        }
        Code::Aborted => Failure::Resync(said),
        _ => Failure::Transient(format!("the hub: {said}")),
    }
}

fn ledger_failure(e: custody_ledger::Error) -> Failure {
    match e {
        custody_ledger::Error::Closed | custody_ledger::Error::Stopped(_) => Failure::Closed,
        other => Failure::Transient(format!("site ledger: {other}")),
    }
}

impl<T> Link<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    T::Future: Send,
{
    /// The loop; returns when stopped, closed or forked.
    pub(crate) async fn run(mut self) {
        let mut backoff = self.settings.retry_min;
        let mut resyncs = 0u32;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let step = match self.hub {
                None => self.resync().await.map(|()| Progress::Worked),
                Some(_) => self.step().await,
            };
            match step {
                Ok(progress) => {
                    backoff = self.settings.retry_min;
                    if matches!(progress, Progress::Worked) {
                        resyncs = 0;
                    }
                    self.update(|s| {
                        s.state = LinkState::Online;
                        s.last_contact_ms = now_ms();
                        s.last_error = None;
                    });
                    if matches!(progress, Progress::Idle) && !self.idle().await {
                        break;
                    }
                }
                Err(Failure::Resync(said)) => {
                    tracing::debug!(%said, "uplink resynchronising with the hub");
                    self.hub = None;
                    resyncs += 1;
                    if resyncs > FREE_RESYNCS {
                        if !self.pause(backoff).await {
                            break;
                        }
                        backoff = (backoff * 2).min(self.settings.retry_max);
                    }
                }
                Err(Failure::Transient(why)) => {
                    self.hub = None;
                    tracing::warn!(hub = %self.settings.hub, retry_in = ?backoff, "uplink: {why}");
                    self.update(|s| {
                        s.state = LinkState::Backoff;
                        s.last_error = Some(why.clone());
                    });
                    if !self.pause(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(self.settings.retry_max);
                }
                Err(Failure::Fork(reason, hub)) => {
                    tracing::error!(
                        hub = %self.settings.hub,
                        site = %self.settings.site,
                        %reason,
                        "UPLINK STOPPED: this site's ledger and the hub's copy fork; it will not \
                         be retried. Investigate before restarting the site; meanwhile it \
                         certifies only within its offline allowance"
                    );
                    self.metrics.forked.set(1);
                    self.update(|s| {
                        s.state = LinkState::Forked;
                        s.last_error = Some(reason.clone());
                        s.fork = Some(ForkReport { reason, hub });
                    });
                    return;
                }
                Err(Failure::Closed) => break,
            }
        }
        self.update(|s| s.state = LinkState::Stopped);
    }

    fn update(&self, f: impl FnOnce(&mut UplinkStatus)) {
        self.status.send_modify(f);
    }

    /// Sleeps `d` unless stopped first; false when stopped.
    async fn pause(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Waits for a new checkpoint (or, after a short while, new entries);
    /// false when stopped or the ledger closed.
    async fn idle(&mut self) -> bool {
        let held = self.hub.map_or(0, |h| h.cosigned_size);
        let latest = self.ledger.latest_checkpoint().map_or(0, |c| c.size);
        let ledger = self.ledger.clone();
        let mut stop = self.stop.clone();
        tokio::select! {
            r = ledger.wait_for_checkpoint(held.max(latest) + 1) => r.is_ok(),
            () = tokio::time::sleep(PUSH_AHEAD) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// A call to the hub, abandoned when stopped.
    async fn call<R>(
        &mut self,
        f: impl std::future::Future<Output = Result<tonic::Response<R>, Status>>,
    ) -> Result<R, Failure> {
        let mut stop = self.stop.clone();
        tokio::select! {
            r = f => r.map(tonic::Response::into_inner).map_err(|s| classify(&s)),
            _ = stop.wait_for(|s| *s) => Err(Failure::Closed),
        }
    }

    fn request<M>(&self, m: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(m);
        r.set_timeout(self.settings.rpc_timeout);
        r
    }

    /// The root of this site's ledger at `size`.
    async fn local_root(&self, size: u64) -> Result<Hash, Failure> {
        self.ledger.root(size).await.map_err(ledger_failure)
    }

    /// Asks the hub what it holds, checks it against this ledger, and
    /// takes over a cosignature the uplink has not kept yet (one made
    /// before the site last stopped).
    async fn resync(&mut self) -> Result<(), Failure> {
        let req = self.request(v1::GetSiteStateRequest {
            site: self.settings.site.clone(),
        });
        let mut client = self.client.clone();
        let state = self.call(client.get_site_state(req)).await?;
        let expected = self.ledger.ledger_key().origin().to_owned();
        if state.origin != expected {
            return Err(Failure::Transient(format!(
                "the hub knows site {} with checkpoint origin {:?}, not {expected:?}",
                self.settings.site, state.origin
            )));
        }
        let view = HubView::from_wire(&state);
        let size = self.ledger.size();
        if view.mirror_size > size {
            return Err(Failure::Fork(
                format!(
                    "the hub mirrors {} entries of this site but its ledger holds {size}: the \
                     ledger lost entries the hub holds, or another history was pushed in its name",
                    view.mirror_size
                ),
                Some(view),
            ));
        }
        if self.local_root(view.mirror_size).await? != view.mirror_root {
            return Err(Failure::Fork(
                format!(
                    "the root of the {} entries the hub mirrors is not this ledger's root at that \
                     size: the histories differ",
                    view.mirror_size
                ),
                Some(view),
            ));
        }
        if view.cosigned_size > view.mirror_size {
            return Err(Failure::Transient(format!(
                "the hub says it cosigned {} entries but mirrors only {}",
                view.cosigned_size, view.mirror_size
            )));
        }
        if self.local_root(view.cosigned_size).await? != view.cosigned_root {
            return Err(Failure::Fork(
                format!(
                    "the hub cosigned a root for size {} that is not this ledger's",
                    view.cosigned_size
                ),
                Some(view),
            ));
        }
        let kept = self.status.borrow().cosigned_size();
        if view.cosigned_size > kept {
            let time = self.check_cosigned(&state.cosigned_note, &view)?;
            self.keep(
                view.cosigned_size,
                view.cosigned_root,
                state.cosigned_note,
                time,
            )
            .await?;
        } else if view.cosigned_size < kept {
            tracing::warn!(
                hub = view.cosigned_size,
                kept,
                "the hub's cosigned size is below the one this site kept (a hub restored from \
                 an older backup?); pushing from where it stands"
            );
        }
        self.hub = Some(view);
        self.update(|s| s.hub_mirror_size = view.mirror_size);
        Ok(())
    }

    /// Checks a cosigned note of this site's ledger: the site's signature,
    /// the size and root the hub named, and the witness's cosignature.
    /// Returns the cosignature's time.
    fn check_cosigned(&self, note: &str, view: &HubView) -> Result<u64, Failure> {
        let key = self.ledger.ledger_key();
        let cp = custody_ledger::checkpoint::open(note, key.spki(), Some(key.origin())).map_err(
            |e| {
                Failure::Transient(format!(
                    "the hub's cosigned note does not carry this site's signature: {e}"
                ))
            },
        )?;
        if cp.size != view.cosigned_size || cp.root != view.cosigned_root {
            return Err(Failure::Transient(
                "the hub's cosigned note names another size or root than its state".into(),
            ));
        }
        self.settings.witness.verify(note).map_err(|e| {
            Failure::Transient(format!(
                "the hub's cosignature does not verify under the configured witness key: {e}"
            ))
        })
    }

    /// Keeps a verified cosignature: counts the quota uses it adds, saves
    /// it durably, then publishes it.
    async fn keep(
        &mut self,
        size: u64,
        root: Hash,
        note: String,
        time: u64,
    ) -> Result<(), Failure> {
        let (from, mut uses) = match self.status.borrow().cosigned.as_deref() {
            Some(c) => (c.size, c.quota_uses.clone()),
            None => (0, BTreeMap::new()),
        };
        uses = count_uses(&*self.ledger, from, size, uses)
            .await
            .map_err(ledger_failure)?;
        let cosigned = Cosigned {
            size,
            root,
            note,
            time,
            quota_uses: uses,
        };
        let store = self.store.clone();
        let saved = cosigned.clone();
        tokio::task::spawn_blocking(move || store.save(&saved))
            .await
            .map_err(|_| Failure::Closed)?
            .map_err(|e| Failure::Transient(format!("keeping the cosignature: {e}")))?;
        let ledger_size = self.ledger.size();
        self.metrics
            .cosigned_size
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        self.metrics
            .unwitnessed
            .set(i64::try_from(ledger_size.saturating_sub(size)).unwrap_or(i64::MAX));
        self.update(|s| s.cosigned = Some(Arc::new(cosigned)));
        tracing::debug!(size, "cosigned checkpoint kept");
        Ok(())
    }

    /// Pushes what the hub lacks, or asks for a cosignature of the latest
    /// checkpoint.
    async fn step(&mut self) -> Result<Progress, Failure> {
        let Some(view) = self.hub else {
            return Err(Failure::Resync("unknown hub state".into()));
        };
        let size = self.ledger.size();
        if let Some(cp) = self.ledger.latest_checkpoint() {
            if self.seen.back().is_none_or(|b| b.size < cp.size) {
                self.seen.push_back(cp);
                if self.seen.len() > SEEN_CHECKPOINTS {
                    self.seen.pop_front();
                }
            }
        }
        self.seen.retain(|c| c.size > view.cosigned_size);
        // Cosign first the newest checkpoint the mirror already covers.
        if let Some(cp) = self
            .seen
            .iter()
            .rev()
            .find(|c| c.size <= view.mirror_size)
            .cloned()
        {
            self.add_checkpoint(view, cp).await?;
            return Ok(Progress::Worked);
        }
        if view.mirror_size < size {
            self.push(view, size).await?;
            return Ok(Progress::Worked);
        }
        Ok(Progress::Idle)
    }

    async fn push(&mut self, view: HubView, size: u64) -> Result<(), Failure> {
        let start = view.mirror_size;
        let (batch, max_bytes) = (self.settings.push_batch, self.settings.push_max_bytes);
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut next = start;
        while next < size && entries.len() < batch && bytes < max_bytes {
            let chunk = self
                .ledger
                .entries(next, size, (batch - entries.len()).min(256))
                .await
                .map_err(ledger_failure)?;
            if chunk.is_empty() {
                break;
            }
            for e in chunk {
                bytes += e.entry.len();
                next += 1;
                entries.push(e.entry);
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        let pushed = entries.len() as u64;
        let req = self.request(v1::PushEntriesRequest {
            site: self.settings.site.clone(),
            start,
            entries,
        });
        let mut client = self.client.clone();
        let state = self.call(client.push_entries(req)).await?;
        let after = HubView::from_wire(&state);
        if after.mirror_size < start + pushed || after.mirror_size > self.ledger.size() {
            return Err(Failure::Resync(format!(
                "the hub mirrors {} entries after a push of [{start}, {})",
                after.mirror_size,
                start + pushed
            )));
        }
        if self.local_root(after.mirror_size).await? != after.mirror_root {
            return Err(Failure::Fork(
                format!(
                    "after the push the hub's root of {} entries is not this ledger's",
                    after.mirror_size
                ),
                Some(after),
            ));
        }
        self.hub = Some(HubView {
            cosigned_size: view.cosigned_size,
            cosigned_root: view.cosigned_root,
            ..after
        });
        self.update(|s| s.hub_mirror_size = after.mirror_size);
        Ok(())
    }

    async fn add_checkpoint(
        &mut self,
        view: HubView,
        cp: custody_ledger::SignedCheckpoint,
    ) -> Result<(), Failure> {
        let proof = if view.cosigned_size == 0 {
            Vec::new()
        } else {
            self.ledger
                .consistency_proof(view.cosigned_size, cp.size)
                .await
                .map_err(ledger_failure)?
                .path
                .iter()
                .map(|h| h.to_vec())
                .collect()
        };
        let req = self.request(v1::AddCheckpointRequest {
            old_size: view.cosigned_size,
            consistency_proof: proof,
            checkpoint: cp.note.clone(),
        });
        let mut client = self.client.clone();
        let answer = self.call(client.add_checkpoint(req)).await?;
        if answer.cosigned_note != format!("{}{}", cp.note, answer.signature_lines) {
            return Err(Failure::Transient(
                "the hub's cosigned note is not the checkpoint with its signature lines".into(),
            ));
        }
        let held = HubView {
            cosigned_size: cp.size,
            cosigned_root: cp.root,
            ..view
        };
        let time = self.check_cosigned(&answer.cosigned_note, &held)?;
        self.keep(cp.size, cp.root, answer.cosigned_note, time)
            .await?;
        self.hub = Some(held);
        self.metrics.cosignatures.inc();
        self.update(|s| s.cosignatures += 1);
        Ok(())
    }
}

/// Adds to `uses` the quota uses of entries `[from, to)` of `ledger`.
pub(crate) async fn count_uses(
    ledger: &dyn LedgerEngine,
    from: u64,
    to: u64,
    mut uses: BTreeMap<String, u64>,
) -> custody_ledger::Result<BTreeMap<String, u64>> {
    let mut next = from;
    while next < to {
        let chunk = ledger.entries(next, to, 4096).await?;
        if chunk.is_empty() {
            return Err(custody_ledger::Error::NotFound(format!(
                "entry {next} (counting quota uses up to {to})"
            )));
        }
        for stored in chunk {
            next = stored.seq + 1;
            let entry = v1::LedgerEntry::decode(stored.entry.as_slice()).map_err(|e| {
                custody_ledger::Error::InvalidArgument(format!("entry {}: {e}", stored.seq))
            })?;
            if let Some(q) = entry.quota {
                *uses.entry(q.counter).or_insert(0) += 1;
            }
        }
    }
    Ok(uses)
}
