//! Leases: heartbeat (extend, lost, gone, finished, cancel requests) and reaping expired ones.
//!
//! Leases here are short (30-100 ms) and the test lets at least twice that pass before reaping:
//! on Redis that is a real sleep, and a busy machine only makes it longer, never shorter.

use std::collections::HashMap;

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    heartbeat_extends_leases_and_reports_lost_and_cancelled,
    heartbeat_tells_a_vanished_job_from_a_stale_lease,
    heartbeat_after_the_holders_own_outcome_is_finished_not_lost,
    reap_recovers_expired_leases_and_dead_letters_on_third_stall,
    reap_trims_old_dead_letters,
    a_stalled_job_is_leased_in_a_batch_of_its_own,
    a_held_reap_claim_makes_other_reapers_skip,
);

async fn heartbeat_extends_leases_and_reports_lost_and_cancelled(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1), job("b", 1)]).await.unwrap();
    let got = b.fetch(Q, Want::jobs(2), 100, "w").await.unwrap();
    let (a, bj) = (&got.jobs[0], &got.jobs[1]);
    let stale = Lease {
        id: "b".into(),
        token: bj.token + 7,
    };
    let gone = Lease {
        id: "zzz".into(),
        token: 1,
    };
    let hb = b
        .heartbeat(Q, vec![lease(a), stale, gone], 10_000)
        .await
        .unwrap();
    // A stale token is a lost lease; a job without a record is gone (the broker lost its data).
    assert_eq!(
        (hb.lost, hb.gone),
        (vec!["b".to_string()], vec!["zzz".to_string()])
    );
    assert!(hb.cancel.is_empty() && hb.finished.is_empty());
    c.pass(150).await;
    let reaped = b.reap(Q, 60_000).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (1, 0),
        "only b's lease expired"
    );
    assert_eq!(state(b, "a").await, JobState::Running);
    assert_eq!(state(b, "b").await, JobState::Queued);

    assert_eq!(b.cancel(Q, "a").await.unwrap(), CancelOutcome::Requested);
    let hb = b
        .heartbeat(Q, vec![lease(a), lease(bj)], 10_000)
        .await
        .unwrap();
    assert_eq!(
        (hb.lost, hb.cancel),
        (vec!["b".to_string()], vec!["a".to_string()])
    );
}

async fn heartbeat_tells_a_vanished_job_from_a_stale_lease(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let got = fetch(b, 1).await;
    // The record vanishes as after a flush or a failover that lost data.
    let deleted: i64 = c.raw(&["DEL", &job_key("a")]).await;
    assert_eq!(deleted, 1);
    let hb = b
        .heartbeat(Q, vec![lease(&got.jobs[0])], 10_000)
        .await
        .unwrap();
    assert_eq!((hb.lost.len(), hb.gone), (0, vec!["a".to_string()]));
}

async fn heartbeat_after_the_holders_own_outcome_is_finished_not_lost(c: Ctx) {
    let b = &c.b;
    let jobs = vec![job("a", 1), job("b", 1), job("c", 1), job("d", 1)];
    b.enqueue(Q, jobs).await.unwrap();
    let got = fetch(b, 4).await;
    let j = &got.jobs;
    b.ack(Q, vec![ack_of(&j[0], b"")]).await.unwrap();
    b.fail(Q, vec![fail_of(&j[1], Some(1000))]).await.unwrap();
    b.fail(Q, vec![fail_of(&j[2], None)]).await.unwrap();
    b.release(Q, vec![lease(&j[3])]).await.unwrap();
    let hb = b
        .heartbeat(Q, j.iter().map(lease).collect(), 10_000)
        .await
        .unwrap();
    // A release bumps the token like a takeover: the broker cannot tell those apart.
    assert_eq!(hb.finished, ["a", "b", "c"]);
    assert_eq!((hb.lost, hb.gone.len()), (vec!["d".to_string()], 0));
}

async fn reap_recovers_expired_leases_and_dead_letters_on_third_stall(c: Ctx) {
    let b = &c.b;
    let jobs = vec![with_attempts(job("a", 1), 2), job("b", 1)];
    b.enqueue(Q, jobs).await.unwrap();
    let first = lease_one(b, 30).await;
    c.pass(60).await;
    assert_eq!(
        b.reap(Q, 60_000).await.unwrap(),
        ReapOutcome {
            requeued: 1,
            dead: 0,
            skipped: false
        }
    );
    assert_eq!(
        b.ack(Q, vec![ack_of(&first, b"")]).await.unwrap(),
        [false],
        "old token refused"
    );
    assert_eq!(
        b.fail(Q, vec![fail_of(&first, None)]).await.unwrap(),
        [FailOutcome::Stale]
    );

    let second = lease_one(b, 30).await;
    assert_eq!(
        (second.id.as_str(), second.attempt),
        ("a", 2),
        "back at its original place"
    );
    c.pass(60).await;
    let reaped = b.reap(Q, 60_000).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (1, 0),
        "stalls are not retries"
    );
    let third = lease_one(b, 30).await;
    assert_eq!((third.id.as_str(), third.attempt), ("a", 3));
    c.pass(60).await;
    let reaped = b.reap(Q, 60_000).await.unwrap();
    assert_eq!(
        (reaped.requeued, reaped.dead),
        (0, 1),
        "third stall dead-letters"
    );
    assert_eq!(
        b.fail(Q, vec![fail_of(&third, None)]).await.unwrap(),
        [FailOutcome::Stale]
    );
    let info = b.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    let record: HashMap<String, String> = rmp_serde::from_slice(&info.error.unwrap()).unwrap();
    assert_eq!(record["type"], "LeaseExpired");
    assert_eq!(record["reason"], "lease_expired");
    assert_eq!(record["traceback"], "");
    assert!(record.contains_key("message"));
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a"]);
    assert_eq!(b.counts(Q).await.unwrap().dead, 1);
}

async fn reap_trims_old_dead_letters(c: Ctx) {
    let b = &c.b;
    make_dead(b, &["a"]).await;
    c.pass(1_500).await;
    make_dead(b, &["b"]).await;
    // "a" died 1.5 s ago, "b" just now: a 1 s TTL trims only "a" (a full second of margin for
    // "b", so a stalled test on a busy machine still reaps it before it is due).
    b.reap(Q, 1_000).await.unwrap();
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["b"]);
    assert!(b.job(Q, "a").await.unwrap().is_none());
    c.pass(1_100).await;
    b.reap(Q, 1_000).await.unwrap();
    assert!(b.dead_ids(Q, 10).await.unwrap().is_empty());
    assert!(b.job(Q, "b").await.unwrap().is_none());
}

async fn a_stalled_job_is_leased_in_a_batch_of_its_own(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("x", 0), job("s", 0), job("y", 0)])
        .await
        .unwrap();
    let first = b.fetch(Q, Want::jobs(2), 30, "w").await.unwrap();
    assert_eq!(ids(&first), ["x", "s"]);
    b.ack(Q, vec![ack_of(&first.jobs[0], b"")]).await.unwrap();
    c.pass(60).await;
    assert_eq!(b.reap(Q, 60_000).await.unwrap().requeued, 1);
    b.enqueue(Q, vec![job("h", 9)]).await.unwrap();
    assert_eq!(
        ids(&fetch(b, 10).await),
        ["h"],
        "stops before the stalled job"
    );
    assert_eq!(ids(&fetch(b, 10).await), ["s"], "the stalled job alone");
    assert_eq!(ids(&fetch(b, 10).await), ["y"]);
}

async fn a_held_reap_claim_makes_other_reapers_skip(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 0)]).await.unwrap();
    lease_one(b, 30).await;
    c.pass(60).await;
    let claim = |who: &str| ReapClaim {
        claim_ms: 400,
        claimant: who.into(),
    };
    let first = b.reap_claimed(Q, 60_000, &claim("w1")).await.unwrap();
    assert_eq!((first.requeued, first.skipped), (1, false));
    // Another worker's reaper within the claim does nothing, even with work to do.
    lease_one(b, 30).await;
    c.pass(60).await;
    let second = b.reap_claimed(Q, 60_000, &claim("w2")).await.unwrap();
    assert_eq!((second.requeued, second.skipped), (0, true));
    let holder: String = c.raw(&["GET", "asyncq:{q#0}:reaping"]).await;
    assert_eq!(holder, "w1");
    // An unclaimed reap (admin, tests) ignores the claim; once the claim expired, w2 reaps.
    assert_eq!(b.reap(Q, 60_000).await.unwrap().requeued, 1);
    lease_one(b, 30).await;
    c.pass(450).await;
    let third = b.reap_claimed(Q, 60_000, &claim("w2")).await.unwrap();
    // The job's third lease expiry: it is dead-lettered, which shows that w2 did reap.
    assert_eq!((third.dead, third.skipped), (1, false));
}
