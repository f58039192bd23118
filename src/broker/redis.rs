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

use super::keys::{self, QueueKeys};
use super::scripts::{
    parse_enqueue, parse_fetch, parse_job, parse_pair, parse_triple, protocol, value_i64, Call,
    ItemError, ScriptId,
};
use super::watchdog::{manager_config, spawn_watchdog, Watched, CONNECT_TIMEOUT};
use super::*;
use tokio_util::sync::CancellationToken;

mod listing;

/// Most jobs per enqueue script call: the script unpacks two set entries per job, and Lua's
/// `unpack` stops at about 8,000 values.
const ENQUEUE_CHUNK: usize = 1000;
/// How many jobs a looping maintenance call (purge, retry all) handles per script run.
const CHUNK: usize = 1000;
/// Extra time a blocking wait gets beyond its own timeout before the client gives up on it and
/// drops the connection: Redis answers a timed-out BLPOP at its next `hz` tick (100 ms).
const WAIT_GRACE: Duration = Duration::from_millis(500);
/// Longest single BLPOP: a longer wait is cut short (a spurious wake-up, which callers allow).
/// With [`WAIT_GRACE`], a silent blocking connection costs at most 2 s, no more than the
/// watchdog takes to find a silent shared connection.
const MAX_BLOCK: Duration = Duration::from_millis(1500);

/// A per-item script reply: status code, or the error the script reported for that item.
type Item = std::result::Result<i64, ItemError>;

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

    /// One enqueue script call for at most `ENQUEUE_CHUNK` jobs.
    async fn enqueue_chunk(&self, k: &QueueKeys, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        let mut call = Call::new(
            ScriptId::Enqueue,
            vec![k.ready(), k.scheduled(), k.seq(), k.wake()],
        );
        call.arg(k.prefix()).arg(jobs.len()).arg(MAX_PRIORITY);
        for job in jobs {
            call.arg(&job.id)
                .arg(job.payload.as_slice())
                .arg(job.priority);
            call.arg(opt(job.delay_ms))
                .arg(opt(job.eta_ms))
                .arg(job.max_attempts);
            call.arg(job.key.as_deref().unwrap_or(""))
                .arg(job.key_ttl_ms);
        }
        parse_enqueue(self.run(&call).await?, jobs.len())
    }

    async fn run(&self, call: &Call) -> Result<Value> {
        Ok(call.invoke(&mut self.con()).await?)
    }

    /// Run a script that answers one integer code per item.
    async fn run_items(&self, call: &Call, expected: usize) -> Result<Vec<Item>> {
        let name = call.id().def().name;
        let codes: Vec<i64> = ::redis::from_redis_value(self.run(call).await?)
            .map_err(|e| protocol(name, e.to_string()))?;
        if codes.len() != expected {
            return Err(protocol(
                name,
                format!("{} replies for {expected} items", codes.len()),
            ));
        }
        codes
            .into_iter()
            .map(|c| ItemError::split(c).ok_or_else(|| protocol(name, format!("unknown code {c}"))))
            .collect()
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

/// Optional number as a script argument: '' stands for None.
fn opt(n: Option<u64>) -> String {
    n.map(|v| v.to_string()).unwrap_or_default()
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain inserts).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_priority(job: &NewJob) -> Result<()> {
    if (0..=MAX_PRIORITY).contains(&job.priority) {
        return Ok(());
    }
    Err(Error::Payload(format!(
        "job {}: priority {} outside 0..={MAX_PRIORITY}",
        job.id, job.priority
    )))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let k = QueueKeys::new(queue)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        jobs.iter().try_for_each(check_priority)?;
        self.remember_queue(queue).await?;
        // Chunks go out together on the multiplexed connection: one round trip in practice,
        // while each script call stays within Lua's unpack limit.
        let calls = jobs
            .chunks(ENQUEUE_CHUNK)
            .map(|chunk| self.enqueue_chunk(&k, chunk));
        let mut out = Vec::with_capacity(jobs.len());
        for part in futures::future::join_all(calls).await {
            out.extend(part?);
        }
        Ok(out)
    }

    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease_ms: u64,
        worker: &str,
    ) -> Result<FetchOutcome> {
        let k = QueueKeys::new(queue)?;
        let mut call = Call::new(
            ScriptId::Fetch,
            vec![k.ready(), k.scheduled(), k.active(), k.wake(), k.dead()],
        );
        call.arg(k.prefix()).arg(max).arg(lease_ms).arg(worker);
        parse_fetch(self.run(&call).await?)
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
        let k = QueueKeys::new(queue)?;
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = Call::new(ScriptId::Ack, vec![k.active(), k.stats()]);
        call.arg(k.prefix());
        for a in &acks {
            call.arg(&a.lease.id)
                .arg(a.lease.token)
                .arg(a.result.as_slice())
                .arg(a.result_ttl_ms);
        }
        let items = self.run_items(&call, acks.len()).await?;
        Ok(items.into_iter().map(|r| r == Ok(1)).collect())
    }

    async fn fail(&self, queue: &str, fails: Vec<Fail>) -> Result<Vec<FailOutcome>> {
        let k = QueueKeys::new(queue)?;
        if fails.is_empty() {
            return Ok(Vec::new());
        }
        let keys = vec![k.active(), k.scheduled(), k.dead(), k.stats(), k.wake()];
        let mut call = Call::new(ScriptId::Fail, keys);
        call.arg(k.prefix());
        for f in &fails {
            call.arg(&f.lease.id)
                .arg(f.lease.token)
                .arg(f.error.as_slice());
            call.arg(opt(f.retry_delay_ms))
                .arg(f.dead_ttl_ms)
                .arg(u8::from(f.cancelled));
        }
        let items = self.run_items(&call, fails.len()).await?;
        items
            .into_iter()
            .map(|r| match r {
                Ok(1) => Ok(FailOutcome::Retrying),
                Ok(2) => Ok(FailOutcome::Dead),
                Ok(3) => Ok(FailOutcome::Cancelled),
                Err(_) => Ok(FailOutcome::Stale),
                Ok(c) => Err(protocol("fail", format!("unknown status {c}"))),
            })
            .collect()
    }

    async fn release(&self, queue: &str, leases: Vec<Lease>) -> Result<Vec<bool>> {
        let k = QueueKeys::new(queue)?;
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let keys = vec![k.active(), k.ready(), k.wake(), k.dead()];
        let mut call = Call::new(ScriptId::Release, keys);
        call.arg(k.prefix());
        for l in &leases {
            call.arg(&l.id).arg(l.token);
        }
        let items = self.run_items(&call, leases.len()).await?;
        // 2: the record was corrupt and went to the dead set; the lease is over all the same.
        Ok(items
            .into_iter()
            .map(|r| matches!(r, Ok(1) | Ok(2)))
            .collect())
    }

    async fn heartbeat(
        &self,
        queue: &str,
        leases: Vec<Lease>,
        lease_ms: u64,
    ) -> Result<HeartbeatOutcome> {
        let k = QueueKeys::new(queue)?;
        let mut out = HeartbeatOutcome::default();
        if leases.is_empty() {
            return Ok(out);
        }
        let mut call = Call::new(ScriptId::Heartbeat, vec![k.active()]);
        call.arg(k.prefix()).arg(lease_ms);
        for l in &leases {
            call.arg(&l.id).arg(l.token);
        }
        let items = self.run_items(&call, leases.len()).await?;
        for (lease, item) in leases.into_iter().zip(items) {
            match item {
                Ok(2) => out.cancel.push(lease.id),
                Ok(0) => out.finished.push(lease.id),
                Ok(_) => {}
                Err(ItemError::MissingJob) => out.gone.push(lease.id),
                Err(ItemError::StaleToken) => out.lost.push(lease.id),
            }
        }
        Ok(out)
    }

    async fn reap(&self, queue: &str, dead_ttl_ms: u64) -> Result<ReapOutcome> {
        let k = QueueKeys::new(queue)?;
        let keys = vec![k.active(), k.ready(), k.scheduled(), k.dead(), k.wake()];
        let mut call = Call::new(ScriptId::Reap, keys);
        call.arg(k.prefix()).arg(dead_ttl_ms).arg(MAX_STALLS);
        let (requeued, dead) = parse_pair(self.run(&call).await?, "reap")?;
        Ok(ReapOutcome { requeued, dead })
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
        let k = QueueKeys::new(queue)?;
        let mut call = Call::new(ScriptId::Cancel, vec![k.ready(), k.scheduled()]);
        call.arg(k.prefix()).arg(id).arg(CANCELLED_TTL_MS);
        let code = value_i64(&self.run(&call).await?, "cancel")?;
        match ItemError::split(code) {
            Some(Ok(1)) => Ok(CancelOutcome::Cancelled),
            Some(Ok(2)) => Ok(CancelOutcome::Requested),
            Some(Ok(3)) => Ok(CancelOutcome::Finished),
            Some(Err(ItemError::MissingJob)) => Ok(CancelOutcome::NotFound),
            _ => Err(protocol("cancel", format!("unknown code {code}"))),
        }
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
        let k = QueueKeys::new(queue)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids = ::redis::cmd("ZRANGE")
            .arg(k.dead())
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut self.con())
            .await?;
        Ok(ids)
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
        let k = QueueKeys::new(queue)?;
        let new_call = || {
            let mut call = Call::new(ScriptId::RetryDead, vec![k.dead(), k.ready(), k.wake()]);
            call.arg(k.prefix()).arg(CHUNK);
            call
        };
        if let Some(ids) = ids {
            let mut moved = 0;
            for chunk in ids.chunks(CHUNK) {
                let mut call = new_call();
                for id in chunk {
                    call.arg(id);
                }
                moved += parse_triple(self.run(&call).await?, "retry_dead")?.0;
            }
            return Ok(moved);
        }
        let mut moved = 0;
        loop {
            let (n, processed, kept) = parse_triple(self.run(&new_call()).await?, "retry_dead")?;
            moved += n;
            // Corrupt records stay at the head of the dead set: a call that kept every entry
            // it looked at would see the same ones again.
            if processed < CHUNK as u64 || kept == processed {
                return Ok(moved);
            }
        }
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let k = QueueKeys::new(queue)?;
        let mut call = Call::new(ScriptId::Purge, vec![k.ready(), k.scheduled(), k.dead()]);
        call.arg(k.prefix()).arg(CHUNK);
        let mut total = 0;
        loop {
            let (deleted, remaining) = parse_pair(self.run(&call).await?, "purge")?;
            total += deleted;
            if deleted == 0 || remaining == 0 {
                return Ok(total);
            }
        }
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
