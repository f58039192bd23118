//! `MetricsServer`: the Prometheus endpoint a worker serves (see [`crate::metrics`]).

use std::sync::Arc;

use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::bridge::awaitable_ok;
use crate::metrics::Exporter;

#[pyclass(frozen, name = "MetricsServer", module = "asyncq._core")]
pub struct PyMetricsServer {
    exporter: Arc<Exporter>,
    stop: CancellationToken,
    /// The port it listens on (the one asked for, or the one the system chose for 0).
    #[pyo3(get)]
    port: u16,
}

impl PyMetricsServer {
    pub fn new(exporter: Arc<Exporter>, stop: CancellationToken, port: u16) -> Self {
        PyMetricsServer {
            exporter,
            stop,
            port,
        }
    }
}

#[pymethods]
impl PyMetricsServer {
    /// What a scrape of `/metrics` returns now.
    fn scrape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let exporter = self.exporter.clone();
        awaitable_ok(py, async move { exporter.scrape().await })
    }

    /// Stop listening (a scrape in progress still gets its answer).
    fn close(&self) {
        self.stop.cancel();
    }
}

impl Drop for PyMetricsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
