//! The embedded Lua 5.1 (the version Redis embeds) that runs `src/lua/*.lua` for `memory://`.
//!
//! It reproduces the scripting environment Redis gives a script: `KEYS`/`ARGV`, `redis.call`
//! (raises on a command error) and `redis.pcall` (returns it as `{err = ...}`),
//! `redis.error_reply`/`status_reply`, `cmsgpack`, protected globals, and Redis' conversions in
//! both directions: nil replies become `false`, integers Lua numbers, arrays 1-based tables;
//! a returned number is truncated to an integer, a table is an array up to its first nil, and
//! a table with an `err` field is an error.

use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value as LuaValue, Variadic};
use redis::Value;

use super::cmsgpack;
use super::commands::{self, fmt_score};
use super::db::Db;
use crate::broker::scripts::{Call, REGISTRY};

/// Installs the `redis` table on top of the raw command function (the chunk's argument), and
/// returns the function every script runs under: it turns a raised error into `{err = ...}`.
const PRELUDE: &str = r#"
local raw = ...
local type, error, pcall, tostring = type, error, pcall, tostring
redis = {}
function redis.pcall(...) return raw(...) end
function redis.call(...)
  local reply = raw(...)
  if type(reply) == 'table' and type(reply.err) == 'string' then error(reply, 0) end
  return reply
end
function redis.error_reply(msg) return {err = msg} end
function redis.status_reply(msg) return {ok = msg} end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
function redis.log() end
function redis.setresp(v) if v ~= 2 then error('memory:// speaks RESP2 only', 2) end end
return function(script)
  local ok, res = pcall(script)
  if ok then return res end
  if type(res) == 'table' and type(res.err) == 'string' then return res end
  return {err = 'ERR ' .. tostring(res)}
end
"#;

/// Redis refuses to let a script create or read undefined globals: a typo fails loudly.
const PROTECT_GLOBALS: &str = r#"
setmetatable(_G, {
  __newindex = function(_, k)
    error("Script attempted to create global variable '" .. tostring(k) .. "'", 2)
  end,
  __index = function(_, k)
    error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
  end,
})
"#;

/// One Lua state with every registered script compiled once, and the keyspace they act on.
pub(super) struct Engine {
    lua: Lua,
    /// Compiled scripts, in [`REGISTRY`] order (indexed by `ScriptId`).
    scripts: Vec<Function>,
    /// The prelude's wrapper that runs one script and catches its error.
    runner: Function,
}

impl Engine {
    pub fn new() -> mlua::Result<Engine> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::new(),
        )?;
        lua.set_app_data(Db::default());
        let raw = lua.create_function(|lua, args: Variadic<LuaValue>| {
            let args = args
                .iter()
                .map(arg_bytes)
                .collect::<mlua::Result<Vec<_>>>()?;
            let reply = {
                let mut db = lua
                    .app_data_mut::<Db>()
                    .ok_or_else(|| mlua::Error::runtime("memory:// keyspace missing"))?;
                commands::exec(&mut db, &args)
            };
            match reply {
                Ok(value) => to_lua(lua, value),
                Err(msg) => Ok(LuaValue::Table(lua.create_table_from([("err", msg)])?)),
            }
        })?;
        let runner: Function = lua.load(PRELUDE).set_name("prelude").call(raw)?;
        let redis: Table = lua.globals().raw_get("redis")?;
        redis.raw_set(
            "sha1hex",
            lua.create_function(|_, s: mlua::String| {
                Ok(sha1_smol::Sha1::from(&*s.as_bytes()).digest().to_string())
            })?,
        )?;
        lua.globals().raw_set("cmsgpack", cmsgpack::table(&lua)?)?;
        lua.load(PROTECT_GLOBALS).set_name("globals").exec()?;
        let scripts = REGISTRY
            .iter()
            .map(|def| lua.load(def.source).set_name(def.name).into_function())
            .collect::<mlua::Result<_>>()?;
        Ok(Engine {
            lua,
            scripts,
            runner,
        })
    }

    /// The keyspace, for the broker's plain commands. Do not hold it across [`Engine::run`].
    pub fn db(&self) -> mlua::AppDataRefMut<'_, Db> {
        self.lua
            .app_data_mut::<Db>()
            .expect("the keyspace is installed at creation")
    }

    /// Run one call with the clock frozen at `now_us`: the reply as Redis would encode it, or
    /// the error text of a failed script.
    pub fn run(&self, call: &Call, now_us: u64) -> Result<Value, String> {
        let keys: Vec<&[u8]> = call.keys().iter().map(|k| k.as_bytes()).collect();
        let args: Vec<&[u8]> = call.args().iter().map(Vec::as_slice).collect();
        let script = self.scripts[call.id() as usize].clone();
        self.run_function(script, &keys, &args, now_us)
    }

    /// Run any Lua source as a script (what `EVAL` would do), for tests of the environment.
    #[cfg(test)]
    pub fn eval(&self, source: &str, keys: &[&str], args: &[&str]) -> Result<Value, String> {
        let f = self
            .lua
            .load(source)
            .set_name("user_script")
            .into_function()
            .map_err(|e| format!("ERR {e}"))?;
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let now = self.db().now_us();
        self.run_function(f, &keys, &args, now)
    }

    fn run_function(
        &self,
        script: Function,
        keys: &[&[u8]],
        args: &[&[u8]],
        now_us: u64,
    ) -> Result<Value, String> {
        self.db().set_clock(now_us);
        let lua_err = |e: mlua::Error| format!("ERR {e}");
        let strings = |items: &[&[u8]]| -> mlua::Result<Table> {
            let t = self.lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, self.lua.create_string(item)?)?;
            }
            Ok(t)
        };
        let globals = self.lua.globals();
        globals
            .raw_set("KEYS", strings(keys).map_err(lua_err)?)
            .map_err(lua_err)?;
        globals
            .raw_set("ARGV", strings(args).map_err(lua_err)?)
            .map_err(lua_err)?;
        let out: LuaValue = self.runner.call(script).map_err(lua_err)?;
        from_lua(out)
    }
}

/// A `redis.call` argument as bytes: strings as they are, numbers as Redis prints them.
fn arg_bytes(v: &LuaValue) -> mlua::Result<Vec<u8>> {
    match v {
        LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
        LuaValue::Integer(i) => Ok(i.to_string().into_bytes()),
        LuaValue::Number(f) => Ok(fmt_score(*f).into_bytes()),
        _ => Err(mlua::Error::runtime(
            "Lua redis lib command arguments must be strings or integers",
        )),
    }
}

/// A command reply as Redis hands it to Lua.
fn to_lua(lua: &Lua, v: Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Nil => LuaValue::Boolean(false),
        Value::Int(i) => LuaValue::Number(i as f64),
        Value::BulkString(b) => LuaValue::String(lua.create_string(b)?),
        Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        Value::Okay => LuaValue::Table(lua.create_table_from([("ok", "OK")])?),
        Value::SimpleString(s) => LuaValue::Table(lua.create_table_from([("ok", s)])?),
        other => {
            return Err(mlua::Error::runtime(format!(
                "memory:// cannot hand {other:?} to Lua"
            )))
        }
    })
}

/// A script's return value as Redis encodes it; `Err` for an error reply.
fn from_lua(v: LuaValue) -> Result<Value, String> {
    Ok(match v {
        LuaValue::Nil | LuaValue::Boolean(false) => Value::Nil,
        LuaValue::Boolean(true) => Value::Int(1),
        LuaValue::Integer(i) => Value::Int(i),
        // Redis truncates toward zero (a C cast to long long).
        LuaValue::Number(f) => Value::Int(f as i64),
        LuaValue::String(s) => Value::BulkString(s.as_bytes().to_vec()),
        LuaValue::Table(t) => {
            if let Ok(LuaValue::String(err)) = t.raw_get::<LuaValue>("err") {
                return Err(err.to_string_lossy());
            }
            if let Ok(LuaValue::String(ok)) = t.raw_get::<LuaValue>("ok") {
                return Ok(Value::SimpleString(ok.to_string_lossy()));
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<LuaValue>(i).map_err(|e| e.to_string())? {
                    LuaValue::Nil => break,
                    item => items.push(from_lua(item)?),
                }
            }
            Value::Array(items)
        }
        _ => Value::Nil,
    })
}
