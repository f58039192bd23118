"""What compression saves and costs (docs/serialization.md): jobs with payloads of 1 KiB, 64 KiB
and 1 MiB, enqueued into and run from a private redis-server, with ``compress_over`` off and on.

    python -m benches.compression                 # 3 runs of each row (about a minute)
    python -m benches.compression --reps 5 --jobs 200

The payload is text: words drawn at random from a vocabulary of 2,000 (seeded), the shape of
JSON documents and logs, which compress about 3:1 — not zeros (which would flatter it) and not
random bytes (which do not compress at all; asyncq then stores the plain envelope). Each run:
enqueue the jobs (one call per job, the producer's CPU time measured), read the bytes Redis
holds for them (``used_memory`` before and after, per job), then run them with an in-process
worker (its CPU time measured from the first lease to the last ack, on a separate phase so the
two do not mix). Redis's own CPU time is read from ``INFO cpu``. Prints a Markdown table of the
medians. Needs ``redis-server`` on PATH; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import time
import uuid

from tests.conftest import RedisServer

import asyncq

SIZES = {"1 KiB": 1 << 10, "64 KiB": 64 << 10, "1 MiB": 1 << 20}


def payload(size: int, seed: int) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(2000)]
    words: list[str] = []
    total = 0
    while total < size:
        w = rng.choice(vocab)
        words.append(w)
        total += len(w) + 1
    return " ".join(words)[:size]


def info(server: RedisServer, section: str) -> dict[str, str]:
    out = subprocess.run(
        ["redis-cli", "-p", str(server.port), "INFO", section],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def redis_cpu(server: RedisServer) -> float:
    cpu = info(server, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def one_run(
    server: RedisServer, size: int, compress: bool, jobs: int, seed: int
) -> dict[str, float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    app = asyncq.App(
        server.url,
        default_queue=queue,
        max_payload=4 << 20,
        compress_over=1024 if compress else None,
    )
    done = asyncio.Event()
    ran = 0

    @app.task(name="bench:take")
    async def take(doc: str) -> int:
        nonlocal ran
        ran += 1
        if ran == jobs:
            done.set()
        return len(doc)

    docs = [payload(size, seed + i) for i in range(jobs)]
    mem0 = int(info(server, "memory")["used_memory"])
    rcpu0 = redis_cpu(server)
    cpu0 = time.process_time()
    for doc in docs:
        await take.enqueue(doc)
    enqueue_cpu = time.process_time() - cpu0
    stored = (int(info(server, "memory")["used_memory"]) - mem0) / jobs
    worker = app.worker(concurrency=16)
    cpu1 = time.process_time()
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(done.wait(), 120)
    work_cpu = time.process_time() - cpu1
    worker.stop()
    await run
    rcpu = redis_cpu(server) - rcpu0
    return {
        "stored": stored,
        "enqueue_us": enqueue_cpu / jobs * 1e6,
        "worker_us": work_cpu / jobs * 1e6,
        "redis_us": rcpu / jobs * 1e6,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    server = RedisServer()
    try:
        print(
            "| payload | compression | bytes in Redis per job | producer CPU µs/job"
            " | worker CPU µs/job | Redis CPU µs/job |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for label, size in SIZES.items():
            for compress in (False, True):
                runs = [
                    await one_run(server, size, compress, args.jobs, seed=r * 1000)
                    for r in range(args.reps)
                ]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(
                    f"| {label} | {'zstd' if compress else 'off'} | {med['stored']:,.0f}"
                    f" | {med['enqueue_us']:,.0f} | {med['worker_us']:,.0f}"
                    f" | {med['redis_us']:,.0f} |"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
