//! The consumer: one per (worker, queue), on the process's [`Engine`].
//!
//! It leases jobs in batches, keeps their leases alive and flushes acks and failures in batches.
//! Waiting for work and reaping expired leases are the engine's (one blocking wait per node for
//! all queues; one reap tick per consumer, deduplicated across workers by a claim). All of it
//! runs on tokio and never touches Python: a task that blocks the asyncio loop cannot lose its
//! lease, and a busy worker pays one round trip per group of outcomes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Ack, Broker, Fail, FailOutcome, Lease, Leased, ProgressReport, ReapClaim, Snooze, Want,
};
use crate::codec::{open_envelope, parse_envelope, verify, ErrorRecord, Poison, Spans};
use crate::engine::{Engine, Tick};
use crate::errors::Error;
use crate::metrics::{self, QueueMetrics, TaskMetrics};

mod tasks;

use crate::backoff::Redial;
use tasks::{canceller, flusher, heartbeater, reap};

/// Most outcomes sent to the broker in one script call.
const MAX_FLUSH: usize = 512;
/// Distinct script errors remembered for reporting each once (see `Shared::report_script_error`).
const MAX_SCRIPT_ERRORS: usize = 64;
/// With [`Prefetch::Auto`], the next batch is leased ahead only while jobs run shorter than
/// this (the average time from lease to outcome): a prefetched batch waits in this worker for
/// about one job's run, so it is only fetched ahead when that wait is short. A job released by
/// another worker then waits at most about that long behind it.
pub const SHORT_JOB_US: u64 = 20_000;
/// Retry delay of a job whose Python side was dropped without an outcome (see
/// [`Consumer::abandon`]): short, since the run itself never reached an ending.
const ABANDONED_RETRY_MS: u64 = 1000;

/// The resolution of tokio's timers: a sleep ends on the first whole-millisecond tick at or
/// after its deadline, up to this much late.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Sleep for `d`, ending within a few tens of microseconds of the deadline rather than up to
/// a millisecond after it: the last millisecond is slept on a blocking-pool thread, whose
/// `thread::sleep` uses a high-resolution timer. For the due time of scheduled jobs, where
/// the timer's rounding was most of the lateness (W4).
async fn sleep_precisely(d: Duration) {
    let deadline = Instant::now() + d;
    if d > TIMER_TICK {
        tokio::time::sleep(d - TIMER_TICK).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        // Cancelled meanwhile (the select! in `block` took another branch), the thread still
        // sleeps out its last millisecond and nothing waits for it.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub queue: String,
    pub worker_id: String,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    pub reap_ms: u64,
    /// Longest blocking wait when nothing is scheduled; also bounds how long a lost wake-up costs.
    pub idle_wait_ms: u64,
    pub result_ttl_ms: u64,
    pub dead_ttl_ms: u64,
    pub max_payload: usize,
    /// Registered task names; anything else is dead-lettered as `unknown_task`.
    pub tasks: HashSet<String>,
    /// Whether a full batch starts leasing the next one in the background while Python runs
    /// this one (faster drains; the cost: up to one extra batch waits leased in this worker).
    pub prefetch: Prefetch,
    /// When non-empty, only envelopes signed with one of these keys run; others are poison.
    pub signing_keys: Vec<Vec<u8>>,
}

/// When [`Consumer::fetch`] leases the next batch ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    Off,
    /// After every full batch.
    On,
    /// After a full batch while jobs run short (see `SHORT_JOB_US`): on for short jobs, off by
    /// itself for long ones.
    Auto,
}

/// A leased job that passed validation, ready to be handed to Python.
#[derive(Debug)]
pub struct Fetched {
    pub job: Leased,
    pub timeout_s: Option<f64>,
    /// The envelope's headers (`m.h`): trace context and the like.
    pub headers: Vec<(String, String)>,
    /// The envelope's serializer (`m.c`), when the arguments are not native msgpack.
    pub serializer: Option<String>,
    /// Where the validated envelope's parts lie in `job.payload`.
    pub spans: Spans,
}

/// Something Python should know about; delivered in batches by [`Consumer::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Cancellation of a running job was requested.
    Cancel(String),
    /// The broker refused to extend a lease: its token is stale, another worker may run the
    /// job now.
    Lost(String),
    /// The broker has no record of a leased job any more (Redis lost or flushed its data).
    Gone(String),
    /// A job's Python object was dropped without an outcome; it was failed as `abandoned`.
    Abandoned(String),
    /// The broker failed (first failure after a healthy period).
    BrokerDown(String),
    /// The broker answers again.
    BrokerUp,
    /// A broker script failed although the broker answered (see [`Error::is_script_error`]):
    /// not an outage. Reported once per distinct message.
    ScriptError(String),
    /// An outcome was refused because its lease was stale.
    Refused(String),
    /// A message was dead-lettered before reaching Python.
    Poison { id: String, reason: String },
}

/// What the worker decided about one job.
#[derive(Debug)]
pub enum Outcome {
    Ack(Ack),
    Fail(Fail),
    Release(Lease),
    /// The task asked to run again later, without the attempt counting.
    Snooze(Snooze),
}

enum Msg {
    Outcome(Outcome),
    /// A failure whose caller wants the fail script's verdict (see [`Consumer::fail`]).
    Fail(Fail, oneshot::Sender<FailOutcome>),
    Flush(oneshot::Sender<()>),
    /// A progress report of a running job; sent ahead of the outcomes of its flush.
    Progress(ProgressReport),
}

struct InFlight {
    token: u64,
    /// Past this instant the lease is no longer extended: the task's own timeout has passed, or
    /// the lease was lost, its job is gone, or Python abandoned the job.
    extend_until: Option<Instant>,
    /// An outcome was queued for this lease (set before it reaches the flusher). It is not
    /// extended again, and a heartbeat refusal for it is no loss: the outcome may have landed
    /// first (see `tasks::heartbeater`).
    settled: bool,
    /// When the job was leased (its run time feeds `Shared::run_us`).
    since: Instant,
    /// Its task's metrics, when metrics are on; and whether it is poison (its outcome is
    /// then `dead`, not `failed`).
    task: Option<(Arc<TaskMetrics>, bool)>,
    /// How long it ran, once its outcome was queued after a run.
    ran_s: Option<f64>,
}

/// How long a cancel request heard before its job was admitted is remembered.
const CANCEL_HINT_TTL: Duration = Duration::from_secs(10);

/// Counters for tests, metrics and the shutdown summary: one set per consumer, and one per queue
/// in the engine summing every consumer of the process on that queue.
#[derive(Debug, Default)]
pub struct Stats {
    pub fetched: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub released: AtomicU64,
    pub snoozed: AtomicU64,
    pub refused: AtomicU64,
    pub poison: AtomicU64,
}

impl Stats {
    /// Every counter by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("fetched", get(&self.fetched)),
            ("acked", get(&self.acked)),
            ("failed", get(&self.failed)),
            ("released", get(&self.released)),
            ("snoozed", get(&self.snoozed)),
            ("refused", get(&self.refused)),
            ("poison", get(&self.poison)),
        ]
    }
}

struct Shared {
    broker: Arc<dyn Broker>,
    engine: Engine,
    cfg: ConsumerConfig,
    inflight: Mutex<HashMap<String, InFlight>>,
    events: Mutex<Vec<Event>>,
    events_ready: Notify,
    healthy: AtomicBool,
    /// Script errors already reported (see [`Shared::set_health`]).
    script_errors: Mutex<HashSet<String>>,
    stop_fetching: CancellationToken,
    stop_all: CancellationToken,
    stats: Stats,
    /// The engine's totals for this queue (see [`Shared::count`]).
    totals: Arc<Stats>,
    /// Average time from lease to outcome of recent runs, in µs (`u64::MAX` until one ended):
    /// decides [`Prefetch::Auto`].
    run_us: AtomicU64,
    /// Outcomes to the flusher (it ends when the consumer closes, not when senders drop).
    tx: mpsc::UnboundedSender<Msg>,
    /// Notified at the first lease: only a consumer that ran a job listens for cancel requests
    /// (an idle worker holds no pub/sub connection).
    first_lease: Notify,
    leased_once: AtomicBool,
    /// Cancel requests heard for jobs not (yet) admitted: a request can arrive between the
    /// fetch that leased the job and its admission here. `admit` passes such ids to the
    /// canceller (through `recheck`) to ask the broker.
    cancel_hints: Mutex<HashMap<String, Instant>>,
    recheck: mpsc::UnboundedSender<String>,
    /// This queue's Prometheus counters, when the engine's metrics were on at start.
    metrics: Option<Arc<QueueMetrics>>,
}

/// One queue's consumer. Create it inside the tokio runtime.
pub struct Consumer {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The reap tick on the engine; dropped (stopped) at close.
    reaper: Mutex<Option<Tick>>,
    /// Leased jobs fetched ahead (see `ConsumerConfig::prefetch`), oldest first.
    buffer: Mutex<VecDeque<Fetched>>,
    /// A fetch running in the background to fill `buffer`.
    pending: tokio::sync::Mutex<Option<JoinHandle<Claimed>>>,
    /// Broker fetches of [`Consumer::fetch_blocking`], each in a task of its own (see there);
    /// `close()` waits for them.
    fetches: TaskTracker,
    /// Batches leased ahead so far (for tests and counters).
    prefetched: AtomicU64,
    /// When the next scheduled job falls due, as the last [`Consumer::fetch_now`] heard (µs
    /// from then), for [`Consumer::wait_ready`].
    next_due_us: Mutex<Option<u64>>,
}

/// Jobs the broker leased and the consumer admitted, on their way to the caller. Dropped before
/// they were taken (the fetch that wanted them was cancelled), it hands every job back at once.
struct Claimed {
    sh: Arc<Shared>,
    jobs: Vec<Fetched>,
}

impl Claimed {
    fn take(mut self) -> Vec<Fetched> {
        std::mem::take(&mut self.jobs)
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.sh.hand_back(std::mem::take(&mut self.jobs));
    }
}

/// One broker fetch as run by [`Consumer::fetch_blocking`].
struct FetchRound {
    claimed: Claimed,
    /// The broker leased something (maybe all poison, then `claimed` is empty).
    got_any: bool,
    /// A ready job was passed over for want of a slot the caller did not grant.
    held: bool,
    next_due_us: Option<u64>,
}

impl Consumer {
    /// Start the flusher and heartbeat tasks on the current runtime, and a reap tick on the
    /// engine.
    pub fn start(engine: &Engine, cfg: ConsumerConfig) -> Consumer {
        let (tx, rx) = mpsc::unbounded_channel();
        let (recheck_tx, recheck_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            broker: engine.broker().clone(),
            engine: engine.clone(),
            totals: engine.queue_stats(&cfg.queue),
            metrics: engine.metrics().map(|m| m.queue(&cfg.queue)),
            run_us: AtomicU64::new(u64::MAX),
            cfg,
            inflight: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            events_ready: Notify::new(),
            healthy: AtomicBool::new(true),
            script_errors: Mutex::new(HashSet::new()),
            stop_fetching: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            stats: Stats::default(),
            tx,
            first_lease: Notify::new(),
            leased_once: AtomicBool::new(false),
            cancel_hints: Mutex::new(HashMap::new()),
            recheck: recheck_tx,
        });
        let tasks = vec![
            tokio::spawn(flusher(shared.clone(), rx)),
            tokio::spawn(heartbeater(shared.clone())),
            tokio::spawn(canceller(shared.clone(), recheck_rx)),
        ];
        let reaper = {
            let sh = shared.clone();
            let claim = ReapClaim {
                // One reap per period across every worker on the queue (see `reap.lua`).
                claim_ms: sh.cfg.reap_ms,
                claimant: format!("{} ({})", sh.cfg.worker_id, engine.id()),
            };
            let period = Duration::from_millis(sh.cfg.reap_ms.max(1));
            engine.every(period, move || reap(sh.clone(), claim.clone()))
        };
        Consumer {
            shared,
            tasks: Mutex::new(tasks),
            reaper: Mutex::new(Some(reaper)),
            buffer: Mutex::new(VecDeque::new()),
            pending: tokio::sync::Mutex::new(None),
            fetches: TaskTracker::new(),
            prefetched: AtomicU64::new(0),
            next_due_us: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.shared.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Lease jobs as `want` allows, blocking until at least one is ready or fetching is stopped
    /// (then it returns an empty batch). Broker failures are retried with backoff, never returned.
    /// Also returns an empty batch when every ready job it saw needs a thread or process slot
    /// that `want` does not grant: the caller fetches again once one frees up.
    ///
    /// With prefetch on (or auto, while jobs run short), a full batch starts the next fetch in
    /// the background, so Redis leases the next batch while Python runs this one. A batch
    /// leased ahead holds async jobs only (it passes sync ones over), since the slots they
    /// would need are not known before Python takes it.
    pub async fn fetch(&self, want: Want) -> Vec<Fetched> {
        let max = want.jobs;
        if self.shared.stop_fetching.is_cancelled() || max == 0 {
            return Vec::new();
        }
        let mut pending = self.pending.lock().await;
        let mut jobs = self.take_buffered(max);
        if jobs.is_empty() {
            if let Some(handle) = pending.as_mut() {
                // Taken out only once finished: a caller cancelled meanwhile leaves it in place.
                let fetched = handle.await.map(Claimed::take).unwrap_or_default();
                *pending = None;
                self.buffer.lock().unwrap().extend(fetched);
                jobs = self.take_buffered(max);
            }
        }
        if jobs.is_empty() {
            jobs = self.fetch_blocking(want).await;
        }
        let drained = self.buffer.lock().unwrap().is_empty() && pending.is_none();
        if self.leases_ahead() && jobs.len() == max && drained {
            let sh = self.shared.clone();
            *pending = Some(tokio::spawn(sh.fetch_once(Want::async_only(max))));
            self.prefetched.fetch_add(1, Ordering::Relaxed);
        }
        jobs
    }

    /// Whether work is leased ahead of the capacity to start it now: always with
    /// [`Prefetch::On`], never with `Off`, and with `Auto` while jobs run short (see
    /// `SHORT_JOB_US`: a job leased ahead then waits here about one job's run). Applies to the
    /// batch fetched in the background and to the sync jobs a caller asks for beyond its free
    /// threads (see `asyncq.worker`).
    pub fn leases_ahead(&self) -> bool {
        match self.shared.cfg.prefetch {
            Prefetch::Off => false,
            Prefetch::On => true,
            Prefetch::Auto => self.shared.run_us.load(Ordering::Relaxed) < SHORT_JOB_US,
        }
    }

    /// Lease what is ready now without waiting for more: buffered jobs first, else one broker
    /// fetch (again at once if it met only poison). Empty when nothing is ready, what is ready
    /// needs slots not granted, or the broker failed (its health says so); then
    /// [`Consumer::wait_ready`] waits for work without holding anything. For callers that
    /// share one concurrency budget over several consumers (the partitions of one queue): a
    /// blocked [`Consumer::fetch`] would hold its share of the budget while it waits.
    pub async fn fetch_now(&self, want: Want) -> Vec<Fetched> {
        let max = want.jobs;
        if self.shared.stop_fetching.is_cancelled() || max == 0 {
            return Vec::new();
        }
        let jobs = self.take_buffered(max);
        if !jobs.is_empty() {
            return jobs;
        }
        loop {
            let round = match self.fetch_round(want).await {
                Ok(round) => round,
                Err(err) => {
                    self.shared.set_health(Err(&err));
                    *self.next_due_us.lock().unwrap() = None;
                    return Vec::new();
                }
            };
            self.shared.set_health(Ok(()));
            *self.next_due_us.lock().unwrap() = round.next_due_us;
            let jobs = round.claimed.take();
            if !jobs.is_empty() || !round.got_any || round.held {
                return jobs;
            }
        }
    }

    /// Sleep until this queue is woken, its next scheduled job falls due (as the last
    /// [`Consumer::fetch_now`] heard), the idle wait passes, or fetching stops.
    pub async fn wait_ready(&self) {
        let due = *self.next_due_us.lock().unwrap();
        if due != Some(0) {
            self.block(due).await;
        }
    }

    /// Batches leased ahead so far.
    pub fn prefetched(&self) -> u64 {
        self.prefetched.load(Ordering::Relaxed)
    }

    fn take_buffered(&self, max: usize) -> Vec<Fetched> {
        let mut buffer = self.buffer.lock().unwrap();
        let n = max.min(buffer.len());
        buffer.drain(..n).collect()
    }

    /// Hand every prefetched job back to the queue (at shutdown).
    async fn release_buffered(&self) {
        if let Some(handle) = self.pending.lock().await.take() {
            let fetched = handle.await.map(Claimed::take).unwrap_or_default();
            self.buffer.lock().unwrap().extend(fetched);
        }
        let buffered: Vec<Fetched> = self.buffer.lock().unwrap().drain(..).collect();
        self.shared.hand_back(buffered);
    }

    /// Hand fetched jobs that will never run here back to the queue now, their attempt not
    /// counted (a batch that reached nobody).
    pub fn hand_back(&self, jobs: Vec<Fetched>) {
        self.shared.hand_back(jobs);
    }

    async fn fetch_blocking(&self, want: Want) -> Vec<Fetched> {
        let max = want.jobs;
        let sh = &self.shared;
        let mut backoff = Redial::new();
        loop {
            if sh.stop_fetching.is_cancelled() || max == 0 {
                return Vec::new();
            }
            let round = match self.fetch_round(want).await {
                Ok(round) => round,
                Err(err) => {
                    sh.set_health(Err(&err));
                    self.pause(backoff.next_pause()).await;
                    continue;
                }
            };
            sh.set_health(Ok(()));
            backoff.reset();
            let jobs = round.claimed.take();
            if !jobs.is_empty() {
                return jobs;
            }
            if round.got_any {
                continue; // every job was poison: look again at once
            }
            if round.held {
                return jobs; // empty: what is ready waits for a thread or process slot
            }
            match round.next_due_us {
                Some(0) => continue, // due now: the next fetch promotes it
                due => self.block(due).await,
            }
        }
    }

    /// One broker fetch, run in a task of its own so that cancelling the caller cannot drop a
    /// batch between the script leasing it and the consumer recording the leases: the task
    /// always admits what was leased, and a batch whose caller is gone by then is handed back
    /// at once (see [`Claimed`]). `close()` waits for these tasks.
    async fn fetch_round(&self, want: Want) -> Result<FetchRound, Error> {
        let sh = self.shared.clone();
        let task = self.fetches.spawn(async move {
            let cfg = &sh.cfg;
            // Checked inside the tracked task: a close() that stopped fetching before this
            // point sees nothing leased; one that stopped it later waits for this task.
            let out = if sh.stop_fetching.is_cancelled() {
                Default::default()
            } else {
                let (q, w) = (&cfg.queue, &cfg.worker_id);
                sh.broker.fetch(q, want, cfg.lease_ms, w).await?
            };
            let (got_any, held) = (!out.jobs.is_empty(), out.held);
            let jobs = sh.admit(out.jobs);
            Ok::<_, Error>(FetchRound {
                claimed: Claimed { sh, jobs },
                got_any,
                held,
                next_due_us: out.next_due_us,
            })
        });
        match task.await {
            Ok(res) => res,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Ok(FetchRound {
                claimed: Claimed {
                    sh: self.shared.clone(),
                    jobs: Vec::new(),
                },
                got_any: false,
                held: false,
                next_due_us: None,
            }), // the runtime is shutting down
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shared.stop_fetching.cancelled() => {}
        }
    }

    /// Sleep until woken by the broker, the next scheduled job falls due, or fetching stops.
    ///
    /// The due time is kept by a local timer over the relative delay Redis reported, not by the
    /// blocking command's own timeout: Redis checks blocked clients' timeouts only about every
    /// 100 ms (its `hz`), far coarser than the 2 ms promised for delayed jobs. The local clock only
    /// measures the interval; whether a job is due is still decided by Redis `TIME` in fetch.
    // NOTE: BLPOP with a 37 ms timeout returned 64 ms late at p50 on Redis 7.0 (hz 10).
    async fn block(&self, next_due_us: Option<u64>) {
        let sh = &self.shared;
        let due = async {
            match next_due_us {
                Some(us) => sleep_precisely(Duration::from_micros(us)).await,
                None => std::future::pending().await,
            }
        };
        // The idle wait bounds how long a lost wake-up can cost.
        let idle = tokio::time::sleep(Duration::from_millis(sh.cfg.idle_wait_ms));
        tokio::select! {
            _ = due => {}
            _ = idle => {}
            res = sh.engine.wait(&sh.cfg.queue) => {
                if let Err(err) = res {
                    sh.set_health(Err(&err));
                    self.pause(Duration::from_millis(200)).await;
                }
            }
            _ = sh.stop_fetching.cancelled() => {}
        }
    }

    /// Queue the end of a run that must not be retried (see [`Shared::finish_failed`]).
    pub fn finish_failed(
        &self,
        lease: Lease,
        kind: &str,
        reason: String,
        message: String,
        cancelled: bool,
    ) {
        self.shared
            .finish_failed(lease, kind, reason, message, cancelled);
    }

    /// Queue an outcome; the flusher sends it with others in one round trip.
    pub fn send(&self, outcome: Outcome) {
        self.shared.send(outcome);
    }

    /// Queue a failure like [`Consumer::send`] and get the fail script's verdict once it was
    /// flushed (still batched with other outcomes; only the reply comes back per job). The
    /// receiver errs when no verdict will come: the consumer closed before the flush.
    pub fn fail(&self, fail: Fail) -> oneshot::Receiver<FailOutcome> {
        let (tx, rx) = oneshot::channel();
        self.shared.mark_settled(&fail.lease, true);
        // After close() the sender is dropped here, so the receiver errs at once ("unknown").
        // Checked explicitly: the flusher task may still be finishing its last loop on another
        // thread when close() returns, and must not pick up an outcome queued after it.
        if !self.shared.stop_all.is_cancelled() {
            let _ = self.shared.tx.send(Msg::Fail(fail, tx));
        }
        rx
    }

    /// Queue a progress report of a job this consumer runs. Flushed with the next batch, ahead
    /// of that batch's outcomes (so a job's last report lands before its ending); reports of
    /// one job made faster than they are flushed are merged, the latest kept. Never blocks.
    pub fn progress(&self, report: ProgressReport) {
        if !self.shared.stop_all.is_cancelled() {
            let _ = self.shared.tx.send(Msg::Progress(report));
        }
    }

    /// The safety net for a job that Python let go of without an outcome: stop extending its
    /// lease now and fail it with reason `abandoned` (retried after a short delay while attempts
    /// remain, else dead-lettered), so no job stays `running` without an owner.
    pub fn abandon(&self, lease: Lease) {
        let sh = &self.shared;
        sh.stop_extending(&lease.id);
        sh.push_event(Event::Abandoned(lease.id.clone()));
        let record = ErrorRecord {
            kind: "JobAbandoned".into(),
            message: "the worker dropped the job without recording an outcome".into(),
            traceback: String::new(),
            reason: "abandoned".into(),
        };
        sh.send(Outcome::Fail(Fail {
            lease,
            error: record.to_bytes(),
            retry_delay_ms: Some(ABANDONED_RETRY_MS),
            dead_ttl_ms: sh.cfg.dead_ttl_ms,
            cancelled: false,
        }));
    }

    /// Ids of jobs currently leased by this consumer (fetched, outcome not yet flushed).
    pub fn inflight_leases(&self) -> Vec<Lease> {
        let inflight = self.shared.inflight.lock().unwrap();
        inflight
            .iter()
            .map(|(id, f)| Lease {
                id: id.clone(),
                token: f.token,
            })
            .collect()
    }

    /// Wait until events are available (or the consumer closes) and take them.
    pub async fn events(&self) -> Vec<Event> {
        loop {
            let notified = self.shared.events_ready.notified();
            let taken = std::mem::take(&mut *self.shared.events.lock().unwrap());
            if !taken.is_empty() || self.shared.stop_all.is_cancelled() {
                return taken;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.shared.stop_all.cancelled() => {}
            }
        }
    }

    /// Make pending and future fetches return an empty batch.
    pub fn stop_fetching(&self) {
        self.shared.stop_fetching.cancel();
    }

    /// Wait until every outcome queued so far has reached the broker.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stop fetching, flush outcomes (giving up after `deadline`), stop background tasks.
    /// Returns false when the flush did not finish in time (those jobs are recovered by the reaper).
    pub async fn close(&self, deadline: Duration) -> bool {
        self.stop_fetching();
        let drain = async {
            // A fetch whose caller was cancelled still admits what it leased; wait for that,
            // so the hand-back below cannot miss a batch that was on the wire.
            self.fetches.close();
            self.fetches.wait().await;
            self.release_buffered().await;
            self.flush().await;
            // Whatever is still leased now has no one to finish it (e.g. a fetch abandoned at
            // shutdown): hand it back rather than let it wait out its lease.
            for lease in self.inflight_leases() {
                self.send(Outcome::Release(lease));
            }
            self.flush().await;
        };
        let flushed = tokio::time::timeout(deadline, drain).await.is_ok();
        self.shared.stop_all.cancel();
        self.reaper.lock().unwrap().take();
        self.shared.events_ready.notify_waiters();
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        flushed
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.stop_all.cancel();
        self.reaper.lock().unwrap().take();
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Shared {
    /// Track leases of the fetched jobs; dead-letter those that must never run.
    fn admit(&self, jobs: Vec<Leased>) -> Vec<Fetched> {
        let sh = self;
        let now = Instant::now();
        let leased_any = !jobs.is_empty();
        let mut good = Vec::with_capacity(jobs.len());
        let mut poisoned = Vec::new();
        if let Some(qm) = &sh.metrics {
            qm.fetched(jobs.iter().map(|j| j.waited_ms));
        }
        let mut inflight = sh.inflight.lock().unwrap();
        for mut job in jobs {
            // Size first (cheap), then the signature, and only then the structure; a
            // compressed envelope is opened after its signature is checked, and its inner
            // envelope stands in for the payload from then on.
            let size = job.payload.len();
            let limit = sh.cfg.max_payload;
            let opened = (if size > limit {
                Err(Poison::Oversized { size, limit })
            } else {
                Ok(())
            })
            .and_then(|()| verify(&job.payload, &sh.cfg.signing_keys))
            .and_then(|()| open_envelope(&job.payload, limit));
            let parsed = match opened {
                Ok(Some(inner)) => {
                    job.payload = inner;
                    parse_envelope(&job.payload, limit)
                }
                Ok(None) => parse_envelope(&job.payload, limit),
                Err(p) => Err(p),
            };
            let task = sh.metrics.as_ref().map(|qm| {
                let name = parsed.as_ref().map_or("(unknown)", |env| env.task);
                let runnable = parsed
                    .as_ref()
                    .is_ok_and(|env| sh.cfg.tasks.contains(env.task));
                (qm.task(name), !runnable)
            });
            let verdict = match parsed {
                Err(p) => Err((p.reason().to_string(), p.message())),
                Ok(env) if !sh.cfg.tasks.contains(env.task) => Err((
                    "unknown_task".to_string(),
                    format!("no task named {:?} is registered in this worker", env.task),
                )),
                Ok(env) => {
                    let spans = env.spans(&job.payload);
                    Ok((env.meta, spans))
                }
            };
            // A timeout stops lease extension a little after the task should have ended, so a
            // hung thread cannot hold a job forever.
            let extend_until = verdict
                .as_ref()
                .ok()
                .and_then(|(m, _)| m.timeout_s)
                .map(|t| {
                    now + Duration::from_secs_f64(t.max(0.0))
                        + Duration::from_millis(sh.cfg.lease_ms)
                });
            let fresh = inflight.insert(
                job.id.clone(),
                InFlight {
                    token: job.token,
                    extend_until,
                    settled: false,
                    since: now,
                    task,
                    ran_s: None,
                },
            );
            if let (None, Some(qm)) = (fresh, &sh.metrics) {
                qm.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            match verdict {
                Ok((meta, spans)) => good.push(Fetched {
                    job,
                    timeout_s: meta.timeout_s,
                    headers: meta.headers,
                    serializer: meta.serializer,
                    spans,
                }),
                Err((reason, message)) => poisoned.push((job, reason, message)),
            }
        }
        drop(inflight);
        if leased_any && !sh.leased_once.swap(true, Ordering::Relaxed) {
            sh.first_lease.notify_one();
        }
        sh.recheck_hinted(&good);
        for (job, reason, message) in poisoned {
            self.poison(job, reason, message);
        }
        sh.count(|s| &s.fetched, good.len() as u64);
        good
    }

    fn poison(&self, job: Leased, reason: String, message: String) {
        let sh = self;
        sh.count(|s| &s.poison, 1);
        sh.push_event(Event::Poison {
            id: job.id.clone(),
            reason: reason.clone(),
        });
        let lease = Lease {
            id: job.id,
            token: job.token,
        };
        self.finish_failed(lease, "PoisonMessage", reason, message, false);
    }

    /// Queue the end of a run that must not be retried: dead-lettered with `reason`, or, when
    /// `cancelled`, ended in state `cancelled` (its cancellation was requested).
    fn finish_failed(
        &self,
        lease: Lease,
        kind: &str,
        reason: String,
        message: String,
        cancelled: bool,
    ) {
        let record = ErrorRecord {
            kind: kind.into(),
            message,
            traceback: String::new(),
            reason,
        };
        self.send(Outcome::Fail(Fail {
            lease,
            error: record.to_bytes(),
            retry_delay_ms: None,
            dead_ttl_ms: self.cfg.dead_ttl_ms,
            cancelled,
        }));
    }

    /// Queue an outcome; the flusher sends it with others in one round trip.
    fn send(&self, outcome: Outcome) {
        let lease = match &outcome {
            Outcome::Ack(a) => &a.lease,
            Outcome::Fail(f) => &f.lease,
            Outcome::Release(l) => l,
            Outcome::Snooze(s) => &s.lease,
        };
        self.mark_settled(lease, !matches!(outcome, Outcome::Release(_)));
        // After close() a late outcome is dropped (the flusher may still be finishing its last
        // loop, so this is checked here) and the job is recovered by lease expiry, which keeps
        // at-least-once intact.
        if !self.stop_all.is_cancelled() {
            let _ = self.tx.send(Msg::Outcome(outcome));
        }
    }

    /// Mark a lease as having its outcome queued. Done before the flusher can see the outcome,
    /// so no heartbeat answer that follows the outcome to the broker can be taken for a loss.
    fn mark_settled(&self, lease: &Lease, ran: bool) {
        let mut inflight = self.inflight.lock().unwrap();
        let Some(f) = inflight.get_mut(&lease.id) else {
            return;
        };
        if f.token != lease.token || f.settled {
            return;
        }
        f.settled = true;
        if ran {
            f.ran_s = Some(f.since.elapsed().as_secs_f64());
            // A moving average over about the last 8 runs.
            let took = f.since.elapsed().as_micros().min(u128::from(u32::MAX)) as u64;
            let old = self.run_us.load(Ordering::Relaxed);
            let avg = if old == u64::MAX {
                took
            } else {
                (old * 7 + took) / 8
            };
            self.run_us.store(avg, Ordering::Relaxed);
        }
    }

    /// Queue the release of fetched jobs that reached no caller.
    fn hand_back(&self, jobs: Vec<Fetched>) {
        for f in jobs {
            self.uncount_fetched();
            self.send(Outcome::Release(Lease {
                id: f.job.id,
                token: f.job.token,
            }));
        }
    }

    /// One non-blocking fetch (for prefetching): empty on any failure, which the blocking
    /// fetch that follows will retry and report.
    async fn fetch_once(self: Arc<Self>, want: Want) -> Claimed {
        let cfg = &self.cfg;
        let jobs = match self
            .broker
            .fetch(&cfg.queue, want, cfg.lease_ms, &cfg.worker_id)
            .await
        {
            Ok(out) => self.admit(out.jobs),
            Err(_) => Vec::new(),
        };
        Claimed { sh: self, jobs }
    }

    /// Add `n` to one counter of this consumer and to the engine's total for the queue.
    fn count(&self, field: fn(&Stats) -> &AtomicU64, n: u64) {
        field(&self.stats).fetch_add(n, Ordering::Relaxed);
        field(&self.totals).fetch_add(n, Ordering::Relaxed);
    }

    /// A fetched job handed back unrun no longer counts as fetched.
    fn uncount_fetched(&self) {
        self.stats.fetched.fetch_sub(1, Ordering::Relaxed);
        self.totals.fetched.fetch_sub(1, Ordering::Relaxed);
    }

    fn push_event(&self, event: Event) {
        self.events.lock().unwrap().push(event);
        self.events_ready.notify_one();
    }

    /// Record broker health; emit an event only when it changes (one log line per outage).
    /// A script error is no outage: health is left as it is and the error is reported once
    /// per distinct message (the callers retry it with backoff like any other failure).
    fn set_health(&self, res: Result<(), &Error>) {
        if let Some(err) = res.err().filter(|e| e.is_script_error()) {
            self.report_script_error(err.to_string());
            return;
        }
        let ok = res.is_ok();
        if self.healthy.swap(ok, Ordering::Relaxed) != ok {
            self.push_event(match res {
                Ok(()) => Event::BrokerUp,
                Err(err) => Event::BrokerDown(err.to_string()),
            });
        }
    }

    /// Emit `ScriptError` the first time a message is seen. The memory is bounded: past
    /// `MAX_SCRIPT_ERRORS` distinct messages it starts over (an error may then be logged again).
    fn report_script_error(&self, message: String) {
        let mut seen = self.script_errors.lock().unwrap();
        if seen.contains(&message) {
            return;
        }
        if seen.len() >= MAX_SCRIPT_ERRORS {
            seen.clear();
        }
        seen.insert(message.clone());
        drop(seen);
        self.push_event(Event::ScriptError(message));
    }

    fn forget(&self, ids: impl Iterator<Item = String>) {
        let mut inflight = self.inflight.lock().unwrap();
        let mut gone = 0;
        for id in ids {
            gone += i64::from(inflight.remove(&id).is_some());
        }
        if let Some(qm) = &self.metrics {
            qm.in_flight.fetch_sub(gone, Ordering::Relaxed);
        }
    }

    /// Count the outcomes the broker accepted (`ended`: id and outcome) in the metrics.
    fn record_ended<'a>(&self, ended: impl Iterator<Item = (&'a String, metrics::Outcome)>) {
        if self.metrics.is_none() {
            return;
        }
        let inflight = self.inflight.lock().unwrap();
        for (id, outcome) in ended {
            if let Some(InFlight {
                task: Some((task, poison)),
                ran_s,
                ..
            }) = inflight.get(id)
            {
                let outcome = if *poison {
                    metrics::Outcome::Dead
                } else {
                    outcome
                };
                task.ended(outcome, *ran_s);
            }
        }
    }

    /// Never extend this lease again (it was lost, is gone, or nobody owns the job any more).
    fn stop_extending(&self, id: &str) {
        if let Some(f) = self.inflight.lock().unwrap().get_mut(id) {
            f.extend_until = Some(Instant::now());
        }
    }

    /// Whether this consumer still runs `lease` with no outcome queued: only then can a
    /// heartbeat refusal mean that the job was lost.
    fn still_running(&self, lease: &Lease) -> bool {
        let inflight = self.inflight.lock().unwrap();
        inflight
            .get(&lease.id)
            .is_some_and(|f| f.token == lease.token && !f.settled)
    }

    /// The lease to heartbeat for a cancel request heard for `id`; None when this consumer
    /// does not run it (yet): then the request is remembered, and `admit` passes it back if
    /// the job is admitted later. The hints stay locked across the check, so an admission
    /// between the check and the remembering cannot slip through.
    fn cancel_target(&self, id: String) -> Option<Lease> {
        let mut hints = self.cancel_hints.lock().unwrap();
        if let Some(lease) = self.lease_to_extend(&id) {
            return Some(lease);
        }
        hints.retain(|_, at| at.elapsed() < CANCEL_HINT_TTL);
        hints.insert(id, Instant::now());
        None
    }

    /// Admitted jobs whose cancellation was heard before: have the canceller ask the broker.
    fn recheck_hinted(&self, admitted: &[Fetched]) {
        let mut hints = self.cancel_hints.lock().unwrap();
        if hints.is_empty() {
            return;
        }
        for f in admitted {
            if hints.remove(&f.job.id).is_some() {
                let _ = self.recheck.send(f.job.id.clone());
            }
        }
    }

    /// The lease of `id` if this consumer runs it and would extend it.
    fn lease_to_extend(&self, id: &str) -> Option<Lease> {
        let now = Instant::now();
        let inflight = self.inflight.lock().unwrap();
        let f = inflight.get(id)?;
        (!f.settled && f.extend_until.is_none_or(|t| t > now)).then(|| Lease {
            id: id.to_owned(),
            token: f.token,
        })
    }

    /// Leases to extend now: skips jobs past their own timeout and jobs with an outcome queued.
    fn leases_to_extend(&self) -> Vec<Lease> {
        let now = Instant::now();
        let inflight = self.inflight.lock().unwrap();
        inflight
            .iter()
            .filter(|(_, f)| !f.settled && f.extend_until.is_none_or(|t| t > now))
            .map(|(id, f)| Lease {
                id: id.clone(),
                token: f.token,
            })
            .collect()
    }
}
