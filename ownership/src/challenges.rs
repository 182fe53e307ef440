//! Single-use, expiring challenges for owner-authorised steps (onboarding,
//! decommissioning, recommissioning, retirement).
//!
//! A challenge is 32 random bytes issued for one device and one step. The
//! owner signs it in an `OwnerAuthorization` and the device signs it in its
//! identity or reset proof, so both signatures are fresh and bound to each
//! other. [`ChallengeBook::take`] removes the challenge on its first
//! presentation, whatever the outcome: a replayed request, or a second try
//! after a refusal, needs a new challenge.
//!
//! Challenges live in memory only (they are worth nothing after a restart)
//! and hold no owner data. The book is bounded: when full, expired
//! challenges are dropped, and if none has expired a new request is refused
//! with `UNAVAILABLE` rather than growing without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::RngCore;

use crate::error::{Error, Result};

/// Length of a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// An owner-authorised step, as named in `OwnerAuthorization.action` and
/// `GetChallengeRequest.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// First onboarding by the current owner.
    Onboard,
    /// Taking the device out of service after a user reset.
    Decommission,
    /// Returning a decommissioned device to service for a new owner.
    Recommission,
    /// End of life.
    Retire,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [
        Action::Onboard,
        Action::Decommission,
        Action::Recommission,
        Action::Retire,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Onboard => "onboard",
            Action::Decommission => "decommission",
            Action::Recommission => "recommission",
            Action::Retire => "retire",
        }
    }

    /// Parses a wire name.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the known actions.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown action {s:?}: expected onboard, decommission, recommission or retire"
                ))
            })
    }
}

#[derive(Debug)]
struct Pending {
    rot_id: String,
    action: Action,
    expires_at_ms: i64,
}

/// The outstanding challenges.
#[derive(Debug)]
pub struct ChallengeBook {
    ttl: Duration,
    max: usize,
    // std Mutex: held only for a map operation, never across an await.
    map: Mutex<HashMap<[u8; CHALLENGE_LEN], Pending>>,
}

impl ChallengeBook {
    /// A book whose challenges live `ttl` and of which at most `max` are
    /// outstanding.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a fresh challenge for `action` on `rot_id`; returns it and its
    /// expiry (Unix ms).
    ///
    /// # Errors
    /// [`Error::Busy`] when the book is full of unexpired challenges.
    pub fn issue(
        &self,
        rot_id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<([u8; CHALLENGE_LEN], i64)> {
        let mut challenge = [0u8; CHALLENGE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let mut map = self.lock();
        if map.len() >= self.max {
            map.retain(|_, p| p.expires_at_ms > now_ms);
            if map.len() >= self.max {
                return Err(Error::Busy);
            }
        }
        map.insert(
            challenge,
            Pending {
                rot_id: rot_id.to_owned(),
                action,
                expires_at_ms,
            },
        );
        Ok((challenge, expires_at_ms))
    }

    /// Spends `challenge` for `action` on `rot_id`. The challenge is removed
    /// whether or not it matches, so it can never be presented twice.
    ///
    /// # Errors
    /// [`Error::ChallengeRefused`] when it was never issued (or already
    /// spent), has expired, or was issued for another device or step.
    pub fn take(&self, challenge: &[u8], rot_id: &str, action: Action, now_ms: i64) -> Result<()> {
        let key: [u8; CHALLENGE_LEN] = challenge.try_into().map_err(|_| Error::ChallengeRefused)?;
        let pending = self.lock().remove(&key).ok_or(Error::ChallengeRefused)?;
        if pending.expires_at_ms <= now_ms || pending.rot_id != rot_id || pending.action != action {
            return Err(Error::ChallengeRefused);
        }
        Ok(())
    }

    /// Challenges outstanding (expired ones included until they are purged).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no challenge is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; CHALLENGE_LEN], Pending>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every operation is one map call), so a poisoned lock is usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROT: &str = "aa";

    #[test]
    fn a_challenge_is_spent_by_its_first_use() {
        let book = ChallengeBook::new(Duration::from_secs(60), 10);
        let (c, _) = book.issue(ROT, Action::Onboard, 0).expect("issue");
        book.take(&c, ROT, Action::Onboard, 1).expect("first use");
        assert!(matches!(
            book.take(&c, ROT, Action::Onboard, 2),
            Err(Error::ChallengeRefused)
        ));
    }

    #[test]
    fn a_mismatched_or_expired_challenge_is_refused_and_spent() {
        let book = ChallengeBook::new(Duration::from_millis(10), 10);
        let (c, _) = book.issue(ROT, Action::Retire, 0).expect("issue");
        assert!(book.take(&c, "bb", Action::Retire, 1).is_err());
        // Spent by the failed attempt, even for the right device.
        assert!(book.take(&c, ROT, Action::Retire, 1).is_err());
        let (c, _) = book.issue(ROT, Action::Retire, 0).expect("issue");
        assert!(book.take(&c, ROT, Action::Onboard, 1).is_err());
        let (c, _) = book.issue(ROT, Action::Retire, 0).expect("issue");
        assert!(book.take(&c, ROT, Action::Retire, 10).is_err(), "expired");
        assert!(book.is_empty());
    }

    #[test]
    fn a_full_book_drops_expired_challenges_then_refuses() {
        let book = ChallengeBook::new(Duration::from_millis(10), 2);
        book.issue(ROT, Action::Onboard, 0).expect("issue");
        book.issue(ROT, Action::Onboard, 0).expect("issue");
        assert!(matches!(
            book.issue(ROT, Action::Onboard, 5),
            Err(Error::Busy)
        ));
        book.issue(ROT, Action::Onboard, 20)
            .expect("expired ones purged");
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn actions_round_trip_and_unknown_ones_are_refused() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()).expect("parse"), a);
        }
        assert!(Action::parse("transfer").is_err());
    }
}
