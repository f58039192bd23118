//! The broker layer: one trait, two implementations chosen by URL scheme.
//!
//! Every operation works on a batch where a batch makes sense, so a worker pays one round trip
//! per fetched batch and one per flushed group of acks, never one per job.

mod calls;
pub(crate) mod done;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod scripts;
mod watchdog;

/// Shared broker connections this process replaced so far (found silent, or a failover moved
/// the primary): `asyncq_reconnects_total`.
pub fn reconnects() -> u64 {
    watchdog::REPLACED.load(std::sync::atomic::Ordering::Relaxed)
}

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::errors::{Error, Result};

/// Highest priority a job may carry; priorities run 0 (lowest) ..= MAX_PRIORITY (highest).
pub const MAX_PRIORITY: i64 = 9;

/// Lease expiries a job survives: on the third, reap dead-letters it (`lease_expired`) whatever its
/// retries, so a job that kills its worker every time cannot cycle forever, while a job with no
/// retries is still re-run after an ordinary worker crash.
pub const MAX_STALLS: u32 = 3;

/// How long the record of a job cancelled before it ran is kept (7 days, like dead letters).
pub const CANCELLED_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// A job ready to be written: the payload is an already encoded envelope.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub payload: Vec<u8>,
    /// 0 ..= MAX_PRIORITY; higher runs first, FIFO within one priority.
    pub priority: i64,
    /// Due this many ms after the broker's clock reads now (ignored when `eta_ms` is set).
    pub delay_ms: Option<u64>,
    /// Due at this absolute unix time in ms.
    pub eta_ms: Option<u64>,
    /// Total runs allowed (1 + retries).
    pub max_attempts: u32,
    /// Idempotency key: while it lives, enqueueing with it again returns the first job's id.
    pub key: Option<String>,
    pub key_ttl_ms: u64,
    /// How the key is held and what a repeat does (see `docs/flow-control.md`).
    pub key_mode: KeyMode,
    /// Where the job's runs happen; a worker leases a thread or process job only while it has
    /// a slot free to start it (see [`Want`]).
    pub executor: Executor,
    /// The job's group spec, for a task with limits, a fair key or an ordered key:
    /// `<group id>\t<quota>\t<limiter>...` (see "Groups and limiters" in lib/common.lua).
    pub group: Option<String>,
}

/// How a job's key holds, and what enqueueing again with it does: a repeat is refused (its
/// handle names the first job) while the key holds, except for `Debounce`. `enqueue.lua`
/// decides from the state of the job the key names; no other script reads the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyMode {
    /// `options(key=)`: the key lives `key_ttl_ms`; after a success, as long as the result.
    #[default]
    Plain,
    /// `Unique(until="start")`: holds while the job waits to start.
    UntilStart,
    /// `Unique(until="success")`: holds until the job ends, however it ends.
    UntilEnd,
    /// `options(throttle=)`: the key lives `key_ttl_ms` (the period) whatever the job does.
    Throttle,
    /// `options(debounce=)`: a repeat while the job is pending replaces its payload and moves
    /// its start to now + `delay_ms`, but not past its enqueue + `max_wait_ms`; once it
    /// started, the next enqueue makes a new job.
    Debounce { max_wait_ms: Option<u64> },
}

impl KeyMode {
    /// The script's two values: mode name, max wait ('' none).
    pub(crate) fn as_args(self) -> (&'static str, String) {
        match self {
            KeyMode::Plain => ("", String::new()),
            KeyMode::UntilStart => ("start", String::new()),
            KeyMode::UntilEnd => ("success", String::new()),
            KeyMode::Throttle => ("throttle", String::new()),
            KeyMode::Debounce { max_wait_ms } => (
                "debounce",
                max_wait_ms.map(|m| m.to_string()).unwrap_or_default(),
            ),
        }
    }

    /// Parse the Python side's name (`CoreOptions.key_mode`).
    pub fn parse(name: &str, max_wait_ms: Option<u64>) -> Option<KeyMode> {
        Some(match name {
            "" | "plain" => KeyMode::Plain,
            "start" => KeyMode::UntilStart,
            "success" => KeyMode::UntilEnd,
            "throttle" => KeyMode::Throttle,
            "debounce" => KeyMode::Debounce { max_wait_ms },
            _ => return None,
        })
    }
}

/// What [`Broker::set_limits`] does with the families it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOp {
    /// A worker's declaration, from its tasks' and queues' definitions.
    Declare,
    /// A run-time override (`asyncq limits set`), part by part over the declaration.
    Set,
    /// Drop the override (`asyncq limits clear`).
    Clear,
}

impl LimitOp {
    pub(crate) fn as_arg(self) -> &'static str {
        match self {
            LimitOp::Declare => "declare",
            LimitOp::Set => "set",
            LimitOp::Clear => "clear",
        }
    }

    /// Parse the Python side's name.
    pub fn parse(name: &str) -> Option<LimitOp> {
        Some(match name {
            "declare" => LimitOp::Declare,
            "set" => LimitOp::Set,
            "clear" => LimitOp::Clear,
            _ => return None,
        })
    }
}

/// One limiter family of a queue, as `limits.lua` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInfo {
    /// `@<queue>`, `t:<task>`, `k:<task>:<key>` or `o:<task>:<key>`.
    pub family: String,
    /// Settings declared by workers (`c=<n> r=<n> p=<ms> b=<n>`), '' if none.
    pub declared: String,
    /// Settings set at run time over the declared ones, '' if none.
    pub overridden: String,
    /// Jobs running under the family's limiter (a family without a key; 0 otherwise).
    pub running: u64,
    /// Groups waiting on that limiter.
    pub waiting: u64,
    /// Limiters of the family (one per key value) with groups waiting.
    pub keys_waiting: u64,
}

/// Where a job's runs happen, recorded at enqueue from the task's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executor {
    /// On the worker's event loop: needs no slot.
    #[default]
    Async,
    /// In the worker's thread pool.
    Thread,
    /// In the worker's pool of child processes.
    Process,
}

impl Executor {
    /// The record's `ex` field ('' for async: nothing is written).
    pub fn as_field(self) -> &'static str {
        match self {
            Executor::Async => "",
            Executor::Thread => "thread",
            Executor::Process => "process",
        }
    }

    /// Parse the Python side's name (`TaskConfig.executor`).
    pub fn parse(name: &str) -> Option<Executor> {
        match name {
            "async" => Some(Executor::Async),
            "thread" => Some(Executor::Thread),
            "process" => Some(Executor::Process),
            _ => None,
        }
    }
}

/// What one fetch may lease: at most `jobs` jobs, of which at most `threads` run in threads
/// and at most `processes` in child processes (None: no bound of that kind). Fetch leases in
/// ready order and passes over a job whose kind has no slot left (it keeps its place, first in
/// line for the next fetch), so a worker never holds a sync job it cannot start while another
/// worker idles, and async jobs still come in full batches from a queue that mixes both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub jobs: usize,
    pub threads: Option<usize>,
    pub processes: Option<usize>,
}

impl Want {
    /// Up to `n` jobs of any kind.
    pub fn jobs(n: usize) -> Want {
        Want {
            jobs: n,
            threads: None,
            processes: None,
        }
    }

    /// Up to `n` jobs, none of which needs a thread or process slot (a batch leased ahead).
    pub fn async_only(n: usize) -> Want {
        Want {
            jobs: n,
            threads: Some(0),
            processes: Some(0),
        }
    }
}

/// What enqueue did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when an idempotency key matched an existing job; `id` is then that job's id.
    pub created: bool,
}

/// A job leased to a worker by `fetch`.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub payload: Vec<u8>,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Fencing token: ack/fail/heartbeat/release must present it.
    pub token: u64,
    pub enqueued_ms: u64,
    /// A flow member's input: what its parents delivered (one encoded value, or an encoded
    /// list), prepended to its positional arguments. None for other jobs.
    pub input: Option<Vec<u8>>,
    /// How long it waited to be leased: since it was enqueued, or fell due (a delay, a retry),
    /// by the broker's clock (`asyncq_job_wait_seconds`).
    pub waited_ms: u64,
}

/// Result of one fetch call.
#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    pub jobs: Vec<Leased>,
    /// Microseconds until the earliest scheduled job is due (None: nothing scheduled).
    pub next_due_us: Option<u64>,
    /// A ready job was passed over for want of a thread or process slot (see [`Want`]): it
    /// can be leased once one frees up.
    pub held: bool,
}

/// A lease as presented back to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: String,
    pub token: u64,
}

/// A successful run to record.
#[derive(Debug, Clone)]
pub struct Ack {
    pub lease: Lease,
    /// Encoded result value.
    pub result: Vec<u8>,
    pub result_ttl_ms: u64,
}

/// A run that asked to be put off (`raise asyncq.Snooze(seconds)`): its job waits `delay_ms`
/// in scheduled, without the attempt counting (see `release.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snooze {
    pub lease: Lease,
    pub delay_ms: u64,
    /// `current_job().rate_limited(retry_after)`: the job's key is pushed back, every job of
    /// it waits (the limiters of its group hold); false for a plain snooze.
    pub push_key: bool,
}

/// A progress report of a running job (`current_job().progress()`), accepted only while its
/// lease holds (see `progress.lua`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressReport {
    pub lease: Lease,
    /// Done so far, in [0, 1].
    pub fraction: f64,
    pub message: Option<String>,
}

/// One recorded progress report, as the job record keeps it (the last [`PROGRESS_KEEP`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEntry {
    /// Broker time of the report.
    pub at_ms: u64,
    pub fraction: f64,
    pub message: Option<String>,
}

/// How many progress reports a job record keeps (oldest dropped first).
pub const PROGRESS_KEEP: usize = 32;

/// Longest progress message, in bytes: a report is a note, not a payload.
pub const PROGRESS_MESSAGE_MAX: usize = 1024;

/// A failed run to record.
#[derive(Debug, Clone)]
pub struct Fail {
    pub lease: Lease,
    /// Encoded `ErrorRecord` (see codec).
    pub error: Vec<u8>,
    /// Some(delay): retry after delay if attempts remain; None: dead-letter now.
    pub retry_delay_ms: Option<u64>,
    /// How long a dead job's record is kept.
    pub dead_ttl_ms: u64,
    /// The run was cancelled on request: the job ends `cancelled` (no retry, not dead-lettered).
    pub cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Scheduled again (state `failed`, will retry).
    Retrying,
    /// Moved to the dead-letter queue.
    Dead,
    /// Ended `cancelled` (the run was cancelled on request).
    Cancelled,
    /// Refused: the lease token is stale (another worker owns the job now).
    Stale,
}

#[derive(Debug, Clone, Default)]
pub struct HeartbeatOutcome {
    /// Leases the broker refused to extend because the token is stale (or the job no longer
    /// runs): someone else may hold the job now.
    pub lost: Vec<String>,
    /// Leases whose job record no longer exists (the broker lost or flushed its data).
    pub gone: Vec<String>,
    /// Jobs whose cancellation was requested while running.
    pub cancel: Vec<String>,
    /// Leases whose run already ended under this very token (the holder's own outcome reached
    /// the broker first): not extended, and not a loss.
    pub finished: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapOutcome {
    /// Expired leases put back to ready.
    pub requeued: u64,
    /// Expired leases whose attempts were exhausted, dead-lettered.
    pub dead: u64,
    /// Nothing was done: another reaper's claim on the queue was still held.
    pub skipped: bool,
}

/// How a periodic reaper shares a queue with the reapers of other workers: it reaps only when
/// no claim is held, then holds the claim for `claim_ms` (a `SET NX PX` inside `reap.lua`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapClaim {
    /// 0: no claim, reap unconditionally (admin calls and tests).
    pub claim_ms: u64,
    /// Who holds the claim (a worker id), stored for inspection.
    pub claimant: String,
}

/// Longest periodic schedule name accepted, in bytes (its fire jobs' ids add about 20).
pub const MAX_SCHEDULE_NAME: usize = 100;

/// Check a schedule name: 1 to [`MAX_SCHEDULE_NAME`] ASCII letters, digits, `-`, `_`, `.` or
/// `:` (it becomes part of Redis keys and of its jobs' ids).
/// A progress report's values, checked before anything is sent: a fraction in [0, 1] and a
/// message of at most [`PROGRESS_MESSAGE_MAX`] bytes.
pub fn check_progress(fraction: f64, message: Option<&str>) -> Result<()> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Invalid(format!(
            "progress must be a fraction from 0.0 to 1.0, got {fraction}"
        )));
    }
    if let Some(m) = message {
        if m.len() > PROGRESS_MESSAGE_MAX {
            return Err(Error::Invalid(format!(
                "a progress message is at most {PROGRESS_MESSAGE_MAX} bytes, got {}",
                m.len()
            )));
        }
    }
    Ok(())
}

/// Longest snooze, in seconds: a year (a longer one is surely a unit mistake).
pub const SNOOZE_MAX_S: f64 = 365.0 * 86400.0;

/// A snooze of `seconds` as the delay the release script takes, in ms; refused outside
/// 0..=[`SNOOZE_MAX_S`] (NaN too).
pub fn snooze_delay_ms(seconds: f64) -> Result<u64> {
    if !(0.0..=SNOOZE_MAX_S).contains(&seconds) {
        return Err(Error::Invalid(format!(
            "a snooze lasts 0 to {SNOOZE_MAX_S} seconds, got {seconds}"
        )));
    }
    Ok((seconds * 1000.0).round() as u64)
}

pub fn check_schedule_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if !name.is_empty() && name.len() <= MAX_SCHEDULE_NAME && name.chars().all(ok_char) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "schedule name {name:?} is not valid: use 1 to {MAX_SCHEDULE_NAME} ASCII letters, \
         digits, '-', '_', '.' or ':'"
    )))
}

/// What to do with one fire time of a periodic schedule (see `fire.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireMode {
    /// Enqueue the job.
    Allow,
    /// Enqueue it unless the schedule's previous job is still waiting or running.
    Skip,
    /// Take the fire time without enqueuing (the catch-up policy passes over it).
    Pass,
}

impl FireMode {
    fn as_arg(self) -> &'static str {
        match self {
            FireMode::Allow => "allow",
            FireMode::Skip => "skip",
            FireMode::Pass => "pass",
        }
    }
}

/// One fire time of a schedule to take, with the job it enqueues.
#[derive(Debug, Clone)]
pub struct Fire {
    pub schedule: String,
    /// The fire time, unix ms.
    pub fire_ms: u64,
    pub mode: FireMode,
    pub job: NewJob,
}

/// What became of one fire time; the first caller for a fire time decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// This call enqueued the job.
    Enqueued,
    /// An earlier call took this fire time, or a later one: the schedule's last is `last_ms`.
    Taken { last_ms: u64 },
    /// Passed over: the schedule is paused.
    Paused,
    /// Passed over: the previous job of the schedule is unfinished (overlap "skip").
    Overlap,
    /// Passed over as asked ([`FireMode::Pass`]).
    Passed,
    /// Not due yet by the broker's clock, which reads `now_ms`.
    Early { now_ms: u64 },
    /// The schedule is not stored (removed): nothing was done.
    Removed,
}

/// How a flow member's parents' results reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputMode {
    /// Its single parent's result, as its first positional argument.
    One,
    /// Its parents' results in parent order, as a list, as its first positional argument.
    List,
}

impl InputMode {
    pub(crate) fn as_arg(self) -> &'static str {
        match self {
            InputMode::One => "one",
            InputMode::List => "list",
        }
    }
}

/// What a flow member's failure (dead-lettered or cancelled) does to a member waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The waiting member never runs: it ends failed (`upstream_failed`), and so on down.
    Fail,
    /// It gets an `asyncq.Failed` value in the failed member's place.
    Continue,
    /// The failed member's result is left out (None for a single input).
    Ignore,
}

impl OnFailure {
    pub(crate) fn as_arg(self) -> &'static str {
        match self {
            OnFailure::Fail => "fail",
            OnFailure::Continue => "continue",
            OnFailure::Ignore => "ignore",
        }
    }

    /// Parse the Python side's name.
    pub fn parse(name: &str) -> Option<OnFailure> {
        match name {
            "fail" => Some(OnFailure::Fail),
            "continue" => Some(OnFailure::Continue),
            "ignore" => Some(OnFailure::Ignore),
            _ => None,
        }
    }
}

/// An edge from a flow member to a member that waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub queue: String,
    pub child: String,
    /// Which of the child's parents this member is (0-based).
    pub index: u32,
    /// What this member's failure does to the child.
    pub policy: OnFailure,
}

/// One member of a flow, written with `enqueue_flow`.
#[derive(Debug, Clone)]
pub struct FlowMember {
    pub job: NewJob,
    /// How many members it waits on (0: it is ready, or scheduled, at once).
    pub parents: u32,
    pub mode: InputMode,
    pub follow_ups: Vec<FollowUp>,
}

/// A stored schedule, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub name: String,
    /// The definition, as stored by the last sync (JSON from the Python side).
    pub def: String,
    /// The latest fire time taken (or when the schedule was first stored), unix ms.
    pub last_ms: u64,
    /// The last job it enqueued.
    pub job: Option<String>,
    pub paused: bool,
    pub fired: u64,
    pub skipped: u64,
}

/// A change an operator makes to a stored schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    Pause,
    Resume,
    Remove,
}

/// The one set of job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Scheduled,
    Queued,
    /// A flow member waiting for the members it follows.
    Waiting,
    Running,
    Succeeded,
    /// Failed, will retry (waits in the scheduled set).
    Failed,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Waiting => "waiting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Succeeded, dead or cancelled: the job will not run again by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "scheduled" => JobState::Scheduled,
            "queued" => JobState::Queued,
            "waiting" => JobState::Waiting,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// A state whose jobs sit in a set of their own, so they can be listed page by page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSet {
    /// Ready to run, in run order (priority, then FIFO).
    Queued,
    /// Delayed jobs and failed jobs waiting to retry, soonest due first.
    Scheduled,
    /// Leased jobs, earliest lease deadline first.
    Running,
    /// Dead letters, oldest first.
    Dead,
}

impl JobSet {
    /// The set for a state name; `None` for states without a set (`succeeded`, `cancelled`, ...).
    pub fn parse(s: &str) -> Option<JobSet> {
        Some(match s {
            "queued" => JobSet::Queued,
            "scheduled" => JobSet::Scheduled,
            "running" => JobSet::Running,
            "dead" => JobSet::Dead,
            _ => return None,
        })
    }
}

/// Everything known about one job.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub id: String,
    pub queue: String,
    pub state: JobState,
    pub payload: Vec<u8>,
    pub priority: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub enqueued_ms: u64,
    /// When it is (or was) due, for scheduled and retrying jobs.
    pub due_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Encoded result value (succeeded jobs).
    pub result: Option<Vec<u8>>,
    /// Encoded `ErrorRecord` of the last failure.
    pub error: Option<Vec<u8>>,
    pub worker: Option<String>,
    /// Progress reports, oldest first (at most [`PROGRESS_KEEP`]).
    pub progress: Vec<ProgressEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Was queued or scheduled; now cancelled and will never run.
    Cancelled,
    /// Is running; the worker is asked to cancel it at its next heartbeat.
    Requested,
    /// Already finished (succeeded, dead, cancelled); nothing changed.
    Finished,
    NotFound,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub scheduled: u64,
    pub queued: u64,
    pub running: u64,
    pub dead: u64,
    /// Lifetime counters.
    pub succeeded_total: u64,
    pub failed_total: u64,
    /// Paused (see [`Broker::pause`]): nothing is leased from it.
    pub paused: bool,
    /// Members of the ready set: jobs, and groups with a job to offer, that a fetch would
    /// look at now (parked groups and scheduled jobs are not among them).
    pub ready: u64,
}

/// What [`Broker::delete_job`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// Running: refused (cancel it first).
    Running,
    NotFound,
}

/// A worker's registration, refreshed by its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    /// Free-form JSON describing the worker (host, pid, queues, started_at).
    pub info: String,
    pub last_seen_ms: u64,
}

/// The operations every broker provides with the same semantics.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Enqueue a batch in one round trip. Order of results matches `jobs`.
    async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>>;
    /// Lease ready jobs as `want` allows (promoting due scheduled jobs first).
    async fn fetch(
        &self,
        queue: &str,
        want: Want,
        lease_ms: u64,
        worker: &str,
    ) -> Result<FetchOutcome>;
    /// Block until something may be ready on `queue` (new job, due job, release) or timeout.
    /// Spurious wake-ups are allowed; callers fetch afterwards.
    async fn wait(&self, queue: &str, timeout_ms: u64) -> Result<()> {
        let queues = [queue.to_owned()];
        self.wait_any(&queues, timeout_ms, &CancellationToken::new())
            .await
            .map(drop)
    }
    /// Block until one of `queues` (all on one node, see [`Broker::node_of`]) may have work,
    /// `timeout_ms` passed, or `interrupt` fired; returns the queues known to have been woken
    /// (empty on a timeout, an interrupt or a spurious wake-up). Each wake token is delivered
    /// to one waiter across all workers; one popped while being interrupted is still returned.
    async fn wait_any(
        &self,
        queues: &[String],
        timeout_ms: u64,
        interrupt: &CancellationToken,
    ) -> Result<Vec<String>>;
    /// The node that holds `queue`: waits on queues of one node can share one `wait_any`.
    fn node_of(&self, queue: &str) -> Result<String>;
    /// The in-process broker behind `memory://`, whose clock tests may stop and move
    /// (`asyncq.testing`); None for every other broker.
    fn as_memory(&self) -> Option<&memory::MemoryBroker> {
        None
    }
    /// Get ready to hear that job `id` of `queue` ended (succeeded, dead or cancelled): once
    /// this returns, an ending is not missed. The receiver fires on the ending, or errs when
    /// notifications may have been lost (then read the state again). See [`done`].
    async fn watch_end(&self, queue: &str, id: &str) -> Result<oneshot::Receiver<()>>;
    /// Hear the ids of `queue`'s running jobs whose cancellation is requested, as it is
    /// requested (see `cancel.lua`). The receiver ends when notifications may have been lost:
    /// call again. A hint only: the request itself is read by [`Broker::heartbeat`].
    async fn watch_cancels(
        &self,
        queue: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>>;
    /// Hear every message published on `queue`'s events channel from now on, whole (see
    /// `docs/events.md` for their form). State changes are published only while the queue is
    /// marked watched ([`Broker::keep_watch`]). The receiver ends when messages may have been
    /// lost: read the state again, and call again.
    async fn watch_events(
        &self,
        queue: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>>;
    /// Mark `queue` watched for `ttl_ms` (see `watch.lua`); renew it before it runs out.
    async fn keep_watch(&self, queue: &str, ttl_ms: u64) -> Result<()>;
    /// Write limiter settings of `queue` (see `limits.lua`): `families` are (family,
    /// settings) pairs. Returns how many families changed; their waiting groups are woken.
    async fn set_limits(
        &self,
        queue: &str,
        op: LimitOp,
        families: Vec<(String, String)>,
    ) -> Result<u64>;
    /// Every limiter family of `queue`, its settings and what waits on it.
    async fn limits(&self, queue: &str) -> Result<Vec<LimitInfo>>;
    /// Record progress reports of running jobs: `true` per report accepted, `false` per one
    /// whose lease is stale or whose job is gone.
    async fn progress(&self, queue: &str, reports: Vec<ProgressReport>) -> Result<Vec<bool>>;
    /// Record successes. `true` per accepted ack, `false` per stale one.
    async fn ack(&self, queue: &str, acks: Vec<Ack>) -> Result<Vec<bool>>;
    /// Record failures.
    async fn fail(&self, queue: &str, fails: Vec<Fail>) -> Result<Vec<FailOutcome>>;
    /// Hand leased jobs back to ready now, without counting the attempt. `true` per lease the
    /// broker took back (also when a corrupt record was dead-lettered instead).
    async fn release(&self, queue: &str, leases: Vec<Lease>) -> Result<Vec<bool>>;
    /// Put running jobs off: each waits its delay in scheduled, its attempt not counted. `true`
    /// per lease the broker took back (also when a corrupt record was dead-lettered instead).
    async fn snooze(&self, queue: &str, snoozes: Vec<Snooze>) -> Result<Vec<bool>>;
    /// Extend leases to now + lease_ms.
    async fn heartbeat(
        &self,
        queue: &str,
        leases: Vec<Lease>,
        lease_ms: u64,
    ) -> Result<HeartbeatOutcome>;
    /// Recover expired leases and promote due scheduled jobs; trims expired dead letters.
    async fn reap(&self, queue: &str, dead_ttl_ms: u64) -> Result<ReapOutcome> {
        self.reap_claimed(queue, dead_ttl_ms, &ReapClaim::default())
            .await
    }
    /// [`Broker::reap`] under a claim shared by every worker's reaper (see [`ReapClaim`]).
    async fn reap_claimed(
        &self,
        queue: &str,
        dead_ttl_ms: u64,
        claim: &ReapClaim,
    ) -> Result<ReapOutcome>;
    async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>>;
    async fn cancel(&self, queue: &str, id: &str) -> Result<CancelOutcome>;
    async fn counts(&self, queue: &str) -> Result<QueueCounts>;
    /// Every queue that has ever been enqueued to.
    async fn queues(&self) -> Result<Vec<String>>;
    /// Ids in the dead-letter queue, oldest first.
    async fn dead_ids(&self, queue: &str, limit: usize) -> Result<Vec<String>>;
    /// One page of the ids in `set`, in the set's order, from position `offset`: at most `count`
    /// ids, read with one bounded range query (never the whole set). Positions shift as jobs
    /// move, so a job may be seen twice or missed across pages of a busy queue.
    async fn job_ids(
        &self,
        queue: &str,
        set: JobSet,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>>;
    /// The records of `ids` in one round trip, in order; `None` where a record is gone.
    async fn jobs(&self, queue: &str, ids: &[String]) -> Result<Vec<Option<JobInfo>>>;
    /// Move dead jobs back to ready with fresh attempts (`None`: all). Returns how many moved.
    async fn retry_dead(&self, queue: &str, ids: Option<Vec<String>>) -> Result<u64>;
    /// Delete every queued, scheduled and dead job of the queue. Returns how many.
    async fn purge(&self, queue: &str) -> Result<u64>;
    /// Pause (`true`) or resume a queue: while paused, nothing is leased from it; resuming
    /// wakes its idle workers. True when the state changed.
    async fn pause(&self, queue: &str, paused: bool) -> Result<bool>;
    /// Delete a job that is not running (its record, key and set entries); a pending one is
    /// first withdrawn as a cancel would (its waiters are told, flow dependents fail).
    async fn delete_job(&self, queue: &str, id: &str) -> Result<DeleteOutcome>;
    async fn register_worker(&self, worker: &WorkerInfo, ttl_ms: u64) -> Result<()>;
    async fn unregister_worker(&self, id: &str) -> Result<()>;
    async fn workers(&self) -> Result<Vec<WorkerInfo>>;
    /// Facts about the server that decide whether queue data is safe, as `(name, value)`:
    /// `maxmemory_policy`, `aof_enabled`, `save` (when CONFIG is allowed), `run_id`,
    /// `redis_version`, and `epoch`, a marker written once that changes only when the server
    /// lost its data. Empty for in-process brokers.
    async fn server_check(&self) -> Result<Vec<(String, String)>>;
    /// Broker time in unix ms.
    async fn now_ms(&self) -> Result<u64>;
    /// Take one fire time of a schedule whose jobs go to `queue` (see [`FireOutcome`]).
    async fn fire(&self, queue: &str, fire: Fire) -> Result<FireOutcome>;
    /// Store a schedule's definition (its fire state is kept, or starts now); returns its last
    /// fire time (ms) and whether it is paused.
    async fn sync_schedule(&self, queue: &str, name: &str, def: &str) -> Result<(u64, bool)>;
    /// Pause, resume or remove a stored schedule; false when there is none by that name.
    async fn change_schedule(
        &self,
        queue: &str,
        name: &str,
        change: ScheduleChange,
    ) -> Result<bool>;
    /// The schedules stored for `queue`, in name order.
    async fn schedules(&self, queue: &str) -> Result<Vec<ScheduleState>>;
    /// Write flow members that live in `queue` (see `flow.lua`); like `enqueue`, a member
    /// whose id has a record already is not written again.
    async fn enqueue_flow(&self, queue: &str, members: Vec<FlowMember>) -> Result<Vec<Enqueued>>;
    /// Deliver what `queue`'s outbox holds to flow members of other queues; returns how many
    /// deliveries. Outcome calls relay by themselves; this is for ticks and tools.
    async fn relay(&self, queue: &str) -> Result<u64>;
    /// Make room for `count` more jobs in the batch whose callbacks (flow members of `queue`
    /// waiting on the batch's jobs) are `callbacks`: returns the position of the first new
    /// job, or None when no callback waits any more (the batch is over; see `batch_add.lua`).
    async fn batch_add(&self, queue: &str, callbacks: &[String], count: u32)
        -> Result<Option<u32>>;
}

/// How many replicas must confirm an enqueue before it is acknowledged (`WAIT`), and how long
/// to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// Open the broker a URL names: `redis://`, `rediss://`, `redis+sentinel://`, `memory://[name]`
/// (and `valkey` for `redis`).
pub async fn connect(url: &str) -> Result<Arc<dyn Broker>> {
    connect_with(url, None).await
}

/// [`connect`], with enqueues confirmed by `replication` replicas when given (Redis only).
pub async fn connect_with(url: &str, replication: Option<Replication>) -> Result<Arc<dyn Broker>> {
    let scheme = url.split("://").next().unwrap_or("");
    match scheme {
        "memory" if replication.is_some() => Err(Error::Invalid(format!(
            "{url:?} has no replicas: wait_replicas needs a Redis URL"
        ))),
        "memory" => Ok(memory::MemoryBroker::named(url)),
        "redis" | "rediss" | "valkey" | "valkeys" | "redis+sentinel" | "valkey+sentinel"
        | "rediss+sentinel" | "valkeys+sentinel" | "redis+cluster" | "valkey+cluster"
        | "rediss+cluster" | "valkeys+cluster" => {
            redis::RedisBroker::open_with(url, replication).await
        }
        _ => Err(Error::BadUrl(format!(
            "unsupported URL scheme in {url:?}: expected redis://, rediss://, redis+sentinel://, redis+cluster:// or memory://"
        ))),
    }
}
