//! Redis broker: every job state change is one Lua script (see `src/lua`), keys come from
//! [`super::keys`], scripts are run through [`super::scripts`].
//!
//! Normal commands share one multiplexed, auto-reconnecting [`ConnectionManager`]. `wait` blocks
//! in `BLPOP`, which would stall every request queued behind it on a multiplexed connection, so
//! waits use dedicated connections from a small pool instead.
//!
//! Faults: the manager reconnects with backoff after errors, but a connection that stays open
//! while nothing comes back (a half-open TCP flow, a blackholed route) raises no error, only
//! response timeouts. A watchdog task (see [`super::watchdog`]) pings the shared connection,
//! fails whatever waits on it once it has been silent for 1.5 s and swaps in a fresh manager, so
//! consumption resumes by itself within about 2.4 s. Blocking waits have their own rule: one
//! deadline of [`MAX_BLOCK`] + [`WAIT_GRACE`] over dialing and the `BLPOP` (callers tolerate early
//! wake-ups), after which the dedicated connection is dropped; they also give up, and pooled
//! connections are discarded, when the watchdog finds the shared connection silent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Value};
use async_trait::async_trait;

use super::calls::{self, ScriptRunner};
use super::keys::{self, QueueKeys};
use super::scripts::{parse_job, Call};
use super::watchdog::{manager_config, spawn_watchdog, Watched, CONNECT_TIMEOUT};
use super::*;
use tokio_util::sync::CancellationToken;

mod listing;

/// Extra time a blocking wait gets beyond its own timeout before the client gives up on it and
/// drops the connection: Redis answers a timed-out BLPOP at its next `hz` tick (100 ms).
const WAIT_GRACE: Duration = Duration::from_millis(500);
/// Longest single BLPOP: a longer wait is cut short (a spurious wake-up, which callers allow).
/// With [`WAIT_GRACE`], a silent blocking connection costs at most 2 s, no more than the
/// watchdog takes to find a silent shared connection.
const MAX_BLOCK: Duration = Duration::from_millis(1500);

/// A [`Broker`] backed by Redis (or Valkey).
pub struct RedisBroker {
    client: Client,
    /// The shared connection; the watchdog replaces it when it goes silent.
    con: Arc<Mutex<Watched>>,
    /// Idle dedicated connections for blocking waits, each with the dead signal of the shared
    /// connection of its time: once that fired, the connection is suspect and not reused.
    waiters: Mutex<Vec<(MultiplexedConnection, CancellationToken)>>,
    /// Queues already added to the global queue set by this instance.
    known_queues: Mutex<HashSet<String>>,
}

impl RedisBroker {
    /// Connect to `redis://`, `rediss://` (TLS), `valkey://` or `valkeys://` URLs, with optional
    /// `user:password@` and `/db`.
    pub async fn open(url: &str) -> Result<Arc<dyn Broker>> {
        Ok(Arc::new(Self::connect(url).await?))
    }

    /// Like [`RedisBroker::open`], returning the concrete type.
    pub async fn connect(url: &str) -> Result<RedisBroker> {
        let client = Client::open(url).map_err(|e| Error::BadUrl(format!("{url:?}: {e}")))?;
        // Dial once plainly first: the connection manager retries with backoff, which would turn
        // a wrong password or a down server into a long hang instead of a prompt error.
        let first_waiter = Self::dial_blocking(&client).await?;
        let con = client
            .get_connection_manager_with_config(manager_config())
            .await?;
        let con = Watched::new(con);
        let first_waiter = (first_waiter, con.dead_signal());
        let con = Arc::new(Mutex::new(con));
        spawn_watchdog(client.clone(), Arc::downgrade(&con));
        Ok(RedisBroker {
            client,
            con,
            waiters: Mutex::new(vec![first_waiter]),
            known_queues: Mutex::new(HashSet::new()),
        })
    }

    /// A new connection for blocking commands.
    async fn dial_blocking(client: &Client) -> Result<MultiplexedConnection> {
        // No response timeout: BLPOP legitimately stays silent for its whole timeout.
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// A handle on the shared connection (cheap clone; it reconnects by itself after errors).
    fn con(&self) -> Watched {
        lock(&self.con).clone()
    }

    /// A dedicated connection for one blocking command: pooled if one is idle and not suspect,
    /// else a new one.
    async fn blocking_con(&self) -> Result<(MultiplexedConnection, bool)> {
        loop {
            match lock(&self.waiters).pop() {
                Some((_, dead)) if dead.is_cancelled() => continue,
                Some((con, _)) => return Ok((con, true)),
                None => break,
            }
        }
        Ok((Self::dial_blocking(&self.client).await?, false))
    }

    /// One BLPOP on the wake list. Returns the connection if it is still usable.
    async fn blpop(
        mut con: MultiplexedConnection,
        wake: &str,
        block: Duration,
    ) -> (::redis::RedisResult<()>, Option<MultiplexedConnection>) {
        let mut cmd = ::redis::cmd("BLPOP");
        cmd.arg(wake).arg(block.as_secs_f64());
        match cmd.query_async::<Value>(&mut con).await {
            Ok(_) => (Ok(()), Some(con)),
            Err(e) => (Err(e), None),
        }
    }

    /// Dial (or take from the pool) and BLPOP, retrying once on a fresh connection when a pooled
    /// one turns out dead; a usable connection goes back to the pool.
    async fn wait_blocking(
        &self,
        wake: &str,
        block: Duration,
        dead: &CancellationToken,
    ) -> Result<()> {
        let (con, pooled) = self.blocking_con().await?;
        let (mut result, mut back) = Self::blpop(con, wake, block).await;
        if pooled
            && result
                .as_ref()
                .is_err_and(|e| e.is_unrecoverable_error() || e.is_io_error())
        {
            // An idle pooled connection may have died with a server restart: retry on a fresh one.
            let (con, _) = self.blocking_con().await?;
            (result, back) = Self::blpop(con, wake, block).await;
        }
        if let Some(con) = back {
            lock(&self.waiters).push((con, dead.clone()));
        }
        Ok(result?)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain inserts).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl ScriptRunner for RedisBroker {
    async fn run(&self, call: &Call) -> Result<Value> {
        Ok(call.invoke(&mut self.con()).await?)
    }

    /// Add the queue to the global queue set once per broker instance (outside any script, so
    /// scripts stay within one cluster slot).
    async fn remember_queue(&self, queue: &str) -> Result<()> {
        if lock(&self.known_queues).contains(queue) {
            return Ok(());
        }
        ::redis::cmd("SADD")
            .arg(keys::QUEUES)
            .arg(queue)
            .query_async::<()>(&mut self.con())
            .await?;
        lock(&self.known_queues).insert(queue.to_owned());
        Ok(())
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        calls::enqueue(self, queue, jobs).await
    }

    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease_ms: u64,
        worker: &str,
    ) -> Result<FetchOutcome> {
        calls::fetch(self, queue, max, lease_ms, worker).await
    }

    async fn wait(&self, queue: &str, timeout_ms: u64) -> Result<()> {
        let k = QueueKeys::new(queue)?;
        if timeout_ms == 0 {
            // BLPOP 0 would block forever; a zero timeout only consumes a pending wake-up.
            ::redis::cmd("LPOP")
                .arg(k.wake())
                .query_async::<()>(&mut self.con())
                .await?;
            return Ok(());
        }
        let block = Duration::from_millis(timeout_ms).min(MAX_BLOCK);
        let dead = self.con().dead_signal();
        // One deadline over dialing and the BLPOP: past it, or once the shared connection is
        // found silent, the dedicated connection is suspect and dropped (with a dial in
        // progress, if any); waking early is fine.
        let wake = k.wake();
        let waited =
            tokio::time::timeout(block + WAIT_GRACE, self.wait_blocking(&wake, block, &dead));
        tokio::select! {
            res = waited => res.unwrap_or(Ok(())),
            _ = dead.cancelled() => Ok(()),
        }
    }

    async fn ack(&self, queue: &str, acks: Vec<Ack>) -> Result<Vec<bool>> {
        calls::ack(self, queue, acks).await
    }

    async fn fail(&self, queue: &str, fails: Vec<Fail>) -> Result<Vec<FailOutcome>> {
        calls::fail(self, queue, fails).await
    }

    async fn release(&self, queue: &str, leases: Vec<Lease>) -> Result<Vec<bool>> {
        calls::release(self, queue, leases).await
    }

    async fn heartbeat(
        &self,
        queue: &str,
        leases: Vec<Lease>,
        lease_ms: u64,
    ) -> Result<HeartbeatOutcome> {
        calls::heartbeat(self, queue, leases, lease_ms).await
    }

    async fn reap(&self, queue: &str, dead_ttl_ms: u64) -> Result<ReapOutcome> {
        calls::reap(self, queue, dead_ttl_ms).await
    }

    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        let k = QueueKeys::new(queue)?;
        let hash: HashMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
            .arg(k.job(id))
            .query_async(&mut self.con())
            .await?;
        parse_job(queue, id, hash)
    }

    async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome> {
        calls::cancel(self, queue, id).await
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let k = QueueKeys::new(queue)?;
        let mut pipe = ::redis::pipe();
        pipe.zcard(k.scheduled())
            .zcard(k.ready())
            .zcard(k.active())
            .zcard(k.dead());
        pipe.hget(k.stats(), "succeeded").hget(k.stats(), "failed");
        type Reply = (u64, u64, u64, u64, Option<u64>, Option<u64>);
        let (scheduled, queued, running, dead, ok, failed): Reply =
            pipe.query_async(&mut self.con()).await?;
        Ok(QueueCounts {
            scheduled,
            queued,
            running,
            dead,
            succeeded_total: ok.unwrap_or(0),
            failed_total: failed.unwrap_or(0),
        })
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(keys::QUEUES)
            .query_async(&mut self.con())
            .await?;
        names.sort();
        Ok(names)
    }

    async fn dead_ids(&self, queue: &str, limit: usize) -> Result<Vec<String>> {
        self.list_ids(queue, JobSet::Dead, 0, limit).await
    }

    async fn job_ids(
        &self,
        queue: &str,
        set: JobSet,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>> {
        self.list_ids(queue, set, offset, count).await
    }

    async fn jobs(&self, queue: &str, ids: &[String]) -> Result<Vec<Option<JobInfo>>> {
        self.records(queue, ids).await
    }

    async fn retry_dead(&self, queue: &str, ids: Option<Vec<String>>) -> Result<u64> {
        calls::retry_dead(self, queue, ids).await
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        calls::purge(self, queue).await
    }

    async fn register_worker(&self, worker: &WorkerInfo, ttl_ms: u64) -> Result<()> {
        let now = self.now_ms().await?;
        let mut pipe = ::redis::pipe();
        pipe.zadd(keys::WORKERS, &worker.id, now).ignore();
        let info_key = keys::worker(&worker.id);
        if ttl_ms > 0 {
            pipe.pset_ex(info_key, &worker.info, ttl_ms).ignore();
        } else {
            pipe.set(info_key, &worker.info).ignore();
        }
        pipe.query_async::<()>(&mut self.con()).await?;
        Ok(())
    }

    async fn unregister_worker(&self, id: &str) -> Result<()> {
        let mut pipe = ::redis::pipe();
        pipe.zrem(keys::WORKERS, id)
            .ignore()
            .del(keys::worker(id))
            .ignore();
        pipe.query_async::<()>(&mut self.con()).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let seen: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
            .arg(keys::WORKERS)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.con())
            .await?;
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for (id, _) in &seen {
            pipe.get(keys::worker(id));
        }
        let infos: Vec<Option<String>> = pipe.query_async(&mut self.con()).await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for ((id, last_seen), info) in seen.into_iter().zip(infos) {
            match info {
                Some(info) => live.push(WorkerInfo {
                    id,
                    info,
                    last_seen_ms: last_seen as u64,
                }),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // The info key expired: the worker stopped heartbeating. Forget it.
            ::redis::cmd("ZREM")
                .arg(keys::WORKERS)
                .arg(&gone)
                .query_async::<()>(&mut self.con())
                .await?;
        }
        Ok(live)
    }

    async fn server_check(&self) -> Result<Vec<(String, String)>> {
        let info: String = ::redis::cmd("INFO")
            .arg("server")
            .arg("memory")
            .arg("persistence")
            .query_async(&mut self.con())
            .await?;
        let wanted = [
            "redis_version",
            "run_id",
            "maxmemory_policy",
            "aof_enabled",
            "loading",
        ];
        let mut out: Vec<(String, String)> = info
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // Managed services may disable CONFIG: then the RDB schedule is simply not reported.
        let save: ::redis::RedisResult<Vec<String>> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async(&mut self.con())
            .await;
        if let Ok(pair) = save {
            if let Some(v) = pair.get(1) {
                out.push(("save".to_owned(), v.clone()));
            }
        }
        // The epoch marker: created once, persistent. If it changes, Redis lost its data.
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let (epoch,): (String,) = ::redis::pipe()
            .cmd("SET")
            .arg(keys::EPOCH)
            .arg(&fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(keys::EPOCH)
            .query_async(&mut self.con())
            .await?;
        out.push(("epoch".to_owned(), epoch));
        Ok(out)
    }

    async fn now_ms(&self) -> Result<u64> {
        let (secs, micros): (u64, u64) = ::redis::cmd("TIME").query_async(&mut self.con()).await?;
        Ok(secs * 1000 + micros / 1000)
    }
}
