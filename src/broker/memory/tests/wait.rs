//! `wait`: prompt wake-ups, timeouts and no lost notifications (real time, not `advance`).

use super::*;

#[tokio::test]
async fn wait_wakes_promptly_on_enqueue() {
    let b = Arc::new(MemoryBroker::new());
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            let start = Instant::now();
            b.wait(Q, 10_000).await.unwrap();
            start.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    enqueue(&b, vec![new_job("a", 5)]).await;
    let waited = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn wait_times_out_without_work() {
    let b = MemoryBroker::new();
    let start = Instant::now();
    b.wait(Q, 60).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(60) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn wait_sees_work_that_arrived_after_an_empty_fetch() {
    let b = MemoryBroker::new();
    assert!(fetch(&b, 1).await.is_empty());
    enqueue(&b, vec![new_job("a", 5)]).await; // nobody is waiting yet
    let start = Instant::now();
    b.wait(Q, 10_000).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn wait_returns_when_a_scheduled_job_falls_due() {
    let b = MemoryBroker::new();
    enqueue(
        &b,
        vec![NewJob {
            delay_ms: Some(50),
            ..new_job("a", 5)
        }],
    )
    .await;
    let start = Instant::now();
    b.wait(Q, 10_000).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(ids(&fetch(&b, 1).await), ["a"]);
}

#[tokio::test]
async fn wait_wakes_every_idle_worker_on_release() {
    let b = Arc::new(MemoryBroker::new());
    enqueue(&b, vec![new_job("a", 5)]).await;
    let leased = fetch(&b, 1).await;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.wait(Q, 10_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.release(Q, vec![lease_of(&leased[0])]).await.unwrap();
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn wait_wakes_when_a_sooner_job_is_scheduled() {
    let b = Arc::new(MemoryBroker::new());
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait(Q, 10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    enqueue(
        &b,
        vec![NewJob {
            delay_ms: Some(60_000),
            ..new_job("a", 5)
        }],
    )
    .await;
    // Woken by the enqueue, so the worker can refetch and learn `next_due_ms`.
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Hammers the window between an empty fetch and `wait` from two threads: a wake-up sent inside
/// it must not be lost, or this test stalls on the 10 s wait and the 5 s guard fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wake_up_is_lost_between_fetch_and_wait() {
    let b = Arc::new(MemoryBroker::new());
    for round in 0..300 {
        let consumer = tokio::spawn({
            let b = b.clone();
            async move {
                loop {
                    if let Some(job) = fetch(&b, 1).await.pop() {
                        b.ack(Q, vec![ack_of(&job, 0)]).await.unwrap();
                        return;
                    }
                    b.wait(Q, 10_000).await.unwrap();
                }
            }
        });
        for _ in 0..round % 3 {
            tokio::task::yield_now().await;
        }
        enqueue(&b, vec![new_job(&format!("job-{round}"), 5)]).await;
        tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The enqueue lands after `wait` looked at the (empty) state but before it polls its waiter:
/// the unpolled waiter must still be woken.
#[tokio::test]
async fn armed_but_unpolled_waiter_is_woken() {
    let b = MemoryBroker::new();
    let (waiter, sleep_ms) = b.arm(Q, 10_000).expect("nothing ready: must sleep");
    assert_eq!(sleep_ms, 10_000);
    enqueue(&b, vec![new_job("a", 5)]).await;
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("wake-up was lost");
    assert!(b.arm(Q, 10_000).is_none(), "ready work: no sleep at all");
}
