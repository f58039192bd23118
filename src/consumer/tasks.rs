//! The consumer engine's background tasks: outcome flusher, heartbeater, reaper.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Event, Msg, Outcome, Shared, MAX_FLUSH};
use crate::backoff::Redial;
use crate::broker::FailOutcome;

/// Drains the outcome channel: whatever piled up while the previous flush was on the wire goes
/// out in the next call, so batches grow with load without a timer adding latency.
pub(super) async fn flusher(sh: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_FLUSH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        flush_batch(&sh, std::mem::take(&mut batch)).await;
    }
}

async fn flush_batch(sh: &Shared, batch: Vec<Msg>) {
    let (mut acks, mut fails, mut releases, mut waiters) = (vec![], vec![], vec![], vec![]);
    for msg in batch {
        match msg {
            Msg::Outcome(Outcome::Ack(a)) => acks.push(a),
            Msg::Outcome(Outcome::Fail(f)) => fails.push(f),
            Msg::Outcome(Outcome::Release(l)) => releases.push(l),
            Msg::Flush(tx) => waiters.push(tx),
        }
    }
    if !acks.is_empty() {
        let ids: Vec<String> = acks.iter().map(|a| a.lease.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.ack(q, acks.clone())).await;
        sh.settle(ids, res.iter().copied(), &sh.stats.acked);
    }
    if !fails.is_empty() {
        let ids: Vec<String> = fails.iter().map(|f| f.lease.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.fail(q, fails.clone())).await;
        let ok = res.iter().map(|o| *o != FailOutcome::Stale);
        sh.settle(ids, ok, &sh.stats.failed);
    }
    if !releases.is_empty() {
        let ids: Vec<String> = releases.iter().map(|l| l.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.release(q, releases.clone())).await;
        sh.settle(ids, res.iter().copied(), &sh.stats.released);
    }
    for tx in waiters {
        let _ = tx.send(());
    }
}

impl Shared {
    /// Forget flushed leases and count what the broker accepted or refused.
    fn settle(&self, ids: Vec<String>, accepted: impl Iterator<Item = bool>, counter: &AtomicU64) {
        for (id, ok) in ids.iter().zip(accepted) {
            if ok {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.push_event(Event::Refused(id.clone()));
            }
        }
        self.forget(ids.into_iter());
    }
}

/// Run a broker call until it succeeds: outcomes are never dropped while the consumer lives.
async fn retry<T, F, Fut>(sh: &Shared, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::errors::Result<T>>,
{
    let mut backoff = Redial::new();
    loop {
        match call().await {
            Ok(v) => {
                sh.set_health(Ok(()));
                return v;
            }
            Err(err) => {
                sh.set_health(Err(&err));
                tokio::time::sleep(backoff.next_pause()).await;
            }
        }
    }
}

pub(super) async fn heartbeater(sh: Arc<Shared>) {
    let period = Duration::from_millis(sh.cfg.heartbeat_ms.max(1));
    loop {
        tokio::time::sleep(period).await;
        let leases = sh.leases_to_extend();
        if leases.is_empty() {
            continue;
        }
        match sh
            .broker
            .heartbeat(&sh.cfg.queue, leases, sh.cfg.lease_ms)
            .await
        {
            Ok(out) => {
                sh.set_health(Ok(()));
                // Each is reported once: a lease the broker refused is never sent again.
                for id in out.lost {
                    sh.stop_extending(&id);
                    sh.push_event(Event::Lost(id));
                }
                for id in out.gone {
                    sh.stop_extending(&id);
                    sh.push_event(Event::Gone(id));
                }
                for id in out.cancel {
                    sh.push_event(Event::Cancel(id));
                }
            }
            Err(err) => sh.set_health(Err(&err)),
        }
    }
}

pub(super) async fn reaper(sh: Arc<Shared>) {
    let period = Duration::from_millis(sh.cfg.reap_ms.max(1));
    loop {
        tokio::time::sleep(period).await;
        if let Err(err) = sh.broker.reap(&sh.cfg.queue, sh.cfg.dead_ttl_ms).await {
            sh.set_health(Err(&err));
        }
    }
}
