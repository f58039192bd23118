//! Administration and listing: cancel, dead letters, purge, queues, workers, pages of ids,
//! and the expiry of finished records.

use _core::broker::*;
use tokio_util::sync::CancellationToken;

use crate::contract;
use crate::harness::*;

const DAY: u64 = 86_400_000;

contract!(
    cancel_depends_on_the_state,
    retry_dead_some_then_all_in_original_order,
    retry_dead_requeues_with_fresh_attempts,
    purge_deletes_waiting_and_dead_jobs_but_not_running_ones,
    a_paused_queue_leases_nothing_until_resumed,
    delete_removes_a_job_in_any_state_but_running,
    queues_are_listed_once_enqueued_to,
    workers_are_listed_until_their_ttl,
    job_ids_pages_each_state_set_and_jobs_reads_a_batch,
    finished_records_and_their_keys_expire,
    cancelled_records_expire_and_zero_ttl_keeps_results,
);

async fn cancel_depends_on_the_state(c: Ctx) {
    let b = &c.b;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("later", 1)
    };
    let jobs = vec![
        job("run", 9),
        job("done", 8),
        job("retry", 7),
        job("queued", 1),
        later,
    ];
    b.enqueue(Q, jobs).await.unwrap();
    let got = fetch(b, 3).await;
    assert_eq!(ids(&got), ["run", "done", "retry"]);
    b.ack(Q, vec![ack_of(&got.jobs[1], b"")]).await.unwrap();
    b.fail(Q, vec![fail_of(&got.jobs[2], Some(60_000))])
        .await
        .unwrap();

    use CancelOutcome::*;
    for (id, expected, now) in [
        ("queued", Cancelled, Some(JobState::Cancelled)),
        ("later", Cancelled, Some(JobState::Cancelled)),
        ("retry", Cancelled, Some(JobState::Cancelled)),
        ("run", Requested, Some(JobState::Running)),
        ("done", Finished, Some(JobState::Succeeded)),
        ("queued", Finished, Some(JobState::Cancelled)),
        ("missing", NotFound, None),
    ] {
        assert_eq!(b.cancel(Q, id).await.unwrap(), expected, "{id}");
        let state = b.job(Q, id).await.unwrap().map(|j| j.state);
        assert_eq!(state, now, "{id}");
    }
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.queued, counts.scheduled, counts.running), (0, 0, 1));
    assert!(
        fetch(b, 10).await.jobs.is_empty(),
        "cancelled jobs never run"
    );
}

async fn retry_dead_some_then_all_in_original_order(c: Ctx) {
    let b = &c.b;
    make_dead(b, &["a", "b", "c"]).await;
    let some = Some(vec!["b".into(), "missing".into()]);
    assert_eq!(b.retry_dead(Q, some).await.unwrap(), 1);
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a", "c"]);
    let info = b.job(Q, "b").await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Queued, 0));

    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 2);
    assert_eq!(b.counts(Q).await.unwrap().dead, 0);
    let leased = fetch(b, 10).await;
    assert_eq!(ids(&leased), ["a", "b", "c"], "original order");
    assert!(leased.jobs.iter().all(|l| l.attempt == 1));
    if let Some(m) = c.mem() {
        // Only a test clock can jump past the 60 s dead TTL the records had.
        m.advance(2 * DAY);
        assert!(
            b.job(Q, "a").await.unwrap().is_some(),
            "retried records are persistent again"
        );
    }
}

async fn retry_dead_requeues_with_fresh_attempts(c: Ctx) {
    let b = &c.b;
    make_dead(b, &["a", "b", "c"]).await;
    assert_eq!(b.dead_ids(Q, 2).await.unwrap().len(), 2);
    let some = Some(vec!["b".into(), "nope".into()]);
    assert_eq!(b.retry_dead(Q, some).await.unwrap(), 1);
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["b"]);
    assert_eq!(got.jobs[0].attempt, 1);
    assert!(got.jobs[0].token >= 3);
    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 2);
    assert_eq!(b.counts(Q).await.unwrap().dead, 0);
    assert_eq!(state(b, "a").await, JobState::Queued);
    assert_eq!(c.pttl(&job_key("a")).await, -1, "record persistent again");
}

async fn purge_deletes_waiting_and_dead_jobs_but_not_running_ones(c: Ctx) {
    let b = &c.b;
    make_dead(b, &["dead"]).await;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("later", 1)
    };
    let keyed = NewJob {
        key: Some("k".into()),
        ..job("keyed", 1)
    };
    b.enqueue(Q, vec![job("run", 9), keyed, job("queued", 1), later])
        .await
        .unwrap();
    let running = fetch(b, 1).await;
    assert_eq!(b.purge(Q).await.unwrap(), 4);
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.queued, counts.scheduled, counts.dead, counts.running),
        (0, 0, 0, 1)
    );
    assert_eq!(state(b, "run").await, JobState::Running);
    assert!(b.job(Q, "later").await.unwrap().is_none());
    assert!(b.job(Q, "queued").await.unwrap().is_none());
    let again = b.enqueue(
        Q,
        vec![NewJob {
            key: Some("k".into()),
            ..job("new", 1)
        }],
    );
    let again = again.await.unwrap();
    assert!(
        again[0].created && again[0].id == "new",
        "purge drops idempotency keys"
    );
    assert_eq!(
        b.ack(Q, vec![ack_of(&running.jobs[0], b"")]).await.unwrap(),
        [true]
    );
}

async fn a_paused_queue_leases_nothing_until_resumed(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("run", 9), job("a", 1), job("b", 1)])
        .await
        .unwrap();
    let running = fetch(b, 1).await;
    assert!(b.pause(Q, true).await.unwrap());
    assert!(!b.pause(Q, true).await.unwrap(), "already paused");
    assert!(b.counts(Q).await.unwrap().paused);
    b.enqueue(Q, vec![job("c", 1)]).await.unwrap();
    assert!(
        fetch(b, 10).await.jobs.is_empty(),
        "nothing leased while paused"
    );
    // The job that was running when the queue was paused ends as usual.
    assert_eq!(
        b.ack(Q, vec![ack_of(&running.jobs[0], b"")]).await.unwrap(),
        [true]
    );
    // Resuming leaves a wake token: an idle worker takes the queue up at once.
    let (queues, never) = ([Q.to_owned()], CancellationToken::new());
    let _ = b.wait_any(&queues, 0, &never).await;
    assert!(b.pause(Q, false).await.unwrap());
    assert!(!b.pause(Q, false).await.unwrap(), "not paused");
    assert!(!b.counts(Q).await.unwrap().paused);
    assert_eq!(b.wait_any(&queues, 0, &never).await.unwrap(), [Q]);
    assert_eq!(ids(&fetch(b, 10).await), ["a", "b", "c"]);
}

async fn delete_removes_a_job_in_any_state_but_running(c: Ctx) {
    let b = &c.b;
    make_dead(b, &["dead"]).await;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("later", 1)
    };
    let keyed = NewJob {
        key: Some("k".into()),
        ..job("keyed", 1)
    };
    b.enqueue(Q, vec![job("run", 9), job("done", 8), keyed, later])
        .await
        .unwrap();
    let got = fetch(b, 2).await;
    b.ack(Q, vec![ack_of(&got.jobs[1], b"")]).await.unwrap();
    use DeleteOutcome::*;
    for (id, expected) in [
        ("dead", Deleted),
        ("done", Deleted),
        ("keyed", Deleted),
        ("later", Deleted),
        ("run", Running),
        ("later", NotFound),
        ("missing", NotFound),
    ] {
        assert_eq!(b.delete_job(Q, id).await.unwrap(), expected, "{id}");
    }
    for id in ["dead", "done", "keyed", "later"] {
        assert!(b.job(Q, id).await.unwrap().is_none(), "{id}");
    }
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.queued, counts.scheduled, counts.dead, counts.running),
        (0, 0, 0, 1)
    );
    let again = b.enqueue(
        Q,
        vec![NewJob {
            key: Some("k".into()),
            ..job("new", 1)
        }],
    );
    assert!(again.await.unwrap()[0].created, "the key went with the job");
    assert_eq!(state(b, "run").await, JobState::Running);
}

async fn queues_are_listed_once_enqueued_to(c: Ctx) {
    let b = &c.b;
    b.enqueue("beta", vec![job("a", 1)]).await.unwrap();
    b.enqueue("alpha", vec![job("b", 1)]).await.unwrap();
    b.enqueue("alpha", vec![job("c", 1)]).await.unwrap();
    b.fetch("never-enqueued", Want::jobs(1), 30_000, "w")
        .await
        .unwrap();
    assert_eq!(b.queues().await.unwrap(), ["alpha", "beta"]);
    assert_eq!(b.counts("alpha").await.unwrap().queued, 2);
    assert_eq!(b.counts(Q).await.unwrap().queued, 0);
}

async fn workers_are_listed_until_their_ttl(c: Ctx) {
    let b = &c.b;
    let worker = |id: &str| WorkerInfo {
        id: id.into(),
        info: format!(r#"{{"host":"h","id":"{id}"}}"#),
        last_seen_ms: 0,
    };
    b.register_worker(&worker("w1"), 60_000).await.unwrap();
    // 1 s: long enough that a busy machine still lists it right after registering.
    b.register_worker(&worker("w2"), 1_000).await.unwrap();
    let listed = b.workers().await.unwrap();
    let listed_ids: Vec<&str> = listed.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(listed_ids, ["w1", "w2"]);
    assert!(listed[0].last_seen_ms > 0, "stamped with broker time");
    c.pass(1_200).await;
    let listed = b.workers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info, worker("w1").info);
    b.unregister_worker("w1").await.unwrap();
    assert!(b.workers().await.unwrap().is_empty());
}

async fn job_ids_pages_each_state_set_and_jobs_reads_a_batch(c: Ctx) {
    let b = &c.b;
    make_dead(b, &["x", "y"]).await;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("later", 0)
    };
    let waiting = vec![
        job("run", 9),
        later,
        job("q1", 5),
        job("q2", 5),
        job("q3", 0),
    ];
    b.enqueue(Q, waiting).await.unwrap();
    assert_eq!(ids(&fetch(b, 1).await), ["run"]);

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
    // x died first (or in the same ms, when equal scores order by id): oldest first.
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
    assert!(b.job_ids("bad{name", JobSet::Dead, 0, 1).await.is_err());
}

async fn finished_records_and_their_keys_expire(c: Ctx) {
    // On memory:// the deadlines are checked to the millisecond, so real time must not move
    // the clock; on Redis the test waits 100 ms past them (expiry is checked strictly after).
    c.freeze();
    let b = &c.b;
    let keyed = NewJob {
        key: Some("k".into()),
        ..job("a", 5)
    };
    b.enqueue(Q, vec![keyed.clone()]).await.unwrap();
    let leased = fetch(b, 1).await.jobs.remove(0);
    let ack = Ack {
        result_ttl_ms: 300,
        ..ack_of(&leased, b"ok")
    };
    b.ack(Q, vec![ack]).await.unwrap();
    if c.exact_clock() {
        c.pass(299).await;
        assert_eq!(state(b, "a").await, JobState::Succeeded);
        c.pass(1).await;
    } else {
        c.pass(400).await;
    }
    assert!(b.job(Q, "a").await.unwrap().is_none(), "result expired");
    let again = NewJob {
        id: "a2".into(),
        ..keyed
    };
    let again = b.enqueue(Q, vec![again]).await.unwrap();
    assert!(again[0].created, "the key expired with the result");
    b.cancel(Q, "a2").await.unwrap();

    b.enqueue(Q, vec![job("d", 5)]).await.unwrap();
    let leased = fetch(b, 1).await.jobs.remove(0);
    let fail = Fail {
        dead_ttl_ms: 300,
        ..fail_of(&leased, None)
    };
    assert_eq!(b.fail(Q, vec![fail]).await.unwrap(), [FailOutcome::Dead]);
    c.pass(if c.exact_clock() { 300 } else { 400 }).await;
    assert!(
        b.job(Q, "d").await.unwrap().is_none(),
        "dead record expired"
    );
    // The dead-set entry outlives its record until the reaper trims it (by the same TTL).
    b.reap(Q, 300).await.unwrap();
    assert_eq!(b.counts(Q).await.unwrap().dead, 0);
}

async fn cancelled_records_expire_and_zero_ttl_keeps_results(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 0), job("b", 0)]).await.unwrap();
    assert_eq!(b.cancel(Q, "a").await.unwrap(), CancelOutcome::Cancelled);
    let ttl = c.pttl(&job_key("a")).await;
    assert!(ttl > 0 && ttl as u64 <= CANCELLED_TTL_MS, "pttl {ttl}");
    let got = fetch(b, 1).await.jobs.remove(0);
    let ack = Ack {
        result_ttl_ms: 0,
        ..ack_of(&got, b"ok")
    };
    assert_eq!(b.ack(Q, vec![ack]).await.unwrap(), [true]);
    assert_eq!(c.pttl(&job_key("b")).await, -1, "ttl 0 keeps the result");
    if let Some(m) = c.mem() {
        // Only a test clock can jump the 7 days.
        m.advance(CANCELLED_TTL_MS + 1);
        assert!(
            b.job(Q, "a").await.unwrap().is_none(),
            "cancelled record expired"
        );
        assert_eq!(state(b, "b").await, JobState::Succeeded, "ttl 0 keeps it");
    }
}
