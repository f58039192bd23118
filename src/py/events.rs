//! `asyncq._core.EventStream`: one queue's events as they happen (see `docs/events.md`).
//!
//! The scripts publish a queue's state changes on its `events` channel while the queue is marked
//! watched (`watch.lua`), and progress reports while it is watched too (`progress.lua`). A
//! stream subscribes first and marks the queue watched after, so the reader's first read of a
//! job's state, made after the stream opened, cannot miss a change. It renews the mark on each
//! read while it lives; once nobody reads, the mark expires and the scripts stop publishing.
//! Messages cross into Python in batches: one `next()` returns whatever arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::sync::{mpsc, Mutex};

use crate::bridge::awaitable;
use crate::broker::Broker;
use crate::errors::Result;

/// How long a watch mark lasts, and how often a live stream renews it (a third of it, so a
/// read that comes late still finds the mark alive).
pub const WATCH_TTL: Duration = Duration::from_secs(30);
const WATCH_RENEW: Duration = Duration::from_secs(10);
/// Most messages one `next()` hands over.
const MAX_BATCH: usize = 1000;
/// Pause before trying a broker that failed again (bounded by the caller's wait).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One event as Python gets it: kind (`state` or `progress`), job id, state, fraction, message,
/// broker time in unix seconds.
pub type EventTuple = (
    &'static str,
    String,
    Option<String>,
    Option<f64>,
    Option<String>,
    f64,
);

struct Reader {
    broker: Arc<dyn Broker>,
    queue: String,
    rx: Option<mpsc::UnboundedReceiver<String>>,
    renewed: Instant,
}

/// A live reader of one queue's events.
#[pyclass(frozen, name = "EventStream", module = "asyncq._core")]
pub struct PyEventStream {
    reader: Arc<Mutex<Reader>>,
    queue: String,
}

impl PyEventStream {
    /// Subscribe to `queue`'s events, then mark the queue watched.
    pub async fn open(broker: Arc<dyn Broker>, queue: String) -> Result<PyEventStream> {
        let rx = broker.watch_events(&queue).await?;
        broker
            .keep_watch(&queue, WATCH_TTL.as_millis() as u64)
            .await?;
        let reader = Reader {
            broker,
            queue: queue.clone(),
            rx: Some(rx),
            renewed: Instant::now(),
        };
        Ok(PyEventStream {
            reader: Arc::new(Mutex::new(reader)),
            queue,
        })
    }
}

#[pymethods]
impl PyEventStream {
    #[getter]
    fn queue(&self) -> &str {
        &self.queue
    }

    /// Wait up to `timeout` seconds for events and return `(lost, events)`: `lost` is true when
    /// messages may have been missed since the last call (the connection dropped; read the state
    /// again), `events` a list of event tuples (empty on a timeout).
    fn next<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.reader.clone();
        let wait = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        awaitable(py, async move { reader.lock().await.next(wait).await })
    }

    /// Stop listening (the watch mark expires by itself).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.reader.clone();
        awaitable(py, async move {
            reader.lock().await.rx = None;
            Ok(())
        })
    }
}

impl Reader {
    /// Never fails: a broker that does not answer is reported as lost messages (the reader
    /// then reads the state, which tells it whether the broker is down), and this reader
    /// tries again at its next call.
    async fn next(&mut self, wait: Duration) -> Result<(bool, Vec<EventTuple>)> {
        if self.renewed.elapsed() >= WATCH_RENEW {
            let ttl = WATCH_TTL.as_millis() as u64;
            if self.broker.keep_watch(&self.queue, ttl).await.is_err() {
                // The mark may run out before the next try: changes may go unpublished.
                tokio::time::sleep(wait.min(RETRY_PAUSE)).await;
                return Ok((true, Vec::new()));
            }
            self.renewed = Instant::now();
        }
        let Some(rx) = self.rx.as_mut() else {
            // Lost before: listen again and say so, so the reader reads the state again.
            match self.broker.watch_events(&self.queue).await {
                Ok(rx) => self.rx = Some(rx),
                Err(_) => tokio::time::sleep(wait.min(RETRY_PAUSE)).await,
            }
            return Ok((true, Vec::new()));
        };
        let mut events = Vec::new();
        match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => return Ok((false, events)),
            Ok(None) => {
                self.rx = None;
                return Ok((true, events));
            }
            Ok(Some(msg)) => parse_message(&msg, &mut events),
        }
        let mut lost = false;
        while events.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => parse_message(&msg, &mut events),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.rx = None;
                    lost = true;
                    break;
                }
            }
        }
        Ok((lost, events))
    }
}

/// Parse one message of an events channel into `out`: `s <ms>` and a line `<state> <id>` per
/// change, or `p <id> <ms> <fraction> <message>`. What does not parse is skipped.
pub fn parse_message(msg: &str, out: &mut Vec<EventTuple>) {
    if let Some(rest) = msg.strip_prefix("s ") {
        let mut lines = rest.split('\n');
        let Some(at) = lines.next().and_then(|ms| ms.parse::<f64>().ok()) else {
            return;
        };
        for line in lines {
            if let Some((state, id)) = line.split_once(' ') {
                out.push((
                    "state",
                    id.to_owned(),
                    Some(state.to_owned()),
                    None,
                    None,
                    at / 1000.0,
                ));
            }
        }
    } else if let Some(rest) = msg.strip_prefix("p ") {
        let mut parts = rest.splitn(4, ' ');
        let (Some(id), Some(ms), Some(fraction)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (Ok(at), Ok(fraction)) = (ms.parse::<f64>(), fraction.parse::<f64>()) else {
            return;
        };
        let message = parts.next().filter(|m| !m.is_empty()).map(str::to_owned);
        out.push((
            "progress",
            id.to_owned(),
            None,
            Some(fraction),
            message,
            at / 1000.0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_batches_and_progress_reports() {
        let mut out = Vec::new();
        parse_message("s 1500\nrunning a\nsucceeded b", &mut out);
        parse_message("p a 2000 0.5 half way there", &mut out);
        parse_message("p b 2500 1 ", &mut out);
        parse_message("garbage", &mut out);
        parse_message("p broken", &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[0],
            ("state", "a".into(), Some("running".into()), None, None, 1.5)
        );
        assert_eq!(out[1].1, "b");
        assert_eq!(out[1].2.as_deref(), Some("succeeded"));
        assert_eq!(
            out[2],
            (
                "progress",
                "a".into(),
                None,
                Some(0.5),
                Some("half way there".into()),
                2.0
            )
        );
        assert_eq!(out[3].4, None);
    }
}
