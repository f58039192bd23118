//! `asyncq._core.Broker`: enqueue, inspect and administer queues.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tokio::sync::OnceCell;

use crate::batcher::Batcher;
use crate::bridge::{awaitable, block_on};
use crate::broker::{self, Broker, CancelOutcome, NewJob, WorkerInfo, MAX_PRIORITY};
use crate::codec::{encode_envelope, sign, Meta, SIGNATURE_OVERHEAD};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::errors::{Error, Result};
use crate::py::consumer::PyConsumer;
use crate::py::info::PyJobInfo;

/// A broker connection and the enqueue batcher in front of it.
struct Connected {
    broker: Arc<dyn Broker>,
    batcher: Batcher,
}

/// A lazily connected broker handle; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    url: Arc<str>,
    cell: Arc<OnceCell<Arc<Connected>>>,
}

impl Handle {
    async fn connected(&self) -> Result<Arc<Connected>> {
        self.cell
            .get_or_try_init(|| async {
                let broker = broker::connect(&self.url).await?;
                let batcher = Batcher::start(broker.clone());
                Ok(Arc::new(Connected { broker, batcher }))
            })
            .await
            .cloned()
    }

    pub async fn get(&self) -> Result<Arc<dyn Broker>> {
        Ok(self.connected().await?.broker.clone())
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
    ]
    .iter()
    .any(|p| url.starts_with(p));
    if ok {
        Ok(())
    } else {
        Err(Error::BadUrl(format!(
            "{url:?}: expected redis://host:port/db, rediss://... or memory://"
        )))
    }
}

fn ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

/// Options shared by every job of one enqueue call, passed from Python as a tuple:
/// `(max_attempts, timeout, priority, delay, eta, key, key_ttl, max_payload)`.
#[derive(FromPyObject)]
pub struct EnqueueOptions(
    u32,
    Option<f64>,
    i64,
    Option<f64>,
    Option<f64>,
    Option<String>,
    f64,
    usize,
);

fn build_jobs(
    task: &str,
    arg_names: &[String],
    items: &Bound<'_, PyList>,
    opts: &EnqueueOptions,
    signing_key: Option<&[u8]>,
) -> Result<Vec<NewJob>> {
    let EnqueueOptions(max_attempts, timeout, priority, delay, eta, ref key, key_ttl, max_payload) =
        *opts;
    // The limit holds for what travels, signature included.
    let overhead = signing_key.map_or(0, |_| SIGNATURE_OVERHEAD);
    let max_payload = max_payload.saturating_sub(overhead);
    if !(0..=MAX_PRIORITY).contains(&priority) {
        return Err(Error::Payload(format!(
            "priority must be between 0 and {MAX_PRIORITY}, got {priority}"
        )));
    }
    let meta = Meta { timeout_s: timeout };
    let mut jobs = Vec::with_capacity(items.len());
    for item in items.iter() {
        let (args, kwargs): (Bound<'_, PyTuple>, Option<Bound<'_, PyDict>>) = item
            .extract()
            .map_err(|e: PyErr| Error::Payload(e.to_string()))?;
        let mut payload =
            encode_envelope(task, &args, kwargs.as_ref(), &meta, arg_names, max_payload)?;
        if let Some(key) = signing_key {
            sign(&mut payload, key);
        }
        jobs.push(NewJob {
            id: uuid::Uuid::new_v4().simple().to_string(),
            payload,
            priority,
            delay_ms: delay.map(ms),
            eta_ms: eta.map(ms),
            max_attempts: max_attempts.max(1),
            key: key.clone(),
            key_ttl_ms: ms(key_ttl),
        });
    }
    Ok(jobs)
}

async fn enqueue(h: Handle, queue: String, jobs: Vec<NewJob>) -> Result<Vec<(String, bool)>> {
    let done = h.connected().await?.batcher.enqueue(queue, jobs).await?;
    Ok(done.into_iter().map(|e| (e.id, e.created)).collect())
}

async fn job_info(h: Handle, queue: String, id: String) -> Result<Option<PyJobInfo>> {
    Ok(h.get().await?.job(&queue, &id).await?.map(PyJobInfo::from))
}

/// Broker handle exposed to Python as `asyncq._core.Broker`.
#[pyclass(frozen, name = "Broker", module = "asyncq._core")]
pub struct PyBroker {
    handle: Handle,
    /// Envelope signing keys: the first signs, all are accepted by consumers made here.
    signing_keys: Vec<Vec<u8>>,
}

impl PyBroker {
    fn signing_key(&self) -> Option<&[u8]> {
        self.signing_keys.first().map(Vec::as_slice)
    }
}

#[pymethods]
impl PyBroker {
    #[new]
    #[pyo3(signature = (url, signing_keys=Vec::new()))]
    fn new(url: &str, signing_keys: Vec<Vec<u8>>) -> PyResult<Self> {
        validate_url(url)?;
        if signing_keys.iter().any(Vec::is_empty) {
            return Err(Error::BadUrl("a signing key must not be empty".into()).into());
        }
        Ok(PyBroker {
            handle: Handle {
                url: url.into(),
                cell: Arc::new(OnceCell::new()),
            },
            signing_keys,
        })
    }

    #[getter]
    fn url(&self) -> &str {
        &self.handle.url
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
        awaitable(py, enqueue(self.handle.clone(), queue, jobs))
    }

    /// Blocking `enqueue` for sync callers; releases the GIL while waiting.
    fn enqueue_blocking(
        &self,
        py: Python<'_>,
        queue: String,
        task: &str,
        arg_names: Vec<String>,
        items: &Bound<'_, PyList>,
        options: EnqueueOptions,
    ) -> PyResult<Vec<(String, bool)>> {
        let jobs = build_jobs(task, &arg_names, items, &options, self.signing_key())?;
        block_on(py, enqueue(self.handle.clone(), queue, jobs))
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
                id: uuid::Uuid::new_v4().simple().to_string(),
                payload,
                priority: 0,
                delay_ms: None,
                eta_ms: None,
                max_attempts: max_attempts.max(1),
                key: None,
                key_ttl_ms: 0,
            })
            .collect();
        let h = self.handle.clone();
        awaitable(py, async move {
            let done = enqueue(h, queue, jobs).await?;
            Ok(done.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
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

    /// Broker time in unix seconds; also a connectivity check.
    fn now<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        awaitable(py, async move {
            Ok(h.get().await?.now_ms().await? as f64 / 1000.0)
        })
    }

    /// Start a consumer for one queue (connects first, so an unreachable broker fails here).
    #[pyo3(signature = (queue, worker_id, tasks, *, lease, heartbeat, reap, idle_wait, result_ttl, dead_ttl, max_payload, prefetch=false))]
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
        prefetch: bool,
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
            prefetch,
            signing_keys: self.signing_keys.clone(),
        };
        let h = self.handle.clone();
        awaitable(py, async move {
            let broker = h.get().await?;
            broker.now_ms().await?;
            Ok(PyConsumer::new(Consumer::start(broker, cfg)))
        })
    }
}
