//! `job_ids` and `jobs` of the Redis broker against a private `redis-server` (the memory broker's
//! twin of this test is in `src/broker/memory/tests/admin.rs`).

// The shared harness has helpers this file does not need.
#[allow(dead_code)]
mod redis_support;

use _core::broker::*;
use redis_support::*;

#[tokio::test]
async fn job_ids_pages_each_state_set_and_jobs_reads_a_batch() {
    let Some((_s, b)) = setup().await else { return };
    let dead = ["x", "y"].map(|id| NewJob {
        max_attempts: 1,
        ..job(id, 9)
    });
    b.enqueue("q", dead.to_vec()).await.unwrap();
    let got = b.fetch("q", 2, 30_000, "w").await.unwrap();
    let fails = got.jobs.iter().map(|l| fail_of(l, None)).collect();
    b.fail("q", fails).await.unwrap();
    let mut later = job("later", 0);
    later.delay_ms = Some(60_000);
    let waiting = vec![
        job("run", 9),
        later,
        job("q1", 5),
        job("q2", 5),
        job("q3", 0),
    ];
    b.enqueue("q", waiting).await.unwrap();
    assert_eq!(ids(&b.fetch("q", 1, 30_000, "w").await.unwrap()), ["run"]);

    let page = |set, offset, count| b.job_ids("q", set, offset, count);
    assert_eq!(
        page(JobSet::Queued, 0, 10).await.unwrap(),
        ["q1", "q2", "q3"]
    );
    assert_eq!(page(JobSet::Queued, 1, 1).await.unwrap(), ["q2"]);
    assert_eq!(page(JobSet::Queued, 2, 5).await.unwrap(), ["q3"]);
    assert!(page(JobSet::Queued, 3, 5).await.unwrap().is_empty());
    assert!(page(JobSet::Queued, 0, 0).await.unwrap().is_empty());
    assert_eq!(page(JobSet::Scheduled, 0, 10).await.unwrap(), ["later"]);
    assert_eq!(page(JobSet::Running, 0, 10).await.unwrap(), ["run"]);
    // x died first (or in the same ms, when Redis orders equal scores by id): oldest first.
    assert_eq!(page(JobSet::Dead, 0, 10).await.unwrap(), ["x", "y"]);

    let wanted = ["q2", "missing", "x"].map(String::from);
    let found = b.jobs("q", &wanted).await.unwrap();
    let states: Vec<_> = found.iter().map(|j| j.as_ref().map(|j| j.state)).collect();
    assert_eq!(states, [Some(JobState::Queued), None, Some(JobState::Dead)]);
    assert_eq!(
        found[2].as_ref().unwrap().error.as_deref(),
        Some(&b"boom"[..])
    );
    assert!(b.jobs("q", &[]).await.unwrap().is_empty());
    assert!(b.job_ids("bad{name", JobSet::Dead, 0, 1).await.is_err());
}
