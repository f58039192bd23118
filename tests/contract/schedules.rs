//! Periodic schedules: each fire time is taken once however many schedulers ask, never before
//! it is due by the broker's clock; pause, overlap "skip" and passing over are recorded as
//! takes too, so no later call can enqueue a fire time already decided.

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    a_fire_time_is_taken_once,
    a_fire_time_is_not_taken_early,
    an_older_fire_time_cannot_be_taken_after_a_newer_one,
    a_paused_schedule_passes_its_fire_times,
    overlap_skip_waits_for_the_previous_job,
    passing_takes_the_time_without_a_job,
    a_removed_schedule_fires_nothing,
    sync_keeps_the_fire_state_and_lists_it,
);

const S: &str = "nightly";

/// The job of fire time `ms`, named as the Python side names it.
fn fire_at(ms: u64, mode: FireMode) -> Fire {
    let mut job = job(&format!("sched:{S}:{ms}"), 0);
    job.max_attempts = 1;
    Fire {
        schedule: S.into(),
        fire_ms: ms,
        mode,
        job,
    }
}

/// Store the schedule; returns its start (the broker's now).
async fn stored(b: &std::sync::Arc<dyn Broker>) -> u64 {
    b.sync_schedule(Q, S, r#"{"every": 1}"#).await.unwrap().0
}

async fn a_fire_time_is_taken_once(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    c.pass(5).await;
    let t = start + 1;
    let first = b.fire(Q, fire_at(t, FireMode::Allow)).await.unwrap();
    assert_eq!(first, FireOutcome::Enqueued);
    for _ in 0..3 {
        let again = b.fire(Q, fire_at(t, FireMode::Allow)).await.unwrap();
        assert_eq!(again, FireOutcome::Taken { last_ms: t });
    }
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), [format!("sched:{S}:{t}")]);
    let listed = b.schedules(Q).await.unwrap();
    assert_eq!((listed[0].fired, listed[0].last_ms), (1, t));
    assert_eq!(listed[0].job.as_deref(), Some(&*format!("sched:{S}:{t}")));
}

async fn a_fire_time_is_not_taken_early(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    // An hour ahead of the broker's clock: a scheduler whose own clock runs fast.
    let early = b
        .fire(Q, fire_at(start + 3_600_000, FireMode::Allow))
        .await
        .unwrap();
    let FireOutcome::Early { now_ms } = early else {
        panic!("{early:?}")
    };
    assert!(now_ms >= start && now_ms < start + 3_600_000);
    assert!(fetch(b, 10).await.jobs.is_empty());
}

async fn an_older_fire_time_cannot_be_taken_after_a_newer_one(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    c.pass(10).await;
    let newer = b
        .fire(Q, fire_at(start + 5, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(newer, FireOutcome::Enqueued);
    // A scheduler that fell behind asks for an older time: refused, nothing enqueued.
    let older = b
        .fire(Q, fire_at(start + 2, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(older, FireOutcome::Taken { last_ms: start + 5 });
    assert_eq!(fetch(b, 10).await.jobs.len(), 1);
}

async fn a_paused_schedule_passes_its_fire_times(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    assert!(b
        .change_schedule(Q, S, ScheduleChange::Pause)
        .await
        .unwrap());
    c.pass(5).await;
    let paused = b
        .fire(Q, fire_at(start + 1, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(paused, FireOutcome::Paused);
    assert!(b
        .change_schedule(Q, S, ScheduleChange::Resume)
        .await
        .unwrap());
    // The time passed while paused stays passed: a resume does not catch up on the pause.
    let again = b
        .fire(Q, fire_at(start + 1, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(again, FireOutcome::Taken { last_ms: start + 1 });
    let next = b
        .fire(Q, fire_at(start + 2, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(next, FireOutcome::Enqueued);
    assert_eq!(b.schedules(Q).await.unwrap()[0].skipped, 1);
}

async fn overlap_skip_waits_for_the_previous_job(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    c.pass(10).await;
    let one = b.fire(Q, fire_at(start + 1, FireMode::Skip)).await.unwrap();
    assert_eq!(one, FireOutcome::Enqueued);
    // Still queued: the next fire is passed over.
    let two = b.fire(Q, fire_at(start + 2, FireMode::Skip)).await.unwrap();
    assert_eq!(two, FireOutcome::Overlap);
    // Running: passed over too.
    let leased = lease_one(b, 30_000).await;
    let three = b.fire(Q, fire_at(start + 3, FireMode::Skip)).await.unwrap();
    assert_eq!(three, FireOutcome::Overlap);
    // Finished: the next one fires.
    assert_eq!(b.ack(Q, vec![ack_of(&leased, b"r")]).await.unwrap(), [true]);
    let four = b.fire(Q, fire_at(start + 4, FireMode::Skip)).await.unwrap();
    assert_eq!(four, FireOutcome::Enqueued);
    // With overlap allowed, an unfinished job does not matter.
    let five = b
        .fire(Q, fire_at(start + 5, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(five, FireOutcome::Enqueued);
    let listed = b.schedules(Q).await.unwrap();
    assert_eq!((listed[0].fired, listed[0].skipped), (3, 2));
}

async fn passing_takes_the_time_without_a_job(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    c.pass(5).await;
    let passed = b.fire(Q, fire_at(start + 1, FireMode::Pass)).await.unwrap();
    assert_eq!(passed, FireOutcome::Passed);
    let again = b
        .fire(Q, fire_at(start + 1, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(again, FireOutcome::Taken { last_ms: start + 1 });
    assert!(fetch(b, 10).await.jobs.is_empty());
}

async fn a_removed_schedule_fires_nothing(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    assert!(b
        .change_schedule(Q, S, ScheduleChange::Remove)
        .await
        .unwrap());
    assert!(!b
        .change_schedule(Q, S, ScheduleChange::Remove)
        .await
        .unwrap());
    assert!(!b
        .change_schedule(Q, S, ScheduleChange::Pause)
        .await
        .unwrap());
    c.pass(5).await;
    let gone = b
        .fire(Q, fire_at(start + 1, FireMode::Allow))
        .await
        .unwrap();
    assert_eq!(gone, FireOutcome::Removed);
    assert!(fetch(b, 10).await.jobs.is_empty());
    assert!(b.schedules(Q).await.unwrap().is_empty());
}

async fn sync_keeps_the_fire_state_and_lists_it(c: Ctx) {
    let b = &c.b;
    let start = stored(b).await;
    c.pass(5).await;
    b.fire(Q, fire_at(start + 1, FireMode::Allow))
        .await
        .unwrap();
    b.change_schedule(Q, S, ScheduleChange::Pause)
        .await
        .unwrap();
    // A restarted scheduler stores a new definition: the fire state and the pause survive.
    let (last, paused) = b.sync_schedule(Q, S, r#"{"every": 2}"#).await.unwrap();
    assert_eq!((last, paused), (start + 1, true));
    b.sync_schedule(Q, "another", "{}").await.unwrap();
    let listed = b.schedules(Q).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["another", S]);
    assert_eq!(listed[1].def, r#"{"every": 2}"#);
    assert!(listed[1].paused && !listed[0].paused);
    assert!(b.queues().await.unwrap().contains(&Q.to_owned()));
    let bad = b.sync_schedule(Q, "no spaces", "{}").await;
    assert!(bad.is_err());
}
