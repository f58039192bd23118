//! `asyncq._core.Broker`: enqueue, inspect and administer queues.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tokio::sync::OnceCell;

use crate::batcher::Batcher;
use crate::bridge::{awaitable, awaitable_ok, block_on};
use crate::broker::{
    self, Broker, CancelOutcome, Executor, Fire, FireMode, FireOutcome, FlowMember, FollowUp,
    InputMode, JobSet, KeyMode, LimitOp, NewJob, OnFailure, ScheduleChange, WorkerInfo,
    MAX_PRIORITY,
};
use crate::codec::{compress_envelope, encode_envelope, sign, Meta, SIGNATURE_OVERHEAD};
use crate::consumer::{Consumer, ConsumerConfig, Prefetch};
use crate::engine::Engine;
use crate::errors::{Error, Result};
use crate::producer::{self, check_job_id, Reply};
use crate::py::consumer::PyConsumer;
use crate::py::events::PyEventStream;
use crate::py::info::PyJobInfo;

/// A broker connection and the enqueue batcher in front of it.
struct Connected {
    broker: Arc<dyn Broker>,
    batcher: Batcher,
    /// The process's engine on this connection: every consumer started from it shares it.
    engine: Engine,
}

/// A lazily connected broker handle; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    url: Arc<str>,
    /// Replicas every enqueue waits for (`App(wait_replicas=...)`).
    replication: Option<broker::Replication>,
    cell: Arc<OnceCell<Arc<Connected>>>,
}

impl Handle {
    async fn connected(&self) -> Result<Arc<Connected>> {
        self.cell
            .get_or_try_init(|| async {
                let broker = broker::connect_with(&self.url, self.replication).await?;
                let batcher = Batcher::start(broker.clone());
                let engine = Engine::new(broker.clone());
                Ok(Arc::new(Connected {
                    broker,
                    batcher,
                    engine,
                }))
            })
            .await
            .cloned()
    }

    pub async fn get(&self) -> Result<Arc<dyn Broker>> {
        Ok(self.connected().await?.broker.clone())
    }

    async fn engine(&self) -> Result<Engine> {
        Ok(self.connected().await?.engine.clone())
    }

    async fn batcher(&self) -> Result<Batcher> {
        Ok(self.connected().await?.batcher.clone())
    }
}

/// Check a URL's shape without connecting, so a bad one fails where it is written.
fn validate_url(url: &str) -> Result<()> {
    let ok = [
        "memory://",
        "redis://",
        "rediss://",
        "valkey://",
        "valkeys://",
        "redis+sentinel://",
        "valkey+sentinel://",
        "rediss+sentinel://",
        "valkeys+sentinel://",
        "redis+cluster://",
        "valkey+cluster://",
        "rediss+cluster://",
        "valkeys+cluster://",
    ]
    .iter()
    .any(|p| url.starts_with(p));
    if ok {
        broker::redis::check_url(url)
    } else {
        Err(Error::BadUrl(format!(
            "{url:?}: expected redis://host:port/db, rediss://..., redis+sentinel://host:port,.../service or memory://"
        )))
    }
}

fn not_memory() -> Error {
    Error::Invalid("a virtual clock needs the memory:// broker (Redis keeps its own time)".into())
}

fn ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

/// Options shared by every job of one enqueue call, read by name from the Python object
/// (`asyncq.task.CoreOptions`): adding one is a field here and a field there, not a shuffle
/// of positions.
#[derive(FromPyObject)]
pub struct EnqueueOptions {
    max_attempts: u32,
    /// Seconds; travels in the envelope (the one source of a run's timeout).
    timeout: Option<f64>,
    priority: i64,
    /// Seconds from now.
    delay: Option<f64>,
    /// Unix seconds.
    eta: Option<f64>,
    key: Option<String>,
    key_ttl: f64,
    /// How the key is held (`KeyMode::parse`): "plain", "start", "success", "throttle" or
    /// "debounce".
    key_mode: String,
    /// Seconds; a debounce's latest start after the first enqueue.
    max_wait: Option<f64>,
    max_payload: usize,
    job_id: Option<String>,
    /// `TaskConfig.executor`: "async", "thread" or "process".
    executor: String,
    /// One group spec per item ('' for none), for a task under limits or with a fair or
    /// ordered key (computed from each call's arguments by `asyncq.limits`); None: no groups.
    groups: Option<Vec<String>>,
    /// Fresh ids made by the caller, one per item (a partitioned queue's ids name their
    /// partition, see `asyncq.partitions`); None: made here.
    fresh_ids: Option<Vec<String>>,
    /// String headers carried in the envelope (`m.h`) to the worker: trace context.
    headers: Option<std::collections::HashMap<String, String>>,
    /// The task's id prefix for fresh ids (`<prefix>_<sortable id>`), if it has one.
    id_prefix: Option<String>,
    /// Compress envelopes longer than this many bytes with zstd; None: never.
    compress_over: Option<usize>,
    /// The serializer that turned each argument into an `asyncq.serialization.Serialized`
    /// value (carried as `m.c`); None: native msgpack.
    serializer: Option<String>,
}

/// The job id of each item: the caller's (for exactly one item), the fresh ones the caller
/// made, else fresh ones made here; made once, so every retry of the call resends the same ids.
fn job_ids(
    job_id: Option<&str>,
    fresh: Option<&[String]>,
    prefix: Option<&str>,
    count: usize,
) -> Result<Vec<String>> {
    if let Some(ids) = fresh {
        if ids.len() != count {
            return Err(Error::Invalid(format!(
                "{} fresh ids for {count} jobs",
                ids.len()
            )));
        }
        ids.iter().try_for_each(|id| check_job_id(id))?;
        return Ok(ids.to_vec());
    }
    let Some(id) = job_id else {
        if let Some(p) = prefix {
            crate::ids::check_prefix(p)?;
        }
        return Ok(crate::ids::fresh(prefix, count));
    };
    check_job_id(id)?;
    if count != 1 {
        return Err(Error::Invalid(format!(
            "job_id names one job, but this call enqueues {count}"
        )));
    }
    Ok(vec![id.to_owned()])
}

fn build_jobs(
    task: &str,
    arg_names: &[String],
    items: &Bound<'_, PyList>,
    opts: &EnqueueOptions,
    signing_key: Option<&[u8]>,
) -> Result<Vec<NewJob>> {
    let EnqueueOptions {
        max_attempts,
        timeout,
        priority,
        delay,
        eta,
        ref key,
        key_ttl,
        ref key_mode,
        max_wait,
        max_payload,
        ref job_id,
        ref fresh_ids,
        ref executor,
        ref groups,
        ref headers,
        ref id_prefix,
        compress_over,
        ref serializer,
    } = *opts;
    if groups.as_ref().is_some_and(|g| g.len() != items.len()) {
        return Err(Error::Invalid(format!(
            "{} group specs for {} jobs",
            groups.as_ref().map_or(0, Vec::len),
            items.len()
        )));
    }
    let executor = Executor::parse(executor)
        .ok_or_else(|| Error::Invalid(format!("unknown executor {executor:?}")))?;
    let key_mode = KeyMode::parse(key_mode, max_wait.map(ms))
        .ok_or_else(|| Error::Invalid(format!("unknown key mode {key_mode:?}")))?;
    // The limit holds for what travels, signature included.
    let overhead = signing_key.map_or(0, |_| SIGNATURE_OVERHEAD);
    let max_payload = max_payload.saturating_sub(overhead);
    if !(0..=MAX_PRIORITY).contains(&priority) {
        return Err(Error::Payload(format!(
            "priority must be between 0 and {MAX_PRIORITY}, got {priority}"
        )));
    }
    let mut headers: Vec<(String, String)> =
        headers.clone().unwrap_or_default().into_iter().collect();
    headers.sort(); // the same envelope bytes for the same call
    let meta = Meta {
        timeout_s: timeout,
        headers,
        serializer: serializer.clone(),
    };
    let ids = job_ids(
        job_id.as_deref(),
        fresh_ids.as_deref(),
        id_prefix.as_deref(),
        items.len(),
    )?;
    let mut jobs = Vec::with_capacity(items.len());
    for (i, (item, id)) in items.iter().zip(ids).enumerate() {
        let (args, kwargs): (Bound<'_, PyTuple>, Option<Bound<'_, PyDict>>) = item
            .extract()
            .map_err(|e: PyErr| Error::Payload(e.to_string()))?;
        let mut payload =
            encode_envelope(task, &args, kwargs.as_ref(), &meta, arg_names, max_payload)?;
        if let Some(over) = compress_over {
            payload = compress_envelope(task, payload, over);
        }
        if let Some(key) = signing_key {
            sign(&mut payload, key);
        }
        jobs.push(NewJob {
            id,
            payload,
            priority,
            delay_ms: delay.map(ms),
            eta_ms: eta.map(ms),
            max_attempts: max_attempts.max(1),
            key: key.clone(),
            key_ttl_ms: ms(key_ttl),
            key_mode,
            executor,
            group: groups
                .as_ref()
                .map(|g| g[i].clone())
                .filter(|g| !g.is_empty()),
        });
    }
    Ok(jobs)
}

/// Enqueue within the broker's enqueue timeout, retrying transient failures with the same ids.
async fn enqueue(h: Handle, queue: String, jobs: Vec<NewJob>, how: Delivery) -> Reply {
    let connect = || h.batcher();
    Reply(producer::enqueue(connect, &queue, jobs, how.timeout, how.fresh_ids).await)
}

/// How one enqueue call is delivered: its deadline and whether its ids were made for it.
#[derive(Clone, Copy)]
struct Delivery {
    timeout: Option<Duration>,
    fresh_ids: bool,
}

async fn job_info(h: Handle, queue: String, id: String) -> Result<Option<PyJobInfo>> {
    Ok(h.get().await?.job(&queue, &id).await?.map(PyJobInfo::from))
}

/// How long to sleep between reads when the end notifications are unavailable (the pub/sub
/// connection is down): a fallback to polling, not the normal path.
const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// Read job `id`; if it has not ended, wait up to `wait` to hear that it did, then read it
/// again. The waiter registers before the first read, so an ending in between is not missed;
/// a lost notification costs at most `wait`.
async fn finished_info(
    h: Handle,
    queue: String,
    id: String,
    wait: Duration,
) -> Result<Option<PyJobInfo>> {
    let broker = h.get().await?;
    let heard = broker.watch_end(&queue, &id).await;
    let info = broker.job(&queue, &id).await?;
    if info.as_ref().is_some_and(|i| !i.state.is_final()) {
        match heard {
            Ok(ended) => {
                let _ = tokio::time::timeout(wait, ended).await;
            }
            Err(_) => tokio::time::sleep(wait.min(FALLBACK_POLL)).await,
        }
        return job_info(h, queue, id).await;
    }
    Ok(info.map(PyJobInfo::from))
}

/// Check a schedule name (raises ValueError saying what is allowed).
/// `count` fresh job ids (`<prefix>_<sortable id>`, or the id alone), as the core makes them.
#[pyfunction]
#[pyo3(signature = (count, prefix=None))]
pub fn new_job_ids(count: usize, prefix: Option<&str>) -> PyResult<Vec<String>> {
    if let Some(p) = prefix {
        crate::ids::check_prefix(p)?;
    }
    Ok(crate::ids::fresh(prefix, count))
}

/// A call's arguments as a worker would receive them: encoded into an envelope as an enqueue
/// would (the same errors, naming the argument; the same size limit), then decoded. For
/// eager mode (`App(eager=True)`), which runs the task inline instead of enqueueing it.
#[pyfunction]
pub fn eager_roundtrip<'py>(
    py: Python<'py>,
    task: &str,
    arg_names: Vec<String>,
    args: Bound<'py, PyTuple>,
    kwargs: Option<Bound<'py, PyDict>>,
    max_payload: usize,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    let bytes = encode_envelope(
        task,
        &args,
        kwargs.as_ref(),
        &Meta::default(),
        &arg_names,
        max_payload,
    )?;
    let env = crate::codec::parse_envelope(&bytes, usize::MAX)
        .map_err(|p| Error::Payload(p.message()))?;
    crate::codec::decode_args(py, &env)
}

/// A result as a reader of the job's record would see it: encoded as an ack would (a
/// TypeError naming what cannot be stored), then decoded. For eager mode.
#[pyfunction]
pub fn eager_result<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let bytes = crate::codec::encode_value(&value, "result")?;
    crate::codec::decode_value(py, &bytes)
}

#[pyfunction]
pub fn check_schedule_name(name: &str) -> PyResult<()> {
    Ok(crate::broker::check_schedule_name(name)?)
}

/// Check a progress report (raises ValueError naming what is wrong): the one rule, which
/// Python applies where no Job is at hand (a process-pool child) before sending a report.
#[pyfunction]
#[pyo3(signature = (fraction, message=None))]
pub fn check_progress(fraction: f64, message: Option<&str>) -> PyResult<()> {
    Ok(crate::broker::check_progress(fraction, message)?)
}

/// Check a snooze's length (raises ValueError): `asyncq.Snooze` applies it when raised.
#[pyfunction]
pub fn check_snooze(seconds: f64) -> PyResult<()> {
    crate::broker::snooze_delay_ms(seconds)?;
    Ok(())
}

/// Broker handle exposed to Python as `asyncq._core.Broker`.
#[derive(Clone)]
#[pyclass(frozen, name = "Broker", module = "asyncq._core")]
pub struct PyBroker {
    handle: Handle,
    /// Envelope signing keys: the first signs, all are accepted by consumers made here.
    signing_keys: Vec<Vec<u8>>,
    /// Deadline of one enqueue call, retries included (None: no limit).
    enqueue_timeout: Option<Duration>,
}

impl PyBroker {
    fn signing_key(&self) -> Option<&[u8]> {
        self.signing_keys.first().map(Vec::as_slice)
    }

    fn delivery(&self, options: &EnqueueOptions) -> Delivery {
        Delivery {
            timeout: self.enqueue_timeout,
            fresh_ids: options.job_id.is_none(),
        }
    }
}

/// What `wait_replicas` and `wait_timeout` ask for: nothing when no replica is to be waited for.
fn replication(url: &str, replicas: u32, timeout_s: f64) -> Result<Option<broker::Replication>> {
    if replicas == 0 {
        return Ok(None);
    }
    if url.starts_with("memory://") {
        return Err(Error::Invalid(format!(
            "{url:?} has no replicas: wait_replicas needs a Redis URL"
        )));
    }
    // WAIT 0 would wait forever; a positive timeout keeps every enqueue bounded.
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(Error::Invalid(format!(
            "wait_timeout must be a positive number of seconds, got {timeout_s}"
        )));
    }
    Ok(Some(broker::Replication {
        replicas,
        timeout_ms: ms(timeout_s).max(1),
    }))
}

/// The enqueue timeout in seconds as a deadline; it must be a positive number or None.
fn enqueue_deadline(seconds: Option<f64>) -> Result<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(Error::Invalid(format!(
            "enqueue_timeout must be a positive number of seconds or None, got {s}"
        ))),
    }
}

#[pymethods]
impl PyBroker {
    #[new]
    #[pyo3(signature = (url, signing_keys=Vec::new(), enqueue_timeout=Some(5.0), wait_replicas=0, wait_timeout=1.0))]
    fn new(
        url: &str,
        signing_keys: Vec<Vec<u8>>,
        enqueue_timeout: Option<f64>,
        wait_replicas: u32,
        wait_timeout: f64,
    ) -> PyResult<Self> {
        validate_url(url)?;
        let enqueue_timeout = enqueue_deadline(enqueue_timeout)?;
        if signing_keys.iter().any(Vec::is_empty) {
            return Err(Error::BadUrl("a signing key must not be empty".into()).into());
        }
        let replication = replication(url, wait_replicas, wait_timeout)?;
        Ok(PyBroker {
            handle: Handle {
                url: url.into(),
                replication,
                cell: Arc::new(OnceCell::new()),
            },
            signing_keys,
            enqueue_timeout,
        })
    }

    #[getter]
    fn url(&self) -> &str {
        &self.handle.url
    }

    /// The same settings (signing keys and all) on another URL; connects on first use.
    fn with_url(&self, url: &str) -> PyResult<Self> {
        validate_url(url)?;
        let mut other = self.clone();
        if other.handle.replication.is_some() && url.starts_with("memory://") {
            return Err(Error::Invalid(format!(
                "{url:?} has no replicas: wait_replicas needs a Redis URL"
            ))
            .into());
        }
        other.handle = Handle {
            url: url.into(),
            replication: other.handle.replication,
            cell: Arc::new(OnceCell::new()),
        };
        Ok(other)
    }

    /// Encode and enqueue jobs of one task; returns `[(job_id, created), ...]`.
    fn enqueue<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        task: &str,
        arg_names: Vec<String>,
        items: &Bound<'py, PyList>,
        options: EnqueueOptions,
    ) -> PyResult<Bound<'py, PyAny>> {
        let jobs = build_jobs(task, &arg_names, items, &options, self.signing_key())?;
        let how = self.delivery(&options);
        awaitable_ok(py, enqueue(self.handle.clone(), queue, jobs, how))
    }

    /// Blocking `enqueue` for sync callers; releases the GIL while waiting.
    fn enqueue_blocking<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        task: &str,
        arg_names: Vec<String>,
        items: &Bound<'_, PyList>,
        options: EnqueueOptions,
    ) -> PyResult<Bound<'py, PyAny>> {
        let jobs = build_jobs(task, &arg_names, items, &options, self.signing_key())?;
        let how = self.delivery(&options);
        let reply = block_on(py, async {
            Ok(enqueue(self.handle.clone(), queue, jobs, how).await)
        })?;
        reply.into_pyobject(py)
    }

    /// Enqueue payloads exactly as given (no encoding): for tools and tests that need to
    /// write malformed or foreign messages. Returns the new job ids.
    fn enqueue_raw<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        payloads: Vec<Vec<u8>>,
        max_attempts: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let jobs = payloads
            .into_iter()
            .map(|payload| NewJob {
                id: crate::ids::fresh(None, 1).remove(0),
                payload,
                priority: 0,
                delay_ms: None,
                eta_ms: None,
                max_attempts: max_attempts.max(1),
                key: None,
                key_ttl_ms: 0,
                key_mode: Default::default(),
                executor: Executor::Async,
                group: None,
            })
            .collect();
        let h = self.handle.clone();
        awaitable(py, async move {
            let done = h.batcher().await?.enqueue(queue, jobs).await?;
            Ok(done.into_iter().map(|e| e.id).collect::<Vec<_>>())
        })
    }

    fn job<'py>(&self, py: Python<'py>, queue: String, id: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, job_info(self.handle.clone(), queue, id))
    }

    fn job_blocking(
        &self,
        py: Python<'_>,
        queue: String,
        id: String,
    ) -> PyResult<Option<PyJobInfo>> {
        block_on(py, job_info(self.handle.clone(), queue, id))
    }

    /// The job's record once it has ended, or after waiting `wait` seconds for it to end
    /// (whatever its state then); None when there is no such job. Woken by the scripts' end
    /// notifications, not by polling.
    fn wait_finished<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        id: String,
        wait: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let wait = Duration::from_secs_f64(wait.clamp(0.0, 3600.0));
        awaitable(py, finished_info(self.handle.clone(), queue, id, wait))
    }

    /// [`PyBroker::wait_finished`] for sync callers (releases the GIL while it waits).
    fn wait_finished_blocking(
        &self,
        py: Python<'_>,
        queue: String,
        id: String,
        wait: f64,
    ) -> PyResult<Option<PyJobInfo>> {
        let wait = Duration::from_secs_f64(wait.clamp(0.0, 3600.0));
        block_on(py, finished_info(self.handle.clone(), queue, id, wait))
    }

    fn cancel<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            Ok(match h.get().await?.cancel(&queue, &id).await? {
                CancelOutcome::Cancelled => "cancelled",
                CancelOutcome::Requested => "requested",
                CancelOutcome::Finished => "finished",
                CancelOutcome::NotFound => "not_found",
            })
        })
    }

    /// Counts per state plus lifetime totals, as a dict.
    fn counts<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let c = h.get().await?.counts(&queue).await?;
            Ok(vec![
                ("scheduled", c.scheduled),
                ("queued", c.queued),
                ("running", c.running),
                ("dead", c.dead),
                ("succeeded_total", c.succeeded_total),
                ("failed_total", c.failed_total),
                ("paused", u64::from(c.paused)),
                ("ready", c.ready),
            ]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>())
        })
    }

    fn queues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move { h.get().await?.queues().await })
    }

    fn dead_ids<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        limit: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(
            py,
            async move { h.get().await?.dead_ids(&queue, limit).await },
        )
    }

    /// One page of the ids in a state's set (`queued`, `scheduled`, `running`, `dead`).
    fn job_ids<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        state: &str,
        offset: usize,
        count: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let set = JobSet::parse(state).ok_or_else(|| {
            PyValueError::new_err(format!(
                "cannot list jobs in state {state:?}: expected queued, scheduled, running or dead"
            ))
        })?;
        let h = self.handle.clone();
        awaitable(py, async move {
            h.get().await?.job_ids(&queue, set, offset, count).await
        })
    }

    /// The records of many jobs in one round trip; None where a record is gone.
    fn jobs<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        ids: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let found = h.get().await?.jobs(&queue, &ids).await?;
            Ok(found
                .into_iter()
                .map(|info| info.map(PyJobInfo::from))
                .collect::<Vec<_>>())
        })
    }

    #[pyo3(signature = (queue, ids=None))]
    fn retry_dead<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        ids: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(
            py,
            async move { h.get().await?.retry_dead(&queue, ids).await },
        )
    }

    fn purge<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move { h.get().await?.purge(&queue).await })
    }

    /// Pause (`paused=True`) or resume a queue; true when the state changed.
    fn pause<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        paused: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(
            py,
            async move { h.get().await?.pause(&queue, paused).await },
        )
    }

    /// Delete a job that is not running: `"deleted"`, `"running"` (refused) or `"missing"`.
    fn delete_job<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            Ok(match h.get().await?.delete_job(&queue, &id).await? {
                crate::broker::DeleteOutcome::Deleted => "deleted",
                crate::broker::DeleteOutcome::Running => "running",
                crate::broker::DeleteOutcome::NotFound => "missing",
            })
        })
    }

    fn register_worker<'py>(
        &self,
        py: Python<'py>,
        id: String,
        info: String,
        ttl: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        let w = WorkerInfo {
            id,
            info,
            last_seen_ms: 0,
        };
        awaitable(py, async move {
            h.get().await?.register_worker(&w, ms(ttl)).await
        })
    }

    fn unregister_worker<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(
            py,
            async move { h.get().await?.unregister_worker(&id).await },
        )
    }

    /// Live workers as `[(id, info_json, last_seen_unix_seconds)]`.
    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let ws = h.get().await?.workers().await?;
            Ok(ws
                .into_iter()
                .map(|w| (w.id, w.info, w.last_seen_ms as f64 / 1000.0))
                .collect::<Vec<_>>())
        })
    }

    /// Server facts for startup checks (see `Broker::server_check`), as a dict.
    fn server_check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let facts = h.get().await?.server_check().await?;
            Ok(facts
                .into_iter()
                .collect::<std::collections::HashMap<String, String>>())
        })
    }

    /// Take fire time `fire_ms` of schedule `schedule` (`mode`: "allow", "skip" or "pass"),
    /// enqueueing one job of `task` with `args`/`kwargs` and `options` (whose `job_id` names
    /// the fire). Returns `(outcome, ms)`: "enqueued", "paused", "overlap" or "passed" with the
    /// fire time, "taken" with the schedule's last fire time, "early" with the broker's now,
    /// or "removed" with 0.
    #[allow(clippy::too_many_arguments)]
    fn fire<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        schedule: String,
        fire_ms: u64,
        mode: &str,
        task: &str,
        arg_names: Vec<String>,
        items: &Bound<'py, PyList>,
        options: EnqueueOptions,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = match mode {
            "allow" => FireMode::Allow,
            "skip" => FireMode::Skip,
            "pass" => FireMode::Pass,
            other => return Err(Error::Invalid(format!("unknown fire mode {other:?}")).into()),
        };
        let mut jobs = build_jobs(task, &arg_names, items, &options, self.signing_key())?;
        let job = match (jobs.pop(), jobs.is_empty()) {
            (Some(job), true) => job,
            _ => return Err(Error::Invalid("a fire enqueues exactly one job".into()).into()),
        };
        let h = self.handle.clone();
        awaitable(py, async move {
            let fire = Fire {
                schedule,
                fire_ms,
                mode,
                job,
            };
            Ok(match h.get().await?.fire(&queue, fire).await? {
                FireOutcome::Enqueued => ("enqueued", fire_ms),
                FireOutcome::Taken { last_ms } => ("taken", last_ms),
                FireOutcome::Paused => ("paused", fire_ms),
                FireOutcome::Overlap => ("overlap", fire_ms),
                FireOutcome::Passed => ("passed", fire_ms),
                FireOutcome::Early { now_ms } => ("early", now_ms),
                FireOutcome::Removed => ("removed", 0),
            })
        })
    }

    /// Write flow members that live in `queue`; each member is
    /// `(task, arg_names, args, kwargs, options, parents, mode, follow_ups)` with `mode` "one"
    /// or "list" and `follow_ups` a list of `(queue, child_id, index, policy)`. Returns
    /// `[(job_id, created), ...]`.
    #[allow(clippy::type_complexity)]
    fn enqueue_flow<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        members: Vec<(
            String,
            Vec<String>,
            Bound<'py, PyTuple>,
            Option<Bound<'py, PyDict>>,
            EnqueueOptions,
            u32,
            String,
            Vec<(String, String, u32, String)>,
        )>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut out = Vec::with_capacity(members.len());
        for (task, arg_names, args, kwargs, options, parents, mode, follow_ups) in members {
            let items = PyList::new(py, [(args, kwargs)])?;
            let mut jobs = build_jobs(&task, &arg_names, &items, &options, self.signing_key())?;
            let job = jobs
                .pop()
                .ok_or_else(|| Error::Invalid("no job built".into()))?;
            let mode = match mode.as_str() {
                "one" => InputMode::One,
                "list" => InputMode::List,
                other => return Err(Error::Invalid(format!("unknown input mode {other:?}")).into()),
            };
            let follow_ups = follow_ups
                .into_iter()
                .map(|(queue, child, index, policy)| {
                    let policy = OnFailure::parse(&policy)
                        .ok_or_else(|| Error::Invalid(format!("unknown on_failure {policy:?}")))?;
                    Ok(FollowUp {
                        queue,
                        child,
                        index,
                        policy,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(FlowMember {
                job,
                parents,
                mode,
                follow_ups,
            });
        }
        let h = self.handle.clone();
        awaitable(py, async move {
            let done = h.get().await?.enqueue_flow(&queue, out).await?;
            Ok(done
                .into_iter()
                .map(|e| (e.id, e.created))
                .collect::<Vec<_>>())
        })
    }

    /// Make room for `count` more jobs in a batch (see `Broker::batch_add`): the position of
    /// the first new job, or None when the batch is over.
    fn batch_add<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        callbacks: Vec<String>,
        count: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            h.get().await?.batch_add(&queue, &callbacks, count).await
        })
    }

    /// Store a schedule's definition; returns `(last_fire_ms, paused)`.
    fn sync_schedule<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        name: String,
        definition: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            h.get()
                .await?
                .sync_schedule(&queue, &name, &definition)
                .await
        })
    }

    /// Pause, resume or remove a stored schedule (`change`: "pause", "resume", "remove");
    /// False when there is none by that name in `queue`.
    fn change_schedule<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        name: String,
        change: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let change = match change {
            "pause" => ScheduleChange::Pause,
            "resume" => ScheduleChange::Resume,
            "remove" => ScheduleChange::Remove,
            other => return Err(Error::Invalid(format!("unknown change {other:?}")).into()),
        };
        let h = self.handle.clone();
        awaitable(py, async move {
            h.get().await?.change_schedule(&queue, &name, change).await
        })
    }

    /// Write limiter settings of `queue`: `op` is "declare", "set" or "clear", `families`
    /// (family, settings) pairs. Returns how many families changed.
    fn set_limits<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        op: String,
        families: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = LimitOp::parse(&op)
            .ok_or_else(|| Error::Invalid(format!("unknown limits operation {op:?}")))?;
        let h = self.handle.clone();
        awaitable(py, async move {
            h.get().await?.set_limits(&queue, op, families).await
        })
    }

    /// Every limiter family of `queue`, in name order, as tuples
    /// `(family, declared, overridden, running, waiting, keys_waiting)`.
    fn limits<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let rows = h.get().await?.limits(&queue).await?;
            Ok(rows
                .into_iter()
                .map(|l| {
                    let counts = (l.running, l.waiting, l.keys_waiting);
                    (
                        l.family,
                        l.declared,
                        l.overridden,
                        counts.0,
                        counts.1,
                        counts.2,
                    )
                })
                .collect::<Vec<_>>())
        })
    }

    /// The schedules stored for `queue`, in name order, as tuples
    /// `(name, definition, last_fire_ms, last_job_id | None, paused, fired, skipped)`.
    fn schedules<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let rows = h.get().await?.schedules(&queue).await?;
            Ok(rows
                .into_iter()
                .map(|s| {
                    (
                        s.name, s.def, s.last_ms, s.job, s.paused, s.fired, s.skipped,
                    )
                })
                .collect::<Vec<_>>())
        })
    }

    /// Open a live stream of `queue`'s events (an `EventStream`): subscribed, and the queue
    /// marked watched, by the time the awaitable resolves.
    fn events<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let broker = h.get().await?;
            PyEventStream::open(broker, queue).await
        })
    }

    /// Broker time in unix seconds; also a connectivity check.
    fn now<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            Ok(h.get().await?.now_ms().await? as f64 / 1000.0)
        })
    }

    /// Serve Prometheus metrics on `host:port` (0: any free port) for `queues`, the queues this
    /// process consumes (jobs per state and limiters are read from Redis for them at each
    /// scrape, cached for a second). Counting starts now: call it before starting consumers.
    fn serve_metrics<'py>(
        &self,
        py: Python<'py>,
        host: String,
        port: u16,
        queues: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let engine = h.engine().await?;
            let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .map_err(|e| {
                    Error::Invalid(format!("cannot serve metrics on {host}:{port}: {e}"))
                })?;
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
            let exporter = crate::metrics::Exporter::new(engine, queues);
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(crate::metrics::serve(
                listener,
                exporter.clone(),
                stop.clone(),
            ));
            Ok(crate::py::metrics::PyMetricsServer::new(
                exporter, stop, port,
            ))
        })
    }

    /// Promote `queue`'s due scheduled jobs and wake its limiters whose time came, leasing
    /// nothing (a fetch of 0 jobs): what `asyncq.testing.drain` looks with.
    fn promote<'py>(&self, py: Python<'py>, queue: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let want = broker::Want {
                jobs: 0,
                threads: None,
                processes: None,
            };
            h.get().await?.fetch(&queue, want, 1, "promote").await?;
            Ok(())
        })
    }

    /// Stop a `memory://` broker's clock (`asyncq.testing`'s virtual clock): from now on only
    /// `advance_clock` moves it. Shared by every App on the same `memory://` name.
    fn freeze_clock<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            let broker = h.get().await?;
            let memory = broker.as_memory().ok_or_else(not_memory)?;
            memory.freeze();
            Ok(())
        })
    }

    /// Move a `memory://` broker's clock forward by `seconds`.
    fn advance_clock<'py>(&self, py: Python<'py>, seconds: f64) -> PyResult<Bound<'py, PyAny>> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "the clock only moves forward: seconds must be >= 0, got {seconds}"
            )));
        }
        let h = self.handle.clone();
        awaitable(py, async move {
            let broker = h.get().await?;
            let memory = broker.as_memory().ok_or_else(not_memory)?;
            memory.advance(ms(seconds));
            Ok(())
        })
    }

    /// Record the event loop's lag (seconds) for `asyncq_event_loop_lag_seconds`; ignored
    /// until metrics are served.
    fn set_loop_lag(&self, seconds: f64) {
        if let Some(connected) = self.handle.cell.get() {
            if let Some(m) = connected.engine.metrics() {
                let us = (seconds.max(0.0) * 1e6) as u64;
                m.loop_lag_us
                    .store(us, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// What this process's engine on this broker did (`engine`: waits, wake-ups, reaps, ...)
    /// and, per queue, what every consumer it ran there did (`queues`). Empty before the
    /// broker connected.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let engine = PyDict::new(py);
        let queues = PyDict::new(py);
        if let Some(connected) = self.handle.cell.get() {
            for (name, value) in connected.engine.counters().snapshot() {
                engine.set_item(name, value)?;
            }
            for (queue, stats) in connected.engine.all_queue_stats() {
                let one = PyDict::new(py);
                for (name, value) in stats.snapshot() {
                    one.set_item(name, value)?;
                }
                queues.set_item(queue, one)?;
            }
        }
        out.set_item("engine", engine)?;
        out.set_item("queues", queues)?;
        Ok(out)
    }

    /// Start a consumer for one queue (connects first, so an unreachable broker fails here).
    #[pyo3(signature = (queue, worker_id, tasks, *, lease, heartbeat, reap, idle_wait, result_ttl, dead_ttl, max_payload, prefetch=None))]
    #[allow(clippy::too_many_arguments)]
    fn consumer<'py>(
        &self,
        py: Python<'py>,
        queue: String,
        worker_id: String,
        tasks: Vec<String>,
        lease: f64,
        heartbeat: f64,
        reap: f64,
        idle_wait: f64,
        result_ttl: f64,
        dead_ttl: f64,
        max_payload: usize,
        prefetch: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cfg = ConsumerConfig {
            queue,
            worker_id,
            lease_ms: ms(lease).max(1),
            heartbeat_ms: ms(heartbeat).max(1),
            reap_ms: ms(reap).max(1),
            idle_wait_ms: ms(idle_wait).max(1),
            result_ttl_ms: ms(result_ttl),
            dead_ttl_ms: ms(dead_ttl),
            max_payload,
            tasks: tasks.into_iter().collect::<HashSet<_>>(),
            prefetch: match prefetch {
                None => Prefetch::Auto,
                Some(true) => Prefetch::On,
                Some(false) => Prefetch::Off,
            },
            signing_keys: self.signing_keys.clone(),
        };
        let h = self.handle.clone();
        awaitable(py, async move {
            let engine = h.engine().await?;
            engine.broker().now_ms().await?;
            Ok(PyConsumer::new(Consumer::start(&engine, cfg)))
        })
    }
}
