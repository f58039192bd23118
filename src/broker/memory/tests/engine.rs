//! The scripting environment and command set of `memory://`, held to Redis' conventions.

use ::redis::Value;

use super::*;

fn eval(b: &MemoryBroker, src: &str, keys: &[&str], args: &[&str]) -> Result<Value, String> {
    b.with_engine(|engine, _| engine.eval(src, keys, args))
}

fn ok(b: &MemoryBroker, src: &str) -> Value {
    eval(b, src, &[], &[]).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn err(b: &MemoryBroker, src: &str) -> String {
    eval(b, src, &[], &[]).expect_err(src)
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn replies_reach_lua_as_redis_hands_them_over() {
    let b = MemoryBroker::new();
    assert_eq!(
        ok(&b, "return redis.call('GET', 'none') == false"),
        Value::Int(1)
    );
    ok(&b, "redis.call('HSET', 'h', 'n', 5)");
    assert_eq!(
        ok(&b, "return type(redis.call('HGET', 'h', 'n'))"),
        bulk("string")
    );
    assert_eq!(
        ok(&b, "return type(redis.call('HINCRBY', 'h', 'n', 1))"),
        bulk("number")
    );
    assert_eq!(
        ok(&b, "return redis.call('HMGET', 'h', 'x', 'n')[2]"),
        bulk("6")
    );
    assert_eq!(ok(&b, "return redis.call('SET', 's', 'v').ok"), bulk("OK"));
    assert_eq!(
        eval(&b, "return {KEYS[1], ARGV[2], #ARGV}", &["k"], &["a", "b"]),
        Ok(Value::Array(vec![bulk("k"), bulk("b"), Value::Int(2)]))
    );
    assert_eq!(
        ok(&b, "return redis.call('RPUSH', 'l', unpack({'a', 'b'}))"),
        Value::Int(2)
    );
}

#[test]
fn script_results_convert_as_in_redis() {
    let b = MemoryBroker::new();
    assert_eq!(ok(&b, "return 3.7"), Value::Int(3));
    assert_eq!(ok(&b, "return -3.7"), Value::Int(-3));
    assert_eq!(ok(&b, "return true"), Value::Int(1));
    assert_eq!(ok(&b, "return false"), Value::Nil);
    assert_eq!(ok(&b, "return nil"), Value::Nil);
    assert_eq!(
        ok(&b, "return {1, 'two', nil, 4}"),
        Value::Array(vec![Value::Int(1), bulk("two")]),
        "an array ends at its first nil"
    );
    assert_eq!(
        ok(&b, "return redis.status_reply('FINE')"),
        Value::SimpleString("FINE".into())
    );
    assert_eq!(
        err(&b, "return redis.error_reply('MINE went wrong')"),
        "MINE went wrong"
    );
    assert_eq!(err(&b, "return {err = 'table error'}"), "table error");
}

#[test]
fn call_raises_and_pcall_returns_the_error() {
    let b = MemoryBroker::new();
    ok(&b, "redis.call('SET', 's', 'v')");
    let raised = err(&b, "redis.call('HGET', 's', 'f') return 1");
    assert!(raised.starts_with("WRONGTYPE"), "{raised}");
    let caught = ok(&b, "local r = redis.pcall('HGET', 's', 'f') return r.err");
    assert!(matches!(caught, Value::BulkString(ref e) if e.starts_with(b"WRONGTYPE")));
    let unknown = err(&b, "return redis.call('FLUSHALL')");
    assert!(unknown.contains("unknown command 'FLUSHALL'"), "{unknown}");
    let bad_arg = err(&b, "return redis.call('GET', {})");
    assert!(bad_arg.contains("must be strings or integers"), "{bad_arg}");
    let runtime = err(&b, "local x = nil return x.y");
    assert!(runtime.starts_with("ERR"), "{runtime}");
}

#[test]
fn globals_are_protected() {
    let b = MemoryBroker::new();
    assert!(err(&b, "x = 1").contains("create global variable 'x'"));
    assert!(err(&b, "return nope").contains("nonexistent global variable 'nope'"));
    assert!(
        err(&b, "return os.time()").contains("'os'"),
        "no os library, as in Redis"
    );
}

#[test]
fn time_and_expiry_follow_the_broker_clock() {
    let b = MemoryBroker::new();
    b.advance(3_600_000);
    let Value::Array(t) = ok(&b, "return redis.call('TIME')") else {
        panic!()
    };
    let secs: u64 = ::redis::from_redis_value(t[0].clone()).unwrap();
    let now_s = b.clock_us() / 1_000_000;
    assert!(now_s.abs_diff(secs) <= 1, "{secs} vs {now_s}");

    ok(
        &b,
        "redis.call('SET', 'k', 'v', 'PX', 1000) redis.call('HSET', 'h', 'f', 1)",
    );
    ok(&b, "redis.call('PEXPIRE', 'h', 1000)");
    assert_eq!(
        ok(&b, "return redis.call('PTTL', 'k') > 900"),
        Value::Int(1)
    );
    b.advance(1_000);
    assert_eq!(ok(&b, "return redis.call('GET', 'k')"), Value::Nil);
    assert_eq!(ok(&b, "return redis.call('EXISTS', 'h')"), Value::Int(0));
    ok(
        &b,
        "redis.call('SET', 'p', 'v', 'PX', 10) redis.call('PERSIST', 'p')",
    );
    b.advance(1_000);
    assert_eq!(ok(&b, "return redis.call('GET', 'p')"), bulk("v"));
    assert_eq!(
        ok(
            &b,
            "return {redis.call('SET', 'p', 'w', 'NX'), redis.call('GET', 'p')}"
        ),
        Value::Array(vec![Value::Nil, bulk("v")])
    );
}

#[test]
fn sorted_sets_order_range_and_pop_as_in_redis() {
    let b = MemoryBroker::new();
    ok(
        &b,
        "redis.call('ZADD', 'z', 2, 'b', 1, 'a', 3, 'c', 1, 'aa')",
    );
    let all = ok(&b, "return redis.call('ZRANGE', 'z', 0, -1, 'WITHSCORES')");
    let all: Vec<String> = ::redis::from_redis_value(all).unwrap();
    assert_eq!(all, ["a", "1", "aa", "1", "b", "2", "c", "3"]);
    let some = ok(
        &b,
        "return redis.call('ZRANGEBYSCORE', 'z', '(1', 3, 'LIMIT', 1, 5)",
    );
    assert_eq!(some, Value::Array(vec![bulk("c")]));
    assert_eq!(
        ok(&b, "return redis.call('ZADD', 'z', 'XX', 9, 'new')"),
        Value::Int(0)
    );
    assert_eq!(
        ok(&b, "return redis.call('ZSCORE', 'z', 'new')"),
        Value::Nil
    );
    ok(&b, "redis.call('ZADD', 'z', 'XX', 0.5, 'c')");
    let popped = ok(&b, "return redis.call('ZPOPMIN', 'z', 2)");
    assert_eq!(
        popped,
        Value::Array(vec![bulk("c"), bulk("0.5"), bulk("a"), bulk("1")])
    );
    ok(&b, "redis.call('ZREM', 'z', 'aa', 'b')");
    assert_eq!(
        ok(&b, "return redis.call('EXISTS', 'z')"),
        Value::Int(0),
        "empty sets go"
    );
}

#[test]
fn cmsgpack_round_trips_and_matches_msgpack() {
    let b = MemoryBroker::new();
    let src = "local t = cmsgpack.unpack(cmsgpack.pack({a = 1, b = {1, 2, 'x'}, c = 0.5}))
        return {t.a, t.b[3], #t.b, tostring(t.c)}";
    assert_eq!(
        ok(&b, src),
        Value::Array(vec![Value::Int(1), bulk("x"), Value::Int(3), bulk("0.5")])
    );
    let packed = ok(&b, "return cmsgpack.pack({kind = 'x', n = 7})");
    let bytes: Vec<u8> = ::redis::from_redis_value(packed).unwrap();
    let map: HashMap<String, rmpv_like::Any> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(map["kind"], rmpv_like::Any::S("x".into()));
    assert_eq!(map["n"], rmpv_like::Any::N(7));
}

/// Just enough of a dynamic msgpack value to check what cmsgpack wrote.
mod rmpv_like {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(untagged)]
    pub enum Any {
        N(i64),
        S(String),
    }
}
