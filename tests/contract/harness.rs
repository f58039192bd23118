//! The two backends every contract test runs over, and the job builders they share.
//!
//! [`Ctx`] hides which broker a test has: `pass` moves the memory broker's test clock (no real
//! wait) and sleeps on Redis; `raw` runs a plain command behind the broker's back on either.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{Cmd, FromRedisValue, Value};
use _core::broker::memory::MemoryBroker;
use _core::broker::redis::RedisBroker;
use _core::broker::*;
use _core::consumer::{ConsumerConfig, Prefetch};

use crate::redis_support::Server;

/// The queue contract tests use unless they need several.
pub const Q: &str = "q";

/// One test's broker: a fresh memory broker, or a broker on a private `redis-server`.
pub struct Ctx {
    pub b: Arc<dyn Broker>,
    mem: Option<Arc<MemoryBroker>>,
    server: Option<Server>,
}

impl Ctx {
    /// A fresh, unshared memory broker.
    pub async fn memory() -> Option<Ctx> {
        let mem = Arc::new(MemoryBroker::new());
        let b: Arc<dyn Broker> = mem.clone();
        Some(Ctx {
            b,
            mem: Some(mem),
            server: None,
        })
    }

    /// A broker on its own `redis-server`; `None` (skip) when there is no server binary.
    pub async fn redis() -> Option<Ctx> {
        let server = Server::start(&[])?;
        let b = RedisBroker::open(&server.url()).await.unwrap();
        Some(Ctx {
            b,
            mem: None,
            server: Some(server),
        })
    }

    /// The memory broker, for the few steps only a test clock can take (a 7-day jump).
    pub fn mem(&self) -> Option<&MemoryBroker> {
        self.mem.as_deref()
    }

    /// Let `ms` of broker time pass: the memory clock jumps, Redis really waits. Tests only rely
    /// on time having passed *at least* this much, which holds on a busy machine too.
    pub async fn pass(&self, ms: u64) {
        match &self.mem {
            Some(m) => m.advance(ms),
            None => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }

    /// Stop the memory clock (only `pass` moves it then), so a test can assert a bound that
    /// real time passing between two calls would break. On Redis, time keeps running: such
    /// tight bounds are checked under `exact_clock` only.
    pub fn freeze(&self) {
        if let Some(m) = &self.mem {
            m.freeze();
        }
    }

    /// True on memory://, where `pass` moves the clock by exactly its argument (plus whatever
    /// real time passes, unless the test called `freeze`).
    pub fn exact_clock(&self) -> bool {
        self.mem.is_some()
    }

    /// Run one raw command as `redis-cli` would, behind the broker's back.
    pub async fn raw<T: FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = Cmd::new();
        for a in args {
            cmd.arg(*a);
        }
        let reply: Value = match (&self.mem, &self.server) {
            (Some(m), _) => m.raw_command(cmd).unwrap(),
            (None, Some(s)) => cmd.query_async(&mut s.raw().await).await.unwrap(),
            (None, None) => unreachable!("a context has one backend"),
        };
        ::redis::from_redis_value(reply).unwrap()
    }

    /// Remaining time to live of a key in ms (-1: persistent, -2: missing).
    pub async fn pttl(&self, key: &str) -> i64 {
        self.raw(&["PTTL", key]).await
    }
}

/// Emit, for each async `fn name(c: Ctx)` in scope, a module `name` with the twin tests
/// `name::memory` and `name::redis` (`cargo test --test contract redis` runs one backend).
/// `multi_thread:` first runs them on a 2-thread runtime (for tests of real races).
#[macro_export]
macro_rules! contract {
    (multi_thread: $($name:ident),* $(,)?) => {
        $crate::contract!(@twins [tokio::test(flavor = "multi_thread", worker_threads = 2)]; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::contract!(@twins [tokio::test]; $($name),*);
    };
    (@twins [$test:meta]; $($name:ident),*) => {$(
        mod $name {
            #[$test]
            async fn memory() {
                if let Some(c) = $crate::harness::Ctx::memory().await {
                    super::$name(c).await;
                }
            }

            #[$test]
            async fn redis() {
                if let Some(c) = $crate::harness::Ctx::redis().await {
                    super::$name(c).await;
                }
            }
        }
    )*};
}

/// A job with a binary payload, 3 attempts and no delay.
pub fn job(id: &str, priority: i64) -> NewJob {
    NewJob {
        id: id.to_owned(),
        payload: vec![0x00, 0xff, b'x', 0x80],
        priority,
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

/// `job` run by `executor` (a thread or process job is leased only while a slot is granted).
pub fn run_in(job: NewJob, executor: Executor) -> NewJob {
    NewJob { executor, ..job }
}

/// `job` allowed `max_attempts` runs.
pub fn with_attempts(job: NewJob, max_attempts: u32) -> NewJob {
    NewJob {
        max_attempts,
        ..job
    }
}

/// Ids of the fetched jobs, in order.
pub fn ids(out: &FetchOutcome) -> Vec<&str> {
    out.jobs.iter().map(|j| j.id.as_str()).collect()
}

/// The lease a fetched job must present.
pub fn lease(l: &Leased) -> Lease {
    Lease {
        id: l.id.clone(),
        token: l.token,
    }
}

/// An ack of a fetched job with a 60 s result TTL.
pub fn ack_of(l: &Leased, result: &[u8]) -> Ack {
    Ack {
        lease: lease(l),
        result: result.to_vec(),
        result_ttl_ms: 60_000,
    }
}

/// A failure of a fetched job with a 60 s dead TTL.
pub fn fail_of(l: &Leased, retry_delay_ms: Option<u64>) -> Fail {
    Fail {
        lease: lease(l),
        error: b"boom".to_vec(),
        retry_delay_ms,
        cancelled: false,
        dead_ttl_ms: 60_000,
    }
}

/// A consumer of `Q` for task `t` (as [`new_jobs`] makes) with leases long enough that no
/// test outlives one and a reap tick that never comes: only the consumer itself puts a job
/// back. Tests change what they exercise with `..consumer_config(p)`.
pub fn consumer_config(prefetch: Prefetch) -> ConsumerConfig {
    ConsumerConfig {
        queue: Q.into(),
        worker_id: "w1".into(),
        lease_ms: 60_000,
        heartbeat_ms: 20_000,
        reap_ms: 600_000,
        idle_wait_ms: 100,
        result_ttl_ms: 60_000,
        dead_ttl_ms: 60_000,
        max_payload: 1 << 20,
        tasks: std::collections::HashSet::from(["t".to_string()]),
        prefetch,
        signing_keys: Vec::new(),
    }
}

/// Fetch up to `max` jobs of `Q` with a 30 s lease.
pub async fn fetch(b: &Arc<dyn Broker>, max: usize) -> FetchOutcome {
    fetch_as(b, Want::jobs(max)).await
}

/// Fetch what `want` allows from `Q` with a 30 s lease.
pub async fn fetch_as(b: &Arc<dyn Broker>, want: Want) -> FetchOutcome {
    b.fetch(Q, want, 30_000, "w").await.unwrap()
}

/// Lease the next job of `Q` (there must be one) for `lease_ms`.
pub async fn lease_one(b: &Arc<dyn Broker>, lease_ms: u64) -> Leased {
    let mut got = b.fetch(Q, Want::jobs(1), lease_ms, "w").await.unwrap();
    assert_eq!(got.jobs.len(), 1, "a job to lease");
    got.jobs.remove(0)
}

/// Current state of a job that must exist.
pub async fn state(b: &Arc<dyn Broker>, id: &str) -> JobState {
    b.job(Q, id).await.unwrap().expect("job exists").state
}

/// Dead-letter `ids` (one attempt each), in this order.
pub async fn make_dead(b: &Arc<dyn Broker>, ids: &[&str]) {
    for id in ids {
        b.enqueue(Q, vec![with_attempts(job(id, 1), 1)])
            .await
            .unwrap();
        let got = fetch(b, 1).await;
        assert_eq!(got.jobs.len(), 1);
        let out = b.fail(Q, vec![fail_of(&got.jobs[0], Some(10))]).await;
        assert_eq!(out.unwrap(), [FailOutcome::Dead]);
    }
}

/// The Redis key of a job record (the layout `keys.rs` builds).
pub fn job_key(id: &str) -> String {
    keys::QueueKeys::new(Q).unwrap().job(id)
}

/// The smallest valid envelope: version 1, task `t`, no arguments.
pub fn envelope() -> Vec<u8> {
    let mut buf = Vec::new();
    rmp::encode::write_map_len(&mut buf, 2).unwrap();
    rmp::encode::write_str(&mut buf, "v").unwrap();
    rmp::encode::write_uint(&mut buf, 1).unwrap();
    rmp::encode::write_str(&mut buf, "t").unwrap();
    rmp::encode::write_str(&mut buf, "t").unwrap();
    buf
}

/// `n` jobs of task `t` with a valid envelope, for tests that run a consumer.
pub fn new_jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob {
            id: format!("j{i:05}"),
            payload: envelope(),
            priority: 5,
            delay_ms: None,
            eta_ms: None,
            max_attempts: 1,
            key: None,
            key_ttl_ms: 60_000,
            key_mode: Default::default(),
            executor: Executor::Async,
            group: None,
        })
        .collect()
}
