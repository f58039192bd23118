//! Python objects → msgpack, written straight into one `Vec<u8>`.
//!
//! The path of a failing value is only built while an error unwinds, so the success path never
//! formats or allocates anything for it.

use num_bigint::BigInt;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use super::classes;
use super::ext;
use super::reader::MAX_DEPTH;
use crate::errors::Error;

/// Writing into a `Vec<u8>` cannot fail, so rmp's I/O error results carry no information here.
pub fn done<T, E>(_: Result<T, E>) {}

/// Why a value could not be encoded, plus the path segments collected while unwinding
/// (innermost first).
pub struct Fail {
    kind: FailKind,
    segs: Vec<String>,
}

enum FailKind {
    Unsupported(String),
    TooDeep(String),
    TooLong,
    Py(PyErr),
}

impl Fail {
    fn new(kind: FailKind) -> Self {
        Fail {
            kind,
            segs: Vec::new(),
        }
    }

    fn unsupported(obj: &Bound<'_, PyAny>) -> Self {
        Fail::new(FailKind::Unsupported(type_name(obj)))
    }

    /// Adds the segment of the container level the error passed through.
    fn at(mut self, seg: String) -> Self {
        self.segs.push(seg);
        self
    }

    /// Renders the error for a value whose top-level location is `root`.
    pub fn into_error(self, root: &str) -> Error {
        let mut path = String::from(root);
        self.segs.iter().rev().for_each(|s| path.push_str(s));
        match self.kind {
            FailKind::Unsupported(type_name) => Error::Unserializable { path, type_name },
            FailKind::TooDeep(type_name) => Error::Unserializable {
                path: format!(
                    "{path} (nested deeper than {MAX_DEPTH} levels; is it self-referencing?)"
                ),
                type_name,
            },
            FailKind::TooLong => Error::Payload(format!(
                "cannot serialize {path}: longer than 2**32-1 items or bytes"
            )),
            FailKind::Py(err) => Error::Payload(format!("cannot serialize {path}: {err}")),
        }
    }
}

impl From<PyErr> for Fail {
    fn from(err: PyErr) -> Self {
        Fail::new(FailKind::Py(err))
    }
}

/// The name of `obj`'s type as users know it (`set`, `datetime.time`); for error messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn len32(len: usize) -> Result<u32, Fail> {
    u32::try_from(len).map_err(|_| Fail::new(FailKind::TooLong))
}

/// Appends the msgpack encoding of `obj` to `buf`. `depth` counts the enclosing containers.
pub fn value(buf: &mut Vec<u8>, obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), Fail> {
    // Exact-type checks first: they are pointer compares and cover nearly every real payload.
    if obj.is_none() {
        done(rmp::encode::write_nil(buf));
    } else if let Ok(b) = obj.cast_exact::<PyBool>() {
        done(rmp::encode::write_bool(buf, b.is_true()));
    } else if obj.is_exact_instance_of::<PyInt>() {
        int(buf, obj)?;
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        string(buf, s)?;
    } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
        done(rmp::encode::write_f64(buf, f.value()));
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        list(buf, l, depth)?;
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        dict(buf, d, depth)?;
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        tuple(buf, t, depth)?;
    } else if let Ok(b) = obj.cast_exact::<PyBytes>() {
        bytes(buf, b.as_bytes())?;
    } else {
        other(buf, obj, depth)?;
    }
    Ok(())
}

/// The rarer types: the stdlib classes with ext codes, then subclasses of the basic types.
fn other(buf: &mut Vec<u8>, obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), Fail> {
    let py = obj.py();
    // datetime before date: datetime is a subclass of date.
    let datetime = classes::datetime(py)?;
    let date = classes::date(py)?;
    if obj.is_instance(datetime)? {
        iso_ext(buf, datetime, obj, ext::DATETIME)
    } else if obj.is_instance(date)? {
        iso_ext(buf, date, obj, ext::DATE)
    } else if obj.is_instance(classes::uuid(py)?)? {
        let raw = obj.getattr(pyo3::intern!(py, "bytes"))?;
        ext_data(
            buf,
            ext::UUID,
            raw.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes(),
        )
    } else if obj.is_instance(classes::decimal(py)?)? {
        ext_data(buf, ext::DECIMAL, obj.str()?.to_str()?.as_bytes())
    } else if obj.is_instance_of::<PyInt>() {
        int(buf, obj)
    } else if let Ok(s) = obj.cast::<PyString>() {
        string(buf, s)
    } else if obj.is_instance_of::<PyFloat>() {
        done(rmp::encode::write_f64(buf, obj.extract::<f64>()?));
        Ok(())
    } else if let Ok(l) = obj.cast::<PyList>() {
        list(buf, l, depth)
    } else if let Ok(d) = obj.cast::<PyDict>() {
        dict(buf, d, depth)
    } else if classes::serialized(py).is_ok_and(|c| obj.is_instance(c).unwrap_or(false)) {
        let (name, data): (String, Vec<u8>) = obj.extract()?;
        if name.is_empty() || name.contains('\0') {
            return Err(Fail::unsupported(obj));
        }
        let mut payload = Vec::with_capacity(name.len() + 1 + data.len());
        payload.extend_from_slice(name.as_bytes());
        payload.push(0);
        payload.extend_from_slice(&data);
        ext_data(buf, ext::SERIALIZED, &payload)
    } else {
        Err(Fail::unsupported(obj))
    }
}

/// Writes `cls.isoformat(obj)`. Calling the base class's method rather than `obj.isoformat()`
/// keeps subclasses that override it (e.g. with nanoseconds) readable by `fromisoformat`.
fn iso_ext(
    buf: &mut Vec<u8>,
    cls: &Bound<'_, PyType>,
    obj: &Bound<'_, PyAny>,
    code: i8,
) -> Result<(), Fail> {
    let iso = cls.call_method1(pyo3::intern!(obj.py(), "isoformat"), (obj,))?;
    let text = iso.cast::<PyString>().map_err(PyErr::from)?.to_str()?;
    ext_data(buf, code, text.as_bytes())
}

fn int(buf: &mut Vec<u8>, obj: &Bound<'_, PyAny>) -> Result<(), Fail> {
    if let Ok(v) = obj.extract::<i64>() {
        done(rmp::encode::write_sint(buf, v));
    } else if let Ok(v) = obj.extract::<u64>() {
        done(rmp::encode::write_uint(buf, v));
    } else {
        let big: BigInt = obj.extract()?;
        ext_data(buf, ext::BIGINT, big.to_string().as_bytes())?;
    }
    Ok(())
}

fn string(buf: &mut Vec<u8>, s: &Bound<'_, PyString>) -> Result<(), Fail> {
    let text = s.to_str()?;
    done(rmp::encode::write_str_len(buf, len32(text.len())?));
    buf.extend_from_slice(text.as_bytes());
    Ok(())
}

fn bytes(buf: &mut Vec<u8>, data: &[u8]) -> Result<(), Fail> {
    done(rmp::encode::write_bin_len(buf, len32(data.len())?));
    buf.extend_from_slice(data);
    Ok(())
}

fn ext_data(buf: &mut Vec<u8>, code: i8, data: &[u8]) -> Result<(), Fail> {
    done(rmp::encode::write_ext_meta(buf, len32(data.len())?, code));
    buf.extend_from_slice(data);
    Ok(())
}

fn enter(obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), Fail> {
    if depth >= MAX_DEPTH {
        return Err(Fail::new(FailKind::TooDeep(type_name(obj))));
    }
    Ok(())
}

fn list(buf: &mut Vec<u8>, l: &Bound<'_, PyList>, depth: usize) -> Result<(), Fail> {
    enter(l.as_any(), depth)?;
    done(rmp::encode::write_array_len(buf, len32(l.len())?));
    for (i, item) in l.iter().enumerate() {
        value(buf, &item, depth + 1).map_err(|f| f.at(format!("[{i}]")))?;
    }
    Ok(())
}

/// Writes the items of a tuple as a msgpack array (no ext wrapper).
pub fn array_of(buf: &mut Vec<u8>, t: &Bound<'_, PyTuple>, depth: usize) -> Result<(), Fail> {
    done(rmp::encode::write_array_len(buf, len32(t.len())?));
    for (i, item) in t.iter().enumerate() {
        value(buf, &item, depth + 1).map_err(|f| f.at(format!("[{i}]")))?;
    }
    Ok(())
}

/// Largest ext header: marker, u32 length, type code.
const EXT_HEADER_MAX: usize = 6;

fn tuple(buf: &mut Vec<u8>, t: &Bound<'_, PyTuple>, depth: usize) -> Result<(), Fail> {
    enter(t.as_any(), depth)?;
    // The ext header needs the payload length first; rather than encoding into a scratch buffer,
    // reserve room for the largest header, encode in place, then close the gap.
    let start = buf.len();
    buf.resize(start + EXT_HEADER_MAX, 0);
    array_of(buf, t, depth)?;
    let data_len = buf.len() - start - EXT_HEADER_MAX;
    let mut header = [0u8; EXT_HEADER_MAX];
    let mut cursor: &mut [u8] = &mut header;
    done(rmp::encode::write_ext_meta(
        &mut cursor,
        len32(data_len)?,
        ext::TUPLE,
    ));
    let header_len = EXT_HEADER_MAX - cursor.len();
    buf[start..start + header_len].copy_from_slice(&header[..header_len]);
    buf.copy_within(start + EXT_HEADER_MAX.., start + header_len);
    buf.truncate(start + header_len + data_len);
    Ok(())
}

fn dict(buf: &mut Vec<u8>, d: &Bound<'_, PyDict>, depth: usize) -> Result<(), Fail> {
    enter(d.as_any(), depth)?;
    done(rmp::encode::write_map_len(buf, len32(d.len())?));
    for (k, v) in d.iter() {
        value(buf, &k, depth + 1).map_err(|f| f.at(format!("[<key {}>]", key_repr(&k))))?;
        value(buf, &v, depth + 1).map_err(|f| f.at(format!("[{}]", key_repr(&k))))?;
    }
    Ok(())
}

/// `repr()` of a dict key for error paths; only called while an error unwinds.
pub fn key_repr(key: &Bound<'_, PyAny>) -> String {
    key.repr()
        .map_or_else(|_| "?".to_owned(), |r| r.to_string())
}
