//! The wire codec: the versioned msgpack job envelope, Python ⇄ msgpack values, error records.
//!
//! Value mapping: None→nil, bool→bool, int→int (ext 1 = decimal string beyond i64/u64),
//! float→f64, str→str, bytes→bin, list→array, tuple→ext 2 (payload: msgpack array), dict→map,
//! datetime→ext 3 (`isoformat()`), date→ext 4 (`isoformat()`), UUID→ext 5 (16 bytes),
//! Decimal→ext 6 (`str(d)`). Subclasses of int/str/float/list/dict travel as their base type.
//!
//! The envelope is a msgpack map: `v` version, `t` task name, `a` args array, `k` kwargs map,
//! optional `m` meta map (`to` = timeout seconds, `h` = string headers such as W3C trace
//! context, `c` = the serializer of the arguments when not msgpack, each then an ext 7 value).
//! A compressed envelope is `{v, t, z: "zstd", p: <the whole inner envelope, compressed>}`
//! ([`compress_envelope`], [`open_envelope`]). `s` is the signature; readers ignore unknown
//! keys. [`parse_envelope`] validates everything without the GIL, so [`decode_args`]
//! only runs on data known to be well-formed. With signing keys configured, an `s` entry (last in
//! the map) carries an HMAC-SHA256 of the envelope without it; see [`sign`] and [`verify`].

mod decode;
mod encode;
mod ext;
mod reader;
mod sign;
#[cfg(test)]
mod tests;

use std::ops::Range;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use serde::{Deserialize, Serialize};

use crate::errors::{Error, PayloadError};
use encode::done;
use reader::{Item, Reader};

pub use reader::MAX_DEPTH;
pub use sign::{sign, verify, SIGNATURE_OVERHEAD};

/// The envelope version this build writes and the only one it reads.
pub const ENVELOPE_VERSION: u64 = 1;

/// Encoded empty array and map, standing in for an absent `a` / `k`.
const EMPTY_ARRAY: &[u8] = &[0x90];
const EMPTY_MAP: &[u8] = &[0x80];

/// The Python classes with ext codes, imported once per process.
mod classes {
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::PyType;

    static DATETIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static DATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static UUID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static SERIALIZED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

    pub fn datetime(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        DATETIME.import(py, "datetime", "datetime")
    }

    pub fn date(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        DATE.import(py, "datetime", "date")
    }

    pub fn uuid(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        UUID.import(py, "uuid", "UUID")
    }

    pub fn decimal(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        DECIMAL.import(py, "decimal", "Decimal")
    }

    /// A value another serializer encoded (ext 7); imported only when one is met.
    pub fn serialized(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        SERIALIZED.import(py, "asyncq.serialization", "Serialized")
    }
}

/// Optional per-job settings carried in the envelope's `m` map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// `to`: how long one run may take, in seconds.
    pub timeout_s: Option<f64>,
    /// `h`: string headers the producer attached (W3C trace context: `traceparent`,
    /// `tracestate`), handed to the worker as they came; empty when absent.
    pub headers: Vec<(String, String)>,
    /// `c`: the serializer that encoded the arguments (each one an ext 7 value), when it is
    /// not the native msgpack; the worker decodes them with it before the run.
    pub serializer: Option<String>,
}

/// Why an envelope cannot be run. A poisoned job is never retried: the bytes will not change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Poison {
    /// Not a well-formed envelope of a known version.
    #[error("bad payload: {0}")]
    BadPayload(String),
    /// Signatures are required and the message carries none.
    #[error("unsigned message: this worker only runs signed jobs")]
    Unsigned,
    /// The signature matches none of the accepted keys: tampered, or signed with another key.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Written by a newer (or unknown) codec.
    #[error("unsupported envelope version {found} (this worker reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion { found: u64 },
    /// Larger than the reader's `max_size`.
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
}

impl Poison {
    /// The error-record `reason` for this poison.
    pub fn reason(&self) -> &'static str {
        match self {
            Poison::BadPayload(_) => "bad_payload",
            Poison::UnsupportedVersion { .. } => "unsupported_version",
            Poison::Oversized { .. } => "oversized",
            Poison::Unsigned => "unsigned",
            Poison::BadSignature(_) => "bad_signature",
        }
    }

    /// A human-readable description.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// A validated envelope borrowing from the job's bytes; args and kwargs stay encoded until
/// [`decode_args`] turns them into Python objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    /// `v`; always [`ENVELOPE_VERSION`] once parsed.
    pub version: u64,
    /// `t`: the registered task name (non-empty).
    pub task: &'a str,
    /// `m`, defaulted when absent.
    pub meta: Meta,
    /// `a` as a validated msgpack array (an empty array when absent).
    args_raw: &'a [u8],
    /// `k` as a validated msgpack map with str keys (an empty map when absent).
    kwargs_raw: &'a [u8],
}

fn positional_root(arg_names: &[String], i: usize) -> String {
    match arg_names.get(i) {
        Some(name) => format!("argument '{name}'"),
        None => format!("argument #{i}"),
    }
}

/// Writes a msgpack string key or value.
fn put_str(buf: &mut Vec<u8>, s: &str) {
    done(rmp::encode::write_str(buf, s));
}

/// Encodes a job envelope. `arg_names[i]` names positional `i` in error paths; the result
/// must not exceed `max_size` bytes.
pub fn encode_envelope(
    task: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    meta: &Meta,
    arg_names: &[String],
    max_size: usize,
) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(128);
    done(rmp::encode::write_map_len(
        &mut buf,
        if meta.timeout_s.is_some() || !meta.headers.is_empty() || meta.serializer.is_some() {
            5
        } else {
            4
        },
    ));
    put_str(&mut buf, "v");
    done(rmp::encode::write_uint(&mut buf, ENVELOPE_VERSION));
    put_str(&mut buf, "t");
    put_str(&mut buf, task);
    put_str(&mut buf, "a");
    encode_args(&mut buf, args, arg_names)?;
    put_str(&mut buf, "k");
    encode_kwargs(&mut buf, kwargs)?;
    let meta_len = u32::from(meta.timeout_s.is_some())
        + u32::from(!meta.headers.is_empty())
        + u32::from(meta.serializer.is_some());
    if meta_len > 0 {
        put_str(&mut buf, "m");
        done(rmp::encode::write_map_len(&mut buf, meta_len));
        if let Some(timeout) = meta.timeout_s {
            put_str(&mut buf, "to");
            done(rmp::encode::write_f64(&mut buf, timeout));
        }
        if !meta.headers.is_empty() {
            put_str(&mut buf, "h");
            done(rmp::encode::write_map_len(
                &mut buf,
                meta.headers.len() as u32,
            ));
            for (name, value) in &meta.headers {
                put_str(&mut buf, name);
                put_str(&mut buf, value);
            }
        }
        if let Some(name) = &meta.serializer {
            put_str(&mut buf, "c");
            put_str(&mut buf, name);
        }
    }
    if buf.len() > max_size {
        return Err(Error::Oversized {
            size: buf.len(),
            limit: max_size,
        });
    }
    Ok(buf)
}

fn encode_args(
    buf: &mut Vec<u8>,
    args: &Bound<'_, PyTuple>,
    arg_names: &[String],
) -> Result<(), Error> {
    let len = u32::try_from(args.len()).map_err(|_| Error::Payload("too many arguments".into()))?;
    done(rmp::encode::write_array_len(buf, len));
    for (i, arg) in args.iter().enumerate() {
        encode::value(buf, &arg, 1).map_err(|f| f.into_error(&positional_root(arg_names, i)))?;
    }
    Ok(())
}

fn encode_kwargs(buf: &mut Vec<u8>, kwargs: Option<&Bound<'_, PyDict>>) -> Result<(), Error> {
    let Some(kwargs) = kwargs else {
        done(rmp::encode::write_map_len(buf, 0));
        return Ok(());
    };
    let len = u32::try_from(kwargs.len())
        .map_err(|_| Error::Payload("too many keyword arguments".into()))?;
    done(rmp::encode::write_map_len(buf, len));
    for (key, value) in kwargs.iter() {
        let name = kwarg_name(&key)?;
        put_str(buf, name);
        encode::value(buf, &value, 1)
            .map_err(|f| f.into_error(&format!("keyword argument '{name}'")))?;
    }
    Ok(())
}

/// A kwarg's name; Python only passes str names, but a dict handed in directly may not.
fn kwarg_name<'a>(key: &'a Bound<'_, PyAny>) -> Result<&'a str, Error> {
    let unserializable = || Error::Unserializable {
        path: format!("keyword argument {}", encode::key_repr(key)),
        type_name: encode::type_name(key),
    };
    let s = key.cast::<PyString>().map_err(|_| unserializable())?;
    s.to_str().map_err(|_| unserializable())
}

/// Encodes one value (a job result); `path` names it in errors, e.g. `result`.
pub fn encode_value(obj: &Bound<'_, PyAny>, path: &str) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(64);
    encode::value(&mut buf, obj, 0).map_err(|f| f.into_error(path))?;
    Ok(buf)
}

/// Decodes one value written by [`encode_value`], validating it first.
pub fn decode_value<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    Reader::validate_all(bytes, 0, false).map_err(PayloadError::new_err)?;
    decode::value(py, &mut Reader::new(bytes))
}

/// Turns a parsed envelope's args and kwargs into Python objects.
pub fn decode_args<'py>(
    py: Python<'py>,
    env: &Envelope<'_>,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    decode_parts(py, env.args_raw, env.kwargs_raw)
}

/// Where a parsed envelope's task name, args and kwargs lie in its bytes. The consumer keeps
/// these from the validation it runs without the GIL, so turning the job into Python objects
/// later does not walk the payload a second time.
#[derive(Debug, Clone)]
pub struct Spans {
    task: Range<usize>,
    /// `None`: absent from the envelope (decoded as empty).
    args: Option<Range<usize>>,
    kwargs: Option<Range<usize>>,
}

impl Envelope<'_> {
    /// The spans of this envelope inside `bytes`, the buffer it was parsed from.
    pub fn spans(&self, bytes: &[u8]) -> Spans {
        let within = |part: &[u8]| {
            let start = (part.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
            (start + part.len() <= bytes.len()).then(|| start..start + part.len())
        };
        Spans {
            task: within(self.task.as_bytes()).unwrap_or(0..0),
            args: within(self.args_raw),
            kwargs: within(self.kwargs_raw),
        }
    }
}

impl Spans {
    /// The task name; `bytes` must be the buffer the spans were taken from.
    pub fn task<'a>(&self, bytes: &'a [u8]) -> &'a str {
        std::str::from_utf8(&bytes[self.task.clone()]).unwrap_or_default()
    }

    /// [`decode_args`] for an envelope validated earlier from the same `bytes`.
    pub fn decode_args<'py>(
        &self,
        py: Python<'py>,
        bytes: &[u8],
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        let part = |r: &Option<Range<usize>>, empty| r.clone().map_or(empty, |r| &bytes[r]);
        decode_parts(
            py,
            part(&self.args, EMPTY_ARRAY),
            part(&self.kwargs, EMPTY_MAP),
        )
    }
}

fn decode_parts<'py>(
    py: Python<'py>,
    args_raw: &[u8],
    kwargs_raw: &[u8],
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    let args = decode::tuple(py, &mut Reader::new(args_raw))?;
    let mut rd = Reader::new(kwargs_raw);
    let kwargs = match rd.next().map_err(PayloadError::new_err)? {
        Item::Map(n) => decode::map(py, &mut rd, n)?,
        _ => return Err(PayloadError::new_err("kwargs are not a map")),
    };
    Ok((args, kwargs))
}

/// The raw slices of the envelope's known top-level fields.
#[derive(Default)]
struct Fields<'a> {
    v: Option<&'a [u8]>,
    t: Option<&'a [u8]>,
    a: Option<&'a [u8]>,
    k: Option<&'a [u8]>,
    m: Option<&'a [u8]>,
    /// `z`: the compression of `p`, which then holds the whole inner envelope.
    z: Option<&'a [u8]>,
    p: Option<&'a [u8]>,
}

/// Reads a map key of the envelope or meta map; a container there would desynchronize the
/// key/value walk, and no version of the format puts one there.
fn next_key<'a>(rd: &mut Reader<'a>) -> Result<Item<'a>, String> {
    match rd.next()? {
        Item::Array(_) | Item::Map(_) => Err("a map key is a container".into()),
        key => Ok(key),
    }
}

/// Splits the top-level map into raw field slices, checking only token structure: the version
/// must be known before the rest may be judged.
fn scan(bytes: &[u8]) -> Result<Fields<'_>, String> {
    let mut rd = Reader::new(bytes);
    let Item::Map(n) = rd.next()? else {
        return Err("envelope is not a map".into());
    };
    let mut fields = Fields::default();
    for _ in 0..n {
        let key = next_key(&mut rd)?;
        let start = rd.pos();
        rd.skip(1)?;
        let raw = &bytes[start..rd.pos()];
        let slot = match key {
            Item::Str("v") => &mut fields.v,
            Item::Str("t") => &mut fields.t,
            Item::Str("a") => &mut fields.a,
            Item::Str("k") => &mut fields.k,
            Item::Str("m") => &mut fields.m,
            Item::Str("z") => &mut fields.z,
            Item::Str("p") => &mut fields.p,
            _ => continue, // unknown or reserved (`s`): ignored by design
        };
        if slot.replace(raw).is_some() {
            return Err(format!("duplicate envelope key {key:?}"));
        }
    }
    rd.expect_end()?;
    Ok(fields)
}

fn single(raw: &[u8]) -> Result<Item<'_>, String> {
    Reader::new(raw).next()
}

fn parse_version(raw: Option<&[u8]>) -> Result<u64, Poison> {
    let raw = raw.ok_or_else(|| Poison::BadPayload("missing version `v`".into()))?;
    match single(raw).map_err(Poison::BadPayload)? {
        Item::Int(v) if v >= 0 => Ok(v as u64),
        Item::UInt(v) => Ok(v),
        other => Err(Poison::BadPayload(format!(
            "version is not an unsigned int: {other:?}"
        ))),
    }
}

fn parse_task(raw: Option<&[u8]>) -> Result<&str, String> {
    match single(raw.ok_or("missing task name `t`")?)? {
        Item::Str(t) if !t.is_empty() => Ok(t),
        other => Err(format!("task name is not a non-empty string: {other:?}")),
    }
}

fn check_args(raw: &[u8]) -> Result<(), String> {
    let mut rd = Reader::new(raw);
    let Item::Array(n) = rd.next()? else {
        return Err("args `a` are not an array".into());
    };
    (0..n).try_for_each(|_| rd.validate(1, false))
}

fn check_kwargs(raw: &[u8]) -> Result<(), String> {
    let mut rd = Reader::new(raw);
    let Item::Map(n) = rd.next()? else {
        return Err("kwargs `k` are not a map".into());
    };
    (0..n).try_for_each(|_| match rd.next()? {
        Item::Str(_) => rd.validate(1, false),
        other => Err(format!("kwarg name is not a string: {other:?}")),
    })
}

fn parse_meta(raw: Option<&[u8]>) -> Result<Meta, String> {
    let mut meta = Meta::default();
    let Some(raw) = raw else { return Ok(meta) };
    let mut rd = Reader::new(raw);
    let Item::Map(n) = rd.next()? else {
        return Err("meta `m` is not a map".into());
    };
    for _ in 0..n {
        let key = next_key(&mut rd)?;
        let start = rd.pos();
        rd.skip(1)?;
        if key == Item::Str("to") {
            meta.timeout_s = match single(&raw[start..rd.pos()])? {
                Item::Nil => None,
                Item::Float(f) => Some(f),
                Item::Int(i) => Some(i as f64),
                Item::UInt(u) => Some(u as f64),
                other => return Err(format!("timeout `to` is not a number: {other:?}")),
            };
        } else if key == Item::Str("h") {
            meta.headers = parse_headers(&raw[start..rd.pos()])?;
        } else if key == Item::Str("c") {
            meta.serializer = match single(&raw[start..rd.pos()])? {
                Item::Str(name) if !name.is_empty() => Some(name.to_owned()),
                other => return Err(format!("serializer `c` is not a name: {other:?}")),
            };
        }
    }
    Ok(meta)
}

/// The headers map `h`: string names to string values.
fn parse_headers(raw: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut rd = Reader::new(raw);
    let Item::Map(n) = rd.next()? else {
        return Err("headers `h` are not a map".into());
    };
    (0..n)
        .map(|_| match (rd.next()?, rd.next()?) {
            (Item::Str(name), Item::Str(value)) => Ok((name.to_owned(), value.to_owned())),
            other => Err(format!("a header is not a string pair: {other:?}")),
        })
        .collect()
}

/// Validates an envelope without touching Python. Afterwards [`decode_args`] meets only
/// well-formed data with known ext types.
pub fn parse_envelope(bytes: &[u8], max_size: usize) -> Result<Envelope<'_>, Poison> {
    if bytes.len() > max_size {
        return Err(Poison::Oversized {
            size: bytes.len(),
            limit: max_size,
        });
    }
    let fields = scan(bytes).map_err(Poison::BadPayload)?;
    let version = parse_version(fields.v)?;
    if version != ENVELOPE_VERSION {
        return Err(Poison::UnsupportedVersion { found: version });
    }
    let bad = Poison::BadPayload;
    let task = parse_task(fields.t).map_err(bad)?;
    let args_raw = fields.a.unwrap_or(EMPTY_ARRAY);
    check_args(args_raw).map_err(|e| bad(format!("args: {e}")))?;
    let kwargs_raw = fields.k.unwrap_or(EMPTY_MAP);
    check_kwargs(kwargs_raw).map_err(|e| bad(format!("kwargs: {e}")))?;
    if fields.z.is_some() {
        return Err(bad(
            "a compressed envelope (`z`) must be opened first (see open_envelope)".into(),
        ));
    }
    let meta = parse_meta(fields.m).map_err(bad)?;
    Ok(Envelope {
        version,
        task,
        meta,
        args_raw,
        kwargs_raw,
    })
}

/// Whether `bytes` may be a compressed envelope: false as soon as the top-level map shows an
/// `a` or `k` key (a compressed envelope has neither) before a `z`. Writers put `a` third and
/// `z` third, so for asyncq's own envelopes this reads two short values, never the arguments;
/// anything it cannot read is left to the full parse to judge.
fn may_be_compressed(bytes: &[u8]) -> bool {
    let mut rd = Reader::new(bytes);
    let Ok(Item::Map(n)) = rd.next() else {
        return true;
    };
    for _ in 0..n {
        match next_key(&mut rd) {
            Ok(Item::Str("z")) => return true,
            Ok(Item::Str("a" | "k")) => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
        if rd.skip(1).is_err() {
            return true;
        }
    }
    false
}

/// The task name `t` of an envelope, read key by key without validating the rest.
fn task_of(bytes: &[u8]) -> Result<&str, String> {
    let mut rd = Reader::new(bytes);
    let Item::Map(n) = rd.next()? else {
        return Err("envelope is not a map".into());
    };
    for _ in 0..n {
        let key = next_key(&mut rd)?;
        let start = rd.pos();
        rd.skip(1)?;
        if key == Item::Str("t") {
            return parse_task(Some(&bytes[start..rd.pos()]));
        }
    }
    Err("missing task name `t`".into())
}

/// The only compression this build writes and reads (`z`).
pub const ZSTD: &str = "zstd";

/// zstd's level for envelopes: its default, a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;

/// `inner` (an encoded envelope of `task`) compressed into an outer envelope
/// `{v, t, z: "zstd", p: <bytes>}` when it is longer than `over` bytes and compression makes
/// it shorter; else `inner` unchanged. The task name stays readable outside, so tools and the
/// worker's admission see it without decompressing.
pub fn compress_envelope(task: &str, inner: Vec<u8>, over: usize) -> Vec<u8> {
    if inner.len() <= over {
        return inner;
    }
    let Ok(packed) = zstd::bulk::compress(&inner, ZSTD_LEVEL) else {
        return inner;
    };
    let mut buf = Vec::with_capacity(packed.len() + task.len() + 16);
    done(rmp::encode::write_map_len(&mut buf, 4));
    put_str(&mut buf, "v");
    done(rmp::encode::write_uint(&mut buf, ENVELOPE_VERSION));
    put_str(&mut buf, "t");
    put_str(&mut buf, task);
    put_str(&mut buf, "z");
    put_str(&mut buf, ZSTD);
    put_str(&mut buf, "p");
    done(rmp::encode::write_bin(&mut buf, &packed));
    if buf.len() >= inner.len() {
        return inner;
    }
    buf
}

/// The inner envelope of a compressed one (None for an envelope that is not compressed),
/// decompressed to at most `limit` bytes: the size limit holds for what the worker decodes,
/// so a small payload cannot expand into a large one. Run after the signature check, which
/// covers the compressed bytes, so nothing unsigned is decompressed. The caller validates the
/// inner envelope with [`parse_envelope`] (once), which also refuses one compressed again.
pub fn open_envelope(bytes: &[u8], limit: usize) -> Result<Option<Vec<u8>>, Poison> {
    if !may_be_compressed(bytes) {
        return Ok(None); // the common case, decided without walking the arguments
    }
    let fields = scan(bytes).map_err(Poison::BadPayload)?;
    let Some(z) = fields.z else { return Ok(None) };
    let bad = |why: String| Poison::BadPayload(why);
    match single(z).map_err(bad)? {
        Item::Str(ZSTD) => {}
        other => return Err(bad(format!("unknown compression `z` {other:?}"))),
    }
    let packed = match fields.p.map(single).transpose().map_err(bad)? {
        Some(Item::Bin(b)) => b,
        _ => return Err(bad("a compressed envelope's `p` is not bytes".into())),
    };
    let size = zstd::zstd_safe::get_frame_content_size(packed)
        .ok()
        .flatten()
        .ok_or_else(|| bad("a compressed envelope's frame does not state its size".into()))?;
    if size > limit as u64 {
        return Err(Poison::Oversized {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit,
        });
    }
    let inner = zstd::bulk::decompress(packed, size as usize)
        .map_err(|e| bad(format!("cannot decompress the envelope: {e}")))?;
    // The inner envelope is validated once, by the caller's parse; only its task name is
    // read here (writers put it second, so this reads two short values).
    let outer_task = parse_task(fields.t).map_err(bad)?;
    let inner_task = task_of(&inner).map_err(bad)?;
    if inner_task != outer_task {
        return Err(bad(format!(
            "a compressed envelope names task {outer_task:?} outside and {inner_task:?} inside"
        )));
    }
    Ok(Some(inner))
}

/// A failure as stored on the job: a msgpack map `{type, message, traceback, reason}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorRecord {
    /// The exception's class name.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
    /// One of the reasons listed in docs/architecture.md.
    pub reason: String,
}

impl ErrorRecord {
    /// Encodes as a msgpack map keyed by field name.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Four strings into a Vec: serialization has no failure mode here.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes a record; missing fields become empty strings and unknown ones are ignored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::Payload(format!("bad error record: {e}")))
    }
}
