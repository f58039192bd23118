use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::*;

const SETUP: &std::ffi::CStr = cr#"
import datetime, uuid, decimal, enum, collections
tz = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
class Color(enum.IntEnum):
    RED = 1
class Name(str):
    pass
class L(list):
    pass
class Stamp(datetime.datetime):
    def isoformat(self, sep='T', timespec='auto'):
        return 'not a date'
def same(a, b):
    # Strict equality: types must match exactly, recursively.
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(k, l) and same(a[k], b[l]) for k, l in zip(a, b))
    if isinstance(a, datetime.datetime):
        return a == b and a.tzinfo == b.tzinfo
    return a == b
"#;

fn globals(py: Python<'_>) -> Bound<'_, PyDict> {
    let g = PyDict::new(py);
    py.run(SETUP, Some(&g), None).unwrap();
    g
}

fn eval<'py>(g: &Bound<'py, PyDict>, expr: &str) -> Bound<'py, PyAny> {
    let code = CString::new(expr).unwrap();
    g.py().eval(&code, Some(g), None).unwrap()
}

fn same(g: &Bound<'_, PyDict>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    g.get_item("same")
        .unwrap()
        .unwrap()
        .call1((a, b))
        .unwrap()
        .is_truthy()
        .unwrap()
}

fn with_py<R>(f: impl for<'py> FnOnce(&Bound<'py, PyDict>) -> R) -> R {
    Python::initialize();
    Python::attach(|py| f(&globals(py)))
}

fn roundtrip<'py>(v: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    let bytes = encode_value(v, "result").unwrap();
    decode_value(v.py(), &bytes).unwrap()
}

const EVERYTHING: &str = "[None, True, False, 0, -1, 127, 128, -33, 2**63 - 1, -2**63, 2**64 - 1, \
    2**64, -2**63 - 1, 2**100, -2**100, 1.5, -0.0, float('inf'), '', 'héllo ✓', b'', b'\\x00\\xff', \
    [1, [2, [3, []]]], (), (1, 'a', (2,)), [(1, 2), (3,)], \
    {1: 'a', 'b': 2, (1, (2, 'x')): 3, None: 4, b'k': 5, 2.5: [6]}, \
    datetime.datetime(2024, 2, 29, 13, 5, 7), datetime.datetime(2024, 2, 29, 13, 5, 7, 120, tzinfo=tz), \
    datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc), datetime.date(2024, 1, 31), \
    uuid.UUID('12345678-1234-5678-1234-567812345678'), decimal.Decimal('1.10'), \
    decimal.Decimal('-Infinity'), decimal.Decimal('-1E+400')]";

#[test]
fn every_supported_type_round_trips() {
    with_py(|g| {
        let v = eval(g, EVERYTHING);
        assert!(same(g, &v, &roundtrip(&v)));
    });
}

#[test]
fn aware_datetimes_stay_aware_and_naive_stay_naive() {
    with_py(|g| {
        let aware = roundtrip(&eval(g, "datetime.datetime(2024, 1, 1, 12, tzinfo=tz)"));
        let offset = aware
            .call_method0("utcoffset")
            .unwrap()
            .str()
            .unwrap()
            .to_string();
        assert_eq!(offset, "5:30:00");
        let naive = roundtrip(&eval(g, "datetime.datetime(2024, 1, 1, 12)"));
        assert!(naive.getattr("tzinfo").unwrap().is_none());
    });
}

#[test]
fn subclasses_travel_as_base_types() {
    with_py(|g| {
        let v = eval(
            g,
            "[Color.RED, Name('x'), collections.OrderedDict(a=1), L([1]), Stamp(2024, 1, 2, 3)]",
        );
        let expected = eval(
            g,
            "[1, 'x', {'a': 1}, [1], datetime.datetime(2024, 1, 2, 3)]",
        );
        assert!(same(g, &expected, &roundtrip(&v)));
    });
}

#[test]
fn big_ints_use_ext_1_small_ones_do_not() {
    with_py(|g| {
        assert_eq!(encode_value(&eval(g, "2**64 - 1"), "r").unwrap()[0], 0xcf);
        let big = encode_value(&eval(g, "2**100"), "r").unwrap();
        assert_eq!(&big[..3], &[0xc7, 31, 1]);
        assert_eq!(&big[3..], b"1267650600228229401496703205376");
    });
}

fn envelope_parts<'py>(g: &Bound<'py, PyDict>) -> (Bound<'py, PyTuple>, Bound<'py, PyDict>) {
    let args = eval(g, "(1, [(2, 3)], {'when': datetime.date(2020, 5, 17)})")
        .cast_into()
        .unwrap();
    let kwargs = eval(g, "{'to': 'x@y', 'n': 2**70, 'id': uuid.UUID(int=7)}")
        .cast_into()
        .unwrap();
    (args, kwargs)
}

#[test]
fn envelope_round_trips() {
    with_py(|g| {
        let (args, kwargs) = envelope_parts(g);
        let meta = Meta {
            timeout_s: Some(2.5),
            headers: vec![],
            serializer: Some("json".into()),
        };
        let bytes = encode_envelope("app.send", &args, Some(&kwargs), &meta, &[], 1 << 20).unwrap();
        let env = parse_envelope(&bytes, 1 << 20).unwrap();
        assert_eq!((env.version, env.task, &env.meta), (1, "app.send", &meta));
        let (a, k) = decode_args(g.py(), &env).unwrap();
        assert!(same(g, &args, &a) && same(g, &kwargs, &k));
    });
}

#[test]
fn headers_travel_in_the_meta_map_with_or_without_a_timeout() {
    with_py(|g| {
        let (args, kwargs) = envelope_parts(g);
        let trace = (
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        );
        for timeout_s in [None, Some(1.0)] {
            let meta = Meta {
                timeout_s,
                headers: vec![trace.clone(), ("tracestate".into(), "a=1".into())],
                serializer: None,
            };
            let bytes = encode_envelope("t", &args, Some(&kwargs), &meta, &[], 1 << 20).unwrap();
            let env = parse_envelope(&bytes, 1 << 20).unwrap();
            assert_eq!(env.meta, meta);
        }
    });
}

#[test]
fn a_header_that_is_not_a_string_pair_is_a_bad_payload() {
    // {v: 1, t: "t", m: {h: {"a": 1}}}
    let mut bytes = vec![
        0x83, 0xa1, b'v', 0x01, 0xa1, b't', 0xa1, b't', 0xa1, b'm', 0x81,
    ];
    bytes.extend([0xa1, b'h', 0x81, 0xa1, b'a', 0x01]);
    let err = parse_envelope(&bytes, 1 << 20).unwrap_err();
    assert!(
        matches!(&err, Poison::BadPayload(m) if m.contains("not a string pair")),
        "{err:?}"
    );
}

#[test]
fn envelope_without_kwargs_or_meta() {
    with_py(|g| {
        let args = PyTuple::empty(g.py());
        let bytes = encode_envelope("t", &args, None, &Meta::default(), &[], 100).unwrap();
        let env = parse_envelope(&bytes, 100).unwrap();
        assert_eq!(env.meta.timeout_s, None);
        let (a, k) = decode_args(g.py(), &env).unwrap();
        assert!(a.is_empty() && k.is_empty());
    });
}

fn unserializable(err: Error) -> (String, String) {
    match err {
        Error::Unserializable { path, type_name } => (path, type_name),
        other => panic!("expected Unserializable, got {other:?}"),
    }
}

#[test]
fn error_paths_point_at_the_value() {
    with_py(|g| {
        let names = ["to".to_owned(), "items".to_owned()];
        let enc = |args: &str, kwargs: &str| {
            let a = eval(g, args).cast_into::<PyTuple>().unwrap();
            let k = eval(g, kwargs).cast_into::<PyDict>().unwrap();
            unserializable(
                encode_envelope("t", &a, Some(&k), &Meta::default(), &names, 1 << 20).unwrap_err(),
            )
        };
        let nested = enc("('a', [0, 1, 2, {'x': {1, 2}}])", "{}");
        assert_eq!(
            nested,
            ("argument 'items'[3]['x']".to_owned(), "set".to_owned())
        );
        let unnamed = enc("(1, 2, (3, object()))", "{}");
        assert_eq!(unnamed, ("argument #2[1]".to_owned(), "object".to_owned()));
        let kw = enc("()", "{'when': datetime.time(1)}");
        assert_eq!(
            kw,
            (
                "keyword argument 'when'".to_owned(),
                "datetime.time".to_owned()
            )
        );
        let key = enc("({frozenset(): 1},)", "{}");
        assert_eq!(key.0, "argument 'to'[<key frozenset()>]");
        let result = unserializable(encode_value(&eval(g, "[1, 1j]"), "result").unwrap_err());
        assert_eq!(result, ("result[1]".to_owned(), "complex".to_owned()));
    });
}

#[test]
fn message_names_path_and_type() {
    with_py(|g| {
        let err = encode_value(&eval(g, "{'x': {1}}"), "result").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot serialize result['x']: object of type 'set'"),
            "{msg}"
        );
    });
}

#[test]
fn self_reference_hits_the_depth_limit() {
    with_py(|g| {
        let l = eval(g, "[]");
        l.call_method1("append", (&l,)).unwrap();
        let (path, type_name) = unserializable(encode_value(&l, "result").unwrap_err());
        assert!(path.contains("nested deeper than 64 levels"), "{path}");
        assert_eq!(type_name, "list");
        l.call_method0("clear").unwrap(); // break the cycle for the GC
    });
}

#[test]
fn max_depth_is_symmetric() {
    with_py(|g| {
        let ok = eval(
            g,
            &format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)),
        );
        assert!(same(g, &ok, &roundtrip(&ok)));
        let deep = eval(
            g,
            &format!(
                "{}1{}",
                "(".repeat(MAX_DEPTH + 1),
                ",)".repeat(MAX_DEPTH + 1)
            ),
        );
        assert!(encode_value(&deep, "r").is_err());
    });
}

#[test]
fn oversized_envelope_is_refused() {
    with_py(|g| {
        let args = eval(g, "('x' * 1000,)").cast_into::<PyTuple>().unwrap();
        let err = encode_envelope("t", &args, None, &Meta::default(), &[], 500).unwrap_err();
        assert!(matches!(err, Error::Oversized { limit: 500, size } if size > 1000));
        let ok = encode_envelope("t", &args, None, &Meta::default(), &[], 2000).unwrap();
        assert_eq!(parse_envelope(&ok, 500).unwrap_err().reason(), "oversized");
    });
}

/// Hand-built envelopes, so the parser can be fed what the encoder would never write.
struct Raw(Vec<u8>);

impl Raw {
    fn map(n: u32) -> Self {
        let mut buf = Vec::new();
        rmp::encode::write_map_len(&mut buf, n).unwrap();
        Raw(buf)
    }
    fn s(mut self, s: &str) -> Self {
        rmp::encode::write_str(&mut self.0, s).unwrap();
        self
    }
    fn u(mut self, v: u64) -> Self {
        rmp::encode::write_uint(&mut self.0, v).unwrap();
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

fn reason(bytes: &[u8]) -> &'static str {
    parse_envelope(bytes, 1 << 20).unwrap_err().reason()
}

#[test]
fn garbage_and_truncation_are_bad_payloads() {
    for garbage in [
        &b""[..],
        b"\xc1",
        b"hello world",
        b"\x92\x01\x02",
        b"\xff\xff\xff",
    ] {
        assert_eq!(reason(garbage), "bad_payload", "{garbage:?}");
    }
    let full = Raw::map(4)
        .s("v")
        .u(1)
        .s("t")
        .s("task")
        .s("a")
        .bytes(&[0x92, 0x01, 0xa1, b'x'])
        .s("k")
        .bytes(&[0x80]);
    assert!(parse_envelope(&full.0, 1 << 20).is_ok());
    for cut in 0..full.0.len() {
        assert_eq!(reason(&full.0[..cut]), "bad_payload", "cut at {cut}");
    }
    let trailing = Raw(full.0.clone()).bytes(&[0x00]);
    assert_eq!(reason(&trailing.0), "bad_payload");
}

#[test]
fn wrong_version_is_unsupported_even_with_unknown_contents() {
    // A newer writer may use ext codes this reader does not know; the version decides first.
    let v2 = Raw::map(3)
        .s("v")
        .u(2)
        .s("t")
        .s("x")
        .s("a")
        .bytes(&[0x91, 0xd4, 99, 0]);
    let err = parse_envelope(&v2.0, 1 << 20).unwrap_err();
    assert_eq!(err.reason(), "unsupported_version");
    assert!(err.message().contains("version 2"));
}

#[test]
fn structural_errors_are_bad_payloads() {
    let cases = [
        (
            "unknown ext",
            Raw::map(3)
                .s("v")
                .u(1)
                .s("t")
                .s("x")
                .s("a")
                .bytes(&[0x91, 0xd4, 99, 0]),
        ),
        (
            "missing task",
            Raw::map(2).s("v").u(1).s("a").bytes(&[0x90]),
        ),
        ("missing version", Raw::map(1).s("t").s("x")),
        ("empty task", Raw::map(2).s("v").u(1).s("t").s("")),
        (
            "args not array",
            Raw::map(3).s("v").u(1).s("t").s("x").s("a").u(3),
        ),
        (
            "int kwarg name",
            Raw::map(3)
                .s("v")
                .u(1)
                .s("t")
                .s("x")
                .s("k")
                .bytes(&[0x81, 0x01, 0x02]),
        ),
        (
            "list as dict key",
            Raw::map(3)
                .s("v")
                .u(1)
                .s("t")
                .s("x")
                .s("a")
                .bytes(&[0x91, 0x81, 0x90, 0x01]),
        ),
        (
            "bad uuid length",
            Raw::map(3)
                .s("v")
                .u(1)
                .s("t")
                .s("x")
                .s("a")
                .bytes(&[0x91, 0xd4, 5, 0]),
        ),
        (
            "bad big int",
            Raw::map(3)
                .s("v")
                .u(1)
                .s("t")
                .s("x")
                .s("a")
                .bytes(&[0x91, 0xd5, 1, b'1', b'x']),
        ),
        (
            "bad utf-8",
            Raw::map(3)
                .s("v")
                .u(1)
                .s("t")
                .s("x")
                .s("a")
                .bytes(&[0x91, 0xa1, 0xff]),
        ),
        (
            "duplicate key",
            Raw::map(3).s("v").u(1).s("t").s("x").s("t").s("y"),
        ),
        (
            "container key",
            Raw::map(3).s("v").u(1).s("t").s("x").bytes(&[0x90, 0xc0]),
        ),
        (
            "meta not a map",
            Raw::map(3).s("v").u(1).s("t").s("x").s("m").u(1),
        ),
    ];
    for (name, raw) in cases {
        assert_eq!(reason(&raw.0), "bad_payload", "{name}");
    }
}

#[test]
fn unknown_and_reserved_keys_are_ignored() {
    let raw = Raw::map(6)
        .s("y")
        .bytes(&[0xc0])
        .s("v")
        .u(1)
        .s("future")
        .bytes(&[0x81, 0xa1, b'q', 0x92, 0x01, 0x02])
        .s("t")
        .s("x")
        .s("s")
        .bytes(&[0xc4, 0x01, 0x00])
        .s("m")
        .bytes(&[0x82, 0xa2, b't', b'o', 0x05, 0xa1, b'w', 0x01]);
    let env = parse_envelope(&raw.0, 1 << 20).unwrap();
    assert_eq!((env.task, env.meta.timeout_s), ("x", Some(5.0)));
    with_py(|g| {
        let (a, k) = decode_args(g.py(), &env).unwrap();
        assert!(a.is_empty() && k.is_empty());
    });
}

#[test]
fn decode_value_rejects_malformed_bytes() {
    with_py(|g| {
        for bad in [
            &b""[..],
            b"\x92\x01",
            b"\xd4\x07\x00",
            b"\x01\x02",
            b"\xc7\x03\x04abc",
        ] {
            let err = decode_value(g.py(), bad).unwrap_err();
            assert!(err.is_instance_of::<PayloadError>(g.py()), "{bad:?}");
        }
    });
}

#[test]
fn error_record_round_trips_as_a_map() {
    let rec = ErrorRecord {
        kind: "ValueError".into(),
        message: "boom".into(),
        traceback: "Traceback ...".into(),
        reason: "exception".into(),
    };
    let bytes = rec.to_bytes();
    assert_eq!(bytes[0], 0x84, "a fixmap of four entries");
    assert_eq!(ErrorRecord::from_bytes(&bytes).unwrap(), rec);
}

#[test]
fn error_record_tolerates_missing_and_extra_fields() {
    let raw = Raw::map(2).s("reason").s("timeout").s("extra").u(1);
    let rec = ErrorRecord::from_bytes(&raw.0).unwrap();
    assert_eq!(
        rec,
        ErrorRecord {
            reason: "timeout".into(),
            ..ErrorRecord::default()
        }
    );
    assert!(ErrorRecord::from_bytes(b"\xc1").is_err());
}

#[test]
fn spans_decode_what_the_parsed_envelope_decodes() {
    with_py(|g| {
        let py = g.py();
        let args = eval(g, "(1, 'x', [2, (3,)])")
            .cast_into::<PyTuple>()
            .unwrap();
        let kwargs = eval(g, "{'k': b'v'}").cast_into::<PyDict>().unwrap();
        let meta = Meta::default();
        let bytes = encode_envelope("mod:task", &args, Some(&kwargs), &meta, &[], 1 << 20).unwrap();
        let env = parse_envelope(&bytes, 1 << 20).unwrap();
        let spans = env.spans(&bytes);
        assert_eq!(spans.task(&bytes), "mod:task");
        let (a, k) = spans.decode_args(py, &bytes).unwrap();
        assert!(same(g, a.as_any(), args.as_any()));
        assert!(same(g, k.as_any(), kwargs.as_any()));

        // An envelope without `a` and `k` decodes to empty ones through its spans too.
        let bare = [0x82, 0xa1, b'v', 0x01, 0xa1, b't', 0xa1, b'x'];
        let spans = parse_envelope(&bare, 1 << 20).unwrap().spans(&bare);
        let (a, k) = spans.decode_args(py, &bare).unwrap();
        assert_eq!((spans.task(&bare), a.len(), k.len()), ("x", 0, 0));
    });
}

/// A plain envelope of `task` whose one argument is `n` bytes of `b'x'`.
fn big_envelope(g: &Bound<'_, PyDict>, task: &str, n: usize) -> Vec<u8> {
    let args = eval(g, &format!("(b'x' * {n},)"));
    let args = args.cast::<PyTuple>().unwrap();
    encode_envelope(task, args, None, &Meta::default(), &[], usize::MAX).unwrap()
}

#[test]
fn a_compressed_envelope_opens_to_the_same_bytes_and_small_ones_stay_plain() {
    with_py(|g| {
        let inner = big_envelope(g, "t", 100_000);
        let packed = compress_envelope("t", inner.clone(), 1024);
        assert!(packed.len() < 1000, "{} bytes", packed.len());
        assert_eq!(
            open_envelope(&packed, 1 << 20).unwrap(),
            Some(inner.clone())
        );
        // Not opened, a compressed envelope is refused rather than run with no arguments.
        assert!(parse_envelope(&packed, 1 << 20).is_err());
        // At or under the threshold, and where compression does not help: unchanged.
        let small = big_envelope(g, "t", 10);
        assert_eq!(compress_envelope("t", small.clone(), 1024), small);
        assert_eq!(open_envelope(&small, 1 << 20).unwrap(), None);
    });
}

#[test]
fn opening_stops_at_the_limit_before_decompressing_and_checks_the_inside() {
    with_py(|g| {
        let packed = compress_envelope("t", big_envelope(g, "t", 2 << 20), 0);
        assert!(packed.len() < 1000);
        // A few hundred bytes that would expand to 2 MiB: refused by the size the frame states.
        assert!(matches!(
            open_envelope(&packed, 1 << 20),
            Err(Poison::Oversized { limit, .. }) if limit == 1 << 20
        ));
        // The task named outside must be the one inside.
        let mut lying = Vec::new();
        rmp::encode::write_map_len(&mut lying, 4).unwrap();
        let inner = big_envelope(g, "inner", 10_000);
        let frame = zstd::bulk::compress(&inner, 3).unwrap();
        for (k, v) in [("v", None), ("t", Some("outer")), ("z", Some("zstd"))] {
            rmp::encode::write_str(&mut lying, k).unwrap();
            match v {
                Some(s) => rmp::encode::write_str(&mut lying, s).unwrap(),
                None => rmp::encode::write_uint(&mut lying, 1).map(|_| ()).unwrap(),
            }
        }
        rmp::encode::write_str(&mut lying, "p").unwrap();
        rmp::encode::write_bin(&mut lying, &frame).unwrap();
        let err = open_envelope(&lying, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("\"outer\" outside"), "{err}");
        // Unknown compressions and a compressed envelope inside another are refused.
        let mut odd = Vec::new();
        rmp::encode::write_map_len(&mut odd, 3).unwrap();
        for (k, v) in [("t", "t"), ("z", "lz4")] {
            rmp::encode::write_str(&mut odd, k).unwrap();
            rmp::encode::write_str(&mut odd, v).unwrap();
        }
        rmp::encode::write_str(&mut odd, "v").unwrap();
        rmp::encode::write_uint(&mut odd, 1).unwrap();
        let err = open_envelope(&odd, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("unknown compression"), "{err}");
        let nested = compress_envelope("t", packed.clone(), 0);
        if nested != packed {
            // Opened once, what is inside is compressed again: the parse refuses it.
            let inner = open_envelope(&nested, 1 << 20).unwrap().unwrap();
            assert!(parse_envelope(&inner, 1 << 20).is_err());
        }
    });
}

#[test]
fn a_serializer_name_travels_in_the_meta_map() {
    with_py(|g| {
        let (args, kwargs) = envelope_parts(g);
        let meta = Meta {
            serializer: Some("orjson".into()),
            ..Meta::default()
        };
        let bytes = encode_envelope("t", &args, Some(&kwargs), &meta, &[], 1 << 20).unwrap();
        assert_eq!(parse_envelope(&bytes, 1 << 20).unwrap().meta, meta);
    });
}
