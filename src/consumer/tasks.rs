//! The consumer's background work: outcome flusher, heartbeater, and its reap tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Event, Msg, Outcome, Shared, Stats, MAX_FLUSH};
use crate::backoff::Redial;
use crate::broker::{FailOutcome, Lease, ProgressReport, ReapClaim};
use crate::metrics::Outcome as Ended;

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
    let mut snoozes = vec![];
    // One slot per entry of `fails`: where that failure's verdict goes, if anyone asked.
    let mut verdicts = vec![];
    let mut reports = vec![];
    for msg in batch {
        match msg {
            Msg::Outcome(Outcome::Ack(a)) => acks.push(a),
            Msg::Outcome(Outcome::Fail(f)) => {
                fails.push(f);
                verdicts.push(None);
            }
            Msg::Fail(f, tx) => {
                fails.push(f);
                verdicts.push(Some(tx));
            }
            Msg::Outcome(Outcome::Release(l)) => releases.push(l),
            Msg::Outcome(Outcome::Snooze(s)) => snoozes.push(s),
            Msg::Flush(tx) => waiters.push(tx),
            Msg::Progress(p) => reports.push(p),
        }
    }
    if !reports.is_empty() {
        // Best effort, not retried: a report is not worth holding up the outcomes behind it,
        // and an outage is reported by the outcome calls' own retries.
        let _ = sh
            .broker
            .progress(&sh.cfg.queue, latest_each(reports))
            .await;
    }
    if !acks.is_empty() {
        let ids: Vec<String> = acks.iter().map(|a| a.lease.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.ack(q, acks.clone())).await;
        sh.record_ended(accepted(&ids, &res, |_| Some(Ended::Succeeded)));
        sh.settle(ids, res.iter().copied(), |s| &s.acked);
    }
    if !fails.is_empty() {
        let ids: Vec<String> = fails.iter().map(|f| f.lease.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.fail(q, fails.clone())).await;
        let ok = res.iter().map(|o| *o != FailOutcome::Stale);
        sh.record_ended(accepted(&ids, &res, |o| match o {
            FailOutcome::Retrying => Some(Ended::Retried),
            FailOutcome::Dead => Some(Ended::Failed),
            FailOutcome::Cancelled => Some(Ended::Cancelled),
            FailOutcome::Stale => None,
        }));
        sh.settle(ids, ok, |s| &s.failed);
        for (tx, verdict) in verdicts.into_iter().zip(res) {
            if let Some(tx) = tx {
                let _ = tx.send(verdict); // the caller may have stopped waiting
            }
        }
    }
    if !releases.is_empty() {
        let ids: Vec<String> = releases.iter().map(|l| l.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.release(q, releases.clone())).await;
        sh.record_ended(accepted(&ids, &res, |_| Some(Ended::Released)));
        sh.settle(ids, res.iter().copied(), |s| &s.released);
    }
    if !snoozes.is_empty() {
        let ids: Vec<String> = snoozes.iter().map(|s| s.lease.id.clone()).collect();
        let q = &sh.cfg.queue;
        let res = retry(sh, || sh.broker.snooze(q, snoozes.clone())).await;
        sh.record_ended(accepted(&ids, &res, |_| Some(Ended::Released)));
        sh.settle(ids, res.iter().copied(), |s| &s.snoozed);
    }
    for tx in waiters {
        let _ = tx.send(());
    }
}

/// The ids whose verdict `res` the broker accepted, each with the outcome `outcome` names for
/// it (`bool` verdicts: accepted when true; others: when `outcome` names one).
fn accepted<'a, V: Verdict>(
    ids: &'a [String],
    res: &'a [V],
    outcome: impl Fn(&V) -> Option<Ended> + 'a,
) -> impl Iterator<Item = (&'a String, Ended)> + 'a {
    ids.iter()
        .zip(res)
        .filter(|(_, v)| v.accepted())
        .filter_map(move |(id, v)| outcome(v).map(|o| (id, o)))
}

trait Verdict {
    fn accepted(&self) -> bool;
}

impl Verdict for bool {
    fn accepted(&self) -> bool {
        *self
    }
}

impl Verdict for FailOutcome {
    fn accepted(&self) -> bool {
        *self != FailOutcome::Stale
    }
}

/// The last report of each run, in the order of those last reports.
fn latest_each(reports: Vec<ProgressReport>) -> Vec<ProgressReport> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<ProgressReport> = reports
        .into_iter()
        .rev()
        .filter(|r| seen.insert((r.lease.id.clone(), r.lease.token)))
        .collect();
    kept.reverse();
    kept
}

impl Shared {
    /// Forget flushed leases and count what the broker accepted or refused.
    fn settle(
        &self,
        ids: Vec<String>,
        accepted: impl Iterator<Item = bool>,
        counter: fn(&Stats) -> &AtomicU64,
    ) {
        for (id, ok) in ids.iter().zip(accepted) {
            if ok {
                self.count(counter, 1);
            } else {
                self.count(|s| &s.refused, 1);
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
        if !leases.is_empty() {
            heartbeat(&sh, leases).await;
        }
    }
}

/// Extend `leases` and act on the answer: losses and vanished jobs reported, ended ones no
/// longer extended, cancel requests passed on.
async fn heartbeat(sh: &Shared, leases: Vec<Lease>) {
    let sent: HashMap<String, u64> = leases.iter().map(|l| (l.id.clone(), l.token)).collect();
    match sh
        .broker
        .heartbeat(&sh.cfg.queue, leases, sh.cfg.lease_ms)
        .await
    {
        Ok(out) => {
            sh.set_health(Ok(()));
            if let Some(qm) = &sh.metrics {
                let refused = out.lost.len() + out.gone.len();
                let kept = sent.len().saturating_sub(refused + out.finished.len());
                qm.renewed.fetch_add(kept as u64, Ordering::Relaxed);
                qm.lost.fetch_add(refused as u64, Ordering::Relaxed);
            }
            for id in out.lost {
                refused(sh, &sent, id, Event::Lost);
            }
            for id in out.gone {
                refused(sh, &sent, id, Event::Gone);
            }
            // Ended under this very lease (its outcome landed first): nothing was lost.
            for id in out.finished {
                sh.stop_extending(&id);
            }
            for id in out.cancel {
                sh.push_event(Event::Cancel(id));
            }
        }
        Err(err) => sh.set_health(Err(&err)),
    }
}

/// How long to wait before listening again when the cancel feed is unavailable (requests are
/// still seen by the periodic heartbeat meanwhile).
const CANCEL_FEED_RETRY: Duration = Duration::from_secs(1);

/// Hears cancel requests for this queue as they are made (`cancel.lua` publishes the id) and
/// heartbeats a job it runs at once: the heartbeat's answer carries the request, so a running
/// job is cancelled within a round trip rather than at the next periodic heartbeat. Starts
/// listening at the consumer's first lease.
pub(super) async fn canceller(sh: Arc<Shared>, mut recheck: mpsc::UnboundedReceiver<String>) {
    sh.first_lease.notified().await;
    loop {
        match sh.broker.watch_cancels(&sh.cfg.queue).await {
            Ok(mut ids) => {
                // A request made before this subscription (the consumer's first jobs ran
                // while it was being set up, or the feed dropped and was lost meanwhile) was
                // published to no one; its flag is on the job. One heartbeat of what runs now
                // reads the flags; anything later is heard on the feed.
                let running = sh.leases_to_extend();
                if !running.is_empty() {
                    heartbeat(&sh, running).await;
                }
                loop {
                    let id = tokio::select! {
                        heard = ids.recv() => match heard {
                            Some(id) => id,
                            None => break, // the feed dropped: listen again
                        },
                        Some(id) = recheck.recv() => id,
                    };
                    // Not admitted yet (its fetch reply may still be on its way): remembered, and
                    // asked about once it is.
                    if let Some(lease) = sh.cancel_target(id) {
                        heartbeat(&sh, vec![lease]).await;
                    }
                }
            }
            Err(_) => tokio::time::sleep(CANCEL_FEED_RETRY).await,
        }
    }
}

/// Report a lease the broker refused to extend, unless this consumer queued an outcome for it:
/// the snapshot of leases was taken before, and the outcome may have reached the broker ahead
/// of the heartbeat (then it, not a takeover, explains the refusal). The mark is set before the
/// outcome is handed to the flusher and the lease is forgotten only after the flush, so when
/// the lease is still tracked under the same token with no outcome queued, no outcome of ours
/// can have run before the heartbeat did: the refusal is a real loss. Each is reported once: a
/// lease the broker refused is never sent again.
fn refused(sh: &Shared, sent: &HashMap<String, u64>, id: String, event: fn(String) -> Event) {
    let Some(&token) = sent.get(&id) else { return };
    let lease = Lease { id, token };
    if sh.still_running(&lease) {
        sh.stop_extending(&lease.id);
        sh.push_event(event(lease.id));
    }
}

/// One reap tick: reap the queue unless another worker's reaper holds its claim.
pub(super) async fn reap(sh: Arc<Shared>, claim: ReapClaim) -> crate::errors::Result<()> {
    let counters = sh.engine.counters();
    match sh
        .broker
        .reap_claimed(&sh.cfg.queue, sh.cfg.dead_ttl_ms, &claim)
        .await
    {
        Ok(out) if out.skipped => {
            counters.reaps_skipped.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(out) => {
            counters.reaps.fetch_add(1, Ordering::Relaxed);
            counters.requeued.fetch_add(out.requeued, Ordering::Relaxed);
            counters.reaped_dead.fetch_add(out.dead, Ordering::Relaxed);
            Ok(())
        }
        Err(err) => {
            sh.set_health(Err(&err));
            Err(err)
        }
    }
}
