//! Whether amqprs 2.1.5 can decode a delivery. It reads every short string
//! (`ShortStr`) and long string (`LongStr`) into a Rust `String`, so any
//! that is not UTF-8 fails the whole frame, and its reader drops the
//! connection: the exchange name and routing key of `basic.deliver`, the
//! short-string properties, and in the headers table every name and every
//! long-string value, nested tables and arrays included. Byte arrays
//! (`x`) and bodies are bytes and always fine.
//!
//! [`judge`] finds the first such string in wire order (where amqprs
//! fails), or a structural problem from [`props::decode`]; then, as a
//! guard against this module and amqprs ever disagreeing, it asks amqprs'
//! own decoder too.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::props::{self, FieldPath, FieldValue, Properties, Table, Undecodable};

/// The value of `tasklane-reason` on a quarantined message.
pub const REASON_LABEL: &str = "undecodable";
const CANNOT: &str = "which the endpoint's AMQP client cannot decode";

/// What the judge found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// amqprs decodes it.
    Fine,
    /// amqprs cannot decode it.
    Poison {
        /// Why, in one line, e.g. `message_id is not UTF-8, which the
        /// endpoint's AMQP client cannot decode`.
        detail: String,
        /// The decoded properties, when only their strings are at fault
        /// (so a copy can carry a reason header); `None` when they cannot
        /// be decoded at all.
        props: Option<Box<Properties>>,
    },
}

impl Verdict {
    pub fn is_poison(&self) -> bool {
        matches!(self, Verdict::Poison { .. })
    }
}

/// Judges a delivery by its exchange name, routing key and encoded
/// properties, all as the broker sent them.
pub fn judge(exchange: &[u8], routing_key: &[u8], raw_props: &[u8]) -> Verdict {
    let poison = |detail: String, props| Verdict::Poison { detail, props };
    for (what, bytes) in [("exchange name", exchange), ("routing key", routing_key)] {
        if std::str::from_utf8(bytes).is_err() {
            return poison(format!("{what} is not UTF-8, {CANNOT}"), props::decode(raw_props).ok().map(Box::new));
        }
    }
    let props = match props::decode(raw_props) {
        Ok(p) => p,
        Err(e @ Undecodable::FieldType { tag, .. }) if !tag.is_ascii_alphabetic() => {
            return poison(format!("{e}, on which the endpoint's AMQP client panics"), None)
        }
        Err(e) => return poison(format!("{e}, {CANNOT}"), None),
    };
    if let Some(at) = first_non_utf8(&props) {
        return poison(format!("{at} is not UTF-8, {CANNOT}"), Some(Box::new(props)));
    }
    if let Err(e) = amqprs_decodes(raw_props) {
        return poison(format!("the endpoint's AMQP client cannot decode the properties: {e}"), Some(Box::new(props)));
    }
    Verdict::Fine
}

/// What amqprs' own decoder says: `Err` with its message (or `panicked`)
/// when it cannot. amqp_serde must be the version amqprs uses (0.4.3 for
/// amqprs 2.1.5) for this to be amqprs' verdict.
pub fn amqprs_decodes(raw_props: &[u8]) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| amqp_serde::from_bytes::<amqprs::BasicProperties>(raw_props))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("panicked".into()),
    }
}

fn first_non_utf8(p: &Properties) -> Option<FieldPath> {
    let bad = |v: &Option<Vec<u8>>| v.as_deref().is_some_and(|b| std::str::from_utf8(b).is_err());
    let shorts_before = [("content_type", &p.content_type), ("content_encoding", &p.content_encoding)];
    if let Some((name, _)) = shorts_before.iter().find(|(_, v)| bad(v)) {
        return Some(FieldPath::property(name));
    }
    if let Some(at) = p.headers.as_ref().and_then(|t| in_table(t, &FieldPath::property("header"))) {
        return Some(at);
    }
    let shorts_after = [
        ("correlation_id", &p.correlation_id),
        ("reply_to", &p.reply_to),
        ("expiration", &p.expiration),
        ("message_id", &p.message_id),
        ("type", &p.message_type),
        ("user_id", &p.user_id),
        ("app_id", &p.app_id),
        ("cluster_id", &p.cluster_id),
    ];
    shorts_after.iter().find(|(_, v)| bad(v)).map(|(name, _)| FieldPath::property(name))
}

fn in_table(t: &Table, at: &FieldPath) -> Option<FieldPath> {
    t.iter().find_map(|(name, v)| {
        let here = at.key(name);
        if std::str::from_utf8(name).is_err() {
            return Some(here.name_of());
        }
        in_value(v, &here)
    })
}

fn in_value(v: &FieldValue, at: &FieldPath) -> Option<FieldPath> {
    match v {
        FieldValue::Str(s) if std::str::from_utf8(s).is_err() => Some(at.clone()),
        FieldValue::Table(t) => in_table(t, at),
        FieldValue::Array(items) => items.iter().enumerate().find_map(|(i, v)| in_value(v, &at.index(i))),
        _ => None,
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
