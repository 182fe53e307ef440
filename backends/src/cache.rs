//! The one bounded cache of the services: [`BoundedCache`], a fixed-size
//! map with CLOCK ("second chance") eviction.
//!
//! # What may live here
//!
//! Only data that can be reloaded — from the custody ledger (claimed RoTs,
//! orders, delivered keys, device records, certification results) or by
//! recomputing it from the request (a verified vendor issuer) — because the
//! cache may drop any entry at any time: when it is full, and at every
//! restart. Correctness never depends on a hit; a miss costs one ledger read
//! or one verification. State that cannot be reloaded is not a cache: the
//! factory's pending claims and the ownership service's outstanding
//! challenges are bounded maps of their own that refuse with `Busy` when
//! full, and never evict.
//!
//! # Eviction
//!
//! CLOCK: entries sit in a ring of `capacity` slots, each with a
//! "referenced" bit set on every hit. When the ring is full, the hand sweeps
//! it, clearing bits, and evicts the first entry whose bit was already
//! clear. A recently used entry thus survives one sweep more than one that
//! was not, which approximates least-recently-used at O(1) amortised per
//! operation with no per-hit reordering — a hit only sets a bit. The ring
//! and its index are behind one std `Mutex`, held for a single map
//! operation and never across an `.await`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// A map of at most `capacity` entries with CLOCK eviction (see the module
/// doc for what may be kept in it).
#[derive(Debug)]
pub struct BoundedCache<K, V> {
    ring: Mutex<Ring<K, V>>,
}

#[derive(Debug)]
struct Ring<K, V> {
    capacity: usize,
    slots: Vec<Slot<K, V>>,
    index: HashMap<K, usize>,
    hand: usize,
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    referenced: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: Mutex::new(Ring {
                capacity,
                slots: Vec::new(),
                index: HashMap::new(),
                hand: 0,
            }),
        }
    }

    /// The cached value of `key`, if any; marks it recently used.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut ring = self.lock();
        let i = *ring.index.get(key)?;
        let slot = &mut ring.slots[i];
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Caches `value` under `key`, replacing any cached value; evicts one
    /// entry when full.
    pub fn insert(&self, key: K, value: V) {
        self.lock().put(key, value);
    }

    /// The cached value of `key`, or `make()` cached and returned: when two
    /// callers race, both get the value that was cached first.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        let mut ring = self.lock();
        if let Some(&i) = ring.index.get(&key) {
            let slot = &mut ring.slots[i];
            slot.referenced = true;
            return slot.value.clone();
        }
        let value = make();
        ring.put(key, value.clone());
        value
    }

    /// Caches `value` under `key` unless the cached value is to be kept
    /// (`keep_cached` returns true for it), e.g. because it is newer.
    pub fn insert_unless(&self, key: K, value: V, keep_cached: impl FnOnce(&V) -> bool) {
        let mut ring = self.lock();
        if let Some(&i) = ring.index.get(&key) {
            if keep_cached(&ring.slots[i].value) {
                return;
            }
        }
        ring.put(key, value);
    }

    /// How many entries are cached.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    fn lock(&self) -> MutexGuard<'_, Ring<K, V>> {
        // Every operation leaves the ring and its index consistent before it
        // can panic (only allocation can), so a poisoned lock still guards a
        // consistent cache.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Hash + Eq + Clone, V> Ring<K, V> {
    fn put(&mut self, key: K, value: V) {
        if let Some(&i) = self.index.get(&key) {
            let slot = &mut self.slots[i];
            slot.value = value;
            slot.referenced = true;
            return;
        }
        let slot = Slot {
            key: key.clone(),
            value,
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return;
        }
        // Full: sweep for an entry not used since the hand last passed it.
        // At most one full turn clears every bit, so this ends.
        loop {
            let hand = self.hand;
            self.hand = (hand + 1) % self.capacity;
            let candidate = &mut self.slots[hand];
            if candidate.referenced {
                candidate.referenced = false;
                continue;
            }
            let evicted = std::mem::replace(candidate, slot);
            self.index.remove(&evicted.key);
            self.index.insert(key, hand);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let cache = BoundedCache::new(3);
        for i in 0..100u32 {
            cache.insert(i, i * 2);
            assert!(cache.len() <= 3);
            assert_eq!(cache.get(&i), Some(i * 2), "the newest entry is kept");
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(BoundedCache::<u8, u8>::new(0).capacity(), 1);
    }

    #[test]
    fn a_recently_used_entry_outlives_one_that_was_not() {
        let cache = BoundedCache::new(3);
        for i in 0..3u32 {
            cache.insert(i, ());
        }
        // Fill again so that the hand has swept once and every bit is clear.
        assert!(cache.get(&0).is_some());
        cache.insert(3, ()); // evicts 1: 0 was used, its bit saved it
        assert!(cache.get(&0).is_some());
        assert!(cache.get(&1).is_none());
        assert!(cache.get(&2).is_some());
        assert!(cache.get(&3).is_some());
    }

    #[test]
    fn replacing_a_key_keeps_one_entry() {
        let cache = BoundedCache::new(2);
        cache.insert("a".to_owned(), 1);
        cache.insert("a".to_owned(), 2);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn get_or_insert_keeps_the_first_value_and_insert_unless_keeps_newer_ones() {
        let cache = BoundedCache::new(4);
        assert_eq!(cache.get_or_insert_with(1, || "first"), "first");
        assert_eq!(cache.get_or_insert_with(1, || "second"), "first");
        cache.insert_unless(2, "absent", |_| true);
        assert_eq!(cache.get(&2), Some("absent"), "nothing cached: inserted");
        let counts = BoundedCache::new(4);
        counts.insert(7, 5u64);
        counts.insert_unless(7, 3, |cached| *cached > 3);
        assert_eq!(
            counts.get(&7),
            Some(5),
            "an older value does not replace a newer one"
        );
        counts.insert_unless(7, 9, |cached| *cached > 9);
        assert_eq!(counts.get(&7), Some(9));
    }
}
