//! A zero-copy msgpack tokenizer and the GIL-free validator built on it.
//!
//! Both the validator and the Python decoder walk the bytes with the same [`Reader`], so what the
//! validator accepts is exactly what the decoder can read: after validation the only errors the
//! decoder can still meet come from Python itself (e.g. memory).

use rmp::Marker;

use super::ext;

/// Containers nested deeper than this are refused on both sides of the wire. It bounds the
/// recursion of the encoder, validator and decoder, and catches self-referencing containers.
pub const MAX_DEPTH: usize = 64;

/// One msgpack token. Containers only carry their length; their items follow as further tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(u32),
    Map(u32),
    Ext(i8, &'a [u8]),
}

/// A cursor over a byte slice that yields [`Item`]s. Errors are plain strings because they only
/// ever end up in a poison message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Byte offset of the next token.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not consumed yet; every pending item needs at least one, which bounds allocations.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated data: need {n} bytes at offset {}",
                self.pos
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len8(&mut self) -> Result<u32, String> {
        Ok(u32::from(self.array::<1>()?[0]))
    }

    fn len16(&mut self) -> Result<u32, String> {
        Ok(u32::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn str(&mut self, len: u32) -> Result<Item<'a>, String> {
        let at = self.pos;
        let raw = self.take(len as usize)?;
        std::str::from_utf8(raw)
            .map(Item::Str)
            .map_err(|_| format!("string at offset {at} is not valid UTF-8"))
    }

    fn ext(&mut self, len: u32) -> Result<Item<'a>, String> {
        let code = self.array::<1>()?[0] as i8;
        Ok(Item::Ext(code, self.take(len as usize)?))
    }

    /// Reads the next token.
    pub fn next(&mut self) -> Result<Item<'a>, String> {
        let at = self.pos;
        let marker = Marker::from_u8(self.array::<1>()?[0]);
        Ok(match marker {
            Marker::FixPos(n) => Item::Int(i64::from(n)),
            Marker::FixNeg(n) => Item::Int(i64::from(n)),
            Marker::Null => Item::Nil,
            Marker::True => Item::Bool(true),
            Marker::False => Item::Bool(false),
            Marker::U8 => Item::Int(i64::from(self.array::<1>()?[0])),
            Marker::U16 => Item::Int(i64::from(u16::from_be_bytes(self.array()?))),
            Marker::U32 => Item::Int(i64::from(u32::from_be_bytes(self.array()?))),
            Marker::U64 => Item::UInt(u64::from_be_bytes(self.array()?)),
            Marker::I8 => Item::Int(i64::from(i8::from_be_bytes(self.array()?))),
            Marker::I16 => Item::Int(i64::from(i16::from_be_bytes(self.array()?))),
            Marker::I32 => Item::Int(i64::from(i32::from_be_bytes(self.array()?))),
            Marker::I64 => Item::Int(i64::from_be_bytes(self.array()?)),
            Marker::F32 => Item::Float(f64::from(f32::from_be_bytes(self.array()?))),
            Marker::F64 => Item::Float(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(n) => self.str(u32::from(n))?,
            Marker::Str8 => self.len8().and_then(|n| self.str(n))?,
            Marker::Str16 => self.len16().and_then(|n| self.str(n))?,
            Marker::Str32 => self.len32().and_then(|n| self.str(n))?,
            Marker::Bin8 => Item::Bin(self.len8().and_then(|n| self.take(n as usize))?),
            Marker::Bin16 => Item::Bin(self.len16().and_then(|n| self.take(n as usize))?),
            Marker::Bin32 => Item::Bin(self.len32().and_then(|n| self.take(n as usize))?),
            Marker::FixArray(n) => Item::Array(u32::from(n)),
            Marker::Array16 => Item::Array(self.len16()?),
            Marker::Array32 => Item::Array(self.len32()?),
            Marker::FixMap(n) => Item::Map(u32::from(n)),
            Marker::Map16 => Item::Map(self.len16()?),
            Marker::Map32 => Item::Map(self.len32()?),
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => self.len8().and_then(|n| self.ext(n))?,
            Marker::Ext16 => self.len16().and_then(|n| self.ext(n))?,
            Marker::Ext32 => self.len32().and_then(|n| self.ext(n))?,
            Marker::Reserved => return Err(format!("reserved marker 0xc1 at offset {at}")),
        })
    }

    /// Skips one complete value without judging ext payloads; used to find the envelope's
    /// fields before the version is known (a newer version may use ext codes we do not know).
    pub fn skip(&mut self, depth: usize) -> Result<(), String> {
        let items = match self.next()? {
            Item::Array(n) => n as usize,
            Item::Map(n) => 2 * n as usize,
            _ => return Ok(()),
        };
        check_depth(depth)?;
        (0..items).try_for_each(|_| self.skip(depth + 1))
    }

    /// Reads one complete value and checks everything the decoder relies on: well-formed
    /// tokens, known ext codes with well-formed payloads, depth, and hashable dict keys.
    /// `in_key` is set inside a map key, where containers that become lists or dicts in
    /// Python would be unhashable.
    pub fn validate(&mut self, depth: usize, in_key: bool) -> Result<(), String> {
        let at = self.pos;
        match self.next()? {
            Item::Array(_) | Item::Map(_) if in_key => Err(format!(
                "unhashable container used as a map key at offset {at}"
            )),
            Item::Array(n) => {
                check_depth(depth)?;
                (0..n).try_for_each(|_| self.validate(depth + 1, false))
            }
            Item::Map(n) => {
                check_depth(depth)?;
                (0..n).try_for_each(|_| {
                    self.validate(depth + 1, true)?;
                    self.validate(depth + 1, false)
                })
            }
            Item::Ext(code, data) => {
                ext::validate(code, data, depth, in_key).map_err(|e| format!("{e} at offset {at}"))
            }
            _ => Ok(()),
        }
    }

    /// Validates one value and requires that it spans the whole input.
    pub fn validate_all(buf: &'a [u8], depth: usize, in_key: bool) -> Result<(), String> {
        let mut rd = Reader::new(buf);
        rd.validate(depth, in_key)?;
        rd.expect_end()
    }

    /// Fails when bytes are left over after the value.
    pub fn expect_end(&self) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes after offset {}", self.pos)),
        }
    }
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("containers nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(())
}
