//! A bounded window of recently seen task ids, for dedup. Used by the
//! endpoint (completed tasks) and the service (accepted results); both
//! persist it, so each insert says which id left the window.

use std::collections::VecDeque;

use crate::idmap::{id_hasher, IdSet};
use crate::ids::TaskId;

/// The last `capacity` distinct ids inserted.
#[derive(Clone, Debug)]
pub struct DedupWindow {
    order: VecDeque<TaskId>,
    /// Membership only: never iterated, so its order reaches no output.
    set: IdSet,
    capacity: usize,
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self::new(0)
    }
}

impl DedupWindow {
    /// An empty window of `capacity` ids, its hash keyed by a fixed seed.
    pub fn new(capacity: usize) -> Self {
        Self::keyed(capacity, 0)
    }

    /// An empty window of `capacity` ids whose hash is keyed by `seed`
    /// (ids come from clients: a seed they do not know keeps them from
    /// aiming collisions at it).
    pub fn keyed(capacity: usize, seed: u64) -> Self {
        Self { order: VecDeque::new(), set: IdSet::with_hasher(id_hasher(seed)), capacity }
    }

    /// A window holding `ids` (oldest first), trimmed to `capacity`.
    pub fn restore(capacity: usize, ids: impl IntoIterator<Item = TaskId>) -> Self {
        Self::restore_keyed(capacity, 0, ids)
    }

    /// [`DedupWindow::restore`] with the hash keyed by `seed`.
    pub fn restore_keyed(capacity: usize, seed: u64, ids: impl IntoIterator<Item = TaskId>) -> Self {
        let mut w = Self::keyed(capacity, seed);
        for id in ids {
            w.insert(id);
        }
        w
    }

    /// Whether `id` is in the window.
    pub fn contains(&self, id: &TaskId) -> bool {
        self.set.contains(id)
    }

    /// Adds `id`; returns the id that left the window to make room (which is
    /// `id` itself for a window of capacity 0). Inserting an id already
    /// present changes nothing.
    pub fn insert(&mut self, id: TaskId) -> Option<TaskId> {
        if self.capacity == 0 {
            return Some(id);
        }
        if !self.set.insert(id.clone()) {
            return None;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            let old = self.order.pop_front().expect("over capacity, so not empty");
            self.set.remove(&old);
            return Some(old);
        }
        None
    }

    /// Ids in the window, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &TaskId> {
        self.order.iter()
    }

    /// How many ids the window holds.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    #[test]
    fn evicts_oldest_and_ignores_repeats() {
        let mut w = DedupWindow::new(2);
        assert_eq!(w.insert(id("a")), None);
        assert_eq!(w.insert(id("b")), None);
        assert_eq!(w.insert(id("a")), None);
        assert_eq!(w.insert(id("c")), Some(id("a")));
        assert!(!w.contains(&id("a")) && w.contains(&id("b")) && w.contains(&id("c")));
        assert_eq!(w.iter().cloned().collect::<Vec<_>>(), vec![id("b"), id("c")]);
        assert_eq!(DedupWindow::new(0).insert(id("x")), Some(id("x")));
        assert_eq!(DedupWindow::restore(1, [id("p"), id("q")]).iter().collect::<Vec<_>>(), vec![&id("q")]);
    }
}
