"""The process pool behind ``executor="process"``: real child processes, no mocks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncq import JobContext, JobFailed
from asyncq._procpool import ProcessPool, ProcessTaskError
from tests.apps import proc_tasks as t
from tests.conftest import RedisServer, make_app, running
from tests.procutil import PYTHONPATH, WorkerProc, sample_env, wait_until

CTX = JobContext("job-1", "proc_tasks:x", "q", 2, 3, 41, 1_700_000_000.0)


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    p = ProcessPool(2)
    try:
        yield p
    finally:
        await p.close()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _alive(pid: int) -> bool:
    # A zombie has stopped running; an orphan may stay one where PID 1 does not reap.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _assert_stopped(path: Path) -> None:
    """The body appended a line every 50 ms; prove it appends no more."""
    assert _lines(path) >= 1, "the body never ran"
    before = _lines(path)
    time.sleep(0.4)  # eight ticks' worth: a live body would have written by now
    assert _lines(path) == before
    pids = {int(line) for line in path.read_text().splitlines()}
    assert not any(_alive(pid) for pid in pids)


async def test_result_round_trip(pool: ProcessPool) -> None:
    assert await pool.run(t.add, (1,), {"y": 2}, ctx=CTX, timeout=None) == 3
    # A registered task: the child resolves the module attribute (a Task) to its .fn.
    assert await pool.run(t.multiply, (6, 7), {}, ctx=CTX, timeout=5) == 42
    assert await pool.run(t.multiply.fn, (2, 3), {}, ctx=CTX, timeout=None) == 6


async def test_progress_reaches_the_parent_only_while_its_call_runs() -> None:
    one = ProcessPool(1)  # one child: the next calls run where the leftover thread still reports
    heard: list[tuple[float, str | None]] = []
    try:

        def hear(fraction: float, message: str | None) -> None:
            heard.append((fraction, message))

        got = await one.run(t.report_steps, (3, 0.0), {}, ctx=CTX, timeout=10, on_progress=hear)
        assert got == 3
        assert heard == [(1 / 3, "step 1 of 3"), (2 / 3, "step 2 of 3"), (1.0, "step 3 of 3")]
        assert await one.run(t.leave_a_reporter, (0.5,), {}, ctx=CTX, timeout=10) == "returned"
        # Its thread reports for 0.5 s more; none of it may be taken for these calls' replies.
        for i in range(20):
            assert await one.run(t.add, (i, 1), {}, ctx=CTX, timeout=10) == i + 1
            await asyncio.sleep(0.03)
    finally:
        await one.close()


async def test_what_a_task_prints_or_reads_leaves_the_protocol_alone(pool: ProcessPool) -> None:
    # Its stdout goes to stderr and its stdin is empty; the pipes stay the pool's.
    assert await pool.run(t.chatty, (50,), {}, ctx=CTX, timeout=30) == "read ''"
    assert await pool.run(t.add, (2, 3), {}, ctx=CTX, timeout=30) == 5  # same child, in step


async def test_current_job_in_the_child_is_the_ctx_passed(pool: ProcessPool) -> None:
    assert await pool.run(t.job, (), {}, ctx=CTX, timeout=None) == CTX


async def test_exception_carries_type_message_and_traceback(pool: ProcessPool) -> None:
    with pytest.raises(ProcessTaskError) as info:
        await pool.run(t.fail, ("boom",), {}, ctx=CTX, timeout=None)
    err = info.value
    assert (err.type_name, err.message, str(err)) == ("ValueError", "boom", "ValueError: boom")
    assert "proc_tasks.py" in err.remote_traceback
    assert "raise ValueError(message)" in err.remote_traceback


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [(t.exit_with, (3,), "SystemExit: 3"), (t.interrupt, (), "KeyboardInterrupt")],
)
async def test_base_exceptions_are_errors_and_the_child_lives_on(
    pool: ProcessPool, fn: object, args: tuple[object, ...], expected: str
) -> None:
    with pytest.raises(ProcessTaskError, match=f"^{expected}$"):
        await pool.run(fn, args, {}, ctx=CTX, timeout=None)  # type: ignore[arg-type]
    assert await pool.run(t.add, (1, 1), {}, ctx=CTX, timeout=None) == 2


@pytest.mark.parametrize(
    ("fn", "args", "how"),
    [(t.die, (1,), "exited with code 1"), (t.kill_self, (), "killed by SIGKILL")],
)
async def test_a_child_that_dies_is_reported_and_replaced(
    fn: object, args: tuple[object, ...], how: str
) -> None:
    pool = ProcessPool(1)
    try:
        first = await pool.run(t.nap, (0,), {}, ctx=CTX, timeout=None)
        with pytest.raises(ProcessTaskError) as info:
            await pool.run(fn, args, {}, ctx=CTX, timeout=None)  # type: ignore[arg-type]
        assert info.value.type_name == "ChildProcessDied"
        assert how in info.value.message
        second = await pool.run(t.nap, (0,), {}, ctx=CTX, timeout=None)
        assert second != first
    finally:
        await pool.close()


async def test_unpicklable_result_is_an_error(pool: ProcessPool) -> None:
    with pytest.raises(ProcessTaskError, match="could not be pickled"):
        await pool.run(t.unpicklable, (), {}, ctx=CTX, timeout=None)
    assert await pool.run(t.add, (2, 2), {}, ctx=CTX, timeout=None) == 4


async def test_timeout_kills_the_body_and_the_pool_recovers(
    pool: ProcessPool, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks"
    with pytest.raises(TimeoutError, match=r"timeout of 0\.5s"):
        await pool.run(t.tick, (str(ticks),), {}, ctx=CTX, timeout=0.5)
    _assert_stopped(ticks)
    assert await pool.run(t.add, (1, 2), {}, ctx=CTX, timeout=5) == 3


async def test_cancellation_kills_the_body(pool: ProcessPool, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    call = asyncio.create_task(pool.run(t.tick, (str(ticks),), {}, ctx=CTX, timeout=None))
    deadline = time.monotonic() + 20  # child start-up on a busy machine; normally ~0.1 s
    while _lines(ticks) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    _assert_stopped(ticks)
    assert await pool.run(t.add, (1, 2), {}, ctx=CTX, timeout=5) == 3


async def test_the_pool_is_bounded(pool: ProcessPool) -> None:
    started = time.monotonic()
    calls = [pool.run(t.nap, (0.5,), {}, ctx=CTX, timeout=None) for _ in range(4)]
    pids = await asyncio.gather(*calls)
    # Two children, four 0.5 s sleeps: at least two rounds. Lower bound only (a slow machine
    # only adds time); 0.95 leaves room for clock granularity.
    assert time.monotonic() - started >= 0.95
    assert len(set(pids)) <= pool.size == 2


async def test_waiting_for_a_child_does_not_count_against_the_timeout() -> None:
    pool = ProcessPool(1)
    try:
        # The third call waits >= 1.2 s for the only child, then runs 0.6 s: 1.8 s in all, more
        # than its 1.5 s timeout, yet only the 0.6 s run counts (0.9 s of slack for a busy box).
        calls = [pool.run(t.nap, (0.6,), {}, ctx=CTX, timeout=1.5) for _ in range(3)]
        assert len(set(await asyncio.gather(*calls))) == 1
    finally:
        await pool.close()


async def test_functions_not_at_module_level_are_refused(pool: ProcessPool) -> None:
    def nested() -> None:
        pass

    with pytest.raises(ValueError, match=r"nested.*must be defined at module level"):
        await pool.run(nested, (), {}, ctx=CTX, timeout=None)
    with pytest.raises(ValueError, match="module level"):
        await pool.run(lambda: None, (), {}, ctx=CTX, timeout=None)


async def test_close_stops_running_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    pool = ProcessPool(1)
    ticks = tmp_path / "ticks"
    call = asyncio.create_task(pool.run(t.tick, (str(ticks),), {}, ctx=CTX, timeout=None))
    deadline = time.monotonic() + 20  # child start-up on a busy machine
    while _lines(ticks) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await pool.close()
    await pool.close()  # idempotent
    with pytest.raises(ProcessTaskError, match="pool was closed"):
        await call
    _assert_stopped(ticks)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(t.add, (1, 2), {}, ctx=CTX, timeout=None)


PARENT = """
import asyncio, os, sys, time
from asyncq import JobContext
from asyncq._procpool import ProcessPool

def tick(path):  # defined in __main__: the child loads this file as __mp_main__
    while True:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(0.05)

if __name__ == "__main__":
    ctx = JobContext("j", "t", "q", 1, 1, 1, 0.0)
    asyncio.run(ProcessPool(1).run(tick, (sys.argv[1],), {}, ctx=ctx, timeout=None))
"""


def test_children_exit_when_the_worker_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT))
    ticks = tmp_path / "ticks"
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    parent = subprocess.Popen([sys.executable, str(script), str(ticks)], env=env)
    try:
        wait_until(lambda: _lines(ticks) > 0, 20, "the child to start ticking")
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    child = int(ticks.read_text().splitlines()[0])
    assert child != parent.pid
    # The child notices at once (its request pipe closes); 10 s is for a very busy machine.
    wait_until(lambda: not _alive(child), 10, "the orphaned child to exit")
    _assert_stopped(ticks)


# ---- through a worker ----------------------------------------------------------------------


async def test_a_worker_stops_a_process_task_at_its_timeout(
    broker_url: str, queue: str, tmp_path: Path
) -> None:
    app = make_app(broker_url, queue)
    ticking = app.task(name="procpool:tick", executor="process", timeout=0.5)(t.tick)
    whoami = app.task(name="procpool:job", executor="process")(t.job_facts)
    ticks = tmp_path / "ticks"
    async with running(app, processes=1):
        handle = await ticking.enqueue(str(ticks))
        with pytest.raises(JobFailed) as info:
            await handle.result(timeout=20)
        _assert_stopped(ticks)  # before the fix the body went on in a thread
        assert info.value.reason == "timeout"
        assert "child process was terminated" in info.value.message
        second = await whoami.enqueue()
        ctx = await second.result(timeout=20)  # the only child was replaced
    assert (ctx["job_id"], ctx["queue"], ctx["attempt"]) == (second.id, queue, 1)


async def test_asyncq_worker_kills_process_tasks_and_never_leaves_children(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    env = sample_env(redis_server.url, queue)
    worker = WorkerProc(tmp_path, env, "-q", f"{queue}=2", app="tests.apps.proc_tasks:app")
    procs.append(worker)
    worker.started()
    app = make_app(redis_server.url, queue)
    ticking = app.task(name=t.TICK, executor="process", timeout=0.5)(t.tick)
    forever = app.task(name=t.TICK_FOREVER, executor="process")(t.tick)

    first = tmp_path / "first"
    with pytest.raises(JobFailed, match=r"\(timeout\)"):
        await (await ticking.enqueue(str(first))).result(timeout=20)
    _assert_stopped(first)

    second = tmp_path / "second"
    await forever.enqueue(str(second))
    wait_until(lambda: _lines(second) > 0, 20, "the second job to start in a child")
    worker.signal(signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    child = int(second.read_text().splitlines()[0])
    # The child notices at once (its request pipe closes); 10 s is for a very busy machine.
    wait_until(lambda: not _alive(child), 10, "the killed worker's child to exit")
    _assert_stopped(second)
