//! The per-process engine over both brokers: one waiter per node for every queue, interrupted
//! and re-armed as queues come and go, and periodic ticks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashSet;

use _core::consumer::{Consumer, ConsumerConfig, Prefetch};
use _core::engine::Engine;
use _core::errors::Error;
use tokio::task::JoinHandle;

use crate::contract;
use crate::harness::*;

contract!(
    the_engine_wakes_only_the_queue_that_got_work,
    a_queue_waited_on_later_is_not_missed,
    idle_waits_on_twenty_queues_share_one_blocking_connection,
    ticks_run_every_period_until_dropped,
    a_failing_tick_is_counted_and_runs_again,
    reapers_of_two_processes_share_a_queue_through_the_claim,
);

fn wait_on(engine: &Engine, queue: &str) -> JoinHandle<Instant> {
    let (engine, queue) = (engine.clone(), queue.to_owned());
    tokio::spawn(async move {
        engine.wait(&queue).await.unwrap();
        Instant::now()
    })
}

/// Connections to the test's own Redis (the broker's and the harness' raw one); None on memory.
async fn connections(c: &Ctx) -> Option<usize> {
    if c.mem().is_some() {
        return None;
    }
    let list: String = c.raw(&["CLIENT", "LIST"]).await;
    Some(list.lines().count())
}

async fn the_engine_wakes_only_the_queue_that_got_work(c: Ctx) {
    let engine = Engine::new(c.b.clone());
    let waits: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|q| wait_on(&engine, q))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.b.enqueue("b", vec![job("x", 1)]).await.unwrap();
    let [a, b, cq]: [JoinHandle<Instant>; 3] = waits.try_into().unwrap();
    tokio::time::timeout(Duration::from_secs(2), b)
        .await
        .expect("b is woken long before any timeout")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !a.is_finished() && !cq.is_finished(),
        "a and c have no work"
    );
    assert!(engine.counters().wakeups.load(Ordering::Relaxed) >= 1);
}

async fn a_queue_waited_on_later_is_not_missed(c: Ctx) {
    let engine = Engine::new(c.b.clone());
    let _a = wait_on(&engine, "a");
    tokio::time::sleep(Duration::from_millis(100)).await; // the waiter blocks on `a` alone
    let b = wait_on(&engine, "b");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let enqueued = Instant::now();
    c.b.enqueue("b", vec![job("x", 1)]).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(3), b)
        .await
        .expect("b is woken")
        .unwrap();
    // Without the interrupt, `b` would only be seen when the BLPOP on `a` times out (1.5 s);
    // an interrupted and re-armed wait sees it in milliseconds. One second leaves a busy
    // machine its margin and still tells the two apart.
    let took = woke.duration_since(enqueued);
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert!(engine.counters().interrupts.load(Ordering::Relaxed) >= 1);
}

async fn idle_waits_on_twenty_queues_share_one_blocking_connection(c: Ctx) {
    let engine = Engine::new(c.b.clone());
    // The broker already holds its shared connection and one pooled blocking connection.
    let before = connections(&c).await;
    let queues: Vec<String> = (0..20).map(|i| format!("q{i}")).collect();
    let mut waits: Vec<_> = queues.iter().map(|q| wait_on(&engine, q)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connections(&c).await, before, "no connection per queue");
    c.b.enqueue("q7", vec![job("x", 1)]).await.unwrap();
    let q7 = waits.remove(7);
    tokio::time::timeout(Duration::from_secs(2), q7)
        .await
        .expect("q7 is woken")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(waits.iter().all(|w| !w.is_finished()), "only q7 had work");
    assert_eq!(connections(&c).await, before);
}

async fn ticks_run_every_period_until_dropped(c: Ctx) {
    let engine = Engine::new(c.b.clone());
    let runs = Arc::new(AtomicU64::new(0));
    let tick = engine.every(Duration::from_millis(20), {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 15 periods passed; a loaded machine runs fewer, but surely more than two.
    assert!(runs.load(Ordering::Relaxed) >= 3);
    drop(tick);
    let after = runs.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        runs.load(Ordering::Relaxed) <= after + 1,
        "a dropped tick stops"
    );
}

async fn a_failing_tick_is_counted_and_runs_again(c: Ctx) {
    let engine = Engine::new(c.b.clone());
    let runs = Arc::new(AtomicU64::new(0));
    let _tick = engine.every(Duration::from_millis(20), {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::Relaxed);
            async { Err(Error::Payload("boom".into())) }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        runs.load(Ordering::Relaxed) >= 3,
        "it keeps running after failing"
    );
    assert!(engine.counters().tick_errors.load(Ordering::Relaxed) >= 2);
}

async fn reapers_of_two_processes_share_a_queue_through_the_claim(c: Ctx) {
    const REAP_MS: u64 = 50;
    let config = |worker: &str| ConsumerConfig {
        worker_id: worker.into(),
        lease_ms: 30_000,
        heartbeat_ms: 10_000,
        reap_ms: REAP_MS,
        idle_wait_ms: 1_000,
        tasks: HashSet::new(),
        ..consumer_config(Prefetch::Off)
    };
    // Two engines: two worker processes as far as the broker can tell.
    let (e1, e2) = (Engine::new(c.b.clone()), Engine::new(c.b.clone()));
    let started = Instant::now();
    let consumers = [
        Consumer::start(&e1, config("w1")),
        Consumer::start(&e2, config("w2")),
    ];
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for consumer in &consumers {
        consumer.close(Duration::from_secs(5)).await;
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let get = |e: &Engine| {
        let n = e.counters();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (load(&n.reaps), load(&n.reaps_skipped))
    };
    let ((ran1, skipped1), (ran2, skipped2)) = (get(&e1), get(&e2));
    // Claims never overlap, so at most one reap ran per claim period between the two; without
    // the claim each would reap every period (about twice as many). A loaded machine only
    // makes ticks later, so fewer.
    assert!(
        ran1 + ran2 <= elapsed / REAP_MS + 1,
        "{ran1} + {ran2} in {elapsed} ms"
    );
    assert!(
        skipped1 + skipped2 >= 1,
        "the other reaper found the claim held"
    );
    assert!(ran1 + ran2 >= 1);
}
