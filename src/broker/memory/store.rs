//! The state of one in-memory queue and the bookkeeping that keeps its indexes in sync.
//!
//! Every job record lives in `jobs`; the sets (`ready`, `scheduled`, `deadlines`, `dead`,
//! `expiring`) only hold ids. A record's state decides which set holds it, so every state change
//! goes through [`QueueState::unlink`] → mutate → [`QueueState::link`] and the sets can never
//! disagree with the records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::broker::{Enqueued, FetchOutcome, JobInfo, JobState, Leased, NewJob, MAX_PRIORITY};

/// Position in the ready order: (MAX_PRIORITY - priority, per-queue sequence), smallest first.
pub(super) type Rank = (u64, u64);

/// One job as the broker keeps it: the public view plus what only the broker needs.
#[derive(Debug, Clone)]
pub(super) struct JobRecord {
    pub info: JobInfo,
    /// Ready position given at enqueue; release, reap and retries put the job back here.
    pub rank: Rank,
    /// Fencing token of the current (or last) lease.
    pub token: u64,
    pub cancel_requested: bool,
    /// Times its lease expired (the worker died or hung); see `MAX_STALLS`.
    pub stalls: u32,
    /// Idempotency key the job was enqueued with.
    pub key: Option<String>,
    /// Lease deadline while running.
    pub deadline: Option<u64>,
    /// When it entered the dead-letter set.
    pub dead_ms: Option<u64>,
    /// When the record disappears (finished records only).
    pub expires_ms: Option<u64>,
}

/// An idempotency key and the job it points at.
#[derive(Debug, Clone)]
pub(super) struct IdemKey {
    pub id: String,
    pub expires_ms: u64,
}

/// Everything the broker knows about one queue.
#[derive(Debug, Default)]
pub(super) struct QueueState {
    /// The queue's name, copied into every record's `JobInfo::queue`.
    pub name: String,
    seq: u64,
    pub jobs: HashMap<String, JobRecord>,
    pub ready: BTreeMap<Rank, String>,
    /// (due_ms, id) of scheduled jobs and failed jobs waiting to retry.
    pub scheduled: BTreeSet<(u64, String)>,
    /// (lease deadline, id) of running jobs.
    pub deadlines: BTreeSet<(u64, String)>,
    /// (dead_ms, id), oldest first.
    pub dead: BTreeSet<(u64, String)>,
    /// (expires_ms, id) of records that expire.
    expiring: BTreeSet<(u64, String)>,
    pub keys: HashMap<String, IdemKey>,
    key_expiry: BTreeSet<(u64, String)>,
    pub succeeded_total: u64,
    pub failed_total: u64,
    /// Wakes `wait`ers; never replaced, so a waiter may hold a clone across the lock.
    pub notify: Arc<Notify>,
}

impl QueueState {
    pub fn new(name: &str) -> Self {
        QueueState {
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// Remove `id` from whichever set its current state puts it in.
    pub fn unlink(&mut self, id: &str) {
        let Some(rec) = self.jobs.get(id) else { return };
        let owned = id.to_string();
        match rec.info.state {
            JobState::Queued => {
                self.ready.remove(&rec.rank);
            }
            JobState::Scheduled | JobState::Failed => {
                if let Some(due) = rec.info.due_ms {
                    self.scheduled.remove(&(due, owned.clone()));
                }
            }
            JobState::Running => {
                if let Some(deadline) = rec.deadline {
                    self.deadlines.remove(&(deadline, owned.clone()));
                }
            }
            JobState::Dead => {
                if let Some(at) = rec.dead_ms {
                    self.dead.remove(&(at, owned.clone()));
                }
            }
            JobState::Succeeded | JobState::Cancelled => {}
        }
        if let Some(at) = rec.expires_ms {
            self.expiring.remove(&(at, owned));
        }
    }

    /// Put `id` into the set its current state calls for.
    pub fn link(&mut self, id: &str) {
        let Some(rec) = self.jobs.get(id) else { return };
        let owned = id.to_string();
        match rec.info.state {
            JobState::Queued => {
                self.ready.insert(rec.rank, owned.clone());
            }
            JobState::Scheduled | JobState::Failed => {
                if let Some(due) = rec.info.due_ms {
                    self.scheduled.insert((due, owned.clone()));
                }
            }
            JobState::Running => {
                if let Some(deadline) = rec.deadline {
                    self.deadlines.insert((deadline, owned.clone()));
                }
            }
            JobState::Dead => {
                if let Some(at) = rec.dead_ms {
                    self.dead.insert((at, owned.clone()));
                }
            }
            JobState::Succeeded | JobState::Cancelled => {}
        }
        if let Some(at) = rec.expires_ms {
            self.expiring.insert((at, owned));
        }
    }

    /// Change a job under the unlink/link discipline. Returns false when the job does not exist.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut JobRecord)) -> bool {
        self.unlink(id);
        let Some(rec) = self.jobs.get_mut(id) else {
            return false;
        };
        change(rec);
        self.link(id);
        true
    }

    /// Delete a record and every index entry pointing at it.
    pub fn remove(&mut self, id: &str) -> bool {
        self.unlink(id);
        self.jobs.remove(id).is_some()
    }

    /// Drop records and idempotency keys whose time is up. Called before every operation, so
    /// expired entries are never observed and memory stays bounded by what is still alive.
    pub fn expire(&mut self, now: u64) {
        while let Some((at, id)) = self.expiring.first().cloned() {
            if at > now {
                break;
            }
            self.expiring.pop_first();
            self.remove(&id);
        }
        while let Some((at, key)) = self.key_expiry.first().cloned() {
            if at > now {
                break;
            }
            self.key_expiry.pop_first();
            self.keys.remove(&key);
        }
    }

    /// (Re)set when an idempotency key expires.
    pub fn set_key_expiry(&mut self, key: &str, expires_ms: u64) {
        let Some(entry) = self.keys.get_mut(key) else {
            return;
        };
        self.key_expiry.remove(&(entry.expires_ms, key.to_string()));
        entry.expires_ms = expires_ms;
        self.key_expiry.insert((expires_ms, key.to_string()));
    }

    /// Write one new job, or point at the existing one when its key (or id) is still alive.
    pub fn enqueue(&mut self, job: NewJob, now: u64) -> Enqueued {
        if let Some(existing) = job.key.as_ref().and_then(|k| self.keys.get(k)) {
            return Enqueued {
                id: existing.id.clone(),
                created: false,
            };
        }
        if self.jobs.contains_key(&job.id) {
            // Same id twice: writing it again would orphan index entries of the first record.
            return Enqueued {
                id: job.id,
                created: false,
            };
        }
        self.seq += 1;
        let priority = job.priority.clamp(0, MAX_PRIORITY);
        let rank = ((MAX_PRIORITY - priority) as u64, self.seq);
        let due = job
            .eta_ms
            .or_else(|| job.delay_ms.map(|d| now.saturating_add(d)));
        let due_ms = due.filter(|&d| d > now);
        let state = if due_ms.is_some() {
            JobState::Scheduled
        } else {
            JobState::Queued
        };
        let info = JobInfo {
            id: job.id.clone(),
            queue: self.name.clone(),
            state,
            payload: job.payload,
            priority,
            attempts: 0,
            max_attempts: job.max_attempts,
            enqueued_ms: now,
            due_ms,
            started_ms: None,
            finished_ms: None,
            result: None,
            error: None,
            worker: None,
        };
        let rec = JobRecord {
            info,
            rank,
            token: 0,
            cancel_requested: false,
            key: job.key.clone(),
            deadline: None,
            dead_ms: None,
            stalls: 0,
            expires_ms: None,
        };
        self.jobs.insert(job.id.clone(), rec);
        self.link(&job.id);
        if let Some(key) = job.key {
            let entry = IdemKey {
                id: job.id.clone(),
                expires_ms: now,
            };
            self.keys.insert(key.clone(), entry);
            let expires = super::ops::expiry(now, job.key_ttl_ms).unwrap_or(u64::MAX);
            self.set_key_expiry(&key, expires);
        }
        Enqueued {
            id: job.id,
            created: true,
        }
    }

    /// Move every scheduled job that is due into ready, at its original position.
    pub fn promote(&mut self, now: u64) -> u64 {
        let mut moved = 0;
        while let Some((due, id)) = self.scheduled.first().cloned() {
            if due > now {
                break;
            }
            self.update(&id, |rec| rec.info.state = JobState::Queued);
            moved += 1;
        }
        moved
    }

    /// Milliseconds until the earliest scheduled job is due.
    pub fn next_due_in(&self, now: u64) -> Option<u64> {
        self.scheduled
            .first()
            .map(|(due, _)| due.saturating_sub(now))
    }

    /// Promote, then lease up to `max` ready jobs in order.
    pub fn fetch(&mut self, max: usize, lease_ms: u64, worker: &str, now: u64) -> FetchOutcome {
        self.promote(now);
        let mut jobs = Vec::new();
        while jobs.len() < max {
            let Some(id) = self.ready.values().next().cloned() else {
                break;
            };
            // A job that stalled before (its worker died running it) runs in a batch of its
            // own, so a job that kills its worker cannot take a batch of good jobs down with it.
            let suspect = self.jobs.get(&id).is_some_and(|r| r.stalls > 0);
            if suspect && !jobs.is_empty() {
                break;
            }
            self.update(&id, |rec| {
                rec.info.attempts += 1;
                rec.token += 1;
                rec.info.state = JobState::Running;
                rec.info.started_ms = Some(now);
                rec.info.worker = Some(worker.to_string());
                rec.deadline = Some(now.saturating_add(lease_ms));
            });
            if let Some(rec) = self.jobs.get(&id) {
                jobs.push(Leased {
                    id,
                    payload: rec.info.payload.clone(),
                    attempt: rec.info.attempts,
                    max_attempts: rec.info.max_attempts,
                    token: rec.token,
                    enqueued_ms: rec.info.enqueued_ms,
                });
            }
            if suspect {
                break;
            }
        }
        FetchOutcome {
            jobs,
            next_due_us: self.next_due_in(now).map(|ms| ms.saturating_mul(1000)),
        }
    }
}
