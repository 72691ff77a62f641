//! How one tracked task is laid out in the store, and its keys in the
//! time indexes.

use tasklane_core::{EndpointId, TaskId};

use super::{StoreError, TaskState, TrackedTask};

/// `state (1) | submitted_ms (8, BE) | updated_ms (8, BE) | len (1) | endpoint`.
pub(super) fn encode_record(endpoint: &EndpointId, state: TaskState, submitted_ms: u64, updated_ms: u64) -> Vec<u8> {
    let e = endpoint.as_str().as_bytes();
    let mut v = Vec::with_capacity(18 + e.len());
    v.push(state.to_byte());
    v.extend_from_slice(&submitted_ms.to_be_bytes());
    v.extend_from_slice(&updated_ms.to_be_bytes());
    v.push(e.len() as u8);
    v.extend_from_slice(e);
    v
}

pub(super) fn decode_record(id: &[u8], v: &[u8]) -> Result<TrackedTask, StoreError> {
    let damaged = || StoreError::Damaged(String::from_utf8_lossy(id).into_owned());
    if v.len() < 18 {
        return Err(damaged());
    }
    let state = TaskState::from_byte(v[0]).ok_or_else(damaged)?;
    let submitted_ms = u64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
    let updated_ms = u64::from_be_bytes(v[9..17].try_into().expect("8 bytes"));
    let n = v[17] as usize;
    let e = v.get(18..18 + n).ok_or_else(damaged)?;
    let endpoint = std::str::from_utf8(e).ok().and_then(|e| EndpointId::new(e).ok()).ok_or_else(damaged)?;
    let id = std::str::from_utf8(id).ok().and_then(|i| TaskId::new(i).ok()).ok_or_else(damaged)?;
    Ok(TrackedTask { id, endpoint, state, submitted_ms, updated_ms })
}

/// The key of a task in a time index: `submitted_ms (8, BE) | task id`, so
/// the index iterates oldest first.
pub(super) fn index_key(submitted_ms: u64, task: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + task.len());
    k.extend_from_slice(&submitted_ms.to_be_bytes());
    k.extend_from_slice(task);
    k
}

/// The submission time and task id of an index key.
pub(super) fn split_index_key(k: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    if k.len() < 9 {
        return Err(StoreError::Damaged(format!("index key {k:?}")));
    }
    Ok((u64::from_be_bytes(k[..8].try_into().expect("8 bytes")), &k[8..]))
}
