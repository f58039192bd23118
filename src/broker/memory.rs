//! In-process broker for `memory://` URLs, with the same job semantics as the Redis broker
//! (`docs/architecture.md`), so test suites run without a server.
//!
//! All state sits behind one `std::sync::Mutex` that is never held across an `.await`; the only
//! awaiting operation, [`Broker::wait`], sleeps on a per-queue `tokio::sync::Notify`.

mod ops;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::futures::OwnedNotified;

use self::store::QueueState;
use super::{
    Ack, Broker, CancelOutcome, Enqueued, Fail, FailOutcome, FetchOutcome, HeartbeatOutcome,
    JobInfo, JobSet, Lease, NewJob, QueueCounts, ReapOutcome, WorkerInfo,
};
use crate::errors::Result;

/// Everything one broker instance holds.
#[derive(Default)]
struct Store {
    queues: HashMap<String, QueueState>,
    /// Queues that have been enqueued to (other calls may create state without registering).
    registered: BTreeSet<String>,
    /// Worker registrations and when each expires.
    workers: HashMap<String, (WorkerInfo, u64)>,
}

impl Store {
    fn queue(&mut self, name: &str) -> &mut QueueState {
        self.queues
            .entry(name.to_string())
            .or_insert_with(|| QueueState::new(name))
    }
}

/// The `memory://` broker. Instances are shared per name through [`MemoryBroker::named`].
#[derive(Default)]
pub struct MemoryBroker {
    state: Mutex<Store>,
    /// Added to the system clock; lets tests move time forward without sleeping.
    skew_ms: AtomicU64,
}

/// Process-wide instances by name. Strong references on purpose: like a Redis server, a named
/// broker keeps its jobs even while no client holds it (an `App` may enqueue, drop its handle,
/// and a worker started later must still find the jobs).
fn registry() -> &'static Mutex<HashMap<String, Arc<MemoryBroker>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<MemoryBroker>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
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
        let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
        registry.entry(name.to_string()).or_default().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic elsewhere must not wedge every later call; the state itself stays consistent
        // because each operation finishes its unlink/link pairs before returning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Broker time: the system clock in unix ms.
    fn clock(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        system.saturating_add(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Move this broker's clock forward (tests only).
    #[cfg(test)]
    fn advance(&self, ms: u64) {
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Run `f` on the queue's state, after dropping what has expired.
    fn with_queue<T>(&self, queue: &str, f: impl FnOnce(&mut QueueState, u64) -> T) -> T {
        let mut store = self.lock();
        let now = self.clock();
        let q = store.queue(queue);
        q.expire(now);
        f(q, now)
    }

    /// Like `with_queue`, then wake every waiter if jobs are ready (so idle workers pick up the
    /// rest of a batch one fetch did not take) or if a job now falls due earlier than before
    /// (a sleeping waiter computed its sleep from the old earliest due time).
    fn with_queue_waking<T>(&self, queue: &str, f: impl FnOnce(&mut QueueState, u64) -> T) -> T {
        let (out, wake) = self.with_queue(queue, |q, now| {
            let due_before = q.next_due_in(now);
            let out = f(q, now);
            let sooner = match (due_before, q.next_due_in(now)) {
                (Some(before), Some(after)) => after < before,
                (None, after) => after.is_some(),
                (Some(_), None) => false,
            };
            let wake = sooner || !q.ready.is_empty();
            (out, wake.then(|| q.notify.clone()))
        });
        if let Some(notify) = wake {
            notify.notify_waiters();
        }
        out
    }

    /// First half of `wait`: create the waiter *before* looking at the state (a `Notified`
    /// receives `notify_waiters` from its creation on, even before it is polled). A wake-up sent
    /// after the look therefore reaches the waiter, and anything that happened before the look
    /// is visible in the state, so work arriving between a worker's empty fetch and its `wait`
    /// is never slept through. `None` when something is ready or due (no need to sleep).
    fn arm(&self, queue: &str, timeout_ms: u64) -> Option<(Pin<Box<OwnedNotified>>, u64)> {
        let notify = self.with_queue(queue, |q, _| q.notify.clone());
        let mut waiter = Box::pin(notify.notified_owned());
        waiter.as_mut().enable();
        let sleep_ms = self.with_queue(queue, |q, now| {
            if !q.ready.is_empty() {
                return 0;
            }
            q.next_due_in(now)
                .map_or(timeout_ms, |due| due.min(timeout_ms))
        });
        (sleep_ms > 0).then_some((waiter, sleep_ms))
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.lock().registered.insert(queue.to_string());
        Ok(self.with_queue_waking(queue, |q, now| {
            jobs.into_iter().map(|job| q.enqueue(job, now)).collect()
        }))
    }

    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease_ms: u64,
        worker: &str,
    ) -> Result<FetchOutcome> {
        Ok(self.with_queue_waking(queue, |q, now| q.fetch(max, lease_ms, worker, now)))
    }

    async fn wait(&self, queue: &str, timeout_ms: u64) -> Result<()> {
        if let Some((waiter, sleep_ms)) = self.arm(queue, timeout_ms) {
            // Timing out is the normal idle outcome, not an error.
            let _ = tokio::time::timeout(Duration::from_millis(sleep_ms), waiter).await;
        }
        Ok(())
    }

    async fn ack(&self, queue: &str, acks: Vec<Ack>) -> Result<Vec<bool>> {
        Ok(self.with_queue(queue, |q, now| {
            acks.into_iter().map(|a| q.ack(a, now)).collect()
        }))
    }

    async fn fail(&self, queue: &str, fails: Vec<Fail>) -> Result<Vec<FailOutcome>> {
        Ok(self.with_queue_waking(queue, |q, now| {
            fails.into_iter().map(|f| q.fail(f, now)).collect()
        }))
    }

    async fn release(&self, queue: &str, leases: Vec<Lease>) -> Result<Vec<bool>> {
        Ok(self.with_queue_waking(queue, |q, _| leases.iter().map(|l| q.release(l)).collect()))
    }

    async fn heartbeat(
        &self,
        queue: &str,
        leases: Vec<Lease>,
        lease_ms: u64,
    ) -> Result<HeartbeatOutcome> {
        Ok(self.with_queue(queue, |q, now| q.heartbeat(leases, lease_ms, now)))
    }

    async fn reap(&self, queue: &str, dead_ttl_ms: u64) -> Result<ReapOutcome> {
        Ok(self.with_queue_waking(queue, |q, now| q.reap(dead_ttl_ms, now)))
    }

    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        Ok(self.with_queue(queue, |q, _| q.jobs.get(id).map(|r| r.info.clone())))
    }

    async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome> {
        Ok(self.with_queue(queue, |q, now| q.cancel(id, now)))
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        Ok(self.with_queue(queue, |q, _| q.counts()))
    }

    async fn queues(&self) -> Result<Vec<String>> {
        Ok(self.lock().registered.iter().cloned().collect())
    }

    async fn dead_ids(&self, queue: &str, limit: usize) -> Result<Vec<String>> {
        Ok(self.with_queue(queue, |q, _| q.dead_ids(limit)))
    }

    async fn job_ids(
        &self,
        queue: &str,
        set: JobSet,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>> {
        Ok(self.with_queue(queue, |q, _| q.job_ids(set, offset, count)))
    }

    async fn jobs(&self, queue: &str, ids: &[String]) -> Result<Vec<Option<JobInfo>>> {
        Ok(self.with_queue(queue, |q, _| {
            ids.iter()
                .map(|id| q.jobs.get(id).map(|r| r.info.clone()))
                .collect()
        }))
    }

    async fn retry_dead(&self, queue: &str, ids: Option<Vec<String>>) -> Result<u64> {
        Ok(self.with_queue_waking(queue, |q, _| q.retry_dead(ids)))
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        Ok(self.with_queue(queue, |q, _| q.purge()))
    }

    /// Stores the registration with `last_seen_ms` set to broker time (a worker's clock is never
    /// trusted); it disappears `ttl_ms` later unless registered again.
    async fn register_worker(&self, worker: &WorkerInfo, ttl_ms: u64) -> Result<()> {
        let now = self.clock();
        let info = WorkerInfo {
            last_seen_ms: now,
            ..worker.clone()
        };
        self.lock()
            .workers
            .insert(worker.id.clone(), (info, now.saturating_add(ttl_ms)));
        Ok(())
    }

    async fn unregister_worker(&self, id: &str) -> Result<()> {
        self.lock().workers.remove(id);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let now = self.clock();
        let mut store = self.lock();
        store.workers.retain(|_, (_, expires)| *expires > now);
        let mut list: Vec<WorkerInfo> = store.workers.values().map(|(w, _)| w.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    async fn server_check(&self) -> Result<Vec<(String, String)>> {
        // In-process: nothing to evict, nothing to persist.
        Ok(Vec::new())
    }

    async fn now_ms(&self) -> Result<u64> {
        Ok(self.clock())
    }
}
