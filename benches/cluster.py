# ruff: noqa: E501
"""One partitioned queue on a Redis Cluster of 1 vs 3 primaries (make bench-cluster).

    python -m benches.cluster [--jobs 50000] [--reps 3] [--partitions 6]

For each cluster size: a fresh cluster of redis-server processes on loopback (no replicas;
tests/cluster.py), ``--jobs`` no-op jobs enqueued ahead into one queue of ``--partitions``
partitions, then ONE ``asyncq-worker`` with its default settings drains it. Reported per run:
jobs/s (from the worker's start to the last job's end, polled every 20 ms), and the CPU each
primary spent (``INFO cpu``, user + sys) per 1,000 jobs. Medians of ``--reps`` runs.

On a 2-core machine three primaries and the worker share the same two cores, so throughput
cannot grow with primaries here; the projection says what would happen with each primary on a
host of its own (see the output and docs/scaling.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import RedisCluster, cli

import asyncq

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench"


def build(url: str, partitions: int) -> asyncq.App:
    app = asyncq.App(url, default_queue=QUEUE, partitions={QUEUE: partitions})

    @app.task(name="bench:noop")
    async def noop() -> None:
        return None

    return app


# Loaded by the worker: ``benches.cluster:app`` with the cluster's URL in the environment.
app = build(
    os.environ.get("BENCH_CLUSTER_URL", "memory://bench"),
    int(os.environ.get("BENCH_PARTITIONS", "6")),
)


def cpu_seconds(port: int) -> float:
    info = dict(
        line.split(":", 1)
        for line in cli(port, "INFO", "cpu").splitlines()
        if ":" in line and not line.startswith("#")
    )
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def one_run(primaries: int, jobs: int, partitions: int) -> tuple[float, list[float]]:
    """jobs/s, and each primary's CPU ms per 1,000 jobs (busiest first)."""
    cluster = RedisCluster(primaries=primaries, replicas=0)
    try:
        producer = build(cluster.url, partitions)
        noop = producer.tasks["bench:noop"]
        for start in range(0, jobs, 10_000):
            await noop.enqueue_many([((), {}) for _ in range(min(10_000, jobs - start))])
        parts = producer.partitions.names(QUEUE)
        per_node = {p: cpu_seconds(p) for p in cluster.primaries()}
        env = dict(os.environ, BENCH_CLUSTER_URL=cluster.url, BENCH_PARTITIONS=str(partitions))
        env["PYTHONPATH"] = str(ROOT)
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "asyncq-worker"), "benches.cluster:app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        try:
            while True:
                done = 0
                for part in parts:
                    done += (await producer.broker.counts(part)).get("succeeded_total", 0)
                if done >= jobs:
                    break
                if worker.poll() is not None:
                    raise RuntimeError("the worker exited")
                await asyncio.sleep(0.02)
            took = time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait(30)
        cpu = {p: (cpu_seconds(p) - c) * 1e6 / jobs for p, c in per_node.items()}  # ms per 1k
        return jobs / took, sorted(cpu.values(), reverse=True)
    finally:
        cluster.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    args = ap.parse_args()
    rows = {}
    for primaries in (1, 3):
        runs = [await one_run(primaries, args.jobs, args.partitions) for _ in range(args.reps)]
        rate = statistics.median(r for r, _ in runs)
        cpu = [statistics.median(c[i] for _, c in runs) for i in range(primaries)]
        rows[primaries] = (rate, cpu, [round(r) for r, _ in runs])
    print(
        f"One queue of {args.partitions} partitions, {args.jobs:,} no-op jobs queued ahead, one"
        f" asyncq-worker with defaults; medians of {args.reps} runs.\n"
    )
    print(
        "| primaries | jobs/s (runs) | Redis CPU per 1,000 jobs, per primary (ms) | busiest primary's share |"
    )
    print("| --- | --- | --- | --- |")
    for primaries, (rate, cpu, each) in rows.items():
        share = max(cpu) / sum(cpu)
        runs = ", ".join(f"{r:,}" for r in each)
        print(
            f"| {primaries} | {rate:,.0f} ({runs}) | {' / '.join(f'{c:.0f}' for c in cpu)} | {share:.0%} |"
        )
    one, three = rows[1], rows[3]
    # With each primary on its own host, Redis stops being the limit at the rate where the
    # busiest primary is saturated: 1 s of CPU / its CPU per job.
    limit_one = 1000 / (max(one[1]) / 1000) if max(one[1]) else float("inf")
    limit_three = 1000 / (max(three[1]) / 1000) if max(three[1]) else float("inf")
    print(
        f"\nRedis-bound ceiling, one primary per host: {limit_one:,.0f} jobs/s on 1 primary,"
        f" {limit_three:,.0f} jobs/s on 3 ({limit_three / limit_one:.1f}x), with enough workers"
        " on other hosts to use it."
    )


if __name__ == "__main__":
    asyncio.run(main())
