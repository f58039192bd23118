//! msgpack → Python objects, read straight from the bytes.
//!
//! Input reaching this module has passed [`Reader::validate`], so a structural error here means
//! a bug in the validator; it still surfaces as `PayloadError` rather than a panic.

use std::str::FromStr;

use num_bigint::BigInt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::classes;
use super::ext;
use super::reader::{Item, Reader};
use crate::errors::PayloadError;

fn bad(msg: String) -> PyErr {
    PayloadError::new_err(msg)
}

/// Reads one value.
pub fn value<'py>(py: Python<'py>, rd: &mut Reader<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match rd.next().map_err(bad)? {
        Item::Nil => py.None().into_bound(py),
        Item::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Item::Int(i) => i.into_pyobject(py)?.into_any(),
        Item::UInt(u) => u.into_pyobject(py)?.into_any(),
        Item::Float(f) => f.into_pyobject(py)?.into_any(),
        Item::Str(s) => PyString::new(py, s).into_any(),
        Item::Bin(b) => PyBytes::new(py, b).into_any(),
        Item::Array(n) => PyList::new(py, items(py, rd, n)?)?.into_any(),
        Item::Map(n) => map(py, rd, n)?.into_any(),
        Item::Ext(code, data) => ext_value(py, code, data)?,
    })
}

/// Reads `n` values; capacity is bounded by the input left, so a lying length cannot make us
/// allocate more than the payload size.
pub fn items<'py>(
    py: Python<'py>,
    rd: &mut Reader<'_>,
    n: u32,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut out = Vec::with_capacity((n as usize).min(rd.remaining()));
    for _ in 0..n {
        out.push(value(py, rd)?);
    }
    Ok(out)
}

/// Reads `n` key/value pairs into a new dict.
pub fn map<'py>(py: Python<'py>, rd: &mut Reader<'_>, n: u32) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for _ in 0..n {
        let key = value(py, rd)?;
        dict.set_item(key, value(py, rd)?)?;
    }
    Ok(dict)
}

/// Reads a msgpack array into a tuple.
pub fn tuple<'py>(py: Python<'py>, rd: &mut Reader<'_>) -> PyResult<Bound<'py, PyTuple>> {
    match rd.next().map_err(bad)? {
        Item::Array(n) => PyTuple::new(py, items(py, rd, n)?),
        other => Err(bad(format!("expected an array, found {other:?}"))),
    }
}

fn text(data: &[u8]) -> PyResult<&str> {
    std::str::from_utf8(data).map_err(|e| bad(format!("ext payload is not UTF-8: {e}")))
}

fn ext_value<'py>(py: Python<'py>, code: i8, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match code {
        ext::BIGINT => {
            let big =
                BigInt::from_str(text(data)?).map_err(|e| bad(format!("bad big int: {e}")))?;
            Ok(big.into_pyobject(py)?.into_any())
        }
        ext::TUPLE => Ok(tuple(py, &mut Reader::new(data))?.into_any()),
        ext::DATETIME => {
            classes::datetime(py)?.call_method1(pyo3::intern!(py, "fromisoformat"), (text(data)?,))
        }
        ext::DATE => {
            classes::date(py)?.call_method1(pyo3::intern!(py, "fromisoformat"), (text(data)?,))
        }
        ext::UUID => {
            let kwargs = PyDict::new(py);
            kwargs.set_item(pyo3::intern!(py, "bytes"), PyBytes::new(py, data))?;
            classes::uuid(py)?.call((), Some(&kwargs))
        }
        ext::DECIMAL => classes::decimal(py)?.call1((text(data)?,)),
        ext::SERIALIZED => {
            let (name, bytes) = ext::split_serialized(data)
                .ok_or_else(|| bad("malformed serialized value".into()))?;
            classes::serialized(py)?.call1((name, PyBytes::new(py, bytes)))
        }
        _ => Err(bad(format!("unknown ext type {code}"))),
    }
}
