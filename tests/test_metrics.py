"""Prometheus metrics (docs/operations.md): a live ``asyncq-worker --metrics-port`` scraped over
HTTP and read with prometheus_client's own text parser; every outcome counted from the broker's
verdicts, the histograms, the gauges read from Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import asyncq
from tests.apps import metered
from tests.conftest import RedisServer, free_port, make_app, running
from tests.procutil import ROOT, WorkerProc, await_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

OUTCOMES = {"succeeded", "failed", "retried", "dead", "cancelled", "released"}


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        assert r.status == 200
        return str(r.read().decode())


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_live_worker_counts_every_outcome_and_serves_it(
    redis_server: RedisServer, queue: str, tmp_path: Path, procs: list[WorkerProc]
) -> None:
    url, port = redis_server.url, free_port()
    env = dict(
        os.environ,
        ASYNCQ_TEST_URL=url,
        ASYNCQ_TEST_QUEUE=queue,
        ASYNCQ_TEST_TMP=str(tmp_path),
        PYTHONPATH=str(ROOT),
    )
    args = ("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    worker = WorkerProc(tmp_path, env, *args, app="tests.apps.metered:app")
    procs.append(worker)
    worker.started()
    assert f"metrics at http://127.0.0.1:{port}/metrics" in worker.log()
    app = metered.build(url, queue)
    t = app.tasks
    oks = [await t["m:ok"].enqueue(i) for i in range(5)]
    flaky, broken, later = [await t[n].enqueue() for n in ("m:flaky", "m:broken", "m:later")]
    slow = await t["m:slow"].enqueue()
    (poison,) = await app.broker.enqueue_raw(queue, [b"\xc1garbage"], 1)

    assert [await h.result(timeout=20) for h in oks] == [0, 1, 2, 3, 4]
    assert await flaky.result(timeout=20) == "second"
    assert await later.result(timeout=20) == "ran"
    with pytest.raises(asyncq.JobFailed):
        await broken.result(timeout=20)
    await await_until(lambda: _is(slow, "running"), 20, "the slow job to start")
    await slow.cancel()
    with pytest.raises(asyncq.JobCancelled):
        await slow.result(timeout=20)
    await await_until(lambda: _dead(app, queue, poison), 20, "the poison job to be dead-lettered")

    want = {
        ("m:ok", "succeeded"): 5,
        ("m:flaky", "retried"): 1,
        ("m:flaky", "succeeded"): 1,
        ("m:broken", "failed"): 1,
        ("m:later", "released"): 1,
        ("m:later", "succeeded"): 1,
        ("m:slow", "cancelled"): 1,
        ("(unknown)", "dead"): 1,
    }

    async def counted() -> bool:
        got = samples(await asyncio.to_thread(scrape, port))
        return all(
            value(got, "asyncq_jobs_total", queue=queue, task=task, outcome=o) == n
            for (task, o), n in want.items()
        )

    # The counters move when the broker's verdict is back, a moment after the result shows.
    await await_until(counted, 10, f"the outcomes {want}")
    got = samples(await asyncio.to_thread(scrape, port))
    outcomes = {k[1] for k in got if k[0] == "asyncq_jobs_total"}
    assert all(dict(ls)["outcome"] in OUTCOMES for ls in outcomes)
    total = sum(v for (name, _), v in got.items() if name == "asyncq_jobs_total")
    assert total == sum(want.values()), "nothing counted twice or elsewhere"

    # Execution times: five runs of m:ok, each sleeping 10 ms.
    runs = value(got, "asyncq_job_duration_seconds_count", queue=queue, task="m:ok")
    took = value(got, "asyncq_job_duration_seconds_sum", queue=queue, task="m:ok")
    assert runs == 5 and 0.05 <= took < 5, (runs, took)
    inf = value(got, "asyncq_job_duration_seconds_bucket", queue=queue, task="m:ok", le="+Inf")
    assert inf == 5
    # Waits: every lease (12 of them: 5 + 2 + 1 + 2 + 1 + 1) by the broker's clock.
    assert value(got, "asyncq_job_wait_seconds_count", queue=queue) == 12
    assert value(got, "asyncq_fetch_batch_size_count", queue=queue) >= 1
    assert value(got, "asyncq_jobs_in_flight", queue=queue) == 0
    # Read from Redis at the scrape: the broken and the poison job are dead.
    for state in ("queued", "scheduled", "running"):
        assert value(got, "asyncq_queue_jobs", queue=queue, state=state) == 0, state
    assert value(got, "asyncq_queue_jobs", queue=queue, state="dead") >= 2
    assert value(got, "asyncq_queue_paused", queue=queue) == 0
    assert value(got, "asyncq_broker_up") == 1
    for name in (
        "asyncq_lease_renewals_total",
        "asyncq_leases_lost_total",
        "asyncq_reconnects_total",
        "asyncq_event_loop_lag_seconds",
    ):
        assert any(k[0] == name for k in got), name
    assert scrape(port, "/healthz") == "ok\n"
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(port, "/nope")
    assert missing.value.code == 404
    missing.value.close()


async def _is(handle: Any, state: str) -> bool:
    return bool(await handle.status() == state)


async def _dead(app: asyncq.App, queue: str, job_id: str) -> bool:
    info = await app.broker.job(queue, job_id)
    return info is not None and info.state == "dead"


async def test_metrics_show_limiters_and_paused_queues(
    redis_server: RedisServer, queue: str
) -> None:
    app = make_app(redis_server.url, queue, metrics_port=0, metrics_host="127.0.0.1")

    @app.task(name="m:limited", concurrency_limit=1)
    async def limited() -> None:
        await asyncio.sleep(30)

    async with running(app) as worker:
        assert worker.metrics_port not in (None, 0)
        port = worker.metrics_port
        assert port is not None
        await limited.enqueue()
        await limited.enqueue()  # waits on the limiter behind the first
        await app.broker.pause(queue, True)

        async def seen() -> bool:
            got = samples(await asyncio.to_thread(scrape, port))
            running_ = [v for (n, _), v in got.items() if n == "asyncq_limiter_running"]
            waiting = [v for (n, _), v in got.items() if n == "asyncq_limiter_waiting"]
            return (
                running_ == [1]
                and waiting == [1]
                and value(got, "asyncq_queue_paused", queue=queue) == 1
            )

        # The gauges are cached for a second; a scrape a second later reads Redis again.
        await await_until(seen, 10, "a limiter with one running and one waiting, paused")


async def test_without_a_metrics_port_nothing_listens_or_counts(
    redis_server: RedisServer, queue: str
) -> None:
    app = make_app(redis_server.url, queue)

    @app.task(name="m:plain")
    async def plain() -> int:
        return 1

    async with running(app) as worker:
        assert worker.metrics_port is None
        assert await (await plain.enqueue()).result(timeout=10) == 1


def test_a_port_in_use_is_a_clear_error(redis_server: RedisServer, queue: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = make_app(redis_server.url, queue, metrics_port=port, metrics_host="127.0.0.1")
        app.task(name="m:x")(metered.ok)
        worker = app.worker(handle_signals=False)
        with pytest.raises(ValueError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            asyncio.run(worker.run())


async def test_the_grafana_dashboard_asks_only_for_series_a_worker_serves(queue: str) -> None:
    # docs/grafana/asyncq.json: every metric its queries name is in a real scrape.
    dashboard = json.loads((ROOT / "docs" / "grafana" / "asyncq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    asked = {m for e in exprs for m in re.findall(r"\basyncq_[a-z_]+", e)}
    app = make_app("memory://", queue, metrics_port=0, metrics_host="127.0.0.1")

    @app.task(name="m:limited", concurrency_limit=5)
    async def limited() -> None:
        return None

    async with running(app) as worker:
        await (await limited.enqueue()).result(timeout=10)
        assert worker.metrics_port is not None
        served = {name for name, _ in samples(await asyncio.to_thread(scrape, worker.metrics_port))}
    assert asked and asked <= served, asked - served
