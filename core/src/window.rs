//! A bounded window of recently seen task ids, for dedup. Used by the
//! endpoint (completed tasks) and the service (accepted results); both
//! persist it, so each insert says which id left the window.

use std::collections::{BTreeSet, VecDeque};

use crate::ids::TaskId;

/// The last `capacity` distinct ids inserted.
#[derive(Clone, Debug, Default)]
pub struct DedupWindow {
    order: VecDeque<TaskId>,
    set: BTreeSet<TaskId>,
    capacity: usize,
}

impl DedupWindow {
    /// An empty window of `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self { order: VecDeque::new(), set: BTreeSet::new(), capacity }
    }

    /// A window holding `ids` (oldest first), trimmed to `capacity`.
    pub fn restore(capacity: usize, ids: impl IntoIterator<Item = TaskId>) -> Self {
        let mut w = Self::new(capacity);
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
        if self.set.contains(&id) {
            return None;
        }
        self.set.insert(id.clone());
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
