"""The Grafana dashboard's queries on a real Prometheus fed by a real run (``make metrics-view``).

Starts a private redis-server, two ``asyncq-worker`` processes with ``--metrics-port`` serving
``benches.metrics_app:app``, and Debian's ``prometheus`` scraping both every second; enqueues a
mixed load (short and slower jobs, failures with retries, a rate-limited task) for a while; then
evaluates every query of ``docs/grafana/asyncq.json`` through Prometheus' HTTP API, prints what
each returned, fails if one returned nothing, and takes a screenshot of Prometheus' own graph
page for a few of them with headless chromium (``docs/img/metrics-prometheus.png``).

Grafana itself is not installable here (no Debian package, nothing on PyPI or npm): the queries
and their data are what this checks, and Prometheus' page is what it shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conftest import RedisServer, free_port
from tests.procutil import PYTHONPATH, ROOT, script

from benches import metrics_app

DASHBOARD = ROOT / "docs" / "grafana" / "asyncq.json"


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


def query(prom: int, expr: str) -> list[dict[str, object]]:
    q = urllib.parse.urlencode({"query": expr})
    out = get(f"http://127.0.0.1:{prom}/api/v1/query?{q}")
    assert isinstance(out, dict) and out.get("status") == "success", out
    data = out["data"]
    assert isinstance(data, dict)
    result = data["result"]
    assert isinstance(result, list)
    return result


async def load(url: str, queue: str, seconds: float) -> int:
    app = metrics_app.build(url, queue)
    t = app.tasks
    sent, end = 0, time.monotonic() + seconds
    rng = random.Random(7)
    while time.monotonic() < end:
        calls = [t["m:quick"].call(rng.random() * 0.02) for _ in range(40)]
        await t["m:quick"].enqueue_many(calls)
        await t["m:slow"].enqueue(rng.random() * 0.3)
        if rng.random() < 0.3:
            await t["m:flaky"].enqueue(rng.random())
        await t["m:limited"].enqueue()
        sent += 43
        await asyncio.sleep(0.1)
    return sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=45.0, help="how long the load runs")
    ap.add_argument("--screenshot", default=str(ROOT / "docs" / "img" / "metrics-prometheus.png"))
    args = ap.parse_args()
    if not shutil.which("prometheus"):
        sys.exit("prometheus not found: apt-get install prometheus")
    tmp = Path(tempfile.mkdtemp(prefix="asyncq-metrics-view-"))
    redis = RedisServer()
    queue = "work"
    ports = [free_port(), free_port()]
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, BENCH_REDIS_URL=redis.url, BENCH_QUEUE=queue)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports):
            log = open(tmp / f"worker{i}.log", "wb")  # noqa: SIM115 - closed with the process
            argv = [script("asyncq-worker"), "benches.metrics_app:app", "-q", f"{queue}=20"]
            argv += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stderr=log))
        prom = free_port()
        targets = [f"127.0.0.1:{p}" for p in ports]
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs: [{{job_name: asyncq, static_configs: [{{targets: {targets}}}]}}]\n"
        )
        procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "prometheus.log", "wb"),  # noqa: SIM115
            )
        )
        time.sleep(3)
        sent = asyncio.run(load(redis.url, queue, args.seconds))
        time.sleep(5)  # the last scrapes
        print(f"{sent} jobs enqueued over {args.seconds:g} s; 2 workers; Prometheus on :{prom}")
        dashboard = json.loads(DASHBOARD.read_text())
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace('=~"$queue"', '=~".*"')
                result = query(prom, expr)
                shown = ", ".join(
                    f"{json.dumps(r['metric'])}={float(r['value'][1]):.3g}"  # type: ignore[index]
                    for r in result[:3]
                )
                print(f"- {panel['title']}: {len(result)} series {shown}")
                if not result:
                    empty.append(panel["title"])
        screenshot(prom, dashboard, Path(args.screenshot))
        print(f"screenshot: {args.screenshot}")
        if empty:
            print(f"FAILED: no data for {empty}")
            return 1
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.stop()


def screenshot(prom: int, dashboard: dict[str, object], out: Path) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - dev tool only

    panels = dashboard["panels"]
    assert isinstance(panels, list)
    picks = [panels[0], panels[2], panels[3], panels[1]]
    params = {}
    for i, panel in enumerate(picks):
        expr = panel["targets"][0]["expr"].replace('=~"$queue"', '=~".*"')
        params.update({f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": "1m"})
    url = f"http://127.0.0.1:{prom}/graph?{urllib.parse.urlencode(params)}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(url)
        page.wait_for_timeout(4000)  # the graphs draw after their queries return
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
