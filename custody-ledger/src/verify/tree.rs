//! The verifier's tree in flat memory: the frontier of every leaf so far,
//! and the leaves since the latest checkpoint's size (a checkpoint record
//! is written a little after the entries it covers, and checkpoint sizes
//! never decrease, so the root of any later checkpoint is computed from
//! these). The whole tree only when asked for.

use crate::merkle::{empty_root, Frontier, Hash, MemoryTree};

pub(super) struct StreamTree {
    /// Every leaf so far.
    all: Frontier,
    /// The tree at the latest settled size.
    base: Frontier,
    /// The leaves from `base.size()` to `all.size()`.
    since: Vec<Hash>,
    full: Option<MemoryTree>,
}

impl StreamTree {
    pub(super) fn new(keep_full: bool) -> Self {
        Self {
            all: Frontier::new(),
            base: Frontier::new(),
            since: Vec::new(),
            full: keep_full.then(MemoryTree::new),
        }
    }

    pub(super) fn push(&mut self, leaf: Hash) {
        self.all.push(leaf, &mut |_| {});
        self.since.push(leaf);
        if let Some(t) = &mut self.full {
            t.push(leaf);
        }
    }

    /// The root of every leaf so far.
    pub(super) fn root(&self) -> Hash {
        if self.all.size() == 0 {
            return empty_root();
        }
        self.all.root()
    }

    /// The root of the first `size` leaves, when `size` is at least the
    /// settled size (or the whole tree is kept) and at most the leaves so
    /// far.
    pub(super) fn root_at(&self, size: u64) -> Option<Hash> {
        if size > self.all.size() {
            return None;
        }
        if size == self.all.size() {
            return Some(self.root());
        }
        if size >= self.base.size() {
            let mut f = self.base.clone();
            let n = usize::try_from(size - self.base.size()).ok()?;
            for leaf in self.since.get(..n)? {
                f.push(*leaf, &mut |_| {});
            }
            return Some(if size == 0 { empty_root() } else { f.root() });
        }
        self.full
            .as_ref()
            .and_then(|t| crate::merkle::root(t, size).ok())
    }

    /// Roots below `size` will not be asked for again.
    pub(super) fn settle(&mut self, size: u64) {
        let Ok(n) = usize::try_from(size.saturating_sub(self.base.size())) else {
            return;
        };
        let n = n.min(self.since.len());
        for leaf in self.since.drain(..n) {
            self.base.push(leaf, &mut |_| {});
        }
    }

    /// The whole tree when it was kept, else an empty one.
    pub(super) fn into_tree(self) -> MemoryTree {
        self.full.unwrap_or_default()
    }
}
