//! The per-process engine: one per broker connection, shared by every consumer of the process.
//!
//! It owns what must not multiply with workers × queues:
//! - **waiting** ([`waiter`]): one waiter per broker node blocks on the wake lists of every queue
//!   that has an idle consumer, in one `BLPOP`, so an idle worker on 20 queues holds one
//!   blocking connection (plus the shared one), not 20;
//! - **periodic ticks** ([`Engine::every`]): the home of work that runs on a timer. Reaping is
//!   the first: each consumer registers a reap tick, and `reap.lua` takes a short `SET NX PX`
//!   claim, so the reapers of N workers reap a queue about once per period between them. The
//!   scheduler, an outbox relay and metrics snapshots belong here too;
//! - **counters** ([`Counters`], [`Engine::queue_stats`]): what the engine did, and per queue what
//!   its consumers did, summed over every consumer the process ever ran on it.
//!
//! The engine runs on tokio and never touches Python. It stops (its tasks end) when the last
//! handle is dropped.

mod waiter;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::consumer::Stats;
use crate::errors::Result;
use waiter::Waiter;

/// What the engine did since it started (read with [`Engine::counters`]).
#[derive(Debug, Default)]
pub struct Counters {
    /// Waits consumers started (each after an empty fetch).
    pub waits: AtomicU64,
    /// Wake tokens a waiter delivered to a waiting consumer.
    pub wakeups: AtomicU64,
    /// Blocking waits ended early because the set of queues to wait on changed.
    pub interrupts: AtomicU64,
    /// Blocking waits that failed (the broker is unreachable); retried with backoff.
    pub wait_errors: AtomicU64,
    /// Reap calls that ran, and those skipped because another reaper held the queue's claim.
    pub reaps: AtomicU64,
    pub reaps_skipped: AtomicU64,
    /// Expired leases the reapers put back to ready, and those they dead-lettered.
    pub requeued: AtomicU64,
    pub reaped_dead: AtomicU64,
    /// Periodic ticks that returned an error.
    pub tick_errors: AtomicU64,
}

impl Counters {
    /// Every counter by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("waits", get(&self.waits)),
            ("wakeups", get(&self.wakeups)),
            ("interrupts", get(&self.interrupts)),
            ("wait_errors", get(&self.wait_errors)),
            ("reaps", get(&self.reaps)),
            ("reaps_skipped", get(&self.reaps_skipped)),
            ("requeued", get(&self.requeued)),
            ("reaped_dead", get(&self.reaped_dead)),
            ("tick_errors", get(&self.tick_errors)),
        ]
    }
}

struct Inner {
    broker: Arc<dyn Broker>,
    /// Unique per engine: names it in reap claims.
    id: String,
    /// One waiter per broker node, started on first use.
    waiters: Mutex<HashMap<String, Arc<Waiter>>>,
    queue_stats: Mutex<HashMap<String, Arc<Stats>>>,
    counters: Arc<Counters>,
    /// Prometheus counters, once enabled (see [`Engine::enable_metrics`]).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// Cancelled when the last handle goes: every waiter and tick ends.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A handle on the engine; cheap to clone. Create it inside the tokio runtime.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A periodic tick registered with [`Engine::every`]; dropping it stops the tick.
pub struct Tick {
    cancel: CancellationToken,
}

impl Drop for Tick {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Engine {
    pub fn new(broker: Arc<dyn Broker>) -> Engine {
        let inner = Inner {
            broker,
            id: format!("engine-{}", uuid::Uuid::new_v4().simple()),
            waiters: Mutex::default(),
            queue_stats: Mutex::default(),
            counters: Arc::default(),
            metrics: std::sync::OnceLock::new(),
            stop: CancellationToken::new(),
        };
        Engine {
            inner: Arc::new(inner),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Start counting Prometheus metrics (idempotent). Consumers started from now on count;
    /// so a worker enables them before it starts its consumers.
    pub fn enable_metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.inner.metrics.get_or_init(Arc::default).clone()
    }

    /// The metrics, if enabled.
    pub fn metrics(&self) -> Option<Arc<crate::metrics::Metrics>> {
        self.inner.metrics.get().cloned()
    }

    /// This engine's id, as written into the claims it takes.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The totals of every consumer this process ran on `queue` (shared; consumers add to it).
    pub fn queue_stats(&self, queue: &str) -> Arc<Stats> {
        lock(&self.inner.queue_stats)
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Per-queue totals, by queue name.
    pub fn all_queue_stats(&self) -> Vec<(String, Arc<Stats>)> {
        let map = lock(&self.inner.queue_stats);
        let mut all: Vec<_> = map.iter().map(|(q, s)| (q.clone(), s.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Sleep until `queue` may have work: its wake list got a token (new, due, released or
    /// retried jobs). Spurious returns are allowed (the caller fetches next); the caller bounds
    /// the sleep with its own timers. Cancel-safe: dropping the future withdraws the wait.
    pub async fn wait(&self, queue: &str) -> Result<()> {
        let node = self.inner.broker.node_of(queue)?;
        let waiter = self.waiter(node);
        self.inner.counters.waits.fetch_add(1, Ordering::Relaxed);
        let (woken, _want) = waiter.want(queue);
        woken.await;
        Ok(())
    }

    fn waiter(&self, node: String) -> Arc<Waiter> {
        let mut waiters = lock(&self.inner.waiters);
        waiters
            .entry(node)
            .or_insert_with(|| {
                let w = Arc::new(Waiter::new(
                    self.inner.broker.clone(),
                    self.inner.counters.clone(),
                ));
                tokio::spawn(w.clone().run(self.inner.stop.clone()));
                w
            })
            .clone()
    }

    /// Run `tick` every `period` (the first run one period from now) until the returned [`Tick`]
    /// is dropped or the engine stops. A tick that fails is counted in `tick_errors` and runs
    /// again at its next period; the tick reports its own errors where it needs to.
    pub fn every<F, Fut>(&self, period: Duration, mut tick: F) -> Tick
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let cancel = self.inner.stop.child_token();
        let counters = self.inner.counters.clone();
        let stopped = cancel.clone();
        let period = period.max(Duration::from_millis(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stopped.cancelled() => return,
                }
                let run = tick();
                let res = tokio::select! {
                    res = run => res,
                    _ = stopped.cancelled() => return,
                };
                if res.is_err() {
                    counters.tick_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Tick { cancel }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain inserts and removals: a panic while holding the lock leaves nothing half done.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
