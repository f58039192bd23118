//! The only place that turns Rust futures into Python awaitables or blocks on them.
//!
//! Everything passed in must already be owned Rust data: the GIL is never held inside a tokio task.
//!
//! Exit safety: a finished future is handed to its asyncio loop from a tokio blocking thread that
//! attaches to Python. If the interpreter starts finalizing while such a thread is attached (the
//! main thread can run to exit while it waits in `call_soon_threadsafe`'s socket write), CPython
//! aborts or segfaults the process. So completions are counted, and an `atexit` hook (installed by
//! [`install_exit_hook`], run before finalization starts) turns new completions away and waits,
//! with the GIL released, for the running ones to detach.

use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;
use tokio::task::AbortHandle;

use crate::errors::Result;
use crate::runtime;

/// `(exiting, completions attached to Python right now)`.
static COMPLETIONS: Mutex<(bool, usize)> = Mutex::new((false, 0));
static DETACHED: Condvar = Condvar::new();
/// Longest the exit hook waits for completions to detach.
const EXIT_WAIT: Duration = Duration::from_secs(2);

fn completions() -> std::sync::MutexGuard<'static, (bool, usize)> {
    COMPLETIONS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Register the exit hook; called once from module init.
pub fn install_exit_hook(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(quiesce, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// atexit: no completion attaches to Python from now on; wait for those attached to finish.
#[pyfunction]
fn quiesce(py: Python<'_>) {
    py.detach(|| {
        let mut guard = completions();
        guard.0 = true;
        let _ = DETACHED
            .wait_timeout_while(guard, EXIT_WAIT, |g| g.1 > 0)
            .unwrap_or_else(|p| p.into_inner());
    });
}

/// Runs on the loop's thread: settle the asyncio future unless it was cancelled meanwhile.
#[pyfunction]
fn settle(fut: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if fut.call_method0("cancelled")?.is_truthy()? {
        return Ok(());
    }
    let method = if ok { "set_result" } else { "set_exception" };
    fut.call_method1(method, (value,))?;
    Ok(())
}

/// Done-callback of the asyncio future: cancelling it aborts the Rust future.
#[pyclass(frozen)]
struct AbortOnCancel(AbortHandle);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

static SETTLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Hand `out` to the asyncio future on its loop (from a blocking thread, attached to Python).
fn complete<T>(fut: Py<PyAny>, event_loop: Py<PyAny>, out: PyResult<T>)
where
    T: for<'a> IntoPyObject<'a>,
{
    {
        let mut guard = completions();
        if guard.0 {
            return; // exiting: the Py references are released later by pyo3's pool
        }
        guard.1 += 1;
    }
    Python::attach(|py| {
        let (ok, value) = match out.and_then(|v| v.into_py_any(py)) {
            Ok(v) => (true, v),
            Err(e) => (false, e.into_value(py).into_any()),
        };
        let settle = SETTLE.get_or_try_init(py, || {
            wrap_pyfunction!(settle, py).map(|f| f.into_any().unbind())
        });
        if let Ok(settle) = settle {
            // Fails only when the loop is closed: nobody is waiting any more.
            let _ = event_loop.bind(py).call_method1(
                "call_soon_threadsafe",
                (settle.bind(py), fut.bind(py), ok, value),
            );
        }
        drop(fut);
        drop(event_loop);
    });
    let mut guard = completions();
    guard.1 -= 1;
    if guard.1 == 0 {
        DETACHED.notify_all();
    }
}

fn spawn_awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let rt = runtime::get()?;
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_fut = event_loop.call_method0("create_future")?;
    let (fut_ref, loop_ref) = (py_fut.clone().unbind(), event_loop.unbind());
    let task = rt.spawn(async move {
        let out = fut.await;
        // Detached: the completion runs even if this task is aborted meanwhile.
        drop(tokio::task::spawn_blocking(move || {
            complete(fut_ref, loop_ref, out)
        }));
    });
    py_fut.call_method1("add_done_callback", (AbortOnCancel(task.abort_handle()),))?;
    Ok(py_fut)
}

/// Run `fut` on the runtime and return an asyncio awaitable of its output.
pub fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    spawn_awaitable(py, async move { fut.await.map_err(PyErr::from) })
}

/// Same as [`awaitable`] for futures that cannot fail.
pub fn awaitable_ok<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    spawn_awaitable(py, async move { Ok(fut.await) })
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
