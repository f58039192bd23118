//! Every job state transition as one script call, for both brokers.
//!
//! A transition is written once, in `src/lua/<name>.lua`. This module is its Rust half, also
//! written once: it turns the [`Broker`] arguments into the script's `KEYS`/`ARGV` and decodes
//! the reply into broker types. What differs between brokers is only how a [`Call`] is run
//! ([`ScriptRunner`]): `EVALSHA` on a Redis server, or the embedded Lua 5.1 of `memory://`.

use async_trait::async_trait;
use redis::Value;

use super::keys::QueueKeys;
use super::scripts::{parse_enqueue, parse_fetch, parse_pair, parse_triple, protocol};
use super::scripts::{value_array, value_i64};
use super::scripts::{Call, ItemError, ScriptId};
use super::{
    check_progress, check_schedule_name, Ack, CancelOutcome, Enqueued, Fail, FailOutcome,
    FetchOutcome, Fire, FireOutcome, FlowMember, HeartbeatOutcome, Lease, NewJob, ProgressReport,
    ReapClaim, ReapOutcome, ScheduleChange, ScheduleState, Snooze, Want, CANCELLED_TTL_MS,
    MAX_PRIORITY, MAX_STALLS, PROGRESS_KEEP,
};
use crate::errors::{Error, Result};

/// Most jobs per enqueue script call: the script unpacks two set entries per job, and Lua's
/// `unpack` stops at about 8,000 values.
pub(crate) const ENQUEUE_CHUNK: usize = 1000;
/// How many jobs a looping maintenance call (purge, retry all) handles per script run.
const CHUNK: usize = 1000;

/// A per-item script reply: status code, or the error the script reported for that item.
type Item = std::result::Result<i64, ItemError>;

/// How a broker runs one script call; everything else about a transition lives here.
#[async_trait]
pub(crate) trait ScriptRunner: Send + Sync {
    /// Run `call` and return the script's reply as Redis encodes it.
    async fn run(&self, call: &Call) -> Result<Value>;
    /// Record that `queue` has been enqueued to (done outside any script).
    async fn remember_queue(&self, queue: &str) -> Result<()>;
}

/// `impl Broker for $broker { ... }` with every script transition delegated to this module.
/// A broker writes only what is its own (waits, reads outside scripts, registries) inside the
/// braces; the transitions below come with it, so a new one is added here once, not once per
/// broker. `$broker` must implement [`ScriptRunner`].
macro_rules! scripted_broker {
    ($broker:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::broker::Broker for $broker {
            $($own)*

            async fn enqueue(&self, queue: &str, jobs: Vec<$crate::broker::NewJob>) -> $crate::errors::Result<Vec<$crate::broker::Enqueued>> {
                $crate::broker::calls::enqueue(self, queue, jobs).await
            }

            async fn fetch(
                &self,
                queue: &str,
                want: $crate::broker::Want,
                lease_ms: u64,
                worker: &str,
            ) -> $crate::errors::Result<$crate::broker::FetchOutcome> {
                $crate::broker::calls::fetch(self, queue, want, lease_ms, worker).await
            }

            async fn ack(&self, queue: &str, acks: Vec<$crate::broker::Ack>) -> $crate::errors::Result<Vec<bool>> {
                $crate::broker::calls::ack(self, queue, acks).await
            }

            async fn fail(&self, queue: &str, fails: Vec<$crate::broker::Fail>) -> $crate::errors::Result<Vec<$crate::broker::FailOutcome>> {
                $crate::broker::calls::fail(self, queue, fails).await
            }

            async fn release(&self, queue: &str, leases: Vec<$crate::broker::Lease>) -> $crate::errors::Result<Vec<bool>> {
                $crate::broker::calls::release(self, queue, leases).await
            }

            async fn snooze(&self, queue: &str, snoozes: Vec<$crate::broker::Snooze>) -> $crate::errors::Result<Vec<bool>> {
                $crate::broker::calls::snooze(self, queue, snoozes).await
            }

            async fn heartbeat(
                &self,
                queue: &str,
                leases: Vec<$crate::broker::Lease>,
                lease_ms: u64,
            ) -> $crate::errors::Result<$crate::broker::HeartbeatOutcome> {
                $crate::broker::calls::heartbeat(self, queue, leases, lease_ms).await
            }

            async fn reap_claimed(
                &self,
                queue: &str,
                dead_ttl_ms: u64,
                claim: &$crate::broker::ReapClaim,
            ) -> $crate::errors::Result<$crate::broker::ReapOutcome> {
                $crate::broker::calls::reap(self, queue, dead_ttl_ms, claim).await
            }

            async fn cancel(&self, queue: &str, id: &str) -> $crate::errors::Result<$crate::broker::CancelOutcome> {
                $crate::broker::calls::cancel(self, queue, id).await
            }

            async fn retry_dead(&self, queue: &str, ids: Option<Vec<String>>) -> $crate::errors::Result<u64> {
                $crate::broker::calls::retry_dead(self, queue, ids).await
            }

            async fn purge(&self, queue: &str) -> $crate::errors::Result<u64> {
                $crate::broker::calls::purge(self, queue).await
            }

            async fn pause(&self, queue: &str, paused: bool) -> $crate::errors::Result<bool> {
                $crate::broker::calls::pause(self, queue, paused).await
            }

            async fn delete_job(&self, queue: &str, id: &str) -> $crate::errors::Result<$crate::broker::DeleteOutcome> {
                $crate::broker::calls::delete_job(self, queue, id).await
            }

            async fn fire(&self, queue: &str, fire: $crate::broker::Fire) -> $crate::errors::Result<$crate::broker::FireOutcome> {
                $crate::broker::calls::fire(self, queue, fire).await
            }

            async fn sync_schedule(&self, queue: &str, name: &str, def: &str) -> $crate::errors::Result<(u64, bool)> {
                $crate::broker::calls::sync_schedule(self, queue, name, def).await
            }

            async fn change_schedule(
                &self,
                queue: &str,
                name: &str,
                change: $crate::broker::ScheduleChange,
            ) -> $crate::errors::Result<bool> {
                $crate::broker::calls::change_schedule(self, queue, name, change).await
            }

            async fn schedules(&self, queue: &str) -> $crate::errors::Result<Vec<$crate::broker::ScheduleState>> {
                $crate::broker::calls::schedules(self, queue).await
            }

            async fn enqueue_flow(&self, queue: &str, members: Vec<$crate::broker::FlowMember>) -> $crate::errors::Result<Vec<$crate::broker::Enqueued>> {
                $crate::broker::calls::enqueue_flow(self, queue, members).await
            }

            async fn relay(&self, queue: &str) -> $crate::errors::Result<u64> {
                $crate::broker::calls::relay(self, queue).await
            }

            async fn keep_watch(&self, queue: &str, ttl_ms: u64) -> $crate::errors::Result<()> {
                $crate::broker::calls::keep_watch(self, queue, ttl_ms).await
            }

            async fn set_limits(
                &self,
                queue: &str,
                op: $crate::broker::LimitOp,
                families: Vec<(String, String)>,
            ) -> $crate::errors::Result<u64> {
                $crate::broker::calls::set_limits(self, queue, op, families).await
            }

            async fn limits(&self, queue: &str) -> $crate::errors::Result<Vec<$crate::broker::LimitInfo>> {
                $crate::broker::calls::limits(self, queue).await
            }

            async fn progress(&self, queue: &str, reports: Vec<$crate::broker::ProgressReport>) -> $crate::errors::Result<Vec<bool>> {
                $crate::broker::calls::progress(self, queue, reports).await
            }

            async fn batch_add(
                &self,
                queue: &str,
                callbacks: &[String],
                count: u32,
            ) -> $crate::errors::Result<Option<u32>> {
                $crate::broker::calls::batch_add(self, queue, callbacks, count).await
            }
        }
    };
}
pub(crate) use scripted_broker;

/// Optional number as a script argument: '' stands for None.
fn opt(n: Option<u64>) -> String {
    n.map(|v| v.to_string()).unwrap_or_default()
}

/// Run a script that answers one integer code per item.
async fn run_items<R: ScriptRunner + ?Sized>(
    r: &R,
    call: &Call,
    expected: usize,
) -> Result<Vec<Item>> {
    let name = call.id().def().name;
    let codes: Vec<i64> =
        ::redis::from_redis_value(r.run(call).await?).map_err(|e| protocol(name, e.to_string()))?;
    if codes.len() != expected {
        return Err(protocol(
            name,
            format!("{} replies for {expected} items", codes.len()),
        ));
    }
    codes
        .into_iter()
        .map(|c| ItemError::split(c).ok_or_else(|| protocol(name, format!("unknown code {c}"))))
        .collect()
}

/// One enqueue script call for at most [`ENQUEUE_CHUNK`] jobs.
fn enqueue_call(k: &QueueKeys, jobs: &[NewJob]) -> Call {
    let mut call = Call::new(
        ScriptId::Enqueue,
        vec![k.ready(), k.scheduled(), k.seq(), k.wake()],
    );
    call.arg(k.prefix()).arg(jobs.len()).arg(MAX_PRIORITY);
    for job in jobs {
        job_args(&mut call, job);
        let (mode, max_wait) = job.key_mode.as_args();
        call.arg(mode).arg(max_wait);
    }
    call
}

/// The 10 values of one new job, in the layout of `enqueue.lua` (which `fire.lua` shares).
fn job_args(call: &mut Call, job: &NewJob) {
    call.arg(&job.id)
        .arg(job.payload.as_slice())
        .arg(job.priority);
    call.arg(opt(job.delay_ms))
        .arg(opt(job.eta_ms))
        .arg(job.max_attempts);
    call.arg(job.key.as_deref().unwrap_or(""))
        .arg(job.key_ttl_ms)
        .arg(job.executor.as_field())
        .arg(job.group.as_deref().unwrap_or(""));
}

/// A priority outside 0..=MAX_PRIORITY would give a ready score outside the priority bands.
fn check_priority(job: &NewJob) -> Result<()> {
    if (0..=MAX_PRIORITY).contains(&job.priority) {
        return Ok(());
    }
    Err(Error::Payload(format!(
        "job {}: priority {} outside 0..={MAX_PRIORITY}",
        job.id, job.priority
    )))
}

pub(crate) async fn enqueue<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    jobs: Vec<NewJob>,
) -> Result<Vec<Enqueued>> {
    let k = QueueKeys::new(queue)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    jobs.iter().try_for_each(check_priority)?;
    r.remember_queue(queue).await?;
    let calls = jobs
        .chunks(ENQUEUE_CHUNK)
        .map(|chunk| Ok((enqueue_call(&k, chunk), chunk.len())))
        .collect::<Result<Vec<_>>>()?;
    // Jobs of one call are independent: the chunks go out together (on Redis' multiplexed
    // connection, one round trip in practice).
    write_chunks(r, calls, false).await
}

/// Run the script calls that write items (`enqueue`, `flow`; each call with how many items it
/// carries, so each stays within Lua's unpack limit) and gather their per-item replies in order.
/// `in_order` runs each call after the previous one answered; otherwise they go out together,
/// and a call re-sent after `NOSCRIPT` may run after the one behind it.
async fn write_chunks<R: ScriptRunner + ?Sized>(
    r: &R,
    calls: Vec<(Call, usize)>,
    in_order: bool,
) -> Result<Vec<Enqueued>> {
    let mut out = Vec::with_capacity(calls.iter().map(|(_, n)| n).sum());
    if in_order {
        for (call, n) in &calls {
            out.extend(parse_enqueue(r.run(call).await?, *n)?);
        }
        return Ok(out);
    }
    let runs = calls.iter().map(|(call, _)| r.run(call));
    for (reply, (_, n)) in futures::future::join_all(runs)
        .await
        .into_iter()
        .zip(&calls)
    {
        out.extend(parse_enqueue(reply?, *n)?);
    }
    Ok(out)
}

pub(crate) async fn fetch<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    want: Want,
    lease_ms: u64,
    worker: &str,
) -> Result<FetchOutcome> {
    let k = QueueKeys::new(queue)?;
    let mut call = Call::new(
        ScriptId::Fetch,
        vec![k.ready(), k.scheduled(), k.active(), k.wake(), k.dead()],
    );
    call.arg(k.prefix())
        .arg(want.jobs)
        .arg(lease_ms)
        .arg(worker);
    call.arg(opt(want.threads.map(|n| n as u64)))
        .arg(opt(want.processes.map(|n| n as u64)));
    parse_fetch(r.run(&call).await?)
}

pub(crate) async fn ack<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    acks: Vec<Ack>,
) -> Result<Vec<bool>> {
    let k = QueueKeys::new(queue)?;
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let keys = vec![k.active(), k.stats(), k.ready(), k.wake(), k.outbox()];
    let mut call = Call::new(ScriptId::Ack, keys);
    call.arg(k.prefix());
    for a in &acks {
        call.arg(&a.lease.id)
            .arg(a.lease.token)
            .arg(a.result.as_slice())
            .arg(a.result_ttl_ms);
    }
    let items = run_items(r, &call, acks.len()).await?;
    // 11: accepted, and a flow member's result waits in the outbox for another queue.
    if items.contains(&Ok(11)) {
        relay(r, queue).await?;
    }
    Ok(items
        .into_iter()
        .map(|r| matches!(r, Ok(1) | Ok(11)))
        .collect())
}

pub(crate) async fn progress<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    reports: Vec<ProgressReport>,
) -> Result<Vec<bool>> {
    let k = QueueKeys::new(queue)?;
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = Call::new(ScriptId::Progress, vec![k.active()]);
    call.arg(k.prefix()).arg(PROGRESS_KEEP);
    for p in &reports {
        check_progress(p.fraction, p.message.as_deref())?;
        call.arg(&p.lease.id)
            .arg(p.lease.token)
            .arg(p.fraction.to_string())
            .arg(p.message.as_deref().unwrap_or(""));
    }
    let items = run_items(r, &call, reports.len()).await?;
    Ok(items.into_iter().map(|r| r == Ok(1)).collect())
}

pub(crate) async fn set_limits<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    op: super::LimitOp,
    families: Vec<(String, String)>,
) -> Result<u64> {
    let k = QueueKeys::new(queue)?;
    if families.is_empty() {
        return Ok(0);
    }
    let mut call = Call::new(ScriptId::Limits, vec![k.limits()]);
    call.arg(k.prefix()).arg(op.as_arg());
    for (family, settings) in &families {
        call.arg(family).arg(settings);
    }
    let changed = value_i64(&r.run(&call).await?, "limits")?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

pub(crate) async fn limits<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
) -> Result<Vec<super::LimitInfo>> {
    let k = QueueKeys::new(queue)?;
    let mut call = Call::new(ScriptId::Limits, vec![k.limits()]);
    call.arg(k.prefix()).arg("show");
    type Row = (String, String, String, u64, u64, u64);
    let flat: Vec<Value> = ::redis::from_redis_value(r.run(&call).await?)
        .map_err(|e| protocol("limits", e.to_string()))?;
    flat.chunks(6)
        .map(|row| {
            let (family, declared, overridden, running, waiting, keys_waiting): Row =
                ::redis::from_redis_value(Value::Array(row.to_vec()))
                    .map_err(|e| protocol("limits", e.to_string()))?;
            Ok(super::LimitInfo {
                family,
                declared,
                overridden,
                running,
                waiting,
                keys_waiting,
            })
        })
        .collect()
}

pub(crate) async fn keep_watch<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    ttl_ms: u64,
) -> Result<()> {
    let k = QueueKeys::new(queue)?;
    let mut call = Call::new(ScriptId::Watch, vec![k.watch()]);
    call.arg(ttl_ms.max(1));
    r.run(&call).await?;
    Ok(())
}

pub(crate) async fn fail<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    fails: Vec<Fail>,
) -> Result<Vec<FailOutcome>> {
    let k = QueueKeys::new(queue)?;
    if fails.is_empty() {
        return Ok(Vec::new());
    }
    let keys = vec![
        k.active(),
        k.scheduled(),
        k.dead(),
        k.stats(),
        k.wake(),
        k.ready(),
        k.outbox(),
    ];
    let mut call = Call::new(ScriptId::Fail, keys);
    call.arg(k.prefix());
    for f in &fails {
        call.arg(&f.lease.id)
            .arg(f.lease.token)
            .arg(f.error.as_slice());
        call.arg(opt(f.retry_delay_ms))
            .arg(f.dead_ttl_ms)
            .arg(u8::from(f.cancelled));
    }
    let items = run_items(r, &call, fails.len()).await?;
    // 12, 13: dead or cancelled, and a flow member's failure waits in the outbox.
    if items.iter().any(|i| matches!(i, Ok(c) if *c > 10)) {
        relay(r, queue).await?;
    }
    items
        .into_iter()
        .map(|r| match r {
            Ok(1) => Ok(FailOutcome::Retrying),
            Ok(2) | Ok(12) => Ok(FailOutcome::Dead),
            Ok(3) | Ok(13) => Ok(FailOutcome::Cancelled),
            Err(_) => Ok(FailOutcome::Stale),
            Ok(c) => Err(protocol("fail", format!("unknown status {c}"))),
        })
        .collect()
}

pub(crate) async fn release<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    leases: Vec<Lease>,
) -> Result<Vec<bool>> {
    let back = leases
        .into_iter()
        .map(|lease| (lease, None, false))
        .collect();
    hand_back(r, queue, back).await
}

pub(crate) async fn snooze<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    snoozes: Vec<Snooze>,
) -> Result<Vec<bool>> {
    let back = snoozes
        .into_iter()
        .map(|s| (s.lease, Some(s.delay_ms), s.push_key))
        .collect();
    hand_back(r, queue, back).await
}

/// `release.lua`: leases handed back now (no delay) or after a delay (a snooze).
async fn hand_back<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    leases: Vec<(Lease, Option<u64>, bool)>,
) -> Result<Vec<bool>> {
    let k = QueueKeys::new(queue)?;
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let keys = vec![k.active(), k.ready(), k.wake(), k.dead(), k.scheduled()];
    let mut call = Call::new(ScriptId::Release, keys);
    call.arg(k.prefix());
    for (l, delay, push_key) in &leases {
        call.arg(&l.id)
            .arg(l.token)
            .arg(opt(*delay))
            .arg(if *push_key { "1" } else { "" });
    }
    let items = run_items(r, &call, leases.len()).await?;
    // 2: the record was corrupt and went to the dead set; the lease is over all the same.
    Ok(items
        .into_iter()
        .map(|r| matches!(r, Ok(1) | Ok(2)))
        .collect())
}

pub(crate) async fn heartbeat<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    leases: Vec<Lease>,
    lease_ms: u64,
) -> Result<HeartbeatOutcome> {
    let k = QueueKeys::new(queue)?;
    let mut out = HeartbeatOutcome::default();
    if leases.is_empty() {
        return Ok(out);
    }
    let mut call = Call::new(ScriptId::Heartbeat, vec![k.active()]);
    call.arg(k.prefix()).arg(lease_ms);
    for l in &leases {
        call.arg(&l.id).arg(l.token);
    }
    let items = run_items(r, &call, leases.len()).await?;
    for (lease, item) in leases.into_iter().zip(items) {
        match item {
            Ok(2) => out.cancel.push(lease.id),
            Ok(0) => out.finished.push(lease.id),
            Ok(_) => {}
            Err(ItemError::MissingJob) => out.gone.push(lease.id),
            Err(ItemError::StaleToken) => out.lost.push(lease.id),
        }
    }
    Ok(out)
}

pub(crate) async fn reap<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    dead_ttl_ms: u64,
    claim: &ReapClaim,
) -> Result<ReapOutcome> {
    let k = QueueKeys::new(queue)?;
    let keys = vec![
        k.active(),
        k.ready(),
        k.scheduled(),
        k.dead(),
        k.wake(),
        k.reaping(),
        k.outbox(),
    ];
    let mut call = Call::new(ScriptId::Reap, keys);
    call.arg(k.prefix()).arg(dead_ttl_ms).arg(MAX_STALLS);
    call.arg(claim.claim_ms).arg(&claim.claimant);
    let (requeued, dead, ran) = parse_triple(r.run(&call).await?, "reap")?;
    if ran == 1 {
        // Also what a relay that died left behind (its claim has expired by now), and what
        // this reap's dead letters and producers' cancels put in the outbox.
        relay(r, queue).await?;
    }
    Ok(ReapOutcome {
        requeued,
        dead,
        skipped: ran == 0,
    })
}

pub(crate) async fn cancel<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    id: &str,
) -> Result<CancelOutcome> {
    let k = QueueKeys::new(queue)?;
    let keys = vec![k.ready(), k.scheduled(), k.wake(), k.outbox()];
    let mut call = Call::new(ScriptId::Cancel, keys);
    call.arg(k.prefix()).arg(id).arg(CANCELLED_TTL_MS);
    let code = value_i64(&r.run(&call).await?, "cancel")?;
    if code == 1 {
        relay(r, queue).await?; // a cancelled flow member's children in other queues
    }
    match ItemError::split(code) {
        Some(Ok(1)) => Ok(CancelOutcome::Cancelled),
        Some(Ok(2)) => Ok(CancelOutcome::Requested),
        Some(Ok(3)) => Ok(CancelOutcome::Finished),
        Some(Err(ItemError::MissingJob)) => Ok(CancelOutcome::NotFound),
        _ => Err(protocol("cancel", format!("unknown code {code}"))),
    }
}

pub(crate) async fn retry_dead<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    ids: Option<Vec<String>>,
) -> Result<u64> {
    let k = QueueKeys::new(queue)?;
    let new_call = || {
        let mut call = Call::new(ScriptId::RetryDead, vec![k.dead(), k.ready(), k.wake()]);
        call.arg(k.prefix()).arg(CHUNK);
        call
    };
    if let Some(ids) = ids {
        let mut moved = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut call = new_call();
            for id in chunk {
                call.arg(id);
            }
            moved += parse_triple(r.run(&call).await?, "retry_dead")?.0;
        }
        return Ok(moved);
    }
    let mut moved = 0;
    loop {
        let (n, processed, kept) = parse_triple(r.run(&new_call()).await?, "retry_dead")?;
        moved += n;
        // Corrupt records stay at the head of the dead set: a call that kept every entry
        // it looked at would see the same ones again.
        if processed < CHUNK as u64 || kept == processed {
            return Ok(moved);
        }
    }
}

pub(crate) async fn purge<R: ScriptRunner + ?Sized>(r: &R, queue: &str) -> Result<u64> {
    let k = QueueKeys::new(queue)?;
    let mut call = Call::new(ScriptId::Purge, vec![k.ready(), k.scheduled(), k.dead()]);
    call.arg(k.prefix()).arg(CHUNK);
    let mut total = 0;
    loop {
        let (deleted, remaining) = parse_pair(r.run(&call).await?, "purge")?;
        total += deleted;
        if deleted == 0 || remaining == 0 {
            return Ok(total);
        }
    }
}

pub(crate) async fn pause<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    paused: bool,
) -> Result<bool> {
    let k = QueueKeys::new(queue)?;
    let mut call = Call::new(ScriptId::Pause, vec![k.paused(), k.wake()]);
    call.arg(if paused { "pause" } else { "resume" });
    Ok(value_i64(&r.run(&call).await?, "pause")? == 1)
}

pub(crate) async fn delete_job<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    id: &str,
) -> Result<super::DeleteOutcome> {
    let k = QueueKeys::new(queue)?;
    let keys = vec![k.ready(), k.scheduled(), k.dead(), k.wake(), k.outbox()];
    let mut call = Call::new(ScriptId::Delete, keys);
    call.arg(k.prefix()).arg(id);
    match value_i64(&r.run(&call).await?, "delete")? {
        1 => Ok(super::DeleteOutcome::Deleted),
        11 => {
            relay(r, queue).await?; // a deleted flow member's children in other queues
            Ok(super::DeleteOutcome::Deleted)
        }
        2 => Ok(super::DeleteOutcome::Running),
        -2 => Ok(super::DeleteOutcome::NotFound),
        code => Err(protocol("delete", format!("unexpected code {code}"))),
    }
}

pub(crate) async fn fire<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    fire: Fire,
) -> Result<FireOutcome> {
    const S: &str = "fire";
    let k = QueueKeys::new(queue)?;
    check_schedule_name(&fire.schedule)?;
    check_priority(&fire.job)?;
    let keys = vec![
        k.ready(),
        k.scheduled(),
        k.seq(),
        k.wake(),
        k.cron(&fire.schedule),
    ];
    let mut call = Call::new(ScriptId::Fire, keys);
    call.arg(k.prefix())
        .arg(MAX_PRIORITY)
        .arg(fire.fire_ms)
        .arg(fire.mode.as_arg());
    job_args(&mut call, &fire.job);
    let (code, ms): (i64, i64) =
        ::redis::from_redis_value(r.run(&call).await?).map_err(|e| protocol(S, e.to_string()))?;
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    Ok(match code {
        1 => FireOutcome::Enqueued,
        2 => FireOutcome::Taken { last_ms: ms },
        3 => FireOutcome::Paused,
        4 => FireOutcome::Overlap,
        5 => FireOutcome::Passed,
        0 => FireOutcome::Early { now_ms: ms },
        -2 => FireOutcome::Removed,
        c => return Err(protocol(S, format!("unknown code {c}"))),
    })
}

/// One `schedule.lua` call.
fn schedule_call(k: &QueueKeys, op: &str, name: &str) -> Call {
    let mut call = Call::new(ScriptId::Schedule, vec![k.crons()]);
    call.arg(k.prefix()).arg(op).arg(name);
    call
}

pub(crate) async fn sync_schedule<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    name: &str,
    def: &str,
) -> Result<(u64, bool)> {
    let k = QueueKeys::new(queue)?;
    check_schedule_name(name)?;
    // A schedule's queue is listed like a queue enqueued to, so `asyncq schedules` finds it.
    r.remember_queue(queue).await?;
    let mut call = schedule_call(&k, "sync", name);
    call.arg(def);
    let (last, paused): (u64, i64) = ::redis::from_redis_value(r.run(&call).await?)
        .map_err(|e| protocol("schedule", e.to_string()))?;
    Ok((last, paused == 1))
}

pub(crate) async fn change_schedule<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    name: &str,
    change: ScheduleChange,
) -> Result<bool> {
    let k = QueueKeys::new(queue)?;
    check_schedule_name(name)?;
    let op = match change {
        ScheduleChange::Pause => "pause",
        ScheduleChange::Resume => "resume",
        ScheduleChange::Remove => "remove",
    };
    Ok(value_i64(&r.run(&schedule_call(&k, op, name)).await?, "schedule")? == 1)
}

pub(crate) async fn schedules<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
) -> Result<Vec<ScheduleState>> {
    const S: &str = "schedule";
    let k = QueueKeys::new(queue)?;
    type Row = (String, String, u64, String, i64, u64, u64);
    let flat = value_array(r.run(&schedule_call(&k, "list", "")).await?, S)?;
    if flat.len() % 7 != 0 {
        return Err(protocol(
            S,
            format!("{} values is not a multiple of 7", flat.len()),
        ));
    }
    flat.chunks(7)
        .map(|row| {
            let (name, def, last_ms, job, paused, fired, skipped): Row =
                ::redis::from_redis_value(Value::Array(row.to_vec()))
                    .map_err(|e| protocol(S, e.to_string()))?;
            Ok(ScheduleState {
                name,
                def,
                last_ms,
                job: (!job.is_empty()).then_some(job),
                paused: paused == 1,
                fired,
                skipped,
            })
        })
        .collect()
}

/// Most outbox entries one relay round takes.
const RELAY_CHUNK: usize = 500;
/// How long a relay holds an outbox: past it, another relay may deliver the same entries.
const RELAY_CLAIM_MS: u64 = 10_000;

/// One outbox entry: target queue, then the 5 values `deliver.lua` takes per entry.
fn parse_entry(entry: &[u8]) -> Option<(String, [&[u8]; 5])> {
    let mut parts = entry.splitn(6, |b| *b == b'\t');
    let queue = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let child = parts.next()?;
    let idx = parts.next()?;
    let kind = parts.next()?;
    let parent = parts.next()?;
    let value = parts.next()?;
    Some((queue, [child, idx, kind, parent, value]))
}

/// Deliver what `queue`'s outbox holds to the flow members of other queues (see `relay.lua`
/// and `deliver.lua`), and then what those deliveries put in their own queues' outboxes.
/// Returns how many entries were delivered. An entry that cannot be read is dropped.
pub(crate) async fn relay<R: ScriptRunner + ?Sized>(r: &R, queue: &str) -> Result<u64> {
    const S: &str = "relay";
    // One claimant per relay call: two relays of one process (an ack's and a reap tick's)
    // must not take each other's claim, or one could trim entries only the other has read.
    let claimant = uuid::Uuid::new_v4().simple().to_string();
    let mut todo = vec![queue.to_owned()];
    let mut total = 0;
    while let Some(source) = todo.pop() {
        let k = QueueKeys::new(&source)?;
        loop {
            let mut take = Call::new(ScriptId::Relay, vec![k.outbox(), k.relaying()]);
            take.arg("take")
                .arg(&claimant)
                .arg(RELAY_CLAIM_MS)
                .arg(RELAY_CHUNK);
            let entries: Vec<Vec<u8>> = ::redis::from_redis_value(r.run(&take).await?)
                .map_err(|e| protocol(S, e.to_string()))?;
            if entries.is_empty() {
                break;
            }
            let mut by_queue: std::collections::BTreeMap<String, Vec<[&[u8]; 5]>> =
                Default::default();
            for entry in &entries {
                if let Some((target, values)) = parse_entry(entry) {
                    by_queue.entry(target).or_default().push(values);
                }
            }
            for (target, items) in by_queue {
                let Ok(tk) = QueueKeys::new(&target) else {
                    continue; // a queue name no key can hold: nothing to deliver to
                };
                let mut call =
                    Call::new(ScriptId::Deliver, vec![tk.ready(), tk.wake(), tk.outbox()]);
                call.arg(tk.prefix());
                for values in &items {
                    for v in values {
                        call.arg(*v);
                    }
                }
                if value_i64(&r.run(&call).await?, "deliver")? > 0 && !todo.contains(&target) {
                    todo.push(target);
                }
            }
            let mut done = Call::new(ScriptId::Relay, vec![k.outbox(), k.relaying()]);
            done.arg("done").arg(&claimant).arg(entries.len()).arg("");
            r.run(&done).await?;
            total += entries.len() as u64;
        }
    }
    Ok(total)
}

/// One member of a flow to write (see `flow.lua`).
pub(crate) fn flow_call(k: &QueueKeys, members: &[FlowMember]) -> Result<Call> {
    let mut call = Call::new(
        ScriptId::Flow,
        vec![k.ready(), k.scheduled(), k.seq(), k.wake()],
    );
    call.arg(k.prefix()).arg(MAX_PRIORITY);
    for m in members {
        check_priority(&m.job)?;
        job_args(&mut call, &m.job);
        let mut fo = String::new();
        for f in &m.follow_ups {
            let ck = QueueKeys::new(&f.queue)?;
            fo.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                ck.prefix(),
                f.queue,
                f.child,
                f.index,
                f.policy.as_arg()
            ));
        }
        call.arg(m.parents).arg(m.mode.as_arg()).arg(fo);
    }
    Ok(call)
}

pub(crate) async fn enqueue_flow<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    members: Vec<FlowMember>,
) -> Result<Vec<Enqueued>> {
    let k = QueueKeys::new(queue)?;
    if members.is_empty() {
        return Ok(Vec::new());
    }
    r.remember_queue(queue).await?;
    let calls = members
        .chunks(ENQUEUE_CHUNK)
        .map(|chunk| Ok((flow_call(&k, chunk)?, chunk.len())))
        .collect::<Result<Vec<_>>>()?;
    // In order: a caller may rely on members written before the ones that follow them (a
    // member waiting on another must exist before that one can end and deliver to it).
    write_chunks(r, calls, true).await
}

pub(crate) async fn batch_add<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    callbacks: &[String],
    count: u32,
) -> Result<Option<u32>> {
    let k = QueueKeys::new(queue)?;
    let mut call = Call::new(ScriptId::BatchAdd, vec![k.ready()]);
    call.arg(k.prefix()).arg(count);
    for id in callbacks {
        call.arg(id);
    }
    let first = value_i64(&r.run(&call).await?, "batch_add")?;
    Ok(u32::try_from(first).ok())
}

/// One page of `queue`'s queued jobs, groups expanded into their jobs (`listing.lua`).
pub(super) async fn queued_ids<R: ScriptRunner + ?Sized>(
    r: &R,
    queue: &str,
    offset: usize,
    count: usize,
) -> Result<Vec<String>> {
    let k = QueueKeys::new(queue)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut call = Call::new(ScriptId::Listing, vec![k.ready()]);
    call.arg(k.prefix()).arg(offset).arg(count);
    ::redis::from_redis_value(r.run(&call).await?).map_err(|e| protocol("listing", e.to_string()))
}

/// `ZRANGE` of one page (by position) of the sorted set holding `set`'s jobs; None for an
/// empty page. Both brokers list jobs with it, so which key holds which state lives here once.
pub(super) fn page_cmd(
    queue: &str,
    set: super::JobSet,
    offset: usize,
    count: usize,
) -> Result<Option<redis::Cmd>> {
    use super::JobSet;
    let k = QueueKeys::new(queue)?;
    if count == 0 {
        return Ok(None);
    }
    let key = match set {
        JobSet::Queued => k.ready(),
        JobSet::Scheduled => k.scheduled(),
        JobSet::Running => k.active(),
        JobSet::Dead => k.dead(),
    };
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(key)
        .arg(offset)
        .arg(offset.saturating_add(count - 1));
    Ok(Some(cmd))
}

/// The commands that count a queue's jobs per set and read its lifetime counters, in the order
/// [`parse_counts`] reads their replies: run as one pipeline on Redis, one call on memory://.
pub(super) fn counts_cmds(queue: &str) -> Result<Vec<redis::Cmd>> {
    let k = QueueKeys::new(queue)?;
    let zcard = |key: String| redis::cmd("ZCARD").arg(key).clone();
    let stat = |field: &str| redis::cmd("HGET").arg(k.stats()).arg(field).clone();
    Ok(vec![
        zcard(k.scheduled()),
        zcard(k.ready()),
        zcard(k.active()),
        zcard(k.dead()),
        stat("succeeded"),
        stat("failed"),
        redis::cmd("HMGET")
            .arg(k.gstat())
            .arg("jobs")
            .arg("ready")
            .clone(),
        redis::cmd("EXISTS").arg(k.paused()).clone(),
    ])
}

/// Read the replies of [`counts_cmds`].
pub(super) fn parse_counts(replies: Vec<Value>) -> Result<super::QueueCounts> {
    type Reply = (
        u64,
        u64,
        u64,
        u64,
        Option<u64>,
        Option<u64>,
        (Option<i64>, Option<i64>),
        bool,
    );
    let (scheduled, ready, running, dead, ok, failed, (grouped, groups), paused): Reply =
        redis::from_redis_value(Value::Array(replies))
            .map_err(|e| protocol("counts", e.to_string()))?;
    // Ready holds one member per group in it; the group sets hold the grouped jobs.
    let grouped = u64::try_from(grouped.unwrap_or(0)).unwrap_or(0);
    let groups = u64::try_from(groups.unwrap_or(0)).unwrap_or(0);
    Ok(super::QueueCounts {
        scheduled,
        queued: ready.saturating_sub(groups) + grouped,
        running,
        dead,
        succeeded_total: ok.unwrap_or(0),
        failed_total: failed.unwrap_or(0),
        paused,
    })
}
