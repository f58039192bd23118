//! Unit tests of what only memory:// has. The broker contract (every `Broker` operation, with
//! both brokers) lives in `tests/contract/`; here stay the engine internals that contract cannot
//! reach: the Lua environment and command set (`engine`), named instances, and `arm`, the first
//! half of `wait`, whose lost-wake-up window only exists inside the memory broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod engine;

use super::MemoryBroker;
use crate::broker::{Broker, Executor, NewJob};

const Q: &str = "default";

fn new_job(id: &str) -> NewJob {
    NewJob {
        id: id.to_string(),
        payload: id.as_bytes().to_vec(),
        priority: 5,
        delay_ms: None,
        eta_ms: None,
        max_attempts: 3,
        key: None,
        key_ttl_ms: 60_000,
        key_mode: Default::default(),
        executor: Executor::Async,
        group: None,
    }
}

#[tokio::test]
async fn named_brokers_share_state_per_name() {
    let x1 = MemoryBroker::named("memory://unit-test-x");
    let x2 = MemoryBroker::named("memory://unit-test-x");
    let y = MemoryBroker::named("memory://unit-test-y");
    x1.enqueue(Q, vec![new_job("a")]).await.unwrap();
    assert_eq!(x2.counts(Q).await.unwrap().queued, 1);
    assert_eq!(y.counts(Q).await.unwrap().queued, 0);
    assert!(Arc::ptr_eq(&x1, &x2));
}

/// The enqueue lands after `wait` looked at the (empty) state but before it polls its waiter:
/// the unpolled waiter must still be woken.
#[tokio::test]
async fn armed_but_unpolled_waiter_is_woken() {
    let b = MemoryBroker::new();
    let (waiter, sleep_ms) = b.arm(Q, 10_000).expect("nothing ready: must sleep");
    assert_eq!(sleep_ms, 10_000);
    b.enqueue(Q, vec![new_job("a")]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("wake-up was lost");
    assert!(b.arm(Q, 10_000).is_none(), "ready work: no sleep at all");
}
