//! Corrupt job records on `memory://` (issue 8): the same cases `tests/redis_corrupt.rs` runs
//! against Redis, here through the embedded Lua and the in-process command set (`EXISTS`,
//! `redis.pcall`, `string.gsub`, `cmsgpack.pack` of a map). The records are corrupted with raw
//! commands behind the broker's back.

use ::redis::Cmd;

use super::*;
use crate::broker::keys::QueueKeys;
use crate::codec::ErrorRecord;

/// Run raw commands on the keyspace, as `redis-cli` would on a server.
fn raw(b: &MemoryBroker, args: &[&str]) {
    let mut cmd = Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    b.query(&[cmd]).unwrap();
}

/// Overwrite (or, with `None`, delete) one field of a job record.
fn corrupt(b: &MemoryBroker, id: &str, field: &str, value: Option<&str>) {
    let key = QueueKeys::new(Q).unwrap().job(id);
    match value {
        Some(v) => raw(b, &["HSET", &key, field, v]),
        None => raw(b, &["HDEL", &key, field]),
    }
}

/// Assert the job is dead with reason `corrupt_record` and a message naming `field`.
async fn assert_corrupt(b: &MemoryBroker, id: &str, field: &str) {
    let info = b.job(Q, id).await.unwrap().expect("record kept");
    assert_eq!(info.state, JobState::Dead, "{id}");
    let err = ErrorRecord::from_bytes(&info.error.expect("error record")).unwrap();
    assert_eq!(err.reason, "corrupt_record", "{id}: {err:?}");
    assert!(err.message.contains(&format!("'{field}'")), "{err:?}");
    assert!(b.dead_ids(Q, 100).await.unwrap().contains(&id.to_string()));
}

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
        let b = MemoryBroker::new();
        let jobs = ["g1", "bad", "g2"].map(|id| new_job(id, 5));
        enqueue(&b, jobs.to_vec()).await;
        corrupt(&b, "bad", field, value);
        let got = fetch(&b, 10).await;
        assert_eq!(ids(&got), ["g1", "g2"], "field {field}");
        assert_corrupt(&b, "bad", field).await;
        let counts = b.counts(Q).await.unwrap();
        assert_eq!((counts.running, counts.dead, counts.queued), (2, 1, 0));
    }
}

#[tokio::test]
async fn corrupt_scheduled_entries_do_not_stall_fetch_or_reap() {
    for reap in [false, true] {
        let b = MemoryBroker::new();
        let delayed = ["bad", "norank", "good"].map(|id| NewJob {
            delay_ms: Some(20),
            ..new_job(id, 5)
        });
        enqueue(&b, delayed.to_vec()).await;
        corrupt(&b, "bad", "rs", Some("1e999"));
        corrupt(&b, "norank", "rs", None);
        let scheduled = QueueKeys::new(Q).unwrap().scheduled();
        raw(&b, &["ZADD", &scheduled, "0", "ghost"]);
        b.advance(1_000);
        if reap {
            b.reap(Q, DAY).await.unwrap();
            assert_eq!(state(&b, "good").await, Some(JobState::Queued));
        } else {
            assert_eq!(ids(&fetch(&b, 10).await), ["good"]);
        }
        assert_corrupt(&b, "bad", "rs").await;
        assert_corrupt(&b, "norank", "rs").await;
        assert_eq!(b.counts(Q).await.unwrap().scheduled, 0);
    }
}

#[tokio::test]
async fn a_never_due_scheduled_score_reports_no_wait() {
    let b = MemoryBroker::new();
    let scheduled = QueueKeys::new(Q).unwrap().scheduled();
    raw(&b, &["ZADD", &scheduled, "inf", "never"]);
    let out = b.fetch(Q, 10, LEASE, "w1").await.unwrap();
    assert!(out.jobs.is_empty());
}

#[tokio::test]
async fn reap_dead_letters_a_corrupt_expired_lease_and_requeues_the_rest() {
    for (field, value) in [("t", Some("x")), ("sl", Some("1.5")), ("rs", None)] {
        let b = MemoryBroker::new();
        enqueue(&b, ["g1", "bad", "g2"].map(|id| new_job(id, 5)).to_vec()).await;
        assert_eq!(fetch(&b, 10).await.len(), 3);
        corrupt(&b, "bad", field, value);
        b.advance(LEASE + 1);
        let out = b.reap(Q, DAY).await.unwrap();
        assert_eq!((out.requeued, out.dead), (2, 1), "field {field}");
        assert_corrupt(&b, "bad", field).await;
    }
}

#[tokio::test]
async fn fail_and_release_dead_letter_records_they_cannot_read() {
    for (field, value) in [("a", Some("x")), ("m", None)] {
        let b = MemoryBroker::new();
        enqueue(&b, vec![new_job("g", 5), new_job("bad", 5)]).await;
        let got = fetch(&b, 10).await;
        corrupt(&b, "bad", field, value);
        let fails = got.iter().map(|l| fail_of(l, Some(10))).collect();
        let out = b.fail(Q, fails).await.unwrap();
        assert_eq!(out, [FailOutcome::Retrying, FailOutcome::Dead], "{field}");
        assert_corrupt(&b, "bad", field).await;
    }
    for (field, value) in [("rs", Some("x")), ("a", Some(""))] {
        let b = MemoryBroker::new();
        enqueue(&b, vec![new_job("g", 5), new_job("bad", 5)]).await;
        let got = fetch(&b, 10).await;
        corrupt(&b, "bad", field, value);
        let leases = got.iter().map(lease_of).collect();
        // Reply 2 (dead-lettered) counts as taken back, like a release.
        assert_eq!(b.release(Q, leases).await.unwrap(), [true, true]);
        assert_corrupt(&b, "bad", field).await;
        assert_eq!(state(&b, "g").await, Some(JobState::Queued));
    }
}

#[tokio::test]
async fn retry_dead_keeps_records_it_cannot_requeue_and_ends() {
    let b = MemoryBroker::new();
    enqueue(&b, ["a", "t", "r"].map(|id| new_job(id, 5)).to_vec()).await;
    corrupt(&b, "a", "a", Some("x"));
    corrupt(&b, "t", "t", Some("x"));
    let got = fetch(&b, 10).await;
    assert_eq!(ids(&got), ["r"]);
    b.fail(Q, vec![fail_of(&got[0], None)]).await.unwrap();
    corrupt(&b, "r", "rs", Some("x"));
    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 1);
    assert_eq!(
        ids(&fetch(&b, 10).await),
        ["a"],
        "attempts reset: leased again"
    );
    // Only kept records are left: a retry of everything ends instead of looping.
    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 0);
    assert_eq!(b.dead_ids(Q, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_idempotency_key_of_another_type_does_not_abort_enqueue() {
    let b = MemoryBroker::new();
    let idem = QueueKeys::new(Q).unwrap().idem("k");
    raw(&b, &["HSET", &idem, "f", "v"]);
    let keyed = NewJob {
        key: Some("k".into()),
        ..new_job("keyed", 5)
    };
    let out = b
        .enqueue(Q, vec![new_job("plain", 5), keyed])
        .await
        .unwrap();
    assert!(out.iter().all(|e| e.created), "{out:?}");
    assert_eq!(b.counts(Q).await.unwrap().queued, 2);
}
