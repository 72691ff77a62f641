//! Conversions between amqprs message properties and core's [`RawMessage`].
//!
//! Core judges messages; this module only translates. amqprs decodes every
//! string property as UTF-8, so a `message_id` arrives as a `String` and
//! becomes bytes here; header values keep their type as far as core tells
//! types apart, and every other type becomes [`HeaderValue::Other`] named by
//! its AMQP type, so core can say "expected a string, found a table".

use amqprs::{BasicProperties, FieldName, FieldTable, FieldValue, DELIVERY_MODE_PERSISTENT};
use bytes::Bytes;
use tasklane_core::{HeaderValue, RawMessage};

/// The message core sees for a delivery (or a returned publish).
///
/// Headers come out sorted by name: amqprs keeps the table in a hash map,
/// so the wire order is lost, and sorting keeps the result deterministic.
pub fn raw_message(props: &BasicProperties, body: Vec<u8>) -> RawMessage {
    RawMessage {
        message_id: props.message_id().map(|id| id.as_bytes().to_vec()),
        headers: props.headers().map(headers_from_table).unwrap_or_default(),
        body: Bytes::from(body),
    }
}

/// Headers of a table, sorted by name.
pub fn headers_from_table(table: &FieldTable) -> Vec<(String, HeaderValue)> {
    let mut headers: Vec<(String, HeaderValue)> =
        table.as_ref().iter().map(|(k, v)| (k.as_ref().clone(), header_value(v))).collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    headers
}

/// One header value as core distinguishes it.
pub fn header_value(v: &FieldValue) -> HeaderValue {
    match v {
        FieldValue::S(s) => HeaderValue::Str(s.as_ref().as_bytes().to_vec()),
        FieldValue::x(b) => HeaderValue::Bytes(Vec::<u8>::from(b.clone())),
        FieldValue::t(b) => HeaderValue::Bool(*b),
        FieldValue::b(i) => HeaderValue::Int(i64::from(*i)),
        FieldValue::B(i) => HeaderValue::Int(i64::from(*i)),
        FieldValue::s(i) => HeaderValue::Int(i64::from(*i)),
        FieldValue::u(i) => HeaderValue::Int(i64::from(*i)),
        FieldValue::I(i) => HeaderValue::Int(i64::from(*i)),
        FieldValue::i(i) => HeaderValue::Int(i64::from(*i)),
        FieldValue::l(i) => HeaderValue::Int(*i),
        FieldValue::f(_) => HeaderValue::Other("float".into()),
        FieldValue::d(_) => HeaderValue::Other("double".into()),
        FieldValue::D(_) => HeaderValue::Other("decimal".into()),
        FieldValue::A(_) => HeaderValue::Other("array".into()),
        FieldValue::T(_) => HeaderValue::Other("timestamp".into()),
        FieldValue::F(_) => HeaderValue::Other("table".into()),
        FieldValue::V => HeaderValue::Other("void".into()),
    }
}

/// Why a [`RawMessage`] cannot be expressed as amqprs properties.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// amqprs carries `message_id` as a UTF-8 short string.
    #[error("message_id is not UTF-8 or longer than 255 bytes")]
    MessageId,
    /// A header name longer than 255 bytes.
    #[error("header name {0:?} is longer than 255 bytes")]
    HeaderName(String),
    /// A string header that is not UTF-8 (amqprs strings are `String`s).
    #[error("header {0:?} is not UTF-8")]
    HeaderNotUtf8(String),
    /// A header of a type that has no value to send (`Other`).
    #[error("header {0:?} of type {1} cannot be sent")]
    HeaderType(String, String),
}

/// A header table for `headers`.
pub fn table_from_headers(headers: &[(String, HeaderValue)]) -> Result<FieldTable, ConvertError> {
    let mut table = FieldTable::new();
    for (name, value) in headers {
        let key: FieldName = name.as_str().try_into().map_err(|_| ConvertError::HeaderName(name.clone()))?;
        let v = match value {
            HeaderValue::Str(b) => {
                let s = std::str::from_utf8(b).map_err(|_| ConvertError::HeaderNotUtf8(name.clone()))?;
                FieldValue::S(s.try_into().map_err(|_| ConvertError::HeaderNotUtf8(name.clone()))?)
            }
            HeaderValue::Int(i) => FieldValue::l(*i),
            HeaderValue::Bool(b) => FieldValue::t(*b),
            HeaderValue::Bytes(b) => {
                FieldValue::x(b.clone().try_into().map_err(|_| ConvertError::HeaderType(name.clone(), "bytes".into()))?)
            }
            HeaderValue::Other(t) => return Err(ConvertError::HeaderType(name.clone(), t.clone())),
        };
        table.insert(key, v);
    }
    Ok(table)
}

/// Properties for publishing `msg`: its `message_id` and headers,
/// persistent (delivery mode 2). Publish it `mandatory`
/// (see [`crate::amqp::publish_args`]).
pub fn publish_properties(msg: &RawMessage) -> Result<BasicProperties, ConvertError> {
    let mut props = BasicProperties::default();
    props.with_delivery_mode(DELIVERY_MODE_PERSISTENT);
    if let Some(id) = &msg.message_id {
        let id = std::str::from_utf8(id).ok().filter(|s| s.len() <= 255).ok_or(ConvertError::MessageId)?;
        props.with_message_id(id);
    }
    if !msg.headers.is_empty() {
        props.with_headers(table_from_headers(&msg.headers)?);
    }
    Ok(props.finish())
}

#[cfg(test)]
mod tests {
    use amqprs::{FieldArray, LongStr};
    use tasklane_core::{encode_result, EndpointId, ResultStatus, TaskId, TaskResult};

    use super::*;

    #[test]
    fn result_round_trips_through_properties() {
        let e = EndpointId::new("ep").unwrap();
        let r = TaskResult { task: TaskId::new("t-1").unwrap(), status: ResultStatus::Ok, body: Bytes::from("out") };
        let raw = encode_result(&e, &r);
        let props = publish_properties(&raw).unwrap();
        assert_eq!(props.delivery_mode(), Some(DELIVERY_MODE_PERSISTENT));
        let mut expected = raw.clone();
        expected.headers.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(raw_message(&props, b"out".to_vec()), expected);
    }

    #[test]
    fn header_types_map_and_others_are_named() {
        let mut t = FieldTable::new();
        let s: LongStr = "x".try_into().unwrap();
        t.insert("s".try_into().unwrap(), FieldValue::S(s));
        t.insert("i".try_into().unwrap(), FieldValue::I(-3));
        t.insert("u".try_into().unwrap(), FieldValue::B(200));
        t.insert("b".try_into().unwrap(), FieldValue::t(true));
        t.insert("x".try_into().unwrap(), FieldValue::x(vec![1u8, 2].try_into().unwrap()));
        t.insert("a".try_into().unwrap(), FieldValue::A(FieldArray::new()));
        t.insert("f".try_into().unwrap(), FieldValue::d(1.5));
        assert_eq!(
            headers_from_table(&t),
            vec![
                ("a".into(), HeaderValue::Other("array".into())),
                ("b".into(), HeaderValue::Bool(true)),
                ("f".into(), HeaderValue::Other("double".into())),
                ("i".into(), HeaderValue::Int(-3)),
                ("s".into(), HeaderValue::Str(b"x".to_vec())),
                ("u".into(), HeaderValue::Int(200)),
                ("x".into(), HeaderValue::Bytes(vec![1, 2])),
            ]
        );
        let raw = RawMessage {
            message_id: None,
            headers: vec![("t".into(), HeaderValue::Other("table".into()))],
            body: Bytes::new(),
        };
        assert!(matches!(publish_properties(&raw), Err(ConvertError::HeaderType(..))));
        let raw = RawMessage { message_id: Some(vec![0xff]), headers: vec![], body: Bytes::new() };
        assert_eq!(publish_properties(&raw).unwrap_err(), ConvertError::MessageId);
    }
}
