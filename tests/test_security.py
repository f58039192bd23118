"""The ACLs of docs/security.md on a real server: a worker under the worker ACL runs jobs end to
end for a producer under the producer ACL, which cannot lease them itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncq
from tests.conftest import CONSUMER, RedisServer, make_app, running

ACL = Path(__file__).resolve().parent.parent / "docs" / "acl"


def acl_user(server: RedisServer, user: str) -> str:
    rules = (ACL / f"{user}.acl").read_text().split()
    server.cli("ACL", "SETUSER", user, "on", f">{user}-secret", *rules)
    return f"redis://{user}:{user}-secret@127.0.0.1:{server.port}/0"


async def _add(x: int, y: int) -> int:
    asyncq.current_job().progress(0.5, "adding")
    return x + y


async def _slow() -> None:
    await asyncio.sleep(30)


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


async def test_workers_and_producers_run_under_the_documented_acls(
    acl_server: RedisServer, queue: str
) -> None:
    worker_app = make_app(acl_user(acl_server, "worker"), queue)
    producer = make_app(acl_user(acl_server, "producer"), queue)
    for app in (worker_app, producer):  # one code base, two roles
        app.task(name="acl:add")(_add)
        app.task(name="acl:slow")(_slow)
    add, slow = producer.tasks["acl:add"], producer.tasks["acl:slow"]
    async with running(worker_app):
        h = await add.enqueue(2, 3)
        events = [e.kind async for e in h.events()]
        assert await h.result(timeout=20) == 5
        assert "progress" in events and (await h.progress()) is not None
        # Cancelling a running job from the producer reaches the worker.
        s = await slow.enqueue()
        while await s.status() != "running":
            await asyncio.sleep(0.05)
        assert await s.cancel()
        with pytest.raises(asyncq.JobCancelled):
            await s.result(timeout=20)
        grouped = await asyncq.group([add.s(i, i) for i in range(3)]).enqueue()
        assert await grouped.results(timeout=20) == [0, 2, 4]

    # The producer cannot lease: the server refuses its fetch script (reported as a script
    # error, retried with backoff), and the job stays queued.
    left = await add.enqueue(1, 1)
    consumer = await producer.broker.consumer(queue, "intruder", ["acl:add"], **CONSUMER)
    fetching = asyncio.ensure_future(consumer.fetch(1))
    try:
        seen = await asyncio.wait_for(consumer.events(), 10)
        assert any("NoPerm" in (e.message or "") for e in seen), seen
        assert not fetching.done()
        assert await left.status() == "queued"
    finally:
        fetching.cancel()
        await consumer.close(5.0)


def test_security_md_shows_the_acls_the_tests_use() -> None:
    doc = (ACL.parent / "security.md").read_text()
    for user in ("producer", "worker"):
        assert (ACL / f"{user}.acl").read_text().strip() in doc


async def test_an_enqueue_under_the_producer_acl_sends_the_wake_note(
    acl_server: RedisServer, queue: str
) -> None:
    # Workers on a Redis Cluster hear of new jobs by this note (SPUBLISH on the wake list's
    # shard channel, see docs/scaling.md); the script sends it as the producer, so the
    # producer ACL must allow it, or cluster workers would wait for their 1.5 s look.
    producer = make_app(acl_user(acl_server, "producer"), queue)
    acl_user(acl_server, "worker")
    add = producer.task(name="acl:add")(_add)
    channel = f"asyncq:{{{queue}#0}}:wake"
    sub = await asyncio.create_subprocess_exec(
        "redis-cli", "-p", str(acl_server.port), "--user", "worker", "--pass", "worker-secret",
        "--no-auth-warning", "SSUBSCRIBE", channel, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert sub.stdout is not None
    try:
        heard: list[str] = []

        async def line() -> str:
            assert sub.stdout is not None
            got = (await asyncio.wait_for(sub.stdout.readline(), 10)).decode().strip()
            heard.append(got)
            return got

        while await line() != "1":  # "ssubscribe", the channel, 1 subscription: confirmed
            pass
        await add.enqueue(1, 2)
        assert [await line() for _ in range(3)] == ["smessage", channel, "1"], heard
    finally:
        sub.kill()
        await sub.wait()
