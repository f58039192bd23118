//! Outcomes of a run: ack, fail (retry, dead letter, cancelled), release.

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    ack_is_accepted_once_and_stale_tokens_are_refused,
    fail_retries_after_delay_then_dead_letters,
    fail_without_retry_delay_dead_letters_at_once,
    fail_marked_cancelled_ends_cancelled_outside_the_dead_set,
    release_puts_the_job_back_first_without_counting_the_attempt,
);

async fn ack_is_accepted_once_and_stale_tokens_are_refused(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let l = fetch(b, 1).await.jobs.remove(0);
    let mut stale = ack_of(&l, b"r");
    stale.lease.token += 7;
    let missing = Ack {
        lease: Lease {
            id: "nope".into(),
            token: 1,
        },
        ..ack_of(&l, b"r")
    };
    let res = b
        .ack(Q, vec![stale, ack_of(&l, b"\x01\x02"), missing])
        .await
        .unwrap();
    assert_eq!(res, [false, true, false]);
    assert_eq!(
        b.ack(Q, vec![ack_of(&l, b"again")]).await.unwrap(),
        [false],
        "already acked"
    );

    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(info.result.as_deref(), Some(&b"\x01\x02"[..]));
    assert!(info.finished_ms.is_some());
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.running, counts.succeeded_total, counts.failed_total),
        (0, 1, 0)
    );
    let ttl = c.pttl(&job_key("a")).await;
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

async fn fail_retries_after_delay_then_dead_letters(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![with_attempts(job("a", 1), 2)])
        .await
        .unwrap();
    let first = fetch(b, 1).await.jobs.remove(0);
    let mut stale = fail_of(&first, Some(50));
    stale.lease.token = 99;
    let res = b
        .fail(Q, vec![stale, fail_of(&first, Some(50))])
        .await
        .unwrap();
    assert_eq!(res, [FailOutcome::Stale, FailOutcome::Retrying]);
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Failed);
    assert_eq!(info.error.as_deref(), Some(&b"boom"[..]));
    assert!(info.due_ms.is_some());
    assert_eq!(b.counts(Q).await.unwrap().scheduled, 1);

    let early = fetch(b, 1).await;
    assert!(early.jobs.is_empty());
    assert!(early.next_due_us.unwrap() <= 50_000);
    // 30 ms past the retry delay: only "at least this much time passed" matters.
    c.pass(80).await;
    let second = fetch(b, 1).await.jobs.remove(0);
    assert_eq!((second.attempt, second.token > first.token), (2, true));
    assert_eq!(
        b.fail(Q, vec![fail_of(&second, Some(50))]).await.unwrap(),
        [FailOutcome::Dead],
        "attempts exhausted"
    );
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.error.as_deref(), Some(&b"boom"[..]));
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a"]);
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(
        (counts.failed_total, counts.dead, counts.scheduled),
        (2, 1, 0)
    );
}

async fn fail_without_retry_delay_dead_letters_at_once(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("b", 1)]).await.unwrap();
    let l = fetch(b, 1).await.jobs.remove(0);
    assert_eq!(
        b.fail(Q, vec![fail_of(&l, None)]).await.unwrap(),
        [FailOutcome::Dead]
    );
    let info = b.job(Q, "b").await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Dead, 1));
}

async fn fail_marked_cancelled_ends_cancelled_outside_the_dead_set(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 0)]).await.unwrap();
    let got = fetch(b, 1).await.jobs.remove(0);
    let fail = Fail {
        cancelled: true,
        ..fail_of(&got, Some(10))
    };
    assert_eq!(
        b.fail(Q, vec![fail]).await.unwrap(),
        [FailOutcome::Cancelled]
    );
    assert_eq!(state(b, "a").await, JobState::Cancelled);
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.dead, counts.running, counts.scheduled), (0, 0, 0));
}

async fn release_puts_the_job_back_first_without_counting_the_attempt(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1), job("b", 1), job("c", 1)])
        .await
        .unwrap();
    let l = fetch(b, 1).await.jobs.remove(0);
    assert_eq!(l.id, "a");
    let stale = Lease {
        id: "a".into(),
        token: 42,
    };
    assert_eq!(
        b.release(Q, vec![stale, lease(&l)]).await.unwrap(),
        [false, true]
    );
    assert_eq!(
        b.release(Q, vec![lease(&l)]).await.unwrap(),
        [false],
        "token was bumped"
    );
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Queued, 0));
    let again = fetch(b, 3).await;
    assert_eq!(ids(&again), ["a", "b", "c"], "back at its place");
    assert_eq!(again.jobs[0].attempt, 1);
    assert!(
        again.jobs[0].token > l.token + 1,
        "release and lease both bump the token"
    );
    assert_eq!(b.ack(Q, vec![ack_of(&l, b"")]).await.unwrap(), [false]);
}
