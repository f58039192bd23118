//! Corrupt job records against the Redis scripts (issue 8): a field that is not a number where
//! one is expected, or a missing field, is written behind the broker's back with raw commands.
//! Each script must dead-letter the corrupt record with reason `corrupt_record` and handle the
//! rest of its batch normally; nothing may be half-written or left in no set.

// The shared harness has helpers this file does not need.
#[allow(dead_code)]
mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use _core::broker::*;
use _core::codec::ErrorRecord;
use redis_support::*;

/// Run one raw command against the server behind the broker's back.
async fn raw(s: &Server, args: &[&str]) {
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<()>(&mut s.raw().await).await.unwrap();
}

/// Overwrite (or, with `None`, delete) one field of a job record.
async fn corrupt(s: &Server, id: &str, field: &str, value: Option<&str>) {
    let key = format!("asyncq:{{q}}:job:{id}");
    match value {
        Some(v) => raw(s, &["HSET", &key, field, v]).await,
        None => raw(s, &["HDEL", &key, field]).await,
    }
}

/// Assert the job is dead with reason `corrupt_record` and a message naming `field`.
async fn assert_corrupt(b: &Arc<dyn Broker>, id: &str, field: &str) {
    let info = b.job("q", id).await.unwrap().expect("record kept");
    assert_eq!(info.state, JobState::Dead, "{id}");
    let err = ErrorRecord::from_bytes(&info.error.expect("error record")).unwrap();
    assert_eq!(err.reason, "corrupt_record", "{id}: {err:?}");
    assert!(err.message.contains(&format!("'{field}'")), "{err:?}");
    let dead = b.dead_ids("q", 100).await.unwrap();
    assert!(dead.contains(&id.to_string()), "{id} in the dead set");
}

/// Every way a field read by `fetch` can be corrupt: the good jobs of the batch are leased
/// (and in the active set), the corrupt one is dead-lettered, and the queue keeps moving.
#[tokio::test]
async fn fetch_dead_letters_a_corrupt_record_and_leases_the_rest() {
    let cases = [
        ("a", Some("x")),
        ("t", Some("nope")),
        ("m", Some("")),
        ("e", Some("1.5")),
        ("sl", Some("-1")),
        ("p", None),
        ("a", None),
    ];
    for (field, value) in cases {
        let Some((s, b)) = setup().await else { return };
        b.enqueue("q", vec![job("g1", 5), job("bad", 5), job("g2", 5)])
            .await
            .unwrap();
        corrupt(&s, "bad", field, value).await;
        let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
        assert_eq!(ids(&got), ["g1", "g2"], "field {field}");
        assert_corrupt(&b, "bad", field).await;
        let counts = b.counts("q").await.unwrap();
        assert_eq!((counts.running, counts.dead, counts.queued), (2, 1, 0));
        let acks = got.jobs.iter().map(|l| ack_of(l, b"ok")).collect();
        assert_eq!(b.ack("q", acks).await.unwrap(), [true, true]);
        b.enqueue("q", vec![job("next", 5)]).await.unwrap();
        assert_eq!(ids(&b.fetch("q", 10, 30_000, "w").await.unwrap()), ["next"]);
    }
}

/// A due scheduled job whose `rs` is unreadable, or whose record is gone, must not stall the
/// queue: the first is dead-lettered, the second dropped, and due jobs behind them promoted.
#[tokio::test]
async fn corrupt_scheduled_entries_do_not_stall_the_queue() {
    let Some((s, b)) = setup().await else { return };
    let delayed = ["bad", "norank", "good"].map(|id| NewJob {
        delay_ms: Some(20),
        ..job(id, 5)
    });
    b.enqueue("q", delayed.to_vec()).await.unwrap();
    corrupt(&s, "bad", "rs", Some("x")).await;
    corrupt(&s, "norank", "rs", None).await;
    raw(&s, &["ZADD", "asyncq:{q}:scheduled", "0", "ghost"]).await;
    // Due 20 ms after enqueue by Redis' clock, on this machine: sleeping 60 ms from after the
    // enqueue returned cannot end before that (a slow machine only sleeps longer).
    tokio::time::sleep(Duration::from_millis(60)).await;
    for i in 0..2 {
        // Twice: the second call finds nothing left over from the first.
        let id = format!("ready{i}");
        b.enqueue("q", vec![job(&id, 9)]).await.unwrap();
        let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
        assert!(ids(&got).contains(&id.as_str()), "{:?}", ids(&got));
    }
    assert_eq!(state(&b, "q", "good").await, JobState::Running);
    assert_corrupt(&b, "bad", "rs").await;
    assert_corrupt(&b, "norank", "rs").await;
    let counts = b.counts("q").await.unwrap();
    assert_eq!((counts.scheduled, counts.queued, counts.dead), (0, 0, 2));
}

/// The reaper's promotion copes with the same corrupt scheduled entries.
#[tokio::test]
async fn reap_promotes_past_corrupt_scheduled_entries() {
    let Some((s, b)) = setup().await else { return };
    let delayed = ["bad", "good"].map(|id| NewJob {
        delay_ms: Some(20),
        ..job(id, 5)
    });
    b.enqueue("q", delayed.to_vec()).await.unwrap();
    corrupt(&s, "bad", "rs", Some("1e999")).await;
    raw(&s, &["ZADD", "asyncq:{q}:scheduled", "0", "ghost"]).await;
    tokio::time::sleep(Duration::from_millis(60)).await; // due after 20 ms: see above
    b.reap("q", 60_000).await.unwrap();
    assert_eq!(state(&b, "q", "good").await, JobState::Queued);
    assert_corrupt(&b, "bad", "rs").await;
    assert_eq!(b.counts("q").await.unwrap().scheduled, 0);
}

/// Expired leases whose record cannot be requeued are dead-lettered; the other expired leases
/// of the same reap go back to ready.
#[tokio::test]
async fn reap_dead_letters_a_corrupt_expired_lease_and_requeues_the_rest() {
    for (field, value) in [("t", Some("x")), ("sl", Some("1.5")), ("rs", None)] {
        let Some((s, b)) = setup().await else { return };
        b.enqueue("q", vec![job("g1", 5), job("bad", 5), job("g2", 5)])
            .await
            .unwrap();
        assert_eq!(b.fetch("q", 10, 30, "w").await.unwrap().jobs.len(), 3);
        corrupt(&s, "bad", field, value).await;
        // The 30 ms leases started before fetch returned: 60 ms later they have expired.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let out = b.reap("q", 60_000).await.unwrap();
        assert_eq!((out.requeued, out.dead), (2, 1), "field {field}");
        assert_corrupt(&b, "bad", field).await;
        let counts = b.counts("q").await.unwrap();
        assert_eq!((counts.running, counts.queued), (0, 2));
        let again = b.fetch("q", 1, 30_000, "w").await.unwrap();
        assert_eq!(ids(&again), ["g1"], "stalled once: leased alone");
    }
}

/// A failure that needs the attempt counts to decide on a retry dead-letters a record whose
/// counts cannot be read; the other failures of the batch are recorded as usual.
#[tokio::test]
async fn fail_dead_letters_a_record_whose_attempts_cannot_be_read() {
    for (field, value) in [("a", Some("x")), ("m", None)] {
        let Some((s, b)) = setup().await else { return };
        b.enqueue("q", vec![job("g", 5), job("bad", 5)])
            .await
            .unwrap();
        let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
        corrupt(&s, "bad", field, value).await;
        let fails = got.jobs.iter().map(|l| fail_of(l, Some(10))).collect();
        let out = b.fail("q", fails).await.unwrap();
        assert_eq!(out, [FailOutcome::Retrying, FailOutcome::Dead], "{field}");
        assert_corrupt(&b, "bad", field).await;
        let counts = b.counts("q").await.unwrap();
        assert_eq!((counts.running, counts.scheduled, counts.dead), (0, 1, 1));
        assert_eq!(counts.failed_total, 2);
    }
}

/// A hand-back that cannot put the job back at its position (or uncount its attempt)
/// dead-letters it; the other leases of the batch are released.
#[tokio::test]
async fn release_dead_letters_a_record_it_cannot_requeue() {
    for (field, value) in [("rs", Some("x")), ("a", Some(""))] {
        let Some((s, b)) = setup().await else { return };
        b.enqueue("q", vec![job("g", 5), job("bad", 5)])
            .await
            .unwrap();
        let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
        corrupt(&s, "bad", field, value).await;
        let leases = got.jobs.iter().map(lease).collect();
        assert_eq!(b.release("q", leases).await.unwrap(), [true, true]);
        assert_corrupt(&b, "bad", field).await;
        let counts = b.counts("q").await.unwrap();
        assert_eq!((counts.running, counts.queued, counts.dead), (0, 1, 1));
        assert_eq!(state(&b, "q", "g").await, JobState::Queued);
    }
}

/// retry_dead repairs what it resets (attempts, stalls), leaves a record whose token or ready
/// score cannot be read dead, and a retry of everything still ends.
#[tokio::test]
async fn retry_dead_skips_records_it_cannot_requeue_and_ends() {
    let Some((s, b)) = setup().await else { return };
    b.enqueue("q", vec![job("a", 5), job("t", 5), job("r", 5)])
        .await
        .unwrap();
    corrupt(&s, "a", "a", Some("x")).await;
    corrupt(&s, "t", "t", Some("x")).await;
    let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&got), ["r"]);
    b.fail("q", vec![fail_of(&got.jobs[0], None)])
        .await
        .unwrap();
    corrupt(&s, "r", "rs", Some("x")).await;
    assert_eq!(b.counts("q").await.unwrap().dead, 3);
    assert_eq!(b.retry_dead("q", None).await.unwrap(), 1);
    let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
    assert_eq!(ids(&got), ["a"], "attempts reset to 0: leased again");
    assert_eq!(got.jobs[0].attempt, 1);
    let ids_given = Some(vec!["t".to_string(), "r".to_string()]);
    assert_eq!(b.retry_dead("q", ids_given).await.unwrap(), 0);
    assert_eq!(b.dead_ids("q", 10).await.unwrap().len(), 2);
}

/// Scripts that read no number from the record are unaffected: heartbeat, ack and cancel of
/// a record with corrupt counters work as usual.
#[tokio::test]
async fn heartbeat_ack_and_cancel_ignore_fields_they_do_not_read() {
    let Some((s, b)) = setup().await else { return };
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("later", 5)
    };
    b.enqueue("q", vec![job("run", 5), later]).await.unwrap();
    let got = b.fetch("q", 10, 30_000, "w").await.unwrap();
    for id in ["run", "later"] {
        corrupt(&s, id, "a", Some("x")).await;
        corrupt(&s, id, "rs", Some("x")).await;
    }
    let hb = b
        .heartbeat("q", vec![lease(&got.jobs[0])], 30_000)
        .await
        .unwrap();
    assert!(hb.lost.is_empty() && hb.gone.is_empty());
    assert_eq!(
        b.ack("q", vec![ack_of(&got.jobs[0], b"")]).await.unwrap(),
        [true]
    );
    assert_eq!(
        b.cancel("q", "later").await.unwrap(),
        CancelOutcome::Cancelled
    );
}
