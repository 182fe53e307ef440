//! Unit tests for refusal counting, lockout, clearing and the state file.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use super::*;

fn station() -> Caller {
    Caller::new(Role::Station, "site-a", "st-01").unwrap()
}

fn policy(threshold: u32) -> LockoutPolicy {
    LockoutPolicy {
        threshold,
        ..LockoutPolicy::default()
    }
}

#[test]
fn threshold_refusals_lock_out_until_cleared() {
    let t = LockoutTracker::new(policy(3));
    let c = station();
    assert_eq!(t.record_refusal(&c, "r1"), Recorded::Counted);
    assert_eq!(t.record_refusal(&c, "r2"), Recorded::Counted);
    assert!(!t.is_locked(&c.id()));
    assert_eq!(t.record_refusal(&c, "r3"), Recorded::LockedOut);
    assert!(t.is_locked(&c.id()));
    assert_eq!(t.record_refusal(&c, "r4"), Recorded::AlreadyLocked);
    let list = t.lockouts();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].caller, "station/site-a/st-01");
    assert_eq!(list[0].reasons, ["r1", "r2", "r3"]);
    assert!(t.clear(&c.id()));
    assert!(!t.clear(&c.id()));
    assert!(!t.is_locked(&c.id()));
    // Counting starts again from zero.
    assert_eq!(t.record_refusal(&c, "r5"), Recorded::Counted);
}

#[test]
fn refusals_outside_the_window_do_not_count() {
    let t = LockoutTracker::new(LockoutPolicy {
        threshold: 2,
        window_ms: 0,
        ..LockoutPolicy::default()
    });
    let c = station();
    assert_eq!(t.record_refusal(&c, "r1"), Recorded::Counted);
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(t.record_refusal(&c, "r2"), Recorded::Counted);
}

#[test]
fn exempt_roles_are_never_locked_out() {
    let t = LockoutTracker::new(policy(1));
    let admin = Caller::new(Role::Admin, "hq", "alice").unwrap();
    assert_eq!(t.record_refusal(&admin, "r"), Recorded::Exempt);
    assert!(!t.is_locked(&admin.id()));
}

#[test]
fn lockouts_survive_a_restart_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lockouts.json");
    let c = station();
    {
        let t = LockoutTracker::open(policy(1), &path).unwrap();
        assert_eq!(t.record_refusal(&c, "bad"), Recorded::LockedOut);
    }
    let t = LockoutTracker::open(policy(1), &path).unwrap();
    assert!(t.is_locked(&c.id()));
    assert!(t.clear(&c.id()));
    let t = LockoutTracker::open(policy(1), &path).unwrap();
    assert!(!t.is_locked(&c.id()));
    std::fs::write(&path, b"not json").unwrap();
    assert!(matches!(
        LockoutTracker::open(policy(1), &path),
        Err(Error::LockoutState { .. })
    ));
}

#[test]
fn long_reasons_are_cut_at_a_char_boundary() {
    let long = "é".repeat(200);
    let cut = truncate(&long);
    assert!(cut.len() <= MAX_REASON_LEN + '…'.len_utf8());
    assert!(cut.ends_with('…'));
}
