//! `wait`: prompt wake-ups, timeouts and no lost notifications. Real time on both brokers: these
//! test real wake-ups. Timeouts are 10 s, so "woken" and "timed out" differ by
//! far more than any scheduling delay.

use std::time::{Duration, Instant};

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    wait_times_out_without_work,
    wait_wakes_promptly_on_enqueue,
    wait_sees_work_that_arrived_after_an_empty_fetch,
    wait_wakes_at_once_while_jobs_remain,
    wait_returns_when_a_scheduled_job_falls_due,
    wait_wakes_every_idle_worker_on_release,
    wait_wakes_when_a_sooner_job_is_scheduled,
    wait_any_says_which_queue_woke,
    an_interrupted_wait_ends_at_once_and_keeps_its_connection,
);
contract!(multi_thread: no_wake_up_is_lost_between_fetch_and_wait);

async fn wait_times_out_without_work(c: Ctx) {
    let started = Instant::now();
    c.b.wait(Q, 100).await.unwrap();
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(90) && idle < Duration::from_secs(2),
        "{idle:?}"
    );
    c.b.wait(Q, 0).await.unwrap();
}

async fn wait_wakes_promptly_on_enqueue(c: Ctx) {
    let b = &c.b;
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            b.wait(Q, 10_000).await.unwrap();
            Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let enqueued = Instant::now();
    b.enqueue(Q, vec![job("a", 1), job("b", 1)]).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken long before the 10 s wait times out")
        .unwrap();
    // The bound of the old Redis suite: a wake-up is a pushed list entry away, not a poll.
    assert!(
        woke.duration_since(enqueued) < Duration::from_millis(100),
        "slow wake"
    );
}

async fn wait_sees_work_that_arrived_after_an_empty_fetch(c: Ctx) {
    let b = &c.b;
    assert!(fetch(b, 1).await.jobs.is_empty());
    b.enqueue(Q, vec![job("a", 5)]).await.unwrap(); // nobody is waiting yet
    let start = Instant::now();
    b.wait(Q, 10_000).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

async fn wait_wakes_at_once_while_jobs_remain(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1), job("b", 1)]).await.unwrap();
    b.wait(Q, 10_000).await.unwrap();
    // Jobs remain after a fetch of one: the next idle worker is woken at once.
    fetch(b, 1).await;
    let started = Instant::now();
    b.wait(Q, 10_000).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
}

async fn wait_returns_when_a_scheduled_job_falls_due(c: Ctx) {
    let b = &c.b;
    let delayed = NewJob {
        delay_ms: Some(50),
        ..job("a", 5)
    };
    b.enqueue(Q, vec![delayed]).await.unwrap();
    let start = Instant::now();
    b.wait(Q, 10_000).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    // Woken as soon as the job may be due; it is due 50 ms after the enqueue at the latest.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(ids(&fetch(b, 1).await), ["a"]);
}

async fn wait_wakes_every_idle_worker_on_release(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 5)]).await.unwrap();
    let leased = fetch(b, 1).await;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.wait(Q, 10_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.release(Q, vec![lease(&leased.jobs[0])]).await.unwrap();
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn wait_wakes_when_a_sooner_job_is_scheduled(c: Ctx) {
    let b = &c.b;
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait(Q, 10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("a", 5)
    };
    b.enqueue(Q, vec![later]).await.unwrap();
    // Woken by the enqueue, so the worker can refetch and learn `next_due_us`.
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Hammers the window between an empty fetch and `wait` from two threads: a wake-up sent inside
/// it must not be lost, or this test stalls on the 10 s wait and the 5 s guard fails.
async fn no_wake_up_is_lost_between_fetch_and_wait(c: Ctx) {
    let b = &c.b;
    for round in 0..300 {
        let consumer = tokio::spawn({
            let b = b.clone();
            async move {
                loop {
                    if let Some(job) = fetch(&b, 1).await.jobs.pop() {
                        b.ack(Q, vec![ack_of(&job, b"")]).await.unwrap();
                        return;
                    }
                    b.wait(Q, 10_000).await.unwrap();
                }
            }
        });
        for _ in 0..round % 3 {
            tokio::task::yield_now().await;
        }
        b.enqueue(Q, vec![job(&format!("job-{round}"), 5)])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn wait_any_says_which_queue_woke(c: Ctx) {
    let b = &c.b;
    let queues = vec!["a".to_owned(), "b".to_owned()];
    assert_eq!(b.node_of("a").unwrap(), b.node_of("b").unwrap());
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait_any(&queues, 10_000, &Default::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.enqueue("b", vec![job("x", 1)]).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken long before the wait times out")
        .unwrap()
        .unwrap();
    assert_eq!(woken, ["b"]);
}

/// Connections to the test's own Redis: the broker's and this test's raw one.
async fn redis_clients(c: &Ctx) -> usize {
    let list: String = c.raw(&["CLIENT", "LIST"]).await;
    list.lines().count()
}

async fn an_interrupted_wait_ends_at_once_and_keeps_its_connection(c: Ctx) {
    let b = &c.b;
    let on_redis = c.mem().is_none(); // memory:// has no connections
    let before = if on_redis { redis_clients(&c).await } else { 0 };
    let interrupt = tokio_util::sync::CancellationToken::new();
    let waiter = tokio::spawn({
        let (b, interrupt) = (b.clone(), interrupt.clone());
        async move {
            let started = Instant::now();
            let woken = b.wait_any(&[Q.to_owned()], 10_000, &interrupt).await;
            (woken, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    interrupt.cancel();
    let (woken, took) = waiter.await.unwrap();
    assert_eq!(woken.unwrap(), Vec::<String>::new());
    // Redis would end the BLPOP itself after 1.5 s (the broker's longest block): well under a
    // second (100 ms of it the test's own sleep) shows the interrupt ended it, with room for a
    // loaded machine.
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // The connection was unblocked, not dropped: the next wait reuses it, and still wakes.
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let woken = b
        .wait_any(&[Q.to_owned()], 10_000, &Default::default())
        .await;
    assert_eq!(woken.unwrap(), [Q]);
    if on_redis {
        assert_eq!(
            redis_clients(&c).await,
            before,
            "no connection was dialed or leaked"
        );
    }
}
