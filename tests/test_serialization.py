"""Serializers, compression and typed values (pydantic models, dataclasses) as task arguments
and results, on both brokers with a real worker (docs/serialization.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import msgpack
import pytest
from pydantic import BaseModel, Field

import asyncq
from asyncq.cli import job_record
from asyncq.serialization import Serialized, register
from tests.conftest import RedisServer, make_app, running

pytestmark = pytest.mark.timeout(60)


class Order(BaseModel):
    id: int
    placed: dt.datetime
    lines: list[str] = Field(min_length=1)


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Segment:
    start: Point
    end: Point


class Upper:
    """A user serializer: JSON, upper-casing strings on the way in (so its use shows)."""

    name = "upper-json"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value.upper() if isinstance(value, str) else value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


UPPER = register(Upper())


async def test_models_and_dataclasses_arrive_typed_and_come_back_typed(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)
    seen: list[Any] = []

    @app.task(name="ser:place")
    async def place(order: Order, at: Point, route: Segment | None = None) -> Order:
        seen.extend([order, at, route])
        return order.model_copy(update={"id": order.id + at.x})

    order = Order(id=1, placed=dt.datetime(2026, 1, 2, 3, 4, 5), lines=["a"])
    async with running(app):
        handle = await place.enqueue(order, Point(10, 0), route=Segment(Point(0, 0), Point(1, 1)))
        result = await handle.result(timeout=10)
        # The worker validated every typed argument back into its class.
        assert seen == [order, Point(10, 0), Segment(Point(0, 0), Point(1, 1))]
        assert isinstance(result, Order) and result.id == 11
        assert result.placed == order.placed
        # Plain values through a handle that does not know the task (app.job), as stored.
        plain = await app.job(handle.id).result(timeout=1)
        assert plain == {"id": 11, "placed": "2026-01-02T03:04:05", "lines": ["a"]}
        # What travels are plain values: tools (info, dashboard) read them without the class.
        info = await app.job(handle.id).info()
        assert info is not None and info.args is not None
        assert info.args[1] == {"x": 10, "y": 0}


async def test_input_that_fails_validation_is_dead_lettered_without_retries(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)
    runs = 0

    @app.task(name="ser:check", retries=3)
    async def check(order: Order) -> None:
        nonlocal runs
        runs += 1

    async with running(app):
        # A dict passes through the producer as it is; the worker's validation refuses it.
        handle = await check.enqueue({"id": "not a number", "placed": "x", "lines": []})  # type: ignore[arg-type]
        with pytest.raises(asyncq.JobFailed) as err:
            await handle.result(timeout=10)
    assert err.value.reason == "invalid_args"
    assert "ValidationError" in err.value.type and "id" in err.value.message
    assert runs == 0
    info = await handle.info()
    assert info is not None and info.attempts == 1 and info.state == "dead"


@pytest.mark.parametrize("serializer", ["json", UPPER])
async def test_a_tasks_serializer_carries_its_arguments_and_result(
    broker_url: str, queue: str, serializer: Any
) -> None:
    app = make_app(broker_url, queue)

    @app.task(name="ser:echo", serializer=serializer)
    async def echo(text: str, meta: dict[str, Any]) -> dict[str, Any]:
        return {"text": text, "meta": meta}

    async with running(app):
        handle = await echo.enqueue("hi", meta={"n": [1, 2]})
        expected_text = "hi" if serializer == "json" else "HI"
        want = {"text": expected_text, "meta": {"n": [1, 2]}}
        assert await handle.result(timeout=10) == want
        # Any handle reads it: the stored value names its serializer.
        assert await app.job(handle.id).result(timeout=1) == want
        info = await handle.info()
        assert info is not None and info.args is not None
        assert isinstance(info.args[0], Serialized)
        assert info.args[0].serializer == getattr(serializer, "name", serializer)


async def test_an_app_wide_serializer_and_typed_values_together(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue, serializer="json")

    @app.task(name="ser:move")
    async def move(p: Point, by: int) -> Point:
        return Point(p.x + by, p.y + by)

    @app.task(name="ser:native", serializer="msgpack")
    async def native(when: dt.date) -> dt.date:
        return when  # a date: the native codec keeps it, JSON would not

    async with running(app):
        assert await (await move.enqueue(Point(1, 2), 3)).result(timeout=10) == Point(4, 5)
        day = dt.date(2026, 12, 3)
        assert await (await native.enqueue(day)).result(timeout=10) == day


async def test_a_worker_refuses_a_serializer_its_app_does_not_name(
    broker_url: str, queue: str
) -> None:
    producer = make_app(broker_url, queue)
    worker = make_app(broker_url, queue)

    @producer.task(name="ser:shout", serializer=UPPER)
    async def shout(text: str) -> str:
        raise AssertionError("runs in the worker")

    @worker.task(name="ser:shout")
    async def shout_here(text: str) -> str:
        return text

    handle = await shout.enqueue("x")
    async with running(worker):
        with pytest.raises(asyncq.JobFailed) as err:
            await handle.result(timeout=10)
    assert err.value.reason == "unknown_serializer"
    assert "upper-json" in err.value.message


def test_unserializable_arguments_fail_at_enqueue_naming_the_argument() -> None:
    app = asyncq.App("memory://ser-args", serializer="json")

    @app.task(name="ser:take")
    async def take(a: int, payload: Any) -> None: ...

    with pytest.raises(TypeError, match=r"argument 'payload'.*'json'"):
        take.enqueue_sync(1, object())


def test_pickle_needs_signing_and_bad_serializers_are_refused() -> None:
    with pytest.raises(ValueError, match="signing_keys"):
        asyncq.App("memory://ser-p", serializer="pickle")
    app = asyncq.App("memory://ser-p")
    with pytest.raises(ValueError, match="signing_keys"):
        app.task(name="ser:p", serializer="pickle")(lambda: None)
    with pytest.raises(LookupError, match="no serializer 'nope'"):
        asyncq.App("memory://ser-p", serializer="nope")

    class Nameless:
        name = ""

        def dumps(self, value: Any) -> bytes:
            return b""

        def loads(self, data: bytes) -> Any:
            return None

    with pytest.raises(ValueError, match="needs a name"):
        asyncq.App("memory://ser-p", serializer=Nameless())


async def test_pickle_with_signing_carries_any_object(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, signing_keys=["k"], serializer="pickle")

    @app.task(name="ser:span")
    async def span(r: range) -> range:  # no native or JSON form
        return range(r.start, r.stop * 2)

    async with running(app):
        assert await (await span.enqueue(range(1, 5))).result(timeout=10) == range(1, 10)


async def test_large_envelopes_are_compressed_and_run(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue, compress_over=4096, signing_keys=["k"])

    @app.task(name="ser:size")
    async def size(blob: str, small: int) -> int:
        return len(blob) + small

    async with running(app):
        big = await size.enqueue("abc" * 100_000, 1)
        small = await size.enqueue("abc", 1)
        assert await big.result(timeout=10) == 300_001
        assert await small.result(timeout=10) == 4
        info = await big.info()
        assert info is not None and info.args == ("abc" * 100_000, 1)  # tools open it


async def test_what_redis_stores_is_compressed(redis_server: RedisServer, queue: str) -> None:
    app = make_app(redis_server.url, queue, compress_over=4096)

    @app.task(name="ser:size")
    async def size(blob: str) -> int:
        return len(blob)

    handle = await size.enqueue("abc" * 100_000)
    key = f"asyncq:{{{queue}#0}}:job:{handle.id}"
    fields = redis_server.cli("HKEYS", key).split()
    stored = max(int(redis_server.cli("HSTRLEN", key, f)) for f in fields)
    assert stored < 5_000, stored  # 300 kB of repetitive text, in a few hundred bytes


async def test_a_compressed_job_that_would_expand_past_the_limit_is_dead_lettered(
    broker_url: str, queue: str
) -> None:
    producer = make_app(broker_url, queue, compress_over=1024, max_payload=8 << 20)
    worker = make_app(broker_url, queue)  # max_payload 1 MiB

    @producer.task(name="ser:bomb")
    async def bomb(blob: bytes) -> None: ...

    @worker.task(name="ser:bomb")
    async def bomb_here(blob: bytes) -> None:
        raise AssertionError("must not run")

    handle = await bomb.enqueue(b"\0" * (4 << 20))  # 4 MiB of zeros: a few hundred bytes packed
    odd = msgpack.packb({"v": 1, "t": "ser:bomb", "z": "lz4", "p": b"x"})
    (odd_id,) = await worker.broker.enqueue_raw(queue, [odd], 1)
    async with running(worker):
        with pytest.raises(asyncq.JobFailed) as err:
            await handle.result(timeout=10)
        assert err.value.reason == "oversized"
        with pytest.raises(asyncq.JobFailed) as err:
            await worker.job(odd_id).result(timeout=10)
        assert err.value.reason == "bad_payload"
        assert "unknown compression" in err.value.message


def test_compress_over_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="compress_over"):
        asyncq.App("memory://ser-c", compress_over=-1)


async def test_typed_values_flow_from_one_member_to_the_next(broker_url: str, queue: str) -> None:
    app = make_app(broker_url, queue)

    @app.task(name="ser:start")
    async def start(x: int) -> Point:
        return Point(x, x)

    @app.task(name="ser:grow")
    async def grow(p: Point, by: int) -> Point:
        assert isinstance(p, Point)
        return Point(p.x + by, p.y)

    async with running(app):
        handle = await asyncq.chain(start.s(1), grow.s(by=5)).enqueue()
        assert await handle.result(timeout=10) == {"x": 6, "y": 1}


async def test_tools_show_json_results_and_never_unpickle(broker_url: str, queue: str) -> None:
    """``asyncq job`` and the dashboard show what a job stored without running task code: a
    JSON result decoded, a pickled one as its serializer and size only."""
    app = make_app(broker_url, queue, signing_keys=["k"])

    @app.task(name="ser:as-json", serializer="json")
    async def as_json() -> dict[str, list[int]]:
        return {"a": [1, 2]}

    @app.task(name="ser:as-pickle", serializer="pickle")
    async def as_pickle() -> range:
        return range(3)

    async with running(app):
        j = await as_json.enqueue()
        p = await as_pickle.enqueue()
        await j.result(timeout=10)
        await p.result(timeout=10)
    j_info, p_info = await j.info(), await p.info()
    assert j_info is not None and p_info is not None
    assert job_record(j_info)["result"] == {"a": [1, 2]}
    shown = job_record(p_info)["result"]
    assert shown == {"serializer": "pickle", "bytes": shown["bytes"]} and shown["bytes"] > 0
    json.dumps(job_record(p_info))  # printable as the CLI prints it
