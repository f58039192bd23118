//! Enqueue: ordering, batches, delays, idempotency keys, validation.

use _core::broker::*;
use _core::errors::Error;

use crate::contract;
use crate::harness::*;

contract!(
    fetch_orders_by_priority_then_fifo,
    a_partial_fetch_takes_the_highest_priorities_first,
    a_batch_of_100_is_enqueued_and_leased_in_one_call_each,
    bulk_enqueue_larger_than_one_script_chunk_keeps_fifo,
    delayed_and_eta_jobs_wait_until_due,
    idempotency_key_returns_the_existing_id_until_it_expires,
    out_of_range_priority_and_bad_queue_names_are_refused,
    enqueue_never_writes_an_id_that_already_has_a_record,
);

async fn fetch_orders_by_priority_then_fifo(c: Ctx) {
    let b = &c.b;
    let first = vec![job("a", 0), job("b", 5), job("c", 5), job("d", 9)];
    let out = b.enqueue(Q, first).await.unwrap();
    assert!(out.iter().all(|e| e.created));
    b.enqueue(Q, vec![job("e", 5)]).await.unwrap();
    assert_eq!(b.counts(Q).await.unwrap().queued, 5);

    let got = b.fetch(Q, Want::jobs(10), 30_000, "w1").await.unwrap();
    assert_eq!(ids(&got), ["d", "b", "c", "e", "a"]);
    assert_eq!(got.next_due_us, None);
    let d = &got.jobs[0];
    assert_eq!((d.attempt, d.max_attempts, d.token), (1, 3, 1));
    assert_eq!(d.payload, vec![0x00, 0xff, b'x', 0x80]);
    assert!(d.enqueued_ms > 0);
    assert!(got
        .jobs
        .iter()
        .all(|l| l.attempt == 1 && l.max_attempts == 3 && l.token > 0));
    let info = b.job(Q, "d").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.worker.as_deref(), info.queue.as_str()),
        (JobState::Running, Some("w1"), Q)
    );
    assert!(info.started_ms.is_some());
    assert_eq!(b.counts(Q).await.unwrap().running, 5);
    assert!(fetch(b, 10).await.jobs.is_empty());
}

async fn a_partial_fetch_takes_the_highest_priorities_first(c: Ctx) {
    let b = &c.b;
    let jobs = [("a", 5), ("b", 9), ("c", 5), ("d", 0), ("e", 9), ("f", 7)];
    let jobs = jobs.iter().map(|(id, p)| job(id, *p)).collect();
    b.enqueue(Q, jobs).await.unwrap();
    assert_eq!(ids(&fetch(b, 3).await), ["b", "e", "f"]);
    assert_eq!(ids(&fetch(b, 10).await), ["a", "c", "d"]);
    assert_eq!(b.counts(Q).await.unwrap().running, 6);
}

async fn a_batch_of_100_is_enqueued_and_leased_in_one_call_each(c: Ctx) {
    let b = &c.b;
    let jobs: Vec<NewJob> = (0..150).map(|i| job(&format!("j{i:03}"), 3)).collect();
    assert_eq!(b.enqueue(Q, jobs).await.unwrap().len(), 150);
    let got = fetch(b, 100).await;
    assert_eq!(got.jobs.len(), 100);
    assert_eq!(
        (got.jobs[0].id.as_str(), got.jobs[99].id.as_str()),
        ("j000", "j099")
    );
    assert_eq!(b.counts(Q).await.unwrap().queued, 50);
}

async fn bulk_enqueue_larger_than_one_script_chunk_keeps_fifo(c: Ctx) {
    let b = &c.b;
    let jobs: Vec<NewJob> = (0..2500).map(|i| job(&format!("j{i:05}"), 0)).collect();
    let out = b.enqueue(Q, jobs).await.unwrap();
    assert_eq!(out.len(), 2500);
    assert!(out.iter().all(|e| e.created));
    let mut seen = Vec::new();
    loop {
        let got = fetch(b, 1000).await;
        if got.jobs.is_empty() {
            break;
        }
        seen.extend(got.jobs.into_iter().map(|j| j.id));
    }
    let expected: Vec<String> = (0..2500).map(|i| format!("j{i:05}")).collect();
    assert_eq!(seen, expected);
}

async fn delayed_and_eta_jobs_wait_until_due(c: Ctx) {
    c.freeze();
    let b = &c.b;
    let now = b.now_ms().await.unwrap();
    let delayed = NewJob {
        delay_ms: Some(150),
        ..job("delayed", 5)
    };
    let eta = NewJob {
        eta_ms: Some(now + 1_500),
        ..job("eta", 5)
    };
    let past = NewJob {
        eta_ms: Some(now - 1000),
        delay_ms: Some(5_000),
        ..job("past", 5)
    };
    b.enqueue(Q, vec![delayed, eta, past]).await.unwrap();
    assert_eq!(state(b, "delayed").await, JobState::Scheduled);
    assert_eq!(
        b.job(Q, "eta").await.unwrap().unwrap().due_ms,
        Some(now + 1_500)
    );
    assert_eq!(
        state(b, "past").await,
        JobState::Queued,
        "eta wins over delay"
    );
    assert_eq!(b.counts(Q).await.unwrap().scheduled, 2);

    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["past"]);
    let next = got.next_due_us.expect("something scheduled");
    assert!(next <= 150_000, "{next}");
    if c.exact_clock() {
        // Frozen clock: the delay less the sub-millisecond part of "now".
        assert!(next > 149_000, "{next}");
    }
    // Margin of 20 ms over the due time: Redis rounds its clock to the ms.
    c.pass(next / 1000 + 20).await;
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["delayed"]);
    let next = got.next_due_us.expect("eta still scheduled");
    // At least 150 ms of the eta's 1.5 s have passed.
    assert!(next <= 1_350_000, "{next}");
    if c.exact_clock() {
        assert!(next > 1_300_000, "{next}");
    }
    c.pass(next / 1000 + 20).await;
    let got = fetch(b, 10).await;
    assert_eq!((ids(&got), got.next_due_us), (vec!["eta"], None));
}

async fn idempotency_key_returns_the_existing_id_until_it_expires(c: Ctx) {
    let b = &c.b;
    let keyed = |id: &str| NewJob {
        key: Some("once".into()),
        key_ttl_ms: 200,
        ..job(id, 1)
    };
    let out = b.enqueue(Q, vec![keyed("a"), keyed("b")]).await.unwrap();
    let expect = |id: &str, created| Enqueued {
        id: id.into(),
        created,
    };
    assert_eq!(out, [expect("a", true), expect("a", false)]);
    let again = b.enqueue(Q, vec![keyed("c"), job("d", 1)]).await.unwrap();
    assert_eq!(again, [expect("a", false), expect("d", true)]);
    assert!(b.job(Q, "b").await.unwrap().is_none());
    assert!(b.job(Q, "c").await.unwrap().is_none());
    assert_eq!(b.counts(Q).await.unwrap().queued, 2);

    // The memory clock checks the exact boundary; on Redis, 50 ms of margin, because a key
    // expires only once its deadline is strictly past and the sleep starts after the write.
    c.pass(if c.exact_clock() { 200 } else { 250 }).await;
    let out = b.enqueue(Q, vec![keyed("e")]).await.unwrap();
    assert_eq!(out, [expect("e", true)], "the key expired");
}

async fn out_of_range_priority_and_bad_queue_names_are_refused(c: Ctx) {
    let b = &c.b;
    for bad in [42, 10, -1] {
        let batch = vec![job("ok", 5), job("bad", bad)];
        let err = b.enqueue(Q, batch).await.unwrap_err();
        assert!(matches!(err, Error::Payload(_)), "priority {bad}: {err}");
    }
    // The batch is checked before anything is written: not even its valid job went in.
    assert_eq!(b.counts(Q).await.unwrap().queued, 0);
    assert!(b.queues().await.unwrap().is_empty());
    let err = b.enqueue("a{b}", vec![job("a", 1)]).await.unwrap_err();
    assert!(matches!(err, Error::Payload(_)), "{err}");
    assert!(b.counts("").await.is_err());
}

async fn enqueue_never_writes_an_id_that_already_has_a_record(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let running = fetch(b, 1).await;
    assert_eq!(ids(&running), ["a"]);
    // Resent: "a" (now running) is left alone, "b" is new; a batch resent whole changes nothing.
    let out = b.enqueue(Q, vec![job("a", 9), job("b", 1)]).await.unwrap();
    let flags: Vec<(&str, bool)> = out.iter().map(|e| (e.id.as_str(), e.created)).collect();
    assert_eq!(flags, [("a", false), ("b", true)]);
    let again = b.enqueue(Q, vec![job("a", 9), job("b", 1)]).await.unwrap();
    assert!(again.iter().all(|e| !e.created));
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.priority, info.attempts),
        (JobState::Running, 1, 1)
    );
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.queued, counts.running), (1, 1));
}
