"""The async_q shim (docs/migration.md): old submit_task call sites keep working for
registered tasks, with a deprecation warning, and refuse a plain function clearly."""

from __future__ import annotations

import pytest

from asyncq.compat import STATUS, submit_task
from tests.conftest import make_app, running


async def test_submit_task_enqueues_a_registered_task_and_warns(
    broker_url: str, queue: str
) -> None:
    app = make_app(broker_url, queue)

    @app.task(name="compat:greet")
    async def greet(name: str, punct: str = ".") -> str:
        return f"hello {name}{punct}"

    with pytest.warns(DeprecationWarning, match=r"compat:greet\.enqueue_sync"):
        plain = submit_task(greet, ["ann"])
    with pytest.warns(DeprecationWarning, match=r"options\(queue='other'\)"):
        elsewhere = submit_task(greet, ["bob"], {"punct": "!"}, queue_name="other")
    async with running(app, queues={queue: 2, "other": 2}):
        assert await app.job(plain, queue).result(timeout=10) == "hello ann."
        assert await app.job(elsewhere, "other").result(timeout=10) == "hello bob!"
        assert (await app.job(elsewhere, "other").status()) in STATUS["finished"]


def test_a_plain_function_is_refused_with_the_fix() -> None:
    def job() -> None:
        return None

    with pytest.raises(TypeError, match=r"decorate the function with @app\.task"):
        submit_task(job)  # type: ignore[arg-type]
