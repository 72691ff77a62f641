//! Errors by cause (after h11): misuse of the API is an `Err` returned to the
//! caller; faults of the broker, the network or the spool are events in the
//! output stream, never errors here.

use crate::ids::TaskId;

/// Why a string is not a valid id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The id is empty.
    #[error("id is empty")]
    Empty,
    /// The id is longer than allowed.
    #[error("id is {len} bytes long, at most {max} allowed")]
    TooLong {
        /// Length found, in bytes.
        len: usize,
        /// Longest allowed, in bytes.
        max: usize,
    },
    /// The id holds a character that is not allowed.
    #[error("id holds {0:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar(char),
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is out of its allowed range.
    #[error("{field}: {problem}")]
    OutOfRange {
        /// The configuration field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The caller used the API wrongly. The lane's state is unchanged when one of
/// these is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A result was recorded for a task that is not in the inbox.
    #[error("task {0} is not in the inbox (never handed off, or already completed)")]
    UnknownTask(TaskId),
    /// The spool reported a commit of writes that were never issued.
    #[error("spool reported commit up to write {reported}, but only {issued} writes were issued")]
    CommitBeyondIssued {
        /// The position reported.
        reported: u64,
        /// The last position issued.
        issued: u64,
    },
    /// An input arrived that only makes sense after a command core never
    /// issued (for example `Connected` without `Connect`).
    #[error("unexpected input {input}: {why}")]
    Unexpected {
        /// The input's name.
        input: &'static str,
        /// Why it does not fit.
        why: &'static str,
    },
}
