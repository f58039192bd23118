//! Flow control in the scripts: a snooze (`release.lua` with a delay) puts a running job off
//! without counting its attempt; keys with a mode (unique until start or until the end,
//! throttle, debounce) hold, or not, by the state of the job they name (`enqueue.lua`).

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    a_snoozed_job_waits_its_delay_and_keeps_its_attempts,
    unique_until_start_frees_its_key_when_the_job_is_leased,
    unique_until_success_holds_its_key_through_retries_until_the_job_ends,
    a_unique_key_whose_job_is_gone_is_free,
    throttle_keeps_the_first_job_of_each_period,
    debounce_replaces_the_pending_job_and_moves_its_start,
);

async fn a_snoozed_job_waits_its_delay_and_keeps_its_attempts(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![with_attempts(job("s", 1), 1)])
        .await
        .unwrap();
    let first = lease_one(b, 60_000).await;
    assert_eq!(first.attempt, 1);
    let snooze = Snooze {
        lease: lease(&first),
        delay_ms: 400,
        push_key: false,
    };
    assert_eq!(b.snooze(Q, vec![snooze.clone()]).await.unwrap(), vec![true]);
    let info = b.job(Q, "s").await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Scheduled, 0));
    assert!(info.due_ms.unwrap() >= info.started_ms.unwrap() + 400);
    // The old lease is over: a second snooze or an ack under it is refused.
    assert_eq!(b.snooze(Q, vec![snooze]).await.unwrap(), vec![false]);
    assert_eq!(
        b.ack(Q, vec![ack_of(&first, b"")]).await.unwrap(),
        vec![false]
    );
    assert!(fetch(b, 1).await.jobs.is_empty(), "not due yet");
    c.pass(450).await;
    let again = lease_one(b, 60_000).await;
    // Attempt 1 again: with max_attempts 1, snoozing never used the job's only attempt.
    assert_eq!((again.id.as_str(), again.attempt), ("s", 1));
    assert!(again.token > first.token);
    assert_eq!(
        b.ack(Q, vec![ack_of(&again, b"")]).await.unwrap(),
        vec![true]
    );
}

fn keyed(id: &str, key: &str, mode: KeyMode, ttl_ms: u64) -> NewJob {
    NewJob {
        key: Some(key.into()),
        key_ttl_ms: ttl_ms,
        key_mode: mode,
        ..job(id, 1)
    }
}

/// Enqueue one keyed job; its (id, created).
async fn put(b: &std::sync::Arc<dyn Broker>, j: NewJob) -> (String, bool) {
    let out = b.enqueue(Q, vec![j]).await.unwrap();
    (out[0].id.clone(), out[0].created)
}

async fn unique_until_start_frees_its_key_when_the_job_is_leased(c: Ctx) {
    let b = &c.b;
    let m = KeyMode::UntilStart;
    assert_eq!(put(b, keyed("a", "k", m, 60_000)).await, ("a".into(), true));
    assert_eq!(
        put(b, keyed("b", "k", m, 60_000)).await,
        ("a".into(), false)
    );
    let a = lease_one(b, 60_000).await;
    assert_eq!(a.id, "a");
    // Running now: the key is free, one more may wait.
    assert_eq!(put(b, keyed("c", "k", m, 60_000)).await, ("c".into(), true));
    assert_eq!(
        put(b, keyed("d", "k", m, 60_000)).await,
        ("c".into(), false)
    );
    // Cancelled before it ran: freed too.
    assert_eq!(b.cancel(Q, "c").await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(put(b, keyed("e", "k", m, 60_000)).await, ("e".into(), true));
}

async fn unique_until_success_holds_its_key_through_retries_until_the_job_ends(c: Ctx) {
    let b = &c.b;
    let m = KeyMode::UntilEnd;
    let held = |id: &str| keyed(id, "k", m, 60_000);
    assert!(put(b, with_attempts(held("a"), 2)).await.1);
    let a = lease_one(b, 60_000).await;
    assert_eq!(put(b, held("x")).await, ("a".into(), false), "running");
    b.fail(Q, vec![fail_of(&a, Some(0))]).await.unwrap();
    assert_eq!(
        put(b, held("x")).await,
        ("a".into(), false),
        "waiting to retry"
    );
    let a = lease_one(b, 60_000).await;
    b.ack(Q, vec![ack_of(&a, b"")]).await.unwrap();
    assert_eq!(put(b, held("b")).await, ("b".into(), true), "a succeeded");
    // A job that ends dead frees its key as well.
    let bl = lease_one(b, 60_000).await;
    b.fail(Q, vec![fail_of(&bl, None)]).await.unwrap();
    assert_eq!(put(b, held("c")).await, ("c".into(), true), "b died");
    // And the TTL bounds it whatever happens.
    assert!(c.pttl(&format!("asyncq:{{{Q}#0}}:key:k")).await <= 60_000);
}

async fn a_unique_key_whose_job_is_gone_is_free(c: Ctx) {
    let b = &c.b;
    assert!(put(b, keyed("a", "k", KeyMode::UntilEnd, 60_000)).await.1);
    // The record went (expired, or deleted by hand) while the key still lives.
    let _: i64 = c.raw(&["DEL", &job_key("a")]).await;
    assert_eq!(
        put(b, keyed("b", "k", KeyMode::UntilEnd, 60_000)).await,
        ("b".into(), true)
    );
    // A plain key is different: it holds for its TTL whatever became of the job.
    assert!(put(b, keyed("p", "plain", KeyMode::Plain, 60_000)).await.1);
    let _: i64 = c.raw(&["DEL", &job_key("p")]).await;
    assert_eq!(
        put(b, keyed("q", "plain", KeyMode::Plain, 60_000)).await,
        ("p".into(), false)
    );
}

async fn throttle_keeps_the_first_job_of_each_period(c: Ctx) {
    let b = &c.b;
    let m = KeyMode::Throttle;
    assert!(put(b, keyed("a", "t", m, 300)).await.1);
    let a = lease_one(b, 60_000).await;
    b.ack(Q, vec![ack_of(&a, b"")]).await.unwrap();
    // Its success does not end the period (a plain key would now live as long as the result).
    assert_eq!(put(b, keyed("b", "t", m, 300)).await, ("a".into(), false));
    c.pass(350).await;
    assert_eq!(put(b, keyed("c", "t", m, 300)).await, ("c".into(), true));
}

async fn debounce_replaces_the_pending_job_and_moves_its_start(c: Ctx) {
    let b = &c.b;
    let debounced = |id: &str, payload: &[u8], max_wait_ms: Option<u64>| NewJob {
        payload: payload.to_vec(),
        delay_ms: Some(300),
        ..keyed(id, "d", KeyMode::Debounce { max_wait_ms }, 60_000)
    };
    assert!(put(b, debounced("a", b"first", Some(500))).await.1);
    let first = b.job(Q, "a").await.unwrap().unwrap();
    c.pass(200).await;
    assert_eq!(
        put(b, debounced("b", b"second", Some(500))).await,
        ("a".into(), false)
    );
    let moved = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(
        (moved.state, moved.payload.as_slice()),
        (JobState::Scheduled, &b"second"[..])
    );
    assert!(
        moved.due_ms.unwrap() >= first.due_ms.unwrap() + 150,
        "start moved back"
    );
    c.pass(200).await;
    put(b, debounced("c", b"third", Some(500))).await;
    let capped = b.job(Q, "a").await.unwrap().unwrap();
    // Not past the first enqueue + max_wait, however many come.
    assert_eq!(capped.due_ms.unwrap(), first.enqueued_ms + 500);
    c.pass(150).await;
    let a = lease_one(b, 60_000).await;
    assert_eq!((a.id.as_str(), a.payload.as_slice()), ("a", &b"third"[..]));
    // Started: the next enqueue makes a new pending job.
    assert_eq!(
        put(b, debounced("d", b"fourth", None)).await,
        ("d".into(), true)
    );
}
