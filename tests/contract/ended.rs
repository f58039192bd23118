//! Job-end notifications: every script that ends a job tells waiters (`watch_end`), and nothing
//! else does. Real time on both brokers; a notification arrives within milliseconds, the
//! bounds here are seconds.

use std::time::Duration;

use _core::broker::*;
use tokio::sync::oneshot;

use crate::contract;
use crate::harness::*;

contract!(
    an_ack_wakes_the_jobs_waiter_and_no_other,
    a_dead_letter_and_a_cancel_wake_their_waiters,
    a_retry_is_not_an_ending,
    a_third_stall_dead_letters_and_wakes,
    a_cancel_request_for_a_running_job_is_heard_by_its_queues_listeners,
);

async fn heard(rx: oneshot::Receiver<()>) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), rx).await,
        Ok(Ok(()))
    )
}

async fn silent(rx: &mut oneshot::Receiver<()>) -> bool {
    tokio::time::sleep(Duration::from_millis(200)).await;
    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

async fn an_ack_wakes_the_jobs_waiter_and_no_other(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1), job("b", 1)]).await.unwrap();
    let a_done = b.watch_end(Q, "a").await.unwrap();
    let mut b_done = b.watch_end(Q, "b").await.unwrap();
    let mut other_queue = b.watch_end("elsewhere", "a").await.unwrap();
    let got = fetch(b, 2).await;
    let a = got.jobs.iter().find(|j| j.id == "a").unwrap();
    b.ack(Q, vec![ack_of(a, b"")]).await.unwrap();
    assert!(heard(a_done).await);
    assert!(silent(&mut b_done).await, "b has not ended");
    assert!(silent(&mut other_queue).await, "a job of another queue");
}

async fn a_dead_letter_and_a_cancel_wake_their_waiters(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("d", 1), job("q", 1)]).await.unwrap();
    let d_done = b.watch_end(Q, "d").await.unwrap();
    let q_done = b.watch_end(Q, "q").await.unwrap();
    let got = fetch(b, 1).await;
    b.fail(Q, vec![fail_of(&got.jobs[0], None)]).await.unwrap(); // no retry: dead
    assert!(heard(d_done).await);
    assert_eq!(b.cancel(Q, "q").await.unwrap(), CancelOutcome::Cancelled);
    assert!(heard(q_done).await);
}

async fn a_retry_is_not_an_ending(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("r", 1)]).await.unwrap();
    let mut done = b.watch_end(Q, "r").await.unwrap();
    let got = fetch(b, 1).await;
    b.fail(Q, vec![fail_of(&got.jobs[0], Some(60_000))])
        .await
        .unwrap();
    assert!(
        silent(&mut done).await,
        "scheduled for a retry: still alive"
    );
}

async fn a_third_stall_dead_letters_and_wakes(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("s", 1)]).await.unwrap();
    let done = b.watch_end(Q, "s").await.unwrap();
    for _ in 0..MAX_STALLS {
        b.fetch(Q, Want::jobs(1), 30, "w").await.unwrap();
        c.pass(60).await;
        b.reap(Q, 60_000).await.unwrap();
    }
    assert_eq!(b.job(Q, "s").await.unwrap().unwrap().state, JobState::Dead);
    assert!(heard(done).await);
}

async fn a_cancel_request_for_a_running_job_is_heard_by_its_queues_listeners(c: Ctx) {
    let b = &c.b;
    let mut heard_here = b.watch_cancels(Q).await.unwrap();
    let mut elsewhere = b.watch_cancels("other").await.unwrap();
    b.enqueue(Q, vec![job("runs", 0), job("waits", 0)])
        .await
        .unwrap();
    let leased = lease_one(b, 30_000).await;
    assert_eq!(leased.id, "runs");
    // A job that is not running is cancelled on the spot: nobody needs telling.
    assert_eq!(
        b.cancel(Q, "waits").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(b.cancel(Q, "runs").await.unwrap(), CancelOutcome::Requested);
    let id = tokio::time::timeout(Duration::from_secs(5), heard_here.recv())
        .await
        .expect("heard within 5 s")
        .expect("the feed is up");
    assert_eq!(id, "runs");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(heard_here.try_recv().is_err() && elsewhere.try_recv().is_err());
    // The request itself is what the heartbeat reads.
    let out = b.heartbeat(Q, vec![lease(&leased)], 30_000).await.unwrap();
    assert_eq!(out.cancel, ["runs"]);
}
