//! Cancel, dead-letter administration, purge, listings, expiry and named instances.

use super::*;
use crate::broker::JobSet;

#[tokio::test]
async fn cancel_handles_every_state() {
    let b = MemoryBroker::new();
    let delayed = NewJob {
        delay_ms: Some(1_000),
        ..new_job("scheduled", 5)
    };
    enqueue(
        &b,
        vec![
            new_job("running", 9),
            new_job("retrying", 8),
            new_job("done", 7),
        ],
    )
    .await;
    let leased = fetch(&b, 3).await;
    b.fail(Q, vec![fail_of(&leased[1], Some(100))])
        .await
        .unwrap();
    b.ack(Q, vec![ack_of(&leased[2], DAY)]).await.unwrap();
    enqueue(&b, vec![new_job("queued", 5), delayed]).await;

    for id in ["queued", "scheduled", "retrying"] {
        assert_eq!(
            b.cancel(Q, id).await.unwrap(),
            CancelOutcome::Cancelled,
            "{id}"
        );
        assert_eq!(state(&b, id).await, Some(JobState::Cancelled));
    }
    assert_eq!(
        b.cancel(Q, "running").await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(state(&b, "running").await, Some(JobState::Running));
    assert_eq!(b.cancel(Q, "done").await.unwrap(), CancelOutcome::Finished);
    assert_eq!(
        b.cancel(Q, "queued").await.unwrap(),
        CancelOutcome::Finished
    );
    assert_eq!(
        b.cancel(Q, "missing").await.unwrap(),
        CancelOutcome::NotFound
    );

    b.advance(2_000);
    assert!(fetch(&b, 10).await.is_empty(), "cancelled jobs never run");
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.queued, counts.scheduled, counts.running), (0, 0, 1));
}

#[tokio::test]
async fn retry_dead_some_then_all() {
    let b = MemoryBroker::new();
    for id in ["a", "b", "c"] {
        kill(&b, id).await;
    }
    let moved = b
        .retry_dead(Q, Some(vec!["b".into(), "missing".into()]))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a", "c"]);
    let info = b.job(Q, "b").await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Queued, 0));

    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 2);
    assert_eq!(b.counts(Q).await.unwrap().dead, 0);
    let leased = fetch(&b, 10).await;
    assert_eq!(ids(&leased), ["a", "b", "c"], "original order");
    assert!(leased.iter().all(|l| l.attempt == 1));

    b.advance(2 * DAY);
    assert!(
        b.job(Q, "a").await.unwrap().is_some(),
        "retried records are persistent again"
    );
}

#[tokio::test]
async fn purge_deletes_waiting_and_dead_jobs_but_not_running() {
    let b = MemoryBroker::new();
    kill(&b, "dead").await;
    enqueue(&b, vec![new_job("running", 9)]).await;
    let running = fetch(&b, 1).await;
    let delayed = NewJob {
        delay_ms: Some(1_000),
        ..new_job("scheduled", 5)
    };
    enqueue(&b, vec![new_job("q1", 5), new_job("q2", 5), delayed]).await;

    assert_eq!(b.purge(Q).await.unwrap(), 4);
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.queued, counts.scheduled, counts.dead, counts.running),
        (0, 0, 0, 1)
    );
    assert_eq!(state(&b, "q1").await, None);
    assert_eq!(
        b.ack(Q, vec![ack_of(&running[0], DAY)]).await.unwrap(),
        [true]
    );
}

#[tokio::test]
async fn queues_lists_enqueued_queues_only() {
    let b = MemoryBroker::new();
    b.enqueue("b", vec![new_job("1", 5)]).await.unwrap();
    b.enqueue("a", vec![new_job("2", 5)]).await.unwrap();
    b.fetch("never-enqueued", 1, LEASE, "w1").await.unwrap();
    assert_eq!(b.queues().await.unwrap(), ["a", "b"]);
    assert_eq!(b.counts("a").await.unwrap().queued, 1);
    assert_eq!(b.counts(Q).await.unwrap().queued, 0);
}

#[tokio::test]
async fn workers_expire_after_their_ttl() {
    let b = MemoryBroker::new();
    let worker = |id: &str| WorkerInfo {
        id: id.into(),
        info: "{}".into(),
        last_seen_ms: 0,
    };
    b.register_worker(&worker("w1"), 1_000).await.unwrap();
    b.register_worker(&worker("w2"), 5_000).await.unwrap();
    let listed = b.workers().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["w1", "w2"]
    );
    assert!(listed[0].last_seen_ms > 0, "stamped with broker time");

    b.advance(1_000);
    assert_eq!(b.workers().await.unwrap().len(), 1);
    b.unregister_worker("w2").await.unwrap();
    assert!(b.workers().await.unwrap().is_empty());
}

#[tokio::test]
async fn finished_records_and_their_keys_expire() {
    let b = MemoryBroker::new();
    // Deadlines to the millisecond below: real time must not move the clock past them.
    b.freeze();
    let keyed = NewJob {
        key: Some("k".into()),
        ..new_job("a", 5)
    };
    enqueue(&b, vec![keyed.clone()]).await;
    let leased = fetch(&b, 1).await;
    b.ack(Q, vec![ack_of(&leased[0], 1_000)]).await.unwrap();
    b.advance(999);
    assert_eq!(state(&b, "a").await, Some(JobState::Succeeded));
    b.advance(1);
    assert_eq!(state(&b, "a").await, None, "result expired");
    let again = b
        .enqueue(
            Q,
            vec![NewJob {
                id: "a2".into(),
                ..keyed
            }],
        )
        .await
        .unwrap();
    assert!(again[0].created, "the key expired with the result");
    b.cancel(Q, "a2").await.unwrap();

    kill(&b, "d").await; // dead_ttl_ms = DAY
    b.advance(DAY);
    assert_eq!(state(&b, "d").await, None, "dead record expired");
    // As on Redis, the dead-set entry outlives its record until the reaper trims it.
    b.reap(Q, DAY).await.unwrap();
    assert_eq!(b.counts(Q).await.unwrap().dead, 0);
}

#[tokio::test]
async fn named_brokers_share_state_per_name() {
    let x1 = MemoryBroker::named("memory://unit-test-x");
    let x2 = MemoryBroker::named("memory://unit-test-x");
    let y = MemoryBroker::named("memory://unit-test-y");
    x1.enqueue(Q, vec![new_job("a", 5)]).await.unwrap();
    assert_eq!(x2.counts(Q).await.unwrap().queued, 1);
    assert_eq!(y.counts(Q).await.unwrap().queued, 0);
    assert!(Arc::ptr_eq(&x1, &x2));
}

#[tokio::test]
async fn cancelled_records_expire_and_zero_ttl_keeps_results() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("a", 0), new_job("b", 0)]).await;
    assert_eq!(b.cancel(Q, "a").await.unwrap(), CancelOutcome::Cancelled);
    let got = fetch(&b, 1).await;
    assert!(b.ack(Q, vec![ack_of(&got[0], 0)]).await.unwrap()[0]);
    b.advance(CANCELLED_TTL_MS + 1);
    assert_eq!(state(&b, "a").await, None, "cancelled record expired");
    assert_eq!(
        state(&b, "b").await,
        Some(JobState::Succeeded),
        "ttl 0 keeps it"
    );
}

#[tokio::test]
async fn purge_drops_idempotency_keys() {
    let b = MemoryBroker::new();
    let mut job = new_job("a", 0);
    job.key = Some("k".into());
    enqueue(&b, vec![job.clone()]).await;
    assert_eq!(b.purge(Q).await.unwrap(), 1);
    job.id = "b".into();
    let out = b.enqueue(Q, vec![job]).await.unwrap();
    assert!(out[0].created && out[0].id == "b");
}

#[tokio::test]
async fn fail_marked_cancelled_ends_cancelled_outside_the_dead_set() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("a", 0)]).await;
    let got = fetch(&b, 1).await;
    let fail = Fail {
        cancelled: true,
        ..fail_of(&got[0], Some(10))
    };
    assert_eq!(
        b.fail(Q, vec![fail]).await.unwrap(),
        [FailOutcome::Cancelled]
    );
    assert_eq!(state(&b, "a").await, Some(JobState::Cancelled));
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.dead, counts.running, counts.scheduled), (0, 0, 0));
}

#[tokio::test]
async fn a_stalled_job_is_leased_in_a_batch_of_its_own() {
    let b = MemoryBroker::new();
    enqueue(&b, vec![new_job("x", 0), new_job("s", 0), new_job("y", 0)]).await;
    let first = fetch(&b, 2).await;
    assert_eq!(ids(&first), ["x", "s"]);
    b.ack(Q, vec![ack_of(&first[0], DAY)]).await.unwrap();
    b.advance(LEASE + 1);
    assert_eq!(b.reap(Q, DAY).await.unwrap().requeued, 1);
    enqueue(&b, vec![new_job("h", 9)]).await;
    assert_eq!(
        ids(&fetch(&b, 10).await),
        ["h"],
        "stops before the stalled job"
    );
    assert_eq!(ids(&fetch(&b, 10).await), ["s"], "the stalled job alone");
    assert_eq!(ids(&fetch(&b, 10).await), ["y"]);
}

#[tokio::test]
async fn job_ids_pages_each_state_set_and_jobs_reads_a_batch() {
    let b = MemoryBroker::new();
    kill(&b, "x").await;
    b.advance(1);
    kill(&b, "y").await;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..new_job("later", 0)
    };
    let waiting = vec![new_job("q1", 5), new_job("q2", 5), new_job("q3", 0)];
    enqueue(&b, [vec![new_job("run", 9), later], waiting].concat()).await;
    assert_eq!(ids(&fetch(&b, 1).await), ["run"]);

    let page = |set, offset, count| b.job_ids(Q, set, offset, count);
    assert_eq!(
        page(JobSet::Queued, 0, 10).await.unwrap(),
        ["q1", "q2", "q3"]
    );
    assert_eq!(page(JobSet::Queued, 1, 1).await.unwrap(), ["q2"]);
    assert_eq!(page(JobSet::Queued, 2, 5).await.unwrap(), ["q3"]);
    assert!(page(JobSet::Queued, 3, 5).await.unwrap().is_empty());
    assert!(page(JobSet::Queued, 0, 0).await.unwrap().is_empty());
    assert_eq!(page(JobSet::Scheduled, 0, 10).await.unwrap(), ["later"]);
    assert_eq!(page(JobSet::Running, 0, 10).await.unwrap(), ["run"]);
    assert_eq!(page(JobSet::Dead, 0, 10).await.unwrap(), ["x", "y"]);

    let wanted = ["q2", "missing", "x"].map(String::from);
    let found = b.jobs(Q, &wanted).await.unwrap();
    let states: Vec<_> = found.iter().map(|j| j.as_ref().map(|j| j.state)).collect();
    assert_eq!(states, [Some(JobState::Queued), None, Some(JobState::Dead)]);
    assert_eq!(
        found[2].as_ref().unwrap().error.as_deref(),
        Some(&b"boom"[..])
    );
    assert!(b.jobs(Q, &[]).await.unwrap().is_empty());
}
