"""The chaos cases. Each takes a scale and returns a :class:`Result` (one table row).

Scales: ``smoke`` (CI, a few minutes for cases 1, 2, 4, 6) and ``full`` (``make chaos``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import time
from typing import Any

from tests.chaos import ledger as L
from tests.chaos.harness import LEASE, REAPER, Env, Result, wait_for
from tests.chaos.proxy import FaultProxy

SCALES: dict[str, dict[str, Any]] = {
    "smoke": {
        "kill_jobs": 20000,
        "kills": 3,
        "kill_every": 1.5,
        "drain_jobs": 120,
        "fault_rate": 100,
        # The 15 s blackhole (longer than the lease, so re-runs are allowed) only in the full
        # run: it is a third of this tier's time, and the short faults test the reconnects.
        "long_blackhole": False,
        "poison_good": 1000,
        "soak_jobs": 20000,
        "skew_jobs": 200,
        "redis_jobs": 2000,
    },
    "full": {
        "kill_jobs": 100_000,
        "kills": 10,
        "kill_every": 3.0,
        "drain_jobs": 600,
        "fault_rate": 300,
        "long_blackhole": True,
        "poison_good": 10_000,
        "soak_jobs": 1_000_000,
        "skew_jobs": 2000,
        "redis_jobs": 20_000,
    },
}


# ---- 1. worker SIGKILL under load ---------------------------------------------------------------


async def case_sigkill(scale: str) -> Result:
    s = SCALES[scale]
    env = Env("sigkill")
    try:
        n = s["kill_jobs"]
        workers = [await env.worker(8) for _ in range(4)]
        # Near no-op jobs (10 ms) at concurrency 8: 4 workers drain ~3k/s, so the load lasts the
        # whole kill schedule and every kill catches jobs in flight (true no-ops drain too fast).
        span = 1.0
        ids: list[str] = []

        async def produce() -> None:
            step = max(1, n // int(span * 10))
            t0 = time.monotonic()
            for i in range(0, n, step):
                ids.extend(await env.enqueue("chaos:sleep", [(0.01,)] * (min(n, i + step) - i)))
                await asyncio.sleep(max(0.0, t0 + (i + step) / n * span - time.monotonic()))

        prod = asyncio.ensure_future(produce())
        kills: list[tuple[float, int]] = []
        backlog: list[int] = []
        for k in range(s["kills"]):
            await asyncio.sleep(s["kill_every"])
            victim = workers[k % 4]
            c = await env.counts()
            backlog.append(c.get("queued", 0) + c.get("running", 0))
            victim.signal(signal.SIGKILL)
            kills.append((time.monotonic(), victim.pid))
            await victim.exited(5)
            workers[k % 4] = await env.worker(8)
        await prod
        drained = await env.drained(120 + n / 200, n)
        tally = L.Tally.of(L.read(env.ledger))
        lost = tally.lost(ids)
        dup = tally.duplicated(ids)
        killed = {pid for _, pid in kills}
        # A duplicate is only allowed when a killed worker finished the body but died before its
        # ack reached Redis: the job was in flight at a kill.
        dup_unexplained = [j for j in dup if not any(e.pid in killed for e in tally.dones[j])]
        # Orphans: jobs re-run (a later attempt started). Recovery = that start - the kill before.
        recovery = []
        for j in tally.rerun(ids):
            later = [e for e in tally.starts[j] if e.attempt > 1]
            if not later:
                continue
            t = min(e.t for e in later)
            before = [kt for kt, _ in kills if kt <= t]
            if before:
                recovery.append(t - max(before))
        c = await env.counts()
        r = Result(f"1 worker SIGKILL x{s['kills']}", n, len(lost), len(dup), recovery)
        r.checks = {
            "drained": drained,
            "lost 0": not lost,
            "duplicates only of jobs in flight at a kill": not dup_unexplained,
            f"orphans re-run within lease+2s ({LEASE + 2:.0f}s)": all(
                x <= LEASE + 2 for x in recovery
            ),
            "exactly one accepted ack per job": c.get("succeeded_total", 0) == n,
            "no dead letters": c.get("dead", 0) == 0,
        }
        r.checks["load still queued at every kill"] = all(b > 0 for b in backlog)
        r.notes.append(
            f"backlog at kills {backlog}; {len(recovery)} orphaned jobs re-run; "
            f"{env.count_log('outcome refused')} stale outcomes refused"
        )
        return r
    finally:
        env.close()


# ---- 2. SIGTERM drain under load ----------------------------------------------------------


async def case_sigterm(scale: str) -> Result:
    s = SCALES[scale]
    env = Env("sigterm")
    grace = 3.0
    try:
        n = s["drain_jobs"]
        a = await env.worker(10, grace=grace)
        await env.worker(10, grace=grace)
        # Mostly 1 s jobs, every tenth one 8 s: it cannot finish inside the grace period.
        calls = [(8.0 if i % 10 == 0 else 1.0,) for i in range(n)]
        ids = await env.enqueue("chaos:sleep", calls)
        await asyncio.sleep(2.5)
        t_term = time.monotonic()
        a.signal(signal.SIGTERM)
        exited = await a.exited(grace + 5)
        t_exit = a.exited_at or time.monotonic()
        drained = await env.drained(60 + n * 1.2 / 10, n)
        tally = L.Tally.of(L.read(env.ledger))
        lost = tally.lost(ids)
        dup = tally.duplicated(ids)
        # Jobs a finished inside the grace period must run nowhere else.
        finished_by_a = [j for j in ids if any(e.pid == a.pid for e in tally.dones.get(j, ()))]
        dup_after_finish = [j for j in finished_by_a if len(tally.starts[j]) > 1]
        released = [
            j
            for j in ids
            if any(e.pid == a.pid for e in tally.starts.get(j, ()))
            and not any(e.pid == a.pid for e in tally.dones.get(j, ()))
        ]
        t_release = min(t_exit, t_term + grace)
        recovery = []
        for j in released:
            elsewhere = [e.t for e in tally.starts[j] if e.pid != a.pid]
            recovery.append((min(elsewhere) - t_release) if elsewhere else float("inf"))
        exit_in = t_exit - t_term
        r = Result("2 SIGTERM drain (grace 3s)", n, len(lost), len(dup), recovery)
        r.checks = {
            "drained": drained,
            "lost 0": not lost,
            "no duplicate of a job finished inside grace": not dup_after_finish,
            "exit within grace+2s": exited and exit_in <= grace + 2,
            "released jobs start elsewhere within 1s": bool(released)
            and all(x <= 1.0 for x in recovery),
            "clean exit code": a.proc.returncode == 0,
        }
        r.notes.append(f"exit after {exit_in:.2f}s; {len(released)} jobs released")
        return r
    finally:
        env.close()


# ---- 3. Redis restart ---------------------------------------------------------------------


async def _producer(env: Env, stop: asyncio.Event, acked: list[str], rate: int) -> None:
    """Enqueue noop jobs at ~rate/s, recording the ids Redis acknowledged; errors are retried."""
    i = 0
    while not stop.is_set():
        batch = max(1, rate // 20)
        with contextlib.suppress(Exception):
            acked.extend(await env.enqueue("chaos:noop", [(i + k,) for k in range(batch)]))
        i += batch
        await asyncio.sleep(0.05)


async def _first_start_after(env: Env, t: float, timeout: float) -> float | None:
    found: list[float] = []

    def seen() -> bool:
        ts = [e.t for e in L.read(env.ledger) if e.what == "start" and e.t > t]
        if ts:
            found.append(min(ts))
        return bool(ts)

    with contextlib.suppress(AssertionError):
        await wait_for(seen, timeout, "a job to start", step=0.05)
    return found[0] - t if found else None


async def case_redis_restart(scale: str, mode: str) -> Result:
    """mode: ``aof-clean`` | ``aof-kill9`` | ``none``."""
    persist = ("--appendonly", "yes", "--appendfsync", "everysec") if mode != "none" else ()
    env = Env(f"redis-{mode}", *persist)
    try:
        workers = [await env.worker(20) for _ in range(2)]
        stop = asyncio.Event()
        acked: list[str] = []
        prod = asyncio.ensure_future(_producer(env, stop, acked, 400))
        await asyncio.sleep(3)
        t0 = time.monotonic()
        if mode == "aof-clean":
            await asyncio.to_thread(env.redis.sigterm_and_restart)
        else:
            await asyncio.to_thread(env.redis.kill9_and_restart)
        t_up = time.monotonic()
        resume = await _first_start_after(env, t_up, 30)
        await asyncio.sleep(3)
        stop.set()
        await prod
        n = len(acked)
        drained = await env.drained(60, None)
        tally = L.Tally.of(L.read(env.ledger))
        lost = tally.lost(acked)
        # What Redis still knows about the lost ones.
        missing = 0
        for j in lost:
            if await env.app.broker.job(env.queue, j) is None:
                missing += 1
        alive = all(w.alive() for w in workers)
        loud = env.count_log("lost its data") > 0
        r = Result(f"3 Redis restart ({mode})", n, len(lost), len(tally.duplicated(acked)))
        if resume is not None:
            r.recovery = [resume]
        after = "never" if resume is None else f"{resume:.2f}s after"
        r.notes.append(f"restart took {t_up - t0:.2f}s; workers resumed {after}")
        r.checks = {
            "workers survive": alive,
            "workers resume within 3s": resume is not None and resume <= 3,
        }
        if mode == "aof-clean":
            r.checks["lost 0"] = not lost
            r.checks["drained"] = drained
        elif mode == "aof-kill9":
            r.notes.append(
                f"kill -9 with appendfsync everysec lost {missing} acknowledged enqueues "
                f"(bound: writes of the last ~1-2 s)"
            )
            r.checks["loss bounded by ~2s of writes"] = missing <= 2 * 400 + 100
        else:
            r.notes.append(f"no persistence: {missing} acknowledged jobs lost with the restart")
            r.checks["loud data-loss warning logged"] = loud
            # New jobs after the restart run normally.
            new = await env.enqueue("chaos:noop", [(i,) for i in range(200)])
            await env.drained(30, None)
            tally = L.Tally.of(L.read(env.ledger))
            r.checks["new jobs processed"] = not tally.lost(new)
        return r
    finally:
        env.close()


# ---- 4. connection faults through the proxy -----------------------------------------------

# Worst case by design from a heal to a worker's next fetch (docs/reliability.md): a silent
# connection is found within 2 s (ping every 0.5 s, dead after 1.5 s of silence), the caller
# retries at most 0.4 s after a new one is up: about 2.4 s, plus a dial and a round trip. The
# first job then starts at once (jobs are waiting). 4 s leaves 1.6 s for process scheduling on
# a busy 2-core host; the issue's own bound, 5 s, is checked too.
RESUME_BOUND = 4.0
# Time an ack needs to reach Redis after its job's body ends (a flush and a round trip, well
# under 0.1 s; a full second for a busy 2-core host).
ACK_MARGIN = 1.0


async def case_faults(scale: str) -> Result:
    s = SCALES[scale]
    env = Env("faults")
    proxy = await FaultProxy(env.redis.port).start()
    try:
        workers = [await env.worker(10, url=proxy.url) for _ in range(2)]
        # A direct worker keeps reaping, as in a fleet where only some workers are cut off.
        stop = asyncio.Event()
        acked: list[str] = []
        prod = asyncio.ensure_future(_producer(env, stop, acked, s["fault_rate"]))
        sleepers: list[str] = []

        async def fault(name: str, action: Any) -> tuple[str, float, float]:
            sleepers.extend(await env.enqueue("chaos:sleep", [(0.5,)] * 10))
            await asyncio.sleep(2)
            t0 = time.monotonic()
            res = action()
            if asyncio.iscoroutine(res):
                await res
            healed = time.monotonic()
            return name, t0, healed

        phases = []

        async def latency() -> None:
            proxy.latency(200)
            await asyncio.sleep(5)
            proxy.latency(0)

        phases.append(await fault("reset", proxy.reset))
        phases.append(await fault("latency 200ms/5s", latency))
        phases.append(await fault("blackhole 3s", lambda: proxy.blackhole(3)))
        long_start = math.inf  # when the fault longer than the lease began (none: never)
        if s["long_blackhole"]:
            phases.append(await fault("blackhole 15s", lambda: proxy.blackhole(15)))
            long_start = phases[-1][1]
        # Old connections stay silent after this one: a NAT or firewall forgot the flows.
        phases.append(await fault("bh 6s forgot", lambda: proxy.blackhole(6, forget=True)))
        phases.append(await fault("half-open", proxy.half_open))
        # Each worker must start something within RESUME_BOUND of every heal.
        recovery: list[float] = []
        per_phase: dict[str, float] = {}
        await asyncio.sleep(8)
        stop.set()
        await prod
        ids = acked + sleepers
        drained = await env.drained(90, None)
        entries = L.read(env.ledger)
        for name, _, healed in phases:
            worst = 0.0
            for w in workers:
                ts = [
                    e.t for e in entries if e.what == "start" and e.pid == w.pid and e.t >= healed
                ]
                gap = (min(ts) - healed) if ts else float("inf")
                worst = max(worst, gap)
            per_phase[name] = worst
            recovery.append(worst)
        tally = L.Tally.of(entries)
        lost = tally.lost(ids)
        dup = tally.duplicated(ids)
        # Duplicates are allowed only for faults longer than the lease. A run that ended just
        # as the long fault began had its ack cut off by it (seen: 5 jobs done 0.01 s before a
        # 15 s blackhole, re-run after their lease), so a duplicate counts against the short
        # faults only if its first run ended ACK_MARGIN before the long one began.
        dup_short = [
            j
            for j in dup
            if min((e.t for e in tally.dones[j]), default=long_start) < long_start - ACK_MARGIN
        ]
        r = Result("4 proxy faults (reset/lat/bh/half)", len(ids), len(lost), len(dup), recovery)
        r.checks = {
            "drained": drained,
            "lost 0": not lost,
            "no duplicates for faults shorter than the lease": not dup_short,
            "no worker idle >5s after heal": all(x <= 5 for x in recovery),
            f"no worker idle >{RESUME_BOUND}s after heal": all(x <= RESUME_BOUND for x in recovery),
            "workers alive": all(w.alive() for w in workers),
        }
        r.notes.append(
            "resume per fault: " + ", ".join(f"{k} {v:.2f}s" for k, v in per_phase.items())
        )
        r.notes.append(f"worst resume {max(recovery):.2f}s (bound {RESUME_BOUND}s)")
        return r
    finally:
        await proxy.close()
        env.close()


# ---- 5. event-loop blocking -------------------------------------------------------------------


async def case_block(scale: str) -> Result:
    env = Env("block")
    try:
        await env.worker(5)
        await env.worker(5)
        ids = await env.enqueue("chaos:block", [(20.0,)])
        drained = await env.drained(60, 1)
        tally = L.Tally.of(L.read(env.ledger))
        info = await env.app.broker.job(env.queue, ids[0])
        r = Result(
            "5 loop blocked 20s (lease 5s)", 1, len(tally.lost(ids)), len(tally.duplicated(ids))
        )
        r.checks = {
            "drained": drained,
            "ran once": len(tally.starts[ids[0]]) == 1,
            "succeeded on attempt 1": info is not None
            and info.state == "succeeded"
            and info.attempts == 1,
            "lease never lost": env.count_log("lease lost") == 0,
        }
        return r
    finally:
        env.close()


# ---- 6. poison messages ---------------------------------------------------------------------


def _envelope(task: str, version: int = 1, arg: bytes | None = None) -> bytes:
    """A hand-built msgpack envelope {v, t, a, k}."""
    t = task.encode()
    out = bytearray(b"\x84\xa1v")
    out.append(version if version < 128 else 0xCC)
    if version >= 128:
        out.append(version)
    out += b"\xa1t" + bytes([0xA0 | len(t)]) + t
    if arg is None:
        out += b"\xa1a\x90"
    else:
        out += b"\xa1a\x91\xc6" + len(arg).to_bytes(4, "big") + arg
    out += b"\xa1k\x80"
    return bytes(out)


async def case_poison(scale: str) -> Result:
    s = SCALES[scale]
    env = Env("poison")
    try:
        workers = [await env.worker(20) for _ in range(2)]
        n = s["poison_good"]
        half = n // 2
        good = await env.enqueue("chaos:noop", [(i,) for i in range(half)])
        b = env.app.broker
        expect: dict[str, str] = {}
        for payload, reason in [
            (b"\xc1\xff not msgpack", "bad_payload"),
            (_envelope("chaos:nope"), "unknown_task"),
            (_envelope("chaos:noop", version=99), "unsupported_version"),
            (_envelope("chaos:noop", arg=b"x" * ((1 << 20) + 10)), "oversized"),
        ]:
            (jid,) = await b.enqueue_raw(env.queue, [payload], 1)
            expect[jid] = reason
        killer = (await env.task("chaos:killer").enqueue()).id
        expect[killer] = "lease_expired"
        good += await env.enqueue("chaos:noop", [(i,) for i in range(half, n)])
        await asyncio.sleep(1)
        rss0 = {w.pid: w.rss() for w in workers}

        # Restart whatever the killer takes down.
        async def supervise() -> None:
            while True:
                for i, w in enumerate(workers):
                    if not w.alive():
                        workers[i] = await env.worker(20)
                await asyncio.sleep(0.2)

        sup = asyncio.ensure_future(supervise())

        async def settled() -> bool:
            for jid in expect:
                info = await b.job(env.queue, jid)
                if info is None or info.state != "dead":
                    return False
            return True

        ok = True
        try:
            await wait_for(
                settled, 3 * (LEASE + REAPER) + 30, "poison jobs to reach the DLQ", step=0.5
            )
        except AssertionError:
            ok = False
        drained = await env.drained(60, None)
        sup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sup
        reasons = {}
        attempts = {}
        for jid in expect:
            info = await b.job(env.queue, jid)
            reasons[jid] = (info.error or {}).get("reason") if info else None
            attempts[jid] = info.attempts if info else None
        tally = L.Tally.of(L.read(env.ledger))
        lost = tally.lost(good)
        growth = max(
            (w.rss() - rss0[w.pid] for w in workers if w.pid in rss0 and w.alive()), default=0
        )
        killer_runs = len(tally.starts.get(killer, ()))
        collateral = 0
        for j in lost:
            info = await b.job(env.queue, j)
            if info is not None and info.state == "dead":
                collateral += 1
        if lost:
            r_note = (
                f"{collateral} of {len(lost)} lost good jobs dead-lettered as collateral "
                "of the killer"
            )
        else:
            r_note = ""
        r = Result("6 poison messages", n + len(expect), len(lost), len(tally.duplicated(good)))
        r.checks = {
            "every poison dead-lettered": ok,
            "with its reason code": all(reasons[j] == expect[j] for j in expect),
            "process-killer dead after <=3 runs": killer_runs <= 3
            and reasons[killer] == "lease_expired",
            "good jobs all succeed": not lost and drained,
            "worker RSS growth <= 20 MiB": growth <= 20 << 20,
        }
        r.notes.append(
            f"reasons {sorted(set(reasons.values()), key=str)}; killer ran {killer_runs}x; "
            f"RSS growth {growth / (1 << 20):.1f} MiB"
        )
        if r_note:
            r.notes.append(r_note)
        return r
    finally:
        env.close()


# ---- 7. soak -------------------------------------------------------------------------------------


async def case_soak(scale: str) -> Result:
    s = SCALES[scale]
    env = Env("soak")
    try:
        n = s["soak_jobs"]
        w = await env.worker(50, env=env.env(ASYNCQ_CHAOS_LEDGER="", ASYNCQ_CHAOS_RESULT_TTL="5"))
        base_mem = env.redis.rss_bytes()
        # Short result TTL so the records expire within the case.
        task = env.task("chaos:noop")
        produced = 0
        chunk = 5000
        warm = min(n // 10, 100_000)
        rss_warm = 0
        samples = []
        while produced < n:
            k = min(chunk, n - produced)
            await task.enqueue_many([((produced + i,), {}) for i in range(k)])
            produced += k
            # Keep the backlog small so memory reflects steady state, not the queue.
            await wait_for(lambda: _backlog_below(env, 20_000), 600, "backlog to shrink", step=0.1)
            if produced >= warm and not rss_warm:
                await env.drained(60, None)
                rss_warm = w.rss()
                warm_at = produced
            samples.append(w.rss())
        drained = await env.drained(600, None)
        rss_end = w.rss()
        c = await env.counts()
        await asyncio.sleep(7)  # results expire (ttl 5 s)
        mem_end = env.redis.rss_bytes()
        per100k = (rss_end - rss_warm) / max(1, (n - warm_at)) * 100_000
        r = Result("7 soak, 1 worker", n, n - c.get("succeeded_total", 0), 0)
        r.checks = {
            "drained": drained,
            "RSS growth <= 1 MiB per 100k after warm-up": per100k <= 1 << 20,
            "Redis memory back to baseline (+1 MiB)": mem_end <= base_mem + (1 << 20),
        }
        r.notes.append(
            f"worker RSS {rss_warm >> 20} -> {rss_end >> 20} MiB ({per100k / 1024:.0f} KiB/100k); "
            f"Redis used_memory {base_mem >> 10} -> {mem_end >> 10} KiB"
        )
        return r
    finally:
        env.close()


async def _backlog_below(env: Env, limit: int) -> bool:
    c = await env.counts()
    return c.get("queued", 0) < limit


# ---- 8. clock skew ----------------------------------------------------------------------------


async def case_skew(scale: str) -> Result:
    s = SCALES[scale]
    faketime = shutil.which("faketime")
    r = Result("8 clock skew +-120s (faketime)", 0, 0, 0)
    if faketime is None:
        r.notes.append("faketime not installed: case skipped")
        r.checks = {"faketime available": False}
        return r
    env = Env("skew")
    try:
        fenv = env.env(FAKETIME_DONT_FAKE_MONOTONIC="1")
        fast = await env.worker(5, prefix=[faketime, "-f", "+120s"], env=fenv)
        slow = await env.worker(5, prefix=[faketime, "-f", "-120s"], env=fenv)
        # Long jobs: a worker whose clock runs ahead must not reclaim them early.
        longs = await env.enqueue("chaos:sleep", [(LEASE * 2,)] * 4)
        # ETAs: due 3 s from now on Redis's clock, must not run early or 120 s late.
        now = await env.app.broker.now()
        eta_task = env.task("chaos:noop").options(eta=now + 3)
        etas = [
            h.id for h in await eta_task.enqueue_many([((i,), {}) for i in range(s["skew_jobs"])])
        ]
        t_enq = time.monotonic()
        drained = await env.drained(60, None)
        tally = L.Tally.of(L.read(env.ledger))
        ids = longs + etas
        starts = [min(e.t for e in tally.starts[j]) - t_enq for j in etas if tally.starts.get(j)]
        r = Result(
            "8 clock skew +-120s (faketime)",
            len(ids),
            len(tally.lost(ids)),
            len(tally.duplicated(ids)),
        )
        r.recovery = []
        r.checks = {
            "drained": drained,
            "no early reclaim (long jobs ran once)": all(len(tally.starts[j]) == 1 for j in longs),
            "ETA not early": bool(starts) and min(starts) >= 2.5,
            "ETA not late": bool(starts) and max(starts) <= 3 + 3,
            # faketime runs the worker as its child: count distinct pids in the ledger.
            "both skewed workers ran jobs": fast.alive()
            and slow.alive()
            and len({e.pid for e in L.read(env.ledger)}) >= 2,
        }
        r.notes.append(
            f"ETA jobs started {min(starts):.2f}..{max(starts):.2f}s after enqueue (due at 3s)"
            if starts
            else "no ETA starts"
        )
        return r
    finally:
        env.close()


CASES = {
    "1": case_sigkill,
    "2": case_sigterm,
    "3a": lambda sc: case_redis_restart(sc, "aof-clean"),
    "3b": lambda sc: case_redis_restart(sc, "aof-kill9"),
    "3c": lambda sc: case_redis_restart(sc, "none"),
    "4": case_faults,
    "5": case_block,
    "6": case_poison,
    "7": case_soak,
    "8": case_skew,
}
SMOKE = ["1", "2", "4", "6"]
