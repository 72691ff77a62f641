//! Byte encoding of spool records, shared by every spool that stores bytes
//! (the LMDB spool of the io crate). Pure, so the fuzzers can feed it
//! corrupted bytes: decoding never panics and says what is wrong.
//!
//! Layout (all integers big-endian), each record ending in a CRC-32 of what
//! precedes it:
//! - task:   `1u8 | id_len u8 | id | kind_len u16 (0xFFFF = none) | kind | body_len u32 | body | crc u32`
//! - result: `2u8 | id_len u8 | id | status u8 | body_len u32 | body | crc u32`

use bytes::Bytes;

use crate::ids::TaskId;
use crate::message::{ResultStatus, Task, TaskResult, MAX_KIND_LEN};

const TASK_TAG: u8 = 1;
const RESULT_TAG: u8 = 2;
const NO_KIND: u16 = 0xFFFF;

/// Why bytes are not a spool record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record ends early.
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    /// The record's first byte names another kind of record.
    #[error("unknown record tag {0}")]
    UnknownTag(u8),
    /// The checksum does not match: the bytes were damaged.
    #[error("checksum mismatch")]
    Checksum,
    /// A field holds a value it cannot hold.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes follow the record.
    #[error("{0} bytes after the end of the record")]
    Trailing(usize),
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Encodes an inbox task.
pub fn encode_task(task: &Task) -> Vec<u8> {
    let id = task.id.as_str().as_bytes();
    let kind = task.kind.as_deref().map(str::as_bytes);
    let mut out = Vec::with_capacity(16 + id.len() + kind.map_or(0, <[u8]>::len) + task.body.len());
    out.push(TASK_TAG);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    match kind {
        Some(k) => {
            out.extend_from_slice(&(k.len() as u16).to_be_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&NO_KIND.to_be_bytes()),
    }
    out.extend_from_slice(&(task.body.len() as u32).to_be_bytes());
    out.extend_from_slice(&task.body);
    let c = crc(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out
}

/// Encodes an outbox result.
pub fn encode_result(result: &TaskResult) -> Vec<u8> {
    let id = result.task.as_str().as_bytes();
    let mut out = Vec::with_capacity(15 + id.len() + result.body.len());
    out.push(RESULT_TAG);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.push(match result.status {
        ResultStatus::Ok => 0,
        ResultStatus::Failed => 1,
    });
    out.extend_from_slice(&(result.body.len() as u32).to_be_bytes());
    out.extend_from_slice(&result.body);
    let c = crc(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn task_id(&mut self) -> Result<TaskId, DecodeError> {
        let n = self.u8()? as usize;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Invalid("task id"))?;
        TaskId::new(s).map_err(|_| DecodeError::Invalid("task id"))
    }
}

/// Checks the tag and the checksum, and returns the reader over the payload.
fn open(bytes: &[u8], tag: u8) -> Result<Reader<'_>, DecodeError> {
    if bytes.len() < 5 {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[0] != tag {
        return Err(DecodeError::UnknownTag(bytes[0]));
    }
    let (data, sum) = bytes.split_at(bytes.len() - 4);
    if crc(data) != u32::from_be_bytes(sum.try_into().expect("4 bytes")) {
        return Err(DecodeError::Checksum);
    }
    Ok(Reader { bytes: data, pos: 1 })
}

fn finish(r: &Reader<'_>) -> Result<(), DecodeError> {
    match r.bytes.len() - r.pos {
        0 => Ok(()),
        n => Err(DecodeError::Trailing(n)),
    }
}

/// Decodes an inbox task.
pub fn decode_task(bytes: &[u8]) -> Result<Task, DecodeError> {
    let mut r = open(bytes, TASK_TAG)?;
    let id = r.task_id()?;
    let kind = match r.u16()? {
        NO_KIND => None,
        n if n as usize > MAX_KIND_LEN => return Err(DecodeError::Invalid("kind length")),
        n => Some(std::str::from_utf8(r.take(n as usize)?).map_err(|_| DecodeError::Invalid("kind"))?.to_string()),
    };
    let n = r.u32()? as usize;
    let body = Bytes::copy_from_slice(r.take(n)?);
    finish(&r)?;
    Ok(Task { id, kind, body })
}

/// Decodes an outbox result.
pub fn decode_result(bytes: &[u8]) -> Result<TaskResult, DecodeError> {
    let (task, status, body) = decode_result_parts(bytes)?;
    Ok(TaskResult { task, status, body: Bytes::copy_from_slice(body) })
}

/// Decodes an outbox result without copying its body: the task, the
/// status and the body as a slice of `bytes` (what a reopen keeps of it, or
/// what a publish copies once). Checks the record as [`decode_result`] does.
pub fn decode_result_parts(bytes: &[u8]) -> Result<(TaskId, ResultStatus, &[u8]), DecodeError> {
    let mut r = open(bytes, RESULT_TAG)?;
    let task = r.task_id()?;
    let status = match r.u8()? {
        0 => ResultStatus::Ok,
        1 => ResultStatus::Failed,
        _ => return Err(DecodeError::Invalid("status")),
    };
    let n = r.u32()? as usize;
    let body = r.take(n)?;
    finish(&r)?;
    Ok((task, status, body))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn task(id: String, kind: Option<String>, body: Vec<u8>) -> Task {
        Task { id: TaskId::new(id).unwrap(), kind, body: Bytes::from(body) }
    }

    proptest! {
        #[test]
        fn task_round_trips(id in "[a-z0-9-]{1,128}", kind in proptest::option::of("[a-z]{1,40}"), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let t = task(id, kind, body);
            prop_assert_eq!(decode_task(&encode_task(&t)), Ok(t));
        }

        #[test]
        fn result_round_trips(id in "[a-z0-9-]{1,128}", ok in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = TaskResult { task: TaskId::new(id).unwrap(), status: if ok { ResultStatus::Ok } else { ResultStatus::Failed }, body: Bytes::from(body) };
            prop_assert_eq!(decode_result(&encode_result(&r)), Ok(r));
        }

        #[test]
        fn damaged_records_are_refused_not_panicked(id in "[a-z]{1,20}", body in proptest::collection::vec(any::<u8>(), 0..64), flip in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
            let bytes = encode_task(&task(id, Some("k".into()), body));
            let mut flipped = bytes.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 1 << bit;
            prop_assert!(decode_task(&flipped).is_err());
            let cut = cut.index(bytes.len());
            prop_assert!(decode_task(&bytes[..cut]).is_err());
            let _ = decode_result(&flipped);
        }
    }

    #[test]
    fn wrong_tag_is_named() {
        let r = TaskResult { task: TaskId::new("a").unwrap(), status: ResultStatus::Ok, body: Bytes::new() };
        assert_eq!(decode_task(&encode_result(&r)), Err(DecodeError::UnknownTag(2)));
        assert_eq!(decode_task(&[]), Err(DecodeError::Truncated(0)));
    }
}
