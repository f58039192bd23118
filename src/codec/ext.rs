//! The msgpack ext types asyncq defines, and GIL-free checks of their payloads.

use super::reader::{Item, Reader, MAX_DEPTH};

/// An int outside i64/u64, as its ASCII decimal string.
pub const BIGINT: i8 = 1;
/// A tuple; the payload is the msgpack array of its items.
pub const TUPLE: i8 = 2;
/// `datetime.datetime`, as its UTF-8 `isoformat()`.
pub const DATETIME: i8 = 3;
/// `datetime.date`, as its `isoformat()`.
pub const DATE: i8 = 4;
/// `uuid.UUID`, as its 16 raw bytes.
pub const UUID: i8 = 5;
/// `decimal.Decimal`, as `str(d)`.
pub const DECIMAL: i8 = 6;
/// `asyncq.serialization.Serialized`: a value another serializer encoded, as the serializer's
/// name (UTF-8, no NUL), a NUL byte, then its bytes.
pub const SERIALIZED: i8 = 7;

/// Checks that an ext payload is one the decoder can turn into a Python object.
pub fn validate(code: i8, data: &[u8], depth: usize, in_key: bool) -> Result<(), String> {
    let ok = match code {
        BIGINT => is_bigint(data),
        TUPLE => return validate_tuple(data, depth, in_key),
        DATETIME => is_datetime(data),
        DATE => is_date(data),
        UUID => data.len() == 16,
        DECIMAL => is_decimal(data),
        SERIALIZED => split_serialized(data).is_some(),
        _ => return Err(format!("unknown ext type {code}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("malformed payload for ext type {code}"))
    }
}

fn validate_tuple(data: &[u8], depth: usize, in_key: bool) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("containers nested deeper than {MAX_DEPTH} levels"));
    }
    let mut rd = Reader::new(data);
    let Item::Array(n) = rd.next()? else {
        return Err("tuple payload is not an array".to_owned());
    };
    // A tuple used as a dict key must itself hold only hashable items, so `in_key` carries on.
    (0..n).try_for_each(|_| rd.validate(depth + 1, in_key))?;
    rd.expect_end()
}

/// A [`SERIALIZED`] payload's serializer name and bytes.
pub fn split_serialized(data: &[u8]) -> Option<(&str, &[u8])> {
    let nul = data.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&data[..nul]).ok()?;
    (!name.is_empty()).then(|| (name, &data[nul + 1..]))
}

fn is_bigint(data: &[u8]) -> bool {
    let digits = data.strip_prefix(b"-").unwrap_or(data);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// `YYYY-MM-DD`, the only shape `date.isoformat()` produces.
fn is_date(data: &[u8]) -> bool {
    data.len() == 10
        && data.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// A date, `T`, then a time with optional fraction and UTC offset; `fromisoformat` does the
/// exact parsing, this only keeps garbage away from it.
fn is_datetime(data: &[u8]) -> bool {
    (19..=48).contains(&data.len())
        && is_date(&data[..10])
        && data[10] == b'T'
        && data[11..]
            .iter()
            .all(|c| c.is_ascii_digit() || b":.+-".contains(c))
}

/// Digits, sign, point and exponent, or the special values (`NaN`, `sNaN`, `Infinity`).
fn is_decimal(data: &[u8]) -> bool {
    !data.is_empty()
        && data
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
}
