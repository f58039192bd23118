//! The one tokio runtime, created lazily on first use and owned by pyo3-async-runtimes.
//!
//! Fork safety: a forked child inherits the runtime's memory but none of its threads, so any use
//! of it there would hang. We remember the pid that created the runtime and refuse, with a clear
//! error, to run anything in another process. Creating the App before a fork is fine as long as
//! nothing was enqueued or awaited before it (the runtime starts on first use).

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::Runtime;

static OWNER_PID: OnceLock<u32> = OnceLock::new();

/// The runtime, after checking that this process created it.
pub fn get() -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let owner = *OWNER_PID.get_or_init(|| pid);
    if owner != pid {
        return Err(PyRuntimeError::new_err(
            "asyncq was used in this process's parent before fork(); create the App (or make the \
             first asyncq call) after forking",
        ));
    }
    Ok(pyo3_async_runtimes::tokio::get_runtime())
}
