//! asyncq's Rust core: module wiring only.

pub mod backoff;
pub mod batcher;
pub mod bridge;
pub mod broker;
pub mod codec;
pub mod consumer;
pub mod engine;
pub mod errors;
pub mod ids;
pub mod metrics;
pub mod producer;
pub mod py;
pub mod runtime;

use pyo3::prelude::*;

/// The `asyncq._core` extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Seconds a job may run and still count as short (auto prefetch; the worker's sync backlog).
    m.add("SHORT_JOB_S", consumer::SHORT_JOB_US as f64 / 1e6)?;
    m.add("AsyncqError", py.get_type::<errors::AsyncqError>())?;
    m.add("BrokerError", py.get_type::<errors::BrokerError>())?;
    errors::init_broker_error(py)?;
    m.add("PayloadError", py.get_type::<errors::PayloadError>())?;
    m.add_class::<py::broker::PyBroker>()?;
    m.add_function(wrap_pyfunction!(py::broker::check_schedule_name, m)?)?;
    m.add_function(wrap_pyfunction!(py::broker::check_progress, m)?)?;
    m.add_function(wrap_pyfunction!(py::broker::check_snooze, m)?)?;
    m.add_function(wrap_pyfunction!(py::broker::new_job_ids, m)?)?;
    m.add_function(wrap_pyfunction!(py::broker::eager_roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(py::broker::eager_result, m)?)?;
    m.add_class::<py::consumer::PyConsumer>()?;
    m.add_class::<py::consumer::PyConsumerEvent>()?;
    m.add_class::<py::consumer::PyJob>()?;
    m.add_class::<py::info::PyJobInfo>()?;
    m.add_class::<py::events::PyEventStream>()?;
    m.add_class::<py::metrics::PyMetricsServer>()?;
    Ok(())
}
