//! The only place that turns Rust futures into Python awaitables or blocks on them.
//!
//! Everything passed in must already be owned Rust data, and no tokio thread ever attaches to
//! Python. A finished future is pushed onto its event loop's completion queue, and the loop is
//! woken through a socket it watches with `add_reader`; the loop's own thread then converts the
//! output to Python objects and settles the asyncio futures, many per wake-up under load.
//!
//! Why not `call_soon_threadsafe` from a thread holding the GIL (what pyo3-async-runtimes does)?
//! That costs a GIL acquisition on a foreign thread per completion, fights the loop thread for
//! the GIL, and lets a foreign thread be inside Python while the interpreter finalizes, which
//! aborts the process at exit. Here the tokio side only locks a mutex and writes one byte.
//!
//! A loop without `add_reader` (asyncio's proactor loop, Windows' default) gets the same socket
//! watched by a Python thread of `asyncq._wakeups`, which hands each wake-up to the loop with
//! `call_soon_threadsafe`: still one GIL hand-off per batch of completions, on a thread CPython
//! owns.
// NOTE: awaited `Broker.now()` on memory:// cost 78 us per call through pyo3-async-runtimes' bridge
// on this 2-core host under load; see docs/performance.md for the figures after this change.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};

use futures::future::{abortable, AbortHandle, BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;

use crate::errors::Result;
use crate::runtime;

/// The wake-up socket pair: a Unix socket pair where there is one, else two connected loopback
/// TCP sockets (what Python's own `socket.socketpair` does on Windows).
#[cfg(unix)]
mod wake {
    use std::os::fd::AsRawFd;

    pub type Stream = std::os::unix::net::UnixStream;

    pub fn pair() -> std::io::Result<(Stream, Stream)> {
        Stream::pair()
    }

    /// What the event loop watches: the file descriptor.
    pub fn handle(s: &Stream) -> i64 {
        i64::from(s.as_raw_fd())
    }
}

#[cfg(windows)]
mod wake {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::os::windows::io::AsRawSocket;

    pub type Stream = TcpStream;

    pub fn pair() -> std::io::Result<(Stream, Stream)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let tx = TcpStream::connect(listener.local_addr()?)?;
        tx.set_nodelay(true)?;
        loop {
            let (rx, peer) = listener.accept()?;
            // Anything else on the machine may have connected first: only our own end is kept.
            if peer == tx.local_addr()? {
                return Ok((tx, rx));
            }
        }
    }

    /// What the event loop watches: the socket handle.
    pub fn handle(s: &Stream) -> i64 {
        // A SOCKET is pointer-sized; asyncio passes it around as a Python int.
        s.as_raw_socket() as i64
    }
}

/// Turns a finished output into a Python object; runs on the loop's thread.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A finished Rust future waiting to settle its asyncio future.
struct Completion {
    fut: Py<PyAny>,
    convert: Convert,
}

/// Per event loop: futures waiting to start, the completion queue and the socket pair that wakes
/// the loop.
struct Inbox {
    /// Rust futures created during the current loop iteration, started together by [`Starter`].
    outbox: Mutex<Vec<BoxFuture<'static, ()>>>,
    queue: Mutex<Vec<Completion>>,
    /// Written by tokio threads (one byte when the queue turns non-empty).
    tx: wake::Stream,
    /// Watched by the loop with `add_reader` (or by `asyncq._wakeups`' thread).
    rx: wake::Stream,
}

impl Inbox {
    fn new() -> std::io::Result<Inbox> {
        let (tx, rx) = wake::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Inbox {
            outbox: Mutex::new(Vec::new()),
            queue: Mutex::new(Vec::new()),
            tx,
            rx,
        })
    }

    /// Queue a future to start; true when it is the first since the last start.
    fn stage(&self, fut: BoxFuture<'static, ()>) -> bool {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.push(fut);
        outbox.len() == 1
    }

    fn push(&self, c: Completion) {
        let first = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.push(c);
            q.len() == 1
        };
        if first {
            // A full socket buffer means wake-ups are already pending: nothing is lost.
            let _ = (&self.tx).write(&[1]);
        }
    }

    /// Drain the wake-up bytes, then take everything queued (in that order: a push after the
    /// take always writes a fresh byte, so no completion can be left without a wake-up).
    fn take(&self) -> Vec<Completion> {
        let mut buf = [0u8; 256];
        loop {
            match (&self.rx).read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            }
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The loop-side reader callback (and owner of the inbox for as long as the loop lives).
#[pyclass(frozen, weakref)]
struct LoopInbox(Arc<Inbox>);

#[pymethods]
impl LoopInbox {
    /// Settle every queued completion; a future cancelled meanwhile is left alone.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        for c in self.0.take() {
            let fut = c.fut.bind(py);
            if fut.call_method0("cancelled")?.is_truthy()? {
                continue;
            }
            match (c.convert)(py) {
                Ok(value) => fut.call_method1("set_result", (value,))?,
                Err(err) => fut.call_method1("set_exception", (err.into_value(py),))?,
            };
        }
        Ok(())
    }
}

/// `WeakKeyDictionary` loop -> LoopInbox: the inbox (and its sockets) goes with its loop.
static INBOXES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn inbox_of(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Inbox>> {
    let py = event_loop.py();
    let inboxes = INBOXES
        .get_or_try_init(py, || {
            py.import("weakref")?
                .call_method0("WeakKeyDictionary")
                .map(Bound::unbind)
        })?
        .bind(py);
    if let Some(found) = inboxes
        .call_method1("get", (event_loop,))?
        .extract::<Option<Bound<'_, LoopInbox>>>()?
    {
        return Ok(found.get().0.clone());
    }
    let inbox = Arc::new(Inbox::new()?);
    let reader = Bound::new(py, LoopInbox(inbox.clone()))?;
    let handle = wake::handle(&inbox.rx);
    match event_loop.call_method1("add_reader", (handle, &reader)) {
        Ok(_) => {}
        Err(err) if err.is_instance_of::<PyNotImplementedError>(py) => {
            py.import("asyncq._wakeups")?
                .call_method1("watch", (event_loop, handle, &reader))?;
        }
        Err(err) => return Err(err),
    }
    inboxes.set_item(event_loop, &reader)?;
    Ok(inbox)
}

/// Scheduled with `call_soon` by the first future of a loop iteration: hands every future staged
/// since to tokio as ONE task, so a burst of calls (64 concurrent enqueues, say) wakes a tokio
/// worker once instead of once per call.
// NOTE: spawning per call cost ~34 us per awaitable on this loaded 2-core host, almost all of it
// waking a parked tokio worker (1.4 context switches per call under `perf stat`).
#[pyclass(frozen)]
struct Starter(Arc<Inbox>);

#[pymethods]
impl Starter {
    fn __call__(&self) -> PyResult<()> {
        let rt = runtime::get()?;
        let mut staged =
            std::mem::take(&mut *self.0.outbox.lock().unwrap_or_else(|p| p.into_inner()));
        if staged.len() == 1 {
            rt.spawn(staged.remove(0));
        } else if !staged.is_empty() {
            let all: FuturesUnordered<_> = staged.into_iter().collect();
            rt.spawn(all.for_each(|()| async {}));
        }
        Ok(())
    }
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

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn spawn_awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime::get()?;
    let get_loop = GET_RUNNING_LOOP.get_or_try_init(py, || {
        py.import("asyncio")?
            .getattr("get_running_loop")
            .map(Bound::unbind)
    })?;
    let event_loop = get_loop.bind(py).call0()?;
    let inbox = inbox_of(&event_loop)?;
    let py_fut = event_loop.call_method0("create_future")?;
    let fut_ref = py_fut.clone().unbind();
    let finisher = inbox.clone();
    let (task, abort) = abortable(async move {
        let out = fut.await;
        let convert: Convert = Box::new(move |py| out.and_then(|v| v.into_py_any(py)));
        finisher.push(Completion {
            fut: fut_ref,
            convert,
        });
    });
    if inbox.stage(Box::pin(task.map(|_| ()))) {
        event_loop.call_method1("call_soon", (Starter(inbox),))?;
    }
    py_fut.call_method1("add_done_callback", (AbortOnCancel(abort),))?;
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
