//! `cmsgpack.pack` / `cmsgpack.unpack`, as Redis' Lua provides them, for `memory://`.
//!
//! Like Redis' lua-cmsgpack: a table whose keys are exactly 1..n is an array, any other table a
//! map; a number with no fraction is an integer, others a double; strings are msgpack strings.

use mlua::{Lua, MultiValue, Table, Value as LuaValue, Variadic};
use rmp::decode::{self, Bytes, RmpRead};
use rmp::encode;
use rmp::Marker;

/// Nesting deeper than this packs as nil, as in lua-cmsgpack.
const MAX_DEPTH: usize = 16;

/// The `cmsgpack` global.
pub(super) fn table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|lua, args: Variadic<LuaValue>| {
            let mut buf = Vec::new();
            for v in args.iter() {
                pack(&mut buf, v, 0)?;
            }
            lua.create_string(buf)
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, s: mlua::String| {
            let bytes = s.as_bytes().to_vec();
            let mut rd = Bytes::new(&bytes);
            let mut out = Vec::new();
            while !rd.remaining_slice().is_empty() {
                out.push(unpack(lua, &mut rd, 0)?);
            }
            Ok(MultiValue::from_vec(out))
        })?,
    )?;
    Ok(t)
}

fn enc<E: std::fmt::Debug>(e: E) -> mlua::Error {
    mlua::Error::runtime(format!("cmsgpack: {e:?}"))
}

fn pack(buf: &mut Vec<u8>, v: &LuaValue, depth: usize) -> mlua::Result<()> {
    match v {
        LuaValue::Boolean(b) => encode::write_bool(buf, *b).map_err(enc)?,
        LuaValue::Integer(i) => encode::write_sint(buf, *i).map(drop).map_err(enc)?,
        LuaValue::Number(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
            encode::write_sint(buf, *f as i64).map(drop).map_err(enc)?
        }
        LuaValue::Number(f) => encode::write_f64(buf, *f).map_err(enc)?,
        LuaValue::String(s) => {
            let b = s.as_bytes();
            encode::write_str_len(buf, b.len() as u32).map_err(enc)?;
            buf.extend_from_slice(&b);
        }
        LuaValue::Table(t) if depth < MAX_DEPTH => pack_table(buf, t, depth)?,
        _ => encode::write_nil(buf).map_err(enc)?,
    }
    Ok(())
}

fn pack_table(buf: &mut Vec<u8>, t: &Table, depth: usize) -> mlua::Result<()> {
    let pairs: Vec<(LuaValue, LuaValue)> = t.pairs().collect::<mlua::Result<_>>()?;
    let len = t.raw_len();
    let is_array = pairs.len() == len
        && pairs.iter().all(|(k, _)| match k {
            LuaValue::Integer(i) => (1..=len as i64).contains(i),
            LuaValue::Number(f) => f.fract() == 0.0 && *f >= 1.0 && *f <= len as f64,
            _ => false,
        });
    if is_array {
        encode::write_array_len(buf, len as u32).map_err(enc)?;
        for i in 1..=len {
            pack(buf, &t.raw_get::<LuaValue>(i)?, depth + 1)?;
        }
    } else {
        encode::write_map_len(buf, pairs.len() as u32).map_err(enc)?;
        for (k, v) in &pairs {
            pack(buf, k, depth + 1)?;
            pack(buf, v, depth + 1)?;
        }
    }
    Ok(())
}

fn unpack(lua: &Lua, rd: &mut Bytes<'_>, depth: usize) -> mlua::Result<LuaValue> {
    if depth > 64 {
        return Err(mlua::Error::runtime("cmsgpack: nesting too deep"));
    }
    let marker = decode::read_marker(rd).map_err(enc)?;
    let raw = |rd: &mut Bytes<'_>, n: usize| -> mlua::Result<LuaValue> {
        let slice = rd.remaining_slice();
        if slice.len() < n {
            return Err(mlua::Error::runtime("cmsgpack: truncated input"));
        }
        let s = lua.create_string(&slice[..n])?;
        *rd = Bytes::new(&slice[n..]);
        Ok(LuaValue::String(s))
    };
    let num = |f: f64| Ok(LuaValue::Number(f));
    match marker {
        Marker::Null => Ok(LuaValue::Nil),
        Marker::True => Ok(LuaValue::Boolean(true)),
        Marker::False => Ok(LuaValue::Boolean(false)),
        Marker::FixPos(n) => num(f64::from(n)),
        Marker::FixNeg(n) => num(f64::from(n)),
        Marker::U8 => num(f64::from(rd.read_data_u8().map_err(enc)?)),
        Marker::U16 => num(f64::from(rd.read_data_u16().map_err(enc)?)),
        Marker::U32 => num(f64::from(rd.read_data_u32().map_err(enc)?)),
        Marker::U64 => num(rd.read_data_u64().map_err(enc)? as f64),
        Marker::I8 => num(f64::from(rd.read_data_i8().map_err(enc)?)),
        Marker::I16 => num(f64::from(rd.read_data_i16().map_err(enc)?)),
        Marker::I32 => num(f64::from(rd.read_data_i32().map_err(enc)?)),
        Marker::I64 => num(rd.read_data_i64().map_err(enc)? as f64),
        Marker::F32 => num(f64::from(rd.read_data_f32().map_err(enc)?)),
        Marker::F64 => num(rd.read_data_f64().map_err(enc)?),
        Marker::FixStr(n) => raw(rd, n as usize),
        Marker::Str8 | Marker::Bin8 => {
            let n = rd.read_data_u8().map_err(enc)?;
            raw(rd, n as usize)
        }
        Marker::Str16 | Marker::Bin16 => {
            let n = rd.read_data_u16().map_err(enc)?;
            raw(rd, n as usize)
        }
        Marker::Str32 | Marker::Bin32 => {
            let n = rd.read_data_u32().map_err(enc)?;
            raw(rd, n as usize)
        }
        Marker::FixArray(n) => unpack_array(lua, rd, n as usize, depth),
        Marker::Array16 => {
            let n = rd.read_data_u16().map_err(enc)?;
            unpack_array(lua, rd, n as usize, depth)
        }
        Marker::Array32 => {
            let n = rd.read_data_u32().map_err(enc)?;
            unpack_array(lua, rd, n as usize, depth)
        }
        Marker::FixMap(n) => unpack_map(lua, rd, n as usize, depth),
        Marker::Map16 => {
            let n = rd.read_data_u16().map_err(enc)?;
            unpack_map(lua, rd, n as usize, depth)
        }
        Marker::Map32 => {
            let n = rd.read_data_u32().map_err(enc)?;
            unpack_map(lua, rd, n as usize, depth)
        }
        other => Err(mlua::Error::runtime(format!(
            "cmsgpack: unsupported type {other:?}"
        ))),
    }
}

fn unpack_array(lua: &Lua, rd: &mut Bytes<'_>, n: usize, depth: usize) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    for i in 1..=n {
        t.raw_set(i, unpack(lua, rd, depth + 1)?)?;
    }
    Ok(LuaValue::Table(t))
}

fn unpack_map(lua: &Lua, rd: &mut Bytes<'_>, n: usize, depth: usize) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    for _ in 0..n {
        let k = unpack(lua, rd, depth + 1)?;
        let v = unpack(lua, rd, depth + 1)?;
        if !k.is_nil() {
            t.raw_set(k, v)?;
        }
    }
    Ok(LuaValue::Table(t))
}
