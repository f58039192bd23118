//! Limits and groups in the scripts (lib/common.lua, "Groups and limiters"): a group's jobs
//! are leased only while its limiters have room, a full limiter parks the group without
//! holding up other jobs, every end of a run frees its slot, and groups take turns.

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    a_concurrency_slot_comes_back_from_every_end_of_a_run,
    a_full_limiter_parks_its_group_and_other_jobs_go_on,
    a_rate_limiter_spaces_starts_and_wakes_its_group_when_due,
    fair_groups_take_turns_within_a_batch,
    a_grouped_job_without_a_free_thread_keeps_its_place,
    a_pushed_back_key_holds_its_jobs_and_its_slots_stay_counted,
    an_override_is_merged_part_by_part_in_the_script,
);

/// A job in group `gid` under the limiters `insts`; quota '' (no bound) unless given.
fn grouped(id: &str, gid: &str, quota: &str, insts: &[&str]) -> NewJob {
    let mut spec = format!("{gid}\t{quota}");
    for inst in insts {
        spec.push('\t');
        spec.push_str(inst);
    }
    NewJob {
        group: Some(spec),
        ..job(id, 1)
    }
}

async fn declare(b: &std::sync::Arc<dyn Broker>, family: &str, settings: &str) {
    b.set_limits(Q, LimitOp::Declare, vec![(family.into(), settings.into())])
        .await
        .unwrap();
}

async fn a_concurrency_slot_comes_back_from_every_end_of_a_run(c: Ctx) {
    let b = &c.b;
    declare(b, "t:one", "c=1").await;
    let jobs = (0..5).map(|i| grouped(&format!("j{i}"), "one", "", &["t:one"]));
    b.enqueue(Q, jobs.collect()).await.unwrap();
    // ack, fail with a retry, release, and lease expiry each free the one slot.
    let first = fetch(b, 10).await;
    assert_eq!(ids(&first), ["j0"], "one slot");
    assert!(fetch(b, 10).await.jobs.is_empty(), "the slot is taken");
    b.ack(Q, vec![ack_of(&first.jobs[0], b"")]).await.unwrap();
    let second = fetch(b, 10).await;
    assert_eq!(ids(&second), ["j1"]);
    b.fail(Q, vec![fail_of(&second.jobs[0], Some(60_000))])
        .await
        .unwrap();
    let third = fetch(b, 10).await;
    assert_eq!(ids(&third), ["j2"]);
    b.release(Q, vec![lease(&third.jobs[0])]).await.unwrap();
    // Released first in line: j2 again, now under a short lease that expires.
    let fourth = b.fetch(Q, Want::jobs(10), 100, "w").await.unwrap();
    assert_eq!(ids(&fourth), ["j2"]);
    c.pass(200).await;
    b.reap(Q, 60_000).await.unwrap();
    assert_eq!(
        ids(&fetch(b, 10).await),
        ["j2"],
        "the expired lease freed the slot"
    );
    let shown = b.limits(Q).await.unwrap();
    assert_eq!((shown[0].family.as_str(), shown[0].running), ("t:one", 1));
}

async fn a_full_limiter_parks_its_group_and_other_jobs_go_on(c: Ctx) {
    let b = &c.b;
    declare(b, "k:t:tenant", "c=1").await;
    let mut jobs: Vec<NewJob> = (0..3)
        .map(|i| grouped(&format!("a{i}"), "t|tenant=a", "", &["k:t:tenant=a"]))
        .collect();
    jobs.push(job("plain", 1));
    jobs.push(grouped("b0", "t|tenant=b", "", &["k:t:tenant=b"]));
    b.enqueue(Q, jobs).await.unwrap();
    let out = fetch(b, 10).await;
    let mut got = ids(&out);
    got.sort();
    // One of a's, the plain job and b's: a's limiter is full, its other jobs wait parked.
    assert_eq!(got, ["a0", "b0", "plain"]);
    assert!(fetch(b, 10).await.jobs.is_empty());
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.queued, counts.running), (2, 3));
    // Listed though parked: the group's jobs, in order.
    let listed = b.job_ids(Q, JobSet::Queued, 0, 10).await.unwrap();
    assert_eq!(listed, ["a1", "a2"]);
    let a0 = out.jobs.iter().find(|j| j.id == "a0").unwrap();
    b.ack(Q, vec![ack_of(a0, b"")]).await.unwrap();
    assert_eq!(
        ids(&fetch(b, 10).await),
        ["a1"],
        "the freed slot woke the group"
    );
}

async fn a_rate_limiter_spaces_starts_and_wakes_its_group_when_due(c: Ctx) {
    let b = &c.b;
    // memory://: only `pass` moves the clock. 10 per second, no burst: one start per 100 ms.
    c.freeze();
    declare(b, "t:r", "r=10 p=1000 b=0").await;
    let jobs = (0..3).map(|i| grouped(&format!("r{i}"), "r", "", &["t:r"]));
    b.enqueue(Q, jobs.collect()).await.unwrap();
    let first = fetch(b, 10).await;
    let started = std::time::Instant::now();
    assert_eq!(ids(&first), ["r0"]);
    // The group waits for the limiter, and the worker is told when to look again.
    let next = fetch(b, 10).await;
    assert!(next.jobs.is_empty());
    let due = next.next_due_us.expect("the limiter's due time");
    // Due times are whole ms, rounded up: up to 1 ms past the 100 ms.
    assert!(due > 0 && due <= 101_000, "{due}");
    c.pass(60).await;
    let mid = fetch(b, 10).await;
    if mid.jobs.is_empty() {
        c.pass(60).await;
        assert_eq!(ids(&fetch(b, 10).await), ["r1"]);
    } else {
        // On Redis time runs on, and on a loaded machine 60 ms of sleep can take longer: r1
        // may start here, but only once its 100 ms have passed (95 ms as this process
        // measures it, less the reply's way back). On the memory clock, never.
        let waited = started.elapsed();
        assert!(
            !c.exact_clock() && waited >= std::time::Duration::from_millis(95),
            "r1 started {waited:?} after r0, before its 100 ms"
        );
        assert_eq!(ids(&mid), ["r1"]);
    }
}

async fn fair_groups_take_turns_within_a_batch(c: Ctx) {
    let b = &c.b;
    // Tenant a's 20 jobs were enqueued before b's 3 and c's 1; quota 1 each (weight 1), but
    // a weight of 2 for c.
    let mut jobs: Vec<NewJob> = (0..20)
        .map(|i| grouped(&format!("a{i:02}"), "f|^t=a", "1", &[]))
        .collect();
    jobs.extend((0..3).map(|i| grouped(&format!("b{i}"), "f|^t=b", "1", &[])));
    jobs.extend((0..3).map(|i| grouped(&format!("c{i}"), "f|^t=c", "2", &[])));
    b.enqueue(Q, jobs).await.unwrap();
    let out = fetch(b, 9).await;
    // Turns: a, b, c c, a, b, c, a, b: round-robin, c taking two per turn.
    assert_eq!(
        ids(&out),
        ["a00", "b0", "c0", "c1", "a01", "b1", "c2", "a02", "b2"]
    );
    let counts = b.counts(Q).await.unwrap();
    assert_eq!(counts.queued, 26 - 9);
    // The listing expands each group into its jobs, never showing a group's member.
    let mut listed = Vec::new();
    for page in 0..4 {
        listed.extend(b.job_ids(Q, JobSet::Queued, page * 5, 5).await.unwrap());
    }
    assert_eq!(listed.len(), 17);
    assert!(listed.iter().all(|id| !id.starts_with('~')), "{listed:?}");
    assert_eq!(listed[..3], ["a03", "a04", "a05"]);
}

async fn a_grouped_job_without_a_free_thread_keeps_its_place(c: Ctx) {
    let b = &c.b;
    declare(b, "t:th", "c=10").await;
    let jobs = (0..4).map(|i| {
        run_in(
            grouped(&format!("t{i}"), "th", "", &["t:th"]),
            Executor::Thread,
        )
    });
    b.enqueue(Q, jobs.collect()).await.unwrap();
    let want = Want {
        jobs: 10,
        threads: Some(1),
        processes: None,
    };
    // One thread free: one job leased (and counted), the rest keep their order and the
    // group its place; the fetch says a job was held for want of a slot.
    let out = fetch_as(b, want).await;
    assert_eq!(ids(&out), ["t0"]);
    assert!(out.held);
    assert_eq!(b.limits(Q).await.unwrap()[0].running, 1);
    assert_eq!(
        b.job_ids(Q, JobSet::Queued, 0, 10).await.unwrap(),
        ["t1", "t2", "t3"]
    );
    let counts = b.counts(Q).await.unwrap();
    assert_eq!((counts.queued, counts.running), (3, 1));
    assert_eq!(ids(&fetch(b, 10).await), ["t1", "t2", "t3"]);
}

async fn a_pushed_back_key_holds_its_jobs_and_its_slots_stay_counted(c: Ctx) {
    let b = &c.b;
    declare(b, "k:t:tenant", "c=5").await;
    let jobs = (0..3).map(|i| grouped(&format!("x{i}"), "t|tenant=x", "", &["k:t:tenant=x"]));
    b.enqueue(Q, jobs.collect()).await.unwrap();
    let out = fetch(b, 2).await;
    assert_eq!(ids(&out), ["x0", "x1"]);
    // x0 pushes its key back for 300 ms (`rate_limited`): it goes back first in line, no job
    // of the key starts meanwhile, and x1's slot stays counted (its state must not expire).
    let push = Snooze {
        lease: lease(&out.jobs[0]),
        delay_ms: 300,
        push_key: true,
    };
    assert_eq!(b.snooze(Q, vec![push]).await.unwrap(), vec![true]);
    assert!(fetch(b, 10).await.jobs.is_empty(), "the key is held");
    let ttl: i64 = c.raw(&["PTTL", "asyncq:{q#0}:lim:k:t:tenant=x"]).await;
    assert_eq!(ttl, -1, "a limiter with a run holding a slot never expires");
    assert_eq!(state(b, "x0").await, JobState::Queued);
    c.pass(350).await;
    assert_eq!(ids(&fetch(b, 10).await), ["x0", "x2"]);
}

async fn an_override_is_merged_part_by_part_in_the_script(c: Ctx) {
    let b = &c.b;
    let fam = "t:work";
    let set = |parts: &str| b.set_limits(Q, LimitOp::Set, vec![(fam.into(), parts.into())]);
    let overridden = || async {
        let rows = b.limits(Q).await.unwrap();
        rows.into_iter()
            .find(|r| r.family == fam)
            .map(|r| r.overridden)
            .unwrap_or_default()
    };
    b.set_limits(Q, LimitOp::Declare, vec![(fam.into(), "c=5".into())])
        .await
        .unwrap();
    assert_eq!(set("c=2").await.unwrap(), 1);
    assert_eq!(set("r=10 p=1000 b=0").await.unwrap(), 1);
    assert_eq!(
        overridden().await,
        "c=2 r=10 p=1000 b=0",
        "merged, not replaced"
    );
    assert_eq!(set("c=2").await.unwrap(), 0, "unchanged");
    assert_eq!(set("r=-1 p=- b=-").await.unwrap(), 1);
    assert_eq!(
        overridden().await,
        "c=2 r=-1",
        "a rate turned off keeps no period"
    );
    assert_eq!(set("c=- r=-").await.unwrap(), 1);
    assert_eq!(overridden().await, "", "an emptied override is dropped");
}
