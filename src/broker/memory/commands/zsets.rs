//! Sorted-set commands (and index ranges, shared with LRANGE).

use super::*;

/// `start..stop` (inclusive, negative from the end) as a half-open range within `len`.
pub fn index_range(start: i64, stop: i64, len: usize) -> (usize, usize) {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (from, to) = (norm(start), norm(stop).min(len - 1));
    if from > to || from >= len {
        return (0, 0);
    }
    (from as usize, to as usize + 1)
}

/// One score bound: `-inf`, `+inf`, `1.5`, or `(1.5` (exclusive).
fn bound(v: &[u8]) -> Result<(f64, bool), String> {
    let err = || "ERR min or max is not a float".to_string();
    match v.strip_prefix(b"(") {
        Some(rest) => Ok((float(rest).map_err(|_| err())?, true)),
        None => Ok((float(v).map_err(|_| err())?, false)),
    }
}

fn within(score: f64, min: (f64, bool), max: (f64, bool)) -> bool {
    let above = if min.1 { score > min.0 } else { score >= min.0 };
    let below = if max.1 { score < max.0 } else { score <= max.0 };
    above && below
}

fn members<'a>(items: impl Iterator<Item = (&'a [u8], f64)>, scores: bool) -> Value {
    array(items.flat_map(|(m, s)| {
        let score = scores.then(|| bulk(fmt_score(s).as_bytes()));
        std::iter::once(bulk(m)).chain(score)
    }))
}

/// `ZADD key [NX|XX] [GT|LT] [CH] score member [score member ...]`.
pub fn zadd(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 3, false, "zadd")?;
    let (mut nx, mut xx, mut gt, mut lt, mut ch) = (false, false, false, false, false);
    let mut i = 1;
    while let Some(flag) = a.get(i) {
        match String::from_utf8_lossy(flag).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            "CH" => ch = true,
            "INCR" => return Err("ERR ZADD INCR is not implemented by memory://".into()),
            _ => break,
        }
        i += 1;
    }
    let pairs = &a[i..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(SYNTAX.into());
    }
    if nx && (xx || gt || lt) {
        return Err("ERR XX and NX options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT, LT, and/or NX options at the same time are not compatible".into());
    }
    let scores: Vec<f64> = pairs
        .chunks(2)
        .map(|p| float(&p[0]))
        .collect::<Result<_, _>>()?;
    let z: &mut ZSet = db.zset_mut(&a[0])?;
    let mut changed = 0;
    for (p, score) in pairs.chunks(2).zip(scores) {
        let old = z.score(&p[1]);
        let skip = match old {
            None => xx,
            Some(old) => nx || (gt && score <= old) || (lt && score >= old),
        };
        if skip {
            continue;
        }
        let added = z.insert(&p[1], score);
        if added || (ch && old != Some(score)) {
            changed += 1;
        }
    }
    db.tidy(&a[0]);
    Ok(Value::Int(changed))
}

pub fn zrem(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 2, false, "zrem")?;
    if db.zset(&a[0])?.is_none() {
        return Ok(Value::Int(0));
    }
    let z = db.zset_mut(&a[0])?;
    let n = a[1..].iter().filter(|m| z.remove(m)).count();
    db.tidy(&a[0]);
    Ok(count(n))
}

pub fn zscore(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 2, true, "zscore")?;
    let score = db.zset(&a[0])?.and_then(|z| z.score(&a[1]));
    Ok(score.map_or(Value::Nil, |s| bulk(fmt_score(s).as_bytes())))
}

pub fn zcard(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 1, true, "zcard")?;
    Ok(count(db.zset(&a[0])?.map_or(0, ZSet::len)))
}

pub fn zcount(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 3, true, "zcount")?;
    let (min, max) = (bound(&a[1])?, bound(&a[2])?);
    let z = db.zset(&a[0])?;
    let n = z.map_or(0, |z| {
        z.iter().filter(|(_, s)| within(*s, min, max)).count()
    });
    Ok(count(n))
}

/// `ZRANGE key start stop [WITHSCORES]` (by index only).
pub fn zrange(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 3, false, "zrange")?;
    let scores = match a.get(3) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"WITHSCORES") && a.len() == 4 => true,
        Some(_) => {
            return Err("ERR ZRANGE BYSCORE/BYLEX/REV are not implemented by memory://".into())
        }
    };
    let (start, stop) = (int(&a[1])?, int(&a[2])?);
    let Some(z) = db.zset(&a[0])? else {
        return Ok(array([]));
    };
    let (from, to) = index_range(start, stop, z.len());
    Ok(members(z.iter().skip(from).take(to - from), scores))
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`.
pub fn zrangebyscore(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 3, false, "zrangebyscore")?;
    let (min, max) = (bound(&a[1])?, bound(&a[2])?);
    let (mut scores, mut offset, mut limit) = (false, 0usize, usize::MAX);
    let mut opts = a[3..].iter();
    while let Some(opt) = opts.next() {
        match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
            "WITHSCORES" => scores = true,
            "LIMIT" => {
                let o = int(opts.next().ok_or(SYNTAX)?)?;
                let c = int(opts.next().ok_or(SYNTAX)?)?;
                if o < 0 {
                    return Ok(array([]));
                }
                offset = o as usize;
                limit = if c < 0 { usize::MAX } else { c as usize };
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    let Some(z) = db.zset(&a[0])? else {
        return Ok(array([]));
    };
    let hits = z.iter().filter(|(_, s)| within(*s, min, max));
    Ok(members(hits.skip(offset).take(limit), scores))
}

/// `ZPOPMIN key [count]`: member, score pairs, lowest first.
pub fn zpopmin(db: &mut Db, a: &[Vec<u8>]) -> Reply {
    arity(a, 1, false, "zpopmin")?;
    let n = a.get(1).map(|c| int(c)).transpose()?.unwrap_or(1);
    if n < 0 {
        return Err("ERR value is out of range, must be positive".into());
    }
    if db.zset(&a[0])?.is_none() {
        return Ok(array([]));
    }
    let z = db.zset_mut(&a[0])?;
    let popped: Vec<(Vec<u8>, f64)> = (0..n).map_while(|_| z.pop_min()).collect();
    db.tidy(&a[0]);
    Ok(array(popped.into_iter().flat_map(|(m, s)| {
        [Value::BulkString(m), bulk(fmt_score(s).as_bytes())]
    })))
}
