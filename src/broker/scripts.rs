//! Registry of the Lua scripts behind the Redis broker.
//!
//! Each script is embedded at compile time and invoked by SHA1 (`EVALSHA`). When the server does
//! not know the script (restart, failover, `SCRIPT FLUSH`) the call is repeated once with `EVAL`,
//! which also caches it again, so a lost script cache never surfaces as an error.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, ToRedisArgs, Value};

use std::collections::HashMap;

use super::{Enqueued, FetchOutcome, JobInfo, JobState, Leased, ProgressEntry};
use crate::errors::{Error, Result};

/// One script: its name (used in errors), file, source and how many `KEYS` it takes.
#[derive(Debug)]
pub struct ScriptDef {
    /// File stem, also used in [`crate::errors::Error::Protocol`].
    pub name: &'static str,
    /// Path of the source relative to the crate root.
    pub file: &'static str,
    /// The script's own file (its header contract and body), as written.
    pub own: &'static str,
    /// What runs: `src/lua/lib/common.lua` joined in front of the script's file, so shared
    /// fragments are written once; the SHA and `EVAL` use this.
    pub source: &'static str,
    /// Number of `KEYS` the script takes (checked against its header in tests).
    pub keys: usize,
}

/// Names every script; the discriminant indexes [`REGISTRY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptId {
    Enqueue,
    Fetch,
    Ack,
    Fail,
    Release,
    Heartbeat,
    Reap,
    Cancel,
    RetryDead,
    Purge,
    Fire,
    Schedule,
    Flow,
    Deliver,
    Relay,
    BatchAdd,
    Progress,
    Watch,
    Limits,
    Listing,
    Pause,
    Delete,
}

macro_rules! script {
    ($name:literal, $keys:literal) => {
        ScriptDef {
            name: $name,
            file: concat!("src/lua/", $name, ".lua"),
            own: include_str!(concat!("../lua/", $name, ".lua")),
            source: concat!(
                include_str!("../lua/lib/common.lua"),
                include_str!(concat!("../lua/", $name, ".lua"))
            ),
            keys: $keys,
        }
    };
}

/// Every script, in [`ScriptId`] order.
pub static REGISTRY: [ScriptDef; 22] = [
    script!("enqueue", 4),
    script!("fetch", 5),
    script!("ack", 5),
    script!("fail", 7),
    script!("release", 5),
    script!("heartbeat", 1),
    script!("reap", 7),
    script!("cancel", 4),
    script!("retry_dead", 3),
    script!("purge", 3),
    script!("fire", 5),
    script!("schedule", 1),
    script!("flow", 4),
    script!("deliver", 3),
    script!("relay", 2),
    script!("batch_add", 1),
    script!("progress", 1),
    script!("watch", 1),
    script!("limits", 1),
    script!("listing", 1),
    script!("pause", 2),
    script!("delete", 5),
];

/// SHA1 of each script, computed once.
static SHAS: LazyLock<Vec<String>> = LazyLock::new(|| {
    REGISTRY
        .iter()
        .map(|def| sha1_smol::Sha1::from(def.source).digest().to_string())
        .collect()
});

impl ScriptId {
    /// The registry entry of this script.
    pub fn def(self) -> &'static ScriptDef {
        &REGISTRY[self as usize]
    }

    /// Hex SHA1 of the script source, as Redis names it.
    pub fn sha(self) -> &'static str {
        &SHAS[self as usize]
    }
}

/// The negative per-item codes scripts return; the one Rust mirror of the Lua error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemError {
    /// -1: the token does not match, or the job is no longer running.
    StaleToken,
    /// -2: no record for the job id.
    MissingJob,
}

impl ItemError {
    /// Split a per-item reply into a non-negative status or a known error code.
    /// `None` for a negative code no script defines.
    pub fn split(code: i64) -> Option<std::result::Result<i64, ItemError>> {
        match code {
            c if c >= 0 => Some(Ok(c)),
            -1 => Some(Err(ItemError::StaleToken)),
            -2 => Some(Err(ItemError::MissingJob)),
            _ => None,
        }
    }
}

/// One invocation being built: keys are fixed up front, arguments appended in order.
#[derive(Debug)]
pub struct Call {
    id: ScriptId,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// A key of the call (every key of one call shares a hash tag): where it must run.
    pub fn slot_key(&self) -> &str {
        self.keys.first().map_or("", String::as_str)
    }

    /// Start a call of `id` with its keys (their count must match the registry).
    pub fn new(id: ScriptId, keys: Vec<String>) -> Self {
        debug_assert_eq!(
            keys.len(),
            id.def().keys,
            "wrong KEYS count for {}",
            id.def().name
        );
        Call {
            id,
            keys,
            args: Vec::new(),
        }
    }

    /// Append one argument (numbers are sent in decimal, bytes as they are).
    pub fn arg<T: ToRedisArgs>(&mut self, value: T) -> &mut Self {
        self.args.extend(value.to_redis_args());
        self
    }

    /// The script this call runs.
    pub fn id(&self) -> ScriptId {
        self.id
    }

    /// The `KEYS` of this call.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The `ARGV` of this call, each as the bytes Redis would receive.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    fn command(&self, verb: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(self.keys.len()).arg(&self.keys);
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }

    /// Run by SHA; on `NOSCRIPT` send the source once with `EVAL` (which re-caches it).
    pub async fn invoke<C: ConnectionLike>(&self, con: &mut C) -> RedisResult<Value> {
        let by_sha = self.command("EVALSHA", self.id.sha());
        match by_sha.query_async::<Value>(con).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", self.id.def().source)
                    .query_async(con)
                    .await
            }
            other => other,
        }
    }
}

// ---- Reply decoding: turns each script's documented output into broker types. ----

/// The error for a reply that breaks the script's contract.
pub(crate) fn protocol(script: &'static str, detail: String) -> Error {
    Error::Protocol { script, detail }
}

/// Reply value as an integer.
pub(crate) fn value_i64(v: &Value, script: &'static str) -> Result<i64> {
    ::redis::from_redis_value_ref(v).map_err(|e| protocol(script, e.to_string()))
}

/// Reply value as raw bytes.
pub(crate) fn value_bytes(v: Value, script: &'static str) -> Result<Vec<u8>> {
    ::redis::from_redis_value(v).map_err(|e| protocol(script, e.to_string()))
}

/// Reply value as a string.
pub(crate) fn value_string(v: Value, script: &'static str) -> Result<String> {
    ::redis::from_redis_value(v).map_err(|e| protocol(script, e.to_string()))
}

/// Reply value as an array.
pub(crate) fn value_array(v: Value, script: &'static str) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(protocol(
            script,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// Integer from a reply narrowed to u32.
pub(crate) fn u32_of(n: i64, script: &'static str) -> Result<u32> {
    u32::try_from(n).map_err(|_| protocol(script, format!("{n} out of range")))
}

/// Integer from a reply narrowed to u64.
pub(crate) fn u64_of(n: i64, script: &'static str) -> Result<u64> {
    u64::try_from(n).map_err(|_| protocol(script, format!("{n} out of range")))
}

/// Parse the fetch reply: next_due, then 8 values per leased job.
pub(crate) fn parse_fetch(reply: Value) -> Result<FetchOutcome> {
    const S: &str = "fetch";
    let mut items = value_array(reply, S)?.into_iter();
    let next_due = value_i64(
        &items
            .next()
            .ok_or_else(|| protocol(S, "empty reply".into()))?,
        S,
    )?;
    let held = value_i64(
        &items
            .next()
            .ok_or_else(|| protocol(S, "reply without its held flag".into()))?,
        S,
    )? == 1;
    let rest: Vec<Value> = items.collect();
    if rest.len() % 8 != 0 {
        return Err(protocol(
            S,
            format!("{} values is not a multiple of 8", rest.len()),
        ));
    }
    let mut jobs = Vec::with_capacity(rest.len() / 8);
    let mut it = rest.into_iter();
    // The length is a multiple of 8: each job's values are all there.
    while let Some(id) = it.next() {
        let mut next = || it.next().unwrap_or(Value::Nil);
        let (p, a, m, t, e, input) = (next(), next(), next(), next(), next(), next());
        let waited = next();
        jobs.push(Leased {
            id: value_string(id, S)?,
            payload: value_bytes(p, S)?,
            attempt: u32_of(value_i64(&a, S)?, S)?,
            max_attempts: u32_of(value_i64(&m, S)?, S)?,
            token: u64_of(value_i64(&t, S)?, S)?,
            enqueued_ms: u64_of(value_i64(&e, S)?, S)?,
            input: match input {
                Value::Nil => None,
                v => Some(value_bytes(v, S)?),
            },
            waited_ms: u64_of(value_i64(&waited, S)?, S)?,
        });
    }
    let next_due_us = u64::try_from(next_due).ok();
    Ok(FetchOutcome {
        jobs,
        next_due_us,
        held,
    })
}

/// Parse the enqueue reply: id, created per job.
pub(crate) fn parse_enqueue(reply: Value, expected: usize) -> Result<Vec<Enqueued>> {
    const S: &str = "enqueue";
    let items = value_array(reply, S)?;
    if items.len() != expected * 2 {
        return Err(protocol(
            S,
            format!("{} values for {expected} jobs", items.len()),
        ));
    }
    let mut out = Vec::with_capacity(expected);
    let mut it = items.into_iter();
    while let (Some(id), Some(created)) = (it.next(), it.next()) {
        out.push(Enqueued {
            id: value_string(id, S)?,
            created: value_i64(&created, S)? == 1,
        });
    }
    Ok(out)
}

/// Two-integer replies (reap, retry_dead, purge).
pub(crate) fn parse_pair(reply: Value, script: &'static str) -> Result<(u64, u64)> {
    let pair: (u64, u64) =
        ::redis::from_redis_value(reply).map_err(|e| protocol(script, e.to_string()))?;
    Ok(pair)
}

/// Three-integer replies (retry_dead: moved, processed, kept).
pub(crate) fn parse_triple(reply: Value, script: &'static str) -> Result<(u64, u64, u64)> {
    ::redis::from_redis_value(reply).map_err(|e| protocol(script, e.to_string()))
}

/// Build a [`JobInfo`] from the job hash (`HGETALL`); `None` when the hash is gone. A numeric
/// field that is not a number (a corrupt record, which the scripts dead-letter with reason
/// `corrupt_record`) reads as absent, so such a record can still be inspected.
pub(crate) fn parse_job(
    queue: &str,
    id: &str,
    mut h: HashMap<String, Vec<u8>>,
) -> Result<Option<JobInfo>> {
    const S: &str = "job";
    if h.is_empty() {
        return Ok(None);
    }
    let text = |h: &HashMap<String, Vec<u8>>, f: &str| {
        h.get(f).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let num = |f: &str| text(&h, f).and_then(|s| parse_int(&s));
    let count = |f: &str| num(f).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    let time = |f: &str| num(f).and_then(|v| u64::try_from(v).ok());
    let state_text = text(&h, "s").unwrap_or_default();
    let state = JobState::parse(&state_text)
        .ok_or_else(|| protocol(S, format!("unknown state {state_text:?}")))?;
    Ok(Some(JobInfo {
        id: id.to_owned(),
        queue: queue.to_owned(),
        state,
        priority: num("pr").unwrap_or(0),
        attempts: count("a"),
        max_attempts: count("m"),
        enqueued_ms: time("e").unwrap_or(0),
        due_ms: time("d"),
        started_ms: time("st"),
        finished_ms: time("f"),
        worker: text(&h, "w"),
        payload: h.remove("p").unwrap_or_default(),
        result: h.remove("r"),
        error: h.remove("x"),
        progress: h
            .remove("pg")
            .map(|pg| parse_progress(&pg))
            .unwrap_or_default(),
    }))
}

/// The progress log of a record (`pg`, written by `progress.lua`): a msgpack array of
/// `'<ms> <fraction> <message>'` strings, oldest first. What does not parse is left out: the
/// log is informative, and a job must stay readable whatever it holds.
pub(crate) fn parse_progress(pg: &[u8]) -> Vec<ProgressEntry> {
    let entries: Vec<String> = rmp_serde::from_slice(pg).unwrap_or_default();
    entries
        .iter()
        .filter_map(|e| {
            let mut parts = e.splitn(3, ' ');
            let at_ms = parse_int(parts.next()?).and_then(|v| u64::try_from(v).ok())?;
            let fraction = parts.next()?.parse::<f64>().ok()?;
            let message = parts.next().filter(|m| !m.is_empty()).map(str::to_owned);
            Some(ProgressEntry {
                at_ms,
                fraction,
                message,
            })
        })
        .collect()
}

/// Integer hash field. Newer Redis/Valkey versions may write a Lua number such as
/// 1761200000000 as `1.7612e+12`, so an exact float form is accepted too.
fn parse_int(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        let f = s.parse::<f64>().ok()?;
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leading comment block of a script.
    fn header(source: &str) -> Vec<&str> {
        source.lines().take_while(|l| l.starts_with("--")).collect()
    }

    /// Index `n` of header lines like `-- KEYS[n] ...` / `-- ARGV[n..] ...`, and whether variadic.
    /// A fixed block `-- ARGV[a..b]` stands for each index from a to b (not variadic).
    fn documented(header: &[&str], what: &str) -> Vec<(usize, bool)> {
        let tag = format!("-- {what}[");
        header
            .iter()
            .filter_map(|l| l.strip_prefix(&tag))
            .flat_map(|rest| {
                let end = rest.find(']').expect("closing bracket");
                let inner = &rest[..end];
                if let Some((a, b)) = inner.split_once("..").filter(|(_, b)| !b.is_empty()) {
                    let (a, b): (usize, usize) =
                        (a.parse().expect("index"), b.parse().expect("index"));
                    return (a..=b).map(|n| (n, false)).collect::<Vec<_>>();
                }
                let variadic = inner.ends_with("..");
                vec![(
                    inner.trim_end_matches("..").parse().expect("index"),
                    variadic,
                )]
            })
            .collect()
    }

    /// The first indexes of the fixed blocks (`-- ARGV[a..b]`) of a header.
    fn blocks(header: &[&str]) -> Vec<usize> {
        header
            .iter()
            .filter_map(|l| l.strip_prefix("-- ARGV["))
            .filter_map(|rest| {
                let (a, b) = rest[..rest.find(']')?].split_once("..")?;
                (!b.is_empty()).then(|| a.parse().ok()).flatten()
            })
            .collect()
    }

    /// Literal indexes `X[n]` the body uses.
    fn used(body: &str, what: &str) -> Vec<usize> {
        let tag = format!("{what}[");
        body.match_indices(&tag)
            .filter_map(|(at, _)| {
                let rest = &body[at + tag.len()..];
                rest[..rest.find(']')?].parse().ok()
            })
            .collect()
    }

    /// The shared fragments stay shared: no script defines its own copy, and the library
    /// reads no KEYS or ARGV (it runs in front of every script).
    #[test]
    fn shared_fragments_are_written_once() {
        let lib = include_str!("../lua/lib/common.lua");
        assert!(!lib.contains("KEYS[") && !lib.contains("ARGV["));
        let names: Vec<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("local function "))
            .map(|rest| &rest[..rest.find('(').expect("parameter list")])
            .collect();
        assert!(names.len() >= 3, "{names:?}");
        for def in &REGISTRY {
            assert!(def.source.starts_with(lib) && def.source.ends_with(def.own));
            for name in &names {
                let copy = format!("local function {name}(");
                assert!(!def.own.contains(&copy), "{} redefines {name}", def.file);
            }
            assert!(
                !def.own.contains("redis.call('TIME')"),
                "{}: use redis_now()",
                def.file
            );
        }
    }

    /// The Lua copy of a Rust constant says the same.
    /// `take` and `free` only count; a script that calls one must write what it counted.
    #[test]
    fn scripts_that_count_limiter_slots_commit_them() {
        for def in &REGISTRY {
            for (count, commit) in [
                ("take(prefix", "commit_takes(prefix"),
                ("free(prefix", "commit_frees(prefix"),
            ] {
                if def.own.contains(count) {
                    assert!(
                        def.own.contains(commit),
                        "{} calls {count} without {commit}",
                        def.file
                    );
                }
            }
        }
    }

    #[test]
    fn lua_constants_match_rust() {
        let lib = include_str!("../lua/lib/common.lua");
        let line = lib
            .lines()
            .find_map(|l| l.strip_prefix("local NEVER_RAN_TTL = "))
            .expect("NEVER_RAN_TTL in lib/common.lua");
        assert_eq!(
            line.trim().parse::<u64>().unwrap(),
            super::super::CANCELLED_TTL_MS
        );
    }

    #[test]
    fn headers_match_the_registry() {
        for def in &REGISTRY {
            let head = header(def.own);
            let body = &def.own[head.iter().map(|l| l.len() + 1).sum::<usize>()..];
            assert!(
                head[0].starts_with(&format!("-- {}.lua:", def.name)),
                "{}",
                def.file
            );
            for section in ["-- Output:", "-- Errors:"] {
                assert!(
                    head.iter().any(|l| l.starts_with(section)),
                    "{} lacks {section}",
                    def.file
                );
            }
            let keys = documented(&head, "KEYS");
            let expected: Vec<(usize, bool)> = (1..=def.keys).map(|n| (n, false)).collect();
            assert_eq!(keys, expected, "{}: KEYS in header vs registry", def.file);
            for n in used(body, "KEYS") {
                assert!(n <= def.keys, "{} uses undocumented KEYS[{n}]", def.file);
            }
            check_argv(def, &head, body);
        }
    }

    fn check_argv(def: &ScriptDef, head: &[&str], body: &str) {
        let argv = documented(head, "ARGV");
        // A fixed block is handed whole to a shared function (`f(..., ARGV, a)`), which reads
        // its values by offset.
        let mut in_block = Vec::new();
        for a in blocks(head) {
            assert!(
                body.contains(&format!("ARGV, {a})")),
                "{}: ARGV[{a}..] block never passed on",
                def.file
            );
            in_block.extend(argv.iter().map(|&(n, _)| n).filter(|&n| n >= a));
        }
        for &(n, variadic) in &argv {
            if in_block.contains(&n) {
                continue;
            }
            if variadic {
                let looped = format!("for i = {n}, #ARGV");
                assert!(
                    body.contains(&looped),
                    "{}: ARGV[{n}..] never looped",
                    def.file
                );
            } else {
                assert!(
                    used(body, "ARGV").contains(&n),
                    "{}: ARGV[{n}] unused",
                    def.file
                );
            }
        }
        for n in used(body, "ARGV") {
            assert!(
                argv.iter().any(|&(d, _)| d == n),
                "{}: ARGV[{n}] undocumented",
                def.file
            );
        }
    }

    #[test]
    fn shas_are_hex_sha1_of_the_source() {
        use ScriptId::*;
        let all = [
            Enqueue, Fetch, Ack, Fail, Release, Heartbeat, Reap, Cancel, RetryDead, Purge, Fire,
            Schedule, Flow, Deliver, Relay, BatchAdd,
        ];
        let names: Vec<&str> = all.iter().map(|id| id.def().name).collect();
        let expected = [
            "enqueue",
            "fetch",
            "ack",
            "fail",
            "release",
            "heartbeat",
            "reap",
        ];
        assert_eq!(&names[..7], expected);
        assert_eq!(
            &names[7..],
            [
                "cancel",
                "retry_dead",
                "purge",
                "fire",
                "schedule",
                "flow",
                "deliver",
                "relay",
                "batch_add"
            ]
        );
        for id in all {
            assert_eq!(id.sha().len(), 40);
        }
        assert_ne!(Ack.sha(), Fail.sha());
    }

    #[test]
    fn item_codes_split() {
        assert_eq!(ItemError::split(2), Some(Ok(2)));
        assert_eq!(ItemError::split(-1), Some(Err(ItemError::StaleToken)));
        assert_eq!(ItemError::split(-2), Some(Err(ItemError::MissingJob)));
        assert_eq!(ItemError::split(-9), None);
    }

    #[test]
    fn integers_written_by_lua_parse_in_either_form() {
        assert_eq!(parse_int("1761200000000"), Some(1_761_200_000_000));
        assert_eq!(parse_int("1.7612e+12"), Some(1_761_200_000_000));
        assert_eq!(parse_int("1.5"), None);
        assert_eq!(parse_int("x"), None);
    }
}
