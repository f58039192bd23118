//! Integration tests of the Redis broker against a private `redis-server` per test
//! (see `redis_support` for the harness and when tests are skipped).

mod redis_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use _core::broker::redis::RedisBroker;
use _core::broker::*;
use _core::errors::Error;
use redis_support::*;

#[tokio::test]
async fn fetch_orders_by_priority_then_fifo() {
    let Some((_s, b)) = setup().await else { return };
    let first = vec![job("a", 0), job("b", 5), job("c", 5), job("d", 9)];
    let out = b.enqueue("q", first).await.unwrap();
    assert!(out.iter().all(|e| e.created));
    b.enqueue("q", vec![job("e", 5)]).await.unwrap();
    assert_eq!(b.counts("q").await.unwrap().queued, 5);

    let got = b.fetch("q", 10, 30_000, "w1").await.unwrap();
    assert_eq!(ids(&got), ["d", "b", "c", "e", "a"]);
    assert_eq!(got.next_due_us, None);
    let d = &got.jobs[0];
    assert_eq!((d.attempt, d.max_attempts, d.token), (1, 3, 1));
    assert_eq!(d.payload, vec![0x00, 0xff, b'x', 0x80]);
    assert!(d.enqueued_ms > 0);
    let info = b.job("q", "d").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Running);
    assert_eq!(info.worker.as_deref(), Some("w1"));
    assert!(info.started_ms.is_some());
    assert_eq!(b.counts("q").await.unwrap().running, 5);
    assert!(b
        .fetch("q", 10, 30_000, "w1")
        .await
        .unwrap()
        .jobs
        .is_empty());
}

#[tokio::test]
async fn a_batch_of_100_is_enqueued_and_leased_in_one_call_each() {
    let Some((_s, b)) = setup().await else { return };
    let jobs: Vec<NewJob> = (0..150).map(|i| job(&format!("j{i:03}"), 3)).collect();
    assert_eq!(b.enqueue("q", jobs).await.unwrap().len(), 150);
    let got = b.fetch("q", 100, 30_000, "w").await.unwrap();
    assert_eq!(got.jobs.len(), 100);
    assert_eq!(
        (got.jobs[0].id.as_str(), got.jobs[99].id.as_str()),
        ("j000", "j099")
    );
    assert_eq!(b.counts("q").await.unwrap().queued, 50);
}

#[tokio::test]
async fn delayed_and_eta_jobs_wait_until_due() {
    let Some((_s, b)) = setup().await else { return };
    let now = b.now_ms().await.unwrap();
    let mut delayed = job("delayed", 5);
    delayed.delay_ms = Some(150);
    let mut eta = job("eta", 5);
    eta.eta_ms = Some(now + 150);
    let mut past = job("past", 5);
    past.eta_ms = Some(now - 1000);
    b.enqueue("q", vec![delayed, eta, past]).await.unwrap();
    assert_eq!(state(&b, "q", "delayed").await, JobState::Scheduled);
    assert!(b.job("q", "eta").await.unwrap().unwrap().due_ms.unwrap() >= now + 150);
    assert_eq!(b.counts("q").await.unwrap().scheduled, 2);

    let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&got), ["past"]);
    let next = got.next_due_us.expect("something scheduled");
    assert!(next <= 150_000, "{next}");
    tokio::time::sleep(Duration::from_micros(next + 20_000)).await;
    let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&got), ["delayed", "eta"]);
}

#[tokio::test]
async fn idempotency_key_returns_the_existing_id() {
    let Some((_s, b)) = setup().await else { return };
    let keyed = |id: &str| NewJob {
        key: Some("once".into()),
        ..job(id, 1)
    };
    let out = b.enqueue("q", vec![keyed("a"), keyed("b")]).await.unwrap();
    let expect = |id: &str, created| Enqueued {
        id: id.into(),
        created,
    };
    assert_eq!(out, [expect("a", true), expect("a", false)]);
    let again = b.enqueue("q", vec![keyed("c"), job("d", 1)]).await.unwrap();
    assert_eq!(again, [expect("a", false), expect("d", true)]);
    assert!(b.job("q", "c").await.unwrap().is_none());
    assert_eq!(b.counts("q").await.unwrap().queued, 2);
}

#[tokio::test]
async fn ack_is_accepted_once_and_stale_tokens_are_refused() {
    let Some((s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
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
        .ack("q", vec![stale, ack_of(&l, b"\x01\x02"), missing])
        .await
        .unwrap();
    assert_eq!(res, [false, true, false]);
    assert_eq!(
        b.ack("q", vec![ack_of(&l, b"again")]).await.unwrap(),
        [false]
    );

    let info = b.job("q", "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(info.result.as_deref(), Some(&b"\x01\x02"[..]));
    assert!(info.finished_ms.is_some());
    let counts = b.counts("q").await.unwrap();
    assert_eq!((counts.running, counts.succeeded_total), (0, 1));
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("asyncq:{q}:job:a")
        .query_async(&mut s.raw().await)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

#[tokio::test]
async fn fail_retries_after_delay_then_dead_letters() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue(
        "q",
        vec![NewJob {
            max_attempts: 2,
            ..job("a", 1)
        }],
    )
    .await
    .unwrap();
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    let mut stale = fail_of(&l, Some(50));
    stale.lease.token = 99;
    let res = b
        .fail("q", vec![stale, fail_of(&l, Some(50))])
        .await
        .unwrap();
    assert_eq!(res, [FailOutcome::Stale, FailOutcome::Retrying]);
    let info = b.job("q", "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Failed);
    assert_eq!(info.error.as_deref(), Some(&b"boom"[..]));
    assert!(info.due_ms.is_some());

    let early = b.fetch("q", 1, 30_000, "w").await.unwrap();
    assert!(early.jobs.is_empty());
    assert!(early.next_due_us.unwrap() <= 50_000);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    assert_eq!(l.attempt, 2);
    assert_eq!(
        b.fail("q", vec![fail_of(&l, Some(50))]).await.unwrap(),
        [FailOutcome::Dead]
    );
    assert_eq!(state(&b, "q", "a").await, JobState::Dead);
    assert_eq!(b.dead_ids("q", 10).await.unwrap(), ["a"]);
    let counts = b.counts("q").await.unwrap();
    assert_eq!(
        (counts.failed_total, counts.dead, counts.scheduled),
        (2, 1, 0)
    );

    b.enqueue("q", vec![job("b", 1)]).await.unwrap();
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    assert_eq!(
        b.fail("q", vec![fail_of(&l, None)]).await.unwrap(),
        [FailOutcome::Dead]
    );
}

#[tokio::test]
async fn release_puts_the_job_back_first_without_counting_the_attempt() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 1), job("b", 1)])
        .await
        .unwrap();
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    assert_eq!(l.id, "a");
    let stale = Lease {
        id: "a".into(),
        token: 42,
    };
    assert_eq!(
        b.release("q", vec![stale, lease(&l)]).await.unwrap(),
        [false, true]
    );
    assert_eq!(b.release("q", vec![lease(&l)]).await.unwrap(), [false]);
    assert_eq!(state(&b, "q", "a").await, JobState::Queued);
    let again = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    assert_eq!((again.id.as_str(), again.attempt), ("a", 1));
    assert!(
        again.token > l.token + 1,
        "release and lease both bump the token"
    );
    assert_eq!(b.ack("q", vec![ack_of(&l, b"")]).await.unwrap(), [false]);
}

#[tokio::test]
async fn heartbeat_extends_leases_and_reports_lost_and_cancelled() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 1), job("b", 1)])
        .await
        .unwrap();
    let got = b.fetch("q", 2, 100, "w").await.unwrap();
    let (a, bj) = (&got.jobs[0], &got.jobs[1]);
    let stale = Lease {
        id: "b".into(),
        token: 0,
    };
    let gone = Lease {
        id: "zzz".into(),
        token: 1,
    };
    let hb = b
        .heartbeat("q", vec![lease(a), stale, gone], 10_000)
        .await
        .unwrap();
    // A stale token is a lost lease; a job without a record is gone (Redis lost its data).
    assert_eq!(
        (hb.lost, hb.gone),
        (vec!["b".to_string()], vec!["zzz".to_string()])
    );
    assert!(hb.cancel.is_empty());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reaped = b.reap("q", 60_000).await.unwrap();
    assert_eq!(reaped.requeued, 1, "only b's lease expired");
    assert_eq!(state(&b, "q", "a").await, JobState::Running);
    assert_eq!(state(&b, "q", "b").await, JobState::Queued);
    assert_eq!(
        b.heartbeat("q", vec![lease(bj)], 10_000)
            .await
            .unwrap()
            .lost,
        ["b"]
    );

    assert_eq!(b.cancel("q", "a").await.unwrap(), CancelOutcome::Requested);
    let hb = b.heartbeat("q", vec![lease(a)], 10_000).await.unwrap();
    assert_eq!((hb.lost.len(), hb.cancel), (0, vec!["a".to_string()]));
}

#[tokio::test]
async fn reap_recovers_expired_leases_and_dead_letters_on_third_stall() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue(
        "q",
        vec![NewJob {
            max_attempts: 2,
            ..job("a", 1)
        }],
    )
    .await
    .unwrap();
    let first = b.fetch("q", 1, 30, "w").await.unwrap().jobs.remove(0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        b.reap("q", 60_000).await.unwrap(),
        ReapOutcome {
            requeued: 1,
            dead: 0
        }
    );
    assert_eq!(
        b.ack("q", vec![ack_of(&first, b"")]).await.unwrap(),
        [false]
    );

    let second = b.fetch("q", 1, 30, "w").await.unwrap().jobs.remove(0);
    assert_eq!(second.attempt, 2);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let reaped = b.reap("q", 60_000).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (1, 0),
        "stalls are not retries"
    );
    let second = b.fetch("q", 1, 30, "w").await.unwrap().jobs.remove(0);
    assert_eq!(second.attempt, 3);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let reaped = b.reap("q", 60_000).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (0, 1),
        "third stall dead-letters"
    );
    assert_eq!(
        b.fail("q", vec![fail_of(&second, None)]).await.unwrap(),
        [FailOutcome::Stale]
    );
    let info = b.job("q", "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    let record: HashMap<String, String> = rmp_serde::from_slice(&info.error.unwrap()).unwrap();
    assert_eq!(record["reason"], "lease_expired");
    assert_eq!(record["traceback"], "");
    assert!(record.contains_key("type") && record.contains_key("message"));
    assert_eq!(b.counts("q").await.unwrap().dead, 1);
}

#[tokio::test]
async fn reap_trims_old_dead_letters() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    b.fail("q", vec![fail_of(&l, None)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    b.reap("q", 10).await.unwrap();
    assert!(b.dead_ids("q", 10).await.unwrap().is_empty());
    assert!(b.job("q", "a").await.unwrap().is_none());
}

#[tokio::test]
async fn cancel_depends_on_the_state() {
    let Some((_s, b)) = setup().await else { return };
    let mut later = job("later", 1);
    later.delay_ms = Some(60_000);
    let jobs = vec![
        job("run", 9),
        job("done", 8),
        job("retry", 7),
        job("queued", 1),
        later,
    ];
    b.enqueue("q", jobs).await.unwrap();
    let got = b.fetch("q", 3, 30_000, "w").await.unwrap();
    assert_eq!(ids(&got), ["run", "done", "retry"]);
    b.ack("q", vec![ack_of(&got.jobs[1], b"")]).await.unwrap();
    b.fail("q", vec![fail_of(&got.jobs[2], Some(60_000))])
        .await
        .unwrap();

    use CancelOutcome::*;
    for (id, expected) in [
        ("queued", Cancelled),
        ("later", Cancelled),
        ("retry", Cancelled),
        ("run", Requested),
        ("done", Finished),
        ("queued", Finished),
        ("missing", NotFound),
    ] {
        assert_eq!(b.cancel("q", id).await.unwrap(), expected, "{id}");
    }
    assert_eq!(state(&b, "q", "later").await, JobState::Cancelled);
    let counts = b.counts("q").await.unwrap();
    assert_eq!((counts.queued, counts.scheduled, counts.running), (0, 0, 1));
    assert!(b.fetch("q", 10, 30_000, "w").await.unwrap().jobs.is_empty());
}

/// Dead-letter `ids` (one attempt each).
async fn make_dead(b: &Arc<dyn Broker>, ids: &[&str]) {
    let jobs = ids
        .iter()
        .map(|id| NewJob {
            max_attempts: 1,
            ..job(id, 1)
        })
        .collect();
    b.enqueue("q", jobs).await.unwrap();
    let got = b.fetch("q", ids.len(), 30_000, "w").await.unwrap();
    let fails = got.jobs.iter().map(|l| fail_of(l, Some(10))).collect();
    b.fail("q", fails).await.unwrap();
}

#[tokio::test]
async fn retry_dead_requeues_with_fresh_attempts() {
    let Some((s, b)) = setup().await else { return };
    make_dead(&b, &["a", "b", "c"]).await;
    assert_eq!(b.dead_ids("q", 2).await.unwrap().len(), 2);
    assert_eq!(
        b.retry_dead("q", Some(vec!["b".into(), "nope".into()]))
            .await
            .unwrap(),
        1
    );
    let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&got), ["b"]);
    assert_eq!(got.jobs[0].attempt, 1);
    assert!(got.jobs[0].token >= 3);
    assert_eq!(b.retry_dead("q", None).await.unwrap(), 2);
    assert_eq!(b.counts("q").await.unwrap().dead, 0);
    assert_eq!(state(&b, "q", "a").await, JobState::Queued);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("asyncq:{q}:job:a")
        .query_async(&mut s.raw().await)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "record persistent again");
}

#[tokio::test]
async fn purge_deletes_waiting_and_dead_jobs_but_not_running_ones() {
    let Some((_s, b)) = setup().await else { return };
    make_dead(&b, &["dead"]).await;
    let mut later = job("later", 1);
    later.delay_ms = Some(60_000);
    let mut keyed = job("keyed", 1);
    keyed.key = Some("k".into());
    b.enqueue("q", vec![job("run", 9), keyed, job("queued", 1), later])
        .await
        .unwrap();
    b.fetch("q", 1, 30_000, "w").await.unwrap();
    assert_eq!(b.purge("q").await.unwrap(), 4);
    let counts = b.counts("q").await.unwrap();
    assert_eq!(
        (counts.queued, counts.scheduled, counts.dead, counts.running),
        (0, 0, 0, 1)
    );
    assert_eq!(state(&b, "q", "run").await, JobState::Running);
    assert!(b.job("q", "later").await.unwrap().is_none());
    let again = b.enqueue(
        "q",
        vec![NewJob {
            key: Some("k".into()),
            ..job("new", 1)
        }],
    );
    assert!(
        again.await.unwrap()[0].created,
        "purge drops idempotency keys"
    );
}

#[tokio::test]
async fn queues_and_workers_are_listed() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("beta", vec![job("a", 1)]).await.unwrap();
    b.enqueue("alpha", vec![job("b", 1)]).await.unwrap();
    b.enqueue("alpha", vec![job("c", 1)]).await.unwrap();
    assert_eq!(b.queues().await.unwrap(), ["alpha", "beta"]);

    let worker = |id: &str| WorkerInfo {
        id: id.into(),
        info: format!(r#"{{"host":"h","id":"{id}"}}"#),
        last_seen_ms: 0,
    };
    b.register_worker(&worker("w1"), 10_000).await.unwrap();
    b.register_worker(&worker("w2"), 50).await.unwrap();
    let listed = b.workers().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].last_seen_ms > 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listed = b.workers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info, worker("w1").info);
    b.unregister_worker("w1").await.unwrap();
    assert!(b.workers().await.unwrap().is_empty());
}

#[tokio::test]
async fn wait_wakes_on_enqueue_and_times_out_otherwise() {
    let Some((_s, b)) = setup().await else { return };
    let started = Instant::now();
    b.wait("q", 100).await.unwrap();
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(90) && idle < Duration::from_secs(2),
        "{idle:?}"
    );

    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            b.wait("q", 5_000).await.unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let enqueued = Instant::now();
    b.enqueue("q", vec![job("a", 1), job("b", 1)])
        .await
        .unwrap();
    let woke = waiter.await.unwrap();
    assert!(
        woke.duration_since(enqueued) < Duration::from_millis(100),
        "slow wake"
    );

    // Jobs remain after a fetch of one: the next idle worker is woken at once.
    b.fetch("q", 1, 30_000, "w").await.unwrap();
    let started = Instant::now();
    b.wait("q", 5_000).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    b.wait("q", 0).await.unwrap();
}

#[tokio::test]
async fn script_flush_between_calls_is_invisible() {
    let Some((s, b)) = setup().await else { return };
    let mut raw = s.raw().await;
    let flush = || ::redis::cmd("SCRIPT").arg("FLUSH").clone();
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    flush().query_async::<()>(&mut raw).await.unwrap();
    let l = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    flush().query_async::<()>(&mut raw).await.unwrap();
    assert_eq!(b.ack("q", vec![ack_of(&l, b"")]).await.unwrap(), [true]);
}

#[tokio::test]
async fn bad_queue_names_are_refused() {
    let Some((_s, b)) = setup().await else { return };
    let err = b.enqueue("a{b}", vec![job("a", 1)]).await.unwrap_err();
    assert!(matches!(err, Error::Payload(_)), "{err}");
    assert!(b.counts("").await.is_err());
    let err = b.enqueue("q", vec![job("a", 10)]).await.unwrap_err();
    assert!(matches!(err, Error::Payload(_)), "{err}");
}

#[tokio::test]
async fn urls_with_password_db_and_valkey_scheme_connect() {
    let Some(s) = Server::start(&["--requirepass", "sekret"]) else {
        return;
    };
    let url = format!("valkey://:sekret@127.0.0.1:{}/3", s.port);
    let b = RedisBroker::open(&url).await.unwrap();
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    let client = ::redis::Client::open(format!("redis://:sekret@127.0.0.1:{}/3", s.port)).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let exists: bool = ::redis::cmd("EXISTS")
        .arg("asyncq:{q}:job:a")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(exists, "job written to db 3");
    let wrong = format!("redis://:nope@127.0.0.1:{}", s.port);
    assert!(matches!(
        RedisBroker::open(&wrong).await,
        Err(Error::Redis(_))
    ));
    assert!(matches!(
        RedisBroker::open("redis://[bad").await,
        Err(Error::BadUrl(_))
    ));
}

#[tokio::test]
async fn connection_loss_is_an_error_and_the_broker_reconnects() {
    let Some(s) = Server::start(&[]) else { return };
    let port = s.port;
    let b = RedisBroker::open(&s.url()).await.unwrap();
    b.wait("q", 10).await.unwrap();
    drop(s);
    assert!(matches!(b.now_ms().await, Err(Error::Redis(_))));
    assert!(matches!(b.wait("q", 50).await, Err(Error::Redis(_))));

    let _s = Server::start_on(port, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.now_ms().await.is_err() {
        assert!(Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    b.wait("q", 1_000).await.unwrap();
}

#[tokio::test]
async fn bulk_enqueue_larger_than_one_script_chunk_keeps_fifo() {
    let Some((_s, b)) = setup().await else { return };
    let jobs: Vec<NewJob> = (0..2500).map(|i| job(&format!("j{i:05}"), 0)).collect();
    let out = b.enqueue("q", jobs).await.unwrap();
    assert_eq!(out.len(), 2500);
    assert!(out.iter().all(|e| e.created));
    let mut seen = Vec::new();
    loop {
        let got = b.fetch("q", 1000, 30_000, "w").await.unwrap();
        if got.jobs.is_empty() {
            break;
        }
        seen.extend(got.jobs.into_iter().map(|j| j.id));
    }
    let expected: Vec<String> = (0..2500).map(|i| format!("j{i:05}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn cancelled_records_expire() {
    let Some((s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 0)]).await.unwrap();
    assert_eq!(b.cancel("q", "a").await.unwrap(), CancelOutcome::Cancelled);
    let mut raw = s.raw().await;
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("asyncq:{q}:job:a")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl as u64 <= CANCELLED_TTL_MS, "pttl {ttl}");
}

#[tokio::test]
async fn fail_marked_cancelled_ends_cancelled_outside_the_dead_set() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 0)]).await.unwrap();
    let got = b.fetch("q", 1, 30_000, "w").await.unwrap().jobs.remove(0);
    let fail = Fail {
        cancelled: true,
        ..fail_of(&got, Some(10))
    };
    assert_eq!(
        b.fail("q", vec![fail]).await.unwrap(),
        [FailOutcome::Cancelled]
    );
    assert_eq!(state(&b, "q", "a").await, JobState::Cancelled);
    let counts = b.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.running, counts.scheduled), (0, 0, 0));
}

#[tokio::test]
async fn a_stalled_job_is_leased_in_a_batch_of_its_own() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("x", 0), job("s", 0), job("y", 0)])
        .await
        .unwrap();
    let first = b.fetch("q", 2, 30, "w").await.unwrap();
    assert_eq!(ids(&first), ["x", "s"]);
    b.ack("q", vec![ack_of(&first.jobs[0], b"")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(b.reap("q", 60_000).await.unwrap().requeued, 1);
    b.enqueue("q", vec![job("h", 9)]).await.unwrap();
    let out = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&out), ["h"], "stops before the stalled job");
    let out = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&out), ["s"], "the stalled job alone");
    let out = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&out), ["y"]);
}

#[tokio::test]
async fn enqueue_never_writes_an_id_that_already_has_a_record() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    let running = b.fetch("q", 1, 30_000, "w").await.unwrap();
    assert_eq!(ids(&running), ["a"]);
    // Resent: "a" (now running) is left alone, "b" is new; a batch resent whole changes nothing.
    let out = b
        .enqueue("q", vec![job("a", 9), job("b", 1)])
        .await
        .unwrap();
    let flags: Vec<(&str, bool)> = out.iter().map(|e| (e.id.as_str(), e.created)).collect();
    assert_eq!(flags, [("a", false), ("b", true)]);
    let again = b
        .enqueue("q", vec![job("a", 9), job("b", 1)])
        .await
        .unwrap();
    assert!(again.iter().all(|e| !e.created));
    let info = b.job("q", "a").await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.priority, info.attempts),
        (JobState::Running, 1, 1)
    );
    let counts = b.counts("q").await.unwrap();
    assert_eq!((counts.queued, counts.running), (1, 1));
}

#[tokio::test]
async fn heartbeat_tells_a_vanished_job_from_a_stale_lease() {
    let Some((s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 1)]).await.unwrap();
    let got = b.fetch("q", 1, 30_000, "w").await.unwrap();
    ::redis::cmd("FLUSHALL")
        .query_async::<()>(&mut s.raw().await)
        .await
        .unwrap();
    let hb = b
        .heartbeat("q", vec![lease(&got.jobs[0])], 10_000)
        .await
        .unwrap();
    assert_eq!((hb.lost.len(), hb.gone), (0, vec!["a".to_string()]));
}

#[tokio::test]
async fn heartbeat_after_the_holders_own_outcome_is_finished_not_lost() {
    let Some((_s, b)) = setup().await else { return };
    b.enqueue(
        "q",
        vec![job("a", 1), job("b", 1), job("c", 1), job("d", 1)],
    )
    .await
    .unwrap();
    let got = b.fetch("q", 4, 30_000, "w").await.unwrap();
    let j = &got.jobs;
    b.ack("q", vec![ack_of(&j[0], b"")]).await.unwrap();
    b.fail("q", vec![fail_of(&j[1], Some(1000))]).await.unwrap();
    b.fail("q", vec![fail_of(&j[2], None)]).await.unwrap();
    b.release("q", vec![lease(&j[3])]).await.unwrap();
    let hb = b
        .heartbeat("q", j.iter().map(lease).collect(), 10_000)
        .await
        .unwrap();
    // A release bumps the token like a takeover: the broker cannot tell those apart.
    assert_eq!(hb.finished, ["a", "b", "c"]);
    assert_eq!((hb.lost, hb.gone.len()), (vec!["d".to_string()], 0));
}
