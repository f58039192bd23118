//! Coalesces concurrent enqueue calls into one broker call per queue.
//!
//! Each `Task.enqueue` awaited on its own is one request. Requests that arrive while the
//! previous batch is on the wire are merged: 64 coroutines enqueueing at once cost a handful of
//! script calls, not 64. A lone request goes out at once, so a single awaited enqueue pays no
//! extra latency beyond one channel hop. Order within one queue is the order of arrival.

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, Enqueued, NewJob};
use crate::errors::{Error, Result};

/// Most jobs merged into one round of broker calls.
const MAX_JOBS: usize = 4096;

struct Request {
    queue: String,
    jobs: Vec<NewJob>,
    reply: oneshot::Sender<Result<Vec<Enqueued>>>,
}

/// The sending side; the batching task ends when every `Batcher` (clones included) is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Request>,
}

impl Batcher {
    /// Start the batching task on the current runtime.
    pub fn start(broker: Arc<dyn Broker>) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(broker, rx));
        Batcher { tx }
    }

    /// Enqueue `jobs`, possibly together with other callers' jobs.
    pub async fn enqueue(&self, queue: String, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { queue, jobs, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

async fn run(broker: Arc<dyn Broker>, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.jobs.len();
        let mut batch = vec![first];
        while count < MAX_JOBS {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.jobs.len();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        let calls = group_by_queue(batch)
            .into_iter()
            .map(|(queue, reqs)| send_group(&*broker, queue, reqs));
        join_all(calls).await;
    }
}

/// Split a batch into per-queue groups, keeping arrival order inside each group.
fn group_by_queue(batch: Vec<Request>) -> Vec<(String, Vec<Request>)> {
    let mut groups: Vec<(String, Vec<Request>)> = Vec::new();
    for req in batch {
        match groups.iter_mut().find(|(q, _)| *q == req.queue) {
            Some((_, reqs)) => reqs.push(req),
            None => groups.push((req.queue.clone(), vec![req])),
        }
    }
    groups
}

/// One broker call for a group; each caller gets back its own slice of the results.
async fn send_group(broker: &dyn Broker, queue: String, mut reqs: Vec<Request>) {
    let sizes: Vec<usize> = reqs.iter().map(|r| r.jobs.len()).collect();
    let jobs: Vec<NewJob> = reqs.iter_mut().flat_map(|r| r.jobs.drain(..)).collect();
    match broker.enqueue(&queue, jobs).await {
        Ok(mut done) => {
            for (req, n) in reqs.into_iter().zip(sizes) {
                let rest = done.split_off(n.min(done.len()));
                let _ = req.reply.send(Ok(std::mem::replace(&mut done, rest)));
            }
        }
        Err(err) => {
            for req in reqs {
                let _ = req.reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::Executor;

    /// A minimal ready job with this id (shared by the crate's unit tests).
    pub(crate) fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            payload: vec![1],
            priority: 0,
            delay_ms: None,
            eta_ms: None,
            max_attempts: 1,
            key: None,
            key_ttl_ms: 0,
            key_mode: Default::default(),
            executor: Executor::Async,
            group: None,
        }
    }

    #[tokio::test]
    async fn concurrent_callers_get_their_own_results_in_order() {
        let broker = MemoryBroker::named("memory://batcher-test");
        let batcher = Arc::new(Batcher::start(broker.clone()));
        let calls = (0..50).map(|i| {
            let b = batcher.clone();
            let q = if i % 2 == 0 { "even" } else { "odd" };
            async move {
                let ids = vec![job(&format!("{i}a")), job(&format!("{i}b"))];
                (i, b.enqueue(q.into(), ids).await.unwrap())
            }
        });
        for (i, out) in join_all(calls).await {
            let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, [format!("{i}a"), format!("{i}b")]);
        }
        assert_eq!(broker.counts("even").await.unwrap().queued, 50);
        assert_eq!(broker.counts("odd").await.unwrap().queued, 50);
    }
}
