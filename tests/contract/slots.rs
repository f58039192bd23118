//! Executor slots: fetch leases a thread or process job only within the budget the caller
//! grants and says when it passed one over (that job keeps its place in line), while the async
//! jobs of the same queue still come in full batches; a batch leased ahead holds no sync job.

use std::time::Duration;

use _core::broker::*;
use _core::consumer::{Consumer, Outcome, Prefetch};
use _core::engine::Engine;

use crate::contract;
use crate::harness::*;

contract!(
    fetch_leases_sync_jobs_only_while_slots_last,
    thread_and_process_budgets_are_separate,
    the_executor_survives_a_retry,
    one_fetch_passes_over_at_most_16_jobs,
    a_batch_leased_ahead_holds_no_sync_job,
);

fn want(jobs: usize, threads: Option<usize>, processes: Option<usize>) -> Want {
    Want {
        jobs,
        threads,
        processes,
    }
}

async fn fetch_leases_sync_jobs_only_while_slots_last(c: Ctx) {
    let b = &c.b;
    let jobs = vec![
        run_in(job("a", 1), Executor::Thread),
        job("b", 1),
        run_in(job("c", 1), Executor::Thread),
        job("d", 1),
    ];
    b.enqueue(Q, jobs).await.unwrap();
    let first = fetch_as(b, want(10, Some(1), None)).await;
    assert_eq!(
        ids(&first),
        ["a", "b", "d"],
        "c waits for a thread, d not for c"
    );
    assert!(first.held);
    // c kept its place: it is next for whoever has a thread.
    let none = fetch_as(b, want(10, Some(0), None)).await;
    assert!(none.jobs.is_empty() && none.held);
    b.enqueue(Q, vec![job("g", 1)]).await.unwrap();
    let rest = fetch_as(b, want(10, Some(1), None)).await;
    assert_eq!(ids(&rest), ["c", "g"]);
    assert!(!rest.held);
    // Without a bound every kind is leased, as before.
    b.enqueue(Q, vec![run_in(job("e", 1), Executor::Thread), job("f", 1)])
        .await
        .unwrap();
    let all = fetch(b, 10).await;
    assert_eq!((ids(&all), all.held), (vec!["e", "f"], false));
}

async fn thread_and_process_budgets_are_separate(c: Ctx) {
    let b = &c.b;
    let jobs = vec![
        run_in(job("p1", 1), Executor::Process),
        run_in(job("t1", 1), Executor::Thread),
        run_in(job("p2", 1), Executor::Process),
    ];
    b.enqueue(Q, jobs).await.unwrap();
    let got = fetch_as(b, want(10, Some(5), Some(1))).await;
    assert_eq!(ids(&got), ["p1", "t1"]);
    assert!(got.held, "p2 waits for a second child process");
}

async fn one_fetch_passes_over_at_most_16_jobs(c: Ctx) {
    // Each job passed over costs a record read: a queue of sync jobs is not read through.
    let b = &c.b;
    let mut jobs: Vec<NewJob> = (0..20)
        .map(|i| run_in(job(&format!("s{i:02}"), 1), Executor::Thread))
        .collect();
    jobs.push(job("a", 1));
    b.enqueue(Q, jobs).await.unwrap();
    let first = fetch_as(b, want(50, Some(0), None)).await;
    assert!(first.jobs.is_empty() && first.held);
    // Nothing was lost or reordered: with threads, the next fetch leases in ready order.
    let all = fetch_as(b, want(50, Some(30), None)).await;
    assert_eq!(all.jobs.len(), 21);
    assert_eq!(
        (all.jobs[0].id.as_str(), all.jobs[20].id.as_str()),
        ("s00", "a")
    );
}

async fn the_executor_survives_a_retry(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![run_in(job("a", 1), Executor::Thread)])
        .await
        .unwrap();
    let got = fetch(b, 1).await;
    let out = b.fail(Q, vec![fail_of(&got.jobs[0], Some(0))]).await;
    assert_eq!(out.unwrap(), [FailOutcome::Retrying]);
    // Due at once: a fetch promotes it, and still holds it back without a thread.
    let held = fetch_as(b, want(10, Some(0), None)).await;
    assert!(held.jobs.is_empty() && held.held, "{held:?}");
    let again = fetch_as(b, want(10, Some(1), None)).await;
    assert_eq!((ids(&again), again.jobs[0].attempt), (vec!["a"], 2));
}

async fn a_batch_leased_ahead_holds_no_sync_job(c: Ctx) {
    // Two async jobs fill the first batch and start a fetch ahead; it passes over the thread
    // job, which waits in Redis (first in line) until a caller grants a thread.
    let mut jobs = new_jobs(4);
    jobs[2].executor = Executor::Thread;
    c.b.enqueue(Q, jobs).await.unwrap();
    let consumer = Consumer::start(&Engine::new(c.b.clone()), consumer_config(Prefetch::On));
    let first = consumer.fetch(Want::jobs(2)).await;
    assert_eq!(first.len(), 2);
    assert_eq!(consumer.prefetched(), 1);
    let ahead = consumer.fetch(want(2, Some(0), None)).await;
    let got: Vec<&str> = ahead.iter().map(|f| f.job.id.as_str()).collect();
    assert_eq!(
        got,
        ["j00003"],
        "the batch leased ahead holds the async job only"
    );
    let second = consumer.fetch(want(2, Some(1), None)).await;
    let got: Vec<&str> = second.iter().map(|f| f.job.id.as_str()).collect();
    assert_eq!(got, ["j00002"]);
    for f in first.iter().chain(&ahead).chain(&second) {
        consumer.send(Outcome::Ack(ack_of(&f.job, b"")));
    }
    consumer.close(Duration::from_secs(5)).await;
}
