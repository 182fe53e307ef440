//! The publisher thread: signs checkpoints on a short cadence while there
//! are new entries, and on demand.
//!
//! It is the only code that signs, so two checkpoints are never signed
//! concurrently; and before signing it checks, with a consistency proof
//! from the tree it is about to sign to the last signed checkpoint, that the
//! new checkpoint extends the old one (invariant 5, c2sp.org/tlog-checkpoint:
//! "a log MUST not sign any checkpoint which is inconsistent with any
//! checkpoint it previously signed"). The checkpoint is made durable in the
//! segments and in `checkpoint.latest` before anyone sees it.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{LiveNodes, PublisherMsg, Shared, WriterMsg, LATEST_CHECKPOINT_FILE};
use crate::checkpoint::{self, SignedCheckpoint};
use crate::error::{Error, Result};
use crate::merkle;

/// The thread body.
pub(crate) fn run(shared: &Arc<Shared>, rx: mpsc::Receiver<PublisherMsg>) {
    let interval = shared.config.checkpoint_interval;
    let mut next_tick = Instant::now() + interval;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(PublisherMsg::Publish(reply)) => {
                let _ = reply.send(publish(shared));
            }
            Ok(PublisherMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                // A last checkpoint, so that a closed ledger is fully covered.
                if shared.check_running().is_ok() && has_new_entries(shared) {
                    if let Err(e) = publish(shared) {
                        tracing::warn!(error = %e, "publishing the closing checkpoint");
                    }
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                next_tick = Instant::now() + interval;
                if shared.check_running().is_ok() && has_new_entries(shared) {
                    if let Err(e) = publish(shared) {
                        tracing::warn!(error = %e, "publishing a checkpoint");
                    }
                }
            }
        }
    }
}

fn has_new_entries(shared: &Shared) -> bool {
    shared.size() > shared.latest().map_or(0, |c| c.size)
}

/// Signs, records and publishes a checkpoint of every durable entry.
fn publish(shared: &Shared) -> Result<SignedCheckpoint> {
    shared.check_running()?;
    let size = shared.size();
    let last = shared.latest();
    if let Some(l) = &last {
        if size == l.size {
            return Ok(l.clone());
        }
        if size < l.size {
            return Err(Error::corrupt(
                format!("tree size {size}"),
                format!(
                    "the ledger holds fewer entries than its last checkpoint ({})",
                    l.size
                ),
            ));
        }
    }
    let nodes = LiveNodes::new(shared)?;
    let root = merkle::root(&nodes, size)?;
    if let Some(l) = &last {
        let proof = merkle::consistency_proof(&nodes, l.size, size)?;
        merkle::verify_consistency(&proof, &l.root, &root).map_err(|e| {
            let err = Error::corrupt(
                format!("tree size {size}"),
                format!(
                    "refusing to sign a checkpoint inconsistent with the last one ({}): {e}",
                    l.size
                ),
            );
            shared.stop(err.to_string());
            err
        })?;
    }
    let cp = checkpoint::sign(shared.signer.as_ref(), &shared.key, size, &root)?;
    let (tx, rx) = oneshot::channel();
    shared
        .writer_tx
        .send(WriterMsg::Checkpoint {
            checkpoint: cp.clone(),
            reply: tx,
        })
        .map_err(|_| Error::Closed)?;
    rx.blocking_recv().map_err(|_| Error::Closed)??;
    if let Err(e) = shared
        .storage
        .replace(LATEST_CHECKPOINT_FILE, cp.note.as_bytes())
    {
        let err = Error::io(format!("writing {LATEST_CHECKPOINT_FILE}"), e);
        shared.stop(err.to_string());
        return Err(err);
    }
    *shared.latest.write().unwrap_or_else(|p| p.into_inner()) = Some(cp.clone());
    shared.checkpoint_size.send_replace(size);
    tracing::debug!(size, "checkpoint published");
    Ok(cp)
}
