//! The basic properties of a content header, decoded by amqprs' rules
//! (amqprs 2.1.5 `BasicProperties` through amqp_serde 0.4.3), strings
//! kept as raw bytes so that the judge can say which one amqprs would
//! choke on.
//!
//! Structure, as amqprs reads it: two flag octets (bits 15..2 name the
//! fields present, bits 1 and 0 are ignored), then the fields present in
//! order; the input must end exactly there. A field table is a 32-bit byte
//! length and entries (a short-string name, a type octet, a value) that
//! fill exactly that length; an array likewise, without names. The type
//! octets are RabbitMQ's: `t b B s u I i l f d D S A T F V x`. Anything
//! else fails amqprs' decoding (a non-letter even panics its reader task).

use std::fmt;
use std::ops::Range;

use super::wire::{Reader, Short, Writer};

/// Deepest nesting of tables and arrays accepted. amqprs decodes nested
/// values by recursion on the stack of its reader task, so a deep enough
/// header overflows that stack and aborts the whole process; RabbitMQ
/// carries such headers. Deeper than this is called undecodable.
pub const MAX_DEPTH: usize = 64;

/// A field value, strings as raw bytes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal {
        scale: u8,
        value: i32,
    },
    /// A long string (`S`), not necessarily UTF-8.
    Str(Vec<u8>),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(Table),
    Void,
    /// A byte array (`x`).
    Bytes(Vec<u8>),
}

/// A field table: entries in wire order, names as raw bytes.
pub type Table = Vec<(Vec<u8>, FieldValue)>;

/// The basic properties, as sent. Short strings are raw bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    pub content_type: Option<Vec<u8>>,
    pub content_encoding: Option<Vec<u8>>,
    pub headers: Option<Table>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<Vec<u8>>,
    pub reply_to: Option<Vec<u8>>,
    pub expiration: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    pub timestamp: Option<u64>,
    /// The `type` property.
    pub message_type: Option<Vec<u8>>,
    pub user_id: Option<Vec<u8>>,
    pub app_id: Option<Vec<u8>>,
    pub cluster_id: Option<Vec<u8>>,
}

impl Properties {
    /// A header's value by name.
    pub fn header(&self, name: &str) -> Option<&FieldValue> {
        self.headers.as_ref()?.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v)
    }
}

/// Where in the properties something is, for messages: `message_id`,
/// `header "a" > "b"`, `header "list"[2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath {
    steps: Vec<Step>,
    /// The path names a table entry's name rather than its value.
    name_of: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Property(&'static str),
    Key(Vec<u8>),
    Index(usize),
}

impl FieldPath {
    pub fn property(name: &'static str) -> Self {
        Self { steps: vec![Step::Property(name)], name_of: false }
    }

    pub(super) fn key(&self, k: &[u8]) -> Self {
        let mut p = self.clone();
        p.steps.push(Step::Key(k.to_vec()));
        p
    }

    pub(super) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.steps.push(Step::Index(i));
        p
    }

    /// The name of the entry this path leads to.
    pub(super) fn name_of(mut self) -> Self {
        self.name_of = true;
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name_of {
            f.write_str("the name of ")?;
        }
        let mut keys = 0;
        for step in &self.steps {
            match step {
                Step::Property(name) => f.write_str(name)?,
                Step::Key(k) => {
                    f.write_str(if keys == 0 { " " } else { " > " })?;
                    write!(f, "{:?}", String::from_utf8_lossy(k))?;
                    keys += 1;
                }
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// Why amqprs cannot decode the properties at all (as opposed to strings
/// in them that are not UTF-8, which [`super::judge`] finds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undecodable {
    /// A field type octet amqprs does not know.
    FieldType { at: FieldPath, tag: u8 },
    /// Tables or arrays nested deeper than [`MAX_DEPTH`].
    TooDeep { at: FieldPath },
    /// Lengths that do not add up, or bytes after the last field.
    Malformed { at: FieldPath, detail: String },
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undecodable::FieldType { at, tag } if tag.is_ascii_graphic() => {
                write!(f, "{at} has field type {:?} (0x{tag:02x})", *tag as char)
            }
            Undecodable::FieldType { at, tag } => write!(f, "{at} has field type 0x{tag:02x}"),
            Undecodable::TooDeep { at } => write!(f, "{at} nests tables deeper than {MAX_DEPTH} levels"),
            Undecodable::Malformed { at, detail } => write!(f, "properties are malformed at {at}: {detail}"),
        }
    }
}

fn short(at: &FieldPath) -> impl Fn(Short) -> Undecodable + '_ {
    move |s| Undecodable::Malformed { at: at.clone(), detail: s.to_string() }
}

/// Decodes encoded basic properties (a content header's payload after its
/// 12 fixed bytes) as amqprs would, or says why amqprs could not.
pub fn decode(raw: &[u8]) -> Result<Properties, Undecodable> {
    decode_spanned(raw).map(|(p, _)| p)
}

/// [`decode`], also saying where the headers table is (or where it would
/// go, empty, when there is none).
fn decode_spanned(raw: &[u8]) -> Result<(Properties, Range<usize>), Undecodable> {
    let mut r = Reader::new(raw);
    let top = FieldPath::property("property flags");
    let flags = r.u16("property flags").map_err(short(&top))?;
    let has = |bit: u16| flags & (1 << bit) != 0;
    let mut p = Properties::default();
    let s = |r: &mut Reader<'_>, name: &'static str| -> Result<Option<Vec<u8>>, Undecodable> {
        r.shortstr(name).map(|b| Some(b.to_vec())).map_err(short(&FieldPath::property(name)))
    };
    let octet =
        |r: &mut Reader<'_>, name: &'static str| r.u8(name).map(Some).map_err(short(&FieldPath::property(name)));
    if has(15) {
        p.content_type = s(&mut r, "content_type")?;
    }
    if has(14) {
        p.content_encoding = s(&mut r, "content_encoding")?;
    }
    let start = r.pos();
    if has(13) {
        p.headers = Some(table(&mut r, &FieldPath::property("header"), 0)?);
    }
    let span = start..r.pos();
    if has(12) {
        p.delivery_mode = octet(&mut r, "delivery_mode")?;
    }
    if has(11) {
        p.priority = octet(&mut r, "priority")?;
    }
    if has(10) {
        p.correlation_id = s(&mut r, "correlation_id")?;
    }
    if has(9) {
        p.reply_to = s(&mut r, "reply_to")?;
    }
    if has(8) {
        p.expiration = s(&mut r, "expiration")?;
    }
    if has(7) {
        p.message_id = s(&mut r, "message_id")?;
    }
    if has(6) {
        p.timestamp = Some(r.u64("timestamp").map_err(short(&FieldPath::property("timestamp")))?);
    }
    if has(5) {
        p.message_type = s(&mut r, "type")?;
    }
    if has(4) {
        p.user_id = s(&mut r, "user_id")?;
    }
    if has(3) {
        p.app_id = s(&mut r, "app_id")?;
    }
    if has(2) {
        p.cluster_id = s(&mut r, "cluster_id")?;
    }
    if !r.is_empty() {
        let detail = format!("{} bytes after the last property", r.remaining());
        return Err(Undecodable::Malformed { at: FieldPath::property("the end"), detail });
    }
    Ok((p, span))
}

/// A table: byte length, then entries that fill it exactly.
fn table(r: &mut Reader<'_>, at: &FieldPath, depth: usize) -> Result<Table, Undecodable> {
    let bytes = r.longstr("field table").map_err(short(at))?;
    let mut inner = Reader::new(bytes);
    let mut out = Vec::new();
    while !inner.is_empty() {
        let name = inner.shortstr("header name").map_err(short(at))?;
        let value = value(&mut inner, &at.key(name), depth)?;
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

fn value(r: &mut Reader<'_>, at: &FieldPath, depth: usize) -> Result<FieldValue, Undecodable> {
    let e = short(at);
    let tag = r.u8("field type").map_err(&e)?;
    let nested = |depth: usize| if depth >= MAX_DEPTH { Err(Undecodable::TooDeep { at: at.clone() }) } else { Ok(()) };
    Ok(match tag {
        b't' => FieldValue::Bool(r.u8("boolean").map_err(&e)? != 0),
        b'b' => FieldValue::I8(r.u8("byte").map_err(&e)? as i8),
        b'B' => FieldValue::U8(r.u8("octet").map_err(&e)?),
        b's' => FieldValue::I16(r.u16("short").map_err(&e)? as i16),
        b'u' => FieldValue::U16(r.u16("short").map_err(&e)?),
        b'I' => FieldValue::I32(r.u32("long").map_err(&e)? as i32),
        b'i' => FieldValue::U32(r.u32("long").map_err(&e)?),
        b'l' => FieldValue::I64(r.u64("long long").map_err(&e)? as i64),
        b'f' => FieldValue::F32(f32::from_bits(r.u32("float").map_err(&e)?)),
        b'd' => FieldValue::F64(f64::from_bits(r.u64("double").map_err(&e)?)),
        b'D' => {
            let scale = r.u8("decimal").map_err(&e)?;
            FieldValue::Decimal { scale, value: r.u32("decimal").map_err(&e)? as i32 }
        }
        b'S' => FieldValue::Str(r.longstr("long string").map_err(&e)?.to_vec()),
        b'A' => {
            nested(depth)?;
            let bytes = r.longstr("field array").map_err(&e)?;
            let mut inner = Reader::new(bytes);
            let mut items = Vec::new();
            while !inner.is_empty() {
                items.push(value(&mut inner, &at.index(items.len()), depth + 1)?);
            }
            FieldValue::Array(items)
        }
        b'T' => FieldValue::Timestamp(r.u64("timestamp").map_err(&e)?),
        b'F' => {
            nested(depth)?;
            FieldValue::Table(table(r, at, depth + 1)?)
        }
        b'V' => FieldValue::Void,
        b'x' => FieldValue::Bytes(r.longstr("byte array").map_err(&e)?.to_vec()),
        tag => return Err(Undecodable::FieldType { at: at.clone(), tag }),
    })
}

/// Encodes `p` as a content header's properties (the inverse of
/// [`decode`]), strings as the bytes they hold: for publishing what
/// amqprs would refuse to send, in tests and tools.
pub fn encode(p: &Properties) -> Vec<u8> {
    let shorts_before = [&p.content_type, &p.content_encoding];
    let shorts_after = [&p.correlation_id, &p.reply_to, &p.expiration, &p.message_id];
    let shorts_last = [&p.message_type, &p.user_id, &p.app_id, &p.cluster_id];
    let mut flags = 0u16;
    let mut w = Writer::new();
    let mut bit = 15;
    let mut mark = |present: bool, bit: &mut u16| {
        if present {
            flags |= 1 << *bit;
        }
        *bit -= 1;
    };
    for s in shorts_before {
        mark(s.is_some(), &mut bit);
        if let Some(s) = s {
            w.shortstr(s);
        }
    }
    mark(p.headers.is_some(), &mut bit);
    if let Some(t) = &p.headers {
        encode_table(&mut w, t);
    }
    for o in [p.delivery_mode, p.priority] {
        mark(o.is_some(), &mut bit);
        if let Some(o) = o {
            w.u8(o);
        }
    }
    for s in shorts_after {
        mark(s.is_some(), &mut bit);
        if let Some(s) = s {
            w.shortstr(s);
        }
    }
    mark(p.timestamp.is_some(), &mut bit);
    if let Some(t) = p.timestamp {
        w.u64(t);
    }
    for s in shorts_last {
        mark(s.is_some(), &mut bit);
        if let Some(s) = s {
            w.shortstr(s);
        }
    }
    let mut out = flags.to_be_bytes().to_vec();
    out.extend_from_slice(&w.buf);
    out
}

fn encode_table(w: &mut Writer, t: &Table) {
    let mut inner = Writer::new();
    for (name, v) in t {
        inner.shortstr(name);
        encode_value(&mut inner, v);
    }
    w.longstr(&inner.buf);
}

fn encode_value(w: &mut Writer, v: &FieldValue) {
    match v {
        FieldValue::Bool(b) => w.u8(b't').u8((*b).into()),
        FieldValue::I8(n) => w.u8(b'b').u8(*n as u8),
        FieldValue::U8(n) => w.u8(b'B').u8(*n),
        FieldValue::I16(n) => w.u8(b's').u16(*n as u16),
        FieldValue::U16(n) => w.u8(b'u').u16(*n),
        FieldValue::I32(n) => w.u8(b'I').u32(*n as u32),
        FieldValue::U32(n) => w.u8(b'i').u32(*n),
        FieldValue::I64(n) => w.u8(b'l').u64(*n as u64),
        FieldValue::F32(x) => w.u8(b'f').u32(x.to_bits()),
        FieldValue::F64(x) => w.u8(b'd').u64(x.to_bits()),
        FieldValue::Decimal { scale, value } => w.u8(b'D').u8(*scale).u32(*value as u32),
        FieldValue::Str(s) => w.u8(b'S').longstr(s),
        FieldValue::Array(items) => {
            let mut inner = Writer::new();
            for item in items {
                encode_value(&mut inner, item);
            }
            w.u8(b'A').longstr(&inner.buf)
        }
        FieldValue::Timestamp(t) => w.u8(b'T').u64(*t),
        FieldValue::Table(t) => {
            w.u8(b'F');
            encode_table(w, t);
            w
        }
        FieldValue::Void => w.u8(b'V'),
        FieldValue::Bytes(b) => w.u8(b'x').longstr(b),
    };
}

/// `raw` (encoded properties) with `entries` (encoded table entries)
/// appended to its headers table, a table added if it has none; every other
/// byte as it was.
pub fn with_headers(raw: &[u8], entries: &[u8]) -> Result<Vec<u8>, Undecodable> {
    let (props, span) = decode_spanned(raw)?;
    let old = if props.headers.is_some() { &raw[span.start + 4..span.end] } else { &[][..] };
    let mut table = old.to_vec();
    table.extend_from_slice(entries);
    let mut w = Writer::new();
    w.u8(raw[0] | 1 << 5).u8(raw[1]).raw(&raw[2..span.start]).longstr(&table).raw(&raw[span.end..]);
    Ok(w.buf)
}

#[cfg(test)]
#[path = "props_tests.rs"]
mod tests;
