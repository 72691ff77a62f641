//! Hash maps and sets keyed by task id, for the per-task lookups of the hot
//! path (the outbox's index, the dedup window; not the inbox, which holds
//! every spooled task and stays a B-tree for its memory).
//!
//! A `BTreeMap<TaskId, _>` compares whole ids at every level of the tree,
//! and ids often share long prefixes: on the full path that was about a
//! fifth of core's instructions per task. None of these maps is iterated,
//! so their order never reaches an output and a hash map is safe for
//! determinism. Task ids come from any client of the broker, so the hash
//! is keyed (aHash) from the lane's seed, which the io shell draws at
//! random and the simulation from its seed: no OS randomness in core, and
//! no fixed keys for a client to aim collisions at.

use std::collections::{HashMap, HashSet};

use crate::ids::TaskId;
use crate::rng::SplitMix64;

/// The keyed hasher of the id maps.
pub(crate) type IdHasher = ahash::RandomState;

/// A map from task id, keyed by [`id_hasher`].
pub(crate) type IdMap<V> = HashMap<TaskId, V, IdHasher>;

/// A set of task ids, keyed by [`id_hasher`].
pub(crate) type IdSet = HashSet<TaskId, IdHasher>;

/// The hasher of seed `seed`: four keys drawn from it.
pub(crate) fn id_hasher(seed: u64) -> IdHasher {
    let mut rng = SplitMix64::new(seed ^ 0x1D5E_ED00_A5A5_0001);
    ahash::RandomState::with_seeds(rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64())
}
