//! Watching for signs of compromise: repeated refused requests lock a caller
//! out until an admin clears it (2.4.14.21).
//!
//! # What counts
//!
//! A call counts as refused when its final gRPC status is one that says "the
//! caller asked for something it should not have" ([`counts_as_refusal`]):
//!
//! | code | typical source |
//! | --- | --- |
//! | `PERMISSION_DENIED` | role × RPC table, another site's order, locked-out peers |
//! | `UNAUTHENTICATED` | a certificate that names no caller |
//! | `INVALID_ARGUMENT` | malformed or wrongly signed statements |
//! | `FAILED_PRECONDITION` | steps out of order, unclaimed devices, closed orders |
//! | `ALREADY_EXISTS` | duplicate serial, RoT or key (clones) |
//! | `OUT_OF_RANGE` | oversized messages, serials outside the order |
//! | `RESOURCE_EXHAUSTED` | rate and concurrency limits, exhausted quotas |
//!
//! Not counted: `OK`, `NOT_FOUND` (lookups), `CANCELLED`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `UNIMPLEMENTED`,
//! `DATA_LOSS` — server-side or network conditions the caller did not cause.
//!
//! Services report refusals simply by returning these statuses: the guard
//! layer sees every response's `grpc-status` (headers or trailers).
//!
//! # Policy
//!
//! `threshold` refusals within `window_ms` lock the caller out: every further
//! call is refused with `PERMISSION_DENIED` ("locked out") before its handler
//! runs, until an admin calls `Admin.ClearLockout`. Every refusal is logged
//! (`tracing` target `trustline::lockout`) with the caller id, method, code
//! and message. Roles in `exempt_roles` are logged but never locked out: by
//! default `admin` (the only role that can clear lockouts) and `provisioner`
//! (its refusals by the CA or the ledger are consequences of a station's
//! request, which is already counted against that station).
//!
//! Lockouts survive a restart when the tracker is opened with a state file
//! ([`LockoutTracker::open`]); otherwise restarting the server clears them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::identity::{Caller, Role};
use crate::Error;

/// Most reasons kept per lockout.
const MAX_REASONS: usize = 10;
/// Longest reason text kept (bytes, cut at a character boundary).
const MAX_REASON_LEN: usize = 240;

/// When refusals turn into a lockout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Refusals within the window that lock a caller out.
    pub threshold: u32,
    /// The sliding window, in milliseconds.
    pub window_ms: u64,
    /// Roles that are logged but never locked out.
    pub exempt_roles: Vec<Role>,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            threshold: 20,
            window_ms: 60_000,
            exempt_roles: vec![Role::Admin, Role::Provisioner],
        }
    }
}

/// Whether a final status counts towards a lockout (see the module docs).
pub fn counts_as_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::ResourceExhausted
    )
}

/// One locked-out caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The caller id, `role/site/name`.
    pub caller: String,
    /// When the lockout began, Unix milliseconds.
    pub since_ms: i64,
    /// The refusals that led to it, most recent last.
    pub reasons: Vec<String>,
}

/// What recording one refusal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// Counted; the caller is still below the threshold.
    Counted,
    /// This refusal crossed the threshold: the caller is now locked out.
    LockedOut,
    /// The caller was already locked out; nothing more to count.
    AlreadyLocked,
    /// The caller's role is exempt; only logged.
    Exempt,
}

/// Refusal counts and lockouts, shared by every connection of a server (and
/// by servers in one process when they share it).
///
/// A std `Mutex`, not a tokio one: every critical section is short and never
/// awaits. The state file is written inside it, which is blocking I/O on an
/// async worker; it happens only when a lockout begins or is cleared, and
/// holding the lock keeps the file in the same order as the changes.
#[derive(Debug)]
pub struct LockoutTracker {
    policy: LockoutPolicy,
    state_file: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    recent: HashMap<String, VecDeque<(Instant, String)>>,
    locked: BTreeMap<String, LockRecord>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    lockouts: Vec<LockRecord>,
}

impl LockoutTracker {
    /// A tracker whose lockouts live in memory only.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            state_file: None,
            state: Mutex::new(State::default()),
        }
    }

    /// A tracker that keeps its lockouts in `path` (JSON), loading any that
    /// are there, so a restart is not a way to clear a lockout.
    ///
    /// # Errors
    /// [`Error::Io`] when the file exists but cannot be read;
    /// [`Error::LockoutState`] when it does not parse.
    pub fn open(policy: LockoutPolicy, path: &Path) -> Result<Self, Error> {
        let mut state = State::default();
        match std::fs::read(path) {
            Ok(bytes) => {
                let file: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| Error::LockoutState {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                for record in file.lockouts {
                    state.locked.insert(record.caller.clone(), record);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        Ok(Self {
            policy,
            state_file: Some(path.to_owned()),
            state: Mutex::new(state),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Whether the caller id (`role/site/name`) is locked out.
    pub fn is_locked(&self, caller_id: &str) -> bool {
        self.lock().locked.contains_key(caller_id)
    }

    /// Counts one refused call by `caller` and locks it out when this crosses
    /// the threshold. `reason` should say what was refused and why, e.g.
    /// `"/trustline.v1.Provisioning/Certify: AlreadyExists: serial SN-1 is taken"`.
    pub fn record_refusal(&self, caller: &Caller, reason: &str) -> Recorded {
        if self.policy.exempt_roles.contains(&caller.role()) {
            return Recorded::Exempt;
        }
        let id = caller.id();
        let now = Instant::now();
        let window = Duration::from_millis(self.policy.window_ms);
        let mut state = self.lock();
        if state.locked.contains_key(&id) {
            return Recorded::AlreadyLocked;
        }
        let recent = state.recent.entry(id.clone()).or_default();
        while recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            recent.pop_front();
        }
        recent.push_back((now, truncate(reason)));
        if recent.len() < usize::try_from(self.policy.threshold.max(1)).unwrap_or(usize::MAX) {
            return Recorded::Counted;
        }
        let reasons: Vec<String> = recent
            .iter()
            .rev()
            .take(MAX_REASONS)
            .rev()
            .map(|(_, r)| r.clone())
            .collect();
        state.recent.remove(&id);
        state.locked.insert(
            id.clone(),
            LockRecord {
                caller: id,
                since_ms: unix_ms(),
                reasons,
            },
        );
        self.persist(&state);
        Recorded::LockedOut
    }

    /// Every current lockout, ordered by caller id.
    pub fn lockouts(&self) -> Vec<LockRecord> {
        self.lock().locked.values().cloned().collect()
    }

    /// Lifts a lockout; `true` when the caller was locked out. Its refusal
    /// count starts again from zero.
    pub fn clear(&self, caller_id: &str) -> bool {
        let mut state = self.lock();
        state.recent.remove(caller_id);
        let was_locked = state.locked.remove(caller_id).is_some();
        if was_locked {
            self.persist(&state);
        }
        was_locked
    }

    /// Number of callers locked out now.
    pub fn count(&self) -> usize {
        self.lock().locked.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps behind (every
        // update is a single insert or remove), so the poison is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the lockouts to the state file (temp file, fsync, rename). A
    /// failure is logged and the in-memory state stays authoritative: failing
    /// the write must not un-lock anyone.
    fn persist(&self, state: &State) {
        let Some(path) = &self.state_file else {
            return;
        };
        let file = StateFile {
            lockouts: state.locked.values().cloned().collect(),
        };
        if let Err(e) = write_atomically(path, &file) {
            tracing::error!(target: "trustline::lockout", path = %path.display(), error = %e, "could not save lockouts");
        }
    }
}

fn write_atomically(path: &Path, file: &StateFile) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn truncate(reason: &str) -> String {
    if reason.len() <= MAX_REASON_LEN {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
