//! Prefetch: `Auto` leases the next batch ahead while jobs run short and not while they run
//! long; `Off` never does.

use std::time::Duration;

use _core::broker::Want;
use _core::consumer::{Consumer, Outcome, Prefetch};
use _core::engine::Engine;

use crate::contract;
use crate::harness::*;

contract!(
    auto_prefetches_while_jobs_run_short,
    auto_does_not_prefetch_while_jobs_run_long,
    off_never_prefetches,
);

/// Fetch batches of 2 from 12 queued jobs, each job "running" `run` before its ack. Returns
/// how many batches were leased ahead.
async fn drain(c: &Ctx, prefetch: Prefetch, run: Duration) -> u64 {
    c.b.enqueue(Q, new_jobs(12)).await.unwrap();
    let consumer = Consumer::start(&Engine::new(c.b.clone()), consumer_config(prefetch));
    let mut seen = 0;
    while seen < 12 {
        let batch = consumer.fetch(Want::jobs(2)).await;
        seen += batch.len();
        tokio::time::sleep(run).await;
        for f in batch {
            consumer.send(Outcome::Ack(ack_of(&f.job, b"")));
        }
    }
    let ahead = consumer.prefetched();
    consumer.close(Duration::from_secs(5)).await;
    ahead
}

async fn auto_prefetches_while_jobs_run_short(c: Ctx) {
    // Acked at once: runs of well under a millisecond, far below the 20 ms bound (a loaded
    // machine adds milliseconds, not tens of them, between a fetch and its ack).
    assert!(drain(&c, Prefetch::Auto, Duration::ZERO).await >= 1);
}

async fn auto_does_not_prefetch_while_jobs_run_long(c: Ctx) {
    // 60 ms runs are three times the bound; a loaded machine only makes them longer.
    assert_eq!(
        drain(&c, Prefetch::Auto, Duration::from_millis(60)).await,
        0
    );
}

async fn off_never_prefetches(c: Ctx) {
    assert_eq!(drain(&c, Prefetch::Off, Duration::ZERO).await, 0);
}
