//! Corrupt job records (issue 8): a field that is not a number where one is expected, or a
//! missing field, written behind the broker's back with raw commands (on memory:// through
//! `MemoryBroker::raw_command`). Each script must dead-letter the corrupt record with reason
//! `corrupt_record` and handle the rest of its batch normally; nothing may be half-written or
//! left in no set.

use std::sync::Arc;

use _core::broker::keys::QueueKeys;
use _core::broker::*;
use _core::codec::ErrorRecord;

use crate::contract;
use crate::harness::*;

contract!(
    fetch_dead_letters_a_corrupt_record_and_leases_the_rest,
    corrupt_scheduled_entries_do_not_stall_the_queue,
    reap_promotes_past_corrupt_scheduled_entries,
    a_never_due_scheduled_score_reports_no_wait,
    reap_dead_letters_a_corrupt_expired_lease_and_requeues_the_rest,
    fail_dead_letters_a_record_whose_attempts_cannot_be_read,
    release_dead_letters_a_record_it_cannot_requeue,
    retry_dead_skips_records_it_cannot_requeue_and_ends,
    heartbeat_ack_and_cancel_ignore_fields_they_do_not_read,
    an_idempotency_key_of_another_type_does_not_abort_enqueue,
);

/// Overwrite (or, with `None`, delete) one field of a job record.
async fn corrupt(c: &Ctx, id: &str, field: &str, value: Option<&str>) {
    let key = job_key(id);
    let _: i64 = match value {
        Some(v) => c.raw(&["HSET", &key, field, v]).await,
        None => c.raw(&["HDEL", &key, field]).await,
    };
}

/// Put a member without a record into the scheduled set.
async fn ghost(c: &Ctx, score: &str) {
    let scheduled = QueueKeys::new(Q).unwrap().scheduled();
    let _: i64 = c.raw(&["ZADD", &scheduled, score, "ghost"]).await;
}

/// Assert the job is dead with reason `corrupt_record` and a message naming `field`.
async fn assert_corrupt(b: &Arc<dyn Broker>, id: &str, field: &str) {
    let info = b.job(Q, id).await.unwrap().expect("record kept");
    assert_eq!(info.state, JobState::Dead, "{id}");
    let err = ErrorRecord::from_bytes(&info.error.expect("error record")).unwrap();
    assert_eq!(err.reason, "corrupt_record", "{id}: {err:?}");
    assert!(err.message.contains(&format!("'{field}'")), "{err:?}");
    let dead = b.dead_ids(Q, 100).await.unwrap();
    assert!(dead.contains(&id.to_string()), "{id} in the dead set");
}

/// Every way a field read by `fetch` can be corrupt: the good jobs of the batch are leased
/// (and in the active set), the corrupt one is dead-lettered, and the queue keeps moving.
async fn fetch_dead_letters_a_corrupt_record_and_leases_the_rest(c: Ctx) {
    let b = &c.b;
    let cases = [
        ("a", Some("x")),
        ("t", Some("nope")),
        ("m", Some("")),
        ("e", Some("1.5")),
        ("sl", Some("-1")),
        ("p", None),
        ("a", None),
    ];
    for (i, (field, value)) in cases.into_iter().enumerate() {
        let [g1, bad, g2, next] = ["g1", "bad", "g2", "next"].map(|id| format!("{id}-{i}"));
        let jobs = [&g1, &bad, &g2].map(|id| job(id, 5));
        b.enqueue(Q, jobs.to_vec()).await.unwrap();
        corrupt(&c, &bad, field, value).await;
        let got = fetch(b, 10).await;
        assert_eq!(ids(&got), [&g1, &g2], "field {field}");
        assert_corrupt(b, &bad, field).await;
        let counts = b.counts(Q).await.unwrap();
        assert_eq!(
            (counts.running, counts.dead, counts.queued),
            (2, i as u64 + 1, 0)
        );
        let acks = got.jobs.iter().map(|l| ack_of(l, b"ok")).collect();
        assert_eq!(b.ack(Q, acks).await.unwrap(), [true, true]);
        b.enqueue(Q, vec![job(&next, 5)]).await.unwrap();
        let got = fetch(b, 10).await;
        assert_eq!(ids(&got), [&next]);
        b.ack(Q, vec![ack_of(&got.jobs[0], b"")]).await.unwrap();
    }
}

/// A due scheduled job whose `rs` is unreadable, or whose record is gone, must not stall the
/// queue: the first is dead-lettered, the second dropped, and due jobs behind them promoted.
async fn corrupt_scheduled_entries_do_not_stall_the_queue(c: Ctx) {
    let b = &c.b;
    let delayed = ["bad", "huge", "norank", "good"].map(|id| NewJob {
        delay_ms: Some(20),
        ..job(id, 5)
    });
    b.enqueue(Q, delayed.to_vec()).await.unwrap();
    corrupt(&c, "bad", "rs", Some("x")).await;
    corrupt(&c, "huge", "rs", Some("1e999")).await;
    corrupt(&c, "norank", "rs", None).await;
    ghost(&c, "0").await;
    // Due 20 ms after enqueue by the broker's clock: letting 60 ms pass from after the enqueue
    // returned cannot end before that (a slow machine only sleeps longer).
    c.pass(60).await;
    for i in 0..2 {
        // Twice: the second call finds nothing left over from the first.
        let id = format!("ready{i}");
        b.enqueue(Q, vec![job(&id, 9)]).await.unwrap();
        let got = fetch(b, 10).await;
        assert!(ids(&got).contains(&id.as_str()), "{:?}", ids(&got));
    }
    assert_eq!(state(b, "good").await, JobState::Running);
    for id in ["bad", "huge", "norank"] {
        assert_corrupt(b, id, "rs").await;
    }
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.scheduled, counts.queued, counts.dead), (0, 0, 3));
}

/// The reaper's promotion copes with the same corrupt scheduled entries.
async fn reap_promotes_past_corrupt_scheduled_entries(c: Ctx) {
    let b = &c.b;
    let delayed = ["bad", "norank", "good"].map(|id| NewJob {
        delay_ms: Some(20),
        ..job(id, 5)
    });
    b.enqueue(Q, delayed.to_vec()).await.unwrap();
    corrupt(&c, "bad", "rs", Some("1e999")).await;
    corrupt(&c, "norank", "rs", None).await;
    ghost(&c, "0").await;
    c.pass(60).await; // due after 20 ms: see above
    b.reap(Q, 60_000).await.unwrap();
    assert_eq!(state(b, "good").await, JobState::Queued);
    assert_corrupt(b, "bad", "rs").await;
    assert_corrupt(b, "norank", "rs").await;
    assert_eq!(b.counts(Q).await.unwrap().scheduled, 0);
}

async fn a_never_due_scheduled_score_reports_no_wait(c: Ctx) {
    ghost(&c, "inf").await;
    let out = fetch(&c.b, 10).await;
    assert!(out.jobs.is_empty());
}

/// Expired leases whose record cannot be requeued are dead-lettered; the other expired leases
/// of the same reap go back to ready.
async fn reap_dead_letters_a_corrupt_expired_lease_and_requeues_the_rest(c: Ctx) {
    let b = &c.b;
    for (i, (field, value)) in [("t", Some("x")), ("sl", Some("1.5")), ("rs", None)]
        .into_iter()
        .enumerate()
    {
        let [g1, bad, g2] = ["g1", "bad", "g2"].map(|id| format!("{id}-{i}"));
        let jobs = [&g1, &bad, &g2].map(|id| job(id, 5));
        b.enqueue(Q, jobs.to_vec()).await.unwrap();
        assert_eq!(
            b.fetch(Q, Want::jobs(10), 30, "w")
                .await
                .unwrap()
                .jobs
                .len(),
            3
        );
        corrupt(&c, &bad, field, value).await;
        // The 30 ms leases started before fetch returned: 60 ms later they have expired.
        c.pass(60).await;
        let out = b.reap(Q, 60_000).await.unwrap();
        assert_eq!((out.requeued, out.dead), (2, 1), "field {field}");
        assert_corrupt(b, &bad, field).await;
        let counts = b.counts(Q).await.unwrap();
        assert_eq!((counts.running, counts.queued), (0, 2));
        let again = fetch(b, 1).await;
        assert_eq!(ids(&again), [&g1], "stalled once: leased alone");
        let rest = fetch(b, 1).await;
        assert_eq!(ids(&rest), [&g2]);
        let acks = [&again, &rest].map(|o| ack_of(&o.jobs[0], b""));
        b.ack(Q, acks.to_vec()).await.unwrap();
    }
}

/// A failure that needs the attempt counts to decide on a retry dead-letters a record whose
/// counts cannot be read; the other failures of the batch are recorded as usual.
async fn fail_dead_letters_a_record_whose_attempts_cannot_be_read(c: Ctx) {
    let b = &c.b;
    for (i, (field, value)) in [("a", Some("x")), ("m", None)].into_iter().enumerate() {
        let [g, bad] = ["g", "bad"].map(|id| format!("{id}-{i}"));
        b.enqueue(Q, vec![job(&g, 5), job(&bad, 5)]).await.unwrap();
        let got = fetch(b, 10).await;
        corrupt(&c, &bad, field, value).await;
        let fails = got.jobs.iter().map(|l| fail_of(l, Some(60_000))).collect();
        let out = b.fail(Q, fails).await.unwrap();
        assert_eq!(out, [FailOutcome::Retrying, FailOutcome::Dead], "{field}");
        assert_corrupt(b, &bad, field).await;
        let counts = b.counts(Q).await.unwrap();
        let n = i as u64 + 1;
        assert_eq!((counts.running, counts.scheduled, counts.dead), (0, n, n));
        assert_eq!(counts.failed_total, 2 * n);
    }
}

/// A hand-back that cannot put the job back at its position (or uncount its attempt)
/// dead-letters it; the other leases of the batch are released.
async fn release_dead_letters_a_record_it_cannot_requeue(c: Ctx) {
    let b = &c.b;
    for (i, (field, value)) in [("rs", Some("x")), ("a", Some(""))].into_iter().enumerate() {
        let [g, bad] = ["g", "bad"].map(|id| format!("{id}-{i}"));
        b.enqueue(Q, vec![job(&g, 5), job(&bad, 5)]).await.unwrap();
        let got = fetch(b, 10).await;
        corrupt(&c, &bad, field, value).await;
        let leases = got.jobs.iter().map(lease).collect();
        // Reply 2 (dead-lettered) counts as taken back, like a release.
        assert_eq!(b.release(Q, leases).await.unwrap(), [true, true]);
        assert_corrupt(b, &bad, field).await;
        let counts = b.counts(Q).await.unwrap();
        assert_eq!((counts.running, counts.queued, counts.dead), (0, 1, 1));
        assert_eq!(state(b, &g).await, JobState::Queued);
        // Clean slate for the next case: the released job and the dead letter.
        assert_eq!(b.purge(Q).await.unwrap(), 2);
    }
}

/// retry_dead repairs what it resets (attempts, stalls), leaves a record whose token or ready
/// score cannot be read dead, and a retry of everything still ends.
async fn retry_dead_skips_records_it_cannot_requeue_and_ends(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 5), job("t", 5), job("r", 5)])
        .await
        .unwrap();
    corrupt(&c, "a", "a", Some("x")).await;
    corrupt(&c, "t", "t", Some("x")).await;
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["r"]);
    b.fail(Q, vec![fail_of(&got.jobs[0], None)]).await.unwrap();
    corrupt(&c, "r", "rs", Some("x")).await;
    assert_eq!(b.counts(Q).await.unwrap().dead, 3);
    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 1);
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["a"], "attempts reset to 0: leased again");
    assert_eq!(got.jobs[0].attempt, 1);
    let ids_given = Some(vec!["t".to_string(), "r".to_string()]);
    assert_eq!(b.retry_dead(Q, ids_given).await.unwrap(), 0);
    // Only kept records are left: a retry of everything ends instead of looping.
    assert_eq!(b.retry_dead(Q, None).await.unwrap(), 0);
    assert_eq!(b.dead_ids(Q, 10).await.unwrap().len(), 2);
}

/// Scripts that read no number from the record are unaffected: heartbeat, ack and cancel of
/// a record with corrupt counters work as usual.
async fn heartbeat_ack_and_cancel_ignore_fields_they_do_not_read(c: Ctx) {
    let b = &c.b;
    let later = NewJob {
        delay_ms: Some(60_000),
        ..job("later", 5)
    };
    b.enqueue(Q, vec![job("run", 5), later]).await.unwrap();
    let got = fetch(b, 10).await;
    for id in ["run", "later"] {
        corrupt(&c, id, "a", Some("x")).await;
        corrupt(&c, id, "rs", Some("x")).await;
    }
    let hb = b
        .heartbeat(Q, vec![lease(&got.jobs[0])], 30_000)
        .await
        .unwrap();
    assert!(hb.lost.is_empty() && hb.gone.is_empty());
    assert_eq!(
        b.ack(Q, vec![ack_of(&got.jobs[0], b"")]).await.unwrap(),
        [true]
    );
    assert_eq!(
        b.cancel(Q, "later").await.unwrap(),
        CancelOutcome::Cancelled
    );
}

async fn an_idempotency_key_of_another_type_does_not_abort_enqueue(c: Ctx) {
    let b = &c.b;
    let idem = QueueKeys::new(Q).unwrap().idem("k");
    let _: i64 = c.raw(&["HSET", &idem, "f", "v"]).await;
    let keyed = NewJob {
        key: Some("k".into()),
        ..job("keyed", 5)
    };
    let out = b.enqueue(Q, vec![job("plain", 5), keyed]).await.unwrap();
    assert!(out.iter().all(|e| e.created), "{out:?}");
    assert_eq!(b.counts(Q).await.unwrap().queued, 2);
}
