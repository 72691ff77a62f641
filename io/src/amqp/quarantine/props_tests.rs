//! Properties against amqprs' own encoder and decoder, splicing headers,
//! and hostile input.

use amqprs::{BasicProperties, FieldTable, FieldValue as AmqprsValue};

use super::*;

/// Every property and every field type, encoded by amqprs.
fn amqprs_encoded() -> Vec<u8> {
    let mut inner = FieldTable::new();
    inner.insert("deep".try_into().unwrap(), AmqprsValue::S("x".try_into().unwrap()));
    let mut headers = FieldTable::new();
    headers.insert("tasklane-kind".try_into().unwrap(), AmqprsValue::S("resize".try_into().unwrap()));
    headers.insert("n".try_into().unwrap(), AmqprsValue::l(-5));
    headers.insert("t".try_into().unwrap(), AmqprsValue::F(inner));
    headers.insert(
        "a".try_into().unwrap(),
        AmqprsValue::A(vec![AmqprsValue::t(true), AmqprsValue::V].try_into().unwrap()),
    );
    headers.insert("x".try_into().unwrap(), AmqprsValue::x(vec![0xff, 0].try_into().unwrap()));
    let props = BasicProperties::default()
        .with_content_type("text/plain")
        .with_content_encoding("gzip")
        .with_headers(headers)
        .with_persistence(true)
        .with_priority(3)
        .with_correlation_id("c")
        .with_reply_to("r")
        .with_expiration("60000")
        .with_message_id("task-1")
        .with_timestamp(1_700_000_000)
        .with_message_type("resize")
        .with_user_id("guest")
        .with_app_id("app")
        .with_cluster_id("cl")
        .finish();
    amqp_serde::to_bytes(&props).unwrap()
}

#[test]
fn decodes_what_amqprs_encodes_field_by_field() {
    let p = decode(&amqprs_encoded()).unwrap();
    assert_eq!(p.content_type.as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(p.content_encoding.as_deref(), Some(&b"gzip"[..]));
    assert_eq!((p.delivery_mode, p.priority, p.timestamp), (Some(2), Some(3), Some(1_700_000_000)));
    let shorts = [&p.correlation_id, &p.reply_to, &p.expiration, &p.message_id];
    assert_eq!(
        shorts.map(|s| s.clone().unwrap()),
        [b"c".to_vec(), b"r".to_vec(), b"60000".to_vec(), b"task-1".to_vec()]
    );
    let shorts = [&p.message_type, &p.user_id, &p.app_id, &p.cluster_id];
    assert_eq!(
        shorts.map(|s| s.clone().unwrap()),
        [b"resize".to_vec(), b"guest".to_vec(), b"app".to_vec(), b"cl".to_vec()]
    );
    assert_eq!(p.header("tasklane-kind"), Some(&FieldValue::Str(b"resize".to_vec())));
    assert_eq!(p.header("n"), Some(&FieldValue::I64(-5)));
    assert_eq!(p.header("t"), Some(&FieldValue::Table(vec![(b"deep".to_vec(), FieldValue::Str(b"x".to_vec()))])));
    assert_eq!(p.header("a"), Some(&FieldValue::Array(vec![FieldValue::Bool(true), FieldValue::Void])));
    assert_eq!(p.header("x"), Some(&FieldValue::Bytes(vec![0xff, 0])));
    assert_eq!(p.headers.as_ref().unwrap().len(), 5);
}

#[test]
fn encode_is_the_inverse_of_decode_and_amqprs_agrees() {
    let raw = amqprs_encoded();
    let p = decode(&raw).unwrap();
    let again = encode(&p);
    assert_eq!(decode(&again).unwrap(), p);
    assert!(crate::amqp::quarantine::amqprs_decodes(&again).is_ok());
    // Header order in amqprs' HashMap is arbitrary; with one header the
    // encodings are byte for byte the same.
    let single = BasicProperties::default().with_message_id("m").with_persistence(true).finish();
    let raw = amqp_serde::to_bytes(&single).unwrap();
    assert_eq!(encode(&decode(&raw).unwrap()), raw);
}

#[test]
fn headers_are_spliced_in_and_the_rest_stays_byte_for_byte() {
    let mut extra = Writer::new();
    extra.table_string("tasklane-reason", b"undecodable");
    // With a headers table already there, and the message id not UTF-8.
    let mut p = decode(&amqprs_encoded()).unwrap();
    p.message_id = Some(b"bad-\xff".to_vec());
    let raw = encode(&p);
    let p = decode(&raw).unwrap();
    let spliced = with_headers(&raw, &extra.buf).unwrap();
    let q = decode(&spliced).unwrap();
    assert_eq!(q.headers.as_ref().unwrap().len(), 6);
    assert_eq!(q.header("tasklane-reason"), Some(&FieldValue::Str(b"undecodable".to_vec())));
    let mut without = q.clone();
    without.headers.as_mut().unwrap().pop();
    assert_eq!(without, p, "every other property unchanged");
    // Without one: the flag is set and a table appears where it belongs.
    let bare = Properties { message_id: Some(b"\xfe".to_vec()), delivery_mode: Some(2), ..Default::default() };
    let raw = encode(&bare);
    let spliced = with_headers(&raw, &extra.buf).unwrap();
    let q = decode(&spliced).unwrap();
    assert_eq!(q.header("tasklane-reason"), Some(&FieldValue::Str(b"undecodable".to_vec())));
    assert_eq!((q.message_id, q.delivery_mode), (bare.message_id, Some(2)));
    assert_eq!(spliced.len(), raw.len() + 4 + extra.buf.len());
}

#[test]
fn structural_problems_name_where_they_are() {
    let err = |raw: &[u8]| decode(raw).unwrap_err().to_string();
    assert_eq!(
        err(&[0x20]),
        "properties are malformed at property flags: property flags runs past the end of its frame"
    );
    // Headers flag, a table of 3 bytes declared, 1 there.
    assert!(err(&[0x20, 0, 0, 0, 0, 3, 1]).starts_with("properties are malformed at header"));
    // A table entry of type 'Z' and one of 0x01.
    let table = |entries: &[u8]| {
        let mut w = Writer::new();
        w.u16(1 << 13).longstr(entries);
        w.buf
    };
    assert_eq!(err(&table(b"\x04kindZ")), "header \"kind\" has field type 'Z' (0x5a)");
    assert_eq!(err(&table(b"\x04kind\x01")), "header \"kind\" has field type 0x01");
    // An entry that runs past its table's end, and bytes after the last property.
    assert!(err(&table(b"\x01kS\0\0\0\x09ab")).starts_with("properties are malformed at header \"k\""));
    assert_eq!(err(&[0, 0, 7]), "properties are malformed at the end: 1 bytes after the last property");
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_without_recursing_further() {
    let nest = |levels: usize| {
        let mut v = FieldValue::Str(b"leaf".to_vec());
        for _ in 0..levels {
            v = FieldValue::Table(vec![(b"t".to_vec(), v)]);
        }
        encode(&Properties { headers: Some(vec![(b"h".to_vec(), v)]), ..Default::default() })
    };
    assert!(decode(&nest(MAX_DEPTH)).is_ok());
    let err = decode(&nest(MAX_DEPTH + 1)).unwrap_err();
    assert!(matches!(err, Undecodable::TooDeep { .. }), "{err}");
    // Far deeper than any stack would take, from a hand-made frame.
    let mut entries: Vec<u8> = Vec::new();
    for _ in 0..3_000 {
        let mut w = Writer::new();
        w.shortstr(b"t").u8(b'F').longstr(&entries);
        entries = w.buf;
    }
    let mut raw = Writer::new();
    raw.u16(1 << 13).longstr(&entries);
    assert!(matches!(decode(&raw.buf), Err(Undecodable::TooDeep { .. })));
}

#[test]
fn random_and_mutated_input_never_panics() {
    let base = amqprs_encoded();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut raw = base.clone();
        for _ in 0..=next() % 4 {
            let at = (next() as usize) % raw.len();
            raw[at] = next() as u8;
        }
        raw.truncate(raw.len() - (next() as usize % 8).min(raw.len()));
        let _ = decode(&raw);
    }
}
