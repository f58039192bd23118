//! The only place that turns Rust futures into Python awaitables or blocks on them.
//!
//! Everything passed in must already be owned Rust data: the GIL is never held inside a tokio task.

use std::future::Future;

use pyo3::prelude::*;

use crate::errors::Result;
use crate::runtime;

/// Run `fut` on the runtime and return an asyncio awaitable of its output.
pub fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime::get()?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move { fut.await.map_err(PyErr::from) })
}

/// Same as [`awaitable`] for futures that cannot fail.
pub fn awaitable_ok<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime::get()?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(fut.await) })
}

/// Block the calling (non-tokio) thread on `fut` with the GIL released.
pub fn block_on<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = Result<T>> + Send,
    T: Send,
{
    let rt = runtime::get()?;
    py.detach(|| rt.block_on(fut)).map_err(PyErr::from)
}
