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
//! and hold no owner data. The book is bounded twice (issue 12 item 4):
//! - per caller: each caller (and, for a site-bound caller, its site) holds
//!   at most its [`Budget`] of outstanding challenges; one more is refused
//!   with `RESOURCE_EXHAUSTED` (`busy`) for that caller alone — its expired
//!   challenges are dropped first — so a caller at its budget spends nobody
//!   else's capacity;
//! - overall, as a memory bound: when the book is full, expired challenges
//!   are dropped, and if none has expired a new request is refused with
//!   `UNAVAILABLE` rather than growing without limit.
//!
//! Which process runs the book does not matter: callers are told apart by
//! their certificate identity (`role/site/name`), never by a connection.

use std::collections::{HashMap, HashSet};
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

/// How many challenges one holder may have outstanding at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Per caller (certificate identity).
    pub per_caller: usize,
    /// Per site, summed over the site's callers, for site-bound callers
    /// (stations, sites' uplinks).
    pub per_site: usize,
}

/// Who asks for a challenge, as the budgets see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The caller id (`role/site/name`).
    pub caller: String,
    /// The caller's site when its role is site-bound.
    pub site: Option<String>,
}

impl Requester {
    /// The requester an authenticated caller is.
    pub fn of(caller: &transport::Caller) -> Self {
        Self {
            caller: caller.id(),
            site: caller
                .role()
                .is_site_scoped()
                .then(|| caller.site().to_owned()),
        }
    }

    /// The budget keys this requester counts against, with their limits.
    fn holders(&self, budget: Budget) -> Vec<(Holder, usize)> {
        let mut out = vec![(Holder::Caller(self.caller.clone()), budget.per_caller)];
        if let Some(site) = &self.site {
            out.push((Holder::Site(site.clone()), budget.per_site));
        }
        out
    }
}

/// One budget's holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    Caller(String),
    Site(String),
}

impl Holder {
    fn describe(&self) -> &'static str {
        match self {
            Holder::Caller(_) => "this caller",
            Holder::Site(_) => "this caller's site",
        }
    }
}

#[derive(Debug)]
struct Pending {
    rot_id: String,
    action: Action,
    expires_at_ms: i64,
    holders: Vec<Holder>,
}

#[derive(Debug, Default)]
struct Book {
    pending: HashMap<[u8; CHALLENGE_LEN], Pending>,
    /// The outstanding challenges of each holder.
    held: HashMap<Holder, HashSet<[u8; CHALLENGE_LEN]>>,
}

impl Book {
    fn remove(&mut self, challenge: &[u8; CHALLENGE_LEN]) -> Option<Pending> {
        let pending = self.pending.remove(challenge)?;
        for holder in &pending.holders {
            if let Some(set) = self.held.get_mut(holder) {
                set.remove(challenge);
                if set.is_empty() {
                    self.held.remove(holder);
                }
            }
        }
        Some(pending)
    }

    /// Drops the expired challenges of `holder`; returns how many it still
    /// holds. Costs at most its budget.
    fn purge_holder(&mut self, holder: &Holder, now_ms: i64) -> usize {
        let expired: Vec<[u8; CHALLENGE_LEN]> = self
            .held
            .get(holder)
            .map(|set| {
                set.iter()
                    .filter(|c| {
                        self.pending
                            .get(*c)
                            .is_none_or(|p| p.expires_at_ms <= now_ms)
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for c in &expired {
            self.remove(c);
            if let Some(set) = self.held.get_mut(holder) {
                set.remove(c);
            }
        }
        self.held.get(holder).map_or(0, HashSet::len)
    }

    fn purge_all(&mut self, now_ms: i64) {
        let expired: Vec<[u8; CHALLENGE_LEN]> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires_at_ms <= now_ms)
            .map(|(c, _)| *c)
            .collect();
        for c in &expired {
            self.remove(c);
        }
    }
}

/// The outstanding challenges.
#[derive(Debug)]
pub struct ChallengeBook {
    ttl: Duration,
    max: usize,
    budget: Budget,
    // std Mutex: held only for map operations, never across an await.
    book: Mutex<Book>,
}

impl ChallengeBook {
    /// A book whose challenges live `ttl`, of which at most `max` are
    /// outstanding overall and at most `budget` per holder.
    pub fn new(ttl: Duration, max: usize, budget: Budget) -> Self {
        Self {
            ttl,
            max: max.max(1),
            budget: Budget {
                per_caller: budget.per_caller.max(1),
                per_site: budget.per_site.max(1),
            },
            book: Mutex::new(Book::default()),
        }
    }

    /// Issues a fresh challenge for `action` on `rot_id` to `requester`;
    /// returns it and its expiry (Unix ms).
    ///
    /// # Errors
    /// [`Error::OverBudget`] when the requester (or its site) holds its
    /// budget of unexpired challenges; [`Error::Busy`] when the whole book
    /// is full of unexpired challenges.
    pub fn issue(
        &self,
        requester: &Requester,
        rot_id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<([u8; CHALLENGE_LEN], i64)> {
        let mut challenge = [0u8; CHALLENGE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let holders = requester.holders(self.budget);
        let mut book = self.lock();
        for (holder, limit) in &holders {
            let held = book.held.get(holder).map_or(0, HashSet::len);
            if held >= *limit && book.purge_holder(holder, now_ms) >= *limit {
                return Err(Error::OverBudget {
                    holder: holder.describe(),
                    limit: *limit,
                });
            }
        }
        if book.pending.len() >= self.max {
            book.purge_all(now_ms);
            if book.pending.len() >= self.max {
                return Err(Error::Busy);
            }
        }
        for (holder, _) in &holders {
            book.held
                .entry(holder.clone())
                .or_default()
                .insert(challenge);
        }
        book.pending.insert(
            challenge,
            Pending {
                rot_id: rot_id.to_owned(),
                action,
                expires_at_ms,
                holders: holders.into_iter().map(|(h, _)| h).collect(),
            },
        );
        Ok((challenge, expires_at_ms))
    }

    /// Spends `challenge` for `action` on `rot_id`. The challenge is removed
    /// whether or not it matches, so it can never be presented twice (and
    /// its issuer's budget gets it back).
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
        self.lock().pending.len()
    }

    /// Whether no challenge is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Every operation leaves the two maps consistent before it can
        // panic (none panics while they disagree), so a poisoned lock is
        // usable.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROT: &str = "aa";
    const ROOMY: Budget = Budget {
        per_caller: 100,
        per_site: 100,
    };

    fn op(name: &str) -> Requester {
        Requester::of(
            &transport::Caller::new(transport::Role::Operator, "hq", name).expect("caller"),
        )
    }

    fn station(site: &str, name: &str) -> Requester {
        Requester::of(
            &transport::Caller::new(transport::Role::Station, site, name).expect("caller"),
        )
    }

    #[test]
    fn a_challenge_is_spent_by_its_first_use() {
        let book = ChallengeBook::new(Duration::from_secs(60), 10, ROOMY);
        let (c, _) = book
            .issue(&op("a"), ROT, Action::Onboard, 0)
            .expect("issue");
        book.take(&c, ROT, Action::Onboard, 1).expect("first use");
        assert!(matches!(
            book.take(&c, ROT, Action::Onboard, 2),
            Err(Error::ChallengeRefused)
        ));
    }

    #[test]
    fn a_mismatched_or_expired_challenge_is_refused_and_spent() {
        let book = ChallengeBook::new(Duration::from_millis(10), 10, ROOMY);
        let a = op("a");
        let (c, _) = book.issue(&a, ROT, Action::Retire, 0).expect("issue");
        assert!(book.take(&c, "bb", Action::Retire, 1).is_err());
        // Spent by the failed attempt, even for the right device.
        assert!(book.take(&c, ROT, Action::Retire, 1).is_err());
        let (c, _) = book.issue(&a, ROT, Action::Retire, 0).expect("issue");
        assert!(book.take(&c, ROT, Action::Onboard, 1).is_err());
        let (c, _) = book.issue(&a, ROT, Action::Retire, 0).expect("issue");
        assert!(book.take(&c, ROT, Action::Retire, 10).is_err(), "expired");
        assert!(book.is_empty());
    }

    #[test]
    fn a_full_book_drops_expired_challenges_then_refuses() {
        let book = ChallengeBook::new(Duration::from_millis(10), 2, ROOMY);
        book.issue(&op("a"), ROT, Action::Onboard, 0)
            .expect("issue");
        book.issue(&op("b"), ROT, Action::Onboard, 0)
            .expect("issue");
        assert!(matches!(
            book.issue(&op("c"), ROT, Action::Onboard, 5),
            Err(Error::Busy)
        ));
        book.issue(&op("c"), ROT, Action::Onboard, 20)
            .expect("expired ones purged");
        assert_eq!(book.len(), 1);
    }

    /// Issue 12 item 4: a caller at its budget is refused on its own; other
    /// callers still get challenges; spent or expired challenges give the
    /// budget back; site-bound callers also share their site's budget.
    #[test]
    fn a_caller_at_its_budget_is_refused_alone_and_gets_it_back() {
        let budget = Budget {
            per_caller: 2,
            per_site: 3,
        };
        let book = ChallengeBook::new(Duration::from_millis(100), 1000, budget);
        let (a, b) = (op("a"), op("b"));
        let (first, _) = book.issue(&a, ROT, Action::Onboard, 0).expect("a 1");
        book.issue(&a, ROT, Action::Onboard, 0).expect("a 2");
        let err = book
            .issue(&a, ROT, Action::Onboard, 1)
            .expect_err("a at budget");
        assert!(matches!(err, Error::OverBudget { limit: 2, .. }), "{err:?}");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(err.reason(), "busy");
        book.issue(&b, ROT, Action::Onboard, 1)
            .expect("another caller is unaffected");
        // Spending one gives it back...
        book.take(&first, ROT, Action::Onboard, 2).expect("spent");
        book.issue(&a, ROT, Action::Onboard, 2)
            .expect("budget back");
        assert!(book.issue(&a, ROT, Action::Onboard, 3).is_err());
        // ... and so does expiry.
        book.issue(&a, ROT, Action::Onboard, 200)
            .expect("expired ones no longer count");

        // Stations of one site share its budget; another site's do not.
        let (s1, s2, s3) = (
            station("site-a", "st-1"),
            station("site-a", "st-2"),
            station("site-b", "st-3"),
        );
        book.issue(&s1, ROT, Action::Onboard, 300).expect("s1 1");
        book.issue(&s1, ROT, Action::Onboard, 300).expect("s1 2");
        book.issue(&s2, ROT, Action::Onboard, 300).expect("s2 1");
        let err = book
            .issue(&s2, ROT, Action::Onboard, 300)
            .expect_err("site at budget");
        assert!(
            matches!(
                err,
                Error::OverBudget {
                    holder: "this caller's site",
                    limit: 3
                }
            ),
            "{err:?}"
        );
        book.issue(&s3, ROT, Action::Onboard, 300)
            .expect("another site is unaffected");
        assert_eq!(op("x").site, None, "operators are not site-bound");
    }

    #[test]
    fn actions_round_trip_and_unknown_ones_are_refused() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()).expect("parse"), a);
        }
        assert!(Action::parse("transfer").is_err());
    }
}
