//! Races inside the consumer engine, against each broker: a fetch dropped after the broker
//! leased its batch, and heartbeats crossing the outcome flusher. On a 2-thread runtime, so the
//! consumer's own tasks really run alongside the test.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use _core::broker::*;
use _core::consumer::{Consumer, ConsumerConfig, Event, Outcome, Prefetch};
use _core::engine::Engine;
use _core::errors::Result;
use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::contract;
use crate::harness::{consumer_config, new_jobs, Ctx};

contract!(
    multi_thread:
    a_fetch_dropped_after_the_lease_hands_its_batch_back_at_once,
    close_waits_for_a_dropped_fetch_and_hands_its_batch_back,
    finished_jobs_are_never_reported_lost,
    a_real_takeover_is_still_reported_lost,
);

fn config(lease_ms: u64, heartbeat_ms: u64) -> ConsumerConfig {
    ConsumerConfig {
        lease_ms,
        heartbeat_ms,
        ..consumer_config(Prefetch::Off)
    }
}

/// Wraps a real broker; while `hold` is set, a fetch that leased jobs announces it on `leased`
/// and keeps its reply until `reply` gets a permit: the window in which a cancelled fetch used
/// to drop its batch.
struct HeldFetch {
    inner: Arc<dyn Broker>,
    hold: AtomicBool,
    leased: Notify,
    reply: Semaphore,
}

impl HeldFetch {
    fn new(inner: Arc<dyn Broker>) -> Arc<HeldFetch> {
        Arc::new(HeldFetch {
            inner,
            hold: AtomicBool::new(true),
            leased: Notify::new(),
            reply: Semaphore::new(0),
        })
    }
}

#[async_trait]
impl Broker for HeldFetch {
    async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.inner.enqueue(queue, jobs).await
    }
    async fn fetch(&self, q: &str, want: Want, lease: u64, w: &str) -> Result<FetchOutcome> {
        let out = self.inner.fetch(q, want, lease, w).await?;
        if self.hold.load(Ordering::SeqCst) && !out.jobs.is_empty() {
            self.leased.notify_one();
            self.reply.acquire().await.unwrap().forget();
        }
        Ok(out)
    }
    async fn wait_any(
        &self,
        queues: &[String],
        timeout_ms: u64,
        interrupt: &CancellationToken,
    ) -> Result<Vec<String>> {
        self.inner.wait_any(queues, timeout_ms, interrupt).await
    }
    fn node_of(&self, queue: &str) -> Result<String> {
        self.inner.node_of(queue)
    }
    async fn watch_end(&self, q: &str, id: &str) -> Result<tokio::sync::oneshot::Receiver<()>> {
        self.inner.watch_end(q, id).await
    }
    async fn ack(&self, queue: &str, acks: Vec<Ack>) -> Result<Vec<bool>> {
        self.inner.ack(queue, acks).await
    }
    async fn fail(&self, queue: &str, fails: Vec<Fail>) -> Result<Vec<FailOutcome>> {
        self.inner.fail(queue, fails).await
    }
    async fn release(&self, queue: &str, leases: Vec<Lease>) -> Result<Vec<bool>> {
        self.inner.release(queue, leases).await
    }
    async fn snooze(&self, queue: &str, snoozes: Vec<Snooze>) -> Result<Vec<bool>> {
        self.inner.snooze(queue, snoozes).await
    }
    async fn heartbeat(&self, q: &str, leases: Vec<Lease>, ms: u64) -> Result<HeartbeatOutcome> {
        self.inner.heartbeat(q, leases, ms).await
    }
    async fn reap_claimed(&self, q: &str, ttl: u64, claim: &ReapClaim) -> Result<ReapOutcome> {
        self.inner.reap_claimed(q, ttl, claim).await
    }
    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>> {
        self.inner.job(queue, id).await
    }
    async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome> {
        self.inner.cancel(queue, id).await
    }
    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        self.inner.counts(queue).await
    }
    async fn queues(&self) -> Result<Vec<String>> {
        self.inner.queues().await
    }
    async fn dead_ids(&self, queue: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.dead_ids(queue, limit).await
    }
    async fn job_ids(&self, q: &str, s: JobSet, off: usize, n: usize) -> Result<Vec<String>> {
        self.inner.job_ids(q, s, off, n).await
    }
    async fn jobs(&self, queue: &str, ids: &[String]) -> Result<Vec<Option<JobInfo>>> {
        self.inner.jobs(queue, ids).await
    }
    async fn retry_dead(&self, queue: &str, ids: Option<Vec<String>>) -> Result<u64> {
        self.inner.retry_dead(queue, ids).await
    }
    async fn purge(&self, queue: &str) -> Result<u64> {
        self.inner.purge(queue).await
    }
    async fn pause(&self, queue: &str, paused: bool) -> Result<bool> {
        self.inner.pause(queue, paused).await
    }
    async fn delete_job(&self, queue: &str, id: &str) -> Result<DeleteOutcome> {
        self.inner.delete_job(queue, id).await
    }
    async fn register_worker(&self, worker: &WorkerInfo, ttl_ms: u64) -> Result<()> {
        self.inner.register_worker(worker, ttl_ms).await
    }
    async fn unregister_worker(&self, id: &str) -> Result<()> {
        self.inner.unregister_worker(id).await
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.inner.workers().await
    }
    async fn server_check(&self) -> Result<Vec<(String, String)>> {
        self.inner.server_check().await
    }
    async fn now_ms(&self) -> Result<u64> {
        self.inner.now_ms().await
    }
    async fn watch_cancels(&self, q: &str) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.inner.watch_cancels(q).await
    }
    async fn fire(&self, q: &str, fire: Fire) -> Result<FireOutcome> {
        self.inner.fire(q, fire).await
    }
    async fn sync_schedule(&self, q: &str, name: &str, def: &str) -> Result<(u64, bool)> {
        self.inner.sync_schedule(q, name, def).await
    }
    async fn change_schedule(&self, q: &str, name: &str, c: ScheduleChange) -> Result<bool> {
        self.inner.change_schedule(q, name, c).await
    }
    async fn schedules(&self, q: &str) -> Result<Vec<ScheduleState>> {
        self.inner.schedules(q).await
    }
    async fn enqueue_flow(&self, q: &str, members: Vec<FlowMember>) -> Result<Vec<Enqueued>> {
        self.inner.enqueue_flow(q, members).await
    }
    async fn relay(&self, q: &str) -> Result<u64> {
        self.inner.relay(q).await
    }
    async fn batch_add(&self, q: &str, callbacks: &[String], n: u32) -> Result<Option<u32>> {
        self.inner.batch_add(q, callbacks, n).await
    }
    async fn watch_events(&self, q: &str) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.inner.watch_events(q).await
    }
    async fn keep_watch(&self, q: &str, ttl_ms: u64) -> Result<()> {
        self.inner.keep_watch(q, ttl_ms).await
    }
    async fn set_limits(
        &self,
        q: &str,
        op: LimitOp,
        families: Vec<(String, String)>,
    ) -> Result<u64> {
        self.inner.set_limits(q, op, families).await
    }
    async fn limits(&self, q: &str) -> Result<Vec<LimitInfo>> {
        self.inner.limits(q).await
    }
    async fn progress(&self, q: &str, reports: Vec<ProgressReport>) -> Result<Vec<bool>> {
        self.inner.progress(q, reports).await
    }
}

/// Start `consumer.fetch`, wait until the broker has leased the batch, then drop the fetch
/// before its reply arrives (what cancelling the awaiting asyncio task does).
async fn drop_fetch_after_lease(consumer: &Consumer, held: &HeldFetch) {
    let fetch = consumer.fetch(Want::jobs(10));
    tokio::select! {
        jobs = fetch => panic!("the held fetch returned {} jobs", jobs.len()),
        _ = held.leased.notified() => {}
    }
}

async fn states(b: &Arc<dyn Broker>, n: usize) -> Vec<(JobState, u32)> {
    let ids: Vec<String> = new_jobs(n).into_iter().map(|j| j.id).collect();
    let infos = b.jobs("q", &ids).await.unwrap();
    infos
        .into_iter()
        .map(|i| i.map(|i| (i.state, i.attempts)).unwrap())
        .collect()
}

async fn a_fetch_dropped_after_the_lease_hands_its_batch_back_at_once(c: Ctx) {
    {
        let real = c.b.clone();
        real.enqueue("q", new_jobs(3)).await.unwrap();
        let held = HeldFetch::new(real.clone());
        // A 60 s lease and no reaper: only a hand-back can requeue the jobs within the test.
        let consumer = Consumer::start(&Engine::new(held.clone()), config(60_000, 20_000));
        drop_fetch_after_lease(&consumer, &held).await;
        assert_eq!(states(&real, 3).await, vec![(JobState::Running, 1); 3]);
        held.reply.add_permits(1); // the reply arrives after its fetch was dropped
        let deadline = Instant::now() + Duration::from_secs(10); // generous: a busy host
        while states(&real, 3).await != vec![(JobState::Queued, 0); 3] {
            assert!(
                Instant::now() < deadline,
                "the dropped batch stayed leased: {:?}",
                states(&real, 3).await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held.hold.store(false, Ordering::SeqCst);
        let again = consumer.fetch(Want::jobs(10)).await;
        let got: Vec<(&str, u32)> = again
            .iter()
            .map(|f| (f.job.id.as_str(), f.job.attempt))
            .collect();
        assert_eq!(got, [("j00000", 1), ("j00001", 1), ("j00002", 1)]);
        assert!(consumer.close(Duration::from_secs(10)).await);
    }
}

async fn close_waits_for_a_dropped_fetch_and_hands_its_batch_back(c: Ctx) {
    {
        let real = c.b.clone();
        real.enqueue("q", new_jobs(3)).await.unwrap();
        let held = HeldFetch::new(real.clone());
        let consumer = Arc::new(Consumer::start(
            &Engine::new(held.clone()),
            config(60_000, 20_000),
        ));
        drop_fetch_after_lease(&consumer, &held).await;
        let closing = {
            let c = consumer.clone();
            tokio::spawn(async move { c.close(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        held.reply.add_permits(1);
        assert!(closing.await.unwrap(), "close flushed in time");
        // No polling: once close() returned, the batch is back.
        assert_eq!(states(&real, 3).await, vec![(JobState::Queued, 0); 3]);
    }
}

/// Drain `n` jobs through one consumer with a 2 ms heartbeat: acking most at once and releasing
/// every third job the first time it is seen (a release bumps the token, so the broker alone
/// cannot tell it from a takeover). Returns every event the consumer reported.
async fn drain_with_fast_heartbeats(broker: Arc<dyn Broker>, n: usize) -> Vec<Event> {
    broker.enqueue("q", new_jobs(n)).await.unwrap();
    let consumer = Arc::new(Consumer::start(
        &Engine::new(broker.clone()),
        config(30_000, 2),
    ));
    let watcher = {
        let c = consumer.clone();
        tokio::spawn(async move {
            let mut all = Vec::new();
            loop {
                let got = c.events().await;
                if got.is_empty() {
                    return all;
                }
                all.extend(got);
            }
        })
    };
    let (mut released, mut acks) = (HashSet::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(60); // generous: a busy host
    while acks < n {
        // Never empty-handed for long: every job not yet acked is ready or on its way back.
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(batch) = tokio::time::timeout(left, consumer.fetch(Want::jobs(20))).await else {
            panic!("drain stuck: {:?}", broker.counts("q").await);
        };
        for f in batch {
            let lease = Lease {
                id: f.job.id.clone(),
                token: f.job.token,
            };
            if f.job.id.ends_with(['0', '3', '6', '9']) && released.insert(f.job.id.clone()) {
                consumer.send(Outcome::Release(lease));
            } else {
                acks += 1;
                consumer.send(Outcome::Ack(Ack {
                    lease,
                    result: vec![0xc0],
                    result_ttl_ms: 60_000,
                }));
            }
            // Yield now and then so heartbeats interleave with outcomes as on a busy worker.
            tokio::task::yield_now().await;
        }
    }
    consumer.flush().await;
    assert_eq!(consumer.stats().acked.load(Ordering::Relaxed), n as u64);
    tokio::time::sleep(Duration::from_millis(50)).await; // a few more heartbeats
    assert!(consumer.close(Duration::from_secs(10)).await);
    watcher.await.unwrap()
}

async fn finished_jobs_are_never_reported_lost(c: Ctx) {
    {
        let broker = c.b.clone();
        let events = drain_with_fast_heartbeats(broker, 3000).await;
        let bad: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Lost(_) | Event::Gone(_) | Event::Refused(_)))
            .collect();
        assert!(bad.is_empty(), "{} false reports: {:?}", bad.len(), bad);
    }
}

async fn a_real_takeover_is_still_reported_lost(c: Ctx) {
    {
        let broker = c.b.clone();
        broker.enqueue("q", new_jobs(1)).await.unwrap();
        // Heartbeats every 100 ms extend a 50 ms lease: it lapses between beats, so a reap
        // can take the job over while this consumer still runs it.
        let consumer = Consumer::start(&Engine::new(broker.clone()), config(50, 100));
        assert_eq!(consumer.fetch(Want::jobs(1)).await.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while broker.reap("q", 60_000).await.unwrap().requeued == 0 {
            assert!(Instant::now() < deadline, "the lease never lapsed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let other = broker
            .fetch("q", Want::jobs(1), 60_000, "w2")
            .await
            .unwrap();
        assert_eq!(other.jobs.len(), 1, "another worker holds the job now");
        let events = tokio::time::timeout(Duration::from_secs(10), consumer.events())
            .await
            .expect("the takeover is reported");
        assert_eq!(events, [Event::Lost("j00000".into())]);
        assert!(consumer.close(Duration::from_secs(10)).await);
    }
}
