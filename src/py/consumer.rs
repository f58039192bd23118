//! `asyncq._core.Consumer` and `asyncq._core.Job`: the worker's side of the boundary.
//!
//! One `fetch` crossing carries a whole batch, decoded into Python objects in one pass; outcomes
//! are queued with a plain (non-async) call and flushed by Rust.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::backoff::Backoff;
use crate::bridge::awaitable_ok;
use crate::broker::{
    check_progress, snooze_delay_ms, Ack, Fail, FailOutcome, Lease, ProgressReport, Snooze, Want,
};
use crate::codec::{decode_value, encode_value, ErrorRecord};
use crate::consumer::{Consumer, Event, Fetched, Outcome};

/// A leased job handed to Python.
#[pyclass(frozen, name = "Job", module = "asyncq._core")]
pub struct PyJob {
    #[pyo3(get)]
    id: String,
    #[pyo3(get)]
    queue: String,
    #[pyo3(get)]
    task: String,
    #[pyo3(get)]
    args: Py<PyTuple>,
    #[pyo3(get)]
    kwargs: Py<PyDict>,
    #[pyo3(get)]
    attempt: u32,
    #[pyo3(get)]
    max_attempts: u32,
    #[pyo3(get)]
    token: u64,
    /// Unix seconds.
    #[pyo3(get)]
    enqueued_at: f64,
    /// Seconds, from the task's options at enqueue time.
    #[pyo3(get)]
    timeout: Option<f64>,
    /// The envelope's string headers (trace context), as the producer attached them.
    headers: Vec<(String, String)>,
    /// The serializer of the arguments (envelope `m.c`); None for native msgpack.
    #[pyo3(get)]
    serializer: Option<String>,
    /// Set by the first outcome queued for this job; later ones are ignored.
    settled: AtomicBool,
    /// Where an abandoned job's failure goes (weak: a job must not keep its consumer alive).
    consumer: Weak<Consumer>,
}

#[pymethods]
impl PyJob {
    /// The envelope's string headers (trace context), as a new dict.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, value) in &self.headers {
            out.set_item(name, value)?;
        }
        Ok(out)
    }

    /// Report progress: `fraction` done, from 0.0 to 1.0, and an optional note. Sent in the
    /// background with the consumer's next flush (never blocks; callable from any thread);
    /// dropped once this job's outcome was queued, or when its lease turns out stale.
    #[pyo3(signature = (fraction, message=None))]
    fn progress(&self, fraction: f64, message: Option<String>) -> PyResult<()> {
        check_progress(fraction, message.as_deref())?;
        if self.settled.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.progress(ProgressReport {
                lease: self.lease(),
                fraction,
                message,
            });
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "Job(id={:?}, task={:?}, queue={:?}, attempt={})",
            self.id, self.task, self.queue, self.attempt
        )
    }
}

impl PyJob {
    fn lease(&self) -> Lease {
        Lease {
            id: self.id.clone(),
            token: self.token,
        }
    }

    /// Claim the right to record this job's outcome: true the first time only.
    fn settle(&self) -> bool {
        !self.settled.swap(true, Ordering::AcqRel)
    }
}

/// The safety net: a job whose Python object goes away with no outcome queued (a bug, or an
/// exception that escaped the worker's error path) is failed as `abandoned` instead of keeping
/// its lease, renewed forever by Rust, with nobody left to finish it.
impl Drop for PyJob {
    fn drop(&mut self) {
        if !self.settle() {
            return;
        }
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.abandon(self.lease());
        }
    }
}

/// A fetched batch; turned into a list of `Job` under the GIL on the event loop's thread.
/// Dropped unconverted (its asyncio future was cancelled after the fetch finished), it hands
/// its jobs back to the queue at once.
struct Batch {
    jobs: Vec<Fetched>,
    consumer: Arc<Consumer>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.consumer.hand_back(std::mem::take(&mut self.jobs));
    }
}

impl<'py> IntoPyObject<'py> for Batch {
    type Target = PyList;
    type Output = Bound<'py, PyList>;
    type Error = PyErr;

    fn into_pyobject(mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let queue = &self.consumer.config().queue;
        let owner = Arc::downgrade(&self.consumer);
        // Taken one at a time (popped, hence reversed): if Python fails half-way, `drop`
        // hands back the rest.
        self.jobs.reverse();
        while let Some(f) = self.jobs.pop() {
            match to_job(py, queue, &f, owner.clone()) {
                Ok(job) => list.append(Bound::new(py, job)?)?,
                Err(err) => dead_letter(&self.consumer, &f, err.to_string()),
            }
        }
        Ok(list)
    }
}

/// Decode a job the consumer validated already (its spans come from that validation).
fn to_job(py: Python<'_>, queue: &str, f: &Fetched, consumer: Weak<Consumer>) -> PyResult<PyJob> {
    let payload = f.job.payload.as_slice();
    let (mut args, kwargs) = f.spans.decode_args(py, payload)?;
    if let Some(input) = &f.job.input {
        args = with_input(py, &args, input)?;
    }
    Ok(PyJob {
        id: f.job.id.clone(),
        queue: queue.to_string(),
        task: f.spans.task(payload).to_string(),
        args: args.unbind(),
        kwargs: kwargs.unbind(),
        attempt: f.job.attempt,
        max_attempts: f.job.max_attempts,
        token: f.job.token,
        enqueued_at: f.job.enqueued_ms as f64 / 1000.0,
        timeout: f.timeout_s,
        headers: f.headers.clone(),
        serializer: f.serializer.clone(),
        settled: AtomicBool::new(false),
        consumer,
    })
}

/// A flow member's arguments: what its parents delivered first, then its own. The input is
/// passed through `asyncq.flows._input` (which turns failed-member markers into
/// `asyncq.Failed` values); only flow members pay for it.
fn with_input<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    input: &[u8],
) -> PyResult<Bound<'py, PyTuple>> {
    static INPUT: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let convert = INPUT.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("asyncq.flows")?.getattr("_input")?.unbind())
    })?;
    let value = convert.call1(py, (decode_value(py, input)?,))?;
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(value.into_bound(py));
    all.extend(args.iter());
    PyTuple::new(py, all)
}

/// A payload that validated but still failed to decode: never run it, dead-letter it.
fn dead_letter(consumer: &Consumer, f: &Fetched, message: String) {
    let lease = Lease {
        id: f.job.id.clone(),
        token: f.job.token,
    };
    consumer.finish_failed(lease, "PoisonMessage", "bad_payload".into(), message, false);
}

/// Something a consumer reports, exposed as `asyncq._core.ConsumerEvent`: `kind` says what,
/// and only the fields that kind carries are set.
#[pyclass(frozen, name = "ConsumerEvent", module = "asyncq._core")]
pub struct PyConsumerEvent {
    /// `cancel`, `lost`, `gone`, `abandoned`, `broker_down`, `broker_up`, `script_error`,
    /// `refused` or `poison`.
    #[pyo3(get)]
    kind: &'static str,
    /// The job concerned (every kind but `broker_down`, `broker_up`, `script_error`).
    #[pyo3(get)]
    job_id: Option<String>,
    /// Why a `poison` job was dead-lettered (e.g. `bad_payload`).
    #[pyo3(get)]
    reason: Option<String>,
    /// The broker's error text (`broker_down`, `script_error`).
    #[pyo3(get)]
    message: Option<String>,
}

#[pymethods]
impl PyConsumerEvent {
    fn __repr__(&self) -> String {
        format!(
            "ConsumerEvent(kind={:?}, job_id={:?}, reason={:?}, message={:?})",
            self.kind, self.job_id, self.reason, self.message
        )
    }
}

impl From<Event> for PyConsumerEvent {
    fn from(e: Event) -> Self {
        let (kind, job_id, reason, message) = match e {
            Event::Cancel(id) => ("cancel", Some(id), None, None),
            Event::Lost(id) => ("lost", Some(id), None, None),
            Event::Gone(id) => ("gone", Some(id), None, None),
            Event::Abandoned(id) => ("abandoned", Some(id), None, None),
            Event::BrokerDown(msg) => ("broker_down", None, None, Some(msg)),
            Event::BrokerUp => ("broker_up", None, None, None),
            Event::ScriptError(msg) => ("script_error", None, None, Some(msg)),
            Event::Refused(id) => ("refused", Some(id), None, None),
            Event::Poison { id, reason } => ("poison", Some(id), Some(reason), None),
        };
        PyConsumerEvent {
            kind,
            job_id,
            reason,
            message,
        }
    }
}

/// The fail script's verdict as Python sees it (`Consumer.fail`).
fn verdict_name(v: FailOutcome) -> &'static str {
    match v {
        FailOutcome::Retrying => "retrying",
        FailOutcome::Dead => "dead",
        FailOutcome::Cancelled => "cancelled",
        FailOutcome::Stale => "refused",
    }
}

/// The consumer of one queue, exposed as `asyncq._core.Consumer`. Only the first outcome
/// (ack, fail, cancelled, release) queued for a job counts; later ones are ignored.
#[pyclass(frozen, name = "Consumer", module = "asyncq._core")]
pub struct PyConsumer {
    inner: Arc<Consumer>,
}

impl PyConsumer {
    pub fn new(inner: Consumer) -> Self {
        PyConsumer {
            inner: Arc::new(inner),
        }
    }
}

#[pymethods]
impl PyConsumer {
    #[getter]
    fn queue(&self) -> &str {
        &self.inner.config().queue
    }

    /// Whether to lease ahead of the capacity to start jobs now (prefetch on, or auto while
    /// jobs run short).
    #[getter]
    fn leases_ahead(&self) -> bool {
        self.inner.leases_ahead()
    }

    /// Lease up to `max` jobs, of which at most `threads` run in threads and `processes` in
    /// child processes (None: unbounded); resolves when at least one is ready, or with `[]`
    /// once stopped or when what is ready needs slots not granted.
    #[pyo3(signature = (max, threads=None, processes=None))]
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        threads: Option<usize>,
        processes: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let consumer = self.inner.clone();
        let want = want(max, threads, processes);
        awaitable_ok(py, async move {
            let jobs = consumer.fetch(want).await;
            Batch { jobs, consumer }
        })
    }

    /// Lease up to `max` jobs that are ready now, without waiting (see `Consumer::fetch_now`);
    /// `[]` when none are. `threads` and `processes` as for `fetch`.
    #[pyo3(signature = (max, threads=None, processes=None))]
    fn fetch_now<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        threads: Option<usize>,
        processes: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let consumer = self.inner.clone();
        let want = want(max, threads, processes);
        awaitable_ok(py, async move {
            let jobs = consumer.fetch_now(want).await;
            Batch { jobs, consumer }
        })
    }

    /// Resolve once work may be ready: the queue was woken, a scheduled job fell due, the
    /// idle wait passed, or the consumer stopped.
    fn wait_ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let consumer = self.inner.clone();
        awaitable_ok(py, async move {
            consumer.wait_ready().await;
        })
    }

    /// Queue a success; raises TypeError when the result cannot be serialized.
    #[pyo3(signature = (job, result, result_ttl=None))]
    fn ack(&self, job: &PyJob, result: &Bound<'_, PyAny>, result_ttl: Option<f64>) -> PyResult<()> {
        let bytes = encode_value(result, "the task's return value")?;
        if !job.settle() {
            return Ok(());
        }
        let ttl = result_ttl.map_or(self.inner.config().result_ttl_ms, |s| (s * 1000.0) as u64);
        self.inner.send(Outcome::Ack(Ack {
            lease: job.lease(),
            result: bytes,
            result_ttl_ms: ttl,
        }));
        Ok(())
    }

    /// Queue a failure. `retry=(base_s, cap_s, jitter)` retries with backoff if attempts remain;
    /// `None` dead-letters the job now. The failure is flushed in a batch like any outcome; the
    /// returned awaitable resolves afterwards to the fail script's verdict: `retrying`, `dead`,
    /// `cancelled`, `refused` (stale lease), or `unknown` when none came (the consumer closed
    /// before the flush, or an earlier outcome of this job was queued already). Not awaiting it
    /// is fine.
    #[pyo3(signature = (job, kind, message, traceback, reason, retry))]
    #[allow(clippy::too_many_arguments)]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        job: &PyJob,
        kind: String,
        message: String,
        traceback: String,
        reason: String,
        retry: Option<(f64, f64, f64)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !job.settle() {
            return awaitable_ok(py, async { "unknown" });
        }
        let delay = retry.map(|(base, cap, jitter)| {
            let b = Backoff {
                base_ms: (base.max(0.0) * 1000.0) as u64,
                cap_ms: (cap.max(0.0) * 1000.0) as u64,
                jitter: jitter.clamp(0.0, 1.0),
            };
            b.delay_ms(job.attempt, &mut rand::rng())
        });
        let record = ErrorRecord {
            kind,
            message,
            traceback,
            reason,
        };
        let verdict = self.inner.fail(Fail {
            lease: job.lease(),
            error: record.to_bytes(),
            retry_delay_ms: delay,
            dead_ttl_ms: self.inner.config().dead_ttl_ms,
            cancelled: false,
        });
        awaitable_ok(
            py,
            async move { verdict.await.map_or("unknown", verdict_name) },
        )
    }

    /// Queue the end of a run cancelled on request: the job ends in state `cancelled`.
    fn cancelled(&self, job: &PyJob, message: String) {
        if !job.settle() {
            return;
        }
        let reason = "cancelled".to_string();
        self.inner
            .finish_failed(job.lease(), "JobCancelled", reason, message, true);
    }

    /// Queue a hand-back: the job returns to the queue now, its attempt not counted.
    fn release(&self, job: &PyJob) {
        if !job.settle() {
            return;
        }
        self.inner.send(Outcome::Release(job.lease()));
    }

    /// Queue a snooze: the job runs again after `seconds` (broker clock), its attempt not
    /// counted (`raise asyncq.Snooze(seconds)`). `push_key`: the job's key is pushed back
    /// instead, every job of it waits (`current_job().rate_limited(seconds)`).
    #[pyo3(signature = (job, seconds, push_key=false))]
    fn snooze(&self, job: &PyJob, seconds: f64, push_key: bool) -> PyResult<()> {
        let delay_ms = snooze_delay_ms(seconds)?;
        if !job.settle() {
            return Ok(());
        }
        self.inner.send(Outcome::Snooze(Snooze {
            lease: job.lease(),
            delay_ms,
            push_key,
        }));
        Ok(())
    }

    /// Resolves with a list of `ConsumerEvent` once something happened; with `[]` after close.
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let consumer = self.inner.clone();
        awaitable_ok(py, async move {
            let events = consumer.events().await;
            events
                .into_iter()
                .map(PyConsumerEvent::from)
                .collect::<Vec<_>>()
        })
    }

    /// Make the pending and future fetches return `[]`.
    fn stop_fetching(&self) {
        self.inner.stop_fetching();
    }

    /// Resolves once every outcome queued so far has reached the broker.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let consumer = self.inner.clone();
        awaitable_ok(py, async move { consumer.flush().await })
    }

    /// Stop, flush (up to `timeout` seconds) and end background work; resolves to whether the
    /// flush completed.
    fn close<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let consumer = self.inner.clone();
        let deadline = Duration::from_secs_f64(timeout.max(0.0));
        awaitable_ok(py, async move { consumer.close(deadline).await })
    }

    /// Counters: fetched, acked, failed, released, refused, poison, inflight.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, value) in self.inner.stats().snapshot() {
            d.set_item(name, value)?;
        }
        d.set_item("inflight", self.inner.inflight_leases().len())?;
        d.set_item("prefetched", self.inner.prefetched())?;
        Ok(d)
    }
}

/// What a fetch from Python asks for.
fn want(max: usize, threads: Option<usize>, processes: Option<usize>) -> Want {
    Want {
        jobs: max,
        threads,
        processes,
    }
}
