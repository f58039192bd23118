//! Redis broker: every job state change is one Lua script (see `src/lua`), keys come from
//! [`super::keys`], scripts are run through [`super::scripts`], and connections come from a
//! [`Topology`] (see [`topology`]: one primary, fixed or named by sentinels; and [`cluster`]).
//!
//! Normal commands share one multiplexed, auto-reconnecting connection per node. On a cluster,
//! `wait_any` listens to sharded pub/sub (see [`shard_wakes`]); elsewhere it blocks in `BLPOP`, which would stall every request queued behind it on a multiplexed
//! connection, so waits use dedicated connections instead: one per node for a whole process,
//! since the engine (`crate::engine`) waits on every queue of a node in one `BLPOP` over their
//! wake lists. When the set of queues to wait on changes, the engine interrupts the wait, and
//! the broker ends the `BLPOP` with `CLIENT UNBLOCK`, so the connection stays usable and a wake
//! token popped at that moment is still delivered.
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
use ::redis::{RedisResult, Value};
use async_trait::async_trait;

use super::calls::{self, ScriptRunner};
use super::keys::{self, QueueKeys};
use super::scripts::{parse_job, Call, ScriptId};
use super::watchdog::RESPONSE_TIMEOUT;
use super::*;
use tokio_util::sync::CancellationToken;

mod cluster;
mod done_feed;
mod listing;
mod shard_wakes;
pub(crate) mod topology;

pub(crate) use topology::check_url;

use done_feed::DoneFeed;
use shard_wakes::ShardWakes;
use tokio::sync::oneshot;
use topology::{Shared, SingleNode, Topology};

/// Extra time a blocking wait gets beyond its own timeout before the client gives up on it and
/// drops the connection: Redis answers a timed-out BLPOP at its next `hz` tick (100 ms).
const WAIT_GRACE: Duration = Duration::from_millis(500);
/// Longest single BLPOP: a longer wait is cut short (a spurious wake-up, which callers allow).
/// With [`WAIT_GRACE`], a silent blocking connection costs at most 2 s, no more than the
/// watchdog takes to find a silent shared connection.
const MAX_BLOCK: Duration = Duration::from_millis(1500);
/// How long an interrupted `BLPOP` may take to answer after each `CLIENT UNBLOCK`, and how many
/// times it is sent: an unblock that reaches the server before the `BLPOP` it means to end finds
/// nothing to unblock, so it is repeated; after the last, the connection is dropped instead.
const UNBLOCK_WAIT: Duration = Duration::from_millis(50);
const UNBLOCK_TRIES: usize = 3;

/// An idle dedicated connection for blocking waits.
struct Blocking {
    con: MultiplexedConnection,
    /// Its `CLIENT ID`, for `CLIENT UNBLOCK`.
    id: i64,
    /// The dead signal of the shared connection of its time: once that fired, this connection
    /// is suspect and not reused.
    dead: CancellationToken,
}

/// A [`Broker`] backed by Redis (or Valkey).
pub struct RedisBroker {
    topo: Arc<dyn Topology>,
    /// Job-end notifications, on a pub/sub connection of their own.
    done: DoneFeed,
    /// Idle dedicated connections for blocking waits, per node.
    waiters: Mutex<HashMap<String, Vec<Blocking>>>,
    /// On a cluster, waits listen to sharded pub/sub instead of blocking in `BLPOP`.
    shard_wakes: Option<ShardWakes>,
    /// Queues already added to the global queue set by this instance.
    known_queues: Mutex<HashSet<String>>,
    /// Replicas an enqueue waits for, with the connections such enqueues are written on.
    replication: Option<Replicated>,
}

/// Enqueues confirmed by replicas: `WAIT` counts the replicas that have every write made on
/// *its own* connection, so each such enqueue takes a dedicated connection for its script and
/// its `WAIT` (on the shared one, the `WAIT` would hold up every request queued behind it, for
/// as long as a lagging replica takes).
struct Replicated {
    want: Replication,
    /// Idle dedicated connections per node, each with the dead signal of the shared
    /// connection of its time (after a failover, or once found silent, they are not reused).
    idle: Mutex<HashMap<String, Vec<(MultiplexedConnection, CancellationToken)>>>,
}

impl RedisBroker {
    /// Connect to `redis://`, `rediss://` (TLS), `valkey://` or `valkeys://` URLs, with optional
    /// `user:password@` and `/db`.
    pub async fn open(url: &str) -> Result<Arc<dyn Broker>> {
        Self::open_with(url, None).await
    }

    /// [`RedisBroker::open`], with every enqueue confirmed by `replication` replicas.
    pub async fn open_with(url: &str, replication: Option<Replication>) -> Result<Arc<dyn Broker>> {
        let mut broker = Self::connect(url).await?;
        broker.replication = replication.map(|want| Replicated {
            want,
            idle: Mutex::default(),
        });
        Ok(Arc::new(broker))
    }

    /// Like [`RedisBroker::open`], returning the concrete type.
    pub async fn connect(url: &str) -> Result<RedisBroker> {
        let (topo, first, shard_wakes): (Arc<dyn Topology>, _, _) = if cluster::is_cluster_url(url)
        {
            let (topo, first) = cluster::ClusterNodes::connect(url).await?;
            let wakes = topo.shard_wakes()?;
            (Arc::new(topo), first, Some(wakes))
        } else {
            let (topo, first) = SingleNode::connect(url).await?;
            (Arc::new(topo), first, None)
        };
        let broker = RedisBroker {
            done: DoneFeed::start(topo.clone()),
            topo,
            shard_wakes,
            waiters: Mutex::default(),
            known_queues: Mutex::new(HashSet::new()),
            replication: None,
        };
        broker.pool(keys::QUEUES, first).await?;
        Ok(broker)
    }

    /// The shared connection for keys that belong to no queue (the `{global}` slot).
    fn con(&self) -> Shared {
        self.topo.shared(keys::QUEUES)
    }

    /// The shared connection serving `key`.
    fn con_for(&self, key: &str) -> Shared {
        self.topo.shared(key)
    }

    /// Put a fresh blocking connection to `key`'s node into the pool (learning its client id).
    async fn pool(&self, key: &str, mut con: MultiplexedConnection) -> Result<()> {
        let id: i64 = ::redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut con)
            .await?;
        let dead = self.con_for(key).dead_signal();
        let node = self.topo.node_of(key);
        lock(&self.waiters)
            .entry(node)
            .or_default()
            .push(Blocking { con, id, dead });
        Ok(())
    }

    /// A dedicated connection to `node` for one blocking command: pooled if one is idle and not
    /// suspect, else a new one. Also says whether it came from the pool.
    async fn blocking_con(&self, node: &str, key: &str) -> Result<(Blocking, bool)> {
        loop {
            let idle = lock(&self.waiters).get_mut(node).and_then(Vec::pop);
            match idle {
                Some(b) if b.dead.is_cancelled() => continue,
                Some(b) => return Ok((b, true)),
                None => break,
            }
        }
        let mut con = self.topo.dial_blocking(node).await?;
        let id: i64 = ::redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut con)
            .await?;
        let dead = self.con_for(key).dead_signal();
        Ok((Blocking { con, id, dead }, false))
    }

    /// One `BLPOP` over `wakes`; `interrupt` ends it early through `CLIENT UNBLOCK`. Returns the
    /// key that held a token (if any), and the connection if it is still usable.
    async fn blpop(
        &self,
        b: Blocking,
        wakes: &[String],
        block: Duration,
        interrupt: &CancellationToken,
    ) -> (RedisResult<Option<String>>, Option<Blocking>) {
        let mut cmd = ::redis::cmd("BLPOP");
        cmd.arg(wakes).arg(block.as_secs_f64());
        let mut con = b.con.clone();
        let reply = cmd.query_async::<Option<(String, Value)>>(&mut con);
        tokio::pin!(reply);
        let res = tokio::select! {
            res = &mut reply => res,
            _ = interrupt.cancelled() => {
                let mut ended = None;
                let mut unblock = ::redis::cmd("CLIENT");
                unblock.arg("UNBLOCK").arg(b.id);
                let node = self.topo.node_of(&wakes[0]);
                for _ in 0..UNBLOCK_TRIES {
                    // On the blocked connection's own node (a cluster has several).
                    let sent = self.topo.on_node(&node, &unblock).await;
                    if sent.is_err() {
                        break; // not allowed (ACL), or the shared connection is down
                    }
                    if let Ok(res) = tokio::time::timeout(UNBLOCK_WAIT, &mut reply).await {
                        ended = Some(res);
                        break;
                    }
                }
                match ended {
                    Some(res) => res,
                    // Still blocked: drop the connection, the server ends the BLPOP with it.
                    None => return (Ok(None), None),
                }
            }
        };
        match res {
            Ok(popped) => (Ok(popped.map(|(key, _)| key)), Some(b)),
            Err(e) => (Err(e), None),
        }
    }

    /// Take a connection (pooled or new) and BLPOP, retrying once on a fresh connection when a
    /// pooled one turns out dead; a usable connection goes back to the pool.
    async fn wait_blocking(
        &self,
        wakes: &[String],
        block: Duration,
        interrupt: &CancellationToken,
    ) -> Result<Option<String>> {
        let node = self.topo.node_of(&wakes[0]);
        let (b, pooled) = self.blocking_con(&node, &wakes[0]).await?;
        let (mut result, mut back) = self.blpop(b, wakes, block, interrupt).await;
        if pooled
            && result
                .as_ref()
                .is_err_and(|e| e.is_unrecoverable_error() || e.is_io_error())
        {
            // An idle pooled connection may have died with a server restart: retry on a fresh one.
            let (b, _) = self.blocking_con(&node, &wakes[0]).await?;
            (result, back) = self.blpop(b, wakes, block, interrupt).await;
        }
        if let Some(b) = back {
            lock(&self.waiters).entry(node).or_default().push(b);
        }
        if result.is_err() {
            self.topo.stale(); // MOVED, or the node went away: where do the keys live now?
        }
        Ok(result?)
    }
}

impl RedisBroker {
    /// Run a write `call` on a dedicated connection, then `WAIT` for the replicas asked for.
    async fn run_replicated(&self, call: &Call, rep: &Replicated) -> Result<Value> {
        let key = call.slot_key();
        let node = self.topo.node_of(key);
        let idle = loop {
            match lock(&rep.idle).get_mut(&node).and_then(Vec::pop) {
                Some((_, dead)) if dead.is_cancelled() => continue,
                other => break other,
            }
        };
        let (mut con, dead) = match idle {
            Some(pair) => pair,
            None => {
                let dead = self.con_for(key).dead_signal();
                (self.topo.dial_blocking(&node).await?, dead)
            }
        };
        let Replication {
            replicas,
            timeout_ms,
        } = rep.want;
        let write = async {
            let reply = call.invoke(&mut con).await?;
            let acked: i64 = ::redis::cmd("WAIT")
                .arg(replicas)
                .arg(timeout_ms)
                .query_async(&mut con)
                .await?;
            Ok::<_, ::redis::RedisError>((reply, acked))
        };
        // The dedicated connection has no response timeout of its own (it is dialed like a
        // blocking one): the shared connection's, plus the WAIT's own.
        let limit = RESPONSE_TIMEOUT + Duration::from_millis(timeout_ms);
        let (reply, acked) = match tokio::time::timeout(limit, write).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.topo.stale(); // MOVED (a slot migrated), or the node went away
                return Err(e.into());
            }
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply in time");
                return Err(::redis::RedisError::from(e).into());
            }
        };
        lock(&rep.idle).entry(node).or_default().push((con, dead));
        if acked < i64::from(replicas) {
            return Err(Error::NotReplicated {
                acked,
                wanted: replicas,
                timeout_ms,
            });
        }
        Ok(reply)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain inserts).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl ScriptRunner for RedisBroker {
    async fn run(&self, call: &Call) -> Result<Value> {
        if let Some(rep) = &self.replication {
            if matches!(call.id(), ScriptId::Enqueue | ScriptId::Flow) {
                return self.run_replicated(call, rep).await;
            }
        }
        Ok(call.invoke(&mut self.con_for(call.slot_key())).await?)
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

calls::scripted_broker!(RedisBroker {

    fn node_of(&self, queue: &str) -> Result<String> {
        let node = self.topo.node_of(&QueueKeys::new(queue)?.wake());
        if self.shard_wakes.is_some() {
            // One subscription per node hears every slot there: group waits by node alone.
            return Ok(node.split_once('#').map_or(node.clone(), |(n, _)| n.to_owned()));
        }
        Ok(node)
    }

    async fn watch_end(&self, queue: &str, id: &str) -> Result<oneshot::Receiver<()>> {
        self.done.watch(&QueueKeys::new(queue)?.done(), id).await
    }

    async fn watch_cancels(
        &self,
        queue: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.done.listen(&QueueKeys::new(queue)?.cancels()).await
    }

    async fn wait_any(
        &self,
        queues: &[String],
        timeout_ms: u64,
        interrupt: &CancellationToken,
    ) -> Result<Vec<String>> {
        let wakes = queues
            .iter()
            .map(|q| Ok(QueueKeys::new(q)?.wake()))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = wakes.first() else {
            return Ok(Vec::new());
        };
        if interrupt.is_cancelled() {
            return Ok(Vec::new()); // nothing sent, so nothing to unblock
        }
        if let Some(shard) = &self.shard_wakes {
            let timeout = Duration::from_millis(timeout_ms);
            let woken = shard.wait_any(&wakes, timeout, interrupt).await?;
            return Ok(woken.into_iter().map(|i| queues[i].clone()).collect());
        }
        if timeout_ms == 0 {
            // BLPOP 0 would block forever; a zero timeout only consumes pending wake-ups.
            let mut pipe = ::redis::pipe();
            for wake in &wakes {
                pipe.cmd("LPOP").arg(wake);
            }
            let popped: Vec<Option<String>> = pipe.query_async(&mut self.con_for(first)).await?;
            let woken = queues.iter().zip(popped).filter(|(_, p)| p.is_some());
            return Ok(woken.map(|(q, _)| q.clone()).collect());
        }
        let block = Duration::from_millis(timeout_ms).min(MAX_BLOCK);
        let dead = self.con_for(first).dead_signal();
        if dead.is_cancelled() {
            // Found silent and not yet replaced: an error, so the caller backs off instead of
            // dialing a blocking connection into the same silence again and again.
            return Err(super::watchdog::not_sent().into());
        }
        // One deadline over dialing and the BLPOP: past it, or once the shared connection is
        // found silent, the dedicated connection is suspect and dropped (with a dial in
        // progress, if any); waking early is fine.
        let waited = tokio::time::timeout(
            block + WAIT_GRACE,
            self.wait_blocking(&wakes, block, interrupt),
        );
        let popped = tokio::select! {
            res = waited => res.unwrap_or(Ok(None))?,
            _ = dead.cancelled() => None,
        };
        let woken = popped.and_then(|key| wakes.iter().position(|w| *w == key));
        Ok(woken.map(|i| queues[i].clone()).into_iter().collect())
    }

    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        let k = QueueKeys::new(queue)?;
        let hash: HashMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
            .arg(k.job(id))
            .query_async(&mut self.con_for(k.prefix()))
            .await?;
        parse_job(queue, id, hash)
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let k = QueueKeys::new(queue)?;
        let mut pipe = ::redis::pipe();
        for cmd in calls::counts_cmds(queue)? {
            pipe.add_command(cmd);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con_for(k.prefix())).await?;
        calls::parse_counts(replies)
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
        // The node that holds the global keys (and the epoch marker below) speaks for the
        // deployment: on a cluster, the others are configured alike or misconfigured alike.
        let node = self.topo.node_of(keys::EPOCH);
        let mut cmd = ::redis::cmd("INFO");
        cmd.arg("server").arg("memory").arg("persistence");
        let info: String = ::redis::from_redis_value(self.topo.on_node(&node, &cmd).await?)
            .map_err(::redis::RedisError::from)?;
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
        let mut cmd = ::redis::cmd("CONFIG");
        cmd.arg("GET").arg("save");
        let save = match self.topo.on_node(&node, &cmd).await {
            Ok(v) => ::redis::from_redis_value::<Vec<String>>(v).ok(),
            Err(_) => None,
        };
        if let Some(pair) = save {
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

    async fn watch_events(
        &self,
        queue: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.done.listen(&QueueKeys::new(queue)?.events()).await
    }

});
