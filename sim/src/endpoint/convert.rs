//! Messages between core's [`RawMessage`] and the wire's [`Message`]; the
//! shell copies, it does not judge (core decides what is a task).

use tasklane_core::{HeaderValue as CoreValue, RawMessage};

use crate::wire::{HeaderValue as WireValue, Headers, Message};

/// A delivered wire message as core receives it.
pub fn wire_to_raw(m: &Message) -> RawMessage {
    RawMessage {
        message_id: m.message_id.as_ref().map(|s| s.as_bytes().to_vec()),
        headers: m
            .headers
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    WireValue::Str(s) => CoreValue::Str(s.as_bytes().to_vec()),
                    WireValue::Int(i) => CoreValue::Int(*i),
                    WireValue::Bool(b) => CoreValue::Bool(*b),
                    WireValue::Bytes(b) => CoreValue::Bytes(b.to_vec()),
                };
                (k.clone(), v)
            })
            .collect(),
        body: m.body.clone(),
    }
}

/// A message core wants published, as a persistent wire message.
pub fn raw_to_wire(raw: &RawMessage) -> Message {
    let headers: Headers = raw
        .headers
        .iter()
        .map(|(k, v)| {
            let v = match v {
                CoreValue::Str(b) => match String::from_utf8(b.clone()) {
                    Ok(s) => WireValue::Str(s),
                    Err(e) => WireValue::Bytes(e.into_bytes().into()),
                },
                CoreValue::Int(i) => WireValue::Int(*i),
                CoreValue::Bool(b) => WireValue::Bool(*b),
                CoreValue::Bytes(b) => WireValue::Bytes(b.clone().into()),
                CoreValue::Other(t) => WireValue::Str(t.clone()),
            };
            (k.clone(), v)
        })
        .collect();
    Message {
        message_id: raw.message_id.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        persistent: true,
        headers,
        body: raw.body.clone(),
    }
}
