//! Progress reports and event messages (`progress.lua`, `watch.lua`, `tell` in
//! `lib/common.lua`): reports are fenced by the lease and bounded per job; state changes are
//! published only while the queue is watched, one message per script call, in call order.

use std::time::Duration;

use _core::broker::*;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::contract;
use crate::harness::*;

contract!(
    a_report_is_kept_only_under_the_runs_own_lease,
    a_record_keeps_the_last_reports_only,
    an_unwatched_queue_publishes_no_state_change,
    a_watched_queue_publishes_each_change_in_order,
    a_watch_mark_expires,
);

fn report(l: &Leased, fraction: f64, message: Option<&str>) -> ProgressReport {
    ProgressReport {
        lease: lease(l),
        fraction,
        message: message.map(str::to_owned),
    }
}

/// Every message that arrives within `ms`.
async fn drain(rx: &mut UnboundedReceiver<String>, ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(m);
    }
    out
}

/// The `<state> <id>` lines of state messages, in order.
fn changes(messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| m.strip_prefix("s "))
        .flat_map(|m| m.split('\n').skip(1).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

async fn a_report_is_kept_only_under_the_runs_own_lease(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("p", 1)]).await.unwrap();
    let l = lease_one(b, 60_000).await;
    let ok = b
        .progress(
            Q,
            vec![report(&l, 0.25, Some("a quarter")), report(&l, 0.5, None)],
        )
        .await
        .unwrap();
    assert_eq!(ok, vec![true, true]);
    let mut stale = report(&l, 0.9, None);
    stale.lease.token += 1;
    let mut missing = report(&l, 0.9, None);
    missing.lease.id = "nope".into();
    assert_eq!(
        b.progress(Q, vec![stale, missing]).await.unwrap(),
        vec![false, false]
    );
    let info = b.job(Q, "p").await.unwrap().unwrap();
    let got: Vec<_> = info
        .progress
        .iter()
        .map(|p| (p.fraction, p.message.clone()))
        .collect();
    assert_eq!(got, vec![(0.25, Some("a quarter".into())), (0.5, None)]);
    assert!(info.progress[0].at_ms >= info.started_ms.unwrap());
    b.ack(Q, vec![ack_of(&l, b"")]).await.unwrap();
    assert_eq!(
        b.progress(Q, vec![report(&l, 1.0, None)]).await.unwrap(),
        vec![false]
    );
    // Out-of-range values never reach the script.
    assert!(b.progress(Q, vec![report(&l, 1.5, None)]).await.is_err());
    let long = "x".repeat(PROGRESS_MESSAGE_MAX + 1);
    assert!(b
        .progress(Q, vec![report(&l, 0.5, Some(&long))])
        .await
        .is_err());
}

async fn a_record_keeps_the_last_reports_only(c: Ctx) {
    let b = &c.b;
    b.enqueue(Q, vec![job("p", 1)]).await.unwrap();
    let l = lease_one(b, 60_000).await;
    let n = PROGRESS_KEEP + 8;
    let reports = (1..=n)
        .map(|i| report(&l, i as f64 / n as f64, Some(&format!("step {i}"))))
        .collect();
    b.progress(Q, reports).await.unwrap();
    let info = b.job(Q, "p").await.unwrap().unwrap();
    assert_eq!(info.progress.len(), PROGRESS_KEEP);
    assert_eq!(info.progress[0].message.as_deref(), Some("step 9"));
    assert_eq!(info.progress.last().unwrap().fraction, 1.0);
}

async fn an_unwatched_queue_publishes_no_state_change(c: Ctx) {
    let b = &c.b;
    let mut rx = b.watch_events(Q).await.unwrap();
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let l = lease_one(b, 60_000).await;
    b.progress(Q, vec![report(&l, 0.5, None)]).await.unwrap();
    b.ack(Q, vec![ack_of(&l, b"")]).await.unwrap();
    assert_eq!(drain(&mut rx, 300).await, Vec::<String>::new());
}

async fn a_watched_queue_publishes_each_change_in_order(c: Ctx) {
    let b = &c.b;
    let mut rx = b.watch_events(Q).await.unwrap();
    b.keep_watch(Q, 60_000).await.unwrap();
    let mut later = job("later", 1);
    later.delay_ms = Some(60_000);
    b.enqueue(Q, vec![job("a", 1), job("b", 1), later])
        .await
        .unwrap();
    let got = fetch(b, 2).await;
    let (a, bb) = (&got.jobs[0], &got.jobs[1]);
    b.progress(Q, vec![report(a, 0.5, Some("half way"))])
        .await
        .unwrap();
    b.ack(Q, vec![ack_of(a, b"")]).await.unwrap();
    b.fail(Q, vec![fail_of(bb, Some(60_000))]).await.unwrap();
    assert_eq!(
        b.cancel(Q, "later").await.unwrap(),
        CancelOutcome::Cancelled
    );
    let messages = drain(&mut rx, 500).await;
    // One message per script call: enqueue, fetch, progress, ack, fail, cancel.
    assert_eq!(messages.len(), 6, "{messages:?}");
    assert_eq!(
        changes(&messages),
        [
            "queued a",
            "queued b",
            "scheduled later",
            "running a",
            "running b",
            "succeeded a",
            "failed b",
            "cancelled later"
        ]
    );
    let p = messages.iter().find(|m| m.starts_with("p ")).unwrap();
    let parts: Vec<&str> = p.splitn(5, ' ').collect();
    assert_eq!((parts[1], parts[3], parts[4]), ("a", "0.5", "half way"));
}

async fn a_watch_mark_expires(c: Ctx) {
    let b = &c.b;
    let mut rx = b.watch_events(Q).await.unwrap();
    b.keep_watch(Q, 100).await.unwrap();
    c.pass(250).await;
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    assert_eq!(drain(&mut rx, 300).await, Vec::<String>::new());
}
