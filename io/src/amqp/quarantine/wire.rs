//! AMQP 0-9-1 primitive types on the wire: a bounds-checked reader over a
//! byte slice and an appending writer. Every read of a hostile buffer is an
//! error, never a panic.

use std::fmt;

/// The input ended, or a length pointed past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Short {
    /// What was being read.
    pub what: &'static str,
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} runs past the end of its frame", self.what)
    }
}

/// Reads AMQP primitives from a slice, front to back.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Short> {
        if self.remaining() < n {
            return Err(Short { what });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Short> {
        Ok(self.bytes(N, what)?.try_into().expect("N bytes"))
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Short> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Short> {
        self.array(what).map(u16::from_be_bytes)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Short> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Short> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// A short string: a length octet, then that many bytes (not checked
    /// for UTF-8: that is the judge's business).
    pub fn shortstr(&mut self, what: &'static str) -> Result<&'a [u8], Short> {
        let len = self.u8(what)?;
        self.bytes(len.into(), what)
    }

    /// A long string: a 32-bit length, then that many bytes.
    pub fn longstr(&mut self, what: &'static str) -> Result<&'a [u8], Short> {
        let len = self.u32(what)?;
        self.bytes(len as usize, what)
    }
}

/// Appends AMQP primitives to a buffer.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A short string. Callers pass names tasklane chose or the broker
    /// sent, which fit; a longer one is cut at 255 bytes rather than
    /// written with a wrong length.
    pub fn shortstr(&mut self, s: &[u8]) -> &mut Self {
        let s = &s[..s.len().min(255)];
        self.u8(s.len() as u8).raw(s)
    }

    pub fn longstr(&mut self, s: &[u8]) -> &mut Self {
        let len = u32::try_from(s.len()).expect("a long string under 4 GiB");
        self.u32(len).raw(s)
    }

    /// A field table entry `name` = long string `value`.
    pub fn table_string(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.shortstr(name.as_bytes()).u8(b'S').longstr(value)
    }

    /// A field table entry `name` = boolean `value`.
    pub fn table_bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.shortstr(name.as_bytes()).u8(b't').u8(value.into())
    }

    /// A field table entry `name` = table of the already encoded `entries`.
    pub fn table_table(&mut self, name: &str, entries: &[u8]) -> &mut Self {
        self.shortstr(name.as_bytes()).u8(b'F').longstr(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip_big_endian() {
        let mut w = Writer::new();
        w.u8(7).u16(0x0102).u32(0x0304_0506).u64(0x0708_090a_0b0c_0d0e).shortstr(b"hi").longstr(b"\xffx");
        assert_eq!(&w.buf[..3], &[7, 1, 2]);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u16("b"), Ok(0x0102));
        assert_eq!(r.u32("c"), Ok(0x0304_0506));
        assert_eq!(r.u64("d"), Ok(0x0708_090a_0b0c_0d0e));
        assert_eq!(r.shortstr("e"), Ok(&b"hi"[..]));
        assert_eq!(r.longstr("f"), Ok(&b"\xffx"[..]));
        assert!(r.is_empty());
    }

    #[test]
    fn short_input_is_an_error_naming_the_field() {
        assert_eq!(Reader::new(&[0, 0, 0]).u32("frame size"), Err(Short { what: "frame size" }));
        // A length that points past the end, including one of 4 GiB.
        assert!(Reader::new(&[5, b'a']).shortstr("x").is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]).longstr("x").is_err());
        assert_eq!(Short { what: "routing key" }.to_string(), "routing key runs past the end of its frame");
    }

    #[test]
    fn a_too_long_shortstr_is_cut_not_mislabelled() {
        let mut w = Writer::new();
        w.shortstr(&[b'a'; 300]);
        assert_eq!(w.buf.len(), 256);
        assert_eq!(w.buf[0], 255);
    }
}
