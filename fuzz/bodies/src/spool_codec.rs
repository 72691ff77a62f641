//! Target 4: spool records (`tasklane_core::codec`), as a damaged disk or a
//! bug in another spool could hand them back.
//!
//! Oracles:
//! - decoding never panics, and its error is one line;
//! - encoding is canonical: bytes that decode re-encode to exactly
//!   themselves, so nothing a spool reads back can silently differ from
//!   what it holds;
//! - every record round-trips (`decode(encode(x)) == x`), a task record is
//!   never read as a result or the other way round;
//! - a burst of damage up to 32 bits long (what CRC-32 guarantees to catch),
//!   a strict prefix of a record, or bytes after it are refused.

use arbitrary::{Arbitrary, Unstructured};
use tasklane_core::codec::{self, DecodeError};
use tasklane_core::message::MAX_KIND_LEN;
use tasklane_core::{Task, TaskResult};

/// Damage done to an encoded record.
#[derive(Arbitrary, Debug)]
enum Damage {
    /// One burst: up to four adjacent bytes XORed with a mask.
    Burst { at: u16, len: u8, mask: u32 },
    /// Keep only a strict prefix.
    Truncate(u16),
    /// Append bytes.
    Extend(Vec<u8>),
}

/// Runs one case drawn from `data`.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(which) = u8::arbitrary(&mut u) else { return };
    match which % 3 {
        0 => check_bytes(u.take_rest()),
        1 => {
            let (Ok(mut task), Ok(damage)) = (Task::arbitrary(&mut u), Damage::arbitrary(&mut u)) else { return };
            within_codec_limits(&mut task);
            let bytes = codec::encode_task(&task);
            assert_eq!(codec::decode_task(&bytes), Ok(task.clone()), "task record does not round-trip");
            assert_eq!(codec::decode_result(&bytes), Err(DecodeError::UnknownTag(1)), "task record read as a result");
            check_damage(&bytes, &damage);
        }
        _ => {
            let (Ok(result), Ok(damage)) = (TaskResult::arbitrary(&mut u), Damage::arbitrary(&mut u)) else { return };
            let bytes = codec::encode_result(&result);
            assert_eq!(codec::decode_result(&bytes), Ok(result.clone()), "result record does not round-trip");
            assert_eq!(codec::decode_task(&bytes), Err(DecodeError::UnknownTag(2)), "result record read as a task");
            check_damage(&bytes, &damage);
        }
    }
}

/// A task as the lane stores it: `decode_task` admits no `tasklane-kind`
/// longer than [`MAX_KIND_LEN`] bytes, so the codec is not asked to encode
/// one.
fn within_codec_limits(task: &mut Task) {
    if let Some(kind) = &mut task.kind {
        let mut end = kind.len().min(MAX_KIND_LEN);
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
    }
}

/// Bytes of unknown origin: refused cleanly, or canonical.
fn check_bytes(bytes: &[u8]) {
    match codec::decode_task(bytes) {
        Ok(task) => {
            assert!(task.kind.as_ref().is_none_or(|k| k.len() <= MAX_KIND_LEN), "over-long kind decoded");
            assert_eq!(codec::encode_task(&task), bytes, "decoded task re-encodes differently");
        }
        Err(e) => one_line(&e),
    }
    match codec::decode_result(bytes) {
        Ok(result) => assert_eq!(codec::encode_result(&result), bytes, "decoded result re-encodes differently"),
        Err(e) => one_line(&e),
    }
}

fn check_damage(record: &[u8], damage: &Damage) {
    let (damaged, must_fail) = match damage {
        Damage::Burst { at, len, mask } => {
            let mut d = record.to_vec();
            let at = usize::from(*at) % d.len();
            let len = usize::from(*len % 4) + 1;
            for (i, m) in mask.to_be_bytes().iter().take(len).enumerate() {
                if let Some(b) = d.get_mut(at + i) {
                    *b ^= m;
                }
            }
            let changed = d != record;
            (d, changed)
        }
        Damage::Truncate(n) => (record[..usize::from(*n) % record.len()].to_vec(), true),
        Damage::Extend(tail) => ([record, tail].concat(), !tail.is_empty()),
    };
    check_bytes(&damaged);
    if must_fail {
        let task = codec::decode_task(&damaged);
        let result = codec::decode_result(&damaged);
        assert!(task.is_err() && result.is_err(), "damage {damage:?} went unnoticed: {task:?} / {result:?}");
    }
}

fn one_line(e: &DecodeError) {
    let text = e.to_string();
    assert!(!text.contains('\n') && !text.is_empty(), "error text {text:?} is not one line");
}
