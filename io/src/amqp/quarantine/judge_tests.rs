//! The judge's reasons, and the judge against amqprs' own decoder on
//! thousands of random properties.

use super::*;
use crate::amqp::quarantine::props::encode;

fn with(f: impl FnOnce(&mut Properties)) -> Vec<u8> {
    let mut p = Properties { message_id: Some(b"task-1".to_vec()), delivery_mode: Some(2), ..Default::default() };
    f(&mut p);
    encode(&p)
}

fn detail(exchange: &[u8], routing_key: &[u8], raw: &[u8]) -> String {
    match judge(exchange, routing_key, raw) {
        Verdict::Poison { detail, .. } => detail,
        Verdict::Fine => panic!("judged fine: {raw:02x?}"),
    }
}

fn header(name: &[u8], v: FieldValue) -> Vec<u8> {
    with(|p| p.headers = Some(vec![(b"ok".to_vec(), FieldValue::I32(1)), (name.to_vec(), v)]))
}

#[test]
fn each_kind_of_poison_is_named() {
    let d = |raw: Vec<u8>| detail(b"", b"ep.tasks", &raw);
    assert_eq!(
        d(with(|p| p.message_id = Some(b"bad-\xff\xfe".to_vec()))),
        "message_id is not UTF-8, which the endpoint's AMQP client cannot decode"
    );
    assert_eq!(
        d(header(b"tasklane-kind", FieldValue::Str(b"resize-\xff".to_vec()))),
        "header \"tasklane-kind\" is not UTF-8, which the endpoint's AMQP client cannot decode"
    );
    let nested =
        FieldValue::Table(vec![(b"inner".to_vec(), FieldValue::Array(vec![FieldValue::Str(b"\xc3".to_vec())]))]);
    assert!(d(header(b"meta", nested)).starts_with("header \"meta\" > \"inner\"[0] is not UTF-8"));
    assert!(d(header(b"k\xff", FieldValue::Void)).starts_with("the name of header \"k\u{fffd}\" is not UTF-8"));
    assert!(d(with(|p| p.correlation_id = Some(vec![0x80]))).starts_with("correlation_id is not UTF-8"));
    assert!(d(with(|p| p.message_type = Some(vec![0xff]))).starts_with("type is not UTF-8"));
    assert!(d(with(|p| p.content_type = Some(vec![0xff]))).starts_with("content_type is not UTF-8"));
    assert!(detail(b"", b"ep.\xff", &with(|_| ())).starts_with("routing key is not UTF-8"));
    assert!(detail(b"\xff", b"ep", &with(|_| ())).starts_with("exchange name is not UTF-8"));
    // The first in wire order: the headers come before message_id.
    let both = with(|p| {
        p.message_id = Some(vec![0xff]);
        p.headers = Some(vec![(b"h".to_vec(), FieldValue::Str(vec![0xff]))]);
    });
    assert!(d(both).starts_with("header \"h\""));
}

#[test]
fn bytes_and_valid_utf8_are_fine_and_keep_their_properties() {
    let raw = header(b"blob", FieldValue::Bytes(vec![0xff, 0xfe]));
    assert_eq!(judge(b"", b"q", &raw), Verdict::Fine);
    assert_eq!(judge(b"results", "é.results".as_bytes(), &with(|p| p.app_id = Some("ünï".into()))), Verdict::Fine);
    let Verdict::Poison { props: Some(p), .. } = judge(b"", b"q", &with(|p| p.message_id = Some(vec![0xff]))) else {
        panic!("poison with readable properties")
    };
    assert_eq!(p.message_id, Some(vec![0xff]));
}

#[test]
fn a_type_octet_amqprs_panics_on_is_poison_without_calling_amqprs() {
    let mut raw = encode(&Properties { headers: Some(vec![(b"h".to_vec(), FieldValue::Void)]), ..Default::default() });
    *raw.last_mut().unwrap() = b'%';
    let Verdict::Poison { detail, props } = judge(b"", b"q", &raw) else { panic!("fine") };
    assert_eq!(detail, "header \"h\" has field type '%' (0x25), on which the endpoint's AMQP client panics");
    assert_eq!(props, None);
    // What the judge claims (its panic message shows in the test output).
    assert_eq!(amqprs_decodes(&raw), Err("panicked".to_string()));
}

/// A small deterministic generator (no OS randomness: a failure reproduces).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn string(&mut self) -> Vec<u8> {
        let pool: [&[u8]; 6] = [b"ok", b"", "é".as_bytes(), b"\xff", b"a\xc3", b"\xe2\x82\xac"];
        pool[self.below(pool.len() as u64) as usize].to_vec()
    }
    fn maybe(&mut self) -> Option<Vec<u8>> {
        (self.below(3) == 0).then(|| self.string())
    }
    fn value(&mut self, depth: u32) -> FieldValue {
        match self.below(if depth > 2 { 8 } else { 10 }) {
            0 => FieldValue::Str(self.string()),
            1 => FieldValue::Bool(self.below(2) == 0),
            2 => FieldValue::I64(self.next() as i64),
            3 => FieldValue::Bytes(self.string()),
            4 => FieldValue::Decimal { scale: 2, value: -7 },
            5 => FieldValue::F64(f64::from_bits(self.next())),
            6 => FieldValue::Void,
            7 => FieldValue::Timestamp(self.next()),
            8 => FieldValue::Table(self.table(depth + 1)),
            _ => FieldValue::Array((0..self.below(3)).map(|_| self.value(depth + 1)).collect()),
        }
    }
    fn table(&mut self, depth: u32) -> props::Table {
        (0..self.below(4)).map(|_| (self.string(), self.value(depth))).collect()
    }
}

/// The judge says poison exactly when amqprs' own decoder fails, on
/// random properties (strings drawn from good and bad UTF-8, every field
/// type, nesting) and on mutations of them (type octets, lengths, cuts).
#[test]
fn the_judge_agrees_with_amqprs_on_random_properties() {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let (mut poison, mut fine, mut mutated) = (0, 0, 0);
    for case in 0..20_000 {
        let p = Properties {
            content_type: rng.maybe(),
            headers: (rng.below(2) == 0).then(|| rng.table(0)),
            delivery_mode: Some(2),
            correlation_id: rng.maybe(),
            message_id: rng.maybe(),
            message_type: rng.maybe(),
            cluster_id: rng.maybe(),
            ..Default::default()
        };
        let mut raw = encode(&p);
        if case % 3 == 0 && raw.len() > 2 {
            mutated += 1;
            let at = 2 + rng.below(raw.len() as u64 - 2) as usize;
            // A letter amqprs does not know, or any byte but a non-letter
            // type octet (on which amqprs panics; tested above).
            let b = [b'Z', b'L', b'U', 0, 1, 0xff, rng.next() as u8][rng.below(7) as usize];
            raw[at] = b;
            if rng.below(4) == 0 {
                raw.truncate(at);
            }
        }
        let verdict = judge(b"", b"q", &raw);
        if matches!(&verdict, Verdict::Poison { detail, .. } if detail.ends_with("panics")) {
            continue;
        }
        let theirs = amqprs_decodes(&raw);
        assert_eq!(verdict.is_poison(), theirs.is_err(), "case {case}: {verdict:?} vs amqprs {theirs:?}, {raw:02x?}");
        match verdict {
            Verdict::Poison { detail, .. } => {
                assert!(
                    !detail.contains("cannot decode the properties:"),
                    "the guard, not the judge, caught it: {detail}"
                );
                poison += 1;
            }
            Verdict::Fine => fine += 1,
        }
    }
    assert!(poison > 3000 && fine > 3000 && mutated > 3000, "poison {poison}, fine {fine}, mutated {mutated}");
}
