//! Newtype identifiers. Each id that could be confused with another has its
//! own type; a delivery tag carries the channel it was issued on, so a tag of
//! an old channel cannot be acked on a new one by accident.

use std::fmt;
use std::sync::Arc;

use crate::error::InvalidId;

/// The id of an endpoint: 1-64 characters of `[A-Za-z0-9_-]` (SPEC §2).
///
/// It names the endpoint's queue `E.tasks` and its result routing key
/// `E.results`, so it must be safe inside a queue name and a topic key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(String);

impl EndpointId {
    /// Longest endpoint id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates `s` as an endpoint id.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidId> {
        let s = s.into();
        if s.is_empty() {
            return Err(InvalidId::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidId::TooLong { len: s.len(), max: Self::MAX_LEN });
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(InvalidId::BadChar(c));
        }
        Ok(Self(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The endpoint's durable task queue, `E.tasks`.
    pub fn task_queue(&self) -> String {
        format!("{}.tasks", self.0)
    }

    /// The routing key of the endpoint's results, `E.results`.
    pub fn result_key(&self) -> String {
        format!("{}.results", self.0)
    }

    /// The routing key of the endpoint's status reports, `E.status`.
    pub fn status_key(&self) -> String {
        format!("{}.status", self.0)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a task: the AMQP `message_id` of the task message, non-empty,
/// at most 128 bytes of UTF-8 (SPEC §3).
///
/// Shared, not copied, when cloned: the lane, the spool's index and the
/// shell's queues hold one allocation per task between them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(Arc<str>);

impl TaskId {
    /// Longest task id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `s` as a task id.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidId> {
        let s = s.into();
        if s.is_empty() {
            return Err(InvalidId::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidId::TooLong { len: s.len(), max: Self::MAX_LEN });
        }
        Ok(Self(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One AMQP connection attempt. Replies from an older attempt are ignored.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// One opened channel, unique over the life of a [`crate::Lane`]: every
/// open (also a reopen after a reconnect) gets a new id.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub u64);

/// A broker delivery tag together with the channel that issued it.
///
/// AMQP delivery tags count from 1 on every channel; a bare number acked on
/// a new channel would ack a task nobody processed. The channel travels with
/// the number so the shell acks on the channel named here or not at all.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryTag {
    /// The channel the delivery arrived on.
    pub channel: ChannelId,
    /// The broker's tag on that channel.
    pub tag: u64,
}

/// A publisher-confirm sequence number together with its channel. Confirm
/// tags count from 1 after `confirm.select` on each channel.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishTag {
    /// The publishing channel.
    pub channel: ChannelId,
    /// The confirm sequence number on that channel.
    pub seq: u64,
}

/// Position of a spool write in the order core issued it; the shell reports
/// progress as "everything up to and including this one is committed".
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WriteSeq(pub u64);

/// Position of a result in the outbox, persisted: results are published in
/// this order and survive restarts under it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OutboxSeq(pub u64);

/// Fuzzers draw only valid ids: an invalid one could never reach core
/// through the typed API, so drawing it would waste their time.
#[cfg(feature = "arbitrary")]
mod arbitrary_ids {
    use arbitrary::{Arbitrary, Result, Unstructured};

    use super::{EndpointId, TaskId};

    /// The 64 characters an endpoint id may hold.
    const ENDPOINT_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

    impl<'a> Arbitrary<'a> for EndpointId {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let len = u.int_in_range(1..=Self::MAX_LEN)?;
            let mut s = String::with_capacity(len);
            for _ in 0..len {
                s.push(char::from(ENDPOINT_CHARS[usize::from(u8::arbitrary(u)? & 63)]));
            }
            Ok(Self(s))
        }
    }

    impl<'a> Arbitrary<'a> for TaskId {
        /// Any UTF-8 text, cut to 128 bytes at a character boundary; an
        /// empty draw becomes `"0"`.
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let mut s = String::arbitrary(u)?;
            let mut end = s.len().min(Self::MAX_LEN);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            if s.is_empty() {
                s.push('0');
            }
            Ok(Self(s.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_id_rules() {
        assert!(EndpointId::new("ep-1_A").is_ok());
        assert_eq!(EndpointId::new(""), Err(InvalidId::Empty));
        assert_eq!(EndpointId::new("a.b"), Err(InvalidId::BadChar('.')));
        assert_eq!(EndpointId::new("a*"), Err(InvalidId::BadChar('*')));
        assert!(EndpointId::new("x".repeat(64)).is_ok());
        assert_eq!(EndpointId::new("x".repeat(65)), Err(InvalidId::TooLong { len: 65, max: 64 }));
        let e = EndpointId::new("e1").unwrap();
        assert_eq!(e.task_queue(), "e1.tasks");
        assert_eq!(e.result_key(), "e1.results");
    }

    #[test]
    fn task_id_rules() {
        assert!(TaskId::new("t").is_ok());
        assert_eq!(TaskId::new(""), Err(InvalidId::Empty));
        assert!(TaskId::new("é".repeat(64)).is_ok()); // 128 bytes
        assert!(TaskId::new("é".repeat(65)).is_err());
    }
}
