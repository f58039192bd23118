//! Lease-holder and admin operations on one queue, following `docs/architecture.md`.

use super::store::{JobRecord, QueueState};
use crate::broker::{
    Ack, CancelOutcome, Fail, FailOutcome, HeartbeatOutcome, JobSet, JobState, Lease, QueueCounts,
    ReapOutcome, CANCELLED_TTL_MS, MAX_STALLS,
};
use crate::codec::ErrorRecord;

fn lease_expired_error(stalls: u32) -> Vec<u8> {
    ErrorRecord {
        kind: "LeaseExpired".into(),
        message: format!("lease expired {stalls} times: the worker stopped heartbeating"),
        traceback: String::new(),
        reason: "lease_expired".into(),
    }
    .to_bytes()
}

/// Turn a record into a dead letter that disappears `dead_ttl_ms` from now.
/// When a record with this TTL disappears; a TTL of 0 keeps it (as in the Redis scripts).
pub(super) fn expiry(now: u64, ttl_ms: u64) -> Option<u64> {
    (ttl_ms > 0).then(|| now.saturating_add(ttl_ms))
}

fn make_dead(rec: &mut JobRecord, now: u64, dead_ttl_ms: u64) {
    rec.info.state = JobState::Dead;
    rec.info.finished_ms = Some(now);
    rec.deadline = None;
    rec.dead_ms = Some(now);
    rec.expires_ms = expiry(now, dead_ttl_ms);
}

impl QueueState {
    /// True when `lease` names a running job with that exact token.
    fn holds(&self, lease: &Lease) -> bool {
        self.jobs
            .get(&lease.id)
            .is_some_and(|r| r.info.state == JobState::Running && r.token == lease.token)
    }

    pub fn ack(&mut self, ack: Ack, now: u64) -> bool {
        if !self.holds(&ack.lease) {
            return false;
        }
        let expires = expiry(now, ack.result_ttl_ms);
        let mut key = None;
        self.update(&ack.lease.id, |rec| {
            rec.info.state = JobState::Succeeded;
            rec.info.result = Some(ack.result);
            rec.info.finished_ms = Some(now);
            rec.deadline = None;
            rec.expires_ms = expires;
            key = rec.key.clone();
        });
        // The key expires with the result, but only if it still points at this job.
        if let Some(key) = key.filter(|k| self.keys.get(k).is_some_and(|e| e.id == ack.lease.id)) {
            self.set_key_expiry(&key, expires.unwrap_or(u64::MAX));
        }
        self.succeeded_total += 1;
        true
    }

    pub fn fail(&mut self, fail: Fail, now: u64) -> FailOutcome {
        if !self.holds(&fail.lease) {
            return FailOutcome::Stale;
        }
        self.failed_total += 1;
        let mut outcome = FailOutcome::Dead;
        self.update(&fail.lease.id, |rec| {
            rec.info.error = Some(fail.error);
            if fail.cancelled {
                rec.info.state = JobState::Cancelled;
                rec.info.finished_ms = Some(now);
                rec.deadline = None;
                rec.expires_ms = expiry(now, fail.dead_ttl_ms);
                outcome = FailOutcome::Cancelled;
                return;
            }
            match fail.retry_delay_ms {
                Some(delay) if rec.info.attempts < rec.info.max_attempts => {
                    rec.info.state = JobState::Failed;
                    rec.info.due_ms = Some(now.saturating_add(delay));
                    rec.deadline = None;
                    outcome = FailOutcome::Retrying;
                }
                _ => make_dead(rec, now, fail.dead_ttl_ms),
            }
        });
        outcome
    }

    /// Hand a lease back: the run did not happen, so the attempt is not counted.
    pub fn release(&mut self, lease: &Lease) -> bool {
        if !self.holds(lease) {
            return false;
        }
        self.update(&lease.id, |rec| {
            rec.info.attempts = rec.info.attempts.saturating_sub(1);
            rec.token += 1;
            rec.info.state = JobState::Queued;
            rec.deadline = None;
        })
    }

    pub fn heartbeat(&mut self, leases: Vec<Lease>, lease_ms: u64, now: u64) -> HeartbeatOutcome {
        let mut out = HeartbeatOutcome::default();
        for lease in leases {
            if !self.jobs.contains_key(&lease.id) {
                out.gone.push(lease.id);
                continue;
            }
            if !self.holds(&lease) {
                // Same token but no longer running: this holder's own outcome ended the run.
                if self
                    .jobs
                    .get(&lease.id)
                    .is_some_and(|r| r.token == lease.token)
                {
                    out.finished.push(lease.id);
                } else {
                    out.lost.push(lease.id);
                }
                continue;
            }
            let mut cancel = false;
            self.update(&lease.id, |rec| {
                rec.deadline = Some(now.saturating_add(lease_ms));
                cancel = rec.cancel_requested;
            });
            if cancel {
                out.cancel.push(lease.id);
            }
        }
        out
    }

    /// Recover expired leases, promote due jobs and trim dead letters older than `dead_ttl_ms`.
    pub fn reap(&mut self, dead_ttl_ms: u64, now: u64) -> ReapOutcome {
        let mut out = ReapOutcome::default();
        while let Some((deadline, id)) = self.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            let mut dead = false;
            self.update(&id, |rec| {
                rec.token += 1; // the old holder's ack/fail is refused from now on
                rec.stalls += 1;
                if rec.stalls >= MAX_STALLS {
                    rec.info.error = Some(lease_expired_error(rec.stalls));
                    make_dead(rec, now, dead_ttl_ms);
                    dead = true;
                } else {
                    rec.info.state = JobState::Queued;
                    rec.deadline = None;
                }
            });
            if dead {
                out.dead += 1;
            } else {
                out.requeued += 1;
            }
        }
        self.promote(now);
        self.trim_dead(dead_ttl_ms, now);
        out
    }

    /// Drop dead letters (set entry and record) that entered the set more than `ttl` ago.
    fn trim_dead(&mut self, ttl: u64, now: u64) {
        while let Some((at, id)) = self.dead.first().cloned() {
            if at.saturating_add(ttl) >= now {
                break;
            }
            self.remove(&id);
        }
    }

    pub fn cancel(&mut self, id: &str, now: u64) -> CancelOutcome {
        let Some(rec) = self.jobs.get_mut(id) else {
            return CancelOutcome::NotFound;
        };
        match rec.info.state {
            JobState::Queued | JobState::Scheduled | JobState::Failed => {
                self.update(id, |rec| {
                    rec.info.state = JobState::Cancelled;
                    rec.info.finished_ms = Some(now);
                    rec.expires_ms = expiry(now, CANCELLED_TTL_MS);
                });
                CancelOutcome::Cancelled
            }
            JobState::Running => {
                rec.cancel_requested = true;
                CancelOutcome::Requested
            }
            JobState::Succeeded | JobState::Dead | JobState::Cancelled => CancelOutcome::Finished,
        }
    }

    /// Move dead jobs back to ready with fresh attempts; `None` moves all of them.
    pub fn retry_dead(&mut self, ids: Option<Vec<String>>) -> u64 {
        let ids = ids.unwrap_or_else(|| self.dead.iter().map(|(_, id)| id.clone()).collect());
        let mut moved = 0;
        for id in ids {
            if self.jobs.get(&id).map(|r| r.info.state) != Some(JobState::Dead) {
                continue;
            }
            self.update(&id, |rec| {
                rec.info.state = JobState::Queued;
                rec.info.attempts = 0;
                rec.stalls = 0;
                rec.info.finished_ms = None;
                rec.token += 1;
                rec.cancel_requested = false;
                rec.dead_ms = None;
                rec.expires_ms = None; // persistent again
            });
            moved += 1;
        }
        moved
    }

    /// Delete every queued, scheduled (retries included) and dead job; running jobs stay.
    pub fn purge(&mut self) -> u64 {
        let ids: Vec<String> = self
            .ready
            .values()
            .chain(self.scheduled.iter().map(|(_, id)| id))
            .chain(self.dead.iter().map(|(_, id)| id))
            .cloned()
            .collect();
        for id in &ids {
            let key = self.jobs.get(id).and_then(|r| r.key.clone());
            if let Some(key) = key.filter(|k| self.keys.get(k).is_some_and(|e| &e.id == id)) {
                self.set_key_expiry(&key, 0); // dropped by the next expiry sweep
            }
        }
        ids.iter().filter(|id| self.remove(id)).count() as u64
    }

    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            scheduled: self.scheduled.len() as u64,
            queued: self.ready.len() as u64,
            running: self.deadlines.len() as u64,
            dead: self.dead.len() as u64,
            succeeded_total: self.succeeded_total,
            failed_total: self.failed_total,
        }
    }

    pub fn dead_ids(&self, limit: usize) -> Vec<String> {
        self.dead
            .iter()
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// One page of the ids in `set`, in the same order as the Redis broker's sorted sets.
    pub fn job_ids(&self, set: JobSet, offset: usize, count: usize) -> Vec<String> {
        let page = |ids: &mut dyn Iterator<Item = &String>| {
            ids.skip(offset).take(count).cloned().collect::<Vec<_>>()
        };
        match set {
            JobSet::Queued => page(&mut self.ready.values()),
            JobSet::Scheduled => page(&mut self.scheduled.iter().map(|(_, id)| id)),
            JobSet::Running => page(&mut self.deadlines.iter().map(|(_, id)| id)),
            JobSet::Dead => page(&mut self.dead.iter().map(|(_, id)| id)),
        }
    }
}
