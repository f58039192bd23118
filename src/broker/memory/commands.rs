//! The Redis commands `memory://` implements over [`Db`], with Redis' replies and errors.
//!
//! The set is what the scripts in `src/lua` and the broker's reads use, plus their near
//! relatives; any other command fails with an error naming it, so a script that starts using
//! one shows up in the memory broker's tests rather than behaving differently.

use std::collections::VecDeque;

use redis::Value;

use super::db::{Data, Db, ZSet, WRONGTYPE};

/// A command's reply, or the error text Redis would send (`ERR ...`, `WRONGTYPE ...`).
pub(super) type Reply = Result<Value, String>;

const NOT_INT: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SYNTAX: &str = "ERR syntax error";

/// Every command name [`exec`] knows, for the error on an unknown one.
const KNOWN: &str = "DEL EXISTS TYPE PEXPIRE EXPIRE PERSIST PTTL TTL GET SET INCR INCRBY DECR \
DECRBY HSET HMSET HSETNX HGET HMGET HGETALL HDEL HEXISTS HLEN HINCRBY RPUSH LPUSH LPOP RPOP LLEN \
LRANGE SADD SREM SMEMBERS SISMEMBER SCARD ZADD ZREM ZSCORE ZCARD ZCOUNT ZRANGE ZRANGEBYSCORE \
ZPOPMIN TIME PUBLISH SPUBLISH";

/// Run one command (`args[0]` is its name, any case) against `db`.
pub(super) fn exec(db: &mut Db, args: &[Vec<u8>]) -> Reply {
    let Some(name) = args.first() else {
        return Err("ERR Please specify at least one argument for this redis lib call".into());
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let a = &args[1..];
    match name.as_str() {
        "DEL" => keys::del(db, a),
        "EXISTS" => keys::exists(db, a),
        "TYPE" => keys::type_of(db, a),
        "PEXPIRE" | "EXPIRE" => keys::expire(db, a, name == "EXPIRE"),
        "PERSIST" => keys::persist(db, a),
        "PTTL" | "TTL" => keys::ttl(db, a, name == "TTL"),
        "GET" => strings::get(db, a),
        "SET" => strings::set(db, a),
        "INCR" | "DECR" => strings::incr(db, a, if name == "INCR" { 1 } else { -1 }, false),
        "INCRBY" => strings::incr(db, a, 1, true),
        "DECRBY" => strings::incr(db, a, -1, true),
        "HSET" | "HMSET" | "HSETNX" => hashes::hset(db, a, &name),
        "HGET" => hashes::hget(db, a),
        "HMGET" => hashes::hmget(db, a),
        "HGETALL" => hashes::hgetall(db, a),
        "HDEL" => hashes::hdel(db, a),
        "HEXISTS" => hashes::hexists(db, a),
        "HLEN" => hashes::hlen(db, a),
        "HINCRBY" => hashes::hincrby(db, a),
        "RPUSH" | "LPUSH" => lists::push(db, a, name == "RPUSH"),
        "LPOP" | "RPOP" => lists::pop(db, a, name == "LPOP"),
        "LLEN" => lists::llen(db, a),
        "LRANGE" => lists::lrange(db, a),
        "LTRIM" => lists::ltrim(db, a),
        "SADD" => sets::sadd(db, a),
        "SREM" => sets::srem(db, a),
        "SMEMBERS" => sets::smembers(db, a),
        "SISMEMBER" => sets::sismember(db, a),
        "SCARD" => sets::scard(db, a),
        "ZADD" => zsets::zadd(db, a),
        "ZREM" => zsets::zrem(db, a),
        "ZSCORE" => zsets::zscore(db, a),
        "ZCARD" => zsets::zcard(db, a),
        "ZCOUNT" => zsets::zcount(db, a),
        "ZRANGE" => zsets::zrange(db, a),
        "ZRANGEBYSCORE" => zsets::zrangebyscore(db, a),
        "ZPOPMIN" => zsets::zpopmin(db, a),
        "TIME" => time(db, a),
        "PUBLISH" => publish(db, a),
        "SPUBLISH" => spublish(a),
        _ => Err(format!(
            "ERR unknown command '{name}': memory:// implements only {KNOWN}"
        )),
    }
}

/// Check the argument count: exactly `n` (`exact`) or at least `n`.
fn arity(a: &[Vec<u8>], n: usize, exact: bool, name: &str) -> Result<(), String> {
    if a.len() < n || (exact && a.len() != n) {
        return Err(format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_ascii_lowercase()
        ));
    }
    Ok(())
}

/// `PUBLISH channel message`: delivered by the broker once the call is over; the reply (how
/// many subscribers received it) is always 0, as no client subscribes to a memory:// broker.
fn publish(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 2, true, "publish")?;
    db.publish(&a[0], &a[1]);
    Ok(Value::Int(0))
}

/// `SPUBLISH shardchannel message`: the scripts' wake-up note for workers on a Redis Cluster
/// (see `push_wake` in `lib/common.lua`). A memory:// broker's waiters watch the wake lists
/// themselves, so the note has no one to reach: 0 receivers.
fn spublish(a: &[Vec<u8>]) -> Reply {
    arity(a, 2, true, "spublish")?;
    Ok(Value::Int(0))
}

fn int(v: &[u8]) -> Result<i64, String> {
    let s = std::str::from_utf8(v).map_err(|_| NOT_INT.to_string())?;
    if s.starts_with('+') || s.is_empty() {
        return Err(NOT_INT.into());
    }
    s.parse().map_err(|_| NOT_INT.into())
}

fn float(v: &[u8]) -> Result<f64, String> {
    let s = std::str::from_utf8(v).map_err(|_| NOT_FLOAT.to_string())?;
    let f: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other.parse().map_err(|_| NOT_FLOAT.to_string())?,
    };
    if f.is_nan() {
        return Err(NOT_FLOAT.into());
    }
    Ok(f)
}

/// A score as Redis prints it: integers without a fraction, others in shortest form.
pub(super) fn fmt_score(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f.fract() == 0.0 && f.abs() < 1e17 {
        return format!("{}", f as i64);
    }
    format!("{f}")
}

fn bulk(v: &[u8]) -> Value {
    Value::BulkString(v.to_vec())
}

fn array(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Array(items.into_iter().collect())
}

fn count(n: usize) -> Value {
    Value::Int(n as i64)
}

fn time(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 0, true, "time")?;
    let us = db.now_us();
    Ok(array([
        bulk((us / 1_000_000).to_string().as_bytes()),
        bulk((us % 1_000_000).to_string().as_bytes()),
    ]))
}

mod keys {
    use super::*;

    pub fn del(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, false, "del")?;
        Ok(count(a.iter().filter(|k| db.remove(k)).count()))
    }

    pub fn exists(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, false, "exists")?;
        Ok(count(a.iter().filter(|k| db.exists(k)).count()))
    }

    pub fn type_of(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "type")?;
        let name = db.get(&a[0]).map_or("none", Data::type_name);
        Ok(Value::SimpleString(name.into()))
    }

    pub fn expire(db: &mut Db, a: &[Vec<u8>], seconds: bool) -> Reply {
        arity(a, 2, true, "pexpire")?;
        let ttl = int(&a[1])?;
        let ms = if seconds {
            ttl.saturating_mul(1000)
        } else {
            ttl
        };
        let at = (db.now_ms() as i64).saturating_add(ms).max(0) as u64;
        Ok(Value::Int(i64::from(db.set_expiry(&a[0], Some(at)))))
    }

    pub fn persist(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "persist")?;
        let had_ttl = matches!(db.ttl_ms(&a[0]), Some(Some(_)));
        if had_ttl {
            db.set_expiry(&a[0], None);
        }
        Ok(Value::Int(i64::from(had_ttl)))
    }

    pub fn ttl(db: &mut Db, a: &[Vec<u8>], seconds: bool) -> Reply {
        arity(a, 1, true, "pttl")?;
        Ok(Value::Int(match db.ttl_ms(&a[0]) {
            None => -2,
            Some(None) => -1,
            Some(Some(ms)) if seconds => ms.div_ceil(1000) as i64,
            Some(Some(ms)) => ms as i64,
        }))
    }
}

mod strings {
    use super::*;

    fn read<'a>(db: &'a Db, key: &[u8]) -> Result<Option<&'a [u8]>, String> {
        match db.get(key) {
            None => Ok(None),
            Some(Data::Str(v)) => Ok(Some(v)),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    pub fn get(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "get")?;
        Ok(read(db, &a[0])?.map_or(Value::Nil, bulk))
    }

    /// `SET key value [NX|XX] [PX ms|EX s] [KEEPTTL] [GET]`.
    pub fn set(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, false, "set")?;
        let (mut nx, mut xx, mut keep, mut get, mut ttl) = (false, false, false, false, None);
        let mut opts = a[2..].iter();
        while let Some(opt) = opts.next() {
            match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "KEEPTTL" => keep = true,
                "GET" => get = true,
                unit @ ("PX" | "EX") => {
                    let n = int(opts.next().ok_or(SYNTAX)?)?;
                    if n <= 0 {
                        return Err("ERR invalid expire time in 'set' command".into());
                    }
                    ttl = Some(if unit == "EX" {
                        n.saturating_mul(1000)
                    } else {
                        n
                    });
                }
                _ => return Err(SYNTAX.into()),
            }
        }
        if (nx && xx) || (keep && ttl.is_some()) {
            return Err(SYNTAX.into());
        }
        let old = if get {
            read(db, &a[0])?.map(<[u8]>::to_vec)
        } else {
            None
        };
        let exists = db.exists(&a[0]);
        if (nx && exists) || (xx && !exists) {
            return Ok(if get {
                old.map_or(Value::Nil, Value::BulkString)
            } else {
                Value::Nil
            });
        }
        let kept = if keep {
            db.ttl_ms(&a[0]).flatten()
        } else {
            None
        };
        db.put(&a[0], Data::Str(a[1].clone()));
        let now = db.now_ms();
        if let Some(ms) = ttl.map(|t| t as u64).or(kept) {
            db.set_expiry(&a[0], Some(now.saturating_add(ms)));
        }
        Ok(if get {
            old.map_or(Value::Nil, Value::BulkString)
        } else {
            Value::Okay
        })
    }

    pub fn incr(db: &mut Db, a: &[Vec<u8>], sign: i64, by: bool) -> Reply {
        arity(a, if by { 2 } else { 1 }, true, "incrby")?;
        let step = if by { int(&a[1])? } else { 1 };
        let current = read(db, &a[0])?.map(int).transpose()?.unwrap_or(0);
        let next = step
            .checked_mul(sign)
            .and_then(|s| current.checked_add(s))
            .ok_or("ERR increment or decrement would overflow")?;
        let ttl = db.ttl_ms(&a[0]).flatten();
        db.put(&a[0], Data::Str(next.to_string().into_bytes()));
        if let Some(ms) = ttl {
            let now = db.now_ms();
            db.set_expiry(&a[0], Some(now + ms));
        }
        Ok(Value::Int(next))
    }
}

mod hashes {
    use super::*;

    pub fn hset(db: &mut Db, a: &[Vec<u8>], name: &str) -> Reply {
        arity(a, 3, name == "HSETNX", name)?;
        if a.len() % 2 == 0 {
            return Err(format!(
                "ERR wrong number of arguments for '{}' command",
                name.to_ascii_lowercase()
            ));
        }
        let h = db.hash_mut(&a[0])?;
        if name == "HSETNX" {
            if h.contains_key(&a[1]) {
                return Ok(Value::Int(0));
            }
            h.insert(a[1].clone(), a[2].clone());
            return Ok(Value::Int(1));
        }
        let added = a[1..]
            .chunks(2)
            .filter(|p| h.insert(p[0].clone(), p[1].clone()).is_none())
            .count();
        Ok(if name == "HMSET" {
            Value::Okay
        } else {
            count(added)
        })
    }

    pub fn hget(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, true, "hget")?;
        let v = db.hash(&a[0])?.and_then(|h| h.get(&a[1]));
        Ok(v.map_or(Value::Nil, |v| bulk(v)))
    }

    pub fn hmget(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, false, "hmget")?;
        let h = db.hash(&a[0])?;
        let field = |f: &Vec<u8>| h.and_then(|h| h.get(f)).map_or(Value::Nil, |v| bulk(v));
        Ok(array(a[1..].iter().map(field)))
    }

    pub fn hgetall(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "hgetall")?;
        let pairs = db.hash(&a[0])?.into_iter().flatten();
        Ok(array(pairs.flat_map(|(k, v)| [bulk(k), bulk(v)])))
    }

    pub fn hdel(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, false, "hdel")?;
        if db.hash(&a[0])?.is_none() {
            return Ok(Value::Int(0));
        }
        let h = db.hash_mut(&a[0])?;
        let n = a[1..].iter().filter(|f| h.remove(*f).is_some()).count();
        db.tidy(&a[0]);
        Ok(count(n))
    }

    pub fn hexists(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, true, "hexists")?;
        let found = db.hash(&a[0])?.is_some_and(|h| h.contains_key(&a[1]));
        Ok(Value::Int(i64::from(found)))
    }

    pub fn hlen(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "hlen")?;
        Ok(count(db.hash(&a[0])?.map_or(0, |h| h.len())))
    }

    pub fn hincrby(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 3, true, "hincrby")?;
        let step = int(&a[2])?;
        let h = db.hash_mut(&a[0])?;
        let current = match h.get(&a[1]) {
            Some(v) => int(v).map_err(|_| "ERR hash value is not an integer".to_string())?,
            None => 0,
        };
        let next = current
            .checked_add(step)
            .ok_or("ERR increment or decrement would overflow")?;
        h.insert(a[1].clone(), next.to_string().into_bytes());
        Ok(Value::Int(next))
    }
}

mod lists {
    use super::*;

    pub fn push(db: &mut Db, a: &[Vec<u8>], right: bool) -> Reply {
        arity(a, 2, false, "rpush")?;
        let l: &mut VecDeque<Vec<u8>> = db.list_mut(&a[0])?;
        for v in &a[1..] {
            if right {
                l.push_back(v.clone());
            } else {
                l.push_front(v.clone());
            }
        }
        let n = l.len();
        db.mark_pushed(&a[0]);
        Ok(count(n))
    }

    /// `LPOP key [count]`: one value (or nil) without a count, an array (or nil) with one.
    pub fn pop(db: &mut Db, a: &[Vec<u8>], left: bool) -> Reply {
        arity(a, 1, false, "lpop")?;
        let n = a.get(1).map(|c| int(c)).transpose()?;
        if n.is_some_and(|n| n < 0) {
            return Err("ERR value is out of range, must be positive".into());
        }
        if db.list(&a[0])?.is_none() {
            return Ok(Value::Nil);
        }
        let l = db.list_mut(&a[0])?;
        let mut take = || if left { l.pop_front() } else { l.pop_back() };
        let reply = match n {
            None => take().map_or(Value::Nil, Value::BulkString),
            Some(n) => array((0..n).map_while(|_| take()).map(Value::BulkString)),
        };
        db.tidy(&a[0]);
        Ok(reply)
    }

    pub fn llen(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "llen")?;
        Ok(count(db.list(&a[0])?.map_or(0, |l| l.len())))
    }

    pub fn lrange(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 3, true, "lrange")?;
        let (start, stop) = (int(&a[1])?, int(&a[2])?);
        let Some(l) = db.list(&a[0])? else {
            return Ok(array([]));
        };
        let (from, to) = super::zsets::index_range(start, stop, l.len());
        Ok(array(l.iter().skip(from).take(to - from).map(|v| bulk(v))))
    }

    /// Keep only the elements from `start` to `stop` (inclusive; negative counts from the end).
    pub fn ltrim(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 3, true, "ltrim")?;
        let (start, stop) = (int(&a[1])?, int(&a[2])?);
        if db.list(&a[0])?.is_none() {
            return Ok(Value::Okay);
        }
        let l = db.list_mut(&a[0])?;
        let (from, to) = super::zsets::index_range(start, stop, l.len());
        let kept: std::collections::VecDeque<Vec<u8>> = l
            .drain(..)
            .skip(from)
            .take(to.saturating_sub(from))
            .collect();
        *l = kept;
        db.tidy(&a[0]);
        Ok(Value::Okay)
    }
}

mod sets {
    use super::*;

    pub fn sadd(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, false, "sadd")?;
        let s = db.set_mut(&a[0])?;
        Ok(count(
            a[1..].iter().filter(|m| s.insert(m.to_vec())).count(),
        ))
    }

    pub fn srem(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, false, "srem")?;
        if db.set(&a[0])?.is_none() {
            return Ok(Value::Int(0));
        }
        let s = db.set_mut(&a[0])?;
        let n = a[1..].iter().filter(|m| s.remove(*m)).count();
        db.tidy(&a[0]);
        Ok(count(n))
    }

    pub fn smembers(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "smembers")?;
        Ok(array(db.set(&a[0])?.into_iter().flatten().map(|m| bulk(m))))
    }

    pub fn sismember(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 2, true, "sismember")?;
        let found = db.set(&a[0])?.is_some_and(|s| s.contains(&a[1]));
        Ok(Value::Int(i64::from(found)))
    }

    pub fn scard(db: &mut Db, a: &[Vec<u8>]) -> Reply {
        arity(a, 1, true, "scard")?;
        Ok(count(db.set(&a[0])?.map_or(0, |s| s.len())))
    }
}

mod zsets;
