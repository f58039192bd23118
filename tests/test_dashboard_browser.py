"""The dashboard in a real headless Chromium (Playwright): load it, filter, open a job, retry a
dead job, cancel a running one, and see counts change live through the event stream.

With ``ASYNCQ_SCREENSHOTS=<dir>`` it also writes the screenshots of docs/dashboard.md there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import asyncq
from asyncq.dashboard import create_app
from tests.conftest import RedisServer, make_app, running
from tests.dashutil import Served
from tests.procutil import await_until

try:
    import playwright.async_api as playwright_api
except ImportError:  # pragma: no cover (CI installs it)
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)

expect = playwright_api.expect

CHROMIUM = os.environ.get("ASYNCQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Milliseconds a page condition may take (generous: a busy 2-core machine).
WAIT = 20_000


def need_browser() -> str:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (set ASYNCQ_CHROMIUM, or install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def build(url: str, queue: str) -> asyncq.App:
    app = make_app(url, queue, partitions={f"{queue}-orders": 4})

    @app.task(name="ui:sleep")
    async def sleep(seconds: float) -> str:
        asyncq.current_job().progress(0.25, "warming up")
        await asyncio.sleep(seconds)
        return "done"

    @app.task(name="ui:add")
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="ui:charge", queue=f"{queue}-billing", sensitive=True)
    async def charge(card: str) -> None:
        raise RuntimeError(f"card declined: code {len(card)}")

    return app


@pytest.fixture
async def page(redis_server: RedisServer) -> AsyncIterator[Any]:
    executable = need_browser()
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            yield await context.new_page()
        finally:
            await browser.close()


def shoot_dir() -> Path | None:
    where = os.environ.get("ASYNCQ_SCREENSHOTS")
    if not where:
        return None
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_browse_filter_retry_cancel_and_live_counts(
    page: Any, redis_server: RedisServer, queue: str
) -> None:
    app = build(redis_server.url, queue)
    billing = f"{queue}-billing"
    # Dead jobs first, in a queue no worker will serve afterwards.
    async with running(app, queues={billing: 2}):
        dead = [await app.tasks["ui:charge"].enqueue("4111-1111") for _ in range(2)]
        for h in dead:
            await await_until(lambda h=h: _state(app, billing, h.id, "dead"), 20, "a charge to die")
    served = Served(create_app(app, refresh=0.2))
    try:
        async with running(app, queues={queue: 5, f"{queue}-orders": 2}):
            await _scenario(page, app, served.url, queue, dead)
    finally:
        served.stop()


async def _state(app: asyncq.App, queue: str, job_id: str, state: str) -> bool:
    info = await app.broker.job(queue, job_id)
    return info is not None and info.state == state


async def _scenario(page: Any, app: asyncq.App, url: str, queue: str, dead: list[Any]) -> None:
    billing = f"{queue}-billing"
    shots = shoot_dir()
    nightly = app.schedule("nightly-report", "ui:add", cron="0 3 * * *", args=(1, 2))
    await app.broker.sync_schedule(nightly.queue, nightly.name, nightly.definition())
    long = await app.tasks["ui:sleep"].enqueue(60)
    await (
        app.tasks["ui:add"]
        .options(queue=f"{queue}-orders")
        .enqueue_many([((i, i), {}) for i in range(8)])
    )
    await await_until(lambda: _state(app, queue, long.id, "running"), 20, "the long job to run")

    await page.goto(url + "/")
    row = page.locator(f'#queues tr[data-queue="{queue}"]')
    await expect(row).to_be_visible(timeout=WAIT)
    await expect(page.locator("#live")).to_have_text("live", timeout=WAIT)
    await expect(row.locator('td[data-count="running"]')).to_have_text("1", timeout=WAIT)

    # Live: a job enqueued now shows up in the counts without a reload.
    await app.tasks["ui:add"].options(delay=3600).enqueue(1, 2)
    await expect(row.locator('td[data-count="scheduled"]')).to_have_text("1", timeout=WAIT)
    sched = page.locator('#schedules tr[data-schedule="nightly-report"]')
    await sched.locator('button[data-act="schedule_pause"]').click()
    await expect(sched).to_contain_text("paused", timeout=WAIT)
    await sched.locator('button[data-act="schedule_resume"]').click()
    await expect(sched.locator('button[data-act="schedule_pause"]')).to_be_visible(timeout=WAIT)
    if shots:
        # Some traffic for the throughput lines (the pauses shape the picture, nothing waits
        # on them).
        orders = app.tasks["ui:add"].options(queue=f"{queue}-orders")
        for n in range(1, 12):
            await orders.enqueue_many([((i, i), {}) for i in range(n * 5)])
            await asyncio.sleep(0.25)
        await page.screenshot(path=str(shots / "dashboard-queues.png"), full_page=True)

    # Filter the dead jobs of the billing queue by task, open one: args hidden, error shown.
    await page.goto(f"{url}/#/queue/{billing}?state=dead")
    await expect(page.locator("#jobs tr[data-job]")).to_have_count(2, timeout=WAIT)
    await page.fill('#filter input[name="task"]', "nothing-like-this")
    await page.click("#filter button")
    await expect(page.locator("#jobs")).to_contain_text("no dead jobs", timeout=WAIT)
    await page.fill('#filter input[name="task"]', "charge")
    await page.click("#filter button")
    await expect(page.locator("#jobs tr[data-job]")).to_have_count(2, timeout=WAIT)
    await page.click(f'#jobs tr[data-job="{dead[0].id}"] a')
    await expect(page.locator("#jobstate")).to_have_text("dead", timeout=WAIT)
    await expect(page.locator("#traceback")).to_contain_text("card declined", timeout=WAIT)
    await expect(page.locator("#args")).to_contain_text("sensitive", timeout=WAIT)
    assert "4111" not in await page.content()

    # Retry it: no worker serves billing now, so it waits, queued.
    await page.click('.actions button[data-act="retry"]')
    await expect(page.locator("#flash")).to_contain_text("moved 1 dead job(s)", timeout=WAIT)
    await expect(page.locator("#jobstate")).to_have_text("queued", timeout=WAIT)
    await expect(page.locator('.why li[data-why="no_worker"]')).to_be_visible(timeout=WAIT)
    if shots:
        await page.screenshot(path=str(shots / "dashboard-job.png"), full_page=True)

    # The running job: its page shows progress; cancel it from the queue's running tab.
    await page.goto(f"{url}/#/job/{queue}/{long.id}")
    await expect(page.locator("#timeline")).to_contain_text("warming up", timeout=WAIT)
    await page.goto(f"{url}/#/queue/{queue}?state=running")
    await page.click(f'#jobs tr[data-job="{long.id}"] button[data-act="cancel"]')
    await expect(page.locator("#flash")).to_contain_text("requested", timeout=WAIT)
    await expect(page.locator('#qhead td[data-count="running"]')).to_have_text("0", timeout=WAIT)
    await await_until(lambda: _state(app, queue, long.id, "cancelled"), 20, "the cancel")
