//! Reading the live ledger: entries, key lookups, quotas, roots, proofs
//! and device histories. Readers see exactly the durable entries: the
//! overlay first, then the index.

use std::collections::BTreeMap;

use super::{DeviceHistory, Ledger, LiveNodes, ProvenEntry};
use crate::checkpoint::SignedCheckpoint;
use crate::entry::{StoredEntry, UniqueKey};
use crate::error::{Error, Result};
use crate::merkle::{self, ConsistencyProof, Hash, InclusionProof};

impl Ledger {
    /// The exact stored bytes of entry `seq`.
    ///
    /// # Errors
    /// [`Error::NotFound`] past the end; [`Error::Corrupt`] when the stored
    /// record fails its checksum.
    pub fn get_entry(&self, seq: u64) -> Result<Vec<u8>> {
        self.shared.check_running()?;
        let size = self.size();
        if seq >= size {
            return Err(Error::NotFound(format!(
                "entry {seq} (the ledger has {size} entries)"
            )));
        }
        self.shared.read_entry(seq)
    }

    /// Entries `[start, end)`, at most `limit` of them; `end` is clamped to
    /// the durable size.
    ///
    /// # Errors
    /// As [`Ledger::get_entry`].
    pub fn entries(&self, start: u64, end: u64, limit: usize) -> Result<Vec<StoredEntry>> {
        self.shared.check_running()?;
        let end = end.min(self.size()).min(start.saturating_add(limit as u64));
        (start..end)
            .map(|seq| {
                Ok(StoredEntry {
                    seq,
                    entry: self.shared.read_entry(seq)?,
                })
            })
            .collect()
    }

    /// The entry holding `key`, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed key; [`Error::Index`].
    pub fn lookup_key(&self, key: &UniqueKey) -> Result<Option<u64>> {
        self.shared.check_running()?;
        key.validate()?;
        let enc = key.index_key();
        if let Some(seq) = self.shared.overlay().key_holder(&enc) {
            return Ok(Some(seq));
        }
        self.shared.index.key_holder(&enc)
    }

    /// How many durable entries count against `counter`.
    ///
    /// # Errors
    /// [`Error::Stopped`] / [`Error::Closed`].
    pub fn quota(&self, counter: &str) -> Result<u64> {
        self.shared.check_running()?;
        Ok(self.shared.quotas().get(counter).copied().unwrap_or(0))
    }

    fn resolve_size(&self, tree_size: u64) -> Result<u64> {
        if tree_size == 0 {
            return self
                .latest_checkpoint()
                .map(|c| c.size)
                .ok_or_else(|| Error::NotFound("no checkpoint has been published yet".into()));
        }
        let size = self.size();
        if tree_size > size {
            return Err(Error::OutOfRange(format!(
                "tree size {tree_size} is beyond the ledger's {size} entries"
            )));
        }
        Ok(tree_size)
    }

    /// The inclusion proof of entry `seq` in the tree of `tree_size`
    /// entries (0: the latest checkpoint's size).
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::NotFound`] (no checkpoint yet).
    pub fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<InclusionProof> {
        self.shared.check_running()?;
        let size = self.resolve_size(tree_size)?;
        merkle::inclusion_proof(&LiveNodes::new(&self.shared)?, seq, size)
    }

    /// The consistency proof from `from_size` to `to_size` (0: the latest
    /// checkpoint's size).
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::NotFound`] (no checkpoint yet).
    pub fn consistency_proof(&self, from_size: u64, to_size: u64) -> Result<ConsistencyProof> {
        self.shared.check_running()?;
        let to = self.resolve_size(to_size)?;
        merkle::consistency_proof(&LiveNodes::new(&self.shared)?, from_size, to)
    }

    /// The root hash of the tree of `tree_size` entries (0: the latest
    /// checkpoint's size).
    ///
    /// # Errors
    /// As [`Ledger::inclusion_proof`].
    pub fn root(&self, tree_size: u64) -> Result<Hash> {
        let size = self.resolve_size(tree_size)?;
        merkle::root(&LiveNodes::new(&self.shared)?, size)
    }

    /// Every entry of the device `rot_id` (2.4.14.12), each with an
    /// inclusion proof against one checkpoint. A checkpoint is published
    /// first when the latest one does not cover the device's last entry.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed `rot_id`, plus those of
    /// [`Ledger::publish_checkpoint`].
    pub async fn device_history(&self, rot_id: &str) -> Result<DeviceHistory> {
        self.shared.check_running()?;
        if !trustline_proto::identity::is_well_formed_rot_id(rot_id) {
            return Err(Error::InvalidArgument(
                "rot_id must be 64 lowercase hex characters".into(),
            ));
        }
        let seqs = self.device_seqs(rot_id)?;
        let covered = self.latest_checkpoint().map_or(0, |c| c.size);
        let needs = seqs.last().map_or(0, |&s| s + 1);
        let checkpoint = match self.latest_checkpoint() {
            Some(c) if covered >= needs => c,
            _ => self.publish_checkpoint().await?,
        };
        let this = self.clone();
        let rot = rot_id.to_string();
        tokio::task::spawn_blocking(move || this.prove_history(&rot, checkpoint))
            .await
            .map_err(|_| Error::Closed)?
    }

    fn device_seqs(&self, rot_id: &str) -> Result<Vec<u64>> {
        let rot = crate::index::rot_bytes(rot_id)?;
        let mut seqs: BTreeMap<u64, ()> = BTreeMap::new();
        // The overlay first: an entry the indexer moves in between is then
        // seen in one place or both, never in neither.
        for seq in self.shared.overlay().device_seqs(&rot) {
            seqs.insert(seq, ());
        }
        for (seq, _) in self.shared.index.device_entries(&rot)? {
            seqs.insert(seq, ());
        }
        Ok(seqs.into_keys().collect())
    }

    fn prove_history(&self, rot_id: &str, checkpoint: SignedCheckpoint) -> Result<DeviceHistory> {
        let nodes = LiveNodes::new(&self.shared)?;
        let mut entries = Vec::new();
        for seq in self.device_seqs(rot_id)? {
            if seq >= checkpoint.size {
                break;
            }
            entries.push(ProvenEntry {
                entry: StoredEntry {
                    seq,
                    entry: self.shared.read_entry(seq)?,
                },
                proof: merkle::inclusion_proof(&nodes, seq, checkpoint.size)?,
            });
        }
        Ok(DeviceHistory {
            checkpoint,
            entries,
        })
    }
}
