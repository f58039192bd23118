//! `asyncq._core.JobInfo`: a snapshot of one job's record.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::broker::JobInfo;
use crate::codec::{decode_args, decode_value, open_envelope, parse_envelope, ErrorRecord};

fn secs(ms: Option<u64>) -> Option<f64> {
    ms.map(|m| m as f64 / 1000.0)
}

/// What the broker knows about one job; times are unix seconds.
#[pyclass(frozen, name = "JobInfo", module = "asyncq._core")]
pub struct PyJobInfo {
    info: JobInfo,
}

impl From<JobInfo> for PyJobInfo {
    fn from(info: JobInfo) -> Self {
        PyJobInfo { info }
    }
}

/// The most a compressed envelope read for display may expand to.
const READ_LIMIT: usize = 1 << 30;

impl PyJobInfo {
    /// The job's envelope, opened when it is compressed; None when it cannot be.
    fn envelope(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match open_envelope(&self.info.payload, READ_LIMIT) {
            Ok(Some(inner)) => Some(inner.into()),
            Ok(None) => Some(self.info.payload.as_slice().into()),
            Err(_) => None,
        }
    }
}

#[pymethods]
impl PyJobInfo {
    #[getter]
    fn id(&self) -> &str {
        &self.info.id
    }
    #[getter]
    fn queue(&self) -> &str {
        &self.info.queue
    }
    #[getter]
    fn state(&self) -> &'static str {
        self.info.state.as_str()
    }
    #[getter]
    fn priority(&self) -> i64 {
        self.info.priority
    }
    #[getter]
    fn attempts(&self) -> u32 {
        self.info.attempts
    }
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.info.max_attempts
    }
    #[getter]
    fn enqueued_at(&self) -> f64 {
        self.info.enqueued_ms as f64 / 1000.0
    }
    #[getter]
    fn due_at(&self) -> Option<f64> {
        secs(self.info.due_ms)
    }
    #[getter]
    fn started_at(&self) -> Option<f64> {
        secs(self.info.started_ms)
    }
    #[getter]
    fn finished_at(&self) -> Option<f64> {
        secs(self.info.finished_ms)
    }
    #[getter]
    fn worker(&self) -> Option<&str> {
        self.info.worker.as_deref()
    }
    /// The task name, or None when the payload cannot be read.
    #[getter]
    fn task(&self) -> Option<String> {
        parse_envelope(&self.envelope()?, usize::MAX)
            .ok()
            .map(|e| e.task.to_string())
    }
    /// The job's positional arguments, or None when the payload cannot be read.
    #[getter]
    fn args<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let bytes = self.envelope()?;
        let env = parse_envelope(&bytes, usize::MAX).ok()?;
        let (args, _) = decode_args(py, &env).ok()?;
        Some(args.into_any())
    }
    /// The job's keyword arguments, or None when the payload cannot be read.
    #[getter]
    fn kwargs<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let bytes = self.envelope()?;
        let env = parse_envelope(&bytes, usize::MAX).ok()?;
        let (_, kwargs) = decode_args(py, &env).ok()?;
        Some(kwargs.into_any())
    }
    /// The envelope's string headers (trace context), empty when none or unreadable.
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.envelope()
            .and_then(|b| parse_envelope(&b, usize::MAX).ok().map(|e| e.meta.headers))
            .unwrap_or_default()
    }
    /// Progress reports, oldest first, as `(at, fraction, message | None)` (at most the last 32).
    #[getter]
    fn progress(&self) -> Vec<(f64, f64, Option<String>)> {
        self.info
            .progress
            .iter()
            .map(|p| (p.at_ms as f64 / 1000.0, p.fraction, p.message.clone()))
            .collect()
    }
    /// The decoded return value (None unless succeeded).
    #[getter]
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.info.result {
            Some(bytes) => decode_value(py, bytes),
            None => Ok(py.None().into_bound(py)),
        }
    }
    /// The last error as `{type, message, traceback, reason}`, or None.
    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(bytes) = &self.info.error else {
            return Ok(None);
        };
        let r = ErrorRecord::from_bytes(bytes).unwrap_or_else(|e| ErrorRecord {
            kind: "Unreadable".into(),
            message: e.to_string(),
            ..ErrorRecord::default()
        });
        let d = PyDict::new(py);
        d.set_item("type", r.kind)?;
        d.set_item("message", r.message)?;
        d.set_item("traceback", r.traceback)?;
        d.set_item("reason", r.reason)?;
        Ok(Some(d))
    }
    fn __repr__(&self) -> String {
        format!(
            "JobInfo(id={:?}, queue={:?}, state={:?}, attempts={})",
            self.info.id,
            self.info.queue,
            self.info.state.as_str(),
            self.info.attempts
        )
    }
}
