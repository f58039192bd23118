//! In-process broker for `memory://` URLs. It runs the very Lua scripts the Redis broker runs
//! (`src/lua/*.lua`, through [`super::calls`]) in an embedded Lua 5.1 over an in-process
//! keyspace that implements the Redis commands they use, so the job state machine exists once
//! and test suites still run without a server.
//!
//! Layout: [`db`] is the keyspace (Redis data types, key expiry), [`commands`] the Redis
//! commands over it, [`lua`] the scripting environment, [`cmsgpack`] the msgpack library
//! scripts may call. This file is the broker: one Lua state behind one `std::sync::Mutex`
//! (never held across an `.await`), the clock, and the wake-ups.
//!
//! Wake-ups: where a Redis worker blocks in `BLPOP` on a queue's wake list, a memory worker
//! sleeps on a `tokio::sync::Notify` for that list. The scripts push to the list exactly as on
//! Redis; after each call the broker empties every wake list pushed to and wakes all its
//! waiters.

mod cmsgpack;
mod commands;
mod db;
mod lua;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{Cmd, FromRedisValue, Value};
use async_trait::async_trait;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use self::lua::Engine;
use super::calls::{self, ScriptRunner};
use super::done::DoneWaiters;
use super::keys::{self, QueueKeys};
use super::scripts::{parse_job, protocol, Call};
use super::{Broker, JobInfo, JobSet, QueueCounts, WorkerInfo};
use crate::errors::{Error, Result};

/// The `memory://` broker. Instances are shared per name through [`MemoryBroker::named`].
pub struct MemoryBroker {
    engine: Mutex<Engine>,
    /// Waiters per wake list; a `Notify` is never replaced, so a waiter may hold a clone.
    wakers: Mutex<HashMap<Vec<u8>, Arc<Notify>>>,
    /// Waiters for job endings, fed with what the scripts publish.
    done: DoneWaiters,
    /// Added to the system clock; lets tests move time forward without sleeping.
    skew_ms: AtomicU64,
    /// When set (tests only), the clock stands still at this unix µs, plus the skew: a test
    /// that moves the clock to 1 ms before a deadline must not see real time pass it.
    frozen_us: AtomicU64,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker {
            // Only a broken prelude or an out-of-memory Lua can fail here: a bug, not a state.
            engine: Mutex::new(Engine::new().expect("memory:// Lua engine failed to start")),
            wakers: Mutex::default(),
            done: DoneWaiters::default(),
            skew_ms: AtomicU64::new(0),
            frozen_us: AtomicU64::new(0),
        }
    }
}

/// Process-wide instances by name. Strong references on purpose: like a Redis server, a named
/// broker keeps its jobs even while no client holds it (an `App` may enqueue, drop its handle,
/// and a worker started later must still find the jobs).
fn registry() -> &'static Mutex<HashMap<String, Arc<MemoryBroker>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<MemoryBroker>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge every later call: a script's writes are whole commands,
    // so the keyspace is as consistent as Redis' after a failed script.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A script or command error, as the Redis broker reports a server error.
fn server_error(msg: &str) -> Error {
    let line = msg.replace(['\r', '\n'], " ");
    let reply = ::redis::parse_redis_value(format!("-{line}\r\n").as_bytes());
    match reply.and_then(Value::extract_error) {
        Err(e) => Error::Redis(e),
        Ok(_) => Error::Invalid(line),
    }
}

/// A reply decoded as the Redis broker decodes it.
fn decode<T: FromRedisValue>(v: Value) -> Result<T> {
    ::redis::from_redis_value(v).map_err(|e| protocol("memory", e.to_string()))
}

/// A plain command's arguments, as a [`Cmd`] would send them.
fn args_of(cmd: &Cmd) -> Vec<Vec<u8>> {
    cmd.args_iter()
        .map(|a| match a {
            ::redis::Arg::Simple(b) => b.to_vec(),
            _ => b"0".to_vec(),
        })
        .collect()
}

impl MemoryBroker {
    /// A fresh broker not shared with anyone (for tests and embedding).
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide broker for `url` (`memory://` or `memory://name`): every call with the
    /// same name returns the same instance, so producers and workers in one process share jobs.
    pub fn named(url: &str) -> Arc<dyn Broker> {
        let name = url
            .strip_prefix("memory://")
            .unwrap_or(url)
            .trim_end_matches('/');
        let mut registry = lock(registry());
        registry.entry(name.to_string()).or_default().clone()
    }

    /// Broker time: the system clock in unix microseconds (plus the test skew).
    fn clock_us(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let system = match self.frozen_us.load(Ordering::Relaxed) {
            0 => system,
            frozen => frozen,
        };
        let skew = self.skew_ms.load(Ordering::Relaxed).saturating_mul(1000);
        system.saturating_add(skew)
    }

    /// Move this broker's clock forward (a test hook, public for the contract suite in
    /// `tests/contract/`; nothing else calls it).
    #[doc(hidden)]
    pub fn advance(&self, ms: u64) {
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Stop this broker's clock at now; from here on only [`Self::advance`] moves it (a test
    /// hook, like `advance`).
    #[doc(hidden)]
    pub fn freeze(&self) {
        let now = self
            .clock_us()
            .saturating_sub(self.skew_ms.load(Ordering::Relaxed) * 1000);
        self.frozen_us.store(now.max(1), Ordering::Relaxed);
    }

    fn notify(&self, wake_key: &[u8]) -> Arc<Notify> {
        lock(&self.wakers)
            .entry(wake_key.to_vec())
            .or_default()
            .clone()
    }

    /// Run `f` on the engine with the clock frozen at now, then deliver wake-ups: every list
    /// wake list pushed to is emptied (its token is consumed, as a `BLPOP` would) and its
    /// waiters woken. What the call published is handed to listeners before the engine is let
    /// go, so messages arrive in the order of the calls that published them, as on Redis
    /// (where `PUBLISH` runs inside the script).
    fn with_engine<T>(&self, f: impl FnOnce(&Engine, u64) -> T) -> T {
        let (out, pushed) = {
            let engine = lock(&self.engine);
            let now = self.clock_us();
            engine.db().set_clock(now);
            let out = f(&engine, now);
            let mut db = engine.db();
            // Wake lists only: other lists (a queue's outbox) keep what was pushed.
            let mut pushed = db.take_pushed();
            pushed.retain(|key| keys::is_wake(key));
            for key in &pushed {
                db.remove(key);
            }
            let published = db.take_published();
            drop(db);
            for (channel, message) in published {
                self.done.fire(&channel, &message);
            }
            (out, pushed)
        };
        for key in pushed {
            self.notify(&key).notify_waiters();
        }
        out
    }

    /// Run plain commands atomically (as one `MULTI`), each reply decoded as Redis' would be.
    fn query(&self, cmds: &[Cmd]) -> Result<Vec<Value>> {
        self.with_engine(|engine, _| {
            let mut db = engine.db();
            cmds.iter()
                .map(|cmd| commands::exec(&mut db, &args_of(cmd)).map_err(|e| server_error(&e)))
                .collect()
        })
    }

    /// Run one raw command on the keyspace, as `redis-cli` would on a server (a test hook for
    /// corrupting records behind the broker's back, like `advance`).
    #[doc(hidden)]
    pub fn raw_command(&self, cmd: Cmd) -> Result<Value> {
        Ok(self
            .query(std::slice::from_ref(&cmd))?
            .pop()
            .unwrap_or(Value::Nil))
    }

    fn query_one<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T> {
        let reply = self.query(std::slice::from_ref(&cmd))?.pop();
        decode(reply.unwrap_or(Value::Nil))
    }

    /// First half of `wait`: create the waiter *before* looking at the state (a `Notified`
    /// receives `notify_waiters` from its creation on, even before it is polled). A wake-up sent
    /// after the look therefore reaches the waiter, and anything that happened before the look
    /// is visible in the state, so work arriving between a worker's empty fetch and its `wait`
    /// is never slept through. `None` when something is ready or due (no need to sleep).
    fn arm(&self, queue: &str, timeout_ms: u64) -> Option<(Pin<Box<OwnedNotified>>, u64)> {
        let k = QueueKeys::new(queue).ok()?;
        let mut waiter = Box::pin(self.notify(k.wake().as_bytes()).notified_owned());
        waiter.as_mut().enable();
        let first = |key: String| {
            ::redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .clone()
        };
        let look = self.query(&[
            ::redis::cmd("ZCARD").arg(k.ready()).clone(),
            first(k.scheduled()),
            first(k.limdue()),
            ::redis::cmd("EXISTS").arg(k.paused()).clone(),
        ]);
        type Look = (u64, Vec<(String, f64)>, Vec<(String, f64)>, bool);
        let (ready, due, lim_due, paused): Look = decode(Value::Array(look.ok()?)).ok()?;
        if paused {
            // Nothing is leased until resumed, and resuming wakes the list.
            return Some((waiter, timeout_ms));
        }
        if ready > 0 {
            return None;
        }
        let now = self.clock_us() / 1000;
        // The earliest scheduled job, or limiter that may start a waiting group.
        let sleep_ms = due.iter().chain(&lim_due).fold(timeout_ms, |ms, (_, at)| {
            (*at as u64).saturating_sub(now).min(ms)
        });
        (sleep_ms > 0).then_some((waiter, sleep_ms))
    }
}

#[async_trait]
impl ScriptRunner for MemoryBroker {
    async fn run(&self, call: &Call) -> Result<Value> {
        self.with_engine(|engine, now| engine.run(call, now))
            .map_err(|e| server_error(&e))
    }

    async fn remember_queue(&self, queue: &str) -> Result<()> {
        self.query_one::<i64>(::redis::cmd("SADD").arg(keys::QUEUES).arg(queue).clone())?;
        Ok(())
    }
}

calls::scripted_broker!(MemoryBroker {

    fn node_of(&self, queue: &str) -> Result<String> {
        QueueKeys::new(queue)?;
        Ok(String::new()) // one process, one node
    }

    async fn watch_end(&self, queue: &str, id: &str) -> Result<oneshot::Receiver<()>> {
        Ok(self.done.register(&QueueKeys::new(queue)?.done(), id))
    }

    async fn watch_cancels(&self, queue: &str) -> Result<mpsc::UnboundedReceiver<String>> {
        Ok(self.done.listen(&QueueKeys::new(queue)?.cancels()))
    }

    async fn wait_any(
        &self,
        queues: &[String],
        timeout_ms: u64,
        interrupt: &CancellationToken,
    ) -> Result<Vec<String>> {
        let mut waiters = Vec::with_capacity(queues.len());
        let mut sleep_ms = timeout_ms;
        for queue in queues {
            QueueKeys::new(queue)?;
            match self.arm(queue, timeout_ms) {
                Some((waiter, ms)) => {
                    waiters.push(waiter);
                    sleep_ms = sleep_ms.min(ms);
                }
                None => return Ok(vec![queue.clone()]), // ready or due now
            }
        }
        if waiters.is_empty() {
            return Ok(Vec::new());
        }
        // Timing out is the normal idle outcome, not an error.
        let sleep = tokio::time::sleep(Duration::from_millis(sleep_ms));
        tokio::select! {
            (_, i, _) = futures::future::select_all(waiters) => Ok(vec![queues[i].clone()]),
            _ = sleep => Ok(Vec::new()),
            _ = interrupt.cancelled() => Ok(Vec::new()),
        }
    }

    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        Ok(self.jobs(queue, &[id.to_owned()]).await?.pop().flatten())
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        calls::parse_counts(self.query(&calls::counts_cmds(queue)?)?)
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> =
            self.query_one(::redis::cmd("SMEMBERS").arg(keys::QUEUES).clone())?;
        names.sort();
        Ok(names)
    }

    async fn dead_ids(&self, queue: &str, limit: usize) -> Result<Vec<String>> {
        self.job_ids(queue, JobSet::Dead, 0, limit).await
    }

    async fn job_ids(
        &self,
        queue: &str,
        set: JobSet,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>> {
        if set == JobSet::Queued {
            return calls::queued_ids(self, queue, offset, count).await;
        }
        match calls::page_cmd(queue, set, offset, count)? {
            Some(cmd) => self.query_one(cmd),
            None => Ok(Vec::new()),
        }
    }

    async fn jobs(&self, queue: &str, ids: &[String]) -> Result<Vec<Option<JobInfo>>> {
        let k = QueueKeys::new(queue)?;
        let cmds: Vec<Cmd> = ids
            .iter()
            .map(|id| ::redis::cmd("HGETALL").arg(k.job(id)).clone())
            .collect();
        let replies = self.query(&cmds)?;
        ids.iter()
            .zip(replies)
            .map(|(id, reply)| {
                let hash: HashMap<String, Vec<u8>> = decode(reply)?;
                parse_job(queue, id, hash)
            })
            .collect()
    }

    /// Stores the registration with `last_seen_ms` set to broker time (a worker's clock is never
    /// trusted); it disappears `ttl_ms` later unless registered again.
    async fn register_worker(&self, worker: &WorkerInfo, ttl_ms: u64) -> Result<()> {
        let now = self.now_ms().await?;
        let mut set = ::redis::cmd("SET");
        set.arg(keys::worker(&worker.id)).arg(&worker.info);
        if ttl_ms > 0 {
            set.arg("PX").arg(ttl_ms);
        }
        let mut seen = ::redis::cmd("ZADD");
        seen.arg(keys::WORKERS).arg(now).arg(&worker.id);
        self.query(&[seen, set])?;
        Ok(())
    }

    async fn unregister_worker(&self, id: &str) -> Result<()> {
        self.query(&[
            ::redis::cmd("ZREM").arg(keys::WORKERS).arg(id).clone(),
            ::redis::cmd("DEL").arg(keys::worker(id)).clone(),
        ])?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(keys::WORKERS).arg(0).arg(-1).arg("WITHSCORES");
        let seen: Vec<(String, f64)> = self.query_one(cmd)?;
        let gets: Vec<Cmd> = seen
            .iter()
            .map(|(id, _)| ::redis::cmd("GET").arg(keys::worker(id)).clone())
            .collect();
        let infos = self.query(&gets)?;
        let mut live = Vec::new();
        let mut gone = ::redis::cmd("ZREM");
        gone.arg(keys::WORKERS);
        let mut any_gone = false;
        for ((id, last_seen), info) in seen.into_iter().zip(infos) {
            match decode::<Option<String>>(info)? {
                Some(info) => live.push(WorkerInfo {
                    id,
                    info,
                    last_seen_ms: last_seen as u64,
                }),
                None => {
                    // The info key expired: the worker stopped heartbeating. Forget it.
                    gone.arg(id);
                    any_gone = true;
                }
            }
        }
        if any_gone {
            self.query(&[gone])?;
        }
        Ok(live)
    }

    async fn server_check(&self) -> Result<Vec<(String, String)>> {
        // In-process: nothing to evict, nothing to persist.
        Ok(Vec::new())
    }

    async fn now_ms(&self) -> Result<u64> {
        Ok(self.clock_us() / 1000)
    }

    async fn watch_events(
        &self,
        queue: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>> {
        Ok(self.done.listen(&QueueKeys::new(queue)?.events()))
    }

});
