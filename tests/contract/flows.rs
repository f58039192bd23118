//! Flows: members written 'waiting' are released when every parent delivered, with the
//! parents' results as their input; deliveries to another queue go through the outbox and the
//! relay, and a duplicate delivery is absorbed; a parent's failure follows its policy.

use std::sync::Arc;

use _core::broker::*;

use crate::contract;
use crate::harness::*;

contract!(
    a_chain_step_runs_with_its_parents_result,
    a_chord_across_queues_gets_every_result_in_member_order_once,
    a_failed_member_fails_what_waits_on_it_down_the_chain,
    continue_hands_on_a_failed_value_and_ignore_leaves_the_member_out,
    a_cancelled_waiting_member_fails_its_children,
    a_batch_takes_more_jobs_until_its_callbacks_are_released,
    a_relay_leaves_an_outbox_another_relay_holds,
);

/// msgpack of a short string (what a task's encoded result looks like).
fn packed(s: &str) -> Vec<u8> {
    let mut v = vec![0xa0 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn member(id: &str, parents: u32, mode: InputMode, follow_ups: Vec<FollowUp>) -> FlowMember {
    FlowMember {
        job: with_attempts(job(id, 0), 1),
        parents,
        mode,
        follow_ups,
    }
}

fn edge(queue: &str, child: &str, index: u32, policy: OnFailure) -> FollowUp {
    FollowUp {
        queue: queue.into(),
        child: child.into(),
        index,
        policy,
    }
}

async fn run_one(b: &Arc<dyn Broker>, queue: &str, result: &str) -> Leased {
    let got = b.fetch(queue, Want::jobs(1), 30_000, "w").await.unwrap();
    let leased = got.jobs.into_iter().next().expect("a job to run");
    let acked = b
        .ack(queue, vec![ack_of(&leased, &packed(result))])
        .await
        .unwrap();
    assert_eq!(acked, [true]);
    leased
}

async fn fail_one(b: &Arc<dyn Broker>, queue: &str) -> Leased {
    let got = b.fetch(queue, Want::jobs(1), 30_000, "w").await.unwrap();
    let leased = got.jobs.into_iter().next().expect("a job to run");
    let mut f = fail_of(&leased, None);
    f.error = _core::codec::ErrorRecord {
        kind: "ValueError".into(),
        message: "bad input".into(),
        traceback: String::new(),
        reason: "error".into(),
    }
    .to_bytes();
    assert_eq!(b.fail(queue, vec![f]).await.unwrap(), [FailOutcome::Dead]);
    leased
}

async fn a_chain_step_runs_with_its_parents_result(c: Ctx) {
    let b = &c.b;
    let members = vec![
        member("b", 1, InputMode::One, vec![]),
        member(
            "a",
            0,
            InputMode::One,
            vec![edge(Q, "b", 0, OnFailure::Fail)],
        ),
    ];
    let made = b.enqueue_flow(Q, members.clone()).await.unwrap();
    assert!(made.iter().all(|e| e.created));
    // Resent: nothing is written twice.
    assert!(b
        .enqueue_flow(Q, members)
        .await
        .unwrap()
        .iter()
        .all(|e| !e.created));
    assert_eq!(state(b, "b").await, JobState::Waiting);
    let a = run_one(b, Q, "ra").await;
    assert_eq!((a.id.as_str(), a.input.as_deref()), ("a", None));
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["b"]);
    assert_eq!(got.jobs[0].input.as_deref(), Some(&packed("ra")[..]));
}

async fn a_chord_across_queues_gets_every_result_in_member_order_once(c: Ctx) {
    let b = &c.b;
    let h = "header";
    b.enqueue_flow(Q, vec![member("cb", 3, InputMode::List, vec![])])
        .await
        .unwrap();
    let header: Vec<FlowMember> = (0..3)
        .map(|i| {
            let m = member(&format!("m{i}"), 0, InputMode::One, vec![]);
            FlowMember {
                follow_ups: vec![edge(Q, "cb", i, OnFailure::Fail)],
                ..m
            }
        })
        .collect();
    b.enqueue_flow(h, header).await.unwrap();
    // Members finish out of order; the ack relays each result to the other queue at once.
    let got = b.fetch(h, Want::jobs(3), 30_000, "w").await.unwrap();
    let by_id = |id: &str| got.jobs.iter().find(|j| j.id == id).unwrap().clone();
    for (id, r) in [("m2", "z"), ("m0", "x")] {
        let acked = b
            .ack(h, vec![ack_of(&by_id(id), &packed(r))])
            .await
            .unwrap();
        assert_eq!(acked, [true]);
    }
    assert_eq!(state(b, "cb").await, JobState::Waiting);
    // A delivery made twice (a relay that died before trimming) is absorbed.
    // (Its value, the msgpack integer 7, differs from the first delivery's.)
    let entry = format!("{Q}\tcb\t2\tv\tm2\t\x07");
    c.raw::<i64>(&["RPUSH", "asyncq:{header#0}:outbox", &entry])
        .await;
    assert_eq!(b.relay(h).await.unwrap(), 1);
    assert_eq!(state(b, "cb").await, JobState::Waiting);
    b.ack(h, vec![ack_of(&by_id("m1"), &packed("y"))])
        .await
        .unwrap();
    let cb = fetch(b, 10).await;
    assert_eq!(ids(&cb), ["cb"]);
    // A msgpack array of the three results, in member order.
    let mut want = vec![0x93];
    for r in ["x", "y", "z"] {
        want.extend(packed(r));
    }
    assert_eq!(cb.jobs[0].input.as_deref(), Some(&want[..]));
    let empty: i64 = c.raw(&["LLEN", "asyncq:{header#0}:outbox"]).await;
    assert_eq!(empty, 0);
}

async fn a_failed_member_fails_what_waits_on_it_down_the_chain(c: Ctx) {
    let b = &c.b;
    let other = "other";
    // a (Q) -> b (other) -> c (Q): the failure crosses queues twice.
    b.enqueue_flow(Q, vec![member("c", 1, InputMode::One, vec![])])
        .await
        .unwrap();
    b.enqueue_flow(
        other,
        vec![member(
            "b",
            1,
            InputMode::One,
            vec![edge(Q, "c", 0, OnFailure::Fail)],
        )],
    )
    .await
    .unwrap();
    b.enqueue_flow(
        Q,
        vec![member(
            "a",
            0,
            InputMode::One,
            vec![edge(other, "b", 0, OnFailure::Fail)],
        )],
    )
    .await
    .unwrap();
    let heard = b.watch_end(Q, "c").await.unwrap();
    fail_one(b, Q).await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(5), heard)
            .await
            .is_ok()
    );
    for (q, id) in [(other, "b"), (Q, "c")] {
        let info = b.job(q, id).await.unwrap().unwrap();
        assert_eq!(info.state, JobState::Dead, "{id}");
        let err = String::from_utf8_lossy(info.error.as_deref().unwrap()).into_owned();
        assert!(
            err.contains("upstream_failed") && err.contains("flow member"),
            "{err}"
        );
    }
    assert!(fetch(b, 10).await.jobs.is_empty());
    assert!(b
        .fetch(other, Want::jobs(10), 30_000, "w")
        .await
        .unwrap()
        .jobs
        .is_empty());
    // Never-run members are not dead letters to retry.
    assert_eq!(b.dead_ids(Q, 10).await.unwrap(), ["a"]);
}

async fn continue_hands_on_a_failed_value_and_ignore_leaves_the_member_out(c: Ctx) {
    let b = &c.b;
    b.enqueue_flow(
        Q,
        vec![
            member("next", 1, InputMode::One, vec![]),
            member("cb", 2, InputMode::List, vec![]),
            member(
                "a",
                0,
                InputMode::One,
                vec![edge(Q, "next", 0, OnFailure::Continue)],
            ),
        ],
    )
    .await
    .unwrap();
    fail_one(b, Q).await;
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["next"]);
    let input = got.jobs[0].input.clone().unwrap();
    let text = String::from_utf8_lossy(&input);
    assert!(
        text.contains("__asyncq_failed__") && text.contains("ValueError"),
        "{text}"
    );
    // A chord whose first member's failure is ignored gets the other result alone.
    b.enqueue_flow(
        Q,
        vec![
            member(
                "m0",
                0,
                InputMode::One,
                vec![edge(Q, "cb", 0, OnFailure::Ignore)],
            ),
            member(
                "m1",
                0,
                InputMode::One,
                vec![edge(Q, "cb", 1, OnFailure::Ignore)],
            ),
        ],
    )
    .await
    .unwrap();
    fail_one(b, Q).await;
    run_one(b, Q, "ok").await;
    let cb = fetch(b, 10).await;
    assert_eq!(ids(&cb), ["cb"]);
    let mut want = vec![0x91];
    want.extend(packed("ok"));
    assert_eq!(cb.jobs[0].input.as_deref(), Some(&want[..]));
}

async fn a_cancelled_waiting_member_fails_its_children(c: Ctx) {
    let b = &c.b;
    b.enqueue_flow(
        Q,
        vec![
            member("c", 1, InputMode::One, vec![]),
            member(
                "b",
                1,
                InputMode::One,
                vec![edge(Q, "c", 0, OnFailure::Fail)],
            ),
            member(
                "a",
                0,
                InputMode::One,
                vec![edge(Q, "b", 0, OnFailure::Fail)],
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(b.cancel(Q, "b").await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(state(b, "b").await, JobState::Cancelled);
    assert_eq!(state(b, "c").await, JobState::Dead);
    // The parent still runs; its delivery to the cancelled member is absorbed.
    run_one(b, Q, "ra").await;
    assert!(fetch(b, 10).await.jobs.is_empty());
}

async fn a_batch_takes_more_jobs_until_its_callbacks_are_released(c: Ctx) {
    let b = &c.b;
    let cbs = vec!["done".to_owned()];
    b.enqueue_flow(
        Q,
        vec![
            member("done", 1, InputMode::List, vec![]),
            member(
                "j0",
                0,
                InputMode::One,
                vec![edge(Q, "done", 0, OnFailure::Continue)],
            ),
        ],
    )
    .await
    .unwrap();
    // Room first (the callback now waits on 3), then the jobs, at the positions returned.
    assert_eq!(b.batch_add(Q, &cbs, 2).await.unwrap(), Some(1));
    b.enqueue_flow(
        Q,
        vec![
            member(
                "j1",
                0,
                InputMode::One,
                vec![edge(Q, "done", 1, OnFailure::Continue)],
            ),
            member(
                "j2",
                0,
                InputMode::One,
                vec![edge(Q, "done", 2, OnFailure::Continue)],
            ),
        ],
    )
    .await
    .unwrap();
    for r in ["a", "b"] {
        run_one(b, Q, r).await;
    }
    assert_eq!(state(b, "done").await, JobState::Waiting);
    run_one(b, Q, "c").await;
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["done"]);
    let mut want = vec![0x93];
    for r in ["a", "b", "c"] {
        want.extend(packed(r));
    }
    assert_eq!(got.jobs[0].input.as_deref(), Some(&want[..]));
    // Released: the batch is over.
    assert_eq!(b.batch_add(Q, &cbs, 1).await.unwrap(), None);
}

async fn a_relay_leaves_an_outbox_another_relay_holds(c: Ctx) {
    let b = &c.b;
    b.enqueue_flow(Q, vec![member("cb", 1, InputMode::One, vec![])])
        .await
        .unwrap();
    let entry = format!("{Q}\tcb\t0\tv\tparent\t\x07");
    c.raw::<i64>(&["RPUSH", "asyncq:{src#0}:outbox", &entry])
        .await;
    // Another relay (another process, or another call of this one) is at work on it: this
    // one neither delivers nor trims what that one may have read.
    c.raw::<String>(&["SET", "asyncq:{src#0}:relaying", "someone", "PX", "60000"])
        .await;
    assert_eq!(b.relay("src").await.unwrap(), 0);
    let kept: i64 = c.raw(&["LLEN", "asyncq:{src#0}:outbox"]).await;
    assert_eq!(kept, 1);
    assert_eq!(state(b, "cb").await, JobState::Waiting);
    // Its claim gone (ended, or expired with a dead relay), the entry is delivered.
    c.raw::<i64>(&["DEL", "asyncq:{src#0}:relaying"]).await;
    assert_eq!(b.relay("src").await.unwrap(), 1);
    let got = fetch(b, 10).await;
    assert_eq!(ids(&got), ["cb"]);
    assert_eq!(got.jobs[0].input.as_deref(), Some(&[0x07][..]));
}
