//! Unit tests of the memory broker, written against the `Broker` trait.
//!
//! Time-dependent cases move the broker's clock with `advance` instead of sleeping; only the
//! `wait` tests use real time, because they test real wake-ups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod admin;
mod corrupt;
mod engine;
mod wait;

use super::MemoryBroker;
use crate::broker::{
    Ack, Broker, CancelOutcome, Fail, FailOutcome, JobState, Lease, Leased, NewJob, WorkerInfo,
    CANCELLED_TTL_MS,
};
use crate::errors::Error;

const Q: &str = "default";
const LEASE: u64 = 1_000;
const DAY: u64 = 86_400_000;

fn new_job(id: &str, priority: i64) -> NewJob {
    NewJob {
        id: id.to_string(),
        payload: id.as_bytes().to_vec(),
        priority,
        delay_ms: None,
        eta_ms: None,
        max_attempts: 3,
        key: None,
        key_ttl_ms: DAY,
    }
}

fn with_attempts(mut job: NewJob, max_attempts: u32) -> NewJob {
    job.max_attempts = max_attempts;
    job
}

fn lease_of(l: &Leased) -> Lease {
    Lease {
        id: l.id.clone(),
        token: l.token,
    }
}

fn ack_of(l: &Leased, result_ttl_ms: u64) -> Ack {
    Ack {
        lease: lease_of(l),
        result: b"ok".to_vec(),
        result_ttl_ms,
    }
}

fn fail_of(l: &Leased, retry_delay_ms: Option<u64>) -> Fail {
    Fail {
        lease: lease_of(l),
        error: b"boom".to_vec(),
        retry_delay_ms,
        cancelled: false,
        dead_ttl_ms: DAY,
    }
}

async fn enqueue(b: &MemoryBroker, jobs: Vec<NewJob>) {
    b.enqueue(Q, jobs).await.unwrap();
}

async fn fetch(b: &MemoryBroker, max: usize) -> Vec<Leased> {
    b.fetch(Q, max, LEASE, "w1").await.unwrap().jobs
}

fn ids(jobs: &[Leased]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

async fn state(b: &MemoryBroker, id: &str) -> Option<JobState> {
    b.job(Q, id).await.unwrap().map(|j| j.state)
}

/// Lease `id` once and fail it with no retry, leaving it dead.
async fn kill(b: &MemoryBroker, id: &str) {
    enqueue(b, vec![new_job(id, 5)]).await;
    let leased = fetch(b, 1).await;
    assert_eq!(ids(&leased), [id]);
    assert_eq!(
        b.fail(Q, vec![fail_of(&leased[0], None)]).await.unwrap(),
        [FailOutcome::Dead]
    );
}

#[tokio::test]
async fn fetch_orders_by_priority_then_fifo() {
    let b = MemoryBroker::new();
    let jobs = [("a", 5), ("b", 9), ("c", 5), ("d", 0), ("e", 9), ("f", 7)];
    enqueue(&b, jobs.iter().map(|(id, p)| new_job(id, *p)).collect()).await;
    let leased = fetch(&b, 3).await;
    assert_eq!(ids(&leased), ["b", "e", "f"]);
    assert_eq!(ids(&fetch(&b, 10).await), ["a", "c", "d"]);
    assert!(leased
        .iter()
        .all(|l| l.attempt == 1 && l.max_attempts == 3 && l.token > 0));
    let info = b.job(Q, "b").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.worker.as_deref(), info.queue.as_str()),
        (JobState::Running, Some("w1"), Q)
    );
    assert!(info.started_ms.is_some());
    assert_eq!(b.counts(Q).await.unwrap().running, 6);
}

#[tokio::test]
async fn out_of_range_priority_is_rejected_as_on_redis() {
    let b = MemoryBroker::new();
    for bad in [42, 10, -1] {
        let batch = vec![new_job("ok", 5), new_job("bad", bad)];
        let err = b.enqueue(Q, batch).await.unwrap_err();
        assert!(matches!(err, Error::Payload(_)), "priority {bad}: {err}");
    }
    // The batch is checked before anything is written: not even its valid job went in.
    assert_eq!(b.counts(Q).await.unwrap().queued, 0);
    assert!(b.queues().await.unwrap().is_empty());
}

#[tokio::test]
async fn delay_and_eta_wait_in_scheduled_until_due() {
    let b = MemoryBroker::new();
    let now = b.now_ms().await.unwrap();
    let delayed = NewJob {
        delay_ms: Some(1_000),
        ..new_job("delayed", 5)
    };
    let at = NewJob {
        eta_ms: Some(now + 2_000),
        ..new_job("eta", 5)
    };
    let past = NewJob {
        eta_ms: Some(now - 1),
        delay_ms: Some(5_000),
        ..new_job("past", 5)
    };
    enqueue(&b, vec![delayed, at, past]).await;
    assert_eq!(state(&b, "delayed").await, Some(JobState::Scheduled));
    assert!(b.job(Q, "eta").await.unwrap().unwrap().due_ms == Some(now + 2_000));
    assert_eq!(
        state(&b, "past").await,
        Some(JobState::Queued),
        "eta wins over delay"
    );

    let out = b.fetch(Q, 10, LEASE, "w1").await.unwrap();
    assert_eq!(ids(&out.jobs), ["past"]);
    assert!(
        matches!(out.next_due_us, Some(us) if us > 900_000 && us <= 1_000_000),
        "{out:?}"
    );

    b.advance(1_000);
    let out = b.fetch(Q, 10, LEASE, "w1").await.unwrap();
    assert_eq!(ids(&out.jobs), ["delayed"]);
    assert!(
        matches!(out.next_due_us, Some(us) if us > 900_000 && us <= 1_000_000),
        "{out:?}"
    );
    b.advance(1_000);
    let out = b.fetch(Q, 10, LEASE, "w1").await.unwrap();
    assert_eq!((ids(&out.jobs), out.next_due_us), (vec!["eta"], None));
}

#[tokio::test]
async fn idempotency_key_returns_existing_job_until_it_expires() {
    let b = MemoryBroker::new();
    let keyed = |id: &str| NewJob {
        key: Some("k".into()),
        key_ttl_ms: 1_000,
        ..new_job(id, 5)
    };
    let out = b
        .enqueue(Q, vec![keyed("first"), keyed("second")])
        .await
        .unwrap();
    assert_eq!((out[0].id.as_str(), out[0].created), ("first", true));
    assert_eq!((out[1].id.as_str(), out[1].created), ("first", false));
    assert_eq!(b.counts(Q).await.unwrap().queued, 1);
    assert_eq!(state(&b, "second").await, None);

    b.advance(1_000);
    let out = b.enqueue(Q, vec![keyed("third")]).await.unwrap();
    assert_eq!((out[0].id.as_str(), out[0].created), ("third", true));
}

#[tokio::test]
async fn ack_accepts_the_current_token_only() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("a", 5)]).await;
    let leased = fetch(&b, 1).await;
    let stale = Ack {
        lease: Lease {
            id: "a".into(),
            token: leased[0].token + 1,
        },
        ..ack_of(&leased[0], DAY)
    };
    let missing = Ack {
        lease: Lease {
            id: "nope".into(),
            token: 1,
        },
        ..ack_of(&leased[0], DAY)
    };
    assert_eq!(
        b.ack(Q, vec![stale, missing, ack_of(&leased[0], DAY)])
            .await
            .unwrap(),
        [false, false, true]
    );
    assert_eq!(
        b.ack(Q, vec![ack_of(&leased[0], DAY)]).await.unwrap(),
        [false],
        "already acked"
    );

    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.result),
        (JobState::Succeeded, Some(b"ok".to_vec()))
    );
    assert!(info.finished_ms.is_some());
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.running, counts.succeeded_total, counts.failed_total),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn fail_retries_after_delay_then_dead_letters() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![with_attempts(new_job("a", 5), 2)]).await;
    let first = fetch(&b, 1).await;
    let stale = Fail {
        lease: Lease {
            id: "a".into(),
            token: 999,
        },
        ..fail_of(&first[0], Some(500))
    };
    let out = b
        .fail(Q, vec![stale, fail_of(&first[0], Some(500))])
        .await
        .unwrap();
    assert_eq!(out, [FailOutcome::Stale, FailOutcome::Retrying]);
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.error),
        (JobState::Failed, Some(b"boom".to_vec()))
    );
    assert_eq!(b.counts(Q).await.unwrap().scheduled, 1);

    let out = b.fetch(Q, 1, LEASE, "w1").await.unwrap();
    assert!(out.jobs.is_empty() && out.next_due_us.is_some_and(|us| us <= 500_000));
    b.advance(500);
    let second = fetch(&b, 1).await;
    assert_eq!(
        (second[0].attempt, second[0].token > first[0].token),
        (2, true)
    );
    let out = b
        .fail(Q, vec![fail_of(&second[0], Some(500))])
        .await
        .unwrap();
    assert_eq!(out, [FailOutcome::Dead], "attempts exhausted");

    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.error),
        (JobState::Dead, Some(b"boom".to_vec()))
    );
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a"]);
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.dead, counts.scheduled, counts.failed_total),
        (1, 0, 2)
    );
}

#[tokio::test]
async fn fail_without_retry_delay_dead_letters_at_once() {
    let b = MemoryBroker::new();
    kill(&b, "a").await;
    assert_eq!(b.job(Q, "a").await.unwrap().unwrap().attempts, 1);
}

#[tokio::test]
async fn release_returns_job_to_its_place_without_counting_the_attempt() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("a", 5), new_job("b", 5), new_job("c", 5)]).await;
    let first = fetch(&b, 1).await;
    assert_eq!(
        b.release(Q, vec![lease_of(&first[0])]).await.unwrap(),
        [true]
    );
    assert_eq!(
        b.release(Q, vec![lease_of(&first[0])]).await.unwrap(),
        [false],
        "token was bumped"
    );
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Queued, 0));

    let again = fetch(&b, 3).await;
    assert_eq!(ids(&again), ["a", "b", "c"]);
    assert_eq!(again[0].attempt, 1);
    assert!(again[0].token > first[0].token);
    assert_eq!(
        b.ack(Q, vec![ack_of(&first[0], DAY)]).await.unwrap(),
        [false]
    );
}

#[tokio::test]
async fn heartbeat_extends_refuses_stale_and_reports_cancel() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("a", 5), new_job("b", 5)]).await;
    let leased = fetch(&b, 2).await;
    b.advance(800);
    let stale = Lease {
        id: "b".into(),
        token: leased[1].token + 7,
    };
    let out = b
        .heartbeat(Q, vec![lease_of(&leased[0]), stale], LEASE)
        .await
        .unwrap();
    assert_eq!((out.lost, out.cancel), (vec!["b".to_string()], vec![]));

    b.advance(800); // past b's deadline, inside a's extended one
    let reaped = b.reap(Q, DAY).await.unwrap();
    assert_eq!((reaped.requeued, reaped.dead), (1, 0));
    assert_eq!(state(&b, "a").await, Some(JobState::Running));

    assert_eq!(b.cancel(Q, "a").await.unwrap(), CancelOutcome::Requested);
    let out = b
        .heartbeat(Q, vec![lease_of(&leased[0]), lease_of(&leased[1])], LEASE)
        .await
        .unwrap();
    assert_eq!(
        (out.lost, out.cancel),
        (vec!["b".to_string()], vec!["a".to_string()])
    );
}

#[tokio::test]
async fn heartbeat_after_the_holders_own_outcome_is_finished_not_lost() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("a", 5), new_job("b", 5), new_job("c", 5)]).await;
    let leased = fetch(&b, 3).await;
    b.ack(Q, vec![ack_of(&leased[0], DAY)]).await.unwrap();
    b.fail(Q, vec![fail_of(&leased[1], Some(1000))])
        .await
        .unwrap();
    b.release(Q, vec![lease_of(&leased[2])]).await.unwrap();
    let leases = leased.iter().map(lease_of).collect();
    let out = b.heartbeat(Q, leases, LEASE).await.unwrap();
    // A release bumps the token like a takeover: the broker cannot tell those apart.
    assert_eq!(
        (out.finished, out.lost),
        (
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string()]
        )
    );
}

#[tokio::test]
async fn reap_requeues_expired_lease_then_dead_letters_on_third_stall() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![with_attempts(new_job("a", 5), 2), new_job("b", 5)]).await;
    let first = fetch(&b, 1).await;
    b.advance(LEASE + 1);
    let reaped = b.reap(Q, DAY).await.unwrap();
    assert_eq!((reaped.requeued, reaped.dead), (1, 0));
    assert_eq!(
        b.ack(Q, vec![ack_of(&first[0], DAY)]).await.unwrap(),
        [false],
        "old token refused"
    );
    assert_eq!(
        b.fail(Q, vec![fail_of(&first[0], None)]).await.unwrap(),
        [FailOutcome::Stale]
    );

    let second = fetch(&b, 1).await;
    assert_eq!(
        (second[0].id.as_str(), second[0].attempt),
        ("a", 2),
        "back at its original place"
    );
    b.advance(LEASE + 1);
    let reaped = b.reap(Q, DAY).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (1, 0),
        "stalls are not retries"
    );
    let third = fetch(&b, 1).await;
    assert_eq!((third[0].id.as_str(), third[0].attempt), ("a", 3));
    b.advance(LEASE + 1);
    let reaped = b.reap(Q, DAY).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (0, 1),
        "third stall dead-letters"
    );

    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    let error: HashMap<String, String> = rmp_serde::from_slice(&info.error.unwrap()).unwrap();
    assert_eq!(error["type"], "LeaseExpired");
    assert_eq!(error["reason"], "lease_expired");
    assert_eq!(error["traceback"], "");
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a"]);
}

#[tokio::test]
async fn reap_trims_old_dead_letters() {
    let b = MemoryBroker::new();
    kill(&b, "a").await;
    b.advance(1_000);
    kill(&b, "b").await;
    b.advance(500);
    b.reap(Q, 1_000).await.unwrap();
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["b"]);
    assert_eq!(state(&b, "a").await, None);
}
